//! Full JSON validation of an event line without building anything: the workers run it on
//! every line before a script sees it (the reader only frames and routes), and learn on the
//! way the top level's keys (bloom bits and duplicates) that field lookups use. It accepts exactly
//! what the reader's simd-json parse used to accept: RFC 8259 JSON whose root is an object,
//! UTF-8, no lone surrogate in a `\u` escape, numbers that do not overflow a double (integers
//! beyond 64 bits too, read as doubles, as serde_json and cjson read them; simd-json with its
//! `big-int-as-float` feature), at most 1,024 nested objects and arrays (simd-json's and
//! simdjson's default depth limit). A rejected line is parsed once more by simd-json
//! (`flow_key::RouteParser`) for the message of its report, so reports read as they did.
//! Lines as Suricata writes them (no whitespace between tokens, no escape, ASCII strings)
//! take a compact walk first ([`Validator::compact`], about a tenth faster); any other line,
//! and any line it does not accept, takes the general walk, which has the last word.

use super::KeyBloom;
use super::flow_key::{LineError, RouteParser};
use super::scan::{Member, hex4};

/// A reusable validator: its stack of open objects and arrays and its key lists are kept
/// between lines, so a line allocates nothing once warm.
#[derive(Default)]
pub(crate) struct Validator {
    /// One byte per open container: `OBJECT` or `ARRAY`.
    stack: Vec<u8>,
    /// The top-level members of a line whose keys' bloom bits collided, for the duplicate
    /// check (collected only then: most lines never need them).
    keys: Vec<Member>,
    /// Whether some top-level key's bloom bits were set already (a possible repeat).
    maybe_dup: bool,
    /// An escaped key, unescaped for its bloom bits.
    text: Vec<u8>,
    /// Where and why the last rejected line failed (for its report).
    fail: Option<(usize, Fail)>,
    /// The top-level members of the last line, recorded by the compact walk when `record` is
    /// set (see `TopLevel::members`).
    members: Vec<Member>,
    record: bool,
    /// Tests: every line takes the general walk.
    #[cfg(test)]
    general_only: bool,
}

/// Why a line is not a valid event, found where the walk stopped (see [`explain`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fail {
    /// The line does not start with `{`.
    Root,
    /// A value was expected (after `:`, `[` or `,` in an array).
    Value,
    /// A string starting there is invalid (the cause is found by [`explain_string`]).
    Str,
    Number,
    Literal,
    /// A key's opening quote was expected.
    Key,
    Colon,
    /// `,` or the container's end was expected.
    Separator,
    /// Text after the root object.
    Trailing,
    TooDeep,
}

/// What validation learns of a valid event's top level, for the field lookups.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TopLevel {
    /// The top-level keys' bloom bits (`EventMeta::keys`).
    pub keys: KeyBloom,
    /// Whether a top-level key occurs twice.
    pub dup_keys: bool,
    /// Where `LineCheck::verdict` kept the line's top-level members, plus one (0: none were
    /// recorded, as for a line that took the general walk); see `Validator::members`.
    pub members: u32,
}

const OBJECT: u8 = b'{';
const ARRAY: u8 = b'[';
/// Open objects and arrays allowed at once (simd-json's `DEFAULT_MAX_DEPTH`).
const MAX_DEPTH: usize = 1024;

impl Validator {
    /// `Some` with the top level's keys when `line` is a valid JSON object (see the module's
    /// rules).
    pub(crate) fn check_object(&mut self, line: &[u8]) -> Option<TopLevel> {
        let root = ws(line, 0);
        if line.get(root) != Some(&b'{') {
            return self.failed(root, Fail::Root);
        }
        self.maybe_dup = false;
        self.fail = None;
        let mut top = TopLevel::default();
        self.members.clear();
        #[cfg(test)]
        let compact = !self.general_only && self.compact(line, root, &mut top);
        #[cfg(not(test))]
        let compact = self.compact(line, root, &mut top);
        if !compact {
            self.maybe_dup = false;
            top = TopLevel::default();
            self.members.clear();
            self.document(line, root, &mut top)?;
        } else if self.members.len() >= MAX_RECORDED {
            // Too many to keep (the lookups scan): bounds what each kept vector holds.
            self.members.clear();
        }
        // Only when two keys' bloom bits collided: compare the keys themselves (pairwise when
        // few, by sorting when many, as the lazy lookups' own check does).
        if self.maybe_dup {
            let members = if self.members.is_empty() {
                super::scan::object_members(line, root, &mut self.keys);
                &self.keys
            } else {
                &self.members
            };
            top.dup_keys = super::scan::has_duplicate_keys(line, members);
        }
        Some(top)
    }

    /// Whether `line` is a valid JSON object.
    #[cfg(test)]
    pub(crate) fn is_valid_object(&mut self, line: &[u8]) -> bool {
        self.check_object(line).is_some()
    }

    /// The fast path for lines as Suricata writes them (no whitespace between tokens, no
    /// escape, only ASCII in strings, at most [`COMPACT_DEPTH`] levels): whether the object at
    /// `root` is a valid line of that shape, its top-level keys noted in `top` on the way.
    /// `false` says nothing (the line may still be valid): the general walk then decides. It
    /// accepts no line the general walk rejects, and notes the same keys: the same checks in
    /// fewer steps (a member is a key, a colon, a value and a separator, with no whitespace to
    /// skip between them, and no container stack: the nesting is the recursion).
    fn compact(&mut self, b: &[u8], root: usize, top: &mut TopLevel) -> bool {
        let end = if self.record {
            self.compact_top::<true>(b, root + 1, top)
        } else {
            self.compact_top::<false>(b, root + 1, top)
        };
        let Some(end) = end else {
            return false;
        };
        ws(b, end) == b.len()
    }

    /// The members of the root object, whose `{` is right before `i`, in the compact shape;
    /// the position after its `}`. The keys go into `top`, the members into `members` when
    /// `RECORD`.
    fn compact_top<const RECORD: bool>(&mut self, b: &[u8], i: usize, top: &mut TopLevel) -> Option<usize> {
        self.compact_members(b, i, 0, |v, key, end, val_end| {
            v.top_key(b, key + 1, end - 1, false, top);
            if RECORD && v.members.len() < MAX_RECORDED {
                // Offsets fit in u32: lines live in batch buffers indexed by u32.
                v.members.push(Member {
                    key_start: (key + 1) as u32,
                    key_end: (end - 1) as u32,
                    key_escaped: false,
                    val_start: (end + 1) as u32,
                    val_end: val_end as u32,
                });
            }
        })
    }

    /// The members of a nested object whose `{` is right before `i`, in the compact shape;
    /// the position after its `}`.
    #[inline]
    fn compact_object(&mut self, b: &[u8], i: usize, depth: u32) -> Option<usize> {
        self.compact_members(b, i, depth, |_, _, _, _| {})
    }

    /// The walk of an object's members in the compact shape (values at `depth`), from `i`
    /// right after its `{`; the position after its `}`. `member` gets each valid member: the
    /// positions of its key's quotes and the end of its value.
    #[inline(always)]
    fn compact_members(
        &mut self,
        b: &[u8],
        mut i: usize,
        depth: u32,
        mut member: impl FnMut(&mut Self, usize, usize, usize),
    ) -> Option<usize> {
        if *b.get(i)? == b'}' {
            return Some(i + 1);
        }
        loop {
            if *b.get(i)? != b'"' {
                return None;
            }
            let end = compact_string(b, i)?;
            if *b.get(end)? != b':' {
                return None;
            }
            let key = i;
            i = self.compact_value(b, end + 1, depth)?;
            member(self, key, end, i);
            match *b.get(i)? {
                b',' => i += 1,
                b'}' => return Some(i + 1),
                _ => return None,
            }
        }
    }

    /// The value at `i` in the compact shape: the position after it.
    fn compact_value(&mut self, b: &[u8], i: usize, depth: u32) -> Option<usize> {
        match *b.get(i)? {
            b'"' => compact_string(b, i),
            b'-' | b'0'..=b'9' => number(b, i),
            b'{' if depth < COMPACT_DEPTH => self.compact_object(b, i + 1, depth + 1),
            b'[' if depth < COMPACT_DEPTH => {
                let mut i = i + 1;
                if *b.get(i)? == b']' {
                    return Some(i + 1);
                }
                loop {
                    i = self.compact_value(b, i, depth + 1)?;
                    match *b.get(i)? {
                        b',' => i += 1,
                        b']' => return Some(i + 1),
                        _ => return None,
                    }
                }
            }
            b't' => literal(b, i, b"true"),
            b'f' => literal(b, i, b"false"),
            b'n' => literal(b, i, b"null"),
            _ => None,
        }
    }

    /// Walks the value at `i` to the end of `b`; `None` at the first error.
    fn document(&mut self, b: &[u8], mut i: usize, top: &mut TopLevel) -> Option<()> {
        self.stack.clear();
        'value: loop {
            let Some(&c) = b.get(i) else {
                return self.failed(i, Fail::Value);
            };
            let end = match c {
                b'{' | b'[' if self.stack.len() >= MAX_DEPTH => return self.failed(i, Fail::TooDeep),
                b'{' => {
                    i = ws(b, i + 1);
                    if b.get(i) == Some(&b'}') {
                        Some(i + 1)
                    } else {
                        self.stack.push(OBJECT);
                        i = self.key(b, i, top)?;
                        continue 'value;
                    }
                }
                b'[' => {
                    i = ws(b, i + 1);
                    if b.get(i) == Some(&b']') {
                        Some(i + 1)
                    } else {
                        self.stack.push(ARRAY);
                        continue 'value;
                    }
                }
                b'"' => string(b, i).map(|(end, _)| end),
                b't' => literal(b, i, b"true"),
                b'f' => literal(b, i, b"false"),
                b'n' => literal(b, i, b"null"),
                b'-' | b'0'..=b'9' => number(b, i),
                _ => return self.failed(i, Fail::Value),
            };
            let Some(end) = end else {
                let why = match c {
                    b'"' => Fail::Str,
                    b't' | b'f' | b'n' => Fail::Literal,
                    _ => Fail::Number,
                };
                return self.failed(i, why);
            };
            i = end;
            // After a value: a separator, the end of its container, or the end of the line.
            loop {
                i = ws(b, i);
                let Some(&open) = self.stack.last() else {
                    return if i == b.len() {
                        Some(())
                    } else {
                        self.failed(i, Fail::Trailing)
                    };
                };
                match (b.get(i), open) {
                    (Some(b','), OBJECT) => {
                        i = self.key(b, ws(b, i + 1), top)?;
                        continue 'value;
                    }
                    (Some(b','), _) => {
                        i = ws(b, i + 1);
                        continue 'value;
                    }
                    (Some(b'}'), OBJECT) | (Some(b']'), ARRAY) => {
                        self.stack.pop();
                        i += 1;
                    }
                    _ => return self.failed(i, Fail::Separator),
                }
            }
        }
    }

    /// Notes where and why the line failed; `None`.
    #[cold]
    fn failed<T>(&mut self, at: usize, why: Fail) -> Option<T> {
        self.fail = Some((at, why));
        None
    }

    /// Why the last line [`check_object`](Self::check_object) rejected is not a valid event,
    /// for its report.
    pub(crate) fn explain(&self, line: &[u8]) -> Option<String> {
        let (at, why) = self.fail?;
        let found = || match line.get(at) {
            None => "the end of the line".to_string(),
            Some(&c) if c.is_ascii_graphic() || c == b' ' => format!("'{}'", c as char),
            Some(&c) => format!("byte 0x{c:02x}"),
        };
        let open = |depth: usize| match self.stack.get(depth.wrapping_sub(1)) {
            Some(&ARRAY) => "array",
            _ => "object",
        };
        let text = match why {
            Fail::Root if line[at..].starts_with(b"\xef\xbb\xbf") => {
                "a UTF-8 byte order mark (bytes ef bb bf) before the event".to_string()
            }
            Fail::Root => format!("an event is a JSON object: '{{' expected, found {}", found()),
            Fail::Value => format!("a value expected, found {}", found()),
            Fail::Str => return Some(explain_string(line, at)),
            Fail::Number => "invalid number, or one beyond a double's range".to_string(),
            Fail::Literal => "invalid literal (true, false or null)".to_string(),
            Fail::Key => format!("a key (a string) expected, found {}", found()),
            Fail::Colon => format!("':' expected after the key, found {}", found()),
            Fail::Separator => {
                let close = if open(self.stack.len()) == "array" { ']' } else { '}' };
                format!(
                    "',' or '{close}' expected in an {}, found {}",
                    open(self.stack.len()),
                    found()
                )
            }
            Fail::Trailing => format!("text after the end of the object: {}", found()),
            Fail::TooDeep => format!("more than {MAX_DEPTH} nested objects and arrays"),
        };
        Some(format!("{text} at byte offset {at}"))
    }

    /// A member's key at `i` and its colon: the position of its value. A key of the top
    /// level goes into `top`.
    #[inline(always)]
    fn key(&mut self, b: &[u8], i: usize, top: &mut TopLevel) -> Option<usize> {
        if b.get(i) != Some(&b'"') {
            return self.failed(i, Fail::Key);
        }
        let Some((end, escaped)) = string(b, i) else {
            return self.failed(i, Fail::Str);
        };
        if self.stack.len() == 1 {
            self.top_key(b, i + 1, end - 1, escaped, top);
        }
        let i = ws(b, end);
        if b.get(i) != Some(&b':') {
            return self.failed(i, Fail::Colon);
        }
        Some(ws(b, i + 1))
    }

    /// Adds the top-level key `b[start..end]` to the bloom, and notes whether it may repeat
    /// one.
    #[inline(always)]
    fn top_key(&mut self, b: &[u8], start: usize, end: usize, escaped: bool, top: &mut TopLevel) {
        let bits = if escaped {
            self.escaped_key_bits(&b[start..end])
        } else {
            super::key_bits(&b[start..end])
        };
        self.maybe_dup |= top.keys.may_contain(bits);
        top.keys.add(bits);
    }

    /// The bloom bits of an escaped key (those of its unescaped text).
    #[cold]
    #[inline(never)]
    fn escaped_key_bits(&mut self, raw: &[u8]) -> (u64, u64) {
        super::scan::unescape(raw, &mut self.text);
        super::key_bits(&self.text)
    }
}

/// A worker's judge of lines: the validator and, for the rare rejected line, simd-json's
/// parse (its message is the report's, and a line it accepts is processed: the two never
/// disagree in the tests).
#[derive(Default)]
pub(crate) struct LineCheck {
    validator: Validator,
    parser: Option<RouteParser>,
    /// The top-level members of the batch's lines, by `TopLevel::members - 1` (the first
    /// `used`); their vectors are swapped with the validator's and the member cache's, so
    /// nothing is copied and, once warm, nothing allocated.
    recorded: Vec<Vec<Member>>,
    used: usize,
}

impl LineCheck {
    /// Forgets the members kept so far (a new batch starts), and says whether to keep the
    /// next lines' members: worth it only where scripts read several top-level fields per
    /// event (recording costs about what scanning for one field does).
    pub(crate) fn start_batch(&mut self, record_members: bool) {
        self.used = 0;
        self.validator.record = record_members;
    }

    /// The top-level members kept for a line (`TopLevel::members`, 0 for none), for the member
    /// cache to take (by swapping vectors: nothing is copied).
    pub(crate) fn members_mut(&mut self, k: u32) -> Option<&mut Vec<Member>> {
        let k = (k as usize).checked_sub(1)?;
        self.recorded[..self.used].get_mut(k)
    }

    /// The line's top level when it is a valid event, else why not.
    pub(crate) fn verdict(&mut self, line: &[u8]) -> Result<TopLevel, LineError> {
        if let Some(mut top) = self.validator.check_object(line) {
            if !self.validator.members.is_empty() {
                if self.used == self.recorded.len() {
                    self.recorded.push(Vec::new());
                }
                std::mem::swap(&mut self.validator.members, &mut self.recorded[self.used]);
                self.used += 1;
                top.members = self.used as u32;
            }
            return Ok(top);
        }
        match self.parser.get_or_insert_with(RouteParser::new).parse(line) {
            Ok(r) => Ok(TopLevel {
                keys: r.keys,
                dup_keys: r.dup_keys,
                members: 0,
            }),
            // The validator's account says where and what (simd-json's often did not).
            Err(LineError::Json(e)) => Err(LineError::Json(self.validator.explain(line).unwrap_or(e))),
            Err(e) => Err(e),
        }
    }
}

/// Top-level members recorded for a line at most (a line with more records none).
const MAX_RECORDED: usize = 1024;

/// Nesting the compact fast path follows (deeper lines take the general walk).
const COMPACT_DEPTH: u32 = 64;

/// The end of the string whose opening quote is at `i` when it is plain (ASCII, no control
/// character, no escape): the position after its closing quote.
#[inline(always)]
fn compact_string(b: &[u8], i: usize) -> Option<usize> {
    let j = i + 1 + plain_run(b, i + 1);
    (*b.get(j)? == b'"').then_some(j + 1)
}

/// Skips JSON whitespace.
#[inline]
fn ws(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\n' | b'\r' | b'\t') = b.get(i) {
        i += 1;
    }
    i
}

#[inline]
fn literal(b: &[u8], i: usize, word: &[u8]) -> Option<usize> {
    (b.get(i..i + word.len())? == word).then_some(i + word.len())
}

/// The end of the string whose opening quote is at `i`, and whether it has an escape:
/// escapes checked, no control character, valid UTF-8.
#[inline(always)]
fn string(b: &[u8], i: usize) -> Option<(usize, bool)> {
    let mut j = i + 1;
    let mut escaped = false;
    loop {
        j += plain_run(b, j);
        match *b.get(j)? {
            b'"' => return Some((j + 1, escaped)),
            b'\\' => {
                escaped = true;
                j = escape(b, j)?;
            }
            c if c < 0x20 => return None,
            _ => j = utf8(b, j)?,
        }
    }
}

/// Why the string whose opening quote is at `i` is invalid, and where (cold: reports only).
#[cold]
fn explain_string(b: &[u8], i: usize) -> String {
    let mut j = i + 1;
    let (at, what) = loop {
        j += plain_run(b, j);
        match b.get(j) {
            None => break (i, "a string that does not end (no closing '\"')".to_string()),
            Some(b'"') => break (i, "an invalid string".to_string()),
            Some(b'\\') => match escape(b, j) {
                Some(next) => j = next,
                None => {
                    break (
                        j,
                        match b.get(j + 1) {
                            Some(b'u') => "an invalid \\u escape (4 hex digits; surrogates in pairs)".to_string(),
                            Some(&c) if c.is_ascii_graphic() => format!("an invalid escape '\\{}'", c as char),
                            _ => "an invalid escape".to_string(),
                        },
                    );
                }
            },
            Some(&c) if c < 0x20 => {
                break (
                    j,
                    format!("a raw control character (byte 0x{c:02x}) in a string: JSON needs it escaped (\\u{c:04x})"),
                );
            }
            Some(&c) => match utf8(b, j) {
                Some(next) => j = next,
                None => break (j, format!("invalid UTF-8 (byte 0x{c:02x}) in a string")),
            },
        }
    };
    format!("{what} at byte offset {at}")
}

/// Length of the run of bytes at `j` that need no check: printable ASCII other than `"` and
/// `\`. Sixteen bytes per step with SSE2 (one signed compare finds both control characters
/// and bytes >= 0x80).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn plain_run(b: &[u8], j: usize) -> usize {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_cmplt_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };
    let mut k = j;
    while k + 16 <= b.len() {
        // SAFETY: SSE2 is part of the x86_64 baseline; the 16 bytes at `k` lie inside `b`
        // (checked by the loop condition).
        let mask = unsafe {
            let v = _mm_loadu_si128(b.as_ptr().add(k).cast::<__m128i>());
            let q = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
            let s = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
            let c = _mm_cmplt_epi8(v, _mm_set1_epi8(0x20));
            _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(q, s), c)) as u32
        };
        if mask != 0 {
            return k - j + mask.trailing_zeros() as usize;
        }
        k += 16;
    }
    k - j + plain_run_bytes(&b[k..])
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn plain_run(b: &[u8], j: usize) -> usize {
    plain_run_bytes(b.get(j..).unwrap_or_default())
}

#[inline]
fn plain_run_bytes(b: &[u8]) -> usize {
    b.iter()
        .position(|&c| !(0x20..0x80).contains(&c) || c == b'"' || c == b'\\')
        .unwrap_or(b.len())
}

/// The escape at `j` (a backslash): the position after it. A `\u` high surrogate must be
/// followed by a `\u` low surrogate; a lone low surrogate is an error (as simd-json has it).
#[inline]
fn escape(b: &[u8], j: usize) -> Option<usize> {
    match *b.get(j + 1)? {
        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Some(j + 2),
        b'u' => {
            let cp = hex4(b, j + 2)?;
            match cp {
                0xd800..=0xdbff => {
                    if b.get(j + 6..j + 8)? != b"\\u" {
                        return None;
                    }
                    matches!(hex4(b, j + 8)?, 0xdc00..=0xdfff).then_some(j + 12)
                }
                0xdc00..=0xdfff => None,
                _ => Some(j + 6),
            }
        }
        _ => None,
    }
}

/// The UTF-8 sequence starting with the byte >= 0x80 at `j`: the position after it (the
/// rules of `std::str::from_utf8`: no overlong form, no surrogate, at most U+10FFFF).
#[inline]
fn utf8(b: &[u8], j: usize) -> Option<usize> {
    let cont = |k: usize| b.get(k).is_some_and(|&c| c & 0xc0 == 0x80);
    let second = |lo: u8, hi: u8| b.get(j + 1).is_some_and(|&c| (lo..=hi).contains(&c));
    let n = match b[j] {
        0xc2..=0xdf => 2,
        0xe0 if second(0xa0, 0xbf) => 3,
        0xe1..=0xec | 0xee..=0xef => 3,
        0xed if second(0x80, 0x9f) => 3,
        0xf0 if second(0x90, 0xbf) => 4,
        0xf1..=0xf3 => 4,
        0xf4 if second(0x80, 0x8f) => 4,
        _ => return None,
    };
    (1..n).all(|k| cont(j + k)).then_some(j + n)
}

/// The end of the number at `i`: RFC 8259's grammar, then the range simd-json accepts.
#[inline]
fn number(b: &[u8], i: usize) -> Option<usize> {
    let digits = |mut k: usize| {
        while b.get(k).is_some_and(u8::is_ascii_digit) {
            k += 1;
        }
        k
    };
    let negative = b[i] == b'-';
    let int_start = i + usize::from(negative);
    let int_end = match *b.get(int_start)? {
        b'0' => int_start + 1,
        b'1'..=b'9' => digits(int_start + 1),
        _ => return None,
    };
    let mut end = int_end;
    let mut float = false;
    if b.get(end) == Some(&b'.') {
        let frac_end = digits(end + 1);
        if frac_end == end + 1 {
            return None;
        }
        end = frac_end;
        float = true;
    }
    let mut exp: i64 = 0;
    if let Some(b'e' | b'E') = b.get(end) {
        let mut k = end + 1;
        let neg_exp = b.get(k) == Some(&b'-');
        if let Some(b'+' | b'-') = b.get(k) {
            k += 1;
        }
        let exp_end = digits(k);
        if exp_end == k {
            return None;
        }
        for &c in &b[k..exp_end] {
            exp = (exp * 10 + (c - b'0') as i64).min(1 << 40);
        }
        if neg_exp {
            exp = -exp;
        }
        end = exp_end;
        float = true;
    }
    let int_digits = (int_end - int_start) as i64;
    let in_range = if float {
        // |value| < 10^(int_digits + exp): surely finite below 10^300; nearer the top of the
        // double range the exact parse decides.
        int_digits + exp <= 300 || finite(&b[i..end])
    } else {
        // Any integer within a double's range (read as a double beyond 64 bits, as serde_json
        // and cjson do): below 10^308 surely; the exact parse decides above.
        int_digits <= 308 || finite(&b[i..end])
    };
    in_range.then_some(end)
}

#[cold]
fn finite(text: &[u8]) -> bool {
    std::str::from_utf8(text)
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .is_some_and(f64::is_finite)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::flow_key::RouteParser;

    fn agree(line: &[u8]) {
        let mine = Validator::default().is_valid_object(line);
        let simd = RouteParser::new().parse(line).is_ok();
        assert_eq!(
            mine,
            simd,
            "validator {mine}, simd-json {simd}: {:?}",
            String::from_utf8_lossy(line)
        );
    }

    /// Lines that test each rule of the grammar and of the ranges, valid and not.
    const HAND_PICKED: &[&str] = &[
        r#"{}"#,
        r#"  { }  "#,
        r#"{"a":1}"#,
        r#"{"a":1,}"#,
        r#"{"a":1 "b":2}"#,
        r#"{"a" 1}"#,
        r#"{a:1}"#,
        r#"{"a":[1,2,[],{}, {"b":null}]}"#,
        r#"{"a":[1,2,]}"#,
        r#"{"a":[1 2]}"#,
        r#"{"a":[}"#,
        r#"{"a":{]}"#,
        r#"{"a":1}}"#,
        r#"{"a":1} x"#,
        r#"{"a":1"#,
        r#"[1,2]"#,
        r#""text""#,
        r#"12"#,
        r#"null"#,
        r#"{"a":tru}"#,
        r#"{"a":true,"b":false,"c":null}"#,
        r#"{"a":nulll}"#,
        r#"{"a":-}"#,
        r#"{"a":-0}"#,
        r#"{"a":01}"#,
        r#"{"a":1.}"#,
        r#"{"a":.5}"#,
        r#"{"a":1.5e}"#,
        r#"{"a":1.5e+}"#,
        r#"{"a":1.5E-3}"#,
        r#"{"a":+1}"#,
        r#"{"a":1e308}"#,
        r#"{"a":1e309}"#,
        r#"{"a":1.7976931348623157e308}"#,
        r#"{"a":1.7976931348623159e308}"#,
        r#"{"a":-1e309}"#,
        r#"{"a":0e99999999999}"#,
        r#"{"a":1e-99999999999}"#,
        r#"{"a":1e99999999999}"#,
        r#"{"a":18446744073709551615}"#,
        r#"{"a":18446744073709551616}"#,
        r#"{"a":99999999999999999999}"#,
        r#"{"a":-9223372036854775808}"#,
        r#"{"a":-9223372036854775809}"#,
        r#"{"a":1000000000000000000000.5}"#,
        r#"{"a":"\u00e9\n\t\"\\\/\b\f\r"}"#,
        r#"{"a":"\x"}"#,
        r#"{"a":"\u12"}"#,
        r#"{"a":"\u12g4"}"#,
        r#"{"a":"\ud83d\ude00"}"#,
        r#"{"a":"\ud83d"}"#,
        r#"{"a":"\ud83dx"}"#,
        r#"{"a":"\ud83d\u0041"}"#,
        r#"{"a":"\ude00"}"#,
        r#"{"a":"é ü 😀"}"#,
        r#"{"a\"b":1}"#,
        "{\"a\":\"tab\there\"}",
        "{\"a\":\"nul\u{0}\"}",
        "{\"a\":\"del\u{7f}\"}",
        "{\r\n\t\"a\" :\t1 }",
        "{\"a\":1}\u{0}",
        "\u{feff}{\"a\":1}",
    ];

    #[test]
    fn agrees_with_simd_json_on_hand_picked_lines() {
        let cases = HAND_PICKED;
        for c in cases {
            agree(c.as_bytes());
        }
        for bad in [
            &b"{\"a\":\"\xff\"}"[..],
            b"{\"a\":\"\xc0\xaf\"}",
            b"{\"a\":\"\xed\xa0\x80\"}",
            b"{\"a\":\"\xf4\x90\x80\x80\"}",
            b"{\"a\":\"\xe2\x82\"}",
            b"{\"a\":\"\xe2\x82\xac\"}",
            b"{\"a\":\"\xf0\x9f\x98\x80\"}",
            b"{\"\xff\":1}",
            b"{\"a\":1}\xff",
        ] {
            agree(bad);
        }
    }

    /// A rejected line's report says where and what (simd-json's messages said
    /// "InternalError at character 13" for text after the object, and "Syntax at character 0"
    /// for a raw tab inside a string).
    #[test]
    fn rejected_lines_say_where_and_why() {
        let mut c = LineCheck::default();
        let number = "invalid number, or one beyond a double's range";
        for (line, want) in [
            (
                &br#"{"a":1}}"#[..],
                "text after the end of the object: '}' at byte offset 7".to_string(),
            ),
            (
                b"{\"a\":1}\0",
                "text after the end of the object: byte 0x00 at byte offset 7".into(),
            ),
            (
                b"{\"a\":\"x\ty\"}",
                "a raw control character (byte 0x09) in a string: JSON needs it escaped (\\u0009) at byte offset 7"
                    .into(),
            ),
            (
                b"{\"a\":1 \"b\":2}",
                "',' or '}' expected in an object, found '\"' at byte offset 7".into(),
            ),
            (
                b"{\"a\":[1 2]}",
                "',' or ']' expected in an array, found '2' at byte offset 8".into(),
            ),
            (
                b"{\"a\" 1}",
                "':' expected after the key, found '1' at byte offset 5".into(),
            ),
            (b"{a:1}", "a key (a string) expected, found 'a' at byte offset 1".into()),
            (b"{\"a\":}", "a value expected, found '}' at byte offset 5".into()),
            (
                b"{\"a\":1",
                "',' or '}' expected in an object, found the end of the line at byte offset 6".into(),
            ),
            (
                b"{\"a\":\"abc",
                "a string that does not end (no closing '\"') at byte offset 5".into(),
            ),
            (b"{\"a\":\"\\x\"}", "an invalid escape '\\x' at byte offset 6".into()),
            (
                b"{\"a\":\"\xff\"}",
                "invalid UTF-8 (byte 0xff) in a string at byte offset 6".into(),
            ),
            (b"{\"a\":1e400}", format!("{number} at byte offset 5")),
            (
                b"{\"a\":tru}",
                "invalid literal (true, false or null) at byte offset 5".into(),
            ),
            (
                b"\xef\xbb\xbf{\"a\":1}",
                "a UTF-8 byte order mark (bytes ef bb bf) before the event at byte offset 0".into(),
            ),
            (
                b"hello",
                "an event is a JSON object: '{' expected, found 'h' at byte offset 0".into(),
            ),
        ] {
            match c.verdict(line) {
                Err(LineError::Json(m)) => assert_eq!(m, want, "{:?}", String::from_utf8_lossy(line)),
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(line)),
            }
        }
        assert!(matches!(c.verdict(b"[1,2]"), Err(LineError::NotObject)));
        assert!(c.verdict(br#"{"a":1}"#).is_ok(), "a valid line after rejected ones");
    }

    /// Objects with many top-level keys: a repeat is found however far apart the two are (by
    /// sorting, past the pairwise check), and 200,000 distinct keys are settled in n log n
    /// (pairwise, this test would take minutes).
    /// A random JSON value of the shapes events have (objects, arrays, strings with and
    /// without escapes or non-ASCII text, numbers of every form, literals), some keys repeated,
    /// and now and then whitespace between tokens.
    fn random_value(rng: &mut u64, depth: u32, out: &mut String) {
        use crate::test_rng::below;
        let ws = |rng: &mut u64, out: &mut String| {
            if below(rng, 12) == 0 {
                out.push_str([" ", "\t", "\r\n", "  "][below(rng, 4) as usize]);
            }
        };
        let pick = if depth >= 4 { 2 + below(rng, 4) } else { below(rng, 6) };
        match pick {
            0 | 1 => {
                let (open, close) = if pick == 0 { ('{', '}') } else { ('[', ']') };
                out.push(open);
                for k in 0..below(rng, 5) {
                    if k > 0 {
                        out.push(',');
                    }
                    ws(rng, out);
                    if pick == 0 {
                        out.push_str(
                            ["\"a\"", "\"b\"", "\"src_ip\"", "\"k\\u0041\"", "\"dup\"", "\"dup\""]
                                [below(rng, 6) as usize],
                        );
                        ws(rng, out);
                        out.push(':');
                    }
                    ws(rng, out);
                    random_value(rng, depth + 1, out);
                    ws(rng, out);
                }
                out.push(close);
            }
            2 => {
                let words = [
                    "plain",
                    "with space",
                    "esc\\\"aped",
                    "caf\u{e9}",
                    "\\u00e9",
                    "\\ud83d\\ude00",
                    "",
                    "x\u{7f}y",
                    "a/b",
                ];
                out.push('"');
                out.push_str(words[below(rng, words.len() as u64) as usize]);
                out.push('"');
            }
            3 => out.push_str(
                [
                    "0",
                    "-1",
                    "12.5",
                    "1e5",
                    "-0.0E-3",
                    "18446744073709551615",
                    "18446744073709551616",
                    "1e309",
                ][below(rng, 8) as usize],
            ),
            4 => out.push_str(["true", "false", "null"][below(rng, 3) as usize]),
            _ => out.push_str("{\"n\":[1,{\"m\":\"v\"}]}"),
        }
    }

    /// The compact fast path accepts no line the general walk rejects, and notes the same
    /// top-level keys: generated lines (compact ones, and with whitespace, escapes, non-ASCII
    /// text and repeated keys), the hand-picked cases above, and each of them with single
    /// bytes deleted, inserted or replaced.
    #[test]
    fn the_compact_path_agrees_with_the_general_walk() {
        use crate::test_rng::below;
        let mut rng = 0x5eed_1234_u64;
        let mut lines: Vec<Vec<u8>> = Vec::new();
        for _ in 0..3_000 {
            let mut s = String::from("{\"event_type\":\"flow\",");
            let mut v = String::new();
            random_value(&mut rng, 0, &mut v);
            s.push_str(&format!("\"v\":{v}"));
            if below(&mut rng, 3) == 0 {
                s.push_str(",\"event_type\":1");
            }
            s.push('}');
            lines.push(s.into_bytes());
        }
        lines.extend(HAND_PICKED.iter().map(|c| c.as_bytes().to_vec()));
        lines.push(br#"{"a":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}"#.to_vec());
        let alphabet = b"{}[]:,\"\\ \t0123456789-+.eEtrufalsn\x7f\xc3\xa9\x00";
        let mut mutated = Vec::new();
        for line in &lines {
            for _ in 0..6 {
                let mut m = line.clone();
                let at = below(&mut rng, m.len() as u64 + 1) as usize;
                let c = alphabet[below(&mut rng, alphabet.len() as u64) as usize];
                match below(&mut rng, 3) {
                    0 if at < m.len() => {
                        m.remove(at);
                    }
                    1 if at < m.len() => m[at] = c,
                    _ => m.insert(at, c),
                }
                mutated.push(m);
            }
        }
        lines.extend(mutated);
        let (mut fast, mut general) = (Validator::default(), Validator::default());
        general.general_only = true;
        fast.record = true;
        let (mut compact_accepted, mut valid, mut invalid, mut with_members) = (0, 0, 0, 0);
        for line in &lines {
            let want = general.check_object(line);
            let got = fast.check_object(line);
            assert_eq!(
                got.map(|t| (t.keys, t.dup_keys)),
                want.map(|t| (t.keys, t.dup_keys)),
                "{:?}",
                String::from_utf8_lossy(line)
            );
            // Members recorded on the way are those a scan of the line finds.
            if got.is_some() && !fast.members.is_empty() {
                let mut scanned = Vec::new();
                crate::event::scan::object_members(line, ws(line, 0), &mut scanned);
                assert_eq!(fast.members, scanned, "{:?}", String::from_utf8_lossy(line));
                with_members += 1;
            }
            let root = ws(line, 0);
            let mut top = TopLevel::default();
            if line.get(root) == Some(&b'{') && fast.compact(line, root, &mut top) {
                compact_accepted += 1;
                let want = want.expect("the compact path accepted a line the general walk rejects");
                assert_eq!(top.keys, want.keys, "{:?}", String::from_utf8_lossy(line));
            }
            if want.is_some() { valid += 1 } else { invalid += 1 }
        }
        // Both paths and both outcomes were exercised.
        assert!(
            compact_accepted > 1_000,
            "{compact_accepted} lines took the compact path"
        );
        assert!(
            valid > compact_accepted + 100,
            "{valid} valid, {compact_accepted} compact"
        );
        assert!(invalid > 1_000, "{invalid} invalid lines");
        assert!(with_members > 1_000, "{with_members} lines with members recorded");
    }

    #[test]
    fn many_top_level_keys() {
        let line = |n: usize, repeat: Option<(usize, &str)>| {
            let mut o = String::from("{");
            for i in 0..n {
                match repeat {
                    Some((at, k)) if at == i => o.push_str(&format!("\"{k}\":{i},")),
                    _ => o.push_str(&format!("\"k{i}\":{i},")),
                }
            }
            o.pop();
            o.push('}');
            o
        };
        let mut v = Validator::default();
        let mut p = RouteParser::new();
        for (n, repeat) in [
            (40, None),
            (40, Some((39, "k0"))),
            (40, Some((39, "k\\u0030"))),
            (500, Some((499, "k3"))),
            (500, Some((10, "k499"))),
            (500, None),
        ] {
            let l = line(n, repeat);
            let top = v.check_object(l.as_bytes()).expect("valid");
            assert_eq!(
                top.dup_keys,
                p.parse(l.as_bytes()).unwrap().dup_keys,
                "{n} keys, {repeat:?}"
            );
            assert_eq!(top.dup_keys, repeat.is_some(), "{n} keys, {repeat:?}");
        }
        let big = line(200_000, None);
        assert_eq!(v.check_object(big.as_bytes()).map(|t| t.dup_keys), Some(false));
        let big = line(200_000, Some((199_999, "k1")));
        assert_eq!(v.check_object(big.as_bytes()).map(|t| t.dup_keys), Some(true));
    }

    #[test]
    fn deep_nesting_and_long_strings() {
        for depth in [1022, 1023, 1024, 5000] {
            for empty_last in [false, true] {
                let mut deep = b"{\"a\":".to_vec();
                deep.extend(std::iter::repeat_n(b'[', depth));
                if !empty_last {
                    deep.extend_from_slice(b"1");
                }
                deep.extend(std::iter::repeat_n(b']', depth));
                deep.push(b'}');
                agree(&deep);
                deep.truncate(deep.len() - 2);
                agree(&deep);
            }
        }
        for n in [0, 1, 15, 16, 17, 31, 32, 33, 100] {
            let s = "x".repeat(n);
            agree(format!("{{\"k\":\"{s}\"}}").as_bytes());
            agree(format!("{{\"k\":\"{s}\\\"{s}\"}}").as_bytes());
            agree(format!("{{\"k\":\"{s}\u{1}{s}\"}}").as_bytes());
            agree(format!("{{\"k\":\"{s}é{s}\"}}").as_bytes());
            agree(format!("{{\"k\":\"{s}").as_bytes());
        }
    }

    #[test]
    fn members_are_kept_per_line_only_when_asked() {
        let lines: [&[u8]; 4] = [
            br#"{"timestamp":"t","src_ip":"10.0.0.1","src_port":53,"dns":{"a":[1,{"b":2}]},"x":null}"#,
            br#"{ "spaced": 1 }"#,
            br#"{"k\u0041":1,"v":"x"}"#,
            br#"{"a":1,"b":{"c":"d"},"e":[true,false]}"#,
        ];
        let mut check = LineCheck::default();
        for record in [true, false] {
            check.start_batch(record);
            let tops: Vec<TopLevel> = lines.iter().map(|l| check.verdict(l).expect("valid")).collect();
            for (line, top) in lines.iter().zip(&tops) {
                // Lines with whitespace or escapes take the general walk: nothing recorded.
                let compact = !line.contains(&b' ') && !line.contains(&b'\\');
                assert_eq!(
                    top.members != 0,
                    record && compact,
                    "{:?}",
                    String::from_utf8_lossy(line)
                );
                if top.members != 0 {
                    let mut scanned = Vec::new();
                    crate::event::scan::object_members(line, 0, &mut scanned);
                    assert_eq!(check.members_mut(top.members).map(|m| m.clone()), Some(scanned));
                }
            }
        }
        // A new batch forgets the last one's members.
        check.start_batch(true);
        assert_eq!(check.members_mut(1), None);
        // A line with more members than are kept records none.
        let wide = |n: usize| {
            let body: Vec<String> = (0..n).map(|i| format!("\"k{i}\":{i}")).collect();
            format!("{{{}}}", body.join(","))
        };
        assert_ne!(
            check.verdict(wide(MAX_RECORDED - 1).as_bytes()).expect("valid").members,
            0
        );
        assert_eq!(check.verdict(wide(MAX_RECORDED).as_bytes()).expect("valid").members, 0);
        assert_eq!(
            check.verdict(wide(5 * MAX_RECORDED).as_bytes()).expect("valid").members,
            0
        );
    }
}

/// The real Suricata files of `../shared/data/eve` (when the checkout has them): every line
/// is judged as simd-json judges it, and the route scan of each valid one is the tape's.
#[cfg(test)]
mod real_files {
    use super::Validator;
    use crate::event::flow_key::{RouteParser, RouteScanner};

    #[test]
    fn shared_eve_files_agree_with_simd_json() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/eve");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            crate::eprintln_safe!("{} is not here: nothing to compare", dir.display());
            return;
        };
        let (mut v, mut p, mut s) = (Validator::default(), RouteParser::new(), RouteScanner::new());
        let (mut lines, mut invalid) = (0, 0);
        for e in entries.flatten() {
            let Ok(data) = std::fs::read(e.path()) else { continue };
            if data.starts_with(&[0x1f, 0x8b]) {
                continue;
            }
            for line in data.split(|&c| c == b'\n') {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.iter().all(|c| matches!(c, b' ' | b'\t')) {
                    continue;
                }
                lines += 1;
                let want = p.parse(line);
                let got = v.check_object(line);
                assert_eq!(
                    got.is_some(),
                    want.is_ok(),
                    "{}: {:?}",
                    e.path().display(),
                    String::from_utf8_lossy(line)
                );
                match (want, got) {
                    (Ok(tape), Some(top)) => {
                        assert_eq!((top.keys, top.dup_keys), (tape.keys, tape.dup_keys));
                        if !tape.dup_keys {
                            let route = s.route(line);
                            assert_eq!(
                                (route.hash, route.flow_id),
                                (tape.hash, tape.flow_id),
                                "{}",
                                e.path().display()
                            );
                        }
                    }
                    _ => invalid += 1,
                }
            }
        }
        assert!(lines > 40_000, "{lines} lines read");
        crate::eprintln_safe!("{lines} lines, {invalid} invalid");
    }
}
