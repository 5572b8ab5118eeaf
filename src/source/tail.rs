//! `tail://` input: follow a file as it grows. At end of file it polls. A file is known by its
//! device, inode and fingerprint (its first bytes, see `checkpoint::Fingerprint`):
//! - shorter than what was read, or with other first bytes, or NULs where its data was being
//!   read (truncated, even if it regrew past the old offset between two polls, by a writer
//!   that goes on at its own offset): read again from the start; when a copy of the old
//!   content sits next to it (`copytruncate`), the rest of that copy first;
//! - the path names another file (rotated): once that file has data (until then the writer
//!   may still write the old one, as under logrotate's `create` before Suricata's HUP), the
//!   old file is read to its end, then every file rotated after it (two rotations within one
//!   poll), then the new one from its start.
//!
//! With a checkpoint it resumes where the outputs had got to. When the checkpointed file is no
//! longer the one at the path (rotated, compressed, or its inode reused while the engine was
//! stopped), it is looked for among the rotated files next to it (`PATH.<suffix>`,
//! `PATH-<suffix>`, `PATH_<suffix>`, gzip-compressed or not) by inode and fingerprint; the rest
//! of it is read, then the files rotated after it, oldest first, then the current file. A
//! checkpointed file that cannot be found is reported.

use std::cmp::Reverse;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::Router;
use super::checkpoint::{Checkpoint, FP_MAX, FileId, Fingerprint, Spot};
use super::framer::Framer;

/// Records where the events routed so far end, when the input keeps a checkpoint.
fn note(ckpt: &mut Option<&mut Checkpoint>, router: &Router, at: Spot) {
    if let Some(c) = ckpt.as_deref_mut() {
        c.note(router.seq(), at);
    }
}

fn save(ckpt: &mut Option<&mut Checkpoint>, router: &Router, force: bool) {
    if let Some(c) = ckpt.as_deref_mut() {
        match c.save(force) {
            // A save that was not due says nothing about the last failure.
            Ok(false) => {}
            Ok(true) => {
                if c.last_error.take().is_some() {
                    router.set_checkpoint_failing(false);
                    router.info(
                        crate::diag::Kind::InputResumed,
                        &format!("{}: the checkpoint is saved again", c.state_path.display()),
                    );
                }
            }
            Err(e) => {
                // Reported once per distinct failure, not at every attempt.
                let msg = format!("{}: {e}", c.state_path.display());
                if c.last_error.as_deref() != Some(msg.as_str()) {
                    router.report(crate::diag::Kind::CheckpointError, 0, 0, 0, &msg);
                    router.set_checkpoint_failing(true);
                    c.last_error = Some(msg);
                }
            }
        }
    }
}

/// The fingerprint of an open file as far as `upto` (at most [`FP_MAX`] bytes).
fn fingerprint(f: &File, upto: u64) -> Fingerprint {
    let n = (upto as usize).min(FP_MAX);
    Fingerprint::at(f, n).unwrap_or_default()
}

/// How many finished files a reader remembers (`Stopped::finished`).
pub(crate) const FINISHED_KEPT: usize = 16;

/// Remembers that the reader read file `id` (first bytes `fp`) to its end and left it.
fn note_finished(finished: &mut Vec<(FileId, Fingerprint)>, id: FileId, fp: Fingerprint) {
    finished.retain(|f| f.0 != id);
    if finished.len() >= FINISHED_KEPT {
        finished.remove(0);
    }
    finished.push((id, fp));
}

/// Whether the open file `f` (identity `id`) is the one `spot` is in.
fn is_spot_file(f: &File, id: FileId, spot: &Spot) -> bool {
    id == spot.id && (spot.fp.len == 0 || Fingerprint::at(f, spot.fp.len as usize) == Some(spot.fp))
}

/// A rotated file next to the followed one.
struct Rotated {
    path: PathBuf,
    gz: bool,
    id: FileId,
    /// (modification time, the number of a numbered name reversed): later is newer; among
    /// files of one mtime, `eve.json.2` is older than `eve.json.1`.
    age: (SystemTime, Reverse<u64>),
}

impl Rotated {
    /// Its (uncompressed) bytes from `offset`.
    fn open_at(&self, offset: u64) -> io::Result<Box<dyn Read>> {
        let mut f = File::open(&self.path)?;
        if !self.gz {
            f.seek(SeekFrom::Start(offset))?;
            return Ok(Box::new(f));
        }
        let mut r = flate2::read::MultiGzDecoder::new(io::BufReader::new(f));
        let skipped = io::copy(&mut (&mut r).take(offset), &mut io::sink())?;
        if skipped < offset {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{} has only {skipped} bytes, the checkpoint is at {offset}",
                    self.path.display()
                ),
            ));
        }
        Ok(Box::new(r))
    }

    /// The fingerprint of its first `len` (uncompressed) bytes; `None` when it is shorter.
    fn fingerprint(&self, len: usize) -> Option<Fingerprint> {
        Fingerprint::read(&mut self.open_at(0).ok()?, len)
    }

    /// Its fingerprint as far as it goes (at most [`FP_MAX`] bytes).
    fn full_fingerprint(&self) -> Fingerprint {
        let Ok(r) = self.open_at(0) else {
            return Fingerprint::default();
        };
        let mut buf = Vec::with_capacity(FP_MAX);
        let _ = r.take(FP_MAX as u64).read_to_end(&mut buf);
        Fingerprint::of(&buf)
    }

    /// Whether it holds the file `spot` is in: that file (inode and first bytes), or a copy of
    /// it (the same first bytes: a compressed rotation, a `copytruncate` copy).
    fn holds(&self, spot: &Spot) -> bool {
        if spot.fp.len == 0 {
            return !self.gz && self.id == spot.id;
        }
        self.fingerprint(spot.fp.len as usize) == Some(spot.fp)
    }
}

/// The suffix of `name` when it names a rotation of the file named `base`: `BASE.<suffix>`,
/// `BASE-<suffix>` or `BASE_<suffix>`.
pub(crate) fn rotation_suffix<'a>(base: &[u8], name: &'a [u8]) -> Option<&'a [u8]> {
    match name.strip_prefix(base)? {
        [b'.' | b'-' | b'_', suffix @ ..] => Some(suffix),
        _ => None,
    }
}

/// The rotated files next to `path`: `PATH.<suffix>`, `PATH-<suffix>` or `PATH_<suffix>`
/// (`.gz`: gzip-compressed).
fn rotated_files(path: &Path) -> Vec<Rotated> {
    let host = crate::privilege::host_path(path);
    let dir = match host.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let Some(base) = host.file_name().map(|n| n.as_encoded_bytes().to_vec()) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.filter_map(Result::ok) {
        let name = e.file_name();
        let name = name.as_encoded_bytes();
        let Some(suffix) = rotation_suffix(&base, name) else {
            continue;
        };
        let Ok(m) = std::fs::metadata(e.path()) else { continue };
        if !m.is_file() {
            continue;
        }
        let num = suffix
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .fold(0u64, |n, &c| n.saturating_mul(10).saturating_add(u64::from(c - b'0')));
        out.push(Rotated {
            path: e.path(),
            gz: name.ends_with(b".gz"),
            id: FileId::of(&m),
            age: (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), Reverse(num)),
        });
    }
    // A compressed file whose plain twin is still there is being written (`gzip` removes the
    // plain file once the compressed one is whole): only the plain one counts. (Taken for the
    // file a checkpoint is in, the half-written copy ended in a `read_error`, and the rest of
    // the file was skipped.)
    let plain: Vec<Vec<u8>> = out
        .iter()
        .filter(|r| !r.gz)
        .map(|r| r.path.as_os_str().as_encoded_bytes().to_vec())
        .collect();
    out.retain(|r| {
        !r.gz
            || !plain
                .iter()
                .any(|p| r.path.as_os_str().as_encoded_bytes().strip_suffix(b".gz") == Some(p.as_slice()))
    });
    out
}

/// Whether the file a checkpoint of `path` is in (`spot`) is still somewhere: under any name in
/// the directory of `path`, or as a compressed rotation of it.
pub(crate) fn spot_file_exists(path: &Path, spot: &Spot) -> bool {
    let host = crate::privilege::host_path(path);
    let dir = match host.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // The same inode with other first bytes is another file (the inode given again).
    let same =
        |e: std::fs::DirEntry| e.metadata().is_ok_and(|m| FileId::of(&m) == spot.id) && spot.fp.begins(&e.path());
    std::fs::read_dir(&dir).is_ok_and(|rd| rd.flatten().any(same)) || rotated_files(path).iter().any(|r| r.holds(spot))
}

/// The rotated files next to `path` and, for a match of the wildcard `pattern`, the match the
/// checkpointed file (`spot`) was renamed to, unless another match reads it (`siblings`).
/// Renamed after the pipeline's matches were listed and before this reader opened the path
/// (logrotate's `dateext` with `extension .json`: `eve.0.json` -> `eve.0-20261205.json`), it
/// is neither a sibling nor named as a rotation of the path: without it the rest of the file
/// was never read here, and the next pipeline read all of it as a new match.
fn rotated_or_renamed(path: &Path, pattern: Option<&Path>, spot: &Spot, siblings: &[FileId]) -> Vec<Rotated> {
    let mut files = rotated_files(path);
    let Some(pattern) = pattern else { return files };
    if siblings.contains(&spot.id) || files.iter().any(|r| r.id == spot.id) {
        return files;
    }
    let renamed = crate::config::glob::expand(pattern).into_iter().find_map(|p| {
        let m = std::fs::metadata(crate::privilege::host_path(&p)).ok()?;
        let r = Rotated {
            gz: false,
            id: FileId::of(&m),
            age: (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), Reverse(0)),
            path: crate::privilege::host_path(&p).into_owned(),
        };
        (p != path && r.id == spot.id && r.holds(spot)).then_some(r)
    });
    files.extend(renamed);
    files
}

/// The rotated files written after a file of age `age` (identity `id`, fingerprint `fp`),
/// oldest first, without that file itself, its copies (same first bytes) and the file now at
/// the path (`current`): what came between it and the current file.
fn rotated_after(
    files: &[Rotated],
    id: FileId,
    fp: Fingerprint,
    age: (SystemTime, Reverse<u64>),
    current: FileId,
) -> Vec<&Rotated> {
    let mut later: Vec<&Rotated> = files
        .iter()
        .filter(|r| r.age > age && r.id != id && r.id != current)
        .filter(|r| fp.len == 0 || r.fingerprint(fp.len as usize) != Some(fp))
        .collect();
    later.sort_by_key(|r| r.age);
    // The same content twice (a rotation and its compressed copy during compression): once.
    let mut seen: Vec<Fingerprint> = Vec::new();
    later.retain(|r| {
        let f = r.full_fingerprint();
        let new = f.len == 0 || !seen.contains(&f);
        seen.push(f);
        new
    });
    later
}

/// After a truncation: the copy the rest of the followed file is in (one with its first bytes,
/// ending at `at` or going on there with unread lines: the oldest such, a plain file before its
/// compressed twin), and the copies made after it, oldest first, which are read whole: the
/// generations written between further truncations before this look (two `copytruncate`s
/// while the engine was behind or stopped).
fn copies_since(path: &Path, id: FileId, fp: Fingerprint, at: u64) -> Option<(Rotated, Vec<Rotated>)> {
    if fp.len == 0 {
        return None;
    }
    let mut files: Vec<Rotated> = rotated_files(path).into_iter().filter(|r| r.id != id).collect();
    files.sort_by_key(|r| r.age);
    let len = |r: &Rotated| std::fs::metadata(&r.path).map_or(0, |m| m.len());
    let k = files
        .iter()
        .position(|r| r.fingerprint(fp.len as usize) == Some(fp) && ((!r.gz && len(r) == at) || continues_at(r, at)))?;
    let later = files.split_off(k + 1);
    let first = files.pop()?;
    Some((first, later))
}

/// Whether `r` goes on at `offset` with what was not read yet: a line starts there (a newline
/// before it, or the start) and it is data, not NULs. A checkpoint inside a hole (a restart
/// while the hole was being skipped) is no such place in the copy of the generation already
/// read, which must not be read again.
fn continues_at(r: &Rotated, offset: u64) -> bool {
    if r.gz {
        // The same look in the uncompressed bytes (decompressed up to there: a restart's or a
        // truncation's one-off cost).
        let Ok(src) = r.open_at(offset.saturating_sub(1)) else {
            return false;
        };
        let mut b = Vec::with_capacity(2);
        if src.take(if offset == 0 { 1 } else { 2 }).read_to_end(&mut b).is_err() {
            return false;
        }
        return match (offset, b.len()) {
            // Empty, or data from its first byte.
            (0, 0) => true,
            (0, _) => b[0] != 0,
            // Ends at `offset` with a whole line (read to its end), or goes on there.
            (_, 1) => b[0] == b'\n',
            (_, 2) => b[0] == b'\n' && b[1] != 0,
            _ => false,
        };
    }
    use std::os::unix::fs::FileExt;
    let Ok(f) = File::open(&r.path) else { return false };
    let mut b = [0u8; 2];
    match offset.checked_sub(1) {
        None => matches!(f.read_at(&mut b[..1], 0), Ok(1)) && b[0] != 0,
        Some(before) => matches!(f.read_exact_at(&mut b, before), Ok(())) && b[0] == b'\n' && b[1] != 0,
    }
}

/// Whether the byte of `f` at `offset` is a NUL.
fn nul_at(f: &File, offset: u64) -> bool {
    use std::os::unix::fs::FileExt;
    let mut b = [1u8];
    matches!(f.read_at(&mut b, offset), Ok(1)) && b[0] == 0
}

/// Reads a rotated file from `offset` to its end, noting the checkpoint as it goes.
fn read_rotated(
    r: &Rotated,
    (offset, line): (u64, u64),
    max_line: usize,
    (router, ckpt): (&mut Router, &mut Option<&mut Checkpoint>),
    finished: &mut Vec<(FileId, Fingerprint)>,
) {
    let mut src = match r.open_at(offset) {
        Ok(s) => s,
        Err(e) => {
            router.report(
                crate::diag::Kind::ReadError,
                0,
                offset,
                0,
                &format!("{}: {e}; its remaining lines are skipped", r.path.display()),
            );
            return;
        }
    };
    let mut at = Spot {
        id: r.id,
        fp: r.full_fingerprint(),
        offset,
        line,
    };
    let mut framer = Framer::new(max_line);
    framer.reset(offset, line);
    loop {
        match framer.fill(&mut src, router) {
            Ok(0) => break,
            Ok(n) => {
                router.add_bytes(n);
                at.offset = framer.consumed();
                at.line = framer.line_no;
                note(ckpt, router, at);
            }
            Err(e) => {
                router.report(
                    crate::diag::Kind::ReadError,
                    framer.line_no,
                    framer.position(),
                    0,
                    &format!("{}: {e}", r.path.display()),
                );
                break;
            }
        }
    }
    framer.finish(router);
    router.flush();
    at.offset = framer.consumed();
    at.line = framer.line_no;
    note(ckpt, router, at);
    // Read to its end: a match of a wildcard it becomes later (renamed into the pattern) is
    // no new file. (Files read here were not remembered: one renamed into a matching name was
    // read again whole, in the same run.) A compressed copy is another file.
    if !r.gz {
        note_finished(finished, r.id, at.fp);
    }
}

/// After a truncation: the rest of the followed file from its copy (from where `framer` got
/// to), then the copies made after it, whole (see [`copies_since`]).
fn read_copies(
    (copy, later): (Rotated, Vec<Rotated>),
    framer: &Framer,
    max_line: usize,
    (router, ckpt): (&mut Router, &mut Option<&mut Checkpoint>),
    finished: &mut Vec<(FileId, Fingerprint)>,
) {
    let at = (framer.consumed(), framer.line_no);
    read_rotated(&copy, at, max_line, (&mut *router, &mut *ckpt), finished);
    for r in &later {
        read_rotated(r, (0, 0), max_line, (&mut *router, &mut *ckpt), finished);
    }
}

/// The modification time of an open file.
fn mtime(f: &File) -> SystemTime {
    f.metadata()
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Where the line that holds byte `end - 1` starts (`end` when that byte ends a line): a file
/// followed from its end starts there, not inside a line being written. Looks back at most
/// `max_line` bytes (a longer line is one too long anyway).
fn line_start_before(file: &mut File, end: u64, max_line: usize) -> u64 {
    let window = end.min(max_line as u64 + 1);
    let mut buf = vec![0u8; window as usize];
    if file.seek(SeekFrom::Start(end - window)).is_err() || file.read_exact(&mut buf).is_err() {
        return end;
    }
    match memchr::memrchr(b'\n', &buf) {
        Some(i) => end - window + i as u64 + 1,
        None if window == end => 0,
        None => end,
    }
}

/// Where a followed file starts.
#[derive(Default)]
pub(crate) struct Start {
    /// The `<` suffix: from the start of the file present at the start, else from its end.
    pub from_start: bool,
    /// Where the previous pipeline stopped (after a reload), or a point handed over from
    /// another input's checkpoint; a saved checkpoint of its own takes precedence.
    pub resume: Option<Spot>,
    /// Files the other matches of the same wildcard read: a checkpointed file found among them
    /// was renamed into a matching name and is read by its own reader, not gone.
    pub siblings: Vec<FileId>,
    /// The wildcard this input is a match of: a checkpointed file renamed into another name
    /// it matches after the pipeline's matches were listed is found there.
    pub pattern: Option<PathBuf>,
}

/// Follows `path` until the engine stops, starting as `start` says. Returns where it stopped
/// (`None` if the file never appeared).
pub(crate) fn follow(
    path: &Path,
    start: Start,
    max_line: usize,
    poll: Duration,
    router: &mut Router,
    mut ckpt: Option<&mut Checkpoint>,
    finished: &mut Vec<(FileId, Fingerprint)>,
) -> Option<Spot> {
    let Start {
        from_start,
        resume,
        siblings,
        pattern,
    } = start;
    let mut framer = Framer::new(max_line);
    let resume = ckpt.as_deref_mut().and_then(|c| c.load()).or(resume);
    let saved_time = ckpt.as_deref().and_then(Checkpoint::saved_time);
    let mut reported_missing = false;
    // Wait for the file to exist.
    let mut file = loop {
        if router.stopping() {
            return None;
        }
        // A directory opens, but every read of it fails: it is not a file to follow yet.
        let r = File::open(crate::privilege::host_path(path)).and_then(|f| match f.metadata() {
            Ok(m) if m.is_dir() => Err(std::io::Error::new(
                std::io::ErrorKind::IsADirectory,
                "is a directory, not a file",
            )),
            _ => Ok(f),
        });
        router.opened();
        match r {
            Ok(f) => {
                router.set_missing(false);
                break f;
            }
            // A wildcard's match deleted after the matches were listed (logrotate's `rotate N`
            // on `dateext` names): the next look at the pattern drops it. Nothing is missing.
            Err(e) if pattern.is_some() && e.kind() == std::io::ErrorKind::NotFound => {
                std::thread::sleep(poll);
            }
            Err(e) => {
                router.set_missing(true);
                if !reported_missing {
                    router.report(
                        crate::diag::Kind::InputMissing,
                        0,
                        0,
                        0,
                        &format!(
                            "{}: {e}; {}",
                            path.display(),
                            if e.kind() == std::io::ErrorKind::NotFound {
                                "waiting for it to appear"
                            } else {
                                "trying again until it can be opened"
                            }
                        ),
                    );
                    reported_missing = true;
                }
                std::thread::sleep(poll);
            }
        }
    };
    let mut id = file.metadata().map(|m| FileId::of(&m)).unwrap_or_default();
    match resume {
        // Nothing of the checkpointed file was read (it was empty, or not read yet): its
        // first bytes are unknown, so a copy of it cannot be told by them. Renamed (the same
        // inode), it is handled as any checkpointed file below: followed while it is the
        // newest rotation (its writer may go on in it until it reopens the path: read once to
        // its end at a restart, the lines added after were lost without a word, 10-70 events in
        // 4 of 36 runs of a dateext audit), else read, then what was rotated after it. Not
        // renamed but compressed or copied, what was written after the checkpoint is in the
        // rotated files changed since the save; those are read whole, oldest first, then the
        // current file from its start. (The current file alone was read: what the
        // checkpointed file got before a rotation while stopped was lost without a word.)
        Some(spot)
            if spot.fp.len == 0
                && !rotated_or_renamed(path, pattern.as_deref(), &spot, &siblings)
                    .iter()
                    .any(|r| !r.gz && r.id == spot.id && r.id != id) =>
        {
            let files = rotated_or_renamed(path, pattern.as_deref(), &spot, &siblings);
            let later = match saved_time {
                Some(t) => rotated_after(&files, FileId::default(), Fingerprint::default(), (t, Reverse(0)), id),
                None => Vec::new(),
            };
            for r in later {
                read_rotated(r, (0, 0), max_line, (&mut *router, &mut ckpt), finished);
            }
            if file.seek(SeekFrom::Start(0)).is_ok() {
                framer.reset(0, 0);
            }
        }
        Some(spot) if is_spot_file(&file, id, &spot) => {
            // Same file: go on from the checkpoint (from the start if it was truncated since).
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            let (at, line) = if spot.offset <= len {
                (spot.offset, spot.line)
            } else {
                (0, 0)
            };
            if file.seek(SeekFrom::Start(at)).is_ok() {
                framer.reset(at, line);
            }
        }
        Some(spot) => {
            // Rotated (renamed, compressed, or its inode reused) while stopped: the rest of the
            // checkpointed file, the files rotated after it, then the current file.
            let files = rotated_or_renamed(path, pattern.as_deref(), &spot, &siblings);
            match files.iter().find(|r| r.holds(&spot)) {
                Some(x) => {
                    // A copy (compressed, say) may be younger than what was rotated after the
                    // file it holds (`gzip -c` gives it the time of the compression): the
                    // files rotated after that file are those newer than the checkpoint's
                    // save, when that is earlier.
                    let mut age = x.age;
                    if (x.gz || x.id != spot.id)
                        && let Some(t) = saved_time
                    {
                        age.0 = age.0.min(t);
                    }
                    let later = rotated_after(&files, x.id, spot.fp, age, id);
                    // The checkpointed file itself, renamed and the newest rotation: its
                    // writer may go on in it until it reopens the path (logrotate's `create`,
                    // then Suricata's HUP), so it is followed as the loop below follows a file
                    // renamed while running, until the file at the path has data. (Read to
                    // its end once, what the writer added after was lost.)
                    let follow = (later.is_empty() && !x.gz && x.id == spot.id)
                        .then(|| File::open(&x.path).ok())
                        .flatten()
                        .and_then(|mut f| f.seek(SeekFrom::Start(spot.offset)).ok().map(|_| f));
                    if let Some(f) = follow {
                        file = f;
                        id = x.id;
                        framer.reset(spot.offset, spot.line);
                    } else {
                        read_rotated(x, (spot.offset, spot.line), max_line, (&mut *router, &mut ckpt), finished);
                        for r in later {
                            read_rotated(r, (0, 0), max_line, (&mut *router, &mut ckpt), finished);
                        }
                    }
                }
                None if siblings.contains(&spot.id) => router.info(
                    crate::diag::Kind::CheckpointHandedOver,
                    &format!(
                        "{}: the checkpointed file (inode {}) was renamed to a name the wildcard matches and is read by its own input from this checkpoint; reading the current file from its start",
                        path.display(),
                        spot.id.ino
                    ),
                ),
                None => router.report(
                    crate::diag::Kind::CheckpointFileGone,
                    0,
                    spot.offset,
                    0,
                    &format!(
                        "{}: the checkpointed file (inode {}, {} first bytes known) is gone, and no rotated file next to it holds it; reading the current file from its start",
                        path.display(),
                        spot.id.ino,
                        spot.fp.len
                    ),
                ),
            }
        }
        // A file present at the start is followed from its end (unless `<`), from the start
        // of a line being written there; one that appeared later is read whole (its first
        // events were written after the engine started).
        None => {
            if !from_start
                && !reported_missing
                && let Ok(end) = file.seek(SeekFrom::End(0))
            {
                let at = line_start_before(&mut file, end, max_line);
                if file.seek(SeekFrom::Start(at)).is_ok() {
                    framer.reset(at, 0);
                }
            }
        }
    }
    let mut fp = fingerprint(&file, framer.position());
    note(
        &mut ckpt,
        router,
        Spot {
            id,
            fp,
            offset: framer.consumed(),
            line: framer.line_no,
        },
    );
    // A read that fails (an I/O error of the disk) is reported once, and the input counts as
    // unreadable (`/health`, the exit status) until a read works again.
    let mut read_failing = false;
    loop {
        // A NUL right where data was being read (not inside a hole being skipped): the file
        // was truncated and regrew past this offset since the last read, under a writer that
        // goes on at its own offset (`copytruncate`), so what was not read yet is in the copy.
        // The first bytes do not show it from the second such rotation on: they are the NULs
        // the first one left, before and after.
        if framer.position() > 0
            && !framer.in_hole()
            && nul_at(&file, framer.position())
            && let Some(copies) = copies_since(path, id, fp, framer.consumed())
        {
            read_copies(copies, &framer, max_line, (&mut *router, &mut ckpt), finished);
            if file.seek(SeekFrom::Start(0)).is_ok() {
                framer.reset(0, 0);
                fp = Fingerprint::default();
                note(&mut ckpt, router, Spot::start_of(id));
            }
        }
        let r = framer.fill(&mut file, router);
        if read_failing && r.is_ok() {
            read_failing = false;
            router.set_missing(false);
            router.info(
                crate::diag::Kind::InputResumed,
                &format!("{}: reads work again", path.display()),
            );
        }
        match r {
            Ok(n) if n > 0 => {
                router.add_bytes(n);
                if (fp.len as usize) < FP_MAX && framer.position() > u64::from(fp.len) {
                    fp = fingerprint(&file, framer.position());
                }
                let at = Spot {
                    id,
                    fp,
                    offset: framer.consumed(),
                    line: framer.line_no,
                };
                note(&mut ckpt, router, at);
                save(&mut ckpt, router, false);
                // A file that keeps growing never reaches its end: stop between two reads.
                if router.stopping() {
                    router.flush();
                    return Some(at);
                }
                continue;
            }
            Ok(_) => {}
            Err(e) => {
                if !read_failing {
                    read_failing = true;
                    router.set_missing(true);
                    router.report(
                        crate::diag::Kind::ReadError,
                        framer.line_no,
                        framer.position(),
                        0,
                        &format!("{}: {e}; trying again until it can be read", path.display()),
                    );
                }
                std::thread::sleep(poll);
            }
        }
        // At the end of what is there: hand out partial batches, then look around.
        router.flush();
        save(&mut ckpt, router, false);
        if router.stopping() {
            return Some(Spot {
                id,
                fp,
                offset: framer.consumed(),
                line: framer.line_no,
            });
        }
        std::thread::sleep(poll);
        match std::fs::metadata(crate::privilege::host_path(path)) {
            Ok(m) if FileId::of(&m) != id && m.len() == 0 => {
                // Rotated, and the new file is still empty: the writer may go on in the old one
                // until it reopens the path (logrotate's `create`, then Suricata's HUP), so the
                // old one is followed until the new one has data.
            }
            Ok(m) if FileId::of(&m) != id => {
                // Rotated, and the writer writes the new file: finish the old one.
                loop {
                    match framer.fill(&mut file, router) {
                        Ok(n) if n > 0 => router.add_bytes(n),
                        _ => break,
                    }
                }
                framer.finish(router);
                router.flush();
                fp = fingerprint(&file, framer.position());
                note(
                    &mut ckpt,
                    router,
                    Spot {
                        id,
                        fp,
                        offset: framer.consumed(),
                        line: framer.line_no,
                    },
                );
                // The file now at the path is opened first: another rotation may have
                // happened while the old file was finished, and the file seen at the path
                // then is among the rotated ones now. (Not there: the next poll does this.)
                let Ok(next) = File::open(crate::privilege::host_path(path)) else {
                    continue;
                };
                let next_id = next.metadata().map(|m| FileId::of(&m)).unwrap_or_default();
                // Files rotated after the old one, before the current one (rotations between
                // two polls, or while the old file was finished).
                let files = rotated_files(path);
                let num = files.iter().find(|r| r.id == id).map_or(u64::MAX, |r| r.age.1.0);
                for r in rotated_after(&files, id, fp, (mtime(&file), Reverse(num)), next_id) {
                    read_rotated(r, (0, 0), max_line, (&mut *router, &mut ckpt), finished);
                }
                note_finished(finished, id, fp);
                file = next;
                id = next_id;
                framer.reset(0, 0);
                fp = Fingerprint::default();
                note(&mut ckpt, router, Spot::start_of(id));
            }
            Ok(m) => {
                // Same inode: shorter than what was read, or other first bytes (truncated and
                // rewritten, maybe past the old offset), means it was truncated.
                let rewritten =
                    m.len() < framer.position() || (fp.len > 0 && Fingerprint::at(&file, fp.len as usize) != Some(fp));
                if rewritten {
                    // `copytruncate`: what was added before the copy is in the copy.
                    match copies_since(path, id, fp, framer.consumed()) {
                        Some(copies) => read_copies(copies, &framer, max_line, (&mut *router, &mut ckpt), finished),
                        None => framer.finish(router),
                    }
                    if file.seek(SeekFrom::Start(0)).is_ok() {
                        framer.reset(0, 0);
                        fp = Fingerprint::default();
                        note(&mut ckpt, router, Spot::start_of(id));
                    }
                }
            }
            Err(_) => {
                // The path is gone (rotated, new file not there yet): keep reading the old one.
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A compressed copy whose plain twin is still there is being written: only the plain
    /// file is listed (the half-written copy, listed first by the directory, was taken for
    /// the file a checkpoint is in: a `read_error`, and the rest of the file skipped). A copy
    /// without a plain twin is listed.
    #[test]
    fn a_compressed_copy_being_written_is_not_listed_beside_its_plain_twin() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("eve.json");
        std::fs::write(&path, b"{\"now\":1}\n").unwrap();
        for name in ["eve.json.1", "eve.json-2", "eve.json_3"] {
            std::fs::write(dir.path().join(name), b"{\"a\":1}\n").unwrap();
            std::fs::write(dir.path().join(format!("{name}.gz")), [0x1f, 0x8b, 8]).unwrap();
        }
        std::fs::write(dir.path().join("eve.json.4.gz"), [0x1f, 0x8b, 8]).unwrap();
        let mut names: Vec<_> = rotated_files(&path)
            .iter()
            .map(|r| r.path.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["eve.json-2", "eve.json.1", "eve.json.4.gz", "eve.json_3"]);
    }

    /// The copies read after truncations: the one the rest of the followed file is in (it
    /// goes on where reading stopped: a line starts there and data follows; a checkpoint
    /// inside a hole is no such place), then those made after it, oldest first; a plain file
    /// before its compressed twin (which may still be written).
    #[test]
    fn the_copies_read_go_on_where_reading_stopped_then_follow_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("eve.json");
        let holed = |data: &str| [vec![0u8; 2048], data.as_bytes().to_vec()].concat();
        let gz = |bytes: &[u8]| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut e, bytes).unwrap();
            e.finish().unwrap()
        };
        std::fs::write(&path, holed("{\"now\":1}\n")).unwrap();
        std::fs::write(dir.path().join("eve.json.3"), holed("{\"old\":1}\n")).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(dir.path().join("eve.json.2"), holed("{\"a\":1}\n{\"b\":2}\n")).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        // The next copy, and its compressed twin being written.
        std::fs::write(dir.path().join("eve.json.1"), holed("{\"c\":1}\n")).unwrap();
        std::fs::write(dir.path().join("eve.json.1.gz"), gz(&holed("{\"c\":1}\n"))).unwrap();
        let f = File::open(&path).unwrap();
        let id = FileId::of(&f.metadata().unwrap());
        let fp = fingerprint(&f, FP_MAX as u64);
        let after_first = 2048 + "{\"a\":1}\n".len() as u64;
        let (first, later) = copies_since(&path, id, fp, after_first).unwrap();
        assert!(first.path.ends_with("eve.json.2"), "{}", first.path.display());
        let later: Vec<_> = later.iter().map(|r| r.path.file_name().unwrap().to_owned()).collect();
        assert_eq!(later, ["eve.json.1"]);
        // Inside a hole or mid-line: no copy goes on there.
        assert!(copies_since(&path, id, fp, 1000).is_none());
        assert!(copies_since(&path, id, fp, after_first + 3).is_none());
        // With only compressed copies, the same: the copy that goes on (or ends) where
        // reading stopped, not one whose hole the checkpoint is in (a compressed copy was
        // taken as going on anywhere, and read again).
        for name in ["eve.json.3", "eve.json.2", "eve.json.1"] {
            let plain = dir.path().join(name);
            let bytes = std::fs::read(&plain).unwrap();
            std::fs::remove_file(&plain).unwrap();
            std::fs::write(dir.path().join(format!("{name}.gz")), gz(&bytes)).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(copies_since(&path, id, fp, 1000).is_none());
        assert!(copies_since(&path, id, fp, after_first + 3).is_none());
        let (first, later) = copies_since(&path, id, fp, after_first).unwrap();
        assert!(first.path.ends_with("eve.json.2.gz"), "{}", first.path.display());
        let later: Vec<_> = later.iter().map(|r| r.path.file_name().unwrap().to_owned()).collect();
        assert_eq!(later, ["eve.json.1.gz"]);
        // A compressed copy that ends where reading stopped.
        let end = 2048 + "{\"a\":1}\n{\"b\":2}\n".len() as u64;
        let (first, _) = copies_since(&path, id, fp, end).unwrap();
        assert!(first.path.ends_with("eve.json.2.gz"), "{}", first.path.display());
    }
}
