//! Uploading a staged file: one PutObject for small files, a multipart upload with parts sent
//! concurrently for larger ones. A failed multipart upload is aborted on the server, so no
//! partial object is ever completed.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use crate::store::{CompletedPart, ObjectStore, StoreError};

/// S3 never takes more than this many parts in one upload.
pub const MAX_PARTS: u64 = 10_000;
/// Smallest part Supabase's hosted storage accepts (all but the last part).
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// Start at 8 MiB: large enough to keep request overhead low, small enough to overlap well.
pub const DEFAULT_PART_SIZE: u64 = 8 * 1024 * 1024;

#[derive(Debug, Clone, Copy)]
pub struct UploadConfig {
    pub part_size: u64,
    /// Parts in flight at once; each holds one part in memory.
    pub concurrency: usize,
}

impl Default for UploadConfig {
    fn default() -> Self {
        Self {
            part_size: DEFAULT_PART_SIZE,
            concurrency: 4,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("reading the staged data: {0}")]
    Staging(#[source] std::io::Error),
}

/// The part size for an object of `size` bytes: the configured size, grown so that the object
/// fits in [`MAX_PARTS`] parts.
pub fn part_size_for(size: u64, configured: u64) -> u64 {
    let needed = size.div_ceil(MAX_PARTS);
    configured.max(needed).max(MIN_PART_SIZE)
}

/// Upload the first `size` bytes of `file` as the object `key`; returns the new ETag if known.
pub async fn upload_file(
    store: &dyn ObjectStore,
    key: &str,
    file: Arc<File>,
    size: u64,
    config: UploadConfig,
) -> Result<Option<String>, UploadError> {
    let part_size = part_size_for(size, config.part_size);
    if size <= part_size {
        let body = read_range(file, 0, size).await?;
        return Ok(store.put(key, body).await?);
    }
    let upload_id = store.create_multipart(key).await?;
    match upload_parts(store, key, &upload_id, file, size, part_size, config).await {
        Ok(parts) => Ok(store.complete_multipart(key, &upload_id, parts).await?),
        Err(err) => {
            if let Err(abort) = store.abort_multipart(key, &upload_id).await {
                tracing::warn!(key, error = %abort, "could not abort the failed multipart upload; the server drops it after about a day");
            }
            Err(err)
        }
    }
}

async fn upload_parts(
    store: &dyn ObjectStore,
    key: &str,
    upload_id: &str,
    file: Arc<File>,
    size: u64,
    part_size: u64,
    config: UploadConfig,
) -> Result<Vec<CompletedPart>, UploadError> {
    let count = size.div_ceil(part_size);
    let mut parts: Vec<CompletedPart> = futures::stream::iter(0..count)
        .map(|index| {
            let file = file.clone();
            async move {
                let start = index * part_size;
                let end = (start + part_size).min(size);
                let body = read_range(file, start, end - start).await?;
                let number = index as i32 + 1;
                let etag = store.upload_part(key, upload_id, number, body).await?;
                tracing::trace!(key, part = number, "part uploaded");
                Ok::<_, UploadError>(CompletedPart { number, etag })
            }
        })
        .buffer_unordered(config.concurrency.max(1))
        .try_collect()
        .await?;
    parts.sort_by_key(|p| p.number);
    Ok(parts)
}

/// Read `len` bytes at `offset` off the runtime's threads.
pub async fn read_range(file: Arc<File>, offset: u64, len: u64) -> Result<Bytes, UploadError> {
    tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; len as usize];
        file.read_exact_at(&mut buf, offset)?;
        Ok(Bytes::from(buf))
    })
    .await
    .map_err(|join| UploadError::Staging(std::io::Error::other(join)))?
    .map_err(UploadError::Staging)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::{MemoryStore, Op};
    use std::io::Write;

    fn staged(data: &[u8]) -> Arc<File> {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(data).unwrap();
        Arc::new(f)
    }

    #[test]
    fn part_size_grows_for_huge_objects() {
        assert_eq!(part_size_for(1, DEFAULT_PART_SIZE), DEFAULT_PART_SIZE);
        let huge = 200 * 1024 * 1024 * 1024;
        let part = part_size_for(huge, DEFAULT_PART_SIZE);
        assert!(huge.div_ceil(part) <= MAX_PARTS);
        assert!(part > DEFAULT_PART_SIZE);
    }

    #[tokio::test]
    async fn multipart_round_trip() {
        let store = MemoryStore::new();
        let data: Vec<u8> = (0..(20 * 1024 * 1024 + 7))
            .map(|i| (i % 251) as u8)
            .collect();
        let cfg = UploadConfig::default();
        upload_file(&store, "big", staged(&data), data.len() as u64, cfg)
            .await
            .unwrap();
        assert_eq!(store.object("big").unwrap(), &data[..]);
        assert_eq!(store.count(Op::UploadPart), 3);
        assert_eq!(store.count(Op::Put), 0);
    }

    #[tokio::test]
    async fn failed_part_aborts_and_completes_nothing() {
        let store = MemoryStore::new();
        store.fail_next(Op::UploadPart, 1);
        let data = vec![1u8; 17 * 1024 * 1024];
        let cfg = UploadConfig::default();
        let err = upload_file(&store, "big", staged(&data), data.len() as u64, cfg).await;
        assert!(err.is_err());
        assert_eq!(store.object("big"), None);
        assert_eq!(store.count(Op::AbortMultipart), 1);
        assert_eq!(store.open_uploads(), 0);
    }
}
