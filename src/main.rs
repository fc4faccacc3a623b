//! The `supamount` command: parse, check, then mount (or run the local server).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tracing_subscriber::EnvFilter;

use supamount::cli::{Cli, Command, DemoArgs, MountOptions, ServerArgs, StatusArgs};
use supamount::connect::{connect, ConnectOptions};
use supamount::credentials::{Secret, SessionConfig, SessionCredentials, TokenConfig};
use supamount::daemon::{self, Readiness};
use supamount::fs::FsConfig;
use supamount::mount::{default_cache_dir, default_upload, serve, split_bucket, MountConfig};
use supamount::server::{LocalServer, ServerConfig};

fn main() -> ExitCode {
    // The SDK's defaults fall back to the EC2 instance metadata service when a setting (the
    // region) is missing. Supabase is never reached through it, and asking it means traffic to
    // a link-local address; set before any thread starts, so nothing races this.
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    let argv = match supamount::mount_helper::rewrite(std::env::args_os().collect()) {
        Ok(Some(argv)) => argv,
        Ok(None) => return ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("mount.supamount: {err}");
            return ExitCode::FAILURE;
        }
    };
    let cli = Cli::parse_from(argv);
    let mut readiness = Readiness::from_env();
    let result = match cli.command {
        Some(Command::Server(args)) => run_server(args),
        Some(Command::Demo(args)) => run_demo(args, &mut readiness),
        Some(Command::Status(args)) => run_status(args),
        None => run_mount(cli.mount, &mut readiness),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let reason = format!("{err:#}");
            if readiness.is_background() {
                tracing::error!("{reason}");
                readiness.failed(&reason);
            } else {
                eprintln!("supamount: {reason}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr: the terminal in the foreground, the log file in the background.
/// fuser's own warnings are mostly about requests this filesystem answers on purpose, and the
/// local server's protocol layer (s3s) logs every error answer, expected misses included.
fn init_logging(level: &str) {
    let filter = match std::env::var("SUPAMOUNT_LOG") {
        Ok(filter) if !filter.is_empty() => EnvFilter::new(filter),
        _ => EnvFilter::new(format!("warn,fuser=error,s3s=off,supamount={level}")),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("supamount")
        .build()
        .context("starting the async runtime")
}

/// In the foreground (or as the background child) return `None` and go on here; otherwise
/// start the background child, wait for its report and return what to print.
fn maybe_background(
    options: &MountOptions,
    readiness: &Readiness,
) -> anyhow::Result<Option<String>> {
    if options.foreground || readiness.is_background() {
        return Ok(None);
    }
    let log_file = options.log_file.clone().unwrap_or_else(|| {
        options
            .cache_dir
            .clone()
            .unwrap_or_else(default_cache_dir)
            .join("supamount.log")
    });
    daemon::run_in_background(&log_file).map(Some)
}

fn fs_config(options: &MountOptions, bucket: &str, prefix: String) -> anyhow::Result<FsConfig> {
    if !(options.attr_ttl >= 0.0 && options.attr_ttl.is_finite()) {
        anyhow::bail!("--attr-ttl must be zero or more seconds");
    }
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    Ok(FsConfig {
        bucket: bucket.to_string(),
        prefix,
        uid: options.uid.unwrap_or(uid),
        gid: options.gid.unwrap_or(gid),
        file_mode: options.file_mode,
        dir_mode: options.dir_mode,
        attr_ttl: Duration::from_secs_f64(options.attr_ttl),
        cache_dir: options.cache_dir.clone().unwrap_or_else(default_cache_dir),
        read_only: options.read_only,
        metadata: !options.no_metadata,
        upload: default_upload(),
        cache_memory: options.cache_memory_mib * 1024 * 1024,
        cache_disk: options.cache_disk_mib * 1024 * 1024,
    })
}

fn run_mount(args: supamount::cli::MountArgs, readiness: &mut Readiness) -> anyhow::Result<()> {
    let (Some(spec), Some(mountpoint)) = (args.bucket, args.mountpoint) else {
        anyhow::bail!("usage: supamount [OPTIONS] BUCKET[/PREFIX] MOUNTPOINT (see --help)");
    };
    let options = args.options;
    options.refused.check().map_err(anyhow::Error::msg)?;
    if let Some(line) = maybe_background(&options, readiness)? {
        println!("{line}");
        return Ok(());
    }
    init_logging(&options.log_level);
    let (bucket, prefix) = split_bucket(&spec)?;
    let runtime = runtime()?;
    let session = match session_config(&options)? {
        Some(session) => Some(runtime.block_on(SessionCredentials::start(session))?),
        None => None,
    };
    let cfg = MountConfig {
        connect: ConnectOptions {
            endpoint_url: options.endpoint_url.clone(),
            region: options.region.clone(),
            profile: options.profile.clone(),
            project_ref: options.project_ref.clone(),
            no_direct_host: options.no_direct_host,
            session,
            ..Default::default()
        },
        fs: fs_config(&options, &bucket, prefix)?,
        bucket,
        mountpoint,
        allow_other: options.allow_other,
    };
    let connected = runtime.block_on(connect(&cfg.connect, &cfg.bucket))?;
    tracing::info!(endpoint = %connected.endpoint, region = %connected.region, "connecting");
    let line = format!(
        "mounted bucket {} from {} on {}",
        cfg.bucket,
        connected.endpoint,
        cfg.mountpoint.display()
    );
    let view = connected.view();
    serve(
        &runtime,
        cfg,
        connected.into_store(),
        view,
        readiness,
        &line,
    )
}

/// Session-token settings, when a token file or a refresh-token file asks for that mode.
fn session_config(options: &MountOptions) -> anyhow::Result<Option<SessionConfig>> {
    let token = match (&options.session_token_file, &options.refresh_token_file) {
        (Some(path), _) => TokenConfig::File(path.clone()),
        (None, Some(path)) => TokenConfig::Refresh {
            refresh_file: path.clone(),
            project_url: project_url(options)?,
            initial: std::env::var("SUPABASE_ACCESS_TOKEN")
                .ok()
                .filter(|t| !t.trim().is_empty())
                .map(|t| Secret::new(t.trim())),
        },
        (None, None) => return Ok(None),
    };
    let hosted_ref = || {
        options
            .endpoint_url
            .as_deref()
            .and_then(supamount::endpoint::hosted_project_ref)
    };
    let access_key_id = options
        .tenant_id
        .clone()
        .or_else(|| options.project_ref.clone())
        .or_else(hosted_ref)
        .context(
            "session-token mode needs the project ref (--project-ref or SUPABASE_PROJECT_REF) \
             or, on a self-hosted server, the tenant id (--tenant-id or SUPABASE_TENANT_ID)",
        )?;
    let anon_key = match &options.anon_key_file {
        Some(path) => std::fs::read_to_string(path)
            .map(|k| Secret::new(k.trim()))
            .with_context(|| format!("reading the anon key file {}", path.display()))?,
        None => std::env::var("SUPABASE_ANON_KEY")
            .ok()
            .filter(|k| !k.trim().is_empty())
            .map(|k| Secret::new(k.trim()))
            .context(
                "session-token mode needs the project's anon key: set SUPABASE_ANON_KEY or pass \
                 --anon-key-file PATH",
            )?,
    };
    Ok(Some(SessionConfig {
        access_key_id,
        anon_key,
        token,
    }))
}

/// Where Supabase Auth answers: `--project-url`, else the hosted project's URL.
fn project_url(options: &MountOptions) -> anyhow::Result<String> {
    if let Some(url) = &options.project_url {
        return Ok(url.clone());
    }
    let project_ref = options.project_ref.clone().or_else(|| {
        options
            .endpoint_url
            .as_deref()
            .and_then(supamount::endpoint::hosted_project_ref)
    });
    project_ref
        .map(|r| supamount::endpoint::project_url(&r))
        .context(
            "--refresh-token-file needs the project URL for renewal: pass --project-url (or \
             SUPABASE_URL), or --project-ref for a hosted project",
        )
}

fn default_demo_dir() -> PathBuf {
    let base = std::env::var_os("XDG_DATA_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("supamount").join("demo")
}

/// A random key for the demo server, which lives only in this process.
fn random_hex(bytes: usize) -> anyhow::Result<String> {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .context("reading /dev/urandom")?;
    Ok(hex::encode(buf))
}

fn run_demo(args: DemoArgs, readiness: &mut Readiness) -> anyhow::Result<()> {
    let options = args.options;
    if let Some(line) = maybe_background(&options, readiness)? {
        println!("{line}");
        return Ok(());
    }
    init_logging(&options.log_level);
    let data_dir = args.data_dir.unwrap_or_else(default_demo_dir);
    let (key_id, secret) = (random_hex(10)?, random_hex(20)?);
    let runtime = runtime()?;
    let server = runtime.block_on(LocalServer::start(ServerConfig {
        listen: "127.0.0.1:0".parse().expect("a valid address"),
        data_dir: data_dir.clone(),
        access_key_id: key_id.clone(),
        secret_access_key: secret.clone(),
        region: "local".into(),
        buckets: vec!["demo".into()],
    }))?;
    let endpoint = server.endpoint();
    let cfg = MountConfig {
        connect: ConnectOptions {
            endpoint_url: Some(endpoint.clone()),
            region: Some("local".into()),
            profile: None,
            fixed_credentials: Some(aws_sdk_s3::config::Credentials::new(
                key_id, secret, None, None, "demo",
            )),
            ..Default::default()
        },
        fs: fs_config(&options, "demo", String::new())?,
        bucket: "demo".into(),
        mountpoint: args.mountpoint,
        allow_other: options.allow_other,
    };
    let connected = runtime.block_on(connect(&cfg.connect, &cfg.bucket))?;
    let line = format!(
        "mounted bucket demo of the local S3 server {endpoint} (objects kept in {}) on {}; \
         unmount with: fusermount3 -u {}",
        data_dir.display(),
        cfg.mountpoint.display(),
        cfg.mountpoint.display()
    );
    let view = connected.view();
    let result = serve(
        &runtime,
        cfg,
        connected.into_store(),
        view,
        readiness,
        &line,
    );
    runtime.block_on(server.shutdown());
    result
}

fn run_server(args: ServerArgs) -> anyhow::Result<()> {
    init_logging(&args.log_level);
    let key_id = std::env::var("AWS_ACCESS_KEY_ID").context(
        "set AWS_ACCESS_KEY_ID (and AWS_SECRET_ACCESS_KEY) to the keys the server accepts",
    )?;
    let secret = std::env::var("AWS_SECRET_ACCESS_KEY")
        .context("set AWS_SECRET_ACCESS_KEY to the secret the server accepts")?;
    let cfg = ServerConfig {
        listen: args.listen,
        data_dir: args.data_dir,
        access_key_id: key_id,
        secret_access_key: secret,
        region: args.region,
        buckets: args.buckets,
    };
    runtime()?.block_on(supamount::server::run_foreground(cfg))
}

fn run_status(args: StatusArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let status = runtime.block_on(supamount::status::query(&args.mountpoint))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", supamount::status::render(&status));
    }
    Ok(())
}
