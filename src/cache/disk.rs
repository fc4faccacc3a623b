//! The optional disk tier of the block cache: blocks that left memory stay on local disk, up to
//! a byte budget, so re-reading a large file does not go back to the server.
//!
//! Each block is one file named by a hash of (key, ETag, index). The tier starts empty at each
//! mount (the directory is cleared), because the index lives in memory only.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use lru::LruCache;
use md5::{Digest, Md5};

use super::BlockKey;

struct Index {
    lru: LruCache<BlockKey, u64>,
    bytes: u64,
}

/// What the tier and its writer thread share.
struct Shared {
    dir: PathBuf,
    budget: u64,
    index: Mutex<Index>,
}

pub struct DiskTier {
    shared: Arc<Shared>,
    /// Blocks waiting for the writer. Bounded: when the disk is slower than the network,
    /// blocks are not written rather than held in memory outside the cache's budget.
    queue: SyncSender<(BlockKey, Bytes)>,
}

/// Blocks that may wait for the writer (16 MiB).
const QUEUE_BLOCKS: usize = 16;

impl DiskTier {
    /// Use `dir` (created, and emptied of an earlier mount's blocks) for at most `budget` bytes.
    pub fn open(dir: &Path, budget: u64) -> std::io::Result<Self> {
        if dir.exists() {
            std::fs::remove_dir_all(dir)?;
        }
        std::fs::create_dir_all(dir)?;
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            budget,
            index: Mutex::new(Index {
                lru: LruCache::unbounded(),
                bytes: 0,
            }),
        });
        let (queue, blocks) = sync_channel(QUEUE_BLOCKS);
        let writer = shared.clone();
        // One thread writes in turn; it ends when the tier is dropped and the queue closes.
        std::thread::Builder::new()
            .name("supamount-disk-cache".into())
            .spawn(move || {
                for (key, data) in blocks {
                    writer.write(key, data);
                }
            })?;
        Ok(Self { shared, queue })
    }

    pub fn contains(&self, key: &BlockKey) -> bool {
        self.shared.lock().lru.contains(key)
    }

    pub async fn get(&self, key: &BlockKey) -> Option<Bytes> {
        self.shared.lock().lru.get(key)?;
        let path = self.shared.path(key);
        match tokio::task::spawn_blocking(move || std::fs::read(path)).await {
            Ok(Ok(data)) => Some(Bytes::from(data)),
            _ => {
                self.shared.forget(key);
                None
            }
        }
    }

    /// Store a block in the background, unless the writer is too far behind; least recently
    /// used blocks go when over budget.
    pub fn put(&self, key: BlockKey, data: Bytes) {
        if data.len() as u64 > self.shared.budget || self.contains(&key) {
            return;
        }
        if let Err(TrySendError::Full(_)) = self.queue.try_send((key, data)) {
            tracing::trace!("the disk cache is behind; a block is not kept on disk");
        }
    }

    pub fn used(&self) -> u64 {
        self.shared.lock().bytes
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn path(&self, key: &BlockKey) -> PathBuf {
        let mut hash = Md5::new();
        hash.update(key.key.as_bytes());
        hash.update([0]);
        hash.update(key.etag.as_bytes());
        hash.update(key.index.to_le_bytes());
        self.dir.join(hex::encode(hash.finalize()))
    }

    fn forget(&self, key: &BlockKey) {
        let mut index = self.lock();
        if let Some(len) = index.lru.pop(key) {
            index.bytes -= len;
        }
    }

    fn write(&self, key: BlockKey, data: Bytes) {
        if self.lock().lru.contains(&key) {
            return;
        }
        let path = self.path(&key);
        let temp = path.with_extension("tmp");
        if let Err(e) = std::fs::write(&temp, &data).and_then(|_| std::fs::rename(&temp, &path)) {
            tracing::debug!(error = %e, "could not write a block to the disk cache");
            let _ = std::fs::remove_file(&temp);
            return;
        }
        let len = data.len() as u64;
        let mut evicted = Vec::new();
        {
            let mut index = self.lock();
            index.lru.put(key, len);
            index.bytes += len;
            while index.bytes > self.budget {
                match index.lru.pop_lru() {
                    Some((old, old_len)) => {
                        index.bytes -= old_len;
                        evicted.push(old);
                    }
                    None => break,
                }
            }
        }
        for old in evicted {
            let _ = std::fs::remove_file(self.path(&old));
        }
    }
}
