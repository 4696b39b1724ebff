//! Fuzz target: the SSE reader on arbitrary bytes, fed whole and cut into reads at
//! arbitrary offsets, under an arbitrary event-size bound. It never panics, and how the
//! bytes are cut never changes the events, the error or the bytes left pending.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tracebench::client::{SseError, SseEvent, SseReader};

/// Everything a read of a whole stream gives.
#[derive(Debug, PartialEq)]
struct Read {
    events: Vec<SseEvent>,
    error: Option<SseError>,
    pending: Option<usize>,
}

/// Feeds `bytes` in pieces ending at `cuts` (taken modulo the length, sorted).
fn read(bytes: &[u8], cuts: &[u16], max_event_bytes: usize) -> Read {
    let mut ends: Vec<usize> = cuts
        .iter()
        .map(|c| usize::from(*c) % (bytes.len() + 1))
        .collect();
    ends.push(bytes.len());
    ends.sort_unstable();

    let mut reader = SseReader::new(max_event_bytes);
    let mut events = Vec::new();
    let mut start = 0;
    for end in ends {
        if let Err(error) = reader.feed(&bytes[start..end], &mut events) {
            return Read {
                events,
                error: Some(error),
                pending: None,
            };
        }
        start = end;
    }
    let pending = Some(reader.pending_bytes());
    Read {
        events,
        error: None,
        pending,
    }
}

fuzz_target!(|input: (u16, Vec<u16>, &[u8])| {
    let (bound, cuts, bytes) = input;
    let max_event_bytes = usize::from(bound).max(1);
    let whole = read(bytes, &[], max_event_bytes);
    let split = read(bytes, &cuts, max_event_bytes);
    assert_eq!(whole, split, "cuts {cuts:?}");
});
