//! The HTTP endpoint of the metrics: `GET /metrics` and `GET /healthz` on
//! a TCP address (`--metrics-address`).
//!
//! [`MetricsEndpoint::bind`] listens (so a taken port fails start-up, not a
//! later scrape), [`MetricsEndpoint::serve`] answers until its shutdown
//! future completes, then lets the answers being sent finish. `/metrics`
//! answers in OpenMetrics text when the `Accept` header asks for it (as
//! Prometheus does) and in the Prometheus text format 0.0.4 otherwise;
//! `/healthz` answers `ok` while the process serves. Nothing else is
//! served: other paths are 404, other methods 405.

use std::{
    future::Future,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
};

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, header},
    response::IntoResponse,
    routing::get,
};
use tokio::net::TcpListener;
use tracing::info;

use super::{CsiMetrics, ExpositionFormat};
use crate::AdapterError;

/// Path of the metrics.
pub const METRICS_PATH: &str = "/metrics";
/// Path of the health check.
pub const HEALTH_PATH: &str = "/healthz";

/// Parses `HOST:PORT`: an IPv4 address, a bracketed IPv6 address, or no
/// host at all (`:9808`) for every IPv4 interface. Names are refused: the
/// address is bound, never looked up.
pub fn parse_address(address: &str) -> Result<SocketAddr, AdapterError> {
    let invalid = |reason: &str| AdapterError::InvalidMetricsAddress {
        address: address.to_owned(),
        reason: reason.to_owned(),
    };
    let trimmed = address.trim();
    if let Some(port) = trimmed.strip_prefix(':') {
        let port = port
            .parse::<u16>()
            .map_err(|_| invalid("the port must be a number from 0 to 65535"))?;
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port));
    }
    trimmed.parse::<SocketAddr>().map_err(|_| {
        invalid("expected HOST:PORT with an IP address as HOST ([::1]:9808 for IPv6), or :PORT")
    })
}

/// The metrics endpoint, listening but not yet serving.
#[derive(Debug)]
pub struct MetricsEndpoint {
    listener: TcpListener,
    address: SocketAddr,
    metrics: Arc<CsiMetrics>,
}

impl MetricsEndpoint {
    /// Listens on `address` (port 0 picks a free port) for `metrics`.
    pub async fn bind(address: SocketAddr, metrics: Arc<CsiMetrics>) -> Result<Self, AdapterError> {
        let failed = |action, error| AdapterError::MetricsEndpoint {
            address: address.to_string(),
            action,
            error,
        };
        let listener = TcpListener::bind(address)
            .await
            .map_err(|e| failed("listen", e))?;
        let address = listener
            .local_addr()
            .map_err(|e| failed("read the bound address", e))?;
        Ok(Self {
            listener,
            address,
            metrics,
        })
    }

    /// The address it listens on (with the chosen port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }

    /// The metrics it serves.
    pub fn metrics(&self) -> &Arc<CsiMetrics> {
        &self.metrics
    }

    /// Serves until `shutdown` completes, then finishes the answers under
    /// way.
    pub async fn serve<F>(self, shutdown: F) -> Result<(), AdapterError>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let Self {
            listener,
            address,
            metrics,
        } = self;
        info!(%address, "serving metrics over HTTP");
        let result = axum::serve(listener, routes(metrics))
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|error| AdapterError::MetricsEndpoint {
                address: address.to_string(),
                action: "serve",
                error,
            });
        info!(%address, "metrics endpoint stopped");
        result
    }
}

/// The endpoint's routes.
fn routes(metrics: Arc<CsiMetrics>) -> Router {
    Router::new()
        .route(METRICS_PATH, get(scrape))
        .route(HEALTH_PATH, get(|| async { "ok\n" }))
        .with_state(metrics)
}

async fn scrape(State(metrics): State<Arc<CsiMetrics>>, headers: HeaderMap) -> impl IntoResponse {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok());
    let format = ExpositionFormat::from_accept(accept);
    (
        [(header::CONTENT_TYPE, format.content_type())],
        metrics.encode(format),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn addresses_are_ip_and_port_or_port_alone() {
        assert_eq!(
            parse_address("127.0.0.1:9808").unwrap(),
            "127.0.0.1:9808".parse().unwrap()
        );
        assert_eq!(
            parse_address("[::1]:9808").unwrap(),
            "[::1]:9808".parse().unwrap()
        );
        assert_eq!(
            parse_address(":8080").unwrap(),
            "0.0.0.0:8080".parse().unwrap()
        );
        for bad in [
            "",
            "9808",
            "localhost:9808",
            ":",
            ":65536",
            "127.0.0.1",
            "::1:9808",
        ] {
            let error = parse_address(bad).unwrap_err().to_string();
            assert!(error.contains("invalid metrics address"), "{bad}: {error}");
        }
    }

    proptest! {
        #[test]
        fn any_input_parses_or_is_refused_without_panic(input in "\\PC{0,40}") {
            if let Ok(address) = parse_address(&input) {
                // Whatever parsed names the port given.
                let port = address.port().to_string();
                prop_assert!(input.trim().ends_with(&port));
            }
        }
    }
}
