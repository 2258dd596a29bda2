//! One tracing span and two log lines per RPC, with secrets kept out.
//!
//! [`RpcLogLayer`] wraps the whole router. For every call it opens a span
//! `rpc` with a request id (a per-server counter), the gRPC service and
//! method, and empty `volume_id`, `snapshot_id` and `name` fields; the
//! handler runs inside that span, so every line the core and the backends
//! log for the call carries them. When the call ends the layer logs its code
//! and duration: successes at INFO, failures at the level
//! [`crate::status::log_level`] picks (WARN for what the caller can fix or
//! retry, ERROR for failures of the driver). Identity and reflection calls
//! (the livenessprobe's Probe every few seconds) log at DEBUG when they
//! succeed. A call dropped before it finishes (its deadline passed, the
//! caller went away) is logged at WARN.
//!
//! The layer sees only HTTP frames; the decoded request is logged by the
//! handler through [`log_request`], which fills the span's id fields and
//! logs a copy of the request whose secret fields are replaced by
//! `<redacted>`. The generated message types derive a `Debug` that prints
//! secrets, so a raw request is never logged: [`LoggedRequest`] is the only
//! way requests reach a log, and its implementations are checked against
//! every `csi_secret` field of `csi.proto` by this module's tests.
//!
//! A layer built [`RpcLogLayer::with_metrics`] also counts and times every
//! call in [`CsiMetrics`] (by method and code, with calls in flight), from
//! the same outcome it logs: the one place RPC metrics are recorded.

use std::{
    collections::HashMap,
    fmt::Debug,
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use tonic::{
    Code, Status,
    codegen::{Service, http},
};
use tower::Layer;
use tracing::{Instrument, Level, Span, field};

use crate::metrics::{CsiMetrics, RpcRecord};
use crate::proto::csi::v1 as csi;
use crate::status::log_level;

/// What a secret value is replaced with in logs.
pub const REDACTED: &str = "<redacted>";

/// Longest id or name recorded in a span, in bytes: ids are at most 128
/// bytes when valid, and an invalid one must not flood the log.
const MAX_FIELD_BYTES: usize = 256;

/// The tower layer that logs every RPC; see the module docs.
#[derive(Debug, Clone, Default)]
pub struct RpcLogLayer {
    next_id: Arc<AtomicU64>,
    metrics: Option<Arc<CsiMetrics>>,
}

impl RpcLogLayer {
    /// A layer whose request ids start at 1.
    pub fn new() -> Self {
        Self::default()
    }

    /// The same layer, also recording every call in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<CsiMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }
}

impl<S> Layer<S> for RpcLogLayer {
    type Service = RpcLog<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcLog {
            inner,
            next_id: self.next_id.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

/// The service [`RpcLogLayer`] wraps around the router.
#[derive(Debug, Clone)]
pub struct RpcLog<S> {
    inner: S,
    next_id: Arc<AtomicU64>,
    metrics: Option<Arc<CsiMetrics>>,
}

/// The boxed future of [`RpcLog`].
pub type RpcLogFuture<R, E> = Pin<Box<dyn Future<Output = Result<R, E>> + Send>>;

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for RpcLog<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = RpcLogFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        // The clone that was polled ready serves this call; the fresh clone
        // stays for the next one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let rpc = RpcName::from_path(request.uri().path());
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let span = rpc.span(id);
        let record = self.metrics.as_ref().map(|m| m.start_rpc(&rpc.method));
        let mut pending = Pending {
            rpc,
            started: Instant::now(),
            span: span.clone(),
            finished: false,
            record,
        };
        Box::pin(
            async move {
                let response = inner.call(request).await;
                pending.finished = true;
                let status = match &response {
                    Ok(response) => grpc_status(response.headers()),
                    Err(_) => Some(Status::unknown(
                        "the transport failed before a status was sent",
                    )),
                };
                if let Some(record) = pending.record.take() {
                    record.finish(status.as_ref().map_or(Code::Ok, Status::code));
                }
                pending.log_outcome(status);
                response
            }
            .instrument(span),
        )
    }
}

/// The status a response carries in its headers; `None` for a successful
/// unary reply, whose `grpc-status: 0` comes in the trailers.
fn grpc_status(headers: &http::HeaderMap) -> Option<Status> {
    Status::from_header_map(headers).filter(|s| s.code() != Code::Ok)
}

/// Service and method of a call, from its HTTP path
/// (`/csi.v1.Controller/CreateVolume`).
#[derive(Debug, Clone)]
struct RpcName {
    service: String,
    method: String,
}

impl RpcName {
    fn from_path(path: &str) -> Self {
        let path = path.strip_prefix('/').unwrap_or(path);
        let (service, method) = path.split_once('/').unwrap_or(("", path));
        Self {
            service: clip(service).to_owned(),
            method: clip(method).to_owned(),
        }
    }

    /// Identity and reflection calls: frequent and uninteresting when they
    /// succeed.
    fn is_quiet(&self) -> bool {
        self.service == "csi.v1.Identity" || self.service.starts_with("grpc.reflection.")
    }

    fn span(&self, id: u64) -> Span {
        // Quiet calls get a DEBUG span so an INFO filter costs them nothing.
        macro_rules! rpc_span {
            ($level:expr) => {
                tracing::span!(
                    $level,
                    "rpc",
                    request_id = id,
                    service = %self.service,
                    method = %self.method,
                    volume_id = field::Empty,
                    snapshot_id = field::Empty,
                    name = field::Empty,
                )
            };
        }
        if self.is_quiet() {
            rpc_span!(Level::DEBUG)
        } else {
            rpc_span!(Level::INFO)
        }
    }
}

/// A call in flight; logs the outcome, or that the call was abandoned (its
/// metrics record, dropped unfinished, counts it as abandoned).
struct Pending {
    rpc: RpcName,
    started: Instant,
    span: Span,
    finished: bool,
    record: Option<RpcRecord>,
}

impl Pending {
    fn log_outcome(&self, status: Option<Status>) {
        let duration = self.started.elapsed();
        match status {
            None => {
                let level = if self.rpc.is_quiet() {
                    Level::DEBUG
                } else {
                    Level::INFO
                };
                log_at(level, Code::Ok, "", duration);
            }
            Some(status) => log_at(
                log_level(status.code()),
                status.code(),
                status.message(),
                duration,
            ),
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.finished {
            let _entered = self.span.enter();
            tracing::warn!(
                duration_ms = millis(self.started.elapsed()),
                "RPC abandoned before it finished: its deadline passed or the caller went away"
            );
        }
    }
}

/// Logs an RPC outcome at `level` (a runtime value; tracing's macros need
/// a constant one).
fn log_at(level: Level, code: Code, message: &str, duration: Duration) {
    let duration_ms = millis(duration);
    let code = format!("{code:?}");
    macro_rules! outcome {
        ($mac:ident) => {
            if message.is_empty() {
                tracing::$mac!(%code, duration_ms, "RPC finished")
            } else {
                tracing::$mac!(%code, duration_ms, error = %message, "RPC failed")
            }
        };
    }
    match level {
        Level::ERROR => outcome!(error),
        Level::WARN => outcome!(warn),
        Level::INFO => outcome!(info),
        Level::DEBUG => outcome!(debug),
        _ => outcome!(trace),
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// `value` cut to at most [`MAX_FIELD_BYTES`], on a character boundary.
fn clip(value: &str) -> &str {
    if value.len() <= MAX_FIELD_BYTES {
        return value;
    }
    let mut end = MAX_FIELD_BYTES;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}

/// A request message that may be logged: the ids it is about, and a copy
/// without secrets.
pub trait LoggedRequest: Debug + Sized {
    /// The volume the call is about (the source volume for CreateSnapshot);
    /// empty when none.
    fn volume_id(&self) -> &str {
        ""
    }

    /// The snapshot the call is about; empty when none.
    fn snapshot_id(&self) -> &str {
        ""
    }

    /// The CO's name for what is being created; empty when none.
    fn name(&self) -> &str {
        ""
    }

    /// A copy whose secret values are replaced by [`REDACTED`] (their keys
    /// are kept: which secrets came is worth knowing).
    fn redacted(&self) -> Self;
}

/// Records the request's ids on the current RPC span and logs the request
/// with its secrets redacted.
pub fn log_request<R: LoggedRequest>(request: &R) {
    let span = Span::current();
    for (field, value) in [
        ("volume_id", request.volume_id()),
        ("snapshot_id", request.snapshot_id()),
        ("name", request.name()),
    ] {
        if !value.is_empty() {
            // Debug formatting quotes and escapes: an id cannot forge a line.
            span.record(field, field::debug(clip(value)));
        }
    }
    tracing::info!(request = ?request.redacted(), "RPC request");
}

fn redact(secrets: &mut HashMap<String, String>) {
    for value in secrets.values_mut() {
        *value = REDACTED.to_owned();
    }
}

/// Implements [`LoggedRequest`] for requests of the served services, and
/// lists each one's secret fields in [`SECRET_FIELDS`].
macro_rules! logged_requests {
    ($(
        $ty:ident {
            $(volume: $vol:ident,)?
            $(snapshot: $snap:ident,)?
            $(name: $name:ident,)?
            secrets: [$($secret:ident),*] $(,)?
        }
    )*) => {
        $(
            impl LoggedRequest for csi::$ty {
                $(fn volume_id(&self) -> &str { &self.$vol })?
                $(fn snapshot_id(&self) -> &str { &self.$snap })?
                $(fn name(&self) -> &str { &self.$name })?
                fn redacted(&self) -> Self {
                    #[allow(unused_mut)]
                    let mut copy = self.clone();
                    $(redact(&mut copy.$secret);)*
                    copy
                }
            }
        )*

        /// Every request type that implements [`LoggedRequest`], with the
        /// fields its redacted copy blanks.
        pub const SECRET_FIELDS: &[(&str, &[&str])] = &[
            $((stringify!($ty), &[$(stringify!($secret)),*])),*
        ];
    };
}

logged_requests! {
    GetPluginInfoRequest { secrets: [] }
    GetPluginCapabilitiesRequest { secrets: [] }
    ProbeRequest { secrets: [] }

    CreateVolumeRequest { name: name, secrets: [secrets] }
    DeleteVolumeRequest { volume: volume_id, secrets: [secrets] }
    ControllerPublishVolumeRequest { volume: volume_id, secrets: [secrets] }
    ControllerUnpublishVolumeRequest { volume: volume_id, secrets: [secrets] }
    ValidateVolumeCapabilitiesRequest { volume: volume_id, secrets: [secrets] }
    ListVolumesRequest { secrets: [] }
    GetCapacityRequest { secrets: [] }
    ControllerGetCapabilitiesRequest { secrets: [] }
    CreateSnapshotRequest { volume: source_volume_id, name: name, secrets: [secrets] }
    DeleteSnapshotRequest { snapshot: snapshot_id, secrets: [secrets] }
    ListSnapshotsRequest {
        volume: source_volume_id,
        snapshot: snapshot_id,
        secrets: [secrets],
    }
    GetSnapshotRequest { snapshot: snapshot_id, secrets: [secrets] }
    ControllerExpandVolumeRequest { volume: volume_id, secrets: [secrets] }
    ControllerGetVolumeRequest { volume: volume_id, secrets: [] }
    ControllerModifyVolumeRequest { volume: volume_id, secrets: [secrets] }

    NodeStageVolumeRequest { volume: volume_id, secrets: [secrets] }
    NodeUnstageVolumeRequest { volume: volume_id, secrets: [] }
    NodePublishVolumeRequest { volume: volume_id, secrets: [secrets] }
    NodeUnpublishVolumeRequest { volume: volume_id, secrets: [] }
    NodeGetVolumeStatsRequest { volume: volume_id, secrets: [] }
    NodeExpandVolumeRequest { volume: volume_id, secrets: [secrets] }
    NodeGetCapabilitiesRequest { secrets: [] }
    NodeGetInfoRequest { secrets: [] }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    const CSI_PROTO: &str = include_str!("../proto/csi.proto");

    /// The services this crate serves.
    const SERVED: [&str; 3] = ["Identity", "Controller", "Node"];

    /// Request types of the served services' RPCs, read from csi.proto.
    fn served_requests() -> BTreeSet<String> {
        let mut current: Option<&str> = None;
        let mut requests = BTreeSet::new();
        for line in CSI_PROTO.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("service ") {
                current = rest.split_whitespace().next();
            } else if line.starts_with('}') {
                current = None;
            } else if let (Some(service), Some(rest)) = (current, line.strip_prefix("rpc "))
                && SERVED.contains(&service)
            {
                let input = rest
                    .split_once('(')
                    .and_then(|(_, r)| r.split_once(')'))
                    .map(|(t, _)| t.trim().to_owned())
                    .expect("rpc line names its request type");
                requests.insert(input);
            }
        }
        requests
    }

    /// Every field marked `(csi_secret) = true`, by its (innermost) message.
    fn secret_fields_in_proto() -> BTreeMap<String, BTreeSet<String>> {
        let mut stack: Vec<(String, usize)> = Vec::new();
        let mut depth = 0usize;
        let mut secrets: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut previous = "";
        for line in CSI_PROTO.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("message ") {
                let name = rest.split_whitespace().next().unwrap().to_owned();
                stack.push((name, depth));
            }
            if line.contains("(csi_secret) = true") {
                // Options may continue a declaration from the line before.
                let declaration = if line.starts_with('[') {
                    previous
                } else {
                    line
                };
                let field = declaration
                    .split_once(" = ")
                    .and_then(|(decl, _)| decl.split_whitespace().last())
                    .expect("a field declaration");
                let message = stack
                    .last()
                    .expect("secret field inside a message")
                    .0
                    .clone();
                secrets.entry(message).or_default().insert(field.to_owned());
            }
            previous = line;
            depth += line.matches('{').count();
            depth -= line.matches('}').count();
            while stack.last().is_some_and(|(_, d)| *d >= depth) {
                stack.pop();
            }
        }
        secrets
    }

    #[test]
    fn every_served_request_is_logged_through_a_redacting_copy() {
        let logged: BTreeSet<String> = SECRET_FIELDS.iter().map(|(t, _)| t.to_string()).collect();
        let served = served_requests();
        assert!(served.len() > 20, "only {} requests found", served.len());
        let missing: Vec<_> = served.difference(&logged).collect();
        assert!(
            missing.is_empty(),
            "requests without LoggedRequest: {missing:?}"
        );
    }

    #[test]
    fn every_csi_secret_field_of_a_logged_request_is_redacted() {
        let proto = secret_fields_in_proto();
        assert!(
            proto.len() > 10,
            "only {} messages with secrets",
            proto.len()
        );
        for (message, fields) in SECRET_FIELDS {
            let expected = proto.get(*message).cloned().unwrap_or_default();
            let redacted: BTreeSet<String> = fields.iter().map(|f| f.to_string()).collect();
            assert_eq!(redacted, expected, "secret fields of {message}");
        }
    }

    fn secret_map() -> HashMap<String, String> {
        [("password".to_string(), "hunter2-top-secret".to_string())].into()
    }

    #[test]
    fn redacted_copies_keep_keys_and_ids_but_not_values() {
        let request = csi::NodeStageVolumeRequest {
            volume_id: "vol-1".into(),
            staging_target_path: "/stage".into(),
            secrets: secret_map(),
            ..Default::default()
        };
        let text = format!("{:?}", request.redacted());
        assert!(!text.contains("hunter2-top-secret"), "{text}");
        assert!(text.contains("password"), "{text}");
        assert!(text.contains(REDACTED), "{text}");
        assert!(text.contains("vol-1"), "{text}");
        // The original is untouched: the backend still gets the secret.
        assert_eq!(request.secrets["password"], "hunter2-top-secret");
        assert_eq!(request.volume_id(), "vol-1");
    }

    #[test]
    fn ids_come_from_the_fields_the_request_names() {
        let snap = csi::CreateSnapshotRequest {
            source_volume_id: "vol-9".into(),
            name: "snap-name".into(),
            ..Default::default()
        };
        assert_eq!(
            (snap.volume_id(), snap.snapshot_id(), snap.name()),
            ("vol-9", "", "snap-name")
        );
        let list = csi::ListSnapshotsRequest {
            snapshot_id: "s-1".into(),
            ..Default::default()
        };
        assert_eq!((list.volume_id(), list.snapshot_id()), ("", "s-1"));
    }

    #[test]
    fn rpc_paths_split_into_service_and_method() {
        let rpc = RpcName::from_path("/csi.v1.Controller/CreateVolume");
        assert_eq!(
            (rpc.service.as_str(), rpc.method.as_str()),
            ("csi.v1.Controller", "CreateVolume")
        );
        assert!(!rpc.is_quiet());
        assert!(RpcName::from_path("/csi.v1.Identity/Probe").is_quiet());
        assert!(
            RpcName::from_path("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo")
                .is_quiet()
        );
        let odd = RpcName::from_path("nonsense");
        assert_eq!(
            (odd.service.as_str(), odd.method.as_str()),
            ("", "nonsense")
        );
    }

    #[test]
    fn long_values_are_clipped_on_a_character_boundary() {
        let long = "é".repeat(MAX_FIELD_BYTES);
        let clipped = clip(&long);
        assert!(clipped.len() <= MAX_FIELD_BYTES);
        assert!(clipped.len() >= MAX_FIELD_BYTES - 1);
        assert_eq!(clip("short"), "short");
    }

    #[test]
    fn an_error_in_the_headers_is_the_outcome_and_ok_is_none() {
        let mut headers = http::HeaderMap::new();
        assert!(grpc_status(&headers).is_none());
        Status::not_found("volume x")
            .add_header(&mut headers)
            .unwrap();
        let status = grpc_status(&headers).unwrap();
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.message(), "volume x");
    }

    /// Runs `call` against the layer wrapped around `inner` under a
    /// capturing subscriber, returning what was logged.
    fn logged_by<S>(inner: S, path: &'static str, limit: Duration) -> String
    where
        S: Service<http::Request<()>, Response = http::Response<()>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Debug,
    {
        use std::sync::Mutex;
        let buffer = Arc::new(Mutex::new(Vec::<u8>::new()));
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(Level::TRACE)
            .with_ansi(false)
            .with_writer(move || WriteTo(writer.clone()))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap();
            runtime.block_on(async {
                let mut service = RpcLogLayer::new().layer(inner);
                let request = http::Request::builder().uri(path).body(()).unwrap();
                let _ = tokio::time::timeout(limit, service.call(request)).await;
            });
        });
        String::from_utf8(buffer.lock().unwrap().clone()).unwrap()
    }

    struct WriteTo(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for WriteTo {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn an_error_status_is_logged_with_its_code_at_its_level() {
        let failing = tower::service_fn(|_: http::Request<()>| async {
            Ok::<_, std::convert::Infallible>(
                Status::internal("quota table unreadable").into_http::<()>(),
            )
        });
        let log = logged_by(
            failing,
            "/csi.v1.Controller/CreateVolume",
            Duration::from_secs(5),
        );
        let line = log
            .lines()
            .find(|l| l.contains("RPC failed"))
            .unwrap_or_else(|| panic!("{log}"));
        assert!(line.contains("ERROR"), "{line}");
        assert!(line.contains("code=Internal"), "{line}");
        assert!(line.contains("quota table unreadable"), "{line}");
        assert!(line.contains("method=CreateVolume"), "{line}");
        assert!(line.contains("request_id=1"), "{line}");
    }

    #[test]
    fn a_call_dropped_before_it_finishes_is_logged_as_abandoned() {
        let stuck = tower::service_fn(|_: http::Request<()>| {
            std::future::pending::<Result<http::Response<()>, std::convert::Infallible>>()
        });
        let log = logged_by(
            stuck,
            "/csi.v1.Node/NodeStageVolume",
            Duration::from_millis(20),
        );
        let line = log
            .lines()
            .find(|l| l.contains("abandoned"))
            .unwrap_or_else(|| panic!("{log}"));
        assert!(line.contains("WARN"), "{line}");
        assert!(line.contains("method=NodeStageVolume"), "{line}");
        assert!(!log.contains("RPC finished"), "{log}");
    }

    #[test]
    fn the_layer_counts_every_outcome_in_its_metrics() {
        use crate::metrics::ExpositionFormat;
        let metrics = Arc::new(crate::metrics::CsiMetrics::new("test.example.com"));
        let layer = RpcLogLayer::new().with_metrics(metrics.clone());
        let request = |path: &str| http::Request::builder().uri(path).body(()).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            let ok = tower::service_fn(|_: http::Request<()>| async {
                Ok::<_, std::convert::Infallible>(http::Response::new(()))
            });
            let not_found = tower::service_fn(|_: http::Request<()>| async {
                Ok::<_, std::convert::Infallible>(
                    Status::not_found("no such volume").into_http::<()>(),
                )
            });
            let stuck = tower::service_fn(|_: http::Request<()>| {
                std::future::pending::<Result<http::Response<()>, std::convert::Infallible>>()
            });
            for _ in 0..2 {
                let mut service = layer.layer(ok);
                service
                    .call(request("/csi.v1.Node/NodeGetVolumeStats"))
                    .await
                    .unwrap();
            }
            let mut service = layer.layer(not_found);
            service
                .call(request("/csi.v1.Controller/DeleteVolume"))
                .await
                .unwrap();
            let mut service = layer.layer(stuck);
            let call = service.call(request("/csi.v1.Node/NodeStageVolume"));
            assert!(
                tokio::time::timeout(Duration::from_millis(20), call)
                    .await
                    .is_err()
            );
        });
        let text = metrics.encode(ExpositionFormat::OpenMetrics);
        for expected in [
            r#"pfs_csi_rpc_total{method="NodeGetVolumeStats",code="OK"} 2"#,
            r#"pfs_csi_rpc_total{method="DeleteVolume",code="NotFound"} 1"#,
            r#"pfs_csi_rpc_total{method="NodeStageVolume",code="Canceled"} 1"#,
            r#"pfs_csi_rpc_in_flight{method="NodeStageVolume"} 0"#,
        ] {
            assert!(text.lines().any(|l| l == expected), "{expected} in\n{text}");
        }
    }

    #[test]
    fn a_successful_probe_is_logged_at_debug() {
        let ok = tower::service_fn(|_: http::Request<()>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(()))
        });
        let log = logged_by(ok, "/csi.v1.Identity/Probe", Duration::from_secs(5));
        let line = log
            .lines()
            .find(|l| l.contains("RPC finished"))
            .unwrap_or_else(|| panic!("{log}"));
        assert!(line.contains("DEBUG"), "{line}");
        assert!(line.contains("code=Ok"), "{line}");
    }
}
