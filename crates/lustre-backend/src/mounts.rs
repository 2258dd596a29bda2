//! Shared, reference-counted mounts of whole filesystems.
//!
//! The controller keeps each filesystem mounted at its mount point for as long as it runs and
//! mounts it again when it vanished. A node counts the staged volumes that bind-mount from a
//! filesystem and unmounts it when the last one is unstaged, but only if this process mounted
//! it: a mount found in place (made by the host, or by a controller in the same mount
//! namespace) is left alone.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use csi_core::ports::Mounter;
use csi_core::{Error, ErrorCode, Result};
use tracing::{info, warn};

/// The Lustre filesystem type.
pub const LUSTRE: &str = "lustre";

#[derive(Debug, Default)]
struct MountState {
    /// What this process mounted there, if it did.
    mounted: Option<String>,
    /// Who uses the mount (staging paths).
    holders: HashSet<String>,
}

/// Mount points shared by many volumes.
pub struct SharedMounts {
    mounter: Arc<dyn Mounter>,
    unmount_when_unused: bool,
    points: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<MountState>>>>,
}

impl SharedMounts {
    /// Shared mounts through `mounter`; `unmount_when_unused` on nodes.
    pub fn new(mounter: Arc<dyn Mounter>, unmount_when_unused: bool) -> Self {
        Self {
            mounter,
            unmount_when_unused,
            points: Mutex::new(HashMap::new()),
        }
    }

    fn state(&self, mount_point: &Path) -> Arc<tokio::sync::Mutex<MountState>> {
        self.points
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(mount_point.to_path_buf())
            .or_default()
            .clone()
    }

    /// Makes sure `source` is mounted at `mount_point` (creating the directory, mounting
    /// again when the mount vanished) and, with `holder`, counts one more user.
    /// `FailedPrecondition` when this process mounted another filesystem there.
    pub async fn ensure(
        &self,
        mount_point: &Path,
        source: &str,
        options: &[String],
        holder: Option<&str>,
    ) -> Result<()> {
        let state = self.state(mount_point);
        let mut state = state.lock().await;
        let mounted = match self.mounter.is_mount_point(mount_point).await {
            Ok(m) => m,
            Err(e) if e.code() == ErrorCode::NotFound => {
                std::fs::create_dir_all(mount_point)
                    .map_err(|e| Error::io("create mount point", mount_point, e))?;
                false
            }
            Err(e) => return Err(e),
        };
        if mounted {
            if let Some(ours) = &state.mounted
                && ours != source
            {
                return Err(Error::FailedPrecondition(format!(
                    "{} already holds another Lustre filesystem; give each filesystem its own mountPoint",
                    mount_point.display()
                )));
            }
        } else {
            if state.mounted.is_some() {
                warn!(mount_point = %mount_point.display(), "the shared Lustre mount vanished; mounting it again");
            }
            self.mounter
                .mount(source, mount_point, LUSTRE, options)
                .await?;
            info!(mount_point = %mount_point.display(), "Lustre filesystem mounted");
            state.mounted = Some(source.to_string());
        }
        if let Some(holder) = holder {
            state.holders.insert(holder.to_string());
        }
        Ok(())
    }

    /// Drops `holder` from whichever mount it holds; unmounts a mount this process made
    /// when nobody holds it any more (nodes only). Unknown holders are fine.
    pub async fn release(&self, holder: &str) -> Result<()> {
        let points: Vec<(PathBuf, Arc<tokio::sync::Mutex<MountState>>)> = self
            .points
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(p, s)| (p.clone(), s.clone()))
            .collect();
        for (mount_point, state) in points {
            let mut state = state.lock().await;
            if !state.holders.remove(holder) {
                continue;
            }
            if self.unmount_when_unused && state.holders.is_empty() && state.mounted.is_some() {
                if let Err(e) = self.mounter.unmount(&mount_point).await {
                    // Still held: the retried unstage tries the unmount again.
                    state.holders.insert(holder.to_string());
                    return Err(e);
                }
                state.mounted = None;
                info!(mount_point = %mount_point.display(), "last volume unstaged; Lustre filesystem unmounted");
            }
        }
        Ok(())
    }

    /// How many users `mount_point` has.
    pub async fn holders(&self, mount_point: &Path) -> usize {
        self.state(mount_point).lock().await.holders.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use csi_core::ports::MockMounter;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A mounter whose mount table is one flag.
    fn mounter(mounted: Arc<AtomicBool>, mounts: usize, unmounts: usize) -> MockMounter {
        let mut m = MockMounter::new();
        let flag = mounted.clone();
        m.expect_is_mount_point().returning(move |p| {
            if !p.exists() {
                return Err(Error::NotFound(p.display().to_string()));
            }
            Ok(flag.load(Ordering::SeqCst))
        });
        let flag = mounted.clone();
        m.expect_mount()
            .times(mounts)
            .withf(|source, _, fs, options| {
                source == "10.0.0.1@tcp:/fs" && fs == "lustre" && options == ["flock".to_string()]
            })
            .returning(move |_, _, _, _| {
                flag.store(true, Ordering::SeqCst);
                Ok(())
            });
        let flag = mounted;
        m.expect_unmount().times(unmounts).returning(move |_| {
            flag.store(false, Ordering::SeqCst);
            Ok(())
        });
        m
    }

    #[tokio::test]
    async fn a_node_unmounts_after_its_last_volume() {
        let dir = tempfile::tempdir().unwrap();
        let mp = dir.path().join("exaFS");
        let mounted = Arc::new(AtomicBool::new(false));
        let mounts = SharedMounts::new(Arc::new(mounter(mounted.clone(), 1, 1)), true);
        let opts = vec!["flock".to_string()];
        mounts
            .ensure(&mp, "10.0.0.1@tcp:/fs", &opts, Some("/stage/a"))
            .await
            .unwrap();
        assert!(mp.is_dir(), "the mount point is created");
        mounts
            .ensure(&mp, "10.0.0.1@tcp:/fs", &opts, Some("/stage/b"))
            .await
            .unwrap();
        assert_eq!(mounts.holders(&mp).await, 2);
        mounts.release("/stage/a").await.unwrap();
        assert!(mounted.load(Ordering::SeqCst));
        mounts.release("/stage/unknown").await.unwrap();
        mounts.release("/stage/b").await.unwrap();
        assert!(!mounted.load(Ordering::SeqCst));
        assert_eq!(mounts.holders(&mp).await, 0);
    }

    #[tokio::test]
    async fn a_failed_unmount_keeps_the_holder_for_the_retry() {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Arc::new(AtomicBool::new(false));
        let mut m = mounter(mounted.clone(), 1, 0);
        let mut busy = true;
        let flag = mounted.clone();
        m.expect_unmount().times(2).returning(move |p| {
            if std::mem::take(&mut busy) {
                return Err(Error::io("unmount", p, std::io::Error::other("busy")));
            }
            flag.store(false, Ordering::SeqCst);
            Ok(())
        });
        let mounts = SharedMounts::new(Arc::new(m), true);
        mounts
            .ensure(dir.path(), "10.0.0.1@tcp:/fs", &["flock".into()], Some("s"))
            .await
            .unwrap();
        mounts.release("s").await.unwrap_err();
        assert_eq!(mounts.holders(dir.path()).await, 1);
        mounts.release("s").await.unwrap();
        assert!(!mounted.load(Ordering::SeqCst));
        assert_eq!(mounts.holders(dir.path()).await, 0);
    }

    #[tokio::test]
    async fn a_controller_remounts_what_vanished_and_never_unmounts() {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Arc::new(AtomicBool::new(false));
        let mounts = SharedMounts::new(Arc::new(mounter(mounted.clone(), 2, 0)), false);
        let opts = vec!["flock".to_string()];
        mounts
            .ensure(dir.path(), "10.0.0.1@tcp:/fs", &opts, None)
            .await
            .unwrap();
        mounts
            .ensure(dir.path(), "10.0.0.1@tcp:/fs", &opts, None)
            .await
            .unwrap();
        mounted.store(false, Ordering::SeqCst);
        mounts
            .ensure(dir.path(), "10.0.0.1@tcp:/fs", &opts, Some("h"))
            .await
            .unwrap();
        mounts.release("h").await.unwrap();
        assert!(mounted.load(Ordering::SeqCst));
        let err = mounts
            .ensure(dir.path(), "10.0.0.2@tcp:/other", &opts, None)
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::FailedPrecondition);
    }

    #[tokio::test]
    async fn a_mount_found_in_place_is_never_unmounted() {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Arc::new(AtomicBool::new(true));
        let mounts = SharedMounts::new(Arc::new(mounter(mounted.clone(), 0, 0)), true);
        mounts
            .ensure(dir.path(), "10.0.0.1@tcp:/fs", &[], Some("s"))
            .await
            .unwrap();
        mounts.release("s").await.unwrap();
        assert!(mounted.load(Ordering::SeqCst));
    }
}
