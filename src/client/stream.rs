//! The timing of one streamed response, fed with the body's reads as they arrive: SSE
//! events are interpreted, output-bearing chunks timed, usage kept, and the stream's end
//! classified into an [`Outcome`]. No HTTP types: tests feed recorded bytes directly.
//!
//! Invariant: the result depends only on the bytes and the instant each read arrived, never
//! on how the bytes were split into reads (reads at the same instant give the same result).

use tokio::time::Instant;

use super::chunk::{self, ChunkReader, JsonPath, StreamItem, Usage};
use super::sse::{EventRef, SseReader};
use crate::prompt::Tokenizer;
use crate::replay::{Outcome, TokenSource};

/// Bytes of a response kept to quote in an error message when it is not an event stream.
const EXCERPT_BYTES: usize = 200;

/// Bytes of the body kept while no event has been read: enough for a JSON error object
/// sent instead of an event stream.
const HEAD_BYTES: usize = 8 * 1024;

/// Told how many output-bearing chunks a response has had, each time that number grows
/// (`before`, `after`): for live progress displays.
#[derive(Clone)]
pub struct OutputHook(pub std::sync::Arc<dyn Fn(usize, usize) + Send + Sync>);

impl std::fmt::Debug for OutputHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OutputHook")
    }
}

/// Whether to keep reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// More is expected.
    Continue,
    /// The stream has ended (`[DONE]`) or failed; stop reading.
    Stop,
}

/// The state of one response being read.
#[derive(Debug)]
pub struct StreamTimer {
    reader: SseReader,
    tally: Tally,
    /// The first bytes of the body (up to [`HEAD_BYTES`] while no event has been read), for
    /// error messages.
    head: Vec<u8>,
    /// Told of new output chunks.
    hook: Option<OutputHook>,
}

/// What the events of one response have said so far.
#[derive(Debug, Default)]
struct Tally {
    /// Arrival of each output-bearing chunk.
    chunk_times: Vec<Instant>,
    /// Generated text, for counting tokens when the server sends no usage.
    text: String,
    usage: Option<Usage>,
    /// `[DONE]` was seen.
    done: bool,
    /// A choice reported a finish reason.
    finished: bool,
    /// Any event was read.
    any_event: bool,
    failure: Option<(Outcome, String)>,
    /// An event of the current read ended the stream: the rest of the read is ignored.
    stopped: bool,
    /// The reader of the chunks (the fast one, but for equivalence tests).
    chunks: ChunkReader,
}

/// What one response did.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamResult {
    /// How it ended.
    pub outcome: Outcome,
    /// Why it failed; `None` for [`Outcome::Ok`].
    pub error: Option<String>,
    /// Arrival of each output-bearing chunk (the first is the first token).
    pub chunk_times: Vec<Instant>,
    /// The last usage object the server sent.
    pub usage: Option<Usage>,
    /// The generated text.
    pub text: String,
}

impl StreamTimer {
    /// A timer with the SSE event-size bound `max_event_bytes`.
    pub fn new(max_event_bytes: usize) -> Self {
        Self {
            reader: SseReader::new(max_event_bytes),
            tally: Tally::default(),
            head: Vec::new(),
            hook: None,
        }
    }

    /// The same timer, telling `hook` of output chunks as they arrive.
    pub fn with_hook(self, hook: Option<OutputHook>) -> Self {
        Self { hook, ..self }
    }

    /// The same timer, reading chunk JSON with `json`.
    pub fn with_json_path(mut self, json: JsonPath) -> Self {
        self.tally.chunks = ChunkReader::new(json);
        self
    }

    /// Whether an output-bearing chunk has arrived.
    pub fn has_output(&self) -> bool {
        !self.tally.chunk_times.is_empty()
    }

    /// Consumes one read that arrived at `at`. Events are read as the reader completes them:
    /// none is copied or kept.
    pub fn on_bytes(&mut self, bytes: &[u8], at: Instant) -> Flow {
        self.keep_head(bytes);
        let before = self.tally.chunk_times.len();

        let tally = &mut self.tally;
        tally.stopped = false;
        let read = self
            .reader
            .feed_each(bytes, |event| tally.on_event(event, at));
        if let Err(err) = read {
            tally.fail(Outcome::Protocol, err.to_string());
        }

        self.tell_hook(before);
        match self.tally.stopped {
            true => Flow::Stop,
            false => Flow::Continue,
        }
    }

    fn keep_head(&mut self, bytes: &[u8]) {
        let limit = match self.tally.any_event {
            true => EXCERPT_BYTES,
            false => HEAD_BYTES,
        };
        let room = limit.saturating_sub(self.head.len());
        self.head.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn tell_hook(&self, before: usize) {
        let after = self.tally.chunk_times.len();
        if let Some(hook) = self.hook.as_ref().filter(|_| after > before) {
            (hook.0)(before, after);
        }
    }

    /// Records a failure that ended the read from outside (timeout, transport error).
    pub fn set_failure(&mut self, outcome: Outcome, error: String) {
        self.tally.fail(outcome, error);
    }

    /// Classifies the end of the stream: the body ended or reading stopped.
    pub fn finish(mut self) -> StreamResult {
        let (outcome, error) = match self.tally.failure.take() {
            Some((outcome, error)) => (outcome, Some(error)),
            None => self.classify_end(),
        };
        StreamResult {
            outcome,
            error,
            chunk_times: self.tally.chunk_times,
            usage: self.tally.usage,
            text: self.tally.text,
        }
    }

    fn classify_end(&self) -> (Outcome, Option<String>) {
        let tally = &self.tally;
        if !tally.any_event && !self.head.is_empty() {
            return self.not_an_event_stream();
        }
        let clean_end = tally.done || tally.finished || tally.usage.is_some();
        let pending = self.reader.pending_bytes();
        if !clean_end || pending > 0 {
            let text = format!("stream ended before [DONE] ({pending} bytes of an event pending)");
            return (Outcome::StreamCut, Some(text));
        }
        if tally.chunk_times.is_empty() {
            return (
                Outcome::NoOutput,
                Some("stream carried no output".to_string()),
            );
        }
        (Outcome::Ok, None)
    }

    /// A body without events: the server's error when it is a JSON error object, else a
    /// protocol error quoting its start.
    fn not_an_event_stream(&self) -> (Outcome, Option<String>) {
        if let Some(message) = chunk::error_body(&self.head) {
            return (Outcome::InBand, Some(message));
        }
        let head = &self.head[..self.head.len().min(EXCERPT_BYTES)];
        let excerpt = String::from_utf8_lossy(head);
        (
            Outcome::Protocol,
            Some(format!("response is not an event stream: {excerpt:?}")),
        )
    }
}

impl Tally {
    fn on_event(&mut self, event: EventRef<'_>, at: Instant) {
        if self.stopped {
            return;
        }
        self.any_event = true;
        match self.chunks.interpret(event, &mut self.text) {
            Err(err) => self.fail(Outcome::Protocol, err.to_string()),
            Ok(StreamItem::Error(text)) => self.fail(Outcome::InBand, text),
            Ok(StreamItem::Done) => {
                self.done = true;
                self.stopped = true;
            }
            Ok(StreamItem::Chunk(chunk)) => {
                if chunk.has_output {
                    self.chunk_times.push(at);
                }
                self.finished |= chunk.finished;
                self.usage = chunk.usage.or(self.usage);
            }
        }
    }

    fn fail(&mut self, outcome: Outcome, error: String) {
        self.failure.get_or_insert((outcome, error));
        self.stopped = true;
    }
}

impl StreamResult {
    /// Output tokens: the server's usage when sent, else counted over the text with
    /// `tokenizer`; `None` when neither is available.
    pub fn completion_tokens(
        &self,
        tokenizer: Option<&dyn Tokenizer>,
    ) -> Option<(u32, TokenSource)> {
        if let Some(tokens) = self.usage.and_then(|u| u.completion_tokens) {
            return Some((tokens, TokenSource::Usage));
        }
        let tokenizer = tokenizer?;
        let count = u32::try_from(tokenizer.encode(&self.text).len()).unwrap_or(u32::MAX);
        Some((count, TokenSource::Tokenizer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(reads: &[&[u8]]) -> StreamResult {
        let mut timer = StreamTimer::new(1 << 20);
        let at = Instant::now();
        for read in reads {
            if timer.on_bytes(read, at) == Flow::Stop {
                break;
            }
        }
        timer.finish()
    }

    const ROLE: &[u8] = b"data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n";
    const TOKEN: &[u8] = b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n";
    const DONE: &[u8] = b"data: [DONE]\n\n";

    #[test]
    fn role_only_first_chunk_is_not_a_token() {
        let result = run(&[ROLE, b": keep-alive\n\n", TOKEN, TOKEN, DONE]);
        assert_eq!(result.outcome, Outcome::Ok);
        assert_eq!(result.chunk_times.len(), 2);
        assert_eq!(result.text, "hihi");
    }

    #[test]
    fn stream_without_done_or_finish_is_cut() {
        assert_eq!(run(&[ROLE, TOKEN]).outcome, Outcome::StreamCut);
        let finish = b"data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"length\"}]}\n\n";
        assert_eq!(run(&[TOKEN, finish]).outcome, Outcome::Ok);
    }

    #[test]
    fn done_only_is_no_output_and_html_is_protocol() {
        assert_eq!(run(&[DONE]).outcome, Outcome::NoOutput);
        let html = run(&[b"<html><body>hello</body></html>"]);
        assert_eq!(html.outcome, Outcome::Protocol);
        assert!(html.error.unwrap_or_default().contains("<html>"));
    }

    #[test]
    fn error_after_tokens_is_in_band_and_keeps_the_tokens() {
        let result = run(&[
            TOKEN,
            b"event: error\ndata: {\"message\":\"oom\"}\n\n",
            TOKEN,
        ]);
        assert_eq!(result.outcome, Outcome::InBand);
        assert_eq!(result.chunk_times.len(), 1);
    }

    #[test]
    fn a_json_error_body_instead_of_a_stream_is_in_band() {
        let body = br#"{"error":{"message":"prompt is too long","code":400}}"#;
        let result = run(&[&body[..20], &body[20..]]);
        assert_eq!(result.outcome, Outcome::InBand);
        assert_eq!(result.error.as_deref(), Some("prompt is too long"));
        let pretty = b"{\n  \"object\": \"error\",\n  \"message\": \"no such model\"\n}\n";
        let result = run(&[pretty]);
        assert_eq!(result.outcome, Outcome::InBand);
        assert_eq!(result.error.as_deref(), Some("no such model"));
        let other_json = run(&[br#"{"choices":[]}"#]);
        assert_eq!(other_json.outcome, Outcome::Protocol);
    }

    #[test]
    fn events_before_an_oversized_event_count_however_the_reads_fall() {
        let mut big = b"data: ".to_vec();
        big.resize(4096, b'x');
        let mut joined = TOKEN.to_vec();
        joined.extend_from_slice(&big);
        let at = Instant::now();
        let run_small = |reads: &[&[u8]]| {
            let mut timer = StreamTimer::new(1024);
            for read in reads {
                if timer.on_bytes(read, at) == Flow::Stop {
                    break;
                }
            }
            timer.finish()
        };
        let whole = run_small(&[joined.as_slice()]);
        assert_eq!(whole.outcome, Outcome::Protocol);
        assert_eq!(whole.chunk_times.len(), 1);
        assert_eq!(whole, run_small(&[TOKEN, big.as_slice()]));
    }

    /// One event as a server writes it: chunks of several servers' shapes with awkward
    /// text, usage, errors, comments and `[DONE]`.
    fn event_strategy() -> impl Strategy<Value = String> {
        let text = "[a-z é日😀\"\\\\\n\u{1}]{0,5}".prop_map(|t| {
            let json = serde_json::to_string(&t).unwrap_or_default();
            json.replace('é', "\\u00e9")
        });
        let chunk = (text, 0usize..7, any::<bool>()).prop_map(|(text, shape, finish)| {
            let finish = if finish { "\"stop\"" } else { "null" };
            let body = match shape {
                0 => format!(r#"{{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{{"index":0,"delta":{{"content":{text}}},"logprobs":null,"finish_reason":{finish}}}]}}"#),
                1 => format!(r#"{{"choices":[{{"index":0,"delta":{{"role":"assistant","reasoning_content":{text}}},"finish_reason":{finish}}}],"usage":null}}"#),
                2 => format!(r#"{{"choices":[{{"finish_reason":{finish},"index":0,"delta":{{"reasoning":{text}}}}}],"timings":{{"n":1.5}}}}"#),
                3 => format!(r#"{{"choices":[{{"index":0,"text":{text},"finish_reason":{finish}}}]}}"#),
                4 => format!(r#"{{"choices":[{{"delta":{{"content":{text}}}}},{{"delta":{{"content":"b"}}}}]}}"#),
                5 => format!(r#"{{"choices":[{{"delta":{{"tool_calls":[{{"index":0,"id":{text}}}]}}}}]}}"#),
                _ => r#"{ "choices" : [ ] , "usage" : { "prompt_tokens" : 9 , "completion_tokens" : 3 , "prompt_tokens_details" : { "cached_tokens" : 4 } } }"#.to_string(),
            };
            format!("data: {body}\n\n")
        });
        prop_oneof![
            20 => chunk,
            1 => Just("data: {\"error\":{\"message\":\"oom\",\"code\":500}}\n\n".to_string()),
            1 => Just("event: error\ndata: gone\n\n".to_string()),
            1 => Just("data: {bad json\n\n".to_string()),
            1 => Just(": ping\r\n\r\n".to_string()),
            1 => Just("data: [DONE]\n\n".to_string()),
        ]
    }

    fn timed(bytes: &[u8], cuts: &[usize], json: JsonPath, at: Instant) -> StreamResult {
        let mut timer = StreamTimer::new(1 << 20).with_json_path(json);
        let mut start = 0;
        for &cut in cuts.iter().chain(std::iter::once(&bytes.len())) {
            let cut = cut.clamp(start, bytes.len());
            if timer.on_bytes(&bytes[start..cut], at) == Flow::Stop {
                break;
            }
            start = cut;
        }
        timer.finish()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        #[test]
        fn fast_path_equals_serde_for_any_split(
            events in proptest::collection::vec(event_strategy(), 0..12),
            mut cuts in proptest::collection::vec(0usize..3000, 0..8),
        ) {
            let bytes = events.concat().into_bytes();
            cuts.sort_unstable();
            // Reads stop at `[DONE]`: the same instant for all, so only where a read ends
            // differs, and the reference reads up to each cut too.
            let at = Instant::now();
            let fast = timed(&bytes, &cuts, JsonPath::Fast, at);
            let serde = timed(&bytes, &cuts, JsonPath::Serde, at);
            prop_assert_eq!(&fast, &serde);
        }
    }

    #[test]
    fn usage_tokens_preferred_over_the_tokenizer() {
        let usage =
            b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":9}}\n\n";
        let result = run(&[TOKEN, usage, DONE]);
        assert_eq!(
            result.completion_tokens(None),
            Some((9, TokenSource::Usage))
        );
        assert_eq!(run(&[TOKEN, DONE]).completion_tokens(None), None);
    }
}
