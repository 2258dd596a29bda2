//! The whole run's figures, the targets judged against them, and the human-readable table.

use std::fmt::Write as _;

use serde::Serialize;

use crate::fsbench::FsReport;
use crate::load::PairRun;
use crate::procfs::Machine;
use crate::snapshot::SnapshotReport;

/// Node plugin idle resident memory target, KiB.
pub const NODE_IDLE_RSS_KIB: u64 = 5 * 1024;
/// Launch-to-ready-Probe target, ms.
pub const PROBE_READY_MS: f64 = 5.0;
/// Publish+unpublish p50 target, µs.
pub const PUBLISH_P50_US: f64 = 500.0;
/// Largest slowdown at the most unrelated mounts.
pub const MOUNT_RATIO: f64 = 1.2;
/// Smallest speed-up of snapshot creation over GNU tar on many small files, verification on.
pub const SNAPSHOT_SPEEDUP: f64 = 2.0;

/// One target and whether the run met it.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// Where it applies (a filesystem, or `snapshot`).
    pub scope: String,
    /// What is targeted.
    pub target: String,
    /// What was measured.
    pub measured: String,
    /// Met or not; `None` when the figure was not measured in this run.
    pub pass: Option<bool>,
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The command line.
    pub command: String,
    /// `--quick` or full.
    pub quick: bool,
    /// `git describe --always --dirty` of the working directory, when it is a checkout.
    pub revision: Option<String>,
    /// The machine.
    pub machine: Machine,
    /// How the spawned processes were counted.
    pub process_count_method: String,
    /// Per filesystem.
    pub filesystems: Vec<FsReport>,
    /// Snapshot throughput.
    pub snapshot: Option<SnapshotReport>,
    /// The targets.
    pub targets: Vec<Target>,
}

/// How processes are counted, as printed with the figures.
pub const PROCESS_COUNT_METHOD: &str = "Two independent counts per RPC type, each over a window in which only that RPC runs (sequentially, N calls; the figure is per call): \
(1) lines the simulator appended to its calls.log (one per simulated tool run: mount, umount, lfs, lctl, beegfs, beegfs-ctl, dtar); \
(2) process creations reported by the kernel's process connector (netlink CN_IDX_PROC fork events) whose parent is the plugin process or one of its descendants, threads excluded. \
(2) also counts tools that are not simulated (GNU tar). Each window is closed by a marker process of the bench, so every event of the window has been read.";

fn pair_p50(run: &PairRun) -> Option<f64> {
    run.pair.map(|s| s.p50_us)
}

/// Judges the targets of the issue against the figures.
pub fn targets(filesystems: &[FsReport], snapshot: Option<&SnapshotReport>) -> Vec<Target> {
    let mut out = Vec::new();
    for fs in filesystems {
        let scope = fs.filesystem.clone();
        if let Some(m) = &fs.memory {
            out.push(Target {
                scope: scope.clone(),
                target: format!("node plugin idle VmRSS < {} MiB", NODE_IDLE_RSS_KIB / 1024),
                measured: format!("{:.1} MiB", m.node.idle.rss_kib as f64 / 1024.0),
                pass: Some(m.node.idle.rss_kib < NODE_IDLE_RSS_KIB),
            });
        }
        for s in &fs.startup {
            out.push(Target {
                scope: scope.clone(),
                target: format!(
                    "{} ready Probe within {PROBE_READY_MS} ms of launch (median)",
                    s.role
                ),
                measured: format!("{:.2} ms", s.ready_ms_median),
                pass: Some(s.ready_ms_median <= PROBE_READY_MS),
            });
        }
        let sequential = fs
            .publish_unpublish
            .iter()
            .find(|r| r.concurrency == 1)
            .and_then(pair_p50);
        let spawned: Option<f64> = {
            let rows: Vec<_> = fs
                .spawns
                .iter()
                .filter(|r| r.rpc == "NodePublishVolume" || r.rpc == "NodeUnpublishVolume")
                .collect();
            (rows.len() == 2).then(|| {
                rows.iter()
                    .map(|r| r.node_processes_per_rpc.max(r.sim_tool_calls_per_rpc))
                    .sum()
            })
        };
        if sequential.is_some() || spawned.is_some() {
            let mut measured = format!(
                "p50 {}, {} processes per publish+unpublish",
                sequential.map_or("not measured".into(), |v| format!("{:.3} ms", v / 1e3)),
                spawned.map_or("not measured".into(), |v| format!("{v:.2}"))
            );
            if let Some(none) = fs.mount_scaling.first() {
                let _ = write!(
                    measured,
                    " (the target directory's mkdir+rmdir alone, on this disk: {:.3} ms)",
                    none.raw_target_dirs.p50_us / 1e3
                );
            }
            let pass = match (sequential, spawned) {
                (Some(p), Some(n)) => Some(p < PUBLISH_P50_US && n == 0.0),
                (Some(p), None) if p >= PUBLISH_P50_US => Some(false),
                (None, Some(n)) if n > 0.0 => Some(false),
                _ => None,
            };
            out.push(Target {
                scope: scope.clone(),
                target: format!(
                    "NodePublish+NodeUnpublish p50 < {} ms (concurrency 1) with no process spawned",
                    PUBLISH_P50_US / 1e3
                ),
                measured,
                pass,
            });
        }
        if let (Some(ratio), Some(hi)) = (fs.mount_scaling_ratio, fs.mount_scaling.last()) {
            out.push(Target {
                scope: scope.clone(),
                target: format!(
                    "publish+unpublish p50 at {} unrelated mounts <= {MOUNT_RATIO}x that at {}",
                    hi.unrelated_mounts,
                    fs.mount_scaling.first().map_or(0, |l| l.unrelated_mounts)
                ),
                measured: format!("{ratio:.2}x"),
                pass: Some(ratio <= MOUNT_RATIO),
            });
        }
    }
    if let Some(snap) = snapshot {
        let found = snap
            .trees
            .iter()
            .find(|t| t.tree == "small files")
            .and_then(|t| {
                let speedup = |variant: &str| {
                    t.results
                        .iter()
                        .find(|r| r.variant == variant)
                        .map(|r| r.speedup_vs_gnu_tar)
                };
                let engine = speedup(crate::snapshot::ENGINE_VERIFIED_CREATE)?;
                Some((t.files, engine, speedup(crate::snapshot::DISK_FLOOR)))
            });
        if let Some((files, speedup, disk)) = found {
            // Plain GNU tar leaves its archive in the page cache; the engine's is on the
            // disk when it returns, so the disk's own speed bounds the ratio.
            let bound = disk.map_or(String::new(), |d| {
                format!(" (writing the archive's bytes alone: {d:.2}x)")
            });
            out.push(Target {
                scope: "snapshot".into(),
                target: format!(
                    "snapshot create, verification on, >= {SNAPSHOT_SPEEDUP}x faster than GNU tar ({files} small files)"
                ),
                measured: format!("{speedup:.2}x{bound}"),
                pass: Some(speedup >= SNAPSHOT_SPEEDUP),
            });
        }
    }
    out
}

fn ms(us: f64) -> String {
    format!("{:.3}", us / 1e3)
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

fn pair_table(out: &mut String, title: &str, first: &str, second: &str, runs: &[PairRun]) {
    if runs.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n{title}");
    let _ = writeln!(
        out,
        "  {:>5} {:>6} {:>6} {:>10} {:>10} {:>10} {:>12} {:>12} {:>12} {:>12}",
        "conc",
        "pairs",
        "errors",
        "pairs/s",
        "p50 ms",
        "p99 ms",
        format!("{first} p50"),
        format!("{first} p99"),
        format!("{second} p50"),
        format!("{second} p99")
    );
    for r in runs {
        let cell = |s: Option<crate::stats::Summary>, p99: bool| {
            s.map_or("-".into(), |s| ms(if p99 { s.p99_us } else { s.p50_us }))
        };
        let _ = writeln!(
            out,
            "  {:>5} {:>6} {:>6} {:>10.1} {:>10} {:>10} {:>12} {:>12} {:>12} {:>12}",
            r.concurrency,
            r.pairs,
            r.errors,
            r.pairs_per_second,
            cell(r.pair, false),
            cell(r.pair, true),
            cell(r.first, false),
            cell(r.first, true),
            cell(r.second, false),
            cell(r.second, true),
        );
        if let Some(e) = &r.first_error {
            let _ = writeln!(out, "        first error: {e}");
        }
    }
}

/// The human-readable report.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let m = &report.machine;
    let _ = writeln!(
        out,
        "pfs-csi bench{}{} on {} CPUs ({}), {} MiB, kernel {}, load {:.2} at start",
        if report.quick { " (--quick)" } else { "" },
        report
            .revision
            .as_deref()
            .map_or(String::new(), |r| format!(" at {r}")),
        m.cpus,
        m.cpu_model,
        m.memory_mib,
        m.kernel,
        m.load_average_1m
    );
    for fs in &report.filesystems {
        let _ = writeln!(out, "\n=== {} ===", fs.filesystem);
        for e in &fs.errors {
            let _ = writeln!(out, "  FAILED {e}");
        }
        if let Some(mem) = &fs.memory {
            let _ = writeln!(
                out,
                "\nResident memory, MiB (from /proc/<pid>/status: VmRSS = RssAnon + RssFile + RssShmem; VmHWM = peak VmRSS)"
            );
            let _ = writeln!(
                out,
                "  {:<11} {:>9} {:>9} {:>9} {:>9} {:>8} {:>14} {:>10} {:>10} {:>7}  load",
                "plugin",
                "idle RSS",
                "anon",
                "file",
                "idle HWM",
                "threads",
                "load peak RSS",
                "after RSS",
                "after HWM",
                "errors"
            );
            for (name, r) in [("controller", &mem.controller), ("node", &mem.node)] {
                let _ = writeln!(
                    out,
                    "  {:<11} {:>9} {:>9} {:>9} {:>9} {:>8} {:>14} {:>10} {:>10} {:>7}  {}",
                    name,
                    mib(r.idle.rss_kib),
                    mib(r.idle.anon_kib),
                    mib(r.idle.file_kib),
                    mib(r.idle.hwm_kib),
                    r.idle.threads,
                    mib(r.load_peak_rss_kib),
                    mib(r.after_load.rss_kib),
                    mib(r.after_load.hwm_kib),
                    r.errors,
                    r.load
                );
                if !r.idle_by_mapping.is_empty() {
                    let parts = r
                        .idle_by_mapping
                        .iter()
                        .map(|(k, v)| format!("{k} {}", mib(*v)))
                        .collect::<Vec<_>>()
                        .join(", ");
                    let _ = writeln!(out, "        idle RSS by mapping (MiB): {parts}");
                }
                if let Some(e) = &r.first_error {
                    let _ = writeln!(out, "        first error: {e}");
                }
            }
        }
        if !fs.spawns.is_empty() {
            let _ = writeln!(
                out,
                "\nProcesses per RPC (sim = simulator calls.log lines; ctrl/node = process-connector fork events under each plugin){}",
                if fs.process_events_lost {
                    " [KERNEL DROPPED EVENTS: counts are lower bounds]"
                } else {
                    ""
                }
            );
            let _ = writeln!(
                out,
                "  {:<62} {:>5} {:>6} {:>6} {:>6}  tools",
                "rpc", "calls", "sim", "ctrl", "node"
            );
            for r in &fs.spawns {
                let tools = r
                    .tools
                    .iter()
                    .map(|(k, v)| format!("{k}x{v}"))
                    .collect::<Vec<_>>()
                    .join(" ");
                let _ = writeln!(
                    out,
                    "  {:<62} {:>5} {:>6.2} {:>6.2} {:>6.2}  {}",
                    r.rpc,
                    r.calls,
                    r.sim_tool_calls_per_rpc,
                    r.controller_processes_per_rpc,
                    r.node_processes_per_rpc,
                    tools
                );
            }
        }
        pair_table(
            &mut out,
            "CreateVolume+DeleteVolume (ms)",
            "create",
            "delete",
            &fs.create_delete,
        );
        pair_table(
            &mut out,
            "NodePublishVolume+NodeUnpublishVolume, one staged volume per worker, fresh target per pair (ms)",
            "publish",
            "unpub",
            &fs.publish_unpublish,
        );
        if let Some(f) = &fs.rpc_floor {
            let _ = writeln!(
                out,
                "  one sequential NodeGetCapabilities (no work, the RPC round trip alone): p50 {} ms, p99 {} ms",
                ms(f.p50_us),
                ms(f.p99_us)
            );
        }
        if !fs.mount_scaling.is_empty() {
            let _ = writeln!(
                out,
                "\nSequential publish+unpublish with unrelated tmpfs mounts on the node (ms; raw = the bench's own bind mount + umount, the kernel's floor; dirs = the bench's own mkdir + rmdir of a directory beside the targets, the disk's floor (every publish makes its target, every unpublish removes it); mountinfo = one read of /proc/self/mountinfo)"
            );
            let _ = writeln!(
                out,
                "  {:>7} {:>7} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>10}",
                "mounts",
                "lines",
                "pairs",
                "p50",
                "p99",
                "pub p50",
                "unp p50",
                "raw p50",
                "dirs p50",
                "mountinfo"
            );
            for l in &fs.mount_scaling {
                let p = |s: Option<crate::stats::Summary>| s.map_or("-".into(), |s| ms(s.p50_us));
                let _ = writeln!(
                    out,
                    "  {:>7} {:>7} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>10}",
                    l.unrelated_mounts,
                    l.mount_table_lines,
                    l.run.pairs,
                    p(l.run.pair),
                    l.run.pair.map_or("-".into(), |s| ms(s.p99_us)),
                    p(l.run.first),
                    p(l.run.second),
                    ms(l.raw_bind_unbind.p50_us),
                    ms(l.raw_target_dirs.p50_us),
                    ms(l.mountinfo_read.p50_us),
                );
                if !l.pass_p50_us.is_empty() {
                    let passes = l
                        .pass_p50_us
                        .iter()
                        .map(|v| ms(*v))
                        .collect::<Vec<_>>()
                        .join(" ");
                    let _ = writeln!(out, "          p50 of each pass, in order: {passes}");
                }
                if let Some(e) = &l.run.first_error {
                    let _ = writeln!(out, "        {} errors, first: {e}", l.run.errors);
                }
            }
            if let Some(r) = fs.mount_scaling_ratio {
                let (lo, hi) = (fs.mount_scaling.first(), fs.mount_scaling.last());
                let raw = match (lo, hi) {
                    (Some(lo), Some(hi)) if lo.raw_bind_unbind.p50_us > 0.0 => {
                        format!(
                            "{:.2}x",
                            hi.raw_bind_unbind.p50_us / lo.raw_bind_unbind.p50_us
                        )
                    }
                    _ => "-".into(),
                };
                let _ = writeln!(
                    out,
                    "  ratio of p50, most mounts over none: plugin {r:.2}x, raw bind+umount {raw}"
                );
            }
        }
        if let Some(sc) = &fs.syscalls {
            let _ = writeln!(
                out,
                "\nNode plugin syscalls per sequential publish+unpublish (strace -f attached, {} pairs): {:.1} in all",
                sc.pairs, sc.total_per_pair
            );
            let mut by: Vec<_> = sc.per_pair.iter().collect();
            by.sort_by(|a, b| b.1.total_cmp(a.1).then(a.0.cmp(b.0)));
            let top = by
                .iter()
                .take(16)
                .map(|(k, v)| format!("{k} {v:.1}"))
                .collect::<Vec<_>>()
                .join(", ");
            let _ = writeln!(out, "  by syscall: {top}");
            let mut paths: Vec<_> = sc.paths_per_pair.iter().collect();
            paths.sort_by(|a, b| b.1.total_cmp(a.1).then(a.0.cmp(b.0)));
            let writes = sc
                .writes_per_pair
                .iter()
                .map(|(k, v)| format!("{k} {v:.1}"))
                .collect::<Vec<_>>()
                .join(", ");
            let _ = writeln!(out, "  write/writev by descriptor: {writes}");
            let _ = writeln!(
                out,
                "  path syscalls per pair (<pod> = the pod's own staging and target paths):"
            );
            for (k, v) in paths.iter().take(20) {
                let _ = writeln!(out, "    {v:>6.2}  {k}");
            }
        }
        if let Some(why) = &fs.syscalls_skipped {
            let _ = writeln!(out, "\nNode plugin syscalls: skipped ({why})");
        }
        if !fs.startup.is_empty() {
            let _ = writeln!(
                out,
                "\nStart-up, spawn to first ready Probe (ms; median of launches; a fresh state and kubelet directory each)"
            );
            let _ = writeln!(
                out,
                "  {:<11} {:>8} {:>9} {:>9} {:>9} {:>9} {:>13} {:>16} {:>9}",
                "binary",
                "launches",
                "socket",
                "ready",
                "min",
                "max",
                "RSS at ready",
                "procs to ready",
                "stop"
            );
            for s in &fs.startup {
                let _ = writeln!(
                    out,
                    "  {:<11} {:>8} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9} MiB {:>16} {:>9.1}",
                    s.role,
                    s.launches,
                    s.socket_ms_median,
                    s.ready_ms_median,
                    s.ready_ms_min,
                    s.ready_ms_max,
                    format!("{:.1}", s.rss_at_ready_kib_median / 1024.0),
                    s.processes_until_ready_median,
                    s.stop_ms_median,
                );
                if !s.tools_until_ready.is_empty() {
                    let tools = s
                        .tools_until_ready
                        .iter()
                        .map(|(k, v)| format!("{k}x{v}"))
                        .collect::<Vec<_>>()
                        .join(" ");
                    let _ = writeln!(
                        out,
                        "        simulated tools run until ready, all launches: {tools}"
                    );
                }
            }
        }
    }
    if let Some(snap) = &report.snapshot {
        let _ = writeln!(
            out,
            "\n=== snapshot archives ({}, scratch on {}, median of {} runs) ===",
            snap.tar_version, snap.scratch_filesystem, snap.runs
        );
        for e in &snap.errors {
            let _ = writeln!(out, "  FAILED {e}");
        }
        for t in &snap.trees {
            let _ = writeln!(
                out,
                "\n{}: {} files, {:.1} MiB of data, archive {:.1} MiB (the tree written in {:.1} s)",
                t.tree,
                t.files,
                t.bytes as f64 / (1 << 20) as f64,
                t.archive_bytes as f64 / (1 << 20) as f64,
                t.write_seconds
            );
            let _ = writeln!(
                out,
                "  {:<8} {:<56} {:>9} {:>9} {:>10} {:>9}",
                "op", "variant", "seconds", "MiB/s", "files/s", "vs tar"
            );
            for r in &t.results {
                let _ = writeln!(
                    out,
                    "  {:<8} {:<56} {:>9.3} {:>9.1} {:>10.0} {:>8.2}x",
                    r.operation,
                    r.variant,
                    r.seconds_median,
                    r.mib_per_second,
                    r.files_per_second,
                    r.speedup_vs_gnu_tar
                );
            }
        }
    }
    if !report.targets.is_empty() {
        let _ = writeln!(out, "\n=== targets ===");
        for t in &report.targets {
            let verdict = match t.pass {
                Some(true) => "PASS",
                Some(false) => "MISS",
                None => "n/a ",
            };
            let _ = writeln!(
                out,
                "  {verdict}  [{}] {}: {}",
                t.scope, t.target, t.measured
            );
        }
    }
    let _ = writeln!(out, "\nProcess counting: {}", report.process_count_method);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{DISK_FLOOR, ENGINE_VERIFIED_CREATE, TreeReport, VariantResult};

    fn row(operation: &str, variant: &str, speedup: f64) -> VariantResult {
        VariantResult {
            operation: operation.into(),
            variant: variant.into(),
            seconds_median: 1.0,
            seconds: vec![1.0],
            mib_per_second: 1.0,
            files_per_second: 1.0,
            speedup_vs_gnu_tar: speedup,
        }
    }

    fn snapshot(results: Vec<VariantResult>) -> SnapshotReport {
        SnapshotReport {
            tar_version: "tar (GNU tar) 1.34".into(),
            tar_path: "/usr/bin/tar".into(),
            scratch_filesystem: "ext4".into(),
            runs: 1,
            trees: vec![TreeReport {
                tree: "small files".into(),
                files: 10,
                bytes: 40960,
                archive_bytes: 51200,
                write_seconds: 0.1,
                results,
            }],
            errors: Vec::new(),
        }
    }

    #[test]
    fn the_snapshot_target_is_judged_on_the_verified_create_and_names_the_disk_bound() {
        let report = snapshot(vec![
            row("create", "GNU tar -cf (plain)", 1.0),
            row("create", ENGINE_VERIFIED_CREATE, 1.52),
            row("component", DISK_FLOOR, 1.93),
        ]);
        let judged = targets(&[], Some(&report));
        assert_eq!(judged.len(), 1);
        assert_eq!(judged[0].pass, Some(false));
        assert_eq!(
            judged[0].measured,
            "1.52x (writing the archive's bytes alone: 1.93x)"
        );

        let report = snapshot(vec![row("create", ENGINE_VERIFIED_CREATE, 2.19)]);
        let judged = targets(&[], Some(&report));
        assert_eq!(judged[0].pass, Some(true));
        assert_eq!(judged[0].measured, "2.19x");
    }
}
