//! The lazy event table. An event reaches `loop(msg)` as an empty Lua table whose metatable
//! looks fields up in the event's original bytes on first access, so fields no script reads
//! are never decoded. Writes and deletions go to a side table; nested objects become nested
//! proxies over the same bytes. When the event is written out, an unmodified proxy is copied
//! as its original bytes and a modified one as those bytes with the changed members spliced in.
//!
//! Layout of a proxy (all keys are negative integers, which `pairs`/`next` of a proxy never
//! show): `[K_LINE]` the whole line as a userdata holding a small header (length, event id,
//! range of the top-level object) and the bytes (not a string: a line is unique, so
//! interning it would only cost a hash and a string-table probe per event), `[K_SPAN]` the
//! object's byte range packed into a number (absent for the top-level object), `[K_SET]`
//! writes (absent until the first write; deletions are the metatable itself), `[K_ORDER]`
//! keys in the order of their first write (so new members are written in a reproducible
//! order), `[K_CACHE]` nested tables handed out so far.

use std::ffi::c_int;

use mlua::ffi::{self, lua_State};

use super::ffi_util::{abs_index, push_bytes};
use super::worker::ctx;
use crate::event::scan::{self, Kind};

// Hidden keys are negative integers: JSON object keys are always strings, and integer keys
// cost no string interning (lightuserdata keys do, on 64-bit LuaJIT).
const K_LINE: i64 = -1;
const K_SPAN: i64 = -2;
const K_SET: i64 = -4;
const K_CACHE: i64 = -5;
const K_ORDER: i64 = -6;
/// Key of the mark in the proxy metatable.
const K_MARK: i64 = -1;
/// Registry slot of the proxy metatable (luaL_ref only uses positive keys).
const REG_MT: i64 = -17_001;

#[inline]
unsafe fn rawget_i(l: *mut lua_State, t: c_int, k: i64) -> c_int {
    // SAFETY: `t` is an absolute index of a table.
    unsafe {
        ffi::lua_rawgeti_(l, t, k as c_int);
        ffi::lua_type(l, -1)
    }
}

#[inline]
unsafe fn rawset_i(l: *mut lua_State, t: c_int, k: i64) {
    // SAFETY: `t` is an absolute index of a table and a value is on top.
    unsafe { ffi::lua_rawseti_(l, t, k as c_int) }
}

/// Pushes the proxy metatable of this state; it doubles as the deletion marker in write
/// tables (no script can produce it by accident).
#[inline]
pub unsafe fn push_mt(l: *mut lua_State) {
    // SAFETY: `install` stored the metatable in the registry.
    unsafe { ffi::lua_rawgeti_(l, ffi::LUA_REGISTRYINDEX, REG_MT as c_int) }
}

/// Whether the value at `idx` is the deletion marker.
#[inline]
pub unsafe fn is_tomb(l: *mut lua_State, idx: c_int) -> bool {
    // SAFETY: `idx` is a valid index; the stack is restored.
    unsafe {
        if ffi::lua_type(l, idx) != ffi::LUA_TTABLE {
            return false;
        }
        let idx = abs_index(l, idx);
        push_mt(l);
        let eq = ffi::lua_rawequal(l, idx, -1) != 0;
        ffi::lua_pop(l, 1);
        eq
    }
}

const SPAN_SHIFT: f64 = (1u64 << 26) as f64;

fn pack_span(start: usize, end: usize) -> f64 {
    start as f64 * SPAN_SHIFT + (end - start) as f64
}

fn unpack_span(v: f64) -> (usize, usize) {
    let start = (v / SPAN_SHIFT).floor();
    let len = v - start * SPAN_SHIFT;
    (start as usize, start as usize + len as usize)
}

/// Installs the proxy metatable in the registry of `l` (once per state).
pub unsafe fn install(l: *mut lua_State) {
    // SAFETY: `l` is a fresh state owned by the calling worker thread.
    unsafe {
        ffi::lua_createtable(l, 0, 4);
        let mt = ffi::lua_gettop(l);
        // `__index` and `__newindex` are Lua functions, set by the state's prelude.
        ffi::lua_pushboolean(l, 1);
        rawset_i(l, mt, K_MARK);
        ffi::lua_rawseti_(l, ffi::LUA_REGISTRYINDEX, REG_MT as c_int);
    }
}

/// What [`df_find`] reports about one member, for the Lua side of the lookup.
#[repr(C)]
pub struct FieldOut {
    /// 0 absent, 1 string, 2 number, 3 true, 4 false, 5 null, 6 object or array.
    pub kind: i32,
    pub len: i32,
    pub num: f64,
    pub ptr: *const u8,
}

/// The field lookup called through LuaJIT's FFI by the Lua `__index` of event tables (see
/// `FAST_META` in `lua/worker.rs`), so that compiled traces read fields without going through
/// the Lua C API. Objects and arrays are left to the C `__index` (kind 6).
///
/// # Safety
///
/// Called by LuaJIT with `line` pointing to a live line userdata block (see [`push_line`]),
/// `key` to a live Lua string of the given length and `out` to a live `FieldOut`; the string
/// a kind-1 answer points to stays valid until the next call on this thread.
pub unsafe extern "C" fn df_find(
    line: *const u8,
    span: f64,
    key: *const u8,
    key_len: usize,
    out: *mut FieldOut,
) -> i32 {
    // SAFETY: see the function's contract.
    let ((id, line, start, _), key, out) = unsafe {
        (
            ffi_object(line, span),
            std::slice::from_raw_parts(key, key_len),
            &mut *out,
        )
    };
    let c = ctx();
    let Some(m) = c.cache.find(id, start, line, key, &mut c.scratch) else {
        out.kind = 0;
        return 0;
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
                scan::unescape(body, &mut c.value_scratch);
                out.ptr = c.value_scratch.as_ptr();
                out.len = c.value_scratch.len() as i32;
            }
            1
        }
        Kind::Number => {
            out.num = scan::number(raw);
            2
        }
        Kind::True => 3,
        Kind::False => 4,
        Kind::Null => 5,
        Kind::Object | Kind::Array => 6,
        Kind::Invalid => 0,
    };
    out.kind
}

/// The object a proxy stands for, from what its Lua side hands the FFI: its line block and its
/// span (0 for the top-level object, whose table has no span). Returns the event id, the line
/// and the object's byte range.
///
/// # Safety
///
/// `ud` points to a line block made by [`push_line`] that outlives `'a`.
#[inline]
pub unsafe fn ffi_object<'a>(ud: *const u8, span: f64) -> (f64, &'a [u8], usize, usize) {
    // SAFETY: see the contract.
    let (h, line) = unsafe { line_of(ud) };
    let (start, end) = object_range(&h, line, span);
    (h.id, line, start, end)
}

/// The byte range of the object at `span` (0: the top-level object) of a line, clamped to it.
#[inline]
fn object_range(h: &LineHeader, line: &[u8], span: f64) -> (usize, usize) {
    let (start, end) = if span == 0.0 {
        (h.root_start as usize, h.root_end as usize)
    } else {
        unpack_span(span)
    };
    let end = end.min(line.len());
    (start.min(end), end)
}

/// Whether the value at `idx` is a proxy.
#[inline]
pub unsafe fn is_proxy(l: *mut lua_State, idx: c_int) -> bool {
    // SAFETY: `l` is owned by the caller; the stack is restored.
    unsafe {
        if ffi::lua_getmetatable(l, idx) == 0 {
            return false;
        }
        let mt = ffi::lua_gettop(l);
        let t = rawget_i(l, mt, K_MARK);
        ffi::lua_settop(l, mt - 1);
        t == ffi::LUA_TBOOLEAN
    }
}

/// Pushes a new proxy over the line userdata at absolute index `line_idx` for the object at
/// `span` (`None`: the line's top-level object).
pub unsafe fn push_proxy(l: *mut lua_State, line_idx: c_int, span: Option<(usize, usize)>) {
    // SAFETY: `l` is owned by the caller and `line_idx` holds a line userdata.
    unsafe { push_proxy_with(l, || ffi::lua_pushvalue(l, line_idx), span) }
}

/// Pushes a new proxy whose line `push_line` pushes (right under the new table, so no copy of
/// it is left on the stack), for the object at `span`.
unsafe fn push_proxy_with(l: *mut lua_State, push_line: impl FnOnce(), span: Option<(usize, usize)>) {
    // SAFETY: `l` is owned by the caller and `push_line` pushes one line userdata.
    unsafe {
        // Two hash slots: the line and the write table of a changed event (a nested object
        // also has its span, and grows on its first write).
        ffi::lua_createtable(l, 0, 2);
        let t = ffi::lua_gettop(l);
        push_line();
        rawset_i(l, t, K_LINE);
        if let Some((start, end)) = span {
            ffi::lua_pushnumber(l, pack_span(start, end));
            rawset_i(l, t, K_SPAN);
        }
        push_mt(l);
        ffi::lua_setmetatable(l, t);
    }
}

/// Pushes a line userdata for `line`, the bytes of event `id`: a header (see [`LineHeader`])
/// and the bytes. Returns its absolute index.
pub unsafe fn push_line(l: *mut lua_State, line: &[u8], id: f64) -> c_int {
    // The reader validated the line as one JSON object: it ends at the last non-whitespace
    // byte.
    let start = scan::skip_ws(line, 0);
    let mut end = line.len();
    while end > start && matches!(line[end - 1], b' ' | b'\t' | b'\r' | b'\n') {
        end -= 1;
    }
    let h = LineHeader {
        len: line.len() as u64,
        id,
        root_start: start as u32,
        root_end: end as u32,
    };
    // SAFETY: `l` is owned by the caller; the new userdata has room for the header and
    // `line`.
    unsafe {
        let ud = ffi::lua_newuserdata(l, LINE_HEADER + line.len()).cast::<u8>();
        ud.cast::<LineHeader>().write_unaligned(h);
        std::ptr::copy_nonoverlapping(line.as_ptr(), ud.add(LINE_HEADER), line.len());
        ffi::lua_gettop(l)
    }
}

/// Pushes a new top-level proxy for an event whose bytes are `line`.
pub unsafe fn push_event(l: *mut lua_State, line: &[u8], id: f64) {
    // SAFETY: `l` is owned by the caller.
    unsafe {
        push_proxy_with(
            l,
            || {
                push_line(l, line, id);
            },
            None,
        )
    }
}

/// What a line userdata holds before the line's bytes: all the FFI lookup gets besides the
/// block's address, and what every proxy over the line shares (the event id, for the member
/// cache; the top-level object's range, which top-level proxies leave out of their table).
#[derive(Clone, Copy)]
#[repr(C)]
struct LineHeader {
    len: u64,
    id: f64,
    root_start: u32,
    root_end: u32,
}

const LINE_HEADER: usize = std::mem::size_of::<LineHeader>();

/// The header and the line of a line userdata block.
///
/// # Safety
///
/// `ud` points to a block made by [`push_line`] that outlives `'a`.
#[inline]
unsafe fn line_of<'a>(ud: *const u8) -> (LineHeader, &'a [u8]) {
    // SAFETY: see the contract; the header holds the length of the bytes after it.
    unsafe {
        let h = ud.cast::<LineHeader>().read_unaligned();
        (h, std::slice::from_raw_parts(ud.add(LINE_HEADER), h.len as usize))
    }
}

/// The header and bytes of the line userdata at `idx` (`None` for anything else).
#[inline]
unsafe fn line_at<'a>(l: *mut lua_State, idx: c_int) -> Option<(LineHeader, &'a [u8])> {
    // SAFETY: a userdata's block does not move and lives while the proxy holding it does.
    // Only `push_line` makes the userdata found under `K_LINE`; a script that stores another
    // there gets a block whose size does not match a header.
    unsafe {
        let p = ffi::lua_touserdata(l, idx);
        let size = ffi::lua_objlen(l, idx);
        if p.is_null() || size < LINE_HEADER {
            return None;
        }
        let (h, line) = line_of(p.cast::<u8>());
        (LINE_HEADER + line.len() == size).then_some((h, line))
    }
}

/// The parts of the proxy at absolute index `t`; pushes nothing.
pub struct Parts<'a> {
    pub line: &'a [u8],
    pub start: usize,
    pub end: usize,
    pub id: f64,
}

pub unsafe fn parts<'a>(l: *mut lua_State, t: c_int) -> Parts<'a> {
    // SAFETY: `t` is a proxy; the line userdata stays referenced by it while it is alive.
    unsafe {
        rawget_i(l, t, K_LINE);
        let Some((h, line)) = line_at(l, -1) else {
            ffi::lua_pop(l, 1);
            return Parts {
                line: &[],
                start: 0,
                end: 0,
                id: -1.0,
            };
        };
        // No span (nil, read as 0): the top-level object.
        rawget_i(l, t, K_SPAN);
        let (start, end) = object_range(&h, line, ffi::lua_tonumber(l, -1));
        ffi::lua_settop(l, -3);
        Parts {
            line,
            start,
            end,
            id: h.id,
        }
    }
}

/// Pushes the decoded JSON value `buf[start..end]`; objects become proxies over the line at
/// absolute index `line_idx`.
pub unsafe fn push_json(l: *mut lua_State, line_idx: c_int, buf: &[u8], start: usize, end: usize) {
    // SAFETY: `l` is owned by the caller; `buf` is the string at `line_idx`.
    unsafe {
        let raw = &buf[start..end];
        match scan::kind(buf, start) {
            Kind::String => {
                let body = &raw[1..raw.len().saturating_sub(1).max(1)];
                if memchr::memchr(b'\\', body).is_none() {
                    push_bytes(l, body);
                } else {
                    let c = ctx();
                    scan::unescape(body, &mut c.scratch);
                    push_bytes(l, &c.scratch);
                }
            }
            Kind::Number => ffi::lua_pushnumber(l, scan::number(raw)),
            Kind::True => ffi::lua_pushboolean(l, 1),
            Kind::False => ffi::lua_pushboolean(l, 0),
            Kind::Null => ffi::lua_pushlightuserdata(l, std::ptr::null_mut()),
            Kind::Object => push_proxy(l, line_idx, Some((start, end))),
            Kind::Array => {
                ffi::lua_createtable(l, 4, 0);
                let t = ffi::lua_gettop(l);
                let mut n = 0;
                scan::array_elements(buf, start, |a, b| {
                    n += 1;
                    push_json(l, line_idx, buf, a, b);
                    ffi::lua_rawseti_(l, t, n);
                });
            }
            Kind::Invalid => ffi::lua_pushnil(l),
        }
    }
}

/// Finds member `k` of the proxy's object: returns its value range.
fn find(p: &Parts<'_>, k: &[u8]) -> Option<(usize, usize)> {
    let c = ctx();
    c.cache
        .find(p.id, p.start, p.line, k, &mut c.scratch)
        .map(|m| (m.val_start as usize, m.val_end as usize))
}

/// The C part of `__index` (the Lua part, `FAST_META` in `lua/worker.rs`, has already looked
/// in the writes and the nested tables, and read scalars itself): decodes member `k` of the
/// proxy at 1 and, for an object or array, keeps the table it hands out, so that changes made
/// through it stay.
pub unsafe extern "C-unwind" fn slow_index(l: *mut lua_State) -> c_int {
    // SAFETY: called by Lua with (t, k); t is a proxy.
    unsafe {
        ffi::lua_settop(l, 2);
        let Some(k) = super::ffi_util::str_at(l, 2) else {
            ffi::lua_pushnil(l);
            return 1;
        };
        let p = parts(l, 1);
        let Some((vs, ve)) = find(&p, k) else {
            ffi::lua_pushnil(l);
            return 1;
        };
        rawget_i(l, 1, K_LINE); // 3: the line, for nested proxies
        let kind = scan::kind(p.line, vs);
        push_json(l, 3, p.line, vs, ve); // 4
        if matches!(kind, Kind::Object | Kind::Array) {
            if rawget_i(l, 1, K_CACHE) != ffi::LUA_TTABLE {
                ffi::lua_settop(l, 4);
                ffi::lua_createtable(l, 0, 2);
                ffi::lua_pushvalue(l, -1);
                rawset_i(l, 1, K_CACHE);
            }
            ffi::lua_pushvalue(l, 2);
            ffi::lua_pushvalue(l, 4);
            ffi::lua_rawset(l, 5);
            ffi::lua_settop(l, 4);
        }
        1
    }
}

/// Whether the proxy at absolute index `t` (or any nested proxy it handed out) was changed.
pub unsafe fn is_dirty(l: *mut lua_State, t: c_int) -> bool {
    // SAFETY: `t` is a proxy; the stack is restored.
    unsafe {
        let top = ffi::lua_gettop(l);
        if rawget_i(l, t, K_SET) == ffi::LUA_TTABLE {
            ffi::lua_settop(l, top);
            return true;
        }
        ffi::lua_settop(l, top);
        if rawget_i(l, t, K_CACHE) != ffi::LUA_TTABLE {
            ffi::lua_settop(l, top);
            return false;
        }
        let cache = top + 1;
        ffi::lua_pushnil(l);
        while ffi::lua_next(l, cache) != 0 {
            let v = ffi::lua_gettop(l);
            if member_changed(l, t, v - 1, v) {
                ffi::lua_settop(l, top);
                return true;
            }
            ffi::lua_settop(l, v - 1);
        }
        ffi::lua_settop(l, top);
        false
    }
}

/// Pushes the current value of member `m` of proxy `t`: from its writes (tombstones included),
/// its nested proxies, or else `None` when the original bytes stand.
pub unsafe fn push_override(l: *mut lua_State, t: c_int, name: &[u8]) -> bool {
    // SAFETY: `t` is a proxy; leaves exactly one value when it returns true.
    unsafe {
        let top = ffi::lua_gettop(l);
        for k in [K_SET, K_CACHE] {
            if rawget_i(l, t, k) == ffi::LUA_TTABLE {
                push_bytes(l, name);
                ffi::lua_rawget_(l, -2);
                if ffi::lua_type(l, -1) != ffi::LUA_TNIL {
                    ffi::lua_replace(l, top + 1);
                    ffi::lua_settop(l, top + 1);
                    return true;
                }
            }
            ffi::lua_settop(l, top);
        }
        false
    }
}

/// Pushes the write table of proxy `t` (or nil).
pub unsafe fn push_writes(l: *mut lua_State, t: c_int) -> bool {
    // SAFETY: `t` is a proxy.
    unsafe {
        if rawget_i(l, t, K_SET) == ffi::LUA_TTABLE {
            true
        } else {
            ffi::lua_pop(l, 1);
            false
        }
    }
}

/// Pushes the nested-proxy table of proxy `t` (or nothing and false).
pub unsafe fn push_cache(l: *mut lua_State, t: c_int) -> bool {
    // SAFETY: `t` is a proxy.
    unsafe {
        if rawget_i(l, t, K_CACHE) == ffi::LUA_TTABLE {
            true
        } else {
            ffi::lua_pop(l, 1);
            false
        }
    }
}

/// Pops the table on top of the stack into proxy `t` as its write table (`which` = 0) or
/// nested-table table (`which` = 1) or order list (`which` = 2).
pub unsafe fn set_side_table(l: *mut lua_State, t: c_int, which: u8) {
    // SAFETY: `t` is a proxy and a table is on top of the stack.
    unsafe {
        rawset_i(
            l,
            t,
            match which {
                0 => K_SET,
                1 => K_CACHE,
                _ => K_ORDER,
            },
        )
    }
}

/// Pushes the order list of proxy `t` (or nothing and false).
pub unsafe fn push_order(l: *mut lua_State, t: c_int) -> bool {
    // SAFETY: `t` is a proxy.
    unsafe {
        if rawget_i(l, t, K_ORDER) == ffi::LUA_TTABLE {
            true
        } else {
            ffi::lua_pop(l, 1);
            false
        }
    }
}

/// Whether a nested table handed out (value at `v`, key at `k`, of proxy `t`) was changed:
/// a nested proxy when it is dirty, an array when its contents differ from the original.
pub unsafe fn member_changed(l: *mut lua_State, t: c_int, k: c_int, v: c_int) -> bool {
    // SAFETY: indices are absolute and valid; the stack is restored.
    unsafe {
        if is_proxy(l, v) {
            return is_dirty(l, v);
        }
        let Some(name) = super::ffi_util::str_at(l, k) else {
            return true;
        };
        let p = parts(l, t);
        let mut at = scan::first_member(p.line, p.start);
        let mut scratch = Vec::new();
        while let Some(i) = at {
            let Some((m, next)) = scan::next_member(p.line, i) else {
                break;
            };
            if super::worker::key_matches(p.line, &m, name, &mut scratch) {
                return !same_as_json(l, v, p.line, m.val_start as usize, m.val_end as usize, 0);
            }
            at = next;
        }
        true
    }
}

/// Whether the Lua value at `v` still equals the JSON value `line[start..end]` it was made
/// from (numbers by value, strings by bytes, objects by being the unchanged proxy over it).
unsafe fn same_as_json(l: *mut lua_State, v: c_int, line: &[u8], start: usize, end: usize, depth: usize) -> bool {
    // SAFETY: `v` is an absolute index; the stack is restored.
    unsafe {
        if depth > 100 {
            return false;
        }
        let raw = &line[start..end];
        match scan::kind(line, start) {
            Kind::Number => ffi::lua_type(l, v) == ffi::LUA_TNUMBER && ffi::lua_tonumber(l, v) == scan::number(raw),
            Kind::String => match super::ffi_util::str_at(l, v) {
                Some(s) => {
                    let body = &raw[1..raw.len().saturating_sub(1).max(1)];
                    if memchr::memchr(b'\\', body).is_none() {
                        s == body
                    } else {
                        let mut tmp = Vec::new();
                        scan::unescape(body, &mut tmp);
                        s == tmp.as_slice()
                    }
                }
                None => false,
            },
            Kind::True => ffi::lua_type(l, v) == ffi::LUA_TBOOLEAN && ffi::lua_toboolean(l, v) != 0,
            Kind::False => ffi::lua_type(l, v) == ffi::LUA_TBOOLEAN && ffi::lua_toboolean(l, v) == 0,
            Kind::Null => ffi::lua_type(l, v) == ffi::LUA_TLIGHTUSERDATA && ffi::lua_touserdata(l, v).is_null(),
            Kind::Object => {
                if ffi::lua_type(l, v) != ffi::LUA_TTABLE || !is_proxy(l, v) {
                    return false;
                }
                let p = parts(l, v);
                p.start == start && !is_dirty(l, v)
            }
            Kind::Array => {
                if ffi::lua_type(l, v) != ffi::LUA_TTABLE || is_proxy(l, v) {
                    return false;
                }
                let top = ffi::lua_gettop(l);
                let mut n = 0usize;
                let mut same = true;
                scan::array_elements(line, start, |a, b| {
                    if !same {
                        return;
                    }
                    n += 1;
                    ffi::lua_rawgeti_(l, v, n as c_int);
                    let e = ffi::lua_gettop(l);
                    same = same_as_json(l, e, line, a, b, depth + 1);
                    ffi::lua_settop(l, top);
                });
                if !same {
                    return false;
                }
                // No extra keys: exactly n entries.
                let mut count = 0usize;
                ffi::lua_pushnil(l);
                while ffi::lua_next(l, v) != 0 {
                    count += 1;
                    ffi::lua_pop(l, 1);
                }
                count == n
            }
            Kind::Invalid => false,
        }
    }
}

/// `next` that understands proxies: the original members in document order (minus deleted
/// ones; a key that occurs twice only at its first occurrence, whose value `__index` gives),
/// then added keys in the order of their first write; values come through `__index`,
/// so iterating an event neither changes it nor decodes more than it hands out. Other tables
/// get the plain `next`.
pub unsafe extern "C-unwind" fn lua_next_any(l: *mut lua_State) -> c_int {
    // SAFETY: called by Lua with (t, k).
    unsafe {
        ffi::lua_settop(l, 2);
        if ffi::lua_type(l, 1) != ffi::LUA_TTABLE {
            super::ffi_util::raise(l, "bad argument #1 to 'next' (table expected)");
        }
        if !is_proxy(l, 1) {
            if ffi::lua_next(l, 1) != 0 {
                return 2;
            }
            ffi::lua_pushnil(l);
            return 1;
        }
        let p = parts(l, 1);
        let n_members = ctx().cache.members(p.id, p.start, p.line).len();
        let dup_keys = ctx().cache.has_dup_keys(p.id, p.start, p.line);
        let has_set = rawget_i(l, 1, K_SET) == ffi::LUA_TTABLE; // 3
        let mut scratch = Vec::new();
        // Where to resume: after the member named k, or in the added keys.
        let mut from_member = 0usize;
        let mut in_added = false;
        if ffi::lua_type(l, 2) != ffi::LUA_TNIL {
            in_added = true;
            if let Some(k) = super::ffi_util::str_at(l, 2) {
                let members = ctx().cache.members(p.id, p.start, p.line);
                if let Some(i) = members
                    .iter()
                    .position(|m| super::worker::key_matches(p.line, m, k, &mut scratch))
                {
                    from_member = i + 1;
                    in_added = false;
                }
            }
        }
        if !in_added {
            for j in from_member..n_members {
                let m = ctx().cache.members(p.id, p.start, p.line)[j];
                let raw = &p.line[m.key_start as usize..m.key_end as usize];
                let name: &[u8] = if m.key_escaped {
                    scan::unescape(raw, &mut scratch);
                    &scratch
                } else {
                    raw
                };
                if dup_keys
                    && ctx().cache.members(p.id, p.start, p.line)[..j]
                        .iter()
                        .any(|e| super::worker::key_matches(p.line, e, name, &mut Vec::new()))
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
                ffi::lua_pushvalue(l, key);
                ffi::lua_gettable(l, 1);
                return 2;
            }
        }
        // Added keys, in order of first write, after the one given (if any).
        if !has_set {
            ffi::lua_pushnil(l);
            return 1;
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
                Some(k) => ctx()
                    .cache
                    .members(p.id, p.start, p.line)
                    .iter()
                    .any(|m| super::worker::key_matches(p.line, m, k, &mut scratch)),
                None => false,
            };
            ffi::lua_pushvalue(l, key);
            ffi::lua_rawget_(l, 3);
            if original || is_tomb(l, -1) {
                ffi::lua_settop(l, key - 1);
                continue;
            }
            return 2;
        }
        ffi::lua_pushnil(l);
        1
    }
}

/// `isproxy(t)` for the `pairs` wrapper.
pub unsafe extern "C-unwind" fn lua_is_proxy(l: *mut lua_State) -> c_int {
    // SAFETY: called by Lua.
    unsafe {
        let yes = ffi::lua_type(l, 1) == ffi::LUA_TTABLE && is_proxy(l, 1);
        ffi::lua_pushboolean(l, yes as c_int);
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_packing_round_trips() {
        for (s, e) in [(0, 0), (0, 640), (12345, 1 << 20), ((1 << 26) - 1, (1 << 26) + 5)] {
            assert_eq!(unpack_span(pack_span(s, e)), (s, e));
        }
    }
}
