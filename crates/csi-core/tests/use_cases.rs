//! The controller and node use cases driven through the exported mocks of the ports:
//! validation, routing, idempotency, per-volume locks and publish safety.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};

use csi_core::domain::{
    AccessMode, AccessType, CapacityRange, GIB, RequestMetadata, Secrets, Snapshot, SnapshotId,
    TopologyRequirement, Volume, VolumeCapability, VolumeCondition, VolumeContentSource, VolumeId,
    VolumeStats,
};
use csi_core::ports::{
    CreateVolumeRequest, MockFilesystemBackend, MockMounter, MountEntry, Mounter, PublishSource,
    VolumeInfo,
};
use csi_core::service::{Backends, ControllerService, NodeService, PublishVolume};
use csi_core::{Error, ErrorCode};

const PREFIX: &str = "lustre:";

fn capability(mode: AccessMode) -> VolumeCapability {
    VolumeCapability {
        access_type: AccessType::Mount,
        fs_type: String::new(),
        mount_flags: vec![],
        access_mode: mode,
    }
}

fn volume(id: &str, bytes: u64) -> Volume {
    Volume {
        id: VolumeId::parse(id).unwrap(),
        capacity_bytes: bytes,
        context: BTreeMap::new(),
        content_source: None,
        accessible_topology: vec![],
    }
}

fn request(name: &str, required: i64, limit: i64) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.to_string(),
        capacity: CapacityRange::new(required, limit).unwrap(),
        capabilities: vec![capability(AccessMode::MultiNodeMultiWriter)],
        parameters: Default::default(),
        metadata: RequestMetadata::default(),
        secrets: Secrets::default(),
        content_source: None,
        topology: TopologyRequirement::default(),
    }
}

/// A backend owning ids that start with `lustre:`; an id with `..` is claimed but malformed.
/// Only the identity methods are set up: any other call fails the test unless expected.
fn backend() -> MockFilesystemBackend {
    let mut b = MockFilesystemBackend::new();
    b.expect_name().return_const("lustre");
    b.expect_fs_types().return_const(&["lustre"][..]);
    b.expect_accepts_parameters().return_const(true);
    b.expect_capacity_unit().return_const(1u64);
    b.expect_planned_volume_id()
        .returning(|r| VolumeId::parse(&format!("{PREFIX}{}", r.name)).ok());
    b.expect_planned_snapshot_id()
        .returning(|r| SnapshotId::parse(&format!("{PREFIX}snapshot:{}", r.name)).ok());
    b.expect_claim_volume_id().returning(|id| {
        let rest = id.as_str().strip_prefix(PREFIX)?;
        Some(if rest.contains("..") {
            Err(Error::invalid("volume_id", "must not contain '..'"))
        } else {
            Ok(())
        })
    });
    b
}

fn controller(backend: MockFilesystemBackend) -> ControllerService {
    ControllerService::new(Backends::new(vec![Arc::new(backend)]))
}

fn assert_invalid(err: Error, field: &str) {
    assert_eq!(err.code(), ErrorCode::InvalidArgument, "{err}");
    assert!(
        err.to_string().contains(field),
        "{err} does not name {field}"
    );
}

#[tokio::test]
async fn create_volume_names_the_invalid_field_and_creates_nothing() {
    // No create_volume expectation: a call would fail the test.
    let c = controller(backend());
    assert_invalid(
        c.create_volume(request("  ", 0, 0)).await.unwrap_err(),
        "name",
    );
    let mut no_caps = request("pvc-1", 0, 0);
    no_caps.capabilities.clear();
    assert_invalid(
        c.create_volume(no_caps).await.unwrap_err(),
        "volume_capabilities",
    );
    let mut block = request("pvc-1", 0, 0);
    block.capabilities.push(VolumeCapability {
        access_type: AccessType::Block,
        ..capability(AccessMode::SingleNodeWriter)
    });
    assert_invalid(
        c.create_volume(block).await.unwrap_err(),
        "volume_capabilities[1]",
    );
    let mut foreign = request("pvc-1", 0, 0);
    foreign.capabilities[0].fs_type = "ext4".into();
    assert_invalid(
        c.create_volume(foreign).await.unwrap_err(),
        "volume_capabilities[0]",
    );
}

#[tokio::test]
async fn the_same_name_returns_the_volume_and_an_incompatible_size_is_already_exists() {
    let mut b = backend();
    b.expect_create_volume()
        .times(3)
        .returning(|r| Ok(volume(&format!("{PREFIX}{}", r.name), 2 * GIB)));
    let c = controller(b);
    let first = c
        .create_volume(request("pvc-1", GIB as i64, 0))
        .await
        .unwrap();
    let again = c
        .create_volume(request("pvc-1", GIB as i64, 0))
        .await
        .unwrap();
    assert_eq!(first, again);
    assert_eq!(first.id.as_str(), "lustre:pvc-1");
    let err = c
        .create_volume(request("pvc-1", 5 * GIB as i64, 0))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::AlreadyExists, "{err}");
    assert!(err.to_string().contains("pvc-1"), "{err}");
}

#[tokio::test]
async fn an_id_no_backend_knows_is_not_found_except_for_delete() {
    let c = controller(backend());
    let foreign = "beegfs://10.0.0.1/vol";
    assert_eq!(
        c.get_volume(foreign).await.unwrap_err().code(),
        ErrorCode::NotFound
    );
    assert_eq!(
        c.expand_volume(
            foreign,
            CapacityRange::new(1, 0).unwrap(),
            &Secrets::default()
        )
        .await
        .unwrap_err()
        .code(),
        ErrorCode::NotFound
    );
    assert_eq!(
        c.validate_volume_capabilities(foreign, &[capability(AccessMode::SingleNodeWriter)])
            .await
            .unwrap_err()
            .code(),
        ErrorCode::NotFound
    );
    c.delete_volume(foreign, &Secrets::default()).await.unwrap();
}

#[tokio::test]
async fn a_delete_never_answers_not_found() {
    let mut b = backend();
    b.expect_delete_volume()
        .returning(|_, _| Err(Error::NotFound("storage pool 9 does not exist".into())));
    let err = controller(b)
        .delete_volume("lustre:pvc-1", &Secrets::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Internal, "{err}");
    assert!(err.to_string().contains("storage pool 9"), "{err}");
}

#[tokio::test]
async fn a_delete_of_an_id_naming_an_unconfigured_filesystem_is_a_failed_precondition() {
    // No delete expectations: a call into the backend would fail the test.
    let mut b = MockFilesystemBackend::new();
    b.expect_name().return_const("lustre");
    b.expect_claim_volume_id().returning(|_| {
        Some(Err(Error::NotFound(
            "entry \"gone\" is not configured".into(),
        )))
    });
    b.expect_claim_snapshot_id().returning(|_| {
        Some(Err(Error::NotFound(
            "entry \"gone\" is not configured".into(),
        )))
    });
    let c = controller(b);
    for err in [
        c.delete_volume("gone:/pvc-1", &Secrets::default())
            .await
            .unwrap_err(),
        c.delete_snapshot("gone:snapshot:s", &Secrets::default())
            .await
            .unwrap_err(),
    ] {
        assert_eq!(err.code(), ErrorCode::FailedPrecondition, "{err}");
        assert!(err.to_string().contains("\"gone\""), "{err}");
        assert!(err.to_string().contains("nothing was deleted"), "{err}");
    }
}

#[tokio::test]
async fn a_source_on_another_filesystem_is_invalid_argument_and_creates_nothing() {
    // The parameters pick the first backend (no create expectation: a call fails the
    // test); the sources are the second's.
    let mut lustre = backend();
    lustre.expect_claim_snapshot_id().returning(|_| None);
    let mut beegfs = MockFilesystemBackend::new();
    beegfs.expect_name().return_const("beegfs");
    beegfs.expect_accepts_parameters().return_const(false);
    beegfs
        .expect_claim_volume_id()
        .returning(|id| id.as_str().starts_with("beegfs://").then_some(Ok(())));
    beegfs
        .expect_claim_snapshot_id()
        .returning(|id| id.as_str().starts_with("beegfs-snap://").then_some(Ok(())));
    let c = ControllerService::new(Backends::new(vec![Arc::new(lustre), Arc::new(beegfs)]));
    for (source, field) in [
        (
            VolumeContentSource::Snapshot("beegfs-snap://h/base/s".into()),
            "snapshot_id",
        ),
        (
            VolumeContentSource::Volume("beegfs://h/base/v".into()),
            "volume.volume_id",
        ),
    ] {
        let mut req = request("pvc-1", 0, 0);
        req.content_source = Some(source);
        let err = c.create_volume(req).await.unwrap_err();
        assert!(err.to_string().contains("on beegfs"), "{err}");
        assert_invalid(err, field);
    }
}

#[tokio::test]
async fn a_malformed_claimed_id_is_invalid_argument_everywhere() {
    let c = controller(backend());
    let bad = "lustre:../../etc";
    assert_invalid(
        c.delete_volume(bad, &Secrets::default()).await.unwrap_err(),
        "volume_id",
    );
    assert_invalid(c.get_volume(bad).await.unwrap_err(), "volume_id");
    assert_invalid(
        c.delete_volume("", &Secrets::default()).await.unwrap_err(),
        "volume_id",
    );
    assert_invalid(
        c.get_volume(&"x".repeat(129)).await.unwrap_err(),
        "volume_id",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_create_of_the_same_name_is_aborted() {
    let entered = Arc::new(Barrier::new(2));
    let release = Arc::new(Barrier::new(2));
    let calls = Arc::new(AtomicUsize::new(0));
    let mut b = backend();
    {
        let (entered, release, calls) = (entered.clone(), release.clone(), calls.clone());
        b.expect_create_volume().returning(move |r| {
            // A second call while the first waits would hang on the barrier: fail instead.
            assert_eq!(
                calls.fetch_add(1, Ordering::SeqCst),
                0,
                "the backend was entered twice"
            );
            entered.wait();
            release.wait();
            Ok(volume(&format!("{PREFIX}{}", r.name), GIB))
        });
    }
    let c = controller(b);
    let first = tokio::spawn({
        let c = c.clone();
        async move { c.create_volume(request("pvc-race", 0, 0)).await }
    });
    let e = entered.clone();
    tokio::task::spawn_blocking(move || e.wait()).await.unwrap();

    let err = c
        .create_volume(request("pvc-race", 0, 0))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Aborted, "{err}");
    assert!(err.to_string().contains("pvc-race"), "{err}");

    let r = release.clone();
    tokio::task::spawn_blocking(move || r.wait()).await.unwrap();
    assert_eq!(first.await.unwrap().unwrap().id.as_str(), "lustre:pvc-race");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_of_a_volume_being_created_waits_for_the_create() {
    let entered = Arc::new(Barrier::new(2));
    // Released by the test, or after a while should the test fail before it releases.
    let (release, released) = std::sync::mpsc::channel::<()>();
    let released = std::sync::Mutex::new(released);
    let created = Arc::new(AtomicBool::new(false));
    let mut b = backend();
    {
        let (entered, created) = (entered.clone(), created.clone());
        b.expect_create_volume().times(1).returning(move |r| {
            entered.wait();
            let _ = released
                .lock()
                .unwrap()
                .recv_timeout(std::time::Duration::from_secs(10));
            created.store(true, Ordering::SeqCst);
            Ok(volume(&format!("{PREFIX}{}", r.name), GIB))
        });
    }
    {
        let created = created.clone();
        b.expect_delete_volume().times(1).returning(move |_, _| {
            assert!(
                created.load(Ordering::SeqCst),
                "deleted before it was created"
            );
            Ok(())
        });
    }
    let c = controller(b);
    let first = tokio::spawn({
        let c = c.clone();
        async move { c.create_volume(request("pvc-gone", 0, 0)).await }
    });
    let e = entered.clone();
    tokio::task::spawn_blocking(move || e.wait()).await.unwrap();

    // The CO gave up on the create and deletes the id it would get: not while it is made.
    let err = c
        .delete_volume("lustre:pvc-gone", &Secrets::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Aborted, "{err}");

    release.send(()).unwrap();
    first.await.unwrap().unwrap();
    c.delete_volume("lustre:pvc-gone", &Secrets::default())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_of_a_snapshot_being_created_is_aborted() {
    let entered = Arc::new(std::sync::Barrier::new(2));
    let (release, released) = std::sync::mpsc::channel::<()>();
    let released = std::sync::Mutex::new(released);
    let mut b = backend();
    b.expect_create_volume()
        .returning(|r| Ok(volume(&format!("{PREFIX}{}", r.name), GIB)));
    b.expect_volume()
        .returning(|id| Ok(volume(id.as_str(), GIB)));
    {
        let entered = entered.clone();
        b.expect_create_snapshot().times(1).returning(move |r| {
            entered.wait();
            let _ = released
                .lock()
                .unwrap()
                .recv_timeout(std::time::Duration::from_secs(10));
            Ok(Snapshot {
                id: SnapshotId::parse(&format!("{PREFIX}snapshot:{}", r.name)).unwrap(),
                source_volume_id: r.source_volume_id.to_string(),
                creation_time: std::time::SystemTime::UNIX_EPOCH,
                size_bytes: 0,
                ready_to_use: false,
            })
        });
    }
    b.expect_claim_snapshot_id()
        .returning(|id| id.as_str().starts_with(PREFIX).then_some(Ok(())));
    b.expect_delete_snapshot().times(1).returning(|_, _| Ok(()));
    let c = controller(b);
    c.create_volume(request("pvc-src", 0, 0)).await.unwrap();
    let first = tokio::spawn({
        let c = c.clone();
        async move {
            c.create_snapshot(
                "snap-1",
                "lustre:pvc-src",
                Default::default(),
                Secrets::default(),
            )
            .await
        }
    });
    let e = entered.clone();
    tokio::task::spawn_blocking(move || e.wait()).await.unwrap();
    // A delete of the id it will get, while it is started: not beside it.
    let err = c
        .delete_snapshot("lustre:snapshot:snap-1", &Secrets::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Aborted, "{err}");
    release.send(()).unwrap();
    first.await.unwrap().unwrap();
    c.delete_snapshot("lustre:snapshot:snap-1", &Secrets::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn expansion_asks_for_whole_units_and_refuses_a_range_without_one() {
    // A backend counting KiB (no expand expectation but the one: another call fails).
    let mut b = MockFilesystemBackend::new();
    b.expect_name().return_const("lustre");
    b.expect_capacity_unit().return_const(1024u64);
    b.expect_claim_volume_id()
        .returning(|id| id.as_str().starts_with(PREFIX).then_some(Ok(())));
    // `lustre:odd` holds no whole number of units (a size set by hand, say).
    b.expect_volume().returning(|id| {
        let bytes = if id.as_str() == "lustre:odd" {
            GIB + 1
        } else {
            GIB
        };
        Ok(volume(id.as_str(), bytes))
    });
    b.expect_expand_volume()
        .withf(|_, bytes, _| *bytes == GIB + 1024)
        .times(1)
        .returning(|_, bytes, _| Ok(bytes));
    let c = controller(b);
    let none = Secrets::default();
    let one_more = (GIB + 1) as i64;
    let err = c
        .expand_volume(
            "lustre:v",
            CapacityRange::new(one_more, one_more + 100).unwrap(),
            &none,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::OutOfRange, "{err}");
    assert!(err.to_string().contains("1024"), "{err}");
    let grown = c
        .expand_volume("lustre:v", CapacityRange::new(one_more, 0).unwrap(), &none)
        .await
        .unwrap();
    assert_eq!(grown.capacity_bytes, GIB + 1024);
    // Already as large as asked: left as it is, not rounded up.
    let kept = c
        .expand_volume(
            "lustre:odd",
            CapacityRange::new(GIB as i64, 0).unwrap(),
            &none,
        )
        .await
        .unwrap();
    assert_eq!(kept.capacity_bytes, GIB + 1);
}

#[tokio::test]
async fn expansion_never_shrinks_and_refuses_a_limit_below_the_current_size() {
    let mut b = backend();
    // Expansion needs the capacity, not the condition (which can cost a tool run).
    b.expect_volume()
        .returning(|id| Ok(volume(id.as_str(), 10 * GIB)));
    b.expect_expand_volume()
        .withf(|id, bytes, _| id.as_str() == "lustre:v" && *bytes == 20 * GIB)
        .times(1)
        .returning(|_, bytes, _| Ok(bytes));
    let c = controller(b);
    let none = Secrets::default();
    let smaller = c
        .expand_volume(
            "lustre:v",
            CapacityRange::new(5 * GIB as i64, 0).unwrap(),
            &none,
        )
        .await
        .unwrap();
    assert_eq!(smaller.capacity_bytes, 10 * GIB);
    assert!(!smaller.node_expansion_required);
    let err = c
        .expand_volume(
            "lustre:v",
            CapacityRange::new(0, 8 * GIB as i64).unwrap(),
            &none,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::OutOfRange, "{err}");
    let grown = c
        .expand_volume(
            "lustre:v",
            CapacityRange::new(20 * GIB as i64, 0).unwrap(),
            &none,
        )
        .await
        .unwrap();
    assert_eq!(grown.capacity_bytes, 20 * GIB);
    assert_invalid(
        c.expand_volume("lustre:v", CapacityRange::default(), &none)
            .await
            .unwrap_err(),
        "capacity_range",
    );
}

#[tokio::test]
async fn list_volumes_pages_through_every_volume_in_id_order() {
    let mut b = backend();
    b.expect_list_volumes().returning(|| {
        Ok(["e", "a", "d", "b", "c"]
            .iter()
            .map(|n| VolumeInfo {
                volume: volume(&format!("{PREFIX}{n}"), GIB),
                condition: VolumeCondition::healthy(),
            })
            .collect())
    });
    let c = controller(b);
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = c.list_volumes(2, &token).await.unwrap();
        assert!(page.entries.len() <= 2);
        seen.extend(page.entries.into_iter().map(|v| v.volume.id.to_string()));
        pages += 1;
        if page.next_token.is_empty() {
            break;
        }
        token = page.next_token;
    }
    assert_eq!(pages, 3);
    assert_eq!(
        seen,
        ["a", "b", "c", "d", "e"].map(|n| format!("{PREFIX}{n}"))
    );
    let err = c.list_volumes(2, "not-a-token").await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Aborted);
    assert_invalid(c.list_volumes(-1, "").await.unwrap_err(), "max_entries");
}

// ---- node ----

/// A mounter mock that remembers which targets are mounted, and how. Its mount table
/// holds the root filesystem at `/` and each bind, showing its source's directory.
#[derive(Clone, Default)]
struct FakeMounts {
    mounted: Arc<std::sync::Mutex<Vec<(PathBuf, bool)>>>,
    sources: Arc<std::sync::Mutex<Vec<(PathBuf, PathBuf)>>>,
    binds: Arc<AtomicUsize>,
}

impl FakeMounts {
    fn bind(&self, source: &Path, target: &Path, read_only: bool) -> csi_core::Result<()> {
        self.binds.fetch_add(1, Ordering::SeqCst);
        self.mounted
            .lock()
            .unwrap()
            .push((target.to_path_buf(), read_only));
        self.sources
            .lock()
            .unwrap()
            .push((target.to_path_buf(), source.to_path_buf()));
        Ok(())
    }
}

fn mounter() -> (MockMounter, FakeMounts) {
    let fake = FakeMounts::default();
    (mounter_over(&fake), fake)
}

/// A mounter over mounts that are already there (as a restarted plugin finds them).
fn mounter_over(fake: &FakeMounts) -> MockMounter {
    let mut m = MockMounter::new();
    {
        let fake = fake.clone();
        m.expect_bind_mount()
            .returning(move |source, target, ro| fake.bind(source, target, ro));
    }
    {
        // The mocked backends stage nothing: every staging path counts as staged.
        let fake = fake.clone();
        m.expect_bind_mount_below()
            .returning(move |_, source, target, ro| fake.bind(source, target, ro));
    }
    {
        let mounted = fake.mounted.clone();
        m.expect_is_mount_point().returning(move |p| {
            if !p.exists() {
                return Err(Error::NotFound(format!("{} does not exist", p.display())));
            }
            Ok(mounted.lock().unwrap().iter().any(|(t, _)| t == p))
        });
    }
    {
        let fake = fake.clone();
        m.expect_unmount().returning(move |p| {
            let mut list = fake.mounted.lock().unwrap();
            if let Some(i) = list.iter().rposition(|(t, _)| t == p) {
                list.remove(i);
                fake.sources.lock().unwrap().remove(i);
            }
            Ok(())
        });
    }
    {
        let fake = fake.clone();
        m.expect_unmount_all().returning(move |p| {
            let mut list = fake.mounted.lock().unwrap();
            while let Some(i) = list.iter().rposition(|(t, _)| t == p) {
                list.remove(i);
                fake.sources.lock().unwrap().remove(i);
            }
            Ok(p.symlink_metadata().is_ok())
        });
    }
    {
        let fake = fake.clone();
        m.expect_list_mounts().returning(move || {
            let entry = |id, root: &Path, mount_point: &Path, ro: bool| MountEntry {
                id,
                parent_id: 1,
                root: root.to_path_buf(),
                mount_point: mount_point.to_path_buf(),
                mount_options: vec![if ro { "ro" } else { "rw" }.into()],
                fs_type: "ext4".into(),
                source: "/dev/vda".into(),
                super_options: vec!["rw".into()],
            };
            let mut table = vec![entry(1, Path::new("/"), Path::new("/"), false)];
            let mounted = fake.mounted.lock().unwrap();
            let sources = fake.sources.lock().unwrap();
            for (i, ((target, ro), (_, source))) in mounted.iter().zip(sources.iter()).enumerate() {
                table.push(entry(i as u32 + 2, source, target, *ro));
            }
            Ok(table)
        });
    }
    m
}

fn node_backend(staging_source: PathBuf) -> MockFilesystemBackend {
    let mut b = backend();
    b.expect_publish_source().returning(move |_| {
        Ok(PublishSource {
            staged: staging_source.clone(),
            dir: staging_source.clone(),
        })
    });
    b
}

fn node(backend: MockFilesystemBackend, mounter: impl Mounter + 'static) -> NodeService {
    NodeService::new(
        "node-1".into(),
        Backends::new(vec![Arc::new(backend)]),
        Arc::new(mounter),
        None,
    )
    .unwrap()
}

fn publish(target: &Path, mode: AccessMode, read_only: bool) -> PublishVolume {
    PublishVolume {
        volume_id: "lustre:vol-1".into(),
        staging_path: "/var/lib/kubelet/plugins/staging/vol-1".into(),
        target_path: target.to_str().unwrap().into(),
        capability: Some(capability(mode)),
        read_only,
        ..Default::default()
    }
}

#[tokio::test]
async fn publishing_twice_to_the_same_target_mounts_once() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("pod-a");
    let (m, fake) = mounter();
    let n = node(node_backend(dir.path().join("staged")), m);
    n.publish(publish(&target, AccessMode::MultiNodeMultiWriter, false))
        .await
        .unwrap();
    assert!(target.is_dir(), "the target directory is created");
    n.publish(publish(&target, AccessMode::MultiNodeMultiWriter, false))
        .await
        .unwrap();
    assert_eq!(fake.binds.load(Ordering::SeqCst), 1);
    let err = n
        .publish(publish(&target, AccessMode::MultiNodeMultiWriter, true))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::AlreadyExists, "{err}");
}

#[tokio::test]
async fn read_only_access_modes_force_a_read_only_bind() {
    let dir = tempfile::tempdir().unwrap();
    for (i, mode) in [
        AccessMode::MultiNodeReaderOnly,
        AccessMode::SingleNodeReaderOnly,
    ]
    .into_iter()
    .enumerate()
    {
        let (m, fake) = mounter();
        let n = node(node_backend(dir.path().join("staged")), m);
        let target = dir.path().join(format!("ro-{i}"));
        n.publish(publish(&target, mode, false)).await.unwrap();
        assert_eq!(*fake.mounted.lock().unwrap(), vec![(target, true)]);
    }
    let (m, fake) = mounter();
    let n = node(node_backend(dir.path().join("staged")), m);
    let target = dir.path().join("rw");
    n.publish(publish(&target, AccessMode::MultiNodeMultiWriter, false))
        .await
        .unwrap();
    assert_eq!(*fake.mounted.lock().unwrap(), vec![(target, false)]);
}

/// Publishes the volume ReadWriteOncePod at `target`.
async fn publish_rwop(n: &NodeService, target: &Path) -> csi_core::Result<()> {
    n.publish(publish(target, AccessMode::SingleNodeSingleWriter, false))
        .await
}

/// A ReadWriteOncePod publish at `target`, refused: the volume is published at `elsewhere`.
async fn refused_as_published_elsewhere(n: &NodeService, target: &Path, elsewhere: &str) {
    let err = publish_rwop(n, target).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::FailedPrecondition, "{err}");
    assert!(err.to_string().contains(elsewhere), "{err}");
}

#[tokio::test]
async fn a_read_write_once_pod_volume_cannot_be_published_at_a_second_target() {
    let dir = tempfile::tempdir().unwrap();
    let (m, fake) = mounter();
    let n = node(node_backend(dir.path().join("staged")), m);
    publish_rwop(&n, &dir.path().join("pod-a")).await.unwrap();
    refused_as_published_elsewhere(&n, &dir.path().join("pod-b"), "pod-a").await;
    assert_eq!(fake.binds.load(Ordering::SeqCst), 1);

    // A restarted plugin knows it from the mount table: the same publish again is fine,
    // another target is still refused.
    let n = node(node_backend(dir.path().join("staged")), mounter_over(&fake));
    refused_as_published_elsewhere(&n, &dir.path().join("pod-b"), "pod-a").await;
    publish_rwop(&n, &dir.path().join("pod-a")).await.unwrap();
    assert_eq!(fake.binds.load(Ordering::SeqCst), 1);

    // Once unpublished, another pod may have it.
    n.unpublish("lustre:vol-1", dir.path().join("pod-a").to_str().unwrap())
        .await
        .unwrap();
    assert!(!dir.path().join("pod-a").exists());
    publish_rwop(&n, &dir.path().join("pod-b")).await.unwrap();
}

#[tokio::test]
async fn unpublishing_a_missing_target_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    // The target is never stat-ed outside the mounter (it could be a dead mount): the
    // mounter finds nothing mounted and says the target does not exist.
    let mut mounter = MockMounter::new();
    mounter
        .expect_unmount_all()
        .times(1)
        .returning(|_| Ok(false));
    let n = node(backend(), mounter);
    n.unpublish("lustre:vol-1", dir.path().join("gone").to_str().unwrap())
        .await
        .unwrap();
    assert_invalid(
        n.unpublish("lustre:vol-1", "relative/path")
            .await
            .unwrap_err(),
        "target_path",
    );
}

#[tokio::test]
async fn a_symbolic_link_target_is_refused_and_nothing_is_mounted_through_it() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = dir.path().join("etc");
    std::fs::create_dir(&elsewhere).unwrap();
    let target = dir.path().join("planted");
    std::os::unix::fs::symlink(&elsewhere, &target).unwrap();
    // The mounter is asked only about the link itself (it never follows one); nothing is
    // bind-mounted (an unexpected call fails the test).
    let mut mounter = MockMounter::new();
    let link = target.clone();
    mounter
        .expect_is_mount_point()
        .withf(move |p| p == link)
        .times(1)
        .returning(|_| Ok(false));
    let link = target.clone();
    mounter
        .expect_unmount_all()
        .withf(move |p| p == link)
        .times(1)
        .returning(|_| Ok(true));
    let n = node(node_backend(dir.path().join("staged")), mounter);
    let err = n
        .publish(publish(&target, AccessMode::MultiNodeMultiWriter, false))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::FailedPrecondition, "{err}");
    assert!(err.to_string().contains("symbolic link"), "{err}");
    let err = n
        .unpublish("lustre:vol-1", target.to_str().unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::FailedPrecondition, "{err}");
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert!(elsewhere.is_dir());
    assert!(target.is_symlink(), "the planted link was removed");
}

#[tokio::test]
async fn publish_names_missing_and_invalid_fields() {
    let n = node(backend(), MockMounter::new());
    let mut no_cap = publish(Path::new("/t"), AccessMode::SingleNodeWriter, false);
    no_cap.capability = None;
    assert_invalid(n.publish(no_cap).await.unwrap_err(), "volume_capability");
    let mut no_target = publish(Path::new("/t"), AccessMode::SingleNodeWriter, false);
    no_target.target_path.clear();
    assert_invalid(n.publish(no_target).await.unwrap_err(), "target_path");
    let climbing = publish(
        Path::new("/var/lib/kubelet/../etc"),
        AccessMode::SingleNodeWriter,
        false,
    );
    assert_invalid(n.publish(climbing).await.unwrap_err(), "target_path");
    let unknown = PublishVolume {
        volume_id: "nfs:x".into(),
        ..publish(Path::new("/t"), AccessMode::SingleNodeWriter, false)
    };
    assert_eq!(
        n.publish(unknown).await.unwrap_err().code(),
        ErrorCode::NotFound
    );
}

#[tokio::test]
async fn stats_are_not_found_for_a_missing_path_and_abnormal_when_not_mounted() {
    let dir = tempfile::tempdir().unwrap();
    let mounted = Arc::new(AtomicBool::new(false));
    let mut m = MockMounter::new();
    {
        let mounted = mounted.clone();
        m.expect_is_mount_point().returning(move |p| {
            if p.exists() {
                Ok(mounted.load(Ordering::SeqCst))
            } else {
                Err(Error::NotFound(format!("{} does not exist", p.display())))
            }
        });
    }
    let mut b = backend();
    b.expect_volume_stats().returning(|_, _| {
        Ok(VolumeStats {
            bytes_total: 10,
            bytes_used: 4,
            bytes_available: 6,
            ..Default::default()
        })
    });
    let n = node(b, m);
    let path = dir.path().to_str().unwrap();

    let err = n
        .stats("lustre:vol-1", dir.path().join("missing").to_str().unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotFound, "{err}");

    let (stats, condition) = n.stats("lustre:vol-1", path).await.unwrap();
    assert!(condition.abnormal);
    assert!(condition.message.contains("not mounted"), "{condition:?}");
    assert_eq!(stats, VolumeStats::default());

    mounted.store(true, Ordering::SeqCst);
    let (stats, condition) = n.stats("lustre:vol-1", path).await.unwrap();
    assert!(!condition.abnormal);
    assert_eq!((stats.bytes_used, stats.bytes_available), (4, 6));

    assert_eq!(
        n.stats("nfs:x", path).await.unwrap_err().code(),
        ErrorCode::NotFound
    );
}
