//! On-disk storage of the local server: objects as plain files, their metadata in a sidecar tree.
//!
//! Invariants the rest of the server relies on:
//! - An object file is never changed in place. Every write goes to a new file in `.tmp/` and is
//!   renamed over the old one, so a reader that has opened a file keeps a stable snapshot, and a
//!   crash never leaves half an object under a key.
//! - `namespace` orders changes to the tree: a commit (rename + sidecar), a delete (unlink +
//!   pruning of emptied directories) and bucket changes take it exclusively; a lookup (stat +
//!   sidecar + open) shares it. Nobody holds it while a body streams, only for a few syscalls.
//! - A sidecar records the size and mtime of the file it describes. When they no longer match
//!   (the file was edited in `DATA_DIR` by hand, or the process died between the two renames of
//!   a commit) the ETag is recomputed from the data and the sidecar rewritten; Content-Type and
//!   user metadata are then lost for that object.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use tokio::sync::RwLock;
use tracing::debug;

use super::keys::{Bucket, Key, SIDECAR_SUFFIX};
use super::listing::Entry;
use super::stream::{self, TempFile};
use super::walk;

/// Hidden directories under `DATA_DIR`. Bucket names may not start with `.`, so no bucket can
/// collide with them.
const META_DIR: &str = ".meta";
const TMP_DIR: &str = ".tmp";
const LOCK_FILE: &str = ".lock";
pub(super) const UPLOADS_DIR: &str = ".uploads";

/// What S3 clients and Supabase assume when a PUT names no Content-Type.
pub(crate) const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// Size of the buffer for copies between files (copy, multipart completion, hashing).
pub(super) const COPY_BUFFER: usize = 1 << 20;

/// Failures of the storage layer, by meaning. The backend turns each into an S3 error.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    #[error("another local server is using this data directory")]
    DataDirInUse,
    #[error("the bucket does not exist")]
    NoSuchBucket,
    #[error("the object does not exist")]
    NoSuchKey,
    #[error("the bucket already exists")]
    BucketExists,
    #[error("the bucket is not empty")]
    BucketNotEmpty,
    #[error("{0}")]
    KeyConflict(String),
    #[error("the object is larger than this server's limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the multipart upload does not exist")]
    NoSuchUpload,
    #[error("{0}")]
    InvalidPart(String),
    #[error("the parts of a multipart upload must be listed in ascending order")]
    InvalidPartOrder,
    #[error("reading the request body failed")]
    Body(#[source] s3s::StdError),
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

/// Adds the failed action and its path to an I/O error.
pub(super) trait IoContext<T> {
    fn ctx(self, action: &str, path: &Path) -> Result<T, StoreError>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, action: &str, path: &Path) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Io {
            context: format!("cannot {action} {}", path.display()),
            source,
        })
    }
}

/// What HEAD, GET and listings report about an object.
#[derive(Debug, Clone)]
pub(crate) struct ObjectMeta {
    /// Hex MD5 of the content, without quotes.
    pub etag: String,
    pub size: u64,
    /// The file's mtime, truncated to whole seconds so that HEAD, GET and List agree.
    pub last_modified: SystemTime,
    pub content_type: String,
    /// `x-amz-meta-*` values by lower-case name (without the prefix).
    pub metadata: BTreeMap<String, String>,
}

/// The metadata a write asks for.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct NewMeta {
    pub content_type: Option<String>,
    pub metadata: BTreeMap<String, String>,
}

/// The sidecar file `.meta/<bucket>/<key>~meta.json`.
#[derive(Debug, Serialize, Deserialize)]
struct Sidecar {
    etag: String,
    content_type: String,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    size: u64,
    mtime_secs: u64,
    mtime_nanos: u32,
}

/// Paths of everything under `DATA_DIR`, and names for temporary files.
#[derive(Debug)]
pub(crate) struct Layout {
    root: PathBuf,
    meta: PathBuf,
    tmp: PathBuf,
    uploads: PathBuf,
    /// Makes temporary names unique across restarts: process id and start time.
    instance: String,
    seq: AtomicU64,
}

/// The storage used by the S3 backend. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub(crate) struct DiskStore {
    pub(super) layout: Arc<Layout>,
    namespace: Arc<RwLock<()>>,
    pub(super) max_object_size: Option<u64>,
    /// `DATA_DIR/.lock`, locked for as long as the store lives: a second server on the same
    /// directory would delete this one's temporary files at start.
    _dir_lock: File,
}

/// A bucket in a ListBuckets answer.
#[derive(Debug, Clone)]
pub(crate) struct BucketInfo {
    pub name: String,
    pub created: SystemTime,
}

impl Layout {
    fn new(root: PathBuf) -> Layout {
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Layout {
            meta: root.join(META_DIR),
            tmp: root.join(TMP_DIR),
            uploads: root.join(UPLOADS_DIR),
            root,
            instance: format!("{}-{}", std::process::id(), started.as_nanos()),
            seq: AtomicU64::new(0),
        }
    }

    pub(super) fn bucket_dir(&self, bucket: &Bucket) -> PathBuf {
        self.root.join(bucket.as_str())
    }

    fn meta_bucket_dir(&self, bucket: &Bucket) -> PathBuf {
        self.meta.join(bucket.as_str())
    }

    fn object_path(&self, bucket: &Bucket, key: &Key) -> PathBuf {
        self.bucket_dir(bucket).join(key.as_str())
    }

    fn sidecar_path(&self, bucket: &Bucket, key: &Key) -> PathBuf {
        let mut path = self
            .meta_bucket_dir(bucket)
            .join(key.as_str())
            .into_os_string();
        path.push(SIDECAR_SUFFIX);
        PathBuf::from(path)
    }

    pub(super) fn uploads_dir(&self) -> &Path {
        &self.uploads
    }

    /// A fresh name in `.tmp/`, on the same file system as the objects so that rename works.
    pub(super) fn temp_path(&self) -> PathBuf {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        self.tmp.join(format!("{}-{seq}", self.instance))
    }

    /// A name no other call returns (for upload ids).
    pub(super) fn unique_token(&self) -> String {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        format!("{}-{seq}-{}", self.instance, now.as_nanos())
    }
}

impl DiskStore {
    /// Creates the hidden directories and removes temporary files a previous run left behind.
    pub(crate) async fn open(
        root: PathBuf,
        max_object_size: Option<u64>,
    ) -> Result<Self, StoreError> {
        let layout = Arc::new(Layout::new(root));
        let prepare = Arc::clone(&layout);
        let dir_lock = blocking(move || prepare_root(&prepare)).await?;
        Ok(DiskStore {
            layout,
            namespace: Arc::new(RwLock::new(())),
            max_object_size,
            _dir_lock: dir_lock,
        })
    }

    /// Runs `f` on the blocking pool while no commit or delete can change the tree.
    pub(super) async fn shared<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Layout) -> Result<T, StoreError> + Send + 'static,
    {
        let guard = Arc::clone(&self.namespace).read_owned().await;
        let layout = Arc::clone(&self.layout);
        blocking(move || {
            let _guard = guard;
            f(&layout)
        })
        .await
    }

    /// Runs `f` on the blocking pool as the only one changing or reading the tree.
    pub(super) async fn exclusive<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Layout) -> Result<T, StoreError> + Send + 'static,
    {
        let guard = Arc::clone(&self.namespace).write_owned().await;
        let layout = Arc::clone(&self.layout);
        blocking(move || {
            let _guard = guard;
            f(&layout)
        })
        .await
    }

    /// Runs `f` on the blocking pool without the namespace lock (for `.uploads/` and `.tmp/`).
    pub(super) async fn unlocked<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Layout) -> Result<T, StoreError> + Send + 'static,
    {
        let layout = Arc::clone(&self.layout);
        blocking(move || f(&layout)).await
    }

    pub(crate) async fn ensure_bucket(&self, bucket: &Bucket) -> Result<(), StoreError> {
        let bucket = bucket.clone();
        self.exclusive(move |layout| {
            let dir = layout.bucket_dir(&bucket);
            fs::create_dir_all(&dir).ctx("create bucket directory", &dir)
        })
        .await
    }

    pub(crate) async fn create_bucket(&self, bucket: &Bucket) -> Result<(), StoreError> {
        let bucket = bucket.clone();
        self.exclusive(move |layout| {
            let dir = layout.bucket_dir(&bucket);
            match fs::create_dir(&dir) {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(StoreError::BucketExists),
                other => other.ctx("create bucket directory", &dir),
            }
        })
        .await
    }

    pub(crate) async fn delete_bucket(&self, bucket: &Bucket) -> Result<(), StoreError> {
        let bucket = bucket.clone();
        self.exclusive(move |layout| {
            let dir = layout.bucket_dir(&bucket);
            require_bucket_dir(&dir)?;
            if walk::has_files(&dir).ctx("read", &dir)? {
                return Err(StoreError::BucketNotEmpty);
            }
            fs::remove_dir_all(&dir).ctx("remove bucket directory", &dir)?;
            remove_tree_if_exists(&layout.meta_bucket_dir(&bucket))
        })
        .await
    }

    pub(crate) async fn require_bucket(&self, bucket: &Bucket) -> Result<(), StoreError> {
        let bucket = bucket.clone();
        self.unlocked(move |layout| require_bucket_dir(&layout.bucket_dir(&bucket)))
            .await
    }

    pub(crate) async fn list_buckets(&self) -> Result<Vec<BucketInfo>, StoreError> {
        self.unlocked(|layout| list_bucket_dirs(&layout.root)).await
    }

    /// Streams a request body to a temporary file; see [`stream::write_body`].
    pub(crate) async fn write_body(
        &self,
        body: Option<s3s::dto::StreamingBlob>,
    ) -> Result<TempFile, StoreError> {
        stream::write_body(self.layout.temp_path(), body, self.max_object_size).await
    }

    /// Makes `temp` the object `key`, with `meta`, replacing any previous object.
    pub(crate) async fn commit(
        &self,
        bucket: &Bucket,
        key: &Key,
        temp: TempFile,
        meta: NewMeta,
    ) -> Result<ObjectMeta, StoreError> {
        let (bucket, key) = (bucket.clone(), key.clone());
        self.exclusive(move |layout| commit_blocking(layout, &bucket, &key, temp, meta))
            .await
    }

    /// Opens an object for reading; the file stays a stable snapshot even if it is replaced.
    pub(crate) async fn open_object(
        &self,
        bucket: &Bucket,
        key: &Key,
    ) -> Result<(File, ObjectMeta), StoreError> {
        let (bucket, key) = (bucket.clone(), key.clone());
        self.shared(move |layout| open_blocking(layout, &bucket, &key))
            .await
    }

    /// Copies an object's data into a temporary file. Returns the copy and the source's metadata.
    pub(crate) async fn copy_to_temp(
        &self,
        bucket: &Bucket,
        key: &Key,
    ) -> Result<(TempFile, ObjectMeta), StoreError> {
        let (file, meta) = self.open_object(bucket, key).await?;
        let temp_path = self.layout.temp_path();
        let temp = blocking(move || stream::copy_to_temp(file, temp_path)).await?;
        Ok((temp, meta))
    }

    /// Removes an object; a missing one is not an error (S3 answers 204 either way).
    pub(crate) async fn delete_object(
        &self,
        bucket: &Bucket,
        key: &Key,
    ) -> Result<bool, StoreError> {
        let (bucket, key) = (bucket.clone(), key.clone());
        self.exclusive(move |layout| delete_blocking(layout, &bucket, &key))
            .await
    }

    /// Every key and common prefix of the bucket that a listing with `prefix` and `delimiter`
    /// would show, unsorted.
    pub(crate) async fn list_entries(
        &self,
        bucket: &Bucket,
        prefix: String,
        delimiter: Option<String>,
    ) -> Result<Vec<Entry>, StoreError> {
        let bucket = bucket.clone();
        self.unlocked(move |layout| {
            let dir = layout.bucket_dir(&bucket);
            require_bucket_dir(&dir)?;
            walk::collect_entries(&dir, &prefix, delimiter.as_deref()).ctx("list", &dir)
        })
        .await
    }

    /// Metadata for the listed keys; keys deleted since they were listed are left out.
    pub(crate) async fn list_metas(
        &self,
        bucket: &Bucket,
        keys: Vec<Key>,
    ) -> Result<Vec<(Key, ObjectMeta)>, StoreError> {
        let bucket = bucket.clone();
        self.shared(move |layout| {
            let mut metas = Vec::with_capacity(keys.len());
            for key in keys {
                match stat_blocking(layout, &bucket, &key) {
                    Ok(meta) => metas.push((key, meta)),
                    Err(StoreError::NoSuchKey) => debug!(%key, "listed key vanished"),
                    Err(e) => return Err(e),
                }
            }
            Ok(metas)
        })
        .await
    }
}

/// Runs a blocking storage task on tokio's blocking pool.
pub(super) async fn blocking<T, F>(f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(join) => Err(StoreError::Io {
            context: "a storage task did not finish".into(),
            source: io::Error::other(join),
        }),
    }
}

/// Locks the data directory, creates the hidden directories and empties `.tmp/`.
fn prepare_root(layout: &Layout) -> Result<File, StoreError> {
    fs::create_dir_all(&layout.root).ctx("create directory", &layout.root)?;
    let lock = lock_data_dir(&layout.root)?;
    for dir in [&layout.meta, &layout.tmp, &layout.uploads] {
        fs::create_dir_all(dir).ctx("create directory", dir)?;
    }
    for entry in fs::read_dir(&layout.tmp).ctx("read", &layout.tmp)? {
        let path = entry.ctx("read", &layout.tmp)?.path();
        debug!(path = %path.display(), "removing a temporary file left by an earlier run");
        remove_tree_if_exists(&path)?;
    }
    Ok(lock)
}

fn lock_data_dir(root: &Path) -> Result<File, StoreError> {
    let path = root.join(LOCK_FILE);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .ctx("open", &path)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(StoreError::DataDirInUse),
        Err(fs::TryLockError::Error(e)) => Err(e).ctx("lock", &path),
    }
}

fn require_bucket_dir(dir: &Path) -> Result<(), StoreError> {
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(StoreError::NoSuchBucket),
        Err(e) if is_not_found(&e) => Err(StoreError::NoSuchBucket),
        Err(e) => Err(e).ctx("read", dir),
    }
}

fn list_bucket_dirs(root: &Path) -> Result<Vec<BucketInfo>, StoreError> {
    let mut buckets = Vec::new();
    for entry in fs::read_dir(root).ctx("read", root)? {
        let entry = entry.ctx("read", root)?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let meta = entry.metadata().ctx("read", &entry.path())?;
        if !meta.is_dir() || Bucket::parse(&name).is_none() {
            continue;
        }
        let created = meta
            .created()
            .or_else(|_| meta.modified())
            .unwrap_or(UNIX_EPOCH);
        buckets.push(BucketInfo { name, created });
    }
    buckets.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(buckets)
}

fn commit_blocking(
    layout: &Layout,
    bucket: &Bucket,
    key: &Key,
    temp: TempFile,
    meta: NewMeta,
) -> Result<ObjectMeta, StoreError> {
    let bucket_dir = layout.bucket_dir(bucket);
    require_bucket_dir(&bucket_dir)?;
    let target = layout.object_path(bucket, key);
    make_room(&bucket_dir, key, &target)?;

    let stat = fs::metadata(temp.path()).ctx("read", temp.path())?;
    let sidecar = Sidecar::new(temp.md5().to_owned(), meta, &stat);
    if let Err(e) = fs::rename(temp.path(), &target) {
        prune_empty_dirs(&bucket_dir, &target);
        return Err(e).ctx("store object at", &target);
    }
    temp.disarm();

    write_sidecar(layout, &layout.sidecar_path(bucket, key), &sidecar)?;
    debug!(%bucket, %key, size = sidecar.size, "committed object");
    Ok(sidecar.into_meta())
}

/// Creates the directories above `key` and makes sure the key can become a file there.
///
/// The layout cannot hold a key that is both an object and a folder (`a` and `a/b`): such a
/// write is refused with `KeyConflict` rather than losing either.
fn make_room(bucket_dir: &Path, key: &Key, target: &Path) -> Result<(), StoreError> {
    let mut dir = bucket_dir.to_path_buf();
    let mut folder = String::new();
    for segment in key.parent_segments() {
        dir.push(segment);
        folder.push_str(segment);
        match fs::symlink_metadata(&dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(conflict(key, &format!("'{folder}' is an object"))),
            Err(e) if is_not_found(&e) => fs::create_dir(&dir).ctx("create directory", &dir)?,
            Err(e) => return Err(e).ctx("read", &dir),
        }
        folder.push('/');
    }
    match fs::symlink_metadata(target) {
        Ok(meta) if meta.is_dir() => replace_empty_dir(target, key),
        _ => Ok(()),
    }
}

/// A directory with no objects in it (left over, or made by hand) may give way to an object.
fn replace_empty_dir(dir: &Path, key: &Key) -> Result<(), StoreError> {
    if walk::has_files(dir).ctx("read", dir)? {
        return Err(conflict(key, &format!("objects exist under '{key}/'")));
    }
    fs::remove_dir_all(dir).ctx("remove empty directory", dir)
}

fn conflict(key: &Key, reason: &str) -> StoreError {
    StoreError::KeyConflict(format!(
        "cannot store '{key}': {reason}. The local server keeps each key as a file, so one key \
         cannot be both an object and a folder of other objects"
    ))
}

fn open_blocking(
    layout: &Layout,
    bucket: &Bucket,
    key: &Key,
) -> Result<(File, ObjectMeta), StoreError> {
    require_bucket_dir(&layout.bucket_dir(bucket))?;
    let path = layout.object_path(bucket, key);
    let stat = object_stat(&path)?;
    let file = File::open(&path).map_err(|e| missing_or(e, "open", &path))?;
    let meta = current_meta(layout, bucket, key, &path, &stat)?;
    Ok((file, meta))
}

fn stat_blocking(layout: &Layout, bucket: &Bucket, key: &Key) -> Result<ObjectMeta, StoreError> {
    let path = layout.object_path(bucket, key);
    let stat = object_stat(&path)?;
    current_meta(layout, bucket, key, &path, &stat)
}

fn delete_blocking(layout: &Layout, bucket: &Bucket, key: &Key) -> Result<bool, StoreError> {
    let bucket_dir = layout.bucket_dir(bucket);
    require_bucket_dir(&bucket_dir)?;
    let path = layout.object_path(bucket, key);
    match object_stat(&path) {
        Ok(_) => {}
        Err(StoreError::NoSuchKey) => return Ok(false),
        Err(e) => return Err(e),
    }
    fs::remove_file(&path).ctx("remove", &path)?;
    let sidecar = layout.sidecar_path(bucket, key);
    remove_file_if_exists(&sidecar)?;
    prune_empty_dirs(&bucket_dir, &path);
    prune_empty_dirs(&layout.meta_bucket_dir(bucket), &sidecar);
    debug!(%bucket, %key, "deleted object");
    Ok(true)
}

/// Only regular files are objects: a directory is a folder, and symlinks are not followed.
fn object_stat(path: &Path) -> Result<fs::Metadata, StoreError> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_file() => Ok(meta),
        Ok(_) => Err(StoreError::NoSuchKey),
        Err(e) => Err(missing_or(e, "read", path)),
    }
}

/// `NotADirectory` too: `a/b` is missing, not broken, when `a` is a file.
fn is_not_found(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

fn missing_or(e: io::Error, action: &str, path: &Path) -> StoreError {
    if is_not_found(&e) {
        return StoreError::NoSuchKey;
    }
    StoreError::Io {
        context: format!("cannot {action} {}", path.display()),
        source: e,
    }
}

fn current_meta(
    layout: &Layout,
    bucket: &Bucket,
    key: &Key,
    path: &Path,
    stat: &fs::Metadata,
) -> Result<ObjectMeta, StoreError> {
    let sidecar_path = layout.sidecar_path(bucket, key);
    if let Some(sidecar) = read_sidecar(&sidecar_path).filter(|s| s.describes(stat)) {
        return Ok(sidecar.into_meta());
    }
    debug!(%bucket, %key, "metadata missing or stale; recomputing the ETag from the data");
    let etag = md5_file(path)?;
    let sidecar = Sidecar::new(etag, NewMeta::default(), stat);
    if let Err(e) = write_sidecar(layout, &sidecar_path, &sidecar) {
        debug!(%bucket, %key, error = %e, "could not save recomputed metadata");
    }
    Ok(sidecar.into_meta())
}

fn read_sidecar(path: &Path) -> Option<Sidecar> {
    let bytes = fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn write_sidecar(layout: &Layout, path: &Path, sidecar: &Sidecar) -> Result<(), StoreError> {
    let json = serde_json::to_vec(sidecar).map_err(|e| StoreError::Io {
        context: format!("cannot encode metadata for {}", path.display()),
        source: io::Error::other(e),
    })?;
    write_file_atomic(layout, path, &json)
}

/// Writes small content to `path` through a temporary file and a rename.
pub(super) fn write_file_atomic(
    layout: &Layout,
    path: &Path,
    content: &[u8],
) -> Result<(), StoreError> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).ctx("create directory", parent)?;
    }
    let temp = layout.temp_path();
    let written = fs::write(&temp, content).and_then(|()| fs::rename(&temp, path));
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written.ctx("write", path)
}

fn md5_file(path: &Path) -> Result<String, StoreError> {
    let mut file = File::open(path).map_err(|e| missing_or(e, "open", path))?;
    let mut md5 = Md5::new();
    let mut buf = vec![0; COPY_BUFFER];
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok(hex::encode(md5.finalize())),
            Ok(n) => md5.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).ctx("read", path),
        }
    }
}

/// Removes the directories above `removed` that it left empty, up to (not including) `stop`.
fn prune_empty_dirs(stop: &Path, removed: &Path) {
    let mut dir = removed.parent();
    while let Some(d) = dir {
        if d == stop || !d.starts_with(stop) || fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
    }
}

pub(super) fn remove_file_if_exists(path: &Path) -> Result<(), StoreError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other.ctx("remove", path),
    }
}

pub(super) fn remove_tree_if_exists(path: &Path) -> Result<(), StoreError> {
    let removed = match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => Err(e),
    };
    removed.ctx("remove", path)
}

fn mtime_parts(stat: &fs::Metadata) -> (u64, u32) {
    let since_epoch = stat
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .unwrap_or_default();
    (since_epoch.as_secs(), since_epoch.subsec_nanos())
}

impl Sidecar {
    fn new(etag: String, meta: NewMeta, stat: &fs::Metadata) -> Sidecar {
        let (mtime_secs, mtime_nanos) = mtime_parts(stat);
        Sidecar {
            etag,
            content_type: meta
                .content_type
                .unwrap_or_else(|| DEFAULT_CONTENT_TYPE.to_owned()),
            metadata: meta.metadata,
            size: stat.len(),
            mtime_secs,
            mtime_nanos,
        }
    }

    fn describes(&self, stat: &fs::Metadata) -> bool {
        self.size == stat.len() && (self.mtime_secs, self.mtime_nanos) == mtime_parts(stat)
    }

    fn into_meta(self) -> ObjectMeta {
        ObjectMeta {
            etag: self.etag,
            size: self.size,
            last_modified: UNIX_EPOCH + Duration::from_secs(self.mtime_secs),
            content_type: self.content_type,
            metadata: self.metadata,
        }
    }
}
