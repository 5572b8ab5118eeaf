//! `redis://` inputs (Suricata's Redis output) against a real `redis-server`: a stream read with
//! a consumer group and acknowledged once written, a list as a reliable queue, a plain pop;
//! and `kill -9` of the engine mid-run loses no event of a stream or a list.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::hiredis::RedisServer;
use crate::util::*;

fn event(i: usize) -> String {
    format!(
        "{{\"timestamp\":\"2024-03-01T12:00:00.000000+0000\",\"event_type\":\"flow\",\"src_ip\":\"10.0.{}.{}\",\"dest_ip\":\"10.1.0.1\",\"src_port\":{},\"dest_port\":443,\"proto\":\"TCP\",\"n\":{i}}}",
        i % 7,
        i % 250,
        1024 + i % 5000
    )
}

fn connect(r: &RedisServer) -> redis::Connection {
    redis::Client::open(("127.0.0.1", r.port))
        .unwrap()
        .get_connection()
        .unwrap()
}

/// Writes `n` events the way Suricata does: `XADD key * eve JSON`, or `LPUSH key JSON`.
fn produce(r: &RedisServer, stream: bool, from: usize, n: usize) {
    let mut c = connect(r);
    for chunk in (from..from + n).collect::<Vec<_>>().chunks(1000) {
        let mut p = redis::pipe();
        for &i in chunk {
            if stream {
                p.cmd("XADD").arg("suricata").arg("*").arg("eve").arg(event(i)).ignore();
            } else {
                p.cmd("LPUSH").arg("suricata").arg(event(i)).ignore();
            }
        }
        let _: () = p.query(&mut c).unwrap();
    }
}

/// The `n` of every record of `out.json` (as many times as written).
fn written(env: &Env) -> BTreeMap<u64, usize> {
    let mut m = BTreeMap::new();
    for l in env.lines("out.json") {
        if let Some(n) = u64_member(&l, "n") {
            *m.entry(n).or_insert(0) += 1;
        }
    }
    m
}

fn env_for(r: &RedisServer, query: &str) -> Env {
    env_with(r, query, ANALYZER_PASS)
}

/// An analyzer that takes about 300 µs per event: events spend long enough in the rings for an
/// acknowledgement made before they are written to lose them at a kill.
const SLOW_PASS: &str = "function setup() end\nfunction loop(msg)\n  local t = os.clock() + 0.0003\n  while os.clock() < t do end\n  dragonfly.output_event(default_output, msg)\nend\n";

fn env_with(r: &RedisServer, query: &str, analyzer: &str) -> Env {
    let uri = format!("redis://127.0.0.1:{}/suricata?{query}", r.port);
    // Appended to (no '<'): a restarted engine adds to what the first one wrote.
    let env = Env::simple(&uri, analyzer, "", "");
    env.config(&simple_config(&uri, "", "").replace("file://out.json<", "file://out.json"));
    env
}

fn wait_for(env: &Env, what: &str, n: usize) {
    wait_until(
        Duration::from_secs(60),
        what,
        || written(env).len() >= n,
        || format!("{} distinct events written", written(env).len()),
    );
}

#[test]
fn a_stream_is_read_by_a_consumer_group_and_acknowledged_once_written() {
    let r = RedisServer::start();
    produce(&r, true, 0, 2000);
    let env = env_for(&r, "mode=stream&group=g&consumer=c1&start=0");
    let mut engine = env.spawn(&[]);
    wait_for(&env, "2,000 events", 2000);
    engine.signal(libc::SIGTERM);
    engine.wait(RUN_TIMEOUT).assert_success();
    let w = written(&env);
    assert_eq!(w.len(), 2000);
    assert!(w.values().all(|&c| c == 1), "each event once");
    // In stream order (one flow per shard is not needed: the output keeps input order).
    let order: Vec<u64> = env
        .lines("out.json")
        .iter()
        .filter_map(|l| u64_member(l, "n"))
        .collect();
    assert!(order.windows(2).all(|p| p[0] < p[1]), "in order");
    let pending = r.cli(&["XPENDING", "suricata", "g"]);
    assert!(
        pending.starts_with("0\n") || pending.trim_start().starts_with('0'),
        "nothing pending: {pending}"
    );
}

#[test]
fn a_list_is_a_reliable_queue_and_pop_is_at_most_once() {
    let r = RedisServer::start();
    produce(&r, false, 0, 1500);
    let env = env_for(&r, "mode=list");
    let mut engine = env.spawn(&[]);
    wait_for(&env, "1,500 events", 1500);
    engine.signal(libc::SIGTERM);
    engine.wait(RUN_TIMEOUT).assert_success();
    let order: Vec<u64> = env
        .lines("out.json")
        .iter()
        .filter_map(|l| u64_member(l, "n"))
        .collect();
    assert_eq!(order, (0..1500).collect::<Vec<u64>>(), "every event once, oldest first");
    assert_eq!(r.cli(&["LLEN", "suricata"]).trim(), "0");
    assert_eq!(
        r.cli(&["LLEN", "suricata:processing"]).trim(),
        "0",
        "written events are removed"
    );

    produce(&r, false, 1500, 500);
    let pop = env_for(&r, "mode=pop");
    let mut engine = pop.spawn(&[]);
    wait_for(&pop, "500 popped events", 500);
    engine.signal(libc::SIGTERM);
    engine.wait(RUN_TIMEOUT).assert_success();
    assert_eq!(written(&pop).len(), 500);
    assert_eq!(
        r.cli(&["EXISTS", "suricata:processing"]).trim(),
        "0",
        "pop keeps no processing list"
    );
}

/// kill -9 mid-run, then a restart: every event is written at least once, and what is written
/// twice was in flight at the kill.
fn kill_9_loses_nothing(stream: bool, processing: &str) {
    let r = RedisServer::start();
    let total = 12_000;
    produce(&r, stream, 0, total);
    let list_query = if processing == "suricata:processing" {
        "mode=list".to_string()
    } else {
        format!("mode=list&processing={processing}")
    };
    let query = if stream {
        "mode=stream&group=g&consumer=c1&start=0"
    } else {
        list_query.as_str()
    };
    let env = env_with(&r, query, SLOW_PASS);
    let mut first = env.spawn(&["--shards", "2"]);
    wait_for(&env, "3,000 events", 3_000);
    first.signal(libc::SIGKILL);
    let _ = first.wait(RUN_TIMEOUT);
    let before = written(&env).len();
    assert!(
        before < total,
        "the kill came after every event was written: it tests nothing"
    );
    let mut second = env.spawn(&["--shards", "2"]);
    wait_for(&env, "every event", total);
    second.signal(libc::SIGTERM);
    second.wait(RUN_TIMEOUT).assert_success();
    let w = written(&env);
    assert_eq!(w.len(), total, "no event lost");
    let twice = w.values().filter(|&&c| c > 1).count();
    assert!(
        twice <= total - before,
        "{twice} repeated, more than were left after the kill"
    );
    if stream {
        let pending = r.cli(&["XPENDING", "suricata", "g"]);
        assert!(pending.trim_start().starts_with('0'), "nothing pending: {pending}");
    } else {
        assert_eq!(r.cli(&["LLEN", processing]).trim(), "0");
        assert_eq!(
            r.cli(&["EXISTS", "suricata:processing"]).trim(),
            "0",
            "only the processing list named"
        );
    }
}

#[test]
fn kill_9_loses_no_event_of_a_stream() {
    kill_9_loses_nothing(true, "");
}

#[test]
fn kill_9_loses_no_event_of_a_list() {
    kill_9_loses_nothing(false, "suricata:processing");
}

/// `processing=KEY` (one per engine when several engines read one list): the items go through
/// that list, and after a `kill -9` what it holds is read again.
#[test]
fn kill_9_loses_no_event_of_a_list_with_its_own_processing_list() {
    kill_9_loses_nothing(false, "engine-1:processing");
}

/// Redis restarted without its data while the engine reads a stream from its new entries on
/// (`start=$`, the default): the group is made again after the last entry read, so the entries
/// added before the engine noticed the restart are read too (it was made at `$`, after them,
/// losing them silently).
#[test]
fn a_stream_group_made_again_after_a_restart_misses_nothing() {
    let mut r = RedisServer::start();
    let env = env_for(&r, "mode=stream&group=g&consumer=c1");
    let mut engine = env.spawn(&[]);
    wait_until(
        Duration::from_secs(30),
        "the group made",
        || r.cli(&["XINFO", "GROUPS", "suricata"]).contains('g'),
        String::new,
    );
    produce(&r, true, 0, 1000);
    wait_for(&env, "the first 1,000 events", 1000);
    r.restart();
    produce(&r, true, 1000, 500);
    wait_for(&env, "the events added right after the restart", 1500);
    produce(&r, true, 1500, 500);
    wait_for(&env, "the events added later", 2000);
    engine.signal(libc::SIGTERM);
    engine.wait(RUN_TIMEOUT).assert_success();
    assert_eq!(written(&env).len(), 2000);
    let made = env.log_records_of("input_resumed");
    assert!(
        made.iter().any(|r| r["message"]
            .as_str()
            .unwrap_or("")
            .contains("the consumer group was gone")),
        "{made:?}"
    );
}

/// The stream after a restart without its data has ids below the last one read (its producer
/// gives ids, or the restarted Redis's clock is behind): the group is made again at the new
/// stream's start, so its entries are all read (audit, 2026-12-06: the group was made after
/// the old last id, and every new entry was skipped silently).
#[test]
fn a_new_stream_with_lower_ids_after_a_restart_is_read_whole() {
    let mut r = RedisServer::start();
    let env = env_for(&r, "mode=stream&group=g&consumer=c1&start=0");
    let mut c = connect(&r);
    for i in 0..100u64 {
        let _: String = redis::cmd("XADD")
            .arg("suricata")
            .arg(format!("4000000000000-{}", i + 1))
            .arg("eve")
            .arg(event(i as usize))
            .query(&mut c)
            .unwrap();
    }
    drop(c);
    let mut engine = env.spawn(&[]);
    wait_for(&env, "the first 100 events", 100);
    r.restart();
    produce(&r, true, 100, 100);
    wait_for(&env, "the new stream's 100 events", 200);
    engine.signal(libc::SIGTERM);
    engine.wait(RUN_TIMEOUT).assert_success();
    assert_eq!(written(&env).len(), 200);
    let made = env.log_records_of("input_resumed");
    assert!(
        made.iter()
            .any(|r| r["message"].as_str().unwrap_or("").contains("at the stream's start")),
        "{made:?}"
    );
}

/// Items that are not events are counted and reported, never dropped unseen: a stream entry
/// with no JSON field, and items longer than `max_line_bytes` (a stream entry, a list item),
/// which are skipped as a file's long line is.
#[test]
fn bad_items_are_counted_and_reported() {
    let r = RedisServer::start();
    let mut c = connect(&r);
    let long = format!("{{\"n\":99,\"pad\":\"{}\"}}", "x".repeat(2000));
    let no_json: String = redis::cmd("XADD")
        .arg("suricata")
        .arg("*")
        .arg("a")
        .arg("x")
        .arg("b")
        .arg("y")
        .query(&mut c)
        .unwrap();
    let long_id: String = redis::cmd("XADD")
        .arg("suricata")
        .arg("*")
        .arg("eve")
        .arg(&long)
        .query(&mut c)
        .unwrap();
    let _: String = redis::cmd("XADD")
        .arg("suricata")
        .arg("*")
        .arg("eve")
        .arg(event(1))
        .query(&mut c)
        .unwrap();
    let _: i64 = redis::cmd("LPUSH").arg("list").arg(&long).query(&mut c).unwrap();
    let _: i64 = redis::cmd("LPUSH").arg("list").arg(event(2)).query(&mut c).unwrap();
    let uri = |key: &str, q: &str| format!("redis://127.0.0.1:{}/{key}?{q}", r.port);
    let env = Env::new();
    env.config(&format!(
        "inputs = {{ {{ tag = \"s\", uri = \"{}\", script = \"filter.lua\", default_analyzer = \"a\" }}, {{ tag = \"l\", uri = \"{}\", script = \"filter.lua\", default_analyzer = \"a\" }} }}\n\
         analyzers = {{ {{ tag = \"a\", script = \"a.lua\", default_analyzer = \"\", default_output = \"out\" }} }}\n\
         outputs = {{ {{ tag = \"out\", uri = \"file://out.json\" }} }}\nmax_line_bytes = 1000\n",
        uri("suricata", "mode=stream&start=0"),
        uri("list", "mode=list")
    ));
    env.filter("filter.lua", FILTER_TO_DEFAULT);
    env.analyzer("a.lua", ANALYZER_PASS);
    let mut engine = env.spawn(&[]);
    wait_for(&env, "the two good events", 2);
    wait_until(
        Duration::from_secs(30),
        "the reports",
        || env.log_records_of("line_too_long").len() >= 2 && !env.log_records_of("invalid_line").is_empty(),
        || format!("{:?}", env.log_records()),
    );
    engine.signal(libc::SIGTERM);
    engine.wait(RUN_TIMEOUT).assert_success();
    let w = written(&env);
    assert_eq!(
        w.keys().copied().collect::<Vec<_>>(),
        vec![1, 2],
        "only the good events"
    );
    let invalid = env.log_records_of("invalid_line");
    assert_eq!(invalid.len(), 1, "{invalid:?}");
    let too_long = env.log_records_of("line_too_long");
    assert_eq!(too_long.len(), 2);
    // Each report says which item: a stream entry by its id (line-offset), a list item by its
    // number among the input's items (the long one was pushed first, so read first).
    let at = |r: &serde_json::Value| format!("{}-{}", r["line"], r["offset"]);
    assert_eq!(at(&invalid[0]), no_json, "{invalid:?}");
    let of = |tag: &str| {
        too_long
            .iter()
            .find(|r| r["input"] == tag)
            .unwrap_or_else(|| panic!("{too_long:?}"))
    };
    assert_eq!(at(of("s")), long_id, "{too_long:?}");
    assert_eq!(at(of("l")), "1-0", "{too_long:?}");
    // Everything was acknowledged: nothing is read again.
    assert!(
        r.cli(&["XPENDING", "suricata", "dragonfly-mle"])
            .trim_start()
            .starts_with('0')
    );
    assert_eq!(r.cli(&["LLEN", "list:processing"]).trim(), "0");
}

/// SIGTERM while Redis hangs (stopped with SIGSTOP: connections open, no reply): the engine
/// stops within its bounded waits instead of waiting for Redis to come back.
#[test]
fn the_engine_stops_while_redis_hangs() {
    let r = RedisServer::start();
    produce(&r, false, 0, 1000);
    let env = env_for(&r, "mode=list");
    let mut engine = env.spawn(&[]);
    wait_for(&env, "1,000 events", 1000);
    r.signal(libc::SIGSTOP);
    std::thread::sleep(Duration::from_millis(300));
    engine.signal(libc::SIGTERM);
    let t = std::time::Instant::now();
    let out = engine.wait(Duration::from_secs(90));
    let took = t.elapsed();
    r.signal(libc::SIGCONT);
    out.assert_success();
    assert!(took < Duration::from_secs(60), "stopped after {took:?}");
    assert_eq!(written(&env).len(), 1000);
}

/// Parameters of another mode are refused (`group=` on a list would suggest it can be shared).
#[test]
fn parameters_of_another_mode_are_refused() {
    for q in [
        "mode=list&group=g",
        "mode=pop&processing=p",
        "mode=stream&processing=p",
        "consumer=c",
    ] {
        let env = Env::simple(&format!("redis://127.0.0.1:1/k?{q}"), ANALYZER_PASS, "", "");
        let out = env.run(&["check"]);
        assert!(!out.status.success(), "{q}: accepted");
        assert!(
            out.stderr.contains("only the parameters of the chosen mode"),
            "{q}: {}",
            out.stderr
        );
    }
}

/// A processing list named as the input's own key is refused (audit, 2026-12-06: it passed,
/// and each item was moved into its own list and read again without end: 45,000 lines out of
/// 1,000 events).
#[test]
fn a_processing_list_that_is_the_key_itself_is_refused() {
    let env = Env::simple("redis://127.0.0.1:1/k?mode=list&processing=k", ANALYZER_PASS, "", "");
    let out = env.run(&["check"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        out.stderr.contains("processing=k is the input's own key"),
        "{}",
        out.stderr
    );
}

/// `check` asks a `redis://` input's server: one that answers passes, a wrong port is named
/// with its host and port (it passed before).
#[test]
fn check_asks_the_inputs_redis() {
    let r = RedisServer::start();
    let env = Env::simple(&format!("redis://127.0.0.1:{}/k", r.port), ANALYZER_PASS, "", "");
    let out = env.run(&["check"]);
    assert!(out.status.success(), "{}", out.stderr);
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let env = Env::simple(&format!("redis://127.0.0.1:{closed}/k"), ANALYZER_PASS, "", "");
    let out = env.run(&["check"]);
    assert!(!out.status.success(), "a closed port accepted");
    assert!(
        out.stderr
            .contains(&format!("inputs[1].uri: no answer from redis://127.0.0.1:{closed}/k")),
        "{}",
        out.stderr
    );
}

/// Redis goes away and comes back (restarted, without its data): the input reconnects, makes
/// the stream's group again, and reads what is written after; the engine keeps running.
fn survives_a_redis_restart(stream: bool) {
    let mut r = RedisServer::start();
    produce(&r, stream, 0, 1000);
    let env = env_for(
        &r,
        if stream {
            "mode=stream&group=g&consumer=c1&start=0"
        } else {
            "mode=list"
        },
    );
    let mut engine = env.spawn(&[]);
    wait_for(&env, "the first 1,000 events", 1000);
    r.restart();
    produce(&r, stream, 1000, 500);
    wait_for(&env, "the events written after the restart", 1500);
    engine.signal(libc::SIGTERM);
    engine.wait(RUN_TIMEOUT).assert_success();
    assert_eq!(written(&env).len(), 1500);
    assert!(
        !env.log_records_of("input_resumed").is_empty(),
        "the reconnection is reported: {:?}",
        env.log_records()
    );
}

/// A Redis restarted without its data has lost the stream's group: the claim round that
/// meets that (`NOGROUP`) waits for the read to make the group again, and claiming stays on
/// (it was turned off for the rest of the run, as for a Redis too old for it, so that a dead
/// engine's entries were never taken over after a Redis restart).
#[test]
fn claiming_stays_on_after_redis_lost_the_group() {
    let mut r = RedisServer::start();
    produce(&r, true, 0, 100);
    let env = env_for(&r, "mode=stream&group=g&consumer=c1&start=0&claim=1");
    let mut engine = env.spawn(&[]);
    wait_for(&env, "the first 100 events", 100);
    r.restart();
    // Claim rounds come every second: several meet the new Redis.
    std::thread::sleep(Duration::from_secs(3));
    produce(&r, true, 100, 50);
    wait_for(&env, "the events written after the restart", 150);
    engine.signal(libc::SIGTERM);
    engine.wait(RUN_TIMEOUT).assert_success();
    let off: Vec<_> = env
        .log_records_of("input_error")
        .into_iter()
        .filter(|e| e["message"].as_str().unwrap_or("").contains("claim= is off"))
        .collect();
    assert!(off.is_empty(), "{off:?}");
}

/// A list input whose key holds another type: reported once (it was twice a second),
/// `/health` 503 meanwhile (it stayed 200), and `input_resumed` once the key is a list again
/// (never said); then its events are read.
#[test]
fn a_key_of_another_type_is_reported_once_and_its_recovery_too() {
    let r = RedisServer::start();
    let _: () = redis::cmd("SET")
        .arg("suricata")
        .arg("not a list")
        .query(&mut connect(&r))
        .unwrap();
    let env = env_for(&r, "mode=list");
    let mut engine = env.spawn(&["--http", "127.0.0.1:0"]);
    let addr = crate::ops::http_address(&env);
    wait_until(
        Duration::from_secs(30),
        "an input_error record",
        || !env.log_records_of("input_error").is_empty(),
        || format!("{:?}", env.log_records()),
    );
    std::thread::sleep(Duration::from_millis(3000));
    let errors = env.log_records_of("input_error");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0]["message"].as_str().unwrap().contains("WRONGTYPE"),
        "{errors:?}"
    );
    assert_eq!(crate::ops::request(&addr, "GET", "/health").0, 503);
    let _: () = redis::cmd("DEL").arg("suricata").query(&mut connect(&r)).unwrap();
    produce(&r, false, 0, 100);
    wait_for(&env, "the events pushed after the fix", 100);
    let resumed = env.log_records_of("input_resumed");
    assert_eq!(resumed.len(), 1, "{:?}", env.log_records());
    assert_eq!(crate::ops::request(&addr, "GET", "/health").0, 200);
    engine.signal(libc::SIGTERM);
    engine.wait(RUN_TIMEOUT).assert_success();
    assert_eq!(written(&env).len(), 100);
}

#[test]
fn a_stream_input_survives_a_redis_restart() {
    survives_a_redis_restart(true);
}

#[test]
fn a_list_input_survives_a_redis_restart() {
    survives_a_redis_restart(false);
}

/// A connection lost between Redis moving items to the processing list and the engine reading
/// the replies leaves items there that nobody read: after reconnecting the engine finds them
/// (the list is longer than what it tracks) and reads them; nothing is lost or written twice.
/// The lost replies are simulated: items pushed straight onto the processing list, then every
/// client connection killed.
#[test]
fn a_list_input_reads_what_a_lost_connection_left_unread() {
    let r = RedisServer::start();
    produce(&r, false, 0, 1000);
    let env = env_for(&r, "mode=list");
    let mut engine = env.spawn(&[]);
    wait_for(&env, "1,000 events", 1000);
    wait_until(
        Duration::from_secs(30),
        "the processing list emptied",
        || r.cli(&["LLEN", "suricata:processing"]).trim() == "0",
        String::new,
    );
    let mut c = connect(&r);
    for i in 1000..1005 {
        let _: () = redis::cmd("LPUSH")
            .arg("suricata:processing")
            .arg(event(i))
            .query(&mut c)
            .unwrap();
    }
    r.cli(&["CLIENT", "KILL", "TYPE", "normal"]);
    wait_for(&env, "the 5 unread items", 1005);
    wait_until(
        Duration::from_secs(30),
        "them acknowledged",
        || r.cli(&["LLEN", "suricata:processing"]).trim() == "0",
        || r.cli(&["LLEN", "suricata:processing"]),
    );
    engine.signal(libc::SIGTERM);
    engine.wait(RUN_TIMEOUT).assert_success();
    let w = written(&env);
    assert_eq!(w.len(), 1005);
    assert!(w.values().all(|&n| n == 1), "each event once");
}

/// Two engines read one stream group as consumers c1 and c2; c1 is killed with `kill -9` and
/// never comes back: c2 claims the entries c1 left pending once they are older than `claim=`
/// (1 s here; a minute by default) and reads them, so every event is written and nothing stays
/// pending.
#[test]
fn a_dead_consumers_pending_entries_are_claimed() {
    let r = RedisServer::start();
    let total = 6000;
    produce(&r, true, 0, total);
    let one = env_with(&r, "mode=stream&group=g&consumer=c1&start=0&claim=1", SLOW_PASS);
    let two = env_with(&r, "mode=stream&group=g&consumer=c2&start=0&claim=1", SLOW_PASS);
    let mut first = one.spawn(&["--shards", "1"]);
    let mut second = two.spawn(&["--shards", "1"]);
    wait_until(
        Duration::from_secs(60),
        "both reading",
        || written(&one).len() >= 300 && !written(&two).is_empty(),
        || format!("{} and {}", written(&one).len(), written(&two).len()),
    );
    first.signal(libc::SIGKILL);
    let _ = first.wait(RUN_TIMEOUT);
    let all = || {
        let mut w = written(&one);
        for (n, c) in written(&two) {
            *w.entry(n).or_insert(0) += c;
        }
        w
    };
    wait_until(
        Duration::from_secs(120),
        "every event written",
        || all().len() >= total,
        || format!("{} distinct", all().len()),
    );
    wait_until(
        Duration::from_secs(30),
        "nothing pending",
        || r.cli(&["XPENDING", "suricata", "g"]).trim_start().starts_with('0'),
        || r.cli(&["XPENDING", "suricata", "g"]),
    );
    second.signal(libc::SIGTERM);
    second.wait(RUN_TIMEOUT).assert_success();
    assert_eq!(all().len(), total);
    let claimed = two.log_records_of("input_resumed");
    assert!(
        claimed
            .iter()
            .any(|c| c["message"].as_str().unwrap_or("").contains("claimed")),
        "{claimed:?}"
    );
}

/// A dead consumer's backlog (3,000 entries pending for an hour) is taken over round after
/// round: every entry is written within seconds, where rounds of 500 a quarter of `claim=`
/// apart (15 s with the default 60) took 75 s.
#[test]
fn a_dead_consumers_backlog_is_claimed_round_after_round() {
    let r = RedisServer::start();
    let total = 3000;
    produce(&r, true, 0, total);
    let mut c = connect(&r);
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("suricata")
        .arg("g")
        .arg("0")
        .query(&mut c)
        .unwrap();
    // The dead consumer read everything and never acknowledged; its entries look idle for an
    // hour (XCLAIM's IDLE option sets that).
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("g")
        .arg("dead")
        .arg("COUNT")
        .arg(total)
        .arg("STREAMS")
        .arg("suricata")
        .arg(">")
        .query(&mut c)
        .unwrap();
    let pending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg("suricata")
        .arg("g")
        .arg("-")
        .arg("+")
        .arg(total)
        .query(&mut c)
        .unwrap();
    assert_eq!(pending.len(), total);
    let mut claim = redis::cmd("XCLAIM");
    claim.arg("suricata").arg("g").arg("dead").arg(0);
    for (id, ..) in &pending {
        claim.arg(id);
    }
    let _: redis::Value = claim.arg("IDLE").arg(3_600_000).arg("JUSTID").query(&mut c).unwrap();
    let env = env_for(&r, "mode=stream&group=g&consumer=c2&start=0");
    let mut engine = env.spawn(&[]);
    wait_until(
        Duration::from_secs(30),
        "the whole backlog written",
        || written(&env).len() >= total,
        || format!("{} distinct events written", written(&env).len()),
    );
    engine.signal(libc::SIGTERM);
    engine.wait(RUN_TIMEOUT).assert_success();
    let w = written(&env);
    assert_eq!(w.len(), total);
    assert!(w.values().all(|&n| n == 1), "each event once");
    assert!(
        r.cli(&["XPENDING", "suricata", "g"]).trim_start().starts_with('0'),
        "{}",
        r.cli(&["XPENDING", "suricata", "g"])
    );
}

/// A stream read whose reply was lost with the connection made entries pending for this
/// consumer that nobody read: after reconnecting, the engine reads its pending entries it does
/// not track (before, they waited for a restart). The lost reply is simulated: entries read as
/// the engine's consumer by the test, then every client connection killed.
#[test]
fn a_stream_input_reads_what_a_lost_connection_left_pending() {
    let r = RedisServer::start();
    produce(&r, true, 0, 1000);
    let env = env_for(&r, "mode=stream&group=g&consumer=c1&start=0");
    let mut engine = env.spawn(&[]);
    wait_for(&env, "1,000 events", 1000);
    produce(&r, true, 1000, 5);
    // Taken by "the engine" (its consumer name), reply never seen by it.
    let mut c = connect(&r);
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("g")
        .arg("c1")
        .arg("COUNT")
        .arg(5)
        .arg("STREAMS")
        .arg("suricata")
        .arg(">")
        .query(&mut c)
        .unwrap();
    r.cli(&["CLIENT", "KILL", "TYPE", "normal"]);
    wait_for(&env, "the 5 pending entries", 1005);
    wait_until(
        Duration::from_secs(30),
        "them acknowledged",
        || r.cli(&["XPENDING", "suricata", "g"]).trim_start().starts_with('0'),
        || r.cli(&["XPENDING", "suricata", "g"]),
    );
    engine.signal(libc::SIGTERM);
    engine.wait(RUN_TIMEOUT).assert_success();
    let w = written(&env);
    assert_eq!(w.len(), 1005);
    assert!(w.values().all(|&n| n == 1), "each event once");
}
