//! `supamount status` through a real mount: a file being written shows as pending with its
//! bytes, and is gone from the status once closed.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_supamount");
const KEY_ID: &str = "status-test-key";
const SECRET: &str = "status-test-secret";

/// The local server and a mount of its bucket, torn down even when the test fails.
struct Setup {
    server: Child,
    mount: Child,
    mountpoint: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = Command::new("fusermount3")
            .arg("-uz")
            .arg(&self.mountpoint)
            .status();
        for child in [&mut self.mount, &mut self.server] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn is_mounted(mountpoint: &Path) -> bool {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let wanted = mountpoint.to_string_lossy();
    table
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(wanted.as_ref()))
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Command::new(BIN)
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--bucket",
            "b",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .env("AWS_ACCESS_KEY_ID", KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let endpoint = line.trim().strip_prefix("endpoint=").unwrap().to_string();
    let mountpoint = dir.path().join("mnt");
    std::fs::create_dir(&mountpoint).unwrap();
    let mount = Command::new(BIN)
        .args(["--foreground", "--endpoint-url", &endpoint, "--cache-dir"])
        .arg(dir.path().join("cache"))
        .arg("b")
        .arg(&mountpoint)
        .env("AWS_ACCESS_KEY_ID", KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("XDG_RUNTIME_DIR", dir.path())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let setup = Setup {
        server,
        mount,
        mountpoint,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while !is_mounted(&setup.mountpoint) {
        assert!(Instant::now() < deadline, "the mount did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    setup
}

fn status(setup: &Setup) -> serde_json::Value {
    let out = Command::new(BIN)
        .args(["status", "--json"])
        .arg(&setup.mountpoint)
        .env("XDG_RUNTIME_DIR", setup._dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn pending_upload_shows_until_closed() {
    let setup = setup();
    let mut file = std::fs::File::create(setup.mountpoint.join("slow.bin")).unwrap();
    file.write_all(&vec![7u8; 3 * 1024 * 1024]).unwrap();
    let during = status(&setup);
    assert_eq!(during["bucket"], "b");
    assert_eq!(during["credentials"], "access keys");
    assert_eq!(during["pending_uploads"], 1);
    assert_eq!(during["pending_bytes"], 3 * 1024 * 1024);
    drop(file);
    // close() returns once the upload is done; release follows asynchronously.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let after = status(&setup);
        if after["pending_uploads"] == 0 && after["open_files"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "still pending: {after}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
