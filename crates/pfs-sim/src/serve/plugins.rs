//! The controller and node plugin processes: started with the parent-death signal set, probed
//! until ready, stopped with SIGTERM and then SIGKILL.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use k8s_adapter::proto::csi::v1::ProbeRequest;
use k8s_adapter::proto::csi::v1::identity_client::IdentityClient;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use crate::error::{Result, SimError};

/// How long one probe attempt may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between probe attempts.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);

/// One running plugin binary.
pub struct Plugin {
    /// `controller` or `node`.
    pub role: &'static str,
    /// Its unix socket.
    pub socket: PathBuf,
    child: Child,
}

impl Plugin {
    /// Starts `program` with `args`, `PFS_SIM_ROOT=sim_root`, standard output and error
    /// shared with this process. The child gets SIGTERM if this process dies first.
    pub fn spawn(
        role: &'static str,
        program: &Path,
        args: &[String],
        sim_root: &Path,
        socket: PathBuf,
    ) -> Result<Self> {
        let parent = std::process::id();
        let mut command = Command::new(program);
        command
            .args(args)
            .env(crate::state::ROOT_ENV, sim_root)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        // SAFETY: only async-signal-safe calls (prctl, getppid, kill) run between fork and exec.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died before the signal was armed.
                if libc::getppid() as u32 != parent {
                    libc::kill(libc::getpid(), libc::SIGTERM);
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .map_err(|e| SimError::Serve(format!("starting {}: {e}", program.display())))?;
        Ok(Self {
            role,
            socket,
            child,
        })
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Waits for the process to exit.
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait().await
    }

    /// The exit status if the process has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Whether the plugin answers Probe with ready (or leaves `ready` unset).
    pub async fn probe(&self) -> bool {
        let attempt = async {
            let channel = k8s_adapter::socket_client::connect(&self.socket, PROBE_TIMEOUT)
                .await
                .ok()?;
            let answer = IdentityClient::new(channel)
                .probe(ProbeRequest {})
                .await
                .ok()?;
            Some(answer.into_inner().ready != Some(false))
        };
        tokio::time::timeout(PROBE_TIMEOUT, attempt)
            .await
            .ok()
            .flatten()
            .unwrap_or(false)
    }

    /// Probes until ready; an error when the process exits first or `deadline` passes.
    pub async fn wait_ready(&mut self, deadline: Instant) -> Result<()> {
        loop {
            if let Some(status) = self.try_exit() {
                return Err(SimError::Serve(format!(
                    "the {} plugin exited during start-up ({status}); see its log above",
                    self.role
                )));
            }
            if self.socket.exists() && self.probe().await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(SimError::Serve(format!(
                    "the {} plugin did not answer Probe with ready on {} in time",
                    self.role,
                    self.socket.display()
                )));
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    }

    /// SIGTERM, up to `grace` for a clean exit, then SIGKILL. Returns how it ended.
    pub async fn stop(&mut self, grace: Duration) -> String {
        if let Some(status) = self.try_exit() {
            return format!("had already exited ({status})");
        }
        if let Some(pid) = self.pid() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(Ok(status)) => format!("stopped ({status})"),
            Ok(Err(e)) => format!("could not be waited for: {e}"),
            Err(_) => {
                let _ = self.child.kill().await;
                format!("killed after {}s without exiting", grace.as_secs())
            }
        }
    }
}
