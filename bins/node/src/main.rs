//! `pfs-csi-node`: the CSI node plugin (stage, publish, stats).

use clap::Parser;

/// The pfs-csi node plugin for Lustre (EXAScaler) and BeeGFS.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    plugin: pfs_driver::cli::PluginArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    pfs_driver::assemble::run_node(Args::parse().plugin).await
}
