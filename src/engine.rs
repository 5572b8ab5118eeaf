//! Wiring: loads the configuration, builds the rings, starts the writer, the workers (and
//! waits for their scripts' setup) and the readers, handles signals, and reports the summary.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::{Context, bail};
use rtrb::RingBuffer;

use crate::config::types::RedisTarget;
use crate::config::{Config, InputUri, OutputUri};
use crate::lua::worker::{WorkerIo, WorkerSpec};
use crate::lua::{Role, ScriptSpec, WorkerCtx};
use crate::metrics::Stats;
use crate::shard::{InBatch, OUT_RING_BATCHES, OutBatch, RING_BATCHES, pin};
use crate::sink::{FileSink, IpcSink, KafkaSink, Sink, WorkerLink, Writer, ZfileSink};
use crate::source::{ReaderIo, Router};

/// Command-line choices that shape the engine.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub root: PathBuf,
    pub log_dir: PathBuf,
    pub config_file: Option<PathBuf>,
    pub shards: Option<usize>,
    pub cores: Option<Vec<usize>>,
    pub no_pin: bool,
    pub follow: bool,
    pub verbose: bool,
    /// Run directory (managed Redis socket); default `/var/run/dragonfly-mle`, else
    /// `<log dir>/run` when that cannot be created.
    pub run_dir: Option<PathBuf>,
    /// HTTP endpoint address from the command line (`--http`), overriding config.lua;
    /// `off` turns it off.
    pub http: Option<String>,
    /// Drop to this user once inputs, outputs and sockets are open (`-p`: nobody).
    pub user: Option<String>,
    /// Chroot to the root directory before dropping privileges (`-c`).
    pub chroot: bool,
    /// Reload when config.lua or a script changes (as SIGHUP does).
    pub watch: bool,
}

/// What a finished run did.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub read: u64,
    pub written: u64,
    pub invalid: u64,
    pub script_errors: u64,
    pub seconds: f64,
    /// Records the user outputs failed to take.
    pub output_errors: u64,
    /// Values scripts sent to an unknown analyzer or output, and records full outputs dropped
    /// (`drop_when_full`).
    pub dropped: u64,
    /// Inputs missing or unreadable at the end.
    pub missing_inputs: Vec<String>,
}

/// Exit status of a run that lost events (output errors, dropped values, missing inputs).
pub const EXIT_LOSSES: u8 = 3;

impl Summary {
    /// What the run lost, as one line (`None` when nothing was lost).
    pub fn losses(&self) -> Option<String> {
        if self.output_errors == 0 && self.dropped == 0 && self.missing_inputs.is_empty() {
            return None;
        }
        let mut parts = vec![
            format!("{} output errors", self.output_errors),
            format!("{} dropped", self.dropped),
        ];
        if !self.missing_inputs.is_empty() {
            parts.push(format!(
                "inputs missing or unreadable: {}",
                self.missing_inputs.join(", ")
            ));
        }
        Some(format!(
            "dragonfly-mle: events were lost: {} (see dragonfly-mle.log; exit status {EXIT_LOSSES})",
            parts.join(", ")
        ))
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rate = if self.seconds > 0.0 {
            self.read as f64 / self.seconds
        } else {
            0.0
        };
        write!(
            f,
            "dragonfly-mle: {} events read, {} written, {} invalid, {} script errors, {} output errors, {} dropped in {:.3} s ({:.0} events/s)",
            self.read,
            self.written,
            self.invalid,
            self.script_errors,
            self.output_errors,
            self.dropped,
            self.seconds,
            rate
        )
    }
}

fn script_specs(cfg: &Config) -> (Vec<ScriptSpec>, Vec<ScriptSpec>) {
    let filters = cfg
        .inputs
        .iter()
        .map(|i| ScriptSpec {
            role: Role::Filter,
            tag: i.tag.clone(),
            path: i.script.clone(),
            default_analyzer: i.default_analyzer.clone(),
            default_output: String::new(),
            pipeline: 1,
            on_error: i.on_error.clone(),
        })
        .collect();
    let analyzers = cfg
        .analyzers
        .iter()
        .map(|a| ScriptSpec {
            role: Role::Analyzer,
            tag: a.tag.clone(),
            path: a.script.clone(),
            default_analyzer: a.default_analyzer.clone(),
            default_output: a.default_output.clone(),
            pipeline: a.pipeline,
            on_error: a.on_error.clone(),
        })
        .collect();
    (filters, analyzers)
}

fn load(opts: &Options) -> anyhow::Result<Config> {
    std::fs::create_dir_all(&opts.log_dir)
        .with_context(|| format!("cannot create the log directory {}", opts.log_dir.display()))?;
    let root = std::fs::canonicalize(&opts.root).unwrap_or_else(|_| opts.root.clone());
    let log_dir = std::fs::canonicalize(&opts.log_dir).unwrap_or_else(|_| opts.log_dir.clone());
    let config_file = opts
        .config_file
        .as_ref()
        .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()));
    Ok(Config::load(&root, &log_dir, config_file.as_deref())?)
}

/// `check`: loads the configuration and every script (chunk run; `setup()` too when `setup`),
/// and checks what the configuration names outside itself: `file://` inputs exist and can be
/// read, file and Parquet outputs can be written where they go, a named Redis answers.
/// Every problem is reported at once.
pub fn check(opts: &Options, setup: bool) -> anyhow::Result<String> {
    let cfg = load(opts)?;
    let mut problems = check_surroundings(&cfg);
    crate::ml::set_native(cfg.ml_native);
    crate::lua::builtins::configure(cfg.http_timeout, cfg.http_insecure, cfg.dns_timeout);
    if cfg.redis == RedisTarget::Managed {
        crate::lua::managed::configure(&run_dir(opts, &cfg), cfg.redis_persist);
    }
    std::env::set_current_dir(&cfg.root).with_context(|| format!("cannot enter {}", cfg.root.display()))?;
    let r = load_scripts(&cfg, setup);
    crate::lua::managed::stop();
    if let Err(e) = r {
        problems.push(e);
    }
    if !problems.is_empty() {
        anyhow::bail!("{}:\n  {}", cfg.config_file.display(), problems.join("\n  "));
    }
    Ok(format!(
        "{}: OK ({} inputs, {} analyzers, {} outputs{})",
        cfg.config_file.display(),
        cfg.inputs.len(),
        cfg.analyzers.len(),
        cfg.outputs.len(),
        if setup { "; every setup() ran" } else { "" }
    ))
}

/// Loads every script of `cfg` in a scratch worker (and runs their `setup()` with `setup`).
fn load_scripts(cfg: &Config, setup: bool) -> Result<(), String> {
    let (filters, analyzers) = script_specs(cfg);
    let mut c = WorkerCtx::new(
        cfg.inputs.iter().map(|i| i.tag.clone()).collect(),
        cfg.analyzers.iter().map(|a| a.tag.clone()).collect(),
        cfg.outputs.iter().map(|o| o.tag.clone()).collect(),
        false,
    );
    c.redis.target = cfg.redis.clone();
    c.set_state_settings(state_settings(cfg));
    let r = c.open_all(&filters, &analyzers, setup);
    if setup && r.is_ok() {
        c.run_setup_calls();
    }
    c.close();
    r
}

/// What every script state is opened with, from config.lua.
fn state_settings(cfg: &Config) -> crate::lua::state::StateSettings {
    crate::lua::state::StateSettings {
        memory_limit: cfg.script_memory,
        precision: cfg.number_precision,
    }
}

/// What `check` verifies beyond config.lua itself, as "key: problem" lines.
fn check_surroundings(cfg: &Config) -> Vec<String> {
    use crate::config::{InputUri, OutputUri};
    let mut out = Vec::new();
    for (i, inp) in cfg.inputs.iter().enumerate() {
        if let InputUri::File { path } | InputUri::Zfile { path } = &inp.uri
            && let Err(e) = std::fs::File::open(path)
        {
            out.push(format!("inputs[{}].uri: cannot read {}: {e}", i + 1, path.display()));
        }
    }
    for (i, o) in cfg.outputs.iter().enumerate() {
        let dir = match &o.uri {
            OutputUri::File { path, .. } | OutputUri::Zfile { path, .. } => {
                path.parent().map(std::path::Path::to_path_buf).unwrap_or_default()
            }
            OutputUri::Parquet { dir, .. } => dir.clone(),
            _ => continue,
        };
        if let Err(e) = writable_dir(&dir) {
            out.push(format!(
                "outputs[{}].uri: cannot write in {}: {e}",
                i + 1,
                dir.display()
            ));
        }
    }
    if cfg.redis != RedisTarget::Managed {
        let answer = crate::lua::hiredis::open(&cfg.redis, cfg.redis_timeouts())
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c).map_err(|e| e.to_string()));
        if let Err(e) = answer {
            out.push(format!(
                "redis_host/redis_port: no answer from {}:{}: {e}",
                cfg.redis_host, cfg.redis_port
            ));
        }
    }
    out
}

/// Whether files can be created in `dir` (the log directory is created at startup, so a
/// directory that does not exist yet counts when its nearest existing parent is writable).
fn writable_dir(dir: &std::path::Path) -> Result<(), String> {
    let mut d = dir;
    while !d.exists() {
        d = d.parent().ok_or("no existing parent directory")?;
    }
    if !d.is_dir() {
        return Err(format!("{} is not a directory", d.display()));
    }
    let c = std::ffi::CString::new(d.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: `c` is a NUL-terminated path; access(2) only reads it.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().to_string())
    }
}

/// The run directory: the option, else the original's, else one under the log directory.
fn run_dir(opts: &Options, cfg: &Config) -> PathBuf {
    if let Some(d) = &opts.run_dir {
        return d.clone();
    }
    let std_dir = PathBuf::from("/var/run/dragonfly-mle");
    if std::fs::create_dir_all(&std_dir).is_ok() {
        std_dir
    } else {
        cfg.log_dir.join("run")
    }
}

/// Once every input has opened its file, socket or consumer (or 30 s have passed), chroots
/// (`-c`) and drops to the user (`-p`, `--user`).
fn drop_privileges(
    opts: &Options,
    cfg: &Config,
    state_dir: &std::path::Path,
    inputs: usize,
    workers: usize,
    opened: &std::sync::atomic::AtomicUsize,
    diag: &crate::source::Diag,
) -> anyhow::Result<()> {
    if opts.user.is_none() && !opts.chroot {
        return Ok(());
    }
    let t = Instant::now();
    while opened.load(std::sync::atomic::Ordering::Acquire) < inputs && t.elapsed() < std::time::Duration::from_secs(30)
    {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let user = opts
        .user
        .as_deref()
        .map(crate::privilege::lookup)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--user: {e}"))?;
    let root = opts.chroot.then_some(cfg.root.as_path());
    if let Some(u) = user
        && std::fs::create_dir_all(state_dir).is_ok()
    {
        crate::privilege::hand_over(state_dir, u).map_err(|e| anyhow::anyhow!("run directory: {e}"))?;
    }
    // With the workers between batches: none is in the middle of a Redis call that the
    // credential change's signals would interrupt.
    crate::lua::worker::GATE
        .with_workers_parked(workers, std::time::Duration::from_secs(5), || {
            crate::privilege::drop_privileges(user, root)
        })
        .map_err(|e| anyhow::anyhow!("dropping privileges: {e}"))?;
    let mut what = Vec::new();
    if let Some(r) = root {
        what.push(format!("chrooted to {}", r.display()));
    }
    if let (Some(name), Some(u)) = (&opts.user, user) {
        what.push(format!("running as {name} (uid {}, gid {})", u.uid, u.gid));
    }
    let _ = diag.send(crate::diag::line(crate::diag::Kind::Privileges, &[], &what.join(", ")));
    Ok(())
}

/// The control thread: on SIGHUP, reads every script once and publishes the texts for the
/// workers to reload (see `shard::worker::Reload`). Ends when the readers are done.
fn reload_request(
    why: &str,
    opts: &Options,
    running: &Config,
    paths: &[PathBuf],
    reload: &crate::lua::worker::Reload,
    next: &std::sync::Mutex<Option<Config>>,
    diag: &crate::source::Diag,
) -> bool {
    use crate::reconfig::Decision;
    let check = |c: &Config| -> Result<(), String> {
        let mut problems = check_surroundings(c);
        if let Err(e) = load_scripts(c, false) {
            problems.push(e);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    };
    match crate::reconfig::decide(running, || load(opts), check) {
        Decision::Scripts => {
            let sources: Vec<Result<Vec<u8>, String>> = paths
                .iter()
                .map(|p| std::fs::read(crate::privilege::host_path(p)).map_err(|e| format!("{}: {e}", p.display())))
                .collect();
            let g = reload.publish(sources);
            let _ = diag.send(crate::diag::line(
                crate::diag::Kind::Reload,
                &[],
                &format!("{why}: reload {g} of {} scripts requested", paths.len()),
            ));
            false
        }
        Decision::Rebuild(cfg) => {
            let _ = diag.send(crate::diag::line(
                crate::diag::Kind::Reload,
                &[],
                &format!(
                    "{why}: the configuration changed ({} inputs, {} analyzers, {} outputs); draining the pipeline and building it again",
                    cfg.inputs.len(),
                    cfg.analyzers.len(),
                    cfg.outputs.len()
                ),
            ));
            *next.lock().unwrap_or_else(|e| e.into_inner()) = Some(*cfg);
            true
        }
        Decision::Refused(e) => {
            let line = crate::diag::line(
                crate::diag::Kind::ReloadError,
                &[],
                &format!("{why}: the new configuration is not applied, the running one stays: {e}"),
            );
            crate::diag::stderr_report(&line);
            let _ = diag.send(line);
            false
        }
    }
}

/// Starts the HTTP endpoint. An address given on the command line or in config.lua that
/// cannot be bound is a startup error; the default one is reported and skipped.
fn start_http(
    opts: &Options,
    cfg: &Config,
    stats: &Arc<Stats>,
    diag: &crate::source::Diag,
) -> anyhow::Result<Option<crate::metrics::http::HttpServer>> {
    let (addr, explicit) = match &opts.http {
        Some(a) => (
            crate::config::parse_http_address(a).map_err(|e| anyhow::anyhow!("--http: {e}"))?,
            true,
        ),
        None => (cfg.http_address.clone(), cfg.http_explicit),
    };
    let Some(addr) = addr else { return Ok(None) };
    match crate::metrics::http::start(&addr, Arc::clone(stats), &cfg.root.join("www")) {
        Ok(s) => {
            let bound = s.addr.to_string();
            let _ = diag.send(crate::diag::line(
                crate::diag::Kind::HttpListening,
                &[("address", &bound)],
                &format!("HTTP endpoint on http://{bound}/ (/metrics, /stats, /health, /www/)"),
            ));
            Ok(Some(s))
        }
        Err(e) if explicit => bail!("http_address: cannot listen on {addr}: {e}"),
        Err(e) => {
            let line = crate::diag::line(
                crate::diag::Kind::HttpUnavailable,
                &[("address", &addr)],
                &format!("cannot listen on {addr}: {e}; running without the HTTP endpoint"),
            );
            crate::diag::stderr_report(&line);
            let _ = diag.send(line);
            Ok(None)
        }
    }
}

/// Sends `MODULE LOAD` for every module of config.lua; failures are reported, not fatal.
fn load_modules(cfg: &Config, diag: &crate::source::Diag) {
    for (tag, module) in &cfg.modules {
        let r = crate::lua::hiredis::open(&cfg.redis, cfg.redis_timeouts()).and_then(|mut con| {
            redis::ConnectionLike::req_command(&mut con, redis::cmd("MODULE").arg("LOAD").arg(module))
                .map_err(|e| e.to_string())
                .and_then(|v| match v {
                    redis::Value::ServerError(e) => Err(format!("{} {}", e.code(), e.details().unwrap_or(""))),
                    _ => Ok(()),
                })
        });
        if let Err(e) = r {
            let line = crate::diag::line(
                crate::diag::Kind::RedisModule,
                &[("module", tag)],
                &format!("MODULE LOAD {module}: {e}"),
            );
            crate::diag::stderr_report(&line);
            let _ = diag.send(line);
        }
    }
}

/// Runs the engine until its inputs end (all `file://`, no `--follow`) or a signal stops it.
pub fn run(opts: &Options) -> anyhow::Result<Summary> {
    let cfg = load(opts)?;
    // A user that does not exist is a startup error, found before anything starts.
    if let Some(u) = &opts.user {
        let ids = crate::privilege::lookup(u).map_err(|e| anyhow::anyhow!("--user: {e}"))?;
        crate::privilege::set_target(ids);
    }
    crate::ml::set_native(cfg.ml_native);
    crate::lua::builtins::configure(cfg.http_timeout, cfg.http_insecure, cfg.dns_timeout);
    if cfg.redis == RedisTarget::Managed {
        crate::lua::managed::configure(&run_dir(opts, &cfg), cfg.redis_persist);
    }
    let r = run_configured(opts, cfg);
    crate::lua::managed::stop();
    r
}

/// The process's signal flags.
struct Signals {
    stop: Arc<AtomicBool>,
    rotate: Arc<AtomicBool>,
    hup: Arc<AtomicBool>,
}

fn run_configured(opts: &Options, cfg: Config) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let rotate = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).context("cannot install signal handlers")?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGUSR1, Arc::clone(&rotate))
        .context("cannot install signal handlers")?;
    let hup = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&hup))
        .context("cannot install signal handlers")?;
    // A write past the file size limit (RLIMIT_FSIZE) fails with EFBIG, which is counted and
    // reported like any output error, instead of killing the engine with SIGXFSZ.
    // SAFETY: setting a signal to be ignored has no handler to run and no other effect.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    let sig = Signals { stop, rotate, hup };
    // One pipeline per configuration: a reload that changes inputs, outputs or analyzers
    // drains the running one and builds the next (see `reconfig`).
    let mut carry = crate::reconfig::Carry::default();
    let mut cfg = cfg;
    loop {
        match run_pipeline(opts, &cfg, &sig, &mut carry) {
            Ok(Some(next)) => {
                cfg = next;
                carry.generation += 1;
            }
            Ok(None) => break,
            Err(e) => {
                carry.stop_workers();
                carry.close_sockets();
                return Err(e);
            }
        }
    }
    carry.stop_workers();
    carry.close_sockets();
    Ok(Summary {
        read: carry.read,
        written: carry.written,
        invalid: carry.invalid,
        script_errors: carry.script_errors,
        seconds: started.elapsed().as_secs_f64(),
        output_errors: carry.output_errors,
        dropped: carry.dropped,
        missing_inputs: carry.missing_inputs,
    })
}

/// Runs one pipeline until its inputs end, a signal stops it (returns `None`), or a reload
/// replaces its configuration (returns the new one, once everything read is written).
fn run_pipeline(
    opts: &Options,
    cfg: &Config,
    sig: &Signals,
    carry: &mut crate::reconfig::Carry,
) -> anyhow::Result<Option<Config>> {
    let first = carry.generation == 0;
    let (stop, rotate, hup) = (&sig.stop, &sig.rotate, &sig.hup);
    // Outputs first: a bad output path is a startup error.
    let mut sinks: Vec<Sink> = vec![
        Box::new(FileSink::open(cfg.log_dir.join("dragonfly-mle.log"), false).context("cannot open {log}")?),
        Box::new(FileSink::open(cfg.log_dir.join("dragonfly-mle-stats.log"), false).context("cannot open {stats}")?),
    ];
    for (i, o) in cfg.outputs.iter().enumerate() {
        let what = |path: &std::path::Path| format!("outputs[{}] ({}): cannot open {}", i + 1, o.tag, path.display());
        sinks.push(match &o.uri {
            // After a reload, an output that was open already is appended to, not truncated.
            OutputUri::File { path, truncate } => Box::new(
                FileSink::open(path.clone(), carry.opened.insert(path.clone()) && *truncate)
                    .with_context(|| what(path))?,
            ),
            OutputUri::Zfile { path, truncate } => Box::new(
                ZfileSink::open(path.clone(), carry.opened.insert(path.clone()) && *truncate)
                    .with_context(|| what(path))?,
            ),
            OutputUri::Ipc { path, kind } => Box::new(IpcSink::open(path.clone(), *kind)),
            OutputUri::Parquet { dir, prefix, opts } => {
                let s = crate::sink::parquet::ParquetSink::open(dir.clone(), prefix.clone(), opts.clone())
                    .with_context(|| what(dir))?;
                if let Some(r) = s.stale_report() {
                    eprintln!("dragonfly-mle: outputs[{}] ({}): {r}", i + 1, o.tag);
                }
                Box::new(s)
            }
            OutputUri::Kafka { brokers, topic, key } => Box::new(
                KafkaSink::open(brokers, topic, *key)
                    .with_context(|| format!("outputs[{}] ({}): cannot create the Kafka producer", i + 1, o.tag))?,
            ),
        });
    }
    let any_ordered = cfg.outputs.iter().any(|o| o.ordered);
    // Inputs that wait for their events to be written (tail checkpoints) need end-of-event
    // marks from the workers even when no output is ordered.
    let needs_marks = cfg
        .inputs
        .iter()
        .any(|i| matches!(i.uri, InputUri::Tail { .. } | InputUri::Kafka(_)));
    let marks: crate::source::checkpoint::Watermarks = Arc::new(
        (0..cfg.inputs.len())
            .map(|_| std::sync::atomic::AtomicU64::new(0))
            .collect(),
    );
    let state_dir = run_dir(opts, cfg);
    let mut ordered = vec![any_ordered, false];
    ordered.extend(cfg.outputs.iter().map(|o| o.ordered));

    std::env::set_current_dir(&cfg.root).with_context(|| format!("cannot enter {}", cfg.root.display()))?;

    // Thread plan: readers first on the CPU list, then workers.
    let cpus = opts.cores.clone().unwrap_or_else(pin::available);
    let n_inputs = cfg.inputs.len();
    // The workers (and their Lua states) outlive a rebuild: their number is the first
    // pipeline's.
    let shards = match carry.workers.len() {
        0 => opts
            .shards
            .unwrap_or_else(|| cpus.len().saturating_sub(n_inputs).max(1))
            .max(1),
        n => n,
    };
    let cpu_for = |slot: usize| pin::placement(&cpus, n_inputs + shards, slot, opts.no_pin);

    let input_tags: Vec<String> = cfg.inputs.iter().map(|i| i.tag.clone()).collect();
    let analyzer_tags: Vec<String> = cfg.analyzers.iter().map(|a| a.tag.clone()).collect();
    let mut output_tags = vec!["log".to_string(), "stats".to_string()];
    output_tags.extend(cfg.outputs.iter().map(|o| o.tag.clone()));
    crate::metrics::latency::init_clock();
    let mut stats = Stats::new(input_tags.clone(), analyzer_tags.clone(), output_tags.clone(), shards);
    stats.ring_capacity = RING_BATCHES as u64;
    stats.histograms = cfg.latency_histograms;
    let stats = Arc::new(stats);

    // Rings: reader r -> worker w (and back), worker w -> writer (and back).
    let mut reader_ios: Vec<ReaderIo> = (0..n_inputs)
        .map(|_| ReaderIo {
            to_workers: Vec::new(),
            returned: Vec::new(),
        })
        .collect();
    let mut worker_ios = Vec::new();
    let mut links = Vec::new();
    for _ in 0..shards {
        let mut inputs = Vec::new();
        for rio in reader_ios.iter_mut() {
            let (tx, rx) = RingBuffer::<InBatch>::new(RING_BATCHES);
            let (btx, brx) = RingBuffer::<InBatch>::new(RING_BATCHES + 4);
            rio.to_workers.push(tx);
            rio.returned.push(brx);
            inputs.push((rx, btx));
        }
        let (otx, orx) = RingBuffer::<OutBatch>::new(OUT_RING_BATCHES);
        let (obtx, obrx) = RingBuffer::<OutBatch>::new(OUT_RING_BATCHES + 8);
        worker_ios.push(WorkerIo {
            inputs,
            out: otx,
            out_back: obrx,
        });
        links.push(WorkerLink { from: orx, back: obtx });
    }

    let (diag_tx, diag_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let readers_done = Arc::new(AtomicBool::new(false));
    let readers_stop = Arc::new(AtomicBool::new(false));
    let rebuilding = Arc::new(AtomicBool::new(false));
    let mut policies = vec![crate::sink::Policy::default(); 2];
    policies.extend(cfg.outputs.iter().map(|o| o.policy));
    let gate = crate::sink::Gate::new(
        Arc::clone(stop),
        Arc::clone(&readers_done),
        Arc::clone(&rebuilding),
        cfg.shutdown_grace,
    );
    let writer = Writer::new(crate::sink::WriterParts {
        out: crate::sink::Outputs::new(sinks, policies, Arc::clone(&stats), gate),
        ordered,
        links,
        inputs: n_inputs,
        stats: Arc::clone(&stats),
        diag: diag_rx,
        rotate: Arc::clone(rotate),
        stats_interval: cfg.stats_interval,
        marks: Arc::clone(&marks),
    });
    let writer = std::thread::Builder::new()
        .name("dfm-writer".into())
        .spawn(move || writer.run())?;
    if first {
        load_modules(cfg, &diag_tx);
    }
    let _http = match start_http(opts, cfg, &stats, &diag_tx) {
        Ok(h) => h,
        Err(e) if first => return Err(e),
        // After a reload the endpoint is reported missing, the pipeline runs.
        Err(e) => {
            let line = crate::diag::line(crate::diag::Kind::HttpUnavailable, &[], &format!("{e:#}"));
            crate::diag::stderr_report(&line);
            let _ = diag_tx.send(line);
            None
        }
    };

    let (filters, analyzers) = script_specs(cfg);
    let reload = Arc::new(crate::lua::worker::Reload::default());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    for (w, io) in worker_ios.into_iter().enumerate() {
        let spec = WorkerSpec {
            index: w,
            cpu: cpu_for(n_inputs + w),
            filters: filters.clone(),
            analyzers: analyzers.clone(),
            input_tags: input_tags.clone(),
            analyzer_tags: analyzer_tags.clone(),
            output_tags: cfg.outputs.iter().map(|o| o.tag.clone()).collect(),
            ordered: any_ordered || needs_marks,
            redis: cfg.redis.clone(),
            redis_timeouts: cfg.redis_timeouts(),
            state: state_settings(cfg),
            reload: Arc::clone(&reload),
        };
        let st = Arc::clone(&stats);
        let tx = ready_tx.clone();
        if let Some((_, next)) = carry.workers.get(w) {
            let n = crate::lua::worker::NextPipeline {
                spec,
                io,
                stats: st,
                ready: tx,
            };
            if next.send(n).is_err() {
                bail!("worker {w} has stopped");
            }
            continue;
        }
        let (next_tx, next_rx) = std::sync::mpsc::channel();
        let handle = std::thread::Builder::new()
            .name(format!("dfm-worker-{w}"))
            .spawn(move || crate::lua::worker::run(spec, io, st, tx, next_rx))?;
        carry.workers.push((handle, next_tx));
    }
    drop(ready_tx);
    let mut startup_error = None;
    for _ in 0..shards {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                startup_error.get_or_insert(e);
            }
            Err(_) => {
                startup_error.get_or_insert("a worker thread died during startup".into());
            }
        }
    }
    if let Some(e) = startup_error {
        drop(reader_ios);
        carry.stop_workers();
        let _ = writer.join();
        bail!("{e}");
    }
    if opts.verbose {
        eprintln!(
            "dragonfly-mle: {n_inputs} input(s), {shards} shard(s), CPUs {cpus:?}, {}",
            if opts.no_pin {
                "not pinned (--no-pin)".to_string()
            } else if n_inputs + shards <= cpus.len() {
                "one CPU per thread".to_string()
            } else {
                format!("{} threads share the CPUs (not pinned one per CPU)", n_inputs + shards)
            }
        );
    }

    let open_count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut readers = Vec::new();
    for (r, io) in reader_ios.into_iter().enumerate() {
        let input = cfg.inputs[r].clone();
        let mut router = Router::new(
            r as u32,
            input.tag.clone(),
            io,
            Arc::clone(&stats),
            diag_tx.clone(),
            Arc::clone(&readers_stop),
        );
        router.count_open_in(Arc::clone(&open_count));
        let cpu = cpu_for(r);
        let follow = opts.follow;
        let input_marks = Arc::clone(&marks);
        let mut ckpt = match &input.uri {
            InputUri::Tail { path, .. } => Some(crate::source::checkpoint::Checkpoint::new(
                &state_dir,
                &input.tag,
                r,
                path,
                Arc::clone(&marks),
            )),
            _ => None,
        };
        let max_line = cfg.max_line;
        let poll = cfg.tail_poll;
        let pos_key = match &input.uri {
            InputUri::File { path } | InputUri::Zfile { path } => Some((input.tag.clone(), path.clone())),
            _ => None,
        };
        let start = pos_key
            .as_ref()
            .and_then(|k| carry.file_pos.get(k))
            .copied()
            .unwrap_or(0);
        let follow_from = pos_key.as_ref().and_then(|k| carry.follow_pos.get(k)).copied();
        // A socket input the previous pipeline kept open (same tag, path and kind).
        let sock_key = match &input.uri {
            InputUri::Ipc { path, kind } => Some((input.tag.clone(), path.clone(), *kind)),
            _ => None,
        };
        let mut kept = sock_key.as_ref().and_then(|k| carry.sockets.remove(k));
        let rebuilding_r = Arc::clone(&rebuilding);
        readers.push(
            std::thread::Builder::new()
                .name(format!("dfm-reader-{r}"))
                .spawn(move || {
                    if let Some(c) = cpu {
                        pin::pin_current(&c);
                    }
                    let how = crate::source::Reading {
                        input: r,
                        follow,
                        max_line,
                        poll,
                        marks: &input_marks,
                        rebuilding: &rebuilding_r,
                    };
                    let resume = crate::source::Resume {
                        file_pos: start,
                        followed: follow_from,
                        socket: kept.take(),
                    };
                    let (r, stopped) = crate::source::read_input(&input.uri, &how, &mut router, ckpt.as_mut(), resume);
                    router.opened();
                    if let Err(e) = r {
                        router.set_missing(true);
                        router.report(
                            crate::diag::Kind::InputError,
                            0,
                            0,
                            0,
                            &format!("{}: {e}", input.uri.path().display()),
                        );
                    }
                    (
                        ckpt,
                        pos_key.clone().zip(stopped.file_pos),
                        pos_key.zip(stopped.followed),
                        sock_key.zip(stopped.socket),
                    )
                })?,
        );
    }
    // Sockets of inputs the new configuration removed.
    carry.close_sockets();
    let dropped = if first {
        drop_privileges(opts, cfg, &state_dir, n_inputs, shards, &open_count, &diag_tx)
    } else {
        Ok(())
    };
    if dropped.is_err() {
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    // A live status line (and progress of file inputs) when stderr is a terminal.
    let sized: Vec<crate::metrics::status::Sized> = cfg
        .inputs
        .iter()
        .enumerate()
        .filter_map(|(i, input)| match &input.uri {
            InputUri::File { path } if !opts.follow => std::fs::metadata(path)
                .ok()
                .filter(|_| !crate::source::file::is_gzip(path).unwrap_or(true))
                .map(|m| (i, m.len())),
            _ => None,
        })
        .collect();
    let status = crate::metrics::status::StatusLine::start(Arc::clone(&stats), sized);
    let next = Arc::new(std::sync::Mutex::new(None));
    let control = {
        let paths: Vec<PathBuf> = filters.iter().chain(&analyzers).map(|s| s.path.clone()).collect();
        let mut control = crate::reconfig::Control {
            hup: Arc::clone(hup),
            stop: Arc::clone(stop),
            readers_stop: Arc::clone(&readers_stop),
            rebuilding: Arc::clone(&rebuilding),
            next: Arc::clone(&next),
            watch: opts.watch.then(|| crate::reconfig::watched(cfg)),
        };
        let (done, diag) = (Arc::clone(&readers_done), diag_tx.clone());
        let (opts, running) = (opts.clone(), cfg.clone());
        std::thread::Builder::new().name("dfm-control".into()).spawn(move || {
            let next = Arc::clone(&control.next);
            control.run(&done, |why| {
                reload_request(why, &opts, &running, &paths, &reload, &next, &diag)
            })
        })?
    };
    drop(diag_tx);

    let mut ckpts = Vec::new();
    for r in readers {
        if let Ok((c, pos, followed, sock)) = r.join() {
            ckpts.extend(c);
            if let Some((key, s)) = sock {
                carry.sockets.insert(key, s);
            }
            if let Some((key, p)) = pos {
                carry.file_pos.insert(key, p);
            }
            if let Some((key, at)) = followed {
                carry.follow_pos.insert(key, at);
            }
        }
    }
    readers_done.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = control.join();
    // The workers end this pipeline (and wait for the next one); the writer ends once all have.
    let _ = writer.join();
    drop(status);
    dropped?;
    // Everything read is written now: the final checkpoints.
    for mut c in ckpts {
        if let Err(e) = c.save(true) {
            eprintln!("dragonfly-mle: cannot save {}: {e}", c.state_path.display());
        }
    }
    carry.read += stats.events_read();
    carry.written += stats.written();
    carry.invalid += stats.invalid();
    carry.script_errors += stats.script_errors();
    carry.output_errors += stats.output_errors();
    carry.dropped += stats.dropped();
    carry.missing_inputs = stats.missing_inputs();
    // A stop signal during the rebuild's drain wins: the engine ends.
    if stop.load(std::sync::atomic::Ordering::Relaxed) {
        return Ok(None);
    }
    Ok(next.lock().unwrap_or_else(|e| e.into_inner()).take())
}

/// The one-core parse-only rate of a file: framing (memchr) and validation + routing
/// (simd-json), no Lua, no output. Returns (events, invalid, seconds).
pub fn bench_parse(path: &std::path::Path) -> std::io::Result<(u64, u64, f64)> {
    use crate::event::flow_key::RouteParser;
    use crate::source::framer::{Framer, LineSink};
    struct Count {
        parser: RouteParser,
        ok: u64,
        bad: u64,
        hash: u64,
    }
    impl LineSink for Count {
        fn line(&mut self, line: &[u8], _: u64, _: u64) {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                return;
            }
            match self.parser.parse(line) {
                Ok(r) => {
                    self.ok += 1;
                    self.hash ^= r.hash.unwrap_or(0);
                }
                Err(_) => self.bad += 1,
            }
        }
        fn too_long(&mut self, _: u64, _: u64, _: usize, _: usize) {
            self.bad += 1;
        }
    }
    let mut f = std::fs::File::open(path)?;
    let mut framer = Framer::new(crate::config::DEFAULT_MAX_LINE);
    let mut sink = Count {
        parser: RouteParser::new(),
        ok: 0,
        bad: 0,
        hash: 0,
    };
    let t = Instant::now();
    while framer.fill(&mut f, &mut sink)? > 0 {}
    framer.finish(&mut sink);
    std::hint::black_box(sink.hash);
    Ok((sink.ok, sink.bad, t.elapsed().as_secs_f64()))
}
