//! The private mount namespace the whole run lives in: the plugins, the simulator and the
//! unrelated mounts see one mount table that nothing else on the machine sees, and that the
//! kernel tears down when the last process in it exits.

use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};

use crate::error::{BenchError, Result};

/// Moves this process into a new mount namespace with every mount private (`mount
/// --make-rprivate /`), so nothing mounted here propagates to the host and back.
///
/// Must run before any thread starts: the kernel refuses `unshare(CLONE_NEWNS)` to a
/// process whose threads share its filesystem context.
pub fn enter_private_mount_namespace() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Err(BenchError::Setup(
            "the bench mounts (the plugins bind-mount volumes, the bench makes thousands of unrelated mounts): run it as root".into(),
        ));
    }
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| {
        BenchError::Setup(format!(
            "unshare(CLONE_NEWNS): {e} (start the bench before any thread)"
        ))
    })?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| BenchError::Setup(format!("making / recursively private: {e}")))?;
    Ok(())
}
