//! Linux implementations of the ports: mounts through syscalls, commands through tokio.
//!
//! - [`command::TokioCommandRunner`]: the [`crate::ports::CommandRunner`].
//! - [`mountinfo`]: the `/proc/self/mountinfo` parser and reader.

pub mod command;
pub mod mountinfo;

pub use command::TokioCommandRunner;
