//! Ports: what the core needs from the outside world, as async traits.
//!
//! With the `mock` feature each trait has a mockall mock (`MockMounter`, `MockCommandRunner`,
//! `MockQuotaManager`, `MockSnapshotEngine`, `MockTopologyProvider`, `MockFilesystemBackend`).

mod backend;
mod command;
mod mounter;
mod quota;
mod snapshot;
mod topology;

pub use backend::{
    BackendContext, CreateSnapshotRequest, CreateVolumeRequest, FilesystemBackend,
    NodePublishRequest, NodeStageRequest, PublishSource, Role, VolumeInfo,
};
pub use command::{Command, CommandOutput, CommandRunner};
pub use mounter::{MAX_STACKED_MOUNTS, MountEntry, Mounter, unmount_one_by_one};
pub(crate) use mounter::{check_below, not_mounted, still_mounted, top_mount_id};
pub use quota::{QuotaLimits, QuotaManager, QuotaUsage};
pub use snapshot::{
    ArchiveChecksum, ArchiveInfo, ArchiveOptions, ArchiveTool, ChecksumKind, SnapshotEngine,
    ToolRecord,
};
pub use topology::{StaticTopology, TopologyProvider};

#[cfg(any(test, feature = "mock"))]
pub use backend::MockFilesystemBackend;
#[cfg(any(test, feature = "mock"))]
pub use command::MockCommandRunner;
#[cfg(any(test, feature = "mock"))]
pub use mounter::MockMounter;
#[cfg(any(test, feature = "mock"))]
pub use quota::MockQuotaManager;
#[cfg(any(test, feature = "mock"))]
pub use snapshot::MockSnapshotEngine;
#[cfg(any(test, feature = "mock"))]
pub use topology::MockTopologyProvider;
