//! Reading a directory from the bucket: every page of a delimited listing, with Supabase's
//! placeholders hidden and keys that cannot be file names skipped.

use std::collections::BTreeMap;
use std::time::SystemTime;

use super::inode::{Kind, Observed};
use crate::names::{is_listable, FOLDER_PLACEHOLDER};
use crate::store::{ObjectStore, StoreResult, MAX_KEYS_PER_PAGE};

/// One name in a directory listing.
#[derive(Debug, Clone)]
pub struct Listed {
    pub name: String,
    pub seen: Observed,
}

/// Keys that cannot be shown, reported once each by the caller.
#[derive(Debug, Default)]
pub struct Skipped {
    pub unlistable: Vec<String>,
    /// Objects hidden because a directory of the same name exists.
    pub shadowed: Vec<String>,
}

/// List everything directly under `prefix` (which ends with `/`, or is empty for the bucket
/// root), in name order. `dir_mtime` is shown for directories, which have no time of their own.
pub async fn list_dir(
    store: &dyn ObjectStore,
    prefix: &str,
    dir_mtime: SystemTime,
) -> StoreResult<(Vec<Listed>, Skipped)> {
    let mut entries: BTreeMap<String, Observed> = BTreeMap::new();
    let mut skipped = Skipped::default();
    let mut token = None;
    loop {
        let page = store
            .list_page(prefix, Some("/"), token, MAX_KEYS_PER_PAGE)
            .await?;
        for common in page.prefixes {
            let name = common[prefix.len()..].trim_end_matches('/');
            if !is_listable(name) {
                skipped.unlistable.push(common.clone());
                continue;
            }
            let dir = Observed {
                kind: Kind::Dir,
                size: 0,
                mtime: dir_mtime,
                etag: None,
                meta: None,
            };
            if let Some(file) = entries.insert(name.to_string(), dir) {
                if file.kind == Kind::File {
                    skipped.shadowed.push(format!("{prefix}{name}"));
                }
            }
        }
        for object in page.objects {
            let name = &object.key[prefix.len()..];
            // The `dir/` marker of the directory itself, and Supabase's placeholder.
            if name.is_empty() || name == FOLDER_PLACEHOLDER {
                continue;
            }
            if !is_listable(name) {
                skipped.unlistable.push(object.key.clone());
                continue;
            }
            if entries.get(name).is_some_and(|e| e.kind == Kind::Dir) {
                skipped.shadowed.push(object.key.clone());
                continue;
            }
            let file = Observed {
                kind: Kind::File,
                size: object.size,
                mtime: object.last_modified.unwrap_or(dir_mtime),
                etag: object.etag,
                meta: None,
            };
            entries.insert(name.to_string(), file);
        }
        token = page.next_token;
        if token.is_none() {
            break;
        }
    }
    let listed = entries
        .into_iter()
        .map(|(name, seen)| Listed { name, seen })
        .collect();
    Ok((listed, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    #[tokio::test]
    async fn hides_placeholders_and_markers_and_prefers_directories() {
        let store = MemoryStore::new();
        store.insert("d/", "");
        store.insert("d/.emptyFolderPlaceholder", "");
        store.insert("d/file", "abc");
        store.insert("d/both", "shadowed file");
        store.insert("d/both/inner", "x");
        store.insert("d/sub/", "");
        store.insert("d/a//b", "empty segment");
        let (listed, skipped) = list_dir(&store, "d/", SystemTime::UNIX_EPOCH)
            .await
            .unwrap();
        let names: Vec<_> = listed
            .iter()
            .map(|l| (l.name.as_str(), l.seen.kind))
            .collect();
        assert_eq!(
            names,
            vec![
                ("a", Kind::Dir),
                ("both", Kind::Dir),
                ("file", Kind::File),
                ("sub", Kind::Dir)
            ]
        );
        assert_eq!(skipped.shadowed, vec!["d/both"]);
        assert!(skipped.unlistable.is_empty());
    }

    #[tokio::test]
    async fn skips_names_that_cannot_be_files() {
        let store = MemoryStore::new();
        store.insert(&"n".repeat(300), "x");
        store.insert("ok", "x");
        let (listed, skipped) = list_dir(&store, "", SystemTime::UNIX_EPOCH).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(skipped.unlistable.len(), 1);
    }
}
