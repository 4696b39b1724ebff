//! One replay from start to end, minus the command line: write `run.json`, start the
//! writer of `requests.jsonl`, the progress bars and the dispatch thread, wait for the plan
//! to finish or a stop, and hand back every record. Reports are the caller's.
//!
//! The dispatch loop runs on its own OS thread with its own single-threaded runtime, so the
//! precise pacer may block that thread; requests and their streams run on the caller's
//! runtime.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::output::{self, OutputError, RequestsWriter};
use super::progress::Progress;
use super::{DispatchEnd, DispatchInput, Live, PromptSource, RequestRecord, Transport, dispatch};
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
    let end = run_dispatch_thread(setup.input, stop, sink, live).await;
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

/// Runs [`dispatch`] on a dedicated thread; `None` if that thread failed.
async fn run_dispatch_thread<T: Transport, P: PromptSource>(
    input: DispatchInput<T, P>,
    stop: CancellationToken,
    sink: mpsc::UnboundedSender<RequestRecord>,
    live: Arc<Live>,
) -> Option<DispatchEnd> {
    let handle = Handle::current();
    let (done, end) = oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("tracebench-dispatch".to_string())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            match runtime {
                Ok(runtime) => {
                    let end = runtime.block_on(dispatch(input, stop, handle, sink, live));
                    let _ = done.send(end);
                }
                Err(err) => tracing::error!("cannot start the dispatch thread: {err}"),
            }
        });
    if let Err(err) = spawned {
        tracing::error!("cannot start the dispatch thread: {err}");
        return None;
    }
    end.await.ok()
}

/// Cancels `stop` on the first Ctrl-C or SIGTERM.
pub fn stop_on_signals(stop: CancellationToken, grace: std::time::Duration) {
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::warn!(
            "interrupted: no more requests are sent; waiting up to {grace:?} for those in flight"
        );
        stop.cancel();
    });
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
