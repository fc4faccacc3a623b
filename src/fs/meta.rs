//! POSIX attributes kept in an object's user metadata, so that modes, owners, times and
//! symbolic links survive a remount and show to every mount of the bucket.
//!
//! The names are the ones s3fs uses (`mode`, `uid`, `gid`, `mtime`), so both tools read each
//! other's objects: `mode` is the whole `st_mode` in decimal (file type included, which is how a
//! symbolic link is recognised), `mtime` is seconds since the epoch with up to nine decimals.
//! A value that does not parse is ignored, as if it were absent: the mount's defaults and the
//! server's Last-Modified then apply.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::store::UserMeta;

/// File type bits of `st_mode` (the same on Linux and macOS).
pub const S_IFMT: u32 = 0o170000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFLNK: u32 = 0o120000;
/// Permission bits, with set-user-id, set-group-id and sticky.
pub const PERM_BITS: u32 = 0o7777;

const MODE: &str = "mode";
const UID: &str = "uid";
const GID: &str = "gid";
const MTIME: &str = "mtime";

/// What an object says about itself beyond its data; `None` means "not recorded".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PosixMeta {
    /// The whole `st_mode`: file type and permission bits.
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Set by utimens (or a copy that keeps it); without it the object's Last-Modified is the
    /// file's mtime.
    pub mtime: Option<SystemTime>,
}

impl PosixMeta {
    pub fn from_user_meta(meta: &UserMeta) -> Self {
        let number = |name: &str| meta.get(name).and_then(|v| v.trim().parse::<u32>().ok());
        Self {
            mode: number(MODE),
            uid: number(UID),
            gid: number(GID),
            mtime: meta.get(MTIME).and_then(|v| parse_time(v)),
        }
    }

    pub fn to_user_meta(self) -> UserMeta {
        let mut meta = UserMeta::new();
        if let Some(mode) = self.mode {
            meta.insert(MODE.into(), mode.to_string());
        }
        if let Some(uid) = self.uid {
            meta.insert(UID.into(), uid.to_string());
        }
        if let Some(gid) = self.gid {
            meta.insert(GID.into(), gid.to_string());
        }
        if let Some(mtime) = self.mtime {
            meta.insert(MTIME.into(), format_time(mtime));
        }
        meta
    }

    pub fn is_symlink(&self) -> bool {
        self.mode.is_some_and(|m| m & S_IFMT == S_IFLNK)
    }

    pub fn perm(&self) -> Option<u16> {
        self.mode.map(|m| (m & PERM_BITS) as u16)
    }

    /// Apply the changes of a chmod, chown or utimens. `file_type` keeps the type bits right
    /// whatever the caller passed (the kernel sends them along with the permissions).
    pub fn apply(&mut self, change: &MetaChange, file_type: u32) {
        if let Some(mode) = change.mode {
            self.mode = Some(file_type | (mode & PERM_BITS));
        }
        if let Some(uid) = change.uid {
            self.uid = Some(uid);
        }
        if let Some(gid) = change.gid {
            self.gid = Some(gid);
        }
        if let Some(mtime) = change.mtime {
            self.mtime = Some(mtime);
        }
    }
}

/// What a setattr asks to change besides the size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetaChange {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mtime: Option<SystemTime>,
}

impl MetaChange {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Seconds since the epoch, with nine decimals (negative before 1970).
fn format_time(t: SystemTime) -> String {
    let (sign, d) = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => ("", d),
        Err(e) => ("-", e.duration()),
    };
    format!("{sign}{}.{:09}", d.as_secs(), d.subsec_nanos())
}

fn parse_time(value: &str) -> Option<SystemTime> {
    let value = value.trim();
    let (negative, value) = match value.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    let (secs, frac) = value.split_once('.').unwrap_or((value, ""));
    if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: u64 = secs.parse().ok()?;
    // Nanoseconds from the first nine decimals; further digits are below what we keep.
    let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
    let nanos: u32 = digits.parse().ok()?;
    let d = Duration::new(secs, nanos);
    if negative {
        UNIX_EPOCH.checked_sub(d)
    } else {
        UNIX_EPOCH.checked_add(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_user_metadata() {
        let meta = PosixMeta {
            mode: Some(S_IFREG | 0o4755),
            uid: Some(1000),
            gid: Some(50),
            mtime: Some(UNIX_EPOCH + Duration::new(981_173_106, 123_456_789)),
        };
        let stored = meta.to_user_meta();
        assert_eq!(stored["mode"], (0o104755).to_string());
        assert_eq!(stored["mtime"], "981173106.123456789");
        assert_eq!(PosixMeta::from_user_meta(&stored), meta);
    }

    #[test]
    fn times_before_1970_and_other_writers_formats() {
        let before = UNIX_EPOCH - Duration::new(5, 250_000_000);
        assert_eq!(format_time(before), "-5.250000000");
        assert_eq!(parse_time("-5.25"), Some(before));
        // s3fs writes whole seconds, rclone a float.
        assert_eq!(parse_time("12"), Some(UNIX_EPOCH + Duration::from_secs(12)));
        assert_eq!(
            parse_time("12.5"),
            Some(UNIX_EPOCH + Duration::from_millis(12_500))
        );
        for bad in ["", ".5", "1e9", "12.x", "abc", "--1"] {
            assert_eq!(parse_time(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn garbage_is_ignored_and_symlinks_are_recognised() {
        let mut stored = UserMeta::new();
        stored.insert("mode".into(), "rwx".into());
        stored.insert("uid".into(), "-1".into());
        assert_eq!(PosixMeta::from_user_meta(&stored), PosixMeta::default());
        let link = PosixMeta {
            mode: Some(S_IFLNK | 0o777),
            ..Default::default()
        };
        assert!(link.is_symlink());
        assert!(!PosixMeta::default().is_symlink());
    }

    #[test]
    fn changes_keep_the_file_type() {
        let mut meta = PosixMeta::default();
        meta.apply(
            &MetaChange {
                mode: Some(S_IFDIR | 0o700),
                ..Default::default()
            },
            S_IFREG,
        );
        assert_eq!(meta.mode, Some(S_IFREG | 0o700));
    }
}
