//! BeeGFS 7 and 8 adapter of the pfs-csi ports: [`BeegfsBackend`] implements the core's
//! `FilesystemBackend` for filesystems named by their management host, reading the BeeGFS
//! CSI driver's configuration, secrets and volume ids unchanged.
//!
//! Module map:
//! - [`config`]: `csi-beegfs-config.yaml`, merged per node and filesystem.
//! - [`secrets`]: the connAuth and TLS certificate files; values never print.
//! - [`settings`]: this driver's own settings (`pfsCsi.beegfs`).
//! - [`volume_id`]: `beegfs://host/path` volume ids and `beegfs-snap://host/base/name`
//!   snapshot ids.
//! - [`params`]: StorageClass parameters.
//! - [`ctl`]: `beegfs-ctl` (BeeGFS 7) and `beegfs` (BeeGFS 8) commands, output parsers, and
//!   the once-per-filesystem version detection.
//! - [`quota`]: per-volume group quotas ([`quota::BeegfsQuota`], the core's `QuotaManager`).
//! - [`clientconf`]: generated `beegfs-client.conf` files and 0400 secret files.
//! - [`mounts`]: client mount options and bind-mount detection in the mount table.
//! - [`records`]: what is remembered on the filesystem and on the node, and where.
//! - [`fs_tree`]: time-bounded directory operations that never follow links.
//! - [`backend`]: [`BeegfsBackend`] and its shared state; the operations are in
//!   `controller`, `snapshots` and `node`.
//! - [`error`]: the crate's error type (configuration problems).
//!
//! # Static and dynamic volumes
//! A volume is dynamic only when the driver's record of it exists
//! (`<volDirBasePath>/.pfs-csi/volumes/<name>.json`) in a folder that is the driver's own
//! (root's, writable by nobody else) and names that volume. DeleteVolume of any other
//! existing directory is `FailedPrecondition` and leaves the data in place, so a static PV
//! with reclaim policy Delete never loses data; a `.pfs-csi` folder a user made or can write
//! to is refused with `FailedPrecondition`, never believed.
//!
//! # Capacity
//! With quotas enabled for a filesystem (`pfsCsi.beegfs.quotas`), each volume gets a group id
//! of its own from the configured range, the setgid bit on its directory (new files inherit
//! the group) and group space (and optionally inode) limits equal to its capacity; expansion
//! raises them and stats read them. Without quotas the volume context says
//! `quota: disabled` and capacity is a recorded number only.
//!
//! # Client mounts: per volume or shared
//! `clientMountMode: perVolume` (default, as the reference driver) gives every staged volume
//! its own BeeGFS client instance: volumes are isolated (their own mount options, a hung or
//! remounted client touches one volume) at the price of one kernel client, one UDP port and
//! one set of server connections per volume, which adds up with many volumes per node.
//! `clientMountMode: shared` mounts each filesystem once per node, under the state
//! directory, and bind-mounts volume directories from it: one client, one port and one
//! connection set per filesystem, faster staging after the first volume, but every volume
//! of that filesystem shares the client's fate and its mount options. The shared mount is
//! reference-counted in a record that survives restarts; the last unstage unmounts it.
//! Volumes that ask for their own mount options always get their own client mount.

pub mod backend;
pub mod clientconf;
pub mod config;
mod controller;
pub mod ctl;
pub mod error;
pub mod fs_tree;
pub mod mounts;
mod node;
pub mod params;
pub mod quota;
pub mod records;
pub mod secrets;
pub mod settings;
mod snapshots;
pub mod volume_id;

pub use backend::BeegfsBackend;
pub use config::{BeegfsConfig, DriverConfig};
pub use error::ConfigError;
pub use secrets::ClientSecrets;
pub use settings::{BeegfsSettings, ClientMountMode, QuotaSettings};

#[cfg(test)]
mod backend_tests;
#[cfg(test)]
mod testing;
