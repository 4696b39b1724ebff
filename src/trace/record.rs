//! The one record type for a request in any trace.

use std::time::Duration;

/// One request of a trace, whatever format it was read from.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceRecord {
    /// Arrival offset from the start of the trace (the first record of a loaded trace is
    /// not necessarily at zero until a timeline transform rebases it).
    pub arrival: Duration,
    /// Prompt length in tokens.
    pub input_tokens: u32,
    /// Generated length in tokens.
    pub output_tokens: u32,
    /// Prefix blocks shared with other requests; `None` where the format has none.
    pub prefix: Option<PrefixBlocks>,
    /// Links to the previous turn of a conversation; `None` where the format has none.
    pub session: Option<SessionLink>,
    /// Request type as the trace names it (`text`, `search`, `synthetic`, ...).
    pub kind: Option<String>,
    /// 1-based line number in the source file (the header of a CSV is line 1).
    pub line: u64,
    /// Whether `--max-input-tokens` or `--max-output-tokens` shortened this record.
    pub clamped: bool,
}

/// The prompt's blocks: equal ids in two records mean an identical prefix block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixBlocks {
    /// One id per block of `block_size` tokens, in prompt order.
    pub hash_ids: Vec<u64>,
    /// Tokens per block (16 for Qwen-Bailian, 512 for Mooncake).
    pub block_size: u32,
}

/// Where a request sits in a multi-turn conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLink {
    /// This request's id.
    pub chat_id: i64,
    /// The previous turn's `chat_id`; `-1` for the first turn of a session.
    pub parent_chat_id: i64,
    /// 1-based turn number; `None` where the file does not say.
    pub turn: Option<u32>,
}

impl TraceRecord {
    /// A record with only the fields every format has.
    pub fn new(arrival: Duration, input_tokens: u32, output_tokens: u32, line: u64) -> Self {
        Self {
            arrival,
            input_tokens,
            output_tokens,
            prefix: None,
            session: None,
            kind: None,
            line,
            clamped: false,
        }
    }
}
