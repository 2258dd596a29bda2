//! [`Mounter`] on Linux: `mount(8)` for filesystems that need their helper, syscalls for the
//! rest, every call that can block on a hung filesystem bounded by a timeout.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::mount::{MntFlags, MsFlags};
use nix::sys::statvfs::{FsFlags, Statvfs, statvfs};
use tracing::{debug, warn};

use crate::blocking::{run_blocking, try_blocking};
use crate::error::{Error, ErrorCode, Result};
use crate::linux::mountinfo::{SELF_MOUNTINFO, read_mount_table};
use crate::linux::stuck_paths::StuckPaths;
use crate::ports::{
    Command, CommandRunner, MAX_STACKED_MOUNTS, MountEntry, Mounter, check_below, not_mounted,
    still_mounted, top_mount_id, unmount_one_by_one,
};

/// Mounts with `mount(8)` (through the [`CommandRunner`]) and with syscalls.
///
/// - [`Mounter::mount`] runs `<mount_program> -t TYPE [-o OPTS] SOURCE TARGET`: Lustre and
///   BeeGFS need their mount helpers.
/// - [`Mounter::bind_mount`], [`Mounter::bind_mount_below`], [`Mounter::unmount`],
///   [`Mounter::unmount_all`] and [`Mounter::is_mount_point`] are syscalls (no process
///   spawned), each call run on the blocking pool and bounded by `timeout`: a call that
///   does not return in time (a hung filesystem) is `DeadlineExceeded`, and the thread
///   that made it stays blocked until the kernel lets it go. While it is blocked, further
///   calls on its path fail at once rather than block more threads ([`StuckPaths`]); an
///   unmount then detaches lazily.
/// - The publish target is opened with `O_NOFOLLOW` and mounted on through its descriptor,
///   so a symbolic link planted at the target cannot redirect a mount.
#[derive(Clone)]
pub struct LinuxMounter {
    runner: Arc<dyn CommandRunner>,
    mount_program: PathBuf,
    timeout: Duration,
    mountinfo: PathBuf,
    stuck: StuckPaths,
}

impl std::fmt::Debug for LinuxMounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinuxMounter")
            .field("mount_program", &self.mount_program)
            .field("timeout", &self.timeout)
            .field("mountinfo", &self.mountinfo)
            .finish_non_exhaustive()
    }
}

impl LinuxMounter {
    /// A mounter running `mount_program` (e.g. `/bin/mount`) through `runner`, with
    /// `timeout` for every mount, unmount and stat.
    pub fn new(runner: Arc<dyn CommandRunner>, mount_program: PathBuf, timeout: Duration) -> Self {
        Self {
            runner,
            mount_program,
            timeout,
            mountinfo: PathBuf::from(SELF_MOUNTINFO),
            stuck: StuckPaths::default(),
        }
    }

    /// Reads the mount table from `path` instead of `/proc/self/mountinfo` (simulators).
    pub fn with_mountinfo(mut self, path: impl Into<PathBuf>) -> Self {
        self.mountinfo = path.into();
        self
    }

    /// The timeout of each operation.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// Turns an errno of `op` on `path` into the core error: a missing path is `NotFound`.
fn errno_error(op: &'static str, path: &Path, errno: Errno) -> Error {
    match errno {
        Errno::ENOENT => Error::NotFound(format!("{op} {}: {}", path.display(), errno.desc())),
        _ => Error::io(op, path, std::io::Error::from(errno)),
    }
}

/// Opens a directory without following a symbolic link in its last component.
pub(crate) fn open_dir_nofollow(path: &Path) -> std::result::Result<File, Errno> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
}

/// A private copy of the mount that directory `dir` is on, rooted at `dir`, with `nodev`
/// set: attached nowhere (nobody else sees it; it lasts while a descriptor below it is
/// open), and no device node can be opened through it. Needs `CAP_SYS_ADMIN` and Linux
/// 5.12 (`open_tree`, `mount_setattr`).
pub(crate) fn nodev_copy(dir: &File) -> std::result::Result<File, Errno> {
    detached_copy(dir, libc::MOUNT_ATTR_NODEV)
}

/// A copy of the mount that directory `dir` is on, rooted at `dir` (not recursive, as a
/// `MS_BIND` mount), attached nowhere, with the mount attributes `attr_set` added and every
/// other one (`nosuid`, `nodev`, `noexec`, atime) as the original has it. Needs
/// `CAP_SYS_ADMIN` and Linux 5.12 (`open_tree`, `mount_setattr`); `ENOSYS` before.
fn detached_copy(dir: &File, attr_set: u64) -> std::result::Result<File, Errno> {
    let flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC | libc::AT_EMPTY_PATH as u32;
    // SAFETY: a valid descriptor and an empty C string; the kernel returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, dir.as_raw_fd(), c"".as_ptr(), flags) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    let copy = unsafe { File::from_raw_fd(fd as RawFd) };
    let attr = libc::mount_attr {
        attr_set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: a valid descriptor, an empty C string and a mount_attr of the size passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            copy.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if rc < 0 {
        return Err(Errno::last());
    }
    Ok(copy)
}

/// Attaches the detached mount `copy` on the directory `target_dir` (`move_mount`). A copy
/// attached under a shared mount propagates to its peers as it is, flags included.
fn attach(copy: &File, target_dir: &File) -> std::result::Result<(), Errno> {
    let flags = libc::MOVE_MOUNT_F_EMPTY_PATH | libc::MOVE_MOUNT_T_EMPTY_PATH;
    // SAFETY: two valid descriptors and empty C strings.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            copy.as_raw_fd(),
            c"".as_ptr(),
            target_dir.as_raw_fd(),
            c"".as_ptr(),
            flags,
        )
    };
    if rc < 0 { Err(Errno::last()) } else { Ok(()) }
}

/// `/proc/self/fd/N`: the path the kernel resolves to exactly the object `file` refers to.
pub(crate) fn fd_path(file: &File) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

/// Opens the bind target, refusing a symbolic link or a non-directory.
fn open_target(target: &Path) -> Result<File> {
    open_dir_nofollow(target).map_err(|errno| match errno {
        Errno::ELOOP | Errno::ENOTDIR => not_a_directory("mount target", target),
        other => errno_error("open mount target", target, other),
    })
}

/// Opens the bind source, refusing a symbolic link or a non-directory: the mount then takes
/// exactly the directory that was checked, even if the path is swapped for a link meanwhile.
fn open_source(source: &Path) -> Result<File> {
    open_dir_nofollow(source).map_err(|errno| source_error(source, errno))
}

/// The error of opening bind source `source`: `NotFound` when it is missing,
/// `FailedPrecondition` when it is a link or not a directory.
fn source_error(source: &Path, errno: Errno) -> Error {
    match errno {
        Errno::ENOENT => Error::NotFound(format!(
            "bind mount source {} does not exist",
            source.display()
        )),
        Errno::ELOOP | Errno::ENOTDIR => not_a_directory("bind mount source", source),
        other => errno_error("open bind mount source", source, other),
    }
}

/// `FailedPrecondition` for a mount source or target that is a link or not a directory.
fn not_a_directory(what: &str, path: &Path) -> Error {
    let is_link = std::fs::symlink_metadata(path)
        .map(|m| m.file_type().is_symlink())
        .unwrap_or(false);
    Error::FailedPrecondition(format!(
        "{what} {} is {}; refusing to mount it",
        path.display(),
        if is_link {
            "a symbolic link"
        } else {
            "not a directory"
        }
    ))
}

/// The per-mount flags a read-only remount must keep (the kernel refuses to drop locked
/// ones, and dropping `nosuid`/`nodev`/`noexec` would loosen the mount), from `stat` of the
/// mount.
fn kept_flags(
    path: &Path,
    stat: impl FnOnce(&Path) -> nix::Result<Statvfs>,
) -> nix::Result<MsFlags> {
    let flags = stat(path)?.flags();
    let mut kept = MsFlags::empty();
    for (st, ms) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if flags.contains(st) {
            kept |= ms;
        }
    }
    Ok(kept)
}

/// Set once the kernel (or a seccomp filter) refused `open_tree`/`mount_setattr`: read-only
/// binds then go through [`bind_then_remount`] without asking again.
static NO_DETACHED_COPIES: AtomicBool = AtomicBool::new(false);

/// The bind mount, done synchronously. A read-only one is a detached copy of the source's
/// mount made read-only before it is attached, so the target (and every copy of it that
/// propagation makes, e.g. on the host for a Bidirectional pods directory) is never
/// writable and keeps the source's `nosuid`/`nodev`/`noexec`; kernels before 5.12 bind,
/// then remount read-only.
fn bind_blocking(source: &Path, target: &Path, read_only: bool) -> Result<()> {
    let source_dir = open_source(source)?;
    let target_dir = open_target(target)?;
    bind_dirs(&source_dir, &target_dir, source, target, read_only)
}

/// [`bind_blocking`] of `source` (`mount` or a directory below it) once something is
/// mounted at `mount`, checked and bound in one step: the source is opened through the
/// checked mount's descriptor, never leaving its filesystem (`RESOLVE_BENEATH |
/// RESOLVE_NO_XDEV`, the last component never a link), so the bind takes a directory of
/// the mount that was checked.
fn bind_below_blocking(mount: &Path, source: &Path, target: &Path, read_only: bool) -> Result<()> {
    let rel = check_below(mount, source)?;
    let mount_dir = open_dir_nofollow(mount).map_err(|errno| match errno {
        Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP => not_mounted(mount),
        other => errno_error("open", mount, other),
    })?;
    let stx = statx_fd(&mount_dir).map_err(|e| errno_error("statx", mount, e))?;
    if !mount_root_of(mount, &stx)? {
        return Err(not_mounted(mount));
    }
    let source_dir = if rel.as_os_str().is_empty() {
        mount_dir
    } else {
        open_source_below(&mount_dir, rel, mount, source)?
    };
    let target_dir = open_target(target)?;
    bind_dirs(&source_dir, &target_dir, source, target, read_only)
}

/// Opens directory `rel` below `mount_dir` (at `mount`; `source` is the whole path) through
/// directories only: no symbolic link anywhere on the way (a user who can write a middle
/// directory could otherwise point it at another volume), never leaving the mount.
fn open_source_below(mount_dir: &File, rel: &Path, mount: &Path, source: &Path) -> Result<File> {
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_XDEV
                | ResolveFlag::RESOLVE_NO_SYMLINKS,
        );
    let opened = match openat2(mount_dir, rel, how) {
        Err(Errno::ENOSYS) => open_by_components(mount_dir, rel),
        other => other.map(File::from),
    };
    opened.map_err(|errno| match errno {
        Errno::EXDEV => Error::FailedPrecondition(format!(
            "bind mount source {} leads out of the filesystem mounted at {}; refusing to mount it",
            source.display(),
            mount.display()
        )),
        Errno::ELOOP | Errno::ENOTDIR => Error::FailedPrecondition(format!(
            "bind mount source {} is not a directory reached through directories only from {} (a symbolic link on the way?); refusing to mount it",
            source.display(),
            mount.display()
        )),
        other => source_error(source, other),
    })
}

/// What [`open_source_below`]'s `openat2` does, on kernels without it (before 5.6): one
/// component at a time, none followed if it is a link, each on the mount `mount_dir` is.
fn open_by_components(mount_dir: &File, rel: &Path) -> std::result::Result<File, Errno> {
    let mount_id =
        |dir: &File| statx_fd(dir).map(|s| (s.stx_mnt_id, s.stx_dev_major, s.stx_dev_minor));
    let mount = mount_id(mount_dir)?;
    let mut dir = mount_dir
        .try_clone()
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
    for component in rel.components() {
        let std::path::Component::Normal(name) = component else {
            return Err(Errno::EXDEV);
        };
        let fd = nix::fcntl::openat(
            &dir,
            name,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )?;
        dir = File::from(fd);
        if mount_id(&dir)? != mount {
            return Err(Errno::EXDEV);
        }
    }
    Ok(dir)
}

/// The bind of the open directories, read-only as [`bind_blocking`] describes.
fn bind_dirs(
    source_dir: &File,
    target_dir: &File,
    source: &Path,
    target: &Path,
    read_only: bool,
) -> Result<()> {
    if read_only && !NO_DETACHED_COPIES.load(Ordering::Relaxed) {
        match detached_copy(source_dir, libc::MOUNT_ATTR_RDONLY) {
            Ok(copy) => {
                return attach(&copy, target_dir).map_err(|e| errno_error("bind mount", target, e));
            }
            Err(Errno::ENOSYS | Errno::EPERM) => {
                debug!("no open_tree/mount_setattr here: read-only binds are remounted");
                NO_DETACHED_COPIES.store(true, Ordering::Relaxed);
            }
            Err(e) => {
                return Err(errno_error(
                    "read-only copy of bind mount source",
                    source,
                    e,
                ));
            }
        }
    }
    bind_then_remount(source_dir, target_dir, target, read_only, statvfs)
}

/// `MS_BIND` of `source_dir` on `target_dir`. For `read_only`, the bind is made in a
/// private scratch directory first ([`scratch_slot`]), remounted read-only there keeping
/// the flags `stat` reports of it, and only then moved onto the target: the copies
/// propagation makes of a mount (the host's, through a Bidirectional pods directory) are
/// made when it is attached, with the flags it has then, so none of them is ever writable.
/// Fails closed: nothing is attached at the target unless it is read-only.
fn bind_then_remount(
    source_dir: &File,
    target_dir: &File,
    target: &Path,
    read_only: bool,
    stat: impl FnOnce(&Path) -> nix::Result<Statvfs>,
) -> Result<()> {
    let bind = |at: &Path| {
        nix::mount::mount(
            Some(&fd_path(source_dir)),
            at,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| errno_error("bind mount", target, e))
    };
    if !read_only {
        return bind(&fd_path(target_dir));
    }
    let slot =
        scratch_slot().map_err(|e| errno_error("make a scratch directory for", target, e))?;
    let moved = bind(&slot).and_then(|()| {
        let remount = kept_flags(&slot, stat)
            .map_err(|e| errno_error("read the flags of the new bind mount", target, e))
            .and_then(|kept| {
                let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | kept;
                nix::mount::mount(None::<&str>, &slot, None::<&str>, flags, None::<&str>)
                    .map_err(|e| errno_error("remount read-only", target, e))
            })
            .and_then(|()| {
                nix::mount::mount(
                    Some(&slot),
                    &fd_path(target_dir),
                    None::<&str>,
                    MsFlags::MS_MOVE,
                    None::<&str>,
                )
                .map_err(|e| errno_error("move the read-only bind mount onto", target, e))
            });
        if remount.is_err() {
            undo_bind(&slot, target);
        }
        remount
    });
    let _ = std::fs::remove_dir(&slot);
    moved
}

/// A fresh directory below this process's scratch place for read-only binds
/// (`$TMPDIR/pfs-csi-read-only`, which the deployments give an `emptyDir`), made a private
/// mount of its own first so that no mount made below it propagates anywhere.
fn scratch_slot() -> std::result::Result<PathBuf, Errno> {
    use std::os::unix::fs::DirBuilderExt;
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let root = std::env::temp_dir().join("pfs-csi-read-only");
    let io = |e: std::io::Error| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&root)
        .map_err(io)?;
    let stx = statx_nofollow(&root)?;
    if !mount_root_of(&root, &stx).unwrap_or(false) {
        nix::mount::mount(
            Some(&root),
            &root,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )?;
    }
    nix::mount::mount(
        None::<&str>,
        &root,
        None::<&str>,
        MsFlags::MS_PRIVATE,
        None::<&str>,
    )?;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let slot = root.join(format!("{}-{n}", std::process::id()));
        match std::fs::DirBuilder::new().mode(0o700).create(&slot) {
            Ok(()) => return Ok(slot),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io(e)),
        }
    }
}

/// Detaches the bind at scratch directory `slot` (made for `target`), logging a failure.
fn undo_bind(slot: &Path, target: &Path) {
    let flags = MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW;
    if let Err(undo) = nix::mount::umount2(slot, flags) {
        warn!(target = %target.display(), error = %undo, "could not undo the bind mount after the read-only remount failed");
    }
}

/// How [`unmount_stack`] ended.
enum StackEnd {
    /// Nothing is mounted at the path any more; `false` when the path does not exist.
    Clear(bool),
    /// Still a mount point after [`MAX_STACKED_MOUNTS`] unmounts.
    StillMounted,
    /// Its caller stopped waiting before it finished.
    Abandoned,
}

/// Unmounts what is stacked at `path` until the kernel says nothing is mounted there: each
/// `umount2` both unmounts and checks (`EINVAL`: not a mount point, or a symbolic link,
/// never followed; `ENOENT`: no such path), so an unpublish takes two syscalls in one call
/// on the blocking pool. Stops before its next unmount once `abandoned` is set: a call that
/// returns after its caller gave up (a hung filesystem) must not unmount what was mounted
/// at `path` since.
fn unmount_stack(path: &Path, abandoned: &AtomicBool) -> Result<StackEnd> {
    for _ in 0..MAX_STACKED_MOUNTS {
        if abandoned.load(Ordering::SeqCst) {
            return Ok(StackEnd::Abandoned);
        }
        match nix::mount::umount2(path, MntFlags::UMOUNT_NOFOLLOW) {
            Ok(()) => {}
            Err(Errno::EINVAL) => return Ok(StackEnd::Clear(true)),
            Err(Errno::ENOENT) => return Ok(StackEnd::Clear(false)),
            Err(e) => return Err(Error::io("unmount", path, std::io::Error::from(e))),
        }
    }
    match is_mount_point_blocking(path) {
        Ok(true) => Ok(StackEnd::StillMounted),
        Ok(false) => Ok(StackEnd::Clear(true)),
        Err(e) if e.code() == ErrorCode::NotFound => Ok(StackEnd::Clear(false)),
        Err(e) => Err(e),
    }
}

/// Sets its flag when dropped: when the future holding it ends or is dropped.
struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Whether `path` is a mount root, from one `statx` (and one of its parent on kernels that
/// do not report `STATX_ATTR_MOUNT_ROOT`).
fn is_mount_point_blocking(path: &Path) -> Result<bool> {
    mount_root_id_blocking(path).map(|(root, _)| root)
}

/// Whether `path` is a mount root, and the id of its mount when the kernel tells it
/// (`STATX_MNT_ID`, Linux 5.8).
fn mount_root_id_blocking(path: &Path) -> Result<(bool, Option<u32>)> {
    let stx = statx_nofollow(path).map_err(|e| match e {
        Errno::ENOENT | Errno::ENOTDIR => {
            Error::NotFound(format!("{} does not exist", path.display()))
        }
        other => errno_error("statx", path, other),
    })?;
    let root = mount_root_of(path, &stx)?;
    let id = (stx.stx_mask & libc::STATX_MNT_ID != 0)
        .then(|| u32::try_from(stx.stx_mnt_id).ok())
        .flatten();
    Ok((root, id))
}

/// Whether `stx`, of `path`, is a mount root.
fn mount_root_of(path: &Path, stx: &libc::statx) -> Result<bool> {
    let mount_root = libc::STATX_ATTR_MOUNT_ROOT as u64;
    if stx.stx_attributes_mask & mount_root != 0 {
        return Ok(stx.stx_attributes & mount_root != 0);
    }
    is_mount_point_by_device(path, stx)
}

/// The fallback for kernels without `STATX_ATTR_MOUNT_ROOT` (before 5.8): a mount root sits
/// on another device than its parent, or is `/`. Misses a bind mount within one filesystem.
fn is_mount_point_by_device(path: &Path, stx: &libc::statx) -> Result<bool> {
    let parent = statx_nofollow(&path.join("..")).map_err(|e| errno_error("statx", path, e))?;
    let device = |s: &libc::statx| (s.stx_dev_major, s.stx_dev_minor);
    Ok(device(stx) != device(&parent) || stx.stx_ino == parent.stx_ino)
}

fn statx_nofollow(path: &Path) -> std::result::Result<libc::statx, Errno> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)?;
    statx_at(libc::AT_FDCWD, &c_path, libc::AT_SYMLINK_NOFOLLOW)
}

/// `statx` of what `file` refers to.
fn statx_fd(file: &File) -> std::result::Result<libc::statx, Errno> {
    statx_at(file.as_raw_fd(), c"", libc::AT_EMPTY_PATH)
}

fn statx_at(
    dir: RawFd,
    path: &std::ffi::CStr,
    flags: libc::c_int,
) -> std::result::Result<libc::statx, Errno> {
    // SAFETY: statx is plain old data; the kernel fills it.
    let mut buf: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a valid output buffer.
    let rc = unsafe {
        libc::statx(
            dir,
            path.as_ptr(),
            flags | libc::AT_NO_AUTOMOUNT | libc::AT_STATX_DONT_SYNC,
            libc::STATX_TYPE | libc::STATX_INO | libc::STATX_MNT_ID,
            &mut buf,
        )
    };
    if rc == 0 { Ok(buf) } else { Err(Errno::last()) }
}

/// Checks what reaches `mount(8)`'s command line: nothing that could be read as an option
/// or split into several arguments.
fn check_mount_args(source: &str, target: &Path, fs_type: &str, options: &[String]) -> Result<()> {
    if fs_type.is_empty()
        || fs_type.starts_with('-')
        || !fs_type
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(Error::invalid(
            "fs_type",
            format!("{fs_type:?} is not a filesystem type"),
        ));
    }
    if source.is_empty() || source.starts_with('-') || source.chars().any(char::is_control) {
        return Err(Error::invalid(
            "mount source",
            format!("{source:?} is empty, starts with '-' or holds control characters"),
        ));
    }
    if !target.is_absolute() {
        return Err(Error::invalid(
            "mount target",
            format!("{} is not an absolute path", target.display()),
        ));
    }
    if let Some(bad) = options
        .iter()
        .find(|o| o.is_empty() || o.chars().any(char::is_control))
    {
        return Err(Error::invalid(
            "mount options",
            format!("{bad:?} is empty or holds control characters"),
        ));
    }
    Ok(())
}

#[async_trait]
impl Mounter for LinuxMounter {
    async fn mount(
        &self,
        source: &str,
        target: &Path,
        fs_type: &str,
        options: &[String],
    ) -> Result<()> {
        check_mount_args(source, target, fs_type, options)?;
        let owned = target.to_path_buf();
        let exists = run_blocking(
            self.timeout,
            format!("stat {}", target.display()),
            move || std::fs::metadata(&owned).map(|m| m.is_dir()),
        )
        .await?;
        match exists {
            Ok(true) => {}
            Ok(false) => {
                return Err(Error::FailedPrecondition(format!(
                    "mount target {} is not a directory",
                    target.display()
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound(format!(
                    "mount target {} does not exist",
                    target.display()
                )));
            }
            Err(e) => return Err(Error::io("stat", target, e)),
        }
        let mut command = Command::new(&self.mount_program, self.timeout)
            .arg("-t")
            .arg(fs_type);
        if !options.is_empty() {
            command = command.arg("-o").arg(options.join(","));
        }
        let command = command.arg(source).arg(target);
        self.runner
            .run(&command)
            .await?
            .check(&self.mount_program.display().to_string())?;
        debug!(source, target = %target.display(), fs_type, "mounted");
        Ok(())
    }

    async fn bind_mount(&self, source: &Path, target: &Path, read_only: bool) -> Result<()> {
        let (src, dst) = (source.to_path_buf(), target.to_path_buf());
        self.stuck
            .run(
                source,
                self.timeout,
                format!("bind mount of {} on {}", source.display(), target.display()),
                move || bind_blocking(&src, &dst, read_only),
            )
            .await??;
        debug!(source = %source.display(), target = %target.display(), read_only, "bind mounted");
        Ok(())
    }

    /// The check and the bind in one call on the blocking pool ([`bind_below_blocking`]).
    async fn bind_mount_below(
        &self,
        mount: &Path,
        source: &Path,
        target: &Path,
        read_only: bool,
    ) -> Result<()> {
        let (m, src, dst) = (
            mount.to_path_buf(),
            source.to_path_buf(),
            target.to_path_buf(),
        );
        self.stuck
            .run(
                mount,
                self.timeout,
                format!("bind mount of {} on {}", source.display(), target.display()),
                move || bind_below_blocking(&m, &src, &dst, read_only),
            )
            .await??;
        debug!(source = %source.display(), target = %target.display(), read_only, "bind mounted");
        Ok(())
    }

    async fn unmount(&self, target: &Path) -> Result<()> {
        let owned = target.to_path_buf();
        let attempt = self
            .stuck
            .run(
                target,
                self.timeout,
                format!("unmount of {}", target.display()),
                move || nix::mount::umount2(&owned, MntFlags::UMOUNT_NOFOLLOW),
            )
            .await;
        match attempt {
            Ok(Ok(())) => {
                debug!(target = %target.display(), "unmounted");
                Ok(())
            }
            // EINVAL: not a mount point (or a symbolic link, never followed); ENOENT: gone.
            Ok(Err(Errno::EINVAL | Errno::ENOENT)) => Ok(()),
            Ok(Err(e)) => Err(Error::io("unmount", target, std::io::Error::from(e))),
            Err(e) if e.code() == ErrorCode::DeadlineExceeded => {
                warn!(target = %target.display(), timeout_ms = self.timeout.as_millis() as u64, "unmount did not return in time; detaching lazily");
                let owned = target.to_path_buf();
                let lazy = run_blocking(
                    self.timeout,
                    format!("lazy unmount of {}", target.display()),
                    move || {
                        nix::mount::umount2(
                            &owned,
                            MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW,
                        )
                    },
                )
                .await?;
                match lazy {
                    Ok(()) | Err(Errno::EINVAL | Errno::ENOENT) => {
                        warn!(target = %target.display(), "lazily unmounted; the filesystem is released when its last user goes");
                        // The path leads to the directory below now, not into the hung
                        // filesystem: calls on it are served again.
                        self.stuck.forget(target);
                        Ok(())
                    }
                    Err(e) => Err(Error::io("lazy unmount", target, std::io::Error::from(e))),
                }
            }
            Err(e) => Err(e),
        }
    }

    async fn is_mount_point(&self, path: &Path) -> Result<bool> {
        let owned = path.to_path_buf();
        self.stuck
            .run(
                path,
                self.timeout,
                format!("stat of {}", path.display()),
                move || is_mount_point_blocking(&owned),
            )
            .await?
    }

    /// One `statx`; the mount table only on kernels that do not give the mount id.
    async fn mount_id(&self, path: &Path) -> Result<Option<u32>> {
        let owned = path.to_path_buf();
        let (root, id) = self
            .stuck
            .run(
                path,
                self.timeout,
                format!("stat of {}", path.display()),
                move || mount_root_id_blocking(&owned),
            )
            .await??;
        match (root, id) {
            (false, _) => Ok(None),
            (true, Some(id)) => Ok(Some(id)),
            (true, None) => top_mount_id(&self.list_mounts().await?, path).map(Some),
        }
    }

    async fn list_mounts(&self) -> Result<Vec<MountEntry>> {
        let path = self.mountinfo.clone();
        let table = try_blocking(
            self.timeout,
            format!("reading {}", self.mountinfo.display()),
            move || read_mount_table(&path),
        )
        .await?;
        Ok(table.entries)
    }

    /// The whole stack in one blocking call ([`unmount_stack`]); when that does not return
    /// in time, [`unmount_one_by_one`], whose first unmount detaches the hung mount lazily.
    async fn unmount_all(&self, path: &Path) -> Result<bool> {
        let abandoned = Arc::new(AtomicBool::new(false));
        let _abandon_when_done = SetOnDrop(abandoned.clone());
        let (owned, flag) = (path.to_path_buf(), abandoned.clone());
        let ended = self
            .stuck
            .run(
                path,
                self.timeout,
                format!("unmount of {}", path.display()),
                move || unmount_stack(&owned, &flag),
            )
            .await;
        match ended {
            Ok(Ok(StackEnd::Clear(exists))) => {
                debug!(path = %path.display(), exists, "nothing mounted");
                Ok(exists)
            }
            Ok(Ok(StackEnd::StillMounted)) => Err(still_mounted(path)),
            Ok(Ok(StackEnd::Abandoned)) => Err(Error::Internal(format!(
                "unmount of {} stopped while it was awaited",
                path.display()
            ))),
            Ok(Err(e)) => Err(e),
            Err(e) if e.code() == ErrorCode::DeadlineExceeded => {
                abandoned.store(true, Ordering::SeqCst);
                unmount_one_by_one(self, path).await
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use crate::ports::{CommandOutput, MockCommandRunner};

    fn mounter(runner: MockCommandRunner) -> LinuxMounter {
        LinuxMounter::new(
            Arc::new(runner),
            PathBuf::from("/sbin/mount.test"),
            Duration::from_secs(5),
        )
    }

    #[tokio::test]
    async fn mount_runs_the_helper_with_type_options_source_and_target() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().to_path_buf();
        let expected_target = target.clone();
        let mut runner = MockCommandRunner::new();
        runner
            .expect_run()
            .withf(move |c| {
                c.program == Path::new("/sbin/mount.test")
                    && c.args
                        == vec![
                            "-t".into(),
                            "lustre".into(),
                            "-o".into(),
                            "flock,ro".into(),
                            "10.0.0.1@tcp:/fs".into(),
                            expected_target.clone().into_os_string(),
                        ]
                    && c.timeout == Duration::from_secs(5)
            })
            .times(1)
            .returning(|_| {
                Ok(CommandOutput {
                    status: Some(0),
                    ..Default::default()
                })
            });
        mounter(runner)
            .mount(
                "10.0.0.1@tcp:/fs",
                &target,
                "lustre",
                &["flock".into(), "ro".into()],
            )
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn mount_without_options_passes_no_dash_o_and_reports_the_helper_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut runner = MockCommandRunner::new();
        runner
            .expect_run()
            .withf(|c| c.args.len() == 4 && c.args[0] == "-t")
            .returning(|_| {
                Ok(CommandOutput {
                    status: Some(32),
                    stdout: String::new(),
                    stderr: "mount.beegfs: bad superblock".into(),
                })
            });
        let err = mounter(runner)
            .mount("beegfs_nodev", dir.path(), "beegfs", &[])
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::Internal);
        assert!(err.to_string().contains("bad superblock"), "{err}");
    }

    #[tokio::test]
    async fn mount_refuses_injected_arguments_and_missing_targets_without_running_anything() {
        let dir = tempfile::tempdir().unwrap();
        let m = mounter(MockCommandRunner::new());
        let cases: [(&str, &Path, &str, Vec<String>, ErrorCode); 5] = [
            (
                "-oremount",
                dir.path(),
                "lustre",
                vec![],
                ErrorCode::InvalidArgument,
            ),
            (
                "src",
                dir.path(),
                "--bind",
                vec![],
                ErrorCode::InvalidArgument,
            ),
            (
                "src",
                dir.path(),
                "lustre",
                vec!["a\nb".into()],
                ErrorCode::InvalidArgument,
            ),
            (
                "src",
                Path::new("relative"),
                "lustre",
                vec![],
                ErrorCode::InvalidArgument,
            ),
            (
                "src",
                &dir.path().join("missing"),
                "lustre",
                vec![],
                ErrorCode::NotFound,
            ),
        ];
        for (source, target, fs_type, options, code) in cases {
            let err = m
                .mount(source, target, fs_type, &options)
                .await
                .unwrap_err();
            assert_eq!(err.code(), code, "{source} {fs_type}: {err}");
        }
    }

    #[test]
    fn the_walk_without_openat2_takes_directories_only() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/file"), b"").unwrap();
        std::os::unix::fs::symlink("a", dir.path().join("link")).unwrap();
        let root = open_dir_nofollow(dir.path()).unwrap();
        let opened = open_by_components(&root, Path::new("a/b")).unwrap();
        let ino = |f: &File| statx_fd(f).unwrap().stx_ino;
        let b = open_dir_nofollow(&dir.path().join("a/b")).unwrap();
        assert_eq!(ino(&opened), ino(&b));
        for rel in ["link/b", "a/file", "a/missing", "a/../a/b"] {
            assert!(open_by_components(&root, Path::new(rel)).is_err(), "{rel}");
        }
    }

    #[tokio::test]
    async fn mount_id_is_the_mount_tables_and_none_for_a_plain_directory() {
        let m = mounter(MockCommandRunner::new());
        let root = Path::new("/proc");
        let listed = crate::ports::top_mount_id(&m.list_mounts().await.unwrap(), root).unwrap();
        assert_eq!(m.mount_id(root).await.unwrap(), Some(listed));
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(m.mount_id(dir.path()).await.unwrap(), None);
        let err = m.mount_id(&dir.path().join("missing")).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::NotFound);
    }

    #[tokio::test]
    async fn is_mount_point_answers_for_root_a_plain_directory_and_a_missing_path() {
        let m = mounter(MockCommandRunner::new());
        assert!(m.is_mount_point(Path::new("/")).await.unwrap());
        assert!(m.is_mount_point(Path::new("/proc")).await.unwrap());
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("plain")).unwrap();
        assert!(!m.is_mount_point(&dir.path().join("plain")).await.unwrap());
        let err = m
            .is_mount_point(&dir.path().join("missing"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::NotFound);
    }

    #[test]
    fn the_device_fallback_tells_filesystem_roots_from_directories() {
        let by_device = |p: &str| {
            let path = Path::new(p);
            is_mount_point_by_device(path, &statx_nofollow(path).unwrap()).unwrap()
        };
        assert!(by_device("/"));
        assert!(by_device("/proc"));
        assert!(!by_device("/proc/self/fd"));
    }

    #[tokio::test]
    async fn unmounting_what_is_not_mounted_succeeds() {
        let m = mounter(MockCommandRunner::new());
        let dir = tempfile::tempdir().unwrap();
        m.unmount(dir.path()).await.unwrap();
        m.unmount(&dir.path().join("missing")).await.unwrap();
    }

    #[test]
    fn a_stack_comes_off_in_one_call_that_stops_once_abandoned() {
        in_private_mount_namespace(|| {
            let (dir, src, dst) = tmpfs_source(MsFlags::MS_NOSUID);
            let bind = || {
                nix::mount::mount(
                    Some(&src),
                    &dst,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .unwrap()
            };
            let (going_on, gave_up) = (AtomicBool::new(false), AtomicBool::new(true));
            for _ in 0..3 {
                bind();
            }
            // A call whose caller stopped waiting unmounts nothing more.
            assert!(matches!(
                unmount_stack(&dst, &gave_up).unwrap(),
                StackEnd::Abandoned
            ));
            assert_eq!(mounted_at(&dst).len(), 3);
            assert!(matches!(
                unmount_stack(&dst, &going_on).unwrap(),
                StackEnd::Clear(true)
            ));
            assert!(mounted_at(&dst).is_empty(), "{:?}", mounted_at(&dst));
            assert!(matches!(
                unmount_stack(&dir.path().join("missing"), &going_on).unwrap(),
                StackEnd::Clear(false)
            ));
            // A link is neither followed nor unmounted through.
            let link = dir.path().join("link");
            std::os::unix::fs::symlink(&src, &link).unwrap();
            assert!(matches!(
                unmount_stack(&link, &going_on).unwrap(),
                StackEnd::Clear(true)
            ));
            assert_eq!(mounted_at(&src), ["tmpfs"]);
            for _ in 0..=MAX_STACKED_MOUNTS {
                bind();
            }
            assert!(matches!(
                unmount_stack(&dst, &going_on).unwrap(),
                StackEnd::StillMounted
            ));
            assert_eq!(mounted_at(&dst).len(), 1);
        });
    }

    #[tokio::test]
    async fn unmount_all_on_a_path_still_held_by_a_hung_call_detaches_lazily_and_checks() {
        let m = mounter(MockCommandRunner::new());
        let dir = tempfile::tempdir().unwrap();
        let (release, blocked) = std::sync::mpsc::channel::<()>();
        let err = m
            .stuck
            .run(
                dir.path(),
                Duration::from_millis(20),
                "stat".into(),
                move || {
                    let _ = blocked.recv();
                },
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::DeadlineExceeded);
        assert!(m.stuck.is_stuck(dir.path()));
        assert!(m.unmount_all(dir.path()).await.unwrap());
        assert!(!m.stuck.is_stuck(dir.path()));
        drop(release);
    }

    /// Runs `f` on a thread of its own in a new mount namespace where every mount is
    /// private: nothing it mounts is seen elsewhere, and the namespace ends with the thread.
    fn in_private_mount_namespace<T: Send>(f: impl FnOnce() -> T + Send) -> T {
        assert!(
            nix::unistd::Uid::effective().is_root(),
            "this test mounts: run it as root"
        );
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).unwrap();
                    nix::mount::mount(
                        None::<&str>,
                        "/",
                        None::<&str>,
                        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                        None::<&str>,
                    )
                    .unwrap();
                    f()
                })
                .join()
                .unwrap()
        })
    }

    /// The filesystem types mounted at `path` in this thread's namespace, bottom first.
    fn mounted_at(path: &Path) -> Vec<String> {
        read_mount_table(Path::new(SELF_MOUNTINFO))
            .unwrap()
            .entries
            .into_iter()
            .filter(|e| e.mount_point == path)
            .map(|e| e.fs_type)
            .collect()
    }

    /// A temporary directory with `src` (a tmpfs with `flags`, holding `file`) and `dst`.
    fn tmpfs_source(flags: MsFlags) -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
        for d in [&src, &dst] {
            std::fs::create_dir(d).unwrap();
        }
        nix::mount::mount(Some("src"), &src, Some("tmpfs"), flags, Some("size=1m")).unwrap();
        std::fs::write(src.join("file"), "data").unwrap();
        (dir, src, dst)
    }

    #[test]
    fn a_read_only_bind_whose_flags_cannot_be_read_fails_and_leaves_nothing_mounted() {
        in_private_mount_namespace(|| {
            let (_dir, src, dst) = tmpfs_source(MsFlags::MS_NOSUID | MsFlags::MS_NODEV);
            let (source_dir, target_dir) = (open_source(&src).unwrap(), open_target(&dst).unwrap());
            let err = bind_then_remount(&source_dir, &target_dir, &dst, true, |_| Err(Errno::EIO))
                .unwrap_err();
            assert!(err.to_string().contains("read the flags"), "{err}");
            assert!(mounted_at(&dst).is_empty(), "{:?}", mounted_at(&dst));
            assert!(!dst.join("file").exists());
        });
    }

    #[test]
    fn a_failed_read_only_bind_leaves_a_mount_someone_else_made_at_the_target() {
        in_private_mount_namespace(|| {
            let (_dir, src, dst) = tmpfs_source(MsFlags::MS_NOSUID | MsFlags::MS_NODEV);
            let (source_dir, target_dir) = (open_source(&src).unwrap(), open_target(&dst).unwrap());
            // While the flags are read, another mount goes on the target.
            let err = bind_then_remount(&source_dir, &target_dir, &dst, true, |_| {
                nix::mount::mount(
                    Some("later"),
                    &dst,
                    Some("tmpfs"),
                    MsFlags::empty(),
                    Some("size=1m"),
                )
                .unwrap();
                std::fs::write(dst.join("later"), "x").unwrap();
                Err(Errno::EIO)
            })
            .unwrap_err();
            assert!(err.to_string().contains("read the flags"), "{err}");
            assert!(dst.join("later").exists(), "{:?}", mounted_at(&dst));
            assert_eq!(mounted_at(&dst), ["tmpfs"]);
        });
    }

    #[test]
    fn a_read_only_bind_is_read_only_in_every_copy_propagation_makes() {
        in_private_mount_namespace(|| {
            let (dir, src, _) = tmpfs_source(MsFlags::MS_NOSUID | MsFlags::MS_NODEV);
            // A shared "pods" mount with a peer elsewhere, as the host's pods directory is
            // to the plugin's Bidirectional view of it.
            let (pods, peer) = (dir.path().join("pods"), dir.path().join("peer"));
            for d in [&pods, &peer] {
                std::fs::create_dir(d).unwrap();
            }
            let mount = |source: &Path, target: &Path, flags: MsFlags| {
                nix::mount::mount(Some(source), target, None::<&str>, flags, None::<&str>).unwrap();
            };
            mount(&pods, &pods, MsFlags::MS_BIND);
            nix::mount::mount(
                None::<&str>,
                &pods,
                None::<&str>,
                MsFlags::MS_SHARED,
                None::<&str>,
            )
            .unwrap();
            mount(&pods, &peer, MsFlags::MS_BIND);
            let target = pods.join("target");
            std::fs::create_dir(&target).unwrap();
            let (source_dir, target_dir) =
                (open_source(&src).unwrap(), open_target(&target).unwrap());
            bind_then_remount(&source_dir, &target_dir, &target, true, statvfs).unwrap();
            for copy in [&target, &peer.join("target")] {
                assert_eq!(std::fs::read(copy.join("file")).unwrap(), b"data");
                let err = std::fs::write(copy.join("new"), "x").unwrap_err();
                assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{}", copy.display());
            }
            // Nothing is left in the scratch place.
            let scratch = std::env::temp_dir().join("pfs-csi-read-only");
            assert_eq!(std::fs::read_dir(&scratch).unwrap().count(), 0);
            assert_eq!(mounted_at(&scratch).len(), 1, "its own private mount only");
        });
    }

    #[test]
    fn the_remount_fallback_keeps_nosuid_nodev_and_noexec() {
        in_private_mount_namespace(|| {
            let (_dir, src, dst) =
                tmpfs_source(MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC);
            let (source_dir, target_dir) = (open_source(&src).unwrap(), open_target(&dst).unwrap());
            bind_then_remount(&source_dir, &target_dir, &dst, true, statvfs).unwrap();
            assert_eq!(mounted_at(&dst), ["tmpfs"]);
            let flags = statvfs(&dst).unwrap().flags();
            for flag in [
                FsFlags::ST_RDONLY,
                FsFlags::ST_NOSUID,
                FsFlags::ST_NODEV,
                FsFlags::ST_NOEXEC,
            ] {
                assert!(flags.contains(flag), "{flag:?} missing from {flags:?}");
            }
            let err = std::fs::write(dst.join("new"), "x").unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
        });
    }

    #[tokio::test]
    async fn list_mounts_reads_the_configured_table() {
        let dir = tempfile::tempdir().unwrap();
        let table = dir.path().join("mountinfo");
        std::fs::write(
            &table,
            "1 0 0:1 / / rw - ext4 /dev/sda rw\nbad line\n2 1 0:2 / /mnt\\040x ro - lustre fs rw\n",
        )
        .unwrap();
        let m = mounter(MockCommandRunner::new()).with_mountinfo(&table);
        let mounts = m.list_mounts().await.unwrap();
        assert_eq!(mounts.len(), 2);
        assert_eq!(mounts[1].mount_point, Path::new("/mnt x"));
        assert!(mounts[1].is_read_only());
    }
}
