//! Directory work on a mounted filesystem: volume directories, the metadata directory, the
//! trash, free space. Callers run them with [`csi_core::blocking::try_blocking`], so a
//! filesystem that hangs gives `DeadlineExceeded` instead of a stuck RPC.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use csi_core::fs_paths::open_dir;
use csi_core::records::{check_private_dir, ensure_private_dir};
use csi_core::{Error, Result};
use tracing::{info, warn};

/// What a path is, without following a final symbolic link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirState {
    /// Nothing there.
    Missing,
    /// A directory.
    Directory,
    /// Something else (file, symbolic link...).
    Other,
}

/// What `path` is.
pub fn dir_state(path: &Path) -> Result<DirState> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Ok(DirState::Directory),
        Ok(_) => Ok(DirState::Other),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(DirState::Missing),
        Err(e) => Err(Error::io("stat", path, e)),
    }
}

/// Creates the volume directory (an existing directory is fine: a retried create) and sets
/// its mode, through the directory itself. A non-directory in the way, a link included, is
/// `FailedPrecondition`. Its owner is set last, by [`hand_over_volume_dir`], once the
/// quota is in place: until then no user owns it, so none can swap it for a link under
/// the steps that still name it by path (`lfs project`).
pub fn create_volume_dir(path: &Path, mode: u32) -> Result<()> {
    match fs::create_dir(path) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io("create volume directory", path, e)),
    }
    set_volume_dir_mode(path, mode)
}

/// Sets the mode of the volume directory, through the directory itself.
pub fn set_volume_dir_mode(path: &Path, mode: u32) -> Result<()> {
    open_dir(path)?
        .set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io("chmod", path, e))
}

/// Gives the volume directory its owner and group, through the directory itself.
pub fn hand_over_volume_dir(path: &Path, uid: Option<u32>, gid: Option<u32>) -> Result<()> {
    if uid.is_none() && gid.is_none() {
        return Ok(());
    }
    let dir = open_dir(path)?;
    std::os::unix::fs::fchown(&dir, uid, gid).map_err(|e| Error::io("chown", path, e))
}

/// Creates the snapshot folder `path` below `root` (with its missing parents) and makes it
/// readable by root only (archives hold volumes' data). A folder given by a parameter may
/// lie where users write, so no symbolic link on the way is followed, and a folder someone
/// else made first (theirs, or writable by others) is refused: they could read every
/// archive in it, or put their own in its place. Both are `FailedPrecondition`.
pub fn ensure_snapshot_folder(root: &Path, path: &Path) -> Result<()> {
    csi_core::fs_paths::check_no_symlinks_below(root, path)?;
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| Error::io("create directory", parent, e))?;
    }
    csi_core::records::ensure_private_dir(path)
}

/// Directory `dir` below `root`, reached through no symbolic link: every component below
/// `root` is checked, so a link in the filesystem can lead neither out of it nor to another
/// volume's directory. `NotFound` when it does not exist, `FailedPrecondition` for a link
/// or a non-directory.
pub fn resolve_inside(root: &Path, dir: &Path) -> Result<PathBuf> {
    csi_core::fs_paths::check_no_symlinks_below(root, dir)?;
    match dir_state(dir)? {
        DirState::Directory => Ok(dir.to_path_buf()),
        DirState::Missing => Err(Error::NotFound(format!(
            "volume directory {} does not exist",
            dir.display()
        ))),
        DirState::Other => Err(Error::FailedPrecondition(format!(
            "{} is not a directory",
            dir.display()
        ))),
    }
}

/// Moves `dir` into `trash` under a unique name (an instant rename on the same filesystem),
/// so the volume is gone at once and its content can be removed in the background. A
/// symbolic link in its place is removed itself, never followed. `false` when nothing was
/// there.
pub fn move_to_trash(dir: &Path, trash: &Path) -> Result<bool> {
    match dir_state(dir)? {
        DirState::Missing => Ok(false),
        DirState::Other => {
            fs::remove_file(dir).map_err(|e| Error::io("remove", dir, e))?;
            Ok(true)
        }
        DirState::Directory => {
            // The trash is the driver's own, as the metadata directory holding it: a
            // folder planted there could send a volume, or its purge, anywhere.
            if let Some(meta) = trash.parent() {
                ensure_private_dir(meta)?;
            }
            ensure_private_dir(trash)?;
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let (secs, nanos) = crate::records::now();
            let dest = trash.join(format!("{name}.{secs}{nanos:09}"));
            fs::rename(dir, &dest).map_err(|e| Error::io("move to trash", dir, e))?;
            Ok(true)
        }
    }
}

/// Removes everything in `trash`, which must be the driver's own folder (a link or a
/// folder someone else made is refused). `remove_dir_all` never follows symbolic links.
pub fn purge(trash: &Path) -> Result<()> {
    if !check_private_dir(trash)? {
        return Ok(());
    }
    let entries = match fs::read_dir(trash) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("list trash", trash, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list trash", trash, e))?;
        let path = entry.path();
        let result = match entry.file_type() {
            Ok(t) if t.is_dir() => fs::remove_dir_all(&path),
            _ => fs::remove_file(&path),
        };
        match result {
            Ok(()) => info!(path = %path.display(), "deleted volume data removed"),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => {
                warn!(path = %path.display(), error = %e, "could not remove deleted volume data yet")
            }
        }
    }
    Ok(())
}

/// Space and inodes of a filesystem.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FsSpace {
    /// Total bytes.
    pub bytes_total: u64,
    /// Bytes free.
    pub bytes_free: u64,
    /// Bytes available to unprivileged users.
    pub bytes_available: u64,
    /// Total inodes.
    pub inodes_total: u64,
    /// Inodes available.
    pub inodes_available: u64,
}

/// `statvfs` of the filesystem `path` is on.
pub fn statvfs(path: &Path) -> Result<FsSpace> {
    let s = nix::sys::statvfs::statvfs(path)
        .map_err(|e| Error::io("statvfs", path, std::io::Error::from(e)))?;
    let frag = s.fragment_size() as u64;
    Ok(FsSpace {
        bytes_total: (s.blocks() as u64).saturating_mul(frag),
        bytes_free: (s.blocks_free() as u64).saturating_mul(frag),
        bytes_available: (s.blocks_available() as u64).saturating_mul(frag),
        inodes_total: s.files() as u64,
        inodes_available: s.files_available() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use csi_core::ErrorCode;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn volume_dirs_get_their_mode_and_owner_and_retries_are_fine() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("pvc-1");
        for _ in 0..2 {
            create_volume_dir(&dir, 0o2775).unwrap();
            hand_over_volume_dir(&dir, Some(1001), Some(1002)).unwrap();
        }
        let meta = fs::metadata(&dir).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o2775);
        assert_eq!((meta.uid(), meta.gid()), (1001, 1002));
        fs::write(root.path().join("file"), b"x").unwrap();
        let err = create_volume_dir(&root.path().join("file"), 0o777).unwrap_err();
        assert_eq!(err.code(), ErrorCode::FailedPrecondition);
        // A link swapped in for the directory is never followed, by the mode or the owner.
        let other = root.path().join("other");
        fs::create_dir(&other).unwrap();
        fs::set_permissions(&other, fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::symlink(&other, root.path().join("pvc-2")).unwrap();
        let link = root.path().join("pvc-2");
        let err = create_volume_dir(&link, 0o777).unwrap_err();
        assert_eq!(err.code(), ErrorCode::FailedPrecondition);
        let err = hand_over_volume_dir(&link, Some(1001), None).unwrap_err();
        assert_eq!(err.code(), ErrorCode::FailedPrecondition);
        let meta = fs::metadata(&other).unwrap();
        assert_eq!((meta.mode() & 0o7777, meta.uid()), (0o700, 0));
    }

    #[test]
    fn symbolic_links_cannot_lead_out() {
        let outside = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("escape")).unwrap();
        fs::create_dir(root.path().join("inside")).unwrap();
        fs::create_dir_all(root.path().join("dirs/pvc-2")).unwrap();
        fs::write(root.path().join("file"), b"x").unwrap();
        // Links that stay inside the filesystem are refused too: the one at the volume's
        // place, and one on the way to it.
        std::os::unix::fs::symlink("pvc-2", root.path().join("dirs/pvc-1")).unwrap();
        std::os::unix::fs::symlink("dirs", root.path().join("via")).unwrap();
        for link in ["escape", "dirs/pvc-1", "via/pvc-2", "file"] {
            let err = resolve_inside(root.path(), &root.path().join(link)).unwrap_err();
            assert_eq!(err.code(), ErrorCode::FailedPrecondition, "{link}: {err}");
        }
        assert_eq!(
            resolve_inside(root.path(), outside.path())
                .unwrap_err()
                .code(),
            ErrorCode::FailedPrecondition
        );
        assert_eq!(
            resolve_inside(root.path(), &root.path().join("missing"))
                .unwrap_err()
                .code(),
            ErrorCode::NotFound
        );
        assert!(
            resolve_inside(root.path(), &root.path().join("inside"))
                .unwrap()
                .ends_with("inside")
        );
    }

    #[test]
    fn trash_takes_the_tree_and_purge_never_follows_links() {
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("precious"), b"keep").unwrap();
        let root = tempfile::tempdir().unwrap();
        let vol = root.path().join("pvc-1");
        fs::create_dir_all(vol.join("a/b")).unwrap();
        fs::write(vol.join("a/b/data"), b"x").unwrap();
        std::os::unix::fs::symlink(outside.path(), vol.join("link")).unwrap();
        let trash = root.path().join(".pfs-csi/trash");
        assert!(move_to_trash(&vol, &trash).unwrap());
        assert!(!vol.exists());
        assert!(!move_to_trash(&vol, &trash).unwrap());
        assert_eq!(fs::read_dir(&trash).unwrap().count(), 1);
        purge(&trash).unwrap();
        assert_eq!(fs::read_dir(&trash).unwrap().count(), 0);
        assert_eq!(fs::read(outside.path().join("precious")).unwrap(), b"keep");
        // A symbolic link where the volume was is removed, not followed.
        std::os::unix::fs::symlink(outside.path(), &vol).unwrap();
        assert!(move_to_trash(&vol, &trash).unwrap());
        assert!(outside.path().join("precious").exists());
    }

    #[test]
    fn a_trash_the_driver_did_not_make_is_neither_filled_nor_purged() {
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("precious"), b"keep").unwrap();
        let root = tempfile::tempdir().unwrap();
        let vol = root.path().join("pvc-1");
        fs::create_dir(&vol).unwrap();
        fs::create_dir(root.path().join(".pfs-csi")).unwrap();
        let trash = root.path().join(".pfs-csi/trash");
        std::os::unix::fs::symlink(outside.path(), &trash).unwrap();
        let err = move_to_trash(&vol, &trash).unwrap_err();
        assert_eq!(err.code(), ErrorCode::FailedPrecondition, "{err}");
        assert!(vol.is_dir(), "the volume stays where it was");
        assert_eq!(
            purge(&trash).unwrap_err().code(),
            ErrorCode::FailedPrecondition
        );
        assert_eq!(fs::read(outside.path().join("precious")).unwrap(), b"keep");
        // A metadata directory a user owns is not the driver's either.
        fs::remove_file(&trash).unwrap();
        std::os::unix::fs::chown(root.path().join(".pfs-csi"), Some(1000), None).unwrap();
        let err = move_to_trash(&vol, &trash).unwrap_err();
        assert_eq!(err.code(), ErrorCode::FailedPrecondition, "{err}");
        assert!(vol.is_dir());
    }

    #[test]
    fn a_snapshot_folder_is_private_and_reached_through_no_link() {
        let outside = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let folder = root.path().join("csi-snapshots/team");
        ensure_snapshot_folder(root.path(), &folder).unwrap();
        assert_eq!(
            fs::metadata(&folder).unwrap().permissions().mode() & 0o777,
            0o700
        );
        std::os::unix::fs::symlink(outside.path(), root.path().join("linked")).unwrap();
        for path in [root.path().join("linked"), root.path().join("linked/sub")] {
            let err = ensure_snapshot_folder(root.path(), &path).unwrap_err();
            assert_eq!(err.code(), ErrorCode::FailedPrecondition, "{err}");
        }
        assert_eq!(
            fs::metadata(outside.path()).unwrap().permissions().mode() & 0o777,
            fs::metadata(root.path()).unwrap().permissions().mode() & 0o777,
            "the link's target keeps its mode"
        );
        assert!(!outside.path().join("sub").exists());
    }

    #[test]
    fn a_snapshot_folder_someone_else_made_is_refused_and_left_alone() {
        let root = tempfile::tempdir().unwrap();
        let folder = root.path().join("scratch/snaps");
        fs::create_dir_all(&folder).unwrap();
        fs::set_permissions(&folder, fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::chown(&folder, Some(4242), Some(4242)).unwrap();
        let err = ensure_snapshot_folder(root.path(), &folder).unwrap_err();
        assert_eq!(err.code(), ErrorCode::FailedPrecondition, "{err}");
        assert!(err.to_string().contains("4242"), "{err}");
        let meta = fs::metadata(&folder).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o755, "left as it was");
        // One the driver made earlier with looser bits is its own: made private.
        std::os::unix::fs::chown(&folder, Some(0), Some(0)).unwrap();
        ensure_snapshot_folder(root.path(), &folder).unwrap();
        let meta = fs::metadata(&folder).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o700);
        // Writable by others: anyone could have swapped archives in it.
        fs::set_permissions(&folder, fs::Permissions::from_mode(0o777)).unwrap();
        let err = ensure_snapshot_folder(root.path(), &folder).unwrap_err();
        assert_eq!(err.code(), ErrorCode::FailedPrecondition, "{err}");
    }
}
