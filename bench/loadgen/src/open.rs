//! Open loop: requests are dispatched at a fixed rate whatever the target does, and taken by
//! whichever connection is idle. A request that has to wait for a connection is timed from
//! its dispatch, so a slow target pays for the queue it causes (no coordinated omission).
//!
//! Dispatch times come from a plain OS thread sleeping to each deadline (tens of µs of
//! precision), not from the tokio timer, whose 1 ms wheel would bunch requests into bursts.
//! Each request is timed from the moment it was actually dispatched, so the dispatcher's own
//! lateness is not charged to the target; that lateness is reported separately.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::{mpsc, Mutex};

use crate::{
    conn::{Failure, Sender, Target},
    stats::Samples,
    Window,
};

/// One dispatched request.
#[derive(Clone, Copy)]
struct Tick {
    /// When it was dispatched.
    at: Instant,
    /// How late the dispatcher was against the schedule.
    late: Duration,
    /// Whether it falls in the measured window (after warm-up).
    measured: bool,
}

/// What an open-loop run saw.
pub struct Outcome {
    /// Measured requests.
    pub samples: Samples,
    /// Dispatcher lateness against the schedule, one entry per measured request.
    pub dispatch_late_ns: Vec<u64>,
    /// Requests dispatched in the measured window.
    pub dispatched: u64,
    /// Dispatched requests never sent because the run hit its hard stop.
    pub unsent: u64,
}

/// Dispatches `rate` requests per second over `window` onto up to `connections` connections.
/// Workers stop at `window.end + grace` even if requests are still queued.
pub async fn run(
    target: Arc<Target>,
    rate: f64,
    connections: usize,
    window: Window,
    grace: Duration,
) -> Outcome {
    let (tx, rx) = mpsc::unbounded_channel::<Tick>();
    let rx = Arc::new(Mutex::new(rx));
    let hard_stop = window.end + grace;
    let mut tasks = Vec::with_capacity(connections);
    for _ in 0..connections {
        tasks.push(tokio::spawn(worker(target.clone(), rx.clone(), hard_stop)));
    }
    let dispatcher = std::thread::spawn(move || dispatch(tx, rate, window));
    let mut samples = Samples::default();
    let mut late = Vec::new();
    for t in tasks {
        if let Ok((s, l)) = t.await {
            samples.merge(s);
            late.extend(l);
        }
    }
    let dispatched = dispatcher.join().unwrap_or(0);
    let mut unsent = 0;
    while let Ok(tick) = rx.lock().await.try_recv() {
        unsent += u64::from(tick.measured);
    }
    Outcome {
        samples,
        dispatch_late_ns: late,
        dispatched,
        unsent,
    }
}

/// Sleeps to each scheduled time and hands the request over; returns how many measured
/// requests were dispatched.
fn dispatch(tx: mpsc::UnboundedSender<Tick>, rate: f64, w: Window) -> u64 {
    let start = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut measured = 0u64;
    let mut i: u32 = 0;
    loop {
        let due = start + interval * i;
        i = i.saturating_add(1);
        if due >= w.end || measured >= w.max_requests {
            break;
        }
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let at = Instant::now();
        let is_measured = due >= w.record_from;
        measured += u64::from(is_measured);
        let tick = Tick {
            at,
            late: at.saturating_duration_since(due),
            measured: is_measured,
        };
        if tx.send(tick).is_err() {
            break;
        }
    }
    measured
}

async fn worker(
    target: Arc<Target>,
    rx: Arc<Mutex<mpsc::UnboundedReceiver<Tick>>>,
    hard_stop: Instant,
) -> (Samples, Vec<u64>) {
    let mut samples = Samples::default();
    let mut late = Vec::new();
    let mut sender: Option<Sender> = None;
    loop {
        // Only an idle worker waits for the next tick, so a tick goes to a free connection
        // when there is one.
        let next = {
            let mut rx = rx.lock().await;
            tokio::time::timeout_at(hard_stop.into(), rx.recv()).await
        };
        let Ok(Some(tick)) = next else { break };
        let mut result = Err(Failure::Connect);
        // One reconnect attempt per request: a fresh connection after a broken one.
        for _ in 0..2 {
            let s = match sender.as_mut() {
                Some(s) => s,
                None => match target.connect().await {
                    Ok(s) => sender.insert(s),
                    Err(f) => {
                        result = Err(f);
                        continue;
                    }
                },
            };
            result = target.exchange(s).await;
            match result {
                // A kept-alive connection the server closed while idle: retry once on a
                // fresh one (the time spent stays charged to this request).
                Err(Failure::Io) => sender = None,
                Err(f) if !f.keeps_connection() => {
                    sender = None;
                    break;
                }
                _ => break,
            }
        }
        if !tick.measured {
            continue;
        }
        match result {
            Ok(a) => {
                samples.push(a.first_byte - tick.at, a.end - tick.at, a.bytes);
                late.push(u64::try_from(tick.late.as_nanos()).unwrap_or(u64::MAX));
            }
            Err(f) => f.count(&mut samples.errors),
        }
    }
    (samples, late)
}
