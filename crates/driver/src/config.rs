//! Loading the configuration files.
//!
//! Each `--config` file is YAML in one of the formats users already have, and may carry
//! our own settings beside them:
//! - the EXAScaler driver's format (`exascaler_map`, `debug`, `openshift`, or the flat v1.x
//!   `exaFS`/`mountPoint`) configures the Lustre backend;
//! - the BeeGFS driver's `csi-beegfs-config.yaml` (`config`, `fileSystemSpecificConfigs`,
//!   `nodeSpecificConfigs`) configures the BeeGFS backend;
//! - `pfsCsi:` holds pfs-csi's own settings (`pfsCsi.lustre`, `pfsCsi.beegfs`: tool paths,
//!   timeouts...), merged across files, later files winning.
//!
//! Environment variables `PFS_CSI_SETTINGS_<path>` override settings, with `__` between
//! keys in their original case, e.g. `PFS_CSI_SETTINGS_lustre__commandTimeoutSeconds=60`.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Yaml};
use serde_json::{Map, Value};

/// Top-level keys of the EXAScaler driver's configuration.
const EXASCALER_KEYS: &[&str] = &["exascaler_map", "exaFS", "mountPoint", "debug", "openshift"];
/// Top-level keys of the BeeGFS driver's configuration.
const BEEGFS_KEYS: &[&str] = &["config", "fileSystemSpecificConfigs", "nodeSpecificConfigs"];
/// Our own settings key.
const SETTINGS_KEY: &str = "pfsCsi";
/// Prefix of the environment overrides of our settings.
const SETTINGS_ENV_PREFIX: &str = "PFS_CSI_SETTINGS_";

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read or is not valid YAML.
    #[error("configuration file {path}: {message}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A top-level key belongs to no known format.
    #[error("configuration file {path}: unknown top-level key {key:?}; expected EXAScaler keys ({}), BeeGFS keys ({}) or {SETTINGS_KEY}", EXASCALER_KEYS.join(", "), BEEGFS_KEYS.join(", "))]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
    },
    /// Two files configure the same filesystem type.
    #[error("{kind} configuration given twice: in {first} and in {second}")]
    Duplicate {
        /// `EXAScaler` or `BeeGFS`.
        kind: &'static str,
        /// The first file.
        first: PathBuf,
        /// The second file.
        second: PathBuf,
    },
    /// No file configures any filesystem.
    #[error(
        "no filesystem is configured: give an EXAScaler or a BeeGFS configuration file with --config"
    )]
    Empty,
}

/// The configuration, split by the backend it is for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DriverConfig {
    /// The EXAScaler-format document and the file it came from.
    pub lustre: Option<(PathBuf, Value)>,
    /// The BeeGFS-format document and the file it came from.
    pub beegfs: Option<(PathBuf, Value)>,
    /// `pfsCsi` settings merged from every file and the environment.
    pub settings: Value,
}

impl DriverConfig {
    /// Our settings for `backend` (`lustre`, `beegfs`): `pfsCsi.<backend>`, or null.
    pub fn settings_for(&self, backend: &str) -> Value {
        self.settings.get(backend).cloned().unwrap_or(Value::Null)
    }
}

/// Loads every file in order, then applies environment overrides of the settings.
pub fn load(paths: &[PathBuf]) -> Result<DriverConfig, ConfigError> {
    load_with_env(
        paths,
        Env::prefixed(SETTINGS_ENV_PREFIX)
            .split("__")
            .lowercase(false),
    )
}

fn load_with_env(paths: &[PathBuf], env: Env) -> Result<DriverConfig, ConfigError> {
    let mut out = DriverConfig::default();
    let mut settings = Figment::new();
    for path in paths {
        let doc = read(path)?;
        let mut lustre = Map::new();
        let mut beegfs = Map::new();
        for (key, value) in doc {
            if key == SETTINGS_KEY {
                settings = settings.merge(figment::providers::Serialized::defaults(value));
            } else if EXASCALER_KEYS.contains(&key.as_str()) {
                lustre.insert(key, value);
            } else if BEEGFS_KEYS.contains(&key.as_str()) {
                beegfs.insert(key, value);
            } else {
                return Err(ConfigError::UnknownKey {
                    path: path.clone(),
                    key,
                });
            }
        }
        // `debug` alone (a flag both formats could carry) does not make a Lustre config.
        if lustre.keys().any(|k| k != "debug" && k != "openshift") {
            place(&mut out.lustre, "EXAScaler", path, lustre)?;
        }
        if !beegfs.is_empty() {
            place(&mut out.beegfs, "BeeGFS", path, beegfs)?;
        }
    }
    if out.lustre.is_none() && out.beegfs.is_none() {
        return Err(ConfigError::Empty);
    }
    out.settings = settings
        .merge(env)
        .extract::<Value>()
        .map_err(|e| ConfigError::Read {
            path: PathBuf::from(format!("{SETTINGS_ENV_PREFIX}*")),
            message: e.to_string(),
        })?;
    Ok(out)
}

fn place(
    slot: &mut Option<(PathBuf, Value)>,
    kind: &'static str,
    path: &Path,
    doc: Map<String, Value>,
) -> Result<(), ConfigError> {
    if let Some((first, _)) = slot {
        return Err(ConfigError::Duplicate {
            kind,
            first: first.clone(),
            second: path.to_path_buf(),
        });
    }
    *slot = Some((path.to_path_buf(), Value::Object(doc)));
    Ok(())
}

fn read(path: &Path) -> Result<Map<String, Value>, ConfigError> {
    let err = |message: String| ConfigError::Read {
        path: path.to_path_buf(),
        message,
    };
    if !path.is_file() {
        return Err(err("does not exist or is not a file".into()));
    }
    match Figment::from(Yaml::file_exact(path)).extract::<Value>() {
        Ok(Value::Object(map)) => Ok(map),
        Ok(Value::Null) => Ok(Map::new()),
        Ok(other) => Err(err(format!(
            "expected a mapping at the top level, found {other}"
        ))),
        Err(e) => Err(err(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn no_env() -> Env {
        Env::prefixed("PFS_CSI_TEST_NEVER_SET_")
    }

    #[test]
    fn both_formats_load_from_separate_files_and_settings_merge() {
        let dir = tempfile::tempdir().unwrap();
        let exa = write(
            dir.path(),
            "exa.yaml",
            "exascaler_map:\n  exa1:\n    exaFS: 10.0.0.1@tcp:/fs\n    mountPoint: /exaFS\ndebug: true\npfsCsi:\n  lustre:\n    commandTimeoutSeconds: 5\n",
        );
        let bee = write(
            dir.path(),
            "bee.yaml",
            "config:\n  beegfsClientConf:\n    connMgmtdPortTCP: 8008\npfsCsi:\n  lustre:\n    mountTimeoutSeconds: 9\n",
        );
        let cfg = load_with_env(&[exa.clone(), bee.clone()], no_env()).unwrap();
        let (path, lustre) = cfg.lustre.clone().unwrap();
        assert_eq!(path, exa);
        assert_eq!(lustre["exascaler_map"]["exa1"]["mountPoint"], "/exaFS");
        assert_eq!(lustre["debug"], true);
        assert_eq!(cfg.beegfs.clone().unwrap().0, bee);
        let settings = cfg.settings_for("lustre");
        assert_eq!(settings["commandTimeoutSeconds"], 5);
        assert_eq!(settings["mountTimeoutSeconds"], 9);
        assert_eq!(cfg.settings_for("beegfs"), Value::Null);
    }

    #[test]
    fn one_file_may_hold_both_formats() {
        let dir = tempfile::tempdir().unwrap();
        let both = write(
            dir.path(),
            "both.yaml",
            "exaFS: 10.0.0.1@tcp:/fs\nmountPoint: /exaFS\nfileSystemSpecificConfigs: []\n",
        );
        let cfg = load_with_env(&[both], no_env()).unwrap();
        assert!(cfg.lustre.is_some() && cfg.beegfs.is_some());
    }

    #[test]
    fn unknown_keys_duplicates_and_empty_configs_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let bad = write(dir.path(), "bad.yaml", "exascaler_map: {}\ncolour: blue\n");
        let err = load_with_env(std::slice::from_ref(&bad), no_env()).unwrap_err();
        assert!(
            err.to_string().contains("\"colour\"") && err.to_string().contains("bad.yaml"),
            "{err}"
        );

        let a = write(dir.path(), "a.yaml", "exaFS: x@tcp:/a\nmountPoint: /a\n");
        let b = write(dir.path(), "b.yaml", "exascaler_map: {}\n");
        assert!(matches!(
            load_with_env(&[a, b], no_env()),
            Err(ConfigError::Duplicate {
                kind: "EXAScaler",
                ..
            })
        ));

        let only_debug = write(dir.path(), "d.yaml", "debug: true\n");
        assert!(matches!(
            load_with_env(&[only_debug], no_env()),
            Err(ConfigError::Empty)
        ));

        let missing = dir.path().join("missing.yaml");
        assert!(matches!(
            load_with_env(&[missing], no_env()),
            Err(ConfigError::Read { .. })
        ));

        let list = write(dir.path(), "list.yaml", "- a\n- b\n");
        assert!(matches!(
            load_with_env(&[list], no_env()),
            Err(ConfigError::Read { .. })
        ));
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own large error
    fn environment_overrides_settings_keeping_case() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("exa.yaml", "exaFS: x@tcp:/a\nmountPoint: /a\npfsCsi:\n  lustre:\n    commandTimeoutSeconds: 5\n")?;
            jail.set_env("PFS_CSI_SETTINGS_lustre__commandTimeoutSeconds", "60");
            let cfg = load(&[PathBuf::from("exa.yaml")]).map_err(|e| e.to_string())?;
            assert_eq!(cfg.settings_for("lustre")["commandTimeoutSeconds"], 60);
            Ok(())
        });
    }

    proptest! {
        #[test]
        fn arbitrary_yaml_never_panics(text in "\\PC{0,200}") {
            let dir = tempfile::tempdir().unwrap();
            let path = write(dir.path(), "x.yaml", &text);
            let _ = load_with_env(&[path], no_env());
        }
    }
}
