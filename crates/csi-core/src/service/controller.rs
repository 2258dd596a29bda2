//! The controller use cases: provision, delete, expand, list, capacity, snapshots.

use std::collections::BTreeMap;
use std::sync::Arc;

use tracing::{info, warn};

use crate::domain::{
    CapacityRange, GIB, Parameters, Secrets, Snapshot, SnapshotId, Topology, Volume,
    VolumeCapability, VolumeContentSource, VolumeId,
};
use crate::error::{Error, Result};
use crate::ports::{CreateSnapshotRequest, CreateVolumeRequest, FilesystemBackend, VolumeInfo};
use crate::service::{Backends, OperationLocks, paginate};

/// Result of ControllerExpandVolume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpandOutcome {
    /// The capacity after expansion.
    pub capacity_bytes: u64,
    /// Whether NodeExpandVolume must follow (never, for a quota-limited directory).
    pub node_expansion_required: bool,
}

/// Result of ValidateVolumeCapabilities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValidationOutcome {
    /// Every capability is supported.
    Confirmed,
    /// Some capability is not supported; the message says which and why.
    Unsupported(String),
}

/// One page of a list RPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPage<T> {
    /// The entries of this page.
    pub entries: Vec<T>,
    /// Token of the next page; empty when this was the last.
    pub next_token: String,
}

/// The readiness of the configured backends, for Probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// True when every backend checked its tools and configuration.
    pub ready: bool,
    /// What is missing, one line per backend that is not ready.
    pub problems: Vec<String>,
}

/// The controller service: validates requests, routes them to the backend that owns the
/// volume, and lets one operation at a time touch a volume, snapshot or name.
#[derive(Clone)]
pub struct ControllerService {
    backends: Backends,
    locks: OperationLocks,
}

impl ControllerService {
    /// A controller over `backends`.
    pub fn new(backends: Backends) -> Self {
        Self {
            backends,
            locks: OperationLocks::default(),
        }
    }

    /// The configured backends.
    pub fn backends(&self) -> &Backends {
        &self.backends
    }

    /// Checks every backend.
    pub async fn readiness(&self) -> Readiness {
        check_readiness(&self.backends).await
    }

    /// CreateVolume: validates, picks the backend by parameters, and creates or returns the
    /// volume of that name. An existing volume whose capacity does not fit the requested
    /// range is `AlreadyExists`.
    pub async fn create_volume(&self, request: CreateVolumeRequest) -> Result<Volume> {
        if request.name.trim().is_empty() {
            return Err(Error::invalid("name", "must not be empty"));
        }
        if request.capabilities.is_empty() {
            return Err(Error::invalid(
                "volume_capabilities",
                "at least one capability is required",
            ));
        }
        let backend = self.backends.for_parameters(&request.parameters)?;
        check_capabilities(backend.as_ref(), &request.capabilities)?;
        self.check_source_backend(backend, request.content_source.as_ref())?;
        let _guard = self.locks.try_lock(
            format!("name:{}", request.name),
            &format!("volume name {}", request.name),
        )?;
        // The volume's own lock too, when its id is known before it exists: a delete of
        // that id cannot run beside its creation.
        let _volume = backend
            .planned_volume_id(&request)
            .map(|id| self.lock_volume(&id))
            .transpose()?;
        let volume = backend.create_volume(&request).await?;
        if !request.capacity.admits(volume.capacity_bytes) {
            return Err(Error::AlreadyExists(format!(
                "volume {} exists with {} bytes, which does not fit the requested range (required {}, limit {})",
                request.name,
                volume.capacity_bytes,
                request.capacity.required,
                request.capacity.limit
            )));
        }
        info!(volume_id = %volume.id, capacity = volume.capacity_bytes, backend = backend.name(), "volume ready");
        Ok(volume)
    }

    /// DeleteVolume. An id no backend knows cannot name a volume, so there is nothing to
    /// delete: success, as the CSI spec requires for volumes that do not exist.
    pub async fn delete_volume(&self, volume_id: &str, secrets: &Secrets) -> Result<()> {
        let id = VolumeId::parse(volume_id)?;
        let Some(backend) = self.backends.for_volume(&id).map_err(not_deletable)? else {
            info!(volume_id = %id, "no configured filesystem uses this id format: nothing to delete");
            return Ok(());
        };
        let _guard = self.lock_volume(&id)?;
        backend
            .delete_volume(&id, secrets)
            .await
            .map_err(|e| missing_part(e, "volume", id.as_str()))
    }

    /// ControllerExpandVolume: raises the quota; a volume already at least as large as
    /// required is left as it is; a volume larger than the limit is `OutOfRange`.
    pub async fn expand_volume(
        &self,
        volume_id: &str,
        capacity: CapacityRange,
        secrets: &Secrets,
    ) -> Result<ExpandOutcome> {
        let id = VolumeId::parse(volume_id)?;
        if capacity.required == 0 && capacity.limit == 0 {
            return Err(Error::invalid(
                "capacity_range",
                "required_bytes or limit_bytes must be set",
            ));
        }
        let backend = self.backends.for_existing_volume(&id)?;
        let _guard = self.lock_volume(&id)?;
        let current = backend.volume(&id).await?.capacity_bytes;
        if capacity.limit != 0 && current > capacity.limit {
            return Err(Error::OutOfRange(format!(
                "volume {id} already has {current} bytes, more than limit_bytes {}; volumes never shrink",
                capacity.limit
            )));
        }
        let unit = backend.capacity_unit().max(1);
        let wanted = match capacity.size_or(current) {
            size if size <= current => current,
            size => size.div_ceil(unit).saturating_mul(unit),
        };
        if capacity.limit != 0 && wanted > capacity.limit {
            return Err(Error::OutOfRange(format!(
                "volume {id}: {} capacities count whole units of {unit} bytes, and none lies between required_bytes {} and limit_bytes {}",
                backend.name(),
                capacity.required,
                capacity.limit
            )));
        }
        let capacity_bytes = if wanted == current {
            current
        } else {
            backend.expand_volume(&id, wanted, secrets).await?
        };
        Ok(ExpandOutcome {
            capacity_bytes,
            node_expansion_required: false,
        })
    }

    /// ValidateVolumeCapabilities: `NotFound` for a volume that does not exist; otherwise
    /// whether every capability is supported.
    pub async fn validate_volume_capabilities(
        &self,
        volume_id: &str,
        capabilities: &[VolumeCapability],
    ) -> Result<ValidationOutcome> {
        let id = VolumeId::parse(volume_id)?;
        if capabilities.is_empty() {
            return Err(Error::invalid(
                "volume_capabilities",
                "at least one capability is required",
            ));
        }
        let backend = self.backends.for_existing_volume(&id)?;
        backend.volume(&id).await?;
        Ok(match check_capabilities(backend.as_ref(), capabilities) {
            Ok(()) => ValidationOutcome::Confirmed,
            Err(e) => ValidationOutcome::Unsupported(e.to_string()),
        })
    }

    /// ListVolumes over every backend, sorted by id, paginated.
    pub async fn list_volumes(
        &self,
        max_entries: i32,
        starting_token: &str,
    ) -> Result<ListPage<VolumeInfo>> {
        let mut all = Vec::new();
        for backend in self.backends.all() {
            all.extend(backend.list_volumes().await?);
        }
        all.sort_by(|a, b| a.volume.id.cmp(&b.volume.id));
        let (entries, next_token) = paginate(all, max_entries, starting_token)?;
        Ok(ListPage {
            entries,
            next_token,
        })
    }

    /// GetCapacity: free bytes for volumes with these parameters (in `topology`); with no
    /// parameters and several filesystems, the largest any of them offers.
    pub async fn get_capacity(
        &self,
        capabilities: &[VolumeCapability],
        parameters: BTreeMap<String, String>,
        topology: &Topology,
    ) -> Result<u64> {
        let (parameters, _) = Parameters::from_request(parameters);
        if parameters.as_map().is_empty() && self.backends.all().len() > 1 {
            // No parameters name a filesystem: the largest volume any of them could give.
            let mut largest = 0;
            for backend in self.backends.all() {
                if check_capabilities(backend.as_ref(), capabilities).is_ok() {
                    largest = largest.max(backend.available_capacity(&parameters, topology).await?);
                }
            }
            return Ok(largest);
        }
        let backend = self.backends.for_parameters(&parameters)?;
        if check_capabilities(backend.as_ref(), capabilities).is_err() {
            return Ok(0);
        }
        backend.available_capacity(&parameters, topology).await
    }

    /// ControllerGetVolume.
    pub async fn get_volume(&self, volume_id: &str) -> Result<VolumeInfo> {
        let id = VolumeId::parse(volume_id)?;
        self.backends
            .for_existing_volume(&id)?
            .get_volume(&id)
            .await
    }

    /// CreateSnapshot: starts cutting the snapshot (or reports the one of that name).
    pub async fn create_snapshot(
        &self,
        name: &str,
        source_volume_id: &str,
        parameters: BTreeMap<String, String>,
        secrets: Secrets,
    ) -> Result<Snapshot> {
        if name.trim().is_empty() {
            return Err(Error::invalid("name", "must not be empty"));
        }
        let source = VolumeId::parse(source_volume_id).map_err(|_| {
            Error::invalid(
                "source_volume_id",
                "must be a non-empty volume id of at most 128 bytes",
            )
        })?;
        let backend = self.backends.for_existing_volume(&source)?;
        let _name = self.locks.try_lock(
            format!("snapshot-name:{name}"),
            &format!("snapshot name {name}"),
        )?;
        let _volume = self.lock_volume(&source)?;
        let (parameters, _) = Parameters::from_request(parameters);
        let request = CreateSnapshotRequest {
            name: name.to_string(),
            source_volume_id: source,
            parameters,
            secrets,
        };
        // The snapshot's own lock too, when its id is known before it exists: a delete of
        // that id cannot run beside its creation.
        let _snapshot = backend
            .planned_snapshot_id(&request)
            .map(|id| self.lock_snapshot(&id))
            .transpose()?;
        backend.create_snapshot(&request).await
    }

    /// DeleteSnapshot; an id no backend knows names no snapshot: success.
    pub async fn delete_snapshot(&self, snapshot_id: &str, secrets: &Secrets) -> Result<()> {
        let id = SnapshotId::parse(snapshot_id)?;
        let Some(backend) = self.backends.for_snapshot(&id).map_err(not_deletable)? else {
            info!(snapshot_id = %id, "no configured filesystem uses this snapshot id format: nothing to delete");
            return Ok(());
        };
        let _guard = self.lock_snapshot(&id)?;
        backend
            .delete_snapshot(&id, secrets)
            .await
            .map_err(|e| missing_part(e, "snapshot", id.as_str()))
    }

    /// ListSnapshots, optionally filtered by snapshot id or source volume id.
    pub async fn list_snapshots(
        &self,
        snapshot_id: &str,
        source_volume_id: &str,
        max_entries: i32,
        starting_token: &str,
    ) -> Result<ListPage<Snapshot>> {
        let mut all = Vec::new();
        for backend in self.backends.all() {
            all.extend(backend.list_snapshots().await?);
        }
        all.retain(|s| {
            (snapshot_id.is_empty() || s.id.as_str() == snapshot_id)
                && (source_volume_id.is_empty() || s.source_volume_id == source_volume_id)
        });
        all.sort_by(|a, b| a.id.cmp(&b.id));
        let (entries, next_token) = paginate(all, max_entries, starting_token)?;
        Ok(ListPage {
            entries,
            next_token,
        })
    }

    /// A content source of another configured filesystem is `InvalidArgument`: no backend
    /// restores or clones across filesystems, and a NotFound would have the CO retry
    /// forever. A source no backend knows stays for the chosen backend to answer
    /// (NotFound).
    fn check_source_backend(
        &self,
        backend: &Arc<dyn FilesystemBackend>,
        source: Option<&VolumeContentSource>,
    ) -> Result<()> {
        let (field, owner) = match source {
            None => return Ok(()),
            Some(VolumeContentSource::Snapshot(id)) => (
                "volume_content_source.snapshot.snapshot_id",
                self.backends.for_snapshot(&SnapshotId::parse(id)?),
            ),
            Some(VolumeContentSource::Volume(id)) => (
                "volume_content_source.volume.volume_id",
                self.backends.for_volume(&VolumeId::parse(id)?),
            ),
        };
        match owner {
            Ok(Some(owner)) if !Arc::ptr_eq(owner, backend) => Err(Error::invalid(
                field,
                format!(
                    "it is on {}, but the parameters create the volume on {}; sources are restored or cloned within one filesystem",
                    owner.name(),
                    backend.name()
                ),
            )),
            _ => Ok(()),
        }
    }

    fn lock_volume(&self, id: &VolumeId) -> Result<super::LockGuard> {
        self.locks
            .try_lock(format!("volume:{id}"), &format!("volume {id}"))
    }

    fn lock_snapshot(&self, id: &SnapshotId) -> Result<super::LockGuard> {
        self.locks
            .try_lock(format!("snapshot:{id}"), &format!("snapshot {id}"))
    }
}

/// Checks each capability against what `backend` supports, naming the failing index.
pub(crate) fn check_capabilities(
    backend: &dyn FilesystemBackend,
    capabilities: &[VolumeCapability],
) -> Result<()> {
    for (i, cap) in capabilities.iter().enumerate() {
        cap.check_supported(&format!("volume_capabilities[{i}]"), backend.fs_types())?;
    }
    Ok(())
}

/// A delete of an id whose backend cannot reach it (it names a filesystem no longer in the
/// configuration) is refused rather than answered NotFound, which DeleteVolume and
/// DeleteSnapshot may not return, or OK, which would make the CO forget data that is still
/// on the filesystem: the CO retries until the configuration names the filesystem again.
fn not_deletable(error: Error) -> Error {
    match error {
        Error::NotFound(reason) => Error::FailedPrecondition(format!(
            "{reason}; nothing was deleted: configure that filesystem again to delete it"
        )),
        other => other,
    }
}

/// A delete answers success for what does not exist, never NotFound (the CSI spec): a
/// NotFound from a backend's delete is about something the deletion needs (a storage pool,
/// a tool's object), which is an internal failure of the delete.
fn missing_part(error: Error, what: &str, id: &str) -> Error {
    match error {
        Error::NotFound(reason) => Error::Internal(format!(
            "deleting {what} {id}: something it needs is missing: {reason}"
        )),
        other => other,
    }
}

/// Runs every backend's readiness check.
pub(crate) async fn check_readiness(backends: &Backends) -> Readiness {
    let mut problems = Vec::new();
    if backends.all().is_empty() {
        problems.push("no filesystem is configured".to_string());
    }
    for backend in backends.all() {
        if let Err(e) = backend.check_ready().await {
            warn!(backend = backend.name(), error = %e, "backend not ready");
            problems.push(format!("{}: {e}", backend.name()));
        }
    }
    Readiness {
        ready: problems.is_empty(),
        problems,
    }
}

/// The default size of a volume created without a capacity range.
pub const DEFAULT_VOLUME_BYTES: u64 = GIB;

impl std::fmt::Debug for ControllerService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.backends.all().iter().map(|b| b.name()).collect();
        f.debug_struct("ControllerService")
            .field("backends", &names)
            .finish()
    }
}
