//! `cjson_safe.decode`: lua-cjson 2.1.0's decoder with its defaults (a script's texts, not the
//! per-event path, which validates with simd-json), so that what the original took still
//! decodes (hexadecimal numbers, `inf`/`nan`,
//! a leading `+` or zeros, numbers out of a double's range as infinities, bytes that are not
//! UTF-8 and raw control characters in strings, 1,000 levels of nesting), and what it refused
//! gets its message ("Expected value but found T_END at character 1").
//!
//! The grammar and the messages follow lua-cjson's tokenizer: whitespace is space, tab, CR and
//! LF; a number is what C's `strtod` reads from a token starting with `-`, `+`, a digit,
//! `inf` or `nan` (any case); `true`, `false` and `null` are lowercase; `\u` escapes must
//! form valid UTF-16 (a surrogate pair gives one code point). Values are pushed straight onto
//! the Lua stack (strings need not be UTF-8); on an error the stack is left as it was.

use std::ffi::c_int;

use mlua::ffi::{self, lua_State};

use super::ffi_util::push_bytes;

/// The settings of `cjson_safe` that decoding follows.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// `decode_max_depth`: nested objects and arrays allowed (lua-cjson's default 1,000).
    pub max_depth: usize,
    /// `decode_invalid_numbers`: hexadecimal numbers, `inf`, `nan`, a leading `+` or zeros
    /// are read (lua-cjson's default); off, they are errors.
    pub invalid_numbers: bool,
}

#[derive(Clone, Copy, PartialEq)]
enum Tok {
    ObjBegin,
    ObjEnd,
    ArrBegin,
    ArrEnd,
    Str,
    Num(f64),
    Bool(bool),
    Null,
    Colon,
    Comma,
    End,
    Error(&'static str),
}

impl Tok {
    /// The name lua-cjson's messages give a token.
    fn name(self) -> &'static str {
        match self {
            Tok::ObjBegin => "T_OBJ_BEGIN",
            Tok::ObjEnd => "T_OBJ_END",
            Tok::ArrBegin => "T_ARR_BEGIN",
            Tok::ArrEnd => "T_ARR_END",
            Tok::Str => "T_STRING",
            Tok::Num(_) => "T_NUMBER",
            Tok::Bool(_) => "T_BOOLEAN",
            Tok::Null => "T_NULL",
            Tok::Colon => "T_COLON",
            Tok::Comma => "T_COMMA",
            Tok::End => "T_END",
            Tok::Error(what) => what,
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
    /// Where the last token started (0-based).
    at: usize,
    /// The last string token's bytes.
    text: Vec<u8>,
    depth: usize,
    limits: Limits,
}

/// Decodes `s` (which ends at its first NUL, as lua-cjson's C string does) and pushes the
/// value; on a syntax error pushes nothing and returns lua-cjson's message.
///
/// # Safety
/// `l` is this thread's running state.
pub(crate) unsafe fn decode(l: *mut lua_State, s: &[u8], limits: Limits) -> Result<(), String> {
    let s = s.split(|&b| b == 0).next().unwrap_or_default();
    let mut p = Parser {
        s,
        pos: 0,
        at: 0,
        text: Vec::new(),
        depth: 0,
        limits,
    };
    // SAFETY: the caller owns `l`.
    let top = unsafe { ffi::lua_gettop(l) };
    let r = (|| {
        let t = p.next();
        // SAFETY: as above.
        unsafe { p.value(l, t)? };
        match p.next() {
            Tok::End => Ok(()),
            t => Err(p.expected("the end", t)),
        }
    })();
    if r.is_err() {
        // SAFETY: as above; only values this call pushed are dropped.
        unsafe { ffi::lua_settop(l, top) };
    }
    r
}

impl Parser<'_> {
    fn peek(&self, i: usize) -> u8 {
        self.s.get(i).copied().unwrap_or(0)
    }

    fn expected(&self, what: &str, t: Tok) -> String {
        format!("Expected {what} but found {} at character {}", t.name(), self.at + 1)
    }

    fn next(&mut self) -> Tok {
        while matches!(self.peek(self.pos), b' ' | b'\t' | b'\n' | b'\r') {
            self.pos += 1;
        }
        self.at = self.pos;
        let c = self.peek(self.pos);
        let single = match c {
            0 => return Tok::End,
            b'{' => Some(Tok::ObjBegin),
            b'}' => Some(Tok::ObjEnd),
            b'[' => Some(Tok::ArrBegin),
            b']' => Some(Tok::ArrEnd),
            b':' => Some(Tok::Colon),
            b',' => Some(Tok::Comma),
            _ => None,
        };
        if let Some(t) = single {
            self.pos += 1;
            return t;
        }
        let rest = &self.s[self.pos..];
        match c {
            b'"' => self.string(),
            b'-' | b'0'..=b'9' if !self.limits.invalid_numbers && is_invalid_number(rest) => {
                Tok::Error("invalid number")
            }
            b'-' | b'0'..=b'9' => self.number(),
            b't' if rest.starts_with(b"true") => {
                self.pos += 4;
                Tok::Bool(true)
            }
            b'f' if rest.starts_with(b"false") => {
                self.pos += 5;
                Tok::Bool(false)
            }
            b'n' if rest.starts_with(b"null") => {
                self.pos += 4;
                Tok::Null
            }
            b'+' | b'i' | b'I' | b'n' | b'N'
                if self.limits.invalid_numbers && (c == b'+' || starts_inf_or_nan(rest)) =>
            {
                self.number()
            }
            _ => Tok::Error("invalid token"),
        }
    }

    /// An error found at the current position (lua-cjson reports where it stopped).
    fn error_here(&mut self, what: &'static str) -> Tok {
        self.at = self.pos;
        Tok::Error(what)
    }

    fn string(&mut self) -> Tok {
        self.text.clear();
        self.pos += 1;
        loop {
            let c = self.peek(self.pos);
            match c {
                b'"' => {
                    self.pos += 1;
                    return Tok::Str;
                }
                0 => return self.error_here("unexpected end of string"),
                b'\\' => {
                    let e = match self.peek(self.pos + 1) {
                        b'"' => b'"',
                        b'\\' => b'\\',
                        b'/' => b'/',
                        b'b' => 8,
                        b'f' => 12,
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'u' => {
                            if !self.unicode_escape() {
                                return self.error_here("invalid unicode escape code");
                            }
                            continue;
                        }
                        _ => return self.error_here("invalid escape code"),
                    };
                    self.text.push(e);
                    self.pos += 2;
                }
                c => {
                    self.text.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    /// `\uXXXX` (and its low surrogate) at `pos`: appends the code point as UTF-8.
    fn unicode_escape(&mut self) -> bool {
        let Some(mut cp) = self.hex4(self.pos + 2) else {
            return false;
        };
        let mut len = 6;
        if cp & 0xF800 == 0xD800 {
            if cp & 0x400 != 0 || self.peek(self.pos + 6) != b'\\' || self.peek(self.pos + 7) != b'u' {
                return false;
            }
            let Some(low) = self.hex4(self.pos + 8) else {
                return false;
            };
            if low & 0xFC00 != 0xDC00 {
                return false;
            }
            cp = (((cp & 0x3FF) << 10) | (low & 0x3FF)) + 0x10000;
            len = 12;
        }
        let Some(ch) = char::from_u32(cp) else { return false };
        let mut buf = [0u8; 4];
        self.text.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
        self.pos += len;
        true
    }

    fn hex4(&self, at: usize) -> Option<u32> {
        (0..4).try_fold(0u32, |v, i| Some(v << 4 | (self.peek(at + i) as char).to_digit(16)?))
    }

    fn number(&mut self) -> Tok {
        match strtod(&self.s[self.pos..]) {
            Some((v, n)) => {
                self.pos += n;
                Tok::Num(v)
            }
            None => Tok::Error("invalid number"),
        }
    }

    /// Pushes the value that starts with token `t`.
    unsafe fn value(&mut self, l: *mut lua_State, t: Tok) -> Result<(), String> {
        // SAFETY (whole body): the caller owns `l`; `descend` made room for what is pushed.
        unsafe {
            match t {
                Tok::Str => push_bytes(l, &self.text),
                Tok::Num(n) => ffi::lua_pushnumber(l, n),
                Tok::Bool(b) => ffi::lua_pushboolean(l, b as c_int),
                Tok::Null => ffi::lua_pushlightuserdata(l, std::ptr::null_mut()),
                Tok::ObjBegin => {
                    self.descend(l, 3)?;
                    ffi::lua_createtable(l, 0, 0);
                    let mut t = self.next();
                    if t != Tok::ObjEnd {
                        loop {
                            if t != Tok::Str {
                                return Err(self.expected("object key string", t));
                            }
                            push_bytes(l, &self.text);
                            let c = self.next();
                            if c != Tok::Colon {
                                return Err(self.expected("colon", c));
                            }
                            let v = self.next();
                            self.value(l, v)?;
                            ffi::lua_rawset(l, -3);
                            match self.next() {
                                Tok::ObjEnd => break,
                                Tok::Comma => t = self.next(),
                                other => return Err(self.expected("comma or object end", other)),
                            }
                        }
                    }
                    self.depth -= 1;
                }
                Tok::ArrBegin => {
                    self.descend(l, 2)?;
                    ffi::lua_createtable(l, 0, 0);
                    let mut t = self.next();
                    if t != Tok::ArrEnd {
                        let mut i: c_int = 1;
                        loop {
                            self.value(l, t)?;
                            ffi::lua_rawseti_(l, -2, i);
                            i += 1;
                            match self.next() {
                                Tok::ArrEnd => break,
                                Tok::Comma => t = self.next(),
                                other => return Err(self.expected("comma or array end", other)),
                            }
                        }
                    }
                    self.depth -= 1;
                }
                other => return Err(self.expected("value", other)),
            }
        }
        Ok(())
    }

    unsafe fn descend(&mut self, l: *mut lua_State, slots: c_int) -> Result<(), String> {
        self.depth += 1;
        // SAFETY: the caller owns `l`; lua_checkstack does not raise.
        if self.depth <= self.limits.max_depth && unsafe { ffi::lua_checkstack(l, slots) } != 0 {
            return Ok(());
        }
        Err(format!(
            "Found too many nested data structures ({}) at character {}",
            self.depth, self.pos
        ))
    }
}

/// lua-cjson's `json_is_invalid_number`: whether the number token at the start of `s` is one
/// that only `decode_invalid_numbers` admits (a leading `+`, hexadecimal, leading zeros,
/// `inf`, `nan`).
fn is_invalid_number(s: &[u8]) -> bool {
    let at = |i: usize| s.get(i).copied().unwrap_or(0);
    if at(0) == b'+' {
        return true;
    }
    let p = usize::from(at(0) == b'-');
    match at(p) {
        b'0' => {
            let c = at(p + 1);
            (c | 0x20) == b'x' || c.is_ascii_digit()
        }
        c if c <= b'9' => false,
        _ => starts_inf_or_nan(&s[p..]),
    }
}

fn starts_inf_or_nan(s: &[u8]) -> bool {
    s.len() >= 3 && (s[..3].eq_ignore_ascii_case(b"inf") || s[..3].eq_ignore_ascii_case(b"nan"))
}

/// C's `strtod` (C locale) on the start of `s`: the value and the bytes it read, `None` when
/// it reads nothing. Decimal (`1`, `-1.5e3`, `1.`, `-.5`), hexadecimal (`0x1F`, `0x1.8p1`),
/// `inf`/`infinity` and `nan`/`nan(chars)`, any case, with an optional sign.
pub(crate) fn strtod(s: &[u8]) -> Option<(f64, usize)> {
    let at = |i: usize| s.get(i).copied().unwrap_or(0);
    let mut i = 0;
    let neg = match at(0) {
        b'-' => {
            i = 1;
            true
        }
        b'+' => {
            i = 1;
            false
        }
        _ => false,
    };
    let sign = |v: f64| if neg { -v } else { v };
    let rest = &s[i..];
    if rest.len() >= 3 && rest[..3].eq_ignore_ascii_case(b"inf") {
        let n = if rest.len() >= 8 && rest[..8].eq_ignore_ascii_case(b"infinity") {
            8
        } else {
            3
        };
        return Some((sign(f64::INFINITY), i + n));
    }
    if rest.len() >= 3 && rest[..3].eq_ignore_ascii_case(b"nan") {
        let mut n = 3;
        if at(i + 3) == b'(' {
            let close = rest[4..]
                .iter()
                .position(|c| !(c.is_ascii_alphanumeric() || *c == b'_'));
            if let Some(k) = close
                && rest[4 + k] == b')'
            {
                n = 4 + k + 1;
            }
        }
        return Some((f64::NAN, i + n));
    }
    if at(i) == b'0' && at(i + 1) | 0x20 == b'x' {
        if let Some((v, n)) = hex_float(&s[i + 2..]) {
            return Some((sign(v), i + 2 + n));
        }
        // "0x" without hex digits: strtod reads the "0".
        return Some((sign(0.0), i + 1));
    }
    // Decimal: digits, an optional fraction, an optional exponent with at least one digit.
    let start = i;
    let int_digits = s[i..].iter().take_while(|c| c.is_ascii_digit()).count();
    i += int_digits;
    let mut frac_digits = 0;
    if at(i) == b'.' {
        frac_digits = s[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if int_digits + frac_digits > 0 {
            i += 1 + frac_digits;
        }
    }
    if int_digits + frac_digits == 0 {
        return None;
    }
    if at(i) | 0x20 == b'e' {
        let mut j = i + 1;
        if matches!(at(j), b'+' | b'-') {
            j += 1;
        }
        let exp_digits = s[j..].iter().take_while(|c| c.is_ascii_digit()).count();
        if exp_digits > 0 {
            i = j + exp_digits;
        }
    }
    let text = std::str::from_utf8(&s[start..i]).ok()?;
    let v: f64 = text.parse().ok()?;
    Some((sign(v), i))
}

/// The hexadecimal digits (with an optional `.` and binary exponent `p`) after `0x`: the value
/// and the bytes read, `None` without a digit.
fn hex_float(s: &[u8]) -> Option<(f64, usize)> {
    let at = |i: usize| s.get(i).copied().unwrap_or(0);
    let digit = |c: u8| (c as char).to_digit(16);
    let mut mant: u64 = 0;
    let mut exp: i64 = 0;
    let mut sticky = false;
    let mut digits = 0;
    let mut i = 0;
    let mut take = |d: u32, frac: bool, exp: &mut i64| {
        if mant >> 56 == 0 {
            mant = mant << 4 | d as u64;
            if frac {
                *exp -= 4;
            }
        } else {
            sticky |= d != 0;
            if !frac {
                *exp += 4;
            }
        }
    };
    while let Some(d) = digit(at(i)) {
        take(d, false, &mut exp);
        digits += 1;
        i += 1;
    }
    if at(i) == b'.' {
        let mut j = i + 1;
        let mut frac = 0;
        while let Some(d) = digit(at(j)) {
            take(d, true, &mut exp);
            frac += 1;
            j += 1;
        }
        if digits + frac > 0 {
            i = j;
            digits += frac;
        }
    }
    if digits == 0 {
        return None;
    }
    if at(i) | 0x20 == b'p' {
        let mut j = i + 1;
        let neg = at(j) == b'-';
        if matches!(at(j), b'+' | b'-') {
            j += 1;
        }
        let n = s[j..].iter().take_while(|c| c.is_ascii_digit()).count();
        if n > 0 {
            let e = s[j..j + n]
                .iter()
                .fold(0i64, |e, c| (e * 10 + (c - b'0') as i64).min(1 << 20));
            exp += if neg { -e } else { e };
            i = j + n;
        }
    }
    let m = (mant | sticky as u64) as f64;
    Some((scale2(m, exp), i))
}

/// `m * 2^e` without overflowing the intermediate power.
fn scale2(mut m: f64, mut e: i64) -> f64 {
    while e > 1000 {
        m *= 2f64.powi(1000);
        e -= 1000;
    }
    while e < -1000 {
        m *= 2f64.powi(-1000);
        e += 1000;
    }
    m * 2f64.powi(e as i32)
}

#[cfg(test)]
mod tests {
    use super::strtod;

    #[test]
    fn strtod_reads_what_c_reads() {
        let r = |s: &str| strtod(s.as_bytes());
        assert_eq!(r("12"), Some((12.0, 2)));
        assert_eq!(r("-1.5e3,"), Some((-1500.0, 6)));
        assert_eq!(r("1."), Some((1.0, 2)));
        assert_eq!(r("-.5"), Some((-0.5, 3)));
        assert_eq!(r("1e"), Some((1.0, 1)));
        assert_eq!(r("1e+x"), Some((1.0, 1)));
        assert_eq!(r("007"), Some((7.0, 3)));
        assert_eq!(r("+5"), Some((5.0, 2)));
        assert_eq!(r("0x1F"), Some((31.0, 4)));
        assert_eq!(r("0x1.8p1"), Some((3.0, 7)));
        assert_eq!(r("0x"), Some((0.0, 1)));
        assert_eq!(r("-0x10g"), Some((-16.0, 5)));
        assert_eq!(r("Infinity"), Some((f64::INFINITY, 8)));
        assert_eq!(r("-inFx"), Some((f64::NEG_INFINITY, 4)));
        assert_eq!(r("1e400"), Some((f64::INFINITY, 5)));
        assert!(r("nan(abc)").is_some_and(|(v, n)| v.is_nan() && n == 8));
        assert!(r("NaN(").is_some_and(|(v, n)| v.is_nan() && n == 3));
        assert_eq!(r("-"), None);
        assert_eq!(r("."), None);
        assert_eq!(r("- 1"), None);
        assert_eq!(r("0x10000000000000001p0").map(|v| v.0), Some(18446744073709551617.0));
    }
}
