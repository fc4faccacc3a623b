//! A session token kept in a file by an outside tool (a login helper, a cron job): re-read
//! whenever the file changes, so a renewed token reaches the next request without a remount.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use super::files::{read_secret, FileStamp};
use super::jwt::{self, Claims};
use super::{CredentialsError, Secret};
use crate::store::renewing::Renewal;

/// How often the file's metadata is looked at between renewals. A stat is cheap but it is
/// blocking I/O on the request path, so it is not done for every request.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The token of a `--session-token-file`.
pub struct TokenFile {
    path: PathBuf,
    state: Mutex<FileState>,
}

#[derive(Clone)]
pub struct FileToken {
    pub token: Secret,
    pub claims: Option<Claims>,
    pub generation: u64,
}

struct FileState {
    current: FileToken,
    stamp: FileStamp,
    checked: Instant,
    /// The generation whose expiry was already reported, so it is said once.
    expiry_reported: Option<u64>,
    warned_perms: bool,
}

impl TokenFile {
    /// Read the file; an unreadable file, one without a JWT or an expired token fails the mount.
    pub fn open(path: &Path) -> Result<Self, CredentialsError> {
        let (token, stamp) = read_secret(path, "session token", true)
            .map_err(|source| CredentialsError::read("session token", path, source))?;
        let token = token_of(token);
        let claims = jwt::claims(token.expose()).map_err(|source| CredentialsError::NotAJwt {
            path: path.to_path_buf(),
            source,
        })?;
        if claims.exp <= SystemTime::now() {
            return Err(CredentialsError::Expired {
                what: format!("the session token in {}", path.display()),
                expired_at: jwt::unix_seconds(claims.exp),
                hint: "write a fresh token there",
            });
        }
        Ok(TokenFile {
            path: path.to_path_buf(),
            state: Mutex::new(FileState {
                current: FileToken {
                    token,
                    claims: Some(claims),
                    generation: 0,
                },
                stamp,
                checked: Instant::now(),
                expiry_reported: None,
                warned_perms: true,
            }),
        })
    }

    /// The token to sign with; the file is looked at again when `force` or once a second.
    pub fn current(&self, force: bool) -> FileToken {
        let mut state = self.state.lock().expect("token file lock");
        if force || state.checked.elapsed() >= CHECK_INTERVAL {
            state.checked = Instant::now();
            self.reload(&mut state);
        }
        state.current.clone()
    }

    fn reload(&self, state: &mut FileState) {
        let unchanged = std::fs::metadata(&self.path)
            .map(|m| FileStamp::of(&m) == state.stamp)
            // A file being replaced may be missing for a moment: keep the token we have.
            .unwrap_or(true);
        if unchanged {
            return;
        }
        let Ok((token, stamp)) = read_secret(&self.path, "session token", !state.warned_perms)
        else {
            return;
        };
        state.warned_perms = true;
        state.stamp = stamp;
        let token = token_of(token);
        if token.expose().is_empty() || token.expose() == state.current.token.expose() {
            return;
        }
        let claims = jwt::claims(token.expose()).ok();
        state.current = FileToken {
            token,
            claims,
            generation: state.current.generation + 1,
        };
        match claims {
            Some(c) => tracing::info!(
                path = %self.path.display(),
                expires_at = jwt::unix_seconds(c.exp),
                "session token file changed; using the new token"
            ),
            None => tracing::warn!(
                path = %self.path.display(),
                "session token file changed but holds no readable JWT; using it anyway"
            ),
        }
    }

    /// Look at the file now; say once per token when it has expired and nothing newer is there.
    pub fn renew(&self, seen: u64) -> Renewal {
        let current = self.current(true);
        if current.generation != seen {
            return Renewal::Renewed;
        }
        let mut state = self.state.lock().expect("token file lock");
        let expired_at = current
            .claims
            .filter(|c| c.exp <= SystemTime::now())
            .map(|c| jwt::unix_seconds(c.exp));
        if let Some(at) = expired_at {
            if state.expiry_reported != Some(current.generation) {
                state.expiry_reported = Some(current.generation);
                tracing::error!(
                    path = %self.path.display(),
                    expired_at = at,
                    "the session token in the file expired at {at} (Unix time); write a fresh \
                     token there (requests are refused until then)"
                );
            }
        }
        Renewal::Unchanged
    }
}

/// A file may hold the bare JWT or a Supabase session as JSON (`{"access_token": …}`).
fn token_of(text: Secret) -> Secret {
    if !text.expose().starts_with('{') {
        return text;
    }
    serde_json::from_str::<serde_json::Value>(text.expose())
        .ok()
        .and_then(|v| v.get("access_token")?.as_str().map(Secret::new))
        .unwrap_or(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::files::write_atomic_private;
    use crate::credentials::jwt::tests::token_with;

    fn token(exp_from_now: i64) -> String {
        let now = jwt::unix_seconds(SystemTime::now()) as i64;
        token_with(&format!(r#"{{"exp":{}}}"#, now + exp_from_now))
    }

    #[test]
    fn follows_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwt");
        write_atomic_private(&path, &token(100)).unwrap();
        let file = TokenFile::open(&path).unwrap();
        let first = file.current(false);
        assert_eq!(first.generation, 0);
        assert_eq!(file.renew(0), Renewal::Unchanged);

        let next = token(200);
        write_atomic_private(&path, &format!(r#"{{"access_token":"{next}"}}"#)).unwrap();
        assert_eq!(file.renew(0), Renewal::Renewed);
        let now = file.current(false);
        assert_eq!((now.generation, now.token.expose()), (1, next.as_str()));
    }

    #[test]
    fn expired_or_garbage_fails_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwt");
        write_atomic_private(&path, &token(-5)).unwrap();
        let err = TokenFile::open(&path).err().unwrap().to_string();
        assert!(err.contains("expired at"), "{err}");
        write_atomic_private(&path, "not a token").unwrap();
        assert!(TokenFile::open(&path).is_err());
        assert!(TokenFile::open(&dir.path().join("missing")).is_err());
    }
}
