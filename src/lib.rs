//! dragonfly-mle: a scriptable streaming engine for network threat detection.
//!
//! Reader threads (one per input, [`source`]) frame Suricata EVE lines with memchr and route
//! each by a symmetric hash of its flow tuple ([`event`]) into bounded SPSC rings ([`shard`]).
//! Pinned workers validate each line, then run each event through the input's filter
//! and the analyzers it reaches, each script in its own LuaJIT state on that worker
//! ([`lua`]); events reach Lua as lazy tables over their original bytes. The writer
//! ([`sink`]) merges the workers' records back into input order and writes the outputs.
//! [`config`] turns `config.lua` into a validated configuration; [`counters`] keeps what every
//! stage counts and the latency histograms, [`metrics`] the stats line and the HTTP endpoint;
//! [`privilege`] drops root;
//! [`engine`] wires it all together; [`reconfig`] decides what a reload does.

//!
//! The public API is narrow: [`engine`] (run, check, their options and summary),
//! [`testkit`] (`dragonfly-mle test`) and [`find_files`] (the Parquet index query). [`bench`] re-exports the internals that the
//! benchmarks drive; it is not a stable API.

#![warn(unreachable_pub)]

/// `eprintln!` that never panics: a stderr that cannot be written (redirected to a full disk,
/// a closed pipe) loses the line, not the process (`eprintln!` panics then).
#[macro_export]
macro_rules! eprintln_safe {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

/// `println!` that never panics, as [`eprintln_safe!`] for stdout (the summary line).
#[macro_export]
macro_rules! println_safe {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

#[doc(hidden)]
pub mod bench;
pub mod engine;
pub mod testkit;

mod config;
mod counters;
mod diag;
mod event;
mod lua;
mod metrics;
mod ml;
mod primitives;
mod privilege;
mod reconfig;
mod shard;
mod sink;
mod source;

pub use sink::parquet::find_files;
#[cfg(test)]
pub(crate) mod test_rng;
