//! A structural scanner over JSON that simd-json has already validated: it finds the members
//! of an object and the extent of a value without building anything, so a field lookup costs a
//! pass over the bytes and no allocation. It never panics on malformed input (it then returns
//! short or empty results instead).

/// One member of a JSON object: byte ranges of its key (without quotes) and of its value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Member {
    pub key_start: u32,
    pub key_end: u32,
    /// Whether the key contains a backslash escape.
    pub key_escaped: bool,
    pub val_start: u32,
    pub val_end: u32,
}

/// The kind of a JSON value, from its first byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Object,
    Array,
    String,
    Number,
    True,
    False,
    Null,
    Invalid,
}

pub(crate) fn kind(buf: &[u8], pos: usize) -> Kind {
    match buf.get(pos) {
        Some(b'{') => Kind::Object,
        Some(b'[') => Kind::Array,
        Some(b'"') => Kind::String,
        Some(b't') => Kind::True,
        Some(b'f') => Kind::False,
        Some(b'n') => Kind::Null,
        Some(b'-' | b'0'..=b'9') => Kind::Number,
        _ => Kind::Invalid,
    }
}

#[inline]
pub fn skip_ws(buf: &[u8], mut pos: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = buf.get(pos) {
        pos += 1;
    }
    pos
}

/// End (exclusive) of the string starting with the quote at `pos`, and whether it has escapes.
/// EVE strings are short (keys, addresses, timestamps): 16 bytes are tested per step with
/// inline SSE2 compares, which costs less than a call into a general substring search.
#[inline]
pub(crate) fn string_end(buf: &[u8], pos: usize) -> (usize, bool) {
    let mut i = pos + 1;
    let mut escaped = false;
    while let Some(off) = quote_or_backslash(buf, i) {
        i += off;
        if buf[i] == b'\\' {
            escaped = true;
            i += 2;
        } else {
            return (i + 1, escaped);
        }
    }
    (buf.len(), escaped)
}

/// Offset from `i` of the first `"` or `\\` in `buf[i..]`.
#[cfg(target_arch = "x86_64")]
#[inline]
fn quote_or_backslash(buf: &[u8], mut i: usize) -> Option<usize> {
    use std::arch::x86_64::{__m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8};
    let start = i;
    while i + 16 <= buf.len() {
        // SAFETY: SSE2 is part of the x86_64 baseline; the 16 bytes at `i` lie inside `buf`
        // (checked by the loop condition).
        let mask = unsafe {
            let v = _mm_loadu_si128(buf.as_ptr().add(i).cast::<__m128i>());
            let q = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
            let b = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
            _mm_movemask_epi8(_mm_or_si128(q, b)) as u32
        };
        if mask != 0 {
            return Some(i - start + mask.trailing_zeros() as usize);
        }
        i += 16;
    }
    let rest = buf.get(i..)?;
    rest.iter()
        .position(|&c| c == b'"' || c == b'\\')
        .map(|off| i - start + off)
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn quote_or_backslash(buf: &[u8], i: usize) -> Option<usize> {
    memchr::memchr2(b'"', b'\\', buf.get(i..)?)
}

/// Bytes that end a number or literal.
static DELIMITER: [bool; 256] = {
    let mut t = [false; 256];
    t[b',' as usize] = true;
    t[b'}' as usize] = true;
    t[b']' as usize] = true;
    t[b' ' as usize] = true;
    t[b'\t' as usize] = true;
    t[b'\n' as usize] = true;
    t[b'\r' as usize] = true;
    t
};

/// End (exclusive) of the value starting at `pos` (which must not be whitespace).
pub(crate) fn value_end(buf: &[u8], pos: usize) -> usize {
    match kind(buf, pos) {
        Kind::String => string_end(buf, pos).0,
        Kind::Object => nested_end(buf, pos, b'{', b'}'),
        Kind::Array => nested_end(buf, pos, b'[', b']'),
        Kind::Invalid => pos,
        _ => match buf[pos..].iter().position(|&c| DELIMITER[c as usize]) {
            Some(off) => pos + off,
            None => buf.len(),
        },
    }
}

/// End of the object or array opening at `pos`. Only the bracket kind that opened it needs
/// counting (the other kind is balanced inside valid JSON); brackets inside strings are not
/// counted. Works 64 bytes at a time: bit masks of quotes, backslashes and both brackets,
/// escaped quotes removed by the parity of the backslash runs before them, the inside of
/// strings found by a prefix XOR of the remaining quotes; then only the brackets outside
/// strings are visited, one bit each.
fn nested_end(buf: &[u8], pos: usize, open: u8, close: u8) -> usize {
    let n = buf.len();
    let mut depth = 0usize;
    // Whether the first byte of the next block is escaped by a backslash run ending this one.
    let mut carry_escape = 0u64;
    // All ones when this block starts inside a string.
    let mut carry_string = 0u64;
    let mut base = pos;
    // The last, partial block, padded with spaces.
    let mut tail = [b' '; 64];
    while base < n {
        let block: &[u8; 64] = match buf.get(base..base + 64) {
            Some(b) => b.try_into().unwrap_or(&tail),
            None => {
                tail[..n - base].copy_from_slice(&buf[base..]);
                &tail
            }
        };
        let [quote, backslash, opens, closes] = block_masks(block, open, close);
        let escaped = escaped_bytes(backslash, &mut carry_escape);
        let inside = prefix_xor(quote & !escaped) ^ carry_string;
        carry_string = ((inside as i64) >> 63) as u64;
        let mut brackets = (opens | closes) & !inside;
        while brackets != 0 {
            let i = brackets.trailing_zeros() as usize;
            if opens >> i & 1 == 1 {
                depth += 1;
            } else {
                depth = depth.wrapping_sub(1);
                if depth == 0 {
                    return base + i + 1;
                }
            }
            brackets &= brackets - 1;
        }
        base += 64;
    }
    n
}

/// Bit i set when byte i is escaped (preceded by an odd run of backslashes); `carry` says
/// whether the first byte is, and is set for the next block. (The odd/even run trick of
/// simdjson's stage 1, as its paper describes it.)
#[inline]
fn escaped_bytes(backslash: u64, carry: &mut u64) -> u64 {
    const EVEN: u64 = 0x5555_5555_5555_5555;
    let backslash = backslash & !*carry;
    let follows = (backslash << 1) | *carry;
    let odd_starts = backslash & !EVEN & !follows;
    let (sum, overflow) = odd_starts.overflowing_add(backslash);
    *carry = u64::from(overflow);
    (EVEN ^ (sum << 1)) & follows
}

/// Bit i set when an odd number of bits at or below i are set in `x`.
#[inline]
fn prefix_xor(mut x: u64) -> u64 {
    x ^= x << 1;
    x ^= x << 2;
    x ^= x << 4;
    x ^= x << 8;
    x ^= x << 16;
    x ^= x << 32;
    x
}

/// Masks of `"`, `\\`, `open` and `close` in a block.
#[cfg(target_arch = "x86_64")]
#[inline]
fn block_masks(b: &[u8; 64], open: u8, close: u8) -> [u64; 4] {
    use std::arch::x86_64::{__m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8};
    // SAFETY: SSE2 is part of the x86_64 baseline; the four unaligned 16-byte loads lie
    // inside the 64-byte block.
    unsafe {
        let wanted = [
            _mm_set1_epi8(b'"' as i8),
            _mm_set1_epi8(b'\\' as i8),
            _mm_set1_epi8(open as i8),
            _mm_set1_epi8(close as i8),
        ];
        let mut out = [0u64; 4];
        for k in 0..4 {
            let v = _mm_loadu_si128(b.as_ptr().add(16 * k).cast::<__m128i>());
            for (w, o) in wanted.iter().zip(out.iter_mut()) {
                *o |= u64::from(_mm_movemask_epi8(_mm_cmpeq_epi8(v, *w)) as u16) << (16 * k);
            }
        }
        out
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn block_masks(b: &[u8; 64], open: u8, close: u8) -> [u64; 4] {
    let mut out = [0u64; 4];
    for (i, &c) in b.iter().enumerate() {
        for (w, o) in [b'"', b'\\', open, close].iter().zip(out.iter_mut()) {
            *o |= u64::from(c == *w) << i;
        }
    }
    out
}

/// Position of the first member of the object opening with `{` at `pos` (or `None` when it
/// is not an object).
pub fn first_member(buf: &[u8], pos: usize) -> Option<usize> {
    if buf.get(pos) != Some(&b'{') {
        return None;
    }
    Some(skip_ws(buf, pos + 1))
}

/// Reads the member whose key starts at `i`; returns it and the position of the next member
/// (`None` after the last one, or on malformed input).
pub fn next_member(buf: &[u8], i: usize) -> Option<(Member, Option<usize>)> {
    if buf.get(i) != Some(&b'"') {
        return None;
    }
    let (kend, key_escaped) = string_end(buf, i);
    let colon = skip_ws(buf, kend);
    if buf.get(colon) != Some(&b':') {
        return None;
    }
    let vstart = skip_ws(buf, colon + 1);
    let vend = value_end(buf, vstart);
    if vend <= vstart {
        return None;
    }
    let m = Member {
        key_start: (i + 1) as u32,
        key_end: (kend - 1) as u32,
        key_escaped,
        val_start: vstart as u32,
        val_end: vend as u32,
    };
    let j = skip_ws(buf, vend);
    let next = if buf.get(j) == Some(&b',') {
        Some(skip_ws(buf, j + 1))
    } else {
        None
    };
    Some((m, next))
}

/// Whether two of `members` (of an object in `buf`) have the same key. JSON allows it (RFC
/// 8259 only says names should be unique); the engine reads the last occurrence (as
/// lua-cjson did), iterates each key once and applies a change to every occurrence.
pub(crate) fn has_duplicate_keys(buf: &[u8], members: &[Member]) -> bool {
    let raw = |m: &Member| &buf[m.key_start as usize..m.key_end as usize];
    if members.len() <= 32 && !members.iter().any(|m| m.key_escaped) {
        return members
            .iter()
            .enumerate()
            .any(|(j, m)| members[..j].iter().any(|e| raw(e) == raw(m)));
    }
    let mut names: Vec<Vec<u8>> = members
        .iter()
        .map(|m| {
            let mut v = Vec::new();
            if m.key_escaped {
                unescape(raw(m), &mut v);
            } else {
                v.extend_from_slice(raw(m));
            }
            v
        })
        .collect();
    names.sort_unstable();
    names.windows(2).any(|w| w[0] == w[1])
}

/// Collects the members of the object starting with `{` at `pos` into `out` (cleared first).
pub(crate) fn object_members(buf: &[u8], pos: usize, out: &mut Vec<Member>) {
    out.clear();
    let mut at = first_member(buf, pos);
    while let Some(i) = at {
        let Some((m, next)) = next_member(buf, i) else { return };
        out.push(m);
        at = next;
    }
}

/// Calls `f` with the (start, end) range of each element of the array starting at `pos`.
pub(crate) fn array_elements(buf: &[u8], pos: usize, mut f: impl FnMut(usize, usize)) {
    if buf.get(pos) != Some(&b'[') {
        return;
    }
    let mut i = skip_ws(buf, pos + 1);
    while i < buf.len() && buf[i] != b']' {
        let end = value_end(buf, i);
        if end <= i {
            return;
        }
        f(i, end);
        i = skip_ws(buf, end);
        if buf.get(i) == Some(&b',') {
            i = skip_ws(buf, i + 1);
        } else {
            return;
        }
    }
}

/// Whether `buf[start..end]` is exactly an object value inside the JSON value at `root`
/// (the value itself included), `buf` being valid JSON (a validated line, or the encoder's
/// output). Outside strings, a `{` of valid JSON always opens an object value, so `start` must
/// hold one that no string between `root` and it covers, and `end` must be its closing brace's
/// next byte, within the value at `root`: a range that begins inside a string or ends anywhere
/// else is refused. A pass over the strings before `start`, one over the object and one over
/// the value at `root`: linear in the line, whatever the
/// nesting (descending level by level measured each level's subtree again, and a write 250
/// levels deep took seconds).
pub(crate) fn is_object_at(buf: &[u8], root: usize, start: usize, end: usize) -> bool {
    if start < root || buf.get(start) != Some(&b'{') {
        return false;
    }
    let mut pos = root;
    while let Some(off) = memchr::memchr(b'"', &buf[pos..start]) {
        let after = string_end(buf, pos + off).0;
        if after > start {
            return false;
        }
        pos = after;
    }
    value_end(buf, start) == end && end <= value_end(buf, root)
}

/// Decodes the JSON string body `raw` (between the quotes) into `out`.
pub(crate) fn unescape(raw: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut i = 0;
    while i < raw.len() {
        let Some(off) = memchr::memchr(b'\\', &raw[i..]) else {
            out.extend_from_slice(&raw[i..]);
            return;
        };
        out.extend_from_slice(&raw[i..i + off]);
        i += off + 1;
        let Some(&c) = raw.get(i) else { return };
        i += 1;
        match c {
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'r' => out.push(b'\r'),
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'u' => {
                let mut cp = hex4(raw, i).unwrap_or(0xFFFD);
                i += 4;
                if (0xD800..0xDC00).contains(&cp) && raw.get(i) == Some(&b'\\') && raw.get(i + 1) == Some(&b'u') {
                    let lo = hex4(raw, i + 2).unwrap_or(0xFFFD);
                    if (0xDC00..0xE000).contains(&lo) {
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                        i += 6;
                    }
                }
                let ch = char::from_u32(cp).unwrap_or('\u{FFFD}');
                let mut tmp = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut tmp).as_bytes());
            }
            other => out.push(other),
        }
    }
}

/// The value of the four hex digits at `at` (None when they are not four hex digits): a
/// `\uXXXX` escape's. One for the validator, the scanner and the lenient decoder.
#[inline]
pub(crate) fn hex4(b: &[u8], at: usize) -> Option<u32> {
    let mut v = 0;
    for &c in b.get(at..at + 4)? {
        v = v << 4 | (c as char).to_digit(16)?;
    }
    Some(v)
}

/// Parses a JSON number as a Lua number (a double). Integers are exact up to 2^53.
pub(crate) fn number(raw: &[u8]) -> f64 {
    if raw.len() <= 18 && raw.iter().all(u8::is_ascii_digit) && !raw.is_empty() {
        let mut v = 0u64;
        for &c in raw {
            v = v * 10 + (c - b'0') as u64;
        }
        return v as f64;
    }
    std::str::from_utf8(raw)
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The byte-at-a-time scan `nested_end` replaced, as the reference.
    fn nested_end_bytes(buf: &[u8], pos: usize, open: u8, close: u8) -> usize {
        let n = buf.len();
        let mut depth = 0usize;
        let mut i = pos;
        while i < n {
            let c = buf[i];
            if c == b'"' {
                i += 1;
                while i < n {
                    match buf[i] {
                        b'\\' => i += 2,
                        b'"' => break,
                        _ => i += 1,
                    }
                }
            } else if c == open {
                depth += 1;
            } else if c == close {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            i += 1;
        }
        n
    }

    /// A random JSON value: nested objects and arrays, strings full of brackets, quotes and
    /// backslash runs of every length.
    fn random_value(r: &mut u64, depth: u32, out: &mut String) {
        let mut next = |m: u64| crate::test_rng::below(r, m);
        match if depth > 4 { 2 + next(2) } else { next(4) } {
            0 => {
                out.push('{');
                for i in 0..next(5) {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&format!("\"k{i}\":"));
                    random_value(r, depth + 1, out);
                }
                out.push('}');
            }
            1 => {
                out.push('[');
                for i in 0..next(5) {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    random_value(r, depth + 1, out);
                }
                out.push(']');
            }
            2 => {
                out.push('"');
                for _ in 0..next(90) {
                    match next(9) {
                        0 => out.push_str("\\\""),
                        1 => out.push_str(&"\\\\".repeat(1 + next(4) as usize)),
                        2 => out.push('{'),
                        3 => out.push('}'),
                        4 => out.push('['),
                        5 => out.push(']'),
                        6 => out.push('é'),
                        _ => out.push('x'),
                    }
                }
                out.push('"');
            }
            _ => out.push_str(["1", "-2.5e3", "true", "null"][next(4) as usize]),
        }
    }

    /// The walk down the structure `is_object_at` did before (it measured each level's
    /// subtree again: quadratic in the nesting), as the reference of the one-pass check.
    fn is_object_at_by_descent(buf: &[u8], root: usize, start: usize, end: usize) -> bool {
        let mut pos = root;
        loop {
            if pos == start {
                return kind(buf, pos) == Kind::Object && value_end(buf, pos) == end;
            }
            if pos > start {
                return false;
            }
            let mut inner = None;
            match kind(buf, pos) {
                Kind::Object => {
                    let mut at = first_member(buf, pos);
                    while let Some(i) = at {
                        let Some((m, next)) = next_member(buf, i) else { break };
                        if (m.val_start as usize) <= start && start < m.val_end as usize {
                            inner = Some(m.val_start as usize);
                            break;
                        }
                        if m.val_start as usize > start {
                            break;
                        }
                        at = next;
                    }
                }
                Kind::Array => array_elements(buf, pos, |a, b| {
                    if inner.is_none() && a <= start && start < b {
                        inner = Some(a);
                    }
                }),
                _ => return false,
            }
            match inner {
                Some(p) if p > pos => pos = p,
                _ => return false,
            }
        }
    }

    /// `is_object_at` agrees with the walk down the structure on random documents (strings
    /// full of braces, quotes and backslash runs), at every `{` of the document, inside strings
    /// or not, with the object's true end, one byte less and one more, and from a root inside.
    #[test]
    fn object_spans_agree_with_a_walk_down_the_structure() {
        let mut r = 0x0b1e_c7a7_u64;
        let (mut yes, mut no) = (0, 0);
        for _ in 0..2000 {
            let mut s = String::from("{\"a\":");
            random_value(&mut r, 0, &mut s);
            s.push_str(",\"b\":{\"c\":[{}]}}");
            let b = s.as_bytes();
            for start in (0..b.len()).filter(|&i| b[i] == b'{') {
                let end = value_end(b, start);
                for e in [end, end - 1, end + 1] {
                    for root in [0, 5] {
                        let got = is_object_at(b, root, start, e);
                        assert_eq!(
                            got,
                            is_object_at_by_descent(b, root, start, e),
                            "{s}: {root} {start}..{e}"
                        );
                        if got { yes += 1 } else { no += 1 }
                    }
                }
            }
        }
        assert!(yes > 2_000 && no > 2_000, "{yes} objects, {no} refused");
    }

    #[test]
    fn nested_end_agrees_with_the_byte_scan() {
        let mut r = 0x9e37_79b9_7f4a_7c15u64;
        let mut checked = 0;
        for _ in 0..4000 {
            let mut s = String::from("{\"a\":");
            random_value(&mut r, 0, &mut s);
            s.push_str(",\"b\":1}");
            let b = s.as_bytes();
            // Every object and array opening outside a string, at every offset.
            let mut i = 0;
            while i < b.len() {
                match b[i] {
                    b'"' => i = string_end(b, i).0,
                    c @ (b'{' | b'[') => {
                        let close = if c == b'{' { b'}' } else { b']' };
                        assert_eq!(
                            nested_end(b, i, c, close),
                            nested_end_bytes(b, i, c, close),
                            "{s} at {i}"
                        );
                        checked += 1;
                        i += 1;
                    }
                    _ => i += 1,
                }
            }
            // Cut short: no panic, and the end of the buffer when the close is missing.
            let cut = &b[..b.len() / 2];
            assert!(nested_end(cut, 0, b'{', b'}') <= cut.len());
        }
        assert!(checked > 10_000, "{checked}");
    }

    /// The byte-at-a-time definition of `string_end`.
    fn string_end_bytes(b: &[u8], pos: usize) -> (usize, bool) {
        let (mut i, mut escaped) = (pos + 1, false);
        while i < b.len() {
            match b[i] {
                b'"' => return (i + 1, escaped),
                b'\\' => {
                    escaped = true;
                    i += 2;
                }
                _ => i += 1,
            }
        }
        (b.len(), escaped)
    }

    #[test]
    fn string_end_agrees_with_the_byte_scan() {
        let mut r = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| crate::test_rng::below(&mut r, n);
        // Lengths around the 16-byte steps, quotes and backslash runs at every position,
        // and strings cut short (no closing quote).
        for _ in 0..20_000 {
            let len = next(70) as usize;
            let mut s = vec![b'"'];
            for _ in 0..len {
                s.push(match next(10) {
                    0 => b'\\',
                    1 => b'"',
                    _ => b'a' + next(26) as u8,
                });
            }
            if next(4) != 0 {
                s.push(b'"');
            }
            assert_eq!(
                string_end(&s, 0),
                string_end_bytes(&s, 0),
                "{}",
                String::from_utf8_lossy(&s)
            );
        }
    }

    fn members(s: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        object_members(s.as_bytes(), 0, &mut out);
        out.iter()
            .map(|m| {
                (
                    s[m.key_start as usize..m.key_end as usize].to_string(),
                    s[m.val_start as usize..m.val_end as usize].to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn finds_members_of_nested_objects() {
        let got = members(r#"{ "a" : 1, "b":{"c":[1,{"d":"}"}]},"e\"x":"q\\\"}","f":null,"g":-1.5e3 }"#);
        assert_eq!(
            got,
            vec![
                ("a".into(), "1".into()),
                ("b".into(), r#"{"c":[1,{"d":"}"}]}"#.into()),
                (r#"e\"x"#.into(), r#""q\\\"}""#.into()),
                ("f".into(), "null".into()),
                ("g".into(), "-1.5e3".into()),
            ]
        );
        assert!(members("{}").is_empty());
        assert!(members("[1]").is_empty());
    }

    #[test]
    fn truncated_input_does_not_panic() {
        for s in [r#"{"a":"#, r#"{"a":"x"#, r#"{"a":{"b":"#, r#"{"a""#, "{", r#"{"a":[1,"#] {
            let _ = members(s);
            let _ = value_end(s.as_bytes(), 0);
        }
    }

    #[test]
    fn object_spans_are_found_only_where_objects_are() {
        let doc = br#"{"a":{"b":[1,{"c":"{x}"}],"d":{}},"e":"{\"f\":1}"}"#;
        let objects: Vec<(usize, usize)> = (0..doc.len())
            .filter(|&i| doc[i] == b'{')
            .map(|i| (i, value_end(doc, i)))
            .collect();
        let mut valid = Vec::new();
        for &(s, e) in &objects {
            if is_object_at(doc, 0, s, e) {
                valid.push(&doc[s..e]);
            }
            assert!(!is_object_at(doc, 0, s, e - 1) && !is_object_at(doc, 0, s, e + 1));
        }
        // Every real object, and neither "{x}" nor the escaped object inside the string "e".
        let want: Vec<&[u8]> = vec![&doc[..], br#"{"b":[1,{"c":"{x}"}],"d":{}}"#, br#"{"c":"{x}"}"#, b"{}"];
        assert_eq!(valid, want);
        assert!(!is_object_at(doc, 0, 3, 3));
    }

    #[test]
    fn unescapes_strings() {
        let mut out = Vec::new();
        unescape(br#"a\"b\\c\/d\n\u00e9\ud83d\ude00"#, &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), "a\"b\\c/d\né😀");
    }

    #[test]
    fn array_elements_and_numbers() {
        let s = br#"[1, "a,b", {"x":[2]}, []]"#;
        let mut got = Vec::new();
        array_elements(s, 0, |a, b| got.push(String::from_utf8_lossy(&s[a..b]).into_owned()));
        assert_eq!(got, vec!["1", "\"a,b\"", "{\"x\":[2]}", "[]"]);
        assert_eq!(number(b"9007199254740991"), 9007199254740991.0);
        assert_eq!(number(b"-2.5"), -2.5);
        assert_eq!(number(b"1e3"), 1000.0);
    }
}
