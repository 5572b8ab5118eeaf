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
    /// What opening found and repaired: a last member cut by a crash, removed.
    pub repaired: Option<String>,
    /// Made by [`open`](Self::open), the pipeline not started (as `FileSink`'s).
    made_unstarted: bool,
    /// Done when the pipeline starts (a start that fails leaves the file as it was): the cut
    /// of a torn last member (the length to cut to), and an appending output's empty member.
    cut_pending: Option<u64>,
    empty_pending: bool,
}

impl ZfileSink {
    pub(crate) fn open(path: PathBuf, truncate: bool) -> io::Result<ZfileSink> {
        let host = crate::privilege::host_path(&path);
        super::file::create_parent_of_new(&host)?;
        let made = std::fs::symlink_metadata(&host).is_err();
        let f = super::file::open_file(&host, truncate).inspect_err(|_| super::file::remove_unstarted_dirs(&host))?;
        if made {
            super::file::note_unstarted_file(&host, &empty_member());
        }
        let mut repaired = None;
        // (A file this user cannot read is not looked at.)
        let torn = || torn_tail(&mut File::open(&host)?);
        let mut cut_pending = None;
        if !truncate && let Ok(Some(end)) = torn() {
            let len = f.metadata()?.len();
            cut_pending = Some(end);
            repaired = Some(format!(
                "{}: its last gzip member was cut ({} bytes after the last whole member, at {end}: a crash or power loss during a write); they are removed as the pipeline starts, so that what follows is readable (their records were not counted as written: they are written again)",
                path.display(),
                len - end
            ));
        }
        let out = Some(f);
        Ok(ZfileSink {
            path,
            out,
            held: Held::default(),
            failing: false,
            member: Vec::new(),
            notice: None,
            truncate_pending: truncate,
            repaired,
            made_unstarted: made,
            cut_pending,
            empty_pending: !truncate,
        })
    }

    /// The pipeline has started: a truncating output empties its file now; an appending one
    /// loses a torn last member, and a new (or empty) file gets an empty member: a file of
    /// 0 bytes is no gzip file to a reader (`zcat`: unexpected end of file), also when
    /// nothing is ever written (once).
    pub(crate) fn begin(&mut self) -> io::Result<()> {
        if std::mem::take(&mut self.made_unstarted) {
            super::file::made_file_started(&self.path);
        }
        if let Some(f) = self.out.as_ref() {
            if let Some(end) = self.cut_pending {
                f.set_len(end)
                    .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.path.display())))?;
                self.cut_pending = None;
            }
            if self.empty_pending {
                start_empty(f)?;
                self.empty_pending = false;
            }
        }
        super::file::empty_once(&mut self.truncate_pending, self.out.as_mut(), &self.path, |f| {
            f.write_all(&empty_member())
        })
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
        let f = super::file::open_file(&path, false)?;
        // A gzip file from the start, as a new output's (see `open`).
        start_empty(&f)?;
        self.out = Some(f);
        Ok(target)
    }
}

/// Gives an empty file an empty member. On a full disk it waits for the first delivery, as the
/// records do, and no part of the member stays.
fn start_empty(f: &File) -> io::Result<()> {
    if f.metadata()?.len() == 0 && (&*f).write_all(&empty_member()).is_err() {
        let _ = f.set_len(0);
    }
    Ok(())
}

impl Drop for ZfileSink {
    fn drop(&mut self) {
        if self.made_unstarted {
            // Closed first: what it holds is read back to tell whether it is still empty.
            self.out = None;
            super::file::remove_if_unwritten(&self.path, &empty_member());
        }
    }
}

/// A gzip member of no data (20 bytes).
fn empty_member() -> Vec<u8> {
    GzEncoder::new(Vec::new(), Compression::fast())
        .finish()
        .unwrap_or_default()
}

/// How much of the file's end is looked at for its last whole member (members are at most
/// the records of one delivery, compressed).
const TAIL_WINDOW: u64 = 8 << 20;

/// Where the last whole gzip member of `f` ends when bytes after it are no whole member (a
/// write cut by a crash): appending after them made everything written next unreadable.
/// `None` when the file ends with a whole member, is empty, or when no whole member was found
/// within its last [`TAIL_WINDOW`] bytes (nothing is cut that could not be told).
fn torn_tail(f: &mut File) -> io::Result<Option<u64>> {
    use std::io::Read;
    let len = f.metadata()?.len();
    if len == 0 {
        return Ok(None);
    }
    let base = len.saturating_sub(TAIL_WINDOW);
    let mut buf = Vec::with_capacity((len - base) as usize);
    f.seek(io::SeekFrom::Start(base))?;
    Read::by_ref(f).take(len - base).read_to_end(&mut buf)?;
    // Member headers (ID1 ID2 CM=deflate), the last first: the first that decodes whole
    // (its CRC and size checked) tells where the whole members end.
    for j in (0..buf.len().saturating_sub(2)).rev() {
        if buf[j..j + 3] != [0x1f, 0x8b, 0x08] {
            continue;
        }
        let mut d = flate2::bufread::GzDecoder::new(&buf[j..]);
        if io::copy(&mut d, &mut io::sink()).is_err() {
            continue;
        }
        let end = len - d.into_inner().len() as u64;
        return Ok((end < len).then_some(end));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(text: &str) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::fast());
        e.write_all(text.as_bytes()).unwrap();
        e.finish().unwrap()
    }

    /// A file whose last member was cut is cut back to its whole members; a whole file, an
    /// empty one and one that is no gzip at all are left as they are.
    #[test]
    fn a_cut_last_member_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.json.gz");
        let whole = [member("{\"a\":1}\n"), member("{\"b\":2}\n")].concat();
        let third = member("{\"c\":3}\n{\"d\":4}\n");
        for cut in [1, 5, 10, third.len() - 1] {
            std::fs::write(&path, [&whole[..], &third[..cut]].concat()).unwrap();
            let mut f = File::open(&path).unwrap();
            assert_eq!(torn_tail(&mut f).unwrap(), Some(whole.len() as u64), "cut at {cut}");
        }
        for (bytes, what) in [
            ([&whole[..], &third[..]].concat(), "whole"),
            (Vec::new(), "empty"),
            (b"plain text, no gzip\n".to_vec(), "not gzip"),
        ] {
            std::fs::write(&path, &bytes).unwrap();
            let mut f = File::open(&path).unwrap();
            assert_eq!(torn_tail(&mut f).unwrap(), None, "{what}");
        }
        // Opened to append: the cut member is removed, and the file reads whole after a write.
        std::fs::write(&path, [&whole[..], &third[..7]].concat()).unwrap();
        let mut sink = ZfileSink::open(path.clone(), false).unwrap();
        assert!(
            sink.repaired
                .as_deref()
                .is_some_and(|r| r.contains("last gzip member was cut"))
        );
        sink.write(b"{\"e\":5}\n").unwrap();
        sink.close().unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(
            &mut flate2::read::MultiGzDecoder::new(File::open(&path).unwrap()),
            &mut text,
        )
        .unwrap();
        assert_eq!(text, "{\"a\":1}\n{\"b\":2}\n{\"e\":5}\n");
        // A new file, and one emptied at the start, are gzip files of nothing before any write.
        for truncate in [false, true] {
            let path = dir.path().join(format!("new-{truncate}.json.gz"));
            std::fs::write(&path, if truncate { &whole[..] } else { &b""[..] }).unwrap();
            let mut sink = ZfileSink::open(path.clone(), truncate).unwrap();
            sink.begin().unwrap();
            let bytes = std::fs::read(&path).unwrap();
            assert!(!bytes.is_empty(), "{truncate}");
            let mut text = String::new();
            std::io::Read::read_to_string(&mut flate2::read::MultiGzDecoder::new(&bytes[..]), &mut text).unwrap();
            assert_eq!(text, "", "{truncate}");
            // SIGUSR1: the file made new at the path is one too.
            sink.rotate().unwrap();
            let bytes = std::fs::read(&path).unwrap();
            assert!(!bytes.is_empty(), "rotated, {truncate}");
        }
    }
}
