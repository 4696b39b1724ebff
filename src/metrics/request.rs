//! The latencies of one request, derived from its [`RequestRecord`]: the per-request view
//! that the summary, goodput and `requests.csv` share, so each is defined once.
//!
//! TTFT and E2E are measured from the actual send and, separately, from the scheduled
//! instant (which adds the client's send lag). ITL samples are the gaps between consecutive
//! output-bearing chunks. TPOT is `(E2E − TTFT) / (output tokens − 1)` and absent for a request
//! with fewer than two output tokens.

use serde::Serialize;

use crate::replay::{Outcome, RequestRecord, TokenSource};

/// Where a request's output token count came from, including the last-resort fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputCount {
    /// The server's `usage.completion_tokens`.
    Usage,
    /// Counted with the tokenizer over the received text.
    Tokenizer,
    /// Neither was available: one token per output-bearing chunk (a lower bound).
    Chunks,
}

/// One request's derived timings, in milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestMetrics {
    /// The request ended with [`Outcome::Ok`].
    pub ok: bool,
    /// Time to first token from the actual send; `None` without output.
    pub ttft_ms: Option<f64>,
    /// End-to-end latency from the actual send; `None` if never sent.
    pub e2el_ms: Option<f64>,
    /// TTFT from the scheduled send instant.
    pub ttft_scheduled_ms: Option<f64>,
    /// End-to-end latency from the scheduled send instant.
    pub e2el_scheduled_ms: Option<f64>,
    /// Time per output token after the first; `None` for fewer than two output tokens.
    pub tpot_ms: Option<f64>,
    /// Gaps between consecutive output-bearing chunks.
    pub itl_ms: Vec<f64>,
    /// Output tokens received.
    pub output_tokens: u64,
    /// Where `output_tokens` came from.
    pub output_count: OutputCount,
}

impl RequestMetrics {
    /// Derives the timings of `record`.
    pub fn of(record: &RequestRecord) -> Self {
        let (output_tokens, output_count) = output_tokens(record);
        let ttft_ms = record.ttft_ms();
        let e2el_ms = record.e2e_ms();
        RequestMetrics {
            ok: record.outcome == Outcome::Ok,
            ttft_ms,
            e2el_ms,
            ttft_scheduled_ms: since_scheduled_ms(record, record.first_token_s),
            e2el_scheduled_ms: since_scheduled_ms(
                record,
                record.end_s.filter(|_| record.sent_s.is_some()),
            ),
            tpot_ms: tpot_ms(ttft_ms, e2el_ms, output_tokens),
            itl_ms: record
                .chunk_s
                .windows(2)
                .map(|w| (w[1] - w[0]) * 1e3)
                .collect(),
            output_tokens,
            output_count,
        }
    }
}

/// The request's output tokens: server usage, else the tokenizer's count, else one per
/// chunk.
fn output_tokens(record: &RequestRecord) -> (u64, OutputCount) {
    match (record.completion_tokens, record.completion_source) {
        (Some(n), Some(TokenSource::Tokenizer)) => (n.into(), OutputCount::Tokenizer),
        (Some(n), _) => (n.into(), OutputCount::Usage),
        (None, _) => (record.chunk_s.len() as u64, OutputCount::Chunks),
    }
}

fn since_scheduled_ms(record: &RequestRecord, at_s: Option<f64>) -> Option<f64> {
    Some((at_s? - record.scheduled_s) * 1e3)
}

fn tpot_ms(ttft_ms: Option<f64>, e2el_ms: Option<f64>, output_tokens: u64) -> Option<f64> {
    if output_tokens < 2 {
        return None;
    }
    Some((e2el_ms? - ttft_ms?) / (output_tokens - 1) as f64)
}
