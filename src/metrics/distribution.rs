//! The one percentile method of tracebench, and the distribution summary built on it.
//!
//! Percentiles use linear interpolation between closest ranks (numpy's default,
//! `method="linear"`): for `n` sorted samples the p-th percentile sits at rank
//! `h = (n − 1) · p / 100`, between `x[⌊h⌋]` and `x[⌈h⌉]`. An empty set has no percentile
//! (`None`, never zero). Standard deviation is the population one (numpy's `ddof=0`), as vLLM
//! reports it. Non-finite samples are dropped before anything is computed.

use serde::{Deserialize, Serialize};

/// The p-th percentile (0–100) of `sorted` (ascending) by linear interpolation; `None` if
/// `sorted` is empty.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let rank = last as f64 * p.clamp(0.0, 100.0) / 100.0;
    let lower = rank.floor() as usize;
    let upper = rank.ceil() as usize;

    let fraction = rank - lower as f64;
    Some(sorted[lower] + fraction * (sorted[upper] - sorted[lower]))
}

/// Count, moments and percentiles of one set of samples. Every value is in the unit of the
/// samples (the field name holding the distribution says which); all are `None` when
/// `count` is 0.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Distribution {
    /// Number of samples.
    pub count: usize,
    /// Arithmetic mean.
    pub mean: Option<f64>,
    /// Population standard deviation.
    pub std: Option<f64>,
    /// Smallest sample.
    pub min: Option<f64>,
    /// Median.
    pub p50: Option<f64>,
    /// 90th percentile.
    pub p90: Option<f64>,
    /// 95th percentile.
    pub p95: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// 99.9th percentile.
    #[serde(rename = "p99.9")]
    pub p99_9: Option<f64>,
    /// Largest sample.
    pub max: Option<f64>,
}

impl Distribution {
    /// Summarises `samples` (any order; non-finite values are dropped).
    pub fn from_samples(samples: impl IntoIterator<Item = f64>) -> Self {
        let mut sorted: Vec<f64> = samples.into_iter().filter(|x| x.is_finite()).collect();
        sorted.sort_by(f64::total_cmp);

        let (mean, std) = mean_and_std(&sorted).unzip();
        Distribution {
            count: sorted.len(),
            mean,
            std,
            min: sorted.first().copied(),
            p50: percentile(&sorted, 50.0),
            p90: percentile(&sorted, 90.0),
            p95: percentile(&sorted, 95.0),
            p99: percentile(&sorted, 99.0),
            p99_9: percentile(&sorted, 99.9),
            max: sorted.last().copied(),
        }
    }

    /// The percentile named by `p` (50, 90, 95, 99 or 99.9), as stored.
    pub fn at(&self, p: Percentile) -> Option<f64> {
        match p {
            Percentile::P50 => self.p50,
            Percentile::P90 => self.p90,
            Percentile::P95 => self.p95,
            Percentile::P99 => self.p99,
            Percentile::P99_9 => self.p99_9,
        }
    }
}

/// The percentiles every [`Distribution`] carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Percentile {
    /// The median.
    P50,
    /// 90th.
    P90,
    /// 95th.
    P95,
    /// 99th.
    P99,
    /// 99.9th.
    P99_9,
}

impl Percentile {
    /// All of them, ascending.
    pub const ALL: [Percentile; 5] = [
        Percentile::P50,
        Percentile::P90,
        Percentile::P95,
        Percentile::P99,
        Percentile::P99_9,
    ];

    /// The name used in keys: `p50`, `p90`, `p95`, `p99`, `p99.9`.
    pub fn key(self) -> &'static str {
        match self {
            Percentile::P50 => "p50",
            Percentile::P90 => "p90",
            Percentile::P95 => "p95",
            Percentile::P99 => "p99",
            Percentile::P99_9 => "p99.9",
        }
    }
}

/// Mean and population standard deviation; `None` for no samples.
fn mean_and_std(samples: &[f64]) -> Option<(f64, f64)> {
    if samples.is_empty() {
        return None;
    }
    let n = samples.len() as f64;
    let mean = samples.iter().sum::<f64>() / n;
    let variance = samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    Some((mean, variance.sqrt()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }

    #[test]
    fn empty_set_has_no_percentile() {
        assert_eq!(percentile(&[], 50.0), None);
        let d = Distribution::from_samples([]);
        assert_eq!(d.count, 0);
        assert_eq!((d.mean, d.std, d.p99, d.max), (None, None, None, None));
    }

    #[test]
    fn one_sample_is_every_percentile() {
        for p in [0.0, 50.0, 99.0, 99.9, 100.0] {
            assert_eq!(percentile(&[7.0], p), Some(7.0));
        }
        let d = Distribution::from_samples([7.0]);
        assert_eq!(d.std, Some(0.0));
    }

    #[test]
    fn two_samples_interpolate_linearly() {
        // rank = (2 − 1) · p / 100: p50 → 0.5, p90 → 0.9, p99 → 0.99.
        let sorted = [10.0, 20.0];
        assert!(close(percentile(&sorted, 50.0), 15.0));
        assert!(close(percentile(&sorted, 90.0), 19.0));
        assert!(close(percentile(&sorted, 99.0), 19.9));
        assert!(close(percentile(&sorted, 0.0), 10.0));
        assert!(close(percentile(&sorted, 100.0), 20.0));
    }

    #[test]
    fn five_samples_match_numpy() {
        // numpy.percentile([1, 2, 3, 4, 10], [50, 90, 95, 99, 99.9]) =
        // [3.0, 7.6, 8.8, 9.76, 9.976]: rank 3.6 → 4 + 0.6 · 6 = 7.6, etc.
        let d = Distribution::from_samples([10.0, 3.0, 1.0, 4.0, 2.0]);
        assert!(close(d.p50, 3.0));
        assert!(close(d.p90, 7.6));
        assert!(close(d.p95, 8.8));
        assert!(close(d.p99, 9.76));
        assert!(close(d.p99_9, 9.976));
        assert!(close(d.mean, 4.0));
        // Population variance: (9 + 4 + 1 + 0 + 36) / 5 = 10.
        assert!(close(d.std, 10f64.sqrt()));
        assert_eq!((d.min, d.max), (Some(1.0), Some(10.0)));
    }

    #[test]
    fn non_finite_samples_are_dropped() {
        let d = Distribution::from_samples([1.0, f64::NAN, 3.0, f64::INFINITY]);
        assert_eq!(d.count, 2);
        assert!(close(d.p50, 2.0));
    }
}
