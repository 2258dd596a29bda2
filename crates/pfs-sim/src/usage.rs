//! Quota usage computed from the files: allocated bytes (`st_blocks * 512`) and inode counts.

use crate::projects;
use crate::state::Filesystem;
use std::io;
use std::os::unix::fs::MetadataExt;

/// Space and inodes charged to a quota id.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Allocated bytes.
    pub bytes: u64,
    /// Inodes (Lustre) or chunk files (BeeGFS).
    pub inodes: u64,
}

impl Usage {
    /// Adds one inode of this metadata.
    pub fn add(&mut self, meta: &std::fs::Metadata) {
        self.bytes += meta.blocks() * 512;
        self.inodes += 1;
    }

    /// Allocated space in KiB, rounded up as Lustre reports it.
    pub fn kib(&self) -> u64 {
        self.bytes.div_ceil(1024)
    }
}

/// Usage of a Lustre project: every inode (directories and files) carrying the id.
pub fn project_usage(fs: &Filesystem, id: u32) -> io::Result<Usage> {
    let mut usage = Usage::default();
    projects::walk_with_projects(fs, |_, meta, state| {
        if state.id == id {
            usage.add(meta);
        }
    })?;
    Ok(usage)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::projects::{ProjectBackend, ProjectState};
    use crate::state::{FsKind, FsRecord, StateRoot};

    #[test]
    fn project_usage_grows_with_files_written_below_the_project_directory() {
        let dir = tempfile::tempdir().unwrap();
        let root = StateRoot::new(dir.path());
        let mut fs = root
            .create_fs(
                FsRecord {
                    kind: FsKind::Lustre,
                    name: "fs".into(),
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
        std::fs::create_dir(fs.data_path("vol")).unwrap();
        projects::set(
            &fs,
            "vol",
            ProjectState {
                id: 11,
                inherit: true,
            },
        )
        .unwrap();
        let before = project_usage(&fs, 11).unwrap();
        assert_eq!(before.inodes, 1);
        std::fs::write(fs.data_path("vol/a"), vec![1u8; 64 * 1024]).unwrap();
        std::fs::write(fs.data_path("outside"), vec![1u8; 64 * 1024]).unwrap();
        let after = project_usage(&fs, 11).unwrap();
        assert_eq!(after.inodes, 2);
        assert!(after.bytes >= before.bytes + 64 * 1024);
        assert_eq!(project_usage(&fs, 12).unwrap(), Usage::default());
    }
}
