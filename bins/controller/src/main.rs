//! `pfs-csi-controller`: the CSI controller plugin (provisioning, expansion, snapshots).

use clap::Parser;

/// The pfs-csi controller plugin for Lustre (EXAScaler) and BeeGFS.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    plugin: pfs_driver::cli::PluginArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    pfs_driver::assemble::run_controller(Args::parse().plugin).await
}
