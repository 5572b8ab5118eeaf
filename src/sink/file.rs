//! `file://` output: one event per line, appended (or truncated with `<`), buffered, flushed
//! by the writer at least every 100 ms and at exit; SIGUSR1 renames it with a UTC timestamp
//! suffix and reopens it.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

/// A file sink.
pub struct FileSink {
    pub path: PathBuf,
    out: Option<BufWriter<File>>,
}

impl FileSink {
    /// Opens (creating it and its directory if needed) `path`.
    pub fn open(path: PathBuf, truncate: bool) -> io::Result<FileSink> {
        create_parent(&path)?;
        let mut f = open_file(&path, truncate)?;
        if !truncate {
            end_partial_line(&path, &mut f)?;
        }
        Ok(FileSink {
            path,
            out: Some(BufWriter::with_capacity(256 * 1024, f)),
        })
    }

    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        match &mut self.out {
            Some(w) => w.write_all(bytes),
            None => Err(io::Error::other("output is closed")),
        }
    }

    pub fn flush(&mut self) -> io::Result<()> {
        match &mut self.out {
            Some(w) => w.flush(),
            None => Ok(()),
        }
    }

    /// Renames the file to `<path>.<YYYYMMDD.HHMMSS>` (UTC) and reopens `path`.
    pub fn rotate(&mut self) -> io::Result<PathBuf> {
        self.flush()?;
        let path = crate::privilege::host_path(&self.path).into_owned();
        let target = rotated_name(&path);
        self.out = None;
        std::fs::rename(&path, &target)?;
        self.out = Some(BufWriter::with_capacity(256 * 1024, open_file(&path, false)?));
        Ok(target)
    }
}

/// Creates the directory `path` goes in, if needed.
pub(super) fn create_parent(path: &std::path::Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::create_dir_all(dir),
        _ => Ok(()),
    }
}

/// Opens an output file: appending, or truncated with `truncate` (the `<` suffix).
pub(super) fn open_file(path: &std::path::Path, truncate: bool) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.create(true);
    if truncate {
        o.write(true).truncate(true);
    } else {
        o.append(true);
    }
    o.open(path)
}

/// `<path>.<YYYYMMDD.HHMMSS>` (UTC), with `.N` added while that name is taken.
pub fn rotated_name(path: &std::path::Path) -> PathBuf {
    let mut target = PathBuf::from(format!("{}.{}", path.display(), crate::metrics::utc_suffix()));
    let mut n = 1;
    while target.exists() {
        target = PathBuf::from(format!("{}.{}.{n}", path.display(), crate::metrics::utc_suffix()));
        n += 1;
    }
    target
}

/// After a crash (`kill -9` in the middle of a write) an appended file may end in a partial
/// line: end it, so that the next event starts a line of its own. (The partial record stays
/// as an invalid line; its event was not checkpointed as written, so it is written again.)
fn end_partial_line(path: &std::path::Path, f: &mut File) -> io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
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
