//! Uploading a staged file, while it is still being written.
//!
//! A staged file is cut into parts by a fixed [`PartLayout`]. As soon as a writer moves past
//! the end of a part, that part is uploaded in the background as a part of a multipart upload,
//! while writing goes on; `finish` (at close or fsync) then only sends what is left and
//! completes the upload. A part written again after it was sent is sent again (the same part
//! number replaces it), so random writes stay correct, only less efficient.
//!
//! Parts are read from the staging file on disk, so the memory in flight is bounded by the
//! upload permits (one part each), however far the writer runs ahead. A file that never grows
//! past the first part is sent with one PutObject. Any failure aborts the multipart upload, so
//! a partial object never appears, and is returned by `finish`.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use tokio::sync::{Mutex, Semaphore};
use tokio::task::JoinSet;

use crate::store::{CompletedPart, ObjectStore, StoreError, UserMeta};

/// S3 never takes more than this many parts in one upload.
pub const MAX_PARTS: u32 = 10_000;
/// Smallest part Supabase's hosted storage accepts (all but the last part).
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// Start at 8 MiB: large enough to keep request overhead low, small enough to overlap well.
pub const DEFAULT_PART_SIZE: u64 = 8 * 1024 * 1024;
/// Parts per size tier: after each thousand parts the part size doubles, so 10,000 parts
/// reach about 8 TB with 8 MiB first parts (S3 objects stop at 5 TiB).
const PARTS_PER_TIER: u64 = 1000;

#[derive(Debug, Clone, Copy)]
pub struct UploadConfig {
    /// Size of the first thousand parts.
    pub part_size: u64,
    /// Parts in flight at once across the whole mount; each holds one part in memory.
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
    #[error("{size} bytes is more than one object can hold here ({max} bytes)")]
    TooLarge { size: u64, max: u64 },
}

/// Where each part of an object begins and ends: parts 1–1000 have the base size, the next
/// thousand twice that, and so on.
#[derive(Debug, Clone, Copy)]
pub struct PartLayout {
    base: u64,
}

impl PartLayout {
    pub fn new(base: u64) -> Self {
        Self {
            base: base.max(MIN_PART_SIZE),
        }
    }

    fn tier_start(&self, tier: u64) -> u64 {
        self.base * PARTS_PER_TIER * ((1 << tier) - 1)
    }

    /// Offset where part `n` (1-based) starts.
    pub fn start(&self, n: u32) -> u64 {
        let index = n as u64 - 1;
        let tier = index / PARTS_PER_TIER;
        self.tier_start(tier) + (index % PARTS_PER_TIER) * (self.base << tier)
    }

    /// The part that holds byte `offset`.
    pub fn part_at(&self, offset: u64) -> u32 {
        let mut tier = 0;
        while self.tier_start(tier + 1) <= offset {
            tier += 1;
        }
        let within = (offset - self.tier_start(tier)) / (self.base << tier);
        (tier * PARTS_PER_TIER + within + 1) as u32
    }

    /// Parts an object of `size` bytes needs (an empty object still needs one).
    pub fn count(&self, size: u64) -> u32 {
        if size == 0 {
            1
        } else {
            self.part_at(size - 1)
        }
    }

    /// The largest object the layout can hold.
    pub fn max_size(&self) -> u64 {
        self.start(MAX_PARTS + 1)
    }
}

#[derive(Debug, Default)]
struct PartState {
    /// Generation of the last write into this part.
    dirty_gen: u64,
    /// Generation the server's copy has, with its ETag, for the current upload.
    sent: Option<(u64, String)>,
    sending: bool,
}

impl PartState {
    fn is_current(&self) -> bool {
        matches!(&self.sent, Some((gen, _)) if *gen >= self.dirty_gen)
    }
}

#[derive(Default)]
struct State {
    /// The multipart upload in progress: key and upload id.
    upload: Option<(String, String)>,
    /// The metadata that upload was started with: the object gets it on completion.
    upload_meta: UserMeta,
    parts: BTreeMap<u32, PartState>,
    /// The first background failure; `finish` reports it.
    failed: Option<StoreError>,
    /// A finish is under way: writes only mark parts, so no part leaves in the background
    /// while the upload is being completed (or the next one is started).
    finishing: bool,
}

/// The upload of one staged file.
pub struct Writeback {
    store: Arc<dyn ObjectStore>,
    permits: Arc<Semaphore>,
    layout: PartLayout,
    file: Arc<File>,
    state: Arc<Mutex<State>>,
    background: std::sync::Mutex<JoinSet<()>>,
    /// Metadata for the object, as of now; an upload takes it when it starts.
    meta: std::sync::Mutex<UserMeta>,
}

/// A finished upload: the object's ETag when reliable, and the metadata it was given, which
/// can be older than the file's current metadata when a multipart upload started early.
#[derive(Debug)]
pub struct Finished {
    pub etag: Option<String>,
    pub meta: UserMeta,
}

impl Writeback {
    /// `permits` is shared by every file of the mount and bounds the parts in flight.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        permits: Arc<Semaphore>,
        config: UploadConfig,
        file: Arc<File>,
    ) -> Self {
        Self {
            store,
            permits,
            layout: PartLayout::new(config.part_size),
            file,
            state: Arc::new(Mutex::new(State::default())),
            background: std::sync::Mutex::new(JoinSet::new()),
            meta: std::sync::Mutex::new(UserMeta::new()),
        }
    }

    /// The metadata the next upload starts with.
    pub fn set_meta(&self, meta: UserMeta) {
        *self.meta.lock().unwrap_or_else(|e| e.into_inner()) = meta;
    }

    pub fn meta(&self) -> UserMeta {
        self.meta.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn max_size(&self) -> u64 {
        self.layout.max_size()
    }

    /// Bytes `start..end` changed at generation `gen`; parts the writer has moved past are
    /// sent in the background under `key`.
    pub async fn wrote(&self, key: &str, start: u64, end: u64, gen: u64) {
        if end <= start {
            return;
        }
        let (first, last) = (self.layout.part_at(start), self.layout.part_at(end - 1));
        let mut state = self.state.lock().await;
        for n in first..=last {
            state.parts.entry(n).or_default().dirty_gen = gen;
        }
        // Parts wholly below `end` are complete as far as a sequential writer is concerned.
        let complete = (first..=last).filter(|&n| self.layout.start(n + 1) <= end);
        let ready: Vec<u32> = complete
            .filter(|n| {
                state
                    .parts
                    .get(n)
                    .is_some_and(|p| !p.sending && !p.is_current())
            })
            .collect();
        if ready.is_empty() || state.failed.is_some() || state.finishing {
            return;
        }
        if state.upload.is_none() {
            let meta = self.meta();
            match self.store.create_multipart(key, &meta).await {
                Ok(id) => {
                    state.upload = Some((key.to_string(), id));
                    state.upload_meta = meta;
                }
                Err(e) => {
                    state.failed = Some(e);
                    return;
                }
            }
        }
        for n in ready {
            if let Some(part) = state.parts.get_mut(&n) {
                part.sending = true;
            }
            self.spawn_part(&state, n, gen);
        }
    }

    /// The file was cut to `size` at generation `gen`.
    pub async fn truncated(&self, size: u64, gen: u64) {
        let last = self.layout.count(size);
        let mut state = self.state.lock().await;
        state.parts.retain(|&n, _| n <= last);
        state.parts.entry(last).or_default().dirty_gen = gen;
    }

    fn spawn_part(&self, state: &State, n: u32, gen: u64) {
        let Some((key, upload_id)) = state.upload.clone() else {
            return;
        };
        let (store, permits, file) = (self.store.clone(), self.permits.clone(), self.file.clone());
        let shared = self.state.clone();
        let start = self.layout.start(n);
        let len = self.layout.start(n + 1) - start;
        let task = async move {
            let result = match permits.acquire_owned().await {
                Ok(_permit) => send_part(&*store, &key, &upload_id, &file, n, start, len).await,
                Err(_) => Err(StoreError::Transient {
                    message: "upload permits closed".into(),
                }),
            };
            let mut state = shared.lock().await;
            if state.upload.as_ref().map(|(_, id)| id) != Some(&upload_id) {
                // Its upload was completed or aborted meanwhile; this part is not in it.
                return;
            }
            let part = state.parts.entry(n).or_default();
            part.sending = false;
            match result {
                Ok(etag) => part.sent = Some((gen, etag)),
                Err(e) => {
                    tracing::debug!(key, part = n, error = %e, "background part upload failed");
                    state.failed.get_or_insert(e);
                }
            }
        };
        self.background
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .spawn(task);
    }

    /// Stop new background parts and wait for those in flight, so the state is settled.
    async fn quiesce(&self) {
        self.state.lock().await.finishing = true;
        self.wait_background().await;
    }

    async fn wait_background(&self) {
        let mut set =
            std::mem::take(&mut *self.background.lock().unwrap_or_else(|e| e.into_inner()));
        while set.join_next().await.is_some() {}
    }

    /// Make the first `size` bytes, as of generation `gen`, the object `key`. On failure
    /// nothing is left half-done on the server.
    pub async fn finish(&self, key: &str, size: u64, gen: u64) -> Result<Finished, UploadError> {
        if size > self.layout.max_size() {
            return Err(UploadError::TooLarge {
                size,
                max: self.layout.max_size(),
            });
        }
        self.quiesce().await;
        let mut state = self.state.lock().await;
        let result = self.finish_locked(&mut state, key, size, gen).await;
        if result.is_err() {
            if let Some((old_key, id)) = state.upload.take() {
                if let Err(e) = self.store.abort_multipart(&old_key, &id).await {
                    tracing::warn!(key = old_key, error = %e, "could not abort a failed multipart upload; the server drops it after about a day");
                }
            }
        }
        // The parts belonged to the upload that just ended, successfully or not.
        *state = State::default();
        result
    }

    async fn finish_locked(
        &self,
        state: &mut State,
        key: &str,
        size: u64,
        gen: u64,
    ) -> Result<Finished, UploadError> {
        if let Some(e) = state.failed.take() {
            return Err(e.into());
        }
        if state.upload.as_ref().is_some_and(|(k, _)| k != key) {
            // Streamed under a name the file no longer has: start over under the new one.
            if let Some((old_key, id)) = state.upload.take() {
                let _ = self.store.abort_multipart(&old_key, &id).await;
            }
            state.parts.clear();
        }
        if state.upload.is_none() && size <= self.layout.start(2) {
            let body = read_range(self.file.clone(), 0, size).await?;
            let meta = self.meta();
            let etag = self.store.put(key, body, &meta).await?;
            return Ok(Finished { etag, meta });
        }
        if state.upload.is_none() {
            let meta = self.meta();
            let id = self.store.create_multipart(key, &meta).await?;
            state.upload = Some((key.to_string(), id));
            state.upload_meta = meta;
        }
        let (_, upload_id) = state.upload.clone().expect("created above");
        let count = self.layout.count(size);
        let missing: Vec<u32> = (1..=count)
            .filter(|n| !state.parts.get(n).is_some_and(|p| p.is_current()))
            .collect();
        let sent: Vec<(u32, String)> = futures::stream::iter(missing)
            .map(|n| {
                let start = self.layout.start(n);
                let len = self.layout.start(n + 1).min(size) - start;
                let upload_id = upload_id.clone();
                async move {
                    let _permit =
                        self.permits
                            .acquire()
                            .await
                            .map_err(|_| StoreError::Transient {
                                message: "upload permits closed".into(),
                            })?;
                    let etag =
                        send_part(&*self.store, key, &upload_id, &self.file, n, start, len).await?;
                    Ok::<_, UploadError>((n, etag))
                }
            })
            .buffer_unordered(self.permits.available_permits().max(1))
            .try_collect()
            .await?;
        for (n, etag) in sent {
            state.parts.entry(n).or_default().sent = Some((gen, etag));
        }
        let parts = (1..=count)
            .map(|n| CompletedPart {
                number: n as i32,
                etag: state.parts[&n].sent.clone().expect("every part sent").1,
            })
            .collect();
        self.store
            .complete_multipart(key, &upload_id, parts)
            .await?;
        // The ETag a completion reports is not always the one GET and HEAD report later
        // (servers differ in how they compute it), so readers learn it from their first GET.
        Ok(Finished {
            etag: None,
            meta: std::mem::take(&mut state.upload_meta),
        })
    }

    /// Give up: abort any multipart upload in progress (the file was deleted).
    pub async fn abandon(&self) {
        self.quiesce().await;
        let mut state = self.state.lock().await;
        if let Some((key, id)) = state.upload.take() {
            let _ = self.store.abort_multipart(&key, &id).await;
        }
        *state = State::default();
    }
}

async fn send_part(
    store: &dyn ObjectStore,
    key: &str,
    upload_id: &str,
    file: &Arc<File>,
    n: u32,
    start: u64,
    len: u64,
) -> Result<String, StoreError> {
    let body = read_range(file.clone(), start, len)
        .await
        .map_err(|e| StoreError::Transient {
            message: format!("reading part {n} from the staging file: {e}"),
        })?;
    let etag = store.upload_part(key, upload_id, n as i32, body).await?;
    tracing::trace!(key, part = n, "part uploaded");
    Ok(etag)
}

/// Read `len` bytes at `offset` off the runtime's threads. A short file reads short (a
/// concurrent truncate); the part is then re-sent at finish anyway.
pub async fn read_range(file: Arc<File>, offset: u64, len: u64) -> Result<Bytes, UploadError> {
    tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; len as usize];
        let mut done = 0;
        while done < buf.len() {
            match file.read_at(&mut buf[done..], offset + done as u64)? {
                0 => break,
                n => done += n,
            }
        }
        buf.truncate(done);
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

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn layout_tiers() {
        let l = PartLayout::new(8 * MIB);
        assert_eq!(l.start(1), 0);
        assert_eq!(l.start(2), 8 * MIB);
        assert_eq!(l.start(1001), 8000 * MIB);
        assert_eq!(l.start(1002), 8000 * MIB + 16 * MIB);
        for offset in [
            0,
            1,
            8 * MIB - 1,
            8 * MIB,
            8000 * MIB,
            8016 * MIB - 1,
            8016 * MIB,
        ] {
            let n = l.part_at(offset);
            assert!(l.start(n) <= offset && offset < l.start(n + 1), "{offset}");
        }
        assert_eq!(l.count(0), 1);
        assert_eq!(l.count(8 * MIB), 1);
        assert_eq!(l.count(8 * MIB + 1), 2);
        assert!(l.max_size() > 5 * 1024 * 1024 * MIB, "holds S3's 5 TiB");
    }

    struct Staged {
        wb: Writeback,
        file: Arc<File>,
        store: Arc<MemoryStore>,
        gen: u64,
    }

    fn staged(concurrency: usize) -> Staged {
        let store = Arc::new(MemoryStore::new());
        let file = Arc::new(tempfile::tempfile().unwrap());
        let cfg = UploadConfig {
            part_size: 5 * MIB,
            concurrency,
        };
        let wb = Writeback::new(
            store.clone(),
            Arc::new(Semaphore::new(concurrency)),
            cfg,
            file.clone(),
        );
        Staged {
            wb,
            file,
            store,
            gen: 0,
        }
    }

    impl Staged {
        async fn write(&mut self, offset: u64, data: &[u8]) {
            self.file.write_all_at(data, offset).unwrap();
            self.gen += 1;
            let end = offset + data.len() as u64;
            self.wb.wrote("k", offset, end, self.gen).await;
        }
    }

    fn pattern(len: u64) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[tokio::test]
    async fn parts_leave_while_the_file_is_written() {
        let mut s = staged(4);
        let data = pattern(17 * MIB);
        for (i, chunk) in data.chunks(MIB as usize).enumerate() {
            s.write(i as u64 * MIB, chunk).await;
        }
        s.wb.wait_background().await;
        assert_eq!(
            s.store.count(Op::UploadPart),
            3,
            "three full parts before close"
        );
        s.wb.finish("k", data.len() as u64, s.gen).await.unwrap();
        assert_eq!(
            s.store.count(Op::UploadPart),
            4,
            "close sends only the tail"
        );
        assert_eq!(s.store.object("k").unwrap(), &data[..]);
    }

    #[tokio::test]
    async fn a_part_rewritten_after_it_left_is_sent_again() {
        let mut s = staged(2);
        let mut data = pattern(12 * MIB);
        s.write(0, &data).await;
        s.wb.wait_background().await;
        data[100] ^= 0xff;
        s.write(100, &data[100..101]).await;
        s.wb.finish("k", data.len() as u64, s.gen).await.unwrap();
        assert_eq!(s.store.object("k").unwrap(), &data[..]);
    }

    #[tokio::test]
    async fn writes_racing_a_finish_never_mix_two_uploads() {
        let mut s = staged(4);
        let data = pattern(40 * MIB);
        // A finish (a close of a duplicate descriptor) after every few writes, while parts of
        // the same file are leaving in the background.
        for (i, chunk) in data.chunks(MIB as usize).enumerate() {
            s.write(i as u64 * MIB, chunk).await;
            if i % 7 == 6 {
                let done = (i as u64 + 1) * MIB;
                s.wb.finish("k", done, s.gen).await.unwrap();
                assert_eq!(s.store.object("k").unwrap(), &data[..done as usize]);
            }
        }
        s.wb.finish("k", data.len() as u64, s.gen).await.unwrap();
        assert_eq!(s.store.object("k").unwrap(), &data[..]);
        assert_eq!(s.store.open_uploads(), 0);
    }

    #[tokio::test]
    async fn small_files_are_one_put() {
        let mut s = staged(2);
        s.write(0, b"hello").await;
        s.wb.finish("k", 5, s.gen).await.unwrap();
        assert_eq!(s.store.count(Op::Put), 1);
        assert_eq!(s.store.count(Op::CreateMultipart), 0);
    }

    #[tokio::test]
    async fn failure_in_the_background_is_reported_at_finish_and_aborted() {
        let mut s = staged(2);
        s.store.fail_next(Op::UploadPart, 1);
        let data = pattern(11 * MIB);
        s.write(0, &data).await;
        let err = s.wb.finish("k", data.len() as u64, s.gen).await;
        assert!(err.is_err());
        assert_eq!(s.store.object("k"), None);
        assert_eq!(s.store.open_uploads(), 0);
        // The next finish starts over and succeeds.
        s.wb.finish("k", data.len() as u64, s.gen).await.unwrap();
        assert_eq!(s.store.object("k").unwrap(), &data[..]);
    }

    #[tokio::test]
    async fn truncate_drops_parts_beyond_the_end() {
        let mut s = staged(2);
        let data = pattern(16 * MIB);
        s.write(0, &data).await;
        s.file.set_len(6 * MIB).unwrap();
        s.gen += 1;
        s.wb.truncated(6 * MIB, s.gen).await;
        s.wb.finish("k", 6 * MIB, s.gen).await.unwrap();
        assert_eq!(s.store.object("k").unwrap(), &data[..6 * MIB as usize]);
    }
}
