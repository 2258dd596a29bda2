//! Linux implementations of the ports: mounts through syscalls, commands through tokio.
