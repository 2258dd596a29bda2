//! Snapshots: archives of a volume directory, cut in the background by the core's snapshot
//! engine (`tar` or `dtar`), stored in `snapshotFolder` on the volume's filesystem.
//!
//! CreateSnapshot writes a record (state `cutting`), starts the archive in a background task
//! and answers `ready_to_use: false` (after waiting `snapshotWaitSeconds`, 0 by default).
//! Later calls answer from the record: `ready` with the archive's size, or the failure. A
//! `cutting` record with no task behind it (the controller restarted) is cut again.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use csi_core::domain::{Secrets, Snapshot, SnapshotId};
use csi_core::ports::{ArchiveOptions, CreateSnapshotRequest};
use csi_core::{Error, Result};
use tracing::{info, warn};

use crate::backend::{Inner, Target};
use crate::config::LustreEntry;
use crate::parameters::{SnapshotParams, VolumeParams};
use crate::records::{
    LocationRecord, RECORD_VERSION, SnapshotRecord, SnapshotState, ToolRecord, VolumeState, now,
};
use crate::volume_dirs::{self, DirState};
use crate::volume_id::{Location, LustreSnapshotId, VolumePath, check_name};

/// Key of the background task cutting snapshot `name` of `entry`.
pub(crate) fn cut_key(entry: &str, name: &str) -> String {
    format!("cut:{entry}:{name}")
}

impl Inner {
    fn snapshot_of(rec: &SnapshotRecord) -> Result<Snapshot> {
        Ok(Snapshot {
            id: SnapshotId::parse(&rec.snapshot_id)?,
            source_volume_id: rec.source_volume_id.clone(),
            creation_time: rec.creation_time(),
            size_bytes: if rec.state == SnapshotState::Ready {
                rec.size_bytes
            } else {
                0
            },
            ready_to_use: rec.state == SnapshotState::Ready,
        })
    }

    fn snapshot_target(&self, entry: &LustreEntry, rec: &SnapshotRecord) -> Target {
        let location = rec.location.as_ref().map(Location::from);
        Target::at(entry, location.as_ref())
    }

    /// CreateSnapshot.
    pub(crate) async fn create_snapshot(
        self: &Arc<Self>,
        req: &CreateSnapshotRequest,
    ) -> Result<Snapshot> {
        let params = SnapshotParams::parse(req.parameters.as_map())?;
        check_name("name", &req.name)?;
        let source_id = req.source_volume_id.as_str();
        let handle = self.handle(source_id)?;
        let entry = self.entry(&handle.entry)?.clone();
        let snapshot_id = LustreSnapshotId::new(&entry.name, &req.name)?;
        let mut secrets = VolumeParams::default();
        secrets.apply_secrets(&req.secrets)?;
        let mgmt = secrets.management_ip.clone();
        self.mount_controller(&Target::of_entry(&entry), mgmt.as_ref())
            .await?;
        let stores = self.stores(&entry);

        if let Some(rec) = stores.snapshots.get(&req.name)? {
            if rec.source_volume_id != source_id {
                return Err(Error::AlreadyExists(format!(
                    "snapshot {} exists and was taken of volume {}, not {source_id}",
                    req.name, rec.source_volume_id
                )));
            }
            return self.report_snapshot(&entry, rec).await;
        }

        let source_rec = stores.volume_for(&handle.dir, source_id)?;
        if let Some(r) = &source_rec
            && r.state != VolumeState::Ready
        {
            return Err(Error::Unavailable(format!(
                "volume {source_id} is not ready yet"
            )));
        }
        let location = match &source_rec {
            Some(r) => r.location.as_ref().map(Location::from),
            None => handle.location.clone(),
        };
        let target = Target::at(&entry, location.as_ref());
        self.mount_controller(&target, mgmt.as_ref()).await?;
        let source_dir = target.path(&handle.dir);
        let d = source_dir.clone();
        if self
            .fs(format!("stat {}", source_dir.display()), move || {
                volume_dirs::dir_state(&d)
            })
            .await?
            != DirState::Directory
        {
            return Err(Error::NotFound(format!(
                "source volume {source_id} does not exist"
            )));
        }
        let folder = match &params.folder {
            Some(f) => f.clone(),
            None => VolumePath::parse(&format!("{}/snapshots", self.settings.metadata_dir))
                .map_err(Error::Internal)?,
        };
        let folder_path = folder.under(&target.mount_point);
        self.fs(format!("create {}", folder_path.display()), move || {
            volume_dirs::ensure_private_dir(&folder_path)
        })
        .await?;
        let options = params.archive_options(&self.settings);
        let (created_unix, created_nanos) = now();
        let rec = SnapshotRecord {
            version: RECORD_VERSION,
            name: req.name.clone(),
            snapshot_id: snapshot_id.to_string(),
            entry: entry.name.clone(),
            source_volume_id: source_id.to_string(),
            source_dir: handle.dir.to_string(),
            location: location.as_ref().map(LocationRecord::from),
            archive: format!("{folder}/{}.tar", req.name),
            tool: ToolRecord::from(&options),
            state: SnapshotState::Cutting,
            size_bytes: 0,
            md5: None,
            error: None,
            created_unix,
            created_nanos,
        };
        stores.snapshots.put(&rec.name, &rec)?;
        info!(snapshot_id = %rec.snapshot_id, source = %source_id, "snapshot started");
        self.start_cut(&entry, &rec);
        self.wait_for_cut(&entry, &rec.name).await
    }

    /// Answers from the record: ready, still cutting (restarted when no task runs), failed.
    async fn report_snapshot(
        self: &Arc<Self>,
        entry: &LustreEntry,
        rec: SnapshotRecord,
    ) -> Result<Snapshot> {
        match rec.state {
            SnapshotState::Ready => Self::snapshot_of(&rec),
            SnapshotState::Failed => Err(Error::Internal(format!(
                "snapshot {} could not be written: {}; delete it and take it again",
                rec.name,
                rec.error.as_deref().unwrap_or("unknown error")
            ))),
            SnapshotState::Cutting => {
                if !self.tasks.is_running(&cut_key(&entry.name, &rec.name)) {
                    self.mount_controller(&self.snapshot_target(entry, &rec), None)
                        .await?;
                    warn!(snapshot = %rec.name, "snapshot was interrupted; cutting it again");
                    self.start_cut(entry, &rec);
                }
                self.wait_for_cut(entry, &rec.name).await
            }
        }
    }

    async fn wait_for_cut(self: &Arc<Self>, entry: &LustreEntry, name: &str) -> Result<Snapshot> {
        self.tasks
            .wait(
                &cut_key(&entry.name, name),
                Duration::from_secs(self.settings.snapshot_wait_seconds),
            )
            .await;
        let rec = self
            .stores(entry)
            .snapshots
            .get(name)?
            .ok_or_else(|| Error::Aborted(format!("snapshot {name} was deleted meanwhile")))?;
        match rec.state {
            SnapshotState::Failed => Err(Error::Internal(format!(
                "snapshot {} could not be written: {}",
                rec.name,
                rec.error.as_deref().unwrap_or("unknown error")
            ))),
            _ => Self::snapshot_of(&rec),
        }
    }

    /// Starts the background archive of `rec`.
    fn start_cut(self: &Arc<Self>, entry: &LustreEntry, rec: &SnapshotRecord) {
        let target = self.snapshot_target(entry, rec);
        let (Ok(source), Ok(archive)) = (
            VolumePath::parse(&rec.source_dir),
            VolumePath::parse(&rec.archive),
        ) else {
            warn!(snapshot = %rec.name, "snapshot record holds an invalid path; not cut");
            return;
        };
        let source = source.under(&target.mount_point);
        let archive = archive.under(&target.mount_point);
        let options = rec.tool.options();
        let inner = self.clone();
        let (entry, name) = (entry.clone(), rec.name.clone());
        self.tasks.spawn(&cut_key(&entry.name, &name), async move {
            inner.run_cut(entry, name, source, archive, options).await;
        });
    }

    async fn run_cut(
        self: Arc<Self>,
        entry: LustreEntry,
        name: String,
        source: PathBuf,
        archive: PathBuf,
        options: ArchiveOptions,
    ) {
        let engine = self.ctx.snapshots.clone();
        let result = match tokio::time::timeout(
            self.settings.archive_timeout(),
            engine.create(&source, &archive, &options),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(Error::DeadlineExceeded(format!(
                "the archive took longer than {}s",
                self.settings.archive_timeout_seconds
            ))),
        };
        let stores = self.stores(&entry);
        match stores.snapshots.get(&name) {
            Ok(Some(mut rec)) if rec.state == SnapshotState::Cutting => {
                match result {
                    Ok(info) => {
                        rec.state = SnapshotState::Ready;
                        rec.size_bytes = info.size_bytes;
                        rec.md5 = info.md5;
                        info!(snapshot = %name, size = rec.size_bytes, "snapshot ready");
                    }
                    Err(e) => {
                        warn!(snapshot = %name, error = %e, "snapshot failed");
                        rec.state = SnapshotState::Failed;
                        rec.error = Some(e.to_string());
                    }
                }
                if let Err(e) = stores.snapshots.put(&name, &rec) {
                    warn!(snapshot = %name, error = %e, "snapshot result not recorded");
                }
            }
            _ => {
                // Deleted while it was cut: remove what was written.
                if let Err(e) = engine.delete(&archive).await {
                    warn!(archive = %archive.display(), error = %e, "archive of a deleted snapshot left");
                }
            }
        }
    }

    /// DeleteSnapshot: stops a running cut, removes the archive and the record.
    pub(crate) async fn delete_snapshot(
        self: &Arc<Self>,
        id: &SnapshotId,
        secrets: &Secrets,
    ) -> Result<()> {
        let sid = LustreSnapshotId::parse(id.as_str(), &self.config)
            .unwrap_or_else(|| Err(Error::NotFound(format!("{id} is not a Lustre snapshot id"))))?;
        let entry = self.entry(&sid.entry)?.clone();
        let mut params = VolumeParams::default();
        params.apply_secrets(secrets)?;
        self.mount_controller(&Target::of_entry(&entry), params.management_ip.as_ref())
            .await?;
        let stores = self.stores(&entry);
        let Some(rec) = stores.snapshots.get(&sid.name)? else {
            return Ok(());
        };
        if rec.snapshot_id != id.as_str() {
            return Ok(());
        }
        self.tasks.abort(&cut_key(&entry.name, &rec.name)).await;
        let target = self.snapshot_target(&entry, &rec);
        self.mount_controller(&target, params.management_ip.as_ref())
            .await?;
        let archive = VolumePath::parse(&rec.archive)
            .map_err(Error::Internal)?
            .under(&target.mount_point);
        self.ctx.snapshots.delete(&archive).await?;
        stores.snapshots.remove(&rec.name)?;
        info!(snapshot_id = %id, "snapshot deleted");
        Ok(())
    }

    /// ListSnapshots: every snapshot of every entry; interrupted cuts are restarted.
    pub(crate) async fn list_snapshots(self: &Arc<Self>) -> Result<Vec<Snapshot>> {
        let mut out = Vec::new();
        for entry in self.config.entries.values() {
            self.mount_controller(&Target::of_entry(entry), None)
                .await?;
            for (_, rec) in self.stores(entry).snapshots.list()? {
                if rec.entry != entry.name {
                    continue;
                }
                if rec.state == SnapshotState::Cutting
                    && !self.tasks.is_running(&cut_key(&entry.name, &rec.name))
                {
                    match self
                        .mount_controller(&self.snapshot_target(entry, &rec), None)
                        .await
                    {
                        Ok(()) => self.start_cut(entry, &rec),
                        Err(e) => {
                            warn!(snapshot = %rec.name, error = %e, "interrupted snapshot not restarted")
                        }
                    }
                }
                out.push(Self::snapshot_of(&rec)?);
            }
        }
        Ok(out)
    }
}
