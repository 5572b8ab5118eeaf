//! Oracle checks of the lazy event tables on the real binary, with serde_json as the oracle.
//!
//! 2,000 random Suricata-like object lines (random nesting up to depth 6, escapes, surrogate
//! pairs, raw UTF-8, numbers in every JSON form, repeated keys spelled differently, objects
//! of more than 32 members, blanks) and 200 mutated lines between them go through a filter
//! that writes every event unchanged to `same`, walks it with `pairs` reading every value
//! again through `msg[k]` into a plain table written to `walk` (with lookups of present and
//! absent keys and nested paths), writes the event again, unchanged, to `after`, and hands it
//! to an analyzer that walks its copy to `walk_a`. Then: `same` and `after` hold every valid
//! line byte for byte in input order (blanks around the object are not part of the event),
//! `walk` and `walk_a` hold what serde_json makes of each line (with the last occurrence of
//! a repeated key, as event tables read it, and lua-cjson did), and the summary and `{log}` count exactly the
//! lines serde_json rejects. Run with one shard (every output ordered) and with two (the walks
//! unordered, compared as multisets).

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::util::*;

/// Lookups the filter makes on every event (each a path of keys from the top), recorded in
/// order in the `walk` record's `probe` array: present and absent keys, near misses, and
/// paths that run into a string or an array.
const PROBES: &[&[&str]] = &[
    &["src_ip"],
    &["dest_port"],
    &["flow_id"],
    &["event_type"],
    &["timestamp"],
    &["proto"],
    &["nope"],
    &[""],
    &["SRC_IP"],
    &["src"],
    &["src_ipx"],
    &["src_ip\0"],
    &["é"],
    &["q\"uote"],
    // The raw (escaped) spelling of a key is not the key.
    &["\\u0061"],
    &["src\\u005fip"],
    &["q\\\"uote"],
    &["k\\u0030"],
    &["dns", "rrname"],
    &["dns", "answers"],
    &["dns", "nope"],
    &["alert", "signature_id"],
    &["alert", "metadata", "k0"],
    &["http", "hostname"],
    &["k0"],
    &["k0", "k1"],
    &["k0", "k1", "k2"],
    &["k1", "a"],
    &["k2", "k0", "k1", "k2"],
    &["src_ip", "x"],
    &["tags", "x"],
];

/// The filter (`analyzer` false): `same`, then the walk and the lookups to `walk`, then
/// `after`, then the event to the analyzer; the analyzer: the walk and the lookups of the
/// event it was handed to `walk_a`.
fn oracle_script(analyzer: bool) -> String {
    let lua_str = |s: &str| -> String { s.bytes().map(|b| format!("\\{b}")).collect() };
    let probes: Vec<String> = PROBES
        .iter()
        .map(|p| {
            let keys: Vec<String> = p.iter().map(|k| format!("\"{}\"", lua_str(k))).collect();
            format!("{{ {} }}", keys.join(", "))
        })
        .collect();
    format!(
        r#"-- Written by tests/oracle: walks every event through the lazy path.
local PROBES = {{ {probes} }}
local errs

-- A plain copy of v: objects (event tables, which have a metatable) walked with pairs,
-- each value read again through v[k]; arrays (plain tables) as {{ ["[]"] = n, ... }}, so
-- that an empty array stays apart from an empty object.
local function walk(v, path)
   if type(v) ~= "table" then return v end
   if getmetatable(v) == nil then
      local t = {{ ["[]"] = #v }}
      for i = 1, #v do t[i] = walk(v[i], path .. "[" .. i .. "]") end
      return t
   end
   local t = {{}}
   for k, x in pairs(v) do
      local y = v[k]
      if t[k] ~= nil then errs[#errs + 1] = "pairs gave " .. path .. "." .. k .. " twice" end
      if x ~= y then errs[#errs + 1] = "pairs and v[k] differ at " .. path .. "." .. k end
      t[k] = walk(y, path .. "." .. k)
   end
   return t
end

local function probe(msg, path)
   local v = msg
   for i = 1, #path do
      if type(v) ~= "table" then return "<scalar>" end
      if getmetatable(v) == nil then return "<array>" end
      v = v[path[i]]
      if v == nil then return "<absent>" end
   end
   return walk(v, "probe")
end

local function absent_or(v)
   if v == nil then return "<absent>" end
   return walk(v, "dyn")
end

local function record(msg)
   errs = {{}}
   local rec = {{ ev = walk(msg, "$"), probe = {{}}, dyn = {{}} }}
   for i, p in ipairs(PROBES) do rec.probe[i] = probe(msg, p) end
   for k in pairs(msg) do
      rec.dyn[k] = {{ absent_or(msg[k .. "~"]), absent_or(msg[string.sub(k, 1, -2)]) }}
   end
   if #errs > 0 then rec.err = errs end
   return rec
end

function setup() end

{main}
"#,
        probes = probes.join(", "),
        main = if analyzer { ANALYZER_LOOP } else { FILTER_LOOP }
    )
}

const FILTER_LOOP: &str = r#"function loop(msg)
   dragonfly.output_event("same", msg)
   dragonfly.output_event("walk", record(msg))
   dragonfly.output_event("after", msg)
   dragonfly.analyze_event(default_analyzer, msg)
end"#;

const ANALYZER_LOOP: &str = r#"function loop(msg)
   dragonfly.output_event("walk_a", record(msg))
end"#;

fn config(walk_ordered: bool) -> String {
    // Numbers the walk re-encodes must read back exactly (14 digits is the default).
    format!(
        "number_precision = 17\n\
         inputs = {{ {{ tag = \"eve\", uri = \"file://in.json\", script = \"oracle.lua\", default_analyzer = \"a\" }} }}\n\
         analyzers = {{ {{ tag = \"a\", script = \"a.lua\", default_analyzer = \"\", default_output = \"same\" }} }}\n\
         outputs = {{ {{ tag = \"same\", uri = \"file://same.json<\" }},\n\
           {{ tag = \"after\", uri = \"file://after.json<\" }},\n\
           {{ tag = \"walk\", uri = \"file://walk.json<\", ordered = {walk_ordered} }},\n\
           {{ tag = \"walk_a\", uri = \"file://walk_a.json<\", ordered = {walk_ordered} }} }}\n"
    )
}

// ---------------------------------------------------------------------------------------------
// Generator
// ---------------------------------------------------------------------------------------------

fn pick<T: Copy>(r: &mut Rng, xs: &[T]) -> T {
    xs[r.below(xs.len() as u64) as usize]
}

/// Optional blanks (no line feed: a line is one event; a CR inside a line is whitespace).
fn ws(r: &mut Rng, out: &mut String) {
    if r.below(5) == 0 {
        for _ in 0..1 + r.below(2) {
            out.push(pick(r, &[' ', '\t', ' ', '\r']));
        }
    }
}

fn hex4(r: &mut Rng, cp: u32, out: &mut String) {
    if r.below(2) == 0 {
        out.push_str(&format!("\\u{cp:04x}"));
    } else {
        out.push_str(&format!("\\u{cp:04X}"));
    }
}

/// A JSON string with escapes of every kind, raw UTF-8 and plain runs.
fn gen_string(r: &mut Rng, out: &mut String) {
    out.push('"');
    let pieces = match r.below(5) {
        0 => 0,
        1 => 10 + r.below(30),
        _ => r.below(6),
    };
    for _ in 0..pieces {
        match r.below(14) {
            0 => {
                for _ in 0..r.below(30) {
                    out.push((b'a' + r.below(26) as u8) as char);
                }
            }
            1 | 2 => out.push_str(pick(r, &["é", "€", "😀", "ß", "中", "\u{7f}", "\u{fffd}", "\u{2028}"])),
            3 | 4 => out.push_str(pick(r, &["\\\"", "\\\\", "\\/", "\\b", "\\f", "\\n", "\\r", "\\t"])),
            5 => {
                for _ in 0..1 + r.below(4) {
                    out.push_str("\\\\");
                }
            }
            6 => {
                let cp = r.below(0x20) as u32;
                hex4(r, cp, out);
            }
            7 => {
                let cp = loop {
                    let c = r.below(0x1_0000) as u32;
                    if !(0xD800..0xE000).contains(&c) {
                        break c;
                    }
                };
                hex4(r, cp, out);
            }
            8 => {
                let v = r.below(0x10_0000) as u32;
                hex4(r, 0xD800 + (v >> 10), out);
                hex4(r, 0xDC00 + (v & 0x3FF), out);
            }
            9 => out.push(pick(r, &['{', '}', '[', ']', ',', ':'])),
            _ => out.push(pick(r, &['a', 'b', 'x', 'Z', '0', '9', ' ', '-', '_', '.', '\'', '#'])),
        }
    }
    out.push('"');
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
    "1.7976931348623157e308",
    "2.2250738585072014e-308",
    "4.9e-324",
    "1e-400",
    "9007199254740991",
    "9007199254740993",
    "18446744073709551615",
    "-9223372036854775808",
    "123456789012345678901234567890.5",
    "1.00000000000000000000000000000000001",
];

fn gen_number(r: &mut Rng) -> String {
    if r.below(3) == 0 {
        return pick(r, NUMBERS).to_string();
    }
    loop {
        let mut s = String::new();
        if r.below(3) == 0 {
            s.push('-');
        }
        if r.below(4) == 0 {
            s.push('0');
        } else {
            s.push((b'1' + r.below(9) as u8) as char);
            for _ in 0..r.below(21) {
                s.push((b'0' + r.below(10) as u8) as char);
            }
        }
        if r.below(3) == 0 {
            s.push('.');
            for _ in 0..1 + r.below(18) {
                s.push((b'0' + r.below(10) as u8) as char);
            }
        }
        if r.below(3) == 0 {
            s.push(pick(r, &['e', 'E']));
            s.push_str(pick(r, &["", "+", "-"]));
            for _ in 0..1 + r.below(3) {
                s.push((b'0' + r.below(10) as u8) as char);
            }
        }
        // serde_json rejects doubles out of range (1e999), as the engine does.
        if serde_json::from_str::<f64>(&s).is_ok() {
            return s;
        }
    }
}

const KEYS: &[&str] = &[
    "k0", "k1", "k2", "a", "b", "é", "", "q\"uote", "x y", "tags", "dns", "src_ip", "1", "[]",
];

fn gen_key(r: &mut Rng, out: &mut String) {
    if r.below(3) == 0 {
        gen_string(r, out);
    } else {
        let k = pick(r, KEYS);
        write_key(r, k, out);
    }
}

/// Writes `key` as a JSON string, some characters escaped as \uXXXX.
fn write_key(r: &mut Rng, key: &str, out: &mut String) {
    out.push('"');
    for c in key.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || r.below(4) == 0 => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    hex4(r, *u as u32, out);
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Writes the key `raw` (a JSON string) again, spelled anew (other characters escaped).
fn respell_key(r: &mut Rng, raw: &str, out: &mut String) {
    let key: String = serde_json::from_str(raw).expect("a generated key");
    write_key(r, &key, out);
}

fn gen_value(r: &mut Rng, depth: u32, out: &mut String) {
    match if depth >= 6 { 3 + r.below(4) } else { r.below(8) } {
        0 | 1 => {
            let n = r.below(6);
            gen_object(r, depth, out, n)
        }
        2 => {
            out.push('[');
            ws(r, out);
            for i in 0..if r.below(5) == 0 { 0 } else { r.below(5) } {
                if i > 0 {
                    out.push(',');
                    ws(r, out);
                }
                gen_value(r, depth + 1, out);
                ws(r, out);
            }
            out.push(']');
        }
        3 | 4 => gen_string(r, out),
        5 => out.push_str(&gen_number(r)),
        _ => out.push_str(pick(r, &["true", "false", "null"])),
    }
}

/// An object of `n` random members, sometimes with a key written twice.
fn gen_object(r: &mut Rng, depth: u32, out: &mut String, n: u64) {
    // Each member, and the length of its key.
    let mut members: Vec<(String, usize)> = Vec::new();
    for _ in 0..n {
        let mut m = String::new();
        gen_key(r, &mut m);
        let key_len = m.len();
        ws(r, &mut m);
        m.push(':');
        ws(r, &mut m);
        gen_value(r, depth + 1, &mut m);
        members.push((m, key_len));
    }
    if !members.is_empty() && r.below(8) == 0 {
        let (m, key_len) = &members[r.below(members.len() as u64) as usize];
        let mut again = String::new();
        respell_key(r, &m[..*key_len], &mut again);
        let key_len = again.len();
        again.push(':');
        gen_value(r, depth + 1, &mut again);
        members.push((again, key_len));
    }
    write_object(r, members.into_iter().map(|(m, _)| m).collect(), out);
}

fn write_object(r: &mut Rng, members: Vec<String>, out: &mut String) {
    out.push('{');
    ws(r, out);
    for (i, m) in members.iter().enumerate() {
        if i > 0 {
            out.push(',');
            ws(r, out);
        }
        out.push_str(m);
        ws(r, out);
    }
    out.push('}');
}

/// One Suricata-like event line: routing keys (sometimes missing or repeated), an
/// application-layer object, random members, sometimes shuffled, sometimes with blanks
/// around the object.
fn gen_line(r: &mut Rng, i: usize) -> String {
    let mut m: Vec<String> = Vec::new();
    let ip = |r: &mut Rng| -> String {
        if r.below(5) == 0 {
            format!("fe80::{:x}:{:x}", r.below(65536), r.below(65536))
        } else {
            format!("10.{}.{}.{}", r.below(4), r.below(256), r.below(256))
        }
    };
    m.push(format!(
        "\"timestamp\":\"2024-01-01T00:{:02}:{:02}.{:06}+0000\"",
        (i / 60) % 60,
        i % 60,
        i
    ));
    if r.below(20) != 0 {
        let id = if r.below(30) == 0 {
            u64::MAX
        } else {
            r.next() & ((1 << 53) - 1)
        };
        m.push(format!("\"flow_id\":{id}"));
    }
    m.push(format!(
        "\"event_type\":\"{}\"",
        pick(r, &["dns", "alert", "http", "flow", "tls"])
    ));
    if r.below(10) != 0 {
        m.push(format!("\"src_ip\":\"{}\"", ip(r)));
        m.push(format!("\"src_port\":{}", r.below(65536)));
        m.push(format!("\"dest_ip\":\"{}\"", ip(r)));
        m.push(format!("\"dest_port\":{}", pick(r, &[53, 80, 443, 22])));
        m.push(format!("\"proto\":\"{}\"", pick(r, &["TCP", "UDP", "ICMP"])));
    }
    let mut app = String::new();
    match r.below(4) {
        0 => {
            app.push_str("\"dns\":");
            let mut answers = String::from("[");
            for j in 0..r.below(3) {
                if j > 0 {
                    answers.push(',');
                }
                answers.push_str(&format!("{{\"rdata\":\"10.0.0.{j}\",\"ttl\":{}}}", r.below(1000)));
            }
            answers.push(']');
            let mut rrname = String::new();
            gen_string(r, &mut rrname);
            write_object(
                r,
                vec![
                    format!("\"rrname\":{rrname}"),
                    "\"rrtype\":\"A\"".into(),
                    format!("\"answers\":{answers}"),
                ],
                &mut app,
            );
        }
        1 => {
            app.push_str("\"alert\":");
            let mut meta = String::new();
            let n = 1 + r.below(3);
            gen_object(r, 2, &mut meta, n);
            let sid = 2_000_000 + r.below(10_000);
            write_object(
                r,
                vec![
                    format!("\"signature_id\":{sid}"),
                    "\"signature\":\"ET TEST \\/path \\\"q\\\" \\u00e9\"".into(),
                    format!("\"metadata\":{meta}"),
                ],
                &mut app,
            );
        }
        2 => {
            app.push_str("\"http\":");
            let mut url = String::new();
            gen_string(r, &mut url);
            write_object(
                r,
                vec![
                    "\"hostname\":\"www.example.org\"".into(),
                    format!("\"url\":{url}"),
                    "\"status\":200".into(),
                ],
                &mut app,
            );
        }
        _ => app.push_str("\"tags\":[]"),
    }
    m.push(app);
    // Where each member's key ends (the fixed keys have no colon).
    let mut key_ends: Vec<usize> = m.iter().map(|s| s.find(':').expect("a member")).collect();
    // Sometimes more than 32 members (the duplicate check sorts the keys then), at the top
    // or in a nested object.
    let extras = if r.below(30) == 0 { 30 + r.below(10) } else { r.below(5) };
    if r.below(15) == 0 {
        let mut big = String::from("\"big\":");
        let n = 33 + r.below(8);
        gen_object(r, 1, &mut big, n);
        key_ends.push(5);
        m.push(big);
    }
    for _ in 0..extras {
        let mut extra = String::new();
        gen_key(r, &mut extra);
        key_ends.push(extra.len());
        extra.push(':');
        gen_value(r, 1, &mut extra);
        m.push(extra);
    }
    // A routing key (or any other) written twice, with another value.
    if r.below(10) == 0 {
        let j = r.below(m.len() as u64) as usize;
        let mut again = String::new();
        respell_key(r, &m[j][..key_ends[j]], &mut again);
        again.push(':');
        gen_value(r, 1, &mut again);
        m.push(again);
    }
    if r.below(4) == 0 {
        for j in (1..m.len()).rev() {
            m.swap(j, r.below(j as u64 + 1) as usize);
        }
    }
    let mut line = String::new();
    if r.below(40) == 0 {
        line.push_str(pick(r, &[" ", "\t", "  "]));
    }
    write_object(r, m, &mut line);
    if r.below(40) == 0 {
        line.push_str(pick(r, &[" ", "\t", " \t"]));
    }
    line
}

/// Bytes flipped, inserted, deleted, cut, copied or swapped (never a line break).
fn mutate(r: &mut Rng, line: &str) -> Vec<u8> {
    let mut doc = line.as_bytes().to_vec();
    for _ in 0..1 + r.below(3) {
        let n = doc.len();
        let at = r.below(n as u64 + 1) as usize;
        let byte = |r: &mut Rng| -> u8 {
            let b = match r.below(3) {
                0 => pick(r, b"{}[]\",:\\ 0-eE.tfnu"),
                1 => b' ' + r.below(95) as u8,
                _ => r.below(256) as u8,
            };
            if b == b'\n' || b == b'\r' { b'x' } else { b }
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
            _ if n >= 2 => doc.swap(at.min(n - 1), r.below(n as u64) as usize),
            _ => {}
        }
    }
    // A blank line is skipped, not reported: keep something on it.
    if doc.iter().all(|c| matches!(c, b' ' | b'\t')) {
        doc.push(b'x');
    }
    doc
}

// ---------------------------------------------------------------------------------------------
// Oracle
// ---------------------------------------------------------------------------------------------

/// What the engine should make of a line: an event (valid JSON object) or an invalid line.
fn accepted(line: &[u8]) -> bool {
    matches!(serde_json::from_slice::<Value>(line), Ok(Value::Object(_)))
}

fn num(x: f64) -> Value {
    // -0 reads back as 0 from the engine's output (an integer): compare values.
    Value::Number(serde_json::Number::from_f64(x + 0.0).expect("finite"))
}

/// `v` with every number as a double.
fn normalize(v: Value) -> Value {
    match v {
        Value::Number(n) => num(n.as_f64().expect("a double")),
        Value::Array(a) => Value::Array(a.into_iter().map(normalize).collect()),
        Value::Object(m) => Value::Object(m.into_iter().map(|(k, v)| (k, normalize(v))).collect()),
        other => other,
    }
}

/// A parser of JSON serde_json accepted, which keeps the first (`first`) or the last
/// occurrence of a repeated key; strings and numbers are decoded by serde_json.
struct Model<'a> {
    b: &'a [u8],
    i: usize,
    first: bool,
}

impl Model<'_> {
    fn parse(b: &[u8], first: bool) -> Value {
        let mut m = Model { b, i: 0, first };
        m.ws();
        m.value()
    }

    fn ws(&mut self) {
        while matches!(self.b.get(self.i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn string(&mut self) -> String {
        let start = self.i;
        self.i += 1;
        while self.b[self.i] != b'"' {
            self.i += if self.b[self.i] == b'\\' { 2 } else { 1 };
        }
        self.i += 1;
        serde_json::from_slice(&self.b[start..self.i]).expect("a string serde_json accepted")
    }

    fn value(&mut self) -> Value {
        let start = self.i;
        match self.b[self.i] {
            b'{' => {
                self.i += 1;
                let mut map = Map::new();
                loop {
                    self.ws();
                    if self.b[self.i] == b'}' {
                        self.i += 1;
                        break;
                    }
                    if self.b[self.i] == b',' {
                        self.i += 1;
                        self.ws();
                    }
                    let k = self.string();
                    self.ws();
                    self.i += 1; // ':'
                    self.ws();
                    let v = self.value();
                    if !(self.first && map.contains_key(&k)) {
                        map.insert(k, v);
                    }
                }
                Value::Object(map)
            }
            b'[' => {
                self.i += 1;
                let mut a = Vec::new();
                loop {
                    self.ws();
                    match self.b[self.i] {
                        b']' => {
                            self.i += 1;
                            break;
                        }
                        b',' => self.i += 1,
                        _ => a.push(self.value()),
                    }
                }
                Value::Array(a)
            }
            b'"' => Value::String(self.string()),
            b't' => {
                self.i += 4;
                Value::Bool(true)
            }
            b'f' => {
                self.i += 5;
                Value::Bool(false)
            }
            b'n' => {
                self.i += 4;
                Value::Null
            }
            _ => {
                while matches!(self.b.get(self.i), Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')) {
                    self.i += 1;
                }
                num(serde_json::from_slice::<f64>(&self.b[start..self.i]).expect("a number serde_json accepted"))
            }
        }
    }
}

/// What the filter's `walk` makes of a value: arrays as {"[]": n, "1": .., ..}.
fn walked(v: &Value) -> Value {
    match v {
        Value::Array(a) => {
            let mut m = Map::new();
            m.insert("[]".into(), num(a.len() as f64));
            for (i, e) in a.iter().enumerate() {
                m.insert((i + 1).to_string(), walked(e));
            }
            Value::Object(m)
        }
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), walked(v))).collect()),
        other => other.clone(),
    }
}

/// What the filter's `probe` finds at `path` in `event`.
fn probed(event: &Value, path: &[&[u8]]) -> Value {
    let mut v = event;
    for k in path {
        match v {
            Value::Object(m) => match std::str::from_utf8(k).ok().and_then(|k| m.get(k)) {
                Some(x) => v = x,
                None => return Value::String("<absent>".into()),
            },
            Value::Array(_) => return Value::String("<array>".into()),
            _ => return Value::String("<scalar>".into()),
        }
    }
    walked(v)
}

/// The `walk` record the filter should write for an event whose model (the last occurrence of
/// a repeated key) is `event`.
fn expected_walk(event: &Value) -> Value {
    let probe = PROBES
        .iter()
        .map(|p| probed(event, &p.iter().map(|k| k.as_bytes()).collect::<Vec<_>>()))
        .collect();
    let mut dyn_ = Map::new();
    for k in event.as_object().expect("an object").keys() {
        let b = k.as_bytes();
        let plus = [b, b"~"].concat();
        let minus = &b[..b.len().saturating_sub(1)];
        dyn_.insert(
            k.clone(),
            Value::Array(vec![probed(event, &[&plus]), probed(event, &[minus])]),
        );
    }
    let mut rec = Map::new();
    rec.insert("ev".into(), walked(event));
    rec.insert("probe".into(), Value::Array(probe));
    rec.insert("dyn".into(), Value::Object(dyn_));
    Value::Object(rec)
}

/// The input and what the engine should make of it.
struct Case {
    input: Vec<u8>,
    /// Valid lines, as the outputs should hold them, with their expected `walk` records.
    valid: Vec<(Vec<u8>, Value)>,
    /// 1-based numbers of the invalid lines.
    invalid: Vec<u64>,
    dups: usize,
    mutated_valid: usize,
}

fn gen_case() -> Case {
    let mut r = Rng::new(0x0dac_1e14_0000_0006);
    let mut lines: Vec<Vec<u8>> = (0..2000).map(|i| gen_line(&mut r, i).into_bytes()).collect();
    let mut mutated = vec![false; lines.len()];
    for _ in 0..200 {
        let base = gen_line(&mut r, 0);
        let bad = mutate(&mut r, &base);
        let at = r.below(lines.len() as u64 + 1) as usize;
        lines.insert(at, bad);
        mutated.insert(at, true);
    }
    let mut case = Case {
        input: join_lines(&lines),
        valid: Vec::new(),
        invalid: Vec::new(),
        dups: 0,
        mutated_valid: 0,
    };
    for (i, line) in lines.iter().enumerate() {
        if !accepted(line) {
            assert!(mutated[i], "generated line {} is not valid: {}", i + 1, show(line));
            case.invalid.push(i as u64 + 1);
            continue;
        }
        case.mutated_valid += usize::from(mutated[i]);
        // The model parser reads as serde_json does when the last occurrence wins.
        let serde = normalize(serde_json::from_slice(line).expect("accepted"));
        assert!(
            Model::parse(line, false) == serde,
            "the model parser disagrees with serde_json on line {}: {}",
            i + 1,
            show(line)
        );
        // Lines where the occurrence read matters (a repeated key with different values).
        case.dups += usize::from(Model::parse(line, true) != serde);
        // Blanks around the object are not part of the event: the engine writes the object.
        let trimmed = line.trim_ascii().to_vec();
        case.valid.push((trimmed, expected_walk(&serde)));
    }
    case
}

/// Runs the engine on the case; returns the environment (for its outputs) and checks the
/// exit, the summary, the invalid-line reports and `same`/`after`.
fn run_case(case: &Case, shards: &str, walk_ordered: bool) -> Env {
    let env = Env::new();
    env.config(&config(walk_ordered));
    env.filter("oracle.lua", &oracle_script(false));
    env.analyzer("a.lua", &oracle_script(true));
    env.write_log("in.json", &case.input);
    let out = env.run(&["--shards", shards]);
    out.assert_success();
    let n = case.valid.len() as u64;
    let s = out.summary();
    assert_eq!(
        (s.read, s.written, s.invalid, s.script_errors),
        (n, 4 * n, case.invalid.len() as u64, 0),
        "--shards {shards}: summary (read, written, invalid, script errors)\nstdout: {}\nstderr: {}",
        out.stdout,
        show(out.stderr.as_bytes())
    );
    let mut reported: Vec<u64> = env
        .log_records_of("invalid_line")
        .iter()
        .map(|r| r["line"].as_u64().unwrap_or(0))
        .collect();
    reported.sort_unstable();
    // The first 50 are reported in full, the others counted in one `suppressed` record.
    let shown = case.invalid.len().min(50);
    assert_eq!(
        reported,
        case.invalid[..shown],
        "--shards {shards}: line numbers reported invalid"
    );
    let suppressed: u64 = env.suppressed_count("invalid_line");
    assert_eq!(suppressed, (case.invalid.len() - shown) as u64, "--shards {shards}");
    let expected: Vec<&[u8]> = case.valid.iter().map(|(l, _)| l.as_slice()).collect();
    for name in ["same.json", "after.json"] {
        let d = diff_lines(&expected, &env.lines(name));
        assert!(
            d.is_empty(),
            "--shards {shards}: {name} is not the valid input lines:\n{d}"
        );
    }
    env
}

/// The path to the first difference between two values, with both sides there.
fn first_difference(want: &Value, got: &Value, path: &str) -> Option<String> {
    match (want, got) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let p = format!("{path}.{k:?}");
                match b.get(k) {
                    Some(w) => {
                        if let Some(d) = first_difference(v, w, &p) {
                            return Some(d);
                        }
                    }
                    None => return Some(format!("{p}: missing (expected {v})")),
                }
            }
            b.keys()
                .find(|k| !a.contains_key(*k))
                .map(|k| format!("{path}.{k:?}: unexpected ({})", b[k]))
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (v, w))| first_difference(v, w, &format!("{path}[{i}]"))),
        _ => (want != got).then(|| format!("{path}: expected {want}, got {got}")),
    }
}

fn parse_walk(env: &Env, name: &str) -> Vec<Value> {
    env.lines(name)
        .iter()
        .map(|l| normalize(serde_json::from_slice(l).unwrap_or_else(|e| panic!("{name}: {e}: {}", show(l)))))
        .collect()
}

#[test]
fn lazy_event_tables_read_what_serde_json_reads() {
    let case = gen_case();
    // The case covers what it should.
    assert!(case.invalid.len() > 100, "{} invalid lines", case.invalid.len());
    assert!(
        case.mutated_valid > 15,
        "{} mutated lines still valid",
        case.mutated_valid
    );
    assert!(case.dups > 100, "{} lines with a repeated key", case.dups);

    let env = run_case(&case, "1", true);
    for name in ["walk.json", "walk_a.json"] {
        let got = parse_walk(&env, name);
        assert_eq!(got.len(), case.valid.len(), "{name} lines");
        for ((line, want), got) in case.valid.iter().zip(&got) {
            if let Some(d) = first_difference(want, got, "$") {
                panic!(
                    "{name}: the walk of the event differs from serde_json's reading at {d}\n\
                     input: {}\nexpected: {want}\ngot:      {got}",
                    String::from_utf8_lossy(line)
                );
            }
        }
    }
}

#[test]
fn lazy_event_tables_on_two_shards() {
    let case = gen_case();
    let env = run_case(&case, "2", false);
    // The walks are unordered here: the same records, as a multiset (serde_json writes
    // object keys sorted, so equal records are equal text).
    for name in ["walk.json", "walk_a.json"] {
        let mut want: HashMap<String, usize> = HashMap::new();
        for (_, w) in &case.valid {
            *want.entry(w.to_string()).or_default() += 1;
        }
        let mut extra = Vec::new();
        for g in parse_walk(&env, name) {
            let s = g.to_string();
            match want.get_mut(&s) {
                Some(c) if *c > 0 => *c -= 1,
                _ => extra.push(s),
            }
        }
        let missing: Vec<&String> = want.iter().filter(|(_, c)| **c > 0).map(|(s, _)| s).collect();
        assert!(
            extra.is_empty() && missing.is_empty(),
            "{name} differs as a multiset: {} unexpected (first: {:?}), {} missing (first: {:?})",
            extra.len(),
            extra.first(),
            missing.len(),
            missing.first()
        );
    }
}
