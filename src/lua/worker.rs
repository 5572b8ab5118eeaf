//! A worker thread: pinned to its core, it creates its Lua states, then runs every event of
//! its shard through the scripts, in ring order (so per-flow order is kept), and hands the
//! records to the writer in batches.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use rtrb::{Consumer, Producer};

use super::{ScriptSpec, WorkerCtx};
use crate::counters::Stats;
use crate::primitives::backoff::Parker;
use crate::shard::{Backoff, InBatch, OutBatch};

/// Bytes of output records per batch before it is handed to the writer.
const OUT_BATCH_BYTES: usize = 128 * 1024;
const OUT_BATCH_RECS: usize = 256;

/// A worker's ends of the rings.
pub(crate) struct WorkerIo {
    /// Per input: batches in, and the ring they go back on.
    pub inputs: Vec<(Consumer<InBatch>, Producer<InBatch>)>,
    pub out: Producer<OutBatch>,
    pub out_back: Consumer<OutBatch>,
    /// The worker's own parker (it sleeps on it when idle or when the writer's ring is full),
    /// each input's reader's (woken after a pop frees a slot) and the writer's (woken after a
    /// push).
    pub me: Arc<Parker>,
    pub readers: Vec<Arc<Parker>>,
    pub writer: Arc<Parker>,
}

/// The text of every script (filters, then analyzers), or why one could not be read.
pub(crate) type Sources = Vec<Result<Vec<u8>, crate::lua::ScriptCause>>;

/// Script texts by path: what a pipeline's scripts are loaded from (a path not in it is read
/// from its file). The engine reads them once per pipeline start and keeps those that ran,
/// so that a reload's configuration that cannot start falls back to the scripts that ran
/// before, whatever their files hold now (a broken edit made the fallback fail too).
pub(crate) type Texts = Arc<std::collections::HashMap<std::path::PathBuf, Arc<[u8]>>>;

/// Script reloads (SIGHUP): the engine reads every script once and publishes the texts
/// under a new generation; each worker swaps its scripts between two batches.
#[derive(Default)]
pub(crate) struct Reload {
    pub generation: std::sync::atomic::AtomicU64,
    /// The text of every filter, then every analyzer (or why it could not be read).
    pub sources: std::sync::Mutex<Arc<Sources>>,
    /// The scripts reloaded on every worker (worker 0 notes those that worked), with the
    /// texts they run now: the engine's [`Texts`] of the pipeline take them.
    pub applied: std::sync::Mutex<Vec<(std::path::PathBuf, Arc<[u8]>)>>,
}

impl Reload {
    /// Publishes new script texts.
    pub(crate) fn publish(&self, sources: Sources) -> u64 {
        *self.sources.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(sources);
        self.generation.fetch_add(1, std::sync::atomic::Ordering::Release) + 1
    }
}

/// What a worker needs to start.
pub(crate) struct WorkerSpec {
    pub index: usize,
    pub cpu: Option<crate::primitives::pin::Pin>,
    pub filters: Vec<ScriptSpec>,
    pub analyzers: Vec<ScriptSpec>,
    pub input_tags: Vec<String>,
    pub analyzer_tags: Vec<String>,
    pub output_tags: Vec<String>,
    pub ordered: bool,
    pub redis: crate::lua::hiredis::RedisTarget,
    pub redis_timeouts: crate::lua::hiredis::RedisTimeouts,
    /// What each script state is opened with (memory limit, number precision).
    pub state: crate::lua::state::StateSettings,
    pub reload: Arc<Reload>,
    /// The texts to load the scripts from.
    pub texts: Texts,
}

/// Applies a published reload on this worker; worker 0 reports the outcome to `{log}`.
fn apply_reload(c: &mut WorkerCtx, spec: &WorkerSpec, generation: u64) -> (u64, u64) {
    let sources = Arc::clone(&spec.reload.sources.lock().unwrap_or_else(|e| e.into_inner()));
    let (done, errors) = c.reload(&spec.filters, &spec.analyzers, &sources);
    c.run_setup_calls();
    c.settle_gc();
    if spec.index == 0 {
        let specs = spec.filters.iter().chain(&spec.analyzers);
        let worked = specs
            .zip(sources.iter())
            .filter(|(s, _)| !errors.iter().any(|e| e.path == s.path && e.tag == s.tag))
            .filter_map(|(s, src)| Some((s.path.clone(), Arc::from(src.as_ref().ok()?.as_slice()))));
        spec.reload
            .applied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(worked);
        for e in &errors {
            c.report(
                crate::diag::Kind::ReloadError,
                &[],
                &format!("{e}; the previous version keeps running"),
            );
        }
        let msg = format!(
            "reload {generation}: {done} of {} scripts reloaded on every worker{}",
            sources.len(),
            if errors.is_empty() {
                ""
            } else {
                ", the others kept their previous version"
            }
        );
        let line = crate::diag::line(crate::diag::Kind::Reload, &[], &msg);
        c.emit(crate::shard::LOG_OUTPUT, &line);
    }
    (done, errors.len() as u64)
}

fn send(c: &mut WorkerCtx, io: &mut WorkerIo, slot: usize) {
    if c.outs[slot].recs.is_empty() {
        return;
    }
    let fresh = match io.out_back.pop() {
        Ok(mut b) => {
            b.clear();
            b
        }
        Err(_) => OutBatch {
            data: Vec::with_capacity(OUT_BATCH_BYTES + 4096),
            recs: Vec::with_capacity(OUT_BATCH_RECS),
            input: 0,
            read_ns: 0,
        },
    };
    let input = c.outs[slot].input;
    let mut batch = std::mem::replace(&mut c.outs[slot], fresh);
    c.outs[slot].input = input;
    let mut backoff = Backoff::default();
    loop {
        match io.out.push(batch) {
            Ok(()) => return io.writer.wake(),
            Err(rtrb::PushError::Full(b)) => {
                batch = b;
                if io.out.is_abandoned() {
                    return;
                }
                let out = &io.out;
                backoff.wait_on(&io.me, || out.slots() > 0 || out.is_abandoned());
            }
        }
    }
}

/// Fault injection for tests, in debug builds only: `DFM_FAULT_WORKER_PANIC=N` makes a worker
/// panic once it has handled N events (an engine defect, as the tests of its handling need).
#[cfg(debug_assertions)]
fn injected_panic(events: u64) {
    static AT: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    let at = AT.get_or_init(|| {
        std::env::var("DFM_FAULT_WORKER_PANIC")
            .ok()
            .and_then(|v| v.parse().ok())
    });
    if let Some(at) = at
        && events >= *at
    {
        panic!("injected fault after {events} events (DFM_FAULT_WORKER_PANIC)");
    }
}

fn send_all(c: &mut WorkerCtx, io: &mut WorkerIo) {
    for slot in 0..c.outs.len() {
        send(c, io, slot);
    }
}

fn publish(c: &mut WorkerCtx, stats: &Stats, index: usize, io: &WorkerIo) {
    c.report_finalizer_errors();
    c.redis.close_deferred();
    let w = &stats.workers[index];
    let waiting: usize = io.inputs.iter().map(|(rx, _)| rx.slots()).sum();
    w.ring_batches.store(waiting as u64, Relaxed);
    // A worker given only lines that are no event (a file of something else) is busy, not
    // stalled.
    let handled = c.counters.events + c.counters.line_reports;
    if waiting == 0 || handled != c.counters.handled_published {
        w.last_progress_ms.store(stats.now_ms(), Relaxed);
        c.counters.handled_published = handled;
    }
    w.redis_down.store(c.redis.down_count(), Relaxed);
    w.timers_pending.store(c.timers_pending, Relaxed);
    w.timers_fired.store(c.timers_fired, Relaxed);
    w.pinned_bytes.store(c.pins.bytes() as u64, Relaxed);
    w.pin_collections.store(c.pins.collections, Relaxed);
    w.pin_moved.store(c.pins.moved, Relaxed);
    if let Some(l) = c.lat.as_mut()
        && l.last_merge.elapsed() >= crate::counters::latency::MERGE_EVERY
    {
        l.merge_into(stats);
    }
    w.events.store(c.counters.events, Relaxed);
    w.unknown_tags.store(c.counters.unknown_tags, Relaxed);
    w.hop_drops.store(c.counters.hop_limit, Relaxed);
    w.encode_errors.store(c.counters.encode_errors, Relaxed);
    w.boundary_panics.store(crate::lua::boundary::panics_caught(), Relaxed);
    w.redis_calls.store(c.redis.calls, Relaxed);
    w.redis_failures.store(c.redis.failures, Relaxed);
    w.redis_error_replies.store(c.redis.error_replies, Relaxed);
    let (ml_calls, ml_errors) = crate::ml::counts();
    w.ml_calls.store(ml_calls, Relaxed);
    w.ml_errors.store(ml_errors, Relaxed);
    for (i, s) in c.filters.iter().enumerate() {
        w.filter_calls[i].store(s.calls, Relaxed);
        w.filter_errors[i].store(s.errors, Relaxed);
        w.filter_out[i].store(s.out, Relaxed);
    }
    for (i, s) in c.analyzers.iter().enumerate() {
        w.analyzer_calls[i].store(s.calls, Relaxed);
        w.analyzer_errors[i].store(s.errors, Relaxed);
        w.analyzer_out[i].store(s.out, Relaxed);
    }
}

/// Holds every worker at a batch boundary while the process drops its privileges: glibc
/// changes the credentials of all threads by signalling each, and a worker blocked in a
/// Redis read with a timeout would see the read fail with EINTR (such reads are never
/// restarted) and lose its connection.
pub(crate) struct Gate {
    pause: std::sync::atomic::AtomicBool,
    parked: std::sync::atomic::AtomicUsize,
}

pub(crate) static GATE: Gate = Gate {
    pause: std::sync::atomic::AtomicBool::new(false),
    parked: std::sync::atomic::AtomicUsize::new(0),
};

impl Gate {
    /// Runs `f` once `workers` workers are parked (or `wait` has passed), then lets them go.
    pub(crate) fn with_workers_parked<T>(&self, workers: usize, wait: std::time::Duration, f: impl FnOnce() -> T) -> T {
        use std::sync::atomic::Ordering::{Acquire, Release};
        self.pause.store(true, Release);
        let t = std::time::Instant::now();
        while self.parked.load(Acquire) < workers && t.elapsed() < wait {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let r = f();
        self.pause.store(false, Release);
        r
    }

    /// A worker that has stopped is out of the way for good.
    fn leave(&self) {
        self.parked.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// Called by a worker between batches: waits while a pause is asked for.
    fn check(&self) {
        use std::sync::atomic::Ordering::{AcqRel, Acquire};
        if !self.pause.load(Acquire) {
            return;
        }
        self.parked.fetch_add(1, AcqRel);
        while self.pause.load(Acquire) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        self.parked.fetch_sub(1, AcqRel);
    }
}

/// What a worker needs for the next pipeline, after a reload rebuilt it: its rings, the new
/// configuration's scripts and tags, the new pipeline's stats, and where to say it is ready.
pub(crate) struct NextPipeline {
    pub spec: WorkerSpec,
    pub io: WorkerIo,
    pub stats: Arc<Stats>,
    pub ready: std::sync::mpsc::Sender<Result<(), crate::lua::ScriptError>>,
}

/// Runs a worker: each pipeline until every input ring is closed and empty, then, while the
/// engine sends one, the next pipeline (a reload that rebuilt it) with the same Lua states for
/// the scripts it keeps. `ready` receives the outcome of loading the scripts and running their
/// `setup()`.
pub(crate) fn run(
    spec: WorkerSpec,
    io: WorkerIo,
    stats: Arc<Stats>,
    ready: std::sync::mpsc::Sender<Result<(), crate::lua::ScriptError>>,
    next: std::sync::mpsc::Receiver<NextPipeline>,
) {
    if let Some(cpu) = &spec.cpu {
        crate::primitives::pin::pin_current(cpu);
    }
    let mut c = WorkerCtx::new(
        spec.input_tags.clone(),
        spec.analyzer_tags.clone(),
        spec.output_tags.clone(),
        spec.ordered,
    );
    c.redis.target = spec.redis.clone();
    c.redis.timeouts = spec.redis_timeouts;
    c.script_now = std::sync::Arc::clone(&stats.workers[spec.index].script_now);
    c.texts = Arc::clone(&spec.texts);
    c.set_state_settings(spec.state);
    if stats.histograms {
        c.lat = Some(Box::new(crate::lua::WorkerLatency::new(
            spec.filters.len() + spec.analyzers.len(),
        )));
    }
    let r = c.open_all(&spec.filters, &spec.analyzers, true);
    let ok = r.is_ok();
    let _ = ready.send(r);
    if !ok {
        GATE.leave();
        c.close();
        return;
    }
    c.run_setup_calls();
    c.settle_gc();
    let (mut spec, mut io, mut stats) = (spec, io, stats);
    // Dropped before the rings by a panic (declared after them): the engine learns of the
    // failure before the writer sees the rings abandoned.
    let _failed = crate::counters::FailGuard(spec.index);
    loop {
        run_pipeline(&mut c, &spec, &mut io, &stats);
        // The writer sees this pipeline's end once the rings are dropped.
        drop(io);
        // Out of the way while it waits (a privilege drop waits for every worker to park).
        GATE.parked.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let n = next.recv();
        GATE.parked.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        let Ok(n) = n else { break };
        // A new script's setup() that never returns is a stuck worker of the new pipeline:
        // reported (`worker_stuck`), `/health` 503 (the writer and the endpoint already run).
        let me = &n.stats.workers[n.spec.index];
        me.begin_batch(n.stats.now_ms());
        c.script_now = std::sync::Arc::clone(&me.script_now);
        c.texts = Arc::clone(&n.spec.texts);
        // States opened with other settings (memory limit, number precision) are not kept; a
        // new GC pause needs no new state (`tune_gc` applies it every batch).
        let same_settings = crate::lua::state::StateSettings {
            gc_pause: spec.state.gc_pause,
            ..n.spec.state
        } == spec.state;
        c.set_state_settings(n.spec.state);
        let none: &[crate::lua::ScriptSpec] = &[];
        let old = if same_settings {
            (&spec.filters[..], &spec.analyzers[..])
        } else {
            (none, none)
        };
        let r = c.reconfigure(
            n.spec.input_tags.clone(),
            n.spec.analyzer_tags.clone(),
            n.spec.output_tags.clone(),
            n.spec.ordered,
            old,
            &n.spec.filters,
            &n.spec.analyzers,
        );
        let ok = r.is_ok();
        if ok {
            c.run_setup_calls();
            c.settle_gc();
        }
        n.stats.workers[n.spec.index].end_batch();
        let _ = n.ready.send(r.map(drop));
        (spec, io, stats) = (n.spec, n.io, n.stats);
        if !ok {
            break;
        }
    }
    GATE.leave();
    c.close();
}

/// Hands the input batches no event table reads any more back to their readers (see
/// `WorkerCtx::release_pins`).
fn release_pins(c: &mut WorkerCtx, io: &mut WorkerIo) {
    c.release_pins(|i, b| {
        if let Some((_, back)) = io.inputs.get_mut(i) {
            let _ = back.push(b);
        }
    });
}

/// One pipeline's events, until every input ring is closed and empty.
fn run_pipeline(c: &mut WorkerCtx, spec: &WorkerSpec, io: &mut WorkerIo, stats: &Stats) {
    io.me.register();
    let _busy = crate::counters::BusyGuard::new(stats, spec.index);
    // Records written by setup() go out at once.
    send_all(c, io);
    // Events run together when an analyzer pipelines its Redis commands.
    let window = c.max_pipeline();
    let mut backoff = Backoff::default();
    let mut generation = spec.reload.generation.load(std::sync::atomic::Ordering::Acquire);
    loop {
        GATE.check();
        let g = spec.reload.generation.load(std::sync::atomic::Ordering::Acquire);
        if g != generation {
            generation = g;
            // A reloaded script's setup() that never returns is a stuck worker too: reported,
            // `/health` 503, and a stop is not held by it.
            let me = &stats.workers[spec.index];
            me.begin_batch(stats.now_ms());
            let (d, e) = apply_reload(c, spec, g);
            me.end_batch();
            // (Added: the engine counts the configurations it refuses on worker 0's.)
            stats.workers[spec.index].reloads.fetch_add(d, Relaxed);
            stats.workers[spec.index].reload_errors.fetch_add(e, Relaxed);
            let last = c.outs.len() - 1;
            send(c, io, last);
        }
        let mut got = false;
        for input in 0..io.inputs.len() {
            while let Ok(batch) = io.inputs[input].0.pop() {
                got = true;
                // A slot is free: the reader may be waiting for one.
                if let Some(r) = io.readers.get(input) {
                    r.wake();
                }
                let o = &mut c.outs[input];
                if o.read_ns == 0 || batch.read_ns < o.read_ns {
                    o.read_ns = batch.read_ns;
                }
                let me = &stats.workers[spec.index];
                me.begin_batch(stats.now_ms());
                // Event tables read the lines in place: the batch stays until none does (see
                // `pins`), and a panic leaks it rather than free lines a state may read.
                c.pins.begin(&batch.data);
                let mut batch = std::mem::ManuallyDrop::new(batch);
                let b = &mut *batch;
                let counts = c.process_batch(input as u32, &b.data, &mut b.events, window);
                #[cfg(debug_assertions)]
                injected_panic(c.counters.events);
                if let Some(b) = c.pins.end(input, std::mem::ManuallyDrop::into_inner(batch)) {
                    let _ = io.inputs[input].1.push(b);
                }
                // Within the batch's watch: the pins' collector steps run finalizers.
                release_pins(c, io);
                me.end_batch();
                let s = &stats.inputs[input];
                s.events.fetch_add(counts.events, Relaxed);
                if counts.invalid > 0 {
                    s.invalid.fetch_add(counts.invalid, Relaxed);
                }
                c.tune_gc();
                let o = &c.outs[input];
                if o.data.len() >= OUT_BATCH_BYTES || o.recs.len() >= OUT_BATCH_RECS {
                    send(c, io, input);
                }
                let last = c.outs.len() - 1;
                if !c.outs[last].recs.is_empty() {
                    send(c, io, last);
                }
                // A test's timers are looked at after each batch (the ring may hold the whole
                // input), once the records of the events before them are handed out.
                if c.vclock.is_some() && c.timers_pending > 0 {
                    send_all(c, io);
                    c.run_timers();
                    send(c, io, last);
                }
                publish(c, stats, spec.index, io);
            }
        }
        if c.timers_pending > 0 {
            let me = &stats.workers[spec.index];
            me.begin_batch(stats.now_ms());
            c.run_timers();
            me.end_batch();
            let last = c.outs.len() - 1;
            send(c, io, last);
        }
        if got {
            backoff.reset();
            continue;
        }
        // Idle: hand out what is pending so that low rates still see their results promptly.
        release_pins(c, io);
        c.retry_down_redis();
        c.flush_reports(false);
        send_all(c, io);
        publish(c, stats, spec.index, io);
        if io.inputs.iter().all(|(rx, _)| rx.is_abandoned() && rx.is_empty()) {
            break;
        }
        // Woken by a batch (an input that ended stays ended: it is no reason to stay awake;
        // the check above sees the last one end within a sleep).
        let inputs = &io.inputs;
        backoff.wait_on(&io.me, || inputs.iter().any(|(rx, _)| !rx.is_empty()));
    }
    if c.vclock.is_some() {
        // A test's timers fire after the input's records are handed out: on one shard they
        // follow every event's records.
        send_all(c, io);
        c.run_clock_out();
    }
    c.report_redis_outages();
    c.report_finalizer_errors();
    c.flush_reports(true);
    send_all(c, io);
    publish(c, stats, spec.index, io);
    if let Some(l) = c.lat.as_mut() {
        l.merge_into(stats);
    }
}
