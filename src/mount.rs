//! Start-up and shutdown of a mount: check the settings, probe the bucket, mount, serve until
//! unmounted, then let uploads in flight finish.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use fuser::{MountOption, SessionACL};
use tokio::runtime::Runtime;
use tokio_util::task::TaskTracker;

use crate::connect::ConnectOptions;
use crate::daemon::Readiness;
use crate::fs::{Fs, FsConfig};
use crate::fuse::FuseAdapter;
use crate::status::{self, MountInfo, TokenExpiry};
use crate::store::{ObjectStore, StoreError};
use crate::upload::UploadConfig;

/// Everything a mount needs, checked.
#[derive(Debug, Clone)]
pub struct MountConfig {
    pub bucket: String,
    pub mountpoint: PathBuf,
    pub connect: ConnectOptions,
    pub fs: FsConfig,
    pub allow_other: bool,
}

/// Split `bucket/prefix` into the bucket and a prefix that ends with `/` (or is empty).
pub fn split_bucket(spec: &str) -> anyhow::Result<(String, String)> {
    let spec = spec.trim_matches('/');
    let (bucket, prefix) = spec.split_once('/').unwrap_or((spec, ""));
    if bucket.is_empty() {
        bail!("no bucket given: expected BUCKET or BUCKET/PREFIX");
    }
    let prefix = prefix.trim_matches('/');
    let prefix = if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    };
    Ok((bucket.to_string(), prefix))
}

/// Default home of staging and recovery data.
pub fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("supamount");
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(home) => PathBuf::from(home).join(".cache").join("supamount"),
        // SAFETY: getuid cannot fail.
        None => std::env::temp_dir().join(format!("supamount-{}", unsafe { libc::getuid() })),
    }
}

pub fn default_upload() -> UploadConfig {
    UploadConfig::default()
}

fn check_mountpoint(path: &Path) -> anyhow::Result<()> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("mountpoint {} is not usable", path.display()))?;
    if !meta.is_dir() {
        bail!("mountpoint {} is not a directory", path.display());
    }
    Ok(())
}

/// One line that says what to check for a failed probe.
fn probe_hint(err: &StoreError) -> &'static str {
    match err {
        StoreError::SignatureMismatch { .. } => {
            "check the secret key and the region (a Supabase project signs with its own region)"
        }
        StoreError::AccessDenied { .. } => {
            "check the access key id and that these credentials may list the bucket"
        }
        StoreError::ExpiredToken { .. } => "the session token has expired: get a fresh one",
        StoreError::NoSuchBucket { .. } | StoreError::NotFound { .. } => {
            "check the bucket name (buckets are created in the Supabase dashboard)"
        }
        StoreError::Unreachable { .. } => "check the endpoint URL and the network",
        _ => "check the endpoint, credentials and bucket",
    }
}

/// List one key under the mount's prefix: the cheapest request that proves the endpoint,
/// the credentials and the bucket, and it works under a user's row-level security too.
pub async fn probe(store: &dyn ObjectStore, prefix: &str) -> anyhow::Result<()> {
    let attempt = tokio::time::timeout(
        Duration::from_secs(60),
        store.list_page(prefix, Some("/"), None, 1),
    )
    .await;
    match attempt {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => bail!(
            "cannot mount {}: {err}; {}",
            store.describe(),
            probe_hint(&err)
        ),
        Err(_) => bail!(
            "cannot mount {}: no answer within 60 s; check the endpoint URL and the network",
            store.describe()
        ),
    }
}

fn session_config(cfg: &MountConfig) -> fuser::Config {
    let mut options = vec![
        // The source as fstab names it, so `mount -a` sees the entry as mounted already.
        MountOption::FSName(format!(
            "{}{}",
            cfg.bucket,
            cfg.fs
                .prefix
                .strip_suffix('/')
                .map(|p| format!("/{p}"))
                .unwrap_or_default()
        )),
        MountOption::Subtype("supamount".into()),
        MountOption::DefaultPermissions,
        MountOption::NoAtime,
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    options.push(if cfg.fs.read_only {
        MountOption::RO
    } else {
        MountOption::RW
    });
    let mut config = fuser::Config::default();
    config.mount_options = options;
    config.acl = if cfg.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    config
}

/// Mount `store` and serve it until unmounted; `readiness` hears once the mount is live.
/// `ready_line` is what a background parent prints on success.
/// Where and how a mount connects, for `supamount status`.
pub struct ConnectionView {
    pub endpoint: String,
    pub credentials: String,
    pub token_expiry: Option<TokenExpiry>,
}

pub fn serve(
    runtime: &Runtime,
    cfg: MountConfig,
    store: Arc<dyn ObjectStore>,
    connection: ConnectionView,
    readiness: &mut Readiness,
    ready_line: &str,
) -> anyhow::Result<()> {
    check_mountpoint(&cfg.mountpoint)?;
    runtime.block_on(probe(store.as_ref(), &cfg.fs.prefix))?;
    let fs = Fs::new(store, cfg.fs.clone())?;
    let tasks = TaskTracker::new();
    let adapter = FuseAdapter::new(fs.clone(), runtime.handle().clone(), tasks.clone());
    let mut session = fuser::Session::new(adapter, &cfg.mountpoint, &session_config(&cfg))
        .with_context(|| format!("mounting on {}", cfg.mountpoint.display()))?;
    tracing::info!(
        bucket = %cfg.bucket,
        prefix = %cfg.fs.prefix,
        mountpoint = %cfg.mountpoint.display(),
        "mounted"
    );
    let info = MountInfo {
        endpoint: connection.endpoint,
        bucket: cfg.bucket.clone(),
        prefix: cfg.fs.prefix.clone(),
        mountpoint: cfg.mountpoint.clone(),
        credentials: connection.credentials,
        token_expiry: connection.token_expiry,
    };
    let _status_socket = {
        let _runtime = runtime.enter();
        status::serve(info, fs.clone())
            .map_err(|e| tracing::warn!("`supamount status` will not work for this mount: {e:#}"))
            .ok()
    };
    #[cfg(target_os = "linux")]
    {
        let mountpoint = cfg.mountpoint.clone();
        runtime.spawn_blocking(move || raise_read_ahead(&mountpoint));
    }
    readiness.ready(ready_line);
    crate::notify::ready();

    let mut unmounter = session.unmount_callable();
    let mountpoint = cfg.mountpoint.clone();
    runtime.spawn(async move {
        wait_for_stop_signal().await;
        tracing::info!("stop signal received; unmounting");
        if let Err(e) = unmounter.unmount() {
            tracing::error!(
                mountpoint = %mountpoint.display(),
                error = %e,
                "could not unmount (files still open?); close them or run fusermount3 -u"
            );
        }
    });
    let result = session.run().context("serving the mount");
    crate::notify::stopping();

    tasks.close();
    let pending = tasks.len();
    if pending > 0 {
        tracing::info!(pending, "unmounted; waiting for requests still running");
    }
    runtime.block_on(async {
        tasks.wait().await;
        fs.shutdown().await;
    });
    tracing::info!("unmounted");
    result
}

/// The kernel's read-ahead for this mount, in KiB: as large as one FUSE read can be.
#[cfg(target_os = "linux")]
const READ_AHEAD_KB: u32 = crate::fuse::MAX_IO_SIZE / 1024;

/// Linux gives a FUSE mount 128 KiB of read-ahead, so a sequential reader's data arrives in
/// 128 KiB requests; with 1 MiB, the same read costs an eighth of the requests (measured on
/// the local server: 1 GiB read at 1.1–1.2 GB/s instead of 0.9). The setting lives in sysfs,
/// where only root may change it, and is taken only after the kernel's handshake with this
/// process, which `stat` of the mountpoint waits for. Others keep 128 KiB; the README says
/// how to raise it by hand.
#[cfg(target_os = "linux")]
fn raise_read_ahead(mountpoint: &Path) {
    use std::os::unix::fs::MetadataExt;
    let dev = match std::fs::metadata(mountpoint) {
        Ok(meta) => meta.dev(),
        Err(e) => {
            tracing::debug!(error = %e, "cannot stat the mountpoint; read-ahead left as it is");
            return;
        }
    };
    let knob = format!(
        "/sys/class/bdi/{}:{}/read_ahead_kb",
        libc::major(dev),
        libc::minor(dev)
    );
    match std::fs::write(&knob, READ_AHEAD_KB.to_string()) {
        Ok(()) => tracing::debug!(knob, kib = READ_AHEAD_KB, "raised the kernel's read-ahead"),
        Err(e) => tracing::debug!(
            knob,
            error = %e,
            "the kernel's read-ahead stays at its default (raising it needs root)"
        ),
    }
}

async fn wait_for_stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot listen for SIGTERM/SIGINT; unmount with fusermount3 -u");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_and_prefix() {
        assert_eq!(split_bucket("b").unwrap(), ("b".into(), String::new()));
        assert_eq!(split_bucket("b/x/y/").unwrap(), ("b".into(), "x/y/".into()));
        assert!(split_bucket("/").is_err());
    }

    #[tokio::test]
    async fn probe_names_the_reason() {
        let store = crate::store::memory::MemoryStore::new();
        store.set_offline(true);
        let err = probe(&store, "").await.unwrap_err().to_string();
        assert!(err.contains("cannot reach"), "{err}");
        assert!(err.contains("check the endpoint"), "{err}");
    }
}
