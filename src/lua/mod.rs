//! Lua on the workers: one LuaJIT state per script per worker, the lazy event table, the
//! `dragonfly` and `cjson_safe` modules, and JSON encoding of Lua values.

mod api;
pub mod ffi_util;
pub mod json;
pub mod proxy;
pub mod worker;
