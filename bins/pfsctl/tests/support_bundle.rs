//! `pfsctl support-bundle` against a fake plugin that leaks secrets into
//! its answers, with configuration, log, mount table and state files full
//! of planted secrets: none of them may reach the bundle.

mod fake_plugin;

use std::{
    collections::BTreeMap,
    fs,
    io::Read,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use fake_plugin::{FakePlugin, Options, pfsctl};
use flate2::read::GzDecoder;

/// A planted secret, distinct per place so a leak says where it came from.
fn planted(place: &str) -> String {
    format!("PLANTED-{place}-7f3a9c")
}

/// Every secret planted, and the files holding them.
struct Planted {
    dir: tempfile::TempDir,
    secrets: Vec<String>,
    configs: Vec<PathBuf>,
    log: PathBuf,
    mountinfo: PathBuf,
    state: PathBuf,
}

fn write(path: &Path, content: &str) -> PathBuf {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
    path.to_owned()
}

fn plant() -> Planted {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut secrets = Vec::new();
    let mut s = |place: &str| {
        let secret = planted(place);
        secrets.push(secret.clone());
        secret
    };
    let exa = write(
        &d.join("cfg/exascaler.yaml"),
        &format!(
            "# admin note: the password is {}\nexascaler_map:\n  exa1:\n    exaFS: 10.0.0.1@tcp:/fs\n    mountPoint: /exaFS\n    password: {}\n    nested:\n      apiToken:\n        value: {}\ndebug: false\n",
            s("config-comment"),
            s("config-password"),
            s("config-nested-token"),
        ),
    );
    let bee = write(
        &d.join("cfg/csi-beegfs-config.yaml"),
        &format!(
            "config:\n  connInterfaces: [ib0]\n  beegfsClientConf:\n    connMgmtdPortTCP: \"8008\"\nsecrets:\n  - {}\n  - {}\npfsCsi:\n  beegfs:\n    tlsCert: |\n      -----BEGIN CERTIFICATE-----\n      {}\n      -----END CERTIFICATE-----\n",
            s("config-secrets-list-1"),
            s("config-secrets-list-2"),
            s("config-inline-pem"),
        ),
    );
    let conn_auth = write(
        &d.join("cfg/list.yaml"),
        &format!(
            "- sysMgmtdHost: 10.0.0.5\n  connAuth: {}\n  encoding: raw\n",
            s("connauth-file")
        ),
    );
    let tls = write(
        &d.join("cfg/bee8.yaml"),
        &format!(
            "- sysMgmtdHost: 10.0.0.5\n  tlsCert: |\n    -----BEGIN CERTIFICATE-----\n    {}\n    -----END CERTIFICATE-----\n",
            s("tls-file")
        ),
    );
    let client_conf = write(
        &d.join("cfg/beegfs-client.conf"),
        &format!(
            "sysMgmtdHost = 10.0.0.5\nconnAuthFile = {}\nconnClientPortUDP = 8004\n",
            s("client-conf-path")
        ),
    );
    let log = write(
        &d.join("logs/node.log"),
        &format!(
            "level=info msg=\"mounted\" volume=vol-a\n\
             {{\"level\":\"debug\",\"fields\":{{\"password\":\"{}\"}}}}\n\
             Authorization: Bearer {}\n\
             connecting to https://admin:{}@mgmt.example/api\n\
             -----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n\
             level=info msg=\"still here\"\n",
            s("log-json-password"),
            s("log-bearer"),
            s("log-url"),
            s("log-pem"),
        ),
    );
    let mountinfo = write(
        &d.join("proc/mountinfo"),
        &format!(
            "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n\
             40 22 0:50 / /mnt/exa rw,relatime - lustre 10.0.0.1@tcp:/fs rw,flock,password={}\n\
             41 22 0:51 / /mnt/bee rw - beegfs beegfs_nodev rw,cfgFile=/state/fs/beegfs-client.conf\n",
            s("mount-option"),
        ),
    );
    let state = d.join("state");
    write(
        &state.join("records/vol-a.json"),
        &format!(
            "{{\"volume_id\":\"vol-a\",\"capacity\":1073741824,\"secrets\":{{\"k\":\"{}\"}}}}",
            s("state-record")
        ),
    );
    write(
        &state.join("mounts/fs1/beegfs-client.conf"),
        &format!(
            "sysMgmtdHost = 10.0.0.5\nconnAuthFile = {}\n",
            s("state-client-conf")
        ),
    );
    write(&state.join("mounts/fs1/connauth"), &s("state-raw-connauth"));
    write(
        &state.join("mounts/fs1/notes.txt"),
        &s("state-unlisted-text"),
    );
    Planted {
        secrets,
        configs: vec![exa, bee, conn_auth, tls, client_conf],
        log,
        mountinfo,
        state,
        dir,
    }
}

/// The archive's files by path below the top directory, and the whole
/// decompressed tar stream.
fn unpack(path: &Path) -> (BTreeMap<String, String>, Vec<u8>) {
    let mut raw = Vec::new();
    GzDecoder::new(fs::File::open(path).unwrap())
        .read_to_end(&mut raw)
        .unwrap();
    let mut archive = tar::Archive::new(raw.as_slice());
    let mut files = BTreeMap::new();
    let mut top = None;
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let full = entry.path().unwrap().to_string_lossy().into_owned();
        let (dir, rest) = full.split_once('/').unwrap();
        assert!(dir.starts_with("pfs-csi-support-"), "{full}");
        assert_eq!(*top.get_or_insert(dir.to_owned()), dir, "one top directory");
        assert_eq!(entry.header().mode().unwrap(), 0o600);
        let mut data = String::new();
        entry.read_to_string(&mut data).unwrap();
        files.insert(rest.to_owned(), data);
    }
    (files, raw)
}

#[test]
fn no_planted_secret_reaches_the_bundle_and_the_rest_does() {
    let rpc_secrets: Vec<String> = [
        "rpc-manifest",
        "rpc-volume-context",
        "rpc-list-error",
        "rpc-node-error",
    ]
    .map(planted)
    .to_vec();
    let plugin = FakePlugin::start(Options {
        ready: Some(true),
        leaked_secrets: rpc_secrets.clone(),
        ..Default::default()
    });
    let planted_files = plant();
    let output = planted_files.dir.path().join("bundle.tar.gz");
    let endpoint = plugin.endpoint();
    let mut args: Vec<String> = [
        "support-bundle",
        "--output",
        output.to_str().unwrap(),
        "--controller-endpoint",
        &endpoint,
        "--node-endpoint",
        &endpoint,
        "--log-file",
        planted_files.log.to_str().unwrap(),
        "--mountinfo",
        planted_files.mountinfo.to_str().unwrap(),
        "--state-dir",
        planted_files.state.to_str().unwrap(),
    ]
    .map(str::to_owned)
    .to_vec();
    for config in &planted_files.configs {
        args.extend(["--config".to_owned(), config.display().to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = pfsctl(&args, &[]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .starts_with(&format!("wrote {}: ", output.display())),
        "{run:?}"
    );
    assert_eq!(
        fs::metadata(&output).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let (files, raw) = unpack(&output);
    let everything = [run.stdout.as_bytes(), run.stderr.as_bytes(), raw.as_slice()].concat();
    let text = String::from_utf8_lossy(&everything);
    for secret in rpc_secrets.iter().chain(&planted_files.secrets) {
        assert!(!text.contains(secret.as_str()), "{secret} leaked:\n{text}");
    }

    // What must be there, secrets aside.
    for path in [
        "manifest.json",
        "controller/identity-plugin-info.json",
        "controller/identity-probe.json",
        "controller/controller-capabilities.json",
        "controller/volumes.json",
        "controller/snapshots.json",
        "node/node-info.json",
        "node/node-capabilities.json",
        "config/01-exascaler.yaml",
        "config/02-csi-beegfs-config.yaml",
        "config/03-list.yaml",
        "config/04-bee8.yaml",
        "config/05-beegfs-client.conf",
        "logs/01-node.log",
        "mounts/mountinfo.txt",
        "state/listing.txt",
        "state/files/records/vol-a.json",
        "state/files/mounts/fs1/beegfs-client.conf",
    ] {
        assert!(
            files.contains_key(path),
            "{path} missing from {:?}",
            files.keys()
        );
    }
    assert!(
        !files
            .keys()
            .any(|p| p.contains("notes.txt") || p.ends_with("fs1/connauth"))
    );
    assert!(files["controller/identity-plugin-info.json"].contains("fake.csi.example.com"));
    assert!(files["controller/identity-plugin-info.json"].contains("abc123"));
    assert!(
        files["controller/volumes.json"].contains("vol-e"),
        "every page"
    );
    assert!(files["controller/snapshots.json"].contains("\"Internal\""));
    assert!(files["node/node-info.json"].contains("cannot read config"));
    assert!(files["config/01-exascaler.yaml"].contains("exaFS: 10.0.0.1@tcp:/fs"));
    assert!(files["config/02-csi-beegfs-config.yaml"].contains("connMgmtdPortTCP"));
    assert!(files["config/03-list.yaml"].contains("withheld"));
    assert!(files["config/04-bee8.yaml"].contains("withheld"));
    assert!(files["config/05-beegfs-client.conf"].contains("connClientPortUDP = 8004"));
    assert!(files["logs/01-node.log"].contains("msg=\"mounted\" volume=vol-a"));
    assert!(files["logs/01-node.log"].ends_with("level=info msg=\"still here\"\n"));
    let mounts: Vec<&str> = files["mounts/mountinfo.txt"].lines().collect();
    assert_eq!(mounts.len(), 2, "{mounts:?}");
    assert!(mounts[0].contains("/mnt/exa") && mounts[1].contains("/mnt/bee"));
    assert!(
        files["state/listing.txt"].contains("mounts/fs1/connauth"),
        "listed, not included"
    );
    assert!(files["state/files/records/vol-a.json"].contains("\"volume_id\": \"vol-a\""));

    let manifest: serde_json::Value = serde_json::from_str(&files["manifest.json"]).unwrap();
    let errors: Vec<&str> = manifest["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("controller snapshots: error: Internal:")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("node node-info: error: Internal:")),
        "{errors:?}"
    );
    let records = manifest["files"].as_array().unwrap();
    assert_eq!(
        records.len(),
        files.len() - 1,
        "every file but the manifest is described"
    );
    let record = |path: &str| records.iter().find(|r| r["path"] == path).unwrap().clone();
    assert_eq!(record("config/01-exascaler.yaml")["redacted_values"], 2);
    assert!(
        record("config/03-list.yaml")["note"]
            .as_str()
            .unwrap()
            .contains("connAuth")
    );
}

#[test]
fn an_unreachable_plugin_is_recorded_and_the_bundle_still_written() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("b.tar.gz");
    let gone = format!("unix://{}/gone.sock", dir.path().display());
    let mountinfo = write(&dir.path().join("mountinfo"), "");
    let run = pfsctl(
        &[
            "--endpoint",
            &gone,
            "--json",
            "support-bundle",
            "--output",
            output.to_str().unwrap(),
            "--mountinfo",
            mountinfo.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(run.code, 0, "{run:?}");
    let report = run.json();
    assert_eq!(report["errors"].as_array().unwrap().len(), 1, "{report}");
    assert!(
        report["errors"][0]
            .as_str()
            .unwrap()
            .starts_with("plugin connection: error: Unavailable")
    );
    let (files, _) = unpack(&output);
    assert!(files["plugin/connection.json"].contains("Unavailable"));
}

#[test]
fn an_unwritable_output_exits_1_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("no-such-dir/b.tar.gz");
    let gone = format!("unix://{}/gone.sock", dir.path().display());
    let run = pfsctl(
        &[
            "--endpoint",
            &gone,
            "support-bundle",
            "--output",
            output.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.starts_with("error: cannot create the bundle"),
        "{run:?}"
    );
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
}
