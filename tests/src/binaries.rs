//! Locating the executables `cargo build --workspace --bins` made.

use std::path::PathBuf;

/// The simulator (and `serve`).
pub const SIM: &str = "pfs-csi-sim";
/// The controller plugin.
pub const CONTROLLER: &str = "pfs-csi-controller";
/// The node plugin.
pub const NODE: &str = "pfs-csi-node";
/// The CLI client.
pub const PFSCTL: &str = "pfsctl";

/// `target/<profile>`: the directory above the test executable's `deps/`.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's own path");
    let dir = exe
        .parent()
        .expect("the test executable lives in a directory")
        .to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().map(PathBuf::from).unwrap_or(dir)
    } else {
        dir
    }
}

/// The path of a built executable; panics with what to do when it is missing.
pub fn bin(name: &str) -> PathBuf {
    let path = target_dir().join(name);
    assert!(
        path.is_file(),
        "{name} not found at {}: these tests run the real executables; build them first with \
         `cargo build --workspace --bins` (same profile as the tests)",
        path.display()
    );
    path
}
