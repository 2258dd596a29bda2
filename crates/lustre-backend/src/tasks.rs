//! Background work (snapshot archives, restores, clones) that outlives the RPC that
//! started it, keyed so a later RPC can find it, wait for it a little, or stop it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

struct Task {
    handle: JoinHandle<()>,
    done: watch::Receiver<bool>,
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

    /// Starts `work` under `key` unless a task of that key is running; `true` when started.
    pub fn spawn<F>(&self, key: &str, work: F) -> bool
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let mut map = self.map();
        if map.get(key).is_some_and(|t| !t.handle.is_finished()) {
            return false;
        }
        let (tx, rx) = watch::channel(false);
        let handle = tokio::spawn(async move {
            work.await;
            let _ = tx.send(true);
        });
        map.insert(key.to_string(), Task { handle, done: rx });
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

    /// Stops the task of `key`, if any, and waits until it is gone.
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
        assert!(tasks.spawn("snap:a", async move {
            let _ = gate.await;
            r.fetch_add(1, Ordering::SeqCst);
        }));
        let r = runs.clone();
        assert!(!tasks.spawn("snap:a", async move {
            r.fetch_add(100, Ordering::SeqCst);
        }));
        assert!(tasks.is_running("snap:a"));
        assert!(!tasks.wait("snap:a", Duration::from_millis(20)).await);
        release.send(()).unwrap();
        assert!(tasks.wait("snap:a", Duration::from_secs(5)).await);
        assert!(!tasks.is_running("snap:a"));
        assert_eq!(runs.load(Ordering::SeqCst), 1);

        assert!(tasks.spawn("fill:b", std::future::pending()));
        tasks.abort("fill:b").await;
        assert!(!tasks.is_running("fill:b"));
        assert!(tasks.wait("fill:b", Duration::from_millis(1)).await);
        assert!(tasks.wait("never", Duration::from_millis(1)).await);
    }
}
