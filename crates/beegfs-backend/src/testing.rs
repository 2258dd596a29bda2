//! Test doubles: a BeeGFS filesystem behind the core's mocked ports.
//!
//! - [`FakeBeegfs`] answers `beegfs-ctl` and `beegfs` command lines (argv as the real tools
//!   take them, outputs in their formats) against a directory standing in for each
//!   filesystem, checks the connAuth secret it is given by file, and records every command.
//! - [`FakeMounts`] is a mount table: a client mount of a filesystem copies its directory
//!   skeleton (the controller's mount *is* the filesystem directory), bind mounts get the
//!   root the kernel would show.
//! - [`fake_snapshots`] archives a tree into a JSON file and restores it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use csi_core::domain::{
    AccessMode, AccessType, CapacityRange, Parameters, RequestMetadata, Secrets,
    TopologyRequirement, VolumeCapability,
};
use csi_core::ports::{
    ArchiveInfo, ArchiveOptions, BackendContext, Command, CommandOutput, CreateVolumeRequest,
    MockCommandRunner, MockMounter, MockSnapshotEngine, MountEntry, Role,
};
use csi_core::{Error, Result};

use crate::ctl::BeegfsVersion;
use crate::records::safe_key;
use crate::{BeegfsBackend, BeegfsSettings, ClientSecrets, DriverConfig};

/// One simulated filesystem.
#[derive(Debug, Clone)]
pub struct FakeFs {
    pub root: PathBuf,
    pub version: BeegfsVersion,
    pub conn_auth: Option<Vec<u8>>,
    /// Group quota limits: gid -> (bytes, inodes), `None` unlimited.
    pub limits: HashMap<u32, (Option<u64>, Option<u64>)>,
    pub patterns: HashMap<String, Vec<String>>,
}

/// Simulated filesystems and the commands they saw.
#[derive(Debug, Default)]
pub struct FakeBeegfs {
    pub filesystems: Mutex<HashMap<String, FakeFs>>,
    pub commands: Mutex<Vec<Command>>,
}

fn out(status: i32, stdout: impl Into<String>, stderr: impl Into<String>) -> CommandOutput {
    CommandOutput {
        status: Some(status),
        stdout: stdout.into(),
        stderr: stderr.into(),
    }
}

/// Bytes and files with group `gid` below `dir` (the fake's quota accounting).
fn usage_of(dir: &Path, gid: u32) -> (u64, u64) {
    let mut stack = vec![dir.to_path_buf()];
    let (mut bytes, mut files) = (0, 0);
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.gid() == gid && meta.is_file() {
            bytes += meta.len();
            files += 1;
        }
        if meta.is_dir()
            && p.file_name().is_none_or(|n| n != ".pfs-csi")
            && let Ok(entries) = std::fs::read_dir(&p)
        {
            stack.extend(entries.filter_map(|e| e.ok()).map(|e| e.path()));
        }
    }
    (bytes, files)
}

impl FakeBeegfs {
    /// Adds filesystem `host` at `root`.
    pub fn add(&self, host: &str, root: &Path, version: BeegfsVersion, conn_auth: Option<&[u8]>) {
        std::fs::create_dir_all(root).unwrap();
        self.filesystems.lock().unwrap().insert(
            host.to_string(),
            FakeFs {
                root: root.to_path_buf(),
                version,
                conn_auth: conn_auth.map(<[u8]>::to_vec),
                limits: HashMap::new(),
                patterns: HashMap::new(),
            },
        );
    }

    /// The root directory of `host`.
    pub fn root(&self, host: &str) -> PathBuf {
        self.filesystems.lock().unwrap()[host].root.clone()
    }

    /// Limits set for `gid` on `host`.
    pub fn limits(&self, host: &str, gid: u32) -> Option<(Option<u64>, Option<u64>)> {
        self.filesystems.lock().unwrap()[host]
            .limits
            .get(&gid)
            .copied()
    }

    /// Every command line seen, as text.
    pub fn command_lines(&self) -> Vec<String> {
        self.commands
            .lock()
            .unwrap()
            .iter()
            .map(Command::display)
            .collect()
    }

    /// A mocked runner answering as these filesystems.
    pub fn runner(self: &Arc<Self>) -> MockCommandRunner {
        let fake = self.clone();
        let mut runner = MockCommandRunner::new();
        runner.expect_run().returning(move |cmd| fake.handle(cmd));
        runner
    }

    fn handle(&self, cmd: &Command) -> Result<CommandOutput> {
        self.commands.lock().unwrap().push(cmd.clone());
        let args: Vec<String> = cmd
            .args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let program = cmd
            .program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match program.as_str() {
            "beegfs-ctl" => Ok(self.handle_v7(&args)),
            "beegfs" => Ok(self.handle_v8(&args)),
            other => Err(Error::Command {
                program: other.into(),
                failure: csi_core::error::CommandFailure::Spawn("No such file or directory".into()),
                stderr: String::new(),
            }),
        }
    }

    fn handle_v7(&self, args: &[String]) -> CommandOutput {
        let Some(conf) = args.iter().find_map(|a| a.strip_prefix("--cfgFile=")) else {
            return out(1, "", "no config file");
        };
        let text = std::fs::read_to_string(conf).unwrap_or_default();
        let keys: HashMap<&str, &str> = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim(), v.trim()))
            .collect();
        let host = keys.get("sysMgmtdHost").copied().unwrap_or("");
        let mut all = self.filesystems.lock().unwrap();
        let Some(fs) = all.get_mut(host) else {
            return out(1, "", "Management host undefined");
        };
        if fs.version != BeegfsVersion::V7 {
            return out(1, "", "Communication with server failed: mgmtd");
        }
        let presented = keys
            .get("connAuthFile")
            .filter(|p| !p.is_empty())
            .and_then(|p| std::fs::read(p).ok());
        if fs.conn_auth.is_some() && presented != fs.conn_auth {
            return out(
                1,
                "",
                "Communication with server failed: authentication failed",
            );
        }
        let value = |prefix: &str| {
            args.iter()
                .find_map(|a| a.strip_prefix(prefix))
                .map(str::to_string)
        };
        let has = |flag: &str| args.iter().any(|a| a == flag);
        let gid_after = || {
            args.iter()
                .skip_while(|a| *a != "--gid")
                .nth(1)
                .and_then(|g| g.parse::<u32>().ok())
        };
        let path = args.last().cloned().unwrap_or_default();
        let on_disk = fs.root.join(path.trim_start_matches('/'));
        if has("--listnodes") {
            return out(0, "mgmtd01 [ID: 1]\n", "");
        }
        if has("--getentryinfo") {
            return match std::fs::symlink_metadata(&on_disk) {
                Ok(m) => out(
                    0,
                    format!(
                        "Entry type: {}\nEntryID: 1-ABC-1\nMetadata node: meta01 [ID: 1]\nStripe pattern details:\n+ Type: RAID0\n+ Chunksize: 512K\n+ Number of storage targets: desired: 4\n+ Storage Pool: 1 (Default)\n",
                        if m.is_dir() { "directory" } else { "file" }
                    ),
                    "",
                ),
                Err(_) => out(1, "", format!("Path does not exist: {path}")),
            };
        }
        if has("--createdir") {
            return create_dir(
                &on_disk,
                &path,
                value("--access=").as_deref(),
                value("--uid="),
                value("--gid="),
                false,
            );
        }
        if has("--setpattern") {
            if !on_disk.is_dir() {
                return out(1, "", format!("Path does not exist: {path}"));
            }
            fs.patterns.insert(path, args.to_vec());
            return out(0, "Stripe pattern set.\n", "");
        }
        if has("--setquota") {
            let Some(gid) = gid_after() else {
                return out(1, "", "No ID specified.");
            };
            let parse = |v: Option<String>| match v.as_deref() {
                Some("unlimited") | Some("reset") | None => None,
                Some(n) => n.parse::<u64>().ok(),
            };
            let size = parse(value("--sizelimit="));
            let inodes = parse(value("--inodelimit="));
            if value("--sizelimit=").as_deref() == Some("reset") {
                fs.limits.remove(&gid);
            } else {
                fs.limits.insert(gid, (size, inodes));
            }
            return out(0, "", "");
        }
        if has("--getquota") && has("--defaultlimits") {
            // No default limits on the fake filesystems.
            return out(
                0,
                "user size limit,user chunk files limit,group size limit,group chunk files\n\
                 unlimited,unlimited,unlimited,unlimited\n",
                "",
            );
        }
        if has("--getquota") {
            let Some(gid) = gid_after() else {
                return out(1, "", "No ID specified.");
            };
            let (bytes, files) = usage_of(&fs.root, gid);
            let (lb, li) = fs.limits.get(&gid).copied().unwrap_or((None, None));
            let lim = |l: Option<u64>| l.map_or("unlimited".to_string(), |v| v.to_string());
            return out(
                0,
                format!(
                    "name,id,size,hard,files,hard\n{gid},{gid},{bytes},{},{files},{}\n",
                    lim(lb),
                    lim(li)
                ),
                "",
            );
        }
        out(1, "", format!("unknown mode: {args:?}"))
    }

    fn handle_v8(&self, args: &[String]) -> CommandOutput {
        let Some(addr) = args.iter().find_map(|a| a.strip_prefix("--mgmtd-addr=")) else {
            return out(1, "", "management address unknown");
        };
        let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h).to_string();
        let mut all = self.filesystems.lock().unwrap();
        let Some(fs) = all.get_mut(&host) else {
            return out(
                1,
                "",
                "rpc error: code = Unavailable desc = connection refused",
            );
        };
        if fs.version != BeegfsVersion::V8 {
            return out(
                1,
                "",
                "rpc error: code = Unavailable desc = connection refused",
            );
        }
        let presented = args
            .iter()
            .find_map(|a| a.strip_prefix("--auth-file="))
            .and_then(|p| std::fs::read(p).ok());
        if fs.conn_auth.is_some() && presented != fs.conn_auth {
            return out(
                1,
                "",
                "rpc error: code = Unauthenticated desc = authentication failed",
            );
        }
        let value = |prefix: &str| {
            args.iter()
                .find_map(|a| a.strip_prefix(prefix))
                .map(str::to_string)
        };
        let words: Vec<&str> = args
            .iter()
            .filter(|a| !a.starts_with("--"))
            .map(String::as_str)
            .collect();
        let path = words.last().map(|s| s.to_string()).unwrap_or_default();
        let on_disk = fs.root.join(path.trim_start_matches('/'));
        match words.as_slice() {
            ["node", "list"] => out(0, "NODE_ID  ALIAS\nmeta:1   meta_01\n", ""),
            ["entry", "info", _] => match std::fs::symlink_metadata(&on_disk) {
                Ok(m) => out(
                    0,
                    format!(
                        "PATH  ENTRY_ID  TYPE       META_NODE  META_MIRROR   STORAGE_POOL  STRIPE_PATTERN   STORAGE_TARGETS  STORAGE_MIRRORS  REMOTE_TARGETS\n{path}  1-2-3  {:<9}  meta:1     (unmirrored)  Default (1)   RAID0 (4x512Ki)  (directory)      (directory)      (none)\n",
                        if m.is_dir() { "directory" } else { "file" }
                    ),
                    "",
                ),
                Err(_) => out(1, "", format!("Error: {path}: does not exist")),
            },
            ["entry", "create", "directory", _] => create_dir(
                &on_disk,
                &path,
                value("--permissions=").as_deref(),
                value("--uid="),
                value("--gid="),
                true,
            ),
            ["entry", "set", _] => {
                fs.patterns.insert(path, args.to_vec());
                out(0, "", "")
            }
            ["quota", "set-limits", _pool] => {
                let Some(gid) = value("--gid=").and_then(|g| g.parse::<u32>().ok()) else {
                    return out(1, "", "missing --gid");
                };
                if value("--space=").as_deref() == Some("reset") {
                    fs.limits.remove(&gid);
                } else {
                    let parse = |v: Option<String>| {
                        v.filter(|s| s != "unlimited")
                            .and_then(|s| s.parse::<u64>().ok())
                    };
                    fs.limits
                        .insert(gid, (parse(value("--space=")), parse(value("--inode="))));
                }
                out(0, "", "")
            }
            ["quota", "list-usage"] => {
                let Some(gid) = value("--gids=").and_then(|g| g.parse::<u32>().ok()) else {
                    return out(1, "", "missing --gids");
                };
                let (bytes, files) = usage_of(&fs.root, gid);
                let (lb, li) = fs.limits.get(&gid).copied().unwrap_or((None, None));
                let lim = |l: Option<u64>| l.map_or("unlimited".to_string(), |v| v.to_string());
                let space = format!("{bytes}/{}", lim(lb));
                let inode = format!("{files}/{}", lim(li));
                out(
                    0,
                    format!(
                        "{:<12}{:<12}{:<7}{:<9}{:<30}{}\n{:<12}{:<12}{:<7}{:<9}{:<30}{}\n",
                        "NAME",
                        "ID",
                        "TYPE",
                        "POOL",
                        "SPACE",
                        "INODE",
                        gid,
                        gid,
                        "group",
                        "Default",
                        space,
                        inode
                    ),
                    "INFO: Quota usage information is fetched every 10s\n",
                )
            }
            other => out(1, "", format!("unknown command {other:?}")),
        }
    }
}

fn create_dir(
    on_disk: &Path,
    path: &str,
    mode: Option<&str>,
    uid: Option<String>,
    gid: Option<String>,
    v8: bool,
) -> CommandOutput {
    if on_disk.exists() {
        let msg = format!("Entry exists already: {path}");
        return if v8 { out(1, msg, "") } else { out(1, "", msg) };
    }
    if !on_disk.parent().is_some_and(Path::is_dir) {
        return out(1, "", format!("Parent directory does not exist: {path}"));
    }
    std::fs::create_dir(on_disk).unwrap();
    let mode = mode
        .and_then(|m| u32::from_str_radix(m, 8).ok())
        .unwrap_or(0o755);
    std::fs::set_permissions(on_disk, std::fs::Permissions::from_mode(mode)).unwrap();
    let uid = uid.and_then(|u| u.parse().ok());
    let gid = gid.and_then(|g| g.parse().ok());
    std::os::unix::fs::lchown(on_disk, uid, gid).unwrap();
    out(0, format!("Operation succeeded: {path}\n"), "")
}

/// The mount table of the fake.
#[derive(Debug, Default)]
pub struct FakeMounts {
    pub table: Mutex<Vec<MountEntry>>,
    /// (target, options) of every client mount.
    pub mounted: Mutex<Vec<(PathBuf, Vec<String>)>>,
    pub fake: Mutex<Option<Arc<FakeBeegfs>>>,
    /// Mount points holding a copy of a filesystem's skeleton.
    pub copies: Mutex<Vec<PathBuf>>,
    /// Mount points whose filesystem hangs: a check of one is `DeadlineExceeded` while it
    /// is mounted.
    pub hung: Mutex<HashSet<PathBuf>>,
    /// Mount points whose unmount fails.
    pub busy: Mutex<HashSet<PathBuf>>,
}

fn copy_skeleton(from: &Path, to: &Path) {
    let Ok(entries) = std::fs::read_dir(from) else {
        return;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let Ok(meta) = std::fs::symlink_metadata(entry.path()) else {
            continue;
        };
        if meta.is_dir() {
            let target = to.join(entry.file_name());
            let _ = std::fs::create_dir_all(&target);
            let _ = std::fs::set_permissions(&target, meta.permissions());
            let _ = std::os::unix::fs::lchown(&target, Some(meta.uid()), Some(meta.gid()));
            copy_skeleton(&entry.path(), &target);
        }
    }
}

impl FakeMounts {
    /// A mocked mounter over this table.
    pub fn mounter(self: &Arc<Self>, fake: &Arc<FakeBeegfs>) -> MockMounter {
        *self.fake.lock().unwrap() = Some(fake.clone());
        let mut m = MockMounter::new();
        let me = self.clone();
        m.expect_mount()
            .returning(move |source, target, fs_type, options| {
                me.mount(source, target, fs_type, options)
            });
        let me = self.clone();
        m.expect_bind_mount()
            .returning(move |source, target, _ro| me.bind(source, target));
        let me = self.clone();
        m.expect_bind_mount_below()
            .returning(move |mount, source, target, _ro| {
                let mounted = me
                    .table
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|e| e.mount_point == mount);
                if !mounted {
                    return Err(Error::FailedPrecondition(format!(
                        "nothing is mounted at {}",
                        mount.display()
                    )));
                }
                me.bind(source, target)
            });
        let me = self.clone();
        m.expect_unmount()
            .returning(move |target| me.unmount(target));
        let me = self.clone();
        m.expect_unmount_all().returning(move |path| {
            while me
                .table
                .lock()
                .unwrap()
                .iter()
                .any(|e| e.mount_point == path)
            {
                me.unmount(path)?;
            }
            Ok(path.symlink_metadata().is_ok())
        });
        let me = self.clone();
        m.expect_is_mount_point().returning(move |path| {
            if !path.exists() {
                return Err(Error::NotFound(format!("{}", path.display())));
            }
            let mounted = me
                .table
                .lock()
                .unwrap()
                .iter()
                .any(|e| e.mount_point == path);
            if mounted && me.hung.lock().unwrap().contains(path) {
                return Err(Error::DeadlineExceeded(format!(
                    "stat of {} did not return",
                    path.display()
                )));
            }
            Ok(mounted)
        });
        let me = self.clone();
        m.expect_list_mounts()
            .returning(move || Ok(me.table.lock().unwrap().clone()));
        m
    }

    fn unmount(&self, target: &Path) -> Result<()> {
        if self.busy.lock().unwrap().contains(target) {
            return Err(Error::io(
                "unmount",
                target,
                std::io::Error::from_raw_os_error(libc::EBUSY),
            ));
        }
        let mut table = self.table.lock().unwrap();
        if let Some(i) = table.iter().rposition(|e| e.mount_point == target) {
            table.remove(i);
        }
        // What a client mount showed disappears with it.
        let mut copies = self.copies.lock().unwrap();
        if let Some(i) = copies.iter().position(|c| c == target) {
            copies.remove(i);
            for entry in std::fs::read_dir(target)
                .into_iter()
                .flatten()
                .filter_map(|e| e.ok())
            {
                let _ = std::fs::remove_dir_all(entry.path())
                    .or_else(|_| std::fs::remove_file(entry.path()));
            }
        }
        Ok(())
    }

    fn mount(&self, source: &str, target: &Path, fs_type: &str, options: &[String]) -> Result<()> {
        if !target.is_dir() {
            return Err(Error::NotFound(format!(
                "mount point {} does not exist",
                target.display()
            )));
        }
        let conf = options
            .iter()
            .find_map(|o| o.strip_prefix("cfgFile="))
            .unwrap_or("");
        let text = std::fs::read_to_string(conf).map_err(|e| Error::io("read", conf, e))?;
        let host = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .find(|(k, _)| k.trim() == "sysMgmtdHost")
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default();
        let fake = self.fake.lock().unwrap().clone().unwrap();
        let fs = fake
            .filesystems
            .lock()
            .unwrap()
            .get(&host)
            .cloned()
            .ok_or_else(|| {
                Error::Unavailable(format!("mount: management host {host:?} unreachable"))
            })?;
        let auth_file = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .find(|(k, _)| k.trim() == "connAuthFile")
            .map(|(_, v)| v.trim().to_string())
            .filter(|v| !v.is_empty());
        if fs.conn_auth.is_some() && auth_file.and_then(|f| std::fs::read(f).ok()) != fs.conn_auth {
            return Err(Error::Internal(
                "mount: authentication with the management failed".into(),
            ));
        }
        let root = fs.root;
        if root != target {
            copy_skeleton(&root, target);
            self.copies.lock().unwrap().push(target.to_path_buf());
        }
        self.mounted
            .lock()
            .unwrap()
            .push((target.to_path_buf(), options.to_vec()));
        self.table.lock().unwrap().push(MountEntry {
            id: 100,
            parent_id: 1,
            root: PathBuf::from("/"),
            mount_point: target.to_path_buf(),
            mount_options: vec!["rw".into(), "nosuid".into()],
            fs_type: fs_type.to_string(),
            source: source.to_string(),
            super_options: vec![format!("cfgFile={conf}")],
        });
        Ok(())
    }

    /// Records a bind mount as the kernel shows it.
    pub fn bind(&self, source: &Path, target: &Path) -> Result<()> {
        let mut table = self.table.lock().unwrap();
        let parent = table
            .iter()
            .filter(|e| source.starts_with(&e.mount_point))
            .max_by_key(|e| e.mount_point.components().count())
            .cloned();
        let entry = match parent {
            Some(p) => MountEntry {
                root: p.root.join(source.strip_prefix(&p.mount_point).unwrap()),
                mount_point: target.to_path_buf(),
                ..p
            },
            None => MountEntry {
                id: 200,
                parent_id: 1,
                root: source.to_path_buf(),
                mount_point: target.to_path_buf(),
                mount_options: vec!["rw".into()],
                fs_type: "ext4".into(),
                source: "/dev/root".into(),
                super_options: vec![],
            },
        };
        table.push(entry);
        Ok(())
    }

    /// Client mounts currently in the table.
    pub fn client_mounts(&self) -> usize {
        self.table
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.fs_type == "beegfs" && e.root == Path::new("/"))
            .count()
    }
}

/// A snapshot engine storing trees as JSON maps of relative path to file content.
/// How the fake engine fills volumes: how many fills (restores and copies) ran, and how
/// long each takes (blocking its thread, as a real one would).
#[derive(Debug, Default)]
pub struct FillControl {
    /// Fills started.
    pub runs: std::sync::atomic::AtomicUsize,
    /// Milliseconds each fill takes.
    pub delay_ms: std::sync::atomic::AtomicU64,
    /// The mode and owner of each fill's destination as the fill began.
    pub dests: Mutex<Vec<(u32, u32)>>,
    /// The options of each restore.
    pub restore_options: Mutex<Vec<ArchiveOptions>>,
}

impl FillControl {
    fn run(&self, dest: &Path) {
        use std::sync::atomic::Ordering;
        if let Ok(meta) = std::fs::metadata(dest) {
            let seen = (meta.permissions().mode() & 0o7777, meta.uid());
            self.dests.lock().unwrap().push(seen);
        }
        self.runs.fetch_add(1, Ordering::SeqCst);
        let delay = self.delay_ms.load(Ordering::SeqCst);
        std::thread::sleep(std::time::Duration::from_millis(delay));
    }
}

pub fn fake_snapshots(fills: Arc<FillControl>) -> MockSnapshotEngine {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Option<String>>) {
        for entry in std::fs::read_dir(dir).unwrap().filter_map(|e| e.ok()) {
            let path = entry.path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            if path.is_dir() {
                out.insert(rel, None);
                walk(root, &path, out);
            } else {
                out.insert(
                    rel,
                    Some(std::fs::read_to_string(&path).unwrap_or_default()),
                );
            }
        }
    }
    fn restore(tree: &BTreeMap<String, Option<String>>, dest: &Path) -> Result<()> {
        for (rel, content) in tree {
            let p = dest.join(rel);
            match content {
                None => std::fs::create_dir_all(&p).map_err(|e| Error::io("mkdir", &p, e))?,
                Some(c) => std::fs::write(&p, c).map_err(|e| Error::io("write", &p, e))?,
            }
        }
        Ok(())
    }
    let mut engine = MockSnapshotEngine::new();
    engine.expect_create().returning(|source, archive, _| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        let mut tree = BTreeMap::new();
        walk(source, source, &mut tree);
        let bytes = serde_json::to_vec(&tree).unwrap();
        std::fs::write(archive, &bytes).map_err(|e| Error::io("write", archive, e))?;
        Ok(ArchiveInfo {
            size_bytes: bytes.len() as u64,
            checksum: None,
        })
    });
    let control = fills.clone();
    engine
        .expect_restore()
        .returning(move |archive, dest, options| {
            control
                .restore_options
                .lock()
                .unwrap()
                .push(options.clone());
            control.run(dest);
            let tree: BTreeMap<String, Option<String>> = serde_json::from_slice(
                &std::fs::read(archive).map_err(|e| Error::io("read", archive, e))?,
            )
            .unwrap();
            restore(&tree, dest)
        });
    engine.expect_copy_tree().returning(move |source, dest, _| {
        fills.run(dest);
        let mut tree = BTreeMap::new();
        walk(source, source, &mut tree);
        restore(&tree, dest)
    });
    engine.expect_delete().returning(|archive| {
        let _ = std::fs::remove_file(archive);
        Ok(())
    });
    engine
}

/// A test world: temp dirs, the fake filesystems, and backends on them.
pub struct World {
    pub dir: tempfile::TempDir,
    pub fake: Arc<FakeBeegfs>,
    pub mounts: Arc<FakeMounts>,
    pub fills: Arc<FillControl>,
}

impl World {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            fake: Arc::new(FakeBeegfs::default()),
            mounts: Arc::new(FakeMounts::default()),
            fills: Arc::new(FillControl::default()),
        }
    }

    /// The state directory of a backend named `who`.
    pub fn state(&self, who: &str) -> PathBuf {
        self.dir.path().join(who).join("state")
    }

    /// Adds a filesystem, placed where the controller backend `who` will mount it.
    pub fn add_fs(&self, who: &str, host: &str, version: BeegfsVersion, conn_auth: Option<&[u8]>) {
        let root = self
            .state(who)
            .join("beegfs")
            .join("controller")
            .join(safe_key(host))
            .join("mount");
        self.fake.add(host, &root, version, conn_auth);
    }

    /// A backend for `role` with `settings`, configuration `config_yaml` and `conn_auth_yaml`.
    pub fn backend(
        &self,
        who: &str,
        role: Role,
        settings: BeegfsSettings,
        config_yaml: &str,
        conn_auth_yaml: Option<&str>,
    ) -> BeegfsBackend {
        let ctx = BackendContext {
            role,
            node_id: format!("{who}-node"),
            driver_name: "beegfs.csi.netapp.com".into(),
            runner: Arc::new(self.fake.runner()),
            mounter: Arc::new(self.mounts.mounter(&self.fake)),
            snapshots: Arc::new(fake_snapshots(self.fills.clone())),
            state_dir: self.state(who),
            kubelet_dir: self.dir.path().join(who).join("kubelet"),
        };
        let settings = BeegfsSettings {
            selinux_enforce_path: self.dir.path().join("no-selinux"),
            client_conf_template: Some(self.dir.path().join("no-template")),
            ..settings
        };
        BeegfsBackend::new(
            ctx,
            DriverConfig::from_yaml(config_yaml).unwrap(),
            ClientSecrets::from_yaml(conn_auth_yaml, None).unwrap(),
            settings,
        )
        .unwrap()
    }
}

/// A mount capability with `mode` and mount flags.
pub fn capability(mode: AccessMode, flags: &[&str]) -> VolumeCapability {
    VolumeCapability {
        access_type: AccessType::Mount,
        fs_type: String::new(),
        mount_flags: flags.iter().map(|s| s.to_string()).collect(),
        access_mode: mode,
    }
}

/// A CreateVolume request for `name` with StorageClass `params` and `bytes` required.
pub fn create_request(name: &str, params: &[(&str, &str)], bytes: i64) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.to_string(),
        capacity: CapacityRange::new(bytes, 0).unwrap(),
        capabilities: vec![capability(AccessMode::MultiNodeMultiWriter, &[])],
        parameters: Parameters::new(
            params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        metadata: RequestMetadata::default(),
        secrets: Secrets::default(),
        content_source: None,
        topology: TopologyRequirement::default(),
    }
}
