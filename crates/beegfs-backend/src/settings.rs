//! This driver's own BeeGFS settings, read from the `pfsCsi.beegfs` key of a YAML file (the
//! driver configuration file itself or a separate one); every key has a default.
//!
//! ```yaml
//! pfsCsi:
//!   beegfs:
//!     mountTool: mount
//!     beegfsCtlTool: beegfs-ctl          # BeeGFS 7
//!     beegfsTool: beegfs                 # BeeGFS 8
//!     clientConfTemplate: /etc/beegfs/beegfs-client.conf
//!     commandTimeoutSeconds: 30
//!     mountTimeoutSeconds: 60
//!     clientMountMode: perVolume         # or shared
//!     nodeUnstageTimeoutSeconds: 120
//!     deleteWaitSeconds: 10
//!     contentWaitSeconds: 10
//!     grpcPort: 8010
//!     quotas:
//!       - sysMgmtdHost: 10.0.0.5
//!         enabled: true
//!         gidMin: 2000000
//!         gidMax: 2099999
//!         storagePool: 1
//!         inodesPerGib: 100000            # absent: no inode limit
//!     snapshots: {tar: tar, verifyMd5: true, checksum: xxh128}   # checksum: xxh128 | blake3 | md5
//! ```
//!
//! Tools named without a `/` are looked up first under
//! `<kubeletDir>/plugins/<driver name>/client/{bin,sbin,}` (where the OpenShift client
//! DaemonSet puts them), then in `/sbin`, `/usr/sbin` and `PATH`
//! ([`csi_core::client_tools`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use csi_core::client_tools;
use csi_core::ports::ChecksumKind;
use serde::Deserialize;
use serde_yaml::Value;

use crate::config::check_host;
use crate::error::ConfigError;

/// Default template locations, tried in order when none is configured.
pub const DEFAULT_TEMPLATE: &str = "/etc/beegfs/beegfs-client.conf";

/// The longest timeout or wait accepted: ten years, far below what a deadline can hold.
pub const MAX_WAIT_SECONDS: u64 = 10 * 365 * 24 * 3600;

/// One client mount per volume, or one per filesystem shared by its volumes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ClientMountMode {
    /// One BeeGFS client instance (and UDP port) per staged volume, as the reference driver.
    #[default]
    PerVolume,
    /// One client instance per filesystem per node, reference-counted by its staged volumes.
    Shared,
}

/// Quota settings of one filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuotaSettings {
    /// The filesystem.
    pub sys_mgmtd_host: String,
    /// Whether volumes get a group id and group quota limits.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Smallest group id handed to a volume.
    #[serde(default)]
    pub gid_min: u32,
    /// Largest group id handed to a volume.
    #[serde(default)]
    pub gid_max: u32,
    /// The storage pool the limits are set on.
    #[serde(default = "default_pool")]
    pub storage_pool: u16,
    /// Inodes allowed per GiB of capacity; absent: no inode limit.
    #[serde(default)]
    pub inodes_per_gib: Option<u64>,
}

fn yes() -> bool {
    true
}

fn default_pool() -> u16 {
    1
}

/// How snapshot archives are written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct SnapshotSettings {
    /// GNU tar.
    pub tar: PathBuf,
    /// mpifileutils `dtar`; used instead of tar when set.
    pub dtar: Option<PathBuf>,
    /// Write a checksum of every archive and check it before restores (key `verifyMd5`,
    /// kept for compatibility).
    #[serde(rename = "verifyMd5")]
    pub verify: bool,
    /// Which checksum: `xxh128` (default), `blake3` or `md5`.
    pub checksum: ChecksumKind,
}

impl Default for SnapshotSettings {
    fn default() -> Self {
        Self {
            tar: PathBuf::from("tar"),
            dtar: None,
            verify: true,
            checksum: ChecksumKind::default(),
        }
    }
}

/// The BeeGFS backend's settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct BeegfsSettings {
    /// The `mount` program (for the wiring's mounter).
    pub mount_tool: PathBuf,
    /// The BeeGFS 7 `beegfs-ctl`.
    pub beegfs_ctl_tool: PathBuf,
    /// The BeeGFS 8 `beegfs` tool.
    pub beegfs_tool: PathBuf,
    /// The `beegfs-client.conf` template; absent: the default locations, then a built-in one.
    pub client_conf_template: Option<PathBuf>,
    /// Timeout of every BeeGFS tool call.
    pub command_timeout_seconds: u64,
    /// Timeout of every mount (for the wiring's mounter).
    pub mount_timeout_seconds: u64,
    /// Client mounts per volume or per filesystem.
    pub client_mount_mode: ClientMountMode,
    /// How long DeleteVolume waits, over all its retries, for nodes to unstage a volume
    /// before deleting it anyway; 0: never wait.
    pub node_unstage_timeout_seconds: u64,
    /// How long one DeleteVolume call waits for nodes before answering "retry later".
    pub delete_wait_seconds: u64,
    /// How long a restore, a DeleteSnapshot or a DeleteVolume waits for a snapshot of the
    /// volume that is still being cut, and a CreateVolume for the restore or clone filling
    /// it, before answering "retry later".
    pub content_wait_seconds: u64,
    /// The BeeGFS 8 management gRPC port when the driver configuration gives none.
    pub grpc_port: u16,
    /// Quota settings per filesystem; filesystems not listed have quotas off.
    pub quotas: Vec<QuotaSettings>,
    /// Snapshot archives.
    pub snapshots: SnapshotSettings,
    /// The file whose existence means SELinux is on.
    pub selinux_enforce_path: PathBuf,
}

impl Default for BeegfsSettings {
    fn default() -> Self {
        Self {
            mount_tool: PathBuf::from("mount"),
            beegfs_ctl_tool: PathBuf::from("beegfs-ctl"),
            beegfs_tool: PathBuf::from("beegfs"),
            client_conf_template: None,
            command_timeout_seconds: 30,
            mount_timeout_seconds: 60,
            client_mount_mode: ClientMountMode::PerVolume,
            node_unstage_timeout_seconds: 120,
            delete_wait_seconds: 10,
            content_wait_seconds: 10,
            grpc_port: 8010,
            quotas: Vec::new(),
            snapshots: SnapshotSettings::default(),
            selinux_enforce_path: PathBuf::from("/sys/fs/selinux/enforce"),
        }
    }
}

/// Tool and template paths after the plugin-directory search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedTools {
    /// `mount`.
    pub mount: PathBuf,
    /// `beegfs-ctl` (BeeGFS 7).
    pub beegfs_ctl: PathBuf,
    /// `beegfs` (BeeGFS 8).
    pub beegfs: PathBuf,
    /// Candidate templates, in order; the first readable one is used.
    pub templates: Vec<PathBuf>,
}

impl BeegfsSettings {
    /// Reads the `pfsCsi.beegfs` key of a YAML document; defaults when it is absent.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let malformed = |e: serde_yaml::Error| ConfigError::Malformed {
            what: "pfsCsi.beegfs".into(),
            message: e.to_string(),
        };
        let doc: Value = serde_yaml::from_str(text).map_err(malformed)?;
        let section = doc
            .get("pfsCsi")
            .and_then(|p| p.get("beegfs"))
            .cloned()
            .unwrap_or(Value::Null);
        let settings: Self = if section.is_null() {
            Self::default()
        } else {
            serde_yaml::from_value(section).map_err(malformed)?
        };
        settings.validate()?;
        Ok(settings)
    }

    /// Reads a settings file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_yaml(&text)
    }

    /// Checks values serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(format!("pfsCsi.beegfs.{m}")));
        if self.command_timeout_seconds == 0 || self.mount_timeout_seconds == 0 {
            return invalid("commandTimeoutSeconds and mountTimeoutSeconds must be > 0".into());
        }
        // Waits become deadlines (`Instant + Duration`), which overflow long before u64::MAX.
        for (key, secs) in [
            ("commandTimeoutSeconds", self.command_timeout_seconds),
            ("mountTimeoutSeconds", self.mount_timeout_seconds),
            (
                "nodeUnstageTimeoutSeconds",
                self.node_unstage_timeout_seconds,
            ),
            ("deleteWaitSeconds", self.delete_wait_seconds),
            ("contentWaitSeconds", self.content_wait_seconds),
        ] {
            if secs > MAX_WAIT_SECONDS {
                return invalid(format!(
                    "{key}: {secs} is more than {MAX_WAIT_SECONDS} (ten years)"
                ));
            }
        }
        if self.grpc_port == 0 {
            return invalid("grpcPort: must be > 0".into());
        }
        for (i, q) in self.quotas.iter().enumerate() {
            if let Err(e) = check_host(&q.sys_mgmtd_host) {
                return invalid(format!("quotas[{i}].sysMgmtdHost: {e}"));
            }
            if self.quotas[..i]
                .iter()
                .any(|o| o.sys_mgmtd_host == q.sys_mgmtd_host)
            {
                return invalid(format!("quotas[{i}]: {} is listed twice", q.sys_mgmtd_host));
            }
            if q.enabled {
                if q.gid_min == 0 {
                    return invalid(format!(
                        "quotas[{i}].gidMin: must be > 0 (gid 0 is root's group)"
                    ));
                }
                if q.gid_min > q.gid_max {
                    return invalid(format!(
                        "quotas[{i}]: gidMin {} is larger than gidMax {}",
                        q.gid_min, q.gid_max
                    ));
                }
            }
            if q.inodes_per_gib == Some(0) {
                return invalid(format!("quotas[{i}].inodesPerGib: must be > 0 or absent"));
            }
        }
        Ok(())
    }

    /// Timeout of tool calls.
    pub fn command_timeout(&self) -> Duration {
        Duration::from_secs(self.command_timeout_seconds)
    }

    /// Timeout of mounts.
    pub fn mount_timeout(&self) -> Duration {
        Duration::from_secs(self.mount_timeout_seconds)
    }

    /// The quota settings of `host` when quotas are enabled there.
    pub fn quota_for(&self, host: &str) -> Option<&QuotaSettings> {
        self.quotas
            .iter()
            .find(|q| q.sys_mgmtd_host == host && q.enabled)
    }

    /// Resolves tool names against the client directory the OpenShift/Helm client
    /// DaemonSets fill (`client_dir`: see [`csi_core::client_tools`]), then the system
    /// directories and `PATH`.
    pub fn resolve_tools(&self, client_dir: &Path) -> ResolvedTools {
        let dirs = client_tools::tool_dirs(client_dir, std::env::var_os("PATH").as_deref());
        let templates = match &self.client_conf_template {
            Some(t) => vec![t.clone()],
            None => vec![
                PathBuf::from(DEFAULT_TEMPLATE),
                client_dir.join("etc/beegfs/beegfs-client.conf"),
                client_dir.join("beegfs-client.conf"),
            ],
        };
        ResolvedTools {
            mount: client_tools::resolve_tool(&self.mount_tool, &dirs),
            beegfs_ctl: client_tools::resolve_tool(&self.beegfs_ctl_tool, &dirs),
            beegfs: client_tools::resolve_tool(&self.beegfs_tool, &dirs),
            templates,
        }
    }
}

/// Whether `program` can be run: an existing file for a path, a `PATH` hit for a name.
pub fn tool_exists(program: &Path) -> bool {
    if program.components().count() > 1 || program.is_absolute() {
        return program.is_file();
    }
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn absent_section_gives_defaults() {
        let s = BeegfsSettings::from_yaml("config: {}\n").unwrap();
        assert_eq!(s, BeegfsSettings::default());
        assert_eq!(s.client_mount_mode, ClientMountMode::PerVolume);
        assert_eq!(s.grpc_port, 8010);
        assert_eq!(
            BeegfsSettings::from_yaml("").unwrap(),
            BeegfsSettings::default()
        );
    }

    #[test]
    fn every_key_is_read_in_camel_case() {
        let s = BeegfsSettings::from_yaml(
            "pfsCsi:\n  beegfs:\n    clientMountMode: shared\n    commandTimeoutSeconds: 5\n    nodeUnstageTimeoutSeconds: 0\n    grpcPort: 9010\n    beegfsCtlTool: /opt/beegfs/sbin/beegfs-ctl\n    quotas:\n      - sysMgmtdHost: 10.0.0.5\n        gidMin: 100\n        gidMax: 200\n        inodesPerGib: 1000\n      - sysMgmtdHost: fs-b\n        enabled: false\n    snapshots:\n      verifyMd5: false\n      checksum: md5\n",
        )
        .unwrap();
        assert_eq!(s.client_mount_mode, ClientMountMode::Shared);
        assert_eq!(s.command_timeout(), Duration::from_secs(5));
        assert_eq!(s.node_unstage_timeout_seconds, 0);
        assert_eq!(s.grpc_port, 9010);
        let q = s.quota_for("10.0.0.5").unwrap();
        assert_eq!((q.gid_min, q.gid_max, q.storage_pool), (100, 200, 1));
        assert_eq!(q.inodes_per_gib, Some(1000));
        assert!(s.quota_for("fs-b").is_none(), "disabled quotas are off");
        assert!(s.quota_for("other").is_none());
        assert!(!s.snapshots.verify);
        assert_eq!(s.snapshots.checksum, ChecksumKind::Md5);
        assert_eq!(s.snapshots.tar, PathBuf::from("tar"));
    }

    #[test]
    fn waits_too_long_for_a_deadline_are_refused() {
        // u64::MAX seconds used to be accepted, and the first wait for a snapshot cut then
        // panicked adding it to `Instant::now()` (the beegfs_config fuzz target checks that
        // every accepted wait fits a deadline).
        assert!(
            std::time::Instant::now()
                .checked_add(Duration::from_secs(MAX_WAIT_SECONDS))
                .is_some()
        );
        for key in [
            "commandTimeoutSeconds",
            "mountTimeoutSeconds",
            "nodeUnstageTimeoutSeconds",
            "deleteWaitSeconds",
            "contentWaitSeconds",
        ] {
            for secs in [MAX_WAIT_SECONDS + 1, u64::MAX] {
                let yaml = format!("pfsCsi:\n  beegfs:\n    {key}: {secs}\n");
                let err = BeegfsSettings::from_yaml(&yaml).unwrap_err().to_string();
                assert!(err.contains(key), "{yaml}: {err}");
            }
            let yaml = format!("pfsCsi:\n  beegfs:\n    {key}: {MAX_WAIT_SECONDS}\n");
            assert!(BeegfsSettings::from_yaml(&yaml).is_ok(), "{yaml}");
        }
    }

    #[test]
    fn invalid_settings_name_their_key() {
        let cases = [
            ("clientMountMode: sometimes", "pfsCsi.beegfs"),
            ("colour: blue", "pfsCsi.beegfs"),
            (
                "quotas: [{sysMgmtdHost: h, gidMin: 0, gidMax: 5}]",
                "quotas[0].gidMin",
            ),
            (
                "quotas: [{sysMgmtdHost: h, gidMin: 9, gidMax: 5}]",
                "quotas[0]",
            ),
            (
                "quotas: [{sysMgmtdHost: h, gidMin: 1, gidMax: 5}, {sysMgmtdHost: h, gidMin: 1, gidMax: 5}]",
                "quotas[1]",
            ),
            ("grpcPort: 0", "grpcPort"),
            ("commandTimeoutSeconds: 0", "commandTimeoutSeconds"),
        ];
        for (body, key) in cases {
            let yaml = format!("pfsCsi:\n  beegfs: {{{body}}}\n");
            let err = BeegfsSettings::from_yaml(&yaml).unwrap_err().to_string();
            assert!(err.contains(key), "{body}: {err}");
        }
    }

    #[test]
    fn tools_are_found_in_the_client_directory_first() {
        use std::os::unix::fs::PermissionsExt;
        let kubelet = tempfile::tempdir().unwrap();
        let s = BeegfsSettings::default();
        let dir = client_tools::client_dir(kubelet.path(), "beegfs.csi.netapp.com");
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        let ctl = dir.join("bin/beegfs-ctl");
        std::fs::write(&ctl, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&ctl, std::fs::Permissions::from_mode(0o755)).unwrap();
        let tools = s.resolve_tools(&dir);
        assert_eq!(tools.beegfs_ctl, ctl);
        assert_eq!(
            tools.templates,
            vec![
                PathBuf::from(DEFAULT_TEMPLATE),
                dir.join("etc/beegfs/beegfs-client.conf"),
                dir.join("beegfs-client.conf")
            ]
        );
        let custom = BeegfsSettings {
            beegfs_ctl_tool: PathBuf::from("/opt/ctl"),
            client_conf_template: Some(PathBuf::from("/t.conf")),
            ..BeegfsSettings::default()
        }
        .resolve_tools(&dir);
        assert_eq!(custom.beegfs_ctl, PathBuf::from("/opt/ctl"));
        assert_eq!(custom.templates, vec![PathBuf::from("/t.conf")]);
    }

    #[test]
    fn tool_existence_checks_paths_and_path_lookups() {
        assert!(tool_exists(Path::new("sh")));
        assert!(!tool_exists(Path::new("/nonexistent/beegfs-ctl")));
        assert!(!tool_exists(Path::new("surely-not-a-real-tool-name")));
    }

    proptest! {
        #[test]
        fn parsing_arbitrary_text_never_panics(text in "(?s).{0,200}") {
            let _ = BeegfsSettings::from_yaml(&text);
            let _ = BeegfsSettings::from_yaml(&format!("pfsCsi:\n  beegfs:\n    {text}"));
        }

        #[test]
        fn valid_gid_ranges_are_accepted(min in 1u32..1_000_000, span in 0u32..1_000_000) {
            let yaml = format!(
                "pfsCsi:\n  beegfs:\n    quotas:\n      - sysMgmtdHost: h\n        gidMin: {min}\n        gidMax: {}\n",
                min + span
            );
            let s = BeegfsSettings::from_yaml(&yaml).unwrap();
            prop_assert_eq!(s.quota_for("h").unwrap().gid_max, min + span);
        }
    }
}
