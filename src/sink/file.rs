//! `file://` output: one event per line, appended (or truncated with `<`), held in memory and
//! written by the writer at least every 100 ms and at exit; SIGUSR1 renames it with a UTC
//! timestamp suffix and reopens it. A write that fails part way (disk full, file size limit)
//! is rolled back to the end of the last whole record, so the file never holds a torn line;
//! the records stay held and are written again when the writer retries.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, Write};
use std::path::PathBuf;

use super::held::Held;

/// Held bytes that make the writer write them out without waiting for the next flush.
const WRITE_AT: usize = 256 * 1024;

/// A file sink.
pub(crate) struct FileSink {
    pub path: PathBuf,
    out: Option<File>,
    pub held: Held,
    /// The last delivery failed.
    failing: bool,
    /// What the writer should report: the file was deleted and opened again.
    pub notice: Option<String>,
    /// A truncating output (`<`) not emptied yet: that waits until the pipeline has started
    /// ([`FileSink::begin`]) or its first write, so that a start that fails (a script's
    /// `setup()`, another output, the HTTP port) leaves the last run's file as it was.
    truncate_pending: bool,
    /// The file did not exist before [`open`](Self::open) made it, and the pipeline has not
    /// started: a start that fails removes it again, if still empty.
    made_unstarted: bool,
    /// An appending output's last line, cut by a crash, is ended when the pipeline starts (a
    /// start that fails leaves the file as it was).
    end_line_pending: bool,
}

impl FileSink {
    /// Opens (creating it and its directory if needed) `path`.
    pub(crate) fn open(path: PathBuf, truncate: bool) -> io::Result<FileSink> {
        // Where the path is now (inside the root after a chroot: a reload's new pipeline).
        let host = crate::privilege::host_path(&path);
        create_parent_of_new(&host)?;
        let made = std::fs::symlink_metadata(&host).is_err();
        let f = open_file(&host, truncate).inspect_err(|_| remove_unstarted_dirs(&host))?;
        if made {
            note_unstarted_file(&host, &[]);
        }
        Ok(FileSink {
            path,
            out: Some(f),
            held: Held::default(),
            failing: false,
            notice: None,
            truncate_pending: truncate,
            made_unstarted: made,
            end_line_pending: !truncate,
        })
    }

    /// The pipeline has started: a truncating output empties its file now, an appending one
    /// ends a line a crash left partial (once).
    pub(crate) fn begin(&mut self) -> io::Result<()> {
        if std::mem::take(&mut self.made_unstarted) {
            made_file_started(&self.path);
        }
        if self.end_line_pending
            && let Some(f) = self.out.as_mut()
        {
            end_partial_line(&crate::privilege::host_path(&self.path), f)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.path.display())))?;
            self.end_line_pending = false;
        }
        empty_once(&mut self.truncate_pending, self.out.as_mut(), &self.path, |_| Ok(()))
    }

    /// Takes one record; it is written once enough is held (or at the next flush). An error
    /// is a failed write of what is held, which stays held.
    pub(crate) fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.held.push(bytes);
        // After a failed delivery, the next attempt waits for the writer's flush or retry.
        if self.held.len() >= WRITE_AT && !self.failing {
            return self.flush();
        }
        Ok(())
    }

    pub(crate) fn flush(&mut self) -> io::Result<()> {
        let r = self.deliver();
        self.failing = r.is_err();
        r
    }

    /// Writes what is held. On a failure the file is cut back to the end of the last whole
    /// record written, and the rest stays held.
    fn deliver(&mut self) -> io::Result<()> {
        if !self.held.unsent().is_empty() {
            self.begin()?;
        }
        if !self.held.unsent().is_empty()
            && let Some(n) = reopen_if_deleted(&mut self.out, &self.path)?
        {
            self.notice = Some(n);
        }
        let Some(f) = self.out.as_mut() else {
            return Err(io::Error::other("output is closed"));
        };
        if !self.held.unsent().is_empty() {
            follow_truncation(f)?;
        }
        while !self.held.unsent().is_empty() {
            match f.write(self.held.unsent()) {
                Ok(0) => return self.roll_back(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => self.held.sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.roll_back(e),
            }
        }
        self.held.settle();
        Ok(())
    }

    fn roll_back(&mut self, e: io::Error) -> io::Result<()> {
        let torn = self.held.settle() as u64;
        if torn > 0
            && let Some(f) = self.out.as_mut()
        {
            // A truncating output writes at its position, not at the end: both move back.
            let len = f.metadata()?.len().saturating_sub(torn);
            f.set_len(len)
                .and_then(|()| f.seek(io::SeekFrom::Start(len)).map(drop))
                .map_err(|t| {
                    io::Error::new(t.kind(), format!("{e}; cutting off the partial record failed too: {t}"))
                })?;
        }
        Err(io::Error::new(e.kind(), format!("{}: {e}", self.path.display())))
    }

    /// Renames the file to `<path>.<YYYYMMDD.HHMMSS>` (UTC) and reopens `path`. What cannot
    /// be written now stays held and goes to the new file. A file that is gone (deleted) is
    /// just opened again.
    pub(crate) fn rotate(&mut self) -> io::Result<PathBuf> {
        let _ = self.deliver();
        let path = crate::privilege::host_path(&self.path).into_owned();
        let target = rotated_name(&path);
        match std::fs::rename(&path, &target) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                create_parent(&path)?;
                self.out = Some(open_file(&path, false)?);
                return Err(io::Error::new(
                    e.kind(),
                    format!("{} was gone (deleted?): opened again, nothing renamed", path.display()),
                ));
            }
            Err(e) => return Err(e),
        }
        self.out = Some(open_file(&path, false)?);
        Ok(target)
    }
}

/// A file deleted while open (`rm`, its directory removed) would swallow every record written
/// to it: before writing, one `fstat` looks at its link count, and a deleted file is opened
/// again at its path (its directory made again if needed). Returns what to report then.
pub(super) fn reopen_if_deleted(out: &mut Option<File>, path: &std::path::Path) -> io::Result<Option<String>> {
    use std::os::unix::fs::MetadataExt;
    let Some(f) = out.as_ref() else { return Ok(None) };
    if f.metadata().map_or(true, |m| m.nlink() > 0) {
        return Ok(None);
    }
    let host = crate::privilege::host_path(path).into_owned();
    match create_parent(&host).and_then(|()| open_file(&host, false)) {
        Ok(f) => {
            *out = Some(f);
            Ok(Some(format!(
                "{}: the file was deleted while open; opened again at its path (what it held went with it)",
                path.display()
            )))
        }
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!(
                "{}: deleted while open, and opening it again failed: {e}",
                path.display()
            ),
        )),
    }
}

/// What `path` is when it is something a file output cannot write as a file: a FIFO (opening
/// one waits for a reader, and no write can be cut back) or a socket. `None` for a regular
/// file, a device (`/dev/null`) or a path that does not exist yet.
pub(crate) fn not_a_file(path: &std::path::Path) -> Option<&'static str> {
    refused_type(std::fs::metadata(path).ok()?.file_type())
}

/// What [`not_a_file`] says of a file of type `t`.
fn refused_type(t: std::fs::FileType) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    if t.is_fifo() {
        Some("a FIFO (a named pipe: for a program reading the events, use ipc+stream://)")
    } else if t.is_socket() {
        Some("a socket (use ipc:// or ipc+stream://)")
    } else {
        None
    }
}

/// The error of an output at `path`, which is `what` ([`not_a_file`]).
fn refusal(path: &std::path::Path, what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("{} is {what}", path.display()))
}

/// Creates the directory `path` goes in, if needed.
pub(super) fn create_parent(path: &std::path::Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::create_dir_all(dir),
        _ => Ok(()),
    }
}

/// Files (host paths) outputs made while opening, before any pipeline using them started,
/// with what such a file starts with: a start that ends with `exit` (stopped while a
/// `setup()` never returns), where no sink is dropped, removes them by
/// [`remove_unstarted_outputs`].
static UNSTARTED_FILES: std::sync::Mutex<Vec<(PathBuf, Vec<u8>)>> = std::sync::Mutex::new(Vec::new());

fn unstarted_files() -> std::sync::MutexGuard<'static, Vec<(PathBuf, Vec<u8>)>> {
    UNSTARTED_FILES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Notes the file an output made at `host` (holding `empty` when unwritten).
pub(super) fn note_unstarted_file(host: &std::path::Path, empty: &[u8]) {
    unstarted_files().push((host.to_path_buf(), empty.to_vec()));
}

/// The output at `host` has started (or is gone): its file is no longer noted.
fn forget_unstarted_file(host: &std::path::Path) {
    unstarted_files().retain(|(p, _)| p != host);
}

/// A start that ends the process without dropping its outputs: the files they made and never
/// wrote, and the directories made for them, are removed, as a start that fails otherwise
/// does (`FileSink`'s drop).
pub(crate) fn remove_unstarted_outputs() {
    let files = std::mem::take(&mut *unstarted_files());
    for (host, empty) in files {
        remove_made(&host, &empty);
    }
}

/// The file at `host`, made by an output, if it holds no more than `empty`, and the
/// directories made for it.
fn remove_made(host: &std::path::Path, empty: &[u8]) {
    if std::fs::read(host).is_ok_and(|b| b.is_empty() || b == empty) {
        let _ = std::fs::remove_file(host);
    }
    remove_unstarted_dirs(host);
}

/// An output whose file (at `path`) it made has started: the file and its directories stay.
pub(super) fn made_file_started(path: &std::path::Path) {
    let host = crate::privilege::host_path(path);
    forget_unstarted_file(&host);
    keep_unstarted_dirs(&host);
}

/// Directories (host paths) that outputs made for their files while opening, before any
/// pipeline using them started: a start that fails removes them again once they are empty
/// (several outputs may share one; the last one removed takes it).
static UNSTARTED_DIRS: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

fn unstarted_dirs() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    UNSTARTED_DIRS.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// [`create_parent`] for an output being opened (`host`: its file's host path): the
/// directories it makes are noted, and removed again if the start fails
/// ([`remove_unstarted_dirs`]) or kept once the pipeline starts ([`keep_unstarted_dirs`]).
pub(super) fn create_parent_of_new(host: &std::path::Path) -> io::Result<()> {
    let Some(dir) = host.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    let mut missing = Vec::new();
    let mut d = dir;
    while std::fs::symlink_metadata(d).is_err() {
        missing.push(d.to_path_buf());
        match d.parent() {
            Some(p) if !p.as_os_str().is_empty() => d = p,
            _ => break,
        }
    }
    let r = std::fs::create_dir_all(dir).map_err(|e| {
        // (A file where a directory of the path goes says "File exists".)
        let why = if e.kind() == io::ErrorKind::AlreadyExists || e.raw_os_error() == Some(libc::ENOTDIR) {
            "a file is in the way of a directory of its path".to_string()
        } else {
            e.to_string()
        };
        io::Error::new(e.kind(), format!("cannot make the directory {}: {why}", dir.display()))
    });
    if !missing.is_empty() {
        unstarted_dirs().extend(missing.into_iter().filter(|m| m.is_dir()));
    }
    if r.is_err() {
        remove_unstarted_dirs(host);
    }
    r
}

/// A start that failed: the directories above `host` that an output made (noted by
/// [`create_parent_of_new`]) are removed, innermost first, while empty.
pub(super) fn remove_unstarted_dirs(host: &std::path::Path) {
    let mut dirs = unstarted_dirs();
    let mut d = host.parent();
    while let Some(dir) = d {
        let Some(k) = dirs.iter().position(|m| m == dir) else {
            break;
        };
        if std::fs::remove_dir(dir).is_err() {
            break;
        }
        dirs.swap_remove(k);
        d = dir.parent();
    }
}

/// The pipeline has started: the directories above `host` stay.
fn keep_unstarted_dirs(host: &std::path::Path) {
    let mut dirs = unstarted_dirs();
    if dirs.is_empty() {
        return;
    }
    let mut d = host.parent();
    while let Some(dir) = d {
        let Some(k) = dirs.iter().position(|m| m == dir) else {
            break;
        };
        dirs.swap_remove(k);
        d = dir.parent();
    }
}

impl Drop for FileSink {
    fn drop(&mut self) {
        if self.made_unstarted {
            remove_if_unwritten(&self.path, &[]);
        }
    }
}

/// Removes the file at `path` (an output's file this run made before a start that failed)
/// when it holds no more than `empty` (what a new file starts with), and the directories it
/// made for it: the start leaves no file or directory where there was none.
pub(super) fn remove_if_unwritten(path: &std::path::Path, empty: &[u8]) {
    let host = crate::privilege::host_path(path);
    forget_unstarted_file(&host);
    remove_made(&host, empty);
}

/// Opens an output file: appending, or, with `truncate` (the `<` suffix), for writing from
/// its start (the sink empties it with [`empty`] once the pipeline has started).
pub(super) fn open_file(path: &std::path::Path, truncate: bool) -> io::Result<File> {
    // (Not in append mode when truncating: on ext4, O_APPEND writes made the pass-through
    // benchmark 20 % slower; `follow_truncation` keeps such a file whole instead.)
    let mut o = OpenOptions::new();
    o.create(true);
    if truncate {
        o.write(true);
    } else {
        o.append(true);
    }
    // Never waits in open(2): a FIFO where the file goes would hold the writer, deaf to a
    // stop, until a reader came. It is refused instead (without a reader open(2) fails, with
    // ENXIO), and the records wait as for any output that cannot take them.
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.custom_flags(libc::O_NONBLOCK);
    }
    let f = o
        .open(path)
        .map_err(|e| not_a_file(path).map_or(e, |what| refusal(path, what)))?;
    let meta = f.metadata()?;
    if let Some(what) = refused_type(meta.file_type()) {
        return Err(refusal(path, what));
    }
    {
        use std::os::fd::AsRawFd;
        // SAFETY: fcntl on a descriptor this function owns; only the O_NONBLOCK flag changes.
        unsafe {
            let fl = libc::fcntl(f.as_raw_fd(), libc::F_GETFL);
            if fl >= 0 {
                libc::fcntl(f.as_raw_fd(), libc::F_SETFL, fl & !libc::O_NONBLOCK);
            }
        }
    }
    // Opened as root before dropping to `--user`/`-p`: a reload's new pipeline (after the
    // drop) opens it again.
    crate::privilege::give_to_target(&f);
    Ok(f)
}

/// Empties a truncating output's file (`out`, at `path`) once, while `pending`, and writes on
/// from its start, after `then` wrote what a new file starts with; a failure leaves it
/// pending.
pub(super) fn empty_once(
    pending: &mut bool,
    out: Option<&mut File>,
    path: &std::path::Path,
    then: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    let Some(f) = out.filter(|_| *pending) else {
        return Ok(());
    };
    // An empty file (a new one, typically) is not cut: on ext4 a cut to size 0 makes the
    // file's close start the writeback of everything written to it since (`auto_da_alloc`),
    // which held the end of a run 0.17 s per 650 MB written (perf/README.md, "The end of a
    // run").
    let empty = f.metadata().is_ok_and(|m| m.len() == 0);
    if empty { Ok(()) } else { f.set_len(0) }
        .and_then(|()| f.seek(io::SeekFrom::Start(0)))
        .and_then(|_| then(f))
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    *pending = false;
    Ok(())
}

/// A file cut behind the engine's back (logrotate's `copytruncate`) is written on at its new
/// end, not at the old offset after a hole of NUL bytes. Returns the file's length.
pub(super) fn follow_truncation(f: &mut File) -> io::Result<u64> {
    let len = f.metadata()?.len();
    if f.stream_position()? > len {
        f.seek(io::SeekFrom::Start(len))?;
    }
    Ok(len)
}

/// `<path>.<YYYYMMDD.HHMMSS>` (UTC), with `.N` added while that name is taken.
pub(crate) fn rotated_name(path: &std::path::Path) -> PathBuf {
    let mut target = PathBuf::from(format!("{}.{}", path.display(), crate::primitives::clock::utc_suffix()));
    let mut n = 1;
    while target.exists() {
        target = PathBuf::from(format!(
            "{}.{}.{n}",
            path.display(),
            crate::primitives::clock::utc_suffix()
        ));
        n += 1;
    }
    target
}

/// After a crash (`kill -9` in the middle of a write) an appended file may end in a partial
/// line: end it, so that the next event starts a line of its own. (The partial record stays
/// as an invalid line; its event was not checkpointed as written, so it is written again.)
fn end_partial_line(path: &std::path::Path, f: &mut File) -> io::Result<()> {
    use std::io::{Read, SeekFrom};
    let len = f.metadata()?.len();
    if len == 0 {
        return Ok(());
    }
    let mut r = File::open(path)?;
    r.seek(SeekFrom::Start(len - 1))?;
    let mut last = [0u8; 1];
    r.read_exact(&mut last)?;
    if last[0] != b'\n' {
        f.write_all(b"\n")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file where a directory of an output's path goes is named as such (it said "File
    /// exists"), and nothing is made.
    #[test]
    fn a_file_in_the_way_of_an_outputs_directory_is_named() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("blockfile"), b"x").unwrap();
        let Err(e) = FileSink::open(d.path().join("blockfile/sub/q.json"), false) else {
            panic!("opened an output under a file");
        };
        let msg = e.to_string();
        assert!(
            msg.contains("a file is in the way") && msg.contains("blockfile"),
            "{msg}"
        );
        assert_eq!(std::fs::read(d.path().join("blockfile")).unwrap(), b"x");
    }
}
