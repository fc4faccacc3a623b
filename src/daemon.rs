//! Going to the background like other mount commands: the command re-runs itself as a detached
//! child and waits until the child reports that the mount is live (or why it failed), so the
//! exit status of `supamount` tells whether the mount worked.
//!
//! Re-running (rather than `fork`) keeps the tokio runtime out of a forked process. The child
//! learns it is the child from [`READY_FD_ENV`], which names the pipe it reports on. Secrets
//! travel, if at all, in the environment it inherits, never in its arguments.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::Duration;

use anyhow::{bail, Context};

/// Set in the child's environment to the number of the pipe it reports readiness on.
pub const READY_FD_ENV: &str = "SUPAMOUNT_READY_FD";
/// The descriptor number the pipe gets in the child.
const CHILD_FD: RawFd = 3;
/// Connecting, probing and mounting take a few seconds; retries against a dead endpoint less
/// than a minute.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// Arguments for the child when they differ from this process's own: the mount helper
/// translates mount(8)'s convention, and the child should not have to do it again.
static CHILD_ARGS: OnceLock<Vec<OsString>> = OnceLock::new();

/// Run the background child with `args` (without the program name) instead of ours.
pub fn set_child_args(args: Vec<OsString>) {
    let _ = CHILD_ARGS.set(args);
}

/// Start this command again in the background with stderr going to `log_file`, and wait for
/// its report. Returns the child's success line.
pub fn run_in_background(log_file: &Path) -> anyhow::Result<String> {
    if let Some(dir) = log_file.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_file)
        .with_context(|| format!("opening the log file {}", log_file.display()))?;
    // std's pipe is close-on-exec on every platform (pipe2 is Linux-only); the child gets
    // its own copy of the write end through dup2 below.
    let (read_end, writer) = std::io::pipe().context("creating a pipe")?;
    let write_end = writer.as_raw_fd();
    let mut command = Command::new(std::env::current_exe().context("finding this program")?);
    let args = CHILD_ARGS
        .get()
        .cloned()
        .unwrap_or_else(|| std::env::args_os().skip(1).collect());
    command
        .args(args)
        .env(READY_FD_ENV, CHILD_FD.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    // SAFETY: only async-signal-safe calls (dup2, setsid) run between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::dup2(write_end, CHILD_FD) < 0 || libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let spawned = command.spawn().context("starting the background process");
    // Our copy of the write end must go, or the reader below never sees the child's EOF.
    drop(writer);
    let mut child = spawned?;

    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = read_end.take(64 * 1024).read_to_string(&mut text);
        let _ = tx.send(text);
    });
    let report = match rx.recv_timeout(READY_TIMEOUT) {
        Ok(report) => report,
        Err(_) => {
            let _ = child.kill();
            bail!(
                "the mount did not become ready within {} s; see {}",
                READY_TIMEOUT.as_secs(),
                log_file.display()
            );
        }
    };
    match report.trim_end().split_once(' ') {
        Some(("ok", line)) => Ok(line.to_string()),
        Some(("error", reason)) => bail!("{reason}"),
        _ => {
            let status = child.wait().ok();
            bail!(
                "the background process stopped before mounting ({}); see {}",
                status.map_or("unknown status".to_string(), |s| s.to_string()),
                log_file.display()
            )
        }
    }
}

/// The child's side: tells the waiting parent how the mount went. A foreground run has none.
pub struct Readiness(Option<File>);

impl Readiness {
    pub fn from_env() -> Self {
        let fd = std::env::var(READY_FD_ENV)
            .ok()
            .and_then(|v| v.parse::<RawFd>().ok());
        std::env::remove_var(READY_FD_ENV);
        // SAFETY: the parent put the pipe at this number for us, and nothing else uses it.
        Self(fd.map(|fd| unsafe { File::from_raw_fd(fd) }))
    }

    /// Whether this process is the background child.
    pub fn is_background(&self) -> bool {
        self.0.is_some()
    }

    pub fn ready(&mut self, line: &str) {
        self.send(&format!("ok {line}\n"));
    }

    pub fn failed(&mut self, reason: &str) {
        self.send(&format!("error {reason}\n"));
    }

    fn send(&mut self, message: &str) {
        if let Some(mut pipe) = self.0.take() {
            let _ = pipe.write_all(message.as_bytes());
        }
    }
}
