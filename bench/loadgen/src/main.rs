//! `switchyard-loadgen`: the load generator behind `make bench` for what `wrk` cannot do —
//! time to first byte, open-loop fixed-rate load timed without coordinated omission, and
//! many slow streams held open at once. Prints one JSON object on stdout.
//!
//! It runs on a single-threaded tokio runtime: the harness pins it to one core shared with
//! the mock upstream, and a second worker thread would only fight the mock for that core.

use std::{
    io::Write as _,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};

use crate::{conn::Target, stats::summary};

mod closed;
mod conn;
mod hold;
mod open;
mod stats;

/// Load generator for Switchyard's benchmarks.
#[derive(Parser)]
#[command(name = "switchyard-loadgen", version)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Fixed number of connections, each sending back to back: throughput and latency.
    Closed {
        #[command(flatten)]
        request: RequestArgs,
        #[command(flatten)]
        run: RunArgs,
        /// Connections (one request in flight on each).
        #[arg(long, default_value_t = 32)]
        connections: usize,
    },
    /// Fixed request rate whatever the target does: latency without coordinated omission.
    Open {
        #[command(flatten)]
        request: RequestArgs,
        #[command(flatten)]
        run: RunArgs,
        /// Requests per second.
        #[arg(long)]
        rate: f64,
        /// Most connections used at once.
        #[arg(long, default_value_t = 64)]
        connections: usize,
    },
    /// Many streams held open together, one connection each.
    Hold {
        #[command(flatten)]
        request: RequestArgs,
        /// Streams to open.
        #[arg(long, default_value_t = 1000)]
        streams: usize,
        /// Spread the stream starts over this many milliseconds.
        #[arg(long, default_value_t = 500)]
        ramp_ms: u64,
    },
}

#[derive(Args)]
struct RequestArgs {
    /// `http://host:port/path`.
    #[arg(long)]
    url: String,
    /// Request body (POSTed as JSON); without a body the request is a GET.
    #[arg(long, conflicts_with = "body_file")]
    body: Option<String>,
    /// Read the request body from this file.
    #[arg(long)]
    body_file: Option<PathBuf>,
    /// Extra request header, `name: value`; repeatable.
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// Per-request time limit, in seconds.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
}

#[derive(Args)]
struct RunArgs {
    /// Measured time, in seconds (after the warm-up).
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Unmeasured time before, in seconds, to open connections and warm pools.
    #[arg(long, default_value_t = 0.5)]
    warmup: f64,
    /// Stop after this many measured requests even if time remains.
    #[arg(long, default_value_t = 2_000_000)]
    max_requests: u64,
}

/// The time bounds shared by the closed and open loops.
#[derive(Clone, Copy)]
pub struct Window {
    /// Requests started from here on are measured.
    pub record_from: Instant,
    /// No request is started from here on.
    pub end: Instant,
    /// No more measured requests than this.
    pub max_requests: u64,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let report = runtime.block_on(run(cli.mode))?;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, &report)?;
    writeln!(out)?;
    Ok(())
}

async fn run(mode: Mode) -> anyhow::Result<Value> {
    match mode {
        Mode::Closed {
            request,
            run,
            connections,
        } => {
            let target = target(&request).await?;
            let window = window(&run)?;
            let (mut s, last_end) = closed::run(target, connections.max(1), window).await;
            let elapsed = last_end.saturating_duration_since(window.record_from);
            Ok(json!({
                "mode": "closed",
                "connections": connections,
                "elapsed_s": elapsed.as_secs_f64(),
                "ok": s.ok(),
                "errors": s.errors.to_json(),
                "error_total": s.errors.total(),
                "rps": per_second(s.ok(), elapsed),
                "bytes": s.bytes,
                "latency_us": summary(&mut s.latency_ns),
                "ttfb_us": summary(&mut s.ttfb_ns),
            }))
        }
        Mode::Open {
            request,
            run,
            rate,
            connections,
        } => {
            anyhow::ensure!(rate > 0.0 && rate.is_finite(), "--rate must be positive");
            let target = target(&request).await?;
            let window = window(&run)?;
            let measured = window.end.saturating_duration_since(window.record_from);
            let grace = Duration::from_secs_f64(request.timeout);
            let mut o = open::run(target, rate, connections.max(1), window, grace).await;
            Ok(json!({
                "mode": "open",
                "rate": rate,
                "connections": connections,
                "elapsed_s": measured.as_secs_f64(),
                "dispatched": o.dispatched,
                "unsent": o.unsent,
                "ok": o.samples.ok(),
                "errors": o.samples.errors.to_json(),
                "error_total": o.samples.errors.total(),
                "rps": per_second(o.samples.ok(), measured),
                "bytes": o.samples.bytes,
                "latency_us": summary(&mut o.samples.latency_ns),
                "ttfb_us": summary(&mut o.samples.ttfb_ns),
                "dispatch_late_us": summary(&mut o.dispatch_late_ns),
            }))
        }
        Mode::Hold {
            request,
            streams,
            ramp_ms,
        } => {
            let target = target(&request).await?;
            let mut o = hold::run(target, streams, Duration::from_millis(ramp_ms)).await;
            Ok(json!({
                "mode": "hold",
                "streams": streams,
                "elapsed_s": o.elapsed.as_secs_f64(),
                "max_open": o.max_open,
                "all_open_after_s": o.all_open_after.map(|d| d.as_secs_f64()),
                "ok": o.samples.ok(),
                "errors": o.samples.errors.to_json(),
                "error_total": o.samples.errors.total(),
                "bytes": o.samples.bytes,
                "latency_us": summary(&mut o.samples.latency_ns),
                "ttfb_us": summary(&mut o.samples.ttfb_ns),
            }))
        }
    }
}

async fn target(r: &RequestArgs) -> anyhow::Result<Arc<Target>> {
    let body = match (&r.body, &r.body_file) {
        (Some(b), _) => Bytes::from(b.clone()),
        (None, Some(path)) => {
            Bytes::from(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?)
        }
        (None, None) => Bytes::new(),
    };
    anyhow::ensure!(
        r.timeout > 0.0 && r.timeout.is_finite(),
        "--timeout must be positive"
    );
    Target::new(&r.url, body, &r.headers, Duration::from_secs_f64(r.timeout)).await
}

fn window(r: &RunArgs) -> anyhow::Result<Window> {
    anyhow::ensure!(
        r.duration > 0.0 && r.duration <= 3600.0,
        "--duration must be in (0, 3600] seconds"
    );
    anyhow::ensure!(
        (0.0..=600.0).contains(&r.warmup),
        "--warmup must be in [0, 600] seconds"
    );
    let record_from = Instant::now() + Duration::from_secs_f64(r.warmup);
    Ok(Window {
        record_from,
        end: record_from + Duration::from_secs_f64(r.duration),
        max_requests: r.max_requests,
    })
}

fn per_second(n: u64, d: Duration) -> f64 {
    let s = d.as_secs_f64();
    if s > 0.0 {
        n as f64 / s
    } else {
        0.0
    }
}
