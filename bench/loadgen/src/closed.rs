//! Closed loop: a fixed number of connections, each sending its next request as soon as the
//! previous answer has fully arrived. Measures throughput; latency here includes no queueing.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use crate::{
    conn::{Sender, Target},
    stats::Samples,
    Window,
};

/// Pause after a failed connect, so a dead target is not hammered in a tight loop.
const RECONNECT_PAUSE: Duration = Duration::from_millis(10);

/// Runs `connections` loops over `window`; returns the samples and the end of the last
/// measured request.
pub async fn run(target: Arc<Target>, connections: usize, window: Window) -> (Samples, Instant) {
    let issued = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(connections);
    for _ in 0..connections {
        let target = target.clone();
        let issued = issued.clone();
        tasks.push(tokio::spawn(worker(target, issued, window)));
    }
    let mut all = Samples::default();
    let mut last_end = window.record_from;
    for t in tasks {
        if let Ok((samples, end)) = t.await {
            all.merge(samples);
            last_end = last_end.max(end);
        }
    }
    (all, last_end)
}

async fn worker(target: Arc<Target>, issued: Arc<AtomicU64>, w: Window) -> (Samples, Instant) {
    let mut samples = Samples::default();
    let mut sender: Option<Sender> = None;
    let mut last_end = w.record_from;
    loop {
        let now = Instant::now();
        if now >= w.end || issued.load(Ordering::Relaxed) >= w.max_requests {
            break;
        }
        let s = match sender.as_mut() {
            Some(s) => s,
            None => match target.connect().await {
                Ok(s) => sender.insert(s),
                Err(f) => {
                    if now >= w.record_from {
                        f.count(&mut samples.errors);
                    }
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                    continue;
                }
            },
        };
        let start = Instant::now();
        let measured = start >= w.record_from;
        if measured {
            issued.fetch_add(1, Ordering::Relaxed);
        }
        match target.exchange(s).await {
            Ok(a) => {
                if measured {
                    samples.push(a.first_byte - start, a.end - start, a.bytes);
                    last_end = last_end.max(a.end);
                }
            }
            Err(f) => {
                if measured {
                    f.count(&mut samples.errors);
                }
                if !f.keeps_connection() {
                    sender = None;
                }
            }
        }
    }
    (samples, last_end)
}
