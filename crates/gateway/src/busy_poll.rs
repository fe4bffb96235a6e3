//! Busy polling: after each request, the runtime's workers keep polling for I/O for a while
//! instead of sleeping in `epoll_wait`.
//!
//! A worker that sleeps must be woken by the kernel when the upstream answers or the next
//! request arrives. On virtual machines every such wake-up is an inter-processor interrupt
//! taken through the hypervisor, and costs tens of microseconds: at a few hundred requests a
//! second that, not the proxy's own work, is most of the latency it adds. HAProxy's
//! `busy-polling` makes the same trade for the same reason. It costs CPU (a worker spins for
//! the whole window after every request) and is off by default; when no request has come for
//! the window, the workers sleep as usual, so an idle gateway burns nothing.
//!
//! How: one task per worker that yields in a loop. A yielded task makes tokio's worker poll
//! the I/O driver with a zero timeout before running it again, so the worker keeps draining
//! socket readiness without sleeping. Tasks may migrate between workers; when two spinners
//! share one worker, another worker sleeps in the driver and takes the wake-up itself, which
//! is only the default behaviour again.

use std::{
    fmt,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use tokio::sync::Notify;

/// Handle the request path marks; cheap to clone.
#[derive(Clone)]
pub struct BusyPoll {
    inner: Arc<Inner>,
}

struct Inner {
    window_us: u64,
    epoch: Instant,
    /// Microseconds since `epoch` until which to poll: the last request's time + the window.
    until: AtomicU64,
    /// Set when the spinners have gone to sleep, so `mark` wakes them only then.
    asleep: AtomicBool,
    wake: Notify,
    /// Polls made while spinning (for tests and debugging). Each spinner adds its count when
    /// it goes to sleep: a shared counter bumped on every poll would bounce this cache line,
    /// which every request reads, between the spinning cores.
    spins: AtomicU64,
}

impl fmt::Debug for BusyPoll {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BusyPoll")
            .field("window_us", &self.inner.window_us)
            .finish()
    }
}

impl BusyPoll {
    /// Starts one spinner per worker of the current runtime, each polling for `window` after
    /// every `mark`. Must be called from within a Tokio runtime.
    pub fn start(window: Duration) -> Self {
        let busy = BusyPoll {
            inner: Arc::new(Inner {
                window_us: u64::try_from(window.as_micros()).unwrap_or(u64::MAX),
                epoch: Instant::now(),
                until: AtomicU64::new(0),
                asleep: AtomicBool::new(false),
                wake: Notify::new(),
                spins: AtomicU64::new(0),
            }),
        };
        let workers = tokio::runtime::Handle::current().metrics().num_workers();
        for _ in 0..workers.max(1) {
            tokio::spawn(busy.clone().spin());
        }
        busy
    }

    /// Notes a request at `now`: the workers poll until `now` + the window.
    pub fn mark(&self, now: Instant) {
        let inner = &*self.inner;
        let until = inner.micros(now).saturating_add(inner.window_us);
        // Moved on only by a sixteenth of the window or more, so that workers on many cores
        // do not all write this one cache line on every request.
        let current = inner.until.load(Ordering::Relaxed);
        if until >= current.saturating_add(inner.window_us / 16) {
            inner.until.store(until, Ordering::Relaxed);
        }
        if inner.asleep.load(Ordering::Relaxed) && inner.asleep.swap(false, Ordering::AcqRel) {
            inner.wake.notify_waiters();
        }
    }

    async fn spin(self) {
        let inner = &*self.inner;
        let mut spins = 0;
        loop {
            if !inner.idle() {
                spins += 1;
                tokio::task::yield_now().await;
                continue;
            }
            inner
                .spins
                .fetch_add(std::mem::take(&mut spins), Ordering::Relaxed);
            // Registered before `asleep` is set, so a `mark` between the two still wakes us.
            let woken = inner.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            inner.asleep.store(true, Ordering::Release);
            if inner.idle() {
                woken.await;
            }
        }
    }
}

impl Inner {
    fn micros(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_micros()).unwrap_or(u64::MAX)
    }

    fn idle(&self) -> bool {
        self.micros(Instant::now()) >= self.until.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits (generously, for loaded CI machines) until `cond` holds.
    async fn eventually(what: &str, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// The spinner sleeps until a mark, spins for the window after it, then sleeps again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn spins_only_within_the_window_after_a_mark() {
        // A window long enough that a descheduled spinner still wakes inside it.
        let busy = BusyPoll::start(Duration::from_millis(300));
        let inner = &*busy.inner;
        let spins = || inner.spins.load(Ordering::Relaxed);
        let asleep = || inner.asleep.load(Ordering::Acquire);

        // No request yet: asleep, not spinning.
        eventually("the spinner sleeps", asleep).await;
        let before = spins();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(spins(), before, "spun with no request");

        // A mark wakes the spinner: it polls until the window has passed, then sleeps (and
        // adds up its polls).
        busy.mark(Instant::now());
        eventually("the spinner sleeps after the window", asleep).await;
        let after = spins();
        assert!(after > before, "no polling after a mark");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(spins(), after, "spun past the window");

        // And the next mark wakes it again.
        busy.mark(Instant::now());
        eventually("the spinner sleeps after the second window", asleep).await;
        assert!(spins() > after, "no polling after the second mark");
    }
}
