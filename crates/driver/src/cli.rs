//! The flags both plugin binaries take, each with an environment variable.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

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
}
