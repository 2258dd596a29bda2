//! The connection to a plugin and unary calls bounded by `--timeout`.

use std::{
    future::Future,
    time::{Duration, Instant},
};

use k8s_adapter::{
    endpoint::SocketEndpoint,
    proto::csi::v1::{
        controller_client::ControllerClient, identity_client::IdentityClient,
        node_client::NodeClient,
    },
    socket_client,
};
use tonic::{Code, Request, Response, Status, transport::Channel};

use crate::exit::CliError;

/// A connected plugin socket.
#[derive(Debug, Clone)]
pub struct Plugin {
    channel: Channel,
    timeout: Duration,
}

impl Plugin {
    /// Parses `endpoint` and connects within `timeout`.
    pub async fn connect(endpoint: &str, timeout: Duration) -> Result<Self, CliError> {
        let endpoint = SocketEndpoint::parse(endpoint).map_err(CliError::Connect)?;
        let channel = socket_client::connect(endpoint.path(), timeout)
            .await
            .map_err(CliError::Connect)?;
        Ok(Self { channel, timeout })
    }

    /// The deadline of each call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A request carrying `message` and the call deadline.
    pub fn request<T>(&self, message: T) -> Request<T> {
        request(message, self.timeout)
    }

    /// An Identity client on this connection.
    pub fn identity(&self) -> IdentityClient<Channel> {
        IdentityClient::new(self.channel.clone())
    }

    /// A Controller client on this connection.
    pub fn controller(&self) -> ControllerClient<Channel> {
        ControllerClient::new(self.channel.clone())
    }

    /// A Node client on this connection.
    pub fn node(&self) -> NodeClient<Channel> {
        NodeClient::new(self.channel.clone())
    }
}

/// A request carrying `message` and a `grpc-timeout` of `timeout`.
pub fn request<T>(message: T, timeout: Duration) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(timeout);
    request
}

/// Awaits a call for at most `timeout`; a call that takes longer fails
/// with DeadlineExceeded even if the plugin ignores `grpc-timeout`.
///
/// A tonic server enforcing `grpc-timeout` answers Cancelled when the
/// deadline passes; such an answer after the deadline is DeadlineExceeded
/// too, so the exit status does not depend on which side noticed first.
pub async fn unary<T>(
    timeout: Duration,
    call: impl Future<Output = Result<Response<T>, Status>>,
) -> Result<T, Status> {
    let started = Instant::now();
    let deadline_passed =
        || Status::deadline_exceeded(format!("no answer within {}", duration_text(timeout)));
    match tokio::time::timeout(timeout, call).await {
        Ok(Err(status)) if status.code() == Code::Cancelled && started.elapsed() >= timeout => {
            Err(deadline_passed())
        }
        Ok(result) => result.map(Response::into_inner),
        Err(_elapsed) => Err(deadline_passed()),
    }
}

/// A duration as a person writes it: `30s`, `1500ms`, `5m`.
pub fn duration_text(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis.is_multiple_of(60_000) && millis > 0 {
        format!("{}m", millis / 60_000)
    } else if millis.is_multiple_of(1000) {
        format!("{}s", millis / 1000)
    } else {
        format!("{millis}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse_duration;
    use proptest::prelude::*;

    #[tokio::test]
    async fn a_call_past_its_timeout_is_deadline_exceeded() {
        let slow = async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(Response::new(()))
        };
        let status = unary(Duration::from_millis(20), slow).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
        assert_eq!(status.message(), "no answer within 20ms");
    }

    #[tokio::test]
    async fn a_server_cancelling_at_the_deadline_is_deadline_exceeded() {
        // Ready on its first poll, but only after the deadline: the
        // server's Cancelled answer won the race against our own timer.
        let cancelled = async {
            std::thread::sleep(Duration::from_millis(30));
            Err::<Response<()>, _>(Status::cancelled("Timeout expired"))
        };
        let status = unary(Duration::from_millis(20), cancelled)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::DeadlineExceeded);
        // Cancelled before the deadline stays what it is.
        let early = async { Err::<Response<()>, _>(Status::cancelled("client went away")) };
        let status = unary(Duration::from_secs(5), early).await.unwrap_err();
        assert_eq!(status.code(), Code::Cancelled);
    }

    #[tokio::test]
    async fn a_missing_socket_is_unavailable_and_a_bad_endpoint_is_usage() {
        let dir = tempfile::tempdir().unwrap();
        let missing = format!("unix://{}/none.sock", dir.path().display());
        let err = Plugin::connect(&missing, Duration::from_secs(2))
            .await
            .unwrap_err();
        assert_eq!(err.exit_status(), crate::exit::ExitStatus::Unavailable);
        let err = Plugin::connect("tcp://127.0.0.1:1", Duration::from_secs(2))
            .await
            .unwrap_err();
        assert_eq!(err.exit_status(), crate::exit::ExitStatus::Usage);
    }

    proptest! {
        #[test]
        fn duration_text_parses_back(millis in 1_u64..100_000_000) {
            let d = Duration::from_millis(millis);
            prop_assert_eq!(parse_duration(&duration_text(d)), Ok(d));
        }
    }
}
