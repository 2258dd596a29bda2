//! Serving a tonic router on a private unix socket.
//!
//! Shaped like mini-redis: [`PrivateSocket::bind`] creates the socket,
//! [`serve`] runs a router on it until a shutdown future completes, so
//! tests start the real server on a temporary socket. [`serve_endpoint`]
//! does both for the binaries, and [`shutdown_signal`] gives them the
//! SIGTERM/SIGINT future.
//!
//! ```no_run
//! # async fn run() -> Result<(), k8s_adapter::AdapterError> {
//! use k8s_adapter::{endpoint::SocketEndpoint, server};
//! let endpoint: SocketEndpoint = "unix:///csi/csi.sock".parse()?;
//! let router = tonic::transport::Server::builder()
//!     .add_routes(tonic::service::Routes::default());
//! let served = ["csi.v1.Identity", "csi.v1.Node"];
//! server::serve_endpoint(&endpoint, router, Some(&served), server::shutdown_signal()?).await
//! # }
//! ```

use std::{
    fs,
    future::Future,
    io,
    os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
};

use tokio_stream::wrappers::UnixListenerStream;
use tonic::{
    body::Body,
    codegen::{Body as HttpBody, Bytes, Service, StdError, http},
    service::Routes,
    transport::server::Router,
};
use tower::Layer;
use tracing::{debug, info, warn};

use crate::{
    AdapterError,
    endpoint::SocketEndpoint,
    proto::{FILE_DESCRIPTOR_SET, SERVICE_NAMES},
};

/// Permission bits of the socket file: owner read/write only.
/// How long in-flight calls and open connections get to finish after a shutdown signal.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

pub const SOCKET_MODE: u32 = 0o600;

/// Prefix of the private directory the socket is created in before it is
/// moved into place.
const STAGING_DIR_PREFIX: &str = ".";
/// Random characters in that directory's name, and the socket's name in
/// it: kept short because socket paths are limited to 107 bytes; the staged
/// path (`<parent>/.XXXXX/s`) is no longer than `<parent>/csi.sock`.
const STAGING_DIR_RANDOM_CHARS: usize = 5;
const STAGED_SOCKET_NAME: &str = "s";

/// A unix socket bound with mode 0600 at its final path, not yet serving.
///
/// Dropping it (or the end of [`serve`]) removes the socket file again, but
/// only while the path still holds this very socket: a newer instance that
/// took the path over keeps its socket.
#[derive(Debug)]
pub struct PrivateSocket {
    listener: std::os::unix::net::UnixListener,
    file: SocketFile,
}

impl PrivateSocket {
    /// Binds a socket at `path`, readable and writable by the owner only.
    ///
    /// Creates the parent directory if needed and removes a stale socket
    /// left at `path`; refuses to remove anything that is not a socket
    /// (a regular file, a directory, a symlink).
    pub fn bind(path: impl AsRef<Path>) -> Result<Self, AdapterError> {
        let path = path.as_ref();
        if path.file_name().is_none() {
            return Err(AdapterError::InvalidEndpoint {
                endpoint: path.display().to_string(),
                reason: "the socket path must name a file".into(),
            });
        }
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        fs::create_dir_all(parent)
            .map_err(|e| AdapterError::io("create the socket directory", parent, e))?;
        remove_stale_socket(path)?;

        // The socket must never be reachable with wider permissions than
        // 0600. bind(2) creates the file with 0777 minus the umask, and the
        // umask is process-wide (changing it would race with every other
        // thread creating files), while fchmod on a socket fd does not touch
        // the file. So the socket is bound inside a fresh 0700 directory
        // that only we can traverse, chmod-ed to 0600 there, and then
        // renamed into place; rename keeps the inode, so the listener stays
        // valid, and RENAME_NOREPLACE never clobbers whatever may have
        // appeared at the final path in the meantime.
        let staging = tempfile::Builder::new()
            .prefix(STAGING_DIR_PREFIX)
            .rand_bytes(STAGING_DIR_RANDOM_CHARS)
            .permissions(fs::Permissions::from_mode(0o700))
            .tempdir_in(parent)
            .map_err(|e| AdapterError::io("create a private directory in", parent, e))?;
        let staged = staging.path().join(STAGED_SOCKET_NAME);
        let listener = std::os::unix::net::UnixListener::bind(&staged)
            .map_err(|e| AdapterError::io("bind a unix socket at", &staged, e))?;
        fs::set_permissions(&staged, fs::Permissions::from_mode(SOCKET_MODE))
            .map_err(|e| AdapterError::io("restrict the permissions of", &staged, e))?;
        nix::fcntl::renameat2(
            nix::fcntl::AT_FDCWD,
            staged.as_path(),
            nix::fcntl::AT_FDCWD,
            path,
            nix::fcntl::RenameFlags::RENAME_NOREPLACE,
        )
        .map_err(|errno| {
            AdapterError::io(
                "move the socket into place at",
                path,
                io::Error::from(errno),
            )
        })?;
        // From here on a failure must not leave the socket behind.
        let socket = SocketFile::identify(path).map(|file| Self { listener, file });
        if let Err(error) = staging.close() {
            warn!(dir = %parent.display(), %error, "cannot remove the empty staging directory");
        }
        let socket = socket?;
        debug!(path = %path.display(), "bound private unix socket");
        Ok(socket)
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.file.path
    }
}

/// Identity of the socket file we created, removed again on drop.
#[derive(Debug)]
struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    fn identify(path: &Path) -> Result<Self, AdapterError> {
        let meta = fs::symlink_metadata(path)
            .map_err(|e| AdapterError::io("inspect the new socket", path, e))?;
        Ok(Self {
            path: path.to_owned(),
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let path = self.path.display();
        match fs::symlink_metadata(&self.path) {
            // Inode numbers are reused as soon as a file is deleted, so the
            // same (dev, ino) alone does not prove the file is still ours: a
            // newer instance may have replaced it. Our listener is closed by
            // now, so a socket that still accepts connections is theirs.
            Ok(meta) if meta.dev() == self.dev && meta.ino() == self.ino => {
                match listener_state(&self.path) {
                    ListenerState::Absent => match fs::remove_file(&self.path) {
                        Ok(()) => debug!(%path, "removed unix socket"),
                        Err(error) => warn!(%path, %error, "cannot remove unix socket"),
                    },
                    ListenerState::Alive => {
                        debug!(%path, "socket path now belongs to another instance; left in place");
                    }
                    ListenerState::Unknown(error) => {
                        warn!(%path, %error, "cannot tell whether the socket is in use; left in place");
                    }
                }
            }
            Ok(_) => debug!(%path, "socket path now belongs to another instance; left in place"),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => warn!(%path, %error, "cannot inspect unix socket"),
        }
    }
}

/// Whether some process accepts connections on a unix socket path.
#[derive(Debug)]
enum ListenerState {
    /// Nobody listens: the socket is stale.
    Absent,
    /// A listener accepted (or queued) our connection attempt.
    Alive,
    /// The probe itself failed.
    Unknown(nix::Error),
}

/// Probes `path` with a non-blocking connect (it never waits on a full
/// backlog).
fn listener_state(path: &Path) -> ListenerState {
    use nix::{
        errno::Errno,
        sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket},
    };
    use std::os::fd::AsRawFd;

    let probe = || -> Result<ListenerState, nix::Error> {
        let fd = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        let addr = UnixAddr::new(path)?;
        match connect(fd.as_raw_fd(), &addr) {
            Ok(()) | Err(Errno::EAGAIN) | Err(Errno::EINPROGRESS) => Ok(ListenerState::Alive),
            Err(Errno::ECONNREFUSED) | Err(Errno::ENOENT) => Ok(ListenerState::Absent),
            Err(other) => Err(other),
        }
    };
    probe().unwrap_or_else(ListenerState::Unknown)
}

/// Removes a stale socket at `path`; anything else there is an error.
fn remove_stale_socket(path: &Path) -> Result<(), AdapterError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(AdapterError::io("inspect", path, e)),
    };
    let file_type = meta.file_type();
    if !file_type.is_socket() {
        let kind = if file_type.is_dir() {
            "directory"
        } else if file_type.is_symlink() {
            "symbolic link"
        } else if file_type.is_file() {
            "regular file"
        } else {
            "special file"
        };
        return Err(AdapterError::NotASocket {
            path: path.to_owned(),
            kind,
        });
    }
    if let ListenerState::Alive = listener_state(path) {
        warn!(
            path = %path.display(),
            "another process still listens on the socket; taking the path over"
        );
    }
    match fs::remove_file(path) {
        Ok(()) => {
            info!(path = %path.display(), "removed stale unix socket");
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(AdapterError::io("remove the stale socket", path, e)),
    }
}

/// Names under which the reflection services advertise themselves.
pub const REFLECTION_SERVICE_NAMES: [&str; 2] = [
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// Serves `router` on `socket` until `shutdown` completes.
///
/// With `reflection`, also serves gRPC reflection (v1 and v1alpha)
/// describing `csi.proto`; it advertises those services (the CSI services
/// the router really serves, e.g. `IdentityServer::<T>::NAME`) and itself.
/// When `shutdown` completes the socket stops accepting, in-flight calls run
/// to completion, then the socket file is removed.
pub async fn serve<L, ResBody, F>(
    socket: PrivateSocket,
    router: Router<L>,
    reflection: Option<&[&str]>,
    shutdown: F,
) -> Result<(), AdapterError>
where
    F: Future<Output = ()>,
    L: Layer<Routes>,
    L::Service:
        Service<http::Request<Body>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    <L::Service as Service<http::Request<Body>>>::Future: Send,
    <L::Service as Service<http::Request<Body>>>::Error: Into<StdError> + Send,
    ResBody: HttpBody<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<StdError>,
{
    // Built before the socket is taken apart: on error, `socket` drops as a
    // whole, closing the listener before its file is cleaned up.
    let router = match reflection {
        Some(services) => router
            .add_service(reflection_builder(services)?.build_v1()?)
            .add_service(reflection_builder(services)?.build_v1alpha()?),
        None => router,
    };

    let PrivateSocket { listener, file } = socket;
    let path = file.path.clone();

    // On error here the listener is dropped first, then `file` cleans up.
    let listener = listener
        .set_nonblocking(true)
        .and_then(|()| tokio::net::UnixListener::from_std(listener))
        .map_err(|e| AdapterError::io("register the socket at", &path, e))?;

    info!(path = %path.display(), "serving CSI on unix socket");
    // Graceful shutdown waits for every connection to close; a client that keeps an idle
    // connection open (or stops reading) must not hold the plugin past the grace period.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = router.serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
        let _ = stopped.await;
    });
    tokio::pin!(serving);
    let outcome = tokio::select! {
        outcome = &mut serving => outcome,
        () = shutdown => {
            let _ = stop.send(());
            match tokio::time::timeout(SHUTDOWN_GRACE, &mut serving).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    warn!(
                        grace_seconds = SHUTDOWN_GRACE.as_secs(),
                        "connections still open after the shutdown grace period; closing them"
                    );
                    Ok(())
                }
            }
        }
    };
    let result = outcome.map_err(|e| AdapterError::transport(&path, e));
    info!(path = %path.display(), "CSI server stopped");
    drop(file);
    result
}

/// Binds `endpoint` privately and serves `router` on it until `shutdown`;
/// `reflection` as for [`serve`].
pub async fn serve_endpoint<L, ResBody, F>(
    endpoint: &SocketEndpoint,
    router: Router<L>,
    reflection: Option<&[&str]>,
    shutdown: F,
) -> Result<(), AdapterError>
where
    F: Future<Output = ()>,
    L: Layer<Routes>,
    L::Service:
        Service<http::Request<Body>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    <L::Service as Service<http::Request<Body>>>::Future: Send,
    <L::Service as Service<http::Request<Body>>>::Error: Into<StdError> + Send,
    ResBody: HttpBody<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<StdError>,
{
    let socket = PrivateSocket::bind(endpoint.path())?;
    serve(socket, router, reflection, shutdown).await
}

/// A reflection builder over our descriptors advertising `services` and
/// the reflection service itself; unknown service names are refused.
fn reflection_builder(
    services: &[&str],
) -> Result<tonic_reflection::server::Builder<'static>, AdapterError> {
    let mut builder = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET);
    for name in services {
        if !SERVICE_NAMES.contains(name) {
            return Err(AdapterError::UnknownService {
                name: (*name).to_owned(),
            });
        }
        builder = builder.with_service_name(*name);
    }
    for name in REFLECTION_SERVICE_NAMES {
        builder = builder.with_service_name(name);
    }
    Ok(builder)
}

/// Listens for SIGTERM and SIGINT; the returned future completes on the
/// first of them.
///
/// The handlers are installed before this returns, so a signal that arrives
/// before the future is polled is not lost.
pub fn shutdown_signal() -> Result<impl Future<Output = ()> + Send + 'static, AdapterError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(|error| AdapterError::Signal {
        signal: "SIGTERM",
        error,
    })?;
    let mut int = signal(SignalKind::interrupt()).map_err(|error| AdapterError::Signal {
        signal: "SIGINT",
        error,
    })?;
    Ok(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        info!(signal = name, "shutting down: finishing in-flight calls");
    })
}
