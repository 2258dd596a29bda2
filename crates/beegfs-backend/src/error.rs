//! The crate's error type: what can be wrong with the configuration files this backend reads.
//!
//! Everything that happens at request time is reported with the core's [`csi_core::Error`];
//! [`ConfigError`] converts into it (`FailedPrecondition`: a deployment problem, not a bad
//! request).

use std::path::PathBuf;

/// A configuration, secret or settings file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML of the expected shape. For secret files the message holds
    /// only a position, never content.
    #[error("{what} is malformed: {message}")]
    Malformed {
        /// Which file or key (`csi-beegfs-config.yaml`, `connAuth file`...).
        what: String,
        /// The parser's message.
        message: String,
    },
    /// A value is well-formed YAML but not acceptable; the message names the key.
    #[error("{0}")]
    Invalid(String),
}

impl From<ConfigError> for csi_core::Error {
    fn from(e: ConfigError) -> Self {
        csi_core::Error::FailedPrecondition(format!("BeeGFS configuration: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use csi_core::ErrorCode;

    #[test]
    fn configuration_errors_are_failed_preconditions_naming_the_problem() {
        let e: csi_core::Error =
            ConfigError::Invalid("quotas[0].gidMin: must be > 0".into()).into();
        assert_eq!(e.code(), ErrorCode::FailedPrecondition);
        assert!(e.to_string().contains("quotas[0].gidMin"), "{e}");
    }
}
