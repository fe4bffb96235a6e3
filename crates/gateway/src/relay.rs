//! Relays an upstream SSE stream to the client event by event, never buffering the stream:
//! each complete event is forwarded as soon as it has arrived — unchanged when caller and
//! backend share a format (except the extra usage chunk the gateway asked for on the client's
//! behalf), or translated by a [`Transcoder`] when they do not.

use std::{
    future::Future as _,
    pin::Pin,
    task::{ready, Context, Poll},
};

use bytes::{Bytes, BytesMut};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use switchyard_providers::{
    anthropic, openai, sse,
    transcode::{Format, Observed, Transcoder},
    ErrorSource, OpenAiError,
};
use tokio::time::{Duration, Instant, Sleep};

use crate::{body::BoxError, record::Record};

pin_project_lite::pin_project! {
    /// The relaying body. Dropping it (client gone, or stream done) records the request.
    pub struct SseRelay {
        #[pin]
        upstream: Incoming,
        parser: sse::Parser,
        mode: Mode,
        format: Format,
        record: Record,
        idle: Option<Duration>,
        idle_timer: Option<Pin<Box<Sleep>>>,
        deadline: Option<Pin<Box<Sleep>>>,
        done: bool,
        upstream_ended: bool,
    }
}

/// How events are handled.
pub enum Mode {
    /// OpenAI to OpenAI: forward, inspecting usage; drop the usage-only chunk unless asked.
    OpenAi {
        /// The caller asked for the usage chunk.
        client_wants_usage: bool,
    },
    /// Anthropic to Anthropic: forward unchanged, decoding only to learn usage.
    Anthropic(Box<anthropic::StreamDecoder>),
    /// Different formats: translate each event.
    Translate(Box<Transcoder>),
}

impl SseRelay {
    /// Wraps an upstream stream; `format` is the caller's (for error events).
    pub fn new(
        upstream: Incoming,
        mode: Mode,
        format: Format,
        record: Record,
        idle: Option<Duration>,
        deadline: Option<Instant>,
    ) -> Self {
        SseRelay {
            upstream,
            parser: sse::Parser::new(),
            mode,
            format,
            record,
            idle,
            idle_timer: idle.map(|d| Box::pin(tokio::time::sleep(d))),
            deadline: deadline.map(|d| Box::pin(tokio::time::sleep_until(d))),
            done: false,
            upstream_ended: false,
        }
    }
}

/// Decides what to do with one event: forward or translate it, and note usage and first token.
fn on_event(record: &mut Record, mode: &mut Mode, ev: sse::Event) -> Option<Bytes> {
    let client_wants_usage = match mode {
        Mode::OpenAi { client_wants_usage } => *client_wants_usage,
        Mode::Anthropic(decoder) => {
            let mut events = Vec::new();
            decoder.decode(&ev.data, &mut events);
            let mut t = Observed::default();
            for e in events {
                use switchyard_providers::chat::StreamEvent as E;
                match e {
                    E::Start { usage, .. } => t.usage = usage.or(t.usage),
                    E::Usage(u) => t.usage = Some(u),
                    E::Text(_) | E::Reasoning(_) | E::ToolCallStart { .. } => t.content = true,
                    E::Finish { reason, .. } => t.finish = Some(reason),
                    _ => {}
                }
            }
            observe(record, t);
            return Some(ev.raw);
        }
        Mode::Translate(t) => {
            let mut out = Vec::new();
            let seen = t.on_event(&ev.data, &mut out);
            observe(record, seen);
            return (!out.is_empty()).then(|| Bytes::from(out));
        }
    };
    let data = &ev.data[..];
    if data.is_empty() || data == b"[DONE]" {
        return Some(ev.raw);
    }
    let info = openai::inspect_chunk(data);
    if info.usage.is_some() {
        record.usage = info.usage;
    }
    if info.finish_reason.is_some() {
        record.finish_reason = info.finish_reason;
    }
    if info.has_content && record.ttft.is_none() {
        record.ttft = Some(record.start.elapsed());
    }
    if info.usage_only && !client_wants_usage {
        return None;
    }
    Some(ev.raw)
}

/// At upstream end: lets a transcoder close the caller's stream properly.
fn on_end(record: &mut Record, mode: &mut Mode) -> Option<Bytes> {
    match mode {
        Mode::Translate(t) if !t.is_done() => {
            let mut out = Vec::new();
            let seen = t.finish(&mut out);
            observe(record, seen);
            (!out.is_empty()).then(|| Bytes::from(out))
        }
        _ => None,
    }
}

fn observe(record: &mut Record, seen: Observed) {
    if seen.usage.is_some() {
        record.usage = seen.usage;
    }
    if let Some(r) = seen.finish {
        record.finish_reason = Some(openai::chat::finish_to_openai(r).to_string());
    }
    if seen.content && record.ttft.is_none() {
        record.ttft = Some(record.start.elapsed());
    }
}

/// An error event in the caller's format, ending a stream that has already started.
fn error_event(format: Format, message: &str, code: &str) -> Bytes {
    match format {
        Format::OpenAiChat => OpenAiError {
            message,
            source: ErrorSource::Upstream,
            code,
            param: None,
        }
        .to_sse_event(),
        Format::Anthropic => {
            anthropic::error_sse_event("api_error", &format!("{message} ({code})"))
        }
    }
}

impl HttpBody for SseRelay {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        loop {
            // Forward everything complete first; several events may arrive in one read.
            let mut out: Option<Bytes> = None;
            let mut joined: Option<BytesMut> = None;
            while let Some(ev) = this.parser.next_event() {
                if let Some(raw) = on_event(this.record, this.mode, ev) {
                    match (&mut joined, out.take()) {
                        (Some(j), _) => j.extend_from_slice(&raw),
                        (None, Some(prev)) => {
                            let mut j = BytesMut::from(&prev[..]);
                            j.extend_from_slice(&raw);
                            joined = Some(j);
                        }
                        (None, None) => out = Some(raw),
                    }
                }
            }
            if *this.upstream_ended {
                let last = this
                    .parser
                    .finish()
                    .and_then(|ev| on_event(this.record, this.mode, ev));
                for raw in last.into_iter().chain(on_end(this.record, this.mode)) {
                    let j = joined.get_or_insert_with(BytesMut::new);
                    if let Some(prev) = out.take() {
                        j.extend_from_slice(&prev);
                    }
                    j.extend_from_slice(&raw);
                }
                *this.done = true;
            }
            if let Some(j) = joined {
                return Poll::Ready(Some(Ok(Frame::data(j.freeze()))));
            }
            if let Some(b) = out {
                return Poll::Ready(Some(Ok(Frame::data(b))));
            }
            if *this.done {
                return Poll::Ready(None);
            }

            match this.upstream.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        if let Err(e) = this.parser.push(&data) {
                            *this.done = true;
                            this.record.upstream_error("protocol");
                            return Poll::Ready(Some(Ok(Frame::data(error_event(
                                *this.format,
                                &format!("the upstream stream was malformed: {e}"),
                                "upstream_protocol_error",
                            )))));
                        }
                        if let (Some(d), Some(t)) = (*this.idle, this.idle_timer.as_mut()) {
                            t.as_mut().reset(Instant::now() + d);
                        }
                    }
                }
                Poll::Ready(None) => *this.upstream_ended = true,
                Poll::Ready(Some(Err(e))) => {
                    // Once the stream has started there is no retrying: end it with an error
                    // event in the caller's format rather than a silent cut.
                    *this.done = true;
                    this.record.upstream_error("protocol");
                    tracing::warn!(backend = ?this.record.backend, error = %e, "upstream stream broke");
                    return Poll::Ready(Some(Ok(Frame::data(error_event(
                        *this.format,
                        "the upstream connection broke in the middle of the stream",
                        "upstream_stream_interrupted",
                    )))));
                }
                Poll::Pending => {
                    if let Some(t) = this.deadline.as_mut() {
                        if t.as_mut().poll(cx).is_ready() {
                            *this.done = true;
                            this.record.upstream_error("timeout");
                            return Poll::Ready(Some(Ok(Frame::data(error_event(
                                *this.format,
                                "the upstream stream did not finish within the total timeout",
                                "upstream_timeout",
                            )))));
                        }
                    }
                    if let Some(t) = this.idle_timer.as_mut() {
                        ready!(t.as_mut().poll(cx));
                        *this.done = true;
                        this.record.upstream_error("timeout");
                        return Poll::Ready(Some(Ok(Frame::data(error_event(
                                *this.format,
                            "the upstream stream went idle for longer than the backend's idle timeout",
                            "upstream_timeout",
                        )))));
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.parser.pending() == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
