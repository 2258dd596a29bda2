//! Latency summaries: nearest-rank percentiles over recorded durations.

use std::time::Duration;

use serde::Serialize;

/// Percentiles of a set of durations, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    /// How many samples.
    pub count: usize,
    /// Smallest sample.
    pub min_us: f64,
    /// Median (nearest rank).
    pub p50_us: f64,
    /// 99th percentile (nearest rank).
    pub p99_us: f64,
    /// Largest sample.
    pub max_us: f64,
    /// Arithmetic mean.
    pub mean_us: f64,
}

/// The nearest-rank `p` percentile (0 < p <= 100) of sorted, non-empty `sorted`.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    debug_assert!(!sorted.is_empty());
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn micros(d: Duration) -> f64 {
    d.as_nanos() as f64 / 1e3
}

impl Summary {
    /// Summarises `samples`; `None` when there are none.
    pub fn of(samples: &[Duration]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        let total: Duration = sorted.iter().sum();
        Some(Summary {
            count: sorted.len(),
            min_us: micros(sorted[0]),
            p50_us: micros(percentile(&sorted, 50.0)),
            p99_us: micros(percentile(&sorted, 99.0)),
            max_us: micros(sorted[sorted.len() - 1]),
            mean_us: micros(total) / sorted.len() as f64,
        })
    }
}

/// The median of `values` (the lower middle for an even count); `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    Some(sorted[(sorted.len() - 1) / 2])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn us(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&x| Duration::from_micros(x)).collect()
    }

    #[test]
    fn nearest_rank_percentiles_of_one_to_a_hundred() {
        let samples = us(&(1..=100).rev().collect::<Vec<_>>());
        let s = Summary::of(&samples).unwrap();
        assert_eq!(s.count, 100);
        assert_eq!(s.p50_us, 50.0);
        assert_eq!(s.p99_us, 99.0);
        assert_eq!(s.min_us, 1.0);
        assert_eq!(s.max_us, 100.0);
        assert_eq!(s.mean_us, 50.5);
    }

    #[test]
    fn a_single_sample_is_every_percentile_and_none_is_no_summary() {
        let s = Summary::of(&us(&[7])).unwrap();
        assert_eq!(
            (s.p50_us, s.p99_us, s.min_us, s.max_us),
            (7.0, 7.0, 7.0, 7.0)
        );
        assert!(Summary::of(&[]).is_none());
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0, 10.0]), Some(2.0));
    }

    proptest! {
        #[test]
        fn percentiles_are_ordered_samples(values in proptest::collection::vec(0u64..1_000_000, 1..200)) {
            let s = Summary::of(&us(&values)).unwrap();
            prop_assert!(s.min_us <= s.p50_us && s.p50_us <= s.p99_us && s.p99_us <= s.max_us);
            prop_assert!(values.iter().any(|&v| v as f64 == s.p50_us));
            prop_assert!(values.iter().any(|&v| v as f64 == s.p99_us));
            let below = values.iter().filter(|&&v| (v as f64) <= s.p50_us).count();
            prop_assert!(below * 2 >= values.len());
        }
    }
}
