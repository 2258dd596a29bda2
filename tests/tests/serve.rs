//! `pfs-csi-sim serve` itself: what it refuses, how it stops, and what it leaves behind.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use pfs_csi_tests::binaries::{SIM, bin};
use pfs_csi_tests::csi::{
    GIB, create_request, create_volume_settled, publish_request, rwx, stage_request,
};
use pfs_csi_tests::mounts::{mounted_below, require_root, unmount_under};
use pfs_csi_tests::output::Captured;
use pfs_csi_tests::serve::spawn_kept;

/// A temp dir that is unmounted and removed on drop, whatever the test did.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        require_root();
        Scratch(
            tempfile::Builder::new()
                .prefix("pfs-csi-tests-")
                .tempdir()
                .unwrap()
                .keep(),
        )
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if unmount_under(&self.0).is_ok_and(|left| left.is_empty()) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A serve process started by hand, killed on drop.
struct Running {
    child: Child,
    stdout: Captured,
    stderr: Captured,
    _keeper: std::sync::mpsc::Sender<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(state_dir: &Path, sockets: &Path, extra: &[&str]) -> Running {
    let mut command = Command::new(bin(SIM));
    command
        .arg("serve")
        .arg("--filesystem=lustre")
        .arg(format!("--state-dir={}", state_dir.display()))
        .arg(format!(
            "--controller-endpoint=unix://{}",
            sockets.join("c.sock").display()
        ))
        .arg(format!(
            "--node-endpoint=unix://{}",
            sockets.join("n.sock").display()
        ))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (mut child, keeper) = spawn_kept(command);
    Running {
        stdout: Captured::read_from(child.stdout.take().unwrap()),
        stderr: Captured::read_from(child.stderr.take().unwrap()),
        child,
        _keeper: keeper,
    }
}

fn wait_exit(running: &mut Running, timeout: Duration) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = running.child.try_wait().unwrap() {
            // Everything it wrote is read before the test looks at it.
            running.stdout.wait_closed(Duration::from_secs(10));
            running.stderr.wait_closed(Duration::from_secs(10));
            return status.code();
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_ready(running: &Running) {
    assert!(
        running
            .stdout
            .wait_for_line(pfs_sim::serve::READY_LINE, Duration::from_secs(180)),
        "serve not ready:\n{}\n{}",
        running.stdout.text(),
        running.stderr.tail(40)
    );
}

/// The direct children of `pid`.
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|stat| {
                    stat.rsplit_once(')')
                        .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                        .and_then(|p| p.parse::<u32>().ok())
                })
                == Some(pid)
        })
        .collect()
}

#[tokio::test]
async fn sigint_unmounts_everything_and_removes_only_what_serve_made() {
    let scratch = Scratch::new();
    let state = scratch.0.join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("keep.txt"), b"the user's").unwrap();
    let mut running = start(&state, &scratch.0, &[]);
    wait_ready(&running);
    assert!(
        running
            .stdout
            .text()
            .contains("CreateVolume parameters: none needed")
    );

    // Leave a volume staged and published: serve must unmount it.
    let mut controller = pfs_csi_tests::csi::controller(&scratch.0.join("c.sock")).await;
    let mut node = pfs_csi_tests::csi::node(&scratch.0.join("n.sock")).await;
    let volume = create_volume_settled(&mut controller, create_request("left-mounted", GIB, &[]))
        .await
        .unwrap();
    let staging = state.join("pods/staging");
    let target = state.join("pods/target");
    node.node_stage_volume(stage_request(&volume, &staging, rwx()))
        .await
        .unwrap();
    node.node_publish_volume(publish_request(&volume, &staging, &target, rwx(), false))
        .await
        .unwrap();
    assert!(
        mounted_below(&state).len() >= 3,
        "{:?}",
        mounted_below(&state)
    );
    drop((controller, node));

    kill(Pid::from_raw(running.child.id() as i32), Signal::SIGINT).unwrap();
    let code = wait_exit(&mut running, Duration::from_secs(60));
    assert_eq!(code, Some(0), "{}", running.stderr.tail(20));
    assert!(
        mounted_below(&state).is_empty(),
        "{:?}",
        mounted_below(&state)
    );
    assert!(
        running
            .stderr
            .text()
            .contains("stopped on SIGINT; cleaned up")
    );
    let mut left: Vec<String> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    // The user's file stays; so does the staging tree the test made (not serve's).
    assert_eq!(left, vec!["keep.txt".to_string(), "pods".to_string()]);
    assert!(!scratch.0.join("c.sock").exists() && !scratch.0.join("n.sock").exists());
}

#[tokio::test]
async fn a_state_dir_from_an_earlier_run_is_refused_and_left_alone() {
    let scratch = Scratch::new();
    let state = scratch.0.join("state");
    std::fs::create_dir_all(state.join("sim")).unwrap();
    std::fs::write(state.join("sim/precious"), b"x").unwrap();
    let mut running = start(&state, &scratch.0, &[]);
    let code = wait_exit(&mut running, Duration::from_secs(60));
    assert_eq!(code, Some(1));
    assert!(
        running.stderr.text().contains("earlier run"),
        "{}",
        running.stderr.text()
    );
    assert!(state.join("sim/precious").exists());
}

#[tokio::test]
async fn missing_plugin_binaries_are_named_with_how_to_build_them() {
    let scratch = Scratch::new();
    let empty = scratch.0.join("no-binaries");
    std::fs::create_dir_all(&empty).unwrap();
    let state = scratch.0.join("state");
    let mut running = start(
        &state,
        &scratch.0,
        &[&format!("--bin-dir={}", empty.display())],
    );
    let code = wait_exit(&mut running, Duration::from_secs(60));
    assert_eq!(code, Some(1));
    let err = running.stderr.text();
    assert!(
        err.contains("pfs-csi-controller") && err.contains("cargo build"),
        "{err}"
    );
    assert!(!state.exists(), "nothing is made before the checks pass");
}

#[tokio::test]
async fn a_plugin_that_dies_stops_serve_with_an_error_and_a_clean_state_dir() {
    let scratch = Scratch::new();
    let state = scratch.0.join("state");
    let mut running = start(&state, &scratch.0, &[]);
    wait_ready(&running);
    let serve_pid = running.child.id();
    let plugins = children(serve_pid);
    let node_pid = plugins
        .iter()
        .copied()
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .unwrap_or_default()
                .contains("pfs-csi-node")
        })
        .expect("the node plugin is a child of serve");
    kill(Pid::from_raw(node_pid as i32), Signal::SIGKILL).unwrap();
    let code = wait_exit(&mut running, Duration::from_secs(60));
    assert_eq!(code, Some(1));
    assert!(
        running
            .stderr
            .text()
            .contains("the node plugin exited unexpectedly"),
        "{}",
        running.stderr.tail(10)
    );
    assert!(
        !state.exists(),
        "serve made the state dir, so it removes it"
    );
    for pid in plugins {
        let gone = !Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z "));
        assert!(gone, "plugin {pid} outlived serve");
    }
}
