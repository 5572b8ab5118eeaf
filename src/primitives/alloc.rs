//! Settings of mimalloc, the process's allocator (and the script states'), made once at start.

/// `mi_option_purge_delay` in mimalloc.h's `mi_option_e` (the same position in its v2 and v3,
/// which libmimalloc-sys builds; Cargo.lock pins the version).
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

unsafe extern "C" {
    /// mimalloc's `mi_option_set` (mimalloc.h), linked in by libmimalloc-sys.
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

/// Memory a thread frees stays with the process for a second before mimalloc gives it back to
/// the system (10 ms by default), unless `MIMALLOC_PURGE_DELAY` says otherwise. Input batches
/// a worker keeps while event tables read them (`lua::pins`) come back in bursts, when a large
/// script state's collector frees them; given back at once, their pages were faulted in and
/// zeroed again by the next batches (the tuple counter, 1,000,000 events: 4-5 % more events/s
/// with the longer delay, `perf/README.md`).
pub fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one option by its index; mimalloc reads options at each use.
        unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, 1000) };
    }
}
