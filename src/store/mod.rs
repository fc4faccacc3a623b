//! The object store seen by the filesystem: a small async trait over one bucket, with an S3
//! implementation (the only code that knows aws-sdk-s3) and an in-memory one for tests.
//!
//! Errors are expressed by meaning ([`StoreError`]), never as HTTP statuses or errnos, so the
//! filesystem decides the errno in one place (`fs::error`).

pub mod memory;
pub mod renewing;
pub mod s3;

use std::collections::BTreeMap;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;

/// S3 caps a listing page at 1000 keys; Supabase clamps larger requests to it.
pub const MAX_KEYS_PER_PAGE: i32 = 1000;

/// User metadata of an object: `x-amz-meta-NAME: value` as NAME (lower case) → value.
/// Supabase keeps ASCII values only.
pub type UserMeta = BTreeMap<String, String>;

/// What a listing or a HEAD tells about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    pub etag: Option<String>,
    pub last_modified: Option<SystemTime>,
    /// From a HEAD; listings carry none, so it is empty there.
    pub metadata: UserMeta,
}

/// One page of a ListObjectsV2 answer.
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    pub objects: Vec<ObjectInfo>,
    /// Common prefixes, each ending with the delimiter.
    pub prefixes: Vec<String>,
    /// Continuation token for the next page; `None` on the last page.
    pub next_token: Option<String>,
}

/// The body of a ranged GET, with the ETag of the object version it came from.
#[derive(Debug, Clone)]
pub struct GetResult {
    pub data: Bytes,
    pub etag: Option<String>,
}

/// A ranged GET received into buffers the caller gave, with the ETag of the version.
#[derive(Debug)]
pub struct Filled {
    pub buffers: Vec<Vec<u8>>,
    pub etag: Option<String>,
}

/// A part already uploaded to a multipart upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedPart {
    pub number: i32,
    pub etag: String,
}

/// Failures by meaning. The S3 and memory stores both map into these. Messages are the
/// server's own words, without advice: the caller knows what the user should check.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no object at key {key:?}")]
    NotFound { key: String },
    #[error("bucket {bucket:?} does not exist")]
    NoSuchBucket { bucket: String },
    #[error("access denied{}", detail(.message))]
    AccessDenied { message: String },
    #[error("the session token has expired{}", detail(.message))]
    ExpiredToken { message: String },
    #[error("the server rejected the request signature{}", detail(.message))]
    SignatureMismatch { message: String },
    #[error("the server refused the key {key:?}{}", detail(.message))]
    InvalidKey { key: String, message: String },
    #[error("object too large for the server{}", detail(.message))]
    TooLarge { message: String },
    #[error("content type refused by the bucket{}", detail(.message))]
    UnsupportedMediaType { message: String },
    #[error("requested range is not satisfiable")]
    InvalidRange,
    #[error("cannot reach the endpoint: {message}")]
    Unreachable { message: String },
    #[error("the server failed (retries exhausted): {message}")]
    Transient { message: String },
    #[error("unexpected answer from the server (HTTP {status} {code}){}", detail(.message))]
    Other {
        status: u16,
        code: String,
        message: String,
    },
}

/// ": message", or nothing when the server gave no message.
fn detail(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The operations the filesystem needs from a bucket. Keys are full object keys (any mount
/// prefix included); nothing here knows about inodes or POSIX.
///
/// Only the calls Supabase Storage implements are in this trait on purpose: it routes some
/// unimplemented sub-resources (`?tagging`, `?acl`) to destructive operations.
#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// Human-readable location for messages: the endpoint and bucket.
    fn describe(&self) -> String;

    /// One page of ListObjectsV2 under `prefix`.
    async fn list_page(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        continuation: Option<String>,
        max_keys: i32,
    ) -> StoreResult<ListPage>;

    async fn head(&self, key: &str) -> StoreResult<ObjectInfo>;

    /// Bytes `start..end` (end exclusive, `end > start`) of the object.
    async fn get_range(&self, key: &str, start: u64, end: u64) -> StoreResult<GetResult>;

    /// Bytes `start..end` received into `buffers`, in order, each filled up to its capacity
    /// (the caller sizes them to add up to the range; bytes beyond are dropped). This lets a
    /// cache receive data straight into buffers it reuses; a store that receives the body in
    /// chunks copies each chunk once, and never holds the whole range twice.
    async fn get_into(
        &self,
        key: &str,
        start: u64,
        end: u64,
        mut buffers: Vec<Vec<u8>>,
    ) -> StoreResult<Filled> {
        let got = self.get_range(key, start, end).await?;
        fill(&mut buffers, &got.data);
        Ok(Filled {
            buffers,
            etag: got.etag,
        })
    }

    /// Upload a whole object from memory; returns its ETag when the server gives one.
    async fn put(&self, key: &str, body: Bytes, meta: &UserMeta) -> StoreResult<Option<String>>;

    /// Start a multipart upload; the object gets `meta` when it is completed.
    async fn create_multipart(&self, key: &str, meta: &UserMeta) -> StoreResult<String>;

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
    ) -> StoreResult<String>;

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
    ) -> StoreResult<Option<String>>;

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> StoreResult<()>;

    /// Server-side copy within the bucket. The copy keeps the source's metadata, or gets
    /// `replace` instead when given.
    async fn copy(&self, from: &str, to: &str, replace: Option<&UserMeta>) -> StoreResult<()>;

    /// Replace the user metadata of `key`, keeping its data: a copy onto itself with the
    /// REPLACE directive, so nothing is uploaded again.
    async fn replace_metadata(&self, key: &str, meta: &UserMeta) -> StoreResult<()>;

    /// Delete one key; deleting a missing key is not an error.
    async fn delete(&self, key: &str) -> StoreResult<()>;
}

/// Append `data` to the first of `buffers` with room left, then the next, and so on, without
/// growing any of them; returns how much of `data` found room.
pub fn fill(buffers: &mut [Vec<u8>], mut data: &[u8]) -> usize {
    let total = data.len();
    for buffer in buffers.iter_mut() {
        let room = buffer.capacity() - buffer.len();
        let take = room.min(data.len());
        buffer.extend_from_slice(&data[..take]);
        data = &data[take..];
        if data.is_empty() {
            break;
        }
    }
    total - data.len()
}
