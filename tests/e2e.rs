//! End-to-end tests through a real FUSE mount of `supamount`.
//!
//! Every test in `e2e_tests!` runs twice: `NAME::local` against `supamount server` (always) and
//! `NAME::supabase` against the real Supabase Storage server (when `SUPAMOUNT_TEST_SUPABASE=1`;
//! see tests/common/mod.rs). Each test has its own bucket, temp dir and mount(s).

#[macro_use]
mod common;

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::TcpListener;
use std::os::unix::fs::FileExt;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use common::*;

e2e_tests! {
    s3_client_sanity,
    echo_cat_ls,
    copy_100mib,
    large_read_write,
    kernel_read_ahead_raised,
    dd_odd_blocks_eof_empty,
    list_3700_entries,
    rename_file,
    mkdir_placeholder_rmdir,
    overwrite_loop_200,
    fsync_size_visible_while_open,
    close_of_new_empty_file_uploads,
    flush_of_dup_during_writes,
    mount_fails_wrong_secret,
    mount_fails_missing_bucket,
    background_mount_and_unmount,
    external_changes_show,
    invalid_names_refused,
    special_names_kept,
    prefix_mount,
    read_only_mount,
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// The harness's own S3 client against the backend, without a mount: separates a broken server
/// from a broken mount.
fn s3_client_sanity(b: &Backend) {
    assert_eq!(b.all_keys(), Vec::<String>::new(), "a new bucket is empty");
    let objs = (0..1005)
        .map(|i| (format!("k/{i:04}"), Bytes::from(format!("v{i}"))))
        .collect();
    b.put_many(objs, 32);
    let keys = b.keys("k/");
    assert_eq!(keys.len(), 1005, "listing over more than one 1000-key page");
    assert_eq!(keys[1004], "k/1004");
    assert_eq!(b.get("k/0007").as_deref(), Some(&b"v7"[..]));
    assert_eq!(b.head_size("k/1004"), Some(5));
    b.put("a b&c+d.txt", "x");
    assert_eq!(b.get("a b&c+d.txt").as_deref(), Some(&b"x"[..]));
    b.delete("k/0007");
    assert_eq!(b.get("k/0007"), None);
    assert_eq!(b.head_size("k/0007"), None);
    b.put("dir/", Bytes::new());
    assert_eq!(
        b.keys("dir/"),
        ["dir/.emptyFolderPlaceholder"],
        "PUT dir/ with no body is stored as the placeholder"
    );
}

/// `echo hi > M/a.txt && cat M/a.txt && ls -la M`.
fn echo_cat_ls(b: &Backend) {
    let m = b.mount();
    let out = m.sh_ok("echo hi > a.txt && cat a.txt && ls -la");
    let mut lines = out.lines();
    assert_eq!(
        lines.next(),
        Some("hi"),
        "output of cat; whole output: {out:?}"
    );
    let ls: Vec<&str> = lines.filter(|l| !l.starts_with("total ")).collect();
    let names: Vec<&str> = ls
        .iter()
        .map(|l| l.split_whitespace().last().unwrap_or(""))
        .collect();
    assert_eq!(names, [".", "..", "a.txt"], "ls -la output: {out:?}");
    let fields: Vec<&str> = ls[2].split_whitespace().collect();
    assert_eq!(
        fields[0], "-rw-r--r--",
        "mode of a.txt (default 0644): {out:?}"
    );
    assert_eq!(fields[4], "3", "size of a.txt: {out:?}");
    assert!(ls[0].starts_with('d'), "`.` is a directory: {out:?}");
    assert_eq!(b.all_keys(), ["a.txt"]);
    assert_eq!(b.get("a.txt").as_deref(), Some(&b"hi\n"[..]));
}

/// `cp` of a 100 MiB random file in and out: same sha256; the object is the same too.
fn copy_100mib(b: &Backend) {
    const N: usize = 100 * MIB;
    let src = b.tmp().join("src.bin");
    let sum = write_random_file(&src, N, 100);
    let m = b.mount();
    m.sh_ok(&format!("cp '{}' big.bin", src.display()));
    assert_eq!(fs::metadata(m.p("big.bin")).unwrap().len(), N as u64);
    let back1 = b.tmp().join("back1.bin");
    m.sh_ok(&format!("cp big.bin '{}'", back1.display()));
    assert_eq!(
        sha256_file(&back1),
        sum,
        "copied back through the same mount"
    );
    fs::remove_file(&back1).unwrap();

    assert_eq!(
        b.head_size("big.bin"),
        Some(N as u64),
        "object size (HeadObject)"
    );
    let obj = b.get("big.bin").expect("object big.bin exists");
    assert_eq!(obj.len(), N, "object size (GetObject)");
    assert_eq!(sha256_hex(&obj), sum, "object content");
    drop(obj);
    m.unmount();

    // A fresh mount: nothing can come from the kernel's page cache of the first one.
    let m = b.mount();
    let back2 = b.tmp().join("back2.bin");
    m.sh_ok(&format!("cp big.bin '{}'", back2.display()));
    assert_eq!(
        sha256_file(&back2),
        sum,
        "copied back through a fresh mount"
    );
    assert_eq!(b.all_keys(), ["big.bin"]);
}

/// Reads and writes above one 8 MiB part: exact bytes, both directions, and ranged reads.
fn large_read_write(b: &Backend) {
    let wn = 40 * MIB + 12_345;
    let wdata = random_bytes(wn, 40);
    let rn = 41 * MIB + 999;
    let rdata = random_bytes(rn, 41);
    b.put("r.bin", rdata.clone());

    let m = b.mount();
    // Write through the mount in odd-sized chunks.
    let mut f = File::create(m.p("w.bin")).unwrap();
    for chunk in wdata.chunks(MIB + 4097) {
        f.write_all(chunk).unwrap();
    }
    close_checked(f).expect("close after a 40 MiB write");
    assert_eq!(fs::metadata(m.p("w.bin")).unwrap().len(), wn as u64);
    let obj = b.get("w.bin").expect("object w.bin");
    assert_same_bytes("object written through the mount", &obj, &wdata);
    drop(obj);
    assert_same_bytes(
        "w.bin read back through the same mount",
        &fs::read(m.p("w.bin")).unwrap(),
        &wdata,
    );
    m.unmount();

    let m = b.mount();
    assert_same_bytes(
        "w.bin read through a fresh mount",
        &fs::read(m.p("w.bin")).unwrap(),
        &wdata,
    );
    // An object put behind the mount's back, read whole and in ranges (also across parts).
    assert_eq!(fs::metadata(m.p("r.bin")).unwrap().len(), rn as u64);
    let f = File::open(m.p("r.bin")).unwrap();
    let ranges: &[(usize, usize)] = &[
        (0, 1),
        (1, 4097),
        (8 * MIB - 1, 2),
        (8 * MIB - 3000, 3 * MIB + 5),
        (16 * MIB + 7, 9 * MIB),
        (20 * MIB + 333, 1),
        (rn - 100, 100),
        (12_345, 8 * MIB + 1),
    ];
    for &(off, len) in ranges {
        let mut buf = vec![0u8; len];
        f.read_exact_at(&mut buf, off as u64)
            .unwrap_or_else(|e| panic!("pread {len} bytes at {off}: {e}"));
        assert_same_bytes(
            &format!("pread {len} at {off}"),
            &buf,
            &rdata[off..off + len],
        );
    }
    // Backwards, in 1 MiB + 1 steps from the end.
    let step = MIB + 1;
    let mut end = rn;
    while end > 0 {
        let off = end.saturating_sub(step);
        let mut buf = vec![0u8; end - off];
        f.read_exact_at(&mut buf, off as u64).unwrap();
        assert_same_bytes(&format!("backward pread at {off}"), &buf, &rdata[off..end]);
        end = off;
    }
    drop(f);
    assert_same_bytes("r.bin read whole", &fs::read(m.p("r.bin")).unwrap(), &rdata);
    assert_eq!(b.all_keys(), ["r.bin", "w.bin"]);
}

/// Run as root, a mount raises the kernel's read-ahead for itself from 128 KiB to 1 MiB, so
/// sequential reads arrive as 1 MiB requests. Others cannot change it (sysfs is root's).
fn kernel_read_ahead_raised(b: &Backend) {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("not root: the read-ahead cannot be raised, nothing to check");
        return;
    }
    let m = b.mount();
    let dev = fs::metadata(&m.path).unwrap().dev();
    let knob = format!(
        "/sys/class/bdi/{}:{}/read_ahead_kb",
        libc::major(dev),
        libc::minor(dev)
    );
    // Raised in the background once the kernel's handshake is done: wait, bounded.
    let mut kb = String::new();
    for _ in 0..100 {
        kb = fs::read_to_string(&knob).unwrap().trim().to_string();
        if kb == "1024" {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(kb, "1024", "{knob}");
}

/// `dd` with odd block sizes in and out, partial and past-EOF reads, an overwrite in place with
/// `conv=notrunc`, and empty objects.
fn dd_odd_blocks_eof_empty(b: &Backend) {
    let n = 17 * MIB + 3;
    let data = random_bytes(n, 17);
    let src = b.tmp().join("src.bin");
    fs::write(&src, &data).unwrap();
    let t = b.tmp().display().to_string();
    b.put("empty.obj", Bytes::new());

    let m = b.mount();
    m.sh_ok(&format!(
        "dd if={t}/src.bin of=dd.bin bs=777777 status=none"
    ));
    assert_same_bytes("object after dd in", &b.get("dd.bin").unwrap(), &data);
    m.sh_ok(&format!(
        "dd if=dd.bin of={t}/back.bin bs=12347 status=none"
    ));
    assert_same_bytes(
        "dd out",
        &fs::read(b.tmp().join("back.bin")).unwrap(),
        &data,
    );

    // Partial read across the 8 MiB boundary.
    m.sh_ok(&format!(
        "dd if=dd.bin of={t}/part.bin bs=4099 skip=2047 count=7 status=none"
    ));
    let off = 4099 * 2047;
    assert_same_bytes(
        "dd skip=2047 count=7 bs=4099",
        &fs::read(b.tmp().join("part.bin")).unwrap(),
        &data[off..off + 7 * 4099],
    );
    // The last, short block, and reads past the end.
    m.sh_ok(&format!(
        "dd if=dd.bin of={t}/tail.bin bs=1000 skip={} status=none",
        n / 1000
    ));
    assert_same_bytes(
        "dd of the last short block",
        &fs::read(b.tmp().join("tail.bin")).unwrap(),
        &data[n / 1000 * 1000..],
    );
    let past = m.sh_ok(&format!(
        "dd if=dd.bin bs=1000 skip={} status=none | wc -c",
        n / 1000 + 5
    ));
    assert_eq!(past.trim(), "0", "dd past the end");

    let mut f = File::open(m.p("dd.bin")).unwrap();
    let mut buf = [0u8; 10];
    assert_eq!(
        f.read_at(&mut buf, (n - 3) as u64).unwrap(),
        3,
        "pread at EOF-3"
    );
    assert_eq!(&buf[..3], &data[n - 3..]);
    assert_eq!(f.read_at(&mut buf, n as u64).unwrap(), 0, "pread at EOF");
    assert_eq!(
        f.read_at(&mut buf, n as u64 + 1000).unwrap(),
        0,
        "pread past EOF"
    );
    f.seek(SeekFrom::End(0)).unwrap();
    assert_eq!(f.read(&mut buf).unwrap(), 0, "read at EOF");
    drop(f);

    // Overwrite 5000 bytes in place, across the 8 MiB boundary.
    let patch = random_bytes(5000, 5);
    fs::write(b.tmp().join("patch.bin"), &patch).unwrap();
    m.sh_ok(&format!(
        "dd if={t}/patch.bin of=dd.bin bs=1000 seek=8388 conv=notrunc status=none"
    ));
    let mut want = data.clone();
    want[8_388_000..8_393_000].copy_from_slice(&patch);
    assert_eq!(fs::metadata(m.p("dd.bin")).unwrap().len(), n as u64);
    assert_same_bytes(
        "object after dd conv=notrunc",
        &b.get("dd.bin").unwrap(),
        &want,
    );
    assert_same_bytes(
        "dd.bin after dd conv=notrunc",
        &fs::read(m.p("dd.bin")).unwrap(),
        &want,
    );

    // Empty objects: one put behind the mount's back, two created through it.
    assert_eq!(fs::metadata(m.p("empty.obj")).unwrap().len(), 0);
    assert_eq!(fs::read(m.p("empty.obj")).unwrap(), b"");
    assert_eq!(m.sh_ok("cat empty.obj | wc -c").trim(), "0");
    m.sh_ok(&format!("dd if=empty.obj of={t}/e.bin bs=333 status=none"));
    assert_eq!(fs::read(b.tmp().join("e.bin")).unwrap(), b"");
    let f = File::open(m.p("empty.obj")).unwrap();
    assert_eq!(
        f.read_at(&mut buf, 0).unwrap(),
        0,
        "pread of an empty object"
    );
    drop(f);
    m.sh_ok(": > e0.txt && touch e1.txt");
    assert_eq!(b.get("e0.txt").as_deref(), Some(&b""[..]), "`: > e0.txt`");
    assert_eq!(b.get("e1.txt").as_deref(), Some(&b""[..]), "`touch e1.txt`");
    assert_eq!(
        b.all_keys(),
        ["dd.bin", "e0.txt", "e1.txt", "empty.obj"],
        "keys in the bucket"
    );
}

/// 2,500 objects + 1,200 sub-prefixes, created through the S3 API: 3,700 entries, every time.
fn list_3700_entries(b: &Backend) {
    let mut objs = Vec::new();
    let mut want = BTreeSet::new();
    for i in 0..2500 {
        objs.push((format!("big/f-{i:05}"), Bytes::from(format!("{i}\n"))));
        want.insert(format!("f-{i:05}"));
    }
    for i in 0..1200 {
        objs.push((format!("big/d-{i:04}/x"), Bytes::from_static(b"x")));
        want.insert(format!("d-{i:04}"));
    }
    b.put_many(objs, 32);
    assert_eq!(b.keys("big/").len(), 3700, "objects created");

    let m = b.mount();
    let dir = m.p("big");
    for round in 0..3 {
        let mut names = Vec::new();
        for e in fs::read_dir(&dir).unwrap() {
            let e = e.unwrap_or_else(|e| panic!("round {round}: readdir: {e}"));
            let name = e.file_name().into_string().unwrap();
            let ty = e.file_type().unwrap();
            if name.starts_with("d-") {
                assert!(ty.is_dir(), "round {round}: {name} should be a directory");
            } else {
                assert!(ty.is_file(), "round {round}: {name} should be a file");
            }
            names.push(name);
        }
        let set: BTreeSet<String> = names.iter().cloned().collect();
        assert_eq!(
            set.len(),
            names.len(),
            "round {round}: duplicates in readdir ({} entries, {} distinct)",
            names.len(),
            set.len()
        );
        assert_eq!(names.len(), 3700, "round {round}: number of entries");
        assert_eq!(set, want, "round {round}: names");
    }
    for round in 0..2 {
        let out = m.sh_ok("ls -f big");
        let names: Vec<&str> = out.lines().filter(|l| *l != "." && *l != "..").collect();
        let set: BTreeSet<String> = names.iter().map(|s| s.to_string()).collect();
        assert_eq!(names.len(), 3700, "ls -f round {round}: number of entries");
        assert_eq!(set.len(), 3700, "ls -f round {round}: duplicates");
        assert_eq!(set, want, "ls -f round {round}: names");
    }
    assert_eq!(m.sh_ok("cat big/f-02499 big/d-1199/x"), "2499\nx");
    assert_eq!(dir_names(&m.p("big/d-0007")), ["x"]);
}

/// `printf hello > x; mv x y; cat y`.
fn rename_file(b: &Backend) {
    let m = b.mount();
    let out = m.sh_ok("set -e; printf hello > x; mv x y; cat y");
    assert_eq!(out, "hello");
    assert_errno(
        fs::symlink_metadata(m.p("x")),
        libc::ENOENT,
        "stat x after mv",
    );
    assert_eq!(dir_names(&m.path), ["y"]);
    assert_eq!(b.head_size("x"), None, "object x after mv");
    assert_eq!(b.get("y").as_deref(), Some(&b"hello"[..]));
    assert_eq!(b.all_keys(), ["y"]);
}

/// mkdir writes the placeholder, listings hide it, rmdir removes it, ENOTEMPTY otherwise.
fn mkdir_placeholder_rmdir(b: &Backend) {
    const PH: &str = ".emptyFolderPlaceholder";
    // Directories made behind the mount's back: a `m/` marker (Supabase stores it as the
    // placeholder), a placeholder, and a directory holding a file.
    b.put("m/", Bytes::new());
    b.put(&format!("e/{PH}"), Bytes::new());
    b.put("n/a.txt", "a");

    let m = b.mount();
    m.sh_ok("mkdir d");
    assert_eq!(m.sh_ok("ls -A d"), "", "ls -A of a new directory");
    assert_eq!(
        b.keys("d/"),
        [format!("d/{PH}")],
        "keys under d/ after mkdir"
    );
    assert_eq!(m.sh_ok("ls -A"), "d\ne\nm\nn\n", "ls -A of the root");
    for d in ["d", "e", "m"] {
        assert!(fs::metadata(m.p(d)).unwrap().is_dir(), "{d} is a directory");
        assert_eq!(m.sh_ok(&format!("ls -A {d}")), "", "ls -A {d}");
        assert!(dir_names(&m.p(d)).is_empty(), "readdir of {d}");
        let la = m.sh_ok(&format!("ls -la {d}"));
        assert!(!la.contains(PH), "ls -la {d} shows the placeholder: {la:?}");
    }
    assert_errno(
        fs::metadata(m.p(&format!("d/{PH}"))),
        libc::ENOENT,
        "stat of the placeholder",
    );

    m.sh_ok("echo x > d/f");
    assert_eq!(m.sh_ok("ls -A d"), "f\n");
    assert_errno(
        fs::remove_dir(m.p("d")),
        libc::ENOTEMPTY,
        "rmdir d holding f",
    );
    assert!(!m.sh("rmdir d").ok(), "`rmdir d` holding f succeeded");
    assert_errno(
        fs::remove_dir(m.p("n")),
        libc::ENOTEMPTY,
        "rmdir n holding a.txt",
    );
    assert_eq!(b.keys("n/"), ["n/a.txt"]);
    assert_eq!(b.keys("d/"), [format!("d/{PH}"), "d/f".to_string()]);

    m.sh_ok("rm d/f && rmdir d");
    assert_errno(fs::metadata(m.p("d")), libc::ENOENT, "stat d after rmdir");
    assert_eq!(
        b.keys("d"),
        Vec::<String>::new(),
        "keys under d after rmdir"
    );
    m.sh_ok("rmdir e");
    assert_eq!(
        b.keys("e"),
        Vec::<String>::new(),
        "keys under e after rmdir"
    );
    m.sh_ok("rmdir m");
    assert_eq!(
        b.keys("m"),
        Vec::<String>::new(),
        "keys under m after rmdir"
    );
    assert_eq!(m.sh_ok("ls -A"), "n\n", "ls -A of the root at the end");
    assert_eq!(b.all_keys(), ["n/a.txt"]);
}

/// 200 times `cat f >/dev/null; echo $i > f`; every read sees the last write.
fn overwrite_loop_200(b: &Backend) {
    let m = b.mount();
    m.sh_ok("echo 0 > f");
    let out = m.sh_ok(
        r#"i=1
        while [ $i -le 200 ]; do
          cat f >/dev/null || { echo "cat failed at $i" >&2; exit 1; }
          v=$(cat f) || { echo "second cat failed at $i" >&2; exit 1; }
          [ "$v" = "$((i-1))" ] || { echo "iteration $i read '$v'" >&2; exit 1; }
          echo $i > f || { echo "echo failed at $i" >&2; exit 1; }
          i=$((i+1))
        done
        cat f"#,
    );
    assert_eq!(out, "200\n");
    assert_eq!(b.get("f").as_deref(), Some(&b"200\n"[..]));
    assert_eq!(b.all_keys(), ["f"]);
}

/// After fsync, another process sees the size while the file is still open.
fn fsync_size_visible_while_open(b: &Backend) {
    let m = b.mount();
    let p = m.p("s.bin");
    let stat = || {
        let out = run_timeout(Command::new("stat").args(["-c", "%s"]).arg(&p), CMD_TIMEOUT);
        assert!(out.ok(), "stat: {out:?}");
        out.stdout.trim().to_string()
    };
    let d1 = random_bytes(12_345, 1);
    let d2 = random_bytes(3 * MIB + 1, 2);
    let mut f = File::create(&p).unwrap();
    f.write_all(&d1).unwrap();
    f.sync_all().expect("fsync");
    assert_eq!(
        stat(),
        "12345",
        "size seen by stat(1) after fsync, file open"
    );
    assert_eq!(
        b.head_size("s.bin"),
        Some(12_345),
        "object after fsync (fsync finishes the upload)"
    );
    f.write_all(&d2).unwrap();
    f.sync_all().expect("second fsync");
    let total = d1.len() + d2.len();
    assert_eq!(stat(), total.to_string(), "size after the second fsync");
    let mut all = d1.clone();
    all.extend_from_slice(&d2);
    assert_same_bytes(
        "object after the second fsync",
        &b.get("s.bin").unwrap(),
        &all,
    );
    close_checked(f).expect("close");
    assert_eq!(stat(), total.to_string(), "size after close");
    assert_same_bytes("s.bin after close", &fs::read(&p).unwrap(), &all);
}

/// close() of a file created with no write returns only once the (empty) object exists.
fn close_of_new_empty_file_uploads(b: &Backend) {
    let m = b.mount();
    for i in 0..20 {
        let name = format!("empty-{i:02}");
        let f = File::create(m.p(&name)).unwrap();
        close_checked(f).expect("close");
        assert_eq!(
            b.head_size(&name),
            Some(0),
            "object {name} right after close() returned"
        );
    }
    for i in 0..5 {
        let name = format!("touched-{i}");
        m.sh_ok(&format!("touch {name}"));
        assert_eq!(b.head_size(&name), Some(0), "object {name} after `touch`");
    }
    assert_eq!(b.all_keys().len(), 25);
}

/// close() of a duplicate descriptor (a FLUSH) while another thread keeps writing: every close
/// succeeds and the object ends up with exactly the bytes written. The same FLUSH happens when
/// any thread of a process forks while a file is open (the child closes its inherited copy).
fn flush_of_dup_during_writes(b: &Backend) {
    use std::os::fd::AsRawFd;
    let n = 40 * MIB + 4321;
    let data = random_bytes(n, 77);
    let m = b.mount();
    let mut f = File::create(m.p("dup.bin")).unwrap();
    let fd = f.as_raw_fd();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    // Closes a dup of `fd` each time the writer has written another 4 MiB, without making the
    // writer wait.
    let flusher = std::thread::spawn(move || {
        let mut results = Vec::new();
        while rx.recv().is_ok() {
            // SAFETY: `fd` stays open until this thread is joined; dup/close act on our copy.
            let d = unsafe { libc::dup(fd) };
            assert!(d >= 0, "dup: {}", std::io::Error::last_os_error());
            let r = unsafe { libc::close(d) };
            results.push(if r == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            });
        }
        results
    });
    let mut since = 0;
    for chunk in data.chunks(MIB + 4097) {
        f.write_all(chunk).expect("write");
        since += chunk.len();
        if since >= 4 * MIB {
            since = 0;
            tx.send(()).unwrap();
        }
    }
    drop(tx);
    let flushes = flusher.join().unwrap();
    let failed: Vec<_> = flushes.iter().filter(|r| r.is_err()).collect();
    let last = close_checked(f);
    assert!(
        failed.is_empty(),
        "close() of a dup failed {} of {} times: {failed:?}; final close: {last:?}",
        failed.len(),
        flushes.len()
    );
    last.expect("final close");
    assert_same_bytes("object dup.bin", &b.get("dup.bin").unwrap(), &data);
    assert!(
        files_under(&m.cache_dir.join("recovery")).is_empty(),
        "recovery copies left: {:?}",
        files_under(&m.cache_dir.join("recovery"))
    );
}

/// A background-mode mount that must fail: non-zero exit within 15 s, one line on stderr, no
/// mount and no daemon left.
fn assert_mount_fails(b: &Backend, o: MountOpts, what: &str) {
    let r = b.mount_background(o, START_TIMEOUT);
    let mounted = is_mounted(&r.guard.path);
    let daemons = pids_with_arg(r.guard.path.to_str().unwrap());
    let Some(st) = r.status else {
        panic!(
            "{what}: supamount did not exit within {START_TIMEOUT:?} (killed): {}\nstderr: {:?}",
            r.desc, r.stderr
        );
    };
    eprintln!("{what}: {st} after {:?}; stderr: {:?}", r.elapsed, r.stderr);
    assert!(
        !st.success(),
        "{what}: exit status 0 (stderr {:?})",
        r.stderr
    );
    assert!(
        !mounted,
        "{what}: a mount was left at {}",
        r.guard.path.display()
    );
    assert!(daemons.is_empty(), "{what}: processes left: {daemons:?}");
    let lines: Vec<&str> = r.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "{what}: expected exactly one line on stderr, got {:?}",
        r.stderr
    );
    assert!(
        !r.stderr.contains("panicked"),
        "{what}: stderr shows a panic: {:?}",
        r.stderr
    );
}

fn mount_fails_wrong_secret(b: &Backend) {
    let o = MountOpts {
        secret: Some(format!("{}x", b.secret_key)),
        ..Default::default()
    };
    assert_mount_fails(b, o, "wrong secret");
}

fn mount_fails_missing_bucket(b: &Backend) {
    let o = MountOpts {
        target: Some(format!("{}-missing", b.bucket)),
        ..Default::default()
    };
    assert_mount_fails(b, o, "missing bucket");
}

#[test]
fn mount_fails_closed_port() {
    let b = Backend::local("closed_port");
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let o = MountOpts {
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        ..Default::default()
    };
    assert_mount_fails(&b, o, "closed port");
}

/// Background mode: returns 0 with the mount live; `fusermount3 -u` makes the daemon exit.
fn background_mount_and_unmount(b: &Backend) {
    let mut r = b.mount_background(MountOpts::default(), Duration::from_secs(30));
    let st = r
        .status
        .unwrap_or_else(|| panic!("background mount did not return within 30 s: {}", r.desc));
    assert!(
        st.success(),
        "background mount failed: {st}; stderr {:?}; log:\n{}",
        r.stderr,
        r.guard.log()
    );
    assert!(
        is_mounted(&r.guard.path),
        "background mount returned 0 but nothing is mounted"
    );
    let pids = r.guard.adopt_daemons();
    assert!(!pids.is_empty(), "no daemon process found for the mount");
    let out = sh_in(&r.guard.path, "echo bg > bg.txt && cat bg.txt");
    assert!(out.ok(), "in the background mount: {out:?}");
    assert_eq!(out.stdout, "bg\n");
    assert_eq!(b.get("bg.txt").as_deref(), Some(&b"bg\n"[..]));
    let problems = r.guard.teardown();
    assert!(
        problems.is_empty(),
        "unmount: {problems:?}\nlog:\n{}",
        r.guard.log()
    );
    assert!(!is_mounted(&r.guard.path));
}

/// Objects created, replaced and deleted through the S3 API show in the mount.
fn external_changes_show(b: &Backend) {
    for (round, ttl) in [Some(0), None].into_iter().enumerate() {
        let m = b.mount_with(MountOpts {
            attr_ttl: ttl,
            ..Default::default()
        });
        let what = format!("--attr-ttl {ttl:?}");
        let top = format!("top-{round}.txt");
        let dir = format!("ext-{round}");
        let p = m.p(&top);
        assert_errno(fs::metadata(&p), libc::ENOENT, "stat before the put");
        assert!(!dir_names(&m.path).contains(&top));

        b.put(&top, "one\n");
        b.put(&format!("{dir}/a.txt"), "a");
        poll_until(
            CHANGE_TIMEOUT,
            &format!("{what}: stat of new {top}"),
            || fs::metadata(&p).is_ok(),
        );
        poll_until(
            CHANGE_TIMEOUT,
            &format!("{what}: new entries listed"),
            || {
                let names = dir_names(&m.path);
                names.contains(&top) && names.contains(&dir)
            },
        );
        assert_eq!(fs::read(&p).unwrap(), b"one\n", "{what}: content");
        assert_eq!(fs::read(m.p(&format!("{dir}/a.txt"))).unwrap(), b"a");

        b.put(&top, "second version\n");
        poll_until(CHANGE_TIMEOUT, &format!("{what}: replaced content"), || {
            fs::read(&p).ok().as_deref() == Some(&b"second version\n"[..])
        });

        b.delete(&top);
        poll_until(CHANGE_TIMEOUT, &format!("{what}: {top} gone"), || {
            fs::metadata(&p).is_err() && !dir_names(&m.path).contains(&top)
        });
        assert_errno(fs::metadata(&p), libc::ENOENT, "stat after the delete");
        b.delete(&format!("{dir}/a.txt"));
        poll_until(CHANGE_TIMEOUT, &format!("{what}: {dir} gone"), || {
            !dir_names(&m.path).contains(&dir) && fs::metadata(m.p(&dir)).is_err()
        });
    }
}

/// Names Supabase cannot store are refused with EINVAL before anything is written.
fn invalid_names_refused(b: &Backend) {
    let m = b.mount();
    write_file(&m.p("ok.txt"), b"ok");
    let out = m.sh("echo x > 'naïve#1.txt'");
    assert!(
        !out.ok() && out.stderr.contains("Invalid argument"),
        "echo x > 'naïve#1.txt' should fail with EINVAL: {out:?}"
    );
    // One line, at the default level, that names the file and the character refused.
    let told = |log: String| {
        log.lines()
            .filter(|l| l.contains("naïve#1.txt") && l.contains("'ï'"))
            .count()
    };
    poll_until(Duration::from_secs(5), "the refusal logged", || {
        told(m.log()) >= 1
    });
    assert_eq!(told(m.log()), 1, "log:\n{}", m.log());
    let out = m.sh("touch 'naïve#1.txt'");
    assert!(!out.ok(), "touch 'naïve#1.txt' succeeded");
    assert!(
        out.stderr.contains("Invalid argument"),
        "touch should fail with EINVAL: {:?}",
        out.stderr
    );
    let bad = [
        "naïve#1.txt",
        "hash#x",
        "percent%41",
        "tilde~x",
        "br[a]ck",
        "brace{x}",
        "caret^x",
        "pipe|x",
        "quote\"x",
        "lt<x",
        "gt>x",
        "back\\slash",
        "grave`x",
        "tab\tx",
        "日本.txt",
    ];
    for name in bad {
        assert_errno(
            File::create(m.p(name)),
            libc::EINVAL,
            &format!("create {name:?}"),
        );
        assert_errno(
            fs::create_dir(m.p(name)),
            libc::EINVAL,
            &format!("mkdir {name:?}"),
        );
    }
    assert_errno(
        fs::rename(m.p("ok.txt"), m.p("bad#name.txt")),
        libc::EINVAL,
        "rename to a bad name",
    );
    assert_eq!(b.all_keys(), ["ok.txt"], "keys in the bucket");
    assert_eq!(dir_names(&m.path), ["ok.txt"]);
    assert_eq!(b.get("ok.txt").as_deref(), Some(&b"ok"[..]));
}

/// Names with the other characters Supabase accepts are kept exactly.
fn special_names_kept(b: &Backend) {
    let m = b.mount();
    m.sh_ok("echo x > 'a b&c+d.txt'");
    assert_eq!(b.all_keys(), ["a b&c+d.txt"]);
    assert_eq!(b.get("a b&c+d.txt").as_deref(), Some(&b"x\n"[..]));
    assert_eq!(m.sh_ok("cat 'a b&c+d.txt'"), "x\n");
    assert_eq!(m.sh_ok("ls"), "a b&c+d.txt\n");

    let odd = "q=1@2;3:4$5'6(7)8!9*0,_-.txt";
    write_file(&m.p(odd), b"y");
    write_file(&m.p("what?.txt"), b"w");
    m.sh_ok("mv 'a b&c+d.txt' 'e f+g=h.txt'");
    let want = sorted(strs(&["e f+g=h.txt", odd, "what?.txt"]));
    assert_eq!(b.all_keys(), want);
    assert_eq!(dir_names(&m.path), want);
    assert_eq!(b.get("e f+g=h.txt").as_deref(), Some(&b"x\n"[..]));
    assert_eq!(b.get(odd).as_deref(), Some(&b"y"[..]));
    assert_eq!(b.get("what?.txt").as_deref(), Some(&b"w"[..]));
    m.unmount();

    b.put("dir with space/p+q&r=s.txt", "z");
    let m = b.mount();
    assert_eq!(
        fs::read(m.p("dir with space/p+q&r=s.txt")).unwrap(),
        b"z",
        "object with special characters put behind the mount's back"
    );
    assert_eq!(fs::read(m.p(odd)).unwrap(), b"y");
}

/// `BUCKET/PREFIX` shows only the prefix, and writes land under it.
fn prefix_mount(b: &Backend) {
    b.put("pre/fix/a.txt", "a");
    b.put("pre/top.txt", "t");
    b.put("other.txt", "o");
    b.put("prefix-sibling/x", "x");
    let m = b.mount_with(MountOpts {
        target: Some(format!("{}/pre", b.bucket)),
        ..Default::default()
    });
    assert_eq!(dir_names(&m.path), ["fix", "top.txt"]);
    assert_eq!(fs::read(m.p("fix/a.txt")).unwrap(), b"a");
    write_file(&m.p("new.txt"), b"n");
    m.sh_ok("mkdir sub");
    assert_eq!(
        b.all_keys(),
        [
            "other.txt",
            "pre/fix/a.txt",
            "pre/new.txt",
            "pre/sub/.emptyFolderPlaceholder",
            "pre/top.txt",
            "prefix-sibling/x",
        ]
    );
}

/// `--read-only`: reads work, every change fails with EROFS and nothing reaches the bucket.
fn read_only_mount(b: &Backend) {
    b.put("r.txt", "r");
    let m = b.mount_with(MountOpts {
        extra_args: vec!["--read-only".to_string()],
        ..Default::default()
    });
    assert_eq!(fs::read(m.p("r.txt")).unwrap(), b"r");
    assert_errno(File::create(m.p("new.txt")), libc::EROFS, "create");
    assert_errno(
        fs::OpenOptions::new().write(true).open(m.p("r.txt")),
        libc::EROFS,
        "open for writing",
    );
    assert_errno(fs::create_dir(m.p("d")), libc::EROFS, "mkdir");
    assert_errno(fs::remove_file(m.p("r.txt")), libc::EROFS, "unlink");
    assert_errno(
        fs::rename(m.p("r.txt"), m.p("s.txt")),
        libc::EROFS,
        "rename",
    );
    assert_eq!(b.all_keys(), ["r.txt"]);
}

/// A failed upload: close() returns EIO, the log names the file and the recovery copy, and the
/// bytes are kept under CACHE_DIR/recovery. Local server only (the test kills the server).
#[test]
fn failed_upload_keeps_data() {
    let b = Backend::local("failed_upload");
    let mut m = b.mount();
    m.allow_unclean_exit();
    let data = random_bytes(20 * MIB + 777, 20);
    let sum = sha256_hex(&data);
    let mut f = File::create(m.p("lost.bin")).unwrap();
    f.write_all(&data).expect("writes while the server is up");
    b.kill_server();
    let r = close_checked(f);
    assert_errno(r, libc::EIO, "close after the server died");

    let recovery = m.cache_dir.join("recovery");
    let files = files_under(&recovery);
    let matching: Vec<_> = files.iter().filter(|p| sha256_file(p) == sum).collect();
    assert_eq!(
        matching.len(),
        1,
        "files under {} with the written bytes (all files: {files:?})",
        recovery.display()
    );
    let kept = matching[0].to_str().unwrap();
    let log = m.log();
    assert!(
        log.lines()
            .any(|l| l.contains(kept) && l.contains("lost.bin")),
        "no log line names both the recovery file {kept} and lost.bin"
    );
}
