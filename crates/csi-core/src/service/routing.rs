//! Which configured backend serves a volume, a snapshot or a set of parameters.

use std::sync::Arc;

use crate::domain::{Parameters, SnapshotId, VolumeId};
use crate::error::{Error, Result};
use crate::ports::FilesystemBackend;

/// The configured backends, in configuration order.
#[derive(Clone, Default)]
pub struct Backends(Vec<Arc<dyn FilesystemBackend>>);

impl Backends {
    /// Wraps the configured backends.
    pub fn new(backends: Vec<Arc<dyn FilesystemBackend>>) -> Self {
        Self(backends)
    }

    /// Every backend.
    pub fn all(&self) -> &[Arc<dyn FilesystemBackend>] {
        &self.0
    }

    /// The backend whose id format `id` is in; `None` when no backend knows the format
    /// (such a volume cannot exist); InvalidArgument when the owner finds it malformed.
    pub fn for_volume(&self, id: &VolumeId) -> Result<Option<&Arc<dyn FilesystemBackend>>> {
        for backend in &self.0 {
            if let Some(claim) = backend.claim_volume_id(id) {
                claim?;
                return Ok(Some(backend));
            }
        }
        Ok(None)
    }

    /// Like [`Self::for_volume`], but a volume no backend knows is `NotFound`.
    pub fn for_existing_volume(&self, id: &VolumeId) -> Result<&Arc<dyn FilesystemBackend>> {
        self.for_volume(id)?.ok_or_else(|| {
            Error::NotFound(format!(
                "volume_id {id}: no volume of any configured filesystem ({}) has this id",
                self.names()
            ))
        })
    }

    /// The backend whose snapshot id format `id` is in (see [`Self::for_volume`]).
    pub fn for_snapshot(&self, id: &SnapshotId) -> Result<Option<&Arc<dyn FilesystemBackend>>> {
        for backend in &self.0 {
            if let Some(claim) = backend.claim_snapshot_id(id) {
                claim?;
                return Ok(Some(backend));
            }
        }
        Ok(None)
    }

    /// The backend that new volumes with `parameters` belong to: the only backend, or the
    /// only one that accepts the parameters.
    pub fn for_parameters(&self, parameters: &Parameters) -> Result<&Arc<dyn FilesystemBackend>> {
        if let [only] = self.0.as_slice() {
            return Ok(only);
        }
        let mut accepting = self.0.iter().filter(|b| b.accepts_parameters(parameters));
        match (accepting.next(), accepting.next()) {
            (Some(b), None) => Ok(b),
            (None, _) if self.0.is_empty() => Err(Error::FailedPrecondition(
                "no filesystem is configured".into(),
            )),
            (None, _) => Err(Error::invalid(
                "parameters",
                format!(
                    "they match none of the configured filesystems ({})",
                    self.names()
                ),
            )),
            (Some(a), Some(b)) => Err(Error::invalid(
                "parameters",
                format!(
                    "they fit both {} and {}; name the filesystem's own keys",
                    a.name(),
                    b.name()
                ),
            )),
        }
    }

    fn names(&self) -> String {
        self.0
            .iter()
            .map(|b| b.name())
            .collect::<Vec<_>>()
            .join(", ")
    }
}
