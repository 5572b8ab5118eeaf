//! The worker context: what the engine keeps per worker for its scripts (their states, output
//! batches, the pipelining window, the member cache, Redis connections, timers, counters), and
//! the one way code called by Lua reaches it.
//!
//! The worker loop owns its `WorkerCtx` and passes `&mut WorkerCtx` explicitly. C functions
//! and FFI functions called by scripts cannot be handed a reference, so whenever the worker
//! runs Lua it *lends* the context ([`WorkerCtx::lend`]): a guard puts a pointer to it in a
//! thread-local for the duration of the call and restores the previous value on drop (as
//! tokio's runtime context does). Code called by Lua reaches the context only through
//! [`with_ctx`], which takes the pointer out of the thread-local for the closure's duration:
//! a nested `with_ctx` (say, from a finalizer that an allocation inside the closure ran) finds
//! none and panics, which the boundary turns into a script error, never a second `&mut`. A
//! closure given to `with_ctx` must not run Lua code; code that must, lends the context again.

use std::cell::Cell;
use std::collections::VecDeque;
use std::ffi::c_int;

use super::json::Encoder;
use super::member_cache::MemberCache;
use super::state::{Role, Script};
use crate::event::EventMeta;
use crate::shard::{NO_INPUT, OutBatch, OutRec};

/// Queue entry meaning "the current event, unchanged" (not a registry reference).
pub(crate) const UNCHANGED_EVENT: c_int = c_int::MIN;

/// Most analyzer hops one input event may cause (guards against `analyze_event` cycles).
pub(crate) const MAX_HOPS: u32 = 10_000;

/// One event of a window: its pending analyzer calls, its records (emitted in event order
/// once the window is done) and the coroutine it is suspended in, if any.
#[derive(Default)]
pub(crate) struct WinEvent {
    pub(super) meta: EventMeta,
    pub(super) id: f64,
    pub(super) line: (usize, usize),
    pub(super) root: usize,
    pub(super) queue: VecDeque<(u32, c_int)>,
    /// Its records (their bytes are in the output batch already).
    pub(super) recs: Vec<OutRec>,
    /// The analyzer and the registry reference of the suspended coroutine.
    pub(super) co: Option<(u32, c_int)>,
    /// The pipelined command the suspended coroutine waits for (0: it yielded by itself).
    pub(super) ticket: u64,
    /// When the suspended coroutine's `loop()` started (`lat_start_call`).
    pub(super) co_t0: u64,
    pub(super) hops: u32,
    /// Whether it has started a pipelined call (its later calls keep window order).
    pub(super) piped: bool,
    /// The value the running pipelined call got, kept (registry reference in its analyzer's
    /// state) for its `on_error`.
    pub(super) err_ref: Option<c_int>,
    /// That value as `lua_topointer` gives it, and whether the call passed it where its
    /// `on_error` would (see `WorkerCtx::call_value`), across its suspensions.
    pub(super) value_ptr: usize,
    pub(super) passed_on: bool,
}

impl WinEvent {
    pub(super) fn done(&self) -> bool {
        self.co.is_none() && self.queue.is_empty()
    }
}

/// Counters of one worker, published to the engine after each batch.
#[derive(Default, Clone, Debug)]
pub struct WorkerCounters {
    pub events: u64,
    /// Lines that were no event (invalid, too long), reported: progress too.
    pub line_reports: u64,
    /// `events + line_reports` at the last publication (progress is a change of it).
    pub handled_published: u64,
    pub unknown_tags: u64,
    pub encode_errors: u64,
    /// Analyzer calls dropped past `MAX_HOPS` for one input event.
    pub hop_limit: u64,
}

/// Everything the `dragonfly` functions need on a worker.
pub struct WorkerCtx {
    pub filters: Vec<Script>,
    pub analyzers: Vec<Script>,
    pub input_tags: Vec<String>,
    pub(super) analyzer_tags: Vec<String>,
    /// User output tags, in config.lua's order (`OutputId::user` numbers them).
    pub(super) output_tags: Vec<String>,
    /// Analyzer calls queued by `analyze_event` from `setup()` or a timer, outside any event:
    /// (analyzer, registry ref in its state). Calls made during an event queue on its window
    /// entry.
    pub(super) queue: VecDeque<(u32, c_int)>,
    pub cache: MemberCache,
    pub scratch: Vec<u8>,
    /// Unescaped string values handed to the FFI field lookup.
    pub(crate) value_scratch: super::member_cache::ValueBuf,
    pub enc: Encoder,
    /// Output batches under construction, one per input, plus one for records written
    /// outside any event (last).
    pub outs: Vec<OutBatch>,
    pub counters: WorkerCounters,
    /// Redis connections of this worker's scripts.
    pub redis: super::redis_conn::RedisState,
    /// Events in flight together when some analyzer pipelines (see `process_window`).
    pub(super) window: Vec<WinEvent>,
    /// The lowest window event not finished yet.
    pub(super) first_open: usize,
    /// The window event being run, if any: its records and analyzer calls go to it.
    pub cur_win: Option<usize>,
    /// The coroutine of the window event whose pipelined call is running (null otherwise):
    /// only a Redis command issued on exactly this thread is queued; any other runs at once.
    pub(super) cur_co: *mut mlua::ffi::lua_State,
    /// The table the running `loop()` got when its `on_error` keeps it, as `lua_topointer`
    /// gives it (0: none), and whether the script passed that table to where its
    /// `on_error = "pass"` would pass it: a failure then does not pass it a second time.
    pub(super) call_value: usize,
    pub(super) call_passed_on: bool,
    /// Whether events end with an END_OF_EVENT record (some output is ordered).
    pub ordered: bool,
    pub(super) cur_input: u32,
    pub(super) cur: EventMeta,
    /// Id and start offset of the current event's root table.
    pub(super) cur_root: (f64, usize),
    pub(super) next_id: f64,
    pub(super) reported: Vec<String>,
    /// Rate limits of `{log}` records, per kind (see `report`).
    pub(super) report_limits: crate::diag::limit::Limiter,
    /// Validation of each line before the scripts see it (see `process_batch`).
    pub(super) lines: crate::event::validate::LineCheck,
    /// Per input, whether validation records each line's top-level members for the field
    /// lookups (decided per batch from the input's last batch: `process_batch`; each input
    /// has its own filter, so its own needs).
    pub(super) record_members: Vec<bool>,
    /// The event whose records were filed last, and their bytes so far (one event's records
    /// are limited: `records::MAX_EVENT_RECORD_BYTES`).
    pub(super) held_seq: u64,
    pub(super) held_event_bytes: usize,
    /// Where the current script call comes from (for error reports); set with
    /// [`set_cur_script`](Self::set_cur_script).
    pub cur_script: (Role, u32),
    /// The same for the engine's stuck-worker report (`WorkerStats::script_now`).
    pub script_now: std::sync::Arc<std::sync::atomic::AtomicU32>,
    /// What the scripts of the pipeline being started are loaded from (`worker::Texts`).
    pub(crate) texts: super::worker::Texts,
    /// Latency recording of this worker, when histograms are on.
    pub lat: Option<Box<WorkerLatency>>,
    /// Per analyzer: its pending timer (due time in `mono_ns`, registry reference of the
    /// value in the analyzer's state).
    pub timers: Vec<Option<(u64, c_int)>>,
    pub timers_pending: u64,
    pub timers_fired: u64,
    /// A test's virtual clock, and where this worker is on it (Unix ns).
    pub(super) vclock: Option<crate::primitives::clock::Virtual>,
    pub(super) vnow_ns: u64,
    /// What script states are opened with (memory limit, number precision).
    pub(super) state_settings: super::state::StateSettings,
    /// The last ticket given to a pipelined command (each command gets the next).
    pub(super) next_ticket: u64,
    /// The ticket of the command the running coroutine queued before asking to yield (0:
    /// none); the window driver moves it to the suspended event.
    pub(super) yield_ticket: u64,
    /// Input batches whose lines event tables read in place (see `pins`); dropped after the
    /// states (`Drop` closes them first).
    pub(crate) pins: super::pins::LinePins,
}

/// A worker's own latency histograms, merged into the shared ones about once a second.
pub struct WorkerLatency {
    /// `loop()` time: one per filter, then one per analyzer.
    pub scripts: Vec<crate::counters::latency::LocalHist>,
    /// Per script, its last measured `loop()` time (ns), which its untimed calls count with.
    pub last: Vec<u64>,
    pub redis: crate::counters::latency::LocalHist,
    pub last_merge: std::time::Instant,
}

impl WorkerLatency {
    pub fn new(scripts: usize) -> Self {
        use crate::counters::latency::LocalHist;
        WorkerLatency {
            scripts: (0..scripts).map(|_| LocalHist::default()).collect(),
            last: vec![0; scripts],
            redis: LocalHist::default(),
            last_merge: std::time::Instant::now(),
        }
    }

    /// Moves the recordings into the shared histograms.
    pub fn merge_into(&mut self, stats: &crate::counters::Stats) {
        for (shared, local) in stats.script_latency.iter().zip(&mut self.scripts) {
            shared.absorb(local);
        }
        stats.redis_latency.absorb(&mut self.redis);
        self.last_merge = std::time::Instant::now();
    }
}

/// Every call of a script is timed up to this many calls; after that one call in
/// [`LAT_SAMPLE_EVERY`] (reading the clock for every call costs too much: perf/README.md,
/// "Sizes chosen by measurement").
const LAT_TIME_ALL: u64 = 64;
const LAT_SAMPLE_EVERY: u64 = 8;

/// Value of [`WorkerCtx::lat_start_call`] for a call that is counted but not timed.
const LAT_UNTIMED: u64 = u64::MAX;

thread_local! {
    static CURRENT: Cell<*mut WorkerCtx> = const { Cell::new(std::ptr::null_mut()) };
}

/// Runs `f` with the worker context lent to the Lua code running now.
///
/// Unwinds with [`super::boundary::CtxBusy`] when no context is lent on this thread, or when
/// it is already taken by an enclosing `with_ctx` (re-entry): callers are C and FFI
/// functions, whose boundary catches it.
pub(crate) fn with_ctx<R>(f: impl FnOnce(&mut WorkerCtx) -> R) -> R {
    let p = CURRENT.with(|c| c.replace(std::ptr::null_mut()));
    if p.is_null() {
        std::panic::resume_unwind(Box::new(super::boundary::CtxBusy));
    }
    let _back = Restore(p);
    // SAFETY: `p` was set by `lend` from a `&mut WorkerCtx` that is not used until the lend
    // ends (the lending code is inside the call that reached us), and it was taken out of the
    // thread-local above, so this is the only reference made from it until `_back` puts it
    // back.
    f(unsafe { &mut *p })
}

/// As [`with_ctx`], or `None` without calling `f` when no context is available (for
/// finalizers, which may run when no worker lends one).
pub(crate) fn try_with_ctx<R>(f: impl FnOnce(&mut WorkerCtx) -> R) -> Option<R> {
    if CURRENT.with(|c| c.get().is_null()) {
        return None;
    }
    Some(with_ctx(f))
}

/// Puts a pointer back into the thread-local when dropped.
struct Restore(*mut WorkerCtx);

impl Drop for Restore {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.0));
    }
}

impl WorkerCtx {
    /// The scripts' clock in nanoseconds: monotonic time, or a test's virtual clock (Unix
    /// time) where this worker is on it.
    pub(crate) fn now_ns(&self) -> u64 {
        match self.vclock {
            Some(_) => self.vnow_ns,
            None => crate::counters::latency::mono_ns(),
        }
    }

    /// A test's input has ended: its virtual clock runs on by `after`, stopping at each timer
    /// due by then to fire it (also those they arm, up to 10,000 firings).
    pub(crate) fn run_clock_out(&mut self) {
        let Some(v) = self.vclock else { return };
        let end = self.vnow_ns.saturating_add(v.after_ns);
        for _ in 0..10_000 {
            let next = self.timers.iter().flatten().map(|t| t.0).filter(|&d| d <= end).min();
            let Some(due) = next else { break };
            self.vnow_ns = self.vnow_ns.max(due);
            self.run_timers();
        }
        self.vnow_ns = end;
    }

    /// A context for the given tags (not lent to anything yet).
    pub fn new(
        input_tags: Vec<String>,
        analyzer_tags: Vec<String>,
        output_tags: Vec<String>,
        ordered: bool,
    ) -> Box<WorkerCtx> {
        let n_inputs = input_tags.len();
        Box::new(WorkerCtx {
            filters: Vec::new(),
            analyzers: Vec::new(),
            input_tags,
            analyzer_tags,
            output_tags,
            queue: VecDeque::with_capacity(64),
            cache: MemberCache::default(),
            scratch: Vec::with_capacity(256),
            value_scratch: Default::default(),
            enc: Encoder::default(),
            outs: (0..=n_inputs)
                .map(|i| OutBatch {
                    input: if i == n_inputs { NO_INPUT } else { i as u32 },
                    ..Default::default()
                })
                .collect(),
            counters: WorkerCounters::default(),
            window: Vec::new(),
            first_open: 0,
            cur_win: None,
            cur_co: std::ptr::null_mut(),
            call_value: 0,
            call_passed_on: false,
            redis: super::redis_conn::RedisState::new(
                super::redis_conn::RedisTarget::Tcp("127.0.0.1".into(), 6379),
                Default::default(),
            ),
            ordered,
            cur_input: NO_INPUT,
            cur: EventMeta::default(),
            cur_root: (0.0, 0),
            next_id: 1.0,
            reported: Vec::new(),
            report_limits: Default::default(),
            lines: Default::default(),
            record_members: Vec::new(),
            held_seq: u64::MAX,
            held_event_bytes: 0,
            cur_script: (Role::Filter, 0),
            script_now: Default::default(),
            texts: Default::default(),
            lat: None,
            timers: Vec::new(),
            timers_pending: 0,
            timers_fired: 0,
            vclock: crate::primitives::clock::virtual_clock(),
            vnow_ns: crate::primitives::clock::virtual_clock().map_or(0, |v| v.start_ns),
            state_settings: Default::default(),
            next_ticket: 0,
            yield_ticket: 0,
            pins: Default::default(),
        })
    }

    /// The script called now: for error reports, and for a report of a worker stuck in it.
    #[inline]
    pub fn set_cur_script(&mut self, role: Role, i: u32) {
        self.cur_script = (role, i);
        self.redis.call_seq += 1;
        let code = crate::counters::script_code(role == Role::Analyzer, i);
        self.script_now.store(code, std::sync::atomic::Ordering::Relaxed);
    }

    /// Sets what script states opened from now on get: their memory limit (bytes) and number
    /// precision.
    pub fn set_state_settings(&mut self, settings: super::state::StateSettings) {
        self.state_settings = settings;
    }

    /// Lends the context to the Lua code `f` runs: C functions reach it through
    /// [`with_ctx`] until `f` returns (the guard restores the previous lender, also when `f`
    /// unwinds).
    pub fn lend<R>(&mut self, f: impl FnOnce() -> R) -> R {
        let _back = Restore(CURRENT.with(|c| c.replace(self as *mut WorkerCtx)));
        f()
    }

    /// Lends the context to script code: as [`WorkerCtx::lend`], and the scripts' memory
    /// limits apply while `f` runs.
    pub fn run_script<R>(&mut self, f: impl FnOnce() -> R) -> R {
        self.lend(|| {
            let _script = super::ffi_util::TimeMark::script();
            f()
        })
    }

    /// Notes that the running script passes the value at `idx` of `l` to `target` (its own
    /// `on_error` target, when that value is the one its `loop()` got: see `call_value`).
    ///
    /// # Safety
    ///
    /// `l` is a state of this thread and `idx` a valid index of it.
    pub(super) unsafe fn note_pass(
        &mut self,
        l: *mut mlua::ffi::lua_State,
        idx: c_int,
        target: super::state::OnErrorAction,
    ) {
        if self.call_value == 0 {
            return;
        }
        // SAFETY: see the function's contract.
        if unsafe { mlua::ffi::lua_topointer(l, idx) } as usize != self.call_value {
            return;
        }
        let (role, i) = self.cur_script;
        if self.script_mut(role, i).is_some_and(|s| s.on_error == target) {
            self.call_passed_on = true;
        }
    }

    pub fn analyzer_index(&self, tag: &[u8]) -> Option<u32> {
        self.analyzer_tags
            .iter()
            .position(|t| t.as_bytes().eq_ignore_ascii_case(tag))
            .map(|i| i as u32)
    }

    pub fn output_index(&self, tag: &[u8]) -> Option<crate::shard::OutputId> {
        self.output_tags
            .iter()
            .position(|t| t.as_bytes().eq_ignore_ascii_case(tag))
            .map(crate::shard::OutputId::user)
    }

    /// The state of script `(role, i)`.
    pub(super) fn state(&self, role: Role, i: u32) -> *mut mlua::ffi::lua_State {
        match role {
            Role::Filter => self.filters[i as usize].l,
            Role::Analyzer => self.analyzers[i as usize].l,
        }
    }

    pub(super) fn script_mut(&mut self, role: Role, i: u32) -> Option<&mut Script> {
        match role {
            Role::Filter => self.filters.get_mut(i as usize),
            Role::Analyzer => self.analyzers.get_mut(i as usize),
        }
    }

    /// The time now for a latency measurement (0 when histograms are off).
    #[inline]
    pub fn lat_start(&self) -> u64 {
        if self.lat.is_some() {
            crate::counters::latency::mono_ns()
        } else {
            0
        }
    }

    /// Starts timing the `calls`-th call of a script: 0 when histograms are off,
    /// [`LAT_UNTIMED`] when this call is not sampled.
    #[inline]
    pub(super) fn lat_start_call(&self, calls: u64) -> u64 {
        if self.lat.is_none() {
            return 0;
        }
        if calls <= LAT_TIME_ALL || calls.is_multiple_of(LAT_SAMPLE_EVERY) {
            crate::counters::latency::mono_ns()
        } else {
            LAT_UNTIMED
        }
    }

    /// Records the time of a script call started at `t0` (see [`WorkerCtx::lat_start_call`]).
    /// A call that was not timed counts with the script's last measured time, so the
    /// histogram's count is the number of calls and its distribution that of the sampled
    /// calls.
    #[inline]
    pub(super) fn lat_end(&mut self, role: Role, i: u32, t0: u64) {
        if t0 == 0 {
            return;
        }
        let k = match role {
            Role::Filter => i as usize,
            Role::Analyzer => self.filters.len() + i as usize,
        };
        if let Some(l) = self.lat.as_mut()
            && let Some(h) = l.scripts.get_mut(k)
        {
            let ns = if t0 == LAT_UNTIMED {
                l.last.get(k).copied().unwrap_or(0)
            } else {
                let ns = crate::counters::latency::mono_ns() - t0;
                if let Some(last) = l.last.get_mut(k) {
                    *last = ns;
                }
                ns
            };
            h.record(ns);
        }
    }

    /// Records one Redis round trip started at `t0` (0: histograms off), `n` commands.
    pub(super) fn record_redis(&mut self, t0: u64, n: u64) {
        if t0 != 0
            && let Some(l) = self.lat.as_mut()
        {
            l.redis.record_n(crate::counters::latency::mono_ns() - t0, n);
        }
    }

    /// Retunes the GC of every script state (see `script::tune_gc`); called once per batch.
    pub fn tune_gc(&self) {
        for s in self.filters.iter().chain(&self.analyzers) {
            // The lines copied out for the events a state keeps (`pins`) count in its memory
            // but not in its heap: its collector must start that much earlier.
            // SAFETY: the worker's own states (they never leave it), between calls.
            unsafe {
                let heap = mlua::ffi::lua_gc(s.l, mlua::ffi::LUA_GCCOUNT, 0).max(0) as usize * 1024;
                let outside = s.mem.used().saturating_sub(heap);
                let limit = self.state_settings.memory_limit.saturating_sub(outside);
                super::state::tune_gc(s.l, self.state_settings.gc_pause, limit)
            };
        }
    }

    /// After scripts' `setup()`: the GC tuned, and a state whose heap is past half its memory
    /// limit collected at once, so that its next cycle starts where the tuned pause says (a
    /// cycle's start is set at the end of the one before, which `setup()` ran at Lua's pause:
    /// the heap could reach the limit first, and an event fail with garbage enough to free).
    pub fn settle_gc(&mut self) {
        self.tune_gc();
        let limit = self.state_settings.memory_limit;
        let full: Vec<*mut mlua::ffi::lua_State> = self
            .filters
            .iter()
            .chain(&self.analyzers)
            .filter(|s| s.mem.used() > limit / 2)
            .map(|s| s.l)
            .collect();
        for l in full {
            // SAFETY: `l` is a script state of this thread, not running.
            self.lend(|| unsafe { mlua::ffi::lua_gc(l, mlua::ffi::LUA_GCCOLLECT, 0) });
        }
    }

    /// Hands the input batches no event table reads any more to `give` (input, batch); past
    /// the pins' bound (`pins::LinePins::over`), hurries every state's collector through three
    /// cycles, a step per batch, then copies the lines of the events scripts still keep out
    /// of their batches.
    pub(crate) fn release_pins(&mut self, give: impl FnMut(usize, crate::shard::InBatch)) {
        self.relieve_pins(give);
        self.collect_near_limit();
    }

    fn relieve_pins(&mut self, mut give: impl FnMut(usize, crate::shard::InBatch)) {
        self.pins.release(&mut give);
        let (nf, n) = (self.filters.len(), self.filters.len() + self.analyzers.len());
        let state = |c: &Self, i: usize| if i < nf { c.filters[i].l } else { c.analyzers[i - nf].l };
        if self.pins.bytes() == 0 || n == 0 || self.pins.relief.len() != n {
            for i in 0..self.pins.relief.len().min(n) {
                // SAFETY: a script state of this thread, not running.
                unsafe { super::pins::drop_sentinel(state(self, i)) };
            }
            self.pins.relief.clear();
            if self.pins.bytes() == 0 || n == 0 {
                return;
            }
            let heap: usize = self.filters.iter().chain(&self.analyzers).map(|s| s.mem.used()).sum();
            if !self.pins.over(heap, self.state_settings.memory_limit) {
                return;
            }
            self.pins.relief = vec![super::pins::RELIEF_CYCLES; n];
            for i in 0..n {
                // SAFETY: as above.
                unsafe { super::pins::new_sentinel(state(self, i)) };
            }
        }
        // A step of each state's collector per batch, not a full collection: a worker that
        // stopped for one would hold up the reader, and every other worker with it. A cycle
        // counts once it has cleared the state's sentinel, whichever allocation ran it (the
        // script's own allocations run the collector too).
        for i in 0..n {
            if self.pins.relief[i] == 0 {
                continue;
            }
            let l = state(self, i);
            // SAFETY: `l` is a script state of this thread, not running.
            self.lend(|| unsafe { mlua::ffi::lua_gc(l, mlua::ffi::LUA_GCSTEP, super::pins::RELIEF_STEP_KB) });
            // SAFETY: as above.
            if unsafe { super::pins::sentinel_cleared(l) } {
                self.pins.relief[i] -= 1;
                if self.pins.relief[i] > 0 {
                    // SAFETY: as above.
                    unsafe { super::pins::new_sentinel(l) };
                }
            }
        }
        if self.pins.relief.iter().all(|&c| c == 0) {
            self.pins.relief.clear();
            self.pins.collections += 1;
            self.pins.move_out(give);
            // The copies are charged at once; the states' pauses follow them from now on.
            self.tune_gc();
        }
    }

    /// Collects at once a state past seven eighths of its memory limit that holds copied
    /// lines (`pins`): its collector is paced by its heap, which leaves them out, so its next
    /// cycle could come after an allocation failed in the script. One state per batch.
    fn collect_near_limit(&mut self) {
        let limit = self.state_settings.memory_limit;
        let near = limit - limit / 8;
        // The heap is asked for only past the mark: every batch comes here.
        let holds_copies = |s: &Script| {
            let used = s.mem.used();
            used > near && {
                // SAFETY: a script state of this thread, not running.
                let heap = unsafe { mlua::ffi::lua_gc(s.l, mlua::ffi::LUA_GCCOUNT, 0) }.max(0) as usize * 1024;
                used.saturating_sub(heap) >= limit / 16
            }
        };
        let found = match self.filters.iter().position(holds_copies) {
            Some(i) => Some((Role::Filter, i)),
            None => self
                .analyzers
                .iter()
                .position(holds_copies)
                .map(|i| (Role::Analyzer, i)),
        };
        if let Some((role, i)) = found {
            self.collect_unless_full(role, i as u32);
        }
    }

    /// Collects a script's state at once (after a memory error, or near its limit), unless
    /// the last such collection, less than a second ago, freed little: the state is then full
    /// of live data, and collecting it again for each event would take as long as a full
    /// collection each.
    pub(super) fn collect_unless_full(&mut self, role: Role, i: u32) {
        let Some(s) = self.script_mut(role, i) else { return };
        if s.full_until.is_some_and(|t| std::time::Instant::now() < t) {
            return;
        }
        let (l, before) = (s.l, s.mem.used());
        // SAFETY: a script state of this thread, not running.
        self.lend(|| unsafe { mlua::ffi::lua_gc(l, mlua::ffi::LUA_GCCOLLECT, 0) });
        let limit = self.state_settings.memory_limit;
        if let Some(s) = self.script_mut(role, i) {
            let freed = before.saturating_sub(s.mem.used());
            s.full_until = (freed < limit / 8).then(|| std::time::Instant::now() + std::time::Duration::from_secs(1));
        }
    }

    /// Closes every script state, with the context lent (their finalizers may call the
    /// `dragonfly` functions).
    pub fn close(mut self: Box<Self>) {
        let scripts: Vec<Script> = self.filters.drain(..).chain(self.analyzers.drain(..)).collect();
        self.lend(move || drop(scripts));
        // Errors of finalizers run as the states closed: their scripts are gone.
        let _ = super::boundary::take_finalizer_errors();
    }
}

impl Drop for WorkerCtx {
    fn drop(&mut self) {
        let scripts: Vec<Script> = self.filters.drain(..).chain(self.analyzers.drain(..)).collect();
        if !scripts.is_empty() {
            self.lend(move || drop(scripts));
        }
        let _ = super::boundary::take_finalizer_errors();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The context is reachable only while lent, once at a time, and a nested lend (code
    /// called by Lua that runs Lua again) makes it reachable again inside.
    #[test]
    fn the_context_is_lent_once_at_a_time() {
        let mut c = WorkerCtx::new(vec!["in".into()], vec![], vec!["out".into()], false);
        assert!(try_with_ctx(|_| ()).is_none(), "not lent yet");
        let absent = std::panic::catch_unwind(|| with_ctx(|_| ()));
        assert!(absent.is_err_and(|p| p.is::<super::super::boundary::CtxBusy>()));
        c.lend(|| {
            with_ctx(|c| {
                c.counters.events += 1;
                // Re-entry finds nothing (a finalizer running inside unwinds with CtxBusy,
                // caught at its boundary).
                assert!(try_with_ctx(|_| ()).is_none());
                let nested = std::panic::catch_unwind(|| with_ctx(|_| ()));
                assert!(nested.is_err_and(|p| p.is::<super::super::boundary::CtxBusy>()));
                c.lend(|| with_ctx(|c| c.counters.events += 10));
            });
            with_ctx(|c| c.counters.events += 100);
        });
        assert!(try_with_ctx(|_| ()).is_none(), "the guard restored the thread-local");
        assert_eq!(c.counters.events, 111);
    }
}
