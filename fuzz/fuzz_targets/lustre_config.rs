//! The EXAScaler configuration file and our `pfsCsi.lustre` settings, read from YAML text the
//! way the driver reads a `--config` file (figment, then the EXAScaler keys picked out).
//!
//! Properties: loading never panics; an accepted configuration satisfies every rule the
//! loader states (entry names, absolute mount points that are neither shared nor nested, at
//! most one v1xCompatible entry, checked mount options, octal modes, label zones), writes
//! itself back to a value that loads to the same configuration, and gives every entry
//! canonical volume ids that resolve back to it and never into the metadata directory.
#![no_main]

use std::path::{Component, Path};

use csi_core::ErrorCode;
use figment::Figment;
use figment::providers::{Format, Yaml};
use libfuzzer_sys::fuzz_target;
use lustre_backend::config::{LustreConfig, LustreEntry, LustreSettings};
use lustre_backend::mount_options;
use lustre_backend::volume_id::{canonical_volume_id, check_name, parse_volume_id};
use serde_json::{Map, Value};

/// The top-level keys the driver hands to the Lustre backend.
const EXASCALER_KEYS: &[&str] = &["exascaler_map", "exaFS", "mountPoint", "debug", "openshift"];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // As the unit tests and a YAML-reading caller do.
    if let Ok(value) = serde_yaml::from_str::<Value>(text) {
        check_config(&value, None);
        if let Some(settings) = value.get("pfsCsi").and_then(|p| p.get("lustre")) {
            check_settings(settings.clone());
        }
    }
    // As the driver reads a configuration file.
    if let Ok(Value::Object(doc)) = Figment::from(Yaml::string(text)).extract::<Value>() {
        let lustre: Map<String, Value> = doc
            .iter()
            .filter(|(k, _)| EXASCALER_KEYS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let settings = doc
            .get("pfsCsi")
            .and_then(|p| p.get("lustre"))
            .cloned()
            .unwrap_or(Value::Null);
        let settings = check_settings(settings);
        check_config(&Value::Object(lustre), settings.as_ref());
    }
});

fn check_settings(value: Value) -> Option<LustreSettings> {
    let s = LustreSettings::from_value(value).ok()?;
    for secs in [
        s.command_timeout_seconds,
        s.mount_timeout_seconds,
        s.archive_timeout_seconds,
    ] {
        assert!(secs >= 1, "{s:?}");
    }
    let m = s.metadata_dir.as_str();
    assert!(
        !m.is_empty() && m != "." && m != ".." && !m.contains(['/', '\0']),
        "metadataDir {m:?}"
    );
    if let Some(z) = &s.node_zone {
        assert!(is_label_value(z), "nodeZone {z:?}");
    }
    // The settings write themselves back unchanged.
    let again = LustreSettings::from_value(serde_json::to_value(&s).expect("serializable"))
        .unwrap_or_else(|e| panic!("{s:?} does not load back: {e}"));
    assert_eq!(again, s);
    Some(s)
}

fn is_label_value(v: &str) -> bool {
    v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && v.starts_with(|c: char| c.is_ascii_alphanumeric())
        && v.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn check_dir(what: &str, p: &Path) {
    assert!(p.is_absolute(), "{what} {}", p.display());
    assert_ne!(p, Path::new("/"), "{what}");
    assert!(
        !p.components()
            .any(|c| matches!(c, Component::ParentDir | Component::CurDir)),
        "{what} {}",
        p.display()
    );
    let text = p.to_str().expect("from UTF-8 text");
    assert!(!text.chars().any(char::is_control), "{what} {text:?}");
    assert!(text == "/" || !text.ends_with('/'), "{what} {text:?}");
}

fn check_entry(name: &str, e: &LustreEntry) {
    assert_eq!(name, e.name);
    assert!(
        !name.is_empty()
            && name.len() <= 63
            && !name
                .chars()
                .any(|c| matches!(c, ':' | '/' | ';') || c.is_whitespace() || c.is_control()),
        "entry name {name:?}"
    );
    check_dir("mountPoint", &e.mount_point);
    if let Some(t) = &e.temp_mount_point {
        check_dir("tempMountPoint", t);
    }
    let fs = &e.exa_fs;
    assert!(
        !fs.fsname.is_empty() && fs.fsname.len() <= 8,
        "fsname {:?}",
        fs.fsname
    );
    for c in &fs.subdir {
        assert!(
            !c.is_empty() && c != "." && c != ".." && !c.contains('/'),
            "{name}: subdir component {c:?}"
        );
    }
    assert!(!fs.mgs.nodes().is_empty(), "{name}: no MGS");
    for option in &e.default_mount_options {
        assert!(
            mount_options::check_option(option).is_ok(),
            "{name}: default mount option {option:?}"
        );
    }
    if let Some(mode) = e.volume_dir_permissions {
        assert!(mode <= 0o7777, "{name}: mode {mode:o}");
    }
    if let Some(z) = &e.zone {
        assert!(is_label_value(z), "{name}: zone {z:?}");
    }
}

fn check_config(value: &Value, settings: Option<&LustreSettings>) {
    let config = match LustreConfig::from_value(value.clone()) {
        Ok(c) => c,
        Err(e) => {
            // Errors are one line: they end up in a gRPC status and a log line.
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    assert!(!config.entries.is_empty());
    for (name, e) in &config.entries {
        check_entry(name, e);
    }
    assert!(config.entries.values().filter(|e| e.v1x_compatible).count() <= 1);
    let entries: Vec<&LustreEntry> = config.entries.values().collect();
    for (i, a) in entries.iter().enumerate() {
        for b in &entries[i + 1..] {
            assert!(
                !a.mount_point.starts_with(&b.mount_point)
                    && !b.mount_point.starts_with(&a.mount_point),
                "{} and {} share or nest mount points",
                a.name,
                b.name
            );
        }
    }

    // Written back, it loads to the same configuration.
    let again = LustreConfig::from_value(config.to_value())
        .unwrap_or_else(|e| panic!("{:?} does not load back: {e}", config.to_value()));
    assert_eq!(again.entries, config.entries);
    assert_eq!(
        (again.debug, again.openshift),
        (config.debug, config.openshift)
    );

    let meta = settings.map_or(".pfs-csi", |s| s.metadata_dir.as_str());
    for e in config.entries.values() {
        // New volumes' ids resolve back to their entry and directory, including a name equal
        // to the mount point's last component (the one the 2.0 form would misread).
        let last = e
            .mount_point
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("x");
        for name in ["pvc-5f0e", last] {
            if check_name("name", name).is_err() || name == meta {
                continue;
            }
            let Ok(id) = canonical_volume_id(e, name) else {
                continue;
            };
            let h = parse_volume_id(&id, &config, meta)
                .unwrap_or_else(|| panic!("{id:?} not claimed"))
                .unwrap_or_else(|err| panic!("{id:?}: {err}"));
            assert_eq!(
                (h.entry.as_str(), h.dir.as_single(), h.location),
                (e.name.as_str(), Some(name), None),
                "{id:?}"
            );
        }
        // Nothing resolves into the metadata directory.
        let inside = format!("{}:{}/{meta}/volumes", e.name, e.mount_point.display());
        let err = parse_volume_id(&inside, &config, meta)
            .unwrap_or_else(|| panic!("{inside:?} not claimed"))
            .expect_err("a volume in the metadata directory");
        assert_eq!(err.code(), ErrorCode::InvalidArgument, "{inside:?}: {err}");
    }
}
