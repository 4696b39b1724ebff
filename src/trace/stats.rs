//! `trace stats`: what a trace holds, computed from loaded records (sorted by arrival).
//!
//! Duration is first to last arrival; the mean rate is records / duration (the definition
//! `--target-rate` uses); peak rates count arrivals in the busiest 1 s and 60 s windows;
//! burstiness is the coefficient of variation of inter-arrival gaps (1 for Poisson).
//! Percentiles use the crate's one method, [`crate::metrics::percentile`].

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde::Serialize;

use super::record::TraceRecord;
use super::sessions::SessionStats;
use super::timeline::{mean_rate, span};
use crate::metrics::percentile;

/// Everything `trace stats` reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TraceStats {
    /// Records in the trace.
    pub records: usize,
    /// Seconds from the first to the last arrival.
    pub duration_s: f64,
    /// Records per second over the duration; `None` when the duration is zero.
    pub mean_rate_per_s: Option<f64>,
    /// Most arrivals in any 1 s window, per second.
    pub peak_rate_1s_per_s: f64,
    /// Most arrivals in any 60 s window, per second.
    pub peak_rate_60s_per_s: f64,
    /// Standard deviation / mean of the gaps between arrivals; `None` for fewer than two
    /// records or a zero mean gap.
    pub interarrival_cv: Option<f64>,
    /// Prompt lengths in tokens.
    pub input_tokens: LengthStats,
    /// Generated lengths in tokens.
    pub output_tokens: LengthStats,
    /// Prefix blocks; `None` when no record has `hash_ids`.
    pub prefix: Option<PrefixStats>,
    /// Sessions; `None` when no record has session fields.
    pub sessions: Option<SessionStats>,
    /// Records by request type (`type`); empty when the format has none.
    pub types: BTreeMap<String, usize>,
    /// Records marked as clamped by `--max-input-tokens` / `--max-output-tokens`.
    pub clamped: usize,
}

/// Distribution of a token count.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LengthStats {
    /// Sum over all records.
    pub total: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Smallest.
    pub min: u32,
    /// Largest.
    pub max: u32,
}

/// Prefix-block reuse.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PrefixStats {
    /// Records that carry `hash_ids`.
    pub records_with_blocks: usize,
    /// Tokens per block (of the first record with blocks).
    pub block_size: u32,
    /// Blocks over all records.
    pub blocks_total: u64,
    /// Distinct block ids.
    pub blocks_distinct: u64,
    /// Share of blocks that repeat an earlier one: 1 − distinct / total.
    pub reuse_ratio: f64,
}

impl TraceStats {
    /// Statistics of `records` (sorted by arrival, as [`crate::trace::load`] returns them).
    pub fn compute(records: &[TraceRecord]) -> Self {
        let duration = span(records);
        let duration_s = duration.as_secs_f64();
        let mean_rate_per_s = (duration_s > 0.0).then(|| mean_rate(records.len(), duration_s));

        Self {
            records: records.len(),
            duration_s,
            mean_rate_per_s,
            peak_rate_1s_per_s: peak_count(records, Duration::from_secs(1)) as f64,
            peak_rate_60s_per_s: peak_count(records, Duration::from_secs(60)) as f64 / 60.0,
            interarrival_cv: interarrival_cv(records),
            input_tokens: LengthStats::of(records.iter().map(|r| r.input_tokens)),
            output_tokens: LengthStats::of(records.iter().map(|r| r.output_tokens)),
            prefix: PrefixStats::compute(records),
            sessions: SessionStats::compute(records),
            types: types(records),
            clamped: records.iter().filter(|r| r.clamped).count(),
        }
    }
}

impl LengthStats {
    /// Distribution of `values` (all zeros for none).
    pub fn of(values: impl Iterator<Item = u32>) -> Self {
        let mut sorted: Vec<f64> = values.map(f64::from).collect();
        sorted.sort_by(f64::total_cmp);
        let total: f64 = sorted.iter().sum();
        let at = |p| percentile(&sorted, p).unwrap_or(0.0);
        Self {
            total: total as u64,
            mean: if sorted.is_empty() {
                0.0
            } else {
                total / sorted.len() as f64
            },
            p50: at(50.0),
            p90: at(90.0),
            p99: at(99.0),
            min: sorted.first().map_or(0, |v| *v as u32),
            max: sorted.last().map_or(0, |v| *v as u32),
        }
    }
}

impl PrefixStats {
    /// Block totals; `None` when no record has blocks.
    pub fn compute(records: &[TraceRecord]) -> Option<Self> {
        let with_blocks: Vec<_> = records.iter().filter_map(|r| r.prefix.as_ref()).collect();
        let block_size = with_blocks.first()?.block_size;
        let blocks_total: u64 = with_blocks.iter().map(|p| p.hash_ids.len() as u64).sum();
        let distinct: HashSet<u64> = with_blocks
            .iter()
            .flat_map(|p| p.hash_ids.iter().copied())
            .collect();
        let blocks_distinct = distinct.len() as u64;
        let reuse_ratio = if blocks_total == 0 {
            0.0
        } else {
            1.0 - blocks_distinct as f64 / blocks_total as f64
        };
        Some(Self {
            records_with_blocks: with_blocks.len(),
            block_size,
            blocks_total,
            blocks_distinct,
            reuse_ratio,
        })
    }
}

/// Most arrivals within any window of `width` starting at an arrival (two pointers).
fn peak_count(records: &[TraceRecord], width: Duration) -> usize {
    let mut best = 0;
    let mut first = 0;
    for (last, record) in records.iter().enumerate() {
        while record.arrival.saturating_sub(records[first].arrival) >= width {
            first += 1;
        }
        best = best.max(last + 1 - first);
    }
    best
}

fn interarrival_cv(records: &[TraceRecord]) -> Option<f64> {
    let gaps: Vec<f64> = records
        .windows(2)
        .map(|w| w[1].arrival.saturating_sub(w[0].arrival).as_secs_f64())
        .collect();
    if gaps.is_empty() {
        return None;
    }
    let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
    if mean == 0.0 {
        return None;
    }
    let variance = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
    Some(variance.sqrt() / mean)
}

fn types(records: &[TraceRecord]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for kind in records.iter().filter_map(|r| r.kind.as_ref()) {
        *out.entry(kind.clone()).or_default() += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at_ms(ms: &[u64]) -> Vec<TraceRecord> {
        ms.iter()
            .map(|&t| TraceRecord::new(Duration::from_millis(t), 100, 10, 0))
            .collect()
    }

    #[test]
    fn rates_and_windows() {
        let stats = TraceStats::compute(&at_ms(&[0, 100, 200, 900, 1500, 4000]));
        assert_eq!(stats.records, 6);
        assert_eq!(stats.duration_s, 4.0);
        assert_eq!(stats.mean_rate_per_s, Some(1.5));
        assert_eq!(stats.peak_rate_1s_per_s, 4.0);
        assert_eq!(stats.peak_rate_60s_per_s, 6.0 / 60.0);
    }

    #[test]
    fn evenly_spaced_arrivals_have_zero_cv() {
        let stats = TraceStats::compute(&at_ms(&[0, 10, 20, 30]));
        assert_eq!(stats.interarrival_cv, Some(0.0));
        assert_eq!(TraceStats::compute(&at_ms(&[5])).interarrival_cv, None);
    }

    #[test]
    fn length_percentiles_interpolate() {
        let stats = LengthStats::of([1, 2, 3, 4, 5].into_iter());
        assert_eq!(
            (stats.mean, stats.p50, stats.p90, stats.max),
            (3.0, 3.0, 4.6, 5)
        );
    }
}
