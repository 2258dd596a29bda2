//! The Lustre backend against the simulated Lustre tools (`pfs-csi-sim`), with the real Linux
//! mounter, command runner and snapshot engine: real mounts, real files, real `tar`.
//!
//! Needs root (it mounts). Everything happens in a private mount namespace of the test's
//! thread and below one temporary directory, so nothing reaches the host and a failing test
//! leaves nothing behind. The simulator is found through `PFS_CSI_SIM`, else next to this
//! test's target directory (built with `cargo build -p pfs-sim` when missing).

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::sync::Arc;
use std::time::Duration;

use csi_core::ErrorCode;
use csi_core::domain::{
    AccessMode, AccessType, CapacityRange, GIB, Parameters, RequestMetadata, Secrets, SnapshotId,
    TopologyRequirement, VolumeCapability, VolumeContentSource, VolumeId,
};
use csi_core::linux::{LinuxMounter, TokioCommandRunner};
use csi_core::ports::{
    BackendContext, CommandRunner, CreateSnapshotRequest, CreateVolumeRequest, FilesystemBackend,
    NodePublishRequest, NodeStageRequest, QuotaManager, Role,
};
use csi_core::snapshot_engine::ArchiveSnapshotEngine;
use lustre_backend::quota::LustreQuota;
use lustre_backend::{LustreBackend, LustreConfig, LustreSettings};
use serde_json::json;

/// The simulator executable.
fn simulator() -> PathBuf {
    if let Some(path) = std::env::var_os("PFS_CSI_SIM") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test executable");
    let target = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory");
    let sim = target.join("pfs-csi-sim");
    if !sim.is_file() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Process::new(cargo)
            .args(["build", "-p", "pfs-sim", "--bin", "pfs-csi-sim"])
            .status()
            .expect("run cargo build -p pfs-sim");
        assert!(status.success(), "building the simulator failed");
    }
    assert!(
        sim.is_file(),
        "no simulator at {}; set PFS_CSI_SIM",
        sim.display()
    );
    sim
}

/// Moves this thread (and what it starts) into a private mount namespace.
fn private_mount_namespace() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test mounts filesystems and must run as root"
    );
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).expect("unshare(CLONE_NEWNS)");
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .expect("make / private");
}

/// Runs `body` in a private mount namespace on a fresh temporary directory, unmounting
/// whatever it mounted there afterwards, also when it fails.
fn isolated<F: std::future::Future<Output = ()>>(body: impl FnOnce(PathBuf) -> F) {
    private_mount_namespace();
    let tmp = tempfile::tempdir().unwrap();
    let _unmount = Unmounter(tmp.path().to_path_buf());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(body(tmp.path().to_path_buf()));
}

/// Unmounts everything below a directory when dropped (also when the test fails).
struct Unmounter(PathBuf);

impl Drop for Unmounter {
    fn drop(&mut self) {
        let tid = nix::unistd::gettid();
        let table =
            std::fs::read_to_string(format!("/proc/self/task/{tid}/mountinfo")).unwrap_or_default();
        let mut points: Vec<PathBuf> = table
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .map(|p| PathBuf::from(p.replace("\\040", " ")))
            .filter(|p| p.starts_with(&self.0))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for p in points {
            let _ = nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// A state root, the tools as wrappers that carry it, and one Lustre filesystem `testfs`.
struct World {
    dir: PathBuf,
    sim: PathBuf,
    state: PathBuf,
    tools: PathBuf,
}

impl World {
    fn new(dir: &Path) -> World {
        let sim = simulator();
        let state = dir.join("sim-state");
        let tools = dir.join("tools");
        std::fs::create_dir_all(&tools).unwrap();
        for tool in ["mount", "umount", "lfs", "lctl", "dtar"] {
            let path = tools.join(tool);
            std::fs::write(
                &path,
                format!(
                    "#!/bin/sh\nPFS_SIM_ROOT='{}' exec '{}' {tool} \"$@\"\n",
                    state.display(),
                    sim.display()
                ),
            )
            .unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let world = World {
            dir: dir.to_path_buf(),
            sim,
            state,
            tools,
        };
        world.sim_ok(&[
            "create-fs",
            "lustre",
            "--name",
            "testfs",
            "--nids",
            "127.0.0.1@tcp",
        ]);
        world
    }

    fn sim_ok(&self, args: &[&str]) -> String {
        let out = Process::new(&self.sim)
            .args(args)
            .env("PFS_SIM_ROOT", &self.state)
            .output()
            .unwrap();
        assert!(out.status.success(), "pfs-csi-sim {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The files of `testfs` as every client sees them.
    fn data(&self) -> PathBuf {
        self.state.join("lustre/testfs/data")
    }

    fn mount_point(&self) -> PathBuf {
        self.dir.join("mnt/exa1")
    }

    fn settings(&self) -> LustreSettings {
        LustreSettings {
            mount: self.tools.join("mount"),
            lfs: self.tools.join("lfs"),
            lctl: self.tools.join("lctl"),
            // Written by the simulator with the filesystem, as the kernel module does in sysfs.
            client_version_file: self.state.join("sys/fs/lustre/version"),
            dtar: self.tools.join("dtar"),
            command_timeout_seconds: 20,
            mount_timeout_seconds: 20,
            archive_timeout_seconds: 120,
            content_wait_seconds: 20,
            ..Default::default()
        }
    }

    fn backend(&self, role: Role, runner: &Arc<dyn CommandRunner>) -> LustreBackend {
        let settings = self.settings();
        let config = LustreConfig::from_value(json!({"exascaler_map": {"exa1": {
            "exaFS": "127.0.0.1@tcp:/testfs",
            "mountPoint": self.mount_point().display().to_string(),
            "zone": "zone-1",
        }}}))
        .unwrap();
        let ctx = BackendContext {
            role,
            node_id: "node-1".into(),
            driver_name: "exa.csi.ddn.com".into(),
            runner: runner.clone(),
            mounter: Arc::new(LinuxMounter::new(
                runner.clone(),
                settings.mount.clone(),
                settings.mount_timeout(),
            )),
            snapshots: Arc::new(ArchiveSnapshotEngine::new(runner.clone())),
            state_dir: self.dir.join(format!("{role:?}-state")),
            kubelet_dir: self.dir.join("kubelet"),
        };
        LustreBackend::new(config, settings, ctx).unwrap()
    }

    fn fault(&self, rules: serde_json::Value) {
        std::fs::write(self.state.join("faults.json"), rules.to_string()).unwrap();
    }
}

fn capability(mode: AccessMode) -> VolumeCapability {
    VolumeCapability {
        access_type: AccessType::Mount,
        fs_type: "lustre".into(),
        mount_flags: Vec::new(),
        access_mode: mode,
    }
}

fn create(
    name: &str,
    params: &[(&str, &str)],
    bytes: u64,
    source: Option<VolumeContentSource>,
) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.into(),
        capacity: CapacityRange::new(bytes as i64, 0).unwrap(),
        capabilities: vec![capability(AccessMode::MultiNodeMultiWriter)],
        parameters: Parameters::new(
            params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        metadata: RequestMetadata::default(),
        secrets: Secrets::default(),
        content_source: source,
        topology: TopologyRequirement::default(),
    }
}

fn stage(
    world: &World,
    id: &VolumeId,
    name: &str,
    context: &BTreeMap<String, String>,
    mode: AccessMode,
) -> NodeStageRequest {
    NodeStageRequest {
        volume_id: id.clone(),
        staging_path: world
            .dir
            .join("kubelet/plugins/pv")
            .join(name)
            .join("globalmount"),
        capability: capability(mode),
        context: context.clone(),
        secrets: Secrets::default(),
    }
}

fn snapshot(name: &str, source: &VolumeId, params: &[(&str, &str)]) -> CreateSnapshotRequest {
    CreateSnapshotRequest {
        name: name.into(),
        source_volume_id: source.clone(),
        parameters: Parameters::new(
            params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        secrets: Secrets::default(),
    }
}

async fn until_ready(
    backend: &LustreBackend,
    req: &CreateSnapshotRequest,
) -> csi_core::domain::Snapshot {
    for _ in 0..600 {
        let snap = backend.create_snapshot(req).await.unwrap();
        if snap.ready_to_use {
            return snap;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("snapshot {} never became ready", req.name);
}

fn is_mount_point(path: &Path) -> bool {
    let tid = nix::unistd::gettid();
    std::fs::read_to_string(format!("/proc/self/task/{tid}/mountinfo"))
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(&path.display().to_string()))
}

#[test]
fn a_volume_lives_its_whole_life_on_the_simulated_filesystem() {
    isolated(|dir| async move { lifecycle(&dir).await });
}

async fn lifecycle(dir: &Path) {
    let world = World::new(dir);
    let runner: Arc<dyn CommandRunner> = Arc::new(TokioCommandRunner::new());
    let controller = world.backend(Role::Controller, &runner);
    let node = world.backend(Role::Node, &runner);
    controller.check_ready().await.unwrap();
    let quota = LustreQuota::new(
        runner.clone(),
        world.tools.join("lfs"),
        world.mount_point(),
        Duration::from_secs(20),
    );

    // Create: a directory with its project and hard limit on the filesystem.
    let vol = controller
        .create_volume(&create(
            "pvc-1",
            &[("exaMountUid", "1001"), ("volumeDirPermissions", "0775")],
            GIB,
            None,
        ))
        .await
        .unwrap();
    assert_eq!(vol.id.as_str(), "exa1:/pvc-1");
    assert!(
        is_mount_point(&world.mount_point()),
        "the controller mounted the filesystem"
    );
    let data_dir = world.data().join("pvc-1");
    assert!(data_dir.is_dir());
    let project = quota
        .project_of(&world.mount_point().join("pvc-1"))
        .await
        .unwrap();
    assert!(project.inherit && project.id >= 10_000, "{project:?}");
    assert_eq!(
        quota.usage(project.id).await.unwrap().bytes_limit,
        Some(GIB)
    );
    assert_eq!(
        controller
            .create_volume(&create(
                "pvc-1",
                &[("exaMountUid", "1001"), ("volumeDirPermissions", "0775")],
                GIB,
                None
            ))
            .await
            .unwrap(),
        vol
    );

    // Stage with the shared mount, write through it, read the stats.
    let staged = stage(
        &world,
        &vol.id,
        "pvc-1",
        &vol.context,
        AccessMode::MultiNodeMultiWriter,
    );
    node.stage_volume(&staged).await.unwrap();
    node.stage_volume(&staged).await.unwrap();
    assert!(is_mount_point(&staged.staging_path));
    let publish = NodePublishRequest {
        volume_id: vol.id.clone(),
        staging_path: staged.staging_path.clone(),
        target_path: dir.join("kubelet/pods/p1/volumes/pvc-1/mount"),
        capability: staged.capability.clone(),
        read_only: false,
        context: vol.context.clone(),
        secrets: Secrets::default(),
    };
    let source = node.publish_source(&publish).await.unwrap();
    std::fs::write(source.dir.join("hello.txt"), vec![b'x'; 200_000]).unwrap();
    assert_eq!(
        std::fs::read(data_dir.join("hello.txt")).unwrap().len(),
        200_000
    );
    // The simulated `lfs` knows the mounts it made, not bind mounts of them (the real one
    // answers on any path of the filesystem): ask through the node's shared mount.
    let on_lustre = world.mount_point().join("pvc-1");
    let stats = node.volume_stats(&vol.id, &on_lustre).await.unwrap();
    assert_eq!(stats.bytes_total, GIB);
    assert!(stats.bytes_used >= 200_000, "{stats:?}");
    assert_eq!(stats.bytes_available, GIB - stats.bytes_used);

    // Expand.
    assert_eq!(
        controller
            .expand_volume(&vol.id, 2 * GIB, &Secrets::default())
            .await
            .unwrap(),
        2 * GIB
    );
    assert_eq!(
        quota.usage(project.id).await.unwrap().bytes_limit,
        Some(2 * GIB)
    );
    assert_eq!(
        node.volume_stats(&vol.id, &on_lustre)
            .await
            .unwrap()
            .bytes_total,
        2 * GIB
    );

    // Snapshot with tar, restore it; snapshot with dtar; clone.
    let snap_req = snapshot("snap-tar", &vol.id, &[("snapshotMd5Verify", "true")]);
    let snap = until_ready(&controller, &snap_req).await;
    assert!(snap.size_bytes > 200_000, "{snap:?}");
    let restored = controller
        .create_volume(&create(
            "pvc-restored",
            &[],
            GIB,
            Some(VolumeContentSource::Snapshot(snap.id.to_string())),
        ))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(world.data().join("pvc-restored/hello.txt"))
            .unwrap()
            .len(),
        200_000
    );
    let dtar_req = snapshot(
        "snap-dtar",
        &vol.id,
        &[
            ("snapshotUtility", "dtar"),
            ("snapshotFolder", "csi-snapshots"),
        ],
    );
    let dtar_snap = until_ready(&controller, &dtar_req).await;
    assert!(world.data().join("csi-snapshots/snap-dtar.tar").is_file());
    let clone = controller
        .create_volume(&create(
            "pvc-clone",
            &[],
            2 * GIB,
            Some(VolumeContentSource::Volume(vol.id.to_string())),
        ))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(world.data().join("pvc-clone/hello.txt"))
            .unwrap()
            .len(),
        200_000
    );
    let listed: Vec<String> = controller
        .list_snapshots()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id.to_string())
        .collect();
    assert_eq!(listed.len(), 2, "{listed:?}");

    // pvc-1's staging path given for another volume: refused, pvc-1 stays staged there.
    let other = NodeStageRequest {
        volume_id: restored.id.clone(),
        context: restored.context.clone(),
        ..staged.clone()
    };
    let err = node.stage_volume(&other).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::FailedPrecondition, "{err}");
    assert!(err.to_string().contains("another directory"), "{err}");
    let inode = |p: &Path| {
        let m = std::fs::metadata(p).unwrap();
        (m.dev(), m.ino())
    };
    assert_eq!(
        inode(&staged.staging_path),
        inode(&world.mount_point().join("pvc-1"))
    );

    // A separate, read-only Lustre mount of one volume.
    let own = stage(
        &world,
        &restored.id,
        "pvc-restored",
        &BTreeMap::from([("bindMount".to_string(), "false".to_string())]),
        AccessMode::MultiNodeReaderOnly,
    );
    node.stage_volume(&own).await.unwrap();
    assert_eq!(
        std::fs::read(own.staging_path.join("hello.txt"))
            .unwrap()
            .len(),
        200_000
    );
    assert!(
        std::fs::write(own.staging_path.join("new"), b"x").is_err(),
        "a read-only stage refuses writes"
    );

    // Unstage (twice: idempotent).
    for req in [&staged, &own] {
        node.unstage_volume(&req.volume_id, &req.staging_path)
            .await
            .unwrap();
        node.unstage_volume(&req.volume_id, &req.staging_path)
            .await
            .unwrap();
        assert!(!is_mount_point(&req.staging_path));
    }

    // A static volume's data is never deleted.
    std::fs::create_dir(world.data().join("static-data")).unwrap();
    std::fs::write(world.data().join("static-data/keep"), b"keep").unwrap();
    let err = controller
        .delete_volume(
            &VolumeId::parse("exa1:/static-data").unwrap(),
            &Secrets::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::FailedPrecondition);
    assert_eq!(
        std::fs::read(world.data().join("static-data/keep")).unwrap(),
        b"keep"
    );

    // lfs fails: a clear error, nothing half made.
    world.fault(json!([{"tool": "lfs", "args_contain": ["setquota"], "action": {"fail": {"exit_code": 1, "stderr": "lfs setquota: quotactl failed: Operation not permitted"}}, "times": 1}]));
    let err = controller
        .create_volume(&create("pvc-fail", &[], GIB, None))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("Operation not permitted"), "{err}");
    assert!(!world.data().join("pvc-fail").exists());
    assert!(!world.data().join(".pfs-csi/volumes/pvc-fail.json").exists());
    world.fault(json!([]));

    // Delete everything.
    for id in [&vol.id, &restored.id, &clone.id] {
        controller
            .delete_volume(id, &Secrets::default())
            .await
            .unwrap();
        controller
            .delete_volume(id, &Secrets::default())
            .await
            .unwrap();
    }
    for name in ["pvc-1", "pvc-restored", "pvc-clone"] {
        assert!(!world.data().join(name).exists(), "{name}");
    }
    assert_eq!(
        quota.usage(project.id).await.unwrap().bytes_limit,
        None,
        "limits cleared"
    );
    for s in [&snap, &dtar_snap] {
        controller
            .delete_snapshot(
                &SnapshotId::parse(s.id.as_str()).unwrap(),
                &Secrets::default(),
            )
            .await
            .unwrap();
    }
    assert!(!world.data().join("csi-snapshots/snap-dtar.tar").exists());
    assert!(controller.list_volumes().await.unwrap().is_empty());
    assert!(controller.list_snapshots().await.unwrap().is_empty());
    // The released project no longer counts as used once the trash is emptied.
    for _ in 0..200 {
        if !quota.in_use(project.id).await.unwrap() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!quota.in_use(project.id).await.unwrap());
}

/// The deployments bind the host's mount point into the container, so the mount point is a
/// mount before any Lustre is there; and the Lustre mount can go away under that bind.
#[test]
fn a_mount_point_that_is_a_mount_of_something_else_gets_lustre_mounted_over_it() {
    isolated(|dir| async move { host_bind(&dir).await });
}

async fn host_bind(dir: &Path) {
    let world = World::new(dir);
    let host = dir.join("host-exaFS");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::create_dir_all(world.mount_point()).unwrap();
    let bind = |flags| {
        nix::mount::mount(
            Some(&host),
            &world.mount_point(),
            None::<&str>,
            flags,
            None::<&str>,
        )
        .unwrap()
    };
    bind(nix::mount::MsFlags::MS_BIND);
    let runner: Arc<dyn CommandRunner> = Arc::new(TokioCommandRunner::new());
    let controller = world.backend(Role::Controller, &runner);
    let node = world.backend(Role::Node, &runner);
    controller.check_ready().await.unwrap();

    let vol = controller
        .create_volume(&create("pvc-h", &[], GIB, None))
        .await
        .unwrap();
    assert!(world.data().join("pvc-h").is_dir(), "made on Lustre");
    assert_eq!(
        std::fs::read_dir(&host).unwrap().count(),
        0,
        "nothing made in the host directory under Lustre"
    );

    // The node sees the same: its stage shows the volume's Lustre directory.
    let staged = stage(
        &world,
        &vol.id,
        "pvc-h",
        &vol.context,
        AccessMode::MultiNodeMultiWriter,
    );
    node.stage_volume(&staged).await.unwrap();
    std::fs::write(staged.staging_path.join("f"), b"on lustre").unwrap();
    assert!(world.data().join("pvc-h/f").is_file());
    node.unstage_volume(&vol.id, &staged.staging_path)
        .await
        .unwrap();

    // Lustre goes away under the bind (an administrator's umount): a delete mounts it again
    // and deletes the volume, never answering "nothing to delete" from the bare directory.
    while is_mount_point(&world.mount_point()) {
        nix::mount::umount2(&world.mount_point(), nix::mount::MntFlags::MNT_DETACH).unwrap();
    }
    bind(nix::mount::MsFlags::MS_BIND);
    controller
        .delete_volume(&vol.id, &Secrets::default())
        .await
        .unwrap();
    assert!(!world.data().join("pvc-h").exists(), "deleted on Lustre");
    assert_eq!(std::fs::read_dir(&host).unwrap().count(), 0);
}
