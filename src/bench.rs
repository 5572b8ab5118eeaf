//! The benchmarks' way in (`benches/`, the binary's hidden `bench-*` tools): the few internal
//! pieces they drive directly, re-exported, so that the rest of the library can stay
//! crate-private. Not a stable API.

use std::time::Instant;

pub use crate::config::types::RedisTarget;
pub use crate::config::types::{OutputId, ParquetOptions};
pub use crate::event::flow_key::{RouteParser, tuple_hash};
pub use crate::event::{EventMeta, KeyBloom};
pub use crate::lua::{Role, ScriptSpec, WorkerCtx};
pub use crate::ml::{AttrKey, Mode as MlMode, Model, forest_layout, forest_run_dense, get as ml_get, set_native};
pub use crate::shard::LOG_OUTPUT;
pub use crate::sink::parquet::ParquetSink;
pub use crate::source::framer::{Framer, LineSink};

/// The JSON scanner's member walk (`event::scan`).
pub mod scan {
    pub use crate::event::scan::{first_member, next_member, skip_ws};
}

/// The one-core parse-only rate of a file: framing (memchr) and validation + routing
/// (simd-json), no Lua, no output. Returns (events, invalid, seconds).
pub fn parse_only(path: &std::path::Path) -> std::io::Result<(u64, u64, f64)> {
    struct Count {
        parser: RouteParser,
        ok: u64,
        bad: u64,
        hash: u64,
    }
    impl LineSink for Count {
        fn line(&mut self, line: &[u8], _: u64, _: u64) {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                return;
            }
            match self.parser.parse(line) {
                Ok(r) => {
                    self.ok += 1;
                    self.hash ^= r.hash.unwrap_or(0);
                }
                Err(_) => self.bad += 1,
            }
        }
        fn too_long(&mut self, _: u64, _: u64, _: usize, _: usize) {
            self.bad += 1;
        }
    }
    let mut f = std::fs::File::open(path)?;
    let mut framer = Framer::new(crate::config::DEFAULT_MAX_LINE);
    let mut sink = Count {
        parser: RouteParser::new(),
        ok: 0,
        bad: 0,
        hash: 0,
    };
    let t = Instant::now();
    while framer.fill(&mut f, &mut sink)? > 0 {}
    framer.finish(&mut sink);
    std::hint::black_box(sink.hash);
    Ok((sink.ok, sink.bad, t.elapsed().as_secs_f64()))
}
