//! What the BeeGFS servers keep, shared by `beegfs-ctl` (BeeGFS 7) and `beegfs` (BeeGFS 8):
//! entry ids and stripe patterns (`meta/entries.json`), quota limits (`meta/quota.json`),
//! quota usage computed from the files, nodes and targets.
//!
//! Entry records carry device and inode like project records, so a recreated directory does not
//! inherit a stale record. A directory made through a client mount gets its entry id and the
//! pattern of its nearest recorded ancestor when first looked up (the real metadata server fixes
//! the pattern at creation; changing a parent's pattern afterwards is the only visible difference).

use crate::clientconf::ClientAuth;
use crate::state::Filesystem;
use crate::usage::Usage;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

/// The id the root directory has.
pub const ROOT_ENTRY_ID: &str = "root";

/// Stripe pattern types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PatternType {
    /// Plain striping.
    Raid0,
    /// Buddy mirrored striping.
    BuddyMirror,
}

impl PatternType {
    /// The name BeeGFS prints.
    pub fn label(self) -> &'static str {
        match self {
            PatternType::Raid0 => "RAID0",
            PatternType::BuddyMirror => "Buddy Mirror",
        }
    }
}

/// A directory's stripe settings for new files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pattern {
    /// The pattern type.
    pub kind: PatternType,
    /// Chunk size in bytes.
    pub chunksize: u64,
    /// Desired number of storage targets per file.
    pub num_targets: u32,
    /// Storage pool id.
    pub pool: u16,
}

impl Default for Pattern {
    fn default() -> Self {
        Pattern {
            kind: PatternType::Raid0,
            chunksize: 512 * 1024,
            num_targets: 4,
            pool: 1,
        }
    }
}

/// Changes to a pattern (absent fields keep their value).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PatternUpdate {
    /// New chunk size.
    pub chunksize: Option<u64>,
    /// New number of targets.
    pub num_targets: Option<u32>,
    /// New pool.
    pub pool: Option<u16>,
    /// New type.
    pub kind: Option<PatternType>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct EntryRecord {
    entry_id: String,
    dev: u64,
    ino: u64,
    #[serde(default)]
    pattern: Option<Pattern>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Entries {
    #[serde(default)]
    next: u64,
    #[serde(default)]
    entries: BTreeMap<String, EntryRecord>,
}

const ENTRIES: &str = "entries.json";
const QUOTAS: &str = "quota.json";

/// What a lookup tells about an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryInfo {
    /// Path relative to the root (`""` for the root).
    pub rel: String,
    /// The entry id (`root` for the root).
    pub entry_id: String,
    /// The parent's entry id (`""` for the root).
    pub parent_id: String,
    /// Whether the entry is a directory.
    pub is_dir: bool,
    /// The directory's pattern, or for a file the pattern it was striped with.
    pub pattern: Pattern,
    /// For files: the storage targets holding its chunks.
    pub targets: Vec<u16>,
}

/// Why an entry cannot be found or made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryError {
    /// The path (or for a create, its parent) does not exist.
    PathNotExists,
    /// The entry exists already (create).
    Exists,
    /// The parent is not a directory (create).
    NotADir,
    /// The simulator failed.
    Internal(String),
}

impl EntryError {
    /// BeeGFS's text for the error.
    pub fn text(&self) -> &str {
        match self {
            EntryError::PathNotExists => "Path does not exist",
            EntryError::Exists => "Entry exists already",
            EntryError::NotADir => "Entry is not a directory",
            EntryError::Internal(msg) => msg,
        }
    }
}

fn internal<E: std::fmt::Display>(e: E) -> EntryError {
    EntryError::Internal(e.to_string())
}

fn parent_of(rel: &str) -> Option<&str> {
    if rel.is_empty() {
        None
    } else {
        Some(rel.rsplit_once('/').map(|(p, _)| p).unwrap_or(""))
    }
}

fn new_entry_id(entries: &mut Entries) -> String {
    entries.next += 1;
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("{:X}-{:08X}-1", entries.next, secs as u32)
}

fn record_valid(record: &EntryRecord, meta: &std::fs::Metadata) -> bool {
    record.dev == meta.dev() && record.ino == meta.ino()
}

/// Looks up `rel` (and every ancestor), assigning ids to entries seen for the first time.
fn lookup(
    fs: &Filesystem,
    entries: &mut Entries,
    rel: &str,
) -> Result<(EntryInfo, bool), EntryError> {
    let mut components: Vec<&str> = if rel.is_empty() {
        Vec::new()
    } else {
        rel.split('/').collect()
    };
    components.insert(0, "");
    let mut changed = false;
    let mut current_rel = String::new();
    let mut parent_id = String::new();
    let mut pattern = Pattern::default();
    let mut info = None;
    for (idx, component) in components.iter().enumerate() {
        if idx > 0 {
            if !current_rel.is_empty() {
                current_rel.push('/');
            }
            current_rel.push_str(component);
        }
        let meta = match std::fs::symlink_metadata(fs.data_path(&current_rel)) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(EntryError::PathNotExists),
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
                return Err(EntryError::PathNotExists);
            }
            Err(e) => return Err(internal(e)),
        };
        let last = idx + 1 == components.len();
        if !last && !meta.is_dir() {
            return Err(EntryError::PathNotExists);
        }
        let record = entries
            .entries
            .get(&current_rel)
            .filter(|r| record_valid(r, &meta))
            .cloned();
        let record = match record {
            Some(r) => r,
            None => {
                let entry_id = if current_rel.is_empty() {
                    ROOT_ENTRY_ID.to_string()
                } else {
                    new_entry_id(entries)
                };
                let r = EntryRecord {
                    entry_id,
                    dev: meta.dev(),
                    ino: meta.ino(),
                    pattern: meta.is_dir().then_some(pattern),
                };
                entries.entries.insert(current_rel.clone(), r.clone());
                changed = true;
                r
            }
        };
        let own_pattern = record.pattern.unwrap_or(pattern);
        if last {
            let targets = if meta.is_dir() {
                Vec::new()
            } else {
                (0..own_pattern
                    .num_targets
                    .min(u32::from(fs.record.num_targets)))
                    .map(|i| 101 + i as u16)
                    .collect()
            };
            info = Some(EntryInfo {
                rel: current_rel.clone(),
                entry_id: record.entry_id.clone(),
                parent_id: parent_id.clone(),
                is_dir: meta.is_dir(),
                pattern: own_pattern,
                targets,
            });
        }
        parent_id = record.entry_id;
        pattern = own_pattern;
    }
    info.map(|i| (i, changed))
        .ok_or_else(|| EntryError::Internal("empty lookup".into()))
}

/// Looks up an entry by its path relative to the filesystem root.
pub fn entry_info(fs: &Filesystem, rel: &str) -> Result<EntryInfo, EntryError> {
    let _lock = fs.lock().map_err(internal)?;
    let mut entries: Entries = fs.read_meta(ENTRIES).map_err(internal)?;
    let (info, changed) = lookup(fs, &mut entries, rel)?;
    if changed {
        fs.write_meta(ENTRIES, &entries).map_err(internal)?;
    }
    Ok(info)
}

/// Creates a directory as the metadata server does for `MkDir`: exact mode (no umask), owner.
pub fn create_dir(
    fs: &Filesystem,
    rel: &str,
    mode: u32,
    uid: u32,
    gid: u32,
) -> Result<EntryInfo, EntryError> {
    let Some(parent) = parent_of(rel) else {
        return Err(EntryError::Exists);
    };
    let _lock = fs.lock().map_err(internal)?;
    let mut entries: Entries = fs.read_meta(ENTRIES).map_err(internal)?;
    let (parent_info, _) = lookup(fs, &mut entries, parent)?;
    if !parent_info.is_dir {
        return Err(EntryError::NotADir);
    }
    let path = fs.data_path(rel);
    match std::fs::create_dir(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(EntryError::Exists),
        Err(e) => return Err(internal(e)),
    }
    std::os::unix::fs::chown(&path, Some(uid), Some(gid)).map_err(internal)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & 0o7777))
        .map_err(internal)?;
    let meta = std::fs::symlink_metadata(&path).map_err(internal)?;
    let entry_id = new_entry_id(&mut entries);
    entries.entries.insert(
        rel.to_string(),
        EntryRecord {
            entry_id: entry_id.clone(),
            dev: meta.dev(),
            ino: meta.ino(),
            pattern: Some(parent_info.pattern),
        },
    );
    fs.write_meta(ENTRIES, &entries).map_err(internal)?;
    Ok(EntryInfo {
        rel: rel.to_string(),
        entry_id,
        parent_id: parent_info.entry_id,
        is_dir: true,
        pattern: parent_info.pattern,
        targets: Vec::new(),
    })
}

/// Changes the pattern of a directory; returns the new pattern.
pub fn set_pattern(
    fs: &Filesystem,
    rel: &str,
    update: PatternUpdate,
) -> Result<Pattern, EntryError> {
    let _lock = fs.lock().map_err(internal)?;
    let mut entries: Entries = fs.read_meta(ENTRIES).map_err(internal)?;
    let (info, _) = lookup(fs, &mut entries, rel)?;
    if !info.is_dir {
        return Err(EntryError::NotADir);
    }
    let mut pattern = info.pattern;
    if let Some(c) = update.chunksize {
        pattern.chunksize = c;
    }
    if let Some(n) = update.num_targets {
        pattern.num_targets = n;
    }
    if let Some(p) = update.pool {
        pattern.pool = p;
    }
    if let Some(k) = update.kind {
        pattern.kind = k;
    }
    if let Some(record) = entries.entries.get_mut(rel) {
        record.pattern = Some(pattern);
    }
    fs.write_meta(ENTRIES, &entries).map_err(internal)?;
    Ok(pattern)
}

/// Quota ids are users or groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaKind {
    /// Per uid.
    User,
    /// Per gid.
    Group,
}

/// Limits of one id in one pool. 0 means "not set" (the default, unlimited); `u64::MAX` means
/// explicitly unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limit {
    /// Space in bytes.
    pub space: u64,
    /// Inodes (chunk files).
    pub inodes: u64,
}

impl Limit {
    /// Whether a limit value means "no limit".
    pub fn unlimited(value: u64) -> bool {
        value == 0 || value == u64::MAX
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Quotas {
    #[serde(default)]
    users: BTreeMap<u32, BTreeMap<u16, Limit>>,
    #[serde(default)]
    groups: BTreeMap<u32, BTreeMap<u16, Limit>>,
    /// Default limits per pool, of ids without limits of their own.
    #[serde(default)]
    user_defaults: BTreeMap<u16, Limit>,
    #[serde(default)]
    group_defaults: BTreeMap<u16, Limit>,
}

impl Quotas {
    fn table(&mut self, kind: QuotaKind) -> &mut BTreeMap<u32, BTreeMap<u16, Limit>> {
        match kind {
            QuotaKind::User => &mut self.users,
            QuotaKind::Group => &mut self.groups,
        }
    }

    fn defaults(&mut self, kind: QuotaKind) -> &mut BTreeMap<u16, Limit> {
        match kind {
            QuotaKind::User => &mut self.user_defaults,
            QuotaKind::Group => &mut self.group_defaults,
        }
    }
}

/// Sets the default limits of `kind` in a pool (absent values keep their setting).
pub fn set_default_limits(
    fs: &Filesystem,
    kind: QuotaKind,
    pool: u16,
    space: Option<u64>,
    inodes: Option<u64>,
) -> crate::error::Result<()> {
    let _lock = fs.lock()?;
    let mut quotas: Quotas = fs.read_meta(QUOTAS)?;
    quotas
        .defaults(kind)
        .entry(pool)
        .or_default()
        .update(space, inodes);
    fs.write_meta(QUOTAS, &quotas)
}

/// The default limits of `kind` in a pool (0: none).
pub fn default_limits(fs: &Filesystem, kind: QuotaKind, pool: u16) -> crate::error::Result<Limit> {
    let mut quotas: Quotas = fs.read_meta(QUOTAS)?;
    Ok(quotas
        .defaults(kind)
        .get(&pool)
        .copied()
        .unwrap_or_default())
}

impl Limit {
    /// Sets the values given; absent ones keep their setting.
    fn update(&mut self, space: Option<u64>, inodes: Option<u64>) {
        if let Some(space) = space {
            self.space = space;
        }
        if let Some(inodes) = inodes {
            self.inodes = inodes;
        }
    }

    /// The limits an id shows: its own where set (not 0), else the default.
    pub fn or_default(self, default: Limit) -> Limit {
        Limit {
            space: if self.space == 0 {
                default.space
            } else {
                self.space
            },
            inodes: if self.inodes == 0 {
                default.inodes
            } else {
                self.inodes
            },
        }
    }
}

/// Sets the limits of ids in a pool (absent values keep their setting).
pub fn set_limits(
    fs: &Filesystem,
    kind: QuotaKind,
    ids: &[u32],
    pool: u16,
    space: Option<u64>,
    inodes: Option<u64>,
) -> crate::error::Result<()> {
    let _lock = fs.lock()?;
    let mut quotas: Quotas = fs.read_meta(QUOTAS)?;
    for id in ids {
        let limit = quotas
            .table(kind)
            .entry(*id)
            .or_default()
            .entry(pool)
            .or_default();
        limit.update(space, inodes);
    }
    fs.write_meta(QUOTAS, &quotas)
}

/// The limits of every id with a setting in a pool.
pub fn limits(
    fs: &Filesystem,
    kind: QuotaKind,
    pool: u16,
) -> crate::error::Result<BTreeMap<u32, Limit>> {
    let mut quotas: Quotas = fs.read_meta(QUOTAS)?;
    Ok(quotas
        .table(kind)
        .iter()
        .filter_map(|(id, pools)| pools.get(&pool).map(|l| (*id, *l)))
        .collect())
}

/// Usage per id in a pool: regular files (chunk files) owned by the id whose directory's pattern
/// uses the pool.
pub fn usage_by_id(
    fs: &Filesystem,
    kind: QuotaKind,
    pool: u16,
) -> io::Result<BTreeMap<u32, Usage>> {
    let entries: Entries = fs
        .read_meta(ENTRIES)
        .map_err(|e| io::Error::other(e.to_string()))?;
    let root = fs.data_dir();
    let dev = std::fs::symlink_metadata(&root)?.dev();
    let mut out: BTreeMap<u32, Usage> = BTreeMap::new();
    let mut stack = vec![(String::new(), Pattern::default())];
    while let Some((dir_rel, parent_pattern)) = stack.pop() {
        let dir_meta = match std::fs::symlink_metadata(fs.data_path(&dir_rel)) {
            Ok(meta) => meta,
            Err(_) => continue,
        };
        let pattern = entries
            .entries
            .get(&dir_rel)
            .filter(|r| record_valid(r, &dir_meta))
            .and_then(|r| r.pattern)
            .unwrap_or(parent_pattern);
        let Ok(read) = std::fs::read_dir(fs.data_path(&dir_rel)) else {
            continue;
        };
        for entry in read.filter_map(|e| e.ok()) {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.dev() != dev {
                continue;
            }
            let rel = if dir_rel.is_empty() {
                name
            } else {
                format!("{dir_rel}/{name}")
            };
            if meta.is_dir() {
                stack.push((rel, pattern));
            } else if meta.is_file() && pattern.pool == pool {
                let id = match kind {
                    QuotaKind::User => meta.uid(),
                    QuotaKind::Group => meta.gid(),
                };
                out.entry(id).or_default().add(&meta);
            }
        }
    }
    Ok(out)
}

/// Whether the authentication presented is accepted by the filesystem.
pub fn auth_accepted(fs: &Filesystem, presented: &ClientAuth) -> crate::error::Result<bool> {
    Ok(match fs.secret()? {
        None => true,
        Some(secret) => *presented == ClientAuth::Secret(secret),
    })
}

/// The storage node a target belongs to (one target per node).
pub fn target_node(target: u16) -> u16 {
    target.saturating_sub(100)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::projects::ProjectBackend;
    use crate::state::{FsKind, FsRecord, StateRoot, StoragePool};

    fn beegfs(dir: &std::path::Path) -> Filesystem {
        StateRoot::new(dir)
            .create_fs(
                FsRecord {
                    kind: FsKind::Beegfs,
                    name: "mgmt".into(),
                    nids: vec![],
                    beegfs_version: Some(7),
                    grpc_port: 8010,
                    pools: vec![
                        StoragePool {
                            id: 1,
                            name: "Default".into(),
                            alias: "storage_pool_default".into(),
                        },
                        StoragePool {
                            id: 2,
                            name: "fast".into(),
                            alias: "pool_2".into(),
                        },
                    ],
                    num_targets: 4,
                    auth_required: false,
                    tls_required: false,
                    project_backend: ProjectBackend::Recorded,
                },
                None,
                None,
            )
            .unwrap()
    }

    #[test]
    fn directories_inherit_the_parent_pattern_at_creation() {
        let dir = tempfile::tempdir().unwrap();
        let fs = beegfs(dir.path());
        let root = entry_info(&fs, "").unwrap();
        assert_eq!(root.entry_id, ROOT_ENTRY_ID);
        assert_eq!(
            create_dir(&fs, "k8s", 0o755, 0, 0).unwrap().parent_id,
            "root"
        );
        set_pattern(
            &fs,
            "k8s",
            PatternUpdate {
                chunksize: Some(1 << 20),
                pool: Some(2),
                ..Default::default()
            },
        )
        .unwrap();
        let vol = create_dir(&fs, "k8s/vol", 0o2770, 1000, 2000).unwrap();
        assert_eq!(vol.pattern.chunksize, 1 << 20);
        assert_eq!(vol.pattern.pool, 2);
        let meta = std::fs::metadata(fs.data_path("k8s/vol")).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o2770);
        assert_eq!((meta.uid(), meta.gid()), (1000, 2000));
        assert_eq!(
            create_dir(&fs, "k8s/vol", 0o755, 0, 0),
            Err(EntryError::Exists)
        );
        assert_eq!(
            create_dir(&fs, "nope/vol", 0o755, 0, 0),
            Err(EntryError::PathNotExists)
        );
        assert_eq!(entry_info(&fs, "k8s/other"), Err(EntryError::PathNotExists));
        let again = entry_info(&fs, "k8s/vol").unwrap();
        assert_eq!(again.entry_id, vol.entry_id);
    }

    #[test]
    fn usage_is_counted_per_group_and_pool() {
        let dir = tempfile::tempdir().unwrap();
        let fs = beegfs(dir.path());
        create_dir(&fs, "a", 0o755, 0, 0).unwrap();
        create_dir(&fs, "b", 0o755, 0, 0).unwrap();
        set_pattern(
            &fs,
            "b",
            PatternUpdate {
                pool: Some(2),
                ..Default::default()
            },
        )
        .unwrap();
        for d in ["a", "b"] {
            let f = fs.data_path(&format!("{d}/f"));
            std::fs::write(&f, vec![0u8; 8192]).unwrap();
            std::os::unix::fs::chown(&f, None, Some(3000)).unwrap();
        }
        let pool1 = usage_by_id(&fs, QuotaKind::Group, 1).unwrap();
        let pool2 = usage_by_id(&fs, QuotaKind::Group, 2).unwrap();
        assert_eq!(pool1[&3000].inodes, 1);
        assert_eq!(pool2[&3000].inodes, 1);
        assert!(pool1[&3000].bytes >= 8192);
        set_limits(&fs, QuotaKind::Group, &[3000], 2, Some(1 << 30), None).unwrap();
        set_limits(&fs, QuotaKind::Group, &[3000], 2, None, Some(10)).unwrap();
        assert_eq!(
            limits(&fs, QuotaKind::Group, 2).unwrap()[&3000],
            Limit {
                space: 1 << 30,
                inodes: 10
            }
        );
        assert!(limits(&fs, QuotaKind::Group, 1).unwrap().is_empty());
    }
}
