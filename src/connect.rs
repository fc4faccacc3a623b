//! Turns flags, environment and an AWS profile into one S3 client: endpoint, region and
//! credentials, highest source first (flags, then environment, then the profile).

use std::time::Duration;

use aws_config::environment::region::EnvironmentVariableRegionProvider;
use aws_config::environment::EnvironmentVariableCredentialsProvider;
use aws_config::meta::credentials::CredentialsProviderChain;
use aws_config::meta::region::RegionProviderChain;
use aws_config::profile::{ProfileFileCredentialsProvider, ProfileFileRegionProvider};
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;
use aws_sdk_s3::config::{
    Credentials, ProvideCredentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};

use crate::store::s3::S3Store;

/// What the user told us about where and how to connect.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    pub endpoint_url: Option<String>,
    pub region: Option<String>,
    pub profile: Option<String>,
    /// Fixed keys that replace the environment and profile (the built-in local server).
    pub fixed_credentials: Option<Credentials>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(
        "no endpoint: pass --endpoint-url (for Supabase: \
         https://PROJECT_REF.storage.supabase.co/storage/v1/s3), set AWS_ENDPOINT_URL, or put \
         endpoint_url in the AWS profile"
    )]
    NoEndpoint,
    #[error(
        "no region for {endpoint}: pass --region, set AWS_REGION or put region in the AWS \
         profile (a Supabase project's region is shown in its Storage settings, S3 section)"
    )]
    NoRegion { endpoint: String },
    #[error(
        "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or name an AWS \
         profile with --profile ({source_text})"
    )]
    NoCredentials { source_text: String },
}

/// The resolved connection, for messages.
pub struct Connected {
    pub store: S3Store,
    pub endpoint: String,
    pub region: String,
}

/// Resolve endpoint, region and credentials, and build the store for `bucket`.
pub async fn connect(opts: &ConnectOptions, bucket: &str) -> Result<Connected, ConnectError> {
    let profile = opts
        .profile
        .clone()
        .unwrap_or_else(|| "default".to_string());
    let credentials = match &opts.fixed_credentials {
        Some(fixed) => CredentialsProviderChain::first_try("fixed", fixed.clone()),
        None => CredentialsProviderChain::first_try(
            "environment",
            EnvironmentVariableCredentialsProvider::new(),
        ),
    }
    .or_else(
        "profile",
        ProfileFileCredentialsProvider::builder()
            .profile_name(&profile)
            .build(),
    );
    // Fail here with a clear line rather than on the first request.
    if let Err(e) = credentials.provide_credentials().await {
        return Err(ConnectError::NoCredentials {
            source_text: e.to_string(),
        });
    }

    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .profile_name(&profile)
        .credentials_provider(credentials)
        .region(region_chain(opts, &profile))
        .retry_config(RetryConfig::standard().with_max_attempts(4))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .read_timeout(Duration::from_secs(120))
                .build(),
        );
    if let Some(url) = &opts.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    let sdk = loader.load().await;

    let endpoint = sdk
        .endpoint_url()
        .map(with_trailing_slash)
        .ok_or(ConnectError::NoEndpoint)?;
    let region = match sdk.region() {
        Some(r) => r.to_string(),
        None if endpoint.contains("supabase.co") => {
            return Err(ConnectError::NoRegion { endpoint })
        }
        // Local and self-hosted servers sign with any of these; us-east-1 is the S3 default.
        None => "us-east-1".to_string(),
    };
    tracing::debug!(%endpoint, %region, profile = %profile, "resolved connection settings");

    let config = aws_sdk_s3::config::Builder::from(&sdk)
        .endpoint_url(&endpoint)
        .region(Region::new(region.clone()))
        .force_path_style(true)
        // Supabase ignores checksums, and streaming-checksum bodies are chunked, which it caps.
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .build();
    let client = aws_sdk_s3::Client::from_conf(config);
    Ok(Connected {
        store: S3Store::new(client, bucket, endpoint.clone()),
        endpoint,
        region,
    })
}

/// The SDK joins a path-style bucket straight onto the endpoint's path, so an endpoint with a
/// path (`…/storage/v1/s3`) needs a trailing slash or requests go to `…/s3BUCKET`.
fn with_trailing_slash(url: &str) -> String {
    if url.ends_with('/') {
        url.to_string()
    } else {
        format!("{url}/")
    }
}

fn region_chain(opts: &ConnectOptions, profile: &str) -> RegionProviderChain {
    RegionProviderChain::first_try(opts.region.clone().map(Region::new))
        .or_else(EnvironmentVariableRegionProvider::new())
        .or_else(
            ProfileFileRegionProvider::builder()
                .profile_name(profile)
                .build(),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_paths_end_with_a_slash() {
        assert_eq!(
            with_trailing_slash("http://127.0.0.1:5000/s3"),
            "http://127.0.0.1:5000/s3/"
        );
        assert_eq!(with_trailing_slash("http://h:1/"), "http://h:1/");
    }
}
