//! The mount(8) helper convention: `mount.supamount BUCKET[/PREFIX] MOUNTPOINT [-sfnv] [-o
//! opts]`, translated into the ordinary command line before clap sees it.
//!
//! mount(8) reaches us two ways for `-t fuse.supamount` (an fstab line or `mount -t`): it runs
//! `/sbin/mount.fuse.supamount` when that exists (this binary under another name), otherwise
//! fuse3's `mount.fuse3`, which runs `supamount SOURCE MOUNTPOINT -o OPTS` with a fixed PATH.
//! So the helper convention is chosen by the program's name or by a `-o` argument, which the
//! ordinary command line does not have.
//!
//! `-o` options name the long flags (`endpoint_url=URL` is `--endpoint-url URL`), looked up in
//! the clap definition so that a flag added to the CLI is an option too. Secrets never come
//! from options: `/proc/mounts` and `ps` show them to every user. `credentials_file=` and
//! `config_file=` point the AWS profile files elsewhere (for mounts at boot, as root).

use std::ffi::{OsStr, OsString};
use std::path::Path;

use clap::CommandFactory;

use crate::cli::Cli;

/// Names this binary answers to as a mount helper.
const HELPER_NAMES: [&str; 2] = ["mount.supamount", "mount.fuse.supamount"];

/// Options mount(8), fuse3 or systemd read themselves (or that change nothing for us); they
/// may appear in fstab and must not fail the mount.
const IGNORED: [&str; 24] = [
    "_netdev",
    "nofail",
    "noauto",
    "auto",
    "user",
    "users",
    "nouser",
    "owner",
    "group",
    "defaults",
    "dev",
    "nodev",
    "suid",
    "nosuid",
    "exec",
    "noexec",
    "atime",
    "noatime",
    "relatime",
    "norelatime",
    "strictatime",
    "diratime",
    "nodiratime",
    "async",
];

/// Options that are not CLI flags but are ours.
const CREDENTIALS_FILE: &str = "credentials_file";
const CONFIG_FILE: &str = "config_file";

/// What a helper invocation asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum HelperRun {
    /// Mount: the ordinary command line, and environment to set before anything reads it.
    Mount {
        args: Vec<OsString>,
        env: Vec<(&'static str, OsString)>,
    },
    /// `-f` (mount(8)'s "fake"): everything checked, nothing mounted.
    Fake,
    /// `--help` or `--version`: print this and exit.
    Print(String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HelperError {
    #[error("unknown mount option `{0}` (see mount.supamount --help)")]
    UnknownOption(String),
    #[error("mount option `{0}` needs a value: {0}=VALUE")]
    MissingValue(String),
    #[error("mount option `{0}` takes no value")]
    UnexpectedValue(String),
    #[error(
        "mount option `{0}` looks like a secret: mount options are visible to every user in \
         /proc/mounts and ps; put keys in a profile file (credentials_file=PATH,profile=NAME)"
    )]
    Secret(String),
    #[error(
        "mount option `setuid=` is handled by fuse3's mount.fuse3, not by mount.supamount; \
         mount as that user or use uid=, gid= and credentials_file="
    )]
    SetUid,
    #[error("`{0}` needs an argument")]
    MissingArgument(String),
    #[error("unknown argument `{0}` (see mount.supamount --help)")]
    UnknownArgument(String),
    #[error("usage: mount.supamount BUCKET[/PREFIX] MOUNTPOINT [-sfnv] [-o OPTIONS]")]
    Usage,
    #[error("argument `{0}` is not valid UTF-8")]
    NotUtf8(String),
}

/// Whether `argv` follows the helper convention: our helper name, or a `-o` argument.
pub fn is_helper_invocation(argv: &[OsString]) -> bool {
    let by_name = argv
        .first()
        .and_then(|a| Path::new(a).file_name())
        .and_then(OsStr::to_str)
        .is_some_and(|name| HELPER_NAMES.contains(&name));
    let by_option = argv.iter().skip(1).any(|a| {
        a.to_str()
            .is_some_and(|a| a == "-o" || (a.starts_with("-o") && !a.starts_with("--")))
    });
    by_name || by_option
}

/// Translate the helper's arguments (after the program name).
pub fn translate(args: &[OsString]) -> Result<HelperRun, HelperError> {
    let args = args
        .iter()
        .map(|a| {
            a.to_str()
                .map(str::to_owned)
                .ok_or_else(|| HelperError::NotUtf8(a.to_string_lossy().into_owned()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut positional = Vec::new();
    let mut options = Vec::new();
    let (mut sloppy, mut fake) = (false, false);
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(HelperRun::Print(help())),
            "-V" | "--version" => {
                return Ok(HelperRun::Print(format!(
                    "mount.supamount {}",
                    env!("CARGO_PKG_VERSION")
                )))
            }
            "-o" => options.push(next_value(&mut iter, "-o")?),
            // mount(8) passes the type, and may pass a namespace it has already entered.
            "-t" | "-N" => drop(next_value(&mut iter, arg)?),
            opt if opt.starts_with("-o") => options.push(opt[2..].to_string()),
            opt if opt.starts_with('-') && opt.len() > 1 && !opt.starts_with("--") => {
                for flag in opt[1..].chars() {
                    match flag {
                        's' => sloppy = true,
                        'f' => fake = true,
                        'n' | 'v' => {}
                        _ => return Err(HelperError::UnknownArgument(opt.to_string())),
                    }
                }
            }
            opt if opt.starts_with("--") => {
                return Err(HelperError::UnknownArgument(opt.to_string()))
            }
            _ => positional.push(arg.clone()),
        }
    }
    let [source, mountpoint] = positional.as_slice() else {
        return Err(HelperError::Usage);
    };
    // Old fstab style `supamount#BUCKET` names the program in the source.
    let source = source.strip_prefix("supamount#").unwrap_or(source);

    let mut translated = Translation::default();
    for option in options.iter().flat_map(|o| o.split(',')) {
        match translated.apply(option) {
            Err(HelperError::UnknownOption(name)) if sloppy => {
                eprintln!("mount.supamount: ignoring unknown mount option `{name}` (-s)");
            }
            other => other?,
        }
    }
    if fake {
        return Ok(HelperRun::Fake);
    }
    let mut out: Vec<OsString> = vec!["supamount".into()];
    out.extend(translated.flags.into_iter().map(OsString::from));
    if translated.read_only {
        out.push("--read-only".into());
    }
    // After `--` a bucket named like a subcommand (`demo`, `server`) stays a bucket.
    out.extend(["--", source, mountpoint].map(OsString::from));
    Ok(HelperRun::Mount {
        args: out,
        env: translated.env,
    })
}

fn next_value<'a>(
    iter: &mut impl Iterator<Item = &'a String>,
    flag: &str,
) -> Result<String, HelperError> {
    iter.next()
        .cloned()
        .ok_or_else(|| HelperError::MissingArgument(flag.to_string()))
}

#[derive(Default)]
struct Translation {
    flags: Vec<String>,
    env: Vec<(&'static str, OsString)>,
    /// `ro` and `rw` both may appear (mount(8) adds `rw`); the last one wins.
    read_only: bool,
}

impl Translation {
    fn apply(&mut self, option: &str) -> Result<(), HelperError> {
        let (name, value) = match option.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (option, None),
        };
        match name {
            "" => return Ok(()),
            "ro" | "rw" => {
                no_value(name, value)?;
                self.read_only = name == "ro";
                return Ok(());
            }
            "comment" => return Ok(()),
            n if n.starts_with("x-") || IGNORED.contains(&n) => return Ok(()),
            "setuid" | "drop_privileges" => return Err(HelperError::SetUid),
            CREDENTIALS_FILE | CONFIG_FILE => {
                let var = if name == CREDENTIALS_FILE {
                    "AWS_SHARED_CREDENTIALS_FILE"
                } else {
                    "AWS_CONFIG_FILE"
                };
                let path = value
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| HelperError::MissingValue(name.to_string()))?;
                self.env.push((var, path.into()));
                return Ok(());
            }
            _ => {}
        }
        // Before the flag lookup: the CLI has hidden secret flags only to refuse them.
        if looks_secret(name) {
            return Err(HelperError::Secret(name.to_string()));
        }
        let long = name.replace('_', "-");
        let Some(takes_value) = cli_flag(&long) else {
            return Err(HelperError::UnknownOption(name.to_string()));
        };
        match (takes_value, value) {
            (true, Some(v)) if !v.is_empty() => {
                self.flags.push(format!("--{long}"));
                self.flags.push(v.to_string());
            }
            (true, _) => return Err(HelperError::MissingValue(name.to_string())),
            (false, None) => self.flags.push(format!("--{long}")),
            (false, Some(_)) => return Err(HelperError::UnexpectedValue(name.to_string())),
        }
        Ok(())
    }
}

fn no_value(name: &str, value: Option<&str>) -> Result<(), HelperError> {
    match value {
        None => Ok(()),
        Some(_) => Err(HelperError::UnexpectedValue(name.to_string())),
    }
}

/// Whether the mount command has a long flag `--long`, and whether it takes a value.
/// `read-only` is left out: `ro`/`rw` is how mount(8) says it.
fn cli_flag(long: &str) -> Option<bool> {
    option_flags()
        .find(|a| a.get_long() == Some(long))
        .map(|a| a.get_action().takes_values())
}

/// The long flags that make sense as mount options.
fn option_flags() -> impl Iterator<Item = clap::Arg> {
    Cli::command()
        .get_arguments()
        .filter(|a| !a.is_positional() && !a.is_hide_set())
        .filter(|a| !matches!(a.get_long(), None | Some("help" | "version" | "read-only")))
        .cloned()
        .collect::<Vec<_>>()
        .into_iter()
}

/// A name that holds a secret rather than a path to one (`session_token_file=` is fine).
fn looks_secret(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    let secretive = [
        "secret",
        "token",
        "password",
        "access_key",
        "key_id",
        "apikey",
        "anon_key",
    ]
    .iter()
    .any(|s| name.contains(s));
    secretive && !name.ends_with("_file")
}

/// The text of `mount.supamount --help` (also the body of its man page).
pub fn help() -> String {
    let flags: Vec<String> = option_flags()
        .filter_map(|a| {
            let name = a.get_long()?.replace('-', "_");
            let value = a
                .get_value_names()
                .and_then(|v| v.first())
                .map(|v| v.to_string());
            Some(match (a.get_action().takes_values(), value) {
                (true, Some(v)) => format!("{name}={v}"),
                (true, None) => format!("{name}=VALUE"),
                (false, _) => name,
            })
        })
        .collect();
    format!(
        "mount.supamount: mount a Supabase Storage (S3) bucket the way mount(8) runs helpers\n\n\
         usage: mount.supamount BUCKET[/PREFIX] MOUNTPOINT [-sfnv] [-o OPTION[,OPTION...]]\n\
         \x20      mount -t fuse.supamount BUCKET[/PREFIX] MOUNTPOINT -o OPTIONS\n\n\
         fstab:  my-bucket  /mnt/bucket  fuse.supamount  \
         _netdev,nofail,profile=supabase,credentials_file=/etc/supamount/credentials  0 0\n\n\
         options (each is the supamount flag of the same name, see supamount --help):\n  {}\n  \
         ro, rw\n  credentials_file=PATH  AWS credentials file holding the profile's keys\n  \
         config_file=PATH       AWS config file\n\n\
         accepted and ignored:\n  {}, x-*, comment=\n\n\
         -s  ignore unknown options   -f  check only, do not mount   -n, -v  accepted\n\n\
         Keys never go in options: /proc/mounts and ps show them to every user.\n",
        wrap(&flags.join(", "), "  "),
        wrap(&IGNORED.join(", "), "  ")
    )
}

/// Break a comma-separated list into lines of about 90 columns.
fn wrap(list: &str, indent: &str) -> String {
    let mut out = String::new();
    let mut width = 0;
    for word in list.split_inclusive(' ') {
        if width + word.len() > 90 {
            out.push('\n');
            out.push_str(indent);
            width = 0;
        }
        out.push_str(word);
        width += word.len();
    }
    out
}

/// Turn this process's arguments into the ordinary command line: `Ok(Some(argv))` to parse,
/// `Ok(None)` when there is nothing more to do. Sets the environment the options asked for,
/// which must happen before any thread starts.
pub fn rewrite(argv: Vec<OsString>) -> Result<Option<Vec<OsString>>, HelperError> {
    if !is_helper_invocation(&argv) {
        return Ok(Some(argv));
    }
    match translate(&argv[1..])? {
        HelperRun::Mount { args, env } => {
            for (var, value) in env {
                std::env::set_var(var, value);
            }
            crate::daemon::set_child_args(args[1..].to_vec());
            Ok(Some(args))
        }
        HelperRun::Fake => Ok(None),
        HelperRun::Print(text) => {
            print!("{text}");
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    fn mount_args(args: &[&str]) -> Vec<String> {
        match translate(&os(args)).unwrap() {
            HelperRun::Mount { args, .. } => {
                args.into_iter().map(|a| a.into_string().unwrap()).collect()
            }
            other => panic!("expected a mount, got {other:?}"),
        }
    }

    #[test]
    fn detects_helper_by_name_or_dash_o() {
        assert!(is_helper_invocation(&os(&[
            "/sbin/mount.fuse.supamount",
            "b",
            "/m"
        ])));
        assert!(is_helper_invocation(&os(&["mount.supamount", "b", "/m"])));
        assert!(is_helper_invocation(&os(&[
            "supamount",
            "b",
            "/m",
            "-o",
            "rw"
        ])));
        assert!(is_helper_invocation(&os(&["supamount", "b", "/m", "-orw"])));
        assert!(!is_helper_invocation(&os(&["supamount", "b", "/m", "-f"])));
        assert!(!is_helper_invocation(&os(&["supamount", "demo", "/m"])));
    }

    #[test]
    fn the_cli_has_no_dash_o() {
        // `-o` is how the helper convention is recognised under the name `supamount`.
        assert!(Cli::command()
            .get_arguments()
            .all(|a| a.get_short() != Some('o')));
    }

    #[test]
    fn options_map_to_flags() {
        let args = mount_args(&[
            "demo",
            "/mnt/x",
            "-n",
            "-v",
            "-o",
            "rw,dev,suid,endpoint_url=http://127.0.0.1:9000,region=us-east-1,_netdev,nofail,\
             x-systemd.automount,comment=hi,uid=1000,file_mode=600,allow_other,ro",
            "-t",
            "fuse.supamount",
        ]);
        assert_eq!(
            args,
            [
                "supamount",
                "--endpoint-url",
                "http://127.0.0.1:9000",
                "--region",
                "us-east-1",
                "--uid",
                "1000",
                "--file-mode",
                "600",
                "--allow-other",
                "--read-only",
                "--",
                "demo",
                "/mnt/x"
            ]
        );
        let cli = Cli::try_parse_from(&args).unwrap();
        assert!(cli.command.is_none(), "`demo` is a bucket here");
        assert_eq!(cli.mount.bucket.as_deref(), Some("demo"));
        assert!(cli.mount.options.read_only && cli.mount.options.allow_other);
    }

    #[test]
    fn last_of_ro_and_rw_wins() {
        let args = mount_args(&["b", "/m", "-o", "ro", "-o", "rw"]);
        assert!(!args.contains(&"--read-only".to_string()));
    }

    #[test]
    fn credentials_file_becomes_environment() {
        let run = translate(&os(&[
            "supamount#b/p",
            "/m",
            "-oprofile=supabase,credentials_file=/etc/supamount/credentials",
        ]))
        .unwrap();
        let HelperRun::Mount { args, env } = run else {
            panic!("expected a mount");
        };
        assert_eq!(
            env,
            [(
                "AWS_SHARED_CREDENTIALS_FILE",
                OsString::from("/etc/supamount/credentials")
            )]
        );
        assert_eq!(args[1..], os(&["--profile", "supabase", "--", "b/p", "/m"]));
    }

    #[test]
    fn every_option_of_the_brief_is_known() {
        let opts = "endpoint_url=u,profile=p,region=r,cache_dir=/c,attr_ttl=0,uid=1,gid=2,\
                    file_mode=600,dir_mode=700,log_file=/l,log_level=debug,allow_other,\
                    foreground,ro,rw,defaults,user,users,nouser,auto,noauto,exec,noexec,\
                    atime,noatime,x-systemd.requires=network-online.target";
        let args = mount_args(&["b", "/m", "-o", opts]);
        assert!(Cli::try_parse_from(&args).is_ok(), "{args:?}");
    }

    #[test]
    fn bad_options_are_refused_clearly() {
        let err = |opts: &str| translate(&os(&["b", "/m", "-o", opts])).unwrap_err();
        assert_eq!(err("bogus"), HelperError::UnknownOption("bogus".into()));
        assert_eq!(err("region"), HelperError::MissingValue("region".into()));
        assert_eq!(
            err("allow_other=1"),
            HelperError::UnexpectedValue("allow_other".into())
        );
        assert_eq!(err("ro=1"), HelperError::UnexpectedValue("ro".into()));
        assert_eq!(
            err("read_only"),
            HelperError::UnknownOption("read_only".into())
        );
        assert!(matches!(
            err("aws_secret_access_key=x"),
            HelperError::Secret(_)
        ));
        assert!(matches!(err("session_token=x"), HelperError::Secret(_)));
        assert!(matches!(err("anon_key=x"), HelperError::Secret(_)));
        assert_eq!(err("setuid=alice"), HelperError::SetUid);
        assert!(err("bogus")
            .to_string()
            .contains("unknown mount option `bogus`"));
    }

    #[test]
    fn paths_to_secrets_are_not_secrets() {
        assert!(looks_secret("refresh_token") && looks_secret("AWS_SECRET_ACCESS_KEY"));
        assert!(!looks_secret("session_token_file") && !looks_secret("anon_key_file"));
        assert!(!looks_secret("profile") && !looks_secret("endpoint_url"));
    }

    #[test]
    fn sloppy_ignores_unknown_options() {
        let args = mount_args(&["b", "/m", "-s", "-o", "bogus,region=r"]);
        assert_eq!(args[1..], ["--region", "r", "--", "b", "/m"]);
    }

    #[test]
    fn fake_help_and_usage() {
        assert_eq!(
            translate(&os(&["b", "/m", "-f", "-o", "rw"])),
            Ok(HelperRun::Fake)
        );
        assert!(
            matches!(translate(&os(&["--help"])), Ok(HelperRun::Print(t)) if t.contains("fstab"))
        );
        assert_eq!(translate(&os(&["b"])), Err(HelperError::Usage));
        assert_eq!(
            translate(&os(&["b", "/m", "-o"])),
            Err(HelperError::MissingArgument("-o".into()))
        );
        assert_eq!(
            translate(&os(&["b", "/m", "-x"])),
            Err(HelperError::UnknownArgument("-x".into()))
        );
    }
}
