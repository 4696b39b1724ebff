//! One small trait over every tokenizer tracebench can use: the built-in tiktoken
//! encodings, a HuggingFace `tokenizer.json`, or a hub repository id.

/// Errors loading or using a tokenizer.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// Decoding the given ids failed.
    #[error("cannot decode token ids: {0}")]
    Decode(String),
}

/// A tokenizer: encode text to ids and back, without special tokens added.
pub trait Tokenizer: Send + Sync {
    /// A short name for reports (`o200k_base`, a file path, a repository id).
    fn name(&self) -> &str;

    /// Ids of `text`, adding no special tokens.
    fn encode(&self, text: &str) -> Vec<u32>;

    /// Text of `ids`.
    fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError>;

    /// Number of ids in the vocabulary (including special tokens).
    fn vocab_size(&self) -> u32;

    /// Whether `id` is a special (control) token.
    fn is_special(&self, id: u32) -> bool;
}
