//! `file://` input: read a file to its end (or, with `--follow`, keep reading what is
//! appended, as `tail://` from the start does).

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

/// Reads `path` to the end through `router`. Returns an error only when the file cannot be
/// opened or read.
pub fn read_file(path: &Path, max_line: usize, router: &mut Router) -> std::io::Result<()> {
    let mut f = File::open(path)?;
    let mut framer = Framer::new(max_line);
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
    Ok(())
}
