//! Gives memory freed after a burst back to the operating system.
//!
//! glibc's allocator keeps freed memory in its heaps and only returns what sits at a heap's
//! top. After a burst of streams (each holds some 60 KiB of connection buffers, mostly
//! untouched) the freed space is reused by whatever comes next and, touched by it, stays
//! resident: 1000 streams read 58 MiB of RSS the first time and 70–73 MiB the second and
//! third, with the same 67 MB in use each time (glibc's `malloc_stats` at each peak).
//! `malloc_trim(0)` releases the free pages inside the heaps as well, so the next burst
//! starts from fresh pages again.
//!
//! A trim walks the heaps with their locks held (4–5 ms on that heap), so it is not run on a
//! clock: only once a burst is over — when the requests in flight have fallen to a quarter of
//! their peak since the last trim — and on a thread of its own, never a runtime worker.

use std::{sync::Arc, time::Duration};

use switchyard_router::TableHandle;

/// How often the requests in flight are looked at.
const EVERY: Duration = Duration::from_secs(1);
/// Bursts smaller than this leave too little behind to be worth a trim.
const MIN_PEAK: i64 = 64;

/// Starts the trimming thread (glibc targets only; musl's allocator returns memory itself).
pub fn start_trimming(table: Arc<TableHandle>) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let spawned = std::thread::Builder::new()
            .name("malloc-trim".into())
            .spawn(move || {
                let mut peak = 0;
                loop {
                    std::thread::sleep(EVERY);
                    let now = in_flight(&table);
                    peak = peak.max(now);
                    if burst_over(peak, now) {
                        trim();
                        peak = now;
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "could not start the malloc_trim thread");
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    drop(table);
}

/// Whether a burst that reached `peak` requests in flight is over at `now`.
fn burst_over(peak: i64, now: i64) -> bool {
    peak >= MIN_PEAK && now <= peak / 4
}

/// Requests in flight, over every backend of the current table (streams until they end).
fn in_flight(table: &TableHandle) -> i64 {
    table
        .load()
        .backends()
        .iter()
        .map(|b| i64::from(b.state().in_flight()))
        .sum()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim() {
    let started = std::time::Instant::now();
    // SAFETY: malloc_trim has no preconditions; it only shrinks the allocator's own heaps,
    // taking their locks like any malloc call.
    let released = unsafe { libc::malloc_trim(0) };
    tracing::debug!(released, took = ?started.elapsed(), "returned free heap pages (malloc_trim)");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_once_a_large_burst_has_drained() {
        assert!(!burst_over(10, 0), "small bursts are left alone");
        assert!(!burst_over(1000, 900), "still busy");
        assert!(burst_over(1000, 250));
        assert!(burst_over(64, 0));
    }
}
