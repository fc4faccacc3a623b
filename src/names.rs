//! Supabase Storage naming conventions: which characters a key may hold, and the placeholder
//! object the dashboard uses to keep an empty folder.

/// Object that Supabase's dashboard writes to represent an empty folder. Listings hide it.
pub const FOLDER_PLACEHOLDER: &str = ".emptyFolderPlaceholder";

/// Longest file name a listing entry may have; longer keys are skipped.
pub const MAX_NAME_BYTES: usize = 255;
/// S3 keys stop at 1024 bytes; Supabase fails longer ones with a database error (500), which
/// would only be retried.
pub const MAX_KEY_BYTES: usize = 1024;

/// The first character of `key` that Supabase Storage refuses (answering 400 `InvalidKey`).
///
/// Accepted: ASCII letters and digits and `_ / ! - . * ' ( ) space & $ = @ ; : + , ?`.
/// Everything else, including all non-ASCII characters, is refused.
pub fn first_refused_char(key: &str) -> Option<char> {
    key.chars().find(|&c| !is_allowed(c))
}

fn is_allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_/!-.*'() &$=@;:+,?".contains(c)
}

/// Why the characters of a name keep it from being created as a file or directory in the
/// bucket, if they do. Lengths are checked apart: they have their own errno (ENAMETOOLONG).
pub fn check_new_name(name: &str) -> Result<(), String> {
    if name == FOLDER_PLACEHOLDER {
        return Err("reserved for Supabase's folder placeholder".to_string());
    }
    match first_refused_char(name) {
        Some(c) => Err(format!(
            "contains {c:?}, which Supabase Storage does not accept in object keys"
        )),
        None => Ok(()),
    }
}

/// Whether a listed name (one path segment) can be shown as a file name.
pub fn is_listable(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && name.len() <= MAX_NAME_BYTES
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_supabase_charset() {
        assert_eq!(first_refused_char("a b&c+d.txt"), None);
        assert_eq!(first_refused_char("x/y_z!-.*'()$=@;:,?"), None);
    }

    #[test]
    fn refuses_outside_charset() {
        for (name, bad) in [
            ("naïve.txt", 'ï'),
            ("a#1", '#'),
            ("50%", '%'),
            ("~x", '~'),
            ("a[0]", '['),
            ("t\tab", '\t'),
        ] {
            assert_eq!(first_refused_char(name), Some(bad), "{name}");
        }
    }

    #[test]
    fn new_names() {
        assert!(check_new_name("ok.txt").is_ok());
        assert!(check_new_name(FOLDER_PLACEHOLDER).is_err());
        assert!(check_new_name("naïve#1.txt").unwrap_err().contains('ï'));
    }

    #[test]
    fn listable() {
        assert!(is_listable("a"));
        assert!(!is_listable(""));
        assert!(!is_listable("."));
        assert!(!is_listable(".."));
        assert!(!is_listable(&"y".repeat(256)));
    }
}
