//! ListObjectsV2 paging over a sorted list of keys and common prefixes.
//!
//! The disk gives names in directory order, which is not S3's order: S3 sorts keys by bytes, and
//! a common prefix takes the place of the first key it rolls up. Because every key under a prefix
//! starts with that prefix, sorting the prefix strings themselves among the keys gives the same
//! order (`a b/` < `a-b` < `a/`, since ' ' < '-' < '/'). So the caller collects every entry that
//! matches, this module sorts them by bytes and cuts one page after the continuation point. A
//! continuation token is the last name returned, so the next page resumes exactly after it
//! whether it was a key or a prefix.

/// One line of a listing: an object key or a common prefix (ending with the delimiter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub name: String,
    pub is_prefix: bool,
}

/// One page of a listing, and where the next one starts when there is more.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Page {
    pub entries: Vec<Entry>,
    pub next_after: Option<String>,
}

/// S3 and Supabase return at most this many keys and prefixes per page.
pub(crate) const MAX_KEYS: usize = 1000;

impl Entry {
    pub(crate) fn object(name: String) -> Entry {
        Entry {
            name,
            is_prefix: false,
        }
    }

    pub(crate) fn prefix(name: String) -> Entry {
        Entry {
            name,
            is_prefix: true,
        }
    }
}

/// Rolls keys (all starting with `prefix`) up into common prefixes at the first `delimiter`
/// after the prefix.
pub(crate) fn group_by_delimiter(
    prefix: &str,
    delimiter: &str,
    mut keys: Vec<String>,
) -> Vec<Entry> {
    // Sorted, the keys under one common prefix are contiguous: one comparison with the last
    // entry finds the repeats.
    keys.sort_unstable();
    let mut entries: Vec<Entry> = Vec::with_capacity(keys.len());
    for key in keys {
        let rest = &key[prefix.len()..];
        let Some(at) = rest.find(delimiter) else {
            entries.push(Entry::object(key));
            continue;
        };
        let common = &key[..prefix.len() + at + delimiter.len()];
        if entries
            .last()
            .is_none_or(|e| !e.is_prefix || e.name != common)
        {
            entries.push(Entry::prefix(common.to_owned()));
        }
    }
    entries
}

/// Sorts the entries by bytes and returns the `max` that follow `after`.
pub(crate) fn paginate(mut entries: Vec<Entry>, after: Option<&str>, max: usize) -> Page {
    entries.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    entries.dedup_by(|a, b| a.name == b.name);
    let start = after.map_or(0, |after| {
        entries.partition_point(|e| e.name.as_str() <= after)
    });
    let mut rest = entries.split_off(start);
    let truncated = rest.len() > max;
    rest.truncate(max);
    let next_after = truncated
        .then(|| rest.last().map(|e| e.name.clone()))
        .flatten();
    Page {
        entries: rest,
        next_after,
    }
}

/// Continuation tokens are opaque to clients: the hex of the last name returned.
pub(crate) fn encode_token(after: &str) -> String {
    hex::encode(after.as_bytes())
}

pub(crate) fn decode_token(token: &str) -> Option<String> {
    String::from_utf8(hex::decode(token).ok()?).ok()
}

/// Percent-encoding for `encoding-type=url`: everything but unreserved characters and `/`.
pub(crate) fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(page: &Page) -> Vec<&str> {
        page.entries.iter().map(|e| e.name.as_str()).collect()
    }

    #[test]
    fn prefixes_sort_among_keys_by_bytes() {
        let entries = vec![
            Entry::prefix("a/".into()),
            Entry::object("a-b".into()),
            Entry::prefix("a b/".into()),
            Entry::object("a".into()),
        ];
        let page = paginate(entries, None, MAX_KEYS);
        assert_eq!(names(&page), ["a", "a b/", "a-b", "a/"]);
        assert_eq!(page.next_after, None);
    }

    #[test]
    fn pages_resume_after_the_last_name() {
        let entries: Vec<Entry> = (0..25).map(|i| Entry::object(format!("k{i:02}"))).collect();
        let first = paginate(entries.clone(), None, 10);
        assert_eq!(first.entries.len(), 10);
        assert_eq!(first.next_after.as_deref(), Some("k09"));
        let third = paginate(entries.clone(), Some("k19"), 10);
        assert_eq!(names(&third), ["k20", "k21", "k22", "k23", "k24"]);
        assert_eq!(third.next_after, None);
        let exact = paginate(entries, Some("k14"), 10);
        assert_eq!(exact.entries.len(), 10);
        assert_eq!(exact.next_after, None, "no empty last page");
    }

    #[test]
    fn resuming_after_a_prefix_skips_its_keys() {
        let entries = vec![Entry::prefix("d/".into()), Entry::object("e".into())];
        assert_eq!(names(&paginate(entries, Some("d/"), 10)), ["e"]);
    }

    #[test]
    fn groups_at_the_first_delimiter_after_the_prefix() {
        let keys = ["p/a", "p/b/x", "p/b/y", "p/c/d/e"]
            .map(String::from)
            .to_vec();
        let entries = group_by_delimiter("p/", "/", keys);
        assert_eq!(
            entries,
            vec![
                Entry::object("p/a".into()),
                Entry::prefix("p/b/".into()),
                Entry::prefix("p/c/".into())
            ]
        );
        let dashed = group_by_delimiter("", "-", vec!["x-1".into(), "x-2".into(), "y".into()]);
        assert_eq!(
            dashed,
            vec![Entry::prefix("x-".into()), Entry::object("y".into())]
        );
    }

    #[test]
    fn tokens_round_trip() {
        let name = "a b/c?d";
        assert_eq!(decode_token(&encode_token(name)).as_deref(), Some(name));
        assert_eq!(decode_token("zz"), None);
    }

    #[test]
    fn url_encoding_keeps_slashes() {
        assert_eq!(url_encode("a b/c+d"), "a%20b/c%2Bd");
    }
}
