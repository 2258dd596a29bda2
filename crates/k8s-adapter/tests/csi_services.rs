//! The CSI services served for real on a temporary unix socket, over the
//! core's use cases with a mocked backend, called through the generated
//! clients: every RPC, the capabilities, and the exact code of malformed
//! requests.

mod common;

use std::{collections::BTreeSet, sync::atomic::Ordering, time::Duration};

use common::*;
use csi_core::domain::GIB;
use k8s_adapter::proto::csi::v1::{
    self as csi, controller_service_capability::rpc::Type as ControllerCap,
    node_service_capability::rpc::Type as NodeCap, plugin_capability,
    volume_capability::access_mode::Mode,
};
use tonic::Code;

/// Asserts `result` failed with `code` and a message naming `field`.
#[track_caller]
fn assert_status<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, tonic::Status>,
    code: Code,
    field: &str,
) {
    let status = result.expect_err("the call should fail");
    assert_eq!(status.code(), code, "{}", status.message());
    assert!(
        status.message().contains(field),
        "{:?} does not name {field}",
        status.message()
    );
}

#[tokio::test]
async fn plugin_info_names_the_driver_version_and_backends() {
    let state = FakeState::ready();
    let harness = Harness::both(&state);
    let info = harness
        .identity()
        .await
        .get_plugin_info(csi::GetPluginInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.name, DRIVER);
    assert_eq!(info.vendor_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(
        info.manifest.get("backends").map(String::as_str),
        Some("mockfs")
    );
    harness.stop().await;
}

fn plugin_capabilities(caps: &[csi::PluginCapability]) -> BTreeSet<String> {
    caps.iter()
        .map(|cap| match cap.r#type {
            Some(plugin_capability::Type::Service(s)) => {
                format!("service:{:?}", s.r#type())
            }
            Some(plugin_capability::Type::VolumeExpansion(e)) => {
                format!("expansion:{:?}", e.r#type())
            }
            None => "none".into(),
        })
        .collect()
}

#[tokio::test]
async fn controller_service_is_advertised_only_where_it_is_served() {
    let state = FakeState::ready();
    let both = Harness::both(&state);
    let caps = both
        .identity()
        .await
        .get_plugin_capabilities(csi::GetPluginCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        plugin_capabilities(&caps.capabilities),
        BTreeSet::from([
            "service:ControllerService".to_string(),
            "service:VolumeAccessibilityConstraints".to_string(),
            "expansion:Online".to_string(),
        ])
    );
    both.stop().await;

    let node_only = Harness::start(config(), None, Some(node(&state)));
    let caps = node_only
        .identity()
        .await
        .get_plugin_capabilities(csi::GetPluginCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    let caps = plugin_capabilities(&caps.capabilities);
    assert!(!caps.contains("service:ControllerService"), "{caps:?}");
    assert!(
        caps.contains("service:VolumeAccessibilityConstraints"),
        "{caps:?}"
    );
    // A node plugin has no Controller service at all.
    let status = node_only
        .controller()
        .await
        .controller_get_capabilities(csi::ControllerGetCapabilitiesRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
    node_only.stop().await;
}

#[tokio::test]
async fn probe_is_not_ready_until_the_backends_are_and_caches_only_success() {
    let state = std::sync::Arc::new(FakeState::default());
    let mut identity = config();
    identity.ready_cache = Duration::from_secs(3600);
    let harness = Harness::start(identity, Some(controller(&state)), None);
    let mut client = harness.identity().await;
    let probe = |c: &mut k8s_adapter::proto::csi::v1::identity_client::IdentityClient<_>| {
        let mut c = c.clone();
        async move {
            c.probe(csi::ProbeRequest {})
                .await
                .map(|r| r.into_inner().ready)
        }
    };

    // The server runs the first check at start, before any Probe asks.
    state.wait_for_first_readiness_check().await;
    assert_eq!(probe(&mut client).await.unwrap(), Some(false));
    assert_eq!(probe(&mut client).await.unwrap(), Some(false));
    assert_eq!(
        state.readiness_checks.load(Ordering::SeqCst),
        3,
        "a negative answer is not cached"
    );

    state.ready.store(true, Ordering::SeqCst);
    assert_eq!(probe(&mut client).await.unwrap(), Some(true));
    state.ready.store(false, Ordering::SeqCst);
    assert_eq!(
        probe(&mut client).await.unwrap(),
        Some(true),
        "a positive answer is reused within the cache time"
    );
    assert_eq!(state.readiness_checks.load(Ordering::SeqCst), 4);
    harness.stop().await;
}

#[tokio::test]
async fn probe_checks_again_once_the_cached_answer_expires() {
    let state = FakeState::ready();
    let mut identity = config();
    identity.ready_cache = Duration::ZERO;
    let harness = Harness::start(identity, None, Some(node(&state)));
    let mut client = harness.identity().await;
    assert_eq!(
        client
            .probe(csi::ProbeRequest {})
            .await
            .unwrap()
            .into_inner()
            .ready,
        Some(true)
    );
    state.ready.store(false, Ordering::SeqCst);
    assert_eq!(
        client
            .probe(csi::ProbeRequest {})
            .await
            .unwrap()
            .into_inner()
            .ready,
        Some(false)
    );
    harness.stop().await;
}

#[tokio::test]
async fn capabilities_are_exactly_what_is_implemented() {
    let state = FakeState::ready();
    let harness = Harness::both(&state);
    let controller: BTreeSet<i32> = harness
        .controller()
        .await
        .controller_get_capabilities(csi::ControllerGetCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner()
        .capabilities
        .iter()
        .map(|c| match c.r#type {
            Some(csi::controller_service_capability::Type::Rpc(rpc)) => rpc.r#type,
            None => panic!("capability without a type"),
        })
        .collect();
    let expected: BTreeSet<i32> = [
        ControllerCap::CreateDeleteVolume,
        ControllerCap::ListVolumes,
        ControllerCap::GetCapacity,
        ControllerCap::CreateDeleteSnapshot,
        ControllerCap::ListSnapshots,
        ControllerCap::CloneVolume,
        ControllerCap::ExpandVolume,
        ControllerCap::GetVolume,
        ControllerCap::VolumeCondition,
        ControllerCap::SingleNodeMultiWriter,
    ]
    .into_iter()
    .map(|c| c as i32)
    .collect();
    assert_eq!(controller, expected);

    let node: BTreeSet<i32> = harness
        .node()
        .await
        .node_get_capabilities(csi::NodeGetCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner()
        .capabilities
        .iter()
        .map(|c| match c.r#type {
            Some(csi::node_service_capability::Type::Rpc(rpc)) => rpc.r#type,
            None => panic!("capability without a type"),
        })
        .collect();
    let expected: BTreeSet<i32> = [
        NodeCap::StageUnstageVolume,
        NodeCap::GetVolumeStats,
        NodeCap::VolumeCondition,
        NodeCap::SingleNodeMultiWriter,
    ]
    .into_iter()
    .map(|c| c as i32)
    .collect();
    assert_eq!(node, expected);
    harness.stop().await;
}

#[tokio::test]
async fn malformed_create_volume_requests_get_invalid_argument_and_create_nothing() {
    let state = FakeState::ready();
    let harness = Harness::both(&state);
    let mut client = harness.controller().await;

    let mut empty_name = create_request("");
    empty_name.name = String::new();
    assert_status(
        client.create_volume(empty_name).await,
        Code::InvalidArgument,
        "name",
    );

    let mut no_caps = create_request("pvc-1");
    no_caps.volume_capabilities.clear();
    assert_status(
        client.create_volume(no_caps).await,
        Code::InvalidArgument,
        "volume_capabilities",
    );

    let mut block = create_request("pvc-1");
    block.volume_capabilities.push(csi::VolumeCapability {
        access_mode: Some(csi::volume_capability::AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
        access_type: Some(csi::volume_capability::AccessType::Block(
            csi::volume_capability::BlockVolume {},
        )),
    });
    assert_status(
        client.create_volume(block).await,
        Code::InvalidArgument,
        "volume_capabilities[1]",
    );

    let mut unknown_mode = create_request("pvc-1");
    unknown_mode.volume_capabilities[0]
        .access_mode
        .as_mut()
        .unwrap()
        .mode = 42;
    assert_status(
        client.create_volume(unknown_mode).await,
        Code::InvalidArgument,
        "volume_capabilities[0].access_mode",
    );

    let mut no_type = create_request("pvc-1");
    no_type.volume_capabilities[0].access_type = None;
    assert_status(
        client.create_volume(no_type).await,
        Code::InvalidArgument,
        "volume_capabilities[0].access_type",
    );

    let mut no_mode = create_request("pvc-1");
    no_mode.volume_capabilities[0].access_mode = None;
    assert_status(
        client.create_volume(no_mode).await,
        Code::InvalidArgument,
        "volume_capabilities[0].access_mode",
    );

    let mut negative = create_request("pvc-1");
    negative.capacity_range = Some(csi::CapacityRange {
        required_bytes: -5,
        limit_bytes: 0,
    });
    assert_status(
        client.create_volume(negative).await,
        Code::InvalidArgument,
        "capacity_range.required_bytes",
    );

    let mut unknown_parameter = create_request("pvc-1");
    unknown_parameter
        .parameters
        .insert("colour".into(), "blue".into());
    assert_status(
        client.create_volume(unknown_parameter).await,
        Code::InvalidArgument,
        "parameters[colour]",
    );

    let mut mutable = create_request("pvc-1");
    mutable
        .mutable_parameters
        .insert("iops".into(), "100".into());
    assert_status(
        client.create_volume(mutable).await,
        Code::InvalidArgument,
        "mutable_parameters",
    );

    let mut sourceless = create_request("pvc-1");
    sourceless.volume_content_source = Some(csi::VolumeContentSource { r#type: None });
    assert_status(
        client.create_volume(sourceless).await,
        Code::InvalidArgument,
        "volume_content_source",
    );

    let mut missing_snapshot = create_request("pvc-1");
    missing_snapshot.volume_content_source = Some(csi::VolumeContentSource {
        r#type: Some(csi::volume_content_source::Type::Snapshot(
            csi::volume_content_source::SnapshotSource {
                snapshot_id: format!("{SNAPSHOT_PREFIX}absent"),
            },
        )),
    });
    assert_status(
        client.create_volume(missing_snapshot).await,
        Code::NotFound,
        "absent",
    );

    let listed = client
        .list_volumes(csi::ListVolumesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.entries.is_empty(), "{:?}", listed.entries);
    assert!(state.volumes.lock().unwrap().is_empty());
    harness.stop().await;
}

#[tokio::test]
async fn malformed_controller_requests_get_the_spec_codes() {
    let state = FakeState::ready();
    let harness = Harness::both(&state);
    let mut client = harness.controller().await;
    let unknown_volume = "no-backend-knows-this-id".to_string();

    assert_status(
        client
            .delete_volume(csi::DeleteVolumeRequest::default())
            .await,
        Code::InvalidArgument,
        "volume_id",
    );
    // A volume that cannot exist is already deleted.
    client
        .delete_volume(csi::DeleteVolumeRequest {
            volume_id: unknown_volume.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_status(
        client
            .delete_volume(csi::DeleteVolumeRequest {
                volume_id: format!("{VOLUME_PREFIX}a/../b"),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "volume_id",
    );

    assert_status(
        client
            .validate_volume_capabilities(csi::ValidateVolumeCapabilitiesRequest {
                volume_capabilities: vec![rwx()],
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "volume_id",
    );
    assert_status(
        client
            .validate_volume_capabilities(csi::ValidateVolumeCapabilitiesRequest {
                volume_id: unknown_volume.clone(),
                volume_capabilities: vec![rwx()],
                ..Default::default()
            })
            .await,
        Code::NotFound,
        &unknown_volume,
    );
    assert_status(
        client
            .controller_get_volume(csi::ControllerGetVolumeRequest {
                volume_id: unknown_volume.clone(),
            })
            .await,
        Code::NotFound,
        &unknown_volume,
    );
    assert_status(
        client
            .controller_expand_volume(csi::ControllerExpandVolumeRequest {
                volume_id: format!("{VOLUME_PREFIX}pvc-1"),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "capacity_range",
    );
    assert_status(
        client
            .controller_expand_volume(csi::ControllerExpandVolumeRequest {
                volume_id: format!("{VOLUME_PREFIX}absent"),
                capacity_range: Some(csi::CapacityRange {
                    required_bytes: GIB as i64,
                    limit_bytes: 0,
                }),
                ..Default::default()
            })
            .await,
        Code::NotFound,
        "absent",
    );
    assert_status(
        client
            .list_volumes(csi::ListVolumesRequest {
                starting_token: "not-a-token".into(),
                ..Default::default()
            })
            .await,
        Code::Aborted,
        "starting_token",
    );

    assert_status(
        client
            .create_snapshot(csi::CreateSnapshotRequest {
                name: "snap-1".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "source_volume_id",
    );
    assert_status(
        client
            .create_snapshot(csi::CreateSnapshotRequest {
                source_volume_id: format!("{VOLUME_PREFIX}pvc-1"),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "name",
    );
    assert_status(
        client
            .delete_snapshot(csi::DeleteSnapshotRequest::default())
            .await,
        Code::InvalidArgument,
        "snapshot_id",
    );
    client
        .delete_snapshot(csi::DeleteSnapshotRequest {
            snapshot_id: "reallyfakesnapshotid".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_status(
        client
            .get_snapshot(csi::GetSnapshotRequest::default())
            .await,
        Code::InvalidArgument,
        "snapshot_id",
    );
    assert_status(
        client
            .get_snapshot(csi::GetSnapshotRequest {
                snapshot_id: format!("{SNAPSHOT_PREFIX}absent"),
                ..Default::default()
            })
            .await,
        Code::NotFound,
        "absent",
    );
    let none = client
        .list_snapshots(csi::ListSnapshotsRequest {
            snapshot_id: "none-exist-id".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(none.entries.is_empty());
    let none = client
        .list_snapshots(csi::ListSnapshotsRequest {
            source_volume_id: unknown_volume.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(none.entries.is_empty());

    for result in [
        client
            .controller_publish_volume(csi::ControllerPublishVolumeRequest::default())
            .await
            .map(|_| ()),
        client
            .controller_unpublish_volume(csi::ControllerUnpublishVolumeRequest::default())
            .await
            .map(|_| ()),
        client
            .controller_modify_volume(csi::ControllerModifyVolumeRequest::default())
            .await
            .map(|_| ()),
    ] {
        assert_eq!(result.unwrap_err().code(), Code::Unimplemented);
    }
    harness.stop().await;
}

#[tokio::test]
async fn controller_lifecycle_round_trips_volumes_and_snapshots() {
    let state = FakeState::ready();
    let harness = Harness::both(&state);
    let mut client = harness.controller().await;

    let mut request = create_request("pvc-1");
    request
        .parameters
        .insert("csi.storage.k8s.io/pvc/name".into(), "data".into());
    request
        .parameters
        .insert(KNOWN_PARAMETER.into(), "fast".into());
    let volume = client
        .create_volume(request.clone())
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(volume.volume_id, format!("{VOLUME_PREFIX}pvc-1"));
    assert_eq!(volume.capacity_bytes, 2 * GIB as i64);
    assert_eq!(
        volume.volume_context.get("fs").map(String::as_str),
        Some("mockfs")
    );
    assert_eq!(
        segments(&volume.accessible_topology[0])
            .get(ZONE_KEY)
            .map(String::as_str),
        Some("zone-a")
    );
    // Same name, same request: the same volume.
    let again = client.create_volume(request).await.unwrap().into_inner();
    assert_eq!(again.volume.unwrap().volume_id, volume.volume_id);
    // Same name, a size the volume does not fit: AlreadyExists.
    let mut bigger = create_request("pvc-1");
    bigger.capacity_range = Some(csi::CapacityRange {
        required_bytes: 5 * GIB as i64,
        limit_bytes: 5 * GIB as i64,
    });
    assert_status(
        client.create_volume(bigger).await,
        Code::AlreadyExists,
        "pvc-1",
    );

    let got = client
        .controller_get_volume(csi::ControllerGetVolumeRequest {
            volume_id: volume.volume_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.volume.unwrap().volume_id, volume.volume_id);
    let condition = got.status.unwrap().volume_condition.unwrap();
    assert!(!condition.abnormal, "{}", condition.message);

    let listed = client
        .list_volumes(csi::ListVolumesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.entries.len(), 1);
    assert!(
        listed.entries[0]
            .status
            .as_ref()
            .unwrap()
            .volume_condition
            .is_some()
    );

    let confirmed = client
        .validate_volume_capabilities(csi::ValidateVolumeCapabilitiesRequest {
            volume_id: volume.volume_id.clone(),
            volume_capabilities: vec![rwx()],
            volume_context: [("exaFS".to_string(), "unchecked".to_string())].into(),
            parameters: [("unchecked".to_string(), "value".to_string())].into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // Only the capabilities were checked, so only they are confirmed.
    assert_eq!(
        confirmed.confirmed.unwrap(),
        csi::validate_volume_capabilities_response::Confirmed {
            volume_capabilities: vec![rwx()],
            ..Default::default()
        }
    );
    let block = csi::VolumeCapability {
        access_type: Some(csi::volume_capability::AccessType::Block(
            csi::volume_capability::BlockVolume {},
        )),
        ..rwx()
    };
    let refused = client
        .validate_volume_capabilities(csi::ValidateVolumeCapabilitiesRequest {
            volume_id: volume.volume_id.clone(),
            volume_capabilities: vec![block],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(refused.confirmed.is_none());
    assert!(refused.message.contains("block"), "{}", refused.message);

    let expanded = client
        .controller_expand_volume(csi::ControllerExpandVolumeRequest {
            volume_id: volume.volume_id.clone(),
            capacity_range: Some(csi::CapacityRange {
                required_bytes: 3 * GIB as i64,
                limit_bytes: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(expanded.capacity_bytes, 3 * GIB as i64);
    assert!(!expanded.node_expansion_required);

    let capacity = client
        .get_capacity(csi::GetCapacityRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(capacity.available_capacity, 1 << 40);

    let snapshot = client
        .create_snapshot(csi::CreateSnapshotRequest {
            source_volume_id: volume.volume_id.clone(),
            name: "snap-1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    assert_eq!(snapshot.snapshot_id, format!("{SNAPSHOT_PREFIX}snap-1"));
    assert_eq!(snapshot.source_volume_id, volume.volume_id);
    assert_eq!(snapshot.creation_time.unwrap().seconds, 1_750_000_000);
    assert!(snapshot.ready_to_use);

    let got = client
        .get_snapshot(csi::GetSnapshotRequest {
            snapshot_id: snapshot.snapshot_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.snapshot.unwrap(), snapshot);
    let by_volume = client
        .list_snapshots(csi::ListSnapshotsRequest {
            source_volume_id: volume.volume_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_volume.entries.len(), 1);

    let mut restore = create_request("pvc-2");
    restore.volume_content_source = Some(csi::VolumeContentSource {
        r#type: Some(csi::volume_content_source::Type::Snapshot(
            csi::volume_content_source::SnapshotSource {
                snapshot_id: snapshot.snapshot_id.clone(),
            },
        )),
    });
    let restored = client
        .create_volume(restore.clone())
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(restored.content_source, restore.volume_content_source);

    client
        .delete_snapshot(csi::DeleteSnapshotRequest {
            snapshot_id: snapshot.snapshot_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    for id in [&volume.volume_id, &restored.volume_id] {
        client
            .delete_volume(csi::DeleteVolumeRequest {
                volume_id: id.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let listed = client
        .list_volumes(csi::ListVolumesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.entries.is_empty());
    harness.stop().await;
}

#[tokio::test]
async fn malformed_node_requests_get_the_spec_codes() {
    let state = FakeState::ready();
    let harness = Harness::both(&state);
    let mut client = harness.node().await;
    let volume_id = format!("{VOLUME_PREFIX}pvc-1");
    let staging = harness.scratch_path("staging");

    assert_status(
        client
            .node_stage_volume(csi::NodeStageVolumeRequest {
                staging_target_path: staging.clone(),
                volume_capability: Some(rwx()),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "volume_id",
    );
    assert_status(
        client
            .node_stage_volume(csi::NodeStageVolumeRequest {
                volume_id: volume_id.clone(),
                volume_capability: Some(rwx()),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "staging_target_path",
    );
    assert_status(
        client
            .node_stage_volume(csi::NodeStageVolumeRequest {
                volume_id: volume_id.clone(),
                staging_target_path: staging.clone(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "volume_capability",
    );
    assert_status(
        client
            .node_unstage_volume(csi::NodeUnstageVolumeRequest {
                volume_id: volume_id.clone(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "staging_target_path",
    );
    assert_status(
        client
            .node_publish_volume(csi::NodePublishVolumeRequest {
                volume_id: volume_id.clone(),
                staging_target_path: staging.clone(),
                volume_capability: Some(rwx()),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "target_path",
    );
    assert_status(
        client
            .node_unpublish_volume(csi::NodeUnpublishVolumeRequest::default())
            .await,
        Code::InvalidArgument,
        "volume_id",
    );
    assert_status(
        client
            .node_get_volume_stats(csi::NodeGetVolumeStatsRequest {
                volume_path: "some/path".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "volume_id",
    );
    assert_status(
        client
            .node_get_volume_stats(csi::NodeGetVolumeStatsRequest {
                volume_id: volume_id.clone(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "volume_path",
    );
    for id in ["unknown-volume-id", volume_id.as_str()] {
        assert_status(
            client
                .node_get_volume_stats(csi::NodeGetVolumeStatsRequest {
                    volume_id: id.into(),
                    volume_path: "some/path".into(),
                    ..Default::default()
                })
                .await,
            Code::NotFound,
            "some/path",
        );
    }
    assert_status(
        client
            .node_get_volume_stats(csi::NodeGetVolumeStatsRequest {
                volume_id: "unknown-volume-id".into(),
                volume_path: harness.scratch_path("nowhere"),
                ..Default::default()
            })
            .await,
        Code::NotFound,
        "unknown-volume-id",
    );
    let status = client
        .node_expand_volume(csi::NodeExpandVolumeRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
    harness.stop().await;
}

#[tokio::test]
async fn node_lifecycle_stages_publishes_reports_and_cleans_up() {
    let state = FakeState::ready();
    let harness = Harness::both(&state);
    let mut client = harness.node().await;

    let info = client
        .node_get_info(csi::NodeGetInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.node_id, "node-1");
    assert_eq!(info.max_volumes_per_node, 0);
    assert_eq!(
        segments(&info.accessible_topology.unwrap())
            .get(ZONE_KEY)
            .map(String::as_str),
        Some("zone-a")
    );

    let volume_id = format!("{VOLUME_PREFIX}pvc-1");
    let staging = harness.scratch_path("staging");
    std::fs::create_dir(&staging).unwrap();
    let target = harness.scratch_path("target");
    client
        .node_stage_volume(csi::NodeStageVolumeRequest {
            volume_id: volume_id.clone(),
            staging_target_path: staging.clone(),
            volume_capability: Some(rwx()),
            ..Default::default()
        })
        .await
        .unwrap();
    let publish = csi::NodePublishVolumeRequest {
        volume_id: volume_id.clone(),
        staging_target_path: staging.clone(),
        target_path: target.clone(),
        volume_capability: Some(rwx()),
        ..Default::default()
    };
    client.node_publish_volume(publish.clone()).await.unwrap();
    assert!(exists(&target), "the target directory is created");
    // Publishing again with the same options succeeds.
    client.node_publish_volume(publish).await.unwrap();

    let stats = client
        .node_get_volume_stats(csi::NodeGetVolumeStatsRequest {
            volume_id: volume_id.clone(),
            volume_path: target.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    use csi::volume_usage::Unit;
    let by_unit = |unit: Unit| {
        stats
            .usage
            .iter()
            .find(|u| u.unit == unit as i32)
            .map(|u| (u.total, u.used, u.available))
    };
    assert_eq!(
        by_unit(Unit::Bytes),
        Some((10 * GIB as i64, 3 * GIB as i64, 7 * GIB as i64))
    );
    assert_eq!(by_unit(Unit::Inodes), Some((1000, 10, 990)));
    assert!(!stats.volume_condition.unwrap().abnormal);

    client
        .node_unpublish_volume(csi::NodeUnpublishVolumeRequest {
            volume_id: volume_id.clone(),
            target_path: target.clone(),
        })
        .await
        .unwrap();
    assert!(!exists(&target), "the target directory is removed");
    // Unpublishing what is gone succeeds.
    client
        .node_unpublish_volume(csi::NodeUnpublishVolumeRequest {
            volume_id: volume_id.clone(),
            target_path: target.clone(),
        })
        .await
        .unwrap();
    client
        .node_unstage_volume(csi::NodeUnstageVolumeRequest {
            volume_id,
            staging_target_path: staging,
        })
        .await
        .unwrap();
    harness.stop().await;
}
