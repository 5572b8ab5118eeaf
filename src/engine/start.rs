//! Starting a pipeline's threads: the writer, the workers (waiting for their scripts'
//! `setup()`), the readers (resuming where the previous pipeline stopped), the control thread
//! and the status line.

use super::*;
use crate::reconfig::GlobFile;
use std::sync::atomic::AtomicUsize;

/// What the threads of one pipeline share besides the rings.
pub(super) struct Shared {
    pub stats: Arc<Stats>,
    /// Per input: the sequence number below which every event is written.
    pub marks: crate::counters::Watermarks,
    /// Set once every reader has ended.
    pub readers_done: Arc<AtomicBool>,
    /// The readers stop when it is set (a stop signal or a rebuild).
    pub readers_stop: Arc<AtomicBool>,
    /// Set when the pipeline ends for a rebuild: outputs then wait without a grace.
    pub rebuilding: Arc<AtomicBool>,
    /// How many inputs have opened their file, socket or consumer.
    pub opened: Arc<AtomicUsize>,
    /// Where checkpoints live.
    pub state_dir: PathBuf,
    /// Set once the writer has taken its last `{log}` record (`WriterParts::diag_closed`).
    pub diag_closed: Arc<std::sync::Mutex<bool>>,
}

impl Shared {
    pub(super) fn new(stats: Arc<Stats>, inputs: usize, state_dir: PathBuf) -> Shared {
        Shared {
            stats,
            marks: Arc::new((0..inputs).map(|_| std::sync::atomic::AtomicU64::new(0)).collect()),
            readers_done: Arc::new(AtomicBool::new(false)),
            readers_stop: Arc::new(AtomicBool::new(false)),
            rebuilding: Arc::new(AtomicBool::new(false)),
            opened: Arc::new(AtomicUsize::new(0)),
            state_dir,
            diag_closed: Arc::default(),
        }
    }
}

/// Starts the writer: it merges the workers' records and writes the outputs.
pub(super) fn start_writer(
    (cfg, plan, sig): (&Config, &Plan, &Signals),
    sinks: Vec<Sink>,
    links: Vec<WorkerLink>,
    diag: std::sync::mpsc::Receiver<Vec<u8>>,
    shared: &Shared,
) -> std::io::Result<WriterThread> {
    let mut policies = vec![crate::sink::Policy::default(); 2];
    policies.extend(cfg.outputs.iter().map(|o| o.policy));
    let gate = crate::sink::Gate::new(
        Arc::clone(&sig.stop),
        Arc::clone(&shared.readers_done),
        Arc::clone(&shared.rebuilding),
        cfg.shutdown_grace,
    );
    let started = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = Writer::new(crate::sink::WriterParts {
        out: crate::sink::Outputs::new(sinks, policies, Arc::clone(&shared.stats), gate),
        ordered: plan.ordered.clone(),
        links,
        inputs: plan.inputs,
        stats: Arc::clone(&shared.stats),
        diag,
        diag_closed: Arc::clone(&shared.diag_closed),
        rotate: Arc::clone(&sig.rotate),
        stats_interval: cfg.stats_interval,
        marks: Arc::clone(&shared.marks),
        started: Arc::clone(&started),
    });
    let (done_tx, done) = std::sync::mpsc::channel::<()>();
    let handle = std::thread::Builder::new().name("dfm-writer".into()).spawn(move || {
        // Dropped when the writer returns (or unwinds): its end wakes `done`'s receiver.
        let _done = done_tx;
        writer.run()
    })?;
    Ok(WriterThread { handle, done, started })
}

/// The writer's thread, and what tells its end at once (the receiver's sender goes with the
/// thread: `recv` returns when the writer has returned).
pub(super) struct WriterThread {
    pub handle: std::thread::JoinHandle<Vec<Sink>>,
    pub done: std::sync::mpsc::Receiver<()>,
    /// Set once every worker is ready: truncating outputs are emptied then (see
    /// `Output::begin`), not when opened, so that a start that fails leaves them as they were.
    pub started: Arc<std::sync::atomic::AtomicBool>,
}

/// Starts the workers, or hands the next pipeline to those a rebuild kept, and waits until
/// every one has loaded its scripts and run their `setup()`; the first failure.
pub(super) fn start_workers(
    (cfg, plan): (&Config, &Plan),
    ios: Vec<WorkerIo>,
    stats: &Arc<Stats>,
    reload: &Arc<crate::lua::worker::Reload>,
    carry: &mut crate::reconfig::Carry,
    (stop, fallback): (&std::sync::atomic::AtomicBool, bool),
) -> anyhow::Result<()> {
    let (filters, analyzers) = script_specs(cfg);
    // Each script's text is read once for every worker; a fallback takes the texts that ran.
    let mut texts = std::collections::HashMap::new();
    for s in filters.iter().chain(&analyzers) {
        if texts.contains_key(&s.path) {
            continue;
        }
        let ran = carry.texts.get(&s.path).filter(|_| fallback).cloned();
        // (A file that cannot be read is left to the worker, which says so.)
        if let Some(t) = ran.or_else(|| std::fs::read(crate::privilege::host_path(&s.path)).ok().map(Arc::from)) {
            texts.insert(s.path.clone(), t);
        }
    }
    let texts: crate::lua::worker::Texts = Arc::new(texts);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    for (w, io) in ios.into_iter().enumerate() {
        let spec = WorkerSpec {
            index: w,
            cpu: plan.worker_cpu(w),
            filters: filters.clone(),
            analyzers: analyzers.clone(),
            input_tags: plan.input_tags.clone(),
            analyzer_tags: plan.analyzer_tags.clone(),
            output_tags: cfg.outputs.iter().map(|o| o.tag.clone()).collect(),
            ordered: plan.marks,
            redis: cfg.redis.clone(),
            redis_timeouts: cfg.redis_timeouts(),
            state: state_settings(cfg),
            reload: Arc::clone(reload),
            texts: Arc::clone(&texts),
        };
        let (st, tx) = (Arc::clone(stats), ready_tx.clone());
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
    let mut first_error = None;
    let start = std::time::Instant::now();
    let mut told = 0;
    let mut ready = 0;
    while ready < plan.shards {
        let e = match ready_rx.recv_timeout(std::time::Duration::from_millis(200)) {
            Ok(Ok(())) => {
                ready += 1;
                continue;
            }
            Ok(Err(e)) => e.into(),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                // A setup() that never returns cannot be interrupted: say what the start waits
                // for, every 10 s, and let a stop end the engine.
                let secs = start.elapsed().as_secs();
                if secs / 10 > told {
                    told = secs / 10;
                    crate::eprintln_safe!(
                        "dragonfly-mle: {} of {} workers still loading their scripts after {secs} s (a script's chunk or setup() that does not return? the last one started: {})",
                        plan.shards - ready,
                        plan.shards,
                        crate::lua::script::loading()
                    );
                }
                if stop.load(std::sync::atomic::Ordering::Relaxed) && secs >= 5 {
                    // The outputs' files this start made go, as with any start that fails.
                    crate::sink::file::remove_unstarted_outputs();
                    if carry.generation == 0 {
                        crate::eprintln_safe!("dragonfly-mle: stopped while scripts' setup() had not returned");
                        crate::lua::managed::stop();
                        std::process::exit(1);
                    }
                    // A reload that rebuilt the pipeline: the previous one wrote everything it
                    // read (the next run reads on from its checkpoints), and the run ends as a
                    // stuck worker's does: its report in {log}, a last stats line, the summary.
                    let msg = format!(
                        "stopped while {} of {} workers were still in the reloaded configuration's scripts (the last one started: {}); exiting without them: nothing read is unwritten, the next run reads on from the checkpoints (exit status {})",
                        plan.shards - ready,
                        plan.shards,
                        crate::lua::script::loading(),
                        super::EXIT_LOSSES
                    );
                    crate::eprintln_safe!("dragonfly-mle: {msg}");
                    super::pipeline::forced_exit_records(
                        stats,
                        carry,
                        &cfg.log_dir,
                        (crate::diag::Kind::WorkerStuck, &[], &msg),
                    );
                    crate::lua::managed::stop();
                    std::process::exit(i32::from(super::EXIT_LOSSES));
                }
                continue;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                anyhow::anyhow!("a worker thread died during startup")
            }
        };
        ready += 1;
        first_error.get_or_insert(e);
    }
    match first_error {
        Some(e) => Err(e),
        None => {
            carry.texts = texts;
            Ok(())
        }
    }
}

/// Whether wildcard `tail://` input `r` (reading the file `file`) is a file that began to
/// match while the engine was stopped: it has no checkpoint of its own, while other matches of
/// its pattern have theirs from the last run. Suricata wrote all of it after that run (a new
/// `eve.N.json` of a thread), so it is read from its start, not followed from its end. A file
/// a checkpoint of the last run is about, or one named as a rotation of another match
/// (`eve.0.json.1`), is not new: its match's reader takes care of it.
fn new_since_last_run(
    cfg: &Config,
    r: usize,
    file: Option<crate::source::checkpoint::FileId>,
    state_dir: &std::path::Path,
    marks: &crate::source::checkpoint::Watermarks,
) -> bool {
    use crate::source::checkpoint::Checkpoint;
    let input = &cfg.inputs[r];
    let (Some(glob), Some(file)) = (&input.glob, file) else {
        return false;
    };
    let load = |o: usize| {
        let i = &cfg.inputs[o];
        Checkpoint::new(state_dir, &i.tag, o, i.uri.path(), Arc::clone(marks)).load()
    };
    if load(r).is_some() {
        return false;
    }
    let name = input
        .uri
        .path()
        .file_name()
        .map(|n| n.as_encoded_bytes().to_vec())
        .unwrap_or_default();
    let mut others_checkpointed = false;
    for (o, other) in cfg.inputs.iter().enumerate() {
        if o == r || other.glob.as_ref() != Some(glob) {
            continue;
        }
        let theirs = other
            .uri
            .path()
            .file_name()
            .map(|n| n.as_encoded_bytes())
            .unwrap_or_default();
        if crate::source::tail::rotation_suffix(theirs, &name).is_some() {
            return false;
        }
        match load(o) {
            // (The same inode with other first bytes is another file: the inode given again.)
            Some(spot) if spot.id == file && spot.fp.begins(&crate::privilege::host_path(input.uri.path())) => {
                return false;
            }
            Some(_) => others_checkpointed = true,
            None => {}
        }
    }
    others_checkpointed
}

/// A wildcard match as a pipeline lists it: its path and the file there (`at_path`) or the
/// file it was before it was renamed away, with the first bytes of a file at the path (a file
/// deleted later, its inode given to a new file, is then not taken for that new file).
fn listed_file(
    (pattern, tag): (&std::path::Path, &str),
    path: &std::path::Path,
    file: crate::source::checkpoint::FileId,
    at_path: bool,
) -> GlobFile {
    let fp = match at_path {
        true => crate::source::checkpoint::Fingerprint::of_file(&crate::privilege::host_path(path), file),
        false => Default::default(),
    };
    GlobFile {
        pattern: pattern.to_path_buf(),
        tag: tag.to_string(),
        path: path.to_path_buf(),
        file,
        fp,
        finished: false,
    }
}

/// For a new match of a wildcard `tail://` input (its `pattern` and `tag`, reading `file`, at
/// `here` on the host): which reader of the previous pipeline had that file (`before`) and where
/// its checkpoint (`load`) is in it. `Some(None)`: that reader went past it (finished it);
/// `None`: no reader had it, the file is new. A file is known by its inode and its first bytes
/// (those seen when it was listed or finished): another file with the inode (a deleted
/// file's, given again) is not it (a listed match's file deleted, its inode given to a new
/// file, was taken for that match's, "finished", and the new file followed from its end: a
/// whole rotated file of 520 events lost without a word in a dateext audit). Likewise a
/// checkpoint in another file that had the inode (2 runs in 7 of a dateext audit read a
/// rotated file twice): the next reader that had the file is looked at.
fn reader_that_had(
    before: &[GlobFile],
    (pattern, tag): (Option<&std::path::PathBuf>, &str),
    file: Option<crate::source::checkpoint::FileId>,
    here: &std::path::Path,
    load: impl Fn(&GlobFile) -> Option<crate::source::checkpoint::Spot>,
) -> Option<Option<crate::source::checkpoint::Spot>> {
    for g in before
        .iter()
        .filter(|g| Some(&g.pattern) == pattern && g.tag != tag && Some(g.file) == file && g.fp.begins(here))
    {
        match load(g).filter(|spot| spot.id == g.file) {
            Some(spot) if !spot.fp.begins(here) => continue,
            Some(spot) => return Some(Some(spot)),
            // No checkpoint in it: a reader that finished the file went past it. A match only
            // listed with the file may never have reached it (still on the file before when
            // it stopped: the new file, empty when listed, was followed from its end and a
            // whole rotated file of 1,050 events lost without a word in a dateext audit).
            None if g.finished => return Some(None),
            None => continue,
        }
    }
    None
}

/// Starts a reader thread per input, each resuming where the previous pipeline's reader of
/// the same input stopped.
pub(super) fn start_readers(
    (cfg, plan, opts): (&Config, &Plan, &Options),
    ios: Vec<ReaderIo>,
    shared: &Shared,
    diag: &crate::source::Diag,
    carry: &mut crate::reconfig::Carry,
) -> std::io::Result<Vec<std::thread::JoinHandle<crate::source::ReaderEnd>>> {
    let mut readers = Vec::new();
    let tags_now: Vec<&str> = cfg.inputs.iter().map(|i| i.tag.as_str()).collect();
    carry.forget_gone_matches(cfg, &shared.state_dir, &shared.marks);
    let mut before = std::mem::take(&mut carry.glob_files);
    // The file each input reads now, for the wildcard matches' siblings.
    let files: Vec<Option<crate::source::checkpoint::FileId>> = cfg
        .inputs
        .iter()
        .map(|i| {
            std::fs::metadata(crate::privilege::host_path(i.uri.path()))
                .ok()
                .map(|m| crate::source::checkpoint::FileId::of(&m))
        })
        .collect();
    // Also the files the matches' readers left for the next one at their path (rotations),
    // and the file a reader is still on when it is no longer at the path (renamed after the
    // matches were listed, or followed until its writer reopens the path). A file can be
    // written, rotated and read whole between two rebuilds, never at its path when one
    // started: renamed into a matching name later, it is not new either.
    for (r, input) in cfg.inputs.iter().enumerate() {
        let (Some(pattern), InputUri::Tail { .. }) = (&input.glob, &input.uri) else {
            continue;
        };
        let Some(s) = carry.stopped_of(input) else { continue };
        let still_on = s
            .followed
            .filter(|spot| Some(spot.id) != files[r] && spot.id != Default::default())
            .map(|spot| (spot.id, spot.fp));
        for &(file, fp) in s.finished.iter().chain(&still_on) {
            before.push(GlobFile {
                pattern: pattern.clone(),
                tag: input.tag.clone(),
                path: input.uri.path().to_path_buf(),
                file,
                fp,
                finished: true,
            });
        }
    }
    for (r, io) in ios.into_iter().enumerate() {
        let mut input = cfg.inputs[r].clone();
        let file = files[r];
        let mut handed = None;
        if let (Some(pattern), crate::config::InputUri::Tail { .. }) = (&input.glob, &input.uri) {
            // A match gone from its path now (renamed while the rebuild was under way) keeps
            // the file it was: renamed into a matching name, that file is then handed over
            // from this input's checkpoint, not read again from its start.
            let path = input.uri.path();
            let f = file.or_else(|| {
                before
                    .iter()
                    .find(|g| !g.finished && g.pattern == *pattern && g.tag == input.tag && g.path == path)
                    .map(|g| g.file)
            });
            if let Some(f) = f {
                carry
                    .glob_files
                    .push(listed_file((pattern, &input.tag), path, f, file.is_some()));
            }
        }
        // A file that began to match a wildcard `tail://` after the start is new: all of it
        // is unread (without a checkpoint it would be followed from its end, losing what
        // Suricata wrote before the rebuild noticed it) -- unless it is a file another match
        // was following, renamed into a name the pattern matches (a rotation such as
        // eve.0.json -> eve.0-20261205.json): then it goes on where that reader's checkpoint
        // is (or, that reader having finished it, from its end).
        let here = crate::privilege::host_path(input.uri.path()).into_owned();
        if carry.generation > 0
            && input.glob.is_some()
            && !carry.stopped.keys().any(|(tag, _)| *tag == input.tag)
            && let crate::config::InputUri::Tail { from_start, .. } = &mut input.uri
        {
            let known = reader_that_had(&before, (input.glob.as_ref(), &input.tag), file, &here, |g| {
                crate::source::checkpoint::Checkpoint::new(
                    &shared.state_dir,
                    &g.tag,
                    r,
                    &g.path,
                    Arc::clone(&shared.marks),
                )
                .load()
            });
            match known {
                Some(spot) => {
                    handed = spot;
                    *from_start = false;
                }
                None => {
                    *from_start = true;
                    // Rotated away since the control thread saw it begin to match (while the
                    // rebuild for it was under way): read it from its rotated name first.
                    let seen = carry
                        .glob_seen
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .get(input.uri.path())
                        .copied();
                    if let Some(seen) = seen
                        && Some(seen) != file
                    {
                        handed = Some(crate::source::checkpoint::Spot::start_of(seen));
                    }
                }
            }
        }
        if carry.generation == 0
            && let crate::config::InputUri::Tail { from_start, .. } = &mut input.uri
            && new_since_last_run(cfg, r, file, &shared.state_dir, &shared.marks)
        {
            *from_start = true;
        }
        let setup = crate::source::ReaderSetup {
            stats: Arc::clone(&shared.stats),
            diag: diag.clone(),
            stop: Arc::clone(&shared.readers_stop),
            opened: Arc::clone(&shared.opened),
            marks: Arc::clone(&shared.marks),
            state_dir: shared.state_dir.clone(),
            rebuilding: Arc::clone(&shared.rebuilding),
            follow: opts.follow,
            max_line: cfg.max_line,
            poll: cfg.tail_poll,
            grace: cfg.shutdown_grace,
            cpu: plan.cpu(r),
        };
        let mut resume = carry.resume(&input, &tags_now);
        if handed.is_some() {
            resume.followed = handed;
        }
        if let Some(pattern) = &input.glob {
            resume.siblings = (0..cfg.inputs.len())
                .filter(|&o| o != r && cfg.inputs[o].glob == input.glob)
                .filter_map(|o| files[o])
                .collect();
            resume.pattern = Some(pattern.clone());
        }
        readers.push(crate::source::spawn_reader(r, input, io, setup, resume)?);
    }
    Ok(readers)
}

/// Starts the control thread: reload requests (SIGHUP, `--watch`) and the stop signal.
pub(super) fn start_control(
    (opts, cfg, sig): (&Options, &Config, &Signals),
    shared: &Shared,
    next: &Arc<std::sync::Mutex<Option<Config>>>,
    reload: Arc<crate::lua::worker::Reload>,
    diag: crate::source::Diag,
    glob_seen: crate::reconfig::GlobSeen,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let (filters, analyzers) = script_specs(cfg);
    let paths: Vec<PathBuf> = filters.iter().chain(&analyzers).map(|s| s.path.clone()).collect();
    let mut control = crate::reconfig::Control {
        hup: Arc::clone(&sig.hup),
        stop: Arc::clone(&sig.stop),
        readers_stop: Arc::clone(&shared.readers_stop),
        rebuilding: Arc::clone(&shared.rebuilding),
        next: Arc::clone(next),
        watch: opts.watch.then(|| crate::reconfig::watched(cfg)),
        globs: crate::reconfig::globs(cfg),
        glob_seen,
    };
    let done = Arc::clone(&shared.readers_done);
    let (opts, running, stats) = (opts.clone(), cfg.clone(), Arc::clone(&shared.stats));
    std::thread::Builder::new().name("dfm-control".into()).spawn(move || {
        let next = Arc::clone(&control.next);
        control.run(&done, |why| {
            reload_request(why, &opts, &running, &paths, &reload, &next, (&diag, &stats))
        })
    })
}

/// A live status line (and the progress of file inputs) when stderr is a terminal.
pub(super) fn status_line(
    opts: &Options,
    cfg: &Config,
    stats: &Arc<Stats>,
) -> Option<crate::metrics::status::StatusLine> {
    let sized: Vec<crate::metrics::status::Sized> = cfg
        .inputs
        .iter()
        .enumerate()
        .filter_map(|(i, input)| match &input.uri {
            InputUri::File { path, .. } if !opts.follow => std::fs::metadata(crate::privilege::host_path(path))
                .ok()
                .filter(|_| !crate::source::file::is_gzip(path).unwrap_or(true))
                .map(|m| (i, m.len())),
            _ => None,
        })
        .collect();
    crate::metrics::status::StatusLine::start(Arc::clone(stats), sized)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::checkpoint::{FileId, Fingerprint, Spot};

    /// Which reader had a new wildcard match's file: one with a checkpoint in it, one that went
    /// past it, or none. A match listed with the file's inode but other first bytes (its file
    /// deleted, the inode given to this file) is not one: that file was followed from its
    /// end, what it held lost.
    #[test]
    fn the_reader_that_had_a_new_matchs_file() {
        let dir = tempfile::tempdir().unwrap();
        let here = dir.path().join("eve.3.json");
        std::fs::write(&here, b"{\"b\":1}\n{\"b\":2}\n").unwrap();
        let file = FileId::of(&std::fs::metadata(&here).unwrap());
        let fp = Fingerprint::of(b"{\"b\":1}\n");
        let pattern = dir.path().join("eve.*.json");
        let listed = |finished: bool, fp: Fingerprint| GlobFile {
            pattern: pattern.clone(),
            tag: "eve-2".into(),
            path: dir.path().join("eve.2.json"),
            file,
            fp,
            finished,
        };
        let spot = |fp: Fingerprint| Spot {
            id: file,
            fp,
            offset: 8,
            line: 1,
        };
        let had = |before: &[GlobFile], checkpoint: Option<Spot>| {
            reader_that_had(before, (Some(&pattern), "eve-3"), Some(file), &here, |_| checkpoint)
        };
        let other = Fingerprint::of(b"{\"a\":1}\n");
        // Listed with this inode and other first bytes, its checkpoint gone: another file.
        assert_eq!(had(&[listed(false, other)], None), None);
        // Listed with this file, no checkpoint in it: that reader may never have reached it
        // (it was still on the file before). Finished by it: from its end.
        assert_eq!(had(&[listed(false, fp)], None), None);
        assert_eq!(had(&[listed(true, fp)], None), Some(None));
        // A checkpoint in it: from there.
        assert_eq!(
            had(&[listed(false, Fingerprint::default())], Some(spot(fp))),
            Some(Some(spot(fp)))
        );
        // A file listed, then rewritten in place (as a deleted file's inode given to a new
        // file): the new content is another file.
        let entry = listed_file((&pattern, "eve-2"), &here, file, true);
        assert_eq!(entry.fp, Fingerprint::of(b"{\"b\":1}\n{\"b\":2}\n"));
        // (A checkpoint of the start of the file, its first bytes not known yet.)
        let start = Spot {
            offset: 0,
            line: 0,
            ..spot(Fingerprint::default())
        };
        assert_eq!(had(std::slice::from_ref(&entry), Some(start)), Some(Some(start)));
        std::fs::write(&here, b"{\"c\":1}\n").unwrap();
        assert_eq!(
            FileId::of(&std::fs::metadata(&here).unwrap()),
            file,
            "rewritten in place"
        );
        assert_eq!(had(&[entry], Some(start)), None);
        // A checkpoint in another file that had this inode: not this file's.
        assert_eq!(had(&[listed(false, Fingerprint::default())], Some(spot(other))), None);
        // A finished file with other first bytes: another file.
        assert_eq!(had(&[listed(true, other)], None), None);
        // Another pattern's, or this input's own: not looked at.
        assert_eq!(
            reader_that_had(
                &[listed(true, fp)],
                (Some(&dir.path().join("x.*")), "eve-3"),
                Some(file),
                &here,
                |_| None
            ),
            None
        );
        assert_eq!(
            reader_that_had(
                &[listed(true, fp)],
                (Some(&pattern), "eve-2"),
                Some(file),
                &here,
                |_| None
            ),
            None
        );
    }
}
