//! [`SnapshotEngine`] writing archives natively (GNU tar format, see [`tar_writer`]) or
//! with mpifileutils `dtar` run through the [`CommandRunner`], and extracting them with GNU
//! tar or dtar.
//!
//! Creating an archive (`ARCHIVE.partial` is renamed to `ARCHIVE` once the archive is
//! complete, synced and, with verification, checksummed):
//!
//! - [`ArchiveTool::Tar`]: the native parallel writer of [`tar_writer`] (no process), whose
//!   archives GNU tar reads; the checksum is computed from the bytes while they are
//!   written, so verification costs no second pass over the archive.
//! - dtar (mpifileutils; `dtar [OPTION] -c -f ARCHIVE SOURCE...` and `dtar [OPTION] -x -f
//!   ARCHIVE`; sources must lie below the working directory, hence `-C`), create:
//!   `dtar --preserve-xattrs -C SOURCE -c -f ARCHIVE.partial .`; dtar writes pax archives
//!   GNU tar can read; it records no hard links (each link becomes a copy) and appends its
//!   index as a last entry named after the archive (`<name>.partial.dtaridx`), which dtar
//!   skips on extraction and GNU tar would extract as a file. To run it on several MPI
//!   ranks, point the configured path at a wrapper script that calls `mpirun ... dtar
//!   "$@"`. Its checksum is computed in a second pass once dtar is done.
//!
//! Restoring (every path absolute): GNU tar `tar -xpf ARCHIVE --same-owner --numeric-owner
//! --xattrs --xattrs-include=* --acls -C DEST`; dtar `dtar --preserve-owner --preserve-times
//! --preserve-perms --preserve-xattrs -C DEST -x -f ARCHIVE`.
//!
//! The checksum ([`checksum`]) is XXH3-128 in `ARCHIVE.xxh128` (`xxh128sum` format) or,
//! as the options ask, BLAKE3 in `ARCHIVE.b3` (`b3sum` format) or MD5 in `ARCHIVE.md5`
//! (`md5sum` format): `<hex>  <archive file name>`, so `xxh128sum -c`, `b3sum -c` or
//! `md5sum -c` in the archive's directory checks it too. A verified restore checks the
//! first of these files it finds (archives of earlier versions have `.b3` or `.md5`), and
//! refuses an archive with none.
//!
//! A clone ([`SnapshotEngine::copy_tree`]) archives the source into a hidden temporary
//! archive in the destination's parent directory, extracts it and removes it; it is never
//! checksummed, since it never leaves this call. A restore that fails half-way leaves what
//! was extracted in the destination: the caller removes the new volume.

pub mod checksum;
pub mod direct_io;
pub mod members;
pub mod tar_writer;

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::ErrorKind;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tracing::{info, warn};

pub use self::checksum::{
    B3_SUFFIX, MD5_SUFFIX, XXH128_SUFFIX, md5_file, parse_md5sum_line, sidecar_suffix,
};
use self::checksum::{hash_file, remove_checksum_file, verify_archive, write_checksum_file};
use self::tar_writer::{WriteLimits, write_archive};
use crate::blocking::try_blocking;
use crate::error::{Error, Result};
use crate::ports::{
    ArchiveChecksum, ArchiveInfo, ArchiveOptions, ArchiveTool, ChecksumKind, Command,
    CommandOutput, CommandRunner, SnapshotEngine,
};

/// Default limit for one archiver run (create, restore, or one half of a clone) and for
/// checksumming an archive.
pub const DEFAULT_ARCHIVE_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

/// Default limit for the small filesystem operations around an archive (stat, rename,
/// remove, writing the checksum file).
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Suffix of an archive still being written.
pub const PARTIAL_SUFFIX: &str = ".partial";

/// Extra time the blocking pool gets beyond the native writer's own deadline before the
/// call gives up on it.
const NATIVE_GRACE: Duration = Duration::from_secs(30);

/// Suffix of a separate dtar index file.
const DTAR_INDEX_SUFFIX: &str = ".dtaridx";

/// Writes snapshot archives natively or with dtar, restores them with GNU tar or dtar (see
/// the module docs).
#[derive(Clone)]
pub struct ArchiveSnapshotEngine {
    runner: Arc<dyn CommandRunner>,
    archive_timeout: Duration,
    command_timeout: Duration,
    native: bool,
}

impl std::fmt::Debug for ArchiveSnapshotEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveSnapshotEngine")
            .field("archive_timeout", &self.archive_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("native", &self.native)
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
            native: tar_writer::beneath_supported(),
        }
    }

    /// Whether `tar` archives are written natively (the default where the kernel has
    /// `openat2`, see [`tar_writer::beneath_supported`]) or by running GNU tar.
    pub fn with_native_writer(mut self, native: bool) -> Self {
        self.native = native && tar_writer::beneath_supported();
        self
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
        try_blocking(self.command_timeout, what, f).await
    }

    /// Writes `source` into `archive` (which must not be final yet): natively for GNU tar,
    /// with dtar otherwise; returns the checksum of `checksum`'s kind when the writer
    /// computed it.
    async fn write_archive(
        &self,
        source: &Path,
        archive: &Path,
        tool: &ArchiveTool,
        checksum: Option<ChecksumKind>,
        cancel: &Arc<AtomicBool>,
    ) -> Result<Option<ArchiveChecksum>> {
        match tool {
            ArchiveTool::Tar(_) if self.native => {
                let limits = WriteLimits::new(self.archive_timeout, cancel.clone());
                let (src, dest) = (source.to_path_buf(), archive.to_path_buf());
                let written = try_blocking(
                    self.archive_timeout.saturating_add(NATIVE_GRACE),
                    format!("archiving {}", source.display()),
                    // Removed here on error too: a cancelled caller may be gone, and a
                    // removal before the writer created the file would miss it.
                    move || {
                        write_archive(&src, &dest, checksum, &limits).inspect_err(|_| {
                            let _ = remove_if_present(&dest);
                        })
                    },
                )
                .await?;
                if written.warnings > 0 {
                    warn!(source = %source.display(), warnings = written.warnings, "files changed while they were archived; the snapshot holds the state that was read");
                }
                Ok(written.checksum)
            }
            // dtar, and GNU tar without openat2 (it opens below directory descriptors
            // itself).
            ArchiveTool::Tar(_) | ArchiveTool::Dtar(_) => {
                // The archiver writes into a file made readable by its owner only: an
                // archive holds the volume's data, whatever the modes of its files were.
                let owned = archive.to_path_buf();
                self.io(format!("creating {}", archive.display()), move || {
                    create_private_file(&owned)
                })
                .await?;
                let command = create_command(tool, source, archive, self.archive_timeout);
                let output = self.runner.run(&command).await?;
                check_archiver(tool, output, true)?;
                Ok(None)
            }
        }
    }

    /// Runs the archiver extracting `archive` into `dest`, then flushes `dest`'s filesystem
    /// to the disk: the archiver leaves what it wrote in the page cache, and a volume
    /// reported ready must not lose its content when the controller's node crashes.
    async fn extract(&self, archive: &Path, dest: &Path, tool: &ArchiveTool) -> Result<()> {
        if matches!(tool, ArchiveTool::Dtar(_)) {
            // dtar writes where member names and links lead: they are checked first.
            let owned = archive.to_path_buf();
            try_blocking(
                self.archive_timeout,
                format!("checking the members of {}", archive.display()),
                move || members::check_members(&owned),
            )
            .await?;
        }
        let command = restore_command(tool, archive, dest, self.archive_timeout);
        let output = self.runner.run(&command).await?;
        check_archiver(tool, output, false)?;
        let owned = dest.to_path_buf();
        try_blocking(
            self.archive_timeout,
            format!("flushing {} to the disk", dest.display()),
            move || {
                let dir = File::open(&owned).map_err(|e| Error::io("open", &owned, e))?;
                nix::unistd::syncfs(&dir)
                    .map_err(|e| Error::io("syncfs", &owned, std::io::Error::from(e)))
            },
        )
        .await
    }

    /// Finishes a written archive: sync, checksum (`written`, or computed now), rename into
    /// place; returns its info. Once `cancel` is raised (the caller gave up on the archive)
    /// nothing is renamed into place any more, and what was renamed just before is removed
    /// again: a caller that raises the flag and then deletes the archive never finds it
    /// back afterwards.
    async fn finish(
        &self,
        partial: PathBuf,
        archive: PathBuf,
        options: &ArchiveOptions,
        written: Option<ArchiveChecksum>,
        cancel: Arc<AtomicBool>,
    ) -> Result<ArchiveInfo> {
        let (verify, kind) = (options.verify, options.checksum);
        let what = format!("finishing snapshot archive {}", archive.display());
        try_blocking(self.archive_timeout, what, move || {
            finish_archive(&partial, &archive, verify.then_some(kind), written, || {
                cancel.load(Ordering::SeqCst)
            })
        })
        .await
    }
}

/// [`ArchiveSnapshotEngine::finish`] on the blocking thread; `given_up` is asked before
/// each step that puts something in place and once after the last, and a `true` removes
/// everything of the archive.
fn finish_archive(
    partial: &Path,
    archive: &Path,
    checksum: Option<ChecksumKind>,
    written: Option<ArchiveChecksum>,
    given_up: impl Fn() -> bool,
) -> Result<ArchiveInfo> {
    let abandon = || {
        remove_archive_files(archive)?;
        Err(Error::DeadlineExceeded(format!(
            "archive {} abandoned before it was finished",
            archive.display()
        )))
    };
    File::open(partial)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io("sync", partial, e))?;
    let partial_index = suffixed(partial, DTAR_INDEX_SUFFIX);
    // Whatever wrote them, the archive and its index are readable by their owner only.
    make_private(partial)?;
    if partial_index.exists() {
        make_private(&partial_index)?;
    }
    let checksum = match checksum {
        Some(kind) => {
            let sum = match written {
                Some(sum) if sum.kind == kind => sum,
                _ => hash_file(kind, partial)?,
            };
            if given_up() {
                return abandon();
            }
            write_checksum_file(archive, &sum)?;
            Some(sum)
        }
        None => {
            for kind in ChecksumKind::ALL {
                remove_checksum_file(archive, kind)?;
            }
            None
        }
    };
    if given_up() {
        return abandon();
    }
    if partial_index.exists() {
        let index = suffixed(archive, DTAR_INDEX_SUFFIX);
        fs::rename(&partial_index, &index).map_err(|e| Error::io("rename", &partial_index, e))?;
    }
    fs::rename(partial, archive).map_err(|e| Error::io("rename", partial, e))?;
    if given_up() {
        // Given up while renaming: whoever gave up may already have deleted the archive.
        return abandon();
    }
    sync_parent(archive)?;
    let size_bytes = fs::metadata(archive)
        .map_err(|e| Error::io("stat", archive, e))?
        .len();
    Ok(ArchiveInfo {
        size_bytes,
        checksum,
    })
}

/// Removes `archive` and everything written beside it (checksums, index, partial files).
fn remove_archive_files(archive: &Path) -> Result<()> {
    for suffix in ["", PARTIAL_SUFFIX, DTAR_INDEX_SUFFIX] {
        remove_if_present(&suffixed(archive, suffix))?;
    }
    for kind in ChecksumKind::ALL {
        let sum = suffixed(archive, sidecar_suffix(kind));
        remove_if_present(&suffixed(&sum, ".tmp"))?;
        remove_if_present(&sum)?;
    }
    Ok(())
}

/// Raises a cancel flag when dropped: a timed-out or abandoned call stops the writer's
/// threads.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// An archive's files (the archive and a dtar index beside it), removed when dropped while
/// still armed: what an archive operation leaves behind when its future is dropped (a
/// timeout, a stopped cut, a client that gave up), which no later call would find. The
/// removal runs on a thread of its own, so a filesystem that hangs holds only that thread.
struct LeftoverArchive(Option<PathBuf>);

impl LeftoverArchive {
    fn new(archive: &Path) -> Self {
        Self(Some(archive.to_path_buf()))
    }

    /// Disarms the guard: the operation finished and dealt with the files itself.
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for LeftoverArchive {
    fn drop(&mut self) {
        let Some(archive) = self.0.take() else {
            return;
        };
        let removal = std::thread::Builder::new()
            .name("archive-cleanup".into())
            .spawn(move || {
                if let Err(e) = remove_archive_leftovers(&archive) {
                    warn!(archive = %archive.display(), error = %e, "could not remove an abandoned archive");
                }
            });
        if let Err(e) = removal {
            warn!(error = %e, "could not start the removal of an abandoned archive");
        }
    }
}

/// Removes an unfinished archive and the dtar index beside it, if present.
fn remove_archive_leftovers(archive: &Path) -> Result<()> {
    remove_if_present(archive)?;
    remove_if_present(&suffixed(archive, DTAR_INDEX_SUFFIX))
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

/// The command that archives `source` into `archive`: dtar, or GNU tar where the native
/// writer cannot run (no `openat2`).
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

/// Creates (or empties) file `path` with mode 0600, not following a symbolic link.
fn create_private_file(path: &Path) -> Result<()> {
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| Error::io("create", path, e))?;
    make_private(path)
}

/// Takes the group's and others' access to file `path` away.
fn make_private(path: &Path) -> Result<()> {
    let mode = fs::symlink_metadata(path)
        .map_err(|e| Error::io("stat", path, e))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o7700))
            .map_err(|e| Error::io("set mode of", path, e))?;
    }
    Ok(())
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
                remove_archive_leftovers(&partial)
            })
            .await?;
        }
        let checksum = options.verify.then_some(options.checksum);
        // Raised when this future is dropped (a timeout, a stopped cut): the native writer
        // stops, and a finish already on its blocking thread renames nothing into place.
        let cancel = Arc::new(AtomicBool::new(false));
        let _stop = CancelOnDrop(cancel.clone());
        let mut leftover = LeftoverArchive::new(&partial);
        let written = match self
            .write_archive(source, &partial, &options.tool, checksum, &cancel)
            .await
        {
            Ok(sum) => {
                self.finish(
                    partial.clone(),
                    archive.to_path_buf(),
                    options,
                    sum,
                    cancel.clone(),
                )
                .await
            }
            Err(e) => Err(e),
        };
        let result = match written {
            Ok(info) => {
                info!(source = %source.display(), archive = %archive.display(), size = info.size_bytes, checksum = ?info.checksum, "snapshot archive written");
                Ok(info)
            }
            Err(e) => {
                let cleanup = partial.clone();
                let _ = self
                    .io(format!("removing {}", partial.display()), move || {
                        remove_archive_leftovers(&cleanup)
                    })
                    .await;
                Err(e)
            }
        };
        leftover.disarm();
        result
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
        if options.verify {
            let owned = archive.to_path_buf();
            try_blocking(
                self.archive_timeout,
                format!("checksumming {}", archive.display()),
                move || verify_archive(&owned),
            )
            .await?;
        }
        self.extract(archive, dest, &options.tool).await?;
        info!(archive = %archive.display(), dest = %dest.display(), verified = options.verify, "snapshot archive restored");
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
        let cancel = Arc::new(AtomicBool::new(false));
        let _stop = CancelOnDrop(cancel.clone());
        let mut leftover = LeftoverArchive::new(&temp);
        let copied = match self
            .write_archive(source, &temp, &options.tool, None, &cancel)
            .await
        {
            Ok(_) => self.extract(&temp, dest, &options.tool).await,
            Err(e) => Err(e),
        };
        let cleanup = temp.clone();
        let removed = self
            .io(format!("removing {}", temp.display()), move || {
                remove_archive_leftovers(&cleanup)
            })
            .await;
        leftover.disarm();
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
            remove_archive_files(&owned)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use crate::ports::MockCommandRunner;

    fn ok() -> CommandOutput {
        CommandOutput {
            status: Some(0),
            ..Default::default()
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
                fs::write(Path::new(&c.args[5]), [0u8; 1024]).unwrap();
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
            verify: true,
            checksum: ChecksumKind::Md5,
        };
        let info = engine.create(&source, &archive, &options).await.unwrap();
        assert_eq!(info.size_bytes, 1024);
        // dtar's archive is checksummed in a second pass, with the kind asked for.
        assert_eq!(
            info.checksum.map(|c| (c.kind, c.hex)),
            Some((ChecksumKind::Md5, md5_file(&archive).unwrap()))
        );
        assert!(suffixed(&archive, MD5_SUFFIX).exists());
        assert!(!suffixed(&archive, B3_SUFFIX).exists());
        assert!(!partial.exists());
        for path in [archive.clone(), suffixed(&archive, MD5_SUFFIX)] {
            assert_eq!(
                fs::metadata(&path).unwrap().permissions().mode() & 0o7777,
                0o600,
                "{}",
                path.display()
            );
        }
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
            fs::write(Path::new(&c.args[5]), b"half").unwrap();
            Ok(CommandOutput {
                status: Some(2),
                stdout: String::new(),
                stderr: "dtar: ./x: Cannot open: Permission denied".into(),
            })
        });
        let engine = ArchiveSnapshotEngine::new(Arc::new(runner));
        let options = ArchiveOptions {
            tool: ArchiveTool::Dtar("/opt/dtar".into()),
            verify: true,
            checksum: ChecksumKind::Blake3,
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

    /// A dtar that writes its archive, then never returns.
    struct HangingDtar;

    #[async_trait]
    impl CommandRunner for HangingDtar {
        async fn run(&self, command: &Command) -> Result<CommandOutput> {
            fs::write(Path::new(&command.args[5]), b"half a volume").unwrap();
            std::future::pending().await
        }
    }

    #[tokio::test]
    async fn a_clone_given_up_leaves_no_temporary_archive() {
        let dir = tempfile::tempdir().unwrap();
        let (source, dest) = (dir.path().join("vol"), dir.path().join("clone"));
        fs::create_dir(&source).unwrap();
        fs::create_dir(&dest).unwrap();
        let engine = ArchiveSnapshotEngine::new(Arc::new(HangingDtar));
        let options = ArchiveOptions {
            tool: ArchiveTool::Dtar("/opt/dtar".into()),
            verify: false,
            checksum: ChecksumKind::Md5,
        };
        let copy = engine.copy_tree(&source, &dest, &options);
        // Dropped by the timeout, as a client that gives up drops it.
        tokio::time::timeout(Duration::from_millis(100), copy)
            .await
            .unwrap_err();
        let names = || -> Vec<String> {
            fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        };
        // The removal runs on a thread of its own: give it a few seconds.
        for _ in 0..500 {
            if names().len() == 2 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut left = names();
        left.sort();
        assert_eq!(left, ["clone", "vol"]);
    }

    #[tokio::test]
    async fn a_restore_is_done_only_once_its_files_are_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("restored");
        fs::create_dir(&dest).unwrap();
        let archive = dir.path().join("snap.tar");
        // An empty archive (its end: two zero blocks).
        fs::write(&archive, [0u8; 1024]).unwrap();
        let mut runner = MockCommandRunner::new();
        let gone = dest.clone();
        // The destination disappears under the archiver: the flush that follows the
        // extraction cannot reach it, and the restore is not reported done.
        runner.expect_run().times(1).returning(move |_| {
            fs::remove_dir(&gone).unwrap();
            Ok(ok())
        });
        let engine = ArchiveSnapshotEngine::new(Arc::new(runner));
        let options = ArchiveOptions {
            tool: ArchiveTool::Dtar("/opt/dtar".into()),
            verify: false,
            checksum: ChecksumKind::Md5,
        };
        let err = engine.restore(&archive, &dest, &options).await.unwrap_err();
        assert!(err.to_string().contains("restored"), "{err}");
    }

    #[tokio::test]
    async fn dtar_is_not_run_on_an_archive_whose_members_lead_out() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("restored");
        fs::create_dir(&dest).unwrap();
        let archive = dir.path().join("snap.tar");
        let mut builder = tar::Builder::new(File::create(&archive).unwrap());
        let mut link = tar::Header::new_gnu();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_size(0);
        builder.append_link(&mut link, "l", "/etc").unwrap();
        let mut file = tar::Header::new_gnu();
        file.set_size(1);
        file.set_mode(0o644);
        builder.append_data(&mut file, "l/x", &b"x"[..]).unwrap();
        builder.finish().unwrap();
        drop(builder);
        // No expectation: running dtar would fail the test.
        let engine = ArchiveSnapshotEngine::new(Arc::new(MockCommandRunner::new()));
        let options = ArchiveOptions {
            tool: ArchiveTool::Dtar("/opt/dtar".into()),
            verify: false,
            checksum: ChecksumKind::Md5,
        };
        let err = engine.restore(&archive, &dest, &options).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::FailedPrecondition, "{err}");
        assert!(err.to_string().contains("below a link"), "{err}");
    }

    /// An engine that must not run any command, with verified GNU-tar options.
    fn verified_tar_engine() -> (ArchiveSnapshotEngine, ArchiveOptions) {
        let engine = ArchiveSnapshotEngine::new(Arc::new(MockCommandRunner::new()));
        let options = ArchiveOptions {
            tool: ArchiveTool::Tar("/bin/tar".into()),
            verify: true,
            checksum: ChecksumKind::Blake3,
        };
        (engine, options)
    }

    #[tokio::test]
    async fn an_abandoned_archive_is_never_left_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, options) = verified_tar_engine();
        let archive = dir.path().join("a.tar");
        let partial = suffixed(&archive, PARTIAL_SUFFIX);
        // Through the engine: given up before it finishes.
        fs::write(&partial, b"written").unwrap();
        let cancel = Arc::new(AtomicBool::new(true));
        let err = engine
            .finish(partial.clone(), archive.clone(), &options, None, cancel)
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::DeadlineExceeded, "{err}");
        assert!(!archive.exists() && !suffixed(&archive, B3_SUFFIX).exists());
        // Given up at each check in turn (the third comes after the rename): nothing of
        // the archive stays; never given up, it is in place with its checksum.
        for checks_passed in 0..4 {
            fs::write(&partial, b"written").unwrap();
            let asked = std::cell::Cell::new(0);
            let result =
                finish_archive(&partial, &archive, Some(ChecksumKind::Blake3), None, || {
                    asked.set(asked.get() + 1);
                    asked.get() > checks_passed
                });
            if checks_passed < 3 {
                let err = result.unwrap_err();
                assert_eq!(err.code(), ErrorCode::DeadlineExceeded, "{err}");
                let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
                assert!(
                    left.is_empty(),
                    "left after check {checks_passed}: {left:?}"
                );
            } else {
                assert_eq!(result.unwrap().size_bytes, 7);
                assert!(archive.exists() && suffixed(&archive, B3_SUFFIX).exists());
            }
        }
    }

    #[tokio::test]
    async fn missing_and_relative_paths_are_refused_before_running_anything() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, options) = verified_tar_engine();
        let archive = dir.path().join("a.tar");
        let missing = dir.path().join("missing");
        let cases = [
            engine.create(&missing, &archive, &options).await,
            engine
                .create(dir.path(), &missing.join("a.tar"), &options)
                .await
                .map(|_| ArchiveInfo {
                    size_bytes: 0,
                    checksum: None,
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
