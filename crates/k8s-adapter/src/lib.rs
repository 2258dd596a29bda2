//! CSI gRPC services over a unix socket and the Kubernetes API side of
//! pfs-csi.
//!
//! Module map:
//! - [`proto`]: the generated `csi.v1` types, clients and servers, and the
//!   descriptor set for gRPC reflection. Only this crate touches them.
//! - [`endpoint`]: parses the `--endpoint` flag (`unix:///path`).
//! - [`server`]: binds a private unix socket and serves a tonic router on
//!   it, with reflection and graceful shutdown.
//! - [`socket_client`]: connects a tonic `Channel` to a unix socket.
//! - [`error`]: the crate's error enum.

pub mod endpoint;
pub mod error;
pub mod proto;
pub mod server;
pub mod socket_client;

pub use error::AdapterError;
pub use proto::FILE_DESCRIPTOR_SET;
