//! What one connection is waiting for, for the listener's own timeouts: an HTTP/1.1 request
//! head (the header read timeout), or a next request while no request is in flight (the idle
//! timeout). Told by the connection's reads and by the requests it serves; a watchdog in the
//! connection's task acts on it (`super::drive`).

use std::{
    io,
    pin::Pin,
    sync::atomic::{AtomicU64, AtomicUsize, Ordering},
    task::{Context, Poll},
};

use pin_project_lite::pin_project;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::Notify,
    time::{Duration, Instant},
};

/// What a connection with no request in flight waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wait {
    /// The rest of a request head (HTTP/1.1; from the connection's accept, or from the first
    /// byte of a next request).
    Head,
    /// A next request on a connection kept alive.
    Idle,
}

/// A connection's wait, in one word so that it changes atomically: 0 while a request is in
/// flight, else `(milliseconds since accept + 1) << 1 | head`.
type Packed = u64;

/// The shared state of one connection.
pub(super) struct ConnState {
    /// HTTP/1.1: its reads tell an idle connection from one receiving a request head.
    http1: bool,
    accepted: Instant,
    /// Requests whose response has not ended (h2: several at once).
    in_flight: AtomicUsize,
    wait: AtomicU64,
    /// Wakes the watchdog when the wait changes.
    pub(super) changed: Notify,
}

impl ConnState {
    /// A connection accepted at `accepted`: an HTTP/1.1 client is expected to send a request
    /// at once (its head is timed from the accept); an h2 connection starts idle.
    pub(super) fn new(http1: bool, accepted: Instant) -> Self {
        let state = ConnState {
            http1,
            accepted,
            in_flight: AtomicUsize::new(0),
            wait: AtomicU64::new(0),
            changed: Notify::new(),
        };
        let wait = if http1 { Wait::Head } else { Wait::Idle };
        state
            .wait
            .store(state.pack(wait, accepted), Ordering::Relaxed);
        state
    }

    fn pack(&self, wait: Wait, at: Instant) -> Packed {
        let ms = at.saturating_duration_since(self.accepted).as_millis() as u64;
        ((ms + 1) << 1) | u64::from(wait == Wait::Head)
    }

    fn unpack(&self, packed: Packed) -> Option<(Wait, Instant)> {
        if packed == 0 {
            return None;
        }
        let wait = if packed & 1 == 1 {
            Wait::Head
        } else {
            Wait::Idle
        };
        Some((
            wait,
            self.accepted + Duration::from_millis((packed >> 1) - 1),
        ))
    }

    /// Bytes arrived (HTTP/1.1): an idle connection now receives a request head.
    fn on_read(&self) {
        let wait = self.wait.load(Ordering::Relaxed);
        if matches!(self.unpack(wait), Some((Wait::Idle, _))) && self.in_flight() == 0 {
            self.wait
                .store(self.pack(Wait::Head, Instant::now()), Ordering::Relaxed);
            self.changed.notify_one();
        }
    }

    /// A request's head has arrived: the connection is busy until [`ConnState::end`]. Returns
    /// when the request began: the head's first byte for HTTP/1.1 (as far as it is known: a
    /// request already buffered behind the previous one counts from now), else `now`.
    pub(super) fn begin(&self, now: Instant) -> Instant {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        match self.unpack(self.wait.swap(0, Ordering::AcqRel)) {
            Some((Wait::Head, since)) if self.http1 => since,
            _ => now,
        }
    }

    /// A request's response has ended (or was dropped).
    pub(super) fn end(&self) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.wait
                .store(self.pack(Wait::Idle, Instant::now()), Ordering::Release);
            self.changed.notify_one();
        }
    }

    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// What the connection waits for and since when, with the token [`ConnState::still`]
    /// checks; `None` while a request is in flight.
    pub(super) fn waiting(&self) -> Option<(Wait, Instant, Packed)> {
        let packed = self.wait.load(Ordering::Acquire);
        let (wait, since) = self.unpack(packed)?;
        (self.in_flight() == 0).then_some((wait, since, packed))
    }

    /// Whether the connection still waits as it did when [`ConnState::waiting`] gave `token`.
    pub(super) fn still(&self, token: Packed) -> bool {
        self.wait.load(Ordering::Acquire) == token && self.in_flight() == 0
    }
}

pin_project! {
    /// A connection's I/O, telling its [`ConnState`] when bytes arrive.
    pub(super) struct Tracked<I> {
        #[pin]
        io: I,
        state: std::sync::Arc<ConnState>,
    }
}

impl<I> Tracked<I> {
    pub(super) fn new(io: I, state: std::sync::Arc<ConnState>) -> Self {
        Tracked { io, state }
    }
}

impl<I: AsyncRead> AsyncRead for Tracked<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.io.poll_read(cx, buf);
        if buf.filled().len() > before {
            this.state.on_read();
        }
        polled
    }
}

impl<I: AsyncWrite> AsyncWrite for Tracked<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
