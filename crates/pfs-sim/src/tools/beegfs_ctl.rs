//! BeeGFS 7 `beegfs-ctl`: `--getentryinfo`, `--createdir`, `--setpattern`, `--listnodes`,
//! `--setquota`, `--getquota`.
//!
//! As the real tool, every argument is a `key[=value]` entry of one sorted map: values are only
//! taken from `=`, so `--gid 1000` names the id with a separate argument (`--gid=1000` leaves the
//! id unspecified), and a mode's path is the first remaining key. The configuration comes from
//! `--cfgFile` (or the configuration of the BeeGFS mount named by `--mount`), overridden by
//! `--<key>=<value>` arguments; the authentication file is checked before anything else.

use super::ToolIo;
use super::beegfs_common::{
    self as common, EntryError, EntryInfo, Limit, PatternType, PatternUpdate, QuotaKind,
};
use crate::clientconf::{ClientConf, ConfProblem};
use crate::sizes::{
    beegfs7_human, beegfs7_quota_size, parse_beegfs7_chunksize, parse_beegfs7_size,
};
use crate::state::{Filesystem, FsKind, StateRoot, normalize_fs_path};
use std::collections::BTreeMap;
use std::path::Path;

/// The version the simulated tool reports.
pub const CTL_VERSION: &str = "7.4.5";

const APPCODE_INVALID_CONFIG: i32 = 1;
const APPCODE_RUNTIME_ERROR: i32 = 3;

const MODES: [&str; 6] = [
    "--getentryinfo",
    "--createdir",
    "--setpattern",
    "--listnodes",
    "--setquota",
    "--getquota",
];

/// Splits arguments into the tool's sorted `key -> value` map (later duplicates win).
pub fn arg_map(args: &[String]) -> BTreeMap<String, String> {
    args.iter()
        .map(|a| match a.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (a.clone(), String::new()),
        })
        .collect()
}

fn is_config_key(key: &str) -> bool {
    const PREFIXES: [&str; 7] = [
        "--sys",
        "--conn",
        "--log",
        "--tune",
        "--quota",
        "--cfgFile",
        "--runDaemonized",
    ];
    PREFIXES.iter().any(|p| key.starts_with(p))
}

fn invalid_config(msg: &str, io: &mut ToolIo<'_>) -> i32 {
    io.err(&format!(
        "\nError: {msg}\n\n[BeeGFS Control Tool Version: {CTL_VERSION}\nRefer to the default config file (/etc/beegfs/beegfs-client.conf)\nor visit http://www.beegfs.com to find out about configuration options.]\n\n"
    ));
    APPCODE_INVALID_CONFIG
}

fn unrecoverable(msg: &str, io: &mut ToolIo<'_>) -> i32 {
    io.err(&format!("\nUnrecoverable error: {msg}\n\n"));
    APPCODE_RUNTIME_ERROR
}

fn check_invalid_args(map: &BTreeMap<String, String>, io: &mut ToolIo<'_>) -> bool {
    if map.is_empty() {
        return false;
    }
    if map.len() == 1 {
        io.err(&format!(
            "Invalid argument: {}\n",
            map.keys().next().unwrap_or(&String::new())
        ));
    } else {
        io.err(&format!(
            "Found {} invalid arguments. One of them is: {}\n",
            map.len(),
            map.keys().next().unwrap_or(&String::new())
        ));
    }
    io.err("Use \"--help\" as argument to show usage information.\n");
    true
}

struct Session {
    fs: Filesystem,
    map: BTreeMap<String, String>,
    mode: String,
}

/// Loads the configuration, checks authentication and connects; `Err` is the exit code.
fn connect(args: &[String], root: &StateRoot, io: &mut ToolIo<'_>) -> Result<Session, i32> {
    let mut map = arg_map(args);
    let cfg_file = map.remove("--cfgFile");
    let mount = map.get("--mount").cloned();
    let mut conf = match (&cfg_file, &mount) {
        (Some(path), _) => match ClientConf::load(Path::new(path)) {
            Ok(conf) => conf,
            Err(_) => {
                return Err(invalid_config(
                    &format!("Unable to open configuration file: {path}"),
                    io,
                ));
            }
        },
        (None, Some(mount)) => match conf_of_mount(root, mount) {
            Some(conf) => conf,
            None => {
                return Err(invalid_config(
                    &format!("Unable to find BeeGFS mount: {mount}"),
                    io,
                ));
            }
        },
        (None, None) => {
            ClientConf::load(Path::new("/etc/beegfs/beegfs-client.conf")).unwrap_or_default()
        }
    };
    let overrides: Vec<(String, String)> = map
        .iter()
        .filter(|(k, _)| is_config_key(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (key, value) in overrides {
        map.remove(&key);
        conf.set(key.trim_start_matches('-'), &value);
    }
    let auth = match conf.auth() {
        Ok(auth) => auth,
        Err(problem @ ConfProblem::AuthFileEmpty(_)) => {
            return Err(invalid_config(&problem.message(), io));
        }
        Err(problem) => return Err(unrecoverable(&problem.message(), io)),
    };
    let Some(mode) = MODES
        .iter()
        .find(|m| map.contains_key(**m))
        .map(|m| m.to_string())
    else {
        if map.contains_key("--help") || map.contains_key("-h") {
            io.out(&format!(
                "BeeGFS Command-Line Control Tool (http://www.beegfs.com)\nVersion: {CTL_VERSION}\n\nGENERAL USAGE:\n $ beegfs-ctl --<modename> --help\n $ beegfs-ctl --<modename> [mode_arguments] [client_arguments]\n\nMODES (simulated): {}\n",
                MODES.join(", ")
            ));
            return Err(0);
        }
        io.err("No valid mode specified. Use \"--help\" to show the available modes.\n");
        return Err(APPCODE_INVALID_CONFIG);
    };
    map.remove(&mode);
    let Some(host) = conf.mgmtd_host().map(str::to_string) else {
        return Err(invalid_config("Management host undefined", io));
    };
    let fs = match root.open_fs(FsKind::Beegfs, &host) {
        Ok(Some(fs)) if fs.record.beegfs_version == Some(7) => fs,
        _ => {
            io.err(&format!("Management node communication failed: {host}\n"));
            return Err(APPCODE_RUNTIME_ERROR);
        }
    };
    match common::auth_accepted(&fs, &auth) {
        Ok(true) => {}
        _ => {
            io.err(&format!("Management node communication failed: {host}\n"));
            return Err(APPCODE_RUNTIME_ERROR);
        }
    }
    Ok(Session { fs, map, mode })
}

fn conf_of_mount(root: &StateRoot, mount: &str) -> Option<ClientConf> {
    let located = root
        .locate(FsKind::Beegfs, Path::new(mount), false)
        .ok()??;
    let target = located.mount_target?;
    let record = located
        .fs
        .mounts()
        .ok()?
        .into_iter()
        .find(|m| m.target == target)?;
    let cfg = record
        .options
        .iter()
        .find_map(|o| o.strip_prefix("cfgFile="))?;
    ClientConf::load(Path::new(cfg)).ok()
}

/// Runs `beegfs-ctl`.
pub fn run(args: &[String], root: &StateRoot, io: &mut ToolIo<'_>) -> i32 {
    let mut session = match connect(args, root, io) {
        Ok(session) => session,
        Err(code) => return code,
    };
    match session.mode.as_str() {
        "--getentryinfo" => get_entry_info(&mut session, root, io),
        "--createdir" => create_dir(&mut session, root, io),
        "--setpattern" => set_pattern(&mut session, root, io),
        "--listnodes" => list_nodes(&mut session, io),
        "--setquota" => set_quota(&mut session, io),
        "--getquota" => get_quota(&mut session, io),
        _ => APPCODE_INVALID_CONFIG,
    }
}

/// The output of a refused connection (secret mismatch).
pub fn auth_failure(args: &[String], io: &mut ToolIo<'_>) -> i32 {
    let map = arg_map(args);
    let host = map
        .get("--cfgFile")
        .and_then(|p| ClientConf::load(Path::new(p)).ok())
        .and_then(|c| c.mgmtd_host().map(str::to_string))
        .unwrap_or_default();
    io.err(&format!("Management node communication failed: {host}\n"));
    APPCODE_RUNTIME_ERROR
}

/// Takes the mode's path: the first remaining key.
fn take_path(map: &mut BTreeMap<String, String>) -> Option<String> {
    let key = map.keys().next()?.clone();
    map.remove(&key);
    Some(key)
}

/// Resolves a path given to a mode (relative to the root with `--unmounted`, else a path in a
/// mount of the filesystem). `Err` is the exit code after printing the real tool's message.
fn resolve(
    session: &Session,
    root: &StateRoot,
    path: &str,
    unmounted: bool,
    must_exist: bool,
    io: &mut ToolIo<'_>,
) -> Result<String, i32> {
    if unmounted {
        return normalize_fs_path(path).ok_or_else(|| {
            io.err(&format!(
                "Unable to find metadata node for path: {path}\nError: Path does not exist\n"
            ));
            APPCODE_RUNTIME_ERROR
        });
    }
    let probe = if must_exist {
        Path::new(path).to_path_buf()
    } else {
        Path::new(path)
            .parent()
            .unwrap_or(Path::new("/"))
            .to_path_buf()
    };
    if let Err(e) = std::fs::symlink_metadata(&probe) {
        io.err(&format!("Stat failed: {}\n", crate::errno_text(&e)));
        return Err(APPCODE_RUNTIME_ERROR);
    }
    match root.locate(FsKind::Beegfs, &probe, false) {
        Ok(Some(l)) if l.fs.dir == session.fs.dir => {
            if must_exist {
                Ok(l.rel)
            } else {
                let name = Path::new(path)
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default();
                Ok(if l.rel.is_empty() {
                    name.to_string()
                } else {
                    format!("{}/{name}", l.rel)
                })
            }
        }
        _ => {
            io.err(&format!(
                "Unable to retrieve entryInfo for {}: Given path is not on a BeeGFS mount\n",
                probe.display()
            ));
            Err(APPCODE_RUNTIME_ERROR)
        }
    }
}

fn display_path(rel: &str) -> String {
    format!("/{rel}")
}

fn lookup_failed(rel: &str, error: &EntryError, io: &mut ToolIo<'_>) -> i32 {
    io.err(&format!(
        "Unable to find metadata node for path: {}\nError: {}\n",
        display_path(rel),
        error.text()
    ));
    APPCODE_RUNTIME_ERROR
}

/// Renders `--getentryinfo` for an entry.
pub fn render_entry_info(
    info: &EntryInfo,
    fs: &Filesystem,
    verbose: bool,
    mappings: bool,
) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "Entry type: {}\n",
        if info.is_dir { "directory" } else { "file" }
    ));
    out.push_str(&format!("EntryID: {}\n", info.entry_id));
    if info.is_dir && verbose {
        out.push_str(&format!("ParentID: {}\n", info.parent_id));
    }
    if !verbose {
        out.push_str("Metadata node: beegfs-meta-1 [ID: 1]\n");
    }
    out.push_str("Stripe pattern details:\n");
    out.push_str(&format!("+ Type: {}\n", info.pattern.kind.label()));
    out.push_str(&format!(
        "+ Chunksize: {}\n",
        beegfs7_human(info.pattern.chunksize)
    ));
    if info.targets.is_empty() {
        out.push_str(&format!(
            "+ Number of storage targets: desired: {}\n",
            info.pattern.num_targets
        ));
    } else {
        out.push_str(&format!(
            "+ Number of storage targets: desired: {}; actual: {}\n",
            info.pattern.num_targets,
            info.targets.len()
        ));
    }
    if info.is_dir
        && let Some(pool) = fs.pool(info.pattern.pool)
    {
        out.push_str(&format!("+ Storage Pool: {} ({})\n", pool.id, pool.name));
    }
    if !info.targets.is_empty() {
        out.push_str("+ Storage targets:\n");
        for t in &info.targets {
            if mappings {
                out.push_str(&format!(
                    "  + {t} @ beegfs-storage-{n} [ID: {n}]\n",
                    n = common::target_node(*t)
                ));
            } else {
                out.push_str(&format!("  + {t}\n"));
            }
        }
    }
    out
}

fn get_entry_info(session: &mut Session, root: &StateRoot, io: &mut ToolIo<'_>) -> i32 {
    let unmounted = session.map.remove("--unmounted").is_some();
    let verbose = session.map.remove("--verbose").is_some();
    let mappings = session.map.remove("--nomappings").is_none();
    session.map.remove("--null");
    session.map.remove("--mount");
    let Some(path) = take_path(&mut session.map) else {
        io.err("No path specified.\n");
        return APPCODE_RUNTIME_ERROR;
    };
    if check_invalid_args(&session.map, io) {
        return APPCODE_INVALID_CONFIG;
    }
    let rel = match resolve(session, root, &path, unmounted, true, io) {
        Ok(rel) => rel,
        Err(code) => return code,
    };
    match common::entry_info(&session.fs, &rel) {
        Ok(info) => {
            io.out(&render_entry_info(&info, &session.fs, verbose, mappings));
            0
        }
        Err(e) => lookup_failed(&rel, &e, io),
    }
}

fn parse_octal(text: &str) -> u32 {
    let end = text
        .find(|c: char| !('0'..='7').contains(&c))
        .unwrap_or(text.len());
    u32::from_str_radix(&text[..end], 8).unwrap_or(0)
}

fn create_dir(session: &mut Session, root: &StateRoot, io: &mut ToolIo<'_>) -> i32 {
    let mode = session
        .map
        .remove("--access")
        .map(|v| parse_octal(&v) & 0o7777)
        .unwrap_or(0o755);
    let uid = session
        .map
        .remove("--uid")
        .map(|v| crate::sizes::parse_leading_u64(&v) as u32)
        .unwrap_or(0);
    let gid = session
        .map
        .remove("--gid")
        .map(|v| crate::sizes::parse_leading_u64(&v) as u32)
        .unwrap_or(0);
    session.map.remove("--nomirror");
    session.map.remove("--nodes");
    session.map.remove("--mount");
    let unmounted = session.map.remove("--unmounted").is_some();
    let Some(path) = take_path(&mut session.map) else {
        io.err("No path specified.\n");
        return APPCODE_RUNTIME_ERROR;
    };
    if check_invalid_args(&session.map, io) {
        return APPCODE_INVALID_CONFIG;
    }
    let rel = match resolve(session, root, &path, unmounted, false, io) {
        Ok(rel) if !rel.is_empty() => rel,
        Ok(_) => {
            io.err("Invalid path specified.\n");
            return APPCODE_RUNTIME_ERROR;
        }
        Err(code) => return code,
    };
    match common::create_dir(&session.fs, &rel, mode, uid, gid) {
        Ok(_) => {
            io.out("Operation succeeded.\n");
            0
        }
        Err(EntryError::PathNotExists) => {
            let parent = rel.rsplit_once('/').map(|(p, _)| p).unwrap_or("");
            lookup_failed(parent, &EntryError::PathNotExists, io)
        }
        Err(e) => {
            io.err(&format!("Node encountered an error: {}\n", e.text()));
            APPCODE_RUNTIME_ERROR
        }
    }
}

fn set_pattern(session: &mut Session, root: &StateRoot, io: &mut ToolIo<'_>) -> i32 {
    let chunksize = session
        .map
        .remove("--chunksize")
        .map(|v| parse_beegfs7_chunksize(&v))
        .unwrap_or(0);
    if chunksize & chunksize.wrapping_sub(1) != 0 {
        io.err("Chunksize must be a power of two: --chunksize\n");
        return APPCODE_RUNTIME_ERROR;
    }
    let num_targets = session
        .map
        .remove("--numtargets")
        .map(|v| crate::sizes::parse_leading_u64(&v) as u32)
        .unwrap_or(0);
    let force = session.map.remove("--force").is_some();
    let pool = match session.map.remove("--storagepoolid") {
        None => None,
        Some(v) => {
            let id = if v == "default" {
                1
            } else if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
                v.parse::<u16>().unwrap_or(u16::MAX)
            } else {
                io.err(&format!(
                    "Storage pool must be a positive numeric value less than {} or default.",
                    u16::MAX
                ));
                return APPCODE_RUNTIME_ERROR;
            };
            if session.fs.pool(id).is_none() {
                io.err(&format!("Storage pool with ID {id} does not exist.\n"));
                return APPCODE_RUNTIME_ERROR;
            }
            Some(id)
        }
    };
    let unmounted = session.map.remove("--unmounted").is_some();
    let kind = match session.map.remove("--pattern").as_deref() {
        None => None,
        Some("raid0") => Some(PatternType::Raid0),
        Some("buddymirror") => Some(PatternType::BuddyMirror),
        Some(_) => {
            io.err("--pattern must be raid0 or buddymirror.\n");
            return APPCODE_RUNTIME_ERROR;
        }
    };
    if kind == Some(PatternType::BuddyMirror) && !force {
        io.err(
            "Cannot set buddy mirroring when no groups have been defined. Override with --force.\n",
        );
        return APPCODE_RUNTIME_ERROR;
    }
    session.map.remove("--mount");
    let Some(path) = take_path(&mut session.map) else {
        io.err("No path specified.\n");
        return APPCODE_RUNTIME_ERROR;
    };
    if check_invalid_args(&session.map, io) {
        return APPCODE_INVALID_CONFIG;
    }
    if chunksize != 0 {
        io.out(&format!("New chunksize: {chunksize}\n"));
    }
    if num_targets != 0 {
        io.out(&format!("New number of storage targets: {num_targets}\n"));
    }
    if let Some(pool) = pool {
        io.out(&format!("New storage pool ID: {pool}\n"));
    }
    io.out("\n");
    let rel = match resolve(session, root, &path, unmounted, true, io) {
        Ok(rel) => rel,
        Err(code) => return code,
    };
    let update = PatternUpdate {
        chunksize: (chunksize != 0).then_some(chunksize),
        num_targets: (num_targets != 0).then_some(num_targets),
        pool,
        kind,
    };
    match common::set_pattern(&session.fs, &rel, update) {
        Ok(_) => 0,
        Err(EntryError::PathNotExists) => lookup_failed(&rel, &EntryError::PathNotExists, io),
        Err(e) => {
            io.err(&format!("Node encountered an error: {}\n", e.text()));
            APPCODE_RUNTIME_ERROR
        }
    }
}

fn list_nodes(session: &mut Session, io: &mut ToolIo<'_>) -> i32 {
    let node_type = session.map.remove("--nodetype");
    for flag in [
        "--details",
        "--nicdetails",
        "--route",
        "--showversion",
        "--reachable",
        "--mount",
    ] {
        session.map.remove(flag);
    }
    if check_invalid_args(&session.map, io) {
        return APPCODE_INVALID_CONFIG;
    }
    let host = session.fs.record.name.clone();
    let nodes: Vec<String> = match node_type.as_deref().map(str::to_ascii_lowercase).as_deref() {
        Some("management" | "mgmt") => vec![format!("{host} [ID: 1]")],
        Some("metadata" | "meta") => vec!["beegfs-meta-1 [ID: 1]".into()],
        Some("storage") => (1..=session.fs.record.num_targets)
            .map(|n| format!("beegfs-storage-{n} [ID: {n}]"))
            .collect(),
        Some("client") => Vec::new(),
        _ => {
            io.err("Invalid or missing node type.\n");
            return APPCODE_INVALID_CONFIG;
        }
    };
    for node in nodes {
        io.out(&format!("{node}\n"));
    }
    0
}

fn quota_kind(map: &mut BTreeMap<String, String>, io: &mut ToolIo<'_>) -> Result<QuotaKind, i32> {
    let uid = map.remove("--uid").is_some();
    let gid = map.remove("--gid").is_some();
    match (uid, gid) {
        (true, true) => {
            io.err("Invalid configuration. Only one of --uid or --gid is allowed.\n");
            Err(APPCODE_INVALID_CONFIG)
        }
        (true, false) => Ok(QuotaKind::User),
        (false, true) => Ok(QuotaKind::Group),
        (false, false) => {
            io.err("Invalid configuration. One of --uid or --gid is required.\n");
            Err(APPCODE_INVALID_CONFIG)
        }
    }
}

fn resolve_id(kind: QuotaKind, text: &str) -> Option<u32> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().ok();
    }
    match kind {
        QuotaKind::User => nix::unistd::User::from_name(text)
            .ok()
            .flatten()
            .map(|u| u.uid.as_raw()),
        QuotaKind::Group => nix::unistd::Group::from_name(text)
            .ok()
            .flatten()
            .map(|g| g.gid.as_raw()),
    }
}

fn set_quota(session: &mut Session, io: &mut ToolIo<'_>) -> i32 {
    let kind = match quota_kind(&mut session.map, io) {
        Ok(kind) => kind,
        Err(code) => return code,
    };
    let pool = match session.map.remove("--storagepoolid") {
        Some(v) => crate::sizes::parse_leading_u64(&v) as u16,
        None => {
            io.out("Using default storage pool (1)\n");
            1
        }
    };
    let default = session.map.remove("--default").is_some();
    for unsupported in ["--all", "--file", "--list", "--range"] {
        if session.map.contains_key(unsupported) {
            io.err(&format!(
                "Invalid configuration. {unsupported} is not simulated.\n"
            ));
            return APPCODE_INVALID_CONFIG;
        }
    }
    let space = match session.map.remove("--sizelimit") {
        None => None,
        Some(v) if v == "reset" => Some(0),
        Some(v) if v == "unlimited" => Some(u64::MAX),
        Some(v) => match parse_beegfs7_size(&v) {
            Some(bytes) => Some(bytes),
            None => {
                io.err("Invalid configuration. The quota size limit is not valid.\n");
                return APPCODE_INVALID_CONFIG;
            }
        },
    };
    let inodes = match session.map.remove("--inodelimit") {
        None => None,
        Some(v) if v == "reset" => Some(0),
        Some(v) if v == "unlimited" => Some(u64::MAX),
        Some(v) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => v.parse().ok(),
        Some(_) => {
            io.err("Invalid configuration. The quota inode limit is not a numeric value.\n");
            return APPCODE_INVALID_CONFIG;
        }
    };
    if space.is_none() || inodes.is_none() {
        io.err("Invalid configuration. The arguments --sizelimit and --inodelimit are required.\n");
        return APPCODE_INVALID_CONFIG;
    }
    session.map.remove("--mount");
    if default {
        if check_invalid_args(&session.map, io) {
            return APPCODE_INVALID_CONFIG;
        }
        if session.fs.pool(pool).is_none() {
            io.err(&format!("Storage pool ID doesn't exist: {pool}.\n"));
            return APPCODE_RUNTIME_ERROR;
        }
        return match common::set_default_limits(&session.fs, kind, pool, space, inodes) {
            Ok(()) => 0,
            Err(e) => {
                io.err(&format!("Communication with server failed: {e}\n"));
                APPCODE_RUNTIME_ERROR
            }
        };
    }
    let Some(id_text) = take_path(&mut session.map) else {
        io.err("No ID specified.\n");
        return APPCODE_INVALID_CONFIG;
    };
    let Some(id) = resolve_id(kind, &id_text) else {
        io.err(&format!("Unable to resolve given name: {id_text}\n"));
        return APPCODE_INVALID_CONFIG;
    };
    if check_invalid_args(&session.map, io) {
        return APPCODE_INVALID_CONFIG;
    }
    if session.fs.pool(pool).is_none() {
        io.err(&format!("Storage pool ID doesn't exist: {pool}.\n"));
        return APPCODE_RUNTIME_ERROR;
    }
    match common::set_limits(&session.fs, kind, &[id], pool, space, inodes) {
        Ok(()) => 0,
        Err(e) => {
            io.err(&format!("Communication with server failed: {e}\n"));
            APPCODE_RUNTIME_ERROR
        }
    }
}

/// One row of `--getquota`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaRow {
    /// User or group name (the id when it has none).
    pub name: String,
    /// The id.
    pub id: u32,
    /// Used bytes.
    pub used_bytes: u64,
    /// Used chunk files.
    pub used_inodes: u64,
    /// The limits.
    pub limit: Limit,
}

/// Renders the `--getquota` table (or CSV) for one pool.
pub fn render_quota(rows: &[QuotaRow], csv: bool) -> String {
    let mut out = String::new();
    if csv {
        out.push_str("name,id,size,hard,files,hard\n");
    } else {
        out.push_str("      user/group     ||           size          ||    chunk files    \n");
        out.push_str("     name     |  id  ||    used    |    hard    ||  used   |  hard   \n");
        out.push_str("--------------|------||------------|------------||---------|---------\n");
    }
    for row in rows {
        let size_limit = if Limit::unlimited(row.limit.space) {
            "unlimited".to_string()
        } else if csv {
            row.limit.space.to_string()
        } else {
            beegfs7_quota_size(row.limit.space)
        };
        let inode_limit = if Limit::unlimited(row.limit.inodes) {
            "unlimited".to_string()
        } else {
            row.limit.inodes.to_string()
        };
        let used = if csv {
            row.used_bytes.to_string()
        } else {
            beegfs7_quota_size(row.used_bytes)
        };
        if csv {
            out.push_str(&format!(
                "{},{},{},{},{},{}\n",
                row.name, row.id, used, size_limit, row.used_inodes, inode_limit
            ));
        } else {
            out.push_str(&format!(
                "{:>14}|{:>6}||{:>12}|{:>12}||{:>9}|{:>9}\n",
                row.name, row.id, used, size_limit, row.used_inodes, inode_limit
            ));
        }
    }
    out
}

fn id_name(kind: QuotaKind, id: u32) -> String {
    let name = match kind {
        QuotaKind::User => nix::unistd::User::from_uid(id.into())
            .ok()
            .flatten()
            .map(|u| u.name),
        QuotaKind::Group => nix::unistd::Group::from_gid(id.into())
            .ok()
            .flatten()
            .map(|g| g.name),
    };
    name.unwrap_or_else(|| id.to_string())
}

/// `--getquota --defaultlimits`: the default user and group limits of a pool (of each pool
/// under its heading without `--storagepoolid`), as a table or CSV with sizes in bytes.
fn print_default_limits(
    session: &mut Session,
    pool: Option<u16>,
    csv: bool,
    io: &mut ToolIo<'_>,
) -> i32 {
    session.map.remove("--mount");
    if check_invalid_args(&session.map, io) {
        return APPCODE_INVALID_CONFIG;
    }
    let pools: Vec<u16> = match pool {
        Some(p) if session.fs.pool(p).is_none() => {
            io.err(&format!("Storage pool ID doesn't exist: {p}.\n"));
            return APPCODE_INVALID_CONFIG;
        }
        Some(p) => vec![p],
        None => session.fs.record.pools.iter().map(|p| p.id).collect(),
    };
    let text = |value: u64, size: bool| {
        if Limit::unlimited(value) {
            "unlimited".to_string()
        } else if size && !csv {
            beegfs7_quota_size(value)
        } else {
            value.to_string()
        }
    };
    for p in pools {
        let user = common::default_limits(&session.fs, QuotaKind::User, p).unwrap_or_default();
        let group = common::default_limits(&session.fs, QuotaKind::Group, p).unwrap_or_default();
        if pool.is_none() {
            io.out(&format!(
                "\nQuota information for storage pool (ID: {p}):\n\n"
            ));
        }
        if csv {
            io.out("user size limit,user chunk files limit,group size limit,group chunk files\n");
            io.out(&format!(
                "{},{},{},{}\n",
                text(user.space, true),
                text(user.inodes, false),
                text(group.space, true),
                text(group.inodes, false)
            ));
        } else {
            io.out(&format!(
                "user size limit:        {}\nuser chunk files limit: {}\ngroup size limit:       {}\ngroup chunk files:      {}\n\n",
                text(user.space, true),
                text(user.inodes, false),
                text(group.space, true),
                text(group.inodes, false)
            ));
        }
    }
    0
}

fn get_quota(session: &mut Session, io: &mut ToolIo<'_>) -> i32 {
    let pool = match session.map.remove("--storagepoolid") {
        None => None,
        Some(v) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => {
            Some(v.parse::<u16>().unwrap_or(u16::MAX))
        }
        Some(_) => {
            io.err("--storagepoolid must be a numeric value.\n");
            return APPCODE_RUNTIME_ERROR;
        }
    };
    let csv = session.map.remove("--csv").is_some();
    if session.map.remove("--defaultlimits").is_some() {
        return print_default_limits(session, pool, csv, io);
    }
    let kind = match quota_kind(&mut session.map, io) {
        Ok(kind) => kind,
        Err(code) => return code,
    };
    session.map.remove("--withzero");
    session.map.remove("--withsystem");
    session.map.remove("--mount");
    let list = session.map.remove("--list").is_some();
    for unsupported in ["--all", "--range"] {
        if session.map.contains_key(unsupported) {
            io.err(&format!(
                "Invalid configuration. {unsupported} is not simulated.\n"
            ));
            return APPCODE_INVALID_CONFIG;
        }
    }
    let Some(id_text) = take_path(&mut session.map) else {
        io.err(if list {
            "No ID list specified.\n"
        } else {
            "No ID specified.\n"
        });
        return APPCODE_INVALID_CONFIG;
    };
    let mut ids = Vec::new();
    for part in if list {
        id_text.split(',').collect::<Vec<_>>()
    } else {
        vec![id_text.as_str()]
    } {
        match resolve_id(kind, part.trim()) {
            Some(id) => ids.push(id),
            None => {
                io.err(&format!("Unable to resolve given name: {part}\n"));
                return APPCODE_INVALID_CONFIG;
            }
        }
    }
    ids.sort_unstable();
    ids.dedup();
    if check_invalid_args(&session.map, io) {
        return APPCODE_INVALID_CONFIG;
    }
    let pools: Vec<u16> = match pool {
        Some(p) => {
            if session.fs.pool(p).is_none() {
                io.err(&format!("Storage pool ID doesn't exist: {p}.\n"));
                return APPCODE_INVALID_CONFIG;
            }
            vec![p]
        }
        None => session.fs.record.pools.iter().map(|p| p.id).collect(),
    };
    for p in pools {
        let usage = match common::usage_by_id(&session.fs, kind, p) {
            Ok(usage) => usage,
            Err(e) => {
                io.err(&format!("Could not gather quota information from all storage nodes.\nRefusing to display incorrect information. ({e})\n"));
                return APPCODE_RUNTIME_ERROR;
            }
        };
        let limits = common::limits(&session.fs, kind, p).unwrap_or_default();
        let default = common::default_limits(&session.fs, kind, p).unwrap_or_default();
        let rows: Vec<QuotaRow> = ids
            .iter()
            .map(|id| {
                let used = usage.get(id).copied().unwrap_or_default();
                QuotaRow {
                    name: id_name(kind, *id),
                    id: *id,
                    used_bytes: used.bytes,
                    used_inodes: used.inodes,
                    limit: limits
                        .get(id)
                        .copied()
                        .unwrap_or_default()
                        .or_default(default),
                }
            })
            .collect();
        if pool.is_none() {
            let name = session
                .fs
                .pool(p)
                .map(|x| x.name.clone())
                .unwrap_or_default();
            io.out(&format!(
                "\nQuota information for storage pool {name} (ID: {p}):\n\n"
            ));
        }
        io.out(&render_quota(&rows, csv));
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn values_come_only_from_equals_signs() {
        let map = arg_map(&[
            "--cfgFile=/x/conf".to_string(),
            "--getquota".into(),
            "--gid".into(),
            "1000".into(),
            "--csv".into(),
        ]);
        assert_eq!(map.get("--cfgFile").map(String::as_str), Some("/x/conf"));
        assert_eq!(map.get("--gid").map(String::as_str), Some(""));
        assert!(map.contains_key("1000"));
        let mut m = arg_map(&["/b".to_string(), "/a".into()]);
        assert_eq!(take_path(&mut m).as_deref(), Some("/a"));
    }

    #[test]
    fn quota_csv_and_table() {
        let rows = vec![QuotaRow {
            name: "2000".into(),
            id: 2000,
            used_bytes: 8192,
            used_inodes: 2,
            limit: Limit {
                space: 10 << 30,
                inodes: 0,
            },
        }];
        assert_eq!(
            render_quota(&rows, true),
            "name,id,size,hard,files,hard\n2000,2000,8192,10737418240,2,unlimited\n"
        );
        let table = render_quota(&rows, false);
        assert_eq!(
            table.lines().nth(3).unwrap(),
            "          2000|  2000||    8.00 KiB|   10.00 GiB||        2|unlimited"
        );
    }

    #[test]
    fn octal_access_modes() {
        assert_eq!(parse_octal("777"), 0o777);
        assert_eq!(parse_octal("2755"), 0o2755);
        assert_eq!(parse_octal("9"), 0);
    }

    proptest! {
        #[test]
        fn arg_map_keeps_every_key(args in prop::collection::vec("[-a-zA-Z0-9/]{1,10}(=[a-zA-Z0-9/=]{0,6})?", 0..8)) {
            let map = arg_map(&args);
            for a in &args {
                let key = a.split_once('=').map(|(k, _)| k).unwrap_or(a);
                prop_assert!(map.contains_key(key));
            }
        }

        #[test]
        fn csv_rows_have_six_fields(used in any::<u64>(), inodes in any::<u64>(), space in any::<u64>(), ilimit in any::<u64>(), id in any::<u32>()) {
            let text = render_quota(&[QuotaRow { name: id.to_string(), id, used_bytes: used, used_inodes: inodes, limit: Limit { space, inodes: ilimit } }], true);
            let row = text.lines().nth(1).unwrap();
            prop_assert_eq!(row.split(',').count(), 6);
        }
    }
}
