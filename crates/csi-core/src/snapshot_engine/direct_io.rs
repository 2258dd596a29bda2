//! Writing a new file with `O_DIRECT`: bytes are gathered in block-aligned staging buffers
//! and each full buffer is written by a thread of its own, so the disk takes the bytes
//! straight from memory (no copy into the page cache, no writeback to start or wait for)
//! while the caller fills the next buffer.
//!
//! Used for snapshot archives, which are written once and not read back soon: the copy
//! into the page cache was a tenth of an archive run's CPU. A filesystem that refuses
//! `O_DIRECT` (at open or at a probe write) gets buffered writes instead.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::Scope;

use crate::linux::mounter::fd_path;

/// Alignment of direct writes: buffer address, file offset and length (a page, which
/// covers the logical block size of disks and what Lustre asks).
pub const BLOCK: usize = 4096;
/// Bytes per direct write.
pub const STAGING_BYTES: usize = 4 << 20;
/// Staging buffers in all: one being filled, the others written or waiting.
const STAGING_BUFFERS: usize = 4;

/// A [`STAGING_BYTES`] buffer starting at a [`BLOCK`] boundary, and how much of it is used.
struct Staging {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl Staging {
    fn new() -> Self {
        let raw = vec![0u8; STAGING_BYTES + BLOCK];
        let start = raw.as_ptr().align_offset(BLOCK);
        Self { raw, start, len: 0 }
    }

    fn bytes(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }

    /// Copies as much of `bytes` as fits; returns how much.
    fn fill(&mut self, bytes: &[u8]) -> usize {
        let at = self.start + self.len;
        let n = bytes.len().min(STAGING_BYTES - self.len);
        self.raw[at..at + n].copy_from_slice(&bytes[..n]);
        self.len += n;
        n
    }
}

/// Writes a file from offset 0 onwards with `O_DIRECT`.
pub struct DirectWriter {
    staging: Staging,
    /// File offset of `staging`'s first byte.
    offset: u64,
    /// Full buffers, with their offsets, for the writing thread.
    to_write: SyncSender<(Staging, u64)>,
    /// Written (emptied) buffers back from it, or the error that stopped it.
    written: Receiver<io::Result<Staging>>,
}

impl DirectWriter {
    /// A direct writer of the empty file `file` (opened again with `O_DIRECT`), its
    /// writing thread started in `scope`; `None` when the filesystem does not take direct
    /// writes (a probe block is written and the file truncated again).
    pub fn start<'scope>(file: &File, scope: &'scope Scope<'scope, '_>) -> Option<Self> {
        let direct = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(fd_path(file))
            .ok()?;
        let mut staging = Staging::new();
        staging.len = BLOCK;
        direct.write_all_at(staging.bytes(), 0).ok()?;
        file.set_len(0).ok()?;
        staging.len = 0;
        let (to_write, queue) = mpsc::sync_channel(STAGING_BUFFERS);
        let (done, written) = mpsc::sync_channel(STAGING_BUFFERS);
        for _ in 1..STAGING_BUFFERS {
            done.send(Ok(Staging::new())).ok()?;
        }
        std::thread::Builder::new()
            .name("tar-direct".into())
            .spawn_scoped(scope, move || write_queued(&direct, &queue, &done))
            .ok()?;
        Some(Self {
            staging,
            offset: 0,
            to_write,
            written,
        })
    }

    /// Appends `bytes` to the file.
    pub fn write(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let n = self.staging.fill(bytes);
            bytes = &bytes[n..];
            if self.staging.len == STAGING_BYTES {
                let next = self.next_buffer()?;
                let full = std::mem::replace(&mut self.staging, next);
                self.send(full)?;
            }
        }
        Ok(())
    }

    /// Waits for every write, and writes what is left: its whole blocks directly, the
    /// rest through `buffered` (the file opened without `O_DIRECT`), for the caller's
    /// fsync to make durable.
    pub fn finish(mut self, buffered: &File) -> io::Result<()> {
        let whole = self.staging.len / BLOCK * BLOCK;
        let rest = self.staging.bytes()[whole..].to_vec();
        let tail = self.offset + whole as u64;
        if whole > 0 {
            let next = self.next_buffer()?;
            let mut last = std::mem::replace(&mut self.staging, next);
            last.len = whole;
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
        buffered.write_all_at(&rest, tail)
    }

    /// An emptied buffer, or the error that stopped the writing thread.
    fn next_buffer(&mut self) -> io::Result<Staging> {
        match self.written.recv() {
            Ok(result) => result,
            Err(_) => Err(stopped()),
        }
    }

    /// Queues a full buffer for the writing thread.
    fn send(&mut self, full: Staging) -> io::Result<()> {
        let len = full.len as u64;
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

/// The writing thread: writes each queued buffer at its offset and hands it back emptied;
/// the first error goes back instead, and ends it.
fn write_queued(
    direct: &File,
    queue: &Receiver<(Staging, u64)>,
    done: &SyncSender<io::Result<Staging>>,
) {
    for (mut staging, offset) in queue {
        let result = direct.write_all_at(staging.bytes(), offset).map(|()| {
            staging.len = 0;
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

    /// Writes `pieces` through a direct writer (or learns that the filesystem has none).
    fn write_direct(path: &std::path::Path, pieces: &[Vec<u8>]) -> Option<Vec<u8>> {
        let file = File::create(path).unwrap();
        std::thread::scope(|scope| {
            let mut writer = DirectWriter::start(&file, scope)?;
            for piece in pieces {
                writer.write(piece).unwrap();
            }
            writer.finish(&file).unwrap();
            Some(())
        })?;
        Some(std::fs::read(path).unwrap())
    }

    #[test]
    fn staging_buffers_start_on_a_block_boundary() {
        for _ in 0..8 {
            let staging = Staging::new();
            assert_eq!(staging.bytes().as_ptr() as usize % BLOCK, 0);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]
        #[test]
        fn the_file_holds_every_byte_written_in_order(
            sizes in prop::collection::vec(0usize..(3 * STAGING_BYTES / 2), 0..6),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let pieces: Vec<Vec<u8>> = sizes
                .iter()
                .enumerate()
                .map(|(i, &n)| (0..n).map(|j| (i * 31 + j * 7) as u8).collect())
                .collect();
            let Some(written) = write_direct(&dir.path().join("f"), &pieces) else {
                panic!("the test directory's filesystem takes no O_DIRECT writes");
            };
            prop_assert_eq!(written, pieces.concat());
        }
    }
}
