//! Background work (snapshot archives, restores, clones) that outlives the RPC that
//! started it, keyed so a later RPC can find it, wait for it a little, or stop it.
//!
//! Stopping is cooperative: [`Tasks::stop`] asks and then waits until the task has ended. A
//! task's steps on blocking threads (a record write, a rename) cannot be interrupted, so a
//! hard abort would let such a step finish after the caller went on, for instance writing
//! back the record of a snapshot that DeleteSnapshot had just removed. A task looks at its
//! [`StopSignal`] only where stopping leaves nothing half done.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

struct Task {
    handle: JoinHandle<()>,
    done: watch::Receiver<bool>,
    stop: watch::Sender<bool>,
}

/// A task's view of [`Tasks::stop`] requests for it.
pub struct StopSignal(watch::Receiver<bool>);

impl StopSignal {
    /// Resolves once the task was asked to stop; never while nobody asked.
    pub async fn requested(&mut self) {
        if self.0.wait_for(|stop| *stop).await.is_err() {
            // The registry is gone (shutdown): nobody can ask any more.
            std::future::pending::<()>().await;
        }
    }
}

/// Running background tasks by key.
#[derive(Default)]
pub struct Tasks {
    running: Mutex<HashMap<String, Task>>,
}

impl Tasks {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Task>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a task of `key` is still running.
    pub fn is_running(&self, key: &str) -> bool {
        let mut map = self.map();
        match map.get(key) {
            Some(task) if !task.handle.is_finished() => true,
            Some(_) => {
                map.remove(key);
                false
            }
            None => false,
        }
    }

    /// The keys of the running tasks that start with `prefix`.
    pub fn running_with_prefix(&self, prefix: &str) -> Vec<String> {
        self.map()
            .iter()
            .filter(|(key, task)| key.starts_with(prefix) && !task.handle.is_finished())
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// Starts `work(stop)` under `key` unless a task of that key is running; `true` when
    /// started.
    pub fn spawn<F, W>(&self, key: &str, work: W) -> bool
    where
        W: FnOnce(StopSignal) -> F,
        F: Future<Output = ()> + Send + 'static,
    {
        let mut map = self.map();
        if map.get(key).is_some_and(|t| !t.handle.is_finished()) {
            return false;
        }
        let (done_tx, done) = watch::channel(false);
        let (stop, stop_rx) = watch::channel(false);
        let work = work(StopSignal(stop_rx));
        let handle = tokio::spawn(async move {
            work.await;
            let _ = done_tx.send(true);
        });
        map.insert(key.to_string(), Task { handle, done, stop });
        true
    }

    /// Waits up to `timeout` for the task of `key`; `true` when it is not running (any more).
    pub async fn wait(&self, key: &str, timeout: Duration) -> bool {
        let rx = match self.map().get(key) {
            Some(task) => task.done.clone(),
            None => return true,
        };
        let mut rx = rx;
        let finished = tokio::time::timeout(timeout, rx.wait_for(|done| *done)).await;
        // A task that ended without reporting (aborted, panicked) is finished too.
        finished.is_ok() || !self.is_running(key)
    }

    /// Asks the task of `key`, if any, to stop, and waits until it has ended: nothing it
    /// started is still running when this returns.
    pub async fn stop(&self, key: &str) {
        let task = self.map().remove(key);
        if let Some(task) = task {
            let _ = task.stop.send(true);
            let _ = task.handle.await;
        }
    }

    /// Ends the task of `key` at once, as a dying process would (tests of restarts).
    #[cfg(any(test, feature = "mock"))]
    pub async fn abort(&self, key: &str) {
        let task = self.map().remove(key);
        if let Some(task) = task {
            task.handle.abort();
            let _ = task.handle.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn one_task_per_key_waited_for_or_aborted() {
        let tasks = Tasks::default();
        let runs = Arc::new(AtomicU32::new(0));
        let (release, gate) = tokio::sync::oneshot::channel::<()>();
        let r = runs.clone();
        assert!(tasks.spawn("snap:a", |_| async move {
            let _ = gate.await;
            r.fetch_add(1, Ordering::SeqCst);
        }));
        let r = runs.clone();
        assert!(!tasks.spawn("snap:a", |_| async move {
            r.fetch_add(100, Ordering::SeqCst);
        }));
        assert!(tasks.is_running("snap:a"));
        assert!(!tasks.wait("snap:a", Duration::from_millis(20)).await);
        release.send(()).unwrap();
        assert!(tasks.wait("snap:a", Duration::from_secs(5)).await);
        assert!(!tasks.is_running("snap:a"));
        assert_eq!(runs.load(Ordering::SeqCst), 1);

        assert!(tasks.spawn("fill:b", |_| std::future::pending()));
        tasks.abort("fill:b").await;
        assert!(!tasks.is_running("fill:b"));
        assert!(tasks.wait("fill:b", Duration::from_millis(1)).await);
        assert!(tasks.wait("never", Duration::from_millis(1)).await);
    }

    #[tokio::test]
    async fn stop_lets_the_step_in_progress_finish_then_waits_for_the_task() {
        let tasks = Tasks::default();
        let (step_done, saw_stop) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
        let (started, running) = tokio::sync::oneshot::channel::<()>();
        let (step, seen) = (step_done.clone(), saw_stop.clone());
        assert!(tasks.spawn("cut:a", move |mut stop| async move {
            let _ = started.send(());
            // A step on a blocking thread (a record write): no abort could interrupt it.
            let _ = tokio::task::spawn_blocking(move || {
                std::thread::sleep(Duration::from_millis(100));
                step.store(1, Ordering::SeqCst);
            })
            .await;
            stop.requested().await;
            seen.store(1, Ordering::SeqCst);
        }));
        running.await.unwrap();
        tasks.stop("cut:a").await;
        assert_eq!(
            step_done.load(Ordering::SeqCst),
            1,
            "stop returned before the step ended"
        );
        assert_eq!(
            saw_stop.load(Ordering::SeqCst),
            1,
            "the task never saw the request"
        );
        assert!(!tasks.is_running("cut:a"));
        tasks.stop("cut:a").await;

        // Without a request the signal never fires.
        let fired = Arc::new(AtomicU32::new(0));
        let f = fired.clone();
        assert!(tasks.spawn("fill:c", |mut stop| async move {
            tokio::select! {
                () = stop.requested() => f.store(1, Ordering::SeqCst),
                () = tokio::time::sleep(Duration::from_millis(30)) => {}
            }
        }));
        assert!(tasks.wait("fill:c", Duration::from_secs(5)).await);
        assert_eq!(fired.load(Ordering::SeqCst), 0);
    }
}
