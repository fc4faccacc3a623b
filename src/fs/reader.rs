//! Reading an object that is not staged locally: ranged GETs pinned to the ETag of the first
//! answer, with a simple read-ahead window that doubles while reads stay sequential.

use bytes::Bytes;

use super::error::{FsError, FsResult};
use crate::store::ObjectStore;

const MIN_WINDOW: u64 = 1024 * 1024;
const MAX_WINDOW: u64 = 16 * 1024 * 1024;
/// The kernel sends read-ahead requests concurrently, so they may arrive slightly out of
/// order; reads landing this close to the buffer still count as sequential.
const SEQUENTIAL_SLACK: u64 = 4 * 1024 * 1024;

#[derive(Debug)]
pub struct Reader {
    key: String,
    size: u64,
    etag: Option<String>,
    buf_start: u64,
    buf: Bytes,
    window: u64,
}

impl Reader {
    /// `size` is the object's size when it was opened; `etag`, if known, pins the version.
    pub fn new(key: String, size: u64, etag: Option<String>) -> Self {
        Self {
            key,
            size,
            etag,
            buf_start: 0,
            buf: Bytes::new(),
            window: MIN_WINDOW,
        }
    }

    pub async fn read(
        &mut self,
        store: &dyn ObjectStore,
        offset: u64,
        len: u32,
    ) -> FsResult<Bytes> {
        if offset >= self.size || len == 0 {
            return Ok(Bytes::new());
        }
        let end = (offset + len as u64).min(self.size);
        let buf_end = self.buf_start + self.buf.len() as u64;
        if offset >= self.buf_start && end <= buf_end {
            return Ok(self.slice(offset, end));
        }
        let sequential = offset >= self.buf_start && offset <= buf_end + SEQUENTIAL_SLACK;
        self.window = if sequential && !self.buf.is_empty() {
            (self.window * 2).min(MAX_WINDOW)
        } else {
            MIN_WINDOW
        };
        let fetch_end = end.max(offset + self.window).min(self.size);
        let got = store.get_range(&self.key, offset, fetch_end).await?;
        match (&self.etag, got.etag) {
            (Some(pinned), Some(seen)) if *pinned != seen => {
                tracing::warn!(key = %self.key, "object changed on the server while open; failing the read");
                return Err(FsError::Stale);
            }
            (None, seen) => self.etag = seen,
            _ => {}
        }
        if (got.data.len() as u64) < end - offset {
            return Err(FsError::Stale);
        }
        self.buf_start = offset;
        self.buf = got.data;
        Ok(self.slice(offset, end))
    }

    fn slice(&self, start: u64, end: u64) -> Bytes {
        let from = (start - self.buf_start) as usize;
        let to = (end - self.buf_start) as usize;
        self.buf.slice(from..to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::{MemoryStore, Op};

    #[tokio::test]
    async fn sequential_reads_grow_the_window() {
        let store = MemoryStore::new();
        let data: Vec<u8> = (0..10 * 1024 * 1024).map(|i| (i % 253) as u8).collect();
        store.insert("f", data.clone());
        let mut reader = Reader::new("f".into(), data.len() as u64, None);
        let mut out = Vec::new();
        let mut offset = 0;
        while offset < data.len() as u64 {
            let chunk = reader.read(&store, offset, 128 * 1024).await.unwrap();
            offset += chunk.len() as u64;
            out.extend_from_slice(&chunk);
        }
        assert_eq!(out, data);
        // 1 + 2 + 4 + 8 MiB windows cover 10 MiB in four requests.
        assert_eq!(store.count(Op::Get), 4);
    }

    #[tokio::test]
    async fn end_of_file_and_empty_objects_need_no_request() {
        let store = MemoryStore::new();
        store.insert("empty", "");
        let mut reader = Reader::new("empty".into(), 0, None);
        assert!(reader.read(&store, 0, 4096).await.unwrap().is_empty());
        assert_eq!(store.count(Op::Get), 0);
    }

    #[tokio::test]
    async fn a_changed_object_fails_the_read() {
        let store = MemoryStore::new();
        store.insert("f", vec![1u8; 3 * 1024 * 1024]);
        let mut reader = Reader::new("f".into(), 3 * 1024 * 1024, None);
        reader.read(&store, 0, 4096).await.unwrap();
        store.insert("f", vec![2u8; 3 * 1024 * 1024]);
        let err = reader
            .read(&store, 2 * 1024 * 1024, 4096)
            .await
            .unwrap_err();
        assert!(matches!(err, FsError::Stale));
    }
}
