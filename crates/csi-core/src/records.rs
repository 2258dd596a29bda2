//! Crash-safe records of what the driver made, kept on the filesystem they describe.
//!
//! Backends keep one JSON file per volume or snapshot in a hidden directory of the
//! filesystem (e.g. `<mount>/.pfs-csi/volumes/`). A record is written to a temporary file,
//! synced, and renamed over the old one, and the directory is synced: after a crash a
//! record is either the old or the new version, never a torn one. Records are how the
//! driver tells a volume it created (and may delete) from one it did not.
//!
//! Where users can make directories next to the records (a BeeGFS `volDirBasePath` is any
//! directory of the filesystem), a store is made [`private`](RecordStore::private_from): its
//! directories must be the driver's own, so a record planted by a user is never believed.

use std::fs::{self, DirBuilder, File, Metadata, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::marker::PhantomData;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// A listing of what could be read: the records with their keys, in key order, and the
/// error of each record that could not be read.
pub type Listed<T> = (Vec<(String, T)>, Vec<Error>);

/// A directory of JSON records of type `T`, keyed by a file-name-safe key.
#[derive(Debug, Clone)]
pub struct RecordStore<T> {
    dir: PathBuf,
    /// For a private store: the topmost directory that must be the driver's own.
    private_top: Option<PathBuf>,
    _kind: PhantomData<fn() -> T>,
}

impl<T: Serialize + DeserializeOwned> RecordStore<T> {
    /// A store in `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            private_top: None,
            _kind: PhantomData,
        }
    }

    /// Makes the store private: every directory from `top` down to the store's own must be
    /// a real directory of the driver's user that nobody else can write to. Missing ones are
    /// made mode 0700 on the first write; an existing one that is not the driver's own
    /// refuses every read and write with `FailedPrecondition` (nothing is changed), and so
    /// does a record file that is not the driver's own. Records are then written mode 0600.
    pub fn private_from(mut self, top: impl Into<PathBuf>) -> Self {
        self.private_top = Some(top.into());
        self
    }

    /// The directory holding the records.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads the record of `key`; `None` when there is none.
    pub fn get(&self, key: &str) -> Result<Option<T>> {
        if !self.check_dirs()? {
            return Ok(None);
        }
        self.read(key)
    }

    /// Reads the record of `key` once the directories are checked.
    fn read(&self, key: &str) -> Result<Option<T>> {
        let path = self.path(key)?;
        let bytes = if self.private_top.is_some() {
            let mut file = match OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
            {
                Ok(file) => file,
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
                Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                    return Err(Error::FailedPrecondition(format!(
                        "record {} is a symbolic link, not a record this driver wrote; refusing to trust it",
                        path.display()
                    )));
                }
                Err(e) => return Err(Error::io("read record", path, e)),
            };
            let meta = file
                .metadata()
                .map_err(|e| Error::io("stat record", &path, e))?;
            check_own(&path, &meta, false)?;
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes)
                .map_err(|e| Error::io("read record", &path, e))?;
            bytes
        } else {
            match fs::read(&path) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(Error::io("read record", path, e)),
            }
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Internal(format!("record {} is unreadable: {e}", path.display())))
    }

    /// The directories a private store must own, from the top down to its own.
    fn private_dirs(&self) -> Result<Vec<PathBuf>> {
        let Some(top) = &self.private_top else {
            return Ok(Vec::new());
        };
        let below = self.dir.strip_prefix(top).map_err(|_| {
            Error::Internal(format!(
                "record directory {} is not below {}",
                self.dir.display(),
                top.display()
            ))
        })?;
        let mut dirs = vec![top.clone()];
        let mut current = top.clone();
        for component in below.components() {
            let Component::Normal(part) = component else {
                return Err(Error::Internal(format!(
                    "record directory {} is not a plain path below {}",
                    self.dir.display(),
                    top.display()
                )));
            };
            current.push(part);
            dirs.push(current.clone());
        }
        Ok(dirs)
    }

    /// Checks a private store's directories; `false` when one is missing (so no record
    /// can exist). Always `true` for a store that is not private.
    fn check_dirs(&self) -> Result<bool> {
        for dir in self.private_dirs()? {
            if !check_private_dir(&dir)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Writes the record of `key` atomically and durably.
    pub fn put(&self, key: &str, record: &T) -> Result<()> {
        let path = self.path(key)?;
        match &self.private_top {
            Some(top) => {
                if let Some(parent) = top.parent() {
                    fs::create_dir_all(parent)
                        .map_err(|e| Error::io("create directory", parent, e))?;
                }
                for dir in self.private_dirs()? {
                    ensure_private_dir(&dir)?;
                }
            }
            None => fs::create_dir_all(&self.dir)
                .map_err(|e| Error::io("create directory", &self.dir, e))?,
        }
        let bytes = serde_json::to_vec_pretty(record)
            .map_err(|e| Error::Internal(format!("encode record: {e}")))?;
        // Unique per write, not only per process: concurrent writes of one key must not
        // share (and rename away) each other's temporary file.
        static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = self
            .dir
            .join(format!(".{key}.tmp-{}-{n}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut options = OpenOptions::new();
            options.write(true).create(true).truncate(true);
            if self.private_top.is_some() {
                options.mode(0o600).custom_flags(libc::O_NOFOLLOW);
            }
            let mut file = options.open(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            fs::rename(&tmp, &path)?;
            File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            Error::io("write record", &path, e)
        })
    }

    /// Removes the record of `key`, and temporary files of writes of it that a crash
    /// interrupted; not an error when there is none.
    pub fn remove(&self, key: &str) -> Result<()> {
        let path = self.path(key)?;
        if !self.check_dirs()? {
            return Ok(());
        }
        self.remove_leftover_temps(key);
        match fs::remove_file(&path) {
            Ok(()) => File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| Error::io("sync directory", &self.dir, e)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove record", path, e)),
        }
    }

    /// Every record, with its key, in key order. Leftover temporary files are skipped. One
    /// record that cannot be read fails the whole listing (its error names the file): for
    /// callers that must see every record, such as one telling which ids are taken.
    pub fn list(&self) -> Result<Vec<(String, T)>> {
        let (records, unreadable) = self.list_readable()?;
        match unreadable.into_iter().next() {
            Some(first) => Err(first),
            None => Ok(records),
        }
    }

    /// Every record that can be read, with its key, in key order, and the errors of those
    /// that cannot (each naming its file), for callers that can do without them. A record
    /// directory that cannot be listed (or a private one that is not the driver's own) is
    /// an error.
    pub fn list_readable(&self) -> Result<Listed<T>> {
        if !self.check_dirs()? {
            return Ok((Vec::new(), Vec::new()));
        }
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
            Err(e) => return Err(Error::io("list records", &self.dir, e)),
        };
        let mut keys: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter_map(|name| name.strip_suffix(".json").map(str::to_string))
            .filter(|key| !key.starts_with('.'))
            .collect();
        keys.sort();
        let mut out = Vec::with_capacity(keys.len());
        let mut unreadable = Vec::new();
        for key in keys {
            match self.read(&key) {
                Ok(Some(record)) => out.push((key, record)),
                Ok(None) => {}
                Err(e) => unreadable.push(e),
            }
        }
        Ok((out, unreadable))
    }

    /// Removes `.<key>.tmp-<pid>-<n>` files (best effort): a process killed between writing
    /// and renaming a record leaves one, and nothing else would ever remove it.
    fn remove_leftover_temps(&self, key: &str) {
        let prefix = format!(".{key}.tmp-");
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.filter_map(|e| e.ok()) {
            let name = entry.file_name();
            let is_temp = name.to_str().is_some_and(|n| {
                n.strip_prefix(&prefix).is_some_and(|tag| {
                    !tag.is_empty() && tag.bytes().all(|b| b.is_ascii_digit() || b == b'-')
                })
            });
            if is_temp {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        check_key(key)?;
        Ok(self.dir.join(format!("{key}.json")))
    }
}

/// Refuses `path` unless it is a real directory (not a link) of the driver's user that
/// nobody else can write to; `false` when it does not exist. A directory a user made (or
/// can write to) could hold records the driver never wrote.
pub fn check_private_dir(path: &Path) -> Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(meta) => check_own(path, &meta, true).map(|()| true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io("stat", path, e)),
    }
}

/// Makes `path` (its parent must exist) a directory readable by the driver's user only:
/// created mode 0700 when missing; when it exists, refused as by [`check_private_dir`]
/// unless it is the driver's own, and then its group's and others' access taken away.
pub fn ensure_private_dir(path: &Path) -> Result<()> {
    match DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io("create directory", path, e)),
    }
    let meta = fs::symlink_metadata(path).map_err(|e| Error::io("stat", path, e))?;
    check_own(path, &meta, true)?;
    if meta.mode() & 0o077 != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(meta.mode() & 0o700))
            .map_err(|e| Error::io("set mode of", path, e))?;
    }
    Ok(())
}

/// Refuses what `meta` describes unless it is a directory (`dir`) or regular file of this
/// process's user that neither its group nor others can write.
fn check_own(path: &Path, meta: &Metadata, dir: bool) -> Result<()> {
    let (kind, mode) = if dir {
        ("directory", "0700")
    } else {
        ("record", "0600")
    };
    let right_type = if dir {
        meta.file_type().is_dir()
    } else {
        meta.file_type().is_file()
    };
    if !right_type {
        return Err(Error::FailedPrecondition(format!(
            "{} is not a {}; the driver did not make it and does not trust it; nothing was changed",
            path.display(),
            if dir { "directory" } else { "regular file" }
        )));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(Error::FailedPrecondition(format!(
            "{kind} {} belongs to uid {}, not to the driver (uid {me}), so what it holds cannot be trusted; nothing was changed. Remove it, or give it to uid {me} with mode {mode}",
            path.display(),
            meta.uid()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(Error::FailedPrecondition(format!(
            "{kind} {} can be written by others (mode {:04o}), so what it holds cannot be trusted; nothing was changed. Check its content, then make it mode {mode}",
            path.display(),
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

/// A key must be a plain file name: not empty, no `/`, no NUL, not starting with `.`,
/// at most 200 bytes.
pub fn check_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > 200 || key.starts_with('.') || key.contains(['/', '\0']) {
        return Err(Error::InvalidArgument(format!(
            "{key:?} cannot name a record"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Rec {
        size: u64,
        name: String,
    }

    #[test]
    fn records_round_trip_and_list_in_key_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordStore::<Rec>::new(dir.path().join("volumes"));
        assert_eq!(store.list().unwrap(), vec![]);
        assert_eq!(store.get("b").unwrap(), None);
        store
            .put(
                "b",
                &Rec {
                    size: 2,
                    name: "two".into(),
                },
            )
            .unwrap();
        store
            .put(
                "a",
                &Rec {
                    size: 1,
                    name: "one".into(),
                },
            )
            .unwrap();
        store
            .put(
                "b",
                &Rec {
                    size: 3,
                    name: "three".into(),
                },
            )
            .unwrap();
        fs::write(store.dir().join(".c.tmp-1"), b"{").unwrap();
        let keys: Vec<_> = store
            .list()
            .unwrap()
            .into_iter()
            .map(|(k, r)| (k, r.size))
            .collect();
        assert_eq!(keys, vec![("a".to_string(), 1), ("b".to_string(), 3)]);
        store.remove("a").unwrap();
        store.remove("a").unwrap();
        assert_eq!(store.get("a").unwrap(), None);
    }

    #[test]
    fn removing_a_record_removes_the_temporary_files_a_crash_left_of_it_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordStore::<Rec>::new(dir.path());
        let rec = Rec {
            size: 1,
            name: "one".into(),
        };
        store.put("a", &rec).unwrap();
        store.put("a.tmp-7", &rec).unwrap();
        for left in [".a.tmp-123", ".a.tmp-456", ".b.tmp-123", ".a.tmp-7.tmp-9"] {
            fs::write(dir.path().join(left), b"{").unwrap();
        }
        store.remove("a").unwrap();
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, vec![".a.tmp-7.tmp-9", ".b.tmp-123", "a.tmp-7.json"]);
    }

    #[test]
    fn concurrent_writes_of_one_key_all_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordStore::<Rec>::new(dir.path().join("r"));
        std::thread::scope(|scope| {
            for i in 0..16 {
                let store = &store;
                scope.spawn(move || {
                    for j in 0..20 {
                        store
                            .put(
                                "same",
                                &Rec {
                                    size: i * 100 + j,
                                    name: "x".into(),
                                },
                            )
                            .unwrap();
                    }
                });
            }
        });
        assert!(store.get("same").unwrap().is_some());
        assert_eq!(
            std::fs::read_dir(store.dir()).unwrap().count(),
            1,
            "temporary files left behind"
        );
    }

    #[test]
    fn a_corrupt_record_is_an_error_not_a_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordStore::<Rec>::new(dir.path());
        fs::write(dir.path().join("x.json"), b"{not json").unwrap();
        assert!(store.get("x").is_err());
        let rec = Rec {
            size: 1,
            name: "one".into(),
        };
        store.put("a", &rec).unwrap();
        // A full listing fails naming the file; a listing of what can be read goes on.
        let err = store.list().unwrap_err();
        assert!(err.to_string().contains("x.json"), "{err}");
        let (readable, unreadable) = store.list_readable().unwrap();
        assert_eq!(readable, vec![("a".to_string(), rec)]);
        assert_eq!(unreadable.len(), 1);
        assert!(unreadable[0].to_string().contains("x.json"));
    }

    fn mode_of(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn private_stores_make_their_directories_and_records_private() {
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path().join("base/.meta");
        let store = RecordStore::<Rec>::new(top.join("volumes")).private_from(&top);
        assert_eq!(store.get("a").unwrap(), None);
        assert_eq!(store.list().unwrap(), vec![]);
        store.remove("a").unwrap();
        assert!(!top.exists(), "reading makes nothing");
        let rec = Rec {
            size: 1,
            name: "one".into(),
        };
        store.put("a", &rec).unwrap();
        assert_eq!(mode_of(&top), 0o700);
        assert_eq!(mode_of(&top.join("volumes")), 0o700);
        assert_eq!(mode_of(&top.join("volumes/a.json")), 0o600);
        assert_eq!(store.get("a").unwrap(), Some(rec.clone()));
        // A folder of ours that earlier versions made 0755 is taken back on the next write.
        fs::set_permissions(&top, fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(store.get("a").unwrap(), Some(rec.clone()));
        store.put("b", &rec).unwrap();
        assert_eq!(mode_of(&top), 0o700);
        assert_eq!(store.list().unwrap().len(), 2);
    }

    #[test]
    fn private_stores_refuse_directories_and_records_that_are_not_their_own() {
        let rec = Rec {
            size: 1,
            name: "one".into(),
        };
        let refused = |store: &RecordStore<Rec>| {
            for err in [
                store.get("a").unwrap_err(),
                store.list().unwrap_err(),
                store.put("a", &rec).unwrap_err(),
                store.remove("a").unwrap_err(),
            ] {
                assert_eq!(err.code(), crate::ErrorCode::FailedPrecondition, "{err}");
            }
        };
        for (what, mode, owner) in [
            ("group-writable", 0o770, None),
            ("world-writable", 0o777, None),
            ("someone else's", 0o700, Some(4321)),
        ] {
            for depth in ["", "volumes"] {
                let dir = tempfile::tempdir().unwrap();
                let top = dir.path().join(".meta");
                let store = RecordStore::<Rec>::new(top.join("volumes")).private_from(&top);
                store.put("a", &rec).unwrap();
                let planted = top.join(depth);
                fs::set_permissions(&planted, fs::Permissions::from_mode(mode)).unwrap();
                std::os::unix::fs::chown(&planted, owner, None).unwrap();
                refused(&store);
                assert_eq!(mode_of(&planted), mode, "{what} {depth:?} left as it was");
                assert!(top.join("volumes/a.json").exists(), "{what} {depth:?}");
            }
        }
        // A link in place of the folder, and a record a user planted or linked.
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, dir.path().join(".meta")).unwrap();
        let top = dir.path().join(".meta");
        refused(&RecordStore::<Rec>::new(top.join("volumes")).private_from(&top));
        assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);

        let dir = tempfile::tempdir().unwrap();
        let top = dir.path().join(".meta");
        let store = RecordStore::<Rec>::new(top.join("volumes")).private_from(&top);
        store.put("a", &rec).unwrap();
        std::os::unix::fs::chown(top.join("volumes/a.json"), Some(4321), None).unwrap();
        assert_eq!(
            store.get("a").unwrap_err().code(),
            crate::ErrorCode::FailedPrecondition
        );
        let forged = dir.path().join("forged.json");
        fs::write(&forged, serde_json::to_vec(&rec).unwrap()).unwrap();
        std::os::unix::fs::symlink(&forged, top.join("volumes/b.json")).unwrap();
        assert_eq!(
            store.get("b").unwrap_err().code(),
            crate::ErrorCode::FailedPrecondition
        );
    }

    proptest! {
        #[test]
        fn keys_never_escape_the_directory(key in "\\PC{0,40}") {
            let store = RecordStore::<Rec>::new("/records");
            if let Ok(path) = store.path(&key) {
                prop_assert_eq!(path.parent(), Some(Path::new("/records")));
            }
        }
    }
}
