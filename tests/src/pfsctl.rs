//! Running the `pfsctl` CLI client.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::binaries::{PFSCTL, bin};

/// How long one pfsctl run may take before the test fails.
const PFSCTL_TIMEOUT: Duration = Duration::from_secs(120);

/// What a pfsctl run printed and how it exited.
#[derive(Debug, Clone)]
pub struct CliOutput {
    /// The exit code (`None` when killed).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl CliOutput {
    /// Panics with both streams unless the exit code is 0; returns standard output.
    pub fn ok(&self) -> &str {
        assert_eq!(self.code, Some(0), "pfsctl failed: {self:#?}");
        &self.stdout
    }

    /// Standard output parsed as JSON (for `--json` runs).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.ok()).unwrap_or_else(|e| panic!("pfsctl JSON: {e}: {self:#?}"))
    }
}

/// Runs `pfsctl --endpoint ENDPOINT ARGS...`, killing it after two minutes.
pub fn pfsctl(endpoint: &str, args: &[&str]) -> CliOutput {
    let mut child = Command::new(bin(PFSCTL))
        .arg("--endpoint")
        .arg(endpoint)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pfsctl");
    let start = Instant::now();
    while child.try_wait().expect("wait for pfsctl").is_none() {
        if start.elapsed() > PFSCTL_TIMEOUT {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().expect("pfsctl output");
    CliOutput {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
