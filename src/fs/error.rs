//! The filesystem's error type and the one place where failures become errnos and log levels.

use crate::cache::FetchError;
use crate::store::StoreError;

/// A failed filesystem operation.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("name {name:?} refused: {reason}")]
    InvalidName { name: String, reason: String },
    #[error("name or path too long: {0}")]
    NameTooLong(&'static str),
    #[error("directory not empty")]
    NotEmpty,
    #[error("is a directory")]
    IsDir,
    #[error("not a directory")]
    NotDir,
    #[error("already exists")]
    Exists,
    #[error("mounted read-only")]
    ReadOnly,
    #[error("{0} is not supported")]
    Unsupported(&'static str),
    /// What the filesystem cannot create at all (hard links, devices): EPERM, as link(2) and
    /// mknod(2) document for a filesystem without them.
    #[error("{0}")]
    NotPermitted(&'static str),
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
    #[error("the object changed on the server while it was open")]
    Stale,
    #[error("{0}")]
    Fetch(FetchError),
    #[error("no open file handle {0}")]
    BadHandle(u64),
    #[error("{context}: {source}")]
    Local {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// How loudly a failure is logged: expected misses stay at debug so real failures stand out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Debug,
    Warn,
    Error,
}

impl FsError {
    pub fn local(context: impl Into<String>, source: std::io::Error) -> Self {
        FsError::Local {
            context: context.into(),
            source,
        }
    }

    /// The errno the kernel gets.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::Store(e) => store_errno(e),
            FsError::InvalidName { .. } => libc::EINVAL,
            FsError::NameTooLong(_) => libc::ENAMETOOLONG,
            FsError::NotEmpty => libc::ENOTEMPTY,
            FsError::IsDir => libc::EISDIR,
            FsError::NotDir => libc::ENOTDIR,
            FsError::Exists => libc::EEXIST,
            FsError::ReadOnly => libc::EROFS,
            // ENOTSUP, not ENOSYS: the kernel takes ENOSYS as "never ask again" for some requests.
            FsError::Unsupported(_) => libc::ENOTSUP,
            FsError::NotPermitted(_) => libc::EPERM,
            FsError::Invalid(_) => libc::EINVAL,
            // EIO rather than ESTALE: tools report ESTALE as an NFS problem, which misleads.
            FsError::Stale => libc::EIO,
            FsError::Fetch(FetchError::Store(e)) => store_errno(e),
            FsError::Fetch(_) => libc::EIO,
            FsError::BadHandle(_) => libc::EBADF,
            FsError::Local { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
        }
    }

    pub fn level(&self) -> Level {
        match self {
            FsError::NotFound
            | FsError::NameTooLong(_)
            | FsError::NotEmpty
            | FsError::IsDir
            | FsError::NotDir
            | FsError::Exists
            | FsError::ReadOnly
            | FsError::Unsupported(_)
            | FsError::NotPermitted(_)
            | FsError::Invalid(_) => Level::Debug,
            FsError::Store(StoreError::NotFound { .. }) => Level::Debug,
            FsError::Fetch(FetchError::Store(e)) if matches!(**e, StoreError::NotFound { .. }) => {
                Level::Debug
            }
            FsError::Store(_)
            | FsError::Fetch(_)
            | FsError::InvalidName { .. }
            | FsError::Stale => Level::Warn,
            FsError::BadHandle(_) | FsError::Local { .. } => Level::Error,
        }
    }
}

fn store_errno(e: &StoreError) -> i32 {
    match e {
        StoreError::NotFound { .. } => libc::ENOENT,
        // A vanished bucket under a live mount: nothing below it can be reached.
        StoreError::NoSuchBucket { .. } => libc::ENOENT,
        StoreError::AccessDenied { .. }
        | StoreError::ExpiredToken { .. }
        | StoreError::SignatureMismatch { .. } => libc::EACCES,
        // A bucket's MIME-type rule refused the upload: a permission, not a malformed request.
        StoreError::UnsupportedMediaType { .. } => libc::EACCES,
        StoreError::InvalidKey { .. } => libc::EINVAL,
        StoreError::TooLarge { .. } => libc::EFBIG,
        StoreError::InvalidRange
        | StoreError::Unreachable { .. }
        | StoreError::Transient { .. }
        | StoreError::Other { .. } => libc::EIO,
    }
}

pub type FsResult<T> = Result<T, FsError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_meanings_map_to_errnos() {
        let denied = FsError::from(StoreError::AccessDenied {
            message: "rls".into(),
        });
        assert_eq!(denied.errno(), libc::EACCES);
        let big = FsError::from(StoreError::TooLarge {
            message: String::new(),
        });
        assert_eq!(big.errno(), libc::EFBIG);
        let down = FsError::from(StoreError::Unreachable {
            message: String::new(),
        });
        assert_eq!(down.errno(), libc::EIO);
        assert_eq!(FsError::NotFound.level(), Level::Debug);
    }

    #[test]
    fn local_errors_keep_their_errno() {
        let full = FsError::local("staging", std::io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(full.errno(), libc::ENOSPC);
    }
}
