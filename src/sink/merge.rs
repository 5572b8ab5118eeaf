//! The reorder merge: workers hand over records in their own order; every ordered output must
//! receive them in input order. Each record carries its event's sequence number (per input),
//! and each event ends with an `END_OF_EVENT` record, so that an event with no output still
//! advances the order. Batches wait in per-(worker, input) queues until their turn; records of
//! unordered outputs are written at once. Records outside any input (`setup()`, timers, `{log}`
//! reports) keep their worker's order: they wait until every ordered batch that worker sent
//! before them is written, and go out as soon as it is, before the worker's later events (held
//! in the merge; the worker's ring keeps being drained). So on one worker a timer's record
//! has one place whatever the timing: after the events of the batches before it.

use std::collections::VecDeque;

use crate::shard::{END_OF_EVENT, NO_INPUT, OutBatch, OutRec, OutputId};

/// A batch being emitted, with the index of its next record.
struct Pending {
    batch: OutBatch,
    next: usize,
}

/// Batches waiting for their turn, and the next sequence number of each input.
pub(crate) struct Merge {
    /// Per worker, per input: batches received and not yet fully written.
    pending: Vec<Vec<VecDeque<Pending>>>,
    /// Per input: the next sequence number to write.
    next_seq: Vec<u64>,
    /// Per worker: batches outside any input waiting for that worker's earlier batches, each
    /// with the count of ordered batches per input the worker had sent before it.
    held: Vec<VecDeque<(OutBatch, Vec<u64>)>>,
    /// Per worker, per input: ordered batches taken, and those fully written.
    taken: Vec<Vec<u64>>,
    written: Vec<Vec<u64>>,
}

impl Merge {
    pub(crate) fn new(workers: usize, inputs: usize) -> Merge {
        Merge {
            pending: (0..workers)
                .map(|_| (0..inputs).map(|_| VecDeque::new()).collect())
                .collect(),
            next_seq: vec![0; inputs],
            held: (0..workers).map(|_| VecDeque::new()).collect(),
            taken: vec![vec![0; inputs]; workers],
            written: vec![vec![0; inputs]; workers],
        }
    }

    /// Per input: every event below this sequence number has been written.
    pub(crate) fn next_seq(&self) -> &[u64] {
        &self.next_seq
    }

    /// Whether worker `w` has records waiting (ordered ones for their turn, or ones outside
    /// any input behind them).
    fn waiting(&self, w: usize) -> bool {
        !self.held[w].is_empty() || self.pending[w].iter().any(|q| !q.is_empty())
    }

    /// Writes the held batches whose earlier batches are all written (all of them with `all`:
    /// the run ends), handing each batch to `recycle`.
    fn release(
        &mut self,
        all: bool,
        mut write: impl FnMut(&OutRec, &[u8], u64),
        mut recycle: impl FnMut(usize, OutBatch),
    ) {
        for w in 0..self.held.len() {
            self.release_worker(w, all, &mut write, &mut recycle);
        }
    }

    /// [`release`](Self::release) for worker `w`.
    fn release_worker(
        &mut self,
        w: usize,
        all: bool,
        write: &mut impl FnMut(&OutRec, &[u8], u64),
        recycle: &mut impl FnMut(usize, OutBatch),
    ) {
        while let Some((_, before)) = self.held[w].front() {
            if !all && before.iter().zip(&self.written[w]).any(|(b, done)| done < b) {
                break;
            }
            let Some((b, _)) = self.held[w].pop_front() else { break };
            for r in b.recs.iter().filter(|r| r.output != END_OF_EVENT) {
                write(r, &b.data[r.start as usize..r.end as usize], b.read_ns);
            }
            recycle(w, b);
        }
    }

    /// The run ends: every batch still waiting is written. Ordered records go in sequence
    /// order per input, past sequence numbers that never came (events a reader counted but
    /// never sent must not take the events after them along: those were processed, and are
    /// written); then the held records. [`next_seq`](Self::next_seq) stays at the first
    /// number that never came, so a checkpoint or commit does not pass it (at-least-once).
    pub(crate) fn release_all(
        &mut self,
        ordered: impl Fn(OutputId) -> bool,
        mut write: impl FnMut(&OutRec, &[u8], u64),
        mut recycle: impl FnMut(usize, OutBatch),
    ) {
        for input in 0..self.next_seq.len() {
            let mut first_gap = None;
            let mut last = None;
            loop {
                let mut lowest: Option<u64> = None;
                for w in 0..self.pending.len() {
                    let queue = &mut self.pending[w][input];
                    while queue.front().is_some_and(|p| p.next >= p.batch.recs.len()) {
                        if let Some(done) = queue.pop_front() {
                            self.written[w][input] += 1;
                            recycle(w, done.batch);
                        }
                    }
                    if let Some(r) = queue.front().and_then(|p| p.batch.recs.get(p.next)) {
                        lowest = Some(lowest.map_or(r.seq, |l: u64| l.min(r.seq)));
                    }
                }
                // Each pass writes at least the event `seq` (a pass that could not would
                // find it again: nothing more can go).
                let Some(seq) = lowest.filter(|&l| last != Some(l)) else {
                    break;
                };
                last = Some(seq);
                if seq > self.next_seq[input] {
                    first_gap.get_or_insert(self.next_seq[input]);
                    self.next_seq[input] = seq;
                }
                self.emit(&ordered, &mut write, &mut recycle);
            }
            if let Some(gap) = first_gap {
                self.next_seq[input] = gap;
            }
        }
        self.release(true, write, recycle);
    }

    /// Takes a batch from worker `w`: records of unordered outputs go to `write` at once. The
    /// batch is returned when nothing in it waits for its turn (to be recycled), else kept.
    pub(crate) fn take(
        &mut self,
        w: usize,
        batch: OutBatch,
        ordered: impl Fn(OutputId) -> bool,
        mut write: impl FnMut(&OutRec, &[u8], u64),
    ) -> Option<OutBatch> {
        if batch.input == NO_INPUT && self.waiting(w) {
            self.held[w].push_back((batch, self.taken[w].clone()));
            return None;
        }
        let mut has_ordered = false;
        for r in &batch.recs {
            if r.output == END_OF_EVENT || ordered(r.output) && batch.input != NO_INPUT {
                has_ordered = true;
            } else {
                write(r, &batch.data[r.start as usize..r.end as usize], batch.read_ns);
            }
        }
        if !has_ordered {
            return Some(batch);
        }
        self.taken[w][batch.input as usize] += 1;
        self.pending[w][batch.input as usize].push_back(Pending { batch, next: 0 });
        None
    }

    /// Writes every ordered record whose turn has come; a batch all written goes to
    /// `recycle` with its worker.
    pub(crate) fn emit(
        &mut self,
        ordered: impl Fn(OutputId) -> bool,
        mut write: impl FnMut(&OutRec, &[u8], u64),
        mut recycle: impl FnMut(usize, OutBatch),
    ) {
        // Held batches that can go now (their worker's earlier batches were written by an
        // earlier call) go before any later event.
        self.release(false, &mut write, &mut recycle);
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
                let queue = &mut self.pending[w][input];
                let mut finished = 0;
                while let Some(p) = queue.front_mut() {
                    let Some(r) = p.batch.recs.get(p.next).copied() else {
                        if let Some(done) = queue.pop_front() {
                            finished += 1;
                            recycle(w, done.batch);
                        }
                        continue;
                    };
                    if r.seq != want {
                        break;
                    }
                    p.next += 1;
                    if r.output == END_OF_EVENT {
                        self.next_seq[input] += 1;
                        if p.next == p.batch.recs.len()
                            && let Some(done) = queue.pop_front()
                        {
                            finished += 1;
                            recycle(w, done.batch);
                        }
                        break;
                    }
                    if ordered(r.output) {
                        write(&r, &p.batch.data[r.start as usize..r.end as usize], p.batch.read_ns);
                    }
                }
                if finished > 0 {
                    // The worker's records held behind this batch go before its next event.
                    self.written[w][input] += finished;
                    self.release_worker(w, false, &mut write, &mut recycle);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch of input 0 with, per event `(seq, outputs)`, one record per output (its text is
    /// `"<seq>:<output>"`) and the end-of-event marker.
    fn batch(events: &[(u64, &[usize])]) -> OutBatch {
        let mut b = OutBatch::default();
        for &(seq, outputs) in events {
            for &o in outputs {
                let start = b.data.len() as u32;
                b.data.extend_from_slice(format!("{seq}:{o}").as_bytes());
                b.recs.push(OutRec {
                    seq,
                    output: OutputId::user(o),
                    start,
                    end: b.data.len() as u32,
                    script: 0,
                });
            }
            b.recs.push(OutRec {
                seq,
                output: END_OF_EVENT,
                ..Default::default()
            });
        }
        b
    }

    /// User output 0 is ordered, user output 1 is not.
    fn ordered(o: OutputId) -> bool {
        o == OutputId::user(0)
    }

    #[test]
    fn ordered_records_come_out_in_sequence_whatever_the_arrival() {
        let mut m = Merge::new(2, 1);
        let out = std::cell::RefCell::new(Vec::<String>::new());
        let mut recycled = Vec::new();
        // Worker 1 has events 1 and 3, worker 0 events 0 and 2 (event 2 writes nothing); worker
        // 1's batch arrives first.
        let b1 = batch(&[(1, &[0, 1]), (3, &[0])]);
        let b0 = batch(&[(0, &[0]), (2, &[])]);
        let write =
            |_: &OutRec, bytes: &[u8], _: u64| out.borrow_mut().push(String::from_utf8(bytes.to_vec()).unwrap());
        assert!(m.take(1, b1, ordered, write).is_none());
        // The unordered record is written at once.
        assert_eq!(*out.borrow(), ["1:1"]);
        m.emit(ordered, write, |w, _| recycled.push(w));
        assert_eq!(
            *out.borrow(),
            ["1:1"],
            "event 0 has not arrived: nothing ordered may go out"
        );
        assert!(m.take(0, b0, ordered, write).is_none());
        m.emit(ordered, write, |w, _| recycled.push(w));
        assert_eq!(*out.borrow(), ["1:1", "0:0", "1:0", "3:0"]);
        assert_eq!(m.next_seq(), [4]);
        recycled.sort_unstable();
        assert_eq!(recycled, [0, 1], "both batches recycled once written");
    }

    #[test]
    fn a_batch_without_ordered_records_is_handed_back_at_once() {
        let mut m = Merge::new(1, 1);
        let mut b = batch(&[]);
        b.input = NO_INPUT;
        b.data.extend_from_slice(b"log");
        b.recs.push(OutRec {
            seq: 0,
            output: OutputId::user(0),
            start: 0,
            end: 3,
            script: 0,
        });
        let mut out = Vec::new();
        let back = m.take(0, b, ordered, |_, bytes, _| out.push(bytes.to_vec()));
        assert!(back.is_some());
        assert_eq!(out, [b"log".to_vec()], "records outside any input are never held back");
    }

    /// A record outside any input (a timer's, a `{log}` report) from a worker whose ordered
    /// records still wait.
    fn outside(text: &str) -> OutBatch {
        let mut b = OutBatch {
            input: NO_INPUT,
            ..Default::default()
        };
        b.data.extend_from_slice(text.as_bytes());
        b.recs.push(OutRec {
            seq: 0,
            output: OutputId::user(0),
            start: 0,
            end: text.len() as u32,
            script: 0,
        });
        b
    }

    #[test]
    fn records_outside_any_input_keep_their_workers_order_without_blocking_it() {
        // Two inputs, two workers, each waiting for the other: worker 0 holds input 0's event 1
        // (event 0 is worker 1's) and input 1's event 0; worker 1 the reverse. Each sends a
        // record outside any input between its two batches.
        let mut m = Merge::new(2, 2);
        let out = std::cell::RefCell::new(Vec::<String>::new());
        let write =
            |_: &OutRec, bytes: &[u8], _: u64| out.borrow_mut().push(String::from_utf8(bytes.to_vec()).unwrap());
        let on = |input: u32, events: &[(u64, &[usize])]| {
            let mut b = batch(events);
            b.input = input;
            b
        };
        assert!(m.take(0, on(0, &[(1, &[0])]), ordered, write).is_none());
        assert!(
            m.take(0, outside("timer-0"), ordered, write).is_none(),
            "held behind event 1"
        );
        assert!(m.take(1, on(1, &[(1, &[0])]), ordered, write).is_none());
        assert!(
            m.take(1, outside("timer-1"), ordered, write).is_none(),
            "held behind event 1"
        );
        m.emit(ordered, write, |_, _| {});
        assert!(out.borrow().is_empty(), "{:?}", out.borrow());
        // The batches after the held records still come in: nothing blocks.
        assert!(m.take(0, on(1, &[(0, &[0])]), ordered, write).is_none());
        assert!(m.take(1, on(0, &[(0, &[0])]), ordered, write).is_none());
        m.emit(ordered, write, |_, _| {});
        let got = out.borrow().clone();
        assert_eq!(got.len(), 6, "{got:?}");
        let at = |s: &str| got.iter().position(|g| g == s).unwrap();
        assert!(at("1:0") < at("timer-0") && at("0:0") < at("timer-0"), "{got:?}");
        assert!(at("timer-1") > at("1:0"), "{got:?}");
    }

    /// A timer's record sent between two batches goes out between their events, even when
    /// the writer has taken both batches before it writes anything (its place must not depend
    /// on how far the writer got).
    #[test]
    fn a_held_record_goes_out_right_after_the_batches_before_it() {
        for split_emit in [false, true] {
            let mut m = Merge::new(1, 1);
            let out = std::cell::RefCell::new(Vec::<String>::new());
            let write =
                |_: &OutRec, bytes: &[u8], _: u64| out.borrow_mut().push(String::from_utf8(bytes.to_vec()).unwrap());
            assert!(m.take(0, batch(&[(0, &[0]), (1, &[0])]), ordered, write).is_none());
            if split_emit {
                m.emit(ordered, write, |_, _| {});
            }
            let held = m.take(0, outside("timer"), ordered, write);
            assert_eq!(held.is_none(), !split_emit, "held only while batch 1 waits");
            assert!(m.take(0, batch(&[(2, &[0]), (3, &[0])]), ordered, write).is_none());
            m.emit(ordered, write, |_, _| {});
            assert_eq!(
                *out.borrow(),
                ["0:0", "1:0", "timer", "2:0", "3:0"],
                "split {split_emit}"
            );
        }
    }

    #[test]
    fn the_end_releases_what_still_waits() {
        let mut m = Merge::new(1, 1);
        let mut out = Vec::new();
        assert!(m.take(0, batch(&[(5, &[0])]), ordered, |_, _, _| {}).is_none());
        assert!(m.take(0, outside("late"), ordered, |_, _, _| {}).is_none());
        m.emit(ordered, |_, b, _| out.push(b.to_vec()), |_, _| {});
        assert!(out.is_empty(), "event 5 does not get its turn while the run goes on");
        m.release_all(ordered, |_, b, _| out.push(b.to_vec()), |_, _| {});
        assert_eq!(
            out,
            [b"5:0".to_vec(), b"late".to_vec()],
            "processed events are written at the end"
        );
        assert_eq!(m.next_seq(), [0], "checkpoints stay before the events that never came");
    }

    #[test]
    fn the_end_writes_past_gaps_in_sequence_order() {
        // Events 1 and 4 never came (a reader that stopped without sending them); 0 was
        // written during the run, 2, 3, 5 and 6 wait on two workers.
        let mut m = Merge::new(2, 1);
        let mut out = Vec::new();
        let mut recycled = 0;
        assert!(
            m.take(0, batch(&[(0, &[0]), (3, &[0, 1]), (6, &[0])]), ordered, |_, _, _| {})
                .is_none()
        );
        assert!(
            m.take(1, batch(&[(2, &[0]), (5, &[0])]), ordered, |_, _, _| {})
                .is_none()
        );
        m.emit(
            ordered,
            |_, b, _| out.push(String::from_utf8(b.to_vec()).unwrap()),
            |_, _| {},
        );
        assert_eq!(out, ["0:0"]);
        m.release_all(
            ordered,
            |_, b, _| out.push(String::from_utf8(b.to_vec()).unwrap()),
            |_, _| recycled += 1,
        );
        assert_eq!(out, ["0:0", "2:0", "3:0", "5:0", "6:0"]);
        assert_eq!(recycled, 2, "both batches handed back");
        assert_eq!(m.next_seq(), [1]);
    }
}
