//! The real server on a temporary socket, called through the generated
//! client over the unix socket.

use std::{
    fs,
    os::unix::fs::{FileTypeExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use k8s_adapter::{
    AdapterError,
    proto::csi::v1::{
        GetPluginCapabilitiesRequest, GetPluginCapabilitiesResponse, GetPluginInfoRequest,
        GetPluginInfoResponse, ProbeRequest, ProbeResponse,
        identity_client::IdentityClient,
        identity_server::{Identity, IdentityServer},
    },
    server::{self, PrivateSocket, SOCKET_MODE},
    socket_client,
};
use tokio::{
    sync::{Notify, mpsc, oneshot},
    task::JoinHandle,
};
use tokio_stream::StreamExt as _;
use tonic::{Request, Response, Status, server::NamedService, transport::Server};
use tonic_reflection::pb::v1 as reflection;

const TIMEOUT: Duration = Duration::from_secs(10);

/// Makes Probe wait until the test releases it, telling the test when the
/// call has arrived.
struct ProbeGate {
    entered: mpsc::UnboundedSender<()>,
    release: Arc<Notify>,
}

/// Identity service stub answering with the name it was built with.
struct StubIdentity {
    name: String,
    gate: Option<ProbeGate>,
}

#[tonic::async_trait]
impl Identity for StubIdentity {
    async fn get_plugin_info(
        &self,
        _: Request<GetPluginInfoRequest>,
    ) -> Result<Response<GetPluginInfoResponse>, Status> {
        Ok(Response::new(GetPluginInfoResponse {
            name: self.name.clone(),
            vendor_version: "test".into(),
            manifest: Default::default(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _: Request<GetPluginCapabilitiesRequest>,
    ) -> Result<Response<GetPluginCapabilitiesResponse>, Status> {
        Ok(Response::new(GetPluginCapabilitiesResponse::default()))
    }

    async fn probe(&self, _: Request<ProbeRequest>) -> Result<Response<ProbeResponse>, Status> {
        if let Some(gate) = &self.gate {
            let released = gate.release.notified();
            gate.entered.send(()).ok();
            released.await;
        }
        Ok(Response::new(ProbeResponse { ready: Some(true) }))
    }
}

/// A server running in a task on a socket inside its own temp dir.
struct RunningServer {
    path: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), AdapterError>>,
    _dir: tempfile::TempDir,
}

impl RunningServer {
    fn start(identity: StubIdentity) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plugin").join("csi.sock");
        Self::start_at(dir, path, identity)
    }

    fn start_at(dir: tempfile::TempDir, path: PathBuf, identity: StubIdentity) -> Self {
        Self::start_with(dir, path, identity, true)
    }

    fn start_without_reflection(identity: StubIdentity) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("csi.sock");
        Self::start_with(dir, path, identity, false)
    }

    fn start_with(
        dir: tempfile::TempDir,
        path: PathBuf,
        identity: StubIdentity,
        reflection: bool,
    ) -> Self {
        let socket = PrivateSocket::bind(&path).unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let router = Server::builder().add_service(IdentityServer::new(identity));
        let task = tokio::spawn(async move {
            let advertised = [IdentityServer::<StubIdentity>::NAME];
            let reflection = reflection.then_some(&advertised[..]);
            server::serve(socket, router, reflection, async {
                stopped.await.ok();
            })
            .await
        });
        Self {
            path,
            stop: Some(stop),
            task,
            _dir: dir,
        }
    }

    async fn client(&self) -> IdentityClient<tonic::transport::Channel> {
        IdentityClient::new(socket_client::connect(&self.path, TIMEOUT).await.unwrap())
    }

    /// Triggers shutdown without waiting for the server to finish.
    fn begin_shutdown(&mut self) {
        self.stop
            .take()
            .expect("shutdown triggered once")
            .send(())
            .ok();
    }

    async fn stop(mut self) {
        self.begin_shutdown();
        tokio::time::timeout(TIMEOUT, &mut self.task)
            .await
            .expect("server stops in time")
            .unwrap()
            .unwrap();
    }
}

fn stub(name: &str) -> StubIdentity {
    StubIdentity {
        name: name.to_owned(),
        gate: None,
    }
}

fn is_socket(path: &Path) -> bool {
    fs::symlink_metadata(path)
        .map(|m| m.file_type().is_socket())
        .unwrap_or(false)
}

#[tokio::test]
async fn identity_call_round_trips_over_the_unix_socket() {
    let server = RunningServer::start(stub("round-trip.example.com"));
    let reply = server
        .client()
        .await
        .get_plugin_info(GetPluginInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.name, "round-trip.example.com");
    server.stop().await;
}

#[tokio::test]
async fn socket_is_owner_only_and_no_staging_directory_is_left() {
    let server = RunningServer::start(stub("mode.example.com"));
    let mode = fs::metadata(&server.path).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, SOCKET_MODE, "socket mode is {mode:o}");

    let parent = server.path.parent().unwrap();
    let entries: Vec<_> = fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, vec![server.path.file_name().unwrap().to_owned()]);
    server.stop().await;
}

/// Sends one reflection v1 request and returns the response.
async fn reflect(
    path: &Path,
    request: reflection::server_reflection_request::MessageRequest,
) -> reflection::server_reflection_response::MessageResponse {
    let channel = socket_client::connect(path, TIMEOUT).await.unwrap();
    let mut client = reflection::server_reflection_client::ServerReflectionClient::new(channel);
    let outbound = tokio_stream::once(reflection::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    });
    let mut inbound = client
        .server_reflection_info(outbound)
        .await
        .unwrap()
        .into_inner();
    inbound
        .next()
        .await
        .expect("one reflection response")
        .unwrap()
        .message_response
        .expect("response has a body")
}

#[tokio::test]
async fn reflection_lists_the_served_services() {
    use reflection::{
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let server = RunningServer::start(stub("reflection.example.com"));
    let MessageResponse::ListServicesResponse(list) =
        reflect(&server.path, MessageRequest::ListServices(String::new())).await
    else {
        panic!("expected a service list");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            "csi.v1.Identity".to_owned(),
            "grpc.reflection.v1.ServerReflection".to_owned(),
            "grpc.reflection.v1alpha.ServerReflection".to_owned(),
        ]
    );
    server.stop().await;
}

#[tokio::test]
async fn without_reflection_only_the_csi_services_answer() {
    let server = RunningServer::start_without_reflection(stub("plain.example.com"));
    let mut identity = server.client().await;
    identity
        .get_plugin_info(GetPluginInfoRequest {})
        .await
        .expect("Identity answers");
    let channel = socket_client::connect(&server.path, TIMEOUT).await.unwrap();
    let outbound = tokio_stream::once(reflection::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            reflection::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    });
    let status = reflection::server_reflection_client::ServerReflectionClient::new(channel)
        .server_reflection_info(outbound)
        .await
        .expect_err("no reflection service is served");
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
    server.stop().await;
}

#[tokio::test]
async fn reflection_v1alpha_answers_too() {
    use tonic_reflection::pb::v1alpha::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let server = RunningServer::start(stub("alpha.example.com"));
    let channel = socket_client::connect(&server.path, TIMEOUT).await.unwrap();
    let outbound = tokio_stream::once(ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    });
    let mut inbound = ServerReflectionClient::new(channel)
        .server_reflection_info(outbound)
        .await
        .unwrap()
        .into_inner();
    let response = inbound.next().await.unwrap().unwrap().message_response;
    let Some(MessageResponse::ListServicesResponse(list)) = response else {
        panic!("expected a service list, got {response:?}");
    };
    assert!(list.service.iter().any(|s| s.name == "csi.v1.Identity"));
    server.stop().await;
}

#[tokio::test]
async fn reflection_serves_descriptors_with_the_csi_secret_option() {
    use reflection::{
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let server = RunningServer::start(stub("descriptors.example.com"));
    let MessageResponse::FileDescriptorResponse(files) = reflect(
        &server.path,
        MessageRequest::FileContainingSymbol("csi.v1.CreateVolumeRequest".into()),
    )
    .await
    else {
        panic!("expected file descriptors");
    };
    // Field option 1059 = true, encoded as key (1059 << 3 | varint) then 1.
    let mut needle = Vec::new();
    prost::encoding::encode_key(1059, prost::encoding::WireType::Varint, &mut needle);
    needle.push(1);
    let carries_secret_marker = files
        .file_descriptor_proto
        .iter()
        .any(|file| file.windows(needle.len()).any(|w| w == needle.as_slice()));
    assert!(carries_secret_marker, "csi_secret options were stripped");
    server.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_lets_an_in_flight_call_finish_then_removes_the_socket() {
    let (entered_tx, mut entered) = mpsc::unbounded_channel();
    let release = Arc::new(Notify::new());
    let mut server = RunningServer::start(StubIdentity {
        name: "graceful.example.com".into(),
        gate: Some(ProbeGate {
            entered: entered_tx,
            release: release.clone(),
        }),
    });
    let mut client = server.client().await;
    let in_flight = tokio::spawn(async move { client.probe(ProbeRequest {}).await });
    tokio::time::timeout(TIMEOUT, entered.recv())
        .await
        .expect("probe reached the server")
        .unwrap();

    server.begin_shutdown();
    // The server must keep running while the call is still in flight.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !server.task.is_finished(),
        "server quit with a call in flight"
    );

    release.notify_one();
    let reply = tokio::time::timeout(TIMEOUT, in_flight)
        .await
        .expect("in-flight call completes")
        .unwrap()
        .expect("in-flight call succeeds")
        .into_inner();
    assert_eq!(reply.ready, Some(true));

    let path = server.path.clone();
    tokio::time::timeout(TIMEOUT, &mut server.task)
        .await
        .expect("server stops once drained")
        .unwrap()
        .unwrap();
    assert!(!path.exists(), "socket file left behind after shutdown");
}

#[tokio::test]
async fn stale_socket_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("csi.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(is_socket(&path), "test setup: stale socket exists");

    let server = RunningServer::start_at(dir, path, stub("stale.example.com"));
    let reply = server
        .client()
        .await
        .get_plugin_info(GetPluginInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.name, "stale.example.com");
    server.stop().await;
}

#[test]
fn regular_file_at_the_socket_path_is_refused_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("csi.sock");
    fs::write(&path, b"precious data").unwrap();

    let err = PrivateSocket::bind(&path).unwrap_err();
    assert!(
        matches!(&err, AdapterError::NotASocket { kind: "regular file", path: p } if *p == path),
        "{err:?}"
    );
    assert_eq!(fs::read(&path).unwrap(), b"precious data");
    let leftovers = fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(
        leftovers, 1,
        "nothing but the file should be in the directory"
    );
}

#[test]
fn directory_at_the_socket_path_is_refused_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("csi.sock");
    fs::create_dir(&path).unwrap();
    fs::write(path.join("inside"), b"x").unwrap();

    let err = PrivateSocket::bind(&path).unwrap_err();
    assert!(
        matches!(
            err,
            AdapterError::NotASocket {
                kind: "directory",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(path.join("inside").exists());
}

#[test]
fn symlink_at_the_socket_path_is_refused_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target");
    fs::write(&target, b"x").unwrap();
    let path = dir.path().join("csi.sock");
    std::os::unix::fs::symlink(&target, &path).unwrap();

    let err = PrivateSocket::bind(&path).unwrap_err();
    assert!(
        matches!(
            err,
            AdapterError::NotASocket {
                kind: "symbolic link",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[tokio::test]
async fn shutdown_leaves_a_socket_that_a_newer_instance_took_over() {
    let keep = tempfile::tempdir().unwrap();
    let path = keep.path().join("csi.sock");
    let old = RunningServer::start_at(
        tempfile::tempdir().unwrap(),
        path.clone(),
        stub("old.example.com"),
    );
    // A second instance starting on the same path treats the old socket as
    // stale and puts its own in place.
    let newer = PrivateSocket::bind(&path).unwrap();

    old.stop().await;
    assert!(is_socket(&path), "the newer instance's socket was removed");
    drop(newer);
    assert!(!path.exists(), "dropping the unserved socket removes it");
}

#[tokio::test]
async fn unknown_advertised_service_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let socket = PrivateSocket::bind(dir.path().join("csi.sock")).unwrap();
    let router = Server::builder().add_service(IdentityServer::new(stub("x.example.com")));
    let err = server::serve(socket, router, Some(&["csi.v1.Typo"]), async {})
        .await
        .unwrap_err();
    assert!(
        matches!(&err, AdapterError::UnknownService { name } if name == "csi.v1.Typo"),
        "{err:?}"
    );
    assert!(!dir.path().join("csi.sock").exists());
}

#[tokio::test]
async fn connecting_to_a_missing_socket_fails_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.sock");
    let err = socket_client::connect(&path, TIMEOUT).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains("No such file"), "{text}");
}

#[test]
fn socket_path_of_the_maximum_length_binds() {
    use k8s_adapter::endpoint::{MAX_SOCKET_PATH_BYTES, SocketEndpoint};
    let dir = tempfile::tempdir().unwrap();
    let name = "csi.sock";
    let base = dir.path().display().to_string();
    let filler = MAX_SOCKET_PATH_BYTES - base.len() - 2 - name.len();
    let path = format!("{base}/{}/{name}", "d".repeat(filler));
    assert_eq!(path.len(), MAX_SOCKET_PATH_BYTES);

    let endpoint = SocketEndpoint::parse(&format!("unix://{path}")).unwrap();
    let socket = PrivateSocket::bind(endpoint.path()).unwrap();
    assert!(is_socket(Path::new(&path)));
    drop(socket);
    assert!(!Path::new(&path).exists());
}
