//! Redis Cluster behind the `hiredis` module (`redis_cluster = { "host:port", ... }`): each
//! command goes to the master that owns its key's slot (CRC16 of the key, or of its `{hash
//! tag}`); `MOVED` updates the slot map and retries, `ASK` retries once on the named node after
//! `ASKING`, `TRYAGAIN` is waited out; a command whose keys are in different slots is an error
//! reply that says so. Pipelined commands (the window's and `append_command`'s) are split by
//! node, sent to each node as one write, and their replies put back in the order they were
//! queued. Transactions are pinned to one master and sent whole at `EXEC`; `SCRIPT LOAD` goes
//! to every master. A node that fails fails only its own commands: it is dropped, tried again
//! after a backoff, and reported once (`redis_lost`, `redis_restored`).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use redis::{Connection, RedisResult, Value};

use crate::config::types::RedisTimeouts;
use crate::diag::Kind;

/// A node's address.
type Addr = (String, u16);

/// Slots of a cluster.
const SLOTS: usize = 16384;

/// Redirections followed for one command.
const MAX_REDIRECTS: usize = 5;

/// CRC16 (XMODEM: polynomial 0x1021, initial 0), as Redis Cluster hashes keys.
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The slot of a key: of its hash tag (`{...}`, non-empty) when it has one.
pub(crate) fn slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let close = key[open + 1..].iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &key[open + 1..open + 1 + close])
    });
    crc16(tagged.unwrap_or(key)) % SLOTS as u16
}

/// The key arguments of a command (by the commands' key positions; most have one, at 1).
fn keys(args: &[Vec<u8>]) -> Vec<&[u8]> {
    let name = args.first().map(|a| a.to_ascii_uppercase()).unwrap_or_default();
    let all = |from: usize| args.iter().skip(from).map(Vec::as_slice).collect::<Vec<_>>();
    let at = |i: usize| args.get(i).map(|k| vec![k.as_slice()]).unwrap_or_default();
    let count_at = |i: usize| {
        args.get(i)
            .and_then(|n| std::str::from_utf8(n).ok()?.parse::<usize>().ok())
            .unwrap_or(0)
    };
    match name.as_slice() {
        b"PING" | b"ECHO" | b"INFO" | b"TIME" | b"DBSIZE" | b"CLUSTER" | b"COMMAND" | b"SCRIPT" | b"FLUSHALL"
        | b"FLUSHDB" | b"CONFIG" | b"CLIENT" | b"MODULE" | b"SELECT" | b"AUTH" | b"HELLO" | b"MULTI" | b"EXEC"
        | b"DISCARD" | b"UNWATCH" | b"SCAN" | b"RANDOMKEY" | b"KEYS" | b"WAIT" | b"LASTSAVE" | b"FUNCTION" => {
            Vec::new()
        }
        b"MGET" | b"DEL" | b"UNLINK" | b"EXISTS" | b"TOUCH" | b"WATCH" | b"SINTER" | b"SUNION" | b"SDIFF"
        | b"PFCOUNT" | b"PFMERGE" | b"SINTERSTORE" | b"SUNIONSTORE" | b"SDIFFSTORE" => all(1),
        b"MSET" | b"MSETNX" => args.iter().skip(1).step_by(2).map(Vec::as_slice).collect(),
        // Source and destination.
        b"RENAME" | b"RENAMENX" | b"SMOVE" | b"LMOVE" | b"BLMOVE" | b"RPOPLPUSH" | b"BRPOPLPUSH" | b"COPY"
        | b"GEOSEARCHSTORE" | b"ZRANGESTORE" => args.iter().skip(1).take(2).map(Vec::as_slice).collect(),
        // Keys, then a timeout.
        b"BLPOP" | b"BRPOP" | b"BZPOPMIN" | b"BZPOPMAX" => args
            .iter()
            .skip(1)
            .take(args.len().saturating_sub(2))
            .map(Vec::as_slice)
            .collect(),
        // A destination, a count, the keys.
        b"ZUNIONSTORE" | b"ZINTERSTORE" | b"ZDIFFSTORE" => {
            let mut k = at(1);
            k.extend(args.iter().skip(3).take(count_at(2)).map(Vec::as_slice));
            k
        }
        // A count, the keys.
        b"ZUNION" | b"ZINTER" | b"ZDIFF" | b"SINTERCARD" | b"ZINTERCARD" | b"LMPOP" | b"ZMPOP" => {
            args.iter().skip(2).take(count_at(1)).map(Vec::as_slice).collect()
        }
        // A script or function, a count, the keys.
        b"EVAL" | b"EVALSHA" | b"EVAL_RO" | b"EVALSHA_RO" | b"FCALL" | b"FCALL_RO" => {
            args.iter().skip(3).take(count_at(2)).map(Vec::as_slice).collect()
        }
        // A timeout, a count, the keys.
        b"BLMPOP" | b"BZMPOP" => args.iter().skip(4).take(count_at(3)).map(Vec::as_slice).collect(),
        // An operation, a destination, the sources.
        b"BITOP" => all(2),
        // A subcommand, then the key.
        b"OBJECT" | b"MEMORY" | b"XINFO" | b"XGROUP" => at(2),
        // ... STREAMS key [key ...] id [id ...]
        b"XREAD" | b"XREADGROUP" => {
            let Some(p) = args.iter().position(|a| a.eq_ignore_ascii_case(b"STREAMS")) else {
                return Vec::new();
            };
            let n = (args.len() - p - 1) / 2;
            args.iter().skip(p + 1).take(n).map(Vec::as_slice).collect()
        }
        _ => at(1),
    }
}

/// The slot a command goes to: `None` for commands without keys; an error when its keys are
/// in different slots.
fn command_slot(args: &[Vec<u8>]) -> Result<Option<u16>, String> {
    let mut s = None;
    for k in keys(args) {
        let ks = slot(k);
        match s {
            None => s = Some(ks),
            Some(prev) if prev != ks => {
                return Err(format!(
                    "CROSSSLOT the keys of {} are in different slots of the cluster ({prev} and {ks}); use a {{hash tag}} to keep them together",
                    String::from_utf8_lossy(&args[0])
                ));
            }
            _ => {}
        }
    }
    Ok(s)
}

/// An error reply with `text` (its first word the code), as Redis sends one.
fn error_reply(text: &str) -> Value {
    let line = format!("-{}\r\n", text.replace(['\r', '\n'], " "));
    redis::parse_redis_value(line.as_bytes()).unwrap_or(Value::Nil)
}

/// A redirection in a reply: (ASK?, slot, node).
fn redirect(v: &RedisResult<Value>) -> Option<(bool, u16, Addr)> {
    let (code, detail) = match v {
        Ok(Value::ServerError(e)) => (e.code().to_string(), e.details().unwrap_or("").to_string()),
        Err(e) => (e.code()?.to_string(), e.detail().unwrap_or("").to_string()),
        _ => return None,
    };
    let ask = match code.as_str() {
        "MOVED" => false,
        "ASK" => true,
        _ => return None,
    };
    let mut parts = detail.split_whitespace();
    // A slot past the last one (a broken node or proxy) is no redirection: the reply goes to
    // the script as the error it is (it indexed past the slot table: a panic).
    let slot = parts.next()?.parse().ok().filter(|&s: &u16| usize::from(s) < SLOTS)?;
    let (host, port) = parts.next()?.rsplit_once(':')?;
    Some((ask, slot, (host.to_string(), port.parse().ok()?)))
}

/// Splits packed RESP commands (arrays of bulk strings, as the module packs them).
fn unpack(mut b: &[u8]) -> Option<Vec<Vec<Vec<u8>>>> {
    let mut out = Vec::new();
    let line = |b: &[u8]| -> Option<(usize, usize)> {
        let end = b.windows(2).position(|w| w == b"\r\n")?;
        let n = std::str::from_utf8(&b[1..end]).ok()?.parse().ok()?;
        Some((n, end + 2))
    };
    while !b.is_empty() {
        if b[0] != b'*' {
            return None;
        }
        let (n, used) = line(b)?;
        b = &b[used..];
        let mut args = Vec::with_capacity(n);
        for _ in 0..n {
            if b.first() != Some(&b'$') {
                return None;
            }
            let (len, used) = line(b)?;
            let arg = b.get(used..used + len)?.to_vec();
            b = b.get(used + len + 2..)?;
            args.push(arg);
        }
        out.push(args);
    }
    Some(out)
}

/// A node whose connection failed: reported once, tried again after its backoff.
struct Down {
    since: Instant,
    next_try: Instant,
    backoff: Duration,
}

/// A round trip that failed: whether the commands were written (then each one without a
/// reply may have run: never sent again), the replies read before the failure, and why.
struct Failure {
    sent: bool,
    got: Vec<RedisResult<Value>>,
    err: redis::RedisError,
}

/// A transaction (`WATCH`, `MULTI` ... `EXEC`): pinned to the master of its first key; its
/// commands are queued here and sent with `MULTI` and `EXEC` in one write at `EXEC`.
#[derive(Default)]
struct Tx {
    /// The master the transaction runs on (known from its first key, or from `WATCH`).
    node: Option<Addr>,
    /// Whether `MULTI` was given (else only `WATCH` is in force).
    multi: bool,
    watching: bool,
    queued: Vec<Vec<Vec<u8>>>,
    /// Why `EXEC` must abort (a command refused while queueing).
    error: bool,
}

/// A script's connection to a cluster: one connection per master it has talked to.
pub(crate) struct Cluster {
    seeds: Vec<Addr>,
    timeouts: RedisTimeouts,
    nodes: HashMap<Addr, Connection>,
    down: HashMap<Addr, Down>,
    /// The master of each slot, as last learned.
    slots: Vec<Option<Addr>>,
    last_refresh: Option<Instant>,
    tx: Option<Tx>,
    /// Per slot (`u16::MAX`: keyless commands), the time waited on `TRYAGAIN` since a command
    /// on it last succeeded (see `TRYAGAIN_BUDGET`): a slot left half-migrated costs its
    /// budget once, however many commands on other slots succeed between its refusals.
    tryagain_spent: HashMap<u16, Duration>,
    /// Replies of pipelined commands, in the order they were sent, for `recv_response`.
    replies: VecDeque<RedisResult<Value>>,
    /// Nodes lost and restored since the worker last looked (`redis_lost`, `redis_restored`).
    pub(crate) notices: Vec<(Kind, String)>,
}

/// A connection to a node (see [`connect_info`]).
fn connect(addr: &Addr, t: RedisTimeouts) -> RedisResult<Connection> {
    connect_info(
        redis::IntoConnectionInfo::into_connection_info((addr.0.as_str(), addr.1))?,
        t,
    )
}

/// A connection with the timeouts set, for every script connection (one server or a cluster's
/// nodes). No handshake command is sent (`CLIENT SETINFO` would wait for its reply before any
/// timeout is set: forever on a hung server).
pub(crate) fn connect_info(info: redis::ConnectionInfo, t: RedisTimeouts) -> RedisResult<Connection> {
    let info = info.set_redis_settings(redis::RedisConnectionInfo::default().set_skip_set_lib_name());
    let client = redis::Client::open(info)?;
    let con = client.get_connection_with_timeout(t.connect)?;
    con.set_read_timeout(Some(t.io))?;
    con.set_write_timeout(Some(t.io))?;
    Ok(con)
}

/// A Redis error as the scripts see it: its code and detail, else its text.
pub(crate) fn describe(e: &redis::RedisError) -> String {
    // A socket timeout reads as EAGAIN ("Resource temporarily unavailable"): say what it is
    // (a connection's or a reply's: redis_connect_timeout_ms or redis_timeout_ms).
    if e.is_timeout() {
        return format!("timed out (Redis unreachable, hanging or overloaded): {e}");
    }
    // hiredis's words for a connection the server closed (ERR_EOF).
    if closed_by_server(e) {
        return "Server closed the connection".to_string();
    }
    match (e.code(), e.detail()) {
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        (Some(code), None) => code.to_string(),
        _ => e.to_string(),
    }
}

/// Whether the server closed the connection: a read found its end, where hiredis sets
/// `REDIS_ERR_EOF` ("Server closed the connection").
pub(super) fn closed_by_server(e: &redis::RedisError) -> bool {
    // The crate keeps the I/O error behind an `Arc` (its `source()`), and its own accessor is
    // private.
    type Shared = std::sync::Arc<dyn std::error::Error + Send + Sync>;
    let io = std::error::Error::source(e).and_then(|s| {
        s.downcast_ref::<std::io::Error>().or_else(|| {
            s.downcast_ref::<Shared>()
                .and_then(|a| a.downcast_ref::<std::io::Error>())
        })
    });
    io.is_some_and(|io| io.kind() == std::io::ErrorKind::UnexpectedEof)
}

/// A failure of the connection itself (the node is down or unreachable), as opposed to a
/// command's error reply.
fn is_transport(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_timeout()
}

/// A transport failure naming the node.
fn node_error(addr: &Addr, what: &str) -> redis::RedisError {
    std::io::Error::new(
        std::io::ErrorKind::NotConnected,
        format!("cluster node {}:{}: {what}", addr.0, addr.1),
    )
    .into()
}

/// Another error with the same message (one per command of a failed batch).
fn node_error_like(e: &redis::RedisError) -> redis::RedisError {
    std::io::Error::new(std::io::ErrorKind::NotConnected, e.to_string()).into()
}

/// The error code of a reply (`MOVED`, `TRYAGAIN`, ...), if it is an error reply.
fn reply_code(v: &RedisResult<Value>) -> Option<String> {
    match v {
        Ok(Value::ServerError(e)) => Some(e.code().to_string()),
        Err(e) => e.code().map(str::to_string),
        _ => None,
    }
}

/// Commands that begin, run or end a transaction.
fn is_tx_command(args: &[Vec<u8>]) -> bool {
    args.first().is_some_and(|a| is_tx_name(a))
}

/// Whether `name` is one of the transaction commands (`MULTI`, `EXEC`, `DISCARD`, `WATCH`,
/// `UNWATCH`), in any case.
pub(super) fn is_tx_name(name: &[u8]) -> bool {
    [&b"MULTI"[..], b"EXEC", b"DISCARD", b"WATCH", b"UNWATCH"]
        .iter()
        .any(|t| name.eq_ignore_ascii_case(t))
}

/// Commands sent to every master (scripts must be known wherever their keys live).
fn is_broadcast(args: &[Vec<u8>]) -> bool {
    args.len() >= 2
        && args[0].eq_ignore_ascii_case(b"SCRIPT")
        && (args[1].eq_ignore_ascii_case(b"LOAD") || args[1].eq_ignore_ascii_case(b"FLUSH"))
}

/// How long to wait before trying a command refused with `TRYAGAIN` again (a multi-key
/// command on a slot being migrated): 10 ms doubling, about 1.3 s in all.
const TRYAGAIN_WAITS: [u64; 7] = [10, 20, 40, 80, 160, 320, 640];
/// The most the commands refused with `TRYAGAIN` on one slot wait together, until a command on
/// that slot succeeds.
const TRYAGAIN_BUDGET: Duration = Duration::from_millis(1270);

/// Commands one transaction may queue (they are held in the engine until `EXEC`: a script
/// that never sends it must not grow the worker's memory without end).
const MAX_TX_QUEUED: usize = 10_000;

/// The slot map is read again at most this often after failures.
const REFRESH_EVERY: Duration = Duration::from_millis(100);

const NODE_BACKOFF_MIN: Duration = Duration::from_millis(50);
const NODE_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long a failed node has to answer a `PING` before it is used again.
pub(super) const PROBE_WAIT: Duration = Duration::from_millis(500);

impl Cluster {
    /// Connects to the first seed that answers with a slot map and learns it.
    pub(crate) fn connect(seeds: &[Addr], timeouts: RedisTimeouts) -> RedisResult<Cluster> {
        let mut c = Cluster {
            seeds: seeds.to_vec(),
            timeouts,
            nodes: HashMap::new(),
            down: HashMap::new(),
            slots: vec![None; SLOTS],
            last_refresh: None,
            tx: None,
            tryagain_spent: HashMap::new(),
            replies: VecDeque::new(),
            notices: Vec::new(),
        };
        c.refresh()?;
        c.notices.clear();
        Ok(c)
    }

    /// Reads `CLUSTER SLOTS` from a known node, a master of the map or a seed; nodes in their
    /// backoff are passed over (a hung one would cost its timeout each time), and so is a node
    /// that answers with no slot (not a member of a cluster, or one with no slots assigned).
    fn refresh(&mut self) -> RedisResult<()> {
        self.last_refresh = Some(Instant::now());
        let mut candidates: Vec<Addr> = Vec::new();
        let known = self.nodes.keys().cloned();
        let masters = self.slots.iter().flatten().cloned();
        for a in known.chain(masters).chain(self.seeds.iter().cloned()) {
            if !candidates.contains(&a) {
                candidates.push(a);
            }
        }
        let now = Instant::now();
        candidates.retain(|a| self.down.get(a).is_none_or(|d| d.next_try <= now));
        let mut last = None;
        for addr in candidates {
            let v = match self.node(&addr) {
                Ok(con) => redis::cmd("CLUSTER").arg("SLOTS").query::<Value>(con),
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            let v = match v {
                Ok(v) => v,
                Err(e) => {
                    if is_transport(&e) {
                        self.mark_down(&addr, &e);
                    } else {
                        self.nodes.remove(&addr);
                    }
                    last = Some(node_error(&addr, &describe(&e)));
                    continue;
                }
            };
            let map = slot_map(&v, &addr);
            if map.iter().all(Option::is_none) {
                last = Some(node_error(
                    &addr,
                    "CLUSTER SLOTS lists no slot (not a member of a cluster, or no slots assigned)",
                ));
                continue;
            }
            self.slots = map;
            // A failed node whose slots another serves now (a replica took over): reported,
            // and no longer tried.
            let gone: Vec<Addr> = self
                .down
                .keys()
                .filter(|a| !self.slots.iter().flatten().any(|m| m == *a))
                .cloned()
                .collect();
            for a in gone {
                if let Some(d) = self.down.remove(&a) {
                    self.notices.push((
                        Kind::RedisRestored,
                        format!(
                            "redis cluster node {}:{}: its slots are served by other masters now (a replica took over after {:.1} s)",
                            a.0,
                            a.1,
                            d.since.elapsed().as_secs_f64()
                        ),
                    ));
                }
            }
            return Ok(());
        }
        Err(last.unwrap_or_else(|| node_error(&self.seeds[0], "every known node is down (retrying after backoff)")))
    }

    /// Reads the slot map again after a failure, at most every [`REFRESH_EVERY`].
    fn refresh_soon(&mut self) {
        if self.last_refresh.is_none_or(|t| t.elapsed() >= REFRESH_EVERY) {
            let _ = self.refresh();
        }
    }

    /// The connection to `addr`: opened when needed, unless the node failed and its backoff
    /// has not passed.
    fn node(&mut self, addr: &Addr) -> RedisResult<&mut Connection> {
        if !self.nodes.contains_key(addr) {
            if let Some(d) = self.down.get(addr)
                && Instant::now() < d.next_try
            {
                return Err(node_error(addr, "not connected (retrying after backoff)"));
            }
            // A node that failed is probed first with a short wait: a hung one (the kernel
            // still accepts connections) then costs a fraction of a second per retry, not the
            // full reply timeout of a real command.
            let probed = connect(addr, self.timeouts).and_then(|mut con| {
                if self.down.contains_key(addr) {
                    con.set_read_timeout(Some(self.timeouts.io.min(PROBE_WAIT)))?;
                    redis::cmd("PING").query::<Value>(&mut con)?;
                    con.set_read_timeout(Some(self.timeouts.io))?;
                }
                Ok(con)
            });
            match probed {
                Ok(con) => {
                    self.nodes.insert(addr.clone(), con);
                    if let Some(d) = self.down.remove(addr) {
                        self.notices.push((
                            Kind::RedisRestored,
                            format!(
                                "redis cluster node {}:{}: connection restored {:.1} s after it was found down",
                                addr.0,
                                addr.1,
                                d.since.elapsed().as_secs_f64()
                            ),
                        ));
                    }
                }
                Err(e) => {
                    self.mark_down(addr, &e);
                    return Err(node_error(addr, &describe(&e)));
                }
            }
        }
        Ok(self.nodes.get_mut(addr).expect("inserted above"))
    }

    /// Nodes that failed and are not back (nor replaced by a replica) yet.
    pub(crate) fn nodes_down(&self) -> usize {
        self.down.len()
    }

    /// Drops the connection to a node that failed; reported once until it is back.
    fn mark_down(&mut self, addr: &Addr, e: &redis::RedisError) {
        self.nodes.remove(addr);
        let now = Instant::now();
        match self.down.get_mut(addr) {
            Some(d) => {
                d.next_try = now + d.backoff;
                d.backoff = (d.backoff * 2).min(NODE_BACKOFF_MAX);
            }
            None => {
                self.down.insert(
                    addr.clone(),
                    Down {
                        since: now,
                        next_try: now + NODE_BACKOFF_MIN,
                        backoff: NODE_BACKOFF_MIN * 2,
                    },
                );
                let why = if e.is_timeout() {
                    format!("no reply within {:.1} s", self.timeouts.io.as_secs_f64())
                } else {
                    describe(e)
                };
                self.notices.push((
                    Kind::RedisLost,
                    format!(
                        "redis cluster node {}:{}: connection lost ({why}); calls for its slots fail with ERR_IO until it, or a replica that takes over, answers",
                        addr.0,
                        addr.1,
                    ),
                ));
            }
        }
    }

    /// Where a command goes.
    fn addr_of(&self, slot: Option<u16>) -> Addr {
        slot.and_then(|s| self.slots[s as usize].clone())
            .or_else(|| self.slots.iter().flatten().next().cloned())
            .unwrap_or_else(|| self.seeds[0].clone())
    }

    /// Sends `packed` (`n` commands) to `addr` and reads their replies. Only a transport
    /// failure is an `Err` ([`Failure`]); it marks the node down.
    fn round_trip(&mut self, addr: &Addr, packed: &[u8], n: usize) -> Result<Vec<RedisResult<Value>>, Failure> {
        let con = self.node(addr).map_err(|err| Failure {
            sent: false,
            got: Vec::new(),
            err,
        })?;
        // Raw send and receive: an error reply stays a value (`req_command` would make it an
        // `Err`, which would look like a broken connection).
        let mut got = Vec::with_capacity(n);
        let r = con.send_packed_command(packed).and_then(|()| {
            for _ in 0..n {
                match con.recv_response() {
                    Err(e) if is_transport(&e) => return Err(e),
                    r => got.push(r),
                }
            }
            Ok(())
        });
        match r {
            Ok(()) => Ok(got),
            Err(e) => {
                self.mark_down(addr, &e);
                // Written (or partly): what has no reply may have run.
                let what = if e.is_timeout() {
                    format!(
                        "no reply within {:.1} s; the command may have run",
                        self.timeouts.io.as_secs_f64()
                    )
                } else {
                    format!("{}; the command may have run", describe(&e))
                };
                Err(Failure {
                    sent: true,
                    got,
                    err: node_error(addr, &what),
                })
            }
        }
    }

    /// Runs one command (transactions and broadcasts included). A command's own failure (an
    /// error reply, a cross-slot command, too many redirections) is an error *reply* (`Ok`),
    /// as a single server gives it; `Err` is a node that cannot be reached, for this command
    /// only: the other nodes' commands go on.
    fn exec(&mut self, args: &[Vec<u8>]) -> RedisResult<Value> {
        if is_tx_command(args) || self.tx.as_ref().is_some_and(|t| t.multi) {
            return self.exec_tx(args);
        }
        if is_broadcast(args) {
            return self.broadcast(args);
        }
        let slot = match command_slot(args) {
            Ok(s) => s,
            Err(msg) => return Ok(error_reply(&msg)),
        };
        self.exec_at(args, slot)
    }

    /// [`exec`] of a command for `slot`: redirections followed, `TRYAGAIN` waited out, and a
    /// node that fails replaced once by what the slot map then says (a replica that took over).
    fn exec_at(&mut self, args: &[Vec<u8>], slot: Option<u16>) -> RedisResult<Value> {
        let mut cmd = redis::Cmd::new();
        for a in args {
            cmd.arg(a.as_slice());
        }
        let plain = cmd.get_packed_command();
        let mut addr = self.addr_of(slot);
        let mut asking = false;
        let (mut redirects, mut waits, mut failed_over) = (0, 0, false);
        loop {
            let mut packed = if asking {
                redis::cmd("ASKING").get_packed_command()
            } else {
                Vec::new()
            };
            packed.extend_from_slice(&plain);
            let r = match self.round_trip(&addr, &packed, 1 + usize::from(asking)) {
                Ok(mut replies) => replies.pop().unwrap_or(Ok(Value::Nil)),
                Err(f) => {
                    self.refresh_soon();
                    let now = self.addr_of(slot);
                    // Sent to a replica that took over only when it never left: a command
                    // written to the failed node may have run there (and been replicated).
                    if !f.sent && !failed_over && now != addr && slot.is_some() {
                        failed_over = true;
                        (addr, asking) = (now, false);
                        continue;
                    }
                    return Err(f.err);
                }
            };
            if let Some((ask, s, to)) = redirect(&r) {
                redirects += 1;
                if redirects > MAX_REDIRECTS {
                    return Ok(error_reply("TRYAGAIN too many cluster redirections"));
                }
                if !ask {
                    self.slots[s as usize] = Some(to.clone());
                }
                (addr, asking) = (to, ask);
                continue;
            }
            if reply_code(&r).as_deref() == Some("TRYAGAIN") && waits < TRYAGAIN_WAITS.len() {
                // One budget for every command refused so in a row (a batch of them, or a slot
                // left half-migrated, waits about 1.3 s in all, not that much each).
                let wait = Duration::from_millis(TRYAGAIN_WAITS[waits]);
                let spent = self.tryagain_spent.entry(slot.unwrap_or(u16::MAX)).or_default();
                if *spent + wait > TRYAGAIN_BUDGET {
                    return r;
                }
                *spent += wait;
                std::thread::sleep(wait);
                waits += 1;
                // The ASK back to the target is part of the wait, not a new redirection.
                redirects = 0;
                (addr, asking) = (self.addr_of(slot), false);
                continue;
            }
            if !matches!(&r, Ok(Value::ServerError(_))) && !self.tryagain_spent.is_empty() {
                self.tryagain_spent.remove(&slot.unwrap_or(u16::MAX));
            }
            return r;
        }
    }

    /// `SCRIPT LOAD`/`SCRIPT FLUSH`: sent to every master, so that `EVALSHA` finds the script
    /// wherever its keys live. The reply is the first master's (the same SHA1 everywhere);
    /// a master's error reply or failure is the call's.
    fn broadcast(&mut self, args: &[Vec<u8>]) -> RedisResult<Value> {
        let mut masters: Vec<Addr> = Vec::new();
        for a in self.slots.iter().flatten() {
            if !masters.contains(a) {
                masters.push(a.clone());
            }
        }
        let mut cmd = redis::Cmd::new();
        for a in args {
            cmd.arg(a.as_slice());
        }
        let packed = cmd.get_packed_command();
        let mut first = None;
        for m in masters {
            let r = self
                .round_trip(&m, &packed, 1)
                .map_err(|f| f.err)?
                .pop()
                .unwrap_or(Ok(Value::Nil));
            if matches!(r, Ok(Value::ServerError(_)) | Err(_)) {
                return r;
            }
            first.get_or_insert(r);
        }
        first.unwrap_or_else(|| Ok(error_reply("CLUSTERDOWN no master known")))
    }

    /// The transaction commands, and any command while `MULTI` is open: queued (`QUEUED`) and
    /// sent at `EXEC` as `MULTI`, the commands, `EXEC` in one write to the transaction's
    /// master. Keys on another master than the transaction's are refused (`CROSSSLOT`) and
    /// make `EXEC` abort, as Redis does with a command refused while queueing.
    fn exec_tx(&mut self, args: &[Vec<u8>]) -> RedisResult<Value> {
        let name = args.first().map(|a| a.to_ascii_uppercase()).unwrap_or_default();
        let multi = self.tx.as_ref().is_some_and(|t| t.multi);
        match name.as_slice() {
            b"MULTI" if multi => Ok(error_reply("ERR MULTI calls can not be nested")),
            b"MULTI" => {
                self.tx.get_or_insert_with(Tx::default).multi = true;
                Ok(Value::Okay)
            }
            b"WATCH" if multi => Ok(error_reply("ERR WATCH inside MULTI is not allowed")),
            b"WATCH" => {
                let slot = match command_slot(args) {
                    Ok(s) => s,
                    Err(msg) => return Ok(error_reply(&msg)),
                };
                let addr = self.addr_of(slot);
                if let Some(node) = self.tx.as_ref().and_then(|t| t.node.clone())
                    && node != addr
                {
                    return Ok(error_reply(
                        "CROSSSLOT the keys of WATCH are on another master than the keys already watched; use a {hash tag} to keep a transaction's keys together",
                    ));
                }
                let r = self.exec_at(args, slot)?;
                if !matches!(r, Value::ServerError(_)) {
                    let node = self.addr_of(slot);
                    let tx = self.tx.get_or_insert_with(Tx::default);
                    tx.node = Some(node);
                    tx.watching = true;
                }
                Ok(r)
            }
            b"UNWATCH" if multi => self.queue_in_tx(args),
            b"UNWATCH" | b"DISCARD" => {
                if name.as_slice() == b"DISCARD" && !multi {
                    return Ok(error_reply("ERR DISCARD without MULTI"));
                }
                let tx = self.tx.take();
                if let Some(Tx {
                    node: Some(node),
                    watching: true,
                    ..
                }) = tx
                {
                    let packed = redis::cmd("UNWATCH").get_packed_command();
                    self.round_trip(&node, &packed, 1).map_err(|f| f.err)?;
                }
                Ok(Value::Okay)
            }
            b"EXEC" if !multi => Ok(error_reply("ERR EXEC without MULTI")),
            b"EXEC" => self.run_tx(),
            _ => self.queue_in_tx(args),
        }
    }

    /// A command while `MULTI` is open: queued (`QUEUED`), or refused (`CROSSSLOT`, and `EXEC`
    /// will abort) when its keys are on another master than the transaction's.
    fn queue_in_tx(&mut self, args: &[Vec<u8>]) -> RedisResult<Value> {
        let slot = command_slot(args);
        let node = match &slot {
            Ok(s) if s.is_some() => Some(self.addr_of(*s)),
            _ => None,
        };
        let tx = self.tx.as_mut().expect("MULTI is open");
        let refused = match (&slot, &node, &tx.node) {
            (Err(msg), _, _) => Some(msg.clone()),
            (_, Some(n), Some(pinned)) if n != pinned => Some(format!(
                "CROSSSLOT the keys of {} are on another master than the transaction's; use a {{hash tag}} to keep a transaction's keys together",
                String::from_utf8_lossy(&args[0])
            )),
            _ => None,
        };
        let refused = refused.or_else(|| {
            (tx.queued.len() >= MAX_TX_QUEUED)
                .then(|| format!("ERR a transaction holds at most {MAX_TX_QUEUED} commands (MULTI without EXEC?)"))
        });
        if let Some(msg) = refused {
            tx.error = true;
            return Ok(error_reply(&msg));
        }
        if tx.node.is_none() {
            tx.node = node;
        }
        tx.queued.push(args.to_vec());
        Ok(Value::SimpleString("QUEUED".into()))
    }

    /// `EXEC`: the queued commands between `MULTI` and `EXEC` in one write to the
    /// transaction's master; its `EXEC` reply is the call's. When the slots moved (a `MOVED`
    /// while queueing) and nothing is watched, the transaction is sent once more where the
    /// slot map then says.
    fn run_tx(&mut self) -> RedisResult<Value> {
        let tx = self.tx.take().expect("MULTI is open");
        if tx.error {
            if let (Some(node), true) = (&tx.node, tx.watching) {
                let packed = redis::cmd("UNWATCH").get_packed_command();
                self.round_trip(node, &packed, 1).map_err(|f| f.err)?;
            }
            return Ok(error_reply(
                "EXECABORT Transaction discarded because of previous errors.",
            ));
        }
        let first_key = tx.queued.iter().find_map(|c| command_slot(c).ok().flatten());
        let mut node = tx.node.clone().unwrap_or_else(|| self.addr_of(first_key));
        let mut packed = redis::cmd("MULTI").get_packed_command();
        for c in &tx.queued {
            let mut cmd = redis::Cmd::new();
            for a in c {
                cmd.arg(a.as_slice());
            }
            cmd.write_packed_command(&mut packed);
        }
        redis::cmd("EXEC").write_packed_command(&mut packed);
        for attempt in 0..2 {
            let mut replies = match self.round_trip(&node, &packed, tx.queued.len() + 2) {
                Ok(r) => r,
                Err(f) => {
                    // The next transaction goes where the slot map then says (a replica that
                    // took over); this one may have run: not sent again.
                    self.refresh_soon();
                    return Err(f.err);
                }
            };
            let exec = replies.pop().unwrap_or(Ok(Value::Nil));
            let moved = replies.iter().find_map(redirect);
            match moved {
                Some((ask, s, to)) if attempt == 0 && !tx.watching => {
                    if !ask {
                        self.slots[s as usize] = Some(to.clone());
                    }
                    node = to;
                }
                _ => return exec,
            }
        }
        unreachable!("the loop returns on its second attempt")
    }

    /// One command.
    pub(crate) fn req_command(&mut self, cmd: &redis::Cmd) -> RedisResult<Value> {
        let packed = cmd.get_packed_command();
        let mut cmds = unpack(&packed).unwrap_or_default();
        match cmds.pop() {
            Some(args) => self.exec(&args),
            None => Err(redis::RedisError::from((redis::ErrorKind::Client, "an empty command"))),
        }
    }

    /// Pipelined commands (packed): sent to each node as one write, replies kept in order for
    /// `recv_response`. A node that fails fails its own commands only (each an `Err` reply);
    /// transactions and broadcasts run one command at a time.
    pub(crate) fn send_packed_command(&mut self, packed: &[u8]) -> RedisResult<()> {
        let cmds = unpack(packed)
            .ok_or_else(|| redis::RedisError::from((redis::ErrorKind::Client, "a malformed pipeline")))?;
        if self.tx.as_ref().is_some_and(|t| t.multi) || cmds.iter().any(|c| is_tx_command(c) || is_broadcast(c)) {
            for c in &cmds {
                let r = self.exec(c);
                self.replies.push_back(r);
            }
            return Ok(());
        }
        let mut results: Vec<Option<RedisResult<Value>>> = (0..cmds.len()).map(|_| None).collect();
        // By node, in order.
        let mut by_node: Vec<(Addr, Vec<usize>)> = Vec::new();
        for (i, args) in cmds.iter().enumerate() {
            match command_slot(args) {
                Err(_) => results[i] = Some(self.exec(args)),
                Ok(s) => {
                    let addr = self.addr_of(s);
                    match by_node.iter_mut().find(|(a, _)| *a == addr) {
                        Some((_, v)) => v.push(i),
                        None => by_node.push((addr, vec![i])),
                    }
                }
            }
        }
        for (addr, idx) in by_node {
            let mut batch = Vec::new();
            for &i in &idx {
                let mut cmd = redis::Cmd::new();
                for a in &cmds[i] {
                    cmd.arg(a.as_slice());
                }
                cmd.write_packed_command(&mut batch);
            }
            match self.round_trip(&addr, &batch, idx.len()) {
                Ok(replies) => {
                    for (&i, r) in idx.iter().zip(replies) {
                        // A redirected command, or one to try again, is run again on its own.
                        let again = redirect(&r).is_some() || reply_code(&r).as_deref() == Some("TRYAGAIN");
                        results[i] = Some(if again { self.exec(&cmds[i]) } else { r });
                    }
                }
                // The node failed: commands with a reply keep it; the rest, when they were
                // never written, are tried once more each where the slot map then says (a
                // replica that took over), else fail on their own (written ones may have run:
                // never sent again).
                Err(f) => {
                    self.refresh_soon();
                    let mut got = f.got.into_iter();
                    for &i in &idx {
                        results[i] = Some(match got.next() {
                            // A redirection or TRYAGAIN did not run: run it on its own.
                            Some(r) if redirect(&r).is_some() || reply_code(&r).as_deref() == Some("TRYAGAIN") => {
                                self.exec(&cmds[i])
                            }
                            Some(r) => r,
                            None if !f.sent => self.exec(&cmds[i]),
                            None => Err(node_error_like(&f.err)),
                        });
                    }
                }
            }
        }
        self.replies
            .extend(results.into_iter().map(|r| r.unwrap_or(Ok(Value::Nil))));
        Ok(())
    }

    /// The next reply of the pipelined commands, in the order they were sent.
    pub(crate) fn recv_response(&mut self) -> RedisResult<Value> {
        self.replies.pop_front().unwrap_or_else(|| {
            Err(redis::RedisError::from((
                redis::ErrorKind::Client,
                "no reply is waiting",
            )))
        })
    }
}

/// The slot map in a `CLUSTER SLOTS` reply from `from` (an empty host is `from`'s).
fn slot_map(v: &Value, from: &Addr) -> Vec<Option<Addr>> {
    let mut map = vec![None; SLOTS];
    let Value::Array(ranges) = v else { return map };
    for r in ranges {
        let Value::Array(r) = r else { continue };
        let (Some(Value::Int(lo)), Some(Value::Int(hi)), Some(Value::Array(master))) = (r.first(), r.get(1), r.get(2))
        else {
            continue;
        };
        let host = match master.first() {
            Some(Value::BulkString(h)) => String::from_utf8_lossy(h).into_owned(),
            Some(Value::SimpleString(h)) => h.clone(),
            _ => continue,
        };
        let host = if host.is_empty() { from.0.clone() } else { host };
        let Some(Value::Int(port)) = master.get(1) else {
            continue;
        };
        let (lo, hi) = ((*lo).max(0) as usize, (*hi).clamp(0, SLOTS as i64 - 1) as usize);
        if lo <= hi {
            map[lo..=hi].fill(Some((host.clone(), *port as u16)));
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redirect_to_a_slot_past_the_last_is_no_redirect() {
        let moved = |text: &str| redirect(&Ok(error_reply(text)));
        let to = ("127.0.0.1".to_string(), 7000);
        assert_eq!(moved("MOVED 16383 127.0.0.1:7000"), Some((false, 16383, to.clone())));
        assert_eq!(moved("ASK 0 127.0.0.1:7000"), Some((true, 0, to)));
        assert_eq!(moved("MOVED 16384 127.0.0.1:7000"), None);
        assert_eq!(moved("MOVED 20000 127.0.0.1:7000"), None);
        assert_eq!(moved("MOVED 70000 127.0.0.1:7000"), None);
    }

    #[test]
    fn slots_as_redis_computes_them() {
        // Values from the Redis Cluster specification and CLUSTER KEYSLOT.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"{user1000}.following"), slot(b"{user1000}.followers"));
        assert_eq!(slot(b"foo{}{bar}"), slot(b"foo{}{bar}"));
        assert_eq!(slot(b"{}x"), crc16(b"{}x") % 16384);
    }

    #[test]
    fn keys_and_cross_slot_commands() {
        let a = |v: &[&str]| v.iter().map(|s| s.as_bytes().to_vec()).collect::<Vec<_>>();
        assert_eq!(command_slot(&a(&["PING"])), Ok(None));
        assert_eq!(command_slot(&a(&["SET", "foo", "1"])), Ok(Some(12182)));
        assert!(command_slot(&a(&["MGET", "{t}a", "{t}b"])).is_ok());
        assert!(
            command_slot(&a(&["MGET", "a", "b"]))
                .unwrap_err()
                .starts_with("CROSSSLOT")
        );
        assert_eq!(
            keys(&a(&["MSET", "k1", "v1", "k2", "v2"])),
            vec![&b"k1"[..], &b"k2"[..]]
        );
        assert_eq!(keys(&a(&["EVAL", "return 1", "1", "k", "arg"])), vec![&b"k"[..]]);
        assert_eq!(
            keys(&a(&["XREAD", "COUNT", "1", "STREAMS", "s1", "s2", "0", "0"])),
            vec![&b"s1"[..], &b"s2"[..]]
        );
        assert_eq!(keys(&a(&["OBJECT", "ENCODING", "k"])), vec![&b"k"[..]]);
        assert_eq!(keys(&a(&["BITOP", "AND", "d", "k1", "k2"])).len(), 3);
        assert_eq!(keys(&a(&["BLPOP", "k1", "k2", "0"])), vec![&b"k1"[..], &b"k2"[..]]);
        assert_eq!(
            keys(&a(&["ZUNIONSTORE", "d", "2", "k1", "k2", "WEIGHTS", "1", "2"])),
            vec![&b"d"[..], &b"k1"[..], &b"k2"[..]]
        );
        assert_eq!(
            keys(&a(&["ZUNION", "2", "k1", "k2", "WITHSCORES"])),
            vec![&b"k1"[..], &b"k2"[..]]
        );
        assert!(command_slot(&a(&["RENAME", "a", "b"])).is_err());
        assert!(command_slot(&a(&["RENAME", "{t}a", "{t}b"])).is_ok());
        assert_eq!(command_slot(&a(&["MULTI"])), Ok(None));
    }

    #[test]
    fn packed_commands_split_back() {
        let mut p = redis::pipe();
        p.cmd("SET").arg("a").arg("x\r\ny").cmd("GET").arg("a");
        let cmds = unpack(&p.get_packed_pipeline()).unwrap();
        assert_eq!(
            cmds,
            vec![
                vec![b"SET".to_vec(), b"a".to_vec(), b"x\r\ny".to_vec()],
                vec![b"GET".to_vec(), b"a".to_vec()]
            ]
        );
    }
}
