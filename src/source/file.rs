//! `file://` input: read a file to its end (or, with `--follow`, keep reading what is
//! appended, as `tail://` from the start does). A gzip file (magic bytes `1f 8b`) is
//! decompressed on the fly, as is every `zfile://` input.

use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::config::types::Pace;

use super::Router;
use super::framer::{Framer, LineSink};

impl LineSink for Router {
    fn line(&mut self, line: &[u8], line_no: u64, offset: u64) {
        Router::line(self, line, line_no, offset)
    }
    fn too_long(&mut self, line_no: u64, offset: u64, len: usize, max: usize) {
        Router::too_long(self, line_no, offset, len, max)
    }
    fn hole(&mut self, line_no: u64, offset: u64, n: usize, followed: bool) {
        self.report_hole(line_no, offset, n, followed)
    }
}

/// Whether the file starts with the gzip magic bytes.
pub(crate) fn is_gzip(path: &Path) -> std::io::Result<bool> {
    use std::io::Read;
    let mut magic = [0u8; 2];
    let mut f = File::open(crate::privilege::host_path(path))?;
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
/// decompressing it when `gzip` is set or the file is gzip; with a `pace`, at that many times
/// the pace of the events' timestamps. Returns where the last line handed out ends (where a
/// reload goes on), or an error when the file cannot be opened or read.
pub(crate) fn read_file(
    path: &Path,
    gzip: bool,
    start: super::FilePos,
    max_line: usize,
    pace: Option<Pace>,
    router: &mut Router,
) -> std::io::Result<super::FilePos> {
    use std::io::{Read, Seek};
    let mut f = File::open(crate::privilege::host_path(path))?;
    router.opened();
    if gzip || is_gzip(path)? {
        // Concatenated members (appended gzip output) are one stream.
        let mut d = flate2::read::MultiGzDecoder::new(std::io::BufReader::with_capacity(256 * 1024, f));
        std::io::copy(&mut (&mut d).take(start.offset), &mut std::io::sink())?;
        read_all(d, start, max_line, pace, router)
    } else {
        f.seek(std::io::SeekFrom::Start(start.offset))?;
        let meta = f.try_clone();
        let end = read_all(f, start, max_line, pace, router)?;
        // A file cut while it was read (truncated, rewritten smaller) ends the read early,
        // with at most one broken line at the cut: say so, rather than a quiet end.
        if let Ok(len) = meta.and_then(|m| m.metadata()).map(|m| m.len())
            && len < end.offset
        {
            router.report(
                crate::diag::Kind::ReadError,
                end.line,
                end.offset,
                0,
                &format!(
                    "{}: the file shrank to {len} bytes while it was read (read up to byte {}): what it holds now was not read",
                    path.display(),
                    end.offset
                ),
            );
        }
        Ok(end)
    }
}

fn read_all(
    f: impl std::io::Read,
    start: super::FilePos,
    max_line: usize,
    pace: Option<Pace>,
    router: &mut Router,
) -> std::io::Result<super::FilePos> {
    match pace {
        None => frame_all(f, start, max_line, router),
        Some(p) => {
            let mut paced = Paced {
                router,
                factor: p.factor(),
                origin: None,
            };
            paced.router.set_pace_lag(0);
            frame_all(f, start, max_line, &mut paced)
        }
    }
}

/// What `read_all` hands lines to: the router, or the router behind a pace.
trait Reading: LineSink {
    fn router(&mut self) -> &mut Router;
}

impl Reading for Router {
    fn router(&mut self) -> &mut Router {
        self
    }
}

impl Reading for Paced<'_> {
    fn router(&mut self) -> &mut Router {
        self.router
    }
}

fn frame_all(
    mut f: impl std::io::Read,
    start: super::FilePos,
    max_line: usize,
    sink: &mut impl Reading,
) -> std::io::Result<super::FilePos> {
    let mut framer = Framer::new(max_line);
    framer.reset(start.offset, start.line);
    loop {
        if sink.router().stopping() {
            break;
        }
        let n = match framer.fill(&mut f, sink) {
            Ok(n) => n,
            Err(e) => {
                // A read that fails (a damaged gzip file, an I/O error) keeps what came before
                // it: the lines framed so far go to the workers, and a line cut by the error is
                // handed out as the last one (an invalid line, reported as such).
                framer.finish(sink);
                sink.router().flush();
                return Err(e);
            }
        };
        sink.router().add_bytes(n);
        if n == 0 {
            framer.finish(sink);
            break;
        }
    }
    sink.router().flush();
    Ok(super::FilePos {
        offset: framer.consumed(),
        line: framer.line_no,
    })
}

/// Replays lines on the schedule of their `timestamp`s, `factor` times faster: the first
/// event goes at once, each later one when its time since the first, divided by `factor`,
/// has passed. Events without a timestamp (or earlier than the first) go at once. The lag
/// behind the schedule is published for the status line and `/metrics`.
struct Paced<'a> {
    router: &'a mut Router,
    factor: f64,
    /// The first event's timestamp (µs) and when it went.
    origin: Option<(i64, Instant)>,
}

impl LineSink for Paced<'_> {
    fn line(&mut self, line: &[u8], line_no: u64, offset: u64) {
        if let Some(ts) = timestamp_micros(line) {
            match self.origin {
                None => self.origin = Some((ts, Instant::now())),
                Some((first, at)) => {
                    let due = at + Duration::from_secs_f64((ts - first).max(0) as f64 / 1e6 / self.factor);
                    let now = Instant::now();
                    if due > now {
                        // What was read so far goes to the workers before the wait.
                        self.router.flush();
                        while !self.router.stopping() {
                            let now = Instant::now();
                            if now >= due {
                                break;
                            }
                            std::thread::sleep((due - now).min(Duration::from_millis(50)));
                        }
                        self.router.set_pace_lag(0);
                    } else {
                        self.router.set_pace_lag((now - due).as_micros() as u64);
                    }
                }
            }
        }
        self.router.line(line, line_no, offset)
    }
    fn too_long(&mut self, line_no: u64, offset: u64, len: usize, max: usize) {
        self.router.too_long(line_no, offset, len, max)
    }
    fn hole(&mut self, line_no: u64, offset: u64, n: usize, followed: bool) {
        self.router.report_hole(line_no, offset, n, followed)
    }
}

/// The top-level `timestamp` member of an EVE line, in µs since the epoch (UTC when it has no
/// zone). (The first `"timestamp"` anywhere in the line was taken, a nested object's too.)
fn timestamp_micros(line: &[u8]) -> Option<i64> {
    use crate::event::scan;
    let start = line.iter().position(|b| !b.is_ascii_whitespace())?;
    let mut at = scan::first_member(line, start);
    while let Some(i) = at {
        let (m, next) = scan::next_member(line, i)?;
        if !m.key_escaped && &line[m.key_start as usize..m.key_end as usize] == b"timestamp" {
            let value = &line[m.val_start as usize..m.val_end as usize];
            let text = value.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
            let t = crate::event::timestamp::parse(text)?;
            return Some(t.epoch_secs(t.offset.unwrap_or(0)) * 1_000_000 + i64::from(t.nanos / 1000));
        }
        at = next;
    }
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_of_eve_lines() {
        let t = |l: &str| super::timestamp_micros(l.as_bytes());
        assert_eq!(
            t(r#"{"timestamp":"2024-03-01T12:00:00.123456+0000","event_type":"dns"}"#),
            Some(1_709_294_400_123_456)
        );
        assert_eq!(
            t(r#"{"event_type":"dns", "timestamp" : "2024-03-01T13:00:00.5+0100"}"#),
            Some(1_709_294_400_500_000)
        );
        assert_eq!(t(r#"{"event_type":"dns"}"#), None);
        assert_eq!(t(r#"{"timestamp":12}"#), None);
        assert_eq!(t(r#"{"x":{"timestamp":"bad"}}"#), None);
        // The top level's, not a nested object's that comes first.
        assert_eq!(
            t(r#"{"flow":{"timestamp":"2020-01-01T00:00:00+0000"},"timestamp":"2024-03-01T12:00:00.123456+0000"}"#),
            Some(1_709_294_400_123_456)
        );
    }
}
