//! Where the S3 endpoint of a Supabase project lives: built from `--project-ref`, or moved from
//! the API gateway (`REF.supabase.co`) to the direct storage hostname (`REF.storage.supabase.co`),
//! which accepts the large uploads that the gateway refuses. Other hosts are used as given.

/// The domain of hosted Supabase projects.
const HOSTED_DOMAIN: &str = "supabase.co";
/// The direct storage hostname is `REF.storage.supabase.co`.
const STORAGE_SUBDOMAIN: &str = "storage.";
/// The S3 path on a hosted project (both on the gateway and on the direct storage hostname).
const S3_PATH: &str = "/storage/v1/s3";

/// What the user asked for.
#[derive(Debug, Clone, Default)]
pub struct EndpointRequest {
    /// `--project-ref` (or `SUPABASE_PROJECT_REF`).
    pub project_ref: Option<String>,
    /// The endpoint from the flag, the environment or the profile.
    pub endpoint_url: Option<String>,
    /// `--no-direct-host`: keep a gateway endpoint as given.
    pub no_direct_host: bool,
}

/// The endpoint to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedEndpoint {
    pub url: String,
    /// The endpoint as given, when it was moved to the direct storage hostname (for one log line).
    pub moved_from: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EndpointError {
    #[error("--project-ref {0:?} is not a project reference (expected letters and digits only)")]
    BadProjectRef(String),
    #[error(
        "--project-ref {project_ref} and the endpoint {endpoint} name different projects; \
         give only one of them"
    )]
    Conflict {
        project_ref: String,
        endpoint: String,
    },
}

/// The direct storage S3 endpoint of a hosted project.
pub fn project_endpoint(project_ref: &str) -> String {
    format!("https://{project_ref}.{STORAGE_SUBDOMAIN}{HOSTED_DOMAIN}{S3_PATH}")
}

/// The project URL (Supabase Auth and the REST API live there) of a hosted project.
pub fn project_url(project_ref: &str) -> String {
    format!("https://{project_ref}.{HOSTED_DOMAIN}")
}

/// Decide the endpoint. `None` when nothing names one (the caller reports it).
pub fn resolve(req: &EndpointRequest) -> Result<Option<ResolvedEndpoint>, EndpointError> {
    if let Some(r) = &req.project_ref {
        if !is_project_ref(r) {
            return Err(EndpointError::BadProjectRef(r.clone()));
        }
    }
    let Some(given) = &req.endpoint_url else {
        return Ok(req.project_ref.as_deref().map(|r| ResolvedEndpoint {
            url: project_endpoint(r),
            moved_from: None,
        }));
    };
    if let (Some(r), Some(host_ref)) = (&req.project_ref, hosted_project_ref(given)) {
        if *r != host_ref {
            return Err(EndpointError::Conflict {
                project_ref: r.clone(),
                endpoint: given.clone(),
            });
        }
    }
    let gateway_ref = gateway_project_ref(given);
    Ok(Some(match gateway_ref {
        Some(r) if !req.no_direct_host => ResolvedEndpoint {
            url: project_endpoint(&r),
            moved_from: Some(given.clone()),
        },
        _ => ResolvedEndpoint {
            url: given.clone(),
            moved_from: None,
        },
    }))
}

/// Whether the endpoint is a hosted Supabase project (which signs with the project's region,
/// so a missing region cannot be guessed).
pub fn is_hosted(url: &str) -> bool {
    host_of(url).is_some_and(|h| h == HOSTED_DOMAIN || h.ends_with(".supabase.co"))
}

/// The project ref of a hosted endpoint, on the gateway or on the direct storage hostname.
pub fn hosted_project_ref(url: &str) -> Option<String> {
    let host = host_of(url)?;
    let label = host
        .strip_suffix(".storage.supabase.co")
        .or_else(|| host.strip_suffix(".supabase.co"))?;
    is_project_ref(label).then(|| label.to_string())
}

/// The project ref when `url` is on the API gateway `REF.supabase.co`.
fn gateway_project_ref(url: &str) -> Option<String> {
    let label = host_of(url)?.strip_suffix(".supabase.co")?.to_string();
    is_project_ref(&label).then_some(label)
}

fn is_project_ref(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The lower-cased host of an `http(s)://` URL, without user info or port.
fn host_of(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit('@').next()?;
    let host = host_port.split(':').next()?;
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(project_ref: Option<&str>, url: Option<&str>, no_direct: bool) -> EndpointRequest {
        EndpointRequest {
            project_ref: project_ref.map(str::to_string),
            endpoint_url: url.map(str::to_string),
            no_direct_host: no_direct,
        }
    }

    #[test]
    fn project_ref_builds_the_direct_host() {
        let got = resolve(&req(Some("abcd"), None, false)).unwrap().unwrap();
        assert_eq!(got.url, "https://abcd.storage.supabase.co/storage/v1/s3");
        assert_eq!(got.moved_from, None);
        assert_eq!(project_url("abcd"), "https://abcd.supabase.co");
    }

    #[test]
    fn gateway_endpoint_moves_to_the_direct_host() {
        for given in [
            "https://abcd.supabase.co/storage/v1/s3",
            "https://abcd.supabase.co",
            "https://ABCD.supabase.co/storage/v1/s3/",
        ] {
            let got = resolve(&req(None, Some(given), false)).unwrap().unwrap();
            let want_ref = given[8..12].to_ascii_lowercase();
            assert_eq!(got.url, project_endpoint(&want_ref), "{given}");
            assert_eq!(got.moved_from.as_deref(), Some(given));
        }
        let direct = "https://abcd.storage.supabase.co/storage/v1/s3";
        let got = resolve(&req(None, Some(direct), false)).unwrap().unwrap();
        assert_eq!((got.url.as_str(), got.moved_from), (direct, None));
    }

    #[test]
    fn no_direct_host_keeps_the_gateway() {
        let given = "https://abcd.supabase.co/storage/v1/s3";
        let got = resolve(&req(None, Some(given), true)).unwrap().unwrap();
        assert_eq!((got.url.as_str(), got.moved_from), (given, None));
    }

    #[test]
    fn other_hosts_are_used_as_given() {
        for given in [
            "http://127.0.0.1:5000/s3",
            "https://storage.example.com/storage/v1/s3",
            "https://notsupabase.co/s3",
            "https://abcd.supabase.co.evil.example/s3",
        ] {
            let got = resolve(&req(None, Some(given), false)).unwrap().unwrap();
            assert_eq!((got.url.as_str(), got.moved_from), (given, None));
        }
        assert_eq!(resolve(&req(None, None, false)).unwrap(), None);
    }

    #[test]
    fn refs_are_checked() {
        assert_eq!(
            resolve(&req(Some("ab.cd"), None, false)),
            Err(EndpointError::BadProjectRef("ab.cd".into()))
        );
        let conflict = resolve(&req(
            Some("wxyz"),
            Some("https://abcd.supabase.co/storage/v1/s3"),
            false,
        ));
        assert!(matches!(conflict, Err(EndpointError::Conflict { .. })));
        // A ref and a self-hosted endpoint: the endpoint wins, the ref names the tenant.
        let local = resolve(&req(Some("abcd"), Some("http://127.0.0.1:5000/s3"), false));
        assert_eq!(local.unwrap().unwrap().url, "http://127.0.0.1:5000/s3");
    }

    #[test]
    fn hosted_detection() {
        assert!(is_hosted("https://abcd.storage.supabase.co/storage/v1/s3"));
        assert!(is_hosted("https://user@abcd.supabase.co:443/x"));
        assert!(!is_hosted("http://127.0.0.1:5000/s3"));
        assert!(!is_hosted("https://supabase.co.example/s3"));
        assert_eq!(
            hosted_project_ref("https://abcd.storage.supabase.co/storage/v1/s3").as_deref(),
            Some("abcd")
        );
        assert_eq!(hosted_project_ref("http://127.0.0.1:5000/s3"), None);
    }
}
