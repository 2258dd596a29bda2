//! Per-volume capacity limits with BeeGFS group quotas.
//!
//! BeeGFS limits users and groups (per storage pool), never directories. A volume therefore
//! gets a group id of its own: the directory is given that group and the setgid bit, so
//! everything created below inherits the group, and the group's space and inode limits are
//! the volume's capacity. Files whose group a user changes afterwards escape the limit; that
//! is the price of group quotas and is documented.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use csi_core::blocking::try_blocking;
use csi_core::fs_paths::open_dir;
use csi_core::ports::{QuotaLimits, QuotaManager, QuotaUsage};
use csi_core::{Error, Result};

use crate::ctl::{Ctl, CtlTarget};

/// The setgid bit.
pub const SETGID: u32 = 0o2000;

/// Group quotas of one filesystem and storage pool.
#[derive(Debug, Clone)]
pub struct BeegfsQuota {
    ctl: Arc<Ctl>,
    target: CtlTarget,
    pool: u16,
    /// How long a directory operation through the client mount may take.
    fs_timeout: Duration,
}

impl BeegfsQuota {
    /// Quotas of `target`'s filesystem in `pool`; directory operations through the client
    /// mount give up after `fs_timeout`.
    pub fn new(ctl: Arc<Ctl>, target: CtlTarget, pool: u16, fs_timeout: Duration) -> Self {
        Self {
            ctl,
            target,
            pool,
            fs_timeout,
        }
    }
}

/// Gives directory `dir` group `gid` and the setgid bit; refuses anything but a real
/// directory (a symbolic link is never followed).
pub fn assign_group(dir: &Path, gid: u32) -> Result<()> {
    let file = open_dir(dir)?;
    let stat = |file: &std::fs::File| file.metadata().map_err(|e| Error::io("stat", dir, e));
    if stat(&file)?.gid() != gid {
        std::os::unix::fs::fchown(&file, None, Some(gid))
            .map_err(|e| Error::io("change group of", dir, e))?;
    }
    // chown may clear the setgid bit, so the mode is read again.
    let mode = stat(&file)?.permissions().mode() & 0o7777;
    if mode & SETGID == 0 {
        file.set_permissions(std::fs::Permissions::from_mode(mode | SETGID))
            .map_err(|e| Error::io("set the setgid bit of", dir, e))?;
    }
    Ok(())
}

#[async_trait]
impl QuotaManager for BeegfsQuota {
    async fn assign(&self, dir: &Path, id: u32) -> Result<()> {
        let dir: PathBuf = dir.to_path_buf();
        try_blocking(self.fs_timeout, "assign the quota group", move || {
            assign_group(&dir, id)
        })
        .await
    }

    async fn set_limits(&self, id: u32, limits: &QuotaLimits) -> Result<()> {
        self.ctl
            .set_group_quota(
                &self.target,
                id,
                limits.bytes_hard,
                limits.inodes_hard,
                self.pool,
            )
            .await
    }

    async fn usage(&self, id: u32) -> Result<QuotaUsage> {
        let row = self.ctl.group_quota(&self.target, id, self.pool).await?;
        Ok(QuotaUsage {
            bytes_used: row.bytes_used,
            bytes_limit: row.bytes_limit,
            inodes_used: row.inodes_used,
            inodes_limit: row.inodes_limit,
        })
    }

    /// Usage, or limits of the group's own: BeeGFS 7 shows a group without limits of its own
    /// the pool's default ones, which every unused group would then seem to have.
    async fn in_use(&self, id: u32) -> Result<bool> {
        let u = self.usage(id).await?;
        if u.bytes_used > 0 || u.inodes_used > 0 {
            return Ok(true);
        }
        if u.bytes_limit.is_none() && u.inodes_limit.is_none() {
            return Ok(false);
        }
        let defaults = self
            .ctl
            .default_group_limits(&self.target, self.pool)
            .await?;
        Ok(defaults != Some((u.bytes_limit, u.inodes_limit)))
    }

    async fn clear(&self, id: u32) -> Result<()> {
        self.ctl
            .reset_group_quota(&self.target, id, self.pool)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctl::CtlTools;
    use csi_core::ports::{Command, CommandOutput, MockCommandRunner};
    use std::sync::Mutex;
    use std::time::Duration;

    fn target() -> CtlTarget {
        CtlTarget {
            host: "fs".into(),
            grpc_port: 8010,
            client_conf: "/s/beegfs-client.conf".into(),
            auth_file: None,
            tls_cert_file: None,
        }
    }

    /// A BeeGFS 7 filesystem whose quota tool keeps limits in memory and reports `used`
    /// bytes for every group.
    fn quota_with(used: u64) -> (BeegfsQuota, Arc<Mutex<Vec<Command>>>) {
        let limits = Arc::new(Mutex::new(std::collections::HashMap::<
            String,
            (String, String),
        >::new()));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let mut runner = MockCommandRunner::new();
        runner.expect_run().returning(move |cmd: &Command| {
            log.lock().unwrap().push(cmd.clone());
            let a: Vec<String> = cmd
                .args
                .iter()
                .map(|s| s.to_string_lossy().into_owned())
                .collect();
            if cmd.program == Path::new("beegfs") {
                return Ok(CommandOutput {
                    status: Some(1),
                    stdout: String::new(),
                    stderr: "connection refused".into(),
                });
            }
            let value = |prefix: &str| {
                a.iter()
                    .find_map(|s| s.strip_prefix(prefix))
                    .unwrap_or("")
                    .to_string()
            };
            let gid = a
                .iter()
                .skip_while(|s| *s != "--gid")
                .nth(1)
                .cloned()
                .unwrap_or_default();
            let stdout = if a.contains(&"--setquota".to_string()) {
                limits
                    .lock()
                    .unwrap()
                    .insert(gid, (value("--sizelimit="), value("--inodelimit=")));
                String::new()
            } else if a.contains(&"--getquota".to_string()) {
                let (size, inodes) = limits
                    .lock()
                    .unwrap()
                    .get(&gid)
                    .cloned()
                    .unwrap_or(("unlimited".into(), "unlimited".into()));
                let show = |v: String| {
                    if v == "reset" {
                        "unlimited".to_string()
                    } else {
                        v
                    }
                };
                format!(
                    "name,id,size,hard,files,hard\n{gid},{gid},{used},{},3,{}\n",
                    show(size),
                    show(inodes)
                )
            } else {
                String::new()
            };
            Ok(CommandOutput {
                status: Some(0),
                stdout,
                stderr: String::new(),
            })
        });
        let ctl = Arc::new(Ctl::new(
            Arc::new(runner),
            CtlTools {
                beegfs_ctl: "beegfs-ctl".into(),
                beegfs: "beegfs".into(),
                timeout: Duration::from_secs(5),
            },
        ));
        (
            BeegfsQuota::new(ctl, target(), 1, Duration::from_secs(5)),
            seen,
        )
    }

    #[tokio::test]
    async fn limits_set_are_read_back_and_cleared() {
        let (quota, seen) = quota_with(4096);
        let limits = QuotaLimits {
            bytes_hard: Some(10 << 30),
            inodes_hard: Some(5000),
            ..QuotaLimits::default()
        };
        quota.set_limits(2001, &limits).await.unwrap();
        let usage = quota.usage(2001).await.unwrap();
        assert_eq!(
            usage,
            QuotaUsage {
                bytes_used: 4096,
                bytes_limit: Some(10 << 30),
                inodes_used: 3,
                inodes_limit: Some(5000)
            }
        );
        assert!(quota.in_use(2001).await.unwrap());
        quota.clear(2001).await.unwrap();
        let cleared = quota.usage(2001).await.unwrap();
        assert_eq!((cleared.bytes_limit, cleared.inodes_limit), (None, None));
        let set: Vec<_> = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.args.iter().any(|a| a == "--setquota"))
            .map(|c| c.display())
            .collect();
        assert_eq!(set.len(), 2);
        assert!(
            set[0].contains("--sizelimit=10737418240") && set[0].contains("--inodelimit=5000"),
            "{set:?}"
        );
        assert!(set[1].contains("--sizelimit=reset"), "{set:?}");
    }

    #[tokio::test]
    async fn an_unused_group_without_limits_is_free() {
        let (quota, _) = quota_with(0);
        // The fake reports 3 inodes for every group, so only a group with nothing is free.
        assert!(quota.in_use(77).await.unwrap());
        let usage = quota.usage(77).await.unwrap();
        assert_eq!((usage.bytes_limit, usage.inodes_limit), (None, None));
    }

    #[test]
    fn assign_gives_up_after_the_filesystem_timeout() {
        // One blocking thread, kept busy as a hung client mount would keep it.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .max_blocking_threads(1)
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (quota, _) = quota_with(0);
        let quota = BeegfsQuota {
            fs_timeout: Duration::from_millis(200),
            ..quota
        };
        let started = std::time::Instant::now();
        let err = runtime.block_on(async {
            let _hung = tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_secs(3)));
            quota.assign(dir.path(), 4242).await.unwrap_err()
        });
        assert_eq!(err.code(), csi_core::ErrorCode::DeadlineExceeded, "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));
        runtime.shutdown_background();
    }

    #[tokio::test]
    async fn assign_sets_group_and_setgid_and_refuses_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let vol = dir.path().join("vol");
        std::fs::create_dir(&vol).unwrap();
        std::fs::set_permissions(&vol, std::fs::Permissions::from_mode(0o770)).unwrap();
        let (quota, _) = quota_with(0);
        quota.assign(&vol, 4242).await.unwrap();
        let meta = std::fs::metadata(&vol).unwrap();
        assert_eq!(meta.gid(), 4242);
        assert_eq!(meta.permissions().mode() & 0o7777, 0o2770);
        // New files inherit the group.
        std::fs::write(vol.join("f"), b"x").unwrap();
        assert_eq!(std::fs::metadata(vol.join("f")).unwrap().gid(), 4242);
        quota.assign(&vol, 4242).await.unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&vol, &link).unwrap();
        let err = quota.assign(&link, 1).await.unwrap_err();
        assert_eq!(err.code(), csi_core::ErrorCode::FailedPrecondition);
        assert_eq!(std::fs::metadata(&vol).unwrap().gid(), 4242);
    }
}
