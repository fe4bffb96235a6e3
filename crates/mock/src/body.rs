//! The response body: a buffered JSON body or a paced SSE stream that can fail on purpose.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use std::collections::VecDeque;

use crate::openai::{StreamEvent, StreamPlan};

/// Long enough for hyper to write out queued frames on an idle loopback connection.
const RESET_FLUSH: Duration = Duration::from_millis(5);

/// Every response the mock sends.
#[derive(Debug)]
pub enum MockBody {
    Full(Option<Bytes>),
    Stream(SseBody),
    /// Sends these bytes, then never finishes (`x-mock-fault: stall-body`).
    Stalled(Option<Bytes>),
}

/// What a stream sends: the OpenAI plan built lazily (the benchmarks' hot path), or
/// precomputed frames (Anthropic streams and tool-call streams).
#[derive(Debug)]
pub enum Plan {
    OpenAi(StreamPlan),
    Frames {
        frames: VecDeque<Bytes>,
        /// Cut the stream after this many frames (`x-mock-reset-after`).
        reset_after: Option<u32>,
        sent: u32,
    },
}

impl Plan {
    fn is_end(&self) -> bool {
        match self {
            Plan::OpenAi(p) => p.is_end(),
            Plan::Frames { frames, .. } => frames.is_empty(),
        }
    }

    fn next_event(&mut self) -> Option<StreamEvent> {
        match self {
            Plan::OpenAi(p) => p.next_event(),
            Plan::Frames {
                frames,
                reset_after,
                sent,
            } => {
                if reset_after.is_some_and(|n| *sent >= n) && !frames.is_empty() {
                    frames.clear();
                    return Some(StreamEvent::Reset);
                }
                *sent += 1;
                frames.pop_front().map(StreamEvent::Frame)
            }
        }
    }
}

/// Yields one body frame per SSE event so each event is flushed on its own, sleeping
/// `delay` between frames.
#[derive(Debug)]
pub struct SseBody {
    plan: Plan,
    delay: Duration,
    /// Boxed once per stream and re-armed with `reset`, so pacing allocates once.
    sleep: Option<Pin<Box<Sleep>>>,
    waiting: bool,
    resetting: bool,
    /// A cut ends the body cleanly instead of failing it (`x-mock-fault: truncate-stream`).
    clean_cut: bool,
}

/// Why a body failed. Returning it makes hyper drop the connection (HTTP/1.1) or reset the
/// stream (HTTP/2) without the terminating chunk, which is what a provider crash looks like.
#[derive(Debug)]
pub enum BodyError {
    Reset,
}

// === impl MockBody ===

impl MockBody {
    pub fn full(bytes: Bytes) -> Self {
        Self::Full(Some(bytes))
    }

    pub fn empty() -> Self {
        Self::Full(None)
    }

    pub fn stream(plan: StreamPlan, delay: Duration) -> Self {
        Self::Stream(SseBody {
            plan: Plan::OpenAi(plan),
            delay,
            sleep: None,
            waiting: false,
            resetting: false,
            clean_cut: false,
        })
    }

    /// The first half of `body`, then nothing, ever: a body that stalls halfway.
    pub fn stalled(body: &Bytes) -> Self {
        Self::Stalled(Some(body.slice(..body.len() / 2)))
    }

    /// For a stream: end cleanly where a cut was asked for, rather than fail.
    pub fn cut_cleanly(&mut self) {
        if let Self::Stream(sse) = self {
            sse.clean_cut = true;
        }
    }

    pub fn frames(frames: VecDeque<Bytes>, reset_after: Option<u32>, delay: Duration) -> Self {
        Self::Stream(SseBody {
            plan: Plan::Frames {
                frames,
                reset_after,
                sent: 0,
            },
            delay,
            sleep: None,
            waiting: false,
            resetting: false,
            clean_cut: false,
        })
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            Self::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Self::Stream(sse) => sse.poll_event(cx),
            // No waker is kept: nothing will ever wake this body again.
            Self::Stalled(bytes) => match bytes.take() {
                Some(b) => Poll::Ready(Some(Ok(Frame::data(b)))),
                None => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Full(bytes) => bytes.is_none(),
            Self::Stream(sse) => sse.plan.is_end() && !sse.resetting,
            Self::Stalled(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Self::Stream(_) | Self::Stalled(_) => SizeHint::default(),
        }
    }
}

// === impl SseBody ===

impl SseBody {
    fn poll_event(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if self.waiting {
            if let Some(sleep) = self.sleep.as_mut() {
                ready!(sleep.as_mut().poll(cx));
            }
            self.waiting = false;
        }
        if self.resetting {
            return Poll::Ready(Some(Err(BodyError::Reset)));
        }
        match self.plan.next_event() {
            None => Poll::Ready(None),
            // The stream just stops, as if the provider had finished: the terminating chunk
            // goes out, but no finish reason and no `[DONE]` / `message_stop` came before it.
            Some(StreamEvent::Reset) if self.clean_cut => Poll::Ready(None),
            Some(StreamEvent::Reset) => {
                // Frames handed to hyper sit in its write buffer (HTTP/1.1) or in the
                // connection task's queue (HTTP/2) and are dropped if the body fails at once;
                // stall briefly so the chunks meant to precede the cut reach the client.
                self.resetting = true;
                self.arm(RESET_FLUSH);
                self.poll_event(cx)
            }
            Some(StreamEvent::Frame(bytes)) => {
                if !self.delay.is_zero() && !self.plan.is_end() {
                    self.arm(self.delay);
                }
                Poll::Ready(Some(Ok(Frame::data(bytes))))
            }
        }
    }

    fn arm(&mut self, delay: Duration) {
        let deadline = Instant::now() + delay;
        match self.sleep.as_mut() {
            Some(sleep) => sleep.as_mut().reset(deadline),
            None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
        self.waiting = true;
    }
}

// === impl BodyError ===

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Reset => f.write_str("stream reset on request (x-mock-reset-after)"),
        }
    }
}

impl std::error::Error for BodyError {}
