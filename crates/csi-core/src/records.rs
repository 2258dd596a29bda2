//! Crash-safe records of what the driver made, kept on the filesystem they describe.
//!
//! Backends keep one JSON file per volume or snapshot in a hidden directory of the
//! filesystem (e.g. `<mount>/.pfs-csi/volumes/`). A record is written to a temporary file,
//! synced, and renamed over the old one, and the directory is synced: after a crash a
//! record is either the old or the new version, never a torn one. Records are how the
//! driver tells a volume it created (and may delete) from one it did not.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// A directory of JSON records of type `T`, keyed by a file-name-safe key.
#[derive(Debug, Clone)]
pub struct RecordStore<T> {
    dir: PathBuf,
    _kind: PhantomData<fn() -> T>,
}

impl<T: Serialize + DeserializeOwned> RecordStore<T> {
    /// A store in `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            _kind: PhantomData,
        }
    }

    /// The directory holding the records.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads the record of `key`; `None` when there is none.
    pub fn get(&self, key: &str) -> Result<Option<T>> {
        let path = self.path(key)?;
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                Error::Internal(format!("record {} is unreadable: {e}", path.display()))
            }),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("read record", path, e)),
        }
    }

    /// Writes the record of `key` atomically and durably.
    pub fn put(&self, key: &str, record: &T) -> Result<()> {
        let path = self.path(key)?;
        fs::create_dir_all(&self.dir).map_err(|e| Error::io("create directory", &self.dir, e))?;
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
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
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
        self.remove_leftover_temps(key);
        match fs::remove_file(&path) {
            Ok(()) => File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| Error::io("sync directory", &self.dir, e)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove record", path, e)),
        }
    }

    /// Every record, with its key, in key order. Leftover temporary files are skipped.
    pub fn list(&self) -> Result<Vec<(String, T)>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
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
        for key in keys {
            if let Some(record) = self.get(&key)? {
                out.push((key, record));
            }
        }
        Ok(out)
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
