//! Prompt text made of vetted word pieces: one piece is one token, so the text's length in
//! tokens is the number of pieces pushed, without encoding it.
//!
//! Block texts are a pure function of `(seed, block id)`: the first pieces spell the block's
//! key (a bijection of the id) in base `vocab.len()`, so different ids always give different
//! texts; the rest are drawn from the key. Nothing is cached: regenerating a block costs a
//! few nanoseconds per token, far less than holding a long trace's blocks in memory.

use super::mix::{below, nth};
use super::vocab::PieceVocab;

/// Collects pieces into the prompt text (and their ids, when asked for).
pub(crate) struct PieceWriter<'v> {
    /// The pieces to draw from.
    vocab: &'v PieceVocab,
    /// Text so far.
    text: String,
    /// Token ids so far; `None` unless requested.
    ids: Option<Vec<u32>>,
    /// Pieces (= tokens) so far.
    tokens: u32,
}

impl<'v> PieceWriter<'v> {
    /// An empty writer sized for `tokens` pieces.
    pub(crate) fn new(vocab: &'v PieceVocab, tokens: u32, with_ids: bool) -> Self {
        let capacity = tokens as usize * vocab.mean_piece_bytes();
        Self {
            vocab,
            text: String::with_capacity(capacity),
            ids: with_ids.then(|| Vec::with_capacity(tokens as usize)),
            tokens: 0,
        }
    }

    /// Pieces written so far.
    pub(crate) fn tokens(&self) -> u32 {
        self.tokens
    }

    /// The text, the ids (if collected) and the token count.
    pub(crate) fn finish(self) -> (String, Option<Vec<u32>>, u32) {
        (self.text, self.ids, self.tokens)
    }

    /// Appends the first `count` pieces of the block whose key is `key`.
    pub(crate) fn push_block(&mut self, key: u64, count: u32) {
        let base = self.vocab.len() as u64;
        let spelled = key_digits(base);
        let mut digits = key;
        for i in 0..count {
            let index = if i < spelled {
                let digit = digits % base;
                digits /= base;
                digit as usize
            } else {
                below(nth(key, u64::from(i)), self.vocab.len())
            };
            self.push(index);
        }
    }

    /// Appends `count` pieces drawn from the sequence keyed `key`.
    pub(crate) fn push_drawn(&mut self, key: u64, count: u32) {
        for i in 0..count {
            self.push(below(nth(key, u64::from(i)), self.vocab.len()));
        }
    }

    /// Appends piece `index`.
    fn push(&mut self, index: usize) {
        self.text.push_str(self.vocab.piece(index));
        if let Some(ids) = &mut self.ids {
            ids.push(self.vocab.id(index));
        }
        self.tokens += 1;
    }
}

/// How many base-`base` digits spell any `u64` key.
fn key_digits(base: u64) -> u32 {
    let mut digits = 1;
    let mut span = u128::from(base);
    while span <= u128::from(u64::MAX) {
        span *= u128::from(base);
        digits += 1;
    }
    digits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_digits_cover_u64() {
        assert_eq!(key_digits(2), 64);
        assert_eq!(key_digits(256), 8);
        assert_eq!(key_digits(257), 8);
        assert_eq!(key_digits(65_536), 4);
        assert_eq!(key_digits(65_537), 4);
    }
}
