//! Reading an object that is not staged locally.
//!
//! Each open handle keeps a [`Reader`]. Reads are pinned to the ETag the object had at open
//! (or, if none was known, at the first GET), so a reader never gets a mix of two versions.
//!
//! Sequential reads go through the shared [`BlockCache`] and start a read-ahead window that
//! doubles with each sequential read, from [`INITIAL_WINDOW`] up to [`MAX_WINDOW`]; its blocks
//! are fetched in the background by several GETs at once. A read that jumps elsewhere resets
//! the window and fetches exactly the bytes asked for, uncached, so random access never
//! downloads what nobody reads. Read-ahead stops with the handle: it only ever runs ahead of
//! reads that arrive.
//!
//! The kernel sends several reads of one handle at once. The reader's state is locked only to
//! classify a read and plan its read-ahead; the data is awaited without the lock, so those
//! reads wait for their blocks together rather than one after another.

use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};

use super::error::{FsError, FsResult};
use crate::cache::{BlockCache, FetchError, Pinned, BLOCK_SIZE, MAX_RUN_BLOCKS};
use crate::store::ObjectStore;

/// The first read-ahead: small, because many files are read only in part.
const INITIAL_WINDOW: u64 = BLOCK_SIZE;
/// Enough GETs in flight to keep a fast link busy.
const MAX_WINDOW: u64 = 64 * 1024 * 1024;
/// The kernel's concurrent reads of one handle may arrive slightly out of order; once a
/// handle reads sequentially, reads landing this close to where the last one ended still
/// count as sequential.
const SEQUENTIAL_SLACK: u64 = 2 * 1024 * 1024;

#[derive(Debug)]
pub struct Reader {
    key: Arc<str>,
    size: u64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    etag: Option<Arc<str>>,
    /// Where the last read ended.
    next: u64,
    /// Whether the last read continued the one before: only then does a nearby read count as
    /// sequential too, so that two random reads that happen to land close together do not
    /// start read-ahead.
    streaming: bool,
    window: u64,
    /// Blocks below this index have been asked for already.
    prefetched_to: u64,
}

/// What one read does, decided under the lock.
enum Plan {
    /// Through the block cache, pinned to this version.
    Blocks(Pinned),
    /// One exact GET; the version is checked against this ETag if one is known.
    Direct(Option<Arc<str>>),
}

impl Reader {
    /// `size` is the object's size at open; `etag`, if known, pins the version.
    pub fn new(key: String, size: u64, etag: Option<String>) -> Self {
        Self {
            key: key.into(),
            size,
            state: Mutex::new(State {
                etag: etag.map(Into::into),
                next: 0,
                streaming: false,
                window: INITIAL_WINDOW,
                prefetched_to: 0,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub async fn read(
        &self,
        store: &Arc<dyn ObjectStore>,
        cache: &Arc<BlockCache>,
        offset: u64,
        len: u32,
    ) -> FsResult<Bytes> {
        if offset >= self.size || len == 0 {
            return Ok(Bytes::new());
        }
        let end = (offset + len as u64).min(self.size);
        match self.plan(store, cache, offset, end) {
            Plan::Blocks(object) => {
                let (first, last) = (offset / BLOCK_SIZE, (end - 1) / BLOCK_SIZE);
                let blocks = cache
                    .read_blocks(store, &object, first, last)
                    .await
                    .map_err(|e| self.fetch_failed(e))?;
                Ok(slice_blocks(&blocks, first, offset, end))
            }
            Plan::Direct(etag) => self.read_direct(store.as_ref(), etag, offset, end).await,
        }
    }

    /// Classify the read, and for a sequential one grow the window and ask for the blocks it
    /// covers that nobody asked for yet.
    fn plan(
        &self,
        store: &Arc<dyn ObjectStore>,
        cache: &Arc<BlockCache>,
        offset: u64,
        end: u64,
    ) -> Plan {
        let mut state = self.state();
        let near = offset >= state.next.saturating_sub(SEQUENTIAL_SLACK)
            && offset <= state.next + SEQUENTIAL_SLACK;
        let sequential = offset == state.next || (near && state.streaming);
        state.streaming = sequential;
        state.next = if sequential { state.next.max(end) } else { end };
        let Some(etag) = state.etag.clone().filter(|_| sequential) else {
            state.window = INITIAL_WINDOW;
            return Plan::Direct(state.etag.clone());
        };
        let object = Pinned {
            key: self.key.clone(),
            etag,
            size: self.size,
        };
        // Never let one reader's read-ahead take more than a quarter of the cache, or four
        // readers would evict each other's blocks before reading them.
        let cap = (cache.resting_budget() / 4).clamp(BLOCK_SIZE, MAX_WINDOW);
        state.window = (state.window * 2).min(cap);
        let from = state.prefetched_to.max(end.div_ceil(BLOCK_SIZE));
        let to = (end + state.window)
            .div_ceil(BLOCK_SIZE)
            .min(object.block_count());
        // Top the window up in whole runs: asking for the one block each read uncovers would
        // make every read a 1 MiB GET, and per-request costs (signing, the server's
        // checks) then take a large share of the time.
        let batch = (state.window / BLOCK_SIZE / 2).clamp(1, MAX_RUN_BLOCKS);
        if from < to && (to - from >= batch || to == object.block_count()) {
            state.prefetched_to = from + cache.prefetch(store, &object, from, to - 1);
        }
        Plan::Blocks(object)
    }

    /// One GET of exactly `offset..end`, checked against the pinned version (or pinning it).
    async fn read_direct(
        &self,
        store: &dyn ObjectStore,
        pinned: Option<Arc<str>>,
        offset: u64,
        end: u64,
    ) -> FsResult<Bytes> {
        let got = store.get_range(&self.key, offset, end).await?;
        if let Some(seen) = got.etag {
            let expected = match pinned {
                Some(etag) => etag,
                None => (self.state().etag)
                    .get_or_insert_with(|| seen.as_str().into())
                    .clone(),
            };
            if *expected != *seen {
                return Err(self.fetch_failed(FetchError::Changed {
                    expected: expected.to_string(),
                    seen,
                }));
            }
        }
        if (got.data.len() as u64) < end - offset {
            return Err(self.fetch_failed(FetchError::Short));
        }
        Ok(got.data)
    }

    fn fetch_failed(&self, err: FetchError) -> FsError {
        if matches!(err, FetchError::Changed { .. } | FetchError::Short) {
            tracing::warn!(key = %self.key, error = %err, "object changed on the server while open; failing the read");
        }
        FsError::Fetch(err)
    }
}

/// Bytes `offset..end` out of consecutive blocks starting at block `first`.
fn slice_blocks(blocks: &[Bytes], first: u64, offset: u64, end: u64) -> Bytes {
    let base = first * BLOCK_SIZE;
    if blocks.len() == 1 {
        return blocks[0].slice((offset - base) as usize..(end - base) as usize);
    }
    let mut out = BytesMut::with_capacity((end - offset) as usize);
    for (i, block) in blocks.iter().enumerate() {
        let block_start = base + i as u64 * BLOCK_SIZE;
        let from = offset.saturating_sub(block_start).min(block.len() as u64) as usize;
        let to = (end - block_start).min(block.len() as u64) as usize;
        out.extend_from_slice(&block[from..to]);
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::{MemoryStore, Op};

    fn setup(
        data: &[u8],
    ) -> (
        Arc<MemoryStore>,
        Arc<dyn ObjectStore>,
        Arc<BlockCache>,
        Reader,
    ) {
        let store = Arc::new(MemoryStore::new());
        store.insert("f", data.to_vec());
        let dyn_store: Arc<dyn ObjectStore> = store.clone();
        let cache = Arc::new(BlockCache::new(256 << 20));
        let reader = Reader::new("f".into(), data.len() as u64, None);
        (store, dyn_store, cache, reader)
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 253) as u8).collect()
    }

    #[tokio::test]
    async fn sequential_reads_return_exact_bytes_with_few_requests() {
        let data = pattern(40 * 1024 * 1024 + 123);
        // The kernel's read sizes: 128 KiB by default, 1 MiB with a raised read-ahead.
        for read_size in [128 * 1024, 1024 * 1024] {
            let (store, s, cache, reader) = setup(&data);
            let mut out = Vec::new();
            while out.len() < data.len() {
                let chunk = reader
                    .read(&s, &cache, out.len() as u64, read_size)
                    .await
                    .unwrap();
                assert!(!chunk.is_empty());
                out.extend_from_slice(&chunk);
                // Let read-ahead run, as it would between a real reader's requests.
                tokio::task::yield_now().await;
            }
            assert_eq!(out, data);
            // Read-ahead makes the 41 to 321 reads a handful of GETs.
            let gets = store.count(Op::Get);
            assert!(
                gets <= 12,
                "{gets} GETs for 41 MiB in {read_size}-byte reads"
            );
        }
    }

    #[tokio::test]
    async fn a_long_sequential_read_fetches_whole_runs_of_blocks() {
        // Long enough for the window to stop growing: from then on each read uncovers one
        // more block, which must not become a GET of its own.
        let data = pattern(96 * 1024 * 1024);
        let (store, s, cache, reader) = setup(&data);
        let mut offset = 0;
        while offset < data.len() {
            let chunk = reader
                .read(&s, &cache, offset as u64, BLOCK_SIZE as u32)
                .await
                .unwrap();
            assert_eq!(&chunk[..], &data[offset..offset + chunk.len()]);
            offset += chunk.len();
            tokio::task::yield_now().await;
        }
        let gets = store.count(Op::Get);
        assert!(gets <= 20, "{gets} GETs for 96 one-block reads");
    }

    #[tokio::test]
    async fn random_reads_fetch_only_what_is_read() {
        let data = pattern(40 * 1024 * 1024);
        let (store, s, cache, reader) = setup(&data);
        // A fixed shuffle of 4 KiB reads all over the object, never two in a row.
        let offsets: Vec<u64> = (0..200u64)
            .map(|i| (i * 7_919 * 4096) % (40 << 20))
            .collect();
        for &offset in &offsets {
            let got = reader.read(&s, &cache, offset, 4096).await.unwrap();
            let end = (offset as usize + 4096).min(data.len());
            assert_eq!(&got[..], &data[offset as usize..end]);
        }
        let fetched = cache
            .stats
            .fetched_bytes
            .load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(fetched, 0, "nothing read through the block cache");
        assert_eq!(
            store.count(Op::Get),
            offsets.len() as u64,
            "one exact GET per read"
        );
    }

    #[tokio::test]
    async fn only_a_read_continuing_the_last_one_starts_read_ahead() {
        let data = pattern(40 * 1024 * 1024);
        let (store, s, cache, reader) = setup(&data);
        let fetched = || {
            cache
                .stats
                .fetched_bytes
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        // Two random reads 1 MiB apart: near each other, but neither continues the other.
        for offset in [10 << 20, 11 << 20] {
            let got = reader.read(&s, &cache, offset, 4096).await.unwrap();
            assert_eq!(&got[..], &data[offset as usize..offset as usize + 4096]);
        }
        assert_eq!(fetched(), 0);
        assert_eq!(store.count(Op::Get), 2);
        // The next read starts where the last ended: a sequential reader now.
        let offset = (11 << 20) + 4096;
        let got = reader.read(&s, &cache, offset, 4096).await.unwrap();
        assert_eq!(&got[..], &data[offset as usize..offset as usize + 4096]);
        assert!(fetched() >= BLOCK_SIZE);
    }

    #[tokio::test]
    async fn two_readers_of_one_object_get_the_same_bytes() {
        let data = pattern(40 * 1024 * 1024);
        let (_, s, cache, a) = setup(&data);
        let b = Reader::new("f".into(), data.len() as u64, None);
        let (mut out_a, mut out_b) = (Vec::new(), Vec::new());
        while out_a.len() < data.len() {
            let (x, y) = tokio::join!(
                a.read(&s, &cache, out_a.len() as u64, 1 << 20),
                b.read(&s, &cache, out_b.len() as u64, 1 << 20)
            );
            out_a.extend_from_slice(&x.unwrap());
            out_b.extend_from_slice(&y.unwrap());
        }
        assert_eq!(out_a, data);
        assert_eq!(out_b, data);
    }

    #[tokio::test]
    async fn end_of_file_and_empty_objects_need_no_request() {
        let (store, s, cache, reader) = setup(b"");
        assert!(reader.read(&s, &cache, 0, 4096).await.unwrap().is_empty());
        assert_eq!(store.count(Op::Get), 0);
        let (store, s, cache, reader) = setup(b"abc");
        assert_eq!(&reader.read(&s, &cache, 1, 4096).await.unwrap()[..], b"bc");
        assert!(reader.read(&s, &cache, 3, 4096).await.unwrap().is_empty());
        assert_eq!(store.count(Op::Get), 1);
    }

    #[tokio::test]
    async fn a_changed_object_fails_the_read() {
        let data = pattern(3 * 1024 * 1024);
        let (store, s, cache, reader) = setup(&data);
        reader.read(&s, &cache, 0, 4096).await.unwrap();
        store.insert("f", vec![2u8; 3 * 1024 * 1024]);
        let err = reader
            .read(&s, &cache, 2 * 1024 * 1024 + 5, 4096)
            .await
            .unwrap_err();
        assert_eq!(err.errno(), libc::EIO);
    }
}
