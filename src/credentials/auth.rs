//! Supabase Auth's refresh-token grant: `POST {project_url}/auth/v1/token?grant_type=refresh_token`
//! with the anon key as `apikey`. Answers are sorted into a new session, a terminal refusal (the
//! user must log in again) or a transient failure (worth retrying).

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::Secret;
use crate::error_chain::error_chain;

/// Bound on one refresh request, so that a hung Auth server cannot stall renewal.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What a successful refresh returns.
#[derive(Clone)]
pub struct AuthSession {
    pub access_token: Secret,
    pub refresh_token: Secret,
    /// Seconds the access token lives, as Auth states it.
    pub expires_in: Option<u64>,
}

impl std::fmt::Debug for AuthSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSession")
            .field("access_token", &self.access_token)
            .field("refresh_token", &self.refresh_token)
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RefreshError {
    /// Auth refused the refresh token for good (used, revoked, unknown) or refused the anon key.
    #[error("Supabase Auth refused the refresh token (HTTP {status} {code}): {message}")]
    Terminal {
        status: u16,
        code: String,
        message: String,
    },
    /// Worth retrying: 5xx, 429, a timeout, no connection.
    #[error("Supabase Auth could not renew the session now: {0}")]
    Transient(String),
}

/// The refresh grant, behind a trait so that renewal is tested without a server.
#[async_trait]
pub trait AuthApi: Send + Sync + 'static {
    async fn refresh(&self, refresh_token: &Secret) -> Result<AuthSession, RefreshError>;
}

/// The real Supabase Auth over HTTP(S).
pub struct HttpAuth {
    url: String,
    anon_key: Secret,
    client: HttpClient,
}

enum HttpClient {
    Plain(Client<HttpConnector, Full<Bytes>>),
    Tls(Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>),
}

impl HttpAuth {
    /// `project_url` is `https://REF.supabase.co` (or a self-hosted or test server).
    pub fn new(project_url: &str, anon_key: Secret) -> std::io::Result<Self> {
        let base = project_url.trim_end_matches('/');
        let url = format!("{base}/auth/v1/token?grant_type=refresh_token");
        let builder = Client::builder(TokioExecutor::new());
        // Plain HTTP needs no CA certificates, so a machine without them can still test locally.
        let client = if base.starts_with("http://") {
            HttpClient::Plain(builder.build(HttpConnector::new()))
        } else {
            let https = hyper_rustls::HttpsConnectorBuilder::new()
                .with_native_roots()?
                .https_only()
                .enable_http1()
                .build();
            HttpClient::Tls(builder.build(https))
        };
        Ok(HttpAuth {
            url,
            anon_key,
            client,
        })
    }

    async fn post(&self, body: Bytes) -> Result<(u16, Bytes), String> {
        let apikey = HeaderValue::from_str(self.anon_key.expose())
            .map_err(|_| "the anon key contains characters not allowed in a header".to_string())?;
        let request = hyper::Request::post(&self.url)
            .header(CONTENT_TYPE, "application/json")
            .header("apikey", apikey)
            .body(Full::new(body))
            .map_err(|e| format!("building the request: {e}"))?;
        let send = async {
            let response = match &self.client {
                HttpClient::Plain(c) => c.request(request).await,
                HttpClient::Tls(c) => c.request(request).await,
            }
            .map_err(|e| error_chain(&e))?;
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| error_chain(&e))?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, send)
            .await
            .map_err(|_| format!("no answer within {REQUEST_TIMEOUT:?}"))?
    }
}

#[async_trait]
impl AuthApi for HttpAuth {
    async fn refresh(&self, refresh_token: &Secret) -> Result<AuthSession, RefreshError> {
        let body = serde_json::json!({ "refresh_token": refresh_token.expose() }).to_string();
        let (status, body) = self
            .post(Bytes::from(body))
            .await
            .map_err(|e| RefreshError::Transient(format!("{}: {e}", self.url)))?;
        parse_answer(status, &body)
    }
}

#[derive(serde::Deserialize)]
struct SessionBody {
    access_token: String,
    refresh_token: String,
    expires_in: Option<u64>,
}

#[derive(serde::Deserialize, Default)]
struct ErrorBody {
    error_code: Option<String>,
    error: Option<String>,
    msg: Option<String>,
    message: Option<String>,
    error_description: Option<String>,
}

/// Sort Auth's answer. Only 408, 429 and 5xx are worth retrying; any other refusal will not
/// change by asking again with the same token.
pub(crate) fn parse_answer(status: u16, body: &[u8]) -> Result<AuthSession, RefreshError> {
    if (200..300).contains(&status) {
        let s: SessionBody = serde_json::from_slice(body).map_err(|e| {
            RefreshError::Transient(format!("HTTP {status} without a session in the body: {e}"))
        })?;
        return Ok(AuthSession {
            access_token: Secret::new(s.access_token),
            refresh_token: Secret::new(s.refresh_token),
            expires_in: s.expires_in,
        });
    }
    let e: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    let code = e.error_code.or(e.error).unwrap_or_default();
    let message = [e.msg, e.message, e.error_description]
        .into_iter()
        .flatten()
        .next()
        .unwrap_or_default();
    if status == 408 || status == 429 || status >= 500 {
        return Err(RefreshError::Transient(format!(
            "HTTP {status} {code} {message}"
        )));
    }
    Err(RefreshError::Terminal {
        status,
        code,
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_auth_answers() {
        let ok = parse_answer(
            200,
            br#"{"access_token":"a.b.c","token_type":"bearer","expires_in":3600,
                 "expires_at":1,"refresh_token":"r2","user":{}}"#,
        )
        .unwrap();
        assert_eq!(ok.access_token.expose(), "a.b.c");
        assert_eq!(ok.refresh_token.expose(), "r2");
        assert_eq!(ok.expires_in, Some(3600));

        let used = parse_answer(
            400,
            br#"{"code":400,"error_code":"refresh_token_already_used","msg":"Invalid Refresh Token: Already Used"}"#,
        );
        assert!(matches!(used, Err(RefreshError::Terminal { ref code, .. })
            if code == "refresh_token_already_used"));
        let grant = parse_answer(
            400,
            br#"{"error":"invalid_grant","error_description":"Invalid Refresh Token"}"#,
        );
        assert!(
            matches!(grant, Err(RefreshError::Terminal { ref code, .. }) if code == "invalid_grant")
        );
        assert!(matches!(
            parse_answer(429, b"{}"),
            Err(RefreshError::Transient(_))
        ));
        assert!(matches!(
            parse_answer(503, b"down"),
            Err(RefreshError::Transient(_))
        ));
        assert!(matches!(
            parse_answer(200, b"not json"),
            Err(RefreshError::Transient(_))
        ));
    }

    #[test]
    fn session_debug_hides_tokens() {
        let s = AuthSession {
            access_token: Secret::new("eyJaccess"),
            refresh_token: Secret::new("refreshme"),
            expires_in: Some(20),
        };
        let text = format!("{s:?}");
        assert!(
            !text.contains("eyJaccess") && !text.contains("refreshme"),
            "{text}"
        );
    }
}
