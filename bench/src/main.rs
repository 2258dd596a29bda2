//! `pfs-csi-bench`: starts the real release binaries against the simulators and prints
//! figures, with the targets of the project next to them.
//!
//! ```text
//! bash scripts/build-release.sh -p pfs-sim -p pfs-csi-bench   # the node plugin as the image has it
//! sudo target/release/pfs-csi-bench [--quick] [--json] [--filesystem lustre,beegfs8]
//! ```
//!
//! The whole run lives in a private mount namespace (entered before any thread starts, so
//! the simulator and the plugins inherit it); every mount it makes disappears with it.
//! Benchmarks, in order, per simulated filesystem (`pfs-csi-sim serve` runs the plugins):
//! - memory: `VmRSS`/`VmHWM` of both plugins idle, then under N concurrent RPCs;
//! - spawns: processes each RPC type started, counted two ways (see
//!   [`report::PROCESS_COUNT_METHOD`]);
//! - rates: CreateVolume+DeleteVolume and NodePublish+NodeUnpublish pairs per second at
//!   each concurrency, with p50/p99 latencies;
//! - mounts: sequential publish+unpublish with 0, 1,000 and 5,000 unrelated tmpfs mounts;
//! - startup: spawn to the first ready Probe, median of several launches of each binary.
//!
//! Then, once, snapshot archive throughput of `ArchiveSnapshotEngine` against GNU tar on a
//! tree of many small files and one of a few large files.

mod error;
mod forks;
mod fsbench;
mod load;
mod mounts;
mod namespace;
mod procfs;
mod report;
mod requests;
mod serve;
mod snapshot;
mod stats;
mod syscalls;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, ValueEnum};

use crate::error::{BenchError, Result};
use crate::fsbench::{FsOptions, Sections};
use crate::report::{PROCESS_COUNT_METHOD, Report};
use crate::snapshot::SnapshotOptions;

/// A benchmark group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Section {
    /// Resident memory idle and under concurrent RPCs.
    Memory,
    /// Processes spawned per RPC type.
    Spawns,
    /// RPC pairs per second at each concurrency.
    Rates,
    /// Publish latency with unrelated mounts on the node.
    Mounts,
    /// Start-up time to a ready Probe.
    Startup,
    /// Syscalls of the node plugin per publish+unpublish (strace).
    Syscalls,
    /// Snapshot archive throughput against GNU tar.
    Snapshot,
}

/// Benchmarks of the pfs-csi plugins against the simulated filesystems.
#[derive(Debug, Parser)]
#[command(name = "pfs-csi-bench", version)]
struct Args {
    /// Smaller loops and trees (minutes instead of tens of minutes).
    #[arg(long)]
    quick: bool,
    /// Print the figures as JSON on standard output (progress stays on standard error).
    #[arg(long)]
    json: bool,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json_file: Option<PathBuf>,
    /// Simulated filesystems to run the plugin benchmarks on.
    #[arg(long, value_delimiter = ',', default_value = "lustre,beegfs8")]
    filesystem: Vec<String>,
    /// Benchmarks to run (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Section>,
    /// Where pfs-csi-sim, pfs-csi-controller and pfs-csi-node are (default: beside this
    /// executable).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Scratch directory (a fresh subdirectory is made and removed); also where the
    /// snapshot trees are written.
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// The plugins' log level.
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Concurrency levels of the rate benchmarks.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    concurrency: Vec<usize>,
    /// CreateVolume+DeleteVolume pairs per level [default: 200, quick 64].
    #[arg(long)]
    create_pairs: Option<usize>,
    /// NodePublish+NodeUnpublish pairs per level [default: 1000, quick 200].
    #[arg(long)]
    publish_pairs: Option<usize>,
    /// Unrelated mount counts.
    #[arg(long, value_delimiter = ',', default_value = "0,1000,5000")]
    mount_levels: Vec<usize>,
    /// Sequential publish+unpublish pairs per mount level [default: 800, quick 160].
    #[arg(long)]
    mount_iterations: Option<usize>,
    /// Rounds up and down the mount levels (the pairs are spread over them) [default: 4,
    /// quick 2].
    #[arg(long)]
    mount_rounds: Option<usize>,
    /// Publish+unpublish pairs traced with strace [default: 100, quick 50].
    #[arg(long)]
    syscall_pairs: Option<usize>,
    /// Calls of each RPC type when counting processes [default: 10, quick 5].
    #[arg(long)]
    spawn_samples: Option<usize>,
    /// RPCs in flight at once in the memory benchmark.
    #[arg(long, default_value_t = 100)]
    memory_concurrency: usize,
    /// Launches of each binary in the start-up benchmark [default: 11, quick 5].
    #[arg(long)]
    launches: Option<usize>,
    /// Files in the small-file snapshot tree [default: 100000, quick 10000].
    #[arg(long)]
    small_files: Option<usize>,
    /// Bytes per small file.
    #[arg(long, default_value_t = 4096)]
    small_file_bytes: usize,
    /// Files in the large-file snapshot tree [default: 4, quick 2].
    #[arg(long)]
    large_files: Option<usize>,
    /// MiB per large file [default: 128, quick 32].
    #[arg(long)]
    large_file_mib: Option<usize>,
    /// Timed runs of each snapshot variant (median reported) [default: 3, quick 1].
    #[arg(long)]
    snapshot_runs: Option<usize>,
}

impl Args {
    fn pick(&self, value: Option<usize>, full: usize, quick: usize) -> usize {
        value.unwrap_or(if self.quick { quick } else { full })
    }

    fn wants(&self, section: Section) -> bool {
        self.only.is_empty() || self.only.contains(&section)
    }

    fn fs_options(&self) -> FsOptions {
        FsOptions {
            concurrency: self.concurrency.clone(),
            create_pairs: self.pick(self.create_pairs, 200, 64),
            publish_pairs: self.pick(self.publish_pairs, 1000, 200),
            mount_levels: self.mount_levels.clone(),
            mount_iterations: self.pick(self.mount_iterations, 800, 160),
            mount_rounds: self.pick(self.mount_rounds, 4, 2),
            syscall_pairs: self.pick(self.syscall_pairs, 100, 50),
            spawn_samples: self.pick(self.spawn_samples, 10, 5),
            memory_concurrency: self.memory_concurrency,
            launches: self.pick(self.launches, 11, 5),
        }
    }

    fn snapshot_options(&self) -> SnapshotOptions {
        SnapshotOptions {
            small_files: self.pick(self.small_files, 100_000, 10_000),
            small_file_bytes: self.small_file_bytes,
            large_files: self.pick(self.large_files, 4, 2),
            large_file_mib: self.pick(self.large_file_mib, 128, 32),
            runs: self.pick(self.snapshot_runs, 3, 1),
        }
    }
}

/// `git describe --always --dirty` in the working directory, if that works.
fn revision() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

fn bin_dir(args: &Args) -> Result<PathBuf> {
    if let Some(dir) = &args.bin_dir {
        return Ok(dir.clone());
    }
    let exe =
        std::env::current_exe().map_err(|e| BenchError::io("locate", "this executable", e))?;
    exe.parent()
        .map(PathBuf::from)
        .ok_or_else(|| BenchError::Setup("this executable has no directory".into()))
}

async fn run(args: Args, started: Instant) -> Result<Report> {
    let progress = move |what: &str| {
        eprintln!("[{:7.1}s] {what}", started.elapsed().as_secs_f64());
    };
    let bins = bin_dir(&args)?;
    let work_root = args.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    let scratch = tempfile::Builder::new()
        .prefix("pfs-csi-bench-")
        .tempdir_in(&work_root)
        .map_err(|e| BenchError::io("create a scratch directory in", &work_root, e))?;
    let machine = procfs::machine();
    let sections = Sections {
        memory: args.wants(Section::Memory),
        rates: args.wants(Section::Rates),
        mounts: args.wants(Section::Mounts),
        spawns: args.wants(Section::Spawns),
        startup: args.wants(Section::Startup),
        syscalls: args.wants(Section::Syscalls),
    };
    let any_fs = sections.memory
        || sections.rates
        || sections.mounts
        || sections.spawns
        || sections.startup
        || sections.syscalls;
    let mut filesystems = Vec::new();
    if any_fs {
        let forks = forks::ForkCounter::start()?;
        let options = args.fs_options();
        for fs in &args.filesystem {
            let base = scratch.path().join(fs);
            std::fs::create_dir_all(&base).map_err(|e| BenchError::io("create", &base, e))?;
            progress(&format!("{fs}: starting pfs-csi-sim serve"));
            let served = serve::Served::start(fs, &base, &bins, &args.log_level).await?;
            forks.track(served.controller_pid, fsbench::CONTROLLER);
            forks.track(served.node_pid, fsbench::NODE);
            let outcome = fsbench::run(&served, &forks, &options, sections, &base, &progress).await;
            let stopped = served.stop().await;
            progress(&format!("{fs}: serve {stopped}"));
            filesystems.push(outcome);
        }
    }
    let snapshot = if args.wants(Section::Snapshot) {
        Some(
            snapshot::run_snapshot(
                &args.snapshot_options(),
                &scratch.path().join("snapshot"),
                &progress,
            )
            .await,
        )
    } else {
        None
    };
    let targets = report::targets(&filesystems, snapshot.as_ref());
    Ok(Report {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        quick: args.quick,
        revision: revision(),
        machine,
        process_count_method: PROCESS_COUNT_METHOD.to_string(),
        filesystems,
        snapshot,
        targets,
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    let started = Instant::now();
    // Before any thread exists: the kernel refuses a new mount namespace to a threaded process.
    if let Err(e) = namespace::enter_private_mount_namespace() {
        eprintln!("pfs-csi-bench: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pfs-csi-bench: starting the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let json = args.json;
    let json_file = args.json_file.clone();
    match runtime.block_on(run(args, started)) {
        Ok(report) => {
            if let Some(path) = json_file {
                let written = serde_json::to_string_pretty(&report)
                    .map_err(std::io::Error::other)
                    .and_then(|text| std::fs::write(&path, text + "\n"));
                if let Err(e) = written {
                    eprintln!("pfs-csi-bench: writing {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            }
            if json {
                match serde_json::to_string_pretty(&report) {
                    Ok(text) => println!("{text}"),
                    Err(e) => {
                        eprintln!("pfs-csi-bench: encoding the report: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                print!("{}", report::render(&report));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pfs-csi-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
