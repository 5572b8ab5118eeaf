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
use crate::primitives::strtod::strtod;

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
        crate::event::scan::hex4(self.s, at)
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
