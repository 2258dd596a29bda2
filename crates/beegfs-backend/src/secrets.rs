//! The BeeGFS secrets: connection authentication (connAuth) and BeeGFS 8 TLS certificates.
//!
//! Both files come from Kubernetes Secrets in the reference driver's format:
//!
//! ```yaml
//! # connAuth file
//! - sysMgmtdHost: 10.0.0.5
//!   connAuth: some-secret        # raw text, or
//!   encoding: raw                # base64 for binary secrets
//! # TLS certificate file
//! - sysMgmtdHost: 10.0.0.5
//!   tlsCert: |
//!     -----BEGIN CERTIFICATE-----
//! ```
//!
//! Values are held in [`SecretBytes`], which never prints. They reach the tools only as
//! files written with mode 0400 ([`crate::clientconf`]); parse errors name a position, never
//! content.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use base64::Engine;
use serde::Deserialize;

use crate::config::check_host;
use crate::error::ConfigError;

/// Secret bytes; `Debug` and `Display` print `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    /// Wraps secret bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The bytes, to be written to a 0400 file and nowhere else.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How a `connAuth` value is written in the file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConnAuthEncoding {
    /// The text is the secret.
    #[default]
    Raw,
    /// The text is base64 of the secret (line breaks and spaces ignored).
    Base64,
}

/// The secrets of every filesystem, by management host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientSecrets {
    conn_auth: BTreeMap<String, SecretBytes>,
    tls_certs: BTreeMap<String, SecretBytes>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawConnAuth {
    sys_mgmtd_host: String,
    conn_auth: String,
    #[serde(default)]
    encoding: Option<ConnAuthEncoding>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawTlsCert {
    sys_mgmtd_host: String,
    tls_cert: String,
}

/// A parse error with its position only: serde messages can quote values, which are secret.
fn position_only(what: &str, e: &serde_yaml::Error) -> ConfigError {
    let message = match e.location() {
        Some(loc) => format!(
            "not a list of entries of the expected shape (line {}, column {})",
            loc.line(),
            loc.column()
        ),
        None => "not a list of entries of the expected shape".to_string(),
    };
    ConfigError::Malformed {
        what: what.to_string(),
        message,
    }
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

impl ClientSecrets {
    /// No secrets: every filesystem runs without authentication and TLS.
    pub fn none() -> Self {
        Self::default()
    }

    /// Parses both files' text (either may be absent).
    pub fn from_yaml(
        conn_auth: Option<&str>,
        tls_certs: Option<&str>,
    ) -> Result<Self, ConfigError> {
        let mut secrets = Self::default();
        if let Some(text) = conn_auth {
            secrets.conn_auth = parse_conn_auth(text)?;
        }
        if let Some(text) = tls_certs {
            secrets.tls_certs = parse_tls_certs(text)?;
        }
        Ok(secrets)
    }

    /// Reads both files (either may be absent).
    pub fn load(conn_auth: Option<&Path>, tls_certs: Option<&Path>) -> Result<Self, ConfigError> {
        let conn_auth = conn_auth.map(read).transpose()?;
        let tls_certs = tls_certs.map(read).transpose()?;
        Self::from_yaml(conn_auth.as_deref(), tls_certs.as_deref())
    }

    /// The connAuth secret of `host`.
    pub fn conn_auth(&self, host: &str) -> Option<&SecretBytes> {
        self.conn_auth.get(host)
    }

    /// The TLS certificate (PEM) of `host`.
    pub fn tls_cert(&self, host: &str) -> Option<&SecretBytes> {
        self.tls_certs.get(host)
    }

    /// Hosts with a connAuth secret.
    pub fn conn_auth_hosts(&self) -> impl Iterator<Item = &str> {
        self.conn_auth.keys().map(String::as_str)
    }
}

fn parse_conn_auth(text: &str) -> Result<BTreeMap<String, SecretBytes>, ConfigError> {
    const WHAT: &str = "connAuth file";
    if text.trim().is_empty() {
        return Ok(BTreeMap::new());
    }
    let entries: Vec<RawConnAuth> =
        serde_yaml::from_str(text).map_err(|e| position_only(WHAT, &e))?;
    let mut out = BTreeMap::new();
    for (i, entry) in entries.into_iter().enumerate() {
        let at = format!("{WHAT}[{i}]");
        check_host(&entry.sys_mgmtd_host)
            .map_err(|e| ConfigError::Invalid(format!("{at}.sysMgmtdHost: {e}")))?;
        let bytes = match entry.encoding.unwrap_or_default() {
            ConnAuthEncoding::Raw => entry.conn_auth.into_bytes(),
            ConnAuthEncoding::Base64 => {
                let compact: String = entry
                    .conn_auth
                    .chars()
                    .filter(|c| !c.is_ascii_whitespace())
                    .collect();
                base64::engine::general_purpose::STANDARD
                    .decode(compact.as_bytes())
                    .map_err(|_| {
                        ConfigError::Invalid(format!(
                            "{at}.connAuth ({}): not valid base64",
                            entry.sys_mgmtd_host
                        ))
                    })?
            }
        };
        if bytes.is_empty() {
            return Err(ConfigError::Invalid(format!(
                "{at}.connAuth ({}): must not be empty",
                entry.sys_mgmtd_host
            )));
        }
        if out
            .insert(entry.sys_mgmtd_host.clone(), SecretBytes(bytes))
            .is_some()
        {
            tracing::warn!(host = %entry.sys_mgmtd_host, "connAuth given twice; the later entry wins");
        }
    }
    Ok(out)
}

fn parse_tls_certs(text: &str) -> Result<BTreeMap<String, SecretBytes>, ConfigError> {
    const WHAT: &str = "TLS certificate file";
    if text.trim().is_empty() {
        return Ok(BTreeMap::new());
    }
    let entries: Vec<RawTlsCert> =
        serde_yaml::from_str(text).map_err(|e| position_only(WHAT, &e))?;
    let mut out = BTreeMap::new();
    for (i, entry) in entries.into_iter().enumerate() {
        let at = format!("{WHAT}[{i}]");
        check_host(&entry.sys_mgmtd_host)
            .map_err(|e| ConfigError::Invalid(format!("{at}.sysMgmtdHost: {e}")))?;
        if entry.tls_cert.trim().is_empty() {
            return Err(ConfigError::Invalid(format!(
                "{at}.tlsCert ({}): must not be empty",
                entry.sys_mgmtd_host
            )));
        }
        out.insert(
            entry.sys_mgmtd_host,
            SecretBytes(entry.tls_cert.into_bytes()),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn raw_and_base64_secrets_decode_to_their_bytes() {
        let text = "- sysMgmtdHost: 10.0.0.1\n  connAuth: secret1\n- sysMgmtdHost: 10.0.0.2\n  connAuth: c2VjcmV0Mgo=\n  encoding: base64\n- sysMgmtdHost: 10.0.0.3\n  connAuth: |\n    AAEC\n    /w==\n  encoding: base64\n- sysMgmtdHost: 10.0.0.4\n  connAuth: plain\n  encoding: raw\n";
        let s = ClientSecrets::from_yaml(Some(text), None).unwrap();
        assert_eq!(s.conn_auth("10.0.0.1").unwrap().expose(), b"secret1");
        assert_eq!(s.conn_auth("10.0.0.2").unwrap().expose(), b"secret2\n");
        assert_eq!(s.conn_auth("10.0.0.3").unwrap().expose(), &[0, 1, 2, 255]);
        assert_eq!(s.conn_auth("10.0.0.4").unwrap().expose(), b"plain");
        assert!(s.conn_auth("10.0.0.9").is_none());
    }

    #[test]
    fn secrets_never_print() {
        let s = ClientSecrets::from_yaml(
            Some("- sysMgmtdHost: h\n  connAuth: hunter2\n"),
            Some("- sysMgmtdHost: h\n  tlsCert: CERTDATA\n"),
        )
        .unwrap();
        let printed = format!("{s:?} {}", s.conn_auth("h").unwrap());
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(!printed.contains("CERTDATA"), "{printed}");
        assert!(printed.contains("<redacted>"));
        assert_eq!(s.tls_cert("h").unwrap().expose(), b"CERTDATA");
    }

    #[test]
    fn malformed_files_report_positions_not_values() {
        let err = ClientSecrets::from_yaml(
            Some("- sysMgmtdHost: h\n  connAuth: topsecret\n  colour: blue\n"),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(!err.contains("topsecret"), "{err}");
        assert!(err.contains("line"), "{err}");
        let err = ClientSecrets::from_yaml(
            Some("- sysMgmtdHost: h\n  connAuth: \"!!notbase64\"\n  encoding: base64\n"),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("base64") && !err.contains("notbase64"),
            "{err}"
        );
        assert!(
            ClientSecrets::from_yaml(
                Some("- sysMgmtdHost: h\n  connAuth: x\n  encoding: rot13\n"),
                None
            )
            .is_err()
        );
        assert!(
            ClientSecrets::from_yaml(Some("- sysMgmtdHost: h\n  connAuth: \"\"\n"), None).is_err()
        );
        assert_eq!(
            ClientSecrets::from_yaml(Some(""), Some("")).unwrap(),
            ClientSecrets::none()
        );
    }

    proptest! {
        #[test]
        fn base64_encoded_secrets_round_trip(bytes in proptest::collection::vec(any::<u8>(), 1..64)) {
            let encoded = base64::engine::general_purpose::STANDARD.encode(&bytes);
            let text = format!("- sysMgmtdHost: h\n  connAuth: \"{encoded}\"\n  encoding: base64\n");
            let s = ClientSecrets::from_yaml(Some(&text), None).unwrap();
            prop_assert_eq!(s.conn_auth("h").unwrap().expose(), &bytes[..]);
        }

        #[test]
        fn parsing_arbitrary_text_never_panics(text in "(?s).{0,200}") {
            let _ = ClientSecrets::from_yaml(Some(&text), Some(&text));
        }
    }
}
