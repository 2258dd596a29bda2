//! The foundation's promises, checked through the real controller and node binaries on the
//! simulated Lustre filesystem: every Identity RPC, the capability RPCs, the codes of
//! malformed requests, socket permissions, graceful shutdown and stale sockets.

use std::collections::BTreeSet;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::sync::OnceLock;
use std::time::Duration;

use nix::sys::signal::Signal;
use pb::controller_service_capability::rpc::Type as ControllerCap;
use pb::node_service_capability::rpc::Type as NodeCap;
use pb::plugin_capability::service::Type as PluginService;
use pb::volume_capability::access_mode::Mode;
use pfs_csi_tests::csi::{
    self, GIB, block_capability, create_request, delete_request, expect_status, rwx,
};
use pfs_csi_tests::plugin::{PluginProcess, Role};
use pfs_csi_tests::proto::v1 as pb;
use pfs_csi_tests::serve::shared;
use pfs_csi_tests::{Serve, ServeOptions};
use pfs_sim::faults::{FaultAction, FaultRule};
use tonic::Code;

static SERVE: OnceLock<Serve> = OnceLock::new();

fn serve() -> &'static Serve {
    shared(&SERVE, ServeOptions::lustre)
}

fn plugin_services(caps: &pb::GetPluginCapabilitiesResponse) -> BTreeSet<i32> {
    caps.capabilities
        .iter()
        .filter_map(|c| match &c.r#type {
            Some(pb::plugin_capability::Type::Service(s)) => Some(s.r#type),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn every_identity_rpc_answers_on_both_sockets() {
    let serve = serve();
    for (socket, is_controller) in [
        (serve.controller_socket(), true),
        (serve.node_socket(), false),
    ] {
        let mut identity = csi::identity(&socket).await;
        let info = identity
            .get_plugin_info(pb::GetPluginInfoRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(info.name, "pfs-csi.io");
        assert!(
            !info.vendor_version.is_empty(),
            "the spec requires a vendor version"
        );
        let ready = identity
            .probe(pb::ProbeRequest {})
            .await
            .unwrap()
            .into_inner()
            .ready;
        assert_ne!(ready, Some(false), "{} not ready", socket.display());
        let caps = identity
            .get_plugin_capabilities(pb::GetPluginCapabilitiesRequest {})
            .await
            .unwrap()
            .into_inner();
        let services = plugin_services(&caps);
        assert_eq!(
            services.contains(&(PluginService::ControllerService as i32)),
            is_controller,
            "{}: {services:?}",
            socket.display()
        );
    }
}

#[tokio::test]
async fn lustre_readiness_reads_the_client_version_file_and_spawns_nothing() {
    // A serve of its own: the shared one's calls log holds other tests' tool runs.
    let serve = Serve::start(ServeOptions::lustre());
    for socket in [serve.controller_socket(), serve.node_socket()] {
        let mut identity = csi::identity(&socket).await;
        let ready = identity.probe(pb::ProbeRequest {}).await.unwrap();
        assert_eq!(ready.into_inner().ready, Some(true), "{}", socket.display());
    }
    let calls = serve.calls_log();
    assert!(
        !calls.contains("\"tool\":\"lctl\""),
        "Probe started lctl although the client's version file is readable: {calls}"
    );
}

#[tokio::test]
async fn capability_rpcs_list_what_each_plugin_implements() {
    let serve = serve();
    let controller: BTreeSet<i32> = serve
        .controller()
        .await
        .controller_get_capabilities(pb::ControllerGetCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner()
        .capabilities
        .iter()
        .filter_map(|c| {
            c.r#type
                .as_ref()
                .map(|pb::controller_service_capability::Type::Rpc(rpc)| rpc.r#type)
        })
        .collect();
    for needed in [
        ControllerCap::CreateDeleteVolume,
        ControllerCap::ListVolumes,
        ControllerCap::GetCapacity,
        ControllerCap::CreateDeleteSnapshot,
        ControllerCap::ListSnapshots,
        ControllerCap::CloneVolume,
        ControllerCap::ExpandVolume,
        ControllerCap::GetVolume,
        ControllerCap::VolumeCondition,
    ] {
        assert!(
            controller.contains(&(needed as i32)),
            "{needed:?} missing from {controller:?}"
        );
    }
    assert!(
        !controller.contains(&(ControllerCap::PublishUnpublishVolume as i32)),
        "a shared filesystem has nothing to attach"
    );

    let mut node = serve.node().await;
    let node_caps: BTreeSet<i32> = node
        .node_get_capabilities(pb::NodeGetCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner()
        .capabilities
        .iter()
        .filter_map(|c| {
            c.r#type
                .as_ref()
                .map(|pb::node_service_capability::Type::Rpc(rpc)| rpc.r#type)
        })
        .collect();
    for needed in [
        NodeCap::StageUnstageVolume,
        NodeCap::GetVolumeStats,
        NodeCap::VolumeCondition,
    ] {
        assert!(
            node_caps.contains(&(needed as i32)),
            "{needed:?} missing from {node_caps:?}"
        );
    }
    let info = node
        .node_get_info(pb::NodeGetInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.node_id, serve.options().node_id);

    // Each socket serves its own services only.
    let mut wrong = csi::controller(&serve.node_socket()).await;
    let status = wrong
        .controller_get_capabilities(pb::ControllerGetCapabilitiesRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
}

#[tokio::test]
async fn malformed_create_volume_requests_are_invalid_argument_and_create_nothing() {
    let serve = serve();
    let mut client = serve.controller().await;

    let mut empty_name = create_request("x", GIB, &[]);
    empty_name.name.clear();
    expect_status(
        client.create_volume(empty_name).await,
        Code::InvalidArgument,
        "name",
    );

    let mut no_caps = create_request("malformed-1", GIB, &[]);
    no_caps.volume_capabilities.clear();
    expect_status(
        client.create_volume(no_caps).await,
        Code::InvalidArgument,
        "volume_capabilities",
    );

    let mut block = create_request("malformed-1", GIB, &[]);
    block.volume_capabilities = vec![block_capability(Mode::SingleNodeWriter)];
    expect_status(
        client.create_volume(block).await,
        Code::InvalidArgument,
        "volume_capabilities[0]",
    );

    expect_status(
        client
            .create_volume(create_request("malformed-1", GIB, &[("colour", "blue")]))
            .await,
        Code::InvalidArgument,
        "colour",
    );

    let listed = client
        .list_volumes(pb::ListVolumesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(
        !listed
            .entries
            .iter()
            .filter_map(|e| e.volume.as_ref())
            .any(|v| v.volume_id.contains("malformed-1")),
        "a refused request created a volume: {listed:?}"
    );
    let data = serve.fs_data_dir(pfs_sim::state::FsKind::Lustre, "simfs1");
    assert!(!data.join("malformed-1").exists());
}

#[tokio::test]
async fn malformed_controller_requests_get_the_spec_codes() {
    let serve = serve();
    let mut client = serve.controller().await;
    let unknown = "no-backend-knows-this-id";

    expect_status(
        client.delete_volume(delete_request("")).await,
        Code::InvalidArgument,
        "volume_id",
    );
    // A volume that cannot exist is already deleted (DeleteVolume is idempotent).
    client.delete_volume(delete_request(unknown)).await.unwrap();
    expect_status(
        client.delete_volume(delete_request("exa1:/a/../b")).await,
        Code::InvalidArgument,
        "volume_id",
    );
    expect_status(
        client
            .validate_volume_capabilities(pb::ValidateVolumeCapabilitiesRequest {
                volume_id: unknown.into(),
                volume_capabilities: vec![rwx()],
                ..Default::default()
            })
            .await,
        Code::NotFound,
        unknown,
    );
    expect_status(
        client
            .validate_volume_capabilities(pb::ValidateVolumeCapabilitiesRequest {
                volume_capabilities: vec![rwx()],
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "volume_id",
    );
    expect_status(
        client
            .controller_get_volume(pb::ControllerGetVolumeRequest {
                volume_id: unknown.into(),
            })
            .await,
        Code::NotFound,
        unknown,
    );
    expect_status(
        client
            .controller_expand_volume(pb::ControllerExpandVolumeRequest {
                volume_id: unknown.into(),
                capacity_range: Some(pb::CapacityRange {
                    required_bytes: GIB,
                    limit_bytes: 0,
                }),
                ..Default::default()
            })
            .await,
        Code::NotFound,
        unknown,
    );
    expect_status(
        client
            .controller_expand_volume(pb::ControllerExpandVolumeRequest {
                volume_id: "exa1:/whatever".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "capacity_range",
    );
    expect_status(
        client
            .list_volumes(pb::ListVolumesRequest {
                starting_token: "not-a-token".into(),
                ..Default::default()
            })
            .await,
        Code::Aborted,
        "starting_token",
    );
    expect_status(
        client
            .create_snapshot(pb::CreateSnapshotRequest {
                name: "snap".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "source_volume_id",
    );
    expect_status(
        client
            .delete_snapshot(pb::DeleteSnapshotRequest::default())
            .await,
        Code::InvalidArgument,
        "snapshot_id",
    );
    client
        .delete_snapshot(pb::DeleteSnapshotRequest {
            snapshot_id: "reallyfakesnapshotid".into(),
            ..Default::default()
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn malformed_node_requests_get_the_spec_codes() {
    let serve = serve();
    let mut client = serve.node().await;
    let staging = serve.pod_path("malformed-staging").display().to_string();
    let target = serve.pod_path("malformed-target").display().to_string();

    expect_status(
        client
            .node_stage_volume(pb::NodeStageVolumeRequest {
                staging_target_path: staging.clone(),
                volume_capability: Some(rwx()),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "volume_id",
    );
    expect_status(
        client
            .node_stage_volume(pb::NodeStageVolumeRequest {
                volume_id: "exa1:/v".into(),
                volume_capability: Some(rwx()),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "staging_target_path",
    );
    expect_status(
        client
            .node_stage_volume(pb::NodeStageVolumeRequest {
                volume_id: "exa1:/v".into(),
                staging_target_path: staging.clone(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "volume_capability",
    );
    expect_status(
        client
            .node_stage_volume(pb::NodeStageVolumeRequest {
                volume_id: "exa1:/v".into(),
                staging_target_path: staging.clone(),
                volume_capability: Some(block_capability(Mode::SingleNodeWriter)),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "volume_capability",
    );
    expect_status(
        client
            .node_publish_volume(pb::NodePublishVolumeRequest {
                volume_id: "exa1:/v".into(),
                staging_target_path: staging.clone(),
                volume_capability: Some(rwx()),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "target_path",
    );
    expect_status(
        client
            .node_unpublish_volume(pb::NodeUnpublishVolumeRequest {
                target_path: target.clone(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "volume_id",
    );
    expect_status(
        client
            .node_unstage_volume(pb::NodeUnstageVolumeRequest {
                volume_id: "exa1:/v".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "staging_target_path",
    );
    expect_status(
        client
            .node_get_volume_stats(pb::NodeGetVolumeStatsRequest {
                volume_id: "no-backend-knows-this-id".into(),
                volume_path: target.clone(),
                ..Default::default()
            })
            .await,
        Code::NotFound,
        "",
    );
    assert!(
        !std::path::Path::new(&staging).exists() && !std::path::Path::new(&target).exists(),
        "a refused request created a path"
    );
}

#[tokio::test]
async fn sockets_are_private_to_their_owner() {
    let serve = serve();
    for socket in [serve.controller_socket(), serve.node_socket()] {
        let meta = std::fs::symlink_metadata(&socket).unwrap();
        assert!(meta.file_type().is_socket(), "{}", socket.display());
        assert_eq!(
            meta.permissions().mode() & 0o777,
            0o600,
            "{} is reachable by others",
            socket.display()
        );
    }
}

#[tokio::test]
async fn pfsctl_probes_and_reports_plugin_info() {
    let serve = serve();
    let probe = serve.pfsctl_controller(&["identity", "probe"]);
    assert_eq!(probe.ok().trim(), "ready");
    let info = serve
        .pfsctl_node(&["--json", "identity", "plugin-info"])
        .json();
    assert_eq!(info["name"], "pfs-csi.io", "{info}");
}

/// Whether some process has an argument containing `needle`.
fn tool_running_with(needle: &str) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.filter_map(|e| e.ok()).any(|e| {
        std::fs::read(e.path().join("cmdline"))
            .map(|raw| {
                raw.split(|b| *b == 0)
                    .any(|arg| String::from_utf8_lossy(arg).contains(needle))
            })
            .unwrap_or(false)
    })
}

/// Starts a CreateVolume of `name` whose `lfs` call the simulator holds for two seconds,
/// and returns once that call runs: the RPC is then really in flight. Only this volume is
/// slowed down (the shared simulator serves other tests too).
async fn create_held_in_lfs(
    serve: &Serve,
    client: &pb::controller_client::ControllerClient<tonic::transport::Channel>,
    name: &str,
) -> tokio::task::JoinHandle<Result<tonic::Response<pb::CreateVolumeResponse>, tonic::Status>> {
    serve.fault(FaultRule {
        tool: "lfs".into(),
        args_contain: vec![name.into()],
        action: FaultAction::DelayMs(2_000),
        times: Some(1),
    });
    let call = tokio::spawn({
        let (mut client, request) = (client.clone(), create_request(name, GIB, &[]));
        async move { client.create_volume(request).await }
    });
    let started = std::time::Instant::now();
    while !tool_running_with(name) && !call.is_finished() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the call never reached lfs"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!call.is_finished(), "the create ended before lfs was held");
    call
}

#[tokio::test]
async fn a_delete_of_a_volume_still_being_created_is_aborted_and_nothing_is_left() {
    let serve = serve();
    let socket = serve.base().join("create-delete.sock");
    let mut plugin = PluginProcess::start(Role::Controller, serve, &socket);
    plugin.wait_ready().await;
    let name = "create-then-delete";
    let mut client = plugin.controller().await;
    let call = create_held_in_lfs(serve, &client, name).await;
    // A CO that gave up on the create deletes the id it would get (Lustre's canonical id).
    let id = format!("exa1:/{name}");
    let err = client
        .delete_volume(delete_request(&id))
        .await
        .expect_err("a delete beside the create");
    assert_eq!(err.code(), tonic::Code::Aborted, "{err:?}");
    let volume = call
        .await
        .unwrap()
        .expect("the create finishes")
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(volume.volume_id, id);
    // Its retry, once the create has answered, deletes it: no volume is left behind.
    client.delete_volume(delete_request(&id)).await.unwrap();
    let listed = client
        .list_volumes(pb::ListVolumesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(
        listed
            .entries
            .iter()
            .all(|e| e.volume.as_ref().is_none_or(|v| v.volume_id != id)),
        "{listed:?}"
    );
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_call_finish_then_removes_the_socket() {
    let serve = serve();
    let socket = serve.base().join("graceful.sock");
    let mut plugin = PluginProcess::start(Role::Controller, serve, &socket);
    plugin.wait_ready().await;
    let client = plugin.controller().await;
    let call = create_held_in_lfs(serve, &client, "graceful-inflight").await;
    plugin.signal(Signal::SIGTERM);
    let answer = call.await.unwrap();
    let volume = answer
        .unwrap_or_else(|s| {
            panic!(
                "in-flight CreateVolume failed on SIGTERM: {s:?}\n{}",
                plugin.logs()
            )
        })
        .into_inner()
        .volume
        .unwrap();
    let status = plugin
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("the plugin exits after SIGTERM");
    assert!(status.success(), "{status}\n{}", plugin.logs());
    assert!(!socket.exists(), "the socket is left behind");
    // The volume it made is real and deletable through the serving controller.
    serve
        .controller()
        .await
        .delete_volume(delete_request(&volume.volume_id))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_stale_socket_at_start_is_replaced() {
    let serve = serve();
    let socket = serve.base().join("stale.sock");
    {
        // A socket file nobody listens on, as a crashed plugin leaves it.
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        drop(listener);
    }
    assert!(socket.exists());
    let mut plugin = PluginProcess::start(Role::Node, serve, &socket);
    plugin.wait_ready().await;
    let mut identity = plugin.identity().await;
    let info = identity
        .get_plugin_info(pb::GetPluginInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.name, "pfs-csi.io");
    let mode = std::fs::metadata(plugin.socket())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    plugin.signal(Signal::SIGTERM);
    assert!(plugin.wait_exit(Duration::from_secs(30)).await.is_some());
}

#[tokio::test]
async fn sigterm_is_not_held_up_by_an_idle_unresponsive_client() {
    let serve = serve();
    let socket = serve.base().join("idle-client.sock");
    let mut plugin = PluginProcess::start(Role::Controller, serve, &socket);
    plugin.wait_ready().await;
    // A client that opened an HTTP/2 connection and then stopped reading (a hung sidecar).
    let mut idle = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    use std::io::Write;
    idle.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    plugin.signal(Signal::SIGTERM);
    let status = plugin.wait_exit(Duration::from_secs(20)).await;
    drop(idle);
    let status = status.unwrap_or_else(|| {
        panic!(
            "still running 20 s after SIGTERM with an idle client connected\n{}",
            plugin.logs()
        )
    });
    assert!(status.success(), "{status}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "shutdown took {:?}",
        started.elapsed()
    );
    assert!(!socket.exists());
}
