//! Batches of events as readers hand them to workers: the lines back to back and their
//! metadata, sized so that a batch amortises a ring push without delaying low rates.

use super::EventMeta;

/// Events per input batch before it is handed to a worker.
pub(crate) const BATCH_EVENTS: usize = 128;
/// Bytes per input batch before it is handed to a worker.
pub(crate) const BATCH_BYTES: usize = 128 * 1024;
/// A run of events from one input for one worker; `data` holds the lines back to back.
#[derive(Default)]
pub(crate) struct InBatch {
    pub data: Vec<u8>,
    pub events: Vec<EventMeta>,
    /// When its first event was read (`metrics::latency::mono_ns`).
    pub read_ns: u64,
}

impl InBatch {
    pub(crate) fn clear(&mut self) {
        self.data.clear();
        self.events.clear();
        self.read_ns = 0;
    }
}
