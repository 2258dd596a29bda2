//! What `serve` lays out under its state directory: the simulated filesystems it creates and
//! the driver configuration that points the plugins at them.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::error::{Result, SimError};
use crate::state::StateRoot;

/// Which simulated filesystem `serve` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ServedFs {
    /// Lustre (EXAScaler configuration format).
    Lustre,
    /// BeeGFS 7 (`beegfs-ctl`).
    Beegfs7,
    /// BeeGFS 8 (the `beegfs` tool).
    Beegfs8,
}

impl ServedFs {
    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ServedFs::Lustre => "lustre",
            ServedFs::Beegfs7 => "beegfs7",
            ServedFs::Beegfs8 => "beegfs8",
        }
    }
}

/// The fixed layout of `serve`'s state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// The layout under `root` (the `--state-dir`).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The state directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `sim/`: the simulator's state root (`PFS_SIM_ROOT` of the plugins).
    pub fn sim_root(&self) -> PathBuf {
        self.root.join("sim")
    }

    /// `tools/`: links named after every simulated tool.
    pub fn tools_dir(&self) -> PathBuf {
        self.root.join("tools")
    }

    /// `tools/<name>`.
    pub fn tool(&self, name: &str) -> PathBuf {
        self.tools_dir().join(name)
    }

    /// `driver.yaml`: the configuration both plugins load.
    pub fn driver_config(&self) -> PathBuf {
        self.root.join("driver.yaml")
    }

    /// `secrets/`: the BeeGFS connAuth file (mode 0700 directory).
    pub fn secrets_dir(&self) -> PathBuf {
        self.root.join("secrets")
    }

    /// `secrets/connauth.yaml`: the connAuth secrets in the BeeGFS driver's format.
    pub fn connauth_file(&self) -> PathBuf {
        self.secrets_dir().join("connauth.yaml")
    }

    /// `state/<role>/`: the `--state-dir` of the controller or the node plugin.
    pub fn plugin_state_dir(&self, role: &str) -> PathBuf {
        self.root.join("state").join(role)
    }

    /// `kubelet/`: the plugins' `--kubelet-dir`.
    pub fn kubelet_dir(&self) -> PathBuf {
        self.root.join("kubelet")
    }

    /// `mnt/`: the Lustre mount points.
    pub fn mounts_dir(&self) -> PathBuf {
        self.root.join("mnt")
    }

    /// Everything `serve` creates directly under the state directory.
    pub fn entries(&self) -> Vec<PathBuf> {
        vec![
            self.sim_root(),
            self.tools_dir(),
            self.driver_config(),
            self.secrets_dir(),
            self.root.join("state"),
            self.kubelet_dir(),
            self.mounts_dir(),
        ]
    }
}

/// One simulated filesystem and how the driver configuration names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimFilesystem {
    /// Lustre fsname or BeeGFS management host.
    pub name: String,
    /// The `exascaler_map` entry (Lustre).
    pub cluster: Option<String>,
    /// The entry's zone (Lustre).
    pub zone: Option<String>,
    /// The entry's mount point (Lustre).
    pub mount_point: Option<PathBuf>,
    /// The BeeGFS major version.
    pub beegfs_version: Option<u8>,
    /// The BeeGFS connAuth secret (text; never printed).
    pub secret: Option<String>,
    /// The BeeGFS quota group id range.
    pub gid_range: Option<(u32, u32)>,
}

/// The NID every simulated Lustre filesystem is served from.
pub const LUSTRE_NID: &str = "127.0.0.1@tcp";

/// The `volDirBasePath` suggested for BeeGFS volumes.
pub const BEEGFS_VOL_DIR_BASE: &str = "/k8s/volumes";

/// The first quota group id handed to BeeGFS volumes; each filesystem gets its own range.
const BEEGFS_GID_BASE: u32 = 4_000_000;
/// The size of each filesystem's group id range.
const BEEGFS_GID_SPAN: u32 = 100_000;

/// The filesystems to create: `count` of them (at least one per zone).
pub fn plan(
    kind: ServedFs,
    count: usize,
    zones: &[String],
    layout: &Layout,
) -> Result<Vec<SimFilesystem>> {
    let count = count.max(zones.len()).max(1);
    if count > 16 {
        return Err(SimError::Invalid(format!(
            "--filesystems {count}: at most 16"
        )));
    }
    if kind != ServedFs::Lustre && !zones.is_empty() {
        return Err(SimError::Invalid(
            "--zones applies to Lustre only (EXAScaler entries have zones)".into(),
        ));
    }
    let mut out = Vec::with_capacity(count);
    for i in 1..=count {
        let fs = match kind {
            ServedFs::Lustre => {
                let cluster = format!("exa{i}");
                SimFilesystem {
                    name: format!("simfs{i}"),
                    mount_point: Some(layout.mounts_dir().join(&cluster)),
                    cluster: Some(cluster),
                    zone: zones.get(i - 1).cloned(),
                    beegfs_version: None,
                    secret: None,
                    gid_range: None,
                }
            }
            ServedFs::Beegfs7 | ServedFs::Beegfs8 => {
                let start = BEEGFS_GID_BASE + (i as u32 - 1) * BEEGFS_GID_SPAN;
                SimFilesystem {
                    name: format!("sim-mgmtd-{i}"),
                    cluster: None,
                    zone: None,
                    mount_point: None,
                    beegfs_version: Some(if kind == ServedFs::Beegfs7 { 7 } else { 8 }),
                    secret: Some(random_secret()?),
                    gid_range: Some((start, start + BEEGFS_GID_SPAN - 1)),
                }
            }
        };
        out.push(fs);
    }
    Ok(out)
}

/// 32 hexadecimal characters from the kernel's random source.
fn random_secret() -> Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| SimError::io("read", "/dev/urandom", e))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The driver configuration for `filesystems`: the EXAScaler or BeeGFS format, plus the
/// `pfsCsi` settings pointing every tool at the simulator.
pub fn driver_config(kind: ServedFs, layout: &Layout, filesystems: &[SimFilesystem]) -> Value {
    let tool = |name: &str| Value::String(layout.tool(name).display().to_string());
    match kind {
        ServedFs::Lustre => {
            let mut map = serde_json::Map::new();
            for fs in filesystems {
                let mut entry = serde_json::Map::new();
                entry.insert("exaFS".into(), json!(format!("{LUSTRE_NID}:/{}", fs.name)));
                if let Some(mp) = &fs.mount_point {
                    entry.insert("mountPoint".into(), json!(mp.display().to_string()));
                }
                if let Some(zone) = &fs.zone {
                    entry.insert("zone".into(), json!(zone));
                }
                map.insert(fs.cluster.clone().unwrap_or_default(), Value::Object(entry));
            }
            json!({
                "exascaler_map": map,
                "pfsCsi": {
                    "lustre": {
                        "mount": tool("mount"),
                        "lfs": tool("lfs"),
                        "lctl": tool("lctl"),
                        "clientVersionFile": StateRoot::new(layout.sim_root())
                            .lustre_version_file()
                            .display()
                            .to_string(),
                        "dtar": tool("dtar"),
                        "tar": "tar",
                        "commandTimeoutSeconds": 30,
                        "mountTimeoutSeconds": 30,
                    }
                }
            })
        }
        ServedFs::Beegfs7 | ServedFs::Beegfs8 => {
            let quotas: Vec<Value> = filesystems
                .iter()
                .filter_map(|fs| {
                    fs.gid_range.map(|(min, max)| {
                        json!({"sysMgmtdHost": fs.name, "enabled": true, "gidMin": min, "gidMax": max})
                    })
                })
                .collect();
            json!({
                "config": {},
                "pfsCsi": {
                    "beegfs": {
                        "mountTool": tool("mount"),
                        "beegfsCtlTool": tool("beegfs-ctl"),
                        "beegfsTool": tool("beegfs"),
                        "quotas": quotas,
                        "snapshots": {"tar": "tar"},
                    }
                }
            })
        }
    }
}

/// Lays `overlay` over `base`: maps are merged key by key, anything else replaces.
pub fn merge(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Object(base), Value::Object(overlay)) => {
            for (key, value) in overlay {
                match base.get_mut(&key) {
                    Some(slot) => merge(slot, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (slot, value) => *slot = value,
    }
}

/// Reads a YAML (or JSON) overlay file.
pub fn read_overlay(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| SimError::io("read", path, e))?;
    let value: Value = serde_yaml::from_str(&text).map_err(|e| {
        SimError::Invalid(format!(
            "--config-overlay {}: not a YAML mapping: {e}",
            path.display()
        ))
    })?;
    match value {
        Value::Object(_) => Ok(value),
        Value::Null => Ok(Value::Object(serde_json::Map::new())),
        other => Err(SimError::Invalid(format!(
            "--config-overlay {}: expected a mapping at the top level, found {other}",
            path.display()
        ))),
    }
}

/// The connAuth file of the BeeGFS driver's format for the filesystems that have a secret.
pub fn connauth_file(filesystems: &[SimFilesystem]) -> Value {
    Value::Array(
        filesystems
            .iter()
            .filter_map(|fs| {
                fs.secret.as_ref().map(|secret| {
                    json!({"sysMgmtdHost": fs.name, "connAuth": secret, "encoding": "raw"})
                })
            })
            .collect(),
    )
}

/// The CreateVolume parameters a user must pass (BeeGFS has no defaults for them).
pub fn required_parameters(kind: ServedFs, filesystems: &[SimFilesystem]) -> Vec<(String, String)> {
    match (kind, filesystems.first()) {
        (ServedFs::Lustre, _) | (_, None) => Vec::new(),
        (_, Some(fs)) => vec![
            ("sysMgmtdHost".into(), fs.name.clone()),
            ("volDirBasePath".into(), BEEGFS_VOL_DIR_BASE.into()),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn lustre_entries_get_zones_and_mount_points_under_the_state_dir() {
        let layout = Layout::new("/s");
        let zones = vec!["zone-a".to_string(), "zone-b".to_string()];
        let fs = plan(ServedFs::Lustre, 1, &zones, &layout).unwrap();
        assert_eq!(fs.len(), 2);
        let config = driver_config(ServedFs::Lustre, &layout, &fs);
        let map = &config["exascaler_map"];
        assert_eq!(map["exa1"]["exaFS"], "127.0.0.1@tcp:/simfs1");
        assert_eq!(map["exa1"]["mountPoint"], "/s/mnt/exa1");
        assert_eq!(map["exa2"]["zone"], "zone-b");
        assert_eq!(config["pfsCsi"]["lustre"]["lfs"], "/s/tools/lfs");
        assert!(required_parameters(ServedFs::Lustre, &fs).is_empty());
    }

    #[test]
    fn beegfs_filesystems_get_secrets_and_disjoint_gid_ranges() {
        let layout = Layout::new("/s");
        let fs = plan(ServedFs::Beegfs8, 2, &[], &layout).unwrap();
        assert_eq!(fs[0].beegfs_version, Some(8));
        assert_ne!(fs[0].secret, fs[1].secret);
        let (a, b) = (fs[0].gid_range.unwrap(), fs[1].gid_range.unwrap());
        assert!(a.1 < b.0, "{a:?} overlaps {b:?}");
        let config = driver_config(ServedFs::Beegfs8, &layout, &fs);
        assert_eq!(
            config["pfsCsi"]["beegfs"]["quotas"][1]["sysMgmtdHost"],
            "sim-mgmtd-2"
        );
        let auth = connauth_file(&fs);
        assert_eq!(auth[0]["connAuth"].as_str(), fs[0].secret.as_deref());
        let params = required_parameters(ServedFs::Beegfs8, &fs);
        assert_eq!(params[0], ("sysMgmtdHost".into(), "sim-mgmtd-1".into()));
        assert!(plan(ServedFs::Beegfs7, 1, &["z".into()], &layout).is_err());
    }

    #[test]
    fn overlays_merge_maps_and_replace_lists() {
        let mut base = json!({"a": {"b": 1, "c": [1, 2]}, "d": "x"});
        merge(&mut base, json!({"a": {"c": [], "e": true}, "f": null}));
        assert_eq!(
            base,
            json!({"a": {"b": 1, "c": [], "e": true}, "d": "x", "f": null})
        );
    }

    #[test]
    fn overlay_files_must_be_mappings() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.yaml");
        std::fs::write(&good, "pfsCsi:\n  lustre:\n    mountTimeoutSeconds: 3\n").unwrap();
        assert_eq!(
            read_overlay(&good).unwrap()["pfsCsi"]["lustre"]["mountTimeoutSeconds"],
            3
        );
        let list = dir.path().join("list.yaml");
        std::fs::write(&list, "- a\n").unwrap();
        assert!(read_overlay(&list).is_err());
        assert!(read_overlay(&dir.path().join("missing")).is_err());
    }

    proptest! {
        #[test]
        fn merging_an_empty_overlay_changes_nothing(keys in proptest::collection::vec("[a-z]{1,4}", 0..6)) {
            let base: serde_json::Map<String, Value> =
                keys.iter().map(|k| (k.clone(), json!({"v": k}))).collect();
            let mut merged = Value::Object(base.clone());
            merge(&mut merged, json!({}));
            prop_assert_eq!(merged, Value::Object(base));
        }
    }
}
