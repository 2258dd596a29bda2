//! [`LustreBackend`]: the Lustre implementation of the core's [`FilesystemBackend`].
//!
//! The controller side lives in `controller` and `snapshots`, the node side
//! in `node`; this module holds what they share: the configuration, the shared mounts,
//! the id allocator, the background tasks, and the way an operation finds its filesystem.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use csi_core::domain::{
    Parameters, Secrets, Snapshot, SnapshotId, Topology, Volume, VolumeId, VolumeStats,
};
use csi_core::id_alloc::IdAllocator;
use csi_core::linux::StuckPaths;
use csi_core::ports::{
    BackendContext, Command, CreateSnapshotRequest, CreateVolumeRequest, FilesystemBackend,
    NodePublishRequest, NodeStageRequest, PublishSource, Role, VolumeInfo,
};
use csi_core::{Error, ErrorCode, Result};
use tracing::{info, warn};

use crate::client_version;
use crate::config::{LustreConfig, LustreEntry, LustreSettings};
use crate::exafs::{ExaFs, NidList};
use crate::getname::FsNames;
use crate::mounts::{LUSTRE, SharedMounts};
use crate::parameters::VolumeParams;
use crate::quota::{LFS_TIMEOUT_BACKOFF, LustreQuota, PROJECT_ID_TTL, PathCache, ProjectIdCache};
use crate::records::Stores;
use crate::volume_dirs;
use crate::volume_id::{
    Location, LustreSnapshotId, LustreVolumeHandle, VolumePath, parse_volume_id,
};
use csi_core::tasks::Tasks;

/// The topology key of an EXAScaler zone.
pub const ZONE_KEY: &str = "topology.exa.csi.ddn.com/zone";

/// The filesystem an operation works on: the entry, and where the data lives.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The entry that owns the id (and holds the records).
    pub entry: LustreEntry,
    /// The filesystem holding the data.
    pub exa_fs: ExaFs,
    /// Where that filesystem is mounted.
    pub mount_point: PathBuf,
    /// Set when the data is not on the entry's filesystem.
    pub location: Option<Location>,
}

impl Target {
    /// The entry's own filesystem.
    pub fn of_entry(entry: &LustreEntry) -> Self {
        Self {
            entry: entry.clone(),
            exa_fs: entry.exa_fs.clone(),
            mount_point: entry.mount_point.clone(),
            location: None,
        }
    }

    /// `location` when given, else the entry's filesystem.
    pub fn at(entry: &LustreEntry, location: Option<&Location>) -> Self {
        match location {
            Some(l) => Self {
                entry: entry.clone(),
                exa_fs: l.exa_fs.clone(),
                mount_point: l.mount_point.clone(),
                location: Some(l.clone()),
            },
            None => Self::of_entry(entry),
        }
    }

    /// A path below the mount point.
    pub fn path(&self, dir: &VolumePath) -> PathBuf {
        dir.under(&self.mount_point)
    }
}

/// Everything the backend's operations share; background tasks hold it too.
pub(crate) struct Inner {
    pub config: LustreConfig,
    pub settings: LustreSettings,
    pub ctx: BackendContext,
    pub mounts: SharedMounts,
    pub ids: IdAllocator,
    pub tasks: Tasks,
    /// Serializes temporary mounts of filesystem roots.
    pub temp_mount: tokio::sync::Mutex<()>,
    /// Mount points whose trash was already scheduled for purging once.
    pub purge_scheduled: Mutex<HashSet<PathBuf>>,
    /// When the Lustre client last answered `lctl get_param -n version`, and its version.
    pub client_seen: Mutex<Option<(Instant, String)>>,
    /// Project ids of the volume paths whose stats were asked for.
    pub project_ids: ProjectIdCache,
    /// Volume paths whose stats' `lfs` timed out lately: no `lfs` for them until it is past.
    pub lfs_timed_out: PathCache<()>,
    /// Volume paths whose stats call is still blocked after its timeout.
    pub stuck: StuckPaths,
}

/// How long a successful Lustre client check stands before Probe runs `lctl` again.
const CLIENT_CHECK_INTERVAL: Duration = Duration::from_secs(60);

/// The Lustre (EXAScaler) backend.
#[derive(Clone)]
pub struct LustreBackend {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for LustreBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LustreBackend")
            .field(
                "entries",
                &self.inner.config.entries.keys().collect::<Vec<_>>(),
            )
            .field("role", &self.inner.ctx.role)
            .finish_non_exhaustive()
    }
}

impl LustreBackend {
    /// A backend for the EXAScaler `config`, with our `settings`, working through `ctx`
    /// (whose mounter runs the `mount` program of `settings.mount`).
    pub fn new(
        config: LustreConfig,
        mut settings: LustreSettings,
        ctx: BackendContext,
    ) -> Result<Self> {
        settings.resolve_tools(&csi_core::client_tools::client_dir(
            &ctx.kubelet_dir,
            &ctx.driver_name,
        ));
        config.validate()?;
        settings.validate()?;
        for key in &config.ignored_keys {
            warn!(key = %key, "configuration key not used by this driver; ignored");
        }
        for entry in config.entries.values() {
            info!(
                entry = %entry.name,
                mount_point = %entry.mount_point.display(),
                zone = entry.zone.as_deref().unwrap_or(""),
                v1x = entry.v1x_compatible,
                "EXAScaler filesystem configured"
            );
        }
        let names = FsNames::new(
            ctx.runner.clone(),
            &settings.lfs,
            settings.command_timeout(),
        );
        let mounts = SharedMounts::new(ctx.mounter.clone(), names, ctx.role == Role::Node);
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                settings,
                ctx,
                mounts,
                ids: IdAllocator::default(),
                tasks: Tasks::default(),
                temp_mount: tokio::sync::Mutex::new(()),
                purge_scheduled: Mutex::new(HashSet::new()),
                client_seen: Mutex::new(None),
                project_ids: ProjectIdCache::new(PROJECT_ID_TTL),
                lfs_timed_out: PathCache::new(LFS_TIMEOUT_BACKOFF),
                stuck: StuckPaths::default(),
            }),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &LustreConfig {
        &self.inner.config
    }

    /// The settings in use.
    pub fn settings(&self) -> &LustreSettings {
        &self.inner.settings
    }
}

impl Inner {
    /// The volume handle of `id`; `NotFound` when it is no Lustre id.
    pub fn handle(&self, id: &str) -> Result<LustreVolumeHandle> {
        parse_volume_id(id, &self.config, &self.settings.metadata_dir)
            .unwrap_or_else(|| Err(Error::NotFound(format!("{id:?} is not a Lustre volume id"))))
    }

    /// The entry named `name`.
    pub fn entry(&self, name: &str) -> Result<&LustreEntry> {
        self.config
            .entry(name)
            .ok_or_else(|| Error::NotFound(format!("EXAScaler entry {name:?} is not configured")))
    }

    /// The records of an entry's filesystem.
    pub fn stores(&self, entry: &LustreEntry) -> Stores {
        Stores::new(
            &entry.mount_point,
            &self.settings.metadata_dir,
            self.settings.command_timeout(),
        )
    }

    /// `lfs` quotas of the filesystem `path` is on.
    pub fn quota(&self, path: &Path) -> LustreQuota {
        LustreQuota::new(
            self.ctx.runner.clone(),
            &self.settings.lfs,
            path,
            self.settings.command_timeout(),
        )
    }

    /// The metadata directory of a target.
    pub fn meta_dir(&self, target: &Target) -> PathBuf {
        target.mount_point.join(&self.settings.metadata_dir)
    }

    /// Runs blocking filesystem work under the command timeout.
    pub async fn fs<T, F>(&self, what: String, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T> + Send + 'static,
    {
        csi_core::blocking::try_blocking(self.settings.command_timeout(), &what, work).await
    }

    /// What is at `dir` ([`volume_dirs::dir_state`]), on the blocking pool within the
    /// command timeout.
    pub async fn dir_state(&self, dir: &Path) -> Result<volume_dirs::DirState> {
        let d = dir.to_path_buf();
        self.fs(format!("stat {}", dir.display()), move || {
            volume_dirs::dir_state(&d)
        })
        .await
    }

    /// The entry's topology segment.
    pub fn entry_topology(entry: &LustreEntry) -> Topology {
        entry
            .zone
            .iter()
            .map(|z| (ZONE_KEY.to_string(), z.clone()))
            .collect()
    }

    /// Mounts the target's filesystem on the controller (through `management_ip`, the
    /// entry's `managementIp`, or the data NIDs), creating a missing `exaFS` subdirectory
    /// through a temporary mount of the filesystem root.
    pub async fn mount_controller(
        self: &Arc<Self>,
        target: &Target,
        management_ip: Option<&NidList>,
    ) -> Result<()> {
        let mgmt = management_ip.or(target.entry.management_ip.as_ref());
        let source = match mgmt {
            Some(nids) => target.exa_fs.with_mgs(nids),
            None => target.exa_fs.clone(),
        };
        let options = &target.entry.default_mount_options;
        let first = self
            .mounts
            .ensure(&target.mount_point, &source, options, None)
            .await;
        match first {
            Ok(()) => {}
            Err(e) if !source.subdir.is_empty() && e.code() != ErrorCode::FailedPrecondition => {
                warn!(mount_point = %target.mount_point.display(), error = %e, "mount failed; creating the exaFS subdirectory in case it is missing");
                self.create_subdir(&source, target, None)
                    .await
                    .map_err(|sub| {
                        Error::Unavailable(format!(
                            "{e}; creating the subdirectory also failed: {sub}"
                        ))
                    })?;
                self.mounts
                    .ensure(&target.mount_point, &source, options, None)
                    .await?;
            }
            Err(e) => return Err(e),
        }
        self.schedule_purge_once(target);
        Ok(())
    }

    /// Creates `source`'s subdirectory through a temporary mount of its filesystem root at
    /// `tempMountPoint` (the parameter, the entry's, or one below the state directory).
    pub async fn create_subdir(
        &self,
        source: &ExaFs,
        target: &Target,
        temp: Option<&Path>,
    ) -> Result<()> {
        let _one_at_a_time = self.temp_mount.lock().await;
        let temp = temp
            .map(Path::to_path_buf)
            .or_else(|| target.entry.temp_mount_point.clone())
            .unwrap_or_else(|| {
                self.ctx
                    .state_dir
                    .join("temp-mounts")
                    .join(&target.entry.name)
            });
        std::fs::create_dir_all(&temp).map_err(|e| Error::io("create directory", &temp, e))?;
        let mounter = &self.ctx.mounter;
        mounter
            .mount(
                &source.root().to_string(),
                &temp,
                LUSTRE,
                &target.entry.default_mount_options,
            )
            .await?;
        let subdir = VolumePath::parse(&source.subdir.join("/"))
            .unwrap_or_default()
            .under(&temp);
        let made = self
            .fs(format!("create {}", subdir.display()), move || {
                std::fs::create_dir_all(&subdir)
                    .map_err(|e| Error::io("create exaFS subdirectory", &subdir, e))
            })
            .await;
        let unmounted = mounter.unmount(&temp).await;
        made?;
        unmounted?;
        info!(exa_fs = %source.fs_path(), "created the exaFS subdirectory");
        Ok(())
    }

    /// Checks that the Lustre client is loaded: its version file can be read (no process),
    /// else `lctl get_param -n version` answers. A success stands for a minute.
    pub async fn check_client(&self) -> Result<()> {
        let fresh = |seen: &Option<(Instant, String)>| {
            seen.as_ref()
                .is_some_and(|(at, _)| at.elapsed() < CLIENT_CHECK_INTERVAL)
        };
        if fresh(&self.client_seen.lock().unwrap_or_else(|e| e.into_inner())) {
            return Ok(());
        }
        let version = match client_version::read_version_file(&self.settings.client_version_file) {
            Some(version) => version,
            None => self.lctl_version().await?,
        };
        let mut seen = self.client_seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.is_none() {
            info!(version = %version, "Lustre client ready");
        }
        *seen = Some((Instant::now(), version));
        Ok(())
    }

    /// The client version `lctl get_param -n version` prints; Unavailable when it fails.
    async fn lctl_version(&self) -> Result<String> {
        let cmd = Command::new(&self.settings.lctl, self.settings.command_timeout()).args([
            "get_param",
            "-n",
            "version",
        ]);
        let out = self
            .ctx
            .runner
            .run(&cmd)
            .await?
            .check("lctl get_param")
            .map_err(|e| Error::Unavailable(format!("the Lustre client is not ready: {e}")))?;
        Ok(out.stdout.trim().to_string())
    }

    /// Starts removing the trash of `target` once per process (left over from a restart).
    fn schedule_purge_once(self: &Arc<Self>, target: &Target) {
        if self.ctx.role != Role::Controller {
            return;
        }
        let first = self
            .purge_scheduled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(target.mount_point.clone());
        if first {
            self.purge_trash(target);
        }
    }

    /// Removes the content of `target`'s trash in the background.
    pub fn purge_trash(self: &Arc<Self>, target: &Target) {
        let trash = self.meta_dir(target).join("trash");
        let key = format!("purge:{}", trash.display());
        self.tasks.spawn(&key, |_| async move {
            let path = trash.clone();
            match tokio::task::spawn_blocking(move || volume_dirs::purge(&path)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!(trash = %trash.display(), error = %e, "trash not emptied"),
                Err(e) => warn!(trash = %trash.display(), error = %e, "trash purge stopped"),
            }
        });
    }
}

#[async_trait]
impl FilesystemBackend for LustreBackend {
    fn name(&self) -> &'static str {
        "lustre"
    }

    fn fs_types(&self) -> &'static [&'static str] {
        &["lustre"]
    }

    fn claim_volume_id(&self, id: &VolumeId) -> Option<Result<()>> {
        parse_volume_id(
            id.as_str(),
            &self.inner.config,
            &self.inner.settings.metadata_dir,
        )
        .map(|r| r.map(|_| ()))
    }

    fn claim_snapshot_id(&self, id: &SnapshotId) -> Option<Result<()>> {
        LustreSnapshotId::parse(id.as_str(), &self.inner.config).map(|r| r.map(|_| ()))
    }

    fn accepts_parameters(&self, parameters: &Parameters) -> bool {
        VolumeParams::claims(parameters.as_map())
    }

    /// Lustre quotas count whole KiB.
    fn capacity_unit(&self) -> u64 {
        1024
    }

    async fn check_ready(&self) -> Result<()> {
        let inner = &self.inner;
        let s = &inner.settings;
        let mut tools: Vec<(&str, &Path)> = vec![("lfs", &s.lfs), ("lctl", &s.lctl)];
        if inner.ctx.role == Role::Controller {
            tools.push(("tar", &s.tar));
        }
        let missing: Vec<String> = tools
            .into_iter()
            .filter(|(_, path)| !program_exists(path))
            .map(|(name, path)| format!("{name} ({})", path.display()))
            .collect();
        if !missing.is_empty() {
            return Err(Error::Unavailable(format!(
                "Lustre tools not found: {}",
                missing.join(", ")
            )));
        }
        inner.check_client().await
    }

    async fn create_volume(&self, request: &CreateVolumeRequest) -> Result<Volume> {
        self.inner.create_volume(request).await
    }

    fn planned_volume_id(&self, request: &CreateVolumeRequest) -> Option<VolumeId> {
        self.inner.planned_volume_id(request)
    }

    fn planned_snapshot_id(&self, request: &CreateSnapshotRequest) -> Option<SnapshotId> {
        self.inner.planned_snapshot_id(request)
    }

    async fn delete_volume(&self, id: &VolumeId, secrets: &Secrets) -> Result<()> {
        self.inner.delete_volume(id, secrets).await
    }

    async fn expand_volume(&self, id: &VolumeId, bytes: u64, secrets: &Secrets) -> Result<u64> {
        self.inner.expand_volume(id, bytes, secrets).await
    }

    async fn get_volume(&self, id: &VolumeId) -> Result<VolumeInfo> {
        self.inner.get_volume(id).await
    }

    async fn list_volumes(&self) -> Result<Vec<VolumeInfo>> {
        self.inner.list_volumes().await
    }

    async fn available_capacity(
        &self,
        parameters: &Parameters,
        topology: &Topology,
    ) -> Result<u64> {
        self.inner.available_capacity(parameters, topology).await
    }

    async fn create_snapshot(&self, request: &CreateSnapshotRequest) -> Result<Snapshot> {
        self.inner.create_snapshot(request).await
    }

    async fn delete_snapshot(&self, id: &SnapshotId, secrets: &Secrets) -> Result<()> {
        self.inner.delete_snapshot(id, secrets).await
    }

    async fn list_snapshots(&self) -> Result<Vec<Snapshot>> {
        self.inner.list_snapshots().await
    }

    async fn node_topology(&self) -> Result<Topology> {
        Ok(self.inner.node_topology())
    }

    async fn stage_volume(&self, request: &NodeStageRequest) -> Result<()> {
        self.inner.stage_volume(request).await
    }

    async fn unstage_volume(&self, id: &VolumeId, staging_path: &Path) -> Result<()> {
        self.inner.unstage_volume(id, staging_path).await
    }

    async fn publish_source(&self, request: &NodePublishRequest) -> Result<PublishSource> {
        Ok(Inner::publish_source(request))
    }

    async fn volume_stats(&self, id: &VolumeId, volume_path: &Path) -> Result<VolumeStats> {
        self.inner.volume_stats(id, volume_path).await
    }
}

/// Whether `program` is an existing file (a path) or found in `PATH` (a bare name).
fn program_exists(program: &Path) -> bool {
    if program.components().count() > 1 || program.is_absolute() {
        return program.is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LustreConfig;
    use csi_core::ports::{CommandOutput, MockCommandRunner, MockMounter, MockSnapshotEngine};
    use std::os::unix::fs::PermissionsExt;

    fn backend(dir: &Path, runner: MockCommandRunner, role: Role) -> LustreBackend {
        for tool in ["lfs", "lctl", "tar"] {
            let path = dir.join(tool);
            std::fs::write(&path, "").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let settings = LustreSettings {
            lfs: dir.join("lfs"),
            lctl: dir.join("lctl"),
            client_version_file: dir.join("version"),
            tar: dir.join("tar"),
            ..Default::default()
        };
        let config = LustreConfig::from_value(serde_json::json!({"exascaler_map": {
            "exa1": {"exaFS": "10.0.0.1@tcp:/fs", "mountPoint": dir.join("mnt").display().to_string()}}}))
        .unwrap();
        let ctx = BackendContext {
            role,
            node_id: "n".into(),
            driver_name: "exa.csi.ddn.com".into(),
            runner: Arc::new(runner),
            mounter: Arc::new(MockMounter::new()),
            snapshots: Arc::new(MockSnapshotEngine::new()),
            state_dir: dir.join("state"),
            kubelet_dir: dir.join("kubelet"),
        };
        LustreBackend::new(config, settings, ctx).unwrap()
    }

    /// A runner whose `lctl get_param` answers as on a node without the Lustre client.
    fn lctl_without_lustre() -> MockCommandRunner {
        let mut runner = MockCommandRunner::new();
        runner.expect_run().times(1..).returning(|_| {
            Ok(CommandOutput {
                status: Some(2),
                stdout: String::new(),
                stderr: "error: get_param: param_path 'version': No such file or directory".into(),
            })
        });
        runner
    }

    #[tokio::test]
    async fn ready_means_tools_present_and_the_client_answering() {
        let dir = tempfile::tempdir().unwrap();
        let mut runner = MockCommandRunner::new();
        runner
            .expect_run()
            .times(1)
            .withf(|c| c.args == ["get_param", "-n", "version"])
            .returning(|_| {
                Ok(CommandOutput {
                    status: Some(0),
                    stdout: "2.15.5\n".into(),
                    stderr: String::new(),
                })
            });
        let b = backend(dir.path(), runner, Role::Controller);
        b.check_ready().await.unwrap();
        // Within the minute no process is spawned again (the mock allows one call).
        b.check_ready().await.unwrap();

        let b = backend(dir.path(), lctl_without_lustre(), Role::Node);
        let err = b.check_ready().await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::Unavailable);
        assert!(
            err.to_string().contains("Lustre client is not ready"),
            "{err}"
        );

        let b = backend(dir.path(), MockCommandRunner::new(), Role::Controller);
        std::fs::remove_file(dir.path().join("tar")).unwrap();
        let err = b.check_ready().await.unwrap_err();
        assert!(err.to_string().contains("tar ("), "{err}");
    }

    #[tokio::test]
    async fn a_readable_version_file_spares_lctl() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("version"), "2.15.5\n").unwrap();
        // The mock has no expectation: a process started would fail the test.
        let b = backend(dir.path(), MockCommandRunner::new(), Role::Node);
        b.check_ready().await.unwrap();
        let seen = b.inner.client_seen.lock().unwrap().clone();
        assert_eq!(seen.map(|(_, v)| v).as_deref(), Some("2.15.5"));

        // A file that names no version falls back to lctl, whose failure is Unavailable.
        std::fs::write(dir.path().join("version"), "\n").unwrap();
        let b = backend(dir.path(), lctl_without_lustre(), Role::Node);
        let err = b.check_ready().await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::Unavailable);
    }
}
