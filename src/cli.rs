//! Command-line arguments. Parsed here, then checked into a [`crate::mount::MountConfig`].

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "supamount",
    version,
    about = "Mount a Supabase Storage bucket (or any S3 bucket) as a directory",
    args_conflicts_with_subcommands = true,
    after_help = "Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (and \
                  AWS_SESSION_TOKEN) or from an AWS profile, never from the command line.\n\
                  Examples:\n  supamount --profile supabase my-bucket ~/bucket\n  \
                  supamount demo /tmp/demo        (local S3 server, no account needed)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub mount: MountArgs,
}

// Parsed once at start-up, so the size of the largest variant costs nothing worth boxing for.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the built-in local S3 server with a bucket `demo` and mount it (no account needed).
    Demo(DemoArgs),
    /// Show what a running mount is doing: endpoint, credentials, uploads pending, cache, failures.
    Status(StatusArgs),
    /// Run the built-in local S3 server in the foreground (for tests and trying things out).
    Server(ServerArgs),
}

#[derive(Debug, Args)]
pub struct MountArgs {
    /// Bucket to mount, optionally followed by a key prefix: `bucket` or `bucket/some/prefix`.
    #[arg(value_name = "BUCKET[/PREFIX]")]
    pub bucket: Option<String>,
    /// Empty directory to mount on.
    #[arg(value_name = "MOUNTPOINT")]
    pub mountpoint: Option<PathBuf>,
    #[command(flatten)]
    pub options: MountOptions,
}

#[derive(Debug, Args, Clone)]
pub struct MountOptions {
    /// S3 endpoint, e.g. https://PROJECT_REF.storage.supabase.co/storage/v1/s3.
    #[arg(long, value_name = "URL")]
    pub endpoint_url: Option<String>,
    /// Region the endpoint signs with (a Supabase project's region; `local` when self-hosted).
    #[arg(long)]
    pub region: Option<String>,
    /// AWS profile holding keys, endpoint_url and region (from ~/.aws/credentials and config).
    #[arg(long, env = "AWS_PROFILE")]
    pub profile: Option<String>,
    /// Hosted Supabase project ref: the endpoint becomes
    /// https://REF.storage.supabase.co/storage/v1/s3.
    #[arg(
        long,
        env = "SUPABASE_PROJECT_REF",
        value_name = "REF",
        long_help = "Hosted Supabase project ref (the REF of https://REF.supabase.co). Without \
                     --endpoint-url the endpoint is the project's direct storage hostname \
                     https://REF.storage.supabase.co/storage/v1/s3. In session-token mode it is \
                     also the access key id and names the project URL used for renewal."
    )]
    pub project_ref: Option<String>,
    /// Keep an endpoint on REF.supabase.co as given instead of moving it to the direct storage
    /// hostname REF.storage.supabase.co (which takes larger uploads).
    #[arg(long)]
    pub no_direct_host: bool,
    /// Session-token mode: the user's JWT is read from this file, and read again whenever it
    /// changes (an outside tool keeps it fresh).
    #[arg(long, value_name = "PATH", conflicts_with = "refresh_token_file")]
    pub session_token_file: Option<PathBuf>,
    /// Session-token mode with built-in renewal: the Supabase Auth refresh token is read from
    /// this file, and each rotated refresh token is written back to it (mode 0600).
    #[arg(
        long,
        value_name = "PATH",
        long_help = "Session-token mode with built-in renewal. The file holds a Supabase Auth \
                     refresh token; supamount renews the user's JWT through \
                     PROJECT_URL/auth/v1/token ahead of its expiry and writes each rotated \
                     refresh token back to the file (atomically, mode 0600). A first JWT may \
                     be given in SUPABASE_ACCESS_TOKEN; otherwise one is fetched at start."
    )]
    pub refresh_token_file: Option<PathBuf>,
    /// Session-token mode: file holding the project's legacy anon key (else SUPABASE_ANON_KEY).
    #[arg(long, value_name = "PATH")]
    pub anon_key_file: Option<PathBuf>,
    /// Session-token mode: the access key id of a self-hosted server [default: the project ref].
    #[arg(long, env = "SUPABASE_TENANT_ID", value_name = "ID")]
    pub tenant_id: Option<String>,
    /// Where Supabase Auth answers, for renewal [default: https://PROJECT_REF.supabase.co].
    #[arg(long, env = "SUPABASE_URL", value_name = "URL")]
    pub project_url: Option<String>,
    #[command(flatten)]
    pub refused: RefusedSecretFlags,
    /// Stay attached to the terminal instead of going to the background once mounted.
    #[arg(short, long)]
    pub foreground: bool,
    /// Refuse every change.
    #[arg(long)]
    pub read_only: bool,
    /// Do not keep modes, owners and mtimes in object metadata, nor read them back: every file
    /// shows the --file-mode/--dir-mode defaults and its Last-Modified time, `ls -l` of a new
    /// directory needs no request per file, and symbolic links cannot be created.
    #[arg(long)]
    pub no_metadata: bool,
    /// Let other users access the mount (needs user_allow_other in /etc/fuse.conf).
    #[arg(long)]
    pub allow_other: bool,
    /// Owner of files that record none [default: the mounting user].
    #[arg(long)]
    pub uid: Option<u32>,
    /// Group of files that record none [default: the mounting user's group].
    #[arg(long)]
    pub gid: Option<u32>,
    /// Permission bits of files that record none, in octal.
    #[arg(long, default_value = "644", value_parser = parse_mode)]
    pub file_mode: u16,
    /// Permission bits of directories that record none, in octal.
    #[arg(long, default_value = "755", value_parser = parse_mode)]
    pub dir_mode: u16,
    /// Seconds attributes and names are trusted before asking the server again (0: always ask).
    #[arg(long, default_value = "1", value_name = "SECONDS")]
    pub attr_ttl: f64,
    /// Where files being written are staged and failed uploads are kept
    /// [default: $XDG_CACHE_HOME/supamount or ~/.cache/supamount].
    #[arg(long, value_name = "DIR", overrides_with = "cache_dir")]
    pub cache_dir: Option<PathBuf>,
    /// Memory for cached file data, in MiB (read-ahead included).
    #[arg(long = "cache-memory", default_value = "256", value_name = "MIB")]
    pub cache_memory_mib: u64,
    /// Local disk for cached file data, in MiB, under CACHE_DIR/blocks (0: no disk cache).
    #[arg(long = "cache-size", default_value = "0", value_name = "MIB")]
    pub cache_disk_mib: u64,
    /// Log level (error, warn, info, debug, trace); SUPAMOUNT_LOG takes a full filter instead.
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// Log file for the background process [default: CACHE_DIR/supamount.log].
    #[arg(long, value_name = "PATH")]
    pub log_file: Option<PathBuf>,
}

/// Flags that would put a secret on the command line, where every user can read it with `ps`.
/// They exist only to be refused with a pointer to the safe way.
#[derive(Debug, Args, Clone, Default)]
pub struct RefusedSecretFlags {
    #[arg(long, hide = true, value_name = "SECRET")]
    secret_access_key: Option<String>,
    #[arg(long, hide = true, value_name = "SECRET")]
    anon_key: Option<String>,
    #[arg(long, hide = true, value_name = "SECRET")]
    session_token: Option<String>,
    #[arg(long, hide = true, value_name = "SECRET")]
    access_token: Option<String>,
    #[arg(long, hide = true, value_name = "SECRET")]
    refresh_token: Option<String>,
}

impl RefusedSecretFlags {
    /// An error naming the first secret flag given and the safe alternative.
    pub fn check(&self) -> Result<(), String> {
        let (flag, instead) = if self.secret_access_key.is_some() {
            (
                "--secret-access-key",
                "set AWS_SECRET_ACCESS_KEY or use --profile",
            )
        } else if self.anon_key.is_some() {
            (
                "--anon-key",
                "set SUPABASE_ANON_KEY or use --anon-key-file PATH",
            )
        } else if self.session_token.is_some() || self.access_token.is_some() {
            (
                "--session-token/--access-token",
                "use --session-token-file PATH or set SUPABASE_ACCESS_TOKEN",
            )
        } else if self.refresh_token.is_some() {
            ("--refresh-token", "use --refresh-token-file PATH")
        } else {
            return Ok(());
        };
        Err(format!(
            "{flag} is refused: other users can read a process's arguments; {instead}"
        ))
    }
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Empty directory to mount on.
    pub mountpoint: PathBuf,
    /// Where the local server keeps its objects [default: $XDG_DATA_HOME/supamount/demo or
    /// ~/.local/share/supamount/demo].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    #[command(flatten)]
    pub options: MountOptions,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Where the mount is.
    pub mountpoint: PathBuf,
    /// Print the status as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Where objects are kept (one directory per bucket).
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Address to listen on; port 0 picks a free port. Only loopback addresses are sensible.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Bucket to create at start (repeatable).
    #[arg(long = "bucket", value_name = "NAME")]
    pub buckets: Vec<String>,
    /// Region the server expects in signatures.
    #[arg(long, default_value = "local")]
    pub region: String,
    /// Log level.
    #[arg(long, default_value = "info")]
    pub log_level: String,
}

fn parse_mode(text: &str) -> Result<u16, String> {
    let mode = u16::from_str_radix(text, 8).map_err(|e| format!("not an octal mode: {e}"))?;
    if mode > 0o7777 {
        return Err("mode must be at most 7777".into());
    }
    Ok(mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_arguments() {
        let cli = Cli::try_parse_from([
            "supamount",
            "--endpoint-url",
            "http://127.0.0.1:9000",
            "-f",
            "--file-mode",
            "600",
            "b/p",
            "/mnt",
        ])
        .unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.mount.bucket.as_deref(), Some("b/p"));
        assert_eq!(cli.mount.options.file_mode, 0o600);
        assert!(cli.mount.options.foreground);
    }

    #[test]
    fn subcommands() {
        let cli = Cli::try_parse_from(["supamount", "demo", "/tmp/x"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Demo(_))));
        let cli = Cli::try_parse_from(["supamount", "server", "--data-dir", "/d", "--bucket", "b"])
            .unwrap();
        assert!(matches!(cli.command, Some(Command::Server(s)) if s.buckets == ["b"]));
    }

    #[test]
    fn secret_flags_are_refused_without_echoing_the_secret() {
        for flag in [
            "--secret-access-key",
            "--anon-key",
            "--session-token",
            "--access-token",
            "--refresh-token",
        ] {
            let cli = Cli::try_parse_from(["supamount", flag, "hunter2", "b", "/m"]).unwrap();
            let err = cli.mount.options.refused.check().unwrap_err();
            assert!(err.contains("refused"), "{err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
        let cli = Cli::try_parse_from(["supamount", "b", "/m"]).unwrap();
        assert!(cli.mount.options.refused.check().is_ok());
    }

    #[test]
    fn session_flags() {
        let cli = Cli::try_parse_from([
            "supamount",
            "--project-ref",
            "abcd",
            "--refresh-token-file",
            "/r",
            "--tenant-id",
            "stub",
            "b",
            "/m",
        ])
        .unwrap();
        let o = &cli.mount.options;
        assert_eq!(o.project_ref.as_deref(), Some("abcd"));
        assert_eq!(o.tenant_id.as_deref(), Some("stub"));
        assert!(Cli::try_parse_from([
            "supamount",
            "--refresh-token-file",
            "/r",
            "--session-token-file",
            "/s",
            "b",
            "/m"
        ])
        .is_err());
    }

    #[test]
    fn bad_mode_is_refused() {
        assert!(Cli::try_parse_from(["supamount", "--file-mode", "9", "b", "/m"]).is_err());
    }
}
