//! [`Summary::compute`]: every number a run is judged by, from its per-request records.
//!
//! Latency statistics (TTFT, TPOT, ITL, E2E) cover successful requests only, so a failed
//! request can never lower a reported latency; the failure share sits beside them. Send lag,
//! queue and session waits cover every sent request. Token totals and throughput count
//! successful requests, as vLLM does.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::distribution::Distribution;
use super::request::{OutputCount, RequestMetrics};
use super::timeline;
use crate::replay::{Outcome, RequestRecord};
use crate::report::{GoodputSlo, RunInfo};

/// What the summary needs besides the records.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SummaryOptions {
    /// Goodput objectives; with none set, goodput is not computed.
    pub goodput: GoodputSlo,
    /// The run was interrupted: the records are what was measured before it stopped.
    pub partial: bool,
}

impl SummaryOptions {
    /// The options a run's `run.json` implies.
    pub fn from_run(run: &RunInfo, partial: bool) -> Self {
        SummaryOptions {
            goodput: run.goodput,
            partial,
        }
    }
}

/// The summary of one run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Summary {
    /// The run was interrupted; the numbers cover what was measured before.
    pub partial: bool,
    /// Records in the run, sent or not.
    pub requests: usize,
    /// Requests that were sent.
    pub sent: usize,
    /// Requests that ended with outcome `ok`.
    pub completed: usize,
    /// Sent requests that did not succeed.
    pub failed: usize,
    /// `failed` by outcome name (`http_503`, `timeout_first_token`, ...).
    pub failed_by_cause: BTreeMap<String, usize>,
    /// Share of sent requests that failed (0–1); `None` if nothing was sent.
    pub failure_share: Option<f64>,
    /// Records never sent (cut by a policy or by an interruption).
    pub skipped: usize,
    /// Records whose lengths were clamped.
    pub clamped: usize,
    /// Session children whose parent request failed.
    pub parent_failed: usize,
    /// First send to last end of any sent request, seconds.
    pub duration_s: f64,
    /// Input tokens of successful requests (server-reported, else as requested).
    pub total_input_tokens: u64,
    /// Output tokens of successful requests.
    pub total_output_tokens: u64,
    /// Successful requests per second of `duration_s`; `None` for a zero duration.
    pub request_throughput: Option<f64>,
    /// Input tokens per second.
    pub input_throughput: Option<f64>,
    /// Output tokens per second.
    pub output_throughput: Option<f64>,
    /// Input plus output tokens per second.
    pub total_token_throughput: Option<f64>,
    /// Most output tokens received in one second (whole seconds from the first send), as
    /// vLLM's `max_output_tokens_per_s`; a request's tokens are spread evenly over its chunks.
    pub max_output_tokens_per_s: Option<f64>,
    /// Time to first token from the actual send, ms (successful requests).
    pub ttft_ms: Distribution,
    /// Time per output token after the first, ms (successful requests with ≥ 2 tokens).
    pub tpot_ms: Distribution,
    /// Inter-token latency, ms: one sample per output-bearing chunk after the first.
    pub itl_ms: Distribution,
    /// End-to-end latency from the actual send, ms (successful requests).
    pub e2el_ms: Distribution,
    /// TTFT from the scheduled send instant, ms (includes the send lag).
    pub ttft_scheduled_ms: Distribution,
    /// E2E from the scheduled send instant, ms (includes the send lag).
    pub e2el_scheduled_ms: Distribution,
    /// Actual minus scheduled send time, ms (every sent request).
    pub send_lag_ms: Distribution,
    /// Wait for a concurrency slot, ms (requests where a cap applied).
    pub queue_wait_ms: Distribution,
    /// Waits of session children for their parent turn.
    pub session_wait: SessionWait,
    /// How closely the server's token counts matched the trace.
    pub fidelity: Fidelity,
    /// Most requests in flight (sent, not ended) at one instant.
    pub max_in_flight: usize,
    /// Most requests queued (sent, no first token yet) at one instant.
    pub max_queued: usize,
    /// Cached prompt tokens over prompt tokens, where the server reported both (0–1).
    pub cached_tokens_share: Option<f64>,
    /// How many successful requests' output tokens came from each source.
    pub output_count_sources: OutputCountSources,
    /// Requests meeting every goodput objective; `None` without objectives.
    pub goodput: Option<Goodput>,
}

/// Session children's waits for their parent turn.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SessionWait {
    /// Children with a recorded session wait.
    pub children: usize,
    /// Children whose wait was above zero.
    pub delayed: usize,
    /// `delayed / children`; `None` without children.
    pub delayed_share: Option<f64>,
    /// The waits of all children, ms.
    pub wait_ms: Distribution,
}

/// Server-reported token counts against the trace's lengths.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Fidelity {
    /// `usage.prompt_tokens − input_tokens` of successful requests with usage.
    pub prompt: TokenDiff,
    /// `completion_tokens − output_tokens` of successful requests with a count.
    pub completion: TokenDiff,
}

/// The distribution of a token count difference.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TokenDiff {
    /// Requests with both counts.
    pub count: usize,
    /// Requests whose difference is zero.
    pub exact: usize,
    /// `exact / count`; `None` when `count` is 0.
    pub exact_share: Option<f64>,
    /// The differences, tokens.
    pub diff_tokens: Distribution,
}

/// Counts of successful requests by where their output token count came from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OutputCountSources {
    /// From the server's usage.
    pub usage: usize,
    /// Counted with the tokenizer.
    pub tokenizer: usize,
    /// Neither: one per chunk.
    pub chunks: usize,
}

/// Requests that met every goodput objective.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Goodput {
    /// The objectives, ms.
    pub slo: GoodputSlo,
    /// Successful requests that met all of them.
    pub good: usize,
    /// `good` over sent requests (0–1); `None` if nothing was sent.
    pub share: Option<f64>,
    /// `good` per second of the run's duration (vLLM's `request_goodput`).
    pub request_goodput: Option<f64>,
}

impl Summary {
    /// Computes the summary of `records`.
    pub fn compute(records: &[RequestRecord], options: &SummaryOptions) -> Self {
        let metrics: Vec<RequestMetrics> = records.iter().map(RequestMetrics::of).collect();
        let ok: Vec<(&RequestRecord, &RequestMetrics)> =
            records.iter().zip(&metrics).filter(|(_, m)| m.ok).collect();

        let mut summary = Summary {
            partial: options.partial,
            ..Summary::default()
        };
        summary.count_outcomes(records);
        summary.add_throughput(records, &ok);
        summary.max_output_tokens_per_s = peak_output_per_s(&ok);
        summary.add_latencies(&ok);
        summary.add_waits(records);
        summary.fidelity = fidelity(&ok);
        summary.max_in_flight = timeline::max_open(&timeline::in_flight_intervals(records));
        summary.max_queued = timeline::max_open(&timeline::queued_intervals(records));
        summary.cached_tokens_share = cached_tokens_share(records);
        summary.goodput = goodput(&options.goodput, &ok, summary.sent, summary.duration_s);
        summary
    }

    /// Counts requests by outcome.
    fn count_outcomes(&mut self, records: &[RequestRecord]) {
        self.requests = records.len();
        for record in records {
            self.clamped += usize::from(record.clamped);
            self.parent_failed += usize::from(record.parent_failed);
            match record.outcome {
                Outcome::Ok => self.completed += 1,
                _ if !timeline::was_sent(record) => self.skipped += 1,
                other => *self.failed_by_cause.entry(other.to_string()).or_default() += 1,
            }
        }
        self.failed = self.failed_by_cause.values().sum();
        self.sent = self.completed + self.failed;
        self.failure_share = ratio(self.failed, self.sent);
    }

    /// Duration, token totals and throughput.
    fn add_throughput(
        &mut self,
        records: &[RequestRecord],
        ok: &[(&RequestRecord, &RequestMetrics)],
    ) {
        self.duration_s = duration_s(records);
        for (record, metrics) in ok {
            self.total_input_tokens +=
                u64::from(record.prompt_tokens.unwrap_or(record.input_tokens));
            self.total_output_tokens += metrics.output_tokens;
            match metrics.output_count {
                OutputCount::Usage => self.output_count_sources.usage += 1,
                OutputCount::Tokenizer => self.output_count_sources.tokenizer += 1,
                OutputCount::Chunks => self.output_count_sources.chunks += 1,
            }
        }
        let per_s = |x: f64| (self.duration_s > 0.0).then(|| x / self.duration_s);
        self.request_throughput = per_s(self.completed as f64);
        self.input_throughput = per_s(self.total_input_tokens as f64);
        self.output_throughput = per_s(self.total_output_tokens as f64);
        self.total_token_throughput =
            per_s((self.total_input_tokens + self.total_output_tokens) as f64);
    }

    /// Latency distributions of successful requests.
    fn add_latencies(&mut self, ok: &[(&RequestRecord, &RequestMetrics)]) {
        let of = |f: fn(&RequestMetrics) -> Option<f64>| {
            Distribution::from_samples(ok.iter().filter_map(|(_, m)| f(m)))
        };
        self.ttft_ms = of(|m| m.ttft_ms);
        self.tpot_ms = of(|m| m.tpot_ms);
        self.e2el_ms = of(|m| m.e2el_ms);
        self.ttft_scheduled_ms = of(|m| m.ttft_scheduled_ms);
        self.e2el_scheduled_ms = of(|m| m.e2el_scheduled_ms);
        self.itl_ms =
            Distribution::from_samples(ok.iter().flat_map(|(_, m)| m.itl_ms.iter().copied()));
    }

    /// Send lag, queue and session waits of every sent request.
    fn add_waits(&mut self, records: &[RequestRecord]) {
        let sent = records.iter().filter(|r| timeline::was_sent(r));
        self.send_lag_ms = Distribution::from_samples(sent.filter_map(|r| r.send_lag_ms()));
        self.queue_wait_ms =
            Distribution::from_samples(records.iter().filter_map(|r| r.queue_wait_ms));

        let waits: Vec<f64> = records.iter().filter_map(|r| r.session_wait_ms).collect();
        let delayed = waits.iter().filter(|&&w| w > 0.0).count();
        self.session_wait = SessionWait {
            children: waits.len(),
            delayed,
            delayed_share: ratio(delayed, waits.len()),
            wait_ms: Distribution::from_samples(waits),
        };
    }
}

/// First send to the last end of any sent request, seconds (0 with nothing sent).
fn duration_s(records: &[RequestRecord]) -> f64 {
    let sent = || records.iter().filter(|r| timeline::was_sent(r));
    let first = sent()
        .filter_map(|r| r.sent_s)
        .fold(f64::INFINITY, f64::min);
    let last = sent()
        .filter_map(|r| r.end_s)
        .fold(f64::NEG_INFINITY, f64::max);
    if first.is_finite() && last.is_finite() {
        (last - first).max(0.0)
    } else {
        0.0
    }
}

/// Output tokens per whole second from the first send, the busiest second's count.
fn peak_output_per_s(ok: &[(&RequestRecord, &RequestMetrics)]) -> Option<f64> {
    let origin = ok.iter().filter_map(|(r, _)| r.sent_s).reduce(f64::min)?;
    let mut per_second: BTreeMap<u64, f64> = BTreeMap::new();
    for (record, metrics) in ok {
        let per_chunk = metrics.output_tokens as f64 / record.chunk_s.len().max(1) as f64;
        for &t in &record.chunk_s {
            *per_second.entry((t - origin).max(0.0) as u64).or_default() += per_chunk;
        }
    }
    per_second.into_values().reduce(f64::max)
}

/// Server token counts against the trace's lengths.
fn fidelity(ok: &[(&RequestRecord, &RequestMetrics)]) -> Fidelity {
    let prompt = ok
        .iter()
        .filter_map(|(r, _)| Some(f64::from(r.prompt_tokens?) - f64::from(r.input_tokens)));
    let completion = ok
        .iter()
        .filter_map(|(r, _)| Some(f64::from(r.completion_tokens?) - f64::from(r.output_tokens)));
    Fidelity {
        prompt: token_diff(prompt.collect()),
        completion: token_diff(completion.collect()),
    }
}

fn token_diff(diffs: Vec<f64>) -> TokenDiff {
    let exact = diffs.iter().filter(|&&d| d == 0.0).count();
    TokenDiff {
        count: diffs.len(),
        exact,
        exact_share: ratio(exact, diffs.len()),
        diff_tokens: Distribution::from_samples(diffs),
    }
}

/// Cached over prompt tokens, over requests reporting both.
fn cached_tokens_share(records: &[RequestRecord]) -> Option<f64> {
    let (cached, prompt) = records
        .iter()
        .filter_map(|r| Some((u64::from(r.cached_tokens?), u64::from(r.prompt_tokens?))))
        .fold((0u64, 0u64), |(c, p), (rc, rp)| (c + rc, p + rp));
    (prompt > 0).then(|| cached as f64 / prompt as f64)
}

/// Requests meeting all objectives; `None` when no objective is set.
fn goodput(
    slo: &GoodputSlo,
    ok: &[(&RequestRecord, &RequestMetrics)],
    sent: usize,
    duration_s: f64,
) -> Option<Goodput> {
    if slo.ttft_ms.is_none() && slo.tpot_ms.is_none() && slo.e2el_ms.is_none() {
        return None;
    }
    let good = ok.iter().filter(|(_, m)| meets(slo, m)).count();
    Some(Goodput {
        slo: *slo,
        good,
        share: ratio(good, sent),
        request_goodput: (duration_s > 0.0).then(|| good as f64 / duration_s),
    })
}

/// Whether one request met every set objective. A request without TPOT (one output
/// token) passes the TPOT objective, as in vLLM, where its TPOT counts as 0.
fn meets(slo: &GoodputSlo, m: &RequestMetrics) -> bool {
    let within = |limit: Option<f64>, value: Option<f64>| match (limit, value) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(limit), Some(value)) => value <= limit,
    };
    within(slo.ttft_ms, m.ttft_ms)
        && within(slo.e2el_ms, m.e2el_ms)
        && within(slo.tpot_ms, m.tpot_ms.or(Some(0.0)))
}

fn ratio(part: usize, whole: usize) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

#[cfg(test)]
#[path = "summary_tests.rs"]
mod tests;
