//! What one SSE event of an OpenAI-compatible stream means: output, usage, the end marker
//! or an error. Only chunks that carry generated output count as tokens: a role-only first
//! chunk, an empty delta or a usage-only chunk does not.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::IgnoredAny;

use super::sse::SseEvent;

/// The meaning of one event.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamItem {
    /// `data: [DONE]`.
    Done,
    /// A JSON chunk.
    Chunk(Chunk),
    /// `event: error`, or a chunk holding an `error` object; the text is the server's.
    Error(String),
}

/// The parts of a chunk the timing needs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Chunk {
    /// Whether the chunk carries generated output (text, reasoning or tool calls).
    pub has_output: bool,
    /// The generated text it carries (content and reasoning), for counting tokens.
    pub text: String,
    /// The `usage` object, when the chunk has one.
    pub usage: Option<Usage>,
    /// Whether a choice has a non-null `finish_reason`.
    pub finished: bool,
}

/// Token counts as the server reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Usage {
    /// Tokens of the prompt (with the chat template).
    #[serde(default)]
    pub prompt_tokens: Option<u32>,
    /// Tokens generated.
    #[serde(default)]
    pub completion_tokens: Option<u32>,
    /// Details of the prompt tokens.
    #[serde(default)]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
}

/// `usage.prompt_tokens_details`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct PromptTokensDetails {
    /// Prompt tokens served from the prefix cache.
    #[serde(default)]
    pub cached_tokens: Option<u32>,
}

/// An event whose data is neither `[DONE]` nor a JSON object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("chunk is not json ({reason}): {excerpt:?}")]
pub struct ChunkError {
    /// What serde said.
    pub reason: String,
    /// The first bytes of the data.
    pub excerpt: String,
}

/// Longest excerpt of bad data kept in an error message, characters.
const EXCERPT_CHARS: usize = 80;

// The raw chunk borrows its strings from the event's data (no allocation unless a string
// has escapes) and only asks of `finish_reason` and `tool_calls` whether they are there:
// this parse runs once per streamed token, the client's hottest path.
#[derive(Deserialize)]
struct RawChunk<'a> {
    #[serde(default, borrow)]
    choices: Vec<RawChoice<'a>>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawChoice<'a> {
    #[serde(default, borrow)]
    delta: Option<RawDelta<'a>>,
    /// `/v1/completions` streams text here.
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    /// `None` for a missing or `null` reason.
    #[serde(default)]
    finish_reason: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct RawDelta<'a> {
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    reasoning_content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    reasoning: Option<Cow<'a, str>>,
    #[serde(default)]
    tool_calls: Option<Vec<IgnoredAny>>,
}

/// Interprets one event.
pub fn interpret(event: &SseEvent) -> Result<StreamItem, ChunkError> {
    let data = event.data.trim();
    if event.event == "error" {
        return Ok(StreamItem::Error(data.to_string()));
    }
    if data == "[DONE]" {
        return Ok(StreamItem::Done);
    }

    let raw: RawChunk = serde_json::from_str(data).map_err(|err| ChunkError {
        reason: err.to_string(),
        excerpt: data.chars().take(EXCERPT_CHARS).collect(),
    })?;
    if let Some(error) = raw.error.as_ref().filter(|e| !e.is_null()) {
        return Ok(StreamItem::Error(error_text(error)));
    }
    Ok(StreamItem::Chunk(chunk_of(raw)))
}

fn chunk_of(raw: RawChunk<'_>) -> Chunk {
    let mut chunk = Chunk {
        usage: raw.usage,
        ..Chunk::default()
    };
    for choice in raw.choices {
        chunk.finished |= choice.finish_reason.is_some();
        if let Some(text) = choice.text.filter(|t| !t.is_empty()) {
            chunk.has_output = true;
            chunk.text.push_str(&text);
        }
        if let Some(delta) = choice.delta {
            add_delta(&mut chunk, delta);
        }
    }
    chunk
}

fn add_delta(chunk: &mut Chunk, delta: RawDelta<'_>) {
    let texts = [delta.content, delta.reasoning_content, delta.reasoning];
    for text in texts.into_iter().flatten().filter(|t| !t.is_empty()) {
        chunk.has_output = true;
        chunk.text.push_str(&text);
    }
    if delta.tool_calls.is_some_and(|calls| !calls.is_empty()) {
        chunk.has_output = true;
    }
}

/// The server's error message: `error.message` when it has one, else the whole value.
fn error_text(error: &serde_json::Value) -> String {
    match error.get("message").and_then(|m| m.as_str()) {
        Some(message) => message.to_string(),
        None => match error.as_str() {
            Some(text) => text.to_string(),
            None => error.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(data: &str) -> StreamItem {
        let event = SseEvent {
            event: "message".into(),
            data: data.into(),
        };
        interpret(&event).unwrap_or_else(|e| panic!("{e}"))
    }

    fn output(data: &str) -> bool {
        match item(data) {
            StreamItem::Chunk(chunk) => chunk.has_output,
            other => panic!("not a chunk: {other:?}"),
        }
    }

    #[test]
    fn role_only_empty_and_usage_only_chunks_carry_no_output() {
        assert!(!output(r#"{"choices":[{"delta":{"role":"assistant"}}]}"#));
        assert!(!output(
            r#"{"choices":[{"delta":{"role":"assistant","content":""}}]}"#
        ));
        assert!(!output(
            r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}"#
        ));
        assert!(!output(r#"{"choices":[{"delta":{"tool_calls":[]}}]}"#));
    }

    #[test]
    fn content_reasoning_tool_calls_and_text_carry_output() {
        assert!(output(r#"{"choices":[{"delta":{"content":"a"}}]}"#));
        assert!(output(
            r#"{"choices":[{"delta":{"reasoning_content":"a"}}]}"#
        ));
        assert!(output(r#"{"choices":[{"delta":{"reasoning":"a"}}]}"#));
        assert!(output(
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0}]}}]}"#
        ));
        assert!(output(r#"{"choices":[{"text":"a","finish_reason":null}]}"#));
    }

    #[test]
    fn escaped_text_is_decoded_and_null_finish_is_not_a_finish() {
        let data = r#"{"choices":[{"delta":{"content":"a\"b\u00e9"},"finish_reason":null}]}"#;
        let StreamItem::Chunk(chunk) = item(data) else {
            panic!("not a chunk")
        };
        assert_eq!(chunk.text, "a\"bé");
        assert!(!chunk.finished);
        let done = r#"{"choices":[{"delta":{"content":"x"},"finish_reason":"stop"}]}"#;
        let StreamItem::Chunk(chunk) = item(done) else {
            panic!("not a chunk")
        };
        assert!(chunk.finished && chunk.has_output);
    }

    #[test]
    fn usage_with_empty_choices_is_read() {
        let data = r#"{"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":2,
            "prompt_tokens_details":{"cached_tokens":4}}}"#;
        let StreamItem::Chunk(chunk) = item(data) else {
            panic!("not a chunk")
        };
        let usage = chunk.usage.unwrap_or_default();
        assert_eq!(usage.prompt_tokens, Some(7));
        assert_eq!(usage.completion_tokens, Some(2));
        assert_eq!(
            usage.prompt_tokens_details.and_then(|d| d.cached_tokens),
            Some(4)
        );
    }

    #[test]
    fn errors_in_band_and_as_events() {
        let in_band = item(r#"{"error":{"message":"overloaded","code":503}}"#);
        assert_eq!(in_band, StreamItem::Error("overloaded".into()));
        let event = SseEvent {
            event: "error".into(),
            data: "boom".into(),
        };
        assert_eq!(interpret(&event), Ok(StreamItem::Error("boom".into())));
        assert_eq!(item(" [DONE] "), StreamItem::Done);
    }

    #[test]
    fn non_json_is_an_error_with_an_excerpt() {
        let event = SseEvent {
            event: "message".into(),
            data: "<html>".into(),
        };
        let err = interpret(&event)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("<html>"), "{err}");
    }
}
