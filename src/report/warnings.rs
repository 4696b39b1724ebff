//! Warnings about a measurement: conditions under which the numbers may mislead, each
//! with what to change. Decided from the summary alone, so every report shows the same ones.

use serde::{Deserialize, Serialize};

use crate::metrics::{Distribution, Summary};
use crate::replay::Outcome;

/// A send lag p99 above this means the client, not the server, shaped the arrivals: it
/// is far above timer jitter (about 1 ms) and a visible share of a typical TTFT.
pub const SEND_LAG_P99_LIMIT_MS: f64 = 50.0;

/// Fewer samples than this and a p99 is decided by one or two requests.
pub const P99_MIN_SAMPLES: usize = 100;

/// Below this share of exact token counts, the server did not see the trace's lengths.
pub const FIDELITY_MIN_EXACT_SHARE: f64 = 0.95;

/// One warning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Warning {
    /// A stable name: `partial`, `send_lag`, `failures`, `skipped`, `few_samples`,
    /// `prompt_fidelity`, `completion_fidelity`, `tokenizer_counts`, `chunk_counts`.
    pub kind: String,
    /// What was observed.
    pub message: String,
    /// What to change.
    pub fix: String,
}

fn warning(kind: &str, message: String, fix: &str) -> Warning {
    Warning {
        kind: kind.to_string(),
        message,
        fix: fix.to_string(),
    }
}

/// Every warning that applies to `summary`, most serious first.
pub fn collect(summary: &Summary) -> Vec<Warning> {
    let checks: [fn(&Summary) -> Option<Warning>; 9] = [
        partial,
        failures,
        skipped,
        send_lag,
        few_samples,
        prompt_fidelity,
        completion_fidelity,
        tokenizer_counts,
        chunk_counts,
    ];
    checks.iter().filter_map(|check| check(summary)).collect()
}

fn partial(s: &Summary) -> Option<Warning> {
    s.partial.then(|| {
        warning(
            "partial",
            "the run was interrupted; the numbers cover only what finished before".into(),
            "rerun to completion for comparable results",
        )
    })
}

fn failures(s: &Summary) -> Option<Warning> {
    if s.failed == 0 {
        return None;
    }
    let causes: Vec<String> = s
        .failed_by_cause
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    let message = format!(
        "{} of {} sent requests failed ({:.1}%: {}); latency statistics cover successful requests only",
        s.failed,
        s.sent,
        s.failure_share.unwrap_or(0.0) * 100.0,
        causes.join(", ")
    );
    // An interrupted run cancels what is still in flight: not the server's doing.
    let cancelled = Outcome::Cancelled.to_string();
    let only_cancelled = s.failed_by_cause.keys().all(|cause| *cause == cancelled);
    let fix = if s.partial && only_cancelled {
        "these requests were still in flight when the run was interrupted; --grace gives them longer to finish"
    } else {
        "see the error column of requests.csv; if the server is overloaded, replay slower (--time-scale above 1, --target-rate) or raise --first-token-timeout/--timeout"
    };
    Some(warning("failures", message, fix))
}

fn skipped(s: &Summary) -> Option<Warning> {
    (s.skipped > 0).then(|| {
        warning(
            "skipped",
            format!("{} of {} records were never sent", s.skipped, s.requests),
            "check --limit, --start/--end and whether the run was interrupted, if this was not intended",
        )
    })
}

fn send_lag(s: &Summary) -> Option<Warning> {
    let p99 = s.send_lag_ms.p99?;
    (p99 > SEND_LAG_P99_LIMIT_MS).then(|| {
        let max = s.send_lag_ms.max.unwrap_or(p99);
        warning(
            "send_lag",
            format!(
                "the client fell behind the schedule: send lag p99 {p99:.1} ms, max {max:.1} ms \
                 (limit {SEND_LAG_P99_LIMIT_MS} ms); arrivals were shaped by the client, not the trace"
            ),
            "replay slower (--time-scale above 1, a lower --target-rate or --request-rate) or run tracebench on a less loaded machine",
        )
    })
}

fn few_samples(s: &Summary) -> Option<Warning> {
    let metrics: [(&str, &Distribution); 4] = [
        ("TTFT", &s.ttft_ms),
        ("TPOT", &s.tpot_ms),
        ("ITL", &s.itl_ms),
        ("E2E", &s.e2el_ms),
    ];
    let few: Vec<String> = metrics
        .iter()
        .filter(|(_, d)| d.count > 0 && d.count < P99_MIN_SAMPLES)
        .map(|(name, d)| format!("{name} on {}", d.count))
        .collect();
    (!few.is_empty()).then(|| {
        warning(
            "few_samples",
            format!(
                "p99 rests on fewer than {P99_MIN_SAMPLES} samples ({}); it is decided by one or two requests",
                few.join(", ")
            ),
            "replay more requests (a larger --limit, a wider --start/--end window) before trusting p99",
        )
    })
}

fn prompt_fidelity(s: &Summary) -> Option<Warning> {
    let p = &s.fidelity.prompt;
    let share = p.exact_share?;
    (share < FIDELITY_MIN_EXACT_SHARE).then(|| {
        warning(
            "prompt_fidelity",
            format!(
                "the server counted the trace's input length exactly for {:.1}% of requests \
                 (prompt_tokens − input_tokens: mean {:+.1}, p50 {:+.1}, max {:+.1})",
                share * 100.0,
                p.diff_tokens.mean.unwrap_or(0.0),
                p.diff_tokens.p50.unwrap_or(0.0),
                p.diff_tokens.max.unwrap_or(0.0)
            ),
            "pass the server model's tokenizer with --tokenizer and keep the chat template calibration on (no --no-calibrate)",
        )
    })
}

fn completion_fidelity(s: &Summary) -> Option<Warning> {
    let c = &s.fidelity.completion;
    let share = c.exact_share?;
    (share < FIDELITY_MIN_EXACT_SHARE).then(|| {
        warning(
            "completion_fidelity",
            format!(
                "the server generated the trace's output length exactly for {:.1}% of requests \
                 (completion − output tokens: mean {:+.1}, p50 {:+.1}, min {:+.1})",
                share * 100.0,
                c.diff_tokens.mean.unwrap_or(0.0),
                c.diff_tokens.p50.unwrap_or(0.0),
                c.diff_tokens.min.unwrap_or(0.0)
            ),
            "make the server ignore end-of-sequence: --extra-body '{\"ignore_eos\": true}' (vLLM, SGLang) or min_tokens equal to max_tokens",
        )
    })
}

fn tokenizer_counts(s: &Summary) -> Option<Warning> {
    let n = s.output_count_sources.tokenizer;
    (n > 0).then(|| {
        warning(
            "tokenizer_counts",
            format!("{n} successful requests' completion tokens were counted by the tokenizer, not the server's usage"),
            "use a server that honours stream_options.include_usage so usage is reported in the stream",
        )
    })
}

fn chunk_counts(s: &Summary) -> Option<Warning> {
    let n = s.output_count_sources.chunks;
    (n > 0).then(|| {
        warning(
            "chunk_counts",
            format!("{n} successful requests had neither usage nor a tokenizer count; one token per chunk was assumed"),
            "use a server that reports usage in streams, or pass the model's tokenizer with --tokenizer",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(partial: bool, causes: &[(&str, usize)]) -> Summary {
        let failed_by_cause: std::collections::BTreeMap<String, usize> =
            causes.iter().map(|(k, n)| (k.to_string(), *n)).collect();
        Summary {
            partial,
            sent: 10,
            failed: failed_by_cause.values().sum(),
            failed_by_cause,
            ..Summary::default()
        }
    }

    #[test]
    fn requests_cancelled_by_an_interrupt_are_not_blamed_on_the_server() {
        let interrupted = failures(&failed(true, &[("cancelled", 3)])).expect("a warning");
        assert!(
            interrupted.fix.contains("interrupted"),
            "{}",
            interrupted.fix
        );
        assert!(
            !interrupted.fix.contains("overloaded"),
            "{}",
            interrupted.fix
        );

        let mixed =
            failures(&failed(true, &[("cancelled", 3), ("http_500", 1)])).expect("a warning");
        assert!(mixed.fix.contains("overloaded"), "{}", mixed.fix);
        let complete = failures(&failed(false, &[("cancelled", 3)])).expect("a warning");
        assert!(complete.fix.contains("overloaded"), "{}", complete.fix);
    }
}
