//! Small helpers over the raw Lua C API (`mlua::ffi`) used by the hot-path modules.

use std::ffi::{c_int, c_void};

use mlua::ffi::{self, lua_State};

/// Pushes a byte string.
#[inline]
pub unsafe fn push_bytes(l: *mut lua_State, b: &[u8]) {
    // SAFETY: the caller owns `l`; `b` is valid for its length.
    unsafe { ffi::lua_pushlstring_(l, b.as_ptr().cast(), b.len()) }
}

/// Reads the string (or number, converted in place) at `idx`.
#[inline]
pub unsafe fn to_bytes<'a>(l: *mut lua_State, idx: c_int) -> Option<&'a [u8]> {
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
pub unsafe fn str_at<'a>(l: *mut lua_State, idx: c_int) -> Option<&'a [u8]> {
    // SAFETY: as `to_bytes`.
    unsafe {
        if ffi::lua_type(l, idx) == ffi::LUA_TSTRING {
            to_bytes(l, idx)
        } else {
            None
        }
    }
}

/// `t[lightuserdata key]` raw get; leaves the value on the stack and returns its type.
#[inline]
pub unsafe fn rawget_ptr(l: *mut lua_State, t: c_int, key: *const c_void) -> c_int {
    // SAFETY: the caller owns `l` and `t` is an absolute index of a table.
    unsafe {
        ffi::lua_pushlightuserdata(l, key as *mut c_void);
        ffi::lua_rawget_(l, t);
        ffi::lua_type(l, -1)
    }
}

/// `t[lightuserdata key] = top of stack` (pops the value).
#[inline]
pub unsafe fn rawset_ptr(l: *mut lua_State, t: c_int, key: *const c_void) {
    // SAFETY: the caller owns `l`, `t` is an absolute index of a table, a value is on top.
    unsafe {
        ffi::lua_pushlightuserdata(l, key as *mut c_void);
        ffi::lua_insert(l, -2);
        ffi::lua_rawset(l, t);
    }
}

/// Converts a relative stack index into an absolute one.
#[inline]
pub unsafe fn abs_index(l: *mut lua_State, idx: c_int) -> c_int {
    // SAFETY: the caller owns `l`.
    if idx > 0 || idx <= ffi::LUA_REGISTRYINDEX {
        idx
    } else {
        unsafe { ffi::lua_gettop(l) + idx + 1 }
    }
}

/// Raises a Lua error with `msg`. Nothing with a destructor may be live in the caller.
pub unsafe fn raise(l: *mut lua_State, msg: &str) -> ! {
    // SAFETY: the caller owns `l`; the message is copied into Lua before unwinding.
    unsafe {
        push_bytes(l, msg.as_bytes());
        ffi::lua_error(l)
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
/// `min(osize, nsize)` bytes of `ptr`, or null (with `ptr` untouched) when out of memory.
pub unsafe extern "C" fn lua_alloc(_ud: *mut c_void, ptr: *mut c_void, _osize: usize, nsize: usize) -> *mut c_void {
    use libmimalloc_sys::{mi_free, mi_malloc, mi_realloc};
    // SAFETY: every non-null `ptr` was returned by this function, i.e. by mimalloc.
    unsafe {
        if nsize == 0 {
            mi_free(ptr);
            std::ptr::null_mut()
        } else if ptr.is_null() {
            mi_malloc(nsize)
        } else {
            mi_realloc(ptr, nsize)
        }
    }
}

/// What a state does on an error outside any protected call: the message goes to stderr
/// (LuaJIT then exits the process, as with `luaL_newstate`'s handler). Script code always runs
/// in `lua_pcall`, so this is only reached by an engine bug.
pub unsafe extern "C-unwind" fn lua_panic(l: *mut lua_State) -> c_int {
    // SAFETY: LuaJIT calls this with the error value on top of the stack of `l`.
    let msg = unsafe { to_bytes(l, -1) }.map(|b| String::from_utf8_lossy(b).into_owned());
    eprintln!(
        "dragonfly-mle: PANIC: unprotected error in call to Lua API ({})",
        msg.as_deref().unwrap_or("?")
    );
    0
}

/// Creates a script state whose memory comes from [`lua_alloc`]. Null when out of memory.
pub fn new_state() -> *mut lua_State {
    // SAFETY: `lua_alloc` follows the allocator contract; the new state is handed to the caller.
    unsafe {
        let l = ffi::lua_newstate(lua_alloc, std::ptr::null_mut());
        if !l.is_null() {
            ffi::lua_atpanic(l, lua_panic);
        }
        l
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state on `lua_alloc` grows, shrinks (table rehash, string buffers) and frees: the
    /// heap count follows, and values survive every move of their blocks.
    #[test]
    fn states_on_the_global_allocator_grow_shrink_and_free() {
        let l = new_state();
        assert!(!l.is_null());
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
            ffi::lua_close(l);
        }
    }
}
