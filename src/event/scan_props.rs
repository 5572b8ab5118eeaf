//! Randomised checks of the structural scanner (`scan`) with serde_json as the oracle.
//!
//! Valid documents are generated together with their model (every value's byte range, decoded
//! strings, member order and duplicate keys); serde_json must parse the text to the model
//! (last occurrence of a key wins there), and the scanner must report exactly the model:
//! members in order, value kinds and ranges, numbers as `scan::number` decodes them, strings
//! as `scan::unescape` decodes them, array elements, and duplicate keys. Mutated documents
//! (bytes flipped, inserted, deleted, cut) that serde_json still accepts are compared with an
//! independent reference parser the same way; all of them, and arbitrary bytes, must leave
//! the scanner without a panic and with ranges inside the buffer, which sits flush against an
//! unreadable guard page so that a read past either end faults.

use serde_json::Value;

use super::scan::{self, Kind, Member};

/// Deterministic random source over `crate::test_rng` (xorshift64).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        crate::test_rng::below(&mut self.0, n)
    }

    fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
}

/// A JSON value with its byte range in the document.
#[derive(Clone, Debug, PartialEq)]
struct Node {
    start: usize,
    end: usize,
    v: V,
}

#[derive(Clone, Debug, PartialEq)]
enum V {
    /// Members in document order (decoded keys), and whether a key occurs twice.
    Obj(Vec<(Vec<u8>, Node)>, bool),
    Arr(Vec<Node>),
    /// The decoded string.
    Str(Vec<u8>),
    /// The number's bits (so that -0 and 0 differ).
    Num(u64),
    True,
    False,
    Null,
}

// ---------------------------------------------------------------------------------------------
// Generator of valid documents with their model
// ---------------------------------------------------------------------------------------------

fn ws(r: &mut Rng, out: &mut Vec<u8>) {
    if r.one_in(4) {
        for _ in 0..1 + r.below(3) {
            out.push(*r.pick(b" \t\n\r"));
        }
    }
}

fn hex4(r: &mut Rng, cp: u32, out: &mut Vec<u8>) {
    let s = format!("\\u{cp:04x}");
    let s = if r.one_in(2) {
        s.to_ascii_uppercase().replace("\\U", "\\u")
    } else {
        s
    };
    out.extend_from_slice(s.as_bytes());
}

/// Writes a JSON string (quotes included) and returns its decoded bytes.
fn gen_string(r: &mut Rng, out: &mut Vec<u8>) -> Vec<u8> {
    let mut dec = Vec::new();
    out.push(b'"');
    let pieces = match r.below(6) {
        0 => 0,
        1 => 20 + r.below(60),
        _ => r.below(8),
    };
    for _ in 0..pieces {
        match r.below(16) {
            0 => {
                // A long plain run, across the 16-byte steps of `string_end`.
                for _ in 0..r.below(40) {
                    let c = b'a' + r.below(26) as u8;
                    out.push(c);
                    dec.push(c);
                }
            }
            1 | 2 => {
                let s = *r.pick(&["é", "€", "😀", "ß", "中", "\u{7f}", "\u{fffd}"]);
                out.extend_from_slice(s.as_bytes());
                dec.extend_from_slice(s.as_bytes());
            }
            3 | 4 => {
                let (e, d) = *r.pick(&[
                    ("\\\"", b'"'),
                    ("\\\\", b'\\'),
                    ("\\/", b'/'),
                    ("\\b", 8),
                    ("\\f", 12),
                    ("\\n", b'\n'),
                    ("\\r", b'\r'),
                    ("\\t", b'\t'),
                ]);
                out.extend_from_slice(e.as_bytes());
                dec.push(d);
            }
            5 => {
                // A run of escaped backslashes, then maybe an escaped quote.
                let n = 1 + r.below(5) as usize;
                out.extend_from_slice(&b"\\\\".repeat(n));
                dec.extend_from_slice(&b"\\".repeat(n));
                if r.one_in(2) {
                    out.extend_from_slice(b"\\\"");
                    dec.push(b'"');
                }
            }
            6 => {
                // A control character as \u00XX.
                let cp = r.below(0x20) as u32;
                hex4(r, cp, out);
                dec.push(cp as u8);
            }
            7 => {
                // A BMP character outside the surrogates as \uXXXX.
                let cp = loop {
                    let c = r.below(0x1_0000) as u32;
                    if !(0xD800..0xE000).contains(&c) {
                        break c;
                    }
                };
                hex4(r, cp, out);
                let mut b = [0u8; 4];
                dec.extend_from_slice(char::from_u32(cp).unwrap().encode_utf8(&mut b).as_bytes());
            }
            8 => {
                // An astral character as a surrogate pair.
                let cp = 0x1_0000 + r.below(0x10_0000) as u32;
                let v = cp - 0x1_0000;
                hex4(r, 0xD800 + (v >> 10), out);
                hex4(r, 0xDC00 + (v & 0x3FF), out);
                let mut b = [0u8; 4];
                dec.extend_from_slice(char::from_u32(cp).unwrap().encode_utf8(&mut b).as_bytes());
            }
            9 => {
                // Brackets, braces, commas and colons inside a string.
                let c = *r.pick(b"{}[],:");
                out.push(c);
                dec.push(c);
            }
            _ => {
                let c = *r.pick(b"abcxyzXYZ0123456789 -_.+'~#");
                out.push(c);
                dec.push(c);
            }
        }
    }
    out.push(b'"');
    dec
}

/// Writes `key` as a JSON string, escaped differently from how it was first written.
fn write_key_again(r: &mut Rng, key: &[u8], out: &mut Vec<u8>) {
    let s = std::str::from_utf8(key).expect("decoded keys are UTF-8");
    out.push(b'"');
    for ch in s.chars() {
        match ch {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            c if (c as u32) < 0x20 => hex4(r, c as u32, out),
            c if r.one_in(3) => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    hex4(r, *u as u32, out);
                }
            }
            c => {
                let mut b = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
        }
    }
    out.push(b'"');
}

const NUMBERS: &[&str] = &[
    "0",
    "-0",
    "-0.0",
    "0e0",
    "1e308",
    "-1e308",
    "1E-5",
    "1e+2",
    "0.1",
    "1.5E+3",
    "123.456e-7",
    "1.7976931348623157e308",
    "2.2250738585072014e-308",
    "2.2250738585072011e-308",
    "4.9e-324",
    "5e-324",
    "1e-400",
    "9007199254740991",
    "9007199254740993",
    "999999999999999999",
    "1000000000000000000",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775808",
    "-9223372036854775809",
    "123456789012345678901234567890",
    "0.30000000000000004",
    "1.00000000000000000000000000000000001",
];

fn gen_number(r: &mut Rng) -> String {
    if r.one_in(3) {
        return r.pick(NUMBERS).to_string();
    }
    loop {
        let mut s = String::new();
        if r.one_in(3) {
            s.push('-');
        }
        if r.one_in(4) {
            s.push('0');
        } else {
            s.push((b'1' + r.below(9) as u8) as char);
            for _ in 0..r.below(22) {
                s.push((b'0' + r.below(10) as u8) as char);
            }
        }
        if r.one_in(3) {
            s.push('.');
            for _ in 0..1 + r.below(20) {
                s.push((b'0' + r.below(10) as u8) as char);
            }
        }
        if r.one_in(3) {
            s.push(*r.pick(&['e', 'E']));
            match r.below(3) {
                0 => s.push('+'),
                1 => s.push('-'),
                _ => {}
            }
            for _ in 0..1 + r.below(3) {
                s.push((b'0' + r.below(10) as u8) as char);
            }
        }
        // Out of range for a double (1e999): not a number serde_json accepts.
        if serde_json::from_str::<f64>(&s).is_ok() {
            return s;
        }
    }
}

fn oracle_number(raw: &[u8]) -> f64 {
    serde_json::from_slice::<f64>(raw)
        .unwrap_or_else(|e| panic!("serde_json rejects the number {:?}: {e}", String::from_utf8_lossy(raw)))
}

const KEYS: &[&str] = &[
    "src_ip",
    "dest_port",
    "flow_id",
    "event_type",
    "a",
    "b",
    "k0",
    "é",
    "",
    "x y",
    "dns",
    "{\"[",
];

/// Writes a random value at nesting `depth` and returns its model.
fn gen_value(r: &mut Rng, depth: u32, out: &mut Vec<u8>) -> Node {
    let start = out.len();
    let pick = if depth >= 6 { 3 + r.below(4) } else { r.below(8) };
    let v = match pick {
        0 | 1 => return gen_object(r, depth, out),
        2 => {
            out.push(b'[');
            ws(r, out);
            let n = if r.one_in(6) { 0 } else { r.below(6) };
            let mut elems = Vec::new();
            for i in 0..n {
                if i > 0 {
                    out.push(b',');
                    ws(r, out);
                }
                elems.push(gen_value(r, depth + 1, out));
                ws(r, out);
            }
            out.push(b']');
            V::Arr(elems)
        }
        3 | 4 => V::Str(gen_string(r, out)),
        5 => {
            let s = gen_number(r);
            out.extend_from_slice(s.as_bytes());
            V::Num(oracle_number(s.as_bytes()).to_bits())
        }
        _ => {
            let (s, v) = r.pick(&[("true", V::True), ("false", V::False), ("null", V::Null)]);
            out.extend_from_slice(s.as_bytes());
            v.clone()
        }
    };
    Node {
        start,
        end: out.len(),
        v,
    }
}

fn gen_object(r: &mut Rng, depth: u32, out: &mut Vec<u8>) -> Node {
    let start = out.len();
    out.push(b'{');
    ws(r, out);
    // Mostly small; sometimes more than 32 members (the sorting path of the duplicate check).
    let n = match r.below(30) {
        0 if depth < 2 => 33 + r.below(8),
        1..=4 => 0,
        _ => 1 + r.below(6),
    };
    let dups = r.one_in(6);
    let mut members: Vec<(Vec<u8>, Node)> = Vec::new();
    for i in 0..n {
        if i > 0 {
            out.push(b',');
            ws(r, out);
        }
        let key = if dups && !members.is_empty() && r.one_in(3) {
            let k = members[r.below(members.len() as u64) as usize].0.clone();
            write_key_again(r, &k, out);
            k
        } else if r.one_in(2) {
            let k = r.pick(KEYS).as_bytes().to_vec();
            write_key_again(r, &k, out);
            k
        } else {
            gen_string(r, out)
        };
        ws(r, out);
        out.push(b':');
        ws(r, out);
        let v = gen_value(r, depth + 1, out);
        ws(r, out);
        members.push((key, v));
    }
    out.push(b'}');
    let dup = has_dup(&members);
    Node {
        start,
        end: out.len(),
        v: V::Obj(members, dup),
    }
}

fn has_dup(members: &[(Vec<u8>, Node)]) -> bool {
    members
        .iter()
        .enumerate()
        .any(|(j, (k, _))| members[..j].iter().any(|(e, _)| e == k))
}

/// A random document: mostly an object (what events are), sometimes any value.
fn gen_doc(r: &mut Rng) -> (Vec<u8>, Node) {
    let mut out = Vec::new();
    ws(r, &mut out);
    let root = if r.one_in(8) {
        gen_value(r, 0, &mut out)
    } else {
        gen_object(r, 0, &mut out)
    };
    ws(r, &mut out);
    (out, root)
}

// ---------------------------------------------------------------------------------------------
// Oracle and reference parser
// ---------------------------------------------------------------------------------------------

/// The model as serde_json sees it: the last occurrence of a key wins, numbers as doubles.
fn to_serde(n: &Node) -> Value {
    match &n.v {
        V::Obj(members, _) => {
            let mut m = serde_json::Map::new();
            for (k, v) in members {
                m.insert(String::from_utf8(k.clone()).expect("UTF-8 key"), to_serde(v));
            }
            Value::Object(m)
        }
        V::Arr(a) => Value::Array(a.iter().map(to_serde).collect()),
        V::Str(s) => Value::String(String::from_utf8(s.clone()).expect("UTF-8 string")),
        V::Num(bits) => num(f64::from_bits(*bits)),
        V::True => Value::Bool(true),
        V::False => Value::Bool(false),
        V::Null => Value::Null,
    }
}

fn num(x: f64) -> Value {
    Value::Number(serde_json::Number::from_f64(x).expect("finite"))
}

/// serde_json's value with every number as a double.
fn normalize(v: Value) -> Value {
    match v {
        Value::Number(n) => num(n.as_f64().expect("a double")),
        Value::Array(a) => Value::Array(a.into_iter().map(normalize).collect()),
        Value::Object(m) => Value::Object(m.into_iter().map(|(k, v)| (k, normalize(v))).collect()),
        other => other,
    }
}

/// A recursive-descent parser of JSON that serde_json accepted, independent of `scan`: it
/// finds structure and ranges by itself and has serde_json decode strings and numbers.
struct RefParser<'a> {
    b: &'a [u8],
    i: usize,
}

impl RefParser<'_> {
    fn ws(&mut self) {
        while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn string(&mut self) -> Vec<u8> {
        let start = self.i;
        self.i += 1;
        loop {
            match self.b[self.i] {
                b'\\' => self.i += 2,
                b'"' => {
                    self.i += 1;
                    break;
                }
                _ => self.i += 1,
            }
        }
        serde_json::from_slice::<String>(&self.b[start..self.i])
            .expect("serde_json decodes a string it accepted")
            .into_bytes()
    }

    fn value(&mut self) -> Node {
        let start = self.i;
        let v = match self.b[self.i] {
            b'{' => {
                self.i += 1;
                self.ws();
                let mut members = Vec::new();
                if self.b[self.i] == b'}' {
                    self.i += 1;
                } else {
                    loop {
                        self.ws();
                        let k = self.string();
                        self.ws();
                        assert_eq!(self.b[self.i], b':');
                        self.i += 1;
                        self.ws();
                        let v = self.value();
                        members.push((k, v));
                        self.ws();
                        let c = self.b[self.i];
                        self.i += 1;
                        if c == b'}' {
                            break;
                        }
                    }
                }
                let dup = has_dup(&members);
                V::Obj(members, dup)
            }
            b'[' => {
                self.i += 1;
                self.ws();
                let mut elems = Vec::new();
                if self.b[self.i] == b']' {
                    self.i += 1;
                } else {
                    loop {
                        self.ws();
                        elems.push(self.value());
                        self.ws();
                        let c = self.b[self.i];
                        self.i += 1;
                        if c == b']' {
                            break;
                        }
                    }
                }
                V::Arr(elems)
            }
            b'"' => V::Str(self.string()),
            b't' => {
                self.i += 4;
                V::True
            }
            b'f' => {
                self.i += 5;
                V::False
            }
            b'n' => {
                self.i += 4;
                V::Null
            }
            _ => {
                while self.i < self.b.len() && matches!(self.b[self.i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                {
                    self.i += 1;
                }
                V::Num(oracle_number(&self.b[start..self.i]).to_bits())
            }
        };
        Node { start, end: self.i, v }
    }
}

fn ref_parse(b: &[u8]) -> Node {
    let mut p = RefParser { b, i: 0 };
    p.ws();
    p.value()
}

// ---------------------------------------------------------------------------------------------
// What the scanner reports
// ---------------------------------------------------------------------------------------------

/// The tree the scanner reports for the value at `pos`, checking on the way that its
/// functions agree with each other (`value_end`, `string_end`, member and element ranges).
fn scan_tree(b: &[u8], pos: usize) -> Result<Node, String> {
    let end = scan::value_end(b, pos);
    let v = match scan::kind(b, pos) {
        Kind::Object => {
            let mut ms: Vec<Member> = Vec::new();
            scan::object_members(b, pos, &mut ms);
            let mut members = Vec::new();
            for m in &ms {
                let raw = &b[m.key_start as usize..m.key_end as usize];
                if m.key_escaped != raw.contains(&b'\\') {
                    return Err(format!("key at {}: key_escaped is {}", m.key_start, m.key_escaped));
                }
                let mut key = Vec::new();
                if m.key_escaped {
                    scan::unescape(raw, &mut key);
                } else {
                    key.extend_from_slice(raw);
                }
                let v = scan_tree(b, m.val_start as usize)?;
                if v.end != m.val_end as usize {
                    return Err(format!(
                        "member at {}: val_end {} but value_end {}",
                        m.key_start, m.val_end, v.end
                    ));
                }
                members.push((key, v));
            }
            V::Obj(members, scan::has_duplicate_keys(b, &ms))
        }
        Kind::Array => {
            let mut ranges = Vec::new();
            scan::array_elements(b, pos, |a, e| ranges.push((a, e)));
            let mut elems = Vec::new();
            for (a, e) in ranges {
                let v = scan_tree(b, a)?;
                if v.end != e {
                    return Err(format!("element at {a}: ends at {e} but value_end {}", v.end));
                }
                elems.push(v);
            }
            V::Arr(elems)
        }
        Kind::String => {
            let (se, escaped) = scan::string_end(b, pos);
            if se != end || escaped != b[pos + 1..end - 1].contains(&b'\\') {
                return Err(format!(
                    "string at {pos}: string_end {:?}, value_end {end}",
                    (se, escaped)
                ));
            }
            let mut s = Vec::new();
            scan::unescape(&b[pos + 1..end - 1], &mut s);
            V::Str(s)
        }
        Kind::Number => V::Num(scan::number(&b[pos..end]).to_bits()),
        Kind::True => V::True,
        Kind::False => V::False,
        Kind::Null => V::Null,
        Kind::Invalid => return Err(format!("invalid kind at {pos}")),
    };
    Ok(Node { start: pos, end, v })
}

/// Where two trees first differ (the path from the root), or `None`.
fn first_difference(want: &Node, got: &Node, path: &str) -> Option<String> {
    if (want.start, want.end) != (got.start, got.end) {
        return Some(format!(
            "{path}: range {}..{} expected, scanner {}..{}",
            want.start, want.end, got.start, got.end
        ));
    }
    match (&want.v, &got.v) {
        (V::Obj(a, da), V::Obj(b, db)) => {
            if a.len() != b.len() {
                return Some(format!("{path}: {} members expected, scanner {}", a.len(), b.len()));
            }
            for (i, ((ka, va), (kb, vb))) in a.iter().zip(b).enumerate() {
                let p = format!("{path}.{}", String::from_utf8_lossy(ka));
                if ka != kb {
                    return Some(format!(
                        "{path}: member {i} key {:?} expected, scanner {:?}",
                        String::from_utf8_lossy(ka),
                        String::from_utf8_lossy(kb)
                    ));
                }
                if let Some(d) = first_difference(va, vb, &p) {
                    return Some(d);
                }
            }
            (da != db).then(|| format!("{path}: duplicate keys {da} expected, scanner {db}"))
        }
        (V::Arr(a), V::Arr(b)) => {
            if a.len() != b.len() {
                return Some(format!("{path}: {} elements expected, scanner {}", a.len(), b.len()));
            }
            a.iter()
                .zip(b)
                .enumerate()
                .find_map(|(i, (x, y))| first_difference(x, y, &format!("{path}[{i}]")))
        }
        (V::Num(a), V::Num(b)) if a != b => Some(format!(
            "{path}: number {:?} expected, scanner {:?}",
            f64::from_bits(*a),
            f64::from_bits(*b)
        )),
        (V::Str(a), V::Str(b)) if a != b => Some(format!(
            "{path}: string {:?} expected, scanner {:?}",
            String::from_utf8_lossy(a),
            String::from_utf8_lossy(b)
        )),
        (a, b) if a != b => Some(format!("{path}: {a:?} expected, scanner {b:?}")),
        _ => None,
    }
}

fn show(doc: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(doc))
}

/// Full comparison of a valid document: serde_json against the model, the scanner against
/// the model (in both placements against a guard page).
fn check_valid(doc: &[u8], model: &Node, case: usize) {
    let parsed: Value = serde_json::from_slice(doc).unwrap_or_else(|e| {
        panic!(
            "case {case}: serde_json rejects a generated document ({e}): {}",
            show(doc)
        )
    });
    assert!(
        normalize(parsed) == to_serde(model),
        "case {case}: serde_json disagrees with the generator's model: {}",
        show(doc)
    );
    for at_end in [true, false] {
        let g = Guarded::new(doc, at_end);
        let b = g.bytes();
        let root = scan::skip_ws(b, 0);
        let got = scan_tree(b, root).unwrap_or_else(|e| panic!("case {case}: {e}\ndocument: {}", show(doc)));
        if let Some(d) = first_difference(model, &got, "$") {
            panic!("case {case}: {d}\ndocument: {}", show(doc));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Guard pages
// ---------------------------------------------------------------------------------------------

/// A copy of some bytes in a mapping whose neighbouring pages are unreadable, flush against
/// the end (or the start) of its readable pages: a read past that end faults.
struct Guarded {
    map: *mut u8,
    map_len: usize,
    data: *const u8,
    len: usize,
}

impl Guarded {
    fn new(bytes: &[u8], at_end: bool) -> Guarded {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let data_pages = bytes.len().div_ceil(page).max(1);
        let map_len = (data_pages + 2) * page;
        // SAFETY: a fresh anonymous mapping; the readable middle is set up below, the first
        // and last pages stay PROT_NONE.
        unsafe {
            let map = libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(map, libc::MAP_FAILED, "mmap");
            let map = map.cast::<u8>();
            let r = libc::mprotect(
                map.add(page).cast(),
                data_pages * page,
                libc::PROT_READ | libc::PROT_WRITE,
            );
            assert_eq!(r, 0, "mprotect");
            let offset = if at_end {
                page + data_pages * page - bytes.len()
            } else {
                page
            };
            let data = map.add(offset);
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), data, bytes.len());
            Guarded {
                map,
                map_len,
                data,
                len: bytes.len(),
            }
        }
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `data..data + len` lies in the readable pages of the live mapping.
        unsafe { std::slice::from_raw_parts(self.data, self.len) }
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe {
            libc::munmap(self.map.cast(), self.map_len);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Malformed input
// ---------------------------------------------------------------------------------------------

/// Mutates a document in place: bytes flipped, inserted, deleted, cut, copied.
fn mutate(r: &mut Rng, doc: &mut Vec<u8>) {
    for _ in 0..1 + r.below(3) {
        let n = doc.len();
        let at = r.below(n as u64 + 1) as usize;
        let byte = |r: &mut Rng| -> u8 {
            match r.below(3) {
                0 => *r.pick(b"{}[]\",:\\ 0-eE.tfnu"),
                1 => b' ' + r.below(95) as u8,
                _ => r.below(256) as u8,
            }
        };
        match r.below(6) {
            0 if at < n => doc[at] = byte(r),
            1 => {
                let c = byte(r);
                doc.insert(at, c);
            }
            2 if at < n => {
                doc.remove(at);
            }
            3 => doc.truncate(at),
            4 if at < n => {
                let len = (r.below(16) as usize).min(n - at);
                let piece = doc[at..at + len].to_vec();
                let to = r.below(doc.len() as u64 + 1) as usize;
                doc.splice(to..to, piece);
            }
            _ if n >= 2 => {
                let other = r.below(n as u64) as usize;
                doc.swap(at.min(n - 1), other);
            }
            _ => {}
        }
    }
}

/// Runs the scanner over malformed bytes the way the engine walks an event, from `pos`:
/// nothing may panic, and every reported range must lie inside the buffer, in order.
fn explore(b: &[u8], pos: usize, depth: u32, doc: &[u8]) {
    let n = b.len();
    let fail = |what: String| -> ! { panic!("{what} at {pos} of {n} bytes\ndocument: {}", show(doc)) };
    let kind = scan::kind(b, pos);
    let end = scan::value_end(b, pos);
    if end > n || (kind == Kind::Invalid && end != pos) || (kind != Kind::Invalid && end <= pos) {
        fail(format!("value_end {end} for {kind:?}"));
    }
    if b.get(pos) == Some(&b'"') {
        let (se, _) = scan::string_end(b, pos);
        if se > n || se <= pos {
            fail(format!("string_end {se}"));
        }
    }
    let raw = &b[pos.min(n)..end.max(pos.min(n))];
    match kind {
        Kind::String => {
            // As the engine takes a string's body.
            let body = &raw[1..raw.len().saturating_sub(1).max(1)];
            let mut out = Vec::new();
            scan::unescape(body, &mut out);
        }
        Kind::Number => {
            let _ = scan::number(raw);
        }
        Kind::Object if depth < 8 => {
            let mut ms = Vec::new();
            scan::object_members(b, pos, &mut ms);
            let mut last = pos;
            for m in &ms {
                let (ks, ke, vs, ve) = (
                    m.key_start as usize,
                    m.key_end as usize,
                    m.val_start as usize,
                    m.val_end as usize,
                );
                if !(last < ks && ks <= ke && ke < vs && vs < ve && ve <= n) {
                    fail(format!("member {m:?} after {last}"));
                }
                last = ve;
                let mut key = Vec::new();
                scan::unescape(&b[ks..ke], &mut key);
                explore(b, vs, depth + 1, doc);
            }
            let _ = scan::has_duplicate_keys(b, &ms);
        }
        Kind::Array if depth < 8 => {
            let mut ranges = Vec::new();
            scan::array_elements(b, pos, |a, e| ranges.push((a, e)));
            let mut last = pos;
            for &(a, e) in &ranges {
                if !(last < a && a < e && e <= n) {
                    fail(format!("element {a}..{e} after {last}"));
                }
                last = e;
                explore(b, a, depth + 1, doc);
            }
        }
        _ => {}
    }
}

/// Explores `doc` from its start and from a few other offsets, in both guard placements.
fn explore_all(r: &mut Rng, doc: &[u8]) {
    let starts: Vec<usize> = std::iter::once(scan::skip_ws(doc, 0))
        .chain((0..6).map(|_| r.below(doc.len() as u64 + 1) as usize))
        .collect();
    for at_end in [true, false] {
        let g = Guarded::new(doc, at_end);
        for &s in &starts {
            explore(g.bytes(), s, 0, doc);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The checks
// ---------------------------------------------------------------------------------------------

#[test]
fn scanner_reports_random_valid_documents_as_serde_json_and_the_model_do() {
    let mut r = Rng(0x5eed_0001_d0c5_0001);
    let (mut dup_docs, mut big_objects, mut bytes) = (0, 0, 0);
    for case in 0..3000 {
        let (doc, model) = gen_doc(&mut r);
        check_valid(&doc, &model, case);
        // The independent reference parser agrees with the generator (so it can stand in
        // for it on mutated documents).
        if let Some(d) = first_difference(&model, &ref_parse(&doc), "$") {
            panic!("case {case}: reference parser: {d}\ndocument: {}", show(&doc));
        }
        if let V::Obj(ms, dup) = &model.v {
            dup_docs += usize::from(*dup);
            big_objects += usize::from(ms.len() > 32);
        }
        bytes += doc.len();
    }
    // The generator covers what it should.
    assert!(dup_docs > 100, "{dup_docs} top-level objects with duplicate keys");
    assert!(
        big_objects > 30,
        "{big_objects} top-level objects of more than 32 members"
    );
    assert!(bytes > 1_000_000, "{bytes} bytes generated");
}

#[test]
fn scanner_agrees_on_mutated_documents_serde_json_accepts_and_survives_the_rest() {
    let mut r = Rng(0x5eed_0002_3c7a_11f1);
    let mut accepted = 0;
    for case in 0..4000 {
        let (mut doc, _) = gen_doc(&mut r);
        mutate(&mut r, &mut doc);
        explore_all(&mut r, &doc);
        // The scanner's precondition is JSON validated by the reader: only documents
        // serde_json accepts are compared.
        if serde_json::from_slice::<Value>(&doc).is_ok() {
            accepted += 1;
            let model = ref_parse(&doc);
            check_valid(&doc, &model, case);
        }
    }
    assert!(accepted > 300, "only {accepted} mutated documents were still valid");
}

#[test]
fn scanner_survives_arbitrary_bytes() {
    let mut r = Rng(0x5eed_0003_9b1d_e5a5);
    for _ in 0..6000 {
        let len = r.below(200) as usize;
        let heavy = r.one_in(2);
        let doc: Vec<u8> = (0..len)
            .map(|_| {
                if heavy {
                    *r.pick(b"{}[]\"\\,: a1-")
                } else {
                    r.below(256) as u8
                }
            })
            .collect();
        explore_all(&mut r, &doc);
        // String bodies of every shape: truncated and invalid \u escapes, lone surrogates.
        let body: Vec<u8> = (0..r.below(24))
            .map(|_| *r.pick(b"\\u\\uDdD8Ee0c9fFx\"\xc3\xa9"))
            .collect();
        let mut out = Vec::new();
        scan::unescape(&body, &mut out);
        let _ = scan::number(&body);
    }
}

// ---------------------------------------------------------------------------------------------
// The workers' validator and the reader's route scan, against simd-json
// ---------------------------------------------------------------------------------------------

/// The validator accepts what simd-json accepts, and the route scan of every accepted line is
/// the tape's route: on generated documents, mutated ones and arbitrary bytes, each read
/// flush against a guard page.
#[test]
fn validator_and_route_scan_agree_with_simd_json() {
    use super::flow_key::{RouteParser, RouteScanner};
    use super::validate::Validator;
    let mut r = Rng(0x5eed_0004_7a11_da7e);
    let (mut v, mut p, mut s) = (Validator::default(), RouteParser::new(), RouteScanner::new());
    let (mut valid, mut invalid) = (0, 0);
    for case in 0..12000 {
        let (mut doc, _) = gen_doc(&mut r);
        match case % 3 {
            0 => {}
            1 => mutate(&mut r, &mut doc),
            _ => {
                let len = r.below(120) as usize;
                doc = (0..len).map(|_| *r.pick(b"{}[]\"\\,: a1-e.0tn\xc3\xa9")).collect();
                doc.insert(0, b'{');
            }
        }
        for at_end in [true, false] {
            let g = Guarded::new(&doc, at_end);
            let want = p.parse(g.bytes());
            let got = v.check_object(g.bytes());
            assert_eq!(
                got.is_some(),
                want.is_ok(),
                "case {case}: validator {got:?}, simd-json {want:?}\ndocument: {}",
                show(&doc)
            );
            if let (Ok(tape), Some(top)) = (want, got) {
                assert_eq!(
                    (top.keys, top.dup_keys),
                    (tape.keys, tape.dup_keys),
                    "case {case}: top level\ndocument: {}",
                    show(&doc)
                );
                let route = s.route(g.bytes());
                // A repeated routing field: the scan takes the first, the tape the last.
                if !tape.dup_keys {
                    assert_eq!(
                        (route.hash, route.flow_id),
                        (tape.hash, tape.flow_id),
                        "case {case}: route\ndocument: {}",
                        show(&doc)
                    );
                }
            }
        }
        if v.is_valid_object(&doc) {
            valid += 1;
        } else {
            invalid += 1;
        }
    }
    assert!(
        valid > 3000 && invalid > 3000,
        "{valid} valid, {invalid} invalid documents"
    );
}
