//! Linux implementations of the ports: mounts through syscalls, commands through tokio.
//!
//! - [`command::TokioCommandRunner`]: the [`crate::ports::CommandRunner`].
//! - [`mountinfo`]: the `/proc/self/mountinfo` parser and reader.
//! - [`mounter::LinuxMounter`]: the [`crate::ports::Mounter`].
//! - [`stuck_paths::StuckPaths`]: paths whose blocking call did not return in time.

pub mod command;
pub mod mounter;
pub mod mountinfo;
pub mod stuck_paths;

pub use command::TokioCommandRunner;
pub use mounter::LinuxMounter;
pub use stuck_paths::StuckPaths;
