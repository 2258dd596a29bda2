//! Use cases: the controller and node services the gRPC layer drives.

mod controller;
mod locks;
mod node;
mod pagination;
mod routing;

pub use controller::{
    ControllerService, DEFAULT_VOLUME_BYTES, ExpandOutcome, ListPage, Readiness, ValidationOutcome,
};
pub use locks::{LockGuard, OperationLocks};
pub use node::{NodeInfo, NodeService, PublishVolume, StageVolume};
pub use pagination::paginate;
pub use routing::Backends;
