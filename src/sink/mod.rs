//! The writer: one thread that owns every sink, merges the workers' record streams so that
//! each ordered output receives its events in input order (by sequence number, with the
//! end-of-event records as watermarks), flushes at least every 100 ms, writes the periodic
//! stats line and rotates file outputs on SIGUSR1.

pub(crate) mod file;
pub(crate) mod held;
pub(crate) mod ipc;
pub(crate) mod kafka;
pub(crate) mod merge;
pub(crate) mod parquet;
pub(crate) mod zfile;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use rtrb::{Consumer, Producer};

pub(crate) use crate::config::types::Policy;
use crate::counters::Stats;
use crate::diag::Kind;
use crate::shard::{Backoff, OutBatch, OutputId};
pub(crate) use file::FileSink;
pub(crate) use held::Held;
pub(crate) use ipc::IpcSink;
pub(crate) use kafka::KafkaSink;
pub(crate) use zfile::ZfileSink;

/// One output, as the writer drives it. The default methods fit an output that writes at
/// once and loses nothing after a successful write; the others override what they do more.
pub(crate) trait Output: Send {
    /// Takes one record (ending with its newline).
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()>;

    /// Delivers what it buffers (every 100 ms, and at exit).
    fn flush(&mut self) -> std::io::Result<()>;

    /// At exit: flushes and finishes what needs finishing (a Parquet file, the producer queue).
    fn close(&mut self) -> std::io::Result<()> {
        self.flush()
    }

    /// SIGUSR1: file outputs are renamed and reopened (the new name is returned); others
    /// ignore it.
    fn rotate(&mut self) -> Option<std::io::Result<std::path::PathBuf>> {
        None
    }

    /// The records a file (plain or gzip) or socket output holds until they are delivered.
    fn held(&self) -> Option<&Held> {
        None
    }

    fn held_mut(&mut self) -> Option<&mut Held> {
        None
    }

    /// Records that can never be delivered (a datagram too large) since the last call, with
    /// the reason.
    fn take_rejected(&mut self) -> (u64, String) {
        (0, String::new())
    }

    /// Whether records were rejected since the last [`Output::take_rejected`].
    fn has_rejected(&self) -> bool {
        false
    }

    /// Records lost since the last call after they were handed over (Kafka: not delivered;
    /// Parquet: in a file that could not be written), with a message.
    fn new_failures(&mut self) -> Option<(u64, String)> {
        None
    }

    /// Records handed to an output whose records become durable later than its flush (Kafka:
    /// when the broker acknowledges; Parquet: when the file is complete); 0 for the others.
    fn sent(&self) -> u64 {
        0
    }

    /// How many of [`Output::sent`] are settled: durable, or failed for good (counted).
    fn delivered(&self) -> u64 {
        0
    }

    /// How many of [`Output::sent`] the watermark may pass (checkpoints, commits): the
    /// delivered ones, up to the first that failed for good (Kafka).
    fn passable(&self) -> u64 {
        self.delivered()
    }

    /// The last problem the output's client saw by itself (Kafka: a broker down, a request
    /// refused), for the report of an output whose deliveries stalled.
    fn last_problem(&self) -> Option<String> {
        None
    }

    /// How long records sent may wait for their acknowledgement before the output counts as
    /// stalled (Kafka); `None` when a wait says nothing (Parquet: a file completes when it is
    /// full or old enough).
    fn stall_after(&self) -> Option<Duration> {
        None
    }

    /// Why records it took wait for a retry of its own now (Parquet: files that could not be
    /// written or published), `None` when none do: a stall at once (see `Writer::stalled`),
    /// and what the writer waits for at exit (see [`Outputs::drain`]).
    fn waiting(&self) -> Option<String> {
        None
    }

    /// Something the writer should report that is no failure of a delivery (a file output
    /// found its file deleted and opened it again), once.
    fn take_notice(&mut self) -> Option<String> {
        None
    }

    /// The pipeline has started (every script's `setup()` returned): a truncating file output
    /// empties its file now, if its first write has not.
    fn begin(&mut self) -> std::io::Result<()> {
        Ok(())
    }

    /// What to call it in messages.
    fn name(&self) -> String;
}

/// An output of the writer.
pub(crate) type Sink = Box<dyn Output>;

/// Whether an output has delivered or rejected records since its counts were last settled.
fn has_news(s: &dyn Output) -> bool {
    s.held().is_some_and(Held::has_delivered) || s.has_rejected()
}

/// The `Output` of a sink that holds its records (`held`) for a file at `path`: its inherent
/// `write`, `flush` and `rotate`, and any further methods given.
macro_rules! held_file_output {
    ($t:ty $(, $extra:item)*) => {
        impl Output for $t {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
                <$t>::write(self, bytes)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                <$t>::flush(self)
            }
            fn rotate(&mut self) -> Option<std::io::Result<std::path::PathBuf>> {
                Some(<$t>::rotate(self))
            }
            fn held(&self) -> Option<&Held> {
                Some(&self.held)
            }
            fn held_mut(&mut self) -> Option<&mut Held> {
                Some(&mut self.held)
            }
            fn name(&self) -> String {
                self.path.display().to_string()
            }
            fn begin(&mut self) -> std::io::Result<()> {
                <$t>::begin(self)
            }
            $($extra)*
        }
    };
}

held_file_output!(
    FileSink,
    fn take_notice(&mut self) -> Option<String> {
        self.notice.take()
    }
);
held_file_output!(
    ZfileSink,
    fn close(&mut self) -> std::io::Result<()> {
        ZfileSink::close(self)
    },
    fn take_notice(&mut self) -> Option<String> {
        self.notice.take()
    }
);

impl Output for IpcSink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        IpcSink::write(self, bytes)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        IpcSink::flush(self)
    }
    fn held(&self) -> Option<&Held> {
        Some(&self.held)
    }
    fn held_mut(&mut self) -> Option<&mut Held> {
        Some(&mut self.held)
    }
    fn take_rejected(&mut self) -> (u64, String) {
        match IpcSink::take_rejected(self) {
            0 => (0, String::new()),
            n => (n, self.last_rejection.clone().unwrap_or_default()),
        }
    }
    fn has_rejected(&self) -> bool {
        IpcSink::has_rejected(self)
    }
    fn name(&self) -> String {
        self.path.display().to_string()
    }
}

impl Output for KafkaSink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        KafkaSink::write(self, bytes)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        KafkaSink::flush(self)
    }
    fn close(&mut self) -> std::io::Result<()> {
        KafkaSink::close(self)
    }
    fn new_failures(&mut self) -> Option<(u64, String)> {
        KafkaSink::new_failures(self)
    }
    fn sent(&self) -> u64 {
        self.sent
    }
    fn delivered(&self) -> u64 {
        KafkaSink::delivered(self)
    }
    fn passable(&self) -> u64 {
        KafkaSink::passable(self)
    }
    fn last_problem(&self) -> Option<String> {
        KafkaSink::last_problem(self)
    }
    fn stall_after(&self) -> Option<Duration> {
        Some(STALL_AFTER)
    }
    fn name(&self) -> String {
        self.name.clone()
    }
}

impl Output for parquet::ParquetSink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        parquet::ParquetSink::write(self, bytes)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        parquet::ParquetSink::flush(self)
    }
    /// At exit: files that still cannot be published are given up (counted as lost).
    fn close(&mut self) -> std::io::Result<()> {
        parquet::ParquetSink::finish(self)
    }
    /// The current Parquet file is finished; the next event starts a new one.
    fn rotate(&mut self) -> Option<std::io::Result<std::path::PathBuf>> {
        Some(parquet::ParquetSink::close(self).map(|()| self.dir().to_path_buf()))
    }
    fn new_failures(&mut self) -> Option<(u64, String)> {
        parquet::ParquetSink::new_failures(self)
    }
    fn sent(&self) -> u64 {
        self.sent
    }
    fn delivered(&self) -> u64 {
        self.delivered
    }
    fn waiting(&self) -> Option<String> {
        parquet::ParquetSink::waiting(self)
    }
    fn name(&self) -> String {
        format!("parquet://{}", self.dir().display())
    }
}

/// How often buffered output reaches the files.
pub(crate) const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// The writer's end of one worker's rings.
pub(crate) struct WorkerLink {
    pub from: Consumer<OutBatch>,
    pub back: Producer<OutBatch>,
    /// The worker's parker (woken after a pop frees a slot of its ring) and the writer's own
    /// (the same for every link: the writer sleeps on it when idle).
    pub worker: Arc<crate::primitives::backoff::Parker>,
    pub writer: Arc<crate::primitives::backoff::Parker>,
}

/// When waiting for an output ends: once the engine is stopping (a signal, or its inputs
/// ended) and `grace` has passed since, what an output still cannot deliver is given up and
/// counted as lost.
pub(crate) struct Gate {
    pub stop: Arc<AtomicBool>,
    pub inputs_done: Arc<AtomicBool>,
    /// The pipeline ends for a reload: outputs are waited for without a grace (what they hold
    /// would be lost), unless a stop signal comes.
    pub rebuilding: Arc<AtomicBool>,
    pub grace: Duration,
    /// Set by the writer once every worker has finished.
    finishing: bool,
    since: Option<Instant>,
}

impl Gate {
    pub(crate) fn new(
        stop: Arc<AtomicBool>,
        inputs_done: Arc<AtomicBool>,
        rebuilding: Arc<AtomicBool>,
        grace: Duration,
    ) -> Gate {
        Gate {
            stop,
            inputs_done,
            rebuilding,
            grace,
            finishing: false,
            since: None,
        }
    }

    fn give_up(&mut self) -> bool {
        let stop = self.stop.load(Relaxed);
        if !(self.finishing || stop || self.inputs_done.load(Relaxed)) || (self.rebuilding.load(Relaxed) && !stop) {
            return false;
        }
        self.since.get_or_insert_with(Instant::now).elapsed() >= self.grace
    }
}

/// Per output: since when it cannot deliver, and how many attempts failed since.
#[derive(Default)]
struct Waiting {
    since: Option<Instant>,
    attempts: u64,
}

/// The sinks with their policies: every record goes through [`Outputs::write`], which counts
/// it once it is delivered, lost or dropped, never before.
/// How long an output that takes no record (a full Kafka producer queue) makes the writer
/// wait before it is reported.
const FULL_REPORT_AFTER: Duration = Duration::from_secs(10);

pub(crate) struct Outputs {
    pub sinks: Vec<Sink>,
    policy: Vec<Policy>,
    waiting: Vec<Waiting>,
    stats: Arc<Stats>,
    gate: Gate,
    /// Per input: the rate limit of its line reports (see `OutputId::INVALID_LINE`).
    line_limits: Vec<crate::diag::limit::Limiter>,
    /// Records were given up (lost) at the stop: the watermarks stay where they are, so that
    /// tail checkpoints and Kafka commits do not pass events that were never written (a
    /// restart reads them again).
    abandoned: bool,
    /// When the stats line is due (the writer's turns and the waits below both ask).
    stats_clock: StatsClock,
    /// `{log}` records of the readers and the engine (the writer's; set by `Writer::new`).
    diag: Option<Receiver<Vec<u8>>>,
    /// [`Outputs::while_waiting`] is writing: a wait it starts (for `{log}` or `{stats}`,
    /// full too) writes nothing more, or two full files would recurse without end.
    in_wait_writes: bool,
}

/// When the stats line is due: about 1 s after the start, then every `stats_interval`. The
/// writer asks at each of its turns, and so does a wait for an output that cannot deliver:
/// an output that holds the pipeline up does not stop the line that shows it.
struct StatsClock {
    start: Instant,
    first_done: bool,
    last: Instant,
    every: Duration,
}

impl StatsClock {
    fn new(every: Duration) -> StatsClock {
        let now = Instant::now();
        StatsClock {
            start: now,
            first_done: false,
            last: now,
            every,
        }
    }

    /// True (and the clock restarted) when a line is due.
    fn due(&mut self) -> bool {
        let now = Instant::now();
        let first = !self.first_done && now.duration_since(self.start) >= Duration::from_secs(1);
        if first || now.duration_since(self.last) >= self.every {
            self.first_done = true;
            self.last = now;
            return true;
        }
        false
    }
}

impl Outputs {
    pub(crate) fn new(sinks: Vec<Sink>, policy: Vec<Policy>, stats: Arc<Stats>, gate: Gate) -> Outputs {
        let waiting = sinks.iter().map(|_| Waiting::default()).collect();
        Outputs {
            sinks,
            policy,
            waiting,
            stats,
            gate,
            line_limits: Vec::new(),
            abandoned: false,
            stats_clock: StatsClock::new(Duration::from_secs(60)),
            diag: None,
            in_wait_writes: false,
        }
    }

    /// Hands the stats line, with the counters as they are now, to `{stats}`.
    fn write_stats_line(&mut self) {
        let mut line = self.stats.line();
        line.push(b'\n');
        self.write(crate::shard::STATS_OUTPUT, &line);
    }

    /// Writes the engine's `{log}` records waiting in the channel; whether there were any.
    fn drain_diag(&mut self) -> bool {
        let mut any = false;
        while let Some(line) = self.diag.as_ref().and_then(|d| d.try_recv().ok()) {
            let mut l = line;
            l.push(b'\n');
            self.write(crate::shard::LOG_OUTPUT, &l);
            any = true;
        }
        any
    }

    /// While the writer waits for output `o`: the engine's `{log}` records as they come (a
    /// reload's, an input's: they waited for the end of the wait, out of time order) unless
    /// `o` is the log, and the stats line when it is due unless `o` is the stats file, with
    /// the counters as they are (the latency histograms as last merged).
    fn while_waiting(&mut self, o: usize) {
        if std::mem::replace(&mut self.in_wait_writes, true) {
            return;
        }
        self.wait_writes(o);
        self.in_wait_writes = false;
    }

    /// What [`Outputs::while_waiting`] writes.
    fn wait_writes(&mut self, o: usize) {
        if o != crate::shard::LOG_OUTPUT.index() && self.drain_diag() {
            self.flush_log();
        }
        if o == crate::shard::STATS_OUTPUT.index() || !self.stats_clock.due() {
            return;
        }
        self.write_stats_line();
        let s = crate::shard::STATS_OUTPUT;
        // The writer's flush does not run while it waits: the line is delivered now.
        if let Some(sink) = self.sinks.get_mut(s.index()) {
            let r = sink.flush();
            self.settle(s.index(), r, true);
        }
    }

    /// Hands one record from a worker to its output; a line report goes to `{log}` under its
    /// input's rate limit (and, when written in full, to stderr).
    fn write_rec(&mut self, r: &crate::shard::OutRec, bytes: &[u8]) {
        let kind = match r.output {
            OutputId::INVALID_LINE => Kind::InvalidLine,
            OutputId::LINE_TOO_LONG => Kind::LineTooLong,
            o => return self.write(o, bytes),
        };
        let input = r.script as usize;
        if self.line_limits.len() <= input {
            self.line_limits.resize_with(input + 1, Default::default);
        }
        let mut ended = None;
        let allowed = self.line_limits[input].allow(kind, &mut ended);
        if let Some(mut line) = ended {
            line.push(b'\n');
            self.write(crate::shard::LOG_OUTPUT, &line);
        }
        if allowed {
            // Counted here (a record left out is counted by the limit).
            crate::diag::count(kind);
            crate::diag::stderr_report(bytes.strip_suffix(b"\n").unwrap_or(bytes));
            self.write(crate::shard::LOG_OUTPUT, bytes);
        }
    }

    /// Writes the `suppressed` records of line reports whose window has ended (`all`: every
    /// one, at the end).
    fn line_limits_due(&mut self, all: bool) {
        let mut due = Vec::new();
        for l in &mut self.line_limits {
            due.extend(l.due(all));
        }
        for mut line in due {
            line.push(b'\n');
            self.write(crate::shard::LOG_OUTPUT, &line);
        }
    }

    fn policy(&self, o: usize) -> Policy {
        self.policy.get(o).copied().unwrap_or_default()
    }

    /// Hands one record to output `output`.
    fn write(&mut self, output: OutputId, bytes: &[u8]) {
        if crate::counters::tap::active() {
            crate::counters::tap::offer(crate::counters::tap::Point::Output, output.index(), |v| {
                v.extend_from_slice(bytes)
            });
        }
        if output == crate::shard::LOG_OUTPUT {
            let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
            if let std::borrow::Cow::Owned(mut text) = crate::diag::log_line(body) {
                text.push(b'\n');
                return self.write_record(output, &text);
            }
        }
        self.write_record(output, bytes)
    }

    fn write_record(&mut self, output: OutputId, bytes: &[u8]) {
        let o = output.index();
        let Some(s) = self.sinks.get_mut(o) else { return };
        if s.held().is_none() {
            // A full output (Kafka's producer queue, its broker not acknowledging) makes the
            // writer wait, and with it the pipeline; after 10 s it is reported. The record is
            // given up only once the engine is stopping and its grace is over: on a stop
            // signal, or, at the end of the inputs, when the output has delivered nothing for
            // that long (a slow broker that acknowledges is waited for, a dead one is not).
            let mut full: Option<(Instant, bool)> = None;
            let mut progress = (self.sinks[o].delivered(), Instant::now());
            let r = loop {
                match self.sinks[o].write(bytes) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        let (since, told) = full.get_or_insert_with(|| (Instant::now(), false));
                        let delivered = self.sinks[o].delivered();
                        if delivered != progress.0 {
                            progress = (delivered, Instant::now());
                        }
                        let stalled = progress.1.elapsed() >= self.gate.grace;
                        if self.gate.give_up() && (self.gate.stop.load(Relaxed) || stalled) {
                            self.abandoned = true;
                            break Err(std::io::Error::other(format!(
                                "{e}; the engine is stopping and its grace is over: the record is lost"
                            )));
                        }
                        if *told {
                            // Failing for `/health` while it lasts.
                            self.stats.outputs[o].last_error_ms.store(self.stats.now_ms(), Relaxed);
                        } else if since.elapsed() >= FULL_REPORT_AFTER {
                            *told = true;
                            self.stats.outputs[o].last_error_ms.store(self.stats.now_ms(), Relaxed);
                            let msg = format!("{e}; the pipeline waits for it (nothing is dropped)");
                            self.report(o, Kind::OutputWaiting, "", &msg);
                            self.flush_log();
                        }
                        self.while_waiting(o);
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    r => break r,
                }
            };
            if let (Some((since, true)), Ok(())) = (full, &r) {
                let secs = since.elapsed().as_secs_f64();
                let msg = format!("its queue takes records again after {secs:.1} s");
                self.report(o, Kind::OutputResumed, &format!(",\"seconds\":{secs:.3}"), &msg);
                self.stats.outputs[o].last_ok_ms.store(self.stats.now_ms() + 1, Relaxed);
            }
            match r {
                Ok(()) => {
                    self.stats.outputs[o].written.fetch_add(1, Relaxed);
                }
                Err(e) => {
                    let n = self.stats.outputs[o].errors.fetch_add(1, Relaxed) + 1;
                    self.stats.outputs[o].last_error_ms.store(self.stats.now_ms(), Relaxed);
                    // The 1st, 2nd, 4th, 8th, ... failure of an output is reported to {log}.
                    if n.is_power_of_two() {
                        let msg = format!("{e}");
                        self.report(o, Kind::OutputError, &format!(",\"errors\":{n}"), &msg);
                    }
                }
            }
            return;
        }
        let held = s.held().map_or(0, |h| h.len());
        if held > 0 && held + bytes.len() > self.policy(o).limit && !self.make_room(o, bytes.len()) {
            self.stats.outputs[o].dropped.fetch_add(1, Relaxed);
            return;
        }
        let r = self.sinks[o].write(bytes);
        // Most records are only held: nothing to count until a delivery (the flush every
        // 100 ms settles the rest, and the `held` gauge with it).
        if r.is_err() || has_news(self.sinks[o].as_ref()) {
            self.settle(o, r, false);
        }
    }

    /// Counts what a held output delivered or rejected; notes that it fails or works again
    /// (`tried`: a delivery of everything held was attempted).
    fn settle(&mut self, o: usize, r: std::io::Result<()>, tried: bool) {
        let s = &mut self.sinks[o];
        let delivered = s.held_mut().map_or(0, |h| h.take_delivered());
        let (rejected, why) = s.take_rejected();
        let held = s.held().map_or(0, |h| h.records());
        let st = &self.stats.outputs[o];
        st.written.fetch_add(delivered, Relaxed);
        st.held.store(held, Relaxed);
        if rejected > 0 {
            let n = st.errors.fetch_add(rejected, Relaxed) + rejected;
            st.last_error_ms.store(self.stats.now_ms(), Relaxed);
            if n.is_power_of_two() || rejected > 1 {
                report_to(
                    &mut self.sinks,
                    &self.stats,
                    o,
                    Kind::OutputError,
                    &format!(",\"errors\":{n}"),
                    &why,
                );
            }
        }
        match r {
            Err(e) => {
                let w = &mut self.waiting[o];
                w.attempts += 1;
                st.last_error_ms.store(self.stats.now_ms(), Relaxed);
                if w.since.is_none() {
                    w.since = Some(Instant::now());
                    let msg = if self.policy(o).drop_when_full {
                        format!(
                            "{e}; holding {held} records and retrying (drop_when_full: records that do not fit in its buffer_mb are dropped, counted in dropped)"
                        )
                    } else {
                        format!("{e}; holding {held} records and retrying (nothing is dropped)")
                    };
                    report_to(
                        &mut self.sinks,
                        &self.stats,
                        o,
                        Kind::OutputWaiting,
                        &format!(",\"held\":{held}"),
                        &msg,
                    );
                }
            }
            Ok(()) if tried => {
                if let Some(t) = self.waiting[o].since.take() {
                    let secs = t.elapsed().as_secs_f64();
                    let attempts = std::mem::take(&mut self.waiting[o].attempts);
                    let msg = format!("delivering again after {secs:.1} s ({attempts} attempts failed)");
                    let extra = format!(",\"seconds\":{secs:.3},\"failed_attempts\":{attempts}");
                    report_to(&mut self.sinks, &self.stats, o, Kind::OutputResumed, &extra, &msg);
                }
                if rejected == 0 {
                    st.last_ok_ms.store(self.stats.now_ms() + 1, Relaxed);
                }
            }
            Ok(()) => {}
        }
    }

    /// Output `o` is full: it delivers what it can; while there is no room for `n` more bytes
    /// the writer waits (and with it the pipeline: the rings fill, the inputs wait), unless the
    /// output drops when full (false: drop this record) or the engine is past its grace.
    fn make_room(&mut self, o: usize, n: usize) -> bool {
        let limit = self.policy(o).limit;
        let drops = self.policy(o).drop_when_full;
        self.wait_for(o, |held, _| held == 0 || held + n <= limit, drops, false)
    }

    /// At exit: waits (up to the grace) until output `o` has delivered what it holds and has
    /// nothing [waiting](Output::waiting).
    fn drain(&mut self, o: usize) {
        self.wait_for(o, |held, delivered| held == 0 && delivered, false, true);
    }

    /// Delivers what output `o` holds, retrying with backoff, until `done(held bytes, the last
    /// delivery worked)`; true then. False at once when it is not done and `give_up_now`; after
    /// the stop's grace, what it holds is abandoned (counted as lost) and it returns true.
    /// `ending`: the pipeline is ending (a drain), not only waiting for room.
    fn wait_for(&mut self, o: usize, done: impl Fn(usize, bool) -> bool, give_up_now: bool, ending: bool) -> bool {
        let mut pause = Duration::from_millis(5);
        let start = Instant::now();
        let mut told = false;
        loop {
            let r = self.sinks[o].flush();
            let ok = r.is_ok() && self.sinks[o].waiting().is_none();
            self.settle(o, r, true);
            if done(self.sinks[o].held().map_or(0, Held::len), ok) {
                return true;
            }
            if give_up_now {
                return false;
            }
            if self.gate.give_up() {
                self.abandon(o);
                return true;
            }
            // A reload that rebuilds the pipeline waits without a grace: say what it waits for.
            if !told && start.elapsed() >= Duration::from_secs(10) {
                told = true;
                // `held` counts records, as in the other `output_waiting` records.
                let (records, bytes) = self.sinks[o].held().map_or((0, 0), |h| (h.records(), h.len()));
                let msg = if ending {
                    format!(
                        "the pipeline is ending (a reload or a stop) and waits for this output to deliver what it holds ({records} records, {bytes} bytes); a reload goes on once it does, a stop gives up after its grace"
                    )
                } else {
                    format!(
                        "this output holds all its buffer_mb allows ({records} records, {bytes} bytes) and cannot deliver: the pipeline waits for it (the inputs wait; nothing is dropped)"
                    )
                };
                self.report(o, Kind::OutputWaiting, &format!(",\"held\":{records}"), &msg);
                self.flush_log();
            }
            self.while_waiting(o);
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// Gives up what output `o` holds: counted as errors (lost) and reported.
    fn abandon(&mut self, o: usize) {
        let Some(h) = self.sinks[o].held_mut() else { return };
        let n = h.abandon();
        if n == 0 {
            return;
        }
        self.abandoned = true;
        // Given up, not delivered: no `output_resumed` follows.
        self.waiting[o] = Waiting::default();
        let st = &self.stats.outputs[o];
        st.errors.fetch_add(n, Relaxed);
        st.held.store(0, Relaxed);
        let msg = format!(
            "the engine is stopping and the output still cannot take its records after the {:.0} s grace: {n} records lost",
            self.gate.grace.as_secs_f64()
        );
        self.report(o, Kind::OutputGaveUp, &format!(",\"lost\":{n}"), &msg);
    }

    /// Writes `{log}` out now: for a record made while the writer waits on an output (the
    /// writer's loop, which flushes `{log}`, waits on it).
    fn flush_log(&mut self) {
        if let Some(log) = self.sinks.get_mut(crate::shard::LOG_OUTPUT.index()) {
            let _ = log.flush();
        }
    }

    /// A `{log}` record about output `o` (and a line on stderr).
    fn report(&mut self, o: usize, kind: Kind, extra: &str, message: &str) {
        report_to(&mut self.sinks, &self.stats, o, kind, extra, message);
    }
}

/// A `{log}` record about output `o` (and a line on stderr), for callers that hold parts of
/// [`Outputs`].
fn report_to(sinks: &mut [Sink], stats: &Stats, o: usize, kind: Kind, extra: &str, message: &str) {
    {
        use crate::primitives::json::write_str;
        let mut line = Vec::with_capacity(160);
        crate::diag::head(kind, &mut line);
        line.extend_from_slice(b",\"output\":");
        write_str(
            &mut line,
            stats.output_tags.get(o).map_or("", |t| t.as_str()).as_bytes(),
        );
        line.extend_from_slice(extra.as_bytes());
        line.extend_from_slice(b",\"message\":");
        write_str(&mut line, message.as_bytes());
        line.push(b'}');
        let log = crate::shard::LOG_OUTPUT.index();
        // A report about the engine's own log or stats file: stderr is where it can be read
        // (the log may be the file that cannot be written), past the limit of stderr copies.
        if o < crate::config::types::OutputId::INTERNAL {
            crate::diag::stderr_report_always(&line);
        } else {
            crate::diag::stderr_report(&line);
        }
        let mut line = crate::diag::log_line(&line).into_owned();
        line.push(b'\n');
        // Not through `write`: a report must not wait, nor report about itself.
        if o != log
            && let Some(s) = sinks.get_mut(log)
        {
            let _ = s.write(&line);
        }
    }
}

/// Merges and writes.
pub(crate) struct Writer {
    out: Outputs,
    /// The writer's parker (the workers wake it after a push; the same one in every link).
    me: Arc<crate::primitives::backoff::Parker>,
    /// Per output: whether it waits for input order.
    ordered: Vec<bool>,
    links: Vec<WorkerLink>,
    /// Batches waiting for their turn (ordered outputs), and the input order reached.
    merge: merge::Merge,
    stats: Arc<Stats>,
    diag_closed: Arc<std::sync::Mutex<bool>>,
    rotate: Arc<AtomicBool>,
    /// Published after each flush: per input, the events below this sequence number are
    /// written (tail checkpoints and Kafka commits wait for it).
    marks: crate::counters::Watermarks,
    /// Watermarks waiting for Kafka acknowledgements: (next_seq per input, messages sent per
    /// sink) at a flush; published once every sink has delivered that many.
    acks: VecDeque<(Vec<u64>, Vec<u64>)>,
    /// End-to-end latency per output, merged into the shared histograms once a second
    /// (None when histograms are off).
    lat: Option<Vec<crate::counters::latency::LocalHist>>,
    /// The same per script that wrote the record (user outputs only).
    lat_script: Vec<crate::counters::latency::LocalHist>,
    last_merge: Instant,
    /// Per output: (written, errors) at the previous flush, to tell a working output (records
    /// written and no error since) from a failing one for `/health`.
    health_prev: Vec<(u64, u64)>,
    /// Per output with acknowledgements (Kafka, Parquet): the delivered count last seen, since
    /// when it has not moved while records wait, and since when its stall was reported.
    stalls: Vec<(u64, Instant, Option<Instant>)>,
    /// Workers reported stuck (`report_stuck_workers`) and still so.
    stuck_reported: Vec<usize>,
    /// Set once the pipeline has started (see [`Output::begin`]).
    started: Arc<AtomicBool>,
    /// The outputs were told.
    begun: bool,
}

/// Records sent and not acknowledged for this long make an output "waiting" (reported, and
/// failing for `/health`) until acknowledgements move again.
const STALL_AFTER: Duration = Duration::from_secs(10);

/// What the writer is made of.
pub(crate) struct WriterParts {
    /// The sinks with their policies (`{log}`, `{stats}`, then the user outputs).
    pub out: Outputs,
    /// Per output: whether it waits for input order.
    pub ordered: Vec<bool>,
    /// The writer's end of each worker's rings.
    pub links: Vec<WorkerLink>,
    /// How many inputs the pipeline has.
    pub inputs: usize,
    pub stats: Arc<Stats>,
    /// `{log}` records of the readers and the engine.
    pub diag: Receiver<Vec<u8>>,
    /// Set, under its lock, once the writer has taken the last record of `diag`: a record
    /// sent later would be dropped with the channel, so its sender writes it to the file
    /// itself (see `engine::append_record`).
    pub diag_closed: Arc<std::sync::Mutex<bool>>,
    /// Set by SIGUSR1.
    pub rotate: Arc<AtomicBool>,
    pub stats_interval: Duration,
    /// Where the written watermarks are published (tail checkpoints and Kafka commits).
    pub marks: crate::counters::Watermarks,
    /// Set once the pipeline has started (see [`Output::begin`]).
    pub started: Arc<AtomicBool>,
}

impl Writer {
    pub(crate) fn new(parts: WriterParts) -> Self {
        let WriterParts {
            out,
            ordered,
            links,
            inputs,
            stats,
            diag,
            diag_closed,
            rotate,
            stats_interval,
            marks,
            started,
        } = parts;
        let mut out = out;
        out.stats_clock = StatsClock::new(stats_interval);
        out.diag = Some(diag);
        let merge = merge::Merge::new(links.len(), inputs);
        Writer {
            me: links
                .first()
                .map_or_else(crate::primitives::backoff::Parker::new, |l| Arc::clone(&l.writer)),
            out,
            ordered,
            links,
            merge,
            diag_closed,
            rotate,
            lat: stats.histograms.then(|| {
                stats
                    .output_latency
                    .iter()
                    .map(|_| crate::counters::latency::LocalHist::default())
                    .collect()
            }),
            lat_script: if stats.histograms {
                stats.script_e2e.iter().map(|_| Default::default()).collect()
            } else {
                Vec::new()
            },
            last_merge: Instant::now(),
            marks,
            acks: VecDeque::new(),
            stats,
            health_prev: Vec::new(),
            stalls: Vec::new(),
            stuck_reported: Vec::new(),
            started,
            begun: false,
        }
    }

    /// Tells the outputs, once, that the pipeline has started.
    fn begin_outputs(&mut self) {
        if self.begun || !self.started.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        self.begun = true;
        for o in 0..self.out.sinks.len() {
            if let Err(e) = self.out.sinks[o].begin() {
                let msg = format!("cannot empty {} at the start: {e}", self.out.sinks[o].name());
                self.out.report(o, Kind::OutputError, "", &msg);
            }
        }
    }

    /// Records that record `r`, read at `read_ns`, was handed to its sink: per output, and per
    /// script for user outputs.
    #[inline]
    fn record_latency(
        lat: &mut Option<Vec<crate::counters::latency::LocalHist>>,
        lat_script: &mut [crate::counters::latency::LocalHist],
        r: &crate::shard::OutRec,
        read_ns: u64,
        now: u64,
    ) {
        if read_ns == 0 {
            return;
        }
        let ns = now.saturating_sub(read_ns);
        if let Some(h) = lat.as_mut().and_then(|v| v.get_mut(r.output.index())) {
            h.record(ns);
            if r.output.is_user()
                && let Some(h) = lat_script.get_mut(r.script as usize)
            {
                h.record(ns);
            }
        }
    }

    fn merge_latency(&mut self) {
        if let Some(v) = self.lat.as_mut() {
            for (shared, local) in self.stats.output_latency.iter().zip(v) {
                shared.absorb(local);
            }
            for (shared, local) in self.stats.script_e2e.iter().zip(&mut self.lat_script) {
                shared.absorb(local);
            }
        }
        self.last_merge = Instant::now();
    }

    fn write(&mut self, output: OutputId, bytes: &[u8]) {
        self.out.write(output, bytes);
    }

    /// The clock for end-to-end latency (0 when histograms are off: no clock read).
    fn lat_now(&self) -> u64 {
        if self.lat.is_some() {
            crate::counters::latency::mono_ns()
        } else {
            0
        }
    }

    /// Takes what the workers produced; writes unordered records at once. Returns whether
    /// anything arrived.
    fn receive(&mut self) -> bool {
        let mut got = false;
        let now = self.lat_now();
        let Writer {
            out,
            ordered,
            links,
            merge,
            lat,
            lat_script,
            ..
        } = self;
        let ordered = |o: OutputId| ordered.get(o.sink().index()) == Some(&true);
        for (w, link) in links.iter_mut().enumerate() {
            while let Ok(batch) = link.from.pop() {
                got = true;
                link.worker.wake();
                let back = merge.take(w, batch, ordered, |r, bytes, read_ns| {
                    out.write_rec(r, bytes);
                    Self::record_latency(lat, lat_script, r, read_ns, now);
                });
                if let Some(mut b) = back {
                    b.clear();
                    let _ = link.back.push(b);
                }
            }
        }
        got
    }

    /// Writes every ordered record whose turn has come (and the records outside any event
    /// that waited for them); with `end`, also what still waits.
    fn emit_ordered(&mut self, end: bool) {
        let now = self.lat_now();
        let Writer {
            out,
            ordered,
            links,
            merge,
            lat,
            lat_script,
            ..
        } = self;
        let ordered = |o: OutputId| ordered.get(o.sink().index()) == Some(&true);
        let mut write = |r: &crate::shard::OutRec, bytes: &[u8], read_ns: u64| {
            out.write_rec(r, bytes);
            Self::record_latency(lat, lat_script, r, read_ns, now);
        };
        let mut recycle = |w: usize, mut b: OutBatch| {
            b.clear();
            let _ = links[w].back.push(b);
        };
        merge.emit(ordered, &mut write, &mut recycle);
        if end {
            merge.release_all(ordered, &mut write, &mut recycle);
        }
    }

    /// Reports a worker that has been on one batch for over 10 s (a script's `loop()` that
    /// does not return), once per such spell (`worker_stuck`; `/health` says it meanwhile).
    fn report_stuck_workers(&mut self) {
        let stuck = self.stats.stuck_workers();
        self.stuck_reported.retain(|k| stuck.iter().any(|(s, _)| s == k));
        for (k, secs) in stuck {
            if self.stuck_reported.contains(&k) {
                continue;
            }
            self.stuck_reported.push(k);
            let script = self.stats.worker_script(k);
            let msg = format!(
                "worker {k} has been on one batch of events for {secs} s{}: a script's loop() (or a timer's, or the setup() of a script being reloaded) that does not return? Its events and those after them wait; a stop ends the engine once it has been so for 30 s (exit status 3)",
                script
                    .as_deref()
                    .map_or(String::new(), |s| format!(", last in a call of {s}"))
            );
            let k_text = k.to_string();
            let mut fields = vec![("worker", k_text.as_str())];
            if let Some(s) = script.as_deref() {
                fields.push(("script", s));
            }
            let mut line = crate::diag::line(Kind::WorkerStuck, &fields, &msg);
            crate::diag::stderr_report(&line);
            line.push(b'\n');
            self.write(crate::shard::LOG_OUTPUT, &line);
        }
    }

    fn drain_diag(&mut self) {
        self.out.drain_diag();
    }

    fn flush(&mut self) {
        let mut all_ok = true;
        if self.health_prev.len() < self.out.sinks.len() {
            self.health_prev.resize(self.out.sinks.len(), (0, 0));
        }
        for i in 0..self.out.sinks.len() {
            if self.out.sinks[i].held().is_some() {
                // File and socket outputs: a failed delivery keeps the records held.
                let r = self.out.sinks[i].flush();
                all_ok &= r.is_ok();
                self.out.settle(i, r, true);
                if let Some(msg) = self.out.sinks[i].take_notice() {
                    self.out.report(i, Kind::OutputReopened, "", &msg);
                }
                continue;
            }
            let flushed = self.out.sinks[i].flush();
            let failures = self.out.sinks[i].new_failures();
            // Records given up end a wait too, but the output does not deliver again.
            let gave_up = failures.as_ref().is_some_and(|(n, _)| *n > 0);
            let mut failed_now = self.stalled(i, gave_up);
            if let Err(e) = flushed {
                all_ok = false;
                failed_now = true;
                self.stats.outputs[i].last_error_ms.store(self.stats.now_ms(), Relaxed);
                let n = self.stats.outputs[i].errors.fetch_add(1, Relaxed) + 1;
                if n.is_power_of_two() {
                    self.out
                        .report(i, Kind::OutputError, &format!(",\"errors\":{n}"), &e.to_string());
                }
            }
            if let Some((failed, msg)) = failures {
                failed_now = true;
                self.stats.outputs[i].last_error_ms.store(self.stats.now_ms(), Relaxed);
                let n = self.stats.outputs[i].errors.fetch_add(failed, Relaxed) + failed;
                // They were counted as written when handed over: a record is one or the other.
                let w = &self.stats.outputs[i].written;
                let _ = w.fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_sub(failed)));
                self.out.report(i, Kind::OutputError, &format!(",\"errors\":{n}"), &msg);
            }
            // Records written and no error since the previous flush: the output works (again).
            let o = &self.stats.outputs[i];
            let now = (o.written.load(Relaxed), o.errors.load(Relaxed));
            if let Some(prev) = self.health_prev.get_mut(i) {
                if !failed_now
                    && now.1 == prev.1
                    && now.0 > prev.0
                    && o.last_error_ms.load(Relaxed) >= o.last_ok_ms.load(Relaxed)
                {
                    o.last_ok_ms.store(self.stats.now_ms() + 1, Relaxed);
                }
                *prev = now;
            }
        }
        // Everything below next_seq has been handed to the sinks and flushed: tail checkpoints
        // and Kafka commits may pass it once the Kafka outputs have acknowledged what was sent
        // so far and the Parquet outputs have completed the files holding it (rows of a file
        // in progress are not readable yet). After a failed flush they wait.
        if all_ok {
            let sent: Vec<u64> = self.out.sinks.iter().map(|s| s.sent()).collect();
            if self.acks.back().is_none_or(|(seqs, _)| *seqs != self.merge.next_seq()) {
                self.acks.push_back((self.merge.next_seq().to_vec(), sent));
            }
        }
        let delivered: Vec<u64> = self.out.sinks.iter().map(|s| s.passable()).collect();
        while let Some((seqs, sent)) = self.acks.front().filter(|_| !self.out.abandoned) {
            if sent.iter().zip(&delivered).any(|(s, d)| d < s) {
                break;
            }
            for (m, &n) in self.marks.iter().zip(seqs) {
                m.store(n, std::sync::atomic::Ordering::Release);
            }
            self.acks.pop_front();
        }
    }

    fn write_stats(&mut self) {
        self.merge_latency();
        self.out.write_stats_line();
    }

    /// Runs until every worker has finished and everything is written.
    pub(crate) fn run(mut self) -> Vec<Sink> {
        self.me.register();
        let mut last_flush = Instant::now();
        let mut backoff = Backoff::default();
        loop {
            // The engine's own records first: one sent before a worker's record (a reload's
            // request before its outcome) is written before it.
            self.drain_diag();
            self.begin_outputs();
            let got = self.receive();
            self.emit_ordered(false);
            self.out.line_limits_due(false);
            if self.rotate.swap(false, Relaxed) {
                for o in 0..self.out.sinks.len() {
                    if let Some(Err(e)) = self.out.sinks[o].rotate() {
                        let msg = format!("rotation (SIGUSR1) of {} failed: {e}", self.out.sinks[o].name());
                        self.out.report(o, Kind::OutputError, "", &msg);
                    }
                }
            }
            if self.out.stats_clock.due() {
                self.write_stats();
            }
            if self.lat.is_some() && self.last_merge.elapsed() >= crate::counters::latency::MERGE_EVERY {
                self.merge_latency();
            }
            if last_flush.elapsed() >= FLUSH_INTERVAL {
                self.flush();
                self.report_stuck_workers();
                last_flush = Instant::now();
            }
            if got {
                backoff.reset();
                continue;
            }
            let done = self.links.iter().all(|l| l.from.is_abandoned() && l.from.is_empty());
            if done {
                self.out.gate.finishing = true;
                self.begin_outputs();
                // A last look: workers may have pushed between our pop and their exit.
                self.receive();
                self.emit_ordered(true);
                {
                    let closed = Arc::clone(&self.diag_closed);
                    let mut closed = closed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    self.drain_diag();
                    *closed = true;
                }
                self.out.line_limits_due(true);
                break;
            }
            let links = &self.links;
            backoff.wait_on(&self.me, || links.iter().any(|l| !l.from.is_empty()));
        }
        self.flush();
        // Outputs that could not deliver get until the grace has passed.
        let internal = crate::shard::LOG_OUTPUT.index()..=crate::shard::STATS_OUTPUT.index();
        for o in (0..self.out.sinks.len()).filter(|o| !internal.contains(o)) {
            self.out.drain(o);
        }
        // The user's outputs first: what finishing them loses (a Parquet file that cannot be
        // completed) is reported by the flush after and counted in the last stats line.
        self.close_outputs(|i| !internal.contains(&i));
        // Publish the final watermarks (everything is acknowledged now).
        self.flush();
        self.write_stats();
        for o in internal.clone() {
            self.out.drain(o);
        }
        self.close_outputs(|i| internal.contains(&i));
        self.flush();
        self.out.sinks
    }

    fn close_outputs(&mut self, which: impl Fn(usize) -> bool) {
        for i in (0..self.out.sinks.len()).filter(|&i| which(i)) {
            let closed = self.out.sinks[i].close();
            let s = &mut self.out.sinks[i];
            // Records sent and never acknowledged are lost, not written: a record is one or
            // the other (failures the client reported are settled by the flush after this,
            // through `new_failures`).
            // Kafka: what was sent and not acknowledged (other outputs settle their losses
            // by `new_failures`; a failed close counts once).
            let unacked = match s.stall_after() {
                Some(_) => s.sent().saturating_sub(s.delivered()),
                None => 0,
            };
            if let Err(e) = closed {
                let lost = unacked.max(1);
                self.stats.outputs[i].errors.fetch_add(lost, Relaxed);
                let w = &self.stats.outputs[i].written;
                let _ = w.fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_sub(unacked)));
                let msg = match s.stall_after() {
                    Some(_) => format!("{e}; {unacked} records sent were never acknowledged: lost"),
                    None => format!("{e} (closing the output failed)"),
                };
                self.out
                    .report(i, Kind::OutputError, &format!(",\"errors\":{lost}"), &msg);
            }
        }
    }

    /// Whether output `i` cannot deliver now: it says why ([`Output::waiting`]), or it has
    /// records sent and not acknowledged for its [`Output::stall_after`] without any
    /// acknowledgement (Kafka). Reported once as `output_waiting` (with the reason, or what
    /// its client last saw), `output_resumed` when it delivers again (not when the wait ended
    /// because what it waited for was given up: `gave_up`).
    fn stalled(&mut self, i: usize, gave_up: bool) -> bool {
        if self.stalls.len() < self.out.sinks.len() {
            self.stalls.resize(self.out.sinks.len(), (0, Instant::now(), None));
        }
        let s = &self.out.sinks[i];
        let (sent, delivered) = (s.sent(), s.delivered());
        let st = &mut self.stalls[i];
        let acks_move = delivered != st.0 || sent <= delivered;
        if acks_move {
            (st.0, st.1) = (delivered, Instant::now());
        }
        let why = match (s.waiting(), s.stall_after()) {
            (Some(why), _) => Some(why),
            (None, Some(after)) if !acks_move && st.1.elapsed() >= after => {
                let last = s.last_problem().map(|p| format!(" (last: {p})")).unwrap_or_default();
                Some(format!(
                    "{} records sent and not acknowledged for {} s{last}; they are kept and retried",
                    sent - delivered,
                    after.as_secs()
                ))
            }
            _ => None,
        };
        let Some(why) = why else {
            if let Some(since) = st.2.take()
                && !gave_up
            {
                let secs = since.elapsed().as_secs_f64();
                let msg = format!("{}: delivering again after {secs:.1} s", s.name());
                self.out
                    .report(i, Kind::OutputResumed, &format!(",\"seconds\":{secs:.3}"), &msg);
                // Healthy again now, not only once a next record is written (an idle engine
                // would stay "failing").
                self.stats.outputs[i].last_ok_ms.store(self.stats.now_ms() + 1, Relaxed);
            }
            return false;
        };
        if st.2.is_none() {
            // Since when: the output's own reason is seen now; a stall began when the
            // acknowledgements stopped.
            st.2 = Some(if s.waiting().is_some() { Instant::now() } else { st.1 });
            let msg = format!("{}: {why} (nothing passes the watermark meanwhile)", s.name());
            self.out.report(
                i,
                Kind::OutputWaiting,
                &format!(",\"waiting\":{}", sent - delivered),
                &msg,
            );
        }
        self.stats.outputs[i].last_error_ms.store(self.stats.now_ms(), Relaxed);
        true
    }
}
