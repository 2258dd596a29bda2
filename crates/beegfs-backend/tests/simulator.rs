//! The BeeGFS backend against the simulated BeeGFS 7 and 8 tools (`pfs-csi-sim`), with the
//! real Linux command runner, mounter and snapshot engine: real mounts, real files, real tar.
//!
//! Needs root (it mounts). Everything happens in a private mount namespace of the test's
//! thread and below one temporary directory, so nothing reaches the host and a failing test
//! leaves nothing mounted. The simulator is found through `PFS_CSI_SIM`, else in this test's
//! target directory (built with `cargo build -p pfs-sim` when missing).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use beegfs_backend::settings::{ClientMountMode, QuotaSettings, SnapshotSettings};
use beegfs_backend::{BeegfsBackend, BeegfsSettings, ClientSecrets, DriverConfig};
use csi_core::ErrorCode;
use csi_core::domain::{
    AccessMode, AccessType, CapacityRange, GIB, Parameters, RequestMetadata, Secrets, SnapshotId,
    TopologyRequirement, VolumeCapability, VolumeContentSource, VolumeId,
};
use csi_core::linux::{LinuxMounter, TokioCommandRunner};
use csi_core::ports::{
    BackendContext, CommandRunner, CreateSnapshotRequest, CreateVolumeRequest, FilesystemBackend,
    Mounter, NodePublishRequest, NodeStageRequest, Role,
};
use csi_core::snapshot_engine::ArchiveSnapshotEngine;

const FS7: &str = "fs7.test";
const FS8: &str = "fs8.test";
const SECRET7: &str = "seven-secret-connauth-7";
const SECRET8: &str = "eight-secret-connauth-8";
const CERT8: &str = "-----BEGIN CERTIFICATE-----\nMIIBsimulated8\n-----END CERTIFICATE-----\n";

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

/// The mount table of this thread's namespace.
fn mountinfo() -> PathBuf {
    PathBuf::from(format!(
        "/proc/self/task/{}/mountinfo",
        nix::unistd::gettid()
    ))
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
        let table = std::fs::read_to_string(mountinfo()).unwrap_or_default();
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

fn is_mount_point(path: &Path) -> bool {
    std::fs::read_to_string(mountinfo())
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(&path.display().to_string()))
}

/// A state root with two filesystems (BeeGFS 7 with connAuth, BeeGFS 8 with connAuth and
/// TLS) and the tools as wrappers that carry the state root.
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
        for tool in ["mount", "umount", "beegfs-ctl", "beegfs"] {
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
        let secrets = dir.join("sim-secrets");
        std::fs::create_dir_all(&secrets).unwrap();
        for (name, content) in [("s7", SECRET7), ("s8", SECRET8), ("cert8", CERT8)] {
            std::fs::write(secrets.join(name), content).unwrap();
        }
        let file = |name: &str| secrets.join(name).display().to_string();
        world.sim_ok(&[
            "create-fs",
            "beegfs",
            "--mgmtd-host",
            FS7,
            "--version",
            "7",
            "--auth-secret-file",
            &file("s7"),
        ]);
        world.sim_ok(&[
            "create-fs",
            "beegfs",
            "--mgmtd-host",
            FS8,
            "--version",
            "8",
            "--auth-secret-file",
            &file("s8"),
            "--tls-cert-file",
            &file("cert8"),
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

    /// A controller over both filesystems, checked ready.
    async fn ready_controller(&self) -> BeegfsBackend {
        let runner: Arc<dyn CommandRunner> = Arc::new(TokioCommandRunner::new());
        let controller = self.backend(
            Role::Controller,
            "controller",
            ClientMountMode::PerVolume,
            &runner,
        );
        controller.check_ready().await.unwrap();
        controller
    }

    /// Replaces the simulator's fault rules.
    fn fault(&self, rules: serde_json::Value) {
        std::fs::write(self.state.join("faults.json"), rules.to_string()).unwrap();
    }

    /// The files of filesystem `host` as every client sees them.
    fn data(&self, host: &str) -> PathBuf {
        self.state.join("beegfs").join(host).join("data")
    }

    fn settings(&self, mode: ClientMountMode) -> BeegfsSettings {
        let quota = |host: &str| QuotaSettings {
            sys_mgmtd_host: host.into(),
            enabled: true,
            gid_min: 60_000,
            gid_max: 60_999,
            storage_pool: 1,
            inodes_per_gib: None,
        };
        BeegfsSettings {
            mount_tool: self.tools.join("mount"),
            beegfs_ctl_tool: self.tools.join("beegfs-ctl"),
            beegfs_tool: self.tools.join("beegfs"),
            client_conf_template: Some(self.dir.join("no-template")),
            command_timeout_seconds: 20,
            mount_timeout_seconds: 20,
            client_mount_mode: mode,
            node_unstage_timeout_seconds: 60,
            delete_wait_seconds: 1,
            quotas: vec![quota(FS7), quota(FS8)],
            snapshots: SnapshotSettings {
                tar: "tar".into(),
                dtar: None,
                verify: true,
                ..SnapshotSettings::default()
            },
            selinux_enforce_path: self.dir.join("no-selinux"),
            ..BeegfsSettings::default()
        }
    }

    fn backend(
        &self,
        role: Role,
        who: &str,
        mode: ClientMountMode,
        runner: &Arc<dyn CommandRunner>,
    ) -> BeegfsBackend {
        self.backend_with(role, who, self.settings(mode), runner)
    }

    fn backend_with(
        &self,
        role: Role,
        who: &str,
        settings: BeegfsSettings,
        runner: &Arc<dyn CommandRunner>,
    ) -> BeegfsBackend {
        let config = DriverConfig::from_yaml(&format!(
            "config:\n  connNetFilter: [127.0.0.0/8]\n  beegfsClientConf:\n    logLevel: 3\nfileSystemSpecificConfigs:\n  - sysMgmtdHost: {FS8}\n    config:\n      grpcPort: 8010\n"
        ))
        .unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(SECRET8);
        let conn_auth = format!(
            "- sysMgmtdHost: {FS7}\n  connAuth: {SECRET7}\n- sysMgmtdHost: {FS8}\n  connAuth: {b64}\n  encoding: base64\n"
        );
        let tls = format!(
            "- sysMgmtdHost: {FS8}\n  tlsCert: |\n{}",
            CERT8
                .lines()
                .map(|l| format!("    {l}\n"))
                .collect::<String>()
        );
        let secrets = ClientSecrets::from_yaml(Some(&conn_auth), Some(&tls)).unwrap();
        let ctx = BackendContext {
            role,
            node_id: who.into(),
            driver_name: "beegfs.csi.netapp.com".into(),
            runner: runner.clone(),
            mounter: Arc::new(self.mounter(runner, &settings)),
            snapshots: Arc::new(ArchiveSnapshotEngine::new(runner.clone())),
            state_dir: self.dir.join(who).join("state"),
            kubelet_dir: self.dir.join(who).join("kubelet"),
        };
        BeegfsBackend::new(ctx, config, secrets, settings).unwrap()
    }

    fn mounter(&self, runner: &Arc<dyn CommandRunner>, settings: &BeegfsSettings) -> LinuxMounter {
        LinuxMounter::new(
            runner.clone(),
            settings.mount_tool.clone(),
            settings.mount_timeout(),
        )
        .with_mountinfo(mountinfo())
    }
}

fn capability() -> VolumeCapability {
    VolumeCapability {
        access_type: AccessType::Mount,
        fs_type: String::new(),
        mount_flags: vec![],
        access_mode: AccessMode::MultiNodeMultiWriter,
    }
}

fn create(
    name: &str,
    host: &str,
    bytes: u64,
    source: Option<VolumeContentSource>,
) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.into(),
        capacity: CapacityRange::new(bytes as i64, 0).unwrap(),
        capabilities: vec![capability()],
        parameters: Parameters::new(
            [
                ("sysMgmtdHost", host),
                ("volDirBasePath", "/k8s/all"),
                ("permissions/mode", "0770"),
                ("stripePattern/chunkSize", "1m"),
                ("stripePattern/numTargets", "2"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ),
        metadata: RequestMetadata::default(),
        secrets: Secrets::default(),
        content_source: source,
        topology: TopologyRequirement::default(),
    }
}

fn stage(id: &VolumeId, staging: &Path) -> NodeStageRequest {
    std::fs::create_dir_all(staging).unwrap();
    NodeStageRequest {
        volume_id: id.clone(),
        staging_path: staging.to_path_buf(),
        capability: capability(),
        context: Default::default(),
        secrets: Secrets::default(),
    }
}

fn publish(id: &VolumeId, staging: &Path, target: &Path) -> NodePublishRequest {
    NodePublishRequest {
        volume_id: id.clone(),
        staging_path: staging.to_path_buf(),
        target_path: target.to_path_buf(),
        capability: capability(),
        read_only: false,
        context: Default::default(),
        secrets: Secrets::default(),
    }
}

#[test]
fn volumes_live_their_whole_life_on_simulated_beegfs_7_and_8() {
    isolated(|dir| async move { lifecycle(&dir).await });
}

async fn lifecycle(dir: &Path) {
    let world = World::new(dir);
    let runner: Arc<dyn CommandRunner> = Arc::new(TokioCommandRunner::new());
    let controller = world.backend(
        Role::Controller,
        "controller",
        ClientMountMode::PerVolume,
        &runner,
    );
    let node = world.backend(Role::Node, "node-1", ClientMountMode::PerVolume, &runner);
    let shared_node = world.backend(Role::Node, "node-2", ClientMountMode::Shared, &runner);
    let mounter = world.mounter(&runner, &world.settings(ClientMountMode::PerVolume));
    controller.check_ready().await.unwrap();
    node.check_ready().await.unwrap();

    for (host, version) in [(FS7, 7), (FS8, 8)] {
        let name = format!("pvc-{version}");
        let vol = controller
            .create_volume(&create(&name, host, GIB, None))
            .await
            .unwrap();
        assert_eq!(vol.id.as_str(), format!("beegfs://{host}/k8s/all/{name}"));
        let gid: u32 = vol.context["quotaGid"].parse().unwrap();
        let data_dir = world.data(host).join("k8s/all").join(&name);
        let meta = std::fs::metadata(&data_dir).unwrap();
        assert_eq!(meta.gid(), gid, "BeeGFS {version}");
        assert_eq!(
            meta.permissions().mode() & 0o7777,
            0o2770,
            "BeeGFS {version}"
        );
        let info = controller.get_volume(&vol.id).await.unwrap();
        assert!(
            !info.condition.abnormal,
            "BeeGFS {version}: {:?}",
            info.condition
        );
        assert_eq!(
            controller
                .create_volume(&create(&name, host, GIB, None))
                .await
                .unwrap(),
            vol
        );

        // Stage with its own client mount, publish, write, read the quota.
        let staging = dir.join(format!(
            "node-1/kubelet/plugins/kubernetes.io/csi/{name}/globalmount"
        ));
        node.stage_volume(&stage(&vol.id, &staging)).await.unwrap();
        node.stage_volume(&stage(&vol.id, &staging)).await.unwrap();
        assert!(is_mount_point(&staging.join("mount")), "BeeGFS {version}");
        let target = dir.join(format!("node-1/kubelet/pods/p1/volumes/{name}/mount"));
        std::fs::create_dir_all(&target).unwrap();
        let source = node
            .publish_source(&publish(&vol.id, &staging, &target))
            .await
            .unwrap();
        mounter
            .bind_mount_below(&source.staged, &source.dir, &target, false)
            .await
            .unwrap();
        std::fs::write(target.join("hello"), vec![b'x'; 300_000]).unwrap();
        assert_eq!(
            std::fs::read(data_dir.join("hello")).unwrap().len(),
            300_000
        );
        assert_eq!(
            std::fs::metadata(data_dir.join("hello")).unwrap().gid(),
            gid,
            "files inherit the volume's group"
        );
        let stats = node.volume_stats(&vol.id, &target).await.unwrap();
        assert_eq!(stats.bytes_total, GIB, "BeeGFS {version}");
        assert!(stats.bytes_used >= 300_000, "BeeGFS {version}: {stats:?}");

        // The node still has it staged: DeleteVolume answers "retry later" and deletes nothing.
        let err = controller
            .delete_volume(&vol.id, &Secrets::default())
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            ErrorCode::Unavailable,
            "BeeGFS {version}: {err}"
        );
        assert!(err.to_string().contains("node-1"), "{err}");
        assert!(data_dir.join("hello").is_file());

        // Unstage refuses while the publication remains.
        let err = node.unstage_volume(&vol.id, &staging).await.unwrap_err();
        assert_eq!(
            err.code(),
            ErrorCode::FailedPrecondition,
            "BeeGFS {version}: {err}"
        );
        mounter.unmount(&target).await.unwrap();
        node.unstage_volume(&vol.id, &staging).await.unwrap();
        assert!(!is_mount_point(&staging.join("mount")));

        // A shared client mount on another node.
        let staging2 = dir.join(format!(
            "node-2/kubelet/plugins/kubernetes.io/csi/{name}/globalmount"
        ));
        shared_node
            .stage_volume(&stage(&vol.id, &staging2))
            .await
            .unwrap();
        let source2 = shared_node
            .publish_source(&publish(&vol.id, &staging2, &target))
            .await
            .unwrap();
        assert_eq!(
            std::fs::read(source2.dir.join("hello")).unwrap().len(),
            300_000
        );
        shared_node
            .unstage_volume(&vol.id, &staging2)
            .await
            .unwrap();
        assert!(!is_mount_point(&staging2.join("mount")));

        // Expand.
        assert_eq!(
            controller
                .expand_volume(&vol.id, 2 * GIB, &Secrets::default())
                .await
                .unwrap(),
            2 * GIB
        );
        assert_eq!(
            controller
                .get_volume(&vol.id)
                .await
                .unwrap()
                .volume
                .capacity_bytes,
            2 * GIB
        );

        // Snapshot with tar and restore it into a new volume with its own group.
        let snap_req = CreateSnapshotRequest {
            name: format!("snap-{version}"),
            source_volume_id: vol.id.clone(),
            parameters: Parameters::default(),
            secrets: Secrets::default(),
        };
        let snap = loop {
            let s = controller.create_snapshot(&snap_req).await.unwrap();
            if s.ready_to_use {
                break s;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(snap.size_bytes >= 300_000, "{snap:?}");
        let restored_name = format!("restored-{version}");
        let restored = controller
            .create_volume(&create(
                &restored_name,
                host,
                GIB,
                Some(VolumeContentSource::Snapshot(snap.id.to_string())),
            ))
            .await
            .unwrap();
        let restored_gid: u32 = restored.context["quotaGid"].parse().unwrap();
        assert_ne!(restored_gid, gid);
        let restored_file = world
            .data(host)
            .join("k8s/all")
            .join(&restored_name)
            .join("hello");
        assert_eq!(std::fs::read(&restored_file).unwrap().len(), 300_000);
        assert_eq!(
            std::fs::metadata(&restored_file).unwrap().gid(),
            restored_gid
        );

        // Delete everything; a second delete is fine.
        controller
            .delete_volume(&restored.id, &Secrets::default())
            .await
            .unwrap();
        let sid = SnapshotId::parse(snap.id.as_str()).unwrap();
        controller
            .delete_snapshot(&sid, &Secrets::default())
            .await
            .unwrap();
        controller
            .delete_volume(&vol.id, &Secrets::default())
            .await
            .unwrap();
        controller
            .delete_volume(&vol.id, &Secrets::default())
            .await
            .unwrap();
        assert!(!data_dir.exists());
        assert!(
            !world
                .data(host)
                .join("k8s/all")
                .join(&restored_name)
                .exists()
        );

        // A static volume is never deleted.
        let static_dir = world.data(host).join("static/data");
        std::fs::create_dir_all(&static_dir).unwrap();
        std::fs::write(static_dir.join("keep"), b"keep").unwrap();
        let static_id = VolumeId::parse(&format!("beegfs://{host}/static/data")).unwrap();
        let err = controller
            .delete_volume(&static_id, &Secrets::default())
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::FailedPrecondition);
        assert!(static_dir.join("keep").is_file());
    }

    // Faults: a hung tool is cut off by the command timeout, and the interrupted creation is
    // finished by the retry; an authentication refusal is a precondition, not a retry.
    let impatient = world.backend_with(
        Role::Controller,
        "impatient",
        BeegfsSettings {
            command_timeout_seconds: 2,
            ..world.settings(ClientMountMode::PerVolume)
        },
        &runner,
    );
    world.fault(serde_json::json!([{"tool": "beegfs-ctl", "args_contain": ["--createdir"], "action": "hang"}]));
    let started = std::time::Instant::now();
    let err = impatient
        .create_volume(&create("pvc-hang", FS7, GIB, None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::DeadlineExceeded, "{err}");
    assert!(started.elapsed() < Duration::from_secs(15));
    world.fault(serde_json::json!([]));
    let finished = impatient
        .create_volume(&create("pvc-hang", FS7, GIB, None))
        .await
        .unwrap();
    assert!(world.data(FS7).join("k8s/all/pvc-hang").is_dir());
    impatient
        .delete_volume(&finished.id, &Secrets::default())
        .await
        .unwrap();
    world.fault(serde_json::json!([{"tool": "beegfs", "args_contain": ["quota"], "action": "auth_failure"}]));
    let err = impatient
        .create_volume(&create("pvc-auth", FS8, GIB, None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::FailedPrecondition, "{err}");
    assert!(err.to_string().contains("authentication"), "{err}");
    world.fault(serde_json::json!([]));

    // Secrets never reached a command line: the simulator logged every call's arguments.
    let calls = std::fs::read_to_string(world.state.join("calls.log")).unwrap();
    assert!(calls.lines().count() > 20);
    for secret in [SECRET7, SECRET8, "MIIBsimulated8"] {
        assert!(!calls.contains(secret), "a secret reached a command line");
    }
    assert!(
        calls.contains("--auth-file=") && calls.contains("--tls-cert-file="),
        "BeeGFS 8 got its secrets by file"
    );
}

/// BeeGFS 7 shows a group without limits of its own the pool's default limits: with defaults
/// set, every unused group id seemed taken and quota-enabled creates ran out of ids.
#[test]
fn default_group_limits_leave_unused_group_ids_free() {
    isolated(|dir| async move { default_limits(&dir).await });
}

async fn default_limits(dir: &Path) {
    let world = World::new(dir);
    let conf = dir.join("admin-client.conf");
    std::fs::write(
        &conf,
        format!(
            "sysMgmtdHost = {FS7}\nconnAuthFile = {}\n",
            dir.join("sim-secrets/s7").display()
        ),
    )
    .unwrap();
    let ctl = |args: &[&str]| {
        let out = Process::new(world.tools.join("beegfs-ctl"))
            .arg(format!("--cfgFile={}", conf.display()))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "beegfs-ctl {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    ctl(&[
        "--setquota",
        "--default",
        "--gid",
        "--sizelimit=1T",
        "--inodelimit=100000",
        "--storagepoolid=1",
    ]);
    // As the real tool: an unused group shows the defaults.
    let shown = ctl(&["--getquota", "--gid", "4242", "--csv", "--storagepoolid=1"]);
    assert!(
        shown.contains("4242,4242,0,1099511627776,0,100000"),
        "{shown}"
    );

    let controller = world.ready_controller().await;
    let vol = controller
        .create_volume(&create("pvc-defaults", FS7, GIB, None))
        .await
        .unwrap();
    let gid = &vol.context["quotaGid"];
    let own = ctl(&["--getquota", "--gid", gid, "--csv", "--storagepoolid=1"]);
    assert!(
        own.contains(&format!("{gid},{gid},0,{GIB},")),
        "the volume's group has its own limit: {own}"
    );
}

/// A creation that fails for good, and whose group limits then cannot be cleared, keeps its
/// record: the group id stays this driver's, and a retry finishes the volume.
#[test]
fn limits_that_cannot_be_cleared_keep_the_failed_volumes_record() {
    isolated(|dir| async move { uncleared_limits(&dir).await });
}

async fn uncleared_limits(dir: &Path) {
    let world = World::new(dir);
    let controller = world.ready_controller().await;
    // Setting the limits fails, then so does clearing them.
    world.fault(serde_json::json!([{
        "tool": "beegfs-ctl",
        "args_contain": ["--setquota"],
        "action": {"fail": {"exit_code": 1, "stderr": "Error: quota is not supported here"}},
        "times": 2
    }]));
    let request = create("pvc-u", FS7, GIB, None);
    controller.create_volume(&request).await.unwrap_err();
    let record = world.data(FS7).join("k8s/all/.pfs-csi/volumes/pvc-u.json");
    assert!(record.exists(), "the record stays");
    let vol = controller.create_volume(&request).await.unwrap();
    assert_eq!(vol.id.as_str(), format!("beegfs://{FS7}/k8s/all/pvc-u"));
}
