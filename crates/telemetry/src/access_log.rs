//! The access log: one JSON line per request, written off the request path.
//!
//! A request formats its line into a per-thread buffer (no allocation once warm) and appends
//! it to a shared batch under a lock held only for the copy. A background thread writes the
//! batch to the sink (stdout) when it reaches [`AccessLog::BATCH_BYTES`] (less when the pending
//! limit is small), or at the latest
//! [`AccessLog::FLUSH_INTERVAL`] after its first line, and once more at shutdown
//! ([`AccessLog::shutdown`]). So a request never waits on stdout, and the cost per line is the
//! formatting and a `memcpy`, not a write system call.
//!
//! When the sink cannot keep up (a pipe nobody reads, a stalled log collector), lines wait in
//! memory up to [`AccessLog::MAX_PENDING_BYTES`]; beyond that new lines are dropped and counted
//! in `switchyard_access_log_dropped_total` (as are lines a failed write lost), so a stuck sink
//! costs bounded memory and shows on the dashboard instead of slowing or stopping requests.
//!
//! The line is byte for byte what the `tracing-subscriber` JSON formatter wrote before (same
//! keys, same order, same number and string encoding), so log pipelines parsing it are
//! unaffected.

use std::cell::{Cell, RefCell};
use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus::{IntCounter, Opts, Registry};

/// The fields of one access log line, borrowed from the request's record.
#[derive(Debug, Clone, Copy, Default)]
pub struct AccessLine<'a> {
    /// The request id sent back to the caller and upstream.
    pub request_id: &'a str,
    /// GenAI operation name (`chat`, `text_completion`, `embeddings`).
    pub operation: &'a str,
    /// Consumer `namespace/name`, or empty.
    pub consumer: &'a str,
    /// Route `namespace/name`, or empty.
    pub route: &'a str,
    /// The model as the client sent it (bounded by the caller).
    pub requested_model: &'a str,
    /// The model sent upstream on the last attempt.
    pub upstream_model: &'a str,
    /// Backend `namespace/name` of the last attempt.
    pub backend: &'a str,
    /// Provider of the last attempt.
    pub provider: &'a str,
    /// Upstream attempts made.
    pub attempts: u32,
    /// Status sent to the client.
    pub status: u16,
    /// The error code sent, or empty.
    pub error: &'a str,
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Input tokens read from the prompt cache.
    pub cached_input_tokens: u64,
    /// Input tokens written to the prompt cache.
    pub cache_write_tokens: u64,
    /// Spend in USD; `None` (written as `null`) when the model has no known price.
    pub cost_usd: Option<f64>,
    /// Request duration in milliseconds.
    pub duration_ms: f64,
    /// Time to first token in milliseconds (streams); absent from the line when `None`.
    pub ttft_ms: Option<f64>,
    /// Fields translation dropped; absent when `None`.
    pub dropped: Option<&'a str>,
    /// The W3C trace id when tracing is on; absent when `None`.
    pub trace_id: Option<&'a str>,
}

/// The buffered, non-blocking access log writer. Cheap to share behind an `Arc`.
pub struct AccessLog {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    dropped: IntCounter,
    max_pending: usize,
    /// [`AccessLog::BATCH_BYTES`], or half the pending limit when that is smaller: a batch
    /// that could never reach its size would leave the writer waiting for its timer while
    /// new lines are dropped at the limit.
    batch_bytes: usize,
}

struct State {
    /// Lines waiting for the writer thread, newline-terminated.
    batch: Vec<u8>,
    /// The writer sleeps until the next line arrives (the batch was empty).
    idle: bool,
    /// The writer was told the batch is full enough to write now.
    kicked: bool,
    /// Shutdown asked: write what is left and stop.
    stop: bool,
    /// The writer thread has written everything and stopped.
    finished: bool,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog")
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

/// `,"name":` as one literal, so a key is one copy.
macro_rules! key {
    ($name:literal) => {
        concat!(",\"", $name, "\":").as_bytes()
    };
}

// === impl AccessLine ===

impl AccessLine<'_> {
    /// Appends the JSON line (without the newline) stamped with `now`.
    pub fn write_json(&self, now: SystemTime, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"timestamp\":\"");
        timestamp(now, out);
        out.extend_from_slice(b"\",\"level\":\"INFO\",\"message\":\"request\"");
        str_field(out, key!("request_id"), self.request_id);
        str_field(out, key!("operation"), self.operation);
        str_field(out, key!("consumer"), self.consumer);
        str_field(out, key!("route"), self.route);
        str_field(out, key!("requested_model"), self.requested_model);
        str_field(out, key!("upstream_model"), self.upstream_model);
        str_field(out, key!("backend"), self.backend);
        str_field(out, key!("provider"), self.provider);
        uint_field(out, key!("attempts"), u64::from(self.attempts));
        uint_field(out, key!("status"), u64::from(self.status));
        str_field(out, key!("error"), self.error);
        uint_field(out, key!("input_tokens"), self.input_tokens);
        uint_field(out, key!("output_tokens"), self.output_tokens);
        uint_field(out, key!("cached_input_tokens"), self.cached_input_tokens);
        uint_field(out, key!("cache_write_tokens"), self.cache_write_tokens);
        match self.cost_usd {
            Some(c) => float_field(out, key!("cost_usd"), c),
            None => {
                out.extend_from_slice(key!("cost_usd"));
                out.extend_from_slice(b"null");
            }
        }
        float_field(out, key!("duration_ms"), self.duration_ms);
        if let Some(t) = self.ttft_ms {
            float_field(out, key!("ttft_ms"), t);
        }
        if let Some(d) = self.dropped {
            str_field(out, key!("dropped"), d);
        }
        if let Some(t) = self.trace_id {
            str_field(out, key!("trace_id"), t);
        }
        out.push(b'}');
    }
}

/// A JSON string with serde_json's escaping (the encoding the old formatter used).
fn str_field(out: &mut Vec<u8>, key: &[u8], value: &str) {
    out.extend_from_slice(key);
    // Names, ids and models almost never need escaping: copy them whole, and leave the
    // rare one that does to serde_json, whose escaping the line must keep.
    if needs_escape(value.as_bytes()) {
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, value);
    } else {
        out.reserve(value.len() + 2);
        out.push(b'"');
        out.extend_from_slice(value.as_bytes());
        out.push(b'"');
    }
}

/// Whether serde_json would escape any byte of `s`: a control byte, `"` or `\`. Eight bytes
/// at a time: the line's strings are ~150 bytes, and a byte loop was a third of its cost.
fn needs_escape(s: &[u8]) -> bool {
    let (words, tail) = s.as_chunks::<8>();
    if words
        .iter()
        .any(|w| json_string_stop(u64::from_le_bytes(*w)) != 0)
    {
        return true;
    }
    // The tail as one more word, padded with a byte that needs no escape.
    let mut last = [b'a'; 8];
    last[..tail.len()].copy_from_slice(tail);
    json_string_stop(u64::from_le_bytes(last)) != 0
}

fn uint_field(out: &mut Vec<u8>, key: &[u8], value: u64) {
    out.extend_from_slice(key);
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// serde_json's float encoding: shortest round-trip digits, `null` when not finite.
fn float_field(out: &mut Vec<u8>, key: &[u8], value: f64) {
    out.extend_from_slice(key);
    let _ = serde_json::to_writer(&mut *out, &value);
}

/// RFC 3339 UTC with microseconds (`2026-12-02T19:48:01.123456Z`), as `tracing-subscriber`'s
/// system-time formatter writes it.
fn timestamp(now: SystemTime, out: &mut Vec<u8>) {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    // Lines come thousands a second: the date and time to the second is computed once a
    // second per thread, and only the microseconds per line.
    SECOND.with(|cached| {
        let (at, text) = cached.get();
        let text = if at == secs && text[0] != 0 {
            text
        } else {
            let text = to_the_second(secs);
            cached.set((secs, text));
            text
        };
        out.extend_from_slice(&text);
    });
    out.push(b'.');
    digits(out, u64::from(since.subsec_micros()), 6);
    out.push(b'Z');
}

/// `YYYY-MM-DDTHH:MM:SS` for `secs` after the epoch.
fn to_the_second(secs: u64) -> [u8; 19] {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    let mut text = Vec::with_capacity(24);
    digits(&mut text, year.clamp(0, 9999) as u64, 4);
    let sep = [b'-', b'-', b'T', b':', b':'];
    let parts = [
        month as u64,
        day as u64,
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
    ];
    for (s, v) in sep.iter().zip(parts) {
        text.push(*s);
        digits(&mut text, v, 2);
    }
    let mut fixed = [0; 19];
    fixed.copy_from_slice(&text[..19]);
    fixed
}

/// `v` in decimal, zero-padded to at least `width` digits.
fn digits(out: &mut Vec<u8>, mut v: u64, width: usize) {
    let mut buf = [b'0'; 20];
    let mut i = buf.len();
    while v > 0 {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
    }
    out.extend_from_slice(&buf[(buf.len() - width).min(i)..]);
}

use switchyard_types::{civil::civil_from_days, swar::json_string_stop};

// === impl AccessLog ===

thread_local! {
    /// Each request thread formats into its own buffer, reused line after line.
    static LINE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// The last second [`timestamp`] wrote, and its text (all zero before the first).
    static SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((0, [0; 19])) };
}

impl AccessLog {
    /// The writer writes once this much is waiting, without waiting for the timer. Each
    /// wake-up of the writer costs it 10–20 µs and a file write costs less per byte the larger
    /// it is: on the bench's non-streaming load (≈470-byte lines, a file sink) its CPU per line
    /// was ~700 ns with 64 KiB batches, ~360 with 256 KiB and ~300 with 512 KiB or 1 MiB. 512
    /// KiB keeps the batch and its spare (1 MiB together) within one core's L2.
    pub const BATCH_BYTES: usize = 512 * 1024;
    /// The longest a line waits before it is written (when fewer than
    /// [`Self::BATCH_BYTES`] are waiting).
    pub const FLUSH_INTERVAL: Duration = Duration::from_millis(200);
    /// Most bytes held while the sink is slow; further lines are dropped and counted. About
    /// 20 000 lines: several seconds of a stalled sink at full load.
    pub const MAX_PENDING_BYTES: usize = 8 * 1024 * 1024;
    /// Longest [`Self::shutdown`] waits for the sink to take the last lines.
    pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

    /// Starts the writer thread over `sink` (stdout in the binary) and registers
    /// `switchyard_access_log_dropped_total` into `registry`.
    pub fn new<W: Write + Send + 'static>(
        registry: &Registry,
        sink: W,
    ) -> Result<Self, prometheus::Error> {
        Self::with_limits(registry, sink, Self::MAX_PENDING_BYTES)
    }

    /// [`AccessLog::new`] holding at most `max_pending` bytes for a slow sink.
    pub fn with_limits<W: Write + Send + 'static>(
        registry: &Registry,
        sink: W,
        max_pending: usize,
    ) -> Result<Self, prometheus::Error> {
        let dropped = IntCounter::with_opts(Opts::new(
            "switchyard_access_log_dropped_total",
            "Access log lines dropped because the log sink (stdout) did not keep up or failed.",
        ))?;
        registry.register(Box::new(dropped.clone()))?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                batch: Vec::new(),
                idle: false,
                kicked: false,
                stop: false,
                finished: false,
            }),
            wake: Condvar::new(),
            dropped,
            max_pending,
            batch_bytes: Self::BATCH_BYTES.min(max_pending / 2).max(1),
        });
        let worker = Arc::clone(&shared);
        let writer = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || worker.run(sink))
            .map_err(prometheus::Error::Io)?;
        Ok(AccessLog {
            shared,
            writer: Mutex::new(Some(writer)),
        })
    }

    /// Queues one request's line. Never blocks on the sink.
    pub fn log(&self, line: &AccessLine<'_>) {
        let now = SystemTime::now();
        LINE.with(|buf| match buf.try_borrow_mut() {
            Ok(mut buf) => {
                buf.clear();
                line.write_json(now, &mut buf);
                buf.push(b'\n');
                self.shared.push(&buf);
            }
            // Only reachable if logging re-entered itself on this thread.
            Err(_) => {
                let mut buf = Vec::with_capacity(512);
                line.write_json(now, &mut buf);
                buf.push(b'\n');
                self.shared.push(&buf);
            }
        });
    }

    /// Lines dropped so far.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.get()
    }

    /// Writes every queued line and stops the writer thread; later lines are dropped and
    /// counted. Called once the drain has finished; safe to call more than once. Waits at
    /// most [`Self::SHUTDOWN_TIMEOUT`] for a sink that does not take the lines (a pipe nobody
    /// reads would otherwise keep the process from exiting); what is still queued then is
    /// counted as dropped.
    pub fn shutdown(&self) {
        let handle = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(handle) = handle else { return };
        let mut s = self.shared.lock();
        s.stop = true;
        self.shared.wake.notify_all();
        let deadline = Instant::now() + Self::SHUTDOWN_TIMEOUT;
        while !s.finished {
            let now = Instant::now();
            if now >= deadline {
                let lost = s.batch.iter().filter(|&&b| b == b'\n').count();
                s.batch.clear();
                drop(s);
                self.shared.dropped.inc_by(lost as u64);
                tracing::warn!(
                    lost,
                    "the access log sink did not take the last lines in time; exiting without them"
                );
                return;
            }
            s = self
                .shared
                .wake
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        drop(s);
        let _ = handle.join();
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        self.shutdown();
    }
}

// === impl Shared ===

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves a batch of whole lines: keep going.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, line: &[u8]) {
        let mut s = self.lock();
        if s.stop || s.batch.len() + line.len() > self.max_pending {
            drop(s);
            self.dropped.inc();
            return;
        }
        let was_empty = s.batch.is_empty();
        s.batch.extend_from_slice(line);
        // Wake the writer only on the transitions it waits for, so most lines make no
        // system call: the first line of a batch (it sleeps without a timer while nothing
        // waits) and the batch reaching its size.
        let first = was_empty && s.idle;
        let full = !s.kicked && s.batch.len() >= self.batch_bytes;
        if first || full {
            s.idle = false;
            s.kicked |= full;
            drop(s);
            self.wake.notify_one();
        }
    }

    fn run<W: Write>(&self, mut sink: W) {
        let mut spare = Vec::new();
        let mut s = self.lock();
        loop {
            while s.batch.is_empty() && !s.stop {
                s.idle = true;
                s = self.wake.wait(s).unwrap_or_else(PoisonError::into_inner);
            }
            s.idle = false;
            if s.batch.is_empty() {
                // Stopping, and nothing left.
                s.finished = true;
                drop(s);
                self.wake.notify_all();
                return;
            }
            // Let the batch grow until it is big enough or its first line is old enough.
            let deadline = Instant::now() + AccessLog::FLUSH_INTERVAL;
            while !s.stop && s.batch.len() < self.batch_bytes {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                s = self
                    .wake
                    .wait_timeout(s, deadline - now)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            std::mem::swap(&mut s.batch, &mut spare);
            s.kicked = false;
            drop(s);
            if sink.write_all(&spare).and_then(|()| sink.flush()).is_err() {
                let lost = spare.iter().filter(|&&b| b == b'\n').count();
                self.dropped.inc_by(lost as u64);
            }
            spare.clear();
            // A stall can grow the batch to the pending limit; do not keep that much.
            if spare.capacity() > 4 * self.batch_bytes {
                spare = Vec::with_capacity(self.batch_bytes);
            }
            s = self.lock();
        }
    }
}

#[cfg(test)]
mod tests;
