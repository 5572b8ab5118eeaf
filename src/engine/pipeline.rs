//! A run as a loop of pipelines (the signals were installed before the configuration was
//! read): each pipeline planned, wired, started and joined; a reload that rebuilds ends one
//! and starts the next.

use super::*;

pub(super) fn run_configured(opts: &Options, cfg: Config, sig: &Signals) -> anyhow::Result<Summary> {
    let started = Instant::now();
    // One pipeline per configuration: a reload that changes inputs, outputs or analyzers
    // drains the running one and builds the next (see `reconfig`).
    let mut carry = crate::reconfig::Carry {
        run_started: Some(started),
        ..Default::default()
    };
    let mut cfg = cfg;
    // The configuration that ran before the last reload, while the new one has not started.
    let mut previous: Option<Config> = None;
    loop {
        match run_pipeline(opts, &cfg, sig, &mut carry) {
            Ok(Outcome::Next(next)) => {
                previous = Some(std::mem::replace(&mut cfg, *next));
                carry.generation += 1;
            }
            Ok(Outcome::Ended) => break,
            // A reload whose configuration passed the checks but could not start (an output
            // that cannot be opened, a script whose setup() fails): the previous one runs again.
            Ok(Outcome::NotStarted(e))
                if previous.is_some() && !sig.stop.load(std::sync::atomic::Ordering::Relaxed) =>
            {
                // Reported (stderr and `{log}`) by the fallback pipeline, as it starts.
                let msg = format!(
                    "the new configuration could not start, the previous one runs again (its scripts' state starts afresh): {e:#}"
                );
                carry.fallback = Some(msg);
                cfg = previous.take().expect("checked above");
                carry.generation += 1;
            }
            Ok(Outcome::NotStarted(e)) | Err(e) => {
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
        log_errors: carry.log_errors,
        dropped: carry.dropped,
        missing_inputs: carry.missing_inputs,
    })
}

/// How a pipeline ended.
pub(super) enum Outcome {
    /// Its inputs ended, or a signal stopped it.
    Ended,
    /// A reload replaces its configuration (everything read is written).
    Next(Box<Config>),
    /// It could not start (its outputs, its scripts): nothing was read. The first pipeline's
    /// is a startup error; a later one's, the previous configuration's turn again.
    NotStarted(anyhow::Error),
}

/// Runs one pipeline until its inputs end, a signal stops it, or a reload replaces its
/// configuration.
pub(super) fn run_pipeline(
    opts: &Options,
    cfg: &Config,
    sig: &Signals,
    carry: &mut crate::reconfig::Carry,
) -> anyhow::Result<Outcome> {
    let first = carry.generation == 0;
    // Outputs first: a bad output path is a startup error.
    let mut notes = Vec::new();
    let sinks = match open_outputs(cfg, carry, &mut notes) {
        Ok(s) => s,
        Err(e) => return Ok(Outcome::NotStarted(e)),
    };
    std::env::set_current_dir(crate::privilege::host_path(&cfg.root))
        .with_context(|| format!("cannot enter {}", cfg.root.display()))?;
    let plan = Plan::new(opts, cfg, carry.workers.len());
    let shared = Shared::new(plan.stats(cfg), plan.inputs, run_dir(opts, cfg));
    let rings = wire(plan.inputs, plan.shards);

    let (diag_tx, diag_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    for line in notes {
        let _ = diag_tx.send(line);
    }
    let fallback = carry.fallback.take();
    if let Some(why) = &fallback {
        let line = crate::diag::line(crate::diag::Kind::ReloadError, &[], why);
        crate::diag::stderr_report(&line);
        let _ = diag_tx.send(line);
        // Counted with the reload errors (of worker 0, as a refused configuration is).
        if let Some(w) = shared.stats.workers.first() {
            w.reload_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
    let writer = start_writer((cfg, &plan, sig), sinks, rings.links, diag_rx, &shared)?;
    if first {
        load_modules(cfg, &diag_tx);
    }
    for w in &cfg.warnings {
        let line = crate::diag::line(crate::diag::Kind::ConfigWarning, &[], w);
        crate::diag::stderr_report(&line);
        let _ = diag_tx.send(line);
    }
    let http = match start_http(opts, cfg, &shared.stats, &diag_tx, carry.http.take()) {
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
    let reload = Arc::new(crate::lua::worker::Reload::default());
    let started = start_workers(
        (cfg, &plan),
        rings.workers,
        &shared.stats,
        &reload,
        carry,
        (&sig.stop, fallback.is_some()),
    );
    if let Err(e) = started {
        drop(rings.readers);
        carry.stop_workers();
        let _ = writer.handle.join();
        return Ok(Outcome::NotStarted(e));
    }
    if !first && fallback.is_none() {
        // Tells the operator (and tests) from when events go by the new configuration: once
        // it has started (a new setup() that fails is a `reload_error`, and nothing else).
        let what = format!(
            "reload applied: pipeline {} runs the new configuration",
            carry.generation + 1
        );
        let _ = diag_tx.send(crate::diag::line(crate::diag::Kind::Reload, &[], &what));
    }
    writer.started.store(true, std::sync::atomic::Ordering::Release);
    writer.handle.thread().unpark();
    if opts.verbose {
        crate::eprintln_safe!("dragonfly-mle: {}", plan.describe());
    }
    let readers = start_readers((cfg, &plan, opts), rings.readers, &shared, &diag_tx, carry)?;
    // Sockets of inputs the new configuration removed.
    carry.close_sockets();
    let dropped = match first {
        true => drop_privileges(opts, cfg, &shared, plan.shards, &diag_tx),
        false => Ok(()),
    };
    if dropped.is_err() {
        sig.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    let status = status_line(opts, cfg, &shared.stats);
    let next = Arc::new(std::sync::Mutex::new(None));
    let reloaded = Arc::clone(&reload);
    let control = start_control(
        (opts, cfg, sig),
        &shared,
        &next,
        reload,
        diag_tx.clone(),
        Arc::clone(&carry.glob_seen),
    )?;
    drop(diag_tx);

    join(
        readers,
        &cfg.inputs,
        control,
        writer,
        &shared,
        carry,
        (&sig.stop, &cfg.log_dir),
    );
    drop(status);
    // The scripts the pipeline reloaded run their new texts: a fallback to it takes those.
    let applied = std::mem::take(&mut *reloaded.applied.lock().unwrap_or_else(|e| e.into_inner()));
    if !applied.is_empty() {
        let mut texts = (*carry.texts).clone();
        texts.extend(applied);
        carry.texts = Arc::new(texts);
    }
    dropped?;
    // A stop signal during the rebuild's drain wins: the engine ends.
    if sig.stop.load(std::sync::atomic::Ordering::Relaxed) {
        return Ok(Outcome::Ended);
    }
    Ok(match next.lock().unwrap_or_else(|e| e.into_inner()).take() {
        Some(c) => {
            // The endpoint stays open for the next pipeline.
            carry.http = http;
            Outcome::Next(Box::new(c))
        }
        None => Outcome::Ended,
    })
}

/// Waits for the readers to end, then for the control thread, the workers' end of this
/// pipeline and the writer; saves the final checkpoints (everything read is written then) and
/// adds the pipeline's totals.
fn join(
    readers: Vec<std::thread::JoinHandle<crate::source::ReaderEnd>>,
    inputs: &[crate::config::InputConfig],
    control: std::thread::JoinHandle<()>,
    writer: super::start::WriterThread,
    shared: &Shared,
    carry: &mut crate::reconfig::Carry,
    (stop, log_dir): (&std::sync::atomic::AtomicBool, &std::path::Path),
) {
    let mut ckpts = Vec::new();
    let mut stop_seen = None;
    for (r, input) in readers.into_iter().zip(inputs) {
        // A reader may wait for room in the ring of a worker stuck in a script (or failed):
        // the stop must not wait for it for ever (SIGTERM was ignored for good).
        while !r.is_finished() {
            std::thread::sleep(std::time::Duration::from_millis(50));
            exit_if_stuck_or_failed(shared, stop, &mut stop_seen, carry, log_dir);
        }
        if let Ok(end) = r.join() {
            ckpts.extend(end.ckpt);
            carry.reader_stopped(input, end.stopped);
        }
    }
    shared.readers_done.store(true, std::sync::atomic::Ordering::Relaxed);
    control.thread().unpark();
    let _ = control.join();
    // The workers end this pipeline (and wait for the next one); the writer ends once all have.
    wait_for_writer(&writer, shared, stop, carry, log_dir);
    let _ = writer.handle.join();
    // A failed worker's rings are abandoned, which ends the writer as a worker's end does.
    exit_if_stuck_or_failed(shared, stop, &mut stop_seen, carry, log_dir);
    for mut c in ckpts {
        if let Err(e) = c.save(true) {
            crate::eprintln_safe!("dragonfly-mle: cannot save {}: {e}", c.state_path.display());
        }
    }
    carry.add_totals(&shared.stats);
}

/// What a forced exit leaves, as a normal end does: the report in `{log}` and a last stats
/// line (appended to their files directly: the writer that owns them is waiting for the stuck
/// worker), and the summary on stdout.
pub(super) fn forced_exit_records(
    stats: &crate::metrics::Stats,
    carry: &mut crate::reconfig::Carry,
    log_dir: &std::path::Path,
    (kind, fields, msg): (crate::diag::Kind, &[(&str, &str)], &str),
) {
    let append = |name: &str, line: &[u8]| {
        if let Err(e) = super::append_own(log_dir, name, line) {
            crate::eprintln_safe!("dragonfly-mle: cannot append to {name}: {e}");
        }
    };
    append(
        "dragonfly-mle.log",
        &crate::diag::log_line(&crate::diag::line(kind, fields, msg)),
    );
    append("dragonfly-mle-stats.log", &stats.line());
    carry.add_totals(stats);
    let summary = Summary {
        read: carry.read,
        written: carry.written,
        invalid: carry.invalid,
        script_errors: carry.script_errors,
        seconds: carry.run_started.unwrap_or(stats.started).elapsed().as_secs_f64(),
        output_errors: carry.output_errors,
        log_errors: carry.log_errors,
        dropped: carry.dropped,
        missing_inputs: std::mem::take(&mut carry.missing_inputs),
    };
    crate::println_safe!("{summary}");
}

/// How long a stop waits for a worker stuck in a script before the engine exits without it.
const STUCK_STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// How long a worker must have been on one batch without a blocking call of a script starting
/// (`counters::still_busy`: a Redis command, `http_get`, `dnslookup`, each bounded by its
/// timeouts) to count as stuck for good at a stop. A worker on one batch for
/// `counters::STALL_BLOCKING_MS` whatever it called (Redis commands in an endless loop) is
/// stuck for good too.
const STUCK_EXIT_SECS: u64 = 30;

/// Waits until the writer has finished. A worker stuck in a script (a `loop()` that never
/// returns: no Lua code can be interrupted inside a compiled loop) would keep it from ever
/// finishing: once a stop was asked and some worker has been on one batch for
/// [`STUCK_EXIT_SECS`] without starting a blocking call, or for 60 s whatever it called (and
/// the stop has waited
/// [`STUCK_STOP_WAIT`]), the engine exits with status 3 at once. What the
/// writer had not written is lost for this run; checkpoints and commits never passed it, so a
/// restart reads it again.
fn wait_for_writer(
    writer: &super::start::WriterThread,
    shared: &Shared,
    stop: &std::sync::atomic::AtomicBool,
    carry: &mut crate::reconfig::Carry,
    log_dir: &std::path::Path,
) {
    let mut stop_seen = None;
    while !writer.handle.is_finished() {
        match writer.done.recv_timeout(std::time::Duration::from_millis(50)) {
            // The writer has returned (its thread ends now).
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) | Ok(()) => return,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        exit_if_stuck_or_failed(shared, stop, &mut stop_seen, carry, log_dir);
    }
}

/// Exits the engine with status 3 when a worker failed (`counters::WORKER_FAILED`: a panic,
/// an engine defect; its shard's events were dropped without a word), or when a stop was
/// asked (first seen at `stop_seen`) and a worker is stuck for good (see
/// [`wait_for_writer`]).
fn exit_if_stuck_or_failed(
    shared: &Shared,
    stop: &std::sync::atomic::AtomicBool,
    stop_seen: &mut Option<std::time::Instant>,
    carry: &mut crate::reconfig::Carry,
    log_dir: &std::path::Path,
) {
    let (kind, worker, script, msg) = if let Some((w, failed)) = crate::counters::WORKER_FAILED.get() {
        let msg = format!(
            "worker {w} failed: {failed} (an engine defect: please report it); exiting: events not yet written are lost for this run and read again by the next (exit status {EXIT_LOSSES})"
        );
        (crate::diag::Kind::WorkerFailed, *w, None, msg)
    } else {
        if !stop.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let since = *stop_seen.get_or_insert_with(std::time::Instant::now);
        let stuck = shared.stats.stuck_workers();
        let Some((k, secs)) = stuck.iter().find(|(_, secs)| *secs >= STUCK_EXIT_SECS) else {
            return;
        };
        if since.elapsed() < STUCK_STOP_WAIT {
            return;
        }
        // Every worker stuck as long is named (the record's `worker` is the first).
        let others: Vec<String> = (stuck.iter())
            .filter(|(w, s)| w != k && *s >= STUCK_EXIT_SECS)
            .map(|(w, _)| w.to_string())
            .collect();
        let also = match others.len() {
            0 => String::new(),
            _ => format!(" (and worker {})", others.join(", worker ")),
        };
        let script = shared.stats.worker_script(*k);
        let msg = format!(
            "worker {k}{also} has been stuck in a script for {secs} s{} (a loop() that does not return, or a state near its memory limit collecting on every event?); exiting without it: events not yet written are lost for this run and read again by the next (exit status {EXIT_LOSSES})",
            script
                .as_deref()
                .map_or(String::new(), |s| format!(", last in a call of {s}"))
        );
        (crate::diag::Kind::WorkerStuck, *k, script, msg)
    };
    crate::eprintln_safe!("dragonfly-mle: {msg}");
    let worker = worker.to_string();
    let mut fields = vec![("worker", worker.as_str())];
    if let Some(s) = script.as_deref() {
        fields.push(("script", s));
    }
    forced_exit_records(&shared.stats, carry, log_dir, (kind, &fields, &msg));
    crate::lua::managed::stop();
    std::process::exit(i32::from(EXIT_LOSSES));
}
