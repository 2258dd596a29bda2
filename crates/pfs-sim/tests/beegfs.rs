//! The BeeGFS tools through the built executable: client mounts, `beegfs-ctl` (7), `beegfs` (8).

mod common;

use common::{MountGuard, Sim, is_mount_point, private_mount_namespace};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

fn write_conf(sim: &Sim, name: &str, body: &str) -> PathBuf {
    let path = sim.scratch("conf").join(name);
    std::fs::write(&path, body).unwrap();
    path
}

fn secret_file(sim: &Sim, name: &str, content: &[u8]) -> PathBuf {
    let path = sim.scratch("secrets").join(name);
    std::fs::write(&path, content).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
    path
}

fn ctl(sim: &Sim, conf: &Path, args: &[&str]) -> common::Run {
    let cfg = format!("--cfgFile={}", conf.display());
    let mut all = vec![cfg.as_str()];
    all.extend_from_slice(args);
    sim.tool("beegfs-ctl", &all)
}

#[test]
fn beegfs7_ctl_modes() {
    let sim = Sim::new();
    let secret = secret_file(&sim, "auth", b"s3cret-s3cret");
    sim.create_fs(&[
        "beegfs",
        "--mgmtd-host",
        "10.0.0.5",
        "--version",
        "7",
        "--auth-secret-file",
        secret.to_str().unwrap(),
        "--pools",
        "2",
    ]);
    let conf = write_conf(
        &sim,
        "client.conf",
        &format!(
            "sysMgmtdHost = 10.0.0.5\nconnAuthFile = {}\n",
            secret.display()
        ),
    );

    let missing = ctl(&sim, &conf, &["--unmounted", "--getentryinfo", "/k8s/vol"]);
    assert_eq!(missing.code, Some(3));
    assert_eq!(
        missing.stderr,
        "Unable to find metadata node for path: /k8s/vol\nError: Path does not exist\n"
    );

    let parentless = ctl(&sim, &conf, &["--unmounted", "--createdir", "/k8s/vol"]);
    assert_eq!(parentless.code, Some(3));
    assert!(parentless.stderr.contains("does not exist"));

    let made = ctl(
        &sim,
        &conf,
        &["--unmounted", "--createdir", "--access=777", "/k8s"],
    )
    .ok();
    assert_eq!(made.stdout, "Operation succeeded.\n");
    ctl(
        &sim,
        &conf,
        &[
            "--unmounted",
            "--createdir",
            "--access=2770",
            "--uid=1000",
            "--gid=2000",
            "/k8s/vol",
        ],
    )
    .ok();
    let again = ctl(&sim, &conf, &["--unmounted", "--createdir", "/k8s/vol"]);
    assert_eq!(again.code, Some(3));
    assert_eq!(
        again.stderr,
        "Node encountered an error: Entry exists already\n"
    );

    let pattern = ctl(
        &sim,
        &conf,
        &[
            "--unmounted",
            "--setpattern",
            "--storagepoolid=2",
            "--chunksize=1m",
            "--numtargets=2",
            "/k8s/vol",
        ],
    )
    .ok();
    assert_eq!(
        pattern.stdout,
        "New chunksize: 1048576\nNew number of storage targets: 2\nNew storage pool ID: 2\n\n"
    );
    let bad_pool = ctl(
        &sim,
        &conf,
        &[
            "--unmounted",
            "--setpattern",
            "--storagepoolid=9",
            "/k8s/vol",
        ],
    );
    assert_eq!(bad_pool.code, Some(3));

    let info = ctl(&sim, &conf, &["--unmounted", "--getentryinfo", "/k8s/vol"]).ok();
    let lines: Vec<&str> = info.stdout.lines().collect();
    assert_eq!(lines[0], "Entry type: directory");
    assert!(lines[1].starts_with("EntryID: "));
    assert_eq!(lines[2], "Metadata node: beegfs-meta-1 [ID: 1]");
    assert_eq!(lines[3], "Stripe pattern details:");
    assert_eq!(lines[4], "+ Type: RAID0");
    assert_eq!(lines[5], "+ Chunksize: 1M");
    assert_eq!(lines[6], "+ Number of storage targets: desired: 2");
    assert_eq!(lines[7], "+ Storage Pool: 2 (pool2)");
    let root = ctl(&sim, &conf, &["--unmounted", "--getentryinfo", "/"]).ok();
    assert!(root.stdout.contains("EntryID: root\n"));

    let nodes = ctl(&sim, &conf, &["--listnodes", "--nodetype=management"]).ok();
    assert_eq!(nodes.stdout, "10.0.0.5 [ID: 1]\n");

    let no_id = ctl(
        &sim,
        &conf,
        &[
            "--setquota",
            "--gid=2000",
            "--sizelimit=1G",
            "--inodelimit=10",
        ],
    );
    assert_eq!(no_id.code, Some(1));
    assert!(no_id.stderr.contains("No ID specified."));
    let set = ctl(
        &sim,
        &conf,
        &[
            "--setquota",
            "--gid",
            "2000",
            "--sizelimit=1G",
            "--inodelimit=10",
            "--storagepoolid=2",
        ],
    )
    .ok();
    assert_eq!(set.stdout, "");
    let defaulted = ctl(
        &sim,
        &conf,
        &[
            "--setquota",
            "--gid",
            "2000",
            "--sizelimit=unlimited",
            "--inodelimit=unlimited",
        ],
    )
    .ok();
    assert_eq!(defaulted.stdout, "Using default storage pool (1)\n");

    let data = sim.root.join("beegfs/10.0.0.5/data/k8s/vol");
    assert_eq!(std::fs::metadata(&data).unwrap().mode() & 0o7777, 0o2770);
    std::fs::write(data.join("file"), vec![1u8; 64 * 1024]).unwrap();
    std::os::unix::fs::chown(data.join("file"), None, Some(2000)).unwrap();
    let csv = ctl(
        &sim,
        &conf,
        &["--getquota", "--gid", "2000", "--csv", "--storagepoolid=2"],
    )
    .ok();
    let rows: Vec<&str> = csv.stdout.lines().collect();
    assert_eq!(rows[0], "name,id,size,hard,files,hard");
    let fields: Vec<&str> = rows[1].split(',').collect();
    assert_eq!(fields[1], "2000");
    assert!(fields[2].parse::<u64>().unwrap() >= 64 * 1024);
    assert_eq!(fields[3], (1u64 << 30).to_string());
    assert_eq!(fields[4], "1");
    assert_eq!(fields[5], "10");
    let table = ctl(&sim, &conf, &["--getquota", "--gid", "2000"]).ok();
    assert!(
        table
            .stdout
            .contains("\nQuota information for storage pool Default (ID: 1):\n\n")
    );
    assert!(
        table
            .stdout
            .contains("     name     |  id  ||    used    |    hard    ||  used   |  hard   \n")
    );
    assert!(
        table
            .stdout
            .contains("|  2000||      0 Byte|   unlimited||        0|unlimited\n"),
        "{}",
        table.stdout
    );

    let file_info = ctl(
        &sim,
        &conf,
        &["--unmounted", "--getentryinfo", "/k8s/vol/file"],
    )
    .ok();
    assert!(file_info.stdout.contains("Entry type: file\n"));
    assert!(
        file_info
            .stdout
            .contains("+ Number of storage targets: desired: 2; actual: 2\n")
    );
    assert!(
        file_info
            .stdout
            .contains("  + 101 @ beegfs-storage-1 [ID: 1]\n")
    );
}

#[test]
fn beegfs7_ctl_configuration_and_authentication_failures() {
    let sim = Sim::new();
    let secret = secret_file(&sim, "auth", b"right-secret");
    let wrong = secret_file(&sim, "wrong", b"wrong-secret");
    sim.create_fs(&[
        "beegfs",
        "--mgmtd-host",
        "mgmt7",
        "--version",
        "7",
        "--auth-secret-file",
        secret.to_str().unwrap(),
    ]);
    sim.create_fs(&["beegfs", "--mgmtd-host", "mgmt8", "--version", "8"]);

    let no_auth = write_conf(&sim, "noauth.conf", "sysMgmtdHost = mgmt7\n");
    let out = ctl(&sim, &no_auth, &["--listnodes", "--nodetype=management"]);
    assert_eq!(out.code, Some(3));
    assert!(
        out.stderr
            .contains("Unrecoverable error: No connAuthFile configured."),
        "{out:#?}"
    );

    let unreadable = write_conf(
        &sim,
        "unreadable.conf",
        "sysMgmtdHost = mgmt7\nconnAuthFile = /nonexistent/auth\n",
    );
    let out = ctl(&sim, &unreadable, &["--listnodes", "--nodetype=management"]);
    assert_eq!(out.code, Some(3));
    assert!(out.stderr.contains(
        "Unable to open auth file: /nonexistent/auth (SysErr: No such file or directory)"
    ));

    let mismatch = write_conf(
        &sim,
        "wrong.conf",
        &format!("sysMgmtdHost = mgmt7\nconnAuthFile = {}\n", wrong.display()),
    );
    let out = ctl(&sim, &mismatch, &["--listnodes", "--nodetype=management"]);
    assert_eq!(out.code, Some(3));
    assert_eq!(out.stderr, "Management node communication failed: mgmt7\n");

    let v8 = write_conf(
        &sim,
        "v8.conf",
        "sysMgmtdHost = mgmt8\nconnDisableAuthentication = true\n",
    );
    let out = ctl(&sim, &v8, &["--listnodes", "--nodetype=management"]);
    assert_eq!(out.code, Some(3));
    assert_eq!(out.stderr, "Management node communication failed: mgmt8\n");

    let hostless = write_conf(&sim, "hostless.conf", "connDisableAuthentication = true\n");
    let out = ctl(&sim, &hostless, &["--listnodes", "--nodetype=management"]);
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("Error: Management host undefined"));

    let good = write_conf(
        &sim,
        "good.conf",
        &format!(
            "sysMgmtdHost = mgmt7\nconnAuthFile = {}\n",
            secret.display()
        ),
    );
    // The path is the first remaining key of the sorted map; the rest are invalid arguments.
    let out = ctl(
        &sim,
        &good,
        &["--getentryinfo", "--unmounted", "/other", "/"],
    );
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.starts_with("Invalid argument: /other\n"),
        "{out:#?}"
    );
    let out = sim.tool(
        "beegfs-ctl",
        &["--cfgFile=/nonexistent.conf", "--listnodes"],
    );
    assert_eq!(out.code, Some(1));
}

#[test]
fn beegfs_client_mounts_check_the_configuration() {
    private_mount_namespace();
    let sim = Sim::new();
    let secret = secret_file(&sim, "auth", b"mount-secret");
    let fs = sim.create_fs(&[
        "beegfs",
        "--mgmtd-host",
        "10.1.1.1",
        "--version",
        "7",
        "--auth-secret-file",
        secret.to_str().unwrap(),
    ]);
    let data = PathBuf::from(fs["data_dir"].as_str().unwrap());
    std::fs::write(data.join("shared"), b"hi").unwrap();
    let mnt = sim.scratch("beegfs-mnt");
    let target = mnt.to_str().unwrap();
    let generic = "wrong fs type, bad option, bad superblock on beegfs_nodev";

    let no_host = write_conf(
        &sim,
        "nohost.conf",
        &format!("connAuthFile = {}\n", secret.display()),
    );
    let out = sim.tool(
        "mount",
        &[
            "-t",
            "beegfs",
            "beegfs_nodev",
            target,
            "-o",
            &format!("rw,cfgFile={}", no_host.display()),
        ],
    );
    assert_eq!(out.code, Some(32));
    assert!(out.stderr.contains(generic), "{out:#?}");
    let dmesg = std::fs::read_to_string(sim.root.join("dmesg.log")).unwrap();
    assert!(dmesg.contains("Management host undefined"));

    let bad_auth = write_conf(
        &sim,
        "badauth.conf",
        "sysMgmtdHost = 10.1.1.1\nconnAuthFile = /nonexistent\n",
    );
    let out = sim.tool(
        "mount",
        &[
            "-t",
            "beegfs",
            "beegfs_nodev",
            target,
            "-o",
            &format!("cfgFile={}", bad_auth.display()),
        ],
    );
    assert_eq!(out.code, Some(32));
    assert!(
        std::fs::read_to_string(sim.root.join("dmesg.log"))
            .unwrap()
            .contains("Unable to open auth file")
    );
    assert!(!is_mount_point(&mnt));

    let good = write_conf(
        &sim,
        "good.conf",
        &format!(
            "sysMgmtdHost = 10.1.1.1\nconnAuthFile = {}\n",
            secret.display()
        ),
    );
    sim.tool(
        "mount",
        &[
            "-t",
            "beegfs",
            "beegfs_nodev",
            target,
            "-o",
            &format!("rw,relatime,nosuid,cfgFile={}", good.display()),
        ],
    )
    .ok();
    let _guard = MountGuard(mnt.clone());
    assert_eq!(std::fs::read(mnt.join("shared")).unwrap(), b"hi");
    let st = nix::sys::statvfs::statvfs(&mnt).unwrap();
    assert!(st.flags().contains(nix::sys::statvfs::FsFlags::ST_NOSUID));
    let record =
        std::fs::read_to_string(sim.root.join("beegfs/10.1.1.1/meta/mounts.json")).unwrap();
    assert!(record.contains("nosuid"));

    // The mounted form of beegfs-ctl: paths inside the mount, configuration from --mount.
    std::fs::create_dir(mnt.join("dir")).unwrap();
    let mount_arg = format!("--mount={}", mnt.display());
    let dir_arg = mnt.join("dir");
    let info = sim
        .tool(
            "beegfs-ctl",
            &[&mount_arg, "--getentryinfo", dir_arg.to_str().unwrap()],
        )
        .ok();
    assert!(info.stdout.starts_with("Entry type: directory\n"));
    let made = sim
        .tool(
            "beegfs-ctl",
            &[
                &format!("--cfgFile={}", good.display()),
                "--createdir",
                mnt.join("dir/sub").to_str().unwrap(),
            ],
        )
        .ok();
    assert_eq!(made.stdout, "Operation succeeded.\n");
    assert!(data.join("dir/sub").is_dir());
    sim.tool("umount", &[target]).ok();
    let record =
        std::fs::read_to_string(sim.root.join("beegfs/10.1.1.1/meta/mounts.json")).unwrap();
    assert!(!record.contains(target));
}

fn v8(sim: &Sim, args: &[&str]) -> common::Run {
    sim.tool("beegfs", args)
}

#[test]
fn beegfs8_cli_commands() {
    let sim = Sim::new();
    let secret = secret_file(&sim, "auth", b"v8-secret");
    sim.create_fs(&[
        "beegfs",
        "--mgmtd-host",
        "10.0.0.8",
        "--version",
        "8",
        "--auth-secret-file",
        secret.to_str().unwrap(),
    ]);
    let auth = format!("--auth-file={}", secret.display());
    let base = ["--mgmtd-addr=10.0.0.8:8010", auth.as_str(), "--tls-disable"];
    let with = |extra: &[&str]| -> Vec<String> {
        extra
            .iter()
            .chain(base.iter())
            .map(|s| s.to_string())
            .collect()
    };
    let run = |extra: &[&str]| {
        let args = with(extra);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        v8(&sim, &refs)
    };

    let version = v8(&sim, &["version"]).ok();
    assert!(version.stdout.starts_with("Version: 8."));

    let nodes = run(&["node", "list"]).ok();
    let lines: Vec<&str> = nodes.stdout.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        vec!["ID", "TYPE", "ALIAS"]
    );
    assert!(
        nodes.stdout.contains("management:1  management  mgmtd"),
        "{}",
        nodes.stdout
    );

    let missing = run(&["--mount=none", "entry", "info", "/k8s"]);
    assert_eq!(missing.code, Some(1));
    assert!(
        missing.stderr.starts_with("Error: ") && missing.stderr.contains("does not exist"),
        "{missing:#?}"
    );

    let made = run(&[
        "--mount=none",
        "entry",
        "create",
        "directory",
        "--permissions=755",
        "/k8s",
    ])
    .ok();
    assert!(made.stdout.starts_with("NAME"), "{made:#?}");
    assert!(made.stdout.contains("/k8s  Success"));
    run(&[
        "--mount=none",
        "entry",
        "create",
        "directory",
        "--permissions=770",
        "--uid=1000",
        "--gid=3000",
        "/k8s/vol",
    ])
    .ok();
    let exists = run(&["--mount=none", "entry", "create", "directory", "/k8s/vol"]);
    assert_eq!(exists.code, Some(1));
    assert!(exists.stdout.contains("exists already"));
    assert!(
        exists
            .stderr
            .contains("unable to create one or more entries")
    );

    let bad_chunk = run(&[
        "--mount=none",
        "entry",
        "set",
        "--chunk-size=1m",
        "/k8s/vol",
    ]);
    assert_eq!(bad_chunk.code, Some(1));
    let set = run(&[
        "--mount=none",
        "entry",
        "set",
        "--chunk-size=1Mi",
        "--num-targets=2",
        "--pool=1",
        "/k8s/vol",
    ])
    .ok();
    assert!(
        set.stderr.starts_with("Summary: processed 1 entries"),
        "{set:#?}"
    );

    let info = run(&[
        "--mount=none",
        "entry",
        "info",
        "/k8s/vol",
        "--output",
        "json",
    ])
    .ok();
    let rows: serde_json::Value = serde_json::from_str(info.stdout.trim()).unwrap();
    assert_eq!(rows[0]["type"], "directory");
    assert_eq!(rows[0]["stripe_pattern"], "RAID0 (2x1M)");
    assert_eq!(rows[0]["storage_pool"], "storage_pool_default (1)");
    let retro = run(&["--mount=none", "entry", "info", "--retro", "/k8s/vol"]).ok();
    assert!(retro.stdout.starts_with("Entry type: directory\nEntryID: "));

    let no_pool = run(&[
        "quota",
        "set-limits",
        "--gid",
        "3000",
        "--space",
        "1GiB",
        "--inode",
        "100",
    ]);
    assert_eq!(no_pool.code, Some(1));
    run(&[
        "quota",
        "set-limits",
        "--gid",
        "3000-3001",
        "--space",
        "1GiB",
        "--inode",
        "100",
        "storage_pool_default",
    ])
    .ok();
    let data = sim.root.join("beegfs/10.0.0.8/data/k8s/vol");
    std::fs::write(data.join("f"), vec![0u8; 4096]).unwrap();
    std::os::unix::fs::chown(data.join("f"), None, Some(3000)).unwrap();
    let usage = run(&[
        "quota",
        "list-usage",
        "--gids",
        "3000",
        "--raw",
        "--output=json",
    ])
    .ok();
    let rows: serde_json::Value = serde_json::from_str(usage.stdout.trim()).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 1, "{usage:#?}");
    assert_eq!(rows[0]["id"], 3000);
    assert_eq!(rows[0]["type"], "group");
    let space = rows[0]["space"].as_str().unwrap();
    let (used, limit) = space.split_once('/').unwrap();
    assert!(used.parse::<u64>().unwrap() >= 4096);
    assert_eq!(limit, (1u64 << 30).to_string());
    assert_eq!(rows[0]["inode"], "1/100");
    assert!(usage.stderr.starts_with("INFO: "));
    let table = run(&["quota", "list-usage", "--gids", "3001"]).ok();
    assert!(table.stdout.contains("0.00B/1.00GiB"), "{}", table.stdout);
    let nobody = run(&["quota", "list-usage", "--gids", "4000"]).ok();
    assert!(nobody.stderr.starts_with("WARNING: No information found"));
}

#[test]
fn beegfs8_cli_connection_checks() {
    let sim = Sim::new();
    let secret = secret_file(&sim, "auth", b"v8-secret");
    let wrong = secret_file(&sim, "wrong", b"other");
    let cert = secret_file(
        &sim,
        "cert.pem",
        b"-----BEGIN CERTIFICATE-----\nsim\n-----END CERTIFICATE-----\n",
    );
    sim.create_fs(&[
        "beegfs",
        "--mgmtd-host",
        "h8",
        "--version",
        "8",
        "--auth-secret-file",
        secret.to_str().unwrap(),
        "--tls-cert-file",
        cert.to_str().unwrap(),
    ]);
    sim.create_fs(&["beegfs", "--mgmtd-host", "h7", "--version", "7"]);
    let auth = format!("--auth-file={}", secret.display());
    let tls = format!("--tls-cert-file={}", cert.display());

    v8(&sim, &["node", "list", "--mgmtd-addr=h8:8010", &auth, &tls]).ok();
    let no_auth = v8(
        &sim,
        &[
            "node",
            "list",
            "--mgmtd-addr=h8:8010",
            "--auth-disable",
            &tls,
        ],
    );
    assert_eq!(no_auth.code, Some(1));
    assert!(no_auth.stderr.contains("code = Unauthenticated"));
    let wrong_auth = v8(
        &sim,
        &[
            "node",
            "list",
            "--mgmtd-addr=h8:8010",
            &format!("--auth-file={}", wrong.display()),
            &tls,
        ],
    );
    assert!(wrong_auth.stderr.contains("code = Unauthenticated"));
    let no_tls = v8(
        &sim,
        &[
            "node",
            "list",
            "--mgmtd-addr=h8:8010",
            &auth,
            "--tls-disable",
        ],
    );
    assert_eq!(no_tls.code, Some(1));
    let wrong_port = v8(&sim, &["node", "list", "--mgmtd-addr=h8:9999", &auth, &tls]);
    assert!(wrong_port.stderr.contains("connection refused"));
    let v7 = v8(
        &sim,
        &[
            "node",
            "list",
            "--mgmtd-addr=h7:8010",
            "--auth-disable",
            "--tls-disable",
        ],
    );
    assert_eq!(v7.code, Some(1));
    assert!(v7.stderr.contains("connection refused"));
    let env = {
        let mut cmd = std::process::Command::new(sim.bin.join("beegfs"));
        cmd.args(["node", "list", "--auth-disable", "--tls-disable"])
            .env("PFS_SIM_ROOT", &sim.root)
            .env("BEEGFS_MGMTD_ADDR", "h7:8010");
        common::run_with_timeout(cmd, common::TIMEOUT)
    };
    assert_eq!(env.code, Some(1));
    assert!(env.stderr.contains("h7:8010"));
    let unknown = v8(&sim, &["entry", "info", "--nope", "x"]);
    assert_eq!(unknown.stderr, "Error: unknown flag: --nope\n");
}

#[test]
fn beegfs_paths_cannot_escape_the_filesystem() {
    let sim = Sim::new();
    sim.create_fs(&["beegfs", "--mgmtd-host", "esc", "--version", "7"]);
    let conf = write_conf(
        &sim,
        "c.conf",
        "sysMgmtdHost = esc\nconnDisableAuthentication = true\n",
    );
    let out = ctl(&sim, &conf, &["--unmounted", "--createdir", "/../escape"]);
    assert_eq!(out.code, Some(3));
    assert!(!sim.root.join("beegfs/esc/escape").exists());
    assert!(!Path::new(&sim.root.join("escape")).exists());
}
