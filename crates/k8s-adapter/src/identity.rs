//! The CSI Identity service: who the plugin is, what it offers, whether it
//! is ready.
//!
//! Probe answers `ready: false` (never an error) until every configured
//! backend has checked its tools and configuration; the problems are logged
//! at WARN. A positive answer is kept for [`IdentityConfig::ready_cache`],
//! so the livenessprobe sidecar polling every few seconds does not run the
//! backends' checks each time; a negative answer is never cached, so the
//! plugin turns ready on the first probe after the problem is fixed.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use csi_core::service::{ControllerService, NodeService, Readiness};
use tokio::sync::Mutex;
use tonic::{Request, Response, Status};
use tracing::{debug, warn};

use crate::AdapterError;
use crate::metrics::CsiMetrics;
use crate::proto::csi::v1::{
    self as csi, GetPluginCapabilitiesRequest, GetPluginCapabilitiesResponse, GetPluginInfoRequest,
    GetPluginInfoResponse, PluginCapability, ProbeRequest, ProbeResponse, identity_server,
    plugin_capability,
};
use crate::rpc_log::log_request;

/// The version GetPluginInfo reports: this crate's (the workspace's) version.
pub const VENDOR_VERSION: &str = env!("CARGO_PKG_VERSION");

/// How long a positive Probe answer is reused unless configured otherwise.
pub const DEFAULT_READY_CACHE: Duration = Duration::from_secs(10);

/// Longest driver name CSI allows.
pub const MAX_DRIVER_NAME_BYTES: usize = 63;

/// Manifest key listing the configured backends (`lustre,beegfs`).
pub const MANIFEST_BACKENDS: &str = "backends";

/// What the Identity service says about the plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityConfig {
    driver_name: String,
    /// How long a positive Probe answer is reused.
    pub ready_cache: Duration,
}

impl IdentityConfig {
    /// Validates `driver_name` as CSI requires of a plugin name: at most 63
    /// bytes of ASCII letters, digits, `-` and `.`, starting and ending with
    /// a letter or digit (e.g. `exa.csi.ddn.com`).
    pub fn new(driver_name: impl Into<String>) -> Result<Self, AdapterError> {
        let driver_name = driver_name.into();
        let invalid = |reason: &str| AdapterError::InvalidDriverName {
            name: driver_name.clone(),
            reason: reason.to_owned(),
        };
        if driver_name.is_empty() {
            return Err(invalid("it is empty"));
        }
        if driver_name.len() > MAX_DRIVER_NAME_BYTES {
            return Err(invalid("it is longer than 63 bytes"));
        }
        if !driver_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return Err(invalid(
                "only ASCII letters, digits, '-' and '.' are allowed",
            ));
        }
        let edge_ok = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_alphanumeric());
        if !edge_ok(driver_name.bytes().next()) || !edge_ok(driver_name.bytes().last()) {
            return Err(invalid("it must start and end with a letter or digit"));
        }
        Ok(Self {
            driver_name,
            ready_cache: DEFAULT_READY_CACHE,
        })
    }

    /// The driver name.
    pub fn driver_name(&self) -> &str {
        &self.driver_name
    }
}

/// The Identity service over the use cases this process serves.
#[derive(Debug)]
pub struct CsiIdentity {
    config: IdentityConfig,
    controller: Option<Arc<ControllerService>>,
    node: Option<Arc<NodeService>>,
    /// Until when the last positive readiness answer holds.
    ready_until: Mutex<Option<Instant>>,
    metrics: Option<Arc<CsiMetrics>>,
}

impl CsiIdentity {
    /// Identity for a process serving `controller` and/or `node`.
    pub fn new(
        config: IdentityConfig,
        controller: Option<Arc<ControllerService>>,
        node: Option<Arc<NodeService>>,
    ) -> Self {
        Self {
            config,
            controller,
            node,
            ready_until: Mutex::new(None),
            metrics: None,
        }
    }

    /// The same service, recording each backend's readiness in `metrics`
    /// whenever Probe runs the checks.
    pub fn with_metrics(mut self, metrics: Arc<CsiMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Names of the configured backends, without repeats, in order.
    fn backend_names(&self) -> Vec<&'static str> {
        let controller = self.controller.iter().flat_map(|c| c.backends().all());
        let node = self.node.iter().flat_map(|n| n.backends().all());
        let mut names: Vec<&'static str> = Vec::new();
        for backend in controller.chain(node) {
            if !names.contains(&backend.name()) {
                names.push(backend.name());
            }
        }
        names
    }

    /// Readiness of every served use case (a process serving nothing but
    /// Identity has nothing to wait for).
    async fn readiness(&self) -> Readiness {
        let mut all = Readiness {
            ready: true,
            problems: Vec::new(),
        };
        if let Some(controller) = &self.controller {
            merge(&mut all, controller.readiness().await);
        }
        if let Some(node) = &self.node {
            merge(&mut all, node.readiness().await);
        }
        all
    }

    /// Runs the first readiness check ahead of the first Probe, which then
    /// waits for it (or reuses its positive answer) instead of starting its own.
    pub async fn warm_up(&self) {
        self.ready().await;
    }

    /// Whether the plugin is ready, reusing a recent positive answer.
    /// Concurrent probes wait for one check instead of running their own.
    async fn ready(&self) -> bool {
        let mut ready_until = self.ready_until.lock().await;
        if ready_until.is_some_and(|until| Instant::now() < until) {
            return true;
        }
        let readiness = self.readiness().await;
        if let Some(metrics) = &self.metrics {
            metrics.record_readiness(&self.backend_names(), &readiness.problems);
        }
        if readiness.ready {
            *ready_until = Instant::now().checked_add(self.config.ready_cache);
            debug!("all configured backends are ready");
        } else {
            *ready_until = None;
            warn!(problems = %readiness.problems.join("; "), "not ready");
        }
        readiness.ready
    }
}

fn merge(into: &mut Readiness, other: Readiness) {
    into.ready &= other.ready;
    for problem in other.problems {
        if !into.problems.contains(&problem) {
            into.problems.push(problem);
        }
    }
}

fn service_capability(kind: plugin_capability::service::Type) -> PluginCapability {
    PluginCapability {
        r#type: Some(plugin_capability::Type::Service(
            plugin_capability::Service {
                r#type: kind as i32,
            },
        )),
    }
}

#[tonic::async_trait]
impl identity_server::Identity for CsiIdentity {
    async fn get_plugin_info(
        &self,
        request: Request<GetPluginInfoRequest>,
    ) -> Result<Response<GetPluginInfoResponse>, Status> {
        log_request(request.get_ref());
        let manifest =
            HashMap::from([(MANIFEST_BACKENDS.to_owned(), self.backend_names().join(","))]);
        Ok(Response::new(GetPluginInfoResponse {
            name: self.config.driver_name.clone(),
            vendor_version: VENDOR_VERSION.to_owned(),
            manifest,
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        request: Request<GetPluginCapabilitiesRequest>,
    ) -> Result<Response<GetPluginCapabilitiesResponse>, Status> {
        use plugin_capability::service::Type as Service;
        use plugin_capability::volume_expansion::Type as Expansion;
        log_request(request.get_ref());
        let mut capabilities = Vec::new();
        if self.controller.is_some() {
            capabilities.push(service_capability(Service::ControllerService));
        }
        capabilities.push(service_capability(Service::VolumeAccessibilityConstraints));
        capabilities.push(PluginCapability {
            r#type: Some(plugin_capability::Type::VolumeExpansion(
                plugin_capability::VolumeExpansion {
                    r#type: Expansion::Online as i32,
                },
            )),
        });
        Ok(Response::new(GetPluginCapabilitiesResponse {
            capabilities,
        }))
    }

    async fn probe(
        &self,
        request: Request<ProbeRequest>,
    ) -> Result<Response<ProbeResponse>, Status> {
        log_request(request.get_ref());
        Ok(Response::new(csi::ProbeResponse {
            ready: Some(self.ready().await),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_names_follow_the_csi_rules() {
        for good in [
            "exa.csi.ddn.com",
            "beegfs.csi.netapp.com",
            "a",
            "pfs-csi.example.org9",
        ] {
            assert_eq!(IdentityConfig::new(good).unwrap().driver_name(), good);
        }
        for (bad, reason) in [
            ("", "empty"),
            (".leading.dot", "start and end"),
            ("trailing-", "start and end"),
            ("has space", "only ASCII"),
            ("under_score", "only ASCII"),
            ("ünïcode.example", "only ASCII"),
        ] {
            let err = IdentityConfig::new(bad).unwrap_err().to_string();
            assert!(err.contains(reason), "{bad:?}: {err}");
        }
        let long = "a".repeat(MAX_DRIVER_NAME_BYTES + 1);
        assert!(IdentityConfig::new(&long[..MAX_DRIVER_NAME_BYTES]).is_ok());
        assert!(
            IdentityConfig::new(long)
                .unwrap_err()
                .to_string()
                .contains("63")
        );
    }

    #[test]
    fn readiness_merges_problems_once() {
        let mut all = Readiness {
            ready: true,
            problems: vec![],
        };
        merge(
            &mut all,
            Readiness {
                ready: false,
                problems: vec!["lustre: lfs missing".into()],
            },
        );
        merge(
            &mut all,
            Readiness {
                ready: false,
                problems: vec!["lustre: lfs missing".into()],
            },
        );
        assert!(!all.ready);
        assert_eq!(all.problems, vec!["lustre: lfs missing".to_string()]);
    }
}
