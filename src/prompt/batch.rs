//! Prompts for many records on several threads, handed out in trace order, a bounded batch
//! at a time: at most `threads × BATCH_PER_THREAD` prompts exist at once.
//!
//! Each prompt is a pure function of its record, so the thread count changes the speed and
//! never the bytes.

use super::builder::{Prompt, PromptBuilder, PromptError};
use super::mix::{Domain, item_key, nth, stream_key};
use crate::trace::TraceRecord;

/// Prompts each thread builds per batch: enough to amortise the thread start, few enough
/// that a batch of 100,000-token prompts stays in the tens of megabytes.
const BATCH_PER_THREAD: usize = 32;

/// Builds the prompt of every record on `threads` threads and calls `visit` with each, in
/// record order. Stops at the first error `visit` returns.
pub fn for_each_prompt<E>(
    builder: &PromptBuilder,
    records: &[TraceRecord],
    overhead_tokens: u32,
    threads: usize,
    mut visit: impl FnMut(&TraceRecord, Result<Prompt, PromptError>) -> Result<(), E>,
) -> Result<(), E> {
    let threads = threads.max(1);
    for batch in records.chunks(threads * BATCH_PER_THREAD) {
        let built = build_batch(builder, batch, overhead_tokens, threads);
        for (record, prompt) in batch.iter().zip(built) {
            visit(record, prompt)?;
        }
    }
    Ok(())
}

/// The prompts of `batch`, in order, built on up to `threads` threads.
fn build_batch(
    builder: &PromptBuilder,
    batch: &[TraceRecord],
    overhead_tokens: u32,
    threads: usize,
) -> Vec<Result<Prompt, PromptError>> {
    let build_all = |part: &[TraceRecord]| -> Vec<Result<Prompt, PromptError>> {
        part.iter()
            .map(|r| builder.build(r, overhead_tokens))
            .collect()
    };
    if threads == 1 {
        return build_all(batch);
    }

    let part_len = batch.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = batch
            .chunks(part_len)
            .map(|part| scope.spawn(move || build_all(part)))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

/// `count` distinct indexes of `0..len`, chosen by `seed`, in ascending order (for checking
/// a sample of prompts by re-encoding them).
pub fn sample_indexes(len: usize, count: usize, seed: u64) -> Vec<usize> {
    let key = item_key(stream_key(seed, Domain::Random), u64::MAX);
    let mut keyed: Vec<(u64, usize)> = (0..len).map(|i| (nth(key, i as u64), i)).collect();
    keyed.sort_unstable();
    let mut chosen: Vec<usize> = keyed.into_iter().take(count).map(|(_, i)| i).collect();
    chosen.sort_unstable();
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_distinct_sorted_and_bounded() {
        let s = sample_indexes(100, 10, 1);
        assert_eq!(s.len(), 10);
        assert!(s.windows(2).all(|w| w[0] < w[1]));
        assert!(s.iter().all(|&i| i < 100));
        assert_eq!(sample_indexes(5, 10, 1), vec![0, 1, 2, 3, 4]);
        assert_ne!(sample_indexes(100, 10, 1), sample_indexes(100, 10, 2));
    }
}
