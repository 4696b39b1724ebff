//! `requests.csv`: one row per request with its outcome, timestamps and derived latencies,
//! for spreadsheets and pandas. Times are seconds from the run start (`*_s`) or ms (`*_ms`);
//! an absent value is an empty cell.

use serde::Serialize;

use crate::metrics::{OutputCount, RequestMetrics};
use crate::replay::RequestRecord;

/// One row of `requests.csv`.
#[derive(Debug, Serialize)]
struct Row<'a> {
    index: usize,
    line: u64,
    outcome: String,
    scheduled_s: f64,
    sent_s: Option<f64>,
    first_token_s: Option<f64>,
    end_s: Option<f64>,
    send_lag_ms: Option<f64>,
    ttft_ms: Option<f64>,
    tpot_ms: Option<f64>,
    itl_mean_ms: Option<f64>,
    e2el_ms: Option<f64>,
    queue_wait_ms: Option<f64>,
    session_wait_ms: Option<f64>,
    input_tokens: u32,
    output_tokens: u32,
    prompt_tokens: Option<u32>,
    completion_tokens: Option<u32>,
    output_count: OutputCount,
    cached_tokens: Option<u32>,
    chunks: usize,
    clamped: bool,
    parent_failed: bool,
    error: Option<&'a str>,
}

fn row(record: &RequestRecord) -> Row<'_> {
    let m = RequestMetrics::of(record);
    let itl_mean_ms =
        (!m.itl_ms.is_empty()).then(|| m.itl_ms.iter().sum::<f64>() / m.itl_ms.len() as f64);
    Row {
        index: record.index,
        line: record.line,
        outcome: record.outcome.to_string(),
        scheduled_s: record.scheduled_s,
        sent_s: record.sent_s,
        first_token_s: record.first_token_s,
        end_s: record.end_s,
        send_lag_ms: record.send_lag_ms(),
        ttft_ms: m.ttft_ms,
        tpot_ms: m.tpot_ms,
        itl_mean_ms,
        e2el_ms: m.e2el_ms,
        queue_wait_ms: record.queue_wait_ms,
        session_wait_ms: record.session_wait_ms,
        input_tokens: record.input_tokens,
        output_tokens: record.output_tokens,
        prompt_tokens: record.prompt_tokens,
        completion_tokens: record.completion_tokens,
        output_count: m.output_count,
        cached_tokens: record.cached_tokens,
        chunks: record.chunk_s.len(),
        clamped: record.clamped,
        parent_failed: record.parent_failed,
        error: record.error.as_deref(),
    }
}

/// `requests.csv`'s bytes, header first.
pub fn render(records: &[RequestRecord]) -> Result<Vec<u8>, csv::Error> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    for record in records {
        writer.serialize(row(record))?;
    }
    writer
        .into_inner()
        .map_err(|e| csv::Error::from(e.into_error()))
}
