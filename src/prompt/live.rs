//! Live session prompts (`--sessions-live`): a child's prompt that carries its parent's
//! actual generated text where the parent's own blocks end.
//!
//! The prompt is [the child's blocks shared with the parent, up to where the parent's prompt
//! ends] + [the parent's output, tokenized] + [the child's remaining blocks, then drawn fill],
//! cut to exactly the child's length. Word pieces are one token each wherever they stand,
//! but the inserted text is not: its edges may merge with the pieces around it. So the
//! prompt is re-encoded and the tail (then the inserted span) resized until the count is
//! exact; when no exact length is found in a few rounds the caller builds the prompt the
//! usual way.

use super::builder::{Prompt, PromptBuilder, PromptError, text_tokens};
use super::mix::{Domain, item_key, stream_key};
use super::mode::PromptMode;
use super::text::PieceWriter;
use super::vocab::PieceVocab;
use crate::trace::{PrefixBlocks, TraceRecord};

/// Re-encoding rounds before giving up on an exact length.
const MAX_ROUNDS: u32 = 8;

/// A session child's prompt carrying its parent's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LivePrompt {
    /// The prompt, of exactly the child's length.
    pub prompt: Prompt,
    /// Tokens of the parent's output that went in (at least one).
    pub live_tokens: u32,
}

/// The three parts of a live prompt, as token counts.
#[derive(Debug, Clone, Copy)]
struct Parts {
    /// Leading tokens of the child's blocks (the part the parent's prompt shares).
    head: u32,
    /// Tokens of the parent's output.
    insert: u32,
    /// Tokens of the child's remaining blocks and fill.
    tail: u32,
}

impl PromptBuilder {
    /// `record`'s prompt with `parent_output` (the parent's generated text) inserted where
    /// the parent's prompt ends, of exactly `input_length - overhead_tokens` tokens.
    /// `Ok(None)` when no live prompt applies: the record is not built from blocks, the
    /// output is empty, or no exact length was found (build the prompt as usual then).
    pub fn build_live(
        &self,
        record: &TraceRecord,
        parent: &TraceRecord,
        parent_output: &str,
        overhead_tokens: u32,
    ) -> Result<Option<LivePrompt>, PromptError> {
        let (Some(own), PromptMode::Blocks) = (&record.prefix, self.mode().for_record(record))
        else {
            return Ok(None);
        };
        if own.block_size == 0 {
            return Err(PromptError::ZeroBlockSize { line: record.line });
        }
        let output_ids = self.tokenizer().encode(parent_output);
        if output_ids.is_empty() {
            return Ok(None);
        }

        let target = text_tokens(record.input_tokens, overhead_tokens);
        let head = shared_head(own, parent, overhead_tokens).min(target);
        let insert = (output_ids.len() as u32).min(target - head);
        let parts = Parts {
            head,
            insert,
            tail: target - head - insert,
        };
        self.fit(record, own, &output_ids, parts, target)
    }

    /// Resizes `parts` until the assembled prompt re-encodes to `target` tokens.
    fn fit(
        &self,
        record: &TraceRecord,
        own: &PrefixBlocks,
        output_ids: &[u32],
        mut parts: Parts,
        target: u32,
    ) -> Result<Option<LivePrompt>, PromptError> {
        let vocab = self.vocab()?;
        for _ in 0..MAX_ROUNDS {
            if parts.insert == 0 {
                return Ok(None);
            }
            let text = self.assemble(&vocab, record, own, output_ids, parts)?;
            let got = self.tokenizer().count(&text) as u32;
            if got == target {
                return Ok(Some(self.finish(text, target, parts.insert)));
            }
            parts = resized(parts, got, target);
        }
        Ok(None)
    }

    /// The prompt text of `parts`.
    fn assemble(
        &self,
        vocab: &PieceVocab,
        record: &TraceRecord,
        own: &PrefixBlocks,
        output_ids: &[u32],
        parts: Parts,
    ) -> Result<String, PromptError> {
        let blocks = stream_key(self.seed(), Domain::Block);
        let mut head = PieceWriter::new(vocab, parts.head, false);
        push_blocks(&mut head, blocks, &own.hash_ids, own.block_size, parts.head);

        let inserted = self
            .tokenizer()
            .decode(&output_ids[..parts.insert as usize])?;

        let shared_blocks = parts.head.div_ceil(own.block_size) as usize;
        let rest = own.hash_ids.get(shared_blocks..).unwrap_or_default();
        let mut tail = PieceWriter::new(vocab, parts.tail, false);
        push_blocks(&mut tail, blocks, rest, own.block_size, parts.tail);
        let fill = item_key(stream_key(self.seed(), Domain::Fill), record.line);
        tail.push_drawn(fill, parts.tail - tail.tokens());

        let (head, _, _) = head.finish();
        let (tail, _, _) = tail.finish();
        Ok(head + &inserted + &tail)
    }

    /// The prompt of `text`, known to be `tokens` long.
    fn finish(&self, text: String, tokens: u32, live_tokens: u32) -> LivePrompt {
        let token_ids = self.with_ids().then(|| self.tokenizer().encode(&text));
        LivePrompt {
            prompt: Prompt {
                text,
                token_ids,
                tokens,
                mode: PromptMode::Blocks,
            },
            live_tokens,
        }
    }
}

/// Tokens of the child's prompt that its parent's prompt shares: the blocks common to both
/// `hash_ids` prefixes, no further than the parent's own prompt.
fn shared_head(own: &PrefixBlocks, parent: &TraceRecord, overhead_tokens: u32) -> u32 {
    let Some(theirs) = &parent.prefix else {
        return 0;
    };
    let common = own
        .hash_ids
        .iter()
        .zip(&theirs.hash_ids)
        .take_while(|(a, b)| a == b)
        .count() as u32;
    let parent_tokens = text_tokens(parent.input_tokens, overhead_tokens);
    (common * own.block_size).min(parent_tokens)
}

/// Pushes the blocks of `hash_ids` in order, `count` tokens at most.
fn push_blocks(out: &mut PieceWriter, blocks: u64, hash_ids: &[u64], size: u32, count: u32) {
    for &block in hash_ids {
        let left = count - out.tokens();
        if left == 0 {
            break;
        }
        out.push_block(item_key(blocks, block), size.min(left));
    }
}

/// `parts` resized so that a prompt that re-encoded to `got` tokens comes to `target`: the
/// tail first, then the inserted span when the tail is used up.
fn resized(parts: Parts, got: u32, target: u32) -> Parts {
    if got < target {
        return Parts {
            tail: parts.tail + (target - got),
            ..parts
        };
    }
    let over = got - target;
    match parts.tail >= over {
        true => Parts {
            tail: parts.tail - over,
            ..parts
        },
        false => Parts {
            insert: parts.insert.saturating_sub(over - parts.tail),
            tail: 0,
            ..parts
        },
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::prompt::load_tokenizer;

    fn record(line: u64, input: u32, hash_ids: &[u64]) -> TraceRecord {
        let mut r = TraceRecord::new(Duration::ZERO, input, 10, line);
        r.prefix = Some(PrefixBlocks {
            hash_ids: hash_ids.to_vec(),
            block_size: 16,
        });
        r
    }

    fn builder(records: &[TraceRecord]) -> anyhow::Result<PromptBuilder> {
        let tokenizer = load_tokenizer("o200k_base")?;
        Ok(PromptBuilder::new(
            PromptMode::Blocks,
            tokenizer,
            7,
            records,
        )?)
    }

    #[test]
    fn live_prompt_keeps_the_parents_part_inserts_the_output_and_is_exact() -> anyhow::Result<()> {
        let parent = record(1, 40, &[1, 2, 3]);
        let child = record(2, 80, &[1, 2, 4, 5, 6]);
        let b = builder(&[parent.clone(), child.clone()])?;
        let output = " Sure, here is the answer:\nIt works.";
        let live = b.build_live(&child, &parent, output, 0)?;
        let live = live.ok_or_else(|| anyhow::anyhow!("no live prompt"))?;

        assert_eq!(b.tokenizer().count(&live.prompt.text), 80);
        assert_eq!(live.prompt.tokens, 80);
        assert_eq!(
            live.live_tokens as usize,
            b.tokenizer().encode(output).len()
        );
        // Blocks 1 and 2 (32 tokens) are the parent's own leading text.
        let parent_text = b.build(&parent, 0)?.text;
        let cut = parent_text.match_indices(' ').nth(32).map_or(0, |(i, _)| i);
        assert!(live.prompt.text.starts_with(&parent_text[..cut]));
        assert_eq!(
            live.prompt.text[cut..].find(output),
            Some(0),
            "{}",
            live.prompt.text
        );
        Ok(())
    }

    #[test]
    fn a_long_output_is_cut_to_the_childs_length() -> anyhow::Result<()> {
        let parent = record(1, 32, &[1, 2]);
        let child = record(2, 50, &[1, 2, 3, 4]);
        let b = builder(&[parent.clone(), child.clone()])?;
        let output = " the".repeat(100);
        let live = b.build_live(&child, &parent, &output, 0)?;
        let live = live.ok_or_else(|| anyhow::anyhow!("no live prompt"))?;
        assert_eq!(b.tokenizer().count(&live.prompt.text), 50);
        assert_eq!(live.live_tokens, 18);
        Ok(())
    }

    #[test]
    fn empty_output_or_no_blocks_gives_no_live_prompt() -> anyhow::Result<()> {
        let parent = record(1, 32, &[1, 2]);
        let child = record(2, 50, &[1, 2, 3, 4]);
        let b = builder(&[parent.clone(), child.clone()])?;
        assert_eq!(b.build_live(&child, &parent, "", 0)?, None);
        let plain = TraceRecord::new(Duration::ZERO, 50, 10, 3);
        let auto = PromptBuilder::new(PromptMode::Auto, b.tokenizer().clone(), 7, &[])?;
        assert_eq!(auto.build_live(&plain, &parent, " the", 0)?, None);
        Ok(())
    }
}
