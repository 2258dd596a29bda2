//! Root checks and the mount table.

use std::path::{Path, PathBuf};

pub use pfs_sim::serve::cleanup::{mounts_under, unmount_under};

/// Fails clearly unless running as root: these tests make real mounts.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests start the plugins against the simulator, which makes real bind mounts: \
         run them as root (or in a privileged container)"
    );
}

/// Whether `path` is a mount point (in this process's mount namespace).
pub fn is_mount_point(path: &Path) -> bool {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    pfs_sim::serve::cleanup::parse_mount_points(&table).contains(&path)
}

/// Mount points at or below `dir` (empty when the table cannot be read).
pub fn mounted_below(dir: &Path) -> Vec<PathBuf> {
    mounts_under(dir).unwrap_or_default()
}
