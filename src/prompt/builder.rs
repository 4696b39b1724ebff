//! [`PromptBuilder`]: one record in, one prompt of the exact length out.
//!
//! Built once per run (vetting the tokenizer's word pieces, and for `shared` mode building
//! the one long text), then shared by every thread: `build` takes `&self`, holds no lock and
//! keeps nothing, so prompts are made on demand as requests are dispatched and the same
//! inputs give byte-identical prompts on any thread count.

use std::sync::{Arc, OnceLock};

use super::mix::{Domain, item_key, stream_key};
use super::mode::{PromptMode, has_blocks};
use super::random::{MAX_ROUNDS, RandomOutcome, random_prompt};
use super::text::PieceWriter;
use super::tokenizer::{Tokenizer, TokenizerError};
use super::vocab::{PieceVocab, VocabError};
use crate::trace::TraceRecord;

/// Errors building prompts.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    /// The tokenizer failed.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),

    /// The tokenizer's word pieces could not be vetted.
    #[error(transparent)]
    Vocab(#[from] VocabError),

    /// `random` mode found no text of the exact length.
    #[error(
        "line {line}: random prompt of {target_tokens} tokens still had {last_tokens} after \
         {rounds} decode/encode rounds; use --prompt blocks or shared"
    )]
    RandomGaveUp {
        /// The record's line in the trace.
        line: u64,
        /// Tokens wanted.
        target_tokens: u32,
        /// Tokens of the last attempt.
        last_tokens: u32,
        /// Rounds tried.
        rounds: u32,
    },

    /// `blocks` mode was asked for a record without `hash_ids`.
    #[error(
        "line {line}: --prompt blocks needs hash_ids and this record has none; use --prompt auto"
    )]
    NoHashIds {
        /// The record's line in the trace.
        line: u64,
    },

    /// A record's `block_size` is zero.
    #[error("line {line}: block_size 0 is not a block size")]
    ZeroBlockSize {
        /// The record's line in the trace.
        line: u64,
    },

    /// A record is longer than the `shared` text, which was sized from other records.
    #[error(
        "line {line}: {target_tokens} tokens is longer than the shared prompt ({shared_tokens} \
         tokens, sized from the records the builder was given)"
    )]
    LongerThanShared {
        /// The record's line in the trace.
        line: u64,
        /// Tokens wanted.
        target_tokens: u32,
        /// Tokens of the shared text.
        shared_tokens: u32,
    },

    /// Re-encoding a prompt gave another length than built.
    #[error("line {line}: {mode} prompt re-encodes to {got_tokens} tokens, not {target_tokens}")]
    LengthMismatch {
        /// The record's line in the trace.
        line: u64,
        /// The mode used.
        mode: PromptMode,
        /// Tokens wanted.
        target_tokens: u32,
        /// Tokens found on re-encoding.
        got_tokens: u32,
    },
}

/// One record's prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    /// The text to send (what `tokens` counts, without any chat template).
    pub text: String,
    /// The text's token ids; `None` unless the builder was asked for them.
    pub token_ids: Option<Vec<u32>>,
    /// Tokens of `text`: the record's `input_length` minus the template overhead (at least 1).
    pub tokens: u32,
    /// The mode that made it (`auto` resolved).
    pub mode: PromptMode,
}

/// Makes every record's prompt: shared across threads, nothing kept between calls.
pub struct PromptBuilder {
    /// The requested mode (`auto` resolved per record).
    mode: PromptMode,
    /// Encodes and decodes.
    tokenizer: Arc<dyn Tokenizer>,
    /// Every random choice derives from it.
    seed: u64,
    /// Whether prompts carry their token ids.
    with_ids: bool,
    /// The vetted word pieces, built on first need.
    vocab: OnceLock<Result<Arc<PieceVocab>, VocabError>>,
    /// `shared` mode's one text; `None` in other modes.
    shared: Option<SharedText>,
}

/// `shared` mode's text: every prompt is a prefix of it.
struct SharedText {
    /// The text.
    text: String,
    /// Byte offset where each piece ends: a `n`-token prefix is `text[..ends[n - 1]]`.
    ends: Vec<u32>,
    /// Token ids of the pieces.
    ids: Vec<u32>,
}

impl PromptBuilder {
    /// A builder for `mode`, seeded by `seed`, ready for `records` (used to size `shared`
    /// mode's text and to vet the word pieces up front when any record needs them).
    pub fn new(
        mode: PromptMode,
        tokenizer: Arc<dyn Tokenizer>,
        seed: u64,
        records: &[TraceRecord],
    ) -> Result<Self, PromptError> {
        Self::with_vocab(mode, tokenizer, None, seed, records)
    }

    /// [`PromptBuilder::new`] reusing pieces already vetted for the same tokenizer (vetting
    /// takes about a second; tests and tools that build many builders share it).
    pub fn with_vocab(
        mode: PromptMode,
        tokenizer: Arc<dyn Tokenizer>,
        vocab: Option<Arc<PieceVocab>>,
        seed: u64,
        records: &[TraceRecord],
    ) -> Result<Self, PromptError> {
        let cell = OnceLock::new();
        if let Some(vocab) = vocab {
            let _ = cell.set(Ok(vocab));
        }
        let builder = Self {
            mode,
            tokenizer,
            seed,
            with_ids: false,
            vocab: cell,
            shared: None,
        };
        if needs_vocab(mode, records) {
            builder.vocab()?;
        }
        builder.with_shared(records)
    }

    /// The same builder, its prompts carrying their token ids (`--prompt-as-tokens`).
    pub fn with_token_ids(self, with_ids: bool) -> Self {
        Self { with_ids, ..self }
    }

    /// The tokenizer prompts are measured with.
    pub fn tokenizer(&self) -> &Arc<dyn Tokenizer> {
        &self.tokenizer
    }

    /// The requested mode (`auto` unresolved).
    pub fn mode(&self) -> PromptMode {
        self.mode
    }

    /// The seed every random choice derives from.
    pub(super) fn seed(&self) -> u64 {
        self.seed
    }

    /// Whether prompts carry their token ids.
    pub(super) fn with_ids(&self) -> bool {
        self.with_ids
    }

    /// The vetted word pieces, vetting them on first use.
    pub fn vocab(&self) -> Result<Arc<PieceVocab>, PromptError> {
        let built = self
            .vocab
            .get_or_init(|| PieceVocab::build(self.tokenizer.as_ref()).map(Arc::new));
        built.clone().map_err(PromptError::from)
    }

    /// `record`'s prompt: `input_length - overhead_tokens` tokens of text (at least one), so
    /// that the server, adding a chat template of `overhead_tokens`, counts `input_length`.
    pub fn build(&self, record: &TraceRecord, overhead_tokens: u32) -> Result<Prompt, PromptError> {
        let target = text_tokens(record.input_tokens, overhead_tokens);
        let mode = self.mode.for_record(record);
        let (text, token_ids, tokens) = match mode {
            PromptMode::Blocks => self.blocks(record, target)?,
            PromptMode::Shared => self.shared_prefix(record, target)?,
            _ => self.random(record, target)?,
        };
        Ok(Prompt {
            text,
            token_ids,
            tokens,
            mode,
        })
    }

    /// `blocks` mode: the record's blocks in order, cut at `target`, then drawn text if the
    /// blocks are too few.
    fn blocks(&self, record: &TraceRecord, target: u32) -> Result<Built, PromptError> {
        let prefix = record.prefix.as_ref().filter(|_| has_blocks(record));
        let prefix = prefix.ok_or(PromptError::NoHashIds { line: record.line })?;
        if prefix.block_size == 0 {
            return Err(PromptError::ZeroBlockSize { line: record.line });
        }

        let vocab = self.vocab()?;
        let mut out = PieceWriter::new(&vocab, target, self.with_ids);
        let blocks = stream_key(self.seed, Domain::Block);
        for &block in &prefix.hash_ids {
            let count = prefix.block_size.min(target - out.tokens());
            out.push_block(item_key(blocks, block), count);
        }

        // The trace's blocks cover fewer tokens than wanted: fill from the record's own key.
        let fill = item_key(stream_key(self.seed, Domain::Fill), record.line);
        out.push_drawn(fill, target - out.tokens());
        Ok(out.finish())
    }

    /// `shared` mode: a prefix of the one text, re-encoded to check its length.
    fn shared_prefix(&self, record: &TraceRecord, target: u32) -> Result<Built, PromptError> {
        let shared = self.shared.as_ref().ok_or(PromptError::LongerThanShared {
            line: record.line,
            target_tokens: target,
            shared_tokens: 0,
        })?;
        let Some(&end) = shared.ends.get(target as usize - 1) else {
            return Err(PromptError::LongerThanShared {
                line: record.line,
                target_tokens: target,
                shared_tokens: shared.ends.len() as u32,
            });
        };

        let text = shared.text[..end as usize].to_string();
        let got = self.tokenizer.count(&text) as u32;
        if got != target {
            return Err(PromptError::LengthMismatch {
                line: record.line,
                mode: PromptMode::Shared,
                target_tokens: target,
                got_tokens: got,
            });
        }
        let ids = self
            .with_ids
            .then(|| shared.ids[..target as usize].to_vec());
        Ok((text, ids, target))
    }

    /// `random` mode: the seed's decode → encode loop, keyed by the record's line.
    fn random(&self, record: &TraceRecord, target: u32) -> Result<Built, PromptError> {
        let key = item_key(stream_key(self.seed, Domain::Random), record.line);
        match random_prompt(self.tokenizer.as_ref(), key, target)? {
            RandomOutcome::Exact(text, ids) => Ok((text, self.with_ids.then_some(ids), target)),
            RandomOutcome::GaveUp(last_tokens) => Err(PromptError::RandomGaveUp {
                line: record.line,
                target_tokens: target,
                last_tokens,
                rounds: MAX_ROUNDS,
            }),
        }
    }

    /// Builds `shared` mode's text, as long as the longest record, when the mode is `shared`.
    fn with_shared(mut self, records: &[TraceRecord]) -> Result<Self, PromptError> {
        if self.mode != PromptMode::Shared {
            return Ok(self);
        }
        tracing::warn!(
            "--prompt shared: every prompt is a prefix of one text, so every request shares a \
             prefix with all others and the prefix cache hits far more than in production; \
             use --prompt blocks (traces with hash_ids) or random for realistic caching"
        );

        let longest = records
            .iter()
            .map(|r| r.input_tokens)
            .max()
            .unwrap_or(0)
            .max(1);
        let vocab = self.vocab()?;
        let mut out = PieceWriter::new(&vocab, longest, true);
        out.push_drawn(stream_key(self.seed, Domain::Shared), longest);
        let (text, ids, _) = out.finish();

        // Every piece starts with its only space, so piece i ends where piece i + 1 starts.
        let starts = text.match_indices(' ').map(|(at, _)| at as u32).skip(1);
        let ends = starts.chain([text.len() as u32]).collect();
        self.shared = Some(SharedText {
            text,
            ends,
            ids: ids.unwrap_or_default(),
        });
        Ok(self)
    }
}

/// A prompt's text, ids (when asked for) and token count.
type Built = (String, Option<Vec<u32>>, u32);

/// Tokens of text for a record of `input_tokens` behind a template of `overhead_tokens`.
pub fn text_tokens(input_tokens: u32, overhead_tokens: u32) -> u32 {
    input_tokens.saturating_sub(overhead_tokens).max(1)
}

/// Whether `mode` needs the vetted word pieces for any of `records`.
fn needs_vocab(mode: PromptMode, records: &[TraceRecord]) -> bool {
    match mode {
        PromptMode::Blocks | PromptMode::Shared => true,
        PromptMode::Auto => records.iter().any(has_blocks),
        PromptMode::Random => false,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::prompt::load_tokenizer;
    use crate::trace::PrefixBlocks;

    /// A record of `input` tokens on `line` with `hash_ids` of `block_size`-token blocks.
    fn record(line: u64, input: u32, hash_ids: &[u64], block_size: u32) -> TraceRecord {
        let mut r = TraceRecord::new(Duration::ZERO, input, 10, line);
        if !hash_ids.is_empty() {
            r.prefix = Some(PrefixBlocks {
                hash_ids: hash_ids.to_vec(),
                block_size,
            });
        }
        r
    }

    fn builder(mode: PromptMode, records: &[TraceRecord]) -> anyhow::Result<PromptBuilder> {
        Ok(PromptBuilder::new(
            mode,
            load_tokenizer("o200k_base")?,
            7,
            records,
        )?)
    }

    #[test]
    fn blocks_prompt_reencodes_to_the_exact_length() -> anyhow::Result<()> {
        let r = record(3, 40, &[1, 2, 3], 16);
        let b = builder(PromptMode::Blocks, std::slice::from_ref(&r))?.with_token_ids(true);
        let p = b.build(&r, 0)?;
        assert_eq!((p.tokens, p.mode), (40, PromptMode::Blocks));
        assert_eq!(
            b.tokenizer().encode(&p.text),
            p.token_ids.unwrap_or_default()
        );
        assert_eq!(b.tokenizer().count(&p.text), 40);
        Ok(())
    }

    #[test]
    fn equal_block_ids_give_equal_text_and_different_ids_differ() -> anyhow::Result<()> {
        let (a, b) = (record(1, 32, &[5, 6], 16), record(2, 32, &[5, 9], 16));
        let builder = builder(PromptMode::Blocks, &[a.clone(), b.clone()])?;
        let (pa, pb) = (builder.build(&a, 0)?, builder.build(&b, 0)?);
        let cut = |t: &str, n: usize| t.match_indices(' ').nth(n).map_or(t.len(), |(i, _)| i);
        let (a16, b16) = (cut(&pa.text, 16), cut(&pb.text, 16));
        assert_eq!(pa.text[..a16], pb.text[..b16]);
        assert_ne!(pa.text[a16..], pb.text[b16..]);
        Ok(())
    }

    #[test]
    fn overhead_shortens_the_text_to_at_least_one_token() -> anyhow::Result<()> {
        let r = record(1, 50, &[1, 2, 3, 4], 16);
        let b = builder(PromptMode::Blocks, std::slice::from_ref(&r))?;
        assert_eq!(b.build(&r, 8)?.tokens, 42);
        assert_eq!(b.tokenizer().count(&b.build(&r, 8)?.text), 42);
        assert_eq!(b.build(&r, 80)?.tokens, 1);
        assert_eq!(text_tokens(0, 0), 1);
        Ok(())
    }

    #[test]
    fn blocks_too_few_for_the_length_are_filled() -> anyhow::Result<()> {
        let r = record(1, 100, &[1], 16);
        let b = builder(PromptMode::Blocks, std::slice::from_ref(&r))?;
        let p = b.build(&r, 0)?;
        assert_eq!((p.tokens, b.tokenizer().count(&p.text)), (100, 100));
        Ok(())
    }

    #[test]
    fn random_mode_is_exact_for_short_prompts() -> anyhow::Result<()> {
        let records: Vec<TraceRecord> = (1..=5).map(|i| record(i, 10 * i as u32, &[], 0)).collect();
        let b = builder(PromptMode::Auto, &records)?;
        for r in &records {
            let p = b.build(r, 0)?;
            assert_eq!(p.mode, PromptMode::Random);
            assert_eq!(b.tokenizer().count(&p.text) as u32, r.input_tokens);
        }
        Ok(())
    }

    #[test]
    fn shared_prompts_are_prefixes_of_one_text() -> anyhow::Result<()> {
        let records = [record(1, 30, &[], 0), record(2, 70, &[], 0)];
        let b = builder(PromptMode::Shared, &records)?;
        let (short, long) = (b.build(&records[0], 0)?, b.build(&records[1], 0)?);
        assert!(long.text.starts_with(&short.text));
        assert_eq!(b.tokenizer().count(&long.text), 70);
        let too_long = b
            .build(&record(3, 71, &[], 0), 0)
            .err()
            .map(|e| e.to_string());
        assert!(too_long.is_some_and(|e| e.starts_with("line 3: 71 tokens is longer")));
        Ok(())
    }

    #[test]
    fn blocks_mode_without_hash_ids_names_the_line() -> anyhow::Result<()> {
        let r = record(9, 10, &[], 0);
        let err = builder(PromptMode::Blocks, &[])?
            .build(&r, 0)
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some(
                "line 9: --prompt blocks needs hash_ids and this record has none; use --prompt auto"
            )
        );
        Ok(())
    }
}
