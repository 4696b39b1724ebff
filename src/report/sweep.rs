//! Sweep reports: one row per run of `tracebench sweep` (load level against TTFT, TPOT and
//! E2E percentiles and throughput), and `sweep.html` with load–latency plots, where load is
//! the throughput each run achieved. The sweep's replay loop lives elsewhere; these are
//! pure renderers of the runs' summaries.
//!
//! An interrupted run (its summary `partial`) is marked in its row; its numbers cover only
//! what finished, so it is left out of the load–latency plots.

use std::fmt::Write;
use std::path::Path;

use super::chart::{Chart, Mark, Series};
use super::html::{Plot, escape};
use super::{ReportError, write_file};
use crate::metrics::{Distribution, Summary};

/// One run of a sweep: its load label (e.g. the time scale `0.4`) and its summary.
pub type SweepRun<'a> = (&'a str, &'a Summary);

const HEADER: [&str; 13] = [
    "load",
    "ok",
    "failed",
    "req/s",
    "out tok/s",
    "TTFT p50",
    "TTFT p90",
    "TTFT p99",
    "TPOT p50",
    "TPOT p99",
    "E2E p50",
    "E2E p99",
    "lag p99",
];

/// Appended to the load label of an interrupted run.
const PARTIAL_MARK: &str = " (partial)";

/// The note under a table with an interrupted run.
const PARTIAL_NOTE: &str = "(partial) = interrupted: its numbers cover only the requests that \
     finished, and it is not plotted";

/// The row of one run, as text cells (latencies in ms).
fn cells(label: &str, s: &Summary) -> Vec<String> {
    let v = |x: Option<f64>| x.map_or_else(|| "n/a".to_string(), |x| format!("{x:.1}"));
    let mark = if s.partial { PARTIAL_MARK } else { "" };
    vec![
        format!("{label}{mark}"),
        s.completed.to_string(),
        s.failed.to_string(),
        s.request_throughput
            .map_or_else(|| "n/a".to_string(), |x| format!("{x:.2}")),
        v(s.output_throughput),
        v(s.ttft_ms.p50),
        v(s.ttft_ms.p90),
        v(s.ttft_ms.p99),
        v(s.tpot_ms.p50),
        v(s.tpot_ms.p99),
        v(s.e2el_ms.p50),
        v(s.e2el_ms.p99),
        v(s.send_lag_ms.p99),
    ]
}

/// The sweep table for the console: one line per run, latencies in ms.
pub fn table(runs: &[SweepRun<'_>]) -> String {
    let rows: Vec<Vec<String>> = runs.iter().map(|(label, s)| cells(label, s)).collect();
    let mut widths: Vec<usize> = HEADER.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }

    let mut out = String::new();
    let header: Vec<String> = HEADER.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:>w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  "));
    }
    let _ = writeln!(
        out,
        "(latencies in ms over successful requests; load = the sweep's label)"
    );
    if runs.iter().any(|(_, s)| s.partial) {
        let _ = writeln!(out, "{PARTIAL_NOTE}");
    }
    out
}

/// Latency percentiles against achieved request throughput, one line per percentile.
fn load_latency(runs: &[SweepRun<'_>], metric: &str, of: fn(&Summary) -> &Distribution) -> Chart {
    let line = |name: &str, color: usize, p: fn(&Distribution) -> Option<f64>| {
        let mut points: Vec<(f64, f64)> = runs
            .iter()
            .filter(|(_, s)| !s.partial)
            .filter_map(|(_, s)| Some((s.request_throughput?, p(of(s))?)))
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        Series {
            name: name.to_string(),
            color,
            mark: Mark::Line,
            points,
        }
    };
    Chart {
        x_label: "achieved request throughput (req/s)".to_string(),
        y_label: format!("{metric} (ms)"),
        y_from_zero: true,
        series: vec![
            line("p50", 0, |d| d.p50),
            line("p90", 2, |d| d.p90),
            line("p99", 1, |d| d.p99),
        ],
    }
}

/// The plots of `sweep.html`.
pub fn plots(runs: &[SweepRun<'_>]) -> Vec<Plot> {
    let charts = [
        (
            "TTFT against load",
            load_latency(runs, "TTFT", |s| &s.ttft_ms),
        ),
        (
            "TPOT against load",
            load_latency(runs, "TPOT", |s| &s.tpot_ms),
        ),
        (
            "E2E latency against load",
            load_latency(runs, "E2E latency", |s| &s.e2el_ms),
        ),
        ("ITL against load", load_latency(runs, "ITL", |s| &s.itl_ms)),
    ];
    charts
        .into_iter()
        .map(|(title, chart)| Plot::from_chart(title, &chart))
        .collect()
}

/// The `sweep.html` page: the table and the load–latency plots.
pub fn render_html(title: &str, runs: &[SweepRun<'_>]) -> String {
    let mut out = String::new();
    let title = escape(title);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         <style>{}</style></head><body>\n<h1>{title}</h1>\n<table><tr>",
        super::html::STYLE
    );
    for h in HEADER {
        let _ = write!(out, "<th>{h}</th>");
    }
    out.push_str("</tr>");
    for (label, s) in runs {
        out.push_str(if s.partial {
            "<tr class=\"partial\">"
        } else {
            "<tr>"
        });
        for cell in cells(label, s) {
            let _ = write!(out, "<td>{}</td>", escape(&cell));
        }
        out.push_str("</tr>");
    }
    out.push_str("</table><p>Latencies in ms over successful requests.</p>\n");
    if runs.iter().any(|(_, s)| s.partial) {
        let _ = writeln!(out, "<p class=\"warn\">{}</p>", escape(PARTIAL_NOTE));
    }
    super::html::plots_block(&mut out, &plots(runs));
    out.push_str("</body></html>\n");
    out
}

/// Writes `sweep.html` to `path`.
pub fn write_html(path: &Path, title: &str, runs: &[SweepRun<'_>]) -> Result<(), ReportError> {
    write_file(path, render_html(title, runs))
}
