//! Volume and snapshot ids.
//!
//! # Volume handles read
//!
//! Every format the EXAScaler driver ever wrote keeps working:
//!
//! | driver      | handle                                                   | example |
//! |-------------|----------------------------------------------------------|---------|
//! | v1.x        | `<mountPoint>/<dir>`                                     | `/exaFS/nginx-persistent` |
//! | 2.0-2.2.5   | `<entry>:<mountPoint>/<dir>`                             | `exa1:/exaFS/nginx-persistent` |
//! | 2.2.6-2.3.2 | `<entry>:/<dir>`                                         | `exa1:/nginx-persistent` |
//! | 2.3.3+      | `<entry>:<exaFS, ':' as ';'>:<mountPoint>:<dir>`         | `exa1:10.3.3.200@tcp;/exaFS:/mnt:/nginx-persistent` |
//!
//! A v1.x handle is served by the `v1xCompatible` entry and must lie below its mount point.
//! `<entry>:/a/b` is the 2.0 form when `/a/b` lies below the entry's mount point (the mount
//! point is stripped), else the 2.2.6 form. A 2.3.3 handle whose filesystem directory is the
//! entry's (or lies inside it) is served through the entry's current NIDs and mount point, so
//! a change of NIDs does not orphan it; one on another filesystem is served where it says.
//!
//! # Volume ids written
//!
//! New volumes get `<entry>:/<name>` (the 2.2.6 form), e.g. `exa1:/pvc-5f0e...`:
//! - short: the entry name and the directory name, well below the 128 bytes CSI allows;
//! - stable: no NIDs and no mount point in it, so changing either in the configuration does
//!   not orphan a volume (the 2.3.3 format's weakness);
//! - unambiguous: when `/<name>` would read as the 2.0 form (the mount point is `/<name>`),
//!   the 2.0 form `<entry>:<mountPoint>/<name>` is written instead, which reads back the same;
//! - understood by the EXAScaler driver 2.2.6 and later, so a cluster can go back.
//!
//! A volume created on another filesystem (the `exaFS` parameter or secret) keeps the same
//! id: its record, on the entry's filesystem, says where the data lives.
//!
//! # Snapshot ids
//!
//! `<entry>:snapshot:<name>`, e.g. `exa1:snapshot:snapshot-0c6b...`: the record is
//! `<metadataDir>/snapshots/<name>.json` on the entry's filesystem.
//!
//! # What is never ours
//!
//! `beegfs://` and any other URL-like id (`scheme://`), and ids with neither `:` nor a
//! leading `/`. Anything of ours that would escape the filesystem (`..`), point into the
//! metadata directory, or leave the v1.x mount point is InvalidArgument.

use std::fmt;
use std::path::{Path, PathBuf};

use csi_core::domain::MAX_ID_BYTES;
use csi_core::{Error, Result};

use crate::config::{LustreConfig, LustreEntry, absolute_dir};
use crate::exafs::ExaFs;

/// Longest directory name component Lustre accepts.
const MAX_NAME_BYTES: usize = 255;

/// The infix of snapshot ids.
const SNAPSHOT_INFIX: &str = ":snapshot:";

/// A relative path below a filesystem's mount point: plain components only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VolumePath(Vec<String>);

impl VolumePath {
    /// Parses `a/b/c` (leading, doubled and trailing `/` and `.` components are dropped);
    /// `..`, control characters and over-long components are refused.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let mut parts = Vec::new();
        for part in text.split('/') {
            match part {
                "" | "." => {}
                ".." => return Err(format!("{text:?} must not contain '..'")),
                p if p.chars().any(char::is_control) => {
                    return Err(format!("{text:?} must not contain control characters"));
                }
                p if p.len() > MAX_NAME_BYTES => {
                    return Err(format!(
                        "a component of {text:?} is longer than {MAX_NAME_BYTES} bytes"
                    ));
                }
                p => parts.push(p.to_string()),
            }
        }
        Ok(Self(parts))
    }

    /// A one-component path (a dynamic volume's directory), checked as [`check_name`] does.
    pub fn single(name: &str) -> Result<Self> {
        check_name("name", name)?;
        Ok(Self(vec![name.to_string()]))
    }

    /// The components.
    pub fn components(&self) -> &[String] {
        &self.0
    }

    /// Whether this is the filesystem root itself.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The path below `root`.
    pub fn under(&self, root: &Path) -> PathBuf {
        let mut p = root.to_path_buf();
        p.extend(&self.0);
        p
    }

    /// The one component, for a one-component path.
    pub fn as_single(&self) -> Option<&str> {
        match self.0.as_slice() {
            [only] => Some(only),
            _ => None,
        }
    }

    fn strip_prefix(&self, prefix: &[String]) -> Option<VolumePath> {
        self.0
            .strip_prefix(prefix)
            .map(|rest| VolumePath(rest.to_vec()))
    }
}

impl fmt::Display for VolumePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("/"))
    }
}

/// A name that becomes a directory or a record: one path component, not hidden, no
/// control characters, at most 200 bytes (the record store's limit).
pub fn check_name(field: &str, name: &str) -> Result<()> {
    let bad = name.is_empty()
        || name.len() > 200
        || name.starts_with('.')
        || name.contains('/')
        || name.chars().any(char::is_control);
    if bad {
        return Err(Error::invalid(
            field,
            format!(
                "{name:?} cannot name a directory: it must be one path component of at most 200 bytes, not starting with '.'"
            ),
        ));
    }
    Ok(())
}

/// Which historical format a handle is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandleFormat {
    /// `<mountPoint>/<dir>`.
    V1x,
    /// `<entry>:<mountPoint>/<dir>`.
    V20,
    /// `<entry>:/<dir>` (what this driver writes).
    V226,
    /// `<entry>:<exaFS;>:<mountPoint>:<dir>`.
    V233,
}

/// A filesystem other than the entry's, named by a 2.3.3 handle or a parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The filesystem (and subdirectory).
    pub exa_fs: ExaFs,
    /// Where it is mounted.
    pub mount_point: PathBuf,
}

/// A volume handle resolved against the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LustreVolumeHandle {
    /// The `exascaler_map` entry that serves it.
    pub entry: String,
    /// Another filesystem than the entry's, when the handle names one.
    pub location: Option<Location>,
    /// The volume directory below the filesystem's mount point.
    pub dir: VolumePath,
    /// The format it was written in.
    pub format: HandleFormat,
}

/// A handle split into its parts, before the configuration is consulted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawHandle {
    /// `/<mountPoint>/<dir>`.
    V1x(String),
    /// `<entry>:/<path>` (2.0 or 2.2.6, told apart by the entry's mount point).
    Named {
        /// Entry name.
        entry: String,
        /// The absolute path after the `:`.
        path: String,
    },
    /// `<entry>:<exaFS;>:<mountPoint>:<dir>`.
    WithLocation {
        /// Entry name.
        entry: String,
        /// The filesystem, `;` turned back into `:`.
        exa_fs: ExaFs,
        /// The mount point.
        mount_point: PathBuf,
        /// The volume path below it.
        path: String,
    },
}

/// Whether `id` is a URL (`beegfs://...`): never a Lustre id.
fn is_url_like(id: &str) -> bool {
    id.split_once("://").is_some_and(|(scheme, _)| {
        !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    })
}

/// Splits a handle without the configuration. `None`: not a Lustre handle at all;
/// `Some(Err)`: `configured(entry)` says the entry exists but the rest is malformed.
pub fn parse_raw(id: &str, configured: impl Fn(&str) -> bool) -> Option<Result<RawHandle>> {
    if is_url_like(id) {
        return None;
    }
    if id.starts_with('/') {
        return Some(Ok(RawHandle::V1x(id.to_string())));
    }
    let (entry, rest) = id.split_once(':')?;
    if entry.is_empty() || entry.contains('/') {
        return None;
    }
    if rest.starts_with('/') {
        return Some(Ok(RawHandle::Named {
            entry: entry.to_string(),
            path: rest.to_string(),
        }));
    }
    let malformed = |reason: String| {
        configured(entry).then(|| {
            Err(Error::invalid(
                "volume_id",
                format!("{id:?} names entry {entry} but {reason}"),
            ))
        })
    };
    let Some((fs_text, tail)) = rest.split_once(':') else {
        return malformed(
            "is neither <entry>:/<dir> nor <entry>:<exaFS>:<mountPoint>:<dir>".into(),
        );
    };
    let exa_fs = match ExaFs::parse(&fs_text.replace(';', ":")) {
        Ok(fs) => fs,
        Err(e) => return malformed(format!("its filesystem part is not valid: {e}")),
    };
    let Some((mount_point, path)) = tail.split_once(':') else {
        return malformed("it has no <mountPoint>:<dir> after the filesystem".into());
    };
    let mount_point = match absolute_dir(mount_point) {
        Ok(mp) => mp,
        Err(reason) => return malformed(format!("its mount point is not valid: {reason}")),
    };
    Some(Ok(RawHandle::WithLocation {
        entry: entry.to_string(),
        exa_fs,
        mount_point,
        path: path.to_string(),
    }))
}

/// Resolves a handle against the configuration. `metadata_dir` is refused as a volume.
pub fn resolve(
    raw: RawHandle,
    config: &LustreConfig,
    metadata_dir: &str,
) -> Result<LustreVolumeHandle> {
    let invalid = |reason: String| Error::invalid("volume_id", reason);
    let entry_named = |name: &str| -> Result<&LustreEntry> {
        config.entry(name).ok_or_else(|| {
            Error::NotFound(format!(
                "volume_id names EXAScaler entry {name:?}, which is not in the configuration (entries: {})",
                config.entries.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })
    };
    let handle = match raw {
        RawHandle::V1x(path) => {
            let entry = config.v1x_entry().ok_or_else(|| {
                Error::NotFound(format!(
                    "{path:?} is a v1.x volume handle, but no exascaler_map entry sets v1xCompatible: true"
                ))
            })?;
            let full = VolumePath::parse(&path).map_err(invalid)?;
            let dir = full
                .strip_prefix(&mount_components(&entry.mount_point))
                .ok_or_else(|| {
                    invalid(format!(
                        "{path:?} is not below {}, the mount point of the v1xCompatible entry {}",
                        entry.mount_point.display(),
                        entry.name
                    ))
                })?;
            LustreVolumeHandle {
                entry: entry.name.clone(),
                location: None,
                dir,
                format: HandleFormat::V1x,
            }
        }
        RawHandle::Named { entry, path } => {
            let entry = entry_named(&entry)?;
            let full = VolumePath::parse(&path).map_err(invalid)?;
            match full.strip_prefix(&mount_components(&entry.mount_point)) {
                Some(dir) => LustreVolumeHandle {
                    entry: entry.name.clone(),
                    location: None,
                    dir,
                    format: HandleFormat::V20,
                },
                None => LustreVolumeHandle {
                    entry: entry.name.clone(),
                    location: None,
                    dir: full,
                    format: HandleFormat::V226,
                },
            }
        }
        RawHandle::WithLocation {
            entry,
            exa_fs,
            mount_point,
            path,
        } => {
            let entry = entry_named(&entry)?;
            let dir = VolumePath::parse(&path).map_err(invalid)?;
            // The directory as a path from the filesystem root, to compare with the entry's.
            let mut absolute = exa_fs.subdir.clone();
            absolute.extend(dir.components().iter().cloned());
            let absolute = VolumePath(absolute);
            match absolute.strip_prefix(&entry.exa_fs.subdir) {
                Some(rel) if exa_fs.fsname == entry.exa_fs.fsname => LustreVolumeHandle {
                    entry: entry.name.clone(),
                    location: None,
                    dir: rel,
                    format: HandleFormat::V233,
                },
                _ => LustreVolumeHandle {
                    entry: entry.name.clone(),
                    location: Some(Location {
                        exa_fs,
                        mount_point,
                    }),
                    dir,
                    format: HandleFormat::V233,
                },
            }
        }
    };
    if handle.dir.components().first().map(String::as_str) == Some(metadata_dir) {
        return Err(invalid(format!(
            "volumes cannot live in the driver's metadata directory {metadata_dir}"
        )));
    }
    Ok(handle)
}

/// Parses and resolves a volume id: `None` when it is not a Lustre id.
pub fn parse_volume_id(
    id: &str,
    config: &LustreConfig,
    metadata_dir: &str,
) -> Option<Result<LustreVolumeHandle>> {
    let raw = parse_raw(id, |name| config.entry(name).is_some())?;
    Some(raw.and_then(|raw| resolve(raw, config, metadata_dir)))
}

fn mount_components(mount_point: &Path) -> Vec<String> {
    mount_point
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect()
}

/// The id of a new volume named `name` (one component) of `entry`; InvalidArgument when it
/// would be longer than CSI allows.
pub fn canonical_volume_id(entry: &LustreEntry, name: &str) -> Result<String> {
    check_name("name", name)?;
    let mount = mount_components(&entry.mount_point);
    let id = if mount.len() == 1 && mount[0] == name {
        // `<entry>:/<name>` would read as the 2.0 form of the filesystem root.
        format!("{}:{}/{name}", entry.name, entry.mount_point.display())
    } else {
        format!("{}:/{name}", entry.name)
    };
    check_id_length("name", &id)?;
    Ok(id)
}

fn check_id_length(field: &str, id: &str) -> Result<()> {
    if id.len() > MAX_ID_BYTES {
        return Err(Error::invalid(
            field,
            format!(
                "the id {id:?} would be {} bytes, more than the {MAX_ID_BYTES} CSI allows; use a shorter name or entry name",
                id.len()
            ),
        ));
    }
    Ok(())
}

/// A snapshot id resolved: the entry whose filesystem holds its record, and its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LustreSnapshotId {
    /// The `exascaler_map` entry.
    pub entry: String,
    /// The snapshot's name (its record key).
    pub name: String,
}

impl LustreSnapshotId {
    /// `<entry>:snapshot:<name>`, checked against the CSI length limit.
    pub fn new(entry: &str, name: &str) -> Result<Self> {
        check_name("name", name)?;
        let id = Self {
            entry: entry.to_string(),
            name: name.to_string(),
        };
        check_id_length("name", &id.to_string())?;
        Ok(id)
    }

    /// Parses a snapshot id: `None` when it is not a Lustre snapshot id.
    pub fn parse(id: &str, config: &LustreConfig) -> Option<Result<Self>> {
        if is_url_like(id) {
            return None;
        }
        let (entry, name) = id.split_once(SNAPSHOT_INFIX)?;
        if entry.is_empty() || entry.contains([':', '/']) {
            return None;
        }
        if config.entry(entry).is_none() {
            return Some(Err(Error::NotFound(format!(
                "snapshot_id names EXAScaler entry {entry:?}, which is not in the configuration"
            ))));
        }
        Some(check_name("snapshot_id", name).map(|()| Self {
            entry: entry.to_string(),
            name: name.to_string(),
        }))
    }
}

impl fmt::Display for LustreSnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{SNAPSHOT_INFIX}{}", self.entry, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use csi_core::ErrorCode;
    use proptest::prelude::*;
    use serde_json::json;

    const META: &str = ".pfs-csi";

    fn config() -> LustreConfig {
        LustreConfig::from_value(json!({"exascaler_map": {
            "exa1": {"exaFS": "10.3.3.200@tcp:/exaFS", "mountPoint": "/exaFS", "v1xCompatible": true},
            "exa2": {"exaFS": "10.3.1.200@tcp:10.3.2.200@tcp:/csi-fs/zone-2", "mountPoint": "/mnt/zone-2"},
        }}))
        .unwrap()
    }

    fn parse(id: &str) -> Option<Result<LustreVolumeHandle>> {
        parse_volume_id(id, &config(), META)
    }

    fn ok(id: &str) -> LustreVolumeHandle {
        parse(id)
            .unwrap_or_else(|| panic!("{id} not claimed"))
            .unwrap()
    }

    fn code(id: &str) -> ErrorCode {
        parse(id)
            .unwrap_or_else(|| panic!("{id} not claimed"))
            .unwrap_err()
            .code()
    }

    #[test]
    fn all_four_historical_formats_resolve() {
        let v1 = ok("/exaFS/nginx-persistent");
        assert_eq!(
            (v1.entry.as_str(), v1.dir.to_string(), v1.format),
            ("exa1", "nginx-persistent".into(), HandleFormat::V1x)
        );

        let v20 = ok("exa1:/exaFS/nginx-persistent");
        assert_eq!(
            (v20.dir.to_string(), v20.format),
            ("nginx-persistent".into(), HandleFormat::V20)
        );

        let v226 = ok("exa2:/nginx-persistent");
        assert_eq!(
            (v226.entry.as_str(), v226.dir.to_string(), v226.format),
            ("exa2", "nginx-persistent".into(), HandleFormat::V226)
        );
        assert_eq!(v226.location, None);

        let v233 = ok("exa1:10.3.3.200@tcp;/exaFS:/mountPoint-csi:/nginx-persistent");
        assert_eq!(
            (v233.dir.to_string(), v233.format),
            ("nginx-persistent".into(), HandleFormat::V233)
        );
        assert_eq!(
            v233.location, None,
            "the entry's own filesystem is reached through the entry"
        );
    }

    #[test]
    fn a_233_handle_survives_changed_nids_and_follows_subdirectories() {
        // NIDs changed since the handle was written: still the entry's filesystem.
        let h = ok("exa2:10.9.9.9@tcp;/csi-fs/zone-2:/old-mount:/pvc-1");
        assert_eq!(
            (h.location.clone(), h.dir.to_string()),
            (None, "pvc-1".into())
        );
        // Written against the filesystem root: rebased below the entry's subdirectory.
        let h = ok("exa2:10.3.1.200@tcp;/csi-fs:/old:/zone-2/pvc-1");
        assert_eq!(
            (h.location.clone(), h.dir.to_string()),
            (None, "pvc-1".into())
        );
        // Another filesystem: served where the handle says.
        let h = ok("exa2:10.3.1.200@tcp;10.3.2.200@tcp;/other:/mnt/other:/pvc-2");
        let loc = h.location.unwrap();
        assert_eq!(
            loc.exa_fs.to_string(),
            "10.3.1.200@tcp:10.3.2.200@tcp:/other"
        );
        assert_eq!(loc.mount_point, PathBuf::from("/mnt/other"));
        assert_eq!(h.dir.to_string(), "pvc-2");
    }

    #[test]
    fn foreign_ids_are_not_claimed() {
        for id in [
            "beegfs://10.0.0.5/k8s/pvc-1",
            "beegfs-snap://h/x",
            "reallyfakevolumeid",
            "s3://b/k",
            ":x",
            "a/b:c",
        ] {
            assert!(parse(id).is_none(), "{id} claimed");
        }
        // An unknown entry with garbage after it is somebody else's format.
        assert!(parse("other:garbage").is_none());
    }

    #[test]
    fn escapes_and_malformed_handles_are_invalid() {
        for id in [
            "/exaFS/../etc/passwd",
            "/etc/passwd",
            "exa1:/../../etc",
            "exa1:/a/../../b",
            "exa1:/.pfs-csi/volumes",
            "exa1:/exaFS/.pfs-csi",
            "exa1:garbage",
            "exa1:10.0.0.1;/fs:/m:/x",
            "exa1:10.0.0.1@tcp;/fs:relative:/x",
            "exa1:10.0.0.1@tcp;/fs:/m:/../x",
            "exa1:10.0.0.1@tcp;/fs",
        ] {
            assert_eq!(code(id), ErrorCode::InvalidArgument, "{id}");
        }
        assert_eq!(code("exa9:/pvc-1"), ErrorCode::NotFound);
        let no_v1x = LustreConfig::from_value(json!({"exascaler_map": {
            "exa2": {"exaFS": "10.3.1.200@tcp:/fs", "mountPoint": "/mnt"}}}))
        .unwrap();
        let err = parse_volume_id("/mnt/x", &no_v1x, META)
            .unwrap()
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::NotFound);
        assert!(err.to_string().contains("v1xCompatible"), "{err}");
    }

    #[test]
    fn a_233_filesystem_subdirectory_is_held_to_the_component_rules() {
        // Its subdirectory becomes part of the volume directory: a component no Lustre
        // directory can have must be refused there as it is in the directory part.
        let long = "d".repeat(256);
        let id = format!("exa2:10.3.1.200@tcp;/csi-fs/zone-2/{long}:/m:/pvc-1");
        assert_eq!(code(&id), ErrorCode::InvalidArgument, "{id}");
        let id = format!("exa2:10.3.1.200@tcp;/csi-fs/zone-2:/m:/{long}");
        assert_eq!(code(&id), ErrorCode::InvalidArgument, "{id}");
        let fits = "d".repeat(255);
        let id = format!("exa2:10.3.1.200@tcp;/csi-fs/zone-2/{fits}:/m:/pvc-1");
        assert_eq!(ok(&id).dir.to_string(), format!("{fits}/pvc-1"));
    }

    #[test]
    fn doubled_slashes_and_dots_do_not_escape() {
        assert_eq!(ok("exa2:/a//./b/").dir.to_string(), "a/b");
        assert_eq!(ok("exa1:/exaFS").dir, VolumePath::default());
    }

    #[test]
    fn canonical_ids_are_short_and_read_back() {
        let config = config();
        let exa2 = config.entry("exa2").unwrap();
        let id = canonical_volume_id(exa2, "pvc-5f0e").unwrap();
        assert_eq!(id, "exa2:/pvc-5f0e");
        // The mount point /exaFS would make `exa1:/exaFS` the filesystem root.
        let exa1 = config.entry("exa1").unwrap();
        let id = canonical_volume_id(exa1, "exaFS").unwrap();
        assert_eq!(id, "exa1:/exaFS/exaFS");
        assert_eq!(ok(&id).dir.to_string(), "exaFS");
        assert_eq!(
            canonical_volume_id(exa1, &"p".repeat(130))
                .unwrap_err()
                .code(),
            ErrorCode::InvalidArgument
        );
        for bad in ["", ".hidden", "a/b", "..", "a\0b"] {
            assert_eq!(
                canonical_volume_id(exa1, bad).unwrap_err().code(),
                ErrorCode::InvalidArgument,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn snapshot_ids_round_trip_and_foreign_ones_are_left_alone() {
        let config = config();
        let id = LustreSnapshotId::new("exa1", "snapshot-0c6b").unwrap();
        assert_eq!(id.to_string(), "exa1:snapshot:snapshot-0c6b");
        assert_eq!(
            LustreSnapshotId::parse(&id.to_string(), &config)
                .unwrap()
                .unwrap(),
            id
        );
        assert!(LustreSnapshotId::parse("beegfs-snap://h/b/s", &config).is_none());
        assert!(LustreSnapshotId::parse("exa1:/pvc", &config).is_none());
        assert_eq!(
            LustreSnapshotId::parse("exa9:snapshot:s", &config)
                .unwrap()
                .unwrap_err()
                .code(),
            ErrorCode::NotFound
        );
        for bad in [
            "exa1:snapshot:",
            "exa1:snapshot:../x",
            "exa1:snapshot:a/b",
            "exa1:snapshot:.x",
        ] {
            assert_eq!(
                LustreSnapshotId::parse(bad, &config)
                    .unwrap()
                    .unwrap_err()
                    .code(),
                ErrorCode::InvalidArgument,
                "{bad}"
            );
        }
        assert!(LustreSnapshotId::new("exa1", &"s".repeat(120)).is_err());
    }

    fn name() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9][a-zA-Z0-9._-]{0,40}"
    }

    proptest! {
        #[test]
        fn canonical_ids_round_trip(entry_name in "[a-z][a-z0-9-]{0,12}", mount in name(), vol in name(), nested: bool) {
            let mount_point = if nested { format!("/mnt/{mount}") } else { format!("/{mount}") };
            let config = LustreConfig::from_value(json!({"exascaler_map": {
                entry_name.clone(): {"exaFS": "10.0.0.1@tcp:/fs", "mountPoint": mount_point}}})).unwrap();
            let entry = config.entry(&entry_name).unwrap();
            let id = canonical_volume_id(entry, &vol).unwrap();
            prop_assert!(id.len() <= MAX_ID_BYTES);
            let h = parse_volume_id(&id, &config, META).unwrap().unwrap();
            prop_assert_eq!(h.entry, entry_name);
            prop_assert_eq!(h.dir.as_single(), Some(vol.as_str()));
            prop_assert_eq!(h.location, None);
        }

        #[test]
        fn resolved_handles_never_escape(id in "(/exaFS|exa1:|exa2:|exa1:10.3.3.200@tcp;/exaFS:/m:)?[a-z./\\\\:;@-]{0,30}") {
            if let Some(Ok(h)) = parse(&id) {
                let root = Path::new("/root-of-fs");
                let p = h.dir.under(root);
                prop_assert!(p.starts_with(root));
                prop_assert!(!h.dir.components().iter().any(|c| c == ".." || c == "." || c.is_empty() || c.contains('/')));
                prop_assert_ne!(h.dir.components().first().map(String::as_str), Some(META));
            }
        }

        #[test]
        fn parsing_never_panics(id in "\\PC{0,80}") {
            let _ = parse(&id);
            let _ = LustreSnapshotId::parse(&id, &config());
        }

        #[test]
        fn snapshot_ids_round_trip(n in name().prop_filter("not hidden", |n| !n.starts_with('.'))) {
            let id = LustreSnapshotId::new("exa2", &n).unwrap();
            prop_assert_eq!(LustreSnapshotId::parse(&id.to_string(), &config()).unwrap().unwrap(), id);
        }
    }
}
