//! Lustre end to end: the real controller and node binaries over gRPC against the simulated
//! Lustre filesystem of `pfs-csi-sim serve`.

use pfs_sim::state::FsKind;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use pfs_csi_tests::csi::{
    GIB, create_request, create_volume_settled, delete_request, expect_publish_refused_as_unstaged,
    expect_status, map, publish_request, rwx, stage_request, unpublish_request, unstage_request,
    usage, wait_snapshot_ready,
};
use pfs_csi_tests::mounts::is_mount_point;
use pfs_csi_tests::proto::v1 as pb;
use pfs_csi_tests::serve::shared;
use pfs_csi_tests::{Serve, ServeOptions};
use pfs_sim::faults::{FaultAction, FaultRule};
use tonic::Code;

static SERVE: OnceLock<Serve> = OnceLock::new();

/// One simulated cluster `exa1`, shared by the tests that do not inject faults.
fn serve() -> &'static Serve {
    shared(&SERVE, ServeOptions::lustre)
}

/// Where the volume `<entry>:/<dir>` lives, seen through the controller's mount.
fn volume_dir(serve: &Serve, volume_id: &str) -> PathBuf {
    let (entry, path) = volume_id
        .split_once(':')
        .unwrap_or_else(|| panic!("{volume_id} is not an <entry>:/<dir> id"));
    serve
        .layout()
        .mounts_dir()
        .join(entry)
        .join(path.trim_start_matches('/'))
}

/// The project id `lfs project -d` reports for `dir`.
fn project_id(serve: &Serve, dir: &Path) -> u32 {
    let out = serve.sim_tool("lfs", &["project", "-d", dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "lfs project -d {}: {out:?}",
        dir.display()
    );
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .next()
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("unexpected lfs project output {text:?}"))
}

fn ids(volumes: &[pb::Volume]) -> Vec<String> {
    volumes.iter().map(|v| v.volume_id.clone()).collect()
}

#[tokio::test]
async fn dynamic_volume_lives_through_its_whole_lifecycle() {
    let serve = serve();
    let mut controller = serve.controller().await;
    let mut node = serve.node().await;

    // Create without parameters: the only cluster serves it.
    let volume = create_volume_settled(&mut controller, create_request("dyn-1", GIB, &[]))
        .await
        .unwrap();
    assert!(volume.capacity_bytes >= GIB, "{volume:?}");
    let dir = volume_dir(serve, &volume.volume_id);
    assert!(dir.is_dir(), "{} not created", dir.display());
    assert!(
        project_id(serve, &dir) > 0,
        "no project id on {}",
        dir.display()
    );
    // Same name and parameters: the same volume.
    let again = create_volume_settled(&mut controller, create_request("dyn-1", GIB, &[]))
        .await
        .unwrap();
    assert_eq!(again.volume_id, volume.volume_id);

    // Stage and publish read-write; write through the target. Published before it is
    // staged, the volume is refused and nothing is mounted: the staging directory alone
    // is the kubelet's, not the volume.
    let staging = serve.pod_path("dyn-1/staging");
    let target = serve.pod_path("dyn-1/target");
    std::fs::create_dir_all(&staging).unwrap();
    expect_publish_refused_as_unstaged(&mut node, &volume, &staging, &target).await;
    node.node_stage_volume(stage_request(&volume, &staging, rwx()))
        .await
        .unwrap();
    node.node_publish_volume(publish_request(&volume, &staging, &target, rwx(), false))
        .await
        .unwrap();
    assert!(is_mount_point(&target));
    let payload = b"written through the published target\n";
    std::fs::write(target.join("hello.txt"), payload).unwrap();
    assert_eq!(std::fs::read(dir.join("hello.txt")).unwrap(), payload);

    // A read-only publish refuses writes.
    let target_ro = serve.pod_path("dyn-1/target-ro");
    node.node_publish_volume(publish_request(&volume, &staging, &target_ro, rwx(), true))
        .await
        .unwrap();
    assert_eq!(std::fs::read(target_ro.join("hello.txt")).unwrap(), payload);
    let refused = std::fs::write(target_ro.join("nope.txt"), b"x").unwrap_err();
    assert_eq!(refused.raw_os_error(), Some(libc::EROFS), "{refused}");

    // Expand: Lustre quotas count whole KiB, so a range holding no multiple of 1024 bytes
    // is out of range, and nothing changes.
    expect_status(
        controller
            .controller_expand_volume(pb::ControllerExpandVolumeRequest {
                volume_id: volume.volume_id.clone(),
                capacity_range: Some(pb::CapacityRange {
                    required_bytes: 2 * GIB + 1,
                    limit_bytes: 2 * GIB + 100,
                }),
                ..Default::default()
            })
            .await,
        Code::OutOfRange,
        "1024",
    );
    // Expand: no node expansion needed.
    let expanded = controller
        .controller_expand_volume(pb::ControllerExpandVolumeRequest {
            volume_id: volume.volume_id.clone(),
            capacity_range: Some(pb::CapacityRange {
                required_bytes: 2 * GIB,
                limit_bytes: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(expanded.capacity_bytes >= 2 * GIB, "{expanded:?}");
    assert!(!expanded.node_expansion_required);

    // Stats answer with a healthy condition (their figures: see the quota stats test).
    let stats = node
        .node_get_volume_stats(pb::NodeGetVolumeStatsRequest {
            volume_id: volume.volume_id.clone(),
            volume_path: target.display().to_string(),
            staging_target_path: staging.display().to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    let condition = stats.volume_condition.clone().unwrap_or_default();
    assert!(!condition.abnormal, "{condition:?}");
    let bytes = usage(&stats, pb::volume_usage::Unit::Bytes).expect("byte usage");
    assert!(bytes.used >= payload.len() as i64, "{stats:?}");

    // Snapshot, wait until it is cut, restore it into a new volume.
    let snapshot = controller
        .create_snapshot(pb::CreateSnapshotRequest {
            source_volume_id: volume.volume_id.clone(),
            name: "dyn-1-snap".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    assert_eq!(snapshot.source_volume_id, volume.volume_id);
    let snapshot = wait_snapshot_ready(&mut controller, &snapshot.snapshot_id).await;
    let mut restore = create_request("dyn-1-restore", 2 * GIB, &[]);
    restore.volume_content_source = Some(pb::VolumeContentSource {
        r#type: Some(pb::volume_content_source::Type::Snapshot(
            pb::volume_content_source::SnapshotSource {
                snapshot_id: snapshot.snapshot_id.clone(),
            },
        )),
    });
    let restored = create_volume_settled(&mut controller, restore)
        .await
        .unwrap();
    assert_ne!(restored.volume_id, volume.volume_id);
    assert_eq!(
        std::fs::read(volume_dir(serve, &restored.volume_id).join("hello.txt")).unwrap(),
        payload
    );

    // Clone the volume.
    let mut clone = create_request("dyn-1-clone", 2 * GIB, &[]);
    clone.volume_content_source = Some(pb::VolumeContentSource {
        r#type: Some(pb::volume_content_source::Type::Volume(
            pb::volume_content_source::VolumeSource {
                volume_id: volume.volume_id.clone(),
            },
        )),
    });
    let cloned = create_volume_settled(&mut controller, clone).await.unwrap();
    assert_eq!(
        std::fs::read(volume_dir(serve, &cloned.volume_id).join("hello.txt")).unwrap(),
        payload
    );
    assert_ne!(
        project_id(serve, &volume_dir(serve, &cloned.volume_id)),
        project_id(serve, &dir),
        "a clone needs its own project"
    );

    // Unpublish, unstage (twice each: idempotent).
    for t in [&target, &target_ro] {
        for _ in 0..2 {
            node.node_unpublish_volume(unpublish_request(&volume.volume_id, t))
                .await
                .unwrap();
        }
        assert!(!is_mount_point(t), "{} still mounted", t.display());
    }
    for _ in 0..2 {
        node.node_unstage_volume(unstage_request(&volume.volume_id, &staging))
            .await
            .unwrap();
    }
    assert!(!is_mount_point(&staging));

    // Delete everything: the directories are gone; deleting again is fine.
    controller
        .delete_snapshot(pb::DeleteSnapshotRequest {
            snapshot_id: snapshot.snapshot_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    for v in [&volume, &restored, &cloned] {
        for _ in 0..2 {
            controller
                .delete_volume(delete_request(&v.volume_id))
                .await
                .unwrap();
        }
        assert!(
            !volume_dir(serve, &v.volume_id).exists(),
            "{} left behind",
            v.volume_id
        );
    }
    let listed = controller
        .list_volumes(pb::ListVolumesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let left: Vec<String> = listed
        .entries
        .iter()
        .filter_map(|e| e.volume.as_ref())
        .map(|v| v.volume_id.clone())
        .filter(|id| id.contains("dyn-1"))
        .collect();
    assert!(left.is_empty(), "still listed: {left:?}");
}

#[tokio::test]
async fn stats_report_the_project_quota_and_its_usage() {
    let serve = serve();
    let mut controller = serve.controller().await;
    let mut node = serve.node().await;
    let volume = create_volume_settled(&mut controller, create_request("stats-1", GIB, &[]))
        .await
        .unwrap();
    let staging = serve.pod_path("stats-1/staging");
    let target = serve.pod_path("stats-1/target");
    node.node_stage_volume(stage_request(&volume, &staging, rwx()))
        .await
        .unwrap();
    node.node_publish_volume(publish_request(&volume, &staging, &target, rwx(), false))
        .await
        .unwrap();
    let payload = vec![7u8; 3 << 20];
    std::fs::write(target.join("three-mib"), &payload).unwrap();
    let expanded = controller
        .controller_expand_volume(pb::ControllerExpandVolumeRequest {
            volume_id: volume.volume_id.clone(),
            capacity_range: Some(pb::CapacityRange {
                required_bytes: 2 * GIB,
                limit_bytes: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // The simulated filesystem's free space is the host's: sampled around the call.
    let data = serve.fs_data_dir(FsKind::Lustre, "simfs1");
    let free = || {
        let st = nix::sys::statvfs::statvfs(&data).unwrap();
        st.blocks_available() as i64 * st.fragment_size() as i64
    };
    let free_before = free();
    let stats = node
        .node_get_volume_stats(pb::NodeGetVolumeStatsRequest {
            volume_id: volume.volume_id.clone(),
            volume_path: target.display().to_string(),
            staging_target_path: staging.display().to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    let free_after = free();
    // Clean up before asserting, so a failure leaves the shared fixture tidy.
    node.node_unpublish_volume(unpublish_request(&volume.volume_id, &target))
        .await
        .unwrap();
    node.node_unstage_volume(unstage_request(&volume.volume_id, &staging))
        .await
        .unwrap();
    controller
        .delete_volume(delete_request(&volume.volume_id))
        .await
        .unwrap();

    let bytes = usage(&stats, pb::volume_usage::Unit::Bytes).expect("byte usage");
    assert_eq!(
        bytes.total, expanded.capacity_bytes,
        "total should be the volume's project quota, not the whole filesystem: {stats:?}"
    );
    assert!(
        bytes.used >= payload.len() as i64 && bytes.used < (payload.len() as i64) * 2,
        "used should count the volume's own files only: {stats:?}"
    );
    // What the quota leaves, unless the filesystem itself has less free space.
    let quota_left = bytes.total - bytes.used;
    if free_before.min(free_after) >= quota_left {
        assert_eq!(bytes.available, quota_left, "{stats:?}");
    } else {
        assert!(
            bytes.available <= free_before.max(free_after) && bytes.available < quota_left,
            "available should be the filesystem's free space when below the quota's: {stats:?}"
        );
    }
}

#[tokio::test]
async fn static_volume_is_served_and_never_deleted() {
    let serve = serve();
    let mut controller = serve.controller().await;
    let mut node = serve.node().await;
    let mount_point = serve.layout().mounts_dir().join("exa1");
    // The pre-existing data is made on the filesystem itself (its server side), as an
    // administrator would have; whether the controller has it mounted yet does not matter.
    let server_side = serve
        .fs_data_dir(FsKind::Lustre, "simfs1")
        .join("static-data");
    std::fs::create_dir_all(&server_side).unwrap();
    std::fs::write(
        server_side.join("existing.txt"),
        b"made before the driver\n",
    )
    .unwrap();
    // A 2.0-2.2.5 handle: <entry>:<mountPoint>/<dir>.
    let data = mount_point.join("static-data");
    let handle = format!("exa1:{}", data.display());
    let volume = pb::Volume {
        volume_id: handle.clone(),
        volume_context: map(&[]),
        ..Default::default()
    };

    let staging = serve.pod_path("static/staging");
    let target = serve.pod_path("static/target");
    node.node_stage_volume(stage_request(&volume, &staging, rwx()))
        .await
        .unwrap();
    node.node_publish_volume(publish_request(&volume, &staging, &target, rwx(), false))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(target.join("existing.txt")).unwrap(),
        b"made before the driver\n"
    );
    std::fs::write(target.join("from-pod.txt"), b"pod").unwrap();
    assert!(server_side.join("from-pod.txt").exists());
    node.node_unpublish_volume(unpublish_request(&handle, &target))
        .await
        .unwrap();
    node.node_unstage_volume(unstage_request(&handle, &staging))
        .await
        .unwrap();

    expect_status(
        controller.delete_volume(delete_request(&handle)).await,
        Code::FailedPrecondition,
        "",
    );
    assert!(server_side.join("existing.txt").exists() && server_side.join("from-pod.txt").exists());
    std::fs::remove_dir_all(&server_side).unwrap();
}

#[tokio::test]
async fn concurrent_creates_make_one_directory_per_name_with_unique_project_ids() {
    let serve = serve();
    let client = serve.controller().await;

    let mut tasks = Vec::new();
    for i in 0..50 {
        let mut c = client.clone();
        tasks.push(tokio::spawn(async move {
            create_volume_settled(&mut c, create_request(&format!("conc-{i}"), GIB, &[])).await
        }));
    }
    for _ in 0..10 {
        let mut c = client.clone();
        tasks.push(tokio::spawn(async move {
            create_volume_settled(&mut c, create_request("conc-same", GIB, &[])).await
        }));
    }
    let mut volumes = Vec::new();
    for task in tasks {
        volumes.push(task.await.unwrap().unwrap_or_else(|s| panic!("{s:?}")));
    }
    let distinct: BTreeSet<String> = ids(&volumes[..50]).into_iter().collect();
    assert_eq!(distinct.len(), 50);
    let same: BTreeSet<String> = ids(&volumes[50..]).into_iter().collect();
    assert_eq!(same.len(), 1, "one volume for one name: {same:?}");
    let same_id = same.into_iter().next().unwrap();
    assert!(!distinct.contains(&same_id));

    let mount_point = serve.layout().mounts_dir().join("exa1");
    let dirs: Vec<String> = std::fs::read_dir(&mount_point)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("conc-same"))
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");

    let mut projects = BTreeSet::new();
    for id in distinct.iter().chain(std::iter::once(&same_id)) {
        let project = project_id(serve, &volume_dir(serve, id));
        assert!(project > 0);
        assert!(projects.insert(project), "project id {project} used twice");
    }

    let mut deletes = Vec::new();
    for id in distinct.into_iter().chain(std::iter::once(same_id)) {
        let mut c = client.clone();
        deletes.push(tokio::spawn(async move {
            c.delete_volume(delete_request(&id)).await.map(|_| id)
        }));
    }
    for d in deletes {
        let id = d.await.unwrap().unwrap();
        assert!(!volume_dir(serve, &id).exists());
    }
}

#[tokio::test]
async fn topology_picks_the_cluster_of_the_required_or_preferred_zone() {
    let serve = Serve::start(ServeOptions::lustre().zones(&["zone-a", "zone-b"]));
    let mut controller = serve.controller().await;
    let zone = |z: &str| pb::Topology {
        segments: map(&[("topology.exa.csi.ddn.com/zone", z)]),
    };
    let with_topology = |name: &str, requisite: Vec<pb::Topology>, preferred: Vec<pb::Topology>| {
        let mut r = create_request(name, GIB, &[]);
        r.accessibility_requirements = Some(pb::TopologyRequirement {
            requisite,
            preferred,
        });
        r
    };

    let b = create_volume_settled(
        &mut controller,
        with_topology("topo-b", vec![zone("zone-b")], vec![]),
    )
    .await
    .unwrap();
    assert!(b.volume_id.starts_with("exa2:"), "{b:?}");
    assert_eq!(b.accessible_topology, vec![zone("zone-b")]);
    assert!(volume_dir(&serve, &b.volume_id).is_dir());

    let a = create_volume_settled(
        &mut controller,
        with_topology(
            "topo-a",
            vec![zone("zone-b"), zone("zone-a")],
            vec![zone("zone-a"), zone("zone-b")],
        ),
    )
    .await
    .unwrap();
    assert!(a.volume_id.starts_with("exa1:"), "{a:?}");
    assert_eq!(a.accessible_topology, vec![zone("zone-a")]);

    let preferred_b = create_volume_settled(
        &mut controller,
        with_topology(
            "topo-pref-b",
            vec![zone("zone-a"), zone("zone-b")],
            vec![zone("zone-b")],
        ),
    )
    .await
    .unwrap();
    assert!(
        preferred_b.volume_id.starts_with("exa2:"),
        "{preferred_b:?}"
    );

    expect_status(
        controller
            .create_volume(with_topology("topo-c", vec![zone("zone-c")], vec![]))
            .await,
        Code::ResourceExhausted,
        "",
    );

    for v in [&a, &b, &preferred_b] {
        controller
            .delete_volume(delete_request(&v.volume_id))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_failing_lfs_leaves_a_clear_error_and_no_half_made_volume() {
    let serve = Serve::start(ServeOptions::lustre());
    let mut controller = serve.controller().await;
    serve.fault(FaultRule {
        tool: "lfs".into(),
        args_contain: vec!["setquota".into()],
        action: FaultAction::Fail {
            exit_code: 1,
            stderr: "lfs setquota: quotactl failed: Operation not permitted".into(),
        },
        times: None,
    });
    let status = controller
        .create_volume(create_request("fault-quota", GIB, &[]))
        .await
        .unwrap_err();
    assert!(
        status.message().contains("quotactl failed"),
        "the tool's error should reach the caller: {status:?}"
    );
    assert!(
        matches!(status.code(), Code::Internal | Code::Unavailable),
        "{status:?}"
    );
    let mount_point = serve.layout().mounts_dir().join("exa1");
    let leftovers: Vec<String> = std::fs::read_dir(&mount_point)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("fault-quota"))
        .collect();
    assert!(leftovers.is_empty(), "half-made volume left: {leftovers:?}");
    let listed = controller
        .list_volumes(pb::ListVolumesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(
        listed.entries.is_empty(),
        "a failed create is listed: {listed:?}"
    );

    // Once lfs works again, the same request succeeds.
    serve.clear_faults();
    let volume = create_volume_settled(&mut controller, create_request("fault-quota", GIB, &[]))
        .await
        .unwrap();
    assert!(volume_dir(&serve, &volume.volume_id).is_dir());
    controller
        .delete_volume(delete_request(&volume.volume_id))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_hanging_mount_times_out_while_other_volumes_keep_working() {
    let serve = Serve::start(ServeOptions::lustre().filesystems(2).overlay(
        "pfsCsi:\n  lustre:\n    mountTimeoutSeconds: 3\n    commandTimeoutSeconds: 10\n",
    ));
    let mut controller = serve.controller().await;
    let mut node = serve.node().await;
    // A working volume on exa1 first (its filesystem is mounted before the fault).
    let good = create_volume_settled(
        &mut controller,
        create_request("hang-good", GIB, &[("configName", "exa1")]),
    )
    .await
    .unwrap();
    assert!(good.volume_id.starts_with("exa1:"), "{good:?}");

    // Every mount of simfs2 hangs.
    serve.fault(FaultRule {
        tool: "mount".into(),
        args_contain: vec!["simfs2".into()],
        action: FaultAction::Hang,
        times: None,
    });
    let mut hanging_client = controller.clone();
    let hanging = tokio::spawn(async move {
        let started = Instant::now();
        let mut request = create_request("hang-bad", GIB, &[("configName", "exa2")]);
        request.volume_capabilities = vec![rwx()];
        let mut call = tonic::Request::new(request);
        call.set_timeout(Duration::from_secs(60));
        let result = hanging_client.create_volume(call).await;
        (result, started.elapsed())
    });

    // Meanwhile the exa1 volume stages, publishes and takes writes.
    let staging = serve.pod_path("hang-good/staging");
    let target = serve.pod_path("hang-good/target");
    node.node_stage_volume(stage_request(&good, &staging, rwx()))
        .await
        .unwrap();
    node.node_publish_volume(publish_request(&good, &staging, &target, rwx(), false))
        .await
        .unwrap();
    std::fs::write(target.join("still-working"), b"yes").unwrap();

    let (result, elapsed) = hanging.await.unwrap();
    let status = result.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        elapsed >= Duration::from_secs(3) && elapsed < Duration::from_secs(20),
        "answered after {elapsed:?}, expected the 3 s mount timeout"
    );

    // A node-side mount of its own (bindMount: false) hangs too and times out the same way.
    let own = create_volume_settled(
        &mut controller,
        create_request(
            "hang-own-mount",
            GIB,
            &[("configName", "exa1"), ("bindMount", "false")],
        ),
    )
    .await
    .unwrap();
    serve.fault(FaultRule {
        tool: "mount".into(),
        args_contain: vec!["hang-own-mount".into()],
        action: FaultAction::Hang,
        times: None,
    });
    let started = Instant::now();
    let own_staging = serve.pod_path("hang-own/staging");
    let status = node
        .node_stage_volume(stage_request(&own, &own_staging, rwx()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(!is_mount_point(&own_staging));
    assert_eq!(std::fs::read(target.join("still-working")).unwrap(), b"yes");

    serve.clear_faults();
    node.node_unpublish_volume(unpublish_request(&good.volume_id, &target))
        .await
        .unwrap();
    node.node_unstage_volume(unstage_request(&good.volume_id, &staging))
        .await
        .unwrap();
    node.node_unstage_volume(unstage_request(&own.volume_id, &own_staging))
        .await
        .unwrap();
    for v in [&good, &own] {
        controller
            .delete_volume(delete_request(&v.volume_id))
            .await
            .unwrap();
    }
}
