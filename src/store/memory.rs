//! An in-memory bucket that follows Supabase Storage's rules (key charset, folder placeholders,
//! 1000-key pages, 416 past the end), with request counters and fault injection, so the
//! filesystem core can be tested without a server.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use md5::{Digest, Md5};

use super::{
    CompletedPart, GetResult, ListPage, ObjectInfo, ObjectStore, StoreError, StoreResult, UserMeta,
    MAX_KEYS_PER_PAGE,
};
use crate::names::{first_refused_char, FOLDER_PLACEHOLDER};

/// The kinds of request, for counters and fault injection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    List,
    Head,
    Get,
    Put,
    CreateMultipart,
    UploadPart,
    CompleteMultipart,
    AbortMultipart,
    Copy,
    /// A copy onto the same key that replaces the metadata.
    ReplaceMetadata,
    Delete,
}

#[derive(Debug, Clone)]
struct StoredObject {
    data: Bytes,
    etag: String,
    modified: SystemTime,
    meta: UserMeta,
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, StoredObject>,
    /// Upload id → key, metadata and parts.
    uploads: HashMap<String, (String, UserMeta, BTreeMap<i32, Bytes>)>,
    /// Requests of a kind that fail before reaching the objects, counted down.
    failures: HashMap<Op, u32>,
    /// When set, every request fails as if the server were gone.
    offline: bool,
}

/// A bucket held in memory.
#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
    counters: Mutex<HashMap<Op, u64>>,
    next_upload: AtomicU64,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many requests of this kind were made.
    pub fn count(&self, op: Op) -> u64 {
        *self.lock_counters().get(&op).unwrap_or(&0)
    }

    /// Make the next `times` requests of kind `op` fail with a transient server error.
    pub fn fail_next(&self, op: Op, times: u32) {
        self.lock().failures.insert(op, times);
    }

    /// Make every request fail as if the endpoint were unreachable (or reachable again).
    pub fn set_offline(&self, offline: bool) {
        self.lock().offline = offline;
    }

    /// The stored bytes of `key`, bypassing the request path.
    pub fn object(&self, key: &str) -> Option<Bytes> {
        self.lock().objects.get(key).map(|o| o.data.clone())
    }

    /// All keys, in byte order.
    pub fn keys(&self) -> Vec<String> {
        self.lock().objects.keys().cloned().collect()
    }

    /// Store an object directly, as another client would.
    pub fn insert(&self, key: &str, data: impl Into<Bytes>) {
        let data = data.into();
        self.lock()
            .objects
            .insert(key.to_string(), stored(data, UserMeta::new()));
    }

    /// Set the Last-Modified time of `key`, as the server's clock would have.
    pub fn set_modified(&self, key: &str, modified: SystemTime) {
        if let Some(object) = self.lock().objects.get_mut(key) {
            object.modified = modified;
        }
    }

    /// The user metadata stored with `key`, bypassing the request path.
    pub fn metadata(&self, key: &str) -> Option<UserMeta> {
        self.lock().objects.get(key).map(|o| o.meta.clone())
    }

    pub fn open_uploads(&self) -> usize {
        self.lock().uploads.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock is a test failure already; keep the data readable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_counters(&self) -> std::sync::MutexGuard<'_, HashMap<Op, u64>> {
        self.counters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Count the request and apply injected faults.
    fn begin(&self, op: Op) -> StoreResult<std::sync::MutexGuard<'_, State>> {
        *self.lock_counters().entry(op).or_default() += 1;
        let mut state = self.lock();
        if state.offline {
            return Err(StoreError::Unreachable {
                message: "memory store is offline".into(),
            });
        }
        if let Some(left) = state.failures.get_mut(&op) {
            if *left > 0 {
                *left -= 1;
                return Err(StoreError::Transient {
                    message: format!("injected failure of {op:?}"),
                });
            }
        }
        Ok(state)
    }
}

fn etag_of(data: &[u8]) -> String {
    format!("\"{}\"", hex::encode(Md5::digest(data)))
}

fn stored(data: Bytes, meta: UserMeta) -> StoredObject {
    StoredObject {
        etag: etag_of(&data),
        data,
        modified: SystemTime::now(),
        meta,
    }
}

/// What a listing says about an object: no metadata.
fn info(key: &str, o: &StoredObject) -> ObjectInfo {
    ObjectInfo {
        key: key.to_string(),
        size: o.data.len() as u64,
        etag: Some(o.etag.clone()),
        last_modified: Some(o.modified),
        metadata: UserMeta::new(),
    }
}

fn not_found(key: &str) -> StoreError {
    StoreError::NotFound {
        key: key.to_string(),
    }
}

/// Supabase refuses keys outside its charset and stores `dir/` as the folder placeholder.
fn storage_key(key: &str, body: &[u8]) -> StoreResult<String> {
    if let Some(c) = first_refused_char(key) {
        return Err(StoreError::InvalidKey {
            key: key.to_string(),
            message: format!("character {c:?} is not allowed"),
        });
    }
    if key.ends_with('/') && body.is_empty() {
        return Ok(format!("{key}{FOLDER_PLACEHOLDER}"));
    }
    Ok(key.to_string())
}

/// Whether `key` was covered by a page that ended at token `last`. With a delimiter, a token
/// that ends with it is a common prefix, which covered every key below it.
fn already_listed(key: &str, last: &str, delimiter: Option<&str>) -> bool {
    key <= last || delimiter.is_some_and(|d| last.ends_with(d) && key.starts_with(last))
}

/// ListObjectsV2 over a sorted map: the continuation token is the last key or prefix returned.
fn list_sorted(
    objects: &BTreeMap<String, StoredObject>,
    prefix: &str,
    delimiter: Option<&str>,
    continuation: Option<String>,
    max_keys: i32,
) -> ListPage {
    let limit = max_keys.clamp(1, MAX_KEYS_PER_PAGE) as usize;
    let mut page = ListPage::default();
    let mut last: Option<String> = None;
    let start = continuation.clone().unwrap_or_else(|| prefix.to_string());
    for (key, object) in objects.range(start..) {
        if !key.starts_with(prefix) {
            break;
        }
        if continuation
            .as_deref()
            .is_some_and(|c| already_listed(key, c, delimiter))
        {
            continue;
        }
        let common = delimiter.and_then(|d| {
            key[prefix.len()..]
                .find(d)
                .map(|i| key[..prefix.len() + i + d.len()].to_string())
        });
        if let Some(p) = &common {
            if page.prefixes.last() == Some(p) || last.as_deref() == Some(p.as_str()) {
                continue;
            }
        }
        if page.objects.len() + page.prefixes.len() == limit {
            page.next_token = last;
            return page;
        }
        match common {
            Some(p) => {
                last = Some(p.clone());
                page.prefixes.push(p);
            }
            None => {
                last = Some(key.clone());
                page.objects.push(info(key, object));
            }
        }
    }
    page
}

#[async_trait]
impl ObjectStore for MemoryStore {
    fn describe(&self) -> String {
        "memory store".to_string()
    }

    async fn list_page(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        continuation: Option<String>,
        max_keys: i32,
    ) -> StoreResult<ListPage> {
        let state = self.begin(Op::List)?;
        Ok(list_sorted(
            &state.objects,
            prefix,
            delimiter,
            continuation,
            max_keys,
        ))
    }

    async fn head(&self, key: &str) -> StoreResult<ObjectInfo> {
        let state = self.begin(Op::Head)?;
        let object = state.objects.get(key).ok_or_else(|| not_found(key))?;
        Ok(ObjectInfo {
            metadata: object.meta.clone(),
            ..info(key, object)
        })
    }

    async fn get_range(&self, key: &str, start: u64, end: u64) -> StoreResult<GetResult> {
        let state = self.begin(Op::Get)?;
        let object = state.objects.get(key).ok_or_else(|| not_found(key))?;
        let len = object.data.len() as u64;
        if start >= len {
            return Err(StoreError::InvalidRange);
        }
        Ok(GetResult {
            data: object.data.slice(start as usize..end.min(len) as usize),
            etag: Some(object.etag.clone()),
        })
    }

    async fn put(&self, key: &str, body: Bytes, meta: &UserMeta) -> StoreResult<Option<String>> {
        let mut state = self.begin(Op::Put)?;
        let key = storage_key(key, &body)?;
        let object = stored(body, meta.clone());
        let etag = object.etag.clone();
        state.objects.insert(key, object);
        Ok(Some(etag))
    }

    async fn create_multipart(&self, key: &str, meta: &UserMeta) -> StoreResult<String> {
        let mut state = self.begin(Op::CreateMultipart)?;
        let key = storage_key(key, b"x")?;
        let id = format!(
            "upload-{}",
            self.next_upload.fetch_add(1, Ordering::Relaxed)
        );
        state
            .uploads
            .insert(id.clone(), (key, meta.clone(), BTreeMap::new()));
        Ok(id)
    }

    async fn upload_part(
        &self,
        _key: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
    ) -> StoreResult<String> {
        let mut state = self.begin(Op::UploadPart)?;
        let (_, _, parts) = state
            .uploads
            .get_mut(upload_id)
            .ok_or_else(|| not_found(upload_id))?;
        let etag = etag_of(&body);
        parts.insert(number, body);
        Ok(etag)
    }

    async fn complete_multipart(
        &self,
        _key: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
    ) -> StoreResult<Option<String>> {
        let mut state = self.begin(Op::CompleteMultipart)?;
        let (key, meta, stored_parts) = state
            .uploads
            .remove(upload_id)
            .ok_or_else(|| not_found(upload_id))?;
        let mut data = Vec::new();
        for part in &parts {
            let body = stored_parts
                .get(&part.number)
                .ok_or_else(|| StoreError::Other {
                    status: 400,
                    code: "InvalidPart".into(),
                    message: format!("part {} was not uploaded", part.number),
                })?;
            data.extend_from_slice(body);
        }
        let object = stored(Bytes::from(data), meta);
        let etag = object.etag.clone();
        state.objects.insert(key, object);
        Ok(Some(etag))
    }

    async fn abort_multipart(&self, _key: &str, upload_id: &str) -> StoreResult<()> {
        let mut state = self.begin(Op::AbortMultipart)?;
        state.uploads.remove(upload_id);
        Ok(())
    }

    async fn copy(&self, from: &str, to: &str, replace: Option<&UserMeta>) -> StoreResult<()> {
        let mut state = self.begin(Op::Copy)?;
        let object = state.objects.get(from).ok_or_else(|| not_found(from))?;
        let meta = replace.cloned().unwrap_or_else(|| object.meta.clone());
        let copy = stored(object.data.clone(), meta);
        let to = storage_key(to, b"x")?;
        state.objects.insert(to, copy);
        Ok(())
    }

    async fn replace_metadata(&self, key: &str, meta: &UserMeta) -> StoreResult<()> {
        let mut state = self.begin(Op::ReplaceMetadata)?;
        let object = state.objects.get_mut(key).ok_or_else(|| not_found(key))?;
        object.meta = meta.clone();
        object.modified = SystemTime::now();
        Ok(())
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        let mut state = self.begin(Op::Delete)?;
        state.objects.remove(key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn list_all(store: &MemoryStore, prefix: &str) -> (Vec<String>, Vec<String>) {
        let (mut objects, mut prefixes, mut token) = (vec![], vec![], None);
        loop {
            let page = store
                .list_page(prefix, Some("/"), token, 1000)
                .await
                .unwrap();
            objects.extend(page.objects.into_iter().map(|o| o.key));
            prefixes.extend(page.prefixes);
            token = page.next_token;
            if token.is_none() {
                return (objects, prefixes);
            }
        }
    }

    #[tokio::test]
    async fn pages_mix_objects_and_prefixes_without_duplicates() {
        let store = MemoryStore::new();
        for i in 0..2500 {
            store.insert(&format!("d/f{i:05}"), "x");
        }
        for i in 0..1200 {
            store.insert(&format!("d/p{i:05}/a"), "x");
            store.insert(&format!("d/p{i:05}/b"), "x");
        }
        let (objects, prefixes) = list_all(&store, "d/").await;
        assert_eq!(objects.len(), 2500);
        assert_eq!(prefixes.len(), 1200);
        let mut unique = prefixes.clone();
        unique.dedup();
        assert_eq!(unique.len(), 1200);
        assert_eq!(store.count(Op::List), 4);
    }

    #[tokio::test]
    async fn supabase_rules() {
        let store = MemoryStore::new();
        store
            .put("dir/", Bytes::new(), &UserMeta::new())
            .await
            .unwrap();
        assert_eq!(store.keys(), vec!["dir/.emptyFolderPlaceholder"]);
        let err = store
            .put("naïve", Bytes::from("x"), &UserMeta::new())
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::InvalidKey { .. }));
        store
            .put("six", Bytes::from("abcdef"), &UserMeta::new())
            .await
            .unwrap();
        assert!(matches!(
            store.get_range("six", 6, 10).await,
            Err(StoreError::InvalidRange)
        ));
        let tail = store.get_range("six", 3, 100).await.unwrap();
        assert_eq!(&tail.data[..], b"def");
    }

    #[tokio::test]
    async fn injected_failures_count_down() {
        let store = MemoryStore::new();
        store.fail_next(Op::Put, 1);
        assert!(store
            .put("k", Bytes::from("1"), &UserMeta::new())
            .await
            .is_err());
        assert!(store
            .put("k", Bytes::from("1"), &UserMeta::new())
            .await
            .is_ok());
        assert_eq!(store.count(Op::Put), 2);
    }
}
