//! Domain types: what a volume, a capacity, an access mode, a topology, a snapshot is.
//! They are plain data, validated when built from requests.

mod access;
mod capacity;
mod parameters;
mod secrets;
mod snapshot;
mod stats;
mod topology;
mod volume;

pub use access::{AccessMode, AccessType, VolumeCapability};
pub use capacity::{CapacityRange, GIB};
pub use parameters::{Parameters, RequestMetadata};
pub use secrets::Secrets;
pub use snapshot::{Snapshot, SnapshotId};
pub use stats::{VolumeCondition, VolumeStats};
pub use topology::{Topology, TopologyRequirement};
pub use volume::{MAX_ID_BYTES, Volume, VolumeContentSource, VolumeId};
