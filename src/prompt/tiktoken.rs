//! The built-in tiktoken encodings (`o200k_base`, `cl100k_base`): rank files embedded in the
//! `tiktoken-rs` crate, so they need no file and no network.

use std::collections::HashSet;

use tiktoken_rs::CoreBPE;

use super::tokenizer::{Tokenizer, TokenizerError};

/// A tiktoken encoding behind the [`Tokenizer`] trait.
pub(crate) struct TiktokenTokenizer {
    /// The encoding name.
    name: &'static str,
    /// The shared, lazily built encoder.
    bpe: &'static CoreBPE,
    /// Ids of the special tokens.
    special: HashSet<u32>,
    /// One past the largest id.
    vocab_size: u32,
}

impl TiktokenTokenizer {
    /// The built-in encoding called `name`, `None` if there is none of that name.
    pub(crate) fn builtin(name: &str) -> Result<Option<Self>, TokenizerError> {
        let (name, bpe): (&'static str, &'static CoreBPE) = match name {
            "o200k_base" => ("o200k_base", tiktoken_rs::o200k_base_singleton()),
            "cl100k_base" => ("cl100k_base", tiktoken_rs::cl100k_base_singleton()),
            _ => return Ok(None),
        };
        Ok(Some(Self::new(name, bpe)?))
    }

    /// The built-in encoding an OpenAI model name uses (`gpt-4o` → `o200k_base`).
    pub(crate) fn encoding_for_model(model: &str) -> Option<&'static str> {
        use tiktoken_rs::tokenizer::{Tokenizer as Encoding, get_tokenizer};
        match get_tokenizer(model)? {
            Encoding::O200kBase => Some("o200k_base"),
            Encoding::Cl100kBase => Some("cl100k_base"),
            _ => None,
        }
    }

    /// Collects the special ids and the vocabulary size of `bpe`.
    fn new(name: &'static str, bpe: &'static CoreBPE) -> Result<Self, TokenizerError> {
        let special: HashSet<u32> = bpe
            .special_tokens()
            .into_iter()
            .flat_map(|text| bpe.encode_with_special_tokens(text))
            .collect();
        let largest_special =
            special
                .iter()
                .copied()
                .max()
                .ok_or_else(|| TokenizerError::Builtin {
                    name: name.to_string(),
                    reason: "no special tokens found".to_string(),
                })?;
        Ok(Self {
            name,
            bpe,
            special,
            vocab_size: largest_special + 1,
        })
    }
}

impl Tokenizer for TiktokenTokenizer {
    fn name(&self) -> &str {
        self.name
    }

    fn encode(&self, text: &str) -> Vec<u32> {
        self.bpe.encode_ordinary(text)
    }

    fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        let bytes = self
            .bpe
            .decode_bytes(ids)
            .map_err(|e| TokenizerError::Decode(e.to_string()))?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn vocab_size(&self) -> u32 {
        self.vocab_size
    }

    fn is_special(&self, id: u32) -> bool {
        self.special.contains(&id)
    }

    fn count(&self, text: &str) -> usize {
        self.bpe.count_ordinary(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn o200k_base_round_trips_and_knows_its_size() -> Result<(), TokenizerError> {
        let tok =
            TiktokenTokenizer::builtin("o200k_base")?.ok_or(TokenizerError::AutoWithoutModel)?;
        let ids = tok.encode("hello world");
        assert_eq!(ids.len(), 2);
        assert_eq!(tok.decode(&ids)?, "hello world");
        assert_eq!(tok.vocab_size(), 200_019);
        assert!(tok.is_special(199_999));
        assert!(!tok.is_special(ids[0]));
        Ok(())
    }

    #[test]
    fn cl100k_base_knows_its_size() -> Result<(), TokenizerError> {
        let tok =
            TiktokenTokenizer::builtin("cl100k_base")?.ok_or(TokenizerError::AutoWithoutModel)?;
        assert_eq!(tok.vocab_size(), 100_277);
        assert!(tok.is_special(100_257));
        Ok(())
    }
}
