//! One plugin binary started directly, on the configuration and simulator of a running
//! [`Serve`], for the tests of sockets and shutdown.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::binaries::{CONTROLLER, NODE, bin};
use crate::csi::{self, csi::v1 as pb};
use crate::output::Captured;
use crate::serve::{Serve, spawn_kept};

/// Which plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `pfs-csi-controller`.
    Controller,
    /// `pfs-csi-node`.
    Node,
}

/// A running plugin process; killed on drop.
pub struct PluginProcess {
    child: Child,
    socket: PathBuf,
    state: PathBuf,
    stderr: Captured,
    _keeper: mpsc::Sender<()>,
}

/// The node id of node plugins started here.
pub const EXTRA_NODE_ID: &str = "extra-node";

static NEXT: AtomicUsize = AtomicUsize::new(0);

impl PluginProcess {
    /// Starts `role` on `socket` with `serve`'s configuration, simulator and driver name,
    /// its own state directory below `serve`'s temp dir.
    pub fn start(role: Role, serve: &Serve, socket: &Path) -> PluginProcess {
        let layout = serve.layout();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let state = serve.base().join(format!("extra-plugin-{n}"));
        let mut command = Command::new(bin(match role {
            Role::Controller => CONTROLLER,
            Role::Node => NODE,
        }));
        command
            .arg(format!("--endpoint=unix://{}", socket.display()))
            .arg(format!("--config={}", layout.driver_config().display()))
            .arg(format!("--state-dir={}", state.display()))
            .arg(format!("--kubelet-dir={}", layout.kubelet_dir().display()))
            .arg("--log-level=debug")
            .env(pfs_sim::state::ROOT_ENV, layout.sim_root())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if role == Role::Node {
            command.arg(format!("--node-id={EXTRA_NODE_ID}"));
        }
        if layout.connauth_file().exists() {
            command.arg(format!(
                "--beegfs-connauth-file={}",
                layout.connauth_file().display()
            ));
        }
        let (mut child, keeper) = spawn_kept(command);
        let stderr = Captured::read_from(child.stderr.take().expect("piped stderr"));
        PluginProcess {
            child,
            socket: socket.to_path_buf(),
            state,
            stderr,
            _keeper: keeper,
        }
    }

    /// Waits until the plugin answers Probe with ready; panics with its log otherwise.
    pub async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("plugin exited ({status}) during start-up:\n{}", self.logs());
            }
            if self.socket.exists() {
                let probe = async {
                    let channel = csi::try_channel(&self.socket, Duration::from_secs(2))
                        .await
                        .ok()?;
                    pb::identity_client::IdentityClient::new(channel)
                        .probe(pb::ProbeRequest {})
                        .await
                        .ok()
                };
                if let Some(answer) = probe.await
                    && answer.into_inner().ready != Some(false)
                {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "plugin not ready in time:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Its `--state-dir`.
    pub fn state_dir(&self) -> &Path {
        &self.state
    }

    /// A Node client.
    pub async fn node(&self) -> pb::node_client::NodeClient<tonic::transport::Channel> {
        csi::node(&self.socket).await
    }

    /// The socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// A Controller client.
    pub async fn controller(
        &self,
    ) -> pb::controller_client::ControllerClient<tonic::transport::Channel> {
        csi::controller(&self.socket).await
    }

    /// An Identity client.
    pub async fn identity(&self) -> pb::identity_client::IdentityClient<tonic::transport::Channel> {
        csi::identity(&self.socket).await
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` to the plugin.
    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).expect("signal the plugin");
    }

    /// Waits up to `timeout` for the plugin to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The plugin's log so far.
    pub fn logs(&self) -> String {
        self.stderr.text()
    }
}

impl Drop for PluginProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
