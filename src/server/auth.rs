//! Who may call the local server: one access key pair, signed for an accepted region.
//!
//! s3s checks each SigV4 signature with the secret this module hands it. Answers follow the
//! Supabase server: an unknown access key id is 403 `AccessDenied`, a wrong secret 403
//! `SignatureDoesNotMatch` (from s3s), and so is a request signed for a region the server does
//! not accept, because Supabase verifies the signature with its own region.

use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey, SimpleAuth};
use s3s::{s3_error, S3Result};

/// Regions the Supabase server accepts besides its own `REGION` setting.
const ALSO_ACCEPTED_REGIONS: [&str; 2] = ["us-east-1", "auto"];

/// The configured key pair.
pub(crate) struct KeyAuth {
    keys: SimpleAuth,
}

impl KeyAuth {
    pub(crate) fn new(access_key_id: &str, secret_access_key: &str) -> KeyAuth {
        KeyAuth {
            keys: SimpleAuth::from_single(access_key_id, secret_access_key),
        }
    }
}

#[async_trait::async_trait]
impl S3Auth for KeyAuth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        match self.keys.lookup(access_key) {
            Some(secret) => Ok(secret.clone()),
            None => Err(s3_error!(
                AccessDenied,
                "The access key id is not known to this server"
            )),
        }
    }
}

/// Refuses unsigned requests and requests signed for another region.
pub(crate) struct RegionCheck {
    region: String,
}

impl RegionCheck {
    pub(crate) fn new(region: &str) -> RegionCheck {
        RegionCheck {
            region: region.to_owned(),
        }
    }

    fn accepts(&self, region: &str) -> bool {
        region.is_empty() || region == self.region || ALSO_ACCEPTED_REGIONS.contains(&region)
    }
}

#[async_trait::async_trait]
impl S3Access for RegionCheck {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        if cx.credentials().is_none() {
            return Err(s3_error!(AccessDenied, "Signature is required"));
        }
        match signed_region(cx) {
            Some(region) if !self.accepts(&region) => {
                tracing::debug!(region, "refused a request signed for another region");
                Err(s3_error!(
                    SignatureDoesNotMatch,
                    "The request was signed for region '{region}'; this server's region is '{}'",
                    self.region
                ))
            }
            _ => Ok(()),
        }
    }
}

/// The region in the SigV4 credential scope (`AKID/DATE/REGION/s3/aws4_request`), from the
/// Authorization header or a presigned URL's `X-Amz-Credential`. None for SigV2.
fn signed_region(cx: &S3AccessContext<'_>) -> Option<String> {
    let from_header = cx
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once("Credential="))
        .map(|(_, rest)| rest.split(',').next().unwrap_or(rest).trim().to_owned());
    let from_query = || {
        cx.uri().query()?.split('&').find_map(|pair| {
            let value = pair.strip_prefix("X-Amz-Credential=")?;
            Some(value.replace("%2F", "/").replace("%2f", "/"))
        })
    };
    let scope = from_header.or_else(from_query)?;
    scope.split('/').nth(2).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_regions() {
        let check = RegionCheck::new("local");
        for region in ["local", "us-east-1", "auto", ""] {
            assert!(check.accepts(region), "{region}");
        }
        assert!(!check.accepts("eu-west-1"));
    }
}
