//! The bench's error type.

use std::path::PathBuf;

/// Why a benchmark could not run or finish.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The environment or the system under test is not as the bench needs it.
    #[error("{0}")]
    Setup(String),
    /// A file system or process operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// On what.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// An RPC failed where the bench needs it to succeed.
    #[error("{rpc} failed: {code:?}: {message}")]
    Rpc {
        /// The RPC.
        rpc: &'static str,
        /// Its gRPC code.
        code: tonic::Code,
        /// Its message.
        message: String,
    },
}

impl BenchError {
    /// An [`BenchError::Io`] error.
    pub fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            what,
            path: path.into(),
            source,
        }
    }

    /// An [`BenchError::Rpc`] error from a status.
    pub fn rpc(rpc: &'static str, status: &tonic::Status) -> Self {
        Self::Rpc {
            rpc,
            code: status.code(),
            message: status.message().to_string(),
        }
    }
}

/// The bench's result type.
pub type Result<T> = std::result::Result<T, BenchError>;
