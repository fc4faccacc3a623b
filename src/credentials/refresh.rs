//! Built-in renewal through Supabase Auth with a rotating refresh token.
//!
//! One background task per mount sleeps until the renewal point of the current JWT
//! (`exp − max(60 s, 10 % of its lifetime)`, but never before half of the time it has left)
//! and renews; requests that meet an expired token ask for a renewal too. A mutex keeps one
//! refresh in flight: refresh tokens are single-use, so two concurrent refreshes would make
//! Auth revoke the session. The rotated refresh token is written to its file (atomically,
//! 0600) before it is used for anything. A terminal refusal is logged once; afterwards the
//! file is watched, so logging in again (writing a new refresh token there) recovers the mount.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::auth::{AuthApi, AuthSession, RefreshError};
use super::files::{read_secret, write_atomic_private, FileStamp};
use super::jwt::{self, Claims};
use super::{CredentialsError, Secret};
use crate::store::renewing::Renewal;

/// Renew no later than this before expiry (for the usual one-hour tokens).
const MIN_MARGIN: Duration = Duration::from_secs(60);
/// Floor between two successful renewals, so that an Auth server issuing tokens that are
/// already due (a short lifetime, a skewed clock) is not asked in a tight loop.
const MIN_INTERVAL: Duration = Duration::from_secs(5);
/// First wait after a transient failure; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How often the refresh-token file is checked for a new login after a terminal refusal.
const TERMINAL_POLL: Duration = Duration::from_secs(5);

/// How long before expiry to renew a token that lives `lifetime` and has `remaining` left.
pub fn renew_margin(lifetime: Duration, remaining: Duration) -> Duration {
    // At most half of what is left: short-lived tokens would otherwise be renewed at once.
    MIN_MARGIN.max(lifetime / 10).min(remaining / 2)
}

/// How long from `now` until a token should be renewed.
pub fn renew_after(claims: Option<&Claims>, expires_in: Option<u64>, now: SystemTime) -> Duration {
    let Some(claims) = claims else {
        // Without an `exp` we cannot tell; trust Auth's `expires_in`, or renew soon.
        let lifetime = Duration::from_secs(expires_in.unwrap_or(60));
        return lifetime - renew_margin(lifetime, lifetime);
    };
    let remaining = claims.exp.duration_since(now).unwrap_or(Duration::ZERO);
    let lifetime = claims
        .lifetime()
        .or(expires_in.map(Duration::from_secs))
        .unwrap_or(remaining);
    remaining - renew_margin(lifetime, remaining)
}

/// The JWT in use.
#[derive(Clone)]
pub struct Current {
    pub token: Secret,
    pub claims: Option<Claims>,
    pub generation: u64,
    renew_at: Instant,
}

struct State {
    current: Current,
    refresh_token: Secret,
    /// The refresh-token file as we last wrote or read it; a different stamp means someone
    /// else (a new login) wrote it.
    stamp: Option<FileStamp>,
    /// Why renewal stopped for good, until the refresh-token file changes.
    terminal: Option<String>,
}

/// The renewing session of one mount.
pub struct Refresher {
    auth: Arc<dyn AuthApi>,
    refresh_file: PathBuf,
    state: RwLock<State>,
    in_flight: tokio::sync::Mutex<()>,
}

impl Refresher {
    /// Read the refresh token and settle on a first JWT: `initial` if it is still valid,
    /// otherwise one renewed now (a failure then fails the mount).
    pub async fn start(
        auth: Arc<dyn AuthApi>,
        refresh_file: &Path,
        initial: Option<Secret>,
    ) -> Result<Arc<Self>, CredentialsError> {
        let (refresh_token, stamp) = read_secret(refresh_file, "refresh token", true)
            .map_err(|source| CredentialsError::read("refresh token", refresh_file, source))?;
        if refresh_token.expose().is_empty() {
            return Err(CredentialsError::Empty {
                what: "refresh token",
                path: refresh_file.to_path_buf(),
            });
        }
        let usable = initial.and_then(|t| {
            let claims = jwt::claims(t.expose()).ok()?;
            (claims.exp > SystemTime::now()).then_some((t, claims))
        });
        let (token, claims, needs_refresh) = match usable {
            Some((t, c)) => (t, Some(c), false),
            None => (Secret::new(""), None, true),
        };
        let refresher = Arc::new(Refresher {
            auth,
            refresh_file: refresh_file.to_path_buf(),
            state: RwLock::new(State {
                current: Current {
                    renew_at: Instant::now()
                        + renew_after(claims.as_ref(), None, SystemTime::now()),
                    token,
                    claims,
                    generation: 0,
                },
                refresh_token,
                stamp: Some(stamp),
                terminal: None,
            }),
            in_flight: tokio::sync::Mutex::new(()),
        });
        if needs_refresh {
            refresher
                .refresh_now()
                .await
                .map_err(CredentialsError::Refresh)?;
        }
        Ok(refresher)
    }

    /// Start the background renewal; it ends when the refresher is dropped.
    pub fn spawn(self: &Arc<Self>) {
        tokio::spawn(run(Arc::downgrade(self)));
    }

    pub fn current(&self) -> Current {
        self.state
            .read()
            .expect("session state lock")
            .current
            .clone()
    }

    /// Renew unless a token newer than `seen` is already in use.
    pub async fn renew(&self, seen: u64) -> Renewal {
        let _one = self.in_flight.lock().await;
        if self.current().generation != seen {
            return Renewal::Renewed;
        }
        match self.refresh_locked().await {
            Ok(()) => Renewal::Renewed,
            Err(RefreshError::Terminal { .. }) => Renewal::Failed(self.terminal_text()),
            Err(e @ RefreshError::Transient(_)) => Renewal::Failed(e.to_string()),
        }
    }

    async fn refresh_now(&self) -> Result<(), RefreshError> {
        let _one = self.in_flight.lock().await;
        self.refresh_locked().await
    }

    fn terminal_text(&self) -> String {
        let state = self.state.read().expect("session state lock");
        state.terminal.clone().unwrap_or_default()
    }

    /// One refresh; the caller holds `in_flight`.
    async fn refresh_locked(&self) -> Result<(), RefreshError> {
        self.pick_up_new_login().await;
        let (refresh_token, terminal) = {
            let state = self.state.read().expect("session state lock");
            (state.refresh_token.clone(), state.terminal.clone())
        };
        if let Some(why) = terminal {
            return Err(RefreshError::Terminal {
                status: 0,
                code: String::new(),
                message: why,
            });
        }
        match self.auth.refresh(&refresh_token).await {
            Ok(session) => {
                self.adopt(session).await;
                Ok(())
            }
            Err(e @ RefreshError::Terminal { .. }) => {
                let what_to_do = format!(
                    "{e}; log in again and write the new refresh token to {}",
                    self.refresh_file.display()
                );
                tracing::error!(
                    path = %self.refresh_file.display(),
                    "cannot renew the session: {what_to_do} (requests will be refused once the \
                     current token expires)"
                );
                self.state.write().expect("session state lock").terminal = Some(what_to_do);
                Err(e)
            }
            Err(e) => {
                tracing::warn!("{e}; will retry");
                Err(e)
            }
        }
    }

    /// Keep the rotated refresh token on disk first, then start using the new JWT.
    async fn adopt(&self, session: AuthSession) {
        let path = self.refresh_file.clone();
        let rotated = session.refresh_token.clone();
        let written = tokio::task::spawn_blocking(move || {
            write_atomic_private(&path, rotated.expose())?;
            std::fs::metadata(&path).map(|m| FileStamp::of(&m))
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        let stamp = match written {
            Ok(stamp) => Some(stamp),
            Err(e) => {
                // The old token is spent either way, so the new one is still used from memory.
                tracing::error!(
                    path = %self.refresh_file.display(),
                    error = %e,
                    "could not save the rotated refresh token; after a restart you must log in \
                     again"
                );
                None
            }
        };
        let claims = jwt::claims(session.access_token.expose()).ok();
        let wait =
            renew_after(claims.as_ref(), session.expires_in, SystemTime::now()).max(MIN_INTERVAL);
        let mut state = self.state.write().expect("session state lock");
        let generation = state.current.generation + 1;
        state.current = Current {
            token: session.access_token,
            claims,
            generation,
            renew_at: Instant::now() + wait,
        };
        state.refresh_token = session.refresh_token;
        state.stamp = stamp;
        state.terminal = None;
        match claims {
            Some(c) => tracing::info!(
                expires_at = jwt::unix_seconds(c.exp),
                next_renewal_in_s = wait.as_secs(),
                "session renewed"
            ),
            None => tracing::info!(next_renewal_in_s = wait.as_secs(), "session renewed"),
        }
    }

    /// A refresh-token file rewritten by someone else (a new login) replaces ours and clears
    /// a terminal failure.
    async fn pick_up_new_login(&self) {
        let path = self.refresh_file.clone();
        let read =
            tokio::task::spawn_blocking(move || read_secret(&path, "refresh token", false)).await;
        let Ok(Ok((token, stamp))) = read else {
            return;
        };
        let mut state = self.state.write().expect("session state lock");
        if state.stamp == Some(stamp) || token.expose().is_empty() {
            return;
        }
        if token.expose() != state.refresh_token.expose() {
            tracing::info!(path = %self.refresh_file.display(), "using the new refresh token");
            state.refresh_token = token;
            state.terminal = None;
        }
        state.stamp = Some(stamp);
    }
}

/// The background renewal loop.
async fn run(refresher: Weak<Refresher>) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let Some(renew_at) = refresher.upgrade().map(|r| r.current().renew_at) else {
            return;
        };
        tokio::time::sleep_until(renew_at).await;
        let Some(r) = refresher.upgrade() else {
            return;
        };
        let seen = r.current().generation;
        let pause = match r.renew(seen).await {
            Renewal::Renewed | Renewal::Unchanged => {
                backoff = MIN_BACKOFF;
                Duration::ZERO
            }
            Renewal::Failed(_) if r.state.read().expect("lock").terminal.is_some() => TERMINAL_POLL,
            Renewal::Failed(_) => {
                let pause = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                pause
            }
        };
        drop(r);
        tokio::time::sleep(pause).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::jwt::tests::token_with;
    use async_trait::async_trait;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    const LIFETIME: u64 = 20;

    /// Issues 20-second tokens and rotating refresh tokens; fails as told.
    struct FakeAuth {
        calls: AtomicUsize,
        /// Answers to give before succeeding again.
        failures: Mutex<Vec<RefreshError>>,
        seen: Mutex<Vec<String>>,
    }

    impl FakeAuth {
        fn new() -> Arc<Self> {
            Arc::new(FakeAuth {
                calls: AtomicUsize::new(0),
                failures: Mutex::new(Vec::new()),
                seen: Mutex::new(Vec::new()),
            })
        }
        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    fn fresh_token() -> Secret {
        let now = jwt::unix_seconds(SystemTime::now());
        Secret::new(token_with(&format!(
            r#"{{"iat":{now},"exp":{}}}"#,
            now + LIFETIME
        )))
    }

    #[async_trait]
    impl AuthApi for FakeAuth {
        async fn refresh(&self, refresh_token: &Secret) -> Result<AuthSession, RefreshError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            self.seen
                .lock()
                .unwrap()
                .push(refresh_token.expose().to_string());
            if let Some(e) = self.failures.lock().unwrap().pop() {
                return Err(e);
            }
            Ok(AuthSession {
                access_token: fresh_token(),
                refresh_token: Secret::new(format!("r{n}")),
                expires_in: Some(LIFETIME),
            })
        }
    }

    fn refresh_file(dir: &tempfile::TempDir) -> PathBuf {
        let path = dir.path().join("refresh-token");
        std::fs::write(&path, "r0\n").unwrap();
        path
    }

    #[test]
    fn margins() {
        let secs = Duration::from_secs;
        assert_eq!(renew_margin(secs(3600), secs(3600)), secs(360));
        assert_eq!(renew_margin(secs(300), secs(300)), secs(60));
        assert_eq!(renew_margin(secs(20), secs(20)), secs(10));
        // A token issued long ago with little left: renew halfway through what is left.
        assert_eq!(renew_margin(secs(60), secs(20)), secs(10));
        let now = SystemTime::now();
        let c = Claims {
            exp: now + Duration::from_secs(3000),
            iat: Some(now - Duration::from_secs(600)),
        };
        assert_eq!(renew_after(Some(&c), None, now), Duration::from_secs(2640));
        let expired = Claims {
            exp: now - Duration::from_secs(1),
            iat: None,
        };
        assert_eq!(renew_after(Some(&expired), None, now), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn renews_halfway_through_short_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let path = refresh_file(&dir);
        let auth = FakeAuth::new();
        let r = Refresher::start(auth.clone(), &path, Some(fresh_token()))
            .await
            .unwrap();
        r.spawn();
        assert_eq!(auth.calls(), 0, "a valid initial token is used as is");

        tokio::time::sleep(Duration::from_secs(9)).await;
        assert_eq!(auth.calls(), 0, "too early at 9 s");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(auth.calls(), 1, "renewed at 10 s");
        assert_eq!(r.current().generation, 1);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "r1\n");

        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(auth.calls(), 2, "and again 10 s later");
        assert_eq!(auth.seen.lock().unwrap().as_slice(), ["r0", "r1"]);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "r2\n");
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_back_off_then_recover() {
        let dir = tempfile::tempdir().unwrap();
        let path = refresh_file(&dir);
        let auth = FakeAuth::new();
        let r = Refresher::start(auth.clone(), &path, Some(fresh_token()))
            .await
            .unwrap();
        *auth.failures.lock().unwrap() = vec![
            RefreshError::Transient("503".into()),
            RefreshError::Transient("429".into()),
        ];
        r.spawn();
        // 10 s: fails; 11 s: fails; 13 s: succeeds (backoff 1 s, then 2 s).
        tokio::time::sleep(Duration::from_millis(10_500)).await;
        assert_eq!(auth.calls(), 1);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(auth.calls(), 2);
        assert_eq!(r.current().generation, 0);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(auth.calls(), 3);
        assert_eq!(r.current().generation, 1);
        // The failed attempts did not consume the refresh token.
        assert_eq!(auth.seen.lock().unwrap().as_slice(), ["r0", "r0", "r0"]);
    }

    #[tokio::test(start_paused = true)]
    async fn terminal_refusal_stops_until_a_new_login() {
        let dir = tempfile::tempdir().unwrap();
        let path = refresh_file(&dir);
        let auth = FakeAuth::new();
        let r = Refresher::start(auth.clone(), &path, Some(fresh_token()))
            .await
            .unwrap();
        *auth.failures.lock().unwrap() = vec![RefreshError::Terminal {
            status: 400,
            code: "refresh_token_already_used".into(),
            message: "Invalid Refresh Token: Already Used".into(),
        }];
        r.spawn();
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(auth.calls(), 1, "no retries after a terminal answer");
        let gen = r.current().generation;
        assert!(matches!(r.renew(gen).await, Renewal::Failed(t) if t.contains("log in again")));
        assert_eq!(auth.calls(), 1);

        // A new login writes the file: renewal resumes with the new token.
        std::fs::write(&path, "fresh-login\n").unwrap();
        tokio::time::sleep(TERMINAL_POLL * 2).await;
        assert_eq!(auth.calls(), 2);
        assert_eq!(auth.seen.lock().unwrap()[1], "fresh-login");
        assert_eq!(r.current().generation, gen + 1);
    }

    #[tokio::test(start_paused = true)]
    async fn one_refresh_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let path = refresh_file(&dir);
        let auth = FakeAuth::new();
        let r = Refresher::start(auth.clone(), &path, Some(fresh_token()))
            .await
            .unwrap();
        let (a, b, c) = tokio::join!(r.renew(0), r.renew(0), r.renew(0));
        assert_eq!(
            (a, b, c),
            (Renewal::Renewed, Renewal::Renewed, Renewal::Renewed)
        );
        assert_eq!(
            auth.calls(),
            1,
            "requests that saw the same token share one refresh"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_start_token_is_renewed_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = refresh_file(&dir);
        let auth = FakeAuth::new();
        let old = Secret::new(token_with(r#"{"iat":1000,"exp":2000}"#));
        let r = Refresher::start(auth.clone(), &path, Some(old))
            .await
            .unwrap();
        assert_eq!((auth.calls(), r.current().generation), (1, 1));

        *auth.failures.lock().unwrap() = vec![RefreshError::Terminal {
            status: 400,
            code: "refresh_token_not_found".into(),
            message: String::new(),
        }];
        let err = Refresher::start(auth.clone(), &path, None)
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains("refresh_token_not_found"), "{err}");
    }
}
