//! Paths below a mount point, walked component by component without following a symbolic
//! link: a link planted in a shared filesystem cannot redirect an operation out of the
//! place it was meant for. Blocking calls: run them under a timeout on a mounted
//! filesystem.

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path};

use crate::error::{Error, Result};

/// The directory at `path`, opened for reading without following a link there: a link or
/// anything but a directory is `FailedPrecondition`. Changes made through it (its mode, its
/// owner) land on that directory even if a link is put in its place meanwhile.
pub fn open_dir(path: &Path) -> Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENOTDIR | libc::ELOOP) => Error::FailedPrecondition(format!(
                "{} is not a directory; refusing to follow it",
                path.display()
            )),
            _ => Error::io("open", path, e),
        })
}

/// The mode of a volume directory while it is being filled: this process's user alone.
pub const FILLING_MODE: u32 = 0o700;

/// Readies the directory at `path` for a fill that runs as this process: makes it this
/// process's, then mode [`FILLING_MODE`] (owner first: once it is ours its former owner can
/// no longer change the mode), then removes everything in it, which a former owner or an
/// earlier attempt left. The directory is opened without following a link, and all of this goes
/// through that descriptor; links inside are removed as links, never followed.
pub fn make_private_and_empty(path: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::PermissionsExt;
    let dir = open_dir(path)?;
    let (uid, gid) = (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    );
    std::os::unix::fs::fchown(&dir, Some(uid), Some(gid))
        .map_err(|e| Error::io("chown", path, e))?;
    dir.set_permissions(std::fs::Permissions::from_mode(FILLING_MODE))
        .map_err(|e| Error::io("chmod", path, e))?;
    let here = std::path::PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    let entries = std::fs::read_dir(&here).map_err(|e| Error::io("list", path, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list", path, e))?;
        let child = here.join(entry.file_name());
        let is_dir = entry
            .file_type()
            .map_err(|e| Error::io("stat", path.join(entry.file_name()), e))?
            .is_dir();
        let removed = if is_dir {
            std::fs::remove_dir_all(&child)
        } else {
            std::fs::remove_file(&child)
        };
        match removed {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io("remove", path.join(entry.file_name()), e));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Refuses a path below `root` whose existing components include a symbolic link, so a
/// link planted in the filesystem cannot redirect an operation out of it.
pub fn check_no_symlinks(root: &Path, relative: &str) -> Result<()> {
    existing_dirs(root, relative).map(|_| ())
}

/// [`check_no_symlinks`] for `path`, which must lie below `root`: a path elsewhere is
/// `FailedPrecondition`.
pub fn check_no_symlinks_below(root: &Path, path: &Path) -> Result<()> {
    let relative = path.strip_prefix(root).map_err(|_| {
        Error::FailedPrecondition(format!(
            "{} is not below the filesystem mounted at {}",
            path.display(),
            root.display()
        ))
    })?;
    check_no_symlinks(root, &relative.to_string_lossy())
}

/// How many leading components of `relative` below `root` are real directories, counted
/// from the top up to the first that is missing or not a directory. Refused like
/// [`check_no_symlinks`] when an existing component is a symbolic link.
pub fn existing_dirs(root: &Path, relative: &str) -> Result<usize> {
    let mut current = root.to_path_buf();
    let mut dirs = 0;
    let mut all_dirs = true;
    for component in Path::new(relative).components() {
        match component {
            Component::Normal(part) => current.push(part),
            Component::CurDir | Component::RootDir => continue,
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "{relative:?} is not a clean relative path"
                )));
            }
        }
        match std::fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(Error::FailedPrecondition(format!(
                    "{} is a symbolic link; refusing to follow it",
                    current.display()
                )));
            }
            Ok(meta) => {
                all_dirs &= meta.is_dir();
                dirs += usize::from(all_dirs);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(dirs),
            Err(e) => return Err(Error::io("stat", &current, e)),
        }
    }
    Ok(dirs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn existing_directories_are_counted_from_the_top() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("k8s/all")).unwrap();
        std::fs::write(dir.path().join("k8s/file"), b"x").unwrap();
        assert_eq!(existing_dirs(dir.path(), "k8s/all/v").unwrap(), 2);
        assert_eq!(existing_dirs(dir.path(), "/k8s/all").unwrap(), 2);
        assert_eq!(existing_dirs(dir.path(), "k8s/none/v").unwrap(), 1);
        assert_eq!(existing_dirs(dir.path(), "none").unwrap(), 0);
        // A file is not a directory, and nothing can be below it.
        let err = existing_dirs(dir.path(), "k8s/file/v").unwrap_err();
        assert_eq!(err.code(), ErrorCode::Internal, "{err}");
        assert_eq!(existing_dirs(dir.path(), "k8s/file").unwrap(), 1);
        std::os::unix::fs::symlink("all", dir.path().join("k8s/link")).unwrap();
        let err = existing_dirs(dir.path(), "k8s/link/v").unwrap_err();
        assert_eq!(err.code(), ErrorCode::FailedPrecondition);
        let err = existing_dirs(dir.path(), "k8s/../etc").unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidArgument);
    }

    #[test]
    fn every_existing_component_is_checked_for_a_link() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("k8s/all")).unwrap();
        check_no_symlinks(dir.path(), "k8s/all/missing/deeper").unwrap();
        std::os::unix::fs::symlink("all", dir.path().join("k8s/other")).unwrap();
        for rel in ["k8s/other", "k8s/other/v", "/k8s/other"] {
            let err = check_no_symlinks(dir.path(), rel).unwrap_err();
            assert_eq!(err.code(), ErrorCode::FailedPrecondition, "{rel}: {err}");
            assert!(err.to_string().contains("symbolic link"), "{err}");
        }
        // The same by full path; a path outside the root is refused too.
        let err = check_no_symlinks_below(dir.path(), &dir.path().join("k8s/other/v"));
        assert!(err.unwrap_err().to_string().contains("symbolic link"));
        check_no_symlinks_below(dir.path(), &dir.path().join("k8s/all/v")).unwrap();
        let err = check_no_symlinks_below(dir.path(), Path::new("/etc")).unwrap_err();
        assert_eq!(err.code(), ErrorCode::FailedPrecondition);
    }

    #[test]
    fn a_directory_made_ready_for_a_fill_is_private_empty_and_followed_nowhere() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("keep"), b"x").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("vol");
        std::fs::create_dir_all(d.join("sub/deeper")).unwrap();
        std::fs::write(d.join("sub/deeper/f"), b"x").unwrap();
        std::fs::write(d.join("top"), b"x").unwrap();
        std::os::unix::fs::symlink(outside.path(), d.join("link")).unwrap();
        std::os::unix::fs::symlink(outside.path(), d.join("sub/link")).unwrap();
        // Handed to a user by an earlier attempt.
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::os::unix::fs::chown(&d, Some(4242), Some(4242)).unwrap();
        make_private_and_empty(&d).unwrap();
        let meta = std::fs::metadata(&d).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o700);
        assert_eq!(meta.uid(), nix::unistd::geteuid().as_raw());
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0);
        assert!(outside.path().join("keep").exists(), "nothing followed");
        // A link in the directory's place is refused, its target untouched.
        let link = dir.path().join("swapped");
        std::os::unix::fs::symlink(outside.path(), &link).unwrap();
        assert_eq!(
            make_private_and_empty(&link).unwrap_err().code(),
            ErrorCode::FailedPrecondition
        );
        assert!(outside.path().join("keep").exists());
    }
}
