//! Exit statuses, the crate's error enum, and how errors are printed.
//!
//! Every failure prints one line `error: <Code>: <message>` on stderr and
//! exits with a status that tells scripts what kind of failure it was, so
//! `pfsctl volume get X || [ $? -eq 3 ]` tests for "no such volume".

use std::{io, path::PathBuf, process::ExitCode};

use k8s_adapter::AdapterError;
use tonic::{Code, Status};

/// The process exit statuses; see [`help_text`] for what each means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// The command did what was asked.
    Success,
    /// Any failure without a status of its own (Internal, Unknown, local I/O).
    Failure,
    /// Bad flags or flag values, including the endpoint.
    Usage,
    /// NotFound.
    NotFound,
    /// AlreadyExists.
    AlreadyExists,
    /// InvalidArgument or OutOfRange.
    InvalidArgument,
    /// FailedPrecondition.
    FailedPrecondition,
    /// Aborted: another operation on the same object is in progress.
    Aborted,
    /// Unavailable: the socket cannot be reached or the driver is unavailable.
    Unavailable,
    /// DeadlineExceeded: a call or a wait ran out of time.
    DeadlineExceeded,
    /// Unimplemented: the plugin does not serve the call.
    Unimplemented,
    /// ResourceExhausted.
    ResourceExhausted,
    /// PermissionDenied or Unauthenticated.
    PermissionDenied,
    /// `identity probe` answered not ready.
    NotReady,
    /// `volume validate` did not confirm the capabilities.
    NotConfirmed,
}

/// Every status with its number and meaning, in the order the help lists them.
pub const EXIT_STATUSES: [(ExitStatus, u8, &str); 15] = [
    (ExitStatus::Success, 0, "success"),
    (
        ExitStatus::Failure,
        1,
        "other failure (Internal, Unknown, local file errors)",
    ),
    (
        ExitStatus::Usage,
        2,
        "usage error: bad flags, values or endpoint",
    ),
    (ExitStatus::NotFound, 3, "NotFound"),
    (ExitStatus::AlreadyExists, 4, "AlreadyExists"),
    (
        ExitStatus::InvalidArgument,
        5,
        "InvalidArgument or OutOfRange",
    ),
    (ExitStatus::FailedPrecondition, 6, "FailedPrecondition"),
    (
        ExitStatus::Aborted,
        7,
        "Aborted (an operation on the same object is in progress: retry)",
    ),
    (
        ExitStatus::Unavailable,
        8,
        "Unavailable, or the socket cannot be reached",
    ),
    (
        ExitStatus::DeadlineExceeded,
        9,
        "DeadlineExceeded: --timeout elapsed",
    ),
    (ExitStatus::Unimplemented, 10, "Unimplemented"),
    (ExitStatus::ResourceExhausted, 11, "ResourceExhausted"),
    (
        ExitStatus::PermissionDenied,
        12,
        "PermissionDenied or Unauthenticated",
    ),
    (
        ExitStatus::NotReady,
        13,
        "identity probe: the plugin is not ready",
    ),
    (
        ExitStatus::NotConfirmed,
        14,
        "volume validate: capabilities not confirmed",
    ),
];

impl ExitStatus {
    /// The number the process exits with.
    pub fn code(self) -> u8 {
        EXIT_STATUSES
            .iter()
            .find(|(status, _, _)| *status == self)
            .map_or(1, |(_, code, _)| *code)
    }

    /// The status for a gRPC code.
    pub fn for_code(code: Code) -> Self {
        match code {
            Code::Ok => Self::Success,
            Code::NotFound => Self::NotFound,
            Code::AlreadyExists => Self::AlreadyExists,
            Code::InvalidArgument | Code::OutOfRange => Self::InvalidArgument,
            Code::FailedPrecondition => Self::FailedPrecondition,
            Code::Aborted => Self::Aborted,
            Code::Unavailable => Self::Unavailable,
            Code::DeadlineExceeded => Self::DeadlineExceeded,
            Code::Unimplemented => Self::Unimplemented,
            Code::ResourceExhausted => Self::ResourceExhausted,
            Code::PermissionDenied | Code::Unauthenticated => Self::PermissionDenied,
            Code::Cancelled | Code::Unknown | Code::Internal | Code::DataLoss => Self::Failure,
        }
    }
}

impl From<ExitStatus> for ExitCode {
    fn from(status: ExitStatus) -> Self {
        ExitCode::from(status.code())
    }
}

/// The exit status section of `--help`.
pub fn help_text() -> String {
    let mut text = String::from("Exit status:\n");
    for (_, code, meaning) in EXIT_STATUSES {
        text.push_str(&format!("  {code:>2}  {meaning}\n"));
    }
    text.push_str(
        "\nErrors print `error: <gRPC code>: <message>` on stderr; --json changes only stdout.",
    );
    text
}

/// The name of a gRPC code (`NotFound`...), as the driver's metrics label it.
pub use k8s_adapter::metrics::code_label as code_name;

/// Everything that makes a command fail.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A flag value is unusable (beyond what clap checks itself).
    #[error("usage: {0}")]
    Usage(String),

    /// The plugin answered with a gRPC error, or a call timed out.
    #[error("{}: {}", code_name(.0.code()), .0.message())]
    Rpc(#[from] Status),

    /// The endpoint could not be reached.
    #[error("Unavailable: {0}")]
    Connect(AdapterError),

    /// A local file could not be read or written.
    #[error("cannot {action} {}: {error}", path.display())]
    Io {
        /// What was being done ("read", "write").
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The operating system's answer.
        error: io::Error,
    },
}

impl CliError {
    /// The exit status this error ends the process with.
    pub fn exit_status(&self) -> ExitStatus {
        match self {
            Self::Usage(_) => ExitStatus::Usage,
            Self::Rpc(status) => ExitStatus::for_code(status.code()),
            Self::Connect(AdapterError::InvalidEndpoint { .. }) => ExitStatus::Usage,
            Self::Connect(_) => ExitStatus::Unavailable,
            Self::Io { .. } => ExitStatus::Failure,
        }
    }

    /// The line printed on stderr: `error: <Code>: <message>`.
    pub fn line(&self) -> String {
        match self {
            Self::Rpc(status) if status.message().is_empty() => {
                format!("error: {}", code_name(status.code()))
            }
            Self::Connect(error @ AdapterError::InvalidEndpoint { .. }) => {
                format!("error: usage: {error}")
            }
            other => format!("error: {other}"),
        }
    }

    /// Builds an [`CliError::Io`].
    pub fn io(action: &'static str, path: impl Into<PathBuf>, error: io::Error) -> Self {
        Self::Io {
            action,
            path: path.into(),
            error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_CODES: [Code; 17] = [
        Code::Ok,
        Code::Cancelled,
        Code::Unknown,
        Code::InvalidArgument,
        Code::DeadlineExceeded,
        Code::NotFound,
        Code::AlreadyExists,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Aborted,
        Code::OutOfRange,
        Code::Unimplemented,
        Code::Internal,
        Code::Unavailable,
        Code::DataLoss,
        Code::Unauthenticated,
    ];

    #[test]
    fn statuses_have_distinct_numbers_and_all_appear_in_the_help() {
        let help = help_text();
        let mut seen = std::collections::HashSet::new();
        for (status, code, meaning) in EXIT_STATUSES {
            assert!(seen.insert(code), "{code} used twice");
            assert_eq!(status.code(), code);
            assert!(help.contains(&format!("{code:>2}  {meaning}")), "{help}");
        }
    }

    #[test]
    fn brief_codes_keep_their_numbers() {
        assert_eq!(ExitStatus::Usage.code(), 2);
        assert_eq!(ExitStatus::for_code(Code::NotFound).code(), 3);
        assert_eq!(ExitStatus::for_code(Code::Internal).code(), 1);
    }

    #[test]
    fn every_error_code_maps_to_a_failing_status_listed_in_the_help() {
        for code in ALL_CODES.into_iter().filter(|c| *c != Code::Ok) {
            let status = ExitStatus::for_code(code);
            assert_ne!(status, ExitStatus::Success, "{code:?}");
            assert_ne!(status, ExitStatus::Usage, "{code:?}");
            let name = code_name(code);
            let listed = EXIT_STATUSES.iter().any(|(s, _, meaning)| {
                *s == status && (meaning.contains(name) || *s == ExitStatus::Failure)
            });
            assert!(listed, "{name} -> {status:?} is not documented");
        }
    }

    #[test]
    fn rpc_error_line_names_the_code_then_the_message() {
        let err = CliError::from(Status::not_found("volume v1 does not exist"));
        assert_eq!(err.line(), "error: NotFound: volume v1 does not exist");
        assert_eq!(err.exit_status(), ExitStatus::NotFound);
        let bare = CliError::from(Status::new(Code::Internal, ""));
        assert_eq!(bare.line(), "error: Internal");
    }

    #[test]
    fn a_bad_endpoint_is_a_usage_error() {
        let err =
            CliError::Connect(k8s_adapter::endpoint::SocketEndpoint::parse("tcp://x").unwrap_err());
        assert_eq!(err.exit_status(), ExitStatus::Usage);
        assert!(err.line().starts_with("error: usage: invalid CSI endpoint"));
    }
}
