//! The operator's view of a running mount: `supamount status MOUNTPOINT`.
//!
//! Each mount listens on a Unix socket private to the mounting user, at a path derived from its
//! mountpoint, and answers every connection with one JSON document (endpoint, bucket,
//! credentials, uploads pending, cache use, failures) before closing it. Nothing secret is in
//! it: no key, secret or token, only the token's expiry time.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

use crate::fs::{Fs, FsStats};

/// When the session token of a session-token mount expires.
pub type TokenExpiry = Arc<dyn Fn() -> Option<SystemTime> + Send + Sync>;

/// What a mount says about itself that the filesystem core does not know.
#[derive(Clone)]
pub struct MountInfo {
    pub endpoint: String,
    pub bucket: String,
    pub prefix: String,
    pub mountpoint: PathBuf,
    /// "access keys" or "session token".
    pub credentials: String,
    pub token_expiry: Option<TokenExpiry>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Status {
    pub pid: u32,
    pub endpoint: String,
    pub bucket: String,
    pub prefix: String,
    pub mountpoint: PathBuf,
    pub credentials: String,
    /// Unix seconds.
    pub token_expires_at: Option<u64>,
    #[serde(flatten)]
    pub fs: FsStats,
}

/// Where the sockets live: the user's runtime directory, else a private directory in /tmp.
fn socket_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("supamount"),
        // SAFETY: getuid cannot fail.
        None => std::env::temp_dir().join(format!("supamount-{}", unsafe { libc::getuid() })),
    }
}

/// The socket of the mount on `mountpoint` (named by a hash: mountpoints can be long).
pub fn socket_path(mountpoint: &Path) -> PathBuf {
    let canonical = std::fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.to_path_buf());
    let hash = Md5::digest(canonical.as_os_str().as_encoded_bytes());
    socket_dir().join(format!("{}.sock", hex::encode(&hash[..8])))
}

/// Listen for status requests until the returned guard is dropped (which removes the socket).
pub fn serve(info: MountInfo, fs: Arc<Fs>) -> anyhow::Result<SocketGuard> {
    let path = socket_path(&info.mountpoint);
    let dir = path.parent().expect("socket paths have a directory");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("making {} private", dir.display()))?;
    // A socket left by a mount that died on this mountpoint.
    let _ = std::fs::remove_file(&path);
    let listener =
        UnixListener::bind(&path).with_context(|| format!("listening on {}", path.display()))?;
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let document = serde_json::to_vec(&status(&info, &fs)).unwrap_or_default();
            let _ = stream.write_all(&document).await;
            let _ = stream.shutdown().await;
        }
    });
    Ok(SocketGuard { path, task })
}

fn status(info: &MountInfo, fs: &Fs) -> Status {
    let expiry = info.token_expiry.as_ref().and_then(|f| f());
    Status {
        pid: std::process::id(),
        endpoint: info.endpoint.clone(),
        bucket: info.bucket.clone(),
        prefix: info.prefix.clone(),
        mountpoint: info.mountpoint.clone(),
        credentials: info.credentials.clone(),
        token_expires_at: expiry
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs()),
        fs: fs.stats(),
    }
}

pub struct SocketGuard {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Ask the mount on `mountpoint` for its status.
pub async fn query(mountpoint: &Path) -> anyhow::Result<Status> {
    let path = socket_path(mountpoint);
    let mut stream = UnixStream::connect(&path).await.with_context(|| {
        format!(
            "no supamount serves {} for this user (no status socket at {})",
            mountpoint.display(),
            path.display()
        )
    })?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await?;
    serde_json::from_str(&text).context("reading the mount's status")
}

/// The status as lines for a person.
pub fn render(status: &Status) -> String {
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / 1048576.0);
    let expiry = match status.token_expires_at {
        Some(at) => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            if at > now {
                format!(", token expires in {} s", at - now)
            } else {
                format!(", token expired {} s ago", now - at)
            }
        }
        None => String::new(),
    };
    let fs = &status.fs;
    format!(
        "mountpoint:   {}\nbucket:       {}{}\nendpoint:     {}\ncredentials:  {}{}\n\
         process:      {}\nopen files:   {}\nuploads:      {} file(s) pending, {} pending; {} part(s) in flight\n\
         cache:        {} of {} in memory, {} on disk\nfailures:     {} warning(s), {} error(s)\n",
        status.mountpoint.display(),
        status.bucket,
        if status.prefix.is_empty() {
            String::new()
        } else {
            format!(" (prefix {})", status.prefix)
        },
        status.endpoint,
        status.credentials,
        expiry,
        status.pid,
        fs.open_files,
        fs.pending_uploads,
        mib(fs.pending_bytes),
        fs.parts_in_flight,
        mib(fs.cache_memory_used),
        mib(fs.cache_memory_budget),
        mib(fs.cache_disk_used),
        fs.warnings,
        fs.errors,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_paths_differ_by_mountpoint_and_are_short() {
        let a = socket_path(Path::new("/mnt/a"));
        let b = socket_path(Path::new("/mnt/b"));
        assert_ne!(a, b);
        assert!(a.file_name().unwrap().len() < 40);
    }

    #[test]
    fn render_shows_pending_uploads_and_expiry() {
        let status = Status {
            pid: 7,
            endpoint: "http://127.0.0.1:1/".into(),
            bucket: "b".into(),
            prefix: String::new(),
            mountpoint: "/m".into(),
            credentials: "session token".into(),
            token_expires_at: Some(u64::MAX / 2),
            fs: FsStats {
                pending_uploads: 1,
                pending_bytes: 3 << 20,
                ..FsStats::default()
            },
        };
        let text = render(&status);
        assert!(
            text.contains("1 file(s) pending, 3.0 MiB pending"),
            "{text}"
        );
        assert!(text.contains("token expires in"), "{text}");
    }
}
