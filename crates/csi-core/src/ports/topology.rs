//! Where this node sits: its topology segments.

use async_trait::async_trait;

use crate::domain::Topology;
use crate::error::Result;

/// Reports this node's topology (zone labels). Implementations may follow changes (a
/// Kubernetes watch on the Node's labels) and answer with the last known value.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait TopologyProvider: Send + Sync {
    /// The node's current topology segments.
    async fn topology(&self) -> Result<Topology>;
}

/// A fixed topology, from configuration.
#[derive(Debug, Clone, Default)]
pub struct StaticTopology(pub Topology);

#[async_trait]
impl TopologyProvider for StaticTopology {
    async fn topology(&self) -> Result<Topology> {
        Ok(self.0.clone())
    }
}
