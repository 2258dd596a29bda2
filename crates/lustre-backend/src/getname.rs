//! Which Lustre filesystem a path is on, by `lfs getname`.
//!
//! `lfs getname PATH` prints `FSNAME-INSTANCE PATH` (the instance is the client's
//! superblock, in hex: `testfs-ffff8803cc1d7000 /mnt/testfs`) when PATH is on a Lustre
//! client mount, and fails with ``cannot get name for `PATH': ...`` on any other
//! filesystem. The driver asks it before it trusts a mount point: in the deployments the
//! mount point is itself a mount (the host directory bound into the container), so "a
//! mount is there" does not mean "Lustre is there".

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use csi_core::ports::{Command, CommandRunner};
use csi_core::{Error, Result};

/// Asks `lfs getname` which Lustre filesystem a path is on.
#[derive(Clone)]
pub struct FsNames {
    runner: Arc<dyn CommandRunner>,
    lfs: PathBuf,
    timeout: Duration,
}

impl FsNames {
    /// Through `runner`, running `lfs` with `timeout`.
    pub fn new(runner: Arc<dyn CommandRunner>, lfs: &Path, timeout: Duration) -> Self {
        Self {
            runner,
            lfs: lfs.to_path_buf(),
            timeout,
        }
    }

    /// The name of the Lustre filesystem `path` is on; `None` when it is on another
    /// filesystem. A tool that cannot say (killed, timed out, unreadable answer) is an error.
    pub async fn fsname_at(&self, path: &Path) -> Result<Option<String>> {
        let cmd = Command::new(&self.lfs, self.timeout)
            .arg("getname")
            .arg(path.as_os_str());
        let out = self.runner.run(&cmd).await?;
        if !out.success() && out.stderr.contains("cannot get name for") {
            return Ok(None);
        }
        let out = out.check("lfs getname")?;
        parse_getname(&out.stdout).map(Some).ok_or_else(|| {
            Error::Unavailable(format!(
                "lfs getname {} printed {:?}, not FSNAME-INSTANCE PATH",
                path.display(),
                out.stdout.trim()
            ))
        })
    }
}

/// The filesystem name of `lfs getname`'s first line: its first word up to the last `-`
/// (filesystem names may hold a `-`; the instance is hex).
pub fn parse_getname(stdout: &str) -> Option<String> {
    let word = stdout.lines().next()?.split_whitespace().next()?;
    let (fsname, instance) = word.rsplit_once('-')?;
    let valid = !fsname.is_empty()
        && !instance.is_empty()
        && instance.bytes().all(|b| b.is_ascii_hexdigit());
    valid.then(|| fsname.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use csi_core::ports::{CommandOutput, MockCommandRunner};
    use proptest::prelude::*;

    fn names(status: i32, stdout: &str, stderr: &str) -> FsNames {
        let (stdout, stderr) = (stdout.to_string(), stderr.to_string());
        let mut runner = MockCommandRunner::new();
        runner.expect_run().returning(move |cmd| {
            assert_eq!(cmd.args, ["getname", "/exaFS"]);
            Ok(CommandOutput {
                status: Some(status),
                stdout: stdout.clone(),
                stderr: stderr.clone(),
            })
        });
        FsNames::new(Arc::new(runner), Path::new("lfs"), Duration::from_secs(5))
    }

    #[tokio::test]
    async fn a_lustre_mount_a_plain_mount_and_a_tool_that_cannot_say() {
        let at = Path::new("/exaFS");
        let lustre = names(0, "ex-fs_1-ffff8803cc1d7000 /exaFS\n", "");
        assert_eq!(
            lustre.fsname_at(at).await.unwrap().as_deref(),
            Some("ex-fs_1")
        );
        let plain = names(
            231,
            "",
            "cannot get name for `/exaFS': Inappropriate ioctl for device\n",
        );
        assert_eq!(plain.fsname_at(at).await.unwrap(), None);
        let broken = names(1, "", "lfs: error while loading shared libraries\n");
        assert!(broken.fsname_at(at).await.is_err());
        let garbled = names(0, "what\n", "");
        assert!(garbled.fsname_at(at).await.is_err());
    }

    proptest! {
        #[test]
        fn names_and_instances_parse_back(
            fsname in "[a-zA-Z0-9_][a-zA-Z0-9_-]{0,7}",
            instance in "[0-9a-f]{1,16}",
            path in "/[a-z/]{0,20}",
        ) {
            let line = format!("{fsname}-{instance} {path}\n");
            prop_assert_eq!(parse_getname(&line), Some(fsname));
        }

        #[test]
        fn parsing_never_panics(text in ".{0,60}") {
            let _ = parse_getname(&text);
        }
    }
}
