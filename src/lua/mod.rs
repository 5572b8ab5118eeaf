//! Lua on the workers: one LuaJIT state per script per worker, the lazy event table, the
//! `dragonfly` and `cjson_safe` modules, and JSON encoding of Lua values.
//!
//! # Safety
//!
//! Every `unsafe fn` in these modules has one contract: `l` (and any other state passed) is a
//! live Lua state created on the calling thread, and the stack indices given are valid for
//! it. The lint asking for a `# Safety` section on each is silenced for that reason.
#![allow(clippy::missing_safety_doc)]

mod api;
pub mod builtins;
pub mod ffi_util;
pub mod hiredis;
pub mod json;
pub mod managed;
pub mod ml;
pub mod proxy;
pub mod worker;
