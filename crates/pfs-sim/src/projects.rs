//! Project ids: set for real with `FS_IOC_FSSETXATTR` where the backing filesystem supports them
//! (XFS), otherwise recorded in `meta/projects.json`.
//!
//! The recorded form keys each entry by its path relative to the filesystem root together with
//! its device and inode, so a record does not stick to a new entry that reuses the name. An entry
//! without a valid record belongs to the project of its nearest recorded ancestor whose inherit
//! flag is set (directories also inherit the flag), as the kernel does at creation time.
//! Limitation: a recorded entry renamed elsewhere loses its record, and an unrecorded entry moved
//! under another tree takes that tree's project, unlike the kernel where an inode keeps its id.

use crate::state::Filesystem;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;

/// The inherit flag of `struct fsxattr`.
pub const FS_XFLAG_PROJINHERIT: u32 = 0x0000_0200;

/// The kernel's `struct fsxattr`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FsXattr {
    /// `fsx_xflags`.
    pub xflags: u32,
    /// `fsx_extsize`.
    pub extsize: u32,
    /// `fsx_nextents`.
    pub nextents: u32,
    /// `fsx_projid`.
    pub projid: u32,
    /// `fsx_cowextsize`.
    pub cowextsize: u32,
    /// `fsx_pad`.
    pub pad: [u8; 8],
}

nix::ioctl_read!(ioc_fsgetxattr, b'X', 31, FsXattr);
nix::ioctl_write_ptr!(ioc_fssetxattr, b'X', 32, FsXattr);

/// Where a filesystem's project ids live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProjectBackend {
    /// In the inodes, through `FS_IOC_FSSETXATTR` (XFS, ext4 with the project feature).
    Kernel,
    /// In `meta/projects.json`.
    #[default]
    Recorded,
}

/// The project id of an entry and its inherit flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProjectState {
    /// The project id (0: none).
    pub id: u32,
    /// Whether new entries below inherit the id.
    pub inherit: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct RecordedProject {
    id: u32,
    inherit: bool,
    dev: u64,
    ino: u64,
}

type Records = BTreeMap<String, RecordedProject>;

const RECORDS: &str = "projects.json";

fn open_for_ioctl(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(path)
}

/// Reads the `struct fsxattr` of a file or directory.
pub fn get_fsxattr(path: &Path) -> io::Result<FsXattr> {
    let file = open_for_ioctl(path)?;
    let mut attr = FsXattr::default();
    // SAFETY: the descriptor is open for the duration of the call and `attr` is a valid,
    // correctly sized `struct fsxattr` the kernel writes into.
    unsafe { ioc_fsgetxattr(file.as_raw_fd(), &mut attr) }.map_err(io::Error::from)?;
    Ok(attr)
}

/// Writes the `struct fsxattr` of a file or directory.
pub fn set_fsxattr(path: &Path, attr: &FsXattr) -> io::Result<()> {
    let file = open_for_ioctl(path)?;
    // SAFETY: the descriptor is open for the duration of the call and `attr` points at a valid
    // `struct fsxattr` the kernel only reads.
    unsafe { ioc_fssetxattr(file.as_raw_fd(), attr) }.map_err(io::Error::from)?;
    Ok(())
}

/// Decides where project ids can live for filesystems created in `dir`: tries to set and reset a
/// project id on a scratch directory.
pub fn probe_backend(dir: &Path) -> ProjectBackend {
    let probe = dir.join(format!(".project-probe.{}", std::process::id()));
    if std::fs::create_dir(&probe).is_err() {
        return ProjectBackend::Recorded;
    }
    let works = (|| -> io::Result<bool> {
        let mut attr = get_fsxattr(&probe)?;
        attr.projid = 4242;
        attr.xflags |= FS_XFLAG_PROJINHERIT;
        set_fsxattr(&probe, &attr)?;
        let back = get_fsxattr(&probe)?;
        attr.projid = 0;
        attr.xflags &= !FS_XFLAG_PROJINHERIT;
        set_fsxattr(&probe, &attr)?;
        Ok(back.projid == 4242 && back.xflags & FS_XFLAG_PROJINHERIT != 0)
    })()
    .unwrap_or(false);
    let _ = std::fs::remove_dir(&probe);
    if works {
        ProjectBackend::Kernel
    } else {
        ProjectBackend::Recorded
    }
}

/// Reads the project of a path with the ioctl (any filesystem).
pub fn kernel_get(path: &Path) -> io::Result<ProjectState> {
    let attr = get_fsxattr(path)?;
    Ok(ProjectState {
        id: attr.projid,
        inherit: attr.xflags & FS_XFLAG_PROJINHERIT != 0,
    })
}

/// Sets the project of a path with the ioctl; unchanged fields are left alone.
pub fn kernel_set(path: &Path, state: ProjectState) -> io::Result<()> {
    let mut attr = get_fsxattr(path)?;
    if attr.projid == state.id && (attr.xflags & FS_XFLAG_PROJINHERIT != 0) == state.inherit {
        return Ok(());
    }
    attr.projid = state.id;
    if state.inherit {
        attr.xflags |= FS_XFLAG_PROJINHERIT;
    } else {
        attr.xflags &= !FS_XFLAG_PROJINHERIT;
    }
    set_fsxattr(path, &attr)
}

fn parent_rel(rel: &str) -> Option<&str> {
    if rel.is_empty() {
        None
    } else {
        Some(rel.rsplit_once('/').map(|(p, _)| p).unwrap_or(""))
    }
}

fn valid_record(fs: &Filesystem, records: &Records, rel: &str) -> Option<RecordedProject> {
    let record = records.get(rel)?;
    let meta = std::fs::symlink_metadata(fs.data_path(rel)).ok()?;
    (meta.dev() == record.dev && meta.ino() == record.ino).then_some(*record)
}

fn recorded_get(fs: &Filesystem, records: &Records, rel: &str) -> io::Result<ProjectState> {
    let meta = std::fs::symlink_metadata(fs.data_path(rel))?;
    if let Some(r) = valid_record(fs, records, rel) {
        return Ok(ProjectState {
            id: r.id,
            inherit: r.inherit,
        });
    }
    let mut cursor = parent_rel(rel);
    while let Some(ancestor) = cursor {
        if let Some(r) = valid_record(fs, records, ancestor) {
            if r.inherit {
                return Ok(ProjectState {
                    id: r.id,
                    inherit: meta.is_dir(),
                });
            }
            return Ok(ProjectState::default());
        }
        cursor = parent_rel(ancestor);
    }
    Ok(ProjectState::default())
}

fn to_io(e: crate::error::SimError) -> io::Error {
    io::Error::other(e.to_string())
}

/// Reads the project of a filesystem entry (`rel` relative to its root).
pub fn get(fs: &Filesystem, rel: &str) -> io::Result<ProjectState> {
    match fs.record.project_backend {
        ProjectBackend::Kernel => kernel_get(&fs.data_path(rel)),
        ProjectBackend::Recorded => {
            let records: Records = fs.read_meta(RECORDS).map_err(to_io)?;
            recorded_get(fs, &records, rel)
        }
    }
}

/// Sets the project of a filesystem entry.
pub fn set(fs: &Filesystem, rel: &str, state: ProjectState) -> io::Result<()> {
    match fs.record.project_backend {
        ProjectBackend::Kernel => kernel_set(&fs.data_path(rel), state),
        ProjectBackend::Recorded => {
            let meta = std::fs::symlink_metadata(fs.data_path(rel))?;
            let _lock = fs.lock().map_err(to_io)?;
            let mut records: Records = fs.read_meta(RECORDS).map_err(to_io)?;
            let snapshot = records.clone();
            records.retain(|r, _| valid_record(fs, &snapshot, r).is_some());
            records.insert(
                rel.to_string(),
                RecordedProject {
                    id: state.id,
                    inherit: state.inherit,
                    dev: meta.dev(),
                    ino: meta.ino(),
                },
            );
            fs.write_meta(RECORDS, &records).map_err(to_io)
        }
    }
}

/// Calls `visit(rel, metadata, project)` for every entry of the filesystem (the root included),
/// without crossing into other mounted filesystems; symlinks and special files have project 0
/// under the kernel backend (their inodes cannot be opened for the ioctl).
pub fn walk_with_projects(
    fs: &Filesystem,
    mut visit: impl FnMut(&str, &std::fs::Metadata, ProjectState),
) -> io::Result<()> {
    let root = fs.data_dir();
    let root_meta = std::fs::symlink_metadata(&root)?;
    let dev = root_meta.dev();
    let records: Records = match fs.record.project_backend {
        ProjectBackend::Kernel => Records::new(),
        ProjectBackend::Recorded => fs.read_meta(RECORDS).map_err(to_io)?,
    };
    let project_of = |rel: &str, meta: &std::fs::Metadata, parent: ProjectState| -> ProjectState {
        match fs.record.project_backend {
            ProjectBackend::Kernel => {
                if meta.is_dir() || meta.is_file() {
                    kernel_get(&fs.data_path(rel)).unwrap_or_default()
                } else {
                    ProjectState::default()
                }
            }
            ProjectBackend::Recorded => {
                if let Some(r) = records
                    .get(rel)
                    .filter(|r| r.dev == meta.dev() && r.ino == meta.ino())
                {
                    ProjectState {
                        id: r.id,
                        inherit: r.inherit,
                    }
                } else if parent.inherit {
                    ProjectState {
                        id: parent.id,
                        inherit: meta.is_dir(),
                    }
                } else {
                    ProjectState::default()
                }
            }
        }
    };
    let root_state = project_of("", &root_meta, ProjectState::default());
    visit("", &root_meta, root_state);
    let mut stack = vec![(String::new(), root_state)];
    while let Some((dir_rel, dir_state)) = stack.pop() {
        let entries = match std::fs::read_dir(fs.data_path(&dir_rel)) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let rel = if dir_rel.is_empty() {
                name
            } else {
                format!("{dir_rel}/{name}")
            };
            let meta = match entry.metadata() {
                Ok(meta) => meta,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if meta.dev() != dev {
                continue;
            }
            let state = project_of(&rel, &meta, dir_state);
            visit(&rel, &meta, state);
            if meta.is_dir() {
                stack.push((rel, state));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{FsKind, FsRecord, StateRoot};

    fn recorded_fs(dir: &Path) -> Filesystem {
        let root = StateRoot::new(dir);
        let mut fs = root
            .create_fs(
                FsRecord {
                    kind: FsKind::Lustre,
                    name: "testfs".into(),
                    nids: vec![],
                    beegfs_version: None,
                    grpc_port: 8010,
                    pools: vec![],
                    num_targets: 4,
                    auth_required: false,
                    tls_required: false,
                    project_backend: ProjectBackend::Recorded,
                },
                None,
                None,
            )
            .unwrap();
        fs.record.project_backend = ProjectBackend::Recorded;
        fs
    }

    #[test]
    fn recorded_projects_are_inherited_by_new_entries() {
        let dir = tempfile::tempdir().unwrap();
        let fs = recorded_fs(dir.path());
        std::fs::create_dir_all(fs.data_path("vol/sub")).unwrap();
        set(
            &fs,
            "vol",
            ProjectState {
                id: 7,
                inherit: true,
            },
        )
        .unwrap();
        std::fs::write(fs.data_path("vol/sub/file"), b"x").unwrap();
        assert_eq!(
            get(&fs, "vol").unwrap(),
            ProjectState {
                id: 7,
                inherit: true
            }
        );
        assert_eq!(
            get(&fs, "vol/sub").unwrap(),
            ProjectState {
                id: 7,
                inherit: true
            }
        );
        assert_eq!(
            get(&fs, "vol/sub/file").unwrap(),
            ProjectState {
                id: 7,
                inherit: false
            }
        );
        assert_eq!(get(&fs, "").unwrap(), ProjectState::default());

        let mut seen = BTreeMap::new();
        walk_with_projects(&fs, |rel, _, state| {
            seen.insert(rel.to_string(), state.id);
        })
        .unwrap();
        assert_eq!(seen.get("vol/sub/file"), Some(&7));
        assert_eq!(seen.get(""), Some(&0));
    }

    #[test]
    fn a_record_does_not_stick_to_a_recreated_entry() {
        let dir = tempfile::tempdir().unwrap();
        let fs = recorded_fs(dir.path());
        std::fs::create_dir(fs.data_path("vol")).unwrap();
        // Keep a second inode alive so the new directory cannot reuse the old inode number.
        std::fs::create_dir(fs.data_path("keep")).unwrap();
        set(
            &fs,
            "vol",
            ProjectState {
                id: 9,
                inherit: true,
            },
        )
        .unwrap();
        std::fs::rename(fs.data_path("vol"), fs.data_path("keep/old")).unwrap();
        std::fs::create_dir(fs.data_path("vol")).unwrap();
        assert_eq!(get(&fs, "vol").unwrap(), ProjectState::default());
    }

    #[test]
    fn an_explicit_record_without_inherit_stops_inheritance() {
        let dir = tempfile::tempdir().unwrap();
        let fs = recorded_fs(dir.path());
        std::fs::create_dir_all(fs.data_path("a/b")).unwrap();
        std::fs::write(fs.data_path("a/b/f"), b"").unwrap();
        set(
            &fs,
            "a",
            ProjectState {
                id: 3,
                inherit: true,
            },
        )
        .unwrap();
        set(
            &fs,
            "a/b",
            ProjectState {
                id: 4,
                inherit: false,
            },
        )
        .unwrap();
        assert_eq!(get(&fs, "a/b/f").unwrap(), ProjectState::default());
    }
}
