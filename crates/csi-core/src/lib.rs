//! The pfs-csi core: the domain, the ports and the use cases of a CSI driver for parallel
//! filesystems. It knows nothing of gRPC or Kubernetes.
//!
//! - [`domain`]: volumes, capacities, access modes, topology, snapshots, stats, secrets.
//! - [`ports`]: async traits the outside world implements: [`ports::Mounter`],
//!   [`ports::CommandRunner`], [`ports::QuotaManager`], [`ports::SnapshotEngine`],
//!   [`ports::TopologyProvider`] and the per-filesystem [`ports::FilesystemBackend`].
//!   With the `mock` feature, each has a mockall mock.
//! - [`service`]: the use cases ([`service::ControllerService`], [`service::NodeService`]):
//!   validation, routing by volume id, per-volume locks and the CSI idempotency rules.
//! - [`linux`]: the Linux implementations of the mounter and the command runner.
//! - [`snapshot_engine`]: the [`ports::SnapshotEngine`] on GNU tar or dtar, with MD5 checks.
//! - [`fs_paths`]: paths below a mount point checked for symbolic links.
//! - [`blocking`]: blocking filesystem work under a timeout.
//! - [`error`]: the one error type and its status codes.

pub mod blocking;
pub mod client_tools;
pub mod domain;
pub mod error;
pub mod fs_paths;
pub mod id_alloc;
pub mod linux;
pub mod mount_options;
pub mod ports;
pub mod records;
pub mod service;
pub mod snapshot_engine;
pub mod tasks;

pub use error::{Error, ErrorCode, Result};
