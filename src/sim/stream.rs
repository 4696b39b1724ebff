//! One response in flight: where its tokens come from (a fixed schedule or the engine) and
//! how they become bytes, streamed as SSE or collected into one JSON body, with the
//! request's fault applied at the right token. A stream is a state machine polled by hyper:
//! queued frames go out first; when none are queued it waits for the next token.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::chunk_log::{ChunkKind, ChunkLog, ChunkRecord, unix_ns_now};
use super::engine::TokenEvent;
use super::faults::FaultKind;
use super::metrics::SimMetrics;
use super::sglang;
use super::sse::{self, ChunkHeader, Endpoint, Usage};

/// Where a request's tokens come from.
#[derive(Debug)]
pub(crate) enum TokenSource {
    /// Token n (from 0) is due at `first_at + n * itl`, whatever the load.
    Fixed {
        /// When the first token is due.
        first_at: Instant,
        /// Time between tokens.
        itl: Duration,
        /// Tokens produced so far.
        produced: u32,
    },
    /// The engine task sends each token when its step ends.
    Engine {
        /// The engine's channel for this request.
        rx: mpsc::UnboundedReceiver<TokenEvent>,
        /// Prompt tokens the engine served from its prefix cache.
        cached_tokens: u32,
    },
}

impl TokenSource {
    /// Waits for the next token; false if the engine gave up on the request.
    async fn next(&mut self) -> bool {
        match self {
            TokenSource::Fixed {
                first_at,
                itl,
                produced,
            } => {
                let due = *first_at + *itl * *produced;
                if due > Instant::now() {
                    tokio::time::sleep_until(due).await;
                }
                *produced += 1;
                true
            }
            TokenSource::Engine { rx, cached_tokens } => match rx.recv().await {
                Some(event) => {
                    *cached_tokens = event.cached_tokens;
                    true
                }
                None => false,
            },
        }
    }

    /// Whether the next token is available without waiting.
    fn ready_now(&self) -> bool {
        match self {
            TokenSource::Fixed {
                first_at,
                itl,
                produced,
            } => *first_at + *itl * *produced <= Instant::now(),
            TokenSource::Engine { rx, .. } => !rx.is_empty(),
        }
    }

    fn cached_tokens(&self) -> u32 {
        match self {
            TokenSource::Fixed { .. } => 0,
            TokenSource::Engine { cached_tokens, .. } => *cached_tokens,
        }
    }

    fn is_fixed(&self) -> bool {
        matches!(self, TokenSource::Fixed { .. })
    }
}

/// Counts a fixed-mode request as running while it exists (the engine counts its own).
#[derive(Debug)]
pub(crate) struct RunningGuard(Arc<SimMetrics>);

impl RunningGuard {
    pub(crate) fn new(metrics: Arc<SimMetrics>) -> Self {
        metrics.running.fetch_add(1, Ordering::Relaxed);
        RunningGuard(metrics)
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Everything about one accepted generation request except its token source.
#[derive(Debug)]
pub(crate) struct Job {
    /// Id, model, endpoint.
    pub(crate) header: ChunkHeader,
    /// The response id, shared by chunk records.
    pub(crate) request_id: Arc<str>,
    /// The client's `x-request-id`.
    pub(crate) client_request_id: Option<Arc<str>>,
    /// Prompt tokens; `None` without a tokenizer.
    pub(crate) prompt_tokens: Option<u32>,
    /// Tokens to generate.
    pub(crate) max_tokens: u32,
    /// Whether a usage chunk ends the stream.
    pub(crate) include_usage: bool,
    /// The fault picked for this request.
    pub(crate) fault: Option<FaultKind>,
    /// The text of every token.
    pub(crate) word: Arc<str>,
    /// The token id of `word` (SGLang's `output_ids`; 0 without a tokenizer).
    pub(crate) word_id: u32,
    /// Shared counters.
    pub(crate) metrics: Arc<SimMetrics>,
    /// Where chunk times go.
    pub(crate) log: Option<Arc<ChunkLog>>,
    /// Keeps the fixed-mode running gauge up while the response lives (held, never read).
    pub(crate) _running: Option<RunningGuard>,
}

impl Job {
    /// Records `kind` at `token_index` now, if chunk logging is on.
    pub(crate) fn log(&self, kind: ChunkKind, token_index: u32) {
        if self.log.is_some() {
            self.log_at(kind, token_index, unix_ns_now());
        }
    }

    /// Records `kind` at `token_index` with a time taken earlier (Unix ns).
    pub(crate) fn log_at(&self, kind: ChunkKind, token_index: u32, unix_ns: u64) {
        if let Some(log) = &self.log {
            log.push(ChunkRecord {
                request_id: self.request_id.clone(),
                client_request_id: self.client_request_id.clone(),
                kind,
                token_index,
                unix_ns,
            });
        }
    }

    fn usage(&self, completion_tokens: u32, cached_tokens: u32) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens,
            cached_tokens,
        }
    }
}

/// One thing a stream does next.
#[derive(Debug)]
enum Frame {
    /// Write these bytes; log them as `kind` at token index `index`.
    Data(ChunkKind, u32, Bytes),
    /// Write these bytes without logging (faults).
    Raw(Bytes),
    /// Write nothing for this long.
    Sleep(Duration),
    /// Abort the connection (the cut fault).
    Abort,
}

/// At most this many frames go out in one write (bounds a write when far behind).
const MAX_COALESCED_FRAMES: usize = 64;

/// Pause before a cut, so hyper flushes the chunks already written instead of dropping
/// them with the connection (it flushes whenever the body is not ready).
const CUT_FLUSH_PAUSE: Duration = Duration::from_millis(20);

/// A streaming response being written.
#[derive(Debug)]
pub(crate) struct SseStream {
    job: Job,
    source: TokenSource,
    sent: u32,
    finished: bool,
    pending: VecDeque<Frame>,
    token_chunk: Bytes,
    last_chunk: Bytes,
}

impl SseStream {
    /// A stream for `job` fed by `source`.
    pub(crate) fn new(job: Job, source: TokenSource) -> Self {
        // `/generate` renders each event when it is due (see `token_bytes`).
        let (token_chunk, last_chunk) = match job.header.endpoint {
            Endpoint::Generate => (Bytes::new(), Bytes::new()),
            Endpoint::Chat | Endpoint::Completion => (
                job.header.token_event(&job.word, false),
                job.header.token_event(&job.word, true),
            ),
        };
        SseStream {
            job,
            source,
            sent: 0,
            finished: false,
            pending: VecDeque::new(),
            token_chunk,
            last_chunk,
        }
    }

    /// The HTTP response: `text/event-stream`, body polled frame by frame.
    pub(crate) fn into_response(self) -> Response {
        let frames = futures::stream::unfold(self, |mut s| async move {
            let item = s.next_bytes().await?;
            Some((item, s))
        });
        let headers = [
            ("content-type", "text/event-stream"),
            ("cache-control", "no-cache"),
        ];
        (headers, Body::from_stream(frames)).into_response()
    }

    /// The next bytes to write; `None` at the end, an error to abort the connection.
    async fn next_bytes(&mut self) -> Option<io::Result<Bytes>> {
        loop {
            match self.pending.pop_front() {
                Some(Frame::Sleep(d)) => tokio::time::sleep(d).await,
                Some(Frame::Abort) => {
                    return Some(Err(io::Error::other("simulated fault: stream cut")));
                }
                Some(frame) => return Some(self.write_ready(frame).await),
                None if self.finished => return None,
                None => {
                    if let Err(err) = self.advance().await {
                        return Some(Err(err));
                    }
                }
            }
        }
    }

    /// `first` and every frame after it that is due already, as one write: when the
    /// runtime runs late, the overdue tokens go out together instead of one wake-up and one
    /// write each (each is still its own SSE event, logged at this moment).
    async fn write_ready(&mut self, first: Frame) -> io::Result<Bytes> {
        let mut out = BytesMut::new();
        self.emit(first, &mut out);
        for _ in 0..MAX_COALESCED_FRAMES {
            match self.pending.front() {
                Some(Frame::Data(..) | Frame::Raw(..)) => {
                    if let Some(frame) = self.pending.pop_front() {
                        self.emit(frame, &mut out);
                    }
                }
                None if !self.finished && self.source.ready_now() => self.advance().await?,
                _ => break,
            }
        }
        Ok(out.freeze())
    }

    /// Appends a data frame (after a keep-alive comment under that fault) and logs it.
    fn emit(&self, frame: Frame, out: &mut BytesMut) {
        let bytes = match frame {
            Frame::Data(kind, index, bytes) => {
                self.job.log(kind, index);
                bytes
            }
            Frame::Raw(bytes) => bytes,
            Frame::Sleep(_) | Frame::Abort => return,
        };
        if self.job.fault == Some(FaultKind::KeepAlive) {
            out.extend_from_slice(sse::KEEP_ALIVE);
        }
        out.extend_from_slice(&bytes);
    }

    /// Applies the fault due after `sent` tokens, then queues the next token or the end.
    async fn advance(&mut self) -> io::Result<()> {
        self.apply_fault();
        if self.finished {
            return Ok(());
        }
        if self.sent == self.job.max_tokens {
            self.queue_end();
            return Ok(());
        }

        if !self.source.next().await {
            return Err(io::Error::other("the engine dropped the request"));
        }
        if self.sent == 0 {
            self.queue_first();
        }
        self.sent += 1;
        let last = self.sent == self.job.max_tokens;
        let bytes = self.token_bytes(last);
        self.pending
            .push_back(Frame::Data(ChunkKind::Token, self.sent, bytes));
        if self.source.is_fixed() {
            SimMetrics::add(&self.job.metrics.generation_tokens, 1);
        }
        Ok(())
    }

    /// The chunk of the token just counted in `sent`: pre-rendered for the OpenAI
    /// endpoints, rendered now for `/generate` (whose events carry all the text so far).
    fn token_bytes(&self, last: bool) -> Bytes {
        match self.job.header.endpoint {
            Endpoint::Generate => {
                sglang::token_event(&self.job, self.sent, self.source.cached_tokens(), last)
            }
            Endpoint::Chat | Endpoint::Completion if last => self.last_chunk.clone(),
            Endpoint::Chat | Endpoint::Completion => self.token_chunk.clone(),
        }
    }

    /// The role chunk (chat) and the first-content delay fault.
    fn queue_first(&mut self) {
        if self.job.header.endpoint == Endpoint::Chat {
            self.pending.push_back(Frame::Data(
                ChunkKind::Role,
                0,
                self.job.header.role_event(),
            ));
        }
        if let Some(FaultKind::FirstDelay { duration }) = self.job.fault {
            self.pending.push_back(Frame::Sleep(duration));
        }
    }

    /// The fault whose token count is `sent`, if any: queues its frames.
    fn apply_fault(&mut self) {
        let sent = self.sent;
        match self.job.fault {
            Some(FaultKind::Cut { after_tokens }) if after_tokens == sent => {
                self.pending.push_back(Frame::Sleep(CUT_FLUSH_PAUSE));
                self.pending.push_back(Frame::Abort);
                self.finished = true;
            }
            Some(FaultKind::ErrorEvent { after_tokens }) if after_tokens == sent => {
                self.pending.push_back(Frame::Raw(sse::error_event()));
                self.pending.push_back(Frame::Data(
                    ChunkKind::Done,
                    sent,
                    Bytes::from_static(sse::DONE),
                ));
                self.finished = true;
            }
            Some(FaultKind::Stall {
                duration,
                after_tokens,
            }) if after_tokens == sent => {
                self.pending.push_back(Frame::Sleep(duration));
            }
            Some(FaultKind::Malformed { after_tokens }) if after_tokens == sent => {
                self.pending
                    .push_back(Frame::Raw(Bytes::from_static(sse::MALFORMED)));
            }
            _ => {}
        }
    }

    /// The usage chunk (if asked for) and `[DONE]`.
    fn queue_end(&mut self) {
        if self.job.include_usage {
            let usage = self.job.usage(self.sent, self.source.cached_tokens());
            let bytes = self.job.header.usage_event(usage);
            self.pending
                .push_back(Frame::Data(ChunkKind::Usage, self.sent, bytes));
        }
        self.pending.push_back(Frame::Data(
            ChunkKind::Done,
            self.sent,
            Bytes::from_static(sse::DONE),
        ));
        if self.source.is_fixed() {
            SimMetrics::add(&self.job.metrics.requests_finished, 1);
        }
        self.finished = true;
    }
}

/// Generates every token, then answers with one JSON body; faults map to their
/// non-streaming form (stall and delays wait, a cut aborts the body, an error event becomes
/// a 500, a malformed chunk a truncated body).
pub(crate) async fn collect(job: Job, mut source: TokenSource) -> Response {
    for sent in 0..=job.max_tokens {
        match job.fault {
            Some(FaultKind::Cut { after_tokens }) if after_tokens == sent => return aborted_body(),
            Some(FaultKind::ErrorEvent { after_tokens }) if after_tokens == sent => {
                let body = sse::error_json(
                    500,
                    "InternalServerError",
                    "simulated fault: generation failed",
                );
                return (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(body)).into_response();
            }
            Some(FaultKind::Stall {
                duration,
                after_tokens,
            }) if after_tokens == sent => {
                tokio::time::sleep(duration).await;
            }
            Some(FaultKind::Malformed { after_tokens }) if after_tokens == sent => {
                return (
                    StatusCode::OK,
                    [("content-type", "application/json")],
                    "{\"id\": \"cmpl-",
                )
                    .into_response();
            }
            Some(FaultKind::FirstDelay { duration }) if sent == 1 => {
                tokio::time::sleep(duration).await
            }
            _ => {}
        }
        if sent < job.max_tokens && !source.next().await {
            return aborted_body();
        }
    }

    if source.is_fixed() {
        SimMetrics::add(&job.metrics.generation_tokens, u64::from(job.max_tokens));
        SimMetrics::add(&job.metrics.requests_finished, 1);
    }
    let body = match job.header.endpoint {
        Endpoint::Generate => sglang::full_body(&job, source.cached_tokens()),
        Endpoint::Chat | Endpoint::Completion => {
            let text = job.word.repeat(job.max_tokens as usize);
            let usage = job.usage(job.max_tokens, source.cached_tokens());
            job.header.full_body(&text, usage)
        }
    };
    job.log(ChunkKind::Done, job.max_tokens);
    axum::Json(body).into_response()
}

/// A 200 whose body fails at once, so the connection is aborted mid-response.
fn aborted_body() -> Response {
    let failing =
        futures::stream::once(async { Err::<Bytes, _>(io::Error::other("simulated fault: cut")) });
    (StatusCode::OK, Body::from_stream(failing)).into_response()
}
