//! The archive snapshot engine with the real GNU tar, in temporary directories. Setting
//! owners needs root: these tests fail (they do not skip) without it.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::sync::Arc;
use std::time::{Duration, Instant};

use csi_core::ErrorCode;
use csi_core::linux::TokioCommandRunner;
use csi_core::ports::{ArchiveOptions, ArchiveTool, SnapshotEngine};
use csi_core::snapshot_engine::{ArchiveSnapshotEngine, MD5_SUFFIX, PARTIAL_SUFFIX, suffixed};

const XATTR_NAME: &str = "user.pfs-test";
const XATTR_VALUE: &[u8] = b"kept \x00 across snapshots";

fn require_root() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "the snapshot tests set file owners and need root: run them as root"
    );
}

fn tar_path() -> PathBuf {
    for candidate in ["/usr/bin/tar", "/bin/tar"] {
        if Path::new(candidate).exists() {
            return candidate.into();
        }
    }
    panic!("GNU tar is not installed (looked for /usr/bin/tar and /bin/tar)");
}

fn engine() -> ArchiveSnapshotEngine {
    ArchiveSnapshotEngine::new(Arc::new(TokioCommandRunner::new()))
}

fn tar_options(verify_md5: bool) -> ArchiveOptions {
    ArchiveOptions {
        tool: ArchiveTool::Tar(tar_path()),
        verify_md5,
    }
}

fn c_path(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap()
}

/// Sets a user xattr; `Err` with the reason when the filesystem refuses user xattrs.
fn set_xattr(path: &Path) -> Result<(), String> {
    let name = CString::new(XATTR_NAME).unwrap();
    // SAFETY: valid C strings and buffer.
    let rc = unsafe {
        libc::lsetxattr(
            c_path(path).as_ptr(),
            name.as_ptr(),
            XATTR_VALUE.as_ptr().cast(),
            XATTR_VALUE.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().to_string())
    }
}

fn get_xattr(path: &Path) -> Option<Vec<u8>> {
    let name = CString::new(XATTR_NAME).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: valid C strings and a buffer of the given length.
    let n = unsafe {
        libc::lgetxattr(
            c_path(path).as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    (n >= 0).then(|| {
        buf.truncate(n as usize);
        buf
    })
}

fn lchown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// A volume tree with what a snapshot must keep; returns whether the xattr could be set.
fn build_tree(root: &Path) -> bool {
    fs::create_dir_all(root.join("shared")).unwrap();
    fs::create_dir_all(root.join("scratch")).unwrap();
    fs::create_dir_all(root.join("empty dir")).unwrap();
    fs::write(root.join("shared/data.bin"), vec![7u8; 100_000]).unwrap();
    fs::write(root.join("shared/secret"), b"owner only").unwrap();
    fs::hard_link(root.join("shared/data.bin"), root.join("hardlink.bin")).unwrap();
    symlink("shared/data.bin", root.join("link")).unwrap();
    symlink("/nonexistent/target", root.join("dangling")).unwrap();
    fs::write(root.join("name with spaces ü"), b"unicode").unwrap();
    let sparse = fs::File::create(root.join("sparse")).unwrap();
    sparse.set_len(64 << 20).unwrap();

    lchown(&root.join("shared"), 1234, 5678);
    lchown(&root.join("shared/data.bin"), 1234, 5678);
    lchown(&root.join("shared/secret"), 4321, 8765);
    lchown(&root.join("link"), 1234, 5678);
    lchown(root, 1000, 1000);
    chmod(&root.join("shared"), 0o2775);
    chmod(&root.join("scratch"), 0o1777);
    chmod(&root.join("shared/secret"), 0o600);
    chmod(&root.join("shared/data.bin"), 0o4755);
    chmod(root, 0o750);

    match set_xattr(&root.join("shared/secret")) {
        Ok(()) => true,
        Err(reason) => {
            println!(
                "not checking xattrs: the temporary filesystem refuses user xattrs ({reason})"
            );
            false
        }
    }
}

/// Checks that `restored` holds what [`build_tree`] made.
fn check_tree(restored: &Path, with_xattr: bool, hard_links: bool) {
    let meta = |p: &str| fs::symlink_metadata(restored.join(p)).unwrap();
    assert_eq!((meta("shared").uid(), meta("shared").gid()), (1234, 5678));
    assert_eq!(meta("shared").mode() & 0o7777, 0o2775);
    assert_eq!(meta("scratch").mode() & 0o7777, 0o1777);
    assert!(meta("empty dir").is_dir());
    assert_eq!(meta("shared/data.bin").mode() & 0o7777, 0o4755);
    assert_eq!(
        (meta("shared/data.bin").uid(), meta("shared/data.bin").gid()),
        (1234, 5678)
    );
    assert_eq!(
        (meta("shared/secret").uid(), meta("shared/secret").gid()),
        (4321, 8765)
    );
    assert_eq!(meta("shared/secret").mode() & 0o7777, 0o600);
    assert_eq!((meta("").uid(), meta("").gid()), (1000, 1000));
    assert_eq!(meta("").mode() & 0o7777, 0o750);
    assert_eq!(
        fs::read(restored.join("shared/data.bin")).unwrap(),
        vec![7u8; 100_000]
    );
    assert_eq!(
        fs::read(restored.join("shared/secret")).unwrap(),
        b"owner only"
    );
    assert_eq!(
        fs::read(restored.join("name with spaces ü")).unwrap(),
        b"unicode"
    );
    assert!(meta("link").file_type().is_symlink());
    assert_eq!(
        fs::read_link(restored.join("link")).unwrap(),
        Path::new("shared/data.bin")
    );
    assert_eq!((meta("link").uid(), meta("link").gid()), (1234, 5678));
    assert_eq!(
        fs::read_link(restored.join("dangling")).unwrap(),
        Path::new("/nonexistent/target")
    );
    if hard_links {
        assert_eq!(meta("hardlink.bin").ino(), meta("shared/data.bin").ino());
    }
    assert_eq!(meta("sparse").len(), 64 << 20);
    assert!(
        meta("sparse").blocks() * 512 < 1 << 20,
        "the sparse file was filled in"
    );
    if with_xattr {
        assert_eq!(
            get_xattr(&restored.join("shared/secret")).as_deref(),
            Some(XATTR_VALUE)
        );
    }
}

#[tokio::test]
async fn a_snapshot_round_trip_keeps_owners_modes_links_sparse_files_and_xattrs() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let (volume, restored) = (dir.path().join("volume"), dir.path().join("restored"));
    let snapshots = dir.path().join("snapshots");
    fs::create_dir_all(&snapshots).unwrap();
    fs::create_dir(&restored).unwrap();
    let with_xattr = build_tree(&volume);
    let archive = snapshots.join("snap-1.tar");

    let engine = engine();
    let info = engine
        .create(&volume, &archive, &tar_options(true))
        .await
        .unwrap();
    assert_eq!(info.size_bytes, fs::metadata(&archive).unwrap().len());
    assert!(!suffixed(&archive, PARTIAL_SUFFIX).exists());

    // The checksum is what md5sum computes, in a file md5sum -c accepts.
    let md5sum = Process::new("md5sum").arg(&archive).output().unwrap();
    let expected = String::from_utf8(md5sum.stdout).unwrap();
    assert_eq!(info.md5.as_deref(), expected.split_whitespace().next());
    let check = Process::new("md5sum")
        .args(["-c", "snap-1.tar.md5"])
        .current_dir(&snapshots)
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");

    // GNU tar lists the archive.
    let list = Process::new(tar_path())
        .arg("-tvf")
        .arg(&archive)
        .output()
        .unwrap();
    assert!(list.status.success());
    let listing = String::from_utf8_lossy(&list.stdout);
    for name in [
        "./shared/data.bin",
        "./link -> shared/data.bin",
        "./name with spaces ü",
    ] {
        assert!(listing.contains(name), "{name} missing from:\n{listing}");
    }
    assert!(
        listing.contains("./hardlink.bin link to ./shared/data.bin"),
        "{listing}"
    );

    engine
        .restore(&archive, &restored, &tar_options(true))
        .await
        .unwrap();
    check_tree(&restored, with_xattr, true);
}

#[tokio::test]
async fn a_corrupted_archive_is_detected_before_anything_is_extracted() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let (volume, restored) = (dir.path().join("volume"), dir.path().join("restored"));
    fs::create_dir(&restored).unwrap();
    build_tree(&volume);
    let archive = dir.path().join("snap.tar");
    let engine = engine();
    engine
        .create(&volume, &archive, &tar_options(true))
        .await
        .unwrap();

    let mut bytes = fs::read(&archive).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    fs::write(&archive, &bytes).unwrap();

    let err = engine
        .restore(&archive, &restored, &tar_options(true))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::FailedPrecondition, "{err}");
    assert!(
        err.to_string().contains(&archive.display().to_string()),
        "{err}"
    );
    assert_eq!(fs::read_dir(&restored).unwrap().count(), 0);

    // A lost checksum file is refused too, when verification is asked for.
    fs::remove_file(suffixed(&archive, MD5_SUFFIX)).unwrap();
    let err = engine
        .restore(&archive, &restored, &tar_options(true))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::FailedPrecondition, "{err}");
    assert_eq!(fs::read_dir(&restored).unwrap().count(), 0);
}

#[tokio::test]
async fn a_hung_archiver_is_deadline_exceeded_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let volume = dir.path().join("volume");
    fs::create_dir(&volume).unwrap();
    let hung = dir.path().join("hung-tar");
    fs::write(&hung, "#!/bin/sh\nexec sleep 30\n").unwrap();
    chmod(&hung, 0o755);
    let archive = dir.path().join("snap.tar");
    let engine = engine().with_archive_timeout(Duration::from_millis(300));
    let options = ArchiveOptions {
        tool: ArchiveTool::Tar(hung.clone()),
        verify_md5: true,
    };
    let started = Instant::now();
    let err = engine
        .create(&volume, &archive, &options)
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::DeadlineExceeded, "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(!archive.exists());
    assert!(!suffixed(&archive, PARTIAL_SUFFIX).exists());
    assert!(!suffixed(&archive, MD5_SUFFIX).exists());
}

#[tokio::test]
async fn a_clone_copies_the_tree_and_removes_its_temporary_archive() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let volumes = dir.path().join("volumes");
    let (source, clone) = (volumes.join("pvc-a"), volumes.join("pvc-b"));
    let with_xattr = build_tree(&source);
    fs::create_dir(&clone).unwrap();
    engine()
        .copy_tree(&source, &clone, &tar_options(false))
        .await
        .unwrap();
    check_tree(&clone, with_xattr, true);
    let mut left: Vec<_> = fs::read_dir(&volumes)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    left.sort();
    assert_eq!(left, vec!["pvc-a", "pvc-b"]);
}

#[tokio::test]
async fn delete_removes_the_archive_its_checksum_and_a_partial_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let volume = dir.path().join("volume");
    fs::create_dir(&volume).unwrap();
    fs::write(volume.join("f"), b"x").unwrap();
    let archive = dir.path().join("snap.tar");
    let engine = engine();
    engine
        .create(&volume, &archive, &tar_options(true))
        .await
        .unwrap();
    fs::write(suffixed(&archive, PARTIAL_SUFFIX), b"left by a crash").unwrap();
    assert!(suffixed(&archive, MD5_SUFFIX).exists());
    engine.delete(&archive).await.unwrap();
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        1,
        "only the volume remains"
    );
    engine.delete(&archive).await.unwrap();
}

#[tokio::test]
async fn a_snapshot_without_verification_writes_no_checksum_and_restores() {
    let dir = tempfile::tempdir().unwrap();
    let (volume, restored) = (dir.path().join("volume"), dir.path().join("restored"));
    fs::create_dir(&volume).unwrap();
    fs::create_dir(&restored).unwrap();
    fs::write(volume.join("f"), b"plain").unwrap();
    let archive = dir.path().join("snap.tar");
    let engine = engine();
    // A checksum left from an earlier archive of the same name must not linger.
    fs::write(suffixed(&archive, MD5_SUFFIX), "stale").unwrap();
    let info = engine
        .create(&volume, &archive, &tar_options(false))
        .await
        .unwrap();
    assert_eq!(info.md5, None);
    assert!(!suffixed(&archive, MD5_SUFFIX).exists());
    engine
        .restore(&archive, &restored, &tar_options(false))
        .await
        .unwrap();
    assert_eq!(fs::read(restored.join("f")).unwrap(), b"plain");
}

#[tokio::test]
async fn tar_failures_report_its_message() {
    let dir = tempfile::tempdir().unwrap();
    let restored = dir.path().join("restored");
    fs::create_dir(&restored).unwrap();
    let archive = dir.path().join("not-a.tar");
    fs::write(&archive, vec![b'x'; 4096]).unwrap();
    let err = engine()
        .restore(&archive, &restored, &tar_options(false))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Internal, "{err}");
    assert!(err.to_string().contains("tar"), "{err}");
}
