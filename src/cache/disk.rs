//! The optional disk tier of the block cache: blocks that left memory stay on local disk, up to
//! a byte budget, so re-reading a large file does not go back to the server.
//!
//! Each block is one file named by a hash of (key, ETag, index). The tier starts empty at each
//! mount (the directory is cleared), because the index lives in memory only.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use lru::LruCache;
use md5::{Digest, Md5};

use super::BlockKey;

struct Index {
    lru: LruCache<BlockKey, u64>,
    bytes: u64,
}

pub struct DiskTier {
    dir: PathBuf,
    budget: u64,
    index: Mutex<Index>,
}

impl DiskTier {
    /// Use `dir` (created, and emptied of an earlier mount's blocks) for at most `budget` bytes.
    pub fn open(dir: &Path, budget: u64) -> std::io::Result<Self> {
        if dir.exists() {
            std::fs::remove_dir_all(dir)?;
        }
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            budget,
            index: Mutex::new(Index {
                lru: LruCache::unbounded(),
                bytes: 0,
            }),
        })
    }

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

    pub fn contains(&self, key: &BlockKey) -> bool {
        self.lock().lru.contains(key)
    }

    pub async fn get(&self, key: &BlockKey) -> Option<Bytes> {
        self.lock().lru.get(key)?;
        let path = self.path(key);
        match tokio::task::spawn_blocking(move || std::fs::read(path)).await {
            Ok(Ok(data)) => Some(Bytes::from(data)),
            _ => {
                self.forget(key);
                None
            }
        }
    }

    fn forget(&self, key: &BlockKey) {
        let mut index = self.lock();
        if let Some(len) = index.lru.pop(key) {
            index.bytes -= len;
        }
    }

    /// Store a block in the background; least recently used blocks go when over budget.
    pub fn put(self: &Arc<Self>, key: BlockKey, data: Bytes) {
        let len = data.len() as u64;
        if len > self.budget || self.contains(&key) {
            return;
        }
        let tier = self.clone();
        tokio::task::spawn_blocking(move || {
            let path = tier.path(&key);
            let temp = path.with_extension("tmp");
            if let Err(e) = std::fs::write(&temp, &data).and_then(|_| std::fs::rename(&temp, &path))
            {
                tracing::debug!(error = %e, "could not write a block to the disk cache");
                let _ = std::fs::remove_file(&temp);
                return;
            }
            let mut evicted = Vec::new();
            {
                let mut index = tier.lock();
                index.lru.put(key, len);
                index.bytes += len;
                while index.bytes > tier.budget {
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
                let _ = std::fs::remove_file(tier.path(&old));
            }
        });
    }

    pub fn used(&self) -> u64 {
        self.lock().bytes
    }
}
