//! BeeGFS end to end: the real controller and node binaries over gRPC against the simulated
//! BeeGFS 7 and 8 filesystems of `pfs-csi-sim serve`.
//!
//! The BeeGFS backend has no defaults for `sysMgmtdHost` and `volDirBasePath`, so every
//! CreateVolume here names them, as a StorageClass must.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use pfs_csi_tests::csi::{
    GIB, create_request, create_volume_settled, delete_request, expect_publish_refused_as_unstaged,
    expect_status, map, publish_request, rwx, stage_request, unpublish_request, unstage_request,
    usage, wait_snapshot_ready,
};
use pfs_csi_tests::mounts::is_mount_point;
use pfs_csi_tests::plugin::{PluginProcess, Role};
use pfs_csi_tests::proto::v1 as pb;
use pfs_csi_tests::serve::shared;
use pfs_csi_tests::{Serve, ServeOptions};
use pfs_sim::faults::{FaultAction, FaultRule};
use pfs_sim::serve::config::BEEGFS_VOL_DIR_BASE;
use pfs_sim::state::FsKind;
use tonic::Code;

const FS1: &str = "sim-mgmtd-1";
const FS2: &str = "sim-mgmtd-2";

static BEEGFS7: OnceLock<Serve> = OnceLock::new();
static BEEGFS8: OnceLock<Serve> = OnceLock::new();

/// Settings both shared fixtures use: a short unstage wait for the DeleteVolume test.
const WAIT_SETTINGS: &str = "    nodeUnstageTimeoutSeconds: 6\n    deleteWaitSeconds: 1\n";

/// One BeeGFS 7 filesystem, quotas on.
fn beegfs7() -> &'static Serve {
    shared(&BEEGFS7, || {
        ServeOptions::beegfs7().overlay(&format!("pfsCsi:\n  beegfs:\n{WAIT_SETTINGS}"))
    })
}

/// Two BeeGFS 8 filesystems: quotas on for the first only; the node `sim-node` has its own
/// client configuration for the second.
fn beegfs8() -> &'static Serve {
    shared(&BEEGFS8, || {
        ServeOptions::beegfs8().filesystems(2).overlay(&format!(
            "config:
  beegfsClientConf:
    connMgmtdPortTCP: \"8008\"
nodeSpecificConfigs:
  - nodeList: [sim-node]
    fileSystemSpecificConfigs:
      - sysMgmtdHost: {FS2}
        config:
          beegfsClientConf:
            connMgmtdPortTCP: \"9008\"
pfsCsi:
  beegfs:
    quotas:
      - sysMgmtdHost: {FS1}
        gidMin: 4000000
        gidMax: 4099999
{WAIT_SETTINGS}"
        ))
    })
}

fn params(host: &str) -> Vec<(&str, &str)> {
    vec![
        ("sysMgmtdHost", host),
        ("volDirBasePath", BEEGFS_VOL_DIR_BASE),
    ]
}

/// `beegfs://<host>/<path>` -> the directory in the simulated filesystem's data.
fn volume_dir(serve: &Serve, volume_id: &str) -> PathBuf {
    let rest = volume_id
        .strip_prefix("beegfs://")
        .unwrap_or_else(|| panic!("{volume_id} is not a beegfs:// id"));
    let (host, path) = rest.split_once('/').expect("beegfs://host/path");
    serve.fs_data_dir(FsKind::Beegfs, host).join(path)
}

/// The connAuth secrets serve generated (to look for them where they must not be).
fn secrets(serve: &Serve) -> Vec<String> {
    let text = std::fs::read_to_string(serve.layout().connauth_file()).unwrap();
    let list: serde_json::Value = serde_yaml::from_str(&text).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .map(|e| e["connAuth"].as_str().unwrap().to_string())
        .collect()
}

/// Every `beegfs-client.conf` below `dir`, with its text.
fn client_confs(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.filter_map(|e| e.ok()) {
            let path = e.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n == "beegfs-client.conf") {
                out.push((
                    path.clone(),
                    std::fs::read_to_string(&path).unwrap_or_default(),
                ));
            }
        }
    }
    out
}

/// The value of `key` in a `beegfs-client.conf` text.
fn conf_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == key).then_some(v.trim())
    })
}

/// The whole dynamic lifecycle on `host` of `serve`, quotas on.
async fn dynamic_lifecycle(serve: &Serve, host: &str, name: &str) {
    let mut controller = serve.controller().await;
    let mut node = serve.node().await;

    let volume = create_volume_settled(&mut controller, create_request(name, GIB, &params(host)))
        .await
        .unwrap();
    assert!(
        volume.volume_id.starts_with(&format!("beegfs://{host}/")),
        "{volume:?}"
    );
    let dir = volume_dir(serve, &volume.volume_id);
    assert!(dir.is_dir(), "{} not created", dir.display());
    assert_eq!(
        volume.volume_context.get("quota").map(String::as_str),
        Some("enabled"),
        "{volume:?}"
    );
    let gid: u32 = volume.volume_context["quotaGid"].parse().unwrap();
    let meta = std::fs::metadata(&dir).unwrap();
    assert_eq!(
        meta.gid(),
        gid,
        "the volume directory belongs to its quota group"
    );
    assert_ne!(
        meta.mode() & 0o2000,
        0,
        "setgid, so files inherit the group"
    );
    let again = create_volume_settled(&mut controller, create_request(name, GIB, &params(host)))
        .await
        .unwrap();
    assert_eq!(again.volume_id, volume.volume_id);

    let staging = serve.pod_path(&format!("{name}/staging"));
    let target = serve.pod_path(&format!("{name}/target"));
    std::fs::create_dir_all(&staging).unwrap();
    expect_publish_refused_as_unstaged(&mut node, &volume, &staging, &target).await;
    node.node_stage_volume(stage_request(&volume, &staging, rwx()))
        .await
        .unwrap();
    node.node_publish_volume(publish_request(&volume, &staging, &target, rwx(), false))
        .await
        .unwrap();
    assert!(is_mount_point(&target));
    let payload = vec![b'b'; 2 << 20];
    std::fs::write(target.join("data.bin"), &payload).unwrap();
    assert_eq!(std::fs::read(dir.join("data.bin")).unwrap(), payload);
    assert_eq!(
        std::fs::metadata(dir.join("data.bin")).unwrap().gid(),
        gid,
        "a new file inherits the volume's group"
    );

    let target_ro = serve.pod_path(&format!("{name}/target-ro"));
    node.node_publish_volume(publish_request(&volume, &staging, &target_ro, rwx(), true))
        .await
        .unwrap();
    let refused = std::fs::write(target_ro.join("nope"), b"x").unwrap_err();
    assert_eq!(refused.raw_os_error(), Some(libc::EROFS), "{refused}");

    let expanded = controller
        .controller_expand_volume(pb::ControllerExpandVolumeRequest {
            volume_id: volume.volume_id.clone(),
            capacity_range: Some(pb::CapacityRange {
                required_bytes: 3 * GIB,
                limit_bytes: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(expanded.capacity_bytes >= 3 * GIB);
    assert!(!expanded.node_expansion_required);

    let stats = node
        .node_get_volume_stats(pb::NodeGetVolumeStatsRequest {
            volume_id: volume.volume_id.clone(),
            volume_path: target.display().to_string(),
            staging_target_path: staging.display().to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!stats.volume_condition.clone().unwrap_or_default().abnormal);
    let bytes = usage(&stats, pb::volume_usage::Unit::Bytes).expect("byte usage");
    assert_eq!(bytes.total, expanded.capacity_bytes, "{stats:?}");
    assert!(
        bytes.used >= payload.len() as i64 && bytes.used < 2 * payload.len() as i64,
        "{stats:?}"
    );

    let snapshot = controller
        .create_snapshot(pb::CreateSnapshotRequest {
            source_volume_id: volume.volume_id.clone(),
            name: format!("{name}-snap"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    let snapshot = wait_snapshot_ready(&mut controller, &snapshot.snapshot_id).await;
    let mut restore = create_request(&format!("{name}-restore"), 3 * GIB, &params(host));
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
    assert_eq!(
        std::fs::read(volume_dir(serve, &restored.volume_id).join("data.bin")).unwrap(),
        payload
    );
    let mut clone = create_request(&format!("{name}-clone"), 3 * GIB, &params(host));
    clone.volume_content_source = Some(pb::VolumeContentSource {
        r#type: Some(pb::volume_content_source::Type::Volume(
            pb::volume_content_source::VolumeSource {
                volume_id: volume.volume_id.clone(),
            },
        )),
    });
    let cloned = create_volume_settled(&mut controller, clone).await.unwrap();
    assert_eq!(
        std::fs::read(volume_dir(serve, &cloned.volume_id).join("data.bin")).unwrap(),
        payload
    );
    assert_ne!(
        cloned.volume_context.get("quotaGid"),
        volume.volume_context.get("quotaGid"),
        "a clone needs its own quota group"
    );

    for t in [&target, &target_ro] {
        for _ in 0..2 {
            node.node_unpublish_volume(unpublish_request(&volume.volume_id, t))
                .await
                .unwrap();
        }
        assert!(!is_mount_point(t));
    }
    // The staging mount gone behind the plugin's back (its record still there): a publish
    // is refused, and gives the pod nothing of the staging directory.
    nix::mount::umount2(&staging.join("mount"), nix::mount::MntFlags::MNT_DETACH).unwrap();
    let late = serve.pod_path(&format!("{name}/target-late"));
    expect_publish_refused_as_unstaged(&mut node, &volume, &staging, &late).await;
    // Staged again (as the kubelet does after a node restart), it is published.
    node.node_stage_volume(stage_request(&volume, &staging, rwx()))
        .await
        .unwrap();
    node.node_publish_volume(publish_request(&volume, &staging, &late, rwx(), false))
        .await
        .unwrap();
    assert_eq!(std::fs::read(late.join("data.bin")).unwrap(), payload);
    node.node_unpublish_volume(unpublish_request(&volume.volume_id, &late))
        .await
        .unwrap();
    for _ in 0..2 {
        node.node_unstage_volume(unstage_request(&volume.volume_id, &staging))
            .await
            .unwrap();
    }
    assert!(!is_mount_point(&staging));
    assert!(
        pfs_csi_tests::mounts::mounted_below(&staging).is_empty(),
        "client mount left below the staging path"
    );

    controller
        .delete_snapshot(pb::DeleteSnapshotRequest {
            snapshot_id: snapshot.snapshot_id,
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
        assert!(!volume_dir(serve, &v.volume_id).exists(), "{}", v.volume_id);
    }
}

/// A pre-made directory served as a static volume: usable, never deleted.
async fn static_lifecycle(serve: &Serve, host: &str, name: &str) {
    let mut controller = serve.controller().await;
    let mut node = serve.node().await;
    let data = serve
        .fs_data_dir(FsKind::Beegfs, host)
        .join("static")
        .join(name);
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("existing.txt"), b"static data\n").unwrap();
    let handle = format!("beegfs://{host}/static/{name}");
    let volume = pb::Volume {
        volume_id: handle.clone(),
        volume_context: map(&[]),
        ..Default::default()
    };
    let staging = serve.pod_path(&format!("{name}/staging"));
    let target = serve.pod_path(&format!("{name}/target"));
    node.node_stage_volume(stage_request(&volume, &staging, rwx()))
        .await
        .unwrap();
    node.node_publish_volume(publish_request(&volume, &staging, &target, rwx(), false))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(target.join("existing.txt")).unwrap(),
        b"static data\n"
    );
    std::fs::write(target.join("from-pod"), b"pod").unwrap();
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
    assert!(data.join("existing.txt").exists() && data.join("from-pod").exists());
    std::fs::remove_dir_all(&data).unwrap();
}

#[tokio::test]
async fn beegfs7_dynamic_lifecycle() {
    dynamic_lifecycle(beegfs7(), FS1, "b7-dyn").await;
}

#[tokio::test]
async fn beegfs8_dynamic_lifecycle() {
    dynamic_lifecycle(beegfs8(), FS1, "b8-dyn").await;
}

#[tokio::test]
async fn beegfs7_static_lifecycle() {
    static_lifecycle(beegfs7(), FS1, "b7-static").await;
}

#[tokio::test]
async fn beegfs8_static_lifecycle() {
    static_lifecycle(beegfs8(), FS2, "b8-static").await;
}

#[tokio::test]
async fn quotas_off_say_so_and_quotas_on_enforce_a_group() {
    let serve = beegfs8();
    let mut controller = serve.controller().await;
    let off = create_volume_settled(
        &mut controller,
        create_request("b8-noquota", GIB, &params(FS2)),
    )
    .await
    .unwrap();
    assert_eq!(
        off.volume_context.get("quota").map(String::as_str),
        Some("disabled"),
        "{off:?}"
    );
    assert!(!off.volume_context.contains_key("quotaGid"), "{off:?}");
    let on = create_volume_settled(
        &mut controller,
        create_request("b8-quota", GIB, &params(FS1)),
    )
    .await
    .unwrap();
    let gid: u32 = on.volume_context["quotaGid"].parse().unwrap();
    assert!((4_000_000..=4_099_999).contains(&gid), "{gid}");
    for v in [&off, &on] {
        controller
            .delete_volume(delete_request(&v.volume_id))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn node_specific_configuration_reaches_the_client_of_that_node_only() {
    let serve = beegfs8();
    let mut controller = serve.controller().await;
    let volume = create_volume_settled(
        &mut controller,
        create_request("b8-nodecfg", GIB, &params(FS2)),
    )
    .await
    .unwrap();
    let mut other = PluginProcess::start(Role::Node, serve, &serve.base().join("other-node.sock"));
    other.wait_ready().await;
    let mut this_node = serve.node().await;
    let mut other_node = other.node().await;
    let staging_here = serve.pod_path("b8-nodecfg/here");
    let staging_there = serve.pod_path("b8-nodecfg/there");
    this_node
        .node_stage_volume(stage_request(&volume, &staging_here, rwx()))
        .await
        .unwrap();
    other_node
        .node_stage_volume(stage_request(&volume, &staging_there, rwx()))
        .await
        .unwrap();

    let port_of = |dir: &Path| -> Vec<String> {
        client_confs(dir)
            .into_iter()
            .filter(|(_, text)| conf_value(text, "sysMgmtdHost") == Some(FS2))
            .filter_map(|(_, text)| conf_value(&text, "connMgmtdPortTCP").map(str::to_string))
            .collect()
    };
    let here = port_of(&serve.layout().plugin_state_dir("node"));
    let there = port_of(other.state_dir());

    for (node, staging) in [
        (&mut this_node, &staging_here),
        (&mut other_node, &staging_there),
    ] {
        node.node_unstage_volume(unstage_request(&volume.volume_id, staging))
            .await
            .unwrap();
    }
    controller
        .delete_volume(delete_request(&volume.volume_id))
        .await
        .unwrap();

    assert_eq!(
        here,
        vec!["9008".to_string()],
        "sim-node's own configuration"
    );
    assert_eq!(there, vec!["8008".to_string()], "the global configuration");
}

#[tokio::test]
async fn delete_waits_for_a_node_that_has_not_unstaged() {
    let serve = beegfs8();
    let mut controller = serve.controller().await;
    let mut node = serve.node().await;
    let volume = create_volume_settled(
        &mut controller,
        create_request("b8-wait", GIB, &params(FS1)),
    )
    .await
    .unwrap();
    let staging = serve.pod_path("b8-wait/staging");
    node.node_stage_volume(stage_request(&volume, &staging, rwx()))
        .await
        .unwrap();
    let dir = volume_dir(serve, &volume.volume_id);
    expect_status(
        controller
            .delete_volume(delete_request(&volume.volume_id))
            .await,
        Code::Unavailable,
        "sim-node",
    );
    assert!(dir.is_dir(), "deleted while still staged");
    node.node_unstage_volume(unstage_request(&volume.volume_id, &staging))
        .await
        .unwrap();
    controller
        .delete_volume(delete_request(&volume.volume_id))
        .await
        .unwrap();
    assert!(!dir.exists());

    // A node that never unstages holds the deletion only until nodeUnstageTimeoutSeconds.
    let stuck = create_volume_settled(
        &mut controller,
        create_request("b8-stuck", GIB, &params(FS1)),
    )
    .await
    .unwrap();
    let stuck_staging = serve.pod_path("b8-stuck/staging");
    node.node_stage_volume(stage_request(&stuck, &stuck_staging, rwx()))
        .await
        .unwrap();
    let started = Instant::now();
    loop {
        match controller
            .delete_volume(delete_request(&stuck.volume_id))
            .await
        {
            Ok(_) => break,
            Err(s) if s.code() == Code::Unavailable => {
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "still refused after the unstage timeout: {s:?}"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(s) => panic!("{s:?}"),
        }
    }
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "deleted after {:?}, before the 6 s unstage timeout",
        started.elapsed()
    );
    assert!(!volume_dir(serve, &stuck.volume_id).exists());
    node.node_unstage_volume(unstage_request(&stuck.volume_id, &stuck_staging))
        .await
        .unwrap();
    assert!(pfs_csi_tests::mounts::mounted_below(&stuck_staging).is_empty());
}

/// Runs a lifecycle at log level trace and looks for the connAuth secret in the logs, the
/// simulator's record of every tool command line, and the processes' command lines.
async fn secret_never_leaks(options: ServeOptions, name: &str) {
    let serve = Serve::start(options.log_level("trace"));
    let secret = secrets(&serve).remove(0);
    assert!(secret.len() >= 16);
    let mut controller = serve.controller().await;
    let mut node = serve.node().await;
    let volume = create_volume_settled(&mut controller, create_request(name, GIB, &params(FS1)))
        .await
        .unwrap();
    let staging = serve.pod_path(&format!("{name}/staging"));
    let target = serve.pod_path(&format!("{name}/target"));
    node.node_stage_volume(stage_request(&volume, &staging, rwx()))
        .await
        .unwrap();
    node.node_publish_volume(publish_request(&volume, &staging, &target, rwx(), false))
        .await
        .unwrap();
    node.node_get_volume_stats(pb::NodeGetVolumeStatsRequest {
        volume_id: volume.volume_id.clone(),
        volume_path: target.display().to_string(),
        ..Default::default()
    })
    .await
    .unwrap();
    // A refused login is logged too: the secret must not be in that message either.
    serve.fault(FaultRule {
        tool: if options_is_v7(&serve) {
            "beegfs-ctl"
        } else {
            "beegfs"
        }
        .into(),
        args_contain: Vec::new(),
        action: FaultAction::AuthFailure,
        times: Some(1),
    });
    let _ = controller
        .create_volume(create_request(&format!("{name}-denied"), GIB, &params(FS1)))
        .await;
    serve.clear_faults();

    let mut cmdlines = String::new();
    for pid in process_tree(serve.pid()) {
        if let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            cmdlines.push_str(&String::from_utf8_lossy(&raw).replace('\0', " "));
            cmdlines.push('\n');
        }
    }
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

    let logs = serve.logs();
    let calls = serve.calls_log();
    assert!(
        logs.contains("TRACE") || logs.contains("trace"),
        "no trace-level logs captured"
    );
    assert!(calls.contains(if options_is_v7(&serve) {
        "beegfs-ctl"
    } else {
        "\"beegfs\""
    }));
    assert!(
        !logs.contains(&secret),
        "the connAuth secret is in the plugin logs"
    );
    assert!(
        !calls.contains(&secret),
        "the connAuth secret is on a tool's command line"
    );
    assert!(
        !cmdlines.contains(&secret),
        "the connAuth secret is on a process command line"
    );
    assert!(
        !serve.stdout().contains(&secret),
        "serve printed the secret"
    );
}

fn options_is_v7(serve: &Serve) -> bool {
    serve.options().filesystem == "beegfs7"
}

/// `pid` and its descendants.
fn process_tree(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        let parent = all[i];
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for e in entries.filter_map(|e| e.ok()) {
                let Some(child) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                    continue;
                };
                let stat =
                    std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
                // The parent pid is the second field after the parenthesised command name.
                let ppid = stat
                    .rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                    .and_then(|p| p.parse::<u32>().ok());
                if ppid == Some(parent) && !all.contains(&child) {
                    all.push(child);
                }
            }
        }
        i += 1;
    }
    all
}

#[tokio::test]
async fn beegfs7_conn_auth_secret_never_leaks() {
    secret_never_leaks(ServeOptions::beegfs7(), "b7-secret").await;
}

#[tokio::test]
async fn beegfs8_conn_auth_secret_never_leaks() {
    secret_never_leaks(ServeOptions::beegfs8(), "b8-secret").await;
}

/// A fixture of its own (fault rules apply to the whole simulator), with short timeouts.
fn fault_fixture(options: ServeOptions) -> Serve {
    Serve::start(
        options.overlay(
            "pfsCsi:\n  beegfs:\n    mountTimeoutSeconds: 3\n    commandTimeoutSeconds: 5\n",
        ),
    )
}

/// Entries of the volume base directory whose names contain `name`.
fn leftovers(serve: &Serve, name: &str) -> Vec<String> {
    let base = serve
        .fs_data_dir(FsKind::Beegfs, FS1)
        .join(BEEGFS_VOL_DIR_BASE.trim_start_matches('/'));
    std::fs::read_dir(&base)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains(name))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_failing_quota_tool_leaves_a_clear_error_and_no_half_made_volume() {
    let serve = fault_fixture(ServeOptions::beegfs7());
    let mut controller = serve.controller().await;
    serve.fault(FaultRule {
        tool: "beegfs-ctl".into(),
        args_contain: vec!["--setquota".into()],
        action: FaultAction::Fail {
            exit_code: 1,
            stderr: "Error: quota management is not enabled on this storage target".into(),
        },
        times: None,
    });
    let status = controller
        .create_volume(create_request("b7-fault-quota", GIB, &params(FS1)))
        .await
        .unwrap_err();
    assert!(
        status.message().contains("quota management is not enabled"),
        "{status:?}"
    );
    let left = leftovers(&serve, "b7-fault-quota");
    serve.clear_faults();
    // Whatever was left, a retry without the fault completes the volume, and delete removes it.
    let volume = create_volume_settled(
        &mut controller,
        create_request("b7-fault-quota", GIB, &params(FS1)),
    )
    .await
    .unwrap();
    controller
        .delete_volume(delete_request(&volume.volume_id))
        .await
        .unwrap();
    assert!(leftovers(&serve, "b7-fault-quota").is_empty());
    assert!(
        left.is_empty(),
        "CreateVolume failed ({:?}) but left a half-made volume: {left:?}",
        status.code()
    );
}

/// The management service refuses the driver's credentials on a filesystem already in use:
/// the tool's own words reach the caller and nothing is created.
async fn refused_credentials(options: ServeOptions, tool: &str, tool_says: &str) {
    let serve = fault_fixture(options);
    let mut controller = serve.controller().await;
    let first = create_volume_settled(
        &mut controller,
        create_request("auth-before", GIB, &params(FS1)),
    )
    .await
    .unwrap();
    serve.fault(FaultRule {
        tool: tool.into(),
        args_contain: Vec::new(),
        action: FaultAction::AuthFailure,
        times: None,
    });
    let status = controller
        .create_volume(create_request("auth-denied", GIB, &params(FS1)))
        .await
        .unwrap_err();
    let left = leftovers(&serve, "auth-denied");
    serve.clear_faults();
    assert!(
        status.message().contains(tool_says),
        "the tool's error should reach the caller: {status:?}"
    );
    assert!(left.is_empty(), "{left:?}");
    let volume = create_volume_settled(
        &mut controller,
        create_request("auth-denied", GIB, &params(FS1)),
    )
    .await
    .unwrap();
    for v in [&first, &volume] {
        controller
            .delete_volume(delete_request(&v.volume_id))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn beegfs7_refused_credentials_give_a_clear_error_and_create_nothing() {
    refused_credentials(
        ServeOptions::beegfs7(),
        "beegfs-ctl",
        "Management node communication failed",
    )
    .await;
}

#[tokio::test]
async fn beegfs8_refused_credentials_give_a_clear_error_and_create_nothing() {
    refused_credentials(ServeOptions::beegfs8(), "beegfs", "authentication failed").await;
}

#[tokio::test]
async fn a_hanging_client_mount_times_out_while_another_volume_keeps_working() {
    let serve = fault_fixture(ServeOptions::beegfs7());
    let mut controller = serve.controller().await;
    let mut node = serve.node().await;
    let good = create_volume_settled(
        &mut controller,
        create_request("b7-good", GIB, &params(FS1)),
    )
    .await
    .unwrap();
    let other = create_volume_settled(
        &mut controller,
        create_request("b7-other", GIB, &params(FS1)),
    )
    .await
    .unwrap();
    let staging = serve.pod_path("b7-good/staging");
    let target = serve.pod_path("b7-good/target");
    node.node_stage_volume(stage_request(&good, &staging, rwx()))
        .await
        .unwrap();
    node.node_publish_volume(publish_request(&good, &staging, &target, rwx(), false))
        .await
        .unwrap();

    serve.fault(FaultRule {
        tool: "mount".into(),
        args_contain: vec!["b7-hang".into()],
        action: FaultAction::Hang,
        times: None,
    });
    let hang_staging = serve.pod_path("b7-hang/staging");
    let mut hanging_node = node.clone();
    let hanging_request = stage_request(&other, &hang_staging, rwx());
    let hanging = tokio::spawn(async move {
        let started = Instant::now();
        let result = hanging_node.node_stage_volume(hanging_request).await;
        (result, started.elapsed())
    });
    // While the mount hangs, the staged volume takes writes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    std::fs::write(target.join("during-hang"), b"ok").unwrap();
    let (result, elapsed) = hanging.await.unwrap();
    let status = result.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        elapsed >= Duration::from_secs(3) && elapsed < Duration::from_secs(20),
        "answered after {elapsed:?}, expected the 3 s mount timeout"
    );
    assert!(pfs_csi_tests::mounts::mounted_below(&hang_staging).is_empty());
    serve.clear_faults();

    node.node_unstage_volume(unstage_request(&other.volume_id, &hang_staging))
        .await
        .unwrap();
    node.node_unpublish_volume(unpublish_request(&good.volume_id, &target))
        .await
        .unwrap();
    node.node_unstage_volume(unstage_request(&good.volume_id, &staging))
        .await
        .unwrap();
    for v in [&good, &other] {
        controller
            .delete_volume(delete_request(&v.volume_id))
            .await
            .unwrap();
    }
}
