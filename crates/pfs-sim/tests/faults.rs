//! Fault injection through the built executable: failures, hangs, delays, refused credentials.

mod common;

use common::Sim;
use pfs_sim::faults::{self, FaultAction, FaultRule};
use pfs_sim::state::StateRoot;
use std::time::Duration;

#[test]
fn a_failure_applies_the_given_number_of_times() {
    let sim = Sim::new();
    sim.sim(&[
        "fault",
        "add",
        "--tool",
        "lctl",
        "--args-contain",
        "version",
        "--fail-exit-code",
        "7",
        "--stderr",
        "lctl: injected",
        "--times",
        "2",
    ])
    .ok();
    for _ in 0..2 {
        let out = sim.tool("lctl", &["get_param", "-n", "version"]);
        assert_eq!(out.code, Some(7));
        assert_eq!(out.stderr, "lctl: injected\n");
        assert_eq!(out.stdout, "");
    }
    let out = sim.tool("lctl", &["get_param", "-n", "version"]).ok();
    assert!(out.stdout.starts_with("2."));
    let other = sim.tool("lctl", &["list_nids"]).ok();
    assert!(!other.stdout.is_empty());
}

#[test]
fn counted_uses_are_consumed_once_under_concurrency() {
    let sim = Sim::new();
    sim.sim(&[
        "fault",
        "add",
        "--tool",
        "lctl",
        "--fail-exit-code",
        "9",
        "--times",
        "3",
    ])
    .ok();
    let codes: Vec<Option<i32>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| scope.spawn(|| sim.tool("lctl", &["list_nids"]).code))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        codes.iter().filter(|c| **c == Some(9)).count(),
        3,
        "{codes:?}"
    );
    assert_eq!(
        codes.iter().filter(|c| **c == Some(0)).count(),
        5,
        "{codes:?}"
    );
}

#[test]
fn a_hang_lasts_until_killed_and_clear_removes_it() {
    let sim = Sim::new();
    sim.sim(&[
        "fault",
        "add",
        "--tool",
        "lctl",
        "--args-contain",
        "list_nids",
        "--hang",
    ])
    .ok();
    let out = sim.tool_timeout("lctl", &["list_nids"], Duration::from_millis(1500));
    assert_eq!(
        out.code, None,
        "the hung tool must have been killed: {out:#?}"
    );
    assert!(out.elapsed >= Duration::from_millis(1500));
    sim.sim(&["fault", "clear"]).ok();
    sim.tool_timeout("lctl", &["list_nids"], Duration::from_secs(30))
        .ok();
}

#[test]
fn a_delay_slows_the_tool_down_then_it_runs_normally() {
    let sim = Sim::new();
    sim.sim(&["fault", "add", "--tool", "lctl", "--delay-ms", "700"])
        .ok();
    let out = sim.tool("lctl", &["get_param", "-n", "version"]).ok();
    assert!(out.elapsed >= Duration::from_millis(700), "{out:#?}");
    assert!(out.stdout.starts_with("2."));
}

#[test]
fn refused_credentials_look_like_each_tool() {
    let sim = Sim::new();
    for tool in ["beegfs-ctl", "beegfs", "mount"] {
        sim.sim(&["fault", "add", "--tool", tool, "--auth-failure"])
            .ok();
    }
    let conf = sim.scratch("c").join("client.conf");
    std::fs::write(
        &conf,
        "sysMgmtdHost = mgmt\nconnDisableAuthentication = true\n",
    )
    .unwrap();
    let ctl = sim.tool(
        "beegfs-ctl",
        &[
            &format!("--cfgFile={}", conf.display()),
            "--listnodes",
            "--nodetype=mgmt",
        ],
    );
    assert_eq!(ctl.code, Some(3));
    assert_eq!(ctl.stderr, "Management node communication failed: mgmt\n");
    let cli = sim.tool("beegfs", &["node", "list", "--mgmtd-addr=mgmt:8010"]);
    assert_eq!(cli.code, Some(1));
    assert!(cli.stderr.contains("code = Unauthenticated"), "{cli:#?}");
    let mount = sim.tool("mount", &["-t", "lustre", "1.2.3.4@tcp:/fs", "/mnt"]);
    assert_eq!(mount.code, Some(13));
    assert!(mount.stderr.contains("Permission denied"));
}

#[test]
fn the_rust_api_edits_the_same_file_the_tools_read() {
    let sim = Sim::new();
    let root = StateRoot::new(&sim.root);
    faults::add(
        &root,
        FaultRule {
            tool: "lfs".into(),
            args_contain: vec!["quota".into()],
            action: FaultAction::Fail {
                exit_code: 42,
                stderr: "quotactl failed".into(),
            },
            times: None,
        },
    )
    .unwrap();
    let out = sim.tool("lfs", &["quota", "-p", "1", "/"]);
    assert_eq!(out.code, Some(42));
    let listed = sim.sim(&["fault", "list"]).ok();
    let rules: Vec<FaultRule> = serde_json::from_str(&listed.stdout).unwrap();
    assert_eq!(rules, faults::load(&root).unwrap());
    faults::clear(&root).unwrap();
    assert_ne!(sim.tool("lfs", &["quota", "-p", "1", "/"]).code, Some(42));
    let calls = std::fs::read_to_string(sim.root.join("calls.log")).unwrap();
    assert!(calls.lines().any(|l| l.contains("\"exit_code\":42")));
}

#[test]
fn a_broken_fault_file_is_reported() {
    let sim = Sim::new();
    std::fs::create_dir_all(&sim.root).unwrap();
    std::fs::write(sim.root.join("faults.json"), "{not json").unwrap();
    let out = sim.tool("lctl", &["list_nids"]);
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("faults.json"), "{out:#?}");
    let bad = sim.sim(&["fault", "add", "--tool", "nosuchtool", "--hang"]);
    assert_eq!(bad.code, Some(1));
}

#[test]
fn needles_may_look_like_options() {
    let sim = Sim::new();
    sim.sim(&[
        "fault",
        "add",
        "--tool",
        "lfs",
        "--args-contain",
        "-B",
        "--fail-exit-code",
        "3",
        "--stderr",
        "-quota failed",
    ])
    .ok();
    let out = sim.tool("lfs", &["setquota", "-p", "1", "-B", "1G", "/mnt"]);
    assert_eq!(
        (out.code, out.stderr.as_str()),
        (Some(3), "-quota failed\n")
    );
    let other = sim.tool("lfs", &["setquota", "-p", "1", "-I", "10", "/mnt"]);
    assert_eq!(other.code, Some(1), "{other:#?}");
}
