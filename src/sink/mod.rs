//! The writer: one thread that owns every sink, merges the workers' record streams so that
//! each ordered output receives its events in input order (by sequence number, with the
//! end-of-event records as watermarks), flushes at least every 100 ms, writes the periodic
//! stats line and rotates file outputs on SIGUSR1.

pub mod file;
pub mod ipc;
pub mod kafka;
pub mod parquet;
pub mod zfile;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use rtrb::{Consumer, Producer};

use crate::metrics::Stats;
use crate::shard::{Backoff, END_OF_EVENT, NO_INPUT, OutBatch, STATS_OUTPUT};
pub use file::FileSink;
pub use ipc::{IpcKind, IpcSink};
pub use kafka::{KafkaKey, KafkaSink};
pub use zfile::ZfileSink;

/// One output.
pub enum Sink {
    File(FileSink),
    Zfile(ZfileSink),
    Ipc(IpcSink),
    Kafka(Box<KafkaSink>),
    Parquet(Box<parquet::ParquetSink>),
}

impl Sink {
    /// Writes one record (ending with its newline).
    pub fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::File(s) => s.write(bytes),
            Sink::Zfile(s) => s.write(bytes),
            Sink::Ipc(s) => s.write(bytes),
            Sink::Kafka(s) => s.write(bytes),
            Sink::Parquet(s) => s.write(bytes),
        }
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::File(s) => s.flush(),
            Sink::Zfile(s) => s.flush(),
            Sink::Ipc(s) => s.flush(),
            Sink::Kafka(s) => s.flush(),
            Sink::Parquet(s) => s.flush(),
        }
    }

    /// Records lost since the last call after they were handed over (Kafka: not delivered;
    /// Parquet: in a file that could not be written), with a message.
    pub fn new_failures(&mut self) -> Option<(u64, String)> {
        match self {
            Sink::Kafka(k) => k.new_failures(),
            Sink::Parquet(p) => p.new_failures(),
            _ => None,
        }
    }

    /// SIGUSR1: file outputs are renamed and reopened (the new name is returned); others
    /// ignore it.
    pub fn rotate(&mut self) -> Option<std::io::Result<std::path::PathBuf>> {
        match self {
            Sink::File(s) => Some(s.rotate()),
            Sink::Zfile(s) => Some(s.rotate()),
            // The current Parquet file is finished; the next event starts a new one.
            Sink::Parquet(s) => Some(s.close().map(|()| s.dir().to_path_buf())),
            Sink::Ipc(_) | Sink::Kafka(_) => None,
        }
    }

    /// At exit: flushes and finishes what needs finishing (gzip trailers).
    pub fn close(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Zfile(s) => s.close(),
            Sink::Kafka(s) => s.close(),
            Sink::Parquet(s) => s.close(),
            other => other.flush(),
        }
    }

    /// Records handed to a sink whose records become durable later than its flush (Kafka:
    /// when the broker acknowledges; Parquet: when the file is complete); 0 for the others.
    pub fn sent(&self) -> u64 {
        match self {
            Sink::Kafka(k) => k.sent,
            Sink::Parquet(p) => p.sent,
            _ => 0,
        }
    }

    /// How many of [`sent`](Self::sent) are durable.
    pub fn delivered(&self) -> u64 {
        match self {
            Sink::Kafka(k) => k.delivered(),
            Sink::Parquet(p) => p.delivered,
            _ => 0,
        }
    }

    /// What to call it in messages.
    pub fn name(&self) -> String {
        match self {
            Sink::File(s) => s.path.display().to_string(),
            Sink::Zfile(s) => s.path.display().to_string(),
            Sink::Ipc(s) => s.path.display().to_string(),
            Sink::Kafka(s) => s.name.clone(),
            Sink::Parquet(s) => format!("parquet://{}", s.dir().display()),
        }
    }
}

/// How often buffered output reaches the files.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// The writer's end of one worker's rings.
pub struct WorkerLink {
    pub from: Consumer<OutBatch>,
    pub back: Producer<OutBatch>,
}

/// A batch being emitted, with the index of its next record.
struct Pending {
    batch: OutBatch,
    next: usize,
}

fn write_to(sinks: &mut [Sink], stats: &Stats, output: u32, bytes: &[u8]) {
    let o = output as usize;
    let Some(s) = sinks.get_mut(o) else { return };
    match s.write(bytes) {
        Ok(()) => {
            stats.outputs[o].written.fetch_add(1, Relaxed);
        }
        Err(e) => {
            let n = stats.outputs[o].errors.fetch_add(1, Relaxed) + 1;
            stats.outputs[o].last_error_ms.store(stats.now_ms(), Relaxed);
            // The 1st, 2nd, 4th, 8th, ... failure of an output is reported to {log}.
            if n.is_power_of_two() && o != crate::shard::LOG_OUTPUT as usize {
                report_output_error(sinks, stats, o, n, &e);
            }
        }
    }
}

fn report_output_error(sinks: &mut [Sink], stats: &Stats, o: usize, n: u64, e: &std::io::Error) {
    use crate::lua::json::write_str;
    let mut line = Vec::with_capacity(160);
    line.extend_from_slice(b"{\"time\":");
    write_str(&mut line, crate::metrics::utc_now().as_bytes());
    line.extend_from_slice(b",\"level\":\"error\",\"kind\":\"output_error\",\"output\":");
    write_str(
        &mut line,
        stats.output_tags.get(o).map_or("", |t| t.as_str()).as_bytes(),
    );
    line.extend_from_slice(format!(",\"errors\":{n},\"message\":").as_bytes());
    write_str(&mut line, e.to_string().as_bytes());
    line.push(b'}');
    crate::metrics::stderr_report(&line);
    line.push(b'\n');
    let log = crate::shard::LOG_OUTPUT as usize;
    if let Some(s) = sinks.get_mut(log) {
        let _ = s.write(&line);
        stats.outputs[log].written.fetch_add(1, Relaxed);
    }
}

/// Merges and writes.
pub struct Writer {
    pub sinks: Vec<Sink>,
    /// Per output: whether it waits for input order.
    ordered: Vec<bool>,
    links: Vec<WorkerLink>,
    /// Per worker, per input: batches received and not yet fully written.
    pending: Vec<Vec<VecDeque<Pending>>>,
    /// Per input: the next sequence number to write.
    next_seq: Vec<u64>,
    stats: Arc<Stats>,
    diag: Receiver<Vec<u8>>,
    rotate: Arc<AtomicBool>,
    stats_interval: Duration,
    /// Published after each flush: per input, the events below this sequence number are
    /// written (tail checkpoints and Kafka commits wait for it).
    marks: crate::source::checkpoint::Watermarks,
    /// Watermarks waiting for Kafka acknowledgements: (next_seq per input, messages sent per
    /// sink) at a flush; published once every sink has delivered that many.
    acks: VecDeque<(Vec<u64>, Vec<u64>)>,
    /// End-to-end latency per output, merged into the shared histograms once a second
    /// (None when histograms are off).
    lat: Option<Vec<crate::metrics::latency::LocalHist>>,
    /// The same per script that wrote the record (user outputs only).
    lat_script: Vec<crate::metrics::latency::LocalHist>,
    last_merge: Instant,
    /// Per output: (written, errors) at the previous flush, to tell a working output (records
    /// written and no error since) from a failing one for `/health`.
    health_prev: Vec<(u64, u64)>,
}

impl Writer {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        sinks: Vec<Sink>,
        ordered: Vec<bool>,
        links: Vec<WorkerLink>,
        inputs: usize,
        stats: Arc<Stats>,
        diag: Receiver<Vec<u8>>,
        rotate: Arc<AtomicBool>,
        stats_interval: Duration,
        marks: crate::source::checkpoint::Watermarks,
    ) -> Self {
        let pending = links
            .iter()
            .map(|_| (0..inputs).map(|_| VecDeque::new()).collect())
            .collect();
        Writer {
            sinks,
            ordered,
            links,
            pending,
            next_seq: vec![0; inputs],
            diag,
            rotate,
            stats_interval,
            lat: stats.histograms.then(|| {
                stats
                    .output_latency
                    .iter()
                    .map(|_| crate::metrics::latency::LocalHist::default())
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
        }
    }

    /// Records that record `r`, read at `read_ns`, was handed to its sink: per output, and per
    /// script for user outputs.
    #[inline]
    fn record_latency(
        lat: &mut Option<Vec<crate::metrics::latency::LocalHist>>,
        lat_script: &mut [crate::metrics::latency::LocalHist],
        r: &crate::shard::OutRec,
        read_ns: u64,
        now: u64,
    ) {
        if read_ns == 0 {
            return;
        }
        let ns = now.saturating_sub(read_ns);
        if let Some(h) = lat.as_mut().and_then(|v| v.get_mut(r.output as usize)) {
            h.record(ns);
            if r.output >= 2
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

    fn write(&mut self, output: u32, bytes: &[u8]) {
        write_to(&mut self.sinks, &self.stats, output, bytes);
    }

    /// Takes what the workers produced; writes unordered records at once. Returns whether
    /// anything arrived.
    fn receive(&mut self) -> bool {
        let mut got = false;
        let now = if self.lat.is_some() {
            crate::metrics::latency::mono_ns()
        } else {
            0
        };
        for w in 0..self.links.len() {
            while let Ok(batch) = self.links[w].from.pop() {
                got = true;
                let mut has_ordered = false;
                for r in &batch.recs {
                    if r.output == END_OF_EVENT
                        || self.ordered.get(r.output as usize) == Some(&true) && batch.input != NO_INPUT
                    {
                        has_ordered = true;
                    } else {
                        let bytes = &batch.data[r.start as usize..r.end as usize];
                        write_to(&mut self.sinks, &self.stats, r.output, bytes);
                        Self::record_latency(&mut self.lat, &mut self.lat_script, r, batch.read_ns, now);
                    }
                }
                if has_ordered {
                    self.pending[w][batch.input as usize].push_back(Pending { batch, next: 0 });
                } else {
                    self.recycle(w, batch);
                }
            }
        }
        got
    }

    fn recycle(&mut self, w: usize, mut batch: OutBatch) {
        batch.clear();
        let _ = self.links[w].back.push(batch);
    }

    /// Writes every ordered record whose turn has come.
    fn emit_ordered(&mut self) {
        let now = if self.lat.is_some() {
            crate::metrics::latency::mono_ns()
        } else {
            0
        };
        for input in 0..self.next_seq.len() {
            loop {
                let want = self.next_seq[input];
                let Some(w) = (0..self.pending.len()).find(|&w| {
                    self.pending[w][input]
                        .front()
                        .is_some_and(|p| p.batch.recs.get(p.next).is_some_and(|r| r.seq == want))
                }) else {
                    break;
                };
                // Write this event's records from worker w, up to its end marker.
                while let Some(p) = self.pending[w][input].front_mut() {
                    let Some(r) = p.batch.recs.get(p.next).copied() else {
                        let done = self.pending[w][input].pop_front().map(|p| p.batch);
                        if let Some(b) = done {
                            self.recycle(w, b);
                        }
                        continue;
                    };
                    if r.seq != want {
                        break;
                    }
                    p.next += 1;
                    if r.output == END_OF_EVENT {
                        self.next_seq[input] += 1;
                        if p.next == p.batch.recs.len() {
                            let done = self.pending[w][input].pop_front().map(|p| p.batch);
                            if let Some(b) = done {
                                self.recycle(w, b);
                            }
                        }
                        break;
                    }
                    if self.ordered.get(r.output as usize) == Some(&true) {
                        let p = self.pending[w][input].front().expect("front checked above");
                        let bytes = &p.batch.data[r.start as usize..r.end as usize];
                        write_to(&mut self.sinks, &self.stats, r.output, bytes);
                        Self::record_latency(&mut self.lat, &mut self.lat_script, &r, p.batch.read_ns, now);
                    }
                }
            }
        }
    }

    fn drain_diag(&mut self) {
        while let Ok(line) = self.diag.try_recv() {
            let mut l = line;
            l.push(b'\n');
            self.write(crate::shard::LOG_OUTPUT, &l);
        }
    }

    fn flush(&mut self) {
        let mut all_ok = true;
        if self.health_prev.len() < self.sinks.len() {
            self.health_prev.resize(self.sinks.len(), (0, 0));
        }
        for i in 0..self.sinks.len() {
            let mut failed_now = false;
            if let Err(e) = self.sinks[i].flush() {
                all_ok = false;
                failed_now = true;
                self.stats.outputs[i].last_error_ms.store(self.stats.now_ms(), Relaxed);
                let n = self.stats.outputs[i].errors.fetch_add(1, Relaxed) + 1;
                if n.is_power_of_two() {
                    report_output_error(&mut self.sinks, &self.stats, i, n, &e);
                }
            }
            if let Some((failed, msg)) = self.sinks[i].new_failures() {
                failed_now = true;
                self.stats.outputs[i].last_error_ms.store(self.stats.now_ms(), Relaxed);
                let n = self.stats.outputs[i].errors.fetch_add(failed, Relaxed) + failed;
                report_output_error(&mut self.sinks, &self.stats, i, n, &std::io::Error::other(msg));
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
            let sent: Vec<u64> = self.sinks.iter().map(Sink::sent).collect();
            if self.acks.back().is_none_or(|(seqs, _)| *seqs != self.next_seq) {
                self.acks.push_back((self.next_seq.clone(), sent));
            }
        }
        let delivered: Vec<u64> = self.sinks.iter().map(Sink::delivered).collect();
        while let Some((seqs, sent)) = self.acks.front() {
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
        let mut line = self.stats.line();
        line.push(b'\n');
        self.write(STATS_OUTPUT, &line);
    }

    /// Runs until every worker has finished and everything is written.
    pub fn run(mut self) -> Vec<Sink> {
        let mut last_flush = Instant::now();
        let start = Instant::now();
        let mut last_stats = Instant::now();
        let mut first_stats = false;
        let mut backoff = Backoff::default();
        loop {
            let got = self.receive();
            self.emit_ordered();
            self.drain_diag();
            if self.rotate.swap(false, Relaxed) {
                for s in &mut self.sinks {
                    if let Some(Err(e)) = s.rotate() {
                        crate::metrics::stderr_report(format!("rotation of {} failed: {e}", s.name()).as_bytes());
                    }
                }
            }
            if !first_stats && start.elapsed() >= Duration::from_secs(1) {
                first_stats = true;
                self.write_stats();
                last_stats = Instant::now();
            }
            if last_stats.elapsed() >= self.stats_interval {
                self.write_stats();
                last_stats = Instant::now();
            }
            if self.lat.is_some() && self.last_merge.elapsed() >= crate::metrics::latency::MERGE_EVERY {
                self.merge_latency();
            }
            if last_flush.elapsed() >= FLUSH_INTERVAL {
                self.flush();
                last_flush = Instant::now();
            }
            if got {
                backoff.reset();
                continue;
            }
            let done = self.links.iter().all(|l| l.from.is_abandoned() && l.from.is_empty());
            if done {
                // A last look: workers may have pushed between our pop and their exit.
                self.receive();
                self.emit_ordered();
                self.drain_diag();
                break;
            }
            backoff.wait();
        }
        self.flush();
        // The user's outputs first: what finishing them loses (a Parquet file that cannot be
        // completed) is reported by the flush after and counted in the last stats line.
        let internal = crate::shard::LOG_OUTPUT as usize..=crate::shard::STATS_OUTPUT as usize;
        self.close_outputs(|i| !internal.contains(&i));
        // Publish the final watermarks (everything is acknowledged now).
        self.flush();
        self.write_stats();
        self.close_outputs(|i| internal.contains(&i));
        self.flush();
        self.sinks
    }

    fn close_outputs(&mut self, which: impl Fn(usize) -> bool) {
        for (i, s) in self.sinks.iter_mut().enumerate().filter(|(i, _)| which(*i)) {
            if s.close().is_err() {
                self.stats.outputs[i].errors.fetch_add(1, Relaxed);
            }
        }
    }
}
