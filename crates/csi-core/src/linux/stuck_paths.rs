//! Paths whose blocking call did not return in time.
//!
//! A call into a filesystem whose servers are gone never returns, and its thread stays
//! blocked until the kernel lets it go. Kubelet asks for every volume's stats each minute
//! and retries failed publishes and unstages, so without a bound each retry would leave
//! one more thread behind, until tokio's blocking pool is full and every call of every
//! volume waits. [`StuckPaths`] remembers the paths whose call is still blocked after its
//! timeout (or after its caller gave up on it); a new call on such a path fails at once
//! with `DeadlineExceeded`, until the blocked one returns. Other paths are served as
//! before.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::blocking::run_blocking;
use crate::error::{Error, Result};

/// The paths with a call still blocked after its timeout (see the module documentation).
#[derive(Debug, Default, Clone)]
pub struct StuckPaths(Arc<State>);

#[derive(Debug, Default)]
struct State {
    /// Each stuck path, with the calls on it still blocked.
    paths: Mutex<HashMap<PathBuf, HashSet<u64>>>,
    next_call: AtomicU64,
}

/// One call on a path, shared by the thread that makes it and the caller that waits for it.
/// Both ends act under the paths lock, so they agree on which came first.
struct Call {
    stuck: StuckPaths,
    path: PathBuf,
    id: u64,
    returned: AtomicBool,
}

impl Call {
    /// The call's thread is done with it (a panic included): the call no longer holds its
    /// path.
    fn returned(&self) {
        let mut paths = self.stuck.paths();
        self.returned.store(true, Ordering::Relaxed);
        if let Some(calls) = paths.get_mut(&self.path) {
            calls.remove(&self.id);
            if calls.is_empty() {
                paths.remove(&self.path);
            }
        }
    }

    /// The caller stopped waiting (the timeout, or the caller itself dropped, as when a
    /// client gives up on the RPC): a call that has not returned marks its path stuck.
    fn waited_for(&self) {
        let mut paths = self.stuck.paths();
        if !self.returned.load(Ordering::Relaxed) {
            paths.entry(self.path.clone()).or_default().insert(self.id);
        }
    }
}

/// Tells [`Call::returned`] when the call's thread drops it.
struct OnReturn(Arc<Call>);

impl Drop for OnReturn {
    fn drop(&mut self) {
        self.0.returned();
    }
}

/// Tells [`Call::waited_for`] when the caller drops it.
struct OnStopWaiting(Arc<Call>);

impl Drop for OnStopWaiting {
    fn drop(&mut self) {
        self.0.waited_for();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl StuckPaths {
    /// Whether a call on `path` is still blocked after its timeout.
    pub fn is_stuck(&self, path: &Path) -> bool {
        self.paths().contains_key(path)
    }

    /// Stops refusing calls on `path` though its blocked calls have not returned: for when
    /// the path no longer leads into the hung filesystem (it was detached lazily).
    pub fn forget(&self, path: &Path) {
        self.paths().remove(path);
    }

    /// [`Self::forget`] for `root` and every path below it: for when the mount at `root` was
    /// taken away (one made there later is another filesystem).
    pub fn forget_below(&self, root: &Path) {
        self.paths().retain(|path, _| !path.starts_with(root));
    }

    /// Runs `f`, which works on `path`, on the blocking pool within `timeout`, as
    /// [`run_blocking`] does; refused at once (`DeadlineExceeded`, no thread started) while
    /// an earlier call on `path` is still blocked after its timeout or its caller's end.
    pub async fn run<T, F>(&self, path: &Path, timeout: Duration, what: String, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        if self.is_stuck(path) {
            return Err(Error::DeadlineExceeded(format!(
                "{what}: an earlier call on {} has not returned yet (the filesystem may be hung); not trying again until it does",
                path.display()
            )));
        }
        let call = Arc::new(Call {
            stuck: self.clone(),
            path: path.to_path_buf(),
            id: self.0.next_call.fetch_add(1, Ordering::Relaxed),
            returned: AtomicBool::new(false),
        });
        let on_return = OnReturn(call.clone());
        let _waiting = OnStopWaiting(call);
        run_blocking(timeout, what, move || {
            let _on_return = on_return;
            f()
        })
        .await
    }

    fn paths(&self) -> MutexGuard<'_, HashMap<PathBuf, HashSet<u64>>> {
        lock(&self.0.paths)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use std::sync::atomic::AtomicUsize;
    use std::sync::mpsc;

    #[tokio::test]
    async fn a_path_with_a_blocked_call_is_refused_until_that_call_returns() {
        let stuck = StuckPaths::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let hung = Path::new("/hung");
        let (release, blocked) = mpsc::channel::<()>();
        let (finished, returned) = mpsc::channel::<()>();
        let counted = runs.clone();
        let err = stuck
            .run(hung, Duration::from_millis(50), "stat".into(), move || {
                counted.fetch_add(1, Ordering::SeqCst);
                let _ = blocked.recv();
                let _ = finished.send(());
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::DeadlineExceeded);
        assert!(stuck.is_stuck(hung));

        // Retries fail at once, and start nothing.
        for _ in 0..100 {
            let counted = runs.clone();
            let err = stuck
                .run(hung, Duration::from_secs(5), "stat".into(), move || {
                    counted.fetch_add(1, Ordering::SeqCst);
                })
                .await
                .unwrap_err();
            assert_eq!(err.code(), ErrorCode::DeadlineExceeded);
            assert!(err.to_string().contains("has not returned yet"), "{err}");
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);

        // Other paths are served meanwhile.
        let other = stuck
            .run(
                Path::new("/fine"),
                Duration::from_secs(5),
                "stat".into(),
                || 7,
            )
            .await
            .unwrap();
        assert_eq!(other, 7);

        // Once the blocked call returns, the path is tried again.
        release.send(()).unwrap();
        returned.recv().unwrap();
        assert_cleared(&stuck, hung).await;
        let again = stuck
            .run(hung, Duration::from_secs(5), "stat".into(), || 8)
            .await
            .unwrap();
        assert_eq!(again, 8);
    }

    /// Asserts that `path` is no longer stuck, waiting up to 5 s for the returned call's
    /// guard to clear it.
    async fn assert_cleared(stuck: &StuckPaths, path: &Path) {
        for _ in 0..500 {
            if !stuck.is_stuck(path) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{} is still stuck after its call returned", path.display());
    }

    /// A call on `path` that blocks until released, once it has timed out; and a receiver
    /// told when it returned.
    async fn blocked_call(
        stuck: &StuckPaths,
        path: &Path,
    ) -> (mpsc::Sender<()>, mpsc::Receiver<()>) {
        let (release, blocked) = mpsc::channel::<()>();
        let (finished, returned) = mpsc::channel::<()>();
        let err = stuck
            .run(
                path,
                Duration::from_millis(50),
                "unmount".into(),
                move || {
                    let _ = blocked.recv();
                    let _ = finished.send(());
                },
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::DeadlineExceeded);
        (release, returned)
    }

    #[tokio::test]
    async fn a_forgotten_path_is_served_and_an_old_return_clears_no_new_block() {
        let stuck = StuckPaths::default();
        let path = Path::new("/detached");
        let (first_release, first_returned) = blocked_call(&stuck, path).await;
        stuck.forget(path);
        assert!(!stuck.is_stuck(path));
        // Blocked again, then the first call returns: the path stays refused.
        let (second_release, second_returned) = blocked_call(&stuck, path).await;
        first_release.send(()).unwrap();
        first_returned.recv().unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(stuck.is_stuck(path));
        second_release.send(()).unwrap();
        second_returned.recv().unwrap();
        assert_cleared(&stuck, path).await;
    }

    #[tokio::test]
    async fn forgetting_a_mount_forgets_the_paths_below_it_only() {
        let stuck = StuckPaths::default();
        let (mount, other) = (Path::new("/mnt/a"), Path::new("/mnt/ab/x"));
        let mut held = Vec::new();
        for path in [mount, &mount.join("d/e"), other] {
            held.push(blocked_call(&stuck, path).await);
        }
        stuck.forget_below(mount);
        assert!(!stuck.is_stuck(mount));
        assert!(!stuck.is_stuck(&mount.join("d/e")));
        assert!(
            stuck.is_stuck(other),
            "a sibling sharing a name prefix stays refused"
        );
        for (release, returned) in held {
            release.send(()).unwrap();
            returned.recv().unwrap();
        }
        assert_cleared(&stuck, other).await;
    }

    #[tokio::test]
    async fn a_caller_that_gives_up_before_the_timeout_marks_the_path_too() {
        let stuck = StuckPaths::default();
        let path = Path::new("/abandoned");
        let (release, blocked) = mpsc::channel::<()>();
        let call = stuck.run(path, Duration::from_secs(60), "stat".into(), move || {
            let _ = blocked.recv();
        });
        tokio::time::timeout(Duration::from_millis(50), call)
            .await
            .unwrap_err();
        assert!(stuck.is_stuck(path));
        release.send(()).unwrap();
    }

    #[tokio::test]
    async fn a_call_that_fails_or_returns_in_time_leaves_nothing_marked() {
        let stuck = StuckPaths::default();
        let path = Path::new("/p");
        stuck
            .run(path, Duration::from_secs(5), "ok".into(), || ())
            .await
            .unwrap();
        let failed: Result<std::result::Result<(), &str>> = stuck
            .run(path, Duration::from_secs(5), "fails".into(), || Err("EIO"))
            .await;
        assert_eq!(failed.unwrap(), Err("EIO"));
        let panicked = stuck
            .run(path, Duration::from_secs(5), "panics".into(), || -> () {
                panic!("boom")
            })
            .await
            .unwrap_err();
        assert_eq!(panicked.code(), ErrorCode::Internal);
        assert!(!stuck.is_stuck(path));
    }
}
