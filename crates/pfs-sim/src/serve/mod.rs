//! `pfs-csi-sim serve`: a simulated filesystem with the real controller and node plugins.
//!
//! ```text
//! pfs-csi-sim serve --filesystem lustre|beegfs7|beegfs8 --state-dir DIR \
//!     --controller-endpoint unix:///PATH --node-endpoint unix:///PATH
//! ```
//!
//! 1. Creates `DIR` (when missing) and lays out ([`config::Layout`]): `sim/` (the simulator's
//!    state root), `tools/` (links to this executable under every tool name), `driver.yaml`
//!    (one EXAScaler cluster per simulated Lustre filesystem, or the BeeGFS format; the
//!    `pfsCsi` settings point every tool at `tools/`), `secrets/connauth.yaml` (BeeGFS, mode
//!    0600), `state/{controller,node}/`, `kubelet/`, `mnt/` (Lustre mount points).
//!    `--config-overlay FILE` is merged over the generated configuration (maps key by key,
//!    anything else replaced), for timeouts, quotas, node-specific configuration and such.
//! 2. Starts `pfs-csi-controller` and `pfs-csi-node` from `--bin-dir` (default: beside this
//!    executable) with `PFS_SIM_ROOT` set; each gets SIGTERM if `serve` dies
//!    (`PR_SET_PDEATHSIG`) and is killed when dropped. Their logs go to this process's
//!    standard error.
//! 3. Waits (bounded by `--ready-timeout`) until both answer Probe with ready, prints the
//!    endpoints, the simulator root, the configuration and the CreateVolume parameters to
//!    use, and a last line `ready`.
//! 4. Serves until SIGTERM or SIGINT (or until a plugin exits, which is an error), then
//!    stops the plugins (SIGTERM, `--stop-timeout`, SIGKILL), unmounts everything mounted
//!    at or below `DIR` (deepest first, lazily when busy) and removes what it made: `DIR`
//!    itself when it created it, else the entries of the layout. Nothing is removed while
//!    anything is still mounted below it.
//!
//! Lustre: CreateVolume without parameters succeeds (the only cluster, or the one a topology
//! requirement selects with `--zones`). BeeGFS: the backend has no defaults for the
//! required `sysMgmtdHost` and `volDirBasePath` parameters; `serve` prints the values to
//! pass.
//!
//! Mounts are made in the caller's mount namespace, not a private one, so a shell or a test
//! can use the published target paths directly; only mounts below `DIR` are cleaned up,
//! so keep staging and target paths there. If `serve` itself is killed with SIGKILL, the
//! plugins still get SIGTERM, but nothing is unmounted: [`cleanup::unmount_under`] (or
//! `umount` of each mount below `DIR`, deepest first) does it.

pub mod cleanup;
pub mod config;
mod plugins;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use k8s_adapter::endpoint::SocketEndpoint;
use tokio::signal::unix::{SignalKind, signal};

use crate::error::{Result, SimError};
use crate::projects::ProjectBackend;
use crate::state::{FsKind, FsRecord, StateRoot, StoragePool, write_file_atomic};
use crate::tools::Tool;
use config::{Layout, ServedFs, SimFilesystem};
use plugins::Plugin;

/// The controller binary's file name.
pub const CONTROLLER_BIN: &str = "pfs-csi-controller";
/// The node binary's file name.
pub const NODE_BIN: &str = "pfs-csi-node";
/// The last line `serve` prints once both plugins are ready.
pub const READY_LINE: &str = "ready";

/// Log format of the plugins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The flags of `pfs-csi-sim serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// The simulated filesystem.
    #[arg(long, value_enum)]
    pub filesystem: ServedFs,
    /// Directory for everything serve makes (created if missing; must not hold a previous
    /// run's files).
    #[arg(long)]
    pub state_dir: PathBuf,
    /// The controller plugin's socket (unix:///PATH).
    #[arg(long)]
    pub controller_endpoint: String,
    /// The node plugin's socket (unix:///PATH).
    #[arg(long)]
    pub node_endpoint: String,
    /// The node plugin's node id.
    #[arg(long, default_value = "sim-node")]
    pub node_id: String,
    /// The CSI driver name both plugins report.
    #[arg(long, default_value = "pfs-csi.io")]
    pub driver_name: String,
    /// Where pfs-csi-controller and pfs-csi-node are (default: beside this executable).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// The plugins' log format.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// The plugins' log level or filter.
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// How many simulated filesystems (Lustre clusters or BeeGFS management hosts).
    #[arg(long, default_value_t = 1)]
    pub filesystems: usize,
    /// Lustre: one cluster per zone, in order (topology.exa.csi.ddn.com/zone).
    #[arg(long, value_delimiter = ',')]
    pub zones: Vec<String>,
    /// A YAML file merged over the generated driver configuration.
    #[arg(long)]
    pub config_overlay: Option<PathBuf>,
    /// Seconds to wait for both plugins to answer Probe with ready.
    #[arg(long, default_value_t = 60)]
    pub ready_timeout: u64,
    /// Seconds each plugin gets to exit after SIGTERM before it is killed.
    #[arg(long, default_value_t = 15)]
    pub stop_timeout: u64,
}

/// Writes a line to standard error, ignoring failures (the reader may be gone at shutdown).
fn note(message: &str) {
    let _ = writeln!(std::io::stderr(), "pfs-csi-sim serve: {message}");
}

/// Writes lines to standard output, ignoring failures.
fn say(lines: &[String]) {
    let mut out = std::io::stdout().lock();
    for line in lines {
        let _ = writeln!(out, "{line}");
    }
    let _ = out.flush();
}

/// Runs `serve` to completion; returns the process exit code.
pub fn run(args: ServeArgs) -> Result<i32> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| SimError::Serve(format!("starting the async runtime: {e}")))?;
    runtime.block_on(serve(args))
}

/// What serve made, so it can remove exactly that.
struct Made {
    layout: Layout,
    created_root: bool,
    sockets: Vec<PathBuf>,
}

impl Made {
    /// Unmounts below the state directory and removes what was made; the problems found.
    fn clean(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let root = self.layout.root();
        match cleanup::unmount_under(root) {
            Ok(left) if left.is_empty() => {}
            Ok(left) => {
                problems.push(format!(
                    "still mounted, so nothing was removed: {}",
                    left.iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                return problems;
            }
            Err(e) => {
                problems.push(format!(
                    "reading the mount table failed ({e}), so nothing was removed"
                ));
                return problems;
            }
        }
        for socket in &self.sockets {
            if std::fs::symlink_metadata(socket)
                .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
                && let Err(e) = std::fs::remove_file(socket)
            {
                problems.push(format!("removing {}: {e}", socket.display()));
            }
        }
        let targets = if self.created_root {
            vec![root.to_path_buf()]
        } else {
            self.layout.entries()
        };
        for path in targets {
            let result = match std::fs::symlink_metadata(&path) {
                Err(_) => Ok(()),
                Ok(m) if m.is_dir() => std::fs::remove_dir_all(&path),
                Ok(_) => std::fs::remove_file(&path),
            };
            if let Err(e) = result {
                problems.push(format!("removing {}: {e}", path.display()));
            }
        }
        problems
    }
}

fn endpoint_path(flag: &str, text: &str) -> Result<PathBuf> {
    SocketEndpoint::parse(text)
        .map(SocketEndpoint::into_path)
        .map_err(|e| SimError::Invalid(format!("{flag}: {e}")))
}

fn bin_dir(args: &ServeArgs) -> Result<PathBuf> {
    let dir = match &args.bin_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()
            .map_err(|e| SimError::io("locate", "current executable", e))?
            .parent()
            .map(Path::to_path_buf)
            .ok_or_else(|| SimError::Invalid("the executable has no directory".into()))?,
    };
    for bin in [CONTROLLER_BIN, NODE_BIN] {
        if !dir.join(bin).is_file() {
            return Err(SimError::Invalid(format!(
                "{bin} not found in {} (build it with `cargo build --bins`, or give --bin-dir)",
                dir.display()
            )));
        }
    }
    Ok(dir)
}

async fn serve(args: ServeArgs) -> Result<i32> {
    let controller_socket = endpoint_path("--controller-endpoint", &args.controller_endpoint)?;
    let node_socket = endpoint_path("--node-endpoint", &args.node_endpoint)?;
    if controller_socket == node_socket {
        return Err(SimError::Invalid(
            "the controller and the node need different endpoints".into(),
        ));
    }
    let bins = bin_dir(&args)?;
    let overlay = args
        .config_overlay
        .as_deref()
        .map(config::read_overlay)
        .transpose()?;
    let mut sigterm = signal(SignalKind::terminate())
        .map_err(|e| SimError::Serve(format!("installing the SIGTERM handler: {e}")))?;
    let mut sigint = signal(SignalKind::interrupt())
        .map_err(|e| SimError::Serve(format!("installing the SIGINT handler: {e}")))?;

    let root = args.state_dir.clone();
    let created_root = !root.exists();
    std::fs::create_dir_all(&root).map_err(|e| SimError::io("create", &root, e))?;
    let root = root
        .canonicalize()
        .map_err(|e| SimError::io("resolve", &root, e))?;
    let layout = Layout::new(&root);
    if let Some(old) = layout.entries().into_iter().find(|p| p.exists()) {
        return Err(SimError::Invalid(format!(
            "{} exists: the state directory holds files of an earlier run; remove them or choose another directory",
            old.display()
        )));
    }
    let made = Made {
        layout: layout.clone(),
        created_root,
        sockets: vec![controller_socket.clone(), node_socket.clone()],
    };

    let mut plugins = Vec::new();
    let outcome: Result<Stop> = async {
        let filesystems = prepare(&args, &layout, overlay)?;
        for (role, bin, socket) in [
            ("controller", CONTROLLER_BIN, &controller_socket),
            ("node", NODE_BIN, &node_socket),
        ] {
            let plugin_args = plugin_args(&args, &layout, role, socket);
            plugins.push(Plugin::spawn(
                role,
                &bins.join(bin),
                &plugin_args,
                &layout.sim_root(),
                socket.clone(),
            )?);
        }
        let deadline = Instant::now() + Duration::from_secs(args.ready_timeout);
        let ready = async {
            for plugin in plugins.iter_mut() {
                plugin.wait_ready(deadline).await?;
            }
            Ok::<(), SimError>(())
        };
        tokio::select! {
            result = ready => result?,
            _ = sigterm.recv() => return Ok(Stop::Signal("SIGTERM during start-up")),
            _ = sigint.recv() => return Ok(Stop::Signal("SIGINT during start-up")),
        }
        say(&summary(&args, &layout, &filesystems));
        let (first, rest) = plugins.split_at_mut(1);
        let (controller, node) = (&mut first[0], &mut rest[0]);
        Ok(tokio::select! {
            _ = sigterm.recv() => Stop::Signal("SIGTERM"),
            _ = sigint.recv() => Stop::Signal("SIGINT"),
            status = controller.wait() => Stop::Died("controller", status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string())),
            status = node.wait() => Stop::Died("node", status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string())),
        })
    }
    .await;

    let grace = Duration::from_secs(args.stop_timeout);
    let stops = stop_all(&mut plugins, grace).await;
    for (role, how) in stops {
        note(&format!("{role} plugin {how}"));
    }
    let problems = made.clean();
    for problem in &problems {
        note(problem);
    }
    let code = match outcome {
        Ok(Stop::Signal(why)) => {
            note(&format!("stopped on {why}; cleaned up"));
            0
        }
        Ok(Stop::Died(role, status)) => {
            note(&format!("the {role} plugin exited unexpectedly ({status})"));
            1
        }
        Err(e) => {
            note(&e.to_string());
            1
        }
    };
    Ok(if problems.is_empty() { code } else { 1 })
}

/// Why serving ended.
enum Stop {
    /// A signal asked for it.
    Signal(&'static str),
    /// A plugin exited on its own.
    Died(&'static str, String),
}

/// Stops every plugin at once (each within `grace`); their roles and how they ended.
async fn stop_all(plugins: &mut [Plugin], grace: Duration) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    match plugins {
        [] => {}
        [only] => out.push((only.role, only.stop(grace).await)),
        [a, b, ..] => {
            let (ra, rb) = (a.role, b.role);
            let (x, y) = tokio::join!(a.stop(grace), b.stop(grace));
            out.push((ra, x));
            out.push((rb, y));
        }
    }
    out
}

/// Creates the simulated filesystems, the tool links, the secrets and the driver
/// configuration.
fn prepare(
    args: &ServeArgs,
    layout: &Layout,
    overlay: Option<serde_json::Value>,
) -> Result<Vec<SimFilesystem>> {
    let filesystems = config::plan(args.filesystem, args.filesystems, &args.zones, layout)?;
    let sim = StateRoot::new(layout.sim_root());
    std::fs::create_dir_all(sim.path()).map_err(|e| SimError::io("create", sim.path(), e))?;
    for fs in &filesystems {
        let record = match fs.beegfs_version {
            None => FsRecord {
                kind: FsKind::Lustre,
                name: fs.name.clone(),
                nids: vec![config::LUSTRE_NID.to_string()],
                beegfs_version: None,
                grpc_port: 0,
                pools: Vec::new(),
                num_targets: 0,
                auth_required: false,
                tls_required: false,
                project_backend: ProjectBackend::Recorded,
            },
            Some(version) => FsRecord {
                kind: FsKind::Beegfs,
                name: fs.name.clone(),
                nids: Vec::new(),
                beegfs_version: Some(version),
                grpc_port: 8010,
                pools: vec![StoragePool {
                    id: 1,
                    name: "Default".into(),
                    alias: "storage_pool_default".into(),
                }],
                num_targets: 4,
                auth_required: false,
                tls_required: false,
                project_backend: ProjectBackend::Recorded,
            },
        };
        sim.create_fs(record, fs.secret.as_ref().map(String::as_bytes), None)?;
        if let Some(mp) = &fs.mount_point {
            std::fs::create_dir_all(mp).map_err(|e| SimError::io("create", mp, e))?;
        }
    }
    install_tools(&layout.tools_dir())?;
    for role in ["controller", "node"] {
        let dir = layout.plugin_state_dir(role);
        std::fs::create_dir_all(&dir).map_err(|e| SimError::io("create", &dir, e))?;
    }
    let kubelet = layout.kubelet_dir();
    std::fs::create_dir_all(&kubelet).map_err(|e| SimError::io("create", &kubelet, e))?;
    if args.filesystem != ServedFs::Lustre {
        let dir = layout.secrets_dir();
        std::fs::create_dir_all(&dir).map_err(|e| SimError::io("create", &dir, e))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| SimError::io("chmod", &dir, e))?;
        let text = serde_yaml::to_string(&config::connauth_file(&filesystems))
            .map_err(|e| SimError::Serve(format!("writing the connAuth file: {e}")))?;
        write_file_atomic(&layout.connauth_file(), text.as_bytes(), 0o600)?;
    }
    let mut driver = config::driver_config(args.filesystem, layout, &filesystems);
    if let Some(overlay) = overlay {
        config::merge(&mut driver, overlay);
    }
    let text = serde_yaml::to_string(&driver)
        .map_err(|e| SimError::Serve(format!("writing the driver configuration: {e}")))?;
    write_file_atomic(&layout.driver_config(), text.as_bytes(), 0o644)?;
    Ok(filesystems)
}

/// Links every tool name in `dir` to this executable.
fn install_tools(dir: &Path) -> Result<()> {
    let exe =
        std::env::current_exe().map_err(|e| SimError::io("locate", "current executable", e))?;
    std::fs::create_dir_all(dir).map_err(|e| SimError::io("create", dir, e))?;
    for tool in Tool::ALL {
        let link = dir.join(tool.name());
        std::os::unix::fs::symlink(&exe, &link).map_err(|e| SimError::io("link", &link, e))?;
    }
    Ok(())
}

/// The command line of one plugin.
fn plugin_args(args: &ServeArgs, layout: &Layout, role: &str, socket: &Path) -> Vec<String> {
    let mut out = vec![
        format!("--endpoint=unix://{}", socket.display()),
        format!("--config={}", layout.driver_config().display()),
        format!("--driver-name={}", args.driver_name),
        format!("--kubelet-dir={}", layout.kubelet_dir().display()),
        format!("--state-dir={}", layout.plugin_state_dir(role).display()),
        format!(
            "--log-format={}",
            match args.log_format {
                LogFormat::Text => "text",
                LogFormat::Json => "json",
            }
        ),
        format!("--log-level={}", args.log_level),
    ];
    if role == "node" {
        out.push(format!("--node-id={}", args.node_id));
    }
    if args.filesystem != ServedFs::Lustre {
        out.push(format!(
            "--beegfs-connauth-file={}",
            layout.connauth_file().display()
        ));
    }
    out
}

/// What serve prints once both plugins are ready; the last line is [`READY_LINE`].
fn summary(args: &ServeArgs, layout: &Layout, filesystems: &[SimFilesystem]) -> Vec<String> {
    let mut lines = vec![
        format!("filesystem:          {}", args.filesystem.name()),
        format!("controller endpoint: {}", args.controller_endpoint),
        format!(
            "node endpoint:       {} (node id {})",
            args.node_endpoint, args.node_id
        ),
        format!("driver name:         {}", args.driver_name),
        format!("driver config:       {}", layout.driver_config().display()),
        format!(
            "simulator root:      {} (PFS_SIM_ROOT for `pfs-csi-sim fault ...`)",
            layout.sim_root().display()
        ),
    ];
    for fs in filesystems {
        let mut line = format!("simulated fs:        {}", fs.name);
        if let Some(cluster) = &fs.cluster {
            line.push_str(&format!(" (cluster {cluster}"));
            if let Some(mp) = &fs.mount_point {
                line.push_str(&format!(", mountPoint {}", mp.display()));
            }
            if let Some(zone) = &fs.zone {
                line.push_str(&format!(", zone {zone}"));
            }
            line.push(')');
        }
        if let Some(v) = fs.beegfs_version {
            line.push_str(&format!(" (BeeGFS {v}, connAuth on, quotas on)"));
        }
        lines.push(line);
    }
    let params = config::required_parameters(args.filesystem, filesystems);
    lines.push(if params.is_empty() {
        "CreateVolume parameters: none needed".to_string()
    } else {
        format!(
            "CreateVolume parameters: {}",
            params
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        )
    });
    lines.push(READY_LINE.to_string());
    lines
}
