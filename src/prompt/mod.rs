//! Prompt synthesis: turn a trace record's lengths (and `hash_ids`) into text that the
//! server will count as exactly `input_length` tokens, keeping production prefix sharing.
//!
//! - [`load_tokenizer`]: `--tokenizer SPEC` to a [`Tokenizer`] (tiktoken built-ins, a
//!   `tokenizer.json`, a hub repository id).
//! - [`PieceVocab`]: the tokenizer's vetted single-token word pieces, which make text of a
//!   known token count without encoding it.
//! - [`PromptBuilder`]: one record in, one [`Prompt`] out, in any [`PromptMode`];
//!   [`PromptBuilder::build_live`] for a session child carrying its parent's output.
//! - [`ChatTemplate`]: the `tokenizer_config.json` fallback for the chat template overhead.
//!
//! No network and no tokio here, except the hub download when a repository id is loaded.

mod batch;
mod builder;
mod hf;
mod live;
mod mix;
mod mode;
mod random;
mod template;
mod text;
mod tiktoken;
mod tokenizer;
mod vocab;

pub use batch::{for_each_mapped, for_each_prompt, sample_indexes};
pub use builder::{Prompt, PromptBuilder, PromptError, text_tokens};
pub use live::LivePrompt;
pub use mode::PromptMode;
pub use template::{ChatTemplate, TOKENIZER_CONFIG_FILE, TemplateError, config_beside};
pub use tokenizer::{
    AUTO_TOKENIZER, DEFAULT_TOKENIZER, Tokenizer, TokenizerError, load_tokenizer,
    load_tokenizer_for_model, load_tokenizer_spec,
};
pub use vocab::{PieceVocab, VocabError};
