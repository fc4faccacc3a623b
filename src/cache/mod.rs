//! The block cache: object data in fixed 1 MiB blocks, in memory, under a byte budget.
//!
//! A block is keyed by (object key, ETag, block index), so a changed object never serves stale
//! bytes: its new ETag simply misses. Least recently used blocks go first when the budget is
//! full. Fetches are shared: while a block is being fetched, other readers of the same block
//! wait for that fetch instead of sending their own GET.
//!
//! The budget covers both the blocks at rest and the GETs in flight: an eighth of it is set
//! aside for read-ahead GETs, a quarter of that again for GETs of reads that found their block
//! neither cached nor coming (they wait for a permit), the rest holds blocks. Nothing else
//! holds object data for long, so the budget bounds the memory of reads however many files are
//! open. An optional disk tier ([`disk`]) keeps a copy of fetched blocks, for when they have
//! left memory.

mod buffers;
pub mod disk;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt, Shared};
use lru::LruCache;
use tokio::sync::Semaphore;

use self::buffers::BufferPool;
use crate::store::{ObjectStore, StoreError};

pub const BLOCK_SIZE: u64 = 1024 * 1024;
/// Longest run of blocks fetched with one GET: fewer requests, yet small enough that several
/// run at once.
pub const MAX_RUN_BLOCKS: u64 = 8;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BlockKey {
    pub key: Arc<str>,
    pub etag: Arc<str>,
    pub index: u64,
}

/// A fetch failure, shared by everyone who waited for the fetch.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    #[error("{0}")]
    Store(Arc<StoreError>),
    #[error("the object changed on the server (ETag {seen:?}, expected {expected:?})")]
    Changed { expected: String, seen: String },
    #[error("the object is shorter than when it was opened")]
    Short,
}

type Fetch = Shared<BoxFuture<'static, Result<Arc<Vec<Bytes>>, FetchError>>>;

struct Blocks {
    lru: LruCache<BlockKey, Bytes>,
    bytes: u64,
}

/// Counters for tests and the benchmark.
#[derive(Debug, Default)]
pub struct CacheStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub fetched_bytes: AtomicU64,
}

/// Who starts a fetch: a read waiting for its blocks, or read-ahead.
#[derive(Debug, Clone, Copy)]
enum Demand {
    Read,
    ReadAhead,
}

pub struct BlockCache {
    budget: u64,
    /// The part of the budget for blocks at rest; the rest is for GETs in flight.
    resting_budget: u64,
    disk: Option<Arc<disk::DiskTier>>,
    /// Blocks that read-ahead may have in flight at once, across all readers: without it, many
    /// readers' windows together could hold far more than the budget.
    prefetch_permits: Arc<Semaphore>,
    /// Blocks that reads waiting for them may have in flight at once. Separate from read-ahead's
    /// permits, which are held while read-ahead waits for fetches that reads started: one
    /// shared limit could then be held by waiters only.
    demand_permits: Arc<Semaphore>,
    demand_blocks: u32,
    blocks: Mutex<Blocks>,
    buffers: Arc<BufferPool>,
    in_flight: Mutex<HashMap<BlockKey, (u64, Fetch)>>,
    pub stats: CacheStats,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An object as a reader pinned it at open.
#[derive(Debug, Clone)]
pub struct Pinned {
    pub key: Arc<str>,
    pub etag: Arc<str>,
    pub size: u64,
}

impl Pinned {
    fn block_key(&self, index: u64) -> BlockKey {
        BlockKey {
            key: self.key.clone(),
            etag: self.etag.clone(),
            index,
        }
    }

    pub fn block_count(&self) -> u64 {
        self.size.div_ceil(BLOCK_SIZE)
    }
}

impl BlockCache {
    /// A cache holding at most `budget` bytes of blocks in memory, GETs in flight included.
    pub fn new(budget: u64) -> Self {
        Self::with_disk(budget, None)
    }

    /// Also keep up to the disk tier's budget of blocks on local disk.
    pub fn with_disk(budget: u64, disk: Option<disk::DiskTier>) -> Self {
        // An eighth of the budget keeps four 8 MiB GETs going at the default budget; at least
        // one run is allowed however small the budget. Reads that find their block neither
        // cached nor coming get a quarter of that: with many files open, the kernel's reads
        // in flight would otherwise each bring a block outside the budget.
        let prefetch_blocks = (budget / 8 / BLOCK_SIZE).max(MAX_RUN_BLOCKS);
        let demand_blocks = (prefetch_blocks / 4).max(2);
        Self {
            budget,
            resting_budget: budget.saturating_sub((prefetch_blocks + demand_blocks) * BLOCK_SIZE),
            disk: disk.map(Arc::new),
            prefetch_permits: Arc::new(Semaphore::new(prefetch_blocks as usize)),
            demand_permits: Arc::new(Semaphore::new(demand_blocks as usize)),
            demand_blocks: demand_blocks as u32,
            blocks: Mutex::new(Blocks {
                lru: LruCache::unbounded(),
                bytes: 0,
            }),
            buffers: BufferPool::new(BLOCK_SIZE as usize, (budget / BLOCK_SIZE) as usize),
            in_flight: Mutex::new(HashMap::new()),
            stats: CacheStats::default(),
        }
    }

    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// How many bytes of blocks memory holds at most, GETs in flight aside.
    pub fn resting_budget(&self) -> u64 {
        self.resting_budget
    }

    pub fn used(&self) -> u64 {
        lock(&self.blocks).bytes
    }

    pub fn disk_used(&self) -> u64 {
        self.disk.as_ref().map_or(0, |d| d.used())
    }

    /// Whether a block is in memory or on disk.
    fn holds(&self, key: &BlockKey) -> bool {
        lock(&self.blocks).lru.contains(key) || self.disk.as_ref().is_some_and(|d| d.contains(key))
    }

    fn get(&self, key: &BlockKey) -> Option<Bytes> {
        lock(&self.blocks).lru.get(key).cloned()
    }

    fn insert(&self, key: BlockKey, data: Bytes) {
        if let Some(disk) = &self.disk {
            disk.put(key.clone(), data.clone());
        }
        self.insert_memory(key, data);
    }

    fn insert_memory(&self, key: BlockKey, data: Bytes) {
        if self.resting_budget < data.len() as u64 {
            return;
        }
        let mut blocks = lock(&self.blocks);
        let len = data.len() as u64;
        if let Some(old) = blocks.lru.put(key, data) {
            blocks.bytes -= old.len() as u64;
        }
        blocks.bytes += len;
        while blocks.bytes > self.resting_budget {
            match blocks.lru.pop_lru() {
                Some((_, evicted)) => blocks.bytes -= evicted.len() as u64,
                None => break,
            }
        }
    }

    /// Blocks `first..=last` of `object`, from the cache or fetched (at most one GET per run of
    /// missing blocks, shared with concurrent readers).
    pub async fn read_blocks(
        self: &Arc<Self>,
        store: &Arc<dyn ObjectStore>,
        object: &Pinned,
        first: u64,
        last: u64,
    ) -> Result<Vec<Bytes>, FetchError> {
        let mut found: Vec<Option<Bytes>> = (first..=last)
            .map(|i| self.get(&object.block_key(i)))
            .collect();
        if let Some(disk) = &self.disk {
            for (i, slot) in (first..=last).zip(found.iter_mut()) {
                if slot.is_none() {
                    let key = object.block_key(i);
                    if let Some(data) = disk.get(&key).await {
                        self.insert_memory(key, data.clone());
                        *slot = Some(data);
                    }
                }
            }
        }
        let hits = found.iter().filter(|b| b.is_some()).count() as u64;
        self.stats.hits.fetch_add(hits, Ordering::Relaxed);
        if hits as usize == found.len() {
            return Ok(found.into_iter().flatten().collect());
        }
        let missing: Vec<u64> = (first..=last)
            .zip(&found)
            .filter(|(_, b)| b.is_none())
            .map(|(i, _)| i)
            .collect();
        self.stats
            .misses
            .fetch_add(missing.len() as u64, Ordering::Relaxed);
        for (index, fetch, run_first) in self.claim(store, object, &missing, Demand::Read) {
            let run = fetch.await?;
            let position = (index - first) as usize;
            found[position] = run.get((index - run_first) as usize).cloned();
        }
        found
            .into_iter()
            .map(|b| b.ok_or(FetchError::Short))
            .collect()
    }

    /// Start fetching blocks `first..=last` in the background if they are neither cached nor
    /// being fetched (read-ahead). Returns without waiting, and how many blocks it took on:
    /// fewer than asked when the read-ahead limit is reached, so the caller asks again later.
    pub fn prefetch(
        self: &Arc<Self>,
        store: &Arc<dyn ObjectStore>,
        object: &Pinned,
        first: u64,
        last: u64,
    ) -> u64 {
        let last = last.min(object.block_count().saturating_sub(1));
        if first > last {
            return 0;
        }
        // With few permits left, take whole runs or nothing: a sliver now would be a small
        // GET, while waiting for the next read lets a full run go.
        let wanted = last - first + 1;
        let available = self.prefetch_permits.available_permits() as u64;
        let take = if available >= wanted {
            wanted
        } else {
            available - available % MAX_RUN_BLOCKS
        };
        if take == 0 {
            return 0;
        }
        let last = first + take - 1;
        let Ok(permits) = self
            .prefetch_permits
            .clone()
            .try_acquire_many_owned((last - first + 1) as u32)
        else {
            return 0;
        };
        let missing: Vec<u64> = (first..=last)
            .filter(|&i| !self.holds(&object.block_key(i)))
            .collect();
        let fetches: Vec<Fetch> = self
            .claim(store, object, &missing, Demand::ReadAhead)
            .into_iter()
            .map(|(_, fetch, _)| fetch)
            .collect();
        tokio::spawn(async move {
            for fetch in fetches {
                let _ = fetch.await;
            }
            drop(permits);
        });
        last - first + 1
    }

    /// For each block in `indexes`, the fetch that will bring it: an existing one, or a new
    /// one covering a run of neighbouring blocks.
    fn claim(
        self: &Arc<Self>,
        store: &Arc<dyn ObjectStore>,
        object: &Pinned,
        indexes: &[u64],
        demand: Demand,
    ) -> Vec<(u64, Fetch, u64)> {
        let mut in_flight = lock(&self.in_flight);
        let mut out = Vec::with_capacity(indexes.len());
        let mut run: Vec<u64> = Vec::new();
        let flush = |run: &mut Vec<u64>,
                     out: &mut Vec<(u64, Fetch, u64)>,
                     in_flight: &mut HashMap<BlockKey, (u64, Fetch)>| {
            if run.is_empty() {
                return;
            }
            let (run_first, run_last) = (run[0], run[run.len() - 1]);
            let fetch = self.fetch_run(store.clone(), object.clone(), run_first, run_last, demand);
            for &i in run.iter() {
                in_flight.insert(object.block_key(i), (run_first, fetch.clone()));
                out.push((i, fetch.clone(), run_first));
            }
            run.clear();
        };
        for &i in indexes {
            if let Some((run_first, fetch)) = in_flight.get(&object.block_key(i)) {
                out.push((i, fetch.clone(), *run_first));
                continue;
            }
            let extends =
                run.last().is_some_and(|&l| l + 1 == i) && (run.len() as u64) < MAX_RUN_BLOCKS;
            if !extends {
                flush(&mut run, &mut out, &mut in_flight);
            }
            run.push(i);
        }
        flush(&mut run, &mut out, &mut in_flight);
        out
    }

    fn fetch_run(
        self: &Arc<Self>,
        store: Arc<dyn ObjectStore>,
        object: Pinned,
        first: u64,
        last: u64,
        demand: Demand,
    ) -> Fetch {
        let cache = self.clone();
        async move {
            // Read-ahead took its permits before it claimed the run.
            let _permits = match demand {
                Demand::Read => {
                    let blocks = ((last - first + 1) as u32).min(cache.demand_blocks);
                    cache.demand_permits.acquire_many(blocks).await.ok()
                }
                Demand::ReadAhead => None,
            };
            let result = cache.get_run(&*store, &object, first, last).await;
            let mut in_flight = lock(&cache.in_flight);
            for i in first..=last {
                in_flight.remove(&object.block_key(i));
            }
            result
        }
        .boxed()
        .shared()
    }

    async fn get_run(
        &self,
        store: &dyn ObjectStore,
        object: &Pinned,
        first: u64,
        last: u64,
    ) -> Result<Arc<Vec<Bytes>>, FetchError> {
        let start = first * BLOCK_SIZE;
        let end = ((last + 1) * BLOCK_SIZE).min(object.size);
        let expected = |i: u64| (((i + 1) * BLOCK_SIZE).min(end) - i * BLOCK_SIZE) as usize;
        let buffers = (first..=last)
            .map(|i| self.buffers.take(expected(i)))
            .collect();
        let got = store
            .get_into(&object.key, start, end, buffers)
            .await
            .map_err(|e| FetchError::Store(Arc::new(e)))?;
        if let Some(seen) = &got.etag {
            if **seen != *object.etag {
                return Err(FetchError::Changed {
                    expected: object.etag.to_string(),
                    seen: seen.clone(),
                });
            }
        }
        if (first..=last)
            .zip(&got.buffers)
            .any(|(i, b)| b.len() != expected(i))
        {
            return Err(FetchError::Short);
        }
        self.stats
            .fetched_bytes
            .fetch_add(end - start, Ordering::Relaxed);
        let blocks: Vec<Bytes> = got
            .buffers
            .into_iter()
            .map(|b| self.buffers.freeze(b))
            .collect();
        for (i, block) in (first..=last).zip(&blocks) {
            self.insert(object.block_key(i), block.clone());
        }
        Ok(Arc::new(blocks))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::{MemoryStore, Op};

    fn object(store: &MemoryStore, key: &str, size: usize) -> (Pinned, Vec<u8>) {
        let data: Vec<u8> = (0..size).map(|i| (i % 249) as u8).collect();
        store.insert(key, data.clone());
        let etag = format!(
            "\"{}\"",
            hex::encode(<md5::Md5 as md5::Digest>::digest(&data))
        );
        let pinned = Pinned {
            key: key.into(),
            etag: etag.into(),
            size: size as u64,
        };
        (pinned, data)
    }

    fn setup(budget: u64) -> (Arc<BlockCache>, Arc<MemoryStore>, Arc<dyn ObjectStore>) {
        let store = Arc::new(MemoryStore::new());
        let dyn_store: Arc<dyn ObjectStore> = store.clone();
        (Arc::new(BlockCache::new(budget)), store, dyn_store)
    }

    #[tokio::test]
    async fn a_cached_block_is_not_fetched_twice() {
        let (cache, store, s) = setup(64 << 20);
        let (obj, data) = object(&store, "f", 3 * BLOCK_SIZE as usize + 10);
        let blocks = cache.read_blocks(&s, &obj, 0, 3).await.unwrap();
        assert_eq!(blocks.concat(), data);
        assert_eq!(store.count(Op::Get), 1, "one run, one GET");
        cache.read_blocks(&s, &obj, 1, 2).await.unwrap();
        assert_eq!(store.count(Op::Get), 1);
    }

    #[tokio::test]
    async fn concurrent_readers_share_one_fetch() {
        let (cache, store, s) = setup(64 << 20);
        let (obj, _) = object(&store, "f", 2 * BLOCK_SIZE as usize);
        let (a, b) = tokio::join!(
            cache.read_blocks(&s, &obj, 0, 1),
            cache.read_blocks(&s, &obj, 0, 1)
        );
        assert_eq!(a.unwrap(), b.unwrap());
        assert_eq!(store.count(Op::Get), 1);
    }

    #[tokio::test]
    async fn budget_evicts_least_recently_used() {
        // Eight blocks are set aside for read-ahead, two for reads' own fetches, two stay for
        // blocks at rest.
        let (cache, store, s) = setup(12 * BLOCK_SIZE);
        assert_eq!(cache.resting_budget(), 2 * BLOCK_SIZE);
        let (obj, _) = object(&store, "f", 4 * BLOCK_SIZE as usize);
        cache.read_blocks(&s, &obj, 0, 3).await.unwrap();
        assert!(cache.used() <= 2 * BLOCK_SIZE);
        cache.read_blocks(&s, &obj, 3, 3).await.unwrap();
        assert_eq!(store.count(Op::Get), 1, "the last blocks stayed");
        cache.read_blocks(&s, &obj, 0, 0).await.unwrap();
        assert_eq!(store.count(Op::Get), 2, "the first was evicted");
    }

    #[tokio::test]
    async fn blocks_evicted_from_memory_come_back_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let disk = disk::DiskTier::open(&dir.path().join("blocks"), 64 << 20).unwrap();
        let cache = Arc::new(BlockCache::with_disk(BLOCK_SIZE, Some(disk)));
        let store = Arc::new(MemoryStore::new());
        let s: Arc<dyn ObjectStore> = store.clone();
        let (obj, data) = object(&store, "f", 4 * BLOCK_SIZE as usize);
        cache.read_blocks(&s, &obj, 0, 3).await.unwrap();
        // Disk writes happen in the background; wait for them (bounded).
        for _ in 0..200 {
            if cache.disk.as_ref().unwrap().used() == 4 * BLOCK_SIZE {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let again = cache.read_blocks(&s, &obj, 0, 3).await.unwrap();
        assert_eq!(again.concat(), data);
        assert_eq!(store.count(Op::Get), 1, "served from disk, not the server");
    }

    #[tokio::test]
    async fn a_changed_object_is_detected() {
        let (cache, store, s) = setup(64 << 20);
        let (obj, _) = object(&store, "f", BLOCK_SIZE as usize);
        store.insert("f", vec![9u8; BLOCK_SIZE as usize]);
        let err = cache.read_blocks(&s, &obj, 0, 0).await.unwrap_err();
        assert!(matches!(err, FetchError::Changed { .. }));
    }

    #[tokio::test]
    async fn read_ahead_is_limited_across_readers() {
        // An eighth of a 128-block budget: at most sixteen blocks of read-ahead in flight.
        let (cache, store, s) = setup(128 * BLOCK_SIZE);
        let (obj, _) = object(&store, "f", 32 * BLOCK_SIZE as usize);
        assert_eq!(cache.prefetch(&s, &obj, 0, 31), 16);
        assert_eq!(cache.prefetch(&s, &obj, 16, 31), 0);
    }

    #[tokio::test]
    async fn reads_beyond_the_in_flight_limit_wait_before_fetching() {
        let (cache, store, s) = setup(64 << 20);
        let (obj, data) = object(&store, "f", 4 * BLOCK_SIZE as usize);
        // As if other reads had every permit, their GETs in flight.
        let held = (cache.demand_permits.clone())
            .acquire_many_owned(cache.demand_blocks)
            .await
            .unwrap();
        let reading = tokio::spawn({
            let (cache, s, obj) = (cache.clone(), s.clone(), obj.clone());
            async move { cache.read_blocks(&s, &obj, 2, 2).await }
        });
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(store.count(Op::Get), 0, "no GET beyond the limit");
        drop(held);
        let blocks = reading.await.unwrap().unwrap();
        let block = BLOCK_SIZE as usize;
        assert_eq!(blocks.concat(), &data[2 * block..3 * block]);
        assert_eq!(store.count(Op::Get), 1);
    }

    #[tokio::test]
    async fn read_ahead_short_of_permits_waits_for_a_whole_run() {
        let (cache, store, s) = setup(128 * BLOCK_SIZE);
        let (obj, _) = object(&store, "f", 32 * BLOCK_SIZE as usize);
        assert_eq!(cache.prefetch(&s, &obj, 0, 11), 12);
        // Four of sixteen permits left: no four-block sliver of an eight-block request...
        assert_eq!(cache.prefetch(&s, &obj, 12, 19), 0);
        // ...but a request that fits is taken whole.
        assert_eq!(cache.prefetch(&s, &obj, 12, 13), 2);
    }

    #[tokio::test]
    async fn prefetched_blocks_serve_later_reads() {
        let (cache, store, s) = setup(64 << 20);
        let (obj, data) = object(&store, "f", 4 * BLOCK_SIZE as usize);
        cache.prefetch(&s, &obj, 0, 3);
        let blocks = cache.read_blocks(&s, &obj, 0, 3).await.unwrap();
        assert_eq!(blocks.concat(), data);
        assert_eq!(store.count(Op::Get), 1);
    }
}
