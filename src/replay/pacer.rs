//! Waiting for a send deadline. tokio's timer wheel has 1 ms granularity and wakes late by
//! up to that much, so the precise pacer sleeps on tokio until shortly before the deadline,
//! then on the OS thread (`thread::sleep`, tens of µs late), then spins the last stretch.
//! The shared pacer does the same without ever blocking its thread, for a runtime that also
//! runs the requests: an alarm thread sleeps for it and wakes it, and its spin yields to the
//! runtime's other tasks (and polls the sockets) at every turn.
//!
//! The precise pacer blocks its thread for the final stretch: it must run on the dispatch
//! thread's own runtime, never on a worker of the runtime that reads responses. Its spin
//! yields the core at every turn: on a client pinned to one core under `SCHED_FIFO` (the
//! benchmark's set-up) a plain spin kept the response worker off the core for the whole
//! stretch, delaying the chunks that arrived meanwhile.

use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

/// Left to `thread::sleep` after the tokio sleep: more than tokio's granularity plus its
/// usual lateness.
const COARSE_MARGIN: Duration = Duration::from_millis(3);

/// Left to the spin after `thread::sleep`: more than Linux's default 50 µs timer slack.
const SPIN_MARGIN: Duration = Duration::from_micros(150);

/// How the dispatch loop waits for a deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pacer {
    /// tokio sleep, then thread sleep, then spin: sub-millisecond sends. Blocks its thread.
    Precise,
    /// tokio sleep only: 1 ms granularity; follows paused test time.
    Tokio,
    /// As precise as [`Pacer::Precise`] without blocking the thread: tokio sleep, then an
    /// alarm thread's wake-up, then a spin that yields to the runtime's other tasks. For a
    /// single-threaded runtime that also sends and reads the requests.
    Shared,
}

impl Pacer {
    /// Waits until `deadline`. Returns at once when it has passed.
    pub async fn wait_until(self, deadline: Instant) {
        match self {
            Pacer::Tokio => tokio::time::sleep_until(deadline).await,
            Pacer::Precise => {
                if let Some(coarse) = deadline.checked_sub(COARSE_MARGIN) {
                    if coarse > Instant::now() {
                        tokio::time::sleep_until(coarse).await;
                    }
                }
                wait_blocking(deadline);
            }
            Pacer::Shared => wait_shared(deadline).await,
        }
    }
}

/// [`Pacer::Shared`]: never blocks the thread, so the runtime's other tasks run meanwhile.
async fn wait_shared(deadline: Instant) {
    if let Some(coarse) = deadline.checked_sub(COARSE_MARGIN) {
        if coarse > Instant::now() {
            tokio::time::sleep_until(coarse).await;
        }
    }
    if let Some(near) = deadline.checked_sub(SPIN_MARGIN) {
        if near > Instant::now() {
            alarm(near).await;
        }
    }
    while Instant::now() < deadline {
        tokio::task::yield_now().await;
    }
}

/// A wake-up request for the alarm thread: when, and whom to tell.
type AlarmRequest = (std::time::Instant, oneshot::Sender<()>);

/// Resolves at `at` (tens of µs late), woken by the alarm thread; falls back on tokio's
/// timer when that thread cannot be started.
async fn alarm(at: Instant) {
    let (tx, rx) = oneshot::channel();
    let queued = alarm_thread().is_some_and(|alarm| alarm.send((at.into_std(), tx)).is_ok());
    match queued {
        true => {
            let _ = rx.await;
        }
        false => tokio::time::sleep_until(at).await,
    }
}

/// The process's alarm thread: sleeps until each requested instant, then wakes its waiter.
fn alarm_thread() -> Option<&'static mpsc::Sender<AlarmRequest>> {
    static ALARM: OnceLock<Option<mpsc::Sender<AlarmRequest>>> = OnceLock::new();
    ALARM
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<AlarmRequest>();
            let spawned = std::thread::Builder::new()
                .name("tracebench-alarm".to_string())
                .spawn(move || {
                    while let Ok((at, waiter)) = rx.recv() {
                        let now = std::time::Instant::now();
                        if at > now {
                            std::thread::sleep(at - now);
                        }
                        let _ = waiter.send(());
                    }
                });
            spawned.ok().map(|_| tx)
        })
        .as_ref()
}

/// Sleeps the OS thread to just before `deadline`, then spins to it.
fn wait_blocking(deadline: Instant) {
    let now = Instant::now();
    if deadline <= now {
        return;
    }
    let remaining = deadline - now;
    if remaining > SPIN_MARGIN {
        std::thread::sleep(remaining - SPIN_MARGIN);
    }
    while Instant::now() < deadline {
        std::thread::yield_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn precise_wait_is_never_early() {
        for delay_us in [0_u64, 50, 400, 2_500, 4_000] {
            let deadline = Instant::now() + Duration::from_micros(delay_us);
            Pacer::Precise.wait_until(deadline).await;
            assert!(Instant::now() >= deadline, "woke early for {delay_us} µs");
        }
    }

    #[test]
    fn shared_wait_is_never_early_and_lets_other_tasks_run() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        runtime.block_on(async {
            let ticks = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let counter = ticks.clone();
            let other = tokio::spawn(async move {
                loop {
                    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tokio::task::yield_now().await;
                }
            });
            for delay_us in [0_u64, 50, 400, 2_500, 4_000] {
                let deadline = Instant::now() + Duration::from_micros(delay_us);
                Pacer::Shared.wait_until(deadline).await;
                assert!(Instant::now() >= deadline, "woke early for {delay_us} µs");
            }
            other.abort();
            // On one thread the other task only runs if the pacer lets it.
            assert!(ticks.load(std::sync::atomic::Ordering::Relaxed) > 5);
        });
    }

    #[tokio::test(start_paused = true)]
    async fn tokio_pacer_follows_paused_time() {
        let start = Instant::now();
        Pacer::Tokio
            .wait_until(start + Duration::from_secs(30))
            .await;
        assert!(Instant::now() - start >= Duration::from_secs(30));
    }
}
