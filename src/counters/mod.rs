//! Counters shared between threads: what every stage counts (inputs, workers, outputs) and
//! the latency histograms ([`latency`]). Hot-path counters are plain integers owned by their
//! thread and published with relaxed atomic stores once per batch. They sit low in the house
//! (above `primitives` and `diag`): every stage writes them; `metrics` renders them.

pub(crate) mod latency;
pub(crate) mod tap;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Per input: every event with a smaller sequence number has been written and flushed. The
/// writer raises them; readers save checkpoints and commit offsets behind them.
pub(crate) type Watermarks = std::sync::Arc<Vec<AtomicU64>>;

/// Counters of one input, written by its reader.
#[derive(Default, Debug)]
pub struct InputStats {
    /// Valid events (counted by the workers, which validate each line).
    pub events: AtomicU64,
    /// Lines that were not a JSON object.
    pub invalid: AtomicU64,
    /// Lines longer than the maximum, skipped.
    pub too_long: AtomicU64,
    pub bytes: AtomicU64,
    /// Times the reader found a worker's ring full and had to wait (back-pressure).
    pub ring_full: AtomicU64,
    /// Whether the input's file is missing now (a `tail://` waiting for it to appear).
    pub missing: std::sync::atomic::AtomicBool,
    /// Whether its checkpoint cannot be saved now (a crash would read everything since the
    /// last saved one again).
    pub checkpoint_failing: std::sync::atomic::AtomicBool,
    /// A paced replay (`file://...?pace=N`): how far it is behind its schedule (µs; 0 on time).
    pub paced: std::sync::atomic::AtomicBool,
    pub pace_lag_us: AtomicU64,
    /// The largest lag seen so far (µs).
    pub pace_lag_max_us: AtomicU64,
}

/// Counters of one worker, published after each batch.
#[derive(Debug)]
pub struct WorkerStats {
    pub events: AtomicU64,
    pub filter_calls: Vec<AtomicU64>,
    pub filter_errors: Vec<AtomicU64>,
    pub analyzer_calls: Vec<AtomicU64>,
    pub analyzer_errors: Vec<AtomicU64>,
    /// Records written to user outputs by each filter and each analyzer.
    pub filter_out: Vec<AtomicU64>,
    pub analyzer_out: Vec<AtomicU64>,
    pub unknown_tags: AtomicU64,
    pub encode_errors: AtomicU64,
    /// Analyzer calls dropped because their input event had already made `MAX_HOPS`.
    pub hop_drops: AtomicU64,
    pub redis_calls: AtomicU64,
    pub redis_failures: AtomicU64,
    pub redis_error_replies: AtomicU64,
    /// Native Redis-ML calls (command path and direct API) and their error replies.
    pub ml_calls: AtomicU64,
    pub ml_errors: AtomicU64,
    /// Batches waiting in this worker's input rings (all inputs), at its last publication.
    pub ring_batches: AtomicU64,
    /// Pending timers (`dragonfly.timer_event`) and timers fired.
    pub timers_pending: AtomicU64,
    pub timers_fired: AtomicU64,
    /// Input batches kept because event tables read their lines (`lua::pins`): their bytes,
    /// the times they passed their bound (the states' collectors hurried), and the lines of
    /// kept events copied out of them.
    pub pinned_bytes: AtomicU64,
    pub pin_collections: AtomicU64,
    pub pin_moved: AtomicU64,
    /// Script reloads (SIGHUP) that took effect, and scripts that failed to reload.
    pub reloads: AtomicU64,
    pub reload_errors: AtomicU64,
    /// Panics caught at the script boundary (an engine bug reached from a script; the call
    /// became a script error).
    pub boundary_panics: AtomicU64,
    /// Redis connections of this worker that are down now.
    pub redis_down: AtomicU64,
    /// When (`Stats::now_ms`) this worker last made progress (its event count moved, or it
    /// had nothing waiting).
    pub last_progress_ms: AtomicU64,
    /// Since when (`Stats::now_ms`) the worker has been running the batch (or timers) it is
    /// on, or since a script's last blocking call ([`still_busy`]) started; 0 between
    /// batches. A script's `loop()` that never returns keeps it set.
    pub busy_since_ms: AtomicU64,
    /// Since when the worker has been running the batch (or timers) it is on, whatever its
    /// scripts call; 0 between batches. A `loop()` that never returns while it makes blocking
    /// calls (Redis commands in an endless loop) keeps it set.
    pub batch_since_ms: AtomicU64,
    /// The script the worker called last ([`script_code`]; `u32::MAX`: none yet): the one a
    /// stuck batch is in. Shared with the worker's context, which sets it at each call.
    pub script_now: std::sync::Arc<std::sync::atomic::AtomicU32>,
}

/// How [`WorkerStats::script_now`] names a script: the filter of input `i`, or analyzer `i`
/// with the top bit set.
pub(crate) fn script_code(analyzer: bool, i: u32) -> u32 {
    if analyzer { i | 1 << 31 } else { i & !(1 << 31) }
}

impl WorkerStats {
    /// The worker starts a batch (or its timers) at `now` (`Stats::now_ms`).
    pub(crate) fn begin_batch(&self, now: u64) {
        self.busy_since_ms.store(now, Relaxed);
        self.batch_since_ms.store(now, Relaxed);
    }

    /// The worker is done with its batch.
    pub(crate) fn end_batch(&self) {
        self.busy_since_ms.store(0, Relaxed);
        self.batch_since_ms.store(0, Relaxed);
    }
}

fn zeros(n: usize) -> Vec<AtomicU64> {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

impl WorkerStats {
    pub fn new(inputs: usize, analyzers: usize) -> Self {
        WorkerStats {
            events: AtomicU64::new(0),
            filter_calls: zeros(inputs),
            filter_errors: zeros(inputs),
            analyzer_calls: zeros(analyzers),
            analyzer_errors: zeros(analyzers),
            filter_out: zeros(inputs),
            analyzer_out: zeros(analyzers),
            unknown_tags: AtomicU64::new(0),
            hop_drops: AtomicU64::new(0),
            encode_errors: AtomicU64::new(0),
            redis_calls: AtomicU64::new(0),
            redis_failures: AtomicU64::new(0),
            redis_error_replies: AtomicU64::new(0),
            ml_calls: AtomicU64::new(0),
            ml_errors: AtomicU64::new(0),
            ring_batches: AtomicU64::new(0),
            timers_pending: AtomicU64::new(0),
            timers_fired: AtomicU64::new(0),
            pinned_bytes: AtomicU64::new(0),
            pin_collections: AtomicU64::new(0),
            pin_moved: AtomicU64::new(0),
            reloads: AtomicU64::new(0),
            reload_errors: AtomicU64::new(0),
            boundary_panics: AtomicU64::new(0),
            redis_down: AtomicU64::new(0),
            last_progress_ms: AtomicU64::new(0),
            busy_since_ms: AtomicU64::new(0),
            script_now: std::sync::Arc::new(std::sync::atomic::AtomicU32::new(u32::MAX)),
            batch_since_ms: AtomicU64::new(0),
        }
    }
}

/// Counters of one output, written by the writer.
#[derive(Default, Debug)]
pub struct OutputStats {
    /// Records delivered (taken by the file, socket or broker).
    pub written: AtomicU64,
    /// Records lost: rejected, or given up at exit after the grace.
    pub errors: AtomicU64,
    /// Records dropped because the output was full (`drop_when_full = true`).
    pub dropped: AtomicU64,
    /// Records held now, waiting to be delivered (file and socket outputs).
    pub held: AtomicU64,
    /// When (`Stats::now_ms`) the output last failed, and last flushed without failing (0:
    /// never): it is failing while the first is the later.
    pub last_error_ms: AtomicU64,
    pub last_ok_ms: AtomicU64,
}

/// A counter every worker keeps, summed over the workers: where it goes in the stats line
/// (`section.key`) and in `/metrics` (`metric`, empty when it is rendered otherwise).
pub struct WorkerTotal {
    pub section: &'static str,
    pub key: &'static str,
    pub metric: &'static str,
    pub kind: &'static str,
    pub help: &'static str,
    pub get: fn(&WorkerStats) -> &AtomicU64,
}

/// The summed worker counters, in stats-line order (one section's keys together).
pub(crate) const WORKER_TOTALS: &[WorkerTotal] = &[
    WorkerTotal {
        section: "drops",
        key: "unknown_tag",
        metric: "",
        kind: "counter",
        help: "",
        get: |w| &w.unknown_tags,
    },
    WorkerTotal {
        section: "drops",
        key: "encode_error",
        metric: "",
        kind: "counter",
        help: "",
        get: |w| &w.encode_errors,
    },
    WorkerTotal {
        section: "drops",
        key: "hop_limit",
        metric: "",
        kind: "counter",
        help: "",
        get: |w| &w.hop_drops,
    },
    WorkerTotal {
        section: "redis",
        key: "calls",
        metric: "dragonfly_redis_calls_total",
        kind: "counter",
        help: "Redis commands sent by hiredis.",
        get: |w| &w.redis_calls,
    },
    WorkerTotal {
        section: "redis",
        key: "failures",
        metric: "dragonfly_redis_failures_total",
        kind: "counter",
        help: "Redis calls that failed (connection, timeout, protocol).",
        get: |w| &w.redis_failures,
    },
    WorkerTotal {
        section: "redis",
        key: "error_replies",
        metric: "dragonfly_redis_error_replies_total",
        kind: "counter",
        help: "Redis error replies returned to scripts.",
        get: |w| &w.redis_error_replies,
    },
    WorkerTotal {
        section: "ml",
        key: "calls",
        metric: "dragonfly_ml_calls_total",
        kind: "counter",
        help: "Native Redis-ML calls.",
        get: |w| &w.ml_calls,
    },
    WorkerTotal {
        section: "ml",
        key: "errors",
        metric: "dragonfly_ml_errors_total",
        kind: "counter",
        help: "Native Redis-ML error replies.",
        get: |w| &w.ml_errors,
    },
    WorkerTotal {
        section: "timers",
        key: "pending",
        metric: "dragonfly_timers_pending",
        kind: "gauge",
        help: "Timers armed and not yet fired.",
        get: |w| &w.timers_pending,
    },
    WorkerTotal {
        section: "timers",
        key: "fired",
        metric: "dragonfly_timers_fired_total",
        kind: "counter",
        help: "Timers delivered to loop().",
        get: |w| &w.timers_fired,
    },
    WorkerTotal {
        section: "pins",
        key: "bytes",
        metric: "dragonfly_pinned_batch_bytes",
        kind: "gauge",
        help: "Input batches kept while event tables read their lines in place.",
        get: |w| &w.pinned_bytes,
    },
    WorkerTotal {
        section: "pins",
        key: "collections",
        metric: "dragonfly_pin_collections_total",
        kind: "counter",
        help: "Times a worker hurried its script states' collectors because its kept input batches passed their bound.",
        get: |w| &w.pin_collections,
    },
    WorkerTotal {
        section: "pins",
        key: "moved",
        metric: "dragonfly_pin_lines_moved_total",
        kind: "counter",
        help: "Lines of events scripts keep, copied out of their input batches.",
        get: |w| &w.pin_moved,
    },
    WorkerTotal {
        section: "reload",
        key: "done",
        metric: "dragonfly_reloads_total",
        kind: "counter",
        help: "Script reloads that took effect (per worker).",
        get: |w| &w.reloads,
    },
    WorkerTotal {
        section: "reload",
        key: "errors",
        metric: "dragonfly_reload_errors_total",
        kind: "counter",
        help: "Scripts that failed to reload and kept their old version (per worker), and new configurations a reload refused or could not start.",
        get: |w| &w.reload_errors,
    },
    WorkerTotal {
        section: "scripts",
        key: "internal_errors",
        metric: "dragonfly_script_boundary_panics_total",
        kind: "counter",
        help: "Engine panics caught at the script boundary (each became a script error or a declined call).",
        get: |w| &w.boundary_panics,
    },
];

/// How long a worker may have events waiting without processing one before `/health` calls
/// its rings stalled.
pub(crate) const STALL_MS: u64 = 10_000;

/// How long a worker may be on one batch while its scripts make blocking calls (each bounded
/// by its timeout, so a slow Redis or HTTP server makes a batch slow, not endless) before it
/// counts as stuck all the same: a `loop()` that calls Redis in an endless loop.
pub(crate) const STALL_BLOCKING_MS: u64 = 60_000;

/// Every counter of the engine.
#[derive(Debug)]
pub struct Stats {
    pub input_tags: Vec<String>,
    pub analyzer_tags: Vec<String>,
    /// `log`, `stats`, then the user outputs.
    pub output_tags: Vec<String>,
    pub inputs: Vec<InputStats>,
    pub workers: Vec<WorkerStats>,
    pub outputs: Vec<OutputStats>,
    /// Whether latency histograms are recorded (`latency_histograms` in config.lua).
    pub histograms: bool,
    /// Time in `loop()`: one per input's filter, then one per analyzer.
    pub script_latency: Vec<latency::Shared>,
    /// End to end (read -> handed to the output), per output (`log`, `stats`, then yours).
    pub output_latency: Vec<latency::Shared>,
    /// End to end per script that wrote the record to a user output (filters, then analyzers).
    pub script_e2e: Vec<latency::Shared>,
    /// Redis round trips of `hiredis` (a pipelined batch counts once per command).
    pub redis_latency: latency::Shared,
    /// Capacity of each input ring, in batches.
    pub ring_capacity: u64,
    pub started: std::time::Instant,
    /// When this pipeline started (a rebuild starts a new one; `started` is the run's).
    pub pipeline_started: std::time::Instant,
}

pub(crate) fn sum(v: impl Iterator<Item = u64>) -> u64 {
    v.sum()
}

impl Stats {
    /// Milliseconds since the engine started, plus 1 (so that 0 can mean "never").
    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64 + 1
    }

    /// What `/health` reports as wrong now: a failing output, a missing input, a Redis
    /// connection down, a worker whose rings are stalled. Empty when all is well.
    pub fn health_problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut outputs_failing = false;
        for (tag, o) in self.output_tags.iter().zip(&self.outputs) {
            if o.last_error_ms.load(Relaxed) > o.last_ok_ms.load(Relaxed) {
                outputs_failing = true;
                out.push(format!(
                    "output {tag}: failing ({} records held, {} lost so far)",
                    o.held.load(Relaxed),
                    o.errors.load(Relaxed)
                ));
            }
        }
        for (tag, i) in self.input_tags.iter().zip(&self.inputs) {
            if i.checkpoint_failing.load(Relaxed) {
                out.push(format!(
                    "input {tag}: its checkpoint cannot be saved (after a crash, everything since the last one saved is read again)"
                ));
            }
            if i.missing.load(Relaxed) {
                out.push(format!(
                    "input {tag}: missing, unreadable or its server unreachable (waiting for it)"
                ));
            }
        }
        let down: u64 = self.workers.iter().map(|w| w.redis_down.load(Relaxed)).sum();
        if down > 0 {
            out.push(format!(
                "redis: {down} connections down (or servers that hiredis.connect() cannot reach)"
            ));
        }
        let now = self.now_ms();
        for (k, secs) in self.stuck_workers() {
            let script = self.worker_script(k).map_or(String::new(), |s| format!(", in {s}"));
            out.push(format!(
                "worker {k}: one batch has run for {secs} s{script} (a script's loop(), a timer's, or a reloaded script's setup() that does not return?)"
            ));
        }
        for (k, w) in self.workers.iter().enumerate() {
            let last = w.last_progress_ms.load(Relaxed);
            if w.ring_batches.load(Relaxed) > 0 && last > 0 && now.saturating_sub(last) > STALL_MS {
                // A failing output holds the pipeline up: the workers wait for it.
                let why = if outputs_failing {
                    "; a failing output holds the pipeline up"
                } else {
                    ""
                };
                out.push(format!(
                    "worker {k}: rings stalled (events waiting, none processed for {} s{why})",
                    (now - last) / 1000
                ));
            }
        }
        out
    }

    /// The script worker `k` called last, named for a report ("analyzer TAG", "the filter of
    /// input TAG"); None before its first call.
    pub fn worker_script(&self, k: usize) -> Option<String> {
        let code = self.workers.get(k)?.script_now.load(Relaxed);
        if code == u32::MAX {
            return None;
        }
        let i = (code & !(1 << 31)) as usize;
        if code & 1 << 31 != 0 {
            Some(format!("analyzer {}", self.analyzer_tags.get(i)?))
        } else {
            Some(format!("the filter of input {}", self.input_tags.get(i)?))
        }
    }

    /// Workers that have been on one batch for more than [`STALL_MS`] without a blocking call
    /// of a script (Redis, HTTP, DNS: [`still_busy`]) in between, or for more than
    /// [`STALL_BLOCKING_MS`] whatever their scripts called, with the seconds on the clock that
    /// says so.
    pub fn stuck_workers(&self) -> Vec<(usize, u64)> {
        let now = self.now_ms();
        self.workers
            .iter()
            .enumerate()
            .filter_map(|(k, w)| {
                let since = w.busy_since_ms.load(Relaxed);
                let batch = w.batch_since_ms.load(Relaxed);
                let idle_stuck = since > 0 && now.saturating_sub(since) > STALL_MS;
                let calls_stuck = batch > 0 && now.saturating_sub(batch) > STALL_BLOCKING_MS;
                // The seconds on the clock that says so (the batch's when both do).
                let start = if calls_stuck { batch } else { since };
                (idle_stuck || calls_stuck).then(|| (k, now.saturating_sub(start) / 1000))
            })
            .collect()
    }

    pub fn new(input_tags: Vec<String>, analyzer_tags: Vec<String>, output_tags: Vec<String>, workers: usize) -> Self {
        Stats {
            inputs: input_tags.iter().map(|_| InputStats::default()).collect(),
            workers: (0..workers)
                .map(|_| WorkerStats::new(input_tags.len(), analyzer_tags.len()))
                .collect(),
            outputs: output_tags.iter().map(|_| OutputStats::default()).collect(),
            histograms: true,
            script_latency: (0..input_tags.len() + analyzer_tags.len())
                .map(|_| latency::Shared::default())
                .collect(),
            output_latency: output_tags.iter().map(|_| latency::Shared::default()).collect(),
            script_e2e: (0..input_tags.len() + analyzer_tags.len())
                .map(|_| latency::Shared::default())
                .collect(),
            redis_latency: latency::Shared::default(),
            // Set by the engine, which sizes the rings.
            ring_capacity: 0,
            started: std::time::Instant::now(),
            pipeline_started: std::time::Instant::now(),
            input_tags,
            analyzer_tags,
            output_tags,
        }
    }

    /// One of [`WORKER_TOTALS`], summed over the workers.
    pub fn worker_total(&self, t: &WorkerTotal) -> u64 {
        sum(self.workers.iter().map(|w| (t.get)(w).load(Relaxed)))
    }

    pub fn events_read(&self) -> u64 {
        sum(self.inputs.iter().map(|i| i.events.load(Relaxed)))
    }
    pub fn invalid(&self) -> u64 {
        sum(self
            .inputs
            .iter()
            .map(|i| i.invalid.load(Relaxed) + i.too_long.load(Relaxed)))
    }
    pub fn processed(&self) -> u64 {
        sum(self.workers.iter().map(|w| w.events.load(Relaxed)))
    }
    pub fn script_errors(&self) -> u64 {
        sum(self.workers.iter().map(|w| {
            sum(w
                .filter_errors
                .iter()
                .chain(&w.analyzer_errors)
                .map(|e| e.load(Relaxed)))
        }))
    }
    /// Records written to user outputs.
    pub fn written(&self) -> u64 {
        sum(self
            .outputs
            .iter()
            .skip(crate::config::types::OutputId::INTERNAL)
            .map(|o| o.written.load(Relaxed)))
    }

    /// Records of the engine's own outputs (`{log}`, `{stats}`) that could not be written.
    pub fn internal_output_errors(&self) -> u64 {
        sum(self
            .outputs
            .iter()
            .take(crate::config::types::OutputId::INTERNAL)
            .map(|o| o.errors.load(Relaxed)))
    }

    /// Records the user outputs failed to take (write, flush or file errors).
    pub fn output_errors(&self) -> u64 {
        sum(self
            .outputs
            .iter()
            .skip(crate::config::types::OutputId::INTERNAL)
            .map(|o| o.errors.load(Relaxed)))
    }

    /// Values that went nowhere without an error: calls naming an unknown analyzer or output
    /// (`drops.unknown_tag`), analyzer calls past the limit of one input event
    /// (`drops.hop_limit`), and records a full output dropped (`drop_when_full = true`). Values that could not be encoded are
    /// not counted here: the call raised in the script, which is a script error.
    pub fn dropped(&self) -> u64 {
        sum(self
            .workers
            .iter()
            .map(|w| w.unknown_tags.load(Relaxed) + w.hop_drops.load(Relaxed)))
            + sum(self
                .outputs
                .iter()
                .skip(crate::config::types::OutputId::INTERNAL)
                .map(|o| o.dropped.load(Relaxed)))
    }

    /// Tags of the inputs that are missing or could not be read now.
    pub fn missing_inputs(&self) -> Vec<String> {
        self.input_tags
            .iter()
            .zip(&self.inputs)
            .filter(|(_, i)| i.missing.load(Relaxed))
            .map(|(t, _)| t.clone())
            .collect()
    }
}

thread_local! {
    /// The stats and index of the worker running on this thread, for [`still_busy`].
    static BUSY: std::cell::Cell<Option<(*const Stats, usize)>> = const { std::cell::Cell::new(None) };
}

/// While it lives, [`still_busy`] on this thread marks worker `index` of `stats`.
pub(crate) struct BusyGuard(());

impl BusyGuard {
    pub(crate) fn new(stats: &Stats, index: usize) -> BusyGuard {
        BUSY.with(|b| b.set(Some((stats as *const Stats, index))));
        BusyGuard(())
    }
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        BUSY.with(|b| b.set(None));
    }
}

/// A script's blocking call (a Redis command, `http_get`, `dnslookup`) is under way: the worker
/// on this thread is slow, not stuck, so its batch's clock starts again (a batch of calls that
/// each wait their timeout is not a `loop()` that never returns).
pub(crate) fn still_busy() {
    BUSY.with(|b| {
        if let Some((stats, k)) = b.get() {
            // SAFETY: `BusyGuard` set the pointer on this thread from a `&Stats` that outlives
            // the guard, and clears it when dropped.
            let stats = unsafe { &*stats };
            if let Some(w) = stats.workers.get(k)
                && w.busy_since_ms.load(Relaxed) != 0
            {
                w.busy_since_ms.store(stats.now_ms(), Relaxed);
            }
        }
    });
}

/// A worker thread that failed (a panic: an engine defect): its index and what the panic said.
/// The engine exits on it (its events can no longer be written).
pub(crate) static WORKER_FAILED: std::sync::OnceLock<(usize, String)> = std::sync::OnceLock::new();

thread_local! {
    /// What the last panic of this thread said (see [`note_panics`]).
    static LAST_PANIC: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Keeps what each panic says for its thread (the default report to stderr still follows), so
/// that a [`FailGuard`] can name it.
pub(crate) fn note_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let what = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            let at = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            // A panic while the cell is borrowed (none is: it is only set here) is not noted.
            let _ = LAST_PANIC.try_with(|p| p.try_borrow_mut().map(|mut p| *p = format!("{what}{at}")));
            previous(info);
        }));
    });
}

/// Held by a worker thread over the part of its life that owns its rings: dropped by a panic,
/// it records the failure in [`WORKER_FAILED`] before the rings are (a failed worker's rings,
/// abandoned, end the writer as a worker's end does: the engine must know why first).
pub(crate) struct FailGuard(pub usize);

impl Drop for FailGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let what = LAST_PANIC
                .try_with(|p| p.try_borrow().map(|p| p.clone()).unwrap_or_default())
                .unwrap_or_default();
            let _ = WORKER_FAILED.set((self.0, if what.is_empty() { "a panic".into() } else { what }));
        }
    }
}
