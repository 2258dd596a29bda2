//! Tests of [`crate::BeegfsBackend`] over the mocked ports of [`crate::testing`].

use std::collections::HashSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use csi_core::ErrorCode;
use csi_core::domain::{
    AccessMode, GIB, Parameters, Secrets, SnapshotId, Topology, VolumeContentSource, VolumeId,
};
use csi_core::ports::{
    CreateSnapshotRequest, FilesystemBackend, NodePublishRequest, NodeStageRequest, PublishSource,
    Role,
};

use crate::ctl::BeegfsVersion;
use crate::records::VolumeRecord;
use crate::settings::{ClientMountMode, QuotaSettings};
use crate::testing::{World, capability, create_request};
use crate::volume_id::VolumePath;
use crate::{BeegfsBackend, BeegfsSettings};

const HOST: &str = "10.0.0.5";
const NO_AUTH: &str = "config:\n  beegfsClientConf:\n    connDisableAuthentication: \"true\"\n";

fn quota_settings(min: u32, max: u32) -> BeegfsSettings {
    BeegfsSettings {
        quotas: vec![QuotaSettings {
            sys_mgmtd_host: HOST.into(),
            enabled: true,
            gid_min: min,
            gid_max: max,
            storage_pool: 1,
            inodes_per_gib: Some(1000),
        }],
        ..BeegfsSettings::default()
    }
}

fn params(base: &str) -> Vec<(&'static str, String)> {
    vec![
        ("sysMgmtdHost", HOST.to_string()),
        ("volDirBasePath", base.to_string()),
    ]
}

fn req(
    name: &str,
    params: &[(&'static str, String)],
    bytes: i64,
) -> csi_core::ports::CreateVolumeRequest {
    let pairs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
    create_request(name, &pairs, bytes)
}

fn vid(text: &str) -> VolumeId {
    VolumeId::parse(text).unwrap()
}

fn stage_request(id: &str, staging: &Path, flags: &[&str]) -> NodeStageRequest {
    std::fs::create_dir_all(staging).unwrap();
    NodeStageRequest {
        volume_id: vid(id),
        staging_path: staging.to_path_buf(),
        capability: capability(AccessMode::MultiNodeMultiWriter, flags),
        context: Default::default(),
        secrets: Secrets::default(),
    }
}

fn publish_request(id: &str, staging: &Path, target: &Path) -> NodePublishRequest {
    NodePublishRequest {
        volume_id: vid(id),
        staging_path: staging.to_path_buf(),
        target_path: target.to_path_buf(),
        capability: capability(AccessMode::MultiNodeMultiWriter, &[]),
        read_only: false,
        context: Default::default(),
        secrets: Secrets::default(),
    }
}

fn controller(
    world: &World,
    settings: BeegfsSettings,
    config: &str,
    auth: Option<&str>,
) -> BeegfsBackend {
    world.backend("ctl", Role::Controller, settings, config, auth)
}

/// A world with one BeeGFS 7 filesystem and its controller (default configuration, no
/// authentication).
fn v7_controller(settings: BeegfsSettings) -> (World, BeegfsBackend) {
    let world = World::new();
    world.add_fs("ctl", HOST, BeegfsVersion::V7, None);
    let ctl = controller(&world, settings, NO_AUTH, None);
    (world, ctl)
}

#[tokio::test]
async fn the_dynamic_lifecycle_works_on_beegfs_7_and_8() {
    for version in [BeegfsVersion::V7, BeegfsVersion::V8] {
        let world = World::new();
        world.add_fs("ctl", HOST, version, None);
        let ctl = controller(&world, quota_settings(5000, 5100), NO_AUTH, None);
        let node = world.backend("n1", Role::Node, quota_settings(5000, 5100), NO_AUTH, None);
        let mut p = params("k8s/all");
        p.push(("permissions/mode", "0770".into()));
        p.push(("stripePattern/chunkSize", "1m".into()));
        let volume = ctl
            .create_volume(&req("pvc-1", &p, GIB as i64))
            .await
            .unwrap();
        let id = "beegfs://10.0.0.5/k8s/all/pvc-1";
        assert_eq!(volume.id.as_str(), id, "{version}");
        assert_eq!(volume.capacity_bytes, GIB);
        assert_eq!(volume.context["quota"], "enabled");
        let gid: u32 = volume.context["quotaGid"].parse().unwrap();
        assert!((5000..=5100).contains(&gid));
        let root = world.fake.root(HOST);
        let dir = root.join("k8s/all/pvc-1");
        let meta = std::fs::metadata(&dir).unwrap();
        assert_eq!(meta.gid(), gid);
        assert_eq!(
            meta.permissions().mode() & 0o7777,
            0o2770,
            "setgid added to the requested mode"
        );
        assert_eq!(world.fake.limits(HOST, gid), Some((Some(GIB), Some(1000))));
        assert!(root.join("k8s/all/.csi/volumes/pvc-1/nodes").is_dir());
        let pattern_cmd = world
            .fake
            .command_lines()
            .into_iter()
            .find(|l| l.contains("chunk"))
            .unwrap();
        let chunk = match version {
            BeegfsVersion::V7 => "--chunksize=1m",
            BeegfsVersion::V8 => "--chunk-size=1048576",
        };
        assert!(pattern_cmd.contains(chunk), "{pattern_cmd}");

        // Idempotent, and a different request under the same name is refused.
        assert_eq!(
            ctl.create_volume(&req("pvc-1", &p, GIB as i64))
                .await
                .unwrap(),
            volume
        );
        let mut other = p.clone();
        other.push(("stripePattern/numTargets", "2".into()));
        let err = ctl
            .create_volume(&req("pvc-1", &other, GIB as i64))
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::AlreadyExists);

        // Node: stage, publish source, stats, unstage.
        let staging = world
            .dir
            .path()
            .join("n1/kubelet/plugins/kubernetes.io/csi/pv/pvc-1/globalmount");
        node.stage_volume(&stage_request(id, &staging, &[]))
            .await
            .unwrap();
        node.stage_volume(&stage_request(id, &staging, &[]))
            .await
            .unwrap();
        let target = world
            .dir
            .path()
            .join("n1/kubelet/pods/p1/volumes/pvc-1/mount");
        let source = node
            .publish_source(&publish_request(id, &staging, &target))
            .await
            .unwrap();
        assert_eq!(source.staged, staging.join("mount"));
        let source = source.dir;
        assert_eq!(source, staging.join("mount/k8s/all/pvc-1"));
        assert!(source.is_dir());
        std::fs::write(dir.join("data"), vec![7u8; 4096]).unwrap();
        std::os::unix::fs::lchown(dir.join("data"), None, Some(gid)).unwrap();
        let stats = node.volume_stats(&vid(id), &source).await.unwrap();
        assert_eq!((stats.bytes_total, stats.bytes_used), (GIB, 4096));
        assert_eq!(stats.bytes_available, GIB - 4096);
        assert_eq!(
            (stats.inodes_used, stats.inodes_total),
            (Some(1), Some(1000))
        );

        std::fs::create_dir_all(&target).unwrap();
        world.mounts.bind(&source, &target).unwrap();
        let err = node.unstage_volume(&vid(id), &staging).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::FailedPrecondition);
        assert!(err.to_string().contains("still bind-mounted"), "{err}");
        world
            .mounts
            .table
            .lock()
            .unwrap()
            .retain(|e| e.mount_point != target);
        // An unstage at a staging path the volume is not staged at leaves its stage alone.
        let elsewhere = staging.with_file_name("elsewhere");
        node.unstage_volume(&vid(id), &elsewhere).await.unwrap();
        node.unstage_volume(&vid(id), &staging).await.unwrap();
        assert!(!staging.join("mount").exists());
        assert!(
            !world
                .state("n1")
                .join("beegfs/node/volumes")
                .read_dir()
                .unwrap()
                .any(|_| true),
            "client files removed"
        );
        node.unstage_volume(&vid(id), &staging).await.unwrap();

        // Expand raises the limit; delete removes directory, quota and record.
        assert_eq!(
            ctl.expand_volume(&vid(id), 3 * GIB, &Secrets::default())
                .await
                .unwrap(),
            3 * GIB
        );
        assert_eq!(
            world.fake.limits(HOST, gid),
            Some((Some(3 * GIB), Some(3000)))
        );
        assert_eq!(
            ctl.get_volume(&vid(id))
                .await
                .unwrap()
                .volume
                .capacity_bytes,
            3 * GIB
        );
        ctl.delete_volume(&vid(id), &Secrets::default())
            .await
            .unwrap();
        assert!(!dir.exists());
        assert!(!root.join("k8s/all/.csi/volumes/pvc-1").exists());
        assert_eq!(world.fake.limits(HOST, gid), None);
        ctl.delete_volume(&vid(id), &Secrets::default())
            .await
            .unwrap();
        assert_eq!(
            ctl.get_volume(&vid(id)).await.unwrap_err().code(),
            ErrorCode::NotFound
        );
    }
}

#[tokio::test]
async fn the_planned_id_is_the_id_the_volume_gets() {
    let (_world, ctl) = v7_controller(BeegfsSettings::default());
    let request = req("pvc-plan", &params("/k8s/all"), 0);
    let planned = ctl.planned_volume_id(&request).expect("planned");
    assert_eq!(ctl.create_volume(&request).await.unwrap().id, planned);
    // Without a base path nothing is planned, and the create says why.
    let request = req("pvc-plan", &[("sysMgmtdHost", HOST.to_string())], 0);
    assert_eq!(ctl.planned_volume_id(&request), None);
    assert!(ctl.create_volume(&request).await.is_err());
}

#[tokio::test]
async fn without_quotas_the_context_says_so_and_nothing_is_limited() {
    let (world, ctl) = v7_controller(BeegfsSettings::default());
    let mut p = params("/scratch");
    p.push(("permissions/uid", "1000".into()));
    p.push(("permissions/gid", "1001".into()));
    p.push(("permissions/mode", "1777".into()));
    let v = ctl
        .create_volume(&req("v1", &p, 5 * GIB as i64))
        .await
        .unwrap();
    assert_eq!(v.context["quota"], "disabled");
    assert!(!v.context.contains_key("quotaGid"));
    assert_eq!(v.capacity_bytes, 5 * GIB);
    let meta = std::fs::metadata(world.fake.root(HOST).join("scratch/v1")).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.permissions().mode() & 0o7777),
        (1000, 1001, 0o1777)
    );
    assert!(
        !world
            .fake
            .command_lines()
            .iter()
            .any(|l| l.contains("quota")),
        "no quota command without quotas"
    );
    assert_eq!(
        ctl.expand_volume(&v.id, 6 * GIB, &Secrets::default())
            .await
            .unwrap(),
        6 * GIB
    );
    assert!(
        !world
            .fake
            .command_lines()
            .iter()
            .any(|l| l.contains("quota"))
    );
}

#[tokio::test]
async fn parameter_errors_are_invalid_arguments() {
    let (world, ctl) = v7_controller(quota_settings(10, 20));
    type Case = (Vec<(&'static str, String)>, &'static str, &'static str);
    let cases: Vec<Case> = vec![
        (vec![("sysMgmtdHost", HOST.into())], "pvc", "volDirBasePath"),
        (
            [params("/k"), vec![("stripePattern/colour", "red".into())]].concat(),
            "pvc",
            "stripePattern/colour",
        ),
        (
            [params("/k"), vec![("permissions/gid", "5".into())]].concat(),
            "pvc",
            "permissions/gid",
        ),
        (params("/k"), "a/b", "name"),
        (params("/k"), ".hidden", "name"),
        (params(&"x".repeat(120)), "pvc", "name"),
    ];
    for (p, name, key) in cases {
        let err = ctl.create_volume(&req(name, &p, 0)).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidArgument, "{key}: {err}");
        assert!(err.to_string().contains(key), "{key}: {err}");
    }
    assert!(
        world
            .fake
            .command_lines()
            .iter()
            .all(|l| !l.contains("createdir")),
        "nothing was created"
    );
}

#[tokio::test]
async fn static_volumes_are_never_deleted() {
    let world = World::new();
    world.add_fs("ctl", HOST, BeegfsVersion::V8, None);
    let ctl = controller(&world, BeegfsSettings::default(), NO_AUTH, None);
    let root = world.fake.root(HOST);
    std::fs::create_dir_all(root.join("static/data")).unwrap();
    std::fs::write(root.join("static/data/precious"), b"keep me").unwrap();
    for id in ["beegfs://10.0.0.5/static/data", "beegfs://10.0.0.5/"] {
        let err = ctl
            .delete_volume(&vid(id), &Secrets::default())
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::FailedPrecondition, "{id}");
        assert!(err.to_string().contains("left in place"), "{err}");
    }
    assert_eq!(
        std::fs::read(root.join("static/data/precious")).unwrap(),
        b"keep me"
    );
    let info = ctl
        .get_volume(&vid("beegfs://10.0.0.5/static/data"))
        .await
        .unwrap();
    assert_eq!(info.volume.capacity_bytes, 0);
    let err = ctl
        .expand_volume(
            &vid("beegfs://10.0.0.5/static/data"),
            GIB,
            &Secrets::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::FailedPrecondition);
    // A static volume that does not exist is simply gone.
    ctl.delete_volume(&vid("beegfs://10.0.0.5/static/none"), &Secrets::default())
        .await
        .unwrap();
    // A record of another id at the same place does not make a volume dynamic.
    assert!(ctl.list_volumes().await.unwrap().is_empty());
}

#[tokio::test]
async fn delete_waits_for_nodes_without_holding_the_call() {
    let settings = BeegfsSettings {
        delete_wait_seconds: 1,
        node_unstage_timeout_seconds: 60,
        ..BeegfsSettings::default()
    };
    let (world, ctl) = v7_controller(settings);
    let v = ctl
        .create_volume(&req("pvc-w", &params("/k8s"), 0))
        .await
        .unwrap();
    let root = world.fake.root(HOST);
    let node_file = root.join("k8s/.csi/volumes/pvc-w/nodes/node-a");
    std::fs::write(&node_file, b"").unwrap();
    let started = Instant::now();
    let err = ctl
        .delete_volume(&v.id, &Secrets::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Unavailable);
    assert!(err.to_string().contains("node-a"), "{err}");
    assert!(
        started.elapsed() >= Duration::from_millis(900)
            && started.elapsed() < Duration::from_secs(5)
    );
    assert!(
        root.join("k8s/pvc-w").is_dir(),
        "nothing deleted while a node has it staged"
    );
    // Until its data is removed the volume stays usable.
    assert_eq!(
        ctl.expand_volume(&v.id, 2 * GIB, &Secrets::default())
            .await
            .unwrap(),
        2 * GIB
    );
    // The node unstages while the next call waits: the call then deletes.
    let file = node_file.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        std::fs::remove_file(file).unwrap();
    });
    ctl.delete_volume(&v.id, &Secrets::default()).await.unwrap();
    assert!(!root.join("k8s/pvc-w").exists());
}

#[tokio::test]
async fn delete_goes_ahead_once_the_unstage_timeout_has_passed() {
    let settings = BeegfsSettings {
        delete_wait_seconds: 3,
        node_unstage_timeout_seconds: 1,
        ..BeegfsSettings::default()
    };
    let (world, ctl) = v7_controller(settings);
    let v = ctl
        .create_volume(&req("pvc-t", &params("/k8s"), 0))
        .await
        .unwrap();
    let root = world.fake.root(HOST);
    std::fs::write(root.join("k8s/.csi/volumes/pvc-t/nodes/gone-node"), b"").unwrap();
    ctl.delete_volume(&v.id, &Secrets::default()).await.unwrap();
    assert!(!root.join("k8s/pvc-t").exists());
    assert!(!root.join("k8s/.csi/volumes/pvc-t").exists());
}

#[tokio::test]
async fn concurrent_creates_never_share_a_group_id() {
    let world = World::new();
    world.add_fs("ctl", HOST, BeegfsVersion::V7, None);
    let ctl = Arc::new(controller(
        &world,
        quota_settings(7000, 7031),
        NO_AUTH,
        None,
    ));
    // A group in use on the filesystem (by someone else) is never handed out.
    ctl.create_volume(&req("warmup", &params("/k8s"), 0))
        .await
        .unwrap();
    world
        .fake
        .filesystems
        .lock()
        .unwrap()
        .get_mut(HOST)
        .unwrap()
        .limits
        .insert(7001, (Some(1), None));
    let mut tasks = Vec::new();
    for i in 0..12 {
        let ctl = ctl.clone();
        tasks.push(tokio::spawn(async move {
            ctl.create_volume(&req(&format!("pvc-{i}"), &params("/k8s"), GIB as i64))
                .await
        }));
    }
    let mut gids = HashSet::new();
    for t in tasks {
        let v = t.await.unwrap().unwrap();
        let gid: u32 = v.context["quotaGid"].parse().unwrap();
        assert!((7000..=7031).contains(&gid) && gid != 7001);
        assert!(gids.insert(gid), "gid {gid} handed out twice");
    }
    let warm: u32 = ctl
        .get_volume(&vid("beegfs://10.0.0.5/k8s/warmup"))
        .await
        .unwrap()
        .volume
        .context["quotaGid"]
        .parse()
        .unwrap();
    assert!(!gids.contains(&warm));
    assert_eq!(ctl.list_volumes().await.unwrap().len(), 13);
}

#[tokio::test]
async fn the_version_is_detected_once_for_many_operations() {
    let (world, ctl) = v7_controller(quota_settings(100, 200));
    for i in 0..5 {
        let v = ctl
            .create_volume(&req(&format!("v{i}"), &params("/k"), GIB as i64))
            .await
            .unwrap();
        ctl.expand_volume(&v.id, 2 * GIB, &Secrets::default())
            .await
            .unwrap();
        ctl.get_volume(&v.id).await.unwrap();
        ctl.delete_volume(&v.id, &Secrets::default()).await.unwrap();
    }
    let lines = world.fake.command_lines();
    let probes = lines
        .iter()
        .filter(|l| l.contains("--listnodes") || l.ends_with("node list"))
        .count();
    assert_eq!(
        probes,
        2,
        "one probe of each tool for {} commands",
        lines.len()
    );
    assert!(lines.len() > 20, "{lines:?}");
}

#[tokio::test]
async fn the_conn_auth_secret_never_reaches_a_command_line() {
    const SECRET: &str = "Sup3r-S3cret-connAuth";
    for version in [BeegfsVersion::V7, BeegfsVersion::V8] {
        let world = World::new();
        world.add_fs("ctl", HOST, version, Some(SECRET.as_bytes()));
        let auth = format!("- sysMgmtdHost: {HOST}\n  connAuth: {SECRET}\n");
        let ctl = controller(&world, quota_settings(100, 200), "", Some(&auth));
        let node = world.backend("n1", Role::Node, quota_settings(100, 200), "", Some(&auth));
        let v = ctl
            .create_volume(&req("pvc-s", &params("/k"), GIB as i64))
            .await
            .unwrap();
        ctl.expand_volume(&v.id, 2 * GIB, &Secrets::default())
            .await
            .unwrap();
        let staging = world.dir.path().join("n1/staging/pvc-s");
        node.stage_volume(&stage_request(v.id.as_str(), &staging, &[]))
            .await
            .unwrap();
        let source = node
            .publish_source(&publish_request(v.id.as_str(), &staging, Path::new("/t")))
            .await
            .unwrap()
            .dir;
        node.volume_stats(&v.id, &source).await.unwrap();
        node.unstage_volume(&v.id, &staging).await.unwrap();
        ctl.delete_volume(&v.id, &Secrets::default()).await.unwrap();
        let commands = world.fake.commands.lock().unwrap().clone();
        assert!(commands.len() >= 8, "{} commands", commands.len());
        for cmd in &commands {
            for arg in cmd.args.iter().chain(cmd.env.iter().map(|(_, v)| v)) {
                assert!(
                    !arg.to_string_lossy().contains(SECRET),
                    "{version}: secret in {}",
                    cmd.display()
                );
            }
        }
        let auth_files: Vec<PathBuf> = walk(&world.state("ctl"))
            .into_iter()
            .filter(|p| p.ends_with("connAuthFile"))
            .collect();
        assert!(!auth_files.is_empty());
        for f in auth_files {
            assert_eq!(
                std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
                0o400
            );
            assert_eq!(std::fs::read(&f).unwrap(), SECRET.as_bytes());
        }
        for conf in walk(world.dir.path())
            .into_iter()
            .filter(|p| p.ends_with("beegfs-client.conf"))
        {
            let text = std::fs::read_to_string(&conf).unwrap();
            assert!(!text.contains(SECRET), "{}", conf.display());
            assert!(text.contains("connAuthFile = /"), "{}", conf.display());
        }
        if version == BeegfsVersion::V8 {
            assert!(
                world
                    .fake
                    .command_lines()
                    .iter()
                    .any(|l| l.contains("--auth-file="))
            );
        }
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.filter_map(|e| e.ok()) {
            let p = e.path();
            if std::fs::symlink_metadata(&p)
                .map(|m| m.is_dir())
                .unwrap_or(false)
            {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn stage_keeps_nosuid_and_the_users_options() {
    let (world, ctl) = v7_controller(BeegfsSettings::default());
    let node = world.backend("n1", Role::Node, BeegfsSettings::default(), NO_AUTH, None);
    let v = ctl
        .create_volume(&req("pvc-o", &params("/k"), 0))
        .await
        .unwrap();
    let staging = world.dir.path().join("n1/staging/pvc-o");
    node.stage_volume(&stage_request(
        v.id.as_str(),
        &staging,
        &["suid", "noatime"],
    ))
    .await
    .unwrap();
    let (target, options) = world
        .mounts
        .mounted
        .lock()
        .unwrap()
        .last()
        .cloned()
        .unwrap();
    assert_eq!(target, staging.join("mount"));
    assert!(
        options.contains(&"nosuid".to_string()) && options.contains(&"noatime".to_string()),
        "{options:?}"
    );
    assert!(!options.contains(&"suid".to_string()));
    let conf = options
        .iter()
        .find_map(|o| o.strip_prefix("cfgFile="))
        .unwrap();
    assert!(Path::new(conf).starts_with(world.state("n1")), "{conf}");
    let text = std::fs::read_to_string(conf).unwrap();
    assert!(
        text.contains("sysMgmtdHost = 10.0.0.5")
            && text.contains("connDisableAuthentication = true"),
        "{text}"
    );
    assert!(text.contains("connClientPortUDP = "), "{text}");
}

#[tokio::test]
async fn shared_mounts_are_reference_counted() {
    let world = World::new();
    world.add_fs("ctl", HOST, BeegfsVersion::V8, None);
    let settings = BeegfsSettings {
        client_mount_mode: ClientMountMode::Shared,
        ..BeegfsSettings::default()
    };
    let ctl = controller(&world, settings.clone(), NO_AUTH, None);
    let node = world.backend("n1", Role::Node, settings, NO_AUTH, None);
    let a = ctl
        .create_volume(&req("a", &params("/k"), 0))
        .await
        .unwrap();
    let b = ctl
        .create_volume(&req("b", &params("/k"), 0))
        .await
        .unwrap();
    let c = ctl
        .create_volume(&req("c", &params("/k"), 0))
        .await
        .unwrap();
    let controller_mounts = world.mounts.client_mounts();
    let (sa, sb, sc) = (
        world.dir.path().join("n1/staging/a"),
        world.dir.path().join("n1/staging/b"),
        world.dir.path().join("n1/staging/c"),
    );
    node.stage_volume(&stage_request(a.id.as_str(), &sa, &[]))
        .await
        .unwrap();
    node.stage_volume(&stage_request(b.id.as_str(), &sb, &[]))
        .await
        .unwrap();
    assert_eq!(
        world.mounts.client_mounts(),
        controller_mounts + 1,
        "one client mount for two volumes"
    );
    // a's staging path given for c: refused, in either mode, and a stays staged there.
    for options in [&[][..], &["noatime"]] {
        let err = node
            .stage_volume(&stage_request(c.id.as_str(), &sa, options))
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::FailedPrecondition, "{err}");
        assert!(err.to_string().contains(a.id.as_str()), "{err}");
    }
    assert_eq!(
        node.publish_source(&publish_request(a.id.as_str(), &sa, Path::new("/t")))
            .await
            .unwrap()
            .dir,
        sa.join("mount")
    );
    // A volume with its own mount options gets its own client.
    node.stage_volume(&stage_request(c.id.as_str(), &sc, &["noatime"]))
        .await
        .unwrap();
    assert_eq!(world.mounts.client_mounts(), controller_mounts + 2);
    let src = node
        .publish_source(&publish_request(a.id.as_str(), &sa, Path::new("/t")))
        .await
        .unwrap()
        .dir;
    assert_eq!(src, sa.join("mount"));
    let target = world.dir.path().join("pods/x");
    std::fs::create_dir_all(&target).unwrap();
    world.mounts.bind(&src, &target).unwrap();
    assert_eq!(
        node.unstage_volume(&a.id, &sa).await.unwrap_err().code(),
        ErrorCode::FailedPrecondition
    );
    // b is not bind-mounted anywhere: a's publication does not block it.
    node.unstage_volume(&b.id, &sb).await.unwrap();
    assert_eq!(
        world.mounts.client_mounts(),
        controller_mounts + 2,
        "a still uses the shared mount"
    );
    world
        .mounts
        .table
        .lock()
        .unwrap()
        .retain(|e| e.mount_point != target);
    node.unstage_volume(&a.id, &sa).await.unwrap();
    node.unstage_volume(&c.id, &sc).await.unwrap();
    assert_eq!(
        world.mounts.client_mounts(),
        controller_mounts,
        "the last unstage unmounts the shared client"
    );
    assert!(
        std::fs::read_dir(world.state("n1").join("beegfs/node/shared"))
            .unwrap()
            .next()
            .is_none()
    );
}

#[tokio::test]
async fn stage_of_a_missing_directory_is_not_found_and_leaves_nothing() {
    let world = World::new();
    world.add_fs("ctl", HOST, BeegfsVersion::V7, None);
    let node = world.backend("n1", Role::Node, BeegfsSettings::default(), NO_AUTH, None);
    let staging = world.dir.path().join("n1/staging/x");
    let err = node
        .stage_volume(&stage_request("beegfs://10.0.0.5/nope", &staging, &[]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotFound);
    assert!(
        !world
            .mounts
            .table
            .lock()
            .unwrap()
            .iter()
            .any(|e| e.mount_point == staging.join("mount"))
    );
    assert!(!staging.join("mount").exists());
}

#[tokio::test]
async fn a_volume_being_created_or_deleted_is_neither_snapshotted_nor_cloned() {
    let (world, ctl) = v7_controller(quota_settings(300, 400));
    let src = ctl
        .create_volume(&req("src", &params("/k"), GIB as i64))
        .await
        .unwrap();
    let root = world.fake.root(HOST);
    let store = crate::records::volume_store(&root, &VolumePath::clean("base", "/k").unwrap());
    for state in [
        crate::records::VolumeState::Creating,
        crate::records::VolumeState::Deleting,
    ] {
        let mut rec = store.get("src").unwrap().unwrap();
        rec.state = state;
        store.put("src", &rec).unwrap();
        let snap = CreateSnapshotRequest {
            name: "snap-partial".into(),
            source_volume_id: src.id.clone(),
            parameters: Parameters::default(),
            secrets: Secrets::default(),
        };
        let err = ctl.create_snapshot(&snap).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::Unavailable, "{state:?}: {err}");
        let mut clone = req("clone-partial", &params("/k"), GIB as i64);
        clone.content_source = Some(VolumeContentSource::Volume(src.id.to_string()));
        let err = ctl.create_volume(&clone).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::Unavailable, "{state:?}: {err}");
        assert!(!root.join("k/clone-partial/sub").exists());
    }
}

/// A fill that outlasts the caller's wait goes on, and retries wait for it instead of
/// starting it over; a deletion stops it and removes what it made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_fill_outlives_its_call_and_is_never_started_twice() {
    use std::sync::atomic::Ordering;
    let world = World::new();
    world.add_fs("ctl", HOST, BeegfsVersion::V7, None);
    let settings = BeegfsSettings {
        content_wait_seconds: 0,
        ..quota_settings(300, 400)
    };
    let ctl = controller(&world, settings, NO_AUTH, None);
    let src = ctl
        .create_volume(&req("src", &params("/k"), GIB as i64))
        .await
        .unwrap();
    let root = world.fake.root(HOST);
    std::fs::write(root.join("k/src/file"), b"hello").unwrap();
    world.fills.delay_ms.store(3000, Ordering::SeqCst);
    let mut clone = req("clone", &params("/k"), GIB as i64);
    clone.content_source = Some(VolumeContentSource::Volume(src.id.to_string()));
    let err = ctl.create_volume(&clone).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Aborted, "{err}");
    // Once the copy runs, a retry waits for it rather than starting another.
    let started = std::time::Instant::now();
    while world.fills.runs.load(Ordering::SeqCst) == 0 {
        assert!(started.elapsed().as_secs() < 30, "the fill never started");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let err = ctl.create_volume(&clone).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Aborted, "{err}");
    let made = loop {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        match ctl.create_volume(&clone).await {
            Ok(v) => break v,
            Err(e) => assert_eq!(e.code(), ErrorCode::Aborted, "{e}"),
        }
    };
    assert_eq!(world.fills.runs.load(Ordering::SeqCst), 1, "filled once");
    assert_eq!(std::fs::read(root.join("k/clone/file")).unwrap(), b"hello");
    assert_eq!(made.content_source, clone.content_source);

    // Deleted while it fills: the fill stops, and nothing of it stays.
    let mut other = req("other", &params("/k"), GIB as i64);
    other.content_source = clone.content_source.clone();
    let err = ctl.create_volume(&other).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Aborted, "{err}");
    let other_id = vid(&made.id.as_str().replace("/clone", "/other"));
    ctl.delete_volume(&other_id, &Secrets::default())
        .await
        .unwrap();
    assert!(!root.join("k/other").exists());
    assert!(!root.join("k/.pfs-csi/volumes/other.json").exists());
}

/// A BeeGFS 7 controller with `settings` and its volume `src` of `/k`.
async fn v7_with_source(
    settings: BeegfsSettings,
) -> (World, BeegfsBackend, csi_core::domain::Volume) {
    let (world, ctl) = v7_controller(settings);
    let src = ctl
        .create_volume(&req("src", &params("/k"), GIB as i64))
        .await
        .unwrap();
    (world, ctl, src)
}

#[tokio::test]
async fn a_filled_volume_is_private_to_root_until_its_content_is_in() {
    let (world, ctl, src) = v7_with_source(quota_settings(300, 400)).await;
    let root = world.fake.root(HOST);
    std::fs::write(root.join("k/src/file"), b"hello").unwrap();
    let mut p = params("/k");
    p.push(("permissions/uid", "1000".into()));
    p.push(("permissions/mode", "0770".into()));
    let mut clone = req("clone", &p, GIB as i64);
    clone.content_source = Some(VolumeContentSource::Volume(src.id.to_string()));
    let made = ctl.create_volume(&clone).await.unwrap();
    let quota_gid: u32 = made.context["quotaGid"].parse().unwrap();
    // The copy ran in a directory nobody but root could enter...
    let euid = nix::unistd::geteuid().as_raw();
    assert_eq!(
        world.fills.dests.lock().unwrap().clone(),
        vec![(0o700, euid)]
    );
    // ...which then got what the parameters ask for, and the quota group, which new files
    // inherit (setgid).
    let meta = std::fs::metadata(root.join("k/clone")).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.permissions().mode() & 0o7777),
        (1000, quota_gid, 0o2770)
    );
    assert_eq!(std::fs::read(root.join("k/clone/file")).unwrap(), b"hello");
}

#[tokio::test]
async fn a_restore_uses_the_tool_and_checksum_its_snapshot_was_made_with() {
    let (world, ctl, src) = v7_with_source(BeegfsSettings::default()).await;
    let snap_req = CreateSnapshotRequest {
        name: "snap".into(),
        source_volume_id: src.id.clone(),
        parameters: Parameters::default(),
        secrets: Secrets::default(),
    };
    while !ctl.create_snapshot(&snap_req).await.unwrap().ready_to_use {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let made_with = ctl.inner.archive_options();
    // The settings change: dtar, no verification.
    let mut settings = BeegfsSettings::default();
    settings.snapshots.dtar = Some("/opt/dtar".into());
    settings.snapshots.verify = false;
    let ctl = controller(&world, settings, NO_AUTH, None);
    let mut restore = req("restored", &params("/k"), GIB as i64);
    restore.content_source = Some(VolumeContentSource::Snapshot(
        ctl.list_snapshots().await.unwrap()[0].id.to_string(),
    ));
    ctl.create_volume(&restore).await.unwrap();
    assert_eq!(
        world.fills.restore_options.lock().unwrap().clone(),
        vec![made_with]
    );
}

#[tokio::test]
async fn snapshots_restore_and_clone_into_new_volumes() {
    let (world, ctl) = v7_controller(quota_settings(300, 400));
    let src = ctl
        .create_volume(&req("src", &params("/k"), GIB as i64))
        .await
        .unwrap();
    let root = world.fake.root(HOST);
    std::fs::create_dir_all(root.join("k/src/sub")).unwrap();
    std::fs::write(root.join("k/src/sub/file"), b"hello").unwrap();
    // The folder as an earlier version made it.
    std::fs::create_dir(root.join("k/.pfs-csi/snapshots")).unwrap();
    std::fs::set_permissions(
        root.join("k/.pfs-csi/snapshots"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let snap_req = CreateSnapshotRequest {
        name: "snap-1".into(),
        source_volume_id: src.id.clone(),
        parameters: Parameters::default(),
        secrets: Secrets::default(),
    };
    let first = ctl.create_snapshot(&snap_req).await.unwrap();
    assert_eq!(ctl.planned_snapshot_id(&snap_req), Some(first.id.clone()));
    assert_eq!(first.id.as_str(), "beegfs-snap://10.0.0.5/k/snap-1");
    assert!(!first.ready_to_use, "the cut runs in the background");
    // Restoring right away waits for the cut.
    let mut early = req("early", &params("/k"), GIB as i64);
    early.content_source = Some(VolumeContentSource::Snapshot(first.id.to_string()));
    ctl.create_volume(&early).await.unwrap();
    assert_eq!(
        std::fs::read(root.join("k/early/sub/file")).unwrap(),
        b"hello"
    );
    let ready = loop {
        let s = ctl.create_snapshot(&snap_req).await.unwrap();
        if s.ready_to_use {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(ready.size_bytes > 0);
    assert_eq!(ready.creation_time, first.creation_time);
    assert!(root.join("k/.pfs-csi/snapshots/snap-1.tar").is_file());
    // The archives hold the volumes' data: their folder is root's alone.
    let folder = std::fs::metadata(root.join("k/.pfs-csi/snapshots")).unwrap();
    assert_eq!(folder.permissions().mode() & 0o7777, 0o700);
    assert_eq!(folder.uid(), nix::unistd::geteuid().as_raw());
    assert_eq!(ctl.list_snapshots().await.unwrap(), vec![ready.clone()]);
    let mut other = snap_req.clone();
    other.source_volume_id = vid("beegfs://10.0.0.5/k/other");
    assert_eq!(
        ctl.create_snapshot(&other).await.unwrap_err().code(),
        ErrorCode::NotFound
    );

    let mut restore = req("restored", &params("/k"), GIB as i64);
    restore.content_source = Some(VolumeContentSource::Snapshot(ready.id.to_string()));
    let restored = ctl.create_volume(&restore).await.unwrap();
    let gid: u32 = restored.context["quotaGid"].parse().unwrap();
    assert_eq!(
        std::fs::read(root.join("k/restored/sub/file")).unwrap(),
        b"hello"
    );
    assert_eq!(
        std::fs::metadata(root.join("k/restored/sub/file"))
            .unwrap()
            .gid(),
        gid,
        "restored data counts against the new volume"
    );
    assert_eq!(restored.content_source, restore.content_source);

    let mut clone = req("clone", &params("/k"), GIB as i64);
    clone.content_source = Some(VolumeContentSource::Volume(src.id.to_string()));
    ctl.create_volume(&clone).await.unwrap();
    assert_eq!(
        std::fs::read(root.join("k/clone/sub/file")).unwrap(),
        b"hello"
    );

    let mut missing = req("m", &params("/k"), 0);
    missing.content_source = Some(VolumeContentSource::Snapshot(
        "beegfs-snap://10.0.0.5/k/none".into(),
    ));
    assert_eq!(
        ctl.create_volume(&missing).await.unwrap_err().code(),
        ErrorCode::NotFound
    );
    assert!(!root.join("k/m").exists());

    let sid = SnapshotId::parse(ready.id.as_str()).unwrap();
    ctl.delete_snapshot(&sid, &Secrets::default())
        .await
        .unwrap();
    ctl.delete_snapshot(&sid, &Secrets::default())
        .await
        .unwrap();
    assert!(!root.join("k/.pfs-csi/snapshots/snap-1.tar").exists());
    assert!(ctl.list_snapshots().await.unwrap().is_empty());
}

#[tokio::test]
async fn capacity_is_reported_and_ids_are_claimed() {
    let (world, ctl) = v7_controller(quota_settings(10, 20));
    let p = Parameters::new(
        params("/k")
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    );
    let free = ctl.available_capacity(&p, &Topology::new()).await.unwrap();
    assert!(free > 0);
    let space = crate::fs_tree::fs_space(&world.fake.root(HOST)).unwrap();
    ctl.create_volume(&req("big", &params("/k"), (space.total / 2) as i64))
        .await
        .unwrap();
    let after = ctl.available_capacity(&p, &Topology::new()).await.unwrap();
    assert!(
        after <= space.total - space.total / 2,
        "promised capacity is not offered again"
    );
    // Other processes write to the same disk meanwhile: compare with a margin far below the
    // half of the disk promised to the volume.
    let close = |a: u64, b: u64| a.abs_diff(b) < 256 << 20;
    let anywhere = ctl
        .available_capacity(&Parameters::default(), &Topology::new())
        .await
        .unwrap();
    assert!(
        close(anywhere, after),
        "without parameters: the largest of the known filesystems ({anywhere} vs {after})"
    );
    let host_only = Parameters::new([("sysMgmtdHost".to_string(), HOST.to_string())].into());
    let by_host = ctl
        .available_capacity(&host_only, &Topology::new())
        .await
        .unwrap();
    assert!(close(by_host, after), "{by_host} vs {after}");
    let unknown = Parameters::new([("colour".to_string(), "red".to_string())].into());
    assert_eq!(
        ctl.available_capacity(&unknown, &Topology::new())
            .await
            .unwrap_err()
            .code(),
        ErrorCode::InvalidArgument
    );
    assert!(ctl.accepts_parameters(&p));
    assert!(!ctl.accepts_parameters(&Parameters::new(
        [("projectId".to_string(), "1".to_string())].into()
    )));
    assert!(ctl.claim_volume_id(&vid("beegfs://h/a")).unwrap().is_ok());
    assert!(
        ctl.claim_volume_id(&vid("beegfs://h/a/../b"))
            .unwrap()
            .is_err()
    );
    assert!(ctl.claim_volume_id(&vid("10.0.0.1@tcp:/fs/x")).is_none());
    assert!(
        ctl.claim_snapshot_id(&SnapshotId::parse("beegfs-snap://h/b/s").unwrap())
            .unwrap()
            .is_ok()
    );
    assert!(
        ctl.claim_snapshot_id(&SnapshotId::parse("beegfs://h/b/s").unwrap())
            .is_none()
    );
}

#[tokio::test]
async fn an_unreachable_filesystem_is_unavailable() {
    let world = World::new();
    let ctl = controller(&world, BeegfsSettings::default(), NO_AUTH, None);
    let err = ctl
        .create_volume(&req("v", &params("/k"), 0))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Unavailable, "{err}");
}

#[tokio::test]
async fn deletions_wait_for_a_running_cut_and_say_so_when_it_outlasts_the_wait() {
    for wait in [0, 5] {
        let world = World::new();
        world.add_fs("ctl", HOST, BeegfsVersion::V8, None);
        let settings = BeegfsSettings {
            content_wait_seconds: wait,
            ..BeegfsSettings::default()
        };
        let ctl = controller(&world, settings, NO_AUTH, None);
        let src = ctl
            .create_volume(&req("src", &params("/k"), 0))
            .await
            .unwrap();
        let snap = ctl
            .create_snapshot(&CreateSnapshotRequest {
                name: "s".into(),
                source_volume_id: src.id.clone(),
                parameters: Parameters::default(),
                secrets: Secrets::default(),
            })
            .await
            .unwrap();
        let sid = SnapshotId::parse(snap.id.as_str()).unwrap();
        let volume = ctl.delete_volume(&src.id, &Secrets::default()).await;
        let snapshot = ctl.delete_snapshot(&sid, &Secrets::default()).await;
        if wait == 0 {
            assert_eq!(volume.unwrap_err().code(), ErrorCode::Aborted);
            assert_eq!(snapshot.unwrap_err().code(), ErrorCode::Aborted);
        } else {
            volume.unwrap();
            snapshot.unwrap();
            assert!(ctl.list_snapshots().await.unwrap().is_empty());
        }
    }
}

#[tokio::test]
async fn the_volume_alone_runs_no_tool_and_its_condition_reads_the_quota() {
    let world = World::new();
    world.add_fs("ctl", HOST, BeegfsVersion::V8, None);
    let ctl = controller(&world, quota_settings(100, 200), "", None);
    let v = ctl
        .create_volume(&req("pvc-q", &params("/k"), GIB as i64))
        .await
        .unwrap();
    let ran = || world.fake.commands.lock().unwrap().len();
    let before = ran();
    // What expansion and ValidateVolumeCapabilities ask for.
    assert_eq!(ctl.volume(&v.id).await.unwrap(), v);
    assert_eq!(ran(), before);
    // ControllerGetVolume's condition checks the quota: one tool run.
    let info = ctl.get_volume(&v.id).await.unwrap();
    assert!(!info.condition.abnormal, "{}", info.condition.message);
    assert_eq!(info.volume, v);
    assert_eq!(ran(), before + 1);
    let missing = VolumeId::parse(&v.id.as_str().replace("pvc-q", "pvc-none")).unwrap();
    assert_eq!(
        ctl.volume(&missing).await.unwrap_err().code(),
        ErrorCode::NotFound
    );
}

#[tokio::test]
async fn a_file_where_the_volume_would_go_is_never_removed() {
    for version in [BeegfsVersion::V7, BeegfsVersion::V8] {
        let world = World::new();
        world.add_fs("ctl", HOST, version, None);
        let ctl = controller(&world, quota_settings(700, 800), NO_AUTH, None);
        let root = world.fake.root(HOST);
        std::fs::create_dir_all(root.join("k")).unwrap();
        let file = root.join("k/x");
        std::fs::write(&file, b"a user's data").unwrap();
        let inode = std::fs::metadata(&file).unwrap().ino();
        let err = ctl
            .create_volume(&req("x", &params("/k"), GIB as i64))
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::AlreadyExists, "{version}: {err}");
        assert_eq!(std::fs::read(&file).unwrap(), b"a user's data");
        assert_eq!(std::fs::metadata(&file).unwrap().ino(), inode);
        assert!(!root.join("k/.pfs-csi/volumes/x.json").exists());

        // A creation cut short (its record still says Creating) whose directory was
        // replaced by a file since: finishing it fails, and the file stays.
        ctl.create_volume(&req("y", &params("/k"), GIB as i64))
            .await
            .unwrap();
        let base = VolumePath::clean("base", "/k").unwrap();
        let store = crate::records::volume_store(&root, &base);
        let mut rec = store.get("y").unwrap().unwrap();
        rec.state = crate::records::VolumeState::Creating;
        store.put("y", &rec).unwrap();
        std::fs::remove_dir(root.join("k/y")).unwrap();
        std::fs::write(root.join("k/y"), b"other data").unwrap();
        let inode = std::fs::metadata(root.join("k/y")).unwrap().ino();
        ctl.create_volume(&req("y", &params("/k"), GIB as i64))
            .await
            .unwrap_err();
        assert_eq!(std::fs::read(root.join("k/y")).unwrap(), b"other data");
        assert_eq!(std::fs::metadata(root.join("k/y")).unwrap().ino(), inode);
    }
}

/// The record the driver wrote for a volume it created at `/made/<name>`, to copy from.
async fn genuine_record(ctl: &BeegfsBackend, root: &Path, name: &str) -> VolumeRecord {
    ctl.create_volume(&req(name, &params("/made"), GIB as i64))
        .await
        .unwrap();
    let base = VolumePath::clean("base", "/made").unwrap();
    crate::records::volume_store(root, &base)
        .get(name)
        .unwrap()
        .unwrap()
}

/// Everything below `dir`, for before/after comparisons.
fn tree(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out: Vec<_> = walk(dir)
        .into_iter()
        .map(|p| {
            let ino = std::fs::symlink_metadata(&p).unwrap().ino();
            (p, ino)
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn records_the_driver_did_not_write_are_never_believed() {
    let world = World::new();
    world.add_fs("ctl", HOST, BeegfsVersion::V8, None);
    let ctl = controller(&world, BeegfsSettings::default(), NO_AUTH, None);
    let root = world.fake.root(HOST);
    let template = genuine_record(&ctl, &root, "pvc-0").await;
    std::fs::create_dir_all(root.join("static/data")).unwrap();
    std::fs::write(root.join("static/data/precious"), b"keep me").unwrap();
    let id = vid("beegfs://10.0.0.5/static/data");
    // Already being deleted: no record is written before the removal.
    let forged = VolumeRecord {
        volume_id: id.to_string(),
        name: "../../..".into(),
        base: "/static".into(),
        state: crate::records::VolumeState::Deleting,
        delete_requested_at: Some(1),
        ..template.clone()
    };

    // A user who owns the static volume's parent plants a record in a folder of their own,
    // and the folders its name climbs out of.
    let meta = root.join("static/.pfs-csi");
    std::fs::create_dir_all(meta.join("volumes")).unwrap();
    std::fs::create_dir_all(root.join("static/.csi/volumes")).unwrap();
    std::fs::write(
        meta.join("volumes/data.json"),
        serde_json::to_vec(&forged).unwrap(),
    )
    .unwrap();
    for path in [
        &meta,
        &meta.join("volumes"),
        &meta.join("volumes/data.json"),
    ] {
        std::os::unix::fs::chown(path, Some(1000), Some(1000)).unwrap();
    }
    let before = tree(&root);
    let err = ctl
        .delete_volume(&id, &Secrets::default())
        .await
        .unwrap_err();
    assert!(root.join("static/data/precious").exists(), "{err}");
    assert_eq!(tree(&root), before, "nothing removed: {err}");
    assert_eq!(err.code(), ErrorCode::FailedPrecondition, "{err}");
    assert!(err.to_string().contains("uid 1000"), "{err}");

    // The same record in a folder of the driver's own, but naming another volume.
    std::fs::remove_dir_all(&meta).unwrap();
    let store = crate::records::volume_store(&root, &VolumePath::clean("b", "/static").unwrap());
    for name in ["../../..", "other", "data/../.."] {
        store
            .put(
                "data",
                &VolumeRecord {
                    name: name.into(),
                    ..forged.clone()
                },
            )
            .unwrap();
        let before = tree(&root);
        let errors = [
            ctl.delete_volume(&id, &Secrets::default())
                .await
                .unwrap_err(),
            ctl.expand_volume(&id, GIB, &Secrets::default())
                .await
                .unwrap_err(),
        ];
        assert_eq!(tree(&root), before, "{name}: nothing removed");
        for err in errors {
            assert_eq!(err.code(), ErrorCode::FailedPrecondition, "{name}: {err}");
        }
    }
    assert_eq!(
        std::fs::read(root.join("static/data/precious")).unwrap(),
        b"keep me"
    );
}

#[tokio::test]
async fn metadata_folders_others_made_or_can_write_are_refused() {
    for (what, mode, owner, folder) in [
        ("group-writable", 0o775, None, "k/.pfs-csi"),
        ("world-writable", 0o777, None, "k/.pfs-csi/volumes"),
        ("a user's", 0o700, Some(4321), "k/.pfs-csi"),
        ("a user's", 0o755, Some(4321), "k/.pfs-csi/volumes"),
        ("a user's", 0o755, Some(4321), ".pfs-csi"),
    ] {
        let (world, ctl) = v7_controller(quota_settings(10, 20));
        let root = world.fake.root(HOST);
        let planted = root.join(folder);
        std::fs::create_dir_all(&planted).unwrap();
        std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(mode)).unwrap();
        std::os::unix::fs::chown(&planted, owner, None).unwrap();
        let err = ctl
            .create_volume(&req("x", &params("/k"), GIB as i64))
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            ErrorCode::FailedPrecondition,
            "{what} {folder}: {err}"
        );
        assert!(err.to_string().contains(".pfs-csi"), "{err}");
        assert!(!root.join("k/x").exists(), "{what} {folder}");
        let meta = std::fs::symlink_metadata(&planted).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, mode, "left as it was");
        assert!(
            std::fs::read_dir(&planted).unwrap().all(|e| e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with("volumes")),
            "nothing written into {folder}"
        );
    }
}

#[tokio::test]
async fn the_drivers_metadata_folders_are_private() {
    let (world, ctl) = v7_controller(BeegfsSettings::default());
    let root = world.fake.root(HOST);
    ctl.create_volume(&req("x", &params("/k"), GIB as i64))
        .await
        .unwrap();
    for (path, mode) in [
        (".pfs-csi", 0o700),
        (".pfs-csi/bases", 0o700),
        ("k/.pfs-csi", 0o700),
        ("k/.pfs-csi/volumes", 0o700),
        ("k/.pfs-csi/volumes/x.json", 0o600),
    ] {
        let meta = std::fs::symlink_metadata(root.join(path)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, mode, "{path}");
        assert_eq!(meta.uid(), nix::unistd::geteuid().as_raw(), "{path}");
    }
}

#[tokio::test]
async fn a_delete_given_up_during_its_removal_is_finished_and_a_retry_succeeds() {
    let (world, ctl) = v7_controller(quota_settings(600, 650));
    let v = ctl
        .create_volume(&req("pvc-slow", &params("/k"), GIB as i64))
        .await
        .unwrap();
    let gid: u32 = v.context["quotaGid"].parse().unwrap();
    let root = world.fake.root(HOST);
    std::fs::write(root.join("k/pvc-slow/data"), b"x").unwrap();
    // The removal is held where it starts, as a slow filesystem would hold it.
    let gate = ctl.inner.removal_gate.lock().await;
    let call = {
        let (ctl, id) = (ctl.clone(), v.id.clone());
        tokio::spawn(async move { ctl.delete_volume(&id, &Secrets::default()).await })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ctl.inner.deleting.lock().unwrap().contains(v.id.as_str()) {
        assert!(Instant::now() < deadline, "the removal never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The client gives up: the server drops the call's future.
    call.abort();
    assert!(call.await.unwrap_err().is_cancelled());
    let busy = ctl
        .delete_volume(&v.id, &Secrets::default())
        .await
        .unwrap_err();
    assert_eq!(busy.code(), ErrorCode::Aborted, "{busy}");
    drop(gate);
    // Retries answer Aborted while the removal runs, then succeed.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match ctl.delete_volume(&v.id, &Secrets::default()).await {
            Ok(()) => break,
            Err(e) if e.code() == ErrorCode::Aborted && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("the retry never succeeded: {e}"),
        }
    }
    assert!(!root.join("k/pvc-slow").exists());
    assert!(!root.join("k/.pfs-csi/volumes/pvc-slow.json").exists());
    assert_eq!(world.fake.limits(HOST, gid), None, "the quota was cleared");
}

#[tokio::test]
async fn restores_and_clones_into_a_smaller_limited_volume_are_out_of_range() {
    for quotas in [true, false] {
        let world = World::new();
        world.add_fs("ctl", HOST, BeegfsVersion::V8, None);
        let settings = if quotas {
            quota_settings(900, 950)
        } else {
            BeegfsSettings::default()
        };
        let ctl = controller(&world, settings, NO_AUTH, None);
        let root = world.fake.root(HOST);
        let src = ctl
            .create_volume(&req("src", &params("/k"), 2 * GIB as i64))
            .await
            .unwrap();
        std::fs::write(root.join("k/src/file"), b"some data for the archive").unwrap();
        let snap_req = CreateSnapshotRequest {
            name: "s".into(),
            source_volume_id: src.id.clone(),
            parameters: Parameters::default(),
            secrets: Secrets::default(),
        };
        let snap = loop {
            let s = ctl.create_snapshot(&snap_req).await.unwrap();
            if s.ready_to_use {
                break s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(snap.size_bytes > 1);
        let into = |name: &str, bytes: u64, source: VolumeContentSource| {
            let mut r = req(name, &params("/k"), bytes as i64);
            r.content_source = Some(source);
            r
        };
        let from_snapshot = VolumeContentSource::Snapshot(snap.id.to_string());
        let from_volume = VolumeContentSource::Volume(src.id.to_string());
        let small = [
            into("r-small", snap.size_bytes - 1, from_snapshot.clone()),
            into("c-small", GIB, from_volume.clone()),
        ];
        for request in &small {
            let result = ctl.create_volume(request).await;
            if quotas {
                let err = result.unwrap_err();
                assert_eq!(err.code(), ErrorCode::OutOfRange, "{}: {err}", request.name);
                assert!(!root.join("k").join(&request.name).exists());
                assert!(
                    !root
                        .join(format!("k/.pfs-csi/volumes/{}.json", request.name))
                        .exists()
                );
            } else {
                // Without quotas the capacity is not enforced: nothing to be out of.
                result.unwrap();
            }
        }
        ctl.create_volume(&into("r-fits", snap.size_bytes, from_snapshot))
            .await
            .unwrap();
        ctl.create_volume(&into("c-fits", 2 * GIB, from_volume))
            .await
            .unwrap();
        assert_eq!(
            std::fs::read(root.join("k/c-fits/file")).unwrap(),
            b"some data for the archive"
        );
    }
}

/// Volume `a` of `/k`, made by a controller and staged by node `n1`, with client mounts in
/// `mode`.
struct Staged {
    world: World,
    _controller: BeegfsBackend,
    node: BeegfsBackend,
    volume: csi_core::domain::Volume,
    staging: PathBuf,
    /// The client mounts before the node staged the volume.
    controller_mounts: usize,
}

/// The client mount through which node `n1` sees the filesystem of a volume staged at
/// `staging` in `mode`.
fn client_mount(world: &World, mode: ClientMountMode, staging: &Path) -> PathBuf {
    match mode {
        ClientMountMode::PerVolume => staging.join("mount"),
        ClientMountMode::Shared => world
            .state("n1")
            .join("beegfs/node/fs")
            .join(crate::records::safe_key(HOST))
            .join("mount"),
    }
}

async fn staged_volume(mode: ClientMountMode) -> Staged {
    let world = World::new();
    world.add_fs("ctl", HOST, BeegfsVersion::V8, None);
    let settings = BeegfsSettings {
        client_mount_mode: mode,
        ..BeegfsSettings::default()
    };
    let controller = controller(&world, settings.clone(), NO_AUTH, None);
    let node = world.backend("n1", Role::Node, settings, NO_AUTH, None);
    let volume = controller
        .create_volume(&req("a", &params("/k"), 0))
        .await
        .unwrap();
    let controller_mounts = world.mounts.client_mounts();
    let staging = world.dir.path().join("n1/staging/a");
    node.stage_volume(&stage_request(volume.id.as_str(), &staging, &[]))
        .await
        .unwrap();
    Staged {
        world,
        _controller: controller,
        node,
        volume,
        staging,
        controller_mounts,
    }
}

#[tokio::test]
async fn unstage_of_a_hung_client_unmounts_first_in_both_mount_modes() {
    for mode in [ClientMountMode::PerVolume, ClientMountMode::Shared] {
        let Staged {
            world,
            node,
            volume: v,
            staging,
            controller_mounts,
            ..
        } = staged_volume(mode).await;
        // Every mount the node made hangs: its client mount and its staging mount.
        let made: Vec<PathBuf> = world
            .mounts
            .table
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.mount_point.clone())
            .filter(|p| p.starts_with(world.dir.path().join("n1")))
            .collect();
        assert!(made.contains(&staging.join("mount")), "{mode:?}: {made:?}");
        world.mounts.hung.lock().unwrap().extend(made);

        node.unstage_volume(&v.id, &staging).await.unwrap();
        assert_eq!(
            world.mounts.client_mounts(),
            controller_mounts,
            "{mode:?}: the node's client mount is gone"
        );
        assert!(!staging.join("mount").exists(), "{mode:?}");
    }
}

/// A call on `path` that does not come back until the sender is dropped or sent to (a
/// hung directory), left marked stuck in `node`'s registry.
async fn hold_call(node: &BeegfsBackend, path: &Path) -> std::sync::mpsc::Sender<()> {
    let (release, blocked) = std::sync::mpsc::channel::<()>();
    let held = node
        .inner
        .stuck
        .run(path, Duration::from_millis(20), "held".into(), move || {
            let _ = blocked.recv();
        })
        .await
        .unwrap_err();
    assert_eq!(held.code(), ErrorCode::DeadlineExceeded);
    release
}

#[tokio::test]
async fn a_blocked_call_below_a_client_mount_refuses_its_own_path_until_unmounted() {
    for mode in [ClientMountMode::PerVolume, ClientMountMode::Shared] {
        let Staged {
            world,
            _controller: controller,
            node,
            volume: a,
            staging,
            ..
        } = staged_volume(mode).await;
        let fs_mount = client_mount(&world, mode, &staging);
        // Volume b is made, and a staged again so the node's mount shows b too.
        let b = controller
            .create_volume(&req("b", &params("/k"), 0))
            .await
            .unwrap();
        node.unstage_volume(&a.id, &staging).await.unwrap();
        node.stage_volume(&stage_request(a.id.as_str(), &staging, &[]))
            .await
            .unwrap();
        let _a_hangs = hold_call(&node, &fs_mount.join("k/a")).await;

        // Another volume of the filesystem stages all the same.
        let staging_b = world.dir.path().join("n1/staging/b");
        node.stage_volume(&stage_request(b.id.as_str(), &staging_b, &[]))
            .await
            .unwrap();
        node.unstage_volume(&b.id, &staging_b).await.unwrap();

        // Unstaged, the client mount is gone: a fresh one there is not refused, though the
        // blocked call has not returned.
        node.unstage_volume(&a.id, &staging).await.unwrap();
        node.stage_volume(&stage_request(a.id.as_str(), &staging, &[]))
            .await
            .unwrap();
        node.unstage_volume(&a.id, &staging).await.unwrap();

        // A stage whose check meets a blocked call on its directory fails at once.
        let release = hold_call(&node, &fs_mount.join("k/a")).await;
        let started = Instant::now();
        let err = node
            .stage_volume(&stage_request(a.id.as_str(), &staging, &[]))
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::DeadlineExceeded, "{mode:?}: {err}");
        assert!(
            err.to_string().contains("has not returned"),
            "{mode:?}: {err}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{mode:?}: no wait"
        );
        release.send(()).unwrap();
    }
}

#[tokio::test]
async fn a_restage_writes_the_tracking_file_an_interrupted_stage_missed() {
    for mode in [ClientMountMode::PerVolume, ClientMountMode::Shared] {
        let Staged {
            world: _world,
            node,
            volume: a,
            staging,
            ..
        } = staged_volume(mode).await;
        let store = node.inner.staged_store();
        let (key, mut rec) = store.list().unwrap().pop().unwrap();
        let file = rec.fs_mount.join(rec.node_file.as_ref().unwrap());
        assert!(file.ends_with("k/.csi/volumes/a/nodes/n1-node"), "{file:?}");
        assert!(file.exists(), "{mode:?}: staged, tracked");
        // The stage was cut off after its mount, before its tracking file.
        std::fs::remove_file(&file).unwrap();
        rec.node_file = None;
        store.put(&key, &rec).unwrap();

        node.stage_volume(&stage_request(a.id.as_str(), &staging, &[]))
            .await
            .unwrap();
        assert!(file.exists(), "{mode:?}: the retry tracks this node");
        assert!(store.get(&key).unwrap().unwrap().node_file.is_some());
    }
}

#[tokio::test]
async fn an_unreadable_record_is_skipped_by_listings_but_stops_group_id_allocation() {
    let (world, ctl) = v7_controller(quota_settings(20, 40));
    let root = world.fake.root(HOST);
    let bad = ctl
        .create_volume(&req("bad", &params("/k"), GIB as i64))
        .await
        .unwrap();
    let good = ctl
        .create_volume(&req("good", &params("/k"), GIB as i64))
        .await
        .unwrap();
    let snapshot = |name: &str, source: &VolumeId| CreateSnapshotRequest {
        name: name.into(),
        source_volume_id: source.clone(),
        parameters: Parameters::default(),
        secrets: Secrets::default(),
    };
    let mut kept = None;
    for (name, source) in [("s-bad", &bad.id), ("s-good", &good.id)] {
        let request = snapshot(name, source);
        while !ctl.create_snapshot(&request).await.unwrap().ready_to_use {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        kept = Some(ctl.create_snapshot(&request).await.unwrap());
    }
    let kept = kept.unwrap();
    let record = root.join("k/.pfs-csi/volumes/bad.json");
    std::fs::write(&record, b"{torn").unwrap();
    std::fs::write(
        root.join("k/.pfs-csi/snapshot-records/s-bad.json"),
        b"{torn",
    )
    .unwrap();

    let listed: Vec<_> = ctl
        .list_volumes()
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.volume.id)
        .collect();
    assert_eq!(listed, vec![good.id.clone()]);
    let snapshots: Vec<_> = ctl
        .list_snapshots()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(snapshots, vec![kept.id]);
    let p = Parameters::new(
        params("/k")
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    );
    ctl.available_capacity(&p, &Topology::new()).await.unwrap();

    // The unreadable record may hold a group id: none is given out until it is repaired.
    let err = ctl
        .create_volume(&req("next", &params("/k"), GIB as i64))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::FailedPrecondition, "{err}");
    assert!(
        err.to_string().contains(&record.display().to_string()),
        "{err}"
    );
    assert!(!root.join("k/next").exists());
}

#[tokio::test]
async fn a_failed_unstage_keeps_this_node_in_the_volume_tracking() {
    for mode in [ClientMountMode::PerVolume, ClientMountMode::Shared] {
        let Staged {
            world,
            node,
            volume: v,
            staging,
            ..
        } = staged_volume(mode).await;
        // The tracking file as the node sees it, through its client mount.
        let client = client_mount(&world, mode, &staging);
        let tracking = client.join("k/.csi/volumes/a/nodes/n1-node");
        assert!(tracking.is_file(), "{mode:?}: {}", tracking.display());

        world
            .mounts
            .busy
            .lock()
            .unwrap()
            .insert(staging.join("mount"));
        node.unstage_volume(&v.id, &staging).await.unwrap_err();
        assert!(
            tracking.is_file(),
            "{mode:?}: DeleteVolume must still wait for this node"
        );

        world.mounts.busy.lock().unwrap().clear();
        node.unstage_volume(&v.id, &staging).await.unwrap();
        assert!(!staging.join("mount").exists(), "{mode:?}");
        if mode == ClientMountMode::Shared {
            assert!(!tracking.exists(), "{mode:?}");
        }
    }
}

#[tokio::test]
async fn without_its_record_a_publish_never_falls_back_to_the_filesystem_root() {
    for mode in [ClientMountMode::PerVolume, ClientMountMode::Shared] {
        let Staged {
            world,
            node,
            volume: v,
            staging,
            ..
        } = staged_volume(mode).await;
        // The state directory is lost: the mount table alone tells what is staged.
        std::fs::remove_dir_all(world.state("n1").join("beegfs/node/staged")).unwrap();
        let publish = publish_request(v.id.as_str(), &staging, Path::new("/t"));
        let mount = staging.join("mount");
        let expected = match mode {
            ClientMountMode::PerVolume => mount.join("k/a"),
            ClientMountMode::Shared => mount.clone(),
        };
        assert_eq!(
            node.publish_source(&publish).await.unwrap(),
            PublishSource {
                staged: mount.clone(),
                dir: expected
            },
            "{mode:?}"
        );
        if mode == ClientMountMode::Shared {
            // Another directory of the filesystem mounted there is not this volume.
            for e in world.mounts.table.lock().unwrap().iter_mut() {
                if e.mount_point == mount {
                    e.root = PathBuf::from("/k");
                }
            }
            let err = node.publish_source(&publish).await.unwrap_err();
            assert_eq!(err.code(), ErrorCode::FailedPrecondition, "{err}");
            continue;
        }
        // Per-volume mode, the volume's directory gone or a link: refused, never the root.
        std::fs::remove_dir_all(mount.join("k/a")).unwrap();
        let err = node.publish_source(&publish).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::FailedPrecondition, "{err}");
        assert!(err.to_string().contains("not on the filesystem"), "{err}");
        std::os::unix::fs::symlink("..", mount.join("k/a")).unwrap();
        let err = node.publish_source(&publish).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::FailedPrecondition, "{err}");
        assert!(err.to_string().contains("symbolic link"), "{err}");

        node.unstage_volume(&v.id, &staging).await.unwrap();
        let err = node.publish_source(&publish).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::FailedPrecondition, "{err}");
        assert!(err.to_string().contains("not staged"), "{err}");
    }
}
