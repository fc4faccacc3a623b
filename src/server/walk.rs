//! Finding the keys and common prefixes of a listing in a bucket directory.
//!
//! A prefix `a/b/c` only needs the directory `a/b/` and, in it, the names that start with `c`.
//! With the delimiter `/` one level of that directory is enough: files are keys and directories
//! are common prefixes (when they hold any object). Any other delimiter needs every key below,
//! rolled up afterwards. Names that are not valid keys (files put in `DATA_DIR` by hand) are
//! skipped, as are symlinks. The result is unsorted; [`super::listing`] orders it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use tracing::debug;

use super::keys::{is_listable_dir, Key};
use super::listing::{group_by_delimiter, Entry};

pub(crate) fn collect_entries(
    bucket_dir: &Path,
    prefix: &str,
    delimiter: Option<&str>,
) -> io::Result<Vec<Entry>> {
    let (dir_part, name_prefix) = match prefix.rfind('/') {
        Some(at) => prefix.split_at(at + 1),
        None => ("", prefix),
    };
    if !is_listable_dir(dir_part) {
        return Ok(Vec::new());
    }
    let dir = bucket_dir.join(dir_part);
    match delimiter.filter(|d| !d.is_empty()) {
        Some("/") => one_level(&dir, dir_part, name_prefix),
        Some(delimiter) => {
            let keys = all_keys(&dir, dir_part, name_prefix)?;
            Ok(group_by_delimiter(prefix, delimiter, keys))
        }
        None => Ok(all_keys(&dir, dir_part, name_prefix)?
            .into_iter()
            .map(Entry::object)
            .collect()),
    }
}

/// Whether a directory holds a regular file anywhere below it.
pub(crate) fn has_files(dir: &Path) -> io::Result<bool> {
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in read_dir_if_exists(&dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_file() {
                return Ok(true);
            }
            if kind.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    Ok(false)
}

fn one_level(dir: &Path, dir_part: &str, name_prefix: &str) -> io::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    for entry in read_dir_if_exists(dir)? {
        let entry = entry?;
        let Some(name) = matching_name(&entry, name_prefix) else {
            continue;
        };
        let kind = entry.file_type()?;
        let key = format!("{dir_part}{name}");
        if kind.is_file() && is_key(&key) {
            entries.push(Entry::object(key));
        } else if kind.is_dir() && is_key(&key) && has_files(&entry.path())? {
            entries.push(Entry::prefix(key + "/"));
        }
    }
    Ok(entries)
}

fn all_keys(dir: &Path, dir_part: &str, name_prefix: &str) -> io::Result<Vec<String>> {
    let mut keys = Vec::new();
    let mut pending: Vec<(PathBuf, String)> = Vec::new();
    for entry in read_dir_if_exists(dir)? {
        let entry = entry?;
        let Some(name) = matching_name(&entry, name_prefix) else {
            continue;
        };
        visit(entry, format!("{dir_part}{name}"), &mut keys, &mut pending)?;
    }
    while let Some((dir, key_dir)) = pending.pop() {
        for entry in read_dir_if_exists(&dir)? {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            visit(entry, format!("{key_dir}/{name}"), &mut keys, &mut pending)?;
        }
    }
    Ok(keys)
}

fn visit(
    entry: fs::DirEntry,
    key: String,
    keys: &mut Vec<String>,
    pending: &mut Vec<(PathBuf, String)>,
) -> io::Result<()> {
    let kind = entry.file_type()?;
    if kind.is_dir() {
        pending.push((entry.path(), key));
    } else if kind.is_file() && is_key(&key) {
        keys.push(key);
    }
    Ok(())
}

fn matching_name(entry: &fs::DirEntry, name_prefix: &str) -> Option<String> {
    let name = entry.file_name().into_string().ok()?;
    name.starts_with(name_prefix).then_some(name)
}

fn is_key(key: &str) -> bool {
    let valid = Key::parse(key).is_ok();
    if !valid {
        debug!(key, "skipping a file whose name is not a valid key");
    }
    valid
}

/// A directory that a concurrent delete just pruned lists as empty.
fn read_dir_if_exists(dir: &Path) -> io::Result<impl Iterator<Item = io::Result<fs::DirEntry>>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => Some(entries),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            None
        }
        Err(e) => return Err(e),
    };
    Ok(entries.into_iter().flatten())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(root: &Path, key: &str) {
        let path = root.join(key);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, b"x").unwrap();
    }

    fn sorted(mut entries: Vec<Entry>) -> Vec<String> {
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        entries.into_iter().map(|e| e.name).collect()
    }

    #[test]
    fn one_level_with_slash_delimiter() {
        let root = tempfile::tempdir().unwrap();
        for key in ["a", "a b/x", "a-b", "dir/sub/f", "dir/g", "other"] {
            touch(root.path(), key);
        }
        fs::create_dir_all(root.path().join("empty/deeper")).unwrap();
        let top = collect_entries(root.path(), "", Some("/")).unwrap();
        assert_eq!(sorted(top), ["a", "a b/", "a-b", "dir/", "other"]);
        let dir = collect_entries(root.path(), "dir/", Some("/")).unwrap();
        assert_eq!(sorted(dir), ["dir/g", "dir/sub/"]);
        let partial = collect_entries(root.path(), "dir/s", Some("/")).unwrap();
        assert_eq!(sorted(partial), ["dir/sub/"]);
    }

    #[test]
    fn recursive_without_delimiter() {
        let root = tempfile::tempdir().unwrap();
        for key in ["a", "dir/sub/f", "dir/g", "do"] {
            touch(root.path(), key);
        }
        touch(root.path(), "dir/bad~name");
        let all = collect_entries(root.path(), "d", None).unwrap();
        assert_eq!(sorted(all), ["dir/g", "dir/sub/f", "do"]);
        assert!(collect_entries(root.path(), "../", None)
            .unwrap()
            .is_empty());
        assert!(collect_entries(root.path(), "missing/", None)
            .unwrap()
            .is_empty());
    }
}
