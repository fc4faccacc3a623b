//! The FUSE adapter: the only code that knows fuser. Each kernel request becomes a task on the
//! tokio runtime that calls the filesystem core and replies from the task, so one slow S3
//! request never holds up the others. Failures are logged here, once, at their own level.

use std::ffi::OsStr;
use std::future::Future;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use tokio::runtime::Handle;
use tokio_util::task::TaskTracker;

use crate::fs::{Attr, Fs, FsError, Kind, Level, MetaChange, OpenMode};

/// Largest read and write the kernel sends in one request: fewer round trips per MiB.
pub const MAX_IO_SIZE: u32 = 1024 * 1024;

/// A fuser reply that can carry an errno.
trait FailReply: Send + 'static {
    fn fail(self, errno: Errno);
}

macro_rules! fail_reply {
    ($($t:ty),*) => {$(
        impl FailReply for $t {
            fn fail(self, errno: Errno) {
                self.error(errno)
            }
        }
    )*};
}
fail_reply!(
    ReplyEntry,
    ReplyAttr,
    ReplyData,
    ReplyDirectory,
    ReplyEmpty,
    ReplyOpen,
    ReplyWrite,
    ReplyCreate
);

pub struct FuseAdapter {
    fs: Arc<Fs>,
    runtime: Handle,
    tasks: TaskTracker,
}

impl FuseAdapter {
    /// `tasks` tracks every request in flight, so shutdown can wait for them.
    pub fn new(fs: Arc<Fs>, runtime: Handle, tasks: TaskTracker) -> Self {
        Self { fs, runtime, tasks }
    }

    /// Run `op` on the runtime and answer `reply` with `done` or with the failure's errno.
    fn spawn<R, T, Fut>(
        &self,
        what: &'static str,
        reply: R,
        op: impl FnOnce(Arc<Fs>) -> Fut + Send + 'static,
        done: impl FnOnce(R, T) + Send + 'static,
    ) where
        R: FailReply,
        T: Send + 'static,
        Fut: Future<Output = Result<T, FsError>> + Send + 'static,
    {
        let fs = self.fs.clone();
        let task = async move {
            match op(fs.clone()).await {
                Ok(value) => done(reply, value),
                Err(err) => {
                    log_failure(&fs, what, &err);
                    reply.fail(Errno::from_i32(err.errno()));
                }
            }
        };
        self.tasks.spawn_on(task, &self.runtime);
    }

    fn entry(
        &self,
        what: &'static str,
        reply: ReplyEntry,
        op: impl Future<Output = Result<Attr, FsError>> + Send + 'static,
    ) {
        let ttl = self.fs.attr_ttl();
        self.spawn(
            what,
            reply,
            move |_| op,
            move |reply, attr| reply.entry(&ttl, &file_attr(&attr), Generation(0)),
        );
    }
}

fn log_failure(fs: &Fs, what: &'static str, err: &FsError) {
    fs.note_failure(err.level());
    match err.level() {
        Level::Debug => tracing::debug!(op = what, error = %err, "operation failed"),
        Level::Warn => tracing::warn!(op = what, error = %err, "operation failed"),
        Level::Error => tracing::error!(op = what, error = %err, "operation failed"),
    }
}

/// The process a request's thread belongs to: the kernel names the calling thread, and a
/// descriptor is shared by all threads of a process. `None` when it cannot be told (the
/// process is gone), which makes the caller take the safe path.
#[cfg(target_os = "linux")]
fn process_of(thread: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{thread}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Tgid:"))
        .and_then(|tgid| tgid.trim().parse().ok())
}

#[cfg(not(target_os = "linux"))]
fn process_of(pid: u32) -> Option<u32> {
    Some(pid)
}

fn file_type(kind: Kind) -> FileType {
    match kind {
        Kind::Dir => FileType::Directory,
        Kind::File => FileType::RegularFile,
        Kind::Symlink => FileType::Symlink,
    }
}

fn file_attr(attr: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(attr.ino),
        size: attr.size,
        blocks: attr.size.div_ceil(512),
        atime: attr.mtime,
        mtime: attr.mtime,
        ctime: attr.mtime,
        crtime: attr.mtime,
        kind: file_type(attr.kind),
        perm: attr.perm,
        nlink: if attr.kind == Kind::Dir { 2 } else { 1 },
        uid: attr.uid,
        gid: attr.gid,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

/// Names cross into the core as UTF-8; S3 keys are UTF-8 and anything else is refused there.
fn name_of(name: &OsStr) -> Result<String, FsError> {
    name.to_str()
        .map(str::to_string)
        .ok_or_else(|| FsError::InvalidName {
            name: name.to_string_lossy().into_owned(),
            reason: "not valid UTF-8".into(),
        })
}

impl Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Each setting is best effort: an older kernel keeps its own limits, which still work.
        let _ = config.set_max_write(MAX_IO_SIZE);
        let _ = config.set_max_readahead(MAX_IO_SIZE);
        let _ = config.set_max_background(64);
        // O_TRUNC arrives with open() instead of as a separate truncate, so `echo x > f`
        // makes one upload, not an empty one first.
        let _ = config.add_capabilities(InitFlags::FUSE_ATOMIC_O_TRUNC);
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        // Listings carry sizes and times, so `ls -l` needs no lookup per entry.
        let _ = config.add_capabilities(InitFlags::FUSE_DO_READDIRPLUS);
        let _ = config.add_capabilities(InitFlags::FUSE_READDIRPLUS_AUTO);
        Ok(())
    }

    fn destroy(&mut self) {
        // Requests still running (uploads started by close) finish before the process exits;
        // main waits on `tasks`.
        self.tasks.close();
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let (fs, name) = (self.fs.clone(), name.to_owned());
        self.entry("lookup", reply, async move {
            fs.lookup(parent.0, &name_of(&name)?).await
        });
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let ttl = self.fs.attr_ttl();
        self.spawn(
            "getattr",
            reply,
            move |fs| async move { fs.getattr(ino.0).await },
            move |reply, attr| reply.attr(&ttl, &file_attr(&attr)),
        );
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        // Access times are not kept (the mount is noatime).
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let ttl = self.fs.attr_ttl();
        self.spawn(
            "setattr",
            reply,
            move |fs| async move {
                let change = MetaChange {
                    mode,
                    uid,
                    gid,
                    mtime: mtime.map(|t| match t {
                        TimeOrNow::SpecificTime(t) => t,
                        TimeOrNow::Now => SystemTime::now(),
                    }),
                };
                fs.setattr(ino.0, size, change).await
            },
            move |reply, attr| reply.attr(&ttl, &file_attr(&attr)),
        );
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        let (fs, name) = (self.fs.clone(), name.to_owned());
        self.entry("mknod", reply, async move {
            fs.mknod(parent.0, &name_of(&name)?, mode).await
        });
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let (fs, name) = (self.fs.clone(), name.to_owned());
        self.entry("mkdir", reply, async move {
            fs.mkdir(parent.0, &name_of(&name)?, mode).await
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.to_owned();
        self.spawn(
            "unlink",
            reply,
            move |fs| async move { fs.unlink(parent.0, &name_of(&name)?).await },
            |reply, ()| reply.ok(),
        );
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.to_owned();
        self.spawn(
            "rmdir",
            reply,
            move |fs| async move { fs.rmdir(parent.0, &name_of(&name)?).await },
            |reply, ()| reply.ok(),
        );
    }

    fn symlink(
        &self,
        _req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let (fs, name) = (self.fs.clone(), link_name.to_owned());
        let target = target.as_os_str().as_bytes().to_vec();
        self.entry("symlink", reply, async move {
            fs.symlink(parent.0, &name_of(&name)?, &target).await
        });
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        self.spawn(
            "readlink",
            reply,
            move |fs| async move { fs.readlink(ino.0).await },
            |reply, target| reply.data(&target),
        );
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (name, newname) = (name.to_owned(), newname.to_owned());
        self.spawn(
            "rename",
            reply,
            move |fs| async move {
                let (from, to) = (name_of(&name)?, name_of(&newname)?);
                fs.rename(parent.0, &from, newparent.0, &to, flags.bits())
                    .await
            },
            |reply, ()| reply.ok(),
        );
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::from_i32(
            FsError::NotPermitted("hard links cannot be stored as objects").errno(),
        ));
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mode = OpenMode::from_flags(flags.0);
        let process = process_of(req.pid());
        self.spawn(
            "open",
            reply,
            move |fs| async move {
                let (fh, keep) = fs.open_keeping_cache(ino.0, mode).await?;
                if let Some(process) = process {
                    fs.set_opener(fh, process);
                }
                Ok((fh, keep))
            },
            |reply, (fh, keep)| {
                let flags = if keep {
                    FopenFlags::FOPEN_KEEP_CACHE
                } else {
                    FopenFlags::empty()
                };
                reply.opened(FileHandle(fh), flags)
            },
        );
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.spawn(
            "read",
            reply,
            move |fs| async move { fs.read(fh.0, offset, size).await },
            |reply, data| reply.data(&data),
        );
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let data = data.to_vec();
        self.spawn(
            "write",
            reply,
            move |fs| async move { fs.write(fh.0, offset, data).await },
            |reply, written| reply.written(written),
        );
    }

    fn flush(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let process = process_of(req.pid());
        self.spawn(
            "flush",
            reply,
            move |fs| async move { fs.flush(fh.0, process).await },
            |reply, ()| reply.ok(),
        );
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        // The kernel ignores release errors; the core has logged and kept the data already.
        self.spawn(
            "release",
            reply,
            move |fs| async move { fs.release(fh.0).await },
            |reply, ()| reply.ok(),
        );
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.spawn(
            "fsync",
            reply,
            move |fs| async move { fs.fsync(fh.0).await },
            |reply, ()| reply.ok(),
        );
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.spawn(
            "opendir",
            reply,
            move |fs| async move { fs.opendir(ino.0).await },
            |reply, fh| reply.opened(FileHandle(fh), FopenFlags::empty()),
        );
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let entries = match self.fs.readdir(fh.0) {
            Ok(entries) => entries,
            Err(err) => {
                log_failure(&self.fs, "readdir", &err);
                return reply.error(Errno::from_i32(err.errno()));
            }
        };
        for (index, entry) in entries.iter().enumerate().skip(offset as usize) {
            let next = index as u64 + 1;
            if reply.add(INodeNo(entry.ino), next, file_type(entry.kind), &entry.name) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let entries = match self.fs.readdir(fh.0) {
            Ok(entries) => entries,
            Err(err) => {
                log_failure(&self.fs, "readdirplus", &err);
                return reply.error(Errno::from_i32(err.errno()));
            }
        };
        let ttl = self.fs.attr_ttl();
        for (index, entry) in entries.iter().enumerate().skip(offset as usize) {
            // The kernel takes a reference for every entry but `.` and `..`.
            let dot = entry.name == "." || entry.name == "..";
            let Some((attr, complete)) = self.fs.listed_attr(entry.ino) else {
                continue;
            };
            // Incomplete attributes are not cached: the kernel looks the entry up when used.
            let entry_ttl = if complete { ttl } else { Duration::ZERO };
            let next = index as u64 + 1;
            if reply.add(
                INodeNo(entry.ino),
                next,
                &entry.name,
                &entry_ttl,
                &file_attr(&attr),
                Generation(0),
            ) {
                break;
            }
            if !dot {
                self.fs.hold(entry.ino);
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.fs.releasedir(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Directory changes are made on the server as they happen.
        reply.ok();
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        // ENOSYS on purpose: the kernel then stops asking (it checks security.capability
        // before every write), and callers get EOPNOTSUPP. Objects carry no extended attributes.
        reply.error(Errno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::ENOSYS);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let s = self.fs.statfs();
        reply.statfs(
            s.blocks, s.bfree, s.bfree, s.files, s.ffree, s.bsize, s.namelen, s.bsize,
        );
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let ttl = self.fs.attr_ttl();
        let name = name.to_owned();
        let process = process_of(req.pid());
        self.spawn(
            "create",
            reply,
            move |fs| async move {
                let (attr, fh) = fs.create(parent.0, &name_of(&name)?, mode).await?;
                if let Some(process) = process {
                    fs.set_opener(fh, process);
                }
                Ok((attr, fh))
            },
            move |reply, (attr, fh)| {
                reply.created(
                    &ttl,
                    &file_attr(&attr),
                    Generation(0),
                    FileHandle(fh),
                    FopenFlags::empty(),
                )
            },
        );
    }
}
