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
    visit: impl FnMut(&TraceRecord, Result<Prompt, PromptError>) -> Result<(), E>,
) -> Result<(), E> {
    for_each_mapped(builder, records, overhead_tokens, threads, |_, p| p, visit)
}

/// Like [`for_each_prompt`], but first turns each prompt into a `T` with `map` on the
/// building thread (serialising or re-encoding it there spreads that work too); `visit`
/// then sees the `T`s in record order.
pub fn for_each_mapped<T: Send, E>(
    builder: &PromptBuilder,
    records: &[TraceRecord],
    overhead_tokens: u32,
    threads: usize,
    map: impl Fn(&TraceRecord, Result<Prompt, PromptError>) -> T + Sync,
    mut visit: impl FnMut(&TraceRecord, T) -> Result<(), E>,
) -> Result<(), E> {
    let threads = threads.max(1);
    let build = |part: &[TraceRecord]| -> Vec<T> {
        part.iter()
            .map(|r| map(r, builder.build(r, overhead_tokens)))
            .collect()
    };
    for batch in records.chunks(threads * BATCH_PER_THREAD) {
        let built = on_threads(batch, threads, &build);
        for (record, item) in batch.iter().zip(built) {
            visit(record, item)?;
        }
    }
    Ok(())
}

/// `work` applied to `threads` contiguous parts of `batch`, results in order.
fn on_threads<T: Send>(
    batch: &[TraceRecord],
    threads: usize,
    work: &(impl Fn(&[TraceRecord]) -> Vec<T> + Sync),
) -> Vec<T> {
    if threads == 1 {
        return work(batch);
    }
    let part_len = batch.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = batch
            .chunks(part_len)
            .map(|part| scope.spawn(move || work(part)))
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
