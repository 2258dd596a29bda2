//! The `beegfs-client.conf` format: `key = value` lines, `#` comments, later keys win.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A parsed `beegfs-client.conf`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientConf {
    entries: BTreeMap<String, String>,
}

/// Why a client configuration cannot be used to reach a filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfProblem {
    /// `sysMgmtdHost` is missing or empty.
    MgmtdHostUndefined,
    /// No `connAuthFile` and authentication not disabled.
    NoAuthFile,
    /// `connAuthFile` names a file that cannot be read.
    AuthFileUnreadable {
        /// The configured path.
        path: PathBuf,
        /// The reason given by the system.
        reason: String,
    },
    /// `connAuthFile` names an empty file.
    AuthFileEmpty(PathBuf),
}

/// The authentication a client presents, derived from its configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAuth {
    /// `connDisableAuthentication = true` and no auth file.
    Disabled,
    /// The content of `connAuthFile`.
    Secret(Vec<u8>),
}

impl ClientConf {
    /// Parses the text of a configuration file.
    pub fn parse(text: &str) -> Self {
        let mut entries = BTreeMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) = match line.split_once('=') {
                Some((key, value)) => (key.trim(), value.trim()),
                None => (line, ""),
            };
            if key.is_empty() {
                continue;
            }
            entries.insert(key.to_string(), value.to_string());
        }
        ClientConf { entries }
    }

    /// Reads and parses a configuration file.
    pub fn load(path: &Path) -> std::io::Result<Self> {
        Ok(Self::parse(&std::fs::read_to_string(path)?))
    }

    /// The value of `key`, if set (an empty value counts as unset).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// Sets `key` (command-line overrides of the BeeGFS 7 tool).
    pub fn set(&mut self, key: &str, value: &str) {
        self.entries.insert(key.to_string(), value.to_string());
    }

    /// `sysMgmtdHost`.
    pub fn mgmtd_host(&self) -> Option<&str> {
        self.get("sysMgmtdHost")
    }

    /// Whether `connDisableAuthentication` is true.
    pub fn auth_disabled(&self) -> bool {
        matches!(
            self.get("connDisableAuthentication")
                .map(str::to_ascii_lowercase)
                .as_deref(),
            Some("true" | "1" | "yes")
        )
    }

    /// Checks the configuration as the client does before talking to the management service and
    /// returns the authentication it would present.
    pub fn client_auth(&self) -> Result<ClientAuth, ConfProblem> {
        if self.mgmtd_host().is_none() {
            return Err(ConfProblem::MgmtdHostUndefined);
        }
        self.auth()
    }

    /// The authentication the configuration presents (the host is not checked): the secret in
    /// `connAuthFile`, or none when `connDisableAuthentication` is true.
    pub fn auth(&self) -> Result<ClientAuth, ConfProblem> {
        if self.auth_disabled() {
            return Ok(ClientAuth::Disabled);
        }
        let Some(path) = self.get("connAuthFile") else {
            return Err(ConfProblem::NoAuthFile);
        };
        let path = PathBuf::from(path);
        match std::fs::read(&path) {
            Ok(bytes) if bytes.is_empty() => Err(ConfProblem::AuthFileEmpty(path)),
            Ok(bytes) => Ok(ClientAuth::Secret(bytes)),
            Err(e) => Err(ConfProblem::AuthFileUnreadable {
                path,
                reason: crate::errno_text(&e),
            }),
        }
    }
}

impl ConfProblem {
    /// The message the BeeGFS tools print for this problem.
    pub fn message(&self) -> String {
        match self {
            ConfProblem::MgmtdHostUndefined => "Management host undefined".to_string(),
            ConfProblem::NoAuthFile => "No connAuthFile configured. Using BeeGFS without connection authentication is considered insecure and is not recommended. If you really want or need to run BeeGFS without connection authentication, please set connDisableAuthentication to true.".to_string(),
            ConfProblem::AuthFileUnreadable { path, reason } => {
                format!("Unable to open auth file: {} (SysErr: {reason})", path.display())
            }
            ConfProblem::AuthFileEmpty(path) => format!("Auth file is empty: {}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn keys_values_and_comments() {
        let conf = ClientConf::parse(
            "# comment\nsysMgmtdHost = 10.0.0.5\n\nconnClientPort=8004\n  connAuthFile =  \nflag\n",
        );
        assert_eq!(conf.mgmtd_host(), Some("10.0.0.5"));
        assert_eq!(conf.get("connClientPort"), Some("8004"));
        assert_eq!(conf.get("connAuthFile"), None);
        assert_eq!(conf.get("flag"), None);
        assert!(!conf.auth_disabled());
    }

    #[test]
    fn later_keys_win() {
        let conf = ClientConf::parse("sysMgmtdHost = a\nsysMgmtdHost = b\n");
        assert_eq!(conf.mgmtd_host(), Some("b"));
    }

    #[test]
    fn missing_host_is_reported_first() {
        let conf = ClientConf::parse("connDisableAuthentication = true\n");
        assert_eq!(conf.client_auth(), Err(ConfProblem::MgmtdHostUndefined));
    }

    #[test]
    fn auth_rules() {
        let conf = ClientConf::parse("sysMgmtdHost = h\n");
        assert_eq!(conf.client_auth(), Err(ConfProblem::NoAuthFile));
        let conf = ClientConf::parse("sysMgmtdHost = h\nconnDisableAuthentication = true\n");
        assert_eq!(conf.client_auth(), Ok(ClientAuth::Disabled));
        let conf = ClientConf::parse("sysMgmtdHost = h\nconnAuthFile = /nonexistent/secret\n");
        assert!(matches!(
            conf.client_auth(),
            Err(ConfProblem::AuthFileUnreadable { .. })
        ));
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("auth");
        std::fs::write(&secret, b"s3cret").unwrap();
        let conf = ClientConf::parse(&format!(
            "sysMgmtdHost = h\nconnAuthFile = {}\n",
            secret.display()
        ));
        assert_eq!(
            conf.client_auth(),
            Ok(ClientAuth::Secret(b"s3cret".to_vec()))
        );
    }

    proptest! {
        #[test]
        fn every_written_key_reads_back(
            pairs in prop::collection::btree_map("[a-zA-Z][a-zA-Z0-9_]{0,15}", "[a-zA-Z0-9_./:-]{1,20}", 0..8),
            pad in " {0,3}",
        ) {
            let text: String = pairs
                .iter()
                .map(|(k, v)| format!("{pad}{k}{pad}={pad}{v}{pad}\n# {k} = ignored\n"))
                .collect();
            let conf = ClientConf::parse(&text);
            for (k, v) in &pairs {
                prop_assert_eq!(conf.get(k), Some(v.as_str()));
            }
        }

        #[test]
        fn parsing_never_panics(text in "(?s).{0,200}") {
            let _ = ClientConf::parse(&text);
        }
    }
}
