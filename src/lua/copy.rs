//! Values passed between script states (`analyze_event`, `timer_event`, a timer kept across
//! a reload): deep copies, event tables as event tables over a copy of their line.

use std::ffi::c_int;

use mlua::ffi::{self, lua_State};

use super::ffi_util::{push_bytes, to_bytes};
use super::member_cache::MemberCache;
use super::proxy::{self, Side};

/// Why a value cannot be passed to another script's state.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CopyError {
    #[error("value too deeply nested (or cyclic) to pass to an analyzer")]
    TooDeep,
    #[error("cannot pass a {0} value to an analyzer")]
    Unsupported(String),
    #[error(transparent)]
    Tampered(#[from] proxy::Tampered),
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
    if depth > 200 {
        return Err(CopyError::TooDeep);
    }
    // SAFETY: both states belong to this thread; indices are absolute.
    unsafe {
        let ty = ffi::lua_type(from, idx);
        // Each nesting level holds a few slots on both stacks; scalars need only the one.
        if ty == ffi::LUA_TTABLE {
            ffi::luaL_checkstack(to, 6, c"copy".as_ptr());
            ffi::luaL_checkstack(from, 6, c"copy".as_ptr());
        } else if depth == 0 {
            ffi::luaL_checkstack(to, 2, c"copy".as_ptr());
        }
        match ty {
            ffi::LUA_TNIL => ffi::lua_pushnil(to),
            ffi::LUA_TBOOLEAN => ffi::lua_pushboolean(to, ffi::lua_toboolean(from, idx)),
            ffi::LUA_TNUMBER => ffi::lua_pushnumber(to, ffi::lua_tonumber(from, idx)),
            ffi::LUA_TSTRING => push_bytes(to, to_bytes(from, idx).unwrap_or(&[])),
            ffi::LUA_TLIGHTUSERDATA => ffi::lua_pushlightuserdata(to, ffi::lua_touserdata(from, idx)),
            // A deletion in an event's write table: the marker of the other state.
            ffi::LUA_TTABLE if proxy::is_tomb(from, idx) => proxy::push_mt(to),
            ffi::LUA_TTABLE => {
                if proxy::is_proxy(from, idx) {
                    let p = proxy::parts(from, idx, Some(&mut *cache))?;
                    let li = proxy::push_line(to, p.line, p.id);
                    if p.top {
                        proxy::push_proxy(to, li, None);
                    } else {
                        cache.mark_span(p.id, p.start, p.end, p.line);
                        proxy::push_proxy(to, li, Some((p.start, p.end)));
                    }
                    let t = ffi::lua_gettop(to);
                    for (push, field) in [
                        (proxy::push_writes as unsafe fn(_, _) -> bool, Side::Writes),
                        (proxy::push_cache, Side::Nested),
                        (proxy::push_order, Side::Order),
                    ] {
                        if push(from, idx) {
                            let src = ffi::lua_gettop(from);
                            let r = copy_value(from, src, to, depth + 1, cache);
                            ffi::lua_pop(from, 1);
                            r?;
                            proxy::set_side_table(to, t, field);
                        }
                    }
                    ffi::lua_remove(to, li);
                } else {
                    let narr = ffi::lua_objlen(from, idx) as c_int;
                    ffi::lua_createtable(to, narr, if narr == 0 { 4 } else { 0 });
                    let t = ffi::lua_gettop(to);
                    ffi::lua_pushnil(from);
                    while ffi::lua_next(from, idx) != 0 {
                        let v = ffi::lua_gettop(from);
                        let r = copy_value(from, v - 1, to, depth + 1, cache)
                            .and_then(|()| copy_value(from, v, to, depth + 1, cache));
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
