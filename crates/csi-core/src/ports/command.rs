//! Running external programs: every `mount`, `lfs`, `beegfs-ctl`, `tar` call goes through here.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::{CommandFailure, Error, Result};

/// One external command: a program and its arguments (never a shell line), run with a timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The program: an absolute path, or a name looked up in `PATH`.
    pub program: PathBuf,
    /// Its arguments. Never put a secret here: pass secrets in files.
    pub args: Vec<OsString>,
    /// Extra environment variables.
    pub env: Vec<(OsString, OsString)>,
    /// How long it may run before it is killed.
    pub timeout: Duration,
}

impl Command {
    /// A command running `program` with `timeout`.
    pub fn new(program: impl Into<PathBuf>, timeout: Duration) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            timeout,
        }
    }

    /// Appends one argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Appends arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The command line for logs and error messages.
    pub fn display(&self) -> String {
        let mut s = self.program.display().to_string();
        for a in &self.args {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    }
}

/// What a finished command printed and how it exited.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandOutput {
    /// Exit code; `None` when killed by a signal.
    pub status: Option<i32>,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

impl CommandOutput {
    /// Whether the command exited with status 0.
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }

    /// Turns a non-zero exit into [`Error::Command`] for `program`.
    pub fn check(self, program: &str) -> Result<Self> {
        if self.success() {
            return Ok(self);
        }
        let mut stderr = self.stderr.trim().to_string();
        if stderr.is_empty() {
            stderr = self.stdout.trim().to_string();
        }
        if stderr.len() > 2048 {
            let cut = (0..=2048)
                .rev()
                .find(|&i| stderr.is_char_boundary(i))
                .unwrap_or(0);
            stderr.truncate(cut);
            stderr.push_str("...");
        }
        Err(Error::Command {
            program: program.to_string(),
            failure: CommandFailure::Exit(self.status),
            stderr,
        })
    }
}

/// Runs external commands.
///
/// A run that cannot start is [`CommandFailure::Spawn`]; one that outlives its timeout is
/// killed (with its process group) and reported as [`CommandFailure::Timeout`]. A non-zero
/// exit is *not* an error here: the output is returned so callers can read the tool's
/// message; use [`CommandOutput::check`] to turn it into one.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait CommandRunner: Send + Sync {
    /// Runs `command` to completion or timeout.
    async fn run(&self, command: &Command) -> Result<CommandOutput>;
}
