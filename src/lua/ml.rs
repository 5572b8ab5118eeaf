//! `dragonfly.ml`: the direct Lua API to the native Redis-ML models (no command text to
//! format or parse per call). `forest_run` is Lua compiled by LuaJIT that fills a feature
//! array and calls the evaluator through the FFI; the rest are C functions.

use std::cell::RefCell;
use std::ffi::c_int;

use mlua::ffi::{self, lua_State};

use super::boundary::{Coerce, LuaFail, LuaResult, arg_bytes, c_entry};
use super::ffi_util::{push_bytes, str_at, to_bytes};
use crate::ml::{self, AttrKey, MlError, Mode, RunError};

/// The Lua half of `forest_run`: looks up the forest's feature layout once per version,
/// reads the features by name or slot from the caller's table into a C array and runs the
/// forest on it.
const ML_PRELUDE: &str = r#"
local ml, run_ptr, layout_of = ...
local ffi = require("ffi")
local run = ffi.cast("int32_t (*)(const char *, size_t, double, const double *, size_t, int32_t, double *)", run_ptr)
local type, tonumber, tostring, error = type, tonumber, tostring, error
local cap = 32
local xs = ffi.new("double[?]", cap)
local res = ffi.new("double[1]")
-- key -> { layout id, feature keys (slot numbers or names), count }
local layouts = {}
local WRONG = "WRONGTYPE Operation against a key holding the wrong kind of value"

function ml.forest_run(key, f, mode)
   if type(key) ~= "string" then error("forest_run: bad argument #1 (string expected)", 2) end
   if type(f) ~= "table" then error("forest_run: bad argument #2 (table expected)", 2) end
   local m = 0
   if mode == "REGRESSION" then
      m = 1
   elseif mode ~= nil and mode ~= "CLASSIFICATION" then
      return nil, "ERR unknown mode '" .. tostring(mode) .. "' (CLASSIFICATION or REGRESSION)"
   end
   -- A forest replaced between the layout lookup and the run makes the run stale: look the
   -- layout up again. Three tries were too few on a loaded machine with other workers
   -- re-adding the forest (tests/ml: concurrent_add_while_workers_run failed 2 runs in 3).
   for _ = 1, 100 do
      local lay = layouts[key]
      if lay == nil then
         local id, names = layout_of(key)
         if id == nil then return nil, names end
         lay = { id, names, #names }
         layouts[key] = lay
         if lay[3] > cap then
            cap = lay[3]
            xs = ffi.new("double[?]", cap)
         end
      end
      local names, n = lay[2], lay[3]
      for i = 1, n do
         local v = f[names[i]]
         if type(v) ~= "number" then v = tonumber(v) or (v == true and 1) or 0 end
         xs[i - 1] = v
      end
      local st = run(key, #key, lay[1], xs, n, m, res)
      if st == 0 then return res[0] end
      layouts[key] = nil
      if st == 2 then return nil, WRONG end
      if st == 3 then return nil, "ERR the forest has no trees" end
      if st == 4 then return nil, "ERR internal error in the evaluator (reported on the engine's stderr)" end
   end
   return nil, "ERR the forest kept changing during the call"
end
"#;

thread_local! {
    /// Feature values of regression and K-means predictions.
    static XS: RefCell<Vec<f64>> = const { RefCell::new(Vec::new()) };
}

/// The evaluator `forest_run` calls through the FFI: 0 done (`*out` set), 1 the layout
/// changed, 2 no forest under the key, 3 a forest without trees, 4 an internal error (a
/// panic, caught).
///
/// # Safety
///
/// Called by LuaJIT with `key` pointing to `key_len` bytes of a live string, `x` to `n`
/// doubles and `out` to one.
pub(crate) unsafe extern "C" fn df_ml_forest_run(
    key: *const u8,
    key_len: usize,
    layout: f64,
    x: *const f64,
    n: usize,
    mode: i32,
    out: *mut f64,
) -> i32 {
    super::boundary::ffi_entry(4, || {
        // SAFETY: see the function's contract.
        let (key, x) = unsafe {
            (
                std::slice::from_raw_parts(key, key_len),
                std::slice::from_raw_parts(x, n),
            )
        };
        let mode = if mode == 1 {
            Mode::Regression
        } else {
            Mode::Classification
        };
        let r = ml::forest_run_dense(key, layout as u64, x, mode);
        ml::count(!matches!(r, Ok(_) | Err(RunError::Stale)));
        match r {
            Ok(v) => {
                // SAFETY: `out` points to a live double.
                unsafe { *out = v };
                0
            }
            Err(RunError::Stale) => 1,
            Err(RunError::Ml(MlError::Empty)) => 3,
            Err(RunError::Ml(_)) => 2,
        }
    })
}

/// `layout_of(key)`: the forest's layout id and its features (slot numbers or names), or
/// nil and the error.
unsafe extern "C-unwind" fn layout_of(l: *mut lua_State) -> c_int {
    // SAFETY: called by the ML prelude with a string key.
    unsafe {
        c_entry(l, "layout_of", |l| {
            Ok({
                let key = to_bytes(l, 1).unwrap_or(&[]);
                match ml::forest_layout(key) {
                    Ok((id, attrs)) => {
                        ffi::lua_pushnumber(l, id as f64);
                        ffi::lua_createtable(l, attrs.len() as c_int, 0);
                        for (i, a) in attrs.iter().enumerate() {
                            match a {
                                AttrKey::Slot(n) => ffi::lua_pushnumber(l, *n as f64),
                                AttrKey::Name(b) => push_bytes(l, b),
                            }
                            ffi::lua_rawseti_(l, -2, i as c_int + 1);
                        }
                        2
                    }
                    Err(e) => fail(l, &e),
                }
            })
        })
    }
}

/// Pushes `nil, message`.
unsafe fn fail(l: *mut lua_State, e: &MlError) -> c_int {
    // SAFETY: the caller owns `l`.
    unsafe {
        ffi::lua_pushnil(l);
        push_bytes(l, e.to_string().as_bytes());
        2
    }
}

/// Pushes `true` or `nil, message` for a setter, counting the call.
unsafe fn done(l: *mut lua_State, r: Result<(), MlError>) -> c_int {
    ml::count(r.is_err());
    // SAFETY: the caller owns `l`.
    unsafe {
        match r {
            Ok(()) => {
                ffi::lua_pushboolean(l, 1);
                1
            }
            Err(e) => fail(l, &e),
        }
    }
}

/// Pushes a number or `nil, message`, counting the call.
unsafe fn number(l: *mut lua_State, r: Result<f64, MlError>) -> c_int {
    ml::count(r.is_err());
    // SAFETY: the caller owns `l`.
    unsafe {
        match r {
            Ok(v) => {
                ffi::lua_pushnumber(l, v);
                1
            }
            Err(e) => fail(l, &e),
        }
    }
}

unsafe fn key_arg<'a>(l: *mut lua_State, f: &str, idx: c_int) -> Result<&'a [u8], LuaFail> {
    // SAFETY: `idx` is an argument index.
    unsafe { arg_bytes(l, f, idx, Coerce::StrOrNum) }
}

unsafe fn num_arg(l: *mut lua_State, f: &str, idx: c_int) -> Result<f64, LuaFail> {
    // SAFETY: `idx` is an argument index.
    unsafe {
        if ffi::lua_type(l, idx) != ffi::LUA_TNUMBER {
            return Err(LuaFail(format!("{f}: bad argument #{idx} (number expected)")));
        }
        Ok(ffi::lua_tonumber(l, idx))
    }
}

unsafe fn count_arg(l: *mut lua_State, f: &str, idx: c_int) -> Result<usize, LuaFail> {
    // SAFETY: `idx` is an argument index.
    unsafe {
        let v = num_arg(l, f, idx)?;
        if v < 0.0 || v.fract() != 0.0 || v > u32::MAX as f64 {
            return Err(LuaFail(format!("{f}: bad argument #{idx} (a count expected, got {v})")));
        }
        Ok(v as usize)
    }
}

/// Checks that argument `idx` is a table whose array part `t[1..#t]` holds only numbers.
unsafe fn check_numbers(l: *mut lua_State, f: &str, idx: c_int) -> Result<(), LuaFail> {
    // SAFETY: `idx` is an argument index; one slot is pushed and popped per element.
    unsafe {
        if ffi::lua_type(l, idx) != ffi::LUA_TTABLE {
            return Err(LuaFail(format!("{f}: bad argument #{idx} (table of numbers expected)")));
        }
        for i in 1..=ffi::lua_objlen(l, idx) {
            ffi::lua_rawgeti_(l, idx, i as c_int);
            let ok = ffi::lua_type(l, -1) == ffi::LUA_TNUMBER;
            ffi::lua_pop(l, 1);
            if !ok {
                return Err(LuaFail(format!(
                    "{f}: bad argument #{idx} (element {i} is not a number)"
                )));
            }
        }
        Ok(())
    }
}

/// Reads the array part of the table argument `idx`, checked by [`check_numbers`].
unsafe fn fill_numbers(l: *mut lua_State, idx: c_int, out: &mut Vec<f64>) {
    // SAFETY: `idx` is a table argument; one slot is pushed and popped per element.
    unsafe {
        out.clear();
        for i in 1..=ffi::lua_objlen(l, idx) {
            ffi::lua_rawgeti_(l, idx, i as c_int);
            out.push(ffi::lua_tonumber(l, -1));
            ffi::lua_pop(l, 1);
        }
    }
}

/// Checks that arguments `from..=top` are strings or numbers.
unsafe fn check_keys(l: *mut lua_State, f: &str, from: c_int) -> Result<(), LuaFail> {
    // SAFETY: indices are arguments.
    unsafe {
        for i in from..=ffi::lua_gettop(l) {
            key_arg(l, f, i)?;
        }
        Ok(())
    }
}

/// `ml.command(name, ...)`: any `ML.*` command, answered in-process with the reply
/// `hiredis` would give.
unsafe extern "C-unwind" fn command(l: *mut lua_State) -> c_int {
    // SAFETY: a lua_CFunction: `l` is this thread's running state, its arguments at 1..=top;
    // the body runs behind `c_entry` (panics caught, errors raised after it returns).
    unsafe {
        c_entry(l, "command", |l| {
            Ok({
                let top = ffi::lua_gettop(l);
                if top == 0 {
                    return Err("command: missing command name".into());
                }
                check_keys(l, "command", 1)?;
                let mut args = Vec::with_capacity(top as usize);
                for i in 1..=top {
                    args.push(key_arg(l, "command", i)?);
                }
                let r = if ml::is_ml_command(args[0]) {
                    ml::execute(&args)
                } else {
                    ml::Reply::Error(MlError::UnknownCommand(String::from_utf8_lossy(args[0]).into_owned()))
                };
                super::hiredis::push_ml_reply(l, &r);
                1
            })
        })
    }
}

/// Splits string arguments `from..=top` on ASCII white space.
unsafe fn tokens<'a>(l: *mut lua_State, f: &str, from: c_int) -> Result<Vec<&'a [u8]>, LuaFail> {
    // SAFETY: indices are arguments.
    unsafe {
        check_keys(l, f, from)?;
        let mut out = Vec::new();
        for i in from..=ffi::lua_gettop(l) {
            out.extend(
                key_arg(l, f, i)?
                    .split(|c| c.is_ascii_whitespace())
                    .filter(|t| !t.is_empty()),
            );
        }
        Ok(out)
    }
}

/// `ml.forest_add(key, treeid, "path node ...", ...)`.
unsafe extern "C-unwind" fn forest_add(l: *mut lua_State) -> c_int {
    // SAFETY: a lua_CFunction: `l` is this thread's running state, its arguments at 1..=top;
    // the body runs behind `c_entry` (panics caught, errors raised after it returns).
    unsafe {
        c_entry(l, "forest_add", |l| {
            Ok({
                let key = key_arg(l, "forest_add", 1)?;
                let tree = key_arg(l, "forest_add", 2)?;
                let nodes = tokens(l, "forest_add", 3)?;
                let r = if nodes.is_empty() {
                    Err(MlError::Arity("ml.forest.add".into()))
                } else {
                    ml::forest_add(key, tree, &nodes)
                };
                done(l, r)
            })
        })
    }
}

/// Why a model file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ModelFileError {
    #[error("{}: {source}", path.display())]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}: {source}", path.display())]
    Line {
        path: std::path::PathBuf,
        line: usize,
        source: MlError,
    },
}

/// Loads a model file: one `ML.FOREST.ADD` per line, with or without the command name
/// (`key treeid path node ...`); blank lines and lines starting with `#` are skipped.
pub(crate) fn load_forest_file(path: &std::path::Path) -> Result<usize, ModelFileError> {
    let text = std::fs::read(path).map_err(|source| ModelFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut n = 0;
    for (i, line) in text.split(|&c| c == b'\n').enumerate() {
        let mut t: Vec<&[u8]> = line
            .split(|c| c.is_ascii_whitespace())
            .filter(|t| !t.is_empty())
            .collect();
        if t.is_empty() || t[0].starts_with(b"#") {
            continue;
        }
        if t[0].eq_ignore_ascii_case(b"ML.FOREST.ADD") {
            t.remove(0);
        }
        let r = if t.len() < 4 {
            Err(MlError::Arity("ml.forest.add".into()))
        } else {
            ml::forest_add(t[0], t[1], &t[2..])
        };
        ml::count(r.is_err());
        r.map_err(|source| ModelFileError::Line {
            path: path.to_path_buf(),
            line: i + 1,
            source,
        })?;
        n += 1;
    }
    Ok(n)
}

/// `ml.load_forest(path)`: the number of trees added, or nil and the error.
unsafe extern "C-unwind" fn load_forest(l: *mut lua_State) -> c_int {
    // SAFETY: a lua_CFunction: `l` is this thread's running state, its arguments at 1..=top;
    // the body runs behind `c_entry` (panics caught, errors raised after it returns).
    unsafe {
        c_entry(l, "load_forest", |l| {
            Ok({
                let path = key_arg(l, "load_forest", 1)?;
                let path = std::path::PathBuf::from(String::from_utf8_lossy(path).into_owned());
                match load_forest_file(&path) {
                    Ok(n) => {
                        ffi::lua_pushnumber(l, n as f64);
                        1
                    }
                    Err(e) => {
                        ffi::lua_pushnil(l);
                        push_bytes(l, e.to_string().as_bytes());
                        2
                    }
                }
            })
        })
    }
}

unsafe fn reg_set(l: *mut lua_State, logistic: bool, f: &str) -> LuaResult {
    // SAFETY: a lua_CFunction: `l` is this thread's running state, its arguments at 1..=top;
    // the body runs behind `c_entry` (panics caught, errors raised after it returns).
    unsafe {
        Ok({
            let key = key_arg(l, f, 1)?;
            let intercept = num_arg(l, f, 2)?;
            check_numbers(l, f, 3)?;
            let mut coef = Vec::new();
            fill_numbers(l, 3, &mut coef);
            done(l, ml::reg_set(key, logistic, intercept, coef))
        })
    }
}

unsafe fn reg_predict(l: *mut lua_State, logistic: bool, f: &str) -> LuaResult {
    // SAFETY: a lua_CFunction: `l` is this thread's running state, its arguments at 1..=top;
    // the body runs behind `c_entry` (panics caught, errors raised after it returns).
    unsafe {
        Ok({
            let key = key_arg(l, f, 1)?;
            check_numbers(l, f, 2)?;
            let mut xs = XS.take();
            fill_numbers(l, 2, &mut xs);
            let r = ml::reg_predict(key, logistic, &xs);
            XS.set(xs);
            number(l, r)
        })
    }
}

unsafe extern "C-unwind" fn linreg_set(l: *mut lua_State) -> c_int {
    // SAFETY: a lua_CFunction: `l` is this thread's running state, its arguments at 1..=top;
    // the body runs behind `c_entry` (panics caught, errors raised after it returns).
    unsafe { c_entry(l, "linreg_set", |l| reg_set(l, false, "linreg_set")) }
}

unsafe extern "C-unwind" fn logreg_set(l: *mut lua_State) -> c_int {
    // SAFETY: a lua_CFunction: `l` is this thread's running state, its arguments at 1..=top;
    // the body runs behind `c_entry` (panics caught, errors raised after it returns).
    unsafe { c_entry(l, "logreg_set", |l| reg_set(l, true, "logreg_set")) }
}

unsafe extern "C-unwind" fn linreg_predict(l: *mut lua_State) -> c_int {
    // SAFETY: a lua_CFunction: `l` is this thread's running state, its arguments at 1..=top;
    // the body runs behind `c_entry` (panics caught, errors raised after it returns).
    unsafe { c_entry(l, "linreg_predict", |l| reg_predict(l, false, "linreg_predict")) }
}

unsafe extern "C-unwind" fn logreg_predict(l: *mut lua_State) -> c_int {
    // SAFETY: a lua_CFunction: `l` is this thread's running state, its arguments at 1..=top;
    // the body runs behind `c_entry` (panics caught, errors raised after it returns).
    unsafe { c_entry(l, "logreg_predict", |l| reg_predict(l, true, "logreg_predict")) }
}

/// `ml.kmeans_set(key, k, dims, centers)` with the centers flat, row after row.
unsafe extern "C-unwind" fn kmeans_set(l: *mut lua_State) -> c_int {
    // SAFETY: a lua_CFunction: `l` is this thread's running state, its arguments at 1..=top;
    // the body runs behind `c_entry` (panics caught, errors raised after it returns).
    unsafe {
        c_entry(l, "kmeans_set", |l| {
            Ok({
                let f = "kmeans_set";
                let key = key_arg(l, f, 1)?;
                let (k, dims) = (count_arg(l, f, 2)?, count_arg(l, f, 3)?);
                check_numbers(l, f, 4)?;
                let mut centers = Vec::new();
                fill_numbers(l, 4, &mut centers);
                done(l, ml::kmeans_set(key, k, dims, centers))
            })
        })
    }
}

/// `ml.kmeans_predict(key, xs)`: the 0-based index of the nearest center.
unsafe extern "C-unwind" fn kmeans_predict(l: *mut lua_State) -> c_int {
    // SAFETY: a lua_CFunction: `l` is this thread's running state, its arguments at 1..=top;
    // the body runs behind `c_entry` (panics caught, errors raised after it returns).
    unsafe {
        c_entry(l, "kmeans_predict", |l| {
            Ok({
                let key = key_arg(l, "kmeans_predict", 1)?;
                check_numbers(l, "kmeans_predict", 2)?;
                let mut xs = XS.take();
                fill_numbers(l, 2, &mut xs);
                let r = ml::kmeans_predict(key, &xs).map(|i| i as f64);
                XS.set(xs);
                number(l, r)
            })
        })
    }
}

unsafe extern "C-unwind" fn matrix_set(l: *mut lua_State) -> c_int {
    // SAFETY: a lua_CFunction: `l` is this thread's running state, its arguments at 1..=top;
    // the body runs behind `c_entry` (panics caught, errors raised after it returns).
    unsafe {
        c_entry(l, "matrix_set", |l| {
            Ok({
                let f = "matrix_set";
                let key = key_arg(l, f, 1)?;
                let (n, m) = (count_arg(l, f, 2)?, count_arg(l, f, 3)?);
                check_numbers(l, f, 4)?;
                let mut data = Vec::new();
                fill_numbers(l, 4, &mut data);
                done(l, ml::matrix_set(key, n, m, data))
            })
        })
    }
}

/// `ml.matrix_get(key)`: rows, columns and the entries (row-major), or nil and the error.
unsafe extern "C-unwind" fn matrix_get(l: *mut lua_State) -> c_int {
    // SAFETY: a lua_CFunction: `l` is this thread's running state, its arguments at 1..=top;
    // the body runs behind `c_entry` (panics caught, errors raised after it returns).
    unsafe {
        c_entry(l, "matrix_get", |l| {
            Ok({
                let r = ml::matrix_get(key_arg(l, "matrix_get", 1)?);
                ml::count(r.is_err());
                match r {
                    Ok(m) => {
                        ffi::lua_pushnumber(l, m.n as f64);
                        ffi::lua_pushnumber(l, m.m as f64);
                        ffi::lua_createtable(l, m.data.len() as c_int, 0);
                        for (i, v) in m.data.iter().enumerate() {
                            ffi::lua_pushnumber(l, *v);
                            ffi::lua_rawseti_(l, -2, i as c_int + 1);
                        }
                        3
                    }
                    Err(e) => fail(l, &e),
                }
            })
        })
    }
}

/// A matrix operation `(a, b, destination)`.
type MatrixOp = fn(&[u8], &[u8], &[u8]) -> Result<(), MlError>;

unsafe fn matrix_op(l: *mut lua_State, f: &str, op: MatrixOp) -> LuaResult {
    // SAFETY: a lua_CFunction: `l` is this thread's running state, its arguments at 1..=top;
    // the body runs behind `c_entry` (panics caught, errors raised after it returns).
    unsafe {
        Ok({
            let (a, b, dst) = (key_arg(l, f, 1)?, key_arg(l, f, 2)?, key_arg(l, f, 3)?);
            done(l, op(a, b, dst))
        })
    }
}

unsafe extern "C-unwind" fn matrix_add(l: *mut lua_State) -> c_int {
    // SAFETY: a lua_CFunction: `l` is this thread's running state, its arguments at 1..=top;
    // the body runs behind `c_entry` (panics caught, errors raised after it returns).
    unsafe { c_entry(l, "matrix_add", |l| matrix_op(l, "matrix_add", ml::matrix_add)) }
}

unsafe extern "C-unwind" fn matrix_multiply(l: *mut lua_State) -> c_int {
    // SAFETY: a lua_CFunction: `l` is this thread's running state, its arguments at 1..=top;
    // the body runs behind `c_entry` (panics caught, errors raised after it returns).
    unsafe {
        c_entry(l, "matrix_multiply", |l| {
            matrix_op(l, "matrix_multiply", ml::matrix_multiply)
        })
    }
}

unsafe extern "C-unwind" fn matrix_scale(l: *mut lua_State) -> c_int {
    // SAFETY: a lua_CFunction: `l` is this thread's running state, its arguments at 1..=top;
    // the body runs behind `c_entry` (panics caught, errors raised after it returns).
    unsafe {
        c_entry(l, "matrix_scale", |l| {
            Ok({
                let key = key_arg(l, "matrix_scale", 1)?;
                let s = num_arg(l, "matrix_scale", 2)?;
                done(l, ml::matrix_scale(key, s))
            })
        })
    }
}

/// `ml.delete(key)`: whether a model was there.
unsafe extern "C-unwind" fn delete(l: *mut lua_State) -> c_int {
    // SAFETY: a lua_CFunction: `l` is this thread's running state, its arguments at 1..=top;
    // the body runs behind `c_entry` (panics caught, errors raised after it returns).
    unsafe {
        c_entry(l, "delete", |l| {
            Ok({
                let key = key_arg(l, "delete", 1)?;
                ffi::lua_pushboolean(l, ml::delete(key) as c_int);
                1
            })
        })
    }
}

/// Installs `dragonfly.ml` (the `dragonfly` global must exist); fails with Lua's message if
/// its Lua part does not load.
pub(crate) unsafe fn install(l: *mut lua_State) -> Result<(), super::ScriptCause> {
    // SAFETY: a fresh state of this thread.
    unsafe {
        ffi::lua_getfield(l, ffi::LUA_GLOBALSINDEX, c"dragonfly".as_ptr());
        ffi::lua_createtable(l, 0, 20);
        let t = ffi::lua_gettop(l);
        for (name, f) in [
            (c"command", command as ffi::lua_CFunction),
            (c"forest_add", forest_add),
            (c"load_forest", load_forest),
            (c"linreg_set", linreg_set),
            (c"linreg_predict", linreg_predict),
            (c"logreg_set", logreg_set),
            (c"logreg_predict", logreg_predict),
            (c"kmeans_set", kmeans_set),
            (c"kmeans_predict", kmeans_predict),
            (c"matrix_set", matrix_set),
            (c"matrix_get", matrix_get),
            (c"matrix_add", matrix_add),
            (c"matrix_multiply", matrix_multiply),
            (c"matrix_scale", matrix_scale),
            (c"delete", delete),
        ] {
            ffi::lua_pushcclosure(l, f, 0);
            ffi::lua_setfield(l, t, name.as_ptr());
        }
        ffi::lua_pushvalue(l, t);
        ffi::lua_setfield(l, t - 1, c"ml".as_ptr());
        if ffi::luaL_loadbuffer(l, ML_PRELUDE.as_ptr().cast(), ML_PRELUDE.len(), c"=ml prelude".as_ptr()) != 0 {
            let e = str_at(l, -1)
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            ffi::lua_settop(l, t - 2);
            return Err(super::ScriptCause::Prelude(format!("dragonfly.ml: {e}")));
        }
        ffi::lua_pushvalue(l, t);
        ffi::lua_pushlightuserdata(l, df_ml_forest_run as *mut std::ffi::c_void);
        ffi::lua_pushcclosure(l, layout_of, 0);
        let r = ffi::lua_pcall(l, 3, 0, 0);
        let e = if r != 0 {
            Some(
                str_at(l, -1)
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default(),
            )
        } else {
            None
        };
        ffi::lua_settop(l, t - 2);
        e.map_or(Ok(()), |e| {
            Err(super::ScriptCause::Prelude(format!("dragonfly.ml: {e}")))
        })
    }
}
