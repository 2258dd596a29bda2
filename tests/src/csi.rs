//! Generated CSI clients over a unix socket, and builders of the requests the tests send.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use tonic::transport::Channel;
use tonic::{Code, Response, Status};

use csi::v1 as pb;
pub use k8s_adapter::proto::csi;
use pb::volume_capability::access_mode::Mode;

/// One gibibyte.
pub const GIB: i64 = 1 << 30;

/// How long connecting to a plugin socket may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The runtime every channel's connection runs on. Tests run on their own single-thread
/// runtimes and block them while a fixture stops; connections living here still answer the
/// server's graceful shutdown meanwhile, so a plugin never waits for a blocked test.
fn connection_runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("csi-connections")
            .enable_all()
            .build()
            .expect("the connection runtime")
    })
}

/// A channel to the plugin listening on `socket`, or why there is none within `timeout`.
pub async fn try_channel(socket: &Path, timeout: Duration) -> Result<Channel, String> {
    let path = socket.to_path_buf();
    connection_runtime()
        .spawn(async move { k8s_adapter::socket_client::connect(&path, timeout).await })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

/// A channel to the plugin listening on `socket`.
pub async fn channel(socket: &Path) -> Channel {
    try_channel(socket, CONNECT_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("connect to {}: {e}", socket.display()))
}

/// An Identity client.
pub async fn identity(socket: &Path) -> pb::identity_client::IdentityClient<Channel> {
    pb::identity_client::IdentityClient::new(channel(socket).await)
}

/// A Controller client.
pub async fn controller(socket: &Path) -> pb::controller_client::ControllerClient<Channel> {
    pb::controller_client::ControllerClient::new(channel(socket).await)
}

/// A Node client.
pub async fn node(socket: &Path) -> pb::node_client::NodeClient<Channel> {
    pb::node_client::NodeClient::new(channel(socket).await)
}

/// A mount capability with `mode`.
pub fn mount_capability(mode: Mode) -> pb::VolumeCapability {
    pb::VolumeCapability {
        access_mode: Some(pb::volume_capability::AccessMode { mode: mode as i32 }),
        access_type: Some(pb::volume_capability::AccessType::Mount(
            pb::volume_capability::MountVolume::default(),
        )),
    }
}

/// A block capability with `mode` (every plugin must refuse it).
pub fn block_capability(mode: Mode) -> pb::VolumeCapability {
    pb::VolumeCapability {
        access_mode: Some(pb::volume_capability::AccessMode { mode: mode as i32 }),
        access_type: Some(pb::volume_capability::AccessType::Block(
            pb::volume_capability::BlockVolume {},
        )),
    }
}

/// ReadWriteMany as a mount.
pub fn rwx() -> pb::VolumeCapability {
    mount_capability(Mode::MultiNodeMultiWriter)
}

/// ReadWriteOnce as a mount.
pub fn rwo() -> pb::VolumeCapability {
    mount_capability(Mode::SingleNodeWriter)
}

/// ReadWriteOncePod as a mount.
pub fn rwop() -> pb::VolumeCapability {
    mount_capability(Mode::SingleNodeSingleWriter)
}

/// ReadOnlyMany as a mount.
pub fn rox() -> pb::VolumeCapability {
    mount_capability(Mode::MultiNodeReaderOnly)
}

/// Key-value pairs as a map.
pub fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// CreateVolume of `name` with a required size, parameters and the RWX capability.
pub fn create_request(
    name: &str,
    required_bytes: i64,
    parameters: &[(&str, &str)],
) -> pb::CreateVolumeRequest {
    pb::CreateVolumeRequest {
        name: name.to_string(),
        capacity_range: Some(pb::CapacityRange {
            required_bytes,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![rwx()],
        parameters: map(parameters),
        ..Default::default()
    }
}

/// NodeStageVolume of `volume` at `staging` with `capability`.
pub fn stage_request(
    volume: &pb::Volume,
    staging: &Path,
    capability: pb::VolumeCapability,
) -> pb::NodeStageVolumeRequest {
    pb::NodeStageVolumeRequest {
        volume_id: volume.volume_id.clone(),
        staging_target_path: staging.display().to_string(),
        volume_capability: Some(capability),
        volume_context: volume.volume_context.clone(),
        ..Default::default()
    }
}

/// NodePublishVolume of `volume` from `staging` to `target`.
pub fn publish_request(
    volume: &pb::Volume,
    staging: &Path,
    target: &Path,
    capability: pb::VolumeCapability,
    readonly: bool,
) -> pb::NodePublishVolumeRequest {
    pb::NodePublishVolumeRequest {
        volume_id: volume.volume_id.clone(),
        staging_target_path: staging.display().to_string(),
        target_path: target.display().to_string(),
        volume_capability: Some(capability),
        readonly,
        volume_context: volume.volume_context.clone(),
        ..Default::default()
    }
}

/// Asserts that a read-write NodePublishVolume of `volume` from `staging` to `target` is
/// refused as not staged (`FailedPrecondition`) and leaves nothing mounted at `target`.
pub async fn expect_publish_refused_as_unstaged(
    node: &mut pb::node_client::NodeClient<Channel>,
    volume: &pb::Volume,
    staging: &Path,
    target: &Path,
) {
    expect_status(
        node.node_publish_volume(publish_request(volume, staging, target, rwx(), false))
            .await,
        Code::FailedPrecondition,
        "not staged",
    );
    assert!(
        !crate::mounts::is_mount_point(target),
        "{} mounted",
        target.display()
    );
}

/// NodeUnpublishVolume.
pub fn unpublish_request(volume_id: &str, target: &Path) -> pb::NodeUnpublishVolumeRequest {
    pb::NodeUnpublishVolumeRequest {
        volume_id: volume_id.to_string(),
        target_path: target.display().to_string(),
    }
}

/// NodeUnstageVolume.
pub fn unstage_request(volume_id: &str, staging: &Path) -> pb::NodeUnstageVolumeRequest {
    pb::NodeUnstageVolumeRequest {
        volume_id: volume_id.to_string(),
        staging_target_path: staging.display().to_string(),
    }
}

/// DeleteVolume.
pub fn delete_request(volume_id: &str) -> pb::DeleteVolumeRequest {
    pb::DeleteVolumeRequest {
        volume_id: volume_id.to_string(),
        ..Default::default()
    }
}

/// Asserts that a call failed with `code` and a message containing `needle`; returns the
/// status.
#[track_caller]
pub fn expect_status<T: std::fmt::Debug>(
    result: Result<Response<T>, Status>,
    code: Code,
    needle: &str,
) -> Status {
    match result {
        Ok(answer) => panic!(
            "expected {code:?} mentioning {needle:?}, got success: {:?}",
            answer.into_inner()
        ),
        Err(status) => {
            assert_eq!(
                status.code(),
                code,
                "wrong code; message: {}",
                status.message()
            );
            assert!(
                status.message().contains(needle),
                "{code:?} message {:?} does not mention {needle:?}",
                status.message()
            );
            status
        }
    }
}

/// The usage entry of `unit` in a NodeGetVolumeStats answer.
pub fn usage(
    stats: &pb::NodeGetVolumeStatsResponse,
    unit: pb::volume_usage::Unit,
) -> Option<pb::VolumeUsage> {
    stats.usage.iter().find(|u| u.unit == unit as i32).cloned()
}

/// How long [`create_volume_settled`] keeps retrying an `Aborted` ("in progress") answer.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);

/// CreateVolume, repeated while the plugin answers `Aborted` (an operation on the same
/// volume, or a restore or clone, still in progress), as the external provisioner does.
pub async fn create_volume_settled(
    client: &mut pb::controller_client::ControllerClient<Channel>,
    request: pb::CreateVolumeRequest,
) -> Result<pb::Volume, Status> {
    let deadline = std::time::Instant::now() + SETTLE_TIMEOUT;
    loop {
        match client.create_volume(request.clone()).await {
            Ok(answer) => {
                return Ok(answer
                    .into_inner()
                    .volume
                    .expect("CreateVolume answered without a volume"));
            }
            Err(status)
                if status.code() == Code::Aborted && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(status) => return Err(status),
        }
    }
}

/// Polls ListSnapshots until `snapshot_id` is ready to use; panics after two minutes.
pub async fn wait_snapshot_ready(
    client: &mut pb::controller_client::ControllerClient<Channel>,
    snapshot_id: &str,
) -> pb::Snapshot {
    let deadline = std::time::Instant::now() + SETTLE_TIMEOUT;
    loop {
        let listed = client
            .list_snapshots(pb::ListSnapshotsRequest {
                snapshot_id: snapshot_id.to_string(),
                ..Default::default()
            })
            .await
            .expect("ListSnapshots")
            .into_inner();
        let snapshot = listed
            .entries
            .into_iter()
            .filter_map(|e| e.snapshot)
            .find(|s| s.snapshot_id == snapshot_id);
        match snapshot {
            Some(s) if s.ready_to_use => return s,
            _ => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "snapshot {snapshot_id} not ready in time"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}
