//! Configuration: the EXAScaler driver's configuration file, read unchanged, and this
//! driver's own Lustre settings.
//!
//! The EXAScaler file ([`LustreConfig`]) is a map of clusters:
//!
//! ```yaml
//! exascaler_map:
//!   exa1:
//!     exaFS: 192.168.88.114@tcp2:192.168.98.114@tcp2:/testfs
//!     mountPoint: /exaFS
//!     managementIp: 10.204.86.114@tcp
//!     zone: zone-1
//! debug: true
//! ```
//!
//! The flat v1.x format (`exaFS`, `mountPoint`, `debug` at the top) is read as one entry named
//! [`V1X_ENTRY_NAME`] with `v1xCompatible: true`. Booleans and numbers written as strings
//! (`"true"`, `"1001"`) are accepted, as the original driver did. Keys this driver does not use
//! (newer EXAScaler features) are kept in [`LustreConfig::ignored_keys`] and logged; a key that
//! differs from a known one only in case is an error, since it is almost surely a typo.
//!
//! Our own settings ([`LustreSettings`]) live under `pfsCsi.lustre` of the driver's config file.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use csi_core::client_tools;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::error::LustreError;
use crate::exafs::{ExaFs, NidList};
use crate::mount_options;

/// Name given to the single entry a flat v1.x configuration becomes.
pub const V1X_ENTRY_NAME: &str = "v1x";

/// Every key an `exascaler_map` entry may hold.
pub const ENTRY_KEYS: &[&str] = &[
    "exaFS",
    "mountPoint",
    "managementIp",
    "zone",
    "v1xCompatible",
    "bindMount",
    "defaultMountOptions",
    "tempMountPoint",
    "volumeDirPermissions",
];

/// One EXAScaler cluster (`exascaler_map` entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LustreEntry {
    /// The entry's name (the map key); volume ids start with it.
    pub name: String,
    /// The filesystem (and subdirectory) volumes are created in.
    pub exa_fs: ExaFs,
    /// Where the filesystem is mounted on controller and nodes.
    pub mount_point: PathBuf,
    /// NIDs of the management network, used instead of the `exaFS` NIDs for controller mounts.
    pub management_ip: Option<NidList>,
    /// Topology zone of the cluster.
    pub zone: Option<String>,
    /// Whether this entry serves v1.x volume handles (`/mountPoint/dir`).
    pub v1x_compatible: bool,
    /// Default of the `bindMount` parameter.
    pub bind_mount: bool,
    /// Options of every Lustre mount of this entry (checked).
    pub default_mount_options: Vec<String>,
    /// Where the filesystem root is mounted for a moment to create a missing `exaFS`
    /// subdirectory.
    pub temp_mount_point: Option<PathBuf>,
    /// Mode of new volume directories.
    pub volume_dir_permissions: Option<u32>,
}

impl LustreEntry {
    /// An entry with the defaults for everything but the filesystem and mount point.
    pub fn new(name: &str, exa_fs: ExaFs, mount_point: impl Into<PathBuf>) -> Self {
        Self {
            name: name.to_string(),
            exa_fs,
            mount_point: mount_point.into(),
            management_ip: None,
            zone: None,
            v1x_compatible: false,
            bind_mount: true,
            default_mount_options: Vec::new(),
            temp_mount_point: None,
            volume_dir_permissions: None,
        }
    }

    fn from_map(
        name: &str,
        map: &Map<String, Value>,
        ignored: &mut Vec<String>,
    ) -> Result<Self, LustreError> {
        check_entry_name(name)?;
        let err = |key: &str, reason: String| LustreError::entry(name, key, reason);
        for key in map.keys() {
            if ENTRY_KEYS.contains(&key.as_str()) {
                continue;
            }
            if let Some(known) = ENTRY_KEYS.iter().find(|k| k.eq_ignore_ascii_case(key)) {
                return Err(err(key, format!("unknown key; did you mean {known}?")));
            }
            ignored.push(format!("exascaler_map.{name}.{key}"));
        }
        let text = |key: &str| -> Result<Option<String>, LustreError> {
            match map.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => lenient_string(v)
                    .map(|s| Some(s.trim().to_string()).filter(|s| !s.is_empty()))
                    .ok_or_else(|| err(key, format!("expected a string, got {v}"))),
            }
        };
        let flag = |key: &str, default: bool| -> Result<bool, LustreError> {
            match map.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(v) => lenient_bool(v)
                    .ok_or_else(|| err(key, format!("expected true or false, got {v}"))),
            }
        };

        let exa_fs = text("exaFS")?
            .ok_or_else(|| err("exaFS", "is required".into()))
            .and_then(|t| ExaFs::parse(&t).map_err(|e| err("exaFS", e.to_string())))?;
        let mount_point = text("mountPoint")?
            .ok_or_else(|| err("mountPoint", "is required".into()))
            .and_then(|t| absolute_dir(&t).map_err(|r| err("mountPoint", r)))?;
        let management_ip = text("managementIp")?
            .map(|t| NidList::parse(&t).map_err(|e| err("managementIp", e.to_string())))
            .transpose()?;
        let zone = text("zone")?;
        if let Some(z) = &zone {
            check_label_value(z).map_err(|r| err("zone", r))?;
        }
        let temp_mount_point = text("tempMountPoint")?
            .map(|t| absolute_dir(&t).map_err(|r| err("tempMountPoint", r)))
            .transpose()?;
        let volume_dir_permissions = match map.get("volumeDirPermissions") {
            None | Some(Value::Null) => None,
            Some(v) => Some(parse_permissions(v).map_err(|r| err("volumeDirPermissions", r))?),
        };
        let default_mount_options = match map.get("defaultMountOptions") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => {
                let items: Option<Vec<String>> = items.iter().map(lenient_string).collect();
                let items = items.ok_or_else(|| {
                    err("defaultMountOptions", "expected a list of strings".into())
                })?;
                mount_options::parse(&items).map_err(|r| err("defaultMountOptions", r))?
            }
            Some(v) => {
                let item = lenient_string(v).ok_or_else(|| {
                    err(
                        "defaultMountOptions",
                        "expected a string or a list of strings".into(),
                    )
                })?;
                mount_options::parse(&[item]).map_err(|r| err("defaultMountOptions", r))?
            }
        };
        Ok(Self {
            name: name.to_string(),
            exa_fs,
            mount_point,
            management_ip,
            zone,
            v1x_compatible: flag("v1xCompatible", false)?,
            bind_mount: flag("bindMount", true)?,
            default_mount_options,
            temp_mount_point,
            volume_dir_permissions,
        })
    }

    fn to_map(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("exaFS".into(), Value::String(self.exa_fs.to_string()));
        m.insert(
            "mountPoint".into(),
            Value::String(self.mount_point.display().to_string()),
        );
        if let Some(ip) = &self.management_ip {
            m.insert("managementIp".into(), Value::String(ip.to_string()));
        }
        if let Some(zone) = &self.zone {
            m.insert("zone".into(), Value::String(zone.clone()));
        }
        m.insert("v1xCompatible".into(), Value::Bool(self.v1x_compatible));
        m.insert("bindMount".into(), Value::Bool(self.bind_mount));
        if !self.default_mount_options.is_empty() {
            m.insert(
                "defaultMountOptions".into(),
                Value::String(self.default_mount_options.join(",")),
            );
        }
        if let Some(t) = &self.temp_mount_point {
            m.insert(
                "tempMountPoint".into(),
                Value::String(t.display().to_string()),
            );
        }
        if let Some(p) = self.volume_dir_permissions {
            m.insert(
                "volumeDirPermissions".into(),
                Value::String(format!("{p:04o}")),
            );
        }
        m
    }
}

/// The EXAScaler driver's configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LustreConfig {
    /// The clusters, by name.
    pub entries: BTreeMap<String, LustreEntry>,
    /// `debug`: verbose logs were asked for.
    pub debug: bool,
    /// `openshift`: the deployment runs on OpenShift.
    pub openshift: bool,
    /// Keys present in the file that this driver does not use (`exascaler_map.exa1.hotNodes`).
    pub ignored_keys: Vec<String>,
}

impl LustreConfig {
    /// Reads and validates a configuration from its deserialized form (YAML or JSON).
    pub fn from_value(value: Value) -> Result<Self, LustreError> {
        let Value::Object(top) = value else {
            return Err(LustreError::top(
                "configuration",
                "expected a map with exascaler_map (or the v1.x keys exaFS and mountPoint)",
            ));
        };
        let top_flag = |key: &str| -> Result<bool, LustreError> {
            match top.get(key) {
                None | Some(Value::Null) => Ok(false),
                Some(v) => lenient_bool(v).ok_or_else(|| {
                    LustreError::top(key, format!("expected true or false, got {v}"))
                }),
            }
        };
        let debug = top_flag("debug")?;
        let openshift = top_flag("openshift")?;
        let mut ignored = Vec::new();
        let mut entries = BTreeMap::new();
        let has_flat = top.contains_key("exaFS") || top.contains_key("mountPoint");
        match top.get("exascaler_map") {
            Some(Value::Object(map)) => {
                if has_flat {
                    return Err(LustreError::top(
                        "exaFS",
                        "the v1.x keys exaFS/mountPoint cannot be used together with exascaler_map; \
                         move them into an entry with v1xCompatible: true",
                    ));
                }
                for (name, body) in map {
                    let Value::Object(body) = body else {
                        return Err(LustreError::entry(
                            name,
                            "exaFS",
                            "the entry must be a map of keys (exaFS, mountPoint...)",
                        ));
                    };
                    entries.insert(
                        name.clone(),
                        LustreEntry::from_map(name, body, &mut ignored)?,
                    );
                }
                for key in top.keys() {
                    if !matches!(key.as_str(), "exascaler_map" | "debug" | "openshift") {
                        ignored.push(key.clone());
                    }
                }
            }
            Some(other) if !other.is_null() => {
                return Err(LustreError::top(
                    "exascaler_map",
                    "expected a map of cluster names to entries",
                ));
            }
            _ if has_flat => {
                let mut flat = Map::new();
                for (key, value) in &top {
                    match key.as_str() {
                        "debug" | "openshift" | "exascaler_map" => {}
                        _ => {
                            flat.insert(key.clone(), value.clone());
                        }
                    }
                }
                flat.insert("v1xCompatible".into(), Value::Bool(true));
                let entry = LustreEntry::from_map(V1X_ENTRY_NAME, &flat, &mut ignored)?;
                entries.insert(V1X_ENTRY_NAME.to_string(), entry);
            }
            _ => {}
        }
        let config = Self {
            entries,
            debug,
            openshift,
            ignored_keys: ignored,
        };
        config.validate()?;
        Ok(config)
    }

    /// A configuration of the given entries (validated).
    pub fn from_entries(entries: Vec<LustreEntry>) -> Result<Self, LustreError> {
        let config = Self {
            entries: entries.into_iter().map(|e| (e.name.clone(), e)).collect(),
            debug: false,
            openshift: false,
            ignored_keys: Vec::new(),
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks what involves several entries: at least one, at most one `v1xCompatible`,
    /// mount points neither shared nor nested.
    pub fn validate(&self) -> Result<(), LustreError> {
        if self.entries.is_empty() {
            return Err(LustreError::top(
                "exascaler_map",
                "no EXAScaler cluster is configured",
            ));
        }
        let v1x: Vec<&str> = self
            .entries
            .values()
            .filter(|e| e.v1x_compatible)
            .map(|e| e.name.as_str())
            .collect();
        if v1x.len() > 1 {
            return Err(LustreError::entry(
                v1x[1],
                "v1xCompatible",
                format!("only one entry may set it, and {} already does", v1x[0]),
            ));
        }
        let entries: Vec<&LustreEntry> = self.entries.values().collect();
        for (i, a) in entries.iter().enumerate() {
            for b in &entries[i + 1..] {
                if a.mount_point == b.mount_point {
                    return Err(LustreError::entry(
                        &b.name,
                        "mountPoint",
                        format!(
                            "{} is also the mount point of {}",
                            b.mount_point.display(),
                            a.name
                        ),
                    ));
                }
                for (outer, inner) in [(a, b), (b, a)] {
                    if inner.mount_point.starts_with(&outer.mount_point) {
                        return Err(LustreError::entry(
                            &inner.name,
                            "mountPoint",
                            format!(
                                "{} lies inside the mount point of {} ({})",
                                inner.mount_point.display(),
                                outer.name,
                                outer.mount_point.display()
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The entry named `name`.
    pub fn entry(&self, name: &str) -> Option<&LustreEntry> {
        self.entries.get(name)
    }

    /// The entry that serves v1.x handles.
    pub fn v1x_entry(&self) -> Option<&LustreEntry> {
        self.entries.values().find(|e| e.v1x_compatible)
    }

    /// The configuration in the `exascaler_map` format.
    pub fn to_value(&self) -> Value {
        let map: Map<String, Value> = self
            .entries
            .iter()
            .map(|(name, e)| (name.clone(), Value::Object(e.to_map())))
            .collect();
        let mut top = Map::new();
        top.insert("exascaler_map".into(), Value::Object(map));
        top.insert("debug".into(), Value::Bool(self.debug));
        top.insert("openshift".into(), Value::Bool(self.openshift));
        Value::Object(top)
    }
}

impl Serialize for LustreConfig {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_value().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for LustreConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        LustreConfig::from_value(value).map_err(serde::de::Error::custom)
    }
}

/// Entry names become the first part of volume ids: no `:`, `/`, spaces or control
/// characters, at most 63 bytes.
fn check_entry_name(name: &str) -> Result<(), LustreError> {
    let bad = name.is_empty()
        || name.len() > 63
        || name
            .chars()
            .any(|c| matches!(c, ':' | '/' | ';') || c.is_whitespace() || c.is_control());
    if bad {
        return Err(LustreError::top(
            &format!("exascaler_map.{name}"),
            "an entry name must be 1-63 characters without ':', ';', '/' or spaces (it starts every volume id)",
        ));
    }
    Ok(())
}

/// A Kubernetes label value: at most 63 characters, alphanumerics and `-_.` inside.
pub(crate) fn check_label_value(value: &str) -> Result<(), String> {
    let ok = value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && value
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && value
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{value:?} is not a valid label value (topology.exa.csi.ddn.com/zone)"
        ))
    }
}

/// System directories a filesystem must never be mounted on or inside: a mount point from a
/// StorageClass or a 2.3.3-style volume handle naming one of these is refused, so a typo or a
/// hostile PV cannot hide a node's `/etc` or its kubelet state under a Lustre mount.
const SYSTEM_DIRS: &[&str] = &[
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/proc", "/run", "/sbin", "/sys",
    "/usr",
];
/// System directories a filesystem must not be mounted on (below them is fine).
const SYSTEM_PARENTS: &[&str] = &["/root", "/tmp", "/var", "/var/lib", "/var/lib/kubelet"];

/// An absolute directory path a filesystem may be mounted on: no `..`, not `/`, not a
/// system directory ([`SYSTEM_DIRS`] or below, [`SYSTEM_PARENTS`] themselves).
pub(crate) fn absolute_dir(text: &str) -> Result<PathBuf, String> {
    let path = Path::new(text);
    if !path.is_absolute() {
        return Err(format!("{text:?} is not an absolute path"));
    }
    if text.chars().any(char::is_control) {
        return Err(format!("{text:?} contains control characters"));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(format!("{text:?} must not contain '..'"));
    }
    // The text was trimmed, but a component can still end in a space before a slash
    // ("/a /"), which writing the path back would turn into a trimmed, other path.
    if path
        .components()
        .any(|c| c.as_os_str().to_str().is_some_and(|s| s.trim() != s))
    {
        return Err(format!(
            "{text:?} has a path component that starts or ends with whitespace"
        ));
    }
    let clean: PathBuf = path.components().collect();
    if clean == Path::new("/") {
        return Err("the root directory cannot be used".into());
    }
    if let Some(dir) = SYSTEM_DIRS.iter().find(|d| clean.starts_with(d)) {
        return Err(format!(
            "{text:?} is the system directory {dir} or inside it"
        ));
    }
    if SYSTEM_PARENTS.iter().any(|d| clean == Path::new(d)) {
        return Err(format!(
            "{text:?} is a system directory; use a directory inside it"
        ));
    }
    Ok(clean)
}

/// Reads a mode: a string in octal (`"0777"`, `"777"`, `"0o2775"`), or a number whose decimal
/// digits are the octal digits (`777`, as YAML 1.2 reads an unquoted `0777`).
pub(crate) fn parse_permissions(value: &Value) -> Result<u32, String> {
    let digits = match value {
        Value::String(s) => {
            let s = s.trim();
            s.strip_prefix("0o").unwrap_or(s).to_string()
        }
        Value::Number(n) if n.is_u64() => n.to_string(),
        other => {
            return Err(format!(
                "expected an octal mode such as \"0777\", got {other}"
            ));
        }
    };
    let mode = u32::from_str_radix(&digits, 8)
        .map_err(|_| format!("{digits:?} is not an octal mode such as 0777"))?;
    if mode > 0o7777 {
        return Err(format!("{digits:?} is larger than 07777"));
    }
    Ok(mode)
}

/// A boolean, also written as a string (`"true"`, `"yes"`, `"1"`) or as 0/1.
pub(crate) fn lenient_bool(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match n.as_u64() {
            Some(0) => Some(false),
            Some(1) => Some(true),
            _ => None,
        },
        Value::String(s) => parse_bool(s),
        _ => None,
    }
}

/// Parses `true/false/yes/no/1/0` in any case.
pub(crate) fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" | "on" => Some(true),
        "false" | "no" | "0" | "off" => Some(false),
        _ => None,
    }
}

/// A string, also a number or boolean written without quotes.
pub(crate) fn lenient_string(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// This driver's own settings for the Lustre backend (`pfsCsi.lustre` in its config file).
/// Every key is optional.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct LustreSettings {
    /// The `mount` program (used by the mounter the wiring builds).
    pub mount: PathBuf,
    /// The `lfs` program.
    pub lfs: PathBuf,
    /// The `lctl` program.
    pub lctl: PathBuf,
    /// The Lustre client's version file, which Probe reads to see the client loaded; where it
    /// can't be read (clients before 2.12 keep it in `/proc/fs/lustre`), Probe runs
    /// `lctl get_param -n version`.
    pub client_version_file: PathBuf,
    /// GNU `tar`.
    pub tar: PathBuf,
    /// mpifileutils `dtar`, used when a snapshot class asks for it without `dtarPath`.
    pub dtar: PathBuf,
    /// Timeout of each `lfs`/`lctl` call, in seconds.
    #[serde(deserialize_with = "lenient_u64")]
    pub command_timeout_seconds: u64,
    /// Timeout of each mount and unmount, in seconds.
    #[serde(deserialize_with = "lenient_u64")]
    pub mount_timeout_seconds: u64,
    /// Timeout of one snapshot archive, restore or clone copy, in seconds.
    #[serde(deserialize_with = "lenient_u64")]
    pub archive_timeout_seconds: u64,
    /// Set project quota limits (Lustre always tracks project usage; this switches the limit).
    #[serde(deserialize_with = "lenient_bool_de")]
    pub enforce_quota: bool,
    /// Hidden directory at the root of each filesystem for records, snapshots and trash.
    pub metadata_dir: String,
    /// This node's zone; overrides what the entries' zones imply.
    pub node_zone: Option<String>,
    /// How long CreateSnapshot waits for a new archive before answering `ready_to_use: false`.
    #[serde(deserialize_with = "lenient_u64")]
    pub snapshot_wait_seconds: u64,
    /// How long CreateVolume waits for a restore or clone before answering "in progress".
    #[serde(deserialize_with = "lenient_u64")]
    pub content_wait_seconds: u64,
}

impl Default for LustreSettings {
    fn default() -> Self {
        Self {
            mount: "mount".into(),
            lfs: "lfs".into(),
            lctl: "lctl".into(),
            client_version_file: "/sys/fs/lustre/version".into(),
            tar: "tar".into(),
            dtar: "/opt/ddn/mpifileutils/bin/dtar".into(),
            command_timeout_seconds: 60,
            mount_timeout_seconds: 120,
            archive_timeout_seconds: 24 * 3600,
            enforce_quota: true,
            metadata_dir: ".pfs-csi".into(),
            node_zone: None,
            snapshot_wait_seconds: 0,
            content_wait_seconds: 10,
        }
    }
}

impl LustreSettings {
    /// Resolves bare tool names (`lfs`, `lctl`, `tar`, `dtar`, `mount`) against the client
    /// directory the deployment fills, then `/sbin`, `/usr/sbin` and `PATH`
    /// ([`csi_core::client_tools`]); configured paths stay as they are.
    pub fn resolve_tools(&mut self, client_dir: &Path) {
        let dirs = client_tools::tool_dirs(client_dir, std::env::var_os("PATH").as_deref());
        for tool in [
            &mut self.mount,
            &mut self.lfs,
            &mut self.lctl,
            &mut self.tar,
            &mut self.dtar,
        ] {
            *tool = client_tools::resolve_tool(tool, &dirs);
        }
    }

    /// Reads settings from their deserialized form (`null`: all defaults) and validates them.
    pub fn from_value(value: Value) -> Result<Self, LustreError> {
        let settings: Self = if value.is_null() {
            Self::default()
        } else {
            serde_json::from_value(value).map_err(|e| LustreError::Settings {
                key: "*".into(),
                reason: e.to_string(),
            })?
        };
        settings.validate()?;
        Ok(settings)
    }

    /// Checks tool paths, timeouts, the metadata directory name and the zone.
    pub fn validate(&self) -> Result<(), LustreError> {
        let err = |key: &str, reason: String| LustreError::Settings {
            key: key.into(),
            reason,
        };
        for (key, path) in [
            ("mount", &self.mount),
            ("lfs", &self.lfs),
            ("lctl", &self.lctl),
            ("clientVersionFile", &self.client_version_file),
            ("tar", &self.tar),
            ("dtar", &self.dtar),
        ] {
            if path.as_os_str().is_empty() {
                return Err(err(key, "must not be empty".into()));
            }
        }
        for (key, secs) in [
            ("commandTimeoutSeconds", self.command_timeout_seconds),
            ("mountTimeoutSeconds", self.mount_timeout_seconds),
            ("archiveTimeoutSeconds", self.archive_timeout_seconds),
        ] {
            if secs == 0 {
                return Err(err(key, "must be at least 1".into()));
            }
        }
        let m = self.metadata_dir.as_str();
        if m.is_empty() || m == "." || m == ".." || m.contains(['/', '\0']) || m.len() > 200 {
            return Err(err(
                "metadataDir",
                format!("{m:?} must be one plain directory name"),
            ));
        }
        if let Some(z) = &self.node_zone {
            check_label_value(z).map_err(|r| err("nodeZone", r))?;
        }
        Ok(())
    }

    /// Timeout of `lfs` calls.
    pub fn command_timeout(&self) -> Duration {
        Duration::from_secs(self.command_timeout_seconds)
    }

    /// Timeout of mounts.
    pub fn mount_timeout(&self) -> Duration {
        Duration::from_secs(self.mount_timeout_seconds)
    }

    /// Timeout of archive work.
    pub fn archive_timeout(&self) -> Duration {
        Duration::from_secs(self.archive_timeout_seconds)
    }
}

fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match Value::deserialize(d)? {
        Value::Number(n) if n.is_u64() => Ok(n.as_u64().unwrap_or_default()),
        Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("{s:?} is not a whole number"))),
        other => Err(serde::de::Error::custom(format!(
            "expected a whole number, got {other}"
        ))),
    }
}

fn lenient_bool_de<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let v = Value::deserialize(d)?;
    lenient_bool(&v)
        .ok_or_else(|| serde::de::Error::custom(format!("expected true or false, got {v}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn yaml(text: &str) -> Value {
        serde_yaml::from_str(text).unwrap()
    }

    #[test]
    fn the_readme_configuration_loads_unchanged() {
        let config = LustreConfig::from_value(yaml(
            r#"
exascaler_map:
  exa1:
    mountPoint: /exaFS                                          # mountpoint on the host
    exaFS: 192.168.88.114@tcp2:192.168.98.114@tcp2:/testfs
    managementIp: 10.204.86.114@tcp
    zone: zone-1
  exa2:
    mountPoint: /exaFS-zone-2
    exaFS: 192.168.78.112@tcp2:/testfs/zone-2
    managementIp: 10.204.86.114@tcp
    zone: zone-2
  exa3:
    mountPoint: /exaFS-zone-3
    exaFS: 192.168.98.113@tcp2:192.168.88.113@tcp2:/testfs/zone-3
    managementIp: 10.204.86.114@tcp
    zone: zone-3
    bindMount: "false"
    defaultMountOptions: flock,user_xattr
    tempMountPoint: /tmp/exafs-mnt
    volumeDirPermissions: "0775"
    v1xCompatible: "true"
debug: true
"#,
        ))
        .unwrap();
        assert!(config.debug);
        assert_eq!(config.entries.len(), 3);
        let exa2 = config.entry("exa2").unwrap();
        assert_eq!(exa2.exa_fs.subdir, vec!["zone-2"]);
        assert_eq!(exa2.mount_point, PathBuf::from("/exaFS-zone-2"));
        assert_eq!(exa2.zone.as_deref(), Some("zone-2"));
        assert!(exa2.bind_mount);
        let exa3 = config.entry("exa3").unwrap();
        assert!(!exa3.bind_mount);
        assert!(exa3.v1x_compatible);
        assert_eq!(exa3.default_mount_options, vec!["flock", "user_xattr"]);
        assert_eq!(exa3.volume_dir_permissions, Some(0o775));
        assert_eq!(exa3.temp_mount_point, Some(PathBuf::from("/tmp/exafs-mnt")));
        assert_eq!(config.v1x_entry().unwrap().name, "exa3");
        assert!(config.ignored_keys.is_empty());
    }

    #[test]
    fn the_flat_v1_format_becomes_one_v1x_entry() {
        let config = LustreConfig::from_value(yaml(
            "exaFS: 10.3.196.24@tcp:/csi\nmountPoint: /exaFS\ndebug: true\n",
        ))
        .unwrap();
        assert_eq!(config.entries.len(), 1);
        let entry = config.entry(V1X_ENTRY_NAME).unwrap();
        assert!(entry.v1x_compatible);
        assert_eq!(entry.exa_fs.fsname, "csi");
        assert!(config.debug);
    }

    #[test]
    fn validation_names_the_entry_the_key_and_the_reason() {
        let cases: Vec<(Value, &str)> = vec![
            (
                json!({"exascaler_map": {"a": {"mountPoint": "/x"}}}),
                "exascaler_map.a.exaFS: is required",
            ),
            (
                json!({"exascaler_map": {"a": {"exaFS": "1.2.3.4@tcp:/fs"}}}),
                "exascaler_map.a.mountPoint: is required",
            ),
            (
                json!({"exascaler_map": {"a": {"exaFS": "1.2.3.4@tcp:/fs", "mountPoint": "rel"}}}),
                "exascaler_map.a.mountPoint: \"rel\" is not an absolute path",
            ),
            (
                json!({"exascaler_map": {"a": {"exaFS": "nonsense", "mountPoint": "/x"}}}),
                "exascaler_map.a.exaFS: exaFS \"nonsense\"",
            ),
            (
                json!({"exascaler_map": {"a": {"exaFS": "1.2.3.4@tcp:/fs", "mountPoint": "/x", "volumeDirPermissions": "0999"}}}),
                "exascaler_map.a.volumeDirPermissions",
            ),
            (
                json!({"exascaler_map": {"a": {"exaFS": "1.2.3.4@tcp:/fs", "mountPoint": "/x", "bindMount": "maybe"}}}),
                "exascaler_map.a.bindMount: expected true or false",
            ),
            (
                json!({"exascaler_map": {"a": {"exaFS": "1.2.3.4@tcp:/fs", "mountPoint": "/x", "defaultMountOptions": "bind"}}}),
                "exascaler_map.a.defaultMountOptions: mount option \"bind\"",
            ),
            (
                json!({"exascaler_map": {"a": {"exaFS": "1.2.3.4@tcp:/fs", "mountPoint": "/x", "mountpoint": "/y"}}}),
                "did you mean mountPoint",
            ),
            (
                json!({"exascaler_map": {"a": {"exaFS": "1.2.3.4@tcp:/fs", "mountPoint": "/x", "zone": "bad zone"}}}),
                "exascaler_map.a.zone",
            ),
            (
                json!({"exascaler_map": {"a": {"exaFS": "1.2.3.4@tcp:/fs", "mountPoint": "/x", "managementIp": "10.0.0.1"}}}),
                "exascaler_map.a.managementIp",
            ),
            (
                json!({"exascaler_map": {
                "a": {"exaFS": "1.2.3.4@tcp:/fs", "mountPoint": "/x", "v1xCompatible": true},
                "b": {"exaFS": "1.2.3.4@tcp:/fs", "mountPoint": "/y", "v1xCompatible": true}}}),
                "exascaler_map.b.v1xCompatible: only one entry may set it, and a already does",
            ),
            (
                json!({"exascaler_map": {
                "a": {"exaFS": "1.2.3.4@tcp:/fs", "mountPoint": "/x"},
                "b": {"exaFS": "1.2.3.4@tcp:/gs", "mountPoint": "/x/"}}}),
                "exascaler_map.b.mountPoint: /x is also the mount point of a",
            ),
            (
                json!({"exascaler_map": {
                "a": {"exaFS": "1.2.3.4@tcp:/fs", "mountPoint": "/x"},
                "b": {"exaFS": "1.2.3.4@tcp:/gs", "mountPoint": "/x/y"}}}),
                "exascaler_map.b.mountPoint: /x/y lies inside the mount point of a",
            ),
            (
                json!({"exascaler_map": {"a:b": {"exaFS": "1.2.3.4@tcp:/fs", "mountPoint": "/x"}}}),
                "exascaler_map.a:b: an entry name",
            ),
            (
                json!({"exascaler_map": {}}),
                "exascaler_map: no EXAScaler cluster is configured",
            ),
            (
                json!({}),
                "exascaler_map: no EXAScaler cluster is configured",
            ),
            (
                json!({"exascaler_map": {"a": {"exaFS": "1.2.3.4@tcp:/fs", "mountPoint": "/x"}}, "exaFS": "1.2.3.4@tcp:/fs"}),
                "exaFS: the v1.x keys",
            ),
            (
                json!({"exascaler_map": {"a": {"exaFS": "1.2.3.4@tcp:/fs", "mountPoint": "/x"}}, "debug": "sometimes"}),
                "debug: expected true or false",
            ),
            (json!([1, 2]), "configuration: expected a map"),
        ];
        for (value, expected) in cases {
            let err = LustreConfig::from_value(value.clone())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(expected),
                "{value}: {err:?} lacks {expected:?}"
            );
        }
    }

    #[test]
    fn unused_keys_are_kept_for_a_warning() {
        let config = LustreConfig::from_value(json!({
            "exascaler_map": {"a": {"exaFS": "1.2.3.4@tcp:/fs", "mountPoint": "/x", "hotNodes": true}},
            "logLevel": "info"
        }))
        .unwrap();
        assert_eq!(
            config.ignored_keys,
            vec!["exascaler_map.a.hotNodes", "logLevel"]
        );
    }

    #[test]
    fn permissions_read_as_octal_in_every_spelling() {
        for (v, mode) in [
            (json!("0777"), 0o777),
            (json!("777"), 0o777),
            (json!("0o2775"), 0o2775),
            (json!(755), 0o755),
            (json!("0"), 0),
        ] {
            assert_eq!(parse_permissions(&v).unwrap(), mode, "{v}");
        }
        for v in [
            json!("rwx"),
            json!("8"),
            json!("17777"),
            json!(-1),
            json!(true),
        ] {
            assert!(parse_permissions(&v).is_err(), "{v}");
        }
    }

    #[test]
    fn settings_default_and_accept_strings_for_numbers() {
        let s = LustreSettings::from_value(Value::Null).unwrap();
        assert_eq!(s, LustreSettings::default());
        assert_eq!(s.dtar, PathBuf::from("/opt/ddn/mpifileutils/bin/dtar"));
        assert!(s.enforce_quota);
        let s = LustreSettings::from_value(json!({
            "lfs": "/sim/lfs", "commandTimeoutSeconds": "5", "enforceQuota": "false", "nodeZone": "zone-1"
        }))
        .unwrap();
        assert_eq!(s.lfs, PathBuf::from("/sim/lfs"));
        assert_eq!(s.command_timeout(), Duration::from_secs(5));
        assert!(!s.enforce_quota);
        assert_eq!(s.node_zone.as_deref(), Some("zone-1"));
        let err = LustreSettings::from_value(json!({"lsf": "/x"}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("lsf"), "{err}");
        let err = LustreSettings::from_value(json!({"metadataDir": "a/b"}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("pfsCsi.lustre.metadataDir"), "{err}");
        let err = LustreSettings::from_value(json!({"mountTimeoutSeconds": 0}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("mountTimeoutSeconds"), "{err}");
    }

    fn entry_strategy() -> impl Strategy<Value = LustreEntry> {
        (
            "[a-z][a-z0-9-]{0,10}",
            "[a-z0-9]{1,8}",
            prop::collection::vec("[a-z0-9-]{1,8}", 0..2),
            "[a-z0-9]{1,10}",
            proptest::option::of("[a-z][a-z0-9]{0,6}"),
            any::<bool>(),
            proptest::option::of(0u32..=0o7777),
            prop::collection::vec(
                prop_oneof![Just("flock"), Just("user_xattr"), Just("noatime")],
                0..3,
            ),
            proptest::option::of("[a-z]{1,8}"),
            any::<bool>(),
        )
            .prop_map(
                |(name, fsname, subdir, mp, zone, bind, perms, opts, tmp, mgmt)| {
                    let mut e = LustreEntry::new(
                        &name,
                        ExaFs::parse(&format!("10.0.0.1@tcp:/{fsname}"))
                            .unwrap()
                            .join(&subdir),
                        format!("/{name}-{mp}"),
                    );
                    e.zone = zone;
                    e.bind_mount = bind;
                    e.volume_dir_permissions = perms;
                    e.default_mount_options = mount_options::merge(&[&opts
                        .iter()
                        .map(|o| o.to_string())
                        .collect::<Vec<_>>()]);
                    e.temp_mount_point = tmp.map(|t| PathBuf::from(format!("/tmp/{t}")));
                    if mgmt {
                        e.management_ip = Some(NidList::parse("10.9.9.9@tcp").unwrap());
                    }
                    e
                },
            )
    }

    proptest! {
        #[test]
        fn configurations_round_trip(entries in prop::collection::vec(entry_strategy(), 1..4), v1x in 0usize..4, debug: bool) {
            let mut entries: Vec<LustreEntry> = entries
                .into_iter()
                .enumerate()
                .map(|(i, mut e)| { e.name = format!("{}{i}", e.name); e.mount_point = PathBuf::from(format!("/mnt{i}")); e })
                .collect();
            if let Some(e) = entries.get_mut(v1x) { e.v1x_compatible = true; }
            let mut config = LustreConfig::from_entries(entries).unwrap();
            config.debug = debug;
            let again = LustreConfig::from_value(config.to_value()).unwrap();
            prop_assert_eq!(&again, &config);
            let yaml_text = serde_yaml::to_string(&config).unwrap();
            let from_yaml: LustreConfig = serde_yaml::from_str(&yaml_text).unwrap();
            prop_assert_eq!(from_yaml, config);
        }

        #[test]
        fn loading_arbitrary_values_never_panics(
            fs in "\\PC{0,30}", mp in "\\PC{0,20}", perms in "\\PC{0,6}", bind in "\\PC{0,6}"
        ) {
            let _ = LustreConfig::from_value(json!({"exascaler_map": {"e": {
                "exaFS": fs, "mountPoint": mp, "volumeDirPermissions": perms, "bindMount": bind
            }}}));
        }
    }

    #[cfg(test)]
    mod mount_point_tests {
        use super::absolute_dir;

        #[test]
        fn system_directories_cannot_be_mount_points() {
            for bad in [
                "/etc",
                "/etc/x",
                "/usr/lib",
                "/proc",
                "/var/lib/kubelet",
                "/tmp",
                "/",
                "/var",
            ] {
                assert!(absolute_dir(bad).is_err(), "{bad} was accepted");
            }
            for good in [
                "/exaFS",
                "/mnt/exa",
                "/var/lib/kubelet/plugins/x/mnt",
                "/tmp/sim/mnt",
                "/lustre/fs",
            ] {
                assert!(absolute_dir(good).is_ok(), "{good} was refused");
            }
        }

        #[test]
        fn a_component_ending_in_whitespace_is_refused_not_trimmed_later() {
            // Found by the fuzzer: "/y/z% /" normalised to "/y/z% ", which the next load
            // trimmed to another path.
            for bad in ["/y/z% /", "/a /b", "/a/ b", "/a/\u{a0}b"] {
                assert!(absolute_dir(bad).is_err(), "{bad:?} was accepted");
            }
            assert!(absolute_dir("/a b/c").is_ok());
        }
    }
}
