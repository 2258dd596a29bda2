//! The metrics endpoint served beside the real CSI server, as the binaries
//! run them (`csi_server::run_with_metrics`), over the mocked backend:
//! calls made over the unix socket show up in `/metrics`, fetched over
//! loopback HTTP, with exact values and labels.

mod common;

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    path::Path,
    sync::{Arc, atomic::Ordering},
    time::Instant,
};

use common::{DRIVER, FakeState, TIMEOUT, VOLUME_PREFIX, config, controller, node, rwx};
use csi_core::domain::GIB;
use k8s_adapter::{
    AdapterError, csi_server,
    endpoint::SocketEndpoint,
    identity::VENDOR_VERSION,
    metrics::{CsiMetrics, endpoint::MetricsEndpoint},
    proto::csi::v1::{
        self as csi, controller_client::ControllerClient, identity_client::IdentityClient,
        node_client::NodeClient,
    },
    socket_client,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::oneshot,
};
use tonic::{Code, transport::Channel};

/// An HTTP answer: status code, headers (lower-case names), body.
struct HttpAnswer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl HttpAnswer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The sample lines of an exposition.
    fn samples(&self) -> Vec<&str> {
        self.body.lines().filter(|l| !l.starts_with('#')).collect()
    }

    /// The samples of metric `name` (with any labels).
    fn samples_of(&self, name: &str) -> BTreeSet<String> {
        self.samples()
            .into_iter()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|r| r.starts_with(['{', ' ']))
            })
            .map(str::to_owned)
            .collect()
    }
}

/// One HTTP/1.1 request over loopback; the server closes after answering.
async fn http_get(address: SocketAddr, path: &str, accept: Option<&str>) -> HttpAnswer {
    let mut stream = tokio::time::timeout(TIMEOUT, TcpStream::connect(address))
        .await
        .expect("connects in time")
        .expect("connects");
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {address}\r\n{accept}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut raw))
        .await
        .expect("answers in time")
        .unwrap();
    let raw = String::from_utf8(raw).expect("UTF-8 answer");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a header block");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    HttpAnswer {
        status,
        headers,
        body: body.to_owned(),
    }
}

const OPENMETRICS: &str = "application/openmetrics-text;version=1.0.0,text/plain;q=0.5";

async fn scrape(address: SocketAddr) -> HttpAnswer {
    let answer = http_get(address, "/metrics", Some(OPENMETRICS)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer
}

/// Waits for the server to create its socket.
async fn wait_for_socket(path: &Path) {
    let deadline = Instant::now() + TIMEOUT;
    while !path.exists() {
        assert!(Instant::now() < deadline, "no socket at {}", path.display());
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

fn set(lines: &[&str]) -> BTreeSet<String> {
    lines.iter().map(|l| l.to_string()).collect()
}

/// A node server on `socket` as the binaries run it, without a metrics endpoint: the
/// signal that stops it and its task.
fn serve_node(
    state: &Arc<FakeState>,
    socket: &Path,
) -> (
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), AdapterError>>,
) {
    let endpoint = SocketEndpoint::parse(&format!("unix://{}", socket.display())).unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let node = node(state);
    let server = tokio::spawn(async move {
        let options = csi_server::ServeOptions::default();
        csi_server::run_with_metrics(&endpoint, config(), None, Some(node), options, async {
            stopped.await.ok();
        })
        .await
    });
    (stop, server)
}

/// The first readiness check runs while the server binds its socket, not after: on the
/// node's current-thread runtime a tool it runs (Lustre's `lctl`) would otherwise add its
/// whole run to the start-up.
#[tokio::test(flavor = "current_thread")]
async fn the_first_readiness_check_starts_before_the_socket_is_bound() {
    let state = FakeState::ready();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("csi.sock");
    *state.watched_path.lock().unwrap() = Some(socket.clone());
    let (stop, server) = serve_node(&state, &socket);
    wait_for_socket(&socket).await;
    state.wait_for_first_readiness_check().await;
    assert_eq!(
        *state.watched_path_at_first_check.lock().unwrap(),
        Some(false),
        "the first readiness check ran after the socket was bound"
    );
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn calls_over_the_socket_are_counted_and_served_over_http() {
    let state = Arc::new(FakeState::default()); // not ready at first
    let dir = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let socket = dir.path().join("csi.sock");
    let endpoint = SocketEndpoint::parse(&format!("unix://{}", socket.display())).unwrap();
    let metrics = Arc::new(CsiMetrics::new(DRIVER));
    let http = MetricsEndpoint::bind("127.0.0.1:0".parse().unwrap(), metrics)
        .await
        .unwrap();
    let address = http.local_addr();
    assert!(address.ip().is_loopback() && address.port() != 0);
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn({
        let (controller, node) = (controller(&state), node(&state));
        async move {
            csi_server::run_with_metrics(
                &endpoint,
                config(),
                Some(controller),
                Some(node),
                csi_server::ServeOptions {
                    metrics: Some(http),
                    reflection: false,
                },
                async {
                    stopped.await.ok();
                },
            )
            .await
        }
    });
    wait_for_socket(&socket).await;
    let channel: Channel = socket_client::connect(&socket, TIMEOUT).await.unwrap();
    let mut identity = IdentityClient::new(channel.clone());
    let mut controller = ControllerClient::new(channel.clone());
    let mut node = NodeClient::new(channel);

    // Before any call: build info, no call counted.
    let first = scrape(address).await;
    assert_eq!(
        first.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert!(first.body.ends_with("# EOF\n"), "{}", first.body);
    assert_eq!(
        first.samples_of("pfs_csi_build_info"),
        set(&[&format!(
            r#"pfs_csi_build_info{{version="{VENDOR_VERSION}",driver="{DRIVER}"}} 1"#
        )])
    );
    assert!(first.samples_of("pfs_csi_rpc_total").is_empty());

    // Probe while the backend is missing a tool, then once it is fixed.
    let probe = || csi::ProbeRequest {};
    let answer = identity.probe(probe()).await.unwrap().into_inner();
    assert_eq!(answer.ready, Some(false));
    assert_eq!(
        scrape(address).await.samples_of("pfs_csi_backend_ready"),
        set(&[r#"pfs_csi_backend_ready{backend="mockfs"} 0"#])
    );
    state.ready.store(true, Ordering::SeqCst);
    let answer = identity.probe(probe()).await.unwrap().into_inner();
    assert_eq!(answer.ready, Some(true));

    // One volume created, one refused for an unknown parameter.
    controller
        .create_volume(csi::CreateVolumeRequest {
            name: "pvc-1".into(),
            volume_capabilities: vec![rwx()],
            ..Default::default()
        })
        .await
        .unwrap();
    let refused = controller
        .create_volume(csi::CreateVolumeRequest {
            name: "pvc-2".into(),
            volume_capabilities: vec![rwx()],
            parameters: [("colour".to_string(), "blue".to_string())].into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");

    // Staged, published, and asked about on the node.
    let volume_id = format!("{VOLUME_PREFIX}pvc-1");
    let staging = scratch.path().join("staging");
    std::fs::create_dir(&staging).unwrap();
    let staging = staging.to_str().unwrap().to_owned();
    let target = scratch.path().join("target").to_str().unwrap().to_owned();
    node.node_stage_volume(csi::NodeStageVolumeRequest {
        volume_id: volume_id.clone(),
        staging_target_path: staging.clone(),
        volume_capability: Some(rwx()),
        ..Default::default()
    })
    .await
    .unwrap();
    node.node_publish_volume(csi::NodePublishVolumeRequest {
        volume_id: volume_id.clone(),
        staging_target_path: staging.clone(),
        target_path: target.clone(),
        volume_capability: Some(rwx()),
        ..Default::default()
    })
    .await
    .unwrap();
    let stats = node
        .node_get_volume_stats(csi::NodeGetVolumeStatsRequest {
            volume_id: volume_id.clone(),
            volume_path: target.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let bytes = stats
        .usage
        .iter()
        .find(|u| u.unit == csi::volume_usage::Unit::Bytes as i32)
        .expect("byte usage");

    let answer = scrape(address).await;
    assert_eq!(
        answer.samples_of("pfs_csi_rpc_total"),
        set(&[
            r#"pfs_csi_rpc_total{method="Probe",code="OK"} 2"#,
            r#"pfs_csi_rpc_total{method="CreateVolume",code="OK"} 1"#,
            r#"pfs_csi_rpc_total{method="CreateVolume",code="InvalidArgument"} 1"#,
            r#"pfs_csi_rpc_total{method="NodeStageVolume",code="OK"} 1"#,
            r#"pfs_csi_rpc_total{method="NodePublishVolume",code="OK"} 1"#,
            r#"pfs_csi_rpc_total{method="NodeGetVolumeStats",code="OK"} 1"#,
        ]),
        "{}",
        answer.body
    );
    assert!(
        answer
            .samples()
            .contains(&r#"pfs_csi_rpc_duration_seconds_count{method="CreateVolume"} 2"#),
        "{}",
        answer.body
    );
    assert!(
        answer
            .samples()
            .contains(&r#"pfs_csi_rpc_duration_seconds_bucket{le="+Inf",method="Probe"} 2"#),
        "{}",
        answer.body
    );
    // Nothing is in flight between calls.
    for line in answer.samples_of("pfs_csi_rpc_in_flight") {
        assert!(line.ends_with(" 0"), "{line}");
    }
    assert_eq!(answer.samples_of("pfs_csi_rpc_in_flight").len(), 5);
    assert_eq!(
        answer.samples_of("pfs_csi_backend_ready"),
        set(&[r#"pfs_csi_backend_ready{backend="mockfs"} 1"#])
    );
    // The usage is what NodeGetVolumeStats answered.
    let label = format!(r#"{{volume_id="{volume_id}"}}"#);
    assert_eq!(
        answer.samples_of("pfs_csi_volume_capacity_bytes"),
        set(&[&format!(
            "pfs_csi_volume_capacity_bytes{label} {}",
            bytes.total
        )])
    );
    assert_eq!(bytes.total, 10 * GIB as i64);
    for (name, value) in [
        ("pfs_csi_volume_used_bytes", bytes.used),
        ("pfs_csi_volume_available_bytes", bytes.available),
        ("pfs_csi_volume_inodes", 1000),
        ("pfs_csi_volume_inodes_used", 10),
        ("pfs_csi_volume_inodes_available", 990),
        ("pfs_csi_volume_abnormal", 0),
    ] {
        assert_eq!(
            answer.samples_of(name),
            set(&[&format!("{name}{label} {value}")]),
            "{}",
            answer.body
        );
    }

    // Once unstaged, the volume's usage goes.
    node.node_unpublish_volume(csi::NodeUnpublishVolumeRequest {
        volume_id: volume_id.clone(),
        target_path: target,
    })
    .await
    .unwrap();
    node.node_unstage_volume(csi::NodeUnstageVolumeRequest {
        volume_id: volume_id.clone(),
        staging_target_path: staging,
    })
    .await
    .unwrap();
    // Without an OpenMetrics Accept header: the classic text format.
    let text = http_get(address, "/metrics", None).await;
    assert_eq!(text.status, 200);
    assert_eq!(
        text.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(!text.body.contains(&volume_id), "{}", text.body);
    assert!(text.body.contains("# TYPE pfs_csi_rpc_total counter\n"));
    assert!(
        text.samples()
            .contains(&r#"pfs_csi_rpc_total{method="NodeUnstageVolume",code="OK"} 1"#),
        "{}",
        text.body
    );

    let health = http_get(address, "/healthz", None).await;
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    assert_eq!(http_get(address, "/secrets", None).await.status, 404);

    // One shutdown ends both servers.
    stop.send(()).unwrap();
    tokio::time::timeout(TIMEOUT, server)
        .await
        .expect("servers stop in time")
        .unwrap()
        .unwrap();
    assert!(!socket.exists(), "the socket is removed");
    assert!(
        TcpStream::connect(address).await.is_err(),
        "the metrics port is closed"
    );
}

#[tokio::test]
async fn a_taken_metrics_port_is_an_error_naming_it() {
    let metrics = Arc::new(CsiMetrics::new(DRIVER));
    let first = MetricsEndpoint::bind("127.0.0.1:0".parse().unwrap(), metrics.clone())
        .await
        .unwrap();
    let error = MetricsEndpoint::bind(first.local_addr(), metrics)
        .await
        .unwrap_err();
    assert!(
        matches!(error, AdapterError::MetricsEndpoint { .. }),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(
        text.contains(&first.local_addr().to_string()) && text.contains("cannot listen"),
        "{text}"
    );
}

#[tokio::test]
async fn without_a_metrics_endpoint_the_server_runs_as_before() {
    let state = FakeState::ready();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("csi.sock");
    let (stop, server) = serve_node(&state, &socket);
    wait_for_socket(&socket).await;
    let channel = socket_client::connect(&socket, TIMEOUT).await.unwrap();
    let answer = IdentityClient::new(channel)
        .probe(csi::ProbeRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.ready, Some(true));
    stop.send(()).unwrap();
    tokio::time::timeout(TIMEOUT, server)
        .await
        .expect("server stops in time")
        .unwrap()
        .unwrap();
}
