//! The node plugin's Kubernetes side: which client each configured
//! filesystem needs, and the topology provider and readiness loop started
//! when the API is in use.
//!
//! Nothing here waits for the API server: the provider answers from the
//! configuration and the local checks at once and takes the Node's labels
//! when the API answers.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use beegfs_backend::BeegfsSettings;
use csi_core::client_tools::{client_dir, tool_candidates, tool_dirs};
use csi_core::domain::Topology;
use csi_core::ports::TopologyProvider;
use k8s_adapter::AdapterError;
use k8s_adapter::client_checks::{ClientKind, ClientRequirements, HostPaths, ToolRequirement};
use k8s_adapter::client_readiness::{ClientReadiness, ReadinessPublisher, run_readiness_loop};
use k8s_adapter::kube_client::{self, Client};
use k8s_adapter::node_topology::{
    FollowSettings, LayeredTopology, NodeLabelTopology, ZONE_LABEL, validate_label_key,
};
use lustre_backend::LustreSettings;
use tracing::{info, warn};

use crate::cli::{IN_CLUSTER_ENV, PluginArgs};
use crate::config::DriverConfig;

/// What each configured filesystem's client needs on this node. Lustre: the
/// `lnet` and `lustre` modules, `mount.lustre` and the configured `lfs`.
/// BeeGFS: the `beegfs` module and `beegfs-ctl` (7) or `beegfs` (8), as the
/// backend resolves them.
pub fn client_requirements(
    args: &PluginArgs,
    config: &DriverConfig,
    path: Option<&std::ffi::OsStr>,
) -> anyhow::Result<Vec<ClientRequirements>> {
    let dirs = tool_dirs(&client_dir(&args.kubelet_dir, &args.driver_name), path);
    let mut requirements = Vec::new();
    if config.lustre.is_some() {
        let settings = LustreSettings::from_value(config.settings_for("lustre"))
            .context("pfsCsi.lustre settings")?;
        requirements.push(ClientRequirements::new(
            ClientKind::Lustre,
            vec![
                ToolRequirement::new(
                    "mount.lustre",
                    tool_candidates(Path::new("mount.lustre"), &dirs),
                ),
                ToolRequirement::new("lfs", tool_candidates(&settings.lfs, &dirs)),
            ],
        ));
    }
    if config.beegfs.is_some() {
        let wrapped = serde_json::json!({ "pfsCsi": { "beegfs": config.settings_for("beegfs") } });
        let settings =
            BeegfsSettings::from_yaml(&wrapped.to_string()).context("pfsCsi.beegfs settings")?;
        let tools = settings.resolve_tools(&client_dir(&args.kubelet_dir, &args.driver_name));
        let mut candidates = tool_candidates(&tools.beegfs_ctl, &dirs);
        candidates.extend(tool_candidates(&tools.beegfs, &dirs));
        requirements.push(ClientRequirements::new(
            ClientKind::Beegfs,
            vec![ToolRequirement::new(
                format!(
                    "{} or {}",
                    tools.beegfs_ctl.display(),
                    tools.beegfs.display()
                ),
                candidates,
            )],
        ));
    }
    Ok(requirements)
}

/// The label keys followed on the Node: the zone, the configured extra keys,
/// and the readiness keys (so NodeGetInfo reports what the Node's label says,
/// as the kubelet requires of a topology label it already finds).
pub fn followed_keys(args: &PluginArgs, readiness_keys: &[String]) -> anyhow::Result<Vec<String>> {
    let mut keys = vec![ZONE_LABEL.to_string()];
    for key in &args.kube.topology_label_keys {
        let key = key.trim();
        if key.is_empty() {
            continue;
        }
        validate_label_key(key).context("--topology-label-keys")?;
        keys.push(key.to_string());
    }
    keys.extend(readiness_keys.iter().cloned());
    Ok(keys)
}

/// The node's topology provider. With the API off: none (the backends'
/// configured topology only). With the API on: the readiness keys from the
/// local checks, overridden by the Node's labels once they are read; the
/// label watch and the readiness loop run in background tasks. Without a
/// usable API configuration the readiness keys are still reported.
pub async fn node_topology(
    args: &PluginArgs,
    config: &DriverConfig,
    node_id: &str,
) -> anyhow::Result<Option<Arc<dyn TopologyProvider>>> {
    let in_cluster = std::env::var(IN_CLUSTER_ENV).ok();
    if !args.kube.api_enabled(in_cluster.as_deref()) {
        info!("Kubernetes API not used (--kube-api off): topology comes from the configuration");
        return Ok(None);
    }
    let client = kube_client::connect().await;
    start_node_topology(args, config, node_id, client).map(Some)
}

/// Builds the provider over `client` (or its configuration error) and
/// starts the background tasks; see [`node_topology`].
pub fn start_node_topology(
    args: &PluginArgs,
    config: &DriverConfig,
    node_id: &str,
    client: Result<Client, AdapterError>,
) -> anyhow::Result<Arc<dyn TopologyProvider>> {
    let requirements = client_requirements(args, config, std::env::var_os("PATH").as_deref())?;
    let host = HostPaths {
        proc_root: args.kube.host_proc_dir.clone(),
        sys_root: args.kube.host_sys_dir.clone(),
    };
    let readiness = Arc::new(ClientReadiness::new(&args.driver_name, requirements, host));
    let keys = followed_keys(args, &readiness.label_keys())?;
    let labels = Arc::new(NodeLabelTopology::new(node_id, keys, Topology::new())?);
    let interval = Duration::from_secs(args.kube.client_check_interval_seconds);
    let timeout = Duration::from_secs(args.kube.kube_api_timeout_seconds);

    let client = match client {
        Ok(client) => client,
        Err(error) => {
            warn!(
                %error,
                "no Kubernetes API access: topology from the configuration and the local client checks; readiness is not published"
            );
            tokio::spawn(run_readiness_loop(readiness.clone(), None, interval));
            return Ok(readiness);
        }
    };
    info!(
        node = node_id,
        keys = ?labels.keys(),
        check_interval = ?interval,
        "following the Node's labels and publishing client readiness"
    );
    labels.spawn(
        client.clone(),
        FollowSettings {
            request_timeout: timeout,
            ..FollowSettings::default()
        },
    );
    let publisher = ReadinessPublisher::new(client, node_id, &args.driver_name, timeout);
    tokio::spawn(run_readiness_loop(
        readiness.clone(),
        Some(publisher),
        interval,
    ));
    Ok(Arc::new(LayeredTopology::new(vec![readiness, labels])))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::path::PathBuf;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        plugin: PluginArgs,
    }

    fn parse(extra: &[&str]) -> PluginArgs {
        let mut argv = vec![
            "node",
            "--config",
            "/dev/null",
            "--driver-name",
            "pfs-csi.io",
        ];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).unwrap().plugin
    }

    fn config(lustre: bool, beegfs: bool) -> DriverConfig {
        DriverConfig {
            lustre: lustre.then(|| (PathBuf::from("/etc/exa.yaml"), serde_json::json!({}))),
            beegfs: beegfs.then(|| (PathBuf::from("/etc/beegfs.yaml"), serde_json::json!({}))),
            settings: serde_json::Value::Null,
        }
    }

    #[test]
    fn the_api_is_used_in_a_pod_unless_switched_off() {
        let args = parse(&[]);
        assert!(args.kube.api_enabled(Some("10.96.0.1")));
        assert!(!args.kube.api_enabled(None));
        assert!(!args.kube.api_enabled(Some("")));
        assert!(
            !parse(&["--kube-api=false"])
                .kube
                .api_enabled(Some("10.96.0.1"))
        );
        assert!(parse(&["--kube-api"]).kube.api_enabled(None));
        assert!(parse(&["--kube-api=true"]).kube.api_enabled(None));
    }

    #[test]
    fn extra_topology_keys_are_validated_and_followed_after_the_zone() {
        let args = parse(&[
            "--topology-label-keys",
            "example.com/rack,topology.kubernetes.io/zone",
        ]);
        assert_eq!(
            followed_keys(&args, &["pfs-csi.io/lustre-client".to_string()]).unwrap(),
            [
                ZONE_LABEL,
                "example.com/rack",
                "topology.kubernetes.io/zone",
                "pfs-csi.io/lustre-client"
            ]
        );
        let bad = parse(&["--topology-label-keys", "Not A Key"]);
        let err = followed_keys(&bad, &[]).unwrap_err();
        assert!(
            format!("{err:#}").contains("--topology-label-keys"),
            "{err:#}"
        );
    }

    #[test]
    fn intervals_and_timeouts_must_be_positive() {
        assert!(
            Cli::try_parse_from([
                "node",
                "--config",
                "/x",
                "--client-check-interval-seconds",
                "0"
            ])
            .is_err()
        );
        let args = parse(&["--client-check-interval-seconds", "15"]);
        assert_eq!(args.kube.client_check_interval_seconds, 15);
        assert_eq!(args.kube.kube_api_timeout_seconds, 10);
    }

    #[test]
    fn lustre_needs_its_modules_mount_helper_and_lfs_searched_in_the_client_dir_first() {
        let args = parse(&["--kubelet-dir", "/var/lib/k0s/kubelet"]);
        let requirements =
            client_requirements(&args, &config(true, false), Some("/usr/bin:/bin".as_ref()))
                .unwrap();
        assert_eq!(requirements.len(), 1);
        let lustre = &requirements[0];
        assert_eq!(lustre.kind, ClientKind::Lustre);
        assert_eq!(lustre.modules, ["lnet", "lustre"]);
        let client = PathBuf::from("/var/lib/k0s/kubelet/plugins/pfs-csi.io/client");
        assert_eq!(lustre.tools[0].what, "mount.lustre");
        assert_eq!(
            lustre.tools[0].candidates[0],
            client.join("bin/mount.lustre")
        );
        assert!(
            lustre.tools[0]
                .candidates
                .contains(&PathBuf::from("/sbin/mount.lustre"))
        );
        assert_eq!(lustre.tools[1].what, "lfs");
        assert_eq!(
            lustre.tools[1].candidates,
            [
                client.join("bin/lfs"),
                client.join("sbin/lfs"),
                client.join("lfs"),
                PathBuf::from("/sbin/lfs"),
                PathBuf::from("/usr/sbin/lfs"),
                PathBuf::from("/usr/bin/lfs"),
                PathBuf::from("/bin/lfs"),
            ]
        );
    }

    #[test]
    fn beegfs_needs_its_module_and_either_tool_and_both_filesystems_give_two() {
        let args = parse(&[]);
        let requirements = client_requirements(&args, &config(true, true), None).unwrap();
        let kinds: Vec<_> = requirements.iter().map(|r| r.kind).collect();
        assert_eq!(kinds, [ClientKind::Lustre, ClientKind::Beegfs]);
        let beegfs = &requirements[1];
        assert_eq!(beegfs.modules, ["beegfs"]);
        assert_eq!(beegfs.tools.len(), 1);
        assert_eq!(beegfs.tools[0].what, "beegfs-ctl or beegfs");
        let names: std::collections::BTreeSet<_> = beegfs.tools[0]
            .candidates
            .iter()
            .filter_map(|p| p.file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[tokio::test]
    async fn without_api_access_the_local_client_checks_are_still_reported() {
        let host = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(host.path().join("proc")).unwrap();
        std::fs::write(host.path().join("proc/modules"), "lnet 1 0 - Live 0x0\n").unwrap();
        let proc_dir = host.path().join("proc");
        let args = parse(&[
            "--kube-api",
            "--host-proc-dir",
            proc_dir.to_str().unwrap(),
            "--host-sys-dir",
            "/nonexistent",
        ]);
        let unreachable = Err(AdapterError::KubeConfig {
            reason: "no service account".into(),
        });
        let provider = start_node_topology(&args, &config(true, false), "n1", unreachable).unwrap();
        assert_eq!(
            provider.topology().await.unwrap(),
            Topology::from([(
                "pfs-csi.io/lustre-client".to_string(),
                "missing".to_string()
            )])
        );
    }

    #[tokio::test]
    async fn without_the_api_there_is_no_provider_and_nothing_is_contacted() {
        let args = parse(&["--kube-api=false"]);
        assert!(
            node_topology(&args, &config(true, false), "n1")
                .await
                .unwrap()
                .is_none()
        );
    }
}
