//! The simulated tools: dispatch, fault application and the call log.

pub mod beegfs_cli;
pub mod beegfs_common;
pub mod beegfs_ctl;
pub mod dtar;
pub mod getopt;
pub mod lctl;
pub mod lfs;
pub mod mount;
pub mod table;
pub mod umount;

use crate::faults::{self, FaultAction};
use crate::state::StateRoot;
use std::io::Write;

/// Where a tool writes: its standard output and standard error.
pub struct ToolIo<'a> {
    /// Standard output.
    pub out: &'a mut dyn Write,
    /// Standard error.
    pub err: &'a mut dyn Write,
}

impl ToolIo<'_> {
    /// Writes text to standard output (write errors are ignored, as `printf` does).
    pub fn out(&mut self, text: &str) {
        let _ = self.out.write_all(text.as_bytes());
    }

    /// Writes text to standard error.
    pub fn err(&mut self, text: &str) {
        let _ = self.err.write_all(text.as_bytes());
    }
}

/// The simulated tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// `mount` (types `lustre` and `beegfs`).
    Mount,
    /// `umount`.
    Umount,
    /// Lustre `lfs`.
    Lfs,
    /// Lustre `lctl`.
    Lctl,
    /// mpifileutils `dtar`.
    Dtar,
    /// BeeGFS 7 `beegfs-ctl`.
    BeegfsCtl,
    /// BeeGFS 8 `beegfs`.
    Beegfs,
}

impl Tool {
    /// Every tool, in the order `install-tools` links them.
    pub const ALL: [Tool; 7] = [
        Tool::Mount,
        Tool::Umount,
        Tool::Lfs,
        Tool::Lctl,
        Tool::Dtar,
        Tool::BeegfsCtl,
        Tool::Beegfs,
    ];

    /// The executable name of the real tool.
    pub fn name(self) -> &'static str {
        match self {
            Tool::Mount => "mount",
            Tool::Umount => "umount",
            Tool::Lfs => "lfs",
            Tool::Lctl => "lctl",
            Tool::Dtar => "dtar",
            Tool::BeegfsCtl => "beegfs-ctl",
            Tool::Beegfs => "beegfs",
        }
    }

    /// The tool with this executable name.
    pub fn from_name(name: &str) -> Option<Tool> {
        Tool::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// Runs a tool with its arguments (without the program name) against a state root; returns the
/// exit code. Faults are applied first; every invocation is appended to the call log.
pub fn run(tool: Tool, args: &[String], root: &StateRoot, io: &mut ToolIo<'_>) -> i32 {
    let code = match faults::take_matching(root, tool.name(), args) {
        Err(e) => {
            io.err(&format!("{}: simulator fault file: {e}\n", tool.name()));
            1
        }
        Ok(Some(FaultAction::Hang)) => loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        },
        Ok(Some(FaultAction::Fail { exit_code, stderr })) => {
            io.err(&stderr);
            if !stderr.is_empty() && !stderr.ends_with('\n') {
                io.err("\n");
            }
            exit_code
        }
        Ok(Some(FaultAction::AuthFailure)) => auth_failure(tool, args, io),
        Ok(Some(FaultAction::DelayMs(ms))) => {
            std::thread::sleep(std::time::Duration::from_millis(ms));
            dispatch(tool, args, root, io)
        }
        Ok(None) => dispatch(tool, args, root, io),
    };
    log_call(root, tool, args, code);
    code
}

fn dispatch(tool: Tool, args: &[String], root: &StateRoot, io: &mut ToolIo<'_>) -> i32 {
    match tool {
        Tool::Mount => mount::run(args, root, io),
        Tool::Umount => umount::run(args, root, io),
        Tool::Lfs => lfs::run(args, root, io),
        Tool::Lctl => lctl::run(args, io),
        Tool::Dtar => dtar::run(args, io),
        Tool::BeegfsCtl => beegfs_ctl::run(args, root, io),
        Tool::Beegfs => beegfs_cli::run(args, root, io),
    }
}

/// What each tool prints when its credentials are refused.
fn auth_failure(tool: Tool, args: &[String], io: &mut ToolIo<'_>) -> i32 {
    match tool {
        Tool::Mount => mount::auth_failure(args, io),
        Tool::Umount | Tool::Dtar => {
            io.err(&format!("{}: Permission denied\n", tool.name()));
            13
        }
        Tool::Lfs | Tool::Lctl => {
            io.err(&format!("{}: Permission denied\n", tool.name()));
            1
        }
        Tool::BeegfsCtl => beegfs_ctl::auth_failure(args, io),
        Tool::Beegfs => beegfs_cli::auth_failure(args, io),
    }
}

fn log_call(root: &StateRoot, tool: Tool, args: &[String], code: i32) {
    let line = serde_json::json!({
        "tool": tool.name(),
        "args": args,
        "exit_code": code,
        "pid": std::process::id(),
    });
    append_line(&root.calls_log(), &line.to_string());
}

/// Appends a line to the simulated kernel log (`<root>/dmesg.log`).
pub fn kernel_log(root: &StateRoot, line: &str) {
    append_line(&root.dmesg_log(), line);
}

/// Appends `line` and a newline to `path` in one write, so lines of tools running at
/// once never interleave (a formatting write would issue one write per fragment).
fn append_line(path: &std::path::Path, line: &str) {
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = file.write_all(format!("{line}\n").as_bytes());
    }
}
