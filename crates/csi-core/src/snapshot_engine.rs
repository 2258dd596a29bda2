//! [`SnapshotEngine`] with an archiver run through the [`CommandRunner`]: GNU tar or
//! mpifileutils `dtar`, with an in-process MD5 checksum beside the archive.
//!
//! Command lines (every path absolute; `ARCHIVE.partial` is renamed to `ARCHIVE` once the
//! archive is complete, synced and, with verification, checksummed):
//!
//! - GNU tar, create: `tar --xattrs --xattrs-include=* --acls --numeric-owner --sparse
//!   -cf ARCHIVE.partial -C SOURCE .`; restore: `tar -xpf ARCHIVE --same-owner
//!   --numeric-owner --xattrs --xattrs-include=* --acls -C DEST`. Exit status 1 on create
//!   ("file changed as we read it", a volume in use) is accepted with a warning.
//! - dtar (mpifileutils; `dtar [OPTION] -c -f ARCHIVE SOURCE...` and `dtar [OPTION] -x -f
//!   ARCHIVE`; sources must lie below the working directory, hence `-C`), create:
//!   `dtar --preserve-xattrs -C SOURCE -c -f ARCHIVE.partial .`; restore: `dtar
//!   --preserve-owner --preserve-times --preserve-perms --preserve-xattrs -C DEST -x -f
//!   ARCHIVE`. dtar writes pax archives GNU tar can read; it records no hard links (each
//!   link becomes a copy) and appends its index as a last entry named after the archive
//!   (`<name>.partial.dtaridx`), which dtar skips on extraction and GNU tar would extract as
//!   a file. To run it on several MPI ranks, point the configured path at a wrapper script
//!   that calls `mpirun ... dtar "$@"`.
//!
//! The checksum file is `ARCHIVE.md5` in `md5sum` format (`<hex>  <archive file name>`),
//! so `md5sum -c` in the archive's directory checks it too.
//!
//! A clone ([`SnapshotEngine::copy_tree`]) archives the source into a hidden temporary
//! archive in the destination's parent directory, extracts it and removes it (no pipe
//! between two processes, which would need a shell); it is never checksummed, since it
//! never leaves this call. A restore that fails half-way leaves what was extracted in the
//! destination: the caller removes the new volume.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use md5::{Digest, Md5};
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::linux::mounter::run_blocking;
use crate::ports::{
    ArchiveInfo, ArchiveOptions, ArchiveTool, Command, CommandOutput, CommandRunner, SnapshotEngine,
};

/// Default limit for one archiver run (create, restore, or one half of a clone) and for
/// checksumming an archive.
pub const DEFAULT_ARCHIVE_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

/// Default limit for the small filesystem operations around an archive (stat, rename,
/// remove, writing the checksum file).
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Suffix of an archive still being written.
pub const PARTIAL_SUFFIX: &str = ".partial";

/// Suffix of the checksum file beside an archive.
pub const MD5_SUFFIX: &str = ".md5";

/// Suffix of a separate dtar index file.
const DTAR_INDEX_SUFFIX: &str = ".dtaridx";

/// Writes and restores snapshot archives with GNU tar or dtar (see the module docs).
#[derive(Clone)]
pub struct ArchiveSnapshotEngine {
    runner: Arc<dyn CommandRunner>,
    archive_timeout: Duration,
    command_timeout: Duration,
}

impl std::fmt::Debug for ArchiveSnapshotEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveSnapshotEngine")
            .field("archive_timeout", &self.archive_timeout)
            .field("command_timeout", &self.command_timeout)
            .finish_non_exhaustive()
    }
}

impl ArchiveSnapshotEngine {
    /// An engine running archivers through `runner`, with [`DEFAULT_ARCHIVE_TIMEOUT`] and
    /// [`DEFAULT_COMMAND_TIMEOUT`].
    pub fn new(runner: Arc<dyn CommandRunner>) -> Self {
        Self {
            runner,
            archive_timeout: DEFAULT_ARCHIVE_TIMEOUT,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
        }
    }

    /// Sets the limit of one archiver run and of checksumming.
    pub fn with_archive_timeout(mut self, timeout: Duration) -> Self {
        self.archive_timeout = timeout;
        self
    }

    /// Sets the limit of the small filesystem operations.
    pub fn with_command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// Runs `f` on the blocking pool within the command timeout.
    async fn io<T, F>(&self, what: String, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T> + Send + 'static,
    {
        run_blocking(self.command_timeout, what, f).await?
    }

    /// Runs the archiver writing `source` into `archive` (which must not be final yet).
    async fn write_archive(&self, source: &Path, archive: &Path, tool: &ArchiveTool) -> Result<()> {
        let command = create_command(tool, source, archive, self.archive_timeout);
        let output = self.runner.run(&command).await?;
        check_archiver(tool, output, true)
    }

    /// Runs the archiver extracting `archive` into `dest`.
    async fn extract(&self, archive: &Path, dest: &Path, tool: &ArchiveTool) -> Result<()> {
        let command = restore_command(tool, archive, dest, self.archive_timeout);
        let output = self.runner.run(&command).await?;
        check_archiver(tool, output, false)
    }

    /// Finishes a written archive: sync, checksum, rename into place; returns its info.
    async fn finish(
        &self,
        partial: PathBuf,
        archive: PathBuf,
        options: &ArchiveOptions,
    ) -> Result<ArchiveInfo> {
        let verify = options.verify_md5;
        let what = format!("finishing snapshot archive {}", archive.display());
        run_blocking(self.archive_timeout, what, move || {
            File::open(&partial)
                .and_then(|f| f.sync_all())
                .map_err(|e| Error::io("sync", &partial, e))?;
            let md5 = if verify {
                let hex = md5_file(&partial)?;
                write_checksum_file(&archive, &hex)?;
                Some(hex)
            } else {
                remove_if_present(&suffixed(&archive, MD5_SUFFIX))?;
                None
            };
            let partial_index = suffixed(&partial, DTAR_INDEX_SUFFIX);
            if partial_index.exists() {
                let index = suffixed(&archive, DTAR_INDEX_SUFFIX);
                fs::rename(&partial_index, &index)
                    .map_err(|e| Error::io("rename", &partial_index, e))?;
            }
            fs::rename(&partial, &archive).map_err(|e| Error::io("rename", &partial, e))?;
            sync_parent(&archive)?;
            let size_bytes = fs::metadata(&archive)
                .map_err(|e| Error::io("stat", &archive, e))?
                .len();
            Ok(ArchiveInfo { size_bytes, md5 })
        })
        .await?
    }
}

/// `path` with `suffix` appended to its file name.
pub fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut s: OsString = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn tool_path(tool: &ArchiveTool) -> &Path {
    match tool {
        ArchiveTool::Tar(p) | ArchiveTool::Dtar(p) => p,
    }
}

/// The command that archives `source` into `archive`.
fn create_command(tool: &ArchiveTool, source: &Path, archive: &Path, timeout: Duration) -> Command {
    match tool {
        ArchiveTool::Tar(tar) => Command::new(tar, timeout)
            .args([
                "--xattrs",
                "--xattrs-include=*",
                "--acls",
                "--numeric-owner",
                "--sparse",
                "-cf",
            ])
            .arg(archive)
            .arg("-C")
            .arg(source)
            .arg("."),
        ArchiveTool::Dtar(dtar) => Command::new(dtar, timeout)
            .arg("--preserve-xattrs")
            .arg("-C")
            .arg(source)
            .args(["-c", "-f"])
            .arg(archive)
            .arg("."),
    }
}

/// The command that extracts `archive` into `dest`.
fn restore_command(tool: &ArchiveTool, archive: &Path, dest: &Path, timeout: Duration) -> Command {
    match tool {
        ArchiveTool::Tar(tar) => Command::new(tar, timeout)
            .arg("-xpf")
            .arg(archive)
            .args([
                "--same-owner",
                "--numeric-owner",
                "--xattrs",
                "--xattrs-include=*",
                "--acls",
                "-C",
            ])
            .arg(dest),
        ArchiveTool::Dtar(dtar) => Command::new(dtar, timeout)
            .args([
                "--preserve-owner",
                "--preserve-times",
                "--preserve-perms",
                "--preserve-xattrs",
                "-C",
            ])
            .arg(dest)
            .args(["-x", "-f"])
            .arg(archive),
    }
}

/// Judges an archiver's exit: GNU tar's status 1 while creating means files changed while
/// being read, which a snapshot of a volume in use accepts.
fn check_archiver(tool: &ArchiveTool, output: CommandOutput, creating: bool) -> Result<()> {
    let program = tool_path(tool).display().to_string();
    if creating && matches!(tool, ArchiveTool::Tar(_)) && output.status == Some(1) {
        warn!(program, stderr = %output.stderr.trim(), "files changed while they were archived; the snapshot holds the state tar read");
        return Ok(());
    }
    output.check(&program).map(|_| ())
}

fn require_absolute(field: &str, path: &Path) -> Result<()> {
    if path.is_absolute() {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!("{} is not an absolute path", path.display()),
        ))
    }
}

/// Checks that `path` is an existing directory; `what` names it in errors.
fn require_dir(what: &str, path: &Path) -> Result<()> {
    match fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(Error::FailedPrecondition(format!(
            "{what} {} is not a directory",
            path.display()
        ))),
        Err(e) if e.kind() == ErrorKind::NotFound => Err(Error::NotFound(format!(
            "{what} {} does not exist",
            path.display()
        ))),
        Err(e) => Err(Error::io("stat", path, e)),
    }
}

fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", path, e)),
    }
}

fn sync_parent(path: &Path) -> Result<()> {
    let parent = path.parent().unwrap_or(Path::new("/"));
    File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("sync directory", parent, e))
}

/// The hex MD5 of a file, streamed.
pub fn md5_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("read", path, e)),
        };
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Parses an `md5sum` line (`<32 hex>  <name>` or `<32 hex> *<name>`) into the lowercase hex.
pub fn parse_md5sum_line(text: &str) -> Option<String> {
    let line = text.split('\n').next()?;
    let (hex, rest) = line.split_at_checked(32)?;
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let name = rest
        .strip_prefix("  ")
        .or_else(|| rest.strip_prefix(" *"))?;
    if name.is_empty() {
        return None;
    }
    Some(hex.to_ascii_lowercase())
}

/// Writes `ARCHIVE.md5` durably (temporary file, sync, rename) and reads it back.
fn write_checksum_file(archive: &Path, hex: &str) -> Result<()> {
    let name = archive
        .file_name()
        .ok_or_else(|| Error::invalid("archive", "has no file name"))?
        .to_string_lossy()
        .into_owned();
    let sidecar = suffixed(archive, MD5_SUFFIX);
    let tmp = suffixed(&sidecar, ".tmp");
    let content = format!("{hex}  {name}\n");
    let write = || -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(content.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, &sidecar)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io("write checksum", &sidecar, e)
    })?;
    let back = fs::read_to_string(&sidecar).map_err(|e| Error::io("read checksum", &sidecar, e))?;
    if parse_md5sum_line(&back).as_deref() != Some(hex) {
        return Err(Error::Internal(format!(
            "checksum file {} does not read back as written",
            sidecar.display()
        )));
    }
    Ok(())
}

/// Checks `archive` against `ARCHIVE.md5`: `FailedPrecondition` naming the archive when the
/// checksum file is missing or unreadable or the archive does not match it.
fn verify_archive(archive: &Path) -> Result<String> {
    let sidecar = suffixed(archive, MD5_SUFFIX);
    let text = match fs::read_to_string(&sidecar) {
        Ok(text) => text,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(Error::FailedPrecondition(format!(
                "snapshot archive {} has no checksum file {}; refusing to restore it unverified",
                archive.display(),
                sidecar.display()
            )));
        }
        Err(e) => return Err(Error::io("read checksum", &sidecar, e)),
    };
    let expected = parse_md5sum_line(&text).ok_or_else(|| {
        Error::FailedPrecondition(format!(
            "checksum file {} of snapshot archive {} is malformed",
            sidecar.display(),
            archive.display()
        ))
    })?;
    let actual = md5_file(archive)?;
    if actual != expected {
        return Err(Error::FailedPrecondition(format!(
            "snapshot archive {} is corrupt: its MD5 is {actual}, its checksum file says {expected}; nothing was extracted",
            archive.display()
        )));
    }
    Ok(actual)
}

#[async_trait]
impl SnapshotEngine for ArchiveSnapshotEngine {
    async fn create(
        &self,
        source: &Path,
        archive: &Path,
        options: &ArchiveOptions,
    ) -> Result<ArchiveInfo> {
        require_absolute("source", source)?;
        require_absolute("archive", archive)?;
        let partial = suffixed(archive, PARTIAL_SUFFIX);
        {
            let (source, archive, partial) =
                (source.to_path_buf(), archive.to_path_buf(), partial.clone());
            self.io(format!("preparing {}", archive.display()), move || {
                require_dir("snapshot source", &source)?;
                let parent = archive.parent().unwrap_or(Path::new("/"));
                require_dir("snapshot folder", parent)?;
                remove_if_present(&partial)?;
                remove_if_present(&suffixed(&partial, DTAR_INDEX_SUFFIX))
            })
            .await?;
        }
        let written = match self.write_archive(source, &partial, &options.tool).await {
            Ok(()) => {
                self.finish(partial.clone(), archive.to_path_buf(), options)
                    .await
            }
            Err(e) => Err(e),
        };
        match written {
            Ok(info) => {
                info!(source = %source.display(), archive = %archive.display(), size = info.size_bytes, md5 = ?info.md5, "snapshot archive written");
                Ok(info)
            }
            Err(e) => {
                let cleanup = partial.clone();
                let _ = self
                    .io(format!("removing {}", partial.display()), move || {
                        remove_if_present(&cleanup)?;
                        remove_if_present(&suffixed(&cleanup, DTAR_INDEX_SUFFIX))
                    })
                    .await;
                Err(e)
            }
        }
    }

    async fn restore(&self, archive: &Path, dest: &Path, options: &ArchiveOptions) -> Result<()> {
        require_absolute("archive", archive)?;
        require_absolute("dest", dest)?;
        {
            let (archive, dest) = (archive.to_path_buf(), dest.to_path_buf());
            self.io(format!("checking {}", archive.display()), move || {
                match fs::metadata(&archive) {
                    Ok(m) if m.is_file() => {}
                    Ok(_) => {
                        return Err(Error::FailedPrecondition(format!(
                            "snapshot archive {} is not a regular file",
                            archive.display()
                        )));
                    }
                    Err(e) if e.kind() == ErrorKind::NotFound => {
                        return Err(Error::NotFound(format!(
                            "snapshot archive {} does not exist",
                            archive.display()
                        )));
                    }
                    Err(e) => return Err(Error::io("stat", &archive, e)),
                }
                require_dir("restore destination", &dest)
            })
            .await?;
        }
        if options.verify_md5 {
            let owned = archive.to_path_buf();
            run_blocking(
                self.archive_timeout,
                format!("checksumming {}", archive.display()),
                move || verify_archive(&owned),
            )
            .await??;
        }
        self.extract(archive, dest, &options.tool).await?;
        info!(archive = %archive.display(), dest = %dest.display(), verified = options.verify_md5, "snapshot archive restored");
        Ok(())
    }

    async fn copy_tree(&self, source: &Path, dest: &Path, options: &ArchiveOptions) -> Result<()> {
        require_absolute("source", source)?;
        require_absolute("dest", dest)?;
        let name = dest
            .file_name()
            .ok_or_else(|| Error::invalid("dest", "has no directory name"))?
            .to_string_lossy()
            .into_owned();
        let parent = dest.parent().unwrap_or(Path::new("/"));
        let temp = parent.join(format!(
            ".{name}.clone-{}-{:016x}.tar",
            std::process::id(),
            rand::random::<u64>()
        ));
        {
            let (source, dest) = (source.to_path_buf(), dest.to_path_buf());
            self.io(format!("checking {}", source.display()), move || {
                require_dir("clone source", &source)?;
                require_dir("clone destination", &dest)
            })
            .await?;
        }
        let copied = match self.write_archive(source, &temp, &options.tool).await {
            Ok(()) => self.extract(&temp, dest, &options.tool).await,
            Err(e) => Err(e),
        };
        let cleanup = temp.clone();
        let removed = self
            .io(format!("removing {}", temp.display()), move || {
                remove_if_present(&cleanup)?;
                remove_if_present(&suffixed(&cleanup, DTAR_INDEX_SUFFIX))
            })
            .await;
        copied?;
        if let Err(e) = removed {
            warn!(temp = %temp.display(), error = %e, "could not remove the clone's temporary archive");
        }
        info!(source = %source.display(), dest = %dest.display(), "volume tree copied");
        Ok(())
    }

    async fn delete(&self, archive: &Path) -> Result<()> {
        require_absolute("archive", archive)?;
        let owned = archive.to_path_buf();
        self.io(format!("deleting {}", archive.display()), move || {
            for suffix in ["", MD5_SUFFIX, PARTIAL_SUFFIX, DTAR_INDEX_SUFFIX] {
                remove_if_present(&suffixed(&owned, suffix))?;
            }
            remove_if_present(&suffixed(&suffixed(&owned, MD5_SUFFIX), ".tmp"))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use crate::ports::MockCommandRunner;
    use proptest::prelude::*;

    fn ok() -> CommandOutput {
        CommandOutput {
            status: Some(0),
            ..Default::default()
        }
    }

    #[test]
    fn md5sum_lines_parse_in_both_modes() {
        let hex = "d41d8cd98f00b204e9800998ecf8427e";
        assert_eq!(
            parse_md5sum_line(&format!("{hex}  a.tar\n")).as_deref(),
            Some(hex)
        );
        assert_eq!(
            parse_md5sum_line(&format!("{} *a b.tar", hex.to_uppercase())).as_deref(),
            Some(hex)
        );
        assert_eq!(parse_md5sum_line(&format!("{hex} a.tar")), None);
        assert_eq!(parse_md5sum_line(&format!("{hex}  ")), None);
        assert_eq!(parse_md5sum_line("xyz"), None);
        assert_eq!(parse_md5sum_line(""), None);
    }

    #[test]
    fn md5_of_a_file_matches_the_known_digest() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        fs::write(&f, b"The quick brown fox jumps over the lazy dog").unwrap();
        assert_eq!(md5_file(&f).unwrap(), "9e107d9d372bb6826bd81d3542a419d6");
    }

    proptest! {
        #[test]
        fn md5sum_parsing_never_panics(s in "\\PC{0,80}") {
            if let Some(hex) = parse_md5sum_line(&s) {
                prop_assert_eq!(hex.len(), 32);
            }
        }

        #[test]
        fn written_checksum_lines_parse_back(bytes in prop::array::uniform16(any::<u8>()), name in "[^/\n\0]{1,30}") {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            prop_assert_eq!(parse_md5sum_line(&format!("{hex}  {name}\n")), Some(hex));
        }
    }

    #[tokio::test]
    async fn dtar_runs_with_its_own_syntax_and_the_archive_appears_only_when_complete() {
        let dir = tempfile::tempdir().unwrap();
        let (source, dest) = (dir.path().join("vol"), dir.path().join("restored"));
        fs::create_dir(&source).unwrap();
        fs::create_dir(&dest).unwrap();
        let archive = dir.path().join("snap.tar");
        let partial = suffixed(&archive, PARTIAL_SUFFIX);
        let (src2, dest2, partial2, archive2) = (
            source.clone(),
            dest.clone(),
            partial.clone(),
            archive.clone(),
        );
        let mut runner = MockCommandRunner::new();
        runner
            .expect_run()
            .withf(move |c| {
                let args: Vec<OsString> = vec![
                    "--preserve-xattrs".into(),
                    "-C".into(),
                    src2.clone().into(),
                    "-c".into(),
                    "-f".into(),
                    partial2.clone().into(),
                    ".".into(),
                ];
                c.program == Path::new("/opt/dtar") && c.args == args
            })
            .times(1)
            .returning(move |c| {
                // The archive is still only a partial file while the archiver runs.
                assert!(!archive2.exists());
                fs::write(Path::new(&c.args[5]), b"archive bytes").unwrap();
                Ok(ok())
            });
        let archive3 = archive.clone();
        runner
            .expect_run()
            .withf(move |c| {
                let args: Vec<OsString> = vec![
                    "--preserve-owner".into(),
                    "--preserve-times".into(),
                    "--preserve-perms".into(),
                    "--preserve-xattrs".into(),
                    "-C".into(),
                    dest2.clone().into(),
                    "-x".into(),
                    "-f".into(),
                    archive3.clone().into(),
                ];
                c.args == args
            })
            .times(1)
            .returning(|_| Ok(ok()));
        let engine = ArchiveSnapshotEngine::new(Arc::new(runner));
        let options = ArchiveOptions {
            tool: ArchiveTool::Dtar("/opt/dtar".into()),
            verify_md5: true,
        };
        let info = engine.create(&source, &archive, &options).await.unwrap();
        assert_eq!(info.size_bytes, 13);
        assert_eq!(
            info.md5.as_deref(),
            Some(md5_file(&archive).unwrap().as_str())
        );
        assert!(!partial.exists());
        engine.restore(&archive, &dest, &options).await.unwrap();
    }

    #[tokio::test]
    async fn a_failing_archiver_leaves_no_partial_and_no_archive() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("vol");
        fs::create_dir(&source).unwrap();
        let archive = dir.path().join("snap.tar");
        let mut runner = MockCommandRunner::new();
        runner.expect_run().returning(|c| {
            fs::write(Path::new(&c.args[6]), b"half").unwrap();
            Ok(CommandOutput {
                status: Some(2),
                stdout: String::new(),
                stderr: "tar: ./x: Cannot open: Permission denied".into(),
            })
        });
        let engine = ArchiveSnapshotEngine::new(Arc::new(runner));
        let options = ArchiveOptions {
            tool: ArchiveTool::Tar("/bin/tar".into()),
            verify_md5: false,
        };
        let err = engine
            .create(&source, &archive, &options)
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::Internal);
        assert!(err.to_string().contains("Permission denied"), "{err}");
        assert!(!archive.exists());
        assert!(!suffixed(&archive, PARTIAL_SUFFIX).exists());
    }

    #[tokio::test]
    async fn missing_and_relative_paths_are_refused_before_running_anything() {
        let dir = tempfile::tempdir().unwrap();
        let engine = ArchiveSnapshotEngine::new(Arc::new(MockCommandRunner::new()));
        let options = ArchiveOptions {
            tool: ArchiveTool::Tar("/bin/tar".into()),
            verify_md5: true,
        };
        let archive = dir.path().join("a.tar");
        let missing = dir.path().join("missing");
        let cases = [
            engine.create(&missing, &archive, &options).await,
            engine
                .create(dir.path(), &missing.join("a.tar"), &options)
                .await
                .map(|_| ArchiveInfo {
                    size_bytes: 0,
                    md5: None,
                }),
        ];
        for case in cases {
            assert_eq!(case.unwrap_err().code(), ErrorCode::NotFound);
        }
        let err = engine
            .create(Path::new("rel"), &archive, &options)
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidArgument);
        let err = engine
            .restore(&archive, dir.path(), &options)
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::NotFound);
        assert!(err.to_string().contains("a.tar"), "{err}");
        fs::write(&archive, b"x").unwrap();
        let err = engine
            .restore(&archive, &missing, &options)
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::NotFound);
        let err = engine
            .restore(&archive, dir.path(), &options)
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::FailedPrecondition);
        assert!(err.to_string().contains("no checksum file"), "{err}");
    }
}
