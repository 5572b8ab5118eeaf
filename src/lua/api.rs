//! The modules every script sees: `dragonfly` (event routing, logging) and `cjson_safe`
//! (also as `cjson`), as C functions over the worker context.

use std::ffi::c_int;

use mlua::ffi::{self, lua_State};

use super::boundary::{Coerce, LuaFail, arg_bytes, arg_count, c_entry};
use super::context::with_ctx;
use super::ffi_util::push_bytes;
use super::json::Encoder;
use crate::shard::{LOG_OUTPUT, STATS_OUTPUT};

unsafe extern "C-unwind" fn analyze_event(l: *mut lua_State) -> c_int {
    // SAFETY: a lua_CFunction: `l` is this thread's running state, its arguments at 1..=top;
    // the body runs behind `c_entry` (panics caught, errors raised after it returns).
    unsafe {
        c_entry(l, "analyze_event", |l| {
            arg_count(l, "analyze_event", 2)?;
            let tag = arg_bytes(l, "analyze_event", 1, Coerce::StrOrNum)?;
            with_ctx(|c| match c.analyzer_index(tag) {
                Some(a) => c
                    .queue_analyzer(l, 2, a)
                    .map_err(|e| LuaFail(format!("analyze_event: {e}"))),
                None => {
                    c.unknown_tag("analyzer", tag);
                    Ok(())
                }
            })?;
            Ok(0)
        })
    }
}

/// Encodes argument `idx` as one record for `output`.
unsafe fn output_to(
    l: *mut lua_State,
    name: &str,
    output: crate::shard::OutputId,
    idx: c_int,
) -> Result<c_int, LuaFail> {
    // SAFETY: called from C functions with a valid argument index.
    unsafe {
        with_ctx(|c| c.emit_value(l, idx, output)).map_err(|e| LuaFail(format!("{name}: {e}")))?;
        Ok(0)
    }
}

unsafe extern "C-unwind" fn output_event(l: *mut lua_State) -> c_int {
    // SAFETY: a lua_CFunction: `l` is this thread's running state, its arguments at 1..=top;
    // the body runs behind `c_entry` (panics caught, errors raised after it returns).
    unsafe {
        c_entry(l, "output_event", |l| {
            arg_count(l, "output_event", 2)?;
            let tag = arg_bytes(l, "output_event", 1, Coerce::StrOrNum)?;
            match with_ctx(|c| {
                let o = c.output_index(tag);
                if o.is_none() {
                    c.unknown_tag("output", tag);
                }
                o
            }) {
                Some(o) => output_to(l, "output_event", o, 2),
                None => Ok(0),
            }
        })
    }
}

unsafe extern "C-unwind" fn log_event(l: *mut lua_State) -> c_int {
    // SAFETY: a lua_CFunction: `l` is this thread's running state, its arguments at 1..=top;
    // the body runs behind `c_entry` (panics caught, errors raised after it returns).
    unsafe {
        c_entry(l, "log_event", |l| {
            arg_count(l, "log_event", 1)?;
            output_to(l, "log_event", LOG_OUTPUT, 1)
        })
    }
}

unsafe extern "C-unwind" fn stats_event(l: *mut lua_State) -> c_int {
    // SAFETY: a lua_CFunction: `l` is this thread's running state, its arguments at 1..=top;
    // the body runs behind `c_entry` (panics caught, errors raised after it returns).
    unsafe {
        c_entry(l, "stats_event", |l| {
            arg_count(l, "stats_event", 1)?;
            output_to(l, "stats_event", STATS_OUTPUT, 1)
        })
    }
}

unsafe extern "C-unwind" fn timer_event(l: *mut lua_State) -> c_int {
    // SAFETY: a lua_CFunction: `l` is this thread's running state, its arguments at 1..=top;
    // the body runs behind `c_entry` (panics caught, errors raised after it returns).
    unsafe {
        c_entry(l, "timer_event", |l| {
            arg_count(l, "timer_event", 3)?;
            let tag = arg_bytes(l, "timer_event", 1, Coerce::StrOrNum)?;
            // As the original's lua_tointeger: a non-number is 0; fractions are kept.
            let secs = if ffi::lua_type(l, 2) == ffi::LUA_TNUMBER {
                ffi::lua_tonumber(l, 2)
            } else {
                0.0
            };
            with_ctx(|c| match c.analyzer_index(tag) {
                Some(a) => c
                    .set_timer(l, 3, a, secs)
                    .map_err(|e| LuaFail(format!("timer_event: {e}"))),
                None => {
                    c.unknown_tag("analyzer", tag);
                    Ok(())
                }
            })?;
            Ok(0)
        })
    }
}

unsafe extern "C-unwind" fn echo(l: *mut lua_State) -> c_int {
    // SAFETY: a lua_CFunction: `l` is this thread's running state, its arguments at 1..=top;
    // the body runs behind `c_entry` (panics caught, errors raised after it returns).
    unsafe {
        c_entry(l, "echo", |l| {
            arg_count(l, "echo", 1)?;
            let s = super::ffi_util::to_bytes(l, 1).unwrap_or(b"nil");
            let mut line = Vec::with_capacity(s.len() + 1);
            line.extend_from_slice(s);
            line.push(b'\n');
            use std::io::Write;
            let _ = std::io::stderr().write_all(&line);
            Ok(0)
        })
    }
}

thread_local! {
    static SCRATCH: std::cell::RefCell<(Encoder, Vec<u8>)> = std::cell::RefCell::new((Encoder::default(), Vec::new()));
}

unsafe extern "C-unwind" fn cjson_encode(l: *mut lua_State) -> c_int {
    // SAFETY: a lua_CFunction: `l` is this thread's running state, its arguments at 1..=top;
    // the body runs behind `c_entry` (panics caught, errors raised after it returns). The encoder
    // reads the stack
    // only (raw accesses: no metamethod runs).
    unsafe {
        c_entry(l, "encode", |l| {
            one_argument(l)?;
            let r = SCRATCH.with(|s| {
                let mut s = s.try_borrow_mut().map_err(|_| "encode: called from inside itself")?;
                let (enc, out) = &mut *s;
                out.clear();
                enc.precision = super::ffi_util::state_precision(l);
                Ok::<_, &str>(match enc.encode(l, 1, out) {
                    Ok(()) => {
                        push_bytes(l, out);
                        None
                    }
                    Err(e) => Some(e.0),
                })
            })?;
            match r {
                None => Ok(1),
                Some(msg) => {
                    ffi::lua_pushnil(l);
                    push_bytes(l, msg.as_bytes());
                    Ok(2)
                }
            }
        })
    }
}

/// lua-cjson's check of `encode`/`decode`'s argument count, with its message.
unsafe fn one_argument(l: *mut lua_State) -> Result<(), LuaFail> {
    // SAFETY: `l` is the running state.
    if unsafe { ffi::lua_gettop(l) } != 1 {
        return Err(LuaFail("bad argument #1 to '?' (expected 1 argument)".into()));
    }
    Ok(())
}

unsafe extern "C-unwind" fn cjson_decode(l: *mut lua_State) -> c_int {
    // SAFETY: a lua_CFunction: `l` is this thread's running state, its arguments at 1..=top;
    // the body runs behind `c_entry` (panics caught, errors raised after it returns).
    unsafe {
        c_entry(l, "decode", |l| {
            one_argument(l)?;
            // As lua-cjson: a number is decoded as its text (`decode(123)` is 123).
            if ffi::lua_type(l, 1) == ffi::LUA_TNUMBER {
                ffi::lua_tolstring(l, 1, std::ptr::null_mut());
            }
            let Some(s) = super::ffi_util::str_at(l, 1) else {
                // lua-cjson's message (its protected call leaves the function unnamed).
                let ty = std::ffi::CStr::from_ptr(ffi::lua_typename(l, ffi::lua_type(l, 1)));
                ffi::lua_pushnil(l);
                let msg = format!("bad argument #1 to '?' (string expected, got {})", ty.to_string_lossy());
                push_bytes(l, msg.as_bytes());
                return Ok(2);
            };
            // As lua-cjson: a NUL in the first two bytes of a text of two or more is refused
            // (its UTF-16 check), a later one ends the text.
            if s.len() >= 2 && s.iter().take(2).any(|&b| b == 0) {
                ffi::lua_pushnil(l);
                push_bytes(l, b"JSON parser does not support UTF-16 or UTF-32");
                return Ok(2);
            }
            match super::lenient_json::decode(l, s) {
                Ok(()) => Ok(1),
                Err(msg) => {
                    ffi::lua_pushnil(l);
                    push_bytes(l, msg.as_bytes());
                    Ok(2)
                }
            }
        })
    }
}

/// `cjson_safe.new()`: the same module (its settings are fixed here).
unsafe extern "C-unwind" fn cjson_new(l: *mut lua_State) -> c_int {
    // SAFETY: a lua_CFunction made with the module as upvalue 1 (`install`); a push cannot raise.
    unsafe {
        ffi::lua_pushvalue(l, ffi::lua_upvalueindex(1));
        1
    }
}

/// `cjson_safe.encode_number_precision([n])`: significant digits of non-integer numbers this
/// state writes (`cjson_safe.encode` and its records), 1 to 17 (17: the shortest form that
/// reads back to the same double); returns the setting. The prelude wraps it (its output fast
/// path needs the value too).
unsafe extern "C-unwind" fn cjson_precision(l: *mut lua_State) -> c_int {
    // SAFETY: a lua_CFunction: `l` is this thread's running state, its arguments at 1..=top;
    // the body runs behind `c_entry` (panics caught, errors raised after it returns).
    unsafe {
        c_entry(l, "encode_number_precision", |l| {
            if ffi::lua_gettop(l) >= 1 && ffi::lua_type(l, 1) != ffi::LUA_TNIL {
                // A number, or a string holding one (as lua-cjson's luaL_checkinteger).
                let n = if ffi::lua_isnumber(l, 1) != 0 {
                    ffi::lua_tonumber(l, 1)
                } else {
                    0.0
                };
                if !(1.0..=17.0).contains(&n) || n.fract() != 0.0 {
                    return Err(
                        "bad argument #1 to 'encode_number_precision' (expected integer between 1 and 17)".into(),
                    );
                }
                ffi::lua_pushnumber(l, n);
                ffi::lua_rawseti_(l, ffi::LUA_REGISTRYINDEX, super::ffi_util::reg::PRECISION);
            }
            ffi::lua_pushnumber(l, super::ffi_util::state_precision(l) as f64);
            Ok(1)
        })
    }
}

/// The lua-cjson configuration setters: accepted for compatibility, settings unchanged;
/// they return their argument(s) like a successful set.
unsafe extern "C-unwind" fn cjson_setting(l: *mut lua_State) -> c_int {
    // SAFETY: a lua_CFunction: `l` is the running state; nothing here can raise.
    unsafe { ffi::lua_gettop(l) }
}

unsafe fn set_fn(l: *mut lua_State, t: c_int, name: &std::ffi::CStr, f: ffi::lua_CFunction) {
    // SAFETY: `t` is an absolute index of a table.
    unsafe {
        ffi::lua_pushcclosure(l, f, 0);
        ffi::lua_setfield(l, t, name.as_ptr());
    }
}

/// Installs `dragonfly`, `cjson_safe` and `cjson` as globals and in `package.loaded`.
pub(super) unsafe fn install(l: *mut lua_State) {
    // SAFETY: `l` is a fresh state of this thread with the standard libraries open.
    unsafe {
        ffi::lua_createtable(l, 0, 12);
        let d = ffi::lua_gettop(l);
        set_fn(l, d, c"analyze_event", analyze_event);
        set_fn(l, d, c"output_event", output_event);
        set_fn(l, d, c"forward_event", output_event);
        set_fn(l, d, c"log_event", log_event);
        set_fn(l, d, c"stats_event", stats_event);
        set_fn(l, d, c"echo", echo);
        set_fn(l, d, c"timer_event", timer_event);
        set_fn(l, d, c"http_get", super::builtins::http_get);
        set_fn(l, d, c"dnslookup", super::builtins::dnslookup);
        set_fn(l, d, c"date2epoch", super::builtins::date2epoch);
        register(l, d, c"dragonfly");

        ffi::lua_createtable(l, 0, 16);
        let j = ffi::lua_gettop(l);
        set_fn(l, j, c"encode", cjson_encode);
        set_fn(l, j, c"decode", cjson_decode);
        ffi::lua_pushvalue(l, j);
        ffi::lua_pushcclosure(l, cjson_new, 1);
        ffi::lua_setfield(l, j, c"new".as_ptr());
        for name in [
            c"encode_sparse_array",
            c"encode_max_depth",
            c"decode_max_depth",
            c"encode_keep_buffer",
            c"encode_invalid_numbers",
            c"decode_invalid_numbers",
        ] {
            set_fn(l, j, name, cjson_setting);
        }
        set_fn(l, j, c"encode_number_precision", cjson_precision);
        ffi::lua_pushlightuserdata(l, std::ptr::null_mut());
        ffi::lua_setfield(l, j, c"null".as_ptr());
        push_bytes(l, b"cjson");
        ffi::lua_setfield(l, j, c"_NAME".as_ptr());
        push_bytes(l, b"2.1.0");
        ffi::lua_setfield(l, j, c"_VERSION".as_ptr());
        ffi::lua_pushvalue(l, j);
        register(l, ffi::lua_gettop(l), c"cjson");
        register(l, j, c"cjson_safe");
    }
}

/// Sets global `name` and `package.loaded[name]` to the table at `t`, then pops it.
pub(super) unsafe fn register(l: *mut lua_State, t: c_int, name: &std::ffi::CStr) {
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
