//! The one dispatch loop: walks the plan in order, waits for each entry's absolute deadline
//! (never a relative sleep), takes a concurrency slot when capped, and starts the request on
//! the response runtime. Session children wait on their parent in their own task, so a
//! slow parent never holds back unrelated requests. Closed-loop runs are the same loop with
//! every offset zero and a cap: each freed slot lets the next entry go.
//!
//! Every plan entry yields exactly one [`RequestRecord`] on the sink: measured, cancelled
//! (in flight when the grace period ran out) or skipped (never sent). Prompts are built
//! ahead of the loop on a blocking thread, at most `lookahead` entries ahead; with
//! `--sessions-live` a child whose parent succeeded is built again once the parent's output
//! is known, carrying it.

use std::any::Any;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::pacer::Pacer;
use super::prompts::BuilderPrompts;
use super::{Outcome, RequestRecord};
use crate::client::{Client, Exchange, OutputHook, PromptBody, Tag};
use crate::prompt::Tokenizer;
use crate::schedule::{Plan, PlanEntry, WaitKind};
use crate::trace::TraceRecord;

/// Sends one request and reads its stream (the HTTP client, or a fake in tests).
pub trait Transport: Send + Sync + 'static {
    /// A request ready to send, made on the prompt thread ahead of its deadline.
    type Request: Send + 'static;

    /// Prepares the request for `prompt` asking for `max_tokens` tokens.
    fn prepare(&self, prompt: PromptBody, max_tokens: u32) -> Self::Request;

    /// Sends `request`, reading until the end of the stream or `cancel`.
    fn exchange(
        &self,
        request: Self::Request,
        tag: Tag,
        cancel: CancellationToken,
    ) -> impl Future<Output = Exchange> + Send;

    /// Opens `count` idle connections before the run starts (nothing by default).
    fn open_connections(&self, _count: usize) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// Keeps `count` idle connections open until `stop` (returns at once by default).
    fn keep_connections(
        &self,
        _count: usize,
        _stop: CancellationToken,
    ) -> impl Future<Output = ()> + Send + 'static {
        async {}
    }
}

impl Transport for Client {
    type Request = bytes::Bytes;

    fn prepare(&self, prompt: PromptBody, max_tokens: u32) -> bytes::Bytes {
        self.encode_body(&prompt, max_tokens)
    }

    async fn exchange(
        &self,
        request: bytes::Bytes,
        tag: Tag,
        cancel: CancellationToken,
    ) -> Exchange {
        self.stream_encoded(request, tag, &cancel).await
    }

    async fn open_connections(&self, count: usize) {
        Client::open_connections(self, count).await;
    }

    fn keep_connections(
        &self,
        count: usize,
        stop: CancellationToken,
    ) -> impl Future<Output = ()> + Send + 'static {
        // The counts are logged and written into run.json when the run has ended
        // (`cli::replay`), after every request.
        Client::keep_connections(self, count, stop)
    }
}

/// Builds the prompt of one record (the prompt synthesiser, or a stub in tests).
pub trait PromptSource: Send + Sync + 'static {
    /// The prompt for `record`, or why it cannot be built.
    fn prompt(&self, record: &TraceRecord) -> Result<PromptBody, String>;
}

/// Counters the progress display reads while the run goes on.
#[derive(Debug, Default)]
pub struct Live {
    /// Entries the loop has passed (sent, queued for a slot, waiting on a parent or skipped).
    pub dispatched: AtomicUsize,
    /// Requests handed to the connection.
    pub sent: AtomicUsize,
    /// Requests finished (any outcome, skipped ones included).
    pub done: AtomicUsize,
    /// Sent and not yet finished.
    pub in_flight: AtomicUsize,
    /// Due but waiting for a concurrency slot.
    pub queued: AtomicUsize,
    /// Requests that received a first token.
    pub first_tokens: AtomicUsize,
    /// Output chunks after the first.
    pub decode_tokens: AtomicUsize,
}

/// How to dispatch.
#[derive(Clone)]
pub struct DispatchOptions {
    /// Cap on requests in flight; `None` for no cap.
    pub max_concurrency: Option<usize>,
    /// How many prompts may be built ahead of the loop.
    pub lookahead: usize,
    /// How long in-flight requests may finish after a stop before they are cancelled.
    pub grace: Duration,
    /// Delay from the call to the first deadline, for the first prompts to be built.
    pub lead_in: Duration,
    /// How deadlines are waited for.
    pub pacer: Pacer,
    /// Counts output tokens when the server sends no usage.
    pub tokenizer: Option<Arc<dyn Tokenizer>>,
    /// `--sessions-live`: a child's prompt carries its parent's generated text.
    pub sessions_live: bool,
    /// Idle connections kept open ahead of the sends; `None` for [`spare_connections`].
    pub warm_connections: Option<usize>,
}

/// The window whose busiest stretch of the plan sets how many connections are kept idle.
const WARM_WINDOW: Duration = Duration::from_millis(250);

/// Most connections kept idle (by default, and the largest `--warm-connections`).
pub const MAX_WARM_CONNECTIONS: usize = 1024;

/// Longest wait for the connections opened before the start.
const OPEN_AHEAD_LIMIT: Duration = Duration::from_secs(5);

/// Fewest connections kept idle by default.
const MIN_WARM_CONNECTIONS: usize = 4;

/// How many idle connections to keep open by default: the most requests the plan sends
/// within any 250 ms, within 4–1,024, and no more than the concurrency cap.
pub fn spare_connections(plan: &Plan, max_concurrency: Option<usize>) -> usize {
    let mut offsets: Vec<Duration> = plan
        .entries
        .iter()
        .filter(|e| !is_think(e))
        .map(|e| e.offset)
        .collect();
    offsets.sort_unstable();
    let mut busiest = 0;
    let mut first = 0;
    for (last, offset) in offsets.iter().enumerate() {
        while *offset - offsets[first] > WARM_WINDOW {
            first += 1;
        }
        busiest = busiest.max(last + 1 - first);
    }
    let spare = busiest.clamp(MIN_WARM_CONNECTIONS, MAX_WARM_CONNECTIONS);
    max_concurrency.map_or(spare, |cap| spare.min(cap.max(1)))
}

/// What the loop ended with.
#[derive(Debug, Clone, Copy)]
pub struct DispatchEnd {
    /// The run start: `*_s` fields of the records count from here.
    pub start: Instant,
    /// Whether dispatch was stopped before the plan was done.
    pub stopped: bool,
}

/// How a parent ended, for its children.
#[derive(Debug, Clone)]
struct ParentDone {
    /// Send offset from the run start.
    sent: Duration,
    /// End offset from the run start.
    end: Duration,
    /// Whether it succeeded.
    ok: bool,
    /// Its generated text, kept only under `--sessions-live` for a success with output.
    text: Option<Arc<str>>,
}

type ParentSlot = watch::Sender<Option<ParentDone>>;

/// What every request task shares.
struct Shared<T, P> {
    plan: Arc<Plan>,
    records: Arc<[TraceRecord]>,
    prompts: Arc<P>,
    transport: Arc<T>,
    sink: mpsc::UnboundedSender<RequestRecord>,
    live: Arc<Live>,
    start: Instant,
    permits: Option<Arc<Semaphore>>,
    /// Per plan entry: the channel its children wait on (`None` without children).
    parents: Vec<Option<ParentSlot>>,
    /// Stop dispatching (Ctrl-C): nothing more is sent.
    stop: CancellationToken,
    /// Cancel requests in flight (after the grace period).
    cancel: CancellationToken,
    tokenizer: Option<Arc<dyn Tokenizer>>,
    /// `--sessions-live`: keep each parent's text and build its children with it.
    sessions_live: bool,
    /// `--sessions-live`: children built with their parent's text, and without it.
    live_built: [AtomicUsize; 2],
    /// The loop shares one thread with the requests ([`Pacer::Shared`]): after starting a
    /// request it waits until the request's task has run once, so that each request of a
    /// burst is handed to its connection (and written) before the next one is built, with
    /// no socket polling in between.
    hand_over: bool,
}

/// When and how a request is sent, decided before it is.
struct Admission {
    /// Effective scheduled offset (after any session wait).
    scheduled: Duration,
    session_wait: Option<Duration>,
    parent_failed: bool,
    /// Tokens of the parent's output in the prompt (`--sessions-live`).
    live_tokens: Option<u32>,
    /// Slot already held, with its queue wait.
    permit: Option<(OwnedSemaphorePermit, Duration)>,
    /// Told once the request's exchange has been polled for the first time (see
    /// [`Shared::hand_over`]).
    started: Option<oneshot::Sender<()>>,
}

/// What to dispatch: the plan, its records, and how to build and send each request.
pub struct DispatchInput<T, P> {
    /// The plan.
    pub plan: Arc<Plan>,
    /// The records the plan indexes.
    pub records: Arc<[TraceRecord]>,
    /// Builds each prompt.
    pub prompts: Arc<P>,
    /// Sends each request.
    pub transport: Arc<T>,
    /// How to dispatch.
    pub options: DispatchOptions,
}

/// Runs the plan to its end or until `stop` fires, then waits for requests in flight
/// (at most `options.grace` after a stop). Request tasks run on `runtime`; every record
/// goes to `sink` as its request ends.
pub async fn dispatch<T: Transport, P: PromptSource>(
    input: DispatchInput<T, P>,
    stop: CancellationToken,
    runtime: Handle,
    sink: mpsc::UnboundedSender<RequestRecord>,
    live: Arc<Live>,
) -> DispatchEnd {
    let mut prompt_rx = spawn_prompt_builder(&input, &stop, &runtime);
    warm_up(&mut prompt_rx, &input.plan, input.options.lookahead, &stop).await;
    let spare = input
        .options
        .warm_connections
        .unwrap_or_else(|| spare_connections(&input.plan, input.options.max_concurrency));
    let keeper = start_keeper(&input.transport, spare, &runtime, &stop).await;
    let DispatchInput {
        plan,
        records,
        prompts,
        transport,
        options,
    } = input;
    let shared = Arc::new(Shared {
        parents: parent_slots(&plan),
        permits: options
            .max_concurrency
            .map(|n| Arc::new(Semaphore::new(n.max(1)))),
        start: Instant::now() + options.lead_in,
        cancel: CancellationToken::new(),
        plan,
        records,
        prompts,
        transport,
        sink,
        live,
        stop,
        tokenizer: options.tokenizer.clone(),
        sessions_live: options.sessions_live,
        live_built: Default::default(),
        hand_over: options.pacer == Pacer::Shared,
    });
    let mut tasks = JoinSet::new();
    let handled = run_loop(&shared, prompt_rx, &options, &runtime, &mut tasks).await;
    keeper.cancel();

    skip_unhandled(&shared, &handled);
    finish_tasks(&shared, &mut tasks, options.grace).await;
    log_live_counts(&shared);
    // After the wait: a stop during the grace period (every request already sent) still
    // cancelled requests, so the run is partial.
    let stopped = shared.stop.is_cancelled();
    DispatchEnd {
        start: shared.start,
        stopped,
    }
}

/// Opens `spare` connections on the request runtime (their tasks live there), then keeps
/// them topped up until the returned token is cancelled. Nothing with `spare` 0. The
/// opening is given up at `stop` and after [`OPEN_AHEAD_LIMIT`] (the keeper goes on
/// opening once the run has started).
async fn start_keeper<T: Transport>(
    transport: &Arc<T>,
    spare: usize,
    runtime: &Handle,
    stop: &CancellationToken,
) -> CancellationToken {
    let keeper = CancellationToken::new();
    if spare == 0 {
        return keeper;
    }
    let opener = transport.clone();
    let mut opening = runtime.spawn(async move { opener.open_connections(spare).await });
    tokio::select! {
        _ = &mut opening => {}
        _ = stop.cancelled() => {
            opening.abort();
            return keeper;
        }
        _ = tokio::time::sleep(OPEN_AHEAD_LIMIT) => {
            opening.abort();
            tracing::info!(
                "opening {spare} connections ahead took over {} s: the run starts, they are \
                 opened while it goes on (--warm-connections sets how many)",
                OPEN_AHEAD_LIMIT.as_secs()
            );
        }
    }
    runtime.spawn(transport.keep_connections(spare, keeper.clone()));
    keeper
}

/// The loop proper. Returns which entries it (or a task it started) took charge of.
async fn run_loop<T: Transport, P: PromptSource>(
    shared: &Arc<Shared<T, P>>,
    mut prompts: PromptReceiver<T::Request>,
    options: &DispatchOptions,
    runtime: &Handle,
    tasks: &mut JoinSet<()>,
) -> Vec<bool> {
    let entries = &shared.plan.entries;
    let mut handled = vec![false; entries.len()];

    // `think` children are released by their parent, not by the clock: start them now.
    for (index, entry) in entries.iter().enumerate() {
        if is_think(entry) {
            handled[index] = true;
            tasks.spawn_on(run_child(shared.clone(), index, None), runtime);
        }
    }

    loop {
        let next = tokio::select! {
            biased;
            _ = shared.stop.cancelled() => None,
            next = prompts.recv() => next,
        };
        let Some((index, prompt)) = next else { break };
        let deadline = shared.start + entries[index].offset;
        tokio::select! {
            biased;
            _ = shared.stop.cancelled() => break,
            _ = options.pacer.wait_until(deadline) => {}
        }
        handled[index] = true;
        shared.live.dispatched.fetch_add(1, Ordering::Relaxed);
        if !launch(shared, index, prompt, runtime, tasks).await {
            break;
        }
        reap_finished(tasks);
    }
    handled
}

/// Frees the tasks that have finished. A `JoinSet` keeps each finished task's allocation
/// (sized for its whole request future) until it is joined: without this, memory grew
/// with every request of a long run (see docs/RELIABILITY.md, soak).
fn reap_finished(tasks: &mut JoinSet<()>) {
    while tasks.try_join_next().is_some() {}
}

/// Starts entry `index` whose deadline has come. Returns false when a stop interrupted it.
async fn launch<T: Transport, P: PromptSource>(
    shared: &Arc<Shared<T, P>>,
    index: usize,
    prompt: Result<T::Request, String>,
    runtime: &Handle,
    tasks: &mut JoinSet<()>,
) -> bool {
    let prompt = match prompt {
        Ok(prompt) => prompt,
        Err(error) => {
            shared.finish_unsent(index, format!("prompt: {error}"));
            return true;
        }
    };
    if shared.plan.entries[index].wait.is_some() {
        tasks.spawn_on(run_child(shared.clone(), index, Some(prompt)), runtime);
        return true;
    }

    // Roots take their slot in the loop, so a capped run never holds more than one
    // waiting prompt, and slots go out in plan order.
    let due = shared.start + shared.plan.entries[index].offset;
    let Some(permit) = shared.acquire(due).await else {
        shared.finish_unsent(index, "stopped before a slot was free".to_string());
        return false;
    };
    let (started, has_started) = match shared.hand_over {
        true => Some(oneshot::channel()).unzip(),
        false => (None, None),
    };
    let admission = Admission {
        scheduled: shared.plan.entries[index].offset,
        session_wait: None,
        parent_failed: false,
        live_tokens: None,
        permit,
        started,
    };
    tasks.spawn_on(send(shared.clone(), index, prompt, admission), runtime);
    if let Some(has_started) = has_started {
        // Resolves once the task has run (the task is queued on this very thread).
        let _ = has_started.await;
    }
    true
}

/// A session child: waits for its parent, then for its release time, then is sent.
async fn run_child<T: Transport, P: PromptSource>(
    shared: Arc<Shared<T, P>>,
    index: usize,
    prompt: Option<T::Request>,
) {
    let entry = &shared.plan.entries[index];
    let Some(wait) = entry.wait else { return };
    let Some(parent) = shared.wait_parent(wait.parent).await else {
        return shared.finish_unsent(index, "stopped before the parent finished".to_string());
    };

    let release = match parent.ok {
        true => wait.kind.release(entry.offset, parent.sent, parent.end),
        false => entry.offset,
    };
    let (prompt, live_tokens) = match (parent.text, prompt) {
        (Some(text), prompt) => shared.build_live_request(index, text, prompt).await,
        (None, Some(prompt)) => (Ok(prompt), None),
        (None, None) => (shared.build_request(index).await, None),
    };
    if shared.sessions_live {
        shared.live_built[usize::from(live_tokens.is_none())].fetch_add(1, Ordering::Relaxed);
    }
    let sleep = tokio::time::sleep_until(shared.start + release);
    tokio::select! {
        biased;
        _ = shared.stop.cancelled() => {
            return shared.finish_unsent(index, "stopped before release".to_string());
        }
        _ = sleep => {}
    }
    let prompt = match prompt {
        Ok(prompt) => prompt,
        Err(error) => return shared.finish_unsent(index, format!("prompt: {error}")),
    };

    let Some(permit) = shared.acquire(shared.start + release).await else {
        return shared.finish_unsent(index, "stopped before a slot was free".to_string());
    };
    let admission = Admission {
        scheduled: release,
        session_wait: Some(release.saturating_sub(entry.offset)),
        parent_failed: !parent.ok,
        live_tokens,
        permit,
        started: None,
    };
    send(shared.clone(), index, prompt, admission).await;
}

/// Sends one request and records it.
async fn send<T: Transport, P: PromptSource>(
    shared: Arc<Shared<T, P>>,
    index: usize,
    request: T::Request,
    admission: Admission,
) {
    let tag = Tag {
        request_id: Some(format!("tracebench-{index}")),
        on_output: Some(progress_hook(&shared.live)),
    };
    shared.live.sent.fetch_add(1, Ordering::Relaxed);
    shared.live.in_flight.fetch_add(1, Ordering::Relaxed);
    let cancel = shared.cancel.clone();
    let exchange = shared.transport.exchange(request, tag, cancel);
    let exchange = tell_after_first_poll(exchange, admission.started).await;
    shared.live.in_flight.fetch_sub(1, Ordering::Relaxed);
    let (permit, queue_wait) = admission.permit.unzip();
    drop(permit);

    let mut out = shared.measured(index, &exchange, admission.scheduled);
    out.queue_wait_ms = queue_wait.map(|w| w.as_secs_f64() * 1e3);
    out.session_wait_ms = admission.session_wait.map(|w| w.as_secs_f64() * 1e3);
    out.parent_failed = admission.parent_failed;
    out.live_tokens = admission.live_tokens;
    let text = shared.kept_text(index, &out, &exchange.result.text);
    shared.finish(index, out, Some((exchange.sent, exchange.end)), text);
}

impl<T: Transport, P: PromptSource> Shared<T, P> {
    /// A concurrency slot and the time from `due` until it was had; `Some(None)` without a
    /// cap, `None` when stopped while waiting.
    async fn acquire(&self, due: Instant) -> Option<Option<(OwnedSemaphorePermit, Duration)>> {
        let Some(permits) = &self.permits else {
            return Some(None);
        };
        if let Ok(permit) = permits.clone().try_acquire_owned() {
            return Some(Some((
                permit,
                Instant::now().saturating_duration_since(due),
            )));
        }
        self.live.queued.fetch_add(1, Ordering::Relaxed);
        let permit = tokio::select! {
            biased;
            _ = self.stop.cancelled() => None,
            permit = permits.clone().acquire_owned() => permit.ok(),
        };
        self.live.queued.fetch_sub(1, Ordering::Relaxed);
        Some(Some((
            permit?,
            Instant::now().saturating_duration_since(due),
        )))
    }

    async fn wait_parent(&self, parent: usize) -> Option<ParentDone> {
        let mut rx = self.parents[parent].as_ref()?.subscribe();
        tokio::select! {
            biased;
            _ = self.stop.cancelled() => None,
            done = rx.wait_for(Option::is_some) => done.ok().and_then(|d| d.clone()),
        }
    }

    async fn build_request(self: &Arc<Self>, index: usize) -> Result<T::Request, String> {
        let shared = self.clone();
        let built = tokio::task::spawn_blocking(move || {
            let record = &shared.records[shared.plan.entries[index].record];
            prepare(&*shared.prompts, &*shared.transport, record)
        });
        built
            .await
            .unwrap_or_else(|e| Err(format!("prompt task failed: {e}")))
    }

    /// Entry `index`'s prompt built with its parent's output `text` (`--sessions-live`),
    /// with the tokens of it that went in; the usual prompt (`prebuilt`, or built now)
    /// when no live prompt applies.
    async fn build_live_request(
        self: &Arc<Self>,
        index: usize,
        text: Arc<str>,
        prebuilt: Option<T::Request>,
    ) -> (Result<T::Request, String>, Option<u32>) {
        let shared = self.clone();
        let built = tokio::task::spawn_blocking(move || {
            let entry = &shared.plan.entries[index];
            let parent = entry
                .wait
                .map(|w| &shared.records[shared.plan.entries[w.parent].record]);
            let record = &shared.records[entry.record];
            let live = parent.and_then(|p| live_prompt(&*shared.prompts, record, p, &text));
            live.map(|live| {
                live.map(|(body, tokens)| {
                    let request = shared.transport.prepare(body, record.output_tokens);
                    (request, tokens)
                })
            })
        });
        let built = built
            .await
            .unwrap_or_else(|e| Some(Err(format!("prompt task failed: {e}"))));
        match (built, prebuilt) {
            (Some(Ok((request, tokens))), _) => (Ok(request), Some(tokens)),
            (Some(Err(error)), _) => (Err(error), None),
            (None, Some(request)) => (Ok(request), None),
            (None, None) => (self.build_request(index).await, None),
        }
    }

    /// The text a finished request leaves its children: under `--sessions-live`, for an
    /// entry with children that succeeded with output.
    fn kept_text(&self, index: usize, record: &RequestRecord, text: &str) -> Option<Arc<str>> {
        let keep = self.sessions_live
            && self.parents[index].is_some()
            && record.outcome == Outcome::Ok
            && !text.is_empty();
        keep.then(|| Arc::from(text))
    }

    fn seconds(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.start).as_secs_f64()
    }

    /// The record of a request that was sent.
    fn measured(&self, index: usize, exchange: &Exchange, scheduled: Duration) -> RequestRecord {
        let mut out = self.unsent(index, Outcome::Ok, None);
        let result = &exchange.result;
        let counted = result.completion_tokens(self.tokenizer.as_deref());
        out.scheduled_s = scheduled.as_secs_f64();
        out.sent_s = Some(self.seconds(exchange.sent));
        out.first_token_s = result.chunk_times.first().map(|&t| self.seconds(t));
        out.end_s = Some(self.seconds(exchange.end));
        out.prompt_tokens = result.usage.and_then(|u| u.prompt_tokens);
        out.completion_tokens = counted.map(|c| c.0);
        out.completion_source = counted.map(|c| c.1);
        out.cached_tokens = result
            .usage
            .and_then(|u| u.prompt_tokens_details)
            .and_then(|d| d.cached_tokens);
        out.chunk_s = result
            .chunk_times
            .iter()
            .map(|&t| self.seconds(t))
            .collect();
        out.outcome = result.outcome;
        out.error = result.error.clone();
        out
    }

    /// A record with the entry's identity and nothing measured.
    fn unsent(&self, index: usize, outcome: Outcome, error: Option<String>) -> RequestRecord {
        let entry = &self.plan.entries[index];
        let record = &self.records[entry.record];
        RequestRecord {
            index,
            line: record.line,
            scheduled_s: entry.offset.as_secs_f64(),
            sent_s: None,
            first_token_s: None,
            end_s: None,
            queue_wait_ms: None,
            session_wait_ms: None,
            input_tokens: record.input_tokens,
            output_tokens: record.output_tokens,
            prompt_tokens: None,
            completion_tokens: None,
            completion_source: None,
            cached_tokens: None,
            chunk_s: Vec::new(),
            outcome,
            error,
            clamped: record.clamped,
            parent_failed: false,
            live_tokens: None,
        }
    }

    /// Records an entry that was never sent.
    fn finish_unsent(&self, index: usize, error: String) {
        self.finish(
            index,
            self.unsent(index, Outcome::Skipped, Some(error)),
            None,
            None,
        );
    }

    /// Hands the record to the sink and releases the entry's children, leaving them `text`.
    fn finish(
        &self,
        index: usize,
        record: RequestRecord,
        times: Option<(Instant, Instant)>,
        text: Option<Arc<str>>,
    ) {
        if let Some(slot) = &self.parents[index] {
            let now = Instant::now();
            let (sent, end) = times.unwrap_or((now, now));
            slot.send_replace(Some(ParentDone {
                sent: sent.saturating_duration_since(self.start),
                end: end.saturating_duration_since(self.start),
                ok: record.outcome == Outcome::Ok,
                text,
            }));
        }
        self.live.done.fetch_add(1, Ordering::Relaxed);
        // The receiver only goes away when the whole run is torn down.
        let _ = self.sink.send(record);
    }
}

/// `future`, telling `started` right after its first poll.
async fn tell_after_first_poll<F: Future>(
    future: F,
    mut started: Option<oneshot::Sender<()>>,
) -> F::Output {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|cx| {
        let poll = future.as_mut().poll(cx);
        if let Some(started) = started.take() {
            let _ = started.send(());
        }
        poll
    })
    .await
}

/// Counts first tokens and decode tokens into `live` as chunks arrive.
fn progress_hook(live: &Arc<Live>) -> OutputHook {
    let live = live.clone();
    OutputHook(Arc::new(move |before, after| {
        let decode = match before {
            0 => {
                live.first_tokens.fetch_add(1, Ordering::Relaxed);
                after - 1
            }
            _ => after - before,
        };
        live.decode_tokens.fetch_add(decode, Ordering::Relaxed);
    }))
}

fn is_think(entry: &PlanEntry) -> bool {
    matches!(entry.wait.map(|w| w.kind), Some(WaitKind::Think { .. }))
}

fn parent_slots(plan: &Plan) -> Vec<Option<ParentSlot>> {
    let mut slots: Vec<Option<ParentSlot>> = plan.entries.iter().map(|_| None).collect();
    for wait in plan.entries.iter().filter_map(|e| e.wait) {
        slots[wait.parent].get_or_insert_with(|| watch::channel(None).0);
    }
    slots
}

/// A session child's prompt carrying `parent_text`, and how many tokens of it went in;
/// `None` when `prompts` cannot build one (only the prompt synthesiser can) or none applies.
///
/// TODO: this belongs in a `PromptSource` method overridden by `BuilderPrompts`
/// (src/replay/prompts.rs, not this module's to edit); until then the source is recognised
/// by its type.
fn live_prompt<P: PromptSource>(
    prompts: &P,
    record: &TraceRecord,
    parent: &TraceRecord,
    parent_text: &str,
) -> Option<Result<(PromptBody, u32), String>> {
    let source = (prompts as &dyn Any).downcast_ref::<BuilderPrompts>()?;
    let built = source
        .builder
        .build_live(record, parent, parent_text, source.overhead_tokens);
    let live = match built {
        Ok(live) => live?,
        Err(error) => return Some(Err(error.to_string())),
    };
    let body = match live.prompt.token_ids {
        Some(ids) => PromptBody::TokenIds(ids),
        None => PromptBody::Text(live.prompt.text),
    };
    Some(Ok((body, live.live_tokens)))
}

/// Requests in plan order, as the prompt thread hands them over.
type PromptReceiver<R> = mpsc::Receiver<(usize, Result<R, String>)>;

/// The prompt of `record` made into a request ready to send.
fn prepare<T: Transport, P: PromptSource>(
    prompts: &P,
    transport: &T,
    record: &TraceRecord,
) -> Result<T::Request, String> {
    let prompt = prompts.prompt(record)?;
    Ok(transport.prepare(prompt, record.output_tokens))
}

/// How often the warm-up checks how many prompts are ready.
const WARM_UP_POLL: Duration = Duration::from_millis(5);

/// Builds prompts in plan order (think children excepted) on a blocking thread, at most
/// `options.lookahead` ahead of the loop.
fn spawn_prompt_builder<T: Transport, P: PromptSource>(
    input: &DispatchInput<T, P>,
    stop: &CancellationToken,
    runtime: &Handle,
) -> PromptReceiver<T::Request> {
    let (tx, rx) = mpsc::channel(input.options.lookahead.max(1));
    let (plan, records, prompts, transport, stop) = (
        input.plan.clone(),
        input.records.clone(),
        input.prompts.clone(),
        input.transport.clone(),
        stop.clone(),
    );
    runtime.spawn_blocking(move || {
        for (index, entry) in plan.entries.iter().enumerate() {
            if is_think(entry) || stop.is_cancelled() {
                continue;
            }
            let request = prepare(&*prompts, &*transport, &records[entry.record]);
            if tx.blocking_send((index, request)).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits until the look-ahead buffer is full (or every prompt is built) before the clock
/// starts, so that the first deadlines do not wait on prompt synthesis.
async fn warm_up<R>(
    rx: &mut PromptReceiver<R>,
    plan: &Plan,
    lookahead: usize,
    stop: &CancellationToken,
) {
    let wanted = plan
        .entries
        .iter()
        .filter(|e| !is_think(e))
        .count()
        .min(lookahead.max(1));
    let started = Instant::now();
    while rx.len() < wanted && !rx.is_closed() && !stop.is_cancelled() {
        tokio::time::sleep(WARM_UP_POLL).await;
    }
    tracing::debug!(
        "{} prompts built ahead in {:?}",
        rx.len(),
        started.elapsed()
    );
}

/// Says how many children carried their parent's output under `--sessions-live`.
fn log_live_counts<T: Transport, P: PromptSource>(shared: &Shared<T, P>) {
    if !shared.sessions_live {
        return;
    }
    let [live, plain] = &shared.live_built;
    tracing::info!(
        "--sessions-live: {} follow-up turns carried their parent's output, {} were built \
         without it (failed parent, no output, not a blocks prompt or no exact fit)",
        live.load(Ordering::Relaxed),
        plain.load(Ordering::Relaxed)
    );
}

/// Records every entry nobody took charge of as skipped.
fn skip_unhandled<T: Transport, P: PromptSource>(shared: &Shared<T, P>, handled: &[bool]) {
    for (index, _) in handled.iter().enumerate().filter(|(_, h)| !**h) {
        shared.finish_unsent(index, "not sent: the run was stopped".to_string());
    }
}

/// Waits for every task; after a stop, cancels what is still in flight after `grace`.
async fn finish_tasks<T: Transport, P: PromptSource>(
    shared: &Shared<T, P>,
    tasks: &mut JoinSet<()>,
    grace: Duration,
) {
    let all_done = async { while tasks.join_next().await.is_some() {} };
    tokio::pin!(all_done);
    tokio::select! {
        _ = &mut all_done => return,
        _ = shared.stop.cancelled() => {}
    }
    tokio::select! {
        finished = tokio::time::timeout(grace, &mut all_done) => {
            if finished.is_ok() {
                return;
            }
            tracing::warn!("grace period of {grace:?} over: cancelling requests still in flight");
        }
        _ = super::run::grace_cut().cancelled() => {}
    }
    shared.cancel.cancel();
    all_done.await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::StreamResult;
    use crate::schedule::{Arrivals, PlanOptions, SessionMode};
    use crate::trace::SessionLink;

    /// Answers after `max_tokens` ms with one token per ms; `max_tokens` 0 fails.
    struct SlowServer;

    impl Transport for SlowServer {
        /// `max_tokens`.
        type Request = u32;

        fn prepare(&self, _prompt: PromptBody, max_tokens: u32) -> u32 {
            max_tokens
        }

        async fn exchange(&self, max_tokens: u32, _: Tag, cancel: CancellationToken) -> Exchange {
            let sent = Instant::now();
            let took = Duration::from_millis(u64::from(max_tokens));
            let outcome = tokio::select! {
                _ = cancel.cancelled() => Outcome::Cancelled,
                _ = tokio::time::sleep(took) => match max_tokens {
                    0 => Outcome::Http(500),
                    _ => Outcome::Ok,
                },
            };
            let end = Instant::now();
            Exchange {
                sent,
                end,
                result: StreamResult {
                    outcome,
                    error: None,
                    chunk_times: vec![end],
                    usage: None,
                    text: String::new(),
                },
            }
        }
    }

    struct Words;

    impl PromptSource for Words {
        fn prompt(&self, record: &TraceRecord) -> Result<PromptBody, String> {
            Ok(PromptBody::Text("w ".repeat(record.input_tokens as usize)))
        }
    }

    /// A record arriving at `arrival_ms` that takes `took_ms` to answer.
    fn rec(arrival_ms: u64, took_ms: u32, chat: i64, parent: i64) -> TraceRecord {
        let mut r = TraceRecord::new(Duration::from_millis(arrival_ms), 4, took_ms, 1);
        r.session = Some(SessionLink {
            chat_id: chat,
            parent_chat_id: parent,
            turn: None,
        });
        r
    }

    fn options(max_concurrency: Option<usize>) -> DispatchOptions {
        DispatchOptions {
            max_concurrency,
            lookahead: 4,
            grace: Duration::from_secs(1),
            lead_in: Duration::ZERO,
            pacer: Pacer::Tokio,
            tokenizer: None,
            sessions_live: false,
            warm_connections: None,
        }
    }

    async fn run_with(
        records: Vec<TraceRecord>,
        sessions: SessionMode,
        options: DispatchOptions,
        stop: CancellationToken,
    ) -> Vec<RequestRecord> {
        let plan_options = PlanOptions {
            arrivals: Arrivals::Trace,
            sessions,
            max_think: Duration::from_secs(1),
            seed: 0,
        };
        let plan = crate::schedule::plan(&records, &plan_options);
        let plan = plan.unwrap_or_else(|e| panic!("{e}"));
        let (sink, mut rx) = mpsc::unbounded_channel();
        let input = DispatchInput {
            plan: Arc::new(plan),
            records: records.into(),
            prompts: Arc::new(Words),
            transport: Arc::new(SlowServer),
            options,
        };
        let live = Arc::new(Live::default());
        dispatch(input, stop, Handle::current(), sink, live).await;
        let mut out = Vec::new();
        while let Ok(record) = rx.try_recv() {
            out.push(record);
        }
        out.sort_by_key(|r| r.index);
        out
    }

    #[test]
    fn spare_connections_follow_the_busiest_quarter_second() {
        let plan_of = |arrivals_ms: &[u64]| {
            let records: Vec<TraceRecord> = arrivals_ms
                .iter()
                .enumerate()
                .map(|(i, ms)| rec(*ms, 1, i as i64, -1))
                .collect();
            let plan_options = PlanOptions {
                arrivals: Arrivals::Trace,
                sessions: SessionMode::Ignore,
                max_think: Duration::from_secs(1),
                seed: 0,
            };
            crate::schedule::plan(&records, &plan_options).unwrap_or_else(|e| panic!("{e}"))
        };
        // 0, 100, 200 and 250 ms fall in one 250 ms window; 600 and 700 in another.
        let plan = plan_of(&[0, 100, 200, 250, 600, 700, 2000]);
        assert_eq!(spare_connections(&plan, None), 4);
        let mut burst = vec![0; 30];
        burst.extend([100, 400, 900]);
        let plan = plan_of(&burst);
        assert_eq!(spare_connections(&plan, None), 31);
        assert_eq!(spare_connections(&plan, Some(8)), 8);
        // Few requests still get the floor, a flood the ceiling.
        assert_eq!(spare_connections(&plan_of(&[0, 1000]), None), 4);
        let flood = plan_of(&vec![5; 3000]);
        assert_eq!(spare_connections(&flood, None), 1024);
    }

    fn sent_ms(records: &[RequestRecord]) -> Vec<Option<u64>> {
        let ms = |s: f64| (s * 1e3).round() as u64;
        records.iter().map(|r| r.sent_s.map(ms)).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn sends_on_absolute_deadlines() {
        let records = vec![
            rec(0, 50, 1, -1),
            rec(100, 5000, 2, -1),
            rec(1250, 50, 3, -1),
        ];
        let out = run_with(
            records,
            SessionMode::Ignore,
            options(None),
            Default::default(),
        )
        .await;
        assert_eq!(sent_ms(&out), vec![Some(0), Some(100), Some(1250)]);
        assert!(
            out.iter()
                .all(|r| r.outcome == Outcome::Ok && r.queue_wait_ms.is_none())
        );
        assert_eq!(out[1].end_s.map(|s| (s * 1e3).round()), Some(5100.0));
    }

    #[tokio::test(start_paused = true)]
    async fn capped_requests_queue_in_order_and_record_their_wait() {
        let records = vec![
            rec(0, 1000, 1, -1),
            rec(0, 1000, 2, -1),
            rec(500, 1000, 3, -1),
        ];
        let out = run_with(
            records,
            SessionMode::Ignore,
            options(Some(1)),
            Default::default(),
        );
        let out = out.await;
        assert_eq!(sent_ms(&out), vec![Some(0), Some(1000), Some(2000)]);
        let waits: Vec<_> = out
            .iter()
            .map(|r| r.queue_wait_ms.map(f64::round))
            .collect();
        assert_eq!(waits, vec![Some(0.0), Some(1000.0), Some(1500.0)]);
    }

    #[tokio::test(start_paused = true)]
    async fn gate_delays_each_turn_until_its_parent_finished() {
        // Turns at 0, 100 and 200 ms; each answer takes 1 s.
        let chain = || {
            vec![
                rec(0, 1000, 1, -1),
                rec(100, 1000, 2, 1),
                rec(200, 1000, 3, 2),
            ]
        };
        let gated = run_with(
            chain(),
            SessionMode::Gate,
            options(None),
            Default::default(),
        );
        let gated = gated.await;
        assert_eq!(sent_ms(&gated), vec![Some(0), Some(1000), Some(2000)]);
        let waits: Vec<_> = gated
            .iter()
            .map(|r| r.session_wait_ms.map(f64::round))
            .collect();
        assert_eq!(waits, vec![None, Some(900.0), Some(1800.0)]);
        // The scheduled instant is the release, so the send lag is the client's own.
        assert_eq!(gated[2].scheduled_s, 2.0);

        let ignored = run_with(
            chain(),
            SessionMode::Ignore,
            options(None),
            Default::default(),
        );
        assert_eq!(sent_ms(&ignored.await), vec![Some(0), Some(100), Some(200)]);
    }

    #[tokio::test(start_paused = true)]
    async fn two_children_of_one_parent_and_a_missing_parent() {
        let records = vec![
            rec(0, 300, 1, -1),
            rec(100, 10, 2, 1),
            rec(150, 10, 3, 1),
            rec(200, 10, 5, 4),
        ];
        let out = run_with(
            records,
            SessionMode::Gate,
            options(None),
            Default::default(),
        )
        .await;
        assert_eq!(
            sent_ms(&out),
            vec![Some(0), Some(300), Some(300), Some(200)]
        );
        assert_eq!(out[3].session_wait_ms, None);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_parent_still_sends_its_child_marked() {
        let records = vec![rec(0, 0, 1, -1), rec(100, 10, 2, 1)];
        let out = run_with(
            records,
            SessionMode::Gate,
            options(None),
            Default::default(),
        )
        .await;
        assert_eq!(out[0].outcome, Outcome::Http(500));
        assert_eq!(sent_ms(&out), vec![Some(0), Some(100)]);
        assert!(out[1].parent_failed && !out[0].parent_failed);
    }

    #[tokio::test(start_paused = true)]
    async fn think_sends_after_the_parent_plus_capped_think_time() {
        // Parent takes 200 ms; the trace gap is 500 ms → 300 ms think; max_think is 1 s.
        let records = vec![rec(0, 200, 1, -1), rec(500, 10, 2, 1), rec(5000, 10, 3, 2)];
        let out = run_with(
            records,
            SessionMode::Think,
            options(None),
            Default::default(),
        )
        .await;
        // Turn 3: gap 4.5 s minus 10 ms response, capped at 1 s after turn 2 ended (510 ms).
        assert_eq!(sent_ms(&out), vec![Some(0), Some(500), Some(1510)]);
    }

    #[tokio::test(start_paused = true)]
    async fn stop_skips_unsent_and_cancels_in_flight_after_grace() {
        let records: Vec<_> = (0..4)
            .map(|i| rec(i * 1000, 10_000, i as i64, -1))
            .collect();
        let stop = CancellationToken::new();
        let stopper = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            stopper.cancel();
        });
        let out = run_with(records, SessionMode::Ignore, options(None), stop).await;
        let outcomes: Vec<_> = out.iter().map(|r| r.outcome).collect();
        use Outcome::{Cancelled, Skipped};
        assert_eq!(outcomes, vec![Cancelled, Cancelled, Skipped, Skipped]);
        // Cancelled at the stop (1.5 s, less the warm-up) plus the 1 s grace.
        let end_ms = out[0].end_s.map(|s| s * 1e3).unwrap_or_default();
        assert!((2480.0..=2500.0).contains(&end_ms), "{end_ms}");
    }
}
