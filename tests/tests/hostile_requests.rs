//! Hostile requests through gRPC against the real binaries: path traversal in ids and
//! parameters, absolute paths, NUL and control characters, overlong ids, mount-option
//! injection, negative and huge sizes, unknown parameters, strings that are not UTF-8,
//! staging and target paths that climb out with `..`, and volumes that are symbolic links
//! planted to lead out of the filesystem.
//!
//! Every request must get its exact gRPC code, within a bound (no hang), without killing
//! the plugin (both answer Probe afterwards), and without touching anything outside the
//! volume base: the mount table, a canary directory standing in for `/etc`, and the
//! filesystem's top level are the same after the table as before.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pfs_csi_tests::csi::{GIB, create_request, create_volume_settled, map, rwx};
use pfs_csi_tests::mounts::mounted_below;
use pfs_csi_tests::proto::v1 as pb;
use pfs_csi_tests::raw;
use pfs_csi_tests::{Serve, ServeOptions};
use pfs_sim::serve::config::BEEGFS_VOL_DIR_BASE;
use pfs_sim::state::FsKind;
use prost::Message;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// Bound of one hostile call: longer is a hang.
const CALL_BOUND: Duration = Duration::from_secs(20);

/// One hostile request.
enum Call {
    Create(pb::CreateVolumeRequest),
    Delete(String),
    Expand(String, i64),
    GetVolume(String),
    Validate(String),
    List(i32),
    Capacity(Vec<(&'static str, String)>),
    CreateSnapshot(pb::CreateSnapshotRequest),
    DeleteSnapshot(String),
    Stage(pb::NodeStageVolumeRequest),
    Unstage(String, String),
    Publish(pb::NodePublishVolumeRequest),
    Unpublish(String, String),
    Stats(String, String),
    /// Encoded message bytes to a method of the controller (`true`) or node socket.
    Raw(bool, &'static str, Vec<u8>),
}

/// A table row: what is sent and the code it must get.
struct Case {
    what: String,
    call: Call,
    code: Code,
}

fn case(what: impl Into<String>, call: Call, code: Code) -> Case {
    Case {
        what: what.into(),
        call,
        code,
    }
}

/// The clients of one serve instance.
struct Plugins {
    controller: pb::controller_client::ControllerClient<Channel>,
    node: pb::node_client::NodeClient<Channel>,
    controller_socket: PathBuf,
    node_socket: PathBuf,
}

fn bounded<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(CALL_BOUND);
    request
}

/// Runs one call; a volume it created (or grew) is returned so it can be checked and removed.
async fn run(p: &mut Plugins, call: Call) -> Result<Option<pb::Volume>, Status> {
    let c = &mut p.controller;
    let n = &mut p.node;
    match call {
        Call::Create(r) => {
            let required = r.capacity_range.as_ref().map_or(0, |c| c.required_bytes);
            let volume = c
                .create_volume(bounded(r))
                .await?
                .into_inner()
                .volume
                .expect("a volume");
            assert!(volume.capacity_bytes >= required, "{volume:?}");
            Ok(Some(volume))
        }
        Call::Delete(id) => c
            .delete_volume(bounded(pb::DeleteVolumeRequest {
                volume_id: id,
                ..Default::default()
            }))
            .await
            .map(|_| None),
        Call::Expand(id, bytes) => c
            .controller_expand_volume(bounded(pb::ControllerExpandVolumeRequest {
                volume_id: id,
                capacity_range: Some(pb::CapacityRange {
                    required_bytes: bytes,
                    limit_bytes: 0,
                }),
                ..Default::default()
            }))
            .await
            .map(|a| {
                let capacity = a.into_inner().capacity_bytes;
                assert!(capacity >= bytes, "expanded to {capacity}, asked {bytes}");
                None
            }),
        Call::GetVolume(id) => c
            .controller_get_volume(bounded(pb::ControllerGetVolumeRequest { volume_id: id }))
            .await
            .map(|_| None),
        Call::Validate(id) => c
            .validate_volume_capabilities(bounded(pb::ValidateVolumeCapabilitiesRequest {
                volume_id: id,
                volume_capabilities: vec![rwx()],
                ..Default::default()
            }))
            .await
            .map(|_| None),
        Call::List(max) => c
            .list_volumes(bounded(pb::ListVolumesRequest {
                max_entries: max,
                ..Default::default()
            }))
            .await
            .map(|_| None),
        Call::Capacity(params) => c
            .get_capacity(bounded(pb::GetCapacityRequest {
                volume_capabilities: vec![rwx()],
                parameters: params
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
                ..Default::default()
            }))
            .await
            .map(|_| None),
        Call::CreateSnapshot(r) => c.create_snapshot(bounded(r)).await.map(|_| None),
        Call::DeleteSnapshot(id) => c
            .delete_snapshot(bounded(pb::DeleteSnapshotRequest {
                snapshot_id: id,
                ..Default::default()
            }))
            .await
            .map(|_| None),
        Call::Stage(r) => n.node_stage_volume(bounded(r)).await.map(|_| None),
        Call::Unstage(id, path) => n
            .node_unstage_volume(bounded(pb::NodeUnstageVolumeRequest {
                volume_id: id,
                staging_target_path: path,
            }))
            .await
            .map(|_| None),
        Call::Publish(r) => n.node_publish_volume(bounded(r)).await.map(|_| None),
        Call::Unpublish(id, path) => n
            .node_unpublish_volume(bounded(pb::NodeUnpublishVolumeRequest {
                volume_id: id,
                target_path: path,
            }))
            .await
            .map(|_| None),
        Call::Stats(id, path) => n
            .node_get_volume_stats(bounded(pb::NodeGetVolumeStatsRequest {
                volume_id: id,
                volume_path: path,
                ..Default::default()
            }))
            .await
            .map(|_| None),
        Call::Raw(controller, method, bytes) => {
            let socket = if controller {
                &p.controller_socket
            } else {
                &p.node_socket
            };
            raw::unary(socket, method, bytes).await.map(|_| None)
        }
    }
}

/// Runs the table; returns one line per row that got another answer than its code, hung,
/// or left a plugin unable to answer Probe. Volumes rows created are deleted afterwards.
async fn run_table(p: &mut Plugins, cases: Vec<Case>) -> Vec<String> {
    let mut wrong = Vec::new();
    let mut created = Vec::new();
    for Case { what, call, code } in cases {
        let answer = tokio::time::timeout(CALL_BOUND + Duration::from_secs(5), run(p, call)).await;
        match answer {
            Err(_) => wrong.push(format!("{what}: no answer within {CALL_BOUND:?}")),
            Ok(Ok(volume)) => {
                if code != Code::Ok {
                    wrong.push(format!("{what}: succeeded, expected {code:?}"));
                }
                created.extend(volume);
            }
            Ok(Err(s)) if s.code() == code => {}
            Ok(Err(s)) => wrong.push(format!(
                "{what}: {:?} ({}), expected {code:?}",
                s.code(),
                s.message()
            )),
        }
        for (role, socket) in [
            ("controller", &p.controller_socket),
            ("node", &p.node_socket),
        ] {
            let probe = tokio::time::timeout(Duration::from_secs(10), async {
                pfs_csi_tests::csi::identity(socket)
                    .await
                    .probe(pb::ProbeRequest {})
                    .await
            })
            .await;
            if !matches!(probe, Ok(Ok(_))) {
                panic!("the {role} plugin no longer answers Probe after {what}: {probe:?}");
            }
        }
    }
    for volume in created {
        p.controller
            .delete_volume(bounded(pb::DeleteVolumeRequest {
                volume_id: volume.volume_id.clone(),
                ..Default::default()
            }))
            .await
            .unwrap_or_else(|s| panic!("delete {}: {s:?}", volume.volume_id));
    }
    wrong
}

/// What must not change: mounts below the test's temp dir and outside `/tmp`, every entry
/// of the canary directory (with size, mode and modification time), and the top level of
/// the filesystem.
#[derive(Debug, PartialEq, Eq)]
struct Outside {
    mounts: BTreeSet<PathBuf>,
    canary: BTreeSet<(PathBuf, u64, u32, i64, i64)>,
    fs_top: BTreeSet<String>,
}

fn outside(serve: &Serve, canary: &Path, fs_root: &Path) -> Outside {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mut mounts: BTreeSet<PathBuf> = pfs_sim::serve::cleanup::parse_mount_points(&table)
        .into_iter()
        .filter(|p| !p.starts_with("/tmp"))
        .collect();
    mounts.extend(mounted_below(serve.base()));
    let mut entries = BTreeSet::new();
    let mut stack = vec![canary.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let meta = std::fs::symlink_metadata(&dir).unwrap();
        entries.insert((
            dir.clone(),
            meta.size(),
            meta.mode(),
            meta.mtime(),
            meta.mtime_nsec(),
        ));
        if meta.is_dir() {
            for e in std::fs::read_dir(&dir).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    let fs_top = std::fs::read_dir(fs_root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    Outside {
        mounts,
        canary: entries,
        fs_top,
    }
}

/// A canary directory standing in for `/etc`: a file, a subdirectory, a file inside.
fn make_canary(base: &Path) -> PathBuf {
    let canary = base.join("canary-etc");
    std::fs::create_dir_all(canary.join("keep")).unwrap();
    std::fs::write(canary.join("passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
    std::fs::write(canary.join("keep/file"), "keep me\n").unwrap();
    canary
}

fn stage(id: &str, staging: &str, context: &[(&str, &str)]) -> pb::NodeStageVolumeRequest {
    pb::NodeStageVolumeRequest {
        volume_id: id.into(),
        staging_target_path: staging.into(),
        volume_capability: Some(rwx()),
        volume_context: map(context),
        ..Default::default()
    }
}

fn publish(id: &str, staging: &str, target: &str) -> pb::NodePublishVolumeRequest {
    pb::NodePublishVolumeRequest {
        volume_id: id.into(),
        staging_target_path: staging.into(),
        target_path: target.into(),
        volume_capability: Some(rwx()),
        ..Default::default()
    }
}

fn with_capacity(
    mut r: pb::CreateVolumeRequest,
    required: i64,
    limit: i64,
) -> pb::CreateVolumeRequest {
    r.capacity_range = Some(pb::CapacityRange {
        required_bytes: required,
        limit_bytes: limit,
    });
    r
}

fn from_volume(mut r: pb::CreateVolumeRequest, id: &str) -> pb::CreateVolumeRequest {
    r.volume_content_source = Some(pb::VolumeContentSource {
        r#type: Some(pb::volume_content_source::Type::Volume(
            pb::volume_content_source::VolumeSource {
                volume_id: id.into(),
            },
        )),
    });
    r
}

fn from_snapshot(mut r: pb::CreateVolumeRequest, id: &str) -> pb::CreateVolumeRequest {
    r.volume_content_source = Some(pb::VolumeContentSource {
        r#type: Some(pb::volume_content_source::Type::Snapshot(
            pb::volume_content_source::SnapshotSource {
                snapshot_id: id.into(),
            },
        )),
    });
    r
}

fn snapshot(name: &str, source: &str, params: &[(&str, &str)]) -> pb::CreateSnapshotRequest {
    pb::CreateSnapshotRequest {
        source_volume_id: source.into(),
        name: name.into(),
        parameters: map(params),
        ..Default::default()
    }
}

/// A valid message with field `number` appended again as `bytes` (protobuf: the last one
/// wins, so the decoder meets these bytes).
fn with_raw_field(message: impl Message, number: u32, bytes: &[u8]) -> Vec<u8> {
    let mut out = message.encode_to_vec();
    out.extend(raw::field(number, bytes));
    out
}

/// Bytes that are not UTF-8.
const NOT_UTF8: &[u8] = b"vol-\xff\xfe-\xc0\xaf";

/// The rows every filesystem shares: framework-level and core-level checks, and paths.
fn common_cases(
    good: &pb::Volume,
    staging: &str,
    target: &str,
    canary: &Path,
    pods: &Path,
) -> Vec<Case> {
    let id = good.volume_id.as_str();
    let climb = format!("{}/../../../../{}", pods.display(), canary.display());
    let long_id = format!("{id}{}", "a".repeat(129 - id.len()));
    vec![
        // Sizes.
        case(
            "create: negative required_bytes",
            Call::Create(with_capacity(create_request("neg", 0, &[]), -1, 0)),
            Code::InvalidArgument,
        ),
        case(
            "create: negative limit_bytes",
            Call::Create(with_capacity(create_request("neg", 0, &[]), GIB, -GIB)),
            Code::InvalidArgument,
        ),
        case(
            "create: limit below required",
            Call::Create(with_capacity(create_request("inv", 0, &[]), 2 * GIB, GIB)),
            Code::InvalidArgument,
        ),
        case(
            "expand: negative required_bytes",
            Call::Expand(id.into(), -GIB),
            Code::InvalidArgument,
        ),
        // Quotas are thin: a volume as large as CSI can say is allowed (and answered
        // without overflow), as is growing one that far.
        case(
            "expand: i64::MAX",
            Call::Expand(id.into(), i64::MAX),
            Code::Ok,
        ),
        case(
            "list: negative max_entries",
            Call::List(-1),
            Code::InvalidArgument,
        ),
        // Ids: NUL, control characters, 129 bytes, empty.
        case(
            "delete: NUL in the id",
            Call::Delete(format!("{id}\0x")),
            Code::InvalidArgument,
        ),
        case(
            "delete: newline in the id",
            Call::Delete(format!("{id}\nx")),
            Code::InvalidArgument,
        ),
        case(
            "delete: 129-byte id",
            Call::Delete(long_id.clone()),
            Code::InvalidArgument,
        ),
        case(
            "get volume: 129-byte id",
            Call::GetVolume(long_id.clone()),
            Code::InvalidArgument,
        ),
        case(
            "stage: 129-byte id",
            Call::Stage(stage(&long_id, staging, &[])),
            Code::InvalidArgument,
        ),
        case(
            "validate: NUL in the id",
            Call::Validate(format!("{id}\0")),
            Code::InvalidArgument,
        ),
        case(
            "delete snapshot: 129-byte id",
            Call::DeleteSnapshot("s".repeat(129)),
            Code::InvalidArgument,
        ),
        // Node paths that climb out, are relative, or hold NUL.
        case(
            "stage: staging path climbing out with ..",
            Call::Stage(stage(id, &climb, &[])),
            Code::InvalidArgument,
        ),
        case(
            "stage: relative staging path",
            Call::Stage(stage(id, "pods/relative", &[])),
            Code::InvalidArgument,
        ),
        case(
            "stage: NUL in the staging path",
            Call::Stage(stage(id, &format!("{staging}\0/x"), &[])),
            Code::InvalidArgument,
        ),
        case(
            "publish: target climbing out with ..",
            Call::Publish(publish(id, staging, &climb)),
            Code::InvalidArgument,
        ),
        case(
            "publish: staging path climbing out with ..",
            Call::Publish(publish(id, &climb, target)),
            Code::InvalidArgument,
        ),
        case(
            "publish: relative target",
            Call::Publish(publish(id, staging, "etc")),
            Code::InvalidArgument,
        ),
        case(
            "unpublish: target climbing out with ..",
            Call::Unpublish(id.into(), climb.clone()),
            Code::InvalidArgument,
        ),
        case(
            "unstage: staging path climbing out with ..",
            Call::Unstage(id.into(), climb.clone()),
            Code::InvalidArgument,
        ),
        case(
            "stats: volume path climbing out with ..",
            Call::Stats(id.into(), climb.clone()),
            Code::InvalidArgument,
        ),
        // Bytes that are not UTF-8 where protobuf wants a string: refused by the decoder
        // (gRPC's code for a request that cannot be parsed is Internal).
        case(
            "create: name not UTF-8 (raw protobuf)",
            Call::Raw(
                true,
                "/csi.v1.Controller/CreateVolume",
                with_raw_field(create_request("x", GIB, &[]), 1, NOT_UTF8),
            ),
            Code::Internal,
        ),
        case(
            "create: parameter key not UTF-8 (raw protobuf)",
            Call::Raw(true, "/csi.v1.Controller/CreateVolume", {
                let mut m = create_request("x", GIB, &[]).encode_to_vec();
                m.extend(raw::map_entry(4, NOT_UTF8, b"v"));
                m
            }),
            Code::Internal,
        ),
        case(
            "publish: target path not UTF-8 (raw protobuf)",
            Call::Raw(
                false,
                "/csi.v1.Node/NodePublishVolume",
                with_raw_field(publish(id, staging, target), 4, NOT_UTF8),
            ),
            Code::Internal,
        ),
        case(
            "stage: volume id not UTF-8 (raw protobuf)",
            Call::Raw(
                false,
                "/csi.v1.Node/NodeStageVolume",
                with_raw_field(stage(id, staging, &[]), 1, NOT_UTF8),
            ),
            Code::Internal,
        ),
        case(
            "create: garbage that is no protobuf (raw)",
            Call::Raw(true, "/csi.v1.Controller/CreateVolume", vec![0xff; 64]),
            Code::Internal,
        ),
        // Sizes of the message itself.
        case(
            "create: 1 MiB name",
            Call::Create(create_request(&"n".repeat(1 << 20), GIB, &[])),
            Code::InvalidArgument,
        ),
        case(
            "create: 5 MiB message (over the 4 MiB limit)",
            Call::Raw(
                true,
                "/csi.v1.Controller/CreateVolume",
                with_raw_field(create_request("x", GIB, &[]), 1, &vec![b'n'; 5 << 20]),
            ),
            Code::OutOfRange,
        ),
    ]
}

/// Starts serve and returns its clients.
async fn plugins(serve: &Serve) -> Plugins {
    Plugins {
        controller: serve.controller().await,
        node: serve.node().await,
        controller_socket: serve.controller_socket(),
        node_socket: serve.node_socket(),
    }
}

/// What changed between two [`Outside`] snapshots, one line per difference.
fn changes(before: &Outside, after: &Outside) -> Vec<String> {
    fn diff<T: Ord + std::fmt::Debug>(what: &str, a: &BTreeSet<T>, b: &BTreeSet<T>) -> Vec<String> {
        let mut out: Vec<String> = b
            .difference(a)
            .map(|x| format!("{what} appeared: {x:?}"))
            .collect();
        out.extend(
            a.difference(b)
                .map(|x| format!("{what} vanished or changed: {x:?}")),
        );
        out
    }
    let mut out = diff("mount", &before.mounts, &after.mounts);
    out.extend(diff("canary entry", &before.canary, &after.canary));
    out.extend(diff("filesystem entry", &before.fs_top, &after.fs_top));
    out
}

fn report(fs: &str, wrong: &[String]) {
    assert!(
        wrong.is_empty(),
        "{fs}: {} hostile requests got the wrong answer:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[tokio::test]
async fn hostile_lustre_requests_get_exact_codes_and_touch_nothing_outside() {
    let serve = Serve::start(ServeOptions::lustre());
    let mut p = plugins(&serve).await;
    let canary = make_canary(serve.base());
    let fs_root = serve.layout().mounts_dir().join("exa1");
    let pods = serve.layout().root().join("pods");
    let good = create_volume_settled(&mut p.controller, create_request("good", GIB, &[]))
        .await
        .unwrap();
    // A static volume that is a symbolic link planted to lead out of the filesystem.
    let data = serve.fs_data_dir(FsKind::Lustre, "simfs1");
    std::os::unix::fs::symlink(&canary, data.join("evil")).unwrap();
    let staging = serve.pod_path("hostile/staging").display().to_string();
    let target = serve.pod_path("hostile/target").display().to_string();
    let before = outside(&serve, &canary, &fs_root);
    let id = good.volume_id.as_str();
    let canary_text = canary.display().to_string();
    let up = format!(
        "exa1:/../../../../../../{}",
        canary_text.trim_start_matches('/')
    );

    let mut cases = common_cases(&good, &staging, &target, &canary, &pods);
    cases.extend([
        // Names that would climb out, be absolute, hold NUL, be too long, or hide.
        case(
            "create: name ../../etc",
            Call::Create(create_request("../../etc", GIB, &[])),
            Code::InvalidArgument,
        ),
        case(
            "create: absolute name",
            Call::Create(create_request(&canary_text, GIB, &[])),
            Code::InvalidArgument,
        ),
        case(
            "create: name ..",
            Call::Create(create_request("..", GIB, &[])),
            Code::InvalidArgument,
        ),
        case(
            "create: NUL in the name",
            Call::Create(create_request("a\0b", GIB, &[])),
            Code::InvalidArgument,
        ),
        case(
            "create: name of the metadata directory",
            Call::Create(create_request(".pfs-csi", GIB, &[])),
            Code::InvalidArgument,
        ),
        case(
            "create: 129-byte name (the id would pass 128 bytes)",
            Call::Create(create_request(&"n".repeat(129), GIB, &[])),
            Code::InvalidArgument,
        ),
        case(
            "create: the name of a planted symbolic link",
            Call::Create(create_request("evil", GIB, &[])),
            Code::AlreadyExists,
        ),
        case(
            "create: i64::MAX bytes",
            Call::Create(create_request("huge", i64::MAX, &[])),
            Code::Ok,
        ),
        case(
            "create: unknown parameter",
            Call::Create(create_request("unk", GIB, &[("colour", "blue")])),
            Code::InvalidArgument,
        ),
        // Mount-option injection in every place options come from.
        case(
            "create: mountOptions rw,remount",
            Call::Create(create_request(
                "mo1",
                GIB,
                &[("mountOptions", "rw,remount")],
            )),
            Code::InvalidArgument,
        ),
        case(
            "create: mountOptions bind",
            Call::Create(create_request("mo2", GIB, &[("mountOptions", "bind")])),
            Code::InvalidArgument,
        ),
        case(
            "create: mountOptions with an empty item before remount",
            Call::Create(create_request(
                "mo3",
                GIB,
                &[("mountOptions", "flock,,remount")],
            )),
            Code::InvalidArgument,
        ),
        case(
            "create: mountOptions =remount",
            Call::Create(create_request("mo4", GIB, &[("mountOptions", "=remount")])),
            Code::InvalidArgument,
        ),
        case(
            "create: mountOptions a=b=c",
            Call::Create(create_request("mo5", GIB, &[("mountOptions", "a=b=c")])),
            Code::InvalidArgument,
        ),
        case(
            "create: mountOptions naming a path",
            Call::Create(create_request(
                "mo6",
                GIB,
                &[("mountOptions", "context=/etc")],
            )),
            Code::InvalidArgument,
        ),
        case(
            "create: mountOptions REMOUNT in capitals",
            Call::Create(create_request("mo7", GIB, &[("mountOptions", "REMOUNT")])),
            Code::InvalidArgument,
        ),
        case(
            "create: mountOptions x-mount.mkdir",
            Call::Create(create_request(
                "mo8",
                GIB,
                &[("mountOptions", "x-mount.mkdir")],
            )),
            Code::InvalidArgument,
        ),
        case(
            "create: mountOptions with a space and make-shared",
            Call::Create(create_request(
                "mo9",
                GIB,
                &[("mountOptions", "noatime, make-shared")],
            )),
            Code::InvalidArgument,
        ),
        case(
            "create: capability mount flag bind",
            Call::Create({
                let mut r = create_request("mo10", GIB, &[]);
                if let Some(pb::volume_capability::AccessType::Mount(m)) =
                    &mut r.volume_capabilities[0].access_type
                {
                    m.mount_flags = vec!["bind".into()];
                }
                r
            }),
            Code::InvalidArgument,
        ),
        case(
            "create: StorageClass secret mountOptions remount",
            Call::Create({
                let mut r = create_request("mo11", GIB, &[]);
                r.secrets = map(&[("mountOptions", "remount")]);
                r
            }),
            Code::InvalidArgument,
        ),
        case(
            "stage: volume context mountOptions rw,remount",
            Call::Stage(stage(
                id,
                &staging,
                &[("bindMount", "false"), ("mountOptions", "rw,remount")],
            )),
            Code::InvalidArgument,
        ),
        case(
            "stage: capability mount flag bind",
            Call::Stage({
                let mut r = stage(id, &staging, &[("bindMount", "false")]);
                if let Some(pb::volume_capability::AccessType::Mount(m)) = r
                    .volume_capability
                    .as_mut()
                    .and_then(|c| c.access_type.as_mut())
                {
                    m.mount_flags = vec!["bind".into()];
                }
                r
            }),
            Code::InvalidArgument,
        ),
        // Parameters that name ids, modes and filesystems badly.
        case(
            "create: projectId -1",
            Call::Create(create_request("p1", GIB, &[("projectId", "-1")])),
            Code::InvalidArgument,
        ),
        case(
            "create: projectId beyond u32",
            Call::Create(create_request("p2", GIB, &[("projectId", "4294967296")])),
            Code::InvalidArgument,
        ),
        case(
            "create: volumeDirPermissions not octal",
            Call::Create(create_request(
                "p3",
                GIB,
                &[("volumeDirPermissions", "999")],
            )),
            Code::InvalidArgument,
        ),
        case(
            "create: exaFS climbing out with ..",
            Call::Create(create_request(
                "p4",
                GIB,
                &[("exaFS", "127.0.0.1@tcp:/simfs1/../../etc")],
            )),
            Code::InvalidArgument,
        ),
        case(
            "stage: volume context exaFS climbing out with ..",
            Call::Stage(stage(
                id,
                &staging,
                &[("exaFS", "127.0.0.1@tcp:/simfs1/../../etc")],
            )),
            Code::InvalidArgument,
        ),
        case(
            "stage: node-stage secret exaFS climbing out with ..",
            Call::Stage({
                let mut r = stage(id, &staging, &[]);
                r.secrets = map(&[("exaFS", "127.0.0.1@tcp:/simfs1/../..")]);
                r
            }),
            Code::InvalidArgument,
        ),
        case(
            "capacity: unknown parameter",
            Call::Capacity(vec![("colour", "blue".into())]),
            Code::InvalidArgument,
        ),
        // Volume ids that climb out of the filesystem or point into the driver's records.
        case(
            "delete: exa1:/../../etc",
            Call::Delete("exa1:/../../etc".into()),
            Code::InvalidArgument,
        ),
        case(
            "delete: climbing to the canary",
            Call::Delete(up.clone()),
            Code::InvalidArgument,
        ),
        case(
            "delete: the metadata directory",
            Call::Delete("exa1:/.pfs-csi".into()),
            Code::InvalidArgument,
        ),
        case(
            "delete: a record file",
            Call::Delete("exa1:/.pfs-csi/volumes/good.json".into()),
            Code::InvalidArgument,
        ),
        case(
            "delete: a planted symbolic link (not ours: left in place)",
            Call::Delete("exa1:/evil".into()),
            Code::FailedPrecondition,
        ),
        case(
            "expand: exa1:/../x",
            Call::Expand("exa1:/../x".into(), 2 * GIB),
            Code::InvalidArgument,
        ),
        case(
            "get volume: exa1:/../../etc",
            Call::GetVolume("exa1:/../../etc".into()),
            Code::InvalidArgument,
        ),
        case(
            "stage: exa1:/../../etc",
            Call::Stage(stage("exa1:/../../etc", &staging, &[])),
            Code::InvalidArgument,
        ),
        case(
            "stage: climbing to the canary",
            Call::Stage(stage(&up, &staging, &[])),
            Code::InvalidArgument,
        ),
        case(
            "stage: absolute path of the canary as a handle",
            Call::Stage(stage(&format!("exa1:{canary_text}"), &staging, &[])),
            Code::NotFound,
        ),
        case(
            "stage: a planted symbolic link leading out",
            Call::Stage(stage("exa1:/evil", &staging, &[])),
            Code::FailedPrecondition,
        ),
        case(
            "stage: a planted symbolic link leading out, own mount",
            Call::Stage(stage("exa1:/evil", &staging, &[("bindMount", "false")])),
            Code::NotFound,
        ),
        case(
            "publish: exa1:/../../etc",
            Call::Publish(publish("exa1:/../../etc", &staging, &target)),
            Code::InvalidArgument,
        ),
        case(
            "create: cloned from exa1:/../../etc",
            Call::Create(from_volume(
                create_request("clone1", GIB, &[]),
                "exa1:/../../etc",
            )),
            Code::InvalidArgument,
        ),
        case(
            "create: cloned from a planted symbolic link",
            Call::Create(from_volume(
                create_request("clone2", GIB, &[]),
                "exa1:/evil",
            )),
            Code::FailedPrecondition,
        ),
        case(
            "create: restored from snapshot exa1:snapshot:../../x",
            Call::Create(from_snapshot(
                create_request("restore1", GIB, &[]),
                "exa1:snapshot:../../x",
            )),
            Code::InvalidArgument,
        ),
        // Snapshots.
        case(
            "snapshot: name ../x",
            Call::CreateSnapshot(snapshot("../x", id, &[])),
            Code::InvalidArgument,
        ),
        case(
            "snapshot: source exa1:/../x",
            Call::CreateSnapshot(snapshot("s1", "exa1:/../x", &[])),
            Code::InvalidArgument,
        ),
        case(
            "snapshot: source a planted symbolic link (refused as a clone source is)",
            Call::CreateSnapshot(snapshot("s2", "exa1:/evil", &[])),
            Code::FailedPrecondition,
        ),
        case(
            "snapshot: snapshotFolder climbing out",
            Call::CreateSnapshot(snapshot("s3", id, &[("snapshotFolder", "../../etc")])),
            Code::InvalidArgument,
        ),
        case(
            "delete snapshot: exa1:snapshot:../../x",
            Call::DeleteSnapshot("exa1:snapshot:../../x".into()),
            Code::InvalidArgument,
        ),
    ]);
    let mut wrong = run_table(&mut p, cases).await;
    wrong.extend(changes(&before, &outside(&serve, &canary, &fs_root)));
    assert!(
        std::fs::symlink_metadata(data.join("evil"))
            .unwrap()
            .file_type()
            .is_symlink(),
        "the planted link was removed or replaced"
    );
    report("lustre", &wrong);
}

#[tokio::test]
async fn hostile_beegfs_requests_get_exact_codes_and_touch_nothing_outside() {
    let serve = Serve::start(ServeOptions::beegfs8());
    let mut p = plugins(&serve).await;
    let canary = make_canary(serve.base());
    let host = "sim-mgmtd-1";
    let fs_root = serve.fs_data_dir(FsKind::Beegfs, host);
    let base = BEEGFS_VOL_DIR_BASE.trim_start_matches('/');
    let pods = serve.layout().root().join("pods");
    let params = [
        ("sysMgmtdHost", host),
        ("volDirBasePath", BEEGFS_VOL_DIR_BASE),
    ];
    let good = create_volume_settled(&mut p.controller, create_request("good", GIB, &params))
        .await
        .unwrap();
    let vol_base = fs_root.join(base);
    std::os::unix::fs::symlink(&canary, vol_base.join("evil")).unwrap();
    let staging = serve.pod_path("hostile/staging").display().to_string();
    let target = serve.pod_path("hostile/target").display().to_string();
    let before = outside(&serve, &canary, &vol_base);
    let id = good.volume_id.as_str();
    let evil = format!("beegfs://{host}/{base}/evil");
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut all: Vec<(&str, &str)> = params.to_vec();
        for (k, v) in extra {
            all.retain(|(key, _)| key != k);
            all.push((k, v));
        }
        all
    };

    let mut cases = common_cases(&good, &staging, &target, &canary, &pods);
    cases.extend([
        case(
            "create: name ../../etc",
            Call::Create(create_request("../../etc", GIB, &params)),
            Code::InvalidArgument,
        ),
        case(
            "create: NUL in the name",
            Call::Create(create_request("a\0b", GIB, &params)),
            Code::InvalidArgument,
        ),
        case(
            "create: i64::MAX bytes",
            Call::Create(create_request("huge", i64::MAX, &params)),
            Code::Ok,
        ),
        case(
            "create: unknown parameter",
            Call::Create(create_request("unk", GIB, &with(&[("colour", "blue")]))),
            Code::InvalidArgument,
        ),
        case(
            "create: volDirBasePath climbing out",
            Call::Create(create_request(
                "b1",
                GIB,
                &with(&[("volDirBasePath", "/k8s/../../etc")]),
            )),
            Code::InvalidArgument,
        ),
        case(
            "create: sysMgmtdHost holding a path",
            Call::Create(create_request(
                "b2",
                GIB,
                &with(&[("sysMgmtdHost", "host/../x")]),
            )),
            Code::InvalidArgument,
        ),
        case(
            "create: sysMgmtdHost that reads as a tool option",
            Call::Create(create_request(
                "b3",
                GIB,
                &with(&[("sysMgmtdHost", "--unmounted")]),
            )),
            Code::InvalidArgument,
        ),
        case(
            "create: sysMgmtdHost with NUL",
            Call::Create(create_request(
                "b4",
                GIB,
                &with(&[("sysMgmtdHost", "h\0x")]),
            )),
            Code::InvalidArgument,
        ),
        case(
            "create: cloned from a planted symbolic link",
            Call::Create(from_volume(create_request("clone2", GIB, &params), &evil)),
            Code::FailedPrecondition,
        ),
        case(
            "create: permissions/uid -1",
            Call::Create(create_request(
                "b5",
                GIB,
                &with(&[("permissions/uid", "-1")]),
            )),
            Code::InvalidArgument,
        ),
        case(
            "create: permissions/mode not octal",
            Call::Create(create_request(
                "b6",
                GIB,
                &with(&[("permissions/mode", "0999")]),
            )),
            Code::InvalidArgument,
        ),
        case(
            "create: capability mount flag remount",
            Call::Create({
                let mut r = create_request("b7", GIB, &params);
                if let Some(pb::volume_capability::AccessType::Mount(m)) =
                    &mut r.volume_capabilities[0].access_type
                {
                    m.mount_flags = vec!["rw,remount".into()];
                }
                r
            }),
            Code::InvalidArgument,
        ),
        case(
            "stage: capability mount flag bind",
            Call::Stage({
                let mut r = stage(id, &staging, &[]);
                if let Some(pb::volume_capability::AccessType::Mount(m)) = r
                    .volume_capability
                    .as_mut()
                    .and_then(|c| c.access_type.as_mut())
                {
                    m.mount_flags = vec!["bind".into()];
                }
                r
            }),
            Code::InvalidArgument,
        ),
        case(
            "delete: beegfs://h/../x",
            Call::Delete(format!("beegfs://{host}/../x")),
            Code::InvalidArgument,
        ),
        case(
            "delete: climbing out below the base",
            Call::Delete(format!("beegfs://{host}/{base}/../../../etc")),
            Code::InvalidArgument,
        ),
        case(
            "delete: empty host",
            Call::Delete("beegfs:///k8s/volumes/x".into()),
            Code::InvalidArgument,
        ),
        case(
            "delete: a planted symbolic link (not ours: left in place)",
            Call::Delete(evil.clone()),
            Code::FailedPrecondition,
        ),
        case(
            "expand: beegfs://h/../x",
            Call::Expand(format!("beegfs://{host}/../x"), 2 * GIB),
            Code::InvalidArgument,
        ),
        case(
            "stage: beegfs://h/../x",
            Call::Stage(stage(&format!("beegfs://{host}/../x"), &staging, &[])),
            Code::InvalidArgument,
        ),
        case(
            "stage: a planted symbolic link leading out",
            Call::Stage(stage(&evil, &staging, &[])),
            Code::FailedPrecondition,
        ),
        case(
            "publish: beegfs://h/../x",
            Call::Publish(publish(&format!("beegfs://{host}/../x"), &staging, &target)),
            Code::InvalidArgument,
        ),
        case(
            "snapshot: source beegfs://h/../x",
            Call::CreateSnapshot(snapshot("s1", &format!("beegfs://{host}/../x"), &[])),
            Code::InvalidArgument,
        ),
        case(
            "delete snapshot: beegfs-snap://h/../x",
            Call::DeleteSnapshot(format!("beegfs-snap://{host}/../x")),
            Code::InvalidArgument,
        ),
    ]);
    let mut wrong = run_table(&mut p, cases).await;
    wrong.extend(changes(&before, &outside(&serve, &canary, &vol_base)));
    report("beegfs", &wrong);
}
