//! Bounded request loops: a fixed number of operations with at most N in flight, each timed.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::task::JoinSet;

use crate::stats::Summary;

/// What one operation took: the whole, and its two halves (e.g. create and delete).
#[derive(Debug, Clone, Copy)]
pub struct Timed {
    /// The first RPC.
    pub first: Duration,
    /// The second RPC.
    pub second: Duration,
}

/// The outcome of a loop of paired operations.
#[derive(Debug, Clone, Serialize)]
pub struct PairRun {
    /// Operations in flight at once.
    pub concurrency: usize,
    /// Operations attempted.
    pub pairs: usize,
    /// Operations that failed.
    pub errors: usize,
    /// The first failure's message.
    pub first_error: Option<String>,
    /// Wall time of the whole loop, seconds.
    pub wall_seconds: f64,
    /// Successful pairs per second of wall time.
    pub pairs_per_second: f64,
    /// Latency of a whole pair.
    pub pair: Option<Summary>,
    /// Latency of the first RPC of a pair.
    pub first: Option<Summary>,
    /// Latency of the second RPC of a pair.
    pub second: Option<Summary>,
}

/// Runs `op(worker, i)` for `i` in `0..total` on `concurrency` workers (numbered from 0),
/// so at most `concurrency` operations are in flight.
pub async fn run_pairs<F, Fut>(concurrency: usize, total: usize, op: F) -> PairRun
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Timed, String>> + Send + 'static,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = JoinSet::new();
    for worker in 0..concurrency.max(1) {
        let (op, next) = (op.clone(), next.clone());
        workers.spawn(async move {
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return done;
                }
                let t = Instant::now();
                let result = op(worker, i).await;
                done.push((t.elapsed(), result));
            }
        });
    }
    let mut results = Vec::with_capacity(total);
    while let Some(joined) = workers.join_next().await {
        match joined {
            Ok(done) => results.extend(done),
            Err(e) => results.push((Duration::ZERO, Err(format!("worker failed: {e}")))),
        }
    }
    let wall = started.elapsed();
    summarize(concurrency, total, wall, results)
}

/// Summarises timed results.
pub fn summarize(
    concurrency: usize,
    total: usize,
    wall: Duration,
    results: Vec<(Duration, Result<Timed, String>)>,
) -> PairRun {
    let mut pair = Vec::new();
    let mut first = Vec::new();
    let mut second = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for (elapsed, result) in results {
        match result {
            Ok(t) => {
                pair.push(elapsed);
                first.push(t.first);
                second.push(t.second);
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    PairRun {
        concurrency,
        pairs: total,
        errors,
        first_error,
        wall_seconds: wall.as_secs_f64(),
        pairs_per_second: pair.len() as f64 / wall.as_secs_f64().max(1e-9),
        pair: Summary::of(&pair),
        first: Summary::of(&first),
        second: Summary::of(&second),
    }
}

/// Times one future.
pub async fn timed<T>(f: impl Future<Output = T>) -> (Duration, T) {
    let t = Instant::now();
    let out = f.await;
    (t.elapsed(), out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[tokio::test(flavor = "current_thread")]
    async fn every_index_runs_once_and_concurrency_is_bounded() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let (s, f, p) = (seen.clone(), in_flight.clone(), peak.clone());
        let run = run_pairs(4, 25, move |w, i| {
            let (s, f, p) = (s.clone(), f.clone(), p.clone());
            async move {
                assert!(w < 4);
                let now = f.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(1)).await;
                f.fetch_sub(1, Ordering::SeqCst);
                s.lock().unwrap().push(i);
                if i == 7 {
                    Err("seven".to_string())
                } else {
                    Ok(Timed {
                        first: Duration::from_micros(1),
                        second: Duration::from_micros(2),
                    })
                }
            }
        })
        .await;
        let mut seen = seen.lock().unwrap().clone();
        seen.sort_unstable();
        assert_eq!(seen, (0..25).collect::<Vec<_>>());
        assert_eq!(peak.load(Ordering::SeqCst), 4);
        assert_eq!(run.errors, 1);
        assert_eq!(run.first_error.as_deref(), Some("seven"));
        assert_eq!(run.pair.unwrap().count, 24);
        assert_eq!(run.second.unwrap().p50_us, 2.0);
        assert!(run.pairs_per_second > 0.0);
    }
}
