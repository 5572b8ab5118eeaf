//! `redis://HOST:PORT/KEY` input: Suricata's Redis output (`filetype: redis`) as a source.
//!
//! - `mode=list` (default): a reliable queue. Each event is moved (`LMOVE`, pipelined 500 at a
//!   time) from `KEY` to `KEY:processing` (or `processing=`) and removed from there (`LTRIM`)
//!   once every output has written it; after a crash the events left in the processing list
//!   are read again first. At-least-once.
//! - `mode=pop`: events are popped (`RPOP key count`): gone from Redis once read, so a crash
//!   loses what was in flight. At-most-once, documented as such.
//! - `mode=stream`: `XREADGROUP` as `consumer` of `group` (created when missing), entries
//!   acknowledged (`XACK`) once written; after a crash the consumer's pending entries are read
//!   again first. At-least-once. An entry's event is its `eve` field (Suricata's), else its
//!   first field whose value is a JSON object.
//!
//! Lists are taken from the right by default (Suricata's `list`/`lpush` mode pushes left);
//! `side=left` is for `rpush` producers. Redis being away (or hung, or the key of another type)
//! is reported and waited out, never the input's end; every wait on it is bounded.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use redis::{Connection, Value};

use super::Router;
use super::checkpoint::Watermarks;
use crate::config::types::{RedisInMode, RedisInSpec};
use crate::diag::Kind;

/// Events asked for per round trip.
const BATCH: usize = 500;
/// Pages of pending entries looked at per claiming round (of BATCH each).
const CLAIM_PAGES: usize = 20;
/// How long a stream read blocks when nothing is there (ms).
const BLOCK_MS: usize = 100;
/// How long a reply (or a write) may take before the connection counts as lost.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stopping reader waits for what it read to be written.
const DRAIN_WAIT: Duration = Duration::from_secs(30);

/// What was read and is not acknowledged yet: per entry, the sequence number after it and how
/// to acknowledge it.
enum Unacked {
    /// Items taken into the processing list (trimmed from its right end, oldest first).
    List(VecDeque<(u64, u64)>),
    /// Stream entry ids.
    Stream(VecDeque<(u64, String)>),
    None,
}

/// Reads until the engine stops, then waits for what was read to be written and acknowledges it.
/// Redis problems are reported and waited out, never an end: what is not acknowledged stays
/// in Redis and is read again.
pub(crate) fn read_redis(spec: &RedisInSpec, input: usize, marks: &Watermarks, max_line: usize, router: &mut Router) {
    let report = |router: &Router, e: &redis::RedisError| {
        let what = if e.is_timeout() {
            format!(
                "no reply within {} s (Redis hung or unreachable)",
                READ_TIMEOUT.as_secs()
            )
        } else {
            e.to_string()
        };
        router.report(Kind::InputError, 0, 0, 0, &format!("{}: {what}", spec.name()));
    };
    let processing = match &spec.mode {
        RedisInMode::List { processing, .. } => processing.clone(),
        _ => String::new(),
    };
    let mut unacked = match &spec.mode {
        RedisInMode::List { .. } => Unacked::List(VecDeque::new()),
        RedisInMode::Stream { .. } => Unacked::Stream(VecDeque::new()),
        RedisInMode::Pop { .. } => Unacked::None,
    };
    // Redis not there yet, or the key not usable (another type): reported once, tried again
    // every second until it works (or the engine stops: nothing was read, nothing is lost).
    let (mut told, since) = (false, Instant::now());
    let con = loop {
        let started = connect(spec)
            .and_then(|mut c| resume_left(&mut c, spec, &processing, max_line, router, &mut unacked).map(|()| c));
        match started {
            Ok(c) => break c,
            // Stopping: nothing was read, nothing is lost (not a missing input at the end).
            Err(_) if router.stopping() => {
                router.set_missing(false);
                return;
            }
            Err(e) => {
                if !told {
                    report(router, &e);
                    told = true;
                    // Down for `/health` (503) until it works.
                    router.set_missing(true);
                }
                // What a failed attempt already routed stays tracked: the next attempt skips
                // those pending entries (a list's LRANGE is taken whole or not at all).
                wait_a_while(router, Duration::from_secs(1));
            }
        }
    };
    if told {
        router.set_missing(false);
        router.info(
            Kind::InputResumed,
            &format!("{}: reading after {:.1} s", spec.name(), since.elapsed().as_secs_f64()),
        );
    }
    router.opened();
    let mut last_id = last_stream_id(&unacked, None);
    let mut last_ack = Instant::now();
    let mut claim_every = match &spec.mode {
        RedisInMode::Stream {
            claim_after: Some(idle),
            ..
        } => Some((*idle / 4).max(Duration::from_secs(1))),
        _ => None,
    };
    let mut last_claim: Option<Instant> = None;
    // Since when Redis refuses the reads (a key of another type, a cross-slot pair on a
    // cluster): reported once, `/health` 503, tried again every second until they work.
    let mut refused: Option<Instant> = None;
    let mut con = Some(con);
    while !router.stopping() {
        let Some(c) = con.as_mut() else {
            con = reconnect(spec, router);
            if let Some(c) = con.as_mut() {
                let synced = match &spec.mode {
                    RedisInMode::Stream { .. } => resync_stream(c, spec, max_line, router, &mut unacked),
                    _ => resync_list(c, &processing, max_line, router, &mut unacked),
                };
                if let Err(e) = synced {
                    report(router, &e);
                    con = None;
                }
            }
            continue;
        };
        if let Some(every) = claim_every
            && last_claim.is_none_or(|t| t.elapsed() >= every)
        {
            last_claim = Some(Instant::now());
            match claim(c, spec, max_line, router, &mut unacked) {
                // A full batch: more may be waiting (a dead consumer's backlog), claimed again
                // after this round's read instead of a quarter of `claim=` later.
                Ok(n) if n >= BATCH => last_claim = None,
                Ok(_) => {}
                Err(e) if lost(&e) => {
                    report(router, &e);
                    con = None;
                    continue;
                }
                // The group is gone (Redis restarted without its data): the read below makes
                // it again, and the next round claims as before.
                Err(e) if e.code() == Some("NOGROUP") => {}
                // Refused (XPENDING ... IDLE needs Redis 6.2): said once, then not tried again.
                Err(e) => {
                    router.report(
                        Kind::InputError,
                        0,
                        0,
                        0,
                        &format!(
                            "{}: claiming other consumers' pending entries failed ({e}); claim= is off for this run",
                            spec.name()
                        ),
                    );
                    claim_every = None;
                }
            }
        }
        let got = match read_batch(c, spec, &processing, max_line, router, &mut unacked) {
            Ok(n) => {
                if let Some(since) = refused.take() {
                    router.set_missing(false);
                    router.info(
                        Kind::InputResumed,
                        &format!(
                            "{}: reading again after {:.1} s",
                            spec.name(),
                            since.elapsed().as_secs_f64()
                        ),
                    );
                }
                n
            }
            Err(e) => {
                if refused.is_none() || lost(&e) || e.code() == Some("NOGROUP") {
                    report(router, &e);
                }
                if lost(&e) {
                    con = None;
                } else if e.code() == Some("NOGROUP") {
                    // The stream or its group is gone (a Redis that restarted without its
                    // data): made again after the last entry read, unless the stream's newest
                    // entry is older than that (a new stream, whose ids are below the last one
                    // read: all of it is read), so that what was added meanwhile is read.
                    let at = match &last_id {
                        Some(id) if !newer_stream(c, &spec.key, id) => id.clone(),
                        _ => "0".into(),
                    };
                    match create_group_at(c, spec, &at) {
                        Ok(()) => router.info(
                            Kind::InputResumed,
                            &format!(
                                "{}: the consumer group was gone (Redis restarted without its data?); made again {}",
                                spec.name(),
                                if at == "0" {
                                    "at the stream's start (the last entry read is not in it: a new stream)".to_string()
                                } else {
                                    format!("after entry {at}, the last one read")
                                }
                            ),
                        ),
                        Err(e) => report(router, &e),
                    }
                } else {
                    if refused.is_none() {
                        refused = Some(Instant::now());
                        router.set_missing(true);
                    }
                    wait_a_while(router, Duration::from_secs(1));
                }
                0
            }
        };
        last_id = last_stream_id(&unacked, last_id);
        if got == 0 {
            router.flush();
            if !matches!(spec.mode, RedisInMode::Stream { .. }) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if last_ack.elapsed() >= Duration::from_millis(200)
            && let Some(c) = con.as_mut()
        {
            last_ack = Instant::now();
            let written = marks[input].load(Ordering::Acquire);
            if let Err(e) = acknowledge(c, spec, &processing, &mut unacked, written) {
                report(router, &e);
                if lost(&e) {
                    con = None;
                }
            }
        }
    }
    if refused.is_some() {
        // Stopping while refused: nothing was read, nothing is lost (not a missing input).
        router.set_missing(false);
    }
    // Stopping: hand out what is batched, wait for it to be written, acknowledge (without
    // Redis, what was not acknowledged is read again after a restart: at-least-once).
    router.flush();
    let target = router.seq();
    let start = Instant::now();
    while marks[input].load(Ordering::Acquire) < target && start.elapsed() < DRAIN_WAIT {
        std::thread::sleep(Duration::from_millis(20));
    }
    let written = marks[input].load(Ordering::Acquire);
    let acked = match con {
        Some(mut c) => acknowledge(&mut c, spec, &processing, &mut unacked, written),
        None => connect(spec).and_then(|mut c| acknowledge(&mut c, spec, &processing, &mut unacked, written)),
    };
    if let Err(e) = acked {
        // Not a loss: what is not acknowledged stays in Redis and is read again next time.
        router.report(
            Kind::InputError,
            0,
            0,
            0,
            &format!(
                "{}: acknowledging at the stop failed ({e}); what was written since the last acknowledgement is read again after a restart",
                spec.name()
            ),
        );
    }
}

/// Claims the entries other consumers of the stream's group have left pending longer than
/// `claim_after` (an engine that died and is not coming back) and reads them here; they are
/// acknowledged once written, as this consumer's own. How many were found to claim (those
/// deleted from the stream meanwhile are not read).
fn claim(
    con: &mut Connection,
    spec: &RedisInSpec,
    max_line: usize,
    router: &mut Router,
    unacked: &mut Unacked,
) -> redis::RedisResult<usize> {
    let RedisInMode::Stream {
        group,
        consumer,
        claim_after: Some(idle),
        ..
    } = &spec.mode
    else {
        return Ok(0);
    };
    let ms = idle.as_millis() as u64;
    // (id, consumer) of each entry pending too long, another consumer's: page by page (this
    // consumer's own idle entries, an output stalled past `claim=`, must not hide the others),
    // up to BATCH of them and a bounded number of pages per round.
    let mut ids: Vec<Vec<u8>> = Vec::new();
    let mut from: Vec<String> = Vec::new();
    let mut start = "-".to_string();
    for _ in 0..CLAIM_PAGES {
        let pending: Value = redis::cmd("XPENDING")
            .arg(&spec.key)
            .arg(group)
            .arg("IDLE")
            .arg(ms)
            .arg(&start)
            .arg("+")
            .arg(BATCH)
            .query(con)?;
        let Value::Array(pending) = pending else { break };
        let mut last = None;
        for p in &pending {
            let Value::Array(f) = p else { continue };
            let (Some(id), Some(owner)) = (f.first().and_then(bytes), f.get(1).and_then(bytes)) else {
                continue;
            };
            last = Some(id.to_vec());
            if owner != consumer.as_bytes() && ids.len() < BATCH {
                ids.push(id.to_vec());
                let owner = String::from_utf8_lossy(owner).into_owned();
                if !from.contains(&owner) {
                    from.push(owner);
                }
            }
        }
        match last {
            // The next page starts after the last id seen (an exclusive start).
            Some(id) if pending.len() == BATCH && ids.len() < BATCH => {
                start = format!("({}", String::from_utf8_lossy(&id));
            }
            _ => break,
        }
    }
    if ids.is_empty() {
        return Ok(0);
    }
    let claimed: Value = redis::cmd("XCLAIM")
        .arg(&spec.key)
        .arg(group)
        .arg(consumer)
        .arg(ms)
        .arg(&ids)
        .query(con)?;
    // Shaped as an XREADGROUP reply of one stream, for the same reading.
    let as_read = Value::Array(vec![Value::Array(vec![
        Value::BulkString(spec.key.as_bytes().to_vec()),
        claimed,
    ])]);
    let entries = stream_entries(&as_read);
    let n = entries.len();
    for (id, ev) in entries {
        take(router, &ev, max_line, unacked, Some(id));
    }
    let tried = ids.len();
    if n > 0 {
        router.info(
            Kind::InputResumed,
            &format!(
                "{}: claimed {n} entries pending for over {} s with {} of group {group} (gone?); they are read here",
                spec.name(),
                idle.as_secs(),
                from.join(", ")
            ),
        );
    }
    Ok(tried)
}

/// The newest stream entry read so far (`prev` when nothing new is tracked).
fn last_stream_id(unacked: &Unacked, prev: Option<String>) -> Option<String> {
    // An id `ms-seq` as numbers (claimed entries are older than what was read before them).
    let key = |id: &str| {
        let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
        (ms.parse::<u64>().unwrap_or(0), seq.parse::<u64>().unwrap_or(0))
    };
    match (unacked, prev) {
        (Unacked::Stream(q), prev) => match (q.back(), prev) {
            (Some((_, id)), Some(p)) if key(id) <= key(&p) => Some(p),
            (Some((_, id)), _) => Some(id.clone()),
            (None, p) => p,
        },
        (_, prev) => prev,
    }
}

/// At the start: what a crash left (the processing list, or the consumer's pending entries)
/// is read again first; the stream's group is made when missing.
fn resume_left(
    con: &mut Connection,
    spec: &RedisInSpec,
    processing: &str,
    max_line: usize,
    router: &mut Router,
    unacked: &mut Unacked,
) -> redis::RedisResult<()> {
    match &spec.mode {
        RedisInMode::List { .. } => {
            let left: Vec<Vec<u8>> = redis::cmd("LRANGE").arg(processing).arg(0).arg(-1).query(con)?;
            // LMOVE put each at the left: the oldest is at the right end.
            for item in left.iter().rev() {
                take(router, item, max_line, unacked, None);
            }
            if !left.is_empty() {
                router.info(
                    Kind::InputResumed,
                    &format!(
                        "{}: {} events left in {processing} by a previous run are read again",
                        spec.name(),
                        left.len()
                    ),
                );
            }
        }
        RedisInMode::Stream { .. } => {
            create_group(con, spec)?;
            // Own pending entries first (read but not acknowledged by a previous run).
            let (again, gone) = read_own_pending(con, spec, max_line, router, unacked)?;
            if again > 0 {
                let msg = format!(
                    "{}: {again} entries a previous run read but did not acknowledge are read again",
                    spec.name()
                );
                router.info(Kind::InputResumed, &msg);
            }
            if gone > 0 {
                router.report(
                    Kind::InputError,
                    0,
                    0,
                    0,
                    &format!(
                        "{}: {gone} entries a previous run read but did not acknowledge were deleted from the stream since (trimmed): they cannot be read again",
                        spec.name()
                    ),
                );
            }
        }
        RedisInMode::Pop { .. } => {}
    }
    Ok(())
}

/// A connection with bounded waits: connecting (and the handshake) 5 s, each reply or write
/// 10 s, so that a hung Redis (stopped, partitioned) cannot hold a stopping engine.
fn connect(spec: &RedisInSpec) -> redis::RedisResult<Connection> {
    let info = redis::IntoConnectionInfo::into_connection_info((spec.host.as_str(), spec.port))?
        .set_redis_settings(redis::RedisConnectionInfo::default().set_skip_set_lib_name());
    let client = redis::Client::open(info)?;
    let con = client.get_connection_with_timeout(Duration::from_secs(5))?;
    con.set_read_timeout(Some(READ_TIMEOUT))?;
    con.set_write_timeout(Some(READ_TIMEOUT))?;
    Ok(con)
}

/// Whether stream `key` is a new one next to entry `id` last read: empty, or its newest
/// entry's id below `id` (false when it cannot be asked: the group is then made after `id`).
fn newer_stream(con: &mut Connection, key: &str, id: &str) -> bool {
    let parse = |s: &str| -> Option<(u64, u64)> {
        let (ms, seq) = s.split_once('-').unwrap_or((s, "0"));
        Some((ms.parse().ok()?, seq.parse().ok()?))
    };
    let r: redis::RedisResult<Value> = redis::cmd("XREVRANGE")
        .arg(key)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query(con);
    let newest = match r {
        Ok(Value::Array(a)) => match a.first() {
            None => return true,
            Some(Value::Array(entry)) => match entry.first() {
                Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                Some(Value::SimpleString(s)) => s.clone(),
                _ => return false,
            },
            Some(_) => return false,
        },
        _ => return false,
    };
    matches!((parse(&newest), parse(id)), (Some(n), Some(l)) if n < l)
}

/// Creates the stream's consumer group (and the stream) unless it exists.
fn create_group(con: &mut Connection, spec: &RedisInSpec) -> redis::RedisResult<()> {
    let RedisInMode::Stream { start, .. } = &spec.mode else {
        return Ok(());
    };
    create_group_at(con, spec, start)
}

/// Creates the stream's consumer group (and the stream) at entry `start` unless it exists.
fn create_group_at(con: &mut Connection, spec: &RedisInSpec, start: &str) -> redis::RedisResult<()> {
    let RedisInMode::Stream { group, .. } = &spec.mode else {
        return Ok(());
    };
    let created: redis::RedisResult<Value> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&spec.key)
        .arg(group)
        .arg(start)
        .arg("MKSTREAM")
        .query(con);
    match created {
        Err(e) if e.code() != Some("BUSYGROUP") => Err(e),
        _ => Ok(()),
    }
}

/// Whether the connection is gone (as opposed to an error reply).
fn lost(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout()
}

/// Sleeps up to `d`, waking for a stop.
fn wait_a_while(router: &Router, d: Duration) {
    let t = Instant::now();
    while t.elapsed() < d && !router.stopping() {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A new connection after one was lost: tried every second until Redis answers; `None` when
/// the engine stops first. What was read and not acknowledged stays so: it is acknowledged on
/// the new connection once written (or read again after a restart).
fn reconnect(spec: &RedisInSpec, router: &Router) -> Option<Connection> {
    let since = Instant::now();
    router.set_missing(true);
    while !router.stopping() {
        wait_a_while(router, Duration::from_secs(1));
        // Answering a PING, not only accepting the connection (a hung Redis's kernel does).
        let probed = connect(spec).and_then(|mut c| {
            c.set_read_timeout(Some(Duration::from_secs(1)))?;
            redis::cmd("PING").query::<Value>(&mut c)?;
            c.set_read_timeout(Some(READ_TIMEOUT))?;
            Ok(c)
        });
        if let Ok(c) = probed {
            router.set_missing(false);
            router.info(
                Kind::InputResumed,
                &format!(
                    "{}: connected again after {:.1} s",
                    spec.name(),
                    since.elapsed().as_secs_f64()
                ),
            );
            return Some(c);
        }
    }
    router.set_missing(false);
    None
}

fn xreadgroup(group: &str, consumer: &str, key: &str, from: &str, block: Option<usize>) -> redis::Cmd {
    let mut c = redis::cmd("XREADGROUP");
    c.arg("GROUP").arg(group).arg(consumer).arg("COUNT").arg(BATCH);
    if let Some(ms) = block {
        c.arg("BLOCK").arg(ms);
    }
    c.arg("STREAMS").arg(key).arg(from);
    c
}

/// Routes one event (one longer than `max_line` is reported and skipped, as a file's line
/// is) and remembers how to acknowledge it.
fn take(router: &mut Router, item: &[u8], max_line: usize, unacked: &mut Unacked, id: Option<String>) {
    router.add_bytes(item.len());
    let mut line = item;
    while let Some(l) = line.strip_suffix(b"\n") {
        line = l;
    }
    // Where a report says the item was: a stream entry's id as its two numbers (`line` the
    // milliseconds, `offset` the sequence: `XRANGE KEY line-offset line-offset` shows it); a
    // list item's number among the events this input has read (1-based, `offset` 0).
    let (line_no, offset) = match id.as_deref().and_then(|id| id.split_once('-')) {
        Some((ms, n)) => (ms.parse().unwrap_or(0), n.parse().unwrap_or(0)),
        None => (router.seq() + 1, 0),
    };
    if line.len() > max_line {
        router.too_long(line_no, offset, line.len(), max_line);
    } else {
        router.line(line, line_no, offset);
    }
    let seq = router.seq();
    match (unacked, id) {
        (Unacked::List(q), _) => match q.back_mut() {
            // Items with no line in between (blank ones) share one entry.
            Some(last) if last.0 == seq => last.1 += 1,
            _ => q.push_back((seq, 1)),
        },
        (Unacked::Stream(q), Some(id)) => q.push_back((seq, id)),
        _ => {}
    }
}

/// One round trip of reading; how many events came.
fn read_batch(
    con: &mut Connection,
    spec: &RedisInSpec,
    processing: &str,
    max_line: usize,
    router: &mut Router,
    unacked: &mut Unacked,
) -> redis::RedisResult<usize> {
    match &spec.mode {
        RedisInMode::List { left, .. } => {
            let from = if *left { "LEFT" } else { "RIGHT" };
            let mut packed = Vec::new();
            for _ in 0..BATCH {
                redis::cmd("LMOVE")
                    .arg(&spec.key)
                    .arg(processing)
                    .arg(from)
                    .arg("LEFT")
                    .write_packed_command(&mut packed);
            }
            con.send_packed_command(&packed)?;
            // Replies read one by one: a connection that fails ends the batch at once (a
            // pipeline's `query` would wait out the read timeout for each missing reply, 500
            // times, holding a stopping engine). An error reply is the batch's after the rest
            // are read (the connection stays in step).
            let (mut n, mut refused) = (0, None);
            for _ in 0..BATCH {
                match con.recv_response()? {
                    Value::BulkString(item) => {
                        take(router, &item, max_line, unacked, None);
                        n += 1;
                    }
                    Value::ServerError(e) => {
                        refused.get_or_insert(e);
                    }
                    _ => {}
                }
            }
            match refused {
                Some(e) => Err(e.into()),
                None => Ok(n),
            }
        }
        RedisInMode::Pop { left } => {
            let items: Option<Vec<Vec<u8>>> = redis::cmd(if *left { "LPOP" } else { "RPOP" })
                .arg(&spec.key)
                .arg(BATCH)
                .query(con)?;
            let items = items.unwrap_or_default();
            for item in &items {
                take(router, item, max_line, unacked, None);
            }
            Ok(items.len())
        }
        RedisInMode::Stream { group, consumer, .. } => {
            let v: Value = xreadgroup(group, consumer, &spec.key, ">", Some(BLOCK_MS)).query(con)?;
            let entries = stream_entries(&v);
            let n = entries.len();
            for (id, ev) in entries {
                take(router, &ev, max_line, unacked, Some(id));
            }
            Ok(n)
        }
    }
}

/// After a lost connection, makes the processing list and what is tracked of it agree again:
/// a pipelined `LMOVE` whose replies were lost moved items nobody read (they are at the left,
/// the newest end: read them now, oldest first); a trim done whose reply was lost removed
/// items still tracked (the oldest: forget them, they were written before the trim was sent).
fn resync_list(
    con: &mut Connection,
    processing: &str,
    max_line: usize,
    router: &mut Router,
    unacked: &mut Unacked,
) -> redis::RedisResult<()> {
    let Unacked::List(q) = unacked else { return Ok(()) };
    let tracked: u64 = q.iter().map(|e| e.1).sum();
    let len: u64 = redis::cmd("LLEN").arg(processing).query(con)?;
    if len < tracked {
        let mut gone = tracked - len;
        while gone > 0
            && let Some(front) = q.front_mut()
        {
            let n = front.1.min(gone);
            front.1 -= n;
            gone -= n;
            if front.1 == 0 {
                q.pop_front();
            }
        }
    } else if len > tracked {
        let unread: Vec<Vec<u8>> = redis::cmd("LRANGE")
            .arg(processing)
            .arg(0)
            .arg((len - tracked) as i64 - 1)
            .query(con)?;
        for item in unread.iter().rev() {
            take(router, item, max_line, unacked, None);
        }
        router.info(
            Kind::InputResumed,
            &format!(
                "{processing}: {} items moved before the connection was lost are read now",
                unread.len()
            ),
        );
    }
    Ok(())
}

/// After a lost connection, reads this consumer's pending entries it does not track: an
/// `XREADGROUP` whose reply was lost made them pending here without anyone reading them (they
/// would wait for a restart).
fn resync_stream(
    con: &mut Connection,
    spec: &RedisInSpec,
    max_line: usize,
    router: &mut Router,
    unacked: &mut Unacked,
) -> redis::RedisResult<()> {
    if !matches!(unacked, Unacked::Stream(_)) {
        return Ok(());
    }
    let unread = match read_own_pending(con, spec, max_line, router, unacked) {
        Ok((again, gone)) => again + gone,
        // The group is gone (Redis restarted without its data): nothing is pending; the next
        // read makes it again.
        Err(e) if e.code() == Some("NOGROUP") => return Ok(()),
        Err(e) => return Err(e),
    };
    if unread > 0 {
        router.info(
            Kind::InputResumed,
            &format!(
                "{}: {unread} entries read before the connection was lost, whose reply never came, are read now",
                spec.name()
            ),
        );
    }
    Ok(())
}

/// Reads this consumer's pending entries that it does not track (all of them at the start),
/// in batches each read after the last id of the one before: (entries read, entries deleted
/// from the stream since: they come back without fields).
fn read_own_pending(
    con: &mut Connection,
    spec: &RedisInSpec,
    max_line: usize,
    router: &mut Router,
    unacked: &mut Unacked,
) -> redis::RedisResult<(usize, usize)> {
    let (RedisInMode::Stream { group, consumer, .. }, Unacked::Stream(q)) = (&spec.mode, &*unacked) else {
        return Ok((0, 0));
    };
    let tracked: std::collections::HashSet<String> = q.iter().map(|(_, id)| id.clone()).collect();
    let (mut from, mut again, mut gone) = ("0".to_string(), 0, 0);
    loop {
        let v: Value = xreadgroup(group, consumer, &spec.key, &from, None).query(con)?;
        let entries = stream_entries(&v);
        let Some((last, _)) = entries.last() else { break };
        from = last.clone();
        for (id, ev) in entries.into_iter().filter(|(id, _)| !tracked.contains(id)) {
            if ev.is_empty() {
                gone += 1;
            } else {
                again += 1;
            }
            take(router, &ev, max_line, unacked, Some(id));
        }
    }
    Ok((again, gone))
}

/// Acknowledges what every output has written (events before sequence number `written`).
fn acknowledge(
    con: &mut Connection,
    spec: &RedisInSpec,
    processing: &str,
    unacked: &mut Unacked,
    written: u64,
) -> redis::RedisResult<()> {
    match unacked {
        Unacked::List(q) => {
            let entries = q.iter().take_while(|e| e.0 <= written).count();
            let done: u64 = q.iter().take(entries).map(|e| e.1).sum();
            if done > 0 {
                // The oldest `done` items are at the right end. They are forgotten here only
                // once the trim is known to be done (see `resync_list` for the rest).
                let _: () = redis::cmd("LTRIM")
                    .arg(processing)
                    .arg(0)
                    .arg(-(done as i64) - 1)
                    .query(con)?;
                q.drain(..entries);
            }
        }
        Unacked::Stream(q) => {
            let RedisInMode::Stream { group, .. } = &spec.mode else {
                return Ok(());
            };
            // Forgotten only once their XACK is done (one lost with the connection would
            // leave them pending, and the resync after reconnecting would read them again).
            loop {
                let chunk: Vec<String> = q
                    .iter()
                    .take_while(|e| e.0 <= written)
                    .take(1000)
                    .map(|e| e.1.clone())
                    .collect();
                if chunk.is_empty() {
                    break;
                }
                let _: i64 = redis::cmd("XACK").arg(&spec.key).arg(group).arg(&chunk).query(con)?;
                q.drain(..chunk.len());
            }
        }
        Unacked::None => {}
    }
    Ok(())
}

fn bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

/// The (id, event) pairs of an `XREADGROUP` reply (one stream).
fn stream_entries(v: &Value) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let streams: Vec<&Value> = match v {
        Value::Array(s) => s.iter().collect(),
        // RESP3 answers a map of stream -> entries.
        Value::Map(m) => m.iter().map(|(_, e)| e).collect(),
        _ => return out,
    };
    for s in streams {
        let entries = match s {
            Value::Array(pair) if pair.len() == 2 => &pair[1],
            other => other,
        };
        let Value::Array(entries) = entries else { continue };
        for e in entries {
            let Value::Array(parts) = e else { continue };
            let (Some(id), Some(Value::Array(fields))) = (parts.first().and_then(bytes), parts.get(1)) else {
                // An entry deleted while pending comes back with no fields: acknowledge it
                // with the others (an empty line is skipped by the router).
                if let Some(id) = parts.first().and_then(bytes) {
                    out.push((String::from_utf8_lossy(id).into_owned(), Vec::new()));
                }
                continue;
            };
            let pairs: Vec<(&[u8], &[u8])> = fields
                .chunks(2)
                .filter_map(|kv| Some((bytes(kv.first()?)?, bytes(kv.get(1)?)?)))
                .collect();
            // No such field: the first field's value, which validation then rejects and
            // reports (an entry is never dropped unseen).
            let ev = pairs
                .iter()
                .find(|(k, _)| *k == b"eve")
                .or_else(|| pairs.iter().find(|(_, v)| v.first() == Some(&b'{')))
                .or_else(|| pairs.first())
                .map(|(_, v)| {
                    if v.iter().all(u8::is_ascii_whitespace) {
                        b"(an empty field)".to_vec()
                    } else {
                        v.to_vec()
                    }
                })
                .unwrap_or_default();
            out.push((String::from_utf8_lossy(id).into_owned(), ev));
        }
    }
    out
}
