//! `cjson_safe.decode` against lua-cjson 2.1.0 itself: Debian's `lua-cjson` module run by
//! `luajit` is the oracle. Hand-picked edge cases (lua-cjson's "invalid numbers", strings
//! with raw bytes and escapes, nesting limits, every syntax error message) and random texts
//! (valid JSON in lua-cjson's extended forms, then mutated) are decoded by both; each result
//! is printed by the same Lua function (keys sorted, numbers with `%.17g`, strings as bytes,
//! `null` as the sentinel) and must be the same, error messages included.
//! `.ci/test` installs `luajit` and `lua-cjson`; the test fails, by design, without them.

use std::fmt::Write as _;
use std::process::Command;

use crate::util::*;

/// Prints a decoded value; shared by both sides. `null` is `cjson_safe.null`.
const DUMP: &str = r#"
local function num(n)
  if n ~= n then return "nan" end
  if n == math.huge then return "inf" end
  if n == -math.huge then return "-inf" end
  if n == 0 and 1 / n < 0 then return "-0" end
  return string.format("%.17g", n)
end
local function str(s)
  return (s:gsub("[^%w]", function(c) return string.format("\\%02x", c:byte()) end))
end
function dump(v, depth)
  depth = depth or 0
  local t = type(v)
  if t == "nil" then return "nil" end
  if t == "boolean" then return tostring(v) end
  if t == "number" then return num(v) end
  if t == "string" then return '"' .. str(v) .. '"' end
  if v == cjson_safe.null then return "null" end
  if t == "table" then
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = k end
    local names = {}
    for _, k in ipairs(keys) do names[k] = dump(k, depth + 1) end
    table.sort(keys, function(a, b) return names[a] < names[b] end)
    local parts = {}
    for _, k in ipairs(keys) do parts[#parts + 1] = names[k] .. "=" .. dump(v[k], depth + 1) end
    return "{" .. table.concat(parts, ",") .. "}"
  end
  return t
end
function unhex(h)
  return (h:gsub("%x%x", function(x) return string.char(tonumber(x, 16)) end))
end
function result(text)
  local v, err = cjson_safe.decode(text)
  if v == nil then return "error: " .. tostring(err) end
  return dump(v)
end
"#;

/// Texts at lua-cjson's edges.
const CASES: &[&[u8]] = &[
    b"0x1F",
    b"-0x10",
    b"0X1.8p1",
    b"0x",
    b"[0x]",
    b"+5",
    b"007",
    b"-007.50",
    b"1.",
    b"-.5",
    b"1e400",
    b"-1e400",
    b"1e-400",
    b"1e",
    b"[1e+]",
    b"inf",
    b"-Infinity",
    b"[INF, nan, NaN, -nan]",
    b"nan(123)",
    b"{\"a\": Infinity}",
    b"infinit",
    b"[+inf]",
    b"-",
    b"[-]",
    b"- 1",
    b".5",
    b"[.5]",
    b"18446744073709551617",
    b"-9007199254740993",
    b"123456789012345678901234567890",
    b"0.1",
    b"-0",
    b"-0.0",
    b"1E5",
    b"\"\x01\x1f raw\tcontrol\"",
    b"\"\xff\xfe not utf-8 \xc3\"",
    b"{\"\xe9\":\"\xe9\"}",
    b"\"\\u00e9\\u20ac\\ud83d\\ude00\"",
    b"\"\\u0000 nul\"",
    b"\"\\ud83d\"",
    b"\"\\ud83d\\u0041\"",
    b"\"\\ude00\"",
    b"\"\\u12\"",
    b"\"\\uZZZZ\"",
    b"\"\\x41\"",
    b"\"\\/\\b\\f\\n\\r\\t\\\"\\\\\"",
    b"\"unterminated",
    b"\"ends in escape\\",
    b"",
    b"   ",
    b"\x0c1",
    b"1\x0c",
    b"[1,]",
    b"[,1]",
    b"{\"a\" 1}",
    b"{\"a\":1,}",
    b"{1:2}",
    b"{\"a\":}",
    b"{\"a\":1 \"b\":2}",
    b"[1 2]",
    b"[",
    b"{",
    b"]",
    b"}",
    b"1 2",
    b"true false",
    b"truex",
    b"True",
    b"nul",
    b"NULL",
    b"fals",
    b"{\"a\":1,\"a\":2}",
    b"[[[[[]]]]]",
    b"[[1,[2,[3,{\"x\":[null,true,false]}]]]]",
    b"{\"\":\"\"}",
    b"[null]",
    b"[1,null,3]",
    b"x",
    b"'single'",
    b"/* c */ 1",
    b"\x00",
    b"{\"flow_id\":1234567890123456,\"src_port\":-1,\"x\":1.5e-3}",
];

/// Random values in lua-cjson's forms, as text; `depth` bounds the nesting.
fn gen_value(rng: &mut Rng, depth: u32, out: &mut Vec<u8>) {
    let pick = if depth >= 4 { rng.below(6) } else { rng.below(9) };
    match pick {
        0 => out.extend_from_slice([&b"true"[..], b"false", b"null"][rng.below(3) as usize]),
        1 | 2 => gen_number(rng, out),
        3..=5 => gen_string(rng, out),
        6 | 7 => {
            out.push(b'[');
            for i in 0..rng.below(5) {
                if i > 0 {
                    out.push(b',');
                }
                gen_space(rng, out);
                gen_value(rng, depth + 1, out);
                gen_space(rng, out);
            }
            out.push(b']');
        }
        _ => {
            out.push(b'{');
            for i in 0..rng.below(5) {
                if i > 0 {
                    out.push(b',');
                }
                gen_space(rng, out);
                gen_string(rng, out);
                gen_space(rng, out);
                out.push(b':');
                gen_space(rng, out);
                gen_value(rng, depth + 1, out);
            }
            out.push(b'}');
        }
    }
}

fn gen_space(rng: &mut Rng, out: &mut Vec<u8>) {
    for _ in 0..rng.below(3).saturating_sub(1) {
        out.push(b" \t\r\n"[rng.below(4) as usize]);
    }
}

fn gen_number(rng: &mut Rng, out: &mut Vec<u8>) {
    let sign = ["", "-", "+"][rng.below(3) as usize];
    let body = match rng.below(10) {
        0 => format!("0x{:x}", rng.below(1 << 40)),
        1 => ["inf", "Infinity", "nan", "NaN", "INF"][rng.below(5) as usize].to_string(),
        2 => format!("{:03}", rng.below(1000)),
        3 => format!("{}e{}", rng.below(1000), rng.below(700) as i64 - 350),
        4 => format!("{}.{}", rng.below(100_000), rng.below(100_000)),
        5 => format!("{}", rng.next()),
        6 => format!("{}.{:06}E-{}", rng.below(10), rng.below(1_000_000), rng.below(20)),
        _ => format!("{}", rng.below(100_000)),
    };
    out.extend_from_slice(sign.as_bytes());
    out.extend_from_slice(body.as_bytes());
}

fn gen_string(rng: &mut Rng, out: &mut Vec<u8>) {
    out.push(b'"');
    for _ in 0..rng.below(8) {
        match rng.below(12) {
            0 => out.extend_from_slice(["\\n", "\\\"", "\\\\", "\\/", "\\t", "\\b"][rng.below(6) as usize].as_bytes()),
            1 => {
                let _ = write!(
                    Bytes(out),
                    "\\u{:04x}",
                    [0x41, 0xe9, 0x20ac, 0xd83d, 0xde00, 0x0000][rng.below(6) as usize]
                );
            }
            2 => out.extend_from_slice("\\ud83d\\ude00".as_bytes()),
            3 => out.push(rng.below(0x20) as u8 | 1),
            4 => out.push(0x80 + rng.below(0x80) as u8),
            5 => out.extend_from_slice("é€".as_bytes()),
            _ => out.push(b'a' + rng.below(26) as u8),
        }
    }
    out.push(b'"');
}

/// `write!` into a byte vector.
struct Bytes<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Bytes<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// A copy of `text` with a few bytes deleted, replaced or inserted.
fn mutate(rng: &mut Rng, text: &[u8]) -> Vec<u8> {
    let mut t = text.to_vec();
    for _ in 0..1 + rng.below(2) {
        let at = rng.below(t.len() as u64 + 1) as usize;
        let b = b"{}[]:,\"\\ 0-+.exnt"[rng.below(17) as usize];
        match rng.below(3) {
            0 if at < t.len() => {
                t.remove(at);
            }
            1 if at < t.len() => t[at] = b,
            _ => t.insert(at, b),
        }
    }
    t
}

fn hex(b: &[u8]) -> String {
    b.iter().fold(String::new(), |mut s, c| {
        let _ = write!(s, "{c:02x}");
        s
    })
}

/// Runs `script` (Lua source) with `luajit`, where `cjson_safe` is Debian's lua-cjson, with
/// `args`; its output lines.
fn luajit(dir: &std::path::Path, script: &str, args: &[&std::path::Path]) -> Vec<String> {
    let path = dir.join("oracle.lua");
    std::fs::write(&path, format!("cjson_safe = require('cjson.safe')\n{script}")).unwrap();
    let out = Command::new("luajit")
        .arg(&path)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("luajit (with lua-cjson) is needed as the oracle; .ci/test installs it: {e}"));
    assert!(
        out.status.success(),
        "the oracle failed (is lua-cjson installed? .ci/test installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// The oracle's results, one line per case.
fn oracle(dir: &std::path::Path, cases: &[Vec<u8>]) -> Vec<String> {
    let list = dir.join("cases.hex");
    std::fs::write(&list, cases.iter().map(|c| hex(c) + "\n").collect::<String>()).unwrap();
    luajit(
        dir,
        &format!("{DUMP}\nfor line in io.lines(arg[1]) do io.write(result(unhex(line)), '\\n') end\n"),
        &[&list],
    )
}

/// Runs the engine with `analyzer` (which writes `{ i = msg.i, r = ... }` per event) on
/// `lines`; each event's `r`, in the order of `i`.
fn engine_results(env: &Env, analyzer: &str, lines: &[String]) -> Vec<String> {
    env.config(&simple_config("file://in.json", "", ""));
    env.filter("filter.lua", FILTER_TO_DEFAULT);
    env.analyzer("a.lua", analyzer);
    env.write_log("in.json", &join_lines(lines));
    env.run(&[]).assert_success();
    let mut got: Vec<(u64, String)> = json_lines(&env.log("out.json"))
        .into_iter()
        .map(|v| (v["i"].as_u64().unwrap(), v["r"].as_str().unwrap().to_string()))
        .collect();
    got.sort();
    assert_eq!(got.len(), lines.len());
    got.into_iter().map(|(_, r)| r).collect()
}

#[test]
fn decode_matches_lua_cjson() {
    let mut cases: Vec<Vec<u8>> = CASES.iter().map(|c| c.to_vec()).collect();
    // Nesting at lua-cjson's limit (1,000) and beyond.
    for depth in [999, 1000, 1001, 1030] {
        let mut t = "[".repeat(depth).into_bytes();
        t.extend_from_slice("]".repeat(depth).as_bytes());
        cases.push(t);
    }
    let mut t = "{\"a\":".repeat(1001).into_bytes();
    t.extend_from_slice(b"1");
    t.extend_from_slice("}".repeat(1001).as_bytes());
    cases.push(t);
    let mut rng = Rng::new(0x5eed_c1a0);
    for _ in 0..600 {
        let mut v = Vec::new();
        gen_value(&mut rng, 0, &mut v);
        if rng.below(2) == 0 {
            v = mutate(&mut rng, &v);
        }
        cases.push(v);
    }

    let env = Env::new();
    let expected = oracle(env.dir.path(), &cases);
    assert_eq!(expected.len(), cases.len());
    let lines: Vec<String> = cases
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{{\"i\":{i},\"c\":\"{}\"}}", hex(c)))
        .collect();
    let got = engine_results(
        &env,
        &format!(
            "{DUMP}\nfunction setup() end\nfunction loop(msg)\n  dragonfly.output_event(default_output, {{ i = msg.i, r = result(unhex(msg.c)) }})\nend\n"
        ),
        &lines,
    );
    let mut wrong = Vec::new();
    for (i, (r, want)) in got.iter().zip(&expected).enumerate() {
        if r != want {
            wrong.push(format!(
                "case {i} {:?}:\n  lua-cjson: {}\n  engine:    {}",
                String::from_utf8_lossy(&cases[i][..cases[i].len().min(60)])
                    .chars()
                    .take(120)
                    .collect::<String>(),
                &want[..want.len().min(200)],
                &r[..r.len().min(200)]
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} cases differ:\n{}",
        wrong.len(),
        cases.len(),
        wrong.iter().take(40).cloned().collect::<Vec<_>>().join("\n")
    );
}

/// Random Lua values (a generator of its own, the same in both runtimes), encoded by
/// `cjson_safe.encode`; prints one result per case.
const ENCODE_GEN: &str = r#"
local seed
local function rnd(n)
  seed = (seed * 1103515245 + 12345) % 2147483648
  return seed % n
end
local specials = { 0.1, 1e-5, 1e21, 123456.789, -0.0, 1e300, 5e-324, 1 / 3, 2 / 3, 99999999999999 }
local invalid = { 0 / 0, 1 / 0, -1 / 0 }
-- One kind of fault per value at most (0: none, 1: NaN or infinity, 2: a sparse array, 3: a
-- function, 4: a boolean key): with two, which one is met first depends on key order, which
-- differs between the two LuaJIT builds.
local fault
local function gen(depth)
  local k = rnd(depth >= 3 and 7 or 11)
  if k == 0 then return rnd(2) == 0 end
  if k == 1 then return cjson_safe.null end
  if k == 2 then return rnd(2000000) - 1000000 end
  if k == 3 then return (rnd(2000000) - 1000000) / (1 + rnd(1000)) end
  if k == 4 then
    if fault == 1 and rnd(3) == 0 then return invalid[1 + rnd(#invalid)] end
    return specials[1 + rnd(#specials)]
  end
  if k == 5 or k == 6 then
    local t = {}
    for i = 1, rnd(12) do t[i] = string.char(rnd(256)) end
    return table.concat(t)
  end
  if k == 7 or k == 8 then
    local t, n = {}, rnd(8)
    for i = 1, n do if rnd(5) > 0 then t[i] = gen(depth + 1) end end
    if fault == 2 and rnd(3) == 0 then t[n + 1 + rnd(20)] = 1 end
    return t
  end
  local t = {}
  for _ = 1, rnd(6) do
    local key = rnd(4) == 0 and (100 + rnd(100)) or ("k" .. rnd(50))
    t[key] = gen(depth + 1)
  end
  if fault == 3 and rnd(3) == 0 then t.f = print end
  if fault == 4 and rnd(3) == 0 then t[rnd(2) == 0] = 1 end
  return t
end
function encode_case(i)
  seed = i * 7919 + 1
  fault = rnd(5)
  local s, err = cjson_safe.encode(gen(0))
  if s == nil then return "error: " .. tostring(err) end
  -- Raw bytes >= 0x80 (both write them as they are) as escapes, so the result reads as JSON.
  return (s:gsub("[\128-\255]", function(c) return string.format("\\u%04x", c:byte()) end))
end
"#;

/// `cjson_safe.encode` against lua-cjson on 500 random values: the same JSON value (this
/// engine writes `/` unescaped and `-0` as `0`, documented, so values are compared, not
/// bytes), the same arrays and objects, the same errors (sparse arrays, NaN and infinities,
/// functions).
#[test]
fn encode_matches_lua_cjson() {
    let n = 500;
    let env = Env::new();
    let expected = luajit(
        env.dir.path(),
        &format!("{ENCODE_GEN}\nfor i = 0, {n} - 1 do io.write(encode_case(i), '\\n') end\n"),
        &[],
    );
    assert_eq!(expected.len(), n);
    let lines: Vec<String> = (0..n).map(|i| format!("{{\"i\":{i}}}")).collect();
    let got = engine_results(
        &env,
        &format!(
            "{ENCODE_GEN}\nfunction setup() end\nfunction loop(msg)\n  dragonfly.output_event(default_output, {{ i = msg.i, r = encode_case(msg.i) }})\nend\n"
        ),
        &lines,
    );
    let (mut errors, mut wrong) = (0, Vec::new());
    for (i, (r, want)) in got.iter().zip(&expected).enumerate() {
        let same = if want.starts_with("error: ") {
            errors += 1;
            r == want
        } else {
            let parse = |s: &str| serde_json::from_str::<serde_json::Value>(s).ok();
            r == want || (parse(r).is_some() && parse(r) == parse(want))
        };
        if !same {
            wrong.push(format!(
                "case {i}:\n  lua-cjson: {}\n  engine:    {}",
                &want[..want.len().min(300)],
                &r[..r.len().min(300)]
            ));
        }
    }
    assert!(
        errors > 10 && errors < n / 2,
        "{errors} errors: the generator lost its mix"
    );
    assert!(
        wrong.is_empty(),
        "{} of {n} cases differ:\n{}",
        wrong.len(),
        wrong.iter().take(30).cloned().collect::<Vec<_>>().join("\n")
    );
}

/// The argument checks of `encode`/`decode` and the precision setter, as lua-cjson words
/// and accepts them.
#[test]
fn argument_checks_match_lua_cjson() {
    let calls = r#"
function arg_results()
  local r = {}
  local function add(ok, v) r[#r + 1] = tostring(ok) .. " " .. tostring(v) end
  add(pcall(cjson_safe.decode))
  add(pcall(cjson_safe.decode, "1", 2))
  add(pcall(cjson_safe.encode))
  add(pcall(cjson_safe.encode, 1, 2))
  add(pcall(cjson_safe.encode_number_precision, "5"))
  add(pcall(cjson_safe.encode, 2 / 3))
  return table.concat(r, " | ")
end
"#;
    let (got, expected) = both(calls, "arg_results");
    assert_eq!(got, expected);
}

/// The result of the Lua function `name` (defined in `calls`) in the engine and in lua-cjson
/// under luajit: (engine, oracle).
fn both(calls: &str, name: &str) -> (String, String) {
    let env = Env::new();
    let expected = luajit(env.dir.path(), &format!("{calls}\nio.write({name}(), '\\n')\n"), &[]);
    let got = engine_results(
        &env,
        &format!(
            "{calls}\nfunction setup() end\nfunction loop(msg)\n  dragonfly.output_event(default_output, {{ i = msg.i, r = {name}() }})\nend\n"
        ),
        &["{\"i\":0}".to_string()],
    );
    assert_eq!((got.len(), expected.len()), (1, 1), "{got:?} {expected:?}");
    (got[0].clone(), expected[0].clone())
}

/// The setters (`encode_sparse_array`, `encode_max_depth`, `decode_max_depth`,
/// `encode_keep_buffer`, `encode_invalid_numbers`, `decode_invalid_numbers`) and `new()`
/// against lua-cjson: what they return, what they refuse and how, and what `encode` and
/// `decode` do under each setting; settings belong to their module instance.
#[test]
fn settings_match_lua_cjson() {
    let calls = r#"
function settings_results()
  local c = cjson_safe
  local r = {}
  local function add(...)
    local n, t, s = select('#', ...), { ... }, {}
    for i = 1, n do
      local v = t[i]
      if type(v) == "string" then v = v:gsub("^[^:]*:%d+: ", "") end
      s[#s + 1] = type(v) == "table" and "table" or tostring(v)
    end
    r[#r + 1] = table.concat(s, ",")
  end
  add(c.encode_sparse_array())
  add(c.encode_max_depth(), c.decode_max_depth(), c.encode_keep_buffer(), c.encode_invalid_numbers(), c.decode_invalid_numbers())
  add(pcall(c.encode_max_depth, "x"))
  add(pcall(function() local v = c.encode_max_depth("x"); return v end))
  add(pcall(function() local v = c.encode_max_depth(0); return v end))
  add(pcall(function() local v = c.decode_max_depth(1, 2); return v end))
  add(pcall(function() local v = c.encode_sparse_array(nil, nil, -1); return v end))
  add(pcall(function() local v = c.encode_sparse_array(0); return v end))
  add(pcall(function() local v = c.encode_keep_buffer({}); return v end))
  add(pcall(function() local v = c.decode_invalid_numbers("null"); return v end))
  add(pcall(function() local v = c.encode_invalid_numbers("maybe"); return v end))
  add(pcall(function() local v = c:encode_max_depth(3); return v end))
  add(pcall(function() local f = c.decode_max_depth; local v = f(-5); return v end))
  add(c.encode_max_depth(2.9), c.encode_max_depth("7"), c.encode_max_depth(1e10))
  add(c.encode_max_depth(2))
  add(c.encode({ { 1 } }))
  add(c.encode({ { { 1 } } }))
  add(c.encode({ a = { b = { c = 1 } } }))
  add(c.decode_max_depth(2))
  add(type(c.decode("[[1]]")))
  add(c.decode("[[[1]]]"))
  add(c.decode('{"a":{"b":{}}}'))
  local d = c.new()
  add(d.encode_max_depth(), d.decode_max_depth(), d.encode({ { { 1 } } }), d._NAME, d._VERSION, d.null == c.null)
  add(c.encode_max_depth(1000), c.decode_max_depth(1000))
  add(c.encode({ [1] = 1, [20] = 2 }))
  add(pcall(function() local a, b, x = c.encode_sparse_array(true, -1); return a end))
  add(c.encode_sparse_array())
  add(c.encode_sparse_array("on", "3", 2.7))
  local t = c.encode({ [1] = 1, [20] = 2 })
  add(t and #t, t and c.decode(t)["20"], t and c.decode(t)["1"])
  add(c.encode({ [1] = 1, [5] = 2 }))
  add(c.encode({ [2 ^ 31 + 5] = 1 }))
  add(c.encode_sparse_array(false, 0))
  local big = c.encode({ [1] = 1, [300] = 2 })
  add(big and #big)
  add(c.encode({ [2 ^ 31] = 1 }))
  add(c.encode_sparse_array("off", 2, 10))
  add(c.encode({ [1] = 1, [11] = 2 }))
  add(c.encode({ [1] = 1, [10] = 2 }))
  add(d.encode({ [1] = 1, [11] = 2 }))
  add(c.encode({ 0 / 0 }))
  add(c.encode_invalid_numbers(true))
  add(c.encode({ 0 / 0, 1 / 0, -1 / 0 }))
  add(c.encode(1 / 0), c.encode(-(0 / 0)))
  add(c.encode_invalid_numbers("null"))
  add(c.encode({ 0 / 0, 1 / 0, -1 / 0, 2.5 }))
  add(c.encode_invalid_numbers("off"))
  add(c.encode(-1 / 0))
  add(d.encode_invalid_numbers("on"), c.encode_invalid_numbers())
  add(c.decode_invalid_numbers(false))
  for _, s in ipairs({ "[0x10]", "[inf]", "[+1]", "[01]", "[nan]", "[-inf]", "[-0x1]", "[-01]", "[0]", "[-0]",
                       "[0.5]", "[-7e3]", "[Infinity]", "[NaN]", "[-nan]", "[1e999]", "0x1p3", "[null]", "[n]", "[-]" }) do
    local v, e = c.decode(s)
    add(s, type(v) == "table" and tostring(v[1]) or tostring(v), e)
  end
  add(c.decode_invalid_numbers("on"))
  add(c.decode("[0x10]")[1], d.decode("[inf]")[1])
  add(c.encode_keep_buffer(false), c.encode_keep_buffer(), c.encode_keep_buffer("on"))
  return table.concat(r, " | ")
end
"#;
    let (got, want) = both(calls, "settings_results");
    let (w, g): (Vec<&str>, Vec<&str>) = (want.split(" | ").collect(), got.split(" | ").collect());
    let differ: Vec<String> = w
        .iter()
        .zip(&g)
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, (a, b))| format!("result {i}:\n  lua-cjson: {a}\n  engine:    {b}"))
        .collect();
    assert!(
        differ.is_empty() && w.len() == g.len(),
        "{} of {} results differ ({} vs {} results):\n{}",
        differ.len(),
        w.len(),
        w.len(),
        g.len(),
        differ.join("\n")
    );
}

/// Where this engine stops short of lua-cjson on purpose: nesting past 1,000 levels is refused
/// whatever `encode_max_depth`/`decode_max_depth` say (both recurse on the worker's stack,
/// which a deeper value overflowed, ending the process), and the engine's outputs never write
/// NaN or infinities bare (`encode_invalid_numbers(true)` writes them `null` there).
#[test]
fn settings_stop_where_the_engine_must() {
    let env = Env::new();
    let lines: Vec<String> = (0..1).map(|i| format!("{{\"i\":{i}}}")).collect();
    let got = engine_results(
        &env,
        r#"
function setup() end
function loop(msg)
  local c = cjson_safe
  local r = {}
  c.encode_max_depth(100000)
  c.decode_max_depth(2147483647)
  local t = {}
  for _ = 1, 5000 do t = { t } end
  local v, e = c.encode(t)
  r[#r + 1] = tostring(v) .. " " .. tostring(e)
  v, e = c.decode(string.rep("[", 10000) .. string.rep("]", 10000))
  r[#r + 1] = tostring(v) .. " " .. tostring(e)
  local ok = c.decode(string.rep("[", 1000) .. string.rep("]", 1000))
  r[#r + 1] = type(ok)
  c.encode_invalid_numbers(true)
  r[#r + 1] = c.encode({ 0 / 0 })
  dragonfly.output_event(default_output, { i = msg.i, r = table.concat(r, " | "), nan = 0 / 0, inf = 1 / 0 })
end
"#,
        &lines,
    );
    assert_eq!(
        got,
        vec![
            "nil Cannot serialise, excessive nesting (1001) | nil Found too many nested data structures (1001) at character 1001 | table | [nan]"
                .to_string()
        ]
    );
    let out = std::fs::read_to_string(env.log("out.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("the output line is JSON");
    assert_eq!((v["nan"].is_null(), v["inf"].is_null()), (true, true), "{out}");
}
