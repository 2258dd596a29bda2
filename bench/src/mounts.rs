//! Unrelated mounts on the node: tmpfs mounts under a directory of the bench's own, in the
//! bench's private mount namespace.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::mount::{MntFlags, MsFlags, mount, umount2};

use crate::error::{BenchError, Result};
use crate::stats::Summary;

/// tmpfs mounts made under one directory, removed when dropped.
pub struct UnrelatedMounts {
    dir: PathBuf,
    mounted: Vec<PathBuf>,
}

impl UnrelatedMounts {
    /// No mounts yet; they will live under `dir`.
    pub fn new(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| BenchError::io("create", dir, e))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            mounted: Vec::new(),
        })
    }

    /// Mounts more until there are `count`.
    pub fn grow_to(&mut self, count: usize) -> Result<()> {
        while self.mounted.len() < count {
            let path = self.dir.join(format!("m{:05}", self.mounted.len()));
            std::fs::create_dir_all(&path).map_err(|e| BenchError::io("create", &path, e))?;
            mount(
                Some("bench-unrelated"),
                &path,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("size=64k,nr_inodes=16"),
            )
            .map_err(|e| {
                BenchError::Setup(format!(
                    "mounting tmpfs on {} (mount {} of {count}): {e}",
                    path.display(),
                    self.mounted.len() + 1
                ))
            })?;
            self.mounted.push(path);
        }
        Ok(())
    }

    /// Unmounts the newest until `count` are left.
    pub fn shrink_to(&mut self, count: usize) {
        while self.mounted.len() > count {
            if let Some(path) = self.mounted.pop() {
                let _ = umount2(&path, MntFlags::MNT_DETACH);
                let _ = std::fs::remove_dir(&path);
            }
        }
    }

    /// Unmounts them all (lazily) and removes their directories.
    pub fn clear(&mut self) {
        self.shrink_to(0);
    }
}

impl Drop for UnrelatedMounts {
    fn drop(&mut self) {
        self.clear();
    }
}

/// How long reading this process's whole mount table takes (what a plugin pays when it
/// reads `/proc/self/mountinfo` on a call): `reads` reads.
pub fn mountinfo_read_time(reads: usize) -> Summary {
    let mut samples = Vec::with_capacity(reads);
    let mut lines = 0;
    for _ in 0..reads.max(1) {
        let t = Instant::now();
        let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        lines = text.lines().count();
        samples.push(t.elapsed());
    }
    std::hint::black_box(lines);
    Summary::of(&samples).unwrap_or(Summary {
        count: 0,
        min_us: 0.0,
        p50_us: 0.0,
        p99_us: 0.0,
        max_us: 0.0,
        mean_us: 0.0,
    })
}

/// The kernel's floor under a publish+unpublish: `pairs` bind mounts of `source` onto
/// `target` (both directories) each followed by its unmount, each pair timed.
pub fn raw_bind_unbind(source: &Path, target: &Path, pairs: usize) -> Result<Vec<Duration>> {
    for dir in [source, target] {
        std::fs::create_dir_all(dir).map_err(|e| BenchError::io("create", dir, e))?;
    }
    let mut samples = Vec::with_capacity(pairs);
    for _ in 0..pairs.max(1) {
        let t = Instant::now();
        mount(
            Some(source),
            target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| BenchError::Setup(format!("bind mount on {}: {e}", target.display())))?;
        umount2(target, MntFlags::empty())
            .map_err(|e| BenchError::Setup(format!("unmount {}: {e}", target.display())))?;
        samples.push(t.elapsed());
    }
    Ok(samples)
}

/// The target directory's share of a publish+unpublish: `pairs` fresh directories in
/// `parent` each made and removed again, each pair timed. A plugin creates the target
/// and removes it again (the CSI spec's rule), so this is the disk's floor under every
/// pair; on a filesystem mounted with `discard` the removal alone can cost more than the
/// mount and unmount.
pub fn raw_target_dirs(parent: &Path, pairs: usize) -> Result<Vec<Duration>> {
    std::fs::create_dir_all(parent).map_err(|e| BenchError::io("create", parent, e))?;
    let mut samples = Vec::with_capacity(pairs);
    for i in 0..pairs.max(1) {
        let dir = parent.join(format!("d{i}"));
        let t = Instant::now();
        std::fs::create_dir(&dir).map_err(|e| BenchError::io("create", &dir, e))?;
        std::fs::remove_dir(&dir).map_err(|e| BenchError::io("remove", &dir, e))?;
        samples.push(t.elapsed());
    }
    Ok(samples)
}

/// Lines in this process's mount table.
pub fn mount_table_lines() -> usize {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|t| t.lines().count())
        .unwrap_or(0)
}
