//! The write path through a real mount: renames over other files, editors' save-by-rename,
//! directory renames, writes in the middle, truncation, a server that dies mid-write, a full
//! staging disk, and `tar`/`rsync` into the mount. Each check that matters is made after a
//! remount, so it tests what the server holds, not what the mount remembers.

#[macro_use]
mod common;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::process::Command;
use std::time::Duration;

use common::*;

const MIB: usize = 1024 * 1024;

e2e_tests! {
    rename_a_big_file_over_a_small_one,
    save_by_truncate_and_rename,
    rename_a_directory_then_remove_it,
    write_three_bytes_in_the_middle,
    truncate_to_zero_and_grow,
    tar_and_rsync_into_the_mount,
}

fn rename_a_big_file_over_a_small_one(b: &Backend) {
    let m = b.mount();
    let big = write_random_file(&m.p("big"), 3 * 8 * MIB + 12_345, 1);
    write_random_file(&m.p("small"), 4 * MIB, 2);
    fs::rename(m.p("big"), m.p("small")).unwrap();
    assert_eq!(sha256_file(&m.p("small")), big);
    assert!(!m.p("big").exists());
    m.unmount();
    let m = b.mount();
    assert_eq!(sha256_file(&m.p("small")), big);
    assert!(!m.p("big").exists());
    assert_eq!(b.all_keys(), ["small"]);
}

/// How editors save: the new text goes to a temporary file that replaces the old one.
fn save_by_truncate_and_rename(b: &Backend) {
    let m = b.mount();
    write_file(&m.p("doc.txt"), b"old text\n");
    write_file(&m.p(".doc.txt.swp"), b"new text, longer than the old\n");
    m.sh_ok(": > doc.txt && mv .doc.txt.swp doc.txt");
    m.unmount();
    let m = b.mount();
    assert_eq!(
        fs::read(m.p("doc.txt")).unwrap(),
        b"new text, longer than the old\n"
    );
    assert_eq!(b.all_keys(), ["doc.txt"]);
}

fn rename_a_directory_then_remove_it(b: &Backend) {
    let m = b.mount();
    m.sh_ok("mkdir a && echo x > a/f && mkdir a/sub && echo y > a/sub/g && mv a b");
    assert_eq!(fs::read(m.p("b/sub/g")).unwrap(), b"y\n");
    assert!(b.keys("a/").is_empty(), "{:?}", b.keys("a/"));
    m.sh_ok("rm -rf b");
    m.unmount();
    let m = b.mount();
    assert!(!m.p("a").exists() && !m.p("b").exists());
    assert!(b.keys("a/").is_empty() && b.keys("b/").is_empty());
}

fn write_three_bytes_in_the_middle(b: &Backend) {
    let m = b.mount();
    let mut local = random_bytes(20 * MIB, 3);
    write_file(&m.p("f"), &local);
    let file = OpenOptions::new().write(true).open(m.p("f")).unwrap();
    file.write_all_at(b"abc", MIB as u64).unwrap();
    close_checked(file).unwrap();
    local[MIB..MIB + 3].copy_from_slice(b"abc");
    m.unmount();
    let m = b.mount();
    assert_same_bytes("after a remount", &fs::read(m.p("f")).unwrap(), &local);
}

fn truncate_to_zero_and_grow(b: &Backend) {
    let m = b.mount();
    write_file(&m.p("full"), b"some content");
    File::create(m.p("empty")).unwrap();
    m.sh_ok(": > full && truncate -s 1024 empty");
    m.unmount();
    let m = b.mount();
    assert_eq!(fs::metadata(m.p("full")).unwrap().len(), 0);
    assert_eq!(fs::read(m.p("empty")).unwrap(), vec![0u8; 1024]);
}

fn tar_and_rsync_into_the_mount(b: &Backend) {
    let source = b.tmp().join("tree");
    for (path, size) in [
        ("top.txt", 10),
        ("a/one.bin", 3 * MIB),
        ("a/b/two.txt", 100),
        ("a/b/c/three.txt", 0),
        ("d/four.txt", 5000),
    ] {
        let file = source.join(path);
        fs::create_dir_all(file.parent().unwrap()).unwrap();
        fs::write(&file, random_bytes(size, size as u64)).unwrap();
    }
    fs::create_dir_all(source.join("empty_dir")).unwrap();
    let archive = b.tmp().join("tree.tar");
    run_ok(
        Command::new("tar")
            .arg("-cf")
            .arg(&archive)
            .arg("-C")
            .arg(&source)
            .arg("."),
    );

    let m = b.mount();
    fs::create_dir(m.p("untarred")).unwrap();
    run_ok(
        Command::new("tar")
            .arg("-xf")
            .arg(&archive)
            .arg("-C")
            .arg(m.p("untarred")),
    );
    run_ok(
        Command::new("rsync")
            .arg("-a")
            .arg(format!("{}/", source.display()))
            .arg(m.p("synced")),
    );
    m.unmount();
    let m = b.mount();
    for copy in ["untarred", "synced"] {
        run_ok(Command::new("diff").arg("-r").arg(&source).arg(m.p(copy)));
    }
}

#[track_caller]
fn run_ok(cmd: &mut Command) {
    let out = run_timeout(cmd, Duration::from_secs(120));
    assert!(out.ok(), "{cmd:?} failed: {out:?}");
}

/// The server dies in the middle of a 200 MiB write: close() fails, the recovery copy holds
/// exactly the bytes written, and no object was completed. Local server only.
#[test]
fn server_dies_in_the_middle_of_a_write() {
    let b = Backend::local("server_dies_mid_write");
    let mut m = b.mount();
    m.allow_unclean_exit();
    let data = random_bytes(200 * MIB, 7);
    let mut f = File::create(m.p("big.bin")).unwrap();
    for (i, chunk) in data.chunks(MIB).enumerate() {
        if i == 100 {
            b.kill_server();
        }
        f.write_all(chunk).expect("writes go to local staging");
    }
    let closed = close_checked(f);
    assert!(closed.is_err(), "close() must report the failed upload");
    let sum = sha256_hex(&data);
    let kept = files_under(&m.cache_dir.join("recovery"));
    assert!(
        kept.iter().any(|p| sha256_file(p) == sum),
        "no recovery file holds the 200 MiB written: {kept:?}"
    );
    let bucket = b
        .bucket_dir()
        .expect("the local server keeps objects on disk");
    assert!(
        !bucket.join("big.bin").exists(),
        "a partial object was completed"
    );
}

/// 2 GiB through a 256 MiB staging disk: the writer gets ENOSPC (or everything fits), never
/// a wrong object. Needs root for the tmpfs; local server only.
#[test]
fn a_full_staging_disk_never_makes_a_wrong_object() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    }
    let b = Backend::local("full_staging_disk");
    let m = b.mount();
    // Staging files are created by path, so a tmpfs mounted over the staging directory now
    // takes every file written from here on.
    let staging = m.cache_dir.join("staging");
    run_ok(
        Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=256m", "tmpfs"])
            .arg(&staging),
    );
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let out = m.sh("dd if=/dev/zero of=huge bs=1M count=2048 2>&1");
        if out.ok() {
            assert_eq!(b.head_size("huge"), Some(2048 * MIB as u64));
        } else {
            let text = format!("{}{}", out.stdout, out.stderr);
            assert!(text.contains("No space left on device"), "{text}");
            // dd closes a duplicate of the new file before writing, which creates it empty, as
            // on a local disk; what must never appear is part of the data.
            let size = b.head_size("huge");
            assert!(
                size.is_none() || size == Some(0),
                "a wrong object: {size:?}"
            );
        }
    }));
    drop(m);
    let _ = Command::new("umount").arg("-l").arg(&staging).status();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}
