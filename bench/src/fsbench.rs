//! The benchmarks that run against one simulated filesystem: memory, RPC rates, mount-table
//! scaling, spawned processes and start-up time.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_adapter::proto::csi::v1 as pb;
use serde::Serialize;
use tonic::transport::Channel;

use crate::error::{BenchError, Result};
use crate::forks::ForkCounter;
use crate::load::{PairRun, Timed, run_pairs, summarize, timed};
use crate::mounts::{
    UnrelatedMounts, mount_table_lines, mountinfo_read_time, raw_bind_unbind, raw_target_dirs,
};
use crate::procfs::{self, Memory};
use crate::requests;
use crate::serve::{Served, channel, stop_child};
use crate::stats::{Summary, median};
use crate::syscalls::{
    SyscallReport, Tracer, describe_fd, find_strace, parse_path_calls, parse_summary,
    parse_write_fds, per_pair,
};

/// Label of the controller's processes in the fork counter.
pub const CONTROLLER: &str = "controller";
/// Label of the node plugin's processes in the fork counter.
pub const NODE: &str = "node";

/// How much of each benchmark to run.
#[derive(Debug, Clone)]
pub struct FsOptions {
    /// Concurrency levels of the rate benchmarks.
    pub concurrency: Vec<usize>,
    /// CreateVolume+DeleteVolume pairs per level.
    pub create_pairs: usize,
    /// NodePublish+NodeUnpublish pairs per level.
    pub publish_pairs: usize,
    /// Unrelated mount counts.
    pub mount_levels: Vec<usize>,
    /// Sequential publish+unpublish pairs per mount level.
    pub mount_iterations: usize,
    /// Calls of each RPC in the spawned-process count.
    pub spawn_samples: usize,
    /// Concurrent RPCs in the memory benchmark.
    pub memory_concurrency: usize,
    /// Launches of each binary in the start-up benchmark.
    pub launches: usize,
    /// Alternations of the mount levels (up and down) in the mount benchmark.
    pub mount_rounds: usize,
    /// Sequential pairs traced in the syscall count.
    pub syscall_pairs: usize,
}

/// Memory of one plugin.
#[derive(Debug, Clone, Serialize)]
pub struct RoleMemory {
    /// Idle, after start-up and the readiness probes.
    pub idle: Memory,
    /// Idle resident KiB by kind of mapping (from `/proc/<pid>/smaps`).
    pub idle_by_mapping: BTreeMap<String, u64>,
    /// The RPCs of the load.
    pub load: String,
    /// Largest `VmRSS` sampled (every millisecond) during the load, KiB.
    pub load_peak_rss_kib: u64,
    /// After the load.
    pub after_load: Memory,
    /// Failed RPCs of the load.
    pub errors: usize,
    /// The first failure's message.
    pub first_error: Option<String>,
}

/// Memory of both plugins.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryReport {
    /// RPCs in flight at once during the load.
    pub concurrency: usize,
    /// The controller.
    pub controller: RoleMemory,
    /// The node plugin.
    pub node: RoleMemory,
}

/// Publish+unpublish at one count of unrelated mounts.
#[derive(Debug, Clone, Serialize)]
pub struct MountLevel {
    /// Unrelated mounts made by the bench.
    pub unrelated_mounts: usize,
    /// Lines of the mount table at that point.
    pub mount_table_lines: usize,
    /// Reading `/proc/self/mountinfo` once, for comparison.
    pub mountinfo_read: Summary,
    /// A bind mount plus its unmount made directly by the bench: the kernel's floor.
    pub raw_bind_unbind: Summary,
    /// A target directory made and removed by the bench beside the publish targets: the
    /// disk's floor.
    pub raw_target_dirs: Summary,
    /// Sequential publish+unpublish pairs, all passes together.
    pub run: PairRun,
    /// p50 of each pass at this level, in the order measured, µs.
    pub pass_p50_us: Vec<f64>,
}

/// Processes one RPC type made.
#[derive(Debug, Clone, Serialize)]
pub struct SpawnRow {
    /// The RPC (and what was waited for).
    pub rpc: String,
    /// How many calls were made.
    pub calls: usize,
    /// Simulated tool invocations per call (the simulator's calls.log).
    pub sim_tool_calls_per_rpc: f64,
    /// Processes the controller (and its children) created per call (process events).
    pub controller_processes_per_rpc: f64,
    /// Processes the node plugin (and its children) created per call (process events).
    pub node_processes_per_rpc: f64,
    /// Simulated tools invoked over all calls, by name.
    pub tools: BTreeMap<String, usize>,
    /// The first full command line of each kind of tool call, as logged.
    pub examples: BTreeMap<String, String>,
}

/// Start-up of one binary.
#[derive(Debug, Clone, Serialize)]
pub struct StartupReport {
    /// `controller` or `node`.
    pub role: String,
    /// Launches measured.
    pub launches: usize,
    /// From spawn to the socket existing, ms (median).
    pub socket_ms_median: f64,
    /// From spawn to the first Probe answered ready, ms (median).
    pub ready_ms_median: f64,
    /// Fastest launch to ready, ms.
    pub ready_ms_min: f64,
    /// Slowest launch to ready, ms.
    pub ready_ms_max: f64,
    /// `VmRSS` right after the ready Probe, KiB (median).
    pub rss_at_ready_kib_median: f64,
    /// Processes the plugin created from launch to the ready Probe (median).
    pub processes_until_ready_median: f64,
    /// From SIGTERM to exit, ms (median).
    pub stop_ms_median: f64,
    /// Simulated tools run from launch to ready, over all launches.
    pub tools_until_ready: BTreeMap<String, usize>,
}

/// Everything measured on one filesystem.
#[derive(Debug, Clone, Serialize)]
pub struct FsReport {
    /// `lustre`, `beegfs7` or `beegfs8`.
    pub filesystem: String,
    /// Resident memory idle and under load.
    pub memory: Option<MemoryReport>,
    /// CreateVolume+DeleteVolume pairs at each concurrency.
    pub create_delete: Vec<PairRun>,
    /// NodePublish+NodeUnpublish pairs (one staged volume per worker) at each concurrency.
    pub publish_unpublish: Vec<PairRun>,
    /// Sequential NodeGetCapabilities calls (answered from memory): the cost of one RPC
    /// round trip through the client, the socket, tonic and the plugin's layers.
    pub rpc_floor: Option<Summary>,
    /// Sequential publish+unpublish with unrelated mounts on the node.
    pub mount_scaling: Vec<MountLevel>,
    /// p50 of publish+unpublish at the most mounts over that at none.
    pub mount_scaling_ratio: Option<f64>,
    /// Processes per RPC type.
    pub spawns: Vec<SpawnRow>,
    /// Whether the kernel dropped process events (counts are then lower bounds).
    pub process_events_lost: bool,
    /// Start-up times.
    pub startup: Vec<StartupReport>,
    /// Syscalls of the node plugin per publish+unpublish.
    pub syscalls: Option<SyscallReport>,
    /// Why the syscall count was skipped, when it was.
    pub syscalls_skipped: Option<String>,
    /// Benchmarks that failed, with why.
    pub errors: Vec<String>,
}

/// Which benchmarks to run.
#[derive(Debug, Clone, Copy)]
pub struct Sections {
    /// Memory.
    pub memory: bool,
    /// Rates.
    pub rates: bool,
    /// Mount scaling.
    pub mounts: bool,
    /// Spawned processes.
    pub spawns: bool,
    /// Start-up.
    pub startup: bool,
    /// Syscalls per publish (needs strace).
    pub syscalls: bool,
}

type Controller = pb::controller_client::ControllerClient<Channel>;
type Node = pb::node_client::NodeClient<Channel>;

fn status_text(rpc: &str, s: &tonic::Status) -> String {
    format!("{rpc}: {:?}: {}", s.code(), s.message())
}

async fn create_volume(
    controller: &mut Controller,
    name: &str,
    served: &Served,
) -> Result<pb::Volume> {
    controller
        .create_volume(requests::create(name, &served.parameters))
        .await
        .map_err(|s| BenchError::rpc("CreateVolume", &s))?
        .into_inner()
        .volume
        .ok_or_else(|| BenchError::Setup("CreateVolume answered without a volume".into()))
}

/// A volume created and staged for publishing, removed by [`Staged::remove`].
struct Staged {
    volume: pb::Volume,
    /// The pod directory: `staging/` and the target parents are below it.
    dir: PathBuf,
    staging: PathBuf,
}

impl Staged {
    async fn new(served: &Served, name: &str) -> Result<Staged> {
        let mut controller = served.controller().await?;
        let mut node = served.node().await?;
        let volume = create_volume(&mut controller, name, served).await?;
        let dir = served.pod_path(name);
        let staging = dir.join("staging");
        node.node_stage_volume(requests::stage(&volume, &staging))
            .await
            .map_err(|s| BenchError::rpc("NodeStageVolume", &s))?;
        Ok(Staged {
            volume,
            dir,
            staging,
        })
    }

    /// `count` volumes named `<prefix>-<i>`, staged.
    async fn many(served: &Served, prefix: &str, count: usize) -> Result<Vec<Staged>> {
        let mut out = Vec::with_capacity(count);
        for i in 0..count {
            out.push(Staged::new(served, &format!("{prefix}-{i}")).await?);
        }
        Ok(out)
    }

    /// A fresh directory below the pod directory to publish targets in (kubelet makes the
    /// parent of a target; the plugin makes the target itself).
    fn target_parent(&self, label: &str) -> Result<PathBuf> {
        let dir = self.dir.join(label);
        std::fs::create_dir_all(&dir).map_err(|e| BenchError::io("create", &dir, e))?;
        Ok(dir)
    }

    async fn remove(self, served: &Served) -> Result<()> {
        let mut node = served.node().await?;
        node.node_unstage_volume(requests::unstage(&self.volume.volume_id, &self.staging))
            .await
            .map_err(|s| BenchError::rpc("NodeUnstageVolume", &s))?;
        served
            .controller()
            .await?
            .delete_volume(requests::delete(&self.volume.volume_id))
            .await
            .map_err(|s| BenchError::rpc("DeleteVolume", &s))?;
        Ok(())
    }
}

/// CreateVolume+DeleteVolume pairs of fresh names at `concurrency`.
async fn create_delete_run(
    served: &Served,
    controller: &Controller,
    tag: &str,
    concurrency: usize,
    pairs: usize,
) -> PairRun {
    let parameters = Arc::new(served.parameters.clone());
    let controller = controller.clone();
    let tag = tag.to_string();
    run_pairs(concurrency, pairs, move |_, i| {
        let mut c = controller.clone();
        let name = format!("bench-{tag}-{i}");
        let parameters = parameters.clone();
        async move {
            let (first, created) =
                timed(c.create_volume(requests::create(&name, &parameters))).await;
            let volume = created
                .map_err(|s| status_text("CreateVolume", &s))?
                .into_inner()
                .volume
                .ok_or("CreateVolume answered without a volume")?;
            let (second, deleted) =
                timed(c.delete_volume(requests::delete(&volume.volume_id))).await;
            deleted.map_err(|s| status_text("DeleteVolume", &s))?;
            Ok(Timed { first, second })
        }
    })
    .await
}

/// NodePublish+NodeUnpublish pairs at `concurrency`, worker `w` publishing volume
/// `staged[w]` to fresh targets below its `label` directory.
async fn publish_run(
    node: &Node,
    staged: &[Staged],
    label: &str,
    concurrency: usize,
    pairs: usize,
) -> Result<PairRun> {
    if staged.len() < concurrency {
        return Err(BenchError::Setup(format!(
            "{} staged volumes for concurrency {concurrency}",
            staged.len()
        )));
    }
    let mut workers = Vec::with_capacity(concurrency);
    for s in &staged[..concurrency] {
        workers.push((
            Arc::new(s.volume.clone()),
            Arc::new(s.staging.clone()),
            s.target_parent(label)?,
        ));
    }
    let workers = Arc::new(workers);
    let node = node.clone();
    Ok(run_pairs(concurrency, pairs, move |w, i| {
        let mut n = node.clone();
        let (volume, staging, parent) = &workers[w];
        let (volume, staging) = (volume.clone(), staging.clone());
        let target = parent.join(format!("t{i}"));
        async move {
            let (first, published) =
                timed(n.node_publish_volume(requests::publish(&volume, &staging, &target))).await;
            published.map_err(|s| status_text("NodePublishVolume", &s))?;
            let (second, unpublished) =
                timed(n.node_unpublish_volume(requests::unpublish(&volume.volume_id, &target)))
                    .await;
            unpublished.map_err(|s| status_text("NodeUnpublishVolume", &s))?;
            Ok(Timed { first, second })
        }
    })
    .await)
}

/// Samples `VmRSS` of `pids` every millisecond until stopped; the largest value per pid.
struct RssSampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<u64>>,
}

impl RssSampler {
    fn start(pids: Vec<u32>) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peaks = vec![0u64; pids.len()];
            while !flag.load(Ordering::Relaxed) {
                for (peak, pid) in peaks.iter_mut().zip(&pids) {
                    if let Ok(m) = procfs::memory(*pid) {
                        *peak = (*peak).max(m.rss_kib);
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            peaks
        });
        RssSampler { stop, thread }
    }

    fn finish(self) -> Vec<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// Runs `ops` futures all at once; how many failed and the first failure.
async fn all_at_once<F>(ops: Vec<F>) -> (usize, Option<String>)
where
    F: std::future::Future<Output = std::result::Result<(), String>> + Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    for op in ops {
        set.spawn(op);
    }
    let mut failed = 0;
    let mut first = None;
    while let Some(r) = set.join_next().await {
        let outcome = r.unwrap_or_else(|e| Err(format!("task failed: {e}")));
        if let Err(e) = outcome {
            failed += 1;
            first.get_or_insert(e);
        }
    }
    (failed, first)
}

async fn memory_section(served: &Served, concurrency: usize) -> Result<MemoryReport> {
    tokio::time::sleep(Duration::from_secs(1)).await;
    let controller_idle = procfs::memory(served.controller_pid)?;
    let node_idle = procfs::memory(served.node_pid)?;
    let controller_map = procfs::rss_by_mapping(served.controller_pid);
    let node_map = procfs::rss_by_mapping(served.node_pid);

    // Controller: `concurrency` CreateVolume at once, then as many DeleteVolume.
    let controller = served.controller().await?;
    let sampler = RssSampler::start(vec![served.controller_pid]);
    let mut set = tokio::task::JoinSet::new();
    for i in 0..concurrency {
        let mut c = controller.clone();
        let request = requests::create(&format!("bench-mem-{i}"), &served.parameters);
        set.spawn(async move {
            c.create_volume(request)
                .await
                .map_err(|s| status_text("CreateVolume", &s))?
                .into_inner()
                .volume
                .ok_or_else(|| "CreateVolume answered without a volume".to_string())
        });
    }
    let mut volumes = Vec::new();
    let mut controller_errors = 0;
    let mut controller_error = None;
    while let Some(r) = set.join_next().await {
        match r.unwrap_or_else(|e| Err(format!("task failed: {e}"))) {
            Ok(v) => volumes.push(v),
            Err(e) => {
                controller_errors += 1;
                controller_error.get_or_insert(e);
            }
        }
    }
    let deletes = volumes
        .iter()
        .map(|v| {
            let mut c = controller.clone();
            let request = requests::delete(&v.volume_id);
            async move {
                c.delete_volume(request)
                    .await
                    .map(|_| ())
                    .map_err(|s| status_text("DeleteVolume", &s))
            }
        })
        .collect();
    let (failed, first) = all_at_once(deletes).await;
    controller_errors += failed;
    let controller_error = controller_error.or(first);
    let controller_peak = sampler.finish()[0];
    let controller_after = procfs::memory(served.controller_pid)?;

    // Node: `concurrency` NodePublish at once, each of its own staged volume, then as many
    // NodeUnpublish (one volume per pod, as kubelet would send them).
    let staged = Staged::many(served, "bench-mem-node", concurrency).await?;
    let node = served.node().await?;
    let mut targets = Vec::with_capacity(concurrency);
    for s in &staged {
        targets.push(s.target_parent("mem")?.join("target"));
    }
    let sampler = RssSampler::start(vec![served.node_pid]);
    let publishes = staged
        .iter()
        .zip(&targets)
        .map(|(s, t)| {
            let mut n = node.clone();
            let request = requests::publish(&s.volume, &s.staging, t);
            async move {
                n.node_publish_volume(request)
                    .await
                    .map(|_| ())
                    .map_err(|s| status_text("NodePublishVolume", &s))
            }
        })
        .collect();
    let (mut node_errors, node_error) = all_at_once(publishes).await;
    let unpublishes = staged
        .iter()
        .zip(&targets)
        .map(|(s, t)| {
            let mut n = node.clone();
            let request = requests::unpublish(&s.volume.volume_id, t);
            async move {
                n.node_unpublish_volume(request)
                    .await
                    .map(|_| ())
                    .map_err(|s| status_text("NodeUnpublishVolume", &s))
            }
        })
        .collect();
    let (failed, first) = all_at_once(unpublishes).await;
    node_errors += failed;
    let node_error = node_error.or(first);
    let node_peak = sampler.finish()[0];
    let node_after = procfs::memory(served.node_pid)?;
    for s in staged {
        s.remove(served).await?;
    }

    Ok(MemoryReport {
        concurrency,
        controller: RoleMemory {
            idle: controller_idle,
            idle_by_mapping: controller_map,
            load: format!("{concurrency} CreateVolume at once, then {concurrency} DeleteVolume"),
            load_peak_rss_kib: controller_peak,
            after_load: controller_after,
            errors: controller_errors,
            first_error: controller_error,
        },
        node: RoleMemory {
            idle: node_idle,
            idle_by_mapping: node_map,
            load: format!(
                "{concurrency} NodePublishVolume at once (one volume each), then {concurrency} NodeUnpublishVolume"
            ),
            load_peak_rss_kib: node_peak,
            after_load: node_after,
            errors: node_errors,
            first_error: node_error,
        },
    })
}

/// Latency of `calls` sequential NodeGetCapabilities.
async fn rpc_floor(served: &Served, calls: usize) -> Result<Summary> {
    let mut node = served.node().await?;
    let mut samples = Vec::with_capacity(calls);
    for i in 0..calls + 20 {
        let (took, answer) =
            timed(node.node_get_capabilities(pb::NodeGetCapabilitiesRequest {})).await;
        answer.map_err(|s| BenchError::rpc("NodeGetCapabilities", &s))?;
        if i >= 20 {
            samples.push(took);
        }
    }
    Summary::of(&samples).ok_or_else(|| BenchError::Setup("no samples".into()))
}

async fn rates_section(
    served: &Served,
    options: &FsOptions,
) -> Result<(Vec<PairRun>, Vec<PairRun>)> {
    let controller = served.controller().await?;
    // Warm-up (not recorded): connections, caches, first-use paths.
    let _ = create_delete_run(served, &controller, "warm", 1, 5).await;
    let mut create_delete = Vec::new();
    for &c in &options.concurrency {
        create_delete.push(
            create_delete_run(
                served,
                &controller,
                &format!("c{c}"),
                c,
                options.create_pairs,
            )
            .await,
        );
    }
    let most = options.concurrency.iter().copied().max().unwrap_or(1);
    let staged = Staged::many(served, "bench-pub", most).await?;
    let node = served.node().await?;
    let _ = publish_run(&node, &staged, "warm", 1, 20).await?;
    let mut publish = Vec::new();
    for &c in &options.concurrency {
        publish
            .push(publish_run(&node, &staged, &format!("c{c}"), c, options.publish_pairs).await?);
    }
    for s in staged {
        s.remove(served).await?;
    }
    Ok((create_delete, publish))
}

/// `pairs` sequential publish+unpublish pairs of `staged` to fresh targets below `label`,
/// each timed.
async fn sequential_publish(
    node: &Node,
    staged: &Staged,
    label: &str,
    pairs: usize,
) -> Result<Vec<(Duration, std::result::Result<Timed, String>)>> {
    let parent = staged.target_parent(label)?;
    let mut n = node.clone();
    let mut out = Vec::with_capacity(pairs);
    for i in 0..pairs {
        let target = parent.join(format!("t{i}"));
        let started = Instant::now();
        let (first, published) = timed(n.node_publish_volume(requests::publish(
            &staged.volume,
            &staged.staging,
            &target,
        )))
        .await;
        let result = match published {
            Err(s) => Err(status_text("NodePublishVolume", &s)),
            Ok(_) => {
                let (second, unpublished) = timed(
                    n.node_unpublish_volume(requests::unpublish(&staged.volume.volume_id, &target)),
                )
                .await;
                unpublished
                    .map(|_| Timed { first, second })
                    .map_err(|s| status_text("NodeUnpublishVolume", &s))
            }
        };
        out.push((started.elapsed(), result));
    }
    Ok(out)
}

/// Publish+unpublish at each count of unrelated mounts, measured over several rounds of
/// going up the levels and down again, a share of the pairs in each pass, so that a change
/// of the machine's load during the run weighs on every level alike.
async fn mounts_section(
    served: &Served,
    options: &FsOptions,
    work: &Path,
) -> Result<(Vec<MountLevel>, Option<f64>)> {
    let staged = Staged::new(served, "bench-mounts").await?;
    let node = served.node().await?;
    let mut unrelated = UnrelatedMounts::new(&work.join("unrelated"))?;
    let mut sorted = options.mount_levels.clone();
    sorted.sort_unstable();
    sorted.dedup();
    let rounds = options.mount_rounds.max(1);
    let per_pass = options.mount_iterations.div_ceil(2 * rounds).max(1);
    let (raw_source, raw_target) = (work.join("raw-source"), work.join("raw-target"));
    let mut order: Vec<(usize, usize)> = Vec::new();
    for _ in 0..rounds {
        order.extend(sorted.iter().copied().enumerate());
        order.extend(sorted.iter().copied().enumerate().rev());
    }
    type Sample = (Duration, std::result::Result<Timed, String>);
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); sorted.len()];
    let mut passes: Vec<Vec<f64>> = vec![Vec::new(); sorted.len()];
    let mut raw: Vec<Vec<Duration>> = vec![Vec::new(); sorted.len()];
    let mut dirs: Vec<Vec<Duration>> = vec![Vec::new(); sorted.len()];
    let mut walls = vec![Duration::ZERO; sorted.len()];
    for (pass, (slot, count)) in order.into_iter().enumerate() {
        unrelated.grow_to(count)?;
        unrelated.shrink_to(count);
        let _ = sequential_publish(&node, &staged, &format!("warm{pass}"), 3).await?;
        let started = Instant::now();
        let done = sequential_publish(&node, &staged, &format!("p{pass}"), per_pass).await?;
        walls[slot] += started.elapsed();
        let ok: Vec<Duration> = done
            .iter()
            .filter(|(_, r)| r.is_ok())
            .map(|(d, _)| *d)
            .collect();
        if let Some(s) = Summary::of(&ok) {
            passes[slot].push(s.p50_us);
        }
        samples[slot].extend(done);
        raw[slot].extend(raw_bind_unbind(&raw_source, &raw_target, per_pass)?);
        dirs[slot].extend(raw_target_dirs(
            &staged.target_parent(&format!("d{pass}"))?,
            per_pass,
        )?);
    }
    let mut levels = Vec::new();
    for (slot, count) in sorted.iter().copied().enumerate() {
        unrelated.grow_to(count)?;
        unrelated.shrink_to(count);
        let results = std::mem::take(&mut samples[slot]);
        levels.push(MountLevel {
            unrelated_mounts: count,
            mount_table_lines: mount_table_lines(),
            mountinfo_read: mountinfo_read_time(20),
            raw_bind_unbind: Summary::of(&raw[slot])
                .ok_or_else(|| BenchError::Setup("no raw samples".into()))?,
            raw_target_dirs: Summary::of(&dirs[slot])
                .ok_or_else(|| BenchError::Setup("no directory samples".into()))?,
            run: summarize(1, results.len(), walls[slot], results),
            pass_p50_us: std::mem::take(&mut passes[slot]),
        });
    }
    unrelated.clear();
    staged.remove(served).await?;
    let p50 = |l: &MountLevel| l.run.pair.map(|s| s.p50_us);
    let ratio = match (levels.first(), levels.last()) {
        (Some(lo), Some(hi)) if levels.len() > 1 => match (p50(lo), p50(hi)) {
            (Some(a), Some(b)) if a > 0.0 => Some(b / a),
            _ => None,
        },
        _ => None,
    };
    Ok((levels, ratio))
}

/// Syscalls of the node plugin per sequential publish+unpublish pair, counted by strace
/// attached to the running plugin (which slows it; no timing is taken here).
async fn syscalls_section(
    served: &Served,
    strace: &Path,
    pairs: usize,
    work: &Path,
) -> Result<SyscallReport> {
    let staged = Staged::new(served, "bench-strace").await?;
    let node = served.node().await?;
    let _ = sequential_publish(&node, &staged, "warm", 5).await?;
    let summary_file = work.join("strace-summary.txt");
    let tracer = Tracer::attach(strace, &["-c"], served.node_pid, &summary_file).await?;
    let done = sequential_publish(&node, &staged, "counted", pairs).await;
    let summary = tracer.detach().await;
    let failed = done?.iter().filter(|(_, r)| r.is_err()).count();
    let files_file = work.join("strace-files.txt");
    let tracer =
        Tracer::attach(strace, &["-e", "trace=%file"], served.node_pid, &files_file).await?;
    let done = sequential_publish(&node, &staged, "paths", pairs).await;
    let files = tracer.detach().await;
    let failed = failed + done?.iter().filter(|(_, r)| r.is_err()).count();
    let writes_file = work.join("strace-writes.txt");
    let tracer = Tracer::attach(
        strace,
        &["-e", "trace=write,writev", "-s", "0"],
        served.node_pid,
        &writes_file,
    )
    .await?;
    let done = sequential_publish(&node, &staged, "writes", pairs).await;
    let writes = tracer.detach().await;
    let failed = failed + done?.iter().filter(|(_, r)| r.is_err()).count();
    let writes: BTreeMap<String, u64> = parse_write_fds(&writes)
        .into_iter()
        .map(|(fd, n)| (format!("fd {fd} ({})", describe_fd(served.node_pid, fd)), n))
        .collect();
    staged.remove(served).await?;
    if failed > 0 {
        return Err(BenchError::Setup(format!(
            "{failed} publish+unpublish pairs failed under strace"
        )));
    }
    let counts = parse_summary(&summary);
    let total: u64 = counts.values().sum();
    Ok(SyscallReport {
        pairs,
        total_per_pair: total as f64 / pairs.max(1) as f64,
        per_pair: per_pair(counts, pairs),
        paths_per_pair: per_pair(
            parse_path_calls(&files, &staged_dir_text(served, "bench-strace")),
            pairs,
        ),
        writes_per_pair: per_pair(writes, pairs),
    })
}

/// The pod directory of the staged volume `name`, as text.
fn staged_dir_text(served: &Served, name: &str) -> String {
    served.pod_path(name).display().to_string()
}

/// A measurement window over the process events and the simulator's call log.
struct Window<'a> {
    forks: &'a ForkCounter,
    log: PathBuf,
    offset: u64,
    controller: u64,
    node: u64,
}

impl<'a> Window<'a> {
    fn open(forks: &'a ForkCounter, log: &Path) -> Result<Window<'a>> {
        forks.sync()?;
        Ok(Window {
            forks,
            log: log.to_path_buf(),
            offset: std::fs::metadata(log).map(|m| m.len()).unwrap_or(0),
            controller: forks.count(CONTROLLER),
            node: forks.count(NODE),
        })
    }

    fn close(self, rpc: &str, calls: usize) -> Result<SpawnRow> {
        self.forks.sync()?;
        let text = read_from(&self.log, self.offset)?;
        let tools = tools_in_log(&text);
        let examples = examples_in_log(&text);
        let total: usize = tools.values().sum();
        let per = |n: u64| n as f64 / calls.max(1) as f64;
        Ok(SpawnRow {
            rpc: rpc.to_string(),
            calls,
            sim_tool_calls_per_rpc: per(total as u64),
            controller_processes_per_rpc: per(self.forks.count(CONTROLLER) - self.controller),
            node_processes_per_rpc: per(self.forks.count(NODE) - self.node),
            tools,
            examples,
        })
    }
}

/// The text of `path` from byte `offset` on (empty when the file does not exist).
fn read_from(path: &Path, offset: u64) -> Result<String> {
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        f.seek(SeekFrom::Start(offset))
            .and_then(|_| f.read_to_string(&mut text))
            .map_err(|e| BenchError::io("read", path, e))?;
    }
    Ok(text)
}

/// A tool call as `tool` plus its subcommand (`lfs setquota`, `beegfs entry create`,
/// `beegfs-ctl --getquota`); flags and operands are left out.
pub fn describe_call(tool: &str, args: &[String]) -> String {
    let words: Vec<&str> = match tool {
        "lfs" | "lctl" => args
            .iter()
            .filter(|a| !a.starts_with('-'))
            .take(1)
            .map(String::as_str)
            .collect(),
        "beegfs" => args
            .iter()
            .filter(|a| !a.starts_with('-'))
            .take(2)
            .map(String::as_str)
            .collect(),
        "beegfs-ctl" => args
            .iter()
            .filter(|a| a.starts_with("--") && !a.contains('=') && *a != "--unmounted")
            .take(1)
            .map(String::as_str)
            .collect(),
        _ => Vec::new(),
    };
    std::iter::once(tool)
        .chain(words)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The tool and arguments of one calls.log line (`{"tool": ..., "args": [...]}`).
fn logged_call(line: &str) -> Option<(String, Vec<String>)> {
    let v = serde_json::from_str::<serde_json::Value>(line).ok()?;
    let tool = v.get("tool")?.as_str()?.to_string();
    let args = v
        .get("args")
        .and_then(|a| a.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    Some((tool, args))
}

/// The first logged command line of each kind of call ([`describe_call`]).
pub fn examples_in_log(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (tool, args) in text.lines().filter_map(logged_call) {
        out.entry(describe_call(&tool, &args)).or_insert_with(|| {
            std::iter::once(tool)
                .chain(args)
                .collect::<Vec<_>>()
                .join(" ")
        });
    }
    out
}

/// Tool invocations by [`describe_call`] in calls.log lines (`{"tool": ..., "args": [...]}`
/// per line); a line that is not such JSON counts under `?`.
pub fn tools_in_log(text: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let call = logged_call(line).map(|(tool, args)| describe_call(&tool, &args));
        *out.entry(call.unwrap_or_else(|| "?".into())).or_default() += 1;
    }
    out
}

async fn spawns_section(
    served: &Served,
    forks: &ForkCounter,
    samples: usize,
) -> Result<Vec<SpawnRow>> {
    let log = served.calls_log();
    let k = samples.max(1);
    let mut rows = Vec::new();
    let mut controller = served.controller().await?;
    let mut node = served.node().await?;
    let controller_id =
        pb::identity_client::IdentityClient::new(channel(&served.controller_socket()).await?);
    let node_id = pb::identity_client::IdentityClient::new(channel(&served.node_socket()).await?);

    let w = Window::open(forks, &log)?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    rows.push(w.close("(idle, 2 s)", 1)?);

    for (name, client) in [
        ("Probe (controller)", controller_id),
        ("Probe (node)", node_id),
    ] {
        let mut client = client;
        let w = Window::open(forks, &log)?;
        for _ in 0..k {
            client
                .probe(pb::ProbeRequest {})
                .await
                .map_err(|s| BenchError::rpc("Probe", &s))?;
        }
        rows.push(w.close(name, k)?);
    }

    let w = Window::open(forks, &log)?;
    let mut volumes = Vec::new();
    for i in 0..k {
        volumes.push(create_volume(&mut controller, &format!("bench-spawn-{i}"), served).await?);
    }
    rows.push(w.close("CreateVolume", k)?);

    let w = Window::open(forks, &log)?;
    for v in &volumes {
        controller
            .controller_expand_volume(pb::ControllerExpandVolumeRequest {
                volume_id: v.volume_id.clone(),
                capacity_range: Some(pb::CapacityRange {
                    required_bytes: 2 * requests::GIB,
                    limit_bytes: 0,
                }),
                volume_capability: Some(requests::rwx()),
                ..Default::default()
            })
            .await
            .map_err(|s| BenchError::rpc("ControllerExpandVolume", &s))?;
    }
    rows.push(w.close("ControllerExpandVolume", k)?);

    let staging: Vec<PathBuf> = (0..k)
        .map(|i| served.pod_path(&format!("bench-spawn-{i}/staging")))
        .collect();
    let mut targets = Vec::with_capacity(k);
    for i in 0..k {
        let parent = served.pod_path(&format!("bench-spawn-{i}/pod"));
        std::fs::create_dir_all(&parent).map_err(|e| BenchError::io("create", &parent, e))?;
        targets.push(parent.join("target"));
    }
    let w = Window::open(forks, &log)?;
    for (v, s) in volumes.iter().zip(&staging) {
        node.node_stage_volume(requests::stage(v, s))
            .await
            .map_err(|e| BenchError::rpc("NodeStageVolume", &e))?;
    }
    rows.push(w.close("NodeStageVolume", k)?);

    let w = Window::open(forks, &log)?;
    for ((v, s), t) in volumes.iter().zip(&staging).zip(&targets) {
        node.node_publish_volume(requests::publish(v, s, t))
            .await
            .map_err(|e| BenchError::rpc("NodePublishVolume", &e))?;
    }
    rows.push(w.close("NodePublishVolume", k)?);

    // Kubelet asks for each mounted volume's stats about once a minute: the first call on
    // a volume, then the ones after it.
    for name in [
        "NodeGetVolumeStats (first on each volume)",
        "NodeGetVolumeStats (again, as kubelet polls)",
    ] {
        let w = Window::open(forks, &log)?;
        for (v, t) in volumes.iter().zip(&targets) {
            node.node_get_volume_stats(pb::NodeGetVolumeStatsRequest {
                volume_id: v.volume_id.clone(),
                volume_path: t.display().to_string(),
                staging_target_path: String::new(),
            })
            .await
            .map_err(|e| BenchError::rpc("NodeGetVolumeStats", &e))?;
        }
        rows.push(w.close(name, k)?);
    }

    let w = Window::open(forks, &log)?;
    for (v, t) in volumes.iter().zip(&targets) {
        node.node_unpublish_volume(requests::unpublish(&v.volume_id, t))
            .await
            .map_err(|e| BenchError::rpc("NodeUnpublishVolume", &e))?;
    }
    rows.push(w.close("NodeUnpublishVolume", k)?);

    let w = Window::open(forks, &log)?;
    for (v, s) in volumes.iter().zip(&staging) {
        node.node_unstage_volume(requests::unstage(&v.volume_id, s))
            .await
            .map_err(|e| BenchError::rpc("NodeUnstageVolume", &e))?;
    }
    rows.push(w.close("NodeUnstageVolume", k)?);

    let w = Window::open(forks, &log)?;
    let mut snapshots = Vec::new();
    for (i, v) in volumes.iter().enumerate() {
        let snapshot = controller
            .create_snapshot(pb::CreateSnapshotRequest {
                source_volume_id: v.volume_id.clone(),
                name: format!("bench-spawn-snap-{i}"),
                ..Default::default()
            })
            .await
            .map_err(|e| BenchError::rpc("CreateSnapshot", &e))?
            .into_inner()
            .snapshot
            .ok_or_else(|| {
                BenchError::Setup("CreateSnapshot answered without a snapshot".into())
            })?;
        wait_snapshot_ready(&mut controller, &snapshot).await?;
        snapshots.push(snapshot.snapshot_id);
    }
    rows.push(w.close(
        "CreateSnapshot (until ready; ListSnapshots polls included)",
        k,
    )?);

    let w = Window::open(forks, &log)?;
    for id in &snapshots {
        controller
            .delete_snapshot(pb::DeleteSnapshotRequest {
                snapshot_id: id.clone(),
                ..Default::default()
            })
            .await
            .map_err(|e| BenchError::rpc("DeleteSnapshot", &e))?;
    }
    rows.push(w.close("DeleteSnapshot", k)?);

    let w = Window::open(forks, &log)?;
    for v in &volumes {
        controller
            .delete_volume(requests::delete(&v.volume_id))
            .await
            .map_err(|e| BenchError::rpc("DeleteVolume", &e))?;
    }
    rows.push(w.close("DeleteVolume", k)?);
    Ok(rows)
}

async fn wait_snapshot_ready(controller: &mut Controller, snapshot: &pb::Snapshot) -> Result<()> {
    if snapshot.ready_to_use {
        return Ok(());
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let listed = controller
            .list_snapshots(pb::ListSnapshotsRequest {
                snapshot_id: snapshot.snapshot_id.clone(),
                ..Default::default()
            })
            .await
            .map_err(|e| BenchError::rpc("ListSnapshots", &e))?
            .into_inner();
        if listed
            .entries
            .iter()
            .filter_map(|e| e.snapshot.as_ref())
            .any(|s| s.snapshot_id == snapshot.snapshot_id && s.ready_to_use)
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(BenchError::Setup(format!(
                "snapshot {} not ready after two minutes",
                snapshot.snapshot_id
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether the plugin on `socket` answers Probe with ready.
async fn probe_ready(socket: &Path) -> bool {
    let Ok(channel) = k8s_adapter::socket_client::connect(socket, Duration::from_millis(500)).await
    else {
        return false;
    };
    match pb::identity_client::IdentityClient::new(channel)
        .probe(pb::ProbeRequest {})
        .await
    {
        Ok(answer) => answer.into_inner().ready != Some(false),
        Err(_) => false,
    }
}

async fn startup_one(
    served: &Served,
    forks: &ForkCounter,
    role: &'static str,
    launches: usize,
    work: &Path,
) -> Result<StartupReport> {
    let label = if role == CONTROLLER {
        "launched-controller"
    } else {
        "launched-node"
    };
    let mut socket_ms = Vec::new();
    let mut ready_ms = Vec::new();
    let mut stop_ms = Vec::new();
    let mut rss = Vec::new();
    let mut spawned = Vec::new();
    let mut tools = BTreeMap::new();
    for i in 0..launches.max(1) {
        let dir = work.join(format!("startup-{role}-{i}"));
        std::fs::create_dir_all(&dir).map_err(|e| BenchError::io("create", &dir, e))?;
        let socket = dir.join("csi.sock");
        forks.sync()?;
        let before = forks.count(label);
        let log = served.calls_log();
        let offset = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        let started = Instant::now();
        let mut child = served.launch_plugin(role, &socket, &dir)?;
        forks.track(child.id(), label);
        let mut socket_at = None;
        let outcome = loop {
            if started.elapsed() > Duration::from_secs(30) {
                break Err(BenchError::Setup(format!(
                    "{role} launch {i}: no ready Probe within 30 s"
                )));
            }
            if let Ok(Some(status)) = child.try_wait() {
                break Err(BenchError::Setup(format!(
                    "{role} launch {i} exited during start-up ({status})"
                )));
            }
            if socket_at.is_none() && socket.exists() {
                socket_at = Some(started.elapsed());
            }
            if socket_at.is_some() && probe_ready(&socket).await {
                break Ok(started.elapsed());
            }
            // Finer than the async timer's millisecond; lets dropped connections close.
            std::thread::sleep(Duration::from_micros(100));
            tokio::task::yield_now().await;
        };
        let memory = procfs::memory(child.id());
        forks.sync()?;
        spawned.push((forks.count(label) - before) as f64);
        for (tool, n) in tools_in_log(&read_from(&log, offset)?) {
            *tools.entry(tool).or_default() += n;
        }
        // Let the probe connections close before asking the plugin to stop.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let stopping = Instant::now();
        stop_child(&mut child).await;
        stop_ms.push(stopping.elapsed().as_secs_f64() * 1e3);
        forks.untrack(child.id());
        let _ = std::fs::remove_dir_all(&dir);
        let ready = outcome?;
        ready_ms.push(ready.as_secs_f64() * 1e3);
        socket_ms.push(socket_at.unwrap_or(ready).as_secs_f64() * 1e3);
        if let Ok(m) = memory {
            rss.push(m.rss_kib as f64);
        }
    }
    let min = ready_ms.iter().copied().fold(f64::INFINITY, f64::min);
    let max = ready_ms.iter().copied().fold(0.0, f64::max);
    Ok(StartupReport {
        role: role.to_string(),
        launches: ready_ms.len(),
        socket_ms_median: median(&socket_ms).unwrap_or(0.0),
        ready_ms_median: median(&ready_ms).unwrap_or(0.0),
        ready_ms_min: min,
        ready_ms_max: max,
        rss_at_ready_kib_median: median(&rss).unwrap_or(0.0),
        processes_until_ready_median: median(&spawned).unwrap_or(0.0),
        stop_ms_median: median(&stop_ms).unwrap_or(0.0),
        tools_until_ready: tools,
    })
}

/// Runs the chosen benchmarks on `served`; `work` is a scratch directory of this run.
/// Runs the chosen benchmarks on `served`; `work` is a scratch directory of this run. A
/// benchmark that fails is recorded in [`FsReport::errors`] and the others still run.
pub async fn run(
    served: &Served,
    forks: &ForkCounter,
    options: &FsOptions,
    sections: Sections,
    work: &Path,
    progress: &dyn Fn(&str),
) -> FsReport {
    let fs = served.filesystem.clone();
    let mut report = FsReport {
        filesystem: fs.clone(),
        memory: None,
        create_delete: Vec::new(),
        publish_unpublish: Vec::new(),
        rpc_floor: None,
        mount_scaling: Vec::new(),
        mount_scaling_ratio: None,
        spawns: Vec::new(),
        process_events_lost: false,
        startup: Vec::new(),
        syscalls: None,
        syscalls_skipped: None,
        errors: Vec::new(),
    };
    let failed = |what: &str, e: BenchError| {
        progress(&format!("{fs}: {what} failed: {e}"));
        report_error(what, e)
    };
    let mut errors = Vec::new();
    // Memory first, so the peaks are not those of the rate benchmarks.
    if sections.memory {
        progress(&format!(
            "{fs}: memory idle and under {} concurrent RPCs",
            options.memory_concurrency
        ));
        match memory_section(served, options.memory_concurrency).await {
            Ok(m) => report.memory = Some(m),
            Err(e) => errors.push(failed("memory", e)),
        }
    }
    if sections.spawns {
        progress(&format!("{fs}: processes spawned per RPC"));
        match spawns_section(served, forks, options.spawn_samples).await {
            Ok(rows) => report.spawns = rows,
            Err(e) => errors.push(failed("spawns", e)),
        }
        report.process_events_lost = forks.lost_events();
    }
    if sections.rates {
        progress(&format!(
            "{fs}: RPC rates at concurrency {:?}",
            options.concurrency
        ));
        match rates_section(served, options).await {
            Ok((cd, pu)) => {
                report.create_delete = cd;
                report.publish_unpublish = pu;
            }
            Err(e) => errors.push(failed("rates", e)),
        }
        match rpc_floor(served, options.publish_pairs).await {
            Ok(f) => report.rpc_floor = Some(f),
            Err(e) => errors.push(failed("RPC round trip", e)),
        }
    }
    if sections.mounts {
        progress(&format!(
            "{fs}: publish with {:?} unrelated mounts",
            options.mount_levels
        ));
        match mounts_section(served, options, work).await {
            Ok((levels, ratio)) => {
                report.mount_scaling = levels;
                report.mount_scaling_ratio = ratio;
            }
            Err(e) => errors.push(failed("mounts", e)),
        }
    }
    if sections.syscalls {
        match find_strace() {
            Some(strace) => {
                progress(&format!(
                    "{fs}: node syscalls per publish+unpublish (strace)"
                ));
                match syscalls_section(served, &strace, options.syscall_pairs, work).await {
                    Ok(s) => report.syscalls = Some(s),
                    Err(e) => errors.push(failed("syscalls", e)),
                }
            }
            None => report.syscalls_skipped = Some("strace is not on PATH".into()),
        }
    }
    if sections.startup {
        progress(&format!(
            "{fs}: start-up to a ready Probe, {} launches each",
            options.launches
        ));
        for role in [NODE, CONTROLLER] {
            match startup_one(served, forks, role, options.launches, work).await {
                Ok(s) => report.startup.push(s),
                Err(e) => errors.push(failed("startup", e)),
            }
        }
    }
    report.errors = errors;
    report
}

/// `what: error` for the report.
fn report_error(what: &str, e: BenchError) -> String {
    format!("{what}: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn call_log_lines_are_counted_by_tool() {
        let text = concat!(
            r#"{"tool":"lfs","args":["project"],"exit_code":0,"pid":1}"#,
            "\n",
            r#"{"tool":"mount","args":[],"exit_code":0,"pid":2}"#,
            "\n\n",
            r#"{"tool":"lfs","args":["setquota"],"exit_code":0,"pid":3}"#,
            "\nnot json\n"
        );
        let tools = tools_in_log(text);
        assert_eq!(tools.get("lfs project"), Some(&1));
        assert_eq!(tools.get("lfs setquota"), Some(&1));
        assert_eq!(tools.get("mount"), Some(&1));
        assert_eq!(tools.get("?"), Some(&1));
        assert_eq!(tools.values().sum::<usize>(), 4);
        let examples = examples_in_log(text);
        assert_eq!(
            examples.get("lfs setquota").map(String::as_str),
            Some("lfs setquota")
        );
        assert_eq!(
            examples.get("lfs project").map(String::as_str),
            Some("lfs project")
        );
        assert_eq!(examples.len(), 3);
    }

    #[test]
    fn calls_are_described_by_their_subcommand() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            describe_call("lfs", &args(&["setquota", "-p", "7", "/mnt"])),
            "lfs setquota"
        );
        assert_eq!(
            describe_call("lctl", &args(&["get_param", "-n", "version"])),
            "lctl get_param"
        );
        assert_eq!(
            describe_call(
                "beegfs",
                &args(&[
                    "--mgmtd-addr=h:8010",
                    "--auth-disable",
                    "entry",
                    "create",
                    "directory",
                    "/x"
                ])
            ),
            "beegfs entry create"
        );
        assert_eq!(
            describe_call(
                "beegfs-ctl",
                &args(&["--cfgFile=/c", "--unmounted", "--getquota", "--gid", "7"])
            ),
            "beegfs-ctl --getquota"
        );
        assert_eq!(
            describe_call("mount", &args(&["-t", "lustre", "a", "b"])),
            "mount"
        );
    }

    proptest! {
        #[test]
        fn every_nonblank_line_counts_once(lines in proptest::collection::vec("[a-z{}\":, ]{0,30}", 0..20)) {
            let text = lines.join("\n");
            let nonblank = lines.iter().filter(|l| !l.trim().is_empty()).count();
            prop_assert_eq!(tools_in_log(&text).values().sum::<usize>(), nonblank);
        }
    }
}
