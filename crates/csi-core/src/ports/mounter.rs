//! Mounting and unmounting.

use std::path::{Path, PathBuf};

use async_trait::async_trait;

use crate::error::{Error, ErrorCode, Result};

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

    /// Whether this mount shows directory `dir`, by the mount table `mounts`: the same
    /// filesystem (type, source and superblock options) as the mount `dir` lies on, and
    /// the same directory of it as root. `false` when no mount of `mounts` holds `dir`.
    pub fn shows(&self, mounts: &[MountEntry], dir: &Path) -> bool {
        // The last mounted of the deepest mount points above `dir` is the one it lies on.
        let Some(on) = mounts
            .iter()
            .filter(|m| dir.starts_with(&m.mount_point))
            .max_by_key(|m| m.mount_point.components().count())
        else {
            return false;
        };
        let below = dir.strip_prefix(&on.mount_point).unwrap_or(Path::new(""));
        self.fs_type == on.fs_type
            && self.source == on.source
            && self.super_options == on.super_options
            && self.root == on.root.join(below)
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

    /// [`Self::bind_mount`] of `source`, which is `mount` or a directory below it, once
    /// something is mounted at `mount` (a volume's staging mount): `FailedPrecondition`
    /// when nothing is, or `mount` does not exist; `Internal` when `source` is not at or
    /// below `mount`. By default [`Self::is_mount_point`], then [`Self::bind_mount`].
    async fn bind_mount_below(
        &self,
        mount: &Path,
        source: &Path,
        target: &Path,
        read_only: bool,
    ) -> Result<()> {
        check_below(mount, source)?;
        match self.is_mount_point(mount).await {
            Ok(true) => {}
            Ok(false) => return Err(not_mounted(mount)),
            Err(e) if e.code() == ErrorCode::NotFound => return Err(not_mounted(mount)),
            Err(e) => return Err(e),
        }
        self.bind_mount(source, target, read_only).await
    }

    /// Unmounts `target`. Not an error when nothing is mounted there or `target` does not
    /// exist. Never follows a symbolic link at `target`. When the unmount does not finish
    /// within the timeout (a hung filesystem), falls back to a lazy unmount.
    async fn unmount(&self, target: &Path) -> Result<()>;

    /// Whether `path` is the root of a mount, answered without reading the mount table and
    /// without following a symbolic link at `path`. `NotFound` when `path` does not exist.
    async fn is_mount_point(&self, path: &Path) -> Result<bool>;

    /// The whole mount table of this process's mount namespace.
    async fn list_mounts(&self) -> Result<Vec<MountEntry>>;

    /// The id of the mount whose root `path` is (the mount table's first field; a mount
    /// made there later gets another), `None` when `path` is no mount point, `NotFound` when
    /// it does not exist. Never follows a symbolic link at `path`. By default
    /// [`Mounter::is_mount_point`], then the mount table.
    async fn mount_id(&self, path: &Path) -> Result<Option<u32>> {
        if !self.is_mount_point(path).await? {
            return Ok(None);
        }
        top_mount_id(&self.list_mounts().await?, path).map(Some)
    }

    /// Unmounts whatever is mounted at `path`, stacked mounts one by one (a stage or publish
    /// retried after a lost reply stacks one more each time). Nothing mounted is not an
    /// error. Returns whether `path` exists; an error when something is still mounted there
    /// after [`MAX_STACKED_MOUNTS`] unmounts. By default [`unmount_one_by_one`].
    async fn unmount_all(&self, path: &Path) -> Result<bool> {
        unmount_one_by_one(self, path).await
    }
}

/// The id of the topmost mount at `path` in `mounts`, which `path` is known to be the root of.
pub(crate) fn top_mount_id(mounts: &[MountEntry], path: &Path) -> Result<u32> {
    mounts
        .iter()
        .rev()
        .find(|m| m.mount_point == path)
        .map(|m| m.id)
        .ok_or_else(|| {
            Error::Internal(format!(
                "{} is a mount point the mount table does not list",
                path.display()
            ))
        })
}

/// Most mounts [`Mounter::unmount_all`] takes off one place.
pub const MAX_STACKED_MOUNTS: usize = 8;

/// [`Mounter::unmount_all`] from [`Mounter::unmount`] and [`Mounter::is_mount_point`]:
/// unmounts first and checks after, since a check of a mount whose filesystem hangs never
/// answers while an unmount falls back to a lazy one; after the unmount the check stats the
/// directory below.
pub async fn unmount_one_by_one<M: Mounter + ?Sized>(mounter: &M, path: &Path) -> Result<bool> {
    for _ in 0..MAX_STACKED_MOUNTS {
        mounter.unmount(path).await?;
        match mounter.is_mount_point(path).await {
            Ok(true) => continue,
            Ok(false) => return Ok(true),
            Err(e) if e.code() == ErrorCode::NotFound => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    Err(still_mounted(path))
}

/// `source` relative to `mount`; `Internal` when it is not at or below it.
pub(crate) fn check_below<'a>(mount: &Path, source: &'a Path) -> Result<&'a Path> {
    source.strip_prefix(mount).map_err(|_| {
        Error::Internal(format!(
            "bind source {} is not at or below {}",
            source.display(),
            mount.display()
        ))
    })
}

/// The error of a [`Mounter::bind_mount_below`] with nothing mounted at `mount`.
pub(crate) fn not_mounted(mount: &Path) -> Error {
    Error::FailedPrecondition(format!(
        "nothing is mounted at {}: the volume is not staged there",
        mount.display()
    ))
}

/// The error of an [`Mounter::unmount_all`] that leaves something mounted.
pub(crate) fn still_mounted(path: &Path) -> Error {
    Error::FailedPrecondition(format!(
        "{} is still a mount point after {MAX_STACKED_MOUNTS} unmounts",
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A mounter of its own (mocks replace default methods too): a list of mount points,
    /// stacked where one repeats.
    #[derive(Default)]
    struct Table(Mutex<Vec<PathBuf>>);

    #[async_trait]
    impl Mounter for Table {
        async fn mount(&self, _: &str, target: &Path, _: &str, _: &[String]) -> Result<()> {
            self.0.lock().unwrap().push(target.to_path_buf());
            Ok(())
        }
        async fn bind_mount(&self, _: &Path, target: &Path, _: bool) -> Result<()> {
            self.0.lock().unwrap().push(target.to_path_buf());
            Ok(())
        }
        async fn unmount(&self, target: &Path) -> Result<()> {
            let mut table = self.0.lock().unwrap();
            if let Some(i) = table.iter().rposition(|p| p == target) {
                table.remove(i);
            }
            Ok(())
        }
        async fn is_mount_point(&self, path: &Path) -> Result<bool> {
            if path.starts_with("/gone") {
                return Err(Error::NotFound(path.display().to_string()));
            }
            Ok(self.0.lock().unwrap().iter().any(|p| p == path))
        }
        async fn list_mounts(&self) -> Result<Vec<MountEntry>> {
            Ok(Vec::new())
        }
    }

    #[tokio::test]
    async fn the_default_methods_check_before_they_bind_and_unwind_every_mount() {
        let (staged, target) = (Path::new("/staging"), Path::new("/target"));
        let t = Table::default();
        let source = staged.join("vol");
        for (mount, code) in [
            (staged, ErrorCode::FailedPrecondition),
            (Path::new("/gone"), ErrorCode::FailedPrecondition),
        ] {
            let err = t
                .bind_mount_below(mount, &mount.join("vol"), target, false)
                .await
                .unwrap_err();
            assert_eq!(err.code(), code, "{err}");
        }
        t.mount("fs", staged, "tmpfs", &[]).await.unwrap();
        let err = t
            .bind_mount_below(staged, Path::new("/elsewhere"), target, false)
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::Internal, "{err}");
        assert!(!t.is_mount_point(target).await.unwrap());
        for _ in 0..2 {
            t.bind_mount_below(staged, &source, target, false)
                .await
                .unwrap();
        }
        assert!(t.unmount_all(target).await.unwrap());
        assert!(!t.is_mount_point(target).await.unwrap());
        assert!(!t.unmount_all(Path::new("/gone/t")).await.unwrap());
    }

    #[test]
    fn a_mount_shows_a_source_only_from_the_same_filesystem_and_directory() {
        let entry = |point: &str, root: &str, source: &str, conf: &str| MountEntry {
            id: 0,
            parent_id: 0,
            root: root.into(),
            mount_point: point.into(),
            mount_options: vec!["rw".into()],
            fs_type: "beegfs".into(),
            source: source.into(),
            super_options: vec![format!("cfgFile={conf}")],
        };
        let mounts = vec![
            entry("/", "/", "/dev/vda", "-"),
            entry("/mnt/a", "/", "beegfs_nodev", "/etc/a.conf"),
            entry("/mnt/b", "/", "beegfs_nodev", "/etc/b.conf"),
            entry("/mnt/a/vols", "/k8s", "beegfs_nodev", "/etc/a.conf"),
        ];
        let source = Path::new("/mnt/a/vols/v1");
        let bind = |root: &str, conf: &str| entry("/pod/t", root, "beegfs_nodev", conf);
        // On the deepest mount above the source, whose root is /k8s.
        assert!(bind("/k8s/v1", "/etc/a.conf").shows(&mounts, source));
        assert!(!bind("/vols/v1", "/etc/a.conf").shows(&mounts, source));
        assert!(!bind("/k8s/v2", "/etc/a.conf").shows(&mounts, source));
        // The same path on another BeeGFS filesystem.
        assert!(!bind("/k8s/v1", "/etc/b.conf").shows(&mounts, source));
        assert!(mounts[1].shows(&mounts, Path::new("/mnt/a")));
    }

    /// A mounter with `stacked` mounts at every path, whose check hangs while one is there.
    fn hung_stack(stacked: usize) -> (MockMounter, Arc<AtomicUsize>) {
        let left = Arc::new(AtomicUsize::new(stacked));
        let mut m = MockMounter::new();
        let l = left.clone();
        m.expect_unmount().returning(move |_| {
            let _ = l.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
            Ok(())
        });
        let l = left.clone();
        m.expect_is_mount_point().returning(move |p| {
            if l.load(Ordering::SeqCst) > 0 && !p.ends_with("unhung") {
                return Err(Error::DeadlineExceeded("stat".into()));
            }
            Ok(l.load(Ordering::SeqCst) > 0)
        });
        (m, left)
    }

    #[tokio::test]
    async fn unmount_one_by_one_unmounts_before_it_checks_and_unwinds_stacked_mounts() {
        let (m, left) = hung_stack(1);
        assert!(unmount_one_by_one(&m, Path::new("/staging")).await.unwrap());
        assert_eq!(left.load(Ordering::SeqCst), 0);

        let (m, left) = hung_stack(3);
        assert!(
            unmount_one_by_one(&m, Path::new("/x/unhung"))
                .await
                .unwrap()
        );
        assert_eq!(left.load(Ordering::SeqCst), 0);

        let (m, _) = hung_stack(MAX_STACKED_MOUNTS + 1);
        let err = unmount_one_by_one(&m, Path::new("/x/unhung"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::FailedPrecondition);

        let mut gone = MockMounter::new();
        gone.expect_unmount().returning(|_| Ok(()));
        gone.expect_is_mount_point()
            .returning(|p| Err(Error::NotFound(p.display().to_string())));
        assert!(!unmount_one_by_one(&gone, Path::new("/gone")).await.unwrap());
    }
}
