//! Loading config.lua: the file is evaluated in a restricted Lua state, then read key by key
//! (settings, modules, inputs, analyzers, outputs), every problem collected with its key.

use super::*;

impl Config {
    /// Loads `config_file` (default `<root>/config/config.lua`) and validates the root layout.
    pub(crate) fn load(root: &Path, log_dir: &Path, config_file: Option<&Path>) -> Result<Config, ConfigError> {
        let config_file = config_file
            .map(Path::to_path_buf)
            .unwrap_or_else(|| root.join("config").join("config.lua"));
        let mut errs = root_layout(root);
        let fail = |errors: Vec<String>| ConfigError {
            file: config_file.clone(),
            errors,
        };
        let (lua, before) = match evaluate(&config_file) {
            Ok(l) => l,
            Err(e) => {
                errs.push(e);
                return Err(fail(errs));
            }
        };
        let g = lua.globals();
        let mut v = Validator { errs: &mut errs };
        for kv in g.pairs::<Value, Value>().filter_map(|kv| kv.ok()) {
            let name = key_text(&kv.0);
            if !before.contains(&name) && !TOP_LEVEL_KEYS.contains(&name.as_str()) {
                v.err(&name, unknown_key(&name, TOP_LEVEL_KEYS));
            }
        }
        let mut cfg = Config::defaults(root, log_dir, &config_file);
        cfg.read_redis(&g, &mut v);
        cfg.read_settings(&g, &mut v);
        cfg.read_modules(&g, &mut v);
        // Every tag an entry declares, also of entries with other errors: references to them
        // are not reported again, and duplicates are.
        let declared = [
            cfg.read_inputs(&g, &mut v),
            cfg.read_analyzers(&g, &mut v),
            cfg.read_outputs(&g, &mut v),
        ];
        cfg.redis = match read_cluster(&g, &mut v) {
            Some(seeds) => types::RedisTarget::Cluster(seeds),
            None => types::RedisTarget::from_config(&cfg.redis_host, cfg.redis_port),
        };
        let mut warnings = Vec::new();
        cfg.check_tags(&declared, &mut errs, &mut warnings);
        cfg.check_outputs_are_not_inputs(&mut errs);
        cfg.check_outputs_do_not_share_files(&mut errs);
        cfg.warnings = warnings;
        if errs.is_empty() { Ok(cfg) } else { Err(fail(errs)) }
    }

    /// A file output that writes the file an input reads: a truncating one would empty the
    /// Suricata log at the start, an appending one feed its own records back without end.
    fn check_outputs_are_not_inputs(&self, errs: &mut Vec<String>) {
        use std::os::unix::fs::MetadataExt;
        let id = |p: &Path| {
            std::fs::metadata(crate::privilege::host_path(p))
                .ok()
                .map(|m| (m.dev(), m.ino()))
        };
        for (o, out) in self.outputs.iter().enumerate() {
            let path = match &out.uri {
                OutputUri::File { path, .. } | OutputUri::Zfile { path, .. } => path,
                _ => continue,
            };
            let out_id = id(path);
            for (i, input) in self.inputs.iter().enumerate() {
                let read = match &input.uri {
                    InputUri::File { path, .. } | InputUri::Zfile { path, .. } | InputUri::Tail { path, .. } => path,
                    _ => continue,
                };
                let same = read == path
                    || file_key(read) == file_key(path)
                    || (out_id.is_some() && id(read) == out_id)
                    || input
                        .glob
                        .as_deref()
                        .is_some_and(|g| g.parent() == path.parent() && super::glob::name_matches(g, path));
                if same {
                    errs.push(format!(
                        "outputs[{}].uri: {} is the file inputs[{}] ({}) reads: the output would {}",
                        o + 1,
                        path.display(),
                        i + 1,
                        input.tag,
                        if matches!(
                            out.uri,
                            OutputUri::File { truncate: true, .. } | OutputUri::Zfile { truncate: true, .. }
                        ) {
                            "empty it at the start"
                        } else {
                            "feed its own records back to it without end"
                        }
                    ));
                    break;
                }
            }
        }
    }

    /// Two file outputs writing one file: each writes at its own offset, over the other's
    /// lines (an audit's run wrote 1,016 records, the file held 916 and a torn line, and the
    /// run said nothing). Likewise an output writing the engine's own log or stats file.
    fn check_outputs_do_not_share_files(&self, errs: &mut Vec<String>) {
        use std::os::unix::fs::MetadataExt;
        let id = |p: &Path| {
            std::fs::metadata(crate::privilege::host_path(p))
                .ok()
                .map(|m| (m.dev(), m.ino()))
        };
        let same = |a: &Path, b: &Path| a == b || file_key(a) == file_key(b) || id(a).is_some_and(|x| id(b) == Some(x));
        let files: Vec<(usize, &PathBuf)> = self
            .outputs
            .iter()
            .enumerate()
            .filter_map(|(o, out)| match &out.uri {
                OutputUri::File { path, .. } | OutputUri::Zfile { path, .. } => Some((o, path)),
                _ => None,
            })
            .collect();
        for (k, &(o, path)) in files.iter().enumerate() {
            if let Some(&(first, _)) = files[..k].iter().find(|(_, p)| same(p, path)) {
                errs.push(format!(
                    "outputs[{}].uri: {} is also the file of outputs[{}] ({}): two outputs writing one file tear each other's lines",
                    o + 1,
                    path.display(),
                    first + 1,
                    self.outputs[first].tag
                ));
                continue;
            }
            for (name, what) in [("dragonfly-mle.log", "{log}"), ("dragonfly-mle-stats.log", "{stats}")] {
                if same(&self.log_dir.join(name), path) {
                    errs.push(format!(
                        "outputs[{}].uri: {} is the engine's own {what} file",
                        o + 1,
                        path.display()
                    ));
                }
            }
            // A Parquet output's index, which readers of its files go by.
            for (q, out) in self.outputs.iter().enumerate() {
                if let OutputUri::Parquet { dir, prefix, .. } = &out.uri
                    && same(&dir.join(format!("{prefix}.index.jsonl")), path)
                {
                    errs.push(format!(
                        "outputs[{}].uri: {} is the index of outputs[{}] ({})",
                        o + 1,
                        path.display(),
                        q + 1,
                        out.tag
                    ));
                }
            }
        }
    }

    /// Every setting at its default.
    fn defaults(root: &Path, log_dir: &Path, config_file: &Path) -> Config {
        Config {
            root: root.to_path_buf(),
            log_dir: log_dir.to_path_buf(),
            config_file: config_file.to_path_buf(),
            redis_host: "127.0.0.1".into(),
            redis_port: 6379,
            redis: types::RedisTarget::Managed,
            modules: Vec::new(),
            warnings: Vec::new(),
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
            gc_pause: types::DEFAULT_GC_PAUSE,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            redis_persist: true,
            shards: None,
            ml_native: true,
            http_address: Some(DEFAULT_HTTP_ADDRESS.to_string()),
            http_explicit: false,
            latency_histograms: true,
        }
    }

    /// `redis_host`, `redis_port`, `redis_persist` and `redis_ml`.
    fn read_redis(&mut self, g: &Table, v: &mut Validator<'_>) {
        let cfg = self;
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
                // A unix socket (`redis_host` a path) has no port.
                Ok(n) if (1..=65535).contains(&n) || cfg.redis_host.starts_with('/') => cfg.redis_port = n,
                Ok(n) => v.err("redis_port", format!("must be between 1 and 65535, got {n}")),
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
        match g.get::<Value>("redis_persist").unwrap_or(Value::Nil) {
            Value::Nil => {}
            Value::Boolean(b) => cfg.redis_persist = b,
            other => v.err(
                "redis_persist",
                format!("expected true or false, got {}", describe(&other)),
            ),
        }
    }

    /// The engine's settings (intervals, limits, timeouts, the HTTP endpoint).
    fn read_settings(&mut self, g: &Table, v: &mut Validator<'_>) {
        let cfg = self;
        if let Some(s) = v.opt_number(g, "stats_interval") {
            if s > 0.0 && s.is_finite() {
                cfg.stats_interval = Duration::from_secs_f64(s);
            } else {
                v.err("stats_interval", format!("must be > 0, got {s}"));
            }
        }
        if let Some(mb) = v.opt_number(g, "script_memory_mb") {
            if (1.0..=1_048_576.0).contains(&mb) {
                cfg.script_memory = (mb * 1024.0 * 1024.0) as usize;
            } else {
                v.err(
                    "script_memory_mb",
                    format!("must be between 1 and 1048576 (MiB), got {mb}"),
                );
            }
        }
        if let Some(s) = v.opt_number(g, "shutdown_grace") {
            if (0.0..=86_400.0).contains(&s) {
                cfg.shutdown_grace = Duration::from_secs_f64(s);
            } else {
                v.err(
                    "shutdown_grace",
                    format!("must be between 0 and 86400 (seconds), got {s}"),
                );
            }
        }
        if let Some(n) = v.opt_number(g, "shards") {
            if (1.0..=1024.0).contains(&n) && n.fract() == 0.0 {
                cfg.shards = Some(n as usize);
            } else {
                v.err("shards", format!("must be an integer from 1 to 1024, got {n}"));
            }
        }
        if let Some(p) = v.opt_number(g, "gc_pause") {
            if (100.0..=1000.0).contains(&p) && p.fract() == 0.0 {
                cfg.gc_pause = p as u16;
            } else {
                v.err(
                    "gc_pause",
                    format!("must be an integer from 100 to 1000 (percent), got {p}"),
                );
            }
        }
        if let Some(p) = v.opt_number(g, "number_precision") {
            if (1.0..=17.0).contains(&p) && p.fract() == 0.0 {
                cfg.number_precision = p as u8;
            } else {
                v.err("number_precision", format!("must be an integer from 1 to 17, got {p}"));
            }
        }
        if let Some(s) = v.opt_number(g, "max_line_bytes") {
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
            if let Some(ms) = v.opt_number(g, key) {
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
            if let Some(s) = v.opt_number(g, key) {
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
        if let Some(s) = v.opt_number(g, "tail_poll_ms") {
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
        match g.get::<Value>("latency_histograms").unwrap_or(Value::Nil) {
            Value::Nil => {}
            Value::Boolean(b) => cfg.latency_histograms = b,
            other => v.err(
                "latency_histograms",
                format!("expected true or false, got {}", other.type_name()),
            ),
        }
    }

    /// `modules`: Redis modules to load.
    fn read_modules(&mut self, g: &Table, v: &mut Validator<'_>) {
        let cfg = self;
        if !matches!(g.get::<Value>("modules").unwrap_or(Value::Nil), Value::Nil) {
            for (i, t) in v.entries(g, "modules") {
                let key = |k: &str| format!("modules[{i}].{k}");
                let tag = v.req_string(&t, &key("tag"), "tag");
                let module = v.req_string(&t, &key("module"), "module");
                if let (Some(tag), Some(module)) = (tag, module) {
                    cfg.modules.push((tag, module));
                }
            }
        }
    }

    /// `inputs`; returns the tags they declare.
    fn read_inputs(&mut self, g: &Table, v: &mut Validator<'_>) -> Vec<(usize, String)> {
        let (root, log_dir) = (self.root.clone(), self.log_dir.clone());
        let cfg = self;
        let mut declared = Vec::new();
        for (i, t) in v.entries(g, "inputs") {
            let key = |k: &str| format!("inputs[{i}].{k}");
            let tag = v.req_tag(&t, &key("tag"));
            declared.extend(tag.clone().map(|t| (i, t)));
            let uri = v.req_string(&t, &key("uri"), "uri");
            let script = v.req_string(&t, &key("script"), "script");
            let da = v.req_string(&t, &key("default_analyzer"), "default_analyzer");
            let uri = uri.and_then(|u| match InputUri::parse(&u, &log_dir) {
                Ok(u) => Some(u),
                Err(e) => {
                    v.err(&key("uri"), e.to_string());
                    None
                }
            });
            let script = script.and_then(|s| v.script(&root, "filter", &s, &key("script")));
            let on_error = v.on_error(&t, &key("on_error"));
            if let (Some(tag), Some(uri), Some(script), Some(default_analyzer)) = (tag, uri, script, da) {
                let input = InputConfig {
                    tag,
                    uri,
                    script,
                    default_analyzer,
                    on_error,
                    glob: None,
                };
                match expand_glob(input) {
                    Ok(inputs) => cfg.inputs.extend(inputs),
                    Err(e) => v.err(&key("uri"), e),
                }
            }
        }
        declared
    }

    /// `analyzers`; returns the tags they declare.
    fn read_analyzers(&mut self, g: &Table, v: &mut Validator<'_>) -> Vec<(usize, String)> {
        let root = self.root.clone();
        let cfg = self;
        let mut declared = Vec::new();
        for (i, t) in v.entries(g, "analyzers") {
            let key = |k: &str| format!("analyzers[{i}].{k}");
            let tag = v.req_tag(&t, &key("tag"));
            declared.extend(tag.clone().map(|t| (i, t)));
            let script = v.req_string(&t, &key("script"), "script");
            let da = v.req_string(&t, &key("default_analyzer"), "default_analyzer");
            let dout = v.req_string(&t, &key("default_output"), "default_output");
            let script = script.and_then(|s| v.script(&root, "analyzer", &s, &key("script")));
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
        declared
    }

    /// `outputs`; returns the tags they declare.
    fn read_outputs(&mut self, g: &Table, v: &mut Validator<'_>) -> Vec<(usize, String)> {
        let log_dir = self.log_dir.clone();
        let cfg = self;
        let mut declared = Vec::new();
        for (i, t) in v.entries(g, "outputs") {
            let key = |k: &str| format!("outputs[{i}].{k}");
            let tag = v.req_tag(&t, &key("tag"));
            declared.extend(tag.clone().map(|t| (i, t)));
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
            let uri = uri.and_then(|u| match OutputUri::parse(&u, &log_dir) {
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
        declared
    }
}

/// An input whose file name has wildcards becomes one input per matching file, tagged
/// `TAG:FILE` (each with its own reader and checkpoint). A `tail://` pattern that matches
/// nothing yet stays one input waiting for its files; the engine rebuilds the pipeline when
/// the matches change (see `reconfig::Control`).
fn expand_glob(input: InputConfig) -> Result<Vec<InputConfig>, String> {
    let pattern = match &input.uri {
        InputUri::File { path, .. } | InputUri::Zfile { path, .. } | InputUri::Tail { path, .. } => path.clone(),
        _ => return Ok(vec![input]),
    };
    glob::check_pattern(&pattern)?;
    if !glob::has_wildcards(&pattern) {
        return Ok(vec![input]);
    }
    let files = glob::expand(&pattern);
    if files.is_empty() {
        return match input.uri {
            InputUri::Tail { .. } => Ok(vec![InputConfig {
                glob: Some(pattern),
                ..input
            }]),
            _ => Err(format!("no file matches {}", pattern.display())),
        };
    }
    Ok(files
        .into_iter()
        .map(|f| {
            let mut one = input.clone();
            match &mut one.uri {
                InputUri::File { path, .. } | InputUri::Zfile { path, .. } | InputUri::Tail { path, .. } => {
                    *path = f.clone()
                }
                _ => {}
            }
            one.tag = format!("{}:{}", input.tag, f.file_name().unwrap_or_default().to_string_lossy());
            one.glob = Some(pattern.clone());
            one
        })
        .collect())
}

/// `redis_cluster = { "host:port", ... }`: the seed nodes of a Redis Cluster (the `hiredis`
/// module then routes each command to its slot's master).
fn read_cluster(g: &Table, v: &mut Validator<'_>) -> Option<Vec<(String, u16)>> {
    let t = match g.get::<Value>("redis_cluster").unwrap_or(Value::Nil) {
        Value::Nil => return None,
        Value::Table(t) => t,
        other => {
            v.err(
                "redis_cluster",
                format!("expected a list of \"host:port\", got {}", other.type_name()),
            );
            return None;
        }
    };
    let mut seeds = Vec::new();
    for (i, s) in t.sequence_values::<Value>().enumerate() {
        let key = format!("redis_cluster[{}]", i + 1);
        let parsed = match &s {
            Ok(Value::String(s)) => {
                let s = s.to_string_lossy();
                s.rsplit_once(':')
                    .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
                    .filter(|(h, _)| !h.is_empty())
            }
            _ => None,
        };
        match parsed {
            Some(a) => seeds.push(a),
            None => v.err(&key, "expected \"host:port\"".to_string()),
        }
    }
    if seeds.is_empty() {
        v.err("redis_cluster", "name at least one node (\"host:port\")".to_string());
        return None;
    }
    Some(seeds)
}

/// The root directory and its `analyzer/` and `filter/` folders.
fn root_layout(root: &Path) -> Vec<String> {
    let mut errs = Vec::new();
    // After a chroot (`-c`), paths stay as configured and are looked up where they now are.
    let host = |p: &Path| crate::privilege::host_path(p).is_dir();
    if !host(root) {
        errs.push(format!("root: {} is not a directory", root.display()));
    } else {
        for d in ["analyzer", "filter"] {
            if !host(&root.join(d)) {
                errs.push(format!("root: {}/{d} is not a directory", root.display()));
            }
        }
    }
    errs
}

/// The flag a stop signal sets, once the engine installed its handlers: it ends an evaluation
/// of config.lua that does not end by itself.
static INTERRUPT: std::sync::OnceLock<std::sync::Arc<std::sync::atomic::AtomicBool>> = std::sync::OnceLock::new();

/// How long an evaluation of config.lua may run in the engine (its start, a reload).
const EVALUATION_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Makes `flag` (set by SIGINT/SIGTERM) end any evaluation of config.lua from now on.
pub(crate) fn interrupt_with(flag: std::sync::Arc<std::sync::atomic::AtomicBool>) {
    let _ = INTERRUPT.set(flag);
}

/// Runs config.lua in a state with the base library minus everything that reaches files or
/// loads code (the original evaluated it with no library at all); the state, and the global
/// names that existed before the file ran (everything else it leaves is a setting).
fn evaluate(config_file: &Path) -> Result<(Lua, Vec<String>), String> {
    let src = std::fs::read(crate::privilege::host_path(config_file))
        .map_err(|e| format!("config: cannot read {}: {e}", config_file.display()))?;
    let lua = Lua::new_with(StdLib::NONE, LuaOptions::default())
        .map_err(|e| format!("config: cannot create Lua state: {e}"))?;
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
    // A stop (SIGINT/SIGTERM) ends an evaluation that does not (a loop without end): count
    // hooks run while one is set (LuaJIT compiles no trace then).
    // One that runs past [`EVALUATION_LIMIT`] is given up (a reload's held every later reload).
    if let Some(flag) = INTERRUPT.get() {
        let flag = std::sync::Arc::clone(flag);
        let started = std::time::Instant::now();
        lua.set_hook(mlua::HookTriggers::new().every_nth_instruction(10_000), move |_, _| {
            if flag.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(mlua::Error::runtime(
                    "stopped (SIGINT/SIGTERM) while config.lua was being evaluated: does it loop without end?",
                ));
            }
            if started.elapsed() > EVALUATION_LIMIT {
                return Err(mlua::Error::runtime(format!(
                    "config.lua did not finish in {} s: does it loop without end?",
                    EVALUATION_LIMIT.as_secs()
                )));
            }
            Ok(mlua::VmState::Continue)
        })
        .map_err(|e| format!("config: cannot watch the evaluation: {e}"))?;
    }
    let before: Vec<String> = lua
        .globals()
        .pairs::<Value, Value>()
        .filter_map(|kv| kv.ok())
        .map(|(k, _)| key_text(&k))
        .collect();
    lua.load(&src[..])
        .set_name(format!("@{}", config_file.display()))
        .exec()
        .map_err(|e| format!("config: {e}"))?;
    Ok((lua, before))
}

/// Where the file `p` names is, to tell two spellings of one file: a symbolic link followed
/// (also one to a file not made yet: the engine would make it), then its directory resolved
/// (links, `..`) where that exists, else `.` and `..` taken as written.
fn file_key(p: &Path) -> PathBuf {
    let mut host = crate::privilege::host_path(p).into_owned();
    for _ in 0..16 {
        let Ok(target) = std::fs::read_link(&host) else { break };
        host = match host.parent() {
            Some(dir) if target.is_relative() => dir.join(target),
            _ => target,
        };
    }
    if let (Some(dir), Some(name)) = (host.parent(), host.file_name())
        && let Ok(d) = std::fs::canonicalize(dir)
    {
        return d.join(name);
    }
    let mut out = PathBuf::new();
    for c in host.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}
