//! The real `pfsctl` binary against a fake plugin on a temporary socket:
//! what it prints in both forms, how it exits, and what it sends.

mod fake_plugin;

use fake_plugin::{FakePlugin, Options, VOLUME_IDS, pfsctl};
use k8s_adapter::proto::csi::v1::{volume_capability, volume_content_source};
use volume_capability::access_mode::Mode;

fn fake() -> FakePlugin {
    FakePlugin::start(Options {
        ready: Some(true),
        ..Default::default()
    })
}

#[test]
fn probe_prints_ready_and_exits_zero_in_both_forms() {
    let plugin = fake();
    let text = plugin.run(&["identity", "probe"]);
    assert_eq!(
        (text.code, text.stdout.as_str()),
        (0, "ready\n"),
        "{text:?}"
    );
    let json = plugin.run(&["identity", "probe", "--json"]);
    assert_eq!(json.code, 0);
    assert_eq!(json.json(), serde_json::json!({ "ready": true }));
}

#[test]
fn probe_of_a_plugin_that_is_not_ready_exits_13() {
    let plugin = FakePlugin::start(Options {
        ready: Some(false),
        ..Default::default()
    });
    let run = plugin.run(&["identity", "probe"]);
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (13, "not ready\n"),
        "{run:?}"
    );
}

#[test]
fn plugin_info_is_aligned_text_or_json() {
    let plugin = fake();
    let text = plugin.run(&["identity", "plugin-info"]);
    assert_eq!(
        text.stdout,
        "name            fake.csi.example.com\nvendor version  1.2.3\nmanifest        commit=abc123\n"
    );
    let json = plugin.run(&["--json", "identity", "plugin-info"]).json();
    assert_eq!(json["name"], "fake.csi.example.com");
    assert_eq!(json["manifest"]["commit"], "abc123");
}

#[test]
fn capabilities_of_each_service_are_listed() {
    let plugin = fake();
    let identity = plugin.run(&["identity", "capabilities"]);
    assert!(
        identity.stdout.contains("volume expansion  ONLINE"),
        "{identity:?}"
    );
    let controller = plugin.run(&["controller", "capabilities", "--json"]).json();
    assert_eq!(controller["capabilities"][1]["rpc"], "LIST_VOLUMES");
    let node = plugin.run(&["node", "capabilities"]);
    assert_eq!(node.stdout, "STAGE_UNSTAGE_VOLUME\n");
}

#[test]
fn volume_create_sends_every_flag_and_prints_the_volume() {
    let plugin = fake();
    let run = plugin.run(&[
        "volume",
        "create",
        "pvc-1",
        "--size",
        "10Gi",
        "--limit",
        "20Gi",
        "--param",
        "configName=exa1",
        "--param",
        "projectId=7",
        "--secret",
        "token=do-not-print-me",
        "--access-mode",
        "rwx",
        "--access-mode",
        "single-node-reader-only",
        "--fs-type",
        "lustre",
        "--mount-flag",
        "flock",
        "--from-snapshot",
        "snap-2",
        "--requisite-topology",
        "zone=a,rack=r1",
        "--preferred-topology",
        "zone=a",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!run.stdout.contains("do-not-print-me") && !run.stderr.contains("do-not-print-me"));
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines[0], "volume id  vol-pvc-1");
    assert_eq!(lines[1], "capacity   10Gi (10737418240 bytes)");
    assert_eq!(lines[2], "source     snapshot snap-2");
    assert_eq!(lines[3], "topology   rack=r1,zone=a");

    plugin.calls(|calls| {
        let req = &calls.create_volume[0];
        assert_eq!(req.name, "pvc-1");
        let range = req.capacity_range.unwrap();
        assert_eq!(
            (range.required_bytes, range.limit_bytes),
            (10 << 30, 20 << 30)
        );
        assert_eq!(req.parameters.len(), 2);
        assert_eq!(req.parameters["projectId"], "7");
        assert_eq!(req.secrets["token"], "do-not-print-me");
        let modes: Vec<i32> = req
            .volume_capabilities
            .iter()
            .map(|c| c.access_mode.unwrap().mode)
            .collect();
        assert_eq!(
            modes,
            [
                Mode::MultiNodeMultiWriter as i32,
                Mode::SingleNodeReaderOnly as i32
            ]
        );
        for cap in &req.volume_capabilities {
            let Some(volume_capability::AccessType::Mount(mount)) = &cap.access_type else {
                panic!("not a mount: {cap:?}");
            };
            assert_eq!(mount.fs_type, "lustre");
            assert_eq!(mount.mount_flags, ["flock"]);
        }
        let source = req.volume_content_source.clone().unwrap().r#type.unwrap();
        assert!(
            matches!(source, volume_content_source::Type::Snapshot(s) if s.snapshot_id == "snap-2")
        );
        let topology = req.accessibility_requirements.clone().unwrap();
        assert_eq!(topology.requisite[0].segments.len(), 2);
        assert_eq!(topology.preferred[0].segments["zone"], "a");
    });
}

#[test]
fn volume_create_json_mirrors_the_response() {
    let plugin = fake();
    let json = plugin
        .run(&[
            "volume",
            "create",
            "pvc-2",
            "--size",
            "1Gi",
            "--from-volume",
            "vol-a",
            "--json",
        ])
        .json();
    assert_eq!(json["volume"]["volume_id"], "vol-pvc-2");
    assert_eq!(json["volume"]["capacity_bytes"], 1 << 30);
    assert_eq!(
        json["volume"]["content_source"]["volume"]["volume_id"],
        "vol-a"
    );
    plugin.calls(|calls| {
        let caps = &calls.create_volume[0].volume_capabilities;
        assert_eq!(caps.len(), 1);
        assert_eq!(
            caps[0].access_mode.unwrap().mode,
            Mode::SingleNodeWriter as i32
        );
    });
}

#[test]
fn grpc_errors_print_code_and_message_and_exit_with_their_status() {
    let plugin = fake();
    let taken = plugin.run(&["volume", "create", "taken", "--size", "1Gi"]);
    assert_eq!(taken.code, 4);
    assert_eq!(
        taken.stderr,
        "error: AlreadyExists: volume taken exists with another size\n"
    );
    assert_eq!(taken.stdout, "");
    let missing = plugin.run(&["volume", "delete", "missing", "--json"]);
    assert_eq!(missing.code, 3);
    assert_eq!(
        missing.stderr,
        "error: NotFound: volume missing does not exist\n"
    );
}

#[test]
fn usage_errors_exit_2_before_any_call() {
    let plugin = fake();
    for args in [
        &["volume", "create", "v", "--size", "10G"][..],
        &["volume", "create", "v", "--param", "a=1", "--param", "a=2"],
        &["volume", "create", "v", "--size", "2Gi", "--limit", "1Gi"],
        &["volume", "list", "--max-entries", "-1"],
        &["--timeout", "0s", "identity", "probe"],
    ] {
        let run = plugin.run(args);
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        assert!(run.stderr.starts_with("error:"), "{run:?}");
    }
    plugin.calls(|calls| assert!(calls.create_volume.is_empty() && calls.list_volumes.is_empty()));
}

#[test]
fn list_all_follows_next_tokens_and_a_single_page_hints_at_the_next() {
    let plugin = fake();
    let all = plugin.run(&["volume", "list", "--max-entries", "2", "--all"]);
    assert_eq!(all.code, 0, "{all:?}");
    let lines: Vec<&str> = all.stdout.lines().collect();
    assert_eq!(lines[0], "VOLUME ID  CAPACITY  SOURCE  NODES   CONDITION");
    assert_eq!(lines[1], "vol-a      1Gi       -       node-1  -");
    assert_eq!(lines.len(), VOLUME_IDS.len() + 1);
    plugin.calls(|calls| {
        let tokens: Vec<&str> = calls
            .list_volumes
            .iter()
            .map(|r| r.starting_token.as_str())
            .collect();
        assert_eq!(tokens, ["", "2", "4"]);
        assert!(calls.list_volumes.iter().all(|r| r.max_entries == 2));
    });

    let page = plugin
        .run(&[
            "volume",
            "list",
            "--max-entries",
            "2",
            "--starting-token",
            "2",
            "--json",
        ])
        .json();
    let ids: Vec<&str> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["volume"]["volume_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["vol-c", "vol-d"]);
    assert_eq!(page["next_token"], "4");
    let text = plugin.run(&["volume", "list", "--max-entries", "2"]);
    assert!(
        text.stdout
            .ends_with("more entries: --starting-token 2 (or --all)\n"),
        "{text:?}"
    );
}

#[test]
fn volume_get_shows_status_and_an_unknown_volume_exits_3() {
    let plugin = fake();
    let run = plugin.run(&["volume", "get", "vol-b"]);
    assert!(
        run.stdout.contains("published on  node-1, node-2\n"),
        "{run:?}"
    );
    assert!(
        run.stdout
            .contains("condition     abnormal: MDT unreachable\n"),
        "{run:?}"
    );
    let missing = plugin.run(&["volume", "get", "vol-z"]);
    assert_eq!(
        (missing.code, missing.stderr.as_str()),
        (3, "error: NotFound: volume vol-z does not exist\n")
    );
}

/// A `grpc-timeout` header value as a duration (digits and a unit letter).
fn grpc_timeout(value: &str) -> std::time::Duration {
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().unwrap();
    let nanos_per_unit: u64 = match unit {
        "H" => 3_600_000_000_000,
        "M" => 60_000_000_000,
        "S" => 1_000_000_000,
        "m" => 1_000_000,
        "u" => 1_000,
        "n" => 1,
        other => panic!("unit {other:?}"),
    };
    std::time::Duration::from_nanos(n * nanos_per_unit)
}

#[test]
fn the_timeout_travels_as_the_grpc_deadline_of_every_call() {
    let plugin = fake();
    plugin.run(&["--timeout", "7s", "identity", "plugin-info"]);
    plugin.run(&["volume", "list", "--max-entries", "1", "--all"]);
    plugin.calls(|calls| {
        assert_eq!(calls.order.len(), 1 + VOLUME_IDS.len(), "{calls:?}");
        assert_eq!(calls.timeouts.len(), calls.order.len(), "{calls:?}");
        let first = grpc_timeout(&calls.timeouts[0]);
        assert!(first <= std::time::Duration::from_secs(7), "{first:?}");
        assert!(first > std::time::Duration::from_millis(6_900), "{first:?}");
        for later in &calls.timeouts[1..] {
            let default = grpc_timeout(later);
            assert!(default > std::time::Duration::from_secs(29), "{default:?}");
        }
    });
}

#[test]
fn a_call_slower_than_the_timeout_exits_9() {
    let plugin = fake();
    let run = plugin.run(&["volume", "get", "slow", "--timeout", "300ms"]);
    assert_eq!(run.code, 9, "{run:?}");
    assert!(
        run.stderr.starts_with("error: DeadlineExceeded: "),
        "{run:?}"
    );
}

#[test]
fn expand_validate_and_capacity_send_their_fields() {
    let plugin = fake();
    let expand = plugin
        .run(&["volume", "expand", "vol-a", "--size", "20Gi", "--json"])
        .json();
    assert_eq!(expand["capacity_bytes"], 20_i64 << 30);

    let confirmed = plugin.run(&[
        "volume",
        "validate",
        "vol-a",
        "--access-mode",
        "rwx",
        "--context",
        "exaFS=x",
    ]);
    assert_eq!(confirmed.code, 0, "{confirmed:?}");
    assert_eq!(
        confirmed.stdout,
        "confirmed  MULTI_NODE_MULTI_WRITER mount\n"
    );
    let refused = plugin.run(&[
        "volume",
        "validate",
        "vol-a",
        "--access-mode",
        "single-node-reader-only",
    ]);
    assert_eq!(refused.code, 14, "{refused:?}");
    assert_eq!(
        refused.stdout,
        "not confirmed: SINGLE_NODE_READER_ONLY is not supported\n"
    );

    let capacity = plugin.run(&[
        "capacity",
        "--param",
        "configName=exa1",
        "--topology",
        "zone=a",
        "--access-mode",
        "rwo",
    ]);
    assert_eq!(
        capacity.stdout,
        "available       1Ti (1099511627776 bytes)\nmaximum volume  100Gi (107374182400 bytes)\n"
    );

    plugin.calls(|calls| {
        assert_eq!(
            calls.expand[0].capacity_range.unwrap().required_bytes,
            20 << 30
        );
        assert_eq!(calls.validate[0].volume_context["exaFS"], "x");
        let cap = &calls.get_capacity[0];
        assert_eq!(cap.parameters["configName"], "exa1");
        assert_eq!(
            cap.accessible_topology.as_ref().unwrap().segments["zone"],
            "a"
        );
        assert_eq!(
            cap.volume_capabilities[0].access_mode.unwrap().mode,
            Mode::SingleNodeWriter as i32
        );
    });
}

#[test]
fn node_calls_carry_paths_contexts_and_read_only() {
    let plugin = fake();
    let stage = plugin.run(&[
        "node",
        "stage",
        "vol-a",
        "--staging-path",
        "/stage/a",
        "--access-mode",
        "rwx",
        "--context",
        "exaFS=10.0.0.1@tcp:/fs",
        "--publish-context",
        "p=1",
        "--secret",
        "k=v",
    ]);
    assert_eq!(
        (stage.code, stage.stdout.as_str()),
        (0, "staged volume vol-a at /stage/a\n"),
        "{stage:?}"
    );
    let publish = plugin.run(&[
        "node",
        "publish",
        "vol-a",
        "--staging-path",
        "/stage/a",
        "--target-path",
        "/pods/t",
        "--read-only",
    ]);
    assert_eq!(
        publish.stdout,
        "published volume vol-a at /pods/t read-only\n"
    );
    let json = plugin.run(&[
        "node",
        "unpublish",
        "vol-a",
        "--target-path",
        "/pods/t",
        "--json",
    ]);
    assert_eq!(json.json(), serde_json::json!({}));
    plugin.run(&["node", "unstage", "vol-a", "--staging-path", "/stage/a"]);

    plugin.calls(|calls| {
        let stage = &calls.stage[0];
        assert_eq!(stage.staging_target_path, "/stage/a");
        assert_eq!(stage.volume_context["exaFS"], "10.0.0.1@tcp:/fs");
        assert_eq!(stage.publish_context["p"], "1");
        assert_eq!(stage.secrets["k"], "v");
        assert_eq!(
            stage
                .volume_capability
                .as_ref()
                .unwrap()
                .access_mode
                .unwrap()
                .mode,
            Mode::MultiNodeMultiWriter as i32
        );
        let publish = &calls.publish[0];
        assert_eq!(
            (publish.target_path.as_str(), publish.readonly),
            ("/pods/t", true)
        );
        assert_eq!(publish.staging_target_path, "/stage/a");
        assert_eq!(calls.unpublish[0].target_path, "/pods/t");
        assert_eq!(calls.unstage[0].staging_target_path, "/stage/a");
    });
}

#[test]
fn node_info_and_stats_print_tables() {
    let plugin = fake();
    let info = plugin.run(&["node", "info"]);
    assert_eq!(
        info.stdout,
        "node id      node-1\nmax volumes  unlimited\ntopology     topology.exa.csi.ddn.com/zone=a\n"
    );
    let stats = plugin.run(&["node", "stats", "vol-a", "--volume-path", "/pods/t"]);
    assert_eq!(
        stats.stdout,
        "UNIT    TOTAL  USED  AVAILABLE\nBYTES   10Gi   4Gi   6Gi\nINODES  1000   100   900\ncondition: ok\n"
    );
    let json = plugin
        .run(&[
            "node",
            "stats",
            "vol-a",
            "--volume-path",
            "/pods/t",
            "--json",
        ])
        .json();
    assert_eq!(json["usage"][0]["used"], 4_i64 << 30);
    plugin.calls(|calls| assert_eq!(calls.stats[0].volume_path, "/pods/t"));
}

#[test]
fn snapshot_wait_polls_until_ready() {
    let plugin = FakePlugin::start(Options {
        polls_until_ready: 2,
        ..Default::default()
    });
    let created = plugin.run(&[
        "snapshot",
        "create",
        "1",
        "--source-volume",
        "vol-a",
        "--param",
        "snapshotUtility=tar",
    ]);
    assert!(
        created.stdout.contains("ready          no\n"),
        "{created:?}"
    );
    let waited = plugin.run(&[
        "snapshot",
        "wait",
        "snap-1",
        "--interval",
        "50ms",
        "--timeout",
        "10s",
    ]);
    assert_eq!(waited.code, 0, "{waited:?}");
    assert!(waited.stdout.contains("ready          yes\n"), "{waited:?}");
    assert!(
        waited
            .stdout
            .contains("created        2023-11-14T22:13:20Z\n"),
        "{waited:?}"
    );
    plugin.calls(|calls| {
        assert_eq!(
            calls.create_snapshot[0].parameters["snapshotUtility"],
            "tar"
        );
        assert_eq!(
            calls.list_snapshots.len(),
            3,
            "two not-ready answers, then ready"
        );
        assert!(
            calls
                .list_snapshots
                .iter()
                .all(|r| r.snapshot_id == "snap-1")
        );
    });
}

#[test]
fn snapshot_wait_gives_up_after_the_timeout_and_an_unknown_snapshot_is_not_found() {
    let plugin = FakePlugin::start(Options {
        polls_until_ready: usize::MAX,
        ..Default::default()
    });
    let run = plugin.run(&[
        "snapshot",
        "wait",
        "snap-1",
        "--interval",
        "100ms",
        "--timeout",
        "500ms",
    ]);
    assert_eq!(run.code, 9, "{run:?}");
    assert!(
        run.stderr.contains("snapshot snap-1 not ready after 500ms"),
        "{run:?}"
    );
    let unknown = plugin.run(&["snapshot", "wait", "snap-9", "--timeout", "2s"]);
    assert_eq!(unknown.code, 3, "{unknown:?}");
}

#[test]
fn snapshot_list_and_get_print_both_forms() {
    let plugin = fake();
    let list = plugin.run(&["snapshot", "list", "--source-volume", "vol-a"]);
    let lines: Vec<&str> = list.stdout.lines().collect();
    assert_eq!(
        lines[0],
        "SNAPSHOT ID  SOURCE VOLUME  SIZE  CREATED               READY"
    );
    assert_eq!(
        lines[2],
        "snap-2       vol-a          2Gi   2023-11-14T22:13:20Z  yes"
    );
    plugin.calls(|calls| assert_eq!(calls.list_snapshots[0].source_volume_id, "vol-a"));
    let get = plugin.run(&["snapshot", "get", "snap-2", "--json"]).json();
    assert_eq!(get["snapshot"]["ready_to_use"], true);
    assert_eq!(get["snapshot"]["creation_time"], "2023-11-14T22:13:20Z");
    let missing = plugin.run(&["snapshot", "get", "snap-7"]);
    assert_eq!(missing.code, 3);
}

#[test]
fn endpoint_comes_from_csi_endpoint_and_an_absent_socket_exits_8() {
    let plugin = fake();
    let endpoint = plugin.endpoint();
    let run = pfsctl(
        &["identity", "probe"],
        &[("CSI_ENDPOINT", endpoint.as_str())],
    );
    assert_eq!((run.code, run.stdout.as_str()), (0, "ready\n"), "{run:?}");

    let dir = tempfile::tempdir().unwrap();
    let absent = format!("unix://{}/gone.sock", dir.path().display());
    let run = pfsctl(&["--endpoint", &absent, "identity", "probe"], &[]);
    assert_eq!(run.code, 8, "{run:?}");
    assert!(run.stderr.starts_with("error: Unavailable: "), "{run:?}");
    let run = pfsctl(
        &["--endpoint", "tcp://127.0.0.1:9", "identity", "probe"],
        &[],
    );
    assert_eq!(run.code, 2, "{run:?}");
}
