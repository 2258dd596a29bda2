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

pub mod backend;
pub mod config;
mod controller;
pub mod error;
pub mod exafs;
pub mod mount_options;
pub mod mounts;
mod node;
pub mod parameters;
pub mod quota;
pub mod records;
mod snapshots;
pub mod tasks;
#[cfg(test)]
mod test_support;
pub mod volume_dirs;
pub mod volume_id;

pub use backend::{LustreBackend, ZONE_KEY};
pub use config::{LustreConfig, LustreEntry, LustreSettings};
pub use error::LustreError;
pub use exafs::{ExaFs, NidList};
pub use volume_id::{LustreSnapshotId, LustreVolumeHandle};
