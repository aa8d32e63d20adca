//! Summaries of samples: median, min, max and nearest-rank percentiles.
//!
//! [`Summary`] is what the table and the JSON print for each timed figure; it keeps the raw
//! samples so the JSON can be re-analysed later.

use std::time::Duration;

use serde::Serialize;

/// Samples of one figure, in the figure's unit (milliseconds for times).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub p50: f64,
    pub p99: f64,
    pub samples: Vec<f64>,
}

impl Summary {
    /// Summarises `samples`; an empty slice gives all zeros.
    pub fn new(samples: Vec<f64>) -> Self {
        let mut sorted = samples.clone();
        sorted.sort_by(f64::total_cmp);
        let median = match sorted.len() {
            0 => 0.0,
            n if n % 2 == 1 => sorted[n / 2],
            n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        };
        Summary {
            median,
            min: sorted.first().copied().unwrap_or(0.0),
            max: sorted.last().copied().unwrap_or(0.0),
            p50: percentile(&sorted, 50.0),
            p99: percentile(&sorted, 99.0),
            samples,
        }
    }

    /// Summarises durations in milliseconds.
    pub fn millis(samples: &[Duration]) -> Self {
        Self::new(samples.iter().map(|d| d.as_secs_f64() * 1e3).collect())
    }
}

/// Nearest-rank percentile of sorted samples (p99 of 20 samples is the largest).
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_min_max_and_percentiles() {
        let s = Summary::new(vec![5.0, 1.0, 3.0, 2.0]);
        assert_eq!((s.median, s.min, s.max), (2.5, 1.0, 5.0));
        let s = Summary::new((1..=20).map(f64::from).collect());
        assert_eq!((s.p50, s.p99), (10.0, 20.0));
        assert_eq!(Summary::new(Vec::new()).median, 0.0);
    }
}
