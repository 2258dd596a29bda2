//! The flags both plugin binaries take, each with an environment variable.

use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, ValueEnum};

/// The environment variable Kubernetes sets in every pod.
pub const IN_CLUSTER_ENV: &str = "KUBERNETES_SERVICE_HOST";

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Flags shared by the controller and node binaries.
#[derive(Debug, Clone, Args)]
pub struct PluginArgs {
    /// CSI endpoint: `unix:///path/to/csi.sock`.
    #[arg(long, env = "CSI_ENDPOINT", default_value = "unix:///csi/csi.sock")]
    pub endpoint: String,

    /// Configuration file (EXAScaler format, BeeGFS format, or both; `pfsCsi:` holds our
    /// own settings). Repeat the flag, or give a comma list in the variable.
    #[arg(
        long = "config",
        env = "PFS_CSI_CONFIG",
        value_delimiter = ',',
        required = true
    )]
    pub config: Vec<PathBuf>,

    /// This node's name (the Kubernetes node name); required by the node plugin.
    #[arg(long, env = "NODE_ID")]
    pub node_id: Option<String>,

    /// CSI driver name; `exa.csi.ddn.com` or `beegfs.csi.netapp.com` keep existing PVs working.
    #[arg(long, env = "CSI_DRIVER_NAME", default_value = "pfs-csi.io")]
    pub driver_name: String,

    /// Kubelet root directory.
    #[arg(long, env = "KUBELET_DIR", default_value = "/var/lib/kubelet")]
    pub kubelet_dir: PathBuf,

    /// Directory for the plugin's own state (generated client configuration, secret files).
    #[arg(long, env = "PFS_CSI_STATE_DIR", default_value = "/var/lib/pfs-csi")]
    pub state_dir: PathBuf,

    /// BeeGFS connAuth secret file (a list of sysMgmtdHost, connAuth, encoding).
    #[arg(long, env = "BEEGFS_CONNAUTH_FILE")]
    pub beegfs_connauth_file: Option<PathBuf>,

    /// BeeGFS 8 TLS certificate file (a list of sysMgmtdHost, tlsCert).
    #[arg(long, env = "BEEGFS_TLS_CERT_FILE")]
    pub beegfs_tls_cert_file: Option<PathBuf>,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Log level or filter (`info`, `debug`, `pfs_driver=debug,info`).
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Serve Prometheus metrics on `/metrics` (and `/healthz`) over HTTP at
    /// this address: `IP:PORT`, `[IPv6]:PORT`, or `:PORT` for every IPv4
    /// interface. Off when not given.
    #[arg(long, env = "METRICS_ADDRESS", value_parser = parse_metrics_address)]
    pub metrics_address: Option<SocketAddr>,

    /// Serve gRPC reflection on the CSI socket, for `grpcurl` and similar tools
    /// (kubelet and the sidecars do not need it).
    #[arg(long, env = "GRPC_REFLECTION")]
    pub grpc_reflection: bool,

    /// The node plugin's use of the Kubernetes API.
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// Parses `--metrics-address`.
fn parse_metrics_address(value: &str) -> Result<SocketAddr, String> {
    k8s_adapter::metrics::endpoint::parse_address(value).map_err(|e| e.to_string())
}

/// How the node plugin uses the Kubernetes API (the controller ignores these).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Kubernetes API (node plugin)")]
pub struct KubeArgs {
    /// Follow the Node's labels for topology and publish client readiness as
    /// node labels and events. Default: on in a pod (KUBERNETES_SERVICE_HOST
    /// set), off elsewhere. `--kube-api` alone means true.
    #[arg(
        long = "kube-api",
        env = "PFS_CSI_KUBE_API",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub kube_api: Option<bool>,

    /// Node label keys reported as topology besides
    /// `topology.exa.csi.ddn.com/zone`; repeat the flag or give a comma list.
    #[arg(long, env = "TOPOLOGY_LABEL_KEYS", value_delimiter = ',')]
    pub topology_label_keys: Vec<String>,

    /// Seconds between two checks of the filesystem clients.
    #[arg(
        long,
        env = "CLIENT_CHECK_INTERVAL_SECONDS",
        default_value_t = 60,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub client_check_interval_seconds: u64,

    /// Limit of one Kubernetes API call (read, patch, event), in seconds.
    #[arg(
        long,
        env = "KUBE_API_TIMEOUT_SECONDS",
        default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub kube_api_timeout_seconds: u64,

    /// Where procfs is mounted (kernel modules are read from `<dir>/modules`).
    #[arg(long, env = "HOST_PROC_DIR", default_value = "/proc")]
    pub host_proc_dir: PathBuf,

    /// Where sysfs is mounted (kernel modules are read from `<dir>/module/<name>`).
    #[arg(long, env = "HOST_SYS_DIR", default_value = "/sys")]
    pub host_sys_dir: PathBuf,
}

impl KubeArgs {
    /// Whether to use the API: the flag when given, else whether
    /// `in_cluster_host` (the value of KUBERNETES_SERVICE_HOST) is set.
    pub fn api_enabled(&self, in_cluster_host: Option<&str>) -> bool {
        self.kube_api
            .unwrap_or_else(|| in_cluster_host.is_some_and(|h| !h.trim().is_empty()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        plugin: PluginArgs,
    }

    fn parse(extra: &[&str]) -> Result<PluginArgs, clap::Error> {
        let mut argv = vec!["plugin", "--config", "/dev/null"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).map(|cli| cli.plugin)
    }

    #[test]
    fn metrics_are_off_unless_an_address_is_given() {
        // (Assumes METRICS_ADDRESS is not set in the test environment.)
        assert_eq!(parse(&[]).unwrap().metrics_address, None);
        assert_eq!(
            parse(&["--metrics-address", "127.0.0.1:9808"])
                .unwrap()
                .metrics_address,
            Some("127.0.0.1:9808".parse().unwrap())
        );
        assert_eq!(
            parse(&["--metrics-address=:8080"]).unwrap().metrics_address,
            Some("0.0.0.0:8080".parse().unwrap())
        );
    }

    #[test]
    fn a_bad_metrics_address_is_refused_at_start() {
        let error = parse(&["--metrics-address", "metrics.example:80"])
            .expect_err("refused")
            .to_string();
        assert!(error.contains("--metrics-address"), "{error}");
        assert!(error.contains("invalid metrics address"), "{error}");
    }
}
