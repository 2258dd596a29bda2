//! Blocking work (filesystem calls that may hang) on tokio's blocking pool, under a timeout.
//!
//! A call into a filesystem whose servers are gone does not return, and no timeout can
//! interrupt it: the caller stops waiting and answers `DeadlineExceeded`, the thread stays
//! blocked in the kernel. [`crate::linux::StuckPaths`] bounds how many such threads one
//! path can hold.

use std::time::Duration;

use crate::error::{Error, Result};

/// Runs `f` on the blocking pool, giving up after `timeout` with `DeadlineExceeded`
/// describing `what`.
pub async fn run_blocking<T, F>(timeout: Duration, what: impl Into<String>, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    match tokio::time::timeout(timeout, tokio::task::spawn_blocking(f)).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(join)) => Err(Error::Internal(format!("{} failed: {join}", what.into()))),
        Err(_) => Err(Error::DeadlineExceeded(format!(
            "{} did not return within {:.1}s (the filesystem may be hung)",
            what.into(),
            timeout.as_secs_f64()
        ))),
    }
}

/// [`run_blocking`] for work that can fail: its own error is returned as it is.
pub async fn try_blocking<T, F>(timeout: Duration, what: impl Into<String>, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    run_blocking(timeout, what, f).await?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    #[tokio::test]
    async fn a_blocking_call_past_its_timeout_is_deadline_exceeded() {
        let err = run_blocking(Duration::from_millis(50), "stat of /hung", || {
            std::thread::sleep(Duration::from_millis(500))
        })
        .await
        .unwrap_err();
        assert_eq!(err.code(), ErrorCode::DeadlineExceeded);
        assert!(err.to_string().contains("stat of /hung"), "{err}");
        let ok = run_blocking(Duration::from_secs(5), "quick", || 7)
            .await
            .unwrap();
        assert_eq!(ok, 7);
    }

    #[tokio::test]
    async fn failing_work_keeps_its_own_error() {
        let err = try_blocking(Duration::from_secs(5), "stat", || -> Result<()> {
            Err(Error::NotFound("gone".into()))
        })
        .await
        .unwrap_err();
        assert_eq!(err.code(), ErrorCode::NotFound);
        assert_eq!(
            try_blocking(Duration::from_secs(5), "stat", || Ok(3))
                .await
                .unwrap(),
            3
        );
    }
}
