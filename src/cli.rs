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

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the built-in local S3 server with a bucket `demo` and mount it (no account needed).
    Demo(DemoArgs),
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
    /// Stay attached to the terminal instead of going to the background once mounted.
    #[arg(short, long)]
    pub foreground: bool,
    /// Refuse every change.
    #[arg(long)]
    pub read_only: bool,
    /// Let other users access the mount (needs user_allow_other in /etc/fuse.conf).
    #[arg(long)]
    pub allow_other: bool,
    /// Owner shown for every file [default: the mounting user].
    #[arg(long)]
    pub uid: Option<u32>,
    /// Group shown for every file [default: the mounting user's group].
    #[arg(long)]
    pub gid: Option<u32>,
    /// Permission bits of files, in octal.
    #[arg(long, default_value = "644", value_parser = parse_mode)]
    pub file_mode: u16,
    /// Permission bits of directories, in octal.
    #[arg(long, default_value = "755", value_parser = parse_mode)]
    pub dir_mode: u16,
    /// Seconds attributes and names are trusted before asking the server again (0: always ask).
    #[arg(long, default_value = "1", value_name = "SECONDS")]
    pub attr_ttl: f64,
    /// Where files being written are staged and failed uploads are kept
    /// [default: $XDG_CACHE_HOME/supamount or ~/.cache/supamount].
    #[arg(long, value_name = "DIR")]
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
    fn bad_mode_is_refused() {
        assert!(Cli::try_parse_from(["supamount", "--file-mode", "9", "b", "/m"]).is_err());
    }
}
