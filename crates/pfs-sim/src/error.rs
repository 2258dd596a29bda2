//! The crate's one error type: failures of the simulator's own machinery (state files, locks).
//!
//! Failures that a real tool would report (a missing path, a bad option) are not errors of this
//! kind: each tool prints them itself in the real tool's words and returns its exit code.

use std::path::PathBuf;

/// Everything that can go wrong inside the simulator itself.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// `PFS_SIM_ROOT` is not set.
    #[error("PFS_SIM_ROOT is not set: it must name the simulator's state directory")]
    RootUnset,
    /// A file or directory of the state could not be read or written.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON state file is not valid.
    #[error("invalid JSON in {path}: {source}")]
    Json {
        /// The file concerned.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A request to the simulator itself (not to a simulated tool) is invalid.
    #[error("{0}")]
    Invalid(String),
    /// A filesystem with this name already exists, or none does.
    #[error("{0}")]
    Filesystem(String),
    /// `serve` could not start, watch or stop the driver binaries.
    #[error("serve: {0}")]
    Serve(String),
}

impl SimError {
    /// Builds an [`SimError::Io`] for `path`.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SimError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, SimError>;
