//! `mount -t lustre` and `mount -t beegfs`: real bind mounts of a simulated filesystem's data.
//!
//! Everything else (`--bind`, other types, `-o remount`) is refused: the driver makes its bind
//! mounts with system calls, and the simulator does not stand in for the system's `mount`.

use super::ToolIo;
use super::getopt::{Opt, OptSpec, getopt};
use crate::clientconf::{ClientAuth, ClientConf};
use crate::state::{FsKind, MountRecord, StateRoot, normalize_fs_path};
use nix::mount::MsFlags;
use std::path::{Path, PathBuf};

const SPEC: OptSpec<'static> = OptSpec {
    short_with_value: "tTo",
    short_flags: "rwvnfsiBRMa",
    long_with_value: &["types", "options"],
    long_flags: &[
        "read-only",
        "read-write",
        "verbose",
        "no-mtab",
        "bind",
        "rbind",
        "move",
        "all",
        "fake",
    ],
};

/// The exit code of `mount(8)` for a mount failure.
const MOUNT_FAILURE: i32 = 32;

/// A parsed Lustre mount source `NID[,NID][:NID...]:/fsname[/subdir]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LustreSource {
    /// Every NID named (failover groups flattened).
    pub nids: Vec<String>,
    /// The filesystem name.
    pub fsname: String,
    /// The subdirectory (`""` for the root).
    pub subdir: String,
}

/// Parses a Lustre mount source; `None` when it is not of the form `NIDS:/fsname[/subdir]`.
pub fn parse_lustre_source(source: &str) -> Option<LustreSource> {
    let (nid_part, path_part) = source.split_once(":/")?;
    let nids: Vec<String> = nid_part.split([':', ',']).map(str::to_string).collect();
    if nids.iter().any(|n| n.is_empty() || !n.contains('@')) {
        return None;
    }
    let (fsname, subdir) = match path_part.split_once('/') {
        Some((f, s)) => (f, s),
        None => (path_part, ""),
    };
    if fsname.is_empty()
        || fsname.len() > 8
        || !fsname
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return None;
    }
    let subdir = normalize_fs_path(subdir)?;
    Some(LustreSource {
        nids,
        fsname: fsname.to_string(),
        subdir,
    })
}

/// The VFS flags among mount options (`ro`, `nosuid`, ...); other options are left to the
/// filesystem. `Err` names an option that asks `mount` for another operation (`remount`, `bind`).
pub fn vfs_flags(options: &[String]) -> Result<MsFlags, String> {
    let mut flags = MsFlags::empty();
    for option in options {
        match option.as_str() {
            "ro" => flags |= MsFlags::MS_RDONLY,
            "rw" => flags &= !MsFlags::MS_RDONLY,
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "suid" => flags &= !MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "dev" => flags &= !MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "exec" => flags &= !MsFlags::MS_NOEXEC,
            "noatime" => flags |= MsFlags::MS_NOATIME,
            "nodiratime" => flags |= MsFlags::MS_NODIRATIME,
            "relatime" => flags |= MsFlags::MS_RELATIME,
            "strictatime" => flags |= MsFlags::MS_STRICTATIME,
            "remount" | "bind" | "rbind" | "move" | "make-shared" | "make-private"
            | "make-slave" => {
                return Err(option.clone());
            }
            _ => {}
        }
    }
    Ok(flags)
}

/// Splits `-o` values into options at commas outside double quotes (as libmount does, so
/// `context="system_u:object_r:container_file_t:s0:c1,c2"` stays one option); empty entries are
/// dropped.
pub fn split_options(values: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for value in values {
        let mut current = String::new();
        let mut quoted = false;
        for c in value.chars() {
            match c {
                '"' => {
                    quoted = !quoted;
                    current.push(c);
                }
                ',' if !quoted => {
                    if !current.is_empty() {
                        out.push(std::mem::take(&mut current));
                    }
                }
                _ => current.push(c),
            }
        }
        if !current.is_empty() {
            out.push(current);
        }
    }
    out
}

struct Request {
    fstype: Option<String>,
    options: Vec<String>,
    operands: Vec<String>,
    refused: Option<String>,
}

fn parse(args: &[String]) -> Result<Request, String> {
    let mut req = Request {
        fstype: None,
        options: Vec::new(),
        operands: Vec::new(),
        refused: None,
    };
    let mut raw_options = Vec::new();
    for opt in getopt(args, SPEC)? {
        match opt {
            Opt::Short('t', Some(v)) => req.fstype = Some(v),
            Opt::Long(n, Some(v)) if n == "types" => req.fstype = Some(v),
            Opt::Short('o', Some(v)) => raw_options.push(v),
            Opt::Long(n, Some(v)) if n == "options" => raw_options.push(v),
            Opt::Short('r', None) => raw_options.push("ro".into()),
            Opt::Long(n, None) if n == "read-only" => raw_options.push("ro".into()),
            Opt::Short('w', None) => raw_options.push("rw".into()),
            Opt::Long(n, None) if n == "read-write" => raw_options.push("rw".into()),
            Opt::Short(c @ ('B' | 'R' | 'M' | 'a' | 'T'), _) => req.refused = Some(format!("-{c}")),
            Opt::Long(n, _) if matches!(n.as_str(), "bind" | "rbind" | "move" | "all") => {
                req.refused = Some(format!("--{n}"))
            }
            Opt::Positional(p) => req.operands.push(p),
            _ => {}
        }
    }
    req.options = split_options(&raw_options);
    Ok(req)
}

/// Runs `mount`.
pub fn run(args: &[String], root: &StateRoot, io: &mut ToolIo<'_>) -> i32 {
    let req = match parse(args) {
        Ok(req) => req,
        Err(msg) => {
            io.err(&format!(
                "mount: {msg}\nTry 'mount --help' for more information.\n"
            ));
            return 1;
        }
    };
    if let Some(what) = &req.refused {
        io.err(&format!(
            "mount: {what} is not simulated: only -t lustre and -t beegfs mounts are (the driver makes bind mounts itself)\n"
        ));
        return MOUNT_FAILURE;
    }
    if let Err(option) = vfs_flags(&req.options) {
        io.err(&format!(
            "mount: option '{option}' is not simulated: only new lustre and beegfs mounts are\n"
        ));
        return MOUNT_FAILURE;
    }
    let [source, target] = req.operands.as_slice() else {
        io.err("mount: bad usage\nTry 'mount --help' for more information.\n");
        return 1;
    };
    match req.fstype.as_deref() {
        Some("lustre") => mount_lustre(source, target, &req.options, root, io),
        Some("beegfs") => mount_beegfs(source, target, &req.options, root, io),
        other => {
            io.err(&format!(
                "mount: type {} is not simulated: only lustre and beegfs are\n",
                other.unwrap_or("(none given)")
            ));
            MOUNT_FAILURE
        }
    }
}

fn check_target(target: &str, io: &mut ToolIo<'_>) -> Option<PathBuf> {
    match std::fs::canonicalize(target) {
        Ok(path) if path.is_dir() => Some(path),
        Ok(_) => {
            io.err(&format!(
                "mount: {target}: mount point is not a directory.\n"
            ));
            None
        }
        Err(_) => {
            io.err(&format!("mount: {target}: mount point does not exist.\n"));
            None
        }
    }
}

fn lustre_failure(
    source: &str,
    target: &str,
    errno: nix::errno::Errno,
    io: &mut ToolIo<'_>,
) -> i32 {
    io.err(&format!(
        "mount.lustre: mount {source} at {target} failed: {}\n",
        errno.desc()
    ));
    match errno {
        nix::errno::Errno::ENOENT => io.err(
            "Is the MGS specification correct?\nIs the filesystem name correct?\nIf upgrading, is the copied client log valid? (see upgrade docs)\n",
        ),
        nix::errno::Errno::EIO => io.err("Is the MGS running?\n"),
        _ => {}
    }
    errno as i32
}

fn mount_lustre(
    source: &str,
    target: &str,
    options: &[String],
    root: &StateRoot,
    io: &mut ToolIo<'_>,
) -> i32 {
    use nix::errno::Errno;
    let Some(target_path) = check_target(target, io) else {
        return MOUNT_FAILURE;
    };
    let Some(parsed) = parse_lustre_source(source) else {
        return lustre_failure(source, target, Errno::EINVAL, io);
    };
    let fs = match root.open_fs(FsKind::Lustre, &parsed.fsname) {
        Ok(Some(fs)) => fs,
        Ok(None) => return lustre_failure(source, target, Errno::ENOENT, io),
        Err(e) => {
            io.err(&format!("mount.lustre: simulator state: {e}\n"));
            return Errno::EIO as i32;
        }
    };
    if !fs.record.nids.is_empty() && !parsed.nids.iter().any(|n| fs.record.nids.contains(n)) {
        return lustre_failure(source, target, Errno::EIO, io);
    }
    // A subdirectory (fileset) is looked up in the filesystem's own namespace: a symbolic
    // link on the way can never lead a real client to a directory of the host.
    let dir = match (
        std::fs::canonicalize(fs.data_path(&parsed.subdir)),
        std::fs::canonicalize(fs.data_dir()),
    ) {
        (Ok(dir), Ok(data)) if dir.starts_with(&data) && dir.is_dir() => dir,
        _ => return lustre_failure(source, target, Errno::ENOENT, io),
    };
    if let Err(errno) = bind(&dir, &target_path, options) {
        return lustre_failure(source, target, errno, io);
    }
    let record = MountRecord {
        target: target_path,
        source: source.to_string(),
        subdir: parsed.subdir,
        options: options.to_vec(),
        fstype: "lustre".into(),
    };
    if let Err(e) = fs.record_mount(record) {
        io.err(&format!("mount.lustre: simulator state: {e}\n"));
    }
    0
}

/// Bind-mounts `dir` on `target`, then applies the VFS flags with a bind remount.
fn bind(dir: &Path, target: &Path, options: &[String]) -> Result<(), nix::errno::Errno> {
    let flags = vfs_flags(options).map_err(|_| nix::errno::Errno::EINVAL)?;
    nix::mount::mount(
        Some(dir),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )?;
    if !flags.is_empty()
        && let Err(errno) = nix::mount::mount(
            None::<&str>,
            target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags,
            None::<&str>,
        )
    {
        let _ = nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH);
        return Err(errno);
    }
    Ok(())
}

fn beegfs_failure(
    source: &str,
    target: &str,
    root: &StateRoot,
    kernel_message: &str,
    io: &mut ToolIo<'_>,
) -> i32 {
    super::kernel_log(root, &format!("beegfs: {kernel_message}"));
    io.err(&format!(
        "mount: {target}: wrong fs type, bad option, bad superblock on {source}, missing codepage or helper program, or other error.\n       dmesg(1) may have more information after failed mount system call.\n"
    ));
    MOUNT_FAILURE
}

fn mount_beegfs(
    source: &str,
    target: &str,
    options: &[String],
    root: &StateRoot,
    io: &mut ToolIo<'_>,
) -> i32 {
    let Some(target_path) = check_target(target, io) else {
        return MOUNT_FAILURE;
    };
    let cfg_file = options
        .iter()
        .find_map(|o| o.strip_prefix("cfgFile="))
        .unwrap_or("/etc/beegfs/beegfs-client.conf");
    let conf = match ClientConf::load(Path::new(cfg_file)) {
        Ok(conf) => conf,
        Err(e) => {
            return beegfs_failure(
                source,
                target,
                root,
                &format!(
                    "Failed to load config file: {cfg_file} ({})",
                    crate::errno_text(&e)
                ),
                io,
            );
        }
    };
    let auth = match conf.client_auth() {
        Ok(auth) => auth,
        Err(problem) => return beegfs_failure(source, target, root, &problem.message(), io),
    };
    let host = conf.mgmtd_host().unwrap_or_default();
    let fs = match root.open_fs(FsKind::Beegfs, host) {
        Ok(Some(fs)) => fs,
        _ => {
            return beegfs_failure(
                source,
                target,
                root,
                &format!("Unable to reach management node: {host}"),
                io,
            );
        }
    };
    let secret = match fs.secret() {
        Ok(secret) => secret,
        Err(e) => return beegfs_failure(source, target, root, &e.to_string(), io),
    };
    if let Some(secret) = secret
        && auth != ClientAuth::Secret(secret)
    {
        return beegfs_failure(
            source,
            target,
            root,
            &format!(
                "Communication with management node {host} failed: connection authentication refused"
            ),
            io,
        );
    }
    let fs_options: Vec<String> = options.to_vec();
    if let Err(errno) = bind(&fs.data_dir(), &target_path, &fs_options) {
        return beegfs_failure(
            source,
            target,
            root,
            &format!("mount failed: {}", errno.desc()),
            io,
        );
    }
    let record = MountRecord {
        target: target_path,
        source: source.to_string(),
        subdir: String::new(),
        options: fs_options,
        fstype: "beegfs".into(),
    };
    if let Err(e) = fs.record_mount(record) {
        io.err(&format!("mount: simulator state: {e}\n"));
    }
    0
}

/// The output of a mount refused for its credentials.
pub fn auth_failure(args: &[String], io: &mut ToolIo<'_>) -> i32 {
    let req = parse(args).ok();
    let operands = req.as_ref().map(|r| r.operands.clone()).unwrap_or_default();
    let source = operands.first().map(String::as_str).unwrap_or("");
    let target = operands.get(1).map(String::as_str).unwrap_or("");
    if req.and_then(|r| r.fstype).as_deref() == Some("beegfs") {
        io.err(&format!(
            "mount: {target}: wrong fs type, bad option, bad superblock on {source}, missing codepage or helper program, or other error.\n       dmesg(1) may have more information after failed mount system call.\n"
        ));
        MOUNT_FAILURE
    } else {
        lustre_failure(source, target, nix::errno::Errno::EACCES, io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn lustre_sources() {
        assert_eq!(
            parse_lustre_source("192.168.88.114@tcp2:192.168.98.114@tcp2:/testfs"),
            Some(LustreSource {
                nids: vec!["192.168.88.114@tcp2".into(), "192.168.98.114@tcp2".into()],
                fsname: "testfs".into(),
                subdir: String::new(),
            })
        );
        assert_eq!(
            parse_lustre_source("10.0.0.1@tcp,10.0.0.2@o2ib:/fs/a/b/")
                .unwrap()
                .subdir,
            "a/b"
        );
        assert_eq!(parse_lustre_source("10.0.0.1@tcp:/"), None);
        assert_eq!(parse_lustre_source("10.0.0.1:/fs"), None);
        assert_eq!(parse_lustre_source("10.0.0.1@tcp:/fs/../x"), None);
        assert_eq!(parse_lustre_source("10.0.0.1@tcp:/waytoolongname"), None);
        assert_eq!(parse_lustre_source("/dev/sda"), None);
    }

    #[test]
    fn option_flags_and_refusals() {
        let opts = split_options(&["ro,nosuid".into(), "flock,,cfgFile=/x".into()]);
        assert_eq!(opts, vec!["ro", "nosuid", "flock", "cfgFile=/x"]);
        assert_eq!(
            vfs_flags(&opts),
            Ok(MsFlags::MS_RDONLY | MsFlags::MS_NOSUID)
        );
        assert_eq!(vfs_flags(&["ro".into(), "rw".into()]), Ok(MsFlags::empty()));
        assert_eq!(vfs_flags(&["remount".into()]), Err("remount".into()));
        let selinux = split_options(&[
            "nosuid,context=\"system_u:object_r:container_file_t:s0:c1,c2\",ro".into(),
        ]);
        assert_eq!(
            selinux,
            vec![
                "nosuid",
                "context=\"system_u:object_r:container_file_t:s0:c1,c2\"",
                "ro"
            ]
        );
    }

    #[test]
    fn argument_forms() {
        let args: Vec<String> = [
            "-t",
            "lustre",
            "10.0.0.1@tcp:/fs",
            "/mnt",
            "-o",
            "ro",
            "-o",
            "flock",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let req = parse(&args).unwrap();
        assert_eq!(req.fstype.as_deref(), Some("lustre"));
        assert_eq!(req.options, vec!["ro", "flock"]);
        assert_eq!(req.operands, vec!["10.0.0.1@tcp:/fs", "/mnt"]);
        let bind: Vec<String> = ["--bind", "/a", "/b"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(parse(&bind).unwrap().refused.as_deref(), Some("--bind"));
    }

    proptest! {
        #[test]
        fn well_formed_sources_parse_back(
            nids in prop::collection::vec("[0-9]{1,3}\\.[0-9]{1,3}@(tcp|o2ib)[0-9]?", 1..4),
            fsname in "[a-z][a-z0-9]{0,7}",
            subdir in prop::collection::vec("[a-z0-9_]{1,6}", 0..3),
        ) {
            let source = format!("{}:/{}{}{}", nids.join(":"), fsname, if subdir.is_empty() { "" } else { "/" }, subdir.join("/"));
            let parsed = parse_lustre_source(&source).unwrap();
            prop_assert_eq!(parsed.nids, nids);
            prop_assert_eq!(parsed.fsname, fsname);
            prop_assert_eq!(parsed.subdir, subdir.join("/"));
        }

        #[test]
        fn options_without_quotes_split_at_every_comma(options in prop::collection::vec("[a-z0-9=_]{1,8}", 1..6)) {
            prop_assert_eq!(split_options(&[options.join(",")]), options);
        }

        #[test]
        fn parsing_never_panics(source in ".{0,40}", options in prop::collection::vec(".{0,12}", 0..4)) {
            let _ = parse_lustre_source(&source);
            let _ = vfs_flags(&split_options(&options));
        }
    }
}
