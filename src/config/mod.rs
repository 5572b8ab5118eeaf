//! `config.lua` -> typed, validated [`Config`]. The file is evaluated in a Lua state with only
//! the base library, minus everything that loads files or code (the original opened no library
//! at all), then every problem is collected into one [`ConfigError`] whose lines each name the
//! key and the bad value.

pub mod types;
mod uri;

use std::path::{Path, PathBuf};
use std::time::Duration;

use mlua::{Lua, LuaOptions, StdLib, Table, Value};

pub use uri::{InputUri, OutputUri};

/// Default root directory, as the original.
pub const DEFAULT_ROOT: &str = "/usr/local/dragonfly-mle";
/// Default log directory, as the original.
pub const DEFAULT_LOG_DIR: &str = "/var/log/dragonfly-mle";
/// Default maximum accepted line length.
pub const DEFAULT_MAX_LINE: usize = 1 << 20;

/// One entry of `inputs`.
#[derive(Clone, Debug)]
pub struct InputConfig {
    pub tag: String,
    pub uri: InputUri,
    /// Resolved filter script path.
    pub script: PathBuf,
    pub default_analyzer: String,
    /// What happens to an event whose filter `loop()` raised (`on_error`).
    pub on_error: types::OnError,
}

/// One entry of `analyzers`.
#[derive(Clone, Debug)]
pub struct AnalyzerConfig {
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
pub struct OutputConfig {
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
pub struct Config {
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
    /// How long, once the engine is stopping, outputs that cannot deliver are waited for
    /// before what they hold is given up (counted as lost).
    pub shutdown_grace: Duration,
    /// Whether managed Redis keeps its data across restarts (`redis_persist`; default true).
    pub redis_persist: bool,
}

/// The HTTP endpoint's address when config.lua names none (the original's web service).
pub const DEFAULT_HTTP_ADDRESS: &str = "127.0.0.1:7070";

/// Checks an HTTP endpoint address: `off`/empty (None) or `HOST:PORT`.
pub fn parse_http_address(s: &str) -> Result<Option<String>, AddressError> {
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
pub struct AddressError(pub String);

/// Every problem found in a configuration, one per line.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration {}:\n  {}", file.display(), errors.join("\n  "))]
pub struct ConfigError {
    pub file: PathBuf,
    pub errors: Vec<String>,
}

impl Config {
    /// The Redis connection timeouts (`redis_connect_timeout_ms`, `redis_timeout_ms`).
    pub fn redis_timeouts(&self) -> types::RedisTimeouts {
        types::RedisTimeouts {
            connect: self.redis_connect_timeout,
            io: self.redis_timeout,
        }
    }

    /// Loads `config_file` (default `<root>/config/config.lua`) and validates the root layout.
    pub fn load(root: &Path, log_dir: &Path, config_file: Option<&Path>) -> Result<Config, ConfigError> {
        let config_file = config_file
            .map(Path::to_path_buf)
            .unwrap_or_else(|| root.join("config").join("config.lua"));
        let mut errs = Vec::new();
        if !root.is_dir() {
            errs.push(format!("root: {} is not a directory", root.display()));
        } else {
            for d in ["analyzer", "filter"] {
                if !root.join(d).is_dir() {
                    errs.push(format!("root: {}/{d} is not a directory", root.display()));
                }
            }
        }
        let fail = |errors: Vec<String>| ConfigError {
            file: config_file.clone(),
            errors,
        };
        let src = match std::fs::read(&config_file) {
            Ok(s) => s,
            Err(e) => {
                errs.push(format!("config: cannot read {}: {e}", config_file.display()));
                return Err(fail(errs));
            }
        };
        let lua = Lua::new_with(StdLib::NONE, LuaOptions::default())
            .map_err(|e| fail(vec![format!("config: cannot create Lua state: {e}")]))?;
        // The original evaluated config.lua with no library at all; mlua always opens the base
        // library, so take away what could reach files or load code.
        for name in [
            "dofile",
            "loadfile",
            "load",
            "loadstring",
            "require",
            "module",
            "getfenv",
            "setfenv",
        ] {
            let _ = lua.globals().raw_set(name, Value::Nil);
        }
        // What exists before the file runs (the base library's names): everything else the file
        // leaves in its globals is a setting, known or not.
        let before: Vec<String> = lua
            .globals()
            .pairs::<Value, Value>()
            .filter_map(|kv| kv.ok())
            .map(|(k, _)| key_text(&k))
            .collect();
        if let Err(e) = lua
            .load(&src[..])
            .set_name(format!("@{}", config_file.display()))
            .exec()
        {
            errs.push(format!("config: {e}"));
            return Err(fail(errs));
        }
        let g = lua.globals();
        let mut v = Validator { errs: &mut errs };
        for kv in g.pairs::<Value, Value>().filter_map(|kv| kv.ok()) {
            let name = key_text(&kv.0);
            if !before.contains(&name) && !TOP_LEVEL_KEYS.contains(&name.as_str()) {
                v.err(&name, unknown_key(&name, TOP_LEVEL_KEYS));
            }
        }
        let mut cfg = Config {
            root: root.to_path_buf(),
            log_dir: log_dir.to_path_buf(),
            config_file: config_file.clone(),
            redis_host: "127.0.0.1".into(),
            redis_port: 6379,
            redis: types::RedisTarget::Managed,
            modules: Vec::new(),
            inputs: Vec::new(),
            analyzers: Vec::new(),
            outputs: Vec::new(),
            stats_interval: Duration::from_secs(60),
            max_line: DEFAULT_MAX_LINE,
            tail_poll: Duration::from_millis(100),
            redis_connect_timeout: Duration::from_secs(2),
            redis_timeout: Duration::from_secs(5),
            http_timeout: Duration::from_secs(10),
            http_insecure: false,
            dns_timeout: Duration::from_secs(5),
            script_memory: types::DEFAULT_MEMORY_LIMIT,
            number_precision: types::DEFAULT_PRECISION,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            redis_persist: true,
            ml_native: true,
            http_address: Some(DEFAULT_HTTP_ADDRESS.to_string()),
            http_explicit: false,
            latency_histograms: true,
        };
        let host = v.opt_string(&g.get("redis_host").unwrap_or(Value::Nil), "redis_host");
        let named_port = !matches!(g.get::<Value>("redis_port").unwrap_or(Value::Nil), Value::Nil);
        match host {
            Some(h) => cfg.redis_host = h,
            // Naming no Redis at all means the engine's own (managed) one.
            None if !named_port => cfg.redis_host = "managed".into(),
            None => {}
        }
        if let Some(p) = v.opt_string(&g.get("redis_port").unwrap_or(Value::Nil), "redis_port") {
            match p.trim().parse::<i64>() {
                Ok(n) => cfg.redis_port = n,
                Err(_) => v.err("redis_port", format!("not a number: {p:?}")),
            }
        }
        match v
            .opt_string(&g.get("redis_ml").unwrap_or(Value::Nil), "redis_ml")
            .as_deref()
        {
            None | Some("native") => {}
            Some("redis") => cfg.ml_native = false,
            Some(other) => v.err("redis_ml", format!("must be \"native\" or \"redis\", got {other:?}")),
        }
        if let Some(s) = v.opt_number(&g, "stats_interval") {
            if s > 0.0 && s.is_finite() {
                cfg.stats_interval = Duration::from_secs_f64(s);
            } else {
                v.err("stats_interval", format!("must be > 0, got {s}"));
            }
        }
        if let Some(mb) = v.opt_number(&g, "script_memory_mb") {
            if (1.0..=1_048_576.0).contains(&mb) {
                cfg.script_memory = (mb * 1024.0 * 1024.0) as usize;
            } else {
                v.err(
                    "script_memory_mb",
                    format!("must be between 1 and 1048576 (MiB), got {mb}"),
                );
            }
        }
        if let Some(s) = v.opt_number(&g, "shutdown_grace") {
            if (0.0..=86_400.0).contains(&s) {
                cfg.shutdown_grace = Duration::from_secs_f64(s);
            } else {
                v.err(
                    "shutdown_grace",
                    format!("must be between 0 and 86400 (seconds), got {s}"),
                );
            }
        }
        if let Some(p) = v.opt_number(&g, "number_precision") {
            if (1.0..=17.0).contains(&p) && p.fract() == 0.0 {
                cfg.number_precision = p as u8;
            } else {
                v.err("number_precision", format!("must be an integer from 1 to 17, got {p}"));
            }
        }
        if let Some(s) = v.opt_number(&g, "max_line_bytes") {
            if (64.0..=(1u64 << 30) as f64).contains(&s) {
                cfg.max_line = s as usize;
            } else {
                v.err("max_line_bytes", format!("must be between 64 and 2^30, got {s}"));
            }
        }
        for (key, slot) in [
            ("redis_connect_timeout_ms", &mut cfg.redis_connect_timeout),
            ("redis_timeout_ms", &mut cfg.redis_timeout),
        ] {
            if let Some(ms) = v.opt_number(&g, key) {
                if (1.0..=600_000.0).contains(&ms) {
                    *slot = Duration::from_millis(ms as u64);
                } else {
                    v.err(key, format!("must be between 1 and 600000, got {ms}"));
                }
            }
        }
        for (key, slot) in [
            ("http_timeout", &mut cfg.http_timeout),
            ("dns_timeout", &mut cfg.dns_timeout),
        ] {
            if let Some(s) = v.opt_number(&g, key) {
                if s > 0.0 && s <= 3600.0 {
                    *slot = Duration::from_secs_f64(s);
                } else {
                    v.err(key, format!("must be > 0 and at most 3600 (seconds), got {s}"));
                }
            }
        }
        match g.get::<Value>("http_insecure").unwrap_or(Value::Nil) {
            Value::Nil => {}
            Value::Boolean(b) => cfg.http_insecure = b,
            other => v.err(
                "http_insecure",
                format!("expected a boolean, got {}", other.type_name()),
            ),
        }
        if let Some(s) = v.opt_number(&g, "tail_poll_ms") {
            if (1.0..=60_000.0).contains(&s) {
                cfg.tail_poll = Duration::from_millis(s as u64);
            } else {
                v.err("tail_poll_ms", format!("must be between 1 and 60000, got {s}"));
            }
        }
        if let Some(a) = v.opt_string(&g.get("http_address").unwrap_or(Value::Nil), "http_address") {
            cfg.http_explicit = true;
            match parse_http_address(&a) {
                Ok(addr) => cfg.http_address = addr,
                Err(e) => v.err("http_address", e.to_string()),
            }
        }
        match g.get::<Value>("redis_persist").unwrap_or(Value::Nil) {
            Value::Nil => {}
            Value::Boolean(b) => cfg.redis_persist = b,
            other => v.err(
                "redis_persist",
                format!("expected true or false, got {}", describe(&other)),
            ),
        }
        match g.get::<Value>("latency_histograms").unwrap_or(Value::Nil) {
            Value::Nil => {}
            Value::Boolean(b) => cfg.latency_histograms = b,
            other => v.err(
                "latency_histograms",
                format!("expected true or false, got {}", other.type_name()),
            ),
        }

        if !matches!(g.get::<Value>("modules").unwrap_or(Value::Nil), Value::Nil) {
            for (i, t) in v.entries(&g, "modules") {
                let key = |k: &str| format!("modules[{i}].{k}");
                let tag = v.req_string(&t, &key("tag"), "tag");
                let module = v.req_string(&t, &key("module"), "module");
                if let (Some(tag), Some(module)) = (tag, module) {
                    cfg.modules.push((tag, module));
                }
            }
        }
        // Every tag an entry declares, also of entries with other errors: references to them are
        // not reported again, and duplicates are.
        let mut declared: [Vec<(usize, String)>; 3] = Default::default();
        for (i, t) in v.entries(&g, "inputs") {
            let key = |k: &str| format!("inputs[{i}].{k}");
            let tag = v.req_string(&t, &key("tag"), "tag");
            declared[0].extend(tag.clone().map(|t| (i, t)));
            let uri = v.req_string(&t, &key("uri"), "uri");
            let script = v.req_string(&t, &key("script"), "script");
            let da = v.req_string(&t, &key("default_analyzer"), "default_analyzer");
            let uri = uri.and_then(|u| match InputUri::parse(&u, log_dir) {
                Ok(u) => Some(u),
                Err(e) => {
                    v.err(&key("uri"), e.to_string());
                    None
                }
            });
            let script = script.and_then(|s| v.script(root, "filter", &s, &key("script")));
            let on_error = v.on_error(&t, &key("on_error"));
            if let (Some(tag), Some(uri), Some(script), Some(default_analyzer)) = (tag, uri, script, da) {
                cfg.inputs.push(InputConfig {
                    tag,
                    uri,
                    script,
                    default_analyzer,
                    on_error,
                });
            }
        }
        for (i, t) in v.entries(&g, "analyzers") {
            let key = |k: &str| format!("analyzers[{i}].{k}");
            let tag = v.req_string(&t, &key("tag"), "tag");
            declared[1].extend(tag.clone().map(|t| (i, t)));
            let script = v.req_string(&t, &key("script"), "script");
            let da = v.req_string(&t, &key("default_analyzer"), "default_analyzer");
            let dout = v.req_string(&t, &key("default_output"), "default_output");
            let script = script.and_then(|s| v.script(root, "analyzer", &s, &key("script")));
            let pipeline = match t.get::<Value>("pipeline").unwrap_or(Value::Nil) {
                Value::Nil => 1,
                Value::Integer(n) if (1..=4096).contains(&n) => n as usize,
                Value::Number(n) if n.fract() == 0.0 && (1.0..=4096.0).contains(&n) => n as usize,
                other => {
                    v.err(
                        &key("pipeline"),
                        format!("must be an integer from 1 to 4096, got {}", describe(&other)),
                    );
                    1
                }
            };
            let on_error = v.on_error(&t, &key("on_error"));
            if let (Some(tag), Some(script), Some(default_analyzer), Some(default_output)) = (tag, script, da, dout) {
                cfg.analyzers.push(AnalyzerConfig {
                    tag,
                    script,
                    default_analyzer,
                    default_output,
                    pipeline,
                    on_error,
                });
            }
        }
        for (i, t) in v.entries(&g, "outputs") {
            let key = |k: &str| format!("outputs[{i}].{k}");
            let tag = v.req_string(&t, &key("tag"), "tag");
            declared[2].extend(tag.clone().map(|t| (i, t)));
            let uri = v.req_string(&t, &key("uri"), "uri");
            let ordered = match t.get::<Value>("ordered").unwrap_or(Value::Nil) {
                Value::Nil => true,
                Value::Boolean(b) => b,
                other => {
                    v.err(
                        &key("ordered"),
                        format!("expected a boolean, got {}", other.type_name()),
                    );
                    true
                }
            };
            let uri = uri.and_then(|u| match OutputUri::parse(&u, log_dir) {
                Ok(u) => Some(u),
                Err(e) => {
                    v.err(&key("uri"), e.to_string());
                    None
                }
            });
            let mut policy = types::Policy::default();
            match t.get::<Value>("buffer_mb").unwrap_or(Value::Nil) {
                Value::Nil => {}
                Value::Integer(mb) if (1..=1_048_576).contains(&mb) => policy.limit = (mb as usize) << 20,
                Value::Number(mb) if (1.0..=1_048_576.0).contains(&mb) => {
                    policy.limit = (mb * 1024.0 * 1024.0) as usize;
                }
                other => v.err(
                    &key("buffer_mb"),
                    format!("must be a number from 1 to 1048576 (MiB), got {}", describe(&other)),
                ),
            }
            match t.get::<Value>("drop_when_full").unwrap_or(Value::Nil) {
                Value::Nil => {}
                Value::Boolean(b) => policy.drop_when_full = b,
                other => v.err(
                    &key("drop_when_full"),
                    format!("expected a boolean, got {}", other.type_name()),
                ),
            }
            if let (Some(tag), Some(uri)) = (tag, uri) {
                cfg.outputs.push(OutputConfig {
                    tag,
                    uri,
                    ordered,
                    policy,
                });
            }
        }
        cfg.redis = types::RedisTarget::from_config(&cfg.redis_host, cfg.redis_port);
        cfg.check_tags(&declared, &mut errs);
        if errs.is_empty() { Ok(cfg) } else { Err(fail(errs)) }
    }

    /// Tags are unique among the inputs, the analyzers and the outputs (compared as the
    /// engine looks them up: ignoring ASCII case), and default analyzers and outputs name one
    /// that is declared (an entry with other errors still declares its tag).
    fn check_tags(&self, declared: &[Vec<(usize, String)>; 3], errs: &mut Vec<String>) {
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
        for (i, inp) in self.inputs.iter().enumerate() {
            if !inp.default_analyzer.is_empty() && !has_analyzer(&inp.default_analyzer) {
                errs.push(format!(
                    "inputs[{}].default_analyzer: no analyzer has tag {:?}",
                    i + 1,
                    inp.default_analyzer
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
                    "{key}.on_error: no output has tag {tag:?} (on_error is \"drop\", \"pass\" or an output tag)"
                ));
            }
        }
        for (i, a) in self.analyzers.iter().enumerate() {
            if !a.default_analyzer.is_empty() && !has_analyzer(&a.default_analyzer) {
                errs.push(format!(
                    "analyzers[{}].default_analyzer: no analyzer has tag {:?}",
                    i + 1,
                    a.default_analyzer
                ));
            }
            if !a.default_output.is_empty() && !has_output(&a.default_output) {
                errs.push(format!(
                    "analyzers[{}].default_output: no output has tag {:?}",
                    i + 1,
                    a.default_output
                ));
            }
        }
    }
}

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
                for i in 1.. {
                    match t.get::<Value>(i).unwrap_or(Value::Nil) {
                        Value::Nil => break,
                        Value::Table(e) => out.push((i as usize, e)),
                        other => self.err(
                            &format!("{name}[{i}]"),
                            format!("expected a table, got {}", other.type_name()),
                        ),
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
        if full.is_file() {
            Some(full)
        } else {
            let shown = if p.is_absolute() {
                s.to_string()
            } else {
                format!("{dir}/{s}")
            };
            self.err(key, format!("{shown} not found"));
            None
        }
    }
}

/// The default of `shutdown_grace`.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

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
    "redis_persist",
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

/// The message for an unknown key, with the nearest known one when it is close.
fn unknown_key(k: &str, known: &[&str]) -> String {
    let near = known
        .iter()
        .map(|c| (edit_distance(k, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4))
        .min();
    match near {
        Some((_, c)) => format!("unknown setting (did you mean \"{c}\"?)"),
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
