//! `dtar` through the built executable, and GNU tar reading its archives.

mod common;

use common::{Sim, run_with_timeout};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

fn set_xattr(path: &Path, name: &str, value: &[u8]) -> bool {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        ) == 0
    }
}

fn get_xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let len =
        unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (len >= 0).then(|| {
        buf.truncate(len as usize);
        buf
    })
}

fn make_tree(base: &Path) -> bool {
    let vol = base.join("vol");
    std::fs::create_dir_all(vol.join("sub")).unwrap();
    std::fs::write(vol.join("sub/data"), b"payload").unwrap();
    std::fs::set_permissions(vol.join("sub/data"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(vol.join("sub/data"), Some(1234), Some(5678)).unwrap();
    std::fs::set_permissions(vol.join("sub"), std::fs::Permissions::from_mode(0o2750)).unwrap();
    std::fs::hard_link(vol.join("sub/data"), vol.join("hard")).unwrap();
    std::os::unix::fs::symlink("sub/data", vol.join("soft")).unwrap();
    set_xattr(&vol.join("sub/data"), "user.snapshot", b"kept")
}

#[test]
fn archives_round_trip_and_gnu_tar_reads_them() {
    common::require_root();
    let sim = Sim::new();
    let src = sim.scratch("src");
    let xattrs = make_tree(&src);
    if !xattrs {
        eprintln!(
            "NOTE: the temporary directory's filesystem refuses user xattrs; xattr checks skipped"
        );
    }
    let archive = sim.scratch("archives").join("snap.tar");

    sim.tool(
        "dtar",
        &[
            "-c",
            "-f",
            archive.to_str().unwrap(),
            "-C",
            src.to_str().unwrap(),
            "--preserve-xattrs",
            "vol",
        ],
    )
    .ok();

    let mut list = Command::new("tar");
    list.args(["-tvf", archive.to_str().unwrap()]);
    let listed = run_with_timeout(list, common::TIMEOUT).ok();
    let lines: Vec<&str> = listed.stdout.lines().collect();
    let line_of = |name: &str| {
        lines
            .iter()
            .find(|l| l.ends_with(name) || l.contains(&format!("{name} ")))
            .copied()
    };
    assert!(
        line_of("vol/sub").is_some_and(|l| l.starts_with("drwxr-s---")),
        "{}",
        listed.stdout
    );
    assert!(
        line_of("vol/soft -> sub/data").is_some(),
        "{}",
        listed.stdout
    );
    assert!(
        lines
            .last()
            .is_some_and(|l| l.ends_with(" snap.tar.dtaridx")),
        "{}",
        listed.stdout
    );
    assert!(
        listed.stdout.contains("vol/hard link to vol/sub/data")
            || listed.stdout.contains("vol/sub/data link to vol/hard"),
        "{}",
        listed.stdout
    );

    let gnu_out = sim.scratch("gnu");
    let mut extract = Command::new("tar");
    extract.args([
        "--xattrs",
        "--xattrs-include=user.*",
        "--same-owner",
        "-xpf",
        archive.to_str().unwrap(),
        "-C",
        gnu_out.to_str().unwrap(),
    ]);
    run_with_timeout(extract, common::TIMEOUT).ok();
    let data = std::fs::metadata(gnu_out.join("vol/sub/data")).unwrap();
    assert_eq!(
        (data.uid(), data.gid(), data.mode() & 0o7777),
        (1234, 5678, 0o640)
    );
    if xattrs {
        assert_eq!(
            get_xattr(&gnu_out.join("vol/sub/data"), "user.snapshot").as_deref(),
            Some(&b"kept"[..])
        );
    }

    let dtar_out = sim.scratch("dtar");
    sim.tool(
        "dtar",
        &[
            "-x",
            "-f",
            archive.to_str().unwrap(),
            "-C",
            dtar_out.to_str().unwrap(),
            "--preserve-owner",
            "--preserve-perms",
            "--preserve-times",
            "--preserve-xattrs",
        ],
    )
    .ok();
    let out = dtar_out.join("vol");
    let data = std::fs::metadata(out.join("sub/data")).unwrap();
    assert_eq!(
        (data.uid(), data.gid(), data.mode() & 0o7777),
        (1234, 5678, 0o640)
    );
    assert_eq!(
        std::fs::metadata(out.join("sub")).unwrap().mode() & 0o7777,
        0o2750
    );
    assert_eq!(
        std::fs::metadata(out.join("hard")).unwrap().ino(),
        data.ino()
    );
    assert_eq!(
        std::fs::read_link(out.join("soft")).unwrap(),
        Path::new("sub/data")
    );
    assert_eq!(std::fs::read(out.join("soft")).unwrap(), b"payload");
    assert!(!dtar_out.join("snap.tar.dtaridx").exists());
    if xattrs {
        assert_eq!(
            get_xattr(&out.join("sub/data"), "user.snapshot").as_deref(),
            Some(&b"kept"[..])
        );
    }
    assert_eq!(
        std::fs::metadata(src.join("vol/sub")).unwrap().mtime(),
        std::fs::metadata(out.join("sub")).unwrap().mtime()
    );
}

#[test]
fn extraction_without_preserve_flags_keeps_the_extractor_as_owner() {
    common::require_root();
    let sim = Sim::new();
    let src = sim.scratch("src");
    make_tree(&src);
    let archive = src.join("a.tar");
    sim.tool(
        "dtar",
        &["-cf", "a.tar", "-C", src.to_str().unwrap(), "vol"],
    )
    .ok();
    assert!(archive.exists());
    let out = sim.scratch("out");
    sim.tool(
        "dtar",
        &[
            "-xf",
            archive.to_str().unwrap(),
            "-C",
            out.to_str().unwrap(),
        ],
    )
    .ok();
    let data = std::fs::metadata(out.join("vol/sub/data")).unwrap();
    assert_eq!((data.uid(), data.gid()), (0, 0));
    assert_eq!(get_xattr(&out.join("vol/sub/data"), "user.snapshot"), None);
}

#[test]
fn sources_outside_the_working_directory_are_refused() {
    let sim = Sim::new();
    let dir = sim.scratch("w");
    for source in ["/etc", "../x"] {
        let out = sim.tool(
            "dtar",
            &["-cf", "x.tar", "-C", dir.to_str().unwrap(), source],
        );
        assert_eq!(out.code, Some(1), "{source}: {out:#?}");
    }
    let missing = sim.tool(
        "dtar",
        &["-xf", "/nonexistent.tar", "-C", dir.to_str().unwrap()],
    );
    assert_eq!(missing.code, Some(1));
    assert!(missing.stderr.contains("No such file or directory"));
}
