//! A mocked Kubernetes API server for the tests of the API side.
//!
//! [`mock_client`] gives a real `kube::Client` whose requests arrive at an
//! [`ApiServerVerifier`]. A [`Scenario`] names the sequence of calls the
//! code under test must make; the verifier checks each call's method, path,
//! query and body, answers it, and reports completion. A test that makes
//! too few calls fails on the completion timeout; a wrong call fails the
//! verifier's assertion, which the test sees as an incomplete scenario.
//! Requests a scenario leaves unanswered (an open watch, a hung call) stay
//! pending until the test ends.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tower_test::mock::{self, Handle, SendResponse};

/// How long a test waits for a scenario to complete.
pub(crate) const SCENARIO_LIMIT: Duration = Duration::from_secs(10);

/// The `Accept` header of metadata-only requests.
pub(crate) const METADATA_ACCEPT: &str =
    "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1";

/// Node labels, as key and value pairs.
pub(crate) type Labels = Vec<(&'static str, &'static str)>;

/// A client talking to a fresh verifier.
pub(crate) fn mock_client() -> (Client, ApiServerVerifier) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (
        Client::new(service, "default"),
        ApiServerVerifier {
            handle,
            held: Vec::new(),
        },
    )
}

/// A request as received, its body parsed as JSON (`Null` when empty).
#[derive(Debug)]
pub(crate) struct Seen {
    pub method: Method,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub headers: http::HeaderMap,
    pub body: Value,
}

impl Seen {
    fn query(&self, key: &str) -> Option<&str> {
        self.query.get(key).map(String::as_str)
    }

    fn header(&self, key: &str) -> Option<&str> {
        self.headers.get(key).and_then(|v| v.to_str().ok())
    }
}

/// The call sequences the tests script.
#[derive(Debug, Clone)]
pub(crate) enum Scenario {
    /// The node is read at start, listed by the watcher, and watched.
    InitialRead { node: &'static str, labels: Labels },
    /// As `InitialRead`, then the watch delivers the node relabelled.
    WatchRelabel {
        node: &'static str,
        initial: Labels,
        changed: Labels,
    },
    /// The node is read; the watcher's list fails with `code`, succeeds on
    /// retry, then the watch fails with `code` and is retried.
    ErrorsAfterRead {
        node: &'static str,
        labels: Labels,
        code: u16,
    },
    /// The node does not exist: 404 on read, an empty list, a watch.
    NodeNotFound { node: &'static str },
    /// The initial read never gets an answer; the watcher's list then
    /// answers with `labels`.
    ReadTimeout { node: &'static str, labels: Labels },
    /// Read and list answer; the watch fails with a transport timeout and
    /// is started again.
    WatchTransportTimeout { node: &'static str, labels: Labels },
    /// Readiness publication: a merge patch of one label, then one event.
    Publish {
        node: &'static str,
        key: String,
        value: &'static str,
        reason: &'static str,
        event_type: &'static str,
        message_contains: String,
    },
    /// The first label patch fails with `code`; the retry succeeds and only
    /// then is the event recorded.
    PublishAfterFailure {
        node: &'static str,
        key: String,
        value: &'static str,
        reason: &'static str,
        code: u16,
    },
    /// These scenarios one after the other.
    Sequence(Vec<Scenario>),
}

/// The mocked API server's side of [`mock_client`].
pub(crate) struct ApiServerVerifier {
    handle: Handle<Request<Body>, Response<Body>>,
    held: Vec<SendResponse<Response<Body>>>,
}

impl ApiServerVerifier {
    /// Plays `scenario` in a task; the receiver fires when every scripted call
    /// was made and answered (and is dropped if an expectation failed).
    pub(crate) fn run(mut self, scenario: Scenario) -> oneshot::Receiver<()> {
        let (done, completed) = oneshot::channel();
        tokio::spawn(async move {
            self.play(scenario).await;
            let _ = done.send(());
            // Keep open watches and hung calls pending; hold later calls too.
            while let Some((_, responder)) = self.handle.next_request().await {
                self.held.push(responder);
            }
        });
        completed
    }

    fn play<'a>(
        &'a mut self,
        scenario: Scenario,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        Box::pin(self.play_one(scenario))
    }

    async fn play_one(&mut self, scenario: Scenario) {
        match scenario {
            Scenario::Sequence(steps) => {
                for step in steps {
                    self.play(step).await;
                }
            }
            Scenario::InitialRead { node, labels } => {
                self.expect_get(node)
                    .await
                    .ok(node_meta(node, "10", &labels));
                self.expect_list(node)
                    .await
                    .ok(node_list("10", &[node_meta(node, "10", &labels)]));
                self.expect_watch(node, "10").await.hold(self);
            }
            Scenario::WatchRelabel {
                node,
                initial,
                changed,
            } => {
                self.expect_get(node)
                    .await
                    .ok(node_meta(node, "10", &initial));
                self.expect_list(node)
                    .await
                    .ok(node_list("10", &[node_meta(node, "10", &initial)]));
                self.expect_watch(node, "10")
                    .await
                    .watch_events(&[("MODIFIED", node_meta(node, "11", &changed))]);
                // The watch body ended: the watcher resumes from the new version.
                self.expect_watch(node, "11").await.hold(self);
            }
            Scenario::ErrorsAfterRead { node, labels, code } => {
                self.expect_get(node)
                    .await
                    .ok(node_meta(node, "10", &labels));
                self.expect_list(node)
                    .await
                    .status(code, "injected list failure");
                self.expect_list(node)
                    .await
                    .ok(node_list("12", &[node_meta(node, "12", &labels)]));
                self.expect_watch(node, "12")
                    .await
                    .status(code, "injected watch failure");
                self.expect_watch(node, "12").await.hold(self);
            }
            Scenario::NodeNotFound { node } => {
                self.expect_get(node)
                    .await
                    .status(404, &format!("nodes \"{node}\" not found"));
                self.expect_list(node).await.ok(node_list("5", &[]));
                self.expect_watch(node, "5").await.hold(self);
            }
            Scenario::ReadTimeout { node, labels } => {
                self.expect_get(node).await.hold(self);
                self.expect_list(node)
                    .await
                    .ok(node_list("20", &[node_meta(node, "20", &labels)]));
                self.expect_watch(node, "20").await.hold(self);
            }
            Scenario::WatchTransportTimeout { node, labels } => {
                self.expect_get(node)
                    .await
                    .ok(node_meta(node, "10", &labels));
                self.expect_list(node)
                    .await
                    .ok(node_list("10", &[node_meta(node, "10", &labels)]));
                self.expect_watch(node, "10").await.timed_out();
                self.expect_watch(node, "10").await.hold(self);
            }
            Scenario::Publish {
                node,
                key,
                value,
                reason,
                event_type,
                message_contains,
            } => {
                self.expect_label_patch(node, &key, value)
                    .await
                    .ok(node_meta(node, "30", &[]));
                let (seen, call) = self.expect_event(node, reason).await;
                assert_eq!(seen.body["type"], event_type);
                let message = seen.body["message"].as_str().unwrap_or_default();
                assert!(
                    message.contains(&message_contains),
                    "event message {message:?} lacks {message_contains:?}"
                );
                call.created(seen.body);
            }
            Scenario::PublishAfterFailure {
                node,
                key,
                value,
                reason,
                code,
            } => {
                self.expect_label_patch(node, &key, value)
                    .await
                    .status(code, "injected patch failure");
                // No event for a label that was not set: the next call is the retry.
                self.expect_label_patch(node, &key, value)
                    .await
                    .ok(node_meta(node, "31", &[]));
                let (seen, call) = self.expect_event(node, reason).await;
                call.created(seen.body);
            }
        }
    }

    /// The next request, parsed.
    async fn next(&mut self) -> (Seen, Call) {
        let (request, responder) = tokio::time::timeout(SCENARIO_LIMIT, self.handle.next_request())
            .await
            .expect("the code under test made no further API call")
            .expect("the client was dropped before the scenario completed");
        let (parts, body) = request.into_parts();
        let bytes = body.collect_bytes().await.expect("request body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("request body is JSON")
        };
        let query = parts
            .uri
            .query()
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (decode(k), decode(v))
            })
            .collect();
        (
            Seen {
                method: parts.method,
                path: parts.uri.path().to_string(),
                query,
                headers: parts.headers,
                body,
            },
            Call(responder),
        )
    }

    async fn expect_get(&mut self, node: &str) -> Call {
        let (seen, call) = self.next().await;
        assert_eq!(seen.method, Method::GET, "{seen:?}");
        assert_eq!(seen.path, format!("/api/v1/nodes/{node}"), "{seen:?}");
        assert_eq!(
            seen.header("accept"),
            Some(METADATA_ACCEPT),
            "metadata only: {seen:?}"
        );
        call
    }

    async fn expect_list(&mut self, node: &str) -> Call {
        let (seen, call) = self.next().await;
        assert_eq!(seen.method, Method::GET, "{seen:?}");
        assert_eq!(seen.path, "/api/v1/nodes", "{seen:?}");
        assert_eq!(seen.query("watch"), None, "a list, not a watch: {seen:?}");
        assert_eq!(
            seen.query("fieldSelector"),
            Some(format!("metadata.name={node}").as_str()),
            "{seen:?}"
        );
        assert_eq!(
            seen.header("accept"),
            Some("application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"),
            "{seen:?}"
        );
        call
    }

    async fn expect_watch(&mut self, node: &str, version: &str) -> Call {
        let (seen, call) = self.next().await;
        assert_eq!(seen.method, Method::GET, "{seen:?}");
        assert_eq!(seen.path, "/api/v1/nodes", "{seen:?}");
        assert_eq!(seen.query("watch"), Some("true"), "{seen:?}");
        assert_eq!(
            seen.query("fieldSelector"),
            Some(format!("metadata.name={node}").as_str()),
            "{seen:?}"
        );
        assert_eq!(seen.query("resourceVersion"), Some(version), "{seen:?}");
        call
    }

    async fn expect_label_patch(&mut self, node: &str, key: &str, value: &str) -> Call {
        let (seen, call) = self.next().await;
        assert_eq!(seen.method, Method::PATCH, "{seen:?}");
        assert_eq!(seen.path, format!("/api/v1/nodes/{node}"), "{seen:?}");
        assert_eq!(
            seen.header("content-type"),
            Some("application/merge-patch+json"),
            "{seen:?}"
        );
        let driver = key.split('/').next().unwrap_or_default();
        assert_eq!(
            seen.query("fieldManager"),
            Some(format!("{driver}/node").as_str()),
            "{seen:?}"
        );
        assert_eq!(
            seen.body,
            json!({"metadata": {"labels": {key: value}}}),
            "the patch sets exactly the one label"
        );
        call
    }

    async fn expect_event(&mut self, node: &str, reason: &str) -> (Seen, Call) {
        let (seen, call) = self.next().await;
        assert_eq!(seen.method, Method::POST, "{seen:?}");
        assert_eq!(seen.path, "/api/v1/namespaces/default/events", "{seen:?}");
        assert_eq!(seen.body["reason"], reason, "{seen:?}");
        assert_eq!(
            seen.body["involvedObject"],
            json!({"apiVersion": "v1", "kind": "Node", "name": node, "uid": node}),
            "{seen:?}"
        );
        assert_eq!(seen.body["metadata"]["namespace"], "default");
        (seen, call)
    }
}

/// One call awaiting its answer.
pub(crate) struct Call(SendResponse<Response<Body>>);

impl Call {
    /// Answers 200 with `body`.
    fn ok(self, body: Value) {
        self.respond(StatusCode::OK, body.to_string().into_bytes());
    }

    /// Answers 201 with `body` (a created object).
    fn created(self, body: Value) {
        self.respond(StatusCode::CREATED, body.to_string().into_bytes());
    }

    /// Answers with a Status of `code`.
    fn status(self, code: u16, message: &str) {
        let reason = match code {
            403 => "Forbidden",
            404 => "NotFound",
            500 => "InternalError",
            _ => "Unknown",
        };
        let status = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": reason, "code": code
        });
        self.respond(
            StatusCode::from_u16(code).expect("an HTTP status"),
            status.to_string().into_bytes(),
        );
    }

    /// Answers a watch with these events, then ends the stream.
    fn watch_events(self, events: &[(&str, Value)]) {
        let body: String = events
            .iter()
            .map(|(kind, object)| format!("{}\n", json!({"type": kind, "object": object})))
            .collect();
        self.respond(StatusCode::OK, body.into_bytes());
    }

    /// Fails the call as a transport timeout does.
    fn timed_out(self) {
        self.0.send_error(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "operation timed out",
        ));
    }

    /// Never answers (until the test ends).
    fn hold(self, verifier: &mut ApiServerVerifier) {
        verifier.held.push(self.0);
    }

    fn respond(self, status: StatusCode, body: Vec<u8>) {
        let response = Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(body))
            .expect("a response");
        self.0.send_response(response);
    }
}

/// A Node's metadata as the API server returns it to metadata requests.
pub(crate) fn node_meta(node: &str, version: &str, labels: &[(&str, &str)]) -> Value {
    let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
    json!({
        "apiVersion": "meta.k8s.io/v1",
        "kind": "PartialObjectMetadata",
        "metadata": {
            "name": node,
            "uid": format!("uid-of-{node}"),
            "resourceVersion": version,
            "labels": labels,
        }
    })
}

/// A metadata list at `version`.
pub(crate) fn node_list(version: &str, items: &[Value]) -> Value {
    json!({
        "apiVersion": "meta.k8s.io/v1",
        "kind": "PartialObjectMetadataList",
        "metadata": {"resourceVersion": version},
        "items": items,
    })
}

/// Percent-decoding of a query component (`%3D` and friends, `+` as space).
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Captures what is logged on this thread while the guard lives.
pub(crate) struct LogCapture {
    buffer: Arc<Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

impl LogCapture {
    /// Starts capturing every level on the current thread (a current-thread
    /// runtime polls spawned tasks here too).
    pub(crate) fn start() -> Self {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || SharedWriter(writer.clone()))
            .finish();
        Self {
            buffer,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    /// Everything logged so far.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.buffer.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    /// The logged lines containing every one of `needles`.
    pub(crate) fn lines_with(&self, needles: &[&str]) -> Vec<String> {
        self.text()
            .lines()
            .filter(|line| needles.iter().all(|n| line.contains(n)))
            .map(str::to_string)
            .collect()
    }
}

struct SharedWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for SharedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Polls `condition` until it holds or `limit` passes; true if it held.
pub(crate) async fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits for the scenario to complete, failing the test otherwise.
pub(crate) async fn completed(receiver: oneshot::Receiver<()>) {
    match tokio::time::timeout(SCENARIO_LIMIT, receiver).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => panic!("the API server verifier failed an expectation (see its panic above)"),
        Err(_) => panic!("the scenario did not complete: too few API calls"),
    }
}
