//! Whole-configuration reload (SIGHUP, `--watch`). A request reads config.lua again; scripts
//! alone changed: the workers reload them between two events (their other states keep
//! running). Inputs, outputs or analyzer entries changed: the new configuration is checked
//! first (settings, script loading, what `check` verifies), and if anything is wrong the
//! running one stays and the reason is logged. If it is good, the running pipeline is drained:
//! readers stop at a line boundary (tail checkpoints saved, `file://` positions kept, Kafka
//! offsets committed), every event read is processed and written, and the pipeline is built
//! again from the new configuration, where each kept input resumes exactly where it stopped.
//! The worker threads stay and keep the Lua states of unchanged scripts. Nothing is lost and
//! nothing is written twice.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::{Config, InputConfig, InputUri};

/// The file each wildcard match was when the control thread first saw it match (`Carry::glob_seen`).
pub(crate) type GlobSeen = Arc<Mutex<HashMap<PathBuf, crate::source::checkpoint::FileId>>>;

/// What one pipeline hands to the next across a reload, and the run's totals.
#[derive(Default)]
pub(crate) struct Carry {
    /// Pipelines built so far, minus one.
    pub generation: u64,
    /// Where each input (by tag and URI) stopped: a `file://` input's offset (or, followed,
    /// its file and offset), a socket input's socket kept open.
    pub stopped: HashMap<(String, InputUri), crate::source::Stopped>,
    /// Outputs opened already: a truncating one (`<`) is not truncated again.
    pub opened: HashSet<PathBuf>,
    pub read: u64,
    pub written: u64,
    pub invalid: u64,
    pub script_errors: u64,
    pub output_errors: u64,
    /// Records of `{log}` and `{stats}` that could not be written.
    pub log_errors: u64,
    pub dropped: u64,
    pub missing_inputs: Vec<String>,
    /// When the run (its first pipeline) started: the summary's seconds, a forced exit's too.
    pub run_started: Option<std::time::Instant>,
    /// The files the wildcard `tail://` inputs followed when their pipeline started. A new
    /// match that is one of them under a new name (rotated into a name the pattern matches)
    /// takes over where its reader was, instead of reading it again (so does one of the files
    /// their readers finished, `Stopped::finished`).
    pub glob_files: Vec<GlobFile>,
    /// The file each wildcard match was when the control thread first saw it match (path ->
    /// file), kept while it matches: a new match rotated away while the rebuild for it was under
    /// way is read from its rotated name, not lost.
    pub glob_seen: GlobSeen,
    /// Why the configuration a reload asked for could not start (the previous one runs
    /// again): reported by the next pipeline.
    pub fallback: Option<String>,
    /// The HTTP endpoint of the pipeline that ended for a rebuild, with the address it was
    /// asked for: the next pipeline serves on it if it asks for the same, so that clients
    /// (a health probe) are answered during the rebuild, not reset.
    pub http: Option<(String, crate::metrics::http::HttpServer)>,
    /// The texts the running pipeline's scripts were loaded from (and reloaded to): a
    /// configuration that cannot start falls back to these, not to what the files hold now.
    pub texts: crate::lua::worker::Texts,
    /// The worker threads, which outlive a rebuild with their Lua states, and where each is
    /// sent its next pipeline.
    pub workers: Vec<(
        std::thread::JoinHandle<()>,
        std::sync::mpsc::Sender<crate::lua::worker::NextPipeline>,
    )>,
}

/// A file a wildcard `tail://` match read.
pub(crate) struct GlobFile {
    pub pattern: PathBuf,
    pub tag: String,
    /// The match's path.
    pub path: PathBuf,
    pub file: crate::source::checkpoint::FileId,
    /// Its first bytes, for a file the reader finished (`len` 0 for the file at the path).
    pub fp: crate::source::checkpoint::Fingerprint,
    /// Read to its end and left for the next file at the path (a rotation).
    pub finished: bool,
}

impl Carry {
    /// Forgets the wildcard `tail://` matches the configuration `cfg` no longer has whose file is
    /// gone (deleted, as logrotate's `rotate N` does): their checkpoints (one state file per
    /// rotated match, kept for good) are removed, also those earlier runs left (a match deleted
    /// while the engine was stopped, or after a crash: 30 to 46 files piled up in 12 `kill -9`
    /// restarts of an audit's run), and what was kept of their readers. A match whose file is
    /// still somewhere (renamed, compressed) keeps its checkpoint: it may match again or be
    /// handed over.
    pub(crate) fn forget_gone_matches(
        &mut self,
        cfg: &Config,
        state_dir: &Path,
        marks: &crate::source::checkpoint::Watermarks,
    ) {
        let patterns: Vec<&PathBuf> = cfg
            .inputs
            .iter()
            .filter(|i| matches!(i.uri, InputUri::Tail { .. }))
            .filter_map(|i| i.glob.as_ref())
            .collect();
        if patterns.is_empty() {
            return;
        }
        let current: HashSet<&Path> = cfg.inputs.iter().map(|i| i.uri.path()).collect();
        let old_match = |path: &Path| {
            !current.contains(path)
                && patterns
                    .iter()
                    .any(|p| p.parent() == path.parent() && crate::config::glob::name_matches(p, path))
        };
        if let Ok(entries) = std::fs::read_dir(crate::privilege::host_path(state_dir)) {
            for e in entries.flatten() {
                let name = e.file_name();
                let name = name.to_string_lossy();
                if !(name.starts_with("tail-") && name.ends_with(".json")) {
                    continue;
                }
                let Some((path, spot)) = crate::source::checkpoint::saved_spot(&state_dir.join(&*name)) else {
                    continue;
                };
                if old_match(&path) && !crate::source::tail::spot_file_exists(&path, &spot) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        // A kept reader goes with its checkpoint.
        self.stopped.retain(|(tag, uri), _| {
            let InputUri::Tail { path, .. } = uri else { return true };
            !old_match(path)
                || crate::source::checkpoint::Checkpoint::new(state_dir, tag, 0, path, std::sync::Arc::clone(marks))
                    .load()
                    .is_some()
        });
    }

    /// Where the last reader of `input` (same tag and URI) stopped, if one did.
    pub(crate) fn stopped_of(&self, input: &InputConfig) -> Option<&crate::source::Stopped> {
        self.stopped.get(&carry_key(input))
    }

    /// Where the reader of `input` stopped, for the next pipeline. A position replaces the
    /// one kept, and stays for later pipelines; a socket passes to the next one only.
    pub(crate) fn reader_stopped(&mut self, input: &InputConfig, stopped: crate::source::Stopped) {
        let kept = self.stopped.entry(carry_key(input)).or_default();
        kept.file_pos = stopped.file_pos.or(kept.file_pos);
        kept.followed = stopped.followed.or(kept.followed);
        kept.socket = stopped.socket;
        for f in stopped.finished {
            kept.finished.retain(|k| k.0 != f.0);
            if kept.finished.len() >= crate::source::tail::FINISHED_KEPT {
                kept.finished.remove(0);
            }
            kept.finished.push(f);
        }
    }

    /// Where the reader of `input` resumes: where the previous pipeline's input of the same tag
    /// and URI stopped, or, for an input renamed (a new tag; the only earlier input of its URI
    /// has a tag no input of the new configuration has), where that one stopped.
    pub(crate) fn resume(&mut self, input: &InputConfig, tags_now: &[&str]) -> crate::source::Resume {
        let key = carry_key(input);
        if !self.stopped.contains_key(&key) {
            let renamed: Vec<(String, InputUri)> = self
                .stopped
                .keys()
                .filter(|(tag, uri)| *uri == key.1 && !tags_now.contains(&tag.as_str()))
                .cloned()
                .collect();
            // Its place passes to the new name (the old one, added again later, starts anew).
            if let [old] = &renamed[..]
                && let Some(s) = self.stopped.remove(old)
            {
                self.stopped.insert(key.clone(), s);
            }
        }
        match self.stopped.get_mut(&key) {
            Some(s) => crate::source::Resume {
                file_pos: s.file_pos.unwrap_or_default(),
                followed: s.followed,
                socket: s.socket.take(),
                ..Default::default()
            },
            None => Default::default(),
        }
    }

    /// Adds a finished pipeline's totals to the run's.
    pub(crate) fn add_totals(&mut self, stats: &crate::counters::Stats) {
        self.read += stats.events_read();
        self.written += stats.written();
        self.invalid += stats.invalid();
        self.script_errors += stats.script_errors();
        self.output_errors += stats.output_errors();
        self.log_errors += stats.internal_output_errors();
        self.dropped += stats.dropped();
        self.missing_inputs = stats.missing_inputs();
    }

    /// Closes the sockets no pipeline took over (their inputs were removed, or the engine
    /// ends), removing their socket files.
    pub(crate) fn close_sockets(&mut self) {
        for ((_, uri), s) in self.stopped.iter_mut() {
            if s.socket.take().is_some() {
                let _ = std::fs::remove_file(crate::privilege::host_path(uri.path()));
            }
        }
    }

    /// Tells the workers there is no next pipeline, and waits for them to close their states.
    pub(crate) fn stop_workers(&mut self) {
        for (handle, next) in self.workers.drain(..) {
            drop(next);
            let _ = handle.join();
        }
    }
}

/// The key an input's position is kept under: its tag and URI, the replay pace left out (a
/// reload that only changes `?pace=` goes on where the file was, not from its start).
fn carry_key(input: &InputConfig) -> (String, InputUri) {
    let mut uri = input.uri.clone();
    if let InputUri::File { pace, .. } | InputUri::Zfile { pace, .. } = &mut uri {
        *pace = None;
    }
    (input.tag.clone(), uri)
}

/// Settings a running engine cannot change (a restart applies them), by name (`shards` is
/// checked by [`decide`]).
fn fixed_settings(c: &Config) -> Vec<(&'static str, String)> {
    vec![
        ("redis_host/redis_port/redis_cluster", format!("{:?}", c.redis)),
        ("redis_host", format!("{:?}", c.redis_host)),
        ("redis_port", c.redis_port.to_string()),
        ("redis_persist", c.redis_persist.to_string()),
        ("redis_ml", c.ml_native.to_string()),
        ("modules", format!("{:?}", c.modules)),
    ]
}

/// What a reload request leads to.
pub(crate) enum Decision {
    /// config.lua is unchanged: reload the scripts only.
    Scripts,
    /// A new configuration to build the pipeline from.
    Rebuild(Box<Config>),
    /// The new configuration cannot be applied: why.
    Refused(String),
}

/// Reads and checks the configuration again; `check` verifies what `dragonfly-mle check`
/// would (inputs readable, outputs writable, scripts load).
/// `workers`: how many workers run, when config.lua may set their number (no `--shards`); a
/// new `shards` other than that is refused (the workers outlive a rebuild with their states),
/// one equal to it, or none, is not.
pub(crate) fn decide(
    running: &Config,
    workers: Option<usize>,
    load: impl FnOnce() -> anyhow::Result<Config>,
    check: impl FnOnce(&Config) -> anyhow::Result<()>,
) -> Decision {
    let new = match load() {
        Ok(c) => c,
        Err(e) => return Decision::Refused(format!("{e:#}")),
    };
    if format!("{new:?}") == format!("{running:?}") {
        return Decision::Scripts;
    }
    let (now, was) = (fixed_settings(&new), fixed_settings(running));
    let mut changed: Vec<&str> = now.iter().zip(&was).filter(|(a, b)| a != b).map(|(a, _)| a.0).collect();
    if changed.len() > 1 {
        // redis_host or redis_port changed shows in the target too.
        changed.retain(|n| !n.contains('/'));
    }
    if let (Some(w), Some(n)) = (workers, new.shards)
        && n != w
    {
        changed.push("shards");
    }
    if !changed.is_empty() {
        return Decision::Refused(format!(
            "{} changed: redis_host, redis_port, redis_cluster, redis_persist, redis_ml, modules and shards cannot change while the engine runs (restart it to apply them)",
            changed.join(", ")
        ));
    }
    match check(&new) {
        Ok(()) => Decision::Rebuild(Box::new(new)),
        Err(e) => Decision::Refused(format!("{e:#}")),
    }
}

/// The pipeline's control: turns SIGHUP (and, with `--watch`, a changed config.lua or script)
/// into reloads, and a stop signal into the readers' stop.
pub(crate) struct Control {
    pub hup: Arc<AtomicBool>,
    pub stop: Arc<AtomicBool>,
    /// The readers of this pipeline stop when it is set (by a stop signal or a rebuild).
    pub readers_stop: Arc<AtomicBool>,
    /// Set when the pipeline ends for a rebuild: outputs then wait without a grace.
    pub rebuilding: Arc<AtomicBool>,
    /// The configuration to build next.
    pub next: Arc<Mutex<Option<Config>>>,
    /// Files `--watch` looks at (config.lua and the scripts), with their modification times.
    pub watch: Option<Vec<(PathBuf, Option<Stamp>)>>,
    /// Wildcard inputs, with the files they match: a change rebuilds the pipeline.
    pub globs: Vec<(PathBuf, Vec<PathBuf>)>,
    /// `Carry::glob_seen`, kept up to date at each look at the wildcards.
    pub glob_seen: GlobSeen,
}

/// The wildcard paths of `cfg`'s inputs, with the files `cfg` reads for each (not the files
/// matching now: one that appeared since `cfg` was loaded must count as a change). A pattern
/// that matched nothing has one input waiting on the pattern itself, which is no file.
pub(crate) fn globs(cfg: &Config) -> Vec<(PathBuf, Vec<PathBuf>)> {
    let mut patterns: Vec<PathBuf> = cfg.inputs.iter().filter_map(|i| i.glob.clone()).collect();
    patterns.dedup();
    patterns
        .into_iter()
        .map(|p| {
            let mut files: Vec<PathBuf> = cfg
                .inputs
                .iter()
                .filter(|i| i.glob.as_ref() == Some(&p) && i.uri.path() != p)
                .map(|i| i.uri.path().to_path_buf())
                .collect();
            files.sort();
            (p, files)
        })
        .collect()
}

/// Keeps in `seen` the file each path of `matching` is when first seen matching, and forgets
/// the paths that no longer match.
fn note_matches(seen: &Mutex<HashMap<PathBuf, crate::source::checkpoint::FileId>>, matching: &HashSet<PathBuf>) {
    let mut seen = seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    seen.retain(|p, _| matching.contains(p));
    for p in matching {
        if !seen.contains_key(p)
            && let Ok(m) = std::fs::metadata(crate::privilege::host_path(p))
        {
            seen.insert(p.clone(), crate::source::checkpoint::FileId::of(&m));
        }
    }
}

/// What `--watch` compares of a file: a hash of its content (an edit that keeps the size and
/// the time, `cp -p` or `rsync -a`, changes it; a `touch` does not: the scripts' states, which
/// a reload starts afresh, are not thrown away for nothing). `None`: it cannot be read.
pub(crate) type Stamp = u64;

fn mtimes(paths: impl Iterator<Item = PathBuf>) -> Vec<(PathBuf, Option<Stamp>)> {
    paths
        .map(|p| {
            let text = std::fs::read(crate::privilege::host_path(&p)).ok();
            let stamp = text.map(|t| crate::event::hash_words(t.len() as u64, &t));
            (p, stamp)
        })
        .collect()
}

/// The files `--watch` follows for `cfg`.
pub(crate) fn watched(cfg: &Config) -> Vec<(PathBuf, Option<Stamp>)> {
    let scripts = cfg
        .inputs
        .iter()
        .map(|i| i.script.clone())
        .chain(cfg.analyzers.iter().map(|a| a.script.clone()));
    mtimes(std::iter::once(cfg.config_file.clone()).chain(scripts))
}

impl Control {
    /// Runs until `done`: `on_request` is called for each reload request and returns whether
    /// the pipeline is to be rebuilt (the readers are then stopped).
    pub(crate) fn run(&mut self, done: &AtomicBool, mut on_request: impl FnMut(&str) -> bool) {
        let mut last_look = std::time::Instant::now();
        let mut last_glob = std::time::Instant::now();
        while !done.load(Relaxed) {
            if self.stop.load(Relaxed) {
                self.readers_stop.store(true, Relaxed);
            }
            let mut why = None;
            if self.hup.swap(false, Relaxed) {
                why = Some("SIGHUP");
            }
            if let Some(w) = self.watch.as_mut()
                && last_look.elapsed() >= Duration::from_secs(1)
            {
                last_look = std::time::Instant::now();
                let now = mtimes(w.iter().map(|(p, _)| p.clone()));
                if now != *w {
                    *w = now;
                    why = why.or(Some("--watch: a file changed"));
                }
            }
            // While a rebuild is under way a change waits (and is seen again after it).
            if !self.globs.is_empty() && last_glob.elapsed() >= Duration::from_secs(1) && !self.rebuilding.load(Relaxed)
            {
                last_glob = std::time::Instant::now();
                let mut matching = HashSet::new();
                for (pattern, files) in self.globs.iter_mut() {
                    let now = crate::config::glob::expand(pattern);
                    matching.extend(now.iter().cloned());
                    if now != *files {
                        *files = now;
                        why = why.or(Some("the files matching a wildcard input changed"));
                    }
                }
                note_matches(&self.glob_seen, &matching);
            }
            if let Some(why) = why
                && !self.rebuilding.load(Relaxed)
                && on_request(why)
            {
                self.rebuilding.store(true, Relaxed);
                self.readers_stop.store(true, Relaxed);
            }
            // Woken at once when the readers are done (`pipeline::join` unparks it).
            std::thread::park_timeout(Duration::from_millis(20));
        }
    }
}
