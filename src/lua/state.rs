//! A script's state: its LuaJIT state and memory accounting, its role and counters, and the
//! few raw operations the engine does on it (the `loop` lookup, error messages, GC tuning).

use std::ffi::c_int;

use mlua::ffi::{self, lua_State};

use super::ffi_util::{StateMemory, reg, to_bytes};
pub(crate) use crate::config::types::{DEFAULT_MEMORY_LIMIT, OnError};

/// What every script state of a worker is opened with (config.lua's `script_memory_mb` and
/// `number_precision`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StateSettings {
    /// Memory limit during script time (bytes).
    pub memory_limit: usize,
    /// Significant digits of non-integer numbers the state writes (its initial
    /// `cjson_safe.encode_number_precision`).
    pub precision: u8,
    /// The smallest GC pause (`gc_pause`, percent): a collection cycle starts when the heap
    /// reaches this share of the live heap (at least the live heap plus the headroom).
    pub gc_pause: u16,
}

impl Default for StateSettings {
    fn default() -> Self {
        StateSettings {
            memory_limit: DEFAULT_MEMORY_LIMIT,
            precision: super::ffi_util::DEFAULT_PRECISION,
            gc_pause: crate::config::types::DEFAULT_GC_PAUSE,
        }
    }
}

/// A script's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Filter,
    Analyzer,
}

/// What is needed to open one script.
#[derive(Clone, Debug, PartialEq)]
pub struct ScriptSpec {
    pub role: Role,
    pub tag: String,
    pub path: std::path::PathBuf,
    pub default_analyzer: String,
    pub default_output: String,
    /// Events whose `loop()` may run at once, their Redis commands pipelined (analyzers).
    pub pipeline: usize,
    /// What happens to an event whose `loop()` raised (`on_error` in config.lua).
    pub on_error: OnError,
}

/// [`OnError`] resolved against a worker's tags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnErrorAction {
    #[default]
    Drop,
    /// Pass to this analyzer.
    ToAnalyzer(u32),
    /// Write as it is to this output (an analyzer's default output).
    ToOutput(crate::shard::OutputId),
    /// Write with the error to this output.
    DeadLetter(crate::shard::OutputId),
}

/// A loaded script: its own Lua state.
pub struct Script {
    pub l: *mut lua_State,
    /// The state's memory accounting (its allocator's `ud`); outlives the state.
    pub(super) mem: Box<StateMemory>,
    pub tag: String,
    pub role: Role,
    pub calls: u64,
    pub errors: u64,
    /// Records it wrote to user outputs.
    pub out: u64,
    pub pipeline: usize,
    /// Finished coroutines kept for reuse (registry references), for pipelined analyzers.
    pub spare_threads: Vec<c_int>,
    /// What happens to an event whose `loop()` raised.
    pub on_error: OnErrorAction,
    /// A hash of the text it was loaded from (a rebuilt pipeline keeps an unchanged script).
    pub source_hash: u64,
    /// Until when a memory error is not followed by a full collection: the last one freed
    /// little (the state is full of live data, and collecting it after every failed event
    /// made each take as long as a full collection: 75 events/s with a 16 MiB state).
    pub(super) full_until: Option<std::time::Instant>,
}

impl Drop for Script {
    fn drop(&mut self) {
        // SAFETY: the state was created by `Script::open_source` on this thread and is closed once;
        // `mem` is dropped after this, so the allocator's `ud` outlives the state.
        unsafe { ffi::lua_close(self.l) }
    }
}

impl Script {
    /// Bytes the state's allocator has handed out.
    pub fn memory_used(&self) -> usize {
        self.mem.used()
    }
}

/// The message of the error on top of the stack of `l`, popped.
pub(super) unsafe fn pcall_msg(l: *mut lua_State) -> String {
    // SAFETY: an error value is on top of the stack of `l`.
    unsafe {
        let m = match to_bytes(l, -1) {
            Some(b) => String::from_utf8_lossy(b).into_owned(),
            None => described(l).unwrap_or_else(|| {
                format!(
                    "(error object is a {} value)",
                    std::ffi::CStr::from_ptr(ffi::lua_typename(l, ffi::lua_type(l, -1))).to_string_lossy()
                )
            }),
        };
        ffi::lua_pop(l, 1);
        m
    }
}

/// What the `__tostring` metamethod of the error value on top of the stack of `l` makes of it
/// (as `lua.c` reports such an error), called in a protected call: an error in it, or a
/// result that is not a string, gives `None`. The stack is left as it was.
unsafe fn described(l: *mut lua_State) -> Option<String> {
    // SAFETY: the caller's value is on top of the stack of `l`; the metafield is read raw and
    // called under `lua_pcall`, which pops the function and its argument and pushes one value.
    unsafe {
        if ffi::lua_checkstack(l, 3) == 0 || ffi::luaL_getmetafield_(l, -1, c"__tostring".as_ptr()) == 0 {
            return None;
        }
        ffi::lua_pushvalue(l, -2);
        let text = (ffi::lua_pcall(l, 1, 1, 0) == 0 && ffi::lua_type(l, -1) == ffi::LUA_TSTRING)
            .then(|| to_bytes(l, -1).map(|b| String::from_utf8_lossy(b).into_owned()))
            .flatten();
        ffi::lua_pop(l, 1);
        text
    }
}

/// Pushes the global `loop` of the state (or thread) `l`, as `lua_getfield` would, with the
/// key string taken from the registry.
#[inline]
pub(super) unsafe fn push_loop(l: *mut lua_State) {
    // SAFETY: `l` is a script state of this thread (or one of its threads); `Script::open_source`
    // stored the key. A raw get: this runs outside any protected call, so no metamethod a
    // script put on its globals may run here.
    unsafe {
        ffi::lua_rawgeti_(l, ffi::LUA_REGISTRYINDEX, reg::LOOP_KEY);
        ffi::lua_rawget_(l, ffi::LUA_GLOBALSINDEX);
    }
}

/// Garbage every script state may accumulate before a collection cycle starts, on top of
/// its live heap (KiB).
const GC_HEADROOM_KB: c_int = 4096;

/// The part of a state's memory limit a collection cycle must start below (1/`N`): a state
/// whose live heap is over half its limit reached the limit before its next cycle (started at
/// twice the live heap), and its events failed with garbage enough to free.
const LIMIT_ROOM_PART: i64 = 8;

/// Keeps the GC of a script state from running a cycle every few dozen events: Lua starts a
/// cycle when the heap reaches `pause`% of the live heap, which for the small heaps of typical
/// scripts means constantly. The pause is set so that a cycle starts at the larger of twice the
/// live heap and the live heap plus [`GC_HEADROOM_KB`]. (Scripts cannot stop the collector:
/// the prelude's `collectgarbage` ignores "stop".) Near the state's memory `limit` (bytes),
/// the pause is lowered so that a cycle starts before the heap reaches the limit less an
/// eighth of it, whatever the setting: garbage is then collected before an allocation fails.
///
/// # Safety
///
/// `l` is a live state of this thread.
pub(super) unsafe fn tune_gc(l: *mut lua_State, min_pause: u16, limit: usize) {
    // SAFETY: the caller's contract (`l` is a live state of this thread); these calls only
    // read or set GC parameters.
    unsafe {
        let kb = ffi::lua_gc(l, ffi::LUA_GCCOUNT, 0).max(64);
        let mut pause = ((kb + GC_HEADROOM_KB) as i64 * 100 / kb as i64).clamp(i64::from(min_pause), 10_000);
        let limit_kb = (limit / 1024) as i64;
        let room_kb = limit_kb - limit_kb / LIMIT_ROOM_PART;
        if room_kb > 0 {
            pause = pause.min((room_kb * 100 / i64::from(kb)).max(100));
        }
        ffi::lua_gc(l, ffi::LUA_GCSETPAUSE, pause as c_int);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With a heap of several MiB, the pause follows the setting: Lua's 200 %, or the larger
    /// `gc_pause`.
    #[test]
    fn the_gc_pause_is_at_least_the_setting() {
        let (l, _mem) = super::super::ffi_util::new_state(1 << 30).expect("a state");
        // SAFETY: a fresh state of this thread, closed at the end; the chunk is ours.
        unsafe {
            ffi::luaL_openlibs(l);
            let chunk = b"t = {} for i = 1, 200000 do t[i] = tostring(i) .. 'padding-padding' end";
            assert_eq!(
                ffi::luaL_loadbuffer(l, chunk.as_ptr().cast(), chunk.len(), c"=t".as_ptr()),
                0
            );
            assert_eq!(ffi::lua_pcall(l, 0, 0, 0), 0);
            assert!(ffi::lua_gc(l, ffi::LUA_GCCOUNT, 0) > 8192, "a heap of several MiB");
            tune_gc(l, 200, 1 << 30);
            assert_eq!(ffi::lua_gc(l, ffi::LUA_GCSETPAUSE, 200), 200);
            tune_gc(l, 400, 1 << 30);
            assert_eq!(ffi::lua_gc(l, ffi::LUA_GCSETPAUSE, 200), 400);
            // Near the memory limit, lower: a cycle starts below 7/8 of it.
            let kb = ffi::lua_gc(l, ffi::LUA_GCCOUNT, 0);
            let limit = (kb as usize * 1024) * 3 / 2;
            tune_gc(l, 400, limit);
            let pause = ffi::lua_gc(l, ffi::LUA_GCSETPAUSE, 200);
            assert!((100..=132).contains(&pause), "{pause}");
            ffi::lua_close(l);
        }
    }
}
