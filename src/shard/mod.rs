//! The lock-free plumbing between threads: bounded SPSC rings (rtrb) carrying batches of
//! events from each reader to each worker and batches of output records from each worker to
//! the writer, with a return ring beside each so that batch buffers are recycled, not
//! reallocated. (The CPU pinning plan is `engine::plan`, over `primitives::pin`.)

pub(crate) use crate::event::batch::InBatch;
pub(crate) use crate::primitives::backoff::Backoff;

/// Batches in flight from the readers to one worker, shared among its input rings (8,192
/// events): a worker that stalls for tens of milliseconds (a script's table of hundreds of
/// thousands of keys resized or collected) fills its rings while its reader goes on feeding
/// the other workers, where 2,048 events made the reader wait on the stalled worker and
/// starve the others (perf/README.md, "Sizes chosen by measurement").
pub(crate) const WORKER_BATCHES: usize = 64;
/// The fewest batches of one (reader, worker) ring: 2,048 events, room for the bursts of a
/// Kafka fetch.
pub(crate) const RING_BATCHES_MIN: usize = 16;

/// Batches in flight per (reader, worker) ring with `inputs` readers: bounds memory whatever
/// the input size.
pub(crate) fn ring_batches(inputs: usize) -> usize {
    (WORKER_BATCHES / inputs.max(1)).max(RING_BATCHES_MIN)
}
/// Record batches in flight per worker -> writer ring (up to 128 KiB each).
pub(crate) const OUT_RING_BATCHES: usize = 16;

pub(crate) use crate::config::types::OutputId;

/// The internal `{log}` sink.
pub const LOG_OUTPUT: OutputId = OutputId::LOG;
/// The internal `{stats}` sink.
pub(crate) const STATS_OUTPUT: OutputId = OutputId::STATS;
/// The record that closes an event (the watermark for ordered outputs).
pub(crate) const END_OF_EVENT: OutputId = OutputId::END_OF_EVENT;
/// Input value of records written outside any event (from `setup()`); they are never held
/// back for ordering.
pub(crate) const NO_INPUT: u32 = u32::MAX;

/// One record for the writer: bytes for an output, or the end marker of an event.
#[derive(Clone, Copy, Debug, Default)]
pub struct OutRec {
    pub seq: u64,
    pub output: OutputId,
    pub start: u32,
    pub end: u32,
    /// The script that wrote it (filters, then analyzers), for the per-script end-to-end
    /// latency (fits in what was padding).
    pub script: u16,
}

/// Records of one input produced by one worker, in the input's order.
#[derive(Default)]
pub struct OutBatch {
    pub input: u32,
    pub data: Vec<u8>,
    pub recs: Vec<OutRec>,
    /// Read time of the oldest event whose records are in it (0: none), for the end-to-end
    /// latency.
    pub read_ns: u64,
}

impl OutBatch {
    pub fn clear(&mut self) {
        self.data.clear();
        self.recs.clear();
        self.read_ns = 0;
    }
}
