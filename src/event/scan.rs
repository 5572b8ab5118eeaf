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
pub enum Kind {
    Object,
    Array,
    String,
    Number,
    True,
    False,
    Null,
    Invalid,
}

pub fn kind(buf: &[u8], pos: usize) -> Kind {
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
#[inline]
pub fn string_end(buf: &[u8], pos: usize) -> (usize, bool) {
    let mut i = pos + 1;
    let mut escaped = false;
    while let Some(rest) = buf.get(i..) {
        match rest.iter().position(|&c| c == b'"' || c == b'\\') {
            Some(off) => {
                i += off;
                if buf[i] == b'\\' {
                    escaped = true;
                    i += 2;
                } else {
                    return (i + 1, escaped);
                }
            }
            None => break,
        }
    }
    (buf.len(), escaped)
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
pub fn value_end(buf: &[u8], pos: usize) -> usize {
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
/// counting (the other kind is balanced inside valid JSON); strings are skipped whole, since
/// they may contain brackets.
fn nested_end(buf: &[u8], pos: usize, open: u8, close: u8) -> usize {
    // A plain byte loop: nested EVE objects are short and full of short strings, where a SIMD
    // search would pay its setup cost at every quote.
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

/// Collects the members of the object starting with `{` at `pos` into `out` (cleared first).
pub fn object_members(buf: &[u8], pos: usize, out: &mut Vec<Member>) {
    out.clear();
    let mut at = first_member(buf, pos);
    while let Some(i) = at {
        let Some((m, next)) = next_member(buf, i) else { return };
        out.push(m);
        at = next;
    }
}

/// Calls `f` with the (start, end) range of each element of the array starting at `pos`.
pub fn array_elements(buf: &[u8], pos: usize, mut f: impl FnMut(usize, usize)) {
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

/// Decodes the JSON string body `raw` (between the quotes) into `out`.
pub fn unescape(raw: &[u8], out: &mut Vec<u8>) {
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
                let mut cp = hex4(raw, i);
                i += 4;
                if (0xD800..0xDC00).contains(&cp) && raw.get(i) == Some(&b'\\') && raw.get(i + 1) == Some(&b'u') {
                    let lo = hex4(raw, i + 2);
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

fn hex4(raw: &[u8], i: usize) -> u32 {
    let mut v = 0u32;
    for k in 0..4 {
        let d = match raw.get(i + k) {
            Some(c @ b'0'..=b'9') => c - b'0',
            Some(c @ b'a'..=b'f') => c - b'a' + 10,
            Some(c @ b'A'..=b'F') => c - b'A' + 10,
            _ => return 0xFFFD,
        };
        v = v * 16 + d as u32;
    }
    v
}

/// Parses a JSON number as a Lua number (a double). Integers are exact up to 2^53.
pub fn number(raw: &[u8]) -> f64 {
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
