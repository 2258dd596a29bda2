//! Reliability of the real plugins on the simulated Lustre filesystem:
//! - a node plugin killed with SIGKILL and started again still unpublishes and unstages the
//!   volumes it had published, from what the mount table says;
//! - a tool or a mount that never returns gives `DeadlineExceeded` within the configured
//!   timeout, other volumes are served meanwhile, and no thread, child process or file
//!   descriptor is leaked;
//! - unpublishing from a filesystem that no longer answers (a FUSE mount whose server never
//!   replies) returns, and the plugin answers Probe meanwhile;
//! - 1,000 concurrent requests across 100 volumes fail only with `Aborted` (a same-volume
//!   race), never otherwise.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pfs_csi_tests::csi::{
    GIB, create_request, create_volume_settled, delete_request, expect_status, publish_request,
    rwop, rwx, stage_request, unpublish_request, unstage_request,
};
use pfs_csi_tests::mounts::{is_mount_point, mounted_below};
use pfs_csi_tests::plugin::{PluginOptions, PluginProcess, Role};
use pfs_csi_tests::proto::v1 as pb;
use pfs_csi_tests::{Serve, ServeOptions};
use pfs_sim::faults::{FaultAction, FaultRule};
use tonic::Code;

/// A request bounded in time, so a hung plugin fails the test instead of blocking it.
fn bounded<T>(message: T, seconds: u64) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(Duration::from_secs(seconds));
    request
}

#[tokio::test]
async fn a_restarted_node_plugin_unpublishes_and_unstages_what_it_had_published() {
    let serve = Serve::start(ServeOptions::lustre());
    let mut controller = serve.controller().await;
    let socket = serve.base().join("restart-node.sock");
    let mut node_plugin = PluginProcess::start_with(
        Role::Node,
        &serve,
        &socket,
        PluginOptions {
            state_dir: Some(serve.base().join("restart-node-state")),
            ..Default::default()
        },
    );
    node_plugin.wait_ready().await;
    let mut node = node_plugin.node().await;

    // Volumes bind-mounted from the shared filesystem mount, one with a Lustre mount of its
    // own, one ReadWriteOncePod; the first also published read-only at a second target.
    let mut volumes = Vec::new();
    for (name, params, capability) in [
        ("nr-1", vec![], rwx()),
        ("nr-2", vec![], rwx()),
        ("nr-3", vec![("bindMount", "false")], rwx()),
        ("nr-4", vec![], rwop()),
    ] {
        let volume = create_volume_settled(&mut controller, create_request(name, GIB, &params))
            .await
            .unwrap();
        let staging = serve.pod_path(&format!("{name}/staging"));
        let target = serve.pod_path(&format!("{name}/target"));
        node.node_stage_volume(stage_request(&volume, &staging, capability.clone()))
            .await
            .unwrap();
        node.node_publish_volume(publish_request(
            &volume,
            &staging,
            &target,
            capability.clone(),
            false,
        ))
        .await
        .unwrap();
        std::fs::write(target.join("data"), name).unwrap();
        volumes.push((volume, staging, vec![(target, false)], capability));
    }
    let (first, first_staging, first_targets, _) = &mut volumes[0];
    let ro_target = serve.pod_path("nr-1/target-ro");
    node.node_publish_volume(publish_request(
        first,
        first_staging,
        &ro_target,
        rwx(),
        true,
    ))
    .await
    .unwrap();
    first_targets.push((ro_target, true));
    let pods = serve.layout().root().join("pods");
    let mounted_before = mounted_below(&pods);
    assert_eq!(mounted_before.len(), 9, "{mounted_before:?}");

    // SIGKILL: no chance to clean up anything.
    node_plugin.kill9();
    assert_eq!(
        mounted_below(&pods),
        mounted_before,
        "the kill changed mounts"
    );
    node_plugin.restart();
    node_plugin.wait_ready().await;
    let mut node = node_plugin.node().await;

    // Known from the mount table only: a ReadWriteOncePod volume published before the
    // restart is not published at a second target.
    let (rwop_volume, rwop_staging, _, rwop_capability) = &volumes[3];
    let second = serve.pod_path("nr-4/target-2");
    expect_status(
        node.node_publish_volume(publish_request(
            rwop_volume,
            rwop_staging,
            &second,
            rwop_capability.clone(),
            false,
        ))
        .await,
        Code::FailedPrecondition,
        "already published at",
    );
    assert!(!is_mount_point(&second));
    for (volume, staging, targets, capability) in &volumes {
        for (target, read_only) in targets {
            // The same publish again is fine, with the other read-only flag it conflicts.
            node.node_publish_volume(publish_request(
                volume,
                staging,
                target,
                capability.clone(),
                *read_only,
            ))
            .await
            .unwrap_or_else(|s| panic!("republish {}: {s:?}", target.display()));
            expect_status(
                node.node_publish_volume(publish_request(
                    volume,
                    staging,
                    target,
                    capability.clone(),
                    !*read_only,
                ))
                .await,
                Code::AlreadyExists,
                "",
            );
            let stats = node
                .node_get_volume_stats(pb::NodeGetVolumeStatsRequest {
                    volume_id: volume.volume_id.clone(),
                    volume_path: target.display().to_string(),
                    staging_target_path: staging.display().to_string(),
                })
                .await
                .unwrap()
                .into_inner();
            assert!(
                !stats.volume_condition.unwrap_or_default().abnormal,
                "{}",
                target.display()
            );
        }
    }
    // Another volume onto a target where one is mounted: refused, whichever it is.
    let (first, second) = (&volumes[0], &volumes[1]);
    for (target, _) in &first.2 {
        expect_status(
            node.node_publish_volume(publish_request(&second.0, &second.1, target, rwx(), false))
                .await,
            Code::FailedPrecondition,
            "already a mount of",
        );
    }
    expect_status(
        node.node_publish_volume(publish_request(
            &first.0,
            &first.1,
            &second.2[0].0,
            rwx(),
            false,
        ))
        .await,
        Code::FailedPrecondition,
        "already a mount of",
    );
    for (volume, staging, targets, _) in &volumes {
        for (target, _) in targets {
            node.node_unpublish_volume(unpublish_request(&volume.volume_id, target))
                .await
                .unwrap();
            assert!(!target.exists(), "{} left behind", target.display());
        }
        node.node_unstage_volume(unstage_request(&volume.volume_id, staging))
            .await
            .unwrap();
        assert!(
            !is_mount_point(staging),
            "{} still mounted",
            staging.display()
        );
    }
    let left = mounted_below(&pods);
    assert!(left.is_empty(), "still mounted after unstage: {left:?}");
    // The data is untouched.
    for (volume, _, _, _) in &volumes {
        let name = volume.volume_id.rsplit('/').next().unwrap();
        let data = serve
            .layout()
            .mounts_dir()
            .join("exa1")
            .join(name)
            .join("data");
        assert_eq!(std::fs::read_to_string(&data).unwrap(), name);
        controller
            .delete_volume(delete_request(&volume.volume_id))
            .await
            .unwrap();
    }
}

/// What a process holds: threads, live or unreaped children, open file descriptors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Held {
    threads: usize,
    children: usize,
    fds: usize,
}

fn count_dir(path: &str) -> usize {
    std::fs::read_dir(path).map(|d| d.count()).unwrap_or(0)
}

/// The children of `pid` (zombies included), from `/proc/*/stat`.
fn children_of(pid: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.filter_map(|e| e.ok()) {
        let Some(child) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        // Fields after the command: state, ppid.
        let mut fields = rest.split_whitespace();
        let state = fields.next().unwrap_or("?");
        if fields.next().and_then(|p| p.parse::<u32>().ok()) == Some(pid) {
            let comm = head.split_once('(').map(|(_, c)| c).unwrap_or("");
            out.push((child, format!("{comm} [{state}]")));
        }
    }
    out
}

fn held(pid: u32) -> Held {
    Held {
        threads: count_dir(&format!("/proc/{pid}/task")),
        children: children_of(pid).len(),
        fds: count_dir(&format!("/proc/{pid}/fd")),
    }
}

/// Waits (bounded) until `pid` holds no more than `baseline` plus `slack` threads and file
/// descriptors and no more children; returns what it holds then.
async fn settled(pid: u32, baseline: Held, slack: usize, bound: Duration) -> Held {
    let deadline = Instant::now() + bound;
    loop {
        let now = held(pid);
        let fine = now.threads <= baseline.threads + slack
            && now.fds <= baseline.fds + slack
            && now.children <= baseline.children;
        if fine || Instant::now() >= deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The configured command timeout of the plugins started by the hang test (seconds).
const COMMAND_TIMEOUT: u64 = 2;
/// The configured mount timeout (seconds).
const MOUNT_TIMEOUT: u64 = 2;
/// How many hanging calls each plugin gets: a leak per call would show as this many.
const HANGS: usize = 4;
/// Threads or descriptors a plugin may hold above its baseline afterwards: the runtime's
/// pools grow and shrink on their own (a blocking-pool thread idles for a while before it
/// exits), which is not a leak; a leak grows with the number of hung calls.
const SLACK: usize = 2;

#[tokio::test]
async fn a_hanging_tool_or_mount_times_out_serves_others_and_leaks_nothing() {
    let serve = Serve::start(ServeOptions::lustre());
    let env = vec![
        (
            "PFS_CSI_SETTINGS_lustre__commandTimeoutSeconds".to_string(),
            COMMAND_TIMEOUT.to_string(),
        ),
        (
            "PFS_CSI_SETTINGS_lustre__mountTimeoutSeconds".to_string(),
            MOUNT_TIMEOUT.to_string(),
        ),
    ];
    let options = PluginOptions {
        env,
        ..Default::default()
    };
    let mut ctl_plugin = PluginProcess::start_with(
        Role::Controller,
        &serve,
        &serve.base().join("hang-controller.sock"),
        options.clone(),
    );
    let mut node_plugin = PluginProcess::start_with(
        Role::Node,
        &serve,
        &serve.base().join("hang-node.sock"),
        options,
    );
    ctl_plugin.wait_ready().await;
    node_plugin.wait_ready().await;
    let mut controller = ctl_plugin.controller().await;
    let mut node = node_plugin.node().await;

    // Warm up both plugins along the paths the hangs take, then take the baselines.
    let mut warm = Vec::new();
    for i in 0..3 {
        let v = create_volume_settled(
            &mut controller,
            create_request(&format!("warm-{i}"), GIB, &[("bindMount", "false")]),
        )
        .await
        .unwrap();
        let staging = serve.pod_path(&format!("warm-{i}/staging"));
        node.node_stage_volume(stage_request(&v, &staging, rwx()))
            .await
            .unwrap();
        node.node_unstage_volume(unstage_request(&v.volume_id, &staging))
            .await
            .unwrap();
        warm.push(v);
    }
    for v in &warm {
        controller
            .delete_volume(delete_request(&v.volume_id))
            .await
            .unwrap();
    }
    let (ctl_pid, node_pid) = (ctl_plugin.pid(), node_plugin.pid());
    let ctl_base = settled(ctl_pid, held(ctl_pid), 0, Duration::from_millis(500)).await;
    let node_base = settled(node_pid, held(node_pid), 0, Duration::from_millis(500)).await;

    // Every `lfs project` on a directory named hang-* never returns.
    serve.fault(FaultRule {
        tool: "lfs".into(),
        args_contain: vec!["project".into(), "hang-".into()],
        action: FaultAction::Hang,
        times: None,
    });
    for i in 0..HANGS {
        let name = format!("hang-{i}");
        let mut hanging_client = controller.clone();
        let hanging = tokio::spawn(async move {
            let started = Instant::now();
            let result = hanging_client
                .create_volume(bounded(create_request(&name, GIB, &[]), 60))
                .await;
            (result, started.elapsed())
        });
        // Once the tool hangs, other volumes are created, expanded and deleted meanwhile.
        wait_for_tool(&serve, &format!("hang-{i}")).await;
        let other = format!("busy-{i}");
        let started = Instant::now();
        let v = controller
            .create_volume(bounded(create_request(&other, GIB, &[]), 60))
            .await
            .unwrap()
            .into_inner()
            .volume
            .unwrap();
        controller
            .controller_expand_volume(bounded(
                pb::ControllerExpandVolumeRequest {
                    volume_id: v.volume_id.clone(),
                    capacity_range: Some(pb::CapacityRange {
                        required_bytes: 2 * GIB,
                        limit_bytes: 0,
                    }),
                    ..Default::default()
                },
                60,
            ))
            .await
            .unwrap();
        controller
            .delete_volume(bounded(delete_request(&v.volume_id), 60))
            .await
            .unwrap();
        let busy = started.elapsed();
        let (result, elapsed) = hanging.await.unwrap();
        let status = result.unwrap_err();
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
        assert!(
            elapsed >= Duration::from_secs(COMMAND_TIMEOUT)
                && elapsed < Duration::from_secs(COMMAND_TIMEOUT + 8),
            "answered after {elapsed:?}, expected the {COMMAND_TIMEOUT} s command timeout"
        );
        assert!(
            busy < elapsed,
            "other volumes waited for the hung call: {busy:?} vs {elapsed:?}"
        );
        let dir = serve
            .layout()
            .mounts_dir()
            .join("exa1")
            .join(format!("hang-{i}"));
        assert!(!dir.exists(), "a timed-out create left {}", dir.display());
    }

    serve.clear_faults();

    // A node-side Lustre mount that never returns, while another volume stages.
    let good = create_volume_settled(
        &mut controller,
        create_request("node-good", GIB, &[("bindMount", "false")]),
    )
    .await
    .unwrap();
    let mut stuck = Vec::new();
    for i in 0..HANGS {
        let name = format!("mhang-{i}");
        stuck.push(
            create_volume_settled(
                &mut controller,
                create_request(&name, GIB, &[("bindMount", "false")]),
            )
            .await
            .unwrap(),
        );
    }
    serve.fault(FaultRule {
        tool: "mount".into(),
        args_contain: vec!["mhang-".into()],
        action: FaultAction::Hang,
        times: None,
    });
    let good_staging = serve.pod_path("node-good/staging");
    for (i, volume) in stuck.iter().enumerate() {
        let staging = serve.pod_path(&format!("mhang-{i}/staging"));
        let mut hanging_node = node.clone();
        let request = stage_request(volume, &staging, rwx());
        let hanging = tokio::spawn(async move {
            let started = Instant::now();
            let result = hanging_node.node_stage_volume(bounded(request, 60)).await;
            (result, started.elapsed())
        });
        wait_for_tool(&serve, &format!("mhang-{i}")).await;
        let started = Instant::now();
        node.node_stage_volume(bounded(stage_request(&good, &good_staging, rwx()), 60))
            .await
            .unwrap();
        node.node_unstage_volume(bounded(unstage_request(&good.volume_id, &good_staging), 60))
            .await
            .unwrap();
        let busy = started.elapsed();
        let (result, elapsed) = hanging.await.unwrap();
        let status = result.unwrap_err();
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
        assert!(
            elapsed >= Duration::from_secs(MOUNT_TIMEOUT)
                && elapsed < Duration::from_secs(MOUNT_TIMEOUT + 8),
            "answered after {elapsed:?}, expected the {MOUNT_TIMEOUT} s mount timeout"
        );
        assert!(busy < elapsed, "{busy:?} vs {elapsed:?}");
        assert!(!is_mount_point(&staging));
    }
    serve.clear_faults();

    // Nothing grew with the number of hung calls. The command runner kills a timed-out
    // command's process group and reaps it within a few seconds.
    let ctl_after = settled(ctl_pid, ctl_base, SLACK, Duration::from_secs(15)).await;
    let node_after = settled(node_pid, node_base, SLACK, Duration::from_secs(15)).await;
    for (who, pid, base, after) in [
        ("controller", ctl_pid, ctl_base, ctl_after),
        ("node", node_pid, node_base, node_after),
    ] {
        eprintln!("{who}: before {base:?}, after {HANGS} hung calls {after:?}");
        assert!(
            after.children <= base.children,
            "{who}: children left: {:?} (before {base:?})",
            children_of(pid)
        );
        assert!(
            after.threads <= base.threads + SLACK && after.fds <= base.fds + SLACK,
            "{who} holds {after:?} after {HANGS} hung calls, {base:?} before"
        );
    }
    // No simulated tool is still running anywhere (the hung ones were killed).
    let sim = serve.layout().tools_dir();
    let orphans = processes_running_from(&sim);
    assert!(orphans.is_empty(), "hung tools still running: {orphans:?}");

    // Both plugins still work.
    let after = create_volume_settled(&mut controller, create_request("after-hangs", GIB, &[]))
        .await
        .unwrap();
    for v in stuck.iter().chain([&good, &after]) {
        controller
            .delete_volume(delete_request(&v.volume_id))
            .await
            .unwrap();
    }
}

/// Waits (bounded) until a simulated tool with `needle` in its command line runs.
async fn wait_for_tool(serve: &Serve, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !processes_running_from(&serve.layout().tools_dir())
        .iter()
        .any(|(_, cmd)| cmd.contains(needle))
    {
        assert!(Instant::now() < deadline, "no tool running with {needle}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Processes whose command line starts with a path below `dir`.
fn processes_running_from(dir: &Path) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    let prefix = dir.display().to_string();
    for e in entries.filter_map(|e| e.ok()) {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmd.starts_with(&prefix) {
            out.push((pid, cmd));
        }
    }
    out
}

/// Volumes in the concurrency test.
const VOLUMES: usize = 100;
/// Requests in the concurrency test.
const REQUESTS: usize = 1000;
/// Requests in flight at once.
const IN_FLIGHT: usize = 64;

/// One request of the concurrent mix, on volume `v`.
#[derive(Debug, Clone, Copy)]
enum Mixed {
    Create,
    Expand(i64),
    Get,
    Validate,
    Stats,
    Republish,
    SecondTarget,
}

#[tokio::test]
async fn a_thousand_concurrent_requests_fail_only_with_aborted_for_same_volume_races() {
    let serve = Serve::start(ServeOptions::lustre());
    let controller = serve.controller().await;
    let node = serve.node().await;

    // 100 volumes, each staged and published, created 16 at a time.
    let sem = Arc::new(tokio::sync::Semaphore::new(16));
    let mut setup = tokio::task::JoinSet::new();
    for v in 0..VOLUMES {
        let (mut c, mut n, sem) = (controller.clone(), node.clone(), sem.clone());
        let staging = serve.pod_path(&format!("c-{v}/staging"));
        let target = serve.pod_path(&format!("c-{v}/target"));
        setup.spawn(async move {
            let _permit = sem.acquire().await.unwrap();
            let volume = create_volume_settled(&mut c, create_request(&format!("c-{v}"), GIB, &[]))
                .await
                .unwrap();
            n.node_stage_volume(stage_request(&volume, &staging, rwx()))
                .await
                .unwrap();
            n.node_publish_volume(publish_request(&volume, &staging, &target, rwx(), false))
                .await
                .unwrap();
            (v, volume, staging, target)
        });
    }
    let mut volumes: BTreeMap<usize, (pb::Volume, PathBuf, PathBuf)> = BTreeMap::new();
    while let Some(done) = setup.join_next().await {
        let (v, volume, staging, target) = done.unwrap();
        volumes.insert(v, (volume, staging, target));
    }
    let volumes = Arc::new(volumes);

    // The mix: a fixed pseudo-random sequence (no clock, no seed needed), 64 in flight.
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let sem = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let mut tasks = tokio::task::JoinSet::new();
    let mut largest: BTreeMap<usize, i64> = BTreeMap::new();
    let started = Instant::now();
    for i in 0..REQUESTS {
        let v = next(VOLUMES as u64) as usize;
        let op = match next(7) {
            0 => Mixed::Create,
            1 => {
                let bytes = (2 + next(8) as i64) * GIB;
                let top = largest.entry(v).or_insert(GIB);
                *top = (*top).max(bytes);
                Mixed::Expand(bytes)
            }
            2 => Mixed::Get,
            3 => Mixed::Validate,
            4 => Mixed::Stats,
            5 => Mixed::Republish,
            _ => Mixed::SecondTarget,
        };
        let (mut c, mut n, sem, volumes) = (
            controller.clone(),
            node.clone(),
            sem.clone(),
            volumes.clone(),
        );
        let second = serve.pod_path(&format!("c-{v}/second-{i}"));
        tasks.spawn(async move {
            let _permit = sem.acquire().await.unwrap();
            let (volume, staging, target) = &volumes[&v];
            let id = volume.volume_id.clone();
            let result: Result<(), tonic::Status> = match op {
                Mixed::Create => c
                    .create_volume(bounded(create_request(&format!("c-{v}"), GIB, &[]), 60))
                    .await
                    .map(|a| {
                        assert_eq!(a.into_inner().volume.unwrap().volume_id, id);
                    }),
                Mixed::Expand(bytes) => c
                    .controller_expand_volume(bounded(
                        pb::ControllerExpandVolumeRequest {
                            volume_id: id.clone(),
                            capacity_range: Some(pb::CapacityRange {
                                required_bytes: bytes,
                                limit_bytes: 0,
                            }),
                            ..Default::default()
                        },
                        60,
                    ))
                    .await
                    .map(|a| assert!(a.into_inner().capacity_bytes >= bytes)),
                Mixed::Get => c
                    .controller_get_volume(bounded(
                        pb::ControllerGetVolumeRequest {
                            volume_id: id.clone(),
                        },
                        60,
                    ))
                    .await
                    .map(|_| ()),
                Mixed::Validate => c
                    .validate_volume_capabilities(bounded(
                        pb::ValidateVolumeCapabilitiesRequest {
                            volume_id: id.clone(),
                            volume_capabilities: vec![rwx()],
                            ..Default::default()
                        },
                        60,
                    ))
                    .await
                    .map(|a| assert!(a.into_inner().confirmed.is_some())),
                Mixed::Stats => n
                    .node_get_volume_stats(bounded(
                        pb::NodeGetVolumeStatsRequest {
                            volume_id: id.clone(),
                            volume_path: target.display().to_string(),
                            staging_target_path: staging.display().to_string(),
                        },
                        60,
                    ))
                    .await
                    .map(|a| {
                        let condition = a.into_inner().volume_condition.unwrap_or_default();
                        assert!(!condition.abnormal, "{condition:?}");
                    }),
                Mixed::Republish => n
                    .node_publish_volume(bounded(
                        publish_request(volume, staging, target, rwx(), false),
                        60,
                    ))
                    .await
                    .map(|_| ()),
                Mixed::SecondTarget => {
                    // Publish at a target of its own and unpublish it; either half may meet
                    // a race, and the unpublish is retried so nothing stays mounted.
                    let published = n
                        .node_publish_volume(bounded(
                            publish_request(volume, staging, &second, rwx(), true),
                            60,
                        ))
                        .await
                        .map(|_| ());
                    let mut unpublished = Err(tonic::Status::aborted("not tried"));
                    for _ in 0..200 {
                        unpublished = n
                            .node_unpublish_volume(bounded(unpublish_request(&id, &second), 60))
                            .await
                            .map(|_| ());
                        match &unpublished {
                            Err(s) if s.code() == Code::Aborted => {
                                tokio::time::sleep(Duration::from_millis(20)).await
                            }
                            _ => break,
                        }
                    }
                    unpublished.unwrap_or_else(|s| panic!("unpublish {}: {s:?}", second.display()));
                    published
                }
            };
            (i, v, op, result)
        });
    }
    let mut codes: BTreeMap<String, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (i, v, op, result) = done.unwrap();
        match result {
            Ok(()) => *codes.entry("Ok".into()).or_default() += 1,
            Err(s) => {
                *codes.entry(format!("{:?}", s.code())).or_default() += 1;
                if s.code() != Code::Aborted {
                    failures.push(format!(
                        "#{i} {op:?} on c-{v}: {:?} {}",
                        s.code(),
                        s.message()
                    ));
                }
            }
        }
    }
    let elapsed = started.elapsed();
    eprintln!("{REQUESTS} requests, {IN_FLIGHT} in flight, in {elapsed:?}: {codes:?}");
    assert!(
        failures.is_empty(),
        "{} requests failed with something else than Aborted:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(codes.values().sum::<usize>(), REQUESTS);

    // Every volume ends as large as the largest expansion that succeeded or raced, at most,
    // and at least the last one known to have succeeded; every target is still published,
    // and no second target is left.
    let mut c = controller.clone();
    let mut n = node.clone();
    for (v, (volume, staging, target)) in volumes.iter() {
        assert!(
            is_mount_point(target),
            "{} lost its mount",
            target.display()
        );
        let got = c
            .controller_get_volume(pb::ControllerGetVolumeRequest {
                volume_id: volume.volume_id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .volume
            .unwrap();
        let top = largest.get(v).copied().unwrap_or(GIB);
        assert!(
            got.capacity_bytes <= top.max(GIB) + 1024,
            "c-{v} grew to {} beyond the largest request {top}",
            got.capacity_bytes
        );
        let seconds: Vec<PathBuf> = mounted_below(target.parent().unwrap())
            .into_iter()
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("second-"))
            })
            .collect();
        assert!(seconds.is_empty(), "left mounted: {seconds:?}");
        n.node_unpublish_volume(unpublish_request(&volume.volume_id, target))
            .await
            .unwrap();
        n.node_unstage_volume(unstage_request(&volume.volume_id, staging))
            .await
            .unwrap();
        c.delete_volume(delete_request(&volume.volume_id))
            .await
            .unwrap();
    }
}

/// A FUSE mount whose server never answers, not even the kernel's first request: every
/// access that needs the filesystem (a `stat` of its root among them) blocks, as on a
/// Lustre or BeeGFS client whose servers are gone. Dropping it aborts the connection
/// (which wakes anything blocked) and detaches the mount.
struct DeadMount {
    target: PathBuf,
    device: Option<std::fs::File>,
}

impl DeadMount {
    fn mount(target: &Path) -> DeadMount {
        use std::os::fd::AsRawFd;
        let device = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")
            .expect("/dev/fuse (the dead-filesystem test needs the fuse module)");
        let options = format!(
            "fd={},rootmode=40000,user_id=0,group_id=0",
            device.as_raw_fd()
        );
        nix::mount::mount(
            Some("pfs-csi-dead"),
            target,
            Some("fuse"),
            nix::mount::MsFlags::empty(),
            Some(options.as_str()),
        )
        .expect("mount a FUSE filesystem");
        DeadMount {
            target: target.to_path_buf(),
            device: Some(device),
        }
    }
}

impl Drop for DeadMount {
    fn drop(&mut self) {
        drop(self.device.take());
        let _ = nix::mount::umount2(&self.target, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// NodeUnpublishVolume of a target whose filesystem no longer answers returns (the
/// unmount needs nothing from the filesystem), and the plugin answers Probe meanwhile:
/// nothing stats the dead mount on the plugin's async runtime.
#[tokio::test]
async fn unpublishing_from_a_filesystem_that_no_longer_answers_returns_and_probe_keeps_answering() {
    let serve = Serve::start(ServeOptions::lustre());
    let node = serve.node().await;
    let mut identity = serve.node_identity().await;
    let target = serve.pod_path("dead/target");
    std::fs::create_dir_all(&target).unwrap();
    let dead = DeadMount::mount(&target);
    assert!(is_mount_point(&target));

    let mut unpublishing = node.clone();
    let request = unpublish_request("lustre:exa1:/dead", &target);
    let started = Instant::now();
    let unpublish = tokio::spawn(async move {
        unpublishing
            .node_unpublish_volume(bounded(request, 20))
            .await
    });
    for _ in 0..5 {
        identity
            .probe(bounded(pb::ProbeRequest {}, 5))
            .await
            .expect("Probe while an unpublish is on a dead filesystem");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let result = unpublish.await.unwrap();
    let elapsed = started.elapsed();
    let still_mounted = is_mount_point(&target);
    drop(dead);
    result
        .unwrap_or_else(|status| panic!("unpublish of a dead mount after {elapsed:?}: {status:?}"));
    assert!(!still_mounted, "the dead mount is still there");
    assert!(!target.exists(), "the target directory was left behind");
}

/// Kubelet asks every volume's stats each minute. On a filesystem that no longer answers,
/// each poll reports the volume abnormal, and all the polls together hold one blocked
/// thread in the plugin, not one each (which would fill its blocking pool and stall the
/// calls of every volume).
#[tokio::test]
async fn stats_polls_of_a_dead_filesystem_hold_one_blocked_thread_not_one_each() {
    const POLLS: usize = 20;
    // BeeGFS reads a volume's usage with a stat of its directory, in the plugin.
    let serve = Serve::start(ServeOptions::beegfs8());
    let mut node_plugin = PluginProcess::start_with(
        Role::Node,
        &serve,
        &serve.base().join("dead-stats-node.sock"),
        PluginOptions::default(),
    );
    node_plugin.wait_ready().await;
    let mut node = node_plugin.node().await;
    let target = serve.pod_path("dead-stats/target");
    std::fs::create_dir_all(&target).unwrap();
    let dead = DeadMount::mount(&target);
    let request = || pb::NodeGetVolumeStatsRequest {
        volume_id: "beegfs://10.9.9.9/k8s/dead".into(),
        volume_path: target.display().to_string(),
        staging_target_path: String::new(),
    };
    // The first poll blocks in the dead filesystem; the client gives up on it first.
    let baseline = held(node_plugin.pid());
    let first = node
        .node_get_volume_stats(bounded(request(), 1))
        .await
        .unwrap_err();
    assert!(
        matches!(first.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{first:?}"
    );
    let mut abnormal = 0;
    for _ in 0..POLLS {
        let stats = node
            .node_get_volume_stats(bounded(request(), 5))
            .await
            .expect("a poll of a stuck volume answers at once")
            .into_inner();
        abnormal += usize::from(stats.volume_condition.unwrap_or_default().abnormal);
    }
    let after = held(node_plugin.pid());
    drop(dead);
    assert_eq!(abnormal, POLLS, "every poll reports the volume abnormal");
    assert!(
        after.threads <= baseline.threads + SLACK,
        "{POLLS} polls of a dead filesystem: threads {} -> {}",
        baseline.threads,
        after.threads
    );
}
