//! Controller operations on volumes: create (empty, from a snapshot, as a clone), delete,
//! expand, get, list, capacity.
//!
//! CreateVolume writes the record (state `creating`) before anything else, then makes the
//! directory, sets its owner and mode, ties it to its project and sets the hard limit. A
//! content source is copied in the background (state `filling`): CreateVolume waits a
//! little, then answers `Aborted` ("in progress") until the copy is done, so a long restore
//! never holds an RPC. DeleteVolume moves the directory to the filesystem's trash at once,
//! clears the limits, removes the record, and empties the trash in the background.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use csi_core::domain::{
    CapacityRange, Parameters, Secrets, Topology, TopologyRequirement, Volume, VolumeCondition,
    VolumeContentSource, VolumeId,
};
use csi_core::id_alloc::IdRange;
use csi_core::ports::{
    ArchiveOptions, ArchiveTool, ChecksumKind, CreateVolumeRequest, QuotaLimits, QuotaManager,
    VolumeInfo,
};
use csi_core::service::DEFAULT_VOLUME_BYTES;
use csi_core::{Error, ErrorCode, Result};
use tracing::{info, warn};

use crate::backend::{Inner, Target};
use crate::config::LustreEntry;
use crate::mount_options;
use crate::parameters::{Strictness, VolumeParams};
use crate::quota::kib_ceil;
use crate::records::{
    ContentRecord, LocationRecord, RECORD_VERSION, SnapshotState, VolumeRecord, VolumeState, now,
};
use crate::volume_dirs::{self, DirState};
use crate::volume_id::{LustreSnapshotId, VolumePath, canonical_volume_id, check_name};
use csi_core::tasks::StopSignal;

/// Mode of a volume directory when neither the StorageClass nor the entry sets one.
pub const DEFAULT_PERMISSIONS: u32 = 0o777;

/// The hard limit for a capacity range: whole KiB, at least `required`, at most `limit`.
pub fn quota_capacity(range: &CapacityRange) -> Result<u64> {
    let bytes = range.size_or(DEFAULT_VOLUME_BYTES);
    let mut kib = kib_ceil(bytes);
    if range.limit != 0 && kib.saturating_mul(1024) > range.limit {
        kib = range.limit / 1024;
    }
    if kib == 0 || kib.saturating_mul(1024) < range.required {
        return Err(Error::OutOfRange(format!(
            "Lustre quotas count whole KiB and no multiple of 1024 bytes lies between required_bytes {} and limit_bytes {}",
            range.required, range.limit
        )));
    }
    Ok(kib * 1024)
}

/// Where a background fill copies from.
enum FillSource {
    Archive {
        archive: PathBuf,
        options: ArchiveOptions,
    },
    Tree {
        source: PathBuf,
        options: ArchiveOptions,
    },
}

fn fill_key(entry: &str, name: &str) -> String {
    format!("fill:{entry}:{name}")
}

impl Inner {
    /// Chooses the entry of a new volume: `configName`, `v1xCompatible`, `zone`, the only
    /// entry, or the accessibility requirements, in that order.
    pub(crate) fn choose_entry(
        &self,
        params: &VolumeParams,
        topology: &TopologyRequirement,
    ) -> Result<&LustreEntry> {
        let fits = |entry: &LustreEntry| {
            let t = Self::entry_topology(entry);
            TopologyRequirement {
                requisite: topology.requisite.clone(),
                preferred: Vec::new(),
            }
            .choose(&[&t])
            .is_some()
        };
        let names = || {
            self.config
                .entries
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        };
        let chosen = if let Some(name) = &params.config_name {
            self.config.entry(name).ok_or_else(|| {
                Error::invalid(
                    "parameters[configName]",
                    format!(
                        "no exascaler_map entry is named {name:?} (entries: {})",
                        names()
                    ),
                )
            })?
        } else if params.v1x_compatible == Some(true) {
            self.config.v1x_entry().ok_or_else(|| {
                Error::invalid(
                    "parameters[v1xCompatible]",
                    "no exascaler_map entry sets v1xCompatible: true",
                )
            })?
        } else if let Some(zone) = &params.zone {
            self.config
                .entries
                .values()
                .find(|e| e.zone.as_deref() == Some(zone.as_str()))
                .ok_or_else(|| {
                    Error::invalid(
                        "parameters[zone]",
                        format!("no exascaler_map entry has zone {zone:?}"),
                    )
                })?
        } else if self.config.entries.len() == 1 {
            self.config
                .entries
                .values()
                .next()
                .ok_or_else(|| Error::Internal("no entry".into()))?
        } else if topology.is_empty() {
            return Err(Error::invalid(
                "parameters",
                format!(
                    "several EXAScaler filesystems are configured ({}); set configName or zone, or use allowedTopologies",
                    names()
                ),
            ));
        } else {
            let entries: Vec<&LustreEntry> = self.config.entries.values().collect();
            let topologies: Vec<Topology> =
                entries.iter().map(|e| Self::entry_topology(e)).collect();
            let refs: Vec<&Topology> = topologies.iter().collect();
            let i = topology.choose(&refs).ok_or_else(|| {
                Error::ResourceExhausted(format!(
                    "no EXAScaler filesystem is in the requested topology (entries: {})",
                    names()
                ))
            })?;
            entries[i]
        };
        if !fits(chosen) {
            return Err(Error::ResourceExhausted(format!(
                "EXAScaler entry {} (zone {}) is not in the requested topology",
                chosen.name,
                chosen.zone.as_deref().unwrap_or("none")
            )));
        }
        Ok(chosen)
    }

    /// Where a new volume's data goes: the entry's filesystem, or the one `exaFS` names
    /// (with its own `mountPoint`, which must not touch a configured one).
    pub(crate) fn target_for_create(
        &self,
        entry: &LustreEntry,
        params: &VolumeParams,
    ) -> Result<Target> {
        let Some(fs) = params
            .exa_fs
            .as_ref()
            .filter(|fs| !fs.same_directory(&entry.exa_fs))
        else {
            return Ok(Target::of_entry(entry));
        };
        let mount_point = params.mount_point.clone().ok_or_else(|| {
            Error::invalid(
                "parameters[mountPoint]",
                format!(
                    "is required when exaFS names another filesystem than entry {}'s",
                    entry.name
                ),
            )
        })?;
        for other in self.config.entries.values() {
            if mount_point.starts_with(&other.mount_point)
                || other.mount_point.starts_with(&mount_point)
            {
                return Err(Error::invalid(
                    "parameters[mountPoint]",
                    format!(
                        "{} overlaps {}, the mount point of entry {}; another filesystem needs its own",
                        mount_point.display(),
                        other.mount_point.display(),
                        other.name
                    ),
                ));
            }
        }
        let location = crate::volume_id::Location {
            exa_fs: fs.clone(),
            mount_point,
        };
        Ok(Target::at(entry, Some(&location)))
    }

    /// The volume reported to the CO.
    fn volume_of(&self, rec: &VolumeRecord, entry: &LustreEntry) -> Result<Volume> {
        let topology = Self::entry_topology(entry);
        Ok(Volume {
            id: VolumeId::parse(&rec.volume_id)?,
            capacity_bytes: rec.capacity_bytes,
            context: rec.parameters.clone(),
            content_source: rec.content_source.as_ref().map(VolumeContentSource::from),
            accessible_topology: if topology.is_empty() {
                Vec::new()
            } else {
                vec![topology]
            },
        })
    }

    /// The target a record's data lives on.
    fn target_of(&self, entry: &LustreEntry, rec: &VolumeRecord) -> Target {
        let location = rec.location.as_ref().map(crate::volume_id::Location::from);
        Target::at(entry, location.as_ref())
    }

    /// The id CreateVolume gives `req`'s volume: the canonical id of its name on the entry
    /// it would choose. `None` when the request is invalid (the create says why).
    pub(crate) fn planned_volume_id(&self, req: &CreateVolumeRequest) -> Option<VolumeId> {
        let mut params = VolumeParams::parse(req.parameters.as_map(), Strictness::Strict).ok()?;
        params.apply_secrets(&req.secrets).ok()?;
        let entry = self.choose_entry(&params, &req.topology).ok()?;
        VolumeId::parse(&canonical_volume_id(entry, &req.name).ok()?).ok()
    }

    /// CreateVolume.
    pub(crate) async fn create_volume(
        self: &Arc<Self>,
        req: &CreateVolumeRequest,
    ) -> Result<Volume> {
        let mut params = VolumeParams::parse(req.parameters.as_map(), Strictness::Strict)?;
        params.apply_secrets(&req.secrets)?;
        for (i, cap) in req.capabilities.iter().enumerate() {
            mount_options::parse(&cap.mount_flags)
                .map_err(|r| Error::invalid(&format!("volume_capabilities[{i}].mount_flags"), r))?;
        }
        check_name("name", &req.name)?;
        if req.name == self.settings.metadata_dir {
            return Err(Error::invalid("name", "is the driver's metadata directory"));
        }
        let entry = self.choose_entry(&params, &req.topology)?.clone();
        let target = self.target_for_create(&entry, &params)?;
        let volume_id = canonical_volume_id(&entry, &req.name)?;
        let capacity = quota_capacity(&req.capacity)?;
        let content = req.content_source.as_ref().map(ContentRecord::from);
        let mgmt = params.management_ip.clone();

        self.mount_controller(&Target::of_entry(&entry), mgmt.as_ref())
            .await?;
        if target.location.is_some() {
            self.mount_controller(&target, mgmt.as_ref()).await?;
        }
        let stores = self.stores(&entry);
        let name = req.name.clone();

        // The project id stays reserved until the directory and its limits carry it: until
        // then the filesystem shows it unused, and a create in another entry on the same
        // filesystem (whose records are elsewhere) could draw it too.
        let (record, reservation) = match stores.volume(&name).await? {
            Some(rec) => {
                if rec.entry != entry.name
                    || rec.parameters != *req.parameters.as_map()
                    || rec.content_source != content
                    || rec.volume_id != volume_id
                {
                    return Err(Error::AlreadyExists(format!(
                        "volume {name} exists with other parameters or content source"
                    )));
                }
                match rec.state {
                    VolumeState::Ready => return self.volume_of(&rec, &entry),
                    VolumeState::Deleting => {
                        return Err(Error::Aborted(format!(
                            "volume {name} is being deleted; retry later"
                        )));
                    }
                    VolumeState::Filling => return self.continue_fill(rec, &entry).await,
                    VolumeState::Creating => {
                        let mut rec = rec;
                        let reservation = self
                            .resume_project(&mut rec, &params, &target, &stores)
                            .await?;
                        rec.capacity_bytes = capacity;
                        stores.put_volume(&rec).await?;
                        (rec, reservation)
                    }
                }
            }
            None => {
                let dir = target.path(&VolumePath::single(&name)?);
                let state = self.dir_state(&dir).await?;
                if state != DirState::Missing {
                    return Err(Error::AlreadyExists(format!(
                        "{} already exists on the filesystem and was not created by this driver; it is left untouched",
                        target.path(&VolumePath::single(&name)?).display()
                    )));
                }
                // Content sources are checked before anything is written.
                if let Some(source) = &req.content_source {
                    self.fill_source(source, &entry, capacity).await?;
                }
                let reservation = self.reserve_project(&params, &target, &stores).await?;
                let (created_unix, _) = now();
                let rec = VolumeRecord {
                    version: RECORD_VERSION,
                    name: name.clone(),
                    volume_id: volume_id.clone(),
                    entry: entry.name.clone(),
                    state: VolumeState::Creating,
                    location: target.location.as_ref().map(LocationRecord::from),
                    project_id: reservation.id(),
                    capacity_bytes: capacity,
                    parameters: req.parameters.as_map().clone(),
                    content_source: content.clone(),
                    uid: params.uid,
                    gid: params.gid,
                    permissions: params
                        .permissions
                        .or(entry.volume_dir_permissions)
                        .unwrap_or(DEFAULT_PERMISSIONS),
                    created_unix,
                    error: None,
                };
                // Written before the directory exists.
                stores.put_volume(&rec).await?;
                (rec, reservation)
            }
        };

        if let Err(e) = self.make_directory_and_quota(&record, &target).await {
            warn!(volume = %name, error = %e, "volume creation failed; undoing it");
            self.undo_create(&record, &target, &stores).await;
            return Err(e);
        }
        drop(reservation);
        let mut record = record;
        if record.content_source.is_some() {
            record.state = VolumeState::Filling;
            stores.put_volume(&record).await?;
            return self.continue_fill(record, &entry).await;
        }
        record.state = VolumeState::Ready;
        stores.put_volume(&record).await?;
        info!(volume_id = %record.volume_id, project = record.project_id, "volume created");
        self.volume_of(&record, &entry)
    }

    /// Picks the project id: the given one (refused when another volume of ours has it, or
    /// when files or limits on the filesystem already use it: the volume would share that
    /// quota and its deletion would clear it), or a random free one in the range.
    async fn reserve_project(
        &self,
        params: &VolumeParams,
        target: &Target,
        stores: &crate::records::Stores,
    ) -> Result<csi_core::id_alloc::IdReservation> {
        // Records are read after the id is reserved: a concurrent request holding the same
        // id has either written its record by then or still holds the reservation.
        async fn owner(stores: &crate::records::Stores, id: u32) -> Result<Option<String>> {
            Ok(stores
                .volume_list()
                .await?
                .into_iter()
                .find(|(_, r)| r.project_id == id)
                .map(|(name, _)| name))
        }
        let quota = self.quota(&target.mount_point);
        if let Some(id) = params.project_id {
            let reservation = self.ids.reserve(id)?;
            if let Some(other) = owner(stores, id).await? {
                return Err(Error::FailedPrecondition(format!(
                    "parameters[projectId]: project {id} already belongs to volume {other}"
                )));
            }
            if quota.in_use(id).await? {
                return Err(Error::FailedPrecondition(format!(
                    "parameters[projectId]: project {id} is already in use on {} (files or quota limits this driver did not make); name an unused id, or leave projectId out to have one generated",
                    target.mount_point.display()
                )));
            }
            return Ok(reservation);
        }
        let range = IdRange::new(params.min_project_id, params.max_project_id)?;
        self.ids
            .allocate(range, params.project_id_retries, |id| {
                let (stores, quota) = (stores.clone(), quota.clone());
                async move {
                    if owner(&stores, id).await?.is_some() {
                        return Ok(false);
                    }
                    Ok(!quota.in_use(id).await?)
                }
            })
            .await
            .map_err(|e| match e.code() {
                ErrorCode::ResourceExhausted => Error::ResourceExhausted(format!(
                    "{e}; widen minProjectId/maxProjectId or raise generateProjectIdRetries"
                )),
                _ => e,
            })
    }

    /// The project id of an interrupted creation, reserved again. While the creation was
    /// cut off, nothing on the filesystem carried its id, and a create in another entry on
    /// the same filesystem (whose records are elsewhere) may have drawn it: when files other
    /// than this volume's directory carry it now, another id is drawn.
    async fn resume_project(
        &self,
        rec: &mut VolumeRecord,
        params: &VolumeParams,
        target: &Target,
        stores: &crate::records::Stores,
    ) -> Result<csi_core::id_alloc::IdReservation> {
        let reservation = self.ids.reserve(rec.project_id)?;
        let quota = self.quota(&target.mount_point);
        let dir = target.path(&rec.dir());
        let state = self.dir_state(&dir).await?;
        if state == DirState::Directory && quota.project_of(&dir).await?.id == rec.project_id {
            return Ok(reservation);
        }
        let report = quota.report(rec.project_id).await?;
        if report.kbytes_used == 0 && report.files_used == 0 {
            // Nothing carries it; limits alone are this creation's own, set before it stopped.
            return Ok(reservation);
        }
        if params.project_id.is_some() {
            return Err(Error::FailedPrecondition(format!(
                "parameters[projectId]: project {} is now used on {} by files that are not volume {}'s (its creation was interrupted); name another id",
                rec.project_id,
                target.mount_point.display(),
                rec.name
            )));
        }
        drop(reservation);
        let fresh = self.reserve_project(params, target, stores).await?;
        warn!(volume = %rec.name, old = rec.project_id, new = fresh.id(), "the project id of an interrupted creation is now used by other files; drawing another");
        rec.project_id = fresh.id();
        Ok(fresh)
    }

    async fn make_directory_and_quota(&self, rec: &VolumeRecord, target: &Target) -> Result<()> {
        let dir = target.path(&rec.dir());
        // A volume filled from a snapshot or another volume stays root's and private until
        // its content is in (`hand_over_filled`): the fill writes as root, and nobody may
        // plant a link in the directory for it to follow meanwhile.
        let filled = rec.content_source.is_some();
        let mode = if filled {
            csi_core::fs_paths::FILLING_MODE
        } else {
            rec.permissions
        };
        let d = dir.clone();
        self.fs(format!("create {}", dir.display()), move || {
            volume_dirs::create_volume_dir(&d, mode)
        })
        .await?;
        let quota = self.quota(&target.mount_point);
        quota.assign(&dir, rec.project_id).await?;
        if self.settings.enforce_quota {
            let limits = QuotaLimits {
                bytes_hard: Some(rec.capacity_bytes),
                ..Default::default()
            };
            quota.set_limits(rec.project_id, &limits).await?;
        }
        if filled {
            return Ok(());
        }
        // Last: from here on its owner can change it.
        let (uid, gid) = (rec.uid, rec.gid);
        let d = dir.clone();
        self.fs(format!("chown {}", dir.display()), move || {
            volume_dirs::hand_over_volume_dir(&d, uid, gid)
        })
        .await
    }

    /// Gives a filled volume's directory the mode and owner its record asks for, once its
    /// content is in (a restore may have given it the archive's), owner last.
    async fn hand_over_filled(&self, dir: &Path, rec: &VolumeRecord) -> Result<()> {
        let (uid, gid, mode) = (rec.uid, rec.gid, rec.permissions);
        let d = dir.to_path_buf();
        self.fs(format!("hand over {}", dir.display()), move || {
            volume_dirs::set_volume_dir_mode(&d, mode)?;
            volume_dirs::hand_over_volume_dir(&d, uid, gid)
        })
        .await
    }

    /// Best-effort undo of a failed creation: an empty directory, the limits and the record
    /// go; anything that cannot be undone keeps the record, so DeleteVolume can finish.
    async fn undo_create(
        &self,
        rec: &VolumeRecord,
        target: &Target,
        stores: &crate::records::Stores,
    ) {
        let dir = target.path(&rec.dir());
        let d = dir.clone();
        let removed = self
            .fs(
                format!("remove {}", dir.display()),
                move || match std::fs::remove_dir(&d) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(Error::io("remove directory", &d, e)),
                },
            )
            .await;
        if let Err(e) = &removed {
            warn!(dir = %dir.display(), error = %e, "half-created volume kept; DeleteVolume will remove it");
            return;
        }
        if let Err(e) = self.quota(&target.mount_point).clear(rec.project_id).await {
            // The record keeps the project id this driver's own: without it, the id's
            // limits would make it look taken for good, or a later volume would get them.
            warn!(project = rec.project_id, error = %e, "limits of a failed volume not cleared; its record stays for a retry or DeleteVolume");
            return;
        }
        if let Err(e) = stores.remove_volume(&rec.name).await {
            warn!(volume = %rec.name, error = %e, "record of a failed volume kept");
        }
    }

    /// Checks a content source and says where to copy from: a ready snapshot of ours, or an
    /// existing volume. A restore larger than the new volume is `OutOfRange`.
    async fn fill_source(
        self: &Arc<Self>,
        source: &VolumeContentSource,
        _entry: &LustreEntry,
        capacity: u64,
    ) -> Result<FillSource> {
        match source {
            VolumeContentSource::Snapshot(id) => {
                let sid = LustreSnapshotId::parse(id, &self.config).unwrap_or_else(|| {
                    Err(Error::NotFound(format!(
                        "snapshot {id:?} is not a Lustre snapshot"
                    )))
                })?;
                let snap_entry = self.entry(&sid.entry)?.clone();
                self.mount_controller(&Target::of_entry(&snap_entry), None)
                    .await?;
                let stores = self.stores(&snap_entry);
                let missing = || Error::NotFound(format!("snapshot {id} does not exist"));
                let mut rec = stores.snapshot(&sid.name).await?.ok_or_else(missing)?;
                if rec.state == SnapshotState::Cutting {
                    // A snapshot taken a moment ago: wait for its archive a little.
                    let key = crate::snapshots::cut_key(&snap_entry.name, &sid.name);
                    if !self.tasks.is_running(&key) {
                        self.mount_controller(&self.snapshot_target(&snap_entry, &rec), None)
                            .await?;
                        self.start_cut(&snap_entry, &rec);
                    }
                    self.tasks
                        .wait(
                            &key,
                            Duration::from_secs(self.settings.content_wait_seconds),
                        )
                        .await;
                    rec = stores.snapshot(&sid.name).await?.ok_or_else(missing)?;
                }
                match rec.state {
                    SnapshotState::Ready => {}
                    SnapshotState::Cutting => {
                        return Err(Error::Unavailable(format!(
                            "snapshot {id} is still being written; retry later"
                        )));
                    }
                    SnapshotState::Failed => {
                        return Err(Error::FailedPrecondition(format!(
                            "snapshot {id} failed and cannot be restored: {}",
                            rec.error.as_deref().unwrap_or("unknown error")
                        )));
                    }
                }
                if rec.size_bytes > capacity {
                    return Err(Error::OutOfRange(format!(
                        "snapshot {id} holds {} bytes, more than the {capacity} bytes requested",
                        rec.size_bytes
                    )));
                }
                let location = rec.location.as_ref().map(crate::volume_id::Location::from);
                let target = Target::at(&snap_entry, location.as_ref());
                self.mount_controller(&target, None).await?;
                let archive = VolumePath::parse(&rec.archive)
                    .map_err(Error::Internal)?
                    .under(&target.mount_point);
                Ok(FillSource::Archive {
                    archive,
                    options: rec.tool.options(),
                })
            }
            VolumeContentSource::Volume(id) => {
                let handle = self.handle(id).map_err(|e| match e.code() {
                    ErrorCode::InvalidArgument => e,
                    _ => Error::NotFound(format!("source volume {id}: {e}")),
                })?;
                let src_entry = self.entry(&handle.entry)?.clone();
                self.mount_controller(&Target::of_entry(&src_entry), None)
                    .await?;
                let rec = self.stores(&src_entry).volume_for(&handle.dir, id).await?;
                if let Some(rec) = &rec {
                    if rec.state != VolumeState::Ready {
                        return Err(Error::Unavailable(format!(
                            "source volume {id} is not ready yet"
                        )));
                    }
                    if rec.capacity_bytes > capacity {
                        return Err(Error::OutOfRange(format!(
                            "source volume {id} has {} bytes, more than the {capacity} bytes requested",
                            rec.capacity_bytes
                        )));
                    }
                }
                let location = match &rec {
                    Some(r) => r.location.as_ref().map(crate::volume_id::Location::from),
                    None => handle.location.clone(),
                };
                let target = Target::at(&src_entry, location.as_ref());
                self.mount_controller(&target, None).await?;
                let dir = target.path(&handle.dir);
                let root = target.mount_point.clone();
                let source = self
                    .fs(format!("resolve {}", dir.display()), move || {
                        volume_dirs::resolve_inside(&root, &dir)
                    })
                    .await
                    .map_err(|e| match e.code() {
                        ErrorCode::NotFound => {
                            Error::NotFound(format!("source volume {id} does not exist"))
                        }
                        _ => e,
                    })?;
                let options = ArchiveOptions {
                    tool: ArchiveTool::Tar(self.settings.tar.clone()),
                    verify: false,
                    checksum: ChecksumKind::default(),
                };
                Ok(FillSource::Tree { source, options })
            }
        }
    }

    /// Runs (or keeps running, or restarts after a restart or a failure) the background fill
    /// of a `filling` volume; answers the volume when it is done, else `Aborted`.
    async fn continue_fill(
        self: &Arc<Self>,
        rec: VolumeRecord,
        entry: &LustreEntry,
    ) -> Result<Volume> {
        let key = fill_key(&entry.name, &rec.name);
        let stores = self.stores(entry);
        let mut rec = rec;
        let mut failure = None;
        if !self.tasks.is_running(&key) {
            if let Some(error) = rec.error.take() {
                // Report the failure of the last attempt, and start another.
                stores.put_volume(&rec).await?;
                failure = Some(error);
            }
            let content = rec
                .content_source
                .as_ref()
                .map(VolumeContentSource::from)
                .ok_or_else(|| {
                    Error::Internal(format!(
                        "volume {} has no content source to fill from",
                        rec.name
                    ))
                })?;
            let source = self
                .fill_source(&content, entry, rec.capacity_bytes)
                .await?;
            let target = self.target_of(entry, &rec);
            self.mount_controller(&target, None).await?;
            let dest = target.path(&rec.dir());
            let inner = self.clone();
            let (entry_copy, name) = (entry.clone(), rec.name.clone());
            self.tasks.spawn(&key, |stop| async move {
                inner.run_fill(entry_copy, name, source, dest, stop).await;
            });
        }
        if let Some(error) = failure {
            return Err(Error::Unavailable(format!(
                "filling volume {} failed: {error}; trying again",
                rec.name
            )));
        }
        self.tasks
            .wait(
                &key,
                Duration::from_secs(self.settings.content_wait_seconds),
            )
            .await;
        let rec = stores.volume(&rec.name).await?.ok_or_else(|| {
            Error::Aborted(format!(
                "volume {} disappeared while being filled",
                rec.name
            ))
        })?;
        match (rec.state, &rec.error) {
            (VolumeState::Ready, _) => {
                info!(volume_id = %rec.volume_id, "volume created and filled");
                self.volume_of(&rec, entry)
            }
            (_, Some(error)) => Err(Error::Unavailable(format!(
                "filling volume {} failed: {error}; the next attempt retries",
                rec.name
            ))),
            _ => Err(Error::Aborted(format!(
                "volume {} is still being filled from its content source; retry later",
                rec.name
            ))),
        }
    }

    async fn run_fill(
        self: Arc<Self>,
        entry: LustreEntry,
        name: String,
        source: FillSource,
        dest: PathBuf,
        mut stop: StopSignal,
    ) {
        // A retry may have started this task just after the last one recorded the volume
        // ready: a ready volume is never emptied.
        match self.stores(&entry).volume(&name).await {
            Ok(Some(rec)) if rec.state == VolumeState::Filling => {}
            _ => return,
        }
        let engine = self.ctx.snapshots.clone();
        let work = async {
            // Root's alone again (an attempt that failed after the hand-over gave it away)
            // and empty: what an earlier attempt left (a clone of a source changed since)
            // is not this attempt's content. Bounded as the fill is, not as a tool call: a
            // removal still running past its bound would race the next attempt.
            let d = dest.clone();
            csi_core::blocking::try_blocking(
                self.settings.archive_timeout(),
                format!("prepare {}", dest.display()),
                move || csi_core::fs_paths::make_private_and_empty(&d),
            )
            .await?;
            match &source {
                FillSource::Archive { archive, options } => {
                    engine.restore(archive, &dest, options).await
                }
                FillSource::Tree { source, options } => {
                    engine.copy_tree(source, &dest, options).await
                }
            }
        };
        let result = tokio::select! {
            result = tokio::time::timeout(self.settings.archive_timeout(), work) => match result {
                Ok(r) => r,
                Err(_) => Err(Error::DeadlineExceeded(format!(
                    "filling {} took longer than {}s",
                    dest.display(),
                    self.settings.archive_timeout_seconds
                ))),
            },
            // DeleteVolume stops the fill and waits for this task before it removes the
            // volume and its record: nothing more may be written here.
            () = stop.requested() => {
                info!(volume = %name, "filling stopped: the volume is being deleted");
                return;
            }
        };
        let stores = self.stores(&entry);
        match stores.volume(&name).await {
            Ok(Some(mut rec)) if rec.state == VolumeState::Filling => {
                let result = match result {
                    Ok(()) => self.hand_over_filled(&dest, &rec).await,
                    Err(e) => Err(e),
                };
                match result {
                    Ok(()) => {
                        rec.state = VolumeState::Ready;
                        rec.error = None;
                    }
                    Err(e) => {
                        warn!(volume = %name, error = %e, "filling the volume failed");
                        rec.error = Some(e.to_string());
                    }
                }
                if let Err(e) = stores.put_volume(&rec).await {
                    warn!(volume = %name, error = %e, "fill result not recorded");
                }
            }
            Ok(_) => info!(volume = %name, "volume deleted while being filled"),
            Err(e) => warn!(volume = %name, error = %e, "fill result not recorded"),
        }
    }

    /// DeleteVolume.
    pub(crate) async fn delete_volume(
        self: &Arc<Self>,
        id: &VolumeId,
        secrets: &Secrets,
    ) -> Result<()> {
        let handle = self.handle(id.as_str())?;
        let entry = self.entry(&handle.entry)?.clone();
        let mut params = VolumeParams::default();
        params.apply_secrets(secrets)?;
        let mgmt = params.management_ip.clone();
        self.mount_controller(&Target::of_entry(&entry), mgmt.as_ref())
            .await?;
        let stores = self.stores(&entry);
        let Some(mut rec) = stores.volume_for(&handle.dir, id.as_str()).await? else {
            // Not made by this driver (a static volume, or an older driver's volume).
            let location = match (&params.exa_fs, &handle.location) {
                (Some(fs), _) if !fs.same_directory(&entry.exa_fs) => handle
                    .location
                    .clone()
                    .filter(|l| l.exa_fs.same_directory(fs)),
                (_, loc) => loc.clone(),
            };
            let target = Target::at(&entry, location.as_ref());
            self.mount_controller(&target, mgmt.as_ref()).await?;
            let dir = target.path(&handle.dir);
            let state = self.dir_state(&dir).await?;
            if state == DirState::Missing {
                info!(volume_id = %id, "volume does not exist: nothing to delete");
                return Ok(());
            }
            return Err(Error::FailedPrecondition(format!(
                "volume {id} was not created by this driver (no record of it), so its data at {} was left in place; remove it by hand if it is no longer needed",
                dir.display()
            )));
        };
        if self.snapshot_cutting_from(&entry, id.as_str()).await? {
            self.wait_for_cuts_from(&entry, id.as_str()).await?;
            if self.snapshot_cutting_from(&entry, id.as_str()).await? {
                return Err(Error::Aborted(format!(
                    "a snapshot of volume {id} is still being written; retry once it is done"
                )));
            }
        }
        if let Some(clone) = self.clone_filling_from(&entry, id.as_str()).await? {
            return Err(Error::FailedPrecondition(format!(
                "volume {id} is the source of volume {clone}, which is still being copied from it; delete it once that copy is done"
            )));
        }
        self.tasks.stop(&fill_key(&entry.name, &rec.name)).await;
        if rec.state != VolumeState::Deleting {
            rec.state = VolumeState::Deleting;
            stores.put_volume(&rec).await?;
        }
        let target = self.target_of(&entry, &rec);
        self.mount_controller(&target, mgmt.as_ref()).await?;
        let dir = target.path(&rec.dir());
        let trash = self.meta_dir(&target).join("trash");
        let d = dir.clone();
        self.fs(format!("move {} to the trash", dir.display()), move || {
            volume_dirs::move_to_trash(&d, &trash)
        })
        .await?;
        self.quota(&target.mount_point)
            .clear(rec.project_id)
            .await?;
        stores.remove_volume(&rec.name).await?;
        self.purge_trash(&target);
        info!(volume_id = %id, project = rec.project_id, "volume deleted");
        Ok(())
    }

    /// Waits (up to the content wait) for the cuts of snapshots of `volume_id`; a cut
    /// interrupted by a restart is started again first, so the source is never deleted
    /// under a snapshot the CO was told exists.
    async fn wait_for_cuts_from(
        self: &Arc<Self>,
        entry: &LustreEntry,
        volume_id: &str,
    ) -> Result<()> {
        let wait = Duration::from_secs(self.settings.content_wait_seconds);
        for (_, s) in self.stores(entry).snapshot_list().await? {
            if s.source_volume_id == volume_id && s.state == SnapshotState::Cutting {
                let key = crate::snapshots::cut_key(&entry.name, &s.name);
                if !self.tasks.is_running(&key) {
                    self.mount_controller(&self.snapshot_target(entry, &s), None)
                        .await?;
                    warn!(snapshot = %s.name, "snapshot was interrupted; cutting it again before its source is deleted");
                    self.start_cut(entry, &s);
                }
                self.tasks.wait(&key, wait).await;
            }
        }
        Ok(())
    }

    /// Whether a snapshot of `volume_id` is still being cut, by its record (a cut
    /// interrupted by a restart counts: it must finish before the source goes).
    async fn snapshot_cutting_from(&self, entry: &LustreEntry, volume_id: &str) -> Result<bool> {
        Ok(self
            .stores(entry)
            .snapshot_list()
            .await?
            .iter()
            .any(|(_, s)| s.source_volume_id == volume_id && s.state == SnapshotState::Cutting))
    }

    /// The name of a volume this controller is filling as a clone of `volume_id` right now.
    /// (A fill interrupted by a restart does not hold the source: its CO may have given up
    /// on it, and a retry of it finds the source gone.)
    async fn clone_filling_from(
        &self,
        entry: &LustreEntry,
        volume_id: &str,
    ) -> Result<Option<String>> {
        // Only the records of the fills running now are read, not every volume's.
        let prefix = fill_key(&entry.name, "");
        let stores = self.stores(entry);
        for key in self.tasks.running_with_prefix(&prefix) {
            let name = &key[prefix.len()..];
            let copies_it = stores.volume(name).await?.is_some_and(
                |v| matches!(&v.content_source, Some(ContentRecord::Volume(s)) if s == volume_id),
            );
            if copies_it {
                return Ok(Some(name.to_string()));
            }
        }
        Ok(None)
    }

    /// ControllerExpandVolume: raises the hard limit.
    pub(crate) async fn expand_volume(
        self: &Arc<Self>,
        id: &VolumeId,
        bytes: u64,
        secrets: &Secrets,
    ) -> Result<u64> {
        let handle = self.handle(id.as_str())?;
        let entry = self.entry(&handle.entry)?.clone();
        let mut params = VolumeParams::default();
        params.apply_secrets(secrets)?;
        self.mount_controller(&Target::of_entry(&entry), params.management_ip.as_ref())
            .await?;
        let stores = self.stores(&entry);
        let mut rec = stores.volume_for(&handle.dir, id.as_str()).await?.ok_or_else(|| {
            Error::FailedPrecondition(format!(
                "volume {id} was not created by this driver; its quota is not managed here and cannot be expanded"
            ))
        })?;
        if rec.state != VolumeState::Ready {
            return Err(Error::Aborted(format!(
                "volume {id} is not ready; retry later"
            )));
        }
        let capacity = kib_ceil(bytes).saturating_mul(1024);
        if capacity <= rec.capacity_bytes {
            return Ok(rec.capacity_bytes);
        }
        let target = self.target_of(&entry, &rec);
        self.mount_controller(&target, params.management_ip.as_ref())
            .await?;
        if self.settings.enforce_quota {
            let limits = QuotaLimits {
                bytes_hard: Some(capacity),
                ..Default::default()
            };
            self.quota(&target.mount_point)
                .set_limits(rec.project_id, &limits)
                .await?;
        }
        rec.capacity_bytes = capacity;
        stores.put_volume(&rec).await?;
        info!(volume_id = %id, capacity, "volume expanded");
        Ok(capacity)
    }

    /// ControllerGetVolume.
    pub(crate) async fn get_volume(self: &Arc<Self>, id: &VolumeId) -> Result<VolumeInfo> {
        let handle = self.handle(id.as_str())?;
        let entry = self.entry(&handle.entry)?.clone();
        self.mount_controller(&Target::of_entry(&entry), None)
            .await?;
        match self
            .stores(&entry)
            .volume_for(&handle.dir, id.as_str())
            .await?
        {
            Some(rec) if rec.state == VolumeState::Ready => {
                let condition = self.condition(&entry, &rec).await;
                Ok(VolumeInfo {
                    volume: self.volume_of(&rec, &entry)?,
                    condition,
                })
            }
            Some(rec) => Err(Error::NotFound(format!(
                "volume {id} is not ready (it is {:?})",
                rec.state
            ))),
            None => {
                let target = Target::at(&entry, handle.location.as_ref());
                self.mount_controller(&target, None).await?;
                let dir = target.path(&handle.dir);
                match self.dir_state(&dir).await? {
                    DirState::Directory => Ok(VolumeInfo {
                        volume: Volume {
                            id: id.clone(),
                            capacity_bytes: 0,
                            context: BTreeMap::new(),
                            content_source: None,
                            accessible_topology: {
                                let t = Self::entry_topology(&entry);
                                if t.is_empty() { Vec::new() } else { vec![t] }
                            },
                        },
                        condition: VolumeCondition::healthy(),
                    }),
                    _ => Err(Error::NotFound(format!("volume {id} does not exist"))),
                }
            }
        }
    }

    /// Healthy when the directory is there.
    async fn condition(
        self: &Arc<Self>,
        entry: &LustreEntry,
        rec: &VolumeRecord,
    ) -> VolumeCondition {
        let target = self.target_of(entry, rec);
        if let Err(e) = self.mount_controller(&target, None).await {
            return VolumeCondition::abnormal(format!("the filesystem cannot be mounted: {e}"));
        }
        let dir = target.path(&rec.dir());
        match self.dir_state(&dir).await {
            Ok(DirState::Directory) => VolumeCondition::healthy(),
            Ok(DirState::Missing) => VolumeCondition::abnormal(format!(
                "the volume directory {} is missing",
                dir.display()
            )),
            Ok(DirState::Other) => {
                VolumeCondition::abnormal(format!("{} is no longer a directory", dir.display()))
            }
            Err(e) => {
                VolumeCondition::abnormal(format!("the volume directory cannot be checked: {e}"))
            }
        }
    }

    /// ListVolumes: the ready volumes of every entry.
    pub(crate) async fn list_volumes(self: &Arc<Self>) -> Result<Vec<VolumeInfo>> {
        let mut out = Vec::new();
        for entry in self.config.entries.values() {
            self.mount_controller(&Target::of_entry(entry), None)
                .await?;
            for (_, rec) in self.stores(entry).volume_list().await? {
                if rec.entry != entry.name || rec.state != VolumeState::Ready {
                    continue;
                }
                let condition = self.condition(entry, &rec).await;
                out.push(VolumeInfo {
                    volume: self.volume_of(&rec, entry)?,
                    condition,
                });
            }
        }
        Ok(out)
    }

    /// GetCapacity: the most a new volume could get on one filesystem that fits the
    /// parameters and topology: free space minus what our volumes were promised but do not
    /// use yet.
    pub(crate) async fn available_capacity(
        self: &Arc<Self>,
        parameters: &Parameters,
        topology: &Topology,
    ) -> Result<u64> {
        let params = VolumeParams::parse(parameters.as_map(), Strictness::Strict)?;
        let requirement = TopologyRequirement {
            requisite: if topology.is_empty() {
                Vec::new()
            } else {
                vec![topology.clone()]
            },
            preferred: Vec::new(),
        };
        let explicit = params.config_name.is_some()
            || params.zone.is_some()
            || params.v1x_compatible == Some(true);
        let candidates: Vec<LustreEntry> = if explicit || self.config.entries.len() == 1 {
            match self.choose_entry(&params, &requirement) {
                Ok(e) => vec![e.clone()],
                Err(e) if e.code() == ErrorCode::ResourceExhausted => return Ok(0),
                Err(e) => return Err(e),
            }
        } else {
            self.config
                .entries
                .values()
                .filter(|e| requirement.choose(&[&Self::entry_topology(e)]).is_some())
                .cloned()
                .collect()
        };
        let mut best = 0u64;
        for entry in candidates {
            let target = self.target_for_create(&entry, &params)?;
            self.mount_controller(&Target::of_entry(&entry), params.management_ip.as_ref())
                .await?;
            self.mount_controller(&target, params.management_ip.as_ref())
                .await?;
            let mp = target.mount_point.clone();
            let space = self
                .fs(format!("statvfs {}", mp.display()), move || {
                    volume_dirs::statvfs(&mp)
                })
                .await?;
            let quota = self.quota(&target.mount_point);
            let mut promised = 0u64;
            for (_, rec) in self.stores(&entry).volume_list().await? {
                if rec.state == VolumeState::Deleting
                    || rec.location.as_ref().map(|l| &l.mount_point)
                        != target.location.as_ref().map(|l| &l.mount_point)
                {
                    continue;
                }
                let used = match quota.usage(rec.project_id).await {
                    Ok(u) => u.bytes_used,
                    Err(e) => {
                        warn!(project = rec.project_id, error = %e, "usage unknown; counting the whole quota as promised");
                        0
                    }
                };
                promised = promised.saturating_add(rec.capacity_bytes.saturating_sub(used));
            }
            best = best.max(space.bytes_available.saturating_sub(promised));
        }
        Ok(best)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::*;
    use csi_core::domain::{GIB, Secrets, Topology};
    use csi_core::ports::FilesystemBackend;
    use std::collections::BTreeSet;
    use std::os::unix::fs::MetadataExt;

    fn vid(id: &str) -> VolumeId {
        VolumeId::parse(id).unwrap()
    }

    fn zone(z: &str) -> Topology {
        Topology::from([(crate::ZONE_KEY.to_string(), z.to_string())])
    }

    #[test]
    fn capacities_are_whole_kib_inside_the_range() {
        assert_eq!(
            quota_capacity(&CapacityRange::new(0, 0).unwrap()).unwrap(),
            DEFAULT_VOLUME_BYTES
        );
        assert_eq!(
            quota_capacity(&CapacityRange::new(1000, 0).unwrap()).unwrap(),
            1024
        );
        assert_eq!(
            quota_capacity(&CapacityRange::new(1000, 5000).unwrap()).unwrap(),
            1024
        );
        assert_eq!(
            quota_capacity(&CapacityRange::new(0, 5000).unwrap()).unwrap(),
            4096
        );
        assert_eq!(
            quota_capacity(&CapacityRange::new(1000, 1000).unwrap())
                .unwrap_err()
                .code(),
            ErrorCode::OutOfRange
        );
        assert_eq!(
            quota_capacity(&CapacityRange::new(1025, 2047).unwrap())
                .unwrap_err()
                .code(),
            ErrorCode::OutOfRange
        );
    }

    #[tokio::test]
    async fn a_volume_gets_a_directory_owner_mode_project_and_limit() {
        let h = Harness::controller(ONE);
        let req = create_request(
            "pvc-1",
            &[
                ("exaMountUid", "1001"),
                ("exaMountGid", "1002"),
                ("volumeDirPermissions", "0770"),
                ("projectId", "4242"),
            ],
            GIB as i64,
        );
        let vol = h.backend.create_volume(&req).await.unwrap();
        assert_eq!(vol.id.as_str(), "exa1:/pvc-1");
        assert_eq!(vol.capacity_bytes, GIB);
        assert_eq!(
            vol.context.get("exaMountUid").map(String::as_str),
            Some("1001")
        );
        let dir = h.fs("exa1").join("pvc-1");
        let meta = std::fs::metadata(&dir).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o7777),
            (1001, 1002, 0o770)
        );
        let lfs = h.lfs.lock().unwrap();
        assert_eq!(lfs.projects.get(&dir), Some(&4242));
        assert_eq!(lfs.limits.get(&4242), Some(&(GIB / 1024)));
        let mounts = h.mounts.lock().unwrap();
        assert!(
            mounts
                .calls
                .iter()
                .any(|c| c.starts_with("mount -t lustre -o  10.0.0.1@tcp:/fs1 ")),
            "{:?}",
            mounts.calls
        );
        let rec: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(h.fs("exa1").join(".pfs-csi/volumes/pvc-1.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(rec["state"], "ready");
        assert_eq!(rec["projectId"], 4242);
    }

    #[tokio::test]
    async fn the_same_request_is_the_same_volume_and_a_different_one_is_refused() {
        let h = Harness::controller(ONE);
        let req = create_request("pvc-1", &[("exaMountUid", "1001")], GIB as i64);
        let first = h.backend.create_volume(&req).await.unwrap();
        assert_eq!(h.backend.create_volume(&req).await.unwrap(), first);
        let other = create_request("pvc-1", &[("exaMountUid", "7")], GIB as i64);
        assert_eq!(
            h.backend.create_volume(&other).await.unwrap_err().code(),
            ErrorCode::AlreadyExists
        );
        // A directory this driver did not make is never taken over.
        std::fs::create_dir(h.fs("exa1").join("someones-data")).unwrap();
        let err = h
            .backend
            .create_volume(&create_request("someones-data", &[], GIB as i64))
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::AlreadyExists);
        assert!(
            !h.fs("exa1")
                .join(".pfs-csi/volumes/someones-data.json")
                .exists()
        );
    }

    #[tokio::test]
    async fn a_project_id_stays_reserved_until_the_directory_carries_it() {
        let h = Harness::controller(ONE);
        let ids = h.backend.inner.ids.clone();
        h.lfs.lock().unwrap().reservation_probe = Some(ids.clone());
        h.backend
            .create_volume(&create_request("a", &[], 1024))
            .await
            .unwrap();
        let assigned = h.lfs.lock().unwrap().reserved_at_assign.clone();
        assert_eq!(assigned.len(), 1, "{assigned:?}");
        let (id, reserved) = assigned[0];
        assert!(
            reserved,
            "project {id} was free to draw while its directory was being given it"
        );
        assert!(ids.reserve(id).is_ok(), "released once the volume is made");
    }

    #[tokio::test]
    async fn an_interrupted_creation_whose_id_others_took_meanwhile_draws_another() {
        let h = Harness::controller(ONE);
        let request = create_request("a", &[], 1024);
        h.backend.create_volume(&request).await.unwrap();
        let entry = h.backend.config().entry("exa1").unwrap().clone();
        let stores = h.backend.inner.stores(&entry);
        let dir = h.fs("exa1").join("a");
        let interrupt = |h: &Harness| {
            // Cut off after its record, before its directory and limits.
            let mut rec = stores.volumes.get("a").unwrap().unwrap();
            rec.state = VolumeState::Creating;
            stores.volumes.put("a", &rec).unwrap();
            std::fs::remove_dir(&dir).unwrap();
            let mut lfs = h.lfs.lock().unwrap();
            lfs.projects.remove(&dir);
            lfs.limits.remove(&rec.project_id);
            rec.project_id
        };

        // Limits alone (its own, set before it stopped): the id stays.
        let first = interrupt(&h);
        h.lfs.lock().unwrap().limits.insert(first, 1);
        h.backend.create_volume(&request).await.unwrap();
        assert_eq!(stores.volumes.get("a").unwrap().unwrap().project_id, first);

        // Files of another volume carry it now: another id, in the record and on the
        // directory, and the other volume's quota is left alone.
        let taken = interrupt(&h);
        h.lfs.lock().unwrap().files.insert(taken, 3);
        h.lfs.lock().unwrap().limits.insert(taken, 4096);
        h.backend.create_volume(&request).await.unwrap();
        let rec = stores.volumes.get("a").unwrap().unwrap();
        assert_ne!(rec.project_id, taken);
        let lfs = h.lfs.lock().unwrap();
        assert_eq!(lfs.projects.get(&dir), Some(&rec.project_id));
        assert_eq!(lfs.limits.get(&taken), Some(&4096));
    }

    #[tokio::test]
    async fn fifty_concurrent_creates_get_fifty_distinct_project_ids() {
        let h = Harness::controller(ONE);
        // Ids already used on the filesystem (by someone else) are skipped.
        h.lfs
            .lock()
            .unwrap()
            .used_kib
            .extend((10_000..10_040).map(|id| (id, 1)));
        let mut set = tokio::task::JoinSet::new();
        for i in 0..50 {
            let backend = h.backend.clone();
            set.spawn(async move {
                let req = create_request(
                    &format!("pvc-{i}"),
                    &[
                        ("minProjectId", "10000"),
                        ("maxProjectId", "10120"),
                        ("generateProjectIdRetries", "1000"),
                    ],
                    GIB as i64,
                );
                backend.create_volume(&req).await
            });
        }
        let mut volumes = 0;
        while let Some(done) = set.join_next().await {
            done.unwrap().unwrap();
            volumes += 1;
        }
        assert_eq!(volumes, 50);
        let lfs = h.lfs.lock().unwrap();
        let ids: BTreeSet<u32> = lfs.projects.values().copied().collect();
        assert_eq!(ids.len(), 50, "{ids:?}");
        assert!(
            ids.iter().all(|id| (10_040..=10_120).contains(id)),
            "{ids:?}"
        );
        let recorded: BTreeSet<u32> = h
            .backend
            .inner
            .stores(h.backend.config().entry("exa1").unwrap())
            .volumes
            .list()
            .unwrap()
            .into_iter()
            .map(|(_, r)| r.project_id)
            .collect();
        assert_eq!(recorded, ids);
    }

    #[tokio::test]
    async fn project_ids_run_out_clearly_and_a_given_id_is_not_shared() {
        let h = Harness::controller(ONE);
        h.lfs.lock().unwrap().used_kib.insert(7, 1);
        let err = h
            .backend
            .create_volume(&create_request(
                "a",
                &[("minProjectId", "7"), ("maxProjectId", "7")],
                1024,
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::ResourceExhausted);
        assert!(
            err.to_string().contains("generateProjectIdRetries"),
            "{err}"
        );
        assert!(!h.fs("exa1").join(".pfs-csi/volumes/a.json").exists());
        h.backend
            .create_volume(&create_request("b", &[("projectId", "9")], 1024))
            .await
            .unwrap();
        let err = h
            .backend
            .create_volume(&create_request("c", &[("projectId", "9")], 1024))
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::FailedPrecondition);
        assert!(err.to_string().contains("volume b"), "{err}");
        // An id someone else's files or limits use is not taken over either.
        for (id, limit) in [(11, None), (12, Some(100))] {
            {
                let mut lfs = h.lfs.lock().unwrap();
                match limit {
                    None => lfs.used_kib.insert(id, 1),
                    Some(kib) => lfs.limits.insert(id, kib),
                };
            }
            let err = h
                .backend
                .create_volume(&create_request(
                    "d",
                    &[("projectId", &id.to_string())],
                    1024,
                ))
                .await
                .unwrap_err();
            assert_eq!(err.code(), ErrorCode::FailedPrecondition, "{err}");
            assert!(err.to_string().contains("already in use"), "{err}");
            assert_eq!(h.lfs.lock().unwrap().limits.get(&id).copied(), limit);
            assert!(!h.fs("exa1").join("d").exists());
            assert!(!h.fs("exa1").join(".pfs-csi/volumes/d.json").exists());
        }
    }

    #[tokio::test]
    async fn a_failing_lfs_leaves_no_half_made_volume() {
        let h = Harness::controller(ONE);
        h.lfs.lock().unwrap().fail.push((
            "setquota".into(),
            "lfs setquota: quotactl failed: Operation not supported".into(),
        ));
        let err = h
            .backend
            .create_volume(&create_request("pvc-1", &[("projectId", "55")], GIB as i64))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("Operation not supported"), "{err}");
        assert!(!h.fs("exa1").join("pvc-1").exists());
        assert!(!h.fs("exa1").join(".pfs-csi/volumes/pvc-1.json").exists());
        // And the same request then succeeds.
        h.backend
            .create_volume(&create_request("pvc-1", &[("projectId", "55")], GIB as i64))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn limits_that_cannot_be_cleared_keep_the_failed_volumes_record() {
        let h = Harness::controller(ONE);
        for _ in 0..2 {
            h.lfs.lock().unwrap().fail.push((
                "setquota".into(),
                "lfs setquota: quotactl failed: Operation not supported".into(),
            ));
        }
        let request = create_request("pvc-1", &[("projectId", "55")], GIB as i64);
        h.backend.create_volume(&request).await.unwrap_err();
        // Its project's limits may still be set: the record keeps the id this driver's.
        assert!(h.fs("exa1").join(".pfs-csi/volumes/pvc-1.json").exists());
        // The retry finishes the creation.
        let made = h.backend.create_volume(&request).await.unwrap();
        assert_eq!(made.id.as_str(), "exa1:/pvc-1");
        assert_eq!(
            h.lfs.lock().unwrap().limits.get(&55).copied(),
            Some(1 << 20)
        );
    }

    #[tokio::test]
    async fn bad_parameters_and_mount_options_are_refused_before_anything_is_made() {
        let h = Harness::controller(ONE);
        for (params, named) in [
            (vec![("colour", "blue")], "parameters[colour]"),
            (vec![("bindMount", "sometimes")], "parameters[bindMount]"),
            (vec![("mountOptions", "rw,remount")], "remount"),
            (vec![("configName", "exa9")], "parameters[configName]"),
            (
                vec![("exaFS", "10.9.9.9@tcp:/other")],
                "parameters[mountPoint]: is required",
            ),
        ] {
            let err = h
                .backend
                .create_volume(&create_request("pvc-x", &params, 1024))
                .await
                .unwrap_err();
            assert_eq!(err.code(), ErrorCode::InvalidArgument, "{params:?}: {err}");
            assert!(err.to_string().contains(named), "{params:?}: {err}");
        }
        let mut req = create_request("pvc-x", &[], 1024);
        req.capabilities[0].mount_flags = vec!["bind".into()];
        let err = h.backend.create_volume(&req).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("volume_capabilities[0].mount_flags"),
            "{err}"
        );
        for name in ["../x", ".pfs-csi", ".hidden"] {
            let err = h
                .backend
                .create_volume(&create_request(name, &[], 1024))
                .await
                .unwrap_err();
            assert_eq!(err.code(), ErrorCode::InvalidArgument, "{name}");
        }
        assert!(!h.fs("exa1").join("pvc-x").exists());
    }

    #[tokio::test]
    async fn delete_removes_data_and_limits_and_is_idempotent() {
        let h = Harness::controller(ONE);
        let vol = h
            .backend
            .create_volume(&create_request("pvc-1", &[("projectId", "77")], GIB as i64))
            .await
            .unwrap();
        std::fs::write(h.fs("exa1").join("pvc-1/data"), b"x").unwrap();
        h.backend
            .delete_volume(&vol.id, &Secrets::default())
            .await
            .unwrap();
        assert!(!h.fs("exa1").join("pvc-1").exists());
        assert_eq!(h.lfs.lock().unwrap().limits.get(&77), Some(&0));
        assert!(!h.fs("exa1").join(".pfs-csi/volumes/pvc-1.json").exists());
        h.backend
            .delete_volume(&vol.id, &Secrets::default())
            .await
            .unwrap();
        // The trash is emptied in the background.
        let trash = h.fs("exa1").join(".pfs-csi/trash");
        for _ in 0..100 {
            if std::fs::read_dir(&trash).map(|d| d.count()).unwrap_or(0) == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(std::fs::read_dir(&trash).map(|d| d.count()).unwrap_or(0), 0);
    }

    #[tokio::test]
    async fn the_planned_id_is_the_id_the_volume_gets() {
        let h = Harness::controller(TWO_ZONES);
        for (name, params) in [
            ("pvc-plan-1", [("configName", "exa2")]),
            ("pvc-plan-2", [("zone", "zone-1")]),
        ] {
            let req = create_request(name, &params, 1024);
            let planned = h.backend.planned_volume_id(&req).expect("planned");
            assert_eq!(h.backend.create_volume(&req).await.unwrap().id, planned);
        }
        // Which entry is meant cannot be told: nothing planned, the create says why.
        let req = create_request("pvc-plan", &[], 1024);
        assert_eq!(h.backend.planned_volume_id(&req), None);
        assert!(h.backend.create_volume(&req).await.is_err());
    }

    #[tokio::test]
    async fn a_record_in_a_metadata_directory_a_user_made_is_never_believed() {
        // A volume's record, as the driver writes it, copied where a user could put it.
        let made = Harness::controller(ONE);
        made.backend
            .create_volume(&create_request("victim", &[], 1024))
            .await
            .unwrap();
        let record = std::fs::read(made.fs("exa1").join(".pfs-csi/volumes/victim.json")).unwrap();

        // A filesystem whose top users can write to: one of them made the metadata
        // directory before the driver did, with that record in it, beside static data.
        let h = Harness::controller(ONE);
        let data = h.fs("exa1").join("victim");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("results"), b"keep").unwrap();
        let planted = h.fs("exa1").join(".pfs-csi/volumes");
        std::fs::create_dir_all(&planted).unwrap();
        std::fs::write(planted.join("victim.json"), &record).unwrap();
        for dir in [h.fs("exa1").join(".pfs-csi"), planted] {
            std::os::unix::fs::chown(dir, Some(1000), Some(1000)).unwrap();
        }
        let err = h
            .backend
            .delete_volume(&vid("exa1:/victim"), &Secrets::default())
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::FailedPrecondition, "{err}");
        assert_eq!(std::fs::read(data.join("results")).unwrap(), b"keep");
        assert!(h.backend.list_volumes().await.is_err(), "nor listed");
    }

    #[tokio::test]
    async fn static_volumes_are_never_deleted() {
        let h = Harness::controller(ONE);
        std::fs::create_dir_all(h.fs("exa1").join("nginx-persistent")).unwrap();
        std::fs::write(h.fs("exa1").join("nginx-persistent/index.html"), b"hello").unwrap();
        for id in [
            "exa1:/nginx-persistent",
            &format!("exa1:{}/nginx-persistent", h.fs("exa1").display()),
        ] {
            let err = h
                .backend
                .delete_volume(&vid(id), &Secrets::default())
                .await
                .unwrap_err();
            assert_eq!(err.code(), ErrorCode::FailedPrecondition, "{id}");
            assert!(err.to_string().contains("left in place"), "{err}");
        }
        assert_eq!(
            std::fs::read(h.fs("exa1").join("nginx-persistent/index.html")).unwrap(),
            b"hello"
        );
        // A handle whose directory does not exist names nothing to delete.
        h.backend
            .delete_volume(&vid("exa1:/never-existed"), &Secrets::default())
            .await
            .unwrap();
        // Another id naming a volume we made is not that volume.
        h.backend
            .create_volume(&create_request("pvc-2", &[], 1024))
            .await
            .unwrap();
        let alias = format!("exa1:{}/pvc-2", h.fs("exa1").display());
        assert_eq!(
            h.backend
                .delete_volume(&vid(&alias), &Secrets::default())
                .await
                .unwrap_err()
                .code(),
            ErrorCode::FailedPrecondition
        );
        assert!(h.fs("exa1").join("pvc-2").exists());
    }

    #[tokio::test]
    async fn half_created_volumes_are_deleted_or_finished() {
        let h = Harness::controller(ONE);
        let entry = h.backend.config().entry("exa1").unwrap().clone();
        let stores = h.backend.inner.stores(&entry);
        // Crashed after the record, before the directory.
        h.backend
            .create_volume(&create_request("pvc-a", &[("projectId", "31")], 1024))
            .await
            .unwrap();
        let mut rec = stores.volumes.get("pvc-a").unwrap().unwrap();
        rec.state = VolumeState::Creating;
        stores.volumes.put("pvc-a", &rec).unwrap();
        std::fs::remove_dir(h.fs("exa1").join("pvc-a")).unwrap();
        h.backend
            .delete_volume(&vid("exa1:/pvc-a"), &Secrets::default())
            .await
            .unwrap();
        assert!(stores.volumes.get("pvc-a").unwrap().is_none());
        // Crashed after the directory: a retried create finishes it with the same project.
        h.backend
            .create_volume(&create_request("pvc-b", &[], 1024))
            .await
            .unwrap();
        let mut rec = stores.volumes.get("pvc-b").unwrap().unwrap();
        rec.state = VolumeState::Creating;
        stores.volumes.put("pvc-b", &rec).unwrap();
        let vol = h
            .backend
            .create_volume(&create_request("pvc-b", &[], 1024))
            .await
            .unwrap();
        assert_eq!(
            stores.volumes.get("pvc-b").unwrap().unwrap().state,
            VolumeState::Ready
        );
        assert_eq!(
            stores.volumes.get("pvc-b").unwrap().unwrap().project_id,
            rec.project_id
        );
        assert_eq!(vol.id.as_str(), "exa1:/pvc-b");
        // A volume stuck in deleting is finished by the next delete.
        let mut rec = stores.volumes.get("pvc-b").unwrap().unwrap();
        rec.state = VolumeState::Deleting;
        stores.volumes.put("pvc-b", &rec).unwrap();
        assert_eq!(
            h.backend
                .create_volume(&create_request("pvc-b", &[], 1024))
                .await
                .unwrap_err()
                .code(),
            ErrorCode::Aborted
        );
        h.backend
            .delete_volume(&vid("exa1:/pvc-b"), &Secrets::default())
            .await
            .unwrap();
        assert!(!h.fs("exa1").join("pvc-b").exists());
    }

    #[tokio::test]
    async fn expand_raises_the_hard_limit() {
        let h = Harness::controller(ONE);
        let vol = h
            .backend
            .create_volume(&create_request("pvc-1", &[("projectId", "12")], GIB as i64))
            .await
            .unwrap();
        assert_eq!(
            h.backend
                .expand_volume(&vol.id, 2 * GIB + 1, &Secrets::default())
                .await
                .unwrap(),
            2 * GIB + 1024
        );
        assert_eq!(
            h.lfs.lock().unwrap().limits.get(&12),
            Some(&(2 * GIB / 1024 + 1))
        );
        assert_eq!(
            h.backend
                .get_volume(&vol.id)
                .await
                .unwrap()
                .volume
                .capacity_bytes,
            2 * GIB + 1024
        );
        std::fs::create_dir(h.fs("exa1").join("static")).unwrap();
        let err = h
            .backend
            .expand_volume(&vid("exa1:/static"), GIB, &Secrets::default())
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::FailedPrecondition);
    }

    #[tokio::test]
    async fn get_and_list_report_the_directory_condition() {
        let h = Harness::controller(ONE);
        let vol = h
            .backend
            .create_volume(&create_request("pvc-1", &[], GIB as i64))
            .await
            .unwrap();
        h.backend
            .create_volume(&create_request("pvc-2", &[], GIB as i64))
            .await
            .unwrap();
        assert!(
            !h.backend
                .get_volume(&vol.id)
                .await
                .unwrap()
                .condition
                .abnormal
        );
        std::fs::remove_dir(h.fs("exa1").join("pvc-1")).unwrap();
        let info = h.backend.get_volume(&vol.id).await.unwrap();
        assert!(info.condition.abnormal);
        assert!(
            info.condition.message.contains("missing"),
            "{}",
            info.condition.message
        );
        let listed = h.backend.list_volumes().await.unwrap();
        let ids: Vec<&str> = listed.iter().map(|v| v.volume.id.as_str()).collect();
        assert_eq!(ids, ["exa1:/pvc-1", "exa1:/pvc-2"]);
        assert_eq!(
            h.backend
                .get_volume(&vid("exa1:/nothing"))
                .await
                .unwrap_err()
                .code(),
            ErrorCode::NotFound
        );
        std::fs::create_dir(h.fs("exa1").join("static")).unwrap();
        assert_eq!(
            h.backend
                .get_volume(&vid("exa1:/static"))
                .await
                .unwrap()
                .volume
                .capacity_bytes,
            0
        );
    }

    #[tokio::test]
    async fn topology_picks_the_entry_and_is_reported() {
        let h = Harness::controller(TWO_ZONES);
        let mut req = create_request("pvc-1", &[], 1024);
        req.topology = TopologyRequirement {
            requisite: vec![zone("zone-1"), zone("zone-2")],
            preferred: vec![zone("zone-2")],
        };
        let vol = h.backend.create_volume(&req).await.unwrap();
        assert_eq!(vol.id.as_str(), "exa2:/pvc-1");
        assert_eq!(vol.accessible_topology, vec![zone("zone-2")]);
        assert!(h.fs("exa2").join("pvc-1").is_dir());

        let mut req = create_request("pvc-2", &[("zone", "zone-1")], 1024);
        req.topology = TopologyRequirement::default();
        assert_eq!(
            h.backend.create_volume(&req).await.unwrap().id.as_str(),
            "exa1:/pvc-2"
        );

        let mut req = create_request("pvc-3", &[], 1024);
        req.topology = TopologyRequirement {
            requisite: vec![zone("zone-9")],
            preferred: vec![],
        };
        assert_eq!(
            h.backend.create_volume(&req).await.unwrap_err().code(),
            ErrorCode::ResourceExhausted
        );
        let mut req = create_request("pvc-3", &[("configName", "exa1")], 1024);
        req.topology = TopologyRequirement {
            requisite: vec![zone("zone-2")],
            preferred: vec![],
        };
        assert_eq!(
            h.backend.create_volume(&req).await.unwrap_err().code(),
            ErrorCode::ResourceExhausted
        );
        let err = h
            .backend
            .create_volume(&create_request("pvc-3", &[], 1024))
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidArgument);
        assert!(err.to_string().contains("configName"), "{err}");
    }

    #[tokio::test]
    async fn capacity_is_free_space_minus_unused_promises() {
        let h = Harness::controller(ONE);
        let params = Parameters::default();
        let before = h
            .backend
            .available_capacity(&params, &Topology::new())
            .await
            .unwrap();
        let vol = h
            .backend
            .create_volume(&create_request(
                "pvc-1",
                &[("projectId", "3")],
                (64 << 20) as i64,
            ))
            .await
            .unwrap();
        h.lfs.lock().unwrap().used_kib.insert(3, 16 << 10);
        let after = h
            .backend
            .available_capacity(&params, &Topology::new())
            .await
            .unwrap();
        let promised = vol.capacity_bytes - (16 << 20);
        // Free space moves a little under a shared temporary directory: allow 8 MiB.
        assert!(
            before.abs_diff(after + promised) < 8 << 20,
            "before {before} after {after} promised {promised}"
        );
        let two = Harness::controller(TWO_ZONES);
        assert_eq!(
            two.backend
                .available_capacity(&params, &zone("zone-7"))
                .await
                .unwrap(),
            0
        );
        assert!(
            two.backend
                .available_capacity(&params, &zone("zone-2"))
                .await
                .unwrap()
                > 0
        );
    }

    #[tokio::test]
    async fn management_nids_mount_the_controller_and_missing_subdirectories_are_made() {
        let h = Harness::build(
            &[("exa1", "10.0.0.1@tcp:/fs1/zone-1", None)],
            csi_core::ports::Role::Controller,
            |e| {
                e["managementIp"] = serde_json::json!("10.204.86.114@tcp");
            },
        );
        h.mounts
            .lock()
            .unwrap()
            .fail_sources
            .push("10.204.86.114@tcp:/fs1/zone-1".into());
        h.backend
            .create_volume(&create_request("pvc-1", &[], 1024))
            .await
            .unwrap();
        let calls = h.mounts.lock().unwrap().calls.clone();
        assert!(
            calls[0].contains(" 10.204.86.114@tcp:/fs1/zone-1 "),
            "{calls:?}"
        );
        assert!(
            calls[1].contains(" 10.204.86.114@tcp:/fs1 ") && calls[1].contains("temp-mounts/exa1"),
            "{calls:?}"
        );
        assert!(
            calls[2].starts_with("umount ") && calls[2].contains("temp-mounts/exa1"),
            "{calls:?}"
        );
        assert!(
            calls[3].contains(" 10.204.86.114@tcp:/fs1/zone-1 "),
            "{calls:?}"
        );
        assert!(h.root.path().join("state/temp-mounts/exa1/zone-1").is_dir());
    }

    #[tokio::test]
    async fn volumes_on_another_filesystem_keep_a_short_id() {
        let h = Harness::controller(ONE);
        let other = h.root.path().join("other");
        let req = create_request(
            "pvc-1",
            &[
                ("exaFS", "10.9.9.9@tcp:/other"),
                ("mountPoint", &other.display().to_string()),
            ],
            1024,
        );
        let vol = h.backend.create_volume(&req).await.unwrap();
        assert_eq!(vol.id.as_str(), "exa1:/pvc-1");
        assert!(other.join("pvc-1").is_dir());
        assert!(!h.fs("exa1").join("pvc-1").exists());
        assert!(
            !h.backend
                .get_volume(&vol.id)
                .await
                .unwrap()
                .condition
                .abnormal
        );
        h.backend
            .delete_volume(&vol.id, &Secrets::default())
            .await
            .unwrap();
        assert!(!other.join("pvc-1").exists());
    }

    /// Volume `src`, holding `a.txt`.
    async fn source_with_a_file(h: &Harness) -> Volume {
        let src = h
            .backend
            .create_volume(&create_request("src", &[], GIB as i64))
            .await
            .unwrap();
        std::fs::write(h.fs("exa1").join("src/a.txt"), b"a").unwrap();
        src
    }

    #[tokio::test]
    async fn restores_and_clones_fill_in_the_background() {
        let mut h = Harness::controller(ONE);
        let src = source_with_a_file(&h).await;
        let clone = h
            .backend
            .create_volume(&with_source(
                create_request("clone", &[], GIB as i64),
                VolumeContentSource::Volume(src.id.to_string()),
            ))
            .await
            .unwrap();
        assert_eq!(
            clone.content_source,
            Some(VolumeContentSource::Volume("exa1:/src".into()))
        );
        assert!(h.fs("exa1").join("clone/a.txt").is_file());
        // A smaller clone is out of range; a missing source is not found.
        let err = h
            .backend
            .create_volume(&with_source(
                create_request("small", &[], 1024),
                VolumeContentSource::Volume(src.id.to_string()),
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::OutOfRange);
        let err = h
            .backend
            .create_volume(&with_source(
                create_request("x", &[], GIB as i64),
                VolumeContentSource::Volume("exa1:/nope".into()),
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::NotFound);
        let err = h
            .backend
            .create_volume(&with_source(
                create_request("x", &[], GIB as i64),
                VolumeContentSource::Snapshot("exa1:snapshot:nope".into()),
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::NotFound);

        // A restore interrupted by a restart is taken up again.
        let entry = h.backend.config().entry("exa1").unwrap().clone();
        let stores = h.backend.inner.stores(&entry);
        let mut rec = stores.volumes.get("clone").unwrap().unwrap();
        rec.state = VolumeState::Filling;
        stores.volumes.put("clone", &rec).unwrap();
        std::fs::remove_file(h.fs("exa1").join("clone/a.txt")).unwrap();
        std::fs::write(h.fs("exa1").join("clone/left-by-the-last-attempt"), b"").unwrap();
        // Handed over before the attempt failed: the retry takes the directory back first.
        std::os::unix::fs::chown(h.fs("exa1").join("clone"), Some(4242), Some(4242)).unwrap();
        h.restart();
        let again = h
            .backend
            .create_volume(&with_source(
                create_request("clone", &[], GIB as i64),
                VolumeContentSource::Volume(src.id.to_string()),
            ))
            .await
            .unwrap();
        assert_eq!(again.id, clone.id);
        assert!(h.fs("exa1").join("clone/a.txt").is_file());
        assert!(!h.fs("exa1").join("clone/left-by-the-last-attempt").exists());
        assert_eq!(
            h.engine.fill_dests.lock().unwrap().last().copied(),
            Some((0o700, 0)),
            "the retry filled a directory only root could enter"
        );
    }

    #[tokio::test]
    async fn a_filled_volume_is_private_to_root_until_its_content_is_in() {
        use std::os::unix::fs::MetadataExt;
        let h = Harness::controller(ONE);
        let src = source_with_a_file(&h).await;
        let params = [
            ("exaMountUid", "1001"),
            ("exaMountGid", "1002"),
            ("volumeDirPermissions", "0770"),
        ];
        h.backend
            .create_volume(&with_source(
                create_request("clone", &params, GIB as i64),
                VolumeContentSource::Volume(src.id.to_string()),
            ))
            .await
            .unwrap();
        // The copy ran in a directory nobody but root could enter...
        assert_eq!(
            h.engine.fill_dests.lock().unwrap().clone(),
            vec![(0o700, 0)]
        );
        // ...which then got what the parameters ask for.
        let meta = std::fs::metadata(h.fs("exa1").join("clone")).unwrap();
        assert_eq!(
            (meta.mode() & 0o7777, meta.uid(), meta.gid()),
            (0o770, 1001, 1002)
        );
        assert!(h.fs("exa1").join("clone/a.txt").is_file());
    }

    #[tokio::test]
    async fn a_fill_started_from_a_stale_record_leaves_a_ready_volume_alone() {
        let h = Harness::controller(ONE);
        let src = source_with_a_file(&h).await;
        let request = with_source(
            create_request("clone", &[], GIB as i64),
            VolumeContentSource::Volume(src.id.to_string()),
        );
        h.backend.create_volume(&request).await.unwrap();
        std::fs::write(h.fs("exa1").join("clone/written-by-its-pod"), b"x").unwrap();
        // A retry read the record just before the last fill recorded it ready.
        let entry = h.backend.config().entry("exa1").unwrap().clone();
        let stores = h.backend.inner.stores(&entry);
        let mut stale = stores.volumes.get("clone").unwrap().unwrap();
        stale.state = VolumeState::Filling;
        let fills = h.engine.fill_dests.lock().unwrap().len();
        h.backend.inner.continue_fill(stale, &entry).await.unwrap();
        assert!(h.fs("exa1").join("clone/written-by-its-pod").exists());
        assert_eq!(
            h.engine.fill_dests.lock().unwrap().len(),
            fills,
            "no new fill"
        );
    }

    #[tokio::test]
    async fn a_clone_source_stays_while_the_clone_is_filled() {
        let h = Harness::controller(ONE);
        let src = source_with_a_file(&h).await;
        // The clone's copy held back: it runs in the background, and its create answers
        // Aborted until it is done.
        h.engine.set_open(false);
        let clone = with_source(
            create_request("clone", &[], GIB as i64),
            VolumeContentSource::Volume(src.id.to_string()),
        );
        let err = h.backend.create_volume(&clone).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::Aborted, "{err}");
        let err = h
            .backend
            .delete_volume(&src.id, &Secrets::default())
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::FailedPrecondition, "{err}");
        assert!(err.to_string().contains("volume clone"), "{err}");
        assert!(h.fs("exa1").join("src/a.txt").is_file());
        h.engine.set_open(true);
        let done = loop {
            match h.backend.create_volume(&clone).await {
                Err(e) if e.code() == ErrorCode::Aborted => {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await
                }
                done => break done.unwrap(),
            }
        };
        assert!(h.fs("exa1").join("clone/a.txt").is_file(), "{done:?}");
        h.backend
            .delete_volume(&src.id, &Secrets::default())
            .await
            .unwrap();
        assert!(!h.fs("exa1").join("src").exists());
    }
}
