//! The `dragonfly-mle` command line: parses flags, runs the engine, maps errors to exit codes.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use dragonfly_mle::engine::{self, DEFAULT_LOG_DIR, DEFAULT_ROOT, Options};

mod load;
mod tap;
mod top;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// DragonFly Machine Learning Engine: runs Lua analyzers over Suricata EVE events.
#[derive(Parser, Debug)]
#[command(name = "dragonfly-mle", disable_version_flag = true)]
struct Cli {
    /// Root directory (config/, filter/, analyzer/).
    #[arg(global = true, short = 'r', value_name = "DIR", default_value = DEFAULT_ROOT, value_parser = root_dir)]
    root: PathBuf,
    /// Log directory (created with its parents); relative file:// and tail:// paths live here.
    #[arg(global = true, short = 'l', value_name = "DIR", default_value = DEFAULT_LOG_DIR)]
    log_dir: PathBuf,
    /// Verbose startup information.
    #[arg(global = true, short = 'v')]
    verbose: bool,
    /// Print the version and exit.
    #[arg(global = true, short = 'V')]
    version: bool,
    /// Drop privileges to user nobody once inputs, outputs and sockets are open.
    #[arg(global = true, short = 'p')]
    drop_privileges: bool,
    /// Drop privileges to this user (implies -p).
    #[arg(global = true, long, value_name = "NAME")]
    user: Option<String>,
    /// Chroot to the root directory (before dropping privileges); see docs/operations.md.
    #[arg(global = true, short = 'c')]
    chroot: bool,
    /// HTTP endpoint address (metrics, stats, health, www), or "off"; default from
    /// config.lua's http_address, else 127.0.0.1:7070.
    #[arg(global = true, long, value_name = "ADDR")]
    http: Option<String>,
    /// Number of worker shards (default: config.lua's `shards`, else one per CPU left after the reader threads, at least 1; for `test`, each test runs on this many instead of its own `shards`, else config.lua's, else 1 and 2).
    #[arg(global = true, long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    shards: Option<u32>,
    /// CPUs to pin threads to, e.g. "0,2-5" (readers first, then workers).
    #[arg(global = true, long, value_name = "LIST")]
    cores: Option<String>,
    /// Do not pin threads to CPUs.
    #[arg(global = true, long)]
    no_pin: bool,
    /// Configuration file instead of <root>/config/config.lua.
    #[arg(global = true, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Keep following file:// inputs after their end instead of exiting.
    #[arg(global = true, long)]
    follow: bool,
    /// Reload when config.lua or a script changes, as SIGHUP does (checked every second).
    #[arg(global = true, long)]
    watch: bool,
    /// Run directory (managed Redis); default /var/run/dragonfly-mle, else <log dir>/run.
    #[arg(global = true, long, value_name = "DIR")]
    run_dir: Option<PathBuf>,
    /// Validate the configuration and load every script, then exit 0 (valid) or 1.
    #[arg(global = true, long = "check")]
    check_flag: bool,
    #[command(subcommand)]
    command: Option<Mode>,
    /// With check: also run every script's setup() (connects to Redis, loads models, ...).
    #[arg(global = true, long)]
    setup: bool,
    /// Engine records in dragonfly-mle.log and on stderr: JSON objects (default) or text lines.
    #[arg(global = true, long, value_name = "FORMAT", value_parser = ["text", "json"], default_value = "json")]
    log_format: String,
}

/// `-r DIR`: an empty DIR is the default root, as the original read `-r ""`.
fn root_dir(s: &str) -> Result<PathBuf, String> {
    Ok(PathBuf::from(if s.is_empty() { DEFAULT_ROOT } else { s }))
}

/// What to do besides running the engine.
#[derive(clap::Subcommand, Debug)]
enum Mode {
    /// Validate the configuration and load every script (same as --check).
    Check,
    /// Run analyzer tests (*.test.lua) against the real engine; see docs/testing.md.
    Test {
        /// Test files, or folders searched for *.test.lua (default: <root>/tests).
        paths: Vec<PathBuf>,
        /// Write the expected records (<file>.expected/<test>/<output>.jsonl) from this run.
        #[arg(long)]
        update: bool,
        /// Keep every run's folder (those of failed runs are always kept).
        #[arg(long)]
        keep: bool,
        /// Run only the tests whose name contains TEXT (repeatable).
        #[arg(long = "name", value_name = "TEXT")]
        names: Vec<String>,
    },
    /// Print a sample of the live events passing one point of a running engine (its HTTP
    /// endpoint: --http ADDR, else config.lua's http_address, else 127.0.0.1:7070).
    Tap {
        /// What an input reads (its lines, before the workers validate them).
        #[arg(long, value_name = "TAG", conflicts_with_all = ["analyzer", "output"])]
        input: Option<String>,
        /// What an analyzer's loop() is called with.
        #[arg(long, value_name = "TAG", conflicts_with_all = ["input", "output"])]
        analyzer: Option<String>,
        /// What an output writes.
        #[arg(long, value_name = "TAG", conflicts_with_all = ["input", "analyzer"])]
        output: Option<String>,
        /// How many events.
        #[arg(short = 'n', default_value_t = 10)]
        n: usize,
        /// Take one event in this many.
        #[arg(long, default_value_t = 1)]
        every: u64,
        /// Seconds to wait for them (above 0, at most 300).
        #[arg(long, default_value_t = 10.0, value_parser = tap_seconds)]
        timeout: f64,
    },
    /// A live view of a running engine (its HTTP endpoint, as tap): per input, analyzer and
    /// output its rates, totals, errors and loop() p50/p99, ring fill and load per shard.
    Top {
        /// Print one frame and exit.
        #[arg(long)]
        once: bool,
    },
    /// One stage alone on a file's events: reader (framing, routing to 2 shards), validate
    /// (the workers' full validation), worker (pass-through Lua), writer (ordered file output)
    /// (perf/stages.sh).
    #[command(hide = true, name = "bench-stage")]
    BenchStage {
        #[arg(value_parser = ["reader", "validate", "worker", "writer"])]
        stage: String,
        file: PathBuf,
    },
    /// The one-core parse-only rate of a file (perf/).
    #[command(hide = true, name = "bench-parse")]
    BenchParse { file: PathBuf },
    /// Sends a file's lines to a socket input from several producers (perf/io.sh).
    #[command(hide = true, name = "bench-send")]
    BenchSend {
        uri: String,
        file: PathBuf,
        producers: usize,
    },
    /// Produces a file's lines to a Kafka topic (perf/io.sh).
    #[command(hide = true, name = "bench-kafka-produce")]
    BenchKafkaProduce {
        brokers: String,
        topic: String,
        file: PathBuf,
    },
    /// Consumes N messages from a Kafka topic (perf/io.sh).
    #[command(hide = true, name = "bench-kafka-count")]
    BenchKafkaCount { brokers: String, topic: String, n: usize },
}

/// `tap --timeout`: seconds above 0, at most 300 (what the engine holds a tap open for).
fn tap_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(t) if t > 0.0 && t <= 300.0 => Ok(t),
        _ => Err(format!("{s:?}: expected seconds above 0 and at most 300")),
    }
}

/// Runs a hidden load tool; its exit code.
fn bench_tool(mode: &Mode) -> ExitCode {
    let r = match mode {
        Mode::BenchParse { file } => {
            return match dragonfly_mle::bench::parse_only(file) {
                Ok((n, bad, secs)) => {
                    dragonfly_mle::println_safe!(
                        "parse-only: {n} events in {secs:.3} s ({:.0} events/s), {bad} invalid",
                        n as f64 / secs
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    dragonfly_mle::eprintln_safe!("dragonfly-mle: {}: {e}", file.display());
                    ExitCode::from(1)
                }
            };
        }
        Mode::BenchStage { stage, file } => {
            let r = match stage.as_str() {
                "reader" => dragonfly_mle::bench::reader_only(file, 2),
                "validate" => dragonfly_mle::bench::validate_only(file).map(|(n, _, secs)| (n, secs)),
                "worker" => dragonfly_mle::bench::worker_only(file),
                _ => dragonfly_mle::bench::writer_only(file),
            };
            let name = match stage.as_str() {
                "reader" => "reader-only",
                "validate" => "validate-only",
                "worker" => "worker-only",
                _ => "writer-only",
            };
            r.map(|(n, secs)| (name, n as usize, secs)).map_err(anyhow::Error::from)
        }
        Mode::BenchSend { uri, file, producers } => load::send(uri, file, *producers)
            .map(|(n, secs)| ("sent", n, secs))
            .map_err(anyhow::Error::from),
        Mode::BenchKafkaProduce { brokers, topic, file } => {
            load::kafka_produce(brokers, topic, file).map(|(n, secs)| ("produced", n, secs))
        }
        Mode::BenchKafkaCount { brokers, topic, n } => {
            load::kafka_count(brokers, topic, *n).map(|secs| ("consumed", *n, secs))
        }
        Mode::Check | Mode::Test { .. } | Mode::Tap { .. } | Mode::Top { .. } => unreachable!("not a load tool"),
    };
    match r {
        Ok((what, n, secs)) => {
            dragonfly_mle::println_safe!("{what}: {n} events in {secs:.3} s ({:.0} events/s)", n as f64 / secs);
            ExitCode::SUCCESS
        }
        Err(e) => {
            dragonfly_mle::eprintln_safe!("dragonfly-mle: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// The running engine's HTTP endpoint: `--http`, else config.lua's `http_address`, else the
/// default.
fn endpoint(cli: &Cli) -> String {
    match &cli.http {
        Some(a) => a.clone(),
        None => engine::http_address(&cli.root, cli.config.as_deref()).unwrap_or_else(|| "127.0.0.1:7070".into()),
    }
}

/// `dragonfly-mle tap`: prints the events; 0 when some came, 1 otherwise.
fn tap(cli: &Cli) -> ExitCode {
    let Some(Mode::Tap {
        input,
        analyzer,
        output,
        n,
        every,
        timeout,
    }) = &cli.command
    else {
        return ExitCode::from(2);
    };
    let point = match (input, analyzer, output) {
        (Some(t), _, _) => ("input", t.as_str()),
        (_, Some(t), _) => ("analyzer", t.as_str()),
        (_, _, Some(t)) => ("output", t.as_str()),
        _ => {
            dragonfly_mle::eprintln_safe!(
                "dragonfly-mle: tap: name the point: --input TAG, --analyzer TAG or --output TAG"
            );
            return ExitCode::from(2);
        }
    };
    let addr = endpoint(cli);
    let t = tap::Tap {
        point,
        n: *n,
        every: *every,
        timeout: *timeout,
    };
    match tap::run(&addr, &t, &mut std::io::stdout()) {
        Ok(0) => {
            dragonfly_mle::eprintln_safe!(
                "dragonfly-mle: tap: no event passed {} {:?} within {timeout} s",
                point.0,
                point.1
            );
            ExitCode::from(1)
        }
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            dragonfly_mle::eprintln_safe!("dragonfly-mle: tap: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// `dragonfly-mle test`: 0 when every test passed, 1 otherwise.
fn test(cli: &Cli, paths: &[PathBuf], update: bool, keep: bool, names: &[String]) -> ExitCode {
    let engine = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            dragonfly_mle::eprintln_safe!("dragonfly-mle: cannot find this program's path: {e}");
            return ExitCode::from(1);
        }
    };
    let opts = dragonfly_mle::testkit::TestOptions {
        paths: paths.to_vec(),
        root: cli.root.clone(),
        update,
        shards: cli.shards.map(|n| n as usize),
        keep,
        engine,
        names: names.to_vec(),
    };
    match dragonfly_mle::testkit::run(&opts, &mut std::io::stdout()) {
        Ok(r) if r.failed == 0 => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(e) => {
            dragonfly_mle::eprintln_safe!("dragonfly-mle: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Mode::Test {
        paths,
        update,
        keep,
        names,
    }) = &cli.command
    {
        return test(&cli, paths, *update, *keep, names);
    }
    if let Some(Mode::Tap { .. }) = &cli.command {
        return tap(&cli);
    }
    if let Some(Mode::Top { once }) = &cli.command {
        return match top::run(&endpoint(&cli), *once) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                dragonfly_mle::eprintln_safe!("dragonfly-mle: top: {e:#}");
                ExitCode::from(1)
            }
        };
    }
    if let Some(m) = cli.command.as_ref().filter(|m| !matches!(m, Mode::Check)) {
        return bench_tool(m);
    }
    engine::set_log_format_text(cli.log_format == "text");
    if cli.version {
        dragonfly_mle::println_safe!(
            "DragonFly Machine Learning Engine (MLE)\nVersion: {}",
            env!("CARGO_PKG_VERSION")
        );
        return ExitCode::SUCCESS;
    }
    let cores = match cli
        .cores
        .as_deref()
        .map(|c| engine::parse_cores(c).and_then(engine::check_available))
        .transpose()
    {
        Ok(c) => c,
        Err(e) => {
            dragonfly_mle::eprintln_safe!("dragonfly-mle: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(e) = cli.http.as_deref().and_then(engine::http_flag_error) {
        dragonfly_mle::eprintln_safe!("dragonfly-mle: {e}");
        return ExitCode::from(2);
    }
    // Relative paths are made absolute now: the engine enters the root directory, and a
    // reload (SIGHUP, --watch, a wildcard's new file) reads the configuration again from there.
    let abs = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
    let opts = Options {
        root: abs(cli.root),
        log_dir: abs(cli.log_dir),
        config_file: cli.config.map(abs),
        shards: cli.shards.map(|n| n as usize),
        cores,
        no_pin: cli.no_pin,
        follow: cli.follow,
        verbose: cli.verbose,
        run_dir: cli.run_dir.map(abs),
        http: cli.http,
        user: cli.user.or_else(|| cli.drop_privileges.then(|| "nobody".to_string())),
        chroot: cli.chroot,
        watch: cli.watch,
    };
    if cli.setup && !(cli.check_flag || cli.command.is_some()) {
        dragonfly_mle::eprintln_safe!("dragonfly-mle: --setup goes with check (dragonfly-mle check --setup)");
        return ExitCode::from(2);
    }
    if cli.check_flag || cli.command.is_some() {
        return match engine::check(&opts, cli.setup) {
            Ok(msg) => {
                dragonfly_mle::println_safe!("{msg}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                dragonfly_mle::eprintln_safe!("dragonfly-mle: {e:#}");
                ExitCode::from(1)
            }
        };
    }
    match engine::run(&opts) {
        Ok(summary) => {
            dragonfly_mle::println_safe!("{summary}");
            match summary.losses() {
                Some(line) => {
                    dragonfly_mle::eprintln_safe!("{line}");
                    ExitCode::from(engine::EXIT_LOSSES)
                }
                None => ExitCode::SUCCESS,
            }
        }
        Err(e) => {
            dragonfly_mle::eprintln_safe!("dragonfly-mle: {e:#}");
            engine::record_fatal(&opts.log_dir, &format!("{e:#}"));
            ExitCode::from(1)
        }
    }
}
