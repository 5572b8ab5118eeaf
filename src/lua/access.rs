//! The entry points of event tables that scripts reach: the FFI field lookup `df_find` the
//! prelude's `__index` calls from compiled code, the C part of `__index`, and `next`. Each
//! reaches the worker context through `try_with_ctx` behind the boundary (a finalizer's read
//! while the context is in use gets a member cache of its own); the table itself, and the
//! checks of its hidden fields, are `proxy`'s.

use std::ffi::c_int;

use mlua::ffi::{self, lua_State};

use super::context::try_with_ctx;
use super::ffi_util::push_bytes;
use super::member_cache::{MemberCache, ValueBuf};
use super::proxy::{
    F_ABSENT, F_FALSE, F_INT, F_NESTED, F_NULL, F_NUMBER, F_OBJECT, F_STRING, F_TAMPERED, F_TRUE, FieldOut, K_ORDER,
    K_SET, Tampered, checked_range, is_proxy, is_tomb, line_of, parts, push_field, rawget_i, rawset_i,
};
use crate::event::scan::{self, Kind};

/// The field lookup called through LuaJIT's FFI by the Lua `__index` of event tables (see
/// `prelude.lua`), so that compiled traces read fields without going through the Lua C API.
/// An object's span is handed to the Lua side, which makes the nested table ([`F_OBJECT`]);
/// arrays are left to the C `__index` ([`F_NESTED`]); hidden fields that fail
/// their checks give [`F_TAMPERED`] (the Lua side raises the error).
///
/// # Safety
///
/// Called by the prelude with `line` a line block (it checked the block's metatable, which
/// only [`push_line`] sets; it may also pass null), `key` a live Lua string of `key_len`
/// bytes and `out` its own `FieldOut`; the string a kind-1 answer points to stays valid until
/// the next call on this thread.
pub(super) unsafe extern "C" fn df_find(
    line: *const u8,
    span: f64,
    seal: f64,
    key: *const u8,
    key_len: usize,
    out: *mut FieldOut,
) -> i32 {
    super::boundary::ffi_entry(F_TAMPERED, || {
        if line.is_null() || out.is_null() {
            return F_TAMPERED;
        }
        // SAFETY: see the function's contract.
        let ((h, line), key, out) = unsafe { (line_of(line), std::slice::from_raw_parts(key, key_len), &mut *out) };
        let mut find = |cache: &mut MemberCache, scratch: &mut Vec<u8>, value: &mut ValueBuf| {
            find_member(&h, line, span, seal, key, out, cache, scratch, value)
        };
        // A read while an enclosing call of the engine holds the worker's context: a
        // finalizer that reads an event, run by an allocation inside that call. It is served
        // with a cache of its own.
        let kind = match try_with_ctx(|c| find(&mut c.cache, &mut c.scratch, &mut c.value_scratch)) {
            Some(kind) => kind,
            None => with_nested_cache(|n| find(&mut n.cache, &mut n.scratch, &mut n.value)),
        };
        out.kind = stamped(kind);
        out.kind
    })
}

/// A member cache and scratch buffers for reads made while the worker's own are in use.
#[derive(Default)]
struct NestedCache {
    cache: MemberCache,
    scratch: Vec<u8>,
    value: ValueBuf,
}

thread_local! {
    /// The caches of reads made while the worker's context is in use (see
    /// [`with_nested_cache`]), kept for the next such read.
    static NESTED_CACHES: std::cell::RefCell<Vec<NestedCache>> = const { std::cell::RefCell::new(Vec::new()) };
    /// The number of the last answer of [`df_find`] on this thread (see [`stamped`]).
    static FIND_STAMP: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Bits of an answer's stamp above its kind: the stamp stays a positive `i32`.
const STAMP_BITS: u32 = 27;

/// `kind` with the number of this answer above its low four bits. The Lua side shares one
/// `FieldOut` between all reads of its state, and a finalizer run between a call and the
/// Lua side's reads of `out` can make another call: the Lua side takes `out`'s values only
/// when `out.kind` still holds the stamp its call returned.
fn stamped(kind: i32) -> i32 {
    debug_assert!((0..16).contains(&kind));
    let n = FIND_STAMP.with(|s| {
        let n = s.get().wrapping_add(1) & ((1 << STAMP_BITS) - 1);
        s.set(n);
        n
    });
    kind | (n << 4) as i32
}

/// Runs `f` with a member cache of its own: for the reads of a finalizer that runs while an
/// enclosing call of the engine holds the worker's context (an allocation inside that call
/// ran the collector). The cache is taken out of the thread's pool for the call, since a read
/// that pushes Lua values can run another finalizer that reads too.
fn with_nested_cache<R>(f: impl FnOnce(&mut NestedCache) -> R) -> R {
    let mut n = NESTED_CACHES.with(|p| p.borrow_mut().pop()).unwrap_or_default();
    let r = f(&mut n);
    NESTED_CACHES.with(|p| p.borrow_mut().push(n));
    r
}

/// The body of [`df_find`]: looks member `key` up in the object the hidden fields name and
/// fills `out`; its kind.
#[allow(clippy::too_many_arguments)]
fn find_member(
    h: &super::proxy::LineHeader,
    line: &[u8],
    span: f64,
    seal: f64,
    key: &[u8],
    out: &mut FieldOut,
    cache: &mut MemberCache,
    scratch: &mut Vec<u8>,
    value_scratch: &mut ValueBuf,
) -> i32 {
    let Ok((start, _)) = checked_range(h, line, span, seal, Some(cache)) else {
        out.kind = F_TAMPERED;
        return F_TAMPERED;
    };
    let Some(m) = cache.find(h.id, start, line, key, scratch) else {
        out.kind = F_ABSENT;
        return F_ABSENT;
    };
    let (vs, ve) = (m.val_start as usize, m.val_end as usize);
    let raw = &line[vs..ve];
    out.kind = match scan::kind(line, vs) {
        Kind::String => {
            let body = &raw[1..raw.len().saturating_sub(1).max(1)];
            if memchr::memchr(b'\\', body).is_none() {
                out.ptr = body.as_ptr();
                out.len = body.len() as i32;
            } else {
                let v = value_scratch.unescape(body);
                out.ptr = v.as_ptr();
                out.len = v.len() as i32;
            }
            F_STRING
        }
        Kind::Number => {
            let v = scan::number(raw);
            let i = v as i32;
            if f64::from(i) == v && (i != 0 || v.is_sign_positive()) {
                out.len = i;
                F_INT
            } else {
                out.num = v;
                F_NUMBER
            }
        }
        Kind::True => F_TRUE,
        Kind::False => F_FALSE,
        Kind::Null => F_NULL,
        Kind::Object => {
            cache.mark_span(h.id, vs, ve, line);
            out.num = super::proxy::pack_span(vs, ve);
            F_OBJECT
        }
        Kind::Array => F_NESTED,
        Kind::Invalid => F_ABSENT,
    };
    out.kind
}

/// The C part of `__index` (the Lua part in `prelude.lua` has already looked in the writes
/// and the nested tables, and read scalars itself): decodes member `k` of the proxy at 1.
pub(super) unsafe extern "C-unwind" fn slow_index(l: *mut lua_State) -> c_int {
    // SAFETY: a lua_CFunction called by the prelude's `__index` with (t, k); the body runs behind
    // `c_entry`.
    unsafe {
        super::boundary::c_entry(l, "event field", |l| {
            ffi::lua_settop(l, 2);
            if !is_proxy(l, 1) {
                ffi::lua_pushnil(l);
                return Ok(1);
            }
            try_with_ctx(|c| push_field(l, 1, 2, &mut c.cache, &mut c.scratch))
                .unwrap_or_else(|| with_nested_cache(|n| push_field(l, 1, 2, &mut n.cache, &mut n.scratch)))
                .map_err(|e| e.to_string())?;
            Ok(1)
        })
    }
}

/// `next` of event tables: the original members in document order (minus deleted ones; a
/// key that occurs twice only at its first occurrence, whose value a read gives), then added
/// keys in the order of their first write; values are what a read gives (`push_field`), so
/// iterating an event neither changes it nor decodes more than it hands out. The prelude's
/// `next` calls it for event tables and the original `next` for the others.
pub(super) unsafe extern "C-unwind" fn lua_next_proxy(l: *mut lua_State) -> c_int {
    // SAFETY: called by the prelude's `next` with (t, k), t an event table.
    unsafe {
        super::boundary::c_entry(l, "next", |l| {
            ffi::lua_settop(l, 2);
            if !is_proxy(l, 1) {
                return Err("bad argument #1 to 'next' (table expected)".into());
            }
            try_with_ctx(|c| next_proxy(l, &mut c.cache, &mut c.scratch))
                .unwrap_or_else(|| with_nested_cache(|n| next_proxy(l, &mut n.cache, &mut n.scratch)))
                .map_err(|e| e.to_string().into())
        })
    }
}

/// The body of [`lua_next_proxy`], with (t, k) at 1 and 2.
unsafe fn next_proxy(
    l: *mut lua_State,
    cache: &mut MemberCache,
    field_scratch: &mut Vec<u8>,
) -> Result<c_int, Tampered> {
    // SAFETY: 1 is a proxy; values are pushed above 2.
    unsafe {
        let p = parts(l, 1, Some(&mut *cache))?;
        let n_members = cache.members(p.id, p.start, p.line).len();
        let dup_keys = cache.has_dup_keys(p.id, p.start, p.line);
        let has_set = rawget_i(l, 1, K_SET) == ffi::LUA_TTABLE; // 3
        let mut scratch = Vec::new();
        // Where to resume: after the member named k, or in the added keys.
        let mut from_member = 0usize;
        let mut in_added = false;
        if ffi::lua_type(l, 2) != ffi::LUA_TNIL {
            in_added = true;
            if let Some(k) = super::ffi_util::str_at(l, 2) {
                let walk = cache.walk;
                let members = cache.members(p.id, p.start, p.line);
                // The step after the member handed out last (a `pairs` loop), else a search.
                let last = (walk.0 == p.id && walk.1 == p.start).then_some(walk.2).filter(|&j| {
                    members
                        .get(j)
                        .is_some_and(|m| super::member_cache::key_matches(p.line, m, k, &mut scratch))
                });
                if let Some(i) = last.or_else(|| {
                    members
                        .iter()
                        .position(|m| super::member_cache::key_matches(p.line, m, k, &mut scratch))
                }) {
                    from_member = i + 1;
                    in_added = false;
                }
            }
        }
        if !in_added {
            for j in from_member..n_members {
                let m = cache.members(p.id, p.start, p.line)[j];
                let raw = &p.line[m.key_start as usize..m.key_end as usize];
                let name: &[u8] = if m.key_escaped {
                    scan::unescape(raw, &mut scratch);
                    &scratch
                } else {
                    raw
                };
                if dup_keys
                    && cache.members(p.id, p.start, p.line)[..j]
                        .iter()
                        .any(|e| super::member_cache::key_matches(p.line, e, name, &mut Vec::new()))
                {
                    continue;
                }
                push_bytes(l, name);
                let key = ffi::lua_gettop(l);
                if has_set {
                    ffi::lua_pushvalue(l, key);
                    ffi::lua_rawget_(l, 3);
                    let deleted = is_tomb(l, -1);
                    ffi::lua_pop(l, 1);
                    if deleted {
                        ffi::lua_settop(l, key - 1);
                        continue;
                    }
                }
                push_field(l, 1, key, cache, field_scratch)?;
                cache.walk = (p.id, p.start, j);
                return Ok(2);
            }
        }
        // Added keys, in order of first write, after the one given (if any).
        if !has_set {
            ffi::lua_pushnil(l);
            return Ok(1);
        }
        if rawget_i(l, 1, K_ORDER) != ffi::LUA_TTABLE {
            // One key written so far: its order list is made now (it holds that key).
            ffi::lua_pop(l, 1);
            ffi::lua_createtable(l, 4, 0);
            let o = ffi::lua_gettop(l);
            ffi::lua_pushnil(l);
            if ffi::lua_next(l, 3) != 0 {
                ffi::lua_pop(l, 1);
                ffi::lua_rawseti_(l, o, 1);
            }
            ffi::lua_pushvalue(l, o);
            rawset_i(l, 1, K_ORDER);
        }
        let order = ffi::lua_gettop(l);
        let len = ffi::lua_objlen(l, order) as c_int;
        let mut i = 1;
        if in_added {
            while i <= len {
                ffi::lua_rawgeti_(l, order, i);
                let same = ffi::lua_rawequal(l, -1, 2) != 0;
                ffi::lua_pop(l, 1);
                i += 1;
                if same {
                    break;
                }
            }
        }
        while i <= len {
            ffi::lua_rawgeti_(l, order, i);
            let key = ffi::lua_gettop(l);
            i += 1;
            let original = match super::ffi_util::str_at(l, key) {
                Some(k) => cache
                    .members(p.id, p.start, p.line)
                    .iter()
                    .any(|m| super::member_cache::key_matches(p.line, m, k, &mut scratch)),
                None => false,
            };
            ffi::lua_pushvalue(l, key);
            ffi::lua_rawget_(l, 3);
            if original || is_tomb(l, -1) {
                ffi::lua_settop(l, key - 1);
                continue;
            }
            return Ok(2);
        }
        ffi::lua_pushnil(l);
        Ok(1)
    }
}

/// `isproxy(t)` for the prelude's `pairs` and `next`.
pub(super) unsafe extern "C-unwind" fn lua_is_proxy(l: *mut lua_State) -> c_int {
    // SAFETY: a lua_CFunction: `l` is the running state; only raw reads and a push, which cannot
    // raise.
    unsafe {
        let yes = is_proxy(l, 1);
        ffi::lua_pushboolean(l, yes as c_int);
        1
    }
}
