//! `pfs-csi-sim`: the simulated tools (by program name or first argument) and the simulator's own
//! commands.

use clap::{ArgGroup, Args, Parser, Subcommand};
use pfs_sim::faults::{self, FaultAction, FaultRule};
use pfs_sim::projects::ProjectBackend;
use pfs_sim::state::{FsKind, FsRecord, StateRoot, StoragePool};
use pfs_sim::{SimError, Tool};
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(
    name = "pfs-csi-sim",
    about = "Simulated Lustre and BeeGFS tools for tests and the quickstart",
    long_about = "Simulated Lustre and BeeGFS tools for tests and the quickstart.\n\nThe tools (mount, umount, lfs, lctl, dtar, beegfs-ctl, beegfs) run when this executable is started under their name (see install-tools) or given as the first argument. PFS_SIM_ROOT names the state directory."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Links every simulated tool's name in DIR to this executable.
    InstallTools {
        /// The directory to put the links in (created if missing).
        dir: PathBuf,
        /// Replace existing files of the same names.
        #[arg(long)]
        force: bool,
    },
    /// Creates a simulated filesystem under PFS_SIM_ROOT and prints its directories as JSON.
    CreateFs {
        #[command(subcommand)]
        kind: CreateFs,
    },
    /// Edits the fault rules (PFS_SIM_ROOT/faults.json).
    Fault {
        #[command(subcommand)]
        action: FaultCommand,
    },
    /// Runs a simulated filesystem with the real controller and node plugins until
    /// SIGTERM/SIGINT, then unmounts and removes everything it made.
    Serve(pfs_sim::serve::ServeArgs),
}

#[derive(Subcommand)]
enum CreateFs {
    /// A Lustre filesystem.
    Lustre {
        /// The fsname (up to 8 characters).
        #[arg(long)]
        name: String,
        /// MGS NIDs accepted in mount sources (any when none are given).
        #[arg(long, value_delimiter = ',')]
        nids: Vec<String>,
    },
    /// A BeeGFS filesystem.
    Beegfs {
        /// The management host clients name in sysMgmtdHost / --mgmtd-addr.
        #[arg(long)]
        mgmtd_host: String,
        /// The BeeGFS major version.
        #[arg(long, value_parser = clap::value_parser!(u8).range(7..=8))]
        version: u8,
        /// A file whose content is the connAuth secret clients must present.
        #[arg(long)]
        auth_secret_file: Option<PathBuf>,
        /// A PEM certificate BeeGFS 8 clients must trust (TLS on); TLS is off without it.
        #[arg(long)]
        tls_cert_file: Option<PathBuf>,
        /// The BeeGFS 8 management gRPC port.
        #[arg(long, default_value_t = 8010)]
        grpc_port: u16,
        /// How many storage pools (1 is "Default").
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
        pools: u16,
        /// How many storage targets.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
        targets: u16,
    },
}

#[derive(Subcommand)]
enum FaultCommand {
    /// Appends a rule.
    Add(FaultAdd),
    /// Removes every rule and resets the use counters.
    Clear,
    /// Prints the rules as JSON.
    List,
}

#[derive(Args)]
#[command(group(ArgGroup::new("action").required(true).args(["fail_exit_code", "hang", "delay_ms", "auth_failure"])))]
struct FaultAdd {
    /// The tool the rule applies to (mount, umount, lfs, lctl, dtar, beegfs-ctl, beegfs).
    #[arg(long)]
    tool: String,
    /// A string some argument must contain (repeatable; all must match).
    #[arg(long = "args-contain", allow_hyphen_values = true)]
    args_contain: Vec<String>,
    /// Fail with this exit code.
    #[arg(long, allow_hyphen_values = true)]
    fail_exit_code: Option<i32>,
    /// The message printed to stderr by a failing rule.
    #[arg(
        long,
        requires = "fail_exit_code",
        default_value = "",
        allow_hyphen_values = true
    )]
    stderr: String,
    /// Never return.
    #[arg(long)]
    hang: bool,
    /// Sleep this long, then run normally.
    #[arg(long)]
    delay_ms: Option<u64>,
    /// Fail as the tool fails when its credentials are refused.
    #[arg(long)]
    auth_failure: bool,
    /// Apply to this many invocations only.
    #[arg(long)]
    times: Option<u32>,
}

fn main() {
    let argv: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let program = argv
        .first()
        .map(|p| {
            Path::new(p)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .unwrap_or_default();
    if let Some(tool) = Tool::from_name(&program) {
        std::process::exit(pfs_sim::invoke(tool, &argv[1..]));
    }
    if let Some(tool) = argv.get(1).and_then(|a| Tool::from_name(a)) {
        std::process::exit(pfs_sim::invoke(tool, &argv[2..]));
    }
    let cli = Cli::parse_from(&argv);
    if let Err(e) = run(cli) {
        eprintln!("pfs-csi-sim: {e}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<(), SimError> {
    match cli.command {
        Command::InstallTools { dir, force } => install_tools(&dir, force),
        Command::CreateFs { kind } => create_fs(kind),
        Command::Fault { action } => fault(action),
        Command::Serve(args) => {
            let code = pfs_sim::serve::run(args)?;
            if code != 0 {
                std::process::exit(code);
            }
            Ok(())
        }
    }
}

fn install_tools(dir: &Path, force: bool) -> Result<(), SimError> {
    let exe =
        std::env::current_exe().map_err(|e| SimError::io("locate", "current executable", e))?;
    std::fs::create_dir_all(dir).map_err(|e| SimError::io("create", dir, e))?;
    for tool in Tool::ALL {
        let link = dir.join(tool.name());
        if std::fs::symlink_metadata(&link).is_ok() {
            if !force {
                return Err(SimError::Invalid(format!(
                    "{} exists (use --force to replace it)",
                    link.display()
                )));
            }
            std::fs::remove_file(&link).map_err(|e| SimError::io("remove", &link, e))?;
        }
        std::os::unix::fs::symlink(&exe, &link).map_err(|e| SimError::io("link", &link, e))?;
    }
    Ok(())
}

fn read_file(path: &Path) -> Result<Vec<u8>, SimError> {
    std::fs::read(path).map_err(|e| SimError::io("read", path, e))
}

fn create_fs(kind: CreateFs) -> Result<(), SimError> {
    let root = StateRoot::from_env()?;
    let (record, secret, cert) = match kind {
        CreateFs::Lustre { name, nids } => {
            if name.is_empty()
                || name.len() > 8
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(SimError::Invalid(format!(
                    "invalid Lustre fsname {name:?}: 1 to 8 letters, digits, '_' or '-'"
                )));
            }
            (
                FsRecord {
                    kind: FsKind::Lustre,
                    name,
                    nids,
                    beegfs_version: None,
                    grpc_port: 0,
                    pools: Vec::new(),
                    num_targets: 0,
                    auth_required: false,
                    tls_required: false,
                    project_backend: ProjectBackend::Recorded,
                },
                None,
                None,
            )
        }
        CreateFs::Beegfs {
            mgmtd_host,
            version,
            auth_secret_file,
            tls_cert_file,
            grpc_port,
            pools,
            targets,
        } => {
            let secret = auth_secret_file.as_deref().map(read_file).transpose()?;
            if secret.as_ref().is_some_and(Vec::is_empty) {
                return Err(SimError::Invalid("the auth secret file is empty".into()));
            }
            let cert = tls_cert_file.as_deref().map(read_file).transpose()?;
            if cert.is_some() && version == 7 {
                return Err(SimError::Invalid("TLS is a BeeGFS 8 feature".into()));
            }
            let pools = (1..=pools)
                .map(|id| StoragePool {
                    id,
                    name: if id == 1 {
                        "Default".into()
                    } else {
                        format!("pool{id}")
                    },
                    alias: if id == 1 {
                        "storage_pool_default".into()
                    } else {
                        format!("pool_{id}")
                    },
                })
                .collect();
            (
                FsRecord {
                    kind: FsKind::Beegfs,
                    name: mgmtd_host,
                    nids: Vec::new(),
                    beegfs_version: Some(version),
                    grpc_port,
                    pools,
                    num_targets: targets,
                    auth_required: false,
                    tls_required: false,
                    project_backend: ProjectBackend::Recorded,
                },
                secret,
                cert,
            )
        }
    };
    let fs = root.create_fs(record, secret.as_deref(), cert.as_deref())?;
    let summary = serde_json::json!({
        "kind": fs.record.kind,
        "name": fs.record.name,
        "data_dir": fs.data_dir(),
        "meta_dir": fs.meta_dir(),
        "project_backend": fs.record.project_backend,
        "beegfs_version": fs.record.beegfs_version,
    });
    println!("{summary}");
    Ok(())
}

fn fault(action: FaultCommand) -> Result<(), SimError> {
    let root = StateRoot::from_env()?;
    match action {
        FaultCommand::Add(add) => {
            if Tool::from_name(&add.tool).is_none() {
                return Err(SimError::Invalid(format!("unknown tool {:?}", add.tool)));
            }
            let action = if let Some(exit_code) = add.fail_exit_code {
                FaultAction::Fail {
                    exit_code,
                    stderr: add.stderr,
                }
            } else if add.hang {
                FaultAction::Hang
            } else if let Some(ms) = add.delay_ms {
                FaultAction::DelayMs(ms)
            } else {
                FaultAction::AuthFailure
            };
            faults::add(
                &root,
                FaultRule {
                    tool: add.tool,
                    args_contain: add.args_contain,
                    action,
                    times: add.times,
                },
            )
        }
        FaultCommand::Clear => faults::clear(&root),
        FaultCommand::List => {
            let rules = faults::load(&root)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&rules).unwrap_or_else(|_| "[]".into())
            );
            Ok(())
        }
    }
}
