//! `pfs-csi-sim serve` as a test fixture.
//!
//! [`Serve::start`] runs the serve command in a fresh temp dir, `/tmp/pfs-csi-tests-XXXX/`:
//! `serve/` is serve's state directory (simulator, configuration, Lustre mount points; test
//! staging and target paths go to `serve/pods/`, see [`Serve::pod_path`]), the sockets are
//! `controller.sock` and `node.sock`. Nothing outlives the fixture:
//! - serve stops on drop (SIGTERM, then SIGKILL), stopping the plugins and unmounting and
//!   removing what it made; the drop then unmounts anything still mounted in the temp dir
//!   and removes it;
//! - serve is started from a thread that lives as long as the fixture and has
//!   `PR_SET_PDEATHSIG` set, so even a killed test process takes serve (and through it the
//!   plugins) down, and serve cleans up;
//! - [`shared`] fixtures (one per test file) are stopped by an `atexit` handler when the test
//!   process exits.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, Once, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use pfs_sim::faults::FaultRule;
use pfs_sim::serve::config::Layout;
use pfs_sim::state::StateRoot;
use tonic::transport::Channel;

use crate::binaries::{SIM, bin};
use crate::csi::{self, csi::v1 as pb};
use crate::mounts::{mounted_below, require_root, unmount_under};
use crate::output::Captured;
use crate::pfsctl::{CliOutput, pfsctl};

/// How long serve may take to report ready (debug builds on a busy machine).
const READY_TIMEOUT: Duration = Duration::from_secs(180);
/// How long serve may take to stop and clean up after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// How to start serve.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// `lustre`, `beegfs7` or `beegfs8`.
    pub filesystem: String,
    /// How many simulated filesystems.
    pub filesystems: usize,
    /// Lustre zones, one cluster each.
    pub zones: Vec<String>,
    /// YAML merged over the generated driver configuration.
    pub overlay: Option<String>,
    /// The plugins' log level.
    pub log_level: String,
    /// The node id.
    pub node_id: String,
    /// Extra environment of serve (and so of the plugins).
    pub env: Vec<(String, String)>,
}

impl ServeOptions {
    /// One filesystem of `kind`, log level `debug`.
    pub fn new(kind: &str) -> Self {
        Self {
            filesystem: kind.to_string(),
            filesystems: 1,
            zones: Vec::new(),
            overlay: None,
            log_level: "debug".into(),
            node_id: "sim-node".into(),
            env: Vec::new(),
        }
    }

    /// Simulated Lustre.
    pub fn lustre() -> Self {
        Self::new("lustre")
    }

    /// Simulated BeeGFS 7.
    pub fn beegfs7() -> Self {
        Self::new("beegfs7")
    }

    /// Simulated BeeGFS 8.
    pub fn beegfs8() -> Self {
        Self::new("beegfs8")
    }

    /// Sets the overlay YAML.
    pub fn overlay(mut self, yaml: &str) -> Self {
        self.overlay = Some(yaml.to_string());
        self
    }

    /// Sets how many filesystems.
    pub fn filesystems(mut self, count: usize) -> Self {
        self.filesystems = count;
        self
    }

    /// Sets the Lustre zones.
    pub fn zones(mut self, zones: &[&str]) -> Self {
        self.zones = zones.iter().map(|z| z.to_string()).collect();
        self
    }

    /// Sets the log level.
    pub fn log_level(mut self, level: &str) -> Self {
        self.log_level = level.to_string();
        self
    }
}

/// A running `pfs-csi-sim serve`.
pub struct Serve {
    base: PathBuf,
    layout: Layout,
    options: ServeOptions,
    child: Mutex<Option<Child>>,
    pid: u32,
    stdout: Captured,
    stderr: Captured,
    keeper: Mutex<Option<mpsc::Sender<()>>>,
}

/// Starts `command` from a thread that lives until the returned sender is dropped, with
/// `PR_SET_PDEATHSIG` so the child gets SIGTERM when that thread ends.
pub fn spawn_kept(mut command: Command) -> (Child, mpsc::Sender<()>) {
    let program = command.get_program().to_string_lossy().into_owned();
    let (child_tx, child_rx) = mpsc::channel();
    let (keep_tx, keep_rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let spawned = command.spawn();
        let ok = spawned.is_ok();
        let _ = child_tx.send(spawned);
        if ok {
            // Lives until the fixture lets go (or the process exits).
            let _ = keep_rx.recv();
        }
    });
    let child = child_rx
        .recv()
        .expect("the keeper thread answers")
        .unwrap_or_else(|e| panic!("starting {program}: {e}"));
    (child, keep_tx)
}

impl Serve {
    /// Starts serve and waits until it reports ready; panics with its output otherwise.
    pub fn start(options: ServeOptions) -> Serve {
        require_root();
        let base = tempfile::Builder::new()
            .prefix("pfs-csi-tests-")
            .tempdir()
            .expect("temp dir")
            .keep();
        let dir = base.join("serve");
        let mut command = Command::new(bin(SIM));
        command
            .arg("serve")
            .arg("--filesystem")
            .arg(&options.filesystem)
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
            .arg("--node-id")
            .arg(&options.node_id)
            .arg("--log-level")
            .arg(&options.log_level)
            .arg("--filesystems")
            .arg(options.filesystems.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if !options.zones.is_empty() {
            command.arg(format!("--zones={}", options.zones.join(",")));
        }
        if let Some(yaml) = &options.overlay {
            let path = base.join("overlay.yaml");
            std::fs::write(&path, yaml).expect("write the overlay");
            command.arg("--config-overlay").arg(path);
        }
        for (k, v) in &options.env {
            command.env(k, v);
        }
        let (mut child, keeper) = spawn_kept(command);
        let stdout = Captured::read_from(child.stdout.take().expect("piped stdout"));
        let stderr = Captured::read_from(child.stderr.take().expect("piped stderr"));
        let pid = child.id();
        let serve = Serve {
            layout: Layout::new(&dir),
            base,
            options,
            child: Mutex::new(Some(child)),
            pid,
            stdout,
            stderr,
            keeper: Mutex::new(Some(keeper)),
        };
        if !serve
            .stdout
            .wait_for_line(pfs_sim::serve::READY_LINE, READY_TIMEOUT)
        {
            panic!(
                "pfs-csi-sim serve did not become ready\n--- stdout ---\n{}\n--- stderr (tail) ---\n{}",
                serve.stdout.text(),
                serve.stderr.tail(80)
            );
        }
        serve
    }

    /// serve's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The options it was started with.
    pub fn options(&self) -> &ServeOptions {
        &self.options
    }

    /// serve's state directory layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The temp dir holding everything.
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// The controller socket.
    pub fn controller_socket(&self) -> PathBuf {
        self.base.join("controller.sock")
    }

    /// The node socket.
    pub fn node_socket(&self) -> PathBuf {
        self.base.join("node.sock")
    }

    /// `unix://` endpoint of the controller.
    pub fn controller_endpoint(&self) -> String {
        format!("unix://{}", self.controller_socket().display())
    }

    /// `unix://` endpoint of the node.
    pub fn node_endpoint(&self) -> String {
        format!("unix://{}", self.node_socket().display())
    }

    /// A Controller client.
    pub async fn controller(&self) -> pb::controller_client::ControllerClient<Channel> {
        csi::controller(&self.controller_socket()).await
    }

    /// A Node client.
    pub async fn node(&self) -> pb::node_client::NodeClient<Channel> {
        csi::node(&self.node_socket()).await
    }

    /// An Identity client of the controller.
    pub async fn controller_identity(&self) -> pb::identity_client::IdentityClient<Channel> {
        csi::identity(&self.controller_socket()).await
    }

    /// An Identity client of the node.
    pub async fn node_identity(&self) -> pb::identity_client::IdentityClient<Channel> {
        csi::identity(&self.node_socket()).await
    }

    /// A path for staging or publishing, below serve's state directory (so serve's own
    /// cleanup covers it); not created.
    pub fn pod_path(&self, name: &str) -> PathBuf {
        self.layout.root().join("pods").join(name)
    }

    /// The simulator's state root.
    pub fn sim_root(&self) -> StateRoot {
        StateRoot::new(self.layout.sim_root())
    }

    /// Adds a fault rule to the simulator.
    pub fn fault(&self, rule: FaultRule) {
        pfs_sim::faults::add(&self.sim_root(), rule).expect("add a fault rule");
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) {
        pfs_sim::faults::clear(&self.sim_root()).expect("clear the fault rules");
    }

    /// Runs a simulated tool (`lfs`, `beegfs-ctl`...) against the simulator's state.
    pub fn sim_tool(&self, tool: &str, args: &[&str]) -> std::process::Output {
        Command::new(self.layout.tool(tool))
            .args(args)
            .env(pfs_sim::state::ROOT_ENV, self.layout.sim_root())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run simulated {tool}: {e}"))
    }

    /// The simulator's call log (one JSON line per tool run).
    pub fn calls_log(&self) -> String {
        std::fs::read_to_string(self.sim_root().calls_log()).unwrap_or_default()
    }

    /// The data directory of simulated filesystem `name` (Lustre fsname or BeeGFS host).
    pub fn fs_data_dir(&self, kind: pfs_sim::state::FsKind, name: &str) -> PathBuf {
        self.sim_root().fs_dir(kind, name).join("data")
    }

    /// serve's standard error so far (its own notes and both plugins' logs).
    pub fn logs(&self) -> String {
        self.stderr.text()
    }

    /// serve's standard output so far.
    pub fn stdout(&self) -> String {
        self.stdout.text()
    }

    /// Runs pfsctl against the controller.
    pub fn pfsctl_controller(&self, args: &[&str]) -> CliOutput {
        pfsctl(&self.controller_endpoint(), args)
    }

    /// Runs pfsctl against the node.
    pub fn pfsctl_node(&self, args: &[&str]) -> CliOutput {
        pfsctl(&self.node_endpoint(), args)
    }

    /// Sends SIGTERM and waits (bounded) for serve to stop; SIGKILL after the bound.
    /// Returns the exit code, `None` when it had to be killed or was already reaped.
    pub fn stop(&self) -> Option<i32> {
        let mut slot = self.child.lock().unwrap_or_else(|e| e.into_inner());
        let mut child = slot.take()?;
        if matches!(child.try_wait(), Ok(None)) {
            let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGTERM);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    // Everything serve and the plugins wrote is read before anyone looks.
                    self.stdout.wait_closed(Duration::from_secs(10));
                    self.stderr.wait_closed(Duration::from_secs(10));
                    return status.code();
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return None;
                }
            }
        }
    }

    /// Stops serve, then unmounts whatever is left below the temp dir and removes it.
    fn teardown(&self) {
        self.stop();
        let left = unmount_under(&self.base).unwrap_or_else(|_| mounted_below(&self.base));
        if left.is_empty() {
            let _ = std::fs::remove_dir_all(&self.base);
        } else {
            eprintln!(
                "pfs-csi-tests: still mounted below {}, left in place: {left:?}",
                self.base.display()
            );
        }
        self.keeper.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- pfs-csi-sim serve ({}) log tail ---\n{}",
                self.options.filesystem,
                self.stderr.tail(60)
            );
        }
        self.teardown();
    }
}

/// Shared fixtures to stop when the process exits.
static SHARED: Mutex<Vec<&'static Serve>> = Mutex::new(Vec::new());

extern "C" fn stop_shared_fixtures() {
    let all: Vec<&'static Serve> = SHARED.lock().map(|v| v.clone()).unwrap_or_default();
    for serve in all {
        serve.teardown();
    }
}

/// The fixture in `slot`, started with `options()` by the first test that asks; stopped
/// and cleaned up when the test process exits.
pub fn shared(
    slot: &'static OnceLock<Serve>,
    options: impl FnOnce() -> ServeOptions,
) -> &'static Serve {
    static REGISTER: Once = Once::new();
    let serve = slot.get_or_init(|| {
        REGISTER.call_once(|| {
            // SAFETY: registering a plain extern "C" function.
            unsafe {
                libc::atexit(stop_shared_fixtures);
            }
        });
        Serve::start(options())
    });
    let mut all = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if !all.iter().any(|s| std::ptr::eq(*s, serve)) {
        all.push(serve);
    }
    serve
}
