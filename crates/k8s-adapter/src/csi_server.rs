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
//! [`run_with_metrics`] also serves a [`MetricsEndpoint`] over HTTP, fed by
//! the layer, the Node service (volume usage) and Probe (backend
//! readiness), and stops it once the CSI server has stopped: one shutdown
//! signal ends both. A failure of the metrics endpoint is logged and never
//! stops the CSI server.
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

use std::{future::Future, sync::Arc, time::Duration};

use csi_core::service::{ControllerService, NodeService};
use tonic::{
    server::NamedService,
    transport::{Server, server::Router},
};
use tower::layer::util::{Identity, Stack};
use tracing::{error, warn};

use crate::{
    AdapterError,
    controller::CsiController,
    endpoint::SocketEndpoint,
    identity::{CsiIdentity, IdentityConfig},
    metrics::{CsiMetrics, endpoint::MetricsEndpoint},
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
    router_with_metrics(identity, controller, node, None)
}

/// Like [`router`], recording in `metrics` when given: the layer counts
/// every call, the Node service volume usage, Probe backend readiness.
///
/// Inside a tokio runtime it also starts the first readiness check in the
/// background, so a Probe that arrives as soon as the socket answers finds
/// the check done or under way instead of starting it.
pub fn router_with_metrics(
    identity: IdentityConfig,
    controller: Option<Arc<ControllerService>>,
    node: Option<Arc<NodeService>>,
    metrics: Option<Arc<CsiMetrics>>,
) -> (CsiRouter, Vec<&'static str>) {
    let mut names = vec![IdentityServer::<CsiIdentity>::NAME];
    let mut identity = CsiIdentity::new(identity, controller.clone(), node.clone());
    let mut layer = RpcLogLayer::new();
    if let Some(metrics) = &metrics {
        identity = identity.with_metrics(metrics.clone());
        layer = layer.with_metrics(metrics.clone());
    }
    let identity = Arc::new(identity);
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        let warm = identity.clone();
        runtime.spawn(async move { warm.warm_up().await });
    }
    let mut router = Server::builder()
        .layer(layer)
        .add_service(IdentityServer::from_arc(identity));
    if let Some(controller) = controller {
        names.push(ControllerServer::<CsiController>::NAME);
        router = router.add_service(ControllerServer::new(CsiController::new(controller)));
    }
    if let Some(node) = node {
        names.push(NodeServer::<CsiNode>::NAME);
        let mut service = CsiNode::new(node);
        if let Some(metrics) = &metrics {
            service = service.with_metrics(metrics.clone());
        }
        router = router.add_service(NodeServer::new(service));
    }
    (router, names)
}

/// What a CSI server serves beside the CSI services.
#[derive(Debug, Default)]
pub struct ServeOptions {
    /// A metrics endpoint (already listening) fed by this server.
    pub metrics: Option<MetricsEndpoint>,
    /// Serve gRPC reflection (for `grpcurl` and the like). Kubelet and the
    /// sidecars never use it; off, start-up skips decoding the descriptors.
    pub reflection: bool,
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
    let options = ServeOptions::default();
    run_with_metrics(endpoint, identity, controller, node, options, shutdown).await
}

/// How long the metrics endpoint may take to finish its answers once the
/// CSI server has stopped.
const METRICS_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Like [`run`], with `options`: also serving the metrics endpoint with what
/// this server records until the CSI server has stopped, and reflection.
pub async fn run_with_metrics<F>(
    endpoint: &SocketEndpoint,
    identity: IdentityConfig,
    controller: Option<Arc<ControllerService>>,
    node: Option<Arc<NodeService>>,
    options: ServeOptions,
    shutdown: F,
) -> Result<(), AdapterError>
where
    F: Future<Output = ()>,
{
    let ServeOptions {
        metrics,
        reflection,
    } = options;
    let recorder = metrics.as_ref().map(|m| m.metrics().clone());
    let (router, services) = router_with_metrics(identity, controller, node, recorder);
    // Lets the first readiness check (started by the router) run up to its first wait,
    // so a tool it runs, such as Lustre's `lctl`, works while the socket is bound: on a
    // current-thread runtime it would otherwise start only in the accept loop.
    tokio::task::yield_now().await;
    let reflection = reflection.then_some(&services[..]);
    let Some(metrics) = metrics else {
        return server::serve_endpoint(endpoint, router, reflection, shutdown).await;
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let http = tokio::spawn(metrics.serve(async {
        // A dropped sender stops the endpoint as well.
        let _ = stopped.await;
    }));
    let result = server::serve_endpoint(endpoint, router, reflection, shutdown).await;
    let _ = stop.send(());
    let abort = http.abort_handle();
    match tokio::time::timeout(METRICS_STOP_TIMEOUT, http).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => error!(error = %e, "the metrics endpoint failed"),
        Ok(Err(e)) => error!(error = %e, "the metrics endpoint task ended abnormally"),
        Err(_) => {
            warn!(
                timeout = ?METRICS_STOP_TIMEOUT,
                "the metrics endpoint did not finish its answers in time; closing it"
            );
            abort.abort();
        }
    }
    result
}
