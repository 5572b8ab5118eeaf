//! Values passed between script states (`analyze_event`, `timer_event`, a timer kept across
//! a reload): deep copies, event tables as event tables over a copy of their line, as the
//! original's `marshal` passed them: a table (or event table, or function) reached twice
//! arrives as one copy reached twice, so cycles pass too; a Lua function arrives as a copy
//! of its bytecode with copies of its upvalues (C functions cannot be passed).

use std::ffi::c_int;

use mlua::ffi::{self, lua_State};

use super::ffi_util::{push_bytes, reg, to_bytes};
use super::member_cache::MemberCache;
use super::proxy::{self, Side};

/// Why a value cannot be passed to another script's state.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CopyError {
    #[error("value too deeply nested to pass to an analyzer")]
    TooDeep,
    #[error("cannot pass a {0} value to an analyzer")]
    Unsupported(String),
    #[error(transparent)]
    Tampered(#[from] proxy::Tampered),
}

/// The copies made so far in one [`copy_value`]. The value copied is the first: its copy
/// stays at one slot of `to`'s stack while what it holds is copied, so that is where it is
/// found again (the common case, an event table with a few changes, needs nothing more). The
/// others: their addresses here (found by a scan, or by a map once there are many), their
/// copies in a table of `to`'s registry at the same position (its array part, emptied after
/// each copy, so that a warm worker allocates nothing for it). An event table's hidden side
/// tables are not recorded: no script can reach them but through their event table.
#[derive(Default)]
struct Seen {
    /// The value copied: its address and its copy's stack slot.
    root: Option<(*const std::ffi::c_void, c_int)>,
    from: Vec<*const std::ffi::c_void>,
    /// Address to position, once `from` is too long to scan.
    map: rustc_hash::FxHashMap<*const std::ffi::c_void, c_int>,
}

/// Addresses kept in `map` beyond this many entries.
const SCAN_MAX: usize = 32;

thread_local! {
    /// The worker's `Seen`, reused (its vectors keep their capacity).
    static SEEN: std::cell::RefCell<Seen> = std::cell::RefCell::default();
}

/// Pushes the table of `to`'s registry that holds the copies.
unsafe fn push_seen_table(to: *mut lua_State) {
    // SAFETY: `to` belongs to this thread; two slots fit (checked by the caller).
    unsafe {
        ffi::lua_rawgeti_(to, ffi::LUA_REGISTRYINDEX, reg::COPY_SEEN);
        if ffi::lua_type(to, -1) != ffi::LUA_TTABLE {
            ffi::lua_pop(to, 1);
            ffi::lua_createtable(to, 16, 0);
            ffi::lua_pushvalue(to, -1);
            ffi::lua_rawseti_(to, ffi::LUA_REGISTRYINDEX, reg::COPY_SEEN);
        }
    }
}

impl Seen {
    /// Pushes the copy already made of the value at `idx` of `from` and returns true, or
    /// returns false (nothing pushed).
    unsafe fn find(&mut self, from: *mut lua_State, idx: c_int, to: *mut lua_State) -> bool {
        let Some((root, slot)) = self.root else { return false };
        // SAFETY: both states belong to this thread; two pushes fit (checked by the caller).
        unsafe {
            let p = ffi::lua_topointer(from, idx);
            if p == root {
                ffi::lua_pushvalue(to, slot);
                return true;
            }
            if self.from.is_empty() {
                return false;
            }
            let pos = if self.from.len() <= SCAN_MAX {
                self.from.iter().rposition(|&q| q == p).map(|i| i as c_int + 1)
            } else {
                self.map.get(&p).copied()
            };
            let Some(pos) = pos else { return false };
            push_seen_table(to);
            ffi::lua_rawgeti_(to, -1, pos);
            ffi::lua_remove(to, -2);
        }
        true
    }

    /// Records the copy on top of `to` as that of the value at `idx` of `from`.
    unsafe fn add(&mut self, from: *mut lua_State, idx: c_int, to: *mut lua_State) {
        // SAFETY: both states belong to this thread; three pushes fit (checked by the caller).
        unsafe {
            let p = ffi::lua_topointer(from, idx);
            if self.root.is_none() {
                self.root = Some((p, ffi::lua_gettop(to)));
                return;
            }
            self.from.push(p);
            let pos = self.from.len() as c_int;
            if self.from.len() > SCAN_MAX {
                if self.map.is_empty() {
                    self.map
                        .extend(self.from.iter().enumerate().map(|(i, &q)| (q, i as c_int + 1)));
                } else {
                    self.map.insert(p, pos);
                }
            }
            push_seen_table(to);
            ffi::lua_pushvalue(to, -2);
            ffi::lua_rawseti_(to, -2, pos);
            ffi::lua_pop(to, 1);
        }
    }

    /// Empties the record (the registry table must not keep the copies alive).
    unsafe fn clear(&mut self, to: *mut lua_State) {
        self.root = None;
        if self.from.is_empty() {
            return;
        }
        // SAFETY: `to` belongs to this thread; three slots are checked (`lua_checkstack`, which
        // does not raise: this runs inside `c_entry`).
        unsafe {
            if ffi::lua_checkstack(to, 3) == 0 {
                return;
            }
            push_seen_table(to);
            for pos in 1..=self.from.len() as c_int {
                ffi::lua_pushnil(to);
                ffi::lua_rawseti_(to, -2, pos);
            }
            ffi::lua_pop(to, 1);
        }
        self.from.clear();
        self.map.clear();
    }
}

/// Deep-copies the value at absolute index `idx` of `from` onto the stack of `to`.
/// Proxies stay proxies (the line is shared, not re-parsed); `cjson_safe.null` stays null.
pub(super) unsafe fn copy_value(
    from: *mut lua_State,
    idx: c_int,
    to: *mut lua_State,
    depth: usize,
    cache: &mut MemberCache,
) -> Result<(), CopyError> {
    if from == to {
        // A script passing a value to itself (an analyzer to its own tag, its own timer): one
        // stack for both sides, so the copy's pushes would land among the source's. The copy
        // is made on a thread of the same state (a stack of its own), then moved over.
        // SAFETY: `from` belongs to this thread and `idx` is absolute, below the new thread.
        unsafe {
            if ffi::lua_checkstack(from, 2) == 0 {
                return Err(CopyError::TooDeep);
            }
            let t = ffi::lua_newthread(from);
            let anchor = ffi::lua_gettop(from);
            let r = copy_value(from, idx, t, depth, cache);
            if r.is_ok() {
                ffi::lua_xmove(t, from, 1);
            }
            ffi::lua_remove(from, anchor);
            return r;
        }
    }
    // Not re-entered (copying calls no Lua code); a fresh one if it ever were.
    SEEN.with(|cell| {
        let mut fresh = Seen::default();
        let mut borrowed = cell.try_borrow_mut();
        let seen = match &mut borrowed {
            Ok(s) => &mut **s,
            Err(_) => &mut fresh,
        };
        // SAFETY: as this function's.
        unsafe {
            let r = copy_inner(from, idx, to, depth, cache, seen, true);
            seen.clear(to);
            r
        }
    })
}

/// `record`: whether the copy may be reached again (false for an event table's side tables).
unsafe fn copy_inner(
    from: *mut lua_State,
    idx: c_int,
    to: *mut lua_State,
    depth: usize,
    cache: &mut MemberCache,
    seen: &mut Seen,
    record: bool,
) -> Result<(), CopyError> {
    if depth > 200 {
        return Err(CopyError::TooDeep);
    }
    // SAFETY: both states belong to this thread; indices are absolute.
    unsafe {
        let ty = ffi::lua_type(from, idx);
        // Each nesting level holds a few slots on both stacks; scalars need only the one.
        // `lua_checkstack`, which does not raise (this runs inside `c_entry`): past LuaJIT's
        // slots per C call the value is too deep to pass.
        let room = if ty == ffi::LUA_TTABLE {
            ffi::lua_checkstack(to, 6) != 0 && ffi::lua_checkstack(from, 6) != 0
        } else {
            depth > 0 || ffi::lua_checkstack(to, 2) != 0
        };
        if !room {
            return Err(CopyError::TooDeep);
        }
        match ty {
            ffi::LUA_TNIL => ffi::lua_pushnil(to),
            ffi::LUA_TBOOLEAN => ffi::lua_pushboolean(to, ffi::lua_toboolean(from, idx)),
            ffi::LUA_TNUMBER => ffi::lua_pushnumber(to, ffi::lua_tonumber(from, idx)),
            ffi::LUA_TSTRING => push_bytes(to, to_bytes(from, idx).unwrap_or(&[])),
            ffi::LUA_TLIGHTUSERDATA => ffi::lua_pushlightuserdata(to, ffi::lua_touserdata(from, idx)),
            // A deletion in an event's write table: the marker of the other state.
            ffi::LUA_TTABLE if proxy::is_tomb(from, idx) => proxy::push_mt(to),
            ffi::LUA_TTABLE | ffi::LUA_TFUNCTION if seen.find(from, idx, to) => {}
            ffi::LUA_TFUNCTION if ffi::lua_iscfunction(from, idx) == 0 => {
                if ffi::lua_checkstack(to, 6) == 0 || ffi::lua_checkstack(from, 3) == 0 {
                    return Err(CopyError::TooDeep);
                }
                let mut code: Vec<u8> = Vec::new();
                ffi::lua_pushvalue(from, idx);
                let dumped = ffi::lua_dump(from, super::ffi_util::dump_to_vec, (&raw mut code).cast(), 0);
                ffi::lua_pop(from, 1);
                if dumped != 0
                    || ffi::luaL_loadbuffer(to, code.as_ptr().cast(), code.len(), c"=passed function".as_ptr()) != 0
                {
                    if dumped == 0 {
                        ffi::lua_pop(to, 1);
                    }
                    return Err(CopyError::Unsupported("function (it cannot be dumped)".into()));
                }
                let f = ffi::lua_gettop(to);
                seen.add(from, idx, to);
                let mut n = 1;
                while !ffi::lua_getupvalue(from, idx, n).is_null() {
                    let v = ffi::lua_gettop(from);
                    let r = copy_inner(from, v, to, depth + 1, cache, seen, true);
                    ffi::lua_pop(from, 1);
                    r?;
                    ffi::lua_setupvalue(to, f, n);
                    n += 1;
                }
            }
            ffi::LUA_TTABLE => {
                if proxy::is_proxy(from, idx) {
                    let p = proxy::parts(from, idx, Some(&mut *cache))?;
                    // One copy of a line block per copy_value: the proxies over one line
                    // (an event and the nested tables read from it, in its side tables)
                    // stay over one line, so the receiver sees them unchanged (a nested
                    // object compares with its event by the line block's seal).
                    proxy::rawget_i(from, idx, proxy::K_LINE);
                    let src_line = ffi::lua_gettop(from);
                    let li = if seen.find(from, src_line, to) {
                        ffi::lua_gettop(to)
                    } else {
                        let li = proxy::push_line(to, p.line, p.id).0;
                        seen.add(from, src_line, to);
                        li
                    };
                    ffi::lua_pop(from, 1);
                    if p.top {
                        proxy::push_proxy(to, li, None);
                    } else {
                        cache.mark_span(p.id, p.start, p.end, p.line);
                        proxy::push_proxy(to, li, Some((p.start, p.end)));
                    }
                    seen.add(from, idx, to);
                    let t = ffi::lua_gettop(to);
                    for (push, field) in [
                        (proxy::push_writes as unsafe fn(_, _) -> bool, Side::Writes),
                        (proxy::push_cache, Side::Nested),
                        (proxy::push_order, Side::Order),
                    ] {
                        if push(from, idx) {
                            let src = ffi::lua_gettop(from);
                            let r = copy_inner(from, src, to, depth + 1, cache, seen, false);
                            ffi::lua_pop(from, 1);
                            r?;
                            proxy::set_side_table(to, t, field);
                        }
                    }
                    ffi::lua_remove(to, li);
                } else {
                    let narr = ffi::lua_objlen(from, idx) as c_int;
                    ffi::lua_createtable(to, narr, if narr == 0 { 4 } else { 0 });
                    if record {
                        seen.add(from, idx, to);
                    }
                    let t = ffi::lua_gettop(to);
                    ffi::lua_pushnil(from);
                    while ffi::lua_next(from, idx) != 0 {
                        let v = ffi::lua_gettop(from);
                        let r = copy_inner(from, v - 1, to, depth + 1, cache, seen, true)
                            .and_then(|()| copy_inner(from, v, to, depth + 1, cache, seen, true));
                        if let Err(e) = r {
                            ffi::lua_settop(from, v - 2);
                            return Err(e);
                        }
                        ffi::lua_rawset(to, t);
                        ffi::lua_pop(from, 1);
                    }
                }
            }
            t => {
                let name = std::ffi::CStr::from_ptr(ffi::lua_typename(from, t)).to_string_lossy();
                return Err(CopyError::Unsupported(name.into_owned()));
            }
        }
    }
    Ok(())
}
