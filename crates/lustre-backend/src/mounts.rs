//! Shared, reference-counted mounts of whole filesystems.
//!
//! The controller keeps each filesystem mounted at its mount point for as long as it runs and
//! mounts it again when it vanished. A node counts the staged volumes that bind-mount from a
//! filesystem and unmounts it when the last one is unstaged, but only if this process mounted
//! it: a mount found in place (made by the host, or by a controller in the same mount
//! namespace) is left alone.
//!
//! A mount at the mount point is not taken for the filesystem on trust: the deployments bind
//! the host's mount point into the container, so it is a mount before any Lustre is there.
//! `lfs getname` says which Lustre filesystem a mount is ([`FsNames`]), once per mount (by
//! its id); a mount that is not Lustre gets the filesystem mounted over it, one of another
//! Lustre filesystem is refused.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use csi_core::ports::Mounter;
use csi_core::{Error, ErrorCode, Result};
use tracing::{info, warn};

use crate::exafs::ExaFs;
use crate::getname::FsNames;

/// The Lustre filesystem type.
pub const LUSTRE: &str = "lustre";

#[derive(Debug, Default)]
struct MountState {
    /// What this process mounted there, if it did.
    mounted: Option<ExaFs>,
    /// The mount seen to be the filesystem (its id), so that it is not asked again.
    verified: Option<u32>,
    /// Who uses the mount (staging paths).
    holders: HashSet<String>,
}

/// Mount points shared by many volumes.
pub struct SharedMounts {
    mounter: Arc<dyn Mounter>,
    names: FsNames,
    unmount_when_unused: bool,
    points: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<MountState>>>>,
}

/// The refusal of a mount point that holds `other` instead of `source`.
fn taken(mount_point: &Path, other: &str, source: &ExaFs) -> Error {
    Error::FailedPrecondition(format!(
        "{} already holds {other}, not {}; give each filesystem its own mountPoint",
        mount_point.display(),
        source.fs_path()
    ))
}

impl SharedMounts {
    /// Shared mounts through `mounter`, checked with `names`; `unmount_when_unused` on nodes.
    pub fn new(mounter: Arc<dyn Mounter>, names: FsNames, unmount_when_unused: bool) -> Self {
        Self {
            mounter,
            names,
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
    /// again when the mount vanished, mounting over a mount of something else) and, with
    /// `holder`, counts one more user. `FailedPrecondition` when another Lustre filesystem,
    /// or another directory of this one that this process mounted, is there.
    pub async fn ensure(
        &self,
        mount_point: &Path,
        source: &ExaFs,
        options: &[String],
        holder: Option<&str>,
    ) -> Result<()> {
        let state = self.state(mount_point);
        let mut state = state.lock().await;
        let id = match self.mounter.mount_id(mount_point).await {
            Ok(id) => id,
            Err(e) if e.code() == ErrorCode::NotFound => {
                std::fs::create_dir_all(mount_point)
                    .map_err(|e| Error::io("create mount point", mount_point, e))?;
                None
            }
            Err(e) => return Err(e),
        };
        let present = match id {
            Some(id) if state.verified == Some(id) => true,
            Some(id) => {
                let lustre = self.check_mount(mount_point, source).await?;
                if lustre {
                    state.verified = Some(id);
                }
                lustre
            }
            None => false,
        };
        if present {
            if let Some(ours) = state.mounted.as_ref().filter(|o| !o.same_directory(source)) {
                let ours = format!("{} of {}", ours.fs_path(), ours.fsname);
                return Err(taken(mount_point, &ours, source));
            }
        } else {
            if state.mounted.is_some() {
                warn!(mount_point = %mount_point.display(), "the shared Lustre mount vanished; mounting it again");
            } else if id.is_some() {
                info!(mount_point = %mount_point.display(), "the mount point holds a mount of another filesystem (the host directory bound into the container); mounting Lustre over it");
            }
            self.mounter
                .mount(&source.to_string(), mount_point, LUSTRE, options)
                .await?;
            info!(mount_point = %mount_point.display(), "Lustre filesystem mounted");
            state.mounted = Some(source.clone());
            state.verified = self.mounter.mount_id(mount_point).await?;
        }
        if let Some(holder) = holder {
            state.holders.insert(holder.to_string());
        }
        Ok(())
    }

    /// Whether the mount at `mount_point`, not seen before, is `source`'s filesystem: `false`
    /// for a mount of something else than Lustre, `FailedPrecondition` for another Lustre
    /// filesystem.
    async fn check_mount(&self, mount_point: &Path, source: &ExaFs) -> Result<bool> {
        let Some(fsname) = self.names.fsname_at(mount_point).await? else {
            return Ok(false);
        };
        if fsname != source.fsname {
            return Err(taken(
                mount_point,
                &format!("Lustre filesystem {fsname}"),
                source,
            ));
        }
        Ok(true)
    }

    /// Drops `holder` from whichever mount it holds; unmounts a mount this process made
    /// when nobody holds it any more (nodes only; one still busy stays mounted, for a later
    /// release). Unknown holders are fine.
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
                    // Busy (a host process works in the host's mount point, which the
                    // unmount reaches through propagation): the volume is unstaged all the
                    // same, and the filesystem stays mounted until a later release.
                    warn!(mount_point = %mount_point.display(), error = %e, "the Lustre filesystem is still in use; it stays mounted");
                    continue;
                }
                state.mounted = None;
                state.verified = None;
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
    use csi_core::ports::{CommandOutput, MockCommandRunner, MockMounter};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// The mounts stacked at the one mount point: id and what is mounted (`lustre:FSNAME`,
    /// or anything else).
    type Stack = Arc<Mutex<Vec<(u32, String)>>>;

    fn top_fsname(stack: &Stack) -> Option<String> {
        let stack = stack.lock().unwrap();
        let (_, what) = stack.last()?;
        what.strip_prefix("lustre:").map(str::to_string)
    }

    /// A mounter over `stack` that expects `mounts` mounts and `unmounts` unmounts.
    fn mounter(stack: &Stack, mounts: usize, unmounts: usize) -> MockMounter {
        let mut m = MockMounter::new();
        let s = stack.clone();
        m.expect_mount_id().returning(move |p| {
            if !p.exists() {
                return Err(Error::NotFound(p.display().to_string()));
            }
            Ok(s.lock().unwrap().last().map(|(id, _)| *id))
        });
        let s = stack.clone();
        m.expect_mount()
            .times(mounts)
            .withf(|source, _, fs, options| {
                source.ends_with(":/fs") && fs == "lustre" && options == ["flock".to_string()]
            })
            .returning(move |_, _, _, _| {
                let mut s = s.lock().unwrap();
                let id = 100 + u32::try_from(s.len()).unwrap();
                s.push((id, "lustre:fs".into()));
                Ok(())
            });
        let s = stack.clone();
        m.expect_unmount().times(unmounts).returning(move |_| {
            s.lock().unwrap().pop();
            Ok(())
        });
        m
    }

    /// `lfs getname` over `stack`, counting its runs.
    fn names(stack: &Stack, runs: &Arc<AtomicUsize>) -> FsNames {
        let (s, runs) = (stack.clone(), runs.clone());
        let mut runner = MockCommandRunner::new();
        runner.expect_run().returning(move |cmd| {
            runs.fetch_add(1, Ordering::SeqCst);
            let path = cmd.args[1].to_string_lossy().into_owned();
            Ok(match top_fsname(&s) {
                Some(fsname) => CommandOutput {
                    status: Some(0),
                    stdout: format!("{fsname}-ffff0123 {path}\n"),
                    stderr: String::new(),
                },
                None => CommandOutput {
                    status: Some(231),
                    stdout: String::new(),
                    stderr: format!("cannot get name for `{path}': Inappropriate ioctl\n"),
                },
            })
        });
        FsNames::new(Arc::new(runner), Path::new("lfs"), Duration::from_secs(5))
    }

    fn shared(stack: &Stack, m: MockMounter, node: bool) -> (SharedMounts, Arc<AtomicUsize>) {
        let runs = Arc::new(AtomicUsize::new(0));
        let mounts = SharedMounts::new(Arc::new(m), names(stack, &runs), node);
        (mounts, runs)
    }

    fn fs(text: &str) -> ExaFs {
        ExaFs::parse(text).unwrap()
    }

    const OPTS: &[String] = &[];

    fn flock() -> Vec<String> {
        vec!["flock".to_string()]
    }

    #[tokio::test]
    async fn a_node_unmounts_after_its_last_volume() {
        let dir = tempfile::tempdir().unwrap();
        let mp = dir.path().join("exaFS");
        let stack = Stack::default();
        let (mounts, runs) = shared(&stack, mounter(&stack, 1, 1), true);
        let source = fs("10.0.0.1@tcp:/fs");
        mounts
            .ensure(&mp, &source, &flock(), Some("/stage/a"))
            .await
            .unwrap();
        assert!(mp.is_dir(), "the mount point is created");
        mounts
            .ensure(&mp, &source, &flock(), Some("/stage/b"))
            .await
            .unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 0, "its own mount is not asked");
        assert_eq!(mounts.holders(&mp).await, 2);
        mounts.release("/stage/a").await.unwrap();
        assert_eq!(stack.lock().unwrap().len(), 1);
        mounts.release("/stage/unknown").await.unwrap();
        mounts.release("/stage/b").await.unwrap();
        assert!(stack.lock().unwrap().is_empty());
        assert_eq!(mounts.holders(&mp).await, 0);
    }

    #[tokio::test]
    async fn a_busy_filesystem_stays_mounted_and_the_unstage_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let stack = Stack::default();
        let mut m = mounter(&stack, 1, 0);
        let mut busy = true;
        let s = stack.clone();
        m.expect_unmount().times(2).returning(move |p| {
            if std::mem::take(&mut busy) {
                return Err(Error::io("unmount", p, std::io::Error::other("busy")));
            }
            s.lock().unwrap().pop();
            Ok(())
        });
        let (mounts, runs) = shared(&stack, m, true);
        let source = fs("10.0.0.1@tcp:/fs");
        mounts
            .ensure(dir.path(), &source, &flock(), Some("s"))
            .await
            .unwrap();
        mounts.release("s").await.unwrap();
        assert_eq!(mounts.holders(dir.path()).await, 0);
        assert_eq!(stack.lock().unwrap().len(), 1, "still mounted");
        // The next volume uses that mount, and its unstage takes it off.
        mounts
            .ensure(dir.path(), &source, &flock(), Some("t"))
            .await
            .unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 0);
        mounts.release("t").await.unwrap();
        assert!(stack.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_controller_remounts_what_vanished_and_never_unmounts() {
        let dir = tempfile::tempdir().unwrap();
        let stack = Stack::default();
        let (mounts, _) = shared(&stack, mounter(&stack, 2, 0), false);
        let source = fs("10.0.0.1@tcp:/fs");
        mounts
            .ensure(dir.path(), &source, &flock(), None)
            .await
            .unwrap();
        mounts
            .ensure(dir.path(), &source, &flock(), None)
            .await
            .unwrap();
        stack.lock().unwrap().clear();
        mounts
            .ensure(dir.path(), &source, &flock(), Some("h"))
            .await
            .unwrap();
        mounts.release("h").await.unwrap();
        assert_eq!(stack.lock().unwrap().len(), 1);
        // The same filesystem through other NIDs (a StorageClass's managementIp) is the
        // filesystem mounted; another directory of it is not.
        mounts
            .ensure(dir.path(), &fs("10.9.9.9@o2ib:/fs"), &flock(), None)
            .await
            .unwrap();
        let err = mounts
            .ensure(dir.path(), &fs("10.0.0.1@tcp:/fs/other"), &flock(), None)
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::FailedPrecondition, "{err}");
    }

    #[tokio::test]
    async fn a_mount_found_in_place_is_asked_once_and_never_unmounted() {
        let dir = tempfile::tempdir().unwrap();
        let stack: Stack = Arc::new(Mutex::new(vec![(7, "lustre:fs".into())]));
        let (mounts, runs) = shared(&stack, mounter(&stack, 0, 0), true);
        for holder in ["s", "t"] {
            mounts
                .ensure(dir.path(), &fs("10.0.0.1@tcp:/fs"), OPTS, Some(holder))
                .await
                .unwrap();
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1, "one lfs getname per mount");
        mounts.release("s").await.unwrap();
        mounts.release("t").await.unwrap();
        assert_eq!(stack.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_mount_of_something_else_gets_the_filesystem_mounted_over_it() {
        // The host's mount point bound into the container: a mount, but not Lustre.
        let dir = tempfile::tempdir().unwrap();
        let stack: Stack = Arc::new(Mutex::new(vec![(7, "ext4".into())]));
        let (mounts, runs) = shared(&stack, mounter(&stack, 1, 1), true);
        mounts
            .ensure(dir.path(), &fs("10.0.0.1@tcp:/fs"), &flock(), Some("s"))
            .await
            .unwrap();
        assert_eq!(top_fsname(&stack).as_deref(), Some("fs"));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // The node takes off only what it mounted.
        mounts.release("s").await.unwrap();
        assert_eq!(*stack.lock().unwrap(), [(7, "ext4".to_string())]);
    }

    #[tokio::test]
    async fn another_lustre_filesystem_in_place_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let stack: Stack = Arc::new(Mutex::new(vec![(7, "lustre:scratch".into())]));
        let (mounts, _) = shared(&stack, mounter(&stack, 0, 0), false);
        let err = mounts
            .ensure(dir.path(), &fs("10.0.0.1@tcp:/fs"), &flock(), None)
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::FailedPrecondition);
        assert!(err.to_string().contains("scratch"), "{err}");
    }
}
