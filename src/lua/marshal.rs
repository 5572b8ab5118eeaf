//! The `marshal` module the original gave every script (lua-marshal's API): `encode(v [, k])`
//! makes a string of a value, `decode(s [, k])` makes the value again, `clone(v [, k])` is
//! both. Values are nil, booleans, numbers, strings, `cjson_safe.null`, tables (shared ones
//! and cycles kept; metatables dropped), event tables (as plain tables of their fields) and
//! Lua functions (bytecode with their upvalues); `k`, an array of constants, makes each of its
//! values travel as its index. C functions, userdata and coroutines raise "invalid value type".
//!
//! The format is this engine's own (a `DFM` header), not lua-marshal's: data the original
//! encoded is refused with a clear error. A function's bytecode carries a tag keyed by a
//! secret of this process, and `decode` loads no other: bytecode is not verified by LuaJIT,
//! so a string from elsewhere (Redis, a file) must never become code.

use std::ffi::{c_int, c_void};
use std::hash::{BuildHasher, Hasher};

use mlua::ffi::{self, lua_State};

use super::boundary::{Coerce, LuaFail, arg_bytes, c_entry};
use super::ffi_util::push_bytes;
use super::proxy;

const HEADER: &[u8] = b"DFM\x01";
/// Nesting deeper than this is refused (as values passed to analyzers).
const MAX_DEPTH: usize = 200;

/// The key of function tags: random per process.
fn tag_key() -> &'static std::collections::hash_map::RandomState {
    static KEY: std::sync::OnceLock<std::collections::hash_map::RandomState> = std::sync::OnceLock::new();
    KEY.get_or_init(std::collections::hash_map::RandomState::new)
}

fn tag(code: &[u8]) -> u64 {
    let mut h = tag_key().build_hasher();
    h.write(code);
    h.finish()
}

struct Encoder {
    out: Vec<u8>,
    /// Tables and functions written so far (their index is their reference).
    seen: Vec<*const c_void>,
    /// The constants table's stack index, 0 when none.
    consts: c_int,
}

impl Encoder {
    fn u32(&mut self, n: usize) -> Result<(), LuaFail> {
        let n = u32::try_from(n).map_err(|_| LuaFail("marshal.encode: value too large".into()))?;
        self.out.extend_from_slice(&n.to_le_bytes());
        Ok(())
    }

    /// The position of the value at `idx` in the constants, if it is one.
    unsafe fn constant(&self, l: *mut lua_State, idx: c_int) -> Option<usize> {
        if self.consts == 0 {
            return None;
        }
        // SAFETY: `consts` is a table on the stack; one slot is checked by the caller.
        unsafe {
            let n = ffi::lua_objlen(l, self.consts);
            (1..=n).find(|&i| {
                ffi::lua_rawgeti_(l, self.consts, i as c_int);
                let same = ffi::lua_rawequal(l, -1, idx) != 0;
                ffi::lua_pop(l, 1);
                same
            })
        }
    }

    unsafe fn value(&mut self, l: *mut lua_State, idx: c_int, depth: usize) -> Result<(), LuaFail> {
        if depth > MAX_DEPTH {
            return Err(LuaFail("marshal.encode: value too deeply nested".into()));
        }
        // SAFETY (whole body): `l` is the running state, `idx` an absolute index.
        unsafe {
            if ffi::lua_checkstack(l, 6) == 0 {
                return Err(LuaFail("marshal.encode: stack overflow".into()));
            }
            let ty = ffi::lua_type(l, idx);
            if matches!(ty, ffi::LUA_TTABLE | ffi::LUA_TFUNCTION | ffi::LUA_TUSERDATA)
                && let Some(k) = self.constant(l, idx)
            {
                self.out.push(b'k');
                return self.u32(k);
            }
            match ty {
                ffi::LUA_TNIL => self.out.push(b'n'),
                ffi::LUA_TBOOLEAN => self.out.push(if ffi::lua_toboolean(l, idx) != 0 { b't' } else { b'f' }),
                ffi::LUA_TNUMBER => {
                    self.out.push(b'd');
                    self.out.extend_from_slice(&ffi::lua_tonumber(l, idx).to_le_bytes());
                }
                ffi::LUA_TSTRING => {
                    let s = super::ffi_util::to_bytes(l, idx).unwrap_or_default();
                    self.out.push(b's');
                    self.u32(s.len())?;
                    self.out.extend_from_slice(s);
                }
                ffi::LUA_TLIGHTUSERDATA if ffi::lua_touserdata(l, idx).is_null() => self.out.push(b'z'),
                ffi::LUA_TTABLE | ffi::LUA_TFUNCTION => {
                    let p = ffi::lua_topointer(l, idx);
                    if let Some(i) = self.seen.iter().position(|&q| q == p) {
                        self.out.push(b'r');
                        return self.u32(i);
                    }
                    if ty == ffi::LUA_TFUNCTION {
                        return self.function(l, idx, p, depth);
                    }
                    return self.table(l, idx, p, proxy::is_proxy(l, idx), depth);
                }
                _ => return Err(LuaFail("marshal.encode: invalid value type".into())),
            }
        }
        Ok(())
    }

    /// The table at `idx`, recorded under address `p`: its pairs, as `lua_next` gives them,
    /// or for an event table (`event`) as a script's `pairs` does (nested objects as event
    /// tables, changes included).
    unsafe fn table(
        &mut self,
        l: *mut lua_State,
        idx: c_int,
        p: *const c_void,
        event: bool,
        depth: usize,
    ) -> Result<(), LuaFail> {
        self.seen.push(p);
        self.out.push(b'T');
        // SAFETY: `idx` is a table on `l`'s stack; `value` checks its own stack room.
        unsafe {
            ffi::lua_pushnil(l);
            while next_pair(l, idx, event)? {
                let v = ffi::lua_gettop(l);
                let r = self
                    .value(l, v - 1, depth + 1)
                    .and_then(|()| self.value(l, v, depth + 1));
                ffi::lua_pop(l, 1);
                if let Err(e) = r {
                    ffi::lua_pop(l, 1);
                    return Err(e);
                }
            }
        }
        self.out.push(b'e');
        Ok(())
    }

    unsafe fn function(
        &mut self,
        l: *mut lua_State,
        idx: c_int,
        p: *const c_void,
        depth: usize,
    ) -> Result<(), LuaFail> {
        // SAFETY: `idx` is a function on `l`'s stack.
        unsafe {
            if ffi::lua_iscfunction(l, idx) != 0 {
                return Err(LuaFail("marshal.encode: invalid value type (a C function)".into()));
            }
            let mut code: Vec<u8> = Vec::new();
            ffi::lua_pushvalue(l, idx);
            let dumped = ffi::lua_dump(l, super::ffi_util::dump_to_vec, (&raw mut code).cast(), 0);
            ffi::lua_pop(l, 1);
            if dumped != 0 {
                return Err(LuaFail("marshal.encode: the function cannot be dumped".into()));
            }
            self.seen.push(p);
            self.out.push(b'F');
            self.u32(code.len())?;
            self.out.extend_from_slice(&code);
            self.out.extend_from_slice(&tag(&code).to_le_bytes());
            let mut n = 0;
            while !ffi::lua_getupvalue(l, idx, n + 1).is_null() {
                ffi::lua_pop(l, 1);
                n += 1;
            }
            self.u32(n as usize)?;
            for i in 1..=n {
                ffi::lua_getupvalue(l, idx, i);
                let r = self.value(l, ffi::lua_gettop(l), depth + 1);
                ffi::lua_pop(l, 1);
                r?;
            }
        }
        Ok(())
    }
}

/// `lua_next` on the table at `idx`, the key on top: replaces it by the next key and its
/// value and returns true, or pops it and returns false. An event table (`event`) is walked by
/// the engine's `next` of event tables, run protected (a tampered table is an error).
unsafe fn next_pair(l: *mut lua_State, idx: c_int, event: bool) -> Result<bool, LuaFail> {
    // SAFETY: `idx` is a table on `l`'s stack, the key on top; three slots are checked by the
    // caller (`value`).
    unsafe {
        if !event {
            return Ok(ffi::lua_next(l, idx) != 0);
        }
        ffi::lua_pushcclosure(l, super::access::lua_next_proxy, 0);
        ffi::lua_pushvalue(l, idx);
        ffi::lua_pushvalue(l, -3);
        if ffi::lua_pcall(l, 2, 2, 0) != 0 {
            let msg = super::ffi_util::to_bytes(l, -1).unwrap_or_default();
            let msg = format!("marshal.encode: {}", String::from_utf8_lossy(msg));
            ffi::lua_pop(l, 2);
            return Err(LuaFail(msg));
        }
        // The previous key, then the next one and its value.
        if ffi::lua_type(l, -2) == ffi::LUA_TNIL {
            ffi::lua_pop(l, 3);
            return Ok(false);
        }
        ffi::lua_remove(l, -3);
        Ok(true)
    }
}

struct Decoder<'a> {
    s: &'a [u8],
    pos: usize,
    /// The stack index of a table holding the tables and functions made so far.
    refs: c_int,
    made: c_int,
    consts: c_int,
}

fn bad(what: &str) -> LuaFail {
    LuaFail(format!("marshal.decode: {what}"))
}

impl Decoder<'_> {
    fn byte(&mut self) -> Result<u8, LuaFail> {
        let b = *self.s.get(self.pos).ok_or_else(|| bad("the data ends too early"))?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&[u8], LuaFail> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.s.len());
        let end = end.ok_or_else(|| bad("the data ends too early"))?;
        let b = &self.s[self.pos..end];
        self.pos = end;
        Ok(b)
    }

    fn u32(&mut self) -> Result<usize, LuaFail> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }

    /// Records the value on top as the next reference.
    unsafe fn record(&mut self, l: *mut lua_State) {
        self.made += 1;
        // SAFETY: `refs` is a table on the stack; a push fits.
        unsafe {
            ffi::lua_pushvalue(l, -1);
            ffi::lua_rawseti_(l, self.refs, self.made);
        }
    }

    unsafe fn value(&mut self, l: *mut lua_State, depth: usize) -> Result<(), LuaFail> {
        if depth > MAX_DEPTH + 1 {
            return Err(bad("value too deeply nested"));
        }
        // SAFETY (whole body): `l` is the running state.
        unsafe {
            if ffi::lua_checkstack(l, 6) == 0 {
                return Err(bad("stack overflow"));
            }
            match self.byte()? {
                b'n' => ffi::lua_pushnil(l),
                b't' => ffi::lua_pushboolean(l, 1),
                b'f' => ffi::lua_pushboolean(l, 0),
                b'z' => ffi::lua_pushlightuserdata(l, std::ptr::null_mut()),
                b'd' => {
                    let b = self.take(8)?;
                    ffi::lua_pushnumber(l, f64::from_le_bytes(b.try_into().expect("8 bytes")));
                }
                b's' => {
                    let n = self.u32()?;
                    let b = self.take(n)?;
                    push_bytes(l, b);
                }
                b'k' => {
                    let i = self.u32()?;
                    if self.consts == 0 {
                        return Err(bad("the data refers to constants and none were given"));
                    }
                    ffi::lua_rawgeti_(l, self.consts, i as c_int);
                }
                b'r' => {
                    let i = self.u32()?;
                    if i >= self.made as usize {
                        return Err(bad("a reference to nothing"));
                    }
                    ffi::lua_rawgeti_(l, self.refs, i as c_int + 1);
                }
                b'T' => {
                    ffi::lua_createtable(l, 0, 0);
                    self.record(l);
                    let t = ffi::lua_gettop(l);
                    while self.s.get(self.pos) != Some(&b'e') {
                        self.value(l, depth + 1)?;
                        self.value(l, depth + 1)?;
                        let k = ffi::lua_type(l, -2);
                        if k == ffi::LUA_TNIL || (k == ffi::LUA_TNUMBER && ffi::lua_tonumber(l, -2).is_nan()) {
                            return Err(bad("a table key is nil or NaN"));
                        }
                        ffi::lua_rawset(l, t);
                    }
                    self.pos += 1;
                }
                b'F' => {
                    let n = self.u32()?;
                    let code = self.take(n)?.to_vec();
                    let t = self.take(8)?;
                    if u64::from_le_bytes(t.try_into().expect("8 bytes")) != tag(&code) {
                        return Err(bad(
                            "a function encoded by another process (or altered) is not loaded: bytecode is not verified",
                        ));
                    }
                    if ffi::luaL_loadbuffer(l, code.as_ptr().cast(), code.len(), c"=marshal".as_ptr()) != 0 {
                        ffi::lua_pop(l, 1);
                        return Err(bad("the function does not load"));
                    }
                    self.record(l);
                    let f = ffi::lua_gettop(l);
                    let ups = self.u32()?;
                    for i in 1..=ups {
                        self.value(l, depth + 1)?;
                        if ffi::lua_setupvalue(l, f, i as c_int).is_null() {
                            ffi::lua_pop(l, 1);
                        }
                    }
                }
                _ => return Err(bad("not data of marshal.encode")),
            }
        }
        Ok(())
    }
}

/// The optional constants argument at `idx`: its stack index, 0 when absent.
unsafe fn constants_arg(l: *mut lua_State, idx: c_int, name: &str) -> Result<c_int, LuaFail> {
    // SAFETY: `l` is the running state.
    unsafe {
        match ffi::lua_type(l, idx) {
            ffi::LUA_TNONE | ffi::LUA_TNIL => Ok(0),
            ffi::LUA_TTABLE => Ok(idx),
            _ => Err(LuaFail(format!("bad argument #2 to '{name}' (table expected)"))),
        }
    }
}

/// Encodes the value at 1 (constants at 2) into a string on top.
unsafe fn encode_top(l: *mut lua_State, name: &str) -> Result<(), LuaFail> {
    // SAFETY: `l` is the running state with its arguments at 1 and 2.
    unsafe {
        let consts = constants_arg(l, 2, name)?;
        let mut e = Encoder {
            out: HEADER.to_vec(),
            seen: Vec::new(),
            consts,
        };
        let top = ffi::lua_gettop(l);
        let r = e.value(l, 1, 0);
        ffi::lua_settop(l, top);
        r?;
        push_bytes(l, &e.out);
    }
    Ok(())
}

/// Decodes the string on top of the stack (constants at `consts`) and replaces it by the value.
unsafe fn decode_top(l: *mut lua_State, s_idx: c_int, consts: c_int) -> Result<(), LuaFail> {
    // SAFETY: `l` is the running state; `s_idx` holds a string that stays there meanwhile.
    unsafe {
        let s = super::ffi_util::to_bytes(l, s_idx).unwrap_or_default();
        let Some(body) = s.strip_prefix(HEADER) else {
            return Err(bad(
                "not data of this engine's marshal.encode (the original's format is not read)",
            ));
        };
        let top = ffi::lua_gettop(l);
        ffi::lua_createtable(l, 8, 0);
        let mut d = Decoder {
            s: body,
            pos: 0,
            refs: top + 1,
            made: 0,
            consts,
        };
        let r = d.value(l, 0).and_then(|()| {
            if d.pos == body.len() {
                Ok(())
            } else {
                Err(bad("trailing bytes after the value"))
            }
        });
        if let Err(e) = r {
            ffi::lua_settop(l, top);
            return Err(e);
        }
        ffi::lua_remove(l, top + 1);
    }
    Ok(())
}

unsafe extern "C-unwind" fn marshal_encode(l: *mut lua_State) -> c_int {
    // SAFETY: a lua_CFunction: `l` is this thread's running state, its arguments at 1..=top;
    // the body runs behind `c_entry` (panics caught, errors raised after it returns).
    unsafe {
        c_entry(l, "encode", |l| {
            if ffi::lua_gettop(l) < 1 {
                return Err(LuaFail("bad argument #1 to 'encode' (value expected)".into()));
            }
            encode_top(l, "encode")?;
            Ok(1)
        })
    }
}

unsafe extern "C-unwind" fn marshal_decode(l: *mut lua_State) -> c_int {
    // SAFETY: as `marshal_encode`.
    unsafe {
        c_entry(l, "decode", |l| {
            arg_bytes(l, "decode", 1, Coerce::StrOrNum)?;
            let consts = constants_arg(l, 2, "decode")?;
            decode_top(l, 1, consts)?;
            Ok(1)
        })
    }
}

unsafe extern "C-unwind" fn marshal_clone(l: *mut lua_State) -> c_int {
    // SAFETY: as `marshal_encode`.
    unsafe {
        c_entry(l, "clone", |l| {
            if ffi::lua_gettop(l) < 1 {
                return Err(LuaFail("bad argument #1 to 'clone' (value expected)".into()));
            }
            let consts = constants_arg(l, 2, "clone")?;
            encode_top(l, "clone")?;
            decode_top(l, ffi::lua_gettop(l), consts)?;
            Ok(1)
        })
    }
}

/// Installs `marshal` as a global and in `package.loaded`.
pub(super) unsafe fn install(l: *mut lua_State) {
    // SAFETY: `l` is a fresh state of this thread with the standard libraries open.
    unsafe {
        ffi::lua_createtable(l, 0, 3);
        let t = ffi::lua_gettop(l);
        for (name, f) in [
            (c"encode", marshal_encode as ffi::lua_CFunction),
            (c"decode", marshal_decode),
            (c"clone", marshal_clone),
        ] {
            ffi::lua_pushcclosure(l, f, 0);
            ffi::lua_setfield(l, t, name.as_ptr());
        }
        super::ffi_util::register(l, t, c"marshal");
    }
}
