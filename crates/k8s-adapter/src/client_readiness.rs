//! Client readiness of this node, published for the scheduler.
//!
//! For each configured filesystem the node plugin checks its client
//! ([`crate::client_checks`]) and publishes the outcome:
//! - as the node label `<driver-name>/<fs>-client` = `ready` | `missing`
//!   (e.g. `pfs-csi.io/lustre-client: ready`), by a JSON merge patch on the
//!   Node, and a core/v1 Event on the Node (reason `ClientReady` or
//!   `ClientMissing`, the message says why) whenever the state changes;
//! - as a topology segment with the same key and value in NodeGetInfo
//!   ([`ClientReadiness`] is a [`TopologyProvider`]), so the key is one of
//!   the CSINode's topology keys and a StorageClass can require it in
//!   `allowedTopologies`.
//!
//! The checks run again every interval; without API access only the
//! topology segment is kept current.
//!
//! A StorageClass that keeps new volumes' pods on nodes with a usable
//! Lustre client (driver name `pfs-csi.io`, `volumeBindingMode:
//! WaitForFirstConsumer`):
//!
//! ```yaml
//! allowedTopologies:
//!   - matchLabelExpressions:
//!       - key: pfs-csi.io/lustre-client
//!         values: [ready]
//! ```
//!
//! The node reports the value its Node label carries once the API answers
//! (the label is followed like the zone label), so NodeGetInfo never
//! contradicts an existing label, which the kubelet would refuse.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use csi_core::domain::Topology;
use csi_core::ports::TopologyProvider;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use tracing::{info, warn};

use crate::client_checks::{
    ClientKind, ClientRequirements, ClientState, ClientStatus, HostPaths, check_client,
};
use crate::error::AdapterError;
use crate::events::{EventType, NodeEvents};
use crate::kube_client;

/// Event reason when a client becomes usable.
pub const REASON_READY: &str = "ClientReady";
/// Event reason when a client is not usable.
pub const REASON_MISSING: &str = "ClientMissing";

/// The label and topology key of `kind`'s readiness: `<driver-name>/<fs>-client`.
pub fn readiness_label_key(driver_name: &str, kind: ClientKind) -> String {
    format!("{driver_name}/{}-client", kind.name())
}

/// The field manager our Node patches are recorded under.
pub fn field_manager(driver_name: &str) -> String {
    format!("{driver_name}/node")
}

/// The checked readiness of every configured client, as a topology provider.
#[derive(Debug)]
pub struct ClientReadiness {
    driver_name: String,
    requirements: Vec<ClientRequirements>,
    host: HostPaths,
    current: RwLock<BTreeMap<ClientKind, ClientStatus>>,
}

impl ClientReadiness {
    /// Readiness of `requirements` (one per configured filesystem) for the
    /// driver `driver_name`; runs the first check at once.
    pub fn new(driver_name: &str, requirements: Vec<ClientRequirements>, host: HostPaths) -> Self {
        let readiness = Self {
            driver_name: driver_name.to_string(),
            requirements,
            host,
            current: RwLock::new(BTreeMap::new()),
        };
        readiness.check_now();
        readiness
    }

    /// The label keys this readiness publishes.
    pub fn label_keys(&self) -> Vec<String> {
        self.requirements
            .iter()
            .map(|r| readiness_label_key(&self.driver_name, r.kind))
            .collect()
    }

    /// The latest status of each client.
    pub fn statuses(&self) -> BTreeMap<ClientKind, ClientStatus> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Checks every client now, logs changes, and returns the statuses.
    pub fn check_now(&self) -> BTreeMap<ClientKind, ClientStatus> {
        let fresh: BTreeMap<ClientKind, ClientStatus> = self
            .requirements
            .iter()
            .map(|r| (r.kind, check_client(r, &self.host)))
            .collect();
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        for (kind, status) in &fresh {
            let before = current.get(kind).map(|s| s.state);
            if before != Some(status.state) {
                match status.state {
                    ClientState::Ready => {
                        info!(client = %kind, reason = %status.reason, "filesystem client ready")
                    }
                    ClientState::Missing => {
                        warn!(client = %kind, reason = %status.reason, "filesystem client missing")
                    }
                }
            }
        }
        *current = fresh.clone();
        fresh
    }
}

#[async_trait]
impl TopologyProvider for ClientReadiness {
    async fn topology(&self) -> csi_core::Result<Topology> {
        Ok(self
            .statuses()
            .into_iter()
            .map(|(kind, status)| {
                (
                    readiness_label_key(&self.driver_name, kind),
                    status.state.label_value().to_string(),
                )
            })
            .collect())
    }
}

/// Publishes readiness on the Node object: the label, then an event.
#[derive(Clone)]
pub struct ReadinessPublisher {
    nodes: Api<Node>,
    events: NodeEvents,
    node: String,
    driver_name: String,
    timeout: Duration,
}

impl ReadinessPublisher {
    /// Publishes on node `node` for driver `driver_name`, each call bounded by `timeout`.
    pub fn new(client: Client, node: &str, driver_name: &str, timeout: Duration) -> Self {
        Self {
            nodes: Api::all(client.clone()),
            events: NodeEvents::new(client, node, &field_manager(driver_name), timeout),
            node: node.to_string(),
            driver_name: driver_name.to_string(),
            timeout,
        }
    }

    /// Sets the readiness label of `kind` on the node (JSON merge patch).
    pub async fn set_label(
        &self,
        kind: ClientKind,
        state: ClientState,
    ) -> Result<(), AdapterError> {
        let patch = readiness_patch(&self.driver_name, kind, state);
        let params = PatchParams {
            field_manager: Some(field_manager(&self.driver_name)),
            ..PatchParams::default()
        };
        let action = format!(
            "label node {} {}={}",
            self.node,
            readiness_label_key(&self.driver_name, kind),
            state
        );
        kube_client::call(
            &action,
            self.timeout,
            self.nodes
                .patch_metadata(&self.node, &params, &Patch::Merge(&patch)),
        )
        .await
        .map(|_| ())
    }

    /// Records the event of a state change.
    pub async fn record_event(&self, status: &ClientStatus) -> Result<(), AdapterError> {
        let (event_type, reason) = match status.state {
            ClientState::Ready => (EventType::Normal, REASON_READY),
            ClientState::Missing => (EventType::Warning, REASON_MISSING),
        };
        self.events.record(event_type, reason, &status.reason).await
    }
}

/// The JSON merge patch setting one readiness label.
pub fn readiness_patch(
    driver_name: &str,
    kind: ClientKind,
    state: ClientState,
) -> serde_json::Value {
    serde_json::json!({
        "metadata": {
            "labels": {
                readiness_label_key(driver_name, kind): state.label_value()
            }
        }
    })
}

/// Checks the clients every `interval` and, with a publisher, brings the
/// node's labels up to date: a label whose state differs from the last one
/// published is patched, then the change is recorded as an event. A failed
/// patch is retried at the next check; a failed event is logged and not
/// retried (the label is what the scheduler reads).
pub async fn run_readiness_loop(
    readiness: Arc<ClientReadiness>,
    publisher: Option<ReadinessPublisher>,
    interval: Duration,
) {
    let mut published: BTreeMap<ClientKind, ClientState> = BTreeMap::new();
    let mut first = true;
    loop {
        let statuses = if first {
            first = false;
            readiness.statuses()
        } else {
            let r = readiness.clone();
            match tokio::task::spawn_blocking(move || r.check_now()).await {
                Ok(statuses) => statuses,
                Err(e) => {
                    warn!(error = %e, "client readiness check failed to run");
                    readiness.statuses()
                }
            }
        };
        if let Some(publisher) = &publisher {
            publish_changes(publisher, &statuses, &mut published, interval).await;
        }
        tokio::time::sleep(interval).await;
    }
}

async fn publish_changes(
    publisher: &ReadinessPublisher,
    statuses: &BTreeMap<ClientKind, ClientStatus>,
    published: &mut BTreeMap<ClientKind, ClientState>,
    interval: Duration,
) {
    for (kind, status) in statuses {
        if published.get(kind) == Some(&status.state) {
            continue;
        }
        if let Err(err) = publisher.set_label(*kind, status.state).await {
            warn!(
                client = %kind,
                state = %status.state,
                error = %err,
                retry_in = ?interval,
                "cannot publish client readiness on the node; the label keeps its previous value"
            );
            continue;
        }
        info!(client = %kind, state = %status.state, "client readiness label published");
        published.insert(*kind, status.state);
        if let Err(err) = publisher.record_event(status).await {
            warn!(client = %kind, error = %err, "cannot record the client readiness event");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client_checks::ToolRequirement;

    #[test]
    fn the_key_is_a_valid_label_key_under_the_driver_name() {
        for driver in ["pfs-csi.io", "exa.csi.ddn.com", "beegfs.csi.netapp.com"] {
            for kind in [ClientKind::Lustre, ClientKind::Beegfs] {
                let key = readiness_label_key(driver, kind);
                assert_eq!(key, format!("{driver}/{}-client", kind.name()));
                crate::node_topology::validate_label_key(&key).unwrap();
            }
        }
    }

    #[test]
    fn the_patch_sets_only_the_one_label() {
        assert_eq!(
            readiness_patch("pfs-csi.io", ClientKind::Beegfs, ClientState::Missing),
            serde_json::json!({"metadata": {"labels": {"pfs-csi.io/beegfs-client": "missing"}}})
        );
    }

    #[tokio::test]
    async fn topology_reports_each_configured_client_under_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let tool = dir.path().join("beegfs");
        std::fs::write(&tool, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&tool, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        std::fs::create_dir_all(dir.path().join("proc")).unwrap();
        std::fs::write(dir.path().join("proc/modules"), "beegfs 100 0 - Live 0x0\n").unwrap();
        let host = HostPaths {
            proc_root: dir.path().join("proc"),
            sys_root: dir.path().join("sys"),
        };
        let readiness = ClientReadiness::new(
            "pfs-csi.io",
            vec![
                ClientRequirements::new(ClientKind::Lustre, vec![]),
                ClientRequirements::new(
                    ClientKind::Beegfs,
                    vec![ToolRequirement::new("beegfs", vec![tool])],
                ),
            ],
            host,
        );
        assert_eq!(
            readiness.topology().await.unwrap(),
            Topology::from([
                ("pfs-csi.io/beegfs-client".to_string(), "ready".to_string()),
                (
                    "pfs-csi.io/lustre-client".to_string(),
                    "missing".to_string()
                ),
            ])
        );
        assert_eq!(
            readiness.label_keys(),
            ["pfs-csi.io/lustre-client", "pfs-csi.io/beegfs-client"]
        );
        // Loading the module is seen at the next check.
        std::fs::write(
            dir.path().join("proc/modules"),
            "beegfs 100 0 - Live 0x0\nlnet 1 0 - Live 0x0\nlustre 1 0 - Live 0x0\n",
        )
        .unwrap();
        readiness.check_now();
        assert_eq!(
            readiness.topology().await.unwrap()["pfs-csi.io/lustre-client"],
            "ready"
        );
    }
}

#[cfg(test)]
mod api_tests {
    use super::*;
    use crate::api_server_fixture::{Scenario, completed, mock_client};
    use crate::client_checks::ToolRequirement;

    const DRIVER: &str = "pfs-csi.io";
    const LUSTRE_KEY: &str = "pfs-csi.io/lustre-client";

    /// A node whose /proc/modules lists `modules` (all live) and whose
    /// client directory holds `lfs`.
    struct FakeNode {
        dir: tempfile::TempDir,
    }

    impl FakeNode {
        fn new(modules: &[&str]) -> Self {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(dir.path().join("proc")).unwrap();
            std::fs::create_dir_all(dir.path().join("client/bin")).unwrap();
            let lfs = dir.path().join("client/bin/lfs");
            std::fs::write(&lfs, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&lfs, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
            let node = Self { dir };
            node.load(modules);
            node
        }

        fn load(&self, modules: &[&str]) {
            let text: String = modules
                .iter()
                .map(|m| format!("{m} 4096 0 - Live 0x0000000000000000\n"))
                .collect();
            std::fs::write(self.dir.path().join("proc/modules"), text).unwrap();
        }

        fn readiness(&self) -> Arc<ClientReadiness> {
            let lfs = ToolRequirement::new("lfs", vec![self.dir.path().join("client/bin/lfs")]);
            Arc::new(ClientReadiness::new(
                DRIVER,
                vec![ClientRequirements::new(ClientKind::Lustre, vec![lfs])],
                HostPaths {
                    proc_root: self.dir.path().join("proc"),
                    sys_root: self.dir.path().join("sys"),
                },
            ))
        }
    }

    fn start(readiness: Arc<ClientReadiness>, client: Client, interval: Duration) {
        let publisher = ReadinessPublisher::new(client, "n1", DRIVER, Duration::from_secs(2));
        tokio::spawn(run_readiness_loop(readiness, Some(publisher), interval));
    }

    #[tokio::test]
    async fn a_ready_client_is_labelled_ready_with_a_normal_event() {
        let node = FakeNode::new(&["lnet", "lustre"]);
        let (client, server) = mock_client();
        let scenario = server.run(Scenario::Publish {
            node: "n1",
            key: LUSTRE_KEY.into(),
            value: "ready",
            reason: REASON_READY,
            event_type: "Normal",
            message_contains: format!(
                "lustre client ready: modules lnet, lustre loaded; tools {}",
                node.dir.path().join("client/bin/lfs").display()
            ),
        });
        start(node.readiness(), client, Duration::from_secs(3600));
        completed(scenario).await;
    }

    #[tokio::test]
    async fn a_missing_module_is_labelled_missing_with_the_reason_in_a_warning_event() {
        let node = FakeNode::new(&["lnet"]);
        let (client, server) = mock_client();
        let scenario = server.run(Scenario::Publish {
            node: "n1",
            key: LUSTRE_KEY.into(),
            value: "missing",
            reason: REASON_MISSING,
            event_type: "Warning",
            message_contains: "lustre client missing: kernel module lustre is not loaded".into(),
        });
        let readiness = node.readiness();
        start(readiness.clone(), client, Duration::from_secs(3600));
        completed(scenario).await;
        assert_eq!(
            readiness.topology().await.unwrap(),
            Topology::from([(LUSTRE_KEY.to_string(), "missing".to_string())])
        );
    }

    #[tokio::test]
    async fn a_failed_patch_is_retried_and_the_event_follows_the_label() {
        let node = FakeNode::new(&["lnet", "lustre"]);
        let (client, server) = mock_client();
        let scenario = server.run(Scenario::PublishAfterFailure {
            node: "n1",
            key: LUSTRE_KEY.into(),
            value: "ready",
            reason: REASON_READY,
            code: 500,
        });
        start(node.readiness(), client, Duration::from_millis(20));
        completed(scenario).await;
    }

    #[tokio::test]
    async fn only_a_change_is_published_again() {
        let node = FakeNode::new(&["lnet", "lustre"]);
        let (client, server) = mock_client();
        let publish = |value, reason, event_type, message: &str| Scenario::Publish {
            node: "n1",
            key: LUSTRE_KEY.into(),
            value,
            reason,
            event_type,
            message_contains: message.to_string(),
        };
        let scenario = server.run(Scenario::Sequence(vec![
            publish("ready", REASON_READY, "Normal", "lustre client ready"),
            publish(
                "missing",
                REASON_MISSING,
                "Warning",
                "kernel module lustre is not loaded",
            ),
        ]));
        start(node.readiness(), client, Duration::from_millis(10));
        // Several unchanged checks pass without a call before the module goes.
        tokio::time::sleep(Duration::from_millis(100)).await;
        node.load(&["lnet"]);
        completed(scenario).await;
    }
}
