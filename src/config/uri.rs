//! Input and output URIs of config.lua (`file://`, `zfile://`, `tail://`, `ipc://`,
//! `ipc+stream://`), with the original's path rules: relative paths live under the log
//! directory, a `<` suffix means "from the start" (inputs) or "truncate" (outputs), a `>`
//! suffix is accepted and means the default.

use std::path::{Path, PathBuf};

pub(super) use super::types::{IpcKind, KafkaKey, KafkaSpec, Pace, ParquetOptions, RedisInMode, RedisInSpec};

/// Where events come from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum InputUri {
    /// Read a file to its end (gzip-compressed files are recognised by their magic bytes);
    /// with `?pace=N`, at N times the pace its timestamps were recorded at.
    File { path: PathBuf, pace: Option<Pace> },
    /// Read a gzip file to its end (`zfile://`).
    Zfile { path: PathBuf, pace: Option<Pace> },
    /// Follow a file; `from_start` is the `<` suffix.
    Tail { path: PathBuf, from_start: bool },
    /// Bind a unix datagram socket (`ipc://`) or listen on a unix stream socket
    /// (`ipc+stream://`).
    Ipc { path: PathBuf, kind: IpcKind },
    /// Consume a Kafka topic as a member of a consumer group.
    Kafka(KafkaSpec),
    /// Take Suricata's Redis output: a list or a stream (`redis://HOST:PORT/KEY?mode=...`).
    Redis(RedisInSpec),
}

/// Where results go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum OutputUri {
    /// Append (or, with `<`, truncate) to a file, one event per line.
    File { path: PathBuf, truncate: bool },
    /// The same, gzip-compressed (`zfile://`).
    Zfile { path: PathBuf, truncate: bool },
    /// Send to a unix datagram socket (`ipc://`, one datagram per event) or a unix stream
    /// socket (`ipc+stream://`, one line per event).
    Ipc { path: PathBuf, kind: IpcKind },
    /// Produce to a Kafka topic.
    Kafka {
        brokers: String,
        topic: String,
        key: KafkaKey,
        /// Messages the producer holds unacknowledged at most (`queue=N`; default 200,000):
        /// past it the writer waits.
        queue: u32,
    },
    /// Parquet files `<dir>/<prefix>-...parquet` with an index (`parquet://DIR/PREFIX`).
    Parquet {
        dir: PathBuf,
        prefix: String,
        opts: ParquetOptions,
    },
}

const PLANNED: &[&str] = &["syslog://", "nats://"];

/// Why a URI of config.lua was refused; shown after the URI itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{uri:?}: {problem}")]
pub(crate) struct UriError {
    pub uri: String,
    pub problem: UriProblem,
}

/// What is wrong with a URI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum UriProblem {
    #[error("empty path")]
    EmptyPath,
    #[error("unknown scheme (supported: {0})")]
    UnknownScheme(&'static str),
    #[error("this scheme is not available in this build (supported: {0})")]
    NotInThisBuild(&'static str),
    #[error("tail:// is an input scheme")]
    InputOnly,
    #[error("socket path longer than 107 bytes")]
    SocketPathTooLong,
    #[error("expected kafka://host:port[,host:port...]/topic")]
    KafkaForm,
    #[error("brokers must be host:port[,host:port...]")]
    KafkaBrokers,
    #[error("invalid topic name {0:?}")]
    KafkaTopic(String),
    #[error("partitions must be a list like 0,1,2")]
    KafkaPartitions,
    #[error("expected parquet://DIR/PREFIX")]
    ParquetForm,
    #[error("expected redis://HOST:PORT/KEY")]
    RedisForm,
    #[error("unknown parameter {param} ({expected})")]
    UnknownParameter { param: String, expected: &'static str },
    #[error("bad value in {param} ({expected})")]
    BadValue { param: String, expected: &'static str },
    #[error("{param}= given twice")]
    Repeated { param: String },
    #[error(
        "{params} not for mode={mode}: only the parameters of the chosen mode apply (group=, consumer=, start=, claim=: mode=stream; processing=: mode=list)"
    )]
    OtherMode { params: String, mode: String },
    #[error(
        "processing={0} is the input's own key: items would be moved into the list they come from and read again without end (give the processing list a name of its own, or leave processing= out: KEY:processing)"
    )]
    ProcessingIsKey(String),
}

impl UriProblem {
    /// A parameter `key=value` not accepted: a bad value of a parameter in `known`, else an
    /// unknown parameter.
    fn parameter(key: &str, value: &str, known: &[&str], expected: &'static str) -> UriProblem {
        let param = format!("{key}={value}");
        if known.contains(&key) {
            UriProblem::BadValue { param, expected }
        } else {
            UriProblem::UnknownParameter { param, expected }
        }
    }

    /// `Err(Repeated)` when `key` is in `seen`, which it joins.
    fn once<'a>(key: &'a str, seen: &mut Vec<&'a str>) -> Result<(), UriProblem> {
        if seen.contains(&key) {
            return Err(UriProblem::Repeated { param: key.to_string() });
        }
        seen.push(key);
        Ok(())
    }

    fn of(self, uri: &str) -> UriError {
        UriError {
            uri: uri.to_string(),
            problem: self,
        }
    }
}

fn split_suffix(s: &str) -> (&str, Option<char>) {
    match s.chars().last() {
        Some(c @ ('<' | '>')) => (&s[..s.len() - 1], Some(c)),
        _ => (s, None),
    }
}

fn resolve(uri: &str, path: &str, log_dir: &Path) -> Result<PathBuf, UriError> {
    if path.is_empty() {
        return Err(UriProblem::EmptyPath.of(uri));
    }
    let p = Path::new(path);
    Ok(if p.is_absolute() {
        p.to_path_buf()
    } else {
        log_dir.join(p)
    })
}

fn unsupported(uri: &str, supported: &'static str) -> UriError {
    if PLANNED.iter().any(|p| uri.starts_with(p)) {
        UriProblem::NotInThisBuild(supported).of(uri)
    } else {
        UriProblem::UnknownScheme(supported).of(uri)
    }
}

impl InputUri {
    pub(crate) fn parse(uri: &str, log_dir: &Path) -> Result<InputUri, UriError> {
        if let Some(rest) = uri.strip_prefix("file://") {
            let (rest, pace) = pace_of(uri, rest)?;
            let (p, _) = split_suffix(rest);
            Ok(InputUri::File {
                path: resolve(uri, p, log_dir)?,
                pace,
            })
        } else if let Some(rest) = uri.strip_prefix("zfile://") {
            let (rest, pace) = pace_of(uri, rest)?;
            let (p, _) = split_suffix(rest);
            Ok(InputUri::Zfile {
                path: resolve(uri, p, log_dir)?,
                pace,
            })
        } else if let Some(rest) = uri.strip_prefix("tail://") {
            let (p, suffix) = split_suffix(rest);
            Ok(InputUri::Tail {
                path: resolve(uri, p, log_dir)?,
                from_start: suffix == Some('<'),
            })
        } else if let Some((path, kind)) = ipc(uri, log_dir)? {
            Ok(InputUri::Ipc { path, kind })
        } else if let Some(rest) = uri.strip_prefix("kafka://") {
            let (brokers, topic, params) = kafka_parts(uri, rest)?;
            let mut spec = KafkaSpec {
                brokers,
                topic,
                group: "dragonfly-mle".into(),
                offset: "latest".into(),
                instance: None,
                partitions: None,
            };
            let mut seen = Vec::new();
            for (k, _) in &params {
                UriProblem::once(k, &mut seen).map_err(|p| p.of(uri))?;
            }
            for (k, v) in params {
                match k.as_str() {
                    "group" if !v.is_empty() => spec.group = v,
                    "offset" if v == "earliest" || v == "latest" => spec.offset = v,
                    "instance" if !v.is_empty() => spec.instance = Some(v),
                    "partitions" => {
                        let ps: Result<Vec<i32>, _> = v.split(',').map(|p| p.trim().parse::<i32>()).collect();
                        match ps {
                            Ok(ps) if !ps.is_empty() && ps.iter().all(|&p| p >= 0) => spec.partitions = Some(ps),
                            _ => return Err(UriProblem::KafkaPartitions.of(uri)),
                        }
                    }
                    _ => {
                        return Err(UriProblem::parameter(
                            &k,
                            &v,
                            &["group", "offset", "instance"],
                            "group=NAME, offset=earliest|latest, instance=ID, partitions=0,1,...",
                        )
                        .of(uri));
                    }
                }
            }
            Ok(InputUri::Kafka(spec))
        } else if let Some(rest) = uri.strip_prefix("redis://") {
            redis_input(uri, rest).map(InputUri::Redis)
        } else {
            Err(unsupported(
                uri,
                "file://, zfile://, tail://, ipc://, ipc+stream://, kafka://, redis://",
            ))
        }
    }

    pub(crate) fn path(&self) -> &Path {
        match self {
            InputUri::File { path, .. }
            | InputUri::Zfile { path, .. }
            | InputUri::Tail { path, .. }
            | InputUri::Ipc { path, .. } => path,
            InputUri::Kafka(k) => Path::new(&k.topic),
            InputUri::Redis(r) => Path::new(&r.key),
        }
    }
}

impl OutputUri {
    pub(crate) fn parse(uri: &str, log_dir: &Path) -> Result<OutputUri, UriError> {
        if let Some(rest) = uri.strip_prefix("file://") {
            let (p, suffix) = split_suffix(rest);
            Ok(OutputUri::File {
                path: resolve(uri, p, log_dir)?,
                truncate: suffix == Some('<'),
            })
        } else if let Some(rest) = uri.strip_prefix("zfile://") {
            let (p, suffix) = split_suffix(rest);
            Ok(OutputUri::Zfile {
                path: resolve(uri, p, log_dir)?,
                truncate: suffix == Some('<'),
            })
        } else if uri.starts_with("tail://") {
            Err(UriProblem::InputOnly.of(uri))
        } else if let Some((path, kind)) = ipc(uri, log_dir)? {
            Ok(OutputUri::Ipc { path, kind })
        } else if let Some(rest) = uri.strip_prefix("kafka://") {
            let (brokers, topic, params) = kafka_parts(uri, rest)?;
            let mut key = KafkaKey::Flow;
            let mut queue = 200_000;
            for (k, v) in params {
                match (k.as_str(), v.as_str()) {
                    ("key", "flow") => key = KafkaKey::Flow,
                    ("key", "none") => key = KafkaKey::None,
                    ("queue", n) if n.parse::<u32>().is_ok_and(|n| (1..=10_000_000).contains(&n)) => {
                        queue = n.parse().unwrap_or(queue);
                    }
                    _ => {
                        return Err(UriProblem::parameter(
                            &k,
                            &v,
                            &["key", "queue"],
                            "key=flow|none, queue=1..10000000",
                        )
                        .of(uri));
                    }
                }
            }
            Ok(OutputUri::Kafka {
                brokers,
                topic,
                key,
                queue,
            })
        } else if let Some(rest) = uri.strip_prefix("parquet://") {
            let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
            let full = resolve(uri, main, log_dir)?;
            let prefix = full
                .file_name()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            let dir = full.parent().map(Path::to_path_buf).unwrap_or_default();
            if prefix.is_empty() || main.ends_with('/') {
                return Err(UriProblem::ParquetForm.of(uri));
            }
            let mut opts = ParquetOptions::default();
            for p in query.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                let n: Option<u64> = v.parse().ok().filter(|&n| n > 0);
                match (k, n) {
                    ("rows", Some(n)) => opts.max_rows = n as usize,
                    ("mb", Some(n)) => opts.max_bytes = n * 1024 * 1024,
                    ("seconds", Some(n)) => opts.max_age = std::time::Duration::from_secs(n),
                    _ => {
                        return Err(UriProblem::parameter(
                            k,
                            v,
                            &["rows", "mb", "seconds"],
                            "rows=N, mb=N, seconds=N: positive numbers",
                        )
                        .of(uri));
                    }
                }
            }
            Ok(OutputUri::Parquet { dir, prefix, opts })
        } else {
            Err(unsupported(
                uri,
                "file://, zfile://, ipc://, ipc+stream://, kafka://, parquet://",
            ))
        }
    }
}

/// `HOST:PORT/KEY[?mode=list|pop|stream&side=left|right&processing=P&group=G&consumer=C&start=$|0&claim=S]`.
fn redis_input(uri: &str, rest: &str) -> Result<RedisInSpec, UriError> {
    let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
    let form = || UriProblem::RedisForm.of(uri);
    let (addr, key) = main.split_once('/').ok_or_else(form)?;
    let (host, port) = addr.rsplit_once(':').ok_or_else(form)?;
    let port: u16 = port.parse().map_err(|_| form())?;
    if host.is_empty() || key.is_empty() {
        return Err(form());
    }
    let (mut mode, mut left, mut group, mut consumer, mut start) = ("list".to_string(), false, None, None, None);
    let mut processing = None;
    let mut claim = None;
    let mut seen = Vec::new();
    for p in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        UriProblem::once(k, &mut seen).map_err(|p| p.of(uri))?;
        match (k, v) {
            ("mode", "list" | "pop" | "stream") => mode = v.to_string(),
            ("side", "left" | "right") => left = v == "left",
            ("group", g) if !g.is_empty() => group = Some(g.to_string()),
            ("consumer", c) if !c.is_empty() => consumer = Some(c.to_string()),
            ("start", "$" | "0") => start = Some(v.to_string()),
            ("processing", q) if !q.is_empty() => processing = Some(q.to_string()),
            ("claim", c) if c.parse::<u32>().is_ok() => claim = c.parse::<u32>().ok(),
            _ => {
                return Err(UriProblem::parameter(
                    k,
                    v,
                    &["mode", "side", "group", "consumer", "start", "processing", "claim"],
                    "mode=list|pop|stream, side=left|right, processing=KEY, group=NAME, consumer=NAME, start=$|0, claim=SECONDS",
                )
                .of(uri));
            }
        }
    }
    // Parameters of another mode are a mistake worth saying (a `group=` on a list would
    // suggest several engines can share it safely).
    let stream_only = [
        ("group", group.is_some()),
        ("consumer", consumer.is_some()),
        ("start", start.is_some()),
        ("claim", claim.is_some()),
    ];
    let misplaced: Vec<&str> = match mode.as_str() {
        "stream" => vec![("processing", processing.is_some())],
        "pop" => [&stream_only[..], &[("processing", processing.is_some())]].concat(),
        _ => stream_only.to_vec(),
    }
    .into_iter()
    .filter_map(|(name, given)| given.then_some(name))
    .collect();
    if !misplaced.is_empty() {
        return Err(UriProblem::OtherMode {
            params: misplaced.join("=, ") + "=",
            mode: mode.clone(),
        }
        .of(uri));
    }
    if processing.as_deref() == Some(key) {
        return Err(UriProblem::ProcessingIsKey(key.to_string()).of(uri));
    }
    let mode = match mode.as_str() {
        "stream" => RedisInMode::Stream {
            group: group.unwrap_or_else(|| "dragonfly-mle".into()),
            consumer: consumer.unwrap_or_else(|| "dragonfly-mle".into()),
            start: start.unwrap_or_else(|| "$".into()),
            // A minute by default: far longer than a live engine keeps an entry unacknowledged.
            claim_after: match claim.unwrap_or(60) {
                0 => None,
                s => Some(std::time::Duration::from_secs(s.into())),
            },
        },
        "pop" => RedisInMode::Pop { left },
        _ => RedisInMode::List {
            left,
            processing: processing.unwrap_or_else(|| format!("{key}:processing")),
        },
    };
    Ok(RedisInSpec {
        host: host.to_string(),
        port,
        key: key.to_string(),
        mode,
    })
}

/// A `file://` input's `?pace=N` (N > 0, at most 1,000,000): the rest of the URI and the pace.
fn pace_of<'a>(uri: &str, rest: &'a str) -> Result<(&'a str, Option<Pace>), UriError> {
    let Some((path, query)) = rest.rsplit_once('?') else {
        return Ok((rest, None));
    };
    let Some(v) = query.strip_prefix("pace=") else {
        return Ok((rest, None));
    };
    match v.parse::<f64>() {
        Ok(n) if n > 0.0 && n <= 1e6 => Ok((path, Some(Pace::new(n)))),
        _ => Err(UriProblem::BadValue {
            param: query.to_string(),
            expected: "pace=N: replay at N times the recorded pace, N > 0",
        }
        .of(uri)),
    }
}

/// `ipc://PATH` (datagram) or `ipc+stream://PATH`.
fn ipc(uri: &str, log_dir: &Path) -> Result<Option<(PathBuf, IpcKind)>, UriError> {
    let (rest, kind) = if let Some(r) = uri.strip_prefix("ipc+stream://") {
        (r, IpcKind::Stream)
    } else if let Some(r) = uri.strip_prefix("ipc://") {
        (r, IpcKind::Datagram)
    } else {
        return Ok(None);
    };
    let path = resolve(uri, rest, log_dir)?;
    // sun_path holds 108 bytes with its terminating NUL.
    if path.as_os_str().len() > 107 {
        return Err(UriProblem::SocketPathTooLong.of(uri));
    }
    Ok(Some((path, kind)))
}

/// Brokers, topic and `?k=v` parameters of a `kafka://` URI.
type KafkaParts = (String, String, Vec<(String, String)>);

/// `host:port[,host:port...]/topic[?k=v&...]` -> (brokers, topic, parameters).
fn kafka_parts(uri: &str, rest: &str) -> Result<KafkaParts, UriError> {
    let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
    let Some((brokers, topic)) = main.split_once('/') else {
        return Err(UriProblem::KafkaForm.of(uri));
    };
    if brokers.is_empty() || brokers.split(',').any(|b| !b.contains(':')) {
        return Err(UriProblem::KafkaBrokers.of(uri));
    }
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if topic.is_empty() || !topic.chars().all(valid) {
        return Err(UriProblem::KafkaTopic(topic.to_string()).of(uri));
    }
    let params = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_string(), v.to_string())
        })
        .collect();
    Ok((brokers.to_string(), topic.to_string(), params))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input_error(uri: &str) -> String {
        InputUri::parse(uri, Path::new("/tmp")).expect_err(uri).to_string()
    }

    /// A known parameter with a bad value is named as such, a repeated one too; an unknown
    /// one is unknown.
    #[test]
    fn parameter_mistakes_are_named() {
        for (uri, says) in [
            ("redis://h:1/k?mode=stream&claim=abc", "bad value in claim=abc"),
            ("redis://h:1/k?mode=stream&start=1", "bad value in start=1"),
            ("redis://h:1/k?mode=stream&group=", "bad value in group="),
            (
                "redis://h:1/k?mode=stream&consumer=a&consumer=b",
                "consumer= given twice",
            ),
            ("redis://h:1/k?groupp=g", "unknown parameter groupp=g"),
            ("kafka://b:1/t?offset=earliests", "bad value in offset=earliests"),
            ("kafka://b:1/t?group=a&group=b", "group= given twice"),
            ("kafka://b:1/t?grup=a", "unknown parameter grup=a"),
            ("file://a.json?pace=0", "bad value in pace=0"),
        ] {
            let e = input_error(uri);
            assert!(e.contains(says), "{uri}: {e}");
        }
        assert!(InputUri::parse("redis://h:1/k?mode=stream&claim=5", Path::new("/tmp")).is_ok());
        for (uri, says) in [
            ("parquet:///tmp/p/x?rows=0", "bad value in rows=0"),
            ("parquet:///tmp/p/x?row=5", "unknown parameter row=5"),
            ("kafka://b:1/t?queue=0", "bad value in queue=0"),
            ("kafka://b:1/t?key=tuple", "bad value in key=tuple"),
            ("kafka://b:1/t?keys=flow", "unknown parameter keys=flow"),
        ] {
            let e = OutputUri::parse(uri, Path::new("/tmp")).expect_err(uri).to_string();
            assert!(e.contains(says), "{uri}: {e}");
        }
    }
}
