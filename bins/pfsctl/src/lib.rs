//! `pfsctl`: a command-line CSI client for troubleshooting a running
//! driver, and the support-bundle collector.
//!
//! Module map:
//! - [`cli`]: the command line (clap).
//! - [`parse`]: flag value parsers (sizes, durations, `key=value`, topology).
//! - [`requests`]: CSI requests built from the flags.
//! - [`client`]: the socket connection and unary calls bounded by `--timeout`.
//! - [`commands`]: one function per command group, calling the plugin.
//! - [`render`]: the JSON and text output of every response.
//! - [`table`]: aligned columns and field lists.
//! - [`bundle`]: `support-bundle`, with its redaction rules and archive writer.
//! - [`exit`]: exit statuses, the error enum, the `error:` line.
//!
//! Only `k8s-adapter` is used from the workspace: the client talks CSI over
//! the socket like any other CSI client and knows nothing of the backends.

pub mod bundle;
pub mod cli;
pub mod client;
pub mod commands;
pub mod exit;
pub mod parse;
pub mod render;
pub mod requests;
pub mod table;

use std::{io::Write, process::ExitCode};

use clap::Parser;

/// Parses the command line, runs the command and prints its output; the
/// returned code is the process exit status.
pub fn main_entry() -> ExitCode {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return exit::ExitStatus::Failure.into();
        }
    };
    match runtime.block_on(commands::run(&cli)) {
        Ok(output) => {
            let text = output.rendered.text(cli.global.json);
            // A closed pipe (`pfsctl volume list | head`) is not an error.
            let mut stdout = std::io::stdout().lock();
            let _ = stdout
                .write_all(text.as_bytes())
                .and_then(|()| stdout.flush());
            output.status.into()
        }
        Err(error) => {
            eprintln!("{}", error.line());
            error.exit_status().into()
        }
    }
}
