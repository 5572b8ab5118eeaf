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
