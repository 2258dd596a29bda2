//! Running `pfs-csi-sim serve` (a simulated filesystem with the real controller and node
//! plugins) for the bench, and launching extra plugin processes on its configuration.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use pfs_sim::serve::config::Layout;
use pfs_sim::serve::{CONTROLLER_BIN, NODE_BIN, READY_LINE};
use tonic::transport::Channel;

use crate::error::{BenchError, Result};
use k8s_adapter::proto::csi::v1 as pb;

/// The simulator executable.
pub const SIM_BIN: &str = "pfs-csi-sim";
/// How long serve may take to report ready.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a stopped process may take to exit before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Connect timeout of the bench's gRPC channels.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The prefix of serve's summary line naming the CreateVolume parameters.
const PARAMETERS_PREFIX: &str = "CreateVolume parameters:";

/// Asks the kernel to send SIGTERM to the child when the thread that started it exits:
/// the bench starts every child from its main thread, which lives as long as the run.
fn die_with_parent(command: &mut Command) {
    // SAFETY: prctl is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Sends SIGTERM, waits up to [`STOP_TIMEOUT`], then kills. Returns the exit status text.
/// Waits asynchronously: the bench's own gRPC connections to the process must be able to
/// close meanwhile, or a plugin's graceful shutdown would wait for them.
pub async fn stop_child(child: &mut Child) -> String {
    if let Ok(Some(status)) = child.try_wait() {
        return format!("had exited ({status})");
    }
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    let deadline = Instant::now() + STOP_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return format!("stopped ({status})"),
            Ok(None) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(1)).await
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return "killed".into();
            }
        }
    }
}

/// The CreateVolume parameters in serve's summary line (`none needed`, or `k=v k=v`).
pub fn parse_parameters(line: &str) -> Option<HashMap<String, String>> {
    let rest = line.strip_prefix(PARAMETERS_PREFIX)?.trim();
    if rest == "none needed" {
        return Some(HashMap::new());
    }
    rest.split_whitespace()
        .map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (!k.is_empty()).then(|| (k.to_string(), v.to_string()))
        })
        .collect()
}

/// A running `pfs-csi-sim serve`.
pub struct Served {
    /// `lustre`, `beegfs7` or `beegfs8`.
    pub filesystem: String,
    child: Child,
    base: PathBuf,
    layout: Layout,
    bin_dir: PathBuf,
    log_level: String,
    /// CreateVolume parameters serve says to pass.
    pub parameters: HashMap<String, String>,
    /// The controller plugin's pid.
    pub controller_pid: u32,
    /// The node plugin's pid.
    pub node_pid: u32,
}

impl Served {
    /// Starts serve for `filesystem` below `base` (which must exist and be empty of a
    /// previous run), with the plugins' logs in `base/serve.log`; waits until ready.
    pub async fn start(
        filesystem: &str,
        base: &Path,
        bin_dir: &Path,
        log_level: &str,
    ) -> Result<Served> {
        let sim = bin_dir.join(SIM_BIN);
        for bin in [SIM_BIN, CONTROLLER_BIN, NODE_BIN] {
            if !bin_dir.join(bin).is_file() {
                return Err(BenchError::Setup(format!(
                    "{bin} not found in {}: build it with `scripts/build-release.sh -p pfs-sim`, or give --bin-dir",
                    bin_dir.display()
                )));
            }
        }
        let log_path = base.join("serve.log");
        let log =
            std::fs::File::create(&log_path).map_err(|e| BenchError::io("create", &log_path, e))?;
        let dir = base.join("serve");
        let mut command = Command::new(&sim);
        command
            .arg("serve")
            .arg(format!("--filesystem={filesystem}"))
            .arg("--state-dir")
            .arg(&dir)
            .arg(format!(
                "--controller-endpoint=unix://{}",
                base.join("controller.sock").display()
            ))
            .arg(format!(
                "--node-endpoint=unix://{}",
                base.join("node.sock").display()
            ))
            .arg(format!("--bin-dir={}", bin_dir.display()))
            .arg(format!("--log-level={log_level}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        die_with_parent(&mut command);
        let mut child = command
            .spawn()
            .map_err(|e| BenchError::io("start", &sim, e))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut parameters = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line == READY_LINE => break,
                Ok(line) => {
                    if let Some(p) = parse_parameters(&line) {
                        parameters = Some(p);
                    }
                }
                Err(_) => {
                    let status = stop_child(&mut child).await;
                    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(30).collect();
                    return Err(BenchError::Setup(format!(
                        "pfs-csi-sim serve did not become ready ({status}); its log ends:\n{}",
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    )));
                }
            }
        }
        let pid = child.id();
        let find = |name: &str| -> Result<u32> {
            match crate::procfs::children_named(pid, name).as_slice() {
                [one] => Ok(*one),
                other => Err(BenchError::Setup(format!(
                    "expected one {name} under serve (pid {pid}), found {other:?}"
                ))),
            }
        };
        let controller_pid = find(CONTROLLER_BIN)?;
        let node_pid = find(NODE_BIN)?;
        Ok(Served {
            filesystem: filesystem.to_string(),
            child,
            base: base.to_path_buf(),
            layout: Layout::new(dir),
            bin_dir: bin_dir.to_path_buf(),
            log_level: log_level.to_string(),
            parameters: parameters.unwrap_or_default(),
            controller_pid,
            node_pid,
        })
    }

    /// The controller's socket.
    pub fn controller_socket(&self) -> PathBuf {
        self.base.join("controller.sock")
    }

    /// The node plugin's socket.
    pub fn node_socket(&self) -> PathBuf {
        self.base.join("node.sock")
    }

    /// A path for pods' staging and target directories (below serve's state directory,
    /// which serve cleans up).
    pub fn pod_path(&self, name: &str) -> PathBuf {
        self.layout.root().join("pods").join(name)
    }

    /// The simulator's call log.
    pub fn calls_log(&self) -> PathBuf {
        pfs_sim::state::StateRoot::new(self.layout.sim_root()).calls_log()
    }

    /// A controller client.
    pub async fn controller(&self) -> Result<pb::controller_client::ControllerClient<Channel>> {
        Ok(pb::controller_client::ControllerClient::new(
            channel(&self.controller_socket()).await?,
        ))
    }

    /// A node client.
    pub async fn node(&self) -> Result<pb::node_client::NodeClient<Channel>> {
        Ok(pb::node_client::NodeClient::new(
            channel(&self.node_socket()).await?,
        ))
    }

    /// Starts another `role` plugin (`controller` or `node`) on serve's configuration,
    /// listening on `socket`, with its own fresh state and kubelet directories under
    /// `dir`; its output is discarded.
    pub fn launch_plugin(&self, role: &str, socket: &Path, dir: &Path) -> Result<Child> {
        let (bin, state) = match role {
            "controller" => (CONTROLLER_BIN, dir.join("state")),
            _ => (NODE_BIN, dir.join("state")),
        };
        let kubelet = dir.join("kubelet");
        for d in [&state, &kubelet] {
            std::fs::create_dir_all(d).map_err(|e| BenchError::io("create", d, e))?;
        }
        let program = self.bin_dir.join(bin);
        let mut command = Command::new(&program);
        command
            .arg(format!("--endpoint=unix://{}", socket.display()))
            .arg(format!(
                "--config={}",
                self.layout.driver_config().display()
            ))
            .arg("--driver-name=pfs-csi.io")
            .arg(format!("--kubelet-dir={}", kubelet.display()))
            .arg(format!("--state-dir={}", state.display()))
            .arg("--log-format=text")
            .arg(format!("--log-level={}", self.log_level))
            .env(pfs_sim::state::ROOT_ENV, self.layout.sim_root())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if role == "node" {
            command.arg("--node-id=bench-node");
        }
        if self.filesystem != "lustre" {
            command.arg(format!(
                "--beegfs-connauth-file={}",
                self.layout.connauth_file().display()
            ));
        }
        die_with_parent(&mut command);
        command
            .spawn()
            .map_err(|e| BenchError::io("start", &program, e))
    }

    /// Stops serve (which stops the plugins, unmounts and removes its state directory).
    pub async fn stop(mut self) -> String {
        stop_child(&mut self.child).await
    }
}

/// A channel to a plugin socket.
pub async fn channel(socket: &Path) -> Result<Channel> {
    k8s_adapter::socket_client::connect(socket, CONNECT_TIMEOUT)
        .await
        .map_err(|e| BenchError::Setup(format!("connecting to {}: {e}", socket.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn serve_parameter_lines_are_read() {
        assert_eq!(
            parse_parameters("CreateVolume parameters: none needed"),
            Some(HashMap::new())
        );
        let p = parse_parameters(
            "CreateVolume parameters: sysMgmtdHost=sim-mgmtd-1 volDirBasePath=/k8s/vols",
        )
        .unwrap();
        assert_eq!(p["sysMgmtdHost"], "sim-mgmtd-1");
        assert_eq!(p["volDirBasePath"], "/k8s/vols");
        assert_eq!(parse_parameters("CreateVolume parameters: broken"), None);
        assert_eq!(parse_parameters("ready"), None);
    }

    proptest! {
        #[test]
        fn parameters_round_trip(pairs in proptest::collection::btree_map("[a-zA-Z]{1,12}", "[a-z0-9/_.-]{0,20}", 1..5)) {
            let line = format!(
                "{PARAMETERS_PREFIX} {}",
                pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
            );
            let parsed = parse_parameters(&line).unwrap();
            prop_assert_eq!(parsed.len(), pairs.len());
            for (k, v) in &pairs {
                prop_assert_eq!(&parsed[k], v);
            }
        }
    }
}
