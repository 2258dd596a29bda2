//! Assembles a pfs-csi driver from configuration, so the binaries stay thin.
//!
//! - [`cli`]: the flags of the plugin binaries.
//! - [`config`]: loading the EXAScaler, BeeGFS and pfs-csi configuration files.
//! - [`logging`]: text or JSON logs.
//! - [`assemble`]: backends and services built from the configuration, and served.
//! - [`node_kube`]: the node plugin's Kubernetes side (label topology, client readiness).

pub mod assemble;
pub mod cli;
pub mod config;
pub mod logging;
pub mod node_kube;
