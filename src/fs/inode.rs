//! The inode table: inode numbers ⇄ paths below the mount root, with cached attributes.
//!
//! A path is relative to the mount root ("" is the root, "a/b.txt" a file). Numbers are never
//! reused. When a path changes kind (a file replaced by a directory), it gets a new number, so
//! the kernel never sees one inode change type.

use std::collections::HashMap;
use std::time::{Instant, SystemTime};

use super::meta::PosixMeta;

pub const ROOT_INO: u64 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
}

/// What the filesystem knows about one path.
#[derive(Debug, Clone)]
pub struct Node {
    pub path: String,
    pub kind: Kind,
    pub size: u64,
    pub mtime: SystemTime,
    pub etag: Option<String>,
    /// Modes, owners and times the object records; see `meta_until` for how far to trust it.
    pub meta: PosixMeta,
    /// Attributes are trusted until then; afterwards the server is asked again.
    pub valid_until: Instant,
    /// `meta` is trusted until then. A listing refreshes the other attributes but carries no
    /// metadata, so this can lag behind `valid_until`.
    pub meta_until: Instant,
    /// The object version (ETag, Last-Modified) that `meta` was read from. A listing showing
    /// the same version vouches for the metadata too: changing metadata rewrites the object,
    /// which changes its Last-Modified.
    pub meta_version: Option<Version>,
    /// ETag at the last read-only open: if it is unchanged at the next open, the kernel may
    /// keep the pages it cached.
    pub opened_etag: Option<String>,
    /// Lookups the kernel holds (forget gives them back).
    lookups: u64,
}

/// Fresh attributes for a path, as learnt from the server or from a local change.
#[derive(Debug, Clone)]
pub struct Observed {
    pub kind: Kind,
    pub size: u64,
    pub mtime: SystemTime,
    pub etag: Option<String>,
    /// The object's metadata, when this observation read it (a HEAD, or our own write);
    /// `None` from a listing.
    pub meta: Option<PosixMeta>,
}

/// An object version as listings and HEADs both show it: the ETag and the Last-Modified time
/// in whole seconds (a HEAD's date has no finer precision).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    etag: String,
    modified_secs: u64,
}

impl Version {
    fn of(seen: &Observed) -> Option<Self> {
        let modified = seen.mtime.duration_since(std::time::UNIX_EPOCH).ok()?;
        Some(Self {
            etag: seen.etag.clone()?,
            modified_secs: modified.as_secs(),
        })
    }
}

#[derive(Debug)]
pub struct InodeTable {
    nodes: HashMap<u64, Node>,
    by_path: HashMap<String, u64>,
    next: u64,
}

impl InodeTable {
    pub fn new(root_mtime: SystemTime) -> Self {
        let root = Node {
            path: String::new(),
            kind: Kind::Dir,
            size: 0,
            mtime: root_mtime,
            etag: None,
            meta: PosixMeta::default(),
            // The root always exists; its attributes never need the server.
            valid_until: Instant::now() + std::time::Duration::from_secs(u32::MAX as u64),
            meta_until: Instant::now() + std::time::Duration::from_secs(u32::MAX as u64),
            meta_version: None,
            opened_etag: None,
            lookups: 1,
        };
        Self {
            nodes: HashMap::from([(ROOT_INO, root)]),
            by_path: HashMap::from([(String::new(), ROOT_INO)]),
            next: ROOT_INO + 1,
        }
    }

    pub fn get(&self, ino: u64) -> Option<&Node> {
        self.nodes.get(&ino)
    }

    pub fn get_mut(&mut self, ino: u64) -> Option<&mut Node> {
        self.nodes.get_mut(&ino)
    }

    pub fn ino_of(&self, path: &str) -> Option<u64> {
        self.by_path.get(path).copied()
    }

    /// Record what was observed at `path` and return its inode number.
    pub fn observe(&mut self, path: &str, mut seen: Observed, valid_until: Instant) -> u64 {
        if let Some(ino) = self.ino_of(path) {
            if let Some(node) = self.nodes.get_mut(&ino) {
                // A listing shows a symbolic link as a plain object: while its ETag is the
                // same, it is still the link it was.
                if seen.meta.is_none()
                    && seen.kind == Kind::File
                    && node.kind == Kind::Symlink
                    && seen.etag.is_some()
                    && seen.etag == node.etag
                {
                    seen.kind = Kind::Symlink;
                }
                if node.kind == seen.kind {
                    let version = Version::of(&seen);
                    if let Some(meta) = seen.meta {
                        node.meta = meta;
                        node.meta_until = valid_until;
                        node.meta_version = version;
                    } else if version.is_some() && version == node.meta_version {
                        node.meta_until = valid_until;
                    }
                    node.size = seen.size;
                    node.mtime = seen.mtime;
                    node.etag = seen.etag;
                    node.valid_until = valid_until;
                    return ino;
                }
            }
        }
        let ino = self.next;
        self.next += 1;
        let meta_version = seen.meta.as_ref().and_then(|_| Version::of(&seen));
        self.nodes.insert(
            ino,
            Node {
                path: path.to_string(),
                kind: seen.kind,
                size: seen.size,
                mtime: seen.mtime,
                etag: seen.etag,
                meta_until: if seen.meta.is_some() {
                    valid_until
                } else {
                    Instant::now()
                },
                meta: seen.meta.unwrap_or_default(),
                meta_version,
                valid_until,
                opened_etag: None,
                lookups: 0,
            },
        );
        self.by_path.insert(path.to_string(), ino);
        ino
    }

    /// The kernel now holds one more reference to `ino`.
    pub fn add_lookup(&mut self, ino: u64) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.lookups += 1;
        }
    }

    /// The kernel dropped `n` references; the node goes once none are left and `keep` is false.
    pub fn forget(&mut self, ino: u64, n: u64, keep: bool) {
        let Some(node) = self.nodes.get_mut(&ino) else {
            return;
        };
        node.lookups = node.lookups.saturating_sub(n);
        if node.lookups == 0 && ino != ROOT_INO && !keep {
            let path = node.path.clone();
            self.nodes.remove(&ino);
            if self.by_path.get(&path) == Some(&ino) {
                self.by_path.remove(&path);
            }
        }
    }

    /// The path no longer names anything (unlink, rmdir, or found gone on the server).
    pub fn detach(&mut self, path: &str) {
        if let Some(ino) = self.by_path.remove(path) {
            if let Some(node) = self.nodes.get_mut(&ino) {
                node.valid_until = Instant::now();
            }
        }
    }

    /// Move a file's node to a new path; whatever the new path named before is detached.
    pub fn rename(&mut self, from: &str, to: &str) {
        self.detach(to);
        if let Some(ino) = self.by_path.remove(from) {
            if let Some(node) = self.nodes.get_mut(&ino) {
                node.path = to.to_string();
            }
            self.by_path.insert(to.to_string(), ino);
        }
    }

    /// Move a directory and everything known below it to a new path.
    pub fn rename_tree(&mut self, from: &str, to: &str) {
        let below = format!("{from}/");
        let moved: Vec<(String, u64)> = self
            .by_path
            .iter()
            .filter(|(path, _)| path.as_str() == from || path.starts_with(&below))
            .map(|(path, &ino)| (path.clone(), ino))
            .collect();
        for (old, _) in &moved {
            self.by_path.remove(old);
        }
        self.detach(to);
        for (old, ino) in moved {
            let new = format!("{to}{}", &old[from.len()..]);
            if let Some(node) = self.nodes.get_mut(&ino) {
                node.path = new.clone();
                node.valid_until = Instant::now();
            }
            self.by_path.insert(new, ino);
        }
    }
}

/// `parent/name`, where the root is the empty path.
pub fn child_path(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}/{name}")
    }
}

/// The directory part of a path ("" for entries of the root).
pub fn parent_path(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(parent, _)| parent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn file(size: u64) -> Observed {
        Observed {
            kind: Kind::File,
            size,
            mtime: SystemTime::UNIX_EPOCH,
            etag: None,
            meta: None,
        }
    }

    #[test]
    fn same_path_same_kind_keeps_its_number() {
        let mut t = InodeTable::new(SystemTime::UNIX_EPOCH);
        let later = Instant::now() + Duration::from_secs(1);
        let a = t.observe("a", file(1), later);
        assert_eq!(t.observe("a", file(2), later), a);
        assert_eq!(t.get(a).unwrap().size, 2);
        let dir = Observed {
            kind: Kind::Dir,
            ..file(0)
        };
        assert_ne!(t.observe("a", dir, later), a);
    }

    #[test]
    fn a_listing_keeps_a_known_symlink_and_its_metadata() {
        let mut t = InodeTable::new(SystemTime::UNIX_EPOCH);
        let later = Instant::now() + Duration::from_secs(60);
        let meta = PosixMeta {
            mode: Some(super::super::meta::S_IFLNK | 0o777),
            ..Default::default()
        };
        let link = Observed {
            kind: Kind::Symlink,
            etag: Some("e1".into()),
            meta: Some(meta),
            ..file(3)
        };
        let ino = t.observe("l", link, later);
        let listed = Observed {
            etag: Some("e1".into()),
            ..file(3)
        };
        assert_eq!(t.observe("l", listed.clone(), later), ino);
        assert_eq!(t.get(ino).unwrap().meta, meta);
        let changed = Observed {
            etag: Some("e2".into()),
            ..listed
        };
        assert_ne!(
            t.observe("l", changed, later),
            ino,
            "a new object, a new file"
        );
    }

    #[test]
    fn forget_drops_unreferenced_nodes() {
        let mut t = InodeTable::new(SystemTime::UNIX_EPOCH);
        let a = t.observe("a", file(1), Instant::now());
        t.add_lookup(a);
        t.add_lookup(a);
        t.forget(a, 1, false);
        assert!(t.get(a).is_some());
        t.forget(a, 1, false);
        assert!(t.get(a).is_none());
        assert_eq!(t.ino_of("a"), None);
    }

    #[test]
    fn rename_moves_the_node() {
        let mut t = InodeTable::new(SystemTime::UNIX_EPOCH);
        let a = t.observe("x/a", file(1), Instant::now());
        let b = t.observe("x/b", file(2), Instant::now());
        t.rename("x/a", "x/b");
        assert_eq!(t.ino_of("x/b"), Some(a));
        assert_eq!(t.ino_of("x/a"), None);
        assert_eq!(t.get(a).unwrap().path, "x/b");
        assert!(
            t.get(b).is_some(),
            "the kernel may still hold the old target"
        );
    }

    #[test]
    fn paths() {
        assert_eq!(child_path("", "a"), "a");
        assert_eq!(child_path("a", "b"), "a/b");
        assert_eq!(parent_path("a/b/c"), "a/b");
        assert_eq!(parent_path("a"), "");
    }
}
