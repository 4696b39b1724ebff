//! Overlap of request intervals over time: how many requests were in flight (sent, not yet
//! ended) or queued (sent, no first token yet) at each instant, computed from the records'
//! own timestamps rather than counted live, so `tracebench report` gets the same answer.
//!
//! An interval is half-open, `[start, end)`: a request ending at the instant another starts
//! does not overlap it. A sent request without an end is open until the end of the run.

use crate::replay::{Outcome, RequestRecord};

/// One change of a step function: from `at_s` on, `count` intervals are open.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// Seconds from the run start.
    pub at_s: f64,
    /// Open intervals from then on.
    pub count: usize,
}

/// Whether the request went out: it has a send time and is not marked skipped. The one
/// definition of "sent" for counts, duration, send lag and the intervals.
pub fn was_sent(record: &RequestRecord) -> bool {
    record.sent_s.is_some() && record.outcome != Outcome::Skipped
}

/// The in-flight intervals: actual send to end, for every sent request.
pub fn in_flight_intervals(records: &[RequestRecord]) -> Vec<(f64, f64)> {
    records
        .iter()
        .filter_map(|r| interval(r, r.end_s))
        .collect()
}

/// The queued intervals: actual send to first token (or to the end, without output).
pub fn queued_intervals(records: &[RequestRecord]) -> Vec<(f64, f64)> {
    records
        .iter()
        .filter_map(|r| interval(r, r.first_token_s.or(r.end_s)))
        .collect()
}

/// From the send to `end_s` (open-ended without one); `None` for a request never sent. An
/// end before the send (a corrupt record) gives an empty interval rather than a negative one.
fn interval(record: &RequestRecord, end_s: Option<f64>) -> Option<(f64, f64)> {
    let start = record.sent_s.filter(|_| was_sent(record))?;
    Some((start, end_s.unwrap_or(f64::INFINITY).max(start)))
}

/// The step function of how many `intervals` are open over time, one step per change.
pub fn steps(intervals: &[(f64, f64)]) -> Vec<Step> {
    // Ends sort before starts at the same instant (half-open intervals).
    let mut events: Vec<(f64, i64)> = Vec::with_capacity(intervals.len() * 2);
    for &(start, end) in intervals {
        events.push((start, 1));
        events.push((end, -1));
    }
    events.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));

    let mut open: i64 = 0;
    let mut out: Vec<Step> = Vec::new();
    for (at_s, delta) in events.into_iter().filter(|e| e.0.is_finite()) {
        open += delta;
        let count = open.max(0) as usize;
        match out.last_mut() {
            Some(last) if last.at_s == at_s => last.count = count,
            _ => out.push(Step { at_s, count }),
        }
    }
    out
}

/// The most `intervals` open at any one instant.
pub fn max_open(intervals: &[(f64, f64)]) -> usize {
    steps(intervals).iter().map(|s| s.count).max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn touching_intervals_do_not_overlap() {
        assert_eq!(max_open(&[(0.0, 1.0), (1.0, 2.0)]), 1);
        assert_eq!(max_open(&[(0.0, 1.5), (1.0, 2.0), (1.2, 1.3)]), 3);
        assert_eq!(max_open(&[]), 0);
    }

    #[test]
    fn steps_merge_simultaneous_changes() {
        let s = steps(&[(0.0, 2.0), (1.0, 2.0)]);
        let counts: Vec<(f64, usize)> = s.iter().map(|s| (s.at_s, s.count)).collect();
        assert_eq!(counts, vec![(0.0, 1), (1.0, 2), (2.0, 0)]);
    }

    #[test]
    fn open_ended_interval_stays_open() {
        let s = steps(&[(0.0, f64::INFINITY), (1.0, 2.0)]);
        assert_eq!(s.last().map(|s| s.count), Some(1));
        assert_eq!(max_open(&[(0.0, f64::INFINITY), (1.0, 2.0)]), 2);
    }
}
