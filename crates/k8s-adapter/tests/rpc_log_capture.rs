//! What the server logs, captured at TRACE from every crate (tonic, h2 and
//! hyper included): a span per RPC with the request id, method and volume
//! id; the outcome with its code; and never a secret value, although the
//! secrets do reach the backend. Kept in its own test binary with a single
//! test because the capturing subscriber is process-wide.

mod common;

use std::{
    io::Write,
    sync::{Arc, Mutex},
};

use common::*;
use k8s_adapter::proto::csi::v1 as csi;
use tracing_subscriber::fmt::MakeWriter;

/// Everything written to the log, shared with the test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Secret values used below; none may appear in the log.
const SECRET_VALUES: [&str; 4] = [
    "create-secret-hunter2",
    "stage-secret-correcthorse",
    "publish-secret-batterystaple",
    "snapshot-secret-tr0ub4dor",
];

fn secrets(value: &str) -> std::collections::HashMap<String, String> {
    [("connAuth".to_string(), value.to_string())].into()
}

#[tokio::test]
async fn rpc_logs_carry_ids_and_codes_but_never_secret_values() {
    let captured = Captured::default();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(captured.clone())
        .init();

    let state = FakeState::ready();
    let harness = Harness::both(&state);
    let mut controller = harness.controller().await;
    let mut node = harness.node().await;

    let mut create = create_request("pvc-logged");
    create.secrets = secrets(SECRET_VALUES[0]);
    let volume_id = controller
        .create_volume(create)
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap()
        .volume_id;

    let staging = harness.scratch_path("staging");
    std::fs::create_dir(&staging).unwrap();
    node.node_stage_volume(csi::NodeStageVolumeRequest {
        volume_id: volume_id.clone(),
        staging_target_path: staging.clone(),
        volume_capability: Some(rwx()),
        secrets: secrets(SECRET_VALUES[1]),
        ..Default::default()
    })
    .await
    .unwrap();
    // A failing call with secrets: they stay out of the error path's logs too.
    let failed = node
        .node_publish_volume(csi::NodePublishVolumeRequest {
            volume_id: volume_id.clone(),
            staging_target_path: staging.clone(),
            volume_capability: Some(rwx()),
            secrets: secrets(SECRET_VALUES[2]),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(failed.code(), tonic::Code::InvalidArgument);
    controller
        .create_snapshot(csi::CreateSnapshotRequest {
            source_volume_id: volume_id.clone(),
            name: "snap-logged".into(),
            secrets: secrets(SECRET_VALUES[3]),
            ..Default::default()
        })
        .await
        .unwrap();
    harness
        .identity()
        .await
        .probe(csi::ProbeRequest {})
        .await
        .unwrap();
    harness.stop().await;

    let log = captured.text();
    for value in SECRET_VALUES {
        assert!(!log.contains(value), "secret {value} logged:\n{log}");
    }
    // The backend still got every secret the calls that reached it carried.
    let seen = state.seen_secrets.lock().unwrap().clone();
    for value in [SECRET_VALUES[0], SECRET_VALUES[1], SECRET_VALUES[3]] {
        assert!(
            seen.iter().any(|(k, v)| k == "connAuth" && v == value),
            "{value} did not reach the backend: {seen:?}"
        );
    }

    // Requests are logged, redacted, inside a span naming the method and
    // volume.
    let create_line = log
        .lines()
        .find(|l| l.contains("RPC request") && l.contains("method=CreateVolume"))
        .unwrap_or_else(|| panic!("no CreateVolume request line:\n{log}"));
    assert!(create_line.contains("request_id="), "{create_line}");
    assert!(create_line.contains("<redacted>"), "{create_line}");
    assert!(create_line.contains("connAuth"), "{create_line}");
    assert!(create_line.contains(" INFO "), "{create_line}");
    let stage_done = log
        .lines()
        .find(|l| l.contains("RPC finished") && l.contains("method=NodeStageVolume"))
        .unwrap_or_else(|| panic!("no NodeStageVolume outcome:\n{log}"));
    assert!(
        stage_done.contains(&format!("volume_id=\"{volume_id}\"")),
        "{stage_done}"
    );
    assert!(stage_done.contains("code=Ok"), "{stage_done}");
    assert!(stage_done.contains("duration_ms="), "{stage_done}");

    // A client error is logged at WARN with its code and message.
    let publish_failed = log
        .lines()
        .find(|l| l.contains("RPC failed") && l.contains("method=NodePublishVolume"))
        .unwrap_or_else(|| panic!("no NodePublishVolume failure:\n{log}"));
    assert!(publish_failed.contains(" WARN "), "{publish_failed}");
    assert!(
        publish_failed.contains("code=InvalidArgument"),
        "{publish_failed}"
    );
    assert!(publish_failed.contains("target_path"), "{publish_failed}");

    // Probe is logged at DEBUG only.
    let probe_done = log
        .lines()
        .find(|l| l.contains("RPC finished") && l.contains("method=Probe"))
        .unwrap_or_else(|| panic!("no Probe outcome:\n{log}"));
    assert!(probe_done.contains(" DEBUG "), "{probe_done}");

    // Each RPC got its own request id.
    let ids: std::collections::BTreeSet<&str> = log
        .lines()
        .filter(|l| l.contains("RPC finished") || l.contains("RPC failed"))
        .filter_map(|l| l.split("request_id=").nth(1)?.split([' ', '}']).next())
        .collect();
    assert!(ids.len() >= 5, "request ids {ids:?} in:\n{log}");
}
