//! Lustre (DDN EXAScaler) adapter of the pfs-csi ports.

pub mod config;
pub mod error;
pub mod exafs;
pub mod mount_options;
pub mod quota;
pub mod volume_id;

pub use config::{LustreConfig, LustreEntry, LustreSettings};
pub use error::LustreError;
pub use exafs::{ExaFs, NidList};
