//! Shared harness of the service tests: the real router on a temporary
//! unix socket, over the core's use cases with a mocked filesystem backend
//! and mounter that keep their state in memory.

#![allow(dead_code)]

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, SystemTime},
};

use csi_core::{
    Error,
    domain::{GIB, Snapshot, SnapshotId, Topology, Volume, VolumeCondition, VolumeId, VolumeStats},
    ports::{MockFilesystemBackend, MockMounter, PublishSource, VolumeInfo},
    service::{Backends, ControllerService, NodeService},
};
use k8s_adapter::{
    AdapterError, csi_server,
    identity::IdentityConfig,
    proto::csi::v1::{
        self as csi, controller_client::ControllerClient, identity_client::IdentityClient,
        node_client::NodeClient,
    },
    server::{self, PrivateSocket},
    socket_client,
};
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;

/// Limit for connecting and for the server to stop.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Driver name the test servers report.
pub const DRIVER: &str = "test.pfs-csi.example.com";

/// Volume ids the mock backend owns start with this.
pub const VOLUME_PREFIX: &str = "mockfs:";
/// Snapshot ids the mock backend owns start with this.
pub const SNAPSHOT_PREFIX: &str = "mocksnap:";
/// The only StorageClass parameter the mock backend knows.
pub const KNOWN_PARAMETER: &str = "tier";
/// Topology label of the test node.
pub const ZONE_KEY: &str = "topology.pfs-csi.example.com/zone";

/// What the mocked backend and mounter remember, shared with the test.
#[derive(Debug, Default)]
pub struct FakeState {
    /// Whether `check_ready` succeeds.
    pub ready: AtomicBool,
    /// How often `check_ready` ran.
    pub readiness_checks: AtomicUsize,
    /// A path the first `check_ready` looks for...
    pub watched_path: Mutex<Option<PathBuf>>,
    /// ...and whether it found it.
    pub watched_path_at_first_check: Mutex<Option<bool>>,
    /// Volumes by id.
    pub volumes: Mutex<BTreeMap<String, Volume>>,
    /// Snapshots by id.
    pub snapshots: Mutex<BTreeMap<String, Snapshot>>,
    /// Paths the fake mounter has something mounted on.
    pub mounted: Mutex<BTreeSet<PathBuf>>,
    /// Secrets the backend received, as (key, value) pairs, to prove they
    /// still reach it after the logging redacted them.
    pub seen_secrets: Mutex<Vec<(String, String)>>,
}

impl FakeState {
    /// A state whose backend is ready.
    pub fn ready() -> Arc<Self> {
        let state = Arc::new(Self::default());
        state.ready.store(true, Ordering::SeqCst);
        state
    }

    /// The volume `id`, as the backend reports it; `NotFound` when there is none.
    pub fn volume(&self, id: &VolumeId) -> csi_core::Result<Volume> {
        self.volumes
            .lock()
            .unwrap()
            .get(id.as_str())
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("volume {id} does not exist")))
    }

    /// Waits (up to 5 s) for the first readiness check, which the server runs at start.
    pub async fn wait_for_first_readiness_check(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while self.readiness_checks.load(Ordering::SeqCst) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "no readiness check at start"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

fn remember_secrets(state: &FakeState, secrets: &csi_core::domain::Secrets) {
    let mut seen = state.seen_secrets.lock().unwrap();
    for key in secrets.keys() {
        seen.push((
            key.to_owned(),
            secrets.get(key).unwrap_or_default().to_owned(),
        ));
    }
}

/// A mocked backend with an in-memory filesystem in `state`.
pub fn backend(state: Arc<FakeState>) -> MockFilesystemBackend {
    let mut b = MockFilesystemBackend::new();
    b.expect_name().return_const("mockfs");
    b.expect_fs_types().return_const(&["mockfs"][..]);
    b.expect_accepts_parameters().return_const(true);
    b.expect_claim_volume_id().returning(|id| {
        let rest = id.as_str().strip_prefix(VOLUME_PREFIX)?;
        Some(if rest.contains("..") {
            Err(Error::invalid("volume_id", "must not contain '..'"))
        } else {
            Ok(())
        })
    });
    b.expect_claim_snapshot_id()
        .returning(|id| id.as_str().starts_with(SNAPSHOT_PREFIX).then_some(Ok(())));

    let s = state.clone();
    b.expect_check_ready().returning(move || {
        if s.readiness_checks.fetch_add(1, Ordering::SeqCst) == 0
            && let Some(path) = s.watched_path.lock().unwrap().as_ref()
        {
            *s.watched_path_at_first_check.lock().unwrap() = Some(path.exists());
        }
        if s.ready.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(Error::Unavailable("/usr/bin/mockctl not found".into()))
        }
    });

    let s = state.clone();
    b.expect_create_volume().returning(move |req| {
        req.parameters
            .reject_unknown("parameters", &[KNOWN_PARAMETER])?;
        remember_secrets(&s, &req.secrets);
        if let Some(csi_core::domain::VolumeContentSource::Snapshot(id)) = &req.content_source
            && !s.snapshots.lock().unwrap().contains_key(id)
        {
            return Err(Error::NotFound(format!("snapshot {id} does not exist")));
        }
        let id = format!("{VOLUME_PREFIX}{}", req.name);
        let mut volumes = s.volumes.lock().unwrap();
        let volume = volumes.entry(id.clone()).or_insert_with(|| Volume {
            id: VolumeId::parse(&id).unwrap(),
            capacity_bytes: req.capacity.size_or(GIB),
            context: [("fs".to_string(), "mockfs".to_string())].into(),
            content_source: req.content_source.clone(),
            accessible_topology: vec![[(ZONE_KEY.to_string(), "zone-a".to_string())].into()],
        });
        Ok(volume.clone())
    });

    let s = state.clone();
    b.expect_delete_volume().returning(move |id, _| {
        s.volumes.lock().unwrap().remove(id.as_str());
        Ok(())
    });

    let s = state.clone();
    b.expect_capacity_unit().return_const(1u64);
    b.expect_planned_volume_id().return_const(None);
    b.expect_planned_snapshot_id().return_const(None);
    b.expect_expand_volume().returning(move |id, bytes, _| {
        let mut volumes = s.volumes.lock().unwrap();
        let volume = volumes
            .get_mut(id.as_str())
            .ok_or_else(|| Error::NotFound(format!("volume {id}")))?;
        volume.capacity_bytes = bytes;
        Ok(bytes)
    });

    let s = state.clone();
    b.expect_volume().returning(move |id| s.volume(id));

    let s = state.clone();
    b.expect_get_volume().returning(move |id| {
        s.volume(id).map(|volume| VolumeInfo {
            volume,
            condition: VolumeCondition::healthy(),
        })
    });

    let s = state.clone();
    b.expect_list_volumes().returning(move || {
        Ok(s.volumes
            .lock()
            .unwrap()
            .values()
            .map(|volume| VolumeInfo {
                volume: volume.clone(),
                condition: VolumeCondition::healthy(),
            })
            .collect())
    });

    b.expect_available_capacity().returning(|_, _| Ok(1 << 40));

    let s = state.clone();
    b.expect_create_snapshot().returning(move |req| {
        remember_secrets(&s, &req.secrets);
        if !s
            .volumes
            .lock()
            .unwrap()
            .contains_key(req.source_volume_id.as_str())
        {
            return Err(Error::NotFound(format!(
                "volume {} does not exist",
                req.source_volume_id
            )));
        }
        let id = format!("{SNAPSHOT_PREFIX}{}", req.name);
        let mut snapshots = s.snapshots.lock().unwrap();
        let snapshot = snapshots.entry(id.clone()).or_insert_with(|| Snapshot {
            id: SnapshotId::parse(&id).unwrap(),
            source_volume_id: req.source_volume_id.as_str().to_owned(),
            creation_time: SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000),
            size_bytes: 4096,
            ready_to_use: true,
        });
        if snapshot.source_volume_id != req.source_volume_id.as_str() {
            return Err(Error::AlreadyExists(format!(
                "snapshot {} was cut from another volume",
                req.name
            )));
        }
        Ok(snapshot.clone())
    });

    let s = state.clone();
    b.expect_delete_snapshot().returning(move |id, _| {
        s.snapshots.lock().unwrap().remove(id.as_str());
        Ok(())
    });

    let s = state.clone();
    b.expect_list_snapshots()
        .returning(move || Ok(s.snapshots.lock().unwrap().values().cloned().collect()));

    b.expect_node_topology()
        .returning(|| Ok([(ZONE_KEY.to_string(), "zone-a".to_string())].into()));

    let s = state.clone();
    b.expect_stage_volume().returning(move |req| {
        remember_secrets(&s, &req.secrets);
        Ok(())
    });
    b.expect_unstage_volume().returning(|_, _| Ok(()));
    b.expect_publish_source().returning(|req| {
        Ok(PublishSource {
            staged: req.staging_path.clone(),
            dir: req.staging_path.clone(),
        })
    });
    b.expect_volume_stats().returning(|_, _| {
        Ok(VolumeStats {
            bytes_total: 10 * GIB,
            bytes_used: 3 * GIB,
            bytes_available: 7 * GIB,
            inodes_total: Some(1000),
            inodes_used: Some(10),
            inodes_available: Some(990),
        })
    });
    b
}

/// A mocked mounter whose mount table is `state.mounted`.
pub fn mounter(state: Arc<FakeState>) -> MockMounter {
    let mut m = MockMounter::new();
    let s = state.clone();
    m.expect_bind_mount().returning(move |_, target, _| {
        s.mounted.lock().unwrap().insert(target.to_owned());
        Ok(())
    });
    // The fake backend stages nothing: any staging path counts as staged.
    let s = state.clone();
    m.expect_bind_mount_below()
        .returning(move |_, _, target, _| {
            s.mounted.lock().unwrap().insert(target.to_owned());
            Ok(())
        });
    let s = state.clone();
    m.expect_unmount().returning(move |target| {
        s.mounted.lock().unwrap().remove(target);
        Ok(())
    });
    let s = state.clone();
    m.expect_unmount_all().returning(move |path| {
        s.mounted.lock().unwrap().remove(path);
        Ok(path.symlink_metadata().is_ok())
    });
    let s = state.clone();
    m.expect_is_mount_point().returning(move |path| {
        if !path.exists() {
            return Err(Error::NotFound(format!(
                "{} does not exist",
                path.display()
            )));
        }
        Ok(s.mounted.lock().unwrap().contains(path))
    });
    m.expect_list_mounts().returning(|| Ok(Vec::new()));
    m
}

/// A controller use case over the mock backend.
pub fn controller(state: &Arc<FakeState>) -> Arc<ControllerService> {
    Arc::new(ControllerService::new(Backends::new(vec![Arc::new(
        backend(state.clone()),
    )])))
}

/// A node use case over the mock backend and mounter.
pub fn node(state: &Arc<FakeState>) -> Arc<NodeService> {
    Arc::new(
        NodeService::new(
            "node-1".into(),
            Backends::new(vec![Arc::new(backend(state.clone()))]),
            Arc::new(mounter(state.clone())),
            None,
        )
        .unwrap(),
    )
}

/// The real CSI router serving on a socket in its own temp dir.
pub struct Harness {
    /// The socket path.
    pub path: PathBuf,
    /// A scratch directory for staging and target paths.
    pub scratch: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), AdapterError>>>,
    _dir: tempfile::TempDir,
}

impl Harness {
    /// Serves Identity plus the given use cases.
    pub fn start(
        identity: IdentityConfig,
        controller: Option<Arc<ControllerService>>,
        node: Option<Arc<NodeService>>,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("csi.sock");
        let socket = PrivateSocket::bind(&path).unwrap();
        let (router, services) = csi_server::router(identity, controller, node);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server::serve(socket, router, Some(&services), async {
                stopped.await.ok();
            })
            .await
        });
        Self {
            path,
            scratch: tempfile::tempdir().unwrap(),
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        }
    }

    /// Serves controller and node over one shared `state`.
    pub fn both(state: &Arc<FakeState>) -> Self {
        Self::start(config(), Some(controller(state)), Some(node(state)))
    }

    /// A path inside the scratch directory.
    pub fn scratch_path(&self, name: &str) -> String {
        self.scratch.path().join(name).to_str().unwrap().to_owned()
    }

    async fn channel(&self) -> Channel {
        socket_client::connect(&self.path, TIMEOUT).await.unwrap()
    }

    /// An Identity client.
    pub async fn identity(&self) -> IdentityClient<Channel> {
        IdentityClient::new(self.channel().await)
    }

    /// A Controller client.
    pub async fn controller(&self) -> ControllerClient<Channel> {
        ControllerClient::new(self.channel().await)
    }

    /// A Node client.
    pub async fn node(&self) -> NodeClient<Channel> {
        NodeClient::new(self.channel().await)
    }

    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        self.stop.take().unwrap().send(()).ok();
        let task = self.task.take().unwrap();
        tokio::time::timeout(TIMEOUT, task)
            .await
            .expect("server stops in time")
            .unwrap()
            .unwrap();
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// The identity configuration of the test servers.
pub fn config() -> IdentityConfig {
    IdentityConfig::new(DRIVER).unwrap()
}

/// A mount capability with `mode`.
pub fn mount_capability(mode: csi::volume_capability::access_mode::Mode) -> csi::VolumeCapability {
    csi::VolumeCapability {
        access_mode: Some(csi::volume_capability::AccessMode { mode: mode as i32 }),
        access_type: Some(csi::volume_capability::AccessType::Mount(
            csi::volume_capability::MountVolume::default(),
        )),
    }
}

/// A multi-node multi-writer mount capability.
pub fn rwx() -> csi::VolumeCapability {
    mount_capability(csi::volume_capability::access_mode::Mode::MultiNodeMultiWriter)
}

/// A well-formed CreateVolume request for `name`.
pub fn create_request(name: &str) -> csi::CreateVolumeRequest {
    csi::CreateVolumeRequest {
        name: name.to_owned(),
        capacity_range: Some(csi::CapacityRange {
            required_bytes: 2 * GIB as i64,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![rwx()],
        ..Default::default()
    }
}

/// Whether `path` exists.
pub fn exists(path: &str) -> bool {
    Path::new(path).exists()
}

/// Topology segments of a message.
pub fn segments(topology: &csi::Topology) -> Topology {
    topology.segments.clone().into_iter().collect()
}
