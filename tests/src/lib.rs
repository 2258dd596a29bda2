//! Harness of the workspace-level integration tests: the real `pfs-csi-controller`,
//! `pfs-csi-node`, `pfsctl` and `pfs-csi-sim` executables, driven over gRPC on unix sockets.
//!
//! The tests do not build the executables: run `cargo build --workspace --bins` first; the
//! harness finds them beside the test executable's `deps/` directory and says so clearly
//! when one is missing.
//!
//! - [`binaries`]: locating the built executables.
//! - [`output`]: a child's output captured while it runs.
//! - [`serve`]: `pfs-csi-sim serve` as a fixture ([`serve::Serve`]), one per test or shared
//!   by the tests of a file; it leaves nothing mounted and nothing on disk, even when a test
//!   fails or the test process dies.
//! - [`plugin`]: one plugin binary started directly (shutdown and socket tests).
//! - [`csi`]: generated clients over the unix socket and request builders.
//! - [`mounts`]: root checks and the mount table.
//! - [`pfsctl`]: running the CLI client.
//! - [`raw`]: hand-encoded requests (bytes a generated client refuses to send).

pub mod binaries;
pub mod csi;
pub mod mounts;
pub mod output;
pub mod pfsctl;
pub mod plugin;
pub mod raw;
pub mod serve;

pub use csi::csi as proto;
pub use serve::{Serve, ServeOptions};
