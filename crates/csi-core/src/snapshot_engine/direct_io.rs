//! Writing a new file with `O_DIRECT`, so the disk takes the bytes straight from memory
//! (no copy into the page cache, no writeback to start or wait for), by a thread of its own
//! while the caller prepares the next bytes.
//!
//! The bytes come as [`AlignedBuf`]s: their contents start at a [`BLOCK`] boundary in
//! memory. Where the filesystem takes direct writes of [`SEGMENT`]-byte pieces (a probe
//! write says so: ext4 and XFS on disks of 512-byte sectors do), the buffers are written
//! where they lie, many to a `pwritev`, and handed back once written: nothing is copied.
//! Where it wants whole pages (4 KiB-sector disks, Lustre clients without unaligned direct
//! I/O), they are copied into [`STAGING_BYTES`] staging buffers first. A filesystem that
//! refuses `O_DIRECT` (at open or at the probe) gets buffered writes from the caller.
//!
//! Used for snapshot archives, which are written once and not read back soon: the copy
//! into the page cache was a tenth of an archive run's CPU, the copy into staging buffers
//! a twelfth.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Read, Write};
use std::ops::Deref;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::{Scope, ScopedJoinHandle};

use crate::linux::mounter::fd_path;

/// Alignment of every direct write's file offset and of every buffer's start (a page,
/// which covers the logical block size of disks and what Lustre asks).
pub const BLOCK: usize = 4096;
/// The unit of buffers written where they lie: their lengths are multiples of it (a tar
/// block, and the smallest logical block size of disks).
pub const SEGMENT: usize = 512;
/// Bytes per direct write: a staging buffer's size, and how much buffers written where
/// they lie gather before a write (whole buffers, so a write may hold a little more).
pub const STAGING_BYTES: usize = 4 << 20;
/// Staging buffers in all: one being filled, the others written or waiting.
const STAGING_BUFFERS: usize = 4;
/// Buffers queued for the writing thread at most, when they are written where they lie.
const GATHER_QUEUE: usize = 64;
/// Buffers one `pwritev` takes at most (Linux's `IOV_MAX`).
const MAX_IOVECS: usize = 1024;

/// What becomes of a buffer once its bytes are written (or copied): back to a pool.
pub type Release<'a> = Box<dyn FnMut(AlignedBuf) + Send + 'a>;

/// A growable byte buffer whose contents start at a [`BLOCK`] boundary in memory, so that
/// a direct write can take them where they are. Growing it never moves the contents off
/// the boundary.
pub struct AlignedBuf {
    /// `start` filler bytes, then the contents.
    raw: Vec<u8>,
    start: usize,
}

impl AlignedBuf {
    /// An empty buffer with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        let mut raw = Vec::with_capacity(capacity + BLOCK);
        let at = raw.as_ptr() as usize;
        let start = at.next_multiple_of(BLOCK) - at;
        raw.resize(start, 0);
        Self { raw, start }
    }

    /// Room for contents without growing.
    pub fn capacity(&self) -> usize {
        self.raw.capacity() - self.start
    }

    /// Empties it, keeping its room.
    pub fn clear(&mut self) {
        self.raw.truncate(self.start);
    }

    /// Makes room for `more` bytes after the contents.
    pub fn reserve(&mut self, more: usize) {
        if self.raw.capacity() - self.raw.len() < more {
            let mut grown = Self::with_capacity((self.len() + more).max(2 * self.capacity()));
            grown.raw.extend_from_slice(self);
            *self = grown;
        }
    }

    /// Appends `bytes`.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.reserve(bytes.len());
        self.raw.extend_from_slice(bytes);
    }

    /// Cuts the contents to `len` bytes or pads them with `value` up to it.
    pub fn resize(&mut self, len: usize, value: u8) {
        self.reserve(len.saturating_sub(self.len()));
        self.raw.resize(self.start + len, value);
    }

    /// Appends up to `n` bytes read from `source` (fewer where it ends; interrupted reads
    /// retried) without zeroing the room first; how many. Room [`Self::reserve`]d for them
    /// first saves a copy.
    pub fn read_from(&mut self, source: impl Read, n: u64) -> io::Result<usize> {
        let got = source.take(n).read_to_end(&mut self.raw);
        if !(self.raw.as_ptr() as usize + self.start).is_multiple_of(BLOCK) {
            // The read grew the vector itself: put the contents back on a boundary.
            let mut moved = Self::with_capacity(self.len());
            moved.raw.extend_from_slice(self);
            *self = moved;
        }
        got
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.raw[self.start..]
    }
}

impl Write for AlignedBuf {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What the gathering thread leaves: the bytes after the last whole block, and their
/// offset.
type Leftover = io::Result<(Vec<u8>, u64)>;

/// Writes a file from offset 0 onwards with `O_DIRECT`.
pub struct DirectWriter<'scope> {
    how: How<'scope>,
}

/// How the bytes reach the disk.
enum How<'scope> {
    /// Buffers go to the writing thread as they are, which writes them where they lie.
    Gathered {
        queue: SyncSender<AlignedBuf>,
        /// The writing thread, until joined.
        thread: Option<ScopedJoinHandle<'scope, Leftover>>,
    },
    /// Buffers are copied into staging buffers, which the writing thread writes.
    Staged(Staged<'scope>),
}

/// The staging state: the buffer being filled and the queues to the writing thread.
struct Staged<'scope> {
    staging: AlignedBuf,
    /// File offset of `staging`'s first byte.
    offset: u64,
    /// Full buffers, with their offsets, for the writing thread.
    to_write: SyncSender<(AlignedBuf, u64)>,
    /// Written (emptied) buffers back from it, or the error that stopped it.
    written: Receiver<io::Result<AlignedBuf>>,
    release: Release<'scope>,
}

impl<'scope> DirectWriter<'scope> {
    /// A direct writer of the empty file `file` (opened again with `O_DIRECT`), its
    /// writing thread started in `scope`; each buffer goes to `release` once its bytes are
    /// written (or copied). `None` when the filesystem does not take direct writes. Probe
    /// blocks are written and the file truncated again.
    pub fn start(
        file: &File,
        scope: &'scope Scope<'scope, '_>,
        release: Release<'scope>,
    ) -> Option<Self> {
        Self::start_with(file, scope, release, true)
    }

    /// [`Self::start`] copying into staging buffers whatever the filesystem takes.
    #[cfg(test)]
    pub(crate) fn start_staged(
        file: &File,
        scope: &'scope Scope<'scope, '_>,
        release: Release<'scope>,
    ) -> Option<Self> {
        Self::start_with(file, scope, release, false)
    }

    fn start_with(
        file: &File,
        scope: &'scope Scope<'scope, '_>,
        release: Release<'scope>,
        gather: bool,
    ) -> Option<Self> {
        let direct = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(fd_path(file))
            .ok()?;
        let mut probe = AlignedBuf::with_capacity(2 * BLOCK);
        probe.resize(2 * BLOCK, 0);
        // One block in two pieces: a segment at a page boundary, and the rest of the block
        // from a segment boundary inside another page.
        let mut pieces = [
            IoSlice::new(&probe[..SEGMENT]),
            IoSlice::new(&probe[BLOCK + SEGMENT..]),
        ];
        let gathers = gather && write_all_vectored_at(&direct, &mut pieces, 0).is_ok();
        if !gathers {
            direct.write_all_at(&probe[..BLOCK], 0).ok()?;
        }
        file.set_len(0).ok()?;
        let how = if gathers {
            let (queue, queued) = mpsc::sync_channel(GATHER_QUEUE);
            let thread = std::thread::Builder::new()
                .name("tar-direct".into())
                .spawn_scoped(scope, move || write_gathered(&direct, &queued, release))
                .ok()?;
            How::Gathered {
                queue,
                thread: Some(thread),
            }
        } else {
            let (to_write, queue) = mpsc::sync_channel(STAGING_BUFFERS);
            let (done, written) = mpsc::sync_channel(STAGING_BUFFERS);
            for _ in 1..STAGING_BUFFERS {
                done.send(Ok(AlignedBuf::with_capacity(STAGING_BYTES)))
                    .ok()?;
            }
            std::thread::Builder::new()
                .name("tar-direct".into())
                .spawn_scoped(scope, move || write_staged(&direct, &queue, &done))
                .ok()?;
            How::Staged(Staged {
                staging: AlignedBuf::with_capacity(STAGING_BYTES),
                offset: 0,
                to_write,
                written,
                release,
            })
        };
        Some(Self { how })
    }

    /// Whether buffers are written where they lie (else copied into staging buffers).
    pub fn gathers(&self) -> bool {
        matches!(self.how, How::Gathered { .. })
    }

    /// Appends `bytes` to the file. Where buffers are written where they lie, their
    /// lengths must be whole [`SEGMENT`]s.
    pub fn write(&mut self, bytes: AlignedBuf) -> io::Result<()> {
        match &mut self.how {
            How::Gathered { queue, thread } => match queue.send(bytes) {
                Ok(()) => Ok(()),
                // The thread stopped: its error says why.
                Err(_) => Err(join(thread).err().unwrap_or_else(stopped)),
            },
            How::Staged(staged) => {
                staged.fill(&bytes)?;
                (staged.release)(bytes);
                Ok(())
            }
        }
    }

    /// Waits for every write, and writes what is left: its whole blocks directly, the
    /// rest through `buffered` (the file opened without `O_DIRECT`), for the caller's
    /// fsync to make durable.
    pub fn finish(self, buffered: &File) -> io::Result<()> {
        let (rest, tail) = match self.how {
            How::Gathered { queue, mut thread } => {
                // The writing thread ends once the queue is closed and empty.
                drop(queue);
                join(&mut thread)?
            }
            How::Staged(staged) => staged.finish()?,
        };
        buffered.write_all_at(&rest, tail)
    }
}

impl Staged<'_> {
    /// Copies `bytes` into staging buffers, queueing each full one.
    fn fill(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let n = bytes.len().min(STAGING_BYTES - self.staging.len());
            self.staging.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.staging.len() == STAGING_BYTES {
                let next = self.next_buffer()?;
                let full = std::mem::replace(&mut self.staging, next);
                self.send(full)?;
            }
        }
        Ok(())
    }

    /// Queues the whole blocks still staged and waits for every write; the bytes left
    /// over (less than a block) and their offset.
    fn finish(mut self) -> Leftover {
        let whole = self.staging.len() / BLOCK * BLOCK;
        let rest = self.staging[whole..].to_vec();
        let tail = self.offset + whole as u64;
        if whole > 0 {
            let next = self.next_buffer()?;
            let mut last = std::mem::replace(&mut self.staging, next);
            last.resize(whole, 0);
            self.send(last)?;
        }
        let Self {
            to_write, written, ..
        } = self;
        // The writing thread ends once the queue is closed and empty.
        drop(to_write);
        for result in written {
            result?;
        }
        Ok((rest, tail))
    }

    /// An emptied buffer, or the error that stopped the writing thread.
    fn next_buffer(&mut self) -> io::Result<AlignedBuf> {
        match self.written.recv() {
            Ok(result) => result,
            Err(_) => Err(stopped()),
        }
    }

    /// Queues a full buffer for the writing thread.
    fn send(&mut self, full: AlignedBuf) -> io::Result<()> {
        let len = full.len() as u64;
        self.to_write
            .send((full, self.offset))
            .map_err(|_| stopped())?;
        self.offset += len;
        Ok(())
    }
}

fn stopped() -> io::Error {
    io::Error::other("the direct writing thread stopped")
}

/// Waits for the gathering thread (once): what it left to write, or its error.
fn join(thread: &mut Option<ScopedJoinHandle<'_, Leftover>>) -> Leftover {
    match thread.take().map(ScopedJoinHandle::join) {
        Some(Ok(result)) => result,
        _ => Err(stopped()),
    }
}

/// `pwritev` of all of `pieces` at `offset`, however many calls it takes.
fn write_all_vectored_at(
    file: &File,
    mut pieces: &mut [IoSlice],
    mut offset: u64,
) -> io::Result<()> {
    while !pieces.is_empty() {
        let at = i64::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
        match nix::sys::uio::pwritev(file, pieces, at) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                IoSlice::advance_slices(&mut pieces, n);
                offset += n as u64;
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The writing thread, buffers written where they lie: gathers queued buffers until
/// [`STAGING_BYTES`] (or [`MAX_IOVECS`] buffers) wait, writes their whole blocks with one
/// `pwritev` and releases every buffer written in full. Once the queue is closed, writes
/// the whole blocks left; the bytes after them (less than a block) and their offset.
fn write_gathered(
    direct: &File,
    queue: &Receiver<AlignedBuf>,
    mut release: Release<'_>,
) -> Leftover {
    let mut pending = Gathered::default();
    for bytes in queue {
        if !bytes.len().is_multiple_of(SEGMENT) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} bytes are not whole {SEGMENT}-byte segments",
                    bytes.len()
                ),
            ));
        }
        pending.unwritten += bytes.len();
        pending.buffers.push_back(bytes);
        if pending.unwritten >= STAGING_BYTES || pending.buffers.len() >= MAX_IOVECS {
            pending.write_blocks(direct, &mut release)?;
        }
    }
    pending.write_blocks(direct, &mut release)?;
    let mut rest = Vec::with_capacity(pending.unwritten);
    for (i, bytes) in pending.buffers.into_iter().enumerate() {
        rest.extend_from_slice(&bytes[if i == 0 { pending.head } else { 0 }..]);
        release(bytes);
    }
    Ok((rest, pending.offset))
}

/// Buffers waiting to be written where they lie.
#[derive(Default)]
struct Gathered {
    buffers: VecDeque<AlignedBuf>,
    /// Bytes of the first buffer already written.
    head: usize,
    /// Bytes of all the buffers not yet written.
    unwritten: usize,
    /// File offset of the first unwritten byte.
    offset: u64,
}

impl Gathered {
    /// Writes the whole blocks waiting and releases the buffers written in full.
    fn write_blocks(&mut self, direct: &File, release: &mut Release<'_>) -> io::Result<()> {
        let whole = self.unwritten / BLOCK * BLOCK;
        if whole == 0 {
            return Ok(());
        }
        let mut left = whole;
        let mut pieces = Vec::with_capacity(self.buffers.len());
        for (i, bytes) in self.buffers.iter().enumerate() {
            let from = if i == 0 { self.head } else { 0 };
            let n = (bytes.len() - from).min(left);
            if n > 0 {
                pieces.push(IoSlice::new(&bytes[from..from + n]));
            }
            left -= n;
            if left == 0 {
                break;
            }
        }
        write_all_vectored_at(direct, &mut pieces, self.offset)?;
        self.offset += whole as u64;
        self.unwritten -= whole;
        let mut done = self.head + whole;
        while let Some(first) = self.buffers.front() {
            if first.len() > done {
                break;
            }
            done -= first.len();
            if let Some(bytes) = self.buffers.pop_front() {
                release(bytes);
            }
        }
        self.head = done;
        Ok(())
    }
}

/// The writing thread, buffers staged: writes each queued staging buffer at its offset
/// and hands it back emptied; the first error goes back instead, and ends it.
fn write_staged(
    direct: &File,
    queue: &Receiver<(AlignedBuf, u64)>,
    done: &SyncSender<io::Result<AlignedBuf>>,
) {
    for (mut staging, offset) in queue {
        let result = direct.write_all_at(&staging, offset).map(|()| {
            staging.clear();
            staging
        });
        let failed = result.is_err();
        if done.send(result).is_err() || failed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Seek;
    use std::sync::{Arc, Mutex};

    /// Writes `pieces` through a direct writer, staged or not (`None` when the
    /// filesystem has no direct writes); the file's bytes, and the buffers released.
    fn write_direct(
        path: &std::path::Path,
        pieces: &[Vec<u8>],
        staged: bool,
    ) -> Option<(Vec<u8>, Vec<Vec<u8>>)> {
        let file = File::create(path).unwrap();
        let released = Arc::new(Mutex::new(Vec::new()));
        std::thread::scope(|scope| {
            let sink = released.clone();
            let release: Release = Box::new(move |bytes: AlignedBuf| {
                sink.lock().unwrap().push(bytes.to_vec());
            });
            let mut writer = if staged {
                DirectWriter::start_staged(&file, scope, release)?
            } else {
                DirectWriter::start(&file, scope, release)?
            };
            assert!(
                staged || writer.gathers(),
                "the test directory's filesystem takes no direct writes of 512-byte segments"
            );
            assert!(!staged || !writer.gathers());
            for piece in pieces {
                let mut bytes = AlignedBuf::with_capacity(piece.len());
                bytes.extend_from_slice(piece);
                writer.write(bytes).unwrap();
            }
            writer.finish(&file).unwrap();
            Some(())
        })?;
        let released = std::mem::take(&mut *released.lock().unwrap());
        Some((std::fs::read(path).unwrap(), released))
    }

    #[test]
    fn buffers_start_on_a_block_boundary_however_they_grow() {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&[7u8; 3 * BLOCK + 5]).unwrap();
        for capacity in [0, 1, SEGMENT, BLOCK, STAGING_BYTES] {
            let mut bytes = AlignedBuf::with_capacity(capacity);
            assert_eq!(bytes.as_ptr() as usize % BLOCK, 0);
            let mut expected = Vec::new();
            for n in [1usize, 700, BLOCK, 3 * BLOCK] {
                bytes.extend_from_slice(&vec![n as u8; n]);
                expected.extend(std::iter::repeat_n(n as u8, n));
                assert_eq!(bytes.as_ptr() as usize % BLOCK, 0);
            }
            bytes.resize(bytes.len() + 2 * BLOCK, 1);
            expected.resize(expected.len() + 2 * BLOCK, 1);
            assert_eq!(bytes.as_ptr() as usize % BLOCK, 0);
            // A read with no room reserved: the vector grows as it reads.
            file.seek(io::SeekFrom::Start(0)).unwrap();
            let got = bytes.read_from(&mut file, u64::MAX).unwrap();
            assert_eq!(got, 3 * BLOCK + 5);
            expected.extend(std::iter::repeat_n(7u8, got));
            assert_eq!(bytes.as_ptr() as usize % BLOCK, 0);
            assert_eq!(&bytes[..], &expected[..]);
        }
    }

    #[test]
    fn a_buffer_of_part_of_a_segment_stops_gathered_writes() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::create(dir.path().join("f")).unwrap();
        std::thread::scope(|scope| {
            let Some(mut writer) = DirectWriter::start(&file, scope, Box::new(drop)) else {
                panic!("the test directory's filesystem takes no O_DIRECT writes");
            };
            let mut odd = AlignedBuf::with_capacity(SEGMENT);
            odd.resize(SEGMENT - 1, 0);
            // The queue may take it before the thread has seen it.
            let _ = writer.write(odd);
            let err = writer.finish(&file).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        });
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]
        #[test]
        fn the_file_holds_every_byte_written_in_order_and_every_buffer_comes_back(
            sizes in prop::collection::vec((0usize..(3 * STAGING_BYTES / 2 / SEGMENT), 0..SEGMENT), 0..6),
            staged in any::<bool>(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            // Staged writes take any length, gathered ones whole segments.
            let pieces: Vec<Vec<u8>> = sizes
                .iter()
                .enumerate()
                .map(|(i, &(segments, odd))| {
                    let len = segments * SEGMENT + if staged { odd } else { 0 };
                    (0..len).map(|j| (i * 31 + j * 7) as u8).collect()
                })
                .collect();
            let Some((written, released)) = write_direct(&dir.path().join("f"), &pieces, staged)
            else {
                panic!("the test directory's filesystem takes no O_DIRECT writes");
            };
            prop_assert_eq!(written, pieces.concat());
            prop_assert_eq!(released, pieces);
        }
    }
}
