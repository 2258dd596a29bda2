//! Node operations: stage, unstage, the publish source, and usage statistics.
//!
//! Per-volume mode: NodeStage writes the volume's client files under the state directory
//! and mounts the filesystem at `<staging>/mount`; the publish source is
//! `<staging>/mount/<volume path>`. Shared mode: one client mount per filesystem under the
//! state directory, reference-counted by a record of the volumes using it; NodeStage
//! bind-mounts the volume's directory at `<staging>/mount`, which is the publish source.
//! Volumes with their own mount options always get their own mount.
//!
//! NodeStage touches `<volDirBasePath>/.csi/volumes/<name>/nodes/<nodeID>` when that
//! directory exists (volumes the driver created), NodeUnstage removes it; DeleteVolume waits
//! for the directory to empty. NodeUnstage refuses while bind mounts of the volume remain.

use std::collections::HashSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use csi_core::domain::VolumeStats;
use csi_core::ports::{NodePublishRequest, NodeStageRequest, PublishSource};
use csi_core::records::RecordStore;
use csi_core::{Error, ErrorCode, Result};
use tracing::{info, warn};

use crate::backend::{FS_TYPE, Inner, parse_volume_id};
use crate::fs_tree;
use crate::mounts::bind_mounts_of;
use crate::records::{SharedMount, StageMode, StagedVolume, nodes_dir, safe_key};
use crate::settings::ClientMountMode;
use crate::volume_id::BeegfsVolumeId;

impl Inner {
    pub(crate) fn staged_store(&self) -> RecordStore<StagedVolume> {
        RecordStore::new(self.state().join("node").join("staged"))
    }

    fn shared_store(&self) -> RecordStore<SharedMount> {
        RecordStore::new(self.state().join("node").join("shared"))
    }

    fn shared_dir(&self, host: &str) -> PathBuf {
        self.state().join("node").join("fs").join(safe_key(host))
    }

    /// Whether volume `id`'s directory is a real directory below the client mount `mount`,
    /// reached through no link; refused at once while an earlier check of it is blocked.
    async fn volume_dir_exists(&self, mount: &Path, id: &BeegfsVolumeId) -> Result<bool> {
        let rel = id.path.relative().to_string();
        let dir = mount.join(&rel);
        let (root, check) = (mount.to_path_buf(), dir.clone());
        self.below_mount(&dir, "stat volume", move || {
            fs_tree::check_no_symlinks(&root, &rel)?;
            fs_tree::is_real_dir(&check)
        })
        .await
    }

    /// Touches this node's tracking file of a volume the driver created; returns its path
    /// relative to `fs_mount`.
    async fn touch_node_file(
        &self,
        fs_mount: &Path,
        id: &BeegfsVolumeId,
    ) -> Result<Option<PathBuf>> {
        let Some(name) = id.name() else {
            return Ok(None);
        };
        let nodes = nodes_dir(fs_mount, &id.path.parent(), name);
        let file = nodes.join(&self.ctx.node_id);
        let relative = file.strip_prefix(fs_mount).map(Path::to_path_buf).ok();
        let key = file.clone();
        self.below_mount(&key, "record this node's staging", move || {
            if !fs_tree::is_real_dir(&nodes)? {
                return Ok(None);
            }
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&file)
                .map_err(|e| Error::io("create", &file, e))?;
            Ok(relative)
        })
        .await
    }

    /// NodeStageVolume.
    pub(crate) async fn stage_volume(&self, request: &NodeStageRequest) -> Result<()> {
        let id = parse_volume_id(&request.volume_id)?;
        let id_text = id.to_string();
        let key = safe_key(&id_text);
        let store = self.staged_store();
        if let Some(rec) = store.get(&key)? {
            if rec.staging_path != request.staging_path {
                return Err(Error::FailedPrecondition(format!(
                    "volume {id_text} is already staged at {}",
                    rec.staging_path.display()
                )));
            }
            if self.is_mounted(&rec.mount_point).await? {
                // A stage interrupted before its tracking file was written: write it now,
                // or DeleteVolume would not wait for this node.
                if rec.node_file.is_none() {
                    let mut rec = rec;
                    rec.node_file = self.touch_node_file(&rec.fs_mount, &id).await?;
                    if rec.node_file.is_some() {
                        store.put(&key, &rec)?;
                    }
                }
                return Ok(());
            }
            warn!(volume_id = %id_text, "staging record without a mount; staging again");
        }
        let mount_point = request.staging_path.join("mount");
        if self.is_mounted(&mount_point).await?
            && let Some((_, other)) = store
                .list()?
                .into_iter()
                .find(|(_, r)| r.staging_path == request.staging_path && r.volume_id != id_text)
        {
            // Taking another volume's stage over would show its data in this one's pods.
            return Err(Error::FailedPrecondition(format!(
                "{} is the staging path of volume {}; unstage it first",
                request.staging_path.display(),
                other.volume_id
            )));
        }
        std::fs::create_dir_all(&mount_point)
            .map_err(|e| Error::io("create directory", &mount_point, e))?;
        let shared = self.settings.client_mount_mode == ClientMountMode::Shared
            && request.capability.mount_flags.is_empty();
        if shared {
            self.stage_shared(request, &id, &mount_point).await
        } else {
            self.stage_per_volume(request, &id, &mount_point).await
        }
    }

    async fn stage_per_volume(
        &self,
        request: &NodeStageRequest,
        id: &BeegfsVolumeId,
        mount_point: &Path,
    ) -> Result<()> {
        let id_text = id.to_string();
        let key = safe_key(&id_text);
        let files_dir = self.state().join("node").join("volumes").join(&key);
        let (files, _) = self.prepare_client_files(&files_dir, &id.host).await?;
        let mut record = StagedVolume {
            volume_id: id_text.clone(),
            staging_path: request.staging_path.clone(),
            mount_point: mount_point.to_path_buf(),
            mode: StageMode::PerVolume,
            fs_mount: mount_point.to_path_buf(),
            files_dir: Some(files_dir.clone()),
            node_file: None,
        };
        let store = self.staged_store();
        store.put(&key, &record)?;
        if !self.is_mounted(mount_point).await?
            && let Err(e) = self
                .mount_client(&files, mount_point, &request.capability.mount_flags)
                .await
        {
            let _ = std::fs::remove_dir(mount_point);
            let _ = std::fs::remove_dir_all(&files_dir);
            let _ = store.remove(&key);
            return Err(e);
        }
        let exists = self.volume_dir_exists(mount_point, id).await;
        if !matches!(exists, Ok(true)) {
            let _ = self.unmount_client(mount_point).await;
            let _ = std::fs::remove_dir(mount_point);
            let _ = std::fs::remove_dir_all(&files_dir);
            let _ = store.remove(&key);
            exists?;
            return Err(Error::NotFound(format!(
                "volume {id_text}: directory {} does not exist on the filesystem",
                id.path
            )));
        }
        record.node_file = self.touch_node_file(mount_point, id).await?;
        store.put(&key, &record)?;
        info!(volume_id = %id_text, mount = %mount_point.display(), "volume staged with its own client mount");
        Ok(())
    }

    async fn stage_shared(
        &self,
        request: &NodeStageRequest,
        id: &BeegfsVolumeId,
        mount_point: &Path,
    ) -> Result<()> {
        let id_text = id.to_string();
        let host_key = safe_key(&id.host);
        let lock = self.host_lock(&format!("shared:{host_key}"));
        let _guard = lock.lock().await;
        let shared_store = self.shared_store();
        let dir = self.shared_dir(&id.host);
        let mut shared = shared_store.get(&host_key)?.unwrap_or_else(|| SharedMount {
            host: id.host.clone(),
            mount_point: dir.join("mount"),
            users: Default::default(),
        });
        if !self.is_mounted(&shared.mount_point).await? {
            let (files, _) = self.prepare_client_files(&dir, &id.host).await?;
            self.mount_client(&files, &shared.mount_point, &[]).await?;
            info!(host = %id.host, mount = %shared.mount_point.display(), "shared client mount ready");
        }
        let volume_dir = shared.mount_point.join(id.path.relative());
        let exists = self.volume_dir_exists(&shared.mount_point, id).await;
        if !matches!(exists, Ok(true)) {
            if shared.users.is_empty() {
                let _ = self.unmount_client(&shared.mount_point).await;
                let _ = shared_store.remove(&host_key);
            }
            exists?;
            return Err(Error::NotFound(format!(
                "volume {id_text}: directory {} does not exist on the filesystem",
                id.path
            )));
        }
        shared.users.insert(id_text.clone());
        shared_store.put(&host_key, &shared)?;
        let key = safe_key(&id_text);
        let mut record = StagedVolume {
            volume_id: id_text.clone(),
            staging_path: request.staging_path.clone(),
            mount_point: mount_point.to_path_buf(),
            mode: StageMode::Shared,
            fs_mount: shared.mount_point.clone(),
            files_dir: None,
            node_file: None,
        };
        let store = self.staged_store();
        store.put(&key, &record)?;
        if !self.is_mounted(mount_point).await? {
            // Checked above; opened again below the client mount through directories only,
            // in the bind's own call, so a link swapped in meanwhile is not followed.
            self.ctx
                .mounter
                .bind_mount_below(&shared.mount_point, &volume_dir, mount_point, false)
                .await?;
        }
        record.node_file = self.touch_node_file(&shared.mount_point, id).await?;
        store.put(&key, &record)?;
        info!(volume_id = %id_text, mount = %mount_point.display(), users = shared.users.len(), "volume staged through the shared client mount");
        Ok(())
    }

    /// Mount points the driver itself made on this node (client and staging mounts).
    fn own_mount_points(&self) -> Result<HashSet<PathBuf>> {
        let mut own: HashSet<PathBuf> = self
            .staged_store()
            .list()?
            .into_iter()
            .flat_map(|(_, r)| [r.mount_point, r.fs_mount])
            .collect();
        own.extend(
            self.shared_store()
                .list()?
                .into_iter()
                .map(|(_, s)| s.mount_point),
        );
        Ok(own)
    }

    /// NodeUnstageVolume.
    pub(crate) async fn unstage_volume(
        &self,
        id: &BeegfsVolumeId,
        staging_path: &Path,
    ) -> Result<()> {
        let id_text = id.to_string();
        let key = safe_key(&id_text);
        let store = self.staged_store();
        let record = store.get(&key)?.filter(|r| r.staging_path == staging_path);
        let mount_point = record
            .as_ref()
            .map_or_else(|| staging_path.join("mount"), |r| r.mount_point.clone());
        let fs_mount = record
            .as_ref()
            .map_or_else(|| mount_point.clone(), |r| r.fs_mount.clone());

        let mounts = self.ctx.mounter.list_mounts().await?;
        let binds = bind_mounts_of(&mounts, &fs_mount, &id.path, &self.own_mount_points()?);
        if !binds.is_empty() {
            return Err(Error::FailedPrecondition(format!(
                "volume {id_text} is still bind-mounted at {}; unpublish it first",
                binds
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        // This node's tracking file goes first: a per-volume client mount is the only way
        // to it. It comes back when the unmount fails, so DeleteVolume still waits.
        let node_file = record
            .as_ref()
            .and_then(|r| r.node_file.as_ref())
            .map(|rel| fs_mount.join(rel));
        if let Some(file) = node_file.clone() {
            let key = file.clone();
            let removed = self
                .below_mount(&key, "remove this node's staging record", move || {
                    match std::fs::remove_file(&file) {
                        Ok(()) => Ok(()),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                        Err(e) => Err(Error::io("remove", &file, e)),
                    }
                })
                .await;
            if let Err(e) = removed {
                warn!(volume_id = %id_text, error = %e, "node tracking file not removed; DeleteVolume will wait for its timeout");
            }
        }
        // Unmount first, check after: a check of a hung client mount never answers.
        if let Err(e) = self.unmount_client(&mount_point).await {
            if let Some(file) = node_file {
                self.restore_node_file(&id_text, file).await;
            }
            return Err(e);
        }
        match std::fs::remove_dir(&mount_point) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove directory", &mount_point, e)),
        }
        if let Some(rec) = &record {
            if let Some(files) = &rec.files_dir {
                fs_tree::remove_tree(files)?;
            }
            if rec.mode == StageMode::Shared {
                self.release_shared(id, &id_text).await?;
            }
            // Only the record of this staging path: an unstage of another one leaves the
            // volume's real stage, and what it holds, for its own unstage.
            store.remove(&key)?;
        }
        info!(volume_id = %id_text, "volume unstaged");
        Ok(())
    }

    /// Puts this node's tracking file back after an unstage that failed, so DeleteVolume
    /// keeps waiting for this node.
    async fn restore_node_file(&self, id_text: &str, file: PathBuf) {
        let key = file.clone();
        let restored = self
            .below_mount(&key, "restore this node's staging record", move || {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&file)
                    .map(drop)
                    .map_err(|e| Error::io("create", &file, e))
            })
            .await;
        if let Err(e) = restored {
            warn!(volume_id = %id_text, error = %e, "node tracking file not restored after a failed unstage; DeleteVolume may not wait for this node");
        }
    }

    /// Drops a volume from its filesystem's shared mount; the last one unmounts it.
    async fn release_shared(&self, id: &BeegfsVolumeId, id_text: &str) -> Result<()> {
        let host_key = safe_key(&id.host);
        let lock = self.host_lock(&format!("shared:{host_key}"));
        let _guard = lock.lock().await;
        let store = self.shared_store();
        let Some(mut shared) = store.get(&host_key)? else {
            return Ok(());
        };
        shared.users.remove(id_text);
        if !shared.users.is_empty() {
            store.put(&host_key, &shared)?;
            return Ok(());
        }
        self.unmount_client(&shared.mount_point).await?;
        let _ = std::fs::remove_dir(&shared.mount_point);
        store.remove(&host_key)?;
        info!(host = %id.host, "last volume unstaged; shared client mount removed");
        Ok(())
    }

    /// What the core bind-mounts onto the publish target, from the staging record: the
    /// core's bind checks in the same step that the staging mount is there, and opens the
    /// directory below it without leaving that filesystem.
    pub(crate) async fn publish_source(
        &self,
        request: &NodePublishRequest,
    ) -> Result<PublishSource> {
        let id = parse_volume_id(&request.volume_id)?;
        let record = self
            .staged_store()
            .get(&safe_key(&id.to_string()))?
            .filter(|r| r.staging_path == request.staging_path);
        let Some(record) = record else {
            return self.source_without_record(&id, &request.staging_path).await;
        };
        let dir = match record.mode {
            StageMode::Shared => record.mount_point.clone(),
            StageMode::PerVolume => record.mount_point.join(id.path.relative()),
        };
        Ok(PublishSource {
            staged: record.mount_point,
            dir,
        })
    }

    /// The publish source of a volume whose staging record is gone (state directory lost),
    /// from what the mount table shows at `<staging>/mount`: a mount of exactly the volume's
    /// directory (shared mode's bind mount) is the source itself; a client mount of the
    /// whole filesystem (per-volume mode) has the volume's directory below it, which must be
    /// a real directory reached through no link. Anything else is refused: the root of a
    /// filesystem is never published for a volume that is not that root.
    async fn source_without_record(
        &self,
        id: &BeegfsVolumeId,
        staging_path: &Path,
    ) -> Result<PublishSource> {
        let mount_point = staging_path.join("mount");
        let mounts = self.ctx.mounter.list_mounts().await?;
        let Some(staged) = mounts.iter().rfind(|m| m.mount_point == mount_point) else {
            return Err(Error::FailedPrecondition(format!(
                "volume {id} is not staged at {}",
                staging_path.display()
            )));
        };
        if staged.fs_type != FS_TYPE {
            return Err(Error::FailedPrecondition(format!(
                "volume {id}: {} is a {} mount, not BeeGFS; unstage and stage it again",
                mount_point.display(),
                staged.fs_type
            )));
        }
        if staged.root == Path::new(id.path.as_str()) {
            return Ok(PublishSource {
                dir: mount_point.clone(),
                staged: mount_point,
            });
        }
        if staged.root != Path::new("/") {
            return Err(Error::FailedPrecondition(format!(
                "volume {id}: {} shows {} of its filesystem, not the volume's directory {}; unstage and stage it again",
                mount_point.display(),
                staged.root.display(),
                id.path
            )));
        }
        let below = mount_point.join(id.path.relative());
        if !self.volume_dir_exists(&mount_point, id).await? {
            return Err(Error::FailedPrecondition(format!(
                "volume {id}: directory {} is not on the filesystem mounted at {}",
                id.path,
                mount_point.display()
            )));
        }
        Ok(PublishSource {
            staged: mount_point,
            dir: below,
        })
    }

    /// NodeGetVolumeStats: from the volume's group quota when it has one, else from the
    /// filesystem.
    pub(crate) async fn volume_stats(
        &self,
        id: &BeegfsVolumeId,
        volume_path: &Path,
    ) -> Result<VolumeStats> {
        let path = volume_path.to_path_buf();
        // Kubelet asks again every minute: a hung filesystem holds one thread, not one a call.
        let (meta_gid, setgid, space) = self
            .stuck
            .run(
                volume_path,
                self.fs_timeout(),
                format!("stat of volume {}", volume_path.display()),
                move || -> Result<_> {
                    let meta = std::fs::metadata(&path).map_err(|e| Error::io("stat", &path, e))?;
                    let space = fs_tree::fs_space(&path)?;
                    Ok((meta.gid(), meta.permissions().mode() & 0o2000 != 0, space))
                },
            )
            .await??;
        let quota = self
            .settings
            .quota_for(&id.host)
            .filter(|q| setgid && (q.gid_min..=q.gid_max).contains(&meta_gid));
        if let Some(q) = quota {
            let target = self.node_target(&id.host).await?;
            match self
                .ctl
                .group_quota(&target, meta_gid, q.storage_pool)
                .await
            {
                Ok(row) => {
                    let total = row.bytes_limit.unwrap_or(space.total);
                    return Ok(VolumeStats {
                        bytes_total: total,
                        bytes_used: row.bytes_used,
                        bytes_available: total.saturating_sub(row.bytes_used).min(space.available),
                        inodes_total: row.inodes_limit,
                        inodes_used: Some(row.inodes_used),
                        inodes_available: row
                            .inodes_limit
                            .map(|l| l.saturating_sub(row.inodes_used)),
                    });
                }
                Err(e)
                    if e.code() == ErrorCode::Unavailable
                        || e.code() == ErrorCode::DeadlineExceeded =>
                {
                    return Err(e);
                }
                Err(e) => {
                    warn!(volume_id = %id, error = %e, "quota usage unreadable; reporting filesystem usage")
                }
            }
        }
        Ok(VolumeStats {
            bytes_total: space.total,
            bytes_used: space.total.saturating_sub(space.available),
            bytes_available: space.available,
            inodes_total: Some(space.inodes),
            inodes_used: Some(space.inodes.saturating_sub(space.inodes_free)),
            inodes_available: Some(space.inodes_free),
        })
    }
}
