//! StorageClass parameters (and PV `volumeAttributes`, which play the same role for static
//! volumes), StorageClass secrets, and VolumeSnapshotClass parameters.

use std::collections::BTreeMap;
use std::path::PathBuf;

use csi_core::domain::Secrets;
use csi_core::ports::{ArchiveOptions, ArchiveTool, ChecksumKind};
use csi_core::{Error, Result};

use crate::config::{
    LustreSettings, absolute_dir, check_label_value, parse_bool, parse_permissions,
};
use crate::exafs::{ExaFs, NidList};
use crate::mount_options;
use crate::volume_id::VolumePath;

/// Every StorageClass key of the EXAScaler driver.
pub const VOLUME_KEYS: &[&str] = &[
    "configName",
    "exaFS",
    "mountPoint",
    "projectId",
    "minProjectId",
    "maxProjectId",
    "generateProjectIdRetries",
    "exaMountUid",
    "exaMountGid",
    "bindMount",
    "mountOptions",
    "managementIp",
    "zone",
    "tempMountPoint",
    "volumeDirPermissions",
    "v1xCompatible",
];

/// Keys a StorageClass secret may carry; they override parameters and configuration.
pub const SECRET_KEYS: &[&str] = &["exaFS", "managementIp", "mountOptions"];

/// Every VolumeSnapshotClass key.
pub const SNAPSHOT_KEYS: &[&str] = &[
    "snapshotFolder",
    "snapshotUtility",
    "dtarPath",
    "snapshotMd5Verify",
    "snapshotChecksum",
];

/// Smallest generated project id unless `minProjectId` says otherwise.
pub const DEFAULT_MIN_PROJECT_ID: u32 = 10_000;
/// Largest generated project id unless `maxProjectId` says otherwise.
pub const DEFAULT_MAX_PROJECT_ID: u32 = u32::MAX;
/// Attempts to find a free random project id unless `generateProjectIdRetries` says otherwise.
pub const DEFAULT_PROJECT_ID_RETRIES: u32 = 5;

/// Whether unknown keys are errors (CreateVolume) or only keys without a `/` are
/// (a volume context, where Kubernetes adds `storage.kubernetes.io/...` keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strictness {
    /// Every key must be known.
    Strict,
    /// Keys with a `/` (added by Kubernetes components) are skipped.
    Context,
}

/// Parsed volume parameters; `None` means "not given" (the entry's value applies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeParams {
    /// `configName`: the `exascaler_map` entry.
    pub config_name: Option<String>,
    /// `exaFS`: another filesystem than the entry's.
    pub exa_fs: Option<ExaFs>,
    /// `mountPoint`: where that other filesystem is mounted.
    pub mount_point: Option<PathBuf>,
    /// `projectId`: the project id to use.
    pub project_id: Option<u32>,
    /// `minProjectId`.
    pub min_project_id: u32,
    /// `maxProjectId`.
    pub max_project_id: u32,
    /// `generateProjectIdRetries`.
    pub project_id_retries: u32,
    /// `exaMountUid`.
    pub uid: Option<u32>,
    /// `exaMountGid`.
    pub gid: Option<u32>,
    /// `bindMount`.
    pub bind_mount: Option<bool>,
    /// `mountOptions` (checked; a secret's replace the parameter's).
    pub mount_options: Vec<String>,
    /// `managementIp`.
    pub management_ip: Option<NidList>,
    /// `zone`: picks the entry of that zone.
    pub zone: Option<String>,
    /// `tempMountPoint`.
    pub temp_mount_point: Option<PathBuf>,
    /// `volumeDirPermissions`.
    pub permissions: Option<u32>,
    /// `v1xCompatible`: picks the v1.x entry.
    pub v1x_compatible: Option<bool>,
    /// Whether `exaFS` came from a secret (then it never goes into the volume context).
    pub exa_fs_from_secret: bool,
}

impl Default for VolumeParams {
    fn default() -> Self {
        Self {
            config_name: None,
            exa_fs: None,
            mount_point: None,
            project_id: None,
            min_project_id: DEFAULT_MIN_PROJECT_ID,
            max_project_id: DEFAULT_MAX_PROJECT_ID,
            project_id_retries: DEFAULT_PROJECT_ID_RETRIES,
            uid: None,
            gid: None,
            bind_mount: None,
            mount_options: Vec::new(),
            management_ip: None,
            zone: None,
            temp_mount_point: None,
            permissions: None,
            v1x_compatible: None,
            exa_fs_from_secret: false,
        }
    }
}

fn field(key: &str) -> String {
    format!("parameters[{key}]")
}

fn number<T: std::str::FromStr>(key: &str, value: &str) -> Result<T> {
    value.trim().parse().map_err(|_| {
        Error::invalid(
            &field(key),
            format!("{value:?} is not a whole number in range"),
        )
    })
}

fn flag(key: &str, value: &str) -> Result<bool> {
    parse_bool(value)
        .ok_or_else(|| Error::invalid(&field(key), format!("{value:?} is not true or false")))
}

impl VolumeParams {
    /// Parses and checks parameters; an unknown key is InvalidArgument naming it.
    pub fn parse(map: &BTreeMap<String, String>, strictness: Strictness) -> Result<Self> {
        let mut p = Self::default();
        for (key, value) in map {
            let value = value.as_str();
            let text = || value.trim().to_string();
            match key.as_str() {
                "configName" => p.config_name = Some(text()).filter(|s| !s.is_empty()),
                "exaFS" => {
                    p.exa_fs = Some(
                        ExaFs::parse(value.trim()).map_err(|e| Error::invalid(&field(key), e))?,
                    )
                }
                "mountPoint" => {
                    p.mount_point = Some(
                        absolute_dir(value.trim()).map_err(|r| Error::invalid(&field(key), r))?,
                    )
                }
                "projectId" => {
                    let id: u32 = number(key, value)?;
                    if id == 0 {
                        return Err(Error::invalid(
                            &field(key),
                            "project 0 is every file's default project and cannot hold a quota",
                        ));
                    }
                    p.project_id = Some(id);
                }
                "minProjectId" => p.min_project_id = number(key, value)?,
                "maxProjectId" => p.max_project_id = number(key, value)?,
                "generateProjectIdRetries" => p.project_id_retries = number(key, value)?,
                "exaMountUid" => p.uid = Some(number(key, value)?),
                "exaMountGid" => p.gid = Some(number(key, value)?),
                "bindMount" => p.bind_mount = Some(flag(key, value)?),
                "mountOptions" => {
                    p.mount_options = mount_options::parse(&[value])
                        .map_err(|r| Error::invalid(&field(key), r))?
                }
                "managementIp" => {
                    p.management_ip = Some(
                        NidList::parse(value.trim()).map_err(|e| Error::invalid(&field(key), e))?,
                    )
                }
                "zone" => {
                    let zone = text();
                    check_label_value(&zone).map_err(|r| Error::invalid(&field(key), r))?;
                    p.zone = Some(zone);
                }
                "tempMountPoint" => {
                    p.temp_mount_point = Some(
                        absolute_dir(value.trim()).map_err(|r| Error::invalid(&field(key), r))?,
                    )
                }
                "volumeDirPermissions" => {
                    p.permissions = Some(
                        parse_permissions(&serde_json::Value::String(value.to_string()))
                            .map_err(|r| Error::invalid(&field(key), r))?,
                    )
                }
                "v1xCompatible" => p.v1x_compatible = Some(flag(key, value)?),
                other if strictness == Strictness::Context && other.contains('/') => {}
                other if SNAPSHOT_KEYS.contains(&other) => {
                    return Err(Error::invalid(
                        &field(other),
                        "is a VolumeSnapshotClass parameter, not a StorageClass one",
                    ));
                }
                other => {
                    return Err(Error::invalid(
                        &field(other),
                        format!(
                            "unknown parameter; known parameters are {}",
                            VOLUME_KEYS.join(", ")
                        ),
                    ));
                }
            }
        }
        if p.min_project_id == 0 {
            return Err(Error::invalid(&field("minProjectId"), "must be at least 1"));
        }
        if p.min_project_id > p.max_project_id {
            let (key, reason) = if map.contains_key("minProjectId") {
                (
                    "minProjectId",
                    format!(
                        "{} is larger than maxProjectId {}",
                        p.min_project_id, p.max_project_id
                    ),
                )
            } else {
                (
                    "maxProjectId",
                    format!(
                        "{} is smaller than minProjectId {}",
                        p.max_project_id, p.min_project_id
                    ),
                )
            };
            return Err(Error::invalid(&field(key), reason));
        }
        Ok(p)
    }

    /// Applies StorageClass secrets: `exaFS`, `managementIp` and `mountOptions` override the
    /// parameters. Errors never quote a secret's value.
    pub fn apply_secrets(&mut self, secrets: &Secrets) -> Result<()> {
        let secret_field = |key: &str| format!("secrets[{key}]");
        if let Some(v) = secrets.get("exaFS") {
            self.exa_fs = Some(ExaFs::parse(v.trim()).map_err(|_| {
                Error::invalid(
                    &secret_field("exaFS"),
                    "is not NID[:NID...]:/fsname[/subdir]",
                )
            })?);
            self.exa_fs_from_secret = true;
        }
        if let Some(v) = secrets.get("managementIp") {
            self.management_ip =
                Some(NidList::parse(v.trim()).map_err(|_| {
                    Error::invalid(&secret_field("managementIp"), "is not a NID list")
                })?);
        }
        if let Some(v) = secrets.get("mountOptions") {
            self.mount_options = mount_options::parse(&[v]).map_err(|_| {
                Error::invalid(
                    &secret_field("mountOptions"),
                    "holds a mount option that is not allowed (remount, bind, move, make-*, paths...)",
                )
            })?;
        }
        Ok(())
    }

    /// Whether any key of these parameters belongs to the Lustre backend.
    pub fn claims(map: &BTreeMap<String, String>) -> bool {
        !map.is_empty()
            && map
                .keys()
                .all(|k| VOLUME_KEYS.contains(&k.as_str()) || SNAPSHOT_KEYS.contains(&k.as_str()))
    }
}

/// Which archiver a snapshot class asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotUtility {
    /// GNU tar (default).
    Tar,
    /// mpifileutils dtar.
    Dtar,
}

/// Parsed VolumeSnapshotClass parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotParams {
    /// Folder below the filesystem root for archives; `None`: the metadata directory's.
    pub folder: Option<VolumePath>,
    /// `snapshotUtility`.
    pub utility: SnapshotUtility,
    /// `dtarPath`.
    pub dtar_path: Option<PathBuf>,
    /// `snapshotMd5Verify` (the name kept for compatibility): keep a checksum beside the
    /// archive and check it before restores.
    pub verify: bool,
    /// `snapshotChecksum`: `xxh128` (default), `blake3` or `md5`.
    pub checksum: ChecksumKind,
}

impl SnapshotParams {
    /// Parses and checks snapshot class parameters.
    pub fn parse(map: &BTreeMap<String, String>) -> Result<Self> {
        let mut p = Self {
            folder: None,
            utility: SnapshotUtility::Tar,
            dtar_path: None,
            verify: false,
            checksum: ChecksumKind::default(),
        };
        for (key, value) in map {
            match key.as_str() {
                "snapshotFolder" => {
                    let path =
                        VolumePath::parse(value).map_err(|r| Error::invalid(&field(key), r))?;
                    if path.is_root() {
                        return Err(Error::invalid(
                            &field(key),
                            "must name a folder below the filesystem root",
                        ));
                    }
                    p.folder = Some(path);
                }
                "snapshotUtility" => {
                    p.utility = match value.trim().to_ascii_lowercase().as_str() {
                        "tar" => SnapshotUtility::Tar,
                        "dtar" => SnapshotUtility::Dtar,
                        _ => {
                            return Err(Error::invalid(
                                &field(key),
                                format!("{value:?} is neither tar nor dtar"),
                            ));
                        }
                    }
                }
                "dtarPath" => {
                    let path = PathBuf::from(value.trim());
                    if !path.is_absolute() || value.contains('\0') {
                        return Err(Error::invalid(
                            &field(key),
                            format!("{value:?} is not an absolute path"),
                        ));
                    }
                    p.dtar_path = Some(path);
                }
                "snapshotMd5Verify" => p.verify = flag(key, value)?,
                "snapshotChecksum" => {
                    p.checksum = ChecksumKind::parse(value).ok_or_else(|| {
                        Error::invalid(
                            &field(key),
                            format!("{value:?} is not xxh128, blake3 or md5"),
                        )
                    })?;
                }
                other if VOLUME_KEYS.contains(&other) => {
                    return Err(Error::invalid(
                        &field(other),
                        "is a StorageClass parameter, not a VolumeSnapshotClass one",
                    ));
                }
                other => {
                    return Err(Error::invalid(
                        &field(other),
                        format!(
                            "unknown parameter; known parameters are {}",
                            SNAPSHOT_KEYS.join(", ")
                        ),
                    ));
                }
            }
        }
        Ok(p)
    }

    /// The archive options: the tool path from `dtarPath` or the settings.
    pub fn archive_options(&self, settings: &LustreSettings) -> ArchiveOptions {
        let tool = match self.utility {
            SnapshotUtility::Tar => ArchiveTool::Tar(settings.tar.clone()),
            SnapshotUtility::Dtar => ArchiveTool::Dtar(
                self.dtar_path
                    .clone()
                    .unwrap_or_else(|| settings.dtar.clone()),
            ),
        };
        ArchiveOptions {
            tool,
            verify: self.verify,
            checksum: self.checksum,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use csi_core::ErrorCode;
    use proptest::prelude::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_readme_storage_class_parses() {
        let p = VolumeParams::parse(
            &map(&[
                ("projectId", "100001"),
                ("exaMountUid", "1001"),
                ("exaMountGid", "1002"),
                ("bindMount", "false"),
                ("exaFS", "10.204.86.114@tcp:/testfs"),
                ("mountPoint", "/exaFS"),
                ("mountOptions", "ro,noflock"),
                ("volumeDirPermissions", "0777"),
                ("minProjectId", "10000"),
                ("maxProjectId", "4294967295"),
                ("generateProjectIdRetries", "5"),
                ("zone", "us-west"),
                ("v1xCompatible", "false"),
                ("tempMountPoint", "/tmp/exafs-mnt"),
                ("managementIp", "192.168.10.20@tcp2"),
                ("configName", "exa1"),
            ]),
            Strictness::Strict,
        )
        .unwrap();
        assert_eq!(p.project_id, Some(100001));
        assert_eq!((p.uid, p.gid), (Some(1001), Some(1002)));
        assert_eq!(p.bind_mount, Some(false));
        assert_eq!(p.mount_options, vec!["ro", "noflock"]);
        assert_eq!(p.permissions, Some(0o777));
        assert_eq!(p.max_project_id, u32::MAX);
        assert_eq!(p.exa_fs.unwrap().fsname, "testfs");
        assert_eq!(p.config_name.as_deref(), Some("exa1"));
    }

    #[test]
    fn each_bad_parameter_is_named() {
        for (pairs, named) in [
            (
                vec![("colour", "blue")],
                "parameters[colour]: unknown parameter",
            ),
            (vec![("projectId", "x")], "parameters[projectId]"),
            (vec![("projectId", "0")], "parameters[projectId]: project 0"),
            (vec![("projectId", "4294967296")], "parameters[projectId]"),
            (vec![("bindMount", "perhaps")], "parameters[bindMount]"),
            (
                vec![("mountOptions", "ro,remount")],
                "parameters[mountOptions]: mount option \"remount\"",
            ),
            (vec![("mountPoint", "relative")], "parameters[mountPoint]"),
            (vec![("exaFS", "/testfs")], "parameters[exaFS]"),
            (vec![("zone", "no spaces")], "parameters[zone]"),
            (
                vec![("volumeDirPermissions", "rwx")],
                "parameters[volumeDirPermissions]",
            ),
            (
                vec![("minProjectId", "10"), ("maxProjectId", "5")],
                "parameters[minProjectId]: 10 is larger",
            ),
            (vec![("minProjectId", "0")], "parameters[minProjectId]"),
            (
                vec![("snapshotFolder", "x")],
                "VolumeSnapshotClass parameter",
            ),
        ] {
            let err = VolumeParams::parse(&map(&pairs), Strictness::Strict).unwrap_err();
            assert_eq!(err.code(), ErrorCode::InvalidArgument);
            assert!(err.to_string().contains(named), "{pairs:?}: {err}");
        }
    }

    #[test]
    fn contexts_skip_keys_added_by_kubernetes() {
        let m = map(&[
            ("storage.kubernetes.io/csiProvisionerIdentity", "x"),
            ("bindMount", "true"),
        ]);
        assert!(VolumeParams::parse(&m, Strictness::Strict).is_err());
        assert_eq!(
            VolumeParams::parse(&m, Strictness::Context)
                .unwrap()
                .bind_mount,
            Some(true)
        );
        assert!(VolumeParams::parse(&map(&[("colour", "x")]), Strictness::Context).is_err());
    }

    #[test]
    fn secrets_override_and_are_never_quoted() {
        let mut p =
            VolumeParams::parse(&map(&[("mountOptions", "flock")]), Strictness::Strict).unwrap();
        let secrets = Secrets::new(map(&[
            ("exaFS", "10.0.0.9@o2ib:/hidden"),
            ("mountOptions", "noflock"),
            ("other", "x"),
        ]));
        p.apply_secrets(&secrets).unwrap();
        assert_eq!(p.exa_fs.as_ref().unwrap().fsname, "hidden");
        assert!(p.exa_fs_from_secret);
        assert_eq!(p.mount_options, vec!["noflock"]);
        for (key, value) in [
            ("exaFS", "s3cr3t-value"),
            ("managementIp", "s3cr3t-value"),
            ("mountOptions", "bind,s3cr3t-value"),
        ] {
            let err = VolumeParams::default()
                .apply_secrets(&Secrets::new(map(&[(key, value)])))
                .unwrap_err();
            assert!(!err.to_string().contains("s3cr3t"), "{err}");
            assert!(
                err.to_string().contains(&format!("secrets[{key}]")),
                "{err}"
            );
        }
    }

    #[test]
    fn snapshot_class_parameters() {
        let p = SnapshotParams::parse(&map(&[
            ("snapshotFolder", "csi-snapshots"),
            ("snapshotUtility", "dtar"),
            ("dtarPath", "/opt/ddn/mpifileutils/bin/dtar"),
            ("snapshotMd5Verify", "true"),
            ("snapshotChecksum", " MD5"),
        ]))
        .unwrap();
        assert_eq!(p.folder.unwrap().to_string(), "csi-snapshots");
        assert_eq!(p.utility, SnapshotUtility::Dtar);
        assert!(p.verify);
        assert_eq!(p.checksum, ChecksumKind::Md5);
        let settings = LustreSettings::default();
        let opts = SnapshotParams::parse(&map(&[("snapshotUtility", "dtar")]))
            .unwrap()
            .archive_options(&settings);
        assert_eq!(opts.tool, ArchiveTool::Dtar(settings.dtar.clone()));
        let opts = SnapshotParams::parse(&BTreeMap::new())
            .unwrap()
            .archive_options(&settings);
        assert_eq!(
            opts,
            ArchiveOptions {
                tool: ArchiveTool::Tar("tar".into()),
                verify: false,
                checksum: ChecksumKind::Xxh128,
            }
        );
        for (pairs, named) in [
            (
                vec![("snapshotFolder", "../x")],
                "parameters[snapshotFolder]",
            ),
            (vec![("snapshotFolder", "/")], "parameters[snapshotFolder]"),
            (
                vec![("snapshotUtility", "zip")],
                "parameters[snapshotUtility]",
            ),
            (vec![("dtarPath", "dtar")], "parameters[dtarPath]"),
            (
                vec![("snapshotMd5Verify", "2")],
                "parameters[snapshotMd5Verify]",
            ),
            (
                vec![("snapshotChecksum", "sha1")],
                "parameters[snapshotChecksum]",
            ),
            (vec![("projectId", "1")], "StorageClass parameter"),
            (vec![("colour", "1")], "parameters[colour]"),
        ] {
            let err = SnapshotParams::parse(&map(&pairs)).unwrap_err();
            assert_eq!(err.code(), ErrorCode::InvalidArgument);
            assert!(err.to_string().contains(named), "{pairs:?}: {err}");
        }
    }

    #[test]
    fn only_lustre_keys_are_claimed() {
        assert!(VolumeParams::claims(&map(&[("exaMountUid", "1")])));
        assert!(!VolumeParams::claims(&map(&[
            ("exaMountUid", "1"),
            ("storagePool", "1")
        ])));
        assert!(!VolumeParams::claims(&BTreeMap::new()));
    }

    proptest! {
        #[test]
        fn parsing_never_panics(key in prop::sample::select(VOLUME_KEYS.to_vec()), value in "\\PC{0,30}") {
            let m = map(&[(key, value.as_str())]);
            if let Err(e) = VolumeParams::parse(&m, Strictness::Strict) {
                prop_assert_eq!(e.code(), ErrorCode::InvalidArgument);
                let named = format!("parameters[{key}]");
                prop_assert!(e.to_string().contains(&named));
            }
        }

        #[test]
        fn snapshot_checksums_parse_by_name_or_fail_naming_the_key(
            value in "\\PC{0,12}",
            kind in prop::sample::select(ChecksumKind::ALL.to_vec()),
            upper in any::<bool>(),
            pad in "[ \t]{0,2}",
        ) {
            match SnapshotParams::parse(&map(&[("snapshotChecksum", value.as_str())])) {
                Ok(p) => prop_assert!(p.checksum.name().eq_ignore_ascii_case(value.trim())),
                Err(e) => {
                    prop_assert_eq!(e.code(), ErrorCode::InvalidArgument);
                    prop_assert!(e.to_string().contains("parameters[snapshotChecksum]"));
                }
            }
            // Each kind's name, in either case and with blanks around it, is that kind.
            let name = if upper { kind.name().to_uppercase() } else { kind.name().to_string() };
            let spelled = format!("{pad}{name}{pad}");
            let p = SnapshotParams::parse(&map(&[("snapshotChecksum", spelled.as_str())]));
            prop_assert_eq!(p.map(|p| p.checksum).ok(), Some(kind));
        }

        #[test]
        fn snapshot_folders_never_climb(value in "[a-z./]{0,20}") {
            if let Ok(p) = SnapshotParams::parse(&map(&[("snapshotFolder", value.as_str())])) {
                let folder = p.folder.unwrap();
                prop_assert!(!folder.components().iter().any(|c| c == ".."));
                prop_assert!(!folder.is_root());
            }
        }
    }
}
