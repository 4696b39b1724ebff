//! Progress bars while a replay runs, as the seed shows them: requests sent, requests done,
//! prefill (first tokens) and decode tokens, with requests in flight and queued for a slot.
//! Drawn on stderr from the dispatcher's [`Live`] counters by a ticker; never on stdout,
//! which carries the report only.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Live;

/// How often the bars are redrawn.
const TICK: Duration = Duration::from_millis(100);

/// The running display; [`Progress::finish`] clears it.
#[derive(Debug)]
pub struct Progress {
    ticker: JoinHandle<()>,
    done: CancellationToken,
}

impl Progress {
    /// Starts the bars for a run of `total` requests and `total_output_tokens` asked for.
    pub fn start(live: Arc<Live>, total: u64, total_output_tokens: u64) -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
        let bar = |len: u64, label: &str| {
            let style = ProgressStyle::with_template(&format!(
                "{label:>14} [{{bar:32}}] {{pos}}/{{len}} {{msg}}"
            ))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            multi.add(ProgressBar::new(len).with_style(style.progress_chars("=> ")))
        };
        let bars = [
            bar(total, "Requests sent"),
            bar(total, "Requests done"),
            bar(total, "Prefill token"),
            bar(total_output_tokens, "Decode token"),
        ];
        let done = CancellationToken::new();
        let ticker = tokio::spawn(tick(live, bars, done.clone()));
        Self { ticker, done }
    }

    /// Stops and clears the bars.
    pub async fn finish(self) {
        self.done.cancel();
        let _ = self.ticker.await;
    }
}

async fn tick(live: Arc<Live>, bars: [ProgressBar; 4], done: CancellationToken) {
    loop {
        let load = |c: &std::sync::atomic::AtomicUsize| c.load(Ordering::Relaxed) as u64;
        bars[0].set_position(load(&live.sent));
        bars[0].set_message(format!(
            "in flight {} queued {}",
            load(&live.in_flight),
            load(&live.queued)
        ));
        bars[1].set_position(load(&live.done));
        bars[2].set_position(load(&live.first_tokens));
        bars[3].set_position(load(&live.decode_tokens));
        tokio::select! {
            _ = done.cancelled() => break,
            _ = tokio::time::sleep(TICK) => {}
        }
    }
    for bar in &bars {
        bar.finish_and_clear();
    }
}
