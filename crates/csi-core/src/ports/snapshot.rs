//! Cutting and restoring volume snapshots as archives. Shared by every backend.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// Which archiver writes the snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveTool {
    /// GNU tar at this path.
    Tar(PathBuf),
    /// mpifileutils `dtar` at this path (faster on a parallel filesystem).
    Dtar(PathBuf),
}

/// The checksum kept beside a snapshot archive, against corruption (a torn write, a bad
/// disk block, a truncated copy). It lies in the archive's own directory, so whoever could
/// forge an archive could rewrite its checksum too: the default is the fastest kind that
/// catches corruption, not a cryptographic one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChecksumKind {
    /// XXH3-128 in `xxh128sum` format (`ARCHIVE.xxh128`): hashes at memory speed.
    #[default]
    Xxh128,
    /// BLAKE3 in `b3sum` format (`ARCHIVE.b3`).
    Blake3,
    /// MD5 in `md5sum` format (`ARCHIVE.md5`), for tools that only know `md5sum -c`.
    Md5,
}

impl ChecksumKind {
    /// Every kind, in the order a restore looks for their checksum files.
    pub const ALL: [ChecksumKind; 3] = [
        ChecksumKind::Xxh128,
        ChecksumKind::Blake3,
        ChecksumKind::Md5,
    ];

    /// The parameter spelling: `xxh128`, `blake3` or `md5`.
    pub fn name(self) -> &'static str {
        match self {
            ChecksumKind::Xxh128 => "xxh128",
            ChecksumKind::Blake3 => "blake3",
            ChecksumKind::Md5 => "md5",
        }
    }

    /// Parses `xxh128`, `blake3` or `md5` (case and surrounding blanks ignored).
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        Self::ALL
            .into_iter()
            .find(|kind| kind.name().eq_ignore_ascii_case(text))
    }
}

/// How a snapshot archive is written and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveOptions {
    /// The archiver.
    pub tool: ArchiveTool,
    /// Write a checksum beside the archive and check it before every restore.
    pub verify: bool,
    /// Which checksum `verify` writes (restores check whichever checksum file exists).
    pub checksum: ChecksumKind,
}

/// [`ArchiveOptions`] as snapshot records keep them, so a restore extracts with the tool
/// and checks the checksum the archive was made with, whatever the settings are now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolRecord {
    /// `tar` or `dtar`.
    pub utility: String,
    /// The program.
    pub path: PathBuf,
    /// Whether a checksum is kept and checked (`verifyMd5` in records of earlier versions).
    #[serde(alias = "verifyMd5")]
    pub verify: bool,
    /// Which checksum is kept; records of earlier versions kept MD5.
    #[serde(default = "legacy_checksum")]
    pub checksum: ChecksumKind,
}

/// The checksum of records written before the choice existed.
fn legacy_checksum() -> ChecksumKind {
    ChecksumKind::Md5
}

impl From<&ArchiveOptions> for ToolRecord {
    fn from(o: &ArchiveOptions) -> Self {
        let (utility, path) = match &o.tool {
            ArchiveTool::Tar(p) => ("tar", p.clone()),
            ArchiveTool::Dtar(p) => ("dtar", p.clone()),
        };
        Self {
            utility: utility.into(),
            path,
            verify: o.verify,
            checksum: o.checksum,
        }
    }
}

impl ToolRecord {
    /// Back to the engine's options.
    pub fn options(&self) -> ArchiveOptions {
        let tool = if self.utility == "dtar" {
            ArchiveTool::Dtar(self.path.clone())
        } else {
            ArchiveTool::Tar(self.path.clone())
        };
        ArchiveOptions {
            tool,
            verify: self.verify,
            checksum: self.checksum,
        }
    }
}

/// A checksum of a finished archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveChecksum {
    /// The algorithm.
    pub kind: ChecksumKind,
    /// Lowercase hex digest.
    pub hex: String,
}

/// What a finished archive looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveInfo {
    /// Archive size in bytes.
    pub size_bytes: u64,
    /// The archive's checksum, when verification is on.
    pub checksum: Option<ArchiveChecksum>,
}

/// Writes, checks, restores and removes snapshot archives of volume directories.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait SnapshotEngine: Send + Sync {
    /// Archives directory `source` (owners, modes, symlinks, hard links and extended
    /// attributes included) into `archive`. The archive appears under its final name only
    /// once complete (and checksummed, with `verify`): a crash leaves no half archive there.
    async fn create(
        &self,
        source: &Path,
        archive: &Path,
        options: &ArchiveOptions,
    ) -> Result<ArchiveInfo>;

    /// Extracts `archive` into the existing directory `dest`. With `verify`, a checksum
    /// mismatch fails with `FailedPrecondition` before anything is extracted.
    async fn restore(&self, archive: &Path, dest: &Path, options: &ArchiveOptions) -> Result<()>;

    /// Copies the tree `source` into the existing directory `dest` (volume clones).
    async fn copy_tree(&self, source: &Path, dest: &Path, options: &ArchiveOptions) -> Result<()>;

    /// Removes `archive` and its checksum. Not an error when they do not exist.
    async fn delete(&self, archive: &Path) -> Result<()>;
}
