//! `umount [-l] [-f] TARGET...`: a real `umount2`, and the simulator's mount records forgotten.

use super::ToolIo;
use super::getopt::{Opt, OptSpec, getopt};
use crate::state::{FsKind, StateRoot};
use nix::errno::Errno;
use nix::mount::MntFlags;
use std::path::PathBuf;

const SPEC: OptSpec<'static> = OptSpec {
    short_with_value: "tO",
    short_flags: "lfvnridR",
    long_with_value: &["types", "test-opts"],
    long_flags: &[
        "lazy",
        "force",
        "verbose",
        "no-mtab",
        "read-only",
        "recursive",
        "detach-loop",
    ],
};

/// The exit code of `umount(8)` for a failure.
const UMOUNT_FAILURE: i32 = 32;

/// Runs `umount`.
pub fn run(args: &[String], root: &StateRoot, io: &mut ToolIo<'_>) -> i32 {
    let opts = match getopt(args, SPEC) {
        Ok(opts) => opts,
        Err(msg) => {
            io.err(&format!(
                "umount: {msg}\nTry 'umount --help' for more information.\n"
            ));
            return 1;
        }
    };
    let mut flags = MntFlags::empty();
    let mut targets = Vec::new();
    for opt in opts {
        match opt {
            Opt::Short('l', None) => flags |= MntFlags::MNT_DETACH,
            Opt::Long(n, None) if n == "lazy" => flags |= MntFlags::MNT_DETACH,
            Opt::Short('f', None) => flags |= MntFlags::MNT_FORCE,
            Opt::Long(n, None) if n == "force" => flags |= MntFlags::MNT_FORCE,
            Opt::Positional(p) => targets.push(p),
            _ => {}
        }
    }
    if targets.is_empty() {
        io.err("umount: bad usage\nTry 'umount --help' for more information.\n");
        return 1;
    }
    let mut code = 0;
    for target in targets {
        let path = std::fs::canonicalize(&target).unwrap_or_else(|_| PathBuf::from(&target));
        match nix::mount::umount2(&path, flags) {
            Ok(()) => forget(root, &path),
            Err(errno) => {
                let what = match errno {
                    Errno::EINVAL => "not mounted".to_string(),
                    Errno::EBUSY => "target is busy".to_string(),
                    Errno::ENOENT => "no mount point specified".to_string(),
                    other => other.desc().to_string(),
                };
                io.err(&format!("umount: {target}: {what}.\n"));
                code = UMOUNT_FAILURE;
            }
        }
    }
    code
}

fn forget(root: &StateRoot, target: &std::path::Path) {
    for kind in [FsKind::Lustre, FsKind::Beegfs] {
        for fs in root.filesystems(kind).unwrap_or_default() {
            let _ = fs.forget_mount(target);
        }
    }
}
