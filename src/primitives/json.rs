//! JSON output primitives every stage writes with (records, stats lines, checkpoints).

/// Appends `s` as a JSON string, always valid UTF-8: a byte that does not start a well-formed
/// UTF-8 sequence (a script's string cut inside a character, binary bytes) becomes U+FFFD, as
/// `String::from_utf8_lossy` makes it, so that a reader of the output never meets a line it
/// must reject. [`write_str_bytes`] keeps such bytes (what `cjson_safe.encode` returns).
pub(crate) fn write_str(out: &mut Vec<u8>, s: &[u8]) {
    write_escaped(out, s, true);
}

/// Appends `s` as a JSON string with its bytes as they are (lua-cjson's `encode`: a string
/// that is not UTF-8 stays so).
pub(crate) fn write_str_bytes(out: &mut Vec<u8>, s: &[u8]) {
    write_escaped(out, s, false);
}

#[inline]
fn write_escaped(out: &mut Vec<u8>, s: &[u8], valid_utf8: bool) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let mut start = 0;
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        let esc: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            8 => b"\\b",
            12 => b"\\f",
            0..=0x1f | 0x7f => b"",
            0x80.. if valid_utf8 => {
                let w = utf8_width_at(s, i);
                if w > 0 {
                    i += w;
                    continue;
                }
                "\u{FFFD}".as_bytes()
            }
            _ => {
                i += 1;
                continue;
            }
        };
        out.extend_from_slice(&s[start..i]);
        if esc.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(c >> 4) as usize]);
            out.push(HEX[(c & 15) as usize]);
        } else {
            out.extend_from_slice(esc);
        }
        i += 1;
        start = i;
    }
    out.extend_from_slice(&s[start..]);
    out.push(b'"');
}

/// The length of the well-formed UTF-8 sequence of 2 to 4 bytes at `i`, or 0 when there is
/// none (a stray continuation byte, a cut sequence, an overlong form, a surrogate).
fn utf8_width_at(s: &[u8], i: usize) -> usize {
    let w = match s[i] {
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => return 0,
    };
    match s.get(i..i + w) {
        Some(seq) if std::str::from_utf8(seq).is_ok() => w,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(s: &[u8], valid: bool) -> Vec<u8> {
        let mut out = Vec::new();
        write_escaped(&mut out, s, valid);
        out
    }

    /// Escapes, well-formed UTF-8 kept, each byte of an ill-formed sequence replaced by
    /// U+FFFD (or kept by the byte-preserving form): the result always parses as a JSON string.
    #[test]
    fn strings_are_written_as_valid_utf8() {
        let cases: &[&[u8]] = &[
            b"plain",
            b"a\"b\\c/d\n\x01\x7f",
            "caf\u{e9} \u{4e2d} \u{1f600}".as_bytes(),
            b"Caf\xc3",
            b"\xff\xfe",
            b"\xc3\xa9\xc3",
            b"\xe4\xb8x",
            b"\xed\xa0\x80",
            b"\xc0\xaf",
            b"\xf4\x90\x80\x80",
            b"\x80x\xf0\x9f\x98",
        ];
        for &s in cases {
            let out = written(s, true);
            let text = std::str::from_utf8(&out).unwrap_or_else(|e| panic!("{s:?}: {e}"));
            let back: String = serde_json::from_str(text).unwrap_or_else(|e| panic!("{s:?}: {e}: {text}"));
            let mut want = String::new();
            for chunk in s.utf8_chunks() {
                want.push_str(chunk.valid());
                want.extend(std::iter::repeat_n('\u{FFFD}', chunk.invalid().len()));
            }
            assert_eq!(back, want, "{s:?}");
            if std::str::from_utf8(s).is_ok() {
                assert_eq!(
                    written(s, false),
                    out,
                    "{s:?}: valid text is written the same both ways"
                );
            }
        }
        assert_eq!(written(b"Caf\xc3", false), b"\"Caf\xc3\"");
        assert_eq!(written(b"Caf\xc3", true), "\"Caf\u{FFFD}\"".as_bytes());
    }
}
