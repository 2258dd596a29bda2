//! Test harness: starts the real binaries on temporary sockets.
