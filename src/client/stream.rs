//! The timing of one streamed response, fed with the body's reads as they arrive: SSE
//! events are interpreted, output-bearing chunks timed, usage kept, and the stream's end
//! classified into an [`Outcome`]. No HTTP types: tests feed recorded bytes directly.
//!
//! Invariant: the result depends only on the bytes and the instant each read arrived, never
//! on how the bytes were split into reads (reads at the same instant give the same result).

use tokio::time::Instant;

use super::chunk::{self, StreamItem, Usage};
use super::sse::{SseEvent, SseReader};
use crate::prompt::Tokenizer;
use crate::replay::{Outcome, TokenSource};

/// Bytes of a response kept to quote in an error message when it is not an event stream.
const EXCERPT_BYTES: usize = 200;

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
    events: Vec<SseEvent>,
    /// Arrival of each output-bearing chunk.
    chunk_times: Vec<Instant>,
    /// Generated text, for counting tokens when the server sends no usage.
    text: String,
    usage: Option<Usage>,
    /// `[DONE]` was seen.
    done: bool,
    /// A choice reported a finish reason.
    finished: bool,
    /// Any event was dispatched.
    any_event: bool,
    /// The first bytes of the body, for error messages.
    head: Vec<u8>,
    failure: Option<(Outcome, String)>,
    /// Told of new output chunks.
    hook: Option<OutputHook>,
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
            events: Vec::new(),
            chunk_times: Vec::new(),
            text: String::new(),
            usage: None,
            done: false,
            finished: false,
            any_event: false,
            head: Vec::new(),
            failure: None,
            hook: None,
        }
    }

    /// The same timer, telling `hook` of output chunks as they arrive.
    pub fn with_hook(self, hook: Option<OutputHook>) -> Self {
        Self { hook, ..self }
    }

    /// Whether an output-bearing chunk has arrived.
    pub fn has_output(&self) -> bool {
        !self.chunk_times.is_empty()
    }

    /// Consumes one read that arrived at `at`.
    pub fn on_bytes(&mut self, bytes: &[u8], at: Instant) -> Flow {
        if self.head.len() < EXCERPT_BYTES {
            let room = EXCERPT_BYTES - self.head.len();
            self.head.extend_from_slice(&bytes[..bytes.len().min(room)]);
        }
        if let Err(err) = self.reader.feed(bytes, &mut self.events) {
            return self.fail(Outcome::Protocol, err.to_string());
        }

        let events = std::mem::take(&mut self.events);
        let before = self.chunk_times.len();
        let mut flow = Flow::Continue;
        for event in &events {
            flow = self.on_event(event, at);
            if flow == Flow::Stop {
                break;
            }
        }
        self.events = events;
        self.events.clear();
        if let Some(hook) = self
            .hook
            .as_ref()
            .filter(|_| self.chunk_times.len() > before)
        {
            (hook.0)(before, self.chunk_times.len());
        }
        flow
    }

    fn on_event(&mut self, event: &SseEvent, at: Instant) -> Flow {
        self.any_event = true;
        match chunk::interpret(event) {
            Err(err) => self.fail(Outcome::Protocol, err.to_string()),
            Ok(StreamItem::Error(text)) => self.fail(Outcome::InBand, text),
            Ok(StreamItem::Done) => {
                self.done = true;
                Flow::Stop
            }
            Ok(StreamItem::Chunk(chunk)) => {
                if chunk.has_output {
                    self.chunk_times.push(at);
                    self.text.push_str(&chunk.text);
                }
                self.finished |= chunk.finished;
                self.usage = chunk.usage.or(self.usage);
                Flow::Continue
            }
        }
    }

    fn fail(&mut self, outcome: Outcome, error: String) -> Flow {
        self.failure.get_or_insert((outcome, error));
        Flow::Stop
    }

    /// Records a failure that ended the read from outside (timeout, transport error).
    pub fn set_failure(&mut self, outcome: Outcome, error: String) {
        self.fail(outcome, error);
    }

    /// Classifies the end of the stream: the body ended or reading stopped.
    pub fn finish(mut self) -> StreamResult {
        let (outcome, error) = match self.failure.take() {
            Some((outcome, error)) => (outcome, Some(error)),
            None => self.classify_end(),
        };
        StreamResult {
            outcome,
            error,
            chunk_times: self.chunk_times,
            usage: self.usage,
            text: self.text,
        }
    }

    fn classify_end(&self) -> (Outcome, Option<String>) {
        if !self.any_event && !self.head.is_empty() {
            let excerpt = String::from_utf8_lossy(&self.head).into_owned();
            return (
                Outcome::Protocol,
                Some(format!("response is not an event stream: {excerpt:?}")),
            );
        }
        let clean_end = self.done || self.finished || self.usage.is_some();
        if !clean_end || self.reader.pending_bytes() > 0 {
            let pending = self.reader.pending_bytes();
            let text = format!("stream ended before [DONE] ({pending} bytes of an event pending)");
            return (Outcome::StreamCut, Some(text));
        }
        if self.chunk_times.is_empty() {
            return (
                Outcome::NoOutput,
                Some("stream carried no output".to_string()),
            );
        }
        (Outcome::Ok, None)
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
