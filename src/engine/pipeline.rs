//! A run as a loop of pipelines: signals installed once, then each pipeline planned, wired,
//! started and joined; a reload that rebuilds ends one and starts the next.

use super::*;

/// The process's signal flags.
pub(super) struct Signals {
    stop: Arc<AtomicBool>,
    rotate: Arc<AtomicBool>,
    hup: Arc<AtomicBool>,
}

pub(super) fn run_configured(opts: &Options, cfg: Config) -> anyhow::Result<Summary> {
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
pub(super) fn run_pipeline(
    opts: &Options,
    cfg: &Config,
    sig: &Signals,
    carry: &mut crate::reconfig::Carry,
) -> anyhow::Result<Option<Config>> {
    let first = carry.generation == 0;
    let (stop, rotate, hup) = (&sig.stop, &sig.rotate, &sig.hup);
    // Outputs first: a bad output path is a startup error.
    let sinks = open_outputs(cfg, carry)?;
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

    let (reader_ios, worker_ios, links) = wire(n_inputs, shards);

    let (diag_tx, diag_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    if !first {
        // Tells the operator (and tests) from when events go by the new configuration.
        let _ = diag_tx.send(crate::diag::line(
            crate::diag::Kind::Reload,
            &[],
            &format!(
                "reload applied: pipeline {} runs the new configuration",
                carry.generation + 1
            ),
        ));
    }
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
    let startup_error = wait_ready(&ready_rx, shards);
    if let Some(e) = startup_error {
        drop(reader_ios);
        carry.stop_workers();
        let _ = writer.join();
        return Err(e);
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
        let shared = ReaderShared {
            stats: &stats,
            diag: &diag_tx,
            stop: &readers_stop,
            open_count: &open_count,
            marks: &marks,
            state_dir: &state_dir,
            rebuilding: &rebuilding,
            follow: opts.follow,
            cpu: cpu_for(r),
        };
        readers.push(spawn_reader(r, io, cfg, &shared, carry)?);
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
        if let Ok(end) = r.join() {
            ckpts.extend(end.ckpt);
            carry.take_reader_end(end.file_pos, end.followed, end.socket);
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
    carry.add_totals(&stats);
    // A stop signal during the rebuild's drain wins: the engine ends.
    if stop.load(std::sync::atomic::Ordering::Relaxed) {
        return Ok(None);
    }
    Ok(next.lock().unwrap_or_else(|e| e.into_inner()).take())
}

/// Opens `{log}`, `{stats}` and the user outputs. After a reload, an output that was open
/// already is appended to, not truncated again.
fn open_outputs(cfg: &Config, carry: &mut crate::reconfig::Carry) -> anyhow::Result<Vec<Sink>> {
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
    Ok(sinks)
}

/// The rings: reader r -> worker w (and back), worker w -> writer (and back).
fn wire(n_inputs: usize, shards: usize) -> (Vec<ReaderIo>, Vec<WorkerIo>, Vec<WorkerLink>) {
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

    (reader_ios, worker_ios, links)
}

/// Waits for every worker to say whether its scripts loaded and set up; the first error.
fn wait_ready(
    ready: &std::sync::mpsc::Receiver<Result<(), crate::lua::ScriptError>>,
    shards: usize,
) -> Option<anyhow::Error> {
    let mut startup_error = None;
    for _ in 0..shards {
        match ready.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                startup_error.get_or_insert(e.into());
            }
            Err(_) => {
                startup_error.get_or_insert(anyhow::anyhow!("a worker thread died during startup"));
            }
        }
    }
    startup_error
}

/// What every reader of a pipeline shares.
struct ReaderShared<'a> {
    stats: &'a Arc<Stats>,
    diag: &'a crate::source::Diag,
    stop: &'a Arc<AtomicBool>,
    open_count: &'a Arc<std::sync::atomic::AtomicUsize>,
    marks: &'a crate::source::checkpoint::Watermarks,
    state_dir: &'a std::path::Path,
    rebuilding: &'a Arc<AtomicBool>,
    follow: bool,
    cpu: Option<pin::Pin>,
}

/// Where a reader stopped: its checkpoint, and what the next pipeline resumes from.
struct ReaderEnd {
    ckpt: Option<crate::source::checkpoint::Checkpoint>,
    file_pos: Option<((String, PathBuf), u64)>,
    followed: Option<((String, PathBuf), crate::source::checkpoint::Spot)>,
    socket: Option<(
        (String, PathBuf, crate::config::types::IpcKind),
        crate::source::ipc::Kept,
    )>,
}

/// Starts the reader thread of input `r`, resuming where the previous pipeline stopped.
fn spawn_reader(
    r: usize,
    io: ReaderIo,
    cfg: &Config,
    shared: &ReaderShared<'_>,
    carry: &mut crate::reconfig::Carry,
) -> std::io::Result<std::thread::JoinHandle<ReaderEnd>> {
    let input = cfg.inputs[r].clone();
    let mut router = Router::new(
        r as u32,
        input.tag.clone(),
        io,
        Arc::clone(shared.stats),
        shared.diag.clone(),
        Arc::clone(shared.stop),
    );
    router.count_open_in(Arc::clone(shared.open_count));
    let cpu = shared.cpu.clone();
    let follow = shared.follow;
    let input_marks = Arc::clone(shared.marks);
    let mut ckpt = match &input.uri {
        InputUri::Tail { path, .. } => Some(crate::source::checkpoint::Checkpoint::new(
            shared.state_dir,
            &input.tag,
            r,
            path,
            Arc::clone(shared.marks),
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
    let rebuilding_r = Arc::clone(shared.rebuilding);
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
            ReaderEnd {
                ckpt,
                file_pos: pos_key.clone().zip(stopped.file_pos),
                followed: pos_key.zip(stopped.followed),
                socket: sock_key.zip(stopped.socket),
            }
        })
}
