//! The filesystem core: POSIX operations over an [`ObjectStore`], with Supabase's conventions
//! (folder placeholders, key charset) but no knowledge of HTTP or of the kernel protocol.
//!
//! Methods are named after the FUSE operations. Each returns an [`FsError`], which carries its
//! own errno and log level (see `error.rs`).

mod dir;
pub mod error;
pub mod inode;
pub mod meta;
mod open_file;
mod reader;
mod stat_ahead;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

pub use error::{FsError, FsResult, Level};
pub use inode::Kind;
use inode::{child_path, parent_path, InodeTable, Node, Observed, ROOT_INO};
pub use meta::MetaChange;
use meta::{PosixMeta, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG};
use open_file::{save_recovery_copy, FailedUpload, OpenFile, Staging, Uploads};
use reader::Reader;
use stat_ahead::StatAhead;

use crate::cache::disk::DiskTier;
use crate::cache::BlockCache;
use crate::names::{
    check_new_name, first_refused_char, is_listable, FOLDER_PLACEHOLDER, MAX_KEY_BYTES,
    MAX_NAME_BYTES,
};
use crate::store::{ObjectStore, StoreError, UserMeta};
use crate::upload::{UploadConfig, UploadError};

/// rename(2) flags as the kernel passes them: Linux names them NOREPLACE and EXCHANGE,
/// macOS (through macFUSE) EXCL and SWAP.
#[cfg(target_os = "linux")]
pub const RENAME_NOREPLACE: u32 = libc::RENAME_NOREPLACE;
#[cfg(target_os = "linux")]
pub const RENAME_EXCHANGE: u32 = libc::RENAME_EXCHANGE;
#[cfg(target_os = "macos")]
pub const RENAME_NOREPLACE: u32 = libc::RENAME_EXCL;
#[cfg(target_os = "macos")]
pub const RENAME_EXCHANGE: u32 = libc::RENAME_SWAP;

/// Objects copied at once when a directory is renamed.
const DIR_RENAME_CONCURRENCY: usize = 8;

/// Settings of one mount.
#[derive(Debug, Clone)]
pub struct FsConfig {
    /// Bucket name, for recovery paths and logs.
    pub bucket: String,
    /// Key prefix the mount root maps to: empty, or ending with `/`.
    pub prefix: String,
    pub uid: u32,
    pub gid: u32,
    pub file_mode: u16,
    pub dir_mode: u16,
    /// How long attributes and directory entries are trusted before asking the server again.
    pub attr_ttl: Duration,
    /// Holds `staging/` (files being written) and `recovery/` (data of failed uploads).
    pub cache_dir: PathBuf,
    pub read_only: bool,
    /// Keep modes, owners, mtimes and symbolic links in object metadata.
    pub metadata: bool,
    pub upload: UploadConfig,
    /// Memory for cached object data, in bytes.
    pub cache_memory: u64,
    /// Local disk for cached object data under `cache_dir/blocks`, in bytes (0: none).
    pub cache_disk: u64,
}

/// Attributes of a file or directory, as the kernel needs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: Kind,
    pub size: u64,
    pub mtime: SystemTime,
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone)]
pub struct DirEntry {
    pub ino: u64,
    pub kind: Kind,
    pub name: String,
}

/// Open flags the core cares about.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenMode {
    pub write: bool,
    pub truncate: bool,
}

impl OpenMode {
    pub fn from_flags(flags: i32) -> Self {
        Self {
            write: flags & libc::O_ACCMODE != libc::O_RDONLY,
            truncate: flags & libc::O_TRUNC != 0,
        }
    }
}

/// What a mount is doing, for `supamount status`.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct FsStats {
    pub open_files: usize,
    /// Files with written data the server does not have yet, and their size.
    pub pending_uploads: usize,
    pub pending_bytes: u64,
    pub parts_in_flight: usize,
    pub cache_memory_used: u64,
    pub cache_memory_budget: u64,
    pub cache_disk_used: u64,
    /// Operations that failed, by the level they were logged at.
    pub warnings: u64,
    pub errors: u64,
}

/// What the filesystem reports to statfs: large fixed figures, since a bucket has no fixed
/// capacity and tools refuse to write to a disk that looks full.
#[derive(Debug, Clone, Copy)]
pub struct StatFs {
    pub blocks: u64,
    pub bfree: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
}

enum Handle {
    Dir(Arc<Vec<DirEntry>>),
    File(Arc<FileHandle>),
}

struct FileHandle {
    open: Arc<OpenFile>,
    writable: bool,
    reader: Reader,
    /// The process that opened it, when known (see [`Fs::flush`]).
    opener: std::sync::OnceLock<u32>,
}

/// The filesystem over one bucket (or prefix of it).
pub struct Fs {
    store: Arc<dyn ObjectStore>,
    cache: Arc<BlockCache>,
    uploads: Uploads,
    cfg: FsConfig,
    mounted_at: SystemTime,
    inodes: Mutex<InodeTable>,
    handles: Mutex<HashMap<u64, Handle>>,
    open_files: Mutex<HashMap<u64, Arc<OpenFile>>>,
    next_fh: AtomicU64,
    staging_seq: AtomicU64,
    /// Keys already reported as unshowable, so each is logged once.
    warned: Mutex<HashSet<String>>,
    warnings: AtomicU64,
    errors: AtomicU64,
    stat_ahead: StatAhead,
    /// This filesystem, for background work that outlives a request (stat-ahead).
    me: Weak<Fs>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The tables stay consistent between statements, so a panic elsewhere leaves them usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Fs {
    pub fn new(store: Arc<dyn ObjectStore>, cfg: FsConfig) -> FsResult<Arc<Self>> {
        let staging = cfg.cache_dir.join("staging");
        std::fs::create_dir_all(&staging)
            .map_err(|e| FsError::local(format!("creating {}", staging.display()), e))?;
        let mounted_at = SystemTime::now();
        let uploads = Uploads {
            store: store.clone(),
            permits: Arc::new(tokio::sync::Semaphore::new(cfg.upload.concurrency.max(1))),
            config: cfg.upload,
            keep_meta: cfg.metadata,
        };
        let disk = match cfg.cache_disk {
            0 => None,
            size => {
                let dir = cfg.cache_dir.join("blocks");
                let tier = DiskTier::open(&dir, size)
                    .map_err(|e| FsError::local(format!("preparing {}", dir.display()), e))?;
                Some(tier)
            }
        };
        Ok(Arc::new_cyclic(|me| Self {
            cache: Arc::new(BlockCache::with_disk(cfg.cache_memory, disk)),
            store,
            uploads,
            cfg,
            mounted_at,
            inodes: Mutex::new(InodeTable::new(mounted_at)),
            handles: Mutex::new(HashMap::new()),
            open_files: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            staging_seq: AtomicU64::new(0),
            warned: Mutex::new(HashSet::new()),
            warnings: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            stat_ahead: StatAhead::default(),
            me: me.clone(),
        }))
    }

    pub fn config(&self) -> &FsConfig {
        &self.cfg
    }

    /// Count a failed operation (the adapter logs it).
    pub fn note_failure(&self, level: Level) {
        match level {
            Level::Debug => {}
            Level::Warn => {
                self.warnings.fetch_add(1, Ordering::Relaxed);
            }
            Level::Error => {
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub fn stats(&self) -> FsStats {
        let open: Vec<Arc<OpenFile>> = lock(&self.open_files).values().cloned().collect();
        let pending: Vec<u64> = open
            .iter()
            .filter_map(|o| o.staging())
            .filter(|s| s.is_dirty())
            .map(|s| s.size())
            .collect();
        FsStats {
            open_files: open.len(),
            pending_uploads: pending.len(),
            pending_bytes: pending.iter().sum(),
            parts_in_flight: self
                .cfg
                .upload
                .concurrency
                .max(1)
                .saturating_sub(self.uploads.permits.available_permits()),
            cache_memory_used: self.cache.used(),
            cache_memory_budget: self.cache.budget(),
            cache_disk_used: self.cache.disk_used(),
            warnings: self.warnings.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }

    pub fn attr_ttl(&self) -> Duration {
        self.cfg.attr_ttl
    }

    // ----- paths and keys -----

    fn key(&self, path: &str) -> String {
        format!("{}{}", self.cfg.prefix, path)
    }

    /// The listing prefix of a directory path.
    fn dir_prefix(&self, path: &str) -> String {
        if path.is_empty() {
            self.cfg.prefix.clone()
        } else {
            format!("{}{}/", self.cfg.prefix, path)
        }
    }

    fn node(&self, ino: u64) -> FsResult<Node> {
        lock(&self.inodes)
            .get(ino)
            .cloned()
            .ok_or(FsError::NotFound)
    }

    fn path_of(&self, ino: u64) -> FsResult<String> {
        Ok(self.node(ino)?.path)
    }

    fn dir_path(&self, ino: u64) -> FsResult<String> {
        let node = self.node(ino)?;
        if node.kind != Kind::Dir {
            return Err(FsError::NotDir);
        }
        Ok(node.path)
    }

    fn fresh_until(&self) -> Instant {
        Instant::now() + self.cfg.attr_ttl
    }

    fn attr_of(&self, ino: u64, node: &Node) -> Attr {
        let staging = self.open_file(ino).and_then(|o| o.staging());
        let (meta, mtime, size) = match &staging {
            Some(staging) => {
                let (meta, written) = staging.meta();
                (meta, meta.mtime.unwrap_or(written), staging.size())
            }
            None => (node.meta, node.meta.mtime.unwrap_or(node.mtime), node.size),
        };
        let (default_perm, size) = match node.kind {
            Kind::Dir => (self.cfg.dir_mode, 0),
            Kind::File => (self.cfg.file_mode, size),
            Kind::Symlink => (0o777, size),
        };
        Attr {
            ino,
            kind: node.kind,
            size,
            mtime,
            perm: meta.perm().unwrap_or(default_perm),
            uid: meta.uid.unwrap_or(self.cfg.uid),
            gid: meta.gid.unwrap_or(self.cfg.gid),
        }
    }

    /// Whether the cached metadata of `node` can be shown without asking the server.
    fn meta_fresh(&self, node: &Node) -> bool {
        !self.cfg.metadata || node.meta_until > Instant::now()
    }

    fn open_file(&self, ino: u64) -> Option<Arc<OpenFile>> {
        lock(&self.open_files).get(&ino).cloned()
    }

    fn is_staged(&self, ino: u64) -> bool {
        self.open_file(ino).is_some_and(|o| o.staging().is_some())
    }

    fn observe(&self, path: &str, seen: Observed) -> Attr {
        let mut inodes = lock(&self.inodes);
        let ino = inodes.observe(path, seen, self.fresh_until());
        let node = inodes.get(ino).cloned().expect("just observed");
        drop(inodes);
        self.attr_of(ino, &node)
    }

    fn warn_once(&self, key: &str, message: &str) {
        if lock(&self.warned).insert(key.to_string()) {
            tracing::warn!(key, "{message}");
        }
    }

    fn check_writable(&self) -> FsResult<()> {
        if self.cfg.read_only {
            Err(FsError::ReadOnly)
        } else {
            Ok(())
        }
    }

    /// `dir/name`, if the name and the key it makes (plus `below` more bytes) are not longer
    /// than the server allows.
    fn path_within_limits(&self, dir: &str, name: &str, below: usize) -> FsResult<String> {
        if name.len() > MAX_NAME_BYTES {
            return Err(FsError::NameTooLong("a name is longer than 255 bytes"));
        }
        let path = child_path(dir, name);
        if self.key(&path).len() + below > MAX_KEY_BYTES {
            return Err(FsError::NameTooLong(
                "the object key would be longer than 1024 bytes",
            ));
        }
        Ok(path)
    }

    /// A new name `name` in the directory at `dir`: its path, if the name and the keys it
    /// makes are ones the server can hold.
    fn new_path(&self, dir: &str, name: &str, kind: Kind) -> FsResult<String> {
        // A directory's longest key of its own is its placeholder.
        let below = match kind {
            Kind::Dir => 1 + FOLDER_PLACEHOLDER.len(),
            Kind::File | Kind::Symlink => 0,
        };
        let path = self.path_within_limits(dir, name, below)?;
        check_new_name(name).map_err(|reason| FsError::InvalidName {
            name: name.to_string(),
            reason,
        })?;
        Ok(path)
    }

    // ----- resolving paths against the server -----

    /// What `path` is on the server right now: a directory if any key lies under `path/`,
    /// else a file if the key exists.
    async fn resolve(&self, path: &str) -> FsResult<Option<Observed>> {
        let key = self.key(path);
        let under = format!("{key}/");
        let (head, listing) = tokio::join!(
            self.store.head(&key),
            self.store.list_page(&under, None, None, 1)
        );
        let listing = listing?;
        if !listing.objects.is_empty() || !listing.prefixes.is_empty() {
            if head.is_ok() {
                self.warn_once(&key, "object hidden by a directory of the same name");
            }
            return Ok(Some(Observed {
                kind: Kind::Dir,
                size: 0,
                mtime: self.mounted_at,
                etag: None,
                meta: self.dir_meta(&under).await?,
            }));
        }
        match head {
            Ok(info) => Ok(Some(self.observed_object(info))),
            Err(StoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// What a HEAD says about an object: a file, or a symbolic link if its metadata says so.
    fn observed_object(&self, info: crate::store::ObjectInfo) -> Observed {
        let meta = self
            .cfg
            .metadata
            .then(|| PosixMeta::from_user_meta(&info.metadata));
        let link = meta.is_some_and(|m| m.is_symlink());
        Observed {
            kind: if link { Kind::Symlink } else { Kind::File },
            size: info.size,
            mtime: info.last_modified.unwrap_or(self.mounted_at),
            etag: info.etag,
            meta,
        }
    }

    /// A directory's metadata lives on its placeholder object, when it has one.
    async fn dir_meta(&self, prefix: &str) -> FsResult<Option<PosixMeta>> {
        if !self.cfg.metadata {
            return Ok(None);
        }
        match self
            .store
            .head(&format!("{prefix}{FOLDER_PLACEHOLDER}"))
            .await
        {
            Ok(info) => Ok(Some(PosixMeta::from_user_meta(&info.metadata))),
            Err(StoreError::NotFound { .. }) => Ok(Some(PosixMeta::default())),
            Err(e) => Err(e.into()),
        }
    }

    /// Attributes of `path`: cached while fresh, local while staged, else from the server.
    async fn stat_path(&self, path: &str) -> FsResult<Option<Attr>> {
        if let Some((ino, node)) = self.cached(path) {
            if self.trusted(ino, &node) {
                return Ok(Some(self.attr_of(ino, &node)));
            }
            if node.valid_until > Instant::now() && node.kind != Kind::Dir {
                // Listed moments ago as an object: only its metadata is missing.
                self.stat_ahead.wait(path).await;
                if let Some((ino, node)) = self.cached(path) {
                    if self.trusted(ino, &node) {
                        return Ok(Some(self.attr_of(ino, &node)));
                    }
                }
                self.read_metadata_ahead(parent_path(path), path);
                match self.store.head(&self.key(path)).await {
                    Ok(info) => return Ok(Some(self.observe(path, self.observed_object(info)))),
                    Err(StoreError::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        match self.resolve(path).await? {
            Some(seen) => Ok(Some(self.observe(path, seen))),
            None => {
                lock(&self.inodes).detach(path);
                Ok(None)
            }
        }
    }

    fn cached(&self, path: &str) -> Option<(u64, Node)> {
        let inodes = lock(&self.inodes);
        let ino = inodes.ino_of(path)?;
        Some((ino, inodes.get(ino)?.clone()))
    }

    /// Whether the cached attributes of `node` can be shown without asking the server: they
    /// are local (staged), or fresh with their metadata.
    fn trusted(&self, ino: u64, node: &Node) -> bool {
        self.is_staged(ino) || (node.valid_until > Instant::now() && self.meta_fresh(node))
    }

    /// Whether the metadata of `ino` is known well enough for a listing to show it.
    fn meta_complete(&self, ino: u64, node: &Node) -> bool {
        self.meta_fresh(node) || self.is_staged(ino)
    }

    /// Read the metadata of the other files of the listing of `dir` in the background (see
    /// `stat_ahead.rs`), once per listing.
    fn read_metadata_ahead(&self, dir: &str, except: &str) {
        let paths = self.stat_ahead.start(dir, except);
        if paths.is_empty() {
            return;
        }
        let Some(fs) = self.me.upgrade() else {
            paths.iter().for_each(|p| self.stat_ahead.done(p));
            return;
        };
        tokio::spawn(async move {
            futures::stream::iter(paths)
                .for_each_concurrent(stat_ahead::CONCURRENCY, |path| {
                    let fs = &fs;
                    async move {
                        let head = fs.store.head(&fs.key(&path)).await;
                        // Only if the path still names the object version that was listed: a
                        // slow answer must not undo a change made meanwhile (a write, a rename).
                        let listed = {
                            let inodes = lock(&fs.inodes);
                            let ino = inodes.ino_of(&path);
                            ino.and_then(|i| inodes.get(i).map(|n| (i, n.etag.clone())))
                        };
                        if let (Ok(info), Some((ino, etag))) = (head, listed) {
                            if etag.is_some() && info.etag == etag && !fs.is_staged(ino) {
                                fs.observe(&path, fs.observed_object(info));
                            }
                        }
                        fs.stat_ahead.done(&path);
                    }
                })
                .await;
        });
    }

    // ----- namespace operations -----

    pub async fn lookup(&self, parent: u64, name: &str) -> FsResult<Attr> {
        let path = self.path_within_limits(&self.dir_path(parent)?, name, 0)?;
        // Names the server cannot hold cannot exist there; skip the requests.
        if name == FOLDER_PLACEHOLDER || !is_listable(name) || first_refused_char(name).is_some() {
            return Err(FsError::NotFound);
        }
        let attr = self.stat_path(&path).await?.ok_or(FsError::NotFound)?;
        lock(&self.inodes).add_lookup(attr.ino);
        Ok(attr)
    }

    pub fn forget(&self, ino: u64, n: u64) {
        let keep = self.open_file(ino).is_some();
        lock(&self.inodes).forget(ino, n, keep);
    }

    pub async fn getattr(&self, ino: u64) -> FsResult<Attr> {
        let path = self.path_of(ino)?;
        if ino == ROOT_INO {
            let node = self.node(ino)?;
            return Ok(self.attr_of(ino, &node));
        }
        let attr = self.stat_path(&path).await?.ok_or(FsError::NotFound)?;
        if attr.ino != ino {
            // The path now names something else (another client replaced it).
            return Err(FsError::NotFound);
        }
        Ok(attr)
    }

    /// Truncate, and change modes, owners and the mtime. Those are kept in the object's
    /// metadata (a directory's on its placeholder) and changed in place on the server, without
    /// sending the data again; with metadata off they are accepted and not kept.
    pub async fn setattr(&self, ino: u64, size: Option<u64>, change: MetaChange) -> FsResult<Attr> {
        if let Some(size) = size {
            self.check_writable()?;
            if self.node(ino)?.kind == Kind::Dir {
                return Err(FsError::IsDir);
            }
            match self.open_file(ino).and_then(|o| o.staging()) {
                Some(staging) => staging.truncate(size).await?,
                None => self.truncate_closed(ino, size).await?,
            }
        }
        if !change.is_empty() {
            self.check_writable()?;
            self.change_meta(ino, &change).await?;
        }
        self.getattr(ino).await
    }

    async fn change_meta(&self, ino: u64, change: &MetaChange) -> FsResult<()> {
        if !self.cfg.metadata {
            return Ok(());
        }
        let node = self.node(ino)?;
        let file_type = match node.kind {
            Kind::File => S_IFREG,
            Kind::Dir => S_IFDIR,
            Kind::Symlink => S_IFLNK,
        };
        if let Some(open) = self.open_file(ino) {
            if let Some(staging) = open.staging() {
                let _upload = open.upload.lock().await;
                let (mut meta, _) = staging.meta();
                meta.apply(change, file_type);
                staging.set_meta(meta);
                if staging.is_dirty() {
                    // The upload at close carries it.
                    return Ok(());
                }
            }
        }
        if ino == ROOT_INO {
            // The mount's root has no object to keep it in: it holds for this mount only.
            if let Some(root) = lock(&self.inodes).get_mut(ino) {
                root.meta.apply(change, file_type);
            }
            return Ok(());
        }
        // Apply the change to what the object records now, not to a listing's guess.
        let attr = self.stat_path(&node.path).await?.ok_or(FsError::NotFound)?;
        let mut meta = self.node(attr.ino)?.meta;
        meta.apply(change, file_type);
        let stored = meta.to_user_meta();
        if node.kind == Kind::Dir {
            let placeholder = format!("{}{FOLDER_PLACEHOLDER}", self.dir_prefix(&node.path));
            match self.store.replace_metadata(&placeholder, &stored).await {
                // A directory that exists only through the keys below it gets a placeholder.
                Err(StoreError::NotFound { .. }) => {
                    self.store.put(&placeholder, Bytes::new(), &stored).await?;
                }
                other => other?,
            }
        } else {
            self.store
                .replace_metadata(&self.key(&node.path), &stored)
                .await?;
        }
        let until = self.fresh_until();
        if let Some(node) = lock(&self.inodes).get_mut(attr.ino) {
            node.meta = meta;
            node.meta_until = until;
            // The REPLACE made a new version, whose Last-Modified only the server knows.
            node.meta_version = None;
        }
        Ok(())
    }

    /// `truncate -s` on a file nobody has open: stage, change, upload, close.
    async fn truncate_closed(&self, ino: u64, size: u64) -> FsResult<()> {
        let fh = self
            .open(
                ino,
                OpenMode {
                    write: true,
                    truncate: size == 0,
                },
            )
            .await?;
        let result = async {
            let staging = self
                .file_handle(fh)?
                .open
                .staging()
                .ok_or(FsError::BadHandle(fh))?;
            staging.truncate(size).await?;
            self.flush(fh, None).await
        }
        .await;
        let released = self.release(fh).await;
        result.and(released)
    }

    /// The metadata a new object of `file_type` gets, and what is sent for it.
    fn new_meta(&self, file_type: u32, mode: u32) -> (Option<PosixMeta>, UserMeta) {
        if !self.cfg.metadata {
            return (None, UserMeta::new());
        }
        let meta = PosixMeta {
            mode: Some(file_type | (mode & meta::PERM_BITS)),
            ..Default::default()
        };
        (Some(meta), meta.to_user_meta())
    }

    pub async fn mkdir(&self, parent: u64, name: &str, mode: u32) -> FsResult<Attr> {
        self.check_writable()?;
        let path = self.new_path(&self.dir_path(parent)?, name, Kind::Dir)?;
        if self.stat_path(&path).await?.is_some() {
            return Err(FsError::Exists);
        }
        let placeholder = format!("{}/{FOLDER_PLACEHOLDER}", self.key(&path));
        let (meta, stored) = self.new_meta(S_IFDIR, mode);
        self.store.put(&placeholder, Bytes::new(), &stored).await?;
        let attr = self.observe(
            &path,
            Observed {
                kind: Kind::Dir,
                size: 0,
                mtime: SystemTime::now(),
                etag: None,
                meta,
            },
        );
        lock(&self.inodes).add_lookup(attr.ino);
        Ok(attr)
    }

    pub async fn unlink(&self, parent: u64, name: &str) -> FsResult<()> {
        self.check_writable()?;
        let path = child_path(&self.dir_path(parent)?, name);
        let attr = self.stat_path(&path).await?.ok_or(FsError::NotFound)?;
        if attr.kind == Kind::Dir {
            return Err(FsError::IsDir);
        }
        if let Some(open) = self.open_file(attr.ino) {
            open.unlinked.store(true, Ordering::Release);
        }
        self.store.delete(&self.key(&path)).await?;
        lock(&self.inodes).detach(&path);
        Ok(())
    }

    pub async fn rmdir(&self, parent: u64, name: &str) -> FsResult<()> {
        self.check_writable()?;
        let path = child_path(&self.dir_path(parent)?, name);
        let attr = self.stat_path(&path).await?.ok_or(FsError::NotFound)?;
        if attr.kind != Kind::Dir {
            return Err(FsError::NotDir);
        }
        if self.dir_has_entries(&path).await? {
            return Err(FsError::NotEmpty);
        }
        let prefix = self.dir_prefix(&path);
        let placeholder = format!("{prefix}{FOLDER_PLACEHOLDER}");
        self.store.delete(&placeholder).await?;
        self.store.delete(&prefix).await?;
        lock(&self.inodes).detach(&path);
        Ok(())
    }

    /// Files created below `dir` that exist only locally so far.
    fn local_children(&self, dir: &str) -> Vec<(u64, String)> {
        let open: Vec<u64> = lock(&self.open_files).keys().copied().collect();
        let inodes = lock(&self.inodes);
        open.into_iter()
            .filter_map(|ino| inodes.get(ino).map(|n| (ino, n.path.clone())))
            .filter(|(ino, path)| parent_path(path) == dir && inodes.ino_of(path) == Some(*ino))
            .collect()
    }

    fn has_local_children(&self, dir: &str) -> bool {
        !self.local_children(dir).is_empty()
    }

    /// Rename a file: server-side copy, then delete of the old key.
    pub async fn rename(
        &self,
        parent: u64,
        name: &str,
        new_parent: u64,
        new_name: &str,
        flags: u32,
    ) -> FsResult<()> {
        self.check_writable()?;
        if flags & RENAME_EXCHANGE != 0 {
            return Err(FsError::Invalid(
                "RENAME_EXCHANGE cannot be done atomically on S3",
            ));
        }
        let from = child_path(&self.dir_path(parent)?, name);
        let source = self.stat_path(&from).await?.ok_or(FsError::NotFound)?;
        let to = self.new_path(&self.dir_path(new_parent)?, new_name, source.kind)?;
        if from == to {
            // As rename(2) says; a copy onto itself followed by a delete would lose it.
            return if flags & RENAME_NOREPLACE != 0 {
                Err(FsError::Exists)
            } else {
                Ok(())
            };
        }
        if source.kind == Kind::Dir {
            return self.rename_dir(&from, &to, flags).await;
        }
        let target = self.stat_path(&to).await?;
        if let Some(target) = &target {
            if flags & RENAME_NOREPLACE != 0 {
                return Err(FsError::Exists);
            }
            if target.kind == Kind::Dir {
                return Err(FsError::IsDir);
            }
        }
        // Data still staged must be on the server before it can be copied there.
        if let Some(open) = self.open_file(source.ino) {
            self.upload_staged(&open, true).await?;
        }
        let (from_key, to_key) = (self.key(&from), self.key(&to));
        // A rename keeps the mtime; one the object does not record yet is its Last-Modified,
        // which the copy would change.
        let keep_mtime = match self.node(source.ino) {
            Ok(node) if self.cfg.metadata && node.meta.mtime.is_none() => Some(
                PosixMeta {
                    mtime: Some(node.mtime),
                    ..node.meta
                }
                .to_user_meta(),
            ),
            _ => None,
        };
        self.store
            .copy(&from_key, &to_key, keep_mtime.as_ref())
            .await?;
        // A file replaced while open for writing has no name any more: what its handles still
        // write must not overwrite the file renamed onto its old name.
        if let Some(open) = target.and_then(|t| self.open_file(t.ino)) {
            open.unlinked.store(true, Ordering::Release);
        }
        self.store.delete(&from_key).await?;
        let mut inodes = lock(&self.inodes);
        inodes.rename(&from, &to);
        if let Some(node) = inodes.get_mut(source.ino) {
            node.valid_until = Instant::now() + self.cfg.attr_ttl;
        }
        Ok(())
    }

    /// Rename a directory: every key below it is copied to the new name, then deleted, a few
    /// at a time. S3 has no atomic rename, so an interruption leaves some objects under each
    /// name (at most the few in flight under both). The same `mv` then fails with ENOTEMPTY as
    /// POSIX requires (the new name is a non-empty directory); moving the remaining entries
    /// (`mv OLD/* NEW/`) finishes it.
    async fn rename_dir(&self, from: &str, to: &str, flags: u32) -> FsResult<()> {
        if to.starts_with(&format!("{from}/")) {
            return Err(FsError::Invalid("cannot move a directory into itself"));
        }
        if let Some(target) = self.stat_path(to).await? {
            if flags & RENAME_NOREPLACE != 0 {
                return Err(FsError::Exists);
            }
            if target.kind != Kind::Dir {
                return Err(FsError::NotDir);
            }
            if self.dir_has_entries(to).await? {
                return Err(FsError::NotEmpty);
            }
        }
        let below = format!("{from}/");
        let staged: Vec<Arc<OpenFile>> = {
            let open: Vec<Arc<OpenFile>> = lock(&self.open_files).values().cloned().collect();
            let inodes = lock(&self.inodes);
            open.into_iter()
                .filter(|o| {
                    inodes
                        .get(o.ino)
                        .is_some_and(|n| n.path.starts_with(&below))
                })
                .collect()
        };
        for open in staged {
            self.upload_staged(&open, true).await?;
        }
        let (from_prefix, to_prefix) = (self.dir_prefix(from), self.dir_prefix(to));
        let keys = self.all_keys(&from_prefix).await?;
        tracing::info!(from, to, objects = keys.len(), "renaming a directory");
        futures::stream::iter(keys)
            .map(|key| {
                let target = format!("{to_prefix}{}", &key[from_prefix.len()..]);
                async move {
                    self.store.copy(&key, &target, None).await?;
                    self.store.delete(&key).await
                }
            })
            .buffer_unordered(DIR_RENAME_CONCURRENCY)
            .try_collect::<()>()
            .await?;
        lock(&self.inodes).rename_tree(from, to);
        Ok(())
    }

    /// Every key below `prefix`, all pages.
    async fn all_keys(&self, prefix: &str) -> FsResult<Vec<String>> {
        let (mut keys, mut token) = (Vec::new(), None);
        loop {
            let page = self
                .store
                .list_page(prefix, None, token, crate::store::MAX_KEYS_PER_PAGE)
                .await?;
            keys.extend(page.objects.into_iter().map(|o| o.key));
            token = page.next_token;
            if token.is_none() {
                return Ok(keys);
            }
        }
    }

    /// Whether a directory holds anything but its placeholder or marker.
    async fn dir_has_entries(&self, path: &str) -> FsResult<bool> {
        let prefix = self.dir_prefix(path);
        let placeholder = format!("{prefix}{FOLDER_PLACEHOLDER}");
        // At most the marker, the placeholder and one more key decide emptiness.
        let page = self.store.list_page(&prefix, None, None, 3).await?;
        let others = page
            .objects
            .iter()
            .any(|o| o.key != prefix && o.key != placeholder);
        Ok(others || !page.prefixes.is_empty() || self.has_local_children(path))
    }

    pub fn statfs(&self) -> StatFs {
        StatFs {
            blocks: 1 << 40,
            bfree: 1 << 40,
            files: 1 << 32,
            ffree: 1 << 32,
            bsize: 4096,
            namelen: crate::names::MAX_NAME_BYTES as u32,
        }
    }

    // ----- directories -----

    pub async fn opendir(&self, ino: u64) -> FsResult<u64> {
        let path = self.dir_path(ino)?;
        let prefix = self.dir_prefix(&path);
        let (listed, skipped) =
            dir::list_dir(self.store.as_ref(), &prefix, self.mounted_at).await?;
        for key in &skipped.unlistable {
            self.warn_once(
                key,
                "key skipped: it cannot be a file name (empty, '.', '..' or over 255 bytes)",
            );
        }
        for key in &skipped.shadowed {
            self.warn_once(key, "object hidden by a directory of the same name");
        }
        let parent_ino = {
            let inodes = lock(&self.inodes);
            inodes.ino_of(parent_path(&path)).unwrap_or(ROOT_INO)
        };
        let mut entries = vec![
            DirEntry {
                ino,
                kind: Kind::Dir,
                name: ".".into(),
            },
            DirEntry {
                ino: parent_ino,
                kind: Kind::Dir,
                name: "..".into(),
            },
        ];
        let mut names = HashSet::new();
        let mut without_meta = Vec::new();
        for item in listed {
            let child = child_path(&path, &item.name);
            let attr = self.observe_listed(&child, item.seen);
            let complete = self
                .node(attr.ino)
                .is_ok_and(|node| self.meta_complete(attr.ino, &node));
            if attr.kind != Kind::Dir && !complete {
                without_meta.push(child.clone());
            }
            names.insert(item.name.clone());
            entries.push(DirEntry {
                ino: attr.ino,
                kind: attr.kind,
                name: item.name,
            });
        }
        self.stat_ahead.listed(&path, without_meta);
        for (child_ino, child) in self.local_children(&path) {
            let name = child.rsplit('/').next().unwrap_or(&child).to_string();
            if !names.contains(&name) {
                entries.push(DirEntry {
                    ino: child_ino,
                    kind: Kind::File,
                    name,
                });
            }
        }
        Ok(self.add_handle(Handle::Dir(Arc::new(entries))))
    }

    /// A listing refreshes cached attributes, except those of files staged locally.
    fn observe_listed(&self, path: &str, seen: Observed) -> Attr {
        let staged = {
            let inodes = lock(&self.inodes);
            inodes.ino_of(path).filter(|&ino| self.is_staged(ino))
        };
        match staged {
            Some(ino) => {
                let node = self.node(ino).expect("staged nodes stay in the table");
                self.attr_of(ino, &node)
            }
            None => self.observe(path, seen),
        }
    }

    /// The listing taken at opendir; readdir offsets are positions in it.
    pub fn readdir(&self, fh: u64) -> FsResult<Arc<Vec<DirEntry>>> {
        match lock(&self.handles).get(&fh) {
            Some(Handle::Dir(entries)) => Ok(entries.clone()),
            _ => Err(FsError::BadHandle(fh)),
        }
    }

    /// Attributes of a listed entry as the listing left them, without asking the server
    /// (readdirplus), and whether they are complete. A listing carries no metadata, so with
    /// metadata kept an entry is complete only if its metadata was read recently; the kernel
    /// should then not cache the others, and look them up when it needs them.
    pub fn listed_attr(&self, ino: u64) -> Option<(Attr, bool)> {
        let node = lock(&self.inodes).get(ino).cloned()?;
        Some((self.attr_of(ino, &node), self.meta_complete(ino, &node)))
    }

    /// The kernel took a reference to `ino` without a lookup (a readdirplus entry).
    pub fn hold(&self, ino: u64) {
        lock(&self.inodes).add_lookup(ino);
    }

    pub fn releasedir(&self, fh: u64) {
        lock(&self.handles).remove(&fh);
    }

    fn add_handle(&self, handle: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles).insert(fh, handle);
        fh
    }

    fn file_handle(&self, fh: u64) -> FsResult<Arc<FileHandle>> {
        match lock(&self.handles).get(&fh) {
            Some(Handle::File(h)) => Ok(h.clone()),
            _ => Err(FsError::BadHandle(fh)),
        }
    }

    // ----- files -----

    /// Create and open a new, empty file; it reaches the server when first flushed.
    pub async fn create(&self, parent: u64, name: &str, mode: u32) -> FsResult<(Attr, u64)> {
        self.check_writable()?;
        let path = self.new_path(&self.dir_path(parent)?, name, Kind::File)?;
        let attr = self.observe(
            &path,
            Observed {
                kind: Kind::File,
                size: 0,
                mtime: SystemTime::now(),
                etag: None,
                meta: Some(self.new_meta(S_IFREG, mode).0.unwrap_or_default()),
            },
        );
        let fh = self
            .open(
                attr.ino,
                OpenMode {
                    write: true,
                    truncate: true,
                },
            )
            .await?;
        lock(&self.inodes).add_lookup(attr.ino);
        Ok((attr, fh))
    }

    /// A symbolic link: an object holding the target, marked as a link by its metadata, so
    /// that other clients see the target as the content. Needs metadata.
    pub async fn symlink(&self, parent: u64, name: &str, target: &[u8]) -> FsResult<Attr> {
        self.check_writable()?;
        if !self.cfg.metadata {
            return Err(FsError::NotPermitted(
                "symbolic links need object metadata, which this mount does not keep",
            ));
        }
        let path = self.new_path(&self.dir_path(parent)?, name, Kind::Symlink)?;
        let target = Bytes::copy_from_slice(target);
        self.put_new(&path, Kind::Symlink, S_IFLNK | 0o777, target)
            .await
    }

    /// Write a new small object at `path` (a symbolic link, an empty file) and show it.
    async fn put_new(&self, path: &str, kind: Kind, mode: u32, body: Bytes) -> FsResult<Attr> {
        if self.stat_path(path).await?.is_some() {
            return Err(FsError::Exists);
        }
        let (meta, stored) = self.new_meta(mode & S_IFMT, mode);
        let size = body.len() as u64;
        let etag = self.store.put(&self.key(path), body, &stored).await?;
        let seen = Observed {
            kind,
            size,
            mtime: SystemTime::now(),
            etag,
            meta,
        };
        let attr = self.observe(path, seen);
        lock(&self.inodes).add_lookup(attr.ino);
        Ok(attr)
    }

    pub async fn readlink(&self, ino: u64) -> FsResult<Bytes> {
        let node = self.node(ino)?;
        if node.kind != Kind::Symlink {
            return Err(FsError::Invalid("not a symbolic link"));
        }
        if node.size == 0 {
            return Ok(Bytes::new());
        }
        let got = self
            .store
            .get_range(&self.key(&node.path), 0, node.size)
            .await?;
        Ok(got.data)
    }

    /// mknod: regular files only (an empty object); devices, fifos and sockets cannot be
    /// objects.
    pub async fn mknod(&self, parent: u64, name: &str, mode: u32) -> FsResult<Attr> {
        if mode & S_IFMT != S_IFREG && mode & S_IFMT != 0 {
            return Err(FsError::NotPermitted(
                "only regular files can be created with mknod here",
            ));
        }
        self.check_writable()?;
        let path = self.new_path(&self.dir_path(parent)?, name, Kind::File)?;
        let mode = S_IFREG | (mode & meta::PERM_BITS);
        self.put_new(&path, Kind::File, mode, Bytes::new()).await
    }

    pub async fn open(&self, ino: u64, mode: OpenMode) -> FsResult<u64> {
        Ok(self.open_keeping_cache(ino, mode).await?.0)
    }

    /// Open, and say whether the kernel may keep the pages it cached for this file: only for
    /// reading a file whose ETag has not changed since it was last opened.
    pub async fn open_keeping_cache(&self, ino: u64, mode: OpenMode) -> FsResult<(u64, bool)> {
        let fh = self.open_handle(ino, mode).await?;
        let mut inodes = lock(&self.inodes);
        let Some(node) = inodes.get_mut(ino) else {
            return Ok((fh, false));
        };
        let unchanged = node.etag.is_some() && node.etag == node.opened_etag;
        node.opened_etag = if mode.write { None } else { node.etag.clone() };
        Ok((fh, unchanged && !mode.write && !self.is_staged(ino)))
    }

    async fn open_handle(&self, ino: u64, mode: OpenMode) -> FsResult<u64> {
        let mut node = self.node(ino)?;
        match node.kind {
            Kind::Dir => return Err(FsError::IsDir),
            // The kernel follows links itself; only O_PATH-like opens could get here.
            Kind::Symlink => return Err(FsError::Invalid("a symbolic link cannot be opened")),
            Kind::File => {}
        }
        if mode.write {
            self.check_writable()?;
            let on_server = node.etag.is_some();
            if on_server && !self.meta_fresh(&node) && !self.is_staged(ino) {
                // The upload will carry the metadata: start from what the object has now.
                self.stat_path(&node.path).await?;
                node = self.node(ino)?;
            }
        }
        let open = {
            let mut open_files = lock(&self.open_files);
            let open = open_files
                .entry(ino)
                .or_insert_with(|| Arc::new(OpenFile::new(ino)))
                .clone();
            open.handles.fetch_add(1, Ordering::AcqRel);
            open
        };
        let prepared = if mode.write {
            self.prepare_staging(&open, &node, mode.truncate).await
        } else {
            Ok(())
        };
        if let Err(e) = prepared {
            self.drop_open_ref(&open);
            return Err(e);
        }
        let reader = Reader::new(self.key(&node.path), node.size, node.etag.clone());
        let handle = FileHandle {
            open,
            writable: mode.write,
            reader,
            opener: std::sync::OnceLock::new(),
        };
        Ok(self.add_handle(Handle::File(Arc::new(handle))))
    }

    /// Make sure writes to `open` have a local copy to go to: fetched from the server unless
    /// the open truncates.
    async fn prepare_staging(&self, open: &OpenFile, node: &Node, truncate: bool) -> FsResult<()> {
        let _upload = open.upload.lock().await;
        if let Some(staging) = open.staging() {
            if truncate {
                staging.truncate(0).await?;
            }
            return Ok(());
        }
        let name = format!(
            "{}-{}",
            std::process::id(),
            self.staging_seq.fetch_add(1, Ordering::Relaxed)
        );
        let staging =
            Staging::create(self.cfg.cache_dir.join("staging").join(name), &self.uploads)?;
        let mut meta = node.meta;
        if truncate {
            meta.mtime = None;
        }
        staging.set_meta(meta);
        if truncate {
            staging.mark_dirty();
        } else if node.size > 0 {
            self.download_into(&staging, &self.key(&node.path), node.size)
                .await?;
        }
        open.set_staging(Arc::new(staging));
        Ok(())
    }

    async fn download_into(&self, staging: &Staging, key: &str, size: u64) -> FsResult<()> {
        let reader = Reader::new(key.to_string(), size, None);
        let mut offset = 0;
        while offset < size {
            let chunk = reader
                .read(&self.store, &self.cache, offset, 8 << 20)
                .await?;
            if chunk.is_empty() {
                return Err(FsError::Stale);
            }
            let len = chunk.len() as u64;
            staging.fill(offset, chunk).await?;
            offset += len;
        }
        Ok(())
    }

    pub async fn read(&self, fh: u64, offset: u64, size: u32) -> FsResult<Bytes> {
        let handle = self.file_handle(fh)?;
        if let Some(staging) = handle.open.staging() {
            return staging.read_at(offset, size).await;
        }
        (handle.reader)
            .read(&self.store, &self.cache, offset, size)
            .await
    }

    pub async fn write(&self, fh: u64, offset: u64, data: Vec<u8>) -> FsResult<u32> {
        let handle = self.file_handle(fh)?;
        if !handle.writable {
            return Err(FsError::BadHandle(fh));
        }
        let staging = handle.open.staging().ok_or(FsError::BadHandle(fh))?;
        let key = self.key(&self.path_of(handle.open.ino)?);
        staging.write_at(&key, offset, data).await
    }

    /// fsync(): the staged data is on the server when this returns Ok.
    pub async fn fsync(&self, fh: u64) -> FsResult<()> {
        let handle = self.file_handle(fh)?;
        self.upload_staged(&handle.open, true).await
    }

    /// Remember which process opened `fh` (its process id, not a thread id).
    pub fn set_opener(&self, fh: u64, process: u32) {
        if let Ok(handle) = self.file_handle(fh) {
            let _ = handle.opener.set(process);
        }
    }

    /// close() of one descriptor, by `process` if known: like fsync, except when another
    /// process than the one that opened the file closes it: a child that inherited the
    /// descriptor and closes it at exec or exit. Uploading then would publish a partial file
    /// and end a streaming upload halfway; the writer's own close (or release) uploads.
    pub async fn flush(&self, fh: u64, process: Option<u32>) -> FsResult<()> {
        let handle = self.file_handle(fh)?;
        if !handle.writable {
            // A reader's close never publishes what a writer has not closed yet.
            return Ok(());
        }
        let opener = handle.opener.get().copied();
        if let (Some(opener), Some(closer)) = (opener, process) {
            if opener != closer {
                tracing::debug!(
                    fh,
                    opener,
                    closer,
                    "close by another process; upload left to the writer"
                );
                return Ok(());
            }
        }
        self.upload_staged(&handle.open, true).await
    }

    pub async fn release(&self, fh: u64) -> FsResult<()> {
        let handle = match lock(&self.handles).remove(&fh) {
            Some(Handle::File(h)) => h,
            _ => return Err(FsError::BadHandle(fh)),
        };
        let result = if handle.writable {
            self.upload_staged(&handle.open, false).await
        } else {
            Ok(())
        };
        self.drop_open_ref(&handle.open);
        result
    }

    fn drop_open_ref(&self, open: &Arc<OpenFile>) {
        let mut open_files = lock(&self.open_files);
        if open.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            open_files.remove(&open.ino);
        }
    }

    /// Upload the staged copy if it has changes the server lacks. After a failure the same
    /// data is retried only when `retry` is set (fsync and close do; release does not: close
    /// has already reported the failure and the data is kept).
    async fn upload_staged(&self, open: &OpenFile, retry: bool) -> FsResult<()> {
        let mut failed = open.upload.lock().await;
        let Some(staging) = open.staging() else {
            return Ok(());
        };
        if !staging.is_dirty() {
            return Ok(());
        }
        let generation = staging.generation();
        if open.unlinked.load(Ordering::Acquire) {
            staging.abandon(generation).await;
            return Ok(());
        }
        let same_data_failed = failed.as_ref().filter(|f| f.generation == generation);
        if let (Some(earlier), false) = (same_data_failed, retry) {
            return Err(FsError::local(
                format!(
                    "upload failed earlier; data kept in {}",
                    earlier.copy.display()
                ),
                std::io::Error::from_raw_os_error(libc::EIO),
            ));
        }
        let path = self.path_of(open.ino)?;
        let key = self.key(&path);
        let size = staging.size();
        let started = Instant::now();
        match staging.upload(&key, generation).await {
            Ok(finished) => {
                tracing::debug!(
                    key,
                    size,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "uploaded"
                );
                let (meta, _) = staging.meta();
                let wanted = meta.to_user_meta();
                if self.cfg.metadata && finished.meta != wanted {
                    // A multipart upload takes its metadata when it starts; a chmod or
                    // utimens came later.
                    self.store.replace_metadata(&key, &wanted).await?;
                }
                self.observe(
                    &path,
                    Observed {
                        kind: Kind::File,
                        size,
                        mtime: SystemTime::now(),
                        etag: finished.etag,
                        meta: self.cfg.metadata.then_some(meta),
                    },
                );
                if let Some(old) = failed.take() {
                    tracing::info!(key, recovery = %old.copy.display(), "upload succeeded on retry; the earlier recovery copy is no longer needed");
                }
                Ok(())
            }
            Err(err) => {
                if failed.as_ref().is_none_or(|f| f.generation != generation) {
                    *failed = self
                        .keep_recovery_copy(&staging, generation, &key, &path, &err)
                        .await;
                } else {
                    tracing::warn!(key, error = %err, "upload retry failed; the recovery copy is still kept");
                }
                Err(match err {
                    UploadError::Store(e) => FsError::Store(e),
                    UploadError::Staging(e) => {
                        FsError::local(format!("reading staged data of {key}"), e)
                    }
                    UploadError::TooLarge { .. } => FsError::local(
                        err.to_string(),
                        std::io::Error::from_raw_os_error(libc::EFBIG),
                    ),
                })
            }
        }
    }

    /// Copy staged data whose upload failed to the recovery directory, and say where.
    async fn keep_recovery_copy(
        &self,
        staging: &Staging,
        generation: u64,
        key: &str,
        path: &str,
        err: &UploadError,
    ) -> Option<FailedUpload> {
        let (source, dir) = (
            staging.path().to_path_buf(),
            self.cfg.cache_dir.join("recovery"),
        );
        let (bucket, owned_key) = (self.cfg.bucket.clone(), key.to_string());
        let saved = tokio::task::spawn_blocking(move || {
            save_recovery_copy(&source, &dir, &bucket, &owned_key)
        })
        .await
        .unwrap_or_else(|join| Err(std::io::Error::other(join)));
        match saved {
            Ok(copy) => {
                tracing::error!(
                    key, path, error = %err, recovery = %copy.display(),
                    "upload failed; the written data is kept in the recovery copy"
                );
                Some(FailedUpload { copy, generation })
            }
            Err(e) => {
                tracing::error!(
                    key, path, error = %err, staging = %staging.path().display(),
                    "upload failed and the recovery copy could not be written: {e}"
                );
                None
            }
        }
    }

    /// Upload whatever is still staged, at unmount.
    pub async fn shutdown(&self) {
        let open: Vec<Arc<OpenFile>> = lock(&self.open_files).values().cloned().collect();
        for file in open {
            if let Err(e) = self.upload_staged(&file, true).await {
                tracing::error!(ino = file.ino, error = %e, "data of an open file could not be uploaded at unmount");
            }
        }
    }
}

#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod tests;
