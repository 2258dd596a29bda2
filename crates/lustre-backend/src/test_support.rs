//! Test doubles for the backend's unit tests: a temporary directory stands in for each
//! mounted filesystem; `lfs` is a mocked command runner that keeps project ids and limits
//! and answers in the real tools' output formats; mounts are a mocked mounter that keeps a
//! mount table; archives are a small fake engine that can be held back.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use csi_core::domain::{
    AccessMode, AccessType, CapacityRange, Parameters, RequestMetadata, Secrets,
    TopologyRequirement, VolumeCapability, VolumeContentSource,
};
use csi_core::error::CommandFailure;
use csi_core::id_alloc::IdAllocator;
use csi_core::ports::{
    ArchiveChecksum, ArchiveInfo, ArchiveOptions, BackendContext, Command, CommandOutput,
    CreateVolumeRequest, MockCommandRunner, MockMounter, Role, SnapshotEngine,
};
use csi_core::{Error, Result};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::backend::LustreBackend;
use crate::config::{LustreConfig, LustreSettings};

/// What the fake `lfs` knows.
#[derive(Debug, Default)]
pub struct FakeLfs {
    /// Project of each directory (`lfs project -s`).
    pub projects: HashMap<PathBuf, u32>,
    /// Hard block limit of each project, KiB.
    pub limits: HashMap<u32, u64>,
    /// Usage of each project, KiB.
    pub used_kib: HashMap<u32, u64>,
    /// Inodes of each project.
    pub files: HashMap<u32, u64>,
    /// Subcommands (`setquota`, `project`...) whose next call fails, with the message.
    pub fail: Vec<(String, String)>,
    /// Every command line run.
    pub calls: Vec<String>,
    /// How many of the next runs time out (the tool stuck on a hung filesystem).
    pub time_outs: usize,
    /// When set, each `lfs project -p ID -s` records in `reserved_at_assign` whether ID was
    /// reserved in this allocator at that moment.
    pub reservation_probe: Option<IdAllocator>,
    /// (project id, still reserved) of each assignment while `reservation_probe` is set.
    pub reserved_at_assign: Vec<(u32, bool)>,
}

impl FakeLfs {
    fn run(&mut self, cmd: &Command) -> CommandOutput {
        let args: Vec<String> = cmd
            .args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        self.calls.push(args.join(" "));
        let ok = |stdout: String| CommandOutput {
            status: Some(0),
            stdout,
            stderr: String::new(),
        };
        if let Some(i) = self
            .fail
            .iter()
            .position(|(sub, _)| args.first() == Some(sub))
        {
            let (_, stderr) = self.fail.remove(i);
            return CommandOutput {
                status: Some(1),
                stdout: String::new(),
                stderr,
            };
        }
        let num = |s: &str| s.trim_end_matches('k').parse::<u64>().unwrap();
        match args
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice()
        {
            ["project", "-p", id, "-s", dir] => {
                let id: u32 = id.parse().unwrap();
                if let Some(probe) = &self.reservation_probe {
                    let reserved = probe.reserve(id).is_err();
                    self.reserved_at_assign.push((id, reserved));
                }
                self.projects.insert(PathBuf::from(dir), id);
                ok(String::new())
            }
            ["project", "-d", dir] => {
                let id = self.projects.get(Path::new(dir)).copied().unwrap_or(0);
                ok(format!(
                    "{id:>5} {} {dir}\n",
                    if id > 0 { 'P' } else { '-' }
                ))
            }
            [
                "setquota",
                "-p",
                id,
                "-b",
                _,
                "-B",
                hard,
                "-i",
                _,
                "-I",
                _,
                _path,
            ] => {
                self.limits.insert(id.parse().unwrap(), num(hard));
                ok(String::new())
            }
            ["quota", "-p", id, path] => {
                let id: u32 = id.parse().unwrap();
                let used = self.used_kib.get(&id).copied().unwrap_or(0);
                let limit = self.limits.get(&id).copied().unwrap_or(0);
                let files = self.files.get(&id).copied().unwrap_or(0);
                ok(format!(
                    "Disk quotas for prj {id} (pid {id}):\n{:>15}{:>8} {:>7}{:>8}{:>8}{:>8} {:>7}{:>8}{:>8}\n{}{:>8} {:>7}{:>8}{:>8}{:>8} {:>7}{:>8}{:>8}\n",
                    "Filesystem",
                    "kbytes",
                    "quota",
                    "limit",
                    "grace",
                    "files",
                    "quota",
                    "limit",
                    "grace",
                    if path.len() > 15 {
                        format!("{path}\n{:15}", "")
                    } else {
                        format!("{path:>15}")
                    },
                    used,
                    0,
                    limit,
                    "-",
                    files,
                    0,
                    0,
                    "-"
                ))
            }
            other => CommandOutput {
                status: Some(22),
                stdout: String::new(),
                stderr: format!("fake lfs: unexpected {other:?}"),
            },
        }
    }
}

/// The fake mount table.
#[derive(Debug, Default)]
pub struct FakeMounts {
    /// Target to source (`bind:<dir>` for bind mounts).
    pub mounted: HashMap<PathBuf, String>,
    /// Read-only targets.
    pub read_only: HashSet<PathBuf>,
    /// Every call, as a line.
    pub calls: Vec<String>,
    /// Sources whose next mount fails.
    pub fail_sources: Vec<String>,
    /// Mount points whose filesystem hangs: a check of one is `DeadlineExceeded` until it
    /// is unmounted.
    pub hung: HashSet<PathBuf>,
    /// Mount ids, one more for each mount made.
    pub ids: HashMap<PathBuf, u32>,
}

impl FakeMounts {
    fn unmount(&mut self, target: &Path) -> Result<()> {
        self.calls.push(format!("umount {}", target.display()));
        self.mounted.remove(target);
        self.read_only.remove(target);
        self.ids.remove(target);
        Ok(())
    }

    /// Records a mount of `source` at `target`, with a fresh id.
    pub fn put(&mut self, target: &Path, source: String) {
        let id = 100 + u32::try_from(self.calls.len()).unwrap_or(0);
        self.mounted.insert(target.to_path_buf(), source);
        self.ids.insert(target.to_path_buf(), id);
    }

    fn bind(&mut self, source: &Path, target: &Path, read_only: bool) {
        self.calls.push(format!(
            "bind {} {} ro={read_only}",
            source.display(),
            target.display()
        ));
        self.put(target, format!("bind:{}", source.display()));
        if read_only {
            self.read_only.insert(target.to_path_buf());
        }
    }

    /// The mount id at `p`, as the real mounter answers: `NotFound` for a missing path,
    /// `DeadlineExceeded` for a hung mount.
    fn mount_id(&self, p: &Path) -> Result<Option<u32>> {
        if !p.exists() {
            return Err(Error::NotFound(format!("{} does not exist", p.display())));
        }
        if self.hung.contains(p) && self.mounted.contains_key(p) {
            return Err(Error::DeadlineExceeded(format!(
                "stat of {} did not return",
                p.display()
            )));
        }
        Ok(self.ids.get(p).copied())
    }

    /// What `lfs getname` answers for `path`: the fsname of a Lustre mount there.
    fn getname(&self, path: &Path) -> CommandOutput {
        let lustre = self.mounted.get(path).and_then(|source| {
            let (_, fs_path) = source.split_once(":/")?;
            fs_path.split('/').next().map(str::to_string)
        });
        match lustre {
            Some(fsname) => CommandOutput {
                status: Some(0),
                stdout: format!("{fsname}-ffff000000000001 {}\n", path.display()),
                stderr: String::new(),
            },
            None => CommandOutput {
                status: Some(231),
                stdout: String::new(),
                stderr: format!(
                    "cannot get name for `{}': Inappropriate ioctl for device\n",
                    path.display()
                ),
            },
        }
    }
}

/// A snapshot engine that writes a list of file names as its "archive".
#[derive(Debug)]
pub struct FakeEngine {
    open: tokio::sync::watch::Sender<bool>,
    /// The next `create` fails.
    pub fail_next: AtomicBool,
    /// Every call, as a line.
    pub calls: Mutex<Vec<String>>,
    /// The mode and owner of each restore's or copy's destination as the fill began.
    pub fill_dests: Mutex<Vec<(u32, u32)>>,
}

impl Default for FakeEngine {
    fn default() -> Self {
        Self {
            open: tokio::sync::watch::channel(true).0,
            fail_next: AtomicBool::new(false),
            calls: Mutex::new(Vec::new()),
            fill_dests: Mutex::new(Vec::new()),
        }
    }
}

impl FakeEngine {
    /// Holds back (`false`) or lets through (`true`) archives being written.
    pub fn set_open(&self, open: bool) {
        self.open.send_replace(open);
    }

    fn log(&self, line: String) {
        self.calls.lock().unwrap().push(line);
    }

    fn note_fill_dest(&self, dest: &Path) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(dest).map_err(|e| Error::io("stat", dest, e))?;
        let seen = (meta.mode() & 0o7777, meta.uid());
        self.fill_dests.lock().unwrap().push(seen);
        Ok(())
    }
}

fn names_in(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(names)
}

#[async_trait]
impl SnapshotEngine for FakeEngine {
    async fn create(
        &self,
        source: &Path,
        archive: &Path,
        options: &ArchiveOptions,
    ) -> Result<ArchiveInfo> {
        self.log(format!(
            "create {} {} {:?}",
            source.display(),
            archive.display(),
            options.tool
        ));
        let mut open = self.open.subscribe();
        let _ = open.wait_for(|o| *o).await;
        if self.fail_next.swap(false, Ordering::SeqCst) {
            return Err(Error::Command {
                program: "tar".into(),
                failure: CommandFailure::Exit(Some(2)),
                stderr: "tar: disk on fire".into(),
            });
        }
        let names = names_in(source).map_err(|e| Error::io("list", source, e))?;
        let body = names.join("\n");
        std::fs::write(archive, &body).map_err(|e| Error::io("write", archive, e))?;
        Ok(ArchiveInfo {
            size_bytes: body.len() as u64,
            checksum: options.verify.then(|| ArchiveChecksum {
                kind: options.checksum,
                hex: "0".repeat(64),
            }),
        })
    }

    async fn restore(&self, archive: &Path, dest: &Path, _options: &ArchiveOptions) -> Result<()> {
        self.log(format!("restore {} {}", archive.display(), dest.display()));
        self.note_fill_dest(dest)?;
        let body = std::fs::read_to_string(archive).map_err(|e| Error::io("read", archive, e))?;
        for name in body.lines().filter(|l| !l.is_empty()) {
            std::fs::write(dest.join(name), b"").map_err(|e| Error::io("write", dest, e))?;
        }
        Ok(())
    }

    async fn copy_tree(&self, source: &Path, dest: &Path, _options: &ArchiveOptions) -> Result<()> {
        self.log(format!("copy {} {}", source.display(), dest.display()));
        self.note_fill_dest(dest)?;
        let mut open = self.open.subscribe();
        let _ = open.wait_for(|o| *o).await;
        for name in names_in(source).map_err(|e| Error::io("list", source, e))? {
            std::fs::copy(source.join(&name), dest.join(&name))
                .map_err(|e| Error::io("copy", dest, e))?;
        }
        Ok(())
    }

    async fn delete(&self, archive: &Path) -> Result<()> {
        self.log(format!("delete {}", archive.display()));
        match std::fs::remove_file(archive) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io("remove", archive, e))
            }
            _ => Ok(()),
        }
    }
}

/// A backend over temporary directories and fakes.
pub struct Harness {
    /// Holds every directory of the test.
    pub root: TempDir,
    /// The backend under test.
    pub backend: LustreBackend,
    /// The fake `lfs`.
    pub lfs: Arc<Mutex<FakeLfs>>,
    /// The fake mount table.
    pub mounts: Arc<Mutex<FakeMounts>>,
    /// The fake archiver.
    pub engine: Arc<FakeEngine>,
    config: Value,
    settings: LustreSettings,
}

/// One entry: name, exaFS, zone.
pub type EntrySpec<'a> = (&'a str, &'a str, Option<&'a str>);

impl Harness {
    /// A controller over `entries`, each mounted at `<root>/<name>`.
    pub fn controller(entries: &[EntrySpec]) -> Self {
        Self::build(entries, Role::Controller, |_| {})
    }

    /// A node over `entries`.
    pub fn node(entries: &[EntrySpec]) -> Self {
        Self::build(entries, Role::Node, |_| {})
    }

    /// A harness with `edit` applied to each entry's JSON.
    pub fn build(entries: &[EntrySpec], role: Role, edit: impl Fn(&mut Value)) -> Self {
        let root = tempfile::tempdir().unwrap();
        let mut map = serde_json::Map::new();
        for (name, exa_fs, zone) in entries {
            let mut e = json!({"exaFS": exa_fs, "mountPoint": root.path().join(name).display().to_string()});
            if let Some(z) = zone {
                e["zone"] = json!(z);
            }
            edit(&mut e);
            map.insert(name.to_string(), e);
        }
        let config = json!({ "exascaler_map": map });
        let settings = LustreSettings {
            lfs: "/sim/lfs".into(),
            client_version_file: root.path().join("no-lustre-version"),
            command_timeout_seconds: 5,
            content_wait_seconds: 2,
            ..Default::default()
        };
        let lfs = Arc::new(Mutex::new(FakeLfs::default()));
        let mounts = Arc::new(Mutex::new(FakeMounts::default()));
        let engine = Arc::new(FakeEngine::default());
        let backend = Self::backend_over(&root, &config, &settings, role, &lfs, &mounts, &engine);
        Self {
            root,
            backend,
            lfs,
            mounts,
            engine,
            config,
            settings,
        }
    }

    fn backend_over(
        root: &TempDir,
        config: &Value,
        settings: &LustreSettings,
        role: Role,
        lfs: &Arc<Mutex<FakeLfs>>,
        mounts: &Arc<Mutex<FakeMounts>>,
        engine: &Arc<FakeEngine>,
    ) -> LustreBackend {
        let mut runner = MockCommandRunner::new();
        let fake = lfs.clone();
        let table = mounts.clone();
        runner.expect_run().returning(move |cmd| {
            if cmd.args.first().is_some_and(|a| a == "getname") {
                let path = Path::new(cmd.args.get(1).map_or("", |a| a.to_str().unwrap_or("")));
                return Ok(table.lock().unwrap().getname(path));
            }
            let mut fake = fake.lock().unwrap();
            if fake.time_outs > 0 {
                fake.time_outs -= 1;
                fake.calls.push(format!("timed out: {}", cmd.display()));
                return Err(Error::Command {
                    program: "lfs".into(),
                    failure: CommandFailure::Timeout(cmd.timeout),
                    stderr: String::new(),
                });
            }
            Ok(fake.run(cmd))
        });
        let ctx = BackendContext {
            role,
            node_id: "node-1".into(),
            driver_name: "exa.csi.ddn.com".into(),
            runner: Arc::new(runner),
            mounter: Arc::new(mounter(mounts.clone())),
            snapshots: engine.clone(),
            state_dir: root.path().join("state"),
            kubelet_dir: root.path().join("kubelet"),
        };
        LustreBackend::new(
            LustreConfig::from_value(config.clone()).unwrap(),
            settings.clone(),
            ctx,
        )
        .unwrap()
    }

    /// A fresh backend over the same filesystems and fakes (a restarted process).
    pub fn restart(&mut self) {
        let role = self.backend.inner.ctx.role;
        self.backend = Self::backend_over(
            &self.root,
            &self.config,
            &self.settings,
            role,
            &self.lfs,
            &self.mounts,
            &self.engine,
        );
    }

    /// Where entry `name`'s filesystem is.
    pub fn fs(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }
}

fn mounter(state: Arc<Mutex<FakeMounts>>) -> MockMounter {
    let mut m = MockMounter::new();
    let s = state.clone();
    m.expect_is_mount_point()
        .returning(move |p| s.lock().unwrap().mount_id(p).map(|id| id.is_some()));
    let s = state.clone();
    m.expect_mount()
        .returning(move |source, target, fs_type, options| {
            let mut s = s.lock().unwrap();
            s.calls.push(format!(
                "mount -t {fs_type} -o {} {source} {}",
                options.join(","),
                target.display()
            ));
            if !target.exists() {
                return Err(Error::NotFound(format!(
                    "{} does not exist",
                    target.display()
                )));
            }
            if let Some(i) = s.fail_sources.iter().position(|f| f == source) {
                s.fail_sources.remove(i);
                return Err(Error::Command {
                    program: "mount".into(),
                    failure: CommandFailure::Exit(Some(2)),
                    stderr: "mount.lustre: No such file or directory".into(),
                });
            }
            s.put(target, source.to_string());
            if options.iter().any(|o| o == "ro") {
                s.read_only.insert(target.to_path_buf());
            }
            Ok(())
        });
    let s = state.clone();
    m.expect_bind_mount()
        .returning(move |source, target, read_only| {
            s.lock().unwrap().bind(source, target, read_only);
            Ok(())
        });
    let s = state.clone();
    m.expect_bind_mount_below()
        .returning(move |mount, source, target, read_only| {
            let mut s = s.lock().unwrap();
            if !s.mounted.contains_key(mount) {
                return Err(Error::FailedPrecondition(format!(
                    "nothing is mounted at {}",
                    mount.display()
                )));
            }
            // The real mounter opens the source through directories only.
            csi_core::fs_paths::check_no_symlinks_below(mount, source)?;
            if !source.is_dir() {
                return Err(Error::NotFound(format!(
                    "bind mount source {} does not exist",
                    source.display()
                )));
            }
            s.bind(source, target, read_only);
            Ok(())
        });
    let s = state.clone();
    m.expect_unmount()
        .returning(move |target| s.lock().unwrap().unmount(target));
    let s = state.clone();
    m.expect_unmount_all().returning(move |path| {
        s.lock().unwrap().unmount(path)?;
        Ok(path.symlink_metadata().is_ok())
    });
    m.expect_mount_id()
        .returning(move |p| state.lock().unwrap().mount_id(p));
    m.expect_list_mounts().returning(|| Ok(Vec::new()));
    m
}

/// A CreateVolume request for `name` with `params` and `bytes`.
pub fn create_request(name: &str, params: &[(&str, &str)], bytes: i64) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.into(),
        capacity: CapacityRange::new(bytes, 0).unwrap(),
        capabilities: vec![capability(AccessMode::MultiNodeMultiWriter)],
        parameters: Parameters::new(
            params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        ),
        metadata: RequestMetadata::default(),
        secrets: Secrets::default(),
        content_source: None,
        topology: TopologyRequirement::default(),
    }
}

/// The same request filled from `source`.
pub fn with_source(
    mut req: CreateVolumeRequest,
    source: VolumeContentSource,
) -> CreateVolumeRequest {
    req.content_source = Some(source);
    req
}

/// A mount capability.
pub fn capability(mode: AccessMode) -> VolumeCapability {
    VolumeCapability {
        access_type: AccessType::Mount,
        fs_type: String::new(),
        mount_flags: Vec::new(),
        access_mode: mode,
    }
}

/// The standard two-zone setup.
pub const TWO_ZONES: &[EntrySpec] = &[
    ("exa1", "10.0.0.1@tcp:/fs1", Some("zone-1")),
    ("exa2", "10.0.0.2@tcp:/fs2", Some("zone-2")),
];

/// One filesystem without zone.
pub const ONE: &[EntrySpec] = &[("exa1", "10.0.0.1@tcp:/fs1", None)];
