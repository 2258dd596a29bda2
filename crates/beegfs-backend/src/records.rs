//! What the driver remembers, and where.
//!
//! On each filesystem (through the controller's client mount), next to the volumes:
//!
//! ```text
//! /.pfs-csi/bases/<key>.json                  every volDirBasePath used on this filesystem
//! <volDirBasePath>/.pfs-csi/volumes/<name>.json           one per volume the driver created
//! <volDirBasePath>/.pfs-csi/snapshot-records/<name>.json  one per snapshot
//! <volDirBasePath>/.pfs-csi/snapshots/<name>.tar          the snapshot archives (0700 folder, 0600 files)
//! <volDirBasePath>/.csi/volumes/<name>/nodes/<nodeID>     nodes that staged the volume
//! ```
//!
//! A volume is dynamic (may be deleted by the driver) only when its record exists, in a
//! `.pfs-csi` folder that is the driver's own (root's, mode 0700, writable by nobody else:
//! anyone who can make directories could make one), and names the volume it was looked up
//! for. The node tracking layout is the reference driver's, so volumes it created keep
//! working.
//!
//! On each node, under the plugin's state directory: one record per staged volume and one
//! per shared filesystem mount (with the volumes using it).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use csi_core::ports::ToolRecord;
use csi_core::records::RecordStore;
use serde::{Deserialize, Serialize};

use crate::params::{Permissions, StripePattern};
use crate::volume_id::VolumePath;

/// The hidden directory of driver data in a `volDirBasePath` (and at the filesystem root).
pub const META_DIR: &str = ".pfs-csi";

/// Where a volume came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind", content = "id")]
pub enum SourceRecord {
    /// Restored from this snapshot id.
    Snapshot(String),
    /// Cloned from this volume id.
    Volume(String),
}

/// Where a volume is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum VolumeState {
    /// Being created (a crash leaves it here; the next CreateVolume finishes it).
    Creating,
    /// Created.
    Ready,
    /// DeleteVolume is removing the data (nodes have unstaged or the wait timed out).
    Deleting,
}

/// A volume the driver created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeRecord {
    /// The volume id.
    pub volume_id: String,
    /// The CO's name (the directory name).
    pub name: String,
    /// The filesystem.
    pub host: String,
    /// The `volDirBasePath`.
    pub base: String,
    /// Provisioned capacity in bytes (enforced only with `quota_gid`).
    pub capacity_bytes: u64,
    /// The volume's own group id, when quotas are enabled.
    pub quota_gid: Option<u32>,
    /// Stripe pattern requested.
    pub stripe: StripePattern,
    /// Owner and mode requested.
    pub permissions: Permissions,
    /// Content source.
    pub source: Option<SourceRecord>,
    /// Life-cycle state.
    pub state: VolumeState,
    /// Creation time, seconds since the epoch.
    pub created_at: u64,
    /// When DeleteVolume was first asked, seconds since the epoch.
    #[serde(default)]
    pub delete_requested_at: Option<u64>,
}

/// A snapshot the driver cut.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotRecord {
    /// The snapshot id.
    pub snapshot_id: String,
    /// The CO's name.
    pub name: String,
    /// The source volume id.
    pub source_volume_id: String,
    /// When it was requested: seconds since the epoch.
    pub created_secs: u64,
    /// Nanoseconds part of the request time.
    pub created_nanos: u32,
    /// Archive size once cut.
    pub size_bytes: u64,
    /// Whether the archive is complete.
    pub ready: bool,
    /// Hex checksum of the archive, when verification is on (`md5` in records of earlier
    /// versions; the kind follows the settings, the checksum file's suffix tells).
    #[serde(default, alias = "md5")]
    pub checksum: Option<String>,
    /// Why the last cut failed.
    #[serde(default)]
    pub error: Option<String>,
    /// How the archive was written (records of earlier versions: the settings of the day).
    #[serde(default)]
    pub tool: Option<ToolRecord>,
}

/// A `volDirBasePath` used on a filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BaseRecord {
    /// The path.
    pub base: String,
}

/// A filesystem the controller has provisioned on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KnownFilesystem {
    /// Its management host.
    pub host: String,
}

/// How a volume is staged on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StageMode {
    /// Its own client mount at `<staging>/mount`.
    PerVolume,
    /// A bind mount at `<staging>/mount` of its directory in the filesystem's shared mount.
    Shared,
}

/// A volume staged on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StagedVolume {
    /// The volume id.
    pub volume_id: String,
    /// The staging path the CO gave.
    pub staging_path: PathBuf,
    /// `<staging>/mount`.
    pub mount_point: PathBuf,
    /// Per-volume or shared client mount.
    pub mode: StageMode,
    /// The client mount the volume is reached through (the per-volume mount, or the
    /// filesystem's shared mount).
    pub fs_mount: PathBuf,
    /// Generated client files of a per-volume mount.
    pub files_dir: Option<PathBuf>,
    /// The node tracking file touched on the filesystem, relative to the fs mount.
    #[serde(default)]
    pub node_file: Option<PathBuf>,
}

/// A filesystem mount shared by the volumes staged through it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SharedMount {
    /// The management host.
    pub host: String,
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// Volume ids staged through it.
    pub users: BTreeSet<String>,
}

/// `<root>/<base>/.pfs-csi`.
pub fn meta_dir(root: &Path, base: &VolumePath) -> PathBuf {
    root.join(base.relative()).join(META_DIR)
}

/// Volume records of `base`.
pub fn volume_dir(root: &Path, base: &VolumePath) -> PathBuf {
    meta_dir(root, base).join("volumes")
}

/// Snapshot records of `base`.
pub fn snapshot_record_dir(root: &Path, base: &VolumePath) -> PathBuf {
    meta_dir(root, base).join("snapshot-records")
}

/// The folder of the snapshot archives of `base`.
pub fn snapshot_folder(root: &Path, base: &VolumePath) -> PathBuf {
    meta_dir(root, base).join("snapshots")
}

/// The archive of snapshot `name` in `base`.
pub fn snapshot_archive(root: &Path, base: &VolumePath, name: &str) -> PathBuf {
    snapshot_folder(root, base).join(format!("{name}.tar"))
}

/// The base-path index of a filesystem.
pub fn bases_dir(root: &Path) -> PathBuf {
    root.join(META_DIR).join("bases")
}

/// The volume records of `base`. Private: users can make directories in a base path (and
/// beside any static volume), so records count only in folders that are the driver's own.
pub fn volume_store(root: &Path, base: &VolumePath) -> RecordStore<VolumeRecord> {
    RecordStore::new(volume_dir(root, base)).private_from(meta_dir(root, base))
}

/// The snapshot records of `base` (private, as [`volume_store`]).
pub fn snapshot_store(root: &Path, base: &VolumePath) -> RecordStore<SnapshotRecord> {
    RecordStore::new(snapshot_record_dir(root, base)).private_from(meta_dir(root, base))
}

/// The base-path index of a filesystem (private, as [`volume_store`]).
pub fn base_store(root: &Path) -> RecordStore<BaseRecord> {
    RecordStore::new(bases_dir(root)).private_from(root.join(META_DIR))
}

/// The node tracking directory of volume `name` in `base` (the reference layout).
pub fn nodes_dir(root: &Path, base: &VolumePath, name: &str) -> PathBuf {
    root.join(base.relative())
        .join(".csi")
        .join("volumes")
        .join(name)
        .join("nodes")
}

/// A stable 64-bit FNV-1a hash, to keep derived file names unique.
pub fn fnv1a(text: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// A record key / directory name for arbitrary text: safe characters kept, the rest `_`,
/// cut to a reasonable length, with a hash of the original so distinct texts stay distinct.
pub fn safe_key(text: &str) -> String {
    let mut cleaned: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(120)
        .collect();
    while cleaned.starts_with('.') {
        cleaned.replace_range(0..1, "_");
    }
    format!("{cleaned}-{:016x}", fnv1a(text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use csi_core::records::check_key;
    use proptest::prelude::*;

    #[test]
    fn snapshot_records_with_the_earlier_md5_field_still_load() {
        let old = r#"{"snapshotId":"beegfs://h/s","name":"snap","sourceVolumeId":"v",
            "createdSecs":1,"createdNanos":2,"sizeBytes":10240,"ready":true,
            "md5":"9e107d9d372bb6826bd81d3542a419d6","error":null}"#;
        let rec: SnapshotRecord = serde_json::from_str(old).unwrap();
        assert_eq!(
            rec.checksum.as_deref(),
            Some("9e107d9d372bb6826bd81d3542a419d6")
        );
        let text = serde_json::to_string(&rec).unwrap();
        assert!(text.contains("\"checksum\""), "{text}");
        assert_eq!(serde_json::from_str::<SnapshotRecord>(&text).unwrap(), rec);
    }

    #[test]
    fn locations_follow_the_layout() {
        let root = Path::new("/m");
        let base = VolumePath::clean("b", "/k8s/all").unwrap();
        assert_eq!(
            volume_dir(root, &base),
            Path::new("/m/k8s/all/.pfs-csi/volumes")
        );
        assert_eq!(
            snapshot_archive(root, &base, "s1"),
            Path::new("/m/k8s/all/.pfs-csi/snapshots/s1.tar")
        );
        assert_eq!(
            nodes_dir(root, &base, "pvc-1"),
            Path::new("/m/k8s/all/.csi/volumes/pvc-1/nodes")
        );
        assert_eq!(bases_dir(root), Path::new("/m/.pfs-csi/bases"));
        assert_eq!(
            volume_dir(root, &VolumePath::root()),
            Path::new("/m/.pfs-csi/volumes")
        );
    }

    #[test]
    fn records_serialize_in_camel_case() {
        let rec = SourceRecord::Snapshot("beegfs-snap://h/s".into());
        let json = serde_json::to_string(&rec).unwrap();
        assert_eq!(json, r#"{"kind":"snapshot","id":"beegfs-snap://h/s"}"#);
    }

    proptest! {
        #[test]
        fn safe_keys_are_valid_record_keys_and_distinct(a in "\\PC{0,300}", b in "\\PC{0,300}") {
            let (ka, kb) = (safe_key(&a), safe_key(&b));
            prop_assert!(check_key(&ka).is_ok(), "{}", ka);
            if a != b {
                prop_assert_ne!(ka, kb);
            }
        }
    }
}
