//! Connecting a tonic [`Channel`] to a unix socket, for the CLI client,
//! the probes and the tests.

use std::{path::Path, time::Duration};

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tower::service_fn;

use crate::AdapterError;

/// Connect timeout the CLI uses unless told otherwise.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Placeholder URI: the connector ignores it and dials the socket path, but
/// HTTP/2 still needs an authority for the `:authority` header.
const PLACEHOLDER_URI: &str = "http://localhost";

/// Opens a gRPC channel to the unix socket at `path`, failing after
/// `timeout` if the socket does not answer.
pub async fn connect(path: impl AsRef<Path>, timeout: Duration) -> Result<Channel, AdapterError> {
    let path = path.as_ref().to_owned();
    let dial = path.clone();
    let endpoint = Endpoint::from_static(PLACEHOLDER_URI).connect_timeout(timeout);
    let connecting = endpoint.connect_with_connector(service_fn(move |_: Uri| {
        let dial = dial.clone();
        async move { UnixStream::connect(dial).await.map(TokioIo::new) }
    }));
    match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(error)) => Err(AdapterError::transport(path, error)),
        Err(_elapsed) => Err(AdapterError::ConnectTimeout { path, timeout }),
    }
}
