//! The `dragonfly-mle` command line: parses flags, runs the engine, maps errors to exit codes.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use dragonfly_mle::bench;
use dragonfly_mle::config::{DEFAULT_LOG_DIR, DEFAULT_ROOT};
use dragonfly_mle::engine::{self, Options};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// DragonFly Machine Learning Engine: runs Lua analyzers over Suricata EVE events.
#[derive(Parser, Debug)]
#[command(name = "dragonfly-mle", disable_version_flag = true)]
struct Cli {
    /// Root directory (config/, filter/, analyzer/).
    #[arg(short = 'r', value_name = "DIR", default_value = DEFAULT_ROOT)]
    root: PathBuf,
    /// Log directory (created with its parents); relative file:// and tail:// paths live here.
    #[arg(short = 'l', value_name = "DIR", default_value = DEFAULT_LOG_DIR)]
    log_dir: PathBuf,
    /// Verbose startup information.
    #[arg(short = 'v')]
    verbose: bool,
    /// Print the version and exit.
    #[arg(short = 'V')]
    version: bool,
    /// Drop privileges to user nobody once inputs, outputs and sockets are open.
    #[arg(short = 'p')]
    drop_privileges: bool,
    /// Drop privileges to this user (implies -p).
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
    /// Chroot to the root directory (before dropping privileges); see docs/operations.md.
    #[arg(short = 'c')]
    chroot: bool,
    /// HTTP endpoint address (metrics, stats, health, www), or "off"; default from
    /// config.lua's http_address, else 127.0.0.1:7070.
    #[arg(long, value_name = "ADDR")]
    http: Option<String>,
    /// Number of worker shards (default: one per CPU left after the reader threads, at least 1).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    shards: Option<u32>,
    /// CPUs to pin threads to, e.g. "0,2-5" (readers first, then workers).
    #[arg(long, value_name = "LIST")]
    cores: Option<String>,
    /// Do not pin threads to CPUs.
    #[arg(long)]
    no_pin: bool,
    /// Configuration file instead of <root>/config/config.lua.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Keep following file:// inputs after their end instead of exiting.
    #[arg(long)]
    follow: bool,
    /// Reload when config.lua or a script changes, as SIGHUP does (checked every second).
    #[arg(long)]
    watch: bool,
    /// Run directory (managed Redis); default /var/run/dragonfly-mle, else <log dir>/run.
    #[arg(long, value_name = "DIR")]
    run_dir: Option<PathBuf>,
    /// Validate the configuration and load every script, then exit 0 (valid) or 1.
    #[arg(long = "check")]
    check_flag: bool,
    /// `check`: same as --check.
    #[arg(value_parser = ["check"])]
    command: Option<String>,
    /// With check: also run every script's setup() (connects to Redis, loads models, ...).
    #[arg(long)]
    setup: bool,
    /// Engine records in dragonfly-mle.log and on stderr: JSON objects (default) or text lines.
    #[arg(long, value_name = "FORMAT", value_parser = ["text", "json"], default_value = "json")]
    log_format: String,
}

fn main() -> ExitCode {
    // Hidden: `dragonfly-mle bench-parse FILE`, the one-core parse-only rate used by perf/.
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("bench-parse") && args.len() == 3 {
        return match engine::bench_parse(std::path::Path::new(&args[2])) {
            Ok((n, bad, secs)) => {
                println!(
                    "parse-only: {n} events in {secs:.3} s ({:.0} events/s), {bad} invalid",
                    n as f64 / secs
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("dragonfly-mle: {}: {e}", args[2]);
                ExitCode::from(1)
            }
        };
    }
    // Hidden load generators for perf/: `bench-send URI FILE PRODUCERS`,
    // `bench-kafka-produce BROKERS TOPIC FILE`, `bench-kafka-count BROKERS TOPIC N`.
    if args.len() == 5 {
        let path = std::path::Path::new(&args[3]);
        let r = match args[1].as_str() {
            "bench-send" => Some(
                bench::send(&args[2], path, args[4].parse().unwrap_or(1))
                    .map(|(n, secs)| ("sent", n, secs))
                    .map_err(|e| e.to_string()),
            ),
            "bench-kafka-produce" => Some(
                bench::kafka_produce(&args[2], &args[3], std::path::Path::new(&args[4]))
                    .map(|(n, secs)| ("produced", n, secs)),
            ),
            "bench-kafka-count" => {
                let n = args[4].parse().unwrap_or(0);
                Some(bench::kafka_count(&args[2], &args[3], n).map(|secs| ("consumed", n, secs)))
            }
            _ => None,
        };
        match r {
            Some(Ok((what, n, secs))) => {
                println!("{what}: {n} events in {secs:.3} s ({:.0} events/s)", n as f64 / secs);
                return ExitCode::SUCCESS;
            }
            Some(Err(e)) => {
                eprintln!("dragonfly-mle: {}: {e}", args[1]);
                return ExitCode::from(1);
            }
            None => {}
        }
    }
    let cli = Cli::parse();
    dragonfly_mle::diag::set_log_format_text(cli.log_format == "text");
    if cli.version {
        println!(
            "DragonFly Machine Learning Engine (MLE)\nVersion: {}",
            env!("CARGO_PKG_VERSION")
        );
        return ExitCode::SUCCESS;
    }
    let cores = match cli
        .cores
        .as_deref()
        .map(dragonfly_mle::shard::pin::parse_cores)
        .transpose()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dragonfly-mle: {e}");
            return ExitCode::from(2);
        }
    };
    let opts = Options {
        root: cli.root,
        log_dir: cli.log_dir,
        config_file: cli.config,
        shards: cli.shards.map(|n| n as usize),
        cores,
        no_pin: cli.no_pin,
        follow: cli.follow,
        verbose: cli.verbose,
        run_dir: cli.run_dir,
        http: cli.http,
        user: cli.user.or_else(|| cli.drop_privileges.then(|| "nobody".to_string())),
        chroot: cli.chroot,
        watch: cli.watch,
    };
    if cli.setup && !(cli.check_flag || cli.command.is_some()) {
        eprintln!("dragonfly-mle: --setup goes with check (dragonfly-mle check --setup)");
        return ExitCode::from(2);
    }
    if cli.check_flag || cli.command.is_some() {
        return match engine::check(&opts, cli.setup) {
            Ok(msg) => {
                println!("{msg}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("dragonfly-mle: {e:#}");
                ExitCode::from(1)
            }
        };
    }
    match engine::run(&opts) {
        Ok(summary) => {
            println!("{summary}");
            match summary.losses() {
                Some(line) => {
                    eprintln!("{line}");
                    ExitCode::from(engine::EXIT_LOSSES)
                }
                None => ExitCode::SUCCESS,
            }
        }
        Err(e) => {
            eprintln!("dragonfly-mle: {e:#}");
            ExitCode::from(1)
        }
    }
}
