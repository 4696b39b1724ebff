//! The prompt modes `--prompt` offers, and which one a record gets under `auto`.

use serde::{Deserialize, Serialize};

use crate::trace::TraceRecord;

/// How a record's prompt text is made.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum PromptMode {
    /// The seed's algorithm: random ids from the lower half of the vocabulary, decoded and
    /// re-encoded until the length holds (bounded rounds, then an error).
    Random,
    /// One text of the longest length; every prompt is a prefix of it (every request then
    /// shares a prefix: the prefix cache sees a hit on nearly everything).
    Shared,
    /// From `hash_ids`: each block id is one block of `block_size` tokens of text; equal ids
    /// give identical text, so production prefix sharing is kept.
    Blocks,
    /// `blocks` for records with `hash_ids`, `random` for the others.
    #[default]
    Auto,
}

impl PromptMode {
    /// The mode `record` gets: `auto` resolved, any other mode as it is.
    pub fn for_record(self, record: &TraceRecord) -> PromptMode {
        match self {
            PromptMode::Auto if has_blocks(record) => PromptMode::Blocks,
            PromptMode::Auto => PromptMode::Random,
            other => other,
        }
    }

    /// The flag value (`random`, `shared`, `blocks`, `auto`).
    pub fn as_str(self) -> &'static str {
        match self {
            PromptMode::Random => "random",
            PromptMode::Shared => "shared",
            PromptMode::Blocks => "blocks",
            PromptMode::Auto => "auto",
        }
    }
}

impl std::fmt::Display for PromptMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether `record` has at least one `hash_ids` block.
pub(crate) fn has_blocks(record: &TraceRecord) -> bool {
    record
        .prefix
        .as_ref()
        .is_some_and(|p| !p.hash_ids.is_empty())
}
