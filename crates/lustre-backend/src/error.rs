//! The crate's one error type: what can be wrong with the configuration and with the output of
//! the Lustre tools. Everything else is reported with the core's [`csi_core::Error`].

/// A configuration or tool-output problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LustreError {
    /// A value of the EXAScaler configuration file is invalid. `entry` is the
    /// `exascaler_map` entry (`None` for top-level keys).
    #[error("{}: {reason}", config_location(entry.as_deref(), key))]
    Config {
        /// The `exascaler_map` entry, if the key belongs to one.
        entry: Option<String>,
        /// The key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A setting of our own (`pfsCsi.lustre`) is invalid.
    #[error("pfsCsi.lustre.{key}: {reason}")]
    Settings {
        /// The key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A text (an `exaFS` value, a NID) does not have the expected syntax.
    #[error("{what} {input:?}: {reason}")]
    Syntax {
        /// What was being parsed.
        what: &'static str,
        /// The text.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A tool printed something this driver cannot read.
    #[error("cannot read the output of {tool}: {reason}")]
    Output {
        /// The tool (`lfs quota`, `lfs project`).
        tool: &'static str,
        /// What was unexpected.
        reason: String,
    },
}

fn config_location(entry: Option<&str>, key: &str) -> String {
    match entry {
        Some(entry) => format!("exascaler_map.{entry}.{key}"),
        None => key.to_string(),
    }
}

impl LustreError {
    /// A problem with `key` of entry `entry`.
    pub fn entry(entry: &str, key: &str, reason: impl Into<String>) -> Self {
        LustreError::Config {
            entry: Some(entry.to_string()),
            key: key.to_string(),
            reason: reason.into(),
        }
    }

    /// A problem with top-level key `key`.
    pub fn top(key: &str, reason: impl Into<String>) -> Self {
        LustreError::Config {
            entry: None,
            key: key.to_string(),
            reason: reason.into(),
        }
    }
}

impl From<LustreError> for csi_core::Error {
    fn from(e: LustreError) -> Self {
        match e {
            LustreError::Output { .. } => csi_core::Error::Internal(e.to_string()),
            LustreError::Config { .. } | LustreError::Settings { .. } => {
                csi_core::Error::FailedPrecondition(e.to_string())
            }
            LustreError::Syntax { .. } => csi_core::Error::InvalidArgument(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use csi_core::ErrorCode;

    #[test]
    fn messages_name_the_entry_and_the_key() {
        let e = LustreError::entry("exa1", "mountPoint", "must be absolute");
        assert_eq!(
            e.to_string(),
            "exascaler_map.exa1.mountPoint: must be absolute"
        );
        let e = LustreError::top("exascaler_map", "is empty");
        assert_eq!(e.to_string(), "exascaler_map: is empty");
        let core: csi_core::Error = LustreError::Output {
            tool: "lfs quota",
            reason: "no row".into(),
        }
        .into();
        assert_eq!(core.code(), ErrorCode::Internal);
        let core: csi_core::Error = LustreError::Syntax {
            what: "exaFS",
            input: "x".into(),
            reason: "no fsname".into(),
        }
        .into();
        assert_eq!(core.code(), ErrorCode::InvalidArgument);
    }
}
