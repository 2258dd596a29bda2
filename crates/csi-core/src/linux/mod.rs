//! Linux implementations of the ports: mounts through syscalls, commands through tokio.
//!
//! - [`command::TokioCommandRunner`]: the [`crate::ports::CommandRunner`].
//! - [`mountinfo`]: the `/proc/self/mountinfo` parser and reader.
//! - [`mounter::LinuxMounter`]: the [`crate::ports::Mounter`].

pub mod command;
pub mod mounter;
pub mod mountinfo;

pub use command::TokioCommandRunner;
pub use mounter::LinuxMounter;
