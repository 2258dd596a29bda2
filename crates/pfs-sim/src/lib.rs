//! Simulators of the Lustre and BeeGFS tools for tests and the quickstart; never part of the
//! driver image.
//!
//! One multi-call executable, `pfs-csi-sim`, stands in for `mount`, `umount`, `lfs`, `lctl`,
//! `dtar`, `beegfs-ctl` and `beegfs`. It picks the tool from the file name it was started under
//! (`pfs-csi-sim install-tools DIR` makes the symlinks) or from its first argument
//! (`pfs-csi-sim lfs quota -p 7 /mnt`). Each tool takes the real tool's arguments, prints only
//! what the real tool prints and exits with its exit codes. The driver's tool paths are
//! configuration, so tests and the quickstart point them at these executables.
//!
//! # Environment
//! - `PFS_SIM_ROOT` (required): the state root. Tools fail with a clear message when it is unset.
//! - `PFS_SIM_LNET_NIDS` (optional): this node's NIDs for `lctl list_nids`, comma separated
//!   (default `127.0.0.1@tcp`).
//! - `BEEGFS_<FLAG>` (optional): defaults of the `beegfs` tool's global flags, as the real tool
//!   reads them (`BEEGFS_MGMTD_ADDR`, `BEEGFS_AUTH_DISABLE`, ...).
//!
//! # State layout (under `PFS_SIM_ROOT`)
//! ```text
//! faults.json            fault rules (see below)
//! faults-state.json      uses of rules with `times`
//! calls.log              one JSON line per tool invocation: tool, args, exit_code, pid
//! dmesg.log              what a real BeeGFS client would have logged to the kernel log
//! lustre/<fsname>/data/  the files clients see through their mounts
//! lustre/<fsname>/meta/  fs.json (kind, NIDs, project backend), quota.json (project limits in
//!                        KiB), projects.json (recorded project ids), mounts.json
//! sys/fs/lustre/version  the Lustre client's version (as in sysfs), made with the first Lustre
//!                        filesystem; the driver's Probe reads it, else runs `lctl`
//! beegfs/<host>/data/    the files clients see
//! beegfs/<host>/meta/    fs.json (version 7|8, gRPC port, pools, targets), conn.auth (the
//!                        secret, 0400), tls-cert.pem, entries.json (entry ids, stripe
//!                        patterns), quota.json (user/group limits per pool), mounts.json
//! ```
//! Metadata files are JSON written atomically under an exclusive `flock` on `meta/.lock`.
//!
//! # Commands
//! - `pfs-csi-sim create-fs lustre --name NAME [--nids NID,...]` and `pfs-csi-sim create-fs beegfs
//!   --mgmtd-host HOST --version 7|8 [--auth-secret-file F] [--tls-cert-file F] [--grpc-port P]
//!   [--pools N] [--targets N]` create a filesystem and print its directories as JSON.
//! - `pfs-csi-sim install-tools DIR` links every tool name in `DIR` to this executable.
//! - `pfs-csi-sim fault add|clear|list` edits the fault file ([`faults`] from Rust).
//! - `pfs-csi-sim serve --filesystem lustre|beegfs7|beegfs8 --state-dir DIR
//!   --controller-endpoint unix:///PATH --node-endpoint unix:///PATH`: a simulated filesystem
//!   with the real controller and node plugins, until SIGTERM/SIGINT; see [`serve`].
//! - `mount -t lustre NIDS:/fsname[/subdir] TARGET [-o opts]`: the filesystem must exist, one NID
//!   must be registered for it (when any are), the subdirectory must exist (else `mount.lustre`'s
//!   "No such file or directory", exit 2); then a real bind mount of the data directory, with
//!   `ro`, `nosuid`, `nodev`, `noexec` applied by a read-only/flag remount; options are recorded.
//! - `mount -t beegfs beegfs_nodev TARGET -o ...,cfgFile=PATH`: reads the client configuration;
//!   `sysMgmtdHost` must name a filesystem, `connAuthFile` must be readable (or
//!   `connDisableAuthentication = true`) and match the filesystem's secret; failures print
//!   mount(8)'s generic message (exit 32) and log the reason to `dmesg.log`. Other mounts
//!   (`--bind`, other types, `-o remount`) are refused.
//! - `umount [-l] [-f] TARGET...`: `umount2` (lazy with `-l`), records forgotten.
//! - `lfs project [-p ID] [-s] [-d] [-r] [-C] [-k] [-c] PATH...`, `lfs setquota -p ID [-b|-B|-i|-I
//!   LIMIT] MOUNT` (blocks in KiB or with `k`/`M`/`G`/`T` suffixes), `lfs quota -p ID [-q] [-h]
//!   MOUNT` (usage computed from the files; the real layout, `*` over a limit, `-h` units).
//! - `lctl get_param [-n] version`, `lctl list_nids`.
//! - `dtar -c -f ARCHIVE [-C DIR] SOURCE...`, `dtar -x -f ARCHIVE [-C DIR] [--preserve-owner]
//!   [--preserve-perms] [--preserve-times] [--preserve-xattrs]`.
//! - `beegfs-ctl --cfgFile=CONF [--unmounted] --getentryinfo|--createdir|--setpattern|--listnodes|
//!   --setquota|--getquota ...` (BeeGFS 7 filesystems only).
//! - `beegfs --mgmtd-addr=HOST:PORT [--auth-file=F|--auth-disable] [--tls-cert-file=F|
//!   --tls-disable] [--mount=none] entry info|entry create directory|entry set|node list|quota
//!   set-limits|quota list-usage|version` (BeeGFS 8 filesystems only; `--output json` supported).
//!
//! # Faults
//! `faults.json` holds a list of rules, read on every invocation; see [`faults`] for the format
//! (`fail` with exit code and message, `hang`, `delay_ms`, `auth_failure`, optional `times`).
//!
//! # Behaviour of the real tools that backends must get right
//! - `lfs setquota` reads block limits in KiB unless suffixed (`k`, `M`, `G`, `T`, `P`, `E`;
//!   `b` for bytes): `-B 1073741824` means 1 TiB. `lfs project -s DIR` also sets the project of
//!   the directory's entries (not recursively without `-r`) and fails on symlinks among them.
//!   `lfs project DIR` lists the entries, `-d` the directory itself (`%5u %c %s`).
//! - `lfs quota` prints a mount point longer than 15 characters alone on its line.
//! - `beegfs-ctl` takes values only after `=`: the quota id is a separate argument
//!   (`--getquota --gid 1000`; `--gid=1000` leaves the id unspecified and fails with "No ID
//!   specified."), and a mode's path is the first remaining argument in sorted order. The CSV of
//!   `--getquota --csv` starts with the header `name,id,size,hard,files,hard`. `--setquota`
//!   needs both `--sizelimit` and `--inodelimit`. A configuration without `connAuthFile` and
//!   without `connDisableAuthentication = true` fails ("No connAuthFile configured", exit 3).
//! - `beegfs quota set-limits` takes the pool as its positional argument
//!   (`storage_pool_default`, `1`); sizes are SI (`10G` = 10^10) or IEC (`10GiB`);
//!   `entry set --chunk-size` wants IEC (`512Ki`, not `512k`), at least 64 KiB, a power of two.
//!   Without `--auth-disable` the tool reads `--auth-file` (default `/etc/beegfs/conn.auth`);
//!   without `--tls-disable` it needs `--tls-cert-file` (default `/etc/beegfs/cert.pem`)
//!   matching a filesystem created with `--tls-cert-file`.
//! - `dtar` resolves the archive and sources relative to `-C DIR`.
//!
//! # Limitations
//! - Project ids are real (`FS_IOC_FSSETXATTR`) only when the state root is on a filesystem that
//!   supports them (XFS); elsewhere they are recorded by path and inode ([`projects`]).
//! - Quotas are reported, never enforced (writes beyond a limit succeed).
//! - `dtar` archives hard links as links (the real tool stores copies).
//!
//! # Modules
//! - [`state`]: the state root, filesystems, locks, mount records, path resolution.
//! - [`tools`]: one module per simulated tool, plus dispatch, faults and the call log.
//! - [`faults`], [`projects`], [`usage`], [`sizes`], [`clientconf`]: shared machinery.
//! - [`serve`]: the `serve` command, and [`serve::cleanup`] (unmounting below a directory).

pub mod clientconf;
pub mod error;
pub mod faults;
pub mod mount_table;
pub mod projects;
pub mod serve;
pub mod sizes;
pub mod state;
pub mod tools;
pub mod usage;

pub use error::{Result, SimError};
pub use tools::Tool;

use std::io::Write;

/// The text of an I/O error without Rust's `(os error N)` suffix, as `strerror` gives it.
pub fn errno_text(error: &std::io::Error) -> String {
    match error.raw_os_error() {
        Some(code) => nix::errno::Errno::from_raw(code).desc().to_string(),
        None => error.to_string(),
    }
}

/// Runs a tool as a process would: state root from `PFS_SIM_ROOT`, the process's standard
/// streams. Returns the exit code.
pub fn invoke(tool: Tool, args: &[String]) -> i32 {
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let mut out = stdout.lock();
    let mut err = stderr.lock();
    let code = match state::StateRoot::from_env() {
        Ok(root) => {
            let mut io = tools::ToolIo {
                out: &mut out,
                err: &mut err,
            };
            tools::run(tool, args, &root, &mut io)
        }
        Err(e) => {
            let _ = writeln!(err, "{}: {e}", tool.name());
            1
        }
    };
    let _ = out.flush();
    let _ = err.flush();
    code
}
