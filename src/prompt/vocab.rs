//! The vetted vocabulary: word pieces (a space and lowercase ASCII letters, ` word`) that the
//! tokenizer encodes to exactly one token, alone and concatenated in any order.
//!
//! Prompt text built only from these pieces has a known token count without encoding it:
//! every piece starts with a space, which the pre-tokenizers of the byte-level BPE families
//! we support always split on, so no token can span two pieces. [`PieceVocab::build`] proves
//! the property for the tokenizer at hand (each piece alone, then all pieces concatenated)
//! and refuses a tokenizer where it does not hold.

use super::tokenizer::Tokenizer;

/// Fewer pieces than this make block texts too repetitive to tell apart.
const MIN_PIECES: usize = 256;

/// Longest piece kept, in letters: long rare words add bytes, not variety.
const MAX_PIECE_LETTERS: usize = 12;

/// Errors building the vetted vocabulary.
#[derive(Debug, Clone, thiserror::Error)]
pub enum VocabError {
    /// Too few single-token word pieces were found.
    #[error(
        "tokenizer {tokenizer} has only {found} single-token word pieces (need {MIN_PIECES}); \
         use --prompt random"
    )]
    TooFewPieces {
        /// The tokenizer's name.
        tokenizer: String,
        /// How many pieces passed vetting.
        found: usize,
    },

    /// The concatenation of all pieces did not encode to one token per piece.
    #[error(
        "tokenizer {tokenizer} merges word pieces across boundaries ({pieces} pieces gave \
         {tokens} tokens, first difference at piece {at}); use --prompt random"
    )]
    Merges {
        /// The tokenizer's name.
        tokenizer: String,
        /// Pieces concatenated.
        pieces: usize,
        /// Tokens they encoded to.
        tokens: usize,
        /// Index of the first piece whose token differed.
        at: usize,
    },
}

/// Single-token word pieces of one tokenizer, in ascending token id order.
#[derive(Debug, Clone)]
pub struct PieceVocab {
    /// All piece texts, back to back.
    text: String,
    /// Byte offset of piece `i` in `text` is `starts[i]`; `starts` has one extra end entry.
    starts: Vec<u32>,
    /// Token id of piece `i`.
    ids: Vec<u32>,
}

impl PieceVocab {
    /// Finds and vets the word pieces of `tokenizer`.
    pub fn build(tokenizer: &dyn Tokenizer) -> Result<Self, VocabError> {
        let mut candidates = candidate_pieces(tokenizer);
        candidates.sort_unstable_by_key(|(id, _)| *id);
        candidates.dedup_by_key(|(id, _)| *id);
        if candidates.len() < MIN_PIECES {
            return Err(VocabError::TooFewPieces {
                tokenizer: tokenizer.name().to_string(),
                found: candidates.len(),
            });
        }

        let vocab = Self::from_pieces(&candidates);
        vocab.check_concatenation(tokenizer)?;
        Ok(vocab)
    }

    /// Number of pieces.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are no pieces (never true for a built vocabulary).
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Mean bytes per piece, rounded up (to size text buffers).
    pub fn mean_piece_bytes(&self) -> usize {
        self.text.len().div_ceil(self.len().max(1))
    }

    /// Text of piece `index` (` word`).
    pub fn piece(&self, index: usize) -> &str {
        let (start, end) = (self.starts[index] as usize, self.starts[index + 1] as usize);
        &self.text[start..end]
    }

    /// Token id of piece `index`.
    pub fn id(&self, index: usize) -> u32 {
        self.ids[index]
    }

    /// Lays the vetted `(id, text)` pairs out back to back.
    fn from_pieces(pieces: &[(u32, String)]) -> Self {
        let mut text = String::new();
        let mut starts = Vec::with_capacity(pieces.len() + 1);
        for (_, piece) in pieces {
            starts.push(text.len() as u32);
            text.push_str(piece);
        }
        starts.push(text.len() as u32);
        let ids = pieces.iter().map(|(id, _)| *id).collect();
        Self { text, starts, ids }
    }

    /// Encodes every piece back to back, forwards and in a shuffled order, and requires one
    /// token per piece, each the piece's own id.
    fn check_concatenation(&self, tokenizer: &dyn Tokenizer) -> Result<(), VocabError> {
        let forward: Vec<usize> = (0..self.len()).collect();
        let mut shuffled = forward.clone();
        shuffled.reverse();
        shuffled.rotate_left(self.len() / 3);
        for order in [forward, shuffled] {
            self.check_order(tokenizer, &order)?;
        }
        Ok(())
    }

    /// Encodes the pieces in `order` and compares with their ids.
    fn check_order(&self, tokenizer: &dyn Tokenizer, order: &[usize]) -> Result<(), VocabError> {
        let text: String = order.iter().map(|&i| self.piece(i)).collect();
        let got = tokenizer.encode(&text);
        let want = order.iter().map(|&i| self.ids[i]);
        let first_difference = want.zip(got.iter()).position(|(w, g)| w != *g);
        if got.len() == order.len() && first_difference.is_none() {
            return Ok(());
        }
        Err(VocabError::Merges {
            tokenizer: tokenizer.name().to_string(),
            pieces: order.len(),
            tokens: got.len(),
            at: first_difference.unwrap_or(got.len().min(order.len())),
        })
    }
}

/// Every ` word` piece of the vocabulary that encodes, alone, to exactly one token.
fn candidate_pieces(tokenizer: &dyn Tokenizer) -> Vec<(u32, String)> {
    (0..tokenizer.vocab_size())
        .filter(|&id| !tokenizer.is_special(id))
        .filter_map(|id| word_of(tokenizer, id))
        .filter_map(|piece| match tokenizer.encode(&piece).as_slice() {
            [only] => Some((*only, piece)),
            _ => None,
        })
        .collect()
}

/// ` word` for a token whose text is a word of lowercase ASCII letters, with or without the
/// leading space (SentencePiece-style decoders drop it on a lone token).
fn word_of(tokenizer: &dyn Tokenizer, id: u32) -> Option<String> {
    let text = tokenizer.decode(&[id]).ok()?;
    let word = text.strip_prefix(' ').unwrap_or(&text);
    let letters = word.len();
    let is_word =
        (1..=MAX_PIECE_LETTERS).contains(&letters) && word.bytes().all(|b| b.is_ascii_lowercase());
    is_word.then(|| format!(" {word}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompt::load_tokenizer;

    #[test]
    fn o200k_base_pieces_are_single_tokens_with_a_leading_space() -> anyhow::Result<()> {
        let tok = load_tokenizer("o200k_base")?;
        let vocab = PieceVocab::build(tok.as_ref())?;
        assert!(vocab.len() > 10_000, "{}", vocab.len());
        for i in [0, vocab.len() / 2, vocab.len() - 1] {
            assert!(vocab.piece(i).starts_with(' '));
            assert_eq!(tok.encode(vocab.piece(i)), vec![vocab.id(i)]);
        }
        Ok(())
    }
}
