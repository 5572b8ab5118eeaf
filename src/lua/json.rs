//! Lua value <-> JSON. The encoder follows lua-cjson's conventions (arrays vs objects, the
//! sparse-array error, `cjson_safe.null`, empty table -> `{}`) but writes integers exactly
//! (up to 2^53, so Suricata's flow_id survives), other numbers in their shortest round-trip
//! form, and never escapes `/`. Proxies (see [`super::proxy`]) are written as their original
//! bytes, with changed members spliced in.

use std::ffi::c_int;

use mlua::ffi::{self, lua_State};

use super::ffi_util::{abs_index, push_bytes, reg, to_bytes};
use super::member_cache::MemberCache;
use super::proxy;
use crate::event::scan::{self, Member};
pub(crate) use crate::primitives::json::{write_str, write_str_bytes};

/// Why a value cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodeError(pub String);

/// No room on the Lua stack for one more level (past LuaJIT's slots per C call). Checked with
/// `lua_checkstack`, which does not raise: encoding runs inside `c_entry`, where a Lua error
/// would unwind through `catch_unwind` (`luaL_checkstack` raised it).
fn no_room() -> EncodeError {
    EncodeError("Cannot serialise, no room on the Lua stack (excessive nesting)".into())
}

impl From<proxy::Tampered> for EncodeError {
    fn from(t: proxy::Tampered) -> Self {
        EncodeError(t.to_string())
    }
}

impl std::error::Error for EncodeError {}

impl std::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// `encode_invalid_numbers` settings (lua-cjson's option indexes).
pub(crate) const INVALID_OFF: u8 = 0;
pub(crate) const INVALID_ON: u8 = 1;
pub(crate) const INVALID_NULL: u8 = 2;

/// The settings of one module instance, kept in a userdata that its functions hold as
/// upvalue 1 (the state's own instance's is also in the registry, `reg::CJSON`). `repr(C)`
/// with `precision` first: the prelude reads it through the FFI for `output_event`'s fast path.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CjsonConfig {
    /// Significant digits of non-integer numbers (`encode_number_precision`, 1 to 17).
    pub precision: u8,
    /// `encode_sparse_array`'s `convert`: excessively sparse arrays become objects.
    pub sparse_convert: bool,
    /// `encode_keep_buffer` (kept and returned; this encoder always reuses its buffer).
    pub keep_buffer: bool,
    /// `decode_invalid_numbers`: hexadecimal numbers, `inf`, `nan`, `+1`, `01` are read.
    pub decode_invalid: bool,
    /// `encode_invalid_numbers`: [`INVALID_OFF`] (an error), [`INVALID_ON`] (`nan`, `inf`,
    /// `-inf`) or [`INVALID_NULL`] (`null`).
    pub encode_invalid: u8,
    /// The precision the engine's configuration gave this state (`new()` starts with it).
    pub initial_precision: u8,
    /// `encode_sparse_array`'s `ratio` (0: sparse arrays always allowed).
    pub sparse_ratio: i32,
    /// `encode_sparse_array`'s `safe`: an array whose largest index is at most this is never
    /// sparse.
    pub sparse_safe: i32,
    /// `encode_max_depth`: nested tables allowed in `encode`.
    pub encode_max_depth: i32,
    /// `decode_max_depth`: nested objects and arrays allowed in `decode`.
    pub decode_max_depth: i32,
    /// Strings are written as valid UTF-8 (a byte of an ill-formed sequence as U+FFFD): the
    /// engine's records; lua-cjson's `encode` keeps the bytes.
    pub valid_utf8: bool,
}

/// The deepest nesting `encode` and `decode` go to whatever `encode_max_depth` and
/// `decode_max_depth` say (lua-cjson's default): both recurse on the worker's stack, which a
/// deeper table or text would overflow, ending the process.
pub(crate) const ENGINE_MAX_DEPTH: i32 = 1000;

impl CjsonConfig {
    /// The settings for the engine's own outputs (`output_event`, `log_event`, ...): as the
    /// script set them, except that NaN and infinities are never written bare (`nan` is not
    /// JSON, and a reader of the output would reject the line): with `encode_invalid_numbers`
    /// on they are written `null`; and strings are written as valid UTF-8 (a reader of the
    /// output would reject a line that is not).
    pub(crate) fn for_records(mut self) -> Self {
        if self.encode_invalid == INVALID_ON {
            self.encode_invalid = INVALID_NULL;
        }
        self.valid_utf8 = true;
        self
    }

    /// lua-cjson's defaults, with `precision` significant digits.
    pub(crate) const fn with_precision(precision: u8) -> Self {
        CjsonConfig {
            precision,
            sparse_convert: false,
            keep_buffer: true,
            decode_invalid: true,
            encode_invalid: INVALID_OFF,
            initial_precision: precision,
            sparse_ratio: 2,
            sparse_safe: 10,
            encode_max_depth: 1000,
            decode_max_depth: 1000,
            valid_utf8: false,
        }
    }
}

impl Default for CjsonConfig {
    fn default() -> Self {
        Self::with_precision(super::ffi_util::DEFAULT_PRECISION)
    }
}

/// The settings of the state's own `cjson_safe` (lua-cjson's defaults before `install`).
///
/// # Safety
/// `l` is owned by the calling thread.
#[inline]
pub(crate) unsafe fn state_config(l: *mut lua_State) -> CjsonConfig {
    // SAFETY: the caller owns `l`; the stack is restored. The slot holds a `CjsonConfig`
    // userdata (`install`) or nothing.
    unsafe {
        ffi::lua_rawgeti_(l, ffi::LUA_REGISTRYINDEX, reg::CJSON);
        let p = ffi::lua_touserdata(l, -1).cast::<CjsonConfig>();
        ffi::lua_pop(l, 1);
        if p.is_null() { CjsonConfig::default() } else { *p }
    }
}

/// Reusable encoder state: per-depth member lists and a string scratch buffer.
#[derive(Default)]
pub struct Encoder {
    members: Vec<Vec<Member>>,
    scratch: Vec<u8>,
    /// Keys changed in the proxies being written (a stack across nesting levels): pointer
    /// and length of a Lua string, and the stack index of the table holding its value.
    overrides: Vec<(*const u8, usize, c_int)>,
    /// Replacements being written (a stack across nesting levels): value range in the line
    /// and index into `overrides`.
    replace: Vec<(u32, u32, usize)>,
    /// Keys of plain tables being written (a stack across nesting levels); string keys point
    /// into Lua strings that the table being written keeps alive.
    keys: Vec<KeyRef>,
    /// The member cache lent by `encode_cached` for the duration of one call.
    cache: Option<*mut MemberCache>,
    /// Which event tables were found changed, during one call.
    dirty: proxy::DirtyMemo,
    /// The `cjson_safe` settings to write with (precision, sparse arrays, nesting, NaN and
    /// infinities): set per call by the caller, from the module instance or the state's own.
    pub(crate) cfg: CjsonConfig,
}

/// A key of a plain Lua table, for sorting.
#[derive(Clone, Copy)]
enum KeyRef {
    Str(*const u8, usize),
    Num(f64),
}

impl KeyRef {
    /// Strings first, in byte order, then numbers in ascending order.
    fn cmp_key(&self, other: &KeyRef) -> std::cmp::Ordering {
        use std::cmp::Ordering::*;
        match (self, other) {
            // SAFETY: both point into live Lua strings (see `Encoder::keys`).
            (KeyRef::Str(a, n), KeyRef::Str(b, m)) => unsafe {
                std::slice::from_raw_parts(*a, *n).cmp(std::slice::from_raw_parts(*b, *m))
            },
            (KeyRef::Str(..), KeyRef::Num(_)) => Less,
            (KeyRef::Num(_), KeyRef::Str(..)) => Greater,
            (KeyRef::Num(a), KeyRef::Num(b)) => a.total_cmp(b),
        }
    }
}

/// How far from where it is expected an element of a changed array is looked for among the
/// original's (see `Encoder::array_merged`).
const SHIFT_WINDOW: usize = 8;

/// Whether the value at `v`, found under key `k` in table `tbl` (the write table or the
/// nested-table table `cache` of a proxy), is the table a read of that member handed out:
/// found in `cache`, or written back to the same key (`local a = msg.a ... msg.a = a`).
unsafe fn handed_out(l: *mut lua_State, v: c_int, tbl: c_int, cache: c_int, (kp, kl): (*const u8, usize)) -> bool {
    if cache == 0 {
        return false;
    }
    if tbl == cache {
        return true;
    }
    // SAFETY: `v` and `cache` are absolute indices; the key points to `kl` live bytes; the
    // stack is restored.
    unsafe {
        ffi::lua_pushlstring_(l, kp.cast(), kl);
        ffi::lua_rawget_(l, cache);
        let same = ffi::lua_rawequal(l, -1, v) != 0;
        ffi::lua_pop(l, 1);
        same
    }
}

/// Writes `line[pos..]` of the object at `start..end` up to (not including) its closing brace,
/// where new members go; returns whether the object has members (the next one needs a comma).
/// Shared by the encoder and the FFI fast path of `output_event`, which must write the same
/// bytes.
pub(crate) fn write_until_close(out: &mut Vec<u8>, line: &[u8], start: usize, pos: usize, end: usize) -> bool {
    let close = end.saturating_sub(1).max(pos);
    out.extend_from_slice(&line[pos..close]);
    scan::first_member(line, start).is_some_and(|i| line.get(i) == Some(&b'"'))
}

/// Appends a number: integers exactly, `-0` as lua-cjson writes it, others with `precision`
/// significant digits (17: shortest round-trip); NaN and infinities fail with lua-cjson's
/// message.
pub(crate) fn write_num(out: &mut Vec<u8>, n: f64, precision: u8) -> Result<(), EncodeError> {
    if !n.is_finite() {
        return Err(EncodeError("Cannot serialise number: must not be NaN or Inf".into()));
    }
    if n == 0.0 && n.is_sign_negative() {
        out.extend_from_slice(b"-0");
    } else if n.fract() == 0.0 && n.abs() < 1e17 {
        out.extend_from_slice(itoa::Buffer::new().format(n as i64).as_bytes());
    } else if precision >= 17 {
        out.extend_from_slice(ryu::Buffer::new().format_finite(n).as_bytes());
    } else {
        crate::ml::fmt_g(n, precision as usize, out);
    }
    Ok(())
}

impl Encoder {
    /// Appends a number as [`write_num`] with this encoder's settings, NaN and infinities as
    /// `encode_invalid_numbers` says (lua-cjson writes `nan`, `inf`, `-inf`, or `null`).
    fn num(&self, out: &mut Vec<u8>, n: f64) -> Result<(), EncodeError> {
        if !n.is_finite() {
            let text: &[u8] = match self.cfg.encode_invalid {
                INVALID_ON if n.is_nan() => b"nan",
                INVALID_ON if n > 0.0 => b"inf",
                INVALID_ON => b"-inf",
                INVALID_NULL => b"null",
                _ => b"",
            };
            if !text.is_empty() {
                out.extend_from_slice(text);
                return Ok(());
            }
        }
        write_num(out, n, self.cfg.precision)
    }

    /// Writes a string as the settings say ([`CjsonConfig::valid_utf8`]).
    #[inline]
    fn string(&self, out: &mut Vec<u8>, s: &[u8]) {
        if self.cfg.valid_utf8 {
            write_str(out, s);
        } else {
            write_str_bytes(out, s);
        }
    }

    /// Appends the JSON text of the value at `idx` to `out`. On error `out` may hold a prefix.
    pub unsafe fn encode(&mut self, l: *mut lua_State, idx: c_int, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        // SAFETY: forwarded contract.
        unsafe { self.encode_cached(l, idx, out, None) }
    }

    /// As `encode`, looking object members up in `cache` (the worker's member cache).
    pub unsafe fn encode_cached(
        &mut self,
        l: *mut lua_State,
        idx: c_int,
        out: &mut Vec<u8>,
        cache: Option<&mut MemberCache>,
    ) -> Result<(), EncodeError> {
        self.cache = cache.map(|c| c as *mut MemberCache);
        self.dirty.clear();
        // SAFETY: the caller owns `l`.
        let r = unsafe {
            let idx = abs_index(l, idx);
            if ffi::lua_checkstack(l, 8) == 0 {
                return Err(no_room());
            }
            self.value(l, idx, out, 0)
        };
        self.cache = None;
        r
    }

    unsafe fn value(
        &mut self,
        l: *mut lua_State,
        idx: c_int,
        out: &mut Vec<u8>,
        depth: usize,
    ) -> Result<(), EncodeError> {
        // SAFETY: `idx` is absolute and valid; every branch restores the stack.
        unsafe {
            match ffi::lua_type(l, idx) {
                ffi::LUA_TNIL => out.extend_from_slice(b"null"),
                ffi::LUA_TBOOLEAN => out.extend_from_slice(if ffi::lua_toboolean(l, idx) != 0 {
                    b"true"
                } else {
                    b"false"
                }),
                ffi::LUA_TNUMBER => self.num(out, ffi::lua_tonumber(l, idx))?,
                ffi::LUA_TSTRING => self.string(out, to_bytes(l, idx).unwrap_or(&[])),
                ffi::LUA_TLIGHTUSERDATA if ffi::lua_touserdata(l, idx).is_null() => out.extend_from_slice(b"null"),
                ffi::LUA_TTABLE => {
                    if depth >= self.cfg.encode_max_depth.clamp(1, ENGINE_MAX_DEPTH) as usize {
                        return Err(EncodeError(format!(
                            "Cannot serialise, excessive nesting ({})",
                            depth + 1
                        )));
                    }
                    if ffi::lua_checkstack(l, 8) == 0 {
                        return Err(no_room());
                    }
                    if proxy::is_proxy(l, idx) {
                        self.proxy(l, idx, out, depth)?
                    } else {
                        self.table(l, idx, out, depth)?
                    }
                }
                t => {
                    let name = std::ffi::CStr::from_ptr(ffi::lua_typename(l, t)).to_string_lossy();
                    return Err(EncodeError(format!("Cannot serialise {name}: type not supported")));
                }
            }
            Ok(())
        }
    }

    unsafe fn table(
        &mut self,
        l: *mut lua_State,
        t: c_int,
        out: &mut Vec<u8>,
        depth: usize,
    ) -> Result<(), EncodeError> {
        // SAFETY: `t` is an absolute index of a plain table.
        unsafe {
            // First pass: is it an array (all keys positive integers), and how long?
            let mut max = 0f64;
            let mut count = 0usize;
            let mut array = true;
            ffi::lua_pushnil(l);
            while ffi::lua_next(l, t) != 0 {
                ffi::lua_pop(l, 1);
                if array {
                    if ffi::lua_type(l, -1) == ffi::LUA_TNUMBER {
                        let k = ffi::lua_tonumber(l, -1);
                        // lua-cjson keeps the largest index in a C int: a key past it makes
                        // the table an object there.
                        if k >= 1.0 && k.fract() == 0.0 && k <= f64::from(i32::MAX) {
                            max = max.max(k);
                            count += 1;
                            continue;
                        }
                    }
                    array = false;
                }
            }
            // lua-cjson's sparse-array rule: an error, or an object when `convert` is set.
            let cfg = &self.cfg;
            let sparse = cfg.sparse_ratio > 0
                && max > count as f64 * f64::from(cfg.sparse_ratio)
                && max > f64::from(cfg.sparse_safe);
            if array && count > 0 && sparse && !cfg.sparse_convert {
                return Err(EncodeError("Cannot serialise table: excessively sparse array".into()));
            }
            if array && count > 0 && !sparse {
                out.push(b'[');
                for i in 1..=(max as i64) {
                    if i > 1 {
                        out.push(b',');
                    }
                    ffi::lua_rawgeti_(l, t, i as c_int);
                    let v = ffi::lua_gettop(l);
                    let r = self.value(l, v, out, depth + 1);
                    ffi::lua_settop(l, v - 1);
                    r?;
                }
                out.push(b']');
                return Ok(());
            }
            // Objects built in Lua are written with sorted keys: Lua's iteration order changes
            // from run to run (LuaJIT seeds its string hash), and output must be reproducible.
            let kbase = self.keys.len();
            ffi::lua_pushnil(l);
            while ffi::lua_next(l, t) != 0 {
                match ffi::lua_type(l, -2) {
                    ffi::LUA_TSTRING => {
                        let k = to_bytes(l, -2).unwrap_or(&[]);
                        self.keys.push(KeyRef::Str(k.as_ptr(), k.len()));
                    }
                    ffi::LUA_TNUMBER => self.keys.push(KeyRef::Num(ffi::lua_tonumber(l, -2))),
                    t => {
                        // lua-cjson names the key's type.
                        let ty = std::ffi::CStr::from_ptr(ffi::lua_typename(l, t)).to_string_lossy();
                        let msg = format!("Cannot serialise {ty}: table key must be a number or string");
                        ffi::lua_pop(l, 2);
                        self.keys.truncate(kbase);
                        return Err(EncodeError(msg));
                    }
                }
                ffi::lua_pop(l, 1);
            }
            self.keys[kbase..].sort_unstable_by(|a, b| a.cmp_key(b));
            out.push(b'{');
            let mut result = Ok(());
            for i in kbase..self.keys.len() {
                if i > kbase {
                    out.push(b',');
                }
                match self.keys[i] {
                    KeyRef::Str(p, n) => {
                        let k = std::slice::from_raw_parts(p, n);
                        self.string(out, k);
                        push_bytes(l, k);
                    }
                    KeyRef::Num(n) => {
                        out.push(b'"');
                        result = self.num(out, n);
                        out.push(b'"');
                        ffi::lua_pushnumber(l, n);
                    }
                }
                out.push(b':');
                ffi::lua_rawget_(l, t);
                let v = ffi::lua_gettop(l);
                if result.is_ok() {
                    result = self.value(l, v, out, depth + 1);
                }
                ffi::lua_settop(l, v - 1);
                if result.is_err() {
                    break;
                }
            }
            self.keys.truncate(kbase);
            out.push(b'}');
            result
        }
    }

    unsafe fn key(&mut self, l: *mut lua_State, k: c_int, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        // SAFETY: `k` is a valid absolute index; it is not converted in place (that would
        // break `lua_next`).
        unsafe {
            match ffi::lua_type(l, k) {
                ffi::LUA_TSTRING => self.string(out, to_bytes(l, k).unwrap_or(&[])),
                ffi::LUA_TNUMBER => {
                    out.push(b'"');
                    self.num(out, ffi::lua_tonumber(l, k))?;
                    out.push(b'"');
                }
                t => {
                    let ty = std::ffi::CStr::from_ptr(ffi::lua_typename(l, t)).to_string_lossy();
                    return Err(EncodeError(format!(
                        "Cannot serialise {ty}: table key must be a number or string"
                    )));
                }
            }
            out.push(b':');
            Ok(())
        }
    }

    unsafe fn proxy(
        &mut self,
        l: *mut lua_State,
        t: c_int,
        out: &mut Vec<u8>,
        depth: usize,
    ) -> Result<(), EncodeError> {
        // SAFETY: `t` is an absolute index of a proxy; the stack is restored.
        unsafe {
            let top = ffi::lua_gettop(l);
            // The cache outlives this call (lent by `encode_cached`).
            let p = proxy::parts(l, t, self.cache.map(|c| &mut *c))?;
            if !proxy::is_dirty(l, t, self.cache.map(|c| &mut *c), Some(&mut self.dirty)) {
                out.extend_from_slice(&p.line[p.start..p.end]);
                return Ok(());
            }
            // Keep the line alive on the stack while we hold slices of it.
            ffi::lua_pushvalue(l, t);
            let set = if proxy::push_writes(l, t) {
                ffi::lua_gettop(l)
            } else {
                0
            };
            let cache = if proxy::push_cache(l, t) { ffi::lua_gettop(l) } else { 0 };
            let order = if proxy::push_order(l, t) { ffi::lua_gettop(l) } else { 0 };
            // Changed members: every write, and every nested table handed out that may have
            // changed. A deletion sends us the long way round.
            let base = self.overrides.len();
            let mut deletion = false;
            // A written key that is not a string (`msg[1] = v`) is never an override of an
            // original member: it is always added.
            let mut other_key = false;
            for tbl in [set, cache] {
                if tbl == 0 {
                    continue;
                }
                ffi::lua_pushnil(l);
                while ffi::lua_next(l, tbl) != 0 {
                    let v = ffi::lua_gettop(l);
                    if tbl == set && proxy::is_tomb(l, v) {
                        deletion = true;
                    }
                    let changed = tbl == set
                        || proxy::member_changed(l, t, v - 1, v, self.cache.map(|c| &mut *c), Some(&mut self.dirty));
                    if tbl == set && ffi::lua_type(l, v - 1) != ffi::LUA_TSTRING {
                        other_key = true;
                    }
                    if changed
                        && let Some(k) = super::ffi_util::str_at(l, v - 1)
                        && !self.overrides[base..]
                            .iter()
                            .any(|o| o.1 == k.len() && std::slice::from_raw_parts(o.0, o.1) == k)
                    {
                        self.overrides.push((k.as_ptr(), k.len(), tbl));
                    }
                    ffi::lua_settop(l, v - 1);
                }
            }
            if self.members.len() <= depth {
                self.members.resize_with(depth + 1, Vec::new);
            }
            // A key that occurs twice must change everywhere: also the long way round. Without
            // the member cache, the members read for that check serve the long way too.
            let dup_keys = match self.cache {
                // The cache outlives this call (lent by `encode_cached`).
                Some(c) => (*c).has_dup_keys(p.id, p.start, p.line),
                None => {
                    let members = &mut self.members[depth];
                    scan::object_members(p.line, p.start, members);
                    scan::has_duplicate_keys(p.line, members)
                }
            };
            let r = if deletion || dup_keys {
                let mut members = std::mem::take(&mut self.members[depth]);
                if let Some(c) = self.cache {
                    // The cache outlives this call (lent by `encode_cached`).
                    members.clear();
                    members.extend_from_slice((*c).members(p.id, p.start, p.line));
                }
                let r = self.proxy_body(l, &p, &members, (set, order, cache), base, out, depth);
                self.members[depth] = members;
                r
            } else {
                self.proxy_splice(l, &p, (set, order, cache), base, other_key, out, depth)
            };
            self.overrides.truncate(base);
            ffi::lua_settop(l, top);
            r
        }
    }

    /// Writes the members a script added to a proxy (keys of its order list that are not in
    /// the original object and not deleted), after a comma when `has_members`.
    unsafe fn write_added(
        &mut self,
        l: *mut lua_State,
        p: &proxy::Parts<'_>,
        (set, order): (c_int, c_int),
        has_members: &mut bool,
        out: &mut Vec<u8>,
        depth: usize,
    ) -> Result<(), EncodeError> {
        // SAFETY: `set` and `order` are absolute indices of the proxy's write table and order
        // list (or 0).
        unsafe {
            if set == 0 {
                return Ok(());
            }
            // The order list exists from the second written key on; with one key, the write
            // table's only key is the order.
            let len = if order != 0 {
                ffi::lua_objlen(l, order) as c_int
            } else {
                1
            };
            for i in 1..=len {
                if order != 0 {
                    ffi::lua_rawgeti_(l, order, i);
                } else {
                    ffi::lua_pushnil(l);
                    if ffi::lua_next(l, set) == 0 {
                        break;
                    }
                    ffi::lua_pop(l, 1);
                }
                let k = ffi::lua_gettop(l);
                let original = match super::ffi_util::str_at(l, k) {
                    Some(name) => self.find_member(p, name).is_some(),
                    None => false,
                };
                if original {
                    ffi::lua_settop(l, k - 1);
                    continue;
                }
                ffi::lua_pushvalue(l, k);
                ffi::lua_rawget_(l, set);
                let v = k + 1;
                if proxy::is_tomb(l, v) || ffi::lua_type(l, v) == ffi::LUA_TNIL {
                    ffi::lua_settop(l, k - 1);
                    continue;
                }
                if *has_members {
                    out.push(b',');
                }
                *has_members = true;
                let r = self.key(l, k, out).and_then(|()| self.value(l, v, out, depth + 1));
                ffi::lua_settop(l, k - 1);
                r?;
            }
            Ok(())
        }
    }

    /// Finds member `k` of the proxy's object, through the lent cache when there is one.
    fn find_member(&mut self, p: &proxy::Parts<'_>, k: &[u8]) -> Option<Member> {
        match self.cache {
            // SAFETY: the cache outlives this call (lent by `encode_cached`) and nothing else
            // uses it meanwhile.
            Some(c) => unsafe { (*c).find(p.id, p.start, p.line, k, &mut self.scratch) },
            None => super::member_cache::find_uncached(p.line, p.start, k, &mut self.scratch),
        }
    }

    /// Writes the value at `v` of a changed member of proxy `p` whose original value is
    /// `p.line[span]`: the table a read of an original array handed out (`read`) is written as
    /// that array where its elements are unchanged (see [`Self::array_merged`]), anything
    /// else (a new table a script assigned included) as [`Self::value`] writes it.
    #[allow(clippy::too_many_arguments)]
    unsafe fn member_value(
        &mut self,
        l: *mut lua_State,
        v: c_int,
        p: &proxy::Parts<'_>,
        span: (usize, usize),
        read: bool,
        out: &mut Vec<u8>,
        depth: usize,
    ) -> Result<(), EncodeError> {
        // SAFETY: `v` is an absolute index; `p.line` is kept alive by the caller's stack.
        unsafe {
            if read
                && ffi::lua_type(l, v) == ffi::LUA_TTABLE
                && p.line.get(span.0) == Some(&b'[')
                && !proxy::is_proxy(l, v)
                && self.array_merged(l, v, p, span.0, out, depth)?
            {
                return Ok(());
            }
            self.value(l, v, out, depth)
        }
    }

    /// Writes the plain table at `v`, read from the array at `p.line[start..]` and since
    /// changed, as a JSON array whose elements still equal to the original's are written as
    /// the original's bytes (numbers keep their text, `[]` stays `[]`), the others encoded.
    /// Returns false, writing nothing, when the table is empty or no longer a sequence (1..n,
    /// no other key): it is then any table.
    unsafe fn array_merged(
        &mut self,
        l: *mut lua_State,
        v: c_int,
        p: &proxy::Parts<'_>,
        start: usize,
        out: &mut Vec<u8>,
        depth: usize,
    ) -> Result<bool, EncodeError> {
        // SAFETY: `v` is an absolute index of a plain table; the stack is restored.
        unsafe {
            if depth >= self.cfg.encode_max_depth.clamp(1, ENGINE_MAX_DEPTH) as usize {
                return Err(EncodeError(format!(
                    "Cannot serialise, excessive nesting ({})",
                    depth + 1
                )));
            }
            if ffi::lua_checkstack(l, 8) == 0 {
                return Err(no_room());
            }
            let n = ffi::lua_objlen(l, v);
            let mut count = 0usize;
            ffi::lua_pushnil(l);
            while ffi::lua_next(l, v) != 0 {
                ffi::lua_pop(l, 1);
                count += 1;
            }
            // Emptied, it is an empty table (`{}`, as lua-cjson writes one).
            if count != n || n == 0 {
                return Ok(false);
            }
            for i in 1..=n {
                let ty = proxy::rawget_i(l, v, i as c_int);
                ffi::lua_pop(l, 1);
                if ty == ffi::LUA_TNIL {
                    return Ok(false);
                }
            }
            let mut spans = Vec::new();
            scan::array_elements(p.line, start, |a, b| spans.push((a, b)));
            out.push(b'[');
            // `next`: the original element expected next (elements inserted, removed or moved
            // shift the rest: `table.insert(a, 1, x)`, `table.remove(a, 1)`, a swap).
            let mut next = 0usize;
            for i in 1..=n {
                if i > 1 {
                    out.push(b',');
                }
                ffi::lua_rawgeti_(l, v, i as c_int);
                let e = ffi::lua_gettop(l);
                // The original element this one equals: the one expected, the one at its
                // index, else one nearby (any whose value it equals gives the right bytes).
                let near = next.saturating_sub(SHIFT_WINDOW)..(next + SHIFT_WINDOW).min(spans.len());
                let found = [next, i - 1]
                    .into_iter()
                    .chain(near)
                    .filter(|&k| k < spans.len())
                    .find(|&k| proxy::same_as_json(l, e, p.line, p.seal, spans[k].0, spans[k].1, 0));
                let r = match (found, spans.get(i - 1)) {
                    (Some(k), _) => {
                        out.extend_from_slice(&p.line[spans[k].0..spans[k].1]);
                        next = next.max(k + 1);
                        Ok(())
                    }
                    // An element of an array read is itself as read (a table a script put
                    // there compares by its contents, as `same_as_json` compares).
                    (None, Some(&span)) => self.member_value(l, e, p, span, true, out, depth + 1),
                    (None, None) => self.value(l, e, out, depth + 1),
                };
                ffi::lua_settop(l, e - 1);
                r?;
            }
            out.push(b']');
            Ok(true)
        }
    }

    /// Writes a changed proxy without deletions: its original bytes with each changed member's
    /// value replaced in place and new members appended before the closing brace.
    #[allow(clippy::too_many_arguments)]
    unsafe fn proxy_splice(
        &mut self,
        l: *mut lua_State,
        p: &proxy::Parts<'_>,
        (set, order, cache): (c_int, c_int, c_int),
        base: usize,
        other_key: bool,
        out: &mut Vec<u8>,
        depth: usize,
    ) -> Result<(), EncodeError> {
        // SAFETY: as `proxy`; override pointers refer to live Lua strings.
        unsafe {
            let rbase = self.replace.len();
            let mut appended = other_key;
            for oi in base..self.overrides.len() {
                let (kp, kl, _) = self.overrides[oi];
                let k = std::slice::from_raw_parts(kp, kl);
                match self.find_member(p, k) {
                    Some(m) => self.replace.push((m.val_start, m.val_end, oi)),
                    None => appended = true,
                }
            }
            self.replace[rbase..].sort_unstable_by_key(|r| r.0);
            let mut pos = p.start;
            let mut result = Ok(());
            for ri in rbase..self.replace.len() {
                let (vs, ve, oi) = self.replace[ri];
                let (kp, kl, tbl) = self.overrides[oi];
                out.extend_from_slice(&p.line[pos..vs as usize]);
                ffi::lua_pushlstring_(l, kp.cast(), kl);
                ffi::lua_rawget_(l, tbl);
                let v = ffi::lua_gettop(l);
                let read = handed_out(l, v, tbl, cache, (kp, kl));
                result = self.member_value(l, v, p, (vs as usize, ve as usize), read, out, depth + 1);
                ffi::lua_settop(l, v - 1);
                if result.is_err() {
                    break;
                }
                pos = ve as usize;
            }
            self.replace.truncate(rbase);
            result?;
            let mut has_members = write_until_close(out, p.line, p.start, pos, p.end);
            if appended || order != 0 {
                self.write_added(l, p, (set, order), &mut has_members, out, depth)?;
            }
            out.push(b'}');
            Ok(())
        }
    }

    #[allow(clippy::too_many_arguments)]
    unsafe fn proxy_body(
        &mut self,
        l: *mut lua_State,
        p: &proxy::Parts<'_>,
        members: &[Member],
        (set, order, cache): (c_int, c_int, c_int),
        base: usize,
        out: &mut Vec<u8>,
        depth: usize,
    ) -> Result<(), EncodeError> {
        // SAFETY: as `proxy_members`; every override pointer refers to a live Lua string.
        unsafe {
            let ov = |name: &[u8], ovs: &[(*const u8, usize, c_int)]| {
                ovs.iter()
                    .find(|o| o.1 == name.len() && std::slice::from_raw_parts(o.0, o.1) == name)
                    .map(|o| o.2)
            };
            out.push(b'{');
            let mut first = true;
            for m in members {
                let raw = &p.line[m.key_start as usize..m.key_end as usize];
                let name: &[u8] = if m.key_escaped {
                    scan::unescape(raw, &mut self.scratch);
                    &self.scratch
                } else {
                    raw
                };
                match ov(name, &self.overrides[base..]) {
                    Some(tbl) => {
                        push_bytes(l, name);
                        ffi::lua_rawget_(l, tbl);
                        let v = ffi::lua_gettop(l);
                        if proxy::is_tomb(l, v) {
                            ffi::lua_settop(l, v - 1);
                            continue;
                        }
                        if !first {
                            out.push(b',');
                        }
                        first = false;
                        out.push(b'"');
                        out.extend_from_slice(raw);
                        out.extend_from_slice(b"\":");
                        let span = (m.val_start as usize, m.val_end as usize);
                        let read = handed_out(l, v, tbl, cache, (name.as_ptr(), name.len()));
                        let r = self.member_value(l, v, p, span, read, out, depth + 1);
                        ffi::lua_settop(l, v - 1);
                        r?;
                    }
                    None => {
                        if !first {
                            out.push(b',');
                        }
                        first = false;
                        out.push(b'"');
                        out.extend_from_slice(raw);
                        out.extend_from_slice(b"\":");
                        out.extend_from_slice(&p.line[m.val_start as usize..m.val_end as usize]);
                    }
                }
            }
            // New members, in the order of their first write.
            self.write_added(l, p, (set, order), &mut !first, out, depth)?;
            out.push(b'}');
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_per_json() {
        let mut out = Vec::new();
        write_str(&mut out, b"a\"b\\c/d\n\x01\x7f\xc3\xa9");
        assert_eq!(out, b"\"a\\\"b\\\\c/d\\n\\u0001\\u007f\xc3\xa9\"");
    }

    /// Non-integers as lua-cjson writes them by default (`%.14g`), or shortest round-trip at
    /// 17; integers exact up to 1e17 whatever the precision.
    #[test]
    fn numbers_follow_the_precision() {
        let w = |n: f64, p: u8| {
            let mut out = Vec::new();
            write_num(&mut out, n, p).unwrap();
            String::from_utf8(out).unwrap()
        };
        assert_eq!(w(2.0 / 3.0, 14), "0.66666666666667");
        assert_eq!(w(2.0 / 3.0, 17), "0.6666666666666666");
        assert_eq!(w(2.0 / 3.0, 3), "0.667");
        assert_eq!(w(0.1, 14), "0.1");
        assert_eq!(w(1e-5, 14), "1e-05");
        assert_eq!(w(123456.5, 14), "123456.5");
        assert_eq!(w(1.5e20, 14), "1.5e+20");
        assert_eq!(w(-2.5, 14), "-2.5");
        assert_eq!(w(1234567890123456.0, 14), "1234567890123456");
        assert_eq!(w(1e17, 14), "1e+17");
    }

    #[test]
    fn numbers_are_exact() {
        let mut out = Vec::new();
        for n in [9007199254740991.0, 0.1, -3.0, 1e20, 2.5e-7] {
            out.clear();
            write_num(&mut out, n, 17).unwrap();
            let back: f64 = std::str::from_utf8(&out).unwrap().parse().unwrap();
            assert_eq!(back, n);
        }
        out.clear();
        write_num(&mut out, 9007199254740991.0, 17).unwrap();
        assert_eq!(out, b"9007199254740991");
        assert!(write_num(&mut out, f64::NAN, 14).is_err());
    }
}
