//! Session-token (per-user, Row Level Security) mounts against the real Supabase Storage server:
//! JWT renewal through a stand-in for Supabase Auth, token files replaced under a live mount,
//! terminal renewal failures, RLS denials at close(), other users' objects, and secrets kept out
//! of argv and logs.
//!
//! Each test gets its own bucket (`e2e-st-…` with full owner policies, `e2e-stnoupd-…` without
//! UPDATE); the policies are created once, if missing. The fake Auth server signs HS256 JWTs with
//! the storage server's JWT_SECRET, so the storage server accepts them as real user tokens.
//! Skipped (with a notice) unless `SUPAMOUNT_TEST_SUPABASE=1` and client.env's variables are set.

mod common;

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_s3::config::{Credentials, Region};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

use common::{
    assert_errno, close_checked, dir_names, files_under, is_mounted, kill_and_reap, poll_until,
    random_bytes, run_timeout, sha256_hex, unmount, wait_timeout, write_file, Backend, BIN, KIB,
    MIB,
};

/// JWT lifetime issued by the fake Auth server: short, so renewals happen within a test.
const SHORT_LIFETIME: u64 = 20;

// ---------------------------------------------------------------------------------------------
// Settings of the lab server

struct Lab {
    endpoint: String,
    region: String,
    tenant: String,
    anon_key: String,
    jwt_secret: String,
    pg_url: String,
}

fn lab(test: &str) -> Option<(Lab, Backend)> {
    let backend = Backend::supabase(test)?;
    let var = |k: &str| {
        std::env::var(k).unwrap_or_else(|_| panic!("SUPAMOUNT_TEST_SUPABASE is set but {k} is not"))
    };
    let lab = Lab {
        endpoint: var("S3_ENDPOINT"),
        region: var("S3_REGION"),
        tenant: std::env::var("TENANT_ID").unwrap_or_else(|_| "stub".into()),
        anon_key: var("ANON_KEY"),
        jwt_secret: var("JWT_SECRET"),
        pg_url: var("PG_URL"),
    };
    ensure_policies(&lab.pg_url);
    Some((lab, backend))
}

/// Owner policies on the test buckets: full access in `e2e-st-*`, no UPDATE in `e2e-stnoupd-*`.
fn ensure_policies(pg_url: &str) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let owner = "owner_id = (SELECT auth.uid())::text";
        let full = format!("bucket_id LIKE 'e2e-st-%' AND {owner}");
        let noupd =
            format!("(bucket_id LIKE 'e2e-st-%' OR bucket_id LIKE 'e2e-stnoupd-%') AND {owner}");
        let policies = [
            ("supamount_st_select", "SELECT", format!("USING ({noupd})")),
            (
                "supamount_st_insert",
                "INSERT",
                format!("WITH CHECK ({noupd})"),
            ),
            (
                "supamount_st_update",
                "UPDATE",
                format!("USING ({full}) WITH CHECK ({full})"),
            ),
            ("supamount_st_delete", "DELETE", format!("USING ({full})")),
        ];
        let mut sql = String::new();
        for (name, op, rule) in policies {
            sql.push_str(&format!(
                "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_policies WHERE policyname = '{name}') \
                 THEN CREATE POLICY {name} ON storage.objects FOR {op} TO authenticated {rule}; \
                 END IF; END $$;\n"
            ));
        }
        let out = run_timeout(
            Command::new("psql")
                .arg(pg_url)
                .args(["-v", "ON_ERROR_STOP=1", "-q", "-c", &sql]),
            Duration::from_secs(30),
        );
        assert!(out.ok(), "creating the test policies: {}", out.stderr);
    });
}

// ---------------------------------------------------------------------------------------------
// JWTs signed like Supabase Auth's (HS256 with the project's JWT secret)

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let inner = Sha256::new()
        .chain_update(k.map(|b| b ^ 0x36))
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(k.map(|b| b ^ 0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// A user JWT (role `authenticated`) for `sub`, expiring `lifetime` seconds from now (negative:
/// already expired).
fn mint_jwt(secret: &str, sub: &str, lifetime: i64) -> String {
    let now = now_secs() as i64;
    // Issued now, or (for an expired token) a minute before it expired.
    let iat = if lifetime > 0 {
        now
    } else {
        now + lifetime - 60
    };
    let head = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = serde_json::json!({
        "iss": "supamount-test", "aud": "authenticated", "role": "authenticated",
        "sub": sub, "email": "st@example.invalid", "iat": iat, "exp": now + lifetime,
        "session_id": format!("{:016x}", rand_seed()),
    });
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    let mac = hmac_sha256(secret.as_bytes(), format!("{head}.{body}").as_bytes());
    format!("{head}.{body}.{}", URL_SAFE_NO_PAD.encode(mac))
}

fn new_user() -> String {
    let b = random_bytes(16, now_secs() ^ u64::from(std::process::id()) ^ rand_seed());
    let h = hex::encode(b);
    format!(
        "{}-{}-4{}-8{}-{}",
        &h[..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

fn rand_seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(Instant::now())
}

// ---------------------------------------------------------------------------------------------
// A stand-in for Supabase Auth's refresh-token grant

#[derive(Default)]
struct AuthState {
    valid: HashSet<String>,
    used: HashSet<String>,
    seq: u64,
    calls: u64,
    /// Answer every request with this status (503, 429) instead of renewing.
    fail_with: Option<u16>,
    last_refresh: Option<String>,
    access_tokens: Vec<String>,
}

struct FakeAuth {
    url: String,
    secret: String,
    anon_key: String,
    sub: String,
    lifetime: i64,
    state: Arc<Mutex<AuthState>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl FakeAuth {
    fn start(lab: &Lab, sub: &str, lifetime: u64) -> FakeAuth {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let mut auth = FakeAuth {
            url,
            secret: lab.jwt_secret.clone(),
            anon_key: lab.anon_key.clone(),
            sub: sub.to_string(),
            lifetime: lifetime as i64,
            state: Arc::default(),
            stop: Arc::default(),
            thread: None,
        };
        let (state, stop) = (auth.state.clone(), auth.stop.clone());
        let (secret, anon, sub, lifetime) = (
            auth.secret.clone(),
            auth.anon_key.clone(),
            auth.sub.clone(),
            auth.lifetime,
        );
        auth.thread = Some(thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let _ = serve_one(conn, &state, &secret, &anon, &sub, lifetime);
                    }
                    Err(_) => thread::sleep(Duration::from_millis(20)),
                }
            }
        }));
        auth
    }

    /// A session as a login would give it: a JWT and a refresh token.
    fn login(&self) -> (String, String) {
        let mut s = self.state.lock().unwrap();
        s.seq += 1;
        let refresh = format!("rt-{}-{}", s.seq, rand_seed());
        s.valid.insert(refresh.clone());
        let jwt = mint_jwt(&self.secret, &self.sub, self.lifetime);
        s.access_tokens.push(jwt.clone());
        (jwt, refresh)
    }

    /// Another client used the current refresh token: the mount's next renewal is refused.
    fn steal(&self, token: &str) {
        let mut s = self.state.lock().unwrap();
        s.valid.remove(token);
        s.used.insert(token.to_string());
    }

    fn calls(&self) -> u64 {
        self.state.lock().unwrap().calls
    }
}

impl Drop for FakeAuth {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_one(
    mut conn: TcpStream,
    state: &Mutex<AuthState>,
    secret: &str,
    anon: &str,
    sub: &str,
    lifetime: i64,
) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let (mut length, mut apikey) = (0usize, String::new());
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap_or(0),
                "apikey" => apikey = value.trim().to_string(),
                _ => {}
            }
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    let (status, answer) = answer(
        &request_line,
        &apikey,
        &body,
        state,
        (secret, anon, sub, lifetime),
    );
    let reason = if status == 200 { "OK" } else { "Error" };
    write!(
        conn,
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{answer}",
        answer.len()
    )?;
    conn.flush()
}

fn answer(
    request_line: &str,
    apikey: &str,
    body: &[u8],
    state: &Mutex<AuthState>,
    (secret, anon, sub, lifetime): (&str, &str, &str, i64),
) -> (u16, String) {
    let mut s = state.lock().unwrap();
    s.calls += 1;
    if !request_line.starts_with("POST /auth/v1/token?grant_type=refresh_token ") {
        return (404, r#"{"error_code":"not_found"}"#.into());
    }
    if apikey != anon {
        return (401, r#"{"message":"Invalid API key"}"#.into());
    }
    if let Some(status) = s.fail_with {
        return (status, r#"{"error_code":"over_request_rate_limit"}"#.into());
    }
    let token = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["refresh_token"].as_str().map(str::to_string))
        .unwrap_or_default();
    if s.used.contains(&token) {
        return (
            400,
            r#"{"code":400,"error_code":"refresh_token_already_used","msg":"Invalid Refresh Token: Already Used"}"#
                .into(),
        );
    }
    if !s.valid.remove(&token) {
        return (
            400,
            r#"{"code":400,"error_code":"refresh_token_not_found","msg":"Invalid Refresh Token: Refresh Token Not Found"}"#
                .into(),
        );
    }
    s.used.insert(token);
    s.seq += 1;
    let refresh = format!("rt-{}-{}", s.seq, rand_seed());
    s.valid.insert(refresh.clone());
    s.last_refresh = Some(refresh.clone());
    let jwt = mint_jwt(secret, sub, lifetime);
    s.access_tokens.push(jwt.clone());
    let answer = serde_json::json!({
        "access_token": jwt, "token_type": "bearer", "expires_in": lifetime,
        "expires_at": now_secs() as i64 + lifetime, "refresh_token": refresh,
        "user": {"id": sub},
    });
    (200, answer.to_string())
}

// ---------------------------------------------------------------------------------------------
// A session-token mount

struct SessionMount {
    path: PathBuf,
    cache_dir: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
}

/// The `supamount` command for a session-token mount of `bucket` (no AWS keys at all).
fn session_cmd(lab: &Lab, backend: &Backend, bucket: &str, extra: &[&str]) -> Command {
    let nowhere = backend.tmp().join("no-aws-config");
    let mut c = Command::new(BIN);
    c.args(["--endpoint-url", &lab.endpoint, "--region", &lab.region])
        .args([
            "--tenant-id",
            &lab.tenant,
            "--attr-ttl",
            "0",
            "--log-level",
            "debug",
        ])
        .args(extra)
        .arg(bucket)
        .env("SUPABASE_ANON_KEY", &lab.anon_key)
        .env("AWS_CONFIG_FILE", &nowhere)
        .env("AWS_SHARED_CREDENTIALS_FILE", &nowhere)
        .env_remove("SUPABASE_ACCESS_TOKEN")
        .env_remove("SUPABASE_PROJECT_REF")
        .env_remove("SUPABASE_URL")
        .env_remove("SUPAMOUNT_LOG");
    for k in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_ENDPOINT_URL",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
    ] {
        c.env_remove(k);
    }
    c.stdin(Stdio::null());
    c
}

impl SessionMount {
    fn start(backend: &Backend, mut cmd: Command) -> SessionMount {
        let path = backend.fresh_path("mnt");
        fs::create_dir_all(&path).unwrap();
        let path = path.canonicalize().unwrap();
        let cache_dir = backend.fresh_path("cache");
        fs::create_dir_all(&cache_dir).unwrap();
        let log_path = path.with_extension("log");
        let log = File::create(&log_path).unwrap();
        cmd.arg(&path)
            .args(["--foreground", "--cache-dir"])
            .arg(&cache_dir)
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let mut child = cmd.spawn().expect("spawning supamount");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !is_mounted(&path) {
            if let Ok(Some(st)) = child.try_wait() {
                panic!(
                    "supamount exited ({st}) before mounting; log:\n{}",
                    fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                kill_and_reap(&mut child);
                let _ = unmount(&path);
                panic!("mount did not appear");
            }
            thread::sleep(Duration::from_millis(25));
        }
        SessionMount {
            path,
            cache_dir,
            log_path,
            child: Some(child),
        }
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.path.join(rel)
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }
}

impl Drop for SessionMount {
    fn drop(&mut self) {
        let problem = unmount(&self.path);
        if let Some(mut child) = self.child.take() {
            if wait_timeout(&mut child, Duration::from_secs(30)).is_none() {
                kill_and_reap(&mut child);
            }
        }
        if thread::panicking() || problem.is_some() {
            eprintln!(
                "----- supamount log -----\n{}\n----- end ({problem:?}) -----",
                self.log()
            );
        }
    }
}

/// Writes a token file the way a careful tool would: private, replaced atomically.
fn write_private(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, text).unwrap();
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600)).unwrap();
    fs::rename(&tmp, path).unwrap();
}

/// A plain S3 client acting as one user (to put objects owned by someone else).
fn user_client(lab: &Lab, jwt: &str) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version_latest()
        .region(Region::new(lab.region.clone()))
        // The SDK joins a path-style bucket straight onto the endpoint's path: `/s3` needs `/s3/`.
        .endpoint_url(format!("{}/", lab.endpoint.trim_end_matches('/')))
        .credentials_provider(Credentials::new(
            &lab.tenant,
            &lab.anon_key,
            Some(jwt.to_string()),
            None,
            "test-user",
        ))
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// The names in `dir`, or the first error of opendir/readdir.
fn list(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir)? {
        names.push(entry?.file_name().to_string_lossy().into_owned());
    }
    Ok(names)
}

fn count_lines(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

fn assert_no_secrets(what: &str, text: &str, secrets: &[&str]) {
    for s in secrets {
        // Any recognisable piece of a secret counts, not only the whole of it.
        let piece = &s[s.len().saturating_sub(24)..];
        assert!(
            !text.contains(piece),
            "{what} contains a secret ({}…)",
            &s[..8.min(s.len())]
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Tests

/// A session-token mount renewing 20-second JWTs through a fresh fake Auth server.
struct Renewing {
    auth: FakeAuth,
    /// The refresh token the login gave (used by the mount's first renewal).
    refresh: String,
    refresh_file: PathBuf,
    mount: SessionMount,
}

fn mount_renewing(lab: &Lab, backend: &Backend) -> Renewing {
    let user = new_user();
    let auth = FakeAuth::start(lab, &user, SHORT_LIFETIME);
    let (jwt, refresh) = auth.login();
    let refresh_file = backend.tmp().join("refresh-token");
    write_private(&refresh_file, &refresh);
    let mut cmd = session_cmd(
        lab,
        backend,
        &backend.bucket,
        &[
            "--refresh-token-file",
            refresh_file.to_str().unwrap(),
            "--project-url",
            &auth.url,
        ],
    );
    cmd.env("SUPABASE_ACCESS_TOKEN", &jwt);
    let mount = SessionMount::start(backend, cmd);
    Renewing {
        auth,
        refresh,
        refresh_file,
        mount,
    }
}

/// How long the renewal test copies: over two minutes of 20-second tokens.
const COPY_TIME: Duration = Duration::from_secs(125);

/// Files copied over several 20-second token lifetimes, renewed through Auth, arrive intact; the
/// refresh-token file ends up holding the newest refresh token, with mode 0600; argv and the
/// debug log hold no secret.
#[test]
fn renewal_keeps_copies_going() {
    let Some((lab, backend)) = lab("st-renewal") else {
        return;
    };
    let Renewing {
        auth,
        refresh,
        refresh_file,
        mount: m,
    } = mount_renewing(&lab, &backend);
    let started = Instant::now();

    // A slow writer keeps one 40 MiB file open for the whole test (its multipart parts leave
    // while it is written, across renewals), while small files are copied every 2 s.
    let slow_path = m.p("slow.bin");
    let slow_data = random_bytes(40 * MIB, 7);
    let slow = {
        let data = slow_data.clone();
        thread::spawn(move || {
            let mut f = File::create(&slow_path).unwrap();
            for chunk in data.chunks(MIB) {
                f.write_all(chunk).unwrap();
                thread::sleep(COPY_TIME / 40);
            }
            close_checked(f)
        })
    };
    let mut small = Vec::new();
    let mut i = 0;
    while started.elapsed() < COPY_TIME {
        let data = random_bytes(300 * KIB, 100 + i);
        write_file(&m.p(&format!("small-{i:02}.bin")), &data);
        assert_eq!(fs::read(m.p(&format!("small-{i:02}.bin"))).unwrap(), data);
        small.push(data);
        i += 1;
        thread::sleep(Duration::from_secs(2));
    }
    slow.join().unwrap().expect("closing the slow file");

    for (i, data) in small.iter().enumerate() {
        let got = backend.get(&format!("small-{i:02}.bin")).expect("object");
        assert_eq!(sha256_hex(&got), sha256_hex(data), "small-{i:02}.bin");
    }
    let got = backend.get("slow.bin").expect("slow.bin on the server");
    assert_eq!(sha256_hex(&got), sha256_hex(&slow_data));
    assert!(
        auth.calls() >= 5,
        "only {} renewals in {COPY_TIME:?} of 20 s tokens",
        auth.calls()
    );

    let newest = auth.state.lock().unwrap().last_refresh.clone().unwrap();
    assert_eq!(fs::read_to_string(&refresh_file).unwrap().trim(), newest);
    let mode = fs::metadata(&refresh_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "refresh-token file mode {mode:o}");

    let log = m.log();
    assert!(
        !log.contains("request refused"),
        "a request was refused:\n{log}"
    );
    assert!(count_lines(&log, "session renewed") >= 5, "{log}");
    let cmdline = fs::read(format!("/proc/{}/cmdline", m.pid())).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline).into_owned();
    let state = auth.state.lock().unwrap();
    let mut secrets: Vec<&str> = vec![&lab.anon_key, &refresh, &newest];
    secrets.extend(state.access_tokens.iter().map(String::as_str));
    assert_no_secrets("the command line", &cmdline, &secrets);
    assert_no_secrets("the debug log", &log, &secrets);
}

/// `--session-token-file`: a replaced token keeps the mount working; a stale one gives EACCES and
/// one log line naming its expiry; a fresh one again recovers, all without a remount.
#[test]
fn token_file_is_followed() {
    let Some((lab, backend)) = lab("st-file") else {
        return;
    };
    let user = new_user();
    let token_file = backend.tmp().join("jwt");
    write_private(&token_file, &mint_jwt(&lab.jwt_secret, &user, 600));
    let cmd = session_cmd(
        &lab,
        &backend,
        &backend.bucket,
        &["--session-token-file", token_file.to_str().unwrap()],
    );
    let m = SessionMount::start(&backend, cmd);
    write_file(&m.p("a.txt"), b"first\n");

    write_private(&token_file, &mint_jwt(&lab.jwt_secret, &user, 600));
    thread::sleep(Duration::from_millis(1200));
    write_file(&m.p("b.txt"), b"second\n");
    assert_eq!(fs::read(m.p("a.txt")).unwrap(), b"first\n");
    assert!(
        m.log().contains("session token file changed"),
        "{}",
        m.log()
    );

    write_private(&token_file, &mint_jwt(&lab.jwt_secret, &user, -30));
    thread::sleep(Duration::from_millis(1200));
    assert_errno(
        fs::read(m.p("a.txt")),
        libc::EACCES,
        "read with a stale token",
    );
    assert_errno(list(&m.path), libc::EACCES, "list with a stale token");
    assert_errno(
        fs::write(m.p("c.txt"), b"x"),
        libc::EACCES,
        "write with a stale token",
    );
    assert_eq!(count_lines(&m.log(), "expired at"), 1, "{}", m.log());

    write_private(&token_file, &mint_jwt(&lab.jwt_secret, &user, 600));
    poll_until(Duration::from_secs(10), "the mount to recover", || {
        fs::read(m.p("a.txt")).is_ok()
    });
    assert_eq!(dir_names(&m.path), ["a.txt", "b.txt"]);
}

/// A refresh token used elsewhere: one clear log line; later requests fail with EACCES, and a
/// file being written then fails at close with its data kept in CACHE_DIR/recovery.
#[test]
fn reused_refresh_token_fails_clearly() {
    let Some((lab, backend)) = lab("st-reuse") else {
        return;
    };
    let Renewing {
        auth,
        refresh,
        mount: m,
        ..
    } = mount_renewing(&lab, &backend);
    auth.steal(&refresh);

    let mut f = File::create(m.p("doomed.txt")).unwrap();
    f.write_all(b"keep me safe\n").unwrap();
    poll_until(Duration::from_secs(20), "the renewal to be refused", || {
        m.log().contains("refresh_token_already_used")
    });
    // The JWT lives 20 s from the login; the server decides with its own clock.
    poll_until(Duration::from_secs(30), "the token to expire", || {
        list(&m.path).is_err()
    });
    assert!(
        close_checked(f).is_err(),
        "close succeeded with an expired session"
    );
    assert_errno(list(&m.path), libc::EACCES, "list after expiry");

    let log = m.log();
    assert_eq!(count_lines(&log, "cannot renew the session"), 1, "{log}");
    assert!(log.contains("log in again"), "{log}");
    let kept: Vec<_> = files_under(&m.cache_dir.join("recovery"))
        .into_iter()
        .filter(|p| fs::read(p).unwrap() == b"keep me safe\n")
        .collect();
    // The core may keep one copy per failed attempt (flush, then release).
    assert!(
        !kept.is_empty(),
        "data of the failed upload not in recovery"
    );
    assert!(backend.get("doomed.txt").is_none());
}

/// A user allowed SELECT and INSERT but not UPDATE: overwriting an existing file fails at close
/// with EACCES and leaves the old content; nothing stray is left in the bucket.
#[test]
fn rls_denied_overwrite_fails_at_close() {
    let Some((lab, backend)) = lab("stnoupd") else {
        return;
    };
    let user = new_user();
    let token_file = backend.tmp().join("jwt");
    write_private(&token_file, &mint_jwt(&lab.jwt_secret, &user, 600));
    let cmd = session_cmd(
        &lab,
        &backend,
        &backend.bucket,
        &["--session-token-file", token_file.to_str().unwrap()],
    );
    let m = SessionMount::start(&backend, cmd);
    write_file(&m.p("f"), b"old\n");

    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(m.p("f"))
        .unwrap();
    f.write_all(b"new\n").unwrap();
    let closed = close_checked(f);
    assert_errno(closed, libc::EACCES, "close of a write RLS refuses");
    assert_eq!(backend.get("f").unwrap(), b"old\n");
    assert_eq!(backend.all_keys(), ["f"]);
    assert!(
        m.log().contains("denied by the bucket's policies"),
        "{}",
        m.log()
    );
    drop(m);

    // What the user sees afterwards, through a fresh mount (the first one may still hold the
    // refused bytes as unsaved data of the file).
    let cmd = session_cmd(
        &lab,
        &backend,
        &backend.bucket,
        &["--session-token-file", token_file.to_str().unwrap()],
    );
    let m = SessionMount::start(&backend, cmd);
    assert_eq!(fs::read(m.p("f")).unwrap(), b"old\n");
}

/// Objects of another user are invisible: not listed, and opening one gives ENOENT.
#[test]
fn other_users_objects_are_invisible() {
    let Some((lab, backend)) = lab("st-others") else {
        return;
    };
    let (me, other) = (new_user(), new_user());
    let other_jwt = mint_jwt(&lab.jwt_secret, &other, 600);
    backend
        .block_on(
            user_client(&lab, &other_jwt)
                .put_object()
                .bucket(&backend.bucket)
                .key("theirs.txt")
                .body(b"private\n".to_vec().into())
                .send(),
        )
        .expect("the other user's put");
    let token_file = backend.tmp().join("jwt");
    write_private(&token_file, &mint_jwt(&lab.jwt_secret, &me, 600));
    let cmd = session_cmd(
        &lab,
        &backend,
        &backend.bucket,
        &["--session-token-file", token_file.to_str().unwrap()],
    );
    let m = SessionMount::start(&backend, cmd);
    write_file(&m.p("mine.txt"), b"mine\n");
    assert_eq!(dir_names(&m.path), ["mine.txt"]);
    assert_errno(
        fs::read(m.p("theirs.txt")),
        libc::ENOENT,
        "the other user's file",
    );
    assert_eq!(backend.all_keys(), ["mine.txt", "theirs.txt"]);
}

/// Start-up fails with one clear line for an expired token file and for a spent refresh token.
#[test]
fn dead_sessions_fail_the_mount() {
    let Some((lab, backend)) = lab("st-dead") else {
        return;
    };
    let user = new_user();
    let mnt = backend.fresh_path("mnt");
    fs::create_dir_all(&mnt).unwrap();

    let token_file = backend.tmp().join("jwt");
    write_private(&token_file, &mint_jwt(&lab.jwt_secret, &user, -60));
    let mut cmd = session_cmd(
        &lab,
        &backend,
        &backend.bucket,
        &[
            "--session-token-file",
            token_file.to_str().unwrap(),
            "--foreground",
        ],
    );
    let out = run_timeout(cmd.arg(&mnt), Duration::from_secs(30));
    assert!(!out.ok());
    assert!(out.stderr.contains("expired at"), "{}", out.stderr);
    assert!(!is_mounted(&mnt));

    let auth = FakeAuth::start(&lab, &user, SHORT_LIFETIME);
    let (_, refresh) = auth.login();
    auth.steal(&refresh);
    let refresh_file = backend.tmp().join("refresh-token");
    write_private(&refresh_file, &refresh);
    let mut cmd = session_cmd(
        &lab,
        &backend,
        &backend.bucket,
        &[
            "--refresh-token-file",
            refresh_file.to_str().unwrap(),
            "--project-url",
            &auth.url,
            "--foreground",
        ],
    );
    let out = run_timeout(cmd.arg(&mnt), Duration::from_secs(30));
    assert!(!out.ok());
    assert!(
        out.stderr.contains("refresh_token_already_used"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("log in again"), "{}", out.stderr);
    assert!(!is_mounted(&mnt));
}

/// A secret given as a flag is refused before anything else happens, without echoing it.
#[test]
fn secret_flags_are_refused() {
    for flag in [
        "--anon-key",
        "--session-token",
        "--secret-access-key",
        "--refresh-token",
    ] {
        let out = run_timeout(
            Command::new(BIN).args([flag, "s3cr3t-value", "bucket", "/nonexistent"]),
            Duration::from_secs(30),
        );
        assert!(!out.ok(), "{flag} accepted");
        assert!(out.stderr.contains("refused"), "{flag}: {}", out.stderr);
        assert!(
            !out.stderr.contains("s3cr3t-value"),
            "{flag}: {}",
            out.stderr
        );
    }
}
