//! The plots of `report.html`, built from the records: TTFT and E2E CDFs, ITL histogram,
//! each request's TTFT and E2E over time, requests in flight, output tokens/s, and send lag.
//! Latency plots use successful requests only, like the summary; failures are marked on
//! the latency-over-time plot so they are not hidden.

use super::chart::{Chart, Mark, Series};
use super::html::Plot;
use crate::metrics::{RequestMetrics, percentile, timeline};
use crate::replay::RequestRecord;

/// Buckets of the ITL histogram.
const ITL_BINS: usize = 40;
/// The ITL histogram's range ends here, so a few stalls do not flatten it.
const HISTOGRAM_UPPER_PERCENTILE: f64 = 99.5;
/// Buckets of the tokens/s-over-time plot.
const RATE_BUCKETS: f64 = 60.0;

/// Every plot of the run report.
pub fn run_plots(records: &[RequestRecord]) -> Vec<Plot> {
    let metrics: Vec<RequestMetrics> = records.iter().map(RequestMetrics::of).collect();
    let ok = || records.iter().zip(&metrics).filter(|(_, m)| m.ok);
    let ttft: Vec<f64> = ok().filter_map(|(_, m)| m.ttft_ms).collect();
    let e2el: Vec<f64> = ok().filter_map(|(_, m)| m.e2el_ms).collect();
    let itl: Vec<f64> = ok().flat_map(|(_, m)| m.itl_ms.iter().copied()).collect();

    let plots = [
        ("TTFT, cumulative distribution", cdf("TTFT (ms)", &ttft)),
        (
            "E2E latency, cumulative distribution",
            cdf("E2E latency (ms)", &e2el),
        ),
        (
            "Inter-token latency, histogram",
            histogram("ITL (ms)", &itl),
        ),
        (
            "TTFT of each request over time",
            latency_over_time(records, &metrics, "TTFT", |m| m.ttft_ms),
        ),
        (
            "E2E latency of each request over time",
            latency_over_time(records, &metrics, "E2E", |m| m.e2el_ms),
        ),
        ("Requests in flight", in_flight(records)),
        ("Output tokens per second", output_rate(records, &metrics)),
        ("Send lag (actual − scheduled send)", send_lag(records)),
    ];
    plots
        .into_iter()
        .map(|(title, chart)| Plot::from_chart(title, &chart))
        .collect()
}

fn series(name: &str, color: usize, mark: Mark, points: Vec<(f64, f64)>) -> Series {
    Series {
        name: name.to_string(),
        color,
        mark,
        points,
    }
}

/// Share of samples ≤ x, as a step line.
fn cdf(x_label: &str, samples: &[f64]) -> Chart {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len() as f64;
    let points = sorted
        .iter()
        .enumerate()
        .map(|(i, &x)| (x, (i + 1) as f64 / n))
        .collect();
    Chart {
        x_label: x_label.to_string(),
        y_label: "share of requests".to_string(),
        y_from_zero: true,
        series: vec![series("", 0, Mark::Step, points)],
    }
}

/// Counts in equal-width bins from the minimum to the p99.5, so a long tail does not
/// squeeze the body into one bar; how many samples lie beyond is said in the axis label.
fn histogram(x_label: &str, samples: &[f64]) -> Chart {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let (Some(lo), Some(hi)) = (
        sorted.first().copied(),
        percentile(&sorted, HISTOGRAM_UPPER_PERCENTILE),
    ) else {
        return Chart {
            x_label: x_label.to_string(),
            y_label: "chunks".to_string(),
            y_from_zero: true,
            series: Vec::new(),
        };
    };
    // A constant sample set still gets bars of a visible width.
    let width = ((hi - lo) / ITL_BINS as f64).max(hi.abs().max(1.0) * 1e-3);
    let mut counts = vec![0usize; ITL_BINS];
    let mut beyond = 0usize;
    for &x in &sorted {
        match ((x - lo) / width) as usize {
            bin if bin < ITL_BINS => counts[bin] += 1,
            _ if x <= hi => counts[ITL_BINS - 1] += 1,
            _ => beyond += 1,
        }
    }
    let points = counts
        .iter()
        .enumerate()
        .map(|(i, &c)| (lo + i as f64 * width, c as f64))
        .collect();
    let label = if beyond > 0 {
        format!("{x_label}; {beyond} above {hi:.1} not shown")
    } else {
        x_label.to_string()
    };
    Chart {
        x_label: label,
        y_label: "chunks".to_string(),
        y_from_zero: true,
        series: vec![series(
            "",
            0,
            Mark::Bars {
                width_micro: (width * 1e6) as u64,
            },
            points,
        )],
    }
}

/// One latency of each successful request at its send time, failures as crosses at
/// their time to failure.
fn latency_over_time(
    records: &[RequestRecord],
    metrics: &[RequestMetrics],
    name: &str,
    of: fn(&RequestMetrics) -> Option<f64>,
) -> Chart {
    let pairs = || records.iter().zip(metrics);
    let ok: Vec<(f64, f64)> = pairs()
        .filter(|(_, m)| m.ok)
        .filter_map(|(r, m)| Some((r.sent_s?, of(m)?)))
        .collect();
    let failed: Vec<(f64, f64)> = pairs()
        .filter(|(_, m)| !m.ok)
        .filter_map(|(r, m)| Some((r.sent_s?, m.e2el_ms?)))
        .collect();
    // A legend only when there are failures to tell apart: it would hide early points.
    let mut all = vec![series(
        if failed.is_empty() { "" } else { name },
        0,
        Mark::Dots,
        ok,
    )];
    if !failed.is_empty() {
        all.push(series("failed (time to failure)", 3, Mark::Crosses, failed));
    }
    Chart {
        x_label: "send time (s from run start)".to_string(),
        y_label: format!("{name} (ms)"),
        y_from_zero: true,
        series: all,
    }
}

fn in_flight(records: &[RequestRecord]) -> Chart {
    let flight = timeline::steps(&timeline::in_flight_intervals(records));
    let queued = timeline::steps(&timeline::queued_intervals(records));
    let points =
        |steps: Vec<timeline::Step>| steps.iter().map(|s| (s.at_s, s.count as f64)).collect();
    Chart {
        x_label: "time (s from run start)".to_string(),
        y_label: "requests".to_string(),
        y_from_zero: true,
        series: vec![
            series("in flight", 0, Mark::Step, points(flight)),
            series("waiting for first token", 1, Mark::Step, points(queued)),
        ],
    }
}

/// Output tokens of successful requests per second, each request's tokens spread evenly
/// over its output-bearing chunks.
fn output_rate(records: &[RequestRecord], metrics: &[RequestMetrics]) -> Chart {
    let chunks = || {
        records
            .iter()
            .zip(metrics)
            .filter(|(_, m)| m.ok)
            .flat_map(|(r, _)| r.chunk_s.iter())
    };
    let start = chunks().copied().fold(f64::INFINITY, f64::min);
    let end = chunks().copied().fold(f64::NEG_INFINITY, f64::max);
    let bucket_s = nice_bucket((end - start) / RATE_BUCKETS);
    let mut tokens = vec![0.0f64; ((end - start) / bucket_s).floor().max(0.0) as usize + 1];
    for (record, m) in records.iter().zip(metrics).filter(|(_, m)| m.ok) {
        let per_chunk = m.output_tokens as f64 / record.chunk_s.len().max(1) as f64;
        for &t in &record.chunk_s {
            tokens[((t - start) / bucket_s) as usize] += per_chunk;
        }
    }
    let points = if start.is_finite() {
        tokens
            .iter()
            .enumerate()
            .map(|(i, &n)| (start + i as f64 * bucket_s, n / bucket_s))
            .collect()
    } else {
        Vec::new()
    };
    Chart {
        x_label: format!("time (s from run start; {bucket_s} s buckets)"),
        y_label: "output tokens/s".to_string(),
        y_from_zero: true,
        series: vec![series("", 2, Mark::Step, points)],
    }
}

/// A bucket width of 1, 2 or 5 × 10^k seconds, at least `raw_s` (and at least 1 ms).
fn nice_bucket(raw_s: f64) -> f64 {
    if !(raw_s.is_finite() && raw_s > 1e-3) {
        return 1e-3_f64.max(if raw_s.is_finite() { raw_s } else { 1.0 });
    }
    let magnitude = 10f64.powf(raw_s.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|&b| b >= raw_s)
        .unwrap_or(10.0 * magnitude)
}

fn send_lag(records: &[RequestRecord]) -> Chart {
    let points = records
        .iter()
        .filter_map(|r| Some((r.scheduled_s, r.send_lag_ms()?)))
        .collect();
    Chart {
        x_label: "scheduled send (s from run start)".to_string(),
        y_label: "send lag (ms)".to_string(),
        y_from_zero: true,
        series: vec![series("", 4, Mark::Dots, points)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_widths_are_round() {
        assert_eq!(nice_bucket(0.7), 1.0);
        assert_eq!(nice_bucket(1.2), 2.0);
        assert_eq!(nice_bucket(3.0), 5.0);
        assert_eq!(nice_bucket(0.03), 0.05);
        assert_eq!(nice_bucket(0.0), 1e-3);
    }
}
