//! `kafka://host:port[,host:port...]/topic[?key=flow|none]` output (rdkafka): an idempotent
//! producer with acks from all in-sync replicas, batching and retries. The message key is by
//! default the flow tuple (both directions alike), so one flow stays in one partition and
//! keeps its order. A full producer queue makes the writer wait (nothing is dropped); a
//! delivery failure is counted in the output's errors and reported. The writer's watermarks
//! (tail checkpoints, Kafka input commits) pass an event only once every message sent before
//! it has been acknowledged (`sent` / `delivered`); at exit everything is flushed.

use crate::config::types::KafkaKey;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};

use crate::event::flow_key::RouteScanner;

/// Counts delivery failures (librdkafka calls back on its own thread).
pub(crate) struct Deliveries {
    /// Messages the broker acknowledged or that failed for good.
    pub done: AtomicU64,
    pub failed: AtomicU64,
    /// The index (in sending order) of the first message that failed for good (`u64::MAX`:
    /// none): the watermark stays before it (see `KafkaSink::passable`).
    pub first_failed: AtomicU64,
    pub last_error: std::sync::Mutex<Option<String>>,
    /// The client's last error of its own (see `Ctx::error`).
    pub problem: std::sync::Mutex<Option<String>>,
}

/// The producer's callbacks.
pub(crate) struct Ctx(Arc<Deliveries>);

impl ClientContext for Ctx {
    /// The client's own errors (a broker down, all brokers down, a request refused): kept for
    /// the report of a stalled output.
    fn error(&self, error: KafkaError, reason: &str) {
        if let Ok(mut l) = self.0.problem.lock() {
            *l = Some(format!("{error}: {reason}"));
        }
    }
}

impl ProducerContext for Ctx {
    /// The message's index in sending order.
    type DeliveryOpaque = usize;

    fn delivery(&self, r: &DeliveryResult<'_>, index: usize) {
        self.0.done.fetch_add(1, Relaxed);
        if let Err((e, _)) = r {
            self.0.failed.fetch_add(1, Relaxed);
            self.0.first_failed.fetch_min(index as u64, Relaxed);
            if let Ok(mut l) = self.0.last_error.lock() {
                *l = Some(e.to_string());
            }
        }
    }
}

/// How long `flush` waits for acknowledgements before it reports failure.
const FLUSH_WAIT: Duration = Duration::from_secs(30);

/// A Kafka topic sink.
pub(crate) struct KafkaSink {
    pub name: String,
    topic: String,
    key: KafkaKey,
    producer: BaseProducer<Ctx>,
    pub deliveries: Arc<Deliveries>,
    /// Delivery failures already reported by `flush`.
    reported: u64,
    /// Messages handed to the producer (and those it refused at once, which count as sent and
    /// failed).
    pub sent: u64,
    /// Messages the producer refused at once (see `write`).
    refused: u64,
    /// The flow key's walk (records are valid JSON: a parse is not needed).
    route: RouteScanner,
    key_buf: Vec<u8>,
}

impl KafkaSink {
    pub(crate) fn open(brokers: &str, topic: &str, key: KafkaKey, queue: u32) -> Result<KafkaSink, KafkaError> {
        let deliveries = Arc::new(Deliveries {
            done: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            first_failed: AtomicU64::new(u64::MAX),
            last_error: std::sync::Mutex::new(None),
            problem: std::sync::Mutex::new(None),
        });
        let producer: BaseProducer<Ctx> = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("batch.num.messages", "10000")
            .set("queue.buffering.max.messages", queue.to_string())
            .set("compression.type", "lz4")
            .create_with_context(Ctx(Arc::clone(&deliveries)))?;
        Ok(KafkaSink {
            name: format!("kafka://{brokers}/{topic}"),
            topic: topic.to_string(),
            key,
            producer,
            deliveries,
            reported: 0,
            sent: 0,
            refused: 0,
            route: RouteScanner::new(),
            key_buf: Vec::with_capacity(24),
        })
    }

    /// Sends one event (`bytes` ends with its newline, which is not sent). A full producer
    /// queue (the broker does not acknowledge) is `WouldBlock` after serving the delivery
    /// reports waiting: the caller waits and sends the record again (see
    /// `Outputs::write_record`). A record the client refuses at once (larger than a message may
    /// be) is an error, and counts as a failed message: the watermark stays before it.
    pub(crate) fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
        self.key_buf.clear();
        if self.key == KafkaKey::Flow
            && let Some(k) = self.route.route(body).hash
        {
            for i in (0..16).rev() {
                self.key_buf.push(b"0123456789abcdef"[((k >> (i * 4)) & 0xf) as usize]);
            }
        }
        let mut rec = BaseRecord::with_opaque_to(&self.topic, self.sent as usize).payload(body);
        if !self.key_buf.is_empty() {
            rec = rec.key(&self.key_buf[..]);
        }
        match self.producer.send(rec) {
            Ok(()) => {
                self.sent += 1;
                self.producer.poll(Duration::ZERO);
                Ok(())
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                // Back-pressure: serve delivery reports, then let the caller decide (it waits a
                // little and tries again, or gives the record up at the stop).
                self.producer.poll(Duration::ZERO);
                let unacked = self.sent.saturating_sub(self.delivered());
                let why = self
                    .last_problem()
                    .map(|p| format!("; the client's last error: {p}"))
                    .unwrap_or_default();
                Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!(
                        "{}: the producer's queue is full ({unacked} messages not acknowledged){why}",
                        self.name
                    ),
                ))
            }
            Err((e, _)) => {
                // Failed for good at once: it takes its place in the sending order as a failed
                // message (counted by the caller), so checkpoints and commits stay before it.
                let index = self.sent;
                self.sent += 1;
                self.refused += 1;
                self.deliveries.first_failed.fetch_min(index, Relaxed);
                Err(io::Error::other(format!(
                    "{}: {e} (checkpoints and commits stay before this record: the next run reads it again)",
                    self.name
                )))
            }
        }
    }

    /// Serves delivery reports without waiting (the writer's periodic flush: batches leave by
    /// themselves after `linger.ms`; see `delivered`).
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        self.producer.poll(Duration::ZERO);
        Ok(())
    }

    /// Messages acknowledged (or failed for good, refused at once included) so far.
    pub(crate) fn delivered(&self) -> u64 {
        self.deliveries.done.load(Relaxed) + self.refused
    }

    /// How many of the messages sent the watermark may pass: those acknowledged, up to the
    /// first that failed for good (a record not written is read again by the next run:
    /// at-least-once).
    pub(crate) fn passable(&self) -> u64 {
        // Only the broker's answers count here: a message refused at once is no answer for
        // the ones sent before it, still in flight.
        self.deliveries
            .done
            .load(Relaxed)
            .min(self.deliveries.first_failed.load(Relaxed))
    }

    /// The client's last error of its own, if any.
    pub(crate) fn last_problem(&self) -> Option<String> {
        self.deliveries.problem.lock().ok().and_then(|p| p.clone())
    }

    /// Waits until everything sent is acknowledged (at exit).
    pub(crate) fn close(&mut self) -> io::Result<()> {
        self.producer
            .flush(FLUSH_WAIT)
            .map_err(|e| io::Error::other(format!("{}: {e}", self.name)))
    }

    /// Delivery failures since the last call, with the last error message.
    pub(crate) fn new_failures(&mut self) -> Option<(u64, String)> {
        let failed = self.deliveries.failed.load(Relaxed);
        if failed == self.reported {
            return None;
        }
        let n = failed - self.reported;
        self.reported = failed;
        let last = self
            .deliveries
            .last_error
            .lock()
            .ok()
            .and_then(|l| l.clone())
            .unwrap_or_default();
        Some((
            n,
            format!(
                "{}: {n} message(s) not delivered: {last} (checkpoints and commits stay before the first of them: the next run reads them again)",
                self.name
            ),
        ))
    }
}
