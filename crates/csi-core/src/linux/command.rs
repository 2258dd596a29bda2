//! [`CommandRunner`] on tokio::process: argv only, captured and capped output, a process
//! group per command so a timeout kills everything the command started.

use std::process::Stdio;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tracing::{debug, warn};

use crate::error::{CommandFailure, Error, Result};
use crate::ports::{Command, CommandOutput, CommandRunner};

/// Default cap of captured standard output and of standard error, each.
pub const DEFAULT_OUTPUT_CAP: usize = 4 << 20;

/// How long a killed command may take to be reaped before it is left to tokio's reaper
/// (a process in uninterruptible sleep on a hung filesystem dies only when the I/O returns).
const REAP_GRACE: Duration = Duration::from_secs(5);

/// Runs commands with tokio::process.
///
/// Each command gets stdin from `/dev/null`, its own process group, and at most
/// [`DEFAULT_OUTPUT_CAP`] bytes of stdout and of stderr kept (the rest is read and
/// dropped so the command never blocks on a full pipe). On timeout, or when the calling
/// future is dropped (a cancelled RPC), the whole process group is killed with SIGKILL.
#[derive(Debug, Clone)]
pub struct TokioCommandRunner {
    output_cap: usize,
}

impl Default for TokioCommandRunner {
    fn default() -> Self {
        Self::new()
    }
}

impl TokioCommandRunner {
    /// A runner keeping up to [`DEFAULT_OUTPUT_CAP`] bytes of each output stream.
    pub fn new() -> Self {
        Self {
            output_cap: DEFAULT_OUTPUT_CAP,
        }
    }

    /// A runner keeping up to `bytes` of each output stream.
    pub fn with_output_cap(bytes: usize) -> Self {
        Self { output_cap: bytes }
    }
}

/// Kills the process group when dropped while armed: covers a timeout and a caller that
/// stops polling the future (tokio's `kill_on_drop` only kills the direct child).
struct GroupKiller {
    pgid: Option<Pid>,
}

impl GroupKiller {
    fn kill(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            // ESRCH: the group is already gone.
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }

    fn disarm(&mut self) {
        self.pgid = None;
    }
}

impl Drop for GroupKiller {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads `reader` to its end, keeping the first `cap` bytes in `buf`.
async fn read_capped(
    reader: Option<impl AsyncRead + Unpin>,
    buf: &mut Vec<u8>,
    cap: usize,
) -> std::io::Result<()> {
    let Some(mut reader) = reader else {
        return Ok(());
    };
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        let room = cap.saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..n.min(room)]);
    }
}

fn program_name(command: &Command) -> String {
    command.program.display().to_string()
}

#[async_trait]
impl CommandRunner for TokioCommandRunner {
    async fn run(&self, command: &Command) -> Result<CommandOutput> {
        let started = Instant::now();
        let program = program_name(command);
        let mut cmd = tokio::process::Command::new(&command.program);
        cmd.args(&command.args)
            .envs(command.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| {
            debug!(command = %command.display(), error = %e, "command could not start");
            Error::Command {
                program: program.clone(),
                failure: CommandFailure::Spawn(e.to_string()),
                stderr: String::new(),
            }
        })?;
        let mut killer = GroupKiller {
            pgid: child.id().map(|id| Pid::from_raw(id as i32)),
        };
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let (out_pipe, err_pipe) = (child.stdout.take(), child.stderr.take());
        let cap = self.output_cap;
        let finished = tokio::time::timeout(command.timeout, async {
            let (out, err) = tokio::join!(
                read_capped(out_pipe, &mut stdout, cap),
                read_capped(err_pipe, &mut stderr, cap)
            );
            out.and(err)?;
            child.wait().await
        })
        .await;
        let elapsed = started.elapsed();
        match finished {
            Ok(Ok(status)) => {
                killer.disarm();
                let output = CommandOutput {
                    status: status.code(),
                    stdout: String::from_utf8_lossy(&stdout).into_owned(),
                    stderr: String::from_utf8_lossy(&stderr).into_owned(),
                };
                debug!(
                    command = %command.display(),
                    env_keys = ?command.env.iter().map(|(k, _)| k).collect::<Vec<_>>(),
                    status = ?output.status,
                    duration_ms = elapsed.as_millis() as u64,
                    "command finished"
                );
                Ok(output)
            }
            Ok(Err(e)) => {
                killer.kill();
                reap(&mut child, command).await;
                Err(Error::Internal(format!(
                    "{}: reading its output failed: {e}",
                    command.display()
                )))
            }
            Err(_) => {
                killer.kill();
                reap(&mut child, command).await;
                warn!(
                    command = %command.display(),
                    timeout_ms = command.timeout.as_millis() as u64,
                    "command timed out; its process group was killed"
                );
                Err(Error::Command {
                    program,
                    failure: CommandFailure::Timeout(command.timeout),
                    stderr: String::from_utf8_lossy(&stderr).trim().to_string(),
                })
            }
        }
    }
}

/// Waits a little for a killed child so it leaves no zombie; a child that cannot die yet
/// (stuck in the kernel) is left to tokio's orphan reaper when dropped.
async fn reap(child: &mut tokio::process::Child, command: &Command) {
    if tokio::time::timeout(REAP_GRACE, child.wait())
        .await
        .is_err()
    {
        warn!(command = %command.display(), "killed command has not exited yet; it will be reaped when it does");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    fn sh(script: &str, timeout: Duration) -> Command {
        Command::new("/bin/sh", timeout).arg("-c").arg(script)
    }

    #[tokio::test]
    async fn success_captures_both_streams_and_env() {
        let out = TokioCommandRunner::new()
            .run(&sh("echo out-$X; echo err >&2", Duration::from_secs(10)).env("X", "42"))
            .await
            .unwrap();
        assert!(out.success());
        assert_eq!(out.stdout, "out-42\n");
        assert_eq!(out.stderr, "err\n");
    }

    #[tokio::test]
    async fn stdin_is_null() {
        let out = TokioCommandRunner::new()
            .run(&sh("cat; echo done", Duration::from_secs(10)))
            .await
            .unwrap();
        assert_eq!(out.stdout, "done\n");
    }

    #[tokio::test]
    async fn a_non_zero_exit_is_returned_not_an_error() {
        let out = TokioCommandRunner::new()
            .run(&sh("echo bad >&2; exit 3", Duration::from_secs(10)))
            .await
            .unwrap();
        assert_eq!(out.status, Some(3));
        let err = out.check("sh").unwrap_err();
        assert_eq!(err.code(), ErrorCode::Internal);
        assert!(err.to_string().contains("exit status 3"), "{err}");
        assert!(err.to_string().contains("bad"), "{err}");
    }

    #[tokio::test]
    async fn output_beyond_the_cap_is_dropped_without_blocking_the_command() {
        let out = TokioCommandRunner::with_output_cap(1000)
            .run(&sh(
                "head -c 3000000 /dev/zero | tr '\\0' x; echo end >&2",
                Duration::from_secs(20),
            ))
            .await
            .unwrap();
        assert!(out.success());
        assert_eq!(out.stdout.len(), 1000);
        assert_eq!(out.stderr, "end\n");
    }

    #[tokio::test]
    async fn a_missing_program_is_a_spawn_failure() {
        let err = TokioCommandRunner::new()
            .run(&Command::new(
                "/nonexistent/pfs-csi-no-such-tool",
                Duration::from_secs(1),
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::FailedPrecondition);
        match err {
            Error::Command {
                failure: CommandFailure::Spawn(msg),
                program,
                ..
            } => {
                assert!(program.contains("pfs-csi-no-such-tool"));
                assert!(msg.contains("No such file"), "{msg}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    /// Whether `pid` is gone or a zombie nobody reaped yet (dead either way).
    fn is_dead(pid: i32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit_once(") ")
                .map(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X'))
                .unwrap_or(false),
        }
    }

    #[tokio::test]
    async fn a_timeout_kills_the_whole_process_group() {
        let started = Instant::now();
        let err = TokioCommandRunner::new()
            .run(&sh(
                "sleep 30 & echo $! >&2; wait",
                Duration::from_millis(200),
            ))
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(err.code(), ErrorCode::DeadlineExceeded);
        let Error::Command {
            failure: CommandFailure::Timeout(t),
            stderr,
            ..
        } = err
        else {
            panic!("unexpected {err:?}");
        };
        assert_eq!(t, Duration::from_millis(200));
        let grandchild: i32 = stderr.trim().parse().expect("the shell printed its child");
        let deadline = Instant::now() + Duration::from_secs(3);
        while !is_dead(grandchild) {
            assert!(
                Instant::now() < deadline,
                "grandchild {grandchild} survived the timeout"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn dropping_the_future_kills_the_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let runner = TokioCommandRunner::new();
        let command = sh(&script, Duration::from_secs(60));
        let run = runner.run(&command);
        // Poll the command until the grandchild exists, then drop it (a cancelled RPC).
        let cancelled = tokio::time::timeout(Duration::from_secs(10), async {
            tokio::pin!(run);
            loop {
                tokio::select! {
                    _ = &mut run => panic!("the command finished early"),
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {
                        if std::fs::read_to_string(&pidfile).is_ok_and(|s| s.ends_with('\n')) {
                            break;
                        }
                    }
                }
            }
        })
        .await;
        assert!(cancelled.is_ok(), "the grandchild never started");
        let grandchild: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(3);
        while !is_dead(grandchild) {
            assert!(
                Instant::now() < deadline,
                "grandchild {grandchild} survived"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
