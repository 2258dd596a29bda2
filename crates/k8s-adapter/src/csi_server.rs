//! Assembles the CSI services into one router, for the binaries.
//!
//! ```no_run
//! # async fn wire(
//! #     controller: std::sync::Arc<csi_core::service::ControllerService>,
//! # ) -> Result<(), k8s_adapter::AdapterError> {
//! use k8s_adapter::{csi_server, endpoint::SocketEndpoint, identity::IdentityConfig, server};
//! let endpoint: SocketEndpoint = "unix:///csi/csi.sock".parse()?;
//! let identity = IdentityConfig::new("exa.csi.ddn.com")?;
//! csi_server::run(&endpoint, identity, Some(controller), None, server::shutdown_signal()?).await
//! # }
//! ```
//!
//! Identity is always served; Controller and Node when their use case is
//! given (the controller binary passes a controller, the node binary a
//! node, a test may pass both). Every call goes through
//! [`RpcLogLayer`].
//!
//! There is deliberately no server-side per-RPC timeout. The sidecars and
//! the kubelet set a deadline on every call (external-provisioner's
//! `--timeout`, for instance); tonic's server reads the `grpc-timeout`
//! header and drops the handler when it passes, which cancels whatever the
//! core was awaiting (the command runner kills a cancelled command's
//! process group) and releases the volume's operation lock, and the layer
//! logs the call as abandoned. The sidecar then retries, which the CSI
//! idempotency rules make safe. Every external command and mount has its
//! own timeout in the core, so no call can hang without a deadline either.
//! A fixed server limit would only cut long but healthy operations (a
//! snapshot archive of a large volume) shorter than the caller allowed.

use std::{future::Future, sync::Arc};

use csi_core::service::{ControllerService, NodeService};
use tonic::{
    server::NamedService,
    transport::{Server, server::Router},
};
use tower::layer::util::{Identity, Stack};

use crate::{
    AdapterError,
    controller::CsiController,
    endpoint::SocketEndpoint,
    identity::{CsiIdentity, IdentityConfig},
    node::CsiNode,
    proto::csi::v1::{
        controller_server::ControllerServer, identity_server::IdentityServer,
        node_server::NodeServer,
    },
    rpc_log::RpcLogLayer,
    server,
};

/// The router [`router`] builds: the CSI services behind the logging layer.
pub type CsiRouter = Router<Stack<RpcLogLayer, Identity>>;

/// The CSI router for this process and the fully qualified names of the
/// services it serves (for [`server::serve`], which advertises them over
/// reflection).
pub fn router(
    identity: IdentityConfig,
    controller: Option<Arc<ControllerService>>,
    node: Option<Arc<NodeService>>,
) -> (CsiRouter, Vec<&'static str>) {
    let mut names = vec![IdentityServer::<CsiIdentity>::NAME];
    let identity = CsiIdentity::new(identity, controller.clone(), node.clone());
    let mut router = Server::builder()
        .layer(RpcLogLayer::new())
        .add_service(IdentityServer::new(identity));
    if let Some(controller) = controller {
        names.push(ControllerServer::<CsiController>::NAME);
        router = router.add_service(ControllerServer::new(CsiController::new(controller)));
    }
    if let Some(node) = node {
        names.push(NodeServer::<CsiNode>::NAME);
        router = router.add_service(NodeServer::new(CsiNode::new(node)));
    }
    (router, names)
}

/// Binds `endpoint` privately and serves the CSI services on it until
/// `shutdown` completes; in-flight calls finish first.
pub async fn run<F>(
    endpoint: &SocketEndpoint,
    identity: IdentityConfig,
    controller: Option<Arc<ControllerService>>,
    node: Option<Arc<NodeService>>,
    shutdown: F,
) -> Result<(), AdapterError>
where
    F: Future<Output = ()>,
{
    let (router, services) = router(identity, controller, node);
    server::serve_endpoint(endpoint, router, &services, shutdown).await
}
