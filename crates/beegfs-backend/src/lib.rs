//! BeeGFS 7 and 8 adapter of the pfs-csi ports.
//!
//! - [`config`]: `csi-beegfs-config.yaml`, merged per node and filesystem.
//! - [`secrets`]: the connAuth and TLS certificate files.
//! - [`settings`]: this driver's own settings (`pfsCsi.beegfs`).
//! - [`error`]: the crate's error type (configuration problems).

pub mod clientconf;
pub mod config;
pub mod ctl;
pub mod error;
pub mod params;
pub mod quota;
pub mod secrets;
pub mod settings;
pub mod volume_id;
