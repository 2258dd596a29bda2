//! The one error type of the core, and the status code each error stands for.
//!
//! Adapters (backends) convert their own errors into [`Error`]; the gRPC layer maps
//! [`ErrorCode`] to a `tonic::Status` in exactly one place. The core never knows gRPC.

use std::path::PathBuf;
use std::time::Duration;

/// Result alias used throughout the core and its ports.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The class of an error, one per CSI/gRPC status code the driver returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The request is malformed or names something impossible.
    InvalidArgument,
    /// The volume, snapshot or path does not exist.
    NotFound,
    /// An object of that name exists with incompatible properties.
    AlreadyExists,
    /// The system is not in a state that allows the operation.
    FailedPrecondition,
    /// Another operation on the same object is in progress, or a token is stale.
    Aborted,
    /// A size is outside what the filesystem can give.
    OutOfRange,
    /// No capacity, id or other resource is left.
    ResourceExhausted,
    /// An external command or mount did not answer in time.
    DeadlineExceeded,
    /// The filesystem or a tool is not reachable right now; retrying may help.
    Unavailable,
    /// The operation is not offered by this driver or backend.
    Unimplemented,
    /// Anything else: a bug or an unexpected failure of the host.
    Internal,
}

/// What went wrong when an external command ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandFailure {
    /// The program could not be started at all.
    Spawn(String),
    /// The program exited with a non-zero status (or was killed by a signal: `None`).
    Exit(Option<i32>),
    /// The program did not finish within its timeout and was killed.
    Timeout(Duration),
}

/// Every error the core and its ports report.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is missing or invalid; the message names the field.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The named object does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// An object with the same name but other properties exists.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// The operation cannot run in the current state.
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// An operation on the same object is already running, or a token is stale.
    #[error("aborted: {0}")]
    Aborted(String),
    /// A requested size cannot be satisfied.
    #[error("out of range: {0}")]
    OutOfRange(String),
    /// A resource (ids, space) is exhausted.
    #[error("resource exhausted: {0}")]
    ResourceExhausted(String),
    /// Something did not finish in time.
    #[error("deadline exceeded: {0}")]
    DeadlineExceeded(String),
    /// The backend is not reachable or not ready.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The operation is not supported.
    #[error("unimplemented: {0}")]
    Unimplemented(String),
    /// An unexpected failure.
    #[error("internal error: {0}")]
    Internal(String),
    /// An external command failed; `stderr` is trimmed and never holds secrets (they never
    /// reach command lines).
    #[error("{program} failed ({failure}): {stderr}")]
    Command {
        /// Program path or name.
        program: String,
        /// How it failed.
        failure: CommandFailure,
        /// The command's standard error, trimmed to a reasonable length.
        stderr: String,
    },
    /// A filesystem call on a path failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What the driver was doing (`create directory`, `stat`...).
        op: &'static str,
        /// The path it was doing it on.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl std::fmt::Display for CommandFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommandFailure::Spawn(e) => write!(f, "could not start: {e}"),
            CommandFailure::Exit(Some(code)) => write!(f, "exit status {code}"),
            CommandFailure::Exit(None) => write!(f, "killed by a signal"),
            CommandFailure::Timeout(t) => write!(f, "timed out after {:.1}s", t.as_secs_f64()),
        }
    }
}

impl Error {
    /// The status class this error is reported as.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::InvalidArgument(_) => ErrorCode::InvalidArgument,
            Error::NotFound(_) => ErrorCode::NotFound,
            Error::AlreadyExists(_) => ErrorCode::AlreadyExists,
            Error::FailedPrecondition(_) => ErrorCode::FailedPrecondition,
            Error::Aborted(_) => ErrorCode::Aborted,
            Error::OutOfRange(_) => ErrorCode::OutOfRange,
            Error::ResourceExhausted(_) => ErrorCode::ResourceExhausted,
            Error::DeadlineExceeded(_) => ErrorCode::DeadlineExceeded,
            Error::Unavailable(_) => ErrorCode::Unavailable,
            Error::Unimplemented(_) => ErrorCode::Unimplemented,
            Error::Internal(_) => ErrorCode::Internal,
            Error::Command { failure, .. } => match failure {
                CommandFailure::Timeout(_) => ErrorCode::DeadlineExceeded,
                CommandFailure::Spawn(_) => ErrorCode::FailedPrecondition,
                CommandFailure::Exit(_) => ErrorCode::Internal,
            },
            Error::Io { source, .. } => match source.raw_os_error() {
                Some(libc::ENOSPC) | Some(libc::EDQUOT) => ErrorCode::ResourceExhausted,
                Some(libc::ETIMEDOUT) => ErrorCode::DeadlineExceeded,
                Some(libc::ENOTCONN) | Some(libc::ESHUTDOWN) | Some(libc::EHOSTDOWN) => {
                    ErrorCode::Unavailable
                }
                _ => ErrorCode::Internal,
            },
        }
    }

    /// Builds an [`Error::Io`] for `op` on `path`.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// Shorthand for an [`Error::InvalidArgument`] naming `field`.
    pub fn invalid(field: &str, reason: impl std::fmt::Display) -> Self {
        Error::InvalidArgument(format!("{field}: {reason}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_timeout_is_deadline_exceeded_and_exit_is_internal() {
        let timeout = Error::Command {
            program: "lfs".into(),
            failure: CommandFailure::Timeout(Duration::from_secs(3)),
            stderr: String::new(),
        };
        assert_eq!(timeout.code(), ErrorCode::DeadlineExceeded);
        let exit = Error::Command {
            program: "lfs".into(),
            failure: CommandFailure::Exit(Some(2)),
            stderr: "bad".into(),
        };
        assert_eq!(exit.code(), ErrorCode::Internal);
        assert_eq!(exit.to_string(), "lfs failed (exit status 2): bad");
    }

    #[test]
    fn io_errors_map_by_errno() {
        let full = Error::io(
            "write",
            "/x",
            std::io::Error::from_raw_os_error(libc::ENOSPC),
        );
        assert_eq!(full.code(), ErrorCode::ResourceExhausted);
        let other = Error::io(
            "write",
            "/x",
            std::io::Error::from_raw_os_error(libc::EPERM),
        );
        assert_eq!(other.code(), ErrorCode::Internal);
        assert!(other.to_string().starts_with("write /x:"));
    }
}
