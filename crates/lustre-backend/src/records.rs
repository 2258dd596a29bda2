//! What the driver writes down about the volumes and snapshots it makes.
//!
//! Records live on the filesystem of the `exascaler_map` entry that owns the id:
//! `<mountPoint>/<metadataDir>/volumes/<name>.json` and `.../snapshots/<name>.json`, written
//! through the core's crash-safe [`RecordStore`]. A volume record is written before its
//! directory is made, so a crash leaves a record that a retried CreateVolume or a
//! DeleteVolume can finish. A directory without a record was not made by this driver and
//! is never deleted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use csi_core::Result;
use csi_core::domain::VolumeContentSource;
pub use csi_core::ports::ToolRecord;
use csi_core::records::RecordStore;
use serde::{Deserialize, Serialize};

use crate::exafs::ExaFs;
use crate::volume_id::{Location, VolumePath};

/// Version of the record layout.
pub const RECORD_VERSION: u32 = 1;

/// Where a volume's progress stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum VolumeState {
    /// The record is written; directory and quota may not be.
    Creating,
    /// Directory and quota are set; content is being restored or cloned in the background.
    Filling,
    /// The volume is complete.
    Ready,
    /// Deletion started.
    Deleting,
}

/// The filesystem of a volume that does not live on its entry's filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocationRecord {
    /// The filesystem.
    pub exa_fs: ExaFs,
    /// Its mount point.
    pub mount_point: PathBuf,
}

impl From<&Location> for LocationRecord {
    fn from(l: &Location) -> Self {
        Self {
            exa_fs: l.exa_fs.clone(),
            mount_point: l.mount_point.clone(),
        }
    }
}

impl From<&LocationRecord> for Location {
    fn from(l: &LocationRecord) -> Self {
        Self {
            exa_fs: l.exa_fs.clone(),
            mount_point: l.mount_point.clone(),
        }
    }
}

/// What a volume was filled from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ContentRecord {
    /// A snapshot id.
    Snapshot(String),
    /// A volume id.
    Volume(String),
}

impl From<&VolumeContentSource> for ContentRecord {
    fn from(c: &VolumeContentSource) -> Self {
        match c {
            VolumeContentSource::Snapshot(s) => Self::Snapshot(s.clone()),
            VolumeContentSource::Volume(v) => Self::Volume(v.clone()),
        }
    }
}

impl From<&ContentRecord> for VolumeContentSource {
    fn from(c: &ContentRecord) -> Self {
        match c {
            ContentRecord::Snapshot(s) => Self::Snapshot(s.clone()),
            ContentRecord::Volume(v) => Self::Volume(v.clone()),
        }
    }
}

/// A volume this driver created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeRecord {
    /// Layout version.
    pub version: u32,
    /// The CO's name, also the directory name and the record key.
    pub name: String,
    /// The id given to the CO.
    pub volume_id: String,
    /// The `exascaler_map` entry.
    pub entry: String,
    /// Progress.
    pub state: VolumeState,
    /// The filesystem, when not the entry's.
    pub location: Option<LocationRecord>,
    /// The Lustre project id.
    pub project_id: u32,
    /// The hard limit in bytes (a whole number of KiB).
    pub capacity_bytes: u64,
    /// The request's (non-secret) parameters, to tell a retry from a conflicting request.
    pub parameters: BTreeMap<String, String>,
    /// What the volume is filled from.
    pub content_source: Option<ContentRecord>,
    /// Owner of the directory.
    pub uid: Option<u32>,
    /// Group of the directory.
    pub gid: Option<u32>,
    /// Mode of the directory.
    pub permissions: u32,
    /// Creation time, seconds since the epoch.
    pub created_unix: u64,
    /// Why the last fill failed (cleared when it is retried).
    pub error: Option<String>,
}

impl VolumeRecord {
    /// The directory below the filesystem's mount point.
    pub fn dir(&self) -> VolumePath {
        VolumePath::parse(&self.name).unwrap_or_default()
    }
}

/// Where a snapshot's archive stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SnapshotState {
    /// Being written in the background.
    Cutting,
    /// Complete.
    Ready,
    /// Writing failed (`error` says why).
    Failed,
}

/// A snapshot this driver took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotRecord {
    /// Layout version.
    pub version: u32,
    /// The CO's name, also the record key and the archive's base name.
    pub name: String,
    /// The id given to the CO.
    pub snapshot_id: String,
    /// The `exascaler_map` entry.
    pub entry: String,
    /// The source volume's id.
    pub source_volume_id: String,
    /// The source directory below its filesystem's mount point.
    pub source_dir: String,
    /// The filesystem of source and archive, when not the entry's.
    pub location: Option<LocationRecord>,
    /// The archive, below the filesystem's mount point.
    pub archive: String,
    /// How it is written.
    pub tool: ToolRecord,
    /// Progress.
    pub state: SnapshotState,
    /// Archive size once ready.
    pub size_bytes: u64,
    /// Hex checksum of the archive, when verified (`md5` in records of earlier versions).
    #[serde(default, alias = "md5")]
    pub checksum: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// Creation time: seconds since the epoch.
    pub created_unix: u64,
    /// Creation time: nanoseconds within the second.
    pub created_nanos: u32,
}

impl SnapshotRecord {
    /// The creation time.
    pub fn creation_time(&self) -> SystemTime {
        UNIX_EPOCH + Duration::new(self.created_unix, self.created_nanos)
    }
}

/// Now, as seconds and nanoseconds since the epoch.
pub fn now() -> (u64, u32) {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_secs(), d.subsec_nanos())
}

/// The record stores of one entry's filesystem. The async methods run on the blocking pool
/// under a timeout, so a hung filesystem gives `DeadlineExceeded`, not a stuck RPC.
#[derive(Debug, Clone)]
pub struct Stores {
    /// Volume records.
    pub volumes: RecordStore<VolumeRecord>,
    /// Snapshot records.
    pub snapshots: RecordStore<SnapshotRecord>,
    timeout: Duration,
}

impl Stores {
    /// The stores below `<mount_point>/<metadata_dir>`, each access bounded by `timeout`.
    /// They are private: the metadata directory sits at the filesystem's top, which users
    /// may be able to write to (a scratch filesystem's often is), and a record in a folder
    /// the driver did not make is never believed.
    pub fn new(mount_point: &Path, metadata_dir: &str, timeout: Duration) -> Self {
        let meta = mount_point.join(metadata_dir);
        Self {
            volumes: RecordStore::new(meta.join("volumes")).private_from(&meta),
            snapshots: RecordStore::new(meta.join("snapshots")).private_from(&meta),
            timeout,
        }
    }

    async fn run<R, F>(&self, what: String, work: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce() -> Result<R> + Send + 'static,
    {
        csi_core::blocking::try_blocking(self.timeout, &what, work).await
    }

    /// The volume record `name`.
    pub async fn volume(&self, name: &str) -> Result<Option<VolumeRecord>> {
        let (store, key) = (self.volumes.clone(), name.to_string());
        self.run(format!("reading the record of volume {name}"), move || {
            store.get(&key)
        })
        .await
    }

    /// Writes a volume record (keyed by its name).
    pub async fn put_volume(&self, rec: &VolumeRecord) -> Result<()> {
        let (store, rec) = (self.volumes.clone(), rec.clone());
        self.run(
            format!("writing the record of volume {}", rec.name),
            move || store.put(&rec.name, &rec),
        )
        .await
    }

    /// Removes volume record `name`.
    pub async fn remove_volume(&self, name: &str) -> Result<()> {
        let (store, key) = (self.volumes.clone(), name.to_string());
        self.run(format!("removing the record of volume {name}"), move || {
            store.remove(&key)
        })
        .await
    }

    /// Every volume record.
    pub async fn volume_list(&self) -> Result<Vec<(String, VolumeRecord)>> {
        let store = self.volumes.clone();
        self.run("listing volume records".into(), move || store.list())
            .await
    }

    /// The snapshot record `name`.
    pub async fn snapshot(&self, name: &str) -> Result<Option<SnapshotRecord>> {
        let (store, key) = (self.snapshots.clone(), name.to_string());
        self.run(
            format!("reading the record of snapshot {name}"),
            move || store.get(&key),
        )
        .await
    }

    /// Writes a snapshot record (keyed by its name).
    pub async fn put_snapshot(&self, rec: &SnapshotRecord) -> Result<()> {
        let (store, rec) = (self.snapshots.clone(), rec.clone());
        self.run(
            format!("writing the record of snapshot {}", rec.name),
            move || store.put(&rec.name, &rec),
        )
        .await
    }

    /// Removes snapshot record `name`.
    pub async fn remove_snapshot(&self, name: &str) -> Result<()> {
        let (store, key) = (self.snapshots.clone(), name.to_string());
        self.run(
            format!("removing the record of snapshot {name}"),
            move || store.remove(&key),
        )
        .await
    }

    /// Every snapshot record.
    pub async fn snapshot_list(&self) -> Result<Vec<(String, SnapshotRecord)>> {
        let store = self.snapshots.clone();
        self.run("listing snapshot records".into(), move || store.list())
            .await
    }

    /// The volume record named by `dir` that carries exactly `volume_id`.
    pub async fn volume_for(
        &self,
        dir: &VolumePath,
        volume_id: &str,
    ) -> Result<Option<VolumeRecord>> {
        let Some(name) = dir.as_single() else {
            return Ok(None);
        };
        if csi_core::records::check_key(name).is_err() {
            return Ok(None);
        }
        Ok(self
            .volume(name)
            .await?
            .filter(|r| r.volume_id == volume_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use csi_core::ports::{ArchiveOptions, ArchiveTool, ChecksumKind};

    fn record() -> VolumeRecord {
        VolumeRecord {
            version: RECORD_VERSION,
            name: "pvc-1".into(),
            volume_id: "exa1:/pvc-1".into(),
            entry: "exa1".into(),
            state: VolumeState::Creating,
            location: Some(LocationRecord {
                exa_fs: ExaFs::parse("10.0.0.1@tcp:/other").unwrap(),
                mount_point: "/mnt/other".into(),
            }),
            project_id: 10001,
            capacity_bytes: 1 << 30,
            parameters: BTreeMap::from([("exaMountUid".to_string(), "1001".to_string())]),
            content_source: Some(ContentRecord::Snapshot("exa1:snapshot:s".into())),
            uid: Some(1001),
            gid: None,
            permissions: 0o777,
            created_unix: 1,
            error: None,
        }
    }

    #[tokio::test]
    async fn records_round_trip_and_are_found_only_by_their_own_id() {
        let dir = tempfile::tempdir().unwrap();
        let stores = Stores::new(dir.path(), ".pfs-csi", Duration::from_secs(5));
        let rec = record();
        stores.put_volume(&rec).await.unwrap();
        assert!(dir.path().join(".pfs-csi/volumes/pvc-1.json").exists());
        assert_eq!(stores.volume_list().await.unwrap().len(), 1);
        let name = VolumePath::parse("pvc-1").unwrap();
        assert_eq!(
            stores.volume_for(&name, "exa1:/pvc-1").await.unwrap(),
            Some(rec.clone())
        );
        assert_eq!(
            stores.volume_for(&name, "exa1:/exaFS/pvc-1").await.unwrap(),
            None
        );
        assert_eq!(
            stores
                .volume_for(&VolumePath::parse("a/pvc-1").unwrap(), "exa1:/pvc-1")
                .await
                .unwrap(),
            None
        );
        let json = std::fs::read_to_string(dir.path().join(".pfs-csi/volumes/pvc-1.json")).unwrap();
        assert!(json.contains("\"state\": \"creating\""), "{json}");
        assert!(
            json.contains("\"exaFs\": \"10.0.0.1@tcp:/other\""),
            "{json}"
        );
    }

    #[test]
    fn snapshot_records_of_earlier_versions_load_as_md5() {
        let old = r#"{"version":1,"name":"snap-1","snapshotId":"exa1:snap-1","entry":"exa1",
            "sourceVolumeId":"v","sourceDir":"pvc-1","location":null,
            "archive":".pfs-csi/snapshots/snap-1.tar",
            "tool":{"utility":"tar","path":"/bin/tar","verifyMd5":true},
            "state":"ready","sizeBytes":10240,"md5":"9e107d9d372bb6826bd81d3542a419d6",
            "error":null,"createdUnix":1,"createdNanos":2}"#;
        let rec: SnapshotRecord = serde_json::from_str(old).unwrap();
        assert_eq!(
            rec.checksum.as_deref(),
            Some("9e107d9d372bb6826bd81d3542a419d6")
        );
        let options = rec.tool.options();
        assert!(options.verify);
        assert_eq!(options.checksum, ChecksumKind::Md5);
        // Written back and read again, nothing changes.
        let again: SnapshotRecord =
            serde_json::from_str(&serde_json::to_string(&rec).unwrap()).unwrap();
        assert_eq!(again, rec);
    }

    #[test]
    fn tool_records_give_back_the_options() {
        for options in [
            ArchiveOptions {
                tool: ArchiveTool::Tar("/bin/tar".into()),
                verify: false,
                checksum: ChecksumKind::Blake3,
            },
            ArchiveOptions {
                tool: ArchiveTool::Dtar("/opt/dtar".into()),
                verify: true,
                checksum: ChecksumKind::Md5,
            },
        ] {
            assert_eq!(ToolRecord::from(&options).options(), options);
        }
    }
}
