//! Builds the backends and services from the configuration and serves them.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use beegfs_backend::{BeegfsBackend, BeegfsSettings, ClientSecrets};
use csi_core::client_tools::client_dir;
use csi_core::linux::{LinuxMounter, TokioCommandRunner};
use csi_core::ports::{BackendContext, CommandRunner, FilesystemBackend, Role};
use csi_core::service::{Backends, ControllerService, NodeService};
use csi_core::snapshot_engine::{ArchiveSnapshotEngine, DEFAULT_ARCHIVE_TIMEOUT};
use k8s_adapter::csi_server::{self, ServeOptions};
use k8s_adapter::endpoint::SocketEndpoint;
use k8s_adapter::identity::IdentityConfig;
use k8s_adapter::metrics::{CsiMetrics, endpoint::MetricsEndpoint};
use k8s_adapter::server::shutdown_signal;
use lustre_backend::{LustreBackend, LustreConfig, LustreSettings};
use tracing::info;

use crate::cli::PluginArgs;
use crate::config::{self, DriverConfig};

/// How long the node's own bind mounts and unmounts may take before a lazy fallback.
const NODE_MOUNT_TIMEOUT: Duration = Duration::from_secs(30);

/// Builds one backend per configured filesystem type, for `role`.
pub fn backends(role: Role, args: &PluginArgs, config: &DriverConfig) -> anyhow::Result<Backends> {
    let runner: Arc<dyn CommandRunner> = Arc::new(TokioCommandRunner::new());
    let context = |mount_program, mount_timeout, archive_timeout| BackendContext {
        role,
        node_id: args
            .node_id
            .clone()
            .unwrap_or_else(|| "controller".to_string()),
        driver_name: args.driver_name.clone(),
        runner: runner.clone(),
        mounter: Arc::new(LinuxMounter::new(
            runner.clone(),
            mount_program,
            mount_timeout,
        )),
        snapshots: Arc::new(
            ArchiveSnapshotEngine::new(runner.clone()).with_archive_timeout(archive_timeout),
        ),
        state_dir: args.state_dir.clone(),
        kubelet_dir: args.kubelet_dir.clone(),
    };
    let mut list: Vec<Arc<dyn FilesystemBackend>> = Vec::new();
    if let Some((path, value)) = &config.lustre {
        let mut settings = LustreSettings::from_value(config.settings_for("lustre"))
            .context("pfsCsi.lustre settings")?;
        settings.resolve_tools(&client_dir(&args.kubelet_dir, &args.driver_name));
        let lustre = LustreConfig::from_value(value.clone())
            .with_context(|| format!("EXAScaler configuration {}", path.display()))?;
        let ctx = context(
            settings.mount.clone(),
            Duration::from_secs(settings.mount_timeout_seconds),
            Duration::from_secs(settings.archive_timeout_seconds),
        );
        list.push(Arc::new(LustreBackend::new(lustre, settings, ctx)?));
    }
    if let Some((path, value)) = &config.beegfs {
        let wrapped = serde_json::json!({ "pfsCsi": { "beegfs": config.settings_for("beegfs") } });
        let settings =
            BeegfsSettings::from_yaml(&wrapped.to_string()).context("pfsCsi.beegfs settings")?;
        let beegfs = beegfs_backend::DriverConfig::from_yaml(&value.to_string())
            .with_context(|| format!("BeeGFS configuration {}", path.display()))?;
        let secrets = ClientSecrets::load(
            args.beegfs_connauth_file.as_deref(),
            args.beegfs_tls_cert_file.as_deref(),
        )
        .context("BeeGFS connAuth/TLS secret files")?;
        let mount = settings
            .resolve_tools(&client_dir(&args.kubelet_dir, &args.driver_name))
            .mount;
        let ctx = context(mount, settings.mount_timeout(), DEFAULT_ARCHIVE_TIMEOUT);
        list.push(Arc::new(BeegfsBackend::new(
            ctx, beegfs, secrets, settings,
        )?));
    }
    Ok(Backends::new(list))
}

/// Runs the controller plugin until SIGTERM or SIGINT.
pub async fn run_controller(args: PluginArgs) -> anyhow::Result<()> {
    let (endpoint, identity, config) = prepare(&args)?;
    let backends = backends(Role::Controller, &args, &config)?;
    let controller = Arc::new(ControllerService::new(backends));
    let options = serve_options(&args, &identity).await?;
    info!(driver = identity.driver_name(), endpoint = %endpoint, "starting the controller plugin");
    csi_server::run_with_metrics(
        &endpoint,
        identity,
        Some(controller),
        None,
        options,
        shutdown_signal()?,
    )
    .await?;
    Ok(())
}

/// Runs the node plugin until SIGTERM or SIGINT.
pub async fn run_node(args: PluginArgs) -> anyhow::Result<()> {
    let node_id = args
        .node_id
        .clone()
        .context("--node-id (NODE_ID) is required for the node plugin")?;
    let (endpoint, identity, config) = prepare(&args)?;
    let backends = backends(Role::Node, &args, &config)?;
    let runner: Arc<dyn CommandRunner> = Arc::new(TokioCommandRunner::new());
    let mounter = Arc::new(LinuxMounter::new(
        runner,
        "mount".into(),
        NODE_MOUNT_TIMEOUT,
    ));
    // Starts background work only; never waits for the API server.
    let topology = crate::node_kube::node_topology(&args, &config, &node_id).await?;
    let node = Arc::new(
        NodeService::new(node_id, backends, mounter, topology)?
            .with_kubelet_dir(args.kubelet_dir.clone()),
    );
    let options = serve_options(&args, &identity).await?;
    info!(driver = identity.driver_name(), endpoint = %endpoint, "starting the node plugin");
    csi_server::run_with_metrics(
        &endpoint,
        identity,
        None,
        Some(node),
        options,
        shutdown_signal()?,
    )
    .await?;
    Ok(())
}

/// What the server serves beside CSI: reflection with `--grpc-reflection`, and
/// metrics on `--metrics-address`, listening already so that a taken port
/// fails start-up rather than the first scrape.
async fn serve_options(
    args: &PluginArgs,
    identity: &IdentityConfig,
) -> anyhow::Result<ServeOptions> {
    let mut options = ServeOptions {
        metrics: None,
        reflection: args.grpc_reflection,
    };
    if let Some(address) = args.metrics_address {
        let metrics = Arc::new(CsiMetrics::new(identity.driver_name()));
        let endpoint = MetricsEndpoint::bind(address, metrics)
            .await
            .context("--metrics-address")?;
        options.metrics = Some(endpoint);
    }
    Ok(options)
}

fn prepare(args: &PluginArgs) -> anyhow::Result<(SocketEndpoint, IdentityConfig, DriverConfig)> {
    crate::logging::init(args.log_format, &args.log_level)?;
    let endpoint = SocketEndpoint::parse(&args.endpoint).context("--endpoint")?;
    let identity = IdentityConfig::new(args.driver_name.clone()).context("--driver-name")?;
    let config = config::load(&args.config)?;
    Ok((endpoint, identity, config))
}
