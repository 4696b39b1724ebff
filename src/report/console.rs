//! The console report: the seed's lines (TTFT, TPOT, E2E with avg/p50/p90/p99/max, duration,
//! throughput), then vLLM's `benchmark_serving` result table, then tracebench's own lines,
//! then the warnings with what to change. A pure function of the summary; stdout only.

use std::fmt::Write;

use super::warnings::{self, Warning};
use crate::metrics::{Distribution, Summary};

/// Width of vLLM's table.
const TABLE_WIDTH: usize = 50;
/// Width of vLLM's label column.
const LABEL_WIDTH: usize = 40;

/// The whole console report, ending with a newline.
pub fn render(summary: &Summary) -> String {
    let mut out = String::new();
    seed_lines(&mut out, summary);
    out.push('\n');
    vllm_table(&mut out, summary);
    tracebench_lines(&mut out, summary);
    out.push_str(&"=".repeat(TABLE_WIDTH));
    out.push('\n');
    warning_lines(&mut out, &warnings::collect(summary));
    out
}

/// A value with two decimals, or `n/a`.
fn num(value: Option<f64>) -> String {
    value.map_or_else(|| "n/a".to_string(), |v| format!("{v:.2}"))
}

/// A share (0–1) as a percentage with one decimal, or `n/a`.
fn pct(share: Option<f64>) -> String {
    share.map_or_else(|| "n/a".to_string(), |v| format!("{:.1}", v * 100.0))
}

/// The seed's five statistics of one metric, divided by `scale` (1 for ms, 1000 for s).
fn seed_stats(d: &Distribution, scale: f64, decimals: usize) -> String {
    let v = |x: Option<f64>| {
        x.map_or_else(
            || "n/a".to_string(),
            |x| format!("{:.decimals$}", x / scale),
        )
    };
    format!(
        "avg {}, p50 {}, p90 {}, p99 {}, max {} (n={})",
        v(d.mean),
        v(d.p50),
        v(d.p90),
        v(d.p99),
        v(d.max),
        d.count
    )
}

/// The seed client's lines, in its order.
fn seed_lines(out: &mut String, s: &Summary) {
    let _ = writeln!(
        out,
        "Requests: {} sent, {} completed, {} failed ({}%), {} skipped; tokens: {} input, {} output",
        s.sent,
        s.completed,
        s.failed,
        pct(s.failure_share),
        s.skipped,
        s.total_input_tokens,
        s.total_output_tokens
    );
    let _ = writeln!(out, "TTFT (ms): {}", seed_stats(&s.ttft_ms, 1.0, 2));
    let _ = writeln!(out, "TPOT (ms): {}", seed_stats(&s.tpot_ms, 1.0, 2));
    let _ = writeln!(out, "E2E (s):   {}", seed_stats(&s.e2el_ms, 1e3, 3));
    let _ = writeln!(out, "Duration: {:.2} s", s.duration_s);
    let _ = writeln!(
        out,
        "Throughput: {} output tok/s, {} req/s",
        num(s.output_throughput),
        num(s.request_throughput)
    );
}

/// A centred section title in vLLM's style: `-----Title-----`.
fn title(out: &mut String, text: &str, fill: char) {
    // Python's `^` alignment: the odd fill character goes to the right.
    let pad = TABLE_WIDTH.saturating_sub(text.chars().count());
    let left = fill.to_string().repeat(pad / 2);
    let right = fill.to_string().repeat(pad - pad / 2);
    let _ = writeln!(out, "{left}{text}{right}");
}

fn row(out: &mut String, label: &str, value: impl std::fmt::Display) {
    let line = format!("{label:<LABEL_WIDTH$} {value}");
    let _ = writeln!(out, "{}", line.trim_end());
}

/// vLLM's result table: same labels, order and units.
fn vllm_table(out: &mut String, s: &Summary) {
    title(out, " Serving Benchmark Result ", '=');
    row(out, "Successful requests:", s.completed);
    row(out, "Failed requests:", s.failed);
    row(
        out,
        "Benchmark duration (s):",
        format!("{:.2}", s.duration_s),
    );
    row(out, "Total input tokens:", s.total_input_tokens);
    row(out, "Total generated tokens:", s.total_output_tokens);
    row(
        out,
        "Request throughput (req/s):",
        num(s.request_throughput),
    );
    if let Some(goodput) = &s.goodput {
        row(
            out,
            "Request goodput (req/s):",
            num(goodput.request_goodput),
        );
    }
    row(
        out,
        "Output token throughput (tok/s):",
        num(s.output_throughput),
    );
    row(
        out,
        "Peak output token throughput (tok/s):",
        num(s.max_output_tokens_per_s),
    );
    row(out, "Peak concurrent requests:", s.max_in_flight);
    row(
        out,
        "Total Token throughput (tok/s):",
        num(s.total_token_throughput),
    );

    latency_block(out, "Time to First Token", "TTFT", &s.ttft_ms);
    latency_block(
        out,
        "Time per Output Token (excl. 1st token)",
        "TPOT",
        &s.tpot_ms,
    );
    latency_block(out, "Inter-token Latency", "ITL", &s.itl_ms);
    latency_block(out, "End-to-end Latency", "E2EL", &s.e2el_ms);
}

fn latency_block(out: &mut String, heading: &str, short: &str, d: &Distribution) {
    title(out, heading, '-');
    row(out, &format!("Mean {short} (ms):"), num(d.mean));
    row(out, &format!("Median {short} (ms):"), num(d.p50));
    row(out, &format!("P99 {short} (ms):"), num(d.p99));
}

/// What vLLM does not print: failure share, schedule-based latency, send lag, queueing,
/// fidelity, cache and goodput share.
fn tracebench_lines(out: &mut String, s: &Summary) {
    title(out, "tracebench", '-');
    row(out, "Failed share of sent (%):", pct(s.failure_share));
    row(
        out,
        "Skipped / clamped records:",
        format!("{} / {}", s.skipped, s.clamped),
    );
    row(
        out,
        "P99 TTFT from schedule (ms):",
        num(s.ttft_scheduled_ms.p99),
    );
    row(
        out,
        "P99 E2EL from schedule (ms):",
        num(s.e2el_scheduled_ms.p99),
    );
    row(
        out,
        "Send lag p50 / p99 / max (ms):",
        format!(
            "{} / {} / {}",
            num(s.send_lag_ms.p50),
            num(s.send_lag_ms.p99),
            num(s.send_lag_ms.max)
        ),
    );
    if s.queue_wait_ms.count > 0 {
        row(out, "P99 queue wait (ms):", num(s.queue_wait_ms.p99));
    }
    if s.session_wait.children > 0 {
        row(
            out,
            "Session children delayed (%):",
            pct(s.session_wait.delayed_share),
        );
        row(
            out,
            "P99 session wait (ms):",
            num(s.session_wait.wait_ms.p99),
        );
    }
    row(out, "Max queued requests:", s.max_queued);
    row(
        out,
        "Prompt tokens exact (%):",
        pct(s.fidelity.prompt.exact_share),
    );
    row(
        out,
        "Completion tokens exact (%):",
        pct(s.fidelity.completion.exact_share),
    );
    row(out, "Cached prompt tokens (%):", pct(s.cached_tokens_share));
    if let Some(goodput) = &s.goodput {
        row(out, "Goodput share of sent (%):", pct(goodput.share));
    }
}

fn warning_lines(out: &mut String, warnings: &[Warning]) {
    for w in warnings {
        let _ = writeln!(out, "warning: {}", w.message);
        let _ = writeln!(out, "  fix: {}", w.fix);
    }
}
