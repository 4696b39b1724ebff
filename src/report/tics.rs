//! The seed client's raw result format (`--save-tics FILE`): a JSON list with, per request,
//! `[input_len, output_len, t0, t1, ...]`, where `t0` is the send and `t1...` the arrival of
//! each output-bearing chunk, in seconds relative to the run's first send. Requests never
//! sent are left out; failed ones are kept with what they received.

use crate::replay::RequestRecord;

/// The tics file's text.
pub fn render(records: &[RequestRecord]) -> String {
    let origin = records
        .iter()
        .filter_map(|r| r.sent_s)
        .fold(f64::INFINITY, f64::min);
    let rows: Vec<Vec<f64>> = records
        .iter()
        .filter_map(|r| {
            let sent = r.sent_s?;
            let mut row = vec![
                f64::from(r.input_tokens),
                f64::from(r.output_tokens),
                sent - origin,
            ];
            row.extend(r.chunk_s.iter().map(|t| t - origin));
            Some(row)
        })
        .collect();
    let mut text = serde_json::to_string(&rows).unwrap_or_else(|_| "[]".to_string());
    text.push('\n');
    text
}
