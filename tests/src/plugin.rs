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
    /// Logs of earlier runs of this plugin (before [`PluginProcess::restart`]).
    earlier_logs: String,
    command: CommandSpec,
    _keeper: mpsc::Sender<()>,
}

/// How a plugin was started, to start it again the same way.
#[derive(Debug, Clone)]
struct CommandSpec {
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl CommandSpec {
    fn spawn(&self) -> (Child, Captured, mpsc::Sender<()>) {
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            command.env(k, v);
        }
        let (mut child, keeper) = spawn_kept(command);
        let stderr = Captured::read_from(child.stderr.take().expect("piped stderr"));
        (child, stderr, keeper)
    }
}

/// How to start a plugin with [`PluginProcess::start_with`].
#[derive(Debug, Clone)]
pub struct PluginOptions {
    /// Its `--state-dir`; a fresh directory below serve's temp dir when `None`. Give the
    /// same directory to a second process to start it "again" on the state of the first.
    pub state_dir: Option<PathBuf>,
    /// `--log-level`.
    pub log_level: String,
    /// The node plugin's `--node-id`.
    pub node_id: String,
    /// Extra environment (e.g. `PFS_CSI_SETTINGS_lustre__commandTimeoutSeconds`).
    pub env: Vec<(String, String)>,
}

impl Default for PluginOptions {
    fn default() -> Self {
        Self {
            state_dir: None,
            log_level: "debug".into(),
            node_id: EXTRA_NODE_ID.into(),
            env: Vec::new(),
        }
    }
}

/// The node id of node plugins started here.
pub const EXTRA_NODE_ID: &str = "extra-node";

static NEXT: AtomicUsize = AtomicUsize::new(0);

impl PluginProcess {
    /// Starts `role` on `socket` with `serve`'s configuration, simulator and driver name,
    /// its own state directory below `serve`'s temp dir.
    pub fn start(role: Role, serve: &Serve, socket: &Path) -> PluginProcess {
        Self::start_with(role, serve, socket, PluginOptions::default())
    }

    /// Starts `role` on `socket` with `serve`'s configuration and simulator, as `options`
    /// say.
    pub fn start_with(
        role: Role,
        serve: &Serve,
        socket: &Path,
        options: PluginOptions,
    ) -> PluginProcess {
        let layout = serve.layout();
        let state = options.state_dir.clone().unwrap_or_else(|| {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            serve.base().join(format!("extra-plugin-{n}"))
        });
        let mut args = vec![
            format!("--endpoint=unix://{}", socket.display()),
            format!("--config={}", layout.driver_config().display()),
            format!("--state-dir={}", state.display()),
            format!("--kubelet-dir={}", layout.kubelet_dir().display()),
            format!("--log-level={}", options.log_level),
        ];
        if role == Role::Node {
            args.push(format!("--node-id={}", options.node_id));
        }
        if layout.connauth_file().exists() {
            args.push(format!(
                "--beegfs-connauth-file={}",
                layout.connauth_file().display()
            ));
        }
        let mut env = vec![(
            pfs_sim::state::ROOT_ENV.to_string(),
            layout.sim_root().display().to_string(),
        )];
        env.extend(options.env.iter().cloned());
        let command = CommandSpec {
            program: bin(match role {
                Role::Controller => CONTROLLER,
                Role::Node => NODE,
            }),
            args,
            env,
        };
        let (child, stderr, keeper) = command.spawn();
        PluginProcess {
            child,
            socket: socket.to_path_buf(),
            state,
            stderr,
            earlier_logs: String::new(),
            command,
            _keeper: keeper,
        }
    }

    /// Kills the plugin with SIGKILL (no chance to clean up: its socket, mounts and files
    /// stay as they were) and reaps it; returns how it ended.
    pub fn kill9(&mut self) -> Option<ExitStatus> {
        let _ = self.child.kill();
        let status = self.child.wait().ok();
        // Whatever it wrote before dying is kept for the test's messages.
        self.stderr.wait_closed(Duration::from_secs(5));
        status
    }

    /// Kills the plugin with SIGKILL when it still runs, then starts it again with the
    /// same command line, environment, socket and state directory. Call
    /// [`Self::wait_ready`] afterwards.
    pub fn restart(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill9();
        } else {
            let _ = self.child.wait();
            self.stderr.wait_closed(Duration::from_secs(5));
        }
        self.earlier_logs.push_str(&self.stderr.text());
        self.earlier_logs.push_str("--- restarted ---\n");
        let (child, stderr, keeper) = self.command.spawn();
        self.child = child;
        self.stderr = stderr;
        self._keeper = keeper;
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

    /// Whether the process still runs (not exited, not killed).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
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

    /// The plugin's log so far (of every run, when it was restarted).
    pub fn logs(&self) -> String {
        format!("{}{}", self.earlier_logs, self.stderr.text())
    }

    /// The log of the current run only.
    pub fn current_logs(&self) -> String {
        self.stderr.text()
    }
}

impl Drop for PluginProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
