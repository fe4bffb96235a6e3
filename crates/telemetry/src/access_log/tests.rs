use std::sync::mpsc;

use super::*;

/// A sink the test can read, shared with the writer thread.
#[derive(Clone, Default)]
struct Memory(Arc<Mutex<Vec<u8>>>);

impl Write for Memory {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Memory {
    fn lines(&self) -> Vec<String> {
        let bytes = self.0.lock().unwrap().clone();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

fn sample(id: &str) -> AccessLine<'_> {
    AccessLine {
        request_id: id,
        operation: "chat",
        consumer: "team-a/app",
        route: "default/chat",
        requested_model: "gpt-4o-mini \"quoted\"\n\u{1}é",
        upstream_model: "mock-model",
        backend: "default/mock",
        provider: "openai",
        attempts: 2,
        status: 200,
        error: "",
        input_tokens: 12,
        output_tokens: 7,
        cached_input_tokens: 0,
        cache_write_tokens: 0,
        cost_usd: Some(0.000_123_4),
        duration_ms: 1.234_567,
        ttft_ms: Some(0.5),
        dropped: Some("tools[5](web_search)"),
        trace_id: None,
    }
}

/// What the `tracing-subscriber` JSON layer wrote for the same fields (the format before
/// this writer), with the timestamp cut out.
fn tracing_line(l: &AccessLine<'_>) -> String {
    use tracing_subscriber::fmt::MakeWriter;
    use tracing_subscriber::prelude::*;
    #[derive(Clone, Default)]
    struct Out(Memory);
    impl<'a> MakeWriter<'a> for Out {
        type Writer = Memory;
        fn make_writer(&'a self) -> Memory {
            self.0.clone()
        }
    }
    let out = Out::default();
    let layer = tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_target(false)
        .with_writer(out.clone());
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        tracing::info!(
            target: "switchyard::access",
            request_id = l.request_id,
            operation = l.operation,
            consumer = l.consumer,
            route = l.route,
            requested_model = l.requested_model,
            upstream_model = l.upstream_model,
            backend = l.backend,
            provider = l.provider,
            attempts = l.attempts,
            status = l.status,
            error = l.error,
            input_tokens = l.input_tokens,
            output_tokens = l.output_tokens,
            cached_input_tokens = l.cached_input_tokens,
            cache_write_tokens = l.cache_write_tokens,
            // The samples all have a price; an unknown one is written as `null`.
            cost_usd = l.cost_usd.unwrap_or_default(),
            duration_ms = l.duration_ms,
            ttft_ms = l.ttft_ms,
            dropped = l.dropped,
            trace_id = l.trace_id,
            "request"
        );
    });
    let line = out.0.lines().remove(0);
    without_timestamp(&line)
}

fn without_timestamp(line: &str) -> String {
    let start = line.find("\"timestamp\":\"").unwrap() + 13;
    let end = start + line[start..].find('"').unwrap();
    format!("{}{}", &line[..start], &line[end..])
}

fn ours(l: &AccessLine<'_>) -> String {
    let mut out = Vec::new();
    l.write_json(SystemTime::now(), &mut out);
    without_timestamp(&String::from_utf8(out).unwrap())
}

#[test]
fn line_is_what_the_tracing_json_formatter_wrote() {
    let full = sample("req-1");
    let bare = AccessLine {
        request_id: "req-2",
        ttft_ms: None,
        dropped: None,
        trace_id: None,
        cost_usd: Some(0.0),
        duration_ms: 1e-7,
        ..full
    };
    let traced = AccessLine {
        trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736"),
        status: 502,
        error: "upstream_error",
        cost_usd: Some(12345678.5),
        duration_ms: f64::NAN,
        input_tokens: u64::MAX,
        ..full
    };
    for l in [full, bare, traced] {
        assert_eq!(ours(&l), tracing_line(&l));
    }
}

#[test]
fn timestamps_are_rfc3339_with_microseconds() {
    let cases = [
        (0, 0, "1970-01-01T00:00:00.000000Z"),
        (951_782_400, 7, "2000-02-29T00:00:00.000007Z"),
        (1_796_240_881, 123_456, "2026-12-02T19:48:01.123456Z"),
        (1_796_240_881, 999_999, "2026-12-02T19:48:01.999999Z"),
        (1_796_240_882, 0, "2026-12-02T19:48:02.000000Z"),
        (4_102_444_799, 999_999, "2099-12-31T23:59:59.999999Z"),
    ];
    // Forwards, backwards and the same second twice: the per-thread second cache must
    // never leak one second's text into another.
    for (secs, micros, want) in cases.iter().chain(cases.iter().rev()).copied() {
        let t = UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros);
        let mut out = Vec::new();
        timestamp(t, &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), want);
    }
}

#[test]
fn every_line_arrives_and_shutdown_flushes() {
    let sink = Memory::default();
    let log = Arc::new(AccessLog::new(&Registry::new(), sink.clone()).unwrap());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for i in 0..2_500 {
                    log.log(&sample(&format!("t{t}-{i}")));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // Well within the flush interval: nothing forced a write of the last batch yet.
    log.shutdown();
    let lines = sink.lines();
    assert_eq!(lines.len(), 10_000);
    let mut ids: Vec<_> = lines
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["request_id"].as_str().unwrap().to_string()
        })
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 10_000);
    assert_eq!(log.dropped(), 0);
    // After shutdown a line is counted, not written.
    log.log(&sample("late"));
    assert_eq!(log.dropped(), 1);
}

#[test]
fn a_quiet_log_is_written_on_the_timer() {
    let sink = Memory::default();
    let log = AccessLog::new(&Registry::new(), sink.clone()).unwrap();
    log.log(&sample("one"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while sink.lines().is_empty() {
        assert!(Instant::now() < deadline, "the line was never written");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(sink.lines().len(), 1);
}

/// A sink that blocks until the test lets it go, like a pipe nobody reads.
struct Blocked {
    go: mpsc::Receiver<()>,
    out: Memory,
}

impl Write for Blocked {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = self.go.recv();
        self.out.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_stuck_sink_drops_and_counts_lines_without_blocking_requests() {
    let (go, rx) = mpsc::channel();
    let out = Memory::default();
    let registry = Registry::new();
    let log = AccessLog::with_limits(
        &registry,
        Blocked {
            go: rx,
            out: out.clone(),
        },
        256 * 1024,
    )
    .unwrap();
    let started = Instant::now();
    let n = 20_000;
    for i in 0..n {
        log.log(&sample(&format!("r{i}")));
    }
    // Nothing waited on the sink.
    assert!(started.elapsed() < Duration::from_secs(5));
    let dropped = log.dropped();
    assert!(dropped > 0, "nothing was dropped");
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap();
    assert!(
        text.contains(&format!("switchyard_access_log_dropped_total {dropped}")),
        "{text}"
    );
    // Let every write through: each line is either written or counted, never both.
    drop(go);
    log.shutdown();
    assert_eq!(out.lines().len() as u64 + log.dropped(), n);
}

#[test]
fn an_unknown_cost_is_null_not_zero() {
    let l = AccessLine {
        cost_usd: None,
        cache_write_tokens: 7,
        ..sample("req-9")
    };
    let line = ours(&l);
    assert!(
        line.contains(r#""cache_write_tokens":7,"cost_usd":null,"#),
        "{line}"
    );
}

#[test]
fn a_small_pending_limit_writes_smaller_batches() {
    // With a limit under two batches, a batch waiting for its size would only ever be written
    // by the timer, and lines arriving meanwhile would be dropped at the limit.
    let small = AccessLog::with_limits(&Registry::new(), Memory::default(), 16 * 1024).unwrap();
    assert_eq!(small.shared.batch_bytes, 8 * 1024);
    let default = AccessLog::new(&Registry::new(), Memory::default()).unwrap();
    assert_eq!(default.shared.batch_bytes, AccessLog::BATCH_BYTES);
}

#[test]
fn strings_are_escaped_as_serde_json_escapes_them() {
    // Every ASCII byte and a few multi-byte characters, at every position of an eight-byte
    // word and in the tail after the last whole word.
    let mut chars: Vec<char> = (0u8..0x80).map(char::from).collect();
    chars.extend(['é', '€', '😀', '\u{7f}', '\u{2028}']);
    for c in chars {
        for len in 0..20 {
            for at in 0..len {
                let s: String = (0..len).map(|i| if i == at { c } else { 'a' }).collect();
                let mut out = Vec::new();
                str_field(&mut out, b"", &s);
                assert_eq!(
                    String::from_utf8(out).unwrap(),
                    serde_json::to_string(&s).unwrap(),
                    "{s:?}"
                );
                let escapes = s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\');
                assert_eq!(needs_escape(s.as_bytes()), escapes, "{s:?}");
            }
        }
    }
}
