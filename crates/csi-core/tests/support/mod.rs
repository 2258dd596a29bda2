//! Helpers shared by the tests that need root or mount: each such test re-runs itself
//! inside a private mount namespace, so even a crash leaves nothing mounted on the host.
#![allow(dead_code)] // Each test crate uses its own part of these.

use std::io::ErrorKind;
use std::path::PathBuf;

use nix::mount::{MntFlags, umount2};

/// Fails (never skips) unless running as root; `why` says what needs it.
pub fn require_root(why: &str) {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "{why} need root and do not skip: run them as root"
    );
}

/// Set in the environment of the re-run test inside the private namespace.
const IN_PRIVATE_NS: &str = "PFS_CSI_TEST_IN_PRIVATE_MOUNT_NS";

/// True when the caller should run the test body here: inside the private namespace, or
/// in this namespace when `unshare` is not installed. False after re-running test `name`
/// in a private namespace (which must have passed).
pub fn isolated(name: &str) -> bool {
    require_root("the mount tests (CAP_SYS_ADMIN)");
    if std::env::var_os(IN_PRIVATE_NS).is_some() {
        return true;
    }
    let exe = std::env::current_exe().expect("test binary path");
    let output = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--"])
        .arg(&exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(IN_PRIVATE_NS, "1")
        .output();
    match output {
        Err(e) if e.kind() == ErrorKind::NotFound => {
            eprintln!("unshare(1) is not installed: running {name} in this mount namespace");
            true
        }
        Err(e) => panic!("could not run unshare: {e}"),
        Ok(out) => {
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success() && stdout.contains("1 passed"),
                "{name} failed inside its private mount namespace ({}):\n{stdout}\n{stderr}",
                out.status
            );
            false
        }
    }
}

/// Unmounts (lazily, repeatedly: stacked mounts too) when dropped.
pub struct MountGuard(pub PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        for _ in 0..8 {
            if umount2(&self.0, MntFlags::MNT_DETACH).is_err() {
                break;
            }
        }
    }
}
