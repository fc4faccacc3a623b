//! The filesystem core against the in-memory store, which follows Supabase's rules.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::store::memory::{MemoryStore, Op};

const ROOT: u64 = ROOT_INO;
const WRITE: OpenMode = OpenMode {
    write: true,
    truncate: false,
};
const READ: OpenMode = OpenMode {
    write: false,
    truncate: false,
};

struct Harness {
    fs: Arc<Fs>,
    store: Arc<MemoryStore>,
    _cache: tempfile::TempDir,
}

fn harness_with(prefix: &str, ttl: Duration) -> Harness {
    mount(Arc::new(MemoryStore::new()), prefix, ttl, true)
}

/// A new mount of `store`, as after an unmount: nothing cached.
fn mount(store: Arc<MemoryStore>, prefix: &str, ttl: Duration, metadata: bool) -> Harness {
    let cache = tempfile::tempdir().unwrap();
    let cfg = FsConfig {
        bucket: "b".into(),
        prefix: prefix.into(),
        uid: 1000,
        gid: 1000,
        file_mode: 0o644,
        dir_mode: 0o755,
        attr_ttl: ttl,
        cache_dir: cache.path().to_path_buf(),
        read_only: false,
        metadata,
        upload: UploadConfig::default(),
        cache_memory: 64 << 20,
        cache_disk: 0,
    };
    let fs = Fs::new(store.clone(), cfg).unwrap();
    Harness {
        fs,
        store,
        _cache: cache,
    }
}

fn harness() -> Harness {
    harness_with("", Duration::ZERO)
}

impl Harness {
    async fn write_file(&self, parent: u64, name: &str, data: &[u8]) -> FsResult<u64> {
        let (attr, fh) = self.fs.create(parent, name, 0o644).await?;
        if !data.is_empty() {
            self.fs.write(fh, 0, data.to_vec()).await?;
        }
        self.fs.flush(fh, None).await?;
        self.fs.release(fh).await?;
        Ok(attr.ino)
    }

    async fn read_all(&self, ino: u64) -> Vec<u8> {
        let fh = self.fs.open(ino, READ).await.unwrap();
        let mut out = Vec::new();
        loop {
            let chunk = self.fs.read(fh, out.len() as u64, 1 << 20).await.unwrap();
            if chunk.is_empty() {
                break;
            }
            out.extend_from_slice(&chunk);
        }
        self.fs.release(fh).await.unwrap();
        out
    }

    async fn names(&self, ino: u64) -> Vec<String> {
        let fh = self.fs.opendir(ino).await.unwrap();
        let names = self
            .fs
            .readdir(fh)
            .unwrap()
            .iter()
            .map(|e| e.name.clone())
            .collect();
        self.fs.releasedir(fh);
        names
    }
}

#[tokio::test]
async fn create_write_close_uploads_once() {
    let h = harness();
    let ino = h.write_file(ROOT, "a.txt", b"hi\n").await.unwrap();
    assert_eq!(h.store.object("a.txt").unwrap(), &b"hi\n"[..]);
    assert_eq!(h.store.count(Op::Put), 1);
    assert_eq!(h.read_all(ino).await, b"hi\n");
}

#[tokio::test]
async fn empty_new_file_still_creates_an_object() {
    let h = harness();
    h.write_file(ROOT, "empty", b"").await.unwrap();
    assert_eq!(h.store.object("empty").unwrap().len(), 0);
}

#[tokio::test]
async fn close_of_a_new_empty_file_creates_the_object() {
    let h = harness();
    let (_, fh) = h.fs.create(ROOT, "f", 0o644).await.unwrap();
    h.fs.flush(fh, None).await.unwrap();
    assert_eq!(h.store.object("f").unwrap().len(), 0);
    h.fs.write(fh, 0, b"x".to_vec()).await.unwrap();
    h.fs.flush(fh, None).await.unwrap();
    assert_eq!(h.store.object("f").unwrap(), &b"x"[..]);
    h.fs.release(fh).await.unwrap();
}

#[tokio::test]
async fn files_larger_than_a_part_go_multipart() {
    let h = harness();
    let data: Vec<u8> = (0..(40 << 20)).map(|i| (i * 7 % 256) as u8).collect();
    let ino = h.write_file(ROOT, "big", &data).await.unwrap();
    assert!(h.store.count(Op::UploadPart) >= 5);
    assert_eq!(h.store.object("big").unwrap(), &data[..]);
    assert_eq!(h.read_all(ino).await, data);
}

#[tokio::test]
async fn failed_upload_is_the_error_of_close_and_data_is_kept() {
    let h = harness();
    let (_, fh) = h.fs.create(ROOT, "lost.txt", 0o644).await.unwrap();
    h.fs.write(fh, 0, b"precious".to_vec()).await.unwrap();
    h.store.set_offline(true);
    let err = h.fs.flush(fh, None).await.unwrap_err();
    assert_eq!(err.errno(), libc::EIO);
    let kept = h.fs.config().cache_dir.join("recovery/b/lost.txt");
    assert_eq!(std::fs::read(kept).unwrap(), b"precious");
    // fsync retries (and fails again) without a second copy; release does not retry.
    assert!(h.fs.flush(fh, None).await.is_err());
    assert!(h.fs.release(fh).await.is_err());
    assert!(h.store.keys().is_empty());
    let copies = std::fs::read_dir(h.fs.config().cache_dir.join("recovery/b")).unwrap();
    assert_eq!(copies.count(), 1);
}

#[tokio::test]
async fn a_retry_after_a_transient_failure_makes_the_data_durable() {
    let h = harness();
    let (_, fh) = h.fs.create(ROOT, "f", 0o644).await.unwrap();
    h.fs.write(fh, 0, b"data".to_vec()).await.unwrap();
    h.store.fail_next(Op::Put, 1);
    assert!(h.fs.flush(fh, None).await.is_err());
    h.fs.flush(fh, None).await.unwrap();
    h.fs.release(fh).await.unwrap();
    assert_eq!(h.store.object("f").unwrap(), &b"data"[..]);
}

#[tokio::test]
async fn listing_hides_placeholders_and_shows_local_files() {
    let h = harness();
    h.store.insert("d/.emptyFolderPlaceholder", "");
    h.store.insert("d/x", "1");
    h.store.insert("top", "2");
    let (_, fh) = h.fs.create(ROOT, "new", 0o644).await.unwrap();
    assert_eq!(h.names(ROOT).await, [".", "..", "d", "top", "new"]);
    let d = h.fs.lookup(ROOT, "d").await.unwrap();
    assert_eq!(h.names(d.ino).await, [".", "..", "x"]);
    h.fs.release(fh).await.unwrap();
}

#[tokio::test]
async fn mkdir_and_rmdir_use_the_placeholder() {
    let h = harness();
    let d = h.fs.mkdir(ROOT, "d", 0o755).await.unwrap();
    assert_eq!(h.store.keys(), ["d/.emptyFolderPlaceholder"]);
    assert_eq!(h.names(d.ino).await, [".", ".."]);
    h.write_file(d.ino, "f", b"x").await.unwrap();
    assert_eq!(
        h.fs.rmdir(ROOT, "d").await.unwrap_err().errno(),
        libc::ENOTEMPTY
    );
    h.fs.unlink(d.ino, "f").await.unwrap();
    h.fs.rmdir(ROOT, "d").await.unwrap();
    assert!(h.store.keys().is_empty());
}

#[tokio::test]
async fn a_dir_marker_from_another_tool_is_a_directory() {
    let h = harness();
    h.store.insert("m/", "");
    let m = h.fs.lookup(ROOT, "m").await.unwrap();
    assert_eq!(m.kind, Kind::Dir);
    h.fs.rmdir(ROOT, "m").await.unwrap();
    assert!(h.store.keys().is_empty());
}

#[tokio::test]
async fn rename_copies_then_deletes() {
    let h = harness();
    h.write_file(ROOT, "x", b"hello").await.unwrap();
    h.fs.rename(ROOT, "x", ROOT, "y", 0).await.unwrap();
    assert_eq!(h.store.keys(), ["y"]);
    let y = h.fs.lookup(ROOT, "y").await.unwrap();
    assert_eq!(h.read_all(y.ino).await, b"hello");
    assert_eq!(
        h.fs.lookup(ROOT, "x").await.unwrap_err().errno(),
        libc::ENOENT
    );
}

#[tokio::test]
async fn rename_noreplace_and_exchange() {
    let h = harness();
    h.write_file(ROOT, "a", b"1").await.unwrap();
    h.write_file(ROOT, "b", b"2").await.unwrap();
    let noreplace = h.fs.rename(ROOT, "a", ROOT, "b", RENAME_NOREPLACE).await;
    assert_eq!(noreplace.unwrap_err().errno(), libc::EEXIST);
    let exchange = h.fs.rename(ROOT, "a", ROOT, "b", RENAME_EXCHANGE).await;
    assert_eq!(exchange.unwrap_err().errno(), libc::EINVAL);
    assert_eq!(h.store.object("b").unwrap(), &b"2"[..]);
}

#[tokio::test]
async fn rename_of_a_file_still_being_written_keeps_its_data() {
    let h = harness();
    let (_, fh) = h.fs.create(ROOT, "tmp", 0o644).await.unwrap();
    h.fs.write(fh, 0, b"data".to_vec()).await.unwrap();
    h.fs.rename(ROOT, "tmp", ROOT, "final", 0).await.unwrap();
    h.fs.write(fh, 4, b"+more".to_vec()).await.unwrap();
    h.fs.release(fh).await.unwrap();
    assert_eq!(h.store.keys(), ["final"]);
    assert_eq!(h.store.object("final").unwrap(), &b"data+more"[..]);
}

#[tokio::test]
async fn names_supabase_refuses_fail_before_any_request() {
    let h = harness();
    let err = h.fs.create(ROOT, "naïve#1.txt", 0o644).await.unwrap_err();
    assert_eq!(err.errno(), libc::EINVAL);
    assert_eq!(
        h.fs.mkdir(ROOT, "a%b", 0o755).await.unwrap_err().errno(),
        libc::EINVAL
    );
    assert_eq!(h.store.count(Op::Put), 0);
    h.write_file(ROOT, "a b&c+d.txt", b"ok").await.unwrap();
    assert_eq!(h.store.keys(), ["a b&c+d.txt"]);
}

#[tokio::test]
async fn overwrite_with_truncate_and_partial_write() {
    let h = harness();
    let ino = h.write_file(ROOT, "f", b"0123456789").await.unwrap();
    let fh = h.fs.open(ino, WRITE).await.unwrap();
    h.fs.write(fh, 2, b"ab".to_vec()).await.unwrap();
    h.fs.release(fh).await.unwrap();
    assert_eq!(h.store.object("f").unwrap(), &b"01ab456789"[..]);
    let fh =
        h.fs.open(
            ino,
            OpenMode {
                write: true,
                truncate: true,
            },
        )
        .await
        .unwrap();
    h.fs.write(fh, 0, b"new".to_vec()).await.unwrap();
    h.fs.release(fh).await.unwrap();
    assert_eq!(h.store.object("f").unwrap(), &b"new"[..]);
}

#[tokio::test]
async fn truncate_of_a_closed_file() {
    let h = harness();
    let ino = h.write_file(ROOT, "f", b"0123456789").await.unwrap();
    assert_eq!(
        h.fs.setattr(ino, Some(4), MetaChange::default())
            .await
            .unwrap()
            .size,
        4
    );
    assert_eq!(h.store.object("f").unwrap(), &b"0123"[..]);
    h.fs.setattr(ino, Some(6), MetaChange::default())
        .await
        .unwrap();
    assert_eq!(h.store.object("f").unwrap(), &b"0123\0\0"[..]);
}

#[tokio::test]
async fn size_of_a_file_being_written_is_local() {
    let h = harness();
    let (attr, fh) = h.fs.create(ROOT, "growing", 0o644).await.unwrap();
    h.fs.write(fh, 0, vec![7; 1000]).await.unwrap();
    h.fs.flush(fh, None).await.unwrap();
    h.fs.write(fh, 1000, vec![8; 500]).await.unwrap();
    assert_eq!(h.fs.getattr(attr.ino).await.unwrap().size, 1500);
    h.fs.release(fh).await.unwrap();
}

#[tokio::test]
async fn unlinked_open_file_is_not_uploaded_again() {
    let h = harness();
    let (_, fh) = h.fs.create(ROOT, "gone", 0o644).await.unwrap();
    h.fs.write(fh, 0, b"x".to_vec()).await.unwrap();
    h.fs.flush(fh, None).await.unwrap();
    h.fs.unlink(ROOT, "gone").await.unwrap();
    h.fs.write(fh, 1, b"y".to_vec()).await.unwrap();
    h.fs.release(fh).await.unwrap();
    assert!(h.store.keys().is_empty());
}

#[tokio::test]
async fn prefix_mounts_see_only_their_subtree() {
    let h = harness_with("sub/", Duration::ZERO);
    h.store.insert("sub/in", "1");
    h.store.insert("out", "2");
    assert_eq!(h.names(ROOT).await, [".", "..", "in"]);
    h.write_file(ROOT, "new", b"3").await.unwrap();
    assert!(h.store.keys().contains(&"sub/new".to_string()));
}

#[tokio::test]
async fn attributes_are_cached_for_the_ttl() {
    let h = harness_with("", Duration::from_secs(60));
    h.store.insert("f", "1");
    let first = h.fs.lookup(ROOT, "f").await.unwrap();
    let heads = h.store.count(Op::Head);
    h.fs.getattr(first.ino).await.unwrap();
    h.fs.lookup(ROOT, "f").await.unwrap();
    assert_eq!(h.store.count(Op::Head), heads);
}

#[tokio::test]
async fn changes_by_other_clients_show_without_ttl() {
    let h = harness();
    h.store.insert("f", "1");
    let f = h.fs.lookup(ROOT, "f").await.unwrap();
    h.store.insert("f", "22");
    assert_eq!(h.fs.getattr(f.ino).await.unwrap().size, 2);
    h.store.insert("g/x", "");
    h.store.insert("f", "");
    let (_, _) = (h.fs.lookup(ROOT, "g").await.unwrap(), ());
    assert_eq!(h.names(ROOT).await, [".", "..", "f", "g"]);
}

#[tokio::test]
async fn rename_a_directory_moves_every_key() {
    let h = harness();
    let a = h.fs.mkdir(ROOT, "a", 0o755).await.unwrap();
    h.write_file(a.ino, "f", b"x").await.unwrap();
    let sub = h.fs.mkdir(a.ino, "sub", 0o755).await.unwrap();
    h.write_file(sub.ino, "g", b"y").await.unwrap();
    h.fs.rename(ROOT, "a", ROOT, "b", 0).await.unwrap();
    let mut keys = h.store.keys();
    keys.sort();
    assert_eq!(
        keys,
        [
            "b/.emptyFolderPlaceholder",
            "b/f",
            "b/sub/.emptyFolderPlaceholder",
            "b/sub/g"
        ]
    );
    let b = h.fs.lookup(ROOT, "b").await.unwrap();
    assert_eq!(b.ino, a.ino, "the kernel's inode follows the rename");
    let sub = h.fs.lookup(b.ino, "sub").await.unwrap();
    let g = h.fs.lookup(sub.ino, "g").await.unwrap();
    assert_eq!(h.read_all(g.ino).await, b"y");
}

#[tokio::test]
async fn rename_a_directory_onto_a_non_empty_one_fails() {
    let h = harness();
    h.fs.mkdir(ROOT, "a", 0o755).await.unwrap();
    let b = h.fs.mkdir(ROOT, "b", 0o755).await.unwrap();
    h.write_file(b.ino, "keep", b"1").await.unwrap();
    let err = h.fs.rename(ROOT, "a", ROOT, "b", 0).await.unwrap_err();
    assert_eq!(err.errno(), libc::ENOTEMPTY);
    let err =
        h.fs.rename(ROOT, "a", ROOT, "b", RENAME_NOREPLACE)
            .await
            .unwrap_err();
    assert_eq!(err.errno(), libc::EEXIST);
}

#[tokio::test]
async fn rename_of_a_directory_with_a_file_being_written() {
    let h = harness();
    let a = h.fs.mkdir(ROOT, "a", 0o755).await.unwrap();
    let (_, fh) = h.fs.create(a.ino, "w", 0o644).await.unwrap();
    h.fs.write(fh, 0, b"staged".to_vec()).await.unwrap();
    h.fs.rename(ROOT, "a", ROOT, "z", 0).await.unwrap();
    h.fs.write(fh, 6, b"!".to_vec()).await.unwrap();
    h.fs.release(fh).await.unwrap();
    assert_eq!(h.store.object("z/w").unwrap(), &b"staged!"[..]);
    assert!(h.store.keys().iter().all(|k| k.starts_with("z/")));
}

#[tokio::test]
async fn a_failed_write_never_becomes_the_object() {
    let h = harness();
    h.write_file(ROOT, "f", b"original").await.unwrap();
    let f = h.fs.lookup(ROOT, "f").await.unwrap();
    let fh = h.fs.open(f.ino, WRITE).await.unwrap();
    // Past the largest object size: the write fails like a full disk would.
    let err =
        h.fs.write(fh, u64::MAX / 2, b"x".to_vec())
            .await
            .unwrap_err();
    assert_eq!(err.errno(), libc::EFBIG);
    h.fs.write(fh, 0, b"changed".to_vec()).await.unwrap();
    assert!(h.fs.flush(fh, None).await.is_err());
    let _ = h.fs.release(fh).await;
    assert_eq!(h.store.object("f").unwrap(), &b"original"[..]);
}

#[tokio::test]
async fn a_close_by_another_process_does_not_upload() {
    let h = harness();
    let (_, fh) = h.fs.create(ROOT, "f", 0o644).await.unwrap();
    h.fs.set_opener(fh, 100);
    h.fs.write(fh, 0, b"partial".to_vec()).await.unwrap();
    // A child that inherited the descriptor closes it at exec.
    h.fs.flush(fh, Some(200)).await.unwrap();
    assert!(h.store.keys().is_empty());
    h.fs.flush(fh, Some(100)).await.unwrap();
    assert_eq!(h.store.object("f").unwrap(), &b"partial"[..]);
    h.fs.release(fh).await.unwrap();
}

// ----- metadata and symbolic links -----

impl Harness {
    fn remount(&self) -> Harness {
        mount(self.store.clone(), "", Duration::ZERO, true)
    }

    async fn attr(&self, path: &str) -> Attr {
        let mut ino = ROOT;
        for name in path.split('/') {
            ino = self.fs.lookup(ino, name).await.unwrap().ino;
        }
        self.fs.getattr(ino).await.unwrap()
    }
}

fn at(secs: u64, nanos: u32) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::new(secs, nanos)
}

fn chmod(mode: u32) -> MetaChange {
    MetaChange {
        mode: Some(mode),
        ..Default::default()
    }
}

fn utime(t: SystemTime) -> MetaChange {
    MetaChange {
        mtime: Some(t),
        ..Default::default()
    }
}

#[tokio::test]
async fn chmod_chown_and_utimens_survive_a_remount_without_reuploading() {
    let h = harness();
    let ino = h.write_file(ROOT, "f", b"data").await.unwrap();
    let puts = h.store.count(Op::Put);
    let when = at(981_173_106, 123_456_789);
    h.fs.setattr(ino, None, chmod(0o100600)).await.unwrap();
    let change = MetaChange {
        uid: Some(4242),
        gid: Some(77),
        mtime: Some(when),
        ..Default::default()
    };
    let attr = h.fs.setattr(ino, None, change).await.unwrap();
    assert_eq!(
        (attr.perm, attr.uid, attr.gid, attr.mtime),
        (0o600, 4242, 77, when)
    );
    assert_eq!(h.store.count(Op::Put), puts, "no data sent again");
    assert_eq!(h.store.count(Op::ReplaceMetadata), 2);
    assert_eq!(h.store.object("f").unwrap(), &b"data"[..]);

    let again = h.remount();
    let attr = again.attr("f").await;
    assert_eq!(
        (attr.perm, attr.uid, attr.gid, attr.mtime),
        (0o600, 4242, 77, when)
    );
}

#[tokio::test]
async fn objects_without_metadata_get_the_mount_defaults() {
    let h = harness();
    h.store.insert("dash.txt", "from the dashboard");
    let attr = h.attr("dash.txt").await;
    assert_eq!((attr.perm, attr.uid, attr.gid), (0o644, 1000, 1000));
    assert_eq!(attr.kind, Kind::File);
}

#[tokio::test]
async fn new_files_and_directories_keep_their_creation_mode() {
    let h = harness();
    let d = h.fs.mkdir(ROOT, "d", 0o700).await.unwrap();
    assert_eq!(d.perm, 0o700);
    let (_, fh) = h.fs.create(d.ino, "run.sh", 0o755).await.unwrap();
    h.fs.release(fh).await.unwrap();
    let again = h.remount();
    assert_eq!(again.attr("d").await.perm, 0o700);
    assert_eq!(again.attr("d/run.sh").await.perm, 0o755);
}

#[tokio::test]
async fn metadata_set_while_writing_goes_with_the_upload() {
    let h = harness();
    let (attr, fh) = h.fs.create(ROOT, "f", 0o644).await.unwrap();
    h.fs.write(fh, 0, b"abc".to_vec()).await.unwrap();
    let when = at(1_000_000_000, 0);
    h.fs.setattr(attr.ino, None, utime(when)).await.unwrap();
    h.fs.release(fh).await.unwrap();
    assert_eq!(h.store.count(Op::ReplaceMetadata), 0, "carried by the PUT");
    assert_eq!(h.remount().attr("f").await.mtime, when);
}

#[tokio::test]
async fn a_write_after_utimens_makes_the_mtime_current_again() {
    let h = harness();
    let ino = h.write_file(ROOT, "f", b"abc").await.unwrap();
    h.fs.setattr(ino, None, utime(at(1_000, 0))).await.unwrap();
    let fh = h.fs.open(ino, WRITE).await.unwrap();
    h.fs.write(fh, 3, b"d".to_vec()).await.unwrap();
    h.fs.release(fh).await.unwrap();
    let mtime = h.remount().attr("f").await.mtime;
    assert!(mtime > at(1_000_000_000, 0), "{mtime:?}");
}

#[tokio::test]
async fn a_chmod_after_a_multipart_upload_started_is_applied_at_close() {
    let h = harness();
    let (attr, fh) = h.fs.create(ROOT, "big", 0o644).await.unwrap();
    let data = vec![5u8; 20 << 20];
    h.fs.write(fh, 0, data.clone()).await.unwrap();
    h.fs.setattr(attr.ino, None, chmod(0o640)).await.unwrap();
    h.fs.release(fh).await.unwrap();
    assert_eq!(h.store.count(Op::CreateMultipart), 1);
    assert_eq!(h.remount().attr("big").await.perm, 0o640);
    assert_eq!(h.store.object("big").unwrap(), &data[..]);
}

#[tokio::test]
async fn chmod_of_a_directory_without_placeholder_creates_one() {
    let h = harness();
    h.store.insert("implicit/a.txt", "x");
    let ino = h.fs.lookup(ROOT, "implicit").await.unwrap().ino;
    h.fs.setattr(ino, None, chmod(0o750)).await.unwrap();
    assert!(h.store.object("implicit/.emptyFolderPlaceholder").is_some());
    assert_eq!(h.remount().attr("implicit").await.perm, 0o750);
    assert_eq!(h.remount().names(ROOT).await, [".", "..", "implicit"]);
}

#[tokio::test]
async fn rename_keeps_modes_and_mtime() {
    let h = harness();
    let ino = h.write_file(ROOT, "a", b"x").await.unwrap();
    h.fs.setattr(ino, None, chmod(0o600)).await.unwrap();
    let plain = h.write_file(ROOT, "b", b"y").await.unwrap();
    let b_mtime = h.fs.getattr(plain).await.unwrap().mtime;
    h.fs.rename(ROOT, "a", ROOT, "a2", 0).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    h.fs.rename(ROOT, "b", ROOT, "b2", 0).await.unwrap();
    let again = h.remount();
    assert_eq!(again.attr("a2").await.perm, 0o600);
    assert_eq!(again.attr("b2").await.mtime, b_mtime, "not the copy's time");
}

#[tokio::test]
async fn symlinks_are_objects_holding_their_target() {
    let h = harness();
    let attr = h.fs.symlink(ROOT, "link", b"../some/target").await.unwrap();
    assert_eq!(
        (attr.kind, attr.perm, attr.size),
        (Kind::Symlink, 0o777, 14)
    );
    assert_eq!(h.store.object("link").unwrap(), &b"../some/target"[..]);
    assert_eq!(
        h.fs.symlink(ROOT, "link", b"x").await.unwrap_err().errno(),
        libc::EEXIST
    );

    let again = h.remount();
    assert_eq!(again.names(ROOT).await, [".", "..", "link"]);
    let attr = again.attr("link").await;
    assert_eq!(attr.kind, Kind::Symlink);
    assert_eq!(
        &again.fs.readlink(attr.ino).await.unwrap()[..],
        b"../some/target"
    );
    again
        .fs
        .rename(ROOT, "link", ROOT, "moved", 0)
        .await
        .unwrap();
    assert_eq!(again.remount().attr("moved").await.kind, Kind::Symlink);
}

#[tokio::test]
async fn a_listing_alone_does_not_claim_to_know_metadata() {
    let h = harness_with("", Duration::from_secs(60));
    h.store.insert("f", "x");
    let fh = h.fs.opendir(ROOT).await.unwrap();
    let ino = h.fs.readdir(fh).unwrap()[2].ino;
    h.fs.releasedir(fh);
    assert!(!h.fs.listed_attr(ino).unwrap().1, "listed only");
    let heads = h.store.count(Op::Head);
    h.fs.lookup(ROOT, "f").await.unwrap();
    assert_eq!(h.store.count(Op::Head), heads + 1, "one HEAD, no listing");
    assert!(h.fs.listed_attr(ino).unwrap().1);
}

#[tokio::test]
async fn metadata_stays_trusted_while_listings_show_the_same_version() {
    let ttl = Duration::from_millis(50);
    let h = harness_with("", ttl);
    h.store.insert("f", "x");
    h.store.set_modified("f", at(1_000_000, 0));
    h.fs.lookup(ROOT, "f").await.unwrap();
    tokio::time::sleep(2 * ttl).await;
    let heads = h.store.count(Op::Head);
    h.names(ROOT).await;
    assert_eq!(h.attr("f").await.perm, 0o644);
    assert_eq!(h.store.count(Op::Head), heads, "the listing vouched for it");

    // Another client's chmod rewrites the object, which gets a new Last-Modified.
    let mode = PosixMeta {
        mode: Some(S_IFREG | 0o600),
        ..Default::default()
    };
    h.store
        .replace_metadata("f", &mode.to_user_meta())
        .await
        .unwrap();
    h.store.set_modified("f", at(1_000_001, 0));
    tokio::time::sleep(2 * ttl).await;
    h.names(ROOT).await;
    assert_eq!(h.attr("f").await.perm, 0o600);
}

#[tokio::test]
async fn without_metadata_modes_are_not_kept_and_links_refused() {
    let store = Arc::new(MemoryStore::new());
    let h = mount(store.clone(), "", Duration::ZERO, false);
    let ino = h.write_file(ROOT, "f", b"x").await.unwrap();
    h.fs.setattr(ino, None, chmod(0o600)).await.unwrap();
    assert_eq!(h.fs.getattr(ino).await.unwrap().perm, 0o644);
    assert!(store.metadata("f").unwrap().is_empty());
    assert_eq!(
        h.fs.symlink(ROOT, "l", b"f").await.unwrap_err().errno(),
        libc::EPERM
    );
}

#[tokio::test]
async fn mknod_makes_regular_files_only() {
    let h = harness();
    let attr = h.fs.mknod(ROOT, "plain", 0o100640).await.unwrap();
    assert_eq!((attr.kind, attr.perm), (Kind::File, 0o640));
    assert_eq!(h.store.object("plain").unwrap().len(), 0);
    let fifo = 0o010000 | 0o644;
    assert_eq!(
        h.fs.mknod(ROOT, "fifo", fifo).await.unwrap_err().errno(),
        libc::EPERM
    );
}

#[tokio::test]
async fn names_and_keys_too_long_are_enametoolong_before_any_request() {
    let h = harness();
    let long = "n".repeat(256);
    let too_long = |r: FsResult<Attr>| assert_eq!(r.unwrap_err().errno(), libc::ENAMETOOLONG);
    too_long(h.fs.mkdir(ROOT, &long, 0o755).await);
    too_long(h.fs.lookup(ROOT, &long).await);
    assert_eq!(
        h.fs.create(ROOT, &long, 0o644).await.unwrap_err().errno(),
        libc::ENAMETOOLONG
    );
    // Three levels of 250 bytes: a fourth directory's placeholder key would pass 1024 bytes,
    // while a file of that name still fits.
    let mut dir = ROOT;
    for i in 0..3 {
        dir =
            h.fs.mkdir(dir, &format!("{i}{}", "d".repeat(249)), 0o755)
                .await
                .unwrap()
                .ino;
    }
    let name = "f".repeat(250);
    let requests = h.store.count(Op::Put) + h.store.count(Op::Head);
    too_long(h.fs.mkdir(dir, &name, 0o755).await);
    assert_eq!(h.store.count(Op::Put) + h.store.count(Op::Head), requests);
    h.write_file(dir, &name, b"fits").await.unwrap();
}
