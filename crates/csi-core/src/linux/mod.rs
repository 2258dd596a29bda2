//! Linux implementations of the ports: mounts through syscalls, commands through tokio.
//!
//! - [`command::TokioCommandRunner`]: the [`crate::ports::CommandRunner`].

pub mod command;

pub use command::TokioCommandRunner;
