//! A local S3 server that follows Supabase Storage's rules, for `supamount demo` and fast tests.
//!
//! It lets people try supamount without a Supabase account, and lets the end-to-end tests run
//! in seconds. The same tests run against the real Supabase Storage server, so this server
//! copies its observable rules (see "Supabase Storage facts" in `DESIGN.md`): the key charset
//! (400 `InvalidKey`), `PUT dir/` with an empty body stored as `dir/.emptyFolderPlaceholder`,
//! pages of at most 1000 keys in byte order, 416 for a range past the end, 413 for an object
//! over the size limit, 409 `ResourceNotEmpty` when deleting a bucket that holds objects, 403
//! `AccessDenied` for an unknown key id and `SignatureDoesNotMatch` for a bad signature or a
//! foreign region. A difference from the real server is a bug here.
//!
//! The S3 protocol (SigV4, routing, XML, aws-chunked bodies) comes from the `s3s` crate; this
//! module adds the storage and the HTTP listener.
//!
//! # Layout on disk
//! ```text
//! DATA_DIR/<bucket>/<key>                      the object's bytes; '/' in keys are directories
//! DATA_DIR/.meta/<bucket>/<key>~meta.json      ETag, Content-Type, x-amz-meta-*, size, mtime
//! DATA_DIR/.uploads/<upload-id>/upload.json    an unfinished multipart upload...
//! DATA_DIR/.uploads/<upload-id>/part-NNNNN     ...and its parts
//! DATA_DIR/.tmp/                               bodies being received; emptied at start
//! DATA_DIR/.lock                               held while a server uses the directory
//! ```
//! So `ls DATA_DIR/demo` shows the bucket's files. Every write lands in `.tmp/` first and is
//! renamed into place, so readers see the old or the new object, and a killed server never
//! leaves half an object. Directories emptied by a delete are removed. Last-Modified is the
//! file's mtime in whole seconds. Files copied into `DATA_DIR/<bucket>/` by hand are served too
//! (their ETag is computed on first use).
//!
//! # Logs
//! Decisions are logged at debug, refused keys at warn; secrets never. The s3s crate logs
//! every error answer, even an expected `NoSuchKey`, at ERROR under the target `s3s`: a filter
//! such as `s3s=off` keeps those out of a user's terminal.
//!
//! # Limitations
//! - A key cannot be both an object and a folder of other objects (`a` and `a/b`), because `a`
//!   cannot be a file and a directory at once: the second write is refused with 409
//!   `KeyConflict`. Supabase accepts both.
//! - A key segment may be at most 245 bytes (a file name, less the sidecar suffix), and a key
//!   ending in `/` can only be an empty folder marker. Both are refused with `InvalidKey`.
//! - Bucket names follow Supabase's charset but may not start with `.`; CopyObject sources must
//!   also satisfy AWS's bucket naming rules (s3s parses the header).
//! - Files are not fsynced: a power loss (not a crash of the server) may lose recent writes.
//!   A crash between a commit's two renames leaves the new data with the old metadata file;
//!   the ETag is then recomputed and Content-Type and user metadata are lost for that object.
//! - Only path-style addressing, one access key pair, no versioning, tagging, ACLs, ListParts
//!   or UploadPartCopy (all answer `NotImplemented`). Conditional headers are ignored, as the
//!   Supabase server ignores them. Unfinished multipart uploads are never expired.
//! - One server per data directory: `DATA_DIR/.lock` is held while a server runs, and a
//!   second one is refused at start (call [`LocalServer::shutdown`] before restarting).

mod auth;
mod backend;
mod disk;
mod keys;
mod listing;
mod stream;
mod uploads;
mod walk;

use std::fmt;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use s3s::service::{S3Service, S3ServiceBuilder};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, info, warn};

use self::auth::{KeyAuth, RegionCheck};
use self::backend::Backend;
use self::disk::{DiskStore, StoreError};
use self::keys::{Bucket, BucketNames};

/// How long [`LocalServer::shutdown`] lets requests in flight finish before cutting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Pause after a failed accept (such as too many open files) so the loop does not spin.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Settings of the local server.
#[derive(Clone)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free port (see [`LocalServer::local_addr`]).
    pub listen: SocketAddr,
    /// Where buckets and objects are stored; created if missing.
    pub data_dir: PathBuf,
    /// The only key pair the server accepts.
    pub access_key_id: String,
    pub secret_access_key: String,
    /// The region clients must sign for (`us-east-1`, `auto` and an empty region are accepted
    /// too, as on the Supabase server).
    pub region: String,
    /// Buckets created at start if missing.
    pub buckets: Vec<String>,
}

/// Optional limits, for tests that check how a client handles them.
#[derive(Debug, Clone, Default)]
pub struct ServerLimits {
    /// Largest object accepted (413 `EntityTooLarge` above it, as Supabase answers); `None`
    /// (the default) for no limit.
    pub max_object_size: Option<u64>,
}

impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("region", &self.region)
            .field("buckets", &self.buckets)
            .finish()
    }
}

/// Why the local server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot prepare the data directory {path}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: StorageError,
    },
    #[error(
        "{name:?} is not a valid bucket name (Supabase's characters, at most 100 bytes, \
         not starting with '.')"
    )]
    InvalidBucketName { name: String },
    #[error("cannot create bucket {name:?} in {path}")]
    CreateBucket {
        name: String,
        path: PathBuf,
        #[source]
        source: StorageError,
    },
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A storage failure behind a [`ServerError`].
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct StorageError(StoreError);

/// A running local server. Dropping it stops accepting connections; [`LocalServer::shutdown`]
/// also waits for the connections to end.
#[derive(Debug)]
pub struct LocalServer {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    accept_loop: Option<JoinHandle<()>>,
}

impl LocalServer {
    /// Prepares the data directory, binds, and serves on the current tokio runtime.
    pub async fn start(cfg: ServerConfig) -> Result<LocalServer, ServerError> {
        Self::start_with_limits(cfg, ServerLimits::default()).await
    }

    /// [`LocalServer::start`] with limits such as a maximum object size.
    pub async fn start_with_limits(
        cfg: ServerConfig,
        limits: ServerLimits,
    ) -> Result<LocalServer, ServerError> {
        let store = open_store(&cfg, &limits).await?;
        let service = build_service(&cfg, store);
        let listener = TcpListener::bind(cfg.listen)
            .await
            .map_err(|source| ServerError::Bind {
                addr: cfg.listen,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: cfg.listen,
            source,
        })?;

        let (stop, stopped) = watch::channel(false);
        let accept_loop = tokio::spawn(accept_loop(listener, service, stopped));
        info!(
            addr = %local_addr,
            data_dir = %cfg.data_dir.display(),
            buckets = ?cfg.buckets,
            "local S3 server listening"
        );
        Ok(LocalServer {
            local_addr,
            stop,
            accept_loop: Some(accept_loop),
        })
    }

    /// The URL clients use, such as `http://127.0.0.1:9000`. A wildcard listen address is
    /// reported as the loopback address, which is what a local client can reach.
    pub fn endpoint(&self) -> String {
        let addr = match self.local_addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => {
                SocketAddr::new(Ipv4Addr::LOCALHOST.into(), self.local_addr.port())
            }
            IpAddr::V6(ip) if ip.is_unspecified() => {
                SocketAddr::new(Ipv6Addr::LOCALHOST.into(), self.local_addr.port())
            }
            _ => self.local_addr,
        };
        format!("http://{addr}")
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets requests in flight finish (at most a few seconds), closes idle
    /// connections and returns when all are gone.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(accept_loop) = self.accept_loop.take() {
            if let Err(e) = accept_loop.await {
                warn!(error = %e, "the accept loop of the local S3 server failed");
            }
        }
        info!(addr = %self.local_addr, "local S3 server stopped");
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Runs the server until SIGINT or SIGTERM, for `supamount server`. Prints one line,
/// `endpoint=http://HOST:PORT`, on stdout once it is listening.
pub async fn run_foreground(cfg: ServerConfig) -> anyhow::Result<()> {
    // Installed before the endpoint is announced: a parent may signal as soon as it reads it.
    let stop = StopSignals::install()?;
    let server = LocalServer::start(cfg)
        .await
        .context("cannot start the local S3 server")?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "endpoint={}", server.endpoint())
        .and_then(|()| stdout.flush())
        .context("cannot write the endpoint to stdout")?;
    drop(stdout);

    stop.wait().await;
    info!("stop signal received; shutting down the local S3 server");
    server.shutdown().await;
    Ok(())
}

async fn open_store(cfg: &ServerConfig, limits: &ServerLimits) -> Result<DiskStore, ServerError> {
    let store = DiskStore::open(cfg.data_dir.clone(), limits.max_object_size)
        .await
        .map_err(|e| ServerError::DataDir {
            path: cfg.data_dir.clone(),
            source: StorageError(e),
        })?;
    for name in &cfg.buckets {
        let bucket = Bucket::parse(name)
            .ok_or_else(|| ServerError::InvalidBucketName { name: name.clone() })?;
        store
            .ensure_bucket(&bucket)
            .await
            .map_err(|e| ServerError::CreateBucket {
                name: name.clone(),
                path: cfg.data_dir.join(name),
                source: StorageError(e),
            })?;
    }
    Ok(store)
}

fn build_service(cfg: &ServerConfig, store: DiskStore) -> S3Service {
    let mut builder = S3ServiceBuilder::new(Backend::new(store));
    builder.set_auth(KeyAuth::new(&cfg.access_key_id, &cfg.secret_access_key));
    builder.set_access(RegionCheck::new(&cfg.region));
    builder.set_validation(BucketNames);
    builder.build()
}

/// Accepts connections until told to stop, then waits for them to end.
async fn accept_loop(listener: TcpListener, service: S3Service, mut stop: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    debug!(%peer, "connection accepted");
                    connections.spawn(serve_connection(stream, service.clone(), stop.clone()));
                }
                Err(e) => {
                    warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);

    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    });
    if drained.await.is_err() {
        warn!(
            open = connections.len(),
            "closing connections that did not finish in time"
        );
        connections.shutdown().await;
    }
}

/// Serves one connection; on stop, finishes the request in progress and closes.
async fn serve_connection(stream: TcpStream, service: S3Service, mut stop: watch::Receiver<bool>) {
    // Small requests and replies would otherwise wait for delayed ACKs.
    if let Err(e) = stream.set_nodelay(true) {
        debug!(error = %e, "cannot set TCP_NODELAY");
    }
    let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let finished = tokio::select! {
        finished = connection.as_mut() => finished,
        _ = stop.changed() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = finished {
        debug!(error = %e, "connection ended with an error");
    }
}

/// SIGINT and SIGTERM, caught instead of ending the process.
struct StopSignals {
    interrupt: Signal,
    terminate: Signal,
}

impl StopSignals {
    fn install() -> anyhow::Result<StopSignals> {
        Ok(StopSignals {
            interrupt: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}
