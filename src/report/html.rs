//! `report.html`: one self-contained page (inline CSS and SVG, no scripts, no network) with
//! the run's configuration, the summary table, the warnings and the plots.

use std::fmt::Write;

use super::RunInfo;
use super::warnings::Warning;
use crate::metrics::{Distribution, Summary};

/// One plot: a title and its SVG markup.
#[derive(Debug, Clone)]
pub struct Plot {
    /// Shown above the plot.
    pub title: String,
    /// A complete `<svg>` element.
    pub svg: String,
    /// Series names and their colours (`#rrggbb`), shown under the title.
    pub legend: Vec<(String, String)>,
}

pub(super) const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}\
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em}\
table{border-collapse:collapse;font-size:.9em}td,th{padding:.25em .7em;border-bottom:1px solid #ddd;text-align:right}\
th:first-child,td:first-child{text-align:left}.warn{background:#fff4e0;border-left:4px solid #e69500;padding:.5em 1em;margin:.5em 0}\
.plots{display:grid;grid-template-columns:1fr 1fr;gap:1em}.plot h3{font-size:1em;margin:.3em 0}\
.kv td{text-align:left}.key{font-size:.85em;margin-right:1.2em}\
.key i{display:inline-block;width:.9em;height:.9em;margin-right:.35em;vertical-align:-.1em}\
.plot svg{display:block}.keys{min-height:1.4em}.flag{white-space:nowrap}code{font-size:.95em}\
tr.partial td{background:#fff4e0}";

/// Escapes text for HTML.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The page.
pub fn render(run: &RunInfo, summary: &Summary, warnings: &[Warning], plots: &[Plot]) -> String {
    let mut out = String::new();
    let title = format!("tracebench report: {}", escape(&run.trace));
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         <style>{STYLE}</style></head><body>\n<h1>{title}</h1>\n"
    );
    run_table(&mut out, run, summary);
    options_block(&mut out, run);
    warnings_block(&mut out, warnings);
    headline_table(&mut out, summary);
    latency_table(&mut out, summary);
    plots_block(&mut out, plots);
    out.push_str("</body></html>\n");
    out
}

fn run_table(out: &mut String, run: &RunInfo, s: &Summary) {
    let partial = if s.partial {
        " (partial: interrupted)"
    } else {
        ""
    };
    let rows = [
        ("started", run.started_at.clone() + partial),
        ("target", run.base_url.clone()),
        ("model", run.model.clone()),
        ("tokenizer", run.tokenizer.clone()),
        ("prompt mode", run.prompt_mode.clone()),
        ("seed", run.seed.to_string()),
        ("tracebench", run.tracebench_version.clone()),
    ];
    out.push_str("<table class=\"kv\">");
    for (key, value) in rows {
        let _ = write!(
            out,
            "<tr><td>{key}</td><td><code>{}</code></td></tr>",
            escape(&value)
        );
    }
    out.push_str("</table>\n");
}

/// The run's free-form options, calibration and connection counts, folded away.
fn options_block(out: &mut String, run: &RunInfo) {
    let mut options = serde_json::json!({ "config": run.config, "calibration": run.calibration });
    if let Some(connections) = run.connections {
        options["connections"] = serde_json::json!(connections);
    }
    let text = serde_json::to_string_pretty(&options).unwrap_or_default();
    let _ = writeln!(
        out,
        "<details><summary>all options</summary><pre>{}</pre></details>",
        escape(&text)
    );
}

fn warnings_block(out: &mut String, warnings: &[Warning]) {
    for w in warnings {
        let _ = writeln!(
            out,
            "<div class=\"warn\"><b>warning:</b> {}<br><b>fix:</b> {}</div>",
            escape(&w.message),
            flags_as_code(&escape(&w.fix))
        );
    }
}

/// Wraps each command-line flag (`--name`) of already-escaped `text` in `<code>` so the
/// browser does not break the line inside it.
fn flags_as_code(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("--") {
        let starts_token = rest[..at]
            .chars()
            .last()
            .is_none_or(|c| !c.is_alphanumeric());
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let len = 2 + tail[2..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .unwrap_or(tail.len() - 2);
        if starts_token && len > 2 {
            let _ = write!(out, "<code class=\"flag\">{}</code>", &tail[..len]);
        } else {
            out.push_str(&tail[..len]);
        }
        rest = &tail[len..];
    }
    out.push_str(rest);
    out
}

fn opt(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "–".to_string(), |v| format!("{v:.decimals$}"))
}

fn headline_table(out: &mut String, s: &Summary) {
    let pct = |v: Option<f64>| opt(v.map(|v| v * 100.0), 1);
    let rows = [
        (
            "requests (sent / completed / failed / skipped)",
            format!(
                "{} / {} / {} / {}",
                s.sent, s.completed, s.failed, s.skipped
            ),
        ),
        ("failed share of sent (%)", pct(s.failure_share)),
        ("duration (s)", format!("{:.2}", s.duration_s)),
        ("request throughput (req/s)", opt(s.request_throughput, 2)),
        (
            "input / output tokens",
            format!("{} / {}", s.total_input_tokens, s.total_output_tokens),
        ),
        ("output throughput (tok/s)", opt(s.output_throughput, 1)),
        (
            "peak output throughput (tok/s, busiest second)",
            opt(s.max_output_tokens_per_s, 1),
        ),
        (
            "total token throughput (tok/s)",
            opt(s.total_token_throughput, 1),
        ),
        (
            "max in flight / max queued",
            format!("{} / {}", s.max_in_flight, s.max_queued),
        ),
        (
            "prompt / completion tokens exact (%)",
            format!(
                "{} / {}",
                pct(s.fidelity.prompt.exact_share),
                pct(s.fidelity.completion.exact_share)
            ),
        ),
        ("cached prompt tokens (%)", pct(s.cached_tokens_share)),
        (
            "goodput (req/s, share %)",
            s.goodput.as_ref().map_or("–".into(), |g| {
                format!("{} ({})", opt(g.request_goodput, 2), pct(g.share))
            }),
        ),
    ];
    out.push_str("<h2>Summary</h2><table class=\"kv\">");
    for (key, value) in rows {
        let _ = write!(out, "<tr><td>{key}</td><td>{}</td></tr>", escape(&value));
    }
    out.push_str("</table>\n");
}

fn latency_table(out: &mut String, s: &Summary) {
    let rows: [(&str, &Distribution); 9] = [
        ("TTFT", &s.ttft_ms),
        ("TPOT", &s.tpot_ms),
        ("ITL", &s.itl_ms),
        ("E2E", &s.e2el_ms),
        ("TTFT from schedule", &s.ttft_scheduled_ms),
        ("E2E from schedule", &s.e2el_scheduled_ms),
        ("send lag", &s.send_lag_ms),
        ("queue wait", &s.queue_wait_ms),
        ("session wait", &s.session_wait.wait_ms),
    ];
    // The failure share sits beside the latencies it is excluded from.
    let failed = match s.failure_share {
        Some(share) => format!("; {:.1}% of {} sent requests failed", share * 100.0, s.sent),
        None => String::new(),
    };
    let _ = write!(
        out,
        "<h2>Latency (ms; successful requests only{failed})</h2><table><tr><th>metric</th>\
         <th>count</th><th>mean</th><th>std</th><th>p50</th><th>p90</th><th>p95</th><th>p99</th>\
         <th>p99.9</th><th>max</th></tr>"
    );
    for (name, d) in rows {
        let cells = [d.mean, d.std, d.p50, d.p90, d.p95, d.p99, d.p99_9, d.max];
        let _ = write!(out, "<tr><td>{name}</td><td>{}</td>", d.count);
        for cell in cells {
            let _ = write!(out, "<td>{}</td>", opt(cell, 2));
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>\n");
}

pub(super) fn plots_block(out: &mut String, plots: &[Plot]) {
    if plots.is_empty() {
        return;
    }
    out.push_str("<h2>Plots</h2><div class=\"plots\">\n");
    for plot in plots {
        let _ = write!(
            out,
            "<div class=\"plot\"><h3>{}</h3><div class=\"keys\">",
            escape(&plot.title)
        );
        for (name, color) in &plot.legend {
            let _ = write!(
                out,
                "<span class=\"key\"><i style=\"background:{color}\"></i>{}</span>",
                escape(name)
            );
        }
        let _ = writeln!(out, "</div>{}</div>", plot.svg);
    }
    out.push_str("</div>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_become_unbreakable_code() {
        assert_eq!(
            flags_as_code("raise --first-token-timeout/--timeout (a--b) --"),
            "raise <code class=\"flag\">--first-token-timeout</code>/<code class=\"flag\">--timeout</code> (a--b) --"
        );
    }
}
