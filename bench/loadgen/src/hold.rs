//! Held streams: open many slow streams at once, one connection each, ramped in over a short
//! period, and keep them all open together, so the proxy's memory and CPU per open stream can
//! be read while they are.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::{Duration, Instant},
};

use crate::{conn::Target, stats::Samples};

/// What a held-streams run saw.
pub struct Outcome {
    /// One sample per completed stream (time from its own start).
    pub samples: Samples,
    /// Most streams open (headers received, body not finished) at the same time.
    pub max_open: usize,
    /// When every stream was first open at once, from the start of the run.
    pub all_open_after: Option<Duration>,
    /// Start of the run to the end of the last stream.
    pub elapsed: Duration,
}

/// Opens `streams` streams spread evenly over `ramp` and waits for all of them to end.
pub async fn run(target: Arc<Target>, streams: usize, ramp: Duration) -> Outcome {
    let start = Instant::now();
    let open = Arc::new(AtomicUsize::new(0));
    let max_open = Arc::new(AtomicUsize::new(0));
    let all_open_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let mut tasks = Vec::with_capacity(streams);
    for i in 0..streams {
        let at = start + ramp.mul_f64(i as f64 / streams.max(1) as f64);
        let target = target.clone();
        let (open, max_open, all_open_at) = (open.clone(), max_open.clone(), all_open_at.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            let mut samples = Samples::default();
            let begun = Instant::now();
            let mut sender = match target.connect().await {
                Ok(s) => s,
                Err(f) => {
                    f.count(&mut samples.errors);
                    return samples;
                }
            };
            // Counted open from the request on: the proxy holds the stream from then.
            let now_open = open.fetch_add(1, Ordering::AcqRel) + 1;
            if max_open.fetch_max(now_open, Ordering::AcqRel) < now_open && now_open == streams {
                *all_open_at.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
            }
            let result = target.exchange(&mut sender).await;
            open.fetch_sub(1, Ordering::AcqRel);
            match result {
                Ok(a) => samples.push(a.first_byte - begun, a.end - begun, a.bytes),
                Err(f) => f.count(&mut samples.errors),
            }
            samples
        }));
    }
    let mut samples = Samples::default();
    for t in tasks {
        if let Ok(s) = t.await {
            samples.merge(s);
        }
    }
    let all_open_after = all_open_at
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .map(|t| t - start);
    Outcome {
        samples,
        max_open: max_open.load(Ordering::Acquire),
        all_open_after,
        elapsed: start.elapsed(),
    }
}
