//! Reading the claims of a JWT that we only carry, never verify: the server checks the
//! signature; we need `exp` (and `iat`) to renew in time and to say why a request was refused.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// The claims that decide renewal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claims {
    pub exp: SystemTime,
    pub iat: Option<SystemTime>,
}

impl Claims {
    /// How long the token was issued for, when it says when it was issued.
    pub fn lifetime(&self) -> Option<Duration> {
        self.exp.duration_since(self.iat?).ok()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    #[error("not a JWT (expected three dot-separated parts)")]
    NotAJwt,
    #[error("the JWT's payload is not base64url JSON")]
    BadPayload,
    #[error("the JWT has no numeric \"exp\" claim")]
    NoExp,
}

/// The `exp` and `iat` claims of `token`, read without checking the signature. Errors never
/// quote the token.
pub fn claims(token: &str) -> Result<Claims, JwtError> {
    let mut parts = token.trim().split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::NotAJwt);
    };
    // Some issuers pad; base64url without padding is the standard form.
    let bytes = URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| JwtError::BadPayload)?;
    let json: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|_| JwtError::BadPayload)?;
    let time = |name: &str| {
        json.get(name)
            .and_then(serde_json::Value::as_f64)
            .filter(|t| *t >= 0.0 && t.is_finite())
            .map(|t| UNIX_EPOCH + Duration::from_secs_f64(t))
    };
    Ok(Claims {
        exp: time("exp").ok_or(JwtError::NoExp)?,
        iat: time("iat"),
    })
}

/// Seconds since the Unix epoch, for log lines ("expires at 1700000000").
pub fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An unsigned token with the given payload (the signature is never checked here).
    pub(crate) fn token_with(payload: &str) -> String {
        let head = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        format!("{head}.{}.c2ln", URL_SAFE_NO_PAD.encode(payload))
    }

    #[test]
    fn reads_exp_and_iat() {
        let c = claims(&token_with(
            r#"{"sub":"u","iat":1700000000,"exp":1700003600}"#,
        ))
        .unwrap();
        assert_eq!(unix_seconds(c.exp), 1_700_003_600);
        assert_eq!(c.lifetime(), Some(Duration::from_secs(3600)));
        let c = claims(&token_with(r#"{"exp":1700003600}"#)).unwrap();
        assert_eq!((c.iat, c.lifetime()), (None, None));
    }

    #[test]
    fn refuses_what_is_not_a_jwt() {
        assert_eq!(claims("abc"), Err(JwtError::NotAJwt));
        assert_eq!(claims("a.b.c.d"), Err(JwtError::NotAJwt));
        assert_eq!(claims("a.!!!.c"), Err(JwtError::BadPayload));
        assert_eq!(claims(&token_with(r#"{"sub":"u"}"#)), Err(JwtError::NoExp));
        assert_eq!(
            claims(&token_with(r#"{"exp":"soon"}"#)),
            Err(JwtError::NoExp)
        );
    }

    #[test]
    fn the_real_lab_anon_key_decodes() {
        let anon =
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJzdXBhYmFzZS1sYWIiLCJyb2xlIjoiYW5\
                    vbiIsImlhdCI6MTcwMDAwMDAwMCwiZXhwIjoyMDAwMDAwMDAwfQ.kPYmjtCKfUo41PjgiDSqbXdJTPF\
                    e-xAzpFoQNlrngrk";
        assert_eq!(unix_seconds(claims(anon).unwrap().exp), 2_000_000_000);
    }
}
