//! `shutdown_signal` completes on SIGTERM and on SIGINT, and not before.
//! Kept in its own test binary with a single test: signals are
//! process-wide, and once the handlers are installed the process no longer
//! dies on them, which no other test should depend on.

use std::time::Duration;

use k8s_adapter::server::shutdown_signal;
use nix::sys::signal::{Signal, raise};

const LIMIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn shutdown_signal_waits_for_sigterm_or_sigint() {
    let quiet = shutdown_signal().unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), quiet)
            .await
            .is_err(),
        "completed without a signal"
    );

    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        let shutdown = shutdown_signal().unwrap();
        raise(signal).unwrap();
        tokio::time::timeout(LIMIT, shutdown)
            .await
            .unwrap_or_else(|_| panic!("shutdown future ignored {signal}"));
    }
}
