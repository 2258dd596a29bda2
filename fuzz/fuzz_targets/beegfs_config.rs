//! The BeeGFS driver's configuration file, its connAuth and TLS secret files, and our
//! `pfsCsi.beegfs` settings, from YAML text: directly, and the way the driver reads a
//! `--config` file (figment, the BeeGFS keys picked out and handed over as JSON text).
//!
//! Properties: loading never panics; an accepted configuration, and every node's and
//! filesystem's merged view of it, holds only valid hosts, IP/CIDR filters, non-zero ports and
//! `beegfs-client.conf` keys the driver does not own, with one-line values; accepted settings
//! are valid and usable as deadlines; a secret never appears in an error message or a debug
//! print.
#![no_main]

use std::net::IpAddr;
use std::time::{Duration, Instant};

use beegfs_backend::config::{BeegfsConfig, DriverConfig, check_host};
use beegfs_backend::secrets::ClientSecrets;
use beegfs_backend::settings::BeegfsSettings;
use figment::Figment;
use figment::providers::{Format, Yaml};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

/// The top-level keys the driver hands to the BeeGFS backend.
const BEEGFS_KEYS: &[&str] = &["config", "fileSystemSpecificConfigs", "nodeSpecificConfigs"];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = DriverConfig::from_yaml(text) {
        check_config(&config);
    }
    if let Ok(settings) = BeegfsSettings::from_yaml(text) {
        check_settings(&settings);
    }
    check_secrets(text);

    // The driver's way: figment reads the file, the BeeGFS keys go on as JSON text.
    if let Ok(Value::Object(doc)) = Figment::from(Yaml::string(text)).extract::<Value>() {
        let beegfs: Map<String, Value> = doc
            .iter()
            .filter(|(k, _)| BEEGFS_KEYS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Ok(config) = DriverConfig::from_yaml(&Value::Object(beegfs).to_string()) {
            check_config(&config);
        }
        if let Some(settings) = doc.get("pfsCsi").and_then(|p| p.get("beegfs")) {
            let wrapped = serde_json::json!({"pfsCsi": {"beegfs": settings}});
            if let Ok(settings) = BeegfsSettings::from_yaml(&wrapped.to_string()) {
                check_settings(&settings);
            }
        }
    }
});

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

fn check_level(c: &BeegfsConfig) {
    for filter in c.conn_net_filter.iter().chain(&c.conn_tcp_only_filter) {
        assert!(is_ip_or_cidr(filter), "filter {filter:?}");
    }
    assert_ne!(c.grpc_port, Some(0));
    for (key, value) in &c.beegfs_client_conf {
        assert!(
            !key.is_empty() && !key.contains(['=', '\n', '#']) && key.trim() == key,
            "client conf key {key:?}"
        );
        let owned = matches!(
            key.as_str(),
            "sysMgmtdHost" | "connClientPortUDP" | "connClientPort" | "connPortShift"
        ) || (key.starts_with("conn") && key.ends_with("File"));
        assert!(!owned, "driver-owned key {key:?} kept");
        assert!(!value.contains('\n'), "{key}: value {value:?}");
    }
}

fn check_config(config: &DriverConfig) {
    check_level(&config.config);
    let mut nodes = vec!["node-not-listed".to_string()];
    for fs in &config.file_system_specific_configs {
        assert!(check_host(&fs.sys_mgmtd_host).is_ok());
        check_level(&fs.config);
    }
    for node in &config.node_specific_configs {
        check_level(&node.config);
        nodes.extend(node.node_list.iter().cloned());
        for fs in &node.file_system_specific_configs {
            assert!(check_host(&fs.sys_mgmtd_host).is_ok());
            check_level(&fs.config);
        }
    }
    let mut hosts = config.hosts();
    let listed = hosts.len();
    hosts.sort();
    hosts.dedup();
    assert_eq!(hosts.len(), listed, "hosts() repeats a host");
    hosts.push("host-not-listed".into());
    for node in nodes.iter().take(8) {
        for host in hosts.iter().take(8) {
            let merged = config.resolve(node, host);
            check_level(&merged);
            // The global level's keys survive unless a higher level sets them.
            for key in config.config.beegfs_client_conf.keys() {
                assert!(merged.beegfs_client_conf.contains_key(key), "{key} lost");
            }
        }
    }
}

fn check_settings(s: &BeegfsSettings) {
    assert!(s.validate().is_ok(), "{s:?}");
    assert!(s.command_timeout_seconds > 0 && s.mount_timeout_seconds > 0);
    for (i, q) in s.quotas.iter().enumerate() {
        assert!(check_host(&q.sys_mgmtd_host).is_ok());
        assert!(
            !s.quotas[..i]
                .iter()
                .any(|o| o.sys_mgmtd_host == q.sys_mgmtd_host)
        );
        if q.enabled {
            assert!(q.gid_min > 0 && q.gid_min <= q.gid_max, "{q:?}");
        }
        assert_ne!(q.inodes_per_gib, Some(0));
        assert_eq!(s.quota_for(&q.sys_mgmtd_host).is_some(), q.enabled);
    }
    // Every wait the backend turns into a deadline must be representable as one.
    let now = Instant::now();
    for (key, secs) in [
        ("commandTimeoutSeconds", s.command_timeout_seconds),
        ("mountTimeoutSeconds", s.mount_timeout_seconds),
        ("contentWaitSeconds", s.content_wait_seconds),
        ("nodeUnstageTimeoutSeconds", s.node_unstage_timeout_seconds),
        ("deleteWaitSeconds", s.delete_wait_seconds),
    ] {
        assert!(
            now.checked_add(Duration::from_secs(secs)).is_some(),
            "{key}: {secs} seconds was accepted but overflows a deadline"
        );
    }
}

/// Strings of the document that are values of a secret key, long and unusual enough that
/// finding one in a message can only mean it leaked.
fn secret_values(text: &str) -> Vec<String> {
    let Ok(serde_yaml::Value::Sequence(items)) = serde_yaml::from_str::<serde_yaml::Value>(text)
    else {
        return Vec::new();
    };
    let mut secrets = Vec::new();
    let mut others = Vec::new();
    for item in &items {
        let serde_yaml::Value::Mapping(map) = item else {
            continue;
        };
        for (k, v) in map {
            let key = k.as_str().unwrap_or_default();
            others.push(format!("{k:?}"));
            match v.as_str() {
                Some(s) if key == "connAuth" || key == "tlsCert" => secrets.push(s.to_string()),
                _ => others.push(format!("{v:?}")),
            }
        }
    }
    secrets.retain(|s| {
        s.chars().count() >= 6
            && s.chars()
                .any(|c| !c.is_ascii_alphanumeric() && !" .,:;()[]'\"-_/=+\n".contains(c))
            && !others.iter().any(|o| o.contains(s.as_str()))
    });
    secrets
}

fn check_secrets(text: &str) {
    let secrets = secret_values(text);
    for result in [
        ClientSecrets::from_yaml(Some(text), None),
        ClientSecrets::from_yaml(None, Some(text)),
    ] {
        let shown = match &result {
            Ok(parsed) => {
                for host in parsed.conn_auth_hosts() {
                    assert!(check_host(host).is_ok(), "{host:?}");
                    let secret = parsed.conn_auth(host).expect("listed");
                    assert!(!secret.expose().is_empty(), "{host}: empty connAuth");
                }
                format!("{parsed:?}")
            }
            Err(e) => format!("{e} {e:?}"),
        };
        for secret in &secrets {
            assert!(
                !shown.contains(secret.as_str()),
                "a secret value is printed: {shown}"
            );
        }
    }
}
