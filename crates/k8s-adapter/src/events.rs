//! Kubernetes Events about this node (core/v1 `Event`), as `kubectl describe
//! node` shows them.
//!
//! Node events live in the `default` namespace and name the node by its
//! name as `involvedObject.uid`, as the kubelet's own do; `kubectl describe
//! node` finds both those and events carrying the Node's real uid.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};

use crate::error::AdapterError;
use crate::kube_client;

/// The namespace node events go to.
pub const NODE_EVENT_NAMESPACE: &str = "default";

/// The severity of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Something worth knowing.
    Normal,
    /// Something to act on.
    Warning,
}

impl EventType {
    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "Normal",
            Self::Warning => "Warning",
        }
    }
}

/// Records events about one node.
#[derive(Clone)]
pub struct NodeEvents {
    api: Api<Event>,
    node: String,
    component: String,
    timeout: Duration,
}

impl NodeEvents {
    /// Events about `node`, reported by `component` (e.g. `pfs-csi.io/node`),
    /// each creation bounded by `timeout`.
    pub fn new(client: Client, node: &str, component: &str, timeout: Duration) -> Self {
        Self {
            api: Api::namespaced(client, NODE_EVENT_NAMESPACE),
            node: node.to_string(),
            component: component.to_string(),
            timeout,
        }
    }

    /// Creates one event.
    pub async fn record(
        &self,
        event_type: EventType,
        reason: &str,
        message: &str,
    ) -> Result<(), AdapterError> {
        let event = node_event(
            &self.node,
            &self.component,
            event_type,
            reason,
            message,
            SystemTime::now(),
        );
        let action = format!("record event {reason} on node {}", self.node);
        kube_client::call(
            &action,
            self.timeout,
            self.api.create(&PostParams::default(), &event),
        )
        .await
        .map(|_| ())
    }
}

/// Longest message kept; the API refuses events whose message exceeds 1 KiB
/// in the events.k8s.io form, so stay within it for both.
const MAX_MESSAGE_BYTES: usize = 1024;

/// A core/v1 event about node `node` at time `at`.
pub fn node_event(
    node: &str,
    component: &str,
    event_type: EventType,
    reason: &str,
    message: &str,
    at: SystemTime,
) -> Event {
    let since_epoch = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let timestamp = Timestamp::new(
        since_epoch.as_secs() as i64,
        since_epoch.subsec_nanos() as i32,
    )
    .unwrap_or(Timestamp::UNIX_EPOCH);
    Event {
        metadata: ObjectMeta {
            // The client-go convention: object name, '.', time in hex nanoseconds.
            name: Some(format!("{node}.{:x}", since_epoch.as_nanos())),
            namespace: Some(NODE_EVENT_NAMESPACE.to_string()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".to_string()),
            kind: Some("Node".to_string()),
            name: Some(node.to_string()),
            uid: Some(node.to_string()),
            ..ObjectReference::default()
        },
        reason: Some(reason.to_string()),
        message: Some(clip(message, MAX_MESSAGE_BYTES).to_string()),
        type_: Some(event_type.as_str().to_string()),
        count: Some(1),
        first_timestamp: Some(Time(timestamp)),
        last_timestamp: Some(Time(timestamp)),
        source: Some(EventSource {
            component: Some(component.to_string()),
            host: Some(node.to_string()),
        }),
        reporting_component: Some(component.to_string()),
        reporting_instance: Some(node.to_string()),
        ..Event::default()
    }
}

/// At most `limit` bytes of `text`, cut on a character boundary.
fn clip(text: &str, limit: usize) -> &str {
    if text.len() <= limit {
        return text;
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_event_names_the_node_like_the_kubelet_does() {
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let event = node_event(
            "n1",
            "pfs-csi.io/node",
            EventType::Warning,
            "ClientMissing",
            "lustre client missing: kernel module lustre is not loaded",
            at,
        );
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["metadata"]["namespace"], "default");
        assert_eq!(
            json["metadata"]["name"],
            format!("n1.{:x}", 1_700_000_000u128 * 1_000_000_000)
        );
        assert_eq!(
            json["involvedObject"],
            serde_json::json!({"apiVersion": "v1", "kind": "Node", "name": "n1", "uid": "n1"})
        );
        assert_eq!(json["reason"], "ClientMissing");
        assert_eq!(json["type"], "Warning");
        assert_eq!(json["source"]["component"], "pfs-csi.io/node");
        assert_eq!(json["source"]["host"], "n1");
        assert_eq!(json["firstTimestamp"], "2023-11-14T22:13:20Z");
        assert_eq!(json["lastTimestamp"], json["firstTimestamp"]);
    }

    #[test]
    fn long_messages_are_clipped_on_a_character_boundary() {
        let long = "é".repeat(MAX_MESSAGE_BYTES);
        let event = node_event("n", "c", EventType::Normal, "R", &long, SystemTime::now());
        let message = event.message.unwrap();
        assert!(message.len() <= MAX_MESSAGE_BYTES);
        assert!(message.len() >= MAX_MESSAGE_BYTES - 1);
    }
}
