//! Real project ids: a simulated Lustre filesystem on an XFS loop device, where `lfs project`
//! uses `FS_IOC_FSSETXATTR` and the kernel gives new files the inherited project.
//!
//! Skipped, with the reason printed, only when the XFS tools (`mkfs.xfs`) are not installed.

mod common;

use common::{MountGuard, Sim, private_mount_namespace, run_with_timeout};
use std::process::Command;

fn find_tool(name: &str) -> Option<std::path::PathBuf> {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .map(|d| std::path::Path::new(d).join(name))
        .find(|p| p.exists())
}

#[test]
fn project_ids_are_set_in_the_inodes_on_xfs() {
    let Some(mkfs) = find_tool("mkfs.xfs") else {
        eprintln!(
            "SKIPPED project_ids_are_set_in_the_inodes_on_xfs: mkfs.xfs not found (install xfsprogs)"
        );
        return;
    };
    let system_mount = find_tool("mount").expect("the system mount(8)");
    private_mount_namespace();
    let scratch = tempfile::tempdir().unwrap();
    let image = scratch.path().join("xfs.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(512 << 20)
        .unwrap();
    let mut format = Command::new(mkfs);
    format.args(["-q", "-f", image.to_str().unwrap()]);
    run_with_timeout(format, common::TIMEOUT).ok();
    let xfs = scratch.path().join("xfs");
    std::fs::create_dir(&xfs).unwrap();
    let mut mount = Command::new(system_mount);
    mount.args(["-o", "loop", image.to_str().unwrap(), xfs.to_str().unwrap()]);
    run_with_timeout(mount, common::TIMEOUT).ok();
    let _xfs_guard = MountGuard(xfs.clone());

    let sim = Sim::in_dir(tempfile::tempdir_in(&xfs).unwrap());
    let fs = sim.create_fs(&["lustre", "--name", "xfsfs"]);
    assert_eq!(fs["project_backend"], "kernel");
    let mnt = sim.scratch("mnt");
    sim.tool(
        "mount",
        &["-t", "lustre", "10.0.0.1@tcp:/xfsfs", mnt.to_str().unwrap()],
    )
    .ok();
    let _guard = MountGuard(mnt.clone());

    let vol = mnt.join("vol");
    std::fs::create_dir(&vol).unwrap();
    sim.tool(
        "lfs",
        &["project", "-p", "4242", "-s", vol.to_str().unwrap()],
    )
    .ok();
    std::fs::create_dir(vol.join("sub")).unwrap();
    std::fs::write(vol.join("sub/file"), vec![3u8; 256 * 1024]).unwrap();

    let file_attr = pfs_sim::projects::get_fsxattr(&vol.join("sub/file")).unwrap();
    assert_eq!(
        file_attr.projid, 4242,
        "the kernel gives new files the directory's project"
    );
    let dir_attr = pfs_sim::projects::get_fsxattr(&vol.join("sub")).unwrap();
    assert_eq!(dir_attr.projid, 4242);
    assert_ne!(dir_attr.xflags & pfs_sim::projects::FS_XFLAG_PROJINHERIT, 0);

    let listed = sim
        .tool("lfs", &["project", "-d", vol.to_str().unwrap()])
        .ok();
    assert_eq!(listed.stdout, format!(" 4242 P {}\n", vol.display()));
    let quota = sim
        .tool("lfs", &["quota", "-q", "-p", "4242", mnt.to_str().unwrap()])
        .ok();
    let figures: Vec<&str> = quota
        .stdout
        .split_whitespace()
        .filter(|t| !t.starts_with('/'))
        .collect();
    assert_eq!(figures[4], "3", "{}", quota.stdout);
    assert!(figures[0].parse::<u64>().unwrap() >= 256);

    sim.tool("lfs", &["project", "-C", "-r", vol.to_str().unwrap()])
        .ok();
    assert_eq!(
        pfs_sim::projects::get_fsxattr(&vol.join("sub/file"))
            .unwrap()
            .projid,
        0
    );
}
