//! `file://` input: read a file to its end (or, with `--follow`, keep reading what is
//! appended, as `tail://` from the start does). A gzip file (magic bytes `1f 8b`) is
//! decompressed on the fly, as is every `zfile://` input.

use std::fs::File;
use std::path::Path;

use super::Router;
use super::framer::{Framer, LineSink};

impl LineSink for Router {
    fn line(&mut self, line: &[u8], line_no: u64, offset: u64) {
        Router::line(self, line, line_no, offset)
    }
    fn too_long(&mut self, line_no: u64, offset: u64, len: usize, max: usize) {
        Router::too_long(self, line_no, offset, len, max)
    }
}

/// Whether the file starts with the gzip magic bytes.
pub(crate) fn is_gzip(path: &Path) -> std::io::Result<bool> {
    use std::io::Read;
    let mut magic = [0u8; 2];
    let mut f = File::open(path)?;
    let mut got = 0;
    while got < 2 {
        match f.read(&mut magic[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got == 2 && magic == [0x1f, 0x8b])
}

/// Reads `path` from (uncompressed) offset `start` to the end through `router`,
/// decompressing it when `gzip` is set or the file is gzip. Returns the offset after the last
/// line handed out (where a reload goes on), or an error when the file cannot be opened or
/// read.
pub(crate) fn read_file(
    path: &Path,
    gzip: bool,
    start: u64,
    max_line: usize,
    router: &mut Router,
) -> std::io::Result<u64> {
    use std::io::{Read, Seek};
    let mut f = File::open(path)?;
    router.opened();
    if gzip || is_gzip(path)? {
        // Concatenated members (appended gzip output) are one stream.
        let mut d = flate2::read::MultiGzDecoder::new(std::io::BufReader::with_capacity(256 * 1024, f));
        std::io::copy(&mut (&mut d).take(start), &mut std::io::sink())?;
        read_all(d, start, max_line, router)
    } else {
        f.seek(std::io::SeekFrom::Start(start))?;
        read_all(f, start, max_line, router)
    }
}

fn read_all(mut f: impl std::io::Read, start: u64, max_line: usize, router: &mut Router) -> std::io::Result<u64> {
    let mut framer = Framer::new(max_line);
    framer.reset(start);
    loop {
        if router.stopping() {
            break;
        }
        let n = framer.fill(&mut f, router)?;
        router.add_bytes(n);
        if n == 0 {
            framer.finish(router);
            break;
        }
    }
    router.flush();
    Ok(framer.consumed())
}
