//! Controller operations: provision, delete, expand, describe and list volumes, capacity.
//!
//! Directories are created with the BeeGFS tools (ownership, mode and stripe pattern as the
//! reference driver sets them); everything else (special mode bits, quota group, records,
//! node tracking, deletion, snapshot archives) goes through the controller's client mount.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use csi_core::blocking::try_blocking;
use csi_core::domain::{
    GIB, MAX_ID_BYTES, Parameters, Volume, VolumeCondition, VolumeContentSource, VolumeId,
};
use csi_core::id_alloc::{IdRange, IdReservation};
use csi_core::ports::{
    ArchiveOptions, CreateVolumeRequest, QuotaLimits, QuotaManager, ToolRecord, VolumeInfo,
};
use csi_core::records::{Listed, RecordStore, check_key};
use csi_core::service::DEFAULT_VOLUME_BYTES;
use csi_core::{Error, ErrorCode, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use crate::backend::{FsAccess, Inner, now_secs, volume_context};
use crate::fs_tree;
use crate::params::VolumeParams;
use crate::records::{
    BaseRecord, KnownFilesystem, SourceRecord, VolumeRecord, VolumeState, base_store, nodes_dir,
    safe_key,
};
use crate::settings::QuotaSettings;
use crate::volume_id::{BeegfsSnapshotId, BeegfsVolumeId, VolumePath};

/// What [`Inner::make_volume`] needs of a CreateVolume, owned: it may run on after the call.
struct Making {
    fs: FsAccess,
    id: BeegfsVolumeId,
    path: VolumePath,
    params: VolumeParams,
    quota: Option<QuotaSettings>,
    store: RecordStore<VolumeRecord>,
    record: VolumeRecord,
    name: String,
}

/// The bound of a walk over a filled volume's whole tree (emptying it, regrouping it).
const FILL_TREE_TIMEOUT: Duration = Duration::from_secs(3600);

/// The key of the background making of volume `id` (one with a content source).
fn fill_key(id: &str) -> String {
    format!("fill:{id}")
}

/// The id of a new volume named `name` (checked as a directory name) with `params`.
fn new_volume_id(params: &VolumeParams, name: &str) -> Result<BeegfsVolumeId> {
    check_name("name", name)?;
    Ok(BeegfsVolumeId {
        host: params.host.clone(),
        path: params.base.join(name),
    })
}

/// Checks a CO name used as a directory and record name.
pub(crate) fn check_name(field: &str, name: &str) -> Result<()> {
    if name.chars().any(char::is_control) || name.contains('/') || name == "." || name == ".." {
        return Err(Error::invalid(
            field,
            format!("{name:?} cannot be a directory name"),
        ));
    }
    check_key(name).map_err(|_| {
        Error::invalid(
            field,
            format!(
                "{name:?} cannot be a directory name (empty, leading '.', or longer than 200 bytes)"
            ),
        )
    })
}

/// The quota limits of a volume of `capacity` bytes.
pub(crate) fn limits_for(quota: &QuotaSettings, capacity: u64) -> QuotaLimits {
    let gib = capacity.div_ceil(GIB).max(1);
    QuotaLimits {
        bytes_hard: Some(capacity),
        inodes_hard: quota.inodes_per_gib.map(|n| n.saturating_mul(gib)),
        ..QuotaLimits::default()
    }
}

/// How much of a record listing a caller needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Listing {
    /// Every record: one that cannot be read fails the listing.
    All,
    /// The records that can be read; the others are skipped with a warning.
    Readable,
}

impl Listing {
    /// The records of a listing, or, for `All`, the error of the first unreadable one.
    pub(crate) fn take<T>(
        self,
        host: &str,
        (records, unreadable): Listed<T>,
    ) -> Result<Vec<(String, T)>> {
        let mut unreadable = unreadable.into_iter();
        if self == Listing::All
            && let Some(first) = unreadable.next()
        {
            return Err(first);
        }
        for e in unreadable {
            warn!(host, error = %e, "record skipped: it cannot be read");
        }
        Ok(records)
    }
}

/// A volume id in [`Inner::deleting`], taken out again when dropped (a deletion that ends,
/// fails, or panics never leaves its volume marked as being deleted).
struct DeletionClaim {
    inner: Arc<Inner>,
    id: String,
}

impl DeletionClaim {
    /// Marks `id` as being deleted; `None` when it already is.
    fn take(inner: &Arc<Inner>, id: &str) -> Option<Self> {
        inner
            .deleting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string())
            .then(|| Self {
                inner: inner.clone(),
                id: id.to_string(),
            })
    }
}

impl Drop for DeletionClaim {
    fn drop(&mut self) {
        self.inner
            .deleting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

impl VolumeRecord {
    /// The volume as reported to the CO.
    pub(crate) fn to_volume(&self) -> Result<Volume> {
        Ok(Volume {
            id: csi_core::domain::VolumeId::parse(&self.volume_id)?,
            capacity_bytes: self.capacity_bytes,
            context: volume_context(&self.host, &self.base, self.quota_gid),
            content_source: self.source.as_ref().map(|s| match s {
                SourceRecord::Snapshot(id) => VolumeContentSource::Snapshot(id.clone()),
                SourceRecord::Volume(id) => VolumeContentSource::Volume(id.clone()),
            }),
            accessible_topology: Vec::new(),
        })
    }
}

impl Inner {
    /// The record store of volumes in `base`.
    pub(crate) fn volume_store(
        &self,
        fs: &FsAccess,
        base: &VolumePath,
    ) -> RecordStore<VolumeRecord> {
        crate::records::volume_store(&fs.root, base)
    }

    /// The record of volume `id`; `None` for a volume the driver did not create. A record
    /// that holds the id but not its name or base path was not written by this driver for
    /// this volume, and is refused (`FailedPrecondition`) rather than believed.
    pub(crate) async fn volume_record(
        &self,
        fs: &FsAccess,
        id: &BeegfsVolumeId,
    ) -> Result<Option<VolumeRecord>> {
        let Some(name) = id.name().map(str::to_string) else {
            return Ok(None);
        };
        if check_name("name", &name).is_err() {
            return Ok(None);
        }
        let base = id.path.parent();
        let store = self.volume_store(fs, &base);
        let wanted = id.to_string();
        let key = name.clone();
        let record = try_blocking(self.fs_timeout(), "read volume record", move || {
            store.get(&key)
        })
        .await?;
        let Some(record) = record.filter(|r| r.volume_id == wanted) else {
            return Ok(None);
        };
        if record.name != name || record.base != base.to_string() || record.host != id.host {
            return Err(Error::FailedPrecondition(format!(
                "the record of volume {wanted} names {:?} in {:?} on {:?}, not this volume; it was not written by this driver and is not trusted; nothing was changed",
                record.name, record.base, record.host
            )));
        }
        Ok(Some(record))
    }

    /// Every base path recorded on a filesystem. `Listing::Readable` skips (with a warning)
    /// a record that cannot be read.
    pub(crate) async fn bases(&self, fs: &FsAccess, listing: Listing) -> Result<Vec<VolumePath>> {
        let store = base_store(&fs.root);
        let list = try_blocking(self.fs_timeout(), "list base paths", move || {
            store.list_readable()
        })
        .await?;
        let list = listing.take(&fs.host, list)?;
        Ok(list
            .into_iter()
            .filter_map(|(_, b)| VolumePath::clean("base", &b.base).ok())
            .collect())
    }

    /// The volume records on a filesystem: every one (`Listing::All`, an error naming the
    /// first that cannot be read), or those that can be read (`Listing::Readable`, a base
    /// whose records cannot be listed and each unreadable record skipped with a warning).
    pub(crate) async fn all_volume_records(
        &self,
        fs: &FsAccess,
        listing: Listing,
    ) -> Result<Vec<VolumeRecord>> {
        self.records_in_bases(fs, listing, "volume", crate::records::volume_store)
            .await
    }

    /// The records of every base path on a filesystem, each base's store made by
    /// `store_of`, taken as `listing` says (see [`Self::all_volume_records`]); `kind` names
    /// them in warnings.
    pub(crate) async fn records_in_bases<T>(
        &self,
        fs: &FsAccess,
        listing: Listing,
        kind: &str,
        store_of: fn(&Path, &VolumePath) -> RecordStore<T>,
    ) -> Result<Vec<T>>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
    {
        let mut out = Vec::new();
        for base in self.bases(fs, listing).await? {
            let store = store_of(&fs.root, &base);
            let listed = try_blocking(
                self.fs_timeout(),
                &format!("list {kind} records"),
                move || store.list_readable(),
            )
            .await;
            let records = match (listed, listing) {
                (Ok(list), _) => listing.take(&fs.host, list)?,
                (Err(e), Listing::Readable) => {
                    warn!(host = %fs.host, base = %base, error = %e, "the {kind} records of this base path cannot be listed; they are left out");
                    continue;
                }
                (Err(e), Listing::All) => return Err(e),
            };
            out.extend(records.into_iter().map(|(_, r)| r));
        }
        Ok(out)
    }

    /// Every filesystem the controller knows of: configured, with quotas, or provisioned on.
    pub(crate) fn known_hosts(&self) -> Result<Vec<String>> {
        let mut hosts = self.config.hosts();
        for q in &self.settings.quotas {
            if !hosts.contains(&q.sys_mgmtd_host) {
                hosts.push(q.sys_mgmtd_host.clone());
            }
        }
        let store: RecordStore<KnownFilesystem> =
            RecordStore::new(self.state().join("controller").join("filesystems"));
        for (_, known) in store.list()? {
            if !hosts.contains(&known.host) {
                hosts.push(known.host);
            }
        }
        Ok(hosts)
    }

    async fn remember_base(&self, fs: &FsAccess, base: &VolumePath) -> Result<()> {
        let known: RecordStore<KnownFilesystem> =
            RecordStore::new(self.state().join("controller").join("filesystems"));
        let host_key = safe_key(&fs.host);
        if known.get(&host_key)?.is_none() {
            known.put(
                &host_key,
                &KnownFilesystem {
                    host: fs.host.clone(),
                },
            )?;
        }
        let store = base_store(&fs.root);
        let key = safe_key(base.as_str());
        let record = BaseRecord {
            base: base.to_string(),
        };
        try_blocking(self.fs_timeout(), "record base path", move || {
            if store.get(&key)?.is_none() {
                store.put(&key, &record)?;
            }
            Ok(())
        })
        .await
    }

    /// Draws a group id no volume of this filesystem holds and the filesystem shows no usage
    /// or limits for.
    async fn allocate_gid(&self, fs: &FsAccess, quota: &QuotaSettings) -> Result<IdReservation> {
        // Every record counts: one that cannot be read may hold a group id, which must not
        // be given to another volume. Such a record stops creation until it is repaired.
        let records = self
            .all_volume_records(fs, Listing::All)
            .await
            .map_err(|e| match e.code() {
                ErrorCode::Internal | ErrorCode::FailedPrecondition => {
                    Error::FailedPrecondition(format!(
                        "cannot tell which quota group ids are taken on {}: {e}. Repair or remove it: a group id it holds could otherwise be given to another volume",
                        fs.host
                    ))
                }
                _ => e,
            })?;
        let used: HashSet<u32> = records.iter().filter_map(|r| r.quota_gid).collect();
        let manager = self.quota_manager(fs, quota);
        let range = IdRange::new(quota.gid_min, quota.gid_max)?;
        let span = u64::from(range.max - range.min) + 1;
        let attempts = (span.saturating_mul(3)).clamp(16, 512) as u32;
        let (manager, used) = (&manager, &used);
        self.ids
            .allocate(range, attempts, |gid| async move {
                if used.contains(&gid) {
                    return Ok(false);
                }
                Ok(!manager.in_use(gid).await?)
            })
            .await
            .map_err(|e| match e {
                Error::ResourceExhausted(m) => Error::ResourceExhausted(format!(
                    "no free quota group id on {} between {} and {}: {m}",
                    fs.host, quota.gid_min, quota.gid_max
                )),
                other => other,
            })
    }

    /// The id CreateVolume gives `request`'s volume: its name below the base path on the
    /// management host. `None` when the request is invalid (the create says why).
    pub(crate) fn planned_volume_id(&self, request: &CreateVolumeRequest) -> Option<VolumeId> {
        let params = VolumeParams::parse(&request.parameters).ok()?;
        let id = new_volume_id(&params, &request.name).ok()?;
        VolumeId::parse(&id.to_string()).ok()
    }

    /// CreateVolume.
    pub(crate) async fn create_volume(
        self: &Arc<Self>,
        request: &CreateVolumeRequest,
    ) -> Result<Volume> {
        let params = VolumeParams::parse(&request.parameters)?;
        let id = new_volume_id(&params, &request.name)?;
        let path = id.path.clone();
        let id_text = id.to_string();
        if id_text.len() > MAX_ID_BYTES {
            return Err(Error::invalid(
                "name",
                format!(
                    "the volume id {id_text} would be longer than the {MAX_ID_BYTES} bytes CSI allows; use a shorter volDirBasePath"
                ),
            ));
        }
        let quota = self.settings.quota_for(&params.host).cloned();
        if quota.is_some() && params.permissions.gid.is_some() {
            return Err(Error::invalid(
                "parameters[permissions/gid]",
                format!(
                    "quotas are enabled on {}: each volume's group is its own quota group id, so the group cannot be chosen",
                    params.host
                ),
            ));
        }
        let source = request.content_source.as_ref().map(|s| match s {
            VolumeContentSource::Snapshot(id) => SourceRecord::Snapshot(id.clone()),
            VolumeContentSource::Volume(id) => SourceRecord::Volume(id.clone()),
        });
        let fs = self.controller_fs(&params.host).await?;
        let store = self.volume_store(&fs, &params.base);
        let key = request.name.clone();
        let existing = {
            let store = store.clone();
            try_blocking(self.fs_timeout(), "read volume record", move || {
                store.get(&key)
            })
            .await?
        };
        let mut _reservation = None;
        let record = match existing {
            Some(rec) => {
                if rec.stripe != params.stripe
                    || rec.permissions != params.permissions
                    || rec.source != source
                {
                    return Err(Error::AlreadyExists(format!(
                        "volume {} exists with other parameters or content source",
                        rec.volume_id
                    )));
                }
                match rec.state {
                    VolumeState::Ready => return rec.to_volume(),
                    VolumeState::Deleting => {
                        return Err(Error::Aborted(format!(
                            "volume {} is being deleted; retry once it is gone",
                            rec.volume_id
                        )));
                    }
                    VolumeState::Creating => {
                        info!(volume_id = %rec.volume_id, "finishing an interrupted creation");
                        rec
                    }
                }
            }
            None => {
                let limit = quota
                    .is_some()
                    .then(|| request.capacity.size_or(DEFAULT_VOLUME_BYTES));
                self.check_source(source.as_ref(), limit).await?;
                let (root, parent) = (fs.root.clone(), params.base.relative().to_string());
                let dir = fs.root.join(path.relative());
                // Anything already there (a directory, a file, a link) is not this driver's:
                // taking it over would let a failed creation remove it.
                let exists = try_blocking(self.fs_timeout(), "stat volume directory", move || {
                    fs_tree::check_no_symlinks(&root, &parent)?;
                    fs_tree::entry_exists(&dir)
                })
                .await?;
                if exists {
                    return Err(Error::AlreadyExists(format!(
                        "{id_text}: something this driver did not create is already there; it is left untouched"
                    )));
                }
                self.remember_base(&fs, &params.base).await?;
                let quota_gid = match &quota {
                    Some(q) => {
                        let reservation = self.allocate_gid(&fs, q).await?;
                        let gid = reservation.id();
                        _reservation = Some(reservation);
                        Some(gid)
                    }
                    None => None,
                };
                let rec = VolumeRecord {
                    volume_id: id_text.clone(),
                    name: request.name.clone(),
                    host: params.host.clone(),
                    base: params.base.to_string(),
                    capacity_bytes: request.capacity.size_or(DEFAULT_VOLUME_BYTES),
                    quota_gid,
                    stripe: params.stripe.clone(),
                    permissions: params.permissions.clone(),
                    source: source.clone(),
                    state: VolumeState::Creating,
                    created_at: now_secs(),
                    delete_requested_at: None,
                };
                self.put_record(&store, &rec).await?;
                rec
            }
        };

        let (fs_access, volume_id) = (fs.clone(), id.clone());
        let making = Making {
            fs,
            id,
            path,
            params,
            quota,
            store,
            record,
            name: request.name.clone(),
        };
        if making.record.source.is_none() {
            return self.make_volume(making).await;
        }
        // Filling from a snapshot or a volume can outlast any caller's deadline: it runs on
        // its own, and a retry waits for it again instead of starting it over.
        let key = fill_key(&id_text);
        if !self.fills.is_running(&key) {
            // What an earlier attempt left is not this attempt's outcome. (Calls for one
            // volume come one at a time: the core holds its lock.)
            let mut failures = self.fill_failures.lock().unwrap_or_else(|e| e.into_inner());
            failures.remove(&key);
        }
        let task = self.clone();
        self.fills.spawn(&key, |mut stop| {
            let key = key.clone();
            async move {
                let made = tokio::select! {
                    made = task.make_volume(making) => made,
                    // DeleteVolume stops it; the deletion removes what it made.
                    () = stop.requested() => return,
                };
                if let Err(e) = made {
                    task.fill_failures
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(key, e);
                }
            }
        });
        let wait = Duration::from_secs(self.settings.content_wait_seconds);
        if !self.fills.wait(&key, wait).await {
            return Err(Error::Aborted(format!(
                "volume {id_text} is still being filled from its content source; retry later"
            )));
        }
        let failure = self
            .fill_failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        if let Some(e) = failure {
            return Err(e);
        }
        match self.volume_record(&fs_access, &volume_id).await? {
            Some(rec) if rec.state == VolumeState::Ready => rec.to_volume(),
            _ => Err(Error::Aborted(format!(
                "volume {id_text} was not finished; retry"
            ))),
        }
    }

    /// Makes the directory of a volume whose record says `Creating`: the directory with its
    /// owner, mode and stripe pattern, its quota group, the content of its source, its
    /// limits; then records it ready. A failure a retry can finish keeps the record; any
    /// other undoes what was made.
    async fn make_volume(self: &Arc<Self>, m: Making) -> Result<Volume> {
        let Making {
            fs,
            id,
            path,
            params,
            quota,
            store,
            mut record,
            name,
        } = m;
        // A retry may have started this just after an earlier making recorded the volume
        // ready: a ready volume is never made (emptied, filled) again.
        let current = {
            let (store, key) = (store.clone(), record.name.clone());
            try_blocking(self.fs_timeout(), "read volume record", move || {
                store.get(&key)
            })
            .await?
        };
        if let Some(ready) = current.filter(|r| r.state == VolumeState::Ready) {
            return ready.to_volume();
        }
        let made = async {
            let perms = &params.permissions;
            let group = record.quota_gid.or(perms.gid);
            let uid = (perms.uid != 0).then_some(perms.uid);
            // A volume filled from a snapshot or another volume stays root's and private
            // until its content is in: the fill writes as root, and nobody may plant a link
            // in the directory for it (or the regrouping) to follow meanwhile.
            let filled = record.source.is_some();
            let (first_mode, first_uid) = if filled {
                (csi_core::fs_paths::FILLING_MODE, None)
            } else {
                (perms.mode, uid)
            };
            // Parents already there (the base path, after the first volume) need no tool run.
            let known = {
                let (root, rel) = (fs.root.clone(), path.relative().to_string());
                try_blocking(self.fs_timeout(), "look up the volume's parents", move || {
                    fs_tree::existing_dirs(&root, &rel)
                })
                .await?
            };
            self.ctl
                .create_dir_all(&fs.target, &path, first_mode, first_uid, group, known)
                .await?;
            self.ctl
                .set_pattern(&fs.target, &path, &params.stripe)
                .await?;
            let dir = fs.root.join(path.relative());
            {
                let (root, rel, dir, mode, nodes) = (
                    fs.root.clone(),
                    path.relative().to_string(),
                    dir.clone(),
                    first_mode,
                    nodes_dir(&fs.root, &params.base, &name),
                );
                let owner_uid = first_uid;
                let owner_gid = group;
                try_blocking(self.fs_timeout(), "prepare volume directory", move || {
                    fs_tree::check_no_symlinks(&root, &rel)?;
                    if !fs_tree::is_real_dir(&dir)? {
                        return Err(Error::Internal(format!(
                            "{} was created with the BeeGFS tool but is not visible through the client mount",
                            dir.display()
                        )));
                    }
                    fs_tree::set_owner(&dir, owner_uid, owner_gid)?;
                    fs_tree::set_dir_mode(&dir, mode)?;
                    std::fs::create_dir_all(&nodes).map_err(|e| Error::io("create directory", &nodes, e))
                })
                .await?;
            }
            if let Some(src) = &record.source {
                self.fill_from_source(src, &dir, record.quota_gid).await?;
                // Content in: the mode and owner the parameters ask for (a restore may have
                // given the directory the archive's), owner first, as at creation.
                let (d, mode) = (dir.clone(), perms.mode);
                try_blocking(self.fs_timeout(), "hand over the filled volume", move || {
                    fs_tree::set_owner(&d, uid, group)?;
                    fs_tree::set_dir_mode(&d, mode)
                })
                .await?;
            }
            // After the mode is set (which would clear its setgid bit): new files take the
            // quota group from the directory.
            if let (Some(gid), Some(q)) = (record.quota_gid, &quota) {
                let quota = self.quota_manager(&fs, q);
                quota.assign(&dir, gid).await?;
                quota
                    .set_limits(gid, &limits_for(q, record.capacity_bytes))
                    .await?;
            }
            Ok::<(), Error>(())
        }
        .await;
        if let Err(e) = made {
            // A retry would finish a creation cut short by a timeout or a busy tool; any
            // other failure is final for the provisioner, so nothing half-made may stay.
            if !matches!(
                e.code(),
                ErrorCode::DeadlineExceeded | ErrorCode::Aborted | ErrorCode::Unavailable
            ) {
                self.roll_back_creation(&fs, &id, &params.base, &record, &store, quota.as_ref())
                    .await;
            }
            return Err(e);
        }
        record.state = VolumeState::Ready;
        self.put_record(&store, &record).await?;
        info!(volume_id = %record.volume_id, quota_gid = ?record.quota_gid, "volume directory created");
        record.to_volume()
    }

    /// Undoes a creation that failed for good: the directory, the quota limits and the
    /// record. Failures here are logged; a later DeleteVolume of the same id finishes the job
    /// from the record, which is removed last.
    async fn roll_back_creation(
        &self,
        fs: &FsAccess,
        id: &BeegfsVolumeId,
        base: &VolumePath,
        record: &VolumeRecord,
        store: &RecordStore<VolumeRecord>,
        quota: Option<&QuotaSettings>,
    ) {
        if let Err(e) = self.remove_volume_data(fs, id, base, &record.name).await {
            warn!(volume_id = %record.volume_id, error = %e, "could not remove the half-made volume directory; its record stays for DeleteVolume");
            return;
        }
        if let (Some(gid), Some(q)) = (record.quota_gid, quota)
            && let Err(e) = self.quota_manager(fs, q).clear(gid).await
        {
            // The record keeps the group id this driver's own until its limits are gone.
            warn!(volume_id = %record.volume_id, gid, error = %e, "could not clear the quota of a half-made volume; its record stays for a retry or DeleteVolume");
            return;
        }
        match self.remove_record(store, record).await {
            Ok(()) => {
                info!(volume_id = %record.volume_id, "half-made volume removed after a failed creation")
            }
            Err(e) => {
                warn!(volume_id = %record.volume_id, error = %e, "could not remove the record of a half-made volume")
            }
        }
    }

    pub(crate) async fn put_record(
        &self,
        store: &RecordStore<VolumeRecord>,
        record: &VolumeRecord,
    ) -> Result<()> {
        let (store, record) = (store.clone(), record.clone());
        try_blocking(self.fs_timeout(), "write volume record", move || {
            store.put(&record.name, &record)
        })
        .await
    }

    /// Removes a volume's record, last of what the volume was.
    async fn remove_record(
        &self,
        store: &RecordStore<VolumeRecord>,
        record: &VolumeRecord,
    ) -> Result<()> {
        let (store, key) = (store.clone(), record.name.clone());
        try_blocking(self.fs_timeout(), "remove volume record", move || {
            store.remove(&key)
        })
        .await
    }

    /// Checks that a content source exists (and a snapshot is ready) before anything is made.
    /// Into a volume whose capacity is enforced (`limit`), a snapshot holding more bytes, or
    /// a volume of ours with a larger capacity, is `OutOfRange`, as CSI asks.
    async fn check_source(&self, source: Option<&SourceRecord>, limit: Option<u64>) -> Result<()> {
        match source {
            None => Ok(()),
            Some(SourceRecord::Snapshot(id)) => {
                let (_, size, _) = self.ready_snapshot_archive(id).await?;
                match limit {
                    Some(capacity) if size > capacity => Err(Error::OutOfRange(format!(
                        "snapshot {id} holds {size} bytes, more than the {capacity} bytes requested"
                    ))),
                    _ => Ok(()),
                }
            }
            Some(SourceRecord::Volume(id)) => {
                let (_, source_capacity) = self.source_volume_dir(id).await?;
                match (limit, source_capacity) {
                    (Some(capacity), Some(size)) if size > capacity => {
                        Err(Error::OutOfRange(format!(
                            "source volume {id} has {size} bytes, more than the {capacity} bytes requested"
                        )))
                    }
                    _ => Ok(()),
                }
            }
        }
    }

    /// The directory of an existing volume to clone, and its capacity when this driver
    /// created it.
    async fn source_volume_dir(&self, id: &str) -> Result<(PathBuf, Option<u64>)> {
        let vid = BeegfsVolumeId::parse(id).map_err(|_| {
            Error::NotFound(format!(
                "source volume {id} is not a BeeGFS volume of this driver"
            ))
        })?;
        let fs = self.controller_fs(&vid.host).await?;
        let dir = fs.root.join(vid.path.relative());
        let (root, rel, check) = (
            fs.root.clone(),
            vid.path.relative().to_string(),
            dir.clone(),
        );
        let exists = try_blocking(self.fs_timeout(), "stat source volume", move || {
            fs_tree::check_no_symlinks(&root, &rel)?;
            fs_tree::is_real_dir(&check)
        })
        .await?;
        if !exists {
            return Err(Error::NotFound(format!(
                "source volume {id} does not exist"
            )));
        }
        let record = self.volume_record(&fs, &vid).await?;
        if let Some(r) = record.as_ref().filter(|r| r.state != VolumeState::Ready) {
            // Being created or deleted: its tree is partial.
            return Err(Error::Unavailable(format!(
                "source volume {id} is not ready (it is {:?}); retry later",
                r.state
            )));
        }
        Ok((dir, record.map(|r| r.capacity_bytes)))
    }

    /// Fills a new volume directory from its source, then gives its content the volume's
    /// quota group.
    async fn fill_from_source(
        &self,
        source: &SourceRecord,
        dir: &std::path::Path,
        gid: Option<u32>,
    ) -> Result<()> {
        // Root's alone again (an attempt that failed after the hand-over gave it away) and
        // empty: what an earlier attempt left (a clone of a source changed since) is not
        // this attempt's content.
        // Bounded as the regrouping is, not as a tool call: a removal still running past its
        // bound would race the next attempt.
        let d = dir.to_path_buf();
        try_blocking(
            FILL_TREE_TIMEOUT,
            "prepare the volume for its fill",
            move || csi_core::fs_paths::make_private_and_empty(&d),
        )
        .await?;
        match source {
            SourceRecord::Snapshot(id) => {
                // Extracted with the tool and checked with the checksum it was made with.
                let (archive, _, options) = self.ready_snapshot_archive(id).await?;
                self.ctx.snapshots.restore(&archive, dir, &options).await?;
            }
            SourceRecord::Volume(id) => {
                let (src, _) = self.source_volume_dir(id).await?;
                let options = self.archive_options();
                self.ctx.snapshots.copy_tree(&src, dir, &options).await?;
            }
        }
        if let Some(gid) = gid {
            let dir = dir.to_path_buf();
            try_blocking(
                FILL_TREE_TIMEOUT,
                "set the quota group of restored content",
                move || fs_tree::regroup_tree(&dir, gid),
            )
            .await?;
        }
        Ok(())
    }

    /// DeleteVolume.
    pub(crate) async fn delete_volume(this: &Arc<Inner>, id: &BeegfsVolumeId) -> Result<()> {
        let id_text = id.to_string();
        // A fill still running writes into the directory about to be removed: it stops first
        // (the record still says Creating; the deletion removes what it made).
        this.fills.stop(&fill_key(&id_text)).await;
        let fs = this.controller_fs(&id.host).await?;
        let Some(mut record) = this.volume_record(&fs, id).await? else {
            let dir = fs.root.join(id.path.relative());
            let (root, rel) = (fs.root.clone(), id.path.relative().to_string());
            let exists = try_blocking(this.fs_timeout(), "stat volume", move || {
                fs_tree::check_no_symlinks(&root, &rel)?;
                fs_tree::is_real_dir(&dir)
            })
            .await?;
            if exists {
                return Err(Error::FailedPrecondition(format!(
                    "volume {id_text} was not created by this driver (a static volume); its data was left in place. Delete the PersistentVolume with reclaim policy Retain"
                )));
            }
            info!(volume_id = %id_text, "volume does not exist: nothing to delete");
            return Ok(());
        };
        if !this.wait_for_cuts(|_, source| source == id_text).await {
            return Err(Error::Aborted(format!(
                "a snapshot of volume {id_text} is being cut; retry when it is done"
            )));
        }
        let base = id.path.parent();
        let name = record.name.clone();
        let store = this.volume_store(&fs, &base);
        // The first request starts the clock of nodeUnstageTimeoutSeconds; the volume stays
        // usable until its data is actually removed.
        if record.delete_requested_at.is_none() {
            record.delete_requested_at = Some(now_secs());
            this.put_record(&store, &record).await?;
        }
        this.wait_for_nodes(&fs, &base, &name, &record).await?;
        if record.state != VolumeState::Deleting {
            record.state = VolumeState::Deleting;
            this.put_record(&store, &record).await?;
        }

        let Some(claim) = DeletionClaim::take(this, &id_text) else {
            return Err(Error::Aborted(format!(
                "volume {id_text} is being deleted; retry later"
            )));
        };
        // Read again under the claim: a deletion that held it until a moment ago may have
        // finished, and its group id may be another volume's by now.
        let Some(record) = this.volume_record(&fs, id).await? else {
            info!(volume_id = %id_text, "volume deleted by an earlier call");
            return Ok(());
        };
        // The removal may outlast the caller (a client that gives up drops this call): it
        // runs in a task of its own, which finishes the deletion and then gives the claim
        // back, whether anyone still waits for it or not.
        let task = {
            let (this, id) = (this.clone(), id.clone());
            tokio::spawn(async move {
                let _claim = claim;
                this.finish_deletion(&fs, &id, &base, &record, &store).await
            })
        };
        task.await
            .map_err(|e| Error::Internal(format!("deleting volume {id_text}: {e}")))?
    }

    /// Removes a volume's data, clears its quota and removes its record, in that order.
    async fn finish_deletion(
        &self,
        fs: &FsAccess,
        id: &BeegfsVolumeId,
        base: &VolumePath,
        record: &VolumeRecord,
        store: &RecordStore<VolumeRecord>,
    ) -> Result<()> {
        self.remove_volume_data(fs, id, base, &record.name).await?;
        if let (Some(gid), Some(q)) = (record.quota_gid, &fs.quota) {
            self.quota_manager(fs, q).clear(gid).await?;
        } else if let Some(gid) = record.quota_gid {
            warn!(volume_id = %record.volume_id, gid, "quotas are no longer configured for this filesystem; the group's limits were left as they are");
        }
        self.remove_record(store, record).await?;
        info!(volume_id = %record.volume_id, "volume deleted");
        Ok(())
    }

    /// Waits, up to the per-call wait, for the nodes still staging the volume to unstage it.
    /// Nodes left after the overall timeout (counted from the first DeleteVolume) are logged
    /// and the deletion goes on; before that, the call answers `Unavailable` to be retried.
    async fn wait_for_nodes(
        &self,
        fs: &FsAccess,
        base: &VolumePath,
        name: &str,
        record: &VolumeRecord,
    ) -> Result<()> {
        let nodes = nodes_dir(&fs.root, base, name);
        let per_call = Duration::from_secs(self.settings.delete_wait_seconds);
        let overall = self.settings.node_unstage_timeout_seconds;
        let started = Instant::now();
        loop {
            let dir = nodes.clone();
            let staged: Vec<String> =
                try_blocking(self.fs_timeout(), "list staging nodes", move || {
                    match std::fs::read_dir(&dir) {
                        Ok(entries) => Ok(entries
                            .filter_map(|e| e.ok())
                            .map(|e| e.file_name().to_string_lossy().into_owned())
                            .collect()),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
                        Err(e) => Err(Error::io("list", &dir, e)),
                    }
                })
                .await?;
            if staged.is_empty() {
                return Ok(());
            }
            let waited =
                now_secs().saturating_sub(record.delete_requested_at.unwrap_or_else(now_secs));
            if overall == 0 || waited >= overall {
                warn!(volume_id = %record.volume_id, nodes = ?staged, waited_secs = waited,
                    "nodes did not unstage the volume within nodeUnstageTimeoutSeconds; deleting it anyway");
                return Ok(());
            }
            let elapsed = started.elapsed();
            if elapsed >= per_call {
                return Err(Error::Unavailable(format!(
                    "volume {} is still staged on node(s) {}; waited {waited}s of {overall}s, retry later",
                    record.volume_id,
                    staged.join(", ")
                )));
            }
            tokio::time::sleep((per_call - elapsed).min(Duration::from_millis(250))).await;
        }
    }

    /// Removes the volume's directory and its node tracking directory. Both paths are
    /// checked first: plain names only, strictly below the base path, no symbolic link on
    /// the way; a check that fails removes nothing.
    async fn remove_volume_data(
        &self,
        fs: &FsAccess,
        id: &BeegfsVolumeId,
        base: &VolumePath,
        name: &str,
    ) -> Result<()> {
        check_name("name", name).map_err(|e| {
            Error::FailedPrecondition(format!(
                "volume {id}: the recorded name cannot be a volume's ({e}); nothing was removed"
            ))
        })?;
        let root = fs.root.clone();
        let dir = fs.root.join(id.path.relative());
        let base_dir = fs.root.join(base.relative());
        let tracking = nodes_dir(&fs.root, base, name)
            .parent()
            .map(std::path::Path::to_path_buf)
            .ok_or_else(|| Error::Internal("the node tracking path has no parent".into()))?;
        let volumes_dir = tracking
            .parent()
            .map(std::path::Path::to_path_buf)
            .ok_or_else(|| Error::Internal("the node tracking path has no parent".into()))?;
        #[cfg(test)]
        let _held = self.removal_gate.lock().await;
        try_blocking(
            Duration::from_secs(3600),
            "delete volume directory",
            move || {
                for (path, below) in [(&dir, &base_dir), (&tracking, &volumes_dir)] {
                    fs_tree::check_below(below, path)?;
                    fs_tree::check_no_symlinks_below(&root, path)?;
                }
                if fs_tree::is_real_dir(&dir)? {
                    fs_tree::remove_tree(&dir)?;
                } else if fs_tree::entry_exists(&dir)? {
                    // The driver made a directory here; whatever replaced it is not its own.
                    warn!(path = %dir.display(), "not a directory, so not the volume this driver made; left in place");
                }
                fs_tree::remove_tree(&tracking)
            },
        )
        .await
    }

    /// ControllerExpandVolume.
    pub(crate) async fn expand_volume(&self, id: &BeegfsVolumeId, bytes: u64) -> Result<u64> {
        let fs = self.controller_fs(&id.host).await?;
        let Some(mut record) = self.volume_record(&fs, id).await? else {
            self.static_volume_info(&fs, id).await?;
            return Err(Error::FailedPrecondition(format!(
                "volume {id} was not created by this driver; its capacity is not managed"
            )));
        };
        if record.state != VolumeState::Ready {
            return Err(Error::Aborted(format!(
                "volume {id} is {:?}; retry later",
                record.state
            )));
        }
        if let (Some(gid), Some(q)) = (record.quota_gid, &fs.quota) {
            self.quota_manager(&fs, q)
                .set_limits(gid, &limits_for(q, bytes))
                .await?;
        }
        record.capacity_bytes = bytes;
        let store = self.volume_store(&fs, &id.path.parent());
        self.put_record(&store, &record).await?;
        info!(volume_id = %id, bytes, quota = record.quota_gid.is_some(), "volume expanded");
        Ok(bytes)
    }

    /// A volume the driver did not create, when its directory exists.
    async fn static_volume_info(&self, fs: &FsAccess, id: &BeegfsVolumeId) -> Result<VolumeInfo> {
        let dir = fs.root.join(id.path.relative());
        let (root, rel) = (fs.root.clone(), id.path.relative().to_string());
        let exists = try_blocking(self.fs_timeout(), "stat volume", move || {
            fs_tree::check_no_symlinks(&root, &rel)?;
            fs_tree::is_real_dir(&dir)
        })
        .await?;
        if !exists {
            return Err(Error::NotFound(format!("volume {id} does not exist")));
        }
        Ok(VolumeInfo {
            volume: Volume {
                id: csi_core::domain::VolumeId::parse(&id.to_string())?,
                capacity_bytes: 0,
                context: Default::default(),
                content_source: None,
                accessible_topology: Vec::new(),
            },
            condition: VolumeCondition::healthy(),
        })
    }

    /// The condition of a recorded volume: its directory is there (and its quota readable
    /// when `check_quota`).
    async fn condition_of(
        &self,
        fs: &FsAccess,
        record: &VolumeRecord,
        check_quota: bool,
    ) -> VolumeCondition {
        let Ok(path) = BeegfsVolumeId::parse(&record.volume_id).map(|i| i.path) else {
            return VolumeCondition::abnormal("the volume record holds an invalid id");
        };
        let dir = fs.root.join(path.relative());
        match try_blocking(self.fs_timeout(), "stat volume", move || {
            fs_tree::is_real_dir(&dir)
        })
        .await
        {
            Ok(true) => {}
            Ok(false) => return VolumeCondition::abnormal("the volume directory is missing"),
            Err(e) => {
                return VolumeCondition::abnormal(format!(
                    "the volume directory cannot be checked: {e}"
                ));
            }
        }
        if check_quota && let (Some(gid), Some(q)) = (record.quota_gid, &fs.quota) {
            match self.quota_manager(fs, q).usage(gid).await {
                Ok(usage) if usage.bytes_limit.is_none() => {
                    return VolumeCondition::abnormal(format!(
                        "the quota limit of group {gid} is missing"
                    ));
                }
                Ok(usage) if usage.bytes_limit.is_some_and(|l| usage.bytes_used > l) => {
                    return VolumeCondition::abnormal(format!(
                        "the volume uses {} bytes, more than its {} byte quota",
                        usage.bytes_used,
                        usage.bytes_limit.unwrap_or(0)
                    ));
                }
                Ok(_) => {}
                Err(e) => {
                    return VolumeCondition::abnormal(format!("the quota cannot be read: {e}"));
                }
            }
        }
        VolumeCondition::healthy()
    }

    /// ControllerGetVolume: the volume and its condition, its quota included.
    pub(crate) async fn get_volume(&self, id: &BeegfsVolumeId) -> Result<VolumeInfo> {
        let fs = self.controller_fs(&id.host).await?;
        match self.created_record(&fs, id).await? {
            Some(record) => Ok(VolumeInfo {
                volume: record.to_volume()?,
                condition: self.condition_of(&fs, &record, true).await,
            }),
            None => self.static_volume_info(&fs, id).await,
        }
    }

    /// The volume from its record, without the condition (whose quota check runs a tool):
    /// what expansion and ValidateVolumeCapabilities need.
    pub(crate) async fn volume(&self, id: &BeegfsVolumeId) -> Result<Volume> {
        let fs = self.controller_fs(&id.host).await?;
        match self.created_record(&fs, id).await? {
            Some(record) => record.to_volume(),
            None => Ok(self.static_volume_info(&fs, id).await?.volume),
        }
    }

    /// The record of a volume this driver created; `None` for one it did not, `NotFound`
    /// while it is still being created.
    async fn created_record(
        &self,
        fs: &FsAccess,
        id: &BeegfsVolumeId,
    ) -> Result<Option<VolumeRecord>> {
        match self.volume_record(fs, id).await? {
            Some(record) if record.state == VolumeState::Creating => Err(Error::NotFound(format!(
                "volume {id} is still being created"
            ))),
            record => Ok(record),
        }
    }

    /// ListVolumes: the volumes this driver created on every filesystem it knows. A
    /// filesystem that cannot be reached, and a record that cannot be read, are skipped
    /// with a warning.
    pub(crate) async fn list_volumes(&self) -> Result<Vec<VolumeInfo>> {
        let mut out = Vec::new();
        for host in self.known_hosts()? {
            let fs = match self.controller_fs(&host).await {
                Ok(fs) => fs,
                Err(e) => {
                    warn!(host = %host, error = %e, "filesystem unreachable; its volumes are not listed");
                    continue;
                }
            };
            for record in self.all_volume_records(&fs, Listing::Readable).await? {
                if record.state == VolumeState::Creating {
                    continue;
                }
                out.push(VolumeInfo {
                    volume: record.to_volume()?,
                    condition: self.condition_of(&fs, &record, false).await,
                });
            }
        }
        Ok(out)
    }

    /// GetCapacity: free space of the filesystem not promised to quota-limited volumes.
    /// Without parameters: the largest such space of the known, reachable filesystems.
    pub(crate) async fn available_capacity(&self, parameters: &Parameters) -> Result<u64> {
        parameters.reject_unknown("parameters", crate::params::KNOWN_KEYS)?;
        let Some(host) = parameters.get(crate::params::SYS_MGMTD_HOST) else {
            if !parameters.as_map().is_empty() {
                return Err(Error::invalid(
                    &format!("parameters[{}]", crate::params::SYS_MGMTD_HOST),
                    "is required to name the filesystem",
                ));
            }
            let mut largest = 0;
            for host in self.known_hosts()? {
                match self.host_capacity(&host).await {
                    Ok(bytes) => largest = largest.max(bytes),
                    Err(e) => {
                        warn!(host = %host, error = %e, "filesystem unreachable; not counted in GetCapacity")
                    }
                }
            }
            return Ok(largest);
        };
        crate::config::check_host(host.trim()).map_err(|e| {
            Error::invalid(&format!("parameters[{}]", crate::params::SYS_MGMTD_HOST), e)
        })?;
        self.host_capacity(host.trim()).await
    }

    async fn host_capacity(&self, host: &str) -> Result<u64> {
        let fs = self.controller_fs(host).await?;
        let root = fs.root.clone();
        let space = try_blocking(self.fs_timeout(), "statvfs", move || {
            fs_tree::fs_space(&root)
        })
        .await?;
        if fs.quota.is_none() {
            return Ok(space.available);
        }
        let promised: u64 = self
            .all_volume_records(&fs, Listing::Readable)
            .await?
            .iter()
            .filter(|r| r.quota_gid.is_some())
            .map(|r| r.capacity_bytes)
            .fold(0u64, u64::saturating_add);
        Ok(space.total.saturating_sub(promised).min(space.available))
    }

    /// The archive of a snapshot that is ready to restore, and its size in bytes.
    /// The archive of a ready snapshot, its size, and how it was written (for snapshots of
    /// earlier versions, which did not record it: the current settings).
    pub(crate) async fn ready_snapshot_archive(
        &self,
        id: &str,
    ) -> Result<(PathBuf, u64, ArchiveOptions)> {
        let sid = BeegfsSnapshotId::parse(id).map_err(|_| {
            Error::NotFound(format!(
                "snapshot {id} is not a BeeGFS snapshot of this driver"
            ))
        })?;
        let fs = self.controller_fs(&sid.host).await?;
        let sid_text = sid.to_string();
        // A restore right after CreateSnapshot waits a little for the archive.
        self.wait_for_cuts(|snapshot, _| snapshot == sid_text).await;
        let record = self.snapshot_record(&fs, &sid).await?;
        match record {
            None => Err(Error::NotFound(format!("snapshot {id} does not exist"))),
            Some(r) if !r.ready => Err(Error::Unavailable(format!(
                "snapshot {id} is not ready yet"
            ))),
            Some(r) => Ok((
                crate::records::snapshot_archive(&fs.root, &sid.base, &sid.name),
                r.size_bytes,
                r.tool
                    .as_ref()
                    .map_or_else(|| self.archive_options(), ToolRecord::options),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use csi_core::ErrorCode;

    #[test]
    fn names_must_be_plain_directory_names() {
        for bad in ["", ".", "..", ".hidden", "a/b", "a\0b", &"x".repeat(201)] {
            assert_eq!(
                check_name("name", bad).unwrap_err().code(),
                ErrorCode::InvalidArgument,
                "{bad:?}"
            );
        }
        check_name("name", "pvc-7621fab2-1b2c").unwrap();
    }

    #[test]
    fn limits_follow_capacity() {
        let q = QuotaSettings {
            sys_mgmtd_host: "h".into(),
            enabled: true,
            gid_min: 1,
            gid_max: 2,
            storage_pool: 1,
            inodes_per_gib: Some(1000),
        };
        let l = limits_for(&q, 3 * GIB + 1);
        assert_eq!(l.bytes_hard, Some(3 * GIB + 1));
        assert_eq!(l.inodes_hard, Some(4000));
        let none = limits_for(
            &QuotaSettings {
                inodes_per_gib: None,
                ..q
            },
            GIB,
        );
        assert_eq!(none.inodes_hard, None);
    }
}
