//! Lustre `lfs`: `project`, `setquota -p`, `quota -p` and `getname`.

use super::ToolIo;
use super::getopt::{Opt, OptSpec, getopt};
use crate::projects::{self, ProjectBackend, ProjectState};
use crate::sizes::{lfs_kbytes, parse_lfs_size};
use crate::state::{Filesystem, FsKind, StateRoot};
use crate::usage::{self, Usage};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// `lfs` usage errors (`CMD_HELP`).
const USAGE_EXIT: i32 = 1;

/// Project quota limits of one id; blocks in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectLimits {
    /// Block soft limit (KiB, 0: none).
    pub bsoft: u64,
    /// Block hard limit (KiB, 0: none).
    pub bhard: u64,
    /// Inode soft limit (0: none).
    pub isoft: u64,
    /// Inode hard limit (0: none).
    pub ihard: u64,
}

/// `meta/quota.json` of a Lustre filesystem.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LustreQuotas {
    /// Limits per project id.
    #[serde(default)]
    pub projects: BTreeMap<u32, ProjectLimits>,
}

const QUOTA_FILE: &str = "quota.json";

/// Runs `lfs`.
pub fn run(args: &[String], root: &StateRoot, io: &mut ToolIo<'_>) -> i32 {
    let Some(command) = args.first() else {
        io.err("lfs: a command is required (project, setquota, quota, getname)\n");
        return USAGE_EXIT;
    };
    let rest = &args[1..];
    match command.as_str() {
        "project" => project(rest, root, io),
        "setquota" => setquota(rest, root, io),
        "quota" => quota(rest, root, io),
        "getname" => getname(rest, root, io),
        other => {
            io.err(&format!(
                "lfs: '{other}' is not simulated (project, setquota, quota, getname are)\n"
            ));
            USAGE_EXIT
        }
    }
}

/// Where a path's project lives.
enum Target {
    /// In a simulated filesystem whose projects are recorded.
    Recorded(Filesystem, String),
    /// In the inode itself.
    Kernel(PathBuf),
}

impl Target {
    fn resolve(root: &StateRoot, path: &Path) -> Target {
        match root.locate(FsKind::Lustre, path, true) {
            Ok(Some(l)) if l.fs.record.project_backend == ProjectBackend::Recorded => {
                Target::Recorded(l.fs, l.rel)
            }
            _ => Target::Kernel(path.to_path_buf()),
        }
    }

    fn child(&self, name: &str, path: &Path) -> Target {
        match self {
            Target::Recorded(fs, rel) => Target::Recorded(
                fs.clone(),
                if rel.is_empty() {
                    name.to_string()
                } else {
                    format!("{rel}/{name}")
                },
            ),
            Target::Kernel(_) => Target::Kernel(path.to_path_buf()),
        }
    }

    fn get(&self) -> std::io::Result<ProjectState> {
        match self {
            Target::Recorded(fs, rel) => projects::get(fs, rel),
            Target::Kernel(path) => projects::kernel_get(path),
        }
    }

    fn set(&self, state: ProjectState) -> std::io::Result<()> {
        match self {
            Target::Recorded(fs, rel) => projects::set(fs, rel, state),
            Target::Kernel(path) => projects::kernel_set(path, state),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProjectOp {
    List,
    Check,
    Clear,
    Set,
}

#[derive(Debug, Clone)]
struct ProjectArgs {
    op: ProjectOp,
    projid: Option<u32>,
    set_inherit: bool,
    dironly: bool,
    recursive: bool,
    keep: bool,
    newline: bool,
    paths: Vec<String>,
}

fn parse_project(args: &[String]) -> Result<ProjectArgs, String> {
    let spec = OptSpec {
        short_with_value: "p",
        short_flags: "0cCdkrs",
        long_with_value: &[],
        long_flags: &[],
    };
    let mut parsed = ProjectArgs {
        op: ProjectOp::List,
        projid: None,
        set_inherit: false,
        dironly: false,
        recursive: false,
        keep: false,
        newline: true,
        paths: Vec::new(),
    };
    for opt in getopt(args, spec)? {
        match opt {
            Opt::Short('0', None) => parsed.newline = false,
            Opt::Short('c', None) => {
                if parsed.op != ProjectOp::List {
                    return Err("cannot specify '-c' '-C' '-s' together".into());
                }
                parsed.op = ProjectOp::Check;
            }
            Opt::Short('C', None) => {
                if parsed.op != ProjectOp::List {
                    return Err("cannot specify '-c' '-C' '-s' together".into());
                }
                parsed.op = ProjectOp::Clear;
            }
            Opt::Short('s', None) => {
                if parsed.op != ProjectOp::List {
                    return Err("cannot specify '-c' '-C' '-s' together".into());
                }
                parsed.op = ProjectOp::Set;
                parsed.set_inherit = true;
            }
            Opt::Short('d', None) => parsed.dironly = true,
            Opt::Short('k', None) => parsed.keep = true,
            Opt::Short('r', None) => parsed.recursive = true,
            Opt::Short('p', Some(v)) => {
                parsed.projid = Some(
                    v.parse::<u32>()
                        .map_err(|_| format!("invalid project ID '{v}'"))?,
                );
            }
            Opt::Positional(p) => parsed.paths.push(p),
            _ => {}
        }
    }
    if parsed.op == ProjectOp::List && parsed.projid.is_some() {
        parsed.op = ProjectOp::Set;
    }
    match parsed.op {
        ProjectOp::Check if parsed.keep => return Err("'-k' is useless together with '-c'".into()),
        ProjectOp::Clear if !parsed.newline => {
            return Err("'-0' is useless together with '-C'".into());
        }
        ProjectOp::Clear if parsed.projid.is_some() => {
            return Err("'-p' is useless together with '-C'".into());
        }
        ProjectOp::Set if !parsed.newline => {
            return Err("'-0' is useless together with '-s'".into());
        }
        ProjectOp::Set if parsed.keep => return Err("'-k' is useless together with '-s'".into()),
        ProjectOp::List if !parsed.newline => {
            return Err("'-0' is useless for list operations".into());
        }
        _ => {}
    }
    if parsed.paths.is_empty() {
        return Err("missing file or directory target(s)".into());
    }
    Ok(parsed)
}

fn mode_type(meta: &std::fs::Metadata) -> &'static str {
    let ft = meta.file_type();
    if ft.is_dir() {
        "dir"
    } else if ft.is_file() {
        "regular"
    } else if ft.is_symlink() {
        "symlink"
    } else {
        "special file"
    }
}

/// The `project_get_xattr` checks: only regular files and directories.
fn project_state(
    path: &str,
    target: &Target,
    io: &mut ToolIo<'_>,
) -> Result<(ProjectState, bool), i32> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) => {
            io.err(&format!(
                "lfs: failed to stat '{path}': {}\n",
                crate::errno_text(&e)
            ));
            return Err(1);
        }
    };
    if !meta.is_file() && !meta.is_dir() {
        io.err(&format!(
            "lfs: unable to get xattr for {} '{path}': Operation not supported\n",
            mode_type(&meta)
        ));
        return Err(1);
    }
    target
        .get()
        .map(|state| (state, meta.is_dir()))
        .map_err(|e| {
            io.err(&format!(
                "lfs: failed to get xattr for '{path}': {}\n",
                crate::errno_text(&e)
            ));
            1
        })
}

fn project_one(
    path: &str,
    target: &Target,
    args: &ProjectArgs,
    tree_id: u32,
    io: &mut ToolIo<'_>,
) -> i32 {
    let (state, is_dir) = match project_state(path, target, io) {
        Ok(found) => found,
        Err(code) => return code,
    };
    match args.op {
        ProjectOp::List => {
            io.out(&format!(
                "{:>5} {} {path}\n",
                state.id,
                if state.inherit { 'P' } else { '-' }
            ));
            0
        }
        ProjectOp::Check => {
            if !state.inherit {
                if args.newline {
                    io.out(&format!("{path} - project inheritance flag is not set\n"));
                } else {
                    io.out(&format!("{path}\0"));
                }
            }
            if state.id != tree_id {
                if args.newline {
                    io.out(&format!(
                        "{path} - project identifier is not set (inode={}, tree={tree_id})\n",
                        state.id
                    ));
                } else {
                    io.out(&format!("{path}\0"));
                }
            }
            0
        }
        ProjectOp::Set | ProjectOp::Clear => {
            let wanted = if args.op == ProjectOp::Set {
                ProjectState {
                    id: args.projid.unwrap_or(state.id),
                    // As on XFS, the inherit flag only sticks to directories.
                    inherit: (state.inherit || args.set_inherit) && is_dir,
                }
            } else {
                ProjectState {
                    id: if args.keep { state.id } else { 0 },
                    inherit: false,
                }
            };
            if wanted == state {
                return 0;
            }
            match target.set(wanted) {
                Ok(()) => 0,
                Err(e) => {
                    io.err(&format!(
                        "lfs: failed to set xattr for '{path}': {}\n",
                        crate::errno_text(&e)
                    ));
                    1
                }
            }
        }
    }
}

fn project(args: &[String], root: &StateRoot, io: &mut ToolIo<'_>) -> i32 {
    let parsed = match parse_project(args) {
        Ok(parsed) => parsed,
        Err(msg) => {
            io.err(&format!("lfs project: {msg}\n"));
            return USAGE_EXIT;
        }
    };
    let mut code = 0;
    for path in &parsed.paths {
        let rc = project_tree(path, root, &parsed, io);
        if code == 0 {
            code = rc;
        }
    }
    code
}

/// `lfs_project_iterate`: the path itself (not for a plain list of a directory), then the
/// entries of the directory, recursively with `-r`.
fn project_tree(path: &str, root: &StateRoot, args: &ProjectArgs, io: &mut ToolIo<'_>) -> i32 {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) => {
            io.err(&format!(
                "lfs: failed to stat '{path}': {}\n",
                crate::errno_text(&e)
            ));
            return 1;
        }
    };
    let target = Target::resolve(root, Path::new(path));
    let tree_id = match (args.op, args.projid) {
        (ProjectOp::Check, None) => target.get().map(|s| s.id).unwrap_or(0),
        (_, id) => id.unwrap_or(0),
    };
    let mut code = 0;
    if !meta.is_dir() || args.dironly || args.op != ProjectOp::List {
        code = project_one(path, &target, args, tree_id, io);
    }
    if !meta.is_dir() || args.dironly || code != 0 {
        return code;
    }
    let mut queue = vec![(path.trim_end_matches('/').to_string(), target)];
    if queue[0].0.is_empty() {
        queue[0].0 = "/".into();
    }
    while let Some((dir, dir_target)) = queue.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) => {
                io.err(&format!(
                    "lfs: failed to opendir '{dir}': {}\n",
                    crate::errno_text(&e)
                ));
                if code == 0 {
                    code = 1;
                }
                continue;
            }
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        for name in names {
            let child_path = if dir.ends_with('/') {
                format!("{dir}{name}")
            } else {
                format!("{dir}/{name}")
            };
            let child_target = dir_target.child(&name, Path::new(&child_path));
            let rc = project_one(&child_path, &child_target, args, tree_id, io);
            if rc != 0 && code == 0 {
                code = rc;
            }
            let is_dir = std::fs::symlink_metadata(&child_path)
                .map(|m| m.is_dir())
                .unwrap_or(false);
            if args.recursive && is_dir {
                queue.push((child_path, child_target));
            }
        }
    }
    code
}

/// `lfs getname PATH...`: `FSNAME-INSTANCE PATH` for each path on a simulated Lustre mount
/// (the instance: the filesystem directory's inode, in hex, where the real one is the
/// client's superblock address); the first path on anything else stops it with
/// ``cannot get name for `PATH': ...`` and the real tool's status (-ENOTTY).
fn getname(args: &[String], root: &StateRoot, io: &mut ToolIo<'_>) -> i32 {
    if args.is_empty() || args.iter().any(|a| a.starts_with('-')) {
        io.err("usage: getname PATH... (listing every mount without a path is not simulated)\n");
        return USAGE_EXIT;
    }
    for path in args {
        let located = root
            .locate(FsKind::Lustre, Path::new(path), false)
            .map_err(|e| crate::errno_text(&e));
        let fs = match located {
            Ok(Some(l)) => l.fs,
            Ok(None) => {
                io.err(&format!(
                    "cannot get name for `{path}': Inappropriate ioctl for device\n"
                ));
                return 256 - libc::ENOTTY;
            }
            Err(text) => {
                io.err(&format!("cannot get name for `{path}': {text}\n"));
                return 256 - libc::ENOENT;
            }
        };
        let instance = std::fs::metadata(&fs.dir).map_or(0, |m| {
            use std::os::unix::fs::MetadataExt;
            m.ino()
        });
        io.out(&format!("{}-ffff{instance:012x} {path}\n", fs.record.name));
    }
    0
}

fn not_lustre(cmd: &str, path: &str, io: &mut ToolIo<'_>) -> i32 {
    io.err(&format!(
        "lfs {cmd}: '{path}' is not on a Lustre filesystem: Inappropriate ioctl for device\n"
    ));
    1
}

/// Finds the simulated Lustre filesystem mounted at (or above) `path`.
fn lustre_mount(
    root: &StateRoot,
    cmd: &str,
    path: &str,
    io: &mut ToolIo<'_>,
) -> Result<Filesystem, i32> {
    match root.locate(FsKind::Lustre, Path::new(path), false) {
        Ok(Some(l)) => Ok(l.fs),
        Ok(None) => Err(not_lustre(cmd, path, io)),
        Err(e) => {
            io.err(&format!(
                "lfs {cmd}: cannot open '{path}': {}\n",
                crate::errno_text(&e)
            ));
            Err(1)
        }
    }
}

#[derive(Debug, Default, PartialEq, Eq)]
struct SetquotaArgs {
    projid: Option<u32>,
    bsoft: Option<u64>,
    bhard: Option<u64>,
    isoft: Option<u64>,
    ihard: Option<u64>,
    mount: Option<String>,
    warnings: Vec<String>,
}

fn parse_setquota(args: &[String]) -> Result<SetquotaArgs, String> {
    let spec = OptSpec {
        short_with_value: "bBiIpugP",
        short_flags: "dD",
        long_with_value: &[
            "block-softlimit",
            "block-hardlimit",
            "inode-softlimit",
            "inode-hardlimit",
            "projid",
            "user",
            "group",
            "pool",
        ],
        long_flags: &["default"],
    };
    let mut out = SetquotaArgs::default();
    let mut operands = Vec::new();
    for opt in getopt(args, spec)? {
        let (key, value) = match opt {
            Opt::Short(c, v) => (c.to_string(), v),
            Opt::Long(n, v) => (n, v),
            Opt::Positional(p) => {
                operands.push(p);
                continue;
            }
        };
        let value = value.unwrap_or_default();
        let block = |v: &str| -> Result<u64, String> {
            parse_lfs_size(v, 1024)
                .map(|bytes| bytes >> 10)
                .ok_or_else(|| format!("invalid limit '{v}'"))
        };
        let inode = |v: &str| parse_lfs_size(v, 1).ok_or_else(|| format!("invalid limit '{v}'"));
        match key.as_str() {
            "b" | "block-softlimit" => out.bsoft = Some(block(&value)?),
            "B" | "block-hardlimit" => out.bhard = Some(block(&value)?),
            "i" | "inode-softlimit" => out.isoft = Some(inode(&value)?),
            "I" | "inode-hardlimit" => out.ihard = Some(inode(&value)?),
            "p" | "projid" => {
                out.projid = Some(
                    value
                        .parse()
                        .map_err(|_| format!("invalid project ID '{value}'"))?,
                )
            }
            "u" | "user" | "g" | "group" | "P" | "d" | "D" | "default" | "pool" => {
                return Err(format!(
                    "option '{key}' is not simulated: only project quotas (-p) are"
                ));
            }
            _ => {}
        }
    }
    for (name, value) in [
        ("block softlimit", out.bsoft),
        ("block hardlimit", out.bhard),
    ] {
        if let Some(v) = value
            && v > 0
            && v <= 1024
        {
            out.warnings.push(format!(
                "lfs setquota: warning: {name} '{v}' smaller than minimum qunit size\nSee 'lfs help setquota' or Lustre manual for details\n"
            ));
        }
    }
    if out.projid.is_none() {
        return Err("one of -u, -g or -p must be specified".into());
    }
    if out.bsoft.is_none() && out.bhard.is_none() && out.isoft.is_none() && out.ihard.is_none() {
        return Err("at least one limit must be specified".into());
    }
    match operands.as_slice() {
        [mount] => out.mount = Some(mount.clone()),
        [] => return Err("missing mount point".into()),
        _ => return Err("too many arguments".into()),
    }
    Ok(out)
}

fn setquota(args: &[String], root: &StateRoot, io: &mut ToolIo<'_>) -> i32 {
    let parsed = match parse_setquota(args) {
        Ok(parsed) => parsed,
        Err(msg) => {
            io.err(&format!("lfs setquota: {msg}\n"));
            return USAGE_EXIT;
        }
    };
    for w in &parsed.warnings {
        io.err(w);
    }
    let mount = parsed.mount.clone().unwrap_or_default();
    let fs = match lustre_mount(root, "setquota", &mount, io) {
        Ok(fs) => fs,
        Err(code) => return code,
    };
    let id = parsed.projid.unwrap_or(0);
    let result = (|| -> crate::error::Result<()> {
        let _lock = fs.lock()?;
        let mut quotas: LustreQuotas = fs.read_meta(QUOTA_FILE)?;
        let limits = quotas.projects.entry(id).or_default();
        if let Some(v) = parsed.bsoft {
            limits.bsoft = v;
        }
        if let Some(v) = parsed.bhard {
            limits.bhard = v;
        }
        if let Some(v) = parsed.isoft {
            limits.isoft = v;
        }
        if let Some(v) = parsed.ihard {
            limits.ihard = v;
        }
        fs.write_meta(QUOTA_FILE, &quotas)
    })();
    match result {
        Ok(()) => 0,
        Err(e) => {
            io.err(&format!("lfs setquota: quotactl failed: {e}\n"));
            1
        }
    }
}

/// The limits of a project id on a filesystem (zero when none are set).
pub fn project_limits(fs: &Filesystem, id: u32) -> crate::error::Result<ProjectLimits> {
    let quotas: LustreQuotas = fs.read_meta(QUOTA_FILE)?;
    Ok(quotas.projects.get(&id).copied().unwrap_or_default())
}

#[derive(Debug, Default, PartialEq, Eq)]
struct QuotaArgs {
    projid: u32,
    quiet: bool,
    human: bool,
    mount: String,
}

fn parse_quota(args: &[String]) -> Result<QuotaArgs, String> {
    let spec = OptSpec {
        short_with_value: "iIo",
        short_flags: "gGpPqtuUvh",
        long_with_value: &["pool"],
        long_flags: &[],
    };
    let mut out = QuotaArgs::default();
    let mut kind: Option<char> = None;
    let mut operands = Vec::new();
    for opt in getopt(args, spec)? {
        match opt {
            Opt::Short(c @ ('u' | 'g' | 'p' | 'U' | 'G' | 'P'), None) => {
                if kind.is_some() {
                    return Err("only one of -u, -g, or -p may be specified".into());
                }
                kind = Some(c);
            }
            Opt::Short('q', None) => out.quiet = true,
            Opt::Short('h', None) => out.human = true,
            Opt::Short('t', None) => return Err("option -t is not simulated".into()),
            Opt::Positional(p) => operands.push(p),
            _ => {}
        }
    }
    match kind {
        Some('p') => {}
        Some(other) => return Err(format!("option -{other} is not simulated: only -p is")),
        None => {
            return Err("option -p is required (the simulator keeps project quotas only)".into());
        }
    }
    match operands.as_slice() {
        [id, mount] => {
            out.projid = id
                .parse()
                .map_err(|_| format!("invalid project ID '{id}'"))?;
            out.mount = mount.clone();
        }
        _ => return Err("usage: lfs quota -p <projid> [-q] [-h] <mount_point>".into()),
    }
    Ok(out)
}

/// Renders the `lfs quota -p` report (without the header when `quiet`).
pub fn render_quota(
    mount: &str,
    id: u32,
    usage: Usage,
    limits: ProjectLimits,
    quiet: bool,
    human: bool,
) -> String {
    let mut out = String::new();
    if !quiet {
        out.push_str(&format!("Disk quotas for prj {id} (pid {id}):\n"));
        out.push_str(&format!(
            "{:>15}{:>8} {:>7}{:>8}{:>8}{:>8} {:>7}{:>8}{:>8}\n",
            "Filesystem",
            if human { "used" } else { "kbytes" },
            "quota",
            "limit",
            "grace",
            "files",
            "quota",
            "limit",
            "grace"
        ));
    }
    let limits = if id == 0 {
        ProjectLimits::default()
    } else {
        limits
    };
    if mount.len() > 15 {
        out.push_str(&format!("{mount}\n{:>15}", ""));
    } else {
        out.push_str(&format!("{mount:>15}"));
    }
    let kib = usage.kib();
    let bover = if limits.bhard != 0 && kib >= limits.bhard {
        1
    } else if limits.bsoft != 0 && kib > limits.bsoft {
        2
    } else {
        0
    };
    out.push_str(&format!(
        " {:>7}{} {:>6} {:>7} {:>7}",
        lfs_kbytes(kib, human),
        if bover != 0 { '*' } else { ' ' },
        lfs_kbytes(limits.bsoft, human),
        lfs_kbytes(limits.bhard, human),
        if bover > 1 { "1w" } else { "-" }
    ));
    let iover = if limits.ihard != 0 && usage.inodes >= limits.ihard {
        1
    } else if limits.isoft != 0 && usage.inodes > limits.isoft {
        2
    } else {
        0
    };
    out.push_str(&format!(
        " {:>7}{} {:>6} {:>7} {:>7}\n",
        usage.inodes,
        if iover != 0 { '*' } else { ' ' },
        limits.isoft,
        limits.ihard,
        if iover > 1 { "1w" } else { "-" }
    ));
    out
}

fn quota(args: &[String], root: &StateRoot, io: &mut ToolIo<'_>) -> i32 {
    let parsed = match parse_quota(args) {
        Ok(parsed) => parsed,
        Err(msg) => {
            io.err(&format!("lfs quota: {msg}\n"));
            return USAGE_EXIT;
        }
    };
    let fs = match lustre_mount(root, "quota", &parsed.mount, io) {
        Ok(fs) => fs,
        Err(code) => return code,
    };
    let limits = match project_limits(&fs, parsed.projid) {
        Ok(limits) => limits,
        Err(e) => {
            io.err(&format!("Unexpected quotactl error: {e}\n"));
            return 1;
        }
    };
    let usage = match usage::project_usage(&fs, parsed.projid) {
        Ok(usage) => usage,
        Err(e) => {
            io.err(&format!(
                "Unexpected quotactl error: {}\n",
                crate::errno_text(&e)
            ));
            return 1;
        }
    };
    io.out(&render_quota(
        &parsed.mount,
        parsed.projid,
        usage,
        limits,
        parsed.quiet,
        parsed.human,
    ));
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn project_argument_forms() {
        let p = parse_project(&args(&["-p", "1000", "-s", "/mnt/vol"])).unwrap();
        assert_eq!(p.op, ProjectOp::Set);
        assert_eq!(p.projid, Some(1000));
        assert!(p.set_inherit);
        let p = parse_project(&args(&["-p", "5", "/d"])).unwrap();
        assert_eq!(p.op, ProjectOp::Set);
        assert!(!p.set_inherit);
        let p = parse_project(&args(&["-d", "/d"])).unwrap();
        assert_eq!(p.op, ProjectOp::List);
        assert!(p.dironly);
        assert_eq!(
            parse_project(&args(&["-C", "/d"])).unwrap().op,
            ProjectOp::Clear
        );
        assert!(parse_project(&args(&["-C", "-s", "/d"])).is_err());
        assert!(parse_project(&args(&["-C", "-p", "3", "/d"])).is_err());
        assert!(parse_project(&args(&["-s", "-k", "/d"])).is_err());
        assert!(parse_project(&args(&["-0", "/d"])).is_err());
        assert!(!parse_project(&args(&["-c", "-0", "/d"])).unwrap().newline);
        assert!(parse_project(&args(&["-p", "x", "/d"])).is_err());
        assert!(parse_project(&args(&["-d"])).is_err());
    }

    #[test]
    fn setquota_sizes_are_kib_by_default() {
        let p = parse_setquota(&args(&[
            "-p", "7", "-B", "1G", "-b", "2048", "-I", "1k", "/mnt",
        ]))
        .unwrap();
        assert_eq!(p.bhard, Some(1 << 20));
        assert_eq!(p.bsoft, Some(2048));
        assert_eq!(p.ihard, Some(1024));
        assert_eq!(p.mount.as_deref(), Some("/mnt"));
        assert!(p.warnings.is_empty());
        let p = parse_setquota(&args(&["-p", "7", "--block-hardlimit=10", "/mnt"])).unwrap();
        assert_eq!(p.bhard, Some(10));
        assert_eq!(p.warnings.len(), 1);
        assert!(parse_setquota(&args(&["-p", "7", "/mnt"])).is_err());
        assert!(parse_setquota(&args(&["-B", "1G", "/mnt"])).is_err());
        assert!(parse_setquota(&args(&["-p", "7", "-B", "1Q", "/mnt"])).is_err());
        assert!(parse_setquota(&args(&["-u", "7", "-B", "1G", "/mnt"])).is_err());
    }

    #[test]
    fn quota_arguments() {
        let q = parse_quota(&args(&["-p", "1000", "-q", "-h", "/mnt/lustre"])).unwrap();
        assert_eq!(
            q,
            QuotaArgs {
                projid: 1000,
                quiet: true,
                human: true,
                mount: "/mnt/lustre".into()
            }
        );
        assert!(parse_quota(&args(&["-u", "1", "/m"])).is_err());
        assert!(parse_quota(&args(&["-p", "/m"])).is_err());
    }

    #[test]
    fn quota_report_matches_the_lfs_layout() {
        let usage = Usage {
            bytes: 1200 * 1024,
            inodes: 3,
        };
        let limits = ProjectLimits {
            bsoft: 0,
            bhard: 1000,
            isoft: 0,
            ihard: 100,
        };
        let text = render_quota("/mnt/lustre", 1000, usage, limits, false, false);
        let expected = concat!(
            "Disk quotas for prj 1000 (pid 1000):\n",
            "     Filesystem  kbytes   quota   limit   grace   files   quota   limit   grace\n",
            "    /mnt/lustre    1200*      0    1000       -       3       0     100       -\n",
        );
        assert_eq!(text, expected);
        let long = render_quota(
            "/var/lib/kubelet/plugins/exa",
            5,
            usage,
            ProjectLimits::default(),
            true,
            true,
        );
        assert_eq!(
            long,
            "/var/lib/kubelet/plugins/exa\n                 1.172M      0k      0k       -       3       0       0       -\n"
        );
    }

    proptest! {
        #[test]
        fn quota_rows_always_carry_eight_numbers(kib in 0u64..1 << 40, inodes in 0u64..1 << 30, bhard in 0u64..1 << 40, human in any::<bool>()) {
            let text = render_quota("/mnt", 1, Usage { bytes: kib * 1024, inodes }, ProjectLimits { bsoft: 0, bhard, isoft: 0, ihard: 0 }, true, human);
            let fields: Vec<&str> = text.split_whitespace().collect();
            prop_assert_eq!(fields.len(), 9);
            prop_assert_eq!(fields[1].ends_with('*'), bhard != 0 && kib >= bhard);
        }

        #[test]
        fn argument_parsers_never_panic(list in prop::collection::vec("-?[a-zA-Z0-9/=]{0,6}", 0..6)) {
            let _ = parse_project(&list);
            let _ = parse_setquota(&list);
            let _ = parse_quota(&list);
        }
    }
}
