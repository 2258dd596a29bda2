//! Lustre (DDN EXAScaler) adapter of the pfs-csi ports.
//!
//! A cluster running DDN's EXAScaler CSI driver keeps its configuration file and its volumes:
//! [`LustreConfig`] reads the `exascaler_map` file (and the flat v1.x one) unchanged, and
//! [`volume_id`] reads every volume handle format that driver ever wrote.
//!
//! - [`config`]: the EXAScaler configuration and our own [`LustreSettings`] (`pfsCsi.lustre`).
//! - [`exafs`]: `exaFS` values and NID lists.
//! - [`volume_id`]: volume handles (four historical formats read, one written) and snapshot
//!   ids; the module docs explain the format new volumes get.
//! - [`parameters`]: StorageClass, secret and VolumeSnapshotClass parameters.
//! - [`mount_options`]: validation and merge of mount options.
//! - [`quota`]: project quotas through `lfs`, and the parsers of its output.
//! - [`records`]: the crash-safe records of what the driver made.
//! - [`mounts`]: shared, reference-counted filesystem mounts.
//! - [`volume_dirs`]: directory work under timeouts (create, trash, free space).
//! - [`tasks`]: background work (snapshots, restores, clones).
//! - [`backend`]: [`LustreBackend`], the core's `FilesystemBackend` for Lustre; its
//!   controller and node halves are in `controller`, `snapshots` and `node`.
//!
//! Every external program runs through the core's `CommandRunner` with a timeout; every
//! mount through its `Mounter`; archives through its `SnapshotEngine`.
//!
//! # Decisions
//! - New volumes get the id `<entry>:/<name>`, snapshots `<entry>:snapshot:<name>` (see
//!   [`volume_id`] for why).
//! - Records live in `<mountPoint>/.pfs-csi/` of the entry's filesystem (`metadataDir`):
//!   `volumes/<name>.json`, `snapshots/<name>.json`; archives default to
//!   `.pfs-csi/snapshots/<name>.tar`; deleted volumes pass through `.pfs-csi/trash/`, emptied
//!   in the background. A directory without a record is never deleted.
//! - Volume directories default to mode 0777 (the EXAScaler driver's example), owner
//!   `exaMountUid`/`exaMountGid` when given; generated project ids lie in
//!   [10000, 4294967295] unless the StorageClass narrows them, and are checked against our
//!   records and `lfs quota` (usage or limits mean "taken").
//! - A StorageClass secret may carry `exaFS`, `managementIp` and `mountOptions`. An `exaFS`
//!   from a secret never enters the volume context, so nodes need it in the node-stage secret.
//! - Snapshots and restores run in the background: CreateSnapshot answers
//!   `ready_to_use: false` at once (`snapshotWaitSeconds`, default 0); CreateVolume from a
//!   content source waits `contentWaitSeconds` (default 10), then answers `Aborted` until the
//!   copy is done.

pub mod backend;
pub mod client_version;
pub mod config;
mod controller;
pub mod error;
pub mod exafs;
pub mod getname;
pub mod mount_options;
pub mod mounts;
mod node;
pub mod parameters;
pub mod quota;
pub mod records;
mod snapshots;
#[cfg(test)]
mod test_support;
pub mod volume_dirs;
pub mod volume_id;

pub use backend::{LustreBackend, ZONE_KEY};
pub use config::{LustreConfig, LustreEntry, LustreSettings};
pub use error::LustreError;
pub use exafs::{ExaFs, NidList};
pub use volume_id::{LustreSnapshotId, LustreVolumeHandle};
