//! Files that hold secrets: read with their permissions checked, written atomically with 0600.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::Secret;

/// Metadata that changes when a file is rewritten or replaced, so a re-read is only needed
/// when it differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

impl FileStamp {
    pub fn of(meta: &fs::Metadata) -> Self {
        FileStamp {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        }
    }
}

/// Whether others than the owner may read the file (then we warn: a token there can be
/// copied and used as the user).
pub fn readable_by_others(meta: &fs::Metadata) -> bool {
    meta.mode() & 0o077 != 0
}

/// The trimmed contents of a secret file and its stamp. Warns (once per call site's choice)
/// when group or others may read it.
pub fn read_secret(path: &Path, what: &str, warn_perms: bool) -> io::Result<(Secret, FileStamp)> {
    let text = fs::read_to_string(path)?;
    let meta = fs::metadata(path)?;
    if warn_perms && readable_by_others(&meta) {
        tracing::warn!(
            path = %path.display(),
            mode = format!("{:o}", meta.mode() & 0o777),
            "the {what} file can be read by other users; chmod 600 it"
        );
    }
    Ok((Secret::new(text.trim()), FileStamp::of(&meta)))
}

/// Replace `path` with `contents` so that a reader sees the old or the new file, never a
/// partial one, and so that the new file is never readable by others: a temp file created
/// with mode 0600 next to it, synced, renamed over it, then the directory synced.
pub fn write_atomic_private(path: &Path, contents: &str) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = temp_name(path);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(contents.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn temp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.supamount-{}.tmp", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn atomic_write_is_private_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("refresh-token");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();

        write_atomic_private(&path, "new-token").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new-token\n");
        let mode = fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600, "mode {mode:o}");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temp file left behind");

        let (secret, _) = read_secret(&path, "refresh token", true).unwrap();
        assert_eq!(secret.expose(), "new-token");
    }

    #[test]
    fn a_failed_write_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("token");
        assert!(write_atomic_private(&path, "x").is_err());
        assert!(!path.exists());
    }

    #[test]
    fn stamps_change_with_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        fs::write(&path, "a").unwrap();
        let first = FileStamp::of(&fs::metadata(&path).unwrap());
        write_atomic_private(&path, "b").unwrap();
        assert_ne!(first, FileStamp::of(&fs::metadata(&path).unwrap()));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        assert!(readable_by_others(&fs::metadata(&path).unwrap()));
    }
}
