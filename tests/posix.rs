//! What tools expect of a local disk: `rsync -a` and `tar -p` keep modes, times and symbolic
//! links, `touch -d` sets a time without sending the data again, and all of it is read back
//! from the server after a remount.

#[macro_use]
mod common;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

e2e_tests! {
    rsync_twice_sends_nothing_and_keeps_modes_and_times,
    tar_of_links_modes_and_old_times_compares_equal,
    touch_sets_the_time_without_uploading_again,
    symlinks_survive_a_remount,
}

const TOOL_TIMEOUT: Duration = Duration::from_secs(180);

/// A tree with unusual modes, old times and symbolic links (relative, absolute, dangling).
fn make_tree(root: &Path) {
    for (path, data, mode) in [
        ("run.sh", &b"#!/bin/sh\necho hi\n"[..], 0o755),
        ("secret.txt", b"keep out\n", 0o600),
        ("docs/readme.md", b"# readme\n", 0o644),
        ("docs/old/notes.txt", b"notes from long ago\n", 0o640),
        ("docs/empty", b"", 0o444),
    ] {
        let file = root.join(path);
        fs::create_dir_all(file.parent().unwrap()).unwrap();
        fs::write(&file, data).unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(mode)).unwrap();
    }
    fs::create_dir_all(root.join("private")).unwrap();
    fs::set_permissions(root.join("private"), fs::Permissions::from_mode(0o700)).unwrap();
    symlink("docs/readme.md", root.join("readme")).unwrap();
    symlink("/etc/hostname", root.join("absolute")).unwrap();
    symlink("nowhere/at all", root.join("docs/dangling")).unwrap();
    // Old times, files first, directories last (writing into a directory changes its time).
    run_ok(Command::new("sh").current_dir(root).arg("-c").arg(
        "touch -h -d '2001-02-03 04:05:06.123456789' run.sh secret.txt readme docs/readme.md && \
         touch -h -d '1999-12-31 23:59:59' docs/old/notes.txt docs/empty absolute docs/dangling && \
         touch -d '2010-06-01 12:00:00' docs/old docs private",
    ));
}

/// `path type mode mtime [size]` of every entry below `root`, without following links,
/// sorted; mtimes in `time_format` (find's `%T@` keeps nanoseconds, `%Ts` whole seconds).
/// Directory sizes differ between filesystems and are left out.
fn stat_lines(root: &Path, time_format: &str) -> String {
    let script = format!(
        "{{ find . -mindepth 1 ! -type d -printf '%p %y %m {time_format} %s\\n'; \
           find . -mindepth 1 -type d -printf '%p %y %m {time_format}\\n'; }} | LC_ALL=C sort"
    );
    run_ok(Command::new("sh").current_dir(root).arg("-c").arg(script))
}

#[track_caller]
fn run_ok(cmd: &mut Command) -> String {
    let out = run_timeout(cmd, TOOL_TIMEOUT);
    assert!(out.ok(), "{cmd:?} failed: {out:?}");
    out.stdout
}

fn rsync_twice_sends_nothing_and_keeps_modes_and_times(b: &Backend) {
    let source = b.tmp().join("src");
    make_tree(&source);
    let m = b.mount();
    let rsync = |m: &Mount| {
        run_ok(
            Command::new("rsync")
                .arg("-a")
                .arg("--stats")
                .arg(format!("{}/", source.display()))
                .arg(m.p("dst")),
        )
    };
    rsync(&m);
    let second = rsync(&m);
    assert!(
        second.contains("Number of regular files transferred: 0"),
        "the second rsync sent files again:\n{second}"
    );
    m.unmount();

    let m = b.mount();
    let third = rsync(&m);
    assert!(
        third.contains("Number of regular files transferred: 0"),
        "after a remount rsync sent files again:\n{third}"
    );
    assert_eq!(stat_lines(&m.p("dst"), "%T@"), stat_lines(&source, "%T@"));
}

fn tar_of_links_modes_and_old_times_compares_equal(b: &Backend) {
    let source = b.tmp().join("src");
    make_tree(&source);
    let archive = b.tmp().join("tree.tar");
    run_ok(
        Command::new("tar")
            .arg("-cpf")
            .arg(&archive)
            .arg("-C")
            .arg(&source)
            .arg("."),
    );
    let m = b.mount();
    fs::create_dir(m.p("x")).unwrap();
    run_ok(
        Command::new("tar")
            .arg("-xpf")
            .arg(&archive)
            .arg("-C")
            .arg(m.p("x")),
    );
    m.unmount();

    let m = b.mount();
    let diff = run_timeout(
        Command::new("tar")
            .arg("-df")
            .arg(&archive)
            .arg("-C")
            .arg(m.p("x")),
        TOOL_TIMEOUT,
    );
    assert!(
        diff.ok() && diff.stdout.is_empty() && diff.stderr.is_empty(),
        "tar -d found differences: {diff:?}"
    );
    // The tar format keeps whole seconds.
    assert_eq!(stat_lines(&m.p("x"), "%Ts"), stat_lines(&source, "%Ts"));
}

fn touch_sets_the_time_without_uploading_again(b: &Backend) {
    let debug = MountOpts {
        extra_args: vec!["--log-level".into(), "debug".into()],
        ..Default::default()
    };
    let m = b.mount_with(debug.clone());
    write_file(&m.p("f"), b"the data\n");
    let uploads = |m: &Mount| m.log().lines().filter(|l| l.contains(" uploaded")).count();
    let before = uploads(&m);
    assert!(before >= 1, "the write was not logged as an upload");
    m.sh_ok("touch -d '2001-02-03 04:05:06' f && chmod 600 f");
    assert_eq!(uploads(&m), before, "touch or chmod sent the data again");
    m.unmount();

    let m = b.mount_with(debug);
    assert_eq!(
        m.sh_ok("TZ=UTC stat -c '%y %a' f"),
        "2001-02-03 04:05:06.000000000 +0000 600\n"
    );
    assert_eq!(b.get("f").as_deref(), Some(&b"the data\n"[..]));
}

fn symlinks_survive_a_remount(b: &Backend) {
    let m = b.mount();
    write_file(&m.p("target.txt"), b"pointed at\n");
    m.sh_ok("ln -s target.txt link && ln -s ../../outside/x dangling && mkdir d && ln -s ../target.txt d/up");
    assert_eq!(m.sh_ok("cat link d/up"), "pointed at\npointed at\n");
    let listing = m.sh_ok("ls -l link dangling d/up | awk '{print $1, $(NF-2), $(NF-1), $NF}'");
    m.unmount();

    let m = b.mount();
    assert_eq!(
        m.sh_ok("ls -l link dangling d/up | awk '{print $1, $(NF-2), $(NF-1), $NF}'"),
        listing
    );
    assert!(listing.starts_with("lrwxrwxrwx"), "{listing}");
    assert_eq!(
        fs::read_link(m.p("dangling")).unwrap(),
        Path::new("../../outside/x")
    );
    assert_eq!(m.sh_ok("cat d/up"), "pointed at\n");
    // Other clients see the target as the object's content.
    assert_eq!(b.get("link").as_deref(), Some(&b"target.txt"[..]));
    m.sh_ok("rm link && mv dangling moved");
    assert_eq!(m.sh_ok("readlink moved"), "../../outside/x\n");
    let mut keys = b.all_keys();
    keys.sort();
    assert_eq!(
        keys,
        ["d/.emptyFolderPlaceholder", "d/up", "moved", "target.txt"]
    );
}
