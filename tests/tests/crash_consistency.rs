//! Crash consistency of the Lustre controller: 200 mixed operations (create, delete, expand,
//! snapshot, snapshot delete) while the controller is killed with SIGKILL at random points
//! and started again on the same configuration; the client retries each operation until it
//! succeeds, as the external provisioner, resizer and snapshotter do. Afterwards the
//! filesystem, the driver's records, the project ids and the quota limits must agree with
//! what the client was told, with nothing orphaned, leaked or duplicated.
//!
//! The random choices come from a seeded generator; the seed is printed, and
//! `PFS_CSI_TEST_SEED=<n>` replays a run.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pfs_csi_tests::csi::{GIB, create_request, delete_request};
use pfs_csi_tests::plugin::{PluginOptions, PluginProcess, Role};
use pfs_csi_tests::proto::v1 as pb;
use pfs_csi_tests::{Serve, ServeOptions};
use pfs_sim::state::FsKind;
use pfs_sim::tools::lfs::LustreQuotas;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// Operations in one run.
const OPERATIONS: usize = 200;
/// Chance (in percent) that an operation's first attempt has a kill scheduled.
const KILL_PERCENT: u64 = 50;
/// Latest point of a scheduled kill after the attempt starts.
const KILL_WINDOW_MS: u64 = 15;
/// Attempts of one operation before the test gives up.
const MAX_ATTEMPTS: usize = 40;
/// Bound of one RPC.
const RPC_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound of the whole run of operations.
const RUN_BOUND: Duration = Duration::from_secs(150);

/// splitmix64: small, seeded, good enough to pick operations and kill points.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }
}

fn seed() -> u64 {
    std::env::var("PFS_CSI_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
}

/// One operation of the mix, with everything a retry needs.
#[derive(Debug, Clone)]
enum Op {
    Create { name: String, bytes: i64 },
    Delete { id: String },
    Expand { id: String, bytes: i64 },
    Snapshot { name: String, source: String },
    DeleteSnapshot { id: String },
}

/// What the client was told.
#[derive(Debug, Default)]
struct Model {
    /// Volume id -> (name, capacity the client was last answered).
    volumes: BTreeMap<String, (String, i64)>,
    /// Snapshot id -> (name, source volume id).
    snapshots: BTreeMap<String, (String, String)>,
}

/// The outcome of one successful operation.
enum Done {
    Volume(pb::Volume),
    Deleted,
    Expanded(i64),
    Snapshot(pb::Snapshot),
}

fn timed<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(RPC_TIMEOUT);
    request
}

async fn perform(
    client: &mut pb::controller_client::ControllerClient<Channel>,
    op: &Op,
) -> Result<Done, Status> {
    match op {
        Op::Create { name, bytes } => client
            .create_volume(timed(create_request(name, *bytes, &[])))
            .await
            .map(|a| Done::Volume(a.into_inner().volume.expect("a volume"))),
        Op::Delete { id } => client
            .delete_volume(timed(delete_request(id)))
            .await
            .map(|_| Done::Deleted),
        Op::Expand { id, bytes } => client
            .controller_expand_volume(timed(pb::ControllerExpandVolumeRequest {
                volume_id: id.clone(),
                capacity_range: Some(pb::CapacityRange {
                    required_bytes: *bytes,
                    limit_bytes: 0,
                }),
                ..Default::default()
            }))
            .await
            .map(|a| Done::Expanded(a.into_inner().capacity_bytes)),
        Op::Snapshot { name, source } => client
            .create_snapshot(timed(pb::CreateSnapshotRequest {
                source_volume_id: source.clone(),
                name: name.clone(),
                ..Default::default()
            }))
            .await
            .map(|a| Done::Snapshot(a.into_inner().snapshot.expect("a snapshot"))),
        Op::DeleteSnapshot { id } => client
            .delete_snapshot(timed(pb::DeleteSnapshotRequest {
                snapshot_id: id.clone(),
                ..Default::default()
            }))
            .await
            .map(|_| Done::Deleted),
    }
}

/// Runs `call`; when `kill_after` is set and the call is still running then, the
/// controller is killed with SIGKILL. Returns the call's result and whether a kill
/// happened.
async fn with_kill<T>(
    plugin: &mut PluginProcess,
    kill_after: Option<Duration>,
    call: impl Future<Output = T>,
) -> (T, bool) {
    let Some(delay) = kill_after else {
        return (call.await, false);
    };
    tokio::pin!(call);
    tokio::select! {
        out = &mut call => (out, false),
        _ = tokio::time::sleep(delay) => {
            plugin.kill9();
            (call.await, true)
        }
    }
}

/// The test's view of one controller process it may kill and restart.
struct Controller {
    plugin: PluginProcess,
    client: pb::controller_client::ControllerClient<Channel>,
    restarts: usize,
}

impl Controller {
    async fn restart(&mut self) {
        self.plugin.restart();
        self.plugin.wait_ready().await;
        self.client = self.plugin.controller().await;
        self.restarts += 1;
    }

    fn is_running(&mut self) -> bool {
        self.plugin.is_running()
    }
}

/// Runs `op` until it succeeds; a kill may be scheduled for its first attempt.
async fn run_until_success(
    ctl: &mut Controller,
    op: &Op,
    kill_after: Option<Duration>,
    seed: u64,
) -> Done {
    let mut kill_after = kill_after;
    for attempt in 0..MAX_ATTEMPTS {
        let mut client = ctl.client.clone();
        let (result, killed) =
            with_kill(&mut ctl.plugin, kill_after.take(), perform(&mut client, op)).await;
        match result {
            Ok(done) => {
                if killed || !ctl.is_running() {
                    ctl.restart().await;
                }
                return done;
            }
            Err(status) => {
                let dead = killed || !ctl.is_running();
                if dead {
                    ctl.restart().await;
                    continue;
                }
                // A live controller may ask for a retry (an operation on the same object
                // still in progress, a source not ready); anything else is a failure.
                let retry = matches!(status.code(), Code::Aborted | Code::Unavailable);
                assert!(
                    retry,
                    "seed {seed}: {op:?} failed on attempt {attempt} with {:?}: {}\n--- controller log (tail) ---\n{}",
                    status.code(),
                    status.message(),
                    tail(&ctl.plugin.logs(), 40)
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    panic!("seed {seed}: {op:?} did not succeed in {MAX_ATTEMPTS} attempts");
}

/// The lines of `logs` that name one of `names` (as a whole word).
fn matching_lines<'a>(logs: &str, names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.collect();
    logs.lines()
        .filter(|l| {
            names.iter().any(|n| {
                l.match_indices(n).any(|(i, _)| {
                    let after = l[i + n.len()..].chars().next();
                    !matches!(after, Some(c) if c.is_ascii_alphanumeric() || c == '-')
                })
            })
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The driver's records of one kind (`volumes` or `snapshots`), by file stem, as JSON.
fn records(meta: &Path, kind: &str) -> BTreeMap<String, serde_json::Value> {
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(meta.join(kind)) else {
        return out;
    };
    for e in entries.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(".json")
            && !name.starts_with('.')
        {
            let text = std::fs::read_to_string(e.path()).unwrap();
            out.insert(
                stem.to_string(),
                serde_json::from_str(&text)
                    .unwrap_or_else(|err| panic!("record {name} is not JSON ({err}): {text}")),
            );
        }
    }
    out
}

/// Names in `dir` (empty when it does not exist).
fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The project id of each top-level entry of the filesystem, from the simulator's metadata
/// (what `lfs project -d` reports).
fn top_level_projects(serve: &Serve) -> BTreeMap<String, u32> {
    let fs = serve
        .sim_root()
        .open_fs(FsKind::Lustre, "simfs1")
        .unwrap()
        .expect("simfs1 exists");
    let mut out = BTreeMap::new();
    pfs_sim::projects::walk_with_projects(&fs, |rel, _meta, state| {
        if !rel.is_empty() && !rel.contains('/') {
            out.insert(rel.to_string(), state.id);
        }
    })
    .unwrap();
    out
}

/// Project id -> hard block limit (KiB), for every project with any limit set.
fn limited_projects(serve: &Serve) -> BTreeMap<u32, u64> {
    let fs = serve
        .sim_root()
        .open_fs(FsKind::Lustre, "simfs1")
        .unwrap()
        .expect("simfs1 exists");
    let quotas: LustreQuotas = fs.read_meta("quota.json").unwrap();
    quotas
        .projects
        .into_iter()
        .filter(|(_, l)| l.bhard != 0 || l.bsoft != 0 || l.ihard != 0 || l.isoft != 0)
        .map(|(id, l)| (id, l.bhard))
        .collect()
}

/// Checks that the filesystem, the records, the projects and the quotas agree with `model`.
fn check_consistent(serve: &Serve, model: &Model, seed: u64, logs: &str) {
    let data = serve.fs_data_dir(FsKind::Lustre, "simfs1");
    let meta = data.join(".pfs-csi");
    let volume_records = records(&meta, "volumes");
    let dirs: BTreeSet<String> = names(&data)
        .into_iter()
        .filter(|n| n != ".pfs-csi")
        .collect();
    let expected: BTreeMap<String, (&String, i64)> = model
        .volumes
        .iter()
        .map(|(id, (name, bytes))| (name.clone(), (id, *bytes)))
        .collect();

    // Every directory has a ready record, and every record a directory.
    let orphans: Vec<&String> = dirs
        .iter()
        .filter(|d| !volume_records.contains_key(*d))
        .collect();
    assert!(
        orphans.is_empty(),
        "seed {seed}: directories without a record: {orphans:?}"
    );
    for (name, rec) in &volume_records {
        assert_eq!(
            rec["state"], "ready",
            "seed {seed}: record {name} is not ready: {rec}"
        );
        assert!(
            dirs.contains(name),
            "seed {seed}: record {name} has no directory"
        );
    }
    // Records are exactly the volumes the client was told exist.
    let recorded: BTreeSet<&String> = volume_records.keys().collect();
    let told: BTreeSet<&String> = expected.keys().collect();
    assert_eq!(
        recorded, told,
        "seed {seed}: the records differ from the volumes the client holds"
    );
    for (name, (id, bytes)) in &expected {
        let rec = &volume_records[name];
        assert_eq!(rec["volumeId"], id.as_str(), "seed {seed}: {rec}");
        assert_eq!(
            rec["capacityBytes"].as_i64(),
            Some(*bytes),
            "seed {seed}: the record's capacity differs from the last answer: {rec}"
        );
    }

    // Project ids: each volume directory carries its record's id, no id is used twice,
    // and every project with limits belongs to a volume, with the volume's capacity.
    let projects = top_level_projects(serve);
    let mut seen = BTreeMap::new();
    for (name, rec) in &volume_records {
        let id = rec["projectId"].as_u64().expect("projectId") as u32;
        assert!(id > 0, "seed {seed}: {rec}");
        assert_eq!(
            projects.get(name).copied(),
            Some(id),
            "seed {seed}: directory {name} does not carry its record's project id"
        );
        if let Some(other) = seen.insert(id, name.clone()) {
            panic!("seed {seed}: project id {id} is used by {other} and {name}");
        }
    }
    let limits = limited_projects(serve);
    for (id, bhard) in &limits {
        let owner = seen.get(id).unwrap_or_else(|| {
            panic!("seed {seed}: project {id} has limits but no volume (leaked): {limits:?}")
        });
        let bytes = volume_records[owner]["capacityBytes"].as_u64().unwrap();
        assert_eq!(
            *bhard * 1024,
            bytes,
            "seed {seed}: project {id} of {owner} has another hard limit than its capacity"
        );
    }
    for (id, owner) in &seen {
        assert!(
            limits.contains_key(id),
            "seed {seed}: volume {owner}'s project {id} has no limit"
        );
    }

    // Snapshots: records are exactly the client's, each with its archive; no archive
    // or half-written file without a record.
    let snapshot_records = records(&meta, "snapshots");
    let snap_names: BTreeSet<&String> = model.snapshots.values().map(|(n, _)| n).collect();
    let recorded: BTreeSet<&String> = snapshot_records.keys().collect();
    if recorded != snap_names {
        let extra: Vec<&&String> = recorded.difference(&snap_names).collect();
        let missing: Vec<&&String> = snap_names.difference(&recorded).collect();
        panic!(
            "seed {seed}: the snapshot records differ from the snapshots the client holds: records without a snapshot {extra:?}, snapshots without a record {missing:?}\n--- controller log (matching lines) ---\n{}",
            matching_lines(logs, extra.iter().chain(missing.iter()).map(|s| s.as_str()))
        );
    }
    for name in snapshot_records.keys() {
        assert!(
            meta.join("snapshots").join(format!("{name}.tar")).is_file(),
            "seed {seed}: snapshot {name} has no archive"
        );
    }
    for file in names(&meta.join("snapshots")) {
        if is_record_temp(&file) {
            // Checked on its own at the end (see `record_temp_files`).
            continue;
        }
        let stem = file
            .strip_suffix(".json")
            .or_else(|| file.strip_suffix(".tar"))
            .or_else(|| file.strip_suffix(".tar.b3"))
            .or_else(|| file.strip_suffix(".tar.md5"));
        assert!(
            stem.is_some_and(|s| snapshot_records.contains_key(s)),
            "seed {seed}: {file} in the snapshot folder belongs to no snapshot"
        );
    }
}

/// Whether `file` is a record store's temporary file (`.<key>.tmp-<pid>`).
fn is_record_temp(file: &str) -> bool {
    file.starts_with('.') && file.contains(".tmp-")
}

/// Temporary record files left in the record directories.
fn record_temp_files(meta: &Path) -> Vec<String> {
    ["volumes", "snapshots"]
        .iter()
        .flat_map(|kind| {
            names(&meta.join(kind))
                .into_iter()
                .filter(|f| is_record_temp(f))
                .map(move |f| format!("{kind}/{f}"))
        })
        .collect()
}

/// Waits (bounded) until every snapshot the client holds is ready to use; ListSnapshots
/// restarts cuts a kill interrupted.
async fn wait_snapshots_ready(ctl: &mut Controller, model: &Model, seed: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let listed = ctl
            .client
            .list_snapshots(timed(pb::ListSnapshotsRequest::default()))
            .await
            .unwrap_or_else(|s| panic!("seed {seed}: ListSnapshots: {s:?}"))
            .into_inner();
        let ready: BTreeSet<String> = listed
            .entries
            .iter()
            .filter_map(|e| e.snapshot.as_ref())
            .filter(|s| s.ready_to_use)
            .map(|s| s.snapshot_id.clone())
            .collect();
        if model.snapshots.keys().all(|id| ready.contains(id)) {
            return;
        }
        if Instant::now() >= deadline {
            let stuck: Vec<&String> = model
                .snapshots
                .keys()
                .filter(|id| !ready.contains(*id))
                .collect();
            panic!(
                "seed {seed}: snapshots {stuck:?} not ready in time\n--- controller log (matching lines) ---\n{}",
                matching_lines(
                    &ctl.plugin.logs(),
                    stuck.iter().map(|id| id.rsplit(':').next().unwrap_or(id))
                )
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn list_volume_ids(listed: &pb::ListVolumesResponse) -> BTreeSet<String> {
    listed
        .entries
        .iter()
        .filter_map(|e| e.volume.as_ref())
        .map(|v| v.volume_id.clone())
        .collect()
}

#[tokio::test]
async fn killing_the_controller_at_random_points_leaves_nothing_orphaned_or_leaked() {
    let seed = seed();
    eprintln!("crash consistency seed: {seed} (replay with PFS_CSI_TEST_SEED={seed})");
    let mut rng = Rng(seed);
    let serve = Serve::start(ServeOptions::lustre());
    let socket = serve.base().join("crash-controller.sock");
    let state: PathBuf = serve.base().join("crash-controller-state");
    let mut plugin = PluginProcess::start_with(
        Role::Controller,
        &serve,
        &socket,
        PluginOptions {
            state_dir: Some(state),
            ..Default::default()
        },
    );
    plugin.wait_ready().await;
    let client = plugin.controller().await;
    let mut ctl = Controller {
        plugin,
        client,
        restarts: 0,
    };
    let data = serve.fs_data_dir(FsKind::Lustre, "simfs1");

    let mut model = Model::default();
    let (mut next_volume, mut next_snapshot) = (0usize, 0usize);
    let (mut kills, mut counts) = (0usize, BTreeMap::<&str, usize>::new());
    let started = Instant::now();
    for i in 0..OPERATIONS {
        assert!(
            started.elapsed() < RUN_BOUND,
            "seed {seed}: only {i} operations in {RUN_BOUND:?}"
        );
        let pick = |rng: &mut Rng, n: usize| rng.below(n as u64) as usize;
        let roll = rng.below(100);
        let op = if model.volumes.is_empty() || roll < 35 {
            next_volume += 1;
            Op::Create {
                name: format!("crash-{next_volume}"),
                bytes: (1 + rng.below(4) as i64) * GIB,
            }
        } else if roll < 55 {
            let k = pick(&mut rng, model.volumes.len());
            Op::Delete {
                id: model.volumes.keys().nth(k).unwrap().clone(),
            }
        } else if roll < 75 {
            let k = pick(&mut rng, model.volumes.len());
            let (id, (_, bytes)) = model.volumes.iter().nth(k).unwrap();
            Op::Expand {
                id: id.clone(),
                bytes: bytes + (1 + rng.below(3) as i64) * GIB,
            }
        } else if roll < 92 || model.snapshots.is_empty() {
            next_snapshot += 1;
            let k = pick(&mut rng, model.volumes.len());
            Op::Snapshot {
                name: format!("crash-snap-{next_snapshot}"),
                source: model.volumes.keys().nth(k).unwrap().clone(),
            }
        } else {
            let k = pick(&mut rng, model.snapshots.len());
            Op::DeleteSnapshot {
                id: model.snapshots.keys().nth(k).unwrap().clone(),
            }
        };
        let kill_after = rng
            .percent(KILL_PERCENT)
            .then(|| Duration::from_millis(rng.below(KILL_WINDOW_MS)));
        let restarts_before = ctl.restarts;
        let done = run_until_success(&mut ctl, &op, kill_after, seed).await;
        kills += ctl.restarts - restarts_before;
        match (&op, done) {
            (Op::Create { name, bytes }, Done::Volume(v)) => {
                *counts.entry("create").or_default() += 1;
                assert!(v.capacity_bytes >= *bytes, "seed {seed}: {v:?}");
                // Reported created: it exists, with a ready record.
                assert!(
                    data.join(name).is_dir(),
                    "seed {seed}: {name} reported created but has no directory"
                );
                let rec = records(&data.join(".pfs-csi"), "volumes")
                    .remove(name)
                    .unwrap_or_else(|| panic!("seed {seed}: {name} created without a record"));
                assert_eq!(rec["state"], "ready", "seed {seed}: {rec}");
                model
                    .volumes
                    .insert(v.volume_id.clone(), (name.clone(), v.capacity_bytes));
            }
            (Op::Delete { id }, Done::Deleted) => {
                *counts.entry("delete").or_default() += 1;
                let (name, _) = model.volumes.remove(id).unwrap();
                assert!(
                    !data.join(&name).exists(),
                    "seed {seed}: {name} reported deleted but still there"
                );
            }
            (Op::Expand { id, bytes }, Done::Expanded(capacity)) => {
                *counts.entry("expand").or_default() += 1;
                assert!(capacity >= *bytes, "seed {seed}: expanded to {capacity}");
                model.volumes.get_mut(id).unwrap().1 = capacity;
            }
            (Op::Snapshot { name, source }, Done::Snapshot(s)) => {
                *counts.entry("snapshot").or_default() += 1;
                assert_eq!(&s.source_volume_id, source, "seed {seed}: {s:?}");
                model
                    .snapshots
                    .insert(s.snapshot_id.clone(), (name.clone(), source.clone()));
            }
            (Op::DeleteSnapshot { id }, Done::Deleted) => {
                *counts.entry("delete snapshot").or_default() += 1;
                model.snapshots.remove(id);
            }
            (op, _) => panic!("seed {seed}: unexpected answer to {op:?}"),
        }
    }
    eprintln!(
        "seed {seed}: {OPERATIONS} operations {counts:?} with {kills} controller kills in {:?}",
        started.elapsed()
    );
    assert!(
        kills >= OPERATIONS * KILL_PERCENT as usize / 400,
        "seed {seed}: only {kills} kills landed: the test did not exercise crashes"
    );

    // One more restart so the final state is read by a process that saw none of it.
    ctl.restart().await;
    wait_snapshots_ready(&mut ctl, &model, seed).await;
    check_consistent(&serve, &model, seed, &ctl.plugin.logs());
    let listed = ctl
        .client
        .list_volumes(timed(pb::ListVolumesRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        list_volume_ids(&listed),
        model.volumes.keys().cloned().collect::<BTreeSet<_>>(),
        "seed {seed}: ListVolumes differs from the volumes the client holds"
    );

    // Deleting everything leaves no directory, record, project limit or trash behind.
    let ids: Vec<String> = model.snapshots.keys().cloned().collect();
    for id in ids {
        run_until_success(&mut ctl, &Op::DeleteSnapshot { id: id.clone() }, None, seed).await;
        model.snapshots.remove(&id);
    }
    let ids: Vec<String> = model.volumes.keys().cloned().collect();
    for id in ids {
        run_until_success(&mut ctl, &Op::Delete { id: id.clone() }, None, seed).await;
        model.volumes.remove(&id);
    }
    check_consistent(&serve, &model, seed, &ctl.plugin.logs());
    let trash = data.join(".pfs-csi").join("trash");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !names(&trash).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        names(&trash).is_empty(),
        "seed {seed}: the trash was never emptied: {:?}",
        names(&trash)
    );
    assert!(
        limited_projects(&serve).is_empty(),
        "seed {seed}: project limits left after every volume was deleted: {:?}",
        limited_projects(&serve)
    );
    // A record write interrupted by the kill must not leave its temporary file forever.
    let temps = record_temp_files(&data.join(".pfs-csi"));
    assert!(
        temps.is_empty(),
        "seed {seed}: temporary record files left after every volume and snapshot was deleted: {temps:?}"
    );
}
