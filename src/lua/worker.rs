//! The per-worker Lua runtime: one LuaJIT state per script (each input's filter and every
//! analyzer), created on the worker thread and never leaving it, and the context the C
//! functions of the `dragonfly` module reach through a thread-local pointer.

use std::collections::VecDeque;
use std::ffi::c_int;

use mlua::ffi::{self, lua_State};

use super::ffi_util::{push_bytes, to_bytes};
use super::json::{EncodeError, Encoder};
use super::{api, proxy};
use crate::event::EventMeta;
use crate::event::scan::{self, Member};
use crate::shard::{END_OF_EVENT, LOG_OUTPUT, NO_INPUT, OutBatch, OutRec};

/// A script's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Filter,
    Analyzer,
}

/// What is needed to open one script.
#[derive(Clone, Debug)]
pub struct ScriptSpec {
    pub role: Role,
    pub tag: String,
    pub path: std::path::PathBuf,
    pub default_analyzer: String,
    pub default_output: String,
    /// Events whose `loop()` may run at once, their Redis commands pipelined (analyzers).
    pub pipeline: usize,
}

/// A loaded script: its own Lua state.
pub struct Script {
    pub l: *mut lua_State,
    pub tag: String,
    pub role: Role,
    pub calls: u64,
    pub errors: u64,
    /// Records it wrote to user outputs.
    pub out: u64,
    pub pipeline: usize,
    /// Finished coroutines kept for reuse (registry references), for pipelined analyzers.
    pub spare_threads: Vec<c_int>,
}

impl Drop for Script {
    fn drop(&mut self) {
        // SAFETY: the state was created by `Script::open` on this thread and is closed once.
        unsafe { ffi::lua_close(self.l) }
    }
}

const PRELUDE: &str = r#"
local next_any, is_proxy, rawpairs, mt, slow_index, find_ptr = ...
local rawnext = next
-- Event tables are filled lazily: pairs/next walk their original members, then added ones.
next = next_any
function pairs(t) if is_proxy(t) then return next_any, t, nil end return rawpairs(t) end

-- Field access of event tables in Lua, with the lookup itself called through the FFI, so that
-- LuaJIT compiles reads and writes into the script's traces. Hidden fields (negative keys):
-- -1 line (a userdata), -2 span (absent: the top-level object), -4 writes, -5 nested tables
-- handed out, -6 write order.
local ffi = require("ffi")
ffi.cdef[[
typedef struct { int32_t kind; int32_t len; double num; const char *ptr; } df_field_out;
]]
local find = ffi.cast("int32_t (*)(const void *, double, const char *, size_t, df_field_out *)", find_ptr)
local out = ffi.new("df_field_out")
local rawget, rawset, type, ffistring = rawget, rawset, type, ffi.string
local lnull, emit_ptr, queue_ptr = select(7, ...)
local TOMB = mt
-- Presized tables: a first write then costs no rehash.
local tnew = require("table.new")

mt.__index = function(t, k)
   local set = rawget(t, -4)
   if set ~= nil then
      local v = rawget(set, k)
      if v ~= nil then
         if v == TOMB then return nil end
         return v
      end
   end
   local cache = rawget(t, -5)
   if cache ~= nil then
      local v = rawget(cache, k)
      if v ~= nil then return v end
   end
   if type(k) ~= "string" then return nil end
   local kind = find(rawget(t, -1), rawget(t, -2) or 0, k, #k, out)
   if kind == 1 then return ffistring(out.ptr, out.len) end
   if kind == 2 then return out.num end
   if kind == 0 then return nil end
   if kind == 3 then return true end
   if kind == 4 then return false end
   if kind == 5 then return lnull end
   return slow_index(t, k)
end

mt.__newindex = function(t, k, v)
   if k == nil then error("table index is nil", 2) end
   if k ~= k then error("table index is NaN", 2) end
   local set = rawget(t, -4)
   if set == nil then
      -- The first written key needs no order list: it is the write table's only key.
      set = tnew(0, 2)
      rawset(t, -4, set)
   elseif rawget(set, k) == nil then
      local order = rawget(t, -6)
      if order == nil then
         order = tnew(4, 0)
         order[1] = rawnext(set)
         rawset(t, -6, order)
      end
      order[#order + 1] = k
   end
   if v == nil then v = TOMB end
   rawset(set, k, v)
end

-- output_event (and forward_event) and analyze_event of the common cases through the FFI, so
-- that a compiled trace does not leave for the C API: an event table unchanged or with one
-- member added (a scalar), and the current event passed on unchanged. Everything else, and
-- every case the FFI side declines (it returns 0), goes to the C functions.
local emit = ffi.cast("int32_t (*)(const char *, size_t, const void *, double, const char *, size_t, int32_t, double, const char *, size_t)", emit_ptr)
local queue = ffi.cast("int32_t (*)(const char *, size_t, const void *)", queue_ptr)
local getmetatable, select = getmetatable, select
local d = dragonfly
local c_output, c_analyze = d.output_event, d.analyze_event

local function output_event(...)
   if select('#', ...) == 2 then
      local tag, msg = ...
      if type(tag) == "string" and getmetatable(msg) == mt and rawget(msg, -5) == nil
         and rawget(msg, -6) == nil then
         local line = rawget(msg, -1)
         if type(line) == "userdata" then
            local span = rawget(msg, -2) or 0
            local set = rawget(msg, -4)
            if set == nil then
               if emit(tag, #tag, line, span, nil, 0, 0, 0, nil, 0) ~= 0 then return end
            else
               local k, v = rawnext(set)
               if type(k) == "string" and rawnext(set, k) == nil then
                  local tv = type(v)
                  if tv == "number" then
                     if emit(tag, #tag, line, span, k, #k, 1, v, nil, 0) ~= 0 then return end
                  elseif tv == "string" then
                     if emit(tag, #tag, line, span, k, #k, 2, 0, v, #v) ~= 0 then return end
                  elseif tv == "boolean" then
                     if emit(tag, #tag, line, span, k, #k, v and 3 or 4, 0, nil, 0) ~= 0 then return end
                  end
               end
            end
         end
      end
   end
   return c_output(...)
end
d.output_event = output_event
d.forward_event = output_event

d.analyze_event = function(...)
   if select('#', ...) == 2 then
      local tag, msg = ...
      if type(tag) == "string" and getmetatable(msg) == mt and rawget(msg, -2) == nil
         and rawget(msg, -4) == nil and rawget(msg, -5) == nil then
         local line = rawget(msg, -1)
         if type(line) == "userdata" and queue(tag, #tag, line) ~= 0 then return end
      end
   end
   return c_analyze(...)
end
"#;

unsafe fn pcall_msg(l: *mut lua_State) -> String {
    // SAFETY: an error value is on top of the stack of `l`.
    unsafe {
        let m = match to_bytes(l, -1) {
            Some(b) => String::from_utf8_lossy(b).into_owned(),
            None => format!(
                "(error object is a {} value)",
                std::ffi::CStr::from_ptr(ffi::lua_typename(l, ffi::lua_type(l, -1))).to_string_lossy()
            ),
        };
        ffi::lua_pop(l, 1);
        m
    }
}

impl Script {
    /// Creates the state, installs the modules and runs the chunk (not `setup()`).
    pub fn open(spec: &ScriptSpec) -> Result<Script, String> {
        let src = std::fs::read(&spec.path).map_err(|e| format!("{}: {e}", spec.path.display()))?;
        Self::open_source(spec, &src)
    }

    /// As [`Script::open`], with the script's text given.
    pub fn open_source(spec: &ScriptSpec, src: &[u8]) -> Result<Script, String> {
        // SAFETY: a fresh state, used only on this thread and closed by `Drop`.
        unsafe {
            let l = super::ffi_util::new_state();
            if l.is_null() {
                return Err("cannot create a Lua state (out of memory)".into());
            }
            let s = Script {
                l,
                tag: spec.tag.clone(),
                role: spec.role,
                calls: 0,
                errors: 0,
                out: 0,
                pipeline: spec.pipeline.max(1),
                spare_threads: Vec::new(),
            };
            ffi::luaL_openlibs(l);
            proxy::install(l);
            push_bytes(l, b"loop");
            ffi::lua_rawseti_(l, ffi::LUA_REGISTRYINDEX, REG_LOOP);
            // Before the prelude, which puts the FFI fast paths in front of some of its functions.
            api::install(l);
            // The prelude gets materialize and the original next/pairs as arguments.
            let pre = ffi::luaL_loadbuffer(l, PRELUDE.as_ptr().cast(), PRELUDE.len(), c"=prelude".as_ptr());
            if pre != 0 {
                return Err(pcall_msg(l));
            }
            ffi::lua_pushcclosure(l, proxy::lua_next_any, 0);
            ffi::lua_pushcclosure(l, proxy::lua_is_proxy, 0);
            ffi::lua_getfield(l, ffi::LUA_GLOBALSINDEX, c"pairs".as_ptr());
            proxy::push_mt(l);
            ffi::lua_pushcclosure(l, proxy::slow_index, 0);
            ffi::lua_pushlightuserdata(l, proxy::df_find as *mut std::ffi::c_void);
            ffi::lua_pushlightuserdata(l, std::ptr::null_mut());
            ffi::lua_pushlightuserdata(l, df_emit as *mut std::ffi::c_void);
            ffi::lua_pushlightuserdata(l, df_queue as *mut std::ffi::c_void);
            if ffi::lua_pcall(l, 9, 0, 0) != 0 {
                return Err(pcall_msg(l));
            }
            super::ml::install(l).map_err(|e| format!("dragonfly.ml: {e}"))?;
            super::hiredis::install(l);
            let set_global = |name: &std::ffi::CStr, v: &str| {
                if !v.is_empty() {
                    push_bytes(l, v.as_bytes());
                    ffi::lua_setfield(l, ffi::LUA_GLOBALSINDEX, name.as_ptr());
                }
            };
            set_global(c"default_analyzer", &spec.default_analyzer);
            if spec.role == Role::Analyzer {
                set_global(c"default_output", &spec.default_output);
            }
            let name = format!("@{}", spec.path.display());
            let cname = std::ffi::CString::new(name).unwrap_or_default();
            if ffi::luaL_loadbuffer(l, src.as_ptr().cast(), src.len(), cname.as_ptr()) != 0 {
                return Err(format!("load error: {}", pcall_msg(l)));
            }
            if ffi::lua_pcall(l, 0, 0, 0) != 0 {
                return Err(format!("error running the script: {}", pcall_msg(l)));
            }
            for f in [c"setup", c"loop"] {
                ffi::lua_getfield(l, ffi::LUA_GLOBALSINDEX, f.as_ptr());
                let ok = ffi::lua_type(l, -1) == ffi::LUA_TFUNCTION;
                ffi::lua_pop(l, 1);
                if !ok {
                    return Err(format!("the script defines no {}() function", f.to_string_lossy()));
                }
            }
            Ok(s)
        }
    }
}

/// One cached object: the members scanned so far and where the scan stopped.
struct CacheSlot {
    id: f64,
    start: usize,
    members: Vec<Member>,
    /// Position of the next member to scan; `None` once the whole object is scanned.
    resume: Option<usize>,
    /// Bloom bits of the object's keys (all set when unknown).
    keys: crate::event::KeyBloom,
    /// Whether a key occurs twice in the object (`None` until known).
    dup_keys: Option<bool>,
    /// Index in `members` after the last member found. Scripts tend to read fields in the
    /// order they appear (the 5-tuple, say), so when the object is known to have no duplicate
    /// key (any match is then the only one) the search starts there.
    hint: usize,
}

/// Slots of the member cache (a power of two): enough for a full pipelining window of events.
const CACHE_SLOTS: usize = 1 << CACHE_BITS;
const CACHE_BITS: u32 = 8;

/// A small direct-mapped cache of object member lists, keyed by (event id, object offset).
/// Scans are incremental: a lookup reads members only up to the one it wants, so reading
/// `src_ip` never walks the nested objects that Suricata puts after it.
pub struct MemberCache {
    slots: Vec<CacheSlot>,
}

impl Default for MemberCache {
    fn default() -> Self {
        MemberCache {
            slots: (0..CACHE_SLOTS)
                .map(|_| CacheSlot {
                    id: -1.0,
                    start: 0,
                    members: Vec::with_capacity(32),
                    resume: None,
                    keys: crate::event::KeyBloom::UNKNOWN,
                    dup_keys: None,
                    hint: 0,
                })
                .collect(),
        }
    }
}

/// Compares a raw JSON key with `k`, unescaping into `scratch` when needed.
pub fn key_matches(line: &[u8], m: &Member, k: &[u8], scratch: &mut Vec<u8>) -> bool {
    let raw = &line[m.key_start as usize..m.key_end as usize];
    if !m.key_escaped {
        raw == k
    } else {
        scan::unescape(raw, scratch);
        scratch.as_slice() == k
    }
}

impl MemberCache {
    fn slot(&mut self, id: f64, start: usize, line: &[u8]) -> &mut CacheSlot {
        // Fibonacci hashing of the id's bits and the offset: the top bits of the product.
        let h = ((id.to_bits() ^ start as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - CACHE_BITS)) as usize;
        let slot = &mut self.slots[h];
        if slot.id != id || slot.start != start {
            slot.id = id;
            slot.start = start;
            slot.members.clear();
            slot.resume = scan::first_member(line, start);
            slot.keys = crate::event::KeyBloom::UNKNOWN;
            slot.dup_keys = None;
            slot.hint = 0;
        }
        slot
    }

    /// Records what the reader learned of an event's top-level keys.
    pub fn prime(&mut self, id: f64, start: usize, line: &[u8], keys: crate::event::KeyBloom, dup_keys: bool) {
        let slot = self.slot(id, start, line);
        slot.keys = keys;
        slot.dup_keys = Some(dup_keys);
    }

    /// Whether a key occurs twice in the object at `start` (known from the reader for an
    /// event's top level; found by a full scan otherwise).
    pub fn has_dup_keys(&mut self, id: f64, start: usize, line: &[u8]) -> bool {
        if let Some(d) = self.slot(id, start, line).dup_keys {
            return d;
        }
        let d = scan::has_duplicate_keys(line, self.members(id, start, line));
        self.slot(id, start, line).dup_keys = Some(d);
        d
    }

    /// Every member of the object at `start`.
    pub fn members(&mut self, id: f64, start: usize, line: &[u8]) -> &[Member] {
        let slot = self.slot(id, start, line);
        while slot.scan_next(line).is_some() {}
        &slot.members
    }

    /// The member named `k` of the object at `start`, scanning no further than needed.
    pub fn find(&mut self, id: f64, start: usize, line: &[u8], k: &[u8], scratch: &mut Vec<u8>) -> Option<Member> {
        let slot = self.slot(id, start, line);
        if !slot.keys.may_contain(crate::event::key_bits(k)) {
            return None;
        }
        let n = slot.members.len();
        if slot.dup_keys == Some(false) {
            // No duplicates: the members after the hint, the next unscanned one, the rest.
            let h = slot.hint.min(n);
            if let Some(j) = (h..n).find(|&j| key_matches(line, &slot.members[j], k, scratch)) {
                slot.hint = j + 1;
                return Some(slot.members[j]);
            }
            if h == n
                && h > 0
                && let Some(m) = slot.scan_next(line)
                && key_matches(line, &m, k, scratch)
            {
                slot.hint = n + 1;
                return Some(m);
            }
            if let Some(j) = (0..h).find(|&j| key_matches(line, &slot.members[j], k, scratch)) {
                slot.hint = j + 1;
                return Some(slot.members[j]);
            }
        } else if let Some(m) = slot.members.iter().find(|m| key_matches(line, m, k, scratch)) {
            return Some(*m);
        }
        while let Some(m) = slot.scan_next(line) {
            if key_matches(line, &m, k, scratch) {
                slot.hint = slot.members.len();
                return Some(m);
            }
        }
        None
    }
}

impl CacheSlot {
    /// Reads the next member not read yet and adds it to `members` (`None` at the end).
    fn scan_next(&mut self, line: &[u8]) -> Option<Member> {
        let i = self.resume?;
        match scan::next_member(line, i) {
            Some((m, next)) => {
                self.members.push(m);
                self.resume = next;
                Some(m)
            }
            None => {
                self.resume = None;
                None
            }
        }
    }
}

/// Counters of one worker, published to the engine after each batch.
#[derive(Default, Clone, Debug)]
pub struct WorkerCounters {
    pub events: u64,
    pub unknown_tags: u64,
    pub encode_errors: u64,
    pub hop_limit: u64,
}

/// Everything the `dragonfly` functions need on a worker.
pub struct WorkerCtx {
    pub filters: Vec<Script>,
    pub analyzers: Vec<Script>,
    pub input_tags: Vec<String>,
    analyzer_tags: Vec<String>,
    /// User output tags; output index = position + 2.
    output_tags: Vec<String>,
    /// Analyzer calls queued by `analyze_event` from `setup()`, outside any event: (analyzer,
    /// registry ref in its state). Calls made during an event queue on its window entry.
    queue: VecDeque<(u32, c_int)>,
    pub cache: MemberCache,
    pub scratch: Vec<u8>,
    /// Unescaped string values handed to the FFI field lookup.
    pub value_scratch: Vec<u8>,
    pub enc: Encoder,
    /// Output batches under construction, one per input, plus one for records written
    /// outside any event (last).
    pub outs: Vec<OutBatch>,
    pub counters: WorkerCounters,
    /// Redis connections of this worker's scripts.
    pub redis: super::hiredis::RedisState,
    /// Events in flight together when some analyzer pipelines (see `process_window`).
    window: Vec<WinEvent>,
    /// The window event being run, if any: its records and analyzer calls go to it.
    pub cur_win: Option<usize>,
    /// Whether the code running now is a pipelined analyzer's coroutine (its Redis commands
    /// are queued and yield instead of waiting for the reply).
    pub pipelined: bool,
    /// Whether events end with an END_OF_EVENT record (some output is ordered).
    pub ordered: bool,
    cur_input: u32,
    cur: EventMeta,
    /// Id and start offset of the current event's root table.
    cur_root: (f64, usize),
    next_id: f64,
    reported: Vec<String>,
    /// Where the current script call comes from (for error reports).
    pub cur_script: (Role, u32),
    /// Latency recording of this worker, when histograms are on.
    pub lat: Option<Box<WorkerLatency>>,
    /// Per analyzer: its pending timer (due time in `mono_ns`, registry reference of the
    /// value in the analyzer's state).
    pub timers: Vec<Option<(u64, c_int)>>,
    pub timers_pending: u64,
    pub timers_fired: u64,
}

/// A worker's own latency histograms, merged into the shared ones about once a second.
pub struct WorkerLatency {
    /// `loop()` time: one per filter, then one per analyzer.
    pub scripts: Vec<crate::metrics::latency::LocalHist>,
    /// Per script, its last measured `loop()` time (ns), which its untimed calls count with.
    pub last: Vec<u64>,
    pub redis: crate::metrics::latency::LocalHist,
    pub last_merge: std::time::Instant,
}

impl WorkerLatency {
    pub fn new(scripts: usize) -> Self {
        use crate::metrics::latency::LocalHist;
        WorkerLatency {
            scripts: (0..scripts).map(|_| LocalHist::default()).collect(),
            last: vec![0; scripts],
            redis: LocalHist::default(),
            last_merge: std::time::Instant::now(),
        }
    }

    /// Moves the recordings into the shared histograms.
    pub fn merge_into(&mut self, stats: &crate::metrics::Stats) {
        for (shared, local) in stats.script_latency.iter().zip(&mut self.scripts) {
            shared.absorb(local);
        }
        stats.redis_latency.absorb(&mut self.redis);
        self.last_merge = std::time::Instant::now();
    }
}

/// The time now for a latency measurement (0 when histograms are off).
#[inline]
pub fn lat_start() -> u64 {
    if ctx().lat.is_some() {
        crate::metrics::latency::mono_ns()
    } else {
        0
    }
}

/// Every call of a script is timed up to this many calls; after that one call in
/// [`LAT_SAMPLE_EVERY`]. Reading the clock costs about 20 ns on this machine's VM, two reads per
/// call, which was 4% of a pass-through event.
const LAT_TIME_ALL: u64 = 64;
const LAT_SAMPLE_EVERY: u64 = 8;

/// Value of [`lat_start_call`] for a call that is counted but not timed.
const LAT_UNTIMED: u64 = u64::MAX;

/// Starts timing the `calls`-th call of a script: 0 when histograms are off, [`LAT_UNTIMED`]
/// when this call is not sampled.
#[inline]
pub fn lat_start_call(calls: u64) -> u64 {
    if ctx().lat.is_none() {
        return 0;
    }
    if calls <= LAT_TIME_ALL || calls.is_multiple_of(LAT_SAMPLE_EVERY) {
        crate::metrics::latency::mono_ns()
    } else {
        LAT_UNTIMED
    }
}

/// Records the time of a script call started at `t0` (see [`lat_start_call`]). A call that was
/// not timed counts with the script's last measured time, so the histogram's count is the
/// number of calls and its distribution that of the sampled calls.
#[inline]
pub fn lat_end(role: Role, i: u32, t0: u64) {
    if t0 == 0 {
        return;
    }
    let c = ctx();
    let k = match role {
        Role::Filter => i as usize,
        Role::Analyzer => c.filters.len() + i as usize,
    };
    if let Some(l) = c.lat.as_mut()
        && let Some(h) = l.scripts.get_mut(k)
    {
        let ns = if t0 == LAT_UNTIMED {
            l.last.get(k).copied().unwrap_or(0)
        } else {
            let ns = crate::metrics::latency::mono_ns() - t0;
            if let Some(last) = l.last.get_mut(k) {
                *last = ns;
            }
            ns
        };
        h.record(ns);
    }
}

/// Queue entry meaning "the current event, unchanged" (not a registry reference).
const UNCHANGED_EVENT: c_int = c_int::MIN;

/// Most analyzer hops one input event may cause (guards against `analyze_event` cycles).
pub const MAX_HOPS: u32 = 10_000;

thread_local! {
    static CTX: std::cell::Cell<*mut WorkerCtx> = const { std::cell::Cell::new(std::ptr::null_mut()) };
}

/// The current thread's worker context.
///
/// Panics when called on a thread that installed none (a broken invariant: C functions are
/// only reachable from states created by `WorkerCtx::install`).
#[allow(clippy::mut_from_ref)]
pub fn ctx() -> &'static mut WorkerCtx {
    let p = CTX.with(|c| c.get());
    assert!(!p.is_null(), "dragonfly worker context used outside a worker thread");
    // SAFETY: the pointer was set by `install` on this thread to a boxed context that outlives
    // every Lua state (they are fields of it); callers never keep two references across a Lua
    // call, and only this thread can reach it.
    unsafe { &mut *p }
}

impl WorkerCtx {
    /// Retunes the GC of every script state (see [`tune_gc`]); called once per batch.
    pub fn tune_gc(&self) {
        for s in self.filters.iter().chain(&self.analyzers) {
            tune_gc(s.l);
        }
    }

    /// Creates the context and makes it the current thread's.
    pub fn install(
        input_tags: Vec<String>,
        analyzer_tags: Vec<String>,
        output_tags: Vec<String>,
        ordered: bool,
    ) -> Box<WorkerCtx> {
        let n_inputs = input_tags.len();
        let mut b = Box::new(WorkerCtx {
            filters: Vec::new(),
            analyzers: Vec::new(),
            input_tags,
            analyzer_tags,
            output_tags,
            queue: VecDeque::with_capacity(64),
            cache: MemberCache::default(),
            scratch: Vec::with_capacity(256),
            value_scratch: Vec::with_capacity(256),
            enc: Encoder::default(),
            outs: (0..=n_inputs)
                .map(|i| OutBatch {
                    input: if i == n_inputs { NO_INPUT } else { i as u32 },
                    ..Default::default()
                })
                .collect(),
            counters: WorkerCounters::default(),
            window: Vec::new(),
            cur_win: None,
            pipelined: false,
            redis: super::hiredis::RedisState::new(
                super::hiredis::RedisTarget::Tcp("127.0.0.1".into(), 6379),
                Default::default(),
            ),
            ordered,
            cur_input: NO_INPUT,
            cur: EventMeta::default(),
            cur_root: (0.0, 0),
            next_id: 1.0,
            reported: Vec::new(),
            cur_script: (Role::Filter, 0),
            lat: None,
            timers: Vec::new(),
            timers_pending: 0,
            timers_fired: 0,
        });
        let p: *mut WorkerCtx = &mut *b;
        CTX.with(|c| c.set(p));
        b
    }

    /// Clears the thread's pointer; call before dropping the box.
    pub fn uninstall(mut self: Box<Self>) {
        // Close the Lua states first: their finalizers may still call into the context.
        self.filters.clear();
        self.analyzers.clear();
        CTX.with(|c| c.set(std::ptr::null_mut()));
    }

    pub fn analyzer_index(&self, tag: &[u8]) -> Option<u32> {
        self.analyzer_tags
            .iter()
            .position(|t| t.as_bytes().eq_ignore_ascii_case(tag))
            .map(|i| i as u32)
    }

    pub fn output_index(&self, tag: &[u8]) -> Option<u32> {
        self.output_tags
            .iter()
            .position(|t| t.as_bytes().eq_ignore_ascii_case(tag))
            .map(|i| i as u32 + 2)
    }

    fn out_batch(&mut self) -> &mut OutBatch {
        let i = self.out_index();
        &mut self.outs[i]
    }

    /// Files a record: in the output batch, or, inside a pipelining window, with its event
    /// (its bytes already are in the batch; records are put in event order when the window
    /// ends, and the writer reads bytes by range).
    fn file_rec(&mut self, rec: OutRec) {
        match self.cur_win {
            Some(w) => self.window[w].recs.push(rec),
            None => self.out_batch().recs.push(rec),
        }
    }

    /// Counts a record the running script wrote to a user output.
    fn count_out(&mut self, output: u32) {
        if output < 2 {
            return;
        }
        let s = match self.cur_script {
            (Role::Filter, i) => self.filters.get_mut(i as usize),
            (Role::Analyzer, i) => self.analyzers.get_mut(i as usize),
        };
        if let Some(s) = s {
            s.out += 1;
        }
    }

    /// Index of the running script among filters then analyzers.
    fn script_index(&self) -> u16 {
        match self.cur_script {
            (Role::Filter, i) => i as u16,
            (Role::Analyzer, i) => (self.filters.len() as u32 + i) as u16,
        }
    }

    /// Appends one output record (bytes + newline) for the current event.
    pub fn emit(&mut self, output: u32, bytes: &[u8]) {
        let seq = self.cur.seq;
        let script = self.script_index();
        let b = self.out_batch();
        let start = b.data.len() as u32;
        b.data.extend_from_slice(bytes);
        b.data.push(b'\n');
        let end = b.data.len() as u32;
        self.file_rec(OutRec {
            seq,
            output,
            start,
            end,
            script,
        });
    }

    /// Encodes the value at `idx` of `l` as one record for `output`.
    pub unsafe fn emit_value(&mut self, l: *mut lua_State, idx: c_int, output: u32) -> Result<(), EncodeError> {
        let i = self.out_index();
        let b = &mut self.outs[i];
        let start = b.data.len();
        // SAFETY: `l` belongs to this worker.
        let r = unsafe { self.enc.encode_cached(l, idx, &mut b.data, Some(&mut self.cache)) };
        match r {
            Ok(()) => {
                self.end_record(output, start);
                Ok(())
            }
            Err(e) => {
                self.outs[i].data.truncate(start);
                self.counters.encode_errors += 1;
                Err(e)
            }
        }
    }

    /// Writes one record for `output` with `write` (which cannot fail).
    pub fn emit_with(&mut self, output: u32, write: impl FnOnce(&mut Vec<u8>)) {
        let i = self.out_index();
        let start = self.outs[i].data.len();
        write(&mut self.outs[i].data);
        self.end_record(output, start);
    }

    /// Index of the output batch records go to now.
    fn out_index(&self) -> usize {
        if self.cur_input == NO_INPUT {
            self.outs.len() - 1
        } else {
            self.cur_input as usize
        }
    }

    /// Ends the record whose bytes start at `start` of the current output batch (a script's
    /// record: counted for the running script).
    fn end_record(&mut self, output: u32, start: usize) {
        let (seq, script) = (self.cur.seq, self.script_index());
        let i = self.out_index();
        let b = &mut self.outs[i];
        b.data.push(b'\n');
        let end = b.data.len() as u32;
        self.count_out(output);
        self.file_rec(OutRec {
            seq,
            output,
            start: start as u32,
            end,
            script,
        });
    }

    /// Reports a problem to `{log}` (in event order) and, for the first ones, to stderr.
    pub fn report(&mut self, kind: &str, fields: &[(&str, &str)], message: &str) {
        let mut line = Vec::with_capacity(128);
        line.extend_from_slice(b"{\"time\":");
        super::json::write_str(&mut line, crate::metrics::utc_now().as_bytes());
        line.extend_from_slice(b",\"level\":\"error\",\"kind\":");
        super::json::write_str(&mut line, kind.as_bytes());
        for (k, v) in fields {
            line.push(b',');
            super::json::write_str(&mut line, k.as_bytes());
            line.push(b':');
            super::json::write_str(&mut line, v.as_bytes());
        }
        if self.cur_input != NO_INPUT {
            line.extend_from_slice(b",\"input\":");
            let tag = self
                .input_tags
                .get(self.cur_input as usize)
                .cloned()
                .unwrap_or_default();
            super::json::write_str(&mut line, tag.as_bytes());
            line.extend_from_slice(b",\"line\":");
            line.extend_from_slice(itoa::Buffer::new().format(self.cur.line_no).as_bytes());
            line.extend_from_slice(b",\"flow_id\":");
            line.extend_from_slice(itoa::Buffer::new().format(self.cur.flow_id).as_bytes());
        }
        line.extend_from_slice(b",\"message\":");
        super::json::write_str(&mut line, message.as_bytes());
        line.push(b'}');
        crate::metrics::stderr_report(&line);
        self.emit(LOG_OUTPUT, &line);
    }

    /// Counts and reports (once per tag) a call naming an unknown analyzer or output.
    pub fn unknown_tag(&mut self, what: &str, tag: &[u8]) {
        self.counters.unknown_tags += 1;
        let tag = String::from_utf8_lossy(tag).into_owned();
        let key = format!("{what}:{tag}");
        if !self.reported.contains(&key) && self.reported.len() < 1000 {
            self.reported.push(key);
            let script = self.script_tag();
            self.report(
                "unknown_tag",
                &[("script", &script)],
                &format!("{what}: no {what} has tag {tag:?} (reported once per tag)"),
            );
        }
    }

    pub fn script_tag(&self) -> String {
        match self.cur_script {
            (Role::Filter, i) => self.filters.get(i as usize).map(|s| s.tag.clone()).unwrap_or_default(),
            (Role::Analyzer, i) => self
                .analyzers
                .get(i as usize)
                .map(|s| s.tag.clone())
                .unwrap_or_default(),
        }
    }

    fn push_call(&mut self, a: u32, r: c_int) {
        match self.cur_win {
            Some(w) => self.window[w].queue.push_back((a, r)),
            None => self.queue.push_back((a, r)),
        }
    }

    /// Queues the value at `idx` of `from` for analyzer `a` (a deep copy, made now). The
    /// current event's own table, unchanged, is not copied: the analyzer gets a fresh table
    /// over the same line when its turn comes, which is the same snapshot.
    pub unsafe fn queue_analyzer(&mut self, from: *mut lua_State, idx: c_int, a: u32) -> Result<(), String> {
        // SAFETY: `from` belongs to this worker thread.
        unsafe {
            let idx = super::ffi_util::abs_index(from, idx);
            if ffi::lua_type(from, idx) == ffi::LUA_TTABLE && proxy::is_proxy(from, idx) {
                let p = proxy::parts(from, idx);
                if (p.id, p.start) == self.cur_root && self.cur_input != NO_INPUT && !proxy::is_dirty(from, idx) {
                    self.push_call(a, UNCHANGED_EVENT);
                    return Ok(());
                }
            }
        }
        let to = self.analyzers[a as usize].l;
        // SAFETY: both states belong to this worker thread.
        unsafe {
            let top = ffi::lua_gettop(to);
            if let Err(e) = copy_value(from, super::ffi_util::abs_index(from, idx), to, 0) {
                ffi::lua_settop(to, top);
                return Err(e);
            }
            let r = ffi::luaL_ref(to, ffi::LUA_REGISTRYINDEX);
            self.push_call(a, r);
        }
        Ok(())
    }

    /// Runs one event through the input's filter and every analyzer it reaches (a window
    /// of one event; see `process_window`).
    pub fn process(input: u32, meta: &EventMeta, line: &[u8]) {
        let one = EventMeta {
            start: 0,
            end: line.len() as u32,
            ..*meta
        };
        Self::process_window(input, line, std::slice::from_ref(&one));
    }

    /// Arms analyzer `a`'s one-shot timer with a deep copy of the value at `idx` of `from`,
    /// due `secs` from now; a pending one is replaced.
    pub unsafe fn set_timer(&mut self, from: *mut lua_State, idx: c_int, a: u32, secs: f64) -> Result<(), String> {
        let to = self.analyzers[a as usize].l;
        // SAFETY: both states belong to this worker thread.
        let r = unsafe {
            let top = ffi::lua_gettop(to);
            if let Err(e) = copy_value(from, super::ffi_util::abs_index(from, idx), to, 0) {
                ffi::lua_settop(to, top);
                return Err(e);
            }
            ffi::luaL_ref(to, ffi::LUA_REGISTRYINDEX)
        };
        let secs = if secs.is_finite() { secs.clamp(0.0, 1e9) } else { 0.0 };
        let due = crate::metrics::latency::mono_ns() + (secs * 1e9) as u64;
        if self.timers.len() < self.analyzers.len() {
            self.timers.resize(self.analyzers.len(), None);
        }
        match self.timers[a as usize].replace((due, r)) {
            // SAFETY: the old value's reference was made in the same state.
            Some((_, old)) => unsafe { ffi::luaL_unref(to, ffi::LUA_REGISTRYINDEX, old) },
            None => self.timers_pending += 1,
        }
        Ok(())
    }

    /// Delivers every due timer to its analyzer's `loop()`, outside any event (its records
    /// are not held back for input order).
    pub fn run_timers() {
        let now = crate::metrics::latency::mono_ns();
        for a in 0..ctx().timers.len() {
            let c = ctx();
            let Some((due, r)) = c.timers[a] else { continue };
            if due > now {
                continue;
            }
            c.timers[a] = None;
            c.timers_pending -= 1;
            c.timers_fired += 1;
            c.cur_input = NO_INPUT;
            c.cur_win = None;
            c.pipelined = false;
            let l = c.analyzers[a].l;
            // SAFETY: the state belongs to this thread; `r` was made by `set_timer` in it.
            unsafe {
                ffi::lua_rawgeti_(l, ffi::LUA_REGISTRYINDEX, r);
                ffi::luaL_unref(l, ffi::LUA_REGISTRYINDEX, r);
                call_loop(Role::Analyzer, a as u32);
            }
            Self::run_setup_calls();
        }
    }

    /// Runs the analyzer calls that `setup()` functions queued with `analyze_event`, outside
    /// any event.
    pub fn run_setup_calls() {
        while let Some((a, r)) = ctx().queue.pop_front() {
            let c = ctx();
            c.cur_input = NO_INPUT;
            c.pipelined = false;
            let l = c.analyzers[a as usize].l;
            // SAFETY: the state belongs to this thread; `r` is a registry reference made by
            // `queue_analyzer` (outside an event there is no current event to stand for).
            unsafe {
                ffi::lua_rawgeti_(l, ffi::LUA_REGISTRYINDEX, r);
                ffi::luaL_unref(l, ffi::LUA_REGISTRYINDEX, r);
                call_loop(Role::Analyzer, a);
            }
        }
    }
}

/// What the one member a script added to an event is, as the Lua `output_event` hands it to
/// [`df_emit`] (none: the event is unchanged).
const ADDED_NONE: i32 = 0;
const ADDED_NUMBER: i32 = 1;
const ADDED_STRING: i32 = 2;
const ADDED_TRUE: i32 = 3;
const ADDED_FALSE: i32 = 4;

/// `dragonfly.output_event` of an event table that is unchanged or has one member added (a
/// number, string or boolean under a new key), called through LuaJIT's FFI by the Lua side of
/// `output_event` (see `PRELUDE`), so that a compiled trace writes the record without leaving
/// for the C API. Writes what the C path writes for the same table. Returns 1 when done, 0 when
/// the C path must do it (the key exists in the original, or the number is NaN or infinite).
///
/// # Safety
///
/// Called by LuaJIT on a worker thread with `tag`, `key` and `s` pointing to live Lua strings
/// of the given lengths (`key` and `s` may be null when unused) and `line` to the live line
/// block of the table (see `proxy::push_line`).
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn df_emit(
    tag: *const u8,
    tag_len: usize,
    line: *const u8,
    span: f64,
    key: *const u8,
    key_len: usize,
    kind: i32,
    num: f64,
    s: *const u8,
    s_len: usize,
) -> i32 {
    let bytes = |p: *const u8, n: usize| -> &[u8] {
        if p.is_null() {
            &[]
        } else {
            // SAFETY: see the function's contract.
            unsafe { std::slice::from_raw_parts(p, n) }
        }
    };
    let (tag, key, s) = (bytes(tag, tag_len), bytes(key, key_len), bytes(s, s_len));
    let c = ctx();
    let Some(output) = c.output_index(tag) else {
        c.unknown_tag("output", tag);
        return 1;
    };
    // SAFETY: see the function's contract.
    let (id, line, start, end) = unsafe { proxy::ffi_object(line, span) };
    match kind {
        ADDED_NONE => {
            c.emit_with(output, |out| out.extend_from_slice(&line[start..end]));
            return 1;
        }
        ADDED_NUMBER if !num.is_finite() => return 0,
        ADDED_NUMBER | ADDED_STRING | ADDED_TRUE | ADDED_FALSE => {}
        _ => return 0,
    }
    if c.cache.find(id, start, line, key, &mut c.scratch).is_some() {
        return 0;
    }
    // As `Encoder::proxy_splice` with nothing replaced: the object up to its closing brace,
    // then the new member.
    c.emit_with(output, |out| {
        if super::json::write_until_close(out, line, start, start, end) {
            out.push(b',');
        }
        super::json::write_str(out, key);
        out.push(b':');
        match kind {
            ADDED_NUMBER => {
                let _ = super::json::write_num(out, num);
            }
            ADDED_STRING => super::json::write_str(out, s),
            ADDED_TRUE => out.extend_from_slice(b"true"),
            _ => out.extend_from_slice(b"false"),
        }
        out.push(b'}');
    });
    1
}

/// `dragonfly.analyze_event` of the current event's own table, unchanged (no write, no nested
/// table handed out), called through LuaJIT's FFI by the Lua side of `analyze_event`: queues
/// the call as the C path does, with no copy. Returns 1 when done, 0 when the C path must do it
/// (another table: it is deep-copied).
///
/// # Safety
///
/// Called by LuaJIT on a worker thread with `tag` pointing to a live Lua string of `tag_len`
/// bytes and `line` to the live line block of a top-level event table.
pub unsafe extern "C" fn df_queue(tag: *const u8, tag_len: usize, line: *const u8) -> i32 {
    // SAFETY: see the function's contract.
    let (tag, (id, _, start, _)) = unsafe { (std::slice::from_raw_parts(tag, tag_len), proxy::ffi_object(line, 0.0)) };
    let c = ctx();
    if c.cur_input == NO_INPUT || (id, start) != c.cur_root {
        return 0;
    }
    match c.analyzer_index(tag) {
        Some(a) => c.push_call(a, UNCHANGED_EVENT),
        None => c.unknown_tag("analyzer", tag),
    }
    1
}

/// Registry slot of the string "loop" in every script state, so that looking the function up
/// per event interns nothing (luaL_ref only uses positive keys; -17_001 to -17_004 are taken
/// by `proxy` and `hiredis`).
const REG_LOOP: c_int = -17_010;

/// Pushes the global `loop` of the state (or thread) `l`, as `lua_getfield` would, with the
/// key string taken from the registry.
#[inline]
unsafe fn push_loop(l: *mut lua_State) {
    // SAFETY: `l` is a script state of this thread (or one of its threads); `Script::open`
    // stored the key.
    unsafe {
        ffi::lua_rawgeti_(l, ffi::LUA_REGISTRYINDEX, REG_LOOP);
        ffi::lua_gettable(l, ffi::LUA_GLOBALSINDEX);
    }
}

/// Calls `loop(value)` of a script with the value on top of its stack; counts and reports
/// an error.
unsafe fn call_loop(role: Role, i: u32) {
    let c = ctx();
    c.cur_script = (role, i);
    let s = match role {
        Role::Filter => &mut c.filters[i as usize],
        Role::Analyzer => &mut c.analyzers[i as usize],
    };
    s.calls += 1;
    let (l, calls) = (s.l, s.calls);
    // SAFETY: the state belongs to this thread; no Rust reference into the context is used
    // across the call below.
    unsafe {
        push_loop(l);
        ffi::lua_insert(l, -2);
        let t0 = lat_start_call(calls);
        let status = ffi::lua_pcall(l, 1, 0, 0);
        lat_end(role, i, t0);
        if status != 0 {
            let msg = pcall_msg(l);
            let c = ctx();
            let s = match role {
                Role::Filter => &mut c.filters[i as usize],
                Role::Analyzer => &mut c.analyzers[i as usize],
            };
            s.errors += 1;
            let tag = s.tag.clone();
            c.report("script_error", &[("script", &tag)], &msg);
        }
        ffi::lua_settop(l, 0);
    }
}

/// Deep-copies the value at absolute index `idx` of `from` onto the stack of `to`.
/// Proxies stay proxies (the line is shared, not re-parsed); `cjson_safe.null` stays null.
pub unsafe fn copy_value(from: *mut lua_State, idx: c_int, to: *mut lua_State, depth: usize) -> Result<(), String> {
    if depth > 200 {
        return Err("value too deeply nested (or cyclic) to pass to an analyzer".into());
    }
    // SAFETY: both states belong to this thread; indices are absolute.
    unsafe {
        let ty = ffi::lua_type(from, idx);
        // Each nesting level holds a few slots on both stacks; scalars need only the one.
        if ty == ffi::LUA_TTABLE {
            ffi::luaL_checkstack(to, 6, c"copy".as_ptr());
            ffi::luaL_checkstack(from, 6, c"copy".as_ptr());
        } else if depth == 0 {
            ffi::luaL_checkstack(to, 2, c"copy".as_ptr());
        }
        match ty {
            ffi::LUA_TNIL => ffi::lua_pushnil(to),
            ffi::LUA_TBOOLEAN => ffi::lua_pushboolean(to, ffi::lua_toboolean(from, idx)),
            ffi::LUA_TNUMBER => ffi::lua_pushnumber(to, ffi::lua_tonumber(from, idx)),
            ffi::LUA_TSTRING => push_bytes(to, to_bytes(from, idx).unwrap_or(&[])),
            ffi::LUA_TLIGHTUSERDATA => ffi::lua_pushlightuserdata(to, ffi::lua_touserdata(from, idx)),
            // A deletion in an event's write table: the marker of the other state.
            ffi::LUA_TTABLE if proxy::is_tomb(from, idx) => proxy::push_mt(to),
            ffi::LUA_TTABLE => {
                if proxy::is_proxy(from, idx) {
                    let p = proxy::parts(from, idx);
                    let li = proxy::push_line(to, p.line, p.id);
                    proxy::push_proxy(to, li, Some((p.start, p.end)));
                    let t = ffi::lua_gettop(to);
                    for (push, field) in [
                        (proxy::push_writes as unsafe fn(_, _) -> bool, 0),
                        (proxy::push_cache, 1),
                        (proxy::push_order, 2),
                    ] {
                        if push(from, idx) {
                            let src = ffi::lua_gettop(from);
                            let r = copy_value(from, src, to, depth + 1);
                            ffi::lua_pop(from, 1);
                            r?;
                            proxy::set_side_table(to, t, field);
                        }
                    }
                    ffi::lua_remove(to, li);
                } else {
                    let narr = ffi::lua_objlen(from, idx) as c_int;
                    ffi::lua_createtable(to, narr, if narr == 0 { 4 } else { 0 });
                    let t = ffi::lua_gettop(to);
                    ffi::lua_pushnil(from);
                    while ffi::lua_next(from, idx) != 0 {
                        let v = ffi::lua_gettop(from);
                        let r =
                            copy_value(from, v - 1, to, depth + 1).and_then(|()| copy_value(from, v, to, depth + 1));
                        if let Err(e) = r {
                            ffi::lua_settop(from, v - 2);
                            return Err(e);
                        }
                        ffi::lua_rawset(to, t);
                        ffi::lua_pop(from, 1);
                    }
                }
            }
            t => {
                let name = std::ffi::CStr::from_ptr(ffi::lua_typename(from, t)).to_string_lossy();
                return Err(format!("cannot pass a {name} value to an analyzer"));
            }
        }
    }
    Ok(())
}

/// Replaces this worker's scripts with new versions (`sources`: the text of every filter,
/// then every analyzer, read once for all workers), between two events. Each script is
/// loaded and set up in a fresh state first; one that fails keeps its old version. A pending
/// timer moves to the new state. Returns (scripts reloaded, errors as "key (tag): message").
pub fn reload(
    filters: &[ScriptSpec],
    analyzers: &[ScriptSpec],
    sources: &[Result<Vec<u8>, String>],
) -> (u64, Vec<String>) {
    let mut done = 0;
    let mut errors = Vec::new();
    let specs = filters
        .iter()
        .map(|s| (Role::Filter, s))
        .chain(analyzers.iter().map(|s| (Role::Analyzer, s)));
    for (k, (role, spec)) in specs.enumerate() {
        let i = if role == Role::Filter { k } else { k - filters.len() };
        let key = match role {
            Role::Filter => format!("inputs[{}]", i + 1),
            Role::Analyzer => format!("analyzers[{}]", i + 1),
        };
        let src = match sources.get(k) {
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                errors.push(format!("{key} ({}): {e}", spec.tag));
                continue;
            }
            None => continue,
        };
        let c = ctx();
        c.cur_script = (role, i as u32);
        let new = match Script::open_source(spec, src) {
            Ok(s) => s,
            Err(e) => {
                errors.push(format!("{key} ({}): {}: {e}", spec.tag, spec.path.display()));
                continue;
            }
        };
        if let Err(e) = run_setup_raw(new.l) {
            errors.push(format!("{key} ({}): {}: {e}", spec.tag, spec.path.display()));
            continue;
        }
        let c = ctx();
        let mut new = new;
        let slot = match role {
            Role::Filter => &mut c.filters[i],
            Role::Analyzer => &mut c.analyzers[i],
        };
        new.calls = slot.calls;
        new.errors = slot.errors;
        new.out = slot.out;
        let old = std::mem::replace(slot, new);
        if role == Role::Analyzer
            && let Some(Some((due, r))) = c.timers.get(i).copied()
        {
            let to = c.analyzers[i].l;
            // SAFETY: both states belong to this thread; `r` is a reference in the old one.
            unsafe {
                ffi::lua_rawgeti_(old.l, ffi::LUA_REGISTRYINDEX, r);
                let top = ffi::lua_gettop(to);
                match copy_value(old.l, ffi::lua_gettop(old.l), to, 0) {
                    Ok(()) => c.timers[i] = Some((due, ffi::luaL_ref(to, ffi::LUA_REGISTRYINDEX))),
                    Err(_) => {
                        ffi::lua_settop(to, top);
                        c.timers[i] = None;
                        c.timers_pending -= 1;
                    }
                }
                ffi::lua_settop(old.l, 0);
            }
        }
        drop(old);
        done += 1;
    }
    (done, errors)
}

/// Opens every script of a configuration on the current thread.
pub fn open_all(
    ctx: &mut WorkerCtx,
    filters: &[ScriptSpec],
    analyzers: &[ScriptSpec],
    run_setup: bool,
) -> Result<(), String> {
    for (i, spec) in filters.iter().enumerate() {
        ctx.cur_script = (Role::Filter, i as u32);
        let s = Script::open(spec)
            .map_err(|e| format!("inputs[{}] ({}): {}: {e}", i + 1, spec.tag, spec.path.display()))?;
        ctx.filters.push(s);
    }
    for (i, spec) in analyzers.iter().enumerate() {
        ctx.cur_script = (Role::Analyzer, i as u32);
        let s = Script::open(spec)
            .map_err(|e| format!("analyzers[{}] ({}): {}: {e}", i + 1, spec.tag, spec.path.display()))?;
        ctx.analyzers.push(s);
    }
    if run_setup {
        for (i, spec) in filters.iter().enumerate() {
            setup_one(Role::Filter, i, &format!("inputs[{}]", i + 1), spec)?;
        }
        for (i, spec) in analyzers.iter().enumerate() {
            setup_one(Role::Analyzer, i, &format!("analyzers[{}]", i + 1), spec)?;
        }
    }
    Ok(())
}

fn setup_one(role: Role, i: usize, key: &str, spec: &ScriptSpec) -> Result<(), String> {
    let c = self::ctx();
    c.cur_script = (role, i as u32);
    let l = match role {
        Role::Filter => c.filters[i].l,
        Role::Analyzer => c.analyzers[i].l,
    };
    // Only the raw state pointer is kept across the call: setup() may call dragonfly
    // functions, which fetch the context themselves.
    run_setup_raw(l).map_err(|e| format!("{key} ({}): {}: {e}", spec.tag, spec.path.display()))
}

fn run_setup_raw(l: *mut lua_State) -> Result<(), String> {
    // SAFETY: `l` is a state of this thread; setup may call dragonfly functions, which fetch
    // the context themselves.
    unsafe {
        ffi::lua_getfield(l, ffi::LUA_GLOBALSINDEX, c"setup".as_ptr());
        if ffi::lua_pcall(l, 0, 0, 0) != 0 {
            return Err(format!("setup() failed: {}", pcall_msg(l)));
        }
        ffi::lua_pushnil(l);
        ffi::lua_setfield(l, ffi::LUA_GLOBALSINDEX, c"io".as_ptr());
    }
    Ok(())
}

/// Garbage every script state may accumulate before a collection cycle starts, on top of
/// its live heap (KiB).
const GC_HEADROOM_KB: c_int = 4096;

/// Keeps the GC of a script state from running a cycle every few dozen events: Lua starts a
/// cycle when the heap reaches `pause`% of the live heap, which for the small heaps of typical
/// scripts means constantly. The pause is set so that a cycle starts at the larger of twice the
/// live heap and the live heap plus [`GC_HEADROOM_KB`].
fn tune_gc(l: *mut lua_State) {
    // SAFETY: `l` is a state of this thread; both calls only read or set GC parameters.
    unsafe {
        let kb = ffi::lua_gc(l, ffi::LUA_GCCOUNT, 0).max(64);
        let pause = ((kb + GC_HEADROOM_KB) as i64 * 100 / kb as i64).clamp(200, 10_000) as c_int;
        ffi::lua_gc(l, ffi::LUA_GCSETPAUSE, pause);
    }
}

/// One event of a pipelining window: its pending analyzer calls, its records (emitted in
/// event order once the window is done) and the coroutine it is suspended in, if any.
#[derive(Default)]
struct WinEvent {
    meta: EventMeta,
    id: f64,
    line: (usize, usize),
    root: usize,
    queue: VecDeque<(u32, c_int)>,
    /// Its records (their bytes are in the output batch already).
    recs: Vec<OutRec>,
    /// The analyzer and the registry reference of the suspended coroutine.
    co: Option<(u32, c_int)>,
    /// When the suspended coroutine's `loop()` started (`lat_start_call`).
    co_t0: u64,
    hops: u32,
}

impl WorkerCtx {
    /// Whether some analyzer asks for pipelining (then batches go through `process_window`).
    pub fn max_pipeline(&self) -> usize {
        self.analyzers.iter().map(|a| a.pipeline).max().unwrap_or(1)
    }

    /// Runs a window of events of one input: every filter first, then the analyzers as
    /// coroutines; the Redis commands of pipelined analyzers are sent together and each
    /// coroutine resumes with its own reply. Records leave in event order.
    pub fn process_window(input: u32, batch: &[u8], events: &[EventMeta]) {
        let c = ctx();
        c.window
            .resize_with(events.len().max(c.window.len()), WinEvent::default);
        for (i, meta) in events.iter().enumerate() {
            let c = ctx();
            let id = c.next_id;
            c.next_id += 1.0;
            let w = &mut c.window[i];
            w.meta = *meta;
            w.id = id;
            w.line = (meta.start as usize, meta.end as usize);
            w.queue.clear();
            w.recs.clear();
            w.co = None;
            w.hops = 0;
            let line = &batch[meta.start as usize..meta.end as usize];
            enter(input, i);
            let c = ctx();
            c.counters.events += 1;
            let root_start = scan::skip_ws(line, 0);
            c.window[i].root = root_start;
            c.cur_root = (id, root_start);
            c.cache.prime(id, root_start, line, meta.keys, meta.dup_keys);
            let l = c.filters[input as usize].l;
            // SAFETY: the state belongs to this thread.
            unsafe {
                proxy::push_event(l, line, id);
                call_loop(Role::Filter, input);
            }
        }
        // Drive every event's analyzer calls until all are done.
        loop {
            let mut waiting = false;
            for i in 0..events.len() {
                if ctx().window[i].co.is_none() {
                    run_calls(input, i, batch);
                }
                waiting |= ctx().window[i].co.is_some();
            }
            if !waiting {
                break;
            }
            // Send every queued command, one write per connection, and resume each coroutine
            // with its own reply, in the order the commands were queued.
            let replies = super::hiredis::take_pipelined();
            if replies.is_empty() {
                // Suspended without a command (a script's own coroutine.yield): go on.
                for i in 0..events.len() {
                    if ctx().window[i].co.is_some() {
                        resume(input, i, 0, batch);
                    }
                }
            }
            for (i, reply) in replies {
                let Some(co) = coroutine_of(i) else { continue };
                // SAFETY: `co` is the suspended coroutine of window event `i`.
                let n = unsafe { super::hiredis::push_result(co, reply) };
                resume(input, i, n, batch);
            }
        }
        let c = ctx();
        c.cur_win = None;
        c.pipelined = false;
        // Records in event order, each event closed by its end marker.
        for i in 0..events.len() {
            let c = ctx();
            let (seq, ordered) = (c.window[i].meta.seq, c.ordered);
            let b = &mut c.outs[input as usize];
            b.recs.extend_from_slice(&c.window[i].recs);
            if ordered {
                let at = b.data.len() as u32;
                b.recs.push(OutRec {
                    seq,
                    output: END_OF_EVENT,
                    start: at,
                    end: at,
                    script: 0,
                });
            }
        }
        ctx().cur_input = NO_INPUT;
    }
}

/// The suspended coroutine of window event `i`.
fn coroutine_of(i: usize) -> Option<*mut lua_State> {
    let c = ctx();
    let (a, co_ref) = c.window[i].co?;
    let l = c.analyzers[a as usize].l;
    // SAFETY: the coroutine is anchored in the analyzer's registry under `co_ref`.
    unsafe {
        ffi::lua_rawgeti_(l, ffi::LUA_REGISTRYINDEX, co_ref);
        let co = ffi::lua_tothread(l, -1);
        ffi::lua_pop(l, 1);
        Some(co)
    }
}

/// Makes window event `i` the current event.
fn enter(input: u32, i: usize) {
    let c = ctx();
    c.cur_input = input;
    c.cur_win = Some(i);
    c.cur = c.window[i].meta;
    c.cur_root = (c.window[i].id, c.window[i].root);
}

/// Runs window event `i`'s queued analyzer calls, each as a coroutine, until one suspends
/// on a pipelined Redis command or none is left.
fn run_calls(input: u32, i: usize, batch: &[u8]) {
    while let Some((a, r)) = ctx().window[i].queue.pop_front() {
        enter(input, i);
        let c = ctx();
        c.window[i].hops += 1;
        let (id, (s, e)) = (c.window[i].id, c.window[i].line);
        let over = c.window[i].hops > MAX_HOPS;
        if c.window[i].hops == MAX_HOPS + 1 {
            c.counters.hop_limit += 1;
            c.report(
                "hop_limit",
                &[],
                &format!("event passed between analyzers more than {MAX_HOPS} times; the rest was dropped"),
            );
        }
        let l = c.analyzers[a as usize].l;
        // SAFETY: the analyzer's state belongs to this thread; the coroutine is anchored in
        // its registry while it is suspended.
        unsafe {
            if over || c.analyzers[a as usize].pipeline <= 1 {
                // Not pipelined: an ordinary call, no coroutine needed.
                if r == UNCHANGED_EVENT {
                    proxy::push_event(l, &batch[s..e], id);
                } else {
                    ffi::lua_rawgeti_(l, ffi::LUA_REGISTRYINDEX, r);
                    ffi::luaL_unref(l, ffi::LUA_REGISTRYINDEX, r);
                }
                if over {
                    ffi::lua_pop(l, 1);
                    continue;
                }
                c.pipelined = false;
                call_loop(Role::Analyzer, a);
                continue;
            }
            let (co, co_ref) = match c.analyzers[a as usize].spare_threads.pop() {
                Some(r) => {
                    ffi::lua_rawgeti_(l, ffi::LUA_REGISTRYINDEX, r);
                    let co = ffi::lua_tothread(l, -1);
                    ffi::lua_pop(l, 1);
                    (co, r)
                }
                None => {
                    let co = ffi::lua_newthread(l);
                    (co, ffi::luaL_ref(l, ffi::LUA_REGISTRYINDEX))
                }
            };
            if r == UNCHANGED_EVENT {
                proxy::push_event(co, &batch[s..e], id);
            } else {
                ffi::lua_rawgeti_(co, ffi::LUA_REGISTRYINDEX, r);
                ffi::luaL_unref(l, ffi::LUA_REGISTRYINDEX, r);
            }
            push_loop(co);
            ffi::lua_insert(co, -2);
            let c = ctx();
            c.analyzers[a as usize].calls += 1;
            c.cur_script = (Role::Analyzer, a);
            c.pipelined = c.analyzers[a as usize].pipeline > 1;
            let t0 = lat_start_call(c.analyzers[a as usize].calls);
            ctx().window[i].co_t0 = t0;
            let status = ffi::lua_resume_(co, 1);
            if !finish_resume(a, co, co_ref, status, i) {
                return;
            }
            lat_end(Role::Analyzer, a, t0);
        }
    }
}

/// Resumes window event `i`'s coroutine with `nres` values already pushed on its stack.
fn resume(input: u32, i: usize, nres: c_int, batch: &[u8]) {
    let Some((a, co_ref)) = ctx().window[i].co.take() else {
        return;
    };
    enter(input, i);
    let c = ctx();
    let l = c.analyzers[a as usize].l;
    c.cur_script = (Role::Analyzer, a);
    c.pipelined = c.analyzers[a as usize].pipeline > 1;
    // SAFETY: the coroutine is anchored in the registry under `co_ref`.
    unsafe {
        ffi::lua_rawgeti_(l, ffi::LUA_REGISTRYINDEX, co_ref);
        let co = ffi::lua_tothread(l, -1);
        ffi::lua_pop(l, 1);
        let status = ffi::lua_resume_(co, nres);
        if finish_resume(a, co, co_ref, status, i) {
            lat_end(Role::Analyzer, a, ctx().window[i].co_t0);
            run_calls(input, i, batch);
        }
    }
}

/// After a resume: records a suspension (returns false) or finishes the call, reporting an
/// error (returns true).
unsafe fn finish_resume(a: u32, co: *mut lua_State, co_ref: c_int, status: c_int, i: usize) -> bool {
    let c = ctx();
    let l = c.analyzers[a as usize].l;
    // SAFETY: `co` is a live coroutine of `l`.
    unsafe {
        if status == ffi::LUA_YIELD {
            c.window[i].co = Some((a, co_ref));
            return false;
        }
        if status != 0 {
            let msg = pcall_msg(co);
            let c = ctx();
            c.analyzers[a as usize].errors += 1;
            let tag = c.analyzers[a as usize].tag.clone();
            c.report("script_error", &[("script", &tag)], &msg);
            // A coroutine that died with an error cannot run again.
            ffi::luaL_unref(l, ffi::LUA_REGISTRYINDEX, co_ref);
        } else {
            // Finished normally: keep it for the next call (creating a coroutine costs an
            // allocation and a stack).
            ffi::lua_settop(co, 0);
            let c = ctx();
            c.analyzers[a as usize].spare_threads.push(co_ref);
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whatever the order of lookups, the cache finds what a search from the first member
    /// finds: with the hint (an object primed as having no duplicate key) and without it.
    #[test]
    fn member_cache_finds_what_a_linear_search_finds() {
        let mut r = 0x853c_49e6_748f_ea9bu64;
        let mut next = |n: u64| crate::test_rng::below(&mut r, n);
        let mut cache = MemberCache::default();
        let mut scratch = Vec::new();
        for round in 0..2000 {
            let n_keys = 1 + next(12) as usize;
            // Objects that are not primed may repeat keys: the first occurrence must win.
            let keys: Vec<String> = (0..n_keys)
                .map(|i| {
                    if round % 2 == 1 {
                        format!("k{}", next(n_keys as u64))
                    } else {
                        format!("k{i}")
                    }
                })
                .collect();
            let mut line = String::from("{");
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    line.push(',');
                }
                line.push_str(&format!("\"{k}\":{{\"v\":{i}}}"));
            }
            line.push('}');
            let b = line.as_bytes();
            let id = round as f64;
            let mut all = Vec::new();
            scan::object_members(b, 0, &mut all);
            let mut bits = crate::event::KeyBloom::default();
            for k in &keys {
                bits.add(crate::event::key_bits(k.as_bytes()));
            }
            // Half the objects primed by "the reader" (no duplicate keys), half unknown.
            if round % 2 == 0 {
                cache.prime(id, 0, b, bits, false);
            }
            for _ in 0..20 {
                let want = format!("k{}", next(n_keys as u64 + 2));
                let expect = all
                    .iter()
                    .find(|m| key_matches(b, m, want.as_bytes(), &mut scratch))
                    .copied();
                let got = cache.find(id, 0, b, want.as_bytes(), &mut scratch);
                assert_eq!(got, expect, "{line} {want}");
            }
        }
    }
}
