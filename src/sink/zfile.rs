//! `zfile://` output: like `file://`, gzip-compressed (the original's zfile output was never
//! finished). Appending adds a gzip member, which gzip readers treat as one stream; each
//! flush ends a deflate block, so what is on disk is always readable up to the last flush.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use flate2::Compression;
use flate2::write::GzEncoder;

/// A gzip file sink.
pub struct ZfileSink {
    pub path: PathBuf,
    out: Option<GzEncoder<BufWriter<File>>>,
}

impl ZfileSink {
    pub fn open(path: PathBuf, truncate: bool) -> io::Result<ZfileSink> {
        super::file::create_parent(&path)?;
        let out = Some(Self::encoder(&path, truncate)?);
        Ok(ZfileSink { path, out })
    }

    fn encoder(path: &std::path::Path, truncate: bool) -> io::Result<GzEncoder<BufWriter<File>>> {
        let f = super::file::open_file(path, truncate)?;
        Ok(GzEncoder::new(
            BufWriter::with_capacity(256 * 1024, f),
            Compression::fast(),
        ))
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

    /// Writes the gzip trailer (at exit).
    pub fn close(&mut self) -> io::Result<()> {
        match self.out.take() {
            Some(w) => w.finish()?.flush(),
            None => Ok(()),
        }
    }

    /// Closes the file, renames it to `<path>.<YYYYMMDD.HHMMSS>` (UTC) and starts a new one.
    pub fn rotate(&mut self) -> io::Result<PathBuf> {
        self.close()?;
        let target = super::file::rotated_name(&self.path);
        std::fs::rename(&self.path, &target)?;
        self.out = Some(Self::encoder(&self.path, false)?);
        Ok(target)
    }
}
