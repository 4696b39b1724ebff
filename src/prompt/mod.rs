//! Prompt synthesis: turn a trace record's lengths (and `hash_ids`) into text that the
//! server will count as exactly `input_length` tokens, keeping production prefix sharing.

mod hf;
mod tiktoken;
mod tokenizer;

pub use tokenizer::{
    AUTO_TOKENIZER, DEFAULT_TOKENIZER, Tokenizer, TokenizerError, load_tokenizer,
    load_tokenizer_for_model, load_tokenizer_spec,
};
