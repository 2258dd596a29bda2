//! `pfs-csi-node`: the CSI node plugin (stage, publish, stats).

use clap::Parser;

/// The pfs-csi node plugin for Lustre (EXAScaler) and BeeGFS.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    plugin: pfs_driver::cli::PluginArgs,
}

// One thread serves every RPC: a publish is a few syscalls on tokio's blocking pool, and a
// multi-threaded scheduler only added wake-ups between its workers (about a fifth more
// syscalls per publish+unpublish) and memory. Nothing that can block may run on it (see
// docs/architecture.md).
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    pfs_driver::assemble::run_node(Args::parse().plugin).await
}
