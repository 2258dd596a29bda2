//! The command line: global flags, commands and their flags.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::parse::{TopologyArg, parse_duration, parse_key_value, parse_size, parse_topology};

/// A `key=value` flag value.
pub type KeyValue = (String, String);

/// Troubleshooting client for a running CSI driver (pfs-csi or any other).
#[derive(Debug, Parser)]
#[command(
    name = "pfsctl",
    version,
    about = "Talk to a CSI driver over its unix socket: identity, volumes, nodes, snapshots, support bundles.",
    after_help = crate::exit::help_text(),
    propagate_version = true,
)]
pub struct Cli {
    /// Flags every command takes.
    #[command(flatten)]
    pub global: GlobalArgs,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// CSI endpoint: unix:///path/to/csi.sock (also unix:/path or /path).
    #[arg(
        long,
        env = "CSI_ENDPOINT",
        default_value = "unix:///csi/csi.sock",
        global = true
    )]
    pub endpoint: String,

    /// Deadline of each call (500ms, 30s, 5m); `snapshot wait` waits this long in all.
    #[arg(long, default_value = "30s", value_parser = parse_duration, global = true)]
    pub timeout: Duration,

    /// Print machine-readable JSON on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

/// The command groups.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Identity service: probe, plugin info, plugin capabilities.
    #[command(subcommand)]
    Identity(IdentityCommand),

    /// Controller service capabilities.
    #[command(subcommand)]
    Controller(ControllerCommand),

    /// Create, delete, list, inspect, expand and validate volumes.
    #[command(subcommand)]
    Volume(VolumeCommand),

    /// Available capacity (GetCapacity).
    Capacity(CapacityArgs),

    /// Node service: info, capabilities, stage, publish, stats.
    #[command(subcommand)]
    Node(NodeCommand),

    /// Create, delete, list, inspect and wait for snapshots.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),

    /// Collect plugin state, configuration, logs and mounts into a tar.gz,
    /// with every secret redacted.
    SupportBundle(BundleArgs),
}

/// `pfsctl identity ...`
#[derive(Debug, Subcommand)]
pub enum IdentityCommand {
    /// Is the plugin ready? Exits 13 when it answers not ready.
    Probe,
    /// Driver name, version and manifest.
    PluginInfo,
    /// Services and features the plugin declares.
    Capabilities,
}

/// `pfsctl controller ...`
#[derive(Debug, Subcommand)]
pub enum ControllerCommand {
    /// Optional controller RPCs the plugin implements.
    Capabilities,
}

/// CSI access modes; Kubernetes' short names are accepted as aliases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AccessModeArg {
    /// Read-write on one node (ReadWriteOnce).
    #[value(alias = "rwo")]
    SingleNodeWriter,
    /// Read-only on one node.
    SingleNodeReaderOnly,
    /// Read-only on many nodes (ReadOnlyMany).
    #[value(alias = "rox")]
    MultiNodeReaderOnly,
    /// Many nodes, one of them writing.
    MultiNodeSingleWriter,
    /// Read-write on many nodes (ReadWriteMany).
    #[value(alias = "rwx")]
    MultiNodeMultiWriter,
    /// Read-write by one pod (ReadWriteOncePod).
    #[value(alias = "rwop")]
    SingleNodeSingleWriter,
    /// Read-write by several pods on one node.
    SingleNodeMultiWriter,
}

/// Volume capabilities: one per access mode, all with the same access type.
#[derive(Debug, Clone, Args)]
pub struct CapabilityArgs {
    /// Access mode; repeat to ask for several capabilities.
    #[arg(long = "access-mode", value_enum, default_value = "single-node-writer")]
    pub access_modes: Vec<AccessModeArg>,

    /// Filesystem type of the mount access type.
    #[arg(long)]
    pub fs_type: Option<String>,

    /// Mount flag; repeat for several.
    #[arg(long = "mount-flag")]
    pub mount_flags: Vec<String>,

    /// Ask for a raw block volume instead of a mount (to check the plugin refuses it).
    #[arg(long, conflicts_with_all = ["fs_type", "mount_flags"])]
    pub block: bool,
}

/// One volume capability, for the node calls.
#[derive(Debug, Clone, Args)]
pub struct SingleCapabilityArgs {
    /// Access mode.
    #[arg(long = "access-mode", value_enum, default_value = "single-node-writer")]
    pub access_mode: AccessModeArg,

    /// Filesystem type of the mount access type.
    #[arg(long)]
    pub fs_type: Option<String>,

    /// Mount flag; repeat for several.
    #[arg(long = "mount-flag")]
    pub mount_flags: Vec<String>,

    /// Ask for a raw block volume instead of a mount.
    #[arg(long, conflicts_with_all = ["fs_type", "mount_flags"])]
    pub block: bool,
}

/// `--secret k=v`, repeatable. Values are sent, never printed.
#[derive(Debug, Clone, Default, Args)]
pub struct SecretArgs {
    /// Secret sent with the call (key=value); repeat for several. Visible to
    /// other local users in the process list: prefer a test-only secret.
    #[arg(long = "secret", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub secrets: Vec<KeyValue>,
}

/// `pfsctl volume ...`
#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Create a volume (CreateVolume).
    Create(CreateVolumeArgs),
    /// Delete a volume (DeleteVolume).
    Delete {
        /// Volume id.
        volume_id: String,
        #[command(flatten)]
        secrets: SecretArgs,
    },
    /// List volumes (ListVolumes).
    List(PageArgs),
    /// Show one volume (ControllerGetVolume).
    Get {
        /// Volume id.
        volume_id: String,
    },
    /// Grow a volume (ControllerExpandVolume).
    Expand {
        /// Volume id.
        volume_id: String,
        /// New required size (10Gi, 1Ti, bytes).
        #[arg(long, value_parser = parse_size)]
        size: i64,
        /// Upper size limit.
        #[arg(long, value_parser = parse_size)]
        limit: Option<i64>,
        #[command(flatten)]
        secrets: SecretArgs,
    },
    /// Check capabilities against a volume (ValidateVolumeCapabilities);
    /// exits 14 when they are not confirmed.
    Validate {
        /// Volume id.
        volume_id: String,
        #[command(flatten)]
        capabilities: CapabilityArgs,
        /// Volume context entry (key=value); repeat for several.
        #[arg(long = "context", value_name = "KEY=VALUE", value_parser = parse_key_value)]
        context: Vec<KeyValue>,
        /// Parameter (key=value); repeat for several.
        #[arg(long = "param", value_name = "KEY=VALUE", value_parser = parse_key_value)]
        params: Vec<KeyValue>,
        #[command(flatten)]
        secrets: SecretArgs,
    },
}

/// Flags of `volume create`.
#[derive(Debug, Clone, Args)]
pub struct CreateVolumeArgs {
    /// Volume name (the provisioner uses the PV name).
    pub name: String,

    /// Required size (10Gi, 1Ti, bytes).
    #[arg(long, value_parser = parse_size)]
    pub size: Option<i64>,

    /// Upper size limit.
    #[arg(long, value_parser = parse_size)]
    pub limit: Option<i64>,

    /// StorageClass parameter (key=value); repeat for several.
    #[arg(long = "param", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub params: Vec<KeyValue>,

    /// Mutable parameter (VolumeAttributesClass, key=value); repeat for several.
    #[arg(long = "mutable-param", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub mutable_params: Vec<KeyValue>,

    #[command(flatten)]
    pub secrets: SecretArgs,

    #[command(flatten)]
    pub capabilities: CapabilityArgs,

    /// Restore from this snapshot.
    #[arg(long, value_name = "SNAPSHOT_ID", conflicts_with = "from_volume")]
    pub from_snapshot: Option<String>,

    /// Clone this volume.
    #[arg(long, value_name = "VOLUME_ID")]
    pub from_volume: Option<String>,

    /// A topology the volume must be reachable from (k=v,k2=v2); repeatable.
    #[arg(long, value_name = "K=V,...", value_parser = parse_topology)]
    pub requisite_topology: Vec<TopologyArg>,

    /// A topology to prefer, in order (k=v,k2=v2); repeatable.
    #[arg(long, value_name = "K=V,...", value_parser = parse_topology)]
    pub preferred_topology: Vec<TopologyArg>,
}

/// Paging flags of the list commands.
#[derive(Debug, Clone, Args)]
pub struct PageArgs {
    /// Entries per page (0: the plugin decides).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i32).range(0..))]
    pub max_entries: i32,

    /// Continue from this token (from a previous page).
    #[arg(long, value_name = "TOKEN", conflicts_with = "all")]
    pub starting_token: Option<String>,

    /// Follow next tokens and print every page as one list.
    #[arg(long)]
    pub all: bool,
}

/// Flags of `capacity`.
#[derive(Debug, Clone, Args)]
pub struct CapacityArgs {
    /// StorageClass parameter (key=value); repeat for several.
    #[arg(long = "param", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub params: Vec<KeyValue>,

    /// Only capacity reachable from this topology (k=v,k2=v2).
    #[arg(long, value_name = "K=V,...", value_parser = parse_topology)]
    pub topology: Option<TopologyArg>,

    /// Only capacity usable with this access mode; repeat for several.
    #[arg(long = "access-mode", value_enum)]
    pub access_modes: Vec<AccessModeArg>,

    /// Filesystem type, with --access-mode.
    #[arg(long, requires = "access_modes")]
    pub fs_type: Option<String>,

    /// Mount flag, with --access-mode; repeat for several.
    #[arg(long = "mount-flag", requires = "access_modes")]
    pub mount_flags: Vec<String>,
}

/// `pfsctl node ...`
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Node id, volume limit and topology (NodeGetInfo).
    Info,
    /// Optional node RPCs the plugin implements.
    Capabilities,
    /// Stage a volume on this node (NodeStageVolume).
    Stage {
        /// Volume id.
        volume_id: String,
        /// Staging directory.
        #[arg(long)]
        staging_path: String,
        #[command(flatten)]
        capability: SingleCapabilityArgs,
        #[command(flatten)]
        contexts: ContextArgs,
        #[command(flatten)]
        secrets: SecretArgs,
    },
    /// Unstage a volume (NodeUnstageVolume).
    Unstage {
        /// Volume id.
        volume_id: String,
        /// Staging directory.
        #[arg(long)]
        staging_path: String,
    },
    /// Publish a volume to a target path (NodePublishVolume).
    Publish {
        /// Volume id.
        volume_id: String,
        /// Staging directory (when the plugin stages).
        #[arg(long)]
        staging_path: Option<String>,
        /// Target path.
        #[arg(long)]
        target_path: String,
        /// Publish read-only.
        #[arg(long)]
        read_only: bool,
        #[command(flatten)]
        capability: SingleCapabilityArgs,
        #[command(flatten)]
        contexts: ContextArgs,
        #[command(flatten)]
        secrets: SecretArgs,
    },
    /// Unpublish a target path (NodeUnpublishVolume).
    Unpublish {
        /// Volume id.
        volume_id: String,
        /// Target path.
        #[arg(long)]
        target_path: String,
    },
    /// Usage and condition of a published volume (NodeGetVolumeStats).
    Stats {
        /// Volume id.
        volume_id: String,
        /// A path the volume is published or staged at.
        #[arg(long)]
        volume_path: String,
        /// Staging directory.
        #[arg(long)]
        staging_path: Option<String>,
    },
}

/// Volume and publish contexts for the node calls.
#[derive(Debug, Clone, Args)]
pub struct ContextArgs {
    /// Volume context entry (key=value, from CreateVolume or a PV's volumeAttributes); repeatable.
    #[arg(long = "context", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub context: Vec<KeyValue>,

    /// Publish context entry (key=value); repeatable.
    #[arg(long = "publish-context", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub publish_context: Vec<KeyValue>,
}

/// `pfsctl snapshot ...`
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Create a snapshot (CreateSnapshot).
    Create {
        /// Snapshot name.
        name: String,
        /// Volume to snapshot.
        #[arg(long, value_name = "VOLUME_ID")]
        source_volume: String,
        /// VolumeSnapshotClass parameter (key=value); repeat for several.
        #[arg(long = "param", value_name = "KEY=VALUE", value_parser = parse_key_value)]
        params: Vec<KeyValue>,
        #[command(flatten)]
        secrets: SecretArgs,
    },
    /// Delete a snapshot (DeleteSnapshot).
    Delete {
        /// Snapshot id.
        snapshot_id: String,
        #[command(flatten)]
        secrets: SecretArgs,
    },
    /// List snapshots (ListSnapshots).
    List {
        /// Only this snapshot.
        #[arg(long)]
        snapshot_id: Option<String>,
        /// Only snapshots of this volume.
        #[arg(long, value_name = "VOLUME_ID")]
        source_volume: Option<String>,
        #[command(flatten)]
        page: PageArgs,
        #[command(flatten)]
        secrets: SecretArgs,
    },
    /// Show one snapshot (GetSnapshot).
    Get {
        /// Snapshot id.
        snapshot_id: String,
        #[command(flatten)]
        secrets: SecretArgs,
    },
    /// Poll ListSnapshots until the snapshot is ready to use, for at most --timeout.
    Wait {
        /// Snapshot id.
        snapshot_id: String,
        /// Time between polls.
        #[arg(long, default_value = "2s", value_parser = parse_duration)]
        interval: Duration,
    },
}

/// Flags of `support-bundle`.
#[derive(Debug, Clone, Args)]
pub struct BundleArgs {
    /// Where to write the bundle (a .tar.gz, created with mode 0600).
    #[arg(long, short)]
    pub output: PathBuf,

    /// Controller plugin endpoint. With neither this nor --node-endpoint, every
    /// service is asked at --endpoint.
    #[arg(long, value_name = "ENDPOINT")]
    pub controller_endpoint: Option<String>,

    /// Node plugin endpoint.
    #[arg(long, value_name = "ENDPOINT")]
    pub node_endpoint: Option<String>,

    /// Configuration file to include, redacted; repeat for several.
    #[arg(long = "config", value_name = "FILE")]
    pub configs: Vec<PathBuf>,

    /// Log file to include, redacted (its last --max-log-size bytes); repeat for several.
    #[arg(long = "log-file", value_name = "FILE")]
    pub log_files: Vec<PathBuf>,

    /// The driver's state directory: listed, with its JSON records and
    /// generated beegfs-client.conf files included, redacted.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// How much of the end of each log file to keep.
    #[arg(long, default_value = "16Mi", value_parser = parse_size)]
    pub max_log_size: i64,

    /// Mount table to read lustre and beegfs mounts from.
    #[arg(long, default_value = "/proc/self/mountinfo", hide = true)]
    pub mountinfo: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("pfsctl").chain(args.iter().copied()))
    }

    #[test]
    fn command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_are_accepted_after_the_command() {
        let cli = parse(&["identity", "probe", "--json", "--timeout", "2s"]).unwrap();
        assert!(cli.global.json);
        assert_eq!(cli.global.timeout, Duration::from_secs(2));
    }

    #[test]
    fn create_collects_repeated_flags_in_order() {
        let cli = parse(&[
            "volume",
            "create",
            "pvc-1",
            "--size",
            "10Gi",
            "--param",
            "a=1",
            "--param",
            "b=2",
            "--access-mode",
            "rwx",
            "--access-mode",
            "multi-node-reader-only",
            "--requisite-topology",
            "zone=a,rack=1",
        ])
        .unwrap();
        let Command::Volume(VolumeCommand::Create(args)) = cli.command else {
            panic!("not a create");
        };
        assert_eq!(args.size, Some(10 << 30));
        assert_eq!(
            args.params,
            [("a".into(), "1".into()), ("b".into(), "2".into())]
        );
        assert_eq!(
            args.capabilities.access_modes,
            [
                AccessModeArg::MultiNodeMultiWriter,
                AccessModeArg::MultiNodeReaderOnly
            ]
        );
        assert_eq!(args.requisite_topology[0].0.len(), 2);
    }

    #[test]
    fn create_defaults_to_one_single_node_writer_mount() {
        let cli = parse(&["volume", "create", "pvc-1"]).unwrap();
        let Command::Volume(VolumeCommand::Create(args)) = cli.command else {
            panic!("not a create");
        };
        assert_eq!(
            args.capabilities.access_modes,
            [AccessModeArg::SingleNodeWriter]
        );
        assert!(!args.capabilities.block);
    }

    #[test]
    fn conflicting_sources_and_bad_values_are_usage_errors() {
        let both = parse(&[
            "volume",
            "create",
            "v",
            "--from-snapshot",
            "s",
            "--from-volume",
            "v",
        ]);
        assert_eq!(both.unwrap_err().exit_code(), 2);
        let bad_size = parse(&["volume", "create", "v", "--size", "10G"]).unwrap_err();
        assert_eq!(bad_size.exit_code(), 2);
        assert!(bad_size.to_string().contains("--size"), "{bad_size}");
        let bad_pair = parse(&["volume", "create", "v", "--param", "novalue"]).unwrap_err();
        assert!(bad_pair.to_string().contains("key=value"), "{bad_pair}");
    }

    #[test]
    fn help_lists_the_exit_statuses() {
        let help = Cli::command().render_help().to_string();
        assert!(help.contains("Exit status:"), "{help}");
        assert!(help.contains(" 3  NotFound"), "{help}");
    }
}
