//! `zfile://` output: like `file://`, gzip-compressed (the original's zfile output was never
//! finished). Records are held as `file://` holds them (see `held`); each delivery (every
//! 100 ms or 256 KiB) appends one complete gzip member, which gzip readers treat as one
//! stream with the others, so the file is always a valid gzip file up to its end. A delivery
//! that fails part way (disk full, file size limit) is cut off again, whole: the file never
//! holds a partial member, and the records stay held for the next attempt.

use std::fs::File;
use std::io::{self, Seek, Write};
use std::path::PathBuf;

use flate2::Compression;
use flate2::write::GzEncoder;

use super::held::Held;

/// Held bytes that make the sink deliver without waiting for the next flush.
const WRITE_AT: usize = 256 * 1024;

/// A gzip file sink.
pub(crate) struct ZfileSink {
    pub path: PathBuf,
    out: Option<File>,
    pub held: Held,
    /// The last delivery failed.
    failing: bool,
    /// The compressed member being written, reused.
    member: Vec<u8>,
    /// What the writer should report: the file was deleted and opened again.
    pub notice: Option<String>,
    /// A truncating output not emptied yet (as `FileSink`'s).
    truncate_pending: bool,
}

impl ZfileSink {
    pub(crate) fn open(path: PathBuf, truncate: bool) -> io::Result<ZfileSink> {
        let host = crate::privilege::host_path(&path);
        super::file::create_parent(&host)?;
        let out = Some(super::file::open_file(&host, truncate)?);
        Ok(ZfileSink {
            path,
            out,
            held: Held::default(),
            failing: false,
            member: Vec::new(),
            notice: None,
            truncate_pending: truncate,
        })
    }

    /// The pipeline has started: a truncating output empties its file now (once).
    pub(crate) fn begin(&mut self) -> io::Result<()> {
        if std::mem::take(&mut self.truncate_pending)
            && let Some(f) = self.out.as_mut()
            && let Err(e) = super::file::empty(f)
        {
            self.truncate_pending = true;
            return Err(io::Error::new(e.kind(), format!("{}: {e}", self.path.display())));
        }
        Ok(())
    }

    /// Takes one record (ending with its newline).
    pub(crate) fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.held.push(bytes);
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

    /// Compresses what is held into one gzip member and appends it, or nothing at all.
    fn deliver(&mut self) -> io::Result<()> {
        if self.held.is_empty() {
            return Ok(());
        }
        self.begin()?;
        if let Some(n) = super::file::reopen_if_deleted(&mut self.out, &self.path)? {
            self.notice = Some(n);
        }
        let Some(f) = self.out.as_mut() else {
            return Err(io::Error::other("output is closed"));
        };
        let mut gz = GzEncoder::new(std::mem::take(&mut self.member), Compression::fast());
        gz.write_all(&self.held.buf)?;
        self.member = gz.finish()?;
        let before = super::file::follow_truncation(f)?;
        let r = f.write_all(&self.member);
        self.member.clear();
        if let Err(e) = r {
            // A truncating output writes at its position: both move back.
            f.set_len(before)
                .and_then(|()| f.seek(io::SeekFrom::Start(before)).map(drop))
                .map_err(|t| {
                    io::Error::new(t.kind(), format!("{e}; cutting off the partial member failed too: {t}"))
                })?;
            return Err(io::Error::new(e.kind(), format!("{}: {e}", self.path.display())));
        }
        self.held.sent = self.held.len();
        self.held.settle();
        Ok(())
    }

    /// At exit: delivers what is held.
    pub(crate) fn close(&mut self) -> io::Result<()> {
        self.flush()
    }

    /// Renames the file to `<path>.<YYYYMMDD.HHMMSS>` (UTC) and starts a new one; what cannot
    /// be written now stays held and goes to the new file.
    pub(crate) fn rotate(&mut self) -> io::Result<PathBuf> {
        let _ = self.flush();
        let path = crate::privilege::host_path(&self.path).into_owned();
        let target = super::file::rotated_name(&path);
        std::fs::rename(&path, &target)?;
        self.out = Some(super::file::open_file(&path, false)?);
        Ok(target)
    }
}
