//! A native, parallel writer of GNU-tar-readable archives of a directory tree.
//!
//! One walker thread lists the tree depth-first (children sorted by name, each directory
//! before its contents) and numbers the entries, stat-ing only directories (the type of
//! anything else is the listing's); N reader threads take runs of consecutive entries and
//! turn each run into a segment of the archive: they stat the entries (a file through the
//! descriptor its bytes are read from, so metadata and contents are of one inode), read
//! their extended attributes and symlink targets, build their headers and read small regular
//! files (up to [`SMALL_FILE_MAX`]) straight into the segment's bytes, in buffers that come
//! back for reuse once written. The calling thread writes the segments strictly in walk
//! order and streams large files itself in 256 KiB chunks. A bounded window (bytes and
//! entries read ahead of the writer, [`WINDOW_BYTES`], [`WINDOW_ENTRIES`]) keeps memory
//! bounded whatever the tree.
//!
//! The archive: GNU format headers (GNU long-name and long-link entries for names over 100
//! bytes), numeric owners, permission bits, whole-second mtimes; entry names relative to the
//! source (`./` for the source itself); extended attributes, ACLs (`system.posix_acl_*`)
//! included, as pax `SCHILY.xattr.<name>` records, the form `tar --xattrs` reads; hard links
//! (the first path of an inode by walk order is the file, later ones link to it: readers
//! build such entries whole, and the writer, which sees them in walk order, turns the later
//! ones into links); fifos and devices as headers. Sockets are skipped with a warning, as
//! GNU tar does. Sparse files are stored in full (their holes as zeros). Names are bytes:
//! non-UTF-8 names survive; an attribute whose name is not UTF-8 cannot be a pax keyword
//! and is skipped with a warning.
//! A file that shrinks while read is padded with zeros to its header size (with a warning),
//! one that grows is cut at the size it had when opened, and one removed before being read is
//! left out with a warning: never a corrupt archive. Every thread stops at the deadline or
//! when the cancel flag is raised.
//!
//! The tree belongs to the volume's users and changes while it is read, so nothing is
//! opened by a path that a symbolic link could redirect: directories and files are opened
//! with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV)` below the
//! source's own descriptor, directories are listed through that descriptor, an opened
//! directory must be the inode the walk listed and an opened file a regular file. An entry
//! swapped for a link, or for another type of file, between the walk and the read is left
//! out with a warning, so a snapshot never holds anything from outside its volume; a file
//! replaced by another regular file goes in as the new file, as GNU tar would take it. Nor
//! does the writer ever open a device that a user swapped in after the walk (opening one
//! can act on the machine): files are opened below a private `nodev` copy of the source's
//! mount (or the mount itself when it is `nodev`), where no device can be opened; a process
//! without the privilege to make the copy opens each file as an `O_PATH` descriptor first,
//! checks it, and reopens it through that.
//! Another filesystem mounted inside the source is left out with a warning, as
//! `tar --one-file-system` would. Kernels without `openat2` (before 5.6) make
//! [`beneath_supported`] false, and the engine archives with GNU tar instead.
//!
//! The archive is written with `O_DIRECT` ([`super::direct_io`]) where the filesystem
//! takes it: the readers' buffers start on a page boundary, so that a thread of its own
//! writes them where they lie (or from staging buffers, where the filesystem wants whole
//! pages). Elsewhere it goes through the page cache, its writeback started every
//! [`WRITEBACK_STEP`] bytes (`sync_file_range`) so that the caller's fsync waits only for
//! the tail. The writer hashes each buffer as it hands it on: it has nothing else to do
//! with the bytes, so the checksum costs no copy and no thread.

use std::collections::HashMap;
use std::collections::hash_map::Entry as MapEntry;
use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, ErrorKind, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::Scope;
use std::time::{Duration, Instant};

use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::statvfs::FsFlags;
use tar::{Builder, EntryType, Header};
use tracing::warn;

use super::checksum::StreamHasher;
use super::direct_io::{AlignedBuf, DirectWriter, Release};
use crate::error::{Error, Result};
use crate::linux::mounter::{fd_path, nodev_copy, open_dir_nofollow};
use crate::ports::{ArchiveChecksum, ChecksumKind};

/// Regular files up to this size are read whole by the reader threads.
pub const SMALL_FILE_MAX: u64 = 1 << 20;
/// Bytes read ahead of the writer at most (the entry at the writer's head always passes).
pub const WINDOW_BYTES: u64 = 64 << 20;
/// Entries read ahead of the writer at most.
pub const WINDOW_ENTRIES: u64 = 16 << 10;
/// Most reader threads.
pub const MAX_READERS: usize = 8;
/// A reader's bytes piece is cut once it holds this much.
const PIECE_BYTES: usize = 256 << 10;
/// Emptied byte buffers kept for reuse at most.
const POOLED_BUFFERS: usize = 128;
/// Chunk in which large files are streamed.
const CHUNK: usize = PIECE_BYTES;
/// Window cost of an entry besides its data.
const ENTRY_COST: u64 = 1 << 10;
/// Window cost of a large file (an open descriptor waiting for the writer).
const LARGE_FILE_COST: u64 = 1 << 20;
/// Walk entries handed to a reader at once (fewer channel and lock operations per file).
const JOB_BATCH: usize = 32;
/// Batches of walk entries queued for the readers at most.
const JOB_QUEUE: usize = 128;
/// How often blocked threads look at the cancel flag.
const POLL: Duration = Duration::from_millis(50);
/// Bytes written between two starts of the archive's writeback, so that the final
/// fsync has only the tail left to wait for.
pub const WRITEBACK_STEP: u64 = 4 << 20;
/// GNU tar's record size (blocking factor 20): archives are padded to a multiple of it.
const RECORD: u64 = 10240;

/// What a finished archive holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenArchive {
    /// Bytes written.
    pub size_bytes: u64,
    /// Entries written.
    pub entries: u64,
    /// Files that changed or vanished while being archived.
    pub warnings: u64,
    /// The checksum of the bytes written, when asked for.
    pub checksum: Option<ArchiveChecksum>,
}

/// How an archive is written.
#[derive(Debug, Clone)]
pub struct WriteLimits {
    /// When the run gives up with `DeadlineExceeded` (`None`: never).
    pub deadline: Option<Instant>,
    /// Raised by the caller to stop the run (also `DeadlineExceeded`).
    pub cancel: Arc<AtomicBool>,
    /// Reader threads.
    pub readers: usize,
}

impl WriteLimits {
    /// Limits ending after `timeout`, with one reader per core (2 to [`MAX_READERS`]).
    pub fn new(timeout: Duration, cancel: Arc<AtomicBool>) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            deadline: Instant::now().checked_add(timeout),
            cancel,
            readers: cores.clamp(2, MAX_READERS),
        }
    }
}

/// Archives the directory `source` into the new file `dest` (created or truncated), with a
/// checksum of `checksum`'s kind computed while writing. The file is left unsynced; on
/// error it is left for the caller to remove.
pub fn write_archive(
    source: &Path,
    dest: &Path,
    checksum: Option<ChecksumKind>,
    limits: &WriteLimits,
) -> Result<WrittenArchive> {
    write_archive_as(source, dest, checksum, limits, Writes::DirectIfPossible)
}

/// How the archive's bytes reach the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writes {
    /// `O_DIRECT` where the filesystem takes it, else through the page cache.
    DirectIfPossible,
    /// Through the page cache (what a filesystem without `O_DIRECT` gets).
    #[cfg(test)]
    Buffered,
    /// `O_DIRECT` from staging buffers (what a filesystem wanting whole pages gets).
    #[cfg(test)]
    Staged,
}

/// [`write_archive`], its writes made as `writes` says.
fn write_archive_as(
    source: &Path,
    dest: &Path,
    checksum: Option<ChecksumKind>,
    limits: &WriteLimits,
    writes: Writes,
) -> Result<WrittenArchive> {
    let source_meta = fs::symlink_metadata(source).map_err(|e| Error::io("stat", source, e))?;
    if !source_meta.is_dir() {
        return Err(Error::FailedPrecondition(format!(
            "snapshot source {} is not a directory",
            source.display()
        )));
    }
    // Readable by its owner only: the archive holds the volume's data.
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(dest)
        .map_err(|e| Error::io("create", dest, e))?;
    let own = file
        .metadata()
        .map(|m| (m.dev(), m.ino()))
        .map_err(|e| Error::io("stat", dest, e))?;
    let (root, nodev) = nodev_root(open_root(source)?);
    let shared = Shared {
        nodev,
        root,
        own,
        source: source.to_path_buf(),
        cancel: limits.cancel.clone(),
        error: Mutex::new(None),
        window: Window::default(),
        warnings: AtomicU64::new(0),
        deadline: limits.deadline,
        buffers: Buffers::default(),
    };
    let (job_tx, job_rx) = mpsc::sync_channel::<Vec<Job>>(JOB_QUEUE);
    let (done_tx, done_rx) = mpsc::channel::<Segment>();
    let readers = limits.readers.max(1);
    let written = std::thread::scope(|scope| -> Result<Option<(u64, u64, _)>> {
        let buffers = &shared.buffers;
        let release = || -> Release { Box::new(|bytes| buffers.give(bytes)) };
        let mut out = ArchiveOut {
            direct: match writes {
                Writes::DirectIfPossible => DirectWriter::start(&file, scope, release()),
                #[cfg(test)]
                Writes::Buffered => None,
                #[cfg(test)]
                Writes::Staged => DirectWriter::start_staged(&file, scope, release()),
            },
            file,
            hasher: checksum.map(StreamHasher::new),
            buffers,
            written: 0,
            flushed: 0,
        };
        let job_rx = Arc::new(Mutex::new(job_rx));
        spawn(scope, "tar-walk", &shared, {
            let shared = &shared;
            move || walk(source_meta, job_tx, shared)
        })?;
        for i in 0..readers {
            let (rx, tx, shared) = (job_rx.clone(), done_tx.clone(), &shared);
            spawn(scope, &format!("tar-read-{i}"), shared, move || {
                read_entries(rx, tx, shared);
                Ok(())
            })?;
        }
        drop((job_rx, done_tx));
        let entries = match write_segments(&mut out, dest, done_rx, &shared) {
            Ok(entries) => entries,
            Err(e) => {
                shared.fail(e);
                return Ok(None);
            }
        };
        end_archive(&mut out).map_err(|e| Error::io("write", dest, e))?;
        let (size, checksum) = out.finish().map_err(|e| Error::io("write", dest, e))?;
        Ok(Some((entries, size, checksum)))
    });
    if let Some(e) = shared.take_error() {
        return Err(e);
    }
    let (entries, size_bytes, checksum) = match written? {
        Some(done) if !shared.cancelled() => done,
        _ => {
            return Err(Error::DeadlineExceeded(format!(
                "archiving {} was cancelled",
                source.display()
            )));
        }
    };
    Ok(WrittenArchive {
        size_bytes,
        entries,
        warnings: shared.warnings.load(Ordering::Relaxed),
        checksum,
    })
}

/// Spawns a scoped thread whose error stops the run.
fn spawn<'scope, 'env, F>(
    scope: &'scope Scope<'scope, 'env>,
    name: &str,
    shared: &'env Shared,
    f: F,
) -> Result<()>
where
    F: FnOnce() -> Result<()> + Send + 'scope,
{
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn_scoped(scope, move || {
            if let Err(e) = f() {
                shared.fail(e);
            }
        })
        .map(|_| ())
        .map_err(|e| {
            shared.fail(Error::Internal(format!("cannot start thread {name}: {e}")));
            Error::Internal(format!("cannot start thread {name}: {e}"))
        })
}

/// Ends the archive and pads it to a whole record, as GNU tar does.
fn end_archive(out: &mut ArchiveOut) -> io::Result<()> {
    // Two zero blocks end a tar archive.
    let end = out.written + 1024;
    let pad = 1024 + (RECORD - end % RECORD) % RECORD;
    let mut zeros = out.buffers.take();
    zeros.resize(pad as usize, 0);
    out.put(zeros)
}

/// The archive file, and the checksum of what goes into it. Written with `O_DIRECT`
/// where the filesystem takes it, else through the page cache with writeback started
/// early.
struct ArchiveOut<'scope, 'a> {
    file: File,
    /// The direct writer of `file`, where the filesystem takes direct writes.
    direct: Option<DirectWriter<'scope>>,
    /// The checksum so far, when one is asked for.
    hasher: Option<StreamHasher>,
    /// Where buffers go back once written.
    buffers: &'a Buffers,
    written: u64,
    /// Bytes whose writeback has been started.
    flushed: u64,
}

impl ArchiveOut<'_, '_> {
    /// Hashes `bytes` and writes them (a direct writer gives the buffer back to the pool
    /// once it has written it).
    fn put(&mut self, bytes: AlignedBuf) -> io::Result<()> {
        if let Some(hasher) = &mut self.hasher {
            hasher.update(&bytes);
        }
        self.written += bytes.len() as u64;
        if let Some(direct) = &mut self.direct {
            return direct.write(bytes);
        }
        self.file.write_all(&bytes)?;
        if self.written - self.flushed >= WRITEBACK_STEP {
            start_writeback(&self.file, self.flushed, self.written - self.flushed);
            self.flushed = self.written;
        }
        self.buffers.give(bytes);
        Ok(())
    }

    /// Writes what direct writes still hold; the bytes written in all and their checksum.
    fn finish(mut self) -> io::Result<(u64, Option<ArchiveChecksum>)> {
        if let Some(direct) = self.direct.take() {
            direct.finish(&self.file)?;
        }
        Ok((self.written, self.hasher.map(StreamHasher::finish)))
    }
}

/// Starts writing `len` bytes of `file` from `offset` back to disk without waiting for
/// them (`sync_file_range(SYNC_FILE_RANGE_WRITE)`), so that a later fsync has less to wait
/// for. Advice only: a filesystem that cannot is left to its own writeback.
pub fn start_writeback(file: &File, offset: u64, len: u64) {
    // SAFETY: sync_file_range only starts writeback of a range of this open file.
    unsafe {
        libc::sync_file_range(
            std::os::fd::AsRawFd::as_raw_fd(file),
            offset as libc::off_t,
            len as libc::off_t,
            libc::SYNC_FILE_RANGE_WRITE,
        )
    };
}

/// State shared by the threads of one run.
struct Shared {
    /// The source directory, which every path of the walk is opened below.
    root: File,
    /// Its path, for messages.
    source: PathBuf,
    /// Whether no device node can be opened below `root` (see [`nodev_root`]).
    nodev: bool,
    /// The archive's device and inode (never archived, should it lie in the source).
    own: (u64, u64),
    cancel: Arc<AtomicBool>,
    error: Mutex<Option<Error>>,
    window: Window,
    warnings: AtomicU64,
    deadline: Option<Instant>,
    buffers: Buffers,
}

impl Shared {
    /// Opens `rel` (an archive name: relative to the source) below the source without
    /// following any symbolic link; `ELOOP` or `EXDEV` when a link or `..` is in the way.
    fn open_beneath(&self, rel: &Path, flags: OFlag) -> io::Result<File> {
        let rel = if rel == Path::new("./") || rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        open_beneath(&self.root, rel, flags)
    }

    /// The path on disk of archive name `name`, for messages.
    fn path_of(&self, name: &Path) -> PathBuf {
        match name.strip_prefix("./") {
            Ok(rest) => self.source.join(rest),
            Err(_) => self.source.join(name),
        }
    }

    /// Records the first error and stops every thread.
    fn fail(&self, e: Error) {
        let mut slot = lock(&self.error);
        if slot.is_none() {
            *slot = Some(e);
        }
        drop(slot);
        self.cancel.store(true, Ordering::SeqCst);
        self.window.wake();
    }

    fn take_error(&self) -> Option<Error> {
        lock(&self.error).take()
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// Fails the run once the deadline has passed; false when the run must stop.
    fn keep_going(&self) -> bool {
        if self.cancelled() {
            return false;
        }
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            self.fail(Error::DeadlineExceeded(
                "archiving did not finish within the archive timeout".into(),
            ));
            return false;
        }
        true
    }

    fn warned(&self) {
        self.warnings.fetch_add(1, Ordering::Relaxed);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Bounds what the readers hold ahead of the writer.
#[derive(Default)]
struct Window {
    /// Bytes held, and the entry the writer waits for.
    state: Mutex<(u64, u64)>,
    changed: Condvar,
    /// Readers waiting for room (the writer wakes them only then).
    waiting: AtomicU64,
}

impl Window {
    /// Waits until entry `seq` may take `cost` bytes; false when the run stops first.
    fn acquire(&self, seq: u64, cost: u64, cancel: &AtomicBool) -> bool {
        let mut state = lock(&self.state);
        loop {
            if cancel.load(Ordering::Relaxed) {
                return false;
            }
            let (used, next) = *state;
            if admits(used, next, seq, cost) {
                state.0 += cost;
                return true;
            }
            self.waiting.fetch_add(1, Ordering::SeqCst);
            state = self
                .changed
                .wait_timeout(state, POLL)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            self.waiting.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Gives back `cost` bytes; the writer now waits for entry `next`.
    fn release(&self, cost: u64, next: u64) {
        let mut state = lock(&self.state);
        state.0 = state.0.saturating_sub(cost);
        state.1 = next;
        drop(state);
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.changed.notify_all();
        }
    }

    fn wake(&self) {
        self.changed.notify_all();
    }

    /// Takes room for entry `seq` if there is some now, without waiting.
    fn try_acquire(&self, seq: u64, cost: u64) -> bool {
        let mut state = lock(&self.state);
        let admitted = admits(state.0, state.1, seq, cost);
        if admitted {
            state.0 += cost;
        }
        admitted
    }
}

/// Whether entry `seq` costing `cost` may be read while `used` bytes are held and the
/// writer waits for entry `next`: the head always, the others within both bounds.
fn admits(used: u64, next: u64, seq: u64, cost: u64) -> bool {
    seq == next
        || (used.saturating_add(cost) <= WINDOW_BYTES && seq < next.saturating_add(WINDOW_ENTRIES))
}

/// One walked path: its name and type as its directory listed them. Its metadata is
/// read when it is archived (a directory's when it is listed), so what goes into the
/// archive is the metadata of the very inode whose bytes are read.
struct Job {
    seq: u64,
    /// The name in the archive.
    name: PathBuf,
    /// The type its directory listing gave (`d_type`; a stat where the filesystem gives none).
    kind: fs::FileType,
    /// A directory's metadata, from the descriptor it was listed through.
    meta: Option<Metadata>,
}

/// What an entry of `meta` holds in the window while waiting for the writer.
fn cost_of(meta: &Metadata) -> u64 {
    let data = match meta.len() {
        _ if !meta.is_file() => 0,
        len if len <= SMALL_FILE_MAX => len,
        _ => LARGE_FILE_COST,
    };
    ENTRY_COST + data
}

/// A run of consecutive walk entries turned into archive bytes by a reader.
struct Segment {
    /// The first walk number it covers.
    start: u64,
    /// One past the last walk number it covers.
    end: u64,
    /// Window room it holds.
    cost: u64,
    /// Entries in it (those that vanished before they were read are not).
    entries: u64,
    pieces: Vec<Piece>,
}

impl Segment {
    fn new(start: u64) -> Self {
        Self {
            start,
            end: start,
            cost: 0,
            entries: 0,
            pieces: Vec::new(),
        }
    }
}

/// Part of a segment, in archive order.
enum Piece {
    /// Headers, small files' contents and their padding.
    Bytes(AlignedBuf),
    /// A large file's contents, streamed by the writer (its header ends the piece before).
    Stream {
        file: File,
        size: u64,
        name: PathBuf,
    },
    /// An entry whose inode has other links: written as it is at the first path of the
    /// inode in walk order, as a hard link to that path at later ones.
    Linkable(Box<Linkable>),
}

/// An entry of an inode with more than one link, as a reader built it.
struct Linkable {
    /// The inode's device and number.
    inode: (u64, u64),
    /// The header of the entry (its metadata), for a link entry.
    header: Header,
    /// Its name in the archive.
    name: PathBuf,
    /// The whole entry: attributes, header and data.
    pieces: Vec<Piece>,
}

/// Byte buffers whose bytes are written, for the readers to fill again (no allocation and
/// no cross-thread free per file).
#[derive(Default)]
struct Buffers(Mutex<Vec<AlignedBuf>>);

impl Buffers {
    fn take(&self) -> AlignedBuf {
        lock(&self.0)
            .pop()
            .unwrap_or_else(|| AlignedBuf::with_capacity(PIECE_BYTES))
    }

    fn give(&self, mut buffer: AlignedBuf) {
        if buffer.capacity() <= 2 * PIECE_BYTES {
            buffer.clear();
            let mut pool = lock(&self.0);
            if pool.len() < POOLED_BUFFERS {
                pool.push(buffer);
            }
        }
    }
}

/// Walks the source (whose metadata is `meta`) depth-first in name order, numbering entries
/// for the readers.
fn walk(meta: Metadata, jobs: SyncSender<Vec<Job>>, shared: &Shared) -> Result<()> {
    let mut batch = Vec::with_capacity(JOB_BATCH);
    if walk_into(meta, &jobs, &mut batch, shared)? && !batch.is_empty() {
        send_batch(&jobs, batch, shared);
    }
    Ok(())
}

/// Queues a batch for the readers; false when the run stops first.
fn send_batch(jobs: &SyncSender<Vec<Job>>, batch: Vec<Job>, shared: &Shared) -> bool {
    let mut batch = batch;
    loop {
        match jobs.try_send(batch) {
            Ok(()) => return true,
            Err(TrySendError::Disconnected(_)) => return false,
            Err(TrySendError::Full(back)) => {
                if !shared.keep_going() {
                    return false;
                }
                batch = back;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

/// The walk proper; false when it stopped early. Only directories are stat-ed here
/// (through the descriptor they are listed by); every other entry goes by the type its
/// directory listing gave, and its reader stats it.
fn walk_into(
    meta: Metadata,
    jobs: &SyncSender<Vec<Job>>,
    batch: &mut Vec<Job>,
    shared: &Shared,
) -> Result<bool> {
    let mut seq = 0u64;
    let mut send = |job: Job| -> bool {
        batch.push(job);
        if batch.len() < JOB_BATCH {
            return true;
        }
        let full = std::mem::replace(batch, Vec::with_capacity(JOB_BATCH));
        send_batch(jobs, full, shared)
    };
    let children = list_dir(Path::new("."), shared)?.map_or_else(Vec::new, |(_, c)| c);
    if !send(Job {
        seq,
        name: PathBuf::from("./"),
        kind: meta.file_type(),
        meta: Some(meta),
    }) {
        return Ok(false);
    }
    seq += 1;
    // Each frame: a directory's archive name and remaining children (reversed).
    let mut stack = vec![(PathBuf::new(), children)];
    while let Some((name, children)) = stack.last_mut() {
        let Some((child, kind)) = children.pop() else {
            stack.pop();
            continue;
        };
        if !shared.keep_going() {
            return Ok(false);
        }
        let child_name = name.join(&child);
        if kind.is_socket() {
            warn!(path = %shared.path_of(&child_name).display(), "socket ignored (archives cannot hold sockets)");
            continue;
        }
        let mut meta = None;
        if kind.is_dir() {
            let Some((dir_meta, grandchildren)) = list_dir(&child_name, shared)? else {
                continue;
            };
            meta = Some(dir_meta);
            stack.push((child_name.clone(), grandchildren));
        }
        if !send(Job {
            seq,
            name: child_name,
            kind,
            meta,
        }) {
            return Ok(false);
        }
        seq += 1;
    }
    Ok(true)
}

/// The metadata of the directory of archive name `rel` and its entries with their types,
/// in reverse name order; `None`, with a warning, when it was removed or replaced
/// meanwhile. Listed through a descriptor opened below the source, so a directory swapped
/// for a link is never followed.
fn list_dir(rel: &Path, shared: &Shared) -> Result<Option<(Metadata, Vec<Listed>)>> {
    let dir = || shared.path_of(rel);
    let opened = shared
        .open_beneath(rel, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
        .and_then(|fd| Ok((fd.metadata()?, fs::read_dir(fd_path(&fd))?, fd)));
    let (meta, reader, _fd) = match opened {
        Ok(r) => r,
        Err(e) if e.kind() == ErrorKind::NotFound || changed_meanwhile(&e) => {
            warn!(path = %dir().display(), error = %e, "directory removed, replaced or another filesystem's mount point; not archived");
            shared.warned();
            return Ok(None);
        }
        Err(e) => return Err(Error::io("read directory", dir(), e)),
    };
    let mut children = Vec::new();
    for item in reader {
        let item = item.map_err(|e| Error::io("read directory", dir(), e))?;
        // The listing's own type; a stat relative to the listed descriptor (no symlink
        // followed) only where the filesystem gives none.
        match item.file_type() {
            Ok(kind) => children.push((item.file_name(), kind)),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                warn!(path = %dir().join(item.file_name()).display(), "file removed before it was read");
                shared.warned();
            }
            Err(e) => return Err(Error::io("stat", dir().join(item.file_name()), e)),
        }
    }
    children.sort_unstable_by(|a, b| b.0.cmp(&a.0));
    Ok(Some((meta, children)))
}

/// A directory entry as listed: its name and type.
type Listed = (std::ffi::OsString, fs::FileType);

/// A reader thread: turns batches of walked entries into archive segments until the walk
/// ends or the run stops.
fn read_entries(jobs: Arc<Mutex<Receiver<Vec<Job>>>>, done: Sender<Segment>, shared: &Shared) {
    let mut assembler = Assembler::new(shared, done);
    loop {
        if shared.cancelled() {
            return;
        }
        let batch = match lock(&jobs).recv() {
            Ok(batch) => batch,
            Err(_) => return,
        };
        let Some(first) = batch.first().map(|job| job.seq) else {
            continue;
        };
        assembler.segment = Segment::new(first);
        for job in batch {
            let seq = job.seq;
            match assembler.append(job) {
                Ok(Appended::Entry) => assembler.segment.entries += 1,
                Ok(Appended::LeftOut) => {}
                Ok(Appended::Stopped) => return,
                Err(e) => {
                    shared.fail(e);
                    return;
                }
            }
            assembler.segment.end = seq + 1;
            if assembler.builder.get_ref().len() >= PIECE_BYTES {
                assembler.cut();
            }
        }
        let end = assembler.segment.end;
        let segment = assembler.take(end);
        if assembler.done.send(segment).is_err() {
            return;
        }
    }
}

/// What became of a walked entry.
enum Appended {
    /// It is in the segment.
    Entry,
    /// It vanished or was replaced after the walk (a warning says so).
    LeftOut,
    /// The run stopped.
    Stopped,
}

/// A reader's segment in the making, and the tar builder its bytes go through.
struct Assembler<'a> {
    shared: &'a Shared,
    /// Where finished segments go (to the writer).
    done: Sender<Segment>,
    /// Writes into the segment's current bytes piece. (Dropping it appends the end of an
    /// archive to a buffer nobody reads.)
    builder: Builder<AlignedBuf>,
    segment: Segment,
}

impl<'a> Assembler<'a> {
    fn new(shared: &'a Shared, done: Sender<Segment>) -> Self {
        Self {
            shared,
            done,
            builder: Builder::new(shared.buffers.take()),
            segment: Segment::new(0),
        }
    }

    /// Ends the current bytes piece.
    fn cut(&mut self) {
        if !self.builder.get_ref().is_empty() {
            let bytes = std::mem::replace(self.builder.get_mut(), self.shared.buffers.take());
            self.segment.pieces.push(Piece::Bytes(bytes));
        }
    }

    /// The segment built so far; the next one starts at walk number `start`.
    fn take(&mut self, start: u64) -> Segment {
        self.cut();
        std::mem::replace(&mut self.segment, Segment::new(start))
    }

    /// Takes window room for entry `seq` of metadata `meta`, before anything of it is read.
    /// When there is none now, what is ready goes to the writer first (it may need it to
    /// move on); false when the run stops while waiting.
    fn admit(&mut self, seq: u64, meta: &Metadata) -> bool {
        let cost = cost_of(meta);
        let window = &self.shared.window;
        if !window.try_acquire(seq, cost) {
            let ready = self.take(seq);
            if ready.end > ready.start && self.done.send(ready).is_err() {
                return false;
            }
            if !window.acquire(seq, cost, &self.shared.cancel) {
                return false;
            }
        }
        self.segment.cost += cost;
        true
    }

    /// Appends one walked entry: its pax attributes, header and data (a large file's data
    /// is left for the writer to stream). A non-directory with more than one link goes as
    /// a [`Piece::Linkable`], for the writer to turn into a link to the first path of its
    /// inode in walk order when that came before.
    fn append(&mut self, job: Job) -> Result<Appended> {
        let shared = self.shared;
        let path = || shared.path_of(&job.name);
        let left_out = |why: &str| {
            warn!(path = %path().display(), "{why}; not archived");
            shared.warned();
            Ok(Appended::LeftOut)
        };
        let attrs_failed = |e: io::Error| Error::io("read extended attributes", path(), e);
        let fail = |e: io::Error| Error::io("write archive entry", &job.name, e);
        let kind = job.kind;
        if kind.is_file() {
            let Some((mut file, meta)) = open_file(&job, shared)? else {
                return Ok(Appended::LeftOut);
            };
            if (meta.dev(), meta.ino()) == shared.own {
                return left_out("the archive itself lies in the source");
            }
            if !self.admit(job.seq, &meta) {
                return Ok(Appended::Stopped);
            }
            let mark = self.linkable_start(&meta);
            let xattrs = read_xattrs(&job.name, Some(&file)).map_err(attrs_failed)?;
            self.pax(&xattrs).map_err(fail)?;
            let size = meta.len();
            let mut header = header_of(&meta);
            header.set_entry_type(EntryType::Regular);
            set_number(
                &mut header,
                size,
                |h| &mut h.as_old_mut().size,
                Header::set_size,
            );
            self.append_header(&mut header, &job.name).map_err(fail)?;
            if size <= SMALL_FILE_MAX {
                // Read in place (no zeroing first), then padded; what a file that shrank
                // leaves unread is zeros too.
                let out = self.builder.get_mut();
                let start = out.len();
                let end = start + size.next_multiple_of(512) as usize;
                out.reserve(end - start);
                let got = out
                    .read_from(&mut file, size)
                    .map_err(|e| Error::io("read", path(), e))?;
                out.resize(end, 0);
                if (got as u64) < size {
                    warn!(path = %path().display(), size, read = got, "file shrank while it was read; padded with zeros");
                    shared.warned();
                }
            } else {
                self.cut();
                self.segment.pieces.push(Piece::Stream {
                    file,
                    size,
                    name: job.name.clone(),
                });
            }
            self.linkable_end(mark, &meta, &job.name);
        } else if kind.is_dir() {
            let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY;
            let Some(meta) = &job.meta else {
                return Err(Error::Internal(format!(
                    "{} walked without its metadata",
                    path().display()
                )));
            };
            let Some(dir) = open_walked(&job, &job.name, flags, Some(meta), shared)? else {
                return Ok(Appended::LeftOut);
            };
            if !self.admit(job.seq, meta) {
                return Ok(Appended::Stopped);
            }
            let xattrs = read_xattrs(&job.name, Some(&dir)).map_err(attrs_failed)?;
            self.pax(&xattrs).map_err(fail)?;
            let mut header = header_of(meta);
            header.set_entry_type(EntryType::Directory);
            self.append_header(&mut header, &job.name).map_err(fail)?;
        } else {
            let entry_type = if kind.is_symlink() {
                EntryType::Symlink
            } else if kind.is_fifo() {
                EntryType::Fifo
            } else if kind.is_char_device() {
                EntryType::Char
            } else if kind.is_block_device() {
                EntryType::Block
            } else {
                return left_out("file of an unknown type");
            };
            // Reached through its parent's descriptor, opened below the source, and never
            // opened itself (a fifo or a device must not be).
            let parent = job.name.parent().unwrap_or(Path::new(""));
            let flags = OFlag::O_PATH | OFlag::O_DIRECTORY;
            let Some(parent) = open_walked(&job, parent, flags, None, shared)? else {
                return Ok(Appended::LeftOut);
            };
            let Some(leaf) = job.name.file_name() else {
                return Err(Error::Internal(format!(
                    "{} has no name in the archive",
                    path().display()
                )));
            };
            // The descriptor's path as a directory component: followed to that very
            // directory; the leaf itself is never followed (l* calls, readlink).
            let pinned = fd_path(&parent).join(leaf);
            let gone = "removed before it was read";
            let meta = unless_gone(fs::symlink_metadata(&pinned))
                .map_err(|e| Error::io("stat", path(), e))?;
            let meta = match meta {
                Some(meta) if meta.file_type() == kind => meta,
                Some(_) => return left_out("replaced after the walk"),
                None => return left_out(gone),
            };
            if !self.admit(job.seq, &meta) {
                return Ok(Appended::Stopped);
            }
            let Some(xattrs) = unless_gone(read_xattrs(&pinned, None)).map_err(attrs_failed)?
            else {
                return left_out(gone);
            };
            let target = if kind.is_symlink() {
                let read = unless_gone(fs::read_link(&pinned));
                match read.map_err(|e| Error::io("read link", path(), e))? {
                    Some(target) => Some(target),
                    None => return left_out(gone),
                }
            } else {
                None
            };
            let mark = self.linkable_start(&meta);
            self.pax(&xattrs).map_err(fail)?;
            let mut header = header_of(&meta);
            header.set_entry_type(entry_type);
            if let Some(target) = target {
                self.builder
                    .append_link(&mut header, &job.name, &target)
                    .map_err(fail)?;
            } else {
                if kind.is_char_device() || kind.is_block_device() {
                    let rdev = meta.rdev();
                    header
                        .set_device_major(nix::sys::stat::major(rdev) as u32)
                        .map_err(fail)?;
                    header
                        .set_device_minor(nix::sys::stat::minor(rdev) as u32)
                        .map_err(fail)?;
                }
                self.append_header(&mut header, &job.name).map_err(fail)?;
            }
            self.linkable_end(mark, &meta, &job.name);
        }
        Ok(Appended::Entry)
    }

    /// Appends `header` (of an entry without data, or whose data follows) for `name`, with
    /// the bytes [`Builder::append_data`] would write: the name in the header, or a GNU
    /// long-name entry first when it does not fit.
    fn append_header(&mut self, header: &mut Header, name: &Path) -> io::Result<()> {
        if header.set_path(name).is_err() {
            return self.builder.append_data(header, name, io::empty());
        }
        set_cksum(header);
        self.builder.get_mut().extend_from_slice(header.as_bytes());
        Ok(())
    }

    /// Where the pieces of an entry of `meta` start, when it has more than one link (it
    /// may turn out to be a later path of an inode already archived).
    fn linkable_start(&mut self, meta: &Metadata) -> Option<usize> {
        (meta.nlink() > 1).then(|| {
            self.cut();
            self.segment.pieces.len()
        })
    }

    /// Wraps the pieces appended since `mark` (from [`Self::linkable_start`]) into one
    /// [`Piece::Linkable`].
    fn linkable_end(&mut self, mark: Option<usize>, meta: &Metadata, name: &Path) {
        let Some(mark) = mark else {
            return;
        };
        self.cut();
        let pieces = self.segment.pieces.split_off(mark);
        self.segment.pieces.push(Piece::Linkable(Box::new(Linkable {
            inode: (meta.dev(), meta.ino()),
            header: header_of(meta),
            name: name.to_path_buf(),
            pieces,
        })));
    }

    /// Appends the pax records of an entry's extended attributes, if it has any.
    fn pax(&mut self, xattrs: &[(String, Vec<u8>)]) -> io::Result<()> {
        if xattrs.is_empty() {
            return Ok(());
        }
        self.builder
            .append_pax_extensions(xattrs.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
    }
}

/// A header with `meta`'s permission bits, numeric owners and whole-second mtime; its
/// size 0 until set. (The same bytes as the `tar` crate's setters, which format each
/// number through a `String`: this runs for every entry.)
fn header_of(meta: &Metadata) -> Header {
    let mut header = Header::new_gnu();
    let mode = u64::from(meta.mode() & 0o7777);
    set_number(
        &mut header,
        mode,
        |h| &mut h.as_old_mut().mode,
        |h, v| h.set_mode(v as u32),
    );
    set_number(
        &mut header,
        meta.uid().into(),
        |h| &mut h.as_old_mut().uid,
        Header::set_uid,
    );
    set_number(
        &mut header,
        meta.gid().into(),
        |h| &mut h.as_old_mut().gid,
        Header::set_gid,
    );
    let mtime = u64::try_from(meta.mtime()).unwrap_or(0);
    set_number(
        &mut header,
        mtime,
        |h| &mut h.as_old_mut().mtime,
        Header::set_mtime,
    );
    set_number(
        &mut header,
        0,
        |h| &mut h.as_old_mut().size,
        Header::set_size,
    );
    header
}

/// Writes `value` into the numeric `field` of `header`: as zero-padded octal digits and a
/// NUL when it fits, else through `slow` (the `tar` crate's setter, which switches to
/// GNU's binary form).
fn set_number(
    header: &mut Header,
    value: u64,
    field: impl FnOnce(&mut Header) -> &mut [u8],
    slow: impl FnOnce(&mut Header, u64),
) {
    let digits = field(header);
    let Some((nul, digits)) = digits.split_last_mut() else {
        return;
    };
    if value.checked_shr(3 * digits.len() as u32).unwrap_or(0) != 0 {
        return slow(header, value);
    }
    *nul = 0;
    let mut rest = value;
    for digit in digits.iter_mut().rev() {
        *digit = b'0' + (rest & 7) as u8;
        rest >>= 3;
    }
}

/// Sets the header's checksum as [`Header::set_cksum`] does: the sum of its bytes, the
/// checksum field counted as spaces.
fn set_cksum(header: &mut Header) {
    let sum: u64 = header.as_bytes().iter().map(|&b| u64::from(b)).sum();
    let field: u64 = header.as_old().cksum.iter().map(|&b| u64::from(b)).sum();
    let cksum = sum - field + 8 * u64::from(b' ');
    set_number(
        header,
        cksum,
        |h| &mut h.as_old_mut().cksum,
        |h, _| h.set_cksum(),
    );
}

/// Whether this kernel has `openat2` with `RESOLVE_BENEATH` (Linux 5.6 and later), which
/// the writer needs to read a tree its users may change.
pub fn beneath_supported() -> bool {
    static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SUPPORTED.get_or_init(|| match File::open("/") {
        Ok(root) => {
            !matches!(open_beneath(&root, Path::new("."), OFlag::O_PATH), Err(e) if e.raw_os_error() == Some(libc::ENOSYS))
        }
        Err(_) => false,
    })
}

/// Opens the source directory itself, refusing a symbolic link; a descriptor to open
/// below, never read through.
fn open_root(source: &Path) -> Result<File> {
    open_dir_nofollow(source).map_err(|e| Error::io("open", source, io::Error::from(e)))
}

/// Whether `dir` is on a `nodev` mount.
fn on_nodev(dir: &File) -> bool {
    nix::sys::statvfs::fstatvfs(dir).is_ok_and(|s| s.flags().contains(FsFlags::ST_NODEV))
}

/// The descriptor to open the source's entries below, and whether no device node can be
/// opened through it: true on a `nodev` mount, and true through a private `nodev` copy of
/// the source's mount where the process may make one ([`nodev_copy`]); else `root` as it
/// is, and false.
fn nodev_root(root: File) -> (File, bool) {
    if on_nodev(&root) {
        return (root, true);
    }
    match nodev_copy(&root) {
        Ok(copy) => (copy, true),
        Err(_) => (root, false),
    }
}

/// `openat2(root, rel, flags | O_CLOEXEC, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
/// RESOLVE_NO_XDEV)`: nothing outside `root`'s own mount either.
fn open_beneath(root: &File, rel: &Path, flags: OFlag) -> io::Result<File> {
    let how = OpenHow::new().flags(flags | OFlag::O_CLOEXEC).resolve(
        ResolveFlag::RESOLVE_BENEATH
            | ResolveFlag::RESOLVE_NO_SYMLINKS
            | ResolveFlag::RESOLVE_NO_XDEV,
    );
    openat2(root, rel, how)
        .map(File::from)
        .map_err(io::Error::from)
}

/// `result`, with `None` for an entry that no longer exists (removed after the walk).
fn unless_gone<T>(result: io::Result<T>) -> io::Result<Option<T>> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// `file` when it is still the inode of `walked` (same type, device and inode).
fn same_inode(file: File, walked: &Metadata) -> io::Result<File> {
    let now = file.metadata()?;
    if now.file_type() == walked.file_type()
        && (now.dev(), now.ino()) == (walked.dev(), walked.ino())
    {
        Ok(file)
    } else {
        Err(io::Error::from_raw_os_error(libc::ESTALE))
    }
}

/// `file` and its metadata when it is a regular file (else `ESTALE`: something else took
/// the place of the file the walk listed).
fn regular(file: File) -> io::Result<(File, Metadata)> {
    let meta = file.metadata()?;
    if meta.is_file() {
        Ok((file, meta))
    } else {
        Err(io::Error::from_raw_os_error(libc::ESTALE))
    }
}

/// Errors of an entry replaced under the walk: a symbolic link (`ELOOP`) or an escape
/// (`EXDEV`, also another filesystem's mount point) where a directory was, something that
/// is not a directory (`ENOTDIR`), another inode or type (`ESTALE`, from [`same_inode`]
/// and [`regular`]).
fn changed_meanwhile(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ELOOP | libc::EXDEV | libc::ENOTDIR | libc::ESTALE)
    )
}

/// `opened` (what was opened below the source for `job`), or `None` with a warning when
/// the entry vanished or was replaced after the walk.
fn walked_or_left_out<T>(job: &Job, opened: io::Result<T>, shared: &Shared) -> Result<Option<T>> {
    match opened {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == ErrorKind::NotFound || changed_meanwhile(&e) => {
            warn!(path = %shared.path_of(&job.name).display(), error = %e, "removed, replaced or another filesystem's mount point; not archived");
            shared.warned();
            Ok(None)
        }
        Err(e) => Err(Error::io("open", shared.path_of(&job.name), e)),
    }
}

/// Opens `rel` below the source for `job` (its own entry, or its parent directory); with
/// `walked`, the opened inode must be that one. `None`, with a warning, when the entry
/// vanished or was replaced after the walk.
fn open_walked(
    job: &Job,
    rel: &Path,
    flags: OFlag,
    walked: Option<&Metadata>,
    shared: &Shared,
) -> Result<Option<File>> {
    let opened = shared.open_beneath(rel, flags).and_then(|f| match walked {
        Some(meta) => same_inode(f, meta),
        None => Ok(f),
    });
    walked_or_left_out(job, opened, shared)
}

/// Opens the walked regular file of `job` for reading, with its metadata as of the open;
/// `None`, with a warning, when it vanished or something else took its place after the
/// walk. A device or fifo swapped in after the walk is never opened (opening one can act:
/// a watchdog starts, a tape rewinds): where no device can be opened below the root, the
/// file is opened directly (non-blocking, in case a fifo took its place) and checked
/// after; elsewhere an `O_PATH` descriptor, which opens nothing, is checked to be a
/// regular file first, and the file reopened through it.
fn open_file(job: &Job, shared: &Shared) -> Result<Option<(File, Metadata)>> {
    if shared.nodev {
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK;
        let opened = shared.open_beneath(&job.name, flags).and_then(regular);
        return walked_or_left_out(job, opened, shared);
    }
    let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW;
    let opened = shared.open_beneath(&job.name, flags).and_then(regular);
    let Some((pinned, meta)) = walked_or_left_out(job, opened, shared)? else {
        return Ok(None);
    };
    // The descriptor's magic link is that very inode, now known to be a regular file.
    File::open(fd_path(&pinned))
        .map(|file| Some((file, meta)))
        .map_err(|e| Error::io("open", shared.path_of(&job.name), e))
}

/// The extended attributes of `path` (not following a symlink; through `open` when
/// given, which saves a path lookup, and then `path` only names it in messages) as pax
/// records, by name.
fn read_xattrs(path: &Path, open: Option<&File>) -> io::Result<Vec<(String, Vec<u8>)>> {
    use xattr::FileExt;
    let listed = match open {
        Some(file) => file.list_xattr(),
        None => xattr::list(path),
    };
    let names = match listed {
        Ok(names) => names,
        Err(e) if unsupported(&e) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut records = Vec::new();
    for name in names {
        let Some(text) = name.to_str() else {
            warn!(path = %path.display(), attribute = ?name, "extended attribute with a non-UTF-8 name not archived");
            continue;
        };
        let value = match open {
            Some(file) => file.get_xattr(&name),
            None => xattr::get(path, &name),
        };
        match value {
            Ok(Some(value)) => {
                // ACLs also go as the text records `tar --acls` restores (a restore passes
                // --acls so that archives GNU tar wrote keep theirs, and then sets ACLs from
                // these records only).
                let acl_key = match text {
                    "system.posix_acl_access" => Some("SCHILY.acl.access"),
                    "system.posix_acl_default" => Some("SCHILY.acl.default"),
                    _ => None,
                };
                if let Some(key) = acl_key {
                    match acl_text(&value) {
                        Some(acl) => records.push((key.to_string(), acl.into_bytes())),
                        None => {
                            warn!(path = %path.display(), attribute = text, "ACL in an unknown format: kept as an extended attribute only");
                        }
                    }
                }
                records.push((pax_xattr_key(text), value));
            }
            Ok(None) => {}
            Err(e) if unsupported(&e) => {}
            Err(e) => return Err(e),
        }
    }
    records.sort_unstable();
    Ok(records)
}

/// The text form (`user::rw-,user:1234:r--,group::r--,mask::r--,other::---`, numeric ids)
/// of a POSIX ACL in the kernel's extended-attribute form (a little-endian version 2
/// header, then 8-byte entries: tag, permissions, id); `None` when it is not one.
pub fn acl_text(raw: &[u8]) -> Option<String> {
    let (version, entries) = raw.split_at_checked(4)?;
    if version != 2u32.to_le_bytes() || entries.is_empty() || entries.len() % 8 != 0 {
        return None;
    }
    let mut parts = Vec::with_capacity(entries.len() / 8);
    for entry in entries.chunks_exact(8) {
        let tag = u16::from_le_bytes([entry[0], entry[1]]);
        let perm = u16::from_le_bytes([entry[2], entry[3]]);
        let id = u32::from_le_bytes([entry[4], entry[5], entry[6], entry[7]]);
        if perm > 7 {
            return None;
        }
        let rwx: String = [(4, 'r'), (2, 'w'), (1, 'x')]
            .iter()
            .map(|(bit, c)| if perm & bit != 0 { *c } else { '-' })
            .collect();
        parts.push(match tag {
            0x01 => format!("user::{rwx}"),
            0x02 => format!("user:{id}:{rwx}"),
            0x04 => format!("group::{rwx}"),
            0x08 => format!("group:{id}:{rwx}"),
            0x10 => format!("mask::{rwx}"),
            0x20 => format!("other::{rwx}"),
            _ => return None,
        });
    }
    Some(parts.join(","))
}

fn unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::ENODATA))
}

/// The pax keyword of attribute `name`: `%` and `=` percent-encoded, as GNU tar writes them.
fn pax_xattr_key(name: &str) -> String {
    let mut key = String::with_capacity(13 + name.len());
    key.push_str("SCHILY.xattr.");
    for c in name.chars() {
        match c {
            '%' => key.push_str("%25"),
            '=' => key.push_str("%3D"),
            c => key.push(c),
        }
    }
    key
}

/// The writer: writes the readers' segments in walk order; returns how many entries.
fn write_segments(
    out: &mut ArchiveOut,
    dest: &Path,
    done: Receiver<Segment>,
    shared: &Shared,
) -> Result<u64> {
    let mut pending: HashMap<u64, Segment> = HashMap::new();
    let mut pieces = PieceWriter {
        dest,
        shared,
        links: HashMap::new(),
        link_entry: Builder::new(shared.buffers.take()),
    };
    let mut next = 0u64;
    let mut entries = 0u64;
    loop {
        let segment = match done.recv_timeout(POLL) {
            Ok(segment) => segment,
            Err(RecvTimeoutError::Timeout) => {
                if !shared.keep_going() {
                    return Ok(entries);
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        pending.insert(segment.start, segment);
        while let Some(segment) = pending.remove(&next) {
            if !shared.keep_going() {
                return Ok(entries);
            }
            for piece in segment.pieces {
                if !pieces.write(out, piece)? {
                    return Ok(entries);
                }
            }
            entries += segment.entries;
            next = segment.end;
            shared.window.release(segment.cost, next);
        }
    }
    if !pending.is_empty() && !shared.cancelled() {
        return Err(Error::Internal(format!(
            "archive writer: entry {next} never arrived"
        )));
    }
    Ok(entries)
}

/// The writer's state for writing pieces.
struct PieceWriter<'a> {
    dest: &'a Path,
    shared: &'a Shared,
    /// The archive name of the first path written of each inode with several links.
    links: HashMap<(u64, u64), PathBuf>,
    /// Builds hard link entries. (Dropping it appends the end of an archive to a buffer
    /// nobody reads.)
    link_entry: Builder<AlignedBuf>,
}

impl PieceWriter<'_> {
    /// Writes one piece; false when the run stopped first.
    fn write(&mut self, out: &mut ArchiveOut, piece: Piece) -> Result<bool> {
        match piece {
            Piece::Bytes(bytes) => {
                out.put(bytes)
                    .map_err(|e| Error::io("write", self.dest, e))?;
            }
            Piece::Stream { file, size, name } => {
                return stream(out, file, size, &name, self.shared);
            }
            Piece::Linkable(entry) => match self.links.entry(entry.inode) {
                MapEntry::Occupied(first) => {
                    // The attributes belong to the inode and travel with its first name.
                    let mut header = entry.header;
                    header.set_entry_type(EntryType::Link);
                    header.set_size(0);
                    let fail = |e: io::Error| Error::io("write archive entry", &entry.name, e);
                    self.link_entry
                        .append_link(&mut header, &entry.name, first.get())
                        .map_err(fail)?;
                    let bytes =
                        std::mem::replace(self.link_entry.get_mut(), self.shared.buffers.take());
                    out.put(bytes)
                        .map_err(|e| Error::io("write", self.dest, e))?;
                }
                MapEntry::Vacant(slot) => {
                    slot.insert(entry.name);
                    for piece in entry.pieces {
                        if !self.write(out, piece)? {
                            return Ok(false);
                        }
                    }
                }
            },
        }
        Ok(true)
    }
}

/// Copies a large file's `size` bytes (its header already written) and its padding, in
/// [`CHUNK`]s read into the pool's buffers; false when the run stopped first.
fn stream(
    out: &mut ArchiveOut,
    mut file: File,
    size: u64,
    name: &Path,
    shared: &Shared,
) -> Result<bool> {
    let mut left = size;
    while left > 0 {
        if !shared.keep_going() {
            return Ok(false);
        }
        let want = left.min(CHUNK as u64) as usize;
        let mut chunk = shared.buffers.take();
        chunk.reserve(want + 512);
        let got = chunk
            .read_from(&mut file, want as u64)
            .map_err(|e| Error::io("read", name, e))?;
        if got < want {
            warn!(name = %name.display(), size, "file shrank while it was read; padded with zeros");
            shared.warned();
        }
        left -= want as u64;
        // The last chunk carries the entry's padding to a whole block.
        let end = if left == 0 {
            want.next_multiple_of(512)
        } else {
            want
        };
        chunk.resize(end, 0);
        out.put(chunk)
            .map_err(|e| Error::io("write archive entry", name, e))?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn acls_read_as_their_text_form() {
        let mut raw = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in [
            (1u16, 6u16, u32::MAX),
            (2, 4, 1234),
            (4, 5, u32::MAX),
            (8, 7, 55),
            (0x10, 7, u32::MAX),
            (0x20, 0, u32::MAX),
        ] {
            raw.extend(tag.to_le_bytes());
            raw.extend(perm.to_le_bytes());
            raw.extend(id.to_le_bytes());
        }
        assert_eq!(
            acl_text(&raw).as_deref(),
            Some("user::rw-,user:1234:r--,group::r-x,group:55:rwx,mask::rwx,other::---")
        );
        assert_eq!(acl_text(&raw[..raw.len() - 1]), None);
        assert_eq!(acl_text(&raw[..4]), None);
        let mut bad_version = raw.clone();
        bad_version[0] = 1;
        assert_eq!(acl_text(&bad_version), None);
        let mut bad_tag = raw.clone();
        bad_tag[4] = 0x40;
        assert_eq!(acl_text(&bad_tag), None);
    }

    #[test]
    fn attribute_names_are_percent_encoded_like_gnu_tar() {
        assert_eq!(pax_xattr_key("user.a"), "SCHILY.xattr.user.a");
        assert_eq!(pax_xattr_key("user.a=b%"), "SCHILY.xattr.user.a%3Db%25");
    }

    /// A numeric header field, and the `tar` crate's setter of it.
    type Field = fn(&mut Header) -> &mut [u8];
    type Setter = fn(&mut Header, u64);

    proptest! {
        #[test]
        fn acl_parsing_never_panics_and_yields_one_part_per_entry(
            raw in prop::collection::vec(any::<u8>(), 0..80),
        ) {
            let mut with_header = 2u32.to_le_bytes().to_vec();
            with_header.extend(&raw);
            for input in [&raw, &with_header] {
                if let Some(text) = acl_text(input) {
                    prop_assert_eq!(text.split(',').count(), (input.len() - 4) / 8);
                }
            }
        }

        #[test]
        fn headers_are_the_bytes_the_tar_crate_writes(
            mode in 0u32..0o10000,
            uid in prop_oneof![0u64..0o10000000, any::<u32>().prop_map(u64::from)],
            gid in prop_oneof![0u64..0o10000000, any::<u32>().prop_map(u64::from)],
            mtime in prop_oneof![0u64..0o100000000000, any::<u64>()],
            size in prop_oneof![0u64..0o100000000000, any::<u64>()],
            name in "[a-z0-9._/-]{1,120}",
        ) {
            let (mut fast, mut slow) = (Header::new_gnu(), Header::new_gnu());
            let fields: [(u64, Field, Setter); 5] = [
                (mode.into(), |h| &mut h.as_old_mut().mode, |h, v| h.set_mode(v as u32)),
                (uid, |h| &mut h.as_old_mut().uid, Header::set_uid),
                (gid, |h| &mut h.as_old_mut().gid, Header::set_gid),
                (mtime, |h| &mut h.as_old_mut().mtime, Header::set_mtime),
                (size, |h| &mut h.as_old_mut().size, Header::set_size),
            ];
            for (value, field, setter) in fields {
                set_number(&mut fast, value, field, setter);
                setter(&mut slow, value);
            }
            fast.set_entry_type(EntryType::Regular);
            slow.set_entry_type(EntryType::Regular);
            let mut built = Builder::new(Vec::new());
            let ours = {
                let shared = shared_on(Path::new("/"));
                let mut assembler = Assembler::new(&shared, mpsc::channel().0);
                let appended = assembler.append_header(&mut fast, Path::new(&name));
                appended.map(|()| assembler.builder.get_ref().to_vec())
            };
            let theirs = built.append_data(&mut slow, &name, io::empty());
            prop_assert_eq!(ours.is_ok(), theirs.is_ok());
            if ours.is_ok() {
                prop_assert_eq!(ours.unwrap(), std::mem::take(built.get_mut()));
            }
        }

        #[test]
        fn the_window_admits_the_head_and_nothing_beyond_its_bounds(
            used in 0u64..(2 * WINDOW_BYTES),
            next in 0u64..1_000_000,
            ahead in 0u64..(2 * WINDOW_ENTRIES),
            cost in 0u64..(2 * WINDOW_BYTES),
        ) {
            prop_assert!(admits(used, next, next, cost));
            let seq = next + ahead;
            prop_assert_eq!(
                admits(used, next, seq, cost),
                ahead == 0 || (used + cost <= WINDOW_BYTES && ahead < WINDOW_ENTRIES)
            );
        }
    }

    #[test]
    fn held_bytes_are_given_back() {
        let window = Window::default();
        let cancel = AtomicBool::new(false);
        assert!(window.acquire(0, 10, &cancel));
        assert!(window.acquire(1, WINDOW_BYTES - 10, &cancel));
        assert_eq!(*lock(&window.state), (WINDOW_BYTES, 0));
        window.release(10, 1);
        window.release(WINDOW_BYTES - 10, 2);
        assert_eq!(*lock(&window.state), (0, 2));
    }

    #[test]
    fn more_entries_than_the_window_come_out_complete_and_in_walk_order() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("src");
        let count = WINDOW_ENTRIES as usize + 3000;
        for i in 0..count {
            let sub = source.join(format!("d{:02}", i % 40));
            if i < 40 {
                fs::create_dir_all(&sub).unwrap();
            }
            fs::write(sub.join(format!("f{i:05}")), i.to_string()).unwrap();
        }
        // Streamed by the writer, its last chunk short.
        let large = SMALL_FILE_MAX as usize + 2 * CHUNK + 5;
        fs::write(source.join("large"), vec![9u8; large]).unwrap();
        // Hard links: their entries are written as buffers of one block.
        let links = 50;
        fs::create_dir(source.join("links")).unwrap();
        for i in 0..links {
            let first = source
                .join(format!("d{:02}", i % 40))
                .join(format!("f{i:05}"));
            fs::hard_link(first, source.join("links").join(format!("l{i:02}"))).unwrap();
        }
        let archive = dir.path().join("a.tar");
        let mut limits = WriteLimits::new(Duration::from_secs(600), Arc::default());
        limits.readers = 3;
        let written =
            write_archive(&source, &archive, Some(ChecksumKind::Blake3), &limits).unwrap();
        // Written through the page cache, or copied into staging buffers: the same bytes.
        for writes in [Writes::Buffered, Writes::Staged] {
            let other = dir.path().join(format!("{writes:?}.tar"));
            let kind = Some(ChecksumKind::Blake3);
            let again = write_archive_as(&source, &other, kind, &limits, writes).unwrap();
            assert_eq!(again, written, "{writes:?}");
            assert!(fs::read(&other).unwrap() == fs::read(&archive).unwrap());
        }
        assert_eq!(written.entries as usize, 1 + 40 + count + 1 + 1 + links);
        assert_eq!(
            written.checksum.unwrap(),
            super::super::checksum::hash_file(ChecksumKind::Blake3, &archive).unwrap()
        );
        let mut names = Vec::new();
        let mut reader = tar::Archive::new(File::open(&archive).unwrap());
        for entry in reader.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            let mut body = Vec::new();
            entry.read_to_end(&mut body).unwrap();
            if let Some(i) = name
                .rsplit_once("/f")
                .map(|(_, i)| i.parse::<usize>().unwrap())
            {
                assert_eq!(body, i.to_string().as_bytes(), "{name}");
            } else if name == "large" {
                assert_eq!(body, vec![9u8; large]);
            }
            names.push(name);
        }
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted, "entries follow the walk (name) order");
        assert_eq!(names.len() as u64, written.entries);
    }

    fn shared_on(source: &Path) -> Shared {
        Shared {
            root: open_root(source).unwrap(),
            source: source.to_path_buf(),
            nodev: false,
            own: (0, 0),
            cancel: Arc::default(),
            error: Mutex::new(None),
            window: Window::default(),
            warnings: AtomicU64::new(0),
            deadline: None,
            buffers: Buffers::default(),
        }
    }

    #[test]
    fn paths_below_the_source_never_follow_a_link_or_leave_it() {
        if !beneath_supported() {
            panic!("this kernel has no openat2; the engine would use GNU tar");
        }
        let dir = tempfile::tempdir().unwrap();
        let (source, outside) = (dir.path().join("src"), dir.path().join("outside"));
        fs::create_dir_all(source.join("sub")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("secret"), "not yours").unwrap();
        fs::write(source.join("sub").join("mine"), "yours").unwrap();
        std::os::unix::fs::symlink("../outside", source.join("rel")).unwrap();
        std::os::unix::fs::symlink(&outside, source.join("abs")).unwrap();
        let shared = shared_on(&source);
        let read = |rel: &str| shared.open_beneath(Path::new(rel), OFlag::O_RDONLY);
        assert!(read("sub/mine").is_ok());
        for rel in [
            "rel/secret",
            "abs/secret",
            "../outside/secret",
            "sub/../../outside/secret",
        ] {
            let e = read(rel).expect_err(rel);
            assert!(changed_meanwhile(&e), "{rel}: {e}");
        }
        let e = shared
            .open_beneath(Path::new("rel"), OFlag::O_RDONLY | OFlag::O_NOFOLLOW)
            .expect_err("a link as the last component");
        assert!(changed_meanwhile(&e), "{e}");
    }

    /// A walk job for `name` below `source`, as the walk would list it now.
    fn walked(source: &Path, name: &str) -> Job {
        let meta = fs::symlink_metadata(source.join(name)).unwrap();
        Job {
            seq: 0,
            name: PathBuf::from(name),
            kind: meta.file_type(),
            meta: meta.is_dir().then_some(meta),
        }
    }

    /// Appends `job` alone; what became of it and the bytes it added.
    fn append(shared: &Shared, job: Job) -> (Appended, Vec<u8>) {
        let mut assembler = Assembler::new(shared, mpsc::channel().0);
        let appended = assembler.append(job).unwrap();
        (appended, assembler.builder.get_ref().to_vec())
    }

    /// Whether `job` is left out: not added, and not a byte of it in the archive.
    fn left_out(shared: &Shared, job: Job) -> bool {
        let (appended, bytes) = append(shared, job);
        matches!(appended, Appended::LeftOut) && bytes.is_empty()
    }

    #[test]
    fn entries_replaced_after_the_walk_are_left_out_not_followed() {
        // Both ways of opening a file: directly (on a nodev mount) and through O_PATH.
        for nodev in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let (source, outside) = (dir.path().join("src"), dir.path().join("outside"));
            fs::create_dir_all(source.join("d")).unwrap();
            fs::create_dir_all(&outside).unwrap();
            fs::write(outside.join("secret"), "not yours").unwrap();
            fs::write(source.join("f"), "yours").unwrap();
            fs::write(source.join("d").join("inside"), "yours").unwrap();
            let mut shared = shared_on(&source);
            shared.nodev = nodev;
            let (file_job, same_file_job) = (walked(&source, "f"), walked(&source, "f"));
            let dir_job = walked(&source, "d");
            // The user swaps the file for a link to a file outside the volume, and the
            // directory for a link to a directory outside it. (Renamed, not removed: the
            // walked inode stays allocated, so no new file reuses it.)
            fs::rename(source.join("f"), dir.path().join("kept")).unwrap();
            std::os::unix::fs::symlink(outside.join("secret"), source.join("f")).unwrap();
            fs::rename(source.join("d"), dir.path().join("moved")).unwrap();
            std::os::unix::fs::symlink(&outside, source.join("d")).unwrap();
            assert!(left_out(&shared, file_job), "nodev {nodev}");
            assert!(left_out(&shared, dir_job), "nodev {nodev}");
            assert!(list_dir(Path::new("d"), &shared).unwrap().is_none());
            assert_eq!(shared.warnings.load(Ordering::SeqCst), 3, "nodev {nodev}");
            // A file swapped for another regular file goes in as that file now is: its
            // bytes with its own metadata (both read from the one descriptor).
            fs::remove_file(source.join("f")).unwrap();
            fs::write(source.join("f"), "new inode").unwrap();
            fs::set_permissions(source.join("f"), fs::Permissions::from_mode(0o600)).unwrap();
            let (appended, bytes) = append(&shared, same_file_job);
            assert!(matches!(appended, Appended::Entry), "nodev {nodev}");
            let mut archive = tar::Archive::new(&bytes[..]);
            let mut entry = archive.entries().unwrap().next().unwrap().unwrap();
            assert_eq!(entry.header().mode().unwrap(), 0o600);
            let mut body = String::new();
            entry.read_to_string(&mut body).unwrap();
            assert_eq!(body, "new inode", "nodev {nodev}");
            assert_eq!(shared.warnings.load(Ordering::SeqCst), 3, "nodev {nodev}");
        }
    }

    #[test]
    fn no_device_opens_below_the_private_nodev_copy_of_the_source() {
        assert!(
            nix::unistd::Uid::effective().is_root(),
            "this test makes a device node and a mount copy: run it as root"
        );
        let dir = tempfile::tempdir().unwrap();
        let null = dir.path().join("null");
        nix::sys::stat::mknod(
            &null,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(1, 3),
        )
        .unwrap();
        let own = open_root(dir.path()).unwrap();
        assert!(
            !on_nodev(&own),
            "the test directory must not be on a nodev mount"
        );
        assert!(open_beneath(&own, Path::new("null"), OFlag::O_RDONLY).is_ok());
        let (copy, nodev) = nodev_root(open_root(dir.path()).unwrap());
        assert!(nodev);
        let e = open_beneath(&copy, Path::new("null"), OFlag::O_RDONLY).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EACCES), "{e}");
        // Everything else opens as before.
        fs::write(dir.path().join("f"), "yours").unwrap();
        let mut text = String::new();
        open_beneath(&copy, Path::new("f"), OFlag::O_RDONLY)
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "yours");
    }

    #[test]
    fn a_file_swapped_for_a_fifo_after_the_walk_is_never_opened() {
        use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("src");
        fs::create_dir_all(&source).unwrap();
        fs::write(source.join("f"), "yours").unwrap();
        let mut shared = shared_on(&source);
        // Not a nodev mount: a device could take the file's place as well as a fifo.
        shared.nodev = false;
        let job = walked(&source, "f");
        fs::rename(source.join("f"), dir.path().join("kept")).unwrap();
        nix::unistd::mkfifo(
            &source.join("f"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        // inotify reports every open of the fifo but an O_PATH one, which opens nothing.
        let opens = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).unwrap();
        opens
            .add_watch(&source.join("f"), AddWatchFlags::IN_OPEN)
            .unwrap();
        assert!(left_out(&shared, job));
        match opens.read_events() {
            Err(nix::errno::Errno::EAGAIN) => {}
            other => panic!("the fifo was opened: {other:?}"),
        }
        assert_eq!(shared.warnings.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_cancelled_acquire_returns_instead_of_waiting() {
        let window = Window::default();
        let cancel = AtomicBool::new(false);
        assert!(window.acquire(0, WINDOW_BYTES, &cancel));
        cancel.store(true, Ordering::SeqCst);
        // Entry 1 does not fit beside entry 0 and would wait forever.
        assert!(!window.acquire(1, WINDOW_BYTES, &cancel));
    }
}
