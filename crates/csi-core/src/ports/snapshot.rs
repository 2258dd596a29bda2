//! Cutting and restoring volume snapshots as archives. Shared by every backend.

use std::path::{Path, PathBuf};

use async_trait::async_trait;

use crate::error::Result;

/// Which archiver writes the snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveTool {
    /// GNU tar at this path.
    Tar(PathBuf),
    /// mpifileutils `dtar` at this path (faster on a parallel filesystem).
    Dtar(PathBuf),
}

/// How a snapshot archive is written and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveOptions {
    /// The archiver.
    pub tool: ArchiveTool,
    /// Write an MD5 checksum beside the archive and check it before every restore.
    pub verify_md5: bool,
}

/// What a finished archive looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveInfo {
    /// Archive size in bytes.
    pub size_bytes: u64,
    /// Hex MD5 of the archive, when verification is on.
    pub md5: Option<String>,
}

/// Writes, checks, restores and removes snapshot archives of volume directories.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait SnapshotEngine: Send + Sync {
    /// Archives directory `source` (owners, modes, symlinks, hard links and extended
    /// attributes included) into `archive`. The archive appears under its final name only
    /// once complete (and verified, with `verify_md5`): a crash leaves no half archive there.
    async fn create(
        &self,
        source: &Path,
        archive: &Path,
        options: &ArchiveOptions,
    ) -> Result<ArchiveInfo>;

    /// Extracts `archive` into the existing directory `dest`. With `verify_md5`, a checksum
    /// mismatch fails with `FailedPrecondition` before anything is extracted.
    async fn restore(&self, archive: &Path, dest: &Path, options: &ArchiveOptions) -> Result<()>;

    /// Copies the tree `source` into the existing directory `dest` (volume clones).
    async fn copy_tree(&self, source: &Path, dest: &Path, options: &ArchiveOptions) -> Result<()>;

    /// Removes `archive` and its checksum. Not an error when they do not exist.
    async fn delete(&self, archive: &Path) -> Result<()>;
}
