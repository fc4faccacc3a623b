//! Which bucket names and object keys the local server accepts.
//!
//! Two sets of rules meet here. Supabase Storage's charset comes first, so that the local server
//! refuses exactly what the real server refuses (400 `InvalidKey`). The disk layout adds its own:
//! a key becomes a relative path under the bucket directory, so a segment may not be empty, `.`
//! or `..` (it could escape `DATA_DIR` or alias another key), and must fit in a file name next to
//! the sidecar suffix. A [`Key`] or [`Bucket`] can only be built by these checks, so code that
//! joins them onto a path never sees an unchecked name.

use std::fmt;

/// Punctuation Supabase Storage accepts in object keys, besides ASCII letters and digits
/// (`VALID_OBJECT_KEY` in the storage server's `src/storage/limits.ts`).
const KEY_PUNCTUATION: &[u8] = b"_/!-.*'() &$=@;:+,?";

/// The object Supabase stores for `PUT dir/` with an empty body, and that its dashboard writes
/// to show an empty folder.
pub(crate) const PLACEHOLDER: &str = ".emptyFolderPlaceholder";

/// Appended to a key's last segment to name its metadata file in the sidecar tree. `~` is not
/// a key character, so a sidecar name can never equal a key segment.
pub(crate) const SIDECAR_SUFFIX: &str = "~meta.json";

/// Linux NAME_MAX, less the sidecar suffix: a longer segment could not be stored as a file.
const MAX_SEGMENT_BYTES: usize = 255 - SIDECAR_SUFFIX.len();

/// Supabase's limit on bucket names (`isValidBucketName`).
const MAX_BUCKET_BYTES: usize = 100;

/// Why a key was refused. Every variant is answered with 400 `InvalidKey`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum KeyError {
    #[error("the key is empty")]
    Empty,
    #[error("the key contains {0:?}, which Supabase Storage does not accept in keys")]
    Character(char),
    #[error("the key has an empty segment (a leading '/' or '//')")]
    EmptySegment,
    #[error("the key has a '.' or '..' segment")]
    DotSegment,
    #[error("a key segment is longer than {MAX_SEGMENT_BYTES} bytes, the local server's limit")]
    SegmentTooLong,
    #[error("a key ending in '/' can only be written as an empty folder marker (empty body)")]
    FolderWithData,
}

/// A checked object key: Supabase's charset, and safe to use as a relative path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Key(String);

/// A checked bucket name: Supabase's charset, one path segment, not one of the server's hidden
/// directories (they all start with `.`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Bucket(String);

/// What a key in a request names: an object, or (with a trailing `/`) a folder marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Object(Key),
    /// `dir/`: the folder's key without the trailing slash.
    Folder(Key),
}

impl Key {
    pub(crate) fn parse(raw: &str) -> Result<Key, KeyError> {
        if raw.is_empty() {
            return Err(KeyError::Empty);
        }
        check_charset(raw)?;
        raw.split('/').try_for_each(check_segment)?;
        Ok(Key(raw.to_owned()))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// The segments before the last one: the directories that hold the object on disk.
    pub(crate) fn parent_segments(&self) -> impl Iterator<Item = &str> {
        let parent = self.0.rsplit_once('/').map_or("", |(dir, _)| dir);
        parent.split('/').filter(|s| !s.is_empty())
    }

    /// The folder marker's key inside this folder (`dir` → `dir/.emptyFolderPlaceholder`).
    pub(crate) fn placeholder(&self) -> Key {
        Key(format!("{}/{PLACEHOLDER}", self.0))
    }
}

impl Target {
    pub(crate) fn parse(raw: &str) -> Result<Target, KeyError> {
        match raw.strip_suffix('/') {
            Some(folder) => {
                check_charset(raw)?;
                Key::parse(folder).map(Target::Folder)
            }
            None => Key::parse(raw).map(Target::Object),
        }
    }

    /// The key of a request that must name an object, not a folder marker.
    pub(crate) fn into_object(self) -> Result<Key, KeyError> {
        match self {
            Target::Object(key) => Ok(key),
            Target::Folder(_) => Err(KeyError::FolderWithData),
        }
    }
}

impl Bucket {
    pub(crate) fn parse(raw: &str) -> Option<Bucket> {
        is_valid_bucket_name(raw).then(|| Bucket(raw.to_owned()))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub(crate) fn is_valid_bucket_name(raw: &str) -> bool {
    !raw.is_empty()
        && raw.len() <= MAX_BUCKET_BYTES
        && !raw.starts_with('.')
        && raw.bytes().all(|b| b != b'/' && is_key_byte(b))
}

/// Whether every segment of a listing prefix's directory part (`a/b/` of `a/b/c`) could be part
/// of a stored key. When not, no key can match and the listing is empty.
pub(crate) fn is_listable_dir(dir_part: &str) -> bool {
    let Some(dir) = dir_part.strip_suffix('/') else {
        return dir_part.is_empty();
    };
    Key::parse(dir).is_ok()
}

/// Tells s3s which bucket names in a request path are valid (by default it applies AWS's
/// stricter rules, which refuse names Supabase accepts, such as upper case).
pub(crate) struct BucketNames;

impl s3s::validation::NameValidation for BucketNames {
    fn validate_bucket_name(&self, name: &str) -> bool {
        is_valid_bucket_name(name)
    }
}

fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || KEY_PUNCTUATION.contains(&b)
}

fn check_charset(raw: &str) -> Result<(), KeyError> {
    match raw
        .chars()
        .find(|&c| !c.is_ascii() || !is_key_byte(c as u8))
    {
        Some(c) => Err(KeyError::Character(c)),
        None => Ok(()),
    }
}

fn check_segment(segment: &str) -> Result<(), KeyError> {
    match segment {
        "" => Err(KeyError::EmptySegment),
        "." | ".." => Err(KeyError::DotSegment),
        s if s.len() > MAX_SEGMENT_BYTES => Err(KeyError::SegmentTooLong),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_supabase_punctuation() {
        let key = "dir/a b+c=d@e;f:g$h&i'j(k)l!m*n,o?p_q-r.s";
        assert_eq!(Key::parse(key).map(|k| k.0), Ok(key.to_owned()));
    }

    #[test]
    fn refuses_characters_supabase_refuses() {
        for bad in [
            "caf\u{e9}",
            "a%20b",
            "a~",
            "a#b",
            "[",
            "]",
            "{",
            "}",
            "^",
            "|",
            "\\",
            "\"",
            "<",
            ">",
            "`",
            "a\tb",
            "a\nb",
        ] {
            assert!(
                matches!(Key::parse(bad), Err(KeyError::Character(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn refuses_paths_that_could_escape_or_alias() {
        assert_eq!(Key::parse(""), Err(KeyError::Empty));
        assert_eq!(Key::parse("a//b"), Err(KeyError::EmptySegment));
        assert_eq!(Key::parse("/a"), Err(KeyError::EmptySegment));
        assert_eq!(Key::parse("../a"), Err(KeyError::DotSegment));
        assert_eq!(Key::parse("a/./b"), Err(KeyError::DotSegment));
        assert_eq!(Key::parse("a/.."), Err(KeyError::DotSegment));
        assert!(Key::parse("a/..b/.c").is_ok());
        assert_eq!(Key::parse(&"x".repeat(300)), Err(KeyError::SegmentTooLong));
    }

    #[test]
    fn trailing_slash_names_a_folder() {
        let folder = Target::parse("dir/sub/").unwrap();
        assert_eq!(folder, Target::Folder(Key("dir/sub".into())));
        let Target::Folder(key) = folder else {
            unreachable!()
        };
        assert_eq!(
            key.placeholder().as_str(),
            "dir/sub/.emptyFolderPlaceholder"
        );
        assert_eq!(Target::parse("/"), Err(KeyError::Empty));
        assert_eq!(Target::parse("a//"), Err(KeyError::EmptySegment));
        assert_eq!(Target::parse("\u{e9}/"), Err(KeyError::Character('\u{e9}')));
    }

    #[test]
    fn parent_segments_are_the_directories() {
        let key = Key::parse("a/b/c.txt").unwrap();
        assert_eq!(key.parent_segments().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(Key::parse("top").unwrap().parent_segments().count(), 0);
    }

    #[test]
    fn bucket_names() {
        assert!(is_valid_bucket_name("demo"));
        assert!(is_valid_bucket_name("My Bucket"));
        for bad in ["", ".meta", ".", "..", "a/b", "caf\u{e9}", &"b".repeat(101)] {
            assert!(!is_valid_bucket_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn listable_dirs() {
        assert!(is_listable_dir(""));
        assert!(is_listable_dir("a/b/"));
        assert!(!is_listable_dir("a//"));
        assert!(!is_listable_dir("../"));
    }
}
