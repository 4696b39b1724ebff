//! One replay from start to end, minus the command line: write `run.json`, start the
//! writer of `requests.jsonl`, the progress bars and the dispatch thread, wait for the plan
//! to finish or a stop, and hand back every record. Reports are the caller's.
//!
//! The dispatch loop runs on its own OS thread with its own single-threaded runtime. When
//! the process may run on one core only (the benchmark pins the client with `taskset`), the
//! requests and their streams run on that same runtime and the loop waits with the
//! non-blocking [`Pacer::Shared`]: a burst then leaves back to back from the thread that
//! waited for it. With more cores, requests run on a response runtime of one worker per core
//! (its CPU affinity, not the machine's core count: two workers pinned to one core paid
//! futex wake-ups and context switches between themselves), and the loop's precise pacer
//! may block its own thread. Records go back to the caller's runtime, which writes them.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::runtime::Runtime;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::output::{self, OutputError, RequestsWriter};
use super::progress::Progress;
use super::{
    DispatchEnd, DispatchInput, Live, Pacer, PromptSource, RequestRecord, Transport, dispatch,
};
use crate::report::RunInfo;

/// Everything one replay needs.
pub struct RunSetup<T, P> {
    /// What to dispatch.
    pub input: DispatchInput<T, P>,
    /// The output directory, already made and proven writable.
    pub dir: PathBuf,
    /// Written as `run.json` before the first request.
    pub run_info: RunInfo,
    /// Whether to draw progress bars.
    pub progress: bool,
}

/// What a replay measured.
#[derive(Debug)]
pub struct RunResult {
    /// Every plan entry's record, in plan order.
    pub records: Vec<RequestRecord>,
    /// The run was stopped before its plan was done.
    pub partial: bool,
    /// Writing `requests.jsonl` failed (the run was stopped then).
    pub write_error: Option<OutputError>,
}

/// Runs one replay; `stop` ends dispatch early (Ctrl-C).
pub async fn execute<T: Transport, P: PromptSource>(
    setup: RunSetup<T, P>,
    stop: CancellationToken,
) -> Result<RunResult, OutputError> {
    execute_on(setup, stop, None).await
}

/// [`execute`] with `client_threads` worker threads for requests and their streams
/// (default: [`default_client_threads`]).
pub async fn execute_on<T: Transport, P: PromptSource>(
    setup: RunSetup<T, P>,
    stop: CancellationToken,
    client_threads: Option<usize>,
) -> Result<RunResult, OutputError> {
    output::write_run_info(&setup.dir, &setup.run_info)?;
    let writer = RequestsWriter::create(&setup.dir)?;
    let (sink, records) = mpsc::unbounded_channel();
    let stop_on_error = stop.clone();
    let collector = tokio::spawn(output::collect(records, writer, move || {
        stop_on_error.cancel()
    }));

    let live = Arc::new(Live::default());
    let progress = setup.progress.then(|| {
        let records = &setup.input.records;
        let output_tokens = records.iter().map(|r| u64::from(r.output_tokens)).sum();
        Progress::start(live.clone(), records.len() as u64, output_tokens)
    });
    let threads = client_threads.unwrap_or_else(default_client_threads).max(1);
    let end = run_dispatch_thread(setup.input, stop, sink, live, threads).await;
    if let Some(progress) = progress {
        progress.finish().await;
    }

    let (mut records, write_error) = collector.await.unwrap_or_default();
    records.sort_by_key(|r| r.index);
    Ok(RunResult {
        records,
        partial: end.is_none_or(|e| e.stopped),
        write_error,
    })
}

/// Threads for the dispatch loop and the requests by default: as many as the cores this
/// process may run on (`taskset` and cgroup limits count), at least one.
pub fn default_client_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Runs [`dispatch`] on a dedicated thread; `None` if that thread failed. With one thread
/// the requests run there too; with more, on a runtime of `threads` workers made there.
async fn run_dispatch_thread<T: Transport, P: PromptSource>(
    mut input: DispatchInput<T, P>,
    stop: CancellationToken,
    sink: mpsc::UnboundedSender<RequestRecord>,
    live: Arc<Live>,
    threads: usize,
) -> Option<DispatchEnd> {
    let (done, end) = oneshot::channel();
    if threads == 1 && input.options.pacer == Pacer::Precise {
        input.options.pacer = Pacer::Shared;
    }
    let spawned = std::thread::Builder::new()
        .name("tracebench-dispatch".to_string())
        .spawn(move || match build_runtimes(threads) {
            Ok((dispatcher, responses)) => {
                let handle = responses.as_ref().unwrap_or(&dispatcher).handle().clone();
                // A task, not the `block_on` future: tokio polls that future only after
                // polling the sockets, which would put other streams' chunks between the
                // requests of a burst (see `Shared::hand_over` in dispatch).
                let task = dispatcher.spawn(dispatch(input, stop, handle, sink, live));
                match dispatcher.block_on(task) {
                    Ok(end) => {
                        let _ = done.send(end);
                    }
                    Err(err) => tracing::error!("the dispatch loop failed: {err}"),
                }
                // Every request has ended; what is left are idle pooled connections.
                dispatcher.shutdown_background();
                if let Some(responses) = responses {
                    responses.shutdown_background();
                }
            }
            Err(err) => tracing::error!("cannot start the dispatch thread: {err}"),
        });
    if let Err(err) = spawned {
        tracing::error!("cannot start the dispatch thread: {err}");
        return None;
    }
    end.await.ok()
}

/// The dispatch thread's own runtime and, with more than one thread, the response runtime
/// of `threads` workers. On one thread everything shares the first: a burst is then sent
/// back to back by the thread that waited for its deadline, with no wake-up of another
/// thread (see docs/PERFORMANCE.md, "Send path").
fn build_runtimes(threads: usize) -> std::io::Result<(Runtime, Option<Runtime>)> {
    let dispatcher = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if threads <= 1 {
        return Ok((dispatcher, None));
    }
    let responses = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("tracebench-client")
        .enable_all()
        .build()?;
    Ok((dispatcher, Some(responses)))
}

/// Cancels `stop` on the first Ctrl-C or SIGTERM, and cuts the grace period short on the
/// second (see [`grace_cut`]).
pub fn stop_on_signals(stop: CancellationToken, grace: std::time::Duration) {
    let signal = termination_signal();
    tokio::spawn(async move {
        signal.await;
        tracing::warn!(
            "interrupted: no more requests are sent; waiting up to {grace:?} for those in \
             flight (interrupt again to cancel them now)"
        );
        stop.cancel();

        termination_signal().await;
        tracing::warn!("interrupted again: cancelling the requests in flight");
        grace_cut().cancel();
    });
}

/// Cancelled by a second Ctrl-C or SIGTERM: the requests in flight are cancelled at once
/// instead of at the end of the grace period. One per process, as the signals are.
pub fn grace_cut() -> &'static CancellationToken {
    static CUT: std::sync::OnceLock<CancellationToken> = std::sync::OnceLock::new();
    CUT.get_or_init(CancellationToken::new)
}

/// Resolves at the first Ctrl-C or SIGTERM (what `kill`, service managers and container
/// runtimes send). The handlers are installed when this is called, not when it is first
/// polled: a signal sent right after the caller announced itself is not lost (it killed
/// the process before). Must be called inside a runtime.
pub fn termination_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let handlers = {
        use tokio::signal::unix::{SignalKind, signal};
        signal(SignalKind::interrupt()).and_then(|i| Ok((i, signal(SignalKind::terminate())?)))
    };
    async move {
        #[cfg(unix)]
        if let Ok((mut interrupt, mut terminate)) = handlers {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}
