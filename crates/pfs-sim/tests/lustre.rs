//! The Lustre tools through the built executable: mounts, projects, quotas, lctl.

mod common;

use common::{MountGuard, Sim, is_mount_point, private_mount_namespace};
use std::os::unix::fs::MetadataExt;

/// The eight figures of the report (used, quota, limit, grace, files, quota, limit, grace),
/// whether the mount point shares their line or (when long) sits on its own line.
fn quota_row(out: &str) -> Vec<String> {
    let row = out.lines().rev().find(|l| !l.trim().is_empty()).unwrap();
    row.split_whitespace()
        .filter(|t| !t.starts_with('/'))
        .map(str::to_string)
        .collect()
}

#[test]
fn two_mounts_share_data_and_project_usage_grows_with_files() {
    private_mount_namespace();
    let sim = Sim::new();
    let fs = sim.create_fs(&[
        "lustre",
        "--name",
        "testfs",
        "--nids",
        "10.0.0.1@tcp,10.0.0.2@tcp",
    ]);
    assert_eq!(fs["kind"], "lustre");
    let mnt_a = sim.scratch("mnt-a");
    let mnt_b = sim.scratch("mnt-b");
    sim.tool(
        "mount",
        &[
            "-t",
            "lustre",
            "10.0.0.9@tcp:10.0.0.2@tcp:/testfs",
            mnt_a.to_str().unwrap(),
        ],
    )
    .ok();
    let _guard_a = MountGuard(mnt_a.clone());
    sim.tool(
        "mount",
        &[
            "-t",
            "lustre",
            "-o",
            "flock",
            "10.0.0.1@tcp:/testfs",
            mnt_b.to_str().unwrap(),
        ],
    )
    .ok();
    let _guard_b = MountGuard(mnt_b.clone());
    assert!(is_mount_point(&mnt_a) && is_mount_point(&mnt_b));

    std::fs::create_dir(mnt_a.join("vol")).unwrap();
    std::fs::write(mnt_a.join("vol/hello"), b"from a").unwrap();
    assert_eq!(std::fs::read(mnt_b.join("vol/hello")).unwrap(), b"from a");

    let vol = mnt_a.join("vol");
    sim.tool(
        "lfs",
        &["project", "-p", "1000", "-s", vol.to_str().unwrap()],
    )
    .ok();
    let listed = sim
        .tool("lfs", &["project", "-d", vol.to_str().unwrap()])
        .ok();
    assert_eq!(listed.stdout, format!(" 1000 P {}\n", vol.display()));
    let children = sim.tool("lfs", &["project", vol.to_str().unwrap()]).ok();
    assert_eq!(
        children.stdout,
        format!(" 1000 - {}/hello\n", vol.display())
    );

    let mnt = mnt_b.to_str().unwrap();
    let before = sim.tool("lfs", &["quota", "-p", "1000", mnt]).ok();
    assert!(
        before
            .stdout
            .starts_with("Disk quotas for prj 1000 (pid 1000):\n"),
        "{}",
        before.stdout
    );
    let before_row = quota_row(&before.stdout);
    let before_kib: u64 = before_row[0].parse().unwrap();
    let before_files: u64 = before_row[4].parse().unwrap();
    assert_eq!(before_files, 2);

    std::fs::create_dir(mnt_b.join("vol/sub")).unwrap();
    std::fs::write(mnt_b.join("vol/sub/big"), vec![7u8; 1 << 20]).unwrap();
    std::fs::write(mnt_b.join("outside"), vec![7u8; 1 << 20]).unwrap();
    let after = sim.tool("lfs", &["quota", "-q", "-p", "1000", mnt]).ok();
    assert!(!after.stdout.contains("Disk quotas"));
    let row = quota_row(&after.stdout);
    let kib: u64 = row[0].parse().unwrap();
    assert!(kib >= before_kib + 1024, "{before_kib} -> {kib}");
    assert_eq!(row[4], "4");

    sim.tool(
        "lfs",
        &["setquota", "-p", "1000", "-B", "512", "-I", "100", mnt],
    )
    .ok();
    let over = sim.tool("lfs", &["quota", "-p", "1000", mnt]).ok();
    let row = quota_row(&over.stdout);
    assert!(row[0].ends_with('*'), "{}", over.stdout);
    assert_eq!(row[2], "512");
    assert_eq!(row[6], "100");
    let human = sim.tool("lfs", &["quota", "-h", "-p", "1000", mnt]).ok();
    assert!(
        human.stdout.contains("     Filesystem    used"),
        "{}",
        human.stdout
    );
    assert!(quota_row(&human.stdout)[2].ends_with('k'));

    sim.tool("lfs", &["project", "-C", vol.to_str().unwrap()])
        .ok();
    let cleared = sim
        .tool("lfs", &["project", "-d", vol.to_str().unwrap()])
        .ok();
    assert_eq!(cleared.stdout, format!("    0 - {}\n", vol.display()));

    sim.tool("umount", &[mnt_a.to_str().unwrap()]).ok();
    assert!(!is_mount_point(&mnt_a));
    let again = sim.tool("umount", &[mnt_a.to_str().unwrap()]);
    assert_eq!(again.code, Some(32));
    assert!(again.stderr.contains("not mounted"), "{again:#?}");
    sim.tool("umount", &["-l", mnt_b.to_str().unwrap()]).ok();
}

#[test]
fn mount_failures_look_like_mount_lustre() {
    private_mount_namespace();
    let sim = Sim::new();
    sim.create_fs(&["lustre", "--name", "fs1", "--nids", "10.0.0.1@tcp"]);
    let mnt = sim.scratch("mnt");
    let target = mnt.to_str().unwrap();

    let missing_sub = sim.tool("mount", &["-t", "lustre", "10.0.0.1@tcp:/fs1/nope", target]);
    assert_eq!(missing_sub.code, Some(2), "{missing_sub:#?}");
    assert!(missing_sub.stderr.starts_with(&format!(
        "mount.lustre: mount 10.0.0.1@tcp:/fs1/nope at {target} failed: No such file or directory\n"
    )));
    let unknown_fs = sim.tool("mount", &["-t", "lustre", "10.0.0.1@tcp:/other", target]);
    assert_eq!(unknown_fs.code, Some(2));
    let wrong_nid = sim.tool("mount", &["-t", "lustre", "10.9.9.9@tcp:/fs1", target]);
    assert_eq!(wrong_nid.code, Some(5));
    assert!(wrong_nid.stderr.contains("Is the MGS running?"));
    let bind = sim.tool("mount", &["--bind", "/tmp", target]);
    assert_eq!(bind.code, Some(32));
    let no_target = sim.tool(
        "mount",
        &["-t", "lustre", "10.0.0.1@tcp:/fs1", "/nonexistent/x"],
    );
    assert_eq!(no_target.code, Some(32));
    assert!(!is_mount_point(&mnt));
}

#[test]
fn subdirectory_and_read_only_mounts() {
    private_mount_namespace();
    let sim = Sim::new();
    let fs = sim.create_fs(&["lustre", "--name", "fs2"]);
    let data = std::path::PathBuf::from(fs["data_dir"].as_str().unwrap());
    std::fs::create_dir_all(data.join("vols/v1")).unwrap();
    std::fs::write(data.join("vols/v1/f"), b"x").unwrap();
    let mnt = sim.scratch("ro");
    sim.tool(
        "mount",
        &[
            "-t",
            "lustre",
            "-o",
            "ro,nosuid",
            "1.2.3.4@tcp:/fs2/vols/v1",
            mnt.to_str().unwrap(),
        ],
    )
    .ok();
    let _guard = MountGuard(mnt.clone());
    assert_eq!(std::fs::read(mnt.join("f")).unwrap(), b"x");
    let err = std::fs::write(mnt.join("g"), b"y").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    let st = nix::sys::statvfs::statvfs(&mnt).unwrap();
    assert!(st.flags().contains(nix::sys::statvfs::FsFlags::ST_NOSUID));
    assert_eq!(
        std::fs::metadata(&mnt).unwrap().ino(),
        std::fs::metadata(data.join("vols/v1")).unwrap().ino()
    );
}

#[test]
fn quota_needs_a_lustre_mount_and_setquota_needs_a_limit() {
    private_mount_namespace();
    let sim = Sim::new();
    sim.create_fs(&["lustre", "--name", "fs3"]);
    let plain = sim.scratch("plain");
    let not_lustre = sim.tool("lfs", &["quota", "-p", "5", plain.to_str().unwrap()]);
    assert_eq!(not_lustre.code, Some(1));
    assert!(not_lustre.stderr.contains("not on a Lustre filesystem"));
    let mnt = sim.scratch("m");
    sim.tool(
        "mount",
        &["-t", "lustre", "1.2.3.4@tcp:/fs3", mnt.to_str().unwrap()],
    )
    .ok();
    let _guard = MountGuard(mnt.clone());
    let no_limit = sim.tool("lfs", &["setquota", "-p", "5", mnt.to_str().unwrap()]);
    assert_eq!(no_limit.code, Some(1));
    let long = mnt.join("a-rather-long-directory-name");
    std::fs::create_dir(&long).unwrap();
    let out = sim
        .tool("lfs", &["quota", "-p", "5", long.to_str().unwrap()])
        .ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[2], long.to_str().unwrap());
    assert!(lines[3].starts_with("               "), "{out:#?}");
}

#[test]
fn lctl_reports_version_and_nids() {
    let sim = Sim::new();
    let version = sim.tool("lctl", &["get_param", "-n", "version"]).ok();
    assert!(version.stdout.trim().starts_with("2."), "{version:#?}");
    let named = sim.tool("lctl", &["get_param", "version"]).ok();
    assert!(named.stdout.starts_with("version=2."));
    let nids = sim.tool("lctl", &["list_nids"]).ok();
    assert!(nids.stdout.trim().contains('@'));
    assert_ne!(sim.tool("lctl", &["set_param", "x=1"]).code, Some(0));
}

#[test]
fn an_unset_state_root_is_a_clear_error() {
    let sim = Sim::new();
    let mut cmd = std::process::Command::new(sim.bin.join("lfs"));
    cmd.args(["quota", "-p", "1", "/"])
        .env_remove("PFS_SIM_ROOT");
    let out = common::run_with_timeout(cmd, common::TIMEOUT);
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("PFS_SIM_ROOT is not set"), "{out:#?}");
    let direct = sim.sim(&["lctl", "get_param", "-n", "version"]).ok();
    assert!(direct.stdout.starts_with("2."));
}

#[test]
fn lfs_works_on_a_bind_mount_of_a_volume_directory_as_on_real_lustre() {
    private_mount_namespace();
    let sim = Sim::new();
    sim.create_fs(&["lustre", "--name", "bindfs"]);
    let mnt = sim.scratch("mnt");
    sim.tool(
        "mount",
        &[
            "-t",
            "lustre",
            "10.0.0.1@tcp:/bindfs",
            mnt.to_str().unwrap(),
        ],
    )
    .ok();
    let _guard = MountGuard(mnt.clone());
    let vol = mnt.join("pvc-1");
    std::fs::create_dir(&vol).unwrap();
    sim.tool(
        "lfs",
        &["project", "-p", "4242", "-s", vol.to_str().unwrap()],
    )
    .ok();
    std::fs::write(vol.join("data"), vec![1u8; 1 << 20]).unwrap();

    // The driver's staging path: a bind mount of the volume directory, made with a syscall.
    let staging = sim.scratch("staging");
    nix::mount::mount(
        Some(&vol),
        &staging,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .unwrap();
    let _staging_guard = MountGuard(staging.clone());

    let listed = sim
        .tool("lfs", &["project", "-d", staging.to_str().unwrap()])
        .ok();
    assert!(listed.stdout.starts_with(" 4242 P "), "{}", listed.stdout);
    let quota = sim
        .tool(
            "lfs",
            &["quota", "-q", "-p", "4242", staging.to_str().unwrap()],
        )
        .ok();
    let kib: u64 = quota_row(&quota.stdout)[0].parse().unwrap();
    assert!(kib >= 1024, "{}", quota.stdout);
}
