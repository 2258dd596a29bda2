//! [`BeegfsBackend`]: the BeeGFS implementation of the core's [`FilesystemBackend`] port.
//!
//! The operations live in the private modules `controller`, `snapshots` and `node`;
//! this module holds the shared state: configuration, the tool runner with its version
//! cache, the id allocator, and the client mounts the controller keeps per filesystem.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use csi_core::domain::{
    Parameters, Secrets, Snapshot, SnapshotId, Topology, Volume, VolumeId, VolumeStats,
};
use csi_core::id_alloc::IdAllocator;
use csi_core::linux::StuckPaths;
use csi_core::ports::{
    ArchiveOptions, ArchiveTool, BackendContext, CreateSnapshotRequest, CreateVolumeRequest,
    FilesystemBackend, NodePublishRequest, NodeStageRequest, PublishSource, VolumeInfo,
};
use csi_core::tasks::Tasks;
use csi_core::{Error, ErrorCode, Result};
use tracing::{info, warn};

use crate::clientconf::{self, ClientConfInput, ClientFiles};
use crate::config::DriverConfig;
use crate::ctl::{BeegfsVersion, Ctl, CtlTarget, CtlTools};
use crate::error::ConfigError;
use crate::mounts::{client_mount_options, selinux_enabled};
use crate::params::{SYS_MGMTD_HOST, VOL_DIR_BASE_PATH};
use crate::quota::BeegfsQuota;
use crate::records::safe_key;
use crate::secrets::ClientSecrets;
use crate::settings::{BeegfsSettings, QuotaSettings, ResolvedTools, tool_exists};
use crate::volume_id::{BeegfsSnapshotId, BeegfsVolumeId};

/// The mount source of a BeeGFS client mount.
pub const MOUNT_SOURCE: &str = "beegfs_nodev";
/// The filesystem type of a BeeGFS client mount.
pub const FS_TYPE: &str = "beegfs";

/// The BeeGFS backend: BeeGFS 7 and 8 filesystems named by `sysMgmtdHost`.
#[derive(Clone)]
pub struct BeegfsBackend {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for BeegfsBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BeegfsBackend")
            .field("ctx", &self.inner.ctx)
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

/// How the controller reaches one filesystem.
#[derive(Debug, Clone)]
pub(crate) struct FsAccess {
    /// The management host.
    pub host: String,
    /// The controller's client mount of it.
    pub root: PathBuf,
    /// The tools' view of it.
    pub target: CtlTarget,
    /// Its quota settings, when quotas are enabled.
    pub quota: Option<QuotaSettings>,
}

/// Shared state of a backend.
pub(crate) struct Inner {
    pub ctx: BackendContext,
    pub config: DriverConfig,
    pub secrets: ClientSecrets,
    pub settings: BeegfsSettings,
    pub tools: ResolvedTools,
    pub ctl: Arc<Ctl>,
    pub ids: IdAllocator,
    host_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    controller_fs: Mutex<HashMap<String, FsAccess>>,
    node_targets: Mutex<HashMap<String, CtlTarget>>,
    /// Snapshot ids being cut in this process, with their source volume ids.
    pub cuts: Mutex<HashMap<String, String>>,
    /// Volumes being made from a content source, which outlives the CreateVolume calls.
    pub fills: Tasks,
    /// The failure of each fill that ended badly, for the CreateVolume call that waits for it.
    pub fill_failures: Mutex<HashMap<String, Error>>,
    /// Volume ids whose directory is being deleted in this process.
    pub deleting: Mutex<HashSet<String>>,
    /// Volume paths whose stats call is still blocked after its timeout.
    pub stuck: StuckPaths,
    /// Held by a test to hold volume data removals where they start.
    #[cfg(test)]
    pub removal_gate: tokio::sync::Mutex<()>,
}

impl BeegfsBackend {
    /// A backend for the filesystems of `config` (the reference driver's configuration),
    /// with their `secrets` and this driver's `settings`, working through `ctx`.
    pub fn new(
        ctx: BackendContext,
        config: DriverConfig,
        secrets: ClientSecrets,
        settings: BeegfsSettings,
    ) -> Result<Self, ConfigError> {
        settings.validate()?;
        let tools = settings.resolve_tools(&csi_core::client_tools::client_dir(
            &ctx.kubelet_dir,
            &ctx.driver_name,
        ));
        let ctl = Arc::new(Ctl::new(
            ctx.runner.clone(),
            CtlTools {
                beegfs_ctl: tools.beegfs_ctl.clone(),
                beegfs: tools.beegfs.clone(),
                timeout: settings.command_timeout(),
            },
        ));
        info!(
            role = ?ctx.role,
            beegfs_ctl = %tools.beegfs_ctl.display(),
            beegfs = %tools.beegfs.display(),
            mode = ?settings.client_mount_mode,
            "BeeGFS backend configured"
        );
        Ok(Self {
            inner: Arc::new(Inner {
                ctx,
                config,
                secrets,
                settings,
                tools,
                ctl,
                ids: IdAllocator::default(),
                host_locks: Mutex::new(HashMap::new()),
                controller_fs: Mutex::new(HashMap::new()),
                node_targets: Mutex::new(HashMap::new()),
                cuts: Mutex::new(HashMap::new()),
                fills: Tasks::default(),
                fill_failures: Mutex::new(HashMap::new()),
                deleting: Mutex::new(HashSet::new()),
                stuck: StuckPaths::default(),
                #[cfg(test)]
                removal_gate: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// Reads the configuration, secret and settings files, then builds the backend. The
    /// settings are the `pfsCsi.beegfs` key of `settings_file` (defaults when absent).
    pub fn from_files(
        ctx: BackendContext,
        config_file: &Path,
        conn_auth_file: Option<&Path>,
        tls_cert_file: Option<&Path>,
        settings_file: Option<&Path>,
    ) -> Result<Self, ConfigError> {
        let config = DriverConfig::load(config_file)?;
        let secrets = ClientSecrets::load(conn_auth_file, tls_cert_file)?;
        let settings = match settings_file {
            Some(path) => BeegfsSettings::load(path)?,
            None => BeegfsSettings::default(),
        };
        Self::new(ctx, config, secrets, settings)
    }

    /// The resolved tool paths (the wiring builds the mounter with `mount`).
    pub fn tools(&self) -> &ResolvedTools {
        &self.inner.tools
    }

    /// The settings in use.
    pub fn settings(&self) -> &BeegfsSettings {
        &self.inner.settings
    }
}

/// A volume id or snapshot id text made into its parsed form.
pub(crate) fn parse_volume_id(id: &VolumeId) -> Result<BeegfsVolumeId> {
    BeegfsVolumeId::parse(id.as_str())
}

impl Inner {
    /// The backend's part of the state directory.
    pub fn state(&self) -> PathBuf {
        self.ctx.state_dir.join("beegfs")
    }

    /// Timeout of filesystem operations through a client mount.
    pub fn fs_timeout(&self) -> Duration {
        self.settings.command_timeout()
    }

    /// Runs `f`, which works on `path` below a client mount, on the blocking pool within
    /// [`Self::fs_timeout`]; refused at once while an earlier call on `path` is still blocked
    /// (a hung directory then holds one thread, not one per retry, and other volumes' calls
    /// go on). [`Self::unmount_client`] forgets the calls below the mount it removes.
    pub async fn below_mount<T, F>(&self, path: &Path, what: &str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T> + Send + 'static,
    {
        self.stuck
            .run(path, self.fs_timeout(), what.to_string(), f)
            .await?
    }

    /// Unmounts everything at the client mount `mount`, then stops refusing the calls below
    /// it that are still blocked: a client mounted there later is another one.
    pub async fn unmount_client(&self, mount: &Path) -> Result<()> {
        self.ctx.mounter.unmount_all(mount).await?;
        self.stuck.forget_below(mount);
        Ok(())
    }

    /// How snapshot archives are written.
    pub fn archive_options(&self) -> ArchiveOptions {
        let tool = match &self.settings.snapshots.dtar {
            Some(dtar) => ArchiveTool::Dtar(dtar.clone()),
            None => ArchiveTool::Tar(self.settings.snapshots.tar.clone()),
        };
        ArchiveOptions {
            tool,
            verify: self.settings.snapshots.verify,
            checksum: self.settings.snapshots.checksum,
        }
    }

    /// A lock serialising mount set-up and teardown of one filesystem in this process.
    pub fn host_lock(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.host_locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.to_string())
            .or_default()
            .clone()
    }

    /// Whether `path` is a mount point; a missing path is not.
    pub async fn is_mounted(&self, path: &Path) -> Result<bool> {
        match self.ctx.mounter.is_mount_point(path).await {
            Ok(m) => Ok(m),
            Err(e) if e.code() == ErrorCode::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Writes the client files of `host` into `dir`, for `version` when known.
    fn write_files(
        &self,
        dir: &Path,
        host: &str,
        version: Option<BeegfsVersion>,
    ) -> Result<ClientFiles> {
        let config = self.config.resolve(&self.ctx.node_id, host);
        let (template, _) = clientconf::load_template(&self.tools.templates);
        let input = ClientConfInput {
            host,
            config: &config,
            conn_auth: self.secrets.conn_auth(host),
            tls_cert: self.secrets.tls_cert(host),
            client_port: clientconf::free_udp_port()?,
            version,
        };
        clientconf::write_client_files(dir, &template, &input)
    }

    /// The tools' view of `host` with the files in `files`.
    fn target_for(&self, host: &str, files: &ClientFiles) -> CtlTarget {
        let config = self.config.resolve(&self.ctx.node_id, host);
        CtlTarget {
            host: host.to_string(),
            grpc_port: config.grpc_port.unwrap_or(self.settings.grpc_port),
            client_conf: files.conf.clone(),
            auth_file: files.auth_file.clone(),
            tls_cert_file: files.tls_cert_file.clone(),
        }
    }

    /// Writes the client files of `host` into `dir` and returns them with the tools' view.
    /// When the template does not say which client port key to use, the filesystem's
    /// version is detected (once) and the files are written for it.
    pub async fn prepare_client_files(
        &self,
        dir: &Path,
        host: &str,
    ) -> Result<(ClientFiles, CtlTarget)> {
        let cached = self.ctl.cached_version(host);
        let files = self.write_files(dir, host, cached)?;
        let target = self.target_for(host, &files);
        let (template, _) = clientconf::load_template(&self.tools.templates);
        if cached.is_none() && !clientconf::template_has_port_key(&template) {
            let version = self.ctl.version(&target).await?;
            let files = self.write_files(dir, host, Some(version))?;
            let target = self.target_for(host, &files);
            return Ok((files, target));
        }
        Ok((files, target))
    }

    /// Mounts the client described by `files` at `mount_point` (created when missing).
    pub async fn mount_client(
        &self,
        files: &ClientFiles,
        mount_point: &Path,
        user_flags: &[String],
    ) -> Result<()> {
        std::fs::create_dir_all(mount_point)
            .map_err(|e| Error::io("create directory", mount_point, e))?;
        let options = client_mount_options(
            &files.conf,
            user_flags,
            selinux_enabled(&self.settings.selinux_enforce_path),
        );
        self.ctx
            .mounter
            .mount(MOUNT_SOURCE, mount_point, FS_TYPE, &options)
            .await
    }

    /// The controller's access to `host`: its client mount (made on first use and after it
    /// disappears) and tool target.
    pub async fn controller_fs(&self, host: &str) -> Result<FsAccess> {
        let key = safe_key(host);
        let lock = self.host_lock(&format!("controller:{key}"));
        let _guard = lock.lock().await;
        let cached = self
            .controller_fs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(host)
            .cloned();
        if let Some(fs) = cached
            && self.is_mounted(&fs.root).await?
        {
            return Ok(fs);
        }
        let dir = self.state().join("controller").join(&key);
        let (files, target) = self.prepare_client_files(&dir, host).await?;
        let root = dir.join("mount");
        if !self.is_mounted(&root).await? {
            self.mount_client(&files, &root, &[]).await?;
            info!(host, mount = %root.display(), "controller client mount ready");
        }
        let fs = FsAccess {
            host: host.to_string(),
            root,
            target,
            quota: self.settings.quota_for(host).cloned(),
        };
        self.controller_fs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(host.to_string(), fs.clone());
        Ok(fs)
    }

    /// The tools' view of `host` from this node (files under the node state directory).
    pub async fn node_target(&self, host: &str) -> Result<CtlTarget> {
        if let Some(t) = self
            .node_targets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(host)
        {
            return Ok(t.clone());
        }
        let dir = self.state().join("node").join("fs").join(safe_key(host));
        let (_, target) = self.prepare_client_files(&dir, host).await?;
        self.node_targets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(host.to_string(), target.clone());
        Ok(target)
    }

    /// Group quotas of a filesystem.
    pub fn quota_manager(&self, fs: &FsAccess, quota: &QuotaSettings) -> BeegfsQuota {
        BeegfsQuota::new(
            self.ctl.clone(),
            fs.target.clone(),
            quota.storage_pool,
            self.fs_timeout(),
        )
    }

    async fn check_ready(&self) -> Result<()> {
        let ctl7 = tool_exists(&self.tools.beegfs_ctl);
        let ctl8 = tool_exists(&self.tools.beegfs);
        if !ctl7 && !ctl8 {
            return Err(Error::FailedPrecondition(format!(
                "neither the BeeGFS 7 tool {} nor the BeeGFS 8 tool {} can be found",
                self.tools.beegfs_ctl.display(),
                self.tools.beegfs.display()
            )));
        }
        // Both roles mount: the node for workloads, the controller to reach the filesystem.
        if !tool_exists(&self.tools.mount) {
            return Err(Error::FailedPrecondition(format!(
                "the mount tool {} cannot be found",
                self.tools.mount.display()
            )));
        }
        let state = self.state();
        std::fs::create_dir_all(&state).map_err(|e| Error::io("create directory", &state, e))?;
        let (_, template) = clientconf::load_template(&self.tools.templates);
        if template.is_none() {
            warn!(candidates = ?self.tools.templates, "no beegfs-client.conf template found; using the built-in one");
        }
        Ok(())
    }
}

/// Seconds since the epoch.
pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Volume context keys.
pub(crate) fn volume_context(
    host: &str,
    base: &str,
    quota_gid: Option<u32>,
) -> BTreeMap<String, String> {
    let mut ctx = BTreeMap::new();
    ctx.insert(SYS_MGMTD_HOST.to_string(), host.to_string());
    ctx.insert(VOL_DIR_BASE_PATH.to_string(), base.to_string());
    match quota_gid {
        Some(gid) => {
            ctx.insert("quota".to_string(), "enabled".to_string());
            ctx.insert("quotaGid".to_string(), gid.to_string());
        }
        None => {
            ctx.insert("quota".to_string(), "disabled".to_string());
        }
    }
    ctx
}

#[async_trait]
impl FilesystemBackend for BeegfsBackend {
    fn name(&self) -> &'static str {
        "beegfs"
    }

    fn fs_types(&self) -> &'static [&'static str] {
        &["beegfs"]
    }

    fn claim_volume_id(&self, id: &VolumeId) -> Option<Result<()>> {
        BeegfsVolumeId::claims(id.as_str()).then(|| BeegfsVolumeId::parse(id.as_str()).map(|_| ()))
    }

    fn claim_snapshot_id(&self, id: &SnapshotId) -> Option<Result<()>> {
        BeegfsSnapshotId::claims(id.as_str())
            .then(|| BeegfsSnapshotId::parse(id.as_str()).map(|_| ()))
    }

    fn accepts_parameters(&self, parameters: &Parameters) -> bool {
        parameters.get(SYS_MGMTD_HOST).is_some() || parameters.get(VOL_DIR_BASE_PATH).is_some()
    }

    async fn check_ready(&self) -> Result<()> {
        self.inner.check_ready().await
    }

    async fn create_volume(&self, request: &CreateVolumeRequest) -> Result<Volume> {
        self.inner.create_volume(request).await
    }

    fn planned_volume_id(&self, request: &CreateVolumeRequest) -> Option<VolumeId> {
        self.inner.planned_volume_id(request)
    }

    fn planned_snapshot_id(&self, request: &CreateSnapshotRequest) -> Option<SnapshotId> {
        let source = BeegfsVolumeId::parse(request.source_volume_id.as_str()).ok()?;
        SnapshotId::parse(&BeegfsSnapshotId::of(&source, &request.name).to_string()).ok()
    }

    async fn delete_volume(&self, id: &VolumeId, _secrets: &Secrets) -> Result<()> {
        Inner::delete_volume(&self.inner, &parse_volume_id(id)?).await
    }

    async fn expand_volume(&self, id: &VolumeId, bytes: u64, _secrets: &Secrets) -> Result<u64> {
        self.inner.expand_volume(&parse_volume_id(id)?, bytes).await
    }

    async fn get_volume(&self, id: &VolumeId) -> Result<VolumeInfo> {
        self.inner.get_volume(&parse_volume_id(id)?).await
    }

    async fn volume(&self, id: &VolumeId) -> Result<Volume> {
        self.inner.volume(&parse_volume_id(id)?).await
    }

    async fn list_volumes(&self) -> Result<Vec<VolumeInfo>> {
        self.inner.list_volumes().await
    }

    async fn available_capacity(
        &self,
        parameters: &Parameters,
        _topology: &Topology,
    ) -> Result<u64> {
        self.inner.available_capacity(parameters).await
    }

    async fn create_snapshot(&self, request: &CreateSnapshotRequest) -> Result<Snapshot> {
        Inner::create_snapshot(&self.inner, request).await
    }

    async fn delete_snapshot(&self, id: &SnapshotId, _secrets: &Secrets) -> Result<()> {
        self.inner
            .delete_snapshot(&BeegfsSnapshotId::parse(id.as_str())?)
            .await
    }

    async fn list_snapshots(&self) -> Result<Vec<Snapshot>> {
        self.inner.list_snapshots().await
    }

    async fn node_topology(&self) -> Result<Topology> {
        Ok(Topology::new())
    }

    async fn stage_volume(&self, request: &NodeStageRequest) -> Result<()> {
        self.inner.stage_volume(request).await
    }

    async fn unstage_volume(&self, id: &VolumeId, staging_path: &Path) -> Result<()> {
        self.inner
            .unstage_volume(&parse_volume_id(id)?, staging_path)
            .await
    }

    async fn publish_source(&self, request: &NodePublishRequest) -> Result<PublishSource> {
        self.inner.publish_source(request).await
    }

    async fn volume_stats(&self, id: &VolumeId, volume_path: &Path) -> Result<VolumeStats> {
        self.inner
            .volume_stats(&parse_volume_id(id)?, volume_path)
            .await
    }
}
