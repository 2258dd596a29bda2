//! Snapshot archive throughput: `ArchiveSnapshotEngine` (the engine both backends use; it
//! writes archives natively and restores them with GNU tar) against plain GNU tar, on the
//! same trees in the same run.

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, mpsc};
use std::time::Instant;

use csi_core::linux::TokioCommandRunner;
use csi_core::ports::{ArchiveOptions, ArchiveTool, ChecksumKind, SnapshotEngine};
use csi_core::snapshot_engine::checksum::hash_file;
use csi_core::snapshot_engine::direct_io::{AlignedBuf, DirectWriter, SEGMENT};
use csi_core::snapshot_engine::tar_writer::start_writeback;
use csi_core::snapshot_engine::{ArchiveSnapshotEngine, sidecar_suffix, suffixed};
use serde::Serialize;

use crate::error::{BenchError, Result};
use crate::stats::median;

/// The variant the snapshot target is judged on: creation with verification on (the
/// default checksum).
pub const ENGINE_VERIFIED_CREATE: &str =
    "ArchiveSnapshotEngine (native writer, fsync), verification on (XXH3-128, default)";
/// The other checksums, each timed as a create of its own.
const OTHER_CHECKSUMS: [(ChecksumKind, &str); 2] = [
    (
        ChecksumKind::Blake3,
        "ArchiveSnapshotEngine (native writer, fsync), verification on (BLAKE3)",
    ),
    (
        ChecksumKind::Md5,
        "ArchiveSnapshotEngine (native writer, fsync), verification on (MD5)",
    ),
];

/// Files per directory of the small-file tree.
const FILES_PER_DIR: usize = 1000;
/// Output buffer of each thread of the syscall floor, and of the disk floor.
const FLOOR_BUFFER: usize = 4 << 20;
/// Buffers the disk floor fills at most (one being written, the others queued).
const FLOOR_BUFFERS: usize = 4;

/// The floor variant's name.
const FLOOR: &str = "floor: stat, open, fstat, read, close per file, the bytes written, fsync";
/// The disk floor variant's name.
pub const DISK_FLOOR: &str =
    "disk floor: the archive's size written from memory as the engine writes (O_DIRECT), fsync";
/// Where the restore rows start among a tree's variants.
const FIRST_RESTORE: usize = 10;
/// Restores timed in each run (plain GNU tar, tar with the engine's flags, the engine with
/// verification off and on).
const RESTORES_PER_RUN: usize = 4;

/// The trees to archive.
#[derive(Debug, Clone)]
pub struct SnapshotOptions {
    /// Files in the small-file tree.
    pub small_files: usize,
    /// Size of each small file, bytes.
    pub small_file_bytes: usize,
    /// Files in the large-file tree.
    pub large_files: usize,
    /// Size of each large file, MiB.
    pub large_file_mib: usize,
    /// Timed repetitions of every variant (the median is reported).
    pub runs: usize,
}

/// One variant's figures.
#[derive(Debug, Clone, Serialize)]
pub struct VariantResult {
    /// `create` or `restore`.
    pub operation: String,
    /// What ran.
    pub variant: String,
    /// Median wall time, seconds.
    pub seconds_median: f64,
    /// Every run's wall time, seconds.
    pub seconds: Vec<f64>,
    /// Tree bytes per second of the median, MiB/s.
    pub mib_per_second: f64,
    /// Files per second of the median.
    pub files_per_second: f64,
    /// Plain GNU tar's median over this variant's (above 1: faster than GNU tar).
    pub speedup_vs_gnu_tar: f64,
}

/// Figures on one tree.
#[derive(Debug, Clone, Serialize)]
pub struct TreeReport {
    /// `small files` or `large files`.
    pub tree: String,
    /// Regular files in the tree.
    pub files: usize,
    /// Bytes of file data in the tree.
    pub bytes: u64,
    /// Size of the engine's archive.
    pub archive_bytes: u64,
    /// Seconds the bench took to write the tree (not a figure of the archivers: far above
    /// the usual, it shows a filesystem slow to allocate inodes, which slows restores too).
    pub write_seconds: f64,
    /// Every variant.
    pub results: Vec<VariantResult>,
}

/// The snapshot benchmark's figures.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotReport {
    /// `tar --version`, first line.
    pub tar_version: String,
    /// The archiver path the engine ran.
    pub tar_path: String,
    /// Filesystem type of the scratch directory (from /proc/self/mounts).
    pub scratch_filesystem: String,
    /// Timed runs per variant.
    pub runs: usize,
    /// The trees.
    pub trees: Vec<TreeReport>,
    /// Trees (or the whole benchmark) that could not be measured, with why.
    pub errors: Vec<String>,
}

/// A small, fast deterministic generator of incompressible bytes (xorshift64*).
struct Bytes(u64);

impl Bytes {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let v = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Writes `files` files of `size` bytes into `dir`, [`FILES_PER_DIR`] per subdirectory.
fn make_tree(dir: &Path, files: usize, size: usize) -> Result<u64> {
    let mut rng = Bytes(0x9E37_79B9_7F4A_7C15);
    let mut buf = vec![0u8; size.min(1 << 20)];
    let mut total = 0u64;
    for i in 0..files {
        let sub = dir.join(format!("d{:04}", i / FILES_PER_DIR));
        if i % FILES_PER_DIR == 0 {
            std::fs::create_dir_all(&sub).map_err(|e| BenchError::io("create", &sub, e))?;
        }
        let path = sub.join(format!("f{i:07}"));
        let mut f = std::fs::File::create(&path).map_err(|e| BenchError::io("create", &path, e))?;
        let mut left = size;
        while left > 0 {
            let n = left.min(buf.len());
            rng.fill(&mut buf[..n]);
            f.write_all(&buf[..n])
                .map_err(|e| BenchError::io("write", &path, e))?;
            left -= n;
        }
        total += size as u64;
    }
    Ok(total)
}

/// The per-file work that no archiver of the tree at `source` can skip, alone, on one
/// thread per core: each thread takes whole directories (the source and its
/// subdirectories; the bench's trees go no deeper) and, for every file, stats it (as
/// a walk does), opens it below its directory's descriptor, fstats it, reads it and closes
/// it, appending the bytes to `out` (writeback started every 4 MiB, fsync at the end).
/// No archive format, checksum, extended attributes or checks: a floor, not an archiver.
fn syscall_floor(source: &Path, out: &Path) -> Result<()> {
    use std::os::unix::fs::FileExt;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    let io = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |e: std::io::Error| BenchError::io(op, &path, e)
    };
    let mut dirs = vec![source.to_path_buf()];
    for entry in std::fs::read_dir(source).map_err(io("list", source))? {
        let entry = entry.map_err(io("list", source))?;
        if entry
            .file_type()
            .map_err(io("stat", &entry.path()))?
            .is_dir()
        {
            dirs.push(entry.path());
        }
    }
    let file = std::fs::File::create(out).map_err(io("create", out))?;
    let (next, offset) = (AtomicUsize::new(0), AtomicU64::new(0));
    let flush = |buf: &mut Vec<u8>| -> Result<()> {
        let at = offset.fetch_add(buf.len() as u64, Ordering::Relaxed);
        file.write_all_at(buf, at).map_err(io("write", out))?;
        start_writeback(&file, at, buf.len() as u64);
        buf.clear();
        Ok(())
    };
    let read_dir = |dir: &Path, buf: &mut Vec<u8>| -> Result<()> {
        let fd = std::fs::File::open(dir).map_err(io("open", dir))?;
        for entry in std::fs::read_dir(dir).map_err(io("list", dir))? {
            let entry = entry.map_err(io("list", dir))?;
            let path = entry.path();
            if !entry.metadata().map_err(io("stat", &path))?.is_file() {
                continue;
            }
            let flags = nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC;
            let opened = nix::fcntl::openat(
                &fd,
                &entry.file_name()[..],
                flags,
                nix::sys::stat::Mode::empty(),
            )
            .map_err(|e| BenchError::io("open", &path, e.into()))?;
            let mut f = std::fs::File::from(opened);
            let mut left = f.metadata().map_err(io("stat", &path))?.len() as usize;
            if buf.len() + left > FLOOR_BUFFER {
                flush(buf)?;
            }
            // A small file in one read; a large one streamed through the buffer.
            while left > 0 {
                if buf.len() == FLOOR_BUFFER {
                    flush(buf)?;
                }
                let start = buf.len();
                let n = left.min(FLOOR_BUFFER - start);
                buf.resize(start + n, 0);
                std::io::Read::read_exact(&mut f, &mut buf[start..]).map_err(io("read", &path))?;
                left -= n;
            }
        }
        Ok(())
    };
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    let mut buf = Vec::with_capacity(FLOOR_BUFFER);
                    while let Some(dir) = dirs.get(next.fetch_add(1, Ordering::Relaxed)) {
                        read_dir(dir, &mut buf)?;
                    }
                    flush(&mut buf)
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| {
            w.join()
                .unwrap_or_else(|_| Err(BenchError::Setup("floor thread panicked".into())))
        })
    })?;
    file.sync_all().map_err(io("fsync", out))
}

/// What any archiver that makes its archive durable pays on this disk, whatever it reads:
/// `bytes` written to `out` from memory as the engine writes an archive: in
/// [`FLOOR_BUFFER`] buffers with `O_DIRECT` where the filesystem takes it
/// ([`DirectWriter`]), else through the page cache with writeback started after each
/// buffer; then an fsync.
fn disk_floor(out: &Path, bytes: u64) -> Result<()> {
    let file = std::fs::File::create(out).map_err(|e| BenchError::io("create", out, e))?;
    let pattern = floor_pattern();
    // Direct writes take whole segments; the few bytes after the last one go buffered.
    let whole = bytes / SEGMENT as u64 * SEGMENT as u64;
    let direct = std::thread::scope(|scope| -> std::io::Result<bool> {
        let (give_back, given_back) = mpsc::channel();
        let release = Box::new(move |buffer| {
            let _ = give_back.send(buffer);
        });
        let Some(mut writer) = DirectWriter::start(&file, scope, release) else {
            return Ok(false);
        };
        let (mut written, mut allocated) = (0u64, 0usize);
        while written < whole {
            let n = (whole - written).min(FLOOR_BUFFER as u64) as usize;
            let mut buffer = match given_back.try_recv() {
                Ok(buffer) => buffer,
                Err(_) if allocated < FLOOR_BUFFERS => {
                    allocated += 1;
                    AlignedBuf::with_capacity(FLOOR_BUFFER)
                }
                // Every buffer is queued or being written: wait for one.
                Err(_) => match given_back.recv() {
                    Ok(buffer) => buffer,
                    // The writing thread stopped; finishing says why.
                    Err(_) => break,
                },
            };
            buffer.clear();
            buffer.extend_from_slice(&pattern[..n]);
            writer.write(buffer)?;
            written += n as u64;
        }
        writer.finish(&file)?;
        if written < whole {
            return Err(std::io::Error::other("the writing thread stopped early"));
        }
        Ok(true)
    })
    .map_err(|e| BenchError::io("write (O_DIRECT)", out, e))?;
    let mut written = if direct { whole } else { 0 };
    while written < bytes {
        // Every FLOOR_BUFFER bytes of the file are the pattern from its start.
        let at = (written % FLOOR_BUFFER as u64) as usize;
        let n = (bytes - written).min((FLOOR_BUFFER - at) as u64) as usize;
        file.write_all_at(&pattern[at..at + n], written)
            .map_err(|e| BenchError::io("write", out, e))?;
        start_writeback(&file, written, n as u64);
        written += n as u64;
    }
    file.sync_all().map_err(|e| BenchError::io("fsync", out, e))
}

/// What the disk floor writes: every [`FLOOR_BUFFER`] bytes of its file are these.
fn floor_pattern() -> Vec<u8> {
    let mut pattern = vec![0u8; FLOOR_BUFFER];
    Bytes(0x5DEE_CE66_D1CE_4E5B).fill(&mut pattern);
    pattern
}

/// The absolute path of `name` on `PATH`.
fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

/// Runs a command to completion; an error unless it exits 0.
fn run_tar(program: &Path, args: &[&std::ffi::OsStr]) -> Result<()> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| BenchError::io("run", program, e))?;
    if !out.status.success() {
        return Err(BenchError::Setup(format!(
            "{} {:?} failed ({}): {}",
            program.display(),
            args,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Flushes dirty pages so one variant's writeback does not land in the next one's time.
fn settle() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

fn remove_tree(path: &Path) {
    let _ = std::fs::remove_dir_all(path);
}

fn fresh_dir(path: &Path) -> Result<()> {
    remove_tree(path);
    std::fs::create_dir_all(path).map_err(|e| BenchError::io("create", path, e))
}

/// The filesystem type `path` is on (longest matching mount point in /proc/self/mounts).
fn filesystem_of(path: &Path) -> String {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, mp, ty) = (f.next()?, f.next()?, f.next()?);
            path.starts_with(mp).then(|| (mp.len(), ty.to_string()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, ty)| ty)
        .unwrap_or_else(|| "unknown".into())
}

struct Variant {
    operation: &'static str,
    name: &'static str,
    seconds: Vec<f64>,
}

/// Times every variant on the tree at `source`.
async fn bench_tree(
    label: &str,
    source: &Path,
    files: usize,
    bytes: u64,
    scratch: &Path,
    tar: &Path,
    runs: usize,
) -> Result<TreeReport> {
    let engine = ArchiveSnapshotEngine::new(Arc::new(TokioCommandRunner::new()));
    let options = |verify| ArchiveOptions {
        tool: ArchiveTool::Tar(tar.to_path_buf()),
        verify,
        checksum: ChecksumKind::default(),
    };
    let archives = scratch.join("archives");
    fresh_dir(&archives)?;
    let plain = archives.join("plain.tar");
    let flagged = archives.join("flags.tar");
    let off = archives.join("engine-off.tar");
    let on = archives.join("engine-on.tar");
    let on_other = archives.join("engine-other.tar");
    let restore = scratch.join("restore");
    fresh_dir(&restore)?;
    let os = |p: &Path| p.as_os_str().to_owned();

    // Plain GNU tar into `plain`.
    let plain_tar = || {
        run_tar(
            tar,
            &[
                "-cf".as_ref(),
                plain.as_os_str(),
                "-C".as_ref(),
                source.as_os_str(),
                ".".as_ref(),
            ],
        )
    };
    // Warm the page cache with the tree (not timed).
    plain_tar()?;
    let _ = std::fs::remove_file(&plain);

    let mut variants = vec![
        Variant {
            operation: "create",
            name: "GNU tar -cf (plain)",
            seconds: Vec::new(),
        },
        Variant {
            operation: "create",
            name: "GNU tar -cf with the old engine's flags (no fsync, no checksum)",
            seconds: Vec::new(),
        },
        Variant {
            operation: "create",
            name: "ArchiveSnapshotEngine (native writer, fsync), verification off",
            seconds: Vec::new(),
        },
        Variant {
            operation: "create",
            name: ENGINE_VERIFIED_CREATE,
            seconds: Vec::new(),
        },
        Variant {
            operation: "create",
            name: OTHER_CHECKSUMS[0].1,
            seconds: Vec::new(),
        },
        Variant {
            operation: "create",
            name: OTHER_CHECKSUMS[1].1,
            seconds: Vec::new(),
        },
        Variant {
            operation: "component",
            name: "XXH3-128 of the archive alone, from the page cache (hash_file)",
            seconds: Vec::new(),
        },
        Variant {
            operation: "component",
            name: FLOOR,
            seconds: Vec::new(),
        },
        Variant {
            operation: "component",
            name: DISK_FLOOR,
            seconds: Vec::new(),
        },
        Variant {
            operation: "component",
            name: "GNU tar -cf (plain), then fsync of the archive",
            seconds: Vec::new(),
        },
        Variant {
            operation: "restore",
            name: "GNU tar -xf (plain)",
            seconds: Vec::new(),
        },
        Variant {
            operation: "restore",
            name: "GNU tar -xpf with the engine's flags (no checksum)",
            seconds: Vec::new(),
        },
        Variant {
            operation: "restore",
            name: "ArchiveSnapshotEngine, verification off",
            seconds: Vec::new(),
        },
        Variant {
            operation: "restore",
            name: "ArchiveSnapshotEngine, verification on",
            seconds: Vec::new(),
        },
    ];
    let mut archive_bytes = 0;
    for run in 0..runs.max(1) {
        settle();
        let t = Instant::now();
        plain_tar()?;
        variants[0].seconds.push(t.elapsed().as_secs_f64());
        let _ = std::fs::remove_file(&plain);

        settle();
        let t = Instant::now();
        run_tar(
            tar,
            &[
                "--xattrs".as_ref(),
                "--xattrs-include=*".as_ref(),
                "--acls".as_ref(),
                "--numeric-owner".as_ref(),
                "--sparse".as_ref(),
                "-cf".as_ref(),
                &os(&flagged),
                "-C".as_ref(),
                &os(source),
                ".".as_ref(),
            ],
        )?;
        variants[1].seconds.push(t.elapsed().as_secs_f64());
        let _ = std::fs::remove_file(&flagged);

        settle();
        let t = Instant::now();
        engine
            .create(source, &off, &options(false))
            .await
            .map_err(|e| BenchError::Setup(format!("engine create (verification off): {e}")))?;
        variants[2].seconds.push(t.elapsed().as_secs_f64());
        let _ = std::fs::remove_file(&off);

        settle();
        let t = Instant::now();
        let info = engine
            .create(source, &on, &options(true))
            .await
            .map_err(|e| BenchError::Setup(format!("engine create (verification on): {e}")))?;
        variants[3].seconds.push(t.elapsed().as_secs_f64());
        archive_bytes = info.size_bytes;

        for (i, (kind, _)) in OTHER_CHECKSUMS.into_iter().enumerate() {
            let other = ArchiveOptions {
                checksum: kind,
                ..options(true)
            };
            settle();
            let t = Instant::now();
            engine
                .create(source, &on_other, &other)
                .await
                .map_err(|e| BenchError::Setup(format!("engine create ({kind:?}): {e}")))?;
            variants[4 + i].seconds.push(t.elapsed().as_secs_f64());
            let _ = std::fs::remove_file(&on_other);
            let _ = std::fs::remove_file(suffixed(&on_other, sidecar_suffix(kind)));
        }

        // The engine wrote the archive past the page cache (O_DIRECT): read it in first,
        // so that the row times the hash, not the disk.
        std::fs::File::open(&on)
            .and_then(|mut f| std::io::copy(&mut f, &mut std::io::sink()))
            .map_err(|e| BenchError::io("read", &on, e))?;
        let t = Instant::now();
        hash_file(ChecksumKind::default(), &on)
            .map_err(|e| BenchError::Setup(format!("checksum of the archive: {e}")))?;
        variants[6].seconds.push(t.elapsed().as_secs_f64());

        let floor = archives.join("floor.bin");
        settle();
        let t = Instant::now();
        syscall_floor(source, &floor)?;
        variants[7].seconds.push(t.elapsed().as_secs_f64());
        let _ = std::fs::remove_file(&floor);

        settle();
        let t = Instant::now();
        disk_floor(&floor, archive_bytes)?;
        variants[8].seconds.push(t.elapsed().as_secs_f64());
        let _ = std::fs::remove_file(&floor);

        settle();
        let t = Instant::now();
        plain_tar()?;
        std::fs::File::open(&plain)
            .and_then(|f| f.sync_all())
            .map_err(|e| BenchError::io("fsync", &plain, e))?;
        variants[9].seconds.push(t.elapsed().as_secs_f64());
        let _ = std::fs::remove_file(&plain);

        // Restores all read the engine's verified archive; their order turns with each
        // run so that none always follows the same neighbour. Each extracts into a new
        // directory and every copy stays until all runs are done: ext4 without a journal
        // (this machine's root) skips inodes freed in the last minutes when it allocates,
        // and after the removal of a 100,000-file copy that made the next extraction
        // spend 10-40 s in `ext4_create` instead of about 2.5 s.
        for k in 0..RESTORES_PER_RUN {
            let slot = FIRST_RESTORE + (k + run) % RESTORES_PER_RUN;
            let into = restore.join(format!("{run}-{slot}"));
            std::fs::create_dir(&into).map_err(|e| BenchError::io("create", &into, e))?;
            settle();
            let t = Instant::now();
            match slot {
                FIRST_RESTORE => {
                    run_tar(tar, &["-xf".as_ref(), &os(&on), "-C".as_ref(), &os(&into)])?
                }
                s if s == FIRST_RESTORE + 1 => run_tar(
                    tar,
                    &[
                        "-xpf".as_ref(),
                        &os(&on),
                        "--same-owner".as_ref(),
                        "--numeric-owner".as_ref(),
                        "--xattrs".as_ref(),
                        "--xattrs-include=*".as_ref(),
                        "--acls".as_ref(),
                        "-C".as_ref(),
                        &os(&into),
                    ],
                )?,
                _ => {
                    let verify = slot == FIRST_RESTORE + 3;
                    engine
                        .restore(&on, &into, &options(verify))
                        .await
                        .map_err(|e| {
                            BenchError::Setup(format!("engine restore (verify {verify}): {e}"))
                        })?;
                }
            }
            variants[slot].seconds.push(t.elapsed().as_secs_f64());
        }
        let _ = std::fs::remove_file(&on);
        let _ = std::fs::remove_file(suffixed(&on, sidecar_suffix(ChecksumKind::default())));
    }
    remove_tree(&restore);
    remove_tree(&archives);

    let tar_create = median(&variants[0].seconds).unwrap_or(0.0);
    let tar_restore = median(&variants[FIRST_RESTORE].seconds).unwrap_or(0.0);
    let results = variants
        .into_iter()
        .map(|v| {
            let m = median(&v.seconds).unwrap_or(0.0).max(1e-9);
            let baseline = if v.operation != "restore" {
                tar_create
            } else {
                tar_restore
            };
            VariantResult {
                operation: v.operation.to_string(),
                variant: v.name.to_string(),
                seconds_median: m,
                seconds: v.seconds,
                mib_per_second: bytes as f64 / (1 << 20) as f64 / m,
                files_per_second: files as f64 / m,
                speedup_vs_gnu_tar: baseline / m,
            }
        })
        .collect();
    Ok(TreeReport {
        tree: label.to_string(),
        files,
        bytes,
        archive_bytes,
        write_seconds: 0.0,
        results,
    })
}

/// Free bytes for this user in the filesystem holding `path`.
fn free_bytes(path: &Path) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(path).ok()?;
    Some(st.blocks_available() as u64 * st.fragment_size() as u64)
}

/// Space one tree needs at the peak over `runs` runs: the tree, the engine's archive kept
/// for the restores, one other archive and every restored copy (all kept until the last
/// run, see `bench_tree`). Archives of small files are larger than their data by the
/// 512-byte headers and the padding to 512 bytes; on disk, each file of the tree and of a
/// copy takes whole 4 KiB blocks.
pub fn space_needed(files: usize, size: usize, runs: usize) -> u64 {
    let copy = files as u64 * (size as u64).div_ceil(4096) * 4096;
    let archive = files as u64 * (512 + (size as u64).div_ceil(512) * 512) + 10 * 1024;
    copy * (1 + (RESTORES_PER_RUN * runs.max(1)) as u64) + 2 * archive
}

/// Builds the trees under `scratch`, times every variant on each, removes the trees. A tree
/// that cannot be measured (no room, a failing archiver) is reported with why.
pub async fn run_snapshot(
    options: &SnapshotOptions,
    scratch: &Path,
    progress: &dyn Fn(&str),
) -> SnapshotReport {
    let mut report = SnapshotReport {
        tar_version: String::new(),
        tar_path: String::new(),
        scratch_filesystem: String::new(),
        runs: options.runs.max(1),
        trees: Vec::new(),
        errors: Vec::new(),
    };
    let Some(tar) = which("tar") else {
        report.errors.push("GNU tar not found on PATH".into());
        return report;
    };
    report.tar_path = tar.display().to_string();
    report.tar_version = Command::new(&tar)
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default();
    if let Err(e) = std::fs::create_dir_all(scratch) {
        report
            .errors
            .push(BenchError::io("create", scratch, e).to_string());
        return report;
    }
    report.scratch_filesystem = filesystem_of(scratch);
    let plans = [
        ("small files", options.small_files, options.small_file_bytes),
        (
            "large files",
            options.large_files,
            options.large_file_mib << 20,
        ),
    ];
    for (label, files, size) in plans {
        if files == 0 {
            continue;
        }
        let need = space_needed(files, size, options.runs);
        if let Some(free) = free_bytes(scratch).filter(|&free| free < need) {
            report.errors.push(format!(
                "{label}: skipped, {} MiB needed in {} and {} MiB free (give --work-dir elsewhere, or fewer or smaller files)",
                need >> 20,
                scratch.display(),
                free >> 20
            ));
            continue;
        }
        let source = scratch.join(label.replace(' ', "-"));
        let measured = async {
            fresh_dir(&source)?;
            progress(&format!("snapshot: writing {files} files of {size} bytes"));
            let t = Instant::now();
            let bytes = make_tree(&source, files, size)?;
            let write_seconds = t.elapsed().as_secs_f64();
            progress(&format!("snapshot: timing {label}, {} runs", options.runs));
            let tree = bench_tree(label, &source, files, bytes, scratch, &tar, options.runs);
            tree.await.map(|tree| TreeReport {
                write_seconds,
                ..tree
            })
        }
        .await;
        remove_tree(&source);
        remove_tree(&scratch.join("archives"));
        remove_tree(&scratch.join("restore"));
        match measured {
            Ok(tree) => report.trees.push(tree),
            Err(e) => {
                progress(&format!("snapshot: {label} failed: {e}"));
                report.errors.push(format!("{label}: {e}"));
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_space_needed_covers_the_tree_every_restored_copy_and_two_archives() {
        // 4 KiB files: 512-byte header + 4096 bytes each in the archive; the tree and
        // 4 restores in each of 3 runs.
        assert_eq!(
            space_needed(1000, 4096, 3),
            13 * 4_096_000 + 2 * (4_608_000 + 10_240)
        );
        // 1-byte files still take a header and a padded block each in an archive, and a
        // 4 KiB block each on disk; no runs still means one.
        assert_eq!(
            space_needed(10, 1, 0),
            5 * 10 * 4096 + 2 * (10 * 1024 + 10_240)
        );
        assert!(free_bytes(Path::new("/")).is_some());
    }

    #[test]
    fn trees_have_the_asked_files_and_bytes_and_differ_in_content() {
        let dir = tempfile::tempdir().unwrap();
        let total = make_tree(dir.path(), 1001, 100).unwrap();
        assert_eq!(total, 100_100);
        let a = std::fs::read(dir.path().join("d0000/f0000000")).unwrap();
        let b = std::fs::read(dir.path().join("d0001/f0001000")).unwrap();
        assert_eq!((a.len(), b.len()), (100, 100));
        assert_ne!(a, b);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn the_floor_reads_and_writes_every_byte_of_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("tree");
        let bytes = make_tree(&source, 20, 512).unwrap();
        // Larger than the buffer: streamed through it.
        let large = FLOOR_BUFFER + 4096;
        std::fs::write(source.join("d0000").join("large"), vec![3u8; large]).unwrap();
        let out = dir.path().join("floor.bin");
        syscall_floor(&source, &out).unwrap();
        assert_eq!(std::fs::metadata(&out).unwrap().len(), bytes + large as u64);
    }

    #[test]
    fn the_disk_floor_writes_the_bytes_asked() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("disk.bin");
        let bytes = FLOOR_BUFFER as u64 * 2 + 513;
        disk_floor(&out, bytes).unwrap();
        let written = std::fs::read(&out).unwrap();
        assert_eq!(written.len() as u64, bytes);
        let pattern = floor_pattern();
        for (i, chunk) in written.chunks(FLOOR_BUFFER).enumerate() {
            assert!(chunk == &pattern[..chunk.len()], "buffer {i} differs");
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_tiny_tree_is_timed_and_everything_scratch_is_removed() {
        let Some(tar) = which("tar") else {
            panic!("GNU tar is needed on PATH");
        };
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("tree");
        let bytes = make_tree(&source, 20, 512).unwrap();
        // Two runs: the second restores next to the first's copies, into new directories.
        let report = bench_tree("small files", &source, 20, bytes, dir.path(), &tar, 2)
            .await
            .unwrap();
        // Six create rows (GNU tar twice, the engine four times: verification off, on with
        // each checksum), four components (the hash alone, the floor, the disk floor, GNU
        // tar with an fsync) and four restores.
        assert_eq!(report.results.len(), 14);
        assert_eq!(report.results[FIRST_RESTORE].variant, "GNU tar -xf (plain)");
        assert!(report.archive_bytes > bytes);
        assert!(
            report
                .results
                .iter()
                .all(|r| r.seconds.len() == 2 && r.speedup_vs_gnu_tar > 0.0)
        );
        assert!(!dir.path().join("archives").exists());
        assert!(!dir.path().join("restore").exists());
    }
}
