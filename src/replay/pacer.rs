//! Waiting for a send deadline. tokio's timer wheel has 1 ms granularity and wakes late by
//! up to that much, so the precise pacer sleeps on tokio until shortly before the deadline,
//! then on the OS thread (`thread::sleep`, tens of µs late), then spins the last stretch.
//!
//! The precise pacer blocks its thread for the final stretch: it must run on the dispatch
//! thread's own runtime, never on a worker of the runtime that reads responses.

use std::time::Duration;

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
        }
    }
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
        std::hint::spin_loop();
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

    #[tokio::test(start_paused = true)]
    async fn tokio_pacer_follows_paused_time() {
        let start = Instant::now();
        Pacer::Tokio
            .wait_until(start + Duration::from_secs(30))
            .await;
        assert!(Instant::now() - start >= Duration::from_secs(30));
    }
}
