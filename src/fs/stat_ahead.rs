//! Stat-ahead: reading the metadata of a listed directory's files before they are asked for.
//!
//! A listing carries no object metadata, so with metadata kept every file needs one HEAD
//! before its modes and mtime can be shown. `ls -l`, `rsync` and `find -newer` stat the files
//! of a directory one after the other, in listing order; one HEAD at a time would make them
//! wait for each in turn. So the first stat that needs a HEAD in a freshly listed directory
//! starts HEADs for the other files of that listing, several at once, and a stat of a file whose
//! HEAD is in flight waits for it instead of sending its own. Nothing is read ahead for a
//! listing nobody stats (a plain `ls`, `find -name`).

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use lru::LruCache;
use tokio::sync::Notify;

/// HEADs in flight at once for one directory's stat-ahead.
pub const CONCURRENCY: usize = 32;
/// How long a stat waits for a HEAD in flight before asking itself.
const WAIT: Duration = Duration::from_secs(30);
/// Listings kept for a stat that may follow: the most recent ones (a `find` over a large tree
/// lists many directories that nobody stats).
const LISTINGS: usize = 64;

pub struct StatAhead {
    /// Files listed without metadata, by directory path, until a stat in it starts the reads.
    pending: Mutex<LruCache<String, Vec<String>>>,
    /// Paths whose HEAD is in flight; their waiters are woken when it ends.
    inflight: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Default for StatAhead {
    fn default() -> Self {
        Self {
            pending: Mutex::new(LruCache::new(
                NonZeroUsize::new(LISTINGS).expect("not zero"),
            )),
            inflight: Mutex::default(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl StatAhead {
    /// A listing of `dir` found these files without known metadata (replaces an older one).
    pub fn listed(&self, dir: &str, files: Vec<String>) {
        let mut pending = lock(&self.pending);
        if files.is_empty() {
            pending.pop(dir);
        } else {
            pending.put(dir.to_string(), files);
        }
    }

    /// The first stat in `dir` that needs a HEAD: the paths to read ahead, marked in flight
    /// (the caller reads them and calls [`StatAhead::done`] for each). Empty when `dir` has no
    /// pending listing, or its reads have started already.
    pub fn start(&self, dir: &str, except: &str) -> Vec<String> {
        let Some(files) = lock(&self.pending).pop(dir) else {
            return Vec::new();
        };
        let mut inflight = lock(&self.inflight);
        let mut started = Vec::new();
        for path in files {
            if path != except && !inflight.contains_key(&path) {
                inflight.insert(path.clone(), Arc::new(Notify::new()));
                started.push(path);
            }
        }
        started
    }

    /// The read of `path` ended, whatever its outcome.
    pub fn done(&self, path: &str) {
        if let Some(notify) = lock(&self.inflight).remove(path) {
            notify.notify_waiters();
        }
    }

    /// Wait until a read of `path` in flight ends; returns at once if none is.
    pub async fn wait(&self, path: &str) {
        let Some(notify) = lock(&self.inflight).get(path).cloned() else {
            return;
        };
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        // Ended between the lookup above and `enable`: nothing more to wait for.
        if !lock(&self.inflight).contains_key(path) {
            return;
        }
        let _ = tokio::time::timeout(WAIT, notified).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stat_waits_for_the_read_in_flight() {
        let ahead = Arc::new(StatAhead::default());
        ahead.listed("d", vec!["d/a".into(), "d/b".into(), "d/c".into()]);
        assert_eq!(ahead.start("d", "d/a"), ["d/b", "d/c"]);
        assert!(
            ahead.start("d", "d/a").is_empty(),
            "started once per listing"
        );
        let waiter = {
            let ahead = ahead.clone();
            tokio::spawn(async move { ahead.wait("d/b").await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        ahead.done("d/b");
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .unwrap();
        // Only the most recent listings are kept.
        for i in 0..=LISTINGS {
            ahead.listed(&format!("dir{i}"), vec![format!("dir{i}/f")]);
        }
        assert!(ahead.start("dir0", "").is_empty(), "the oldest was dropped");
        assert_eq!(
            ahead.start(&format!("dir{LISTINGS}"), ""),
            [format!("dir{LISTINGS}/f")]
        );
        // Nothing in flight: no wait at all.
        tokio::time::timeout(Duration::from_millis(100), ahead.wait("d/zzz"))
            .await
            .unwrap();
    }
}
