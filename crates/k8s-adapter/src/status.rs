//! The only mapping from core errors to gRPC statuses, and how loudly each
//! status is logged.
//!
//! Neither `csi_core::Error` nor `tonic::Status` is defined in this crate,
//! so the conversion goes through the local [`RpcError`]:
//! `Status::from(RpcError::from(err))`, or [`to_status`]. The status message
//! is the error's whole chain, so the caller (and the Kubernetes event the
//! sidecar makes of it) says what failed and why. Logging of failed calls
//! happens once per RPC, in [`crate::rpc_log`], at the level [`log_level`]
//! picks.

use csi_core::{Error, ErrorCode};
use tonic::{Code, Status};

/// A core error on its way to a gRPC caller.
#[derive(Debug)]
pub struct RpcError(pub Error);

impl From<Error> for RpcError {
    fn from(err: Error) -> Self {
        Self(err)
    }
}

impl From<RpcError> for Status {
    fn from(RpcError(err): RpcError) -> Self {
        Status::new(code(err.code()), bounded_message(error_chain(&err)))
    }
}

/// The longest status message sent, in bytes. The message travels percent-encoded in the
/// `grpc-message` HTTP/2 header; a header list over the peer's limit (16 KiB in tonic and
/// hyper clients) fails the whole call with a protocol error instead of the status, and
/// messages quote requests (a 20 KB volume name) and tools' standard error.
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// `message` cut to [`MAX_MESSAGE_BYTES`] (at a character boundary), saying how much was cut.
pub fn bounded_message(message: String) -> String {
    if message.len() <= MAX_MESSAGE_BYTES {
        return message;
    }
    let mut cut = MAX_MESSAGE_BYTES;
    while !message.is_char_boundary(cut) {
        cut -= 1;
    }
    format!(
        "{}... ({} more bytes cut)",
        &message[..cut],
        message.len() - cut
    )
}

/// The status a core error is reported as.
pub fn to_status(err: Error) -> Status {
    Status::from(RpcError(err))
}

/// The gRPC code of a core error class.
pub fn code(code: ErrorCode) -> Code {
    match code {
        ErrorCode::InvalidArgument => Code::InvalidArgument,
        ErrorCode::NotFound => Code::NotFound,
        ErrorCode::AlreadyExists => Code::AlreadyExists,
        ErrorCode::FailedPrecondition => Code::FailedPrecondition,
        ErrorCode::Aborted => Code::Aborted,
        ErrorCode::OutOfRange => Code::OutOfRange,
        ErrorCode::ResourceExhausted => Code::ResourceExhausted,
        ErrorCode::DeadlineExceeded => Code::DeadlineExceeded,
        ErrorCode::Unavailable => Code::Unavailable,
        ErrorCode::Unimplemented => Code::Unimplemented,
        ErrorCode::Internal => Code::Internal,
    }
}

/// `err` and each of its sources, joined by `": "`; a source whose text the
/// message already contains (errors that print their cause) is not repeated.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// The level an RPC outcome with `code` is logged at: successes at INFO,
/// what the caller can fix or retry at WARN, failures of the driver itself
/// (Internal, Unknown, DataLoss) at ERROR.
pub fn log_level(code: Code) -> tracing::Level {
    use tracing::Level;
    match code {
        Code::Ok => Level::INFO,
        Code::Cancelled
        | Code::InvalidArgument
        | Code::DeadlineExceeded
        | Code::NotFound
        | Code::AlreadyExists
        | Code::PermissionDenied
        | Code::ResourceExhausted
        | Code::FailedPrecondition
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unimplemented
        | Code::Unavailable
        | Code::Unauthenticated => Level::WARN,
        Code::Unknown | Code::Internal | Code::DataLoss => Level::ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use csi_core::error::CommandFailure;
    use std::time::Duration;

    /// One error of each class, with the code the CSI spec expects for it.
    fn table() -> Vec<(Error, Code)> {
        vec![
            (
                Error::invalid("volume_id", "must not be empty"),
                Code::InvalidArgument,
            ),
            (Error::NotFound("volume x".into()), Code::NotFound),
            (Error::AlreadyExists("volume x".into()), Code::AlreadyExists),
            (
                Error::FailedPrecondition("in use".into()),
                Code::FailedPrecondition,
            ),
            (Error::Aborted("busy".into()), Code::Aborted),
            (Error::OutOfRange("too big".into()), Code::OutOfRange),
            (
                Error::ResourceExhausted("full".into()),
                Code::ResourceExhausted,
            ),
            (
                Error::DeadlineExceeded("slow".into()),
                Code::DeadlineExceeded,
            ),
            (Error::Unavailable("down".into()), Code::Unavailable),
            (Error::Unimplemented("nope".into()), Code::Unimplemented),
            (Error::Internal("bug".into()), Code::Internal),
        ]
    }

    #[test]
    fn every_error_class_gets_its_csi_code() {
        let table = table();
        // Each ErrorCode appears once: a new class added to the core must
        // be added here too.
        let mut classes: Vec<_> = table
            .iter()
            .map(|(e, _)| format!("{:?}", e.code()))
            .collect();
        classes.sort();
        classes.dedup();
        assert_eq!(classes.len(), table.len());
        for (err, expected) in table {
            let class = err.code();
            let status = to_status(err);
            assert_eq!(status.code(), expected, "{class:?}");
            assert_eq!(code(class), expected);
        }
    }

    #[test]
    fn status_message_is_the_error_text() {
        let status = to_status(Error::invalid(
            "volume_capabilities[0]",
            "block is not supported",
        ));
        assert_eq!(
            status.message(),
            "invalid argument: volume_capabilities[0]: block is not supported"
        );
    }

    #[test]
    fn long_messages_are_cut_at_a_character_boundary_keeping_their_code() {
        let name = "\u{e9}".repeat(1 << 19);
        let status = to_status(Error::invalid("name", format!("{name:?} is too long")));
        assert_eq!(status.code(), Code::InvalidArgument);
        let msg = status.message();
        assert!(msg.len() <= MAX_MESSAGE_BYTES + 40, "{} bytes", msg.len());
        assert!(
            msg.starts_with("invalid argument: name: \""),
            "{}",
            &msg[..40]
        );
        assert!(
            msg.ends_with("more bytes cut)"),
            "{}",
            &msg[msg.len() - 40..]
        );
        let short = "a".repeat(MAX_MESSAGE_BYTES);
        assert_eq!(bounded_message(short.clone()), short);
    }

    #[test]
    fn command_failures_map_by_how_they_failed() {
        let timeout = Error::Command {
            program: "lfs".into(),
            failure: CommandFailure::Timeout(Duration::from_secs(30)),
            stderr: String::new(),
        };
        assert_eq!(to_status(timeout).code(), Code::DeadlineExceeded);
        let missing = Error::Command {
            program: "beegfs-ctl".into(),
            failure: CommandFailure::Spawn("No such file or directory".into()),
            stderr: String::new(),
        };
        let status = to_status(missing);
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert!(
            status.message().contains("beegfs-ctl"),
            "{}",
            status.message()
        );
    }

    #[test]
    fn io_errors_keep_path_and_cause_once() {
        let err = Error::io(
            "create directory",
            "/mnt/fs/vol",
            std::io::Error::from_raw_os_error(libc_enospc()),
        );
        let status = to_status(err);
        assert_eq!(status.code(), Code::ResourceExhausted);
        let msg = status.message();
        assert!(msg.starts_with("create directory /mnt/fs/vol: "), "{msg}");
        // The io::Error is both printed by the message and its source: once.
        let cause = std::io::Error::from_raw_os_error(libc_enospc()).to_string();
        assert_eq!(msg.matches(&cause).count(), 1, "{msg}");
    }

    fn libc_enospc() -> i32 {
        nix::errno::Errno::ENOSPC as i32
    }

    #[test]
    fn a_cause_not_in_the_message_is_appended() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot read the record")]
        struct Outer(#[source] std::io::Error);
        let err = Outer(std::io::Error::other("disk on fire"));
        assert_eq!(error_chain(&err), "cannot read the record: disk on fire");
    }

    #[test]
    fn only_driver_failures_are_logged_as_errors() {
        use tracing::Level;
        assert_eq!(log_level(Code::Ok), Level::INFO);
        assert_eq!(log_level(Code::InvalidArgument), Level::WARN);
        assert_eq!(log_level(Code::NotFound), Level::WARN);
        assert_eq!(log_level(Code::Unavailable), Level::WARN);
        assert_eq!(log_level(Code::Internal), Level::ERROR);
        assert_eq!(log_level(Code::Unknown), Level::ERROR);
        assert_eq!(log_level(Code::DataLoss), Level::ERROR);
    }
}
