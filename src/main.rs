// No unsafe code but the one call below, which sets mimalloc's purge delay (see there).
#![deny(unsafe_code)]

// mimalloc: the embedded simulator parses and drops JSON for thousands of objects a second,
// where the system allocator spent a third of the time (measured with `upgrade_bench`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    purge_freed_memory_at_once();
    asm_canary::cli::main()
}

/// Freed memory goes back to the OS at once (mimalloc's `purge_delay` 0), unless the user
/// set `MIMALLOC_PURGE_DELAY`. mimalloc keeps freed pages for 10 ms (v2; a second in v3),
/// counted only when a thread next allocates: idle threads held tens of MB they had freed.
/// The tool's peak RSS on the `large` scenario (`upgrade_bench 200 --tool-only`): 143–150
/// MiB with v3's default, 106–113 with v2's, 80–83 with 0, in the same wall time (40–52 s).
///
/// The one `unsafe` of the binary: mimalloc sets options only through this C call (or the
/// environment, read before `main`, which a process cannot set for itself without `unsafe`
/// either); neither the `mimalloc` crate nor `libmimalloc-sys` wraps it safely.
#[allow(unsafe_code)]
fn purge_freed_memory_at_once() {
    unsafe extern "C" {
        /// `void mi_option_set(mi_option_t option, long value)` from mimalloc.h.
        fn mi_option_set(option: core::ffi::c_int, value: core::ffi::c_long);
    }
    /// `mi_option_purge_delay` in mimalloc v2's `mi_option_e` (mimalloc.h), the line the
    /// `v2` feature of the `mimalloc` crate builds.
    const MI_OPTION_PURGE_DELAY: core::ffi::c_int = 15;
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: a plain setter of an integer option, thread-safe in mimalloc, given a valid
        // option index of the linked mimalloc (v2, pinned by the `v2` feature).
        unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
}
