//! dragonfly-mle: a scriptable streaming engine for network threat detection.
//!
//! Reader threads (one per input, [`source`]) frame Suricata EVE lines with memchr, validate
//! them with simd-json and route each by a symmetric hash of its flow tuple ([`event`]) into
//! bounded SPSC rings ([`shard`]). Pinned workers run each event through the input's filter
//! and the analyzers it reaches, each script in its own LuaJIT state on that worker
//! ([`lua`]); events reach Lua as lazy tables over their original bytes. The writer
//! ([`sink`]) merges the workers' records back into input order and writes the outputs.
//! [`config`] turns `config.lua` into a validated configuration; [`metrics`] keeps counters
//! and the stats line, latency histograms and the HTTP endpoint; [`privilege`] drops root;
//! [`engine`] wires it all together; [`reconfig`] decides what a reload does.

pub mod bench;
pub mod config;
pub mod counters;
pub mod diag;
pub mod engine;
pub mod event;
pub mod lua;
pub mod metrics;
pub mod ml;
pub mod primitives;
pub mod privilege;
pub mod reconfig;
pub mod shard;
pub mod sink;
pub mod source;
#[cfg(test)]
pub(crate) mod test_rng;
