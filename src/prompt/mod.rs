//! Prompt synthesis: turn a trace record's lengths (and `hash_ids`) into text that the
//! server will count as exactly `input_length` tokens, keeping production prefix sharing.

mod tokenizer;

pub use tokenizer::{Tokenizer, TokenizerError};
