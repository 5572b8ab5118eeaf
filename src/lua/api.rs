//! The `dragonfly` module every script sees (event routing, logging), as C functions over the
//! worker context (`cjson_safe` is in `cjson.rs`).

use std::ffi::c_int;

use mlua::ffi::{self, lua_State};

use super::boundary::{Coerce, LuaFail, arg_bytes, arg_count, c_entry};
use super::context::with_ctx;
use crate::shard::{LOG_OUTPUT, STATS_OUTPUT};

unsafe extern "C-unwind" fn analyze_event(l: *mut lua_State) -> c_int {
    // SAFETY: a lua_CFunction: `l` is this thread's running state, its arguments at 1..=top;
    // the body runs behind `c_entry` (panics caught, errors raised after it returns).
    unsafe {
        c_entry(l, "analyze_event", |l| {
            arg_count(l, "analyze_event", 2)?;
            let tag = arg_bytes(l, "analyze_event", 1, Coerce::StrOrNum)?;
            with_ctx(|c| match c.analyzer_index(tag) {
                Some(a) => {
                    c.queue_analyzer(l, 2, a)
                        .map_err(|e| LuaFail(format!("analyze_event: {e}")))?;
                    c.note_pass(l, 2, super::state::OnErrorAction::ToAnalyzer(a));
                    Ok::<(), LuaFail>(())
                }
                None => {
                    c.unknown_tag("analyzer", tag, || super::boundary::script_where(l));
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
    if let Some(why) = with_ctx(|c| c.records_full()) {
        return Err(LuaFail(format!("{name}: {why}")));
    }
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
                    c.unknown_tag("output", tag, || super::boundary::script_where(l));
                }
                o
            }) {
                Some(o) => {
                    let n = output_to(l, "output_event", o, 2)?;
                    with_ctx(|c| c.note_pass(l, 2, super::state::OnErrorAction::ToOutput(o)));
                    Ok(n)
                }
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
            // As the original's lua_tointeger: a string that reads as a number is that number
            // ("60"), anything else 0; fractions are kept.
            let secs = ffi::lua_tonumber(l, 2);
            with_ctx(|c| match c.analyzer_index(tag) {
                Some(a) => c
                    .set_timer(l, 3, a, secs)
                    .map_err(|e| LuaFail(format!("timer_event: {e}"))),
                None => {
                    c.unknown_tag("analyzer", tag, || super::boundary::script_where(l));
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

unsafe fn set_fn(l: *mut lua_State, t: c_int, name: &std::ffi::CStr, f: ffi::lua_CFunction) {
    // SAFETY: `t` is an absolute index of a table.
    unsafe {
        ffi::lua_pushcclosure(l, f, 0);
        ffi::lua_setfield(l, t, name.as_ptr());
    }
}

/// Installs `dragonfly` as a global and in `package.loaded`.
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
        super::ffi_util::register(l, d, c"dragonfly");
    }
}
