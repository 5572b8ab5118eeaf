//! The lazy event table. An event reaches `loop(msg)` as an empty Lua table whose metatable
//! looks fields up in the event's original bytes on first access, so fields no script reads
//! are never decoded. Writes and deletions go to a side table; nested objects become nested
//! proxies over the same bytes. When the event is written out, an unmodified proxy is copied
//! as its original bytes and a modified one as those bytes with the changed members spliced in.
//!
//! Layout of a proxy (all keys are negative integers, which `pairs`/`next` of a proxy never
//! show): `[K_LINE]` the whole line as a *line block*, a userdata holding a small header
//! (length, event id, seal, range of the top-level object) and the bytes (not a string: a line
//! is unique, so interning it would only cost a hash and a string-table probe per event),
//! `[K_SPAN]` the object's byte range packed into a number (absent for the top-level object),
//! `[K_SEAL]` the seal of its line block, `[K_SET]` writes (absent until the first write;
//! deletions are the metatable itself), `[K_ORDER]` keys in the order of their first write
//! (so new members are written in a reproducible order), `[K_CACHE]` nested tables handed out
//! so far.
//!
//! # Provenance
//!
//! A script can overwrite those slots (`msg[-1] = x` is a raw store: the key exists), so
//! nothing read from them is trusted. A line block is recognised by its metatable (only
//! [`push_line`] sets it, and scripts have no `debug.setmetatable`), and its size must match
//! its header; the table's seal must equal the block's (a random number per block, so a
//! block moved from another event's table is refused); a span must be one the engine handed
//! out or, failing that, exactly an object of the line (`scan::is_object_at`). Side tables
//! must be tables. Anything else is [`Tampered`]: a script error for that event.

use std::cell::Cell;
use std::ffi::c_int;

use mlua::ffi::{self, lua_State};

use super::ffi_util::{abs_index, push_bytes, reg};
use super::member_cache::MemberCache;
use crate::event::scan::{self, Kind};

// Hidden keys are negative integers: JSON object keys are always strings, and integer keys
// cost no string interning (lightuserdata keys do, on 64-bit LuaJIT). The prelude gets these
// numbers from `prelude_constants`.
pub(crate) const K_LINE: c_int = -1;
pub(crate) const K_SPAN: c_int = -2;
pub(crate) const K_SEAL: c_int = -3;
pub(crate) const K_SET: c_int = -4;
pub(crate) const K_CACHE: c_int = -5;
pub(crate) const K_ORDER: c_int = -6;

/// What [`df_find`] reports about one member (the low four bits of `FieldOut::kind` and of its
/// return value), for the Lua side of the lookup; the prelude gets these numbers from
/// `prelude_constants`.
pub(crate) const F_ABSENT: i32 = 0;
pub(crate) const F_STRING: i32 = 1;
pub(crate) const F_NUMBER: i32 = 2;
pub(crate) const F_TRUE: i32 = 3;
pub(crate) const F_FALSE: i32 = 4;
pub(crate) const F_NULL: i32 = 5;
/// An array: left to the C `__index`.
pub(crate) const F_NESTED: i32 = 6;
/// An object: `FieldOut::num` is its span (packed, see `pack_span`), marked in the member
/// cache as handed out; the Lua side makes the nested table.
pub(crate) const F_OBJECT: i32 = 8;
/// The table's hidden fields are not what the engine put there.
pub(crate) const F_TAMPERED: i32 = 7;
/// A number with an exact 32-bit integer value (not -0): `FieldOut::len` holds it. The Lua
/// side reads it from an `int32_t` field, which LuaJIT's compiler keeps as an integer, so
/// that `tostring(msg.src_port)` in a compiled trace formats an integer instead of running
/// the general `%.14g` formatting of a double (the same text for such values).
pub(crate) const F_INT: i32 = 9;

/// The message of a script error for an event table whose hidden fields were changed.
pub(crate) const TAMPERED_MSG: &str = "event table: a reserved field (negative key) was changed, deleted or forged; \
     negative keys of event tables belong to the engine";

/// Why a table cannot be used as an event table: which hidden field failed its check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tampered(pub &'static str);

impl std::error::Error for Tampered {}

impl std::fmt::Display for Tampered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{TAMPERED_MSG} ({})", self.0)
    }
}

#[inline]
pub(super) unsafe fn rawget_i(l: *mut lua_State, t: c_int, k: c_int) -> c_int {
    // SAFETY: `t` is an absolute index of a table.
    unsafe {
        ffi::lua_rawgeti_(l, t, k);
        ffi::lua_type(l, -1)
    }
}

#[inline]
pub(super) unsafe fn rawset_i(l: *mut lua_State, t: c_int, k: c_int) {
    // SAFETY: `t` is an absolute index of a table and a value is on top.
    unsafe { ffi::lua_rawseti_(l, t, k) }
}

/// Pushes the proxy metatable of this state; it doubles as the deletion marker in write
/// tables (scripts cannot reach it: its `__metatable` field hides it from `getmetatable`).
#[inline]
pub(crate) unsafe fn push_mt(l: *mut lua_State) {
    // SAFETY: `install` stored the metatable in the registry.
    unsafe { ffi::lua_rawgeti_(l, ffi::LUA_REGISTRYINDEX, reg::PROXY_MT) }
}

/// Whether the value at `idx` is the deletion marker.
#[inline]
pub(crate) unsafe fn is_tomb(l: *mut lua_State, idx: c_int) -> bool {
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

pub(super) fn pack_span(start: usize, end: usize) -> f64 {
    start as f64 * SPAN_SHIFT + (end - start) as f64
}

/// The range a span number stands for (any number: a forged one gives some range, which
/// the caller checks).
fn unpack_span(v: f64) -> (usize, usize) {
    let start = (v / SPAN_SHIFT).floor();
    let len = v - start * SPAN_SHIFT;
    let (start, len) = (start as usize, len as usize);
    (start, start.saturating_add(len))
}

/// Installs the proxy metatable and the line-block metatable in the registry of `l` (once
/// per state).
pub(crate) unsafe fn install(l: *mut lua_State) {
    // SAFETY: `l` is a fresh state owned by the calling worker thread.
    unsafe {
        // `__index`, `__newindex` and `__metatable` are set by the state's prelude.
        ffi::lua_createtable(l, 0, 4);
        ffi::lua_rawseti_(l, ffi::LUA_REGISTRYINDEX, reg::PROXY_MT);
        ffi::lua_createtable(l, 0, 0);
        ffi::lua_rawseti_(l, ffi::LUA_REGISTRYINDEX, reg::LINE_MT);
    }
}

/// Pushes the line-block metatable of this state.
pub(crate) unsafe fn push_line_mt(l: *mut lua_State) {
    // SAFETY: `install` stored it in the registry.
    unsafe { ffi::lua_rawgeti_(l, ffi::LUA_REGISTRYINDEX, reg::LINE_MT) }
}

/// What [`df_find`] reports about one member, for the Lua side of the lookup.
#[repr(C)]
pub(crate) struct FieldOut {
    /// One of the `F_*` codes in the low four bits, above them the stamp of the answer (see
    /// `access::stamped`).
    pub kind: i32,
    /// A string's length, or the value of an `F_INT`.
    pub len: i32,
    pub num: f64,
    pub ptr: *const u8,
}

/// The object a table's hidden fields name, checked: the table's `seal` must be the block's,
/// and a `span` (0: the top-level object) must be an object of the line (known from `cache`
/// when given, else found by walking the line). Returns its byte range.
pub(super) fn checked_range(
    h: &LineHeader,
    line: &[u8],
    span: f64,
    seal: f64,
    cache: Option<&mut MemberCache>,
) -> Result<(usize, usize), Tampered> {
    if seal != h.seal {
        return Err(Tampered("the seal does not match the line"));
    }
    let (root_start, root_end) = (h.root_start as usize, h.root_end as usize);
    if span == 0.0 {
        return Ok((root_start, root_end));
    }
    let (start, end) = unpack_span(span);
    let ok = end <= root_end
        && start >= root_start
        && match cache {
            Some(c) => c.span_is_valid(h.id, root_start, start, end, line),
            None => start < end && scan::is_object_at(line, root_start, start, end),
        };
    if ok {
        Ok((start, end))
    } else {
        Err(Tampered("the span is not an object of the line"))
    }
}

/// The object a proxy stands for, from what its Lua side hands the FFI (its line block, span
/// and seal), checked as [`df_find`] checks them. Returns the event id, the line and the
/// object's byte range.
///
/// # Safety
///
/// `ud` is null or a line block (see [`df_find`]) that outlives `'a`.
#[inline]
pub(crate) unsafe fn ffi_object<'a>(
    ud: *const u8,
    span: f64,
    seal: f64,
    cache: &mut MemberCache,
) -> Result<(f64, &'a [u8], usize, usize), Tampered> {
    if ud.is_null() {
        return Err(Tampered("no line"));
    }
    // SAFETY: see the contract.
    let (h, line) = unsafe { line_of(ud) };
    let (start, end) = checked_range(&h, line, span, seal, Some(cache))?;
    Ok((h.id, line, start, end))
}

/// Whether the value at `idx` is a proxy (its metatable is this state's proxy metatable,
/// compared raw: `__metatable` does not fool it).
#[inline]
pub(crate) unsafe fn is_proxy(l: *mut lua_State, idx: c_int) -> bool {
    // SAFETY: `l` is owned by the caller; the stack is restored.
    unsafe {
        let idx = abs_index(l, idx);
        if ffi::lua_type(l, idx) != ffi::LUA_TTABLE || ffi::lua_getmetatable(l, idx) == 0 {
            return false;
        }
        push_mt(l);
        let same = ffi::lua_rawequal(l, -1, -2) != 0;
        ffi::lua_pop(l, 2);
        same
    }
}

/// Pushes a new proxy over the line block at absolute index `line_idx` for the object at
/// `span` (`None`: the line's top-level object).
pub(crate) unsafe fn push_proxy(l: *mut lua_State, line_idx: c_int, span: Option<(usize, usize)>) {
    // SAFETY: `l` is owned by the caller and `line_idx` holds a line block.
    unsafe { push_proxy_with(l, || ffi::lua_pushvalue(l, line_idx), span) }
}

/// The seal of the line block at `idx`.
unsafe fn block_seal(l: *mut lua_State, idx: c_int) -> f64 {
    // SAFETY: `idx` holds a line block made by `push_line`.
    unsafe { line_of(ffi::lua_touserdata(l, idx).cast::<u8>().cast_const()).0.seal }
}

/// Pushes a new proxy whose line `push_line` pushes (right under the new table, so no copy of
/// it is left on the stack), for the object at `span`.
unsafe fn push_proxy_with(l: *mut lua_State, push_line: impl FnOnce(), span: Option<(usize, usize)>) {
    // SAFETY: `l` is owned by the caller and `push_line` pushes one line block.
    unsafe {
        // Three hash slots: the line, its seal and the write table of a changed event (a
        // nested object also has its span, and grows on its first write).
        ffi::lua_createtable(l, 0, 3);
        let t = ffi::lua_gettop(l);
        push_line();
        let seal = block_seal(l, -1);
        rawset_i(l, t, K_LINE);
        ffi::lua_pushnumber(l, seal);
        rawset_i(l, t, K_SEAL);
        if let Some((start, end)) = span {
            ffi::lua_pushnumber(l, pack_span(start, end));
            rawset_i(l, t, K_SPAN);
        }
        push_mt(l);
        ffi::lua_setmetatable(l, t);
    }
}

thread_local! {
    static SEAL_STATE: Cell<u64> = const { Cell::new(0) };
}

/// A fresh seal: a random 52-bit number (exact as a double), never 0.
fn next_seal() -> f64 {
    SEAL_STATE.with(|s| {
        let mut x = s.get();
        if x == 0 {
            let mut b = [0u8; 8];
            // SAFETY: `b` is a writable buffer of its length.
            let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
            x = u64::from_ne_bytes(b) ^ (n as u64) ^ crate::counters::latency::mono_ns() ^ 0x9E37_79B9_7F4A_7C15;
            if x == 0 {
                x = 0x2545_F491_4F6C_DD1D;
            }
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        ((x >> 12) | 1) as f64
    })
}

/// Pushes a line block for `line`, the bytes of event `id`: a header (see [`LineHeader`]) with
/// a fresh seal, and the bytes, or where they are when `line` is in the worker's pinned batch
/// (see `pins`); its metatable marks it as the engine's. Returns its absolute index and its
/// seal.
pub(crate) unsafe fn push_line(l: *mut lua_State, line: &[u8], id: f64) -> (c_int, f64) {
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
        seal: next_seal(),
        root_start: start as u32,
        root_end: end as u32,
    };
    // SAFETY: `l` is owned by the caller; an inline block has room for the header and
    // `line`.
    unsafe {
        if super::pins::push_external(l, line, h).is_none() {
            let ud = ffi::lua_newuserdata(l, LINE_HEADER + line.len()).cast::<u8>();
            ud.cast::<LineHeader>().write_unaligned(h);
            std::ptr::copy_nonoverlapping(line.as_ptr(), ud.add(LINE_HEADER), line.len());
        }
        let at = ffi::lua_gettop(l);
        push_line_mt(l);
        ffi::lua_setmetatable(l, at);
        (at, h.seal)
    }
}

/// Pushes a new top-level proxy for an event whose bytes are `line`.
pub(crate) unsafe fn push_event(l: *mut lua_State, line: &[u8], id: f64) {
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

pub(super) use super::pins::LineHeader;

const LINE_HEADER: usize = std::mem::size_of::<LineHeader>();

/// The header (its length without the external flag) and the line of a line block.
///
/// # Safety
///
/// `ud` points to a block made by [`push_line`] that outlives `'a`.
#[inline]
pub(super) unsafe fn line_of<'a>(ud: *const u8) -> (LineHeader, &'a [u8]) {
    // SAFETY: see the contract; the header holds the length of the bytes after it, or of
    // those an external block points to (valid while the block lives, see `pins`).
    unsafe {
        let mut h = ud.cast::<LineHeader>().read_unaligned();
        if h.len & super::pins::EXT_FLAG != 0 {
            h.len &= !super::pins::EXT_FLAG;
            let bytes = (*ud.cast::<super::pins::ExtLine>()).bytes;
            return (h, std::slice::from_raw_parts(bytes, h.len as usize));
        }
        (h, std::slice::from_raw_parts(ud.add(LINE_HEADER), h.len as usize))
    }
}

/// The header and bytes of the line block at `idx` (`None` for anything else: not a
/// userdata, another metatable, a size that does not match its header).
#[inline]
unsafe fn line_at<'a>(l: *mut lua_State, idx: c_int) -> Option<(LineHeader, &'a [u8])> {
    // SAFETY: a userdata's block does not move and lives while the proxy holding it does.
    // Only `push_line` gives a userdata the line-block metatable (scripts cannot set a
    // userdata's metatable), so the block has a header.
    unsafe {
        let idx = abs_index(l, idx);
        if ffi::lua_type(l, idx) != ffi::LUA_TUSERDATA || ffi::lua_getmetatable(l, idx) == 0 {
            return None;
        }
        push_line_mt(l);
        let branded = ffi::lua_rawequal(l, -1, -2) != 0;
        ffi::lua_pop(l, 2);
        let p = ffi::lua_touserdata(l, idx);
        let size = ffi::lua_objlen(l, idx);
        if !branded || p.is_null() || size < LINE_HEADER {
            return None;
        }
        let external = p.cast::<LineHeader>().read_unaligned().len & super::pins::EXT_FLAG != 0;
        if external && size != super::pins::EXT_SIZE {
            return None;
        }
        let (h, line) = line_of(p.cast::<u8>());
        (external || LINE_HEADER + line.len() == size).then_some((h, line))
    }
}

/// The parts of the proxy at absolute index `t`; pushes nothing.
pub(crate) struct Parts<'a> {
    pub line: &'a [u8],
    pub start: usize,
    pub end: usize,
    pub id: f64,
    pub seal: f64,
    /// Whether it is the line's top-level object (the table has no span).
    pub top: bool,
}

/// The hidden fields of the proxy at absolute index `t`, their types checked (the line block,
/// its bytes, the span (0 for the top level) and the seal, and side tables that are tables or
/// absent); the span itself is not checked against the line.
unsafe fn hidden_fields<'a>(l: *mut lua_State, t: c_int) -> Result<(LineHeader, &'a [u8], f64, f64), Tampered> {
    // SAFETY: the line block stays referenced by the proxy while it is alive; the stack is
    // restored.
    unsafe {
        let top = ffi::lua_gettop(l);
        rawget_i(l, t, K_LINE);
        let block = line_at(l, -1);
        let seal_ty = rawget_i(l, t, K_SEAL);
        let seal = ffi::lua_tonumber(l, -1);
        let span_ty = rawget_i(l, t, K_SPAN);
        let span = ffi::lua_tonumber(l, -1);
        ffi::lua_settop(l, top);
        let Some((h, line)) = block else {
            return Err(Tampered("the line is missing or not a line block"));
        };
        if seal_ty != ffi::LUA_TNUMBER {
            return Err(Tampered("the seal is missing"));
        }
        let span = match span_ty {
            ffi::LUA_TNIL => 0.0,
            ffi::LUA_TNUMBER if span != 0.0 => span,
            _ => return Err(Tampered("the span is not a number")),
        };
        for (k, what) in [(K_SET, "writes"), (K_CACHE, "nested tables"), (K_ORDER, "write order")] {
            let ty = rawget_i(l, t, k);
            ffi::lua_settop(l, top);
            if ty != ffi::LUA_TNIL && ty != ffi::LUA_TTABLE {
                return Err(Tampered(what));
            }
        }
        Ok((h, line, span, seal))
    }
}

/// The checked parts of the proxy at absolute index `t` (its line block, seal and span; see
/// the module's "Provenance"). Spans are checked against `cache` when given.
pub(crate) unsafe fn parts<'a>(
    l: *mut lua_State,
    t: c_int,
    cache: Option<&mut MemberCache>,
) -> Result<Parts<'a>, Tampered> {
    // SAFETY: forwarded contract (`t` is a proxy of `l`).
    let (h, line, span, seal) = unsafe { hidden_fields(l, t) }?;
    let (start, end) = checked_range(&h, line, span, seal, cache)?;
    Ok(Parts {
        line,
        start,
        end,
        id: h.id,
        seal: h.seal,
        top: span == 0.0,
    })
}

/// Pushes the decoded JSON value `buf[start..end]` of the event whose line block is at
/// absolute index `line_idx`; objects become proxies over that block (their spans recorded
/// in the member cache as handed out), arrays plain tables.
pub(crate) unsafe fn push_json(
    l: *mut lua_State,
    line_idx: c_int,
    buf: &[u8],
    (start, end): (usize, usize),
    cache: &mut MemberCache,
    scratch: &mut Vec<u8>,
) {
    // SAFETY: `l` is owned by the caller; `buf` is the line of the block at `line_idx`.
    unsafe {
        let raw = &buf[start..end];
        match scan::kind(buf, start) {
            Kind::String => {
                let body = &raw[1..raw.len().saturating_sub(1).max(1)];
                if memchr::memchr(b'\\', body).is_none() {
                    push_bytes(l, body);
                } else {
                    scan::unescape(body, scratch);
                    push_bytes(l, scratch);
                }
            }
            Kind::Number => ffi::lua_pushnumber(l, scan::number(raw)),
            Kind::True => ffi::lua_pushboolean(l, 1),
            Kind::False => ffi::lua_pushboolean(l, 0),
            Kind::Null => ffi::lua_pushlightuserdata(l, std::ptr::null_mut()),
            Kind::Object => {
                let id = line_of(ffi::lua_touserdata(l, line_idx).cast::<u8>().cast_const()).0.id;
                cache.mark_span(id, start, end, buf);
                push_proxy(l, line_idx, Some((start, end)))
            }
            Kind::Array => {
                ffi::lua_createtable(l, 4, 0);
                let t = ffi::lua_gettop(l);
                let mut n = 0;
                scan::array_elements(buf, start, |a, b| {
                    n += 1;
                    push_json(l, line_idx, buf, (a, b), cache, scratch);
                    ffi::lua_rawseti_(l, t, n);
                });
            }
            Kind::Invalid => ffi::lua_pushnil(l),
        }
    }
}

/// Pushes the value of the proxy at absolute index `t` under the key at absolute index `k`,
/// as a script reads it: its writes first (a deletion reads nil), then the nested tables
/// handed out, else the member decoded from the line (an object or array is kept in the
/// nested-table table, so that changes made through it stay). Pushes exactly one value.
pub(crate) unsafe fn push_field(
    l: *mut lua_State,
    t: c_int,
    k: c_int,
    cache: &mut MemberCache,
    scratch: &mut Vec<u8>,
) -> Result<(), Tampered> {
    // SAFETY: `t` and `k` are absolute indices; the stack ends one value above its start.
    unsafe {
        let top = ffi::lua_gettop(l);
        for slot in [K_SET, K_CACHE] {
            match rawget_i(l, t, slot) {
                ffi::LUA_TTABLE => {
                    ffi::lua_pushvalue(l, k);
                    ffi::lua_rawget_(l, -2);
                    if ffi::lua_type(l, -1) != ffi::LUA_TNIL {
                        if is_tomb(l, -1) {
                            ffi::lua_pushnil(l);
                            ffi::lua_replace(l, -2);
                        }
                        ffi::lua_replace(l, top + 1);
                        ffi::lua_settop(l, top + 1);
                        return Ok(());
                    }
                }
                ffi::LUA_TNIL => {}
                _ => {
                    ffi::lua_settop(l, top);
                    return Err(Tampered("a side table is not a table"));
                }
            }
            ffi::lua_settop(l, top);
        }
        let Some(key) = super::ffi_util::str_at(l, k) else {
            ffi::lua_pushnil(l);
            return Ok(());
        };
        let p = parts(l, t, Some(&mut *cache))?;
        let Some(m) = cache.find(p.id, p.start, p.line, key, scratch) else {
            ffi::lua_pushnil(l);
            return Ok(());
        };
        let (vs, ve) = (m.val_start as usize, m.val_end as usize);
        rawget_i(l, t, K_LINE); // top + 1: the line, for nested proxies
        push_json(l, top + 1, p.line, (vs, ve), cache, scratch); // top + 2
        if matches!(scan::kind(p.line, vs), Kind::Object | Kind::Array) {
            if rawget_i(l, t, K_CACHE) != ffi::LUA_TTABLE {
                ffi::lua_settop(l, top + 2);
                ffi::lua_createtable(l, 0, 2);
                ffi::lua_pushvalue(l, -1);
                rawset_i(l, t, K_CACHE);
            }
            ffi::lua_pushvalue(l, k);
            ffi::lua_pushvalue(l, top + 2);
            ffi::lua_rawset(l, top + 3);
            ffi::lua_settop(l, top + 2);
        }
        // The value replaces the line under it.
        ffi::lua_replace(l, top + 1);
        ffi::lua_settop(l, top + 1);
        Ok(())
    }
}

/// What [`is_dirty`] found of the proxies it looked at during one encoding, by table address.
/// The encoder asks about a nested table at every level above it (through its parent's
/// [`is_dirty`], then [`member_changed`] when it writes the parent), so without this a change
/// `d` levels down was looked for about `d * d / 2` times.
#[derive(Default)]
pub(crate) struct DirtyMemo(Vec<(usize, bool)>);

impl DirtyMemo {
    pub(crate) fn clear(&mut self) {
        self.0.clear();
    }
}

/// Whether the proxy at absolute index `t` (or any nested proxy it handed out) was changed.
/// A nested table that is not what the engine handed out for its member counts as changed.
/// With `memo`, each table is looked at once (the tables must not change meanwhile).
pub(crate) unsafe fn is_dirty(
    l: *mut lua_State,
    t: c_int,
    cache: Option<&mut MemberCache>,
    mut memo: Option<&mut DirtyMemo>,
) -> bool {
    // SAFETY: `t` is a proxy; reading its address changes nothing.
    let at = unsafe { ffi::lua_topointer(l, t) } as usize;
    if let Some(m) = memo.as_deref()
        && let Some(&(_, dirty)) = m.0.iter().rev().find(|e| e.0 == at)
    {
        return dirty;
    }
    // SAFETY: as above.
    let dirty = unsafe { dirty_now(l, t, cache, memo.as_deref_mut()) };
    if let Some(m) = memo {
        m.0.push((at, dirty));
    }
    dirty
}

/// [`is_dirty`], looked at now.
unsafe fn dirty_now(
    l: *mut lua_State,
    t: c_int,
    mut cache: Option<&mut MemberCache>,
    mut memo: Option<&mut DirtyMemo>,
) -> bool {
    // SAFETY: `t` is a proxy; the stack is restored.
    unsafe {
        let top = ffi::lua_gettop(l);
        if rawget_i(l, t, K_SET) != ffi::LUA_TNIL {
            ffi::lua_settop(l, top);
            return true;
        }
        ffi::lua_settop(l, top);
        if rawget_i(l, t, K_CACHE) != ffi::LUA_TTABLE {
            ffi::lua_settop(l, top);
            return false;
        }
        let nested = top + 1;
        ffi::lua_pushnil(l);
        while ffi::lua_next(l, nested) != 0 {
            let v = ffi::lua_gettop(l);
            if member_changed(l, t, v - 1, v, cache.as_deref_mut(), memo.as_deref_mut()) {
                ffi::lua_settop(l, top);
                return true;
            }
            ffi::lua_settop(l, v - 1);
        }
        ffi::lua_settop(l, top);
        false
    }
}

/// Pushes the write table of proxy `t` (or nothing and false).
pub(crate) unsafe fn push_writes(l: *mut lua_State, t: c_int) -> bool {
    // SAFETY: `t` is a proxy.
    unsafe { push_side(l, t, K_SET) }
}

/// Pushes the nested-table table of proxy `t` (or nothing and false).
pub(crate) unsafe fn push_cache(l: *mut lua_State, t: c_int) -> bool {
    // SAFETY: `t` is a proxy.
    unsafe { push_side(l, t, K_CACHE) }
}

/// Pushes the order list of proxy `t` (or nothing and false).
pub(crate) unsafe fn push_order(l: *mut lua_State, t: c_int) -> bool {
    // SAFETY: `t` is a proxy.
    unsafe { push_side(l, t, K_ORDER) }
}

unsafe fn push_side(l: *mut lua_State, t: c_int, k: c_int) -> bool {
    // SAFETY: `t` is a proxy.
    unsafe {
        if rawget_i(l, t, k) == ffi::LUA_TTABLE {
            true
        } else {
            ffi::lua_pop(l, 1);
            false
        }
    }
}

/// Which side table of a proxy [`set_side_table`] sets.
#[derive(Clone, Copy)]
pub(crate) enum Side {
    Writes,
    Nested,
    Order,
}

/// Pops the table on top of the stack into proxy `t` as the given side table.
pub(crate) unsafe fn set_side_table(l: *mut lua_State, t: c_int, which: Side) {
    // SAFETY: `t` is a proxy and a table is on top of the stack.
    unsafe {
        rawset_i(
            l,
            t,
            match which {
                Side::Writes => K_SET,
                Side::Nested => K_CACHE,
                Side::Order => K_ORDER,
            },
        )
    }
}

/// Whether a nested table handed out (value at `v`, key at `k`, of proxy `t`) was changed:
/// a nested proxy when it is dirty or not the one over that member, an array when its
/// contents differ from the original.
pub(crate) unsafe fn member_changed(
    l: *mut lua_State,
    t: c_int,
    k: c_int,
    v: c_int,
    mut cache: Option<&mut MemberCache>,
    memo: Option<&mut DirtyMemo>,
) -> bool {
    // SAFETY: indices are absolute and valid; the stack is restored.
    unsafe {
        let Some(name) = super::ffi_util::str_at(l, k) else {
            return true;
        };
        let Ok(p) = parts(l, t, cache.as_deref_mut()) else {
            return true;
        };
        let mut scratch = Vec::new();
        // The member a read of `name` gives (the last of that name): from the member cache
        // when there is one.
        let found = match cache.as_deref_mut() {
            Some(c) => c.find(p.id, p.start, p.line, name, &mut scratch),
            None => super::member_cache::find_uncached(p.line, p.start, name, &mut scratch),
        };
        let Some(m) = found else {
            return true;
        };
        if is_proxy(l, v) {
            let same = match parts(l, v, cache.as_deref_mut()) {
                Ok(n) => n.seal == p.seal && n.start == m.val_start as usize,
                Err(_) => false,
            };
            return !same || is_dirty(l, v, cache, memo);
        }
        !same_as_json(l, v, p.line, p.seal, m.val_start as usize, m.val_end as usize, 0)
    }
}

/// Whether the proxy at `v` is the one over the object `start..end` of the line whose block
/// has `seal` (an object the caller found in the line): its hidden fields say so, as [`parts`]
/// reads them. Comparing with a range known to be an object needs no walk of the line (an
/// array of 20,000 objects took a second to write when each element's span was checked from
/// the line's start).
unsafe fn proxy_is_over(l: *mut lua_State, v: c_int, seal: f64, start: usize, end: usize) -> bool {
    // SAFETY: `v` is a table of `l`.
    matches!(unsafe { hidden_fields(l, v) },
        Ok((h, _, span, own)) if h.seal == seal && own == seal && span == pack_span(start, end))
}

/// Whether the Lua value at `v` still equals the JSON value `line[start..end]` it was made
/// from (numbers by value, strings by bytes, objects by being the unchanged proxy over it).
pub(crate) unsafe fn same_as_json(
    l: *mut lua_State,
    v: c_int,
    line: &[u8],
    seal: f64,
    start: usize,
    end: usize,
    depth: usize,
) -> bool {
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
                proxy_is_over(l, v, seal, start, end) && !is_dirty(l, v, None, None)
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
                    same = same_as_json(l, e, line, seal, a, b, depth + 1);
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
