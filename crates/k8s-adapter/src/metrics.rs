//! Prometheus metrics of a plugin process, and the HTTP endpoint serving
//! them ([`endpoint`]).
//!
//! [`CsiMetrics`] holds one registry per process (no global state). It is
//! fed from three places only:
//! - the RPC layer ([`crate::rpc_log`]) counts every call by method and
//!   gRPC code, times it, and tracks the calls in flight;
//! - the Node service records the usage NodeGetVolumeStats returned, per
//!   volume, and forgets a volume when NodeUnstageVolume succeeds (a volume
//!   not asked about for [`DEFAULT_VOLUME_TTL`] is forgotten too);
//! - the Identity service records each backend's readiness when Probe runs
//!   the backends' checks.
//!
//! Label values are bounded: `method` is one of the RPCs declared in
//! `csi.proto` (or the reflection RPC), anything else is `unknown`; `code`
//! is one of the 17 gRPC codes; `volume_id` only ever names a volume whose
//! stats were served on this node recently; `backend` a configured backend.
//! Every name, label and meaning is listed in `docs/metrics.md`.

pub mod endpoint;

use std::{
    collections::{BTreeSet, HashMap},
    fmt::Write as _,
    sync::{Arc, LazyLock, Mutex, PoisonError},
    time::{Duration, Instant},
};

use csi_core::domain::{VolumeCondition, VolumeStats};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use prost::Message as _;
use tonic::Code;

use crate::proto::FILE_DESCRIPTOR_SET;

/// How long the usage of a volume no NodeGetVolumeStats asked about stays
/// exported (the kubelet asks about every mounted volume each minute).
pub const DEFAULT_VOLUME_TTL: Duration = Duration::from_secs(10 * 60);

/// Prefix of every metric name.
pub const PREFIX: &str = "pfs_csi";

/// The `method` label of calls to a path no service declares.
pub const UNKNOWN_METHOD: &str = "unknown";

/// The `code` label of a call dropped before it finished (its deadline
/// passed or the caller went away).
pub const ABANDONED_CODE: Code = Code::Cancelled;

/// Upper bounds of the RPC duration buckets, in seconds: from a cached
/// Probe (well under a millisecond) to a snapshot archive of a large volume.
const DURATION_BUCKETS: [f64; 18] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 180.0, 600.0,
];

/// The RPC method names `csi.proto` declares, plus gRPC reflection's.
static KNOWN_METHODS: LazyLock<BTreeSet<String>> = LazyLock::new(|| {
    let mut methods = BTreeSet::from(["ServerReflectionInfo".to_owned()]);
    // The descriptor set is generated at build time; a proto test checks
    // that it decodes.
    if let Ok(set) = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET) {
        for file in set.file.iter().filter(|f| f.package() == "csi.v1") {
            for service in &file.service {
                methods.extend(service.method.iter().map(|m| m.name().to_owned()));
            }
        }
    }
    methods
});

/// The name gRPC's own libraries give `code` (`OK`, `NotFound`, ...), as
/// the `code` label shows it.
pub fn code_label(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// The `method` label of a call to `method`: the name when a service
/// declares it, else [`UNKNOWN_METHOD`].
pub fn method_label(method: &str) -> &str {
    if KNOWN_METHODS.contains(method) {
        method
    } else {
        UNKNOWN_METHOD
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    method: String,
    code: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VolumeLabels {
    volume_id: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    backend: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    driver: String,
}

type HistogramFamily = Family<MethodLabels, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// The per-volume gauges, all labelled by `volume_id`.
#[derive(Debug, Default)]
struct VolumeGauges {
    capacity_bytes: Family<VolumeLabels, Gauge>,
    used_bytes: Family<VolumeLabels, Gauge>,
    available_bytes: Family<VolumeLabels, Gauge>,
    inodes: Family<VolumeLabels, Gauge>,
    inodes_used: Family<VolumeLabels, Gauge>,
    inodes_available: Family<VolumeLabels, Gauge>,
    abnormal: Family<VolumeLabels, Gauge>,
}

impl VolumeGauges {
    fn bytes(&self) -> [&Family<VolumeLabels, Gauge>; 3] {
        [
            &self.capacity_bytes,
            &self.used_bytes,
            &self.available_bytes,
        ]
    }

    fn inode_counts(&self) -> [&Family<VolumeLabels, Gauge>; 3] {
        [&self.inodes, &self.inodes_used, &self.inodes_available]
    }

    fn remove(&self, labels: &VolumeLabels) {
        for family in self.bytes().into_iter().chain(self.inode_counts()) {
            family.remove(labels);
        }
        self.abnormal.remove(labels);
    }
}

/// A value for a gauge: counts past `i64::MAX` saturate.
fn gauge_value(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The format a scrape asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpositionFormat {
    /// OpenMetrics 1.0 text (`application/openmetrics-text`).
    OpenMetrics,
    /// The Prometheus text format 0.0.4 (`text/plain`).
    PrometheusText,
}

impl ExpositionFormat {
    /// The format an `Accept` header asks for: OpenMetrics when it names
    /// it (as Prometheus does), else the classic text format.
    pub fn from_accept(accept: Option<&str>) -> Self {
        let asks_openmetrics = accept.is_some_and(|accept| {
            accept
                .split(',')
                .filter_map(|item| item.split(';').next())
                .any(|media| {
                    media
                        .trim()
                        .eq_ignore_ascii_case("application/openmetrics-text")
                })
        });
        if asks_openmetrics {
            Self::OpenMetrics
        } else {
            Self::PrometheusText
        }
    }

    /// The `Content-Type` of a response in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Self::PrometheusText => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// The metrics of one plugin process; see the module docs.
#[derive(Debug)]
pub struct CsiMetrics {
    registry: Registry,
    rpcs: Family<RpcLabels, Counter>,
    rpc_seconds: HistogramFamily,
    in_flight: Family<MethodLabels, Gauge>,
    volumes: VolumeGauges,
    /// When each exported volume was last reported by NodeGetVolumeStats.
    volumes_seen: Mutex<HashMap<String, Instant>>,
    volume_ttl: Duration,
    backend_ready: Family<BackendLabels, Gauge>,
}

impl CsiMetrics {
    /// Metrics of a plugin serving as `driver_name`, with
    /// `pfs_csi_build_info` set.
    pub fn new(driver_name: &str) -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        let rpcs = Family::<RpcLabels, Counter>::default();
        registry.register(
            "rpc",
            "CSI calls served, by method and gRPC code (Canceled: dropped before it finished)",
            rpcs.clone(),
        );
        let rpc_seconds: HistogramFamily = Family::new_with_constructor(duration_histogram);
        registry.register(
            "rpc_duration_seconds",
            "Time to answer a CSI call, by method",
            rpc_seconds.clone(),
        );
        let in_flight = Family::<MethodLabels, Gauge>::default();
        registry.register(
            "rpc_in_flight",
            "CSI calls being served now, by method",
            in_flight.clone(),
        );
        let volumes = VolumeGauges::default();
        for (name, help, family) in [
            (
                "volume_capacity_bytes",
                "Size of the volume (its quota, else its filesystem's) as last reported by NodeGetVolumeStats",
                &volumes.capacity_bytes,
            ),
            (
                "volume_used_bytes",
                "Bytes used in the volume as last reported by NodeGetVolumeStats",
                &volumes.used_bytes,
            ),
            (
                "volume_available_bytes",
                "Bytes still available to the volume as last reported by NodeGetVolumeStats",
                &volumes.available_bytes,
            ),
            (
                "volume_inodes",
                "Inodes the volume may hold as last reported by NodeGetVolumeStats",
                &volumes.inodes,
            ),
            (
                "volume_inodes_used",
                "Inodes used in the volume as last reported by NodeGetVolumeStats",
                &volumes.inodes_used,
            ),
            (
                "volume_inodes_available",
                "Inodes still available to the volume as last reported by NodeGetVolumeStats",
                &volumes.inodes_available,
            ),
            (
                "volume_abnormal",
                "1 when the last NodeGetVolumeStats found the volume abnormal (not mounted, not answering), else 0",
                &volumes.abnormal,
            ),
        ] {
            registry.register(name, help, family.clone());
        }
        let backend_ready = Family::<BackendLabels, Gauge>::default();
        registry.register(
            "backend_ready",
            "1 when the backend passed its readiness check at the last Probe that ran it, else 0",
            backend_ready.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: crate::identity::VENDOR_VERSION,
                driver: driver_name.to_owned(),
            })
            .set(1);
        registry.register(
            "build_info",
            "Always 1; the labels name the plugin's version and CSI driver name",
            build,
        );
        Self {
            registry,
            rpcs,
            rpc_seconds,
            in_flight,
            volumes,
            volumes_seen: Mutex::new(HashMap::new()),
            volume_ttl: DEFAULT_VOLUME_TTL,
            backend_ready,
        }
    }

    /// The same metrics, forgetting volumes not reported for `ttl`.
    pub fn with_volume_ttl(mut self, ttl: Duration) -> Self {
        self.volume_ttl = ttl;
        self
    }

    /// Starts timing a call to `method` (the last part of its path); the
    /// returned record counts it when finished, or as abandoned when
    /// dropped first.
    pub fn start_rpc(self: &Arc<Self>, method: &str) -> RpcRecord {
        let method = method_label(method).to_owned();
        self.in_flight
            .get_or_create(&MethodLabels {
                method: method.clone(),
            })
            .inc();
        RpcRecord {
            metrics: self.clone(),
            method,
            started: Instant::now(),
            finished: false,
        }
    }

    fn finish_rpc(&self, method: &str, code: Code, elapsed: Duration) {
        let labels = MethodLabels {
            method: method.to_owned(),
        };
        self.in_flight.get_or_create(&labels).dec();
        self.rpc_seconds
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        self.rpcs
            .get_or_create(&RpcLabels {
                method: labels.method,
                code: code_label(code),
            })
            .inc();
    }

    /// Records what NodeGetVolumeStats answered for `volume_id`. An
    /// abnormal answer carries no usage, so it only sets
    /// `pfs_csi_volume_abnormal` and keeps the last usage seen.
    pub fn record_volume_stats(
        &self,
        volume_id: &str,
        stats: &VolumeStats,
        condition: &VolumeCondition,
    ) {
        let now = Instant::now();
        let labels = VolumeLabels {
            volume_id: volume_id.to_owned(),
        };
        // Held until the gauges are set: a concurrent forget cannot leave
        // series behind that no timestamp would ever expire.
        let mut seen = self.volumes_seen();
        seen.insert(labels.volume_id.clone(), now);
        self.volumes
            .abnormal
            .get_or_create(&labels)
            .set(i64::from(condition.abnormal));
        if !condition.abnormal {
            let bytes = [stats.bytes_total, stats.bytes_used, stats.bytes_available];
            for (family, value) in self.volumes.bytes().into_iter().zip(bytes) {
                family.get_or_create(&labels).set(gauge_value(value));
            }
            let inodes = [
                stats.inodes_total,
                stats.inodes_used,
                stats.inodes_available,
            ];
            for (family, value) in self.volumes.inode_counts().into_iter().zip(inodes) {
                match value {
                    Some(value) => {
                        family.get_or_create(&labels).set(gauge_value(value));
                    }
                    None => {
                        family.remove(&labels);
                    }
                }
            }
        }
        self.forget_stale_volumes(&mut seen, now);
    }

    /// Stops exporting the usage of `volume_id` (it left this node).
    pub fn forget_volume(&self, volume_id: &str) {
        let mut seen = self.volumes_seen();
        seen.remove(volume_id);
        self.volumes.remove(&VolumeLabels {
            volume_id: volume_id.to_owned(),
        });
    }

    /// Forgets the volumes last reported before `now - ttl`; `seen` is the
    /// locked map of timestamps.
    fn forget_stale_volumes(&self, seen: &mut HashMap<String, Instant>, now: Instant) {
        seen.retain(|volume_id, last| {
            let fresh = now.saturating_duration_since(*last) < self.volume_ttl;
            if !fresh {
                self.volumes.remove(&VolumeLabels {
                    volume_id: volume_id.clone(),
                });
            }
            fresh
        });
    }

    fn volumes_seen(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        // The map holds plain timestamps: a panic elsewhere cannot leave it
        // inconsistent.
        self.volumes_seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Records the outcome of a readiness check of `backends`: a backend
    /// is ready unless one of `problems` (the core's `"<name>: <why>"`
    /// lines) names it.
    pub fn record_readiness(&self, backends: &[&str], problems: &[String]) {
        for name in backends {
            let failed = problems.iter().any(|problem| {
                problem
                    .strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(": "))
            });
            self.backend_ready
                .get_or_create(&BackendLabels {
                    backend: (*name).to_owned(),
                })
                .set(i64::from(!failed));
        }
    }

    /// Every metric in `format`, after forgetting stale volumes.
    pub fn encode(&self, format: ExpositionFormat) -> String {
        self.encode_at(format, Instant::now())
    }

    fn encode_at(&self, format: ExpositionFormat, now: Instant) -> String {
        self.forget_stale_volumes(&mut self.volumes_seen(), now);
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        match format {
            ExpositionFormat::OpenMetrics => text,
            ExpositionFormat::PrometheusText => openmetrics_to_text(&text),
        }
    }
}

/// Rewrites OpenMetrics text as the Prometheus text format 0.0.4: a
/// counter's HELP and TYPE lines name its `_total` samples, and the
/// `# EOF` line goes (the metrics here have no units and no info type, the
/// other differences).
fn openmetrics_to_text(openmetrics: &str) -> String {
    let counters: BTreeSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut text = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let descriptor = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|tag| line.strip_prefix(tag).map(|rest| (tag, rest)));
        match descriptor {
            Some((tag, rest)) => match rest.split_once(' ') {
                Some((name, tail)) if counters.contains(name) => {
                    let _ = writeln!(text, "{tag}{name}_total {tail}");
                }
                _ => {
                    let _ = writeln!(text, "{line}");
                }
            },
            None => {
                let _ = writeln!(text, "{line}");
            }
        }
    }
    text
}

/// One call being timed; see [`CsiMetrics::start_rpc`].
#[derive(Debug)]
pub struct RpcRecord {
    metrics: Arc<CsiMetrics>,
    method: String,
    started: Instant,
    finished: bool,
}

impl RpcRecord {
    /// Counts the call as answered with `code`.
    pub fn finish(mut self, code: Code) {
        self.finished = true;
        self.metrics
            .finish_rpc(&self.method, code, self.started.elapsed());
    }
}

impl Drop for RpcRecord {
    fn drop(&mut self) {
        if !self.finished {
            self.metrics
                .finish_rpc(&self.method, ABANDONED_CODE, self.started.elapsed());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GIB: u64 = 1 << 30;

    fn stats(total: u64, used: u64, inodes: Option<u64>) -> VolumeStats {
        VolumeStats {
            bytes_total: total,
            bytes_used: used,
            bytes_available: total - used,
            inodes_total: inodes,
            inodes_used: inodes.map(|i| i / 4),
            inodes_available: inodes.map(|i| i - i / 4),
        }
    }

    /// The samples (lines that are not comments) of an exposition.
    fn samples(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    fn sample_value(text: &str, series: &str) -> Option<String> {
        samples(text)
            .into_iter()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map(str::to_owned)
    }

    #[test]
    fn calls_are_counted_by_method_and_code_and_timed() {
        let metrics = Arc::new(CsiMetrics::new("test.example.com"));
        metrics.start_rpc("CreateVolume").finish(Code::Ok);
        metrics.start_rpc("CreateVolume").finish(Code::Ok);
        metrics
            .start_rpc("CreateVolume")
            .finish(Code::InvalidArgument);
        metrics
            .start_rpc("NodeStageVolume")
            .finish(Code::DeadlineExceeded);
        let text = metrics.encode(ExpositionFormat::OpenMetrics);
        for (series, value) in [
            (r#"pfs_csi_rpc_total{method="CreateVolume",code="OK"}"#, "2"),
            (
                r#"pfs_csi_rpc_total{method="CreateVolume",code="InvalidArgument"}"#,
                "1",
            ),
            (
                r#"pfs_csi_rpc_total{method="NodeStageVolume",code="DeadlineExceeded"}"#,
                "1",
            ),
            (
                r#"pfs_csi_rpc_duration_seconds_count{method="CreateVolume"}"#,
                "3",
            ),
            (
                r#"pfs_csi_rpc_duration_seconds_bucket{le="+Inf",method="CreateVolume"}"#,
                "3",
            ),
            (r#"pfs_csi_rpc_in_flight{method="CreateVolume"}"#, "0"),
        ] {
            assert_eq!(
                sample_value(&text, series).as_deref(),
                Some(value),
                "{series} in\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn calls_in_flight_are_counted_until_they_finish_or_are_dropped() {
        let metrics = Arc::new(CsiMetrics::new("test.example.com"));
        let first = metrics.start_rpc("NodePublishVolume");
        let second = metrics.start_rpc("NodePublishVolume");
        let in_flight = |m: &CsiMetrics| {
            sample_value(
                &m.encode(ExpositionFormat::OpenMetrics),
                r#"pfs_csi_rpc_in_flight{method="NodePublishVolume"}"#,
            )
        };
        assert_eq!(in_flight(&metrics).as_deref(), Some("2"));
        first.finish(Code::Ok);
        assert_eq!(in_flight(&metrics).as_deref(), Some("1"));
        drop(second);
        assert_eq!(in_flight(&metrics).as_deref(), Some("0"));
        let text = metrics.encode(ExpositionFormat::OpenMetrics);
        assert_eq!(
            sample_value(
                &text,
                r#"pfs_csi_rpc_total{method="NodePublishVolume",code="Canceled"}"#
            )
            .as_deref(),
            Some("1"),
            "{text}"
        );
    }

    #[test]
    fn undeclared_methods_share_one_label() {
        let metrics = Arc::new(CsiMetrics::new("test.example.com"));
        for path in ["Nope", "DropTables", "Probe\"}"] {
            metrics.start_rpc(path).finish(Code::Unimplemented);
        }
        let text = metrics.encode(ExpositionFormat::OpenMetrics);
        assert_eq!(
            sample_value(
                &text,
                r#"pfs_csi_rpc_total{method="unknown",code="Unimplemented"}"#
            )
            .as_deref(),
            Some("3"),
            "{text}"
        );
        assert!(
            !text.contains("Nope") && !text.contains("DropTables"),
            "{text}"
        );
    }

    #[test]
    fn every_declared_rpc_is_a_known_method() {
        for method in [
            "Probe",
            "CreateVolume",
            "ControllerModifyVolume",
            "NodeGetVolumeStats",
            "GetMetadataDelta",
            "ServerReflectionInfo",
        ] {
            assert_eq!(method_label(method), method);
        }
        assert!(KNOWN_METHODS.len() > 25, "{:?}", *KNOWN_METHODS);
        assert_eq!(method_label(""), UNKNOWN_METHOD);
    }

    #[test]
    fn codes_are_labelled_as_grpc_names_them() {
        assert_eq!(code_label(Code::Ok), "OK");
        assert_eq!(code_label(Code::Cancelled), "Canceled");
        assert_eq!(code_label(Code::NotFound), "NotFound");
        // Every code has its own label.
        let labels: BTreeSet<&str> = (0..17).map(|i| code_label(Code::from_i32(i))).collect();
        assert_eq!(labels.len(), 17);
    }

    #[test]
    fn volume_usage_is_the_last_reported_and_goes_when_forgotten() {
        let metrics = CsiMetrics::new("test.example.com");
        let healthy = VolumeCondition::healthy();
        metrics.record_volume_stats("vol-a", &stats(10 * GIB, GIB, Some(1000)), &healthy);
        metrics.record_volume_stats("vol-a", &stats(10 * GIB, 3 * GIB, Some(1000)), &healthy);
        metrics.record_volume_stats("vol-b", &stats(GIB, 0, None), &healthy);
        let text = metrics.encode(ExpositionFormat::OpenMetrics);
        for (series, value) in [
            (
                r#"pfs_csi_volume_capacity_bytes{volume_id="vol-a"}"#,
                (10 * GIB).to_string(),
            ),
            (
                r#"pfs_csi_volume_used_bytes{volume_id="vol-a"}"#,
                (3 * GIB).to_string(),
            ),
            (
                r#"pfs_csi_volume_available_bytes{volume_id="vol-a"}"#,
                (7 * GIB).to_string(),
            ),
            (r#"pfs_csi_volume_inodes{volume_id="vol-a"}"#, "1000".into()),
            (
                r#"pfs_csi_volume_inodes_used{volume_id="vol-a"}"#,
                "250".into(),
            ),
            (
                r#"pfs_csi_volume_inodes_available{volume_id="vol-a"}"#,
                "750".into(),
            ),
            (r#"pfs_csi_volume_abnormal{volume_id="vol-a"}"#, "0".into()),
            (
                r#"pfs_csi_volume_capacity_bytes{volume_id="vol-b"}"#,
                GIB.to_string(),
            ),
        ] {
            assert_eq!(
                sample_value(&text, series),
                Some(value),
                "{series} in\n{text}"
            );
        }
        // Unknown inode counts are not exported as zero.
        assert!(!text.contains(r#"inodes{volume_id="vol-b"}"#), "{text}");

        metrics.forget_volume("vol-a");
        let text = metrics.encode(ExpositionFormat::OpenMetrics);
        assert!(!text.contains("vol-a"), "{text}");
        assert!(text.contains("vol-b"), "{text}");
    }

    #[test]
    fn an_abnormal_volume_keeps_its_last_usage() {
        let metrics = CsiMetrics::new("test.example.com");
        metrics.record_volume_stats(
            "vol-a",
            &stats(10 * GIB, GIB, Some(100)),
            &VolumeCondition::healthy(),
        );
        metrics.record_volume_stats(
            "vol-a",
            &VolumeStats::default(),
            &VolumeCondition::abnormal("not mounted"),
        );
        let text = metrics.encode(ExpositionFormat::OpenMetrics);
        assert_eq!(
            sample_value(&text, r#"pfs_csi_volume_abnormal{volume_id="vol-a"}"#).as_deref(),
            Some("1")
        );
        assert_eq!(
            sample_value(&text, r#"pfs_csi_volume_capacity_bytes{volume_id="vol-a"}"#),
            Some((10 * GIB).to_string())
        );
    }

    #[test]
    fn volumes_not_reported_for_the_ttl_are_forgotten() {
        let ttl = Duration::from_secs(60);
        let metrics = CsiMetrics::new("test.example.com").with_volume_ttl(ttl);
        metrics.record_volume_stats("vol-old", &stats(GIB, 0, None), &VolumeCondition::healthy());
        let now = Instant::now();
        let soon = metrics.encode_at(ExpositionFormat::OpenMetrics, now + ttl / 2);
        assert!(soon.contains("vol-old"), "{soon}");
        let later = metrics.encode_at(ExpositionFormat::OpenMetrics, now + ttl * 2);
        assert!(!later.contains("vol-old"), "{later}");
    }

    #[test]
    fn sizes_past_i64_saturate() {
        let metrics = CsiMetrics::new("test.example.com");
        metrics.record_volume_stats(
            "huge",
            &stats(u64::MAX, 0, None),
            &VolumeCondition::healthy(),
        );
        let text = metrics.encode(ExpositionFormat::OpenMetrics);
        assert_eq!(
            sample_value(&text, r#"pfs_csi_volume_capacity_bytes{volume_id="huge"}"#),
            Some(i64::MAX.to_string())
        );
    }

    #[test]
    fn backends_named_by_a_problem_are_not_ready() {
        let metrics = CsiMetrics::new("test.example.com");
        metrics.record_readiness(
            &["lustre", "beegfs"],
            &["lustre: lctl not found".to_owned()],
        );
        let text = metrics.encode(ExpositionFormat::OpenMetrics);
        assert_eq!(
            sample_value(&text, r#"pfs_csi_backend_ready{backend="lustre"}"#).as_deref(),
            Some("0")
        );
        assert_eq!(
            sample_value(&text, r#"pfs_csi_backend_ready{backend="beegfs"}"#).as_deref(),
            Some("1")
        );
        // A backend whose name merely starts another's is not blamed.
        metrics.record_readiness(&["lustre"], &["lustre2: gone".to_owned()]);
        let text = metrics.encode(ExpositionFormat::OpenMetrics);
        assert_eq!(
            sample_value(&text, r#"pfs_csi_backend_ready{backend="lustre"}"#).as_deref(),
            Some("1")
        );
    }

    #[test]
    fn build_info_names_the_version_and_driver() {
        let text = CsiMetrics::new("exa.csi.ddn.com").encode(ExpositionFormat::OpenMetrics);
        let series = format!(
            r#"pfs_csi_build_info{{version="{}",driver="exa.csi.ddn.com"}}"#,
            crate::identity::VENDOR_VERSION
        );
        assert_eq!(sample_value(&text, &series).as_deref(), Some("1"), "{text}");
    }

    #[test]
    fn the_classic_text_format_names_counters_by_their_samples() {
        let metrics = Arc::new(CsiMetrics::new("test.example.com"));
        metrics.start_rpc("Probe").finish(Code::Ok);
        let openmetrics = metrics.encode(ExpositionFormat::OpenMetrics);
        let text = metrics.encode(ExpositionFormat::PrometheusText);
        assert!(
            openmetrics.contains("# TYPE pfs_csi_rpc counter\n"),
            "{openmetrics}"
        );
        assert!(
            text.contains("# TYPE pfs_csi_rpc_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("# HELP pfs_csi_rpc_total CSI calls"),
            "{text}"
        );
        assert!(!text.contains("# EOF"), "{text}");
        // Only descriptor lines differ; the samples are the same.
        assert_eq!(samples(&text), samples(&openmetrics));
    }

    #[test]
    fn accept_headers_choose_the_format() {
        use ExpositionFormat::*;
        let prometheus = "application/openmetrics-text;version=1.0.0;q=0.5,\
                          text/plain;version=0.0.4;q=0.4,*/*;q=0.1";
        assert_eq!(ExpositionFormat::from_accept(Some(prometheus)), OpenMetrics);
        assert_eq!(ExpositionFormat::from_accept(Some("*/*")), PrometheusText);
        assert_eq!(ExpositionFormat::from_accept(None), PrometheusText);
        assert_eq!(
            ExpositionFormat::from_accept(Some("text/plain, APPLICATION/OPENMETRICS-TEXT")),
            OpenMetrics
        );
    }

    proptest! {
        #[test]
        fn volume_ids_are_escaped_in_labels(id in "(?s).{1,40}") {
            let metrics = CsiMetrics::new("test.example.com");
            metrics.record_volume_stats(&id, &stats(GIB, 1, None), &VolumeCondition::healthy());
            let text = metrics.encode(ExpositionFormat::OpenMetrics);
            let escaped = id.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
            let series = format!("pfs_csi_volume_used_bytes{{volume_id=\"{escaped}\"}}");
            prop_assert_eq!(sample_value(&text, &series), Some("1".to_owned()));
            // Every sample stays on one line.
            prop_assert_eq!(samples(&text).len(), 5);
        }
    }
}
