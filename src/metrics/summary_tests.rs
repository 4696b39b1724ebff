//! Every metric of [`Summary`] on the hand-built fixture `tests/data/report/run`, whose
//! records are commented there: R0 three tokens with usage, R1 one token, R2 HTTP 503,
//! R3 no usage, R4 never sent, R5 counted by tokenizer.

use super::*;
use crate::report::requests_jsonl;

const FIXTURE: &str = include_str!("../../tests/data/report/run/requests.jsonl");

fn records() -> Vec<RequestRecord> {
    let path = std::path::Path::new("requests.jsonl");
    requests_jsonl::parse(path, FIXTURE)
        .expect("fixture parses")
        .records
}

fn summary_with(slo: GoodputSlo) -> Summary {
    let options = SummaryOptions {
        goodput: slo,
        partial: false,
    };
    Summary::compute(&records(), &options)
}

fn summary() -> Summary {
    summary_with(GoodputSlo::default())
}

#[track_caller]
fn approx(actual: Option<f64>, expected: f64) {
    match actual {
        Some(a) if (a - expected).abs() < 1e-6 => {}
        _ => panic!("expected {expected}, got {actual:?}"),
    }
}

#[test]
fn counts_outcomes() {
    let s = summary();
    assert_eq!(
        (s.requests, s.sent, s.completed, s.failed, s.skipped),
        (6, 5, 4, 1, 1)
    );
    assert_eq!(s.failed_by_cause.get("http_503"), Some(&1));
    approx(s.failure_share, 0.2);
    assert_eq!((s.clamped, s.parent_failed), (1, 0));
}

#[test]
fn duration_runs_from_first_send_to_last_end() {
    // First send 1.001 s (R0), last end 3.1 s (R5).
    approx(Some(summary().duration_s), 2.099);
}

#[test]
fn token_totals_count_successful_requests() {
    let s = summary();
    // Input: server counts where reported (100 + 53 + 80), else requested (R3: 200).
    assert_eq!(s.total_input_tokens, 433);
    // Output: 3 (usage) + 1 (usage) + 4 (R3 chunks) + 5 (tokenizer); R2 failed.
    assert_eq!(s.total_output_tokens, 13);
    assert_eq!(
        (
            s.output_count_sources.usage,
            s.output_count_sources.tokenizer,
            s.output_count_sources.chunks
        ),
        (2, 1, 1)
    );
    approx(s.request_throughput, 4.0 / 2.099);
    approx(s.output_throughput, 13.0 / 2.099);
    approx(s.input_throughput, 433.0 / 2.099);
    approx(s.total_token_throughput, 446.0 / 2.099);
    // Seconds from the first send (1.001 s): [0, 1) holds R0's 3 and R1's 1 token,
    // [1, 2) R3's 4 and [2, 3) R5's 5, at 2.049 and 2.099 s.
    approx(s.max_output_tokens_per_s, 5.0);
}

#[test]
fn ttft_covers_successful_requests_from_the_send() {
    let s = summary();
    // 100, 200, 300, 50 ms; the failed R2 has none and must not lower anything.
    assert_eq!(s.ttft_ms.count, 4);
    approx(s.ttft_ms.mean, 162.5);
    approx(s.ttft_ms.p50, 150.0);
    approx(s.ttft_ms.p90, 270.0); // rank 2.7: 200 + 0.7 · 100
    approx(s.ttft_ms.p99, 297.0);
    approx(s.ttft_ms.max, 300.0);
    // From the schedule R0 adds its 1 ms of lag: 101 ms.
    approx(s.ttft_scheduled_ms.min, 50.0);
    approx(
        s.ttft_scheduled_ms.mean,
        (101.0 + 200.0 + 300.0 + 50.0) / 4.0,
    );
}

#[test]
fn tpot_is_absent_for_one_token_requests() {
    let s = summary();
    // R0 (151 − 100) / 2 = 25.5; R3 (600 − 300) / 3 = 100; R5 (100 − 50) / 4 = 12.5; R1 none.
    assert_eq!(s.tpot_ms.count, 3);
    approx(s.tpot_ms.p50, 25.5);
    approx(s.tpot_ms.mean, 46.0);
    approx(s.tpot_ms.max, 100.0);
}

#[test]
fn itl_has_one_sample_per_chunk_after_the_first() {
    let s = summary();
    // R0: 20, 30; R3: 100, 100, 100; R5: 50.
    assert_eq!(s.itl_ms.count, 6);
    approx(s.itl_ms.mean, 400.0 / 6.0);
    approx(s.itl_ms.p50, 75.0);
    approx(s.itl_ms.min, 20.0);
}

#[test]
fn e2e_from_send_and_from_schedule() {
    let s = summary();
    // 151, 200, 600, 100 ms.
    assert_eq!(s.e2el_ms.count, 4);
    approx(s.e2el_ms.mean, 262.75);
    approx(s.e2el_ms.p50, 175.5);
    approx(s.e2el_scheduled_ms.max, 600.0);
    approx(s.e2el_scheduled_ms.p50, 176.0); // R0 becomes 152
}

#[test]
fn send_lag_and_waits() {
    let s = summary();
    // Lags of the five sent requests: 1, 0, 2, 0, 0 ms.
    assert_eq!(s.send_lag_ms.count, 5);
    approx(s.send_lag_ms.p50, 0.0);
    approx(s.send_lag_ms.max, 2.0);
    assert_eq!(s.queue_wait_ms.count, 1);
    approx(s.queue_wait_ms.max, 5.0);
    // Session children: R3 waited 120 ms, R5 none.
    assert_eq!((s.session_wait.children, s.session_wait.delayed), (2, 1));
    approx(s.session_wait.delayed_share, 0.5);
    approx(s.session_wait.wait_ms.p50, 60.0);
}

#[test]
fn fidelity_compares_server_counts_with_the_trace() {
    let f = summary().fidelity;
    // Prompt: R0 0, R1 +3, R5 0 (R3 has no usage).
    assert_eq!((f.prompt.count, f.prompt.exact), (3, 2));
    approx(f.prompt.diff_tokens.max, 3.0);
    // Completion: R0 0, R1 0, R5 −1.
    assert_eq!((f.completion.count, f.completion.exact), (3, 2));
    approx(f.completion.diff_tokens.min, -1.0);
    approx(f.completion.exact_share, 2.0 / 3.0);
}

#[test]
fn concurrency_from_intervals() {
    let s = summary();
    // R3 [2.0, 2.6) overlaps R2 [2.002, 2.012); nothing else overlaps.
    assert_eq!(s.max_in_flight, 2);
    assert_eq!(s.max_queued, 2);
}

#[test]
fn cached_share_over_requests_reporting_both() {
    approx(summary().cached_tokens_share, 0.5);
}

#[test]
fn goodput_requires_every_objective() {
    assert_eq!(summary().goodput, None);
    let slo = GoodputSlo {
        ttft_ms: Some(250.0),
        tpot_ms: Some(30.0),
        e2el_ms: None,
    };
    let g = summary_with(slo).goodput.expect("objectives set");
    // R0 (100, 25.5) and R1 (200, no TPOT) and R5 (50, 12.5) pass; R3 (300) fails.
    assert_eq!(g.good, 3);
    approx(g.share, 3.0 / 5.0);
    approx(g.request_goodput, 3.0 / 2.099);

    let strict = GoodputSlo {
        ttft_ms: Some(150.0),
        tpot_ms: Some(20.0),
        e2el_ms: Some(120.0),
    };
    // Only R5 (50, 12.5, 100) passes all three.
    assert_eq!(summary_with(strict).goodput.map(|g| g.good), Some(1));
}

#[test]
fn empty_run_has_no_statistics() {
    let s = Summary::compute(&[], &SummaryOptions::default());
    assert_eq!((s.requests, s.duration_s), (0, 0.0));
    assert_eq!(
        (s.request_throughput, s.failure_share, s.ttft_ms.p99),
        (None, None, None)
    );
}

#[test]
fn failed_requests_never_lower_a_latency() {
    // A stream cut 1 ms after its first token: fast, and a failure. Adding it must leave
    // every latency statistic as it was and show up in the failure share instead.
    let mut with_cut = records();
    let mut cut = with_cut[0].clone();
    cut.index = 6;
    cut.outcome = Outcome::StreamCut;
    cut.first_token_s = Some(1.002);
    cut.end_s = Some(1.003);
    cut.chunk_s = vec![1.002, 1.0025];
    with_cut.push(cut);

    let before = summary();
    let after = Summary::compute(&with_cut, &SummaryOptions::default());
    assert_eq!(after.ttft_ms, before.ttft_ms);
    assert_eq!(after.tpot_ms, before.tpot_ms);
    assert_eq!(after.itl_ms, before.itl_ms);
    assert_eq!(after.e2el_ms, before.e2el_ms);
    assert_eq!(after.failed_by_cause.get("stream_cut"), Some(&1));
    approx(after.failure_share, 2.0 / 6.0);
}

mod props {
    use proptest::prelude::*;

    use super::*;
    use crate::replay::TimeoutKind;

    fn outcome() -> impl Strategy<Value = Outcome> {
        prop_oneof![
            4 => Just(Outcome::Ok),
            1 => Just(Outcome::Http(503)),
            1 => Just(Outcome::Timeout(TimeoutKind::FirstToken)),
            1 => Just(Outcome::StreamCut),
            1 => Just(Outcome::Skipped),
        ]
    }

    fn time() -> impl Strategy<Value = Option<f64>> {
        proptest::option::of(-5.0f64..100.0)
    }

    prop_compose! {
        fn record()(
            outcome in outcome(),
            scheduled_s in 0.0f64..50.0,
            (sent_s, first_token_s, end_s) in (time(), time(), time()),
            chunk_s in proptest::collection::vec(-5.0f64..100.0, 0..6),
            (input_tokens, output_tokens) in (0u32..5000, 0u32..500),
            prompt_tokens in proptest::option::of(0u32..5000),
            completion_tokens in proptest::option::of(0u32..500),
            cached_tokens in proptest::option::of(0u32..5000),
            queue_wait_ms in proptest::option::of(0.0f64..1e4),
            session_wait_ms in proptest::option::of(0.0f64..1e4),
        ) -> RequestRecord {
            RequestRecord {
                index: 0, line: 1, scheduled_s, sent_s, first_token_s, end_s, queue_wait_ms,
                session_wait_ms, input_tokens, output_tokens, prompt_tokens, completion_tokens,
                completion_source: None, cached_tokens, chunk_s, outcome, error: None,
                clamped: false, parent_failed: false, live_tokens: None,
            }
        }
    }

    proptest! {
        /// Whatever `requests.jsonl` holds (times out of order, missing, before the start),
        /// the summary is computed without panicking and stays self-consistent.
        #[test]
        fn any_records_give_a_consistent_summary(records in proptest::collection::vec(record(), 0..40)) {
            let s = Summary::compute(&records, &SummaryOptions::default());
            prop_assert_eq!(s.completed + s.failed + s.skipped, s.requests);
            prop_assert!(s.duration_s >= 0.0);
            for d in [&s.ttft_ms, &s.tpot_ms, &s.itl_ms, &s.e2el_ms, &s.send_lag_ms] {
                if let (Some(min), Some(p50), Some(p99), Some(max)) = (d.min, d.p50, d.p99, d.max) {
                    prop_assert!(min <= p50 && p50 <= p99 && p99 <= max);
                } else {
                    prop_assert_eq!(d.count, 0);
                }
            }
            prop_assert!(s.max_queued <= s.sent && s.max_in_flight <= s.sent);
        }

        /// Percentiles lie between the extremes and never decrease with p.
        #[test]
        fn percentiles_are_monotonic(mut xs in proptest::collection::vec(-1e6f64..1e6, 1..50), p in 0.0f64..100.0, q in 0.0f64..100.0) {
            xs.sort_by(f64::total_cmp);
            let (lo, hi) = if p <= q { (p, q) } else { (q, p) };
            let (a, b) = (crate::metrics::percentile(&xs, lo), crate::metrics::percentile(&xs, hi));
            prop_assert!(a <= b);
            prop_assert!(a >= xs.first().copied() && b <= xs.last().copied());
        }
    }
}
