//! This node's topology from its Kubernetes labels, read at start and
//! followed with a watch, so a relabelled node needs no pod restart.
//!
//! [`NodeLabelTopology`] answers at once with the last known labels: the
//! configured topology until the API first answers, then the node's labels.
//! API errors and timeouts never reach NodeGetInfo; they are logged, with
//! the value that keeps being served.
//!
//! [`LayeredTopology`] combines providers (the client readiness keys, then
//! the node labels over them) into the one provider the node service takes.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use csi_core::domain::Topology;
use csi_core::ports::TopologyProvider;
use k8s_openapi::api::core::v1::Node;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio_stream::StreamExt;
use tracing::{debug, info, warn};

use crate::error::AdapterError;
use crate::kube_client::{self, DEFAULT_REQUEST_TIMEOUT, WATCH_TIMEOUT_SECONDS};

/// The zone label of the EXAScaler driver, kept so existing StorageClasses work.
pub const ZONE_LABEL: &str = "topology.exa.csi.ddn.com/zone";

/// Timing of the API calls that follow the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowSettings {
    /// Limit of the initial read.
    pub request_timeout: Duration,
    /// First pause after a failed call; doubles up to `retry_max`.
    pub retry_initial: Duration,
    /// Longest pause between retries.
    pub retry_max: Duration,
    /// How long the server keeps one watch open.
    pub watch_timeout_seconds: u32,
}

impl Default for FollowSettings {
    fn default() -> Self {
        Self {
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            watch_timeout_seconds: WATCH_TIMEOUT_SECONDS,
        }
    }
}

/// Where the served labels come from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Origin {
    /// The configured topology: the API has not answered yet.
    Configuration,
    /// The Node object at this resource version.
    Node(String),
}

#[derive(Debug)]
struct LabelState {
    labels: Topology,
    origin: Origin,
    /// The last API failure, cleared by the next success.
    api_error: Option<String>,
}

/// The node's labels under the followed keys, as a [`TopologyProvider`].
///
/// A key the node has no label for is left out, so what the backends report
/// for it stands; a label present overrides it.
#[derive(Debug)]
pub struct NodeLabelTopology {
    node: String,
    keys: Vec<String>,
    state: RwLock<LabelState>,
}

impl NodeLabelTopology {
    /// Follows `keys` on node `node`, answering `initial` (the configured
    /// topology, restricted to `keys`) until the API answers. Every key must
    /// be a valid label key.
    pub fn new(
        node: impl Into<String>,
        keys: Vec<String>,
        initial: Topology,
    ) -> Result<Self, AdapterError> {
        let mut unique: Vec<String> = Vec::new();
        for key in keys {
            validate_label_key(&key)?;
            if !unique.contains(&key) {
                unique.push(key);
            }
        }
        let labels = select(&unique, &initial);
        Ok(Self {
            node: node.into(),
            keys: unique,
            state: RwLock::new(LabelState {
                labels,
                origin: Origin::Configuration,
                api_error: None,
            }),
        })
    }

    /// The followed label keys.
    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    /// The node followed.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The labels served now.
    pub fn current(&self) -> Topology {
        self.read().labels.clone()
    }

    /// Whether the last API call failed (the served value may be stale).
    pub fn is_stale(&self) -> bool {
        self.read().api_error.is_some()
    }

    /// Starts following the node in a background task.
    pub fn spawn(
        self: &Arc<Self>,
        client: Client,
        settings: FollowSettings,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.clone().follow(client, settings))
    }

    /// Reads the node once (bounded by the request timeout), then follows it
    /// with a watch until dropped. Never returns an error: failures are
    /// logged and retried with a growing pause.
    pub async fn follow(self: Arc<Self>, client: Client, settings: FollowSettings) {
        let nodes: Api<Node> = Api::all(client.clone());
        let action = format!("read node {}", self.node);
        match kube_client::call(
            &action,
            settings.request_timeout,
            nodes.get_metadata(&self.node),
        )
        .await
        {
            Ok(meta) => self.apply(&meta),
            Err(err) => self.record_error(&err),
        }

        let watched: Api<PartialObjectMeta<Node>> = Api::all(client);
        let config = watcher::Config::default()
            .fields(&format!("metadata.name={}", self.node))
            .timeout(settings.watch_timeout_seconds);
        let mut events = std::pin::pin!(watcher(watched, config));
        let mut pause = settings.retry_initial;
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Apply(meta) | watcher::Event::InitApply(meta)) => {
                    pause = settings.retry_initial;
                    self.apply(&meta);
                }
                Ok(watcher::Event::Delete(meta)) => {
                    pause = settings.retry_initial;
                    warn!(
                        node = %self.node,
                        labels = ?self.current(),
                        resource_version = meta.metadata.resource_version.as_deref().unwrap_or(""),
                        "the Node object was deleted; answering with the last known node labels"
                    );
                }
                Ok(watcher::Event::Init | watcher::Event::InitDone) => {}
                Err(err) => {
                    self.record_watch_error(&err);
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(settings.retry_max);
                }
            }
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, LabelState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, LabelState> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the followed labels of a fresh copy of the node.
    fn apply(&self, meta: &PartialObjectMeta<Node>) {
        let empty = BTreeMap::new();
        let labels = select(&self.keys, meta.metadata.labels.as_ref().unwrap_or(&empty));
        let version = meta.metadata.resource_version.clone().unwrap_or_default();
        let mut state = self.write();
        if state.api_error.take().is_some() {
            info!(node = %self.node, "Kubernetes API answers again; node labels are current");
        }
        if state.labels != labels || state.origin == Origin::Configuration {
            info!(
                node = %self.node,
                labels = ?labels,
                previous = ?state.labels,
                resource_version = %version,
                "node topology labels read"
            );
        } else {
            debug!(node = %self.node, resource_version = %version, "node labels unchanged");
        }
        state.labels = labels;
        state.origin = Origin::Node(version);
    }

    fn record_error(&self, err: &AdapterError) {
        self.record_failure(err.to_string());
    }

    fn record_watch_error(&self, err: &watcher::Error) {
        let text = match err {
            watcher::Error::InitialListFailed(e)
            | watcher::Error::WatchStartFailed(e)
            | watcher::Error::WatchFailed(e) => format!(
                "Kubernetes API: cannot watch node {}: {}",
                self.node,
                kube_client::describe_api_error(e)
            ),
            other => format!(
                "Kubernetes API: cannot watch node {}: {}",
                self.node,
                kube_client::error_chain(other)
            ),
        };
        self.record_failure(text);
    }

    fn record_failure(&self, error: String) {
        let mut state = self.write();
        let source = match &state.origin {
            Origin::Configuration => "configuration",
            Origin::Node(_) => "node labels",
        };
        let version = match &state.origin {
            Origin::Configuration => "",
            Origin::Node(v) => v.as_str(),
        };
        warn!(
            node = %self.node,
            error = %error,
            labels = ?state.labels,
            source,
            resource_version = version,
            "Kubernetes API unavailable; answering with the last known node labels"
        );
        state.api_error = Some(error);
    }
}

#[async_trait]
impl TopologyProvider for NodeLabelTopology {
    async fn topology(&self) -> csi_core::Result<Topology> {
        let state = self.read();
        if let Some(error) = &state.api_error {
            info!(
                node = %self.node,
                labels = ?state.labels,
                error = %error,
                "serving the last known node labels; the Kubernetes API did not answer the last call"
            );
        }
        Ok(state.labels.clone())
    }
}

/// The entries of `labels` under `keys`.
fn select(keys: &[String], labels: &BTreeMap<String, String>) -> Topology {
    keys.iter()
        .filter_map(|k| labels.get(k).map(|v| (k.clone(), v.clone())))
        .collect()
}

/// Several providers as one: later ones add to and override earlier ones.
pub struct LayeredTopology {
    layers: Vec<Arc<dyn TopologyProvider>>,
}

impl LayeredTopology {
    /// Combines `layers`, the last one winning on a shared key.
    pub fn new(layers: Vec<Arc<dyn TopologyProvider>>) -> Self {
        Self { layers }
    }
}

#[async_trait]
impl TopologyProvider for LayeredTopology {
    async fn topology(&self) -> csi_core::Result<Topology> {
        let mut topology = Topology::new();
        for layer in &self.layers {
            topology.extend(layer.topology().await?);
        }
        Ok(topology)
    }
}

/// Checks a Kubernetes label key: an optional DNS-subdomain prefix and `/`,
/// then a name of at most 63 characters of `[A-Za-z0-9._-]`, starting and
/// ending with a letter or digit.
pub fn validate_label_key(key: &str) -> Result<(), AdapterError> {
    let invalid = |reason: String| AdapterError::InvalidLabelKey {
        key: key.to_string(),
        reason,
    };
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if name.is_empty() || name.len() > 63 {
        return Err(invalid("the name part must have 1 to 63 characters".into()));
    }
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !edge_ok(name.chars().next()) || !edge_ok(name.chars().last()) {
        return Err(invalid(
            "the name part must start and end with a letter or digit".into(),
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(invalid(format!("the name part may not contain {bad:?}")));
    }
    if let Some(prefix) = prefix {
        if prefix.is_empty() || prefix.len() > 253 {
            return Err(invalid("the prefix must have 1 to 253 characters".into()));
        }
        for part in prefix.split('.') {
            let ok = !part.is_empty()
                && part.len() <= 63
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !part.starts_with('-')
                && !part.ends_with('-');
            if !ok {
                return Err(invalid(
                    "the prefix must be a DNS subdomain (lower-case letters, digits, '-' and '.')"
                        .into(),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn label_keys_follow_the_kubernetes_rules() {
        for good in [
            ZONE_LABEL,
            "zone",
            "topology.kubernetes.io/zone",
            "pfs-csi.io/lustre-client",
            "a/B_c.d-9",
        ] {
            assert!(validate_label_key(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "/zone",
            "Example.com/zone",
            "example.com/",
            "example.com/-zone",
            "example..com/zone",
            "a/b/c",
            "zone name",
        ] {
            assert!(
                matches!(
                    validate_label_key(bad),
                    Err(AdapterError::InvalidLabelKey { .. })
                ),
                "{bad}"
            );
        }
        assert!(validate_label_key(&"x".repeat(64)).is_err());
        assert!(validate_label_key(&"x".repeat(63)).is_ok());
    }

    #[test]
    fn only_followed_keys_of_the_configured_topology_are_served_at_first() {
        let initial = Topology::from([
            (ZONE_LABEL.to_string(), "zone-1".to_string()),
            ("other".to_string(), "x".to_string()),
        ]);
        let provider =
            NodeLabelTopology::new("n1", vec![ZONE_LABEL.into(), ZONE_LABEL.into()], initial)
                .unwrap();
        assert_eq!(provider.keys(), [ZONE_LABEL.to_string()]);
        assert_eq!(
            provider.current(),
            Topology::from([(ZONE_LABEL.to_string(), "zone-1".to_string())])
        );
        assert!(!provider.is_stale());
    }

    #[test]
    fn an_invalid_extra_key_is_refused_at_construction() {
        let err =
            NodeLabelTopology::new("n1", vec!["Bad Key".into()], Topology::new()).unwrap_err();
        assert!(err.to_string().contains("\"Bad Key\""), "{err}");
    }

    #[tokio::test]
    async fn later_layers_override_earlier_ones() {
        let lower = csi_core::ports::StaticTopology(Topology::from([
            ("a".to_string(), "1".to_string()),
            ("b".to_string(), "1".to_string()),
        ]));
        let upper =
            csi_core::ports::StaticTopology(Topology::from([("b".to_string(), "2".to_string())]));
        let layered = LayeredTopology::new(vec![Arc::new(lower), Arc::new(upper)]);
        assert_eq!(
            layered.topology().await.unwrap(),
            Topology::from([
                ("a".to_string(), "1".to_string()),
                ("b".to_string(), "2".to_string()),
            ])
        );
    }

    proptest! {
        #[test]
        fn generated_valid_keys_are_accepted(
            prefix in prop::option::of("[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?(\\.[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?){0,3}"),
            name in "[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?",
        ) {
            let key = match prefix {
                Some(p) => format!("{p}/{name}"),
                None => name,
            };
            prop_assert!(validate_label_key(&key).is_ok(), "{}", key);
        }

        #[test]
        fn keys_with_a_forbidden_character_are_refused(
            name in "[a-z]{1,10}",
            bad in prop::sample::select(vec![' ', '/', ':', '@', '*', 'é', '\n']),
            at in 0usize..10,
        ) {
            let at = at.min(name.len());
            let key = format!("{}{bad}{}x", &name[..at], &name[at..]);
            // A single '/' is the prefix separator: a key like "ab/cx" is valid.
            prop_assume!(!(bad == '/' && at > 0));
            prop_assert!(validate_label_key(&key).is_err(), "{:?}", key);
        }
    }
}

#[cfg(test)]
mod api_tests {
    use super::*;
    use crate::api_server_fixture::{LogCapture, Scenario, completed, eventually, mock_client};

    const EXTRA: &str = "example.com/rack";

    fn settings() -> FollowSettings {
        FollowSettings {
            request_timeout: Duration::from_millis(200),
            retry_initial: Duration::from_millis(10),
            retry_max: Duration::from_millis(20),
            watch_timeout_seconds: 30,
        }
    }

    fn provider(initial: &[(&str, &str)]) -> Arc<NodeLabelTopology> {
        let initial = initial
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Arc::new(
            NodeLabelTopology::new("n1", vec![ZONE_LABEL.into(), EXTRA.into()], initial).unwrap(),
        )
    }

    fn topology(pairs: &[(&str, &str)]) -> Topology {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[tokio::test]
    async fn labels_are_read_at_start_and_only_followed_keys_are_served() {
        let (client, server) = mock_client();
        let scenario = server.run(Scenario::InitialRead {
            node: "n1",
            labels: vec![
                (ZONE_LABEL, "zone-2"),
                (EXTRA, "r7"),
                ("kubernetes.io/hostname", "n1"),
            ],
        });
        let provider = provider(&[(ZONE_LABEL, "zone-1")]);
        provider.spawn(client, settings());
        completed(scenario).await;
        assert_eq!(
            provider.topology().await.unwrap(),
            topology(&[(ZONE_LABEL, "zone-2"), (EXTRA, "r7")])
        );
        assert!(!provider.is_stale());
    }

    #[tokio::test]
    async fn a_watch_event_changing_the_zone_updates_the_provider() {
        let (client, server) = mock_client();
        let scenario = server.run(Scenario::WatchRelabel {
            node: "n1",
            initial: vec![(ZONE_LABEL, "zone-1"), (EXTRA, "r1")],
            changed: vec![(ZONE_LABEL, "zone-3")],
        });
        let provider = provider(&[]);
        provider.spawn(client, settings());
        completed(scenario).await;
        // The removed rack label is gone; the new zone is served.
        assert_eq!(
            provider.topology().await.unwrap(),
            topology(&[(ZONE_LABEL, "zone-3")])
        );
    }

    #[tokio::test]
    async fn the_readiness_label_on_the_node_wins_over_the_local_check() {
        // NodeGetInfo must report what the Node's label says: the kubelet
        // refuses to register a topology value that contradicts an existing label.
        const KEY: &str = "pfs-csi.io/lustre-client";
        let (client, server) = mock_client();
        let scenario = server.run(Scenario::InitialRead {
            node: "n1",
            labels: vec![(ZONE_LABEL, "zone-2"), (KEY, "missing")],
        });
        let labels = Arc::new(
            NodeLabelTopology::new("n1", vec![ZONE_LABEL.into(), KEY.into()], Topology::new())
                .unwrap(),
        );
        let local = csi_core::ports::StaticTopology(topology(&[(KEY, "ready")]));
        let layered = LayeredTopology::new(vec![Arc::new(local), labels.clone()]);
        assert_eq!(
            layered.topology().await.unwrap(),
            topology(&[(KEY, "ready")])
        );
        labels.spawn(client, settings());
        completed(scenario).await;
        assert_eq!(
            layered.topology().await.unwrap(),
            topology(&[(ZONE_LABEL, "zone-2"), (KEY, "missing")])
        );
    }

    async fn errors_after_a_read_keep_the_last_known_value(code: u16) {
        let logs = LogCapture::start();
        let (client, server) = mock_client();
        let scenario = server.run(Scenario::ErrorsAfterRead {
            node: "n1",
            labels: vec![(ZONE_LABEL, "zone-5")],
            code,
        });
        let provider = provider(&[(ZONE_LABEL, "zone-1")]);
        provider.spawn(client, settings());
        completed(scenario).await;
        assert!(eventually(Duration::from_secs(2), || provider.is_stale()).await);
        assert_eq!(
            provider.topology().await.unwrap(),
            topology(&[(ZONE_LABEL, "zone-5")])
        );
        let fallbacks = logs.lines_with(&[
            "WARN",
            "answering with the last known node labels",
            &format!("HTTP {code}"),
            "zone-5",
            "source=\"node labels\"",
        ]);
        // Once for the failed list, once for the failed watch.
        assert_eq!(fallbacks.len(), 2, "{}", logs.text());
        assert_eq!(
            logs.lines_with(&["Kubernetes API answers again"]).len(),
            1,
            "{}",
            logs.text()
        );
        assert_eq!(
            logs.lines_with(&["INFO", "serving the last known node labels", "zone-5"])
                .len(),
            1,
            "{}",
            logs.text()
        );
    }

    #[tokio::test]
    async fn forbidden_keeps_the_last_known_value_and_says_so() {
        errors_after_a_read_keep_the_last_known_value(403).await;
    }

    #[tokio::test]
    async fn a_server_error_keeps_the_last_known_value_and_says_so() {
        errors_after_a_read_keep_the_last_known_value(500).await;
    }

    #[tokio::test]
    async fn a_missing_node_keeps_the_configured_value_and_names_the_flag() {
        let logs = LogCapture::start();
        let (client, server) = mock_client();
        let scenario = server.run(Scenario::NodeNotFound { node: "n1" });
        let provider = provider(&[(ZONE_LABEL, "zone-1")]);
        provider.spawn(client, settings());
        completed(scenario).await;
        assert_eq!(
            provider.topology().await.unwrap(),
            topology(&[(ZONE_LABEL, "zone-1")])
        );
        let lines = logs.lines_with(&[
            "answering with the last known node labels",
            "HTTP 404",
            "check --node-id",
            "source=\"configuration\"",
        ]);
        assert_eq!(lines.len(), 1, "{}", logs.text());
    }

    #[tokio::test]
    async fn a_hung_initial_read_times_out_and_the_watch_fills_in_later() {
        let logs = LogCapture::start();
        let (client, server) = mock_client();
        let scenario = server.run(Scenario::ReadTimeout {
            node: "n1",
            labels: vec![(ZONE_LABEL, "zone-7")],
        });
        let provider = provider(&[(ZONE_LABEL, "zone-1")]);
        provider.spawn(client, settings());
        // Served at once, while the read hangs.
        assert_eq!(
            provider.topology().await.unwrap(),
            topology(&[(ZONE_LABEL, "zone-1")])
        );
        completed(scenario).await;
        let lines = logs.lines_with(&[
            "answering with the last known node labels",
            "read node n1: no answer within 200ms",
            "zone-1",
            "source=\"configuration\"",
        ]);
        assert_eq!(lines.len(), 1, "{}", logs.text());
        assert_eq!(
            provider.topology().await.unwrap(),
            topology(&[(ZONE_LABEL, "zone-7")])
        );
        assert!(!provider.is_stale());
    }

    #[tokio::test]
    async fn a_watch_timeout_keeps_the_last_known_value_and_says_so() {
        let logs = LogCapture::start();
        let (client, server) = mock_client();
        let scenario = server.run(Scenario::WatchTransportTimeout {
            node: "n1",
            labels: vec![(ZONE_LABEL, "zone-4")],
        });
        let provider = provider(&[]);
        provider.spawn(client, settings());
        completed(scenario).await;
        assert!(provider.is_stale());
        assert_eq!(
            provider.topology().await.unwrap(),
            topology(&[(ZONE_LABEL, "zone-4")])
        );
        let lines = logs.lines_with(&[
            "answering with the last known node labels",
            "cannot watch node n1",
            "timed out",
            "zone-4",
        ]);
        assert_eq!(lines.len(), 1, "{}", logs.text());
    }
}
