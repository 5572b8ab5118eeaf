//! The writer: one thread that owns every sink, merges the workers' record streams so that
//! each ordered output receives its events in input order (by sequence number, with the
//! end-of-event records as watermarks), flushes at least every 100 ms, writes the periodic
//! stats line and rotates file outputs on SIGUSR1.

pub mod file;
pub mod parquet;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use rtrb::{Consumer, Producer};

use crate::metrics::Stats;
use crate::shard::{Backoff, END_OF_EVENT, NO_INPUT, OutBatch, STATS_OUTPUT};
pub use file::FileSink;

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

fn write_to(sinks: &mut [FileSink], stats: &Stats, output: u32, bytes: &[u8]) {
    let o = output as usize;
    if let Some(s) = sinks.get_mut(o) {
        match s.write(bytes) {
            Ok(()) => stats.outputs[o].written.fetch_add(1, Relaxed),
            Err(_) => stats.outputs[o].errors.fetch_add(1, Relaxed),
        };
    }
}

/// Merges and writes.
pub struct Writer {
    pub sinks: Vec<FileSink>,
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
}

impl Writer {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        sinks: Vec<FileSink>,
        ordered: Vec<bool>,
        links: Vec<WorkerLink>,
        inputs: usize,
        stats: Arc<Stats>,
        diag: Receiver<Vec<u8>>,
        rotate: Arc<AtomicBool>,
        stats_interval: Duration,
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
            stats,
            diag,
            rotate,
            stats_interval,
        }
    }

    fn write(&mut self, output: u32, bytes: &[u8]) {
        write_to(&mut self.sinks, &self.stats, output, bytes);
    }

    /// Takes what the workers produced; writes unordered records at once. Returns whether
    /// anything arrived.
    fn receive(&mut self) -> bool {
        let mut got = false;
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
        for (i, s) in self.sinks.iter_mut().enumerate() {
            if s.flush().is_err() {
                self.stats.outputs[i].errors.fetch_add(1, Relaxed);
            }
        }
    }

    fn write_stats(&mut self) {
        let mut line = self.stats.line();
        line.push(b'\n');
        self.write(STATS_OUTPUT, &line);
    }

    /// Runs until every worker has finished and everything is written.
    pub fn run(mut self) -> Vec<FileSink> {
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
                    if let Err(e) = s.rotate() {
                        crate::metrics::stderr_report(
                            format!("rotation of {} failed: {e}", s.path.display()).as_bytes(),
                        );
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
        self.write_stats();
        self.flush();
        self.sinks
    }
}
