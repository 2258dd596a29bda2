//! The node use cases: stage, publish, unpublish, unstage, stats, node info.
//!
//! Publishing is the core's own job for every backend: a bind mount of the directory the
//! backend names onto the target (read-only when asked or when the access mode is), done
//! with syscalls only, so a publish spawns no process and never reads the mount table on
//! the common path.

use std::collections::{BTreeMap, HashMap};
use std::io::ErrorKind;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use tracing::{info, warn};

use crate::domain::{Secrets, Topology, VolumeCapability, VolumeCondition, VolumeId, VolumeStats};
use crate::error::{Error, ErrorCode, Result};
use crate::ports::{
    FilesystemBackend, Mounter, NodePublishRequest, NodeStageRequest, TopologyProvider,
};
use crate::service::controller::{Readiness, check_readiness};
use crate::service::{Backends, LockGuard, OperationLocks};

/// NodeGetInfo's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// This node's id.
    pub node_id: String,
    /// Its topology segments.
    pub topology: Topology,
}

/// A NodeStageVolume request as received.
#[derive(Debug, Clone, Default)]
pub struct StageVolume {
    /// Volume id.
    pub volume_id: String,
    /// Staging path.
    pub staging_path: String,
    /// Capability (required).
    pub capability: Option<VolumeCapability>,
    /// Volume context.
    pub context: BTreeMap<String, String>,
    /// Secrets.
    pub secrets: Secrets,
}

/// A NodePublishVolume request as received.
#[derive(Debug, Clone, Default)]
pub struct PublishVolume {
    /// Volume id.
    pub volume_id: String,
    /// Staging path (required: the driver stages every volume).
    pub staging_path: String,
    /// Target path.
    pub target_path: String,
    /// Capability (required).
    pub capability: Option<VolumeCapability>,
    /// The CO's read-only flag.
    pub read_only: bool,
    /// Volume context.
    pub context: BTreeMap<String, String>,
    /// Secrets.
    pub secrets: Secrets,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Publication {
    target: PathBuf,
    read_only: bool,
    single_writer: bool,
}

/// The node service.
pub struct NodeService {
    node_id: String,
    backends: Backends,
    mounter: Arc<dyn Mounter>,
    topology: Option<Arc<dyn TopologyProvider>>,
    locks: OperationLocks,
    publications: Mutex<HashMap<VolumeId, Vec<Publication>>>,
    kubelet_dir: Option<PathBuf>,
}

impl NodeService {
    /// A node service for `node_id`; `topology` (e.g. the Node's labels) adds to and
    /// overrides what the backends report.
    pub fn new(
        node_id: String,
        backends: Backends,
        mounter: Arc<dyn Mounter>,
        topology: Option<Arc<dyn TopologyProvider>>,
    ) -> Result<Self> {
        if node_id.trim().is_empty() {
            return Err(Error::invalid("node_id", "must not be empty"));
        }
        Ok(Self {
            node_id,
            backends,
            mounter,
            topology,
            locks: OperationLocks::default(),
            publications: Mutex::new(HashMap::new()),
            kubelet_dir: None,
        })
    }

    /// Refuses staging and target paths below `kubelet_dir` that pass through a symbolic
    /// link, so a link planted in the kubelet's tree cannot redirect a mount elsewhere.
    /// (`kubelet_dir` itself may be a link, as on some distributions.)
    pub fn with_kubelet_dir(mut self, kubelet_dir: PathBuf) -> Self {
        self.kubelet_dir = Some(kubelet_dir);
        self
    }

    /// The configured backends.
    pub fn backends(&self) -> &Backends {
        &self.backends
    }

    /// Checks every backend.
    pub async fn readiness(&self) -> Readiness {
        check_readiness(&self.backends).await
    }

    /// NodeGetInfo.
    pub async fn node_info(&self) -> Result<NodeInfo> {
        let mut topology = Topology::new();
        for backend in self.backends.all() {
            topology.extend(backend.node_topology().await?);
        }
        if let Some(provider) = &self.topology {
            topology.extend(provider.topology().await?);
        }
        Ok(NodeInfo {
            node_id: self.node_id.clone(),
            topology,
        })
    }

    /// NodeStageVolume.
    pub async fn stage(&self, request: StageVolume) -> Result<()> {
        let volume_id = VolumeId::parse(&request.volume_id)?;
        let staging_path = absolute_path("staging_target_path", &request.staging_path)?;
        self.check_no_links("staging_target_path", &staging_path)?;
        let capability = request
            .capability
            .ok_or_else(|| Error::invalid("volume_capability", "is required"))?;
        let backend = self.backends.for_existing_volume(&volume_id)?;
        capability.check_supported("volume_capability", backend.fs_types())?;
        let _guard = self.lock(&volume_id)?;
        let request = NodeStageRequest {
            volume_id,
            staging_path,
            capability,
            context: request.context,
            secrets: request.secrets,
        };
        backend.stage_volume(&request).await?;
        info!(volume_id = %request.volume_id, staging_path = %request.staging_path.display(), "volume staged");
        Ok(())
    }

    /// NodeUnstageVolume; idempotent.
    pub async fn unstage(&self, volume_id: &str, staging_path: &str) -> Result<()> {
        let volume_id = VolumeId::parse(volume_id)?;
        let staging_path = absolute_path("staging_target_path", staging_path)?;
        let backend = self.backends.for_existing_volume(&volume_id)?;
        let _guard = self.lock(&volume_id)?;
        backend.unstage_volume(&volume_id, &staging_path).await?;
        info!(volume_id = %volume_id, staging_path = %staging_path.display(), "volume unstaged");
        Ok(())
    }

    /// NodePublishVolume: bind-mounts the volume onto the target. Publishing again to the
    /// same target with the same flags succeeds; with other flags it is `AlreadyExists`;
    /// a ReadWriteOncePod volume published at another target is `FailedPrecondition`, and
    /// so is a target where something else is mounted (told from the mount table).
    pub async fn publish(&self, request: PublishVolume) -> Result<()> {
        let volume_id = VolumeId::parse(&request.volume_id)?;
        let staging_path = absolute_path("staging_target_path", &request.staging_path)?;
        let target = absolute_path("target_path", &request.target_path)?;
        self.check_no_links("staging_target_path", &staging_path)?;
        self.check_no_links("target_path", &target)?;
        let capability = request
            .capability
            .ok_or_else(|| Error::invalid("volume_capability", "is required"))?;
        let backend = self.backends.for_existing_volume(&volume_id)?;
        capability.check_supported("volume_capability", backend.fs_types())?;
        let read_only = request.read_only || capability.access_mode.is_read_only();
        let single_writer = capability.access_mode.is_single_publication();
        let _guard = self.lock(&volume_id)?;

        let publish = NodePublishRequest {
            volume_id: volume_id.clone(),
            staging_path,
            target_path: target.clone(),
            capability,
            read_only,
            context: request.context,
            secrets: request.secrets,
        };
        let publication = Publication {
            target: target.clone(),
            read_only,
            single_writer,
        };
        if self.prepare_target(&target).await? {
            self.check_existing_publication(backend.as_ref(), &publish)
                .await?;
            self.record_publication(&volume_id, publication);
            return Ok(());
        }
        let source = backend.publish_source(&publish).await?;
        let other = match self.published_elsewhere(&volume_id, &target) {
            Some(other) => (single_writer || other.single_writer).then_some(other.target),
            // Nothing known since this plugin started: a publication from before a restart
            // shows in the mount table (read for single-writer publishes only).
            None if single_writer => self.published_before_start(&source.dir, &publish).await?,
            None => None,
        };
        if let Some(other) = other {
            return Err(Error::FailedPrecondition(format!(
                "volume {volume_id} is single-writer (ReadWriteOncePod) and already published at {}",
                other.display()
            )));
        }
        self.mounter
            .bind_mount_below(&source.staged, &source.dir, &target, read_only)
            .await?;
        self.record_publication(&volume_id, publication);
        info!(volume_id = %volume_id, target = %target.display(), read_only, "volume published");
        Ok(())
    }

    /// NodeUnpublishVolume: unmounts and removes the target directory. A target that does
    /// not exist or is not mounted succeeds. Never removes a directory that still has
    /// content after the unmount.
    pub async fn unpublish(&self, volume_id: &str, target_path: &str) -> Result<()> {
        let volume_id = VolumeId::parse(volume_id)?;
        let target = absolute_path("target_path", target_path)?;
        let _guard = self.lock(&volume_id)?;
        // Nothing here stats the target before it is unmounted: a stat would enter the
        // mounted filesystem and hang on a dead server, on the async runtime. The mounter
        // unmounts under its timeout until nothing is mounted there (stacked mounts: a
        // publish retried after a lost reply) and never follows a link (a planted one is
        // neither unmounted through nor a mount point).
        if self.mounter.unmount_all(&target).await? {
            // Nothing is mounted there now, so removing it never reaches a filesystem
            // but the kubelet's.
            match std::fs::remove_dir(&target) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => {
                    return Err(Error::FailedPrecondition(format!(
                        "target_path {} still has content after unmount; leaving it in place",
                        target.display()
                    )));
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
                    let is_link = std::fs::symlink_metadata(&target)
                        .is_ok_and(|m| m.file_type().is_symlink());
                    return Err(Error::FailedPrecondition(format!(
                        "target_path {} is {}; it was not made by this driver",
                        target.display(),
                        if is_link {
                            "a symbolic link"
                        } else {
                            "not a directory"
                        }
                    )));
                }
                Err(e) => return Err(Error::io("remove directory", &target, e)),
            }
        }
        let mut publications = self.publications();
        if let Some(list) = publications.get_mut(&volume_id) {
            list.retain(|p| p.target != target);
            if list.is_empty() {
                publications.remove(&volume_id);
            }
        }
        info!(volume_id = %volume_id, target = %target.display(), "volume unpublished");
        Ok(())
    }

    /// NodeGetVolumeStats: usage, and a condition that is abnormal when the volume path is
    /// no longer a mount or does not answer.
    pub async fn stats(
        &self,
        volume_id: &str,
        volume_path: &str,
    ) -> Result<(VolumeStats, VolumeCondition)> {
        let volume_id = VolumeId::parse(volume_id)?;
        let path = absolute_path("volume_path", volume_path)?;
        let backend = self.backends.for_existing_volume(&volume_id)?;
        let mounted = match self.mounter.is_mount_point(&path).await {
            Ok(mounted) => mounted,
            Err(e) if e.code() == ErrorCode::NotFound => {
                return Err(Error::NotFound(format!(
                    "volume_path {} does not exist",
                    path.display()
                )));
            }
            Err(e) if e.code() == ErrorCode::DeadlineExceeded => {
                return Ok((
                    VolumeStats::default(),
                    VolumeCondition::abnormal(format!("the mount does not answer: {e}")),
                ));
            }
            Err(e) => return Err(e),
        };
        if !mounted {
            return Ok((
                VolumeStats::default(),
                VolumeCondition::abnormal(format!("{} is not mounted any more", path.display())),
            ));
        }
        match backend.volume_stats(&volume_id, &path).await {
            Ok(stats) => Ok((stats, VolumeCondition::healthy())),
            Err(e)
                if e.code() == ErrorCode::DeadlineExceeded
                    || e.code() == ErrorCode::Unavailable =>
            {
                warn!(volume_id = %volume_id, error = %e, "volume stats unavailable");
                Ok((
                    VolumeStats::default(),
                    VolumeCondition::abnormal(format!("usage cannot be read: {e}")),
                ))
            }
            Err(e) => Err(e),
        }
    }

    /// Fails when a directory between the kubelet directory and `path` (exclusive) is a
    /// symbolic link. Paths outside the kubelet directory are only checked at their last
    /// component, when they are mounted on.
    fn check_no_links(&self, field: &str, path: &Path) -> Result<()> {
        let Some(kubelet_dir) = &self.kubelet_dir else {
            return Ok(());
        };
        let Ok(below) = path.strip_prefix(kubelet_dir) else {
            return Ok(());
        };
        let mut current = kubelet_dir.clone();
        let components: Vec<_> = below.components().collect();
        for component in components.iter().take(components.len().saturating_sub(1)) {
            current.push(component);
            match std::fs::symlink_metadata(&current) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(Error::FailedPrecondition(format!(
                        "{field} {} passes through the symbolic link {}; refusing to mount through it",
                        path.display(),
                        current.display()
                    )));
                }
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(Error::io("stat", &current, e)),
            }
        }
        Ok(())
    }

    /// Creates the target directory when missing; `true` when it is already a mount point.
    /// An existing target may be a mount (a retried publish) of a filesystem that no longer
    /// answers, so the mounter checks it under its timeout before anything stats it. A
    /// target that is a symbolic link or not a directory is refused before anything is
    /// mounted, so a planted link cannot redirect the mount.
    async fn prepare_target(&self, target: &Path) -> Result<bool> {
        match std::fs::create_dir(target) {
            Ok(()) => return Ok(false),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io("create directory", target, e)),
        }
        if self.mounter.is_mount_point(target).await? {
            return Ok(true);
        }
        // Not a mount point: this stat stays on the kubelet's filesystem.
        match std::fs::symlink_metadata(target) {
            Err(e) => Err(Error::io("stat", target, e)),
            Ok(meta) if meta.file_type().is_symlink() => Err(Error::FailedPrecondition(format!(
                "target_path {} is a symbolic link; refusing to mount through it",
                target.display()
            ))),
            Ok(meta) if !meta.is_dir() => Err(Error::FailedPrecondition(format!(
                "target_path {} exists and is not a directory",
                target.display()
            ))),
            Ok(_) => Ok(false),
        }
    }

    /// A target that is already a mount: fine when it is this volume with the same flags.
    async fn check_existing_publication(
        &self,
        backend: &dyn FilesystemBackend,
        publish: &NodePublishRequest,
    ) -> Result<()> {
        let (volume_id, target) = (&publish.volume_id, publish.target_path.as_path());
        let known = self.publications().get(volume_id).and_then(|list| {
            list.iter()
                .find(|p| p.target == target)
                .map(|p| p.read_only)
        });
        let mounted_read_only = match known {
            Some(ro) => ro,
            // Published before a restart: the mount table tells what is mounted there.
            None => {
                let mounts = self.mounter.list_mounts().await?;
                match mounts.iter().rev().find(|m| m.mount_point == target) {
                    Some(mount) => {
                        let source = backend.publish_source(publish).await?;
                        if !mount.shows(&mounts, &source.dir) {
                            return Err(Error::FailedPrecondition(format!(
                                "target_path {} is already a mount of {}:{} (not volume {volume_id}); unpublish it first",
                                target.display(),
                                mount.source,
                                mount.root.display()
                            )));
                        }
                        mount.is_read_only()
                    }
                    None => publish.read_only,
                }
            }
        };
        if mounted_read_only != publish.read_only {
            return Err(Error::AlreadyExists(format!(
                "volume {volume_id} is already published at {} with read_only={mounted_read_only}",
                target.display()
            )));
        }
        Ok(())
    }

    /// Another target that shows the volume's source in the mount table, leaving out the
    /// staging path and what is mounted below it (the volume's own staging mounts).
    async fn published_before_start(
        &self,
        source: &Path,
        publish: &NodePublishRequest,
    ) -> Result<Option<PathBuf>> {
        let mounts = self.mounter.list_mounts().await?;
        Ok(mounts
            .iter()
            .find(|m| {
                m.mount_point != publish.target_path
                    && !m.mount_point.starts_with(&publish.staging_path)
                    && m.shows(&mounts, source)
            })
            .map(|m| m.mount_point.clone()))
    }

    /// Remembers a publication (again, when it was found in place after a restart).
    fn record_publication(&self, volume_id: &VolumeId, publication: Publication) {
        let mut publications = self.publications();
        let list = publications.entry(volume_id.clone()).or_default();
        list.retain(|p| p.target != publication.target);
        list.push(publication);
    }

    fn published_elsewhere(&self, volume_id: &VolumeId, target: &Path) -> Option<Publication> {
        self.publications()
            .get(volume_id)
            .and_then(|list| list.iter().find(|p| p.target != target).cloned())
    }

    fn publications(&self) -> std::sync::MutexGuard<'_, HashMap<VolumeId, Vec<Publication>>> {
        self.publications.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock(&self, id: &VolumeId) -> Result<LockGuard> {
        self.locks
            .try_lock(format!("volume:{id}"), &format!("volume {id}"))
    }
}

/// Validates a path field: present, absolute, UTF-8 clean, without `..` components.
fn absolute_path(field: &str, raw: &str) -> Result<PathBuf> {
    if raw.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    if raw.contains('\0') {
        return Err(Error::invalid(field, "must not contain NUL"));
    }
    let path = PathBuf::from(raw);
    if !path.is_absolute() {
        return Err(Error::invalid(
            field,
            format!("{raw:?} is not an absolute path"),
        ));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(Error::invalid(
            field,
            format!("{raw:?} must not contain '..'"),
        ));
    }
    Ok(path)
}

impl std::fmt::Debug for NodeService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeService")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn paths_must_be_absolute_and_clean() {
        assert!(absolute_path("target_path", "").is_err());
        assert!(absolute_path("target_path", "rel/x").is_err());
        assert!(absolute_path("target_path", "/a/../etc").is_err());
        assert!(absolute_path("target_path", "/a\0b").is_err());
        assert_eq!(
            absolute_path("target_path", "/a/b").unwrap(),
            PathBuf::from("/a/b")
        );
    }

    #[tokio::test]
    async fn links_below_the_kubelet_dir_are_refused_but_the_kubelet_dir_may_be_one() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real-kubelet");
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir_all(real.join("pods/uid/volumes")).unwrap();
        std::fs::create_dir_all(&elsewhere).unwrap();
        let kubelet = dir.path().join("kubelet");
        std::os::unix::fs::symlink(&real, &kubelet).unwrap();
        std::os::unix::fs::symlink(&elsewhere, real.join("pods/uid/volumes/pv")).unwrap();
        let mounter = Arc::new(crate::ports::MockMounter::new());
        let node = NodeService::new("n".into(), Backends::default(), mounter, None)
            .unwrap()
            .with_kubelet_dir(kubelet.clone());
        let fine = kubelet.join("pods/uid/volumes/other/mount");
        assert!(node.check_no_links("target_path", &fine).is_ok());
        let planted = kubelet.join("pods/uid/volumes/pv/mount");
        let err = node.check_no_links("target_path", &planted).unwrap_err();
        assert_eq!(err.code(), ErrorCode::FailedPrecondition, "{err}");
        assert!(
            node.check_no_links("target_path", &elsewhere.join("x"))
                .is_ok()
        );
    }

    proptest! {
        #[test]
        fn accepted_paths_never_climb(s in "[/a-z.]{0,24}") {
            if let Ok(p) = absolute_path("p", &s) {
                prop_assert!(p.is_absolute());
                prop_assert!(!p.components().any(|c| c == Component::ParentDir));
            }
        }
    }
}
