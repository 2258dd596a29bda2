//! `pfsctl support-bundle`: what a support request needs, in one tar.gz,
//! with every secret redacted ([`redact`] holds the rules).
//!
//! Layout below the top directory `pfs-csi-support-<UTC time>/`:
//! - `manifest.json`: what was collected from where, how many values were
//!   redacted in each file, and what could not be collected;
//! - `<role>/<call>.json` for `controller`, `node` or `plugin`: plugin info,
//!   capabilities, probe, volume and snapshot lists, node info (each the
//!   same JSON as `pfsctl --json`, or the error the call returned);
//! - `config/NN-<name>`, `logs/NN-<name>`: the given files, redacted (a
//!   connAuth or TLS secret file is replaced by a note);
//! - `mounts/mountinfo.txt`: the lustre and beegfs lines of the mount table;
//! - `state/listing.txt` and `state/files/...`: the state directory's
//!   listing, with its JSON records and generated client configurations.
//!
//! Nothing in the bundle is sent anywhere; no call carries secrets.

pub mod archive;
pub mod redact;

use std::{
    fs,
    io::{self, Read, Seek, SeekFrom},
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use k8s_adapter::proto::csi::v1::{
    ControllerGetCapabilitiesRequest, GetPluginCapabilitiesRequest, GetPluginInfoRequest,
    NodeGetCapabilitiesRequest, NodeGetInfoRequest, ProbeRequest,
};
use serde_json::{Value, json};
use tonic::Status;

use crate::{
    cli::{BundleArgs, GlobalArgs, PageArgs},
    client::{Plugin, unary},
    commands::collect_pages,
    exit::{CliError, code_name},
    render::{self, Rendered},
    requests,
};

use self::{
    archive::Entry,
    redact::{REDACTED, TextKind, redact_config, redact_json, redact_text, secret_file_reason},
};

/// Largest configuration or state file read.
const MAX_CONFIG_BYTES: u64 = 4 << 20;
/// Largest state directory file whose content is included.
const MAX_STATE_FILE_BYTES: u64 = 1 << 20;
/// Most state directory entries listed.
const MAX_STATE_ENTRIES: usize = 10_000;
/// Deepest state directory level walked.
const MAX_STATE_DEPTH: usize = 12;
/// Filesystem types whose mounts are collected.
const MOUNT_TYPES: [&str; 2] = ["lustre", "beegfs"];

/// Which services to query at an endpoint.
#[derive(Debug, Clone, Copy)]
struct Services {
    controller: bool,
    node: bool,
}

/// The files gathered so far, with the manifest's records.
#[derive(Debug, Default)]
struct Collector {
    entries: Vec<Entry>,
    records: Vec<Value>,
    errors: Vec<String>,
    redacted: usize,
}

impl Collector {
    fn add(
        &mut self,
        path: String,
        source: String,
        data: Vec<u8>,
        redacted: usize,
        note: Option<String>,
    ) {
        self.redacted += redacted;
        let mut record = json!({ "path": path, "source": source, "redacted_values": redacted });
        if let Some(note) = note {
            record["note"] = Value::String(note);
        }
        self.records.push(record);
        self.entries.push(Entry { path, data });
    }

    fn add_json(&mut self, path: String, source: String, mut value: Value) {
        let redacted = redact_json(&mut value);
        let mut data = serde_json::to_vec_pretty(&value).unwrap_or_default();
        data.push(b'\n');
        self.add(path, source, data, redacted, None);
    }

    fn error(&mut self, what: String) {
        let mut redacted = redact_text(&what, TextKind::Log);
        self.redacted += redacted.count;
        redacted.text.truncate(4096);
        self.errors.push(redacted.text);
    }
}

/// Collects everything and writes the bundle.
pub async fn run(args: &BundleArgs, global: &GlobalArgs) -> Result<Rendered, CliError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let created = render::rfc3339(now.as_secs() as i64, 0);
    let top = format!("pfs-csi-support-{}", created.replace(['-', ':'], ""));
    let mut c = Collector::default();

    let mut targets = Vec::new();
    if let Some(endpoint) = &args.controller_endpoint {
        targets.push((
            "controller",
            endpoint.as_str(),
            Services {
                controller: true,
                node: false,
            },
        ));
    }
    if let Some(endpoint) = &args.node_endpoint {
        targets.push((
            "node",
            endpoint.as_str(),
            Services {
                controller: false,
                node: true,
            },
        ));
    }
    if targets.is_empty() {
        targets.push((
            "plugin",
            global.endpoint.as_str(),
            Services {
                controller: true,
                node: true,
            },
        ));
    }
    for (role, endpoint, services) in targets {
        collect_plugin(&mut c, role, endpoint, services, global.timeout).await;
    }
    for (i, path) in args.configs.iter().enumerate() {
        collect_config(&mut c, i + 1, path);
    }
    for (i, path) in args.log_files.iter().enumerate() {
        collect_log(
            &mut c,
            i + 1,
            path,
            u64::try_from(args.max_log_size).unwrap_or(0),
        );
    }
    collect_mounts(&mut c, &args.mountinfo);
    if let Some(dir) = &args.state_dir {
        collect_state(&mut c, dir);
    }

    let manifest = json!({
        "format": 1,
        "created": created,
        "pfsctl_version": env!("CARGO_PKG_VERSION"),
        "redaction": format!(
            "values of secret-looking keys (connAuth, tlsCert, password, secret, token, key, auth, cert, ...), \
             PEM blocks and URL credentials are replaced by {REDACTED}; connAuth and TLS secret files are withheld"
        ),
        "files": c.records,
        "errors": c.errors,
    });
    let mut manifest_bytes = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
    manifest_bytes.push(b'\n');
    let mut entries = Vec::with_capacity(c.entries.len() + 1);
    entries.push(Entry {
        path: "manifest.json".into(),
        data: manifest_bytes,
    });
    entries.append(&mut c.entries);
    archive::write(&args.output, &top, &entries, now.as_secs())?;

    let mut human = format!(
        "wrote {}: {} files, {} values redacted\n",
        args.output.display(),
        entries.len(),
        c.redacted
    );
    for error in &c.errors {
        human.push_str(&format!("not collected: {error}\n"));
    }
    Ok(Rendered {
        json: json!({
            "output": args.output.display().to_string(),
            "files": entries.iter().map(|e| format!("{top}/{}", e.path)).collect::<Vec<_>>(),
            "redacted_values": c.redacted,
            "errors": c.errors,
        }),
        human,
    })
}

/// The JSON of a failed call.
fn error_json(error: &CliError) -> Value {
    match error {
        CliError::Rpc(status) => {
            json!({ "error": { "code": code_name(status.code()), "message": status.message() } })
        }
        other => json!({ "error": { "message": other.to_string() } }),
    }
}

/// Records a call's result as `<role>/<name>.json`.
fn record_call(
    c: &mut Collector,
    role: &str,
    name: &str,
    endpoint: &str,
    result: Result<Value, CliError>,
) {
    let path = format!("{role}/{name}.json");
    let source = format!("{name} at {endpoint}");
    match result {
        Ok(value) => c.add_json(path, source, value),
        Err(error) => {
            c.error(format!("{role} {name}: {}", error.line()));
            c.add_json(path, source, error_json(&error));
        }
    }
}

fn rpc<T>(
    result: Result<T, Status>,
    render: impl FnOnce(&T) -> Rendered,
) -> Result<Value, CliError> {
    result.map(|r| render(&r).json).map_err(CliError::from)
}

async fn collect_plugin(
    c: &mut Collector,
    role: &str,
    endpoint: &str,
    services: Services,
    timeout: Duration,
) {
    let plugin = match Plugin::connect(endpoint, timeout).await {
        Ok(plugin) => plugin,
        Err(error) => {
            record_call(c, role, "connection", endpoint, Err(error));
            return;
        }
    };
    let t = plugin.timeout();
    let mut identity = plugin.identity();
    let r = unary(
        t,
        identity.get_plugin_info(plugin.request(GetPluginInfoRequest {})),
    )
    .await;
    record_call(
        c,
        role,
        "identity-plugin-info",
        endpoint,
        rpc(r, render::plugin_info),
    );
    let r = unary(
        t,
        identity.get_plugin_capabilities(plugin.request(GetPluginCapabilitiesRequest {})),
    )
    .await;
    record_call(
        c,
        role,
        "identity-capabilities",
        endpoint,
        rpc(r, render::plugin_capabilities),
    );
    let r = unary(t, identity.probe(plugin.request(ProbeRequest {}))).await;
    record_call(c, role, "identity-probe", endpoint, rpc(r, render::probe));

    let all = PageArgs {
        max_entries: 0,
        starting_token: None,
        all: true,
    };
    if services.controller {
        let r = unary(
            t,
            plugin
                .controller()
                .controller_get_capabilities(plugin.request(ControllerGetCapabilitiesRequest {})),
        )
        .await;
        record_call(
            c,
            role,
            "controller-capabilities",
            endpoint,
            rpc(r, render::controller_capabilities),
        );
        let volumes = collect_pages(&all, |token| {
            let mut client = plugin.controller();
            let req = plugin.request(requests::list_volumes(0, &token));
            async move {
                let r = unary(t, client.list_volumes(req)).await?;
                Ok((r.entries, r.next_token))
            }
        })
        .await
        .map(|(entries, next)| render::volume_list(&entries, &next).json);
        record_call(c, role, "volumes", endpoint, volumes);
        let snapshots = collect_pages(&all, |token| {
            let mut client = plugin.controller();
            let req = plugin.request(requests::list_snapshots(
                None,
                None,
                0,
                &token,
                Default::default(),
            ));
            async move {
                let r = unary(t, client.list_snapshots(req)).await?;
                Ok((r.entries, r.next_token))
            }
        })
        .await
        .map(|(entries, next)| render::snapshot_list(&entries, &next).json);
        record_call(c, role, "snapshots", endpoint, snapshots);
    }
    if services.node {
        let mut node = plugin.node();
        let r = unary(t, node.node_get_info(plugin.request(NodeGetInfoRequest {}))).await;
        record_call(c, role, "node-info", endpoint, rpc(r, render::node_info));
        let r = unary(
            t,
            node.node_get_capabilities(plugin.request(NodeGetCapabilitiesRequest {})),
        )
        .await;
        record_call(
            c,
            role,
            "node-capabilities",
            endpoint,
            rpc(r, render::node_capabilities),
        );
    }
}

/// A file name safe inside the archive: the last component, with anything
/// unusual replaced.
fn archive_name(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "unnamed".to_owned());
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Reads at most `limit` bytes from the start (`tail == false`) or the end
/// of a file; says whether it was cut.
fn read_limited(path: &Path, limit: u64, tail: bool) -> io::Result<(String, bool)> {
    let mut file = fs::File::open(path)?;
    let len = file.metadata()?.len();
    let cut = len > limit;
    if cut && tail {
        file.seek(SeekFrom::Start(len - limit))?;
    }
    let mut bytes = Vec::new();
    file.take(limit).read_to_end(&mut bytes)?;
    let mut text = String::from_utf8_lossy(&bytes).into_owned();
    if cut && tail {
        // Drop the partial first line.
        text = text
            .split_once('\n')
            .map_or(String::new(), |(_, rest)| rest.to_owned());
    }
    Ok((text, cut))
}

/// Adds `content` of a configuration-like file, or a note when it is a
/// secret file.
fn add_config_like(
    c: &mut Collector,
    archive_path: String,
    source: &Path,
    content: &str,
    cut: bool,
) {
    let source_text = source.display().to_string();
    if let Some(reason) = secret_file_reason(source, content) {
        let note = format!("content withheld: {reason}");
        let data = format!(
            "{REDACTED}: {} bytes withheld because {reason}\n",
            content.len()
        );
        c.add(archive_path, source_text, data.into_bytes(), 1, Some(note));
        return;
    }
    let note = cut.then(|| format!("only the first {MAX_CONFIG_BYTES} bytes were read"));
    // JSON stays JSON; everything else is redacted as YAML or as lines.
    if let Ok(mut value) = serde_json::from_str::<Value>(content)
        && (value.is_object() || value.is_array())
    {
        let count = redact_json(&mut value);
        let mut data = serde_json::to_vec_pretty(&value).unwrap_or_default();
        data.push(b'\n');
        c.add(archive_path, source_text, data, count, note);
        return;
    }
    let redacted = redact_config(content);
    c.add(
        archive_path,
        source_text,
        redacted.text.into_bytes(),
        redacted.count,
        note,
    );
}

fn collect_config(c: &mut Collector, index: usize, path: &Path) {
    match read_limited(path, MAX_CONFIG_BYTES, false) {
        Ok((content, cut)) => {
            let archive_path = format!("config/{index:02}-{}", archive_name(path));
            add_config_like(c, archive_path, path, &content, cut);
        }
        Err(error) => c.error(format!("config {}: {error}", path.display())),
    }
}

fn collect_log(c: &mut Collector, index: usize, path: &Path, limit: u64) {
    match read_limited(path, limit, true) {
        Ok((content, cut)) => {
            let redacted = redact_text(&content, TextKind::Log);
            let note = cut.then(|| format!("only the last {limit} bytes were kept"));
            c.add(
                format!("logs/{index:02}-{}", archive_name(path)),
                path.display().to_string(),
                redacted.text.into_bytes(),
                redacted.count,
                note,
            );
        }
        Err(error) => c.error(format!("log {}: {error}", path.display())),
    }
}

/// The filesystem type of a mountinfo line (the field after ` - `).
fn mount_fs_type(line: &str) -> Option<&str> {
    let mut fields = line.split_whitespace();
    fields.by_ref().find(|field| *field == "-")?;
    fields.next()
}

/// The lines of a mount table whose filesystem type is lustre or beegfs.
fn parallel_fs_mounts(table: &str) -> String {
    table
        .lines()
        .filter(|line| mount_fs_type(line).is_some_and(|t| MOUNT_TYPES.contains(&t)))
        .map(|line| format!("{line}\n"))
        .collect()
}

fn collect_mounts(c: &mut Collector, mountinfo: &Path) {
    match fs::read_to_string(mountinfo) {
        Ok(table) => {
            let redacted = redact_text(&parallel_fs_mounts(&table), TextKind::Log);
            c.add(
                "mounts/mountinfo.txt".into(),
                format!("{} (lustre and beegfs lines)", mountinfo.display()),
                redacted.text.into_bytes(),
                redacted.count,
                None,
            );
        }
        Err(error) => c.error(format!("mount table {}: {error}", mountinfo.display())),
    }
}

/// Whether a state file's content goes into the bundle: JSON records and
/// generated BeeGFS client configurations; everything else (secret files
/// among them) is only listed.
fn state_content_wanted(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    name.ends_with(".json") || name == "beegfs-client.conf"
}

fn collect_state(c: &mut Collector, dir: &Path) {
    let mut listing = String::new();
    let mut files = Vec::new();
    let mut count = 0;
    if let Err(error) = walk(dir, dir, 0, &mut listing, &mut files, &mut count) {
        c.error(format!("state directory {}: {error}", dir.display()));
    }
    if count >= MAX_STATE_ENTRIES {
        listing.push_str(&format!("... stopped after {MAX_STATE_ENTRIES} entries\n"));
    }
    let redacted = redact_text(&listing, TextKind::Log);
    c.add(
        "state/listing.txt".into(),
        format!("{} (mode, size, type, path)", dir.display()),
        redacted.text.into_bytes(),
        redacted.count,
        None,
    );
    for (relative, path) in files {
        match read_limited(&path, MAX_STATE_FILE_BYTES, false) {
            Ok((content, cut)) => {
                let archive_path = format!("state/files/{relative}");
                add_config_like(c, archive_path, &path, &content, cut);
            }
            Err(error) => c.error(format!("state file {}: {error}", path.display())),
        }
    }
}

/// Lists `dir` recursively (symbolic links are not followed), noting the
/// files whose content is wanted.
fn walk(
    root: &Path,
    dir: &Path,
    depth: usize,
    listing: &mut String,
    files: &mut Vec<(String, PathBuf)>,
    count: &mut usize,
) -> io::Result<()> {
    let mut children: Vec<_> = fs::read_dir(dir)?.filter_map(Result::ok).collect();
    children.sort_by_key(|e| e.file_name());
    for child in children {
        if *count >= MAX_STATE_ENTRIES {
            return Ok(());
        }
        *count += 1;
        let path = child.path();
        let relative = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .to_string_lossy()
            .into_owned();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            listing.push_str(&format!("?    ? ? {relative}\n"));
            continue;
        };
        let kind = meta.file_type();
        let (letter, extra) = if kind.is_dir() {
            ("d", String::new())
        } else if kind.is_symlink() {
            let target = fs::read_link(&path)
                .map(|t| t.display().to_string())
                .unwrap_or_default();
            ("l", format!(" -> {target}"))
        } else if kind.is_file() {
            ("f", String::new())
        } else {
            ("s", String::new())
        };
        listing.push_str(&format!(
            "{:04o} {:>12} {letter} {relative}{extra} (uid {} gid {})\n",
            meta.permissions().mode() & 0o7777,
            meta.len(),
            meta.uid(),
            meta.gid(),
        ));
        if kind.is_dir() && depth + 1 < MAX_STATE_DEPTH {
            walk(root, &path, depth + 1, listing, files, count)?;
        } else if kind.is_file() && state_content_wanted(&path) {
            files.push((relative, path));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_lustre_and_beegfs_mounts_are_kept() {
        let table = "\
36 35 98:0 / /mnt1 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
40 35 0:50 / /mnt/exa rw,relatime shared:7 - lustre 10.0.0.1@tcp:/fs rw,flock
41 35 0:51 / /mnt/bee rw - beegfs beegfs_nodev rw,cfgFile=/s/beegfs-client.conf
42 35 0:52 / /mnt/odd\\040name rw - lustre_like x rw
";
        let kept = parallel_fs_mounts(table);
        let lines: Vec<&str> = kept.lines().collect();
        assert_eq!(lines.len(), 2, "{kept}");
        assert!(lines[0].contains("/mnt/exa") && lines[1].contains("/mnt/bee"));
    }

    #[test]
    fn a_malformed_mount_line_has_no_type() {
        assert_eq!(mount_fs_type("36 35 98:0 / /mnt1 rw"), None);
        assert_eq!(
            mount_fs_type("1 2 3:4 / /m rw - lustre src rw"),
            Some("lustre")
        );
    }

    #[test]
    fn archive_names_keep_only_the_plain_last_component() {
        assert_eq!(
            archive_name(Path::new("/etc/exa/exascaler config.yaml")),
            "exascaler_config.yaml"
        );
        assert_eq!(archive_name(Path::new("/")), "unnamed");
    }

    #[test]
    fn tail_reads_drop_the_partial_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        fs::write(&path, "first line\nsecond\nthird\n").unwrap();
        let (text, cut) = read_limited(&path, 10, true).unwrap();
        assert!(cut);
        assert_eq!(text, "third\n");
        let (whole, cut) = read_limited(&path, 1000, true).unwrap();
        assert_eq!(
            (whole.as_str(), cut),
            ("first line\nsecond\nthird\n", false)
        );
    }
}
