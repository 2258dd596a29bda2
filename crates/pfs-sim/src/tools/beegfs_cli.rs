//! BeeGFS 8 `beegfs`: `entry info|create directory|set`, `node list`, `quota set-limits|
//! list-usage`, `version`, with the global flags `--mgmtd-addr`, `--auth-file`/`--auth-disable`,
//! `--tls-cert-file`/`--tls-disable`, `--mount`, `--output`, `--raw`.
//!
//! Flags may appear anywhere (before, between or after the command words), as `--flag=value` or
//! `--flag value`; global flags also come from `BEEGFS_<FLAG>` environment variables. Errors are
//! printed as `Error: <message>` with exit code 1.

use super::ToolIo;
use super::beegfs_common::{
    self as common, EntryError, EntryInfo, Limit, PatternType, PatternUpdate, QuotaKind,
};
use super::table::{OutputFormat, render};
use crate::clientconf::ClientAuth;
use crate::sizes::{PrefixMode, format_prefix, parse_beegfs8_size};
use crate::state::{Filesystem, FsKind, StateRoot, normalize_fs_path};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;

/// The version the simulated tool reports.
pub const CLI_VERSION: &str = "8.1.0";

const GLOBAL_VALUE_FLAGS: [&str; 12] = [
    "mgmtd-addr",
    "output",
    "bee-remote-addr",
    "mount",
    "num-workers",
    "tls-cert-file",
    "tls-ca-cert",
    "auth-file",
    "conn-timeout",
    "log-level",
    "columns",
    "page-size",
];
const GLOBAL_BOOL_FLAGS: [&str; 7] = [
    "debug",
    "raw",
    "disable-emojis",
    "tls-disable",
    "tls-disable-verification",
    "auth-disable",
    "help",
];

/// The commands the simulator knows, with their own flags (value flags, bool flags).
fn command_flags(command: &str) -> Option<(&'static [&'static str], &'static [&'static str])> {
    Some(match command {
        "version" => (&[], &[]),
        "node list" => (
            &["node-type", "reachability-timeout"],
            &["with-nics", "reachability-check", "reachability-error"],
        ),
        "entry info" => (
            &["stdin-delimiter", "filter-files"],
            &[
                "recurse",
                "verbose",
                "retro",
                "retro-print-paths",
                "no-ioctl",
                "parallel",
            ],
        ),
        "entry create directory" => (&["permissions", "uid", "gid", "nodes"], &["no-mirror"]),
        "entry set" => (
            &[
                "chunk-size",
                "pool",
                "pattern",
                "num-targets",
                "remote-targets",
                "stdin-delimiter",
                "filter-files",
                "remote-cooldown",
                "access-flags",
                "data-state",
            ],
            &["recurse", "verbose", "force", "yes"],
        ),
        "quota set-limits" => (&["space", "inode", "uid", "gid"], &[]),
        "quota list-usage" => (&["uids", "gids", "pool"], &["exceeded"]),
        _ => return None,
    })
}

/// A parsed command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CliArgs {
    /// The command words (`entry create directory`).
    pub command: String,
    /// Flag values (repeated flags keep every value).
    pub flags: BTreeMap<String, Vec<String>>,
    /// Positional arguments after the command words.
    pub args: Vec<String>,
}

impl CliArgs {
    /// The last value of a flag.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.flags
            .get(name)
            .and_then(|v| v.last())
            .map(String::as_str)
    }

    /// Whether a bool flag is set.
    pub fn bool(&self, name: &str) -> bool {
        matches!(self.value(name), Some("true" | ""))
    }

    /// A slice flag: every value, split at commas.
    pub fn list(&self, name: &str) -> Vec<String> {
        self.flags
            .get(name)
            .map(|values| {
                values
                    .iter()
                    .flat_map(|v| v.split(','))
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }
}

const COMMAND_TREE: [&str; 7] = [
    "version",
    "node list",
    "entry info",
    "entry create directory",
    "entry set",
    "quota set-limits",
    "quota list-usage",
];

/// Parses a command line as cobra would for the simulated commands.
pub fn parse(args: &[String]) -> Result<CliArgs, String> {
    let all_value: Vec<&str> = GLOBAL_VALUE_FLAGS
        .iter()
        .copied()
        .chain(
            COMMAND_TREE
                .iter()
                .flat_map(|c| command_flags(c).map(|f| f.0.to_vec()).unwrap_or_default()),
        )
        .collect();
    let all_bool: Vec<&str> = GLOBAL_BOOL_FLAGS
        .iter()
        .copied()
        .chain(
            COMMAND_TREE
                .iter()
                .flat_map(|c| command_flags(c).map(|f| f.1.to_vec()).unwrap_or_default()),
        )
        .collect();
    let mut flags: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut words = Vec::new();
    let mut i = 0;
    let mut only_positional = false;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if only_positional || !arg.starts_with('-') || arg == "-" {
            words.push(arg.clone());
            continue;
        }
        if arg == "--" {
            only_positional = true;
            continue;
        }
        if arg == "-h" {
            flags.entry("help".into()).or_default().push(String::new());
            continue;
        }
        let Some(long) = arg.strip_prefix("--") else {
            return Err(format!(
                "unknown shorthand flag: '{}' in {arg}",
                arg.chars().nth(1).unwrap_or('-')
            ));
        };
        let (name, inline) = match long.split_once('=') {
            Some((n, v)) => (n.to_ascii_lowercase(), Some(v.to_string())),
            None => (long.to_ascii_lowercase(), None),
        };
        if all_value.contains(&name.as_str()) {
            let value = match inline {
                Some(v) => v,
                None => {
                    let Some(v) = args.get(i) else {
                        return Err(format!("flag needs an argument: --{name}"));
                    };
                    i += 1;
                    v.clone()
                }
            };
            flags.entry(name).or_default().push(value);
        } else if all_bool.contains(&name.as_str()) {
            let value = inline.unwrap_or_default();
            if !matches!(value.as_str(), "" | "true" | "false") {
                return Err(format!(
                    "invalid argument \"{value}\" for \"--{name}\" flag: strconv.ParseBool: parsing \"{value}\": invalid syntax"
                ));
            }
            flags.entry(name).or_default().push(value);
        } else {
            return Err(format!("unknown flag: --{name}"));
        }
    }
    let mut command = Vec::new();
    let mut rest = words.into_iter().peekable();
    while let Some(word) = rest.peek() {
        let candidate = if command.is_empty() {
            word.clone()
        } else {
            format!(
                "{} {}",
                command.join(" "),
                if word == "dir" { "directory" } else { word }
            )
        };
        if COMMAND_TREE
            .iter()
            .any(|c| *c == candidate || c.starts_with(&format!("{candidate} ")))
        {
            command.push(if word == "dir" {
                "directory".to_string()
            } else {
                word.clone()
            });
            rest.next();
            if COMMAND_TREE.contains(&candidate.as_str()) {
                break;
            }
        } else {
            break;
        }
    }
    let command = command.join(" ");
    let positional: Vec<String> = rest.collect();
    if !COMMAND_TREE.contains(&command.as_str()) {
        // A group such as `entry` without (or with an unknown) subcommand.
        return match positional.first() {
            Some(word) => Err(format!(
                "unknown command \"{word}\" for \"{}\"",
                if command.is_empty() {
                    "beegfs".to_string()
                } else {
                    format!("beegfs {command}")
                }
            )),
            None => Ok(CliArgs {
                command: String::new(),
                flags,
                args: positional,
            }),
        };
    }
    if let Some((values, bools)) = command_flags(&command) {
        for name in flags.keys() {
            let known = GLOBAL_VALUE_FLAGS.contains(&name.as_str())
                || GLOBAL_BOOL_FLAGS.contains(&name.as_str())
                || values.contains(&name.as_str())
                || bools.contains(&name.as_str());
            if !known {
                return Err(format!("unknown flag: --{name}"));
            }
        }
    }
    Ok(CliArgs {
        command,
        flags,
        args: positional,
    })
}

fn error(io: &mut ToolIo<'_>, msg: &str) -> i32 {
    io.err(&format!("Error: {msg}\n"));
    1
}

fn global(cli: &CliArgs, name: &str) -> Option<String> {
    cli.value(name).map(str::to_string).or_else(|| {
        std::env::var(format!(
            "BEEGFS_{}",
            name.to_ascii_uppercase().replace('-', "_")
        ))
        .ok()
    })
}

fn global_bool(cli: &CliArgs, name: &str) -> bool {
    matches!(global(cli, name).as_deref(), Some("" | "true" | "1"))
}

fn unavailable(addr: &str) -> String {
    format!(
        "unable to connect to the management service at {addr}: rpc error: code = Unavailable desc = connection error: desc = \"transport: Error while dialing: dial tcp {addr}: connect: connection refused\""
    )
}

/// Connects to the management service named by `--mgmtd-addr`, checking authentication and TLS.
fn connect(cli: &CliArgs, root: &StateRoot) -> Result<Filesystem, String> {
    let addr = global(cli, "mgmtd-addr").unwrap_or_else(|| "127.0.0.1:8010".to_string());
    let (host, port) = match addr.rsplit_once(':') {
        Some((h, p)) => (
            h.trim_start_matches('[').trim_end_matches(']').to_string(),
            p.parse::<u16>().ok(),
        ),
        None => (addr.clone(), None),
    };
    let Some(port) = port else {
        return Err(format!("address {addr}: missing port in address"));
    };
    let fs = match root.open_fs(FsKind::Beegfs, &host) {
        Ok(Some(fs)) if fs.record.beegfs_version == Some(8) && fs.record.grpc_port == port => fs,
        _ => return Err(unavailable(&addr)),
    };
    let presented = if global_bool(cli, "auth-disable") {
        ClientAuth::Disabled
    } else {
        let path = global(cli, "auth-file").unwrap_or_else(|| "/etc/beegfs/conn.auth".to_string());
        match std::fs::read(&path) {
            Ok(secret) => ClientAuth::Secret(secret),
            Err(e) => {
                return Err(format!(
                    "couldn't read auth file {path:?}: open {path}: {}",
                    crate::errno_text(&e).to_ascii_lowercase()
                ));
            }
        }
    };
    if global_bool(cli, "tls-disable") {
        if fs.record.tls_required {
            return Err(format!(
                "unable to connect to the management service at {addr}: rpc error: code = Unavailable desc = connection error: desc = \"error reading server preface: EOF\""
            ));
        }
    } else {
        let path = global(cli, "tls-cert-file")
            .or_else(|| global(cli, "tls-ca-cert"))
            .unwrap_or_else(|| "/etc/beegfs/cert.pem".to_string());
        let cert = std::fs::read(&path).map_err(|e| {
            format!(
                "unable to read TLS certificate file {path:?}: open {path}: {}",
                crate::errno_text(&e).to_ascii_lowercase()
            )
        })?;
        match fs.tls_cert() {
            Ok(Some(expected)) if expected == cert => {}
            Ok(Some(_)) => {
                return Err(format!(
                    "unable to connect to the management service at {addr}: rpc error: code = Unavailable desc = connection error: desc = \"transport: authentication handshake failed: tls: failed to verify certificate: x509: certificate signed by unknown authority\""
                ));
            }
            _ => {
                return Err(format!(
                    "unable to connect to the management service at {addr}: rpc error: code = Unavailable desc = connection error: desc = \"transport: authentication handshake failed: tls: first record does not look like a TLS handshake\""
                ));
            }
        }
    }
    match common::auth_accepted(&fs, &presented) {
        Ok(true) => Ok(fs),
        _ => Err(format!(
            "unable to connect to the management service at {addr}: rpc error: code = Unauthenticated desc = authentication failed"
        )),
    }
}

/// Runs `beegfs`.
pub fn run(args: &[String], root: &StateRoot, io: &mut ToolIo<'_>) -> i32 {
    let cli = match parse(args) {
        Ok(cli) => cli,
        Err(msg) => return error(io, &msg),
    };
    if cli.command.is_empty() || cli.bool("help") {
        io.out(&format!(
            "BeeGFS Command Line Tool: {CLI_VERSION}\n\nSimulated commands:\n  {}\n",
            COMMAND_TREE.join("\n  ")
        ));
        return 0;
    }
    if cli.command == "version" {
        io.out(&format!(
            "Version: {CLI_VERSION} | Commit simulated | Built: unknown\n\nHint: The version displayed here is that of the command line tool, which may differ from BeeGFS itself.\n"
        ));
        return 0;
    }
    let format = match global(&cli, "output") {
        None => OutputFormat::Table,
        Some(v) => match OutputFormat::parse(&v) {
            Some(f) => f,
            None => {
                return error(
                    io,
                    &format!("invalid argument \"{v}\" for \"--output\" flag"),
                );
            }
        },
    };
    let fs = match connect(&cli, root) {
        Ok(fs) => fs,
        Err(msg) => return error(io, &msg),
    };
    let ctx = Ctx {
        cli: &cli,
        fs: &fs,
        root,
        format,
    };
    let result = match cli.command.as_str() {
        "node list" => node_list(&ctx, io),
        "entry info" => entry_info(&ctx, io),
        "entry create directory" => entry_create_dir(&ctx, io),
        "entry set" => entry_set(&ctx, io),
        "quota set-limits" => quota_set_limits(&ctx),
        "quota list-usage" => quota_list_usage(&ctx, io),
        _ => Err("unknown command".to_string()),
    };
    match result {
        Ok(()) => 0,
        Err(msg) => error(io, &msg),
    }
}

/// The output of a refused authentication.
pub fn auth_failure(args: &[String], io: &mut ToolIo<'_>) -> i32 {
    let addr = parse(args)
        .ok()
        .and_then(|cli| global(&cli, "mgmtd-addr"))
        .unwrap_or_else(|| "127.0.0.1:8010".to_string());
    error(
        io,
        &format!(
            "unable to connect to the management service at {addr}: rpc error: code = Unauthenticated desc = authentication failed"
        ),
    )
}

struct Ctx<'a> {
    cli: &'a CliArgs,
    fs: &'a Filesystem,
    root: &'a StateRoot,
    format: OutputFormat,
}

impl Ctx<'_> {
    fn raw(&self) -> bool {
        global_bool(self.cli, "raw")
    }

    /// Resolves a path argument per `--mount` (`none`: relative to the BeeGFS root).
    fn resolve(&self, path: &str, must_exist: bool) -> Result<String, String> {
        let mount = global(self.cli, "mount").unwrap_or_else(|| "auto".to_string());
        if mount == "none" {
            return normalize_fs_path(path).ok_or_else(|| format!("invalid path {path:?}"));
        }
        let local = if mount == "auto" || Path::new(path).is_absolute() {
            Path::new(path).to_path_buf()
        } else {
            Path::new(&mount).join(path)
        };
        let probe = if must_exist {
            local.clone()
        } else {
            local.parent().unwrap_or(Path::new("/")).to_path_buf()
        };
        if let Err(e) = std::fs::symlink_metadata(&probe) {
            return Err(format!(
                "lstat {}: {}",
                probe.display(),
                crate::errno_text(&e).to_ascii_lowercase()
            ));
        }
        match self.root.locate(FsKind::Beegfs, &probe, false) {
            Ok(Some(l)) if l.fs.dir == self.fs.dir => {
                if must_exist {
                    Ok(l.rel)
                } else {
                    let name = local
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
            _ => Err(format!(
                "unable to determine the BeeGFS mount point for {} (use --mount=none for paths relative to the BeeGFS root)",
                local.display()
            )),
        }
    }

    fn print(&self, io: &mut ToolIo<'_>, columns: &[&str], rows: &[Vec<Value>]) {
        io.out(&render(columns, rows, self.format));
    }
}

fn search_error(rel: &str, e: &EntryError) -> String {
    format!("unexpected search result for '/{rel}': {}", e.text())
}

fn node_list(ctx: &Ctx<'_>, io: &mut ToolIo<'_>) -> Result<(), String> {
    let filter = ctx.cli.value("node-type").map(str::to_ascii_lowercase);
    let mut rows = Vec::new();
    let mut push = |kind: &str, id: u16, alias: String| {
        if filter
            .as_deref()
            .is_none_or(|f| f == kind || (f == "mgmtd" && kind == "management"))
        {
            rows.push(vec![
                json!(format!("{kind}:{id}")),
                json!(kind),
                json!(alias),
            ]);
        }
    };
    push("meta", 1, "node_meta_1".into());
    for n in 1..=ctx.fs.record.num_targets {
        push("storage", n, format!("node_storage_{n}"));
    }
    push("management", 1, "mgmtd".into());
    ctx.print(io, &["id", "type", "alias"], &rows);
    Ok(())
}

fn pool_alias(fs: &Filesystem, id: u16) -> String {
    fs.pool(id)
        .map(|p| p.alias.clone())
        .unwrap_or_else(|| "<unknown>".into())
}

fn entry_row(ctx: &Ctx<'_>, path: &str, info: &EntryInfo) -> Vec<Value> {
    let pattern = &info.pattern;
    let chunk = if ctx.raw() {
        pattern.chunksize.to_string()
    } else {
        format_prefix(pattern.chunksize as f64, PrefixMode::Base1024, 0)
    };
    let kind = if info.is_dir { "directory" } else { "file" };
    let (targets, mirrors) = if info.is_dir {
        ("(directory)".to_string(), "(directory)".to_string())
    } else {
        (
            info.targets
                .iter()
                .map(|t| format!("storage:{t}"))
                .collect::<Vec<_>>()
                .join(","),
            "(unmirrored)".to_string(),
        )
    };
    vec![
        json!(path),
        json!(info.entry_id),
        json!(kind),
        json!("meta:1"),
        json!("(unmirrored)"),
        json!(if info.is_dir {
            format!("{} ({})", pool_alias(ctx.fs, pattern.pool), pattern.pool)
        } else {
            format!("({kind})")
        }),
        json!(format!(
            "{} ({}x{chunk})",
            pattern.kind.label(),
            pattern.num_targets
        )),
        json!(targets),
        json!(mirrors),
        json!("(none)"),
    ]
}

fn retro(ctx: &Ctx<'_>, info: &EntryInfo) -> String {
    let pattern = &info.pattern;
    let mut out = format!(
        "Entry type: {}\nEntryID: {}\nMetadata node: node_meta_1 [ID: 1]\nStripe pattern details:\n+ Type: {}\n+ Chunksize: {}\n",
        if info.is_dir { "directory" } else { "file" },
        info.entry_id,
        pattern.kind.label(),
        if ctx.raw() {
            pattern.chunksize.to_string()
        } else {
            format_prefix(pattern.chunksize as f64, PrefixMode::Base1024, 0)
        }
    );
    if info.targets.is_empty() {
        out.push_str(&format!(
            "+ Number of storage targets: desired: {}\n",
            pattern.num_targets
        ));
    } else {
        out.push_str(&format!(
            "+ Number of storage targets: desired: {}; actual: {}\n",
            pattern.num_targets,
            info.targets.len()
        ));
    }
    if info.is_dir {
        out.push_str(&format!(
            "+ Storage Pool: {}  ({})\n",
            pattern.pool,
            pool_alias(ctx.fs, pattern.pool)
        ));
    } else {
        out.push_str("+ Storage targets:\n");
        for t in &info.targets {
            out.push_str(&format!(
                "+ {t} @ node_storage_{n} [ID: {n}]\n",
                n = common::target_node(*t)
            ));
        }
    }
    out
}

const ENTRY_COLUMNS: [&str; 10] = [
    "path",
    "entry_id",
    "type",
    "meta_node",
    "meta_mirror",
    "storage_pool",
    "stripe_pattern",
    "storage_targets",
    "storage_mirrors",
    "remote_targets",
];

fn entry_info(ctx: &Ctx<'_>, io: &mut ToolIo<'_>) -> Result<(), String> {
    if ctx.cli.args.is_empty() {
        return Err("missing <path> argument. Usage: info <path> [<path>] ...".into());
    }
    let retro_mode = ctx.cli.bool("retro");
    let mut rows = Vec::new();
    let mut texts = String::new();
    let mut failure = None;
    for path in &ctx.cli.args {
        let rel = match ctx.resolve(path, true) {
            Ok(rel) => rel,
            Err(e) => {
                failure = Some(e);
                break;
            }
        };
        match common::entry_info(ctx.fs, &rel) {
            Ok(info) => {
                if retro_mode {
                    texts.push_str(&retro(ctx, &info));
                    texts.push('\n');
                } else {
                    rows.push(entry_row(ctx, path, &info));
                }
            }
            Err(e) => {
                failure = Some(search_error(&rel, &e));
                break;
            }
        }
    }
    if retro_mode {
        io.out(&texts);
    } else {
        ctx.print(io, &ENTRY_COLUMNS, &rows);
    }
    failure.map_or(Ok(()), Err)
}

fn parse_u32_flag(cli: &CliArgs, name: &str) -> Result<Option<u32>, String> {
    match cli.value(name) {
        None => Ok(None),
        Some(v) => v.parse::<u32>().map(Some).map_err(|_| {
            format!("invalid argument \"{v}\" for \"--{name}\" flag: strconv.ParseUint: parsing \"{v}\": invalid syntax")
        }),
    }
}

fn entry_create_dir(ctx: &Ctx<'_>, io: &mut ToolIo<'_>) -> Result<(), String> {
    if ctx.cli.args.is_empty() {
        return Err("missing <path> argument. Usage: directory <path> [<path>] ...".into());
    }
    let mode = match ctx.cli.value("permissions") {
        None => 0o755,
        Some(v) => u32::from_str_radix(v, 8).map_err(|_| {
            format!("invalid argument \"{v}\" for \"--permissions\" flag: strconv.ParseInt: parsing \"{v}\": invalid syntax")
        })?,
    };
    let uid = parse_u32_flag(ctx.cli, "uid")?.unwrap_or_else(|| nix::unistd::geteuid().as_raw());
    let gid = parse_u32_flag(ctx.cli, "gid")?.unwrap_or_else(|| nix::unistd::getegid().as_raw());
    let mut rows = Vec::new();
    let mut any_errors = false;
    for path in &ctx.cli.args {
        let rel = ctx.resolve(path, false)?;
        if rel.is_empty() {
            return Err(format!("invalid path {path:?}"));
        }
        match common::create_dir(ctx.fs, &rel, mode, uid, gid) {
            Ok(info) => rows.push(vec![
                json!(path),
                json!("Success"),
                json!(info.entry_id),
                json!("directory"),
            ]),
            Err(EntryError::PathNotExists) => {
                let parent = rel.rsplit_once('/').map(|(p, _)| p).unwrap_or("");
                ctx.print(io, &["name", "status", "entry_id", "type"], &rows);
                return Err(search_error(parent, &EntryError::PathNotExists));
            }
            Err(e) => {
                any_errors = true;
                rows.push(vec![
                    json!(path),
                    json!(e.text()),
                    json!("n/a"),
                    json!("n/a"),
                ]);
            }
        }
    }
    ctx.print(io, &["name", "status", "entry_id", "type"], &rows);
    if any_errors {
        return Err(
            "unable to create one or more entries (see individual results for details)".into(),
        );
    }
    Ok(())
}

fn parse_pool(fs: &Filesystem, text: &str) -> Result<u16, String> {
    let numeric = text
        .strip_prefix("storage:")
        .or_else(|| text.strip_prefix("s:"))
        .unwrap_or(text);
    if let Ok(id) = numeric.parse::<u16>() {
        return fs
            .pool(id)
            .map(|p| p.id)
            .ok_or_else(|| format!("storage pool {text} not found"));
    }
    fs.record
        .pools
        .iter()
        .find(|p| p.alias == text)
        .map(|p| p.id)
        .ok_or_else(|| format!("storage pool {text} not found"))
}

fn entry_set(ctx: &Ctx<'_>, io: &mut ToolIo<'_>) -> Result<(), String> {
    if ctx.cli.args.is_empty() {
        return Err("missing <path> argument. Usage: set <path> [<path>] ...".into());
    }
    let chunksize = match ctx.cli.value("chunk-size") {
        None => None,
        Some(v) => {
            let flag_err =
                |msg: String| format!("invalid argument \"{v}\" for \"--chunk-size\" flag: {msg}");
            let size = parse_beegfs8_size(v).map_err(flag_err)?;
            if !(64 * 1024..=u64::from(u32::MAX)).contains(&size) {
                return Err(flag_err(format!(
                    "parsed chunksize ({size} bytes) is out of bounds (must be between {} bytes and {} bytes)",
                    64 * 1024,
                    u32::MAX
                )));
            }
            if size & (size - 1) != 0 {
                return Err(flag_err(format!("chunksize is not a power of 2: {size}")));
            }
            Some(size)
        }
    };
    let num_targets = parse_u32_flag(ctx.cli, "num-targets")?;
    let pool = ctx
        .cli
        .value("pool")
        .map(|p| parse_pool(ctx.fs, p))
        .transpose()?;
    let kind = match ctx.cli.value("pattern") {
        None => None,
        Some("raid0") => Some(PatternType::Raid0),
        Some("mirrored") => Some(PatternType::BuddyMirror),
        Some(v) => {
            return Err(format!(
                "invalid argument \"{v}\" for \"--pattern\" flag: unsupported stripe pattern (supported patterns: raid0, mirrored)"
            ));
        }
    };
    let update = PatternUpdate {
        chunksize,
        num_targets,
        pool,
        kind,
    };
    let mut summary = Vec::new();
    if let Some(c) = chunksize {
        summary.push(format!("Chunksize ({c})"));
    }
    if let Some(n) = num_targets {
        summary.push(format!("DefaultNumTargets ({n})"));
    }
    if let Some(p) = pool {
        summary.push(format!("Pool ({p})"));
    }
    if let Some(k) = kind {
        summary.push(format!("StripePattern ({})", k.label()));
    }
    let verbose = ctx.cli.bool("verbose");
    let mut rows = Vec::new();
    let mut processed = 0;
    let mut failure = None;
    for path in &ctx.cli.args {
        let rel = ctx.resolve(path, true)?;
        match common::set_pattern(ctx.fs, &rel, update) {
            Ok(_) => {
                processed += 1;
                rows.push(vec![
                    json!(path),
                    json!("Success"),
                    json!(summary.join(", ")),
                ]);
            }
            Err(e @ EntryError::PathNotExists) => {
                failure = Some(search_error(&rel, &e));
                break;
            }
            Err(e) => {
                processed += 1;
                rows.push(vec![json!(path), json!(e.text()), json!("None")]);
                failure = Some(format!("unable to update '{path}': {}", e.text()));
            }
        }
    }
    if verbose {
        ctx.print(io, &["path", "status", "configuration_updates"], &rows);
    }
    io.err(&format!(
        "Summary: processed {processed} entries | configuration updates: {}\n",
        summary.join(", ")
    ));
    failure.map_or(Ok(()), Err)
}

/// Parses `--space`/`--inode` values: `None` unchanged, `Some(0)` reset, `Some(u64::MAX)`
/// unlimited.
fn parse_limit(text: Option<&str>) -> Result<Option<u64>, String> {
    match text {
        None | Some("") => Ok(None),
        Some("unlimited") => Ok(Some(u64::MAX)),
        Some("reset") => Ok(Some(0)),
        Some(v) => {
            let value = parse_beegfs8_size(v)?;
            if value > i64::MAX as u64 {
                return Err(format!(
                    "the provided limit ({value}) is larger than the maximum allowed ({})",
                    i64::MAX
                ));
            }
            Ok(Some(value))
        }
    }
}

/// Parses `<id>` or `<min>-<max>` into an inclusive range.
pub fn parse_id_range(text: &str) -> Result<(u32, u32), String> {
    const FORMAT: &str = "invalid range, must be in the form `<min>-<max>` or `<value>`";
    let text = text.trim();
    if let Some((lo, hi)) = text.split_once('-') {
        let lo: u64 = lo.parse().map_err(|_| FORMAT.to_string())?;
        let hi: u64 = hi.parse().map_err(|_| FORMAT.to_string())?;
        if hi > u64::from(u32::MAX) {
            return Err(format!("maximum upper value is {}, got {hi}", u32::MAX));
        }
        if lo > hi {
            return Err(format!(
                "invalid range, the lower value ({lo}) is larger than the upper value ({hi})"
            ));
        }
        Ok((lo as u32, hi as u32))
    } else {
        let v: u64 = text.parse().map_err(|_| FORMAT.to_string())?;
        if v > u64::from(u32::MAX) {
            return Err(format!("maximum value is {}, got {v}", u32::MAX));
        }
        Ok((v as u32, v as u32))
    }
}

fn quota_set_limits(ctx: &Ctx<'_>) -> Result<(), String> {
    let space_text = ctx.cli.value("space");
    let inode_text = ctx.cli.value("inode");
    if space_text.is_none() && inode_text.is_none() {
        return Err("at least one of the flags in the group [space inode] is required".into());
    }
    let uids = ctx.cli.list("uid");
    let gids = ctx.cli.list("gid");
    if uids.is_empty() && gids.is_empty() {
        return Err("at least one of the flags in the group [uid gid] is required".into());
    }
    let [pool_text] = ctx.cli.args.as_slice() else {
        return Err(format!(
            "accepts 1 arg(s), received {}\nUsage: set-limits <pool> --help",
            ctx.cli.args.len()
        ));
    };
    let space = parse_limit(space_text)?;
    let inodes = parse_limit(inode_text)?;
    let pool = parse_pool(ctx.fs, pool_text)?;
    for (kind, list) in [(QuotaKind::User, uids), (QuotaKind::Group, gids)] {
        let mut ids = Vec::new();
        for item in list {
            let (lo, hi) = parse_id_range(&item)?;
            if u64::from(hi - lo) > 1_000_000 {
                return Err(format!("range {item} is too large for the simulator"));
            }
            ids.extend(lo..=hi);
        }
        if !ids.is_empty() {
            common::set_limits(ctx.fs, kind, &ids, pool, space, inodes)
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

fn format_used(value: u64, raw: bool, mode: PrefixMode, bytes: bool) -> String {
    if raw {
        value.to_string()
    } else {
        format!(
            "{}{}",
            format_prefix(value as f64, mode, 2),
            if bytes { "B" } else { "" }
        )
    }
}

fn format_limit(limit: u64, raw: bool, mode: PrefixMode, bytes: bool) -> String {
    if limit == 0 {
        return "∞".to_string();
    }
    let value = limit.min(i64::MAX as u64);
    if raw {
        value.to_string()
    } else if value == i64::MAX as u64 {
        "∞".to_string()
    } else {
        format_used(value, false, mode, bytes)
    }
}

/// Parses the `--uids`/`--gids` selection into explicit ids (`None`: every id with data).
fn id_selection(values: &[String], kind: QuotaKind) -> Result<Option<Vec<(u32, u32)>>, String> {
    match values {
        [] => Ok(Some(Vec::new())),
        [one] if one == "all" => Ok(None),
        [one] if one == "current" => {
            let id = match kind {
                QuotaKind::User => nix::unistd::getuid().as_raw(),
                QuotaKind::Group => nix::unistd::getgid().as_raw(),
            };
            Ok(Some(vec![(id, id)]))
        }
        many => many
            .iter()
            .map(|v| parse_id_range(v))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
    }
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

fn quota_list_usage(ctx: &Ctx<'_>, io: &mut ToolIo<'_>) -> Result<(), String> {
    let mut uids = ctx.cli.list("uids");
    let mut gids = ctx.cli.list("gids");
    if uids.is_empty() && gids.is_empty() {
        uids.push("current".into());
        gids.push("current".into());
    }
    let pools: Vec<u16> = match ctx.cli.value("pool") {
        Some(p) => vec![parse_pool(ctx.fs, p)?],
        None => ctx.fs.record.pools.iter().map(|p| p.id).collect(),
    };
    let exceeded = ctx.cli.bool("exceeded");
    let raw = ctx.raw();
    let mut rows = Vec::new();
    for (kind, selection, label) in [
        (
            QuotaKind::User,
            id_selection(&uids, QuotaKind::User)?,
            "user",
        ),
        (
            QuotaKind::Group,
            id_selection(&gids, QuotaKind::Group)?,
            "group",
        ),
    ] {
        if selection.as_ref().is_some_and(Vec::is_empty) {
            continue;
        }
        for pool in &pools {
            let usage = common::usage_by_id(ctx.fs, kind, *pool).map_err(|e| e.to_string())?;
            let limits = common::limits(ctx.fs, kind, *pool).map_err(|e| e.to_string())?;
            let mut ids: Vec<u32> = usage.keys().chain(limits.keys()).copied().collect();
            ids.sort_unstable();
            ids.dedup();
            for id in ids {
                if let Some(ranges) = &selection
                    && !ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&id))
                {
                    continue;
                }
                let used = usage.get(&id).copied().unwrap_or_default();
                let limit: Limit = limits.get(&id).copied().unwrap_or_default();
                let over = (!Limit::unlimited(limit.space) && used.bytes >= limit.space)
                    || (!Limit::unlimited(limit.inodes) && used.inodes >= limit.inodes);
                if exceeded && !over {
                    continue;
                }
                rows.push(vec![
                    json!(id_name(kind, id)),
                    json!(id),
                    json!(label),
                    json!(pool_alias(ctx.fs, *pool)),
                    json!(format!(
                        "{}/{}",
                        format_used(used.bytes, raw, PrefixMode::Iec, true),
                        format_limit(limit.space, raw, PrefixMode::Iec, true)
                    )),
                    json!(format!(
                        "{}/{}",
                        format_used(used.inodes, raw, PrefixMode::Si, false),
                        format_limit(limit.inodes, raw, PrefixMode::Si, false)
                    )),
                ]);
            }
        }
    }
    let found = !rows.is_empty();
    ctx.print(io, &["name", "id", "type", "pool", "space", "inode"], &rows);
    if found {
        io.err("INFO: Quota usage information is fetched every 30s from the server nodes, thus the displayed values might be slightly out of date.\n");
    } else {
        io.err("WARNING: No information found for the specified ID(s). Either these ID(s) do not exist, or the management is not configured to query/enforce their quotas.\n");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags_may_come_after_the_command() {
        let cli = parse(&args(&[
            "--mount=none",
            "entry",
            "create",
            "dir",
            "--permissions=755",
            "--uid=1000",
            "/k8s/vol",
            "--mgmtd-addr=10.0.0.5:8010",
            "--auth-disable",
            "--tls-disable",
        ]))
        .unwrap();
        assert_eq!(cli.command, "entry create directory");
        assert_eq!(cli.args, vec!["/k8s/vol"]);
        assert_eq!(cli.value("permissions"), Some("755"));
        assert!(cli.bool("auth-disable"));
        assert_eq!(cli.value("mgmtd-addr"), Some("10.0.0.5:8010"));
    }

    #[test]
    fn unknown_commands_and_flags_are_errors() {
        assert_eq!(
            parse(&args(&["entry", "bogus"])).unwrap_err(),
            "unknown command \"bogus\" for \"beegfs entry\""
        );
        assert_eq!(parse(&args(&["entry"])).unwrap().command, "");
        assert_eq!(
            parse(&args(&["bogus"])).unwrap_err(),
            "unknown command \"bogus\" for \"beegfs\""
        );
        assert_eq!(
            parse(&args(&["node", "list", "--space=1"])).unwrap_err(),
            "unknown flag: --space"
        );
        assert!(parse(&args(&["quota", "set-limits", "--space"])).is_err());
        assert!(parse(&args(&["--raw=maybe", "version"])).is_err());
    }

    #[test]
    fn slices_split_on_commas_and_repeat() {
        let cli = parse(&args(&[
            "quota",
            "set-limits",
            "--gid",
            "1,2-3",
            "--gid=9",
            "1",
            "--space",
            "1GiB",
        ]))
        .unwrap();
        assert_eq!(cli.list("gid"), vec!["1", "2-3", "9"]);
        assert_eq!(cli.args, vec!["1"]);
    }

    #[test]
    fn limits_and_ranges() {
        assert_eq!(parse_limit(Some("10GiB")), Ok(Some(10 << 30)));
        assert_eq!(parse_limit(Some("unlimited")), Ok(Some(u64::MAX)));
        assert_eq!(parse_limit(Some("reset")), Ok(Some(0)));
        assert_eq!(parse_limit(None), Ok(None));
        assert!(parse_limit(Some("10GB ")).is_err());
        assert_eq!(parse_id_range("2000-2005"), Ok((2000, 2005)));
        assert_eq!(parse_id_range("7"), Ok((7, 7)));
        assert!(parse_id_range("5-1").is_err());
        assert!(parse_id_range("x").is_err());
        assert_eq!(format_limit(0, true, PrefixMode::Iec, true), "∞");
        assert_eq!(format_limit(u64::MAX, false, PrefixMode::Iec, true), "∞");
        assert_eq!(
            format_limit(u64::MAX, true, PrefixMode::Iec, true),
            i64::MAX.to_string()
        );
        assert_eq!(
            format_limit(10 << 30, false, PrefixMode::Iec, true),
            "10.00GiB"
        );
        assert_eq!(format_used(4096, false, PrefixMode::Iec, true), "4.00KiB");
    }

    proptest! {
        #[test]
        fn ranges_round_trip(lo in any::<u32>(), span in 0u32..1000) {
            let hi = lo.saturating_add(span);
            prop_assert_eq!(parse_id_range(&format!("{lo}-{hi}")), Ok((lo, hi)));
            prop_assert_eq!(parse_id_range(&lo.to_string()), Ok((lo, lo)));
        }

        #[test]
        fn parser_never_panics(list in prop::collection::vec("-{0,2}[a-z=0-9:./-]{0,10}", 0..8)) {
            let _ = parse(&list);
        }
    }
}
