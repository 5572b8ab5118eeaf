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

/// The reader's routing walk (`event::flow_key::RouteScanner`).
#[derive(Default)]
pub struct ReaderRoute(crate::event::flow_key::RouteScanner);

impl ReaderRoute {
    /// The routing hash (if any) and the flow_id of `line`.
    pub fn route(&mut self, line: &[u8]) -> (Option<u64>, u64) {
        let r = self.0.route(line);
        (r.hash, r.flow_id)
    }
}

/// The workers' full validation of a line (`event::validate::Validator`).
#[derive(Default)]
pub struct LineValidator(crate::event::validate::Validator);

impl LineValidator {
    /// Whether `line` is a valid event, and its top-level key bloom.
    pub fn check(&mut self, line: &[u8]) -> Option<KeyBloom> {
        self.0.check_object(line).map(|t| t.keys)
    }
}

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

/// The reader stage alone, on one core: framing and routing by the engine's own reader code
/// (`source::Router`: the top-level walk for the route, lines copied into per-worker batches
/// of `shards` rings); this thread also plays the workers, handing each batch straight back.
/// Returns (events, seconds).
pub fn reader_only(path: &std::path::Path, shards: usize) -> std::io::Result<(u64, f64)> {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    use crate::event::batch::InBatch;
    use crate::source::{ReaderIo, Router};

    struct Drain<'a> {
        router: Router,
        from: &'a mut [rtrb::Consumer<InBatch>],
        back: &'a mut [rtrb::Producer<InBatch>],
        events: u64,
    }
    impl Drain<'_> {
        fn drain(&mut self) {
            for (rx, tx) in self.from.iter_mut().zip(self.back.iter_mut()) {
                while let Ok(b) = rx.pop() {
                    self.events += b.events.len() as u64;
                    let _ = tx.push(b);
                }
            }
        }
    }
    impl LineSink for Drain<'_> {
        fn line(&mut self, line: &[u8], line_no: u64, offset: u64) {
            self.router.line(line, line_no, offset);
            // Every 128 lines at most one batch per shard is full: the rings never fill.
            if line_no.is_multiple_of(128) {
                self.drain();
            }
        }
        fn too_long(&mut self, line_no: u64, offset: u64, len: usize, max: usize) {
            self.router.too_long(line_no, offset, len, max);
        }
    }
    let shards = shards.max(1);
    let (mut to_workers, mut from) = (Vec::new(), Vec::new());
    let (mut back, mut returned) = (Vec::new(), Vec::new());
    for _ in 0..shards {
        let (tx, rx) = rtrb::RingBuffer::<InBatch>::new(64);
        let (btx, brx) = rtrb::RingBuffer::<InBatch>::new(64);
        to_workers.push(tx);
        from.push(rx);
        back.push(btx);
        returned.push(brx);
    }
    let stats = Arc::new(crate::counters::Stats::new(
        vec!["in".into()],
        Vec::new(),
        Vec::new(),
        shards,
    ));
    let (diag, _diag_rx) = std::sync::mpsc::channel();
    let router = Router::new(
        0,
        "in".into(),
        ReaderIo {
            to_workers,
            returned,
            me: crate::primitives::backoff::Parker::new(),
            workers: Vec::new(),
        },
        stats,
        diag,
        Arc::new(AtomicBool::new(false)),
    );
    let mut f = std::fs::File::open(path)?;
    let mut framer = Framer::new(crate::config::DEFAULT_MAX_LINE);
    let mut sink = Drain {
        router,
        from: &mut from,
        back: &mut back,
        events: 0,
    };
    let t = Instant::now();
    while framer.fill(&mut f, &mut sink)? > 0 {}
    framer.finish(&mut sink);
    sink.router.flush();
    sink.drain();
    Ok((sink.events, t.elapsed().as_secs_f64()))
}

/// Full validation alone, as each worker does it before the scripts (`event::validate`), on
/// every line of `path` held in memory. Returns (lines, valid, seconds).
pub fn validate_only(path: &std::path::Path) -> std::io::Result<(u64, u64, f64)> {
    let data = std::fs::read(path)?;
    let lines: Vec<&[u8]> = data.split(|&c| c == b'\n').filter(|l| !l.is_empty()).collect();
    let mut v = crate::event::validate::Validator::default();
    let t = Instant::now();
    let valid = lines.iter().filter(|l| v.check_object(l).is_some()).count();
    Ok((lines.len() as u64, valid as u64, t.elapsed().as_secs_f64()))
}

/// The script of a benchmark worker: a filter (tag "in") or analyzer ("a") at `path`, whose
/// default analyzer is "a" and default output "out".
pub fn script_spec(role: Role, tag: &str, path: &std::path::Path) -> ScriptSpec {
    ScriptSpec {
        role,
        tag: tag.into(),
        path: path.to_path_buf(),
        default_analyzer: "a".into(),
        default_output: "out".into(),
        pipeline: 1,
        on_error: Default::default(),
    }
}

/// The valid lines of a file (framed, validated), with what the router learns of each.
fn valid_lines(path: &std::path::Path) -> std::io::Result<Vec<(Vec<u8>, EventMeta)>> {
    struct Keep {
        parser: RouteParser,
        out: Vec<(Vec<u8>, EventMeta)>,
    }
    impl LineSink for Keep {
        fn line(&mut self, line: &[u8], line_no: u64, _: u64) {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if let Ok(r) = self.parser.parse(line) {
                let seq = self.out.len() as u64;
                let meta = EventMeta {
                    seq,
                    line_no,
                    flow_id: r.flow_id,
                    start: 0,
                    end: line.len() as u32,
                    keys: r.keys,
                    dup_keys: r.dup_keys,
                    ..EventMeta::default()
                };
                self.out.push((line.to_vec(), meta));
            }
        }
        fn too_long(&mut self, _: u64, _: u64, _: usize, _: usize) {}
    }
    let mut f = std::fs::File::open(path)?;
    let mut framer = Framer::new(crate::config::DEFAULT_MAX_LINE);
    let mut keep = Keep {
        parser: RouteParser::new(),
        out: Vec::new(),
    };
    while framer.fill(&mut f, &mut keep)? > 0 {}
    framer.finish(&mut keep);
    Ok(keep.out)
}

/// The worker stage alone, on one core: every valid line of `path` (held in memory, in
/// batches of 128 as readers hand them over) validated and run through a pass-through filter
/// and analyzer in LuaJIT, records encoded, as the worker does. Returns (events, seconds).
pub fn worker_only(path: &std::path::Path) -> std::io::Result<(u64, f64)> {
    let lines = valid_lines(path)?;
    let dir = std::env::temp_dir().join(format!("dfm-bench-worker-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (fpath, apath) = (dir.join("filter.lua"), dir.join("analyzer.lua"));
    std::fs::write(
        &fpath,
        "function setup() end\nfunction loop(msg) dragonfly.analyze_event(default_analyzer, msg) end\n",
    )?;
    std::fs::write(
        &apath,
        "function setup() end\nfunction loop(msg) dragonfly.output_event(default_output, msg) end\n",
    )?;
    let spec = script_spec;
    let mut c = WorkerCtx::new(vec!["in".into()], vec!["a".into()], vec!["out".into()], true);
    c.open_all(
        &[spec(Role::Filter, "in", &fpath)],
        &[spec(Role::Analyzer, "a", &apath)],
        true,
    )
    .map_err(std::io::Error::other)?;
    let mut batches: Vec<(Vec<u8>, Vec<EventMeta>)> = Vec::new();
    for chunk in lines.chunks(crate::event::batch::BATCH_EVENTS) {
        let (mut data, mut metas) = (Vec::new(), Vec::new());
        for (line, meta) in chunk {
            let start = data.len() as u32;
            data.extend_from_slice(line);
            metas.push(EventMeta {
                start,
                end: data.len() as u32,
                keys: KeyBloom::default(),
                dup_keys: false,
                ..*meta
            });
        }
        batches.push((data, metas));
    }
    let t = Instant::now();
    for (data, metas) in &mut batches {
        std::hint::black_box(c.process_batch(0, data, metas, 1));
        for o in c.outs.iter_mut() {
            o.clear();
        }
    }
    let secs = t.elapsed().as_secs_f64();
    c.close();
    let _ = std::fs::remove_dir_all(&dir);
    Ok((lines.len() as u64, secs))
}

/// The writer stage alone: every valid line of `path` (held in memory) handed to the writer
/// as one worker's records for an ordered `file://` output (batches of 128 events with their
/// end-of-event marks, as workers send them), written to a file under the temporary directory.
/// A feeder thread fills the batches; the time is the writer's, from the first batch to the
/// last record written and flushed. Returns (events, seconds).
pub fn writer_only(path: &std::path::Path) -> std::io::Result<(u64, f64)> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64};

    use crate::shard::{END_OF_EVENT, OUT_RING_BATCHES, OutBatch, OutRec};
    use crate::sink::{FileSink, Sink};

    let lines = valid_lines(path)?;
    let n = lines.len() as u64;
    let dir = std::env::temp_dir().join(format!("dfm-bench-writer-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let tags = vec!["log".to_string(), "stats".to_string(), "out".to_string()];
    let stats = Arc::new(crate::counters::Stats::new(vec!["in".into()], Vec::new(), tags, 1));
    let sinks: Vec<Sink> = vec![
        Box::new(FileSink::open(dir.join("log.json"), true)?),
        Box::new(FileSink::open(dir.join("stats.json"), true)?),
        Box::new(FileSink::open(dir.join("out.json"), true)?),
    ];
    let stop = Arc::new(AtomicBool::new(false));
    let gate = crate::sink::Gate::new(
        Arc::clone(&stop),
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
        std::time::Duration::from_secs(10),
    );
    let (otx, orx) = rtrb::RingBuffer::<OutBatch>::new(OUT_RING_BATCHES);
    let (mut obtx, mut obrx) = rtrb::RingBuffer::<OutBatch>::new(OUT_RING_BATCHES + 8);
    for _ in 0..OUT_RING_BATCHES + 4 {
        let _ = obtx.push(OutBatch::default());
    }
    let (_diag_tx, diag_rx) = std::sync::mpsc::channel();
    let wake_writer = crate::primitives::backoff::Parker::new();
    let writer = crate::sink::Writer::new(crate::sink::WriterParts {
        out: crate::sink::Outputs::new(sinks, vec![crate::sink::Policy::default(); 3], Arc::clone(&stats), gate),
        ordered: vec![true, false, true],
        links: vec![crate::sink::WorkerLink {
            from: orx,
            back: obtx,
            worker: crate::primitives::backoff::Parker::new(),
            writer: Arc::clone(&wake_writer),
        }],
        inputs: 1,
        stats: Arc::clone(&stats),
        diag: diag_rx,
        diag_closed: Arc::default(),
        rotate: Arc::new(AtomicBool::new(false)),
        stats_interval: std::time::Duration::from_secs(3600),
        marks: Arc::new(vec![AtomicU64::new(0)]),
        started: Arc::new(AtomicBool::new(true)),
    });
    let t = Instant::now();
    let writer = std::thread::spawn(move || writer.run());
    let mut otx = otx;
    let mut batch = OutBatch::default();
    for chunk in lines.chunks(128) {
        for (line, meta) in chunk {
            let start = batch.data.len() as u32;
            batch.data.extend_from_slice(line);
            let end = batch.data.len() as u32;
            batch.recs.push(OutRec {
                seq: meta.seq,
                output: OutputId::user(0),
                start,
                end,
                script: 1,
            });
            batch.recs.push(OutRec {
                seq: meta.seq,
                output: END_OF_EVENT,
                start: end,
                end,
                script: 0,
            });
        }
        let mut b = batch;
        loop {
            match otx.push(b) {
                Ok(()) => {
                    wake_writer.wake();
                    break;
                }
                Err(rtrb::PushError::Full(back)) => {
                    b = back;
                    std::thread::yield_now();
                }
            }
        }
        batch = loop {
            match obrx.pop() {
                Ok(b) => break b,
                Err(_) => std::thread::yield_now(),
            }
        };
        batch.clear();
    }
    drop(otx);
    let _ = writer.join();
    let secs = t.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&dir);
    Ok((n, secs))
}
