//! The state root: simulated filesystems, their metadata, locks and the mount records.
//!
//! Every simulated filesystem is a directory `<root>/<kind>/<name>/` holding `data/` (the files
//! clients see through their mounts) and `meta/` (what the servers would keep: quota limits,
//! recorded project ids, stripe patterns, recorded mounts). Metadata files are JSON, rewritten
//! atomically under an exclusive `flock` on `meta/.lock`.

use crate::error::{Result, SimError};
use crate::projects::{self, ProjectBackend};
use crate::tools::lctl::LUSTRE_VERSION;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// The environment variable naming the state root.
pub const ROOT_ENV: &str = "PFS_SIM_ROOT";

/// The directory holding all simulator state.
#[derive(Debug, Clone)]
pub struct StateRoot {
    path: PathBuf,
}

/// The two kinds of simulated filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsKind {
    /// A Lustre filesystem, named by its fsname.
    Lustre,
    /// A BeeGFS filesystem, named by its management host.
    Beegfs,
}

impl FsKind {
    fn dir_name(self) -> &'static str {
        match self {
            FsKind::Lustre => "lustre",
            FsKind::Beegfs => "beegfs",
        }
    }
}

/// A BeeGFS storage pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoragePool {
    /// Numeric id (1 is the default pool).
    pub id: u16,
    /// Description shown by `beegfs-ctl` (`Default` for pool 1).
    pub name: String,
    /// Alias shown by the BeeGFS 8 tool (`storage_pool_default` for pool 1).
    pub alias: String,
}

/// `meta/fs.json`: what kind of filesystem this is and how it behaves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsRecord {
    /// Lustre or BeeGFS.
    pub kind: FsKind,
    /// Lustre fsname or BeeGFS management host.
    pub name: String,
    /// Lustre MGS NIDs accepted in mount sources (empty: any).
    #[serde(default)]
    pub nids: Vec<String>,
    /// BeeGFS major version (7 or 8).
    #[serde(default)]
    pub beegfs_version: Option<u8>,
    /// BeeGFS 8 management gRPC port.
    #[serde(default = "default_grpc_port")]
    pub grpc_port: u16,
    /// BeeGFS storage pools.
    #[serde(default)]
    pub pools: Vec<StoragePool>,
    /// BeeGFS storage targets (ids 101, 102, ...).
    #[serde(default = "default_targets")]
    pub num_targets: u16,
    /// Whether clients must present the secret in `meta/conn.auth`.
    #[serde(default)]
    pub auth_required: bool,
    /// Whether BeeGFS 8 clients must use TLS with the certificate in `meta/tls-cert.pem`.
    #[serde(default)]
    pub tls_required: bool,
    /// Where project ids live (Lustre).
    #[serde(default)]
    pub project_backend: ProjectBackend,
}

fn default_grpc_port() -> u16 {
    8010
}

fn default_targets() -> u16 {
    4
}

/// A mount made by the simulated `mount`, as recorded in `meta/mounts.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountRecord {
    /// The mount point (canonical path).
    pub target: PathBuf,
    /// The source as given (`10.0.0.1@tcp:/testfs/sub`, `beegfs_nodev`).
    pub source: String,
    /// The directory of the filesystem that is mounted, relative to its root ("" for the root).
    pub subdir: String,
    /// The mount options as given.
    pub options: Vec<String>,
    /// The filesystem type (`lustre`, `beegfs`).
    pub fstype: String,
}

/// A simulated filesystem.
#[derive(Debug, Clone)]
pub struct Filesystem {
    /// `<root>/<kind>/<name>`.
    pub dir: PathBuf,
    /// Its `meta/fs.json`.
    pub record: FsRecord,
}

/// A path resolved to the simulated filesystem that holds it.
#[derive(Debug, Clone)]
pub struct Located {
    /// The filesystem.
    pub fs: Filesystem,
    /// The path relative to the filesystem root (`""` for the root, `/`-separated).
    pub rel: String,
    /// The mount point through which the path was reached, if any.
    pub mount_target: Option<PathBuf>,
}

/// An exclusive advisory lock on a file, released on drop.
pub struct FileLock {
    _lock: nix::fcntl::Flock<File>,
}

impl FileLock {
    /// Takes an exclusive lock on `path`, creating the file if needed; blocks until granted.
    pub fn exclusive(path: &Path) -> Result<Self> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| SimError::io("create", parent, e))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| SimError::io("open", path, e))?;
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, errno)| SimError::io("lock", path, errno.into()))?;
        Ok(FileLock { _lock: lock })
    }
}

/// Reads a JSON file, or the default value when it does not exist.
pub fn read_json_or_default<T: DeserializeOwned + Default>(path: &Path) -> Result<T> {
    match std::fs::read(path) {
        Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Ok(T::default()),
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| SimError::Json {
            path: path.to_path_buf(),
            source,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(SimError::io("read", path, e)),
    }
}

/// Writes a JSON file atomically (temporary file, then rename).
pub fn write_json_atomic<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_vec_pretty(value).map_err(|source| SimError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    write_file_atomic(path, &text, 0o644)
}

/// Writes bytes atomically with the given mode.
pub fn write_file_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| SimError::io("create", parent, e))?;
    let tmp = parent.join(format!(
        ".{}.tmp.{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("state"),
        std::process::id()
    ));
    let mut file = File::create(&tmp).map_err(|e| SimError::io("create", &tmp, e))?;
    file.write_all(bytes)
        .map_err(|e| SimError::io("write", &tmp, e))?;
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(|e| SimError::io("chmod", &tmp, e))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(|e| SimError::io("rename", path, e))
}

/// Whether a filesystem or host name is safe as a single directory name.
pub fn valid_component(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'))
}

impl StateRoot {
    /// The state root at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        StateRoot { path: path.into() }
    }

    /// The state root named by `PFS_SIM_ROOT`, created if missing.
    pub fn from_env() -> Result<Self> {
        let raw = std::env::var_os(ROOT_ENV)
            .filter(|v| !v.is_empty())
            .ok_or(SimError::RootUnset)?;
        let path = PathBuf::from(raw);
        std::fs::create_dir_all(&path).map_err(|e| SimError::io("create", &path, e))?;
        let path = path
            .canonicalize()
            .map_err(|e| SimError::io("resolve", &path, e))?;
        Ok(StateRoot { path })
    }

    /// The root directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `sys/fs/lustre/version`: the Lustre client's version file, as the kernel shows it
    /// while the module is loaded; written with the first Lustre filesystem.
    pub fn lustre_version_file(&self) -> PathBuf {
        self.path.join("sys/fs/lustre/version")
    }

    /// `faults.json`.
    pub fn faults_file(&self) -> PathBuf {
        self.path.join("faults.json")
    }

    /// `faults-state.json`: uses of counted fault rules.
    pub fn faults_state_file(&self) -> PathBuf {
        self.path.join("faults-state.json")
    }

    /// The lock file guarding the two fault files.
    pub fn faults_lock(&self) -> PathBuf {
        self.path.join(".faults.lock")
    }

    /// `calls.log`: one JSON line per simulated tool invocation.
    pub fn calls_log(&self) -> PathBuf {
        self.path.join("calls.log")
    }

    /// `dmesg.log`: what a real client would have written to the kernel log.
    pub fn dmesg_log(&self) -> PathBuf {
        self.path.join("dmesg.log")
    }

    /// The directory of a filesystem (whether or not it exists).
    pub fn fs_dir(&self, kind: FsKind, name: &str) -> PathBuf {
        self.path.join(kind.dir_name()).join(name)
    }

    /// Opens a filesystem by name; `None` when there is no such filesystem.
    pub fn open_fs(&self, kind: FsKind, name: &str) -> Result<Option<Filesystem>> {
        if !valid_component(name) {
            return Ok(None);
        }
        let dir = self.fs_dir(kind, name);
        let record_path = dir.join("meta").join("fs.json");
        if !record_path.exists() {
            return Ok(None);
        }
        let text =
            std::fs::read(&record_path).map_err(|e| SimError::io("read", &record_path, e))?;
        let record: FsRecord = serde_json::from_slice(&text).map_err(|source| SimError::Json {
            path: record_path.clone(),
            source,
        })?;
        Ok(Some(Filesystem { dir, record }))
    }

    /// All filesystems of a kind, sorted by name.
    pub fn filesystems(&self, kind: FsKind) -> Result<Vec<Filesystem>> {
        let dir = self.path.join(kind.dir_name());
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(SimError::io("list", dir, e)),
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        let mut out = Vec::new();
        for name in names {
            if let Some(fs) = self.open_fs(kind, &name)? {
                out.push(fs);
            }
        }
        Ok(out)
    }

    /// Creates a filesystem; fails if one of that kind and name exists.
    pub fn create_fs(
        &self,
        record: FsRecord,
        secret: Option<&[u8]>,
        tls_cert: Option<&[u8]>,
    ) -> Result<Filesystem> {
        if !valid_component(&record.name) {
            return Err(SimError::Invalid(format!(
                "invalid filesystem name {:?}: use letters, digits, '.', '_', '-', ':'",
                record.name
            )));
        }
        let kind_dir = self.path.join(record.kind.dir_name());
        std::fs::create_dir_all(&kind_dir).map_err(|e| SimError::io("create", &kind_dir, e))?;
        let _lock = FileLock::exclusive(&kind_dir.join(".create.lock"))?;
        let dir = self.fs_dir(record.kind, &record.name);
        if dir.join("meta").join("fs.json").exists() {
            return Err(SimError::Filesystem(format!(
                "a {} filesystem named {} already exists",
                record.kind.dir_name(),
                record.name
            )));
        }
        let data = dir.join("data");
        let meta = dir.join("meta");
        for d in [&data, &meta] {
            std::fs::create_dir_all(d).map_err(|e| SimError::io("create", d, e))?;
        }
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| SimError::io("chmod", &data, e))?;
        let mut record = record;
        if record.kind == FsKind::Lustre {
            record.project_backend = projects::probe_backend(&meta);
            let version = self.lustre_version_file();
            if !version.exists() {
                if let Some(dir) = version.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| SimError::io("create", dir, e))?;
                }
                let text = format!("{LUSTRE_VERSION}\n");
                write_file_atomic(&version, text.as_bytes(), 0o444)?;
            }
        }
        if let Some(secret) = secret {
            write_file_atomic(&meta.join("conn.auth"), secret, 0o400)?;
            record.auth_required = true;
        }
        if let Some(cert) = tls_cert {
            write_file_atomic(&meta.join("tls-cert.pem"), cert, 0o400)?;
            record.tls_required = true;
        }
        write_json_atomic(&meta.join("fs.json"), &record)?;
        Ok(Filesystem { dir, record })
    }

    /// Finds the simulated filesystem holding `path`, through a recorded mount (verified by
    /// comparing device and inode of the mount point with the mounted directory) or, when
    /// `allow_data_dir` is set, directly inside a data directory. `None` when the path exists
    /// but belongs to no simulated filesystem; an error when it cannot be resolved.
    pub fn locate(
        &self,
        kind: FsKind,
        path: &Path,
        allow_data_dir: bool,
    ) -> std::io::Result<Option<Located>> {
        let path = std::fs::canonicalize(path)?;
        let filesystems = self
            .filesystems(kind)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let mut best: Option<(usize, Located)> = None;
        for fs in filesystems {
            let data_dir = fs.data_dir();
            let mounts = fs.mounts().unwrap_or_default();
            for m in mounts {
                let Ok(rest) = path.strip_prefix(&m.target) else {
                    continue;
                };
                let depth = m.target.components().count();
                if best.as_ref().is_some_and(|(d, _)| *d >= depth) {
                    continue;
                }
                let mounted = data_dir.join(&m.subdir);
                if !same_inode(&m.target, &mounted) {
                    continue;
                }
                let rel = join_rel(&m.subdir, rest);
                best = Some((
                    depth,
                    Located {
                        fs: fs.clone(),
                        rel,
                        mount_target: Some(m.target.clone()),
                    },
                ));
            }
            if best.is_none()
                && let Some(rel) = through_mount_table(&path, &data_dir)
            {
                best = Some((
                    0,
                    Located {
                        fs: fs.clone(),
                        rel,
                        mount_target: None,
                    },
                ));
                continue;
            }
            if allow_data_dir
                && best.is_none()
                && let Ok(rest) = path.strip_prefix(&data_dir)
            {
                best = Some((
                    0,
                    Located {
                        fs: fs.clone(),
                        rel: rel_string(rest),
                        mount_target: None,
                    },
                ));
            }
        }
        Ok(best.map(|(_, l)| l))
    }
}

/// The path of `path` relative to `data_dir` when `path` is reached through a mount of the
/// data directory or of one of its subdirectories that the simulator did not record (a
/// bind mount of a recorded mount, as the driver makes for staging and publishing).
fn through_mount_table(path: &Path, data_dir: &Path) -> Option<String> {
    let mounts = crate::mount_table::read().ok()?;
    let data_dir = std::fs::canonicalize(data_dir).ok()?;
    let (path_dev, inner) = crate::mount_table::inside_device(&mounts, path)?;
    let (data_dev, data_inner) = crate::mount_table::inside_device(&mounts, &data_dir)?;
    // A path below the data directory itself is not "through a mount".
    if path.starts_with(&data_dir) || path_dev != data_dev {
        return None;
    }
    inner.strip_prefix(&data_inner).ok().map(rel_string)
}

/// Whether two paths name the same inode (following symlinks).
pub fn same_inode(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// A relative path as a `/`-separated string without `.` components.
pub fn rel_string(path: &Path) -> String {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(s) => s.to_str(),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn join_rel(base: &str, rest: &Path) -> String {
    let rest = rel_string(rest);
    match (base.is_empty(), rest.is_empty()) {
        (true, _) => rest,
        (false, true) => base.to_string(),
        (false, false) => format!("{base}/{rest}"),
    }
}

/// Normalizes a path given relative to a filesystem root (`/a/b/`, `a//b`): `None` when it
/// contains `..` or is not valid UTF-8.
pub fn normalize_fs_path(path: &str) -> Option<String> {
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return None,
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

impl Filesystem {
    /// The files clients see.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The servers' metadata.
    pub fn meta_dir(&self) -> PathBuf {
        self.dir.join("meta")
    }

    /// The absolute path of a filesystem-relative path.
    pub fn data_path(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.data_dir()
        } else {
            self.data_dir().join(rel)
        }
    }

    /// Takes the filesystem's metadata lock.
    pub fn lock(&self) -> Result<FileLock> {
        FileLock::exclusive(&self.meta_dir().join(".lock"))
    }

    /// Reads a metadata file (default when missing).
    pub fn read_meta<T: DeserializeOwned + Default>(&self, name: &str) -> Result<T> {
        read_json_or_default(&self.meta_dir().join(name))
    }

    /// Writes a metadata file atomically (hold [`Filesystem::lock`] around read-modify-write).
    pub fn write_meta<T: Serialize + ?Sized>(&self, name: &str, value: &T) -> Result<()> {
        write_json_atomic(&self.meta_dir().join(name), value)
    }

    /// The recorded mounts.
    pub fn mounts(&self) -> Result<Vec<MountRecord>> {
        self.read_meta("mounts.json")
    }

    /// Records a mount, replacing any earlier record for the same target.
    pub fn record_mount(&self, record: MountRecord) -> Result<()> {
        let _lock = self.lock()?;
        let mut mounts = self.mounts()?;
        mounts.retain(|m| m.target != record.target);
        mounts.push(record);
        self.write_meta("mounts.json", &mounts)
    }

    /// Forgets the mount records for a target; returns whether there was one.
    pub fn forget_mount(&self, target: &Path) -> Result<bool> {
        let _lock = self.lock()?;
        let mut mounts = self.mounts()?;
        let before = mounts.len();
        mounts.retain(|m| m.target != target);
        if mounts.len() != before {
            self.write_meta("mounts.json", &mounts)?;
        }
        Ok(mounts.len() != before)
    }

    /// The secret clients must present, if the filesystem requires one.
    pub fn secret(&self) -> Result<Option<Vec<u8>>> {
        self.optional_file("conn.auth", self.record.auth_required)
    }

    /// The TLS certificate clients must trust, if the filesystem requires TLS.
    pub fn tls_cert(&self) -> Result<Option<Vec<u8>>> {
        self.optional_file("tls-cert.pem", self.record.tls_required)
    }

    fn optional_file(&self, name: &str, wanted: bool) -> Result<Option<Vec<u8>>> {
        if !wanted {
            return Ok(None);
        }
        let path = self.meta_dir().join(name);
        std::fs::read(&path)
            .map(Some)
            .map_err(|e| SimError::io("read", path, e))
    }

    /// The storage pool with this id.
    pub fn pool(&self, id: u16) -> Option<&StoragePool> {
        self.record.pools.iter().find(|p| p.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_must_be_single_safe_components() {
        assert!(valid_component("testfs"));
        assert!(valid_component("10.0.0.5"));
        assert!(valid_component("mgmt-1.example"));
        assert!(!valid_component(""));
        assert!(!valid_component(".."));
        assert!(!valid_component("a/b"));
        assert!(!valid_component("a b"));
    }

    #[test]
    fn filesystem_paths_are_normalized() {
        assert_eq!(
            normalize_fs_path("/k8s//all/pvc/").as_deref(),
            Some("k8s/all/pvc")
        );
        assert_eq!(normalize_fs_path("/").as_deref(), Some(""));
        assert_eq!(normalize_fs_path("./a").as_deref(), Some("a"));
        assert_eq!(normalize_fs_path("/a/../b"), None);
    }

    #[test]
    fn create_then_open_and_refuse_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let root = StateRoot::new(dir.path());
        let record = FsRecord {
            kind: FsKind::Beegfs,
            name: "10.0.0.5".into(),
            nids: vec![],
            beegfs_version: Some(7),
            grpc_port: 8010,
            pools: vec![],
            num_targets: 4,
            auth_required: false,
            tls_required: false,
            project_backend: ProjectBackend::Recorded,
        };
        let fs = root
            .create_fs(record.clone(), Some(b"secret"), None)
            .unwrap();
        assert!(fs.data_dir().is_dir());
        assert_eq!(fs.secret().unwrap().as_deref(), Some(&b"secret"[..]));
        let opened = root.open_fs(FsKind::Beegfs, "10.0.0.5").unwrap().unwrap();
        assert!(opened.record.auth_required);
        assert!(root.create_fs(record, None, None).is_err());
        assert_eq!(root.filesystems(FsKind::Beegfs).unwrap().len(), 1);
        assert!(root.filesystems(FsKind::Lustre).unwrap().is_empty());
        assert!(root.open_fs(FsKind::Beegfs, "../x").unwrap().is_none());
    }

    proptest! {
        #[test]
        fn normalized_paths_have_no_empty_or_dot_components(path in "[a-z./]{0,30}") {
            if let Some(n) = normalize_fs_path(&path) {
                prop_assert!(!n.starts_with('/') && !n.ends_with('/'));
                prop_assert!(n.is_empty() || n.split('/').all(|c| !c.is_empty() && c != "." && c != ".."));
            } else {
                prop_assert!(path.split('/').any(|c| c == ".."));
            }
        }
    }
}
