//! Which wake-ups of an HTTP/1.1 upstream connection are news to the body reading it.
//!
//! The body drives its connection in the reading task (see the parent module), and most of
//! the wake-ups that connection raises are that task waking itself: hyper's body channel wakes
//! the receiver when the connection puts a chunk in it, and the connection when the body
//! takes it, both in the middle of the body's own poll. Each such wake-up cost the task a
//! whole extra turn (the client connection, the relay, the upstream connection polled again
//! for nothing), and without knowing whether anything had woken the connection, every poll of
//! the body had to drive it again to find out.
//!
//! So the connection and its body are polled with a waker of their own ([`Wakeup`]): it
//! notes every wake-up, passes on to the reading task only those that arrive while the body is
//! not being polled (those made during a poll are seen by that poll, which looks again before
//! it gives up), and lets the body tell, without polling anything, that nothing has happened
//! since it last found the connection waiting.

use std::{
    sync::{
        atomic::{AtomicU8, Ordering},
        Arc, Mutex, MutexGuard, PoisonError,
    },
    task::{Wake, Waker},
};

/// Something woke the connection since the body last began a poll.
const WOKEN: u8 = 1;
/// The body is being polled: a wake-up now is left to that poll.
const POLLING: u8 = 2;

/// The waker an HTTP/1.1 connection and its response body are polled with.
pub(super) struct Wakeup {
    state: AtomicU8,
    /// The task reading the connection: wake-ups that the body's poll will not see go there.
    task: Mutex<Option<Waker>>,
}

// === impl Wakeup ===

impl Wakeup {
    /// A new one and the waker to poll with.
    pub(super) fn new() -> (Arc<Wakeup>, Waker) {
        let wakeup = Arc::new(Wakeup {
            state: AtomicU8::new(0),
            task: Mutex::new(None),
        });
        let waker = Waker::from(Arc::clone(&wakeup));
        (wakeup, waker)
    }

    fn task(&self) -> MutexGuard<'_, Option<Waker>> {
        self.task.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// From now on, wake-ups go to `task` (`None`: nowhere, the connection is idle).
    pub(super) fn set_task(&self, task: Option<Waker>) {
        *self.task() = task;
    }

    /// Whether anything woke the connection since the body last began a poll.
    pub(super) fn woken(&self) -> bool {
        self.state.load(Ordering::Acquire) & WOKEN != 0
    }

    /// The body begins a poll: what woke the connection before is about to be seen.
    pub(super) fn begin(&self) {
        self.state.swap(POLLING, Ordering::AcqRel);
    }

    /// The body's poll ends with something: a wake-up during it stays noted, so the next
    /// poll drives the connection.
    pub(super) fn end(&self) {
        self.state.fetch_and(!POLLING, Ordering::AcqRel);
    }

    /// The body's poll found nothing. `true`: nothing woke the connection during the poll,
    /// which may now return `Pending` (later wake-ups go to the task). `false`: something
    /// did; the poll must look again (it is still polling, the wake-up cleared).
    pub(super) fn settle(&self) -> bool {
        if self
            .state
            .compare_exchange(POLLING, 0, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            return true;
        }
        self.state.fetch_and(!WOKEN, Ordering::AcqRel);
        false
    }
}

impl Wake for Wakeup {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.state.fetch_or(WOKEN, Ordering::AcqRel) & POLLING == 0 {
            if let Some(task) = self.task().as_ref() {
                task.wake_by_ref();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counter() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count(AtomicUsize::new(0)));
        (Arc::clone(&c), Waker::from(c))
    }

    #[test]
    fn wakeups_during_a_poll_are_the_polls_and_later_ones_reach_the_task() {
        let (count, task) = counter();
        let (wakeup, waker) = Wakeup::new();
        wakeup.set_task(Some(task));

        // While polled: noted, not passed on; the poll that then finds nothing must look
        // again, and may give up once nothing more came.
        wakeup.begin();
        waker.wake_by_ref();
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
        assert!(!wakeup.settle());
        assert!(wakeup.settle());
        assert!(!wakeup.woken());

        // Between polls: passed on, and noted for the next poll.
        waker.wake_by_ref();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(wakeup.woken());
        wakeup.begin();
        assert!(!wakeup.woken());

        // A poll that ends with something keeps a wake-up made during it.
        waker.wake_by_ref();
        wakeup.end();
        assert!(wakeup.woken());
        assert_eq!(count.0.load(Ordering::SeqCst), 1);

        // Idle: nowhere to go.
        wakeup.set_task(None);
        waker.wake_by_ref();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
    }
}
