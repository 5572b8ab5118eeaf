//! `kafka://host:port[,host:port...]/topic?group=G&offset=earliest|latest` input (rdkafka): a
//! member of consumer group G. Each message is one event. Offsets are committed only once the
//! outputs have written (and flushed, or had acknowledged) every event up to them, so delivery
//! is at-least-once: after a crash the group re-reads from the last commit. Several engines in
//! one group (on one machine or many) split the topic's partitions between them; a partition's
//! messages are read in order, so the events of one flow (one partition, when producers key
//! by flow) keep their order.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::Router;
use super::checkpoint::{Progress, Watermarks};

/// Where a Kafka input reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaSpec {
    pub brokers: String,
    pub topic: String,
    pub group: String,
    /// `auto.offset.reset` for partitions the group has no commit for.
    pub offset: String,
    /// Static group membership (`group.instance.id`): a restarted engine with the same id takes
    /// its partitions back at once instead of after the session timeout.
    pub instance: Option<String>,
    /// Manual assignment (`partitions=0,1,...`): these partitions, no group membership (the
    /// group still stores the commits). For brokers or setups without group rebalancing.
    pub partitions: Option<Vec<i32>>,
}

/// How often offsets that became safe are committed.
const COMMIT_EVERY: Duration = Duration::from_millis(200);
/// How long a stopping input waits for its last events to be written before its last commit.
const DRAIN_WAIT: Duration = Duration::from_secs(30);

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

fn commit(consumer: &BaseConsumer, topic: &str, offsets: &BTreeMap<i32, i64>, mode: CommitMode) -> Result<(), String> {
    if offsets.is_empty() {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::new();
    for (&p, &o) in offsets {
        tpl.add_partition_offset(topic, p, Offset::Offset(o))
            .map_err(|e| e.to_string())?;
    }
    consumer.commit(&tpl, mode).map_err(|e| e.to_string())
}

/// Consumes until the engine stops, then waits for the events read to be written and commits
/// their offsets.
pub fn read_kafka(spec: &KafkaSpec, input: usize, marks: &Watermarks, router: &mut Router) -> Result<(), String> {
    let mut config = ClientConfig::new();
    if let Some(id) = &spec.instance {
        config.set("group.instance.id", id);
    }
    let consumer: BaseConsumer = config
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
        .create()
        .map_err(|e| format!("kafka://{}/{}: {e}", spec.brokers, spec.topic))?;
    match &spec.partitions {
        None => consumer.subscribe(&[&spec.topic]),
        Some(ps) => {
            // Resume each partition at the group's committed offset (else auto.offset.reset).
            let mut tpl = TopicPartitionList::new();
            for &p in ps {
                tpl.add_partition_offset(&spec.topic, p, Offset::Stored)
                    .map_err(|e| format!("kafka://{}/{}: {e}", spec.brokers, spec.topic))?;
            }
            consumer.assign(&tpl)
        }
    }
    .map_err(|e| format!("kafka://{}/{}: {e}", spec.brokers, spec.topic))?;
    router.opened();
    // Where each assigned partition resumes (its committed offset), to check that the broker
    // delivers from there: a later first offset means messages were skipped, which at-least-
    // once cannot allow to pass silently (tansu did it when a commit fell inside a batch).
    let mut resume: BTreeMap<i32, i64> = BTreeMap::new();
    if let Some(ps) = &spec.partitions {
        let mut q = TopicPartitionList::new();
        for &p in ps {
            q.add_partition(&spec.topic, p);
        }
        if let Ok(tpl) = consumer.committed_offsets(q, Duration::from_secs(5)) {
            for e in tpl.elements() {
                if let Offset::Offset(o) = e.offset() {
                    resume.insert(e.partition(), o);
                }
            }
        }
    }
    let mut progress = Progress::new(MERGE);
    let mut last_commit = Instant::now();
    let mut idle = false;
    let report = |router: &Router, what: &str, e: String| {
        router.report(what, 0, 0, 0, &format!("kafka://{}/{}: {e}", spec.brokers, spec.topic));
    };
    while !router.stopping() {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                idle = false;
                let payload = m.payload().unwrap_or_default();
                router.add_bytes(payload.len());
                let mut line = payload;
                while let Some(l) = line.strip_suffix(b"\n") {
                    line = l;
                }
                router.line(line, m.offset().max(0) as u64, m.partition().max(0) as u64);
                let p = m.partition();
                if let Some(want) = resume.remove(&p)
                    && m.offset() > want
                {
                    report(
                        router,
                        "kafka_gap",
                        format!(
                            "partition {p}: resuming at the committed offset {want}, the broker delivered offset {} first ({} messages skipped)",
                            m.offset(),
                            m.offset() - want
                        ),
                    );
                }
                progress.note(router.seq(), (p, m.offset() + 1), |last| last.0 == p);
            }
            Some(Err(e)) => report(router, "kafka_error", e.to_string()),
            None => {
                if !idle {
                    router.flush();
                    idle = true;
                }
            }
        }
        if last_commit.elapsed() >= COMMIT_EVERY {
            last_commit = Instant::now();
            let safe = safe(&mut progress, marks[input].load(Ordering::Acquire));
            if let Err(e) = commit(&consumer, &spec.topic, &safe, CommitMode::Async) {
                report(router, "kafka_commit_error", e);
            }
        }
    }
    // Stopping: hand out what is batched, wait for it to be written, commit synchronously.
    router.flush();
    let target = router.seq();
    let start = Instant::now();
    while marks[input].load(Ordering::Acquire) < target && start.elapsed() < DRAIN_WAIT {
        std::thread::sleep(Duration::from_millis(20));
    }
    let safe = safe(&mut progress, marks[input].load(Ordering::Acquire));
    if let Err(e) = commit(&consumer, &spec.topic, &safe, CommitMode::Sync) {
        report(router, "kafka_commit_error", e);
    }
    Ok(())
}
