//! Waiting for a send deadline. tokio's timer wheel has 1 ms granularity and wakes late by
//! up to that much, so neither precise pacer relies on it alone.
//!
//! On Linux both wait on a `timerfd` armed for the deadline and polled by the runtime's own
//! `epoll`, like a socket: the kernel's high-resolution timer wakes the thread a few tens of
//! µs after the deadline, never before, and the thread sleeps until then. That costs one
//! wake-up per deadline; the spin it replaced cost up to 150 µs of a core per deadline
//! (each turn of it a zero-timeout `epoll_wait`), a fifth of the client's CPU at 1,000
//! arrivals/s (docs/PERFORMANCE.md, "Deadline timer").
//!
//! Elsewhere, or when no timerfd can be made, the precise pacer sleeps on tokio until
//! shortly before the deadline, then on the OS thread (`thread::sleep`, tens of µs late),
//! then spins the last stretch. The shared pacer does the same without ever blocking its
//! thread, for a runtime that also runs the requests: an alarm thread sleeps for it and
//! wakes it, and its spin yields to the runtime's other tasks (and polls the sockets) at
//! every turn. The precise pacer's fallback blocks its thread: it must run on the dispatch
//! thread's own runtime, never on a worker of the runtime that reads responses.

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
        self.waiter().wait_until(deadline).await;
    }

    /// A waiter for many deadlines in turn (one dispatch loop): it keeps its OS timer.
    /// Must be made inside the runtime it will wait on.
    pub fn waiter(self) -> Waiter {
        let timer = match self {
            Pacer::Tokio => None,
            Pacer::Precise | Pacer::Shared => deadline_timer(),
        };
        Waiter { pacer: self, timer }
    }
}

/// Waits for one deadline after another with a [`Pacer`].
pub struct Waiter {
    pacer: Pacer,
    timer: Option<DeadlineTimer>,
}

impl Waiter {
    /// Waits until `deadline`, never returning before it. Returns at once when it has passed.
    pub async fn wait_until(&mut self, deadline: Instant) {
        if let Some(timer) = &self.timer {
            match timer.wait_until(deadline).await {
                Ok(()) => return,
                Err(err) => {
                    tracing::warn!("deadline timer failed ({err}); waiting without it");
                    self.timer = None;
                }
            }
        }
        match self.pacer {
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

#[cfg(target_os = "linux")]
use timer::DeadlineTimer;

/// Stands in for the timerfd where there is none: never made.
#[cfg(not(target_os = "linux"))]
struct DeadlineTimer;

#[cfg(not(target_os = "linux"))]
impl DeadlineTimer {
    async fn wait_until(&self, _deadline: Instant) -> std::io::Result<()> {
        Err(std::io::ErrorKind::Unsupported.into())
    }
}

/// A deadline timer on the current runtime, or `None` (the fallback waits) where it cannot
/// be made.
fn deadline_timer() -> Option<DeadlineTimer> {
    #[cfg(target_os = "linux")]
    match DeadlineTimer::new() {
        Ok(timer) => return Some(timer),
        Err(err) => tracing::debug!("no timerfd for the pacer ({err}): it spins instead"),
    }
    None
}

#[cfg(target_os = "linux")]
mod timer {
    //! A `timerfd` registered with the runtime's reactor.

    use std::io;
    use std::os::fd::OwnedFd;

    use rustix::time::{
        Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec, timerfd_create,
        timerfd_settime,
    };
    use tokio::io::unix::AsyncFd;
    use tokio::time::Instant;

    /// One timer, armed for one deadline at a time.
    pub(super) struct DeadlineTimer {
        fd: AsyncFd<OwnedFd>,
    }

    impl DeadlineTimer {
        /// A monotonic, non-blocking timerfd on the current runtime (which must have IO
        /// enabled).
        pub(super) fn new() -> io::Result<Self> {
            let flags = TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC;
            let fd = timerfd_create(TimerfdClockId::Monotonic, flags)?;
            // `AsyncFd::new` is deprecated because a value that only borrows its fd could close
            // it while registered; this `OwnedFd` is moved in and dropped only by `AsyncFd`.
            // Its replacement, `register`, is `unsafe`, which this crate forbids.
            #[allow(deprecated)]
            let fd = AsyncFd::new(fd)?;
            Ok(DeadlineTimer { fd })
        }

        /// Arms the timer for `deadline` and waits for it to fire. The time left is measured
        /// just before arming, so the timer can only fire late, never early.
        pub(super) async fn wait_until(&self, deadline: Instant) -> io::Result<()> {
            let now = Instant::now();
            if deadline <= now {
                return Ok(());
            }
            let left = deadline - now;
            let armed = Itimerspec {
                it_interval: Timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                },
                it_value: Timespec {
                    tv_sec: left.as_secs() as _,
                    tv_nsec: left.subsec_nanos() as _,
                },
            };
            timerfd_settime(self.fd.get_ref(), TimerfdTimerFlags::empty(), &armed)?;
            loop {
                let mut ready = self.fd.readable().await?;
                let mut expirations = [0_u8; 8];
                match ready.try_io(|fd| Ok(rustix::io::read(fd.get_ref(), &mut expirations)?)) {
                    Ok(read) => return read.map(|_| ()),
                    Err(_would_block) => continue,
                }
            }
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

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn precise_pacers_wait_on_a_timerfd_many_times_in_turn() {
        for pacer in [Pacer::Precise, Pacer::Shared] {
            let mut waiter = pacer.waiter();
            assert!(waiter.timer.is_some(), "{pacer:?} has no timerfd");
            // Re-armed for each deadline, including ones already past.
            for delay_us in [300_u64, 0, 1_200, 50, 2_000] {
                let deadline = Instant::now() + Duration::from_micros(delay_us);
                waiter.wait_until(deadline).await;
                assert!(
                    Instant::now() >= deadline,
                    "{pacer:?} woke early for {delay_us} µs"
                );
            }
            assert!(waiter.timer.is_some(), "{pacer:?} gave up its timerfd");
        }
        assert!(Pacer::Tokio.waiter().timer.is_none());
    }

    #[tokio::test]
    async fn fallback_waits_are_never_early() {
        for delay_us in [0_u64, 50, 400, 2_500, 4_000] {
            let deadline = Instant::now() + Duration::from_micros(delay_us);
            wait_shared(deadline).await;
            assert!(
                Instant::now() >= deadline,
                "shared woke early for {delay_us} µs"
            );
            let deadline = Instant::now() + Duration::from_micros(delay_us);
            wait_blocking(deadline);
            assert!(
                Instant::now() >= deadline,
                "blocking woke early for {delay_us} µs"
            );
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
