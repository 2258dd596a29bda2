//! Directory operations on a client mount: bounded in time, never following symbolic links.
//!
//! A BeeGFS mount whose servers are gone blocks system calls, so callers run these with
//! [`csi_core::blocking::try_blocking`]: the caller stops waiting after a timeout
//! (`DeadlineExceeded`); the thread finishes or stays blocked on its own.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path};

use csi_core::fs_paths::open_dir;
use csi_core::{Error, Result};

pub use csi_core::fs_paths::{check_no_symlinks, check_no_symlinks_below, existing_dirs};

/// Refuses `path` unless it lies strictly below `base`, reached from it by plain names
/// only (no `..`): what the driver is about to remove must be inside what it manages.
pub fn check_below(base: &Path, path: &Path) -> Result<()> {
    let plain = path.strip_prefix(base).is_ok_and(|rest| {
        rest.components().next().is_some()
            && rest.components().all(|c| matches!(c, Component::Normal(_)))
    });
    if plain {
        Ok(())
    } else {
        Err(Error::FailedPrecondition(format!(
            "{} is not a plain path below {}; refusing to remove it",
            path.display(),
            base.display()
        )))
    }
}

/// Whether `path` is a real directory (a symbolic link is not).
pub fn is_real_dir(path: &Path) -> Result<bool> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) => Ok(meta.file_type().is_dir()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io("stat", path, e)),
    }
}

/// Whether anything (a directory, a file, a link...) is at `path`, not following a final
/// symbolic link.
pub fn entry_exists(path: &Path) -> Result<bool> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io("stat", path, e)),
    }
}

/// Removes directory tree `path` without following symbolic links; not an error when it
/// does not exist. Anything but a directory at `path` (a link, a file) is refused and left
/// in place: the driver only ever makes directories there, so anything else is not its own.
pub fn remove_tree(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("stat", path, e)),
        Ok(meta) if meta.file_type().is_symlink() => Err(Error::FailedPrecondition(format!(
            "{} is a symbolic link, not a volume directory; left in place",
            path.display()
        ))),
        Ok(meta) if !meta.is_dir() => Err(Error::FailedPrecondition(format!(
            "{} is not a directory, so not one this driver made; left in place",
            path.display()
        ))),
        // remove_dir_all removes links as links and never descends through them.
        Ok(_) => match std::fs::remove_dir_all(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove directory tree", path, e)),
        },
    }
}

/// Sets the group of everything below `dir` (and `dir`) to `gid`, links included as links.
pub fn regroup_tree(dir: &Path, gid: u32) -> Result<()> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).map_err(|e| Error::io("stat", &path, e))?;
        if meta.gid() != gid {
            std::os::unix::fs::lchown(&path, None, Some(gid))
                .map_err(|e| Error::io("change group of", &path, e))?;
            if meta.is_dir() && meta.permissions().mode() & 0o2000 != 0 {
                // Changing the group may drop the setgid bit of directories; keep it.
                let mode = meta.permissions().mode() & 0o7777;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                    .map_err(|e| Error::io("set mode of", &path, e))?;
            }
        }
        if meta.is_dir() {
            for entry in
                std::fs::read_dir(&path).map_err(|e| Error::io("read directory", &path, e))?
            {
                let entry = entry.map_err(|e| Error::io("read directory", &path, e))?;
                stack.push(entry.path());
            }
        }
    }
    Ok(())
}

/// Sets the exact mode (special bits included) of directory `path`, not following links.
pub fn set_dir_mode(path: &Path, mode: u32) -> Result<()> {
    let dir = open_dir(path)?;
    let meta = dir.metadata().map_err(|e| Error::io("stat", path, e))?;
    if meta.permissions().mode() & 0o7777 != mode {
        dir.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io("set mode of", path, e))?;
    }
    Ok(())
}

/// Sets the owner of directory `path` where it differs, not following links.
pub fn set_owner(path: &Path, uid: Option<u32>, gid: Option<u32>) -> Result<()> {
    let dir = open_dir(path)?;
    let meta = dir.metadata().map_err(|e| Error::io("stat", path, e))?;
    let uid = uid.filter(|u| *u != meta.uid());
    let gid = gid.filter(|g| *g != meta.gid());
    if uid.is_some() || gid.is_some() {
        std::os::unix::fs::fchown(&dir, uid, gid)
            .map_err(|e| Error::io("change owner of", path, e))?;
    }
    Ok(())
}

/// Sizes of the filesystem holding `path`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsSpace {
    /// Total bytes.
    pub total: u64,
    /// Bytes available to unprivileged users.
    pub available: u64,
    /// Total inodes.
    pub inodes: u64,
    /// Free inodes.
    pub inodes_free: u64,
}

/// `statvfs` of `path`.
pub fn fs_space(path: &Path) -> Result<FsSpace> {
    let st = nix::sys::statvfs::statvfs(path)
        .map_err(|e| Error::io("statvfs", path, std::io::Error::from_raw_os_error(e as i32)))?;
    let frsize = st.fragment_size() as u64;
    Ok(FsSpace {
        total: (st.blocks() as u64).saturating_mul(frsize),
        available: (st.blocks_available() as u64).saturating_mul(frsize),
        inodes: st.files() as u64,
        inodes_free: st.files_free() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use csi_core::ErrorCode;

    #[test]
    fn trees_are_removed_without_following_links() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), b"x").unwrap();
        let vol = dir.path().join("vol");
        std::fs::create_dir_all(vol.join("a/b")).unwrap();
        std::fs::write(vol.join("a/b/f"), b"x").unwrap();
        std::os::unix::fs::symlink(&outside, vol.join("a/link")).unwrap();
        remove_tree(&vol).unwrap();
        assert!(!vol.exists());
        assert!(outside.join("keep").exists());
        remove_tree(&vol).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        assert_eq!(
            remove_tree(&link).unwrap_err().code(),
            ErrorCode::FailedPrecondition
        );
        assert!(outside.join("keep").exists());
        let file = dir.path().join("file");
        std::fs::write(&file, b"mine").unwrap();
        assert_eq!(
            remove_tree(&file).unwrap_err().code(),
            ErrorCode::FailedPrecondition
        );
        assert_eq!(std::fs::read(&file).unwrap(), b"mine");
        assert!(entry_exists(&file).unwrap() && entry_exists(&link).unwrap());
        assert!(!entry_exists(&vol).unwrap());
    }

    #[test]
    fn symlinked_components_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("k8s/all")).unwrap();
        check_no_symlinks(dir.path(), "k8s/all/missing/deeper").unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("k8s/evil")).unwrap();
        let err = check_no_symlinks(dir.path(), "k8s/evil/passwd").unwrap_err();
        assert_eq!(err.code(), ErrorCode::FailedPrecondition);
        assert!(!is_real_dir(&dir.path().join("k8s/evil")).unwrap());
        assert!(is_real_dir(&dir.path().join("k8s/all")).unwrap());
        assert!(!is_real_dir(&dir.path().join("nope")).unwrap());
    }

    #[test]
    fn only_plain_paths_below_a_base_pass() {
        let base = Path::new("/m/k8s");
        check_below(base, Path::new("/m/k8s/pvc-1")).unwrap();
        check_below(base, Path::new("/m/k8s/.csi/volumes/pvc-1")).unwrap();
        for bad in [
            "/m/k8s",
            "/m/k8s/",
            "/m/k8s/../etc",
            "/m/k8s/a/../../x",
            "/m/other",
            "/",
        ] {
            assert_eq!(
                check_below(base, Path::new(bad)).unwrap_err().code(),
                ErrorCode::FailedPrecondition,
                "{bad}"
            );
        }
    }

    #[test]
    fn trees_are_regrouped_and_modes_set() {
        let dir = tempfile::tempdir().unwrap();
        let vol = dir.path().join("vol");
        std::fs::create_dir_all(vol.join("sub")).unwrap();
        std::fs::write(vol.join("sub/f"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", vol.join("l")).unwrap();
        set_dir_mode(&vol, 0o2770).unwrap();
        regroup_tree(&vol, 3131).unwrap();
        for p in ["", "sub", "sub/f"] {
            assert_eq!(
                std::fs::symlink_metadata(vol.join(p)).unwrap().gid(),
                3131,
                "{p}"
            );
        }
        assert_eq!(
            std::fs::symlink_metadata(vol.join("l")).unwrap().gid(),
            3131
        );
        assert_ne!(std::fs::metadata("/etc/passwd").unwrap().gid(), 3131);
        assert_eq!(
            std::fs::metadata(&vol).unwrap().permissions().mode() & 0o7777,
            0o2770
        );
        set_owner(&vol, Some(12), None).unwrap();
        assert_eq!(std::fs::metadata(&vol).unwrap().uid(), 12);
        // A link put in a volume directory's place is never followed.
        let other = dir.path().join("other");
        std::fs::create_dir(&other).unwrap();
        std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o700)).unwrap();
        let link = dir.path().join("swapped");
        std::os::unix::fs::symlink(&other, &link).unwrap();
        assert!(set_dir_mode(&link, 0o777).is_err());
        assert!(set_owner(&link, Some(12), Some(12)).is_err());
        assert!(crate::quota::assign_group(&link, 3131).is_err());
        let meta = std::fs::metadata(&other).unwrap();
        assert_eq!(
            (meta.mode() & 0o7777, meta.uid(), meta.gid()),
            (0o700, 0, 0)
        );
        assert!(fs_space(dir.path()).unwrap().total > 0);
    }
}
