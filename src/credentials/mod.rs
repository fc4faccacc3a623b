//! Session-token credentials: every request runs as one Supabase user under Row Level
//! Security. The access key id is the project ref (self-hosted: the tenant id), the secret is
//! the project's legacy anon key, and the session token is the user's JWT, taken from a file
//! that an outside tool keeps fresh ([`token_file`]) or renewed here through Supabase Auth with
//! a rotating refresh token ([`refresh`]).
//!
//! [`SessionCredentials`] plugs into the SDK as its credentials provider, and the S3 client is
//! built without an identity cache in this mode, so each request signs with the token current
//! at that moment and a renewal needs no new client.

pub mod auth;
pub mod files;
pub mod jwt;
pub mod refresh;
pub mod token_file;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_credential_types::provider::{self, future};
use aws_sdk_s3::config::{Credentials, ProvideCredentials};

use crate::store::renewing::{Renewal, TokenRenewal};
use auth::HttpAuth;
use refresh::Refresher;
use token_file::TokenFile;

/// A bare 403 within this much of the token's `exp` (or after it) is taken as expiry: the
/// server's clock may run a little ahead of ours.
const EXPIRY_SKEW: Duration = Duration::from_secs(30);

/// A secret string: shown as `****` by `Debug`, read only through [`Secret::expose`].
#[derive(Clone, Default)]
pub struct Secret(Arc<str>);

impl Secret {
    pub fn new(text: impl AsRef<str>) -> Self {
        Secret(Arc::from(text.as_ref()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "****" })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("cannot read the {what} file {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the {what} file {} is empty", path.display())]
    Empty { what: &'static str, path: PathBuf },
    #[error("the session token file {} does not hold a usable JWT: {source}", path.display())]
    NotAJwt {
        path: PathBuf,
        #[source]
        source: jwt::JwtError,
    },
    #[error("{what} expired at {expired_at} (Unix time); {hint}")]
    Expired {
        what: String,
        expired_at: u64,
        hint: &'static str,
    },
    #[error(
        "cannot start the session: {0}; if the refresh token was used or revoked, log in again \
         and write the new refresh token to the file"
    )]
    Refresh(#[source] auth::RefreshError),
    #[error("cannot set up HTTPS for Supabase Auth: {0}")]
    Tls(#[source] std::io::Error),
}

impl CredentialsError {
    fn read(what: &'static str, path: &Path, source: std::io::Error) -> Self {
        CredentialsError::Read {
            what,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Where the user's JWT comes from.
#[derive(Debug, Clone)]
pub enum TokenConfig {
    /// `--session-token-file`: kept fresh by someone else.
    File(PathBuf),
    /// `--refresh-token-file` (+ `SUPABASE_ACCESS_TOKEN` as a first token): renewed here.
    Refresh {
        refresh_file: PathBuf,
        project_url: String,
        initial: Option<Secret>,
    },
}

/// Checked session-token settings.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The project ref, or the tenant id of a self-hosted server.
    pub access_key_id: String,
    pub anon_key: Secret,
    pub token: TokenConfig,
}

/// The SDK's credentials provider in session-token mode, and the store's renewal hook.
#[derive(Clone)]
pub struct SessionCredentials {
    inner: Arc<Inner>,
}

struct Inner {
    access_key_id: String,
    anon_key: Secret,
    source: Source,
}

enum Source {
    File(TokenFile),
    Refresh(Arc<Refresher>),
}

impl std::fmt::Debug for SessionCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let source = match &self.inner.source {
            Source::File(_) => "token file",
            Source::Refresh(_) => "refresh token",
        };
        f.debug_struct("SessionCredentials")
            .field("access_key_id", &self.inner.access_key_id)
            .field("anon_key", &self.inner.anon_key)
            .field("source", &source)
            .finish()
    }
}

/// Whether `key` is one of the newer publishable keys, which the S3 endpoint does not accept.
pub fn is_publishable_key(key: &str) -> bool {
    key.starts_with("sb_publishable_")
}

impl SessionCredentials {
    /// Check the settings and get a first token; a token that is expired and cannot be
    /// renewed fails here, before anything is mounted. Must run inside the tokio runtime.
    pub async fn start(cfg: SessionConfig) -> Result<Self, CredentialsError> {
        if is_publishable_key(cfg.anon_key.expose()) {
            tracing::warn!(
                "the anon key is a publishable key (sb_publishable_…): Supabase's S3 endpoint \
                 rejects it with SignatureDoesNotMatch; use the legacy anon key (a JWT, under \
                 Project Settings → API Keys → Legacy API keys)"
            );
        }
        let source = match &cfg.token {
            TokenConfig::File(path) => {
                tracing::debug!(path = %path.display(), "session token from a file");
                Source::File(TokenFile::open(path)?)
            }
            TokenConfig::Refresh {
                refresh_file,
                project_url,
                initial,
            } => {
                tracing::debug!(
                    path = %refresh_file.display(),
                    %project_url,
                    "session renewed through Supabase Auth"
                );
                let auth = HttpAuth::new(project_url, cfg.anon_key.clone())
                    .map_err(CredentialsError::Tls)?;
                let refresher =
                    Refresher::start(Arc::new(auth), refresh_file, initial.clone()).await?;
                refresher.spawn();
                Source::Refresh(refresher)
            }
        };
        Ok(SessionCredentials {
            inner: Arc::new(Inner {
                access_key_id: cfg.access_key_id,
                anon_key: cfg.anon_key,
                source,
            }),
        })
    }

    fn token(&self) -> (Secret, Option<jwt::Claims>, u64) {
        match &self.inner.source {
            Source::File(f) => {
                let t = f.current(false);
                (t.token, t.claims, t.generation)
            }
            Source::Refresh(r) => {
                let c = r.current();
                (c.token, c.claims, c.generation)
            }
        }
    }

    /// When the token in use expires, if it says.
    pub fn token_expiry(&self) -> Option<std::time::SystemTime> {
        self.token().1.map(|c| c.exp)
    }

    fn credentials(&self) -> Credentials {
        let (token, claims, _) = self.token();
        Credentials::new(
            self.inner.access_key_id.clone(),
            self.inner.anon_key.expose(),
            Some(token.expose().to_string()),
            claims.map(|c| c.exp),
            "supamount-session",
        )
    }
}

impl ProvideCredentials for SessionCredentials {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::ready(Ok::<_, provider::error::CredentialsError>(
            self.credentials(),
        ))
    }
}

#[async_trait]
impl TokenRenewal for SessionCredentials {
    fn generation(&self) -> u64 {
        self.token().2
    }

    fn expires_soon(&self) -> bool {
        match self.token().1 {
            Some(c) => c.exp <= SystemTime::now() + EXPIRY_SKEW,
            None => true,
        }
    }

    async fn renew(&self, seen: u64) -> Renewal {
        match &self.inner.source {
            Source::File(f) => f.renew(seen),
            Source::Refresh(r) => r.renew(seen).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::files::write_atomic_private;
    use crate::credentials::jwt::tests::token_with;

    #[test]
    fn debug_masks_secrets() {
        let secret = Secret::new("eyJhbGciOi.secret-part.sig");
        assert_eq!(format!("{secret:?}"), "****");
        let cfg = SessionConfig {
            access_key_id: "stub".into(),
            anon_key: Secret::new("anon-key-value"),
            token: TokenConfig::Refresh {
                refresh_file: "/tmp/r".into(),
                project_url: "http://127.0.0.1:1".into(),
                initial: Some(Secret::new("jwt-value")),
            },
        };
        let text = format!("{cfg:?}");
        assert!(text.contains("stub"), "{text}");
        for hidden in ["anon-key-value", "jwt-value"] {
            assert!(!text.contains(hidden), "{hidden} shown in {text}");
        }
    }

    #[tokio::test]
    async fn provides_the_token_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwt");
        let exp = jwt::unix_seconds(SystemTime::now()) + 600;
        let jwt_text = token_with(&format!(r#"{{"exp":{exp}}}"#));
        write_atomic_private(&path, &jwt_text).unwrap();
        let creds = SessionCredentials::start(SessionConfig {
            access_key_id: "stub".into(),
            anon_key: Secret::new("anon"),
            token: TokenConfig::File(path),
        })
        .await
        .unwrap();
        let c = creds.provide_credentials().await.unwrap();
        assert_eq!(c.access_key_id(), "stub");
        assert_eq!(c.secret_access_key(), "anon");
        assert_eq!(c.session_token(), Some(jwt_text.as_str()));
        assert_eq!(c.expiry().map(jwt::unix_seconds), Some(exp));
        assert!(!creds.expires_soon());
        let text = format!("{creds:?}");
        assert!(
            !text.contains("anon\"") && !text.contains(&jwt_text),
            "{text}"
        );
    }

    #[test]
    fn publishable_keys_are_recognised() {
        assert!(is_publishable_key("sb_publishable_abc"));
        assert!(!is_publishable_key("eyJhbGciOiJIUzI1NiJ9.x.y"));
    }
}
