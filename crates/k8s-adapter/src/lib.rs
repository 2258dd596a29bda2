//! CSI gRPC services over a unix socket and the Kubernetes API side of
//! pfs-csi.
//!
//! Module map:
//! - [`proto`]: the generated `csi.v1` types, clients and servers, and the
//!   descriptor set for gRPC reflection. Only this crate touches them.
//! - [`convert`]: the one place proto messages become `csi-core` domain
//!   types and back; a missing required field is InvalidArgument naming it.
//! - [`status`]: the one mapping from core errors to gRPC statuses.
//! - [`identity`], [`controller`], [`node`]: the three CSI services, thin
//!   handlers over the core's use cases.
//! - [`rpc_log`]: the tower layer giving every RPC a span with a request
//!   id and logging its outcome; requests are logged with secrets redacted.
//! - [`csi_server`]: assembles the services into a router and runs it; what
//!   the binaries call.
//! - [`endpoint`]: parses the `--endpoint` flag (`unix:///path`).
//! - [`server`]: binds a private unix socket and serves a tonic router on
//!   it, with reflection and graceful shutdown.
//! - [`socket_client`]: connects a tonic `Channel` to a unix socket.
//! - [`kube_client`]: the Kubernetes API client (service account
//!   configuration, a time limit on every call, error messages with hints).
//! - [`node_topology`]: the node's topology from its labels
//!   (`topology.exa.csi.ddn.com/zone` and configured keys), read at start and
//!   followed with a watch; serves the last known value through API failures.
//! - [`client_checks`]: whether a filesystem client is usable (kernel modules
//!   in `/proc/modules` or `/sys/module`, user-space tools present).
//! - [`client_readiness`]: the periodic check, published as the node label
//!   and topology key `<driver-name>/<fs>-client: ready|missing` plus Events.
//! - [`events`]: core/v1 Events about the node.
//! - [`metrics`]: Prometheus metrics (RPCs, volume usage, readiness) and
//!   their HTTP endpoint.
//! - [`error`]: the crate's error enum.
//!
//! Invariants: backends and the core never build a `tonic::Status`; no
//! Kubernetes API failure ever fails an RPC or blocks start-up (the API side
//! serves configured or last known values and logs that it does); no
//! generated request is ever formatted into a log except through
//! [`rpc_log::LoggedRequest::redacted`].

#[cfg(test)]
mod api_server_fixture;
pub mod client_checks;
pub mod client_readiness;
pub mod controller;
pub mod convert;
pub mod csi_server;
pub mod endpoint;
pub mod error;
pub mod events;
pub mod identity;
pub mod kube_client;
pub mod metrics;
pub mod node;
pub mod node_topology;
pub mod proto;
pub mod rpc_log;
pub mod server;
pub mod socket_client;
pub mod status;

pub use error::AdapterError;
pub use proto::FILE_DESCRIPTOR_SET;
