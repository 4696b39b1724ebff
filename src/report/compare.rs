//! `tracebench compare A B`: the change of every headline metric between two runs, with
//! whether the change is for the better. Pure text from two summaries.

use std::fmt::Write;

use crate::metrics::{Distribution, Summary};

/// Which direction of change is an improvement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    /// Larger is better (throughput, completed).
    Higher,
    /// Smaller is better (latency, failures).
    Lower,
}

/// One headline metric of a summary.
#[derive(Debug, Clone, PartialEq)]
pub struct Headline {
    /// Name with unit, e.g. `p99 TTFT (ms)`.
    pub name: String,
    /// The value; `None` where the run has none.
    pub value: Option<f64>,
    /// Which way is better.
    pub better: Better,
}

fn headline(name: &str, value: Option<f64>, better: Better) -> Headline {
    Headline {
        name: name.to_string(),
        value,
        better,
    }
}

fn latency(out: &mut Vec<Headline>, short: &str, d: &Distribution) {
    let stats = [
        ("mean", d.mean),
        ("p50", d.p50),
        ("p90", d.p90),
        ("p99", d.p99),
        ("max", d.max),
    ];
    for (stat, value) in stats {
        out.push(headline(
            &format!("{stat} {short} (ms)"),
            value,
            Better::Lower,
        ));
    }
}

/// The headline metrics of `s`, in report order.
pub fn headlines(s: &Summary) -> Vec<Headline> {
    let count = |n: usize| Some(n as f64);
    let mut out = vec![
        headline("completed", count(s.completed), Better::Higher),
        headline("failed", count(s.failed), Better::Lower),
        headline(
            "failed share (%)",
            s.failure_share.map(|v| v * 100.0),
            Better::Lower,
        ),
        headline("duration (s)", Some(s.duration_s), Better::Lower),
        headline(
            "request throughput (req/s)",
            s.request_throughput,
            Better::Higher,
        ),
        headline(
            "output throughput (tok/s)",
            s.output_throughput,
            Better::Higher,
        ),
        headline(
            "total token throughput (tok/s)",
            s.total_token_throughput,
            Better::Higher,
        ),
        headline(
            "request goodput (req/s)",
            s.goodput.as_ref().and_then(|g| g.request_goodput),
            Better::Higher,
        ),
    ];
    latency(&mut out, "TTFT", &s.ttft_ms);
    latency(&mut out, "TPOT", &s.tpot_ms);
    latency(&mut out, "ITL", &s.itl_ms);
    latency(&mut out, "E2EL", &s.e2el_ms);
    out.push(headline(
        "p99 send lag (ms)",
        s.send_lag_ms.p99,
        Better::Lower,
    ));
    out.push(headline(
        "max in flight",
        count(s.max_in_flight),
        Better::Lower,
    ));
    out
}

/// The comparison table: each metric in A and B, the change and the change in percent,
/// with `+`/`-` marking better/worse.
pub fn render(a_label: &str, a: &Summary, b_label: &str, b: &Summary) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "A: {a_label}\nB: {b_label}");
    let _ = writeln!(
        out,
        "{:<32} {:>12} {:>12} {:>12} {:>9}",
        "metric", "A", "B", "B − A", "change"
    );
    for (ha, hb) in headlines(a).iter().zip(headlines(b)) {
        let _ = writeln!(out, "{}", line(ha, &hb).trim_end());
    }
    let _ = writeln!(
        out,
        "change: + better, - worse, = same (per metric direction)"
    );
    out
}

fn line(a: &Headline, b: &Headline) -> String {
    let cell = |v: Option<f64>| v.map_or_else(|| "n/a".to_string(), |v| format!("{v:.2}"));
    let delta = a.value.zip(b.value).map(|(a, b)| b - a);
    let change = match (a.value, delta) {
        (Some(a_value), Some(d)) => format!("{}{}", verdict(d, a.better), percent(a_value, d)),
        _ => String::new(),
    };
    let delta_cell = delta.map_or_else(|| "n/a".to_string(), |d| format!("{d:+.2}"));
    format!(
        "{:<32} {:>12} {:>12} {:>12} {:>9}",
        a.name,
        cell(a.value),
        cell(b.value),
        delta_cell,
        change
    )
}

fn verdict(delta: f64, better: Better) -> char {
    match (delta.partial_cmp(&0.0), better) {
        (Some(std::cmp::Ordering::Greater), Better::Higher)
        | (Some(std::cmp::Ordering::Less), Better::Lower) => '+',
        (Some(std::cmp::Ordering::Equal), _) | (None, _) => '=',
        _ => '-',
    }
}

fn percent(base: f64, delta: f64) -> String {
    if base == 0.0 {
        String::new()
    } else {
        format!(" {:+.1}%", delta / base * 100.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lower_latency_is_marked_better() {
        let mut a = Summary::default();
        let mut b = Summary::default();
        a.ttft_ms.p99 = Some(200.0);
        b.ttft_ms.p99 = Some(150.0);
        a.output_throughput = Some(100.0);
        b.output_throughput = Some(90.0);
        let text = render("a", &a, "b", &b);
        let ttft = text
            .lines()
            .find(|l| l.starts_with("p99 TTFT"))
            .expect("p99 TTFT row");
        assert!(ttft.ends_with("+ -25.0%"), "{ttft}");
        let out = text
            .lines()
            .find(|l| l.starts_with("output throughput"))
            .expect("row");
        assert!(out.ends_with("- -10.0%"), "{out}");
        let mean = text
            .lines()
            .find(|l| l.starts_with("mean TTFT"))
            .expect("row");
        assert!(mean.contains("n/a"), "{mean}");
    }
}
