//! Prompt sources for the dispatcher ([`PromptSource`]): the bridge to the prompt
//! synthesiser, and a filler source for tests and for runs without a tokenizer.

use crate::client::PromptBody;
use crate::replay::PromptSource;
use crate::trace::TraceRecord;

/// Prompts of `input_tokens − overhead` repetitions of one word: about one token per word
/// with common BPE vocabularies, but not exact, and every prompt shares one prefix.
///
/// TODO: this is a stand-in used when no tokenizer-backed synthesiser is wired; it stays
/// for tests that need cheap prompts. Exact lengths come from `prompt::PromptBuilder`.
#[derive(Debug, Clone, Default)]
pub struct FillerPrompts {
    /// Tokens of chat template overhead to leave out of every prompt.
    pub overhead_tokens: u32,
}

/// The word repeated: one token in o200k, cl100k and Llama/Qwen vocabularies.
const FILLER_WORD: &str = " hi";

impl PromptSource for FillerPrompts {
    fn prompt(&self, record: &TraceRecord) -> Result<PromptBody, String> {
        let words = record
            .input_tokens
            .saturating_sub(self.overhead_tokens)
            .max(1);
        Ok(PromptBody::Text(FILLER_WORD.repeat(words as usize)))
    }
}

/// The prompt synthesiser as a [`PromptSource`]: exact lengths by the tokenizer, less the
/// measured chat template overhead.
pub struct BuilderPrompts {
    /// The synthesiser.
    pub builder: crate::prompt::PromptBuilder,
    /// Tokens of chat template overhead to leave out of every prompt.
    pub overhead_tokens: u32,
}

impl PromptSource for BuilderPrompts {
    fn prompt(&self, record: &TraceRecord) -> Result<PromptBody, String> {
        let prompt = self
            .builder
            .build(record, self.overhead_tokens)
            .map_err(|e| e.to_string())?;
        Ok(match prompt.token_ids {
            Some(ids) => PromptBody::TokenIds(ids),
            None => PromptBody::Text(prompt.text),
        })
    }
}
