//! The Linux mounter against the real kernel. These tests mount, so they need root; each
//! one re-runs itself inside a private mount namespace (`unshare --mount --propagation
//! private`), so even a crash leaves nothing mounted on the host, and works only under its
//! own temporary directory, with guards that unmount on drop.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use csi_core::ErrorCode;
use csi_core::linux::{LinuxMounter, TokioCommandRunner};
use csi_core::ports::Mounter;
use nix::mount::{MntFlags, MsFlags, umount2};
use nix::sys::statvfs::{FsFlags, statvfs};

mod support;
use support::{MountGuard, isolated};

fn mounter() -> LinuxMounter {
    LinuxMounter::new(
        Arc::new(TokioCommandRunner::new()),
        PathBuf::from("mount"),
        Duration::from_secs(10),
    )
}

/// A temporary directory with `src` (holding `file`), `dst` and `plain`.
fn layout() -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst, plain) = (
        dir.path().join("src"),
        dir.path().join("dst"),
        dir.path().join("plain"),
    );
    for d in [&src, &dst, &plain] {
        fs::create_dir(d).unwrap();
    }
    fs::write(src.join("file"), b"data").unwrap();
    (dir, src, dst, plain)
}

/// Mounts a small tmpfs with `nosuid,nodev` at `src` through mount(8) and the runner.
async fn mount_nosuid_nodev_source(m: &LinuxMounter, src: &Path) -> MountGuard {
    m.mount(
        "pfs-test",
        src,
        "tmpfs",
        &["size=1m".into(), "nosuid".into(), "nodev".into()],
    )
    .await
    .unwrap();
    MountGuard(src.to_path_buf())
}

#[tokio::test]
async fn a_bind_mount_is_a_mount_point_and_unmounting_twice_succeeds() {
    if !isolated("a_bind_mount_is_a_mount_point_and_unmounting_twice_succeeds") {
        return;
    }
    let (_dir, src, dst, plain) = layout();
    let m = mounter();
    m.bind_mount(&src, &dst, false).await.unwrap();
    let _guard = MountGuard(dst.clone());
    assert!(m.is_mount_point(&dst).await.unwrap());
    assert!(!m.is_mount_point(&plain).await.unwrap());
    assert!(!m.is_mount_point(&dst.join("file")).await.unwrap());
    assert_eq!(fs::read(dst.join("file")).unwrap(), b"data");
    fs::write(dst.join("new"), b"x").unwrap();
    assert!(src.join("new").exists());

    let entry = m
        .list_mounts()
        .await
        .unwrap()
        .into_iter()
        .rfind(|e| e.mount_point == dst)
        .expect("the bind mount is in the table");
    assert!(!entry.is_read_only());

    m.unmount(&dst).await.unwrap();
    assert!(!m.is_mount_point(&dst).await.unwrap());
    assert!(!dst.join("file").exists());
    m.unmount(&dst).await.unwrap();
    assert!(
        m.list_mounts()
            .await
            .unwrap()
            .iter()
            .all(|e| e.mount_point != dst)
    );
}

#[tokio::test]
async fn a_read_only_bind_refuses_writes_and_keeps_nosuid_and_nodev() {
    if !isolated("a_read_only_bind_refuses_writes_and_keeps_nosuid_and_nodev") {
        return;
    }
    let (_dir, src, dst, _plain) = layout();
    let m = mounter();
    // A source filesystem with nosuid,nodev, mounted through mount(8) and the runner.
    let _src_guard = mount_nosuid_nodev_source(&m, &src).await;
    assert!(m.is_mount_point(&src).await.unwrap());
    fs::write(src.join("file"), b"data").unwrap();

    m.bind_mount(&src, &dst, true).await.unwrap();
    let _guard = MountGuard(dst.clone());
    let err = fs::write(dst.join("new"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    assert_eq!(fs::read(dst.join("file")).unwrap(), b"data");
    fs::write(src.join("still-writable"), b"x").unwrap();

    let flags = statvfs(&dst).unwrap().flags();
    assert!(flags.contains(FsFlags::ST_RDONLY));
    assert!(flags.contains(FsFlags::ST_NOSUID));
    assert!(flags.contains(FsFlags::ST_NODEV));

    let mounts = m.list_mounts().await.unwrap();
    let bind = mounts.iter().rfind(|e| e.mount_point == dst).unwrap();
    assert!(bind.is_read_only());
    assert_eq!(bind.fs_type, "tmpfs");
    let source = mounts.iter().rfind(|e| e.mount_point == src).unwrap();
    assert_eq!(source.source, "pfs-test");
    assert!(!source.is_read_only());

    m.unmount(&dst).await.unwrap();
    m.unmount(&src).await.unwrap();
    assert!(!m.is_mount_point(&src).await.unwrap());
}

#[tokio::test]
async fn a_read_only_bind_under_a_shared_mount_is_read_only_and_nosuid_in_every_copy() {
    if !isolated("a_read_only_bind_under_a_shared_mount_is_read_only_and_nosuid_in_every_copy") {
        return;
    }
    // `pods` is shared with `peer` (as the node plugin's pods directory is with the host's
    // through Bidirectional propagation): a bind under one is copied under the other.
    let (dir, src, _dst, _plain) = layout();
    let (pods, peer) = (dir.path().join("pods"), dir.path().join("peer"));
    fs::create_dir(&pods).unwrap();
    fs::create_dir(&peer).unwrap();
    let m = mounter();
    m.mount("pods", &pods, "tmpfs", &["size=1m".into()])
        .await
        .unwrap();
    let _pods_guard = MountGuard(pods.clone());
    let shared = MsFlags::MS_SHARED;
    nix::mount::mount(None::<&str>, &pods, None::<&str>, shared, None::<&str>).unwrap();
    m.bind_mount(&pods, &peer, false).await.unwrap();
    let _peer_guard = MountGuard(peer.clone());
    fs::create_dir(pods.join("volume")).unwrap();
    let _src_guard = mount_nosuid_nodev_source(&m, &src).await;
    fs::write(src.join("file"), b"data").unwrap();

    m.bind_mount(&src, &pods.join("volume"), true)
        .await
        .unwrap();
    let _guard = MountGuard(pods.join("volume"));
    for target in [pods.join("volume"), peer.join("volume")] {
        assert!(m.is_mount_point(&target).await.unwrap(), "{target:?}");
        assert_eq!(fs::read(target.join("file")).unwrap(), b"data");
        let err = fs::write(target.join("new"), b"x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{target:?}: {err}");
        let flags = statvfs(&target).unwrap().flags();
        for flag in [FsFlags::ST_RDONLY, FsFlags::ST_NOSUID, FsFlags::ST_NODEV] {
            assert!(flags.contains(flag), "{target:?}: {flag:?} missing");
        }
    }
    m.unmount(&pods.join("volume")).await.unwrap();
    assert!(!m.is_mount_point(&peer.join("volume")).await.unwrap());
}

#[tokio::test]
async fn a_symbolic_link_target_is_refused_and_nothing_is_mounted_where_it_points() {
    if !isolated("a_symbolic_link_target_is_refused_and_nothing_is_mounted_where_it_points") {
        return;
    }
    let (dir, src, _dst, plain) = layout();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&plain, &link).unwrap();
    let m = mounter();
    let err = m.bind_mount(&src, &link, false).await.unwrap_err();
    let _guard = MountGuard(plain.clone());
    assert_eq!(err.code(), ErrorCode::FailedPrecondition, "{err}");
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert!(!m.is_mount_point(&plain).await.unwrap());
    assert!(!plain.join("file").exists());
    // Unmounting through the link never follows it either.
    m.unmount(&link).await.unwrap();
}

#[tokio::test]
async fn a_source_that_is_a_link_or_a_file_is_refused_and_nothing_is_mounted() {
    if !isolated("a_source_that_is_a_link_or_a_file_is_refused_and_nothing_is_mounted") {
        return;
    }
    let (dir, src, dst, plain) = layout();
    fs::write(plain.join("outside"), b"x").unwrap();
    let link = dir.path().join("source-link");
    std::os::unix::fs::symlink(&plain, &link).unwrap();
    let file = src.join("file");
    let m = mounter();
    let err = m.bind_mount(&link, &dst, false).await.unwrap_err();
    let _guard = MountGuard(dst.clone());
    assert_eq!(err.code(), ErrorCode::FailedPrecondition, "{err}");
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert!(!m.is_mount_point(&dst).await.unwrap());
    assert!(!dst.join("outside").exists());
    let err = m.bind_mount(&file, &dst, false).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::FailedPrecondition, "{err}");
    assert!(err.to_string().contains("not a directory"), "{err}");
    assert!(!m.is_mount_point(&dst).await.unwrap());
}

#[tokio::test]
async fn missing_paths_are_not_found() {
    if !isolated("missing_paths_are_not_found") {
        return;
    }
    let (dir, src, dst, _plain) = layout();
    let m = mounter();
    let missing = dir.path().join("missing");
    let err = m.bind_mount(&missing, &dst, false).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotFound, "{err}");
    let err = m.bind_mount(&src, &missing, true).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotFound, "{err}");
    assert!(!m.is_mount_point(&dst).await.unwrap());
    let err = m.is_mount_point(&missing).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotFound);
}

#[tokio::test]
async fn a_bind_below_a_mount_needs_the_mount_and_never_leaves_it() {
    if !isolated("a_bind_below_a_mount_needs_the_mount_and_never_leaves_it") {
        return;
    }
    let (dir, src, dst, plain) = layout();
    let m = mounter();
    let code = |r: csi_core::Result<()>| r.unwrap_err().code();
    // Nothing mounted at src (or no src at all): refused, nothing mounted at dst.
    let err = m
        .bind_mount_below(&src, &src, &dst, false)
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::FailedPrecondition, "{err}");
    assert!(err.to_string().contains("not staged"), "{err}");
    let missing = dir.path().join("missing");
    assert_eq!(
        code(m.bind_mount_below(&missing, &missing, &dst, false).await),
        ErrorCode::FailedPrecondition
    );
    assert!(!m.is_mount_point(&dst).await.unwrap());

    let _src_guard = mount_nosuid_nodev_source(&m, &src).await;
    fs::create_dir_all(src.join("vols/v1")).unwrap();
    fs::write(src.join("vols/v1/data"), b"v1").unwrap();
    // A source outside the mount is the caller's mistake.
    assert_eq!(
        code(m.bind_mount_below(&src, &plain, &dst, false).await),
        ErrorCode::Internal
    );
    // Links that lead out of the mount, in the middle or at the end, are refused.
    std::os::unix::fs::symlink(&plain, src.join("out")).unwrap();
    std::os::unix::fs::symlink("../..", src.join("vols/up")).unwrap();
    fs::create_dir(plain.join("x")).unwrap();
    for source in [
        src.join("out"),
        src.join("out/x"),
        src.join("vols/up/plain"),
    ] {
        assert_eq!(
            code(m.bind_mount_below(&src, &source, &dst, false).await),
            ErrorCode::FailedPrecondition,
            "{}",
            source.display()
        );
    }
    // And a link that stays inside the mount: a user who can write a middle directory
    // must not be able to point a volume's path at another volume.
    fs::create_dir_all(src.join("vols/v2/sub")).unwrap();
    std::os::unix::fs::symlink("v2", src.join("vols/alias")).unwrap();
    assert_eq!(
        code(
            m.bind_mount_below(&src, &src.join("vols/alias/sub"), &dst, false)
                .await
        ),
        ErrorCode::FailedPrecondition
    );
    // So is a directory of another filesystem mounted inside it.
    fs::create_dir(src.join("inner")).unwrap();
    let _inner_guard = mount_nosuid_nodev_source(&m, &src.join("inner")).await;
    assert_eq!(
        code(
            m.bind_mount_below(&src, &src.join("inner"), &dst, false)
                .await
        ),
        ErrorCode::FailedPrecondition
    );
    assert!(!m.is_mount_point(&dst).await.unwrap());

    // The volume's directory below the mount, read-only.
    m.bind_mount_below(&src, &src.join("vols/v1"), &dst, true)
        .await
        .unwrap();
    let _guard = MountGuard(dst.clone());
    assert_eq!(fs::read(dst.join("data")).unwrap(), b"v1");
    assert!(fs::write(dst.join("new"), b"x").is_err());
    assert!(m.unmount_all(&dst).await.unwrap());
    assert!(!m.is_mount_point(&dst).await.unwrap());
}

#[tokio::test]
async fn stacked_bind_mounts_unwind_one_by_one() {
    if !isolated("stacked_bind_mounts_unwind_one_by_one") {
        return;
    }
    let (_dir, src, dst, _plain) = layout();
    let m = mounter();
    m.bind_mount(&src, &dst, false).await.unwrap();
    let _guard = MountGuard(dst.clone());
    m.bind_mount(&src, &dst, true).await.unwrap();
    assert!(fs::write(dst.join("x"), b"x").is_err());
    m.unmount(&dst).await.unwrap();
    assert!(m.is_mount_point(&dst).await.unwrap());
    fs::write(dst.join("x"), b"x").unwrap();
    m.unmount(&dst).await.unwrap();
    assert!(!m.is_mount_point(&dst).await.unwrap());
}

#[tokio::test]
async fn the_table_is_read_whole_while_mounts_come_and_go() {
    if !isolated("the_table_is_read_whole_while_mounts_come_and_go") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    // Enough mounts that the table spans many pages (the kernel hands out a page per read).
    let mut guards = Vec::new();
    for i in 0..300 {
        let t = dir.path().join(format!("stable {i}"));
        fs::create_dir(&t).unwrap();
        nix::mount::mount(
            Some(&src),
            &t,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .unwrap();
        guards.push(MountGuard(t));
    }
    let churn_dir = dir.path().join("churn");
    fs::create_dir(&churn_dir).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let churn = {
        let (stop, src, churn_dir) = (stop.clone(), src.clone(), churn_dir.clone());
        std::thread::spawn(move || {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let _ = nix::mount::mount(
                    Some(&src),
                    &churn_dir,
                    None::<&str>,
                    nix::mount::MsFlags::MS_BIND,
                    None::<&str>,
                );
                let _ = umount2(&churn_dir, MntFlags::MNT_DETACH);
                n += 1;
            }
            n
        })
    };
    let m = mounter();
    for _ in 0..50 {
        let mounts = m.list_mounts().await.unwrap();
        let stable = mounts
            .iter()
            .filter(|e| e.mount_point.starts_with(dir.path()) && e.mount_point != churn_dir)
            .count();
        assert_eq!(stable, 300, "a stable mount went missing or doubled");
        assert!(mounts.iter().any(|e| e.mount_point == Path::new("/")));
    }
    stop.store(true, Ordering::Relaxed);
    assert!(churn.join().unwrap() > 0);
    drop(guards);
}
