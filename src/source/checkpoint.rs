//! Checkpoints of `tail://` inputs: (file identity, fingerprint, offset) saved to a state file
//! under the run directory, only once every event read before that offset has been written by the
//! outputs. The writer publishes, per input, the sequence number below which every event is
//! written (`Watermarks`); the reader remembers where in which file each sequence number
//! ended and saves the furthest point the watermark has passed. After a restart (also after
//! `kill -9`) the input resumes there: nothing is lost, and what is read again is bounded by
//! what was in flight.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

pub(crate) use crate::counters::Watermarks;

/// A file's identity: device and inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    pub(crate) fn of(m: &std::fs::Metadata) -> FileId {
        use std::os::unix::fs::MetadataExt;
        FileId {
            dev: m.dev(),
            ino: m.ino(),
        }
    }
}

/// How many first bytes of a file make its fingerprint.
pub(crate) const FP_MAX: usize = 1024;

/// The first bytes of a file (up to [`FP_MAX`]; fewer while the file is shorter): with the
/// device and inode they tell a file from another that reuses its inode (a new file after a
/// deletion, or the same file truncated and rewritten), and find its content again under
/// another inode (a copy, a compressed rotation). `len` 0: unknown (a checkpoint of an older
/// version, or an empty file).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) struct Fingerprint {
    pub len: u32,
    pub hash: u64,
}

impl Fingerprint {
    pub(crate) fn of(bytes: &[u8]) -> Fingerprint {
        Fingerprint {
            len: bytes.len() as u32,
            hash: fnv64(bytes),
        }
    }

    /// The fingerprint of the first `len` bytes `r` gives (None when it has fewer).
    pub(crate) fn read(r: &mut impl std::io::Read, len: usize) -> Option<Fingerprint> {
        let mut buf = vec![0u8; len];
        r.read_exact(&mut buf).ok()?;
        Some(Fingerprint::of(&buf))
    }

    /// Whether the file at `host` (a path on the host: see `privilege::host_path`) begins with
    /// the bytes this fingerprint stands for (any file when none are known).
    pub(crate) fn begins(&self, host: &Path) -> bool {
        self.len == 0 || std::fs::File::open(host).is_ok_and(|f| Fingerprint::at(&f, self.len as usize) == Some(*self))
    }

    /// The first bytes of the file at `host` (as far as it goes, at most [`FP_MAX`]) when it is
    /// the file `id`; none known otherwise.
    pub(crate) fn of_file(host: &Path, id: FileId) -> Fingerprint {
        let Ok(f) = std::fs::File::open(host) else {
            return Fingerprint::default();
        };
        match f.metadata() {
            Ok(m) if FileId::of(&m) == id => Fingerprint::at(&f, (m.len() as usize).min(FP_MAX)).unwrap_or_default(),
            _ => Fingerprint::default(),
        }
    }

    /// The fingerprint of the first `len` bytes of an open file (None when it is shorter).
    pub(crate) fn at(f: &std::fs::File, len: usize) -> Option<Fingerprint> {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; len];
        f.read_exact_at(&mut buf, 0).ok()?;
        Some(Fingerprint::of(&buf))
    }
}

/// A point in a tailed input: which file (identity and fingerprint) and the offset in it
/// (in its uncompressed bytes for a compressed rotation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) struct Spot {
    pub id: FileId,
    pub fp: Fingerprint,
    pub offset: u64,
    /// Lines before `offset` (reports after a restart keep the file's line numbers; 0 in a
    /// checkpoint written before it was kept: numbers then count from the restart).
    pub line: u64,
}

impl Spot {
    /// The start of the file `id`, whose fingerprint is not known yet.
    pub(crate) fn start_of(id: FileId) -> Spot {
        Spot { id, ..Spot::default() }
    }
}

/// Positions in an input, each with the sequence number the input had reached there, oldest
/// first; [`Progress::passed`] takes out those whose events are all written. Shared by tail
/// checkpoints and Kafka commits.
pub(crate) struct Progress<T> {
    /// (sequence number reached, position, entries merged into this one).
    pending: VecDeque<(u64, T, u32)>,
    /// How many positions with new events may be merged into one entry (see `note`).
    max_merge: u32,
}

impl<T: Copy> Progress<T> {
    pub(crate) fn new(max_merge: u32) -> Self {
        Progress {
            pending: VecDeque::new(),
            max_merge,
        }
    }

    /// Events before sequence number `seq` were read, up to position `at`. It replaces the
    /// last entry when no event came in between, or when `same` (a position of the same kind,
    /// such as one Kafka partition) and fewer than `max_merge` were merged into it: a steady
    /// stream still leaves positions the watermark can pass.
    pub(crate) fn note(&mut self, seq: u64, at: T, same: impl FnOnce(&T) -> bool) {
        if let Some(last) = self.pending.back_mut()
            && (last.0 == seq || (last.2 < self.max_merge && same(&last.1)))
        {
            *last = (seq, at, last.2 + u32::from(last.0 != seq));
            return;
        }
        self.pending.push_back((seq, at, 0));
    }

    /// The sequence number of the newest position noted.
    pub(crate) fn last_seq(&self) -> Option<u64> {
        self.pending.back().map(|e| e.0)
    }

    /// Keeps only the positions for which `keep` holds (a Kafka partition given away).
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        self.pending.retain(|e| keep(&e.1));
    }

    /// Takes out, oldest first, the positions every event before which is written.
    pub(crate) fn passed(&mut self, written: u64, mut f: impl FnMut(T)) {
        while let Some(&(seq, at, _)) = self.pending.front() {
            if seq > written {
                break;
            }
            f(at);
            self.pending.pop_front();
        }
    }
}

/// How often a moving checkpoint is written.
const SAVE_EVERY: Duration = Duration::from_millis(200);

/// The checkpoint of one tailed file.
pub(crate) struct Checkpoint {
    pub state_path: PathBuf,
    /// The last save failure reported (reports are not repeated).
    pub last_error: Option<String>,
    watched: PathBuf,
    input: usize,
    marks: Watermarks,
    /// (file, offset) reached, by sequence number.
    progress: Progress<Spot>,
    /// What the state file holds.
    saved: Option<Spot>,
    /// When the loaded checkpoint was saved.
    saved_time: Option<std::time::SystemTime>,
    /// The furthest point known written, not saved yet.
    best: Option<Spot>,
    last_save: Instant,
}

fn fnv64(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &c| {
        (h ^ c as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// The longest file name (bytes) of common file systems.
const MAX_NAME: usize = 255;

impl Checkpoint {
    /// The checkpoint of input `input` (tag `tag`) following `watched`, kept in `run_dir`.
    pub(crate) fn new(run_dir: &Path, tag: &str, input: usize, watched: &Path, marks: Watermarks) -> Checkpoint {
        let safe: String = tag
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let hash = fnv64(watched.as_os_str().as_encoded_bytes());
        let mut name = format!("tail-{safe}-{hash:016x}.json");
        // A file name has at most 255 bytes, and the temporary file adds ".tmp": a long tag
        // (a wildcard input's, from a long file name) is cut, the whole tag then in the hash.
        if name.len() > MAX_NAME - ".tmp".len() {
            let keep = MAX_NAME - ".tmp".len() - "tail--0123456789abcdef.json".len();
            let hash = hash ^ fnv64(tag.as_bytes()).rotate_left(1);
            name = format!("tail-{}-{hash:016x}.json", &safe[..keep]);
        }
        Checkpoint {
            state_path: run_dir.join(name),
            watched: watched.to_path_buf(),
            input,
            marks,
            progress: Progress::new(0),
            saved: None,
            saved_time: None,
            best: None,
            last_save: Instant::now(),
            last_error: None,
        }
    }

    /// The saved point, if the state file exists and is about this path.
    pub(crate) fn load(&mut self) -> Option<Spot> {
        let text = std::fs::read(crate::privilege::host_path(&self.state_path)).ok()?;
        let (path, at, saved_time) = parse_state(text)?;
        if path != self.watched.to_string_lossy() {
            return None;
        }
        self.saved = Some(at);
        self.saved_time = saved_time;
        Some(at)
    }

    /// When the loaded checkpoint was saved (`None` without one).
    pub(crate) fn saved_time(&self) -> Option<std::time::SystemTime> {
        self.saved_time
    }

    /// Events up to (not including) sequence number `seq` were read up to `at`.
    pub(crate) fn note(&mut self, seq: u64, at: Spot) {
        self.progress.note(seq, at, |_| false);
    }

    /// Saves the furthest point the outputs have passed, at most every 200 ms unless `force`.
    pub(crate) fn save(&mut self, force: bool) -> std::io::Result<bool> {
        let written = self.marks[self.input].load(Ordering::Acquire);
        let best = &mut self.best;
        self.progress.passed(written, |at| *best = Some(at));
        if self.best == self.saved || (!force && self.last_save.elapsed() < SAVE_EVERY) {
            return Ok(false);
        }
        let Some(at) = self.best else { return Ok(false) };
        self.last_save = Instant::now();
        let mut body = Vec::with_capacity(160);
        body.extend_from_slice(b"{\"path\":");
        crate::primitives::json::write_str(&mut body, self.watched.to_string_lossy().as_bytes());
        body.extend_from_slice(
            format!(
                ",\"dev\":{},\"ino\":{},\"fp_len\":{},\"fp\":\"{:016x}\",\"offset\":{},\"line\":{},\"time\":\"{}\",\"time_ns\":{}}}\n",
                at.id.dev,
                at.id.ino,
                at.fp.len,
                at.fp.hash,
                at.offset,
                at.line,
                crate::primitives::clock::utc_now(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            )
            .as_bytes(),
        );
        let state_path = crate::privilege::host_path(&self.state_path);
        if let Some(dir) = state_path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = state_path.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&body)?;
        f.sync_data()?;
        std::fs::rename(&tmp, &state_path)?;
        self.saved = Some(at);
        Ok(true)
    }
}

/// The watched path, the point and the time of a checkpoint's state file.
fn parse_state(mut text: Vec<u8>) -> Option<(String, Spot, Option<std::time::SystemTime>)> {
    let v = simd_json::to_owned_value(&mut text).ok()?;
    use simd_json::prelude::*;
    let id = FileId {
        dev: v.get_u64("dev")?,
        ino: v.get_u64("ino")?,
    };
    // A checkpoint written before fingerprints has none: the file is known by its inode.
    let fp = match (v.get_u64("fp_len"), v.get_str("fp")) {
        (Some(len), Some(hash)) => Fingerprint {
            len: len.min(FP_MAX as u64) as u32,
            hash: u64::from_str_radix(hash, 16).ok()?,
        },
        _ => Fingerprint::default(),
    };
    let at = Spot {
        id,
        fp,
        offset: v.get_u64("offset")?,
        line: v.get_u64("line").unwrap_or(0),
    };
    // `time_ns`: nanoseconds since the epoch; checkpoints of earlier versions have only
    // `time`, UTC (`...Z`) in whole seconds (a file rotated later in that second then looks
    // older than the save: it is read again, never skipped).
    let saved_time = match v.get_u64("time_ns") {
        Some(ns) => Some(std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns)),
        None => v
            .get_str("time")
            .and_then(|t| crate::event::timestamp::parse(t.as_bytes()))
            .and_then(|t| u64::try_from(t.epoch_secs(t.offset.unwrap_or(0))).ok())
            .map(|s| std::time::UNIX_EPOCH + std::time::Duration::from_secs(s)),
    };
    Some((v.get_str("path")?.to_string(), at, saved_time))
}

/// The watched path and the point of the checkpoint state file at `state_file` (any tag's).
pub(crate) fn saved_spot(state_file: &Path) -> Option<(PathBuf, Spot)> {
    let text = std::fs::read(crate::privilege::host_path(state_file)).ok()?;
    let (path, at, _) = parse_state(text)?;
    Some((PathBuf::from(path), at))
}

#[cfg(test)]
mod tests {
    use super::{Checkpoint, MAX_NAME, Progress};

    /// A tag too long for a file name (a wildcard input of a long file name) is cut so that
    /// the checkpoint and its temporary file fit in 255 bytes, and stays unique; a short tag
    /// keeps its name.
    #[test]
    fn long_tags_give_file_names_that_fit() {
        let marks = std::sync::Arc::new(vec![std::sync::atomic::AtomicU64::new(0)]);
        let name = |tag: &str| {
            let c = Checkpoint::new(
                std::path::Path::new("/run"),
                tag,
                0,
                std::path::Path::new("/x"),
                marks.clone(),
            );
            c.state_path.file_name().unwrap().to_string_lossy().into_owned()
        };
        let short = name("eve");
        assert!(short.starts_with("tail-eve-") && short.ends_with(".json"), "{short}");
        let (a, b) = (format!("{}a", "x".repeat(300)), format!("{}b", "x".repeat(300)));
        let (na, nb) = (name(&a), name(&b));
        assert!(na.len() + ".tmp".len() <= MAX_NAME, "{}", na.len());
        assert_ne!(na, nb, "tags that differ past the cut");
        let fits = "y".repeat(200);
        assert_eq!(name(&fits).len(), "tail--0123456789abcdef.json".len() + 200, "not cut");
    }

    #[test]
    fn a_steady_stream_of_one_partition_still_gets_positions_passed() {
        let mut p = Progress::new(4);
        // One message per event, all partition 0: entries merge at most 4 at a time.
        for seq in 1..=20u64 {
            p.note(seq, (0, seq as i64), |last| last.0 == 0);
        }
        let mut got = Vec::new();
        p.passed(12, |at| got.push(at));
        assert!(!got.is_empty(), "nothing passed the watermark");
        assert!(got.iter().all(|&(_, o)| o <= 12), "{got:?}");
        assert!(got.last().unwrap().1 >= 12 - 4, "{got:?}");
    }

    #[test]
    fn positions_without_new_events_replace_the_last() {
        let mut p = Progress::new(0);
        p.note(5, 100u64, |_| false);
        p.note(5, 200, |_| false);
        p.note(6, 300, |_| false);
        let mut got = Vec::new();
        p.passed(5, |at| got.push(at));
        assert_eq!(got, vec![200]);
        p.passed(6, |at| got.push(at));
        assert_eq!(got, vec![200, 300]);
    }
}
