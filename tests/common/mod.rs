//! Harness for the end-to-end tests: a real `supamount` FUSE mount over a real S3 server.
//!
//! * [`Backend`]: the server a test talks to, with its own bucket and temp dir, plus a separate
//!   aws-sdk-s3 client to look at (and change) the bucket behind the mount's back.
//!   - local: `supamount server` started as a child process on 127.0.0.1 (random port, temp
//!     data dir, random keys); always available.
//!   - supabase: the real Supabase Storage server, when `SUPAMOUNT_TEST_SUPABASE=1` and the
//!     variables of `client.env` (`S3_ENDPOINT`, `S3_REGION`, `S3_ACCESS_KEY_ID`,
//!     `S3_SECRET_ACCESS_KEY`) are set. Each test gets its own bucket (CreateBucket), emptied and
//!     deleted at the end. Unconfigured, the supabase variants print a notice and pass, unless
//!     `SUPAMOUNT_TEST_REQUIRE_SUPABASE=1` (CI), which turns that into a failure.
//! * [`Mount`]: `supamount --foreground` as a child process; waits (bounded) until the mount shows
//!   in /proc/self/mountinfo; on drop (also on panic) unmounts (`fusermount3 -u`, then `-uz`),
//!   waits for the daemon (bounded), kills it by PID if needed, and prints its log when the test
//!   failed. A watchdog kills the daemon if the test outlives `SUPAMOUNT_TEST_TIMEOUT` seconds
//!   (default 600; a mount can ask for longer, see [`MountOpts::watchdog`]), so that a hung FUSE
//!   request turns into ENOTCONN instead of a hung test.
//!
//! Other settings: `SUPAMOUNT_TEST_LOG_LEVEL` (passed as `--log-level`), `SUPAMOUNT_TEST_KEEP=1`
//! (keep the temp dirs of failed tests).
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::IntoRawFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use aws_sdk_s3::config::{
    Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};

pub const BIN: &str = env!("CARGO_BIN_EXE_supamount");
pub const KIB: usize = 1 << 10;
pub const MIB: usize = 1 << 20;
/// Bound on start-up waits (server listening, mount live, failing mount command exiting).
pub const START_TIMEOUT: Duration = Duration::from_secs(15);
/// Bound on a shell command run in a test.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(300);
/// Bound on the daemon's exit after unmount (it finishes in-flight uploads first).
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on waiting for changes made behind the mount's back to show through it.
pub const CHANGE_TIMEOUT: Duration = Duration::from_secs(15);

/// Generates `NAME::local` and `NAME::supabase` tests calling `fn NAME(&Backend)`.
#[macro_export]
macro_rules! e2e_tests {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn local() {
                let b = $crate::common::Backend::local(stringify!($name));
                super::$name(&b);
            }
            #[test]
            fn supabase() {
                if let Some(b) = $crate::common::Backend::supabase(stringify!($name)) {
                    super::$name(&b);
                }
            }
        }
    )*};
}

// ---------------------------------------------------------------------------------------------
// Processes and waits

/// Output of a finished command.
#[derive(Debug)]
pub struct CmdOut {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CmdOut {
    pub fn ok(&self) -> bool {
        self.status.success()
    }
}

/// Waits for `child` at most `timeout`; `None` if it is still running.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) => {}
            Err(e) => panic!("waiting for pid {}: {e}", child.id()),
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Kills (SIGKILL) and reaps a child we started.
pub fn kill_and_reap(child: &mut Child) -> ExitStatus {
    if let Ok(Some(st)) = child.try_wait() {
        return st;
    }
    let _ = child.kill();
    child.wait().expect("reaping a killed child")
}

/// Runs `cmd` (stdin from /dev/null, stdout/stderr captured) and waits at most `timeout`;
/// on timeout the command is killed and the test fails.
pub fn run_timeout(cmd: &mut Command, timeout: Duration) -> CmdOut {
    let desc = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {desc}: {e}"));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let status = match wait_timeout(&mut child, timeout) {
        Some(st) => st,
        None => {
            kill_and_reap(&mut child);
            panic!("command did not finish within {timeout:?}, killed: {desc}");
        }
    };
    let stdout = String::from_utf8_lossy(&t_out.join().unwrap()).into_owned();
    let stderr = String::from_utf8_lossy(&t_err.join().unwrap()).into_owned();
    CmdOut {
        status,
        stdout,
        stderr,
    }
}

/// `sh -c SCRIPT` in `dir`, bounded by [`CMD_TIMEOUT`].
pub fn sh_in(dir: &Path, script: &str) -> CmdOut {
    run_timeout(
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(dir)
            .env("LC_ALL", "C"),
        CMD_TIMEOUT,
    )
}

/// Polls `cond` until it holds, at most `timeout`; fails the test with `what` otherwise.
pub fn poll_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Closes `f` with close(2) and returns its result (std's drop ignores it).
pub fn close_checked(f: File) -> io::Result<()> {
    let fd = f.into_raw_fd();
    // SAFETY: `fd` came from `into_raw_fd`, so we own it and close it exactly once.
    if unsafe { libc::close(fd) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Creates (or truncates) `path`, writes `data` and closes it, failing the test if any of the
/// three fails (including close(2), which reports a failed upload).
#[track_caller]
pub fn write_file(path: &Path, data: &[u8]) {
    let mut f = File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    f.write_all(data)
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    close_checked(f).unwrap_or_else(|e| panic!("close {}: {e}", path.display()));
}

/// Asserts that `r` failed with `errno`.
#[track_caller]
pub fn assert_errno<T: std::fmt::Debug>(r: io::Result<T>, errno: i32, what: &str) {
    match r {
        Ok(v) => panic!("{what}: expected errno {errno}, got success ({v:?})"),
        Err(e) => assert_eq!(
            e.raw_os_error(),
            Some(errno),
            "{what}: expected errno {errno} ({}), got {e:?}",
            io::Error::from_raw_os_error(errno)
        ),
    }
}

/// Compares large byte buffers without printing them.
#[track_caller]
pub fn assert_same_bytes(what: &str, got: &[u8], want: &[u8]) {
    if got == want {
        return;
    }
    let first = got.iter().zip(want).position(|(a, b)| a != b);
    panic!(
        "{what}: contents differ: got {} bytes, want {} bytes, first difference at {:?}",
        got.len(),
        want.len(),
        first.unwrap_or(got.len().min(want.len()))
    );
}

pub fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

pub fn sha256_file(path: &Path) -> String {
    let mut f = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut h = Sha256::new();
    let mut buf = vec![0u8; MIB];
    loop {
        let n = f
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

/// Writes `n` random bytes to `path` (outside the mount) and returns their sha256.
pub fn write_random_file(path: &Path, n: usize, seed: u64) -> String {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut f = File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    let mut h = Sha256::new();
    let mut buf = vec![0u8; MIB];
    let mut left = n;
    while left > 0 {
        let k = left.min(buf.len());
        rng.fill_bytes(&mut buf[..k]);
        f.write_all(&buf[..k]).unwrap();
        h.update(&buf[..k]);
        left -= k;
    }
    f.sync_all().unwrap();
    hex::encode(h.finalize())
}

/// All regular files under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(t) if t.is_file() => out.push(p),
                _ => {}
            }
        }
    }
    out.sort();
    out
}

/// Names in a directory through readdir (fails the test on error).
pub fn dir_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| {
            e.unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
                .file_name()
                .into_string()
                .expect("utf-8 name")
        })
        .collect();
    v.sort();
    v
}

fn read_tail(path: &Path, max: usize) -> String {
    match fs::read(path) {
        Ok(v) => {
            let start = v.len().saturating_sub(max);
            let mut s = String::from_utf8_lossy(&v[start..]).into_owned();
            if start > 0 {
                s = format!("[... {start} bytes cut ...]\n{s}");
            }
            s
        }
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

// ---------------------------------------------------------------------------------------------
// Mount table and processes found by argument

fn unescape_mountinfo(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// Whether `path` is a mount point now (per /proc/self/mountinfo).
pub fn is_mounted(path: &Path) -> bool {
    let info = fs::read_to_string("/proc/self/mountinfo").expect("reading /proc/self/mountinfo");
    let want = path.to_str().expect("utf-8 mount path");
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mp| unescape_mountinfo(mp) == want)
}

/// PIDs of processes (other than us) whose command line has `arg` as one argument. Used to find
/// the daemon that a background `supamount` started for our unique mount point.
pub fn pids_with_arg(arg: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if cmdline.split(|&b| b == 0).any(|a| a == arg.as_bytes()) {
            out.push(pid);
        }
    }
    out
}

fn pid_alive(pid: i32) -> bool {
    // A zombie still answers kill(0); look at its state instead.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// `fusermount3 -u`, retried while busy (bounded), then `-uz`. Returns a description of what went
/// wrong, if anything did.
pub fn unmount(path: &Path) -> Option<String> {
    if !is_mounted(path) {
        return None;
    }
    let mut last = String::new();
    for _ in 0..10 {
        let out = run_timeout(
            Command::new("fusermount3").arg("-u").arg(path),
            Duration::from_secs(20),
        );
        if out.ok() || !is_mounted(path) {
            return None;
        }
        last = out.stderr.trim().to_string();
        thread::sleep(Duration::from_millis(300));
    }
    let out = run_timeout(
        Command::new("fusermount3").arg("-uz").arg(path),
        Duration::from_secs(20),
    );
    Some(format!(
        "`fusermount3 -u {}` kept failing ({last}); lazy unmount: {}",
        path.display(),
        if out.ok() { "ok" } else { out.stderr.trim() }
    ))
}

// ---------------------------------------------------------------------------------------------
// Watchdog

struct WatchState {
    done: bool,
    fired: bool,
}

/// `SUPAMOUNT_TEST_TIMEOUT` seconds (default 600): how long a mount may live before the watchdog
/// kills its daemon.
pub fn watchdog_timeout() -> Duration {
    let secs = std::env::var("SUPAMOUNT_TEST_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600u64);
    Duration::from_secs(secs)
}

/// Kills `pid` with SIGKILL if not stopped before `timeout`. Killing the FUSE daemon aborts the
/// connection, so blocked file-system calls in the test return ENOTCONN instead of hanging.
pub struct Watchdog {
    state: Arc<(Mutex<WatchState>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    pub fn start(pid: i32, label: String) -> Watchdog {
        Watchdog::start_after(pid, label, watchdog_timeout())
    }

    /// Like [`Watchdog::start`], with an explicit bound.
    pub fn start_after(pid: i32, label: String, timeout: Duration) -> Watchdog {
        let state = Arc::new((
            Mutex::new(WatchState {
                done: false,
                fired: false,
            }),
            Condvar::new(),
        ));
        let st = state.clone();
        let thread = thread::spawn(move || {
            let (lock, cv) = &*st;
            let deadline = Instant::now() + timeout;
            let mut g = lock.lock().unwrap();
            while !g.done {
                let now = Instant::now();
                if now >= deadline {
                    eprintln!(
                        "WATCHDOG: {label} still mounted after {timeout:?}; SIGKILL pid {pid}"
                    );
                    // SAFETY: plain syscall. The owner sets `done` (under this lock) before it
                    // reaps the process, so `pid` still names our process here.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    g.fired = true;
                    break;
                }
                g = cv.wait_timeout(g, deadline - now).unwrap().0;
            }
        });
        Watchdog {
            state,
            thread: Some(thread),
        }
    }

    /// Stops the watchdog; returns whether it fired.
    pub fn stop(&mut self) -> bool {
        let (lock, cv) = &*self.state;
        lock.lock().unwrap().done = true;
        cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let fired = lock.lock().unwrap().fired;
        fired
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------------
// Backend

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Local,
    Supabase,
}

struct LocalServer {
    child: Child,
    log: PathBuf,
    data_dir: PathBuf,
}

/// The S3 server of one test, its bucket, its temp dir and a separate S3 client.
pub struct Backend {
    pub kind: Kind,
    pub test: String,
    pub bucket: String,
    pub endpoint: String,
    pub region: String,
    pub access_key: String,
    pub secret_key: String,
    dir: Option<tempfile::TempDir>,
    rt: tokio::runtime::Runtime,
    pub s3: aws_sdk_s3::Client,
    server: Mutex<Option<LocalServer>>,
    server_log: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    seq: AtomicUsize,
}

fn unique_suffix() -> String {
    let mut b = [0u8; 4];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

fn bucket_name(test: &str) -> String {
    let base: String = test
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    format!("e2e-{}-{}", base.trim_end_matches('-'), unique_suffix())
}

fn temp_dir(test: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("supamount-e2e-{test}-"))
        .tempdir()
        .expect("creating temp dir")
}

fn s3_client(endpoint: &str, region: &str, ak: &str, sk: &str) -> aws_sdk_s3::Client {
    // aws-sdk-s3 joins an endpoint path without a trailing slash straight onto the bucket in
    // path-style requests with no key (CreateBucket on `http://HOST/s3` goes to `/s3BUCKET/`).
    let endpoint = format!("{}/", endpoint.trim_end_matches('/'));
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version_latest()
        .region(Region::new(region.to_string()))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(ak, sk, None, None, "supamount-e2e"))
        .force_path_style(true)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn http_status<E>(e: &aws_sdk_s3::error::SdkError<E>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

impl Backend {
    /// Starts `supamount server` for this test (always available).
    pub fn local(test: &str) -> Backend {
        let dir = temp_dir(test);
        let bucket = bucket_name(test);
        let access_key = format!("e2e{}", unique_suffix());
        let secret_key = format!("{}{}{}", unique_suffix(), unique_suffix(), unique_suffix());
        let data_dir = dir.path().join("server-data");
        fs::create_dir_all(&data_dir).unwrap();
        let log = dir.path().join("server.log");
        let log_file = File::create(&log).unwrap();
        let mut child = Command::new(BIN)
            .arg("server")
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--listen", "127.0.0.1:0", "--bucket", &bucket])
            .env("AWS_ACCESS_KEY_ID", &access_key)
            .env("AWS_SECRET_ACCESS_KEY", &secret_key)
            .env_remove("AWS_SESSION_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {BIN} server: {e}"));
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        // Reads the endpoint line, then keeps draining stdout so the server never blocks on it.
        thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !sent {
                    let _ = tx.send(line);
                    sent = true;
                }
            }
        });
        let first = rx.recv_timeout(START_TIMEOUT);
        let endpoint = match first {
            Ok(line) if line.starts_with("endpoint=http://127.0.0.1:") => {
                line["endpoint=".len()..].trim().to_string()
            }
            other => {
                let st = match wait_timeout(&mut child, Duration::ZERO) {
                    Some(st) => format!("exited: {st}"),
                    None => {
                        kill_and_reap(&mut child);
                        "killed".to_string()
                    }
                };
                panic!(
                    "local server did not print `endpoint=http://127.0.0.1:PORT` within \
                     {START_TIMEOUT:?} (got {other:?}; server {st}); its stderr:\n{}",
                    read_tail(&log, 16 * KIB)
                );
            }
        };
        let region = "local".to_string();
        let s3 = s3_client(&endpoint, &region, &access_key, &secret_key);
        Backend {
            kind: Kind::Local,
            test: test.to_string(),
            bucket,
            endpoint,
            region,
            access_key,
            secret_key,
            dir: Some(dir),
            rt: runtime(),
            s3,
            server: Mutex::new(Some(LocalServer {
                child,
                log: log.clone(),
                data_dir: data_dir.clone(),
            })),
            server_log: Some(log),
            data_dir: Some(data_dir),
            seq: AtomicUsize::new(0),
        }
    }

    /// The real Supabase Storage server, if configured; creates a fresh bucket for the test.
    pub fn supabase(test: &str) -> Option<Backend> {
        let on = std::env::var("SUPAMOUNT_TEST_SUPABASE").unwrap_or_default();
        if on.is_empty() || on == "0" {
            if std::env::var("SUPAMOUNT_TEST_REQUIRE_SUPABASE").unwrap_or_default() == "1" {
                panic!(
                    "SUPAMOUNT_TEST_REQUIRE_SUPABASE=1 but SUPAMOUNT_TEST_SUPABASE is not set: \
                     start ../shared/supabase, source client.env, export SUPAMOUNT_TEST_SUPABASE=1"
                );
            }
            eprintln!(
                "NOTICE: skipping the Supabase variant of `{test}`: set SUPAMOUNT_TEST_SUPABASE=1 \
                 and the variables of client.env (S3_ENDPOINT, S3_REGION, S3_ACCESS_KEY_ID, \
                 S3_SECRET_ACCESS_KEY)"
            );
            return None;
        }
        let var = |k: &str| {
            std::env::var(k).unwrap_or_else(|_| {
                panic!("SUPAMOUNT_TEST_SUPABASE is set but {k} is not (source client.env)")
            })
        };
        let endpoint = var("S3_ENDPOINT");
        let region = var("S3_REGION");
        let access_key = var("S3_ACCESS_KEY_ID");
        let secret_key = var("S3_SECRET_ACCESS_KEY");
        let dir = temp_dir(test);
        let bucket = bucket_name(test);
        let s3 = s3_client(&endpoint, &region, &access_key, &secret_key);
        let rt = runtime();
        rt.block_on(s3.create_bucket().bucket(&bucket).send())
            .unwrap_or_else(|e| panic!("CreateBucket {bucket} on Supabase at {endpoint}: {e:?}"));
        Some(Backend {
            kind: Kind::Supabase,
            test: test.to_string(),
            bucket,
            endpoint,
            region,
            access_key,
            secret_key,
            dir: Some(dir),
            rt,
            s3,
            server: Mutex::new(None),
            server_log: None,
            data_dir: None,
            seq: AtomicUsize::new(0),
        })
    }

    /// The test's temp dir (outside any mount).
    pub fn tmp(&self) -> &Path {
        self.dir.as_ref().unwrap().path()
    }

    /// Where the local server keeps the bucket's objects (local backend only).
    pub fn bucket_dir(&self) -> Option<PathBuf> {
        self.data_dir.as_ref().map(|d| d.join(&self.bucket))
    }

    pub fn server_log(&self) -> String {
        match &self.server_log {
            Some(p) => read_tail(p, 64 * KIB),
            None => String::new(),
        }
    }

    /// SIGKILLs the local server (by PID) and reaps it.
    pub fn kill_server(&self) {
        let mut g = self.server.lock().unwrap();
        let srv = g.as_mut().expect("kill_server: not a local backend");
        let st = kill_and_reap(&mut srv.child);
        eprintln!("local server pid {} killed: {st}", srv.child.id());
    }

    /// A fresh numbered path in the test's temp dir, e.g. `mnt-3`.
    pub fn fresh_path(&self, stem: &str) -> PathBuf {
        let n = self.seq.fetch_add(1, Ordering::SeqCst);
        self.tmp().join(format!("{stem}-{n}"))
    }

    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    // --- S3 behind the mount's back -----------------------------------------------------------

    pub fn put(&self, key: &str, data: impl Into<Bytes>) {
        let body = ByteStream::from(data.into());
        self.block_on(
            self.s3
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .body(body)
                .send(),
        )
        .unwrap_or_else(|e| panic!("PutObject {key}: {e:?}"));
    }

    /// Puts many objects, `concurrency` at a time.
    pub fn put_many(&self, objects: Vec<(String, Bytes)>, concurrency: usize) {
        let s3 = &self.s3;
        let bucket = &self.bucket;
        self.block_on(async {
            futures::stream::iter(objects)
                .map(|(key, data)| async move {
                    s3.put_object()
                        .bucket(bucket)
                        .key(&key)
                        .body(ByteStream::from(data))
                        .send()
                        .await
                        .map_err(|e| format!("PutObject {key}: {e:?}"))
                })
                .buffer_unordered(concurrency)
                .try_collect::<Vec<_>>()
                .await
        })
        .unwrap_or_else(|e| panic!("{e}"));
    }

    /// The object's bytes, or `None` if it does not exist.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        let r = self.block_on(async {
            let out = self
                .s3
                .get_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await?;
            let data = out
                .body
                .collect()
                .await
                .map_err(|e| panic!("GetObject {key}: reading body: {e}"))
                .unwrap();
            Ok::<_, aws_sdk_s3::error::SdkError<_, _>>(data.into_bytes().to_vec())
        });
        match r {
            Ok(v) => Some(v),
            Err(e) if http_status(&e) == Some(404) => None,
            Err(e) => panic!("GetObject {key}: {e:?}"),
        }
    }

    /// The object's size (HeadObject), or `None` if it does not exist.
    pub fn head_size(&self, key: &str) -> Option<u64> {
        let r = self.block_on(self.s3.head_object().bucket(&self.bucket).key(key).send());
        match r {
            Ok(o) => Some(o.content_length().unwrap_or(0) as u64),
            Err(e) if http_status(&e) == Some(404) => None,
            Err(e) => panic!("HeadObject {key}: {e:?}"),
        }
    }

    pub fn delete(&self, key: &str) {
        self.block_on(self.s3.delete_object().bucket(&self.bucket).key(key).send())
            .unwrap_or_else(|e| panic!("DeleteObject {key}: {e:?}"));
    }

    /// Every key under `prefix` (no delimiter, all pages), sorted.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .block_on(
                    self.s3
                        .list_objects_v2()
                        .bucket(&self.bucket)
                        .prefix(prefix)
                        .set_continuation_token(token.clone())
                        .send(),
                )
                .unwrap_or_else(|e| panic!("ListObjectsV2 {prefix:?}: {e:?}"));
            out.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_string)),
            );
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => break,
            }
        }
        out.sort();
        out
    }

    pub fn all_keys(&self) -> Vec<String> {
        self.keys("")
    }

    fn empty_and_delete_bucket(&self) -> Result<(), String> {
        let keys = self.all_keys();
        self.block_on(async {
            for chunk in keys.chunks(500) {
                let ids: Vec<ObjectIdentifier> = chunk
                    .iter()
                    .map(|k| ObjectIdentifier::builder().key(k).build().unwrap())
                    .collect();
                let del = Delete::builder().set_objects(Some(ids)).build().unwrap();
                let r = self
                    .s3
                    .delete_objects()
                    .bucket(&self.bucket)
                    .delete(del)
                    .send()
                    .await;
                if r.is_err() {
                    // Fall back to one by one.
                    for k in chunk {
                        let _ = self
                            .s3
                            .delete_object()
                            .bucket(&self.bucket)
                            .key(k)
                            .send()
                            .await;
                    }
                }
            }
            if let Ok(ups) = self
                .s3
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .send()
                .await
            {
                for u in ups.uploads() {
                    if let (Some(k), Some(id)) = (u.key(), u.upload_id()) {
                        let _ = self
                            .s3
                            .abort_multipart_upload()
                            .bucket(&self.bucket)
                            .key(k)
                            .upload_id(id)
                            .send()
                            .await;
                    }
                }
            }
            self.s3
                .delete_bucket()
                .bucket(&self.bucket)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| format!("DeleteBucket {}: {e:?}", self.bucket))
        })
    }

    // --- supamount command lines ----------------------------------------------------------------

    /// `supamount` with the endpoint, region, credentials and an isolated AWS config; the caller
    /// adds the remaining arguments.
    pub fn supamount_cmd(&self, o: &MountOpts) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--endpoint-url")
            .arg(o.endpoint.as_deref().unwrap_or(&self.endpoint))
            .arg("--region")
            .arg(&self.region);
        if let Some(ttl) = o.attr_ttl {
            c.arg("--attr-ttl").arg(ttl.to_string());
        }
        if let Ok(level) = std::env::var("SUPAMOUNT_TEST_LOG_LEVEL") {
            c.arg("--log-level").arg(level);
        }
        c.args(&o.extra_args);
        // An empty AWS config: nothing from the machine's ~/.aws leaks into the test.
        let nowhere = self.tmp().join("empty-aws-config");
        if !nowhere.exists() {
            fs::write(&nowhere, "").unwrap();
        }
        c.env("AWS_ACCESS_KEY_ID", &self.access_key)
            .env(
                "AWS_SECRET_ACCESS_KEY",
                o.secret.as_deref().unwrap_or(&self.secret_key),
            )
            .env("AWS_CONFIG_FILE", &nowhere)
            .env("AWS_SHARED_CREDENTIALS_FILE", &nowhere)
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_DEFAULT_PROFILE")
            .env_remove("AWS_ENDPOINT_URL")
            .env_remove("AWS_ENDPOINT_URL_S3")
            .env_remove("AWS_REGION")
            .env_remove("AWS_DEFAULT_REGION")
            .stdin(Stdio::null());
        c
    }

    fn target(&self, o: &MountOpts) -> String {
        match &o.target {
            Some(t) => t.clone(),
            None => self.bucket.clone(),
        }
    }

    pub fn mount(&self) -> Mount<'_> {
        self.mount_with(MountOpts::default())
    }

    /// `supamount --foreground ... BUCKET MOUNTPOINT`, waits until mounted.
    pub fn mount_with(&self, o: MountOpts) -> Mount<'_> {
        let path = self.fresh_path("mnt");
        fs::create_dir_all(&path).unwrap();
        let path = path.canonicalize().unwrap();
        let cache_dir = self.fresh_path("cache");
        fs::create_dir_all(&cache_dir).unwrap();
        let cache_dir = cache_dir.canonicalize().unwrap();
        let log_path = path.with_file_name(format!(
            "{}.log",
            path.file_name().unwrap().to_str().unwrap()
        ));
        let log = File::create(&log_path).unwrap();
        let mut cmd = self.supamount_cmd(&o);
        cmd.arg("--foreground")
            .arg("--cache-dir")
            .arg(&cache_dir)
            .arg(self.target(&o))
            .arg(&path)
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let desc = format!("{cmd:?}");
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {desc}: {e}"));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if is_mounted(&path) {
                break;
            }
            if let Ok(Some(st)) = child.try_wait() {
                panic!(
                    "supamount exited ({st}) before the mount appeared: {desc}\nits log:\n{}",
                    read_tail(&log_path, 64 * KIB)
                );
            }
            if Instant::now() >= deadline {
                kill_and_reap(&mut child);
                let _ = unmount(&path);
                panic!(
                    "mount did not appear within {START_TIMEOUT:?}: {desc}\nits log:\n{}",
                    read_tail(&log_path, 64 * KIB)
                );
            }
            thread::sleep(Duration::from_millis(25));
        }
        let watchdog = Watchdog::start_after(
            child.id() as i32,
            format!("mount {}", path.display()),
            o.watchdog.unwrap_or_else(watchdog_timeout),
        );
        Mount {
            backend: self,
            path,
            cache_dir,
            log_path,
            child: Some(child),
            watchdog: Some(watchdog),
            allow_unclean_exit: false,
        }
    }

    /// Runs `supamount` in background mode (no `--foreground`) and waits at most `timeout` for
    /// the command to return. The mount point is fresh; see [`BgRun`].
    pub fn mount_background(&self, o: MountOpts, timeout: Duration) -> BgRun {
        let path = self.fresh_path("bgmnt");
        fs::create_dir_all(&path).unwrap();
        let path = path.canonicalize().unwrap();
        let cache_dir = self.fresh_path("bgcache");
        fs::create_dir_all(&cache_dir).unwrap();
        let out_path = path.with_extension("stdout");
        let err_path = path.with_extension("stderr");
        let log_path = path.with_extension("log");
        let mut cmd = self.supamount_cmd(&o);
        cmd.arg("--cache-dir")
            .arg(&cache_dir)
            .arg("--log-file")
            .arg(&log_path)
            .arg(self.target(&o))
            .arg(&path)
            // Files, not pipes: a daemon that inherits them must not keep us waiting for EOF.
            .stdout(File::create(&out_path).unwrap())
            .stderr(File::create(&err_path).unwrap());
        let desc = format!("{cmd:?}");
        let start = Instant::now();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {desc}: {e}"));
        let status = wait_timeout(&mut child, timeout);
        let elapsed = start.elapsed();
        if status.is_none() {
            kill_and_reap(&mut child);
        }
        BgRun {
            desc,
            status,
            elapsed,
            stdout: fs::read_to_string(&out_path).unwrap_or_default(),
            stderr: fs::read_to_string(&err_path).unwrap_or_default(),
            guard: BgMount {
                path,
                log_path,
                daemons: Vec::new(),
                watchdogs: Vec::new(),
            },
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let panicking = thread::panicking();
        let mut problems = Vec::new();
        if let Some(mut srv) = self.server.lock().unwrap().take() {
            if wait_timeout(&mut srv.child, Duration::ZERO).is_none() {
                // SAFETY: plain syscall on our own unreaped child.
                unsafe { libc::kill(srv.child.id() as i32, libc::SIGTERM) };
                if wait_timeout(&mut srv.child, Duration::from_secs(10)).is_none() {
                    kill_and_reap(&mut srv.child);
                    problems.push("local server did not exit within 10 s of SIGTERM".to_string());
                }
            }
            if panicking {
                eprintln!(
                    "----- local server log ({}) -----\n{}\n----- end of server log -----",
                    srv.log.display(),
                    read_tail(&srv.log, 32 * KIB)
                );
                let _ = &srv.data_dir;
            }
        }
        if self.kind == Kind::Supabase {
            if let Err(e) = self.empty_and_delete_bucket() {
                problems.push(format!("cleaning up Supabase bucket: {e}"));
            }
        }
        if let Some(dir) = self.dir.take() {
            if panicking && std::env::var("SUPAMOUNT_TEST_KEEP").as_deref() == Ok("1") {
                eprintln!("kept temp dir {}", dir.keep().display());
            }
        }
        if !problems.is_empty() {
            if panicking {
                eprintln!("teardown problems: {problems:?}");
            } else {
                panic!("teardown problems: {problems:?}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Mounts

/// Options of a test mount.
#[derive(Clone, Debug, Default)]
pub struct MountOpts {
    /// `--attr-ttl`
    pub attr_ttl: Option<u32>,
    /// `BUCKET[/PREFIX]` instead of the backend's bucket.
    pub target: Option<String>,
    /// `--endpoint-url` instead of the backend's.
    pub endpoint: Option<String>,
    /// `AWS_SECRET_ACCESS_KEY` instead of the backend's.
    pub secret: Option<String>,
    pub extra_args: Vec<String>,
    /// Watchdog bound for this mount instead of `SUPAMOUNT_TEST_TIMEOUT` (a test that is
    /// meant to run longer, with its own bounds inside).
    pub watchdog: Option<Duration>,
}

impl MountOpts {
    pub fn ttl(secs: u32) -> MountOpts {
        MountOpts {
            attr_ttl: Some(secs),
            ..Default::default()
        }
    }
}

/// A live `supamount --foreground` mount; unmounted and reaped on drop.
pub struct Mount<'a> {
    pub backend: &'a Backend,
    pub path: PathBuf,
    pub cache_dir: PathBuf,
    pub log_path: PathBuf,
    child: Option<Child>,
    watchdog: Option<Watchdog>,
    allow_unclean_exit: bool,
}

impl Mount<'_> {
    /// A path inside the mount.
    pub fn p(&self, rel: &str) -> PathBuf {
        self.path.join(rel)
    }

    /// `sh -c SCRIPT` with the mount as working directory.
    pub fn sh(&self, script: &str) -> CmdOut {
        sh_in(&self.path, script)
    }

    /// Like [`Mount::sh`], failing the test unless the script exits 0; returns stdout.
    #[track_caller]
    pub fn sh_ok(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(
            out.ok(),
            "`{script}` in the mount failed ({}): stdout {:?}, stderr {:?}",
            out.status,
            out.stdout,
            out.stderr
        );
        out.stdout
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Do not count a non-zero exit status of the daemon as a failure (tests that break the
    /// server under it).
    pub fn allow_unclean_exit(&mut self) {
        self.allow_unclean_exit = true;
    }

    /// Unmounts now (same checks as drop).
    pub fn unmount(self) {
        drop(self)
    }
}

impl Drop for Mount<'_> {
    fn drop(&mut self) {
        let panicking = thread::panicking();
        let mut problems = Vec::new();
        if let Some(p) = unmount(&self.path) {
            problems.push(p);
        }
        let fired = self.watchdog.as_mut().map(|w| w.stop()).unwrap_or(false);
        if fired {
            problems.push("the watchdog killed the daemon (test hung)".to_string());
        }
        if let Some(mut child) = self.child.take() {
            match wait_timeout(&mut child, EXIT_TIMEOUT) {
                Some(st) => {
                    if !st.success() && !self.allow_unclean_exit && !fired {
                        problems.push(format!(
                            "supamount exited with {st} after unmount{}",
                            st.signal()
                                .map(|s| format!(" (signal {s})"))
                                .unwrap_or_default()
                        ));
                    }
                }
                None => {
                    kill_and_reap(&mut child);
                    problems.push(format!(
                        "supamount (pid {}) did not exit within {EXIT_TIMEOUT:?} after unmount; \
                         killed",
                        child.id()
                    ));
                }
            }
        }
        let log = self.log();
        if log.contains("panicked at") {
            problems.push("the daemon's log shows a panic".to_string());
        }
        if panicking || !problems.is_empty() {
            eprintln!(
                "----- supamount log ({}) -----\n{}\n----- end of supamount log -----",
                self.log_path.display(),
                read_tail(&self.log_path, 64 * KIB)
            );
        }
        if !problems.is_empty() {
            if panicking {
                eprintln!("mount teardown problems: {problems:?}");
            } else {
                panic!("mount teardown problems: {problems:?}");
            }
        }
        let _ = self.backend;
    }
}

/// Result of a background-mode `supamount` run.
pub struct BgRun {
    pub desc: String,
    /// `None`: still running after the timeout (it was killed).
    pub status: Option<ExitStatus>,
    pub elapsed: Duration,
    pub stdout: String,
    pub stderr: String,
    /// Cleans up whatever the run left (mount, daemon) on drop.
    pub guard: BgMount,
}

/// A mount made by background-mode `supamount`: on drop, unmounts it and waits for (or kills,
/// by PID) the daemon processes that carry our unique mount point in their arguments.
pub struct BgMount {
    pub path: PathBuf,
    pub log_path: PathBuf,
    daemons: Vec<i32>,
    watchdogs: Vec<Watchdog>,
}

impl BgMount {
    /// Looks up the daemon(s) serving this mount point and arms a watchdog on each.
    pub fn adopt_daemons(&mut self) -> Vec<i32> {
        self.daemons = pids_with_arg(self.path.to_str().unwrap());
        for &pid in &self.daemons {
            self.watchdogs.push(Watchdog::start(
                pid,
                format!("background mount {}", self.path.display()),
            ));
        }
        self.daemons.clone()
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Unmounts and waits (bounded) for the daemons to exit; returns problems found.
    pub fn teardown(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        let was_mounted = is_mounted(&self.path);
        if was_mounted && self.daemons.is_empty() {
            self.adopt_daemons();
        }
        if let Some(p) = unmount(&self.path) {
            problems.push(p);
        }
        for w in &mut self.watchdogs {
            if w.stop() {
                problems.push("the watchdog killed the daemon (test hung)".to_string());
            }
        }
        // Any process still carrying our mount point is ours (it is unique to this test).
        let mut pids: BTreeSet<i32> = self.daemons.iter().copied().collect();
        pids.extend(pids_with_arg(self.path.to_str().unwrap()));
        let deadline = Instant::now() + EXIT_TIMEOUT;
        while pids.iter().any(|&p| pid_alive(p)) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
        for &pid in &pids {
            if pid_alive(pid) {
                problems.push(format!(
                    "daemon pid {pid} still running {EXIT_TIMEOUT:?} after unmount; SIGKILL"
                ));
                // SAFETY: plain syscall on a process started by this test (found by its
                // unique mount point argument and seen alive just now).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        self.daemons.clear();
        problems
    }
}

impl Drop for BgMount {
    fn drop(&mut self) {
        let problems = self.teardown();
        if !problems.is_empty() {
            eprintln!(
                "background mount teardown problems: {problems:?}\n----- log -----\n{}",
                read_tail(&self.log_path, 32 * KIB)
            );
            if !thread::panicking() {
                panic!("background mount teardown problems: {problems:?}");
            }
        }
    }
}
