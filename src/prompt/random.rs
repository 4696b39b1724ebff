//! `random` mode, the seed's algorithm kept for comparison: draw ids uniformly from the lower
//! half of the vocabulary, decode, re-encode; equal length ends it, too short appends fresh
//! ids, too long truncates; after a bounded number of rounds, give up.

use super::mix::{below, nth};
use super::tokenizer::{Tokenizer, TokenizerError};

/// Decode → encode rounds before giving up: the seed's bound.
pub(crate) const MAX_ROUNDS: u32 = 64;

/// How a `random` prompt ended.
pub(crate) enum RandomOutcome {
    /// The text and its ids, exactly the target length.
    Exact(String, Vec<u32>),
    /// No exact length after [`MAX_ROUNDS`]; the length of the last attempt.
    GaveUp(u32),
}

/// Random non-special ids from the lower half of the vocabulary, keyed and counted so the
/// sequence is a pure function of the key.
struct IdDraw {
    /// The record's key.
    key: u64,
    /// Values drawn so far.
    drawn: u64,
    /// Ids are drawn from `0..bound`.
    bound: usize,
}

impl IdDraw {
    /// The next id that is not a special token.
    fn next(&mut self, tokenizer: &dyn Tokenizer) -> u32 {
        loop {
            let id = below(nth(self.key, self.drawn), self.bound) as u32;
            self.drawn += 1;
            if !tokenizer.is_special(id) {
                return id;
            }
        }
    }
}

/// A text of `target` tokens by the seed's decode → encode loop, drawing from `key`.
pub(crate) fn random_prompt(
    tokenizer: &dyn Tokenizer,
    key: u64,
    target: u32,
) -> Result<RandomOutcome, TokenizerError> {
    let bound = (tokenizer.vocab_size() / 2).max(1) as usize;
    let mut draw = IdDraw {
        key,
        drawn: 0,
        bound,
    };
    let mut ids: Vec<u32> = (0..target).map(|_| draw.next(tokenizer)).collect();
    let mut last = 0;

    for _ in 0..MAX_ROUNDS {
        let text = tokenizer.decode(&ids)?;
        let encoded = tokenizer.encode(&text);
        last = encoded.len() as u32;
        if last == target {
            return Ok(RandomOutcome::Exact(text, encoded));
        }

        // Too short: pad with fresh ids; too long: cut.
        ids = encoded;
        while ids.len() < target as usize {
            ids.push(draw.next(tokenizer));
        }
        ids.truncate(target as usize);
    }
    Ok(RandomOutcome::GaveUp(last))
}
