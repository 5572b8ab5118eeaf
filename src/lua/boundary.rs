//! The door between Lua and Rust: every C function and every FFI function the scripts reach
//! runs its body through [`c_entry`] or [`ffi_entry`], which catch panics, and Lua errors are
//! raised in one place ([`c_entry`], after the body and everything it owned are dropped).
//! Also the per-state memory limit's switch (script time vs engine time) and the one helper
//! that reads string arguments.

use std::cell::Cell;
use std::ffi::c_int;
use std::panic::{AssertUnwindSafe, catch_unwind};

use mlua::ffi::{self, lua_State};

use super::ffi_util::{TimeMark, to_bytes};

/// A Lua error a C function asks for: its message (raised by [`c_entry`] once the body has
/// returned and dropped its values).
#[derive(Debug)]
pub(crate) struct LuaFail(pub String);

impl From<String> for LuaFail {
    fn from(s: String) -> Self {
        LuaFail(s)
    }
}

impl From<&str> for LuaFail {
    fn from(s: &str) -> Self {
        LuaFail(s.to_string())
    }
}

/// What a C function's body returns: how many values it pushed, or the error to raise.
pub(crate) type LuaResult = Result<c_int, LuaFail>;

/// What a body returns to make [`c_entry`] yield the running coroutine (with no values),
/// which happens after the body has returned: LuaJIT may raise "attempt to yield across a
/// C-call boundary" there, which must not cross `catch_unwind`.
pub(crate) const YIELD: c_int = c_int::MIN;

thread_local! {
    /// Panics caught at the boundary on this thread (added to the worker's counters).
    static PANICS: Cell<u64> = const { Cell::new(0) };
}

thread_local! {
    /// Errors raised by finalizers (`__gc`) of this thread's states, not yet reported: the
    /// state (its id, see [`state_id`]) and the message. LuaJIT catches such an error and
    /// hands it to the state's "errfin" handler (`finalizer_error`, attached by the prelude);
    /// the worker counts and reports them as script errors of that state's script.
    static FINALIZER_ERRORS: std::cell::RefCell<FinalizerErrors> = const {
        std::cell::RefCell::new(FinalizerErrors { kept: Vec::new(), more: Vec::new() })
    };
}

/// Finalizer errors not yet reported (see [`FINALIZER_ERRORS`]).
#[derive(Default)]
pub(crate) struct FinalizerErrors {
    /// The first ones: (state, message).
    pub(crate) kept: Vec<(usize, String)>,
    /// How many more there were, per state.
    pub(crate) more: Vec<(usize, u64)>,
}

/// Finalizer errors kept with their messages until the worker reports them; beyond, they are
/// only counted (a script can raise millions within one batch).
const FINALIZER_ERRORS_KEPT: usize = 1024;

/// The "errfin" handler of a state (the prelude attaches it with `jit.attach`): records the
/// error of a finalizer, which LuaJIT would otherwise drop, for [`take_finalizer_errors`].
pub(crate) unsafe extern "C-unwind" fn finalizer_error(l: *mut lua_State) -> c_int {
    // SAFETY: a lua_CFunction called by LuaJIT with the error value at 1; the body runs
    // behind `c_entry`.
    unsafe {
        c_entry(l, "finalizer error", |l| {
            // Nothing here allocates in Lua (see the prelude).
            let msg = match super::ffi_util::str_at(l, 1) {
                Some(b) => String::from_utf8_lossy(b).into_owned(),
                // As `error(42)` in loop() reads (a number is not converted in Lua here: that
                // would allocate).
                None if ffi::lua_type(l, 1) == ffi::LUA_TNUMBER => format!("{}", ffi::lua_tonumber(l, 1)),
                None => {
                    let t = std::ffi::CStr::from_ptr(ffi::lua_typename(l, ffi::lua_type(l, 1)));
                    format!("(an error value of type {})", t.to_string_lossy())
                }
            };
            // LuaJIT's message for an allocation the state's limit refused, as `script_failed`
            // explains it for loop().
            let msg = if msg == "not enough memory" {
                format!("{msg} (the script's state reached its memory limit, script_memory_mb)")
            } else {
                msg
            };
            record_finalizer_error(state_id(l), format!("in a finalizer (__gc): {msg}"));
            Ok(0)
        })
    }
}

/// Keeps a finalizer's error of the state `state` for the worker (see [`FINALIZER_ERRORS`]).
fn record_finalizer_error(state: usize, msg: String) {
    FINALIZER_ERRORS.with(|f| {
        let mut f = f.borrow_mut();
        if f.kept.len() < FINALIZER_ERRORS_KEPT {
            f.kept.push((state, msg));
        } else if let Some(m) = f.more.iter_mut().find(|m| m.0 == state) {
            m.1 += 1;
        } else {
            f.more.push((state, 1));
        }
    });
}

/// The id of the state `l` belongs to, unique in the process (`run_prelude` keeps it in the
/// registry), by which the worker knows its scripts: a closed state's address can be the
/// next state's.
///
/// # Safety
///
/// `l` is a live state of this thread, set up by `run_prelude`.
pub(crate) unsafe fn state_id(l: *mut lua_State) -> usize {
    // SAFETY: a raw read of a registry slot and a pop: no allocation, no error.
    unsafe {
        ffi::lua_rawgeti_(l, ffi::LUA_REGISTRYINDEX, super::ffi_util::reg::STATE_ID);
        let p = ffi::lua_touserdata(l, -1) as usize;
        ffi::lua_pop(l, 1);
        p
    }
}

/// The finalizer errors recorded on this thread since the last call.
pub(crate) fn take_finalizer_errors() -> FinalizerErrors {
    FINALIZER_ERRORS.with(|f| std::mem::take(&mut *f.borrow_mut()))
}

/// Panics caught at the boundary on this thread so far.
pub(crate) fn panics_caught() -> u64 {
    PANICS.with(|p| p.get())
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

/// Runs the body of a C function called by Lua (`lua_CFunction`). A body never raises a Lua
/// error itself: it returns `Err`, and the error is raised here once the body's values are
/// dropped. A panic in the body is caught, counted and raised as a Lua error naming `name`.
///
/// The body runs in engine time (allocations do not fail on the script's memory limit), and
/// it must not run Lua code or call a Lua API function that can raise (metamethods, the
/// `luaL_check*` family): such an error would unwind through `catch_unwind`, which aborts on
/// foreign exceptions. What remains able to raise is a real out-of-memory of the process.
///
/// # Safety
///
/// `l` is the live state that called the C function, on this thread.
#[inline]
pub(crate) unsafe fn c_entry(l: *mut lua_State, name: &str, body: impl FnOnce(*mut lua_State) -> LuaResult) -> c_int {
    let r = {
        let _engine = TimeMark::engine();
        catch_unwind(AssertUnwindSafe(|| body(l)))
    };
    let msg = match r {
        // SAFETY: `l` is the running state; nothing of the body is alive any more.
        Ok(Ok(YIELD)) => return unsafe { ffi::lua_yield(l, 0) },
        Ok(Ok(n)) => return zero_extended(n),
        Ok(Err(LuaFail(msg))) => msg,
        // Raised in a finalizer: LuaJIT hands the error to the "errfin" handler, which counts
        // it (as it does every error leaving a finalizer).
        Err(p) if p.is::<CtxBusy>() => format!("{name}: {CTX_BUSY_MSG}"),
        Err(p) => {
            PANICS.with(|c| c.set(c.get() + 1));
            format!(
                "{name}: internal error ({}); the call was abandoned, the engine goes on",
                panic_text(&*p)
            )
        }
    };
    // SAFETY: nothing of the body is alive any more; `raise` owns the message.
    unsafe { raise(l, msg) }
}

/// What `context::with_ctx` unwinds with when the context is not there: a finalizer (`__gc`)
/// that calls the engine while the engine is busy with the state (an allocation of the
/// engine's, inside one of its C functions or its own calls of the Lua API, ran the
/// collector). Script code runs only in calls the worker lends its context to, and
/// finalizers otherwise. The boundary turns it into a Lua error ([`CTX_BUSY_MSG`]), counted
/// as the script's error; it is not a panic of the engine, so no panic message is printed
/// (`resume_unwind` skips the panic hook) and it is not counted as one.
pub(crate) struct CtxBusy;

/// The error of a call of the engine made by a finalizer (`__gc`) while the engine is busy
/// with the state (see [`CtxBusy`]), after the function's name.
pub(crate) const CTX_BUSY_MSG: &str = "not available to a finalizer (__gc) that the collector runs while the engine \
     is busy with the script's state (an allocation of the engine's started it); the call was not made";

/// The count a C function returns, with the upper half of the 64-bit return register zeroed.
/// The C ABI leaves those bits undefined, but LuaJIT's interpreter uses the whole register as
/// the result count when a C function returns to a continuation frame (a call stitched into a
/// JIT trace). A release build may load the count with a 64-bit move out of the body's
/// `Result`, leaving garbage there, and LuaJIT then wrote nils far outside the stack (a
/// segfault in `lj_cont_dispatch` on the first `log_event` after its loop was compiled).
#[inline(always)]
fn zero_extended(n: c_int) -> c_int {
    #[cfg(target_arch = "x86_64")]
    {
        let mut r = n;
        // SAFETY: a 32-bit register move of a register onto itself: it touches no memory, no
        // flags and no other register, and zeroes the upper 32 bits (x86-64 does so on every
        // 32-bit write).
        unsafe { std::arch::asm!("mov {0:e}, {0:e}", inout(reg) r, options(pure, nomem, nostack, preserves_flags)) };
        r
    }
    #[cfg(not(target_arch = "x86_64"))]
    n
}

/// Runs the body of a function called through LuaJIT's FFI from compiled code. These never
/// touch the Lua API (an FFI call may not raise a Lua error); a panic is caught and counted
/// and `on_panic` returned, which the Lua side turns into an error.
#[inline]
pub(crate) fn ffi_entry<T>(on_panic: T, body: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(v) => v,
        // A finalizer's call while the context is in use: declined, and the Lua side's C
        // fallback raises the error (`CTX_BUSY_MSG`).
        Err(p) if p.is::<CtxBusy>() => on_panic,
        Err(p) => {
            PANICS.with(|c| c.set(c.get() + 1));
            crate::eprintln_safe!(
                "dragonfly-mle: internal error in an FFI call ({}); the call was declined",
                panic_text(&*p)
            );
            on_panic
        }
    }
}

/// The one way the engine raises a Lua error: the message is copied into Lua and dropped
/// before `lua_error` unwinds, so no Rust value is skipped. Like `luaL_error`, it starts with
/// the position of the Lua code that made the call (`file:line: `), so that an error raised
/// by a built-in names the script line that called it.
///
/// # Safety
///
/// `l` is a live state of this thread running a C function called by Lua; the caller's frame
/// holds nothing with a destructor (the message is moved in here).
pub(crate) unsafe fn raise(l: *mut lua_State, msg: String) -> ! {
    // SAFETY: see the contract.
    unsafe {
        ffi::luaL_where(l, 1);
        ffi::lua_pushlstring_(l, msg.as_ptr().cast(), msg.len());
        drop(msg);
        ffi::lua_concat(l, 2);
        ffi::lua_error(l)
    }
}

/// Where in a script the running C function was called from: `file:line` of the nearest Lua
/// frame that is not the engine's prelude (its wrappers call the C functions for a script);
/// None when no script frame is on the stack.
///
/// # Safety
///
/// `l` is a live state of this thread running a C function called by Lua.
pub(crate) unsafe fn script_where(l: *mut lua_State) -> Option<String> {
    // SAFETY: see the contract; `lua_Debug` is plain C data that `lua_getinfo` fills.
    unsafe {
        for level in 1..32 {
            let mut ar: ffi::lua_Debug = std::mem::zeroed();
            if ffi::lua_getstack(l, level, &mut ar) == 0 {
                return None;
            }
            if ffi::lua_getinfo(l, c"Sl".as_ptr(), &mut ar) == 0 || ar.currentline <= 0 {
                continue;
            }
            let src = std::ffi::CStr::from_ptr(ar.short_src.as_ptr()).to_string_lossy();
            if src != "prelude" {
                return Some(format!("{src}:{}", ar.currentline));
            }
        }
        None
    }
}

/// How a string argument may be given.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Coerce {
    /// Only a Lua string.
    #[cfg(test)]
    Str,
    /// A string, or a number (converted as `tostring` writes it, as `luaL_checkstring`).
    StrOrNum,
}

/// Argument `idx` of the C function `fname` as bytes, or the error naming both.
///
/// # Safety
///
/// `l` is the running state and `idx` an argument index; the bytes live while the argument
/// stays on the stack.
pub(crate) unsafe fn arg_bytes<'a>(
    l: *mut lua_State,
    fname: &str,
    idx: c_int,
    how: Coerce,
) -> Result<&'a [u8], LuaFail> {
    // SAFETY: see the contract.
    unsafe {
        let ok = match ffi::lua_type(l, idx) {
            ffi::LUA_TSTRING => true,
            ffi::LUA_TNUMBER => how == Coerce::StrOrNum,
            _ => false,
        };
        match ok.then(|| to_bytes(l, idx)).flatten() {
            Some(b) => Ok(b),
            None => Err(LuaFail(format!(
                "{fname}: bad argument #{idx} (string expected, got {})",
                std::ffi::CStr::from_ptr(ffi::lua_typename(l, ffi::lua_type(l, idx))).to_string_lossy()
            ))),
        }
    }
}

/// Requires exactly `n` arguments.
///
/// # Safety
///
/// `l` is the running state.
pub(crate) unsafe fn arg_count(l: *mut lua_State, fname: &str, n: c_int) -> Result<(), LuaFail> {
    // SAFETY: see the contract.
    if unsafe { ffi::lua_gettop(l) } != n {
        return Err(LuaFail(format!(
            "{fname}: expecting exactly {n} argument{}",
            if n == 1 { "" } else { "s" }
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::ffi_util::script_time;
    use super::*;

    unsafe extern "C-unwind" fn panics(l: *mut lua_State) -> c_int {
        // SAFETY: a lua_CFunction: `l` is this thread's running state, its arguments at 1..=top;
        // the body runs behind `c_entry` (panics caught, errors raised after it returns).
        unsafe { c_entry(l, "panics", |_| panic!("a broken invariant")) }
    }

    unsafe extern "C-unwind" fn fails(l: *mut lua_State) -> c_int {
        // SAFETY: a lua_CFunction: `l` is this thread's running state, its arguments at 1..=top;
        // the body runs behind `c_entry` (panics caught, errors raised after it returns).
        unsafe {
            c_entry(l, "fails", |l| {
                let s = arg_bytes(l, "fails", 1, Coerce::Str)?;
                Err(LuaFail(format!("got {}", String::from_utf8_lossy(s))))
            })
        }
    }

    /// Runs `chunk` calling the C function as `f`; returns (status, message or result).
    fn call(f: ffi::lua_CFunction, chunk: &[u8]) -> (c_int, String) {
        let (l, _mem) = super::super::ffi_util::new_state(usize::MAX).expect("a state");
        // SAFETY: a fresh state used only here and closed at the end.
        unsafe {
            ffi::luaL_openlibs(l);
            ffi::lua_pushcclosure(l, f, 0);
            ffi::lua_setfield(l, ffi::LUA_GLOBALSINDEX, c"f".as_ptr());
            assert_eq!(
                ffi::luaL_loadbuffer(l, chunk.as_ptr().cast(), chunk.len(), c"t".as_ptr()),
                0
            );
            let status = ffi::lua_pcall(l, 0, 1, 0);
            let msg = super::super::ffi_util::to_bytes(l, -1)
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            ffi::lua_close(l);
            (status, msg)
        }
    }

    /// A panic in a C function's body is a Lua error naming the function; the caller's
    /// `pcall` gets it, the process goes on, and it is counted.
    #[test]
    fn a_panic_in_a_c_function_is_a_lua_error() {
        let before = panics_caught();
        let (status, msg) = call(panics, b"return f()");
        assert_ne!(status, 0);
        assert!(msg.contains("panics: internal error (a broken invariant)"), "{msg}");
        assert_eq!(panics_caught(), before + 1);
        // Inside the script's own pcall, the script goes on.
        let (status, msg) = call(panics, b"local ok, e = pcall(f) return tostring(ok) .. ' ' .. e");
        assert_eq!(status, 0);
        assert!(msg.starts_with("false panics: internal error"), "{msg}");
    }

    /// An error a body returns is raised with its message, after the body's values are gone.
    #[test]
    fn a_returned_error_is_raised() {
        let (status, msg) = call(fails, b"return f('x')");
        assert_ne!(status, 0);
        assert_eq!(msg, "got x");
        let (_, msg) = call(fails, b"return f(1)");
        assert_eq!(msg, "fails: bad argument #1 (string expected, got number)");
    }

    /// An FFI body's panic gives the caller's answer for it.
    #[test]
    fn a_panic_in_an_ffi_function_is_declined() {
        let before = panics_caught();
        assert_eq!(ffi_entry(7, || -> i32 { panic!("boom") }), 7);
        assert_eq!(ffi_entry(7, || 1), 1);
        assert_eq!(panics_caught(), before + 1);
    }

    /// Script time applies the memory limit; engine time inside it lifts it, and the marks
    /// restore what was there.
    #[test]
    fn time_marks_nest() {
        assert!(!script_time());
        {
            let _s = TimeMark::script();
            assert!(script_time());
            {
                let _e = TimeMark::engine();
                assert!(!script_time());
            }
            assert!(script_time());
        }
        assert!(!script_time());
    }
}
