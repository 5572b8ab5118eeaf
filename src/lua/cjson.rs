//! `cjson_safe` (also `cjson`): lua-cjson 2.1.0's module as scripts see it. `encode` and
//! `decode` return `nil, message` instead of raising; the setters (`encode_sparse_array`,
//! `encode_max_depth`, `decode_max_depth`, `encode_number_precision`, `encode_keep_buffer`,
//! `encode_invalid_numbers`, `decode_invalid_numbers`) change the settings of their module
//! instance and return them, with lua-cjson's checks and messages; `new()` makes an instance
//! with settings of its own. The state's own instance (the globals) also governs how
//! `output_event` and its kin write tables.

use std::ffi::c_int;

use mlua::ffi::{self, lua_State};

use super::boundary::{LuaFail, c_entry};
use super::ffi_util::{push_bytes, reg};
use super::json::{CjsonConfig, Encoder};

/// The settings of the module instance whose function is running (its upvalue 1).
///
/// # Safety
/// `l` is running a C closure made by [`push_module`].
unsafe fn config<'a>(l: *mut lua_State) -> &'a mut CjsonConfig {
    // SAFETY: see the contract: upvalue 1 is the instance's settings userdata, which the
    // closure keeps alive and LuaJIT never moves.
    unsafe { &mut *ffi::lua_touserdata(l, ffi::lua_upvalueindex(1)).cast::<CjsonConfig>() }
}

thread_local! {
    static SCRATCH: std::cell::RefCell<(Encoder, Vec<u8>)> = std::cell::RefCell::new((Encoder::default(), Vec::new()));
}

unsafe extern "C-unwind" fn encode(l: *mut lua_State) -> c_int {
    // SAFETY: a lua_CFunction made by `push_module`: `l` is this thread's running state, its
    // arguments at 1..=top; the body runs behind `c_entry` (panics caught, errors raised
    // after it returns). The encoder reads the stack only (raw accesses: no metamethod runs).
    unsafe {
        c_entry(l, "encode", |l| {
            one_argument(l)?;
            let cfg = *config(l);
            let run = |enc: &mut Encoder, out: &mut Vec<u8>| {
                out.clear();
                enc.cfg = cfg;
                match enc.encode(l, 1, out) {
                    Ok(()) => {
                        push_bytes(l, out);
                        None
                    }
                    Err(e) => Some(e.0),
                }
            };
            // A finalizer that the collector runs while an encode of this thread pushes its
            // result (an allocation) finds the scratch in use: it encodes with its own.
            let r = SCRATCH.with(|s| match s.try_borrow_mut() {
                Ok(mut s) => {
                    let (enc, out) = &mut *s;
                    run(enc, out)
                }
                Err(_) => run(&mut Encoder::default(), &mut Vec::new()),
            });
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

/// lua-cjson's check of `encode`/`decode`'s argument count, with its message (its protected
/// call leaves the function unnamed).
unsafe fn one_argument(l: *mut lua_State) -> Result<(), LuaFail> {
    // SAFETY: `l` is the running state.
    if unsafe { ffi::lua_gettop(l) } != 1 {
        return Err(LuaFail("bad argument #1 to '?' (expected 1 argument)".into()));
    }
    Ok(())
}

unsafe extern "C-unwind" fn decode(l: *mut lua_State) -> c_int {
    // SAFETY: a lua_CFunction made by `push_module`: `l` is this thread's running state, its
    // arguments at 1..=top; the body runs behind `c_entry` (panics caught, errors raised
    // after it returns).
    unsafe {
        c_entry(l, "decode", |l| {
            one_argument(l)?;
            let cfg = *config(l);
            // As lua-cjson: a number is decoded as its text (`decode(123)` is 123).
            if ffi::lua_type(l, 1) == ffi::LUA_TNUMBER {
                ffi::lua_tolstring(l, 1, std::ptr::null_mut());
            }
            let Some(s) = super::ffi_util::str_at(l, 1) else {
                if super::proxy::is_proxy(l, 1) {
                    // Scripts written for early versions of the original got each event as
                    // text and decoded it; here (as in the original this engine follows) it
                    // is a table already, and lua-cjson's answer below would drop every
                    // event without a word.
                    super::context::try_with_ctx(|c| {
                        c.script_warning(
                            "decode_event",
                            "cjson_safe.decode was given an event table, which is decoded already: it returns nil and a message, as lua-cjson does (use the table itself; reported once per script)",
                        )
                    });
                }
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
            let limits = super::lenient_json::Limits {
                max_depth: cfg.decode_max_depth.clamp(1, super::json::ENGINE_MAX_DEPTH) as usize,
                invalid_numbers: cfg.decode_invalid,
            };
            match super::lenient_json::decode(l, s, limits) {
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

/// `new()`: a module instance with settings of its own (lua-cjson's defaults, this state's
/// configured precision).
unsafe extern "C-unwind" fn new(l: *mut lua_State) -> c_int {
    // SAFETY: a lua_CFunction made by `push_module`; pushing a table and closures raises
    // only on memory exhaustion, which LuaJIT handles as for any allocation.
    unsafe {
        let fresh = CjsonConfig::with_precision(config(l).initial_precision);
        push_module(l, fresh);
        1
    }
}

/// The name the running C function was called by, as `luaL_argerror` finds it, and whether
/// it was called as a method.
unsafe fn called_name(l: *mut lua_State) -> (String, bool) {
    // SAFETY: `l` is the running state; `lua_Debug` is plain C data that `lua_getinfo` fills.
    unsafe {
        let mut ar: ffi::lua_Debug = std::mem::zeroed();
        if ffi::lua_getstack(l, 0, &mut ar) == 0 || ffi::lua_getinfo(l, c"n".as_ptr(), &mut ar) == 0 {
            return ("?".into(), false);
        }
        let text = |p: *const std::ffi::c_char| {
            (!p.is_null()).then(|| std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned())
        };
        let method = text(ar.namewhat).is_some_and(|w| w == "method");
        (text(ar.name).unwrap_or_else(|| "?".into()), method)
    }
}

/// `luaL_argerror`'s message for argument `n` of the running function.
unsafe fn arg_error(l: *mut lua_State, n: c_int, msg: &str) -> LuaFail {
    // SAFETY: forwarded contract.
    let (name, method) = unsafe { called_name(l) };
    if method {
        if n == 1 {
            return LuaFail(format!("calling '{name}' on bad self ({msg})"));
        }
        return LuaFail(format!("bad argument #{} to '{name}' ({msg})", n - 1));
    }
    LuaFail(format!("bad argument #{n} to '{name}' ({msg})"))
}

/// lua-cjson's `json_arg_init`: at most `args` arguments, the missing ones nil.
unsafe fn arg_init(l: *mut lua_State, args: c_int) -> Result<(), LuaFail> {
    // SAFETY: `l` is the running state.
    unsafe {
        if ffi::lua_gettop(l) > args {
            return Err(arg_error(l, args + 1, "found too many arguments"));
        }
        ffi::lua_settop(l, args);
    }
    Ok(())
}

/// The type name of the value at `idx`.
unsafe fn type_name(l: *mut lua_State, idx: c_int) -> String {
    // SAFETY: `l` is the running state and `idx` valid.
    unsafe {
        std::ffi::CStr::from_ptr(ffi::lua_typename(l, ffi::lua_type(l, idx)))
            .to_string_lossy()
            .into_owned()
    }
}

/// lua-cjson's `json_enum_option`: sets `setting` from argument `idx` (a boolean, or one of
/// `options` by name; nil leaves it) and pushes the setting (a boolean for off/on, else its
/// name).
unsafe fn enum_option(l: *mut lua_State, idx: c_int, setting: &mut u8, options: &[&str]) -> Result<(), LuaFail> {
    // SAFETY: `l` is the running state and `idx` one of its arguments.
    unsafe {
        match ffi::lua_type(l, idx) {
            ffi::LUA_TNIL => {}
            ffi::LUA_TBOOLEAN => *setting = u8::from(ffi::lua_toboolean(l, idx) != 0),
            ffi::LUA_TSTRING | ffi::LUA_TNUMBER => {
                let mut len = 0;
                let p = ffi::lua_tolstring(l, idx, &mut len);
                let name = std::slice::from_raw_parts(p.cast::<u8>(), len);
                match options.iter().position(|o| o.as_bytes() == name) {
                    Some(i) => *setting = i as u8,
                    None => {
                        let shown = String::from_utf8_lossy(name);
                        return Err(arg_error(l, idx, &format!("invalid option '{shown}'")));
                    }
                }
            }
            _ => {
                let ty = type_name(l, idx);
                return Err(arg_error(l, idx, &format!("string expected, got {ty}")));
            }
        }
        if *setting <= 1 {
            ffi::lua_pushboolean(l, c_int::from(*setting));
        } else {
            push_bytes(l, options[usize::from(*setting)].as_bytes());
        }
    }
    Ok(())
}

/// lua-cjson's `json_integer_option`: sets `setting` from argument `idx` (a number or numeric
/// string, truncated to a C `int`, within `min..=max`; nil leaves it) and pushes it. As
/// lua-cjson, a value out of range is reported as argument #1 whatever its position.
unsafe fn integer_option(l: *mut lua_State, idx: c_int, setting: &mut i32, min: i32, max: i32) -> Result<(), LuaFail> {
    // SAFETY: `l` is the running state and `idx` one of its arguments.
    unsafe {
        if ffi::lua_type(l, idx) != ffi::LUA_TNIL {
            if ffi::lua_isnumber(l, idx) == 0 {
                let ty = type_name(l, idx);
                return Err(arg_error(l, idx, &format!("number expected, got {ty}")));
            }
            // C's conversions: the number to lua_Integer (truncated), then to int.
            let value = ffi::lua_tointeger_(l, idx) as i32;
            if !(min..=max).contains(&value) {
                return Err(arg_error(l, 1, &format!("expected integer between {min} and {max}")));
            }
            *setting = value;
        }
        ffi::lua_pushinteger(l, ffi::lua_Integer::from(*setting));
    }
    Ok(())
}

/// [`enum_option`] of an off/on setting (a boolean, or `"off"`/`"on"`).
unsafe fn bool_option(l: *mut lua_State, idx: c_int, setting: &mut bool) -> Result<(), LuaFail> {
    let mut v = u8::from(*setting);
    // SAFETY: forwarded contract.
    let r = unsafe { enum_option(l, idx, &mut v, &["off", "on"]) };
    *setting = v != 0;
    r
}

/// Defines a setter: `$args` arguments at most, `$body` sets and pushes (given the state and
/// the instance's settings), returning how many values it pushed.
macro_rules! setter {
    ($name:ident, $args:expr, |$l:ident, $cfg:ident| $body:expr) => {
        unsafe extern "C-unwind" fn $name(l: *mut lua_State) -> c_int {
            // SAFETY: a lua_CFunction made by `push_module`: `l` is this thread's running
            // state, its arguments at 1..=top; the body runs behind `c_entry` (panics caught,
            // errors raised after it returns).
            unsafe {
                c_entry(l, stringify!($name), |$l| {
                    arg_init($l, $args)?;
                    let $cfg = config($l);
                    $body
                })
            }
        }
    };
}

setter!(encode_sparse_array, 3, |l, cfg| {
    bool_option(l, 1, &mut cfg.sparse_convert)?;
    integer_option(l, 2, &mut cfg.sparse_ratio, 0, i32::MAX)?;
    integer_option(l, 3, &mut cfg.sparse_safe, 0, i32::MAX)?;
    Ok(3)
});

setter!(encode_max_depth, 1, |l, cfg| {
    integer_option(l, 1, &mut cfg.encode_max_depth, 1, i32::MAX)?;
    Ok(1)
});

setter!(decode_max_depth, 1, |l, cfg| {
    integer_option(l, 1, &mut cfg.decode_max_depth, 1, i32::MAX)?;
    Ok(1)
});

setter!(encode_number_precision, 1, |l, cfg| {
    // 1 to 17 here (lua-cjson: 14): 17 writes the shortest form that reads back exactly.
    let mut p = i32::from(cfg.precision);
    integer_option(l, 1, &mut p, 1, 17)?;
    cfg.precision = p as u8;
    Ok(1)
});

setter!(encode_keep_buffer, 1, |l, cfg| {
    bool_option(l, 1, &mut cfg.keep_buffer)?;
    Ok(1)
});

setter!(encode_invalid_numbers, 1, |l, cfg| {
    enum_option(l, 1, &mut cfg.encode_invalid, &["off", "on", "null"])?;
    Ok(1)
});

setter!(decode_invalid_numbers, 1, |l, cfg| {
    bool_option(l, 1, &mut cfg.decode_invalid)?;
    Ok(1)
});

/// Pushes a module instance with settings `cfg`: a table of C closures sharing one settings
/// userdata (upvalue 1). Returns the settings' address (stable: LuaJIT never moves a userdata).
unsafe fn push_module(l: *mut lua_State, cfg: CjsonConfig) -> *mut CjsonConfig {
    // SAFETY: `l` is owned by this thread; the userdata is written before any use.
    unsafe {
        ffi::lua_createtable(l, 0, 16);
        let t = ffi::lua_gettop(l);
        let p = ffi::lua_newuserdata(l, std::mem::size_of::<CjsonConfig>()).cast::<CjsonConfig>();
        p.write(cfg);
        let u = ffi::lua_gettop(l);
        let functions: [(&std::ffi::CStr, ffi::lua_CFunction); 10] = [
            (c"encode", encode),
            (c"decode", decode),
            (c"new", new),
            (c"encode_sparse_array", encode_sparse_array),
            (c"encode_max_depth", encode_max_depth),
            (c"decode_max_depth", decode_max_depth),
            (c"encode_number_precision", encode_number_precision),
            (c"encode_keep_buffer", encode_keep_buffer),
            (c"encode_invalid_numbers", encode_invalid_numbers),
            (c"decode_invalid_numbers", decode_invalid_numbers),
        ];
        for (name, f) in functions {
            ffi::lua_pushvalue(l, u);
            ffi::lua_pushcclosure(l, f, 1);
            ffi::lua_setfield(l, t, name.as_ptr());
        }
        ffi::lua_pop(l, 1);
        ffi::lua_pushlightuserdata(l, std::ptr::null_mut());
        ffi::lua_setfield(l, t, c"null".as_ptr());
        push_bytes(l, b"cjson");
        ffi::lua_setfield(l, t, c"_NAME".as_ptr());
        push_bytes(l, b"2.1.0");
        ffi::lua_setfield(l, t, c"_VERSION".as_ptr());
        p
    }
}

/// Installs the state's own instance as globals `cjson_safe` and `cjson` (and in
/// `package.loaded`), its settings in the registry (`reg::CJSON`), with `precision`
/// significant digits (config.lua's `number_precision`).
///
/// # Safety
/// `l` is a fresh state of this thread with the standard libraries open.
pub(super) unsafe fn install(l: *mut lua_State, precision: u8) {
    // SAFETY: see the contract.
    unsafe {
        push_module(l, CjsonConfig::with_precision(precision));
        let j = ffi::lua_gettop(l);
        ffi::lua_getfield(l, j, c"encode".as_ptr());
        let found = ffi::lua_getupvalue(l, -1, 1);
        debug_assert!(!found.is_null());
        ffi::lua_rawseti_(l, ffi::LUA_REGISTRYINDEX, reg::CJSON);
        ffi::lua_pop(l, 1);
        ffi::lua_pushvalue(l, j);
        super::ffi_util::register(l, ffi::lua_gettop(l), c"cjson");
        super::ffi_util::register(l, j, c"cjson_safe");
    }
}

/// Pushes the address of the state's own settings as a light userdata (for the prelude's
/// FFI reads of `precision`; null before `install`).
///
/// # Safety
/// `l` is owned by this thread.
pub(super) unsafe fn push_state_config_address(l: *mut lua_State) {
    // SAFETY: see the contract; the stack is balanced.
    unsafe {
        ffi::lua_rawgeti_(l, ffi::LUA_REGISTRYINDEX, reg::CJSON);
        let p = ffi::lua_touserdata(l, -1);
        ffi::lua_pop(l, 1);
        ffi::lua_pushlightuserdata(l, p);
    }
}
