//! The bodies the listener hands out and takes back: a request body read against a deadline,
//! and a response body that gives the request's place back when it ends.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use tokio::time::{Duration, Instant, Sleep};

use super::{Expiry, Listener, ListenerMetrics};
pub use crate::body::BodyTimedOut;
use crate::body::BoxError;

pin_project! {
    /// A request body that must have arrived by a deadline: the earlier of the body read
    /// timeout (from the head) and the request read timeout (from the head's first byte).
    /// Past it, the body ends with [`BodyTimedOut`]. The timer is only set once the body has
    /// to be waited for: a body that came with its head costs none.
    pub struct ReadBody {
        #[pin]
        inner: Incoming,
        deadline: Instant,
        expiry: Expiry,
        after: Duration,
        timer: Option<Pin<Box<Sleep>>>,
        metrics: Arc<ListenerMetrics>,
        timed_out: bool,
    }
}

impl ReadBody {
    pub(super) fn new(
        inner: Incoming,
        deadline: Instant,
        expiry: Expiry,
        after: Duration,
        metrics: Arc<ListenerMetrics>,
    ) -> Self {
        ReadBody {
            inner,
            deadline,
            expiry,
            after,
            timer: None,
            metrics,
            timed_out: false,
        }
    }
}

impl Body for ReadBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if *this.timed_out {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let deadline = *this.deadline;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                *this.timed_out = true;
                this.metrics.timeout(*this.expiry);
                let limit = match this.expiry {
                    Expiry::Request => "--request-read-timeout",
                    _ => "--body-read-timeout",
                };
                Poll::Ready(Some(Err(Box::new(BodyTimedOut {
                    limit,
                    after: *this.after,
                }))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.timed_out || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request's place on its connection and in the listener's in-flight count, given back on
/// drop.
pub(super) struct Release {
    pub(super) conn: Arc<super::connection::ConnState>,
    pub(super) listener: Arc<Listener>,
}

impl Drop for Release {
    fn drop(&mut self) {
        self.listener.request_ended();
        self.conn.end();
    }
}

pin_project! {
    /// A response body that gives the request's place back when it ends, fails or is
    /// dropped: a stream counts as in flight until its last byte.
    pub struct Released<B> {
        #[pin]
        inner: B,
        release: Option<Release>,
    }
}

impl<B> Released<B> {
    pub(super) fn new(inner: B, release: Release) -> Self {
        Released {
            inner,
            release: Some(release),
        }
    }
}

impl<B: Body> Body for Released<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            this.release.take();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
