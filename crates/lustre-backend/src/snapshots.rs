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
use csi_core::{Error, ErrorCode, Result};
use tracing::{info, warn};

use crate::backend::{Inner, Target};
use crate::config::LustreEntry;
use crate::parameters::{SnapshotParams, VolumeParams};
use crate::records::{
    LocationRecord, RECORD_VERSION, SnapshotRecord, SnapshotState, ToolRecord, VolumeState, now,
};
use crate::volume_dirs;
use crate::volume_id::{Location, LustreSnapshotId, VolumePath, check_name};
use csi_core::tasks::StopSignal;

/// Key of the background task cutting snapshot `name` of `entry`.
pub(crate) fn cut_key(entry: &str, name: &str) -> String {
    format!("cut:{entry}:{name}")
}

impl Inner {
    /// Refuses a `snapshotFolder` where archives would not be safe: in the metadata
    /// directory anywhere but its `snapshots` folder (the trash there is purged), or in a
    /// volume of this driver (its pods could read other volumes' archives, its deletion
    /// would take them).
    async fn check_snapshot_folder(
        &self,
        folder: &VolumePath,
        stores: &crate::records::Stores,
    ) -> Result<()> {
        let parts = folder.components();
        let bad = |why: String| Err(Error::invalid("parameters[snapshotFolder]", why));
        if parts.first() == Some(&self.settings.metadata_dir) {
            if parts.get(1).map(String::as_str) != Some("snapshots") {
                return bad(format!(
                    "{folder} is in the driver's metadata directory; use {}/snapshots or a folder of your own",
                    self.settings.metadata_dir
                ));
            }
            return Ok(());
        }
        if let Some(first) = parts.first()
            && stores.volume(first).await?.is_some()
        {
            return bad(format!("{folder} is in volume {first}'s directory"));
        }
        Ok(())
    }

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

    pub(crate) fn snapshot_target(&self, entry: &LustreEntry, rec: &SnapshotRecord) -> Target {
        let location = rec.location.as_ref().map(Location::from);
        Target::at(entry, location.as_ref())
    }

    /// The id CreateSnapshot gives `req`'s snapshot: its source's entry and its name.
    pub(crate) fn planned_snapshot_id(&self, req: &CreateSnapshotRequest) -> Option<SnapshotId> {
        let handle = self.handle(req.source_volume_id.as_str()).ok()?;
        let id = LustreSnapshotId::new(&handle.entry, &req.name).ok()?;
        SnapshotId::parse(&id.to_string()).ok()
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

        if let Some(rec) = stores.snapshot(&req.name).await? {
            if rec.source_volume_id != source_id {
                return Err(Error::AlreadyExists(format!(
                    "snapshot {} exists and was taken of volume {}, not {source_id}",
                    req.name, rec.source_volume_id
                )));
            }
            return self.report_snapshot(&entry, rec).await;
        }

        let source_rec = stores.volume_for(&handle.dir, source_id).await?;
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
        // Through no link on the way: a static volume's path may lie where users write, and
        // a link in its middle would archive another volume's data.
        let (root, d) = (target.mount_point.clone(), source_dir.clone());
        self.fs(format!("resolve {}", source_dir.display()), move || {
            volume_dirs::resolve_inside(&root, &d)
        })
        .await
        .map_err(|e| match e.code() {
            ErrorCode::NotFound => {
                Error::NotFound(format!("source volume {source_id} does not exist"))
            }
            _ => e,
        })?;
        let folder = match &params.folder {
            Some(f) => {
                self.check_snapshot_folder(f, &stores).await?;
                f.clone()
            }
            None => VolumePath::parse(&format!("{}/snapshots", self.settings.metadata_dir))
                .map_err(Error::Internal)?,
        };
        let folder_path = folder.under(&target.mount_point);
        let root = target.mount_point.clone();
        self.fs(format!("create {}", folder_path.display()), move || {
            volume_dirs::ensure_snapshot_folder(&root, &folder_path)
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
            checksum: None,
            error: None,
            created_unix,
            created_nanos,
        };
        stores.put_snapshot(&rec).await?;
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
            .snapshot(name)
            .await?
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
    pub(crate) fn start_cut(self: &Arc<Self>, entry: &LustreEntry, rec: &SnapshotRecord) {
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
        self.tasks
            .spawn(&cut_key(&entry.name, &name), |stop| async move {
                inner
                    .run_cut(entry, name, source, archive, options, stop)
                    .await;
            });
    }

    async fn run_cut(
        self: Arc<Self>,
        entry: LustreEntry,
        name: String,
        source: PathBuf,
        archive: PathBuf,
        options: ArchiveOptions,
        mut stop: StopSignal,
    ) {
        let engine = self.ctx.snapshots.clone();
        let cut = tokio::time::timeout(
            self.settings.archive_timeout(),
            engine.create(&source, &archive, &options),
        );
        let result = tokio::select! {
            result = cut => match result {
                Ok(r) => r,
                Err(_) => Err(Error::DeadlineExceeded(format!(
                    "the archive took longer than {}s",
                    self.settings.archive_timeout_seconds
                ))),
            },
            // DeleteSnapshot stops the cut, waits for this task, then removes the archive
            // and the record itself: nothing more may be written here.
            () = stop.requested() => {
                info!(snapshot = %name, "snapshot cut stopped");
                return;
            }
        };
        let stores = self.stores(&entry);
        match stores.snapshot(&name).await {
            Ok(Some(mut rec)) if rec.state == SnapshotState::Cutting => {
                match result {
                    Ok(info) => {
                        rec.state = SnapshotState::Ready;
                        rec.size_bytes = info.size_bytes;
                        rec.checksum = info.checksum.map(|c| c.hex);
                        info!(snapshot = %name, size = rec.size_bytes, "snapshot ready");
                    }
                    Err(e) => {
                        warn!(snapshot = %name, error = %e, "snapshot failed");
                        rec.state = SnapshotState::Failed;
                        rec.error = Some(e.to_string());
                    }
                }
                if let Err(e) = stores.put_snapshot(&rec).await {
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
        let Some(rec) = stores.snapshot(&sid.name).await? else {
            return Ok(());
        };
        if rec.snapshot_id != id.as_str() {
            return Ok(());
        }
        self.tasks.stop(&cut_key(&entry.name, &rec.name)).await;
        let target = self.snapshot_target(&entry, &rec);
        self.mount_controller(&target, params.management_ip.as_ref())
            .await?;
        let archive = VolumePath::parse(&rec.archive)
            .map_err(Error::Internal)?
            .under(&target.mount_point);
        self.ctx.snapshots.delete(&archive).await?;
        stores.remove_snapshot(&rec.name).await?;
        info!(snapshot_id = %id, "snapshot deleted");
        Ok(())
    }

    /// ListSnapshots: every snapshot of every entry; interrupted cuts are restarted.
    pub(crate) async fn list_snapshots(self: &Arc<Self>) -> Result<Vec<Snapshot>> {
        let mut out = Vec::new();
        for entry in self.config.entries.values() {
            self.mount_controller(&Target::of_entry(entry), None)
                .await?;
            for (_, rec) in self.stores(entry).snapshot_list().await? {
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

#[cfg(test)]
mod tests {
    use crate::test_support::*;
    use csi_core::ErrorCode;
    use csi_core::domain::{GIB, Parameters, Secrets, SnapshotId, VolumeContentSource, VolumeId};
    use csi_core::ports::{CreateSnapshotRequest, FilesystemBackend};
    use std::collections::BTreeMap;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    fn snap_request(name: &str, source: &str, params: &[(&str, &str)]) -> CreateSnapshotRequest {
        CreateSnapshotRequest {
            name: name.into(),
            source_volume_id: VolumeId::parse(source).unwrap(),
            parameters: Parameters::new(
                params
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
            ),
            secrets: Secrets::default(),
        }
    }

    async fn until_ready(h: &Harness, req: &CreateSnapshotRequest) -> csi_core::domain::Snapshot {
        for _ in 0..200 {
            let s = h.backend.create_snapshot(req).await.unwrap();
            if s.ready_to_use {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("snapshot never became ready");
    }

    fn cuts(h: &Harness) -> usize {
        h.engine
            .calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.starts_with("create "))
            .count()
    }

    #[tokio::test]
    async fn a_snapshot_is_cut_in_the_background_then_reported_ready() {
        let h = Harness::controller(ONE);
        let vol = h
            .backend
            .create_volume(&create_request("pvc-1", &[], GIB as i64))
            .await
            .unwrap();
        std::fs::write(h.fs("exa1").join("pvc-1/a"), b"x").unwrap();
        h.engine.set_open(false);
        let req = snap_request("snap-1", vol.id.as_str(), &[]);
        let first = h.backend.create_snapshot(&req).await.unwrap();
        assert_eq!(h.backend.planned_snapshot_id(&req), Some(first.id.clone()));
        assert_eq!(first.id.as_str(), "exa1:snapshot:snap-1");
        assert!(!first.ready_to_use);
        assert_eq!(first.size_bytes, 0);
        assert_eq!(first.source_volume_id, "exa1:/pvc-1");
        let again = h.backend.create_snapshot(&req).await.unwrap();
        assert!(!again.ready_to_use);
        assert_eq!(again.creation_time, first.creation_time);
        assert_eq!(cuts(&h), 1, "a running cut is not started twice");
        let listed = h.backend.list_snapshots().await.unwrap();
        assert_eq!((listed.len(), listed[0].ready_to_use), (1, false));
        h.engine.set_open(true);
        let ready = until_ready(&h, &req).await;
        assert_eq!(ready.size_bytes, 1, "the fake archive lists one file");
        assert!(h.fs("exa1").join(".pfs-csi/snapshots/snap-1.tar").is_file());
        assert!(h.backend.list_snapshots().await.unwrap()[0].ready_to_use);
        // The same name from another volume is a conflict.
        let other = h
            .backend
            .create_volume(&create_request("pvc-2", &[], GIB as i64))
            .await
            .unwrap();
        let err = h
            .backend
            .create_snapshot(&snap_request("snap-1", other.id.as_str(), &[]))
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::AlreadyExists);
        // Restore it.
        let restored = h
            .backend
            .create_volume(&with_source(
                create_request("pvc-r", &[], GIB as i64),
                VolumeContentSource::Snapshot(ready.id.to_string()),
            ))
            .await
            .unwrap();
        assert_eq!(
            restored.content_source,
            Some(VolumeContentSource::Snapshot("exa1:snapshot:snap-1".into()))
        );
        assert!(h.fs("exa1").join("pvc-r/a").is_file());
    }

    #[tokio::test]
    async fn a_failed_cut_is_recorded_and_reported() {
        let h = Harness::controller(ONE);
        let vol = h
            .backend
            .create_volume(&create_request("pvc-1", &[], GIB as i64))
            .await
            .unwrap();
        h.engine.fail_next.store(true, Ordering::SeqCst);
        let req = snap_request("snap-f", vol.id.as_str(), &[]);
        let mut last = Ok(());
        for _ in 0..200 {
            match h.backend.create_snapshot(&req).await {
                Ok(s) => assert!(!s.ready_to_use),
                Err(e) => {
                    last = Err(e);
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let err = last.unwrap_err();
        assert_eq!(err.code(), ErrorCode::Internal);
        assert!(err.to_string().contains("disk on fire"), "{err}");
        let rec: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(h.fs("exa1").join(".pfs-csi/snapshots/snap-f.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(rec["state"], "failed");
        // Deleting it clears the way for a new one.
        h.backend
            .delete_snapshot(
                &SnapshotId::parse("exa1:snapshot:snap-f").unwrap(),
                &Secrets::default(),
            )
            .await
            .unwrap();
        until_ready(&h, &req).await;
    }

    #[tokio::test]
    async fn an_interrupted_cut_is_restarted_after_a_restart() {
        let mut h = Harness::controller(ONE);
        let vol = h
            .backend
            .create_volume(&create_request("pvc-1", &[], GIB as i64))
            .await
            .unwrap();
        h.engine.set_open(false);
        let req = snap_request(
            "snap-r",
            vol.id.as_str(),
            &[
                ("snapshotUtility", "dtar"),
                ("dtarPath", "/opt/dtar"),
                ("snapshotFolder", "csi-snapshots"),
                ("snapshotMd5Verify", "true"),
            ],
        );
        assert!(!h.backend.create_snapshot(&req).await.unwrap().ready_to_use);
        // The process dies: its task is gone, the record still says cutting.
        h.backend
            .inner
            .tasks
            .abort(&super::cut_key("exa1", "snap-r"))
            .await;
        h.restart();
        assert_eq!(cuts(&h), 1);
        h.engine.set_open(true);
        assert_eq!(h.backend.list_snapshots().await.unwrap().len(), 1);
        let ready = until_ready(&h, &req).await;
        assert!(ready.ready_to_use);
        assert_eq!(cuts(&h), 2, "the cut was restarted once");
        let calls = h.engine.calls.lock().unwrap().clone();
        assert!(
            calls[1].contains("csi-snapshots/snap-r.tar")
                && calls[1].contains("Dtar(\"/opt/dtar\")"),
            "{calls:?}"
        );
        let rec: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(h.fs("exa1").join(".pfs-csi/snapshots/snap-r.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(rec["checksum"], "0".repeat(64));
        assert_eq!(rec["tool"]["checksum"], "xxh128");
        assert_eq!(rec["tool"]["verify"], true);
    }

    #[tokio::test]
    async fn deleting_stops_a_running_cut_and_protects_its_source() {
        let h = Harness::controller(ONE);
        let vol = h
            .backend
            .create_volume(&create_request("pvc-1", &[], GIB as i64))
            .await
            .unwrap();
        h.engine.set_open(false);
        let snap = h
            .backend
            .create_snapshot(&snap_request("snap-d", vol.id.as_str(), &[]))
            .await
            .unwrap();
        let err = h
            .backend
            .delete_volume(&vol.id, &Secrets::default())
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::Aborted);
        let err = h
            .backend
            .create_volume(&with_source(
                create_request("pvc-r", &[], GIB as i64),
                VolumeContentSource::Snapshot(snap.id.to_string()),
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::Unavailable);
        h.backend
            .delete_snapshot(&snap.id, &Secrets::default())
            .await
            .unwrap();
        h.backend
            .delete_snapshot(&snap.id, &Secrets::default())
            .await
            .unwrap();
        assert!(h.backend.list_snapshots().await.unwrap().is_empty());
        assert!(!h.fs("exa1").join(".pfs-csi/snapshots/snap-d.tar").exists());
        h.backend
            .delete_volume(&vol.id, &Secrets::default())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_restore_or_delete_waits_for_a_snapshot_taken_a_moment_ago() {
        let h = Harness::controller(ONE);
        let vol = h
            .backend
            .create_volume(&create_request("pvc-1", &[], GIB as i64))
            .await
            .unwrap();
        std::fs::write(h.fs("exa1").join("pvc-1/a"), b"x").unwrap();
        h.engine.set_open(false);
        let snap = h
            .backend
            .create_snapshot(&snap_request("snap-w", vol.id.as_str(), &[]))
            .await
            .unwrap();
        assert!(!snap.ready_to_use);
        let engine = h.engine.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            engine.set_open(true);
        });
        let restored = h
            .backend
            .create_volume(&with_source(
                create_request("pvc-r", &[], GIB as i64),
                VolumeContentSource::Snapshot(snap.id.to_string()),
            ))
            .await
            .unwrap();
        assert!(h.fs("exa1").join("pvc-r/a").is_file());
        h.engine.set_open(false);
        h.backend
            .create_snapshot(&snap_request("snap-v", restored.id.as_str(), &[]))
            .await
            .unwrap();
        let engine = h.engine.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            engine.set_open(true);
        });
        h.backend
            .delete_volume(&restored.id, &Secrets::default())
            .await
            .unwrap();
        assert!(!h.fs("exa1").join("pvc-r").exists());
    }

    #[tokio::test]
    async fn bad_snapshot_requests_are_refused() {
        let h = Harness::controller(ONE);
        let vol = h
            .backend
            .create_volume(&create_request("pvc-1", &[], GIB as i64))
            .await
            .unwrap();
        for (params, named) in [
            (
                vec![("snapshotUtility", "zip")],
                "parameters[snapshotUtility]",
            ),
            (
                vec![("snapshotFolder", "../up")],
                "parameters[snapshotFolder]",
            ),
            (
                vec![("snapshotFolder", ".pfs-csi/trash")],
                "metadata directory",
            ),
            (vec![("snapshotFolder", "pvc-1/bak")], "volume pvc-1"),
            (vec![("projectId", "1")], "StorageClass parameter"),
        ] {
            let err = h
                .backend
                .create_snapshot(&snap_request("s", vol.id.as_str(), &params))
                .await
                .unwrap_err();
            assert_eq!(err.code(), ErrorCode::InvalidArgument);
            assert!(err.to_string().contains(named), "{err}");
        }
        let err = h
            .backend
            .create_snapshot(&snap_request("s", "exa1:/missing", &[]))
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::NotFound);
        // A static volume reached through a link in the middle of its path is not archived.
        std::fs::create_dir_all(h.fs("exa1").join("bob/data")).unwrap();
        std::fs::create_dir_all(h.fs("exa1").join("alice")).unwrap();
        std::os::unix::fs::symlink("../bob", h.fs("exa1").join("alice/envs")).unwrap();
        let err = h
            .backend
            .create_snapshot(&snap_request("s", "exa1:/alice/envs/data", &[]))
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::FailedPrecondition, "{err}");
        assert!(err.to_string().contains("symbolic link"), "{err}");
        // Deleting a snapshot that never existed is fine.
        h.backend
            .delete_snapshot(
                &SnapshotId::parse("exa1:snapshot:never").unwrap(),
                &Secrets::default(),
            )
            .await
            .unwrap();
    }
}
