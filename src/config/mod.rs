//! `config.lua` -> typed, validated [`Config`]. The file is evaluated in a Lua state with only
//! the base library, minus everything that loads files or code (the original opened no library
//! at all), then every problem is collected into one [`ConfigError`] whose lines each name the
//! key and the bad value.

pub(crate) mod glob;
mod load;
pub(crate) mod types;
mod uri;

use std::path::{Path, PathBuf};
use std::time::Duration;

use mlua::{Lua, LuaOptions, StdLib, Table, Value};

pub(crate) use load::interrupt_with;
pub(crate) use uri::{InputUri, OutputUri};

/// Default root directory, as the original.
pub const DEFAULT_ROOT: &str = "/usr/local/dragonfly-mle";
/// Default log directory, as the original.
pub const DEFAULT_LOG_DIR: &str = "/var/log/dragonfly-mle";
/// Default maximum accepted line length.
pub(crate) const DEFAULT_MAX_LINE: usize = 1 << 20;

/// One entry of `inputs`.
#[derive(Clone, Debug)]
pub(crate) struct InputConfig {
    pub tag: String,
    pub uri: InputUri,
    /// Resolved filter script path.
    pub script: PathBuf,
    pub default_analyzer: String,
    /// What happens to an event whose filter `loop()` raised (`on_error`).
    pub on_error: types::OnError,
    /// The wildcard path this input was expanded from (one input per matching file).
    pub glob: Option<PathBuf>,
}

/// One entry of `analyzers`.
#[derive(Clone, Debug)]
pub(crate) struct AnalyzerConfig {
    pub tag: String,
    pub script: PathBuf,
    pub default_analyzer: String,
    pub default_output: String,
    /// Events whose `loop()` may run at once with their Redis commands pipelined (1 = off).
    pub pipeline: usize,
    /// What happens to an event whose `loop()` raised (`on_error`).
    pub on_error: types::OnError,
}

/// One entry of `outputs`.
#[derive(Clone, Debug)]
pub(crate) struct OutputConfig {
    pub tag: String,
    pub uri: OutputUri,
    /// Whether the output receives events in input order (the default).
    pub ordered: bool,
    /// What the output holds while it cannot deliver (`buffer_mb`), and whether it then drops
    /// (`drop_when_full`) instead of making the pipeline wait.
    pub policy: types::Policy,
}

/// A loaded, validated configuration.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    /// What the configuration says that runs but is probably not meant (a default tag that
    /// names nothing): `check` and the start print them, the start also to `{log}`.
    pub warnings: Vec<String>,
    pub root: PathBuf,
    pub log_dir: PathBuf,
    pub config_file: PathBuf,
    pub redis_host: String,
    pub redis_port: i64,
    /// Where Redis is, from `redis_host`/`redis_port` (`Managed`: the engine's own).
    pub redis: types::RedisTarget,
    /// Redis modules to `MODULE LOAD` at startup: (tag, module path).
    pub modules: Vec<(String, String)>,
    /// Whether `ML.*` commands sent through `hiredis` are answered in-process (`redis_ml =
    /// "native"`, the default) or sent to Redis (`"redis"`, for a Redis with the module).
    pub ml_native: bool,
    pub inputs: Vec<InputConfig>,
    pub analyzers: Vec<AnalyzerConfig>,
    pub outputs: Vec<OutputConfig>,
    /// Interval of the stats line (`stats_interval`, seconds; default 60).
    pub stats_interval: Duration,
    /// Longest accepted line in bytes (`max_line_bytes`; default 1 MiB).
    pub max_line: usize,
    /// Poll interval of `tail://` inputs at end of file (`tail_poll_ms`; default 100).
    pub tail_poll: Duration,
    /// Redis connect timeout (`redis_connect_timeout_ms`; default 2000).
    pub redis_connect_timeout: Duration,
    /// Redis read/write timeout (`redis_timeout_ms`; default 5000).
    pub redis_timeout: Duration,
    /// Address of the HTTP endpoint (`http_address`; default 127.0.0.1:7070; `""` or `"off"`
    /// turns it off).
    pub http_address: Option<String>,
    /// Whether `http_address` was set in config.lua (then failing to bind it is an error).
    pub http_explicit: bool,
    /// Whether latency histograms are recorded (`latency_histograms`; default true).
    pub latency_histograms: bool,
    /// Whole-transfer timeout of `dragonfly.http_get` (`http_timeout`, seconds; default 10).
    pub http_timeout: Duration,
    /// Whether `dragonfly.http_get` skips TLS certificate verification (`http_insecure`;
    /// default false). Dangerous: anyone on the path can impersonate the server.
    pub http_insecure: bool,
    /// Timeout of `dragonfly.dnslookup` (`dns_timeout`, seconds; default 5).
    pub dns_timeout: Duration,
    /// Memory limit of each script state, in bytes (`script_memory_mb`; default 1024 MiB):
    /// past it, an allocation in the script fails and that event's call is a script error.
    pub script_memory: usize,
    /// Significant digits of non-integer numbers scripts write (`number_precision`, 1 to 17;
    /// default 14 as lua-cjson; 17: the shortest form that reads back to the same double).
    /// A script may change its own with `cjson_safe.encode_number_precision(n)`.
    pub number_precision: u8,
    /// The smallest GC pause of script states (`gc_pause`, percent, 100 to 1000; default 200):
    /// higher trades memory for less collection work, which pays with large script tables.
    pub gc_pause: u16,
    /// How long, once the engine is stopping, outputs that cannot deliver are waited for
    /// before what they hold is given up (counted as lost).
    pub shutdown_grace: Duration,
    /// Whether managed Redis keeps its data across restarts (`redis_persist`; default true).
    pub redis_persist: bool,
    /// Worker shards (`shards`, 1 to 1024), used when `--shards` is not given; `None`: one per
    /// CPU left after the readers. A root whose analyzers pass state between flows sets 1.
    pub shards: Option<usize>,
}

/// The HTTP endpoint's address when config.lua names none (the original's web service).
pub(crate) const DEFAULT_HTTP_ADDRESS: &str = "127.0.0.1:7070";

/// Checks an HTTP endpoint address: `off`/empty (None) or `HOST:PORT`.
pub(crate) fn parse_http_address(s: &str) -> Result<Option<String>, AddressError> {
    let s = s.trim();
    if s.is_empty() || s == "off" {
        return Ok(None);
    }
    match s.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(Some(s.to_string())),
        _ => Err(AddressError(s.to_string())),
    }
}

/// An HTTP endpoint address that is neither `HOST:PORT` nor `off`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected HOST:PORT or \"off\", got {0:?}")]
pub(crate) struct AddressError(pub String);

/// Every problem found in a configuration, one per line.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration {}:\n  {}", file.display(), errors.join("\n  "))]
pub(crate) struct ConfigError {
    pub file: PathBuf,
    pub errors: Vec<String>,
}

impl Config {
    /// The Redis connection timeouts (`redis_connect_timeout_ms`, `redis_timeout_ms`).
    pub(crate) fn redis_timeouts(&self) -> types::RedisTimeouts {
        types::RedisTimeouts {
            connect: self.redis_connect_timeout,
            io: self.redis_timeout,
        }
    }

    /// Tags are unique among the inputs, the analyzers and the outputs (compared as the
    /// engine looks them up: ignoring ASCII case), and `on_error` names a declared output
    /// (an entry with other errors still declares its tag). A default analyzer or output that
    /// names none is a warning: in the original it was only a string handed to the script, and
    /// configurations with a dangling one ran (what a script sends there is dropped, counted
    /// and reported as `unknown_tag`).
    fn check_tags(&self, declared: &[Vec<(usize, String)>; 3], errs: &mut Vec<String>, warns: &mut Vec<String>) {
        for (table, tags) in ["inputs", "analyzers", "outputs"].iter().zip(declared) {
            for (k, (i, t)) in tags.iter().enumerate() {
                if let Some((j, _)) = tags[..k].iter().find(|(_, u)| u.eq_ignore_ascii_case(t)) {
                    errs.push(format!(
                        "{table}[{i}].tag: {t:?} is also the tag of {table}[{j}] (tags must be unique)"
                    ));
                }
            }
        }
        let has_analyzer = |t: &str| declared[1].iter().any(|(_, a)| a.eq_ignore_ascii_case(t));
        let has_output = |t: &str| declared[2].iter().any(|(_, o)| o.eq_ignore_ascii_case(t));
        let near_analyzer = |t: &str| near_tag(t, &declared[1]);
        let near_output = |t: &str| near_tag(t, &declared[2]);
        for (i, inp) in self.inputs.iter().enumerate() {
            if !inp.default_analyzer.is_empty() && !has_analyzer(&inp.default_analyzer) {
                warns.push(format!(
                    "inputs[{}].default_analyzer: no analyzer has tag {:?}{}{DANGLING}",
                    i + 1,
                    inp.default_analyzer,
                    near_analyzer(&inp.default_analyzer)
                ));
            }
        }
        let on_errors = self
            .inputs
            .iter()
            .enumerate()
            .map(|(i, e)| (format!("inputs[{}]", i + 1), &e.on_error))
            .chain(
                self.analyzers
                    .iter()
                    .enumerate()
                    .map(|(i, e)| (format!("analyzers[{}]", i + 1), &e.on_error)),
            );
        for (key, on_error) in on_errors {
            if let types::OnError::Output(tag) = on_error
                && !has_output(tag)
            {
                errs.push(format!(
                    "{key}.on_error: no output has tag {tag:?}{} (on_error is \"drop\", \"pass\" or an output tag)",
                    near_output(tag)
                ));
            }
        }
        for (i, a) in self.analyzers.iter().enumerate() {
            if !a.default_analyzer.is_empty() && !has_analyzer(&a.default_analyzer) {
                warns.push(format!(
                    "analyzers[{}].default_analyzer: no analyzer has tag {:?}{}{DANGLING}",
                    i + 1,
                    a.default_analyzer,
                    near_analyzer(&a.default_analyzer)
                ));
            }
            if !a.default_output.is_empty() && !has_output(&a.default_output) {
                warns.push(format!(
                    "analyzers[{}].default_output: no output has tag {:?}{}{DANGLING}",
                    i + 1,
                    a.default_output,
                    near_output(&a.default_output)
                ));
            }
        }
    }
}

/// The end of a warning about a default tag that names nothing.
const DANGLING: &str = " (what a script sends there is dropped and reported as unknown_tag)";

struct Validator<'a> {
    errs: &'a mut Vec<String>,
}

impl Validator<'_> {
    fn err(&mut self, key: &str, msg: impl std::fmt::Display) {
        self.errs.push(format!("{key}: {msg}"));
    }

    fn opt_string(&mut self, v: &Value, key: &str) -> Option<String> {
        match v {
            Value::Nil => None,
            Value::String(s) => Some(s.to_string_lossy().to_string()),
            Value::Integer(n) => Some(n.to_string()),
            Value::Number(n) => Some(if n.fract() == 0.0 {
                format!("{}", *n as i64)
            } else {
                n.to_string()
            }),
            other => {
                self.err(key, format!("expected a string, got {}", other.type_name()));
                None
            }
        }
    }

    fn opt_number(&mut self, g: &Table, key: &str) -> Option<f64> {
        match g.get::<Value>(key).unwrap_or(Value::Nil) {
            Value::Nil => None,
            Value::Integer(n) => Some(n as f64),
            Value::Number(n) => Some(n),
            other => {
                self.err(key, format!("expected a number, got {}", other.type_name()));
                None
            }
        }
    }

    fn req_string(&mut self, t: &Table, key: &str, field: &str) -> Option<String> {
        match t.get::<Value>(field).unwrap_or(Value::Nil) {
            Value::Nil => {
                self.err(key, "missing (a string is required)");
                None
            }
            v => self.opt_string(&v, key),
        }
    }

    /// An entry's `tag`: a string that is not empty (`""` names no analyzer or output: it is
    /// what `default_analyzer = ""` says).
    fn req_tag(&mut self, t: &Table, key: &str) -> Option<String> {
        let tag = self.req_string(t, key, "tag")?;
        if tag.trim().is_empty() {
            self.err(
                key,
                "must not be empty (scripts and the configuration name an entry by its tag)",
            );
            return None;
        }
        Some(tag)
    }

    /// The entries of an array-like global table, 1-based, up to the first nil; a key an entry
    /// of that table cannot have is an error.
    fn entries(&mut self, g: &Table, name: &str) -> Vec<(usize, Table)> {
        let out = self.entries_unchecked(g, name);
        let known = entry_keys(name);
        for (i, t) in &out {
            for kv in t.clone().pairs::<Value, Value>().filter_map(|kv| kv.ok()) {
                let k = key_text(&kv.0);
                if !known.contains(&k.as_str()) {
                    self.err(&format!("{name}[{i}].{k}"), unknown_key(&k, known));
                }
            }
        }
        out
    }

    fn entries_unchecked(&mut self, g: &Table, name: &str) -> Vec<(usize, Table)> {
        let mut out = Vec::new();
        match g.get::<Value>(name).unwrap_or(Value::Nil) {
            Value::Table(t) => {
                let mut end = 1i64;
                for i in 1.. {
                    end = i;
                    match t.get::<Value>(i).unwrap_or(Value::Nil) {
                        Value::Nil => break,
                        Value::Table(e) => out.push((i as usize, e)),
                        other => self.err(
                            &format!("{name}[{i}]"),
                            format!("expected a table, got {}", other.type_name()),
                        ),
                    }
                }
                // An entry under a name (`second = {...}`) or after a gap (`[3] = {...}`) is
                // not in the list: it was ignored without a word (an input never read).
                for kv in t.clone().pairs::<Value, Value>().filter_map(|kv| kv.ok()) {
                    let in_list = match kv.0 {
                        Value::Integer(k) => (1..end).contains(&k),
                        Value::Number(k) => k.fract() == 0.0 && k >= 1.0 && k < end as f64,
                        _ => false,
                    };
                    if !in_list {
                        let k = key_text(&kv.0);
                        let sep = if k.starts_with('[') { "" } else { "." };
                        self.err(
                            &format!("{name}{sep}{k}"),
                            format!(
                                "this entry is not in the list and would be ignored: {name} is a list of entries, {name} = {{ {{ ... }}, {{ ... }} }}, without names or gaps (entries 1 to {})",
                                end - 1
                            ),
                        );
                    }
                }
                if out.is_empty() && !self.errs.iter().any(|e| e.starts_with(name)) {
                    self.err(name, "at least one entry is required");
                }
            }
            Value::Nil => self.err(name, "missing (a table of entries is required)"),
            other => self.err(name, format!("expected a table, got {}", other.type_name())),
        }
        out
    }

    /// An entry's `on_error`: "drop" (the default), "pass" or an output tag (checked with the
    /// other tags).
    fn on_error(&mut self, t: &Table, key: &str) -> types::OnError {
        use self::types::OnError;
        match self.opt_string(&t.get::<Value>("on_error").unwrap_or(Value::Nil), key) {
            None => OnError::Drop,
            Some(s) if s == "drop" => OnError::Drop,
            Some(s) if s == "pass" => OnError::Pass,
            Some(s) if s.is_empty() => {
                self.err(key, "expected \"drop\", \"pass\" or an output tag, got \"\"");
                OnError::Drop
            }
            Some(s) => OnError::Output(s),
        }
    }

    /// Resolves a script path (relative ones under `<root>/<dir>/`) and checks it is a file.
    fn script(&mut self, root: &Path, dir: &str, s: &str, key: &str) -> Option<PathBuf> {
        let p = Path::new(s);
        let full = if p.is_absolute() {
            p.to_path_buf()
        } else {
            root.join(dir).join(p)
        };
        let shown = if p.is_absolute() {
            s.to_string()
        } else {
            format!("{dir}/{s}")
        };
        match std::fs::metadata(crate::privilege::host_path(&full)) {
            Ok(m) if m.is_file() => Some(full),
            Ok(m) => {
                let what = if m.is_dir() {
                    "a directory"
                } else {
                    "not a regular file"
                };
                self.err(key, format!("{shown} is {what}, not a script"));
                None
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.err(key, format!("{shown} not found"));
                None
            }
            Err(e) => {
                self.err(key, format!("{shown}: {e}"));
                None
            }
        }
    }
}

/// The default of `shutdown_grace`.
pub(crate) const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The settings config.lua may set (`responders` is the original's, parsed and ignored).
const TOP_LEVEL_KEYS: &[&str] = &[
    "redis_host",
    "redis_port",
    "modules",
    "redis_ml",
    "stats_interval",
    "max_line_bytes",
    "redis_connect_timeout_ms",
    "redis_timeout_ms",
    "http_timeout",
    "dns_timeout",
    "http_insecure",
    "tail_poll_ms",
    "http_address",
    "latency_histograms",
    "script_memory_mb",
    "number_precision",
    "gc_pause",
    "redis_persist",
    "redis_cluster",
    "shards",
    "shutdown_grace",
    "inputs",
    "analyzers",
    "outputs",
    "responders",
];

/// The keys an entry of `inputs`, `analyzers`, `outputs` or `modules` may have.
fn entry_keys(table: &str) -> &'static [&'static str] {
    match table {
        "inputs" => &["tag", "uri", "script", "default_analyzer", "on_error"],
        "analyzers" => &[
            "tag",
            "script",
            "default_analyzer",
            "default_output",
            "pipeline",
            "on_error",
        ],
        "outputs" => &["tag", "uri", "ordered", "buffer_mb", "drop_when_full"],
        "modules" => &["tag", "module"],
        _ => &[],
    }
}

/// A table key as config.lua spells it (strings as they are, numbers as numbers).
fn key_text(k: &Value) -> String {
    match k {
        Value::String(s) => s.to_string_lossy().to_string(),
        Value::Integer(n) => format!("[{n}]"),
        Value::Number(n) => format!("[{n}]"),
        other => format!("[{}]", other.type_name()),
    }
}

/// A Lua value as a message shows it: the value of a scalar, the type of anything else.
fn describe(v: &Value) -> String {
    match v {
        Value::Integer(n) => n.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{:?}", s.to_string_lossy()),
        Value::Boolean(b) => b.to_string(),
        other => format!("a {}", other.type_name()),
    }
}

/// The known name nearest `k`, when it is close (at most 2 edits, or a quarter of it).
fn nearest<'a>(k: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    known
        .map(|c| (edit_distance(k, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4))
        .min()
        .map(|(_, c)| c)
}

/// ` (did you mean "TAG"?)` for a tag `t` that names none of `tags` but is close to one
/// (case aside), else nothing.
fn near_tag(t: &str, tags: &[(usize, String)]) -> String {
    let lower = t.to_ascii_lowercase();
    let known: Vec<String> = tags.iter().map(|(_, u)| u.to_ascii_lowercase()).collect();
    match nearest(&lower, known.iter().map(String::as_str)) {
        Some(c) => {
            let k = known.iter().position(|u| u == c).unwrap_or(0);
            format!(" (did you mean {:?}?)", tags[k].1)
        }
        None => String::new(),
    }
}

/// The message for an unknown key, with the nearest known one when it is close.
fn unknown_key(k: &str, known: &[&str]) -> String {
    let near = nearest(k, known.iter().copied());
    match near {
        Some(c) => format!("unknown setting (did you mean \"{c}\"?)"),
        None => format!("unknown setting (known: {})", known.join(", ")),
    }
}

/// Levenshtein distance of two ASCII-ish strings (by bytes).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, &ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, &cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests;
