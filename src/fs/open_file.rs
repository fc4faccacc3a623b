//! Open files: the local staging copy that writes go to, its upload on flush, and the
//! recovery copy kept when an upload fails.
//!
//! One [`OpenFile`] exists per inode while any handle is open, so every handle of a file sees
//! the same staged bytes. Writes and uploads are coordinated by generation numbers rather than
//! a lock held across the upload: a write bumps `write_gen`; an upload that started at
//! generation `g` marks `g` as uploaded when it succeeds, so a write that raced with it keeps
//! the file dirty.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;
use tokio::sync::Semaphore;

use super::error::{FsError, FsResult};
use super::meta::PosixMeta;
use crate::store::ObjectStore;
use crate::upload::{Finished, UploadConfig, UploadError, Writeback};

/// The local copy of a file being written.
pub struct Staging {
    file: Arc<File>,
    path: PathBuf,
    writeback: Writeback,
    /// A write that failed (a full staging disk): the staged data is then incomplete and must
    /// never become the object.
    write_error: Mutex<Option<i32>>,
    size: AtomicU64,
    write_gen: AtomicU64,
    uploaded_gen: AtomicU64,
    /// Modes, owners and an explicit mtime for the object, and when it was last written.
    meta: Mutex<(PosixMeta, SystemTime)>,
    /// Whether uploads carry `meta` (the mount keeps metadata).
    keep_meta: bool,
}

impl Staging {
    /// Create an empty staging file at `path`, readable only by the mounting user.
    pub fn create(path: PathBuf, uploads: &Uploads) -> FsResult<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| FsError::local(format!("creating {}", path.display()), e))?;
        let file = Arc::new(file);
        let writeback = Writeback::new(
            uploads.store.clone(),
            uploads.permits.clone(),
            uploads.config,
            file.clone(),
        );
        Ok(Self {
            file,
            path,
            writeback,
            write_error: Mutex::new(None),
            size: AtomicU64::new(0),
            write_gen: AtomicU64::new(0),
            uploaded_gen: AtomicU64::new(0),
            meta: Mutex::new((PosixMeta::default(), SystemTime::now())),
            keep_meta: uploads.keep_meta,
        })
    }

    /// The metadata the object should have, and the time of the last write.
    pub fn meta(&self) -> (PosixMeta, SystemTime) {
        *self.meta.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The metadata the next upload gives the object.
    pub fn set_meta(&self, meta: PosixMeta) {
        self.meta.lock().unwrap_or_else(|e| e.into_inner()).0 = meta;
        self.publish_meta(meta);
    }

    fn publish_meta(&self, meta: PosixMeta) {
        if self.keep_meta {
            self.writeback.set_meta(meta.to_user_meta());
        }
    }

    /// New data: an mtime set earlier no longer holds; the upload's time becomes the mtime.
    fn touched(&self) {
        let meta = {
            let mut guard = self.meta.lock().unwrap_or_else(|e| e.into_inner());
            guard.1 = SystemTime::now();
            if guard.0.mtime.take().is_none() {
                return;
            }
            guard.0
        };
        self.publish_meta(meta);
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    pub fn is_dirty(&self) -> bool {
        self.write_gen.load(Ordering::Acquire) != self.uploaded_gen.load(Ordering::Acquire)
    }

    /// The generation an upload starting now would make durable.
    pub fn generation(&self) -> u64 {
        self.write_gen.load(Ordering::Acquire)
    }

    /// Send everything up to `generation` to the server as `key`.
    pub async fn upload(&self, key: &str, generation: u64) -> Result<Finished, UploadError> {
        let write_error = *self.write_error.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(errno) = write_error {
            self.writeback.abandon().await;
            return Err(UploadError::Staging(std::io::Error::from_raw_os_error(
                errno,
            )));
        }
        let finished = self.writeback.finish(key, self.size(), generation).await?;
        self.mark_uploaded(generation);
        Ok(finished)
    }

    /// The file is gone: nothing more goes to the server.
    pub async fn abandon(&self, generation: u64) {
        self.writeback.abandon().await;
        self.mark_uploaded(generation);
    }

    fn mark_uploaded(&self, generation: u64) {
        self.uploaded_gen.fetch_max(generation, Ordering::AcqRel);
    }

    /// Something changed that must reach the server (a new file that is still empty counts).
    pub fn mark_dirty(&self) {
        self.write_gen.fetch_add(1, Ordering::AcqRel);
    }

    /// Write at `offset`; parts the writer has moved past start uploading as `key`. A failed
    /// write (full disk, too large) spoils the staged copy for good: it is never uploaded.
    pub async fn write_at(&self, key: &str, offset: u64, data: Vec<u8>) -> FsResult<u32> {
        let len = data.len() as u64;
        if let Err(e) = self.write_file(offset, data).await {
            *self.write_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.errno());
            return Err(e);
        }
        self.size.fetch_max(offset + len, Ordering::AcqRel);
        self.touched();
        let generation = self.write_gen.fetch_add(1, Ordering::AcqRel) + 1;
        self.writeback
            .wrote(key, offset, offset + len, generation)
            .await;
        Ok(len as u32)
    }

    async fn write_file(&self, offset: u64, data: Vec<u8>) -> FsResult<()> {
        let end = offset.saturating_add(data.len() as u64);
        if end > self.writeback.max_size() {
            return Err(FsError::local(
                format!(
                    "writing past {} bytes, the largest object",
                    self.writeback.max_size()
                ),
                std::io::Error::from_raw_os_error(libc::EFBIG),
            ));
        }
        let file = self.file.clone();
        run_blocking(&self.path, move || file.write_all_at(&data, offset)).await
    }

    pub async fn read_at(&self, offset: u64, len: u32) -> FsResult<Bytes> {
        let size = self.size();
        if offset >= size {
            return Ok(Bytes::new());
        }
        let len = (len as u64).min(size - offset) as usize;
        let file = self.file.clone();
        let data = run_blocking(&self.path, move || {
            let mut buf = vec![0u8; len];
            file.read_exact_at(&mut buf, offset)?;
            Ok(buf)
        })
        .await?;
        Ok(Bytes::from(data))
    }

    pub async fn truncate(&self, size: u64) -> FsResult<()> {
        let file = self.file.clone();
        run_blocking(&self.path, move || file.set_len(size)).await?;
        self.size.store(size, Ordering::Release);
        self.touched();
        let generation = self.write_gen.fetch_add(1, Ordering::AcqRel) + 1;
        self.writeback.truncated(size, generation).await;
        Ok(())
    }

    /// Append fetched bytes while filling the staging copy from the server.
    pub async fn fill(&self, offset: u64, data: Bytes) -> FsResult<()> {
        let file = self.file.clone();
        let end = offset + data.len() as u64;
        run_blocking(&self.path, move || file.write_all_at(&data, offset)).await?;
        self.size.fetch_max(end, Ordering::AcqRel);
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "could not remove a staging file");
        }
    }
}

async fn run_blocking<T: Send + 'static>(
    path: &Path,
    job: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> FsResult<T> {
    let context = || format!("staging file {}", path.display());
    tokio::task::spawn_blocking(job)
        .await
        .map_err(|e| FsError::local(context(), std::io::Error::other(e)))?
        .map_err(|e| FsError::local(context(), e))
}

/// What staging files need to upload: shared by every file of a mount.
#[derive(Clone)]
pub struct Uploads {
    pub store: Arc<dyn ObjectStore>,
    /// Bounds the parts in flight across the mount (each holds one part in memory).
    pub permits: Arc<Semaphore>,
    pub config: UploadConfig,
    /// Uploads carry the file's modes, owners and times as object metadata.
    pub keep_meta: bool,
}

/// An upload that failed, and where its data was kept.
#[derive(Debug)]
pub struct FailedUpload {
    pub copy: PathBuf,
    /// The staged generation that failed: the same data is not copied twice.
    pub generation: u64,
}

/// State shared by all handles of one inode.
pub struct OpenFile {
    pub ino: u64,
    /// Handles open on this inode; changed only under the filesystem's open-files lock.
    pub handles: AtomicUsize,
    staging: Mutex<Option<Arc<Staging>>>,
    /// Serialises uploads (and creating the staging copy); remembers the last failure.
    pub upload: tokio::sync::Mutex<Option<FailedUpload>>,
    /// Unlinked while open: its data must not be uploaded again.
    pub unlinked: AtomicBool,
}

impl OpenFile {
    pub fn new(ino: u64) -> Self {
        Self {
            ino,
            handles: AtomicUsize::new(0),
            staging: Mutex::new(None),
            upload: tokio::sync::Mutex::new(None),
            unlinked: AtomicBool::new(false),
        }
    }

    pub fn staging(&self) -> Option<Arc<Staging>> {
        self.staging
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_staging(&self, staging: Arc<Staging>) {
        *self.staging.lock().unwrap_or_else(|e| e.into_inner()) = Some(staging);
    }
}

/// Keep the staged bytes whose upload failed under `dir/<bucket>/<key>`; returns the path.
/// Later writes to the still-open file also reach this copy (it is the same file), so it holds
/// the newest data. An existing copy of the same key gets a numbered sibling instead of being replaced.
pub fn save_recovery_copy(
    staging: &Path,
    dir: &Path,
    bucket: &str,
    key: &str,
) -> std::io::Result<PathBuf> {
    let mut target = dir.join(bucket).join(key);
    if let Some(parent) = target.parent() {
        if std::fs::create_dir_all(parent).is_err() {
            // A recovery copy of a file named like one of the directories is in the way
            // (`a`, then `a/b`): keep this one under a flat name. `%` cannot occur in a key,
            // so the name stays unambiguous.
            let bucket_dir = dir.join(bucket);
            std::fs::create_dir_all(&bucket_dir)?;
            target = bucket_dir.join(key.replace('/', "%2F"));
        }
    }
    let mut candidate = target.clone();
    let mut n = 1;
    while candidate.exists() {
        candidate = PathBuf::from(format!("{}.{n}", target.display()));
        n += 1;
    }
    // A second name for the staged file costs no space and works on a full disk; a copy is
    // only needed when the recovery directory is on another filesystem.
    if std::fs::hard_link(staging, &candidate).is_err() {
        std::fs::copy(staging, &candidate)?;
    }
    Ok(candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uploads() -> Uploads {
        Uploads {
            store: Arc::new(crate::store::memory::MemoryStore::new()),
            permits: Arc::new(Semaphore::new(2)),
            config: UploadConfig::default(),
            keep_meta: true,
        }
    }

    #[test]
    fn a_recovery_copy_in_the_way_of_a_directory_gives_a_flat_name() {
        let dir = tempfile::tempdir().unwrap();
        let staged = dir.path().join("staged");
        std::fs::write(&staged, b"x").unwrap();
        let recovery = dir.path().join("recovery");
        let first = save_recovery_copy(&staged, &recovery, "b", "a").unwrap();
        let second = save_recovery_copy(&staged, &recovery, "b", "a/b").unwrap();
        assert_eq!(first, recovery.join("b/a"));
        assert_eq!(second, recovery.join("b/a%2Fb"));
        assert_eq!(std::fs::read(second).unwrap(), b"x");
    }

    #[tokio::test]
    async fn generations_track_dirtiness_across_a_racing_upload() {
        let dir = tempfile::tempdir().unwrap();
        let staging = Staging::create(dir.path().join("s"), &uploads()).unwrap();
        assert!(!staging.is_dirty());
        staging.write_at("k", 0, b"hello".to_vec()).await.unwrap();
        let uploading = staging.generation();
        staging.write_at("k", 5, b"!".to_vec()).await.unwrap();
        staging.mark_uploaded(uploading);
        assert!(
            staging.is_dirty(),
            "the write after the upload began is not durable"
        );
        staging.mark_uploaded(staging.generation());
        assert!(!staging.is_dirty());
        assert_eq!(&staging.read_at(0, 100).await.unwrap()[..], b"hello!");
    }

    #[tokio::test]
    async fn staging_file_is_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        drop(Staging::create(path.clone(), &uploads()).unwrap());
        assert!(!path.exists());
    }

    #[test]
    fn recovery_copies_never_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let staged = dir.path().join("staged");
        std::fs::write(&staged, b"data").unwrap();
        let rec = dir.path().join("recovery");
        let first = save_recovery_copy(&staged, &rec, "b", "a/k.txt").unwrap();
        let second = save_recovery_copy(&staged, &rec, "b", "a/k.txt").unwrap();
        assert_eq!(first, rec.join("b/a/k.txt"));
        assert_ne!(first, second);
        assert_eq!(std::fs::read(second).unwrap(), b"data");
    }
}
