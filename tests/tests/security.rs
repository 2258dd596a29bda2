//! Secrets and planted links, through the real binaries:
//! - every RPC runs with secrets (StorageClass and node-stage secrets carrying canary
//!   values, and for BeeGFS the connAuth secret) while the plugins log at `trace`; no
//!   secret value may appear in their logs, in a tool's command line (the simulator's
//!   call log), in any process's command line or environment sampled during the run, or in
//!   any file under serve's directory except the 0400 secret files the BeeGFS client needs;
//! - the CSI sockets are 0600;
//! - a publish or a stage whose target is a symbolic link planted to point elsewhere (a
//!   canary directory standing in for `/etc`) fails with `FailedPrecondition` and mounts
//!   nothing there; so does a publish whose volume directory on the filesystem was swapped
//!   for such a link after staging.

use std::collections::BTreeSet;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pfs_csi_tests::csi::{
    GIB, create_request, create_volume_settled, delete_request, expect_status, map,
    publish_request, rwx, stage_request, unpublish_request, unstage_request, wait_snapshot_ready,
};
use pfs_csi_tests::mounts::{is_mount_point, mounted_below};
use pfs_csi_tests::proto::v1 as pb;
use pfs_csi_tests::{Serve, ServeOptions};
use pfs_sim::serve::config::BEEGFS_VOL_DIR_BASE;
use std::collections::HashMap;
use tonic::Code;

/// 32 random hexadecimal characters: a value that cannot appear anywhere by chance.
fn canary() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut bytes)
        .unwrap();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Samples the command lines and environments of `root` and its descendants until stopped.
struct ProcessSampler {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<(String, usize)>>,
}

impl ProcessSampler {
    fn start(root: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut seen = BTreeSet::new();
            let mut samples = 0;
            while !flag.load(Ordering::Relaxed) {
                for pid in process_tree(root) {
                    for file in ["cmdline", "environ"] {
                        if let Ok(raw) = std::fs::read(format!("/proc/{pid}/{file}")) {
                            seen.insert(String::from_utf8_lossy(&raw).replace('\0', " "));
                        }
                    }
                }
                samples += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            (seen.into_iter().collect::<Vec<_>>().join("\n"), samples)
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Everything seen (one line per distinct command line or environment) and how many
    /// samples were taken.
    fn finish(mut self) -> (String, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

/// `root` and its descendants, from one pass over `/proc/*/stat`.
fn process_tree(root: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.filter_map(|e| e.ok()) {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if let Some(ppid) = ppid {
                parents.push((pid, ppid));
            }
        }
    }
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        for (pid, ppid) in &parents {
            if *ppid == parent && !tree.contains(pid) {
                tree.push(*pid);
            }
        }
        i += 1;
    }
    tree
}

/// Every regular file below `dir` (not following links), with its mode and content.
fn files_below(dir: &Path) -> Vec<(PathBuf, u32, Vec<u8>)> {
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
            } else if meta.is_file() {
                let content = std::fs::read(&path).unwrap_or_default();
                out.push((path, meta.permissions().mode() & 0o7777, content));
            }
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Runs every Controller, Node and Identity RPC with `secrets` where the request has them.
async fn every_rpc(
    serve: &Serve,
    name: &str,
    params: &[(&str, &str)],
    secrets: &HashMap<String, String>,
) {
    let mut controller = serve.controller().await;
    let mut node = serve.node().await;
    for socket in [serve.controller_socket(), serve.node_socket()] {
        let mut identity = pfs_csi_tests::csi::identity(&socket).await;
        identity
            .get_plugin_info(pb::GetPluginInfoRequest {})
            .await
            .unwrap();
        identity
            .get_plugin_capabilities(pb::GetPluginCapabilitiesRequest {})
            .await
            .unwrap();
        identity.probe(pb::ProbeRequest {}).await.unwrap();
    }
    controller
        .controller_get_capabilities(pb::ControllerGetCapabilitiesRequest {})
        .await
        .unwrap();
    node.node_get_capabilities(pb::NodeGetCapabilitiesRequest {})
        .await
        .unwrap();
    node.node_get_info(pb::NodeGetInfoRequest {}).await.unwrap();

    let mut create = create_request(name, GIB, params);
    create.secrets = secrets.clone();
    let volume = create_volume_settled(&mut controller, create)
        .await
        .unwrap();
    let id = volume.volume_id.clone();
    // A refused request with secrets is logged too.
    let mut refused = create_request(&format!("{name}-refused"), GIB, params);
    refused.parameters.insert("colour".into(), "blue".into());
    refused.secrets = secrets.clone();
    expect_status(
        controller.create_volume(refused).await,
        Code::InvalidArgument,
        "colour",
    );
    controller
        .validate_volume_capabilities(pb::ValidateVolumeCapabilitiesRequest {
            volume_id: id.clone(),
            volume_capabilities: vec![rwx()],
            secrets: secrets.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    controller
        .controller_get_volume(pb::ControllerGetVolumeRequest {
            volume_id: id.clone(),
        })
        .await
        .unwrap();
    controller
        .list_volumes(pb::ListVolumesRequest::default())
        .await
        .unwrap();
    controller
        .get_capacity(pb::GetCapacityRequest {
            volume_capabilities: vec![rwx()],
            parameters: map(params),
            ..Default::default()
        })
        .await
        .unwrap();
    controller
        .controller_expand_volume(pb::ControllerExpandVolumeRequest {
            volume_id: id.clone(),
            capacity_range: Some(pb::CapacityRange {
                required_bytes: 2 * GIB,
                limit_bytes: 0,
            }),
            secrets: secrets.clone(),
            ..Default::default()
        })
        .await
        .unwrap();

    let staging = serve.pod_path(&format!("{name}/staging"));
    let target = serve.pod_path(&format!("{name}/target"));
    let mut stage = stage_request(&volume, &staging, rwx());
    stage.secrets = secrets.clone();
    node.node_stage_volume(stage).await.unwrap();
    let mut publish = publish_request(&volume, &staging, &target, rwx(), false);
    publish.secrets = secrets.clone();
    node.node_publish_volume(publish).await.unwrap();
    std::fs::write(target.join("data"), b"payload").unwrap();
    node.node_get_volume_stats(pb::NodeGetVolumeStatsRequest {
        volume_id: id.clone(),
        volume_path: target.display().to_string(),
        staging_target_path: staging.display().to_string(),
    })
    .await
    .unwrap();
    // Not offered by the node plugin: answered, whatever the answer.
    let _ = node
        .node_expand_volume(pb::NodeExpandVolumeRequest {
            volume_id: id.clone(),
            volume_path: target.display().to_string(),
            secrets: secrets.clone(),
            ..Default::default()
        })
        .await;

    let snapshot = controller
        .create_snapshot(pb::CreateSnapshotRequest {
            source_volume_id: id.clone(),
            name: format!("{name}-snap"),
            secrets: secrets.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    wait_snapshot_ready(&mut controller, &snapshot.snapshot_id).await;
    controller
        .list_snapshots(pb::ListSnapshotsRequest {
            secrets: secrets.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut restore = create_request(&format!("{name}-restore"), 2 * GIB, params);
    restore.secrets = secrets.clone();
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
    let mut clone = create_request(&format!("{name}-clone"), 2 * GIB, params);
    clone.secrets = secrets.clone();
    clone.volume_content_source = Some(pb::VolumeContentSource {
        r#type: Some(pb::volume_content_source::Type::Volume(
            pb::volume_content_source::VolumeSource {
                volume_id: id.clone(),
            },
        )),
    });
    let cloned = create_volume_settled(&mut controller, clone).await.unwrap();

    node.node_unpublish_volume(unpublish_request(&id, &target))
        .await
        .unwrap();
    node.node_unstage_volume(unstage_request(&id, &staging))
        .await
        .unwrap();
    controller
        .delete_snapshot(pb::DeleteSnapshotRequest {
            snapshot_id: snapshot.snapshot_id.clone(),
            secrets: secrets.clone(),
        })
        .await
        .unwrap();
    for v in [&id, &restored.volume_id, &cloned.volume_id] {
        let mut delete = delete_request(v);
        delete.secrets = secrets.clone();
        controller.delete_volume(delete).await.unwrap();
    }
}

/// Looks for every secret in every place it must not be; returns one line per leak.
/// `allowed_files` says where the driver may keep a secret (then in a 0400 file); files of
/// the test's own making (the Secret serve stands in for, the simulated servers' copy) are
/// not looked at.
fn leaks(
    serve: &Serve,
    secrets: &[(&str, &str)],
    processes: &str,
    allowed_files: &dyn Fn(&Path) -> bool,
) -> Vec<String> {
    let logs = serve.logs();
    let stdout = serve.stdout();
    let calls = serve.calls_log();
    let files: Vec<_> = files_below(serve.base())
        .into_iter()
        .filter(|(path, _, _)| {
            !path.starts_with(serve.layout().secrets_dir())
                && !path.starts_with(serve.layout().sim_root())
        })
        .collect();
    let mut out = Vec::new();
    for (what, secret) in secrets {
        for (place, text) in [
            ("the plugins' logs", &logs),
            ("serve's output", &stdout),
            ("a tool's command line (calls.log)", &calls),
            (
                "a process's command line or environment",
                &processes.to_string(),
            ),
        ] {
            if text.contains(secret) {
                out.push(format!("{what} appears in {place}"));
            }
        }
        for (path, mode, content) in &files {
            if !contains(content, secret) {
                continue;
            }
            if !allowed_files(path) {
                out.push(format!("{what} is in {} (mode {mode:o})", path.display()));
            } else if mode & 0o777 != 0o400 {
                out.push(format!(
                    "{what} is in {} with mode {mode:o}, not 0400",
                    path.display()
                ));
            }
        }
    }
    out
}

fn socket_modes(serve: &Serve) {
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
async fn lustre_secrets_never_reach_logs_command_lines_or_files() {
    let serve = Serve::start(ServeOptions::lustre().log_level("trace"));
    socket_modes(&serve);
    let (password, token) = (canary(), canary());
    // Keys the backend reads (their values are configuration, not unique) and keys it does
    // not know, whose values must go nowhere.
    let secrets = map(&[
        ("exaFS", "127.0.0.1@tcp:/simfs1"),
        ("mountOptions", "flock"),
        ("password", &password),
        ("token", &token),
    ]);
    let sampler = ProcessSampler::start(serve.pid());
    every_rpc(&serve, "sec-lustre", &[], &secrets).await;
    every_rpc(
        &serve,
        "sec-lustre-own",
        &[("bindMount", "false")],
        &secrets,
    )
    .await;
    let (processes, samples) = sampler.finish();
    let found = leaks(
        &serve,
        &[
            ("a StorageClass secret", &password),
            ("a node-stage secret", &token),
        ],
        &processes,
        &|_| false,
    );
    // Everything the plugins wrote is in the logs once serve has stopped them.
    serve.stop();
    let logs = serve.logs();
    let found_after: Vec<&str> = [&password, &token]
        .iter()
        .filter(|s| logs.contains(s.as_str()))
        .map(|_| "a secret appears in the final logs")
        .collect();

    assert!(samples > 10, "the process sampler hardly ran ({samples})");
    assert!(
        processes.contains("lfs") && processes.contains("pfs-csi-node"),
        "the sampler saw no tool and no plugin: it proves nothing"
    );
    assert!(logs.contains("TRACE"), "no trace-level logs captured");
    assert!(
        logs.contains("password"),
        "the logs never name the secrets' keys: were requests logged at all?"
    );
    assert!(
        found.is_empty() && found_after.is_empty(),
        "secrets leaked:\n{}\n{}",
        found.join("\n"),
        found_after.join("\n")
    );
}

/// The connAuth secret serve generated for the first filesystem.
fn conn_auth(serve: &Serve) -> String {
    let text = std::fs::read_to_string(serve.layout().connauth_file()).unwrap();
    let list: serde_json::Value = serde_yaml::from_str(&text).unwrap();
    list[0]["connAuth"].as_str().unwrap().to_string()
}

async fn beegfs_secrets(options: ServeOptions, name: &str) {
    let serve = Serve::start(options.log_level("trace"));
    socket_modes(&serve);
    let auth = conn_auth(&serve);
    assert!(auth.len() >= 16);
    let (password, token) = (canary(), canary());
    let secrets = map(&[("password", &password), ("token", &token)]);
    let params = [
        ("sysMgmtdHost", "sim-mgmtd-1"),
        ("volDirBasePath", BEEGFS_VOL_DIR_BASE),
    ];
    let sampler = ProcessSampler::start(serve.pid());
    every_rpc(&serve, name, &params, &secrets).await;
    let (processes, samples) = sampler.finish();

    // While everything is still in place: the secret files the client needs are 0400 in
    // private directories of the plugins' state.
    let state = serve.layout().root().join("state");
    let secret_files: Vec<(PathBuf, u32)> = files_below(&state)
        .into_iter()
        .filter(|(_, _, content)| contains(content, &auth))
        .map(|(path, mode, _)| (path, mode))
        .collect();
    assert!(
        !secret_files.is_empty(),
        "no connAuth file under {}: the leak check below would prove nothing",
        state.display()
    );
    for (path, mode) in &secret_files {
        assert_eq!(mode & 0o777, 0o400, "{} is {mode:o}", path.display());
        let dir_mode = std::fs::metadata(path.parent().unwrap()).unwrap().mode() & 0o777;
        assert_eq!(
            dir_mode & 0o077,
            0,
            "{} is in a directory others can enter ({dir_mode:o})",
            path.display()
        );
    }
    let found = leaks(
        &serve,
        &[
            ("the connAuth secret", &auth),
            ("a StorageClass secret", &password),
            ("a node-stage secret", &token),
        ],
        &processes,
        // The plugins' own secret files (checked to be 0400).
        &|path: &Path| path.starts_with(&state),
    );
    serve.stop();
    assert!(samples > 10, "the process sampler hardly ran ({samples})");
    assert!(
        serve.logs().contains("TRACE"),
        "no trace-level logs captured"
    );
    // The logs were read before serve stopped; read them again, whole.
    let found_after: Vec<String> = [&auth, &password, &token]
        .iter()
        .filter(|s| serve.logs().contains(s.as_str()))
        .map(|s| format!("a secret ({}...) appears in the final logs", &s[..4]))
        .collect();
    assert!(
        found.is_empty() && found_after.is_empty(),
        "secrets leaked:\n{}\n{}",
        found.join("\n"),
        found_after.join("\n")
    );
}

#[tokio::test]
async fn beegfs7_secrets_stay_in_0400_files() {
    beegfs_secrets(ServeOptions::beegfs7(), "sec-b7").await;
}

#[tokio::test]
async fn beegfs8_secrets_stay_in_0400_files() {
    beegfs_secrets(ServeOptions::beegfs8(), "sec-b8").await;
}

/// A canary directory standing in for `/etc`, and a snapshot of its entries.
fn canary_dir(base: &Path) -> PathBuf {
    let dir = base.join("canary-etc");
    std::fs::create_dir_all(dir.join("ssh")).unwrap();
    std::fs::write(dir.join("passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
    dir
}

fn listing(dir: &Path) -> BTreeSet<(PathBuf, u64, i64, i64)> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let meta = std::fs::symlink_metadata(&d).unwrap();
        out.insert((d.clone(), meta.size(), meta.mtime(), meta.mtime_nsec()));
        if meta.is_dir() {
            for e in std::fs::read_dir(&d).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    out
}

#[tokio::test]
async fn a_target_or_staging_path_planted_as_a_symbolic_link_mounts_nothing_there() {
    let serve = Serve::start(ServeOptions::lustre());
    let mut controller = serve.controller().await;
    let mut node = serve.node().await;
    let etc = canary_dir(serve.base());
    let before = listing(&etc);
    let volume = create_volume_settled(&mut controller, create_request("planted", GIB, &[]))
        .await
        .unwrap();
    let id = volume.volume_id.clone();
    let staging = serve.pod_path("planted/staging");
    node.node_stage_volume(stage_request(&volume, &staging, rwx()))
        .await
        .unwrap();

    // The target itself is a link to the canary.
    let target = serve.pod_path("planted/target");
    std::os::unix::fs::symlink(&etc, &target).unwrap();
    expect_status(
        node.node_publish_volume(publish_request(&volume, &staging, &target, rwx(), false))
            .await,
        Code::FailedPrecondition,
        "symbolic link",
    );
    assert!(!is_mount_point(&etc), "the canary was mounted over");
    // Unpublishing through the link touches nothing either.
    expect_status(
        node.node_unpublish_volume(unpublish_request(&id, &target))
            .await,
        Code::FailedPrecondition,
        "symbolic link",
    );
    assert!(
        std::fs::symlink_metadata(&target)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the planted link was replaced"
    );

    // The staging path is a link to the canary: staging must not mount through it.
    let linked_staging = serve.pod_path("planted/staging-link");
    std::os::unix::fs::symlink(&etc, &linked_staging).unwrap();
    expect_status(
        node.node_stage_volume(stage_request(&volume, &linked_staging, rwx()))
            .await,
        Code::FailedPrecondition,
        "symbolic link",
    );
    assert!(
        !is_mount_point(&etc),
        "the canary was mounted over by a stage"
    );

    let left: Vec<PathBuf> = mounted_below(&etc);
    assert!(left.is_empty(), "mounted in the canary: {left:?}");
    assert_eq!(listing(&etc), before, "the canary changed");
    node.node_unstage_volume(unstage_request(&id, &staging))
        .await
        .unwrap();
    controller.delete_volume(delete_request(&id)).await.unwrap();
}

/// A link planted higher up, where the kubelet keeps a pod's volume directories (below
/// `--kubelet-dir`): the directory the kubelet would have made for the volume is a link to
/// the canary, and the target (`.../mount`) or staging path (`.../globalmount`) lies below
/// it. Creating the final directory and mounting through the link would put the volume
/// inside the canary; nothing may be mounted there.
#[tokio::test]
async fn a_target_or_staging_path_below_a_planted_link_in_the_kubelet_dir_mounts_nothing_there() {
    let serve = Serve::start(ServeOptions::lustre());
    let mut controller = serve.controller().await;
    let mut node = serve.node().await;
    let etc = canary_dir(serve.base());
    let before = listing(&etc);
    let volume = create_volume_settled(&mut controller, create_request("planted-up", GIB, &[]))
        .await
        .unwrap();
    let id = volume.volume_id.clone();
    let kubelet = serve.layout().kubelet_dir();

    // The staging path's directory is a link.
    let csi_dir = kubelet.join("plugins/kubernetes.io/csi/pfs-csi.io");
    std::fs::create_dir_all(&csi_dir).unwrap();
    std::os::unix::fs::symlink(&etc, csi_dir.join("0123abcd")).unwrap();
    let linked_staging = csi_dir.join("0123abcd/globalmount");
    let staged = node
        .node_stage_volume(stage_request(&volume, &linked_staging, rwx()))
        .await;
    let mounted_by_stage = mounted_below(&etc);

    // The target's directory is a link; the volume is staged where it should be.
    let staging = kubelet.join("plugins/kubernetes.io/csi/pfs-csi.io/4567cdef/globalmount");
    node.node_stage_volume(stage_request(&volume, &staging, rwx()))
        .await
        .unwrap();
    let pod_dir = kubelet.join("pods/0b3c-pod/volumes/kubernetes.io~csi");
    std::fs::create_dir_all(&pod_dir).unwrap();
    std::os::unix::fs::symlink(&etc, pod_dir.join("pv-planted")).unwrap();
    let linked_target = pod_dir.join("pv-planted/mount");
    let published = node
        .node_publish_volume(publish_request(
            &volume,
            &staging,
            &linked_target,
            rwx(),
            false,
        ))
        .await;
    let mounted_by_publish = mounted_below(&etc);

    // Clean up before asserting (serve's teardown would unmount the rest anyway).
    for path in mounted_below(&etc).iter().rev() {
        let _ = nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH);
    }
    for dir in ["mount", "globalmount"] {
        let _ = std::fs::remove_dir(etc.join(dir));
    }
    node.node_unstage_volume(unstage_request(&id, &staging))
        .await
        .unwrap();
    controller.delete_volume(delete_request(&id)).await.unwrap();

    assert!(
        mounted_by_stage.is_empty(),
        "a stage through a link in the kubelet dir mounted into the canary: {mounted_by_stage:?} (answer: {:?})",
        staged.map(|_| ())
    );
    assert!(
        mounted_by_publish.is_empty(),
        "a publish through a link in the kubelet dir mounted into the canary: {mounted_by_publish:?} (answer: {:?})",
        published.map(|_| ())
    );
    assert_eq!(staged.unwrap_err().code(), Code::FailedPrecondition);
    assert_eq!(published.unwrap_err().code(), Code::FailedPrecondition);
    assert_eq!(listing(&etc), before, "the canary changed");
}

/// Someone with write access to the BeeGFS filesystem above a volume swaps the volume's
/// directory for a link to the canary after the volume was staged: the publish refuses the
/// link and mounts nothing, and the target never shows the canary's files.
#[tokio::test]
async fn a_volume_directory_swapped_for_a_link_on_the_filesystem_is_not_published() {
    let serve = Serve::start(ServeOptions::beegfs8());
    let mut controller = serve.controller().await;
    let mut node = serve.node().await;
    let etc = canary_dir(serve.base());
    let before = listing(&etc);
    let params = [
        ("sysMgmtdHost", "sim-mgmtd-1"),
        ("volDirBasePath", BEEGFS_VOL_DIR_BASE),
    ];
    let volume = create_volume_settled(&mut controller, create_request("swapped", GIB, &params))
        .await
        .unwrap();
    let id = volume.volume_id.clone();
    let staging = serve.pod_path("swapped/staging");
    node.node_stage_volume(stage_request(&volume, &staging, rwx()))
        .await
        .unwrap();

    let path = id
        .strip_prefix("beegfs://sim-mgmtd-1/")
        .unwrap_or_else(|| panic!("{id} is not on sim-mgmtd-1"));
    let dir = serve
        .fs_data_dir(pfs_sim::state::FsKind::Beegfs, "sim-mgmtd-1")
        .join(path);
    let moved = dir.with_extension("moved");
    std::fs::rename(&dir, &moved).unwrap();
    std::os::unix::fs::symlink(&etc, &dir).unwrap();

    let target = serve.pod_path("swapped/target");
    let published = node
        .node_publish_volume(publish_request(&volume, &staging, &target, rwx(), false))
        .await;
    let shows_canary = target.join("passwd").exists();
    let target_mounted = is_mount_point(&target);
    if target_mounted {
        let _ = nix::mount::umount2(&target, nix::mount::MntFlags::MNT_DETACH);
    }

    std::fs::remove_file(&dir).unwrap();
    std::fs::rename(&moved, &dir).unwrap();
    node.node_unstage_volume(unstage_request(&id, &staging))
        .await
        .unwrap();
    controller.delete_volume(delete_request(&id)).await.unwrap();

    assert!(
        !shows_canary,
        "the canary's files were published into the pod"
    );
    assert!(!target_mounted, "something was mounted at the target");
    let err = published.expect_err("publishing a linked volume directory succeeded");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("symbolic link"), "{err:?}");
    assert_eq!(listing(&etc), before, "the canary changed");
}
