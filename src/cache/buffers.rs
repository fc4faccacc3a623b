//! Reusable block buffers. A full block's memory goes back to a free list when the last
//! `Bytes` pointing into it is dropped, and the next fetch fills it again. The allocator never
//! sees blocks come and go, so the memory of blocks stays at the most that were alive at once.
//! Left to glibc's allocator, the same traffic leaves freed blocks scattered through its
//! per-thread heaps: four parallel 256 MiB reads left about 100 MiB more resident than the
//! 224 MiB the cache held.

use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;

pub struct BufferPool {
    size: usize,
    /// At most this many free buffers are kept; beyond that they go back to the allocator.
    keep: usize,
    free: Mutex<Vec<Vec<u8>>>,
}

impl BufferPool {
    /// A pool of buffers of `size` bytes, keeping up to `keep` of them when free.
    pub fn new(size: usize, keep: usize) -> Arc<Self> {
        Arc::new(Self {
            size,
            keep,
            free: Mutex::new(Vec::new()),
        })
    }

    /// An empty buffer with room for `len` bytes; a reused one when `len` is the pool's size.
    pub fn take(&self, len: usize) -> Vec<u8> {
        if len != self.size {
            return Vec::with_capacity(len);
        }
        let reused = self.free.lock().unwrap_or_else(|e| e.into_inner()).pop();
        reused.unwrap_or_else(|| Vec::with_capacity(self.size))
    }

    /// The buffer as `Bytes` that return it to the pool once dropped (if it is one of the
    /// pool's size).
    pub fn freeze(self: &Arc<Self>, buffer: Vec<u8>) -> Bytes {
        if buffer.capacity() != self.size {
            return Bytes::from(buffer);
        }
        Bytes::from_owner(Pooled {
            buffer,
            pool: Arc::downgrade(self),
        })
    }

    #[cfg(test)]
    fn free_count(&self) -> usize {
        self.free.lock().unwrap().len()
    }
}

struct Pooled {
    buffer: Vec<u8>,
    pool: Weak<BufferPool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buffer
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let Some(pool) = self.pool.upgrade() else {
            return;
        };
        let mut free = pool.free.lock().unwrap_or_else(|e| e.into_inner());
        if free.len() < pool.keep {
            let mut buffer = std::mem::take(&mut self.buffer);
            buffer.clear();
            free.push(buffer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_buffers_are_reused_once_every_reference_is_gone() {
        let pool = BufferPool::new(16, 2);
        let mut buffer = pool.take(16);
        let address = buffer.as_ptr();
        buffer.extend_from_slice(&[7; 16]);
        let bytes = pool.freeze(buffer);
        let slice = bytes.slice(4..8);
        drop(bytes);
        assert_eq!(pool.free_count(), 0, "a slice still points into it");
        assert_eq!(&slice[..], &[7; 4]);
        drop(slice);
        assert_eq!(pool.free_count(), 1);
        let again = pool.take(16);
        assert_eq!(again.as_ptr(), address);
        assert!(again.is_empty());
    }

    #[test]
    fn short_buffers_and_surplus_go_back_to_the_allocator() {
        let pool = BufferPool::new(16, 1);
        let short = pool.take(5);
        assert_eq!(short.capacity(), 5);
        drop(pool.freeze(short));
        assert_eq!(pool.free_count(), 0);
        let (a, b) = (pool.take(16), pool.take(16));
        drop((pool.freeze(a), pool.freeze(b)));
        assert_eq!(pool.free_count(), 1);
    }
}
