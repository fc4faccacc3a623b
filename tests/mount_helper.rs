//! The mount(8) helper end to end: `mount.fuse.supamount` called the way mount(8) calls it,
//! `supamount SOURCE MOUNTPOINT -o OPTS` the way fuse3's mount.fuse3 calls it, and (as root)
//! the real `mount -t fuse.supamount` and `mount -a` over a temporary fstab. Each mount is
//! unmounted with `umount`, and the background daemon must then exit by itself.
//!
//! Keys reach the mount only through a profile file (`credentials_file=`, `profile=`), as at
//! boot: never through the options, which /proc/mounts shows.

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::{is_mounted, pids_with_arg, run_timeout, Backend, BIN, EXIT_TIMEOUT, START_TIMEOUT};

/// Where mount(8) looks for the helper of `-t fuse.supamount`.
const SYSTEM_HELPER: &str = "/sbin/mount.fuse.supamount";
const PROFILE: &str = "helpertest";

/// A mount point made for one mount; on drop, unmounts it if a failed test left it mounted.
struct MountPoint {
    path: PathBuf,
    cache: PathBuf,
    log: PathBuf,
}

impl MountPoint {
    fn new(b: &Backend, stem: &str) -> MountPoint {
        let path = b.fresh_path(stem);
        fs::create_dir_all(&path).unwrap();
        let path = path.canonicalize().unwrap();
        let cache = path.with_extension("cache");
        fs::create_dir_all(&cache).unwrap();
        let log = path.with_extension("log");
        MountPoint { path, cache, log }
    }

    /// The options an fstab line would carry for this mount.
    fn options(&self, b: &Backend, credentials: &Path) -> String {
        format!(
            "rw,_netdev,nofail,nodev,nosuid,noatime,x-systemd.automount,comment=test,\
             endpoint_url={},region={},profile={PROFILE},credentials_file={},cache_dir={},\
             log_file={},attr_ttl=0",
            b.endpoint,
            b.region,
            credentials.display(),
            self.cache.display(),
            self.log.display()
        )
    }

    /// Write through the mount, `umount` it, and check that the daemon exits and the object
    /// reached the bucket.
    fn use_and_umount(&self, b: &Backend, name: &str) {
        assert!(
            is_mounted(&self.path),
            "{} is not mounted",
            self.path.display()
        );
        let daemons = pids_with_arg(self.path.to_str().unwrap());
        assert!(
            !daemons.is_empty(),
            "no daemon carries {}",
            self.path.display()
        );
        fs::write(self.path.join(name), b"written through the helper\n").unwrap();
        assert_eq!(
            fs::read(self.path.join(name)).unwrap(),
            b"written through the helper\n"
        );

        let out = run_timeout(Command::new("umount").arg(&self.path), START_TIMEOUT);
        assert!(out.ok(), "umount failed: {}", out.stderr);
        let deadline = Instant::now() + EXIT_TIMEOUT;
        while daemons
            .iter()
            .any(|&p| Path::new(&format!("/proc/{p}")).exists())
        {
            assert!(
                Instant::now() < deadline,
                "daemon {daemons:?} still running after umount; log:\n{}",
                fs::read_to_string(&self.log).unwrap_or_default()
            );
            thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(
            b.get(name).as_deref(),
            Some(&b"written through the helper\n"[..])
        );
    }
}

impl Drop for MountPoint {
    fn drop(&mut self) {
        if is_mounted(&self.path) {
            let _ = Command::new("fusermount3")
                .arg("-u")
                .arg(&self.path)
                .status();
        }
    }
}

/// A credentials file with the backend's keys under [`PROFILE`].
fn credentials_file(b: &Backend) -> PathBuf {
    let path = b.fresh_path("credentials");
    fs::write(
        &path,
        format!(
            "[{PROFILE}]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            b.access_key, b.secret_key
        ),
    )
    .unwrap();
    path
}

/// A command that sees no keys in its environment, as at boot.
fn without_keys(mut cmd: Command) -> Command {
    for var in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_ENDPOINT_URL",
        "AWS_REGION",
        "AWS_SHARED_CREDENTIALS_FILE",
        "AWS_CONFIG_FILE",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn helper_called_as_mount_would() {
    let b = Backend::local("helper_direct");
    let credentials = credentials_file(&b);
    let bin_dir = b.fresh_path("bin");
    fs::create_dir_all(&bin_dir).unwrap();
    let helper = bin_dir.join("mount.fuse.supamount");
    symlink(BIN, &helper).unwrap();

    let mp = MountPoint::new(&b, "direct");
    let mut cmd = without_keys(Command::new(&helper));
    cmd.arg(&b.bucket)
        .arg(&mp.path)
        .args(["-n", "-o"])
        .arg(mp.options(&b, &credentials));
    let out = run_timeout(&mut cmd, START_TIMEOUT * 4);
    assert!(out.ok(), "helper failed: {}\n{}", out.stderr, out.stdout);
    mp.use_and_umount(&b, "direct.txt");
}

#[test]
fn supamount_called_as_mount_fuse3_would() {
    let b = Backend::local("helper_fuse3");
    let credentials = credentials_file(&b);
    let mp = MountPoint::new(&b, "fuse3");
    // mount.fuse3 adds `dev,suid` and runs the type's program with `-o` last.
    let mut cmd = without_keys(Command::new(BIN));
    cmd.arg(&b.bucket)
        .arg(&mp.path)
        .arg("-o")
        .arg(format!("{},dev,suid", mp.options(&b, &credentials)));
    let out = run_timeout(&mut cmd, START_TIMEOUT * 4);
    assert!(
        out.ok(),
        "supamount -o failed: {}\n{}",
        out.stderr,
        out.stdout
    );
    mp.use_and_umount(&b, "fuse3.txt");
}

#[test]
fn bad_options_fail_before_mounting() {
    let dir = tempfile::tempdir().unwrap();
    let helper = dir.path().join("mount.supamount");
    symlink(BIN, &helper).unwrap();
    let out = run_timeout(
        Command::new(&helper).args(["b", "/nonexistent", "-o", "rw,bogus=1"]),
        START_TIMEOUT,
    );
    assert!(!out.ok());
    assert!(
        out.stderr.contains("unknown mount option `bogus`"),
        "{}",
        out.stderr
    );
    let out = run_timeout(
        Command::new(&helper).args(["b", "/m", "-o", "aws_secret_access_key=x"]),
        START_TIMEOUT,
    );
    assert!(
        !out.ok() && out.stderr.contains("/proc/mounts"),
        "{}",
        out.stderr
    );
    let out = run_timeout(Command::new(&helper).arg("--help"), START_TIMEOUT);
    assert!(
        out.ok() && out.stdout.contains("fuse.supamount"),
        "{}",
        out.stdout
    );
}

/// Removes the helper symlink this test created (and only then).
struct CreatedLink(PathBuf);

impl Drop for CreatedLink {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

#[test]
fn mount_t_and_fstab_as_root() {
    if !is_root() || !Path::new("/usr/bin/mount").exists() && !Path::new("/bin/mount").exists() {
        eprintln!("NOTICE: skipping mount(8) tests: they need root and util-linux mount");
        return;
    }
    if fs::symlink_metadata(SYSTEM_HELPER).is_ok() {
        eprintln!("NOTICE: skipping mount(8) tests: {SYSTEM_HELPER} exists and is not ours");
        return;
    }
    symlink(BIN, SYSTEM_HELPER).unwrap();
    let _link = CreatedLink(PathBuf::from(SYSTEM_HELPER));

    let b = Backend::local("helper_mount8");
    let credentials = credentials_file(&b);

    let mp = MountPoint::new(&b, "mount_t");
    let mut cmd = without_keys(Command::new("mount"));
    cmd.args(["-t", "fuse.supamount", &b.bucket])
        .arg(&mp.path)
        .arg("-o")
        .arg(mp.options(&b, &credentials));
    let out = run_timeout(&mut cmd, START_TIMEOUT * 4);
    assert!(out.ok(), "mount -t failed: {}\n{}", out.stderr, out.stdout);
    mp.use_and_umount(&b, "mount_t.txt");

    let mp = MountPoint::new(&b, "fstab");
    let fstab = b.fresh_path("fstab");
    fs::write(
        &fstab,
        format!(
            "# written by tests/mount_helper.rs\n{}  {}  fuse.supamount  {}  0  0\n",
            b.bucket,
            mp.path.display(),
            mp.options(&b, &credentials)
        ),
    )
    .unwrap();
    let mut cmd = without_keys(Command::new("mount"));
    cmd.arg("-a").arg("-T").arg(&fstab);
    let out = run_timeout(&mut cmd, START_TIMEOUT * 4);
    assert!(
        out.ok(),
        "mount -a -T failed: {}\n{}",
        out.stderr,
        out.stdout
    );
    mp.use_and_umount(&b, "fstab.txt");
}
