//! Inputs: line framing with memchr over a reusable buffer, routing of each line (a walk over
//! its top-level members; the workers validate it), and batching into the per-worker rings.
//! One reader thread per input; [`file`] reads to the end, [`tail`] follows a file through
//! truncation and rotation.

pub(crate) mod checkpoint;
pub(crate) mod file;
pub(crate) mod framer;
pub(crate) mod ipc;
pub(crate) mod kafka;
mod reader;
mod redis_in;
pub(crate) mod tail;

pub(crate) use reader::{FilePos, ReaderEnd, ReaderSetup, Resume, Stopped, spawn_reader};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use rtrb::{Consumer, Producer};

use crate::counters::InputStats;
use crate::event::EventMeta;
use crate::event::batch::{BATCH_BYTES, BATCH_EVENTS, InBatch};
use crate::event::flow_key::RouteScanner;
use crate::primitives::backoff::Backoff;

/// A diagnostic line for `{log}` from a thread that has no ordered output path.
pub(crate) type Diag = std::sync::mpsc::Sender<Vec<u8>>;

/// The reader's end of the rings to every worker.
pub(crate) struct ReaderIo {
    pub to_workers: Vec<Producer<InBatch>>,
    pub returned: Vec<Consumer<InBatch>>,
    /// The reader's own parker (it sleeps on it while a worker's ring is full), and each
    /// worker's (woken after a push).
    pub me: std::sync::Arc<crate::primitives::backoff::Parker>,
    pub workers: Vec<std::sync::Arc<crate::primitives::backoff::Parker>>,
}

/// Routes and batches the lines of one input (validation is the workers').
pub(crate) struct Router {
    input: u32,
    tag: String,
    io: ReaderIo,
    batches: Vec<InBatch>,
    scanner: RouteScanner,
    seq: u64,
    rr: usize,
    stats: Arc<crate::counters::Stats>,
    diag: Diag,
    pub stop: Arc<AtomicBool>,
    /// Counts the inputs that have opened their file or socket (privileges are dropped once
    /// all have); `None` once this one has counted itself.
    open_count: Option<Arc<std::sync::atomic::AtomicUsize>>,
    /// The rate limit of this input's problem records (counters stay exact).
    limiter: std::cell::RefCell<crate::diag::limit::Limiter>,
    /// Bytes of the batches handed over lately (a moving average), which a new batch is
    /// sized by: workers keep batches while event tables read their lines (`lua::pins`), so
    /// their unused room is memory held too.
    fill: usize,
}

impl Drop for Router {
    /// The last `suppressed` records, when the input ends.
    fn drop(&mut self) {
        for line in self.limiter.get_mut().due(true) {
            let _ = self.diag.send(line);
        }
    }
}

impl Router {
    pub(crate) fn new(
        input: u32,
        tag: String,
        io: ReaderIo,
        stats: Arc<crate::counters::Stats>,
        diag: Diag,
        stop: Arc<AtomicBool>,
    ) -> Self {
        let n = io.to_workers.len();
        Router {
            input,
            tag,
            io,
            batches: (0..n)
                .map(|_| InBatch {
                    data: Vec::with_capacity(BATCH_BYTES + 4096),
                    events: Vec::with_capacity(BATCH_EVENTS),
                    read_ns: 0,
                })
                .collect(),
            scanner: RouteScanner::new(),
            seq: 0,
            rr: 0,
            stats,
            diag,
            stop,
            open_count: None,
            limiter: Default::default(),
            fill: BATCH_BYTES,
        }
    }

    /// The calling thread is this input's reader: the workers wake it when a ring it waits
    /// on has room again.
    pub(crate) fn register(&self) {
        self.io.me.register();
    }

    /// Counts this input in `count` once it has opened its file, socket or consumer.
    pub(crate) fn count_open_in(&mut self, count: Arc<std::sync::atomic::AtomicUsize>) {
        self.open_count = Some(count);
    }

    /// The input's file, socket or consumer is open (or its first attempt failed): it needs
    /// no privilege from now on.
    pub(crate) fn opened(&mut self) {
        if let Some(c) = self.open_count.take() {
            c.fetch_add(1, std::sync::atomic::Ordering::Release);
        }
    }

    fn my_stats(&self) -> &InputStats {
        &self.stats.inputs[self.input as usize]
    }

    /// Reports a problem with a line to `{log}` and stderr, rate-limited per kind (see
    /// `diag::limit`).
    pub(crate) fn report(&self, kind: crate::diag::Kind, line_no: u64, offset: u64, len: usize, msg: &str) {
        use crate::primitives::json::write_str;
        let mut ended = None;
        let allowed = self.limiter.borrow_mut().allow(kind, &mut ended);
        if let Some(line) = ended {
            let _ = self.diag.send(line);
        }
        if !allowed {
            return;
        }
        let mut o = Vec::with_capacity(160);
        crate::diag::head(kind, &mut o);
        o.extend_from_slice(b",\"input\":");
        write_str(&mut o, self.tag.as_bytes());
        o.extend_from_slice(
            format!(",\"line\":{line_no},\"offset\":{offset},\"length\":{len},\"message\":").as_bytes(),
        );
        write_str(&mut o, msg.as_bytes());
        o.push(b'}');
        crate::diag::stderr_report(&o);
        let _ = self.diag.send(o);
    }

    /// Writes a record about the input to `{log}`, not rate-limited (an information record).
    pub(crate) fn info(&self, kind: crate::diag::Kind, msg: &str) {
        let _ = self.diag.send(crate::diag::line(kind, &[("input", &self.tag)], msg));
    }

    /// Handles one framed line (without its newline): routes it to its worker, which
    /// validates it (the reader only walks the top-level members for the route).
    pub(crate) fn line(&mut self, raw: &[u8], line_no: u64, offset: u64) {
        let mut line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line.first() == Some(&0) {
            line = self.skip_hole(line, line_no, offset);
        }
        if line.iter().all(|c| matches!(c, b' ' | b'\t' | b'\r')) {
            return;
        }
        let route = self.scanner.route(line);
        let shard = self.shard_of(route.hash);
        if crate::counters::tap::active() {
            crate::counters::tap::offer(crate::counters::tap::Point::Input, self.input as usize, |v| {
                v.extend_from_slice(line)
            });
        }
        self.push(
            shard,
            line,
            EventMeta {
                line_no,
                flow_id: route.flow_id,
                offset,
                raw_len: raw.len() as u64,
                ..EventMeta::default()
            },
        );
    }

    /// A line that begins with NUL bytes: a hole in the file, left when the file was cut while
    /// its writer went on at its old offset (logrotate's `copytruncate` under Suricata). The
    /// NULs are skipped and reported (`input_hole`), and what follows them is the line.
    #[cold]
    fn skip_hole<'a>(&self, line: &'a [u8], line_no: u64, offset: u64) -> &'a [u8] {
        let n = line.iter().take_while(|&&c| c == 0).count();
        let rest = &line[n..];
        let followed = !rest.iter().all(|c| matches!(c, b' ' | b'\t' | b'\r'));
        self.report_hole(line_no, offset, n, followed);
        rest
    }

    /// Reports `n` NUL bytes skipped at `offset`, at the start of line `line_no`
    /// (`followed`: something came after them on the line).
    #[cold]
    pub(crate) fn report_hole(&self, line_no: u64, offset: u64, n: usize, followed: bool) {
        let then = if followed {
            "the line after them was read"
        } else {
            "nothing after them on the line"
        };
        self.report(
            crate::diag::Kind::InputHole,
            line_no,
            offset,
            n,
            &format!(
                "{n} NUL bytes skipped at the start of the line, {then} (a hole in the file: was it \
                 cut while its writer went on at its old offset, as logrotate's copytruncate does?)"
            ),
        );
    }

    fn shard_of(&mut self, hash: Option<u64>) -> usize {
        let n = self.batches.len();
        match hash {
            Some(h) => (h % n as u64) as usize,
            None => {
                self.rr = (self.rr + 1) % n;
                self.rr
            }
        }
    }

    /// Appends a line (or a report's text) to its worker's batch with the next sequence
    /// number, and hands the batch over when it is full.
    fn push(&mut self, shard: usize, bytes: &[u8], mut meta: EventMeta) {
        let b = &mut self.batches[shard];
        if b.events.is_empty() {
            b.read_ns = crate::counters::latency::mono_ns();
        }
        meta.seq = self.seq;
        meta.start = b.data.len() as u32;
        b.data.extend_from_slice(bytes);
        meta.end = b.data.len() as u32;
        b.events.push(meta);
        self.seq += 1;
        if b.events.len() >= BATCH_EVENTS || b.data.len() >= BATCH_BYTES {
            self.send(shard);
        }
    }

    /// A line longer than the maximum was skipped: counted here, reported by a worker in
    /// the input's order.
    pub(crate) fn too_long(&mut self, line_no: u64, offset: u64, len: usize, max: usize) {
        self.my_stats().too_long.fetch_add(1, Relaxed);
        let shard = self.shard_of(None);
        let text = format!("line longer than the maximum of {max} bytes, skipped");
        self.push(
            shard,
            text.as_bytes(),
            EventMeta {
                line_no,
                offset,
                raw_len: len as u64,
                too_long: true,
                ..EventMeta::default()
            },
        );
    }

    fn send(&mut self, shard: usize) {
        if self.batches[shard].events.is_empty() {
            return;
        }
        self.fill = (self.fill * 7 + self.batches[shard].data.len()) / 8;
        let fresh = match self.io.returned[shard].pop() {
            Ok(mut b) => {
                b.clear();
                b
            }
            Err(_) => InBatch {
                // Room for a batch as the last ones were, with a margin (a larger one grows).
                data: Vec::with_capacity((self.fill + self.fill / 8 + 4096).min(BATCH_BYTES + 4096)),
                events: Vec::with_capacity(BATCH_EVENTS),
                read_ns: 0,
            },
        };
        let mut batch = std::mem::replace(&mut self.batches[shard], fresh);
        let mut backoff = Backoff::default();
        let mut waited = false;
        loop {
            match self.io.to_workers[shard].push(batch) {
                Ok(()) => break,
                Err(rtrb::PushError::Full(b)) => {
                    batch = b;
                    if !waited {
                        waited = true;
                        self.my_stats().ring_full.fetch_add(1, Relaxed);
                        // The worker publishes how many batches wait for it between two of its
                        // own batches; one stuck in a script does not: its rings are full at
                        // least (`/metrics`, and `/health`'s stalled rings).
                        if let Some(w) = self.stats.workers.get(shard) {
                            w.ring_batches
                                .fetch_max(self.io.to_workers[shard].buffer().capacity() as u64, Relaxed);
                        }
                    }
                    let ring = &self.io.to_workers[shard];
                    if ring.is_abandoned() {
                        return;
                    }
                    backoff.wait_on(&self.io.me, || ring.slots() > 0 || ring.is_abandoned());
                }
            }
        }
        if let Some(w) = self.io.workers.get(shard) {
            w.wake();
        }
    }

    /// Hands every partial batch to its worker (at end of input or when the input is idle).
    pub(crate) fn flush(&mut self) {
        for s in 0..self.batches.len() {
            self.send(s);
        }
        for line in self.limiter.get_mut().due(false) {
            let _ = self.diag.send(line);
        }
    }

    /// A paced replay's lag behind its schedule.
    pub(crate) fn set_pace_lag(&self, us: u64) {
        let s = self.my_stats();
        s.paced.store(true, Relaxed);
        s.pace_lag_us.store(us, Relaxed);
        s.pace_lag_max_us.fetch_max(us, Relaxed);
    }

    pub(crate) fn add_bytes(&self, n: usize) {
        self.my_stats().bytes.fetch_add(n as u64, Relaxed);
    }

    /// The sequence number the next line will get (= lines routed so far, blank ones aside).
    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }

    /// Marks the input's checkpoint as failing to save (or saved again), for `/health`.
    pub(crate) fn set_checkpoint_failing(&self, failing: bool) {
        if let Some(s) = self.stats.inputs.get(self.input as usize) {
            s.checkpoint_failing
                .store(failing, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Marks the input's file as missing (or found again), for `/health`.
    pub(crate) fn set_missing(&self, missing: bool) {
        if let Some(s) = self.stats.inputs.get(self.input as usize) {
            s.missing.store(missing, std::sync::atomic::Ordering::Relaxed);
        }
    }

    pub(crate) fn stopping(&self) -> bool {
        self.stop.load(Relaxed)
    }
}

/// How a reader reads its input.
pub(crate) struct Reading<'a> {
    /// The input's index (Kafka commits follow its watermark).
    pub input: usize,
    /// `--follow`: `file://` inputs are followed as `tail://PATH<` is.
    pub follow: bool,
    pub max_line: usize,
    /// `tail_poll_ms`.
    pub poll: std::time::Duration,
    /// `shutdown_grace`.
    pub grace: std::time::Duration,
    /// The writer's watermarks (Kafka commits wait for them).
    pub marks: &'a checkpoint::Watermarks,
    /// Set when the pipeline ends for a rebuild: socket inputs then keep their socket.
    pub rebuilding: &'a std::sync::atomic::AtomicBool,
}

/// Reads one input until it ends or the pipeline stops: the source stage's entry point, run
/// on the input's reader thread. An error is one that ends the input (cannot open or read it).
fn read_input(
    uri: &crate::config::InputUri,
    how: &Reading<'_>,
    router: &mut Router,
    ckpt: Option<&mut checkpoint::Checkpoint>,
    mut resume: Resume,
) -> (std::io::Result<()>, Stopped) {
    use crate::config::InputUri;
    use crate::config::types::IpcKind;
    let mut stopped = Stopped::default();
    let r = match uri {
        InputUri::File { path, pace } if !how.follow => {
            file::read_file(path, false, resume.file_pos, how.max_line, *pace, router)
                .map(|p| stopped.file_pos = Some(p))
        }
        InputUri::Zfile { path, pace } => file::read_file(path, true, resume.file_pos, how.max_line, *pace, router)
            .map(|p| stopped.file_pos = Some(p)),
        InputUri::File { path, .. } => {
            let start = tail::Start {
                from_start: true,
                resume: resume.followed,
                ..Default::default()
            };
            stopped.followed = tail::follow(path, start, how.max_line, how.poll, router, None, &mut stopped.finished);
            Ok(())
        }
        InputUri::Tail { path, from_start } => {
            // `followed`: where the previous pipeline's reader stopped (used when the input has
            // no checkpoint of its own: renamed by a reload, say), or a point handed over from
            // another input's checkpoint (a wildcard match that is a file another match was
            // reading: see `start_readers`).
            let start = tail::Start {
                from_start: *from_start,
                resume: resume.followed,
                siblings: std::mem::take(&mut resume.siblings),
                pattern: resume.pattern.take(),
            };
            stopped.followed = tail::follow(path, start, how.max_line, how.poll, router, ckpt, &mut stopped.finished);
            Ok(())
        }
        InputUri::Ipc {
            path,
            kind: IpcKind::Datagram,
        } => {
            let s = match resume.socket.take() {
                Some(ipc::Kept::Datagram(s)) => Some(s),
                _ => None,
            };
            ipc::read_datagrams(path, how.max_line, router, s, how.rebuilding).map(|k| stopped.socket = k)
        }
        InputUri::Ipc {
            path,
            kind: IpcKind::Stream,
        } => {
            let s = match resume.socket.take() {
                Some(ipc::Kept::Stream(l, c)) => Some((l, c)),
                _ => None,
            };
            ipc::read_streams(path, how.max_line, router, s, how.rebuilding).map(|k| stopped.socket = k)
        }
        InputUri::Kafka(spec) => kafka::read_kafka(spec, how, router).map_err(std::io::Error::other),
        InputUri::Redis(spec) => {
            redis_in::read_redis(spec, how.input, how.marks, how.max_line, router);
            Ok(())
        }
    };
    (r, stopped)
}
