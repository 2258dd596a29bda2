//! Node operations: stage, unstage, the directory to publish, usage, topology.
//!
//! - `bindMount: true` (default): the node mounts the whole filesystem once at its
//!   `mountPoint` (shared by every staged volume, unmounted after the last one if this
//!   process mounted it) and bind-mounts the volume directory onto the staging path.
//! - `bindMount: false`: the volume directory is mounted on the staging path as its own
//!   Lustre mount (`mount -t lustre <NIDs>:/fsname/<dir> <staging>`).
//!
//! The filesystem is the one the node-stage secret's `exaFS` names, else the volume
//! context's `exaFS` (with its `mountPoint`), else the handle's, else the entry's.

use std::path::Path;
use std::sync::Arc;

use csi_core::domain::{Topology, VolumeId, VolumeStats};
use csi_core::ports::{NodePublishRequest, NodeStageRequest, PublishSource};
use csi_core::{Error, ErrorCode, Result};
use tracing::{debug, warn};

use crate::backend::{Inner, Target, ZONE_KEY};
use crate::config::LustreEntry;
use crate::mount_options;
use crate::mounts::LUSTRE;
use crate::parameters::{Strictness, VolumeParams};
use crate::quota::QuotaReport;
use crate::volume_dirs::{self, FsSpace};
use crate::volume_id::{Location, LustreVolumeHandle};

impl Inner {
    /// The filesystem a node reaches a volume on.
    fn target_for_node(
        &self,
        entry: &LustreEntry,
        handle: &LustreVolumeHandle,
        params: &VolumeParams,
    ) -> Result<Target> {
        match params
            .exa_fs
            .as_ref()
            .filter(|fs| !fs.same_directory(&entry.exa_fs))
        {
            Some(fs) => {
                let mount_point = params
                    .mount_point
                    .clone()
                    .or_else(|| {
                        handle
                            .location
                            .as_ref()
                            .filter(|l| l.exa_fs.same_directory(fs))
                            .map(|l| l.mount_point.clone())
                    })
                    .ok_or_else(|| {
                        Error::invalid(
                            "volume_context[mountPoint]",
                            "is required when exaFS names another filesystem than the entry's",
                        )
                    })?;
                Ok(Target::at(
                    entry,
                    Some(&Location {
                        exa_fs: fs.clone(),
                        mount_point,
                    }),
                ))
            }
            None => Ok(Target::at(entry, handle.location.as_ref())),
        }
    }

    /// NodeStageVolume.
    pub(crate) async fn stage_volume(self: &Arc<Self>, req: &NodeStageRequest) -> Result<()> {
        let handle = self.handle(req.volume_id.as_str())?;
        let entry = self.entry(&handle.entry)?.clone();
        let mut params = VolumeParams::parse(&req.context, Strictness::Context).map_err(|e| {
            Error::InvalidArgument(e.to_string().replacen("parameters[", "volume_context[", 1))
        })?;
        params.apply_secrets(&req.secrets)?;
        let target = self.target_for_node(&entry, &handle, &params)?;
        let flags = mount_options::parse(&req.capability.mount_flags)
            .map_err(|r| Error::invalid("volume_capability.mount_flags", r))?;
        let volume_options = mount_options::merge(&[&flags, &params.mount_options]);
        let read_only = req.capability.access_mode.is_read_only()
            || mount_options::is_read_only(&volume_options);
        let staging = req.staging_path.clone();

        let bind_mount = params.bind_mount.unwrap_or(entry.bind_mount);
        match self.ctx.mounter.is_mount_point(&staging).await {
            Ok(true) => {
                if bind_mount {
                    self.check_staged_directory(&target, &handle, &staging)
                        .await?;
                }
                debug!(staging = %staging.display(), "already staged");
                return Ok(());
            }
            Ok(false) => {}
            Err(e) if e.code() == ErrorCode::NotFound => {
                std::fs::create_dir_all(&staging)
                    .map_err(|e| Error::io("create staging directory", &staging, e))?;
            }
            Err(e) => return Err(e),
        }

        if bind_mount {
            let extra: Vec<&String> = volume_options
                .iter()
                .filter(|o| {
                    !matches!(o.as_str(), "ro" | "rw") && !entry.default_mount_options.contains(o)
                })
                .collect();
            if !extra.is_empty() {
                warn!(volume_id = %req.volume_id, options = ?extra, "with bindMount the filesystem is shared: only defaultMountOptions and ro apply; use bindMount: false for per-volume options");
            }
            let holder = staging.display().to_string();
            self.mounts
                .ensure(
                    &target.mount_point,
                    &target.exa_fs,
                    &entry.default_mount_options,
                    Some(&holder),
                )
                .await?;
            // The volume's directory is opened below the filesystem's mount through
            // directories only (no link on the way), in the bind's own call.
            let dir = target.path(&handle.dir);
            let bound = self
                .ctx
                .mounter
                .bind_mount_below(&target.mount_point, &dir, &staging, read_only)
                .await;
            if let Err(e) = bound {
                if let Err(release) = self.mounts.release(&holder).await {
                    warn!(error = %release, "shared mount not released after a failed stage");
                }
                return Err(e);
            }
        } else {
            let mut options =
                mount_options::merge(&[&entry.default_mount_options, &volume_options]);
            if read_only && !mount_options::is_read_only(&options) {
                options = mount_options::merge(&[&options, &["ro".to_string()]]);
            }
            let source = target.exa_fs.join(handle.dir.components());
            self.ctx
                .mounter
                .mount(&source.to_string(), &staging, LUSTRE, &options)
                .await
                .map_err(|e| match &e {
                    // mount.lustre's answer for a subdirectory that does not exist.
                    Error::Command { stderr, .. }
                        if stderr.contains("No such file or directory") =>
                    {
                        Error::NotFound(format!(
                            "volume directory {} does not exist on {}: {e}",
                            handle.dir,
                            target.exa_fs.fs_path()
                        ))
                    }
                    _ => e,
                })?;
        }
        Ok(())
    }

    /// With `bindMount`, refuses a staging path that holds another directory than the
    /// volume's (a staging path given twice for two volumes would hand the first one's
    /// data to the second one's pods). The mount table says which directory of which
    /// filesystem the staging path shows; when the filesystem is not mounted at its mount
    /// point there is nothing to compare with, and the stage stands. Read only when a stage
    /// is asked again, never on publish.
    async fn check_staged_directory(
        self: &Arc<Self>,
        target: &Target,
        handle: &LustreVolumeHandle,
        staging: &Path,
    ) -> Result<()> {
        let mounts = self.ctx.mounter.list_mounts().await?;
        let fs_mounted = mounts.iter().any(|m| m.mount_point == target.mount_point);
        let Some(staged) = mounts.iter().rev().find(|m| m.mount_point == staging) else {
            return Ok(());
        };
        let dir = target.path(&handle.dir);
        if fs_mounted && !staged.shows(&mounts, &dir) {
            return Err(Error::FailedPrecondition(format!(
                "{} is already staged with another directory than {} ({}:{} there); unstage it first",
                staging.display(),
                dir.display(),
                staged.source,
                staged.root.display()
            )));
        }
        Ok(())
    }

    /// NodeUnstageVolume: unmounts the staging path (stacked mounts one by one; unmount
    /// first, check after, so a hung filesystem does not stop it) and drops the shared
    /// mount's reference once nothing is mounted there.
    pub(crate) async fn unstage_volume(
        self: &Arc<Self>,
        _id: &VolumeId,
        staging: &Path,
    ) -> Result<()> {
        self.ctx.mounter.unmount_all(staging).await?;
        self.mounts.release(&staging.display().to_string()).await
    }

    /// The staging path: a bind of the volume's directory, or a mount of it.
    pub(crate) fn publish_source(req: &NodePublishRequest) -> PublishSource {
        PublishSource {
            staged: req.staging_path.clone(),
            dir: req.staging_path.clone(),
        }
    }

    /// NodeGetVolumeStats: the project's usage and limits, else the filesystem's.
    pub(crate) async fn volume_stats(
        self: &Arc<Self>,
        _id: &VolumeId,
        path: &Path,
    ) -> Result<VolumeStats> {
        let p = path.to_path_buf();
        // First, as it asks the servers too: kubelet asks again every minute, and a hung
        // filesystem then holds one thread, not one `lfs` process a call.
        let space = self
            .stuck
            .run(
                path,
                self.settings.command_timeout(),
                format!("statvfs {}", path.display()),
                move || volume_dirs::statvfs(&p),
            )
            .await??;
        if self.lfs_timed_out.get(path).is_some() {
            return Err(Error::DeadlineExceeded(format!(
                "lfs on {} timed out less than {} s ago; not run again until then",
                path.display(),
                crate::quota::LFS_TIMEOUT_BACKOFF.as_secs()
            )));
        }
        let timed_out = |e: Error| {
            self.lfs_timed_out.put(path, ());
            e
        };
        let quota = self.quota(path);
        let project = match self.project_ids.get(path) {
            Some(id) => Ok(id),
            None => quota.project_of(path).await.map(|attr| {
                self.project_ids.put(path, attr.id);
                attr.id
            }),
        };
        let report = match project {
            Ok(id) if id != 0 => match quota.report(id).await {
                Ok(report) => Some(report),
                Err(e) => {
                    // Read the project again next time: it may have changed.
                    self.project_ids.forget(path);
                    if e.code() == ErrorCode::DeadlineExceeded {
                        return Err(timed_out(e));
                    }
                    warn!(path = %path.display(), error = %e, "project usage unreadable; reporting the filesystem's");
                    None
                }
            },
            Ok(_) => None,
            Err(e) if e.code() == ErrorCode::DeadlineExceeded => return Err(timed_out(e)),
            Err(e) => {
                warn!(path = %path.display(), error = %e, "project unreadable; reporting the filesystem's");
                None
            }
        };
        Ok(stats_of(report.as_ref(), &space))
    }

    /// This node's zone: the `nodeZone` setting, else the one zone all zoned entries share.
    pub(crate) fn node_topology(&self) -> Topology {
        if let Some(zone) = &self.settings.node_zone {
            return Topology::from([(ZONE_KEY.to_string(), zone.clone())]);
        }
        let zones: std::collections::BTreeSet<&String> = self
            .config
            .entries
            .values()
            .filter_map(|e| e.zone.as_ref())
            .collect();
        match zones.len() {
            0 => Topology::new(),
            1 => zones
                .into_iter()
                .map(|z| (ZONE_KEY.to_string(), z.clone()))
                .collect(),
            _ => {
                warn!(
                    "entries name several zones; set pfsCsi.lustre.nodeZone (or the node label) to tell this node's"
                );
                Topology::new()
            }
        }
    }
}

/// Combines a project report (limits, usage) with the filesystem's free space: an
/// unlimited project can grow into all of it.
pub(crate) fn stats_of(report: Option<&QuotaReport>, space: &FsSpace) -> VolumeStats {
    match report {
        None => VolumeStats {
            bytes_total: space.bytes_total,
            bytes_used: space.bytes_total.saturating_sub(space.bytes_free),
            bytes_available: space.bytes_available,
            inodes_total: Some(space.inodes_total),
            inodes_used: Some(space.inodes_total.saturating_sub(space.inodes_available)),
            inodes_available: Some(space.inodes_available),
        },
        Some(r) => {
            let used = r.kbytes_used.saturating_mul(1024);
            let (bytes_total, bytes_available) = if r.kbytes_hard > 0 {
                let total = r.kbytes_hard.saturating_mul(1024);
                (total, total.saturating_sub(used).min(space.bytes_available))
            } else {
                (
                    used.saturating_add(space.bytes_available),
                    space.bytes_available,
                )
            };
            let (inodes_total, inodes_available) = if r.files_hard > 0 {
                (
                    r.files_hard,
                    r.files_hard
                        .saturating_sub(r.files_used)
                        .min(space.inodes_available),
                )
            } else {
                (
                    r.files_used.saturating_add(space.inodes_available),
                    space.inodes_available,
                )
            };
            VolumeStats {
                bytes_total,
                bytes_used: used,
                bytes_available,
                inodes_total: Some(inodes_total),
                inodes_used: Some(r.files_used),
                inodes_available: Some(inodes_available),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::*;
    use csi_core::domain::{AccessMode, Secrets, VolumeId};
    use csi_core::ports::{FilesystemBackend, NodeStageRequest, Role};
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    fn stage_request(
        h: &Harness,
        id: &str,
        staging: &str,
        context: &[(&str, &str)],
        mode: AccessMode,
    ) -> NodeStageRequest {
        NodeStageRequest {
            volume_id: VolumeId::parse(id).unwrap(),
            staging_path: h.root.path().join("kubelet").join(staging),
            capability: capability(mode),
            context: context
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            secrets: Secrets::default(),
        }
    }

    fn publish_request(req: &NodeStageRequest) -> NodePublishRequest {
        NodePublishRequest {
            volume_id: req.volume_id.clone(),
            staging_path: req.staging_path.clone(),
            target_path: req.staging_path.with_file_name("target"),
            capability: req.capability.clone(),
            read_only: false,
            context: req.context.clone(),
            secrets: Secrets::default(),
        }
    }

    #[test]
    fn project_limits_bound_the_stats_and_unlimited_projects_see_the_filesystem() {
        let space = FsSpace {
            bytes_total: 100 << 30,
            bytes_free: 60 << 30,
            bytes_available: 50 << 30,
            inodes_total: 1000,
            inodes_available: 400,
        };
        let limited = QuotaReport {
            kbytes_used: 256,
            kbytes_hard: 1024,
            files_used: 3,
            files_hard: 10,
            ..Default::default()
        };
        let s = stats_of(Some(&limited), &space);
        assert_eq!(
            (s.bytes_total, s.bytes_used, s.bytes_available),
            (1 << 20, 256 << 10, 768 << 10)
        );
        assert_eq!(
            (s.inodes_total, s.inodes_used, s.inodes_available),
            (Some(10), Some(3), Some(7))
        );

        let unlimited = QuotaReport {
            kbytes_used: 4,
            files_used: 1,
            ..Default::default()
        };
        let s = stats_of(Some(&unlimited), &space);
        assert_eq!(
            (s.bytes_total, s.bytes_used, s.bytes_available),
            ((50 << 30) + 4096, 4096, 50 << 30)
        );
        assert_eq!((s.inodes_total, s.inodes_available), (Some(401), Some(400)));

        // Over its limit: nothing available, never negative.
        let over = QuotaReport {
            kbytes_used: 2048,
            kbytes_hard: 1024,
            ..Default::default()
        };
        assert_eq!(stats_of(Some(&over), &space).bytes_available, 0);

        let s = stats_of(None, &space);
        assert_eq!(
            (s.bytes_total, s.bytes_used, s.bytes_available),
            (100 << 30, 40 << 30, 50 << 30)
        );
        assert_eq!(s.inodes_used, Some(600));
    }

    #[tokio::test]
    async fn bind_mount_staging_shares_one_filesystem_mount() {
        let h = Harness::node(ONE);
        std::fs::create_dir_all(h.fs("exa1").join("pvc-1")).unwrap();
        std::fs::create_dir_all(h.fs("exa1").join("pvc-2")).unwrap();
        let a = stage_request(
            &h,
            "exa1:/pvc-1",
            "a/globalmount",
            &[],
            AccessMode::MultiNodeMultiWriter,
        );
        let b = stage_request(
            &h,
            "exa1:/pvc-2",
            "b/globalmount",
            &[("bindMount", "true")],
            AccessMode::MultiNodeReaderOnly,
        );
        h.backend.stage_volume(&a).await.unwrap();
        h.backend.stage_volume(&a).await.unwrap();
        h.backend.stage_volume(&b).await.unwrap();
        {
            let m = h.mounts.lock().unwrap();
            let lustre: Vec<&String> = m.calls.iter().filter(|c| c.starts_with("mount ")).collect();
            assert_eq!(lustre.len(), 1, "{:?}", m.calls);
            assert!(lustre[0].contains(&format!("10.0.0.1@tcp:/fs1 {}", h.fs("exa1").display())));
            assert_eq!(
                m.mounted.get(&a.staging_path),
                Some(&format!(
                    "bind:{}",
                    h.fs("exa1").join("pvc-1").canonicalize().unwrap().display()
                ))
            );
            assert!(!m.read_only.contains(&a.staging_path));
            assert!(
                m.read_only.contains(&b.staging_path),
                "a read-only access mode stages read-only"
            );
        }
        let source = h
            .backend
            .publish_source(&publish_request(&a))
            .await
            .unwrap();
        assert_eq!(
            (&source.staged, &source.dir),
            (&a.staging_path, &a.staging_path)
        );
        h.backend
            .unstage_volume(&a.volume_id, &a.staging_path)
            .await
            .unwrap();
        h.backend
            .unstage_volume(&a.volume_id, &a.staging_path)
            .await
            .unwrap();
        assert!(
            h.mounts.lock().unwrap().mounted.contains_key(&h.fs("exa1")),
            "still used by b"
        );
        h.backend
            .unstage_volume(&b.volume_id, &b.staging_path)
            .await
            .unwrap();
        // Nothing is left at the staging path a publish must find mounted.
        let left = h.mounts.lock().unwrap().mounted.clone();
        assert!(left.is_empty(), "{left:?}");
    }

    #[tokio::test]
    async fn unstage_of_a_hung_mount_unmounts_first_and_releases_the_shared_mount() {
        let h = Harness::node(ONE);
        std::fs::create_dir_all(h.fs("exa1").join("pvc-1")).unwrap();
        for bind_mount in ["true", "false"] {
            let req = stage_request(
                &h,
                "exa1:/pvc-1",
                "a/globalmount",
                &[("bindMount", bind_mount)],
                AccessMode::SingleNodeWriter,
            );
            h.backend.stage_volume(&req).await.unwrap();
            h.mounts
                .lock()
                .unwrap()
                .hung
                .insert(req.staging_path.clone());
            h.backend
                .unstage_volume(&req.volume_id, &req.staging_path)
                .await
                .unwrap();
            let m = h.mounts.lock().unwrap();
            assert!(
                m.calls
                    .contains(&format!("umount {}", req.staging_path.display())),
                "bindMount {bind_mount}: {:?}",
                m.calls
            );
            assert!(
                m.mounted.is_empty(),
                "bindMount {bind_mount}: {:?}",
                m.mounted
            );
        }
    }

    #[tokio::test]
    async fn a_volume_directory_that_is_a_link_is_never_staged() {
        let h = Harness::node(ONE);
        std::fs::create_dir_all(h.fs("exa1").join("pvc-2")).unwrap();
        std::os::unix::fs::symlink("pvc-2", h.fs("exa1").join("pvc-1")).unwrap();
        let req = stage_request(
            &h,
            "exa1:/pvc-1",
            "a/globalmount",
            &[],
            AccessMode::SingleNodeWriter,
        );
        let err = h.backend.stage_volume(&req).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::FailedPrecondition, "{err}");
        assert!(err.to_string().contains("symbolic link"), "{err}");
        let m = h.mounts.lock().unwrap();
        assert!(m.mounted.is_empty(), "{:?}", m.mounted);
    }

    #[tokio::test]
    async fn own_mounts_merge_and_check_their_options() {
        let h = Harness::build(ONE, Role::Node, |e| {
            e["defaultMountOptions"] = serde_json::json!("flock,user_xattr");
        });
        let mut req = stage_request(
            &h,
            "exa1:/pvc-1",
            "a/globalmount",
            &[
                ("bindMount", "false"),
                ("mountOptions", "localflock,noatime"),
            ],
            AccessMode::SingleNodeReaderOnly,
        );
        req.capability.mount_flags = vec!["nouser_xattr".into()];
        h.backend.stage_volume(&req).await.unwrap();
        let call = h.mounts.lock().unwrap().calls.last().unwrap().clone();
        assert_eq!(
            call,
            format!(
                "mount -t lustre -o localflock,nouser_xattr,noatime,ro 10.0.0.1@tcp:/fs1/pvc-1 {}",
                req.staging_path.display()
            )
        );
        h.backend
            .unstage_volume(&req.volume_id, &req.staging_path)
            .await
            .unwrap();

        for (context, flags, named) in [
            (
                vec![("bindMount", "false"), ("mountOptions", "bind")],
                vec![],
                "volume_context[mountOptions]",
            ),
            (
                vec![],
                vec!["remount".to_string()],
                "volume_capability.mount_flags",
            ),
            (vec![("colour", "red")], vec![], "volume_context[colour]"),
        ] {
            let mut req = stage_request(
                &h,
                "exa1:/pvc-2",
                "b/globalmount",
                &context,
                AccessMode::SingleNodeWriter,
            );
            req.capability.mount_flags = flags;
            let err = h.backend.stage_volume(&req).await.unwrap_err();
            assert_eq!(err.code(), ErrorCode::InvalidArgument);
            assert!(err.to_string().contains(named), "{err}");
        }
        let mut req = stage_request(
            &h,
            "exa1:/pvc-2",
            "b/globalmount",
            &[],
            AccessMode::SingleNodeWriter,
        );
        req.secrets = Secrets::new(BTreeMap::from([(
            "mountOptions".to_string(),
            "x-s3cr3t".to_string(),
        )]));
        let err = h.backend.stage_volume(&req).await.unwrap_err();
        assert!(
            !err.to_string().contains("s3cr3t"),
            "secrets are never quoted: {err}"
        );
    }

    #[tokio::test]
    async fn an_own_mount_of_a_missing_directory_is_not_found() {
        let h = Harness::node(ONE);
        h.mounts
            .lock()
            .unwrap()
            .fail_sources
            .push("10.0.0.1@tcp:/fs1/gone".into());
        let req = stage_request(
            &h,
            "exa1:/gone",
            "a/globalmount",
            &[("bindMount", "false")],
            AccessMode::SingleNodeWriter,
        );
        let err = h.backend.stage_volume(&req).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::NotFound, "{err}");
        assert!(h.mounts.lock().unwrap().mounted.is_empty());
    }

    #[tokio::test]
    async fn staging_a_missing_or_escaping_directory_fails_and_releases_the_mount() {
        let h = Harness::node(ONE);
        let req = stage_request(
            &h,
            "exa1:/missing",
            "a/globalmount",
            &[],
            AccessMode::SingleNodeWriter,
        );
        assert_eq!(
            h.backend.stage_volume(&req).await.unwrap_err().code(),
            ErrorCode::NotFound
        );
        assert!(h.mounts.lock().unwrap().mounted.is_empty());
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(h.fs("exa1")).unwrap();
        std::os::unix::fs::symlink(outside.path(), h.fs("exa1").join("escape")).unwrap();
        let req = stage_request(
            &h,
            "exa1:/escape",
            "b/globalmount",
            &[],
            AccessMode::SingleNodeWriter,
        );
        assert_eq!(
            h.backend.stage_volume(&req).await.unwrap_err().code(),
            ErrorCode::FailedPrecondition
        );
        assert!(h.mounts.lock().unwrap().mounted.is_empty());
    }

    #[tokio::test]
    async fn legacy_handles_stage_where_they_point() {
        let h = Harness::build(ONE, Role::Node, |e| {
            e["v1xCompatible"] = serde_json::json!(true);
        });
        std::fs::create_dir_all(h.fs("exa1").join("old")).unwrap();
        let v1 = format!("{}/old", h.fs("exa1").display());
        let req = stage_request(&h, &v1, "a/globalmount", &[], AccessMode::SingleNodeWriter);
        h.backend.stage_volume(&req).await.unwrap();
        let req = stage_request(
            &h,
            "exa1:10.0.0.1@tcp;/fs1:/elsewhere:/old",
            "b/globalmount",
            &[("bindMount", "false")],
            AccessMode::SingleNodeWriter,
        );
        h.backend.stage_volume(&req).await.unwrap();
        let call = h.mounts.lock().unwrap().calls.last().unwrap().clone();
        assert!(call.contains(" 10.0.0.1@tcp:/fs1/old "), "{call}");
    }

    /// The directory of volume `exa1:/pvc-1`, in project 5 with a 1 MiB limit.
    fn project_volume(h: &Harness) -> PathBuf {
        let dir = h.fs("exa1").join("pvc-1");
        std::fs::create_dir_all(&dir).unwrap();
        let mut lfs = h.lfs.lock().unwrap();
        lfs.projects.insert(dir.clone(), 5);
        lfs.limits.insert(5, 1024);
        dir
    }

    #[tokio::test]
    async fn stats_come_from_the_project_quota() {
        let h = Harness::node(ONE);
        let dir = project_volume(&h);
        {
            let mut lfs = h.lfs.lock().unwrap();
            lfs.used_kib.insert(5, 256);
            lfs.files.insert(5, 3);
        }
        let stats = h
            .backend
            .volume_stats(&VolumeId::parse("exa1:/pvc-1").unwrap(), &dir)
            .await
            .unwrap();
        assert_eq!(
            (stats.bytes_total, stats.bytes_used, stats.bytes_available),
            (1 << 20, 256 << 10, 768 << 10)
        );
        assert_eq!(stats.inodes_used, Some(3));
        // No project: the filesystem's figures.
        let other = h.fs("exa1").join("plain");
        std::fs::create_dir_all(&other).unwrap();
        let stats = h
            .backend
            .volume_stats(&VolumeId::parse("exa1:/plain").unwrap(), &other)
            .await
            .unwrap();
        assert!(stats.bytes_total > 0 && stats.bytes_total >= stats.bytes_available);
        let calls = h.lfs.lock().unwrap().calls.clone();
        assert_eq!(calls[0], format!("project -d {}", dir.display()));
        assert_eq!(calls[1], format!("quota -p 5 {}", dir.display()));
    }

    #[tokio::test]
    async fn a_volume_project_is_read_once_and_again_after_its_quota_failed() {
        let h = Harness::node(ONE);
        let dir = project_volume(&h);
        let id = VolumeId::parse("exa1:/pvc-1").unwrap();
        let stats = || h.backend.volume_stats(&id, &dir);
        let projects_read = || {
            let lfs = h.lfs.lock().unwrap();
            let reads = lfs.calls.iter().filter(|c| c.starts_with("project -d"));
            reads.count()
        };
        for _ in 0..3 {
            assert_eq!(stats().await.unwrap().bytes_total, 1 << 20);
        }
        assert_eq!(projects_read(), 1);
        // The quota unreadable: the filesystem's figures, and the project read again next.
        h.lfs
            .lock()
            .unwrap()
            .fail
            .push(("quota".into(), "quota: no such project".into()));
        assert_ne!(stats().await.unwrap().bytes_total, 1 << 20);
        assert_eq!(stats().await.unwrap().bytes_total, 1 << 20);
        assert_eq!(projects_read(), 2);
    }

    #[tokio::test]
    async fn after_lfs_timed_out_a_volumes_stats_run_no_lfs_for_a_while() {
        let h = Harness::node(ONE);
        let dir = project_volume(&h);
        let id = VolumeId::parse("exa1:/pvc-1").unwrap();
        let runs = || h.lfs.lock().unwrap().calls.len();
        h.lfs.lock().unwrap().time_outs = 1;
        let err = h.backend.volume_stats(&id, &dir).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::DeadlineExceeded, "{err}");
        let after_first = runs();
        for _ in 0..3 {
            let err = h.backend.volume_stats(&id, &dir).await.unwrap_err();
            assert_eq!(err.code(), ErrorCode::DeadlineExceeded, "{err}");
            assert!(err.to_string().contains("not run again"), "{err}");
        }
        assert_eq!(runs(), after_first, "no lfs while the backoff lasts");
        // Other volumes are not held back.
        let other = h.fs("exa1").join("plain");
        std::fs::create_dir_all(&other).unwrap();
        h.backend
            .volume_stats(&VolumeId::parse("exa1:/plain").unwrap(), &other)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn the_node_zone_comes_from_the_settings_or_the_one_zone_of_the_entries() {
        let h = Harness::node(&[("exa1", "10.0.0.1@tcp:/fs1", Some("zone-1"))]);
        assert_eq!(
            h.backend.node_topology().await.unwrap(),
            Topology::from([(ZONE_KEY.to_string(), "zone-1".to_string())])
        );
        let h = Harness::node(TWO_ZONES);
        assert!(h.backend.node_topology().await.unwrap().is_empty());
        let h = Harness::node(ONE);
        assert!(h.backend.node_topology().await.unwrap().is_empty());
    }
}
