//! The BeeGFS command-line tools: command builders, output parsers, and [`Ctl`], which runs
//! them through the core's [`CommandRunner`] with a timeout and detects, once per
//! filesystem, which tool speaks to it.
//!
//! BeeGFS 7: `beegfs-ctl --cfgFile=<conf> ...` (the client configuration names the
//! management host and the connAuth file).
//!
//! BeeGFS 8: `beegfs --mgmtd-addr=<host>:<grpcPort> (--auth-file=F|--auth-disable)
//! (--tls-cert-file=F|--tls-disable) ...`, with `--mount=none` for entry commands so no
//! client mount is needed.
//!
//! Secrets are only ever named by file path on these command lines.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use csi_core::error::CommandFailure;
use csi_core::ports::{Command, CommandOutput, CommandRunner};
use csi_core::{Error, Result};
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;
use tracing::{debug, info};

use crate::params::StripePattern;
use crate::volume_id::VolumePath;

/// Which generation of BeeGFS tools a filesystem answers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BeegfsVersion {
    /// BeeGFS 7: `beegfs-ctl`.
    V7,
    /// BeeGFS 8: `beegfs`.
    V8,
}

impl std::fmt::Display for BeegfsVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BeegfsVersion::V7 => "7",
            BeegfsVersion::V8 => "8",
        })
    }
}

/// How to reach one filesystem with the tools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtlTarget {
    /// The management host.
    pub host: String,
    /// The BeeGFS 8 management gRPC port.
    pub grpc_port: u16,
    /// A `beegfs-client.conf` for `beegfs-ctl --cfgFile` (BeeGFS 7).
    pub client_conf: PathBuf,
    /// The connAuth secret file (0400), when the filesystem uses authentication.
    pub auth_file: Option<PathBuf>,
    /// The TLS certificate file, when the filesystem's management uses TLS.
    pub tls_cert_file: Option<PathBuf>,
}

impl CtlTarget {
    /// `host:port` for `--mgmtd-addr`, bracketing a bare IPv6 address.
    pub fn mgmtd_addr(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]:{}", self.host, self.grpc_port)
        } else {
            format!("{}:{}", self.host, self.grpc_port)
        }
    }
}

/// The tool programs and their timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtlTools {
    /// `beegfs-ctl`.
    pub beegfs_ctl: PathBuf,
    /// `beegfs`.
    pub beegfs: PathBuf,
    /// Timeout of every call.
    pub timeout: Duration,
}

/// One tool operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CtlOp {
    /// Lists the management node: succeeds when the tool can talk to the filesystem.
    ListManagement,
    /// Entry information of a path from the BeeGFS root.
    EntryInfo(VolumePath),
    /// Creates one directory (its parent must exist).
    CreateDir {
        /// The directory.
        path: VolumePath,
        /// Permission bits (only the low nine are passed; the caller sets special bits).
        mode: u32,
        /// Owner uid.
        uid: Option<u32>,
        /// Owner gid.
        gid: Option<u32>,
    },
    /// Sets the stripe pattern of a directory.
    SetPattern {
        /// The directory.
        path: VolumePath,
        /// The pattern (at least one field set).
        pattern: StripePattern,
    },
    /// Sets the group quota limits of `gid` in `pool` (`None`: unlimited).
    SetGroupQuota {
        /// The group.
        gid: u32,
        /// Space limit in bytes.
        bytes: Option<u64>,
        /// Inode limit.
        inodes: Option<u64>,
        /// Storage pool.
        pool: u16,
    },
    /// Removes the group quota limits of `gid` in `pool`.
    ResetGroupQuota {
        /// The group.
        gid: u32,
        /// Storage pool.
        pool: u16,
    },
    /// Reads usage and limits of group `gid` in `pool`.
    GetGroupQuota {
        /// The group.
        gid: u32,
        /// Storage pool.
        pool: u16,
    },
    /// Reads the default quota limits of `pool`.
    GetDefaultQuota {
        /// Storage pool.
        pool: u16,
    },
}

fn limit_text(limit: Option<u64>) -> String {
    limit.map_or_else(|| "unlimited".to_string(), |n| n.to_string())
}

/// Builds the command for `op` on `target` with the `version` tool.
pub fn build_command(
    version: BeegfsVersion,
    tools: &CtlTools,
    target: &CtlTarget,
    op: &CtlOp,
) -> Command {
    match version {
        BeegfsVersion::V7 => {
            let cmd = Command::new(&tools.beegfs_ctl, tools.timeout)
                .arg(format!("--cfgFile={}", target.client_conf.display()));
            match op {
                CtlOp::ListManagement => cmd.args(["--listnodes", "--nodetype=management"]),
                CtlOp::EntryInfo(path) => cmd
                    .args(["--unmounted", "--getentryinfo"])
                    .arg(path.as_str()),
                CtlOp::CreateDir {
                    path,
                    mode,
                    uid,
                    gid,
                } => {
                    let mut cmd = cmd
                        .args(["--unmounted", "--createdir"])
                        .arg(format!("--access={:03o}", mode & 0o777));
                    if let Some(uid) = uid {
                        cmd = cmd.arg(format!("--uid={uid}"));
                    }
                    if let Some(gid) = gid {
                        cmd = cmd.arg(format!("--gid={gid}"));
                    }
                    cmd.arg(path.as_str())
                }
                CtlOp::SetPattern { path, pattern } => {
                    let mut cmd = cmd.args(["--unmounted", "--setpattern"]);
                    if let Some(pool) = pattern.storage_pool {
                        cmd = cmd.arg(format!("--storagepoolid={pool}"));
                    }
                    if let Some(chunk) = &pattern.chunk_size {
                        cmd = cmd.arg(format!("--chunksize={chunk}"));
                    }
                    if let Some(n) = pattern.num_targets {
                        cmd = cmd.arg(format!("--numtargets={n}"));
                    }
                    cmd.arg(path.as_str())
                }
                CtlOp::SetGroupQuota {
                    gid,
                    bytes,
                    inodes,
                    pool,
                } => cmd
                    .args(["--setquota", "--gid"])
                    .arg(gid.to_string())
                    .arg(format!("--sizelimit={}", limit_text(*bytes)))
                    .arg(format!("--inodelimit={}", limit_text(*inodes)))
                    .arg(format!("--storagepoolid={pool}")),
                CtlOp::ResetGroupQuota { gid, pool } => cmd
                    .args(["--setquota", "--gid"])
                    .arg(gid.to_string())
                    .args(["--sizelimit=reset", "--inodelimit=reset"])
                    .arg(format!("--storagepoolid={pool}")),
                CtlOp::GetGroupQuota { gid, pool } => cmd
                    .args(["--getquota", "--gid"])
                    .arg(gid.to_string())
                    .arg("--csv")
                    .arg(format!("--storagepoolid={pool}")),
                CtlOp::GetDefaultQuota { pool } => cmd
                    .args(["--getquota", "--defaultlimits", "--csv"])
                    .arg(format!("--storagepoolid={pool}")),
            }
        }
        BeegfsVersion::V8 => {
            let mut cmd = Command::new(&tools.beegfs, tools.timeout)
                .arg(format!("--mgmtd-addr={}", target.mgmtd_addr()));
            cmd = match &target.auth_file {
                Some(f) => cmd.arg(format!("--auth-file={}", f.display())),
                None => cmd.arg("--auth-disable"),
            };
            cmd = match &target.tls_cert_file {
                Some(f) => cmd.arg(format!("--tls-cert-file={}", f.display())),
                None => cmd.arg("--tls-disable"),
            };
            match op {
                CtlOp::ListManagement => cmd.args(["node", "list"]),
                CtlOp::EntryInfo(path) => cmd
                    .args(["--mount=none", "entry", "info"])
                    .arg(path.as_str()),
                CtlOp::CreateDir {
                    path,
                    mode,
                    uid,
                    gid,
                } => {
                    let mut cmd = cmd
                        .args(["--mount=none", "entry", "create", "directory"])
                        .arg(format!("--permissions={:03o}", mode & 0o777));
                    if let Some(uid) = uid {
                        cmd = cmd.arg(format!("--uid={uid}"));
                    }
                    if let Some(gid) = gid {
                        cmd = cmd.arg(format!("--gid={gid}"));
                    }
                    cmd.arg(path.as_str())
                }
                CtlOp::SetPattern { path, pattern } => {
                    let mut cmd = cmd.args(["--mount=none", "entry", "set"]);
                    if let Some(pool) = pattern.storage_pool {
                        cmd = cmd.arg(format!("--pool={pool}"));
                    }
                    if let Some(chunk) = &pattern.chunk_size {
                        // The BeeGFS 8 tool reads `512k` as SI; bytes are unambiguous.
                        let bytes = crate::params::parse_chunk_size(chunk)
                            .map_or_else(|| chunk.clone(), |b| b.to_string());
                        cmd = cmd.arg(format!("--chunk-size={bytes}"));
                    }
                    if let Some(n) = pattern.num_targets {
                        cmd = cmd.arg(format!("--num-targets={n}"));
                    }
                    cmd.arg(path.as_str())
                }
                CtlOp::SetGroupQuota {
                    gid,
                    bytes,
                    inodes,
                    pool,
                } => cmd
                    .args(["quota", "set-limits"])
                    .arg(format!("--gid={gid}"))
                    .arg(format!("--space={}", limit_text(*bytes)))
                    .arg(format!("--inode={}", limit_text(*inodes)))
                    .arg(pool.to_string()),
                CtlOp::ResetGroupQuota { gid, pool } => cmd
                    .args(["quota", "set-limits"])
                    .arg(format!("--gid={gid}"))
                    .args(["--space=reset", "--inode=reset"])
                    .arg(pool.to_string()),
                CtlOp::GetGroupQuota { gid, pool } => cmd
                    .args(["--raw", "quota", "list-usage"])
                    .arg(format!("--gids={gid}"))
                    .arg(format!("--pool={pool}")),
                CtlOp::GetDefaultQuota { .. } => cmd.args(["--raw", "quota", "list-defaults"]),
            }
        }
    }
}

/// What a failed tool call says went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtlFailure {
    /// The entry does not exist.
    NotFound,
    /// The entry exists already.
    Exists,
    /// Authentication is misconfigured (no or wrong connAuth, TLS problem).
    Auth,
    /// The filesystem could not be reached.
    Unreachable,
    /// Anything else.
    Other,
}

/// Classifies a failed call by the tools' messages (both streams: BeeGFS 8 reports some
/// per-entry results on standard output).
pub fn classify(output: &CommandOutput) -> CtlFailure {
    let text = format!("{}\n{}", output.stderr, output.stdout).to_ascii_lowercase();
    if text.contains("does not exist") || text.contains("no such file or directory") {
        CtlFailure::NotFound
    } else if text.contains("exists already") || text.contains("already exists") {
        CtlFailure::Exists
    } else if text.contains("connauthfile")
        || text.contains("auth file")
        || text.contains("unauthenticated")
        || text.contains("authentication failed")
        || text.contains("handshake failed")
        || text.contains("tls certificate")
        || text.contains("x509")
    {
        CtlFailure::Auth
    } else if text.contains("communication with server failed")
        || text.contains("connection refused")
        || text.contains("unable to connect")
        || text.contains("unavailable")
        || text.contains("no route to host")
        || text.contains("management host undefined")
    {
        CtlFailure::Unreachable
    } else {
        CtlFailure::Other
    }
}

/// Turns a failed call into the core error its class stands for.
pub fn failure_error(what: &str, program: &str, output: CommandOutput) -> Error {
    let class = classify(&output);
    let err = match output.check(program) {
        Ok(_) => return Error::Internal(format!("{what}: {program} succeeded")),
        Err(e) => e,
    };
    match class {
        CtlFailure::NotFound => Error::NotFound(format!("{what}: {err}")),
        CtlFailure::Exists => Error::AlreadyExists(format!("{what}: {err}")),
        CtlFailure::Auth => Error::FailedPrecondition(format!(
            "{what}: authentication with the filesystem failed (check the connAuth and TLS secrets): {err}"
        )),
        CtlFailure::Unreachable => Error::Unavailable(format!("{what}: {err}")),
        CtlFailure::Other => err,
    }
}

/// Entry information, as far as the driver needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryInfo {
    /// `directory`, `file`, `symlink`...
    pub entry_type: String,
    /// The BeeGFS entry id.
    pub entry_id: Option<String>,
    /// The storage pool (directories).
    pub storage_pool: Option<u16>,
    /// Chunk size in bytes.
    pub chunk_size: Option<u64>,
    /// Desired number of targets.
    pub num_targets: Option<u32>,
}

impl EntryInfo {
    /// Whether the entry is a directory.
    pub fn is_dir(&self) -> bool {
        self.entry_type.eq_ignore_ascii_case("directory")
    }
}

/// Parses a size as the tools print it: `524288`, `512K`, `512Ki`, `1.50 GiB`, `0 Byte`.
/// Units are binary, as BeeGFS uses them.
pub fn parse_human_bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    if number.is_empty() || number.starts_with('.') {
        return None;
    }
    let unit = unit.trim();
    let exp: u32 = match unit.chars().next().map(|c| c.to_ascii_uppercase()) {
        None | Some('B') => 0,
        Some('K') => 1,
        Some('M') => 2,
        Some('G') => 3,
        Some('T') => 4,
        Some('P') => 5,
        Some('E') => 6,
        Some(_) => return None,
    };
    let rest: String = unit
        .chars()
        .skip(1)
        .collect::<String>()
        .to_ascii_lowercase();
    let rest_ok = if exp == 0 {
        rest.is_empty() || rest == "yte" || rest == "ytes"
    } else {
        matches!(rest.as_str(), "" | "i" | "ib" | "b")
    };
    if !rest_ok {
        return None;
    }
    let factor = 1024u128.checked_pow(exp)?;
    if let Ok(whole) = number.parse::<u128>() {
        return u64::try_from(whole.checked_mul(factor)?).ok();
    }
    let value: f64 = number.parse().ok()?;
    let bytes = (value * factor as f64).round();
    (bytes.is_finite() && bytes >= 0.0 && bytes <= u64::MAX as f64).then_some(bytes as u64)
}

/// Column start offsets (in characters) of a table header, with their names.
fn header_columns(header: &str) -> Vec<(usize, String)> {
    let chars: Vec<char> = header.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != ' ' && (i == 0 || chars[i - 1] == ' ') {
            let start = i;
            while i < chars.len() && chars[i] != ' ' {
                i += 1;
            }
            out.push((
                start,
                chars[start..i]
                    .iter()
                    .collect::<String>()
                    .to_ascii_uppercase(),
            ));
        } else {
            i += 1;
        }
    }
    out
}

/// Cells of `row` under the columns of `header_columns`.
fn row_cells(columns: &[(usize, String)], row: &str) -> HashMap<String, String> {
    let chars: Vec<char> = row.chars().collect();
    let mut out = HashMap::new();
    for (i, (start, name)) in columns.iter().enumerate() {
        let end = columns.get(i + 1).map_or(chars.len(), |(s, _)| *s);
        let cell: String = chars
            .get(*start..end.min(chars.len()))
            .map(|c| c.iter().collect())
            .unwrap_or_default();
        out.insert(name.clone(), cell.trim().to_string());
    }
    out
}

/// The number in parentheses at the end of `Default (1)`; or a leading number (`1 (Default)`).
fn pool_number(text: &str) -> Option<u16> {
    let text = text.trim();
    if let (Some(open), Some(close)) = (text.rfind('('), text.rfind(')'))
        && open < close
        && let Ok(n) = text[open + 1..close].trim().parse::<u16>()
    {
        return Some(n);
    }
    text.split_whitespace().next()?.parse().ok()
}

/// Parses entry information: the vertical format of `beegfs-ctl --getentryinfo` (and
/// `beegfs entry info --retro`), or the table of `beegfs entry info`. `None` when the output
/// holds no entry.
pub fn parse_entry_info(output: &str) -> Option<EntryInfo> {
    let mut info = EntryInfo::default();
    let mut vertical = false;
    for line in output.lines() {
        let line = line.trim();
        let line = line.strip_prefix("+ ").unwrap_or(line);
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "Entry type" => {
                info.entry_type = value.to_string();
                vertical = true;
            }
            "EntryID" => info.entry_id = Some(value.to_string()),
            "Chunksize" => info.chunk_size = parse_human_bytes(value),
            "Number of storage targets" => {
                info.num_targets = value
                    .split(';')
                    .find_map(|part| part.trim().strip_prefix("desired:"))
                    .and_then(|n| n.trim().parse().ok());
            }
            "Storage Pool" => info.storage_pool = pool_number(value),
            _ => {}
        }
    }
    if vertical {
        return (!info.entry_type.is_empty()).then_some(info);
    }
    let mut lines = output.lines().filter(|l| !l.trim().is_empty());
    let header = lines.find(|l| {
        let up = l.to_ascii_uppercase();
        up.contains("ENTRY_ID") && up.contains("TYPE")
    })?;
    let columns = header_columns(header);
    let row = lines.next()?;
    let cells = row_cells(&columns, row);
    let entry_type = cells.get("TYPE")?.clone();
    if entry_type.is_empty() {
        return None;
    }
    let mut info = EntryInfo {
        entry_type,
        entry_id: cells.get("ENTRY_ID").cloned().filter(|s| !s.is_empty()),
        storage_pool: cells.get("STORAGE_POOL").and_then(|s| pool_number(s)),
        ..EntryInfo::default()
    };
    // STRIPE_PATTERN: `RAID0 (4x512Ki)` or, raw, `RAID0 (4x524288)`.
    if let Some(pattern) = cells.get("STRIPE_PATTERN")
        && let (Some(open), Some(close)) = (pattern.find('('), pattern.rfind(')'))
        && open < close
        && let Some((n, size)) = pattern[open + 1..close].split_once('x')
    {
        info.num_targets = n.trim().parse().ok();
        info.chunk_size = parse_human_bytes(size);
    }
    Some(info)
}

/// Usage and limits of one quota id.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaRow {
    /// Bytes used.
    pub bytes_used: u64,
    /// Byte limit; `None`: unlimited.
    pub bytes_limit: Option<u64>,
    /// Inodes (chunk files) used.
    pub inodes_used: u64,
    /// Inode limit; `None`: unlimited.
    pub inodes_limit: Option<u64>,
}

/// BeeGFS 7's default group limits (bytes, inodes; `None`: unlimited) from
/// `--getquota --defaultlimits --csv`: a header line naming the user and group size and
/// chunk-file limits, then one line of values.
pub fn parse_default_group_limits_v7(output: &str) -> Option<(Option<u64>, Option<u64>)> {
    let mut lines = output.lines().map(str::trim).filter(|l| !l.is_empty());
    let header: Vec<String> = lines
        .find(|l| l.contains("group size limit"))?
        .split(',')
        .map(|c| c.trim().to_ascii_lowercase())
        .collect();
    let values: Vec<&str> = lines.next()?.split(',').collect();
    if values.len() != header.len() {
        return None;
    }
    let cell = |name: &str| {
        let i = header.iter().position(|h| h.starts_with(name))?;
        limit_cell(values[i])
    };
    Some((cell("group size")?, cell("group chunk files")?))
}

/// A limit cell: `unlimited`, `∞`, empty, `-`, `?` and the tools' "no limit" values (0, and
/// from `i64::MAX` up) mean no limit.
fn limit_cell(text: &str) -> Option<Option<u64>> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("unlimited") || t.is_empty() || t == "-" || t == "?" || t == "∞" {
        return Some(None);
    }
    let value = parse_human_bytes(t)?;
    Some((value != 0 && value < i64::MAX as u64).then_some(value))
}

/// A usage cell: `-` and `?` (unknown) count as 0; `5+` (some targets unsupported) as 5.
fn used_cell(text: &str) -> Option<u64> {
    let t = text.trim().trim_end_matches('+');
    if t.is_empty() || t == "-" || t == "?" {
        return Some(0);
    }
    parse_human_bytes(t)
}

fn add_row(total: &mut Option<QuotaRow>, row: QuotaRow) {
    match total {
        None => *total = Some(row),
        Some(t) => {
            t.bytes_used = t.bytes_used.saturating_add(row.bytes_used);
            t.inodes_used = t.inodes_used.saturating_add(row.inodes_used);
        }
    }
}

/// Parses `beegfs-ctl --getquota` output, CSV (`name,id,size,hard,files,hard`) or table
/// (`name|id||used|hard||used|hard`), for id `id`; rows of several pools are summed. `None`
/// when no row names `id`.
pub fn parse_getquota_v7(output: &str, id: u32) -> Option<QuotaRow> {
    let mut total = None;
    for line in output.lines() {
        let line = line.trim();
        let row = if line.contains("||") {
            let groups: Vec<&str> = line.split("||").collect();
            if groups.len() != 3 {
                continue;
            }
            let first: Vec<&str> = groups[0].split('|').collect();
            let size: Vec<&str> = groups[1].split('|').collect();
            let files: Vec<&str> = groups[2].split('|').collect();
            if first.len() != 2 || size.len() != 2 || files.len() != 2 {
                continue;
            }
            Some((first[1], size[0], size[1], files[0], files[1]))
        } else {
            let cells: Vec<&str> = line.split(',').collect();
            (cells.len() == 6).then(|| (cells[1], cells[2], cells[3], cells[4], cells[5]))
        };
        let Some((row_id, used, hard, files, files_hard)) = row else {
            continue;
        };
        if row_id.trim().parse::<u32>().ok() != Some(id) {
            continue;
        }
        let parsed = (|| {
            Some(QuotaRow {
                bytes_used: used_cell(used)?,
                bytes_limit: limit_cell(hard)?,
                inodes_used: used_cell(files)?,
                inodes_limit: limit_cell(files_hard)?,
            })
        })();
        if let Some(row) = parsed {
            add_row(&mut total, row);
        }
    }
    total
}

/// Parses `beegfs quota list-usage` output (table with `NAME ID TYPE POOL SPACE INODE`,
/// `SPACE` and `INODE` as `used/limit`) for group `id`. `None` when no row names it (the tool
/// then only warns that nothing was found).
pub fn parse_quota_usage_v8(output: &str, id: u32) -> Option<QuotaRow> {
    let mut lines = output.lines().filter(|l| !l.trim().is_empty());
    let header = lines.find(|l| {
        let up = l.to_ascii_uppercase();
        up.contains("SPACE") && up.contains("INODE") && up.contains("ID")
    })?;
    let columns = header_columns(header);
    let mut total = None;
    for line in lines {
        let cells = row_cells(&columns, line);
        if cells.get("ID").and_then(|s| s.parse::<u32>().ok()) != Some(id) {
            continue;
        }
        if let Some(kind) = cells.get("TYPE")
            && !kind.is_empty()
            && !kind.eq_ignore_ascii_case("group")
        {
            continue;
        }
        let split = |cell: Option<&String>| -> Option<(u64, Option<u64>)> {
            let cell = cell?;
            let (used, limit) = cell.split_once('/')?;
            Some((used_cell(used)?, limit_cell(limit)?))
        };
        let (Some((bytes_used, bytes_limit)), Some((inodes_used, inodes_limit))) =
            (split(cells.get("SPACE")), split(cells.get("INODE")))
        else {
            continue;
        };
        add_row(
            &mut total,
            QuotaRow {
                bytes_used,
                bytes_limit,
                inodes_used,
                inodes_limit,
            },
        );
    }
    total
}

/// Runs the tools for every filesystem, remembering which version each one speaks.
pub struct Ctl {
    runner: Arc<dyn CommandRunner>,
    tools: CtlTools,
    versions: Mutex<HashMap<String, Arc<OnceCell<BeegfsVersion>>>>,
}

impl std::fmt::Debug for Ctl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctl")
            .field("tools", &self.tools)
            .finish_non_exhaustive()
    }
}

impl Ctl {
    /// Tools run through `runner`.
    pub fn new(runner: Arc<dyn CommandRunner>, tools: CtlTools) -> Self {
        Self {
            runner,
            tools,
            versions: Mutex::new(HashMap::new()),
        }
    }

    /// The tools.
    pub fn tools(&self) -> &CtlTools {
        &self.tools
    }

    /// The version `target` speaks: detected on first use (BeeGFS 8 `node list`, then
    /// BeeGFS 7 `--listnodes`) and cached for the life of the process. A failed detection is
    /// not cached.
    pub async fn version(&self, target: &CtlTarget) -> Result<BeegfsVersion> {
        let cell = self
            .versions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(target.host.clone())
            .or_default()
            .clone();
        cell.get_or_try_init(|| self.detect(target)).await.copied()
    }

    /// The cached version of `host`, if detected.
    pub fn cached_version(&self, host: &str) -> Option<BeegfsVersion> {
        self.versions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(host)
            .and_then(|c| c.get().copied())
    }

    async fn detect(&self, target: &CtlTarget) -> Result<BeegfsVersion> {
        let mut problems = Vec::new();
        for version in [BeegfsVersion::V8, BeegfsVersion::V7] {
            let cmd = build_command(version, &self.tools, target, &CtlOp::ListManagement);
            match self.runner.run(&cmd).await {
                Ok(out) if out.success() => {
                    info!(host = %target.host, version = %version, "BeeGFS version detected");
                    return Ok(version);
                }
                Ok(out) => {
                    let class = classify(&out);
                    let err = out.check(&cmd.program.display().to_string()).err();
                    debug!(host = %target.host, version = %version, ?class, "version probe failed");
                    if class == CtlFailure::Auth {
                        return Err(Error::FailedPrecondition(format!(
                            "BeeGFS {version} tool cannot authenticate with {}: {}",
                            target.host,
                            err.map(|e| e.to_string()).unwrap_or_default()
                        )));
                    }
                    problems.push(format!(
                        "BeeGFS {version}: {}",
                        err.map(|e| e.to_string()).unwrap_or_default()
                    ));
                }
                Err(e) => problems.push(format!("BeeGFS {version}: {e}")),
            }
        }
        Err(Error::Unavailable(format!(
            "cannot tell whether {} runs BeeGFS 7 or 8 (check the management address and that beegfs-ctl or beegfs is installed): {}",
            target.host,
            problems.join("; ")
        )))
    }

    /// Runs `op` on `target` with the right tool; the output is returned whatever the exit
    /// status (spawn failures and timeouts are errors).
    pub async fn run(
        &self,
        target: &CtlTarget,
        op: &CtlOp,
    ) -> Result<(BeegfsVersion, Command, CommandOutput)> {
        let version = self.version(target).await?;
        let cmd = build_command(version, &self.tools, target, op);
        debug!(command = %cmd.display(), "running BeeGFS tool");
        let out = self.runner.run(&cmd).await.map_err(|e| match e {
            Error::Command {
                program,
                failure: CommandFailure::Spawn(reason),
                ..
            } => Error::FailedPrecondition(format!(
                "the BeeGFS {version} tool {program} cannot be started: {reason}"
            )),
            other => other,
        })?;
        Ok((version, cmd, out))
    }

    async fn run_checked(
        &self,
        target: &CtlTarget,
        op: &CtlOp,
        what: &str,
    ) -> Result<(BeegfsVersion, CommandOutput)> {
        let (version, cmd, out) = self.run(target, op).await?;
        if out.success() {
            return Ok((version, out));
        }
        Err(failure_error(what, &cmd.program.display().to_string(), out))
    }

    /// Entry information of `path`; `None` when it does not exist.
    pub async fn entry_info(
        &self,
        target: &CtlTarget,
        path: &VolumePath,
    ) -> Result<Option<EntryInfo>> {
        let what = format!("entry info of {path} on {}", target.host);
        match self
            .run_checked(target, &CtlOp::EntryInfo(path.clone()), &what)
            .await
        {
            Ok((_, out)) => parse_entry_info(&out.stdout).map(Some).ok_or_else(|| {
                Error::Internal(format!("{what}: unexpected output: {}", out.stdout.trim()))
            }),
            Err(e) if e.code() == csi_core::ErrorCode::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates `path` and its missing ancestors, top down. Ancestors get mode 0755 and root
    /// ownership; `path` itself the given mode and owner. Existing directories are fine.
    /// The first `known` ancestors (seen through a client mount) are taken as existing,
    /// which saves a tool run each; should a create below them fail as a missing parent
    /// does (not found, or a message the driver does not know), the whole chain is created
    /// again from the top, in case one went away since it was seen.
    pub async fn create_dir_all(
        &self,
        target: &CtlTarget,
        path: &VolumePath,
        mode: u32,
        uid: Option<u32>,
        gid: Option<u32>,
        known: usize,
    ) -> Result<()> {
        let ancestors = path.ancestors_top_down();
        // `path` itself is always created, seen or not: it is the directory a new volume
        // needs, and its create sets the volume's mode and owner.
        let skip = known.min(ancestors.len().saturating_sub(1));
        let below_known = self
            .create_dirs(target, &ancestors[skip..], path, mode, uid, gid)
            .await;
        match below_known {
            Err(e)
                if skip > 0
                    && matches!(
                        e.code(),
                        csi_core::ErrorCode::NotFound | csi_core::ErrorCode::Internal
                    ) =>
            {
                debug!(path = %path, error = %e, "creating below directories seen through the mount failed; creating every ancestor");
                self.create_dirs(target, &ancestors, path, mode, uid, gid)
                    .await
            }
            result => result,
        }
    }

    /// Creates each of `dirs` in order (`path` with the given mode and owner, the others
    /// 0755 and root's); existing ones are fine.
    async fn create_dirs(
        &self,
        target: &CtlTarget,
        dirs: &[VolumePath],
        path: &VolumePath,
        mode: u32,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> Result<()> {
        for dir in dirs {
            let last = dir == path;
            let op = CtlOp::CreateDir {
                path: dir.clone(),
                mode: if last { mode } else { 0o755 },
                uid: if last { uid } else { None },
                gid: if last { gid } else { None },
            };
            let what = format!("create directory {dir} on {}", target.host);
            match self.run_checked(target, &op, &what).await {
                Ok(_) => {}
                Err(e) if e.code() == csi_core::ErrorCode::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Sets the stripe pattern of `path` (nothing to do when none is set).
    pub async fn set_pattern(
        &self,
        target: &CtlTarget,
        path: &VolumePath,
        pattern: &StripePattern,
    ) -> Result<()> {
        if !pattern.is_set() {
            return Ok(());
        }
        let op = CtlOp::SetPattern {
            path: path.clone(),
            pattern: pattern.clone(),
        };
        self.run_checked(
            target,
            &op,
            &format!("set stripe pattern of {path} on {}", target.host),
        )
        .await
        .map(|_| ())
    }

    /// Usage and limits of group `gid` in `pool`; zero usage and no limits when the tool
    /// lists nothing for it.
    pub async fn group_quota(&self, target: &CtlTarget, gid: u32, pool: u16) -> Result<QuotaRow> {
        let what = format!("quota of group {gid} on {}", target.host);
        let (version, out) = self
            .run_checked(target, &CtlOp::GetGroupQuota { gid, pool }, &what)
            .await?;
        let parsed = match version {
            BeegfsVersion::V7 => parse_getquota_v7(&out.stdout, gid),
            BeegfsVersion::V8 => parse_quota_usage_v8(&out.stdout, gid),
        };
        Ok(parsed.unwrap_or_default())
    }

    /// The limits `--getquota` shows BeeGFS 7 groups without limits of their own in `pool`
    /// (bytes, inodes; `None`: unlimited); `None` on BeeGFS 8, whose `quota list-usage`
    /// lists only groups with usage, so that an unused group never shows a default.
    pub async fn default_group_limits(
        &self,
        target: &CtlTarget,
        pool: u16,
    ) -> Result<Option<(Option<u64>, Option<u64>)>> {
        if self.version(target).await? == BeegfsVersion::V8 {
            return Ok(None);
        }
        let what = format!("default quota limits on {}", target.host);
        let (_, out) = self
            .run_checked(target, &CtlOp::GetDefaultQuota { pool }, &what)
            .await?;
        parse_default_group_limits_v7(&out.stdout)
            .map(Some)
            .ok_or_else(|| {
                Error::Internal(format!("{what}: unexpected output: {}", out.stdout.trim()))
            })
    }

    /// Sets the limits of group `gid` in `pool`.
    pub async fn set_group_quota(
        &self,
        target: &CtlTarget,
        gid: u32,
        bytes: Option<u64>,
        inodes: Option<u64>,
        pool: u16,
    ) -> Result<()> {
        let op = CtlOp::SetGroupQuota {
            gid,
            bytes,
            inodes,
            pool,
        };
        self.run_checked(
            target,
            &op,
            &format!("set quota of group {gid} on {}", target.host),
        )
        .await
        .map(|_| ())
    }

    /// Removes the limits of group `gid` in `pool`.
    pub async fn reset_group_quota(&self, target: &CtlTarget, gid: u32, pool: u16) -> Result<()> {
        let op = CtlOp::ResetGroupQuota { gid, pool };
        self.run_checked(
            target,
            &op,
            &format!("reset quota of group {gid} on {}", target.host),
        )
        .await
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use csi_core::ErrorCode;
    use csi_core::ports::MockCommandRunner;
    use proptest::prelude::*;

    fn tools() -> CtlTools {
        CtlTools {
            beegfs_ctl: "/opt/beegfs-ctl".into(),
            beegfs: "/opt/beegfs".into(),
            timeout: Duration::from_secs(7),
        }
    }

    fn target(auth: bool, tls: bool) -> CtlTarget {
        CtlTarget {
            host: "10.0.0.5".into(),
            grpc_port: 8010,
            client_conf: "/state/fs/beegfs-client.conf".into(),
            auth_file: auth.then(|| "/state/fs/connAuthFile".into()),
            tls_cert_file: tls.then(|| "/state/fs/tls-cert.pem".into()),
        }
    }

    fn args(cmd: &Command) -> Vec<String> {
        cmd.args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    fn path(p: &str) -> VolumePath {
        VolumePath::clean("p", p).unwrap()
    }

    #[test]
    fn beegfs7_commands_use_the_client_conf() {
        let t = target(true, false);
        let cases: Vec<(CtlOp, Vec<&str>)> = vec![
            (
                CtlOp::ListManagement,
                vec!["--listnodes", "--nodetype=management"],
            ),
            (
                CtlOp::EntryInfo(path("/k8s/v")),
                vec!["--unmounted", "--getentryinfo", "/k8s/v"],
            ),
            (
                CtlOp::CreateDir {
                    path: path("/k8s/v"),
                    mode: 0o2775,
                    uid: Some(1000),
                    gid: Some(2000),
                },
                vec![
                    "--unmounted",
                    "--createdir",
                    "--access=775",
                    "--uid=1000",
                    "--gid=2000",
                    "/k8s/v",
                ],
            ),
            (
                CtlOp::SetPattern {
                    path: path("/k8s/v"),
                    pattern: StripePattern {
                        storage_pool: Some(2),
                        chunk_size: Some("1m".into()),
                        num_targets: Some(4),
                    },
                },
                vec![
                    "--unmounted",
                    "--setpattern",
                    "--storagepoolid=2",
                    "--chunksize=1m",
                    "--numtargets=4",
                    "/k8s/v",
                ],
            ),
            (
                CtlOp::SetGroupQuota {
                    gid: 2001,
                    bytes: Some(1 << 30),
                    inodes: None,
                    pool: 1,
                },
                vec![
                    "--setquota",
                    "--gid",
                    "2001",
                    "--sizelimit=1073741824",
                    "--inodelimit=unlimited",
                    "--storagepoolid=1",
                ],
            ),
            (
                CtlOp::ResetGroupQuota { gid: 2001, pool: 1 },
                vec![
                    "--setquota",
                    "--gid",
                    "2001",
                    "--sizelimit=reset",
                    "--inodelimit=reset",
                    "--storagepoolid=1",
                ],
            ),
            (
                CtlOp::GetGroupQuota { gid: 2001, pool: 3 },
                vec!["--getquota", "--gid", "2001", "--csv", "--storagepoolid=3"],
            ),
        ];
        for (op, expected) in cases {
            let cmd = build_command(BeegfsVersion::V7, &tools(), &t, &op);
            assert_eq!(cmd.program, PathBuf::from("/opt/beegfs-ctl"));
            assert_eq!(cmd.timeout, Duration::from_secs(7));
            let mut want = vec!["--cfgFile=/state/fs/beegfs-client.conf".to_string()];
            want.extend(expected.iter().map(|s| s.to_string()));
            assert_eq!(args(&cmd), want, "{op:?}");
        }
    }

    #[test]
    fn beegfs8_commands_carry_address_auth_and_tls() {
        let cmd = build_command(
            BeegfsVersion::V8,
            &tools(),
            &target(false, false),
            &CtlOp::ListManagement,
        );
        assert_eq!(cmd.program, PathBuf::from("/opt/beegfs"));
        assert_eq!(
            args(&cmd),
            [
                "--mgmtd-addr=10.0.0.5:8010",
                "--auth-disable",
                "--tls-disable",
                "node",
                "list"
            ]
        );
        let t = target(true, true);
        let cases: Vec<(CtlOp, Vec<&str>)> = vec![
            (
                CtlOp::EntryInfo(path("/k8s/v")),
                vec!["--mount=none", "entry", "info", "/k8s/v"],
            ),
            (
                CtlOp::CreateDir {
                    path: path("/k8s/v"),
                    mode: 0o755,
                    uid: None,
                    gid: Some(7),
                },
                vec![
                    "--mount=none",
                    "entry",
                    "create",
                    "directory",
                    "--permissions=755",
                    "--gid=7",
                    "/k8s/v",
                ],
            ),
            (
                CtlOp::SetPattern {
                    path: path("/k8s/v"),
                    pattern: StripePattern {
                        storage_pool: None,
                        chunk_size: Some("512k".into()),
                        num_targets: None,
                    },
                },
                vec![
                    "--mount=none",
                    "entry",
                    "set",
                    "--chunk-size=524288",
                    "/k8s/v",
                ],
            ),
            (
                CtlOp::SetGroupQuota {
                    gid: 9,
                    bytes: Some(10),
                    inodes: Some(20),
                    pool: 1,
                },
                vec![
                    "quota",
                    "set-limits",
                    "--gid=9",
                    "--space=10",
                    "--inode=20",
                    "1",
                ],
            ),
            (
                CtlOp::ResetGroupQuota { gid: 9, pool: 2 },
                vec![
                    "quota",
                    "set-limits",
                    "--gid=9",
                    "--space=reset",
                    "--inode=reset",
                    "2",
                ],
            ),
            (
                CtlOp::GetGroupQuota { gid: 9, pool: 1 },
                vec!["--raw", "quota", "list-usage", "--gids=9", "--pool=1"],
            ),
        ];
        for (op, expected) in cases {
            let cmd = build_command(BeegfsVersion::V8, &tools(), &t, &op);
            let mut want = vec![
                "--mgmtd-addr=10.0.0.5:8010".to_string(),
                "--auth-file=/state/fs/connAuthFile".to_string(),
                "--tls-cert-file=/state/fs/tls-cert.pem".to_string(),
            ];
            want.extend(expected.iter().map(|s| s.to_string()));
            assert_eq!(args(&cmd), want, "{op:?}");
        }
        let v6 = CtlTarget {
            host: "fd00::5".into(),
            ..target(false, false)
        };
        assert_eq!(v6.mgmtd_addr(), "[fd00::5]:8010");
    }

    const V7_ENTRY: &str = "Entry type: directory\nEntryID: 5-6418D3E1-1\nMetadata node: meta01 [ID: 1]\nStripe pattern details:\n+ Type: RAID0\n+ Chunksize: 512K\n+ Number of storage targets: desired: 4\n+ Storage Pool: 2 (fast)\n";
    const V8_RETRO: &str = "Entry type: directory\nEntryID: root\nMetadata node: meta_01 [ID: 1]\nStripe pattern details:\n+ Type: RAID0\n+ Chunksize: 1Mi\n+ Number of storage targets: desired: 2\n+ Storage Pool: 1  (Default)\n";
    const V8_TABLE: &str = "PATH     ENTRY_ID       TYPE       META_NODE  META_MIRROR   STORAGE_POOL  STRIPE_PATTERN   STORAGE_TARGETS  STORAGE_MIRRORS  REMOTE_TARGETS\n/k8s/v   3-67A1B2C3-1   directory  meta:1     (unmirrored)  Default (1)   RAID0 (4x512Ki)  (directory)      (directory)      (none)\n\n";

    #[test]
    fn entry_info_is_read_in_every_format() {
        let v7 = parse_entry_info(V7_ENTRY).unwrap();
        assert!(v7.is_dir());
        assert_eq!(v7.entry_id.as_deref(), Some("5-6418D3E1-1"));
        assert_eq!(
            (v7.storage_pool, v7.chunk_size, v7.num_targets),
            (Some(2), Some(512 << 10), Some(4))
        );
        let retro = parse_entry_info(V8_RETRO).unwrap();
        assert_eq!(
            (retro.storage_pool, retro.chunk_size, retro.num_targets),
            (Some(1), Some(1 << 20), Some(2))
        );
        let table = parse_entry_info(V8_TABLE).unwrap();
        assert!(table.is_dir());
        assert_eq!(table.entry_id.as_deref(), Some("3-67A1B2C3-1"));
        assert_eq!(
            (table.storage_pool, table.chunk_size, table.num_targets),
            (Some(1), Some(512 << 10), Some(4))
        );
        let file = parse_entry_info("Entry type: file\nEntryID: 1-2-3\n").unwrap();
        assert!(!file.is_dir());
        assert_eq!(parse_entry_info(""), None);
        assert_eq!(pool_number(")1("), None);
        let odd = V8_TABLE.replace("RAID0 (4x512Ki)", "RAID0 )4x512K(");
        assert_eq!(parse_entry_info(&odd).unwrap().chunk_size, None);
        assert_eq!(parse_entry_info("some warning\n"), None);
    }

    #[test]
    fn getquota_csv_and_table_are_read() {
        let csv = "name,id,size,hard,files,hard\nvol-a,2001,1048576,10737418240,12,unlimited\n";
        assert_eq!(
            parse_getquota_v7(csv, 2001),
            Some(QuotaRow {
                bytes_used: 1 << 20,
                bytes_limit: Some(10 << 30),
                inodes_used: 12,
                inodes_limit: None
            })
        );
        assert_eq!(parse_getquota_v7(csv, 2002), None);
        let table = "      user/group     ||           size          ||    chunk files    \n     name     |  id  ||    used    |    hard    ||  used   |  hard   \n--------------|------||------------|------------||---------|---------\n          2001|  2001||    1.50 GiB|   10.00 GiB||       34|  1000000\n";
        assert_eq!(
            parse_getquota_v7(table, 2001),
            Some(QuotaRow {
                bytes_used: 1610612736,
                bytes_limit: Some(10 << 30),
                inodes_used: 34,
                inodes_limit: Some(1_000_000)
            })
        );
        let unused = "name,id,size,hard,files,hard\n2001,2001,0,unlimited,0+,unlimited\n";
        assert_eq!(parse_getquota_v7(unused, 2001), Some(QuotaRow::default()));
        let pools = "\nQuota information for storage pool Default (ID: 1):\n\nname,id,size,hard,files,hard\ng,7,100,1000,1,10\n\nQuota information for storage pool fast (ID: 2):\n\nname,id,size,hard,files,hard\ng,7,50,unlimited,2,unlimited\n";
        let summed = parse_getquota_v7(pools, 7).unwrap();
        assert_eq!(
            (summed.bytes_used, summed.inodes_used, summed.bytes_limit),
            (150, 3, Some(1000))
        );
    }

    #[test]
    fn quota_list_usage_is_read() {
        let raw = "NAME   ID    TYPE   POOL     SPACE               INODE\n2001   2001  group  Default  1048576/10737418240  12/unlimited\n\n";
        assert_eq!(
            parse_quota_usage_v8(raw, 2001),
            Some(QuotaRow {
                bytes_used: 1 << 20,
                bytes_limit: Some(10 << 30),
                inodes_used: 12,
                inodes_limit: None
            })
        );
        let human = "NAME  ID    TYPE   POOL     SPACE             INODE\nvol   2001  group  Default  1.00GiB/2.00GiB   ?/100\n";
        assert_eq!(
            parse_quota_usage_v8(human, 2001),
            Some(QuotaRow {
                bytes_used: 1 << 30,
                bytes_limit: Some(2 << 30),
                inodes_used: 0,
                inodes_limit: Some(100)
            })
        );
        assert_eq!(parse_quota_usage_v8(raw, 9), None);
        let infinite = "NAME  ID    TYPE   POOL     SPACE                      INODE\ng     2001  group  Default  5/9223372036854775807      0/∞\n";
        let row = parse_quota_usage_v8(infinite, 2001).unwrap();
        assert_eq!(
            (row.bytes_used, row.bytes_limit, row.inodes_limit),
            (5, None, None)
        );
        assert_eq!(parse_quota_usage_v8("", 9), None);
    }

    #[test]
    fn human_sizes() {
        for (text, bytes) in [
            ("0", 0),
            ("0 Byte", 0),
            ("512K", 512 << 10),
            ("512Ki", 512 << 10),
            ("1 MiB", 1 << 20),
            ("1.50 GiB", 1610612736),
            ("2T", 2 << 40),
            ("17 B", 17),
        ] {
            assert_eq!(parse_human_bytes(text), Some(bytes), "{text}");
        }
        for text in ["", "x", "1 Q", "1.2.3", ".5", "1 Kx"] {
            assert_eq!(parse_human_bytes(text), None, "{text}");
        }
    }

    #[test]
    fn failures_are_classified_by_message() {
        let out = |stderr: &str, stdout: &str| CommandOutput {
            status: Some(1),
            stdout: stdout.into(),
            stderr: stderr.into(),
        };
        assert_eq!(
            classify(&out("Path does not exist: /x", "")),
            CtlFailure::NotFound
        );
        assert_eq!(
            classify(&out("", "entry /x: exists already")),
            CtlFailure::Exists
        );
        assert_eq!(
            classify(&out("No connAuthFile configured.", "")),
            CtlFailure::Auth
        );
        assert_eq!(
            classify(&out("Communication with server failed: mgmt", "")),
            CtlFailure::Unreachable
        );
        assert_eq!(classify(&out("bad things", "")), CtlFailure::Other);
        // Host names in messages do not make an unreachable filesystem an authentication problem.
        let refused = "unable to connect to the management service at tls-auth.example:8010: rpc error: code = Unavailable desc = connection refused";
        assert_eq!(classify(&out(refused, "")), CtlFailure::Unreachable);
        let tls = "rpc error: code = Unavailable desc = \"transport: authentication handshake failed: tls: failed to verify certificate: x509: unknown authority\"";
        assert_eq!(classify(&out(tls, "")), CtlFailure::Auth);
        let unauth = "rpc error: code = Unauthenticated desc = authentication failed";
        assert_eq!(classify(&out(unauth, "")), CtlFailure::Auth);
        let e = failure_error("create x", "beegfs-ctl", out("Unable to connect", ""));
        assert_eq!(e.code(), ErrorCode::Unavailable);
        let e = failure_error("create x", "beegfs-ctl", out("Auth file is empty", ""));
        assert_eq!(e.code(), ErrorCode::FailedPrecondition);
        let e = failure_error("create x", "beegfs-ctl", out("weird", ""));
        assert_eq!(e.code(), ErrorCode::Internal);
    }

    fn ok(stdout: &str) -> CommandOutput {
        CommandOutput {
            status: Some(0),
            stdout: stdout.into(),
            stderr: String::new(),
        }
    }

    #[tokio::test]
    async fn the_version_is_detected_once_per_filesystem() {
        let mut runner = MockCommandRunner::new();
        let seen = Arc::new(Mutex::new(Vec::<Vec<String>>::new()));
        let log = seen.clone();
        runner.expect_run().returning(move |cmd| {
            let a = args(cmd);
            log.lock().unwrap().push(a.clone());
            if cmd.program == std::path::Path::new("/opt/beegfs") {
                // No BeeGFS 8 management answers.
                return Ok(failed("", "rpc error: code = Unavailable"));
            }
            if a.contains(&"--getentryinfo".to_string()) {
                return Ok(ok(V7_ENTRY));
            }
            Ok(ok(""))
        });
        let ctl = Arc::new(Ctl::new(Arc::new(runner), tools()));
        let t = target(false, false);
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (ctl, t) = (ctl.clone(), t.clone());
            tasks.push(tokio::spawn(async move {
                ctl.entry_info(&t, &path("/k8s")).await
            }));
        }
        for task in tasks {
            assert!(task.await.unwrap().unwrap().unwrap().is_dir());
        }
        assert_eq!(ctl.cached_version("10.0.0.5"), Some(BeegfsVersion::V7));
        let calls = seen.lock().unwrap();
        let probes = calls
            .iter()
            .filter(|a| a.contains(&"list".to_string()) || a.contains(&"--listnodes".to_string()))
            .count();
        assert_eq!(
            probes, 2,
            "one BeeGFS 8 and one BeeGFS 7 probe for eight operations: {calls:?}"
        );
        assert_eq!(calls.len(), 10);
    }

    #[tokio::test]
    async fn a_failed_detection_is_retried_and_names_both_tools() {
        let mut runner = MockCommandRunner::new();
        runner.expect_run().times(4).returning(|cmd| {
            Err(Error::Command {
                program: cmd.program.display().to_string(),
                failure: CommandFailure::Spawn("No such file or directory".into()),
                stderr: String::new(),
            })
        });
        let ctl = Ctl::new(Arc::new(runner), tools());
        for _ in 0..2 {
            let err = ctl.version(&target(false, false)).await.unwrap_err();
            assert_eq!(err.code(), ErrorCode::Unavailable);
            assert!(
                err.to_string().contains("BeeGFS 7") && err.to_string().contains("BeeGFS 8"),
                "{err}"
            );
        }
        assert_eq!(ctl.cached_version("10.0.0.5"), None);
    }

    /// The arguments of every directory create `create_dir_all` of `/k8s/all/v` (mode
    /// 0750, uid 5, gid 6) ran, in order, given `known` parents; `answer` may answer a
    /// create (the directory, how many times it was asked for) instead of success.
    async fn dir_creates(
        known: usize,
        answer: impl Fn(&str, usize) -> Option<CommandOutput> + Send + Sync + 'static,
    ) -> Vec<Vec<String>> {
        let mut runner = MockCommandRunner::new();
        let seen = Arc::new(Mutex::new(Vec::<Vec<String>>::new()));
        let log = seen.clone();
        runner.expect_run().returning(move |cmd| {
            let a = args(cmd);
            if !a.iter().any(|s| s == "directory") {
                return Ok(ok(""));
            }
            let mut seen = log.lock().unwrap();
            seen.push(a.clone());
            let dir = a.last().unwrap();
            let asked = seen.iter().filter(|c| c.last() == Some(dir)).count();
            Ok(answer(dir, asked).unwrap_or_else(|| ok("")))
        });
        let ctl = Ctl::new(Arc::new(runner), tools());
        let target = target(false, false);
        ctl.create_dir_all(&target, &path("/k8s/all/v"), 0o750, Some(5), Some(6), known)
            .await
            .unwrap();
        seen.lock().unwrap().clone()
    }

    /// A failed call's output.
    fn failed(stdout: &str, stderr: &str) -> CommandOutput {
        CommandOutput {
            status: Some(1),
            stdout: stdout.into(),
            stderr: stderr.into(),
        }
    }

    /// The directories of `creates`, in order.
    fn dirs(creates: &[Vec<String>]) -> Vec<&str> {
        creates.iter().map(|a| a.last().unwrap().as_str()).collect()
    }

    #[tokio::test]
    async fn directories_are_created_top_down_and_existing_ones_are_fine() {
        let creates = dir_creates(0, |dir, _| {
            (dir == "/k8s").then(|| failed("/k8s: exists already\n", ""))
        })
        .await;
        assert_eq!(dirs(&creates), ["/k8s", "/k8s/all", "/k8s/all/v"]);
        assert!(
            creates[1].contains(&"--permissions=755".to_string())
                && !creates[1].iter().any(|s| s.starts_with("--uid"))
        );
        assert!(
            creates[2].contains(&"--permissions=750".to_string())
                && creates[2].contains(&"--uid=5".to_string())
        );
    }

    #[tokio::test]
    async fn known_parents_are_not_created_again_unless_one_went_away() {
        let created = |known| async move { dirs(&dir_creates(known, |_, _| None).await).join(" ") };
        // Parents seen through the mount: one tool run, for the volume's own directory.
        assert_eq!(created(2).await, "/k8s/all/v");
        assert_eq!(created(1).await, "/k8s/all /k8s/all/v");
        // The directory itself is created even when it was seen too.
        assert_eq!(created(3).await, "/k8s/all/v");
        // A parent removed since it was seen: the chain is made again from the top.
        let creates = dir_creates(2, |dir, asked| {
            (dir == "/k8s/all/v" && asked == 1).then(|| {
                let missing = format!(
                    "Unable to find metadata node for path: {dir}\nError: Path does not exist\n"
                );
                failed("", &missing)
            })
        })
        .await;
        assert_eq!(
            dirs(&creates),
            ["/k8s/all/v", "/k8s", "/k8s/all", "/k8s/all/v"]
        );
    }

    #[test]
    fn default_group_limits_of_beegfs_7() {
        let csv = "user size limit,user chunk files limit,group size limit,group chunk files\n\
                   unlimited,unlimited,1099511627776,100000\n";
        assert_eq!(
            parse_default_group_limits_v7(csv),
            Some((Some(1 << 40), Some(100_000)))
        );
        let none = "user size limit,user chunk files limit,group size limit,group chunk files\n\
                    5000,unlimited,unlimited,unlimited\n";
        assert_eq!(parse_default_group_limits_v7(none), Some((None, None)));
        assert_eq!(parse_default_group_limits_v7("Error: no quota\n"), None);
        assert_eq!(
            parse_default_group_limits_v7("user size limit,group size limit\n1,2,3\n"),
            None
        );
    }

    proptest! {
        #[test]
        fn default_limit_lines_parse_back(
            group in prop::option::of(1u64..1 << 60),
            files in prop::option::of(1u64..1 << 40),
        ) {
            let cell = |v: Option<u64>| v.map_or_else(|| "unlimited".to_string(), |n| n.to_string());
            let csv = format!(
                "user size limit,user chunk files limit,group size limit,group chunk files\n\
                 unlimited,unlimited,{},{}\n",
                cell(group),
                cell(files)
            );
            prop_assert_eq!(parse_default_group_limits_v7(&csv), Some((group, files)));
        }

        #[test]
        fn default_limit_parsing_never_panics(text in "(.{0,30}\n){0,3}") {
            let _ = parse_default_group_limits_v7(&text);
        }

        #[test]
        fn entry_info_parser_never_panics(text in "(?s).{0,400}") {
            let _ = parse_entry_info(&text);
        }

        #[test]
        fn quota_parsers_never_panic(text in "(?s).{0,400}", id in any::<u32>()) {
            let _ = parse_getquota_v7(&text, id);
            let _ = parse_quota_usage_v8(&text, id);
        }

        #[test]
        fn human_sizes_round_trip(n in 0u64..1 << 40, unit in 0u32..4) {
            let suffix = ["", "K", "Mi", "GiB"][unit as usize];
            let text = format!("{n}{suffix}");
            let expected = (n as u128) * 1024u128.pow(unit);
            prop_assert_eq!(parse_human_bytes(&text).map(u128::from), u64::try_from(expected).ok().map(u128::from));
        }

        #[test]
        fn generated_v7_quota_output_is_read_back(
            id in any::<u32>(), used in any::<u64>(), limit in proptest::option::of(1u64..i64::MAX as u64),
            files in 0u64..1 << 40, flimit in proptest::option::of(1u64..1 << 50),
        ) {
            let lim = |l: Option<u64>| l.map_or("unlimited".to_string(), |v| v.to_string());
            let text = format!("name,id,size,hard,files,hard\ngrp,{id},{used},{},{files},{}\n", lim(limit), lim(flimit));
            prop_assert_eq!(
                parse_getquota_v7(&text, id),
                Some(QuotaRow { bytes_used: used, bytes_limit: limit, inodes_used: files, inodes_limit: flimit })
            );
        }

        #[test]
        fn generated_v8_quota_output_is_read_back(
            id in any::<u32>(), used in 0u64..1 << 60, limit in proptest::option::of(1u64..1 << 60),
            files in 0u64..1 << 40, flimit in proptest::option::of(1u64..1 << 40), name in "[a-z][a-z0-9_]{0,15}",
        ) {
            let lim = |l: Option<u64>| l.map_or("unlimited".to_string(), |v| v.to_string());
            let space = format!("{used}/{}", lim(limit));
            let inode = format!("{files}/{}", lim(flimit));
            let w = [name.len().max(4) + 2, id.to_string().len().max(2) + 2, 7, 9, space.len().max(5) + 2];
            let text = format!(
                "{:<w0$}{:<w1$}{:<w2$}{:<w3$}{:<w4$}{}\n{:<w0$}{:<w1$}{:<w2$}{:<w3$}{:<w4$}{}\n",
                "NAME", "ID", "TYPE", "POOL", "SPACE", "INODE", name, id, "group", "Default", space, inode,
                w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3], w4 = w[4],
            );
            prop_assert_eq!(
                parse_quota_usage_v8(&text, id),
                Some(QuotaRow { bytes_used: used, bytes_limit: limit, inodes_used: files, inodes_limit: flimit })
            );
        }

        #[test]
        fn generated_v7_entry_info_is_read_back(pool in any::<u16>(), chunk_exp in 16u32..30, n in 1u32..1000) {
            let text = format!(
                "Entry type: directory\nEntryID: 1-2-3\nMetadata node: m [ID: 1]\nStripe pattern details:\n+ Type: RAID0\n+ Chunksize: {}K\n+ Number of storage targets: desired: {n}\n+ Storage Pool: {pool} (p)\n",
                (1u64 << chunk_exp) >> 10
            );
            let info = parse_entry_info(&text).unwrap();
            prop_assert_eq!((info.storage_pool, info.chunk_size, info.num_targets), (Some(pool), Some(1u64 << chunk_exp), Some(n)));
        }
    }
}
