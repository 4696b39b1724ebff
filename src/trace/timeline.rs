//! Timeline transforms: pure functions from records to records, applied after loading.
//!
//! [`apply`] runs them in a fixed order: time window (`--start`, `--end`, offsets from the
//! first record), first `N` records (`--limit`), rebase so the first record is at zero, time
//! scale (`--time-scale`, `--speedup` or `--target-rate`), then length clamps. Order of
//! records is always kept; every dropped or clamped record is counted in the report.

use std::time::Duration;

use serde::Serialize;

use super::record::TraceRecord;

/// A transform that cannot be applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TimelineError {
    /// A scale factor or rate that is zero, negative or not finite.
    #[error("{flag}: expected a positive finite number, found {value}")]
    BadFactor {
        /// The flag, e.g. `--time-scale`.
        flag: &'static str,
        /// The value given.
        value: f64,
    },
    /// `--target-rate` on a trace whose records all arrive at one instant.
    #[error("--target-rate: the trace's {records} records span zero time, so it has no rate")]
    ZeroDuration {
        /// Records in the trace.
        records: usize,
    },
    /// The window or limit kept nothing.
    #[error("no record left after --start/--end/--limit (the trace spans {span_s:.3} s)")]
    NothingLeft {
        /// Seconds from the first to the last record before the window.
        span_s: f64,
    },
}

/// How to rescale time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeScale {
    /// Multiply every gap by this factor (0.5 replays twice as fast).
    Factor(f64),
    /// Rescale so the mean arrival rate (records / duration) is this many requests/s.
    TargetRate(f64),
}

/// Every transform; `None` / empty means "leave as is".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TimelineOptions {
    /// Keep records at or after this offset from the first record.
    pub start: Option<Duration>,
    /// Keep records before this offset from the first record.
    pub end: Option<Duration>,
    /// Keep the first `N` records (after the window).
    pub limit: Option<usize>,
    /// Rescale time.
    pub time_scale: Option<TimeScale>,
    /// Clamp prompt lengths to this many tokens.
    pub max_input_tokens: Option<u32>,
    /// Clamp generated lengths to this many tokens.
    pub max_output_tokens: Option<u32>,
}

/// What the transforms did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TransformReport {
    /// Records before any transform.
    pub records_in: usize,
    /// Records dropped by `--start` / `--end`.
    pub dropped_by_window: usize,
    /// Records dropped by `--limit`.
    pub dropped_by_limit: usize,
    /// The factor every gap was multiplied by (1 when time was not rescaled).
    pub time_factor: f64,
    /// Records whose prompt was shortened by `--max-input-tokens`.
    pub clamped_input: usize,
    /// Records whose generation was shortened by `--max-output-tokens`.
    pub clamped_output: usize,
    /// Records shortened in either way.
    pub clamped: usize,
    /// Records after all transforms.
    pub records_out: usize,
}

impl TransformReport {
    /// One human-readable line per transform that changed something.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        let dropped = self.dropped_by_window + self.dropped_by_limit;
        if dropped > 0 {
            out.push(format!(
                "kept {} of {} records ({} outside --start/--end, {} beyond --limit)",
                self.records_out, self.records_in, self.dropped_by_window, self.dropped_by_limit
            ));
        }
        if self.time_factor != 1.0 {
            out.push(format!("every gap multiplied by {:.6}", self.time_factor));
        }
        if self.clamped > 0 {
            out.push(format!(
                "clamped {} records ({} prompts to --max-input-tokens, {} outputs to --max-output-tokens)",
                self.clamped, self.clamped_input, self.clamped_output
            ));
        }
        out
    }
}

/// Applies every transform in `opts`, in the documented order.
pub fn apply(
    records: Vec<TraceRecord>,
    opts: &TimelineOptions,
) -> Result<(Vec<TraceRecord>, TransformReport), TimelineError> {
    let mut report = TransformReport {
        records_in: records.len(),
        time_factor: 1.0,
        ..TransformReport::default()
    };
    let span_s = span(&records).as_secs_f64();

    let mut records = window(records, opts.start, opts.end);
    report.dropped_by_window = report.records_in - records.len();
    let before_limit = records.len();
    records.truncate(opts.limit.unwrap_or(usize::MAX));
    report.dropped_by_limit = before_limit - records.len();
    if records.is_empty() {
        return Err(TimelineError::NothingLeft { span_s });
    }

    rebase(&mut records);
    if let Some(scale) = opts.time_scale {
        report.time_factor = factor_for(&records, scale)?;
        scale_gaps(&mut records, report.time_factor);
    }

    // Clamps, counted per direction and in total.
    let clamps = clamp(&mut records, opts.max_input_tokens, opts.max_output_tokens);
    (report.clamped_input, report.clamped_output, report.clamped) = clamps;
    report.records_out = records.len();
    Ok((records, report))
}

/// Time from the first to the last record (zero for fewer than two).
pub fn span(records: &[TraceRecord]) -> Duration {
    match (records.first(), records.last()) {
        (Some(first), Some(last)) => last.arrival.saturating_sub(first.arrival),
        _ => Duration::ZERO,
    }
}

/// Keeps records whose offset from the first record is in `[start, end)`.
pub fn window(
    records: Vec<TraceRecord>,
    start: Option<Duration>,
    end: Option<Duration>,
) -> Vec<TraceRecord> {
    let Some(first) = records.first().map(|r| r.arrival) else {
        return records;
    };
    let start = start.unwrap_or(Duration::ZERO);
    let end = end.unwrap_or(Duration::MAX);
    records
        .into_iter()
        .filter(|r| {
            let offset = r.arrival.saturating_sub(first);
            offset >= start && offset < end
        })
        .collect()
}

/// Shifts every arrival so the first record lands at zero.
pub fn rebase(records: &mut [TraceRecord]) {
    let Some(first) = records.first().map(|r| r.arrival) else {
        return;
    };
    for record in records {
        record.arrival = record.arrival.saturating_sub(first);
    }
}

/// The factor every gap is multiplied by to apply `scale`.
pub fn factor_for(records: &[TraceRecord], scale: TimeScale) -> Result<f64, TimelineError> {
    match scale {
        TimeScale::Factor(f) => positive("--time-scale", f),
        TimeScale::TargetRate(rate) => {
            let rate = positive("--target-rate", rate)?;
            let span_s = span(records).as_secs_f64();
            if span_s == 0.0 {
                return Err(TimelineError::ZeroDuration {
                    records: records.len(),
                });
            }
            Ok(mean_rate(records.len(), span_s) / rate)
        }
    }
}

/// The mean arrival rate as `trace stats` reports it: records divided by duration.
pub fn mean_rate(records: usize, span_s: f64) -> f64 {
    records as f64 / span_s
}

fn positive(flag: &'static str, value: f64) -> Result<f64, TimelineError> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(TimelineError::BadFactor { flag, value })
    }
}

/// Multiplies every offset (of a rebased trace) by `factor`, to the nanosecond.
pub fn scale_gaps(records: &mut [TraceRecord], factor: f64) {
    for record in records {
        let ns = (record.arrival.as_nanos() as f64 * factor).round();
        record.arrival = Duration::from_nanos(ns as u64);
    }
}

/// Clamps lengths, marks clamped records; returns (input clamps, output clamps, records).
pub fn clamp(
    records: &mut [TraceRecord],
    max_input: Option<u32>,
    max_output: Option<u32>,
) -> (usize, usize, usize) {
    let mut counts = (0, 0, 0);
    for record in records {
        let input = max_input.is_some_and(|max| clamp_input(record, max));
        let output = max_output.is_some_and(|max| clamp_output(record, max));
        counts.0 += usize::from(input);
        counts.1 += usize::from(output);
        counts.2 += usize::from(input || output);
    }
    counts
}

/// Shortens the prompt to `max` tokens, keeping the `hash_ids` that still fit
/// (`ceil(max / block_size)` of them). Returns whether it changed anything.
pub fn clamp_input(record: &mut TraceRecord, max: u32) -> bool {
    if record.input_tokens <= max {
        return false;
    }
    record.input_tokens = max;
    if let Some(prefix) = record.prefix.as_mut() {
        let fit = max.div_ceil(prefix.block_size.max(1)) as usize;
        prefix.hash_ids.truncate(fit);
    }
    record.clamped = true;
    true
}

/// Shortens the generation to `max` tokens. Returns whether it changed anything.
pub fn clamp_output(record: &mut TraceRecord, max: u32) -> bool {
    if record.output_tokens <= max {
        return false;
    }
    record.output_tokens = max;
    record.clamped = true;
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::PrefixBlocks;

    fn at(ms: &[u64]) -> Vec<TraceRecord> {
        ms.iter()
            .enumerate()
            .map(|(i, &t)| TraceRecord::new(Duration::from_millis(t), 1000, 100, i as u64 + 1))
            .collect()
    }

    fn offsets_ms(records: &[TraceRecord]) -> Vec<u128> {
        records.iter().map(|r| r.arrival.as_millis()).collect()
    }

    #[test]
    fn window_then_limit_then_rebase() {
        let opts = TimelineOptions {
            start: Some(Duration::from_millis(1000)),
            end: Some(Duration::from_millis(4000)),
            limit: Some(2),
            ..TimelineOptions::default()
        };
        let (out, report) =
            apply(at(&[500, 1000, 2500, 3000, 4400, 9000]), &opts).expect("applies");
        assert_eq!(offsets_ms(&out), vec![0, 500]);
        assert_eq!(out[0].line, 3);
        assert_eq!((report.dropped_by_window, report.dropped_by_limit), (3, 1));
    }

    #[test]
    fn time_scale_half_replays_twice_as_fast() {
        let opts = TimelineOptions {
            time_scale: Some(TimeScale::Factor(0.5)),
            ..TimelineOptions::default()
        };
        let (out, _) = apply(at(&[1000, 2000, 5000]), &opts).expect("applies");
        assert_eq!(offsets_ms(&out), vec![0, 500, 2000]);
    }

    #[test]
    fn target_rate_sets_records_per_second() {
        let opts = TimelineOptions {
            time_scale: Some(TimeScale::TargetRate(2.0)),
            ..TimelineOptions::default()
        };
        let (out, report) = apply(at(&[0, 1000, 4000, 10_000]), &opts).expect("applies");
        // 4 records over 10 s is 0.4/s; at 2/s they span 2 s.
        assert_eq!(offsets_ms(&out), vec![0, 200, 800, 2000]);
        assert!((report.time_factor - 0.2).abs() < 1e-12);
    }

    #[test]
    fn bad_factors_and_empty_results_are_errors() {
        let opts = TimelineOptions {
            time_scale: Some(TimeScale::Factor(0.0)),
            ..TimelineOptions::default()
        };
        assert!(matches!(
            apply(at(&[0, 1]), &opts),
            Err(TimelineError::BadFactor { .. })
        ));
        let opts = TimelineOptions {
            start: Some(Duration::from_secs(100)),
            ..TimelineOptions::default()
        };
        assert!(matches!(
            apply(at(&[0, 1]), &opts),
            Err(TimelineError::NothingLeft { .. })
        ));
    }

    #[test]
    fn clamped_record_keeps_the_blocks_that_fit() {
        let mut records = at(&[0, 1]);
        records[0].input_tokens = 2000;
        records[0].prefix = Some(PrefixBlocks {
            hash_ids: vec![1, 2, 3, 4],
            block_size: 512,
        });
        let counts = clamp(&mut records, Some(1025), Some(50));
        assert_eq!(counts, (1, 2, 2));
        assert_eq!(records[0].input_tokens, 1025);
        assert_eq!(
            records[0].prefix.as_ref().map(|p| p.hash_ids.clone()),
            Some(vec![1, 2, 3])
        );
        assert!(records[0].clamped && records[1].clamped);
        assert_eq!(records[1].input_tokens, 1000);
    }
}
