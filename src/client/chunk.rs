//! What one SSE event of an OpenAI-compatible stream means: output, usage, the end marker
//! or an error. Only chunks that carry generated output count as tokens: a role-only first
//! chunk, an empty delta or a usage-only chunk does not.
//!
//! Two readers of the chunk JSON give the same answers: a hand-written scanner (module
//! `scan`, plus [`ChunkReader`]'s memory of the last chunk's layout) for the common shapes,
//! on every streamed token, and serde for everything the scanner does not fully understand
//! (it then gives up and serde decides).

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::IgnoredAny;

use super::sse::EventRef;

mod scan;

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

/// The parts of a chunk the timing needs; its text goes to the caller's buffer.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Chunk {
    /// Whether the chunk carries generated output (text, reasoning or tool calls).
    pub has_output: bool,
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

/// Which reader of the chunk JSON [`interpret_with`] uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum JsonPath {
    /// The scanner, falling back to serde for what it does not understand.
    #[default]
    Fast,
    /// serde only: the reference the scanner is tested against.
    Serde,
}

/// Longest excerpt of bad data kept in an error message, characters.
const EXCERPT_CHARS: usize = 80;

// The serde path: the raw chunk borrows its strings from the event's data (no allocation
// unless a string has escapes) and only asks of `finish_reason` and `tool_calls` whether
// they are there.
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

/// Interprets one event, appending the generated text it carries (content and reasoning,
/// in that order per choice) to `text`. Nothing is appended unless it is a chunk.
pub fn interpret(event: EventRef<'_>, text: &mut String) -> Result<StreamItem, ChunkError> {
    interpret_with(event, text, JsonPath::Fast)
}

/// [`interpret`] with the JSON reader chosen.
pub fn interpret_with(
    event: EventRef<'_>,
    text: &mut String,
    path: JsonPath,
) -> Result<StreamItem, ChunkError> {
    ChunkReader::new(path).interpret(event, text)
}

/// Interprets the events of one stream, in order, remembering the layout of the last chunk.
///
/// A stream's chunks mostly differ only in their one text string (same id, model, shape):
/// a chunk that is the remembered one with another valid string in the same place has, by
/// the JSON grammar, the same meaning but for that text, and is read without a parse.
#[derive(Debug, Default)]
pub struct ChunkReader {
    /// The JSON reader.
    path: JsonPath,
    /// The last chunk the scanner read whole that had exactly one text string.
    layout: Option<Layout>,
}

/// A chunk with its one text string cut out.
#[derive(Debug)]
struct Layout {
    /// The data before the string's opening quote.
    prefix: String,
    /// The data after the string's closing quote.
    suffix: String,
    /// The chunk's meaning, but for the text's part in `has_output`.
    chunk: Chunk,
    /// Whether the chunk has output without its text (tool calls).
    tool_calls: bool,
}

impl ChunkReader {
    /// A reader using `path` for the JSON.
    pub fn new(path: JsonPath) -> Self {
        Self { path, layout: None }
    }

    /// [`interpret`], for the next event of the stream.
    pub fn interpret(
        &mut self,
        event: EventRef<'_>,
        text: &mut String,
    ) -> Result<StreamItem, ChunkError> {
        let data = event.data.trim();
        if event.event == "error" {
            return Ok(StreamItem::Error(data.to_string()));
        }
        if data == "[DONE]" {
            return Ok(StreamItem::Done);
        }

        if self.path == JsonPath::Serde {
            return interpret_serde(data, text);
        }
        if let Some(chunk) = self.like_the_last(data, text) {
            return Ok(StreamItem::Chunk(chunk));
        }
        match scan::scan(data) {
            Some(scanned) => {
                self.remember(data, &scanned);
                Ok(StreamItem::Chunk(chunk_of_scanned(scanned, text)))
            }
            None => interpret_serde(data, text),
        }
    }

    /// The chunk when `data` is the remembered layout with another string in its place.
    fn like_the_last(&self, data: &str, text: &mut String) -> Option<Chunk> {
        let layout = self.layout.as_ref()?;
        let end = data.len().checked_sub(layout.suffix.len())?;
        if end < layout.prefix.len()
            || !data.starts_with(&layout.prefix)
            || !data.ends_with(&layout.suffix)
        {
            return None;
        }

        let piece = scan::whole_string(data.get(layout.prefix.len()..end)?)?;
        text.push_str(&piece);
        Some(Chunk {
            has_output: layout.tool_calls || !piece.is_empty(),
            ..layout.chunk
        })
    }

    fn remember(&mut self, data: &str, scanned: &scan::Scanned<'_>) {
        let Some((start, end)) = scanned.text_span.filter(|_| scanned.text_count == 1) else {
            return;
        };
        let layout = self.layout.get_or_insert_with(|| Layout {
            prefix: String::new(),
            suffix: String::new(),
            chunk: Chunk::default(),
            tool_calls: false,
        });
        layout.prefix.clear();
        layout
            .prefix
            .push_str(data.get(..start).unwrap_or_default());
        layout.suffix.clear();
        layout.suffix.push_str(data.get(end..).unwrap_or_default());
        layout.chunk = Chunk {
            has_output: false,
            usage: scanned.usage,
            finished: scanned.finished,
        };
        layout.tool_calls = scanned.tool_calls;
    }
}

fn chunk_of_scanned(scanned: scan::Scanned<'_>, text: &mut String) -> Chunk {
    let mut has_output = scanned.tool_calls;
    for piece in scanned.texts.iter().flatten().filter(|t| !t.is_empty()) {
        has_output = true;
        text.push_str(piece);
    }
    Chunk {
        has_output,
        usage: scanned.usage,
        finished: scanned.finished,
    }
}

fn interpret_serde(data: &str, text: &mut String) -> Result<StreamItem, ChunkError> {
    let raw: RawChunk = serde_json::from_str(data).map_err(|err| ChunkError {
        reason: err.to_string(),
        excerpt: data.chars().take(EXCERPT_CHARS).collect(),
    })?;
    if let Some(error) = raw.error.as_ref().filter(|e| !e.is_null()) {
        return Ok(StreamItem::Error(error_text(error)));
    }
    Ok(StreamItem::Chunk(chunk_of(raw, text)))
}

fn chunk_of(raw: RawChunk<'_>, text: &mut String) -> Chunk {
    let mut chunk = Chunk {
        usage: raw.usage,
        ..Chunk::default()
    };
    for choice in raw.choices {
        chunk.finished |= choice.finish_reason.is_some();
        if let Some(piece) = choice.text.filter(|t| !t.is_empty()) {
            chunk.has_output = true;
            text.push_str(&piece);
        }
        if let Some(delta) = choice.delta {
            add_delta(&mut chunk, delta, text);
        }
    }
    chunk
}

fn add_delta(chunk: &mut Chunk, delta: RawDelta<'_>, text: &mut String) {
    let pieces = [delta.content, delta.reasoning_content, delta.reasoning];
    for piece in pieces.into_iter().flatten().filter(|t| !t.is_empty()) {
        chunk.has_output = true;
        text.push_str(&piece);
    }
    if delta.tool_calls.is_some_and(|calls| !calls.is_empty()) {
        chunk.has_output = true;
    }
}

/// The server's message when a whole response body (not an event stream) is a JSON error
/// object: `{"error": ...}` or `{"object": "error", "message": ...}`.
pub fn error_body(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    if let Some(error) = value.get("error").filter(|e| !e.is_null()) {
        return Some(error_text(error));
    }
    let message = value.get("message").and_then(|m| m.as_str());
    match value.get("object").and_then(|o| o.as_str()) {
        Some("error") => message.map(str::to_string),
        _ => None,
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
    use proptest::prelude::*;

    /// The item and text of `data` by `path`.
    fn read(data: &str, path: JsonPath) -> (Result<StreamItem, ChunkError>, String) {
        let event = EventRef {
            event: "message",
            data,
        };
        let mut text = String::new();
        let item = interpret_with(event, &mut text, path);
        (item, text)
    }

    /// The item and text of `data`, after checking that both paths agree on them.
    fn item_text(data: &str) -> (StreamItem, String) {
        let (fast, text) = read(data, JsonPath::Fast);
        let (serde, serde_text) = read(data, JsonPath::Serde);
        assert_eq!((&fast, &text), (&serde, &serde_text), "{data}");
        (fast.unwrap_or_else(|e| panic!("{e}")), text)
    }

    fn item(data: &str) -> StreamItem {
        item_text(data).0
    }

    fn output(data: &str) -> bool {
        match item(data) {
            StreamItem::Chunk(chunk) => chunk.has_output,
            other => panic!("not a chunk: {other:?}"),
        }
    }

    /// Whether the scanner itself answered (no fallback to serde).
    fn scanned(data: &str) -> bool {
        scan::scan(data).is_some()
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
        let (StreamItem::Chunk(chunk), text) = item_text(data) else {
            panic!("not a chunk")
        };
        assert_eq!(text, "a\"bé");
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
        assert!(scanned(data), "the scanner reads usage chunks itself");
    }

    #[test]
    fn errors_in_band_and_as_events() {
        let in_band = item(r#"{"error":{"message":"overloaded","code":503}}"#);
        assert_eq!(in_band, StreamItem::Error("overloaded".into()));
        let event = EventRef {
            event: "error",
            data: "boom",
        };
        let mut text = String::new();
        let item_of_event = interpret(event, &mut text);
        assert_eq!(item_of_event, Ok(StreamItem::Error("boom".into())));
        assert_eq!(item(" [DONE] "), StreamItem::Done);
        assert!(text.is_empty());
    }

    #[test]
    fn non_json_is_an_error_with_an_excerpt() {
        let (result, text) = read("<html>", JsonPath::Fast);
        let err = result.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("<html>"), "{err}");
        assert!(text.is_empty());
    }

    #[test]
    fn common_shapes_take_the_fast_path() {
        let vllm = r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1733000000,"model":"Qwen/Qwen3-8B","choices":[{"index":0,"delta":{"content":" tok"},"logprobs":null,"finish_reason":null}]}"#;
        let llama = r#"{"choices":[{"finish_reason":null,"index":0,"delta":{"content":"x"}}],"created":1,"id":"c","model":"m","system_fingerprint":"b1-abc","object":"chat.completion.chunk","timings":{"prompt_n":1,"predicted_per_second":12.5e0}}"#;
        let tgi = r#"{"object":"chat.completion.chunk","id":"","created":1,"model":"m","system_fingerprint":"3.0.0-native","choices":[{"index":0,"delta":{"role":"assistant","content":"\n\t\u00e9\ud83d\ude00"},"logprobs":null,"finish_reason":null}],"usage":null}"#;
        for data in [vllm, llama, tgi] {
            assert!(scanned(data), "{data}");
            assert!(output(data), "{data}");
        }
        assert_eq!(item_text(tgi).1, "\n\té😀");
    }

    #[test]
    fn unusual_shapes_fall_back_and_agree_with_serde() {
        let deep = format!(r#"{{"a":{}1{}}}"#, "[".repeat(40), "]".repeat(40));
        let cases = [
            // Several choices, a non-null error, duplicates, escaped keys.
            r#"{"choices":[{"delta":{"content":"a"}},{"delta":{"content":"b"}}]}"#,
            r#"{"error":"boom","choices":[]}"#,
            r#"{"choices":[],"choices":[]}"#,
            r#"{"choices":[{"delta":{"content":"a","content":"b"}}]}"#,
            r#"{"ch\u006fices":[{"delta":{"content":"a"}}]}"#,
            // Lone surrogates, raw control characters, bad escapes, bad numbers.
            r#"{"choices":[{"delta":{"content":"\ud83d"}}]}"#,
            r#"{"choices":[{"delta":{"content":"\ude00x"}}]}"#,
            "{\"choices\":[{\"delta\":{\"content\":\"a\u{1}\"}}]}",
            r#"{"choices":[{"delta":{"content":"\x"}}]}"#,
            r#"{"x":01,"choices":[]}"#,
            r#"{"x":1.,"choices":[]}"#,
            r#"{"usage":{"prompt_tokens":4294967296}}"#,
            r#"{"usage":{"prompt_tokens":-1}}"#,
            r#"{"usage":{"prompt_tokens":1.0}}"#,
            r#"{"usage":[1,2,null]}"#,
            // Wrong types, trailing commas and characters, a top-level array.
            r#"{"choices":null}"#,
            r#"{"choices":[{"delta":{"content":5}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":{}}}]}"#,
            r#"{"choices":[1,],"x":1}"#,
            r#"{"choices":[]} x"#,
            r#"[]"#,
            deep.as_str(),
        ];
        for data in cases {
            assert!(!scanned(data), "{data}");
            let (fast, serde) = (read(data, JsonPath::Fast), read(data, JsonPath::Serde));
            assert_eq!(fast, serde, "{data}");
        }
    }

    #[test]
    fn a_json_error_body_gives_the_servers_message() {
        let nested = br#"{"error":{"message":"prompt too long","code":400}}"#;
        assert_eq!(error_body(nested).as_deref(), Some("prompt too long"));
        let vllm = br#"{"object":"error","message":"bad model","type":"NotFoundError","code":404}"#;
        assert_eq!(error_body(vllm).as_deref(), Some("bad model"));
        assert_eq!(error_body(br#"{"choices":[]}"#), None);
        assert_eq!(error_body(b"<html>"), None);
    }

    /// A JSON string literal of `text`, escaping some characters that need no escape.
    fn json_string(text: &str, escape_all: bool) -> String {
        let mut out = String::from("\"");
        for ch in text.chars() {
            match ch {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                c if (c as u32) < 0x20 || (escape_all && !c.is_ascii_alphanumeric()) => {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        out.push_str(&format!("\\u{unit:04x}"));
                    }
                }
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }

    /// A value where the chunk has a string: a string, null, or (rarely) something else.
    fn text_value() -> impl Strategy<Value = String> {
        prop_oneof![
            6 => ("[a-z é日😀\"\\\\\n\u{0}\u{1f}]{0,6}", any::<bool>())
                .prop_map(|(t, all)| json_string(&t, all)),
            2 => Just("null".to_string()),
            1 => prop_oneof![Just("5"), Just("[]"), Just("\"\\ud800\""), Just("\"\\x\"")]
                .prop_map(str::to_string),
        ]
    }

    fn count_value() -> impl Strategy<Value = String> {
        prop_oneof![
            5 => (0u64..5_000_000_000).prop_map(|n| n.to_string()),
            1 => prop_oneof![Just("null"), Just("-1"), Just("1.0"), Just("01"), Just("2e3")]
                .prop_map(str::to_string),
        ]
    }

    /// Any small JSON value, for members nobody reads.
    fn other_value() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("null".to_string()),
            Just("true".to_string()),
            "-?(0|[1-9][0-9]{0,3})(\\.[0-9]{1,2})?([eE][+-]?[0-9])?",
            "[a-z\\\\\"/bn]{0,5}".prop_map(|t| json_string(&t, false)),
        ];
        leaf.prop_recursive(3, 12, 3, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..3)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                proptest::collection::vec(("[a-z]{1,3}", inner), 0..3).prop_map(|v| {
                    let members: Vec<String> =
                        v.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                    format!("{{{}}}", members.join(","))
                }),
            ]
        })
    }

    /// An object of `members` in a shuffled order, with optional whitespace.
    fn object(members: Vec<(String, String)>, spaced: bool) -> String {
        let sep = if spaced { ", " } else { "," };
        let colon = if spaced { ": " } else { ":" };
        let members: Vec<String> = members
            .into_iter()
            .map(|(k, v)| format!("\"{k}\"{colon}{v}"))
            .collect();
        format!("{{{}}}", members.join(sep))
    }

    /// Some of `optional` members (each kept or not by `keep`), then shuffled by `order`.
    fn pick(
        optional: Vec<(&str, String)>,
        keep: &[bool],
        order: &[usize],
    ) -> Vec<(String, String)> {
        let mut members: Vec<(String, String)> = optional
            .into_iter()
            .zip(keep.iter().chain(std::iter::repeat(&true)))
            .filter(|(_, keep)| **keep)
            .map(|((k, v), _)| (k.to_string(), v))
            .collect();
        for (i, &j) in order.iter().enumerate() {
            let len = members.len();
            if len > 1 {
                members.swap(i % len, j % len);
            }
        }
        members
    }

    prop_compose! {
        fn delta()(
            content in text_value(), reasoning in text_value(), reasoning_content in text_value(),
            tools in prop_oneof![
                Just("[]"),
                Just(r#"[{"index":0,"function":{"arguments":"{}"}}]"#),
                Just("null"),
            ],
            role in other_value(),
            keep in proptest::collection::vec(any::<bool>(), 5),
            order in proptest::collection::vec(0usize..5, 0..4),
            spaced in any::<bool>(),
        ) -> String {
            let members = vec![
                ("content", content), ("reasoning", reasoning),
                ("reasoning_content", reasoning_content), ("tool_calls", tools.to_string()),
                ("role", role),
            ];
            object(pick(members, &keep, &order), spaced)
        }
    }

    prop_compose! {
        fn choice()(
            delta in prop_oneof![4 => delta(), 1 => Just("null".to_string())],
            text in text_value(),
            finish in prop_oneof![Just("null"), Just("\"stop\""), Just("\"length\""), Just("0")],
            logprobs in other_value(),
            keep in proptest::collection::vec(any::<bool>(), 5),
            order in proptest::collection::vec(0usize..5, 0..4),
            spaced in any::<bool>(),
        ) -> String {
            let members = vec![
                ("delta", delta), ("text", text), ("finish_reason", finish.to_string()),
                ("index", "0".to_string()), ("logprobs", logprobs),
            ];
            object(pick(members, &keep, &order), spaced)
        }
    }

    prop_compose! {
        fn usage()(
            prompt in count_value(), completion in count_value(), cached in count_value(),
            details_null in any::<bool>(),
            keep in proptest::collection::vec(any::<bool>(), 4),
            order in proptest::collection::vec(0usize..4, 0..3),
        ) -> String {
            let details = match details_null {
                true => "null".to_string(),
                false => object(vec![("cached_tokens".into(), cached)], false),
            };
            let members = vec![
                ("prompt_tokens", prompt), ("completion_tokens", completion),
                ("prompt_tokens_details", details), ("total_tokens", "12".to_string()),
            ];
            object(pick(members, &keep, &order), false)
        }
    }

    prop_compose! {
        /// A chunk as vLLM, SGLang, llama.cpp or TGI write them, with usage and error
        /// variants, sometimes slightly broken.
        fn chunk_json()(
            choices in proptest::collection::vec(choice(), 0..3),
            usage in prop_oneof![Just("null".to_string()), usage()],
            error in prop_oneof![4 => Just("null".to_string()), 1 => other_value()],
            extra in other_value(),
            keep in proptest::collection::vec(any::<bool>(), 6),
            order in proptest::collection::vec(0usize..6, 0..5),
            spaced in any::<bool>(),
            damage in prop_oneof![
                8 => Just(None),
                1 => (0usize..400, "[ ,:\\]}\"x0]").prop_map(Some),
            ],
        ) -> String {
            let members = vec![
                ("id", "\"chatcmpl-1\"".to_string()),
                ("object", "\"chat.completion.chunk\"".to_string()),
                ("choices", format!("[{}]", choices.join(","))),
                ("usage", usage), ("error", error), ("model", extra),
            ];
            let mut json = object(pick(members, &keep, &order), spaced);
            if let Some((at, with)) = damage {
                let mut at = at % (json.len() + 1);
                while !json.is_char_boundary(at) {
                    at -= 1;
                }
                json.insert_str(at, &with);
            }
            json
        }
    }

    /// Items and texts of `datas` read in order by one reader on `path`.
    fn read_all(datas: &[String], path: JsonPath) -> Vec<(Result<StreamItem, ChunkError>, String)> {
        let mut reader = ChunkReader::new(path);
        let read_one = |data: &String| {
            let mut text = String::new();
            let event = EventRef {
                event: "message",
                data,
            };
            (reader.interpret(event, &mut text), text)
        };
        datas.iter().map(read_one).collect()
    }

    #[test]
    fn a_chunk_like_the_last_is_read_from_its_string_alone() {
        let chunk = |content: &str| {
            format!(
                r#"{{"id":"c","choices":[{{"index":0,"delta":{{"content":{content}}},"finish_reason":null}}]}}"#
            )
        };
        let datas: Vec<String> = [
            r#""a""#,
            r#""b\u00e9""#,
            r#""""#,
            "null",
            r#""a","content":"b""#,
            r#""\ud800""#,
            "5",
            r#""x" "#,
            r#""c""#,
        ]
        .iter()
        .map(|c| chunk(c))
        .collect();
        let fast = read_all(&datas, JsonPath::Fast);
        assert_eq!(fast, read_all(&datas, JsonPath::Serde));
        let texts: Vec<&str> = fast.iter().map(|(_, text)| text.as_str()).collect();
        assert_eq!(texts, ["a", "bé", "", "", "", "", "", "x", "c"]);
        assert!(fast[4].0.is_err(), "a repeated key is still an error");
    }

    prop_compose! {
        /// A stream of chunks sharing a layout, with valid and invalid values in its place.
        fn same_layout_stream()(
            template in chunk_json(),
            middles in proptest::collection::vec(prop_oneof![
                4 => text_value(),
                1 => Just(r#""a","content":"b""#.to_string()),
                1 => Just(r#""a"}}],"usage":{"prompt_tokens":1}, "x":{"y":["#.to_string()),
                1 => other_value(),
            ], 1..6),
        ) -> Vec<String> {
            // Put the middles where the template's first text string is, if it has one.
            let mut reader = ChunkReader::default();
            let mut text = String::new();
            let event = EventRef { event: "message", data: &template };
            let _ = reader.interpret(event, &mut text);
            let mut stream = vec![template.clone()];
            if let Some(layout) = &reader.layout {
                for middle in middles {
                    stream.push(format!("{}{middle}{}", layout.prefix, layout.suffix));
                }
            }
            stream
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn fast_path_agrees_with_serde(data in chunk_json()) {
            prop_assert_eq!(read(&data, JsonPath::Fast), read(&data, JsonPath::Serde), "{}", data);
        }

        #[test]
        fn chunks_like_the_last_agree_with_serde(stream in same_layout_stream()) {
            prop_assert_eq!(read_all(&stream, JsonPath::Fast), read_all(&stream, JsonPath::Serde));
        }
    }
}
