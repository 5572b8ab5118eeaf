//! Redis connections of a worker's scripts (the state behind the `hiredis` module): one per
//! `hiredis.connect()` per script, re-established with backoff after a failure, with the
//! queues of pipelined and appended commands.

pub(crate) use super::redis_cluster::describe;
pub(crate) use crate::config::types::{RedisTarget, RedisTimeouts};
use std::time::{Duration, Instant};

use redis::IntoConnectionInfo;

pub(crate) const ERR_IO: i32 = 1;
pub(crate) const ERR_OTHER: i32 = 2;
pub(crate) const ERR_EOF: i32 = 3;
pub(crate) const ERR_PROTOCOL: i32 = 4;
pub(crate) const REPLY_STRING: i32 = 1;
pub(crate) const REPLY_ARRAY: i32 = 2;
pub(crate) const REPLY_INTEGER: i32 = 3;
pub(crate) const REPLY_NIL: i32 = 4;
pub(crate) const REPLY_STATUS: i32 = 5;
pub(crate) const REPLY_ERROR: i32 = 6;

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error(transparent)]
    Managed(#[from] super::managed::ManagedError),
    #[error("{}", describe(.0))]
    Redis(#[from] redis::RedisError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Why a script's connection is down, as its calls report it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LinkError {
    #[error("{}: not connected (retrying after backoff)", describe_target(.0))]
    Backoff(RedisTarget),
    #[error("{}: {source}", describe_target(target))]
    Connect { target: RedisTarget, source: ConnectError },
}

/// A connection: to one server, or to a cluster (commands routed by slot).
pub(crate) enum Link {
    One(redis::Connection),
    Cluster(Box<super::redis_cluster::Cluster>),
}

impl Link {
    /// Whether a failed call leaves the link usable: a cluster's node failure fails that
    /// node's commands only (the cluster drops and retries the node itself).
    pub(crate) fn survives_failures(&self) -> bool {
        matches!(self, Link::Cluster(_))
    }

    /// A cluster's nodes that are down now (0 for one server: its own failure drops the link).
    pub(crate) fn nodes_down(&self) -> usize {
        match self {
            Link::One(_) => 0,
            Link::Cluster(c) => c.nodes_down(),
        }
    }

    /// Node outages a cluster saw since the last call (`redis_lost`, `redis_restored`).
    pub(crate) fn take_notices(&mut self) -> Vec<(crate::diag::Kind, String)> {
        match self {
            Link::One(_) => Vec::new(),
            Link::Cluster(c) => std::mem::take(&mut c.notices),
        }
    }

    pub(crate) fn req_command(&mut self, cmd: &redis::Cmd) -> redis::RedisResult<redis::Value> {
        match self {
            Link::One(c) => redis::ConnectionLike::req_command(c, cmd),
            Link::Cluster(c) => c.req_command(cmd),
        }
    }

    pub(crate) fn send_packed_command(&mut self, packed: &[u8]) -> redis::RedisResult<()> {
        match self {
            Link::One(c) => c.send_packed_command(packed),
            Link::Cluster(c) => c.send_packed_command(packed),
        }
    }

    pub(crate) fn recv_response(&mut self) -> redis::RedisResult<redis::Value> {
        match self {
            Link::One(c) => c.recv_response(),
            Link::Cluster(c) => c.recv_response(),
        }
    }
}

/// Opens a script's connection to `target`.
pub(crate) fn open_link(target: &RedisTarget, timeouts: RedisTimeouts) -> Result<Link, ConnectError> {
    match target {
        RedisTarget::Cluster(seeds) => Ok(Link::Cluster(Box::new(super::redis_cluster::Cluster::connect(
            seeds, timeouts,
        )?))),
        _ => Ok(Link::One(open(target, timeouts)?)),
    }
}

/// One script's connection, re-established with backoff after a failure.
pub(crate) struct RedisConn {
    pub(super) target: RedisTarget,
    /// Commands of suspended pipelined coroutines, packed, and the window events waiting for
    /// their replies, in order.
    pub(super) piped: Vec<u8>,
    pub(super) waiters: Vec<(usize, u64)>,
    pub(super) con: Option<Link>,
    /// Commands queued by `append_command`, packed, not yet sent.
    pub(super) pending: Vec<u8>,
    /// What each `append_command` still awaiting `get_reply` gets, in order.
    pub(super) order: std::collections::VecDeque<Appended>,
    /// Replies still to read with `get_reply`: sent commands, then packed ones.
    pub(super) sent: usize,
    pub(super) queued: usize,
    pub(super) next_try: Instant,
    pub(super) backoff: Duration,
    pub(super) closed: bool,
    /// Since when the connection is down, and the failure count then (`None`: up).
    pub(super) down: Option<(Instant, u64)>,
    /// Which use of this slot it is: a closed slot is reused by a later `connect`, and a
    /// connection userdata of an earlier use (which holds slot and generation) is closed.
    pub(super) generation: u32,
    /// A transaction is open on the connection (`MULTI` sent, no `EXEC` or `DISCARD` yet), and
    /// a `WATCH` is in force: while either is, no command of a pipelined `loop()` is queued
    /// (see [`TxState`]).
    pub(super) tx: TxState,
    /// The script call ([`RedisState::call_seq`]) in which the transaction was lost.
    pub(super) lost_in: u64,
    /// The script's last `AUTH` and `SELECT` that Redis accepted: the session a new connection
    /// is given again after a failure (without them a password-protected Redis answered every
    /// later command, the script's own `AUTH` included, with `NOAUTH` for good, and a `SELECT`ed
    /// database silently became database 0).
    pub(super) session: [Option<redis::Cmd>; 2],
}

/// Which of [`RedisConn::session`]'s commands `name` is (`AUTH`, `SELECT`), if one.
pub(super) fn session_slot(name: &[u8]) -> Option<usize> {
    if name.eq_ignore_ascii_case(b"AUTH") {
        Some(0)
    } else if name.eq_ignore_ascii_case(b"SELECT") {
        Some(1)
    } else {
        None
    }
}

/// What a connection has open of a transaction. The events of a pipelined window share their
/// connection, so a `MULTI` ... `EXEC` (or `WATCH` ... `EXEC`) queued among the other events'
/// commands would take theirs into it (or nest): while one is open on any connection, the
/// running `loop()`'s commands are sent at once, in order, as with `pipeline = 1`. The
/// running coroutine keeps the worker until its transaction ends (it never yields meanwhile),
/// so the other events' queued commands go out after it.
///
/// A connection lost while one is open cannot be taken up again by a new connection: the
/// server forgot the `MULTI` (or the `WATCH`), so the script's next commands would run at
/// once, outside the transaction, and its `EXEC` fail. The transaction is then `lost`: its
/// commands are refused (not sent) until the script ends it (`EXEC`, `DISCARD` or `RESET`,
/// refused too; `UNWATCH` for a `WATCH` without `MULTI`), as the original's hiredis context
/// stayed failed, or until the script call that lost it has returned (see
/// [`RedisState::call_seq`]): a script that gives up on it is not cut off from Redis for good.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TxState {
    multi: bool,
    watch: bool,
    lost: bool,
}

impl TxState {
    pub(super) fn open(self) -> bool {
        self.multi || self.watch || self.lost
    }

    /// The connection was lost inside the transaction (see above).
    pub(super) fn lost(self) -> bool {
        self.lost
    }

    /// The state once the connection failed: a transaction open is lost (what was open is
    /// kept: an `UNWATCH` ends a lost `WATCH` without `MULTI`).
    pub(super) fn after_failure(self) -> TxState {
        TxState {
            lost: self.open(),
            ..self
        }
    }

    /// Whether a command named `name` may change the state (`RESET` ends a transaction too).
    pub(super) fn concerns(name: &[u8]) -> bool {
        super::redis_cluster::is_tx_name(name) || name.eq_ignore_ascii_case(b"RESET")
    }

    /// The state after a command named `name` was sent (whatever its reply: a refused
    /// `MULTI` leaves one open, an `EXEC` without one closes nothing that is open).
    pub(super) fn after(mut self, name: &[u8]) -> TxState {
        let is = |s: &[u8]| name.eq_ignore_ascii_case(s);
        if self.lost {
            if is(b"EXEC") || is(b"DISCARD") || is(b"RESET") || (is(b"UNWATCH") && !self.multi) {
                self = TxState::default();
            }
        } else if is(b"MULTI") {
            self.multi = true;
        } else if is(b"EXEC") || is(b"DISCARD") || is(b"RESET") {
            self = TxState::default();
        } else if is(b"WATCH") && !self.multi {
            self.watch = true;
        } else if is(b"UNWATCH") && !self.multi {
            self.watch = false;
        }
        self
    }
}

/// What an `append_command` awaiting its `get_reply` will get.
pub(crate) enum Appended {
    /// The reply of an `ML.*` command answered in-process.
    Ml(crate::ml::Reply),
    /// The reply of a command sent (or to be sent) to Redis, still on the connection.
    Redis,
    /// Its reply (or failure), read early: another command needed the connection.
    Read(Result<redis::Value, (String, i32)>),
    /// Lost with its connection before its reply was read (it may or may not have run).
    Lost,
}

pub(super) const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Per-worker Redis state.
pub struct RedisState {
    pub target: RedisTarget,
    pub timeouts: RedisTimeouts,
    pub(super) conns: Vec<RedisConn>,
    /// Which script call runs (one more at each call and resume, `WorkerCtx::set_cur_script`):
    /// a transaction lost in an earlier call is forgotten at a command of a later one.
    pub(crate) call_seq: u64,
    /// Calls, failures (I/O, protocol) and error replies, for the stats.
    pub calls: u64,
    pub failures: u64,
    pub error_replies: u64,
    /// Outages begun and ended since the worker last reported them: (kind, message), kind
    /// `redis_lost` or `redis_restored` (one record each per outage of a connection).
    pub(super) notices: Vec<(crate::diag::Kind, String)>,
    /// Since when (and at which failure count) `hiredis.connect()` to which server has failed,
    /// until one to it succeeds: a Redis never reached is reported once, as a lost connection
    /// is.
    pub(super) connect_down: Vec<(Instant, u64, RedisTarget)>,
}

thread_local! {
    /// Connections (slot, generation) whose userdata the collector freed while the worker's
    /// context was in use: a finalizer run by an allocation inside one of the engine's calls
    /// could not close them. Before, they stayed open for the rest of the run (a script that
    /// connects per event and never closes leaked some, each counted against the 256 allowed).
    static DEFERRED_CLOSES: std::cell::RefCell<Vec<[u32; 2]>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Asks for connection (slot, generation) to be closed by the next [`RedisState::close_deferred`].
pub(crate) fn defer_close(slot: u32, generation: u32) {
    DEFERRED_CLOSES.with(|d| d.borrow_mut().push([slot, generation]));
}

impl RedisState {
    /// Closes connection `slot` if it is still the one of `generation` (a slot is reused).
    pub(crate) fn close(&mut self, slot: u32, generation: u32) {
        if let Some(conn) = self.conns.get_mut(slot as usize)
            && conn.generation == generation
        {
            conn.closed = true;
            conn.con = None;
            conn.pending.clear();
            conn.order.clear();
        }
    }

    /// Closes the connections [`defer_close`] was asked to close on this thread.
    pub(crate) fn close_deferred(&mut self) {
        let due = DEFERRED_CLOSES.with(|d| std::mem::take(&mut *d.borrow_mut()));
        for [slot, generation] in due {
            self.close(slot, generation);
        }
    }

    /// Connections not closed (up or down), once the deferred closes are done.
    pub fn open_count(&mut self) -> usize {
        self.close_deferred();
        self.conns.iter().filter(|c| !c.closed).count()
    }

    /// Connections that are down now (closed ones do not count), a cluster's failed nodes
    /// counting one each, and servers `hiredis.connect()` has failed to reach since its last
    /// success there (a Redis never reached is down too).
    pub fn down_count(&self) -> u64 {
        let conns: u64 = self
            .conns
            .iter()
            .filter(|c| !c.closed)
            .map(|c| match (&c.down, &c.con) {
                (Some(_), _) => 1,
                (None, Some(link)) => link.nodes_down() as u64,
                (None, None) => 0,
            })
            .sum();
        conns + self.connect_down.len() as u64
    }

    pub fn new(target: RedisTarget, timeouts: RedisTimeouts) -> Self {
        // Deferred closes left on this thread are of another context's connections (a
        // reload check's on the control thread): the slots here are numbered afresh.
        DEFERRED_CLOSES.with(|d| d.borrow_mut().clear());
        RedisState {
            target,
            timeouts,
            conns: Vec::new(),
            call_seq: 0,
            calls: 0,
            failures: 0,
            error_replies: 0,
            notices: Vec::new(),
            connect_down: Vec::new(),
        }
    }

    /// `hiredis.connect()` to `target` failed with `error`: reported once until a connect
    /// succeeds ([`RedisState::connect_succeeded`]).
    pub(super) fn connect_failed(&mut self, target: &RedisTarget, error: &str) {
        if !self.connect_down.iter().any(|d| d.2 == *target) {
            self.connect_down.push((Instant::now(), self.failures, target.clone()));
            let msg = format!(
                "{}: cannot connect ({error}); hiredis.connect() returns nil, the error and ERR_IO until it can",
                describe_target(target)
            );
            self.notices.push((crate::diag::Kind::RedisLost, msg));
        }
    }

    /// A `hiredis.connect()` succeeded: the end of connect failures to that server is reported
    /// (one to another server says nothing of them).
    pub(super) fn connect_succeeded(&mut self, target: &RedisTarget) {
        if let Some(k) = self.connect_down.iter().position(|d| d.2 == *target) {
            let (since, failures_then, _) = self.connect_down.swap_remove(k);
            let msg = format!(
                "{}: connected after {:.1} s of failed connects; {} Redis calls of this worker failed meanwhile",
                describe_target(target),
                since.elapsed().as_secs_f64(),
                self.failures.saturating_sub(failures_then)
            );
            self.notices.push((crate::diag::Kind::RedisRestored, msg));
        }
    }

    /// Makes sure connection `i` is up (trying again only after its backoff).
    pub(super) fn ensure(&mut self, i: usize) -> Result<(), LinkError> {
        if self.conns[i].con.is_some() {
            return Ok(());
        }
        let now = Instant::now();
        let target = &self.conns[i].target;
        if now < self.conns[i].next_try {
            return Err(LinkError::Backoff(target.clone()));
        }
        // A connection that failed is probed first with a short wait: a hung Redis (stopped,
        // swapping, a frozen VM: its kernel still accepts connections) then stays down, and its
        // calls fail at once between probes, instead of each taking the full reply timeout.
        // The session's AUTH and SELECT go first; any answer of the server (an error reply:
        // a password changed meanwhile) shows it alive, and the script sees that answer on
        // its next commands, its own AUTH included.
        let session = self.conns[i].session.clone();
        let probed = open_link(target, self.timeouts).and_then(|mut con| {
            if let Link::One(c) = &mut con {
                let probing = self.conns[i].down.is_some();
                if probing {
                    c.set_read_timeout(Some(self.timeouts.io.min(super::redis_cluster::PROBE_WAIT)))?;
                }
                let alive = |r: redis::RedisResult<redis::Value>| match r {
                    Err(e) if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() => Err(e),
                    _ => Ok(()),
                };
                for cmd in session.iter().flatten() {
                    alive(redis::ConnectionLike::req_command(c, cmd))?;
                }
                if probing {
                    alive(redis::cmd("PING").query::<redis::Value>(c))?;
                    c.set_read_timeout(Some(self.timeouts.io))?;
                }
            }
            Ok(con)
        });
        match probed {
            Ok(con) => {
                let failures = self.failures;
                let c = &mut self.conns[i];
                c.con = Some(con);
                c.backoff = BACKOFF_MIN;
                if let Some((since, failures_then)) = c.down.take() {
                    let restarted = match c.target {
                        RedisTarget::Managed => super::managed::exited_since(since)
                            .map(|how| format!(" (the managed {how} and was started again with its data)"))
                            .unwrap_or_default(),
                        _ => String::new(),
                    };
                    let msg = format!(
                        "{}: connection restored {:.1} s after it was found down; {} Redis calls of this worker failed meanwhile{restarted}",
                        describe_target(&c.target),
                        since.elapsed().as_secs_f64(),
                        failures.saturating_sub(failures_then)
                    );
                    self.notices.push((crate::diag::Kind::RedisRestored, msg));
                }
                Ok(())
            }
            Err(source) => {
                let target = self.conns[i].target.clone();
                self.fail(i);
                Err(LinkError::Connect { target, source })
            }
        }
    }

    /// Forgets the appended commands of connection `i` whose replies are not read yet (sent
    /// or not): each one's `get_reply` fails with `ERR_IO`, and no later command gets one of
    /// their replies. In-process replies and replies read early stay.
    pub(super) fn lose_appended(&mut self, i: usize) {
        let c = &mut self.conns[i];
        c.sent = 0;
        c.queued = 0;
        c.pending.clear();
        for a in c.order.iter_mut() {
            if matches!(a, Appended::Redis) {
                *a = Appended::Lost;
            }
        }
    }

    /// Drops connection `i` after a transport failure and schedules the next attempt.
    pub(super) fn fail(&mut self, i: usize) {
        self.fail_with(i, ERR_IO);
    }

    /// Drops connection `i` after a call on it failed with `code` and schedules the next
    /// attempt: after a backoff, which is for a server that does not answer, except for a
    /// connection the server closed (`ERR_EOF`: its idle `timeout`, `CLIENT KILL`, a restart),
    /// opened again at the next call (with a backoff, every call in it failed although the
    /// server was there). The `redis_lost` record says which.
    pub(super) fn fail_with(&mut self, i: usize, code: i32) {
        let closed = code == ERR_EOF;
        let failures = self.failures;
        let c = &mut self.conns[i];
        if c.down.is_none() {
            c.down = Some((Instant::now(), failures));
            let msg = if closed {
                format!(
                    "{}: connection closed by the server (its idle `timeout`, CLIENT KILL or a restart); the call that found it failed with ERR_EOF, the next one opens a new connection",
                    describe_target(&c.target)
                )
            } else {
                format!(
                    "{}: connection lost; calls fail with ERR_IO until it is back (retrying with backoff)",
                    describe_target(&c.target)
                )
            };
            self.notices.push((crate::diag::Kind::RedisLost, msg));
        }
        self.lose_appended(i);
        let c = &mut self.conns[i];
        c.con = None;
        // The server forgot the connection's transaction and watches with it: one open is
        // lost (its next commands are refused until the script ends it).
        c.tx = c.tx.after_failure();
        c.lost_in = self.call_seq;
        if closed {
            c.next_try = Instant::now();
            c.backoff = BACKOFF_MIN;
        } else {
            c.next_try = Instant::now() + c.backoff;
            c.backoff = (c.backoff * 2).min(BACKOFF_MAX);
        }
    }
}

/// Connects to `target` within the connect timeout and sets the I/O timeouts.
pub(crate) fn open(target: &RedisTarget, timeouts: RedisTimeouts) -> Result<redis::Connection, ConnectError> {
    let info = match target {
        RedisTarget::Tcp(h, p) => (h.as_str(), *p).into_connection_info(),
        RedisTarget::Unix(path) => redis::ConnectionAddr::Unix(path.clone()).into_connection_info(),
        RedisTarget::Managed => redis::ConnectionAddr::Unix(super::managed::socket()?).into_connection_info(),
        // A plain connection to the first seed (`check`'s PING, module loading).
        RedisTarget::Cluster(seeds) => {
            let (h, p) = seeds.first().cloned().unwrap_or_default();
            (h.as_str(), p).into_connection_info()
        }
    }?;
    Ok(super::redis_cluster::connect_info(info, timeouts)?)
}

impl RedisState {
    /// Whether connection `slot`'s transaction is lost (a command on it is refused): one lost
    /// in an earlier script call is forgotten first.
    pub(super) fn tx_lost(&mut self, slot: usize) -> bool {
        let seq = self.call_seq;
        let c = &mut self.conns[slot];
        if c.tx.lost() && c.lost_in != seq {
            c.tx = TxState::default();
        }
        c.tx.lost()
    }
}

/// Why a command of a transaction whose connection was lost is refused (see [`TxState`]).
pub(super) fn lost_tx_message(t: &RedisTarget) -> String {
    format!(
        "{}: the connection was lost inside a transaction (MULTI or WATCH), which the server forgot: this command is not sent, nor any other until the script ends the transaction with EXEC, DISCARD or RESET (refused too)",
        describe_target(t)
    )
}

pub(super) fn describe_target(t: &RedisTarget) -> String {
    match t {
        RedisTarget::Tcp(h, p) => format!("redis {h}:{p}"),
        RedisTarget::Unix(p) => format!("redis unix:{}", p.display()),
        RedisTarget::Managed => "managed redis".to_string(),
        RedisTarget::Cluster(seeds) => format!(
            "redis cluster {}",
            seeds
                .iter()
                .map(|(h, p)| format!("{h}:{p}"))
                .collect::<Vec<_>>()
                .join(",")
        ),
    }
}

/// The hiredis error code of a failed call, as hiredis sets it: `ERR_EOF` when the server
/// closed the connection, `ERR_IO` for other transport failures (refused, reset, timed out),
/// `ERR_PROTOCOL` for a reply that does not parse.
pub(super) fn error_code(e: &redis::RedisError) -> i32 {
    if super::redis_cluster::closed_by_server(e) {
        ERR_EOF
    } else if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
        ERR_IO
    } else if matches!(e.kind(), redis::ErrorKind::Parse) {
        ERR_PROTOCOL
    } else {
        ERR_OTHER
    }
}
