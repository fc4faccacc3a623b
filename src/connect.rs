//! Turns flags, environment and an AWS profile into one S3 client: endpoint, region and
//! credentials, highest source first (flags, then environment, then the profile). In
//! session-token mode the credentials come from [`crate::credentials`] instead, and the client
//! keeps no identity cache so that a renewed token is used by the next request.

use std::sync::Arc;
use std::time::Duration;

use aws_config::environment::region::EnvironmentVariableRegionProvider;
use aws_config::environment::EnvironmentVariableCredentialsProvider;
use aws_config::meta::credentials::CredentialsProviderChain;
use aws_config::meta::region::RegionProviderChain;
use aws_config::profile::{ProfileFileCredentialsProvider, ProfileFileRegionProvider};
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;
use aws_runtime::env_config::file::EnvConfigFiles as ProfileFiles;
use aws_sdk_s3::config::{
    Credentials, IdentityCache, ProvideCredentials, Region, RequestChecksumCalculation,
    ResponseChecksumValidation,
};

use crate::credentials::SessionCredentials;
use crate::endpoint::{self, EndpointError, EndpointRequest};
use crate::store::renewing::RenewingStore;
use crate::store::s3::S3Store;
use crate::store::ObjectStore;

/// What the user told us about where and how to connect.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    pub endpoint_url: Option<String>,
    pub region: Option<String>,
    pub profile: Option<String>,
    /// `--project-ref`: builds the endpoint of a hosted project.
    pub project_ref: Option<String>,
    /// `--no-direct-host`: keep an endpoint on the API gateway as given.
    pub no_direct_host: bool,
    /// Fixed keys that replace the environment and profile (the built-in local server).
    pub fixed_credentials: Option<Credentials>,
    /// Session-token mode: the user's token instead of access keys.
    pub session: Option<SessionCredentials>,
    /// Profile files to read instead of the default `~/.aws/config` and `~/.aws/credentials`.
    pub profile_files: Option<ProfileFiles>,
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
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
}

/// The resolved connection, for messages.
pub struct Connected {
    pub store: S3Store,
    pub endpoint: String,
    pub region: String,
    session: Option<SessionCredentials>,
}

impl Connected {
    /// Where and how this connects, for `supamount status`.
    pub fn view(&self) -> crate::mount::ConnectionView {
        let expiry = self.session.clone().map(|session| {
            let expiry: crate::status::TokenExpiry =
                std::sync::Arc::new(move || session.token_expiry());
            expiry
        });
        crate::mount::ConnectionView {
            endpoint: self.endpoint.clone(),
            credentials: if self.session.is_some() {
                "session token".into()
            } else {
                "access keys".into()
            },
            token_expiry: expiry,
        }
    }

    /// The store the filesystem uses: in session-token mode it renews an expired token once
    /// and retries once before a request counts as refused.
    pub fn into_store(self) -> Arc<dyn ObjectStore> {
        match self.session {
            Some(session) => Arc::new(RenewingStore::new(self.store, Arc::new(session))),
            None => Arc::new(self.store),
        }
    }
}

/// Resolve endpoint, region and credentials, and build the store for `bucket`.
pub async fn connect(opts: &ConnectOptions, bucket: &str) -> Result<Connected, ConnectError> {
    let profile = opts
        .profile
        .clone()
        .unwrap_or_else(|| "default".to_string());
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .profile_name(&profile)
        .region(region_chain(opts, &profile))
        .retry_config(RetryConfig::standard().with_max_attempts(4))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .read_timeout(Duration::from_secs(120))
                .build(),
        );
    if let Some(files) = &opts.profile_files {
        loader = loader.profile_files(files.clone());
    }
    loader = match &opts.session {
        Some(session) => {
            tracing::debug!("credentials: session token (user JWT)");
            loader.credentials_provider(session.clone())
        }
        None => loader.credentials_provider(access_keys(opts, &profile).await?),
    };
    if let Some(url) = &opts.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    let sdk = loader.load().await;

    let resolved = endpoint::resolve(&EndpointRequest {
        project_ref: opts.project_ref.clone(),
        endpoint_url: sdk.endpoint_url().map(str::to_string),
        no_direct_host: opts.no_direct_host,
    })?
    .ok_or(ConnectError::NoEndpoint)?;
    if let Some(given) = &resolved.moved_from {
        tracing::info!(
            given = %given,
            using = %resolved.url,
            "using the project's direct storage hostname, which takes large uploads the API \
             gateway refuses (--no-direct-host keeps the endpoint as given)"
        );
    }
    let endpoint = with_trailing_slash(&resolved.url);
    let region = match sdk.region() {
        Some(r) => r.to_string(),
        None if endpoint::is_hosted(&endpoint) => return Err(ConnectError::NoRegion { endpoint }),
        // Local and self-hosted servers sign with any of these; us-east-1 is the S3 default.
        None => "us-east-1".to_string(),
    };
    tracing::debug!(%endpoint, %region, profile = %profile, "resolved connection settings");

    let mut config = aws_sdk_s3::config::Builder::from(&sdk);
    if opts.session.is_some() {
        // The provider is cheap and always current; a cache would keep an expired token.
        config = config.identity_cache(IdentityCache::no_cache());
    }
    let config = config
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
        session: opts.session.clone(),
    })
}

/// Access keys from the fixed keys, the environment or the profile, checked now so that a
/// missing key fails with a clear line rather than on the first request.
async fn access_keys(
    opts: &ConnectOptions,
    profile: &str,
) -> Result<CredentialsProviderChain, ConnectError> {
    let mut from_profile = ProfileFileCredentialsProvider::builder().profile_name(profile);
    if let Some(files) = &opts.profile_files {
        from_profile = from_profile.profile_files(files.clone());
    }
    let chain = match &opts.fixed_credentials {
        Some(fixed) => CredentialsProviderChain::first_try("fixed", fixed.clone()),
        None => CredentialsProviderChain::first_try(
            "environment",
            EnvironmentVariableCredentialsProvider::new(),
        ),
    }
    .or_else("profile", from_profile.build());
    match chain.provide_credentials().await {
        Ok(_) => Ok(chain),
        Err(e) => Err(ConnectError::NoCredentials {
            source_text: e.to_string(),
        }),
    }
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
    let mut from_profile = ProfileFileRegionProvider::builder().profile_name(profile);
    if let Some(files) = &opts.profile_files {
        from_profile = from_profile.profile_files(files.clone());
    }
    RegionProviderChain::first_try(opts.region.clone().map(Region::new))
        .or_else(EnvironmentVariableRegionProvider::new())
        .or_else(from_profile.build())
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

    fn profile_files(dir: &std::path::Path, credentials: &str, config: &str) -> ProfileFiles {
        use aws_runtime::env_config::file::EnvConfigFileKind as ProfileFileKind;
        std::fs::write(dir.join("credentials"), credentials).unwrap();
        std::fs::write(dir.join("config"), config).unwrap();
        ProfileFiles::builder()
            .with_file(ProfileFileKind::Credentials, dir.join("credentials"))
            .with_file(ProfileFileKind::Config, dir.join("config"))
            .build()
    }

    /// The `[supabase]` profile of the README keeps everything in the credentials file.
    #[tokio::test]
    async fn supabase_profile_in_the_credentials_file() {
        let dir = tempfile::tempdir().unwrap();
        let files = profile_files(
            dir.path(),
            "[default]\naws_access_key_id = other\naws_secret_access_key = other\n\n\
             [supabase]\naws_access_key_id = AKSUPA\naws_secret_access_key = s3cr3t\n\
             endpoint_url = https://abcd.supabase.co/storage/v1/s3\nregion = eu-central-1\n",
            "",
        );
        let opts = ConnectOptions {
            profile: Some("supabase".into()),
            profile_files: Some(files),
            ..Default::default()
        };
        let c = connect(&opts, "b").await.unwrap();
        // Moved from the gateway to the direct storage hostname.
        assert_eq!(
            c.endpoint,
            "https://abcd.storage.supabase.co/storage/v1/s3/"
        );
        assert_eq!(c.region, "eu-central-1");
    }

    #[tokio::test]
    async fn hosted_project_without_region_says_where_to_find_it() {
        let dir = tempfile::tempdir().unwrap();
        let files = profile_files(
            dir.path(),
            "[supabase]\naws_access_key_id = AK\naws_secret_access_key = s\n",
            "",
        );
        let opts = ConnectOptions {
            profile: Some("supabase".into()),
            project_ref: Some("abcd".into()),
            profile_files: Some(files),
            ..Default::default()
        };
        let err = connect(&opts, "b").await.err().unwrap().to_string();
        assert!(err.contains("Storage settings"), "{err}");
        assert!(err.contains("abcd.storage.supabase.co"), "{err}");
    }
}
