//! Small helpers over the raw Lua C API (`mlua::ffi`) used by the hot-path modules.

pub(crate) use crate::config::types::DEFAULT_PRECISION;

use std::cell::Cell;
use std::ffi::{c_int, c_void};

use mlua::ffi::{self, lua_State};

/// Pushes a byte string.
#[inline]
pub(crate) unsafe fn push_bytes(l: *mut lua_State, b: &[u8]) {
    // SAFETY: the caller owns `l`; `b` is valid for its length.
    unsafe { ffi::lua_pushlstring_(l, b.as_ptr().cast(), b.len()) }
}

/// Reads the string (or number, converted in place) at `idx`.
#[inline]
pub(crate) unsafe fn to_bytes<'a>(l: *mut lua_State, idx: c_int) -> Option<&'a [u8]> {
    let mut len = 0usize;
    // SAFETY: the caller owns `l`; Lua keeps the string alive while it stays on the stack.
    unsafe {
        let p = ffi::lua_tolstring(l, idx, &mut len);
        if p.is_null() {
            None
        } else {
            Some(std::slice::from_raw_parts(p.cast::<u8>(), len))
        }
    }
}

/// The string at `idx` only when it really is a string (no number coercion).
#[inline]
pub(crate) unsafe fn str_at<'a>(l: *mut lua_State, idx: c_int) -> Option<&'a [u8]> {
    // SAFETY: as `to_bytes`.
    unsafe {
        if ffi::lua_type(l, idx) == ffi::LUA_TSTRING {
            to_bytes(l, idx)
        } else {
            None
        }
    }
}

/// Converts a relative stack index into an absolute one.
#[inline]
pub(crate) unsafe fn abs_index(l: *mut lua_State, idx: c_int) -> c_int {
    // SAFETY: the caller owns `l`.
    if idx > 0 || idx <= ffi::LUA_REGISTRYINDEX {
        idx
    } else {
        unsafe { ffi::lua_gettop(l) + idx + 1 }
    }
}

/// Registry slots the engine keeps in every script state, in one place so that no two
/// modules pick the same. The three read per event take the first positive keys, which
/// `Script::open_source` reserves before anything calls `luaL_ref` (they live in the registry's
/// array part: a lookup costs an index, not a hash probe); the others are negative
/// integers, which `luaL_ref` never uses.
/// A `lua_Writer` that appends what `lua_dump` writes to the `Vec<u8>` passed as `ud`.
pub(crate) unsafe extern "C-unwind" fn dump_to_vec(
    _l: *mut lua_State,
    p: *const std::ffi::c_void,
    sz: usize,
    ud: *mut std::ffi::c_void,
) -> c_int {
    // SAFETY: `ud` is the `Vec<u8>` the caller of `lua_dump` passed; `p` holds `sz` bytes.
    unsafe {
        let buf = &mut *ud.cast::<Vec<u8>>();
        buf.extend_from_slice(std::slice::from_raw_parts(p.cast::<u8>(), sz));
    }
    0
}

pub(crate) mod reg {
    use std::ffi::c_int;
    /// The metatable of event tables (also the deletion marker).
    pub(crate) const PROXY_MT: c_int = 1;
    /// The `hiredis` status table, its constants' metatable, its connections' metatable and
    /// its NIL constant.
    pub(crate) const HIREDIS_STATUS: c_int = -17_002;
    pub(crate) const HIREDIS_CONST_MT: c_int = -17_003;
    pub(crate) const HIREDIS_CONN_MT: c_int = -17_004;
    pub(crate) const HIREDIS_NIL: c_int = -17_006;
    /// The metatable of line blocks.
    pub(crate) const LINE_MT: c_int = 2;
    /// The string "loop", so that looking the function up per event interns nothing.
    pub(crate) const LOOP_KEY: c_int = 3;
    /// The settings of the state's own `cjson_safe` (a `json::CjsonConfig` userdata).
    pub(crate) const CJSON: c_int = 4;
    /// The prelude's `dispatch(loop, line, seal)`: calls `loop` with a new event table over
    /// a line block.
    pub(crate) const DISPATCH: c_int = 5;
    /// The set (weak keys) of coroutines the engine runs pipelined calls in.
    pub(crate) const ENGINE_THREADS: c_int = -17_011;
    /// The table `copy_value` records its copies in (empty between copies).
    pub(crate) const COPY_SEEN: c_int = -17_012;
    /// The state's id (a light userdata holding a number unique in the process), by which
    /// the worker knows its scripts (`boundary::state_id`).
    pub(crate) const STATE_ID: c_int = -17_013;
    // -17_014: `pins::PIN_SENTINEL` (defined there: `pins` imports nothing of this module).
}

thread_local! {
    /// Whether the code running now is a script's (its state's memory limit applies) rather
    /// than the engine's (whose allocations must not fail: a Lua error raised there would
    /// unwind through Rust frames that catch panics).
    static SCRIPT_TIME: Cell<bool> = const { Cell::new(false) };
}

/// Whether script memory limits apply to allocations now.
#[inline]
pub(crate) fn script_time() -> bool {
    SCRIPT_TIME.with(|s| s.get())
}

/// Sets whether script time runs (`on` non-zero) and returns the previous setting (1 or 0),
/// for the prelude's Lua code that makes event tables: the engine's allocations for a script
/// are not refused at its memory limit, also when they are made in Lua (called through the
/// FFI, so the script's trace stays compiled).
pub(crate) extern "C" fn df_script_time(on: i32) -> i32 {
    i32::from(SCRIPT_TIME.with(|s| s.replace(on != 0)))
}

/// Marks a stretch of script time (or engine time) and restores the previous mark on drop.
pub(crate) struct TimeMark {
    prev: bool,
}

impl TimeMark {
    /// Script code runs until the mark drops: its allocations count against its limit.
    #[inline]
    pub(crate) fn script() -> TimeMark {
        TimeMark {
            prev: SCRIPT_TIME.with(|s| s.replace(true)),
        }
    }

    /// Engine code runs until the mark drops: allocations do not fail on the limit.
    #[inline]
    pub(crate) fn engine() -> TimeMark {
        TimeMark {
            prev: SCRIPT_TIME.with(|s| s.replace(false)),
        }
    }
}

impl Drop for TimeMark {
    #[inline]
    fn drop(&mut self) {
        SCRIPT_TIME.with(|s| s.set(self.prev));
    }
}

pub(crate) use super::memory::StateMemory;

/// Room under a state's memory limit below which its JIT compiler is turned off (and above
/// twice which it is turned on again): LuaJIT's trace compiler allocates from the state's
/// heap while the script runs, and an allocation refused there crashed the process (a
/// segmentation fault in `trace_abort`) instead of raising a memory error.
const JIT_RESERVE: usize = 4 << 20;

unsafe extern "C" {
    /// LuaJIT's `luaJIT_setmode` (luajit.h), not declared by mlua.
    fn luaJIT_setmode(l: *mut lua_State, idx: c_int, mode: c_int) -> c_int;
}
const LUAJIT_MODE_ENGINE: c_int = 0;
const LUAJIT_MODE_OFF: c_int = 0x0000;
const LUAJIT_MODE_ON: c_int = 0x0100;

/// Turns the JIT compiler of the state `l` (whose memory `m` is) off when the state is within
/// [`JIT_RESERVE`] of its limit, and on again once it has twice that room; called before
/// script code runs. Compiled code already there keeps running; no new trace is recorded.
///
/// # Safety
///
/// `l` is a live state of this thread, not running (called between calls).
pub(crate) unsafe fn guard_jit(l: *mut lua_State, m: &StateMemory) {
    let used = m.used.get();
    let off = m.jit_off.get();
    let turn = if off {
        used.saturating_add(2 * JIT_RESERVE) < m.limit
    } else {
        used.saturating_add(JIT_RESERVE) > m.limit
    };
    if turn {
        let mode = LUAJIT_MODE_ENGINE | if off { LUAJIT_MODE_ON } else { LUAJIT_MODE_OFF };
        // SAFETY: the caller's contract: `l` is a live state of this thread, not running;
        // setting the engine mode allocates nothing.
        unsafe { luaJIT_setmode(l, 0, mode) };
        m.jit_off.set(!off);
    }
}

/// Memory for script states, from mimalloc (the process's global allocator too) instead of
/// LuaJIT's built-in allocator: per-thread free lists (a state is used only by its worker
/// thread), and a cheaper allocation and free per object. Event tables, their line blocks and
/// the strings scripts build are allocated and freed per event, so this is on the hot path.
/// `mi_malloc` aligns to 16 bytes from 16 bytes up and to 8 below, as LuaJIT needs (its own
/// allocator aligns to 8); the aligned entry points the Rust `GlobalAlloc` goes through take a
/// slower path. Follows the `lua_Alloc` contract: `nsize == 0` frees `ptr` (which may be null)
/// and returns null; otherwise it returns a block of `nsize` bytes holding the first
/// `min(osize, nsize)` bytes of `ptr`, or null (with `ptr` untouched) when out of memory. A
/// growth past the state's limit during script time is refused (null): LuaJIT then raises
/// "not enough memory" in the script, a script error for that event.
///
/// # Safety
///
/// `ud` is the state's `StateMemory`, which outlives the state; every non-null `ptr` was
/// returned by this function.
pub(crate) unsafe extern "C" fn lua_alloc(
    ud: *mut c_void,
    ptr: *mut c_void,
    osize: usize,
    nsize: usize,
) -> *mut c_void {
    use libmimalloc_sys::{mi_free, mi_malloc, mi_realloc};
    // SAFETY: see the contract.
    let m = unsafe { &*(ud as *const StateMemory) };
    // SAFETY: every non-null `ptr` was returned by this function, i.e. by mimalloc. The count
    // wraps instead of checking: LuaJIT passes the sizes it allocated, so it cannot go wrong.
    unsafe {
        if nsize == 0 {
            if !ptr.is_null() {
                m.used.set(m.used.get().wrapping_sub(osize));
                super::pins::on_free(ptr, osize);
            }
            mi_free(ptr);
            return std::ptr::null_mut();
        }
        let old = if ptr.is_null() { 0 } else { osize };
        let used = m.used.get().wrapping_add(nsize).wrapping_sub(old);
        if used > m.limit && nsize > old && script_time() {
            return std::ptr::null_mut();
        }
        let p = if ptr.is_null() {
            mi_malloc(nsize)
        } else {
            mi_realloc(ptr, nsize)
        };
        if !p.is_null() {
            m.used.set(used);
        }
        p
    }
}

/// What a state does on an error outside any protected call: the message goes to stderr
/// (LuaJIT then exits the process, as with `luaL_newstate`'s handler). Script code always runs
/// in `lua_pcall` or a coroutine, and the engine's own allocations are exempt from the memory
/// limit, so this is only reached when the process itself is out of memory.
pub(crate) unsafe extern "C-unwind" fn lua_panic(l: *mut lua_State) -> c_int {
    // SAFETY: LuaJIT calls this with the error value on top of the stack of `l`.
    let msg = unsafe { to_bytes(l, -1) }.map(|b| String::from_utf8_lossy(b).into_owned());
    crate::eprintln_safe!(
        "dragonfly-mle: PANIC: unprotected error in call to Lua API ({})",
        msg.as_deref().unwrap_or("?")
    );
    0
}

unsafe extern "C" {
    /// The C library's standard output stream, which Lua's `print` and `io.write` use.
    static mut stdout: *mut libc::FILE;
}

/// Writes one line of a script's `print` (the prelude's, which joins the pieces and the
/// newline first) to the C standard output in one `fwrite`: the C library holds the stream's
/// lock for the whole call, so two workers printing at once give two whole lines. (LuaJIT's
/// own `print` writes each piece, tab and newline with a call of its own, and lines of two
/// workers were cut into each other.)
pub(crate) extern "C" fn df_print_line(bytes: *const u8, len: usize) {
    if bytes.is_null() || len == 0 {
        return;
    }
    // SAFETY: the prelude passes a Lua string and its length (the FFI converts the string to
    // a pointer to its bytes, alive during the call); `stdout` is the C library's stream,
    // initialised before main, and fwrite locks it.
    unsafe {
        libc::fwrite(bytes.cast(), 1, len, stdout);
    }
}

/// Makes the C standard output line-buffered, once, before any script runs: a script's
/// `print` (to stdout, as the original's) then reaches a pipe or a file (a service's journal)
/// line by line, not in 4 KiB blocks at best and at exit at worst.
fn line_buffered_stdout() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: `stdout` is the C library's stream, initialised before main; setvbuf is
        // called before any script (the only user of the C stream) has written to it, and
        // `Once` makes this the only call.
        unsafe {
            libc::setvbuf(stdout, std::ptr::null_mut(), libc::_IOLBF, 0);
        }
    });
}

/// Creates a script state whose memory comes from [`lua_alloc`], limited to `limit` bytes
/// during script time. `None` when out of memory. The `StateMemory` must outlive the state.
pub(crate) fn new_state(limit: usize) -> Option<(*mut lua_State, Box<StateMemory>)> {
    line_buffered_stdout();
    calibrate_pins();
    raw_state(limit)
}

/// Measures the allocation size of an external line block once (`pins::set_block`), in a
/// scratch state with its collector stopped; without a secret for their tags there are none.
fn calibrate_pins() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if !super::pins::init_secret() {
            return;
        }
        let Some((l, mem)) = raw_state(usize::MAX) else { return };
        // SAFETY: a fresh state of this thread; the userdata is zeroed before the state
        // closes (so it carries no tag), and `mem` outlives the state.
        let size = unsafe {
            ffi::lua_gc(l, ffi::LUA_GCSTOP, 0);
            let before = mem.used();
            let p = ffi::lua_newuserdata(l, super::pins::EXT_SIZE);
            std::ptr::write_bytes(p.cast::<u8>(), 0, super::pins::EXT_SIZE);
            let size = mem.used() - before;
            ffi::lua_close(l);
            size
        };
        drop(mem);
        super::pins::set_block(size);
    });
}

/// A state on `lua_alloc` with `limit` bytes, nothing else set up (see [`new_state`]).
fn raw_state(limit: usize) -> Option<(*mut lua_State, Box<StateMemory>)> {
    let mem = Box::new(StateMemory {
        used: Cell::new(0),
        limit,
        jit_off: Cell::new(false),
    });
    // SAFETY: `lua_alloc` follows the allocator contract; `mem` is handed to the caller with
    // the state, and it does not move (boxed).
    unsafe {
        let l = ffi::lua_newstate(lua_alloc, (&*mem as *const StateMemory).cast_mut().cast());
        if l.is_null() {
            return None;
        }
        ffi::lua_atpanic(l, lua_panic);
        Some((l, mem))
    }
}

/// Sets global `name` and `package.loaded[name]` to the table at `t`, then pops it.
pub(crate) unsafe fn register(l: *mut lua_State, t: c_int, name: &std::ffi::CStr) {
    // SAFETY: `t` is the top of the stack.
    unsafe {
        ffi::lua_getfield(l, ffi::LUA_GLOBALSINDEX, c"package".as_ptr());
        if ffi::lua_type(l, -1) == ffi::LUA_TTABLE {
            ffi::lua_getfield(l, -1, c"loaded".as_ptr());
            if ffi::lua_type(l, -1) == ffi::LUA_TTABLE {
                ffi::lua_pushvalue(l, t);
                ffi::lua_setfield(l, -2, name.as_ptr());
            }
            ffi::lua_pop(l, 1);
        }
        ffi::lua_pop(l, 1);
        ffi::lua_setfield(l, ffi::LUA_GLOBALSINDEX, name.as_ptr());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state on `lua_alloc` grows, shrinks (table rehash, string buffers) and frees: the
    /// heap count follows, and values survive every move of their blocks.
    #[test]
    fn states_on_the_global_allocator_grow_shrink_and_free() {
        let (l, mem) = new_state(usize::MAX).expect("a state");
        let chunk = br#"
            local t = {}
            for i = 1, 100000 do t[i] = ("v%d"):rep(3):format(i, i, i) end
            local grown = collectgarbage("count")
            local sum = 0
            for i = 1, 100000, 997 do sum = sum + #t[i] end
            for i = 1, 100000 do t[i] = nil end
            t = nil
            collectgarbage() collectgarbage()
            return grown, collectgarbage("count"), sum, ("x"):rep(1 << 20):len()
        "#;
        // SAFETY: a fresh state used only here and closed at the end.
        unsafe {
            ffi::luaL_openlibs(l);
            assert_eq!(
                ffi::luaL_loadbuffer(l, chunk.as_ptr().cast(), chunk.len(), c"t".as_ptr()),
                0
            );
            assert_eq!(
                ffi::lua_pcall(l, 0, 4, 0),
                0,
                "{:?}",
                to_bytes(l, -1).map(String::from_utf8_lossy)
            );
            let (grown, after) = (ffi::lua_tonumber(l, 1), ffi::lua_tonumber(l, 2));
            let (sum, big) = (ffi::lua_tonumber(l, 3), ffi::lua_tonumber(l, 4));
            assert!(grown > 4000.0, "100k strings in {grown} KiB");
            assert!(
                after < grown / 4.0,
                "{after} KiB left of {grown} KiB after a full collection"
            );
            // "v%dv%dv%d" of i: three copies of i's digits plus three 'v's, for i = 1, 998, ...
            let expect: usize = (1..=100_000)
                .step_by(997)
                .map(|i: usize| 3 * (1 + i.to_string().len()))
                .sum();
            assert_eq!(sum as usize, expect);
            assert_eq!(big, (1 << 20) as f64);
            assert!(mem.used() > 0);
            ffi::lua_close(l);
            assert_eq!(mem.used(), 0, "every block freed");
        }
    }
}
