//! A fake CSI plugin with canned answers, served on a temporary unix socket
//! by the real k8s-adapter server, that records every request it gets; and
//! a runner for the real `pfsctl` binary.

#![allow(dead_code)] // Each test file uses a different part of it.

use std::{
    collections::HashMap,
    path::PathBuf,
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use k8s_adapter::{
    proto::csi::v1::{
        self as csi, controller_server::ControllerServer, identity_server::IdentityServer,
        list_snapshots_response, list_volumes_response, node_server::NodeServer,
        volume_capability::access_mode::Mode,
    },
    server::{self, PrivateSocket},
};
use tokio::sync::oneshot;
use tonic::{Request, Response, Status, server::NamedService, transport::Server};

/// How the fake behaves.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// What Probe answers.
    pub ready: Option<bool>,
    /// Polls of ListSnapshots before `snap-1` becomes ready.
    pub polls_until_ready: usize,
    /// Puts these secrets into answers (manifest, volume context, error
    /// messages) to check the support bundle redacts them.
    pub leaked_secrets: Vec<String>,
}

/// Every request the fake received, by call.
#[derive(Debug, Default)]
pub struct Calls {
    pub create_volume: Vec<csi::CreateVolumeRequest>,
    pub delete_volume: Vec<csi::DeleteVolumeRequest>,
    pub list_volumes: Vec<csi::ListVolumesRequest>,
    pub validate: Vec<csi::ValidateVolumeCapabilitiesRequest>,
    pub get_capacity: Vec<csi::GetCapacityRequest>,
    pub expand: Vec<csi::ControllerExpandVolumeRequest>,
    pub create_snapshot: Vec<csi::CreateSnapshotRequest>,
    pub list_snapshots: Vec<csi::ListSnapshotsRequest>,
    pub stage: Vec<csi::NodeStageVolumeRequest>,
    pub unstage: Vec<csi::NodeUnstageVolumeRequest>,
    pub publish: Vec<csi::NodePublishVolumeRequest>,
    pub unpublish: Vec<csi::NodeUnpublishVolumeRequest>,
    pub stats: Vec<csi::NodeGetVolumeStatsRequest>,
    /// Names of every RPC, in order.
    pub order: Vec<&'static str>,
    /// `grpc-timeout` headers seen.
    pub timeouts: Vec<String>,
}

#[derive(Debug, Default)]
struct State {
    options: Options,
    calls: Mutex<Calls>,
    snapshot_polls: AtomicUsize,
}

/// The fake; one value serves all three services.
#[derive(Debug, Clone)]
struct Fake(Arc<State>);

impl Fake {
    fn record<T>(&self, name: &'static str, request: &Request<T>, store: impl FnOnce(&mut Calls)) {
        let mut calls = self.0.calls.lock().unwrap();
        calls.order.push(name);
        if let Some(timeout) = request.metadata().get("grpc-timeout") {
            calls
                .timeouts
                .push(timeout.to_str().unwrap_or_default().to_owned());
        }
        store(&mut calls);
    }

    fn leak(&self, i: usize) -> Option<String> {
        self.0.options.leaked_secrets.get(i).cloned()
    }
}

/// The five volumes ListVolumes pages through.
pub const VOLUME_IDS: [&str; 5] = ["vol-a", "vol-b", "vol-c", "vol-d", "vol-e"];

fn volume(id: &str, bytes: i64) -> csi::Volume {
    csi::Volume {
        capacity_bytes: bytes,
        volume_id: id.to_owned(),
        volume_context: HashMap::from([("exaFS".to_owned(), "10.0.0.1@tcp:/fs".to_owned())]),
        content_source: None,
        accessible_topology: vec![csi::Topology {
            segments: HashMap::from([("zone".to_owned(), "a".to_owned())]),
        }],
    }
}

fn snapshot(id: &str, ready: bool) -> csi::Snapshot {
    let mut snapshot = csi::Snapshot {
        size_bytes: 2 << 30,
        snapshot_id: id.to_owned(),
        source_volume_id: "vol-a".to_owned(),
        creation_time: Some(Default::default()),
        ready_to_use: ready,
        group_snapshot_id: String::new(),
    };
    if let Some(time) = snapshot.creation_time.as_mut() {
        time.seconds = 1_700_000_000;
    }
    snapshot
}

type Answer<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl csi::identity_server::Identity for Fake {
    async fn get_plugin_info(
        &self,
        r: Request<csi::GetPluginInfoRequest>,
    ) -> Answer<csi::GetPluginInfoResponse> {
        self.record("GetPluginInfo", &r, |_| {});
        let mut manifest = HashMap::from([("commit".to_owned(), "abc123".to_owned())]);
        if let Some(secret) = self.leak(0) {
            manifest.insert("apiKey".to_owned(), secret);
        }
        Ok(Response::new(csi::GetPluginInfoResponse {
            name: "fake.csi.example.com".into(),
            vendor_version: "1.2.3".into(),
            manifest,
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        r: Request<csi::GetPluginCapabilitiesRequest>,
    ) -> Answer<csi::GetPluginCapabilitiesResponse> {
        use csi::plugin_capability::{Service, Type, VolumeExpansion, service, volume_expansion};
        self.record("GetPluginCapabilities", &r, |_| {});
        let cap = |t| csi::PluginCapability { r#type: Some(t) };
        Ok(Response::new(csi::GetPluginCapabilitiesResponse {
            capabilities: vec![
                cap(Type::Service(Service {
                    r#type: service::Type::ControllerService as i32,
                })),
                cap(Type::Service(Service {
                    r#type: service::Type::VolumeAccessibilityConstraints as i32,
                })),
                cap(Type::VolumeExpansion(VolumeExpansion {
                    r#type: volume_expansion::Type::Online as i32,
                })),
            ],
        }))
    }

    async fn probe(&self, r: Request<csi::ProbeRequest>) -> Answer<csi::ProbeResponse> {
        self.record("Probe", &r, |_| {});
        Ok(Response::new(csi::ProbeResponse {
            ready: self.0.options.ready,
        }))
    }
}

#[tonic::async_trait]
impl csi::controller_server::Controller for Fake {
    async fn create_volume(
        &self,
        r: Request<csi::CreateVolumeRequest>,
    ) -> Answer<csi::CreateVolumeResponse> {
        let req = r.get_ref().clone();
        self.record("CreateVolume", &r, |c| c.create_volume.push(req.clone()));
        if req.name == "taken" {
            return Err(Status::already_exists(
                "volume taken exists with another size",
            ));
        }
        let mut v = volume(
            &format!("vol-{}", req.name),
            req.capacity_range.map_or(0, |c| c.required_bytes),
        );
        v.content_source = req.volume_content_source;
        if let Some(topology) = req.accessibility_requirements {
            v.accessible_topology = topology.requisite;
        }
        Ok(Response::new(csi::CreateVolumeResponse { volume: Some(v) }))
    }

    async fn delete_volume(
        &self,
        r: Request<csi::DeleteVolumeRequest>,
    ) -> Answer<csi::DeleteVolumeResponse> {
        let req = r.get_ref().clone();
        self.record("DeleteVolume", &r, |c| c.delete_volume.push(req.clone()));
        if req.volume_id == "missing" {
            return Err(Status::not_found("volume missing does not exist"));
        }
        Ok(Response::new(csi::DeleteVolumeResponse {}))
    }

    async fn controller_publish_volume(
        &self,
        _: Request<csi::ControllerPublishVolumeRequest>,
    ) -> Answer<csi::ControllerPublishVolumeResponse> {
        Err(Status::unimplemented("not served"))
    }

    async fn controller_unpublish_volume(
        &self,
        _: Request<csi::ControllerUnpublishVolumeRequest>,
    ) -> Answer<csi::ControllerUnpublishVolumeResponse> {
        Err(Status::unimplemented("not served"))
    }

    async fn validate_volume_capabilities(
        &self,
        r: Request<csi::ValidateVolumeCapabilitiesRequest>,
    ) -> Answer<csi::ValidateVolumeCapabilitiesResponse> {
        let req = r.get_ref().clone();
        self.record("ValidateVolumeCapabilities", &r, |c| {
            c.validate.push(req.clone())
        });
        let unsupported = req
            .volume_capabilities
            .iter()
            .filter_map(|c| c.access_mode)
            .find(|m| m.mode == Mode::SingleNodeReaderOnly as i32);
        Ok(Response::new(match unsupported {
            Some(_) => csi::ValidateVolumeCapabilitiesResponse {
                confirmed: None,
                message: "SINGLE_NODE_READER_ONLY is not supported".into(),
            },
            None => csi::ValidateVolumeCapabilitiesResponse {
                confirmed: Some(csi::validate_volume_capabilities_response::Confirmed {
                    volume_context: req.volume_context,
                    volume_capabilities: req.volume_capabilities,
                    parameters: req.parameters,
                    mutable_parameters: HashMap::new(),
                }),
                message: String::new(),
            },
        }))
    }

    async fn list_volumes(
        &self,
        r: Request<csi::ListVolumesRequest>,
    ) -> Answer<csi::ListVolumesResponse> {
        let req = r.get_ref().clone();
        self.record("ListVolumes", &r, |c| c.list_volumes.push(req.clone()));
        let start: usize = if req.starting_token.is_empty() {
            0
        } else {
            req.starting_token
                .parse()
                .map_err(|_| Status::aborted(format!("bad token {:?}", req.starting_token)))?
        };
        let size = if req.max_entries > 0 {
            req.max_entries as usize
        } else {
            VOLUME_IDS.len()
        };
        let end = (start + size).min(VOLUME_IDS.len());
        let entries = VOLUME_IDS[start..end]
            .iter()
            .map(|id| {
                let mut v = volume(id, 1 << 30);
                if let Some(secret) = self.leak(1) {
                    v.volume_context.insert("authToken".into(), secret);
                }
                list_volumes_response::Entry {
                    volume: Some(v),
                    status: Some(list_volumes_response::VolumeStatus {
                        published_node_ids: vec!["node-1".into()],
                        volume_condition: None,
                    }),
                }
            })
            .collect();
        let next_token = if end < VOLUME_IDS.len() {
            end.to_string()
        } else {
            String::new()
        };
        Ok(Response::new(csi::ListVolumesResponse {
            entries,
            next_token,
        }))
    }

    async fn get_capacity(
        &self,
        r: Request<csi::GetCapacityRequest>,
    ) -> Answer<csi::GetCapacityResponse> {
        let req = r.get_ref().clone();
        self.record("GetCapacity", &r, |c| c.get_capacity.push(req.clone()));
        Ok(Response::new(csi::GetCapacityResponse {
            available_capacity: 1 << 40,
            maximum_volume_size: Some(100 << 30),
            minimum_volume_size: None,
        }))
    }

    async fn controller_get_capabilities(
        &self,
        r: Request<csi::ControllerGetCapabilitiesRequest>,
    ) -> Answer<csi::ControllerGetCapabilitiesResponse> {
        use csi::controller_service_capability::{Rpc, Type, rpc};
        self.record("ControllerGetCapabilities", &r, |_| {});
        let cap = |t: rpc::Type| csi::ControllerServiceCapability {
            r#type: Some(Type::Rpc(Rpc { r#type: t as i32 })),
        };
        Ok(Response::new(csi::ControllerGetCapabilitiesResponse {
            capabilities: vec![
                cap(rpc::Type::CreateDeleteVolume),
                cap(rpc::Type::ListVolumes),
                cap(rpc::Type::CreateDeleteSnapshot),
            ],
        }))
    }

    async fn create_snapshot(
        &self,
        r: Request<csi::CreateSnapshotRequest>,
    ) -> Answer<csi::CreateSnapshotResponse> {
        let req = r.get_ref().clone();
        self.record("CreateSnapshot", &r, |c| {
            c.create_snapshot.push(req.clone())
        });
        Ok(Response::new(csi::CreateSnapshotResponse {
            snapshot: Some(snapshot(&format!("snap-{}", req.name), false)),
        }))
    }

    async fn delete_snapshot(
        &self,
        r: Request<csi::DeleteSnapshotRequest>,
    ) -> Answer<csi::DeleteSnapshotResponse> {
        self.record("DeleteSnapshot", &r, |_| {});
        Ok(Response::new(csi::DeleteSnapshotResponse {}))
    }

    async fn list_snapshots(
        &self,
        r: Request<csi::ListSnapshotsRequest>,
    ) -> Answer<csi::ListSnapshotsResponse> {
        let req = r.get_ref().clone();
        self.record("ListSnapshots", &r, |c| c.list_snapshots.push(req.clone()));
        if let Some(secret) = self.leak(2) {
            return Err(Status::internal(format!(
                "backend said password={secret} was refused"
            )));
        }
        let polls = self.0.snapshot_polls.fetch_add(1, Ordering::SeqCst) + 1;
        let ready = polls > self.0.options.polls_until_ready;
        let all = [snapshot("snap-1", ready), snapshot("snap-2", true)];
        let entries = all
            .into_iter()
            .filter(|s| req.snapshot_id.is_empty() || s.snapshot_id == req.snapshot_id)
            .map(|s| list_snapshots_response::Entry { snapshot: Some(s) })
            .collect();
        Ok(Response::new(csi::ListSnapshotsResponse {
            entries,
            next_token: String::new(),
        }))
    }

    async fn get_snapshot(
        &self,
        r: Request<csi::GetSnapshotRequest>,
    ) -> Answer<csi::GetSnapshotResponse> {
        self.record("GetSnapshot", &r, |_| {});
        let id = &r.get_ref().snapshot_id;
        if id != "snap-2" {
            return Err(Status::not_found(format!("snapshot {id} does not exist")));
        }
        Ok(Response::new(csi::GetSnapshotResponse {
            snapshot: Some(snapshot(id, true)),
        }))
    }

    async fn controller_expand_volume(
        &self,
        r: Request<csi::ControllerExpandVolumeRequest>,
    ) -> Answer<csi::ControllerExpandVolumeResponse> {
        let req = r.get_ref().clone();
        self.record("ControllerExpandVolume", &r, |c| c.expand.push(req.clone()));
        Ok(Response::new(csi::ControllerExpandVolumeResponse {
            capacity_bytes: req.capacity_range.map_or(0, |c| c.required_bytes),
            node_expansion_required: false,
        }))
    }

    async fn controller_get_volume(
        &self,
        r: Request<csi::ControllerGetVolumeRequest>,
    ) -> Answer<csi::ControllerGetVolumeResponse> {
        self.record("ControllerGetVolume", &r, |_| {});
        let id = r.get_ref().volume_id.clone();
        if id == "slow" {
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
        if !VOLUME_IDS.contains(&id.as_str()) {
            return Err(Status::not_found(format!("volume {id} does not exist")));
        }
        Ok(Response::new(csi::ControllerGetVolumeResponse {
            volume: Some(volume(&id, 1 << 30)),
            status: Some(csi::controller_get_volume_response::VolumeStatus {
                published_node_ids: vec!["node-1".into(), "node-2".into()],
                volume_condition: Some(csi::VolumeCondition {
                    abnormal: true,
                    message: "MDT unreachable".into(),
                }),
            }),
        }))
    }

    async fn controller_modify_volume(
        &self,
        _: Request<csi::ControllerModifyVolumeRequest>,
    ) -> Answer<csi::ControllerModifyVolumeResponse> {
        Err(Status::unimplemented("not served"))
    }
}

#[tonic::async_trait]
impl csi::node_server::Node for Fake {
    async fn node_stage_volume(
        &self,
        r: Request<csi::NodeStageVolumeRequest>,
    ) -> Answer<csi::NodeStageVolumeResponse> {
        let req = r.get_ref().clone();
        self.record("NodeStageVolume", &r, |c| c.stage.push(req.clone()));
        Ok(Response::new(csi::NodeStageVolumeResponse {}))
    }

    async fn node_unstage_volume(
        &self,
        r: Request<csi::NodeUnstageVolumeRequest>,
    ) -> Answer<csi::NodeUnstageVolumeResponse> {
        let req = r.get_ref().clone();
        self.record("NodeUnstageVolume", &r, |c| c.unstage.push(req.clone()));
        Ok(Response::new(csi::NodeUnstageVolumeResponse {}))
    }

    async fn node_publish_volume(
        &self,
        r: Request<csi::NodePublishVolumeRequest>,
    ) -> Answer<csi::NodePublishVolumeResponse> {
        let req = r.get_ref().clone();
        self.record("NodePublishVolume", &r, |c| c.publish.push(req.clone()));
        Ok(Response::new(csi::NodePublishVolumeResponse {}))
    }

    async fn node_unpublish_volume(
        &self,
        r: Request<csi::NodeUnpublishVolumeRequest>,
    ) -> Answer<csi::NodeUnpublishVolumeResponse> {
        let req = r.get_ref().clone();
        self.record("NodeUnpublishVolume", &r, |c| c.unpublish.push(req.clone()));
        Ok(Response::new(csi::NodeUnpublishVolumeResponse {}))
    }

    async fn node_get_volume_stats(
        &self,
        r: Request<csi::NodeGetVolumeStatsRequest>,
    ) -> Answer<csi::NodeGetVolumeStatsResponse> {
        use csi::volume_usage::Unit;
        let req = r.get_ref().clone();
        self.record("NodeGetVolumeStats", &r, |c| c.stats.push(req.clone()));
        Ok(Response::new(csi::NodeGetVolumeStatsResponse {
            usage: vec![
                csi::VolumeUsage {
                    available: 6 << 30,
                    total: 10 << 30,
                    used: 4 << 30,
                    unit: Unit::Bytes as i32,
                },
                csi::VolumeUsage {
                    available: 900,
                    total: 1000,
                    used: 100,
                    unit: Unit::Inodes as i32,
                },
            ],
            volume_condition: Some(csi::VolumeCondition {
                abnormal: false,
                message: String::new(),
            }),
        }))
    }

    async fn node_expand_volume(
        &self,
        _: Request<csi::NodeExpandVolumeRequest>,
    ) -> Answer<csi::NodeExpandVolumeResponse> {
        Err(Status::unimplemented("not served"))
    }

    async fn node_get_capabilities(
        &self,
        r: Request<csi::NodeGetCapabilitiesRequest>,
    ) -> Answer<csi::NodeGetCapabilitiesResponse> {
        use csi::node_service_capability::{Rpc, Type, rpc};
        self.record("NodeGetCapabilities", &r, |_| {});
        Ok(Response::new(csi::NodeGetCapabilitiesResponse {
            capabilities: vec![csi::NodeServiceCapability {
                r#type: Some(Type::Rpc(Rpc {
                    r#type: rpc::Type::StageUnstageVolume as i32,
                })),
            }],
        }))
    }

    async fn node_get_info(
        &self,
        r: Request<csi::NodeGetInfoRequest>,
    ) -> Answer<csi::NodeGetInfoResponse> {
        self.record("NodeGetInfo", &r, |_| {});
        if let Some(secret) = self.leak(3) {
            return Err(Status::internal(format!(
                "cannot read config: token={secret}"
            )));
        }
        Ok(Response::new(csi::NodeGetInfoResponse {
            node_id: "node-1".into(),
            max_volumes_per_node: 0,
            accessible_topology: Some(csi::Topology {
                segments: HashMap::from([(
                    "topology.exa.csi.ddn.com/zone".to_owned(),
                    "a".to_owned(),
                )]),
            }),
        }))
    }
}

/// The fake plugin serving on a socket in its own temp dir, stopped on drop.
pub struct FakePlugin {
    /// Socket path.
    pub path: PathBuf,
    state: Arc<State>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl FakePlugin {
    /// Starts a fake behaving per `options`.
    pub fn start(options: Options) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("csi.sock");
        let socket = PrivateSocket::bind(&path).unwrap();
        let state = Arc::new(State {
            options,
            ..Default::default()
        });
        let fake = Fake(state.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let router = Server::builder()
                    .add_service(IdentityServer::new(fake.clone()))
                    .add_service(ControllerServer::new(fake.clone()))
                    .add_service(NodeServer::new(fake));
                let served = [
                    IdentityServer::<Fake>::NAME,
                    ControllerServer::<Fake>::NAME,
                    NodeServer::<Fake>::NAME,
                ];
                server::serve(socket, router, Some(&served), async {
                    stopped.await.ok();
                })
                .await
                .unwrap();
            });
        });
        Self {
            path,
            state,
            stop: Some(stop),
            thread: Some(thread),
            _dir: dir,
        }
    }

    /// The endpoint flag value for this fake.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.path.display())
    }

    /// Runs `pfsctl --endpoint <this fake> args...`.
    pub fn run(&self, args: &[&str]) -> Run {
        let endpoint = self.endpoint();
        let mut all = vec!["--endpoint", endpoint.as_str()];
        all.extend_from_slice(args);
        pfsctl(&all, &[])
    }

    /// Inspects the recorded calls.
    pub fn calls<R>(&self, look: impl FnOnce(&Calls) -> R) -> R {
        look(&self.state.calls.lock().unwrap())
    }
}

impl Drop for FakePlugin {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.send(()).ok();
        }
        if let Some(thread) = self.thread.take() {
            // Unwinding already if this fails; do not panic twice.
            let _ = thread.join();
        }
    }
}

/// What a `pfsctl` run printed and how it exited.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Stdout parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }
}

/// Runs the real binary with `args` and extra environment variables.
pub fn pfsctl(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pfsctl"));
    command.args(args).env_remove("CSI_ENDPOINT");
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().expect("pfsctl runs");
    Run {
        code: output.status.code().expect("pfsctl exits, not killed"),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}
