//! The FFI fast paths of `output_event`/`forward_event` and `analyze_event`: called by the
//! prelude's Lua sides of those functions from compiled traces, for the common shapes (an event
//! table unchanged or with one scalar added; the current event passed on unchanged). They
//! check what they are handed as `proxy::df_find` does, and decline (the C functions then do
//! the work and report what is wrong) rather than guess.

use super::boundary::ffi_entry;
use super::context::UNCHANGED_EVENT;
use super::context::with_ctx;
use super::proxy;
use crate::shard::NO_INPUT;

/// What the one member a script added to an event is, as the Lua `output_event` hands it to
/// [`df_emit`] (none: the event is unchanged).
pub(super) const ADDED_NONE: i32 = 0;
pub(super) const ADDED_NUMBER: i32 = 1;
pub(super) const ADDED_STRING: i32 = 2;
pub(super) const ADDED_TRUE: i32 = 3;
pub(super) const ADDED_FALSE: i32 = 4;

/// Answers of the fast paths: the call was done, or the C function must do it.
pub(super) const DONE: i32 = 1;
pub(super) const DECLINED: i32 = 0;

/// `dragonfly.output_event` of an event table that is unchanged or has one member added (a
/// number, string or boolean under a new key). Writes what the C path writes for the same
/// table (numbers with the state's `precision`). Returns [`DONE`], or [`DECLINED`] when the C path must do it (the key exists in the
/// original, the number is NaN or infinite, the hidden fields fail their checks).
///
/// # Safety
///
/// Called by the prelude with `tag`, `key` and `s` pointing to live Lua strings of the given
/// lengths (`key` and `s` may be null when unused) and `line` null or a line block (the
/// prelude checked its metatable, which only `proxy::push_line` sets).
#[allow(clippy::too_many_arguments)]
pub(super) unsafe extern "C" fn df_emit(
    tag: *const u8,
    tag_len: usize,
    line: *const u8,
    span: f64,
    seal: f64,
    key: *const u8,
    key_len: usize,
    kind: i32,
    num: f64,
    s: *const u8,
    s_len: usize,
    precision: i32,
) -> i32 {
    ffi_entry(DECLINED, || {
        let bytes = |p: *const u8, n: usize| -> &[u8] {
            if p.is_null() {
                &[]
            } else {
                // SAFETY: see the function's contract.
                unsafe { std::slice::from_raw_parts(p, n) }
            }
        };
        let (tag, key, s) = (bytes(tag, tag_len), bytes(key, key_len), bytes(s, s_len));
        match kind {
            ADDED_NUMBER if !num.is_finite() => return DECLINED,
            ADDED_NONE | ADDED_NUMBER | ADDED_STRING | ADDED_TRUE | ADDED_FALSE => {}
            _ => return DECLINED,
        }
        with_ctx(|c| {
            // A call whose value `on_error` keeps: the C path notes what is passed on.
            if c.call_value != 0 {
                return DECLINED;
            }
            // SAFETY: see the function's contract.
            let Ok((id, line, start, end)) = (unsafe { proxy::ffi_object(line, span, seal, &mut c.cache) }) else {
                return DECLINED;
            };
            if kind != ADDED_NONE && c.cache.find(id, start, line, key, &mut c.scratch).is_some() {
                return DECLINED;
            }
            let Some(output) = c.output_index(tag) else {
                if !c.unknown_tag_reported("output", tag) {
                    return DECLINED;
                }
                c.unknown_tag("output", tag, || None);
                return DONE;
            };
            // Too many records held: the C function says so in the script.
            if c.records_full().is_some() {
                return DECLINED;
            }
            if kind == ADDED_NONE {
                c.emit_with(output, |out| out.extend_from_slice(&line[start..end]));
                return DONE;
            }
            // As `Encoder::proxy_splice` with nothing replaced: the object up to its closing
            // brace, then the new member.
            c.emit_with(output, |out| {
                if super::json::write_until_close(out, line, start, start, end) {
                    out.push(b',');
                }
                super::json::write_str(out, key);
                out.push(b':');
                match kind {
                    ADDED_NUMBER => {
                        let _ = super::json::write_num(out, num, precision.clamp(1, 17) as u8);
                    }
                    ADDED_STRING => super::json::write_str(out, s),
                    ADDED_TRUE => out.extend_from_slice(b"true"),
                    _ => out.extend_from_slice(b"false"),
                }
                out.push(b'}');
            });
            DONE
        })
    })
}

/// `dragonfly.analyze_event` of the current event's own table, unchanged (no write, no nested
/// table handed out): queues the call as the C path does, with no copy. Returns [`DONE`], or
/// [`DECLINED`] when the C path must do it (another table, which is deep-copied; hidden
/// fields that fail their checks).
///
/// # Safety
///
/// Called by the prelude with `tag` pointing to a live Lua string of `tag_len` bytes and
/// `line` null or a line block (see [`df_emit`]).
pub(super) unsafe extern "C" fn df_queue(tag: *const u8, tag_len: usize, line: *const u8, seal: f64) -> i32 {
    ffi_entry(DECLINED, || {
        // SAFETY: see the function's contract.
        let tag = unsafe { std::slice::from_raw_parts(tag, tag_len) };
        with_ctx(|c| {
            // A call whose value `on_error` keeps: the C path notes what is passed on.
            if c.call_value != 0 {
                return DECLINED;
            }
            // SAFETY: see the function's contract.
            let Ok((id, _, start, _)) = (unsafe { proxy::ffi_object(line, 0.0, seal, &mut c.cache) }) else {
                return DECLINED;
            };
            if c.cur_input == NO_INPUT || (id, start) != c.cur_root {
                return DECLINED;
            }
            match c.analyzer_index(tag) {
                Some(a) => c.push_call(a, UNCHANGED_EVENT),
                None if !c.unknown_tag_reported("analyzer", tag) => return DECLINED,
                None => c.unknown_tag("analyzer", tag, || None),
            }
            DONE
        })
    })
}
