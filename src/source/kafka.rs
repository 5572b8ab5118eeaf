//! `kafka://host:port[,host:port...]/topic?group=G&offset=earliest|latest` input (rdkafka): a
//! member of consumer group G. Each message is one event. Offsets are committed only once the
//! outputs have written (and flushed, or had acknowledged) every event up to them, so delivery
//! is at-least-once: after a crash the group re-reads from the last commit. Several engines in
//! one group (on one machine or many) split the topic's partitions between them; a partition's
//! messages are read in order, so the events of one flow (one partition, when producers key
//! by flow) keep their order. When a rebalance takes partitions away, what is already
//! written is committed first, so the next owner starts after it.

pub(crate) use crate::config::types::KafkaSpec;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::Router;
use super::checkpoint::{Progress, Watermarks};
use crate::diag::Kind;

/// How often offsets that became safe are committed.
const COMMIT_EVERY: Duration = Duration::from_millis(200);
/// How long an input of a pipeline being rebuilt (a reload) waits for its last events to be
/// written before its last commit (a stop waits `shutdown_grace` and 2 s).
const DRAIN_WAIT: Duration = Duration::from_secs(30);

/// How long a revocation waits for the events with the workers to be written, at most, and
/// once the outputs stop making progress (on a loaded machine a writer pauses for hundreds of
/// milliseconds: with 200 ms a survivor of a rebalance read again 9,728 of its own events).
const REVOKE_WAIT: Duration = Duration::from_secs(5);
const REVOKE_STALL: Duration = Duration::from_secs(1);

/// Consecutive messages of one partition that share one progress entry (the commit lags by
/// at most that many).
const MERGE: u32 = 1024;

/// The offsets every event before which has been written: partition -> next offset.
fn safe(progress: &mut Progress<(i32, i64)>, written: u64) -> BTreeMap<i32, i64> {
    let mut out = BTreeMap::new();
    progress.passed(written, |(p, o)| {
        out.insert(p, o);
    });
    out
}

/// A Kafka client call that failed, for the input's brokers and topic.
#[derive(Debug, thiserror::Error)]
#[error("kafka://{brokers}/{topic}: {source}")]
pub(crate) struct KafkaError {
    pub brokers: String,
    pub topic: String,
    pub source: Box<rdkafka::error::KafkaError>,
}

fn commit<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    offsets: &BTreeMap<i32, i64>,
    mode: CommitMode,
) -> Result<(), rdkafka::error::KafkaError> {
    if offsets.is_empty() {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::new();
    for (&p, &o) in offsets {
        tpl.add_partition_offset(topic, p, Offset::Offset(o))?;
    }
    consumer.commit(&tpl, mode)
}

/// What the reading loop and the rebalance callbacks (run by rdkafka inside `poll`, on the
/// same thread) share.
struct Shared {
    /// Offsets read, by sequence number (see `Progress`).
    progress: Progress<(i32, i64)>,
    /// Where each newly assigned partition resumes (its committed offset), to check that the
    /// broker delivers from there: a later first offset means messages were skipped, which
    /// at-least-once cannot let pass silently (tansu did it when a commit fell inside a batch).
    resume: BTreeMap<i32, i64>,
    /// Reports made in the callbacks, for the loop to send: (problem or information, kind,
    /// message).
    reports: Vec<(Kind, String)>,
}

/// The consumer's context: commits what is safe when partitions are taken away, and learns
/// where assigned partitions resume.
struct Ctx {
    shared: Mutex<Shared>,
    marks: Watermarks,
    input: usize,
    topic: String,
}

impl ClientContext for Ctx {}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else { return };
        let revoked: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        if revoked.is_empty() {
            return;
        }
        let mut sh = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        let sh = &mut *sh;
        let progress = &mut sh.progress;
        // Give the events already with the workers a moment to be written (those still
        // batched in the reader cannot be: this runs inside the reader's poll).
        let mark = &self.marks[self.input];
        if let Some(target) = progress.last_seq() {
            let start = Instant::now();
            let (mut last, mut moved) = (mark.load(Ordering::Acquire), Instant::now());
            while last < target && start.elapsed() < REVOKE_WAIT && moved.elapsed() < REVOKE_STALL {
                std::thread::sleep(Duration::from_millis(5));
                let w = mark.load(Ordering::Acquire);
                if w != last {
                    (last, moved) = (w, Instant::now());
                }
            }
        }
        // Commit what is written before the partitions go to another member, so that it
        // starts after them; what is read and not yet written goes there again (duplicates,
        // not losses). Positions of the revoked partitions are then forgotten: committing
        // them later would move the new owner's offsets back.
        let offsets = safe(progress, mark.load(Ordering::Acquire));
        progress.retain(|(p, _)| !revoked.contains(p));
        for p in &revoked {
            sh.resume.remove(p);
        }
        let r = commit(consumer, &self.topic, &offsets, CommitMode::Sync);
        let kept: Vec<String> = offsets
            .iter()
            .filter(|(p, _)| revoked.contains(p))
            .map(|(p, o)| format!("{p}:{o}"))
            .collect();
        sh.reports.push(match r {
            Ok(()) => (
                Kind::KafkaRevoked,
                format!(
                    "partitions {revoked:?} revoked; committed before giving them up: [{}]",
                    kept.join(", ")
                ),
            ),
            Err(e) => (
                Kind::KafkaCommitError,
                format!("partitions {revoked:?} revoked; committing their offsets failed: {e}"),
            ),
        });
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(tpl) = rebalance else { return };
        if tpl.count() == 0 {
            return;
        }
        let committed = consumer.committed_offsets((*tpl).clone(), Duration::from_secs(5));
        self.assigned(tpl, committed);
    }
}

impl Ctx {
    /// Learns where newly assigned partitions resume (the group's committed offsets) and
    /// reports the assignment (`kafka_assigned`), for the group's assignments and `partitions=`.
    fn assigned(&self, tpl: &TopicPartitionList, committed: rdkafka::error::KafkaResult<TopicPartitionList>) {
        let mut sh = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        match committed {
            Ok(c) => {
                let mut at = Vec::new();
                for e in c.elements() {
                    if let Offset::Offset(o) = e.offset() {
                        sh.resume.insert(e.partition(), o);
                        at.push(format!("{}:{o}", e.partition()));
                    } else {
                        at.push(format!("{}:none", e.partition()));
                    }
                }
                let assigned: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                sh.reports.push((
                    Kind::KafkaAssigned,
                    format!(
                        "partitions {assigned:?} assigned; the group's committed offsets: [{}]",
                        at.join(", ")
                    ),
                ));
            }
            Err(e) => sh.reports.push((
                Kind::KafkaError,
                format!("reading the committed offsets of the assigned partitions: {e}"),
            )),
        }
    }
}

/// For `check`: the brokers answer within `timeout`, the topic exists, and the partitions of
/// `partitions=` are in it; else what is wrong.
pub(crate) fn probe(spec: &KafkaSpec, timeout: Duration) -> Result<(), String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &spec.brokers)
        .set("allow.auto.create.topics", "false")
        .set("log_level", "0")
        .create()
        .map_err(|e| e.to_string())?;
    let md = consumer
        .fetch_metadata(Some(&spec.topic), timeout)
        .map_err(|e| format!("no answer from the brokers {}: {e}", spec.brokers))?;
    let Some(t) = md.topics().iter().find(|t| t.name() == spec.topic) else {
        return Err(format!("topic {} not found", spec.topic));
    };
    if t.error().is_some() || t.partitions().is_empty() {
        return Err(format!("topic {} does not exist on {}", spec.topic, spec.brokers));
    }
    let n = t.partitions().len() as i32;
    if let Some(missing) = spec.partitions.iter().flatten().find(|&&p| p >= n) {
        return Err(format!(
            "partition {missing} is not in topic {} ({n} partitions)",
            spec.topic
        ));
    }
    Ok(())
}

/// How often an input whose brokers are unreachable asks for the topic's metadata.
const DOWN_PROBE_EVERY: Duration = Duration::from_secs(2);

/// Consumes until the engine stops, then waits for the events read to be written and commits
/// their offsets.
pub(crate) fn read_kafka(spec: &KafkaSpec, how: &super::Reading<'_>, router: &mut Router) -> Result<(), KafkaError> {
    let (input, marks, max_line) = (how.input, how.marks, how.max_line);
    let fail = |source| KafkaError {
        brokers: spec.brokers.clone(),
        topic: spec.topic.clone(),
        source: Box::new(source),
    };
    let mut config = ClientConfig::new();
    if let Some(id) = &spec.instance {
        config.set("group.instance.id", id);
    }
    let ctx = Ctx {
        shared: Mutex::new(Shared {
            progress: Progress::new(MERGE),
            resume: BTreeMap::new(),
            reports: Vec::new(),
        }),
        marks: marks.clone(),
        input,
        topic: spec.topic.clone(),
    };
    let consumer: BaseConsumer<Ctx> = config
        .set("bootstrap.servers", &spec.brokers)
        .set("group.id", &spec.group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", &spec.offset)
        .set("enable.partition.eof", "false")
        // A member that died (kill -9) gives its partitions back after 10 s, not 45.
        .set("session.timeout.ms", "10000")
        .set("fetch.min.bytes", "1")
        // Some brokers (tansu) answer a fetch only after the full wait when it returns little.
        .set("fetch.wait.max.ms", "50")
        .set("queued.max.messages.kbytes", "65536")
        .create_with_context(ctx)
        .map_err(fail)?;
    match &spec.partitions {
        None => consumer.subscribe(&[&spec.topic]),
        Some(ps) => {
            // Resume each partition at the group's committed offset (else auto.offset.reset).
            let mut tpl = TopicPartitionList::new();
            for &p in ps {
                tpl.add_partition_offset(&spec.topic, p, Offset::Stored).map_err(fail)?;
            }
            consumer.assign(&tpl)
        }
    }
    .map_err(fail)?;
    router.opened();
    // A manual assignment has no rebalance callback: learn where it resumes now. (Under
    // group membership, `post_rebalance` does it for each assignment.)
    if let Some(ps) = &spec.partitions {
        let mut q = TopicPartitionList::new();
        for &p in ps {
            q.add_partition(&spec.topic, p);
        }
        let committed = consumer.committed_offsets(q.clone(), Duration::from_secs(5));
        consumer.context().assigned(&q, committed);
    }
    let mut last_commit = Instant::now();
    let mut idle = false;
    // The brokers unreachable: since when, transport errors not reported since, next probe.
    let mut down: Option<(Instant, u64, Instant)> = None;
    let report = |router: &Router, what: Kind, e: String| {
        router.report(what, 0, 0, 0, &format!("kafka://{}/{}: {e}", spec.brokers, spec.topic));
    };
    let shared = &consumer.context().shared;
    let lock = || shared.lock().unwrap_or_else(|e| e.into_inner());
    while !router.stopping() {
        let polled = consumer.poll(Duration::from_millis(100));
        // Reports made by the rebalance callbacks during the poll.
        for (what, msg) in std::mem::take(&mut lock().reports) {
            if what.level() == "error" {
                report(router, what, msg);
            } else {
                router.info(what, &format!("kafka://{}/{}: {msg}", spec.brokers, spec.topic));
            }
        }
        // While the brokers are unreachable, ask for the topic's metadata now and then: an
        // idle topic sends no message to say they are back.
        if let Some((since, quiet, next)) = down {
            let mut back = matches!(polled, Some(Ok(_)));
            if !back && Instant::now() >= next {
                back = consumer
                    .fetch_metadata(Some(&spec.topic), Duration::from_millis(500))
                    .is_ok();
                down = Some((since, quiet, Instant::now() + DOWN_PROBE_EVERY));
            }
            if back {
                down = None;
                router.set_missing(false);
                router.info(
                    Kind::InputResumed,
                    &format!(
                        "kafka://{}/{}: the brokers answer again after {:.1} s ({quiet} more transport errors meanwhile, not reported)",
                        spec.brokers,
                        spec.topic,
                        since.elapsed().as_secs_f64()
                    ),
                );
            }
        }
        match polled {
            Some(Ok(m)) => {
                idle = false;
                let payload = m.payload().unwrap_or_default();
                router.add_bytes(payload.len());
                let mut line = payload;
                while let Some(l) = line.strip_suffix(b"\n") {
                    line = l;
                }
                let (offset, partition) = (m.offset().max(0) as u64, m.partition().max(0) as u64);
                // A message longer than `max_line_bytes` is reported and skipped, as a line is.
                if line.len() > max_line {
                    router.too_long(offset, partition, line.len(), max_line);
                } else {
                    router.line(line, offset, partition);
                }
                let p = m.partition();
                let mut sh = lock();
                if let Some(want) = sh.resume.remove(&p)
                    && m.offset() > want
                {
                    report(
                        router,
                        Kind::KafkaGap,
                        format!(
                            "partition {p}: resuming at the committed offset {want}, the broker delivered offset {} first ({} messages skipped)",
                            m.offset(),
                            m.offset() - want
                        ),
                    );
                }
                sh.progress.note(router.seq(), (p, m.offset() + 1), |last| last.0 == p);
            }
            Some(Err(e)) => {
                use rdkafka::types::RDKafkaErrorCode::{AllBrokersDown, BrokerTransportFailure};
                let transport = matches!(e.rdkafka_error_code(), Some(AllBrokersDown | BrokerTransportFailure));
                match &mut down {
                    Some((_, quiet, _)) if transport => *quiet += 1,
                    _ => {
                        if transport {
                            // `/health` answers 503 until the brokers answer again.
                            down = Some((Instant::now(), 0, Instant::now() + DOWN_PROBE_EVERY));
                            router.set_missing(true);
                            report(
                                router,
                                Kind::KafkaError,
                                format!(
                                    "{e}; waiting for the brokers (further transport errors are counted, not reported, until they answer)"
                                ),
                            );
                        } else {
                            report(router, Kind::KafkaError, e.to_string());
                        }
                    }
                }
            }
            None => {
                if !idle {
                    router.flush();
                    idle = true;
                }
            }
        }
        if last_commit.elapsed() >= COMMIT_EVERY {
            last_commit = Instant::now();
            let safe = safe(&mut lock().progress, marks[input].load(Ordering::Acquire));
            if let Err(e) = commit(&consumer, &spec.topic, &safe, CommitMode::Async) {
                report(router, Kind::KafkaCommitError, e.to_string());
            }
        }
    }
    // Stopping: hand out what is batched, wait for it to be written, commit synchronously.
    router.flush();
    let target = router.seq();
    let start = Instant::now();
    // A stop gives the outputs `shutdown_grace`; past it, what they still hold is given up
    // and the watermark moves no more: waiting longer only delays the exit.
    let wait = if how.rebuilding.load(Ordering::Relaxed) {
        DRAIN_WAIT
    } else {
        how.grace + Duration::from_secs(2)
    };
    while marks[input].load(Ordering::Acquire) < target && start.elapsed() < wait {
        std::thread::sleep(Duration::from_millis(20));
    }
    let safe = safe(&mut lock().progress, marks[input].load(Ordering::Acquire));
    if let Err(e) = commit(&consumer, &spec.topic, &safe, CommitMode::Sync) {
        report(router, Kind::KafkaCommitError, e.to_string());
    }
    Ok(())
}
