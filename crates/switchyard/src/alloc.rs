//! The process allocator: jemalloc, with one arena and freed pages returned after a second.
//!
//! Each proxied request allocates some 30 blocks, two of them hyper's 8 KiB read buffers: a
//! keep-alive connection probes its socket while the previous message still holds a slice of
//! the old buffer, so hyper takes a new one. glibc serves 8 KiB from its large-chunk path,
//! consolidating its fast bins first (about 1 200 instructions a request, callgrind), and the
//! musl allocator of the container image is slower still. jemalloc serves that size from a
//! thread cache: 6.6% fewer instructions per proxied request than glibc (callgrind, 3000
//! requests: 189.6M → 177.1M).
//!
//! The options keep memory as low as glibc with the `malloc_trim` thread it needed:
//! - `narenas:1`: jemalloc's default of four arenas per CPU held 67 MiB at the second of three
//!   bursts of 1000 streams and 50 MiB after them; one arena (each thread still has its own
//!   cache in front of it) holds 51 MiB at every burst, as glibc did.
//! - `background_thread:true`, `dirty_decay_ms:1000`, `muzzy_decay_ms:0`: a jemalloc thread
//!   returns pages freed for a second, so RSS after a burst falls back (24 MiB, glibc + trim
//!   24 MiB) without any request path paying for it.
//!
//! - [`release_freed`]: the control plane frees a whole routing table and its working copies
//!   at once after a rebuild (some 15 MiB at 10 000 AIRoutes); it hands those pages back right
//!   away rather than a second later.
//!
//! `_RJEM_MALLOC_CONF` in the environment (jemalloc's `MALLOC_CONF`, with the prefix
//! `tikv-jemalloc-sys` gives its symbols) still overrides these at start-up. jemalloc does not
//! build for MSVC, where the system allocator stays (see `main.rs`).

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc reads this symbol (by its prefixed name) before `main`: a pointer to a C string
/// (the declaration's `Option<&c_char>` layout, as `tikv-jemalloc-sys` writes it).
#[allow(unsafe_code)] // a symbol exported for the C allocator to find
#[export_name = "_rjem_malloc_conf"]
pub static MALLOC_CONF: Option<&u8> = Some(&OPTIONS.to_bytes_with_nul()[0]);

const OPTIONS: &std::ffi::CStr =
    c"narenas:1,background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0";

/// Returns the arena's freed pages to the system now, rather than after `dirty_decay_ms`:
/// called by the Kubernetes source after each rebuild, which has just freed the previous
/// table. Without it the RSS right after a change at 10 000 AIRoutes is some 12 MiB above
/// the steady state for a second, and stays there while changes keep coming faster than
/// that. Best effort: an error (there is none to expect) leaves the pages to the decay.
#[allow(unsafe_code)] // jemalloc's C control interface
pub fn release_freed() {
    // `arena.<MALLCTL_ARENAS_ALL>.purge`: every arena (there is one).
    const PURGE_ALL: &std::ffi::CStr = c"arena.4096.purge";
    // SAFETY: a NUL-terminated name, and no old or new value (null pointers, length 0), as
    // jemalloc documents for this void control.
    unsafe {
        tikv_jemalloc_sys::mallctl(
            PURGE_ALL.as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        );
    }
}
