//! Lua on the workers: one LuaJIT state per script per worker, the lazy event table, the
//! `dragonfly`, `hiredis` and `cjson_safe` modules, and JSON encoding of Lua values.
//!
//! # The script boundary
//!
//! Scripts are written by many hands; nothing a script does may crash the engine, read memory
//! it should not, or hand one event's data to another. The contract:
//!
//! - **What scripts cannot reach.** The prelude (`prelude.lua`) withdraws the FFI library,
//!   the raw debug library (only `debug.traceback` and `debug.getinfo` stay), `jit.util` and
//!   `jit.profile`, bytecode loading (`load`, `loadstring`, `loadfile`, `dofile` and
//!   `require`'s Lua searcher take text only) and `os.exit`. Everything else of LuaJIT's
//!   standard library stays, as in the original. C modules loaded by `require` are native
//!   code the operator installed, outside this contract.
//! - **Checked line blocks.** Event tables keep their hidden fields under negative keys, which
//!   a script can overwrite. Every entry point that takes them (the Lua `__index` and the FFI
//!   lookup `proxy::df_find`, the fast paths `fast_path::df_emit`/`df_queue`, the C functions
//!   through `proxy::parts`) checks them: a line block is a userdata with the line-block
//!   metatable (only the engine sets it) whose size matches its header, the table's seal is
//!   the block's, a span is an object of the line. A table that fails is a script error for
//!   that event (`proxy::Tampered`), never a read of other memory or of another event.
//! - **One way into the context.** The worker owns its `WorkerCtx` and passes `&mut` to it
//!   explicitly; while Lua runs it lends it (`WorkerCtx::lend`, a guard that restores the
//!   thread-local on drop), and C and FFI functions reach it only through
//!   `context::with_ctx`, whose closure never runs Lua code. No `&'static mut` exists.
//! - **Panics and unwinding.** Every `extern "C-unwind"` function the scripts can call runs
//!   its body through `boundary::c_entry`, every FFI function through `boundary::ffi_entry`:
//!   a panic is caught there, counted, and becomes a Lua error (C functions) or a declined
//!   call or error code (FFI functions, whose Lua side raises). Bodies return their errors;
//!   `c_entry` raises them once the body's values are dropped (`boundary::raise`, the one
//!   place that calls `lua_error`), so no destructor is skipped. Bodies call no metamethod
//!   and no raising API function: a Lua error must never cross `catch_unwind`, which aborts
//!   on foreign exceptions. Yielding (a pipelined Redis command) is also done by `c_entry`,
//!   after the body.
//! - **Memory.** Each state's allocator counts its bytes (`ffi_util::lua_alloc`); during
//!   script time (`WorkerCtx::run_script`) a growth past the state's limit (`script_memory_mb`
//!   in config.lua, 1 GiB by default) fails, which LuaJIT raises in the script as "not enough
//!   memory": a script error for that event, after which the state's garbage is collected.
//!   Engine time (`boundary::TimeMark::engine`, entered by `c_entry`) is exempt, so that the
//!   engine's own allocations never raise where no protected call catches them; only a
//!   process out of memory still ends it (LuaJIT's panic handler).
//! - **Pipelining.** Only a command issued on the coroutine the engine resumed for a window
//!   event, where it can yield, is queued; a command from any other coroutine runs at once.
//!   Each queued command has a ticket, and a reply resumes only the coroutine waiting for
//!   that ticket. Calls after an event's first pipelined call keep window order (`window`).

// Every `unsafe fn` in these modules has one contract unless its doc says more: `l` (and any
// other state passed) is a live Lua state created on the calling thread, and the stack
// indices given are valid for it.
#![allow(clippy::missing_safety_doc)]

mod access;
mod api;
pub(crate) mod boundary;
pub(crate) mod builtins;
mod cjson;
pub(crate) mod context;
mod copy;
mod fast_path;
pub(crate) mod ffi_util;
pub(crate) mod hiredis;
pub(crate) mod json;
mod lenient_json;
mod lines;
pub(crate) mod managed;
mod marshal;
pub(crate) mod member_cache;
mod memory;
pub(crate) mod ml;
pub(crate) mod pins;
pub(crate) mod proxy;
mod records;
pub(crate) mod redis_cluster;
pub(crate) mod redis_conn;
pub(crate) mod script;
pub(crate) mod state;
pub(crate) mod window;
pub(crate) mod worker;

pub use context::WorkerCtx;
pub(crate) use context::WorkerLatency;
pub(crate) use script::{ScriptCause, ScriptError};
pub use state::{Role, ScriptSpec};
