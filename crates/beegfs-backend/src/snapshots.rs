//! Snapshots: archives of a volume directory cut in the background by the core's snapshot
//! engine, kept in the source volume's `volDirBasePath`.
//!
//! CreateSnapshot records the snapshot (not ready), starts the cut and returns at once; the
//! snapshotter's retries see `ready_to_use` turn true when the archive is complete. A cut
//! interrupted by a restart is started again by the next CreateSnapshot call; a failed one
//! is reported by that call and started again.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use csi_core::blocking::try_blocking;
use csi_core::domain::{Snapshot, SnapshotId};
use csi_core::ports::{CreateSnapshotRequest, ToolRecord};
use csi_core::records::{RecordStore, ensure_private_dir};
use csi_core::{Error, Result};
use tracing::{info, warn};

use crate::backend::{FsAccess, Inner};
use crate::controller::{Listing, check_name};
use crate::records::{SnapshotRecord, VolumeState, meta_dir, snapshot_archive, snapshot_folder};
use crate::volume_id::{BeegfsSnapshotId, BeegfsVolumeId};

impl SnapshotRecord {
    fn to_snapshot(&self) -> Result<Snapshot> {
        Ok(Snapshot {
            id: SnapshotId::parse(&self.snapshot_id)?,
            source_volume_id: self.source_volume_id.clone(),
            creation_time: UNIX_EPOCH + Duration::new(self.created_secs, self.created_nanos),
            size_bytes: self.size_bytes,
            ready_to_use: self.ready,
        })
    }
}

impl Inner {
    fn snapshot_store(&self, fs: &FsAccess, sid: &BeegfsSnapshotId) -> RecordStore<SnapshotRecord> {
        crate::records::snapshot_store(&fs.root, &sid.base)
    }

    /// The record of snapshot `sid`, if any.
    pub(crate) async fn snapshot_record(
        &self,
        fs: &FsAccess,
        sid: &BeegfsSnapshotId,
    ) -> Result<Option<SnapshotRecord>> {
        let store = self.snapshot_store(fs, sid);
        let name = sid.name.clone();
        if csi_core::records::check_key(&name).is_err() {
            return Ok(None);
        }
        let wanted = sid.to_string();
        let key = name.clone();
        let rec = try_blocking(self.fs_timeout(), "read snapshot record", move || {
            store.get(&key)
        })
        .await?;
        let Some(rec) = rec.filter(|r| r.snapshot_id == wanted) else {
            return Ok(None);
        };
        if rec.name != name {
            return Err(Error::FailedPrecondition(format!(
                "the record of snapshot {wanted} names {:?}, not this snapshot; it was not written by this driver and is not trusted; nothing was changed",
                rec.name
            )));
        }
        Ok(Some(rec))
    }

    fn cut_running(&self, snapshot_id: &str) -> bool {
        self.cuts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(snapshot_id)
    }

    /// Waits up to `contentWaitSeconds` until no cut matching `busy` runs; `true` when none
    /// does any more.
    pub(crate) async fn wait_for_cuts(&self, busy: impl Fn(&str, &str) -> bool) -> bool {
        let deadline =
            std::time::Instant::now() + Duration::from_secs(self.settings.content_wait_seconds);
        loop {
            let running = self
                .cuts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .any(|(snapshot, source)| busy(snapshot, source));
            if !running {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// CreateSnapshot.
    pub(crate) async fn create_snapshot(
        this: &Arc<Inner>,
        request: &CreateSnapshotRequest,
    ) -> Result<Snapshot> {
        request.parameters.reject_unknown("parameters", &[])?;
        check_name("name", &request.name)?;
        let source = BeegfsVolumeId::parse(request.source_volume_id.as_str())?;
        let source_text = source.to_string();
        let fs = this.controller_fs(&source.host).await?;
        let Some(volume) = this.volume_record(&fs, &source).await? else {
            let exists = this.get_volume(&source).await.is_ok();
            return Err(if exists {
                Error::FailedPrecondition(format!(
                    "volume {source_text} was not created by this driver; only its own volumes can be snapshotted"
                ))
            } else {
                Error::NotFound(format!("source volume {source_text} does not exist"))
            });
        };
        let sid = BeegfsSnapshotId::of(&source, &request.name);
        let sid_text = sid.to_string();
        if sid_text.len() > csi_core::domain::MAX_ID_BYTES {
            return Err(Error::invalid(
                "name",
                format!("the snapshot id {sid_text} would be longer than the 128 bytes CSI allows"),
            ));
        }
        let store = this.snapshot_store(&fs, &sid);
        match this.snapshot_record(&fs, &sid).await? {
            Some(rec) if rec.source_volume_id != source_text => Err(Error::AlreadyExists(format!(
                "snapshot {} exists for another volume ({})",
                request.name, rec.source_volume_id
            ))),
            Some(rec) if rec.ready || this.cut_running(&sid_text) => rec.to_snapshot(),
            Some(mut rec) => {
                let failure = rec.error.take();
                this.put_snapshot(&store, &rec).await?;
                Inner::start_cut(this, &fs, &sid, &source, &volume.volume_id);
                match failure {
                    Some(why) => Err(Error::Internal(format!(
                        "cutting snapshot {sid_text} failed ({why}); started again"
                    ))),
                    None => rec.to_snapshot(),
                }
            }
            // A volume still being created or already being deleted has no content to
            // stand by: its tree is partial.
            None if volume.state != VolumeState::Ready => Err(Error::Unavailable(format!(
                "volume {source_text} is not ready (it is {:?}); retry later",
                volume.state
            ))),
            None => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default();
                let rec = SnapshotRecord {
                    snapshot_id: sid_text.clone(),
                    name: request.name.clone(),
                    source_volume_id: source_text.clone(),
                    created_secs: now.as_secs(),
                    created_nanos: now.subsec_nanos(),
                    size_bytes: 0,
                    ready: false,
                    checksum: None,
                    error: None,
                    tool: None,
                };
                this.put_snapshot(&store, &rec).await?;
                Inner::start_cut(this, &fs, &sid, &source, &volume.volume_id);
                info!(snapshot_id = %sid_text, source = %source_text, "snapshot started");
                rec.to_snapshot()
            }
        }
    }

    async fn put_snapshot(
        &self,
        store: &RecordStore<SnapshotRecord>,
        rec: &SnapshotRecord,
    ) -> Result<()> {
        let (store, rec) = (store.clone(), rec.clone());
        try_blocking(self.fs_timeout(), "write snapshot record", move || {
            store.put(&rec.name, &rec)
        })
        .await
    }

    /// Cuts the archive in the background and records the outcome.
    fn start_cut(
        this: &Arc<Inner>,
        fs: &FsAccess,
        sid: &BeegfsSnapshotId,
        source: &BeegfsVolumeId,
        source_text: &str,
    ) {
        let sid_text = sid.to_string();
        {
            let mut cuts = this.cuts.lock().unwrap_or_else(|e| e.into_inner());
            if cuts.contains_key(&sid_text) {
                return;
            }
            cuts.insert(sid_text.clone(), source_text.to_string());
        }
        let inner = this.clone();
        let store = this.snapshot_store(fs, sid);
        let archive = snapshot_archive(&fs.root, &sid.base, &sid.name);
        let src_dir = fs.root.join(source.path.relative());
        let name = sid.name.clone();
        let folder = snapshot_folder(&fs.root, &sid.base);
        let meta = meta_dir(&fs.root, &sid.base);
        tokio::spawn(async move {
            let options = inner.archive_options();
            // The archives hold the volumes' data: their folder is root's alone (0700).
            let prepared = try_blocking(
                inner.fs_timeout(),
                "create the snapshot folder",
                move || {
                    ensure_private_dir(&meta)?;
                    ensure_private_dir(&folder)
                },
            )
            .await;
            let result = match prepared {
                Ok(()) => {
                    inner
                        .ctx
                        .snapshots
                        .create(&src_dir, &archive, &options)
                        .await
                }
                Err(e) => Err(e),
            };
            let update = {
                let store = store.clone();
                let name = name.clone();
                let tool = ToolRecord::from(&options);
                try_blocking(inner.fs_timeout(), "update snapshot record", move || {
                    let Some(mut rec) = store.get(&name)? else {
                        return Ok(());
                    };
                    match result {
                        Ok(info) => {
                            rec.ready = true;
                            rec.size_bytes = info.size_bytes;
                            rec.checksum = info.checksum.map(|c| c.hex);
                            rec.error = None;
                            rec.tool = Some(tool);
                        }
                        Err(e) => rec.error = Some(e.to_string()),
                    }
                    store.put(&name, &rec)
                })
                .await
            };
            if let Err(e) = update {
                warn!(snapshot_id = %sid_text, error = %e, "snapshot record could not be updated");
            }
            inner
                .cuts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&sid_text);
            info!(snapshot_id = %sid_text, "snapshot cut finished");
        });
    }

    /// DeleteSnapshot.
    pub(crate) async fn delete_snapshot(&self, sid: &BeegfsSnapshotId) -> Result<()> {
        let sid_text = sid.to_string();
        if !self.wait_for_cuts(|snapshot, _| snapshot == sid_text).await {
            return Err(Error::Aborted(format!(
                "snapshot {sid_text} is still being cut; retry when it is done"
            )));
        }
        let fs = self.controller_fs(&sid.host).await?;
        if self.snapshot_record(&fs, sid).await?.is_none() {
            info!(snapshot_id = %sid_text, "snapshot does not exist: nothing to delete");
            return Ok(());
        }
        let archive = snapshot_archive(&fs.root, &sid.base, &sid.name);
        self.ctx.snapshots.delete(&archive).await?;
        let store = self.snapshot_store(&fs, sid);
        let name = sid.name.clone();
        try_blocking(self.fs_timeout(), "remove snapshot record", move || {
            store.remove(&name)
        })
        .await?;
        info!(snapshot_id = %sid_text, "snapshot deleted");
        Ok(())
    }

    /// ListSnapshots: every snapshot on every reachable known filesystem. A record that
    /// cannot be read is skipped with a warning.
    pub(crate) async fn list_snapshots(&self) -> Result<Vec<Snapshot>> {
        let mut out = Vec::new();
        for host in self.known_hosts()? {
            let fs = match self.controller_fs(&host).await {
                Ok(fs) => fs,
                Err(e) => {
                    warn!(host = %host, error = %e, "filesystem unreachable; its snapshots are not listed");
                    continue;
                }
            };
            let records = self
                .records_in_bases(
                    &fs,
                    Listing::Readable,
                    "snapshot",
                    crate::records::snapshot_store,
                )
                .await?;
            for rec in records {
                out.push(rec.to_snapshot()?);
            }
        }
        Ok(out)
    }
}
