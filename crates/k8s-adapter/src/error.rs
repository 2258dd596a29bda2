//! The crate's error enum.

use std::{io, path::PathBuf, time::Duration};

/// Everything that can go wrong in the adapter's transport layer.
///
/// Messages are self-contained (they include the underlying error), so a
/// single `%err` in a log line or a CLI message says what happened and where.
#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    /// The endpoint string is not a unix socket address we serve on.
    #[error("invalid CSI endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },

    /// Something other than a unix socket sits where the socket should go.
    #[error("refusing to replace {path}: it is a {kind}, not a unix socket")]
    NotASocket {
        /// The socket path.
        path: PathBuf,
        /// What is there instead.
        kind: &'static str,
    },

    /// A filesystem or socket operation failed.
    #[error("cannot {action} {path}: {error}")]
    Io {
        /// What was being done, as a verb phrase ("bind socket at").
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The operating system's answer.
        error: io::Error,
    },

    /// The gRPC transport failed while serving or connecting.
    #[error("gRPC transport error on {path}: {error}")]
    Transport {
        /// The socket path.
        path: PathBuf,
        /// The transport error, with its cause.
        error: TransportErrorChain,
    },

    /// The configured driver name is not a valid CSI plugin name.
    #[error("invalid driver name {name:?}: {reason}")]
    InvalidDriverName {
        /// The name as configured.
        name: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A service name to advertise is not declared in csi.proto.
    #[error("service {name:?} is not declared in csi.proto")]
    UnknownService {
        /// The name given.
        name: String,
    },

    /// The reflection service could not be built from our descriptors.
    #[error("cannot build the gRPC reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),

    /// Connecting to the socket took longer than allowed.
    #[error("timed out after {timeout:?} connecting to {path}")]
    ConnectTimeout {
        /// The socket path.
        path: PathBuf,
        /// The limit that was exceeded.
        timeout: Duration,
    },

    /// No Kubernetes API configuration could be found or used.
    #[error("cannot configure the Kubernetes API client: {reason}")]
    KubeConfig {
        /// What failed, with its cause.
        reason: String,
    },

    /// A Kubernetes API call failed.
    #[error("Kubernetes API: cannot {action}: {}", crate::kube_client::describe_api_error(.error))]
    KubeApi {
        /// What was being done ("read node n1").
        action: String,
        /// The client's error.
        error: kube::Error,
    },

    /// A Kubernetes API call got no answer in time.
    #[error("Kubernetes API: {action}: no answer within {timeout:?}")]
    KubeTimeout {
        /// What was being done ("read node n1").
        action: String,
        /// The limit that was exceeded.
        timeout: Duration,
    },

    /// A configured node label key is not a valid Kubernetes label key.
    #[error("invalid label key {key:?}: {reason}")]
    InvalidLabelKey {
        /// The key as configured.
        key: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The metrics address is not `HOST:PORT` with an IP address or no host.
    #[error("invalid metrics address {address:?}: {reason}")]
    InvalidMetricsAddress {
        /// The address as given.
        address: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The metrics endpoint could not listen or serve.
    #[error("metrics endpoint {address}: cannot {action}: {error}")]
    MetricsEndpoint {
        /// The address it listens on.
        address: String,
        /// What was being done ("listen").
        action: &'static str,
        /// The operating system's answer.
        error: io::Error,
    },

    /// A signal handler could not be installed.
    #[error("cannot listen for {signal}: {error}")]
    Signal {
        /// The signal's name.
        signal: &'static str,
        /// The operating system's answer.
        error: io::Error,
    },
}

/// A `tonic::transport::Error` whose `Display` shows its whole source chain
/// (tonic's own message is only "transport error").
#[derive(Debug)]
pub struct TransportErrorChain(pub tonic::transport::Error);

impl std::fmt::Display for TransportErrorChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = std::error::Error::source(&self.0);
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

impl AdapterError {
    /// Builds an [`AdapterError::Io`].
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, error: io::Error) -> Self {
        Self::Io {
            action,
            path: path.into(),
            error,
        }
    }

    /// Builds an [`AdapterError::Transport`].
    pub(crate) fn transport(path: impl Into<PathBuf>, error: tonic::transport::Error) -> Self {
        Self::Transport {
            path: path.into(),
            error: TransportErrorChain(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_error_message_names_action_path_and_cause() {
        let err = AdapterError::io(
            "bind socket at",
            "/run/x.sock",
            io::Error::from(io::ErrorKind::PermissionDenied),
        );
        let text = err.to_string();
        assert!(
            text.starts_with("cannot bind socket at /run/x.sock: "),
            "{text}"
        );
        assert!(text.contains("permission denied"), "{text}");
    }
}
