//! The types a configuration is made of, owned here and taken by the stages that use them
//! (inputs, outputs, scripts), so that config depends on no stage.

use std::path::PathBuf;
use std::time::Duration;

/// Default memory limit of a script state (`script_memory_mb` in config.lua).
pub(crate) const DEFAULT_MEMORY_LIMIT: usize = 1 << 30;

/// Significant digits of non-integer numbers unless a script or config.lua says otherwise:
/// lua-cjson's default, `%.14g`.
pub(crate) const DEFAULT_PRECISION: u8 = 14;

/// What happens to an event whose `loop()` raised: dropped (the default, as the original),
/// passed on as if the call had not failed (a filter's to its default analyzer, an analyzer's
/// to its default analyzer, else its default output), or written to an output (a dead-letter
/// output) with a `dragonfly_error` member naming the script, the place and the message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum OnError {
    #[default]
    Drop,
    Pass,
    Output(String),
}

/// Datagram or stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum IpcKind {
    Datagram,
    Stream,
}

/// Which key messages get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KafkaKey {
    /// The symmetric flow tuple hash (else the flow_id, else no key).
    Flow,
    None,
}

/// How fast a `file://` input replays its events: N times the pace their timestamps were
/// recorded at (`?pace=N`), kept in millionths so that a configuration compares exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Pace(u64);

impl Pace {
    pub(crate) fn new(factor: f64) -> Pace {
        Pace((factor * 1e6).round().max(1.0) as u64)
    }

    pub(crate) fn factor(self) -> f64 {
        self.0 as f64 / 1e6
    }
}

/// The default smallest GC pause of script states (percent): Lua's own.
pub(crate) const DEFAULT_GC_PAUSE: u16 = 200;

/// Where a `redis://` input reads: Suricata's Redis output (`filetype: redis`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct RedisInSpec {
    pub host: String,
    pub port: u16,
    pub key: String,
    pub mode: RedisInMode,
}

impl RedisInSpec {
    /// `redis://HOST:PORT/KEY`, for reports.
    pub(crate) fn name(&self) -> String {
        format!("redis://{}:{}/{}", self.host, self.port, self.key)
    }
}

/// How a `redis://` input takes events.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum RedisInMode {
    /// A list as a reliable queue: each event is moved to `processing` (default
    /// `<key>:processing`) and removed from it once written (at-least-once). `left`: take from the left end (producers that RPUSH);
    /// by default from the right (Suricata's `list`/`lpush`).
    List { left: bool, processing: String },
    /// A list popped directly: an event is gone from Redis once read (at-most-once).
    Pop { left: bool },
    /// A stream read as `consumer` of consumer group `group`, each entry acknowledged once
    /// written (at-least-once); a new group starts at `start` (`$`: new entries, `0`: all).
    Stream {
        group: String,
        consumer: String,
        start: String,
        /// Entries other consumers of the group have left pending this long (a dead engine's)
        /// are claimed and read here; `None`: never.
        claim_after: Option<std::time::Duration>,
    },
}

/// Where a Kafka input reads.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct KafkaSpec {
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

/// When a file is closed and the next one started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParquetOptions {
    /// Rows in one file (0 counts as 1).
    pub max_rows: usize,
    /// Bytes of input JSON in one file, about (a file closes after the row that reaches it).
    pub max_bytes: u64,
    /// Age of a file, from its first row; enforced by the Parquet sink's flush.
    pub max_age: Duration,
}

impl Default for ParquetOptions {
    fn default() -> Self {
        ParquetOptions {
            max_rows: 1_000_000,
            max_bytes: 256 << 20,
            max_age: Duration::from_secs(300),
        }
    }
}

/// What an output does when it cannot deliver: how much it holds, and whether it then drops
/// (`drop_when_full`) instead of making the pipeline wait.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Policy {
    pub limit: usize,
    pub drop_when_full: bool,
}

/// The default bound of what an output holds (`buffer_mb`).
pub(crate) const DEFAULT_HOLD: usize = 64 << 20;

impl Default for Policy {
    fn default() -> Self {
        Policy {
            limit: DEFAULT_HOLD,
            drop_when_full: false,
        }
    }
}

/// Where Redis is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedisTarget {
    Tcp(String, u16),
    Unix(PathBuf),
    /// The engine's own `redis-server` (see `managed`), started on first use.
    Managed,
    /// A Redis Cluster, known by seed nodes (`redis_cluster`).
    Cluster(Vec<(String, u16)>),
}

impl RedisTarget {
    /// From config.lua's `redis_host`/`redis_port` (a port <= 0 means a unix socket path).
    pub fn from_config(host: &str, port: i64) -> RedisTarget {
        if host == "managed" {
            RedisTarget::Managed
        } else if port <= 0 {
            RedisTarget::Unix(PathBuf::from(host))
        } else {
            RedisTarget::Tcp(host.to_string(), port.min(u16::MAX as i64) as u16)
        }
    }
}

/// Timeouts of Redis connections.
#[derive(Clone, Copy, Debug)]
pub struct RedisTimeouts {
    pub connect: Duration,
    pub io: Duration,
}

impl Default for RedisTimeouts {
    fn default() -> Self {
        RedisTimeouts {
            connect: Duration::from_secs(2),
            io: Duration::from_secs(5),
        }
    }
}

/// An output as the pipeline numbers it: `{log}`, `{stats}`, then config.lua's outputs in
/// order; also the end-of-event marker. The only place that knows the numbering.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct OutputId(u32);

impl OutputId {
    /// The internal `{log}` sink.
    pub const LOG: OutputId = OutputId(0);
    /// The internal `{stats}` sink.
    pub const STATS: OutputId = OutputId(1);
    /// Not an output: the record that closes an event (the watermark for ordered outputs).
    pub const END_OF_EVENT: OutputId = OutputId(u32::MAX);
    /// Not a sink: a worker's report of a line that is no event (not a JSON object, or too
    /// long), for `{log}`. The writer rate-limits these per input (the record's `script` holds
    /// the input) in the input's order when `{log}` is ordered (some output is), so "the first
    /// reports in full" are then the first lines.
    pub const INVALID_LINE: OutputId = OutputId(u32::MAX - 1);
    pub const LINE_TOO_LONG: OutputId = OutputId(u32::MAX - 2);
    /// Outputs before the user's (`{log}`, `{stats}`).
    pub const INTERNAL: usize = 2;

    /// The user output at `position` in config.lua's `outputs`.
    pub fn user(position: usize) -> OutputId {
        OutputId(position as u32 + Self::INTERNAL as u32)
    }

    /// Whether it is one of config.lua's outputs (not `{log}`, `{stats}`, a line report or
    /// the marker).
    pub fn is_user(self) -> bool {
        self.0 < Self::LINE_TOO_LONG.0 && self.0 as usize >= Self::INTERNAL
    }

    /// The output a record goes to: `{log}` for a line report, else itself.
    pub fn sink(self) -> OutputId {
        if self == Self::INVALID_LINE || self == Self::LINE_TOO_LONG {
            Self::LOG
        } else {
            self
        }
    }

    /// Its index among the writer's outputs and the stats' outputs.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}
