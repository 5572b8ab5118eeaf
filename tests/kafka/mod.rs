//! Kafka through a real Kafka-protocol broker (`tansu`, in memory; `.ci/run` installs it with
//! `cargo install tansu`): 100,000 events from a topic through the engine to a topic, per-key
//! order kept; and `kill -9` of the engine mid-run, then a restart in the same consumer group:
//! every event arrives at least once, duplicates counted and bounded.

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use crate::util::*;

/// A `tansu` broker on a free port, in memory, killed on drop.
pub struct Broker {
    pub port: u16,
    child: Child,
}

fn tansu() -> String {
    let home = std::env::var("HOME").unwrap_or_default();
    let local = format!("{home}/.cargo/bin/tansu");
    if std::path::Path::new(&local).exists() { local } else { "tansu".into() }
}

impl Broker {
    pub fn start() -> Broker {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(tansu())
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu must be installed (cargo install tansu --locked --features dynostore; .ci/run does it)");
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t.elapsed() < Duration::from_secs(20), "tansu did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Broker { port, child }
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn create_topic(&self, name: &str, partitions: u32) {
        let out = Command::new(tansu())
            .args(["topic", "create", "--broker", &format!("tcp://127.0.0.1:{}", self.port)])
            .args(["--partitions", &partitions.to_string(), name])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "topic create {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Produces `events` (key, payload) and waits until all are acknowledged.
    pub fn produce(&self, topic: &str, events: &[(String, String)]) {
        let p: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", self.brokers())
            .set("linger.ms", "5")
            .set("queue.buffering.max.messages", "200000")
            .create()
            .unwrap();
        for (k, v) in events {
            while p.send(BaseRecord::to(topic).key(k).payload(v)).is_err() {
                p.poll(Duration::from_millis(10));
            }
            p.poll(Duration::ZERO);
        }
        p.flush(Duration::from_secs(60)).unwrap();
    }

    /// Reads `topic` from the start until `done` says so (or 120 s pass): (partition, payload).
    pub fn consume(&self, topic: &str, mut done: impl FnMut(&[(i32, Vec<u8>)]) -> bool) -> Vec<(i32, Vec<u8>)> {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.brokers())
            .set(
                "group.id",
                format!(
                    "test-reader-{}-{}",
                    std::process::id(),
                    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
                ),
            )
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        c.subscribe(&[topic]).unwrap();
        let mut got = Vec::new();
        let t = Instant::now();
        while !done(&got) {
            assert!(
                t.elapsed() < Duration::from_secs(120),
                "consumed {} messages of {topic}",
                got.len()
            );
            if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
                got.push((m.partition(), m.payload().unwrap_or_default().to_vec()));
            }
        }
        got
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `n` events over `flows` flows: (key, payload).
fn events(n: usize, flows: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| {
            let f = i % flows;
            let e = format!(
                "{{\"event_type\":\"flow\",\"src_ip\":\"10.0.{}.{}\",\"src_port\":{},\"dest_ip\":\"10.1.0.1\",\"dest_port\":443,\"proto\":\"TCP\",\"flow\":{f},\"n\":{i}}}",
                f / 250,
                f % 250,
                1024 + f
            );
            (format!("f{f}"), e)
        })
        .collect()
}

fn config(brokers: &str, group: &str) -> String {
    format!(
        "inputs = {{ {{ tag = \"k\", uri = \"kafka://{brokers}/in?group={group}&offset=earliest\", script = \"filter.lua\", default_analyzer = \"a\" }} }}\n\
         analyzers = {{ {{ tag = \"a\", script = \"a.lua\", default_analyzer = \"\", default_output = \"out\" }} }}\n\
         outputs = {{ {{ tag = \"out\", uri = \"kafka://{brokers}/out\" }} }}\n"
    )
}

/// Checks every event is there and, per flow, in one partition in increasing order (counting
/// only first arrivals); returns the number of duplicates.
fn check(got: &[(i32, Vec<u8>)], n: usize) -> usize {
    let mut seen = BTreeSet::new();
    let mut last: BTreeMap<u64, u64> = BTreeMap::new();
    let mut part_of: BTreeMap<u64, i32> = BTreeMap::new();
    let mut dups = 0;
    for (p, payload) in got {
        let f = u64_member(payload, "flow").unwrap();
        let i = u64_member(payload, "n").unwrap();
        if !seen.insert(i) {
            dups += 1;
            continue;
        }
        assert_eq!(*part_of.entry(f).or_insert(*p), *p, "flow {f} in two partitions");
        if let Some(&prev) = last.get(&f) {
            assert!(prev < i, "flow {f}: {i} after {prev}");
        }
        last.insert(f, i);
    }
    assert_eq!(seen.len(), n, "events missing");
    dups
}

fn env_with(config: &str) -> Env {
    let env = Env::new();
    env.config(config);
    env.filter("filter.lua", FILTER_TO_DEFAULT);
    env.analyzer("a.lua", ANALYZER_PASS);
    env
}

#[test]
fn kafka_in_kafka_out_100k_in_order() {
    let broker = Broker::start();
    broker.create_topic("in", 4);
    broker.create_topic("out", 4);
    let n = 100_000;
    broker.produce("in", &events(n, 1000));
    let env = env_with(&config(&broker.brokers(), "g1"));
    let mut engine = env.spawn(&["--shards", "2"]);
    let got = broker.consume("out", |g| g.len() >= n);
    engine.signal(libc::SIGINT);
    engine.wait(Duration::from_secs(60)).assert_success();
    assert_eq!(check(&got, n), 0);
}

#[test]
fn kafka_kill_9_and_restart_loses_nothing() {
    let broker = Broker::start();
    broker.create_topic("in", 4);
    broker.create_topic("out", 4);
    let n = 100_000;
    broker.produce("in", &events(n, 1000));
    let env = env_with(&config(&broker.brokers(), "g2"));
    let mut engine = env.spawn(&["--shards", "2"]);
    let first = broker.consume("out", |g| g.len() >= n / 4);
    engine.signal(libc::SIGKILL);
    let _ = engine.wait(Duration::from_secs(10));
    let mut engine = env.spawn(&["--shards", "2"]);
    let got = broker.consume("out", |g| {
        g.iter().filter_map(|(_, p)| u64_member(p, "n")).collect::<BTreeSet<_>>().len() >= n
    });
    engine.signal(libc::SIGINT);
    engine.wait(Duration::from_secs(60)).assert_success();
    let dups = check(&got, n);
    eprintln!("kafka kill -9: {} read before the kill, {dups} duplicates", first.len());
    assert!(dups <= 60_000, "{dups} duplicates");
}
