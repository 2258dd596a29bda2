//! Mounting and unmounting.

use std::path::{Path, PathBuf};

use async_trait::async_trait;

use crate::error::Result;

/// One line of the mount table (`/proc/self/mountinfo`), with escapes decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Mount id.
    pub id: u32,
    /// Parent mount id.
    pub parent_id: u32,
    /// The path inside the source filesystem that is mounted (`/` for a whole filesystem).
    pub root: PathBuf,
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// Per-mount options (`rw`, `nosuid`...).
    pub mount_options: Vec<String>,
    /// Filesystem type (`lustre`, `beegfs`, `xfs`...).
    pub fs_type: String,
    /// Mount source (`10.0.0.1@tcp:/testfs`, `beegfs_nodev`...).
    pub source: String,
    /// Per-superblock options.
    pub super_options: Vec<String>,
}

impl MountEntry {
    /// Whether the mount is read-only.
    pub fn is_read_only(&self) -> bool {
        self.mount_options.iter().any(|o| o == "ro")
    }
}

/// Mounts, bind-mounts and unmounts.
///
/// Every method is bounded by the implementation's timeout: a filesystem that hangs gives
/// `DeadlineExceeded`, never a stuck RPC.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait Mounter: Send + Sync {
    /// Mounts `source` of `fs_type` on `target` with `options`, through the filesystem's
    /// mount helper where it needs one. Fails if `target` does not exist.
    async fn mount(
        &self,
        source: &str,
        target: &Path,
        fs_type: &str,
        options: &[String],
    ) -> Result<()>;

    /// Bind-mounts directory `source` on `target`; with `read_only` the bind is read-only
    /// (keeping the source's `nosuid`/`nodev`/`noexec`) when this returns, or undone and an
    /// error returned. A `source` or `target` that is a symbolic link or not a
    /// directory is `FailedPrecondition`, a missing one `NotFound`; links are never followed.
    async fn bind_mount(&self, source: &Path, target: &Path, read_only: bool) -> Result<()>;

    /// Unmounts `target`. Not an error when nothing is mounted there or `target` does not
    /// exist. Never follows a symbolic link at `target`. When the unmount does not finish
    /// within the timeout (a hung filesystem), falls back to a lazy unmount.
    async fn unmount(&self, target: &Path) -> Result<()>;

    /// Whether `path` is the root of a mount, answered without reading the mount table and
    /// without following a symbolic link at `path`. `NotFound` when `path` does not exist.
    async fn is_mount_point(&self, path: &Path) -> Result<bool>;

    /// The whole mount table of this process's mount namespace.
    async fn list_mounts(&self) -> Result<Vec<MountEntry>>;
}
