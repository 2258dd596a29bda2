//! The BeeGFS CSI driver's configuration file, `csi-beegfs-config.yaml`, read unchanged.
//!
//! ```yaml
//! config: {...}                        # every filesystem on every node
//! fileSystemSpecificConfigs:
//!   - sysMgmtdHost: 10.0.0.5
//!     config: {...}
//! nodeSpecificConfigs:
//!   - nodeList: [node-a]
//!     config: {...}
//!     fileSystemSpecificConfigs: [{sysMgmtdHost: 10.0.0.5, config: {...}}]
//! ```
//!
//! [`DriverConfig::resolve`] merges the levels for one node and one filesystem, lowest to
//! highest: `config` < `fileSystemSpecificConfigs[].config` < `nodeSpecificConfigs[].config` <
//! `nodeSpecificConfigs[].fileSystemSpecificConfigs[].config`; among entries of one level,
//! later entries win. A list replaces the lower level's list when it is not empty; a
//! `beegfsClientConf` key replaces the same key of a lower level.
//!
//! `beegfsClientConf` values are strings in the reference format; unquoted numbers and
//! booleans are accepted and turned into their text. Keys this driver sets itself
//! (`sysMgmtdHost`, the client port keys, `connPortShift`, every `conn*File`) are dropped
//! with a warning. A top-level `pfsCsi` key (this driver's own settings) is ignored here.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use serde::Deserialize;
use serde_yaml::Value;
use tracing::warn;

use crate::error::ConfigError;

/// `beegfsClientConf` keys the driver always sets itself; dropped from the configuration.
const DRIVER_OWNED_KEYS: &[&str] = &[
    "sysMgmtdHost",
    "connClientPortUDP",
    "connClientPort",
    "connPortShift",
    "connAuthFile",
];

/// The configuration of one filesystem (one level of the file, or the merged result).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BeegfsConfig {
    /// `connInterfaces`: interfaces the client may use, written to `connInterfacesFile`.
    pub conn_interfaces: Vec<String>,
    /// `connNetFilter`: subnets for outgoing connections, written to `connNetFilterFile`.
    pub conn_net_filter: Vec<String>,
    /// `connTcpOnlyFilter`: subnets without RDMA, written to `connTcpOnlyFilterFile`.
    pub conn_tcp_only_filter: Vec<String>,
    /// `connRDMAInterfaces`: RDMA interfaces, written to `connRDMAInterfacesFile`.
    pub conn_rdma_interfaces: Vec<String>,
    /// `grpcPort`: the BeeGFS 8 management gRPC port; `None` leaves the driver default.
    pub grpc_port: Option<u16>,
    /// `beegfsClientConf`: further `beegfs-client.conf` keys and values.
    pub beegfs_client_conf: BTreeMap<String, String>,
}

impl BeegfsConfig {
    /// Lays `higher` over `self`: non-empty lists, a set port and every client conf key win.
    pub fn overlay(&mut self, higher: &BeegfsConfig) {
        let replace = |low: &mut Vec<String>, high: &Vec<String>| {
            if !high.is_empty() {
                low.clone_from(high);
            }
        };
        replace(&mut self.conn_interfaces, &higher.conn_interfaces);
        replace(&mut self.conn_net_filter, &higher.conn_net_filter);
        replace(&mut self.conn_tcp_only_filter, &higher.conn_tcp_only_filter);
        replace(&mut self.conn_rdma_interfaces, &higher.conn_rdma_interfaces);
        if higher.grpc_port.is_some() {
            self.grpc_port = higher.grpc_port;
        }
        for (k, v) in &higher.beegfs_client_conf {
            self.beegfs_client_conf.insert(k.clone(), v.clone());
        }
    }
}

/// One `fileSystemSpecificConfigs` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileSystemSpecificConfig {
    /// The filesystem's management host, as it appears in volume ids.
    pub sys_mgmtd_host: String,
    /// Its configuration.
    pub config: BeegfsConfig,
}

/// One `nodeSpecificConfigs` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeSpecificConfig {
    /// The node names it applies to.
    pub node_list: Vec<String>,
    /// Defaults for every filesystem on these nodes.
    pub config: BeegfsConfig,
    /// Per-filesystem configuration on these nodes.
    pub file_system_specific_configs: Vec<FileSystemSpecificConfig>,
}

/// The whole `csi-beegfs-config.yaml`, every level kept apart until [`Self::resolve`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DriverConfig {
    /// `config`.
    pub config: BeegfsConfig,
    /// `fileSystemSpecificConfigs`.
    pub file_system_specific_configs: Vec<FileSystemSpecificConfig>,
    /// `nodeSpecificConfigs`.
    pub node_specific_configs: Vec<NodeSpecificConfig>,
}

impl DriverConfig {
    /// Parses the text of a configuration file; an empty file is the empty configuration.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let malformed = |e: serde_yaml::Error| ConfigError::Malformed {
            what: "csi-beegfs-config.yaml".into(),
            message: e.to_string(),
        };
        let value: Value = serde_yaml::from_str(text).map_err(malformed)?;
        if value.is_null() {
            return Ok(Self::default());
        }
        let raw: RawDriverConfig = serde_yaml::from_value(value).map_err(malformed)?;
        raw.convert()
    }

    /// Reads and parses a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_yaml(&text)
    }

    /// The configuration of filesystem `sys_mgmtd_host` on node `node_id`, every level
    /// merged in the documented order.
    pub fn resolve(&self, node_id: &str, sys_mgmtd_host: &str) -> BeegfsConfig {
        let mut merged = self.config.clone();
        for fs in &self.file_system_specific_configs {
            if fs.sys_mgmtd_host == sys_mgmtd_host {
                merged.overlay(&fs.config);
            }
        }
        let nodes: Vec<&NodeSpecificConfig> = self
            .node_specific_configs
            .iter()
            .filter(|n| n.node_list.iter().any(|name| name == node_id))
            .collect();
        for node in &nodes {
            merged.overlay(&node.config);
        }
        for node in &nodes {
            for fs in &node.file_system_specific_configs {
                if fs.sys_mgmtd_host == sys_mgmtd_host {
                    merged.overlay(&fs.config);
                }
            }
        }
        merged
    }

    /// Every management host the file names, in order of first appearance.
    pub fn hosts(&self) -> Vec<String> {
        let mut hosts: Vec<String> = Vec::new();
        let all = self.file_system_specific_configs.iter().chain(
            self.node_specific_configs
                .iter()
                .flat_map(|n| n.file_system_specific_configs.iter()),
        );
        for fs in all {
            if !hosts.contains(&fs.sys_mgmtd_host) {
                hosts.push(fs.sys_mgmtd_host.clone());
            }
        }
        hosts
    }
}

/// Checks a management host as it may appear in configuration and volume ids: a host name,
/// an IPv4 address or a bracketed IPv6 address, optionally with a port.
pub fn check_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("must not be empty".into());
    }
    if host.len() > 255 {
        return Err("is longer than 255 bytes".into());
    }
    let ok = host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '[' | ']'));
    if !ok || host.starts_with(['.', '-']) {
        return Err(format!(
            "{host:?} is not a host name or address (letters, digits, '.', '-', '_', ':', brackets)"
        ));
    }
    Ok(())
}

/// Whether `s` is an IP address or a CIDR subnet (`10.0.0.0/24`).
fn is_ip_or_cidr(s: &str) -> bool {
    match s.split_once('/') {
        None => s.parse::<IpAddr>().is_ok(),
        Some((ip, bits)) => match (ip.parse::<IpAddr>(), bits.parse::<u8>()) {
            (Ok(IpAddr::V4(_)), Ok(b)) => b <= 32,
            (Ok(IpAddr::V6(_)), Ok(b)) => b <= 128,
            _ => false,
        },
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDriverConfig {
    config: Option<RawBeegfsConfig>,
    file_system_specific_configs: Option<Vec<RawFsConfig>>,
    node_specific_configs: Option<Vec<RawNodeConfig>>,
    #[serde(flatten)]
    other: BTreeMap<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawFsConfig {
    sys_mgmtd_host: Option<Value>,
    config: Option<RawBeegfsConfig>,
    #[serde(flatten)]
    other: BTreeMap<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawNodeConfig {
    node_list: Option<Vec<Value>>,
    config: Option<RawBeegfsConfig>,
    file_system_specific_configs: Option<Vec<RawFsConfig>>,
    #[serde(flatten)]
    other: BTreeMap<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawBeegfsConfig {
    conn_interfaces: Option<Vec<Value>>,
    conn_net_filter: Option<Vec<Value>>,
    conn_tcp_only_filter: Option<Vec<Value>>,
    #[serde(rename = "connRDMAInterfaces")]
    conn_rdma_interfaces: Option<Vec<Value>>,
    grpc_port: Option<Value>,
    beegfs_client_conf: Option<BTreeMap<String, Value>>,
    #[serde(flatten)]
    other: BTreeMap<String, Value>,
}

/// A YAML scalar as text: strings as they are, numbers and booleans as written.
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn warn_unknown(at: &str, other: &BTreeMap<String, Value>) {
    for key in other.keys() {
        if at.is_empty() && key == "pfsCsi" {
            continue;
        }
        warn!(key = %format!("{at}{key}"), "unknown key in csi-beegfs-config.yaml ignored");
    }
}

fn string_list(at: &str, values: Option<Vec<Value>>) -> Result<Vec<String>, ConfigError> {
    values
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, v)| {
            scalar_text(v).ok_or_else(|| {
                ConfigError::Invalid(format!("{at}[{i}]: must be a string, not {v:?}"))
            })
        })
        .collect()
}

impl RawDriverConfig {
    fn convert(self) -> Result<DriverConfig, ConfigError> {
        warn_unknown("", &self.other);
        let config = convert_config("config", self.config)?;
        let file_system_specific_configs = convert_fs_list(
            "fileSystemSpecificConfigs",
            self.file_system_specific_configs,
        )?;
        let mut node_specific_configs = Vec::new();
        for (i, node) in self
            .node_specific_configs
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            let at = format!("nodeSpecificConfigs[{i}]");
            warn_unknown(&format!("{at}."), &node.other);
            let node_list = string_list(&format!("{at}.nodeList"), node.node_list)?;
            if node_list.is_empty() {
                warn!(entry = %at, "nodeSpecificConfigs entry without nodeList applies to no node");
            }
            node_specific_configs.push(NodeSpecificConfig {
                node_list,
                config: convert_config(&format!("{at}.config"), node.config)?,
                file_system_specific_configs: convert_fs_list(
                    &format!("{at}.fileSystemSpecificConfigs"),
                    node.file_system_specific_configs,
                )?,
            });
        }
        Ok(DriverConfig {
            config,
            file_system_specific_configs,
            node_specific_configs,
        })
    }
}

fn convert_fs_list(
    at: &str,
    list: Option<Vec<RawFsConfig>>,
) -> Result<Vec<FileSystemSpecificConfig>, ConfigError> {
    let mut out = Vec::new();
    for (i, fs) in list.unwrap_or_default().into_iter().enumerate() {
        let at = format!("{at}[{i}]");
        warn_unknown(&format!("{at}."), &fs.other);
        let host = fs
            .sys_mgmtd_host
            .as_ref()
            .and_then(scalar_text)
            .ok_or_else(|| ConfigError::Invalid(format!("{at}.sysMgmtdHost: is required")))?;
        check_host(&host).map_err(|e| ConfigError::Invalid(format!("{at}.sysMgmtdHost: {e}")))?;
        out.push(FileSystemSpecificConfig {
            sys_mgmtd_host: host,
            config: convert_config(&format!("{at}.config"), fs.config)?,
        });
    }
    Ok(out)
}

fn convert_config(at: &str, raw: Option<RawBeegfsConfig>) -> Result<BeegfsConfig, ConfigError> {
    let Some(raw) = raw else {
        return Ok(BeegfsConfig::default());
    };
    warn_unknown(&format!("{at}."), &raw.other);
    let conn_net_filter = string_list(&format!("{at}.connNetFilter"), raw.conn_net_filter)?;
    let conn_tcp_only_filter =
        string_list(&format!("{at}.connTcpOnlyFilter"), raw.conn_tcp_only_filter)?;
    for (name, list) in [
        ("connNetFilter", &conn_net_filter),
        ("connTcpOnlyFilter", &conn_tcp_only_filter),
    ] {
        if let Some(bad) = list.iter().find(|s| !is_ip_or_cidr(s)) {
            return Err(ConfigError::Invalid(format!(
                "{at}.{name}: {bad:?} is not an IP address or subnet"
            )));
        }
    }
    let grpc_port = match raw.grpc_port {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            scalar_text(&v)
                .and_then(|s| s.trim().parse::<u16>().ok())
                .filter(|p| *p != 0)
                .ok_or_else(|| {
                    ConfigError::Invalid(format!("{at}.grpcPort: {v:?} is not a port number"))
                })?,
        ),
    };
    let mut beegfs_client_conf = BTreeMap::new();
    for (key, value) in raw.beegfs_client_conf.unwrap_or_default() {
        let text = match &value {
            Value::Null => String::new(),
            v => scalar_text(v).ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "{at}.beegfsClientConf.{key}: must be a string, number or boolean"
                ))
            })?,
        };
        let owned_file_key = key.starts_with("conn") && key.ends_with("File");
        if DRIVER_OWNED_KEYS.contains(&key.as_str()) || owned_file_key {
            warn!(
                key = %format!("{at}.beegfsClientConf.{key}"),
                "beegfsClientConf key is set by the driver itself; dropped"
            );
            continue;
        }
        if key.is_empty() || key.contains(['=', '\n', '#']) || key.trim() != key {
            return Err(ConfigError::Invalid(format!(
                "{at}.beegfsClientConf: {key:?} is not a beegfs-client.conf key"
            )));
        }
        if text.contains('\n') {
            return Err(ConfigError::Invalid(format!(
                "{at}.beegfsClientConf.{key}: value must be one line"
            )));
        }
        beegfs_client_conf.insert(key, text);
    }
    Ok(BeegfsConfig {
        conn_interfaces: string_list(&format!("{at}.connInterfaces"), raw.conn_interfaces)?,
        conn_net_filter,
        conn_tcp_only_filter,
        conn_rdma_interfaces: string_list(
            &format!("{at}.connRDMAInterfaces"),
            raw.conn_rdma_interfaces,
        )?,
        grpc_port,
        beegfs_client_conf,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every level sets `logLevel` to its own name and one list; later levels must win.
    const LAYERED: &str = r#"
config:
  connInterfaces: [level0]
  grpcPort: 8010
  beegfsClientConf:
    logLevel: "config"
    connMgmtdPortTCP: "8008"
    onlyConfig: "c"
fileSystemSpecificConfigs:
  - sysMgmtdHost: fs-a
    config:
      connInterfaces: [level1]
      beegfsClientConf:
        logLevel: "fs-a"
        onlyFs: "f"
  - sysMgmtdHost: fs-a
    config:
      beegfsClientConf:
        logLevel: "fs-a-later"
  - sysMgmtdHost: fs-b
    config:
      grpcPort: "9010"
      beegfsClientConf:
        logLevel: "fs-b"
nodeSpecificConfigs:
  - nodeList: [node-1, node-2]
    config:
      connNetFilter: [10.0.0.0/24]
      beegfsClientConf:
        logLevel: "node-1/2"
        onlyNode: "n"
    fileSystemSpecificConfigs:
      - sysMgmtdHost: fs-a
        config:
          connInterfaces: [level3]
          beegfsClientConf:
            logLevel: "node-1/2 fs-a"
  - nodeList: [node-1]
    config:
      beegfsClientConf:
        logLevel: "node-1"
"#;

    fn layered() -> DriverConfig {
        DriverConfig::from_yaml(LAYERED).unwrap()
    }

    fn log_level(c: &BeegfsConfig) -> &str {
        c.beegfs_client_conf
            .get("logLevel")
            .map(String::as_str)
            .unwrap()
    }

    #[test]
    fn the_global_config_applies_to_unknown_nodes_and_filesystems() {
        let c = layered().resolve("node-9", "fs-z");
        assert_eq!(log_level(&c), "config");
        assert_eq!(c.conn_interfaces, vec!["level0"]);
        assert_eq!(c.grpc_port, Some(8010));
    }

    #[test]
    fn filesystem_configs_override_the_global_config_and_later_entries_win() {
        let c = layered().resolve("node-9", "fs-a");
        assert_eq!(log_level(&c), "fs-a-later");
        assert_eq!(c.conn_interfaces, vec!["level1"]);
        assert_eq!(c.beegfs_client_conf["onlyConfig"], "c");
        assert_eq!(c.beegfs_client_conf["onlyFs"], "f");
        let b = layered().resolve("node-9", "fs-b");
        assert_eq!(log_level(&b), "fs-b");
        assert_eq!(b.grpc_port, Some(9010));
    }

    #[test]
    fn node_configs_override_filesystem_configs() {
        // fs-b has a filesystem-specific logLevel, but the node level is higher.
        let c = layered().resolve("node-2", "fs-b");
        assert_eq!(log_level(&c), "node-1/2");
        assert_eq!(c.conn_net_filter, vec!["10.0.0.0/24"]);
        assert_eq!(
            c.grpc_port,
            Some(9010),
            "unset keys keep the lower level's value"
        );
        // Of two node entries naming node-1, the later one wins.
        let c1 = layered().resolve("node-1", "fs-b");
        assert_eq!(log_level(&c1), "node-1");
    }

    #[test]
    fn node_filesystem_configs_are_the_highest_level() {
        // Even the later node-1 entry's config loses to a node filesystem-specific config.
        let c = layered().resolve("node-1", "fs-a");
        assert_eq!(log_level(&c), "node-1/2 fs-a");
        assert_eq!(c.conn_interfaces, vec!["level3"]);
        assert_eq!(c.beegfs_client_conf["onlyNode"], "n");
        assert_eq!(c.beegfs_client_conf["connMgmtdPortTCP"], "8008");
    }

    #[test]
    fn unquoted_numbers_and_booleans_become_strings() {
        let c = DriverConfig::from_yaml(
            "config:\n  beegfsClientConf:\n    connMgmtdPortTCP: 9008\n    connUseRDMA: false\n    sysSessionCheckOnClose: 1.5\n",
        )
        .unwrap();
        let conf = &c.config.beegfs_client_conf;
        assert_eq!(conf["connMgmtdPortTCP"], "9008");
        assert_eq!(conf["connUseRDMA"], "false");
        assert_eq!(conf["sysSessionCheckOnClose"], "1.5");
    }

    #[test]
    fn driver_owned_keys_are_dropped() {
        let c = DriverConfig::from_yaml(
            "config:\n  beegfsClientConf:\n    sysMgmtdHost: evil\n    connClientPortUDP: \"1\"\n    connClientPort: 2\n    connPortShift: 3\n    connAuthFile: /x\n    connInterfacesFile: /y\n    connRDMAInterfacesFile: /z\n    logLevel: \"3\"\n",
        )
        .unwrap();
        let keys: Vec<_> = c.config.beegfs_client_conf.keys().cloned().collect();
        assert_eq!(keys, vec!["logLevel".to_string()]);
    }

    #[test]
    fn bad_values_are_errors_naming_their_key() {
        let cases = [
            (
                "fileSystemSpecificConfigs:\n  - config: {}\n",
                "fileSystemSpecificConfigs[0].sysMgmtdHost",
            ),
            (
                "fileSystemSpecificConfigs:\n  - sysMgmtdHost: \"a b\"\n",
                "fileSystemSpecificConfigs[0].sysMgmtdHost",
            ),
            (
                "config:\n  connNetFilter: [10.0.0.0/99]\n",
                "config.connNetFilter",
            ),
            ("config:\n  grpcPort: http\n", "config.grpcPort"),
            (
                "nodeSpecificConfigs:\n  - nodeList: [a]\n    config:\n      beegfsClientConf:\n        x: [1]\n",
                "nodeSpecificConfigs[0].config.beegfsClientConf.x",
            ),
        ];
        for (yaml, key) in cases {
            let err = DriverConfig::from_yaml(yaml).unwrap_err().to_string();
            assert!(err.contains(key), "{yaml}: {err}");
        }
        assert!(matches!(
            DriverConfig::from_yaml("config: [1, 2]"),
            Err(ConfigError::Malformed { .. })
        ));
    }

    #[test]
    fn empty_files_and_null_sections_are_the_empty_configuration() {
        assert_eq!(
            DriverConfig::from_yaml("").unwrap(),
            DriverConfig::default()
        );
        let c = DriverConfig::from_yaml(
            "config:\nfileSystemSpecificConfigs:\nnodeSpecificConfigs:\npfsCsi:\n  beegfs: {}\n",
        )
        .unwrap();
        assert_eq!(c, DriverConfig::default());
    }

    #[test]
    fn hosts_lists_every_filesystem_once() {
        assert_eq!(layered().hosts(), vec!["fs-a", "fs-b"]);
    }

    proptest! {
        #[test]
        fn parsing_arbitrary_text_never_panics(text in "(?s).{0,300}") {
            let _ = DriverConfig::from_yaml(&text);
        }

        #[test]
        fn the_highest_level_setting_a_key_wins(
            levels in proptest::collection::vec(proptest::option::of("[a-z]{1,8}"), 4),
        ) {
            // Level i sets logLevel to levels[i] when Some.
            let conf = |v: &Option<String>| match v {
                Some(s) => format!("{{beegfsClientConf: {{logLevel: \"{s}\"}}}}"),
                None => "{}".to_string(),
            };
            let yaml = format!(
                "config: {}\nfileSystemSpecificConfigs:\n  - sysMgmtdHost: h\n    config: {}\nnodeSpecificConfigs:\n  - nodeList: [n]\n    config: {}\n    fileSystemSpecificConfigs:\n      - sysMgmtdHost: h\n        config: {}\n",
                conf(&levels[0]), conf(&levels[1]), conf(&levels[2]), conf(&levels[3]),
            );
            let c = DriverConfig::from_yaml(&yaml).unwrap().resolve("n", "h");
            let expected = levels.iter().rev().flatten().next();
            prop_assert_eq!(c.beegfs_client_conf.get("logLevel"), expected);
        }

        #[test]
        fn client_conf_scalars_round_trip_as_text(n in any::<u32>(), b in any::<bool>(), s in "[a-zA-Z0-9_./-]{1,20}") {
            let yaml = format!("config:\n  beegfsClientConf:\n    a: {n}\n    b: {b}\n    c: \"{s}\"\n");
            let c = DriverConfig::from_yaml(&yaml).unwrap();
            prop_assert_eq!(&c.config.beegfs_client_conf["a"], &n.to_string());
            prop_assert_eq!(&c.config.beegfs_client_conf["b"], &b.to_string());
            prop_assert_eq!(&c.config.beegfs_client_conf["c"], &s);
        }
    }
}
