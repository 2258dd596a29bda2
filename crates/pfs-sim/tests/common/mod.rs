//! Helpers of the integration tests: a state root with the tools installed, a private mount
//! namespace per test, unmount-on-drop guards and commands with a timeout.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The simulator executable under test.
pub const SIM: &str = env!("CARGO_BIN_EXE_pfs-csi-sim");

/// How long any single tool invocation may take in the tests.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// Fails clearly unless running as root (the tests make real mounts).
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the pfs-sim integration tests make real bind mounts and need root (run them as root or in a privileged container)"
    );
}

/// Moves the calling test thread (and the processes it starts) into a private mount namespace,
/// so mounts never reach the host's mount table; they vanish with the namespace.
pub fn private_mount_namespace() {
    require_root();
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).expect("unshare(CLONE_NEWNS)");
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .expect("make / rprivate");
}

/// Unmounts (lazily) on drop, so a failing test leaves nothing mounted.
pub struct MountGuard(pub PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Whether `path` is a mount point in this thread's mount namespace.
pub fn is_mount_point(path: &Path) -> bool {
    let canon = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let tid = nix::unistd::gettid();
    let info =
        std::fs::read_to_string(format!("/proc/self/task/{tid}/mountinfo")).unwrap_or_default();
    info.lines().any(|line| {
        line.split(' ')
            .nth(4)
            .map(|mp| mp.replace("\\040", " ") == canon.to_string_lossy())
            .unwrap_or(false)
    })
}

/// The finished result of a tool run.
#[derive(Debug)]
pub struct Run {
    /// Exit code (`None` when killed).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// How long it took.
    pub elapsed: Duration,
}

impl Run {
    /// Panics with the output unless the exit code is 0.
    pub fn ok(self) -> Run {
        assert_eq!(self.code, Some(0), "command failed: {self:#?}");
        self
    }
}

/// Runs a command, killing it after `timeout`.
pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Run {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    loop {
        if let Some(_status) = child.try_wait().expect("wait") {
            break;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().expect("collect output");
    Run {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        elapsed: start.elapsed(),
    }
}

/// A state root with the tools installed as symlinks.
pub struct Sim {
    /// Holds everything of the test.
    pub dir: tempfile::TempDir,
    /// `PFS_SIM_ROOT`.
    pub root: PathBuf,
    /// Where `install-tools` put the links.
    pub bin: PathBuf,
}

impl Sim {
    /// A fresh state root in a temporary directory.
    pub fn new() -> Sim {
        let dir = tempfile::tempdir().expect("tempdir");
        Sim::in_dir(dir)
    }

    /// A state root inside an existing temporary directory.
    pub fn in_dir(dir: tempfile::TempDir) -> Sim {
        let root = dir.path().join("state");
        let bin = dir.path().join("bin");
        let sim = Sim { dir, root, bin };
        let out = sim.sim(&["install-tools", sim.bin.to_str().unwrap()]);
        assert_eq!(out.code, Some(0), "install-tools: {out:#?}");
        sim
    }

    /// A directory for mount points and scratch files.
    pub fn scratch(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::create_dir_all(&path).unwrap();
        path
    }

    /// Runs `pfs-csi-sim ARGS`.
    pub fn sim(&self, args: &[&str]) -> Run {
        let mut cmd = Command::new(SIM);
        cmd.args(args).env("PFS_SIM_ROOT", &self.root);
        run_with_timeout(cmd, TIMEOUT)
    }

    /// Runs a tool through its installed symlink.
    pub fn tool(&self, tool: &str, args: &[&str]) -> Run {
        self.tool_timeout(tool, args, TIMEOUT)
    }

    /// Runs a tool through its symlink with a given timeout.
    pub fn tool_timeout(&self, tool: &str, args: &[&str], timeout: Duration) -> Run {
        let mut cmd = Command::new(self.bin.join(tool));
        cmd.args(args)
            .env("PFS_SIM_ROOT", &self.root)
            .env_remove("BEEGFS_MGMTD_ADDR");
        run_with_timeout(cmd, timeout)
    }

    /// Parses the JSON printed by `create-fs`.
    pub fn create_fs(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["create-fs"];
        all.extend_from_slice(args);
        let out = self.sim(&all).ok();
        serde_json::from_str(out.stdout.trim()).expect("create-fs prints JSON")
    }
}
