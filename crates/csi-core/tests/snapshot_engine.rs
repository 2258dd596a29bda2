//! The archive snapshot engine (native writer, GNU tar for extraction), in temporary
//! directories. Setting owners needs root: these tests fail (they do not skip) without it.

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::sync::Arc;
use std::time::{Duration, Instant};

use csi_core::ErrorCode;
use csi_core::linux::TokioCommandRunner;
use csi_core::ports::{ArchiveOptions, ArchiveTool, ChecksumKind, SnapshotEngine};
use csi_core::snapshot_engine::checksum::{hash_file, parse_sum_line};
use csi_core::snapshot_engine::{
    ArchiveSnapshotEngine, B3_SUFFIX, MD5_SUFFIX, PARTIAL_SUFFIX, XXH128_SUFFIX, sidecar_suffix,
    suffixed,
};

const XATTR_NAME: &str = "user.pfs-test";
const XATTR_VALUE: &[u8] = b"kept \x00 across snapshots";

mod support;
use support::{MountGuard, isolated};

fn require_root() {
    support::require_root("the snapshot tests set file owners and");
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

fn tar_options(verify: bool) -> ArchiveOptions {
    ArchiveOptions {
        tool: ArchiveTool::Tar(tar_path()),
        verify,
        checksum: ChecksumKind::default(),
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

fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
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
    // Sparse files are stored in full: the size and the zeros survive, not the holes.
    assert_eq!(meta("sparse").len(), 64 << 20);
    assert!(
        fs::read(restored.join("sparse"))
            .unwrap()
            .iter()
            .all(|b| *b == 0)
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
    // The archive holds the volume's data: only its owner may read it, and its checksum.
    assert_eq!(mode_of(&archive), 0o600);
    assert_eq!(mode_of(&suffixed(&archive, XXH128_SUFFIX)), 0o600);

    // The checksum, computed while writing, is the XXH3-128 of the archive's bytes, in an
    // `xxh128sum -c` line naming the archive, which xxhsum itself accepts.
    let sum = info.checksum.clone().unwrap();
    assert_eq!(sum, hash_file(ChecksumKind::Xxh128, &archive).unwrap());
    let line = fs::read_to_string(suffixed(&archive, XXH128_SUFFIX)).unwrap();
    assert_eq!(line, format!("{}  snap-1.tar\n", sum.hex));
    assert_eq!(
        parse_sum_line(ChecksumKind::Xxh128, &line).as_deref(),
        Some(sum.hex.as_str())
    );
    let check = Process::new("xxh128sum")
        .args(["-c", "snap-1.tar.xxh128"])
        .current_dir(&snapshots)
        .output()
        .expect("xxh128sum (package xxhash; scripts/install-test-deps.sh installs it)");
    assert!(check.status.success(), "{check:?}");
    assert!(!suffixed(&archive, B3_SUFFIX).exists());
    assert!(!suffixed(&archive, MD5_SUFFIX).exists());

    // GNU tar lists the archive.
    let list = Process::new(tar_path())
        .arg("-tvf")
        .arg(&archive)
        .output()
        .unwrap();
    assert!(list.status.success());
    let listing = String::from_utf8_lossy(&list.stdout);
    for name in [
        " ./\n",
        " link -> shared/data.bin\n",
        " name with spaces ü\n",
    ] {
        assert!(listing.contains(name), "{name} missing from:\n{listing}");
    }
    assert!(
        // The first name of the inode in walk (name) order holds the data.
        listing.contains(" shared/data.bin link to hardlink.bin\n"),
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
    fs::remove_file(suffixed(&archive, XXH128_SUFFIX)).unwrap();
    let err = engine
        .restore(&archive, &restored, &tar_options(true))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::FailedPrecondition, "{err}");
    assert_eq!(fs::read_dir(&restored).unwrap().count(), 0);
}

#[tokio::test]
async fn a_hung_dtar_is_deadline_exceeded_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let volume = dir.path().join("volume");
    fs::create_dir(&volume).unwrap();
    let hung = dir.path().join("hung-dtar");
    fs::write(&hung, "#!/bin/sh\nexec sleep 30\n").unwrap();
    chmod(&hung, 0o755);
    let archive = dir.path().join("snap.tar");
    let engine = engine().with_archive_timeout(Duration::from_millis(300));
    let options = ArchiveOptions {
        tool: ArchiveTool::Dtar(hung.clone()),
        verify: true,
        checksum: ChecksumKind::Blake3,
    };
    let started = Instant::now();
    let err = engine
        .create(&volume, &archive, &options)
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::DeadlineExceeded, "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        2,
        "volume and script only"
    );
}

#[tokio::test]
async fn the_native_writer_stops_at_the_archive_timeout_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let volume = dir.path().join("volume");
    for i in 0..200 {
        let sub = volume.join(format!("d{}", i % 10));
        fs::create_dir_all(&sub).unwrap();
        fs::write(sub.join(format!("f{i}")), vec![1u8; 3000]).unwrap();
    }
    fs::write(volume.join("large"), vec![2u8; 3 << 20]).unwrap();
    let archive = dir.path().join("snap.tar");
    let engine = engine().with_archive_timeout(Duration::ZERO);
    let err = engine
        .create(&volume, &archive, &tar_options(true))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::DeadlineExceeded, "{err}");
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        1,
        "the volume only"
    );
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
    fs::write(
        suffixed(&archive, MD5_SUFFIX),
        b"left by an earlier version",
    )
    .unwrap();
    assert!(suffixed(&archive, XXH128_SUFFIX).exists());
    engine.delete(&archive).await.unwrap();
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        1,
        "only the volume remains"
    );
    engine.delete(&archive).await.unwrap();
}

#[tokio::test]
async fn without_the_native_writer_gnu_tar_writes_the_archive_and_it_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let (volume, restored) = (dir.path().join("volume"), dir.path().join("restored"));
    fs::create_dir_all(volume.join("sub")).unwrap();
    fs::create_dir(&restored).unwrap();
    fs::write(volume.join("sub").join("f"), b"by gnu tar").unwrap();
    std::os::unix::fs::symlink("sub/f", volume.join("link")).unwrap();
    let archive = dir.path().join("snap.tar");
    let engine = engine().with_native_writer(false);
    let info = engine
        .create(&volume, &archive, &tar_options(true))
        .await
        .unwrap();
    let checksum = info.checksum.expect("verification on");
    assert_eq!(checksum.kind, ChecksumKind::Xxh128);
    assert!(suffixed(&archive, XXH128_SUFFIX).exists());
    assert_eq!(mode_of(&archive), 0o600, "GNU tar's archive too");
    assert_eq!(mode_of(&suffixed(&archive, XXH128_SUFFIX)), 0o600);
    // GNU tar names entries `./sub/f`; the native writer would write `sub/f`.
    let listing = std::process::Command::new(tar_path())
        .arg("-tf")
        .arg(&archive)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(listing.lines().any(|l| l == "./sub/f"), "{listing}");
    engine
        .restore(&archive, &restored, &tar_options(true))
        .await
        .unwrap();
    assert_eq!(
        fs::read(restored.join("sub").join("f")).unwrap(),
        b"by gnu tar"
    );
    assert_eq!(
        fs::read_link(restored.join("link")).unwrap(),
        Path::new("sub/f")
    );
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
    for kind in ChecksumKind::ALL {
        fs::write(suffixed(&archive, sidecar_suffix(kind)), "stale").unwrap();
    }
    let info = engine
        .create(&volume, &archive, &tar_options(false))
        .await
        .unwrap();
    assert_eq!(info.checksum, None);
    for kind in ChecksumKind::ALL {
        assert!(
            !suffixed(&archive, sidecar_suffix(kind)).exists(),
            "{kind:?}"
        );
    }
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

/// Sets `path`'s mtime (not following a symlink).
fn set_mtime(path: &Path, secs: i64) {
    use nix::sys::stat::{UtimensatFlags, utimensat};
    use nix::sys::time::TimeSpec;
    let t = TimeSpec::new(secs, 0);
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &t,
        &t,
        UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}

/// A POSIX ACL in the kernel's xattr form: owner rw, user `uid` with `perm`, group r,
/// mask `perm`, others nothing.
fn acl(uid: u32, perm: u16) -> Vec<u8> {
    const UNDEFINED: u32 = u32::MAX;
    let mut out = 2u32.to_le_bytes().to_vec();
    for (tag, p, id) in [
        (0x01u16, 6u16, UNDEFINED),
        (0x02, perm, uid),
        (0x04, 4, UNDEFINED),
        (0x10, perm, UNDEFINED),
        (0x20, 0, UNDEFINED),
    ] {
        out.extend(tag.to_le_bytes());
        out.extend(p.to_le_bytes());
        out.extend(id.to_le_bytes());
    }
    out
}

fn set_raw_xattr(path: &Path, name: &str, value: &[u8]) {
    let name = CString::new(name).unwrap();
    // SAFETY: valid C strings and buffer.
    let rc = unsafe {
        libc::lsetxattr(
            c_path(path).as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
}

/// A tree with every kind of entry the writer handles; returns whether user xattrs stuck.
fn build_wide_tree(root: &Path) -> bool {
    fs::create_dir_all(root).unwrap();
    fs::create_dir(root.join("empty dir")).unwrap();
    fs::write(root.join("empty file"), b"").unwrap();
    let sizes = [1usize, 511, 512, 513, 4096, 100_000, (1 << 20) - 1, 1 << 20];
    for (i, size) in sizes.iter().enumerate() {
        let data: Vec<u8> = (0..*size).map(|j| (j * 31 + i) as u8).collect();
        fs::write(root.join(format!("f{size}")), data).unwrap();
    }
    // Larger than the small-file limit: streamed by the writer, not a whole-block size.
    let big: Vec<u8> = (0..(3 << 20) + 77).map(|j: usize| (j / 7) as u8).collect();
    fs::write(root.join("big"), &big).unwrap();
    fs::hard_link(root.join("big"), root.join("big-link")).unwrap();
    fs::hard_link(root.join("f4096"), root.join("empty dir/../f4096-link")).unwrap();
    let long_name = "n".repeat(150);
    fs::write(root.join(&long_name), b"long name").unwrap();
    let mut deep = root.to_path_buf();
    for i in 0..12 {
        deep.push(format!("level-{i:02}-{}", "d".repeat(20)));
    }
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join("leaf"), b"deep").unwrap();
    symlink(deep.join("leaf"), root.join("long-target-link")).unwrap();
    let latin1 = OsStr::from_bytes(b"caf\xe9");
    fs::write(root.join(latin1), b"not utf-8").unwrap();
    symlink(latin1, root.join("to-latin1")).unwrap();
    nix::unistd::mkfifo(
        &root.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .unwrap();
    lchown(&root.join("f512"), 2001, 3001);
    lchown(&root.join("to-latin1"), 2002, 3002);
    lchown(&root.join("fifo"), 2003, 3003);
    chmod(&root.join("f513"), 0o741);
    chmod(&root.join("empty dir"), 0o2710);
    let xattrs = set_xattr(&root.join("f1")).is_ok()
        && set_xattr(&root.join("empty dir")).is_ok()
        && set_xattr(&deep).is_ok();
    // POSIX ACLs are the system.posix_acl_* attributes: an access ACL granting uid 1234
    // read on a file, and a default ACL on a directory.
    set_raw_xattr(
        &root.join("f100000"),
        "system.posix_acl_access",
        &acl(1234, 4),
    );
    set_raw_xattr(
        &root.join("empty dir"),
        "system.posix_acl_default",
        &acl(4321, 6),
    );
    // Distinct mtimes, the directories' last (writing into them changes theirs).
    let mut all = Vec::new();
    collect(root, Path::new(""), &mut all);
    for (i, (rel, _)) in all.iter().enumerate().rev() {
        set_mtime(&root.join(rel), 1_500_000_000 + i as i64 * 1000);
    }
    xattrs
}

/// Every path below `dir` (relative, `""` for `dir`) with its metadata, parents first.
fn collect(base: &Path, rel: &Path, out: &mut Vec<(PathBuf, fs::Metadata)>) {
    let path = base.join(rel);
    let meta = fs::symlink_metadata(&path).unwrap();
    let is_dir = meta.is_dir();
    out.push((rel.to_path_buf(), meta));
    if is_dir {
        let mut names: Vec<_> = fs::read_dir(&path)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for name in names {
            collect(base, &rel.join(name), out);
        }
    }
}

fn xattrs_of(path: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut names = vec![0u8; 4096];
    // SAFETY: valid C string and a buffer of the given length.
    let n = unsafe { libc::llistxattr(c_path(path).as_ptr(), names.as_mut_ptr().cast(), 4096) };
    assert!(n >= 0, "{}", std::io::Error::last_os_error());
    names.truncate(n as usize);
    let mut out = BTreeMap::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let c_name = CString::new(name).unwrap();
        let mut value = vec![0u8; 4096];
        // SAFETY: valid C strings and a buffer of the given length.
        let len = unsafe {
            libc::lgetxattr(
                c_path(path).as_ptr(),
                c_name.as_ptr(),
                value.as_mut_ptr().cast(),
                4096,
            )
        };
        assert!(len >= 0);
        value.truncate(len as usize);
        out.insert(name.to_vec(), value);
    }
    out
}

/// Checks that `copy` holds what `original` holds: the same paths, types, contents, modes,
/// owners, mtimes (not of symlinks), xattrs, symlink targets and hard-link groups.
fn assert_same_tree(original: &Path, copy: &Path) {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    collect(original, Path::new(""), &mut a);
    collect(copy, Path::new(""), &mut b);
    let names =
        |v: &Vec<(PathBuf, fs::Metadata)>| v.iter().map(|e| e.0.clone()).collect::<Vec<_>>();
    assert_eq!(names(&a), names(&b));
    let mut groups: BTreeMap<u64, u64> = BTreeMap::new();
    for ((rel, m), (_, n)) in a.iter().zip(&b) {
        let what = rel.display();
        assert_eq!(m.file_type(), n.file_type(), "{what}");
        assert_eq!(m.mode(), n.mode(), "{what}");
        assert_eq!((m.uid(), m.gid()), (n.uid(), n.gid()), "{what}");
        if !m.file_type().is_symlink() {
            assert_eq!(m.mtime(), n.mtime(), "{what}");
        }
        let (p, q) = (original.join(rel), copy.join(rel));
        assert_eq!(xattrs_of(&p), xattrs_of(&q), "{what}");
        if m.is_file() {
            assert_eq!(fs::read(&p).unwrap(), fs::read(&q).unwrap(), "{what}");
            if m.nlink() > 1 {
                let inode = groups.entry(m.ino()).or_insert(n.ino());
                assert_eq!(*inode, n.ino(), "{what} is not linked to its other names");
            }
        }
        if m.file_type().is_symlink() {
            assert_eq!(
                fs::read_link(&p).unwrap(),
                fs::read_link(&q).unwrap(),
                "{what}"
            );
        }
        assert_eq!(m.file_type().is_fifo(), n.file_type().is_fifo(), "{what}");
    }
    assert_eq!(groups.len(), 2, "both hard-link groups were seen");
}

/// Extracts `archive` with GNU tar as a restore does.
fn gnu_extract(archive: &Path, dest: &Path) {
    let out = Process::new(tar_path())
        .arg("-xpf")
        .arg(archive)
        .args([
            "--same-owner",
            "--numeric-owner",
            "--xattrs",
            "--xattrs-include=*",
            "-C",
        ])
        .arg(dest)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn another_filesystem_mounted_in_the_volume_is_left_out() {
    if !isolated("another_filesystem_mounted_in_the_volume_is_left_out") {
        return;
    }
    use nix::mount::{MsFlags, mount};
    let dir = tempfile::tempdir().unwrap();
    let (volume, extracted) = (dir.path().join("volume"), dir.path().join("extracted"));
    fs::create_dir_all(&volume).unwrap();
    fs::create_dir_all(&extracted).unwrap();
    let tmpfs = |at: &Path, flags: MsFlags| {
        mount(Some("tmpfs"), at, Some("tmpfs"), flags, None::<&str>).unwrap();
        MountGuard(at.to_path_buf())
    };
    // The volume on a nodev mount (where the writer opens files directly), and another
    // filesystem mounted inside it.
    let _volume_mount = tmpfs(&volume, MsFlags::MS_NODEV);
    fs::write(volume.join("kept"), "the volume's").unwrap();
    fs::create_dir(volume.join("mnt")).unwrap();
    let _inner_mount = tmpfs(&volume.join("mnt"), MsFlags::empty());
    fs::write(volume.join("mnt").join("other"), "another filesystem's").unwrap();
    let archive = dir.path().join("snap.tar");
    engine()
        .create(&volume, &archive, &tar_options(true))
        .await
        .unwrap();
    gnu_extract(&archive, &extracted);
    assert_eq!(
        fs::read_to_string(extracted.join("kept")).unwrap(),
        "the volume's"
    );
    assert!(
        !extracted.join("mnt").exists(),
        "nothing of the inner mount is archived"
    );
}

#[tokio::test]
async fn gnu_tar_extracts_every_kind_of_entry_of_a_native_archive_unchanged() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let (volume, extracted) = (dir.path().join("volume"), dir.path().join("extracted"));
    let with_xattrs = build_wide_tree(&volume);
    assert!(with_xattrs, "the test filesystem refuses user xattrs");
    fs::create_dir(&extracted).unwrap();
    let archive = dir.path().join("wide.tar");
    let info = engine()
        .create(&volume, &archive, &tar_options(true))
        .await
        .unwrap();
    assert_eq!(info.size_bytes % 10240, 0, "whole GNU tar records");
    gnu_extract(&archive, &extracted);
    assert_same_tree(&volume, &extracted);
    // Archiving the same tree again gives the same bytes (walk order, not thread timing).
    let again = dir.path().join("again.tar");
    let second = engine()
        .create(&volume, &again, &tar_options(true))
        .await
        .unwrap();
    assert_eq!(second.checksum, info.checksum);
}

#[tokio::test]
async fn md5_is_kept_on_request_and_legacy_md5_files_still_verify() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let (volume, restored) = (dir.path().join("volume"), dir.path().join("restored"));
    fs::create_dir(&restored).unwrap();
    build_wide_tree(&volume);
    let archive = dir.path().join("snap.tar");
    let options = ArchiveOptions {
        checksum: ChecksumKind::Md5,
        ..tar_options(true)
    };
    // Checksum files of an earlier archive of this name would be preferred: they must go.
    fs::write(suffixed(&archive, XXH128_SUFFIX), "stale").unwrap();
    fs::write(suffixed(&archive, B3_SUFFIX), "stale").unwrap();
    let info = engine().create(&volume, &archive, &options).await.unwrap();
    let sum = info.checksum.unwrap();
    assert_eq!(sum.kind, ChecksumKind::Md5);
    assert!(!suffixed(&archive, XXH128_SUFFIX).exists());
    assert!(!suffixed(&archive, B3_SUFFIX).exists());
    let check = Process::new("md5sum")
        .args(["-c", "snap.tar.md5"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
    engine()
        .restore(&archive, &restored, &tar_options(true))
        .await
        .unwrap();
    assert_same_tree(&volume, &restored);
    // A flipped byte fails the MD5 check too, before extraction.
    let mut bytes = fs::read(&archive).unwrap();
    bytes[700] ^= 0x80;
    fs::write(&archive, &bytes).unwrap();
    let empty = dir.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let err = engine()
        .restore(&archive, &empty, &tar_options(true))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::FailedPrecondition, "{err}");
    assert_eq!(fs::read_dir(&empty).unwrap().count(), 0);
}

#[tokio::test]
async fn a_clone_of_a_wide_tree_is_identical() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let (source, clone) = (dir.path().join("pvc-a"), dir.path().join("pvc-b"));
    build_wide_tree(&source);
    fs::create_dir(&clone).unwrap();
    engine()
        .copy_tree(&source, &clone, &tar_options(false))
        .await
        .unwrap();
    assert_same_tree(&source, &clone);
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
}
