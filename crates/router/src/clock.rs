//! The process-wide millisecond clock every timestamp of the live state is kept in.

use std::{sync::OnceLock, time::Instant};

/// Milliseconds since an arbitrary process-wide origin: the clock for every timestamp the live
/// state keeps in an atomic.
pub fn now_ms() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(Instant::now);
    // +1 so that 0 can mean "never".
    Instant::now().duration_since(origin).as_millis() as u64 + 1
}
