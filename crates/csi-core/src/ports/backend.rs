//! What one filesystem type (Lustre, BeeGFS) provides to the use cases.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;

use crate::domain::{
    CapacityRange, Parameters, RequestMetadata, Secrets, Snapshot, SnapshotId, Topology,
    TopologyRequirement, Volume, VolumeCapability, VolumeCondition, VolumeContentSource, VolumeId,
    VolumeStats,
};
use crate::error::Result;

/// A validated CreateVolume request.
#[derive(Debug, Clone)]
pub struct CreateVolumeRequest {
    /// The CO's name for the volume (idempotency key).
    pub name: String,
    /// Requested capacity.
    pub capacity: CapacityRange,
    /// Requested capabilities (at least one, each supported by the backend).
    pub capabilities: Vec<VolumeCapability>,
    /// StorageClass parameters, without the reserved `csi.storage.k8s.io/` keys.
    pub parameters: Parameters,
    /// PVC/PV names added by the provisioner.
    pub metadata: RequestMetadata,
    /// StorageClass secrets.
    pub secrets: Secrets,
    /// Snapshot or volume to fill the new volume from.
    pub content_source: Option<VolumeContentSource>,
    /// Accessibility requirements.
    pub topology: TopologyRequirement,
}

/// A validated CreateSnapshot request.
#[derive(Debug, Clone)]
pub struct CreateSnapshotRequest {
    /// The CO's name for the snapshot (idempotency key).
    pub name: String,
    /// The volume to snapshot.
    pub source_volume_id: VolumeId,
    /// VolumeSnapshotClass parameters.
    pub parameters: Parameters,
    /// Snapshotter secrets.
    pub secrets: Secrets,
}

/// A validated NodeStageVolume request.
#[derive(Debug, Clone)]
pub struct NodeStageRequest {
    /// The volume.
    pub volume_id: VolumeId,
    /// The per-volume staging directory the CO created.
    pub staging_path: PathBuf,
    /// The capability the volume is staged with.
    pub capability: VolumeCapability,
    /// The volume context returned by CreateVolume (or PV `volumeAttributes`).
    pub context: BTreeMap<String, String>,
    /// Node-stage secrets.
    pub secrets: Secrets,
}

/// A validated NodePublishVolume request.
#[derive(Debug, Clone)]
pub struct NodePublishRequest {
    /// The volume.
    pub volume_id: VolumeId,
    /// Where NodeStageVolume staged it.
    pub staging_path: PathBuf,
    /// The workload's mount target.
    pub target_path: PathBuf,
    /// The capability it is published with.
    pub capability: VolumeCapability,
    /// Whether the publish must be read-only (request flag or a read-only access mode).
    pub read_only: bool,
    /// The volume context.
    pub context: BTreeMap<String, String>,
    /// Node-publish secrets.
    pub secrets: Secrets,
}

/// What NodePublishVolume bind-mounts onto the target, from [`FilesystemBackend::publish_source`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishSource {
    /// Where the volume's staging mount is: nothing is published unless a mount is there
    /// when the bind is made (else the volume is not staged).
    pub staged: PathBuf,
    /// The directory bind-mounted: `staged` itself or a directory below it.
    pub dir: PathBuf,
}

/// A volume with its health, for ListVolumes and ControllerGetVolume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeInfo {
    /// The volume.
    pub volume: Volume,
    /// Its condition as the controller sees it (directory present, quota readable).
    pub condition: VolumeCondition,
}

/// One filesystem type: provisions, deletes, expands, stages and reports volumes.
///
/// The core validates requests, holds per-volume locks and answers the idempotency cases
/// it can decide alone; a backend still makes each operation idempotent on its own state.
/// Backends report errors with the core's [`crate::Error`] and never know gRPC.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait FilesystemBackend: Send + Sync {
    /// Short name, `lustre` or `beegfs`.
    fn name(&self) -> &'static str;

    /// Filesystem types a capability may name (`lustre`; `beegfs`).
    fn fs_types(&self) -> &'static [&'static str];

    /// Whether `id` is in one of this backend's volume id formats: `None` when not,
    /// `Some(Err)` (InvalidArgument) when it is but is malformed (e.g. `..` in a path).
    fn claim_volume_id(&self, id: &VolumeId) -> Option<Result<()>>;

    /// Same as [`Self::claim_volume_id`] for snapshot ids.
    fn claim_snapshot_id(&self, id: &SnapshotId) -> Option<Result<()>>;

    /// Whether CreateVolume/GetCapacity parameters are meant for this backend.
    fn accepts_parameters(&self, parameters: &Parameters) -> bool;

    /// Checks tools and configuration; Probe answers ready only when this succeeds.
    async fn check_ready(&self) -> Result<()>;

    /// Creates (or returns the existing volume of) `request.name`. A volume of that name
    /// with other parameters is `AlreadyExists`; a content source that does not exist is
    /// `NotFound`.
    async fn create_volume(&self, request: &CreateVolumeRequest) -> Result<Volume>;

    /// The id [`Self::create_volume`] would give `request`'s volume, told without touching
    /// the filesystem; `None` when the request does not say (or is invalid: the create
    /// reports that). The core holds that id's lock while the volume is made, so a
    /// DeleteVolume of it (a CO that gave up on the create) waits for the create instead of
    /// finding nothing and leaving a volume behind. `None` by default: no such ordering.
    fn planned_volume_id(&self, request: &CreateVolumeRequest) -> Option<VolumeId> {
        let _ = request;
        None
    }

    /// Deletes a volume this driver created: its data and its quota. Not an error when the
    /// volume does not exist. A volume the driver did not create is never deleted:
    /// `FailedPrecondition`.
    async fn delete_volume(&self, id: &VolumeId, secrets: &Secrets) -> Result<()>;

    /// The granularity of capacities, in bytes: limits count whole units of it (Lustre
    /// quotas count KiB). The core asks for capacities rounded up to it, and checks them
    /// against the CO's limit before it asks. 1 (any size) by default.
    fn capacity_unit(&self) -> u64 {
        1
    }

    /// Raises the volume's capacity to `bytes` (larger than the current one, a multiple of
    /// [`Self::capacity_unit`]); returns the new capacity. `NotFound` when the volume does
    /// not exist.
    async fn expand_volume(&self, id: &VolumeId, bytes: u64, secrets: &Secrets) -> Result<u64>;

    /// The volume and its condition; `NotFound` when it does not exist.
    async fn get_volume(&self, id: &VolumeId) -> Result<VolumeInfo>;

    /// The volume without its condition, for use cases that need only its existence or
    /// capacity (a backend whose condition costs a tool run answers without it); `NotFound`
    /// when it does not exist.
    async fn volume(&self, id: &VolumeId) -> Result<Volume> {
        Ok(self.get_volume(id).await?.volume)
    }

    /// Every volume this driver created on every configured filesystem.
    async fn list_volumes(&self) -> Result<Vec<VolumeInfo>>;

    /// Bytes a new volume with these parameters could still get in `topology` (empty: any
    /// topology): free space that quotas have not promised away.
    async fn available_capacity(&self, parameters: &Parameters, topology: &Topology)
    -> Result<u64>;

    /// Starts (or reports the state of) snapshot `request.name`; `ready_to_use` is false
    /// while the archive is still being written. `NotFound` when the source does not exist.
    async fn create_snapshot(&self, request: &CreateSnapshotRequest) -> Result<Snapshot>;

    /// The id [`Self::create_snapshot`] would give `request`'s snapshot, told without
    /// touching the filesystem; `None` when the request does not say. The core holds that
    /// id's lock while the snapshot is started, so a DeleteSnapshot of it waits instead of
    /// finding no record a moment before the create writes one. `None` by default.
    fn planned_snapshot_id(&self, request: &CreateSnapshotRequest) -> Option<SnapshotId> {
        let _ = request;
        None
    }

    /// Deletes a snapshot; not an error when it does not exist.
    async fn delete_snapshot(&self, id: &SnapshotId, secrets: &Secrets) -> Result<()>;

    /// Every snapshot on every configured filesystem.
    async fn list_snapshots(&self) -> Result<Vec<Snapshot>>;

    /// Topology segments this node contributes (e.g. its Lustre zone).
    async fn node_topology(&self) -> Result<Topology>;

    /// Makes the volume available at `request.staging_path`. Idempotent: staging again with
    /// the same capability succeeds.
    async fn stage_volume(&self, request: &NodeStageRequest) -> Result<()>;

    /// Undoes [`Self::stage_volume`]. Idempotent: unstaging something not staged succeeds.
    async fn unstage_volume(&self, id: &VolumeId, staging_path: &Path) -> Result<()>;

    /// What the core bind-mounts onto the publish target (at or below the staging path).
    /// The core checks that the staging mount is in place in the same step as the bind
    /// ([`crate::ports::Mounter::bind_mount_below`]).
    async fn publish_source(&self, request: &NodePublishRequest) -> Result<PublishSource>;

    /// Usage of a published volume whose data is visible at `volume_path`.
    async fn volume_stats(&self, id: &VolumeId, volume_path: &Path) -> Result<VolumeStats>;
}

/// Which binary a backend runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The controller plugin (provisioning, snapshots).
    Controller,
    /// The node plugin (stage, publish, stats).
    Node,
}

/// What a backend is given to work with. The wiring builds one per backend, so the
/// mounter carries that backend's configured `mount` tool.
#[derive(Clone)]
pub struct BackendContext {
    /// Controller or node.
    pub role: Role,
    /// This node's id (the Kubernetes node name).
    pub node_id: String,
    /// The CSI driver name (it names the client tools directory, see
    /// [`crate::client_tools`]).
    pub driver_name: String,
    /// Runs every external command.
    pub runner: std::sync::Arc<dyn crate::ports::CommandRunner>,
    /// Mounts and unmounts.
    pub mounter: std::sync::Arc<dyn crate::ports::Mounter>,
    /// Cuts and restores snapshot archives.
    pub snapshots: std::sync::Arc<dyn crate::ports::SnapshotEngine>,
    /// A private directory of this process for generated files (client configuration,
    /// secret files written 0400); survives restarts of the plugin.
    pub state_dir: PathBuf,
    /// The kubelet root directory (`/var/lib/kubelet` unless configured).
    pub kubelet_dir: PathBuf,
}

impl std::fmt::Debug for BackendContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendContext")
            .field("role", &self.role)
            .field("node_id", &self.node_id)
            .field("driver_name", &self.driver_name)
            .field("state_dir", &self.state_dir)
            .field("kubelet_dir", &self.kubelet_dir)
            .finish_non_exhaustive()
    }
}
