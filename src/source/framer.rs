//! Line framing over a reusable buffer: finds line ends with memchr, keeps the unread tail,
//! and caps growth at the maximum line length (longer lines are reported and skipped, their
//! neighbours kept).

use std::io::{self, Read};

/// What the framer hands out.
pub trait LineSink {
    /// A complete line, without its `\n`.
    fn line(&mut self, line: &[u8], line_no: u64, offset: u64);
    /// A line longer than the maximum was skipped.
    fn too_long(&mut self, line_no: u64, offset: u64, len: usize, max: usize);
    /// `n` NUL bytes at `offset`, at the start of line `line_no`, were skipped (a hole in the
    /// file); `followed`: a line comes after them (else the stream ended in the hole).
    fn hole(&mut self, line_no: u64, offset: u64, n: usize, followed: bool) {
        let _ = (line_no, offset, n, followed);
    }
}

/// Splits a byte stream into lines.
pub struct Framer {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    max_line: usize,
    /// Stream offset of `buf[start]`.
    offset: u64,
    /// Lines seen so far (the next line's number minus one).
    pub line_no: u64,
    /// While skipping an overlong line: its start offset and length so far.
    skipping: Option<(u64, usize)>,
    /// NUL bytes skipped at the start of the current line (a hole: `copytruncate` under a
    /// writer that goes on at its old offset): where they began and how many. They are no part
    /// of the line, so a hole longer than `max_line` costs the line after it nothing.
    hole: Option<(u64, usize)>,
}

const READ_CHUNK: usize = 256 * 1024;

impl Framer {
    pub fn new(max_line: usize) -> Self {
        Framer {
            buf: vec![0; (max_line + 1).max(READ_CHUNK) + READ_CHUNK],
            start: 0,
            end: 0,
            max_line,
            offset: 0,
            line_no: 0,
            skipping: None,
            hole: None,
        }
    }

    /// Stream offset of the next unread byte.
    pub fn position(&self) -> u64 {
        self.offset + (self.end - self.start) as u64
    }

    /// Stream offset just after the last line handed out (where a restart would resume).
    pub fn consumed(&self) -> u64 {
        self.offset
    }

    /// Whether the framer is inside a run of NUL bytes at a line's start (a hole), with
    /// nothing after it read yet.
    pub fn in_hole(&self) -> bool {
        self.hole.is_some() && self.start == self.end
    }

    /// Forgets any partial line and restarts at stream offset `offset`, after `line_no`
    /// lines (so that the next line is number `line_no + 1`).
    pub fn reset(&mut self, offset: u64, line_no: u64) {
        self.start = 0;
        self.end = 0;
        self.offset = offset;
        self.line_no = line_no;
        self.skipping = None;
        self.hole = None;
    }

    /// Reads once from `src` and hands out every complete line. Returns the bytes read
    /// (0 at end of file).
    pub fn fill(&mut self, src: &mut impl Read, sink: &mut impl LineSink) -> io::Result<usize> {
        if self.start > 0 && (self.buf.len() - self.end < READ_CHUNK) {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let n = loop {
            match src.read(&mut self.buf[self.end..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };
        let scan_from = self.end;
        self.end += n;
        self.split(scan_from, sink);
        Ok(n)
    }

    /// Skips the NUL bytes at the start of the current line (see `hole`); false when the
    /// buffer ended inside them (all consumed).
    fn skip_nuls(&mut self) -> bool {
        if self.skipping.is_some() || self.start == self.end || self.buf[self.start] != 0 {
            return true;
        }
        let run = self.buf[self.start..self.end].iter().take_while(|&&c| c == 0).count();
        self.hole.get_or_insert((self.offset, 0)).1 += run;
        self.start += run;
        self.offset += run as u64;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            return false;
        }
        true
    }

    /// Reports the hole before the line `self.buf[self.start..end]` being handed out, if
    /// there was one.
    fn hole_before(&mut self, sink: &mut impl LineSink, end: usize) {
        if let Some((off, n)) = self.hole.take() {
            let followed = !self.buf[self.start..end]
                .iter()
                .all(|c| matches!(c, b' ' | b'\t' | b'\r'));
            sink.hole(self.line_no, off, n, followed);
        }
    }

    fn split(&mut self, mut scan_from: usize, sink: &mut impl LineSink) {
        loop {
            if !self.skip_nuls() {
                return;
            }
            scan_from = scan_from.max(self.start);
            let Some(i) = memchr::memchr(b'\n', &self.buf[scan_from..self.end]) else {
                break;
            };
            let nl = scan_from + i;
            let len = nl - self.start;
            self.line_no += 1;
            self.hole_before(sink, nl);
            if let Some((off, skipped)) = self.skipping.take() {
                sink.too_long(self.line_no, off, skipped + len, self.max_line);
            } else if content_len(&self.buf[self.start..nl]) > self.max_line {
                sink.too_long(self.line_no, self.offset, len, self.max_line);
            } else {
                sink.line(&self.buf[self.start..nl], self.line_no, self.offset);
            }
            self.offset += (len + 1) as u64;
            self.start = nl + 1;
            scan_from = self.start;
        }
        // No newline in what is left: drop it if it is already too long to be a line (its
        // last byte may be the `\r` of a CRLF, which does not count).
        let pending = self.end - self.start;
        if pending > self.max_line + 1 || (pending == self.max_line + 1 && self.buf[self.end - 1] != b'\r') {
            self.skipping.get_or_insert((self.offset, 0)).1 += pending;
            self.offset += pending as u64;
            self.start = 0;
            self.end = 0;
        } else if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// At the end of a stream: the unterminated last line, if any, is a line too.
    pub fn finish(&mut self, sink: &mut impl LineSink) {
        let len = self.end - self.start;
        if len == 0 && self.skipping.is_none() {
            // The stream ended in a hole (or at a line's end).
            if let Some((off, n)) = self.hole.take() {
                sink.hole(self.line_no + 1, off, n, false);
            }
        } else if self.hole.is_some() {
            self.line_no += 1;
            self.hole_before(sink, self.end);
            self.line_no -= 1;
        }
        if let Some((off, skipped)) = self.skipping.take() {
            self.line_no += 1;
            sink.too_long(self.line_no, off, skipped + len, self.max_line);
        } else if content_len(&self.buf[self.start..self.end]) > self.max_line {
            self.line_no += 1;
            sink.too_long(self.line_no, self.offset, len, self.max_line);
        } else if len > 0 {
            self.line_no += 1;
            sink.line(&self.buf[self.start..self.end], self.line_no, self.offset);
        }
        self.offset += len as u64;
        self.start = 0;
        self.end = 0;
    }
}

/// A line's length without the `\r` of a CRLF end, which is dropped (what `max_line_bytes`
/// limits).
fn content_len(line: &[u8]) -> usize {
    line.len() - usize::from(line.last() == Some(&b'\r'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Collect(
        Vec<(String, u64, u64)>,
        Vec<(u64, u64, usize)>,
        Vec<(u64, u64, usize, bool)>,
    );

    impl LineSink for Collect {
        fn line(&mut self, line: &[u8], n: u64, off: u64) {
            self.0.push((String::from_utf8_lossy(line).into_owned(), n, off));
        }
        fn too_long(&mut self, n: u64, off: u64, len: usize, _max: usize) {
            self.1.push((n, off, len));
        }
        fn hole(&mut self, n: u64, off: u64, len: usize, followed: bool) {
            self.2.push((n, off, len, followed));
        }
    }

    /// NUL bytes at a line's start are a hole, not part of the line: however long (here 50
    /// times the maximum, read in any steps), the line after it is handed out whole and the
    /// hole reported with its place and size; a stream that ends in a hole reports it too
    /// (audit, 2026-12-06: a hole longer than the maximum made the line after it too long).
    #[test]
    fn holes_of_nul_bytes_are_skipped_whatever_their_length() {
        let mut input = b"a\n".to_vec();
        input.extend(std::iter::repeat_n(0u8, 3200));
        input.extend_from_slice(b"b\nc\n");
        input.extend(std::iter::repeat_n(0u8, 100));
        input.extend_from_slice(b"\n\0\0d");
        input.extend(std::iter::repeat_n(0u8, 20));
        let last = format!("d{}", "\0".repeat(20));
        for step in [1, 7, 64, 4096, 1 << 20] {
            let c = frame(&input, 64, step);
            let lines: Vec<_> = c.0.iter().map(|l| (l.0.as_str(), l.1, l.2)).collect();
            assert_eq!(
                lines,
                vec![
                    ("a", 1, 0),
                    ("b", 2, 3202),
                    ("c", 3, 3204),
                    ("", 4, 3306),
                    (last.as_str(), 5, 3309)
                ],
                "step {step}"
            );
            assert!(c.1.is_empty(), "step {step}: {:?}", c.1);
            assert_eq!(
                c.2,
                vec![(2, 2, 3200, true), (4, 3206, 100, false), (5, 3307, 2, true)],
                "step {step}"
            );
        }
        // Only a hole after the last line.
        let mut tail = b"a\n".to_vec();
        tail.extend(std::iter::repeat_n(0u8, 500));
        let c = frame(&tail, 64, 100);
        assert_eq!(c.0.len(), 1);
        assert_eq!(c.2, vec![(2, 2, 500, false)]);
    }

    /// A reader that returns at most `step` bytes per call, to cut lines anywhere.
    struct Trickle<'a>(&'a [u8], usize);
    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.1.min(self.0.len()).min(out.len());
            out[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    fn frame(input: &[u8], max: usize, step: usize) -> Collect {
        let mut f = Framer::new(max);
        let mut c = Collect::default();
        let mut src = Trickle(input, step);
        while f.fill(&mut src, &mut c).unwrap() > 0 {}
        f.finish(&mut c);
        c
    }

    #[test]
    fn lines_offsets_and_last_line() {
        for step in [1, 3, 7, 1 << 20] {
            let c = frame(b"ab\ncd\r\n\nlast", 100, step);
            assert_eq!(
                c.0,
                vec![
                    ("ab".into(), 1, 0),
                    ("cd\r".into(), 2, 3),
                    ("".into(), 3, 7),
                    ("last".into(), 4, 8)
                ]
            );
        }
    }

    #[test]
    fn overlong_lines_are_skipped_with_neighbours_kept() {
        let big = vec![b'x'; 5000];
        let mut input = b"a\n".to_vec();
        input.extend_from_slice(&big);
        input.extend_from_slice(b"\nb\n");
        input.extend_from_slice(&big);
        for step in [100, 4096, 1 << 20] {
            let c = frame(&input, 64, step);
            let lines: Vec<_> = c.0.iter().map(|l| l.0.as_str()).collect();
            assert_eq!(lines, vec!["a", "b"], "step {step}");
            assert_eq!(c.1, vec![(2, 2, 5000), (4, 5005, 5000)], "step {step}");
        }
    }

    /// `max_line_bytes` limits a line without the `\r` of its CRLF end (dropped anyway): a
    /// line of exactly the maximum is one with either end, one byte more is too long, also as
    /// the unterminated last line.
    #[test]
    fn the_limit_does_not_count_a_crlf_ends_cr() {
        let at_max = "y".repeat(64);
        let over = "z".repeat(65);
        let input = format!("{at_max}\r\n{at_max}\n{over}\r\nok\r\n{over}");
        for step in [1, 5, 64, 65, 66, 1 << 20] {
            let c = frame(input.as_bytes(), 64, step);
            let lines: Vec<_> = c.0.iter().map(|l| l.0.clone()).collect();
            assert_eq!(
                lines,
                vec![format!("{at_max}\r"), at_max.clone(), "ok\r".to_string()],
                "step {step}"
            );
            assert_eq!(c.1, vec![(3, 131, 66), (5, 202, 65)], "step {step}");
        }
    }
}
