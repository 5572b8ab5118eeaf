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
use crate::primitives::pin;
use crate::shard::{InBatch, OUT_RING_BATCHES, OutBatch};
use crate::sink::{FileSink, IpcSink, KafkaSink, Sink, WorkerLink, Writer, ZfileSink};
use crate::source::ReaderIo;

mod check;
mod control;
mod pipeline;
mod plan;
mod privileges;
mod signals;
mod start;
mod wiring;

pub use crate::config::{DEFAULT_LOG_DIR, DEFAULT_ROOT};
pub use crate::diag::set_log_format_text;
pub use crate::primitives::pin::{CoresError, check_available, parse_cores};
pub use check::check;
use check::*;
use control::*;
use pipeline::*;
use plan::Plan;
use privileges::*;
use signals::Signals;
use start::*;
use wiring::*;

/// The HTTP endpoint's address config.lua names (`http_address`), if it loads and names one;
/// what `dragonfly-mle tap` connects to without `--http`.
pub fn http_address(root: &std::path::Path, config_file: Option<&std::path::Path>) -> Option<String> {
    let log_dir = std::env::temp_dir();
    let cfg = Config::load(root, &log_dir, config_file).ok()?;
    cfg.http_address
}

/// What is wrong with a `--http` value (`HOST:PORT` or `off`), if anything: a bad flag,
/// found before anything starts.
pub fn http_flag_error(value: &str) -> Option<String> {
    crate::config::parse_http_address(value)
        .err()
        .map(|e| format!("--http: {e}"))
}

/// The variable `dragonfly-mle test` passes a test's Redis commands in: a file of JSON arrays,
/// one command per line, run before anything starts.
pub(crate) const TEST_REDIS_ENV: &str = "DFM_TEST_REDIS";

/// The variable `dragonfly-mle test` passes a test's Redis checks in (`expect.redis`): a file
/// of commands as [`TEST_REDIS_ENV`]'s, run once the pipeline has ended, before the managed
/// Redis stops; their replies go to `<file>.replies`, one JSON value per line.
pub(crate) const TEST_REDIS_CHECKS_ENV: &str = "DFM_TEST_REDIS_CHECKS";

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
    /// Records of the engine's own log (`dragonfly-mle.log`) and stats file that could not be
    /// written (their reports are lost: the run counts as one that lost something).
    pub log_errors: u64,
    /// Values scripts sent to an unknown analyzer or output, and records full outputs dropped
    /// (`drop_when_full`).
    pub dropped: u64,
    /// Inputs missing or unreadable at the end.
    pub missing_inputs: Vec<String>,
}

/// Exit status of a run that lost events (output errors, dropped values, missing inputs), or
/// records of its own log or stats file.
pub const EXIT_LOSSES: u8 = 3;

impl Summary {
    /// What the run lost, as one line (`None` when nothing was lost).
    pub fn losses(&self) -> Option<String> {
        if self.output_errors == 0 && self.dropped == 0 && self.log_errors == 0 && self.missing_inputs.is_empty() {
            return None;
        }
        let mut parts = vec![
            format!("{} output errors", self.output_errors),
            format!("{} dropped", self.dropped),
        ];
        if self.log_errors > 0 {
            parts.push(format!(
                "{} records of dragonfly-mle.log or the stats file could not be written",
                self.log_errors
            ));
        }
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

/// The root, log directory and configuration file as the first load resolved them: a reload
/// after a chroot (`-c`) reads the same files, where they now are (relative paths and
/// symbolic links would resolve elsewhere from inside the root).
static RESOLVED: std::sync::OnceLock<(PathBuf, PathBuf, Option<PathBuf>)> = std::sync::OnceLock::new();

fn load(opts: &Options) -> anyhow::Result<Config> {
    let (root, log_dir, config_file) = match RESOLVED.get() {
        Some(r) if crate::privilege::chrooted() => r.clone(),
        _ => {
            std::fs::create_dir_all(&opts.log_dir)
                .with_context(|| format!("cannot create the log directory {}", opts.log_dir.display()))?;
            let canon = |p: &PathBuf| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
            let r = (
                canon(&opts.root),
                canon(&opts.log_dir),
                opts.config_file.as_ref().map(canon),
            );
            let _ = RESOLVED.set(r.clone());
            r
        }
    };
    Ok(Config::load(&root, &log_dir, config_file.as_deref())?)
}

/// What every script state is opened with, from config.lua.
fn state_settings(cfg: &Config) -> crate::lua::state::StateSettings {
    crate::lua::state::StateSettings {
        memory_limit: cfg.script_memory,
        precision: cfg.number_precision,
        gc_pause: cfg.gc_pause,
    }
}

/// The run directory: the option, else the original's, else one under the log directory;
/// the same for every pipeline of the run (after a chroot, /var/run could no longer be made).
fn run_dir(opts: &Options, cfg: &Config) -> PathBuf {
    static CHOSEN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    CHOSEN.get_or_init(|| choose_run_dir(opts, cfg)).clone()
}

fn choose_run_dir(opts: &Options, cfg: &Config) -> PathBuf {
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

/// Appends a `fatal_error` record (the engine could not start, or stopped on an error: what
/// `run`'s error says) to `dragonfly-mle.log` in `log_dir`, when that directory exists: the log
/// file was left empty while stderr alone said why.
pub fn record_fatal(log_dir: &std::path::Path, message: &str) {
    append_record(log_dir, &crate::diag::line(crate::diag::Kind::FatalError, &[], message));
}

/// Appends the record `record` (a `diag::line`) to `dragonfly-mle.log` in `log_dir` directly,
/// when that directory exists: for records made when the writer that owns the file is gone.
pub(crate) fn append_record(log_dir: &std::path::Path, record: &[u8]) {
    if !crate::privilege::host_path(log_dir).is_dir() {
        return;
    }
    let _ = append_own(log_dir, "dragonfly-mle.log", &crate::diag::log_line(record));
}

/// Appends `line` and a newline to the engine's own file `name` (`dragonfly-mle.log`, the
/// stats file) in `log_dir`, creating it if needed: for what is written when the writer that
/// owns the file is gone or held.
pub(crate) fn append_own(log_dir: &std::path::Path, name: &str, line: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let path = crate::privilege::host_path(&log_dir.join(name)).into_owned();
    let mut line = line.to_vec();
    line.push(b'\n');
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?
        .write_all(&line)
}

/// Runs the engine until its inputs end (all `file://`, no `--follow`) or a signal stops it.
pub fn run(opts: &Options) -> anyhow::Result<Summary> {
    // First of all: a SIGHUP or SIGUSR1 sent while the configuration is read (a logrotate
    // postrotate right after a restart) would otherwise end the process with its default
    // action; now it is a reload or a reopen once the pipeline runs, and SIGINT/SIGTERM stop it
    // as soon as it has started.
    let sig = Signals::install()?;
    crate::counters::note_panics();
    let cfg = match load(opts) {
        Ok(c) => c,
        // A stop while config.lua was evaluated (one that loops without end, say): nothing
        // started, nothing was read; the run ends as a stopped one does.
        Err(_) if sig.stop.load(std::sync::atomic::Ordering::Relaxed) => {
            crate::eprintln_safe!("dragonfly-mle: stopped while config.lua was being evaluated; nothing was started");
            return Ok(Summary::default());
        }
        Err(e) => return Err(e),
    };
    // A user that does not exist is a startup error, found before anything starts.
    if let Some(u) = &opts.user {
        let ids = crate::privilege::lookup(u).context("--user")?;
        crate::privilege::set_target(ids);
    }
    crate::ml::set_native(cfg.ml_native);
    crate::lua::builtins::configure(cfg.http_timeout, cfg.http_insecure, cfg.dns_timeout);
    if cfg.redis == RedisTarget::Managed {
        crate::lua::managed::configure(&run_dir(opts, &cfg), cfg.redis_persist);
    }
    if let Some(path) = std::env::var_os(TEST_REDIS_ENV) {
        let r = preload_redis(&cfg, std::path::Path::new(&path));
        if r.is_err() {
            crate::lua::managed::stop();
        }
        r.context("the test's Redis commands")?;
    }
    let checks =
        std::env::var_os(TEST_REDIS_CHECKS_ENV).map(|p| (PathBuf::from(p), cfg.redis.clone(), cfg.redis_timeouts()));
    let r = run_configured(opts, cfg, &sig);
    if let (Ok(_), Some((path, target, timeouts))) = (&r, checks) {
        let mut out = path.clone().into_os_string();
        out.push(".replies");
        if let Err(e) = redis_replies(&target, timeouts, &path, &PathBuf::from(&out)) {
            crate::lua::managed::stop();
            return Err(e.context("the test's Redis checks"));
        }
    }
    crate::lua::managed::stop();
    r
}
