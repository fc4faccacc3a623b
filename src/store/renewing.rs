//! Session-token mode's answer to an expired token: a wrapper store that, when a request is
//! refused because the user's JWT has (or may have) expired, renews the token once and retries
//! the request once. What stays refused is logged once per key with its reason, and reaches
//! the filesystem as a denial (EACCES), never as an empty answer.
//!
//! It exists only in session-token mode: with access keys a 403 is final.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;

use super::{
    CompletedPart, Filled, GetResult, ListPage, ObjectInfo, ObjectStore, StoreError, StoreResult,
    UserMeta,
};

/// Bound on the keys remembered as "already logged", so a long-lived mount cannot grow it
/// without limit; when full it starts over (a key may then be logged again).
const MAX_LOGGED_KEYS: usize = 4096;

/// What asking for a fresher token achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewal {
    /// A different token is in use now: retrying is worthwhile.
    Renewed,
    /// Nothing newer is available (a token file that has not changed).
    Unchanged,
    /// Renewal failed; the text says why and what to do (it holds no secret).
    Failed(String),
}

/// The session-token source as the store sees it.
#[async_trait]
pub trait TokenRenewal: Send + Sync + 'static {
    /// Changes whenever a different token starts being used.
    fn generation(&self) -> u64;
    /// Whether the current token is expired or about to be, by our clock. A bare 403 (HEAD
    /// has no body to say why) is only taken for expiry when this holds.
    fn expires_soon(&self) -> bool;
    /// Get a token newer than generation `seen`; returns at once if one is already in use.
    async fn renew(&self, seen: u64) -> Renewal;
}

/// `inner` with renew-once-and-retry-once on expiry.
pub struct RenewingStore<S> {
    inner: S,
    tokens: Arc<dyn TokenRenewal>,
    logged: Mutex<HashSet<(String, &'static str)>>,
}

impl<S: ObjectStore> RenewingStore<S> {
    pub fn new(inner: S, tokens: Arc<dyn TokenRenewal>) -> Self {
        RenewingStore {
            inner,
            tokens,
            logged: Mutex::new(HashSet::new()),
        }
    }

    async fn call<T, F, Fut>(&self, key: &str, op: F) -> StoreResult<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = StoreResult<T>>,
    {
        let seen = self.tokens.generation();
        let err = match op().await {
            Err(err) if self.worth_renewing(&err) => err,
            Err(err) => return Err(self.note_denial(key, err, None)),
            ok => return ok,
        };
        match self.tokens.renew(seen).await {
            Renewal::Renewed => op().await.map_err(|e| self.note_denial(key, e, None)),
            Renewal::Unchanged => Err(self.note_denial(key, err, None)),
            Renewal::Failed(why) => Err(self.note_denial(key, err, Some(why))),
        }
    }

    fn worth_renewing(&self, err: &StoreError) -> bool {
        match err {
            StoreError::ExpiredToken { .. } => true,
            StoreError::AccessDenied { message } => is_bare(message) && self.tokens.expires_soon(),
            _ => false,
        }
    }

    /// Log a final denial once per key and reason; other errors pass untouched.
    fn note_denial(&self, key: &str, err: StoreError, renewal: Option<String>) -> StoreError {
        let reason = match &err {
            StoreError::ExpiredToken { .. } => "the session token has expired",
            StoreError::AccessDenied { message } if is_bare(message) => {
                "access denied (expired token or policy)"
            }
            StoreError::AccessDenied { .. } => {
                "denied by the bucket's policies (row level security)"
            }
            StoreError::SignatureMismatch { .. } => {
                "bad signature: check the anon key (the legacy JWT one), the project ref or tenant \
                 id, and the region"
            }
            _ => return err,
        };
        let first = {
            let mut logged = self.logged.lock().expect("logged-keys lock");
            if logged.len() >= MAX_LOGGED_KEYS {
                logged.clear();
            }
            logged.insert((key.to_string(), reason))
        };
        if first {
            match renewal {
                Some(why) => tracing::warn!(%key, %why, "request refused: {reason}"),
                None => tracing::warn!(%key, "request refused: {reason}"),
            }
        }
        err
    }
}

/// A 403 without a message: HEAD answers have no body to say whether it was expiry.
fn is_bare(message: &str) -> bool {
    let m = message.trim();
    m.is_empty() || m.eq_ignore_ascii_case("forbidden")
}

#[async_trait]
impl<S: ObjectStore> ObjectStore for RenewingStore<S> {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn list_page(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        continuation: Option<String>,
        max_keys: i32,
    ) -> StoreResult<ListPage> {
        self.call(prefix, || {
            self.inner
                .list_page(prefix, delimiter, continuation.clone(), max_keys)
        })
        .await
    }

    async fn head(&self, key: &str) -> StoreResult<ObjectInfo> {
        self.call(key, || self.inner.head(key)).await
    }

    async fn get_range(&self, key: &str, start: u64, end: u64) -> StoreResult<GetResult> {
        self.call(key, || self.inner.get_range(key, start, end))
            .await
    }

    async fn get_into(
        &self,
        key: &str,
        start: u64,
        end: u64,
        buffers: Vec<Vec<u8>>,
    ) -> StoreResult<Filled> {
        // A retry starts again from empty buffers of the same sizes.
        let sizes: Vec<usize> = buffers.iter().map(Vec::capacity).collect();
        let first = std::sync::Mutex::new(Some(buffers));
        self.call(key, || {
            let buffers = first
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .unwrap_or_else(|| sizes.iter().map(|&n| Vec::with_capacity(n)).collect());
            self.inner.get_into(key, start, end, buffers)
        })
        .await
    }

    async fn put(&self, key: &str, body: Bytes, meta: &UserMeta) -> StoreResult<Option<String>> {
        self.call(key, || self.inner.put(key, body.clone(), meta))
            .await
    }

    async fn create_multipart(&self, key: &str, meta: &UserMeta) -> StoreResult<String> {
        self.call(key, || self.inner.create_multipart(key, meta))
            .await
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
    ) -> StoreResult<String> {
        self.call(key, || {
            self.inner.upload_part(key, upload_id, number, body.clone())
        })
        .await
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
    ) -> StoreResult<Option<String>> {
        self.call(key, || {
            self.inner.complete_multipart(key, upload_id, parts.clone())
        })
        .await
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> StoreResult<()> {
        self.call(key, || self.inner.abort_multipart(key, upload_id))
            .await
    }

    async fn copy(&self, from: &str, to: &str, replace: Option<&UserMeta>) -> StoreResult<()> {
        self.call(to, || self.inner.copy(from, to, replace)).await
    }

    async fn replace_metadata(&self, key: &str, meta: &UserMeta) -> StoreResult<()> {
        self.call(key, || self.inner.replace_metadata(key, meta))
            .await
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.call(key, || self.inner.delete(key)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    /// A store that refuses the first `refusals` requests with `make()`.
    struct Refusing {
        inner: MemoryStore,
        refusals: AtomicUsize,
        make: fn() -> StoreError,
    }

    impl Refusing {
        fn check(&self) -> StoreResult<()> {
            let left = self.refusals.load(Ordering::SeqCst);
            if left > 0 {
                self.refusals.store(left - 1, Ordering::SeqCst);
                return Err((self.make)());
            }
            Ok(())
        }
    }

    #[async_trait]
    impl ObjectStore for Refusing {
        fn describe(&self) -> String {
            "refusing".into()
        }
        async fn list_page(
            &self,
            p: &str,
            d: Option<&str>,
            c: Option<String>,
            m: i32,
        ) -> StoreResult<ListPage> {
            self.check()?;
            self.inner.list_page(p, d, c, m).await
        }
        async fn head(&self, key: &str) -> StoreResult<ObjectInfo> {
            self.check()?;
            self.inner.head(key).await
        }
        async fn get_range(&self, k: &str, s: u64, e: u64) -> StoreResult<GetResult> {
            self.check()?;
            self.inner.get_range(k, s, e).await
        }
        async fn put(
            &self,
            key: &str,
            body: Bytes,
            meta: &UserMeta,
        ) -> StoreResult<Option<String>> {
            self.check()?;
            self.inner.put(key, body, meta).await
        }
        async fn create_multipart(&self, key: &str, meta: &UserMeta) -> StoreResult<String> {
            self.inner.create_multipart(key, meta).await
        }
        async fn upload_part(&self, k: &str, u: &str, n: i32, b: Bytes) -> StoreResult<String> {
            self.inner.upload_part(k, u, n, b).await
        }
        async fn complete_multipart(
            &self,
            k: &str,
            u: &str,
            p: Vec<CompletedPart>,
        ) -> StoreResult<Option<String>> {
            self.inner.complete_multipart(k, u, p).await
        }
        async fn abort_multipart(&self, k: &str, u: &str) -> StoreResult<()> {
            self.inner.abort_multipart(k, u).await
        }
        async fn copy(&self, f: &str, t: &str, r: Option<&UserMeta>) -> StoreResult<()> {
            self.inner.copy(f, t, r).await
        }
        async fn replace_metadata(&self, k: &str, m: &UserMeta) -> StoreResult<()> {
            self.inner.replace_metadata(k, m).await
        }
        async fn delete(&self, key: &str) -> StoreResult<()> {
            self.inner.delete(key).await
        }
    }

    struct Tokens {
        generation: AtomicU64,
        renewals: AtomicUsize,
        outcome: Renewal,
        soon: bool,
    }

    #[async_trait]
    impl TokenRenewal for Tokens {
        fn generation(&self) -> u64 {
            self.generation.load(Ordering::SeqCst)
        }
        fn expires_soon(&self) -> bool {
            self.soon
        }
        async fn renew(&self, _seen: u64) -> Renewal {
            self.renewals.fetch_add(1, Ordering::SeqCst);
            self.generation.fetch_add(1, Ordering::SeqCst);
            self.outcome.clone()
        }
    }

    fn setup(
        refusals: usize,
        make: fn() -> StoreError,
        outcome: Renewal,
        soon: bool,
    ) -> (RenewingStore<Refusing>, Arc<Tokens>) {
        let inner = MemoryStore::new();
        inner.insert("a.txt", "hello");
        let tokens = Arc::new(Tokens {
            generation: AtomicU64::new(0),
            renewals: AtomicUsize::new(0),
            outcome,
            soon,
        });
        let store = RenewingStore::new(
            Refusing {
                inner,
                refusals: AtomicUsize::new(refusals),
                make,
            },
            tokens.clone(),
        );
        (store, tokens)
    }

    fn expired() -> StoreError {
        StoreError::ExpiredToken {
            message: "\"exp\" claim timestamp check failed".into(),
        }
    }

    fn bare() -> StoreError {
        StoreError::AccessDenied {
            message: String::new(),
        }
    }

    fn policy() -> StoreError {
        StoreError::AccessDenied {
            message: "new row violates row-level security policy".into(),
        }
    }

    #[tokio::test]
    async fn expiry_renews_once_and_retries_once() {
        let (store, tokens) = setup(1, expired, Renewal::Renewed, false);
        assert_eq!(store.head("a.txt").await.unwrap().size, 5);
        assert_eq!(tokens.renewals.load(Ordering::SeqCst), 1);

        // Still refused after renewal: the error comes back, no second renewal.
        let (store, tokens) = setup(5, expired, Renewal::Renewed, false);
        let err = store.head("a.txt").await.unwrap_err();
        assert!(matches!(err, StoreError::ExpiredToken { .. }));
        assert_eq!(tokens.renewals.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn unchanged_or_failed_renewal_keeps_the_denial() {
        for outcome in [Renewal::Unchanged, Renewal::Failed("log in again".into())] {
            let (store, _) = setup(1, expired, outcome, false);
            let err = store
                .put("b.txt", Bytes::from_static(b"x"), &UserMeta::new())
                .await;
            assert!(matches!(err, Err(StoreError::ExpiredToken { .. })));
            assert!(store.inner.inner.object("b.txt").is_none());
        }
    }

    #[tokio::test]
    async fn bare_403_renews_only_near_expiry() {
        let (store, tokens) = setup(1, bare, Renewal::Renewed, true);
        assert!(store.head("a.txt").await.is_ok());
        assert_eq!(tokens.renewals.load(Ordering::SeqCst), 1);

        let (store, tokens) = setup(1, bare, Renewal::Renewed, false);
        assert!(store.head("a.txt").await.is_err());
        assert_eq!(tokens.renewals.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn policy_denials_do_not_renew() {
        let (store, tokens) = setup(1, policy, Renewal::Renewed, true);
        let err = store
            .put("a.txt", Bytes::from_static(b"new"), &UserMeta::new())
            .await;
        assert!(matches!(err, Err(StoreError::AccessDenied { .. })));
        assert_eq!(tokens.renewals.load(Ordering::SeqCst), 0);
        assert_eq!(store.inner.inner.object("a.txt").unwrap(), "hello");
    }
}
