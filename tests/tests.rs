//! Integration tests of the `dragonfly-mle` binary: golden cases, real EVE files, framing edge
//! cases, sharding and order, tail following, script errors, exact flow ids, the command line
//! and signals.
//!
//! Golden cases live in `tests/golden/<case>/`, which is used as the engine root (`filter/`,
//! `analyzer/`) with `--config <case>/config.lua`. The test copies `<case>/input.json` into a
//! fresh log directory (so `file://input.json` names it) and compares, byte for byte,
//! `expected.json` with the log directory's `output.json` and every `expected-<name>` with
//! the log directory's `<name>` (e.g. `expected-dragonfly-mle.log`).

mod boundary;
mod builtins;
mod cjson;
mod cluster;
mod faults;
mod hiredis;
mod io;
mod kafka;
mod kit;
mod ml;
mod model;
mod ops;
mod oracle;
mod redis_in;
mod reload;
mod rotation;
mod util;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use util::*;

/// How long a test waits for the engine to produce what it is expected to produce.
const WAIT: Duration = Duration::from_secs(20);

fn wait_lines(env: &Env, name: &str, n: usize, what: &str) {
    wait_until(
        WAIT,
        what,
        || env.lines(name).len() >= n,
        || {
            let got = env.lines(name);
            format!(
                "{name} has {} lines, want {n}; last: {}",
                got.len(),
                got.last().map(|l| show(l)).unwrap_or_default()
            )
        },
    );
}

/// Stops a running engine with `signal`, then checks that it exited 0 having written exactly
/// `all` to out.json, and that its summary counts them.
fn stop_and_expect_all(env: &Env, mut engine: Running, signal: i32, all: &[String]) {
    engine.signal(signal);
    let out = engine.wait(WAIT);
    out.assert_success();
    let d = diff_lines(&strings(all), &env.lines("out.json"));
    assert!(d.is_empty(), "out.json:\n{d}");
    let s = out.summary();
    assert_eq!(
        (s.read, s.written),
        (all.len() as u64, all.len() as u64),
        "summary: {}",
        out.stdout
    );
}

fn strings(lines: &[String]) -> Vec<Vec<u8>> {
    lines.iter().map(|l| l.as_bytes().to_vec()).collect()
}

// ---------------------------------------------------------------------------------------------
// 1. Golden cases
// ---------------------------------------------------------------------------------------------

fn golden_cases_dir() -> PathBuf {
    manifest_dir().join("tests").join("golden")
}

/// Runs one golden case with `--shards <shards>`; describes every mismatch.
fn run_golden(case: &Path, shards: &str) -> Result<(), String> {
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let logs = tmp.path().join("logs");
    fs::create_dir_all(&logs).map_err(|e| e.to_string())?;
    fs::copy(case.join("input.json"), logs.join("input.json")).map_err(|e| format!("input.json: {e}"))?;
    let mut cmd = Command::new(bin());
    cmd.arg("-r")
        .arg(case)
        .arg("-l")
        .arg(&logs)
        .arg("--config")
        .arg(case.join("config.lua"))
        .args(["--no-pin", "--http", "off", "--shards", shards]);
    let out = run_in(cmd, tmp.path(), "golden");
    if !out.status.success() {
        return Err(format!(
            "exit {:?}\nstdout: {}\nstderr: {}",
            out.status, out.stdout, out.stderr
        ));
    }
    let summary = parse_summary(&out.stdout).ok_or_else(|| format!("no summary line: {}", out.stdout))?;
    let mut problems = Vec::new();
    if summary.script_errors != 0 || summary.invalid != 0 {
        problems.push(format!("unexpected errors: {summary:?}\nstderr: {}", out.stderr));
    }
    let mut compared = 0;
    let mut entries: Vec<_> = fs::read_dir(case)
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let actual_name = if name == "expected.json" {
            "output.json".to_string()
        } else if let Some(rest) = name.strip_prefix("expected-") {
            rest.to_string()
        } else {
            continue;
        };
        compared += 1;
        let expected = split_lines(&fs::read(e.path()).map_err(|e| e.to_string())?);
        let actual = split_lines(&fs::read(logs.join(&actual_name)).unwrap_or_default());
        let d = diff_lines(&expected, &actual);
        if !d.is_empty() {
            problems.push(format!("{actual_name} differs from {name}:\n{d}"));
        }
    }
    if compared == 0 {
        problems.push("no expected.json or expected-* file".into());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

#[test]
fn golden_cases() {
    let mut cases: Vec<PathBuf> = fs::read_dir(golden_cases_dir())
        .expect("tests/golden")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 4,
        "expected at least 4 golden cases, found {}",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        for shards in ["1", "2"] {
            if let Err(e) = run_golden(case, shards) {
                failures.push(format!(
                    "== {} (--shards {shards}):\n{e}",
                    case.file_name().unwrap_or_default().to_string_lossy()
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} golden run(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Real EVE files (shared/data/eve), when present
// ---------------------------------------------------------------------------------------------

/// What the engine should make of one file: the valid object lines (without CR) and the
/// 1-based numbers of the invalid ones.
fn classify(bytes: &[u8]) -> (Vec<Vec<u8>>, Vec<u64>) {
    let mut valid = Vec::new();
    let mut invalid = Vec::new();
    for (i, raw) in split_lines(bytes).iter().enumerate() {
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        // NUL bytes that open a line are a hole in the file (copytruncate), skipped: the
        // event after them is read.
        let line = &line[line.iter().take_while(|&&c| c == 0).count()..];
        if line.iter().all(|c| matches!(c, b' ' | b'\t' | b'\r')) {
            continue;
        }
        match serde_json::from_slice::<Value>(line) {
            Ok(v) if v.is_object() => valid.push(line.to_vec()),
            _ => invalid.push(i as u64 + 1),
        }
    }
    (valid, invalid)
}

/// Line numbers of the `invalid_line` / `line_too_long` reports of `env`.
fn reported_lines(env: &Env) -> Vec<u64> {
    let mut v: Vec<u64> = env
        .log_records()
        .iter()
        .filter(|r| r["kind"] == "invalid_line" || r["kind"] == "line_too_long")
        .map(|r| r["line"].as_u64().unwrap_or(0))
        .collect();
    v.sort_unstable();
    v
}

#[test]
fn shared_eve_files_pass_through_unchanged() {
    let dir = manifest_dir().join("..").join("shared").join("data").join("eve");
    if !dir.is_dir() {
        eprintln!("note: {} is absent; skipping the real EVE files test", dir.display());
        return;
    }
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .expect("read eve dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no *.json in {}", dir.display());
    let mut failures = Vec::new();
    let mut total = 0;
    for f in &files {
        let bytes = fs::read(f).expect("read eve file");
        let (valid, invalid) = classify(&bytes);
        total += valid.len();
        let uri = format!("file://{}", f.canonicalize().expect("canonical path").display());
        let env = Env::simple(&uri, ANALYZER_PASS, "", "");
        let out = env.run(&["--shards", "2"]);
        let name = f.file_name().unwrap_or_default().to_string_lossy().into_owned();
        if !out.status.success() {
            failures.push(format!("{name}: exit {:?}: {}", out.status, out.stderr));
            continue;
        }
        let d = diff_lines(&valid, &env.lines("out.json"));
        if !d.is_empty() {
            failures.push(format!("{name}: output differs from the valid input lines:\n{d}"));
        }
        let reported = reported_lines(&env);
        if reported != invalid {
            failures.push(format!(
                "{name}: invalid lines reported {reported:?}, expected {invalid:?}"
            ));
        }
        match parse_summary(&out.stdout) {
            Some(s) if s.read == valid.len() as u64 && s.written == valid.len() as u64 => {}
            other => failures.push(format!(
                "{name}: summary {other:?}, expected {} read and written",
                valid.len()
            )),
        }
    }
    assert!(total > 0, "the EVE files hold no valid event");
    assert!(
        failures.is_empty(),
        "{} problem(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Generated framing fixtures
// ---------------------------------------------------------------------------------------------

#[test]
fn framing_edge_cases() {
    let big = {
        let mut l = b"{\"n\":5,\"big\":\"".to_vec();
        l.resize(5 * 1024 * 1024, b'x');
        l.extend_from_slice(b"\"}");
        l
    };
    /// What must become of a line.
    enum Fate {
        Out(&'static str),
        Blank,
        Invalid,
        TooLong,
    }
    let lines: Vec<(Vec<u8>, Fate)> = vec![
        (b"{\"n\":1}\r".to_vec(), Fate::Out("{\"n\":1}")),
        (b"".to_vec(), Fate::Blank),
        (b"{\"n\":3,\"s\":\"a\0b\"}".to_vec(), Fate::Invalid),
        (b"   \t \r".to_vec(), Fate::Blank),
        (big, Fate::TooLong),
        (b"{\"n\":6}".to_vec(), Fate::Out("{\"n\":6}")),
        (b"{\"n\":7,\"s\":\"\xff\xfe\"}".to_vec(), Fate::Invalid),
        (b"[1,2]".to_vec(), Fate::Invalid),
        (b"{\"n\":9,\"t\":[1,2".to_vec(), Fate::Invalid),
        (
            b"{\"n\":10,\"crlf\":\"x\"}\r".to_vec(),
            Fate::Out("{\"n\":10,\"crlf\":\"x\"}"),
        ),
        (b"42".to_vec(), Fate::Invalid),
        (b"{\"n\":12} \0".to_vec(), Fate::Invalid),
        (b"\r".to_vec(), Fate::Blank),
        (
            b"{\"n\":14,\"u\":\"\\u0000 escaped NUL is fine\"}".to_vec(),
            Fate::Out("{\"n\":14,\"u\":\"\\u0000 escaped NUL is fine\"}"),
        ),
        (b"\"a string\"".to_vec(), Fate::Invalid),
        (
            b"{\"n\":16,\"last\":\"no newline\"}".to_vec(),
            Fate::Out("{\"n\":16,\"last\":\"no newline\"}"),
        ),
    ];
    let mut input = Vec::new();
    let mut offsets = Vec::new();
    for (i, (l, _)) in lines.iter().enumerate() {
        offsets.push(input.len() as u64);
        input.extend_from_slice(l);
        if i + 1 < lines.len() {
            input.push(b'\n');
        }
    }
    let env = Env::simple("file://in.json", ANALYZER_PASS, "", "stats_interval = 1");
    env.write_log("in.json", &input);
    let out = env.run(&["--shards", "2"]);
    out.assert_success();

    let expected_out: Vec<&[u8]> = lines
        .iter()
        .filter_map(|(_, f)| match f {
            Fate::Out(s) => Some(s.as_bytes()),
            _ => None,
        })
        .collect();
    let d = diff_lines(&expected_out, &env.lines("out.json"));
    assert!(d.is_empty(), "out.json:\n{d}");

    let records = env.log_records();
    let mut problems = Vec::new();
    for (i, (l, fate)) in lines.iter().enumerate() {
        let no = i as u64 + 1;
        let kind = match fate {
            Fate::Invalid => "invalid_line",
            Fate::TooLong => "line_too_long",
            _ => {
                if let Some(r) = records.iter().find(|r| r["line"].as_u64() == Some(no)) {
                    problems.push(format!("line {no} should not be reported, got {r}"));
                }
                continue;
            }
        };
        let found: Vec<&Value> = records.iter().filter(|r| r["line"].as_u64() == Some(no)).collect();
        match found.as_slice() {
            [r] => {
                if r["kind"] != kind {
                    problems.push(format!("line {no}: kind {}, expected {kind}", r["kind"]));
                }
                if r["input"] != "eve" {
                    problems.push(format!("line {no}: input {}, expected \"eve\"", r["input"]));
                }
                if r["offset"].as_u64() != Some(offsets[i]) {
                    problems.push(format!("line {no}: offset {}, expected {}", r["offset"], offsets[i]));
                }
                if r["length"].as_u64() != Some(l.len() as u64) {
                    problems.push(format!("line {no}: length {}, expected {}", r["length"], l.len()));
                }
                if r["message"].as_str().is_none_or(str::is_empty) {
                    problems.push(format!("line {no}: no message in {r}"));
                }
            }
            other => problems.push(format!("line {no}: expected one {kind} report, got {other:?}")),
        }
    }
    assert!(
        problems.is_empty(),
        "dragonfly-mle.log problems:\n{}",
        problems.join("\n")
    );

    let n_out = expected_out.len() as u64;
    let n_bad = lines
        .iter()
        .filter(|(_, f)| matches!(f, Fate::Invalid | Fate::TooLong))
        .count() as u64;
    let s = out.summary();
    assert_eq!(
        (s.read, s.written, s.invalid, s.script_errors),
        (n_out, n_out, n_bad, 0),
        "summary: {}",
        out.stdout
    );

    let stats = env.stats_records();
    let last = stats.last().expect("a stats line at exit");
    let eve = &last["inputs"]["eve"];
    assert_eq!(eve["events"].as_u64(), Some(n_out), "stats: {last}");
    let bad = eve["invalid"].as_u64().unwrap_or(0) + eve["too_long"].as_u64().unwrap_or(0);
    assert_eq!(bad, n_bad, "stats invalid + too_long: {last}");
}

// ---------------------------------------------------------------------------------------------
// 4. Shards and order
// ---------------------------------------------------------------------------------------------

/// Counts the events of each flow and annotates each with its rank in its flow.
const FLOW_COUNTER: &str = r#"
local counts = {}
function setup() end
function loop(msg)
   local id = msg.flow_id
   if id then
      local n = (counts[id] or 0) + 1
      counts[id] = n
      msg.n = n
   end
   dragonfly.output_event(default_output, msg)
end
"#;

/// The generated input and what FLOW_COUNTER makes of it.
fn flow_fixture() -> (Vec<u8>, Vec<String>) {
    let events = gen_events(20_000, 1_500, 0x5eed);
    let mut counts = std::collections::HashMap::new();
    let mut expected = Vec::new();
    for e in &events {
        match e.flow {
            Some(id) => {
                let n = counts.entry(id).or_insert(0u64);
                *n += 1;
                expected.push(with_member(&e.line, "n", &n.to_string()));
            }
            None => expected.push(e.line.clone()),
        }
    }
    let input = join_lines(&events.iter().map(|e| e.line.as_str()).collect::<Vec<_>>());
    (input, expected)
}

#[test]
fn shards_give_identical_ordered_output() {
    let (input, expected) = flow_fixture();
    let expected = strings(&expected);
    let mut failures = Vec::new();
    for shards in ["1", "2", "3"] {
        let env = Env::simple("file://in.json", FLOW_COUNTER, "", "");
        env.write_log("in.json", &input);
        let out = env.run(&["--shards", shards]);
        out.assert_success();
        let d = diff_lines(&expected, &env.lines("out.json"));
        if !d.is_empty() {
            failures.push(format!("--shards {shards}:\n{d}"));
        }
        let s = out.summary();
        if (s.read, s.written) != (expected.len() as u64, expected.len() as u64) {
            failures.push(format!("--shards {shards}: summary {s:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn unordered_output_keeps_the_events_and_per_flow_order() {
    let (input, expected) = flow_fixture();
    let env = Env::simple("file://in.json", FLOW_COUNTER, ", ordered = false", "");
    env.write_log("in.json", &input);
    env.run(&["--shards", "3"]).assert_success();
    let actual = env.lines("out.json");
    let mut sorted_actual = actual.clone();
    sorted_actual.sort();
    let mut sorted_expected = strings(&expected);
    sorted_expected.sort();
    let d = diff_lines(&sorted_expected, &sorted_actual);
    assert!(d.is_empty(), "the multiset of lines differs (sorted):\n{d}");
    let mut last = std::collections::HashMap::new();
    for line in &actual {
        let Some(flow) = u64_member(line, "flow_id") else {
            continue;
        };
        let n = u64_member(line, "n").unwrap_or_else(|| panic!("no n in {}", show(line)));
        let prev = last.insert(flow, n).unwrap_or(0);
        assert_eq!(
            n,
            prev + 1,
            "flow {flow}: n={n} follows n={prev}: per-flow order broken"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 5. tail://
// ---------------------------------------------------------------------------------------------

fn phase_lines(phase: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            format!(
                r#"{{"phase":"{phase}","i":{i},"flow_id":{},"pad":"{}"}}"#,
                100 + i,
                "p".repeat(i % 7)
            )
        })
        .collect()
}

#[test]
fn tail_follows_appends_rotation_and_truncation() {
    let env = Env::simple("tail://x<", ANALYZER_PASS, "", "tail_poll_ms = 50");
    let mut all: Vec<String> = Vec::new();
    let wait_all = |all: &[String], what: &str| {
        wait_lines(&env, "out.json", all.len(), what);
        let d = diff_lines(&strings(all), &env.lines("out.json"));
        assert!(d.is_empty(), "after {what}:\n{d}");
    };

    let initial = phase_lines("initial", 5);
    env.write_log("x", &join_lines(&initial));
    all.extend(initial);
    let engine = env.spawn(&["--shards", "2"]);
    wait_all(&all, "the lines present at start");

    // Appends, one of them a line written in two pieces.
    for chunk in phase_lines("append", 20).chunks(5) {
        let bytes = join_lines(chunk);
        let (a, b) = bytes.split_at(bytes.len() - 9);
        env.append_log("x", a);
        std::thread::sleep(Duration::from_millis(120));
        env.append_log("x", b);
        all.extend(chunk.iter().cloned());
    }
    wait_all(&all, "appends");

    // Rotation: rename, write more to the old file, then create the new one.
    fs::rename(env.log("x"), env.log("x.1")).expect("rename");
    let late = phase_lines("late-old", 3);
    env.append_log("x.1", &join_lines(&late));
    all.extend(late);
    std::thread::sleep(Duration::from_millis(250));
    let fresh = phase_lines("new", 10);
    env.write_log("x", &join_lines(&fresh));
    all.extend(fresh);
    wait_all(&all, "rotation");

    // Truncation: fewer bytes than were there.
    fs::OpenOptions::new()
        .write(true)
        .open(env.log("x"))
        .expect("open x")
        .set_len(0)
        .expect("truncate");
    let after = phase_lines("truncated", 3);
    env.append_log("x", &join_lines(&after));
    all.extend(after);
    wait_all(&all, "truncation");

    stop_and_expect_all(&env, engine, libc::SIGTERM, &all);
}

// ---------------------------------------------------------------------------------------------
// 6. Script errors
// ---------------------------------------------------------------------------------------------

#[test]
fn script_errors_are_counted_reported_and_survived() {
    let analyzer = r#"
local n = 0
function setup() end
function loop(msg)
   n = n + 1
   if n % 10 == 0 then error("boom " .. n) end
   dragonfly.output_event(default_output, msg)
end
"#;
    let env = Env::simple("file://in.json", analyzer, "", "stats_interval = 1");
    let max = (1u64 << 53) - 1;
    // Event 50 has no flow_id: its report names none.
    let lines: Vec<String> = (1..=100u64)
        .map(|i| {
            let id = if i == 50 { String::new() } else { format!(r#""flow_id":{},"#, max - i) };
            format!(
                r#"{{{id}"event_type":"flow","src_ip":"10.1.0.{i}","src_port":{i},"dest_ip":"10.2.0.1","dest_port":80,"proto":"TCP","i":{i}}}"#
            )
        })
        .collect();
    env.write_log("in.json", &join_lines(&lines));
    let out = env.run(&["--shards", "1"]);
    out.assert_success();

    let kept: Vec<String> = lines
        .iter()
        .enumerate()
        .filter(|(i, _)| (i + 1) % 10 != 0)
        .map(|(_, l)| l.clone())
        .collect();
    let d = diff_lines(&strings(&kept), &env.lines("out.json"));
    assert!(d.is_empty(), "out.json:\n{d}");

    let s = out.summary();
    assert_eq!(
        (s.read, s.written, s.invalid, s.script_errors),
        (100, 90, 0, 10),
        "summary: {}",
        out.stdout
    );

    let errors = env.log_records_of("script_error");
    assert_eq!(errors.len(), 10, "script_error reports: {errors:?}");
    for (k, r) in errors.iter().enumerate() {
        let n = (k as u64 + 1) * 10;
        assert_eq!(r["script"], "a", "{r}");
        assert_eq!(r["input"], "eve", "{r}");
        assert_eq!(r["line"].as_u64(), Some(n), "{r}");
        let id = (n != 50).then_some(max - n);
        assert_eq!(r.get("flow_id").and_then(Value::as_u64), id, "flow_id of {r}");
        let msg = r["message"].as_str().unwrap_or_default();
        assert!(msg.contains(&format!("boom {n}")), "message of {r}");
    }

    let stats = env.stats_records();
    let last = stats.last().expect("a stats line at exit");
    assert_eq!(last["analyzers"]["a"]["calls"].as_u64(), Some(100), "stats: {last}");
    assert_eq!(last["analyzers"]["a"]["errors"].as_u64(), Some(10), "stats: {last}");
    assert_eq!(last["outputs"]["out"]["written"].as_u64(), Some(90), "stats: {last}");
    assert_eq!(last["inputs"]["eve"]["events"].as_u64(), Some(100), "stats: {last}");
    assert!(
        last["time"].is_string() && last["operations"]["input"].as_u64() == Some(100),
        "stats: {last}"
    );
}

/// The FFI fast paths of `output_event` and `analyze_event` keep the C functions' behaviour
/// for what they do not handle themselves: unknown tags are counted and reported once, wrong
/// argument counts and unencodable numbers are script errors, numeric tags and tables that
/// are not the current event still work.
#[test]
fn fast_output_and_analyze_paths_keep_errors_and_odd_calls() {
    let env = Env::new();
    env.config(
        r#"
inputs = { { tag = "eve", uri = "file://in.json", script = "f.lua", default_analyzer = "a" } }
analyzers = { { tag = "a", script = "a.lua", default_analyzer = "", default_output = "out" } }
outputs = { { tag = "out", uri = "file://out.json<" }, { tag = "7", uri = "file://seven.json<" } }
"#,
    );
    env.filter(
        "f.lua",
        r#"
local kept
function setup() end
function loop(msg)
   local op = msg.op
   if op == "kept" then kept = msg end
   if op == "later" then
      -- An earlier event's table: not the current event, so it is copied.
      dragonfly.analyze_event("a", kept)
      return
   end
   if op == "badtag" then dragonfly.analyze_event("nope", msg) return end
   if op == "farity1" then dragonfly.analyze_event("a") end
   if op == "farity3" then dragonfly.analyze_event("a", msg, 1) end
   dragonfly.analyze_event("a", msg)
end
"#,
    );
    env.analyzer(
        "a.lua",
        r#"
function setup() end
function loop(msg)
   local op = msg.op
   if op == "badtag" then error("not reached") end
   if op == "nan" then msg.added = 0/0 end
   if op == "inf" then msg.added = 1/0 end
   if op == "outtag" then dragonfly.output_event("nope", msg) return end
   if op == "numtag" then dragonfly.output_event(7, msg) return end
   if op == "arity1" then dragonfly.output_event(default_output) end
   if op == "arity3" then dragonfly.output_event(default_output, msg, 1) end
   dragonfly.output_event(default_output, msg)
end
"#,
    );
    let ops = [
        "kept", "plain", "badtag", "badtag", "nan", "inf", "outtag", "outtag", "numtag", "arity1", "arity3", "farity1",
        "farity3", "later",
    ];
    let lines: Vec<String> = ops
        .iter()
        .enumerate()
        .map(|(i, op)| format!(r#"{{"op":"{op}","i":{i}}}"#))
        .collect();
    env.write_log("in.json", &join_lines(&lines));
    let out = env.run(&["--shards", "1"]);
    // Values sent to unknown tags were dropped: exit status 3 (issue 15).
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(out.stderr.contains("dropped"), "{}", out.stderr);

    // Written: kept, plain, numtag (to "7"), and the copy of "kept" made for "later".
    let expected = [lines[0].clone(), lines[1].clone(), lines[0].clone()];
    let d = diff_lines(&strings(&expected), &env.lines("out.json"));
    assert!(d.is_empty(), "out.json:\n{d}");
    let d = diff_lines(&strings(&lines[8..9]), &env.lines("seven.json"));
    assert!(d.is_empty(), "seven.json:\n{d}");

    let unknown = env.log_records_of("unknown_tag");
    let msgs: Vec<&str> = unknown.iter().filter_map(|r| r["message"].as_str()).collect();
    assert_eq!(unknown.len(), 2, "reported once per tag: {unknown:?}");
    assert!(msgs[0].contains(r#"analyzer: no analyzer has tag "nope""#), "{msgs:?}");
    assert!(msgs[1].contains(r#"output: no output has tag "nope""#), "{msgs:?}");
    // Each names the line of the script that made the call (a fast path's call included).
    let at = |r: &serde_json::Value| r["where"].as_str().unwrap_or("").to_string();
    assert!(at(&unknown[0]).ends_with("f.lua:12"), "{unknown:?}");
    assert!(at(&unknown[1]).ends_with("a.lua:8"), "{unknown:?}");
    assert!(msgs[1].contains("a.lua:8)"), "{msgs:?}");

    let errors = env.log_records_of("script_error");
    let msgs: Vec<&str> = errors.iter().filter_map(|r| r["message"].as_str()).collect();
    let want = [
        "Cannot serialise number: must not be NaN or Inf",
        "Cannot serialise number: must not be NaN or Inf",
        "output_event: expecting exactly 2 arguments",
        "output_event: expecting exactly 2 arguments",
        "analyze_event: expecting exactly 2 arguments",
        "analyze_event: expecting exactly 2 arguments",
    ];
    let mut kinds: Vec<&str> = msgs
        .iter()
        .map(|m| want.iter().find(|w| m.contains(*w)).copied().unwrap_or(m))
        .collect();
    kinds.sort_unstable();
    let mut want = want.to_vec();
    want.sort_unstable();
    assert_eq!(kinds, want, "script errors: {msgs:?}");
    let last = env.stats_records().pop().expect("a stats line at exit");
    assert_eq!(last["drops"]["unknown_tag"].as_u64(), Some(4), "stats: {last}");
    assert_eq!(last["drops"]["encode_error"].as_u64(), Some(2), "stats: {last}");
}

/// One input event may lead to at most 10,000 analyzer calls (a guard against events passed
/// around in a loop); the calls beyond are dropped, and counted as drops: in the summary's
/// "dropped", in `drops.hop_limit`, and in the exit status (they went uncounted, exit 0).
#[test]
fn analyzer_calls_past_the_hop_limit_are_counted_as_dropped() {
    let env = Env::new();
    env.config(
        r#"
inputs = { { tag = "eve", uri = "file://in.json", script = "f.lua", default_analyzer = "a" } }
analyzers = { { tag = "a", script = "a.lua", default_analyzer = "", default_output = "out" },
              { tag = "b", script = "b.lua", default_analyzer = "", default_output = "out" } }
outputs = { { tag = "out", uri = "file://out.json<" } }
"#,
    );
    env.filter("f.lua", FILTER_TO_DEFAULT);
    env.analyzer(
        "a.lua",
        "function setup() end\nfunction loop(msg)\n  for i = 1, msg.fan do dragonfly.analyze_event(\"b\", {i = i}) end\nend\n",
    );
    env.analyzer(
        "b.lua",
        "function setup() end\nfunction loop(msg) dragonfly.output_event(default_output, msg) end\n",
    );
    // 1 + 10,002 calls for the first event (3 past the limit), 1 + 5 for the second.
    env.write_log("in.json", b"{\"fan\":10002}\n{\"fan\":5}\n");
    let out = env.run(&[]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let s = out.summary();
    assert_eq!((s.read, s.written, s.dropped), (2, 9_999 + 5, 3), "{}", out.stdout);
    let last = env.stats_records().pop().expect("a stats line at exit");
    assert_eq!(last["drops"]["hop_limit"].as_u64(), Some(3), "stats: {last}");
    let reports = env.log_records_of("hop_limit");
    assert_eq!(reports.len(), 1, "{reports:?}");
}

// ---------------------------------------------------------------------------------------------
// 7. Exact flow ids
// ---------------------------------------------------------------------------------------------

#[test]
fn flow_ids_up_to_2_pow_53_survive_exactly() {
    let env = Env::new();
    env.config(
        r#"
inputs = { { tag = "eve", uri = "file://in.json", script = "fan.lua", default_analyzer = "" } }
analyzers = {
   { tag = "pass", script = "pass.lua", default_analyzer = "", default_output = "o_pass" },
   { tag = "add", script = "add.lua", default_analyzer = "", default_output = "o_add" },
   { tag = "build", script = "build.lua", default_analyzer = "", default_output = "o_build" },
}
outputs = {
   { tag = "o_pass", uri = "file://pass.json<" },
   { tag = "o_add", uri = "file://add.json<" },
   { tag = "o_build", uri = "file://build.json<" },
}
"#,
    );
    env.filter(
        "fan.lua",
        "function setup() end\nfunction loop(msg)\n  for _, a in ipairs({ \"pass\", \"add\", \"build\" }) do dragonfly.analyze_event(a, msg) end\nend\n",
    );
    env.analyzer("pass.lua", ANALYZER_PASS);
    env.analyzer(
        "add.lua",
        "function setup() end\nfunction loop(msg)\n  msg.extra = 1\n  dragonfly.output_event(default_output, msg)\nend\n",
    );
    env.analyzer(
        "build.lua",
        "function setup() end\nfunction loop(msg)\n  dragonfly.output_event(default_output, { id = msg.flow_id })\nend\n",
    );
    let max = (1u64 << 53) - 1;
    let ids = [
        max,
        max - 1,
        max - 2,
        1 << 52,
        (1 << 52) + 1,
        1_234_567_890_123_456,
        999_999_999_999_999,
        1,
        0,
    ];
    let lines: Vec<String> = ids
        .iter()
        .map(|id| {
            format!(
                r#"{{"timestamp":"2024-01-01T00:00:00.000000+0000","flow_id":{id},"event_type":"flow","src_ip":"10.0.0.1","src_port":1,"dest_ip":"10.0.0.2","dest_port":2,"proto":"TCP"}}"#
            )
        })
        .collect();
    env.write_log("in.json", &join_lines(&lines));
    env.run(&["--shards", "2"]).assert_success();

    let pass = strings(&lines);
    let add: Vec<String> = lines.iter().map(|l| with_member(l, "extra", "1")).collect();
    let build: Vec<String> = ids.iter().map(|id| format!("{{\"id\":{id}}}")).collect();
    let mut failures = Vec::new();
    for (file, expected) in [
        ("pass.json", pass),
        ("add.json", strings(&add)),
        ("build.json", strings(&build)),
    ] {
        let d = diff_lines(&expected, &env.lines(file));
        if !d.is_empty() {
            failures.push(format!("{file}:\n{d}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// 8. Command line
// ---------------------------------------------------------------------------------------------

#[test]
fn version_flag_prints_name_and_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(bin());
    cmd.arg("-V");
    let out = run_in(cmd, dir.path(), "version");
    out.assert_success();
    assert!(
        out.stdout.contains("DragonFly Machine Learning Engine (MLE)"),
        "stdout: {}",
        out.stdout
    );
    let version = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("Version: "))
        .unwrap_or("");
    assert!(!version.trim().is_empty(), "no \"Version: x\" line: {}", out.stdout);
}

/// `-r ""` is the default root, as the original read it (not a usage error).
#[test]
fn an_empty_root_is_the_default_root() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(bin());
    cmd.args(["-r", "", "-l", dir.path().to_str().unwrap(), "check"]);
    let out = run_in(cmd, dir.path(), "empty-root");
    assert_ne!(out.status.code(), Some(2), "-r \"\" refused: {out:?}");
    if !std::path::Path::new("/usr/local/dragonfly-mle/config/config.lua").exists() {
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        assert!(out.stderr.contains("/usr/local/dragonfly-mle"), "{}", out.stderr);
    }
}

#[test]
fn unknown_flag_prints_usage_and_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(bin());
    cmd.arg("--no-such-flag");
    let out = run_in(cmd, dir.path(), "unknown");
    assert!(!out.status.success(), "unknown flag accepted: {out:?}");
    assert!(
        out.stderr.to_lowercase().contains("usage"),
        "no usage on stderr: {}",
        out.stderr
    );
}

/// Flags with values that can never work are bad flags (status 2), found before anything
/// starts: a `--http` that is not HOST:PORT (status 1 after the configuration was read), a
/// `--cores` CPU this process cannot run on (accepted, its threads left unpinned).
#[test]
fn bad_flag_values_are_bad_flags() {
    let env = Env::simple("file://in.json", ANALYZER_PASS, "", "");
    env.write_log("in.json", b"{\"event_type\":\"x\"}\n");
    for (args, says) in [
        (&["--http", "bogus"][..], "--http: expected HOST:PORT"),
        (&["--http", "127.0.0.1:99999"][..], "--http: expected HOST:PORT"),
        (
            &["--cores", "0,4096"][..],
            "--cores: CPU 4096 is not one this process may run on",
        ),
    ] {
        let out = env.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(out.stderr.contains(says), "{args:?}: {}", out.stderr);
        assert!(env.lines("out.json").is_empty(), "{args:?} ran");
    }
    env.run(&["--http", "off", "--cores", "0"]).assert_success();
}

#[test]
fn check_accepts_a_good_root_without_running_setup() {
    // setup() fails, but `check` runs only the chunk.
    let analyzer = "function setup() error(\"setup must not run in check\") end\nfunction loop(msg) end\n";
    let env = Env::simple("file://in.json", analyzer, "", "");
    env.write_log("in.json", b"{\"a\":1}\n");
    for args in [&["check"][..], &["--check"][..]] {
        let out = env.run(args);
        assert!(out.status.success(), "{args:?} failed on a good root: {out:?}");
    }
    assert!(!env.log("out.json").exists(), "check opened the outputs");
    // With --setup it runs setup(), which fails here.
    let out = env.run(&["check", "--setup"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stderr.contains("setup must not run in check"), "{}", out.stderr);
    assert_eq!(env.run(&["--setup"]).status.code(), Some(2), "--setup without check");
    // Every script that fails is reported, each with its key (only the first was).
    env.analyzer(
        "b.lua",
        "function setup() error(\"b has no list\") end\nfunction loop(msg) end\n",
    );
    env.analyzer("c.lua", "function setup() end\nfunction loop(msg) end\n");
    env.analyzer("d.lua", "function setup() end\nfunction loop(msg) nope( end\n");
    env.config(
        "inputs = { { tag = \"eve\", uri = \"file://in.json\", script = \"filter.lua\", default_analyzer = \"a\" } }\n\
         analyzers = { { tag = \"a\", script = \"a.lua\", default_analyzer = \"\", default_output = \"out\" },\
         { tag = \"b\", script = \"b.lua\", default_analyzer = \"\", default_output = \"out\" },\
         { tag = \"c\", script = \"c.lua\", default_analyzer = \"\", default_output = \"out\" },\
         { tag = \"d\", script = \"d.lua\", default_analyzer = \"\", default_output = \"out\" } }\n\
         outputs = { { tag = \"out\", uri = \"file://out.json\" } }\n",
    );
    let out = env.run(&["check", "--setup"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    for says in [
        "analyzers[1]",
        "setup must not run in check",
        "analyzers[2]",
        "b has no list",
        "analyzers[4]",
    ] {
        assert!(out.stderr.contains(says), "{says}: {}", out.stderr);
    }
    assert!(!out.stderr.contains("analyzers[3]"), "{}", out.stderr);
    // A warning is shown beside the problems (it was only shown when check passed).
    env.config(
        &std::fs::read_to_string(env.root.join("config/config.lua"))
            .unwrap()
            .replace(
                "{ tag = \"c\", script = \"c.lua\", default_analyzer = \"\", default_output = \"out\" }",
                "{ tag = \"c\", script = \"c.lua\", default_analyzer = \"\", default_output = \"ot\" }",
            ),
    );
    let out = env.run(&["check"]);
    assert!(
        out.stderr
            .contains("warning: analyzers[3].default_output: no output has tag \"ot\""),
        "{}",
        out.stderr
    );
    // Without --setup, the chunk that does not compile.
    let out = env.run(&["check"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        out.stderr.contains("analyzers[4]") && !out.stderr.contains("b has no list"),
        "{}",
        out.stderr
    );
}

/// Issue 15: `check` also verifies what the configuration names outside itself: a missing
/// `file://` input, an output directory that cannot be written (or made), an output path that
/// is a directory, a named Redis that does not answer; all are reported at once, each with its
/// key.
#[test]
fn check_verifies_inputs_outputs_and_redis() {
    let env = Env::new();
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    env.config(&format!(
        "redis_host = \"127.0.0.1\"\nredis_port = {dead_port}\nredis_connect_timeout_ms = 500\n{}",
        simple_config("file://nowhere.json", "", "").replace("file://out.json<", "file:///etc/hostname/out.json<")
            + "\noutputs[#outputs + 1] = { tag = \"d\", uri = \"file:///tmp\" }\n"
            + "outputs[#outputs + 1] = { tag = \"p\", uri = \"file:///proc/dfm-nope/x.json\" }\n"
            + "outputs[#outputs + 1] = { tag = \"q\", uri = \"parquet:///proc/ev\" }\n"
            + "inputs[#inputs + 1] = { tag = \"s\", uri = \"ipc+stream://a-file\", script = \"filter.lua\", default_analyzer = \"a\" }\n"
    ));
    env.write_log("a-file", b"not a socket\n");
    env.filter("filter.lua", FILTER_TO_DEFAULT);
    env.analyzer("a.lua", ANALYZER_PASS);
    let out = env.run(&["check"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    for want in [
        "inputs[1].uri: cannot read",
        "nowhere.json",
        "outputs[1].uri: cannot write in /etc/hostname: /etc/hostname is not a directory",
        "outputs[2].uri: /tmp is a directory",
        // access(2) lets root "write" in /proc, where no directory can be made.
        "outputs[3].uri: cannot write in /proc/dfm-nope",
        // An existing directory where root may "write" but nothing can be made.
        "outputs[4].uri: cannot write in /proc",
        "inputs[2].uri:",
        "a-file exists and is not a socket",
        &format!("redis_host/redis_port: no answer from 127.0.0.1:{dead_port}"),
    ] {
        assert!(out.stderr.contains(want), "stderr lacks {want:?}: {}", out.stderr);
    }
}

#[test]
fn check_reports_every_problem_with_its_key() {
    let env = Env::new();
    env.config(
        r#"
inputs = { { uri = "file://in.json", script = "filter.lua", default_analyzer = "a" } }
analyzers = {
   { tag = "a", script = "a.lua", default_analyzer = "", default_output = "out" },
   { tag = "b", script = "missing.lua", default_analyzer = "", default_output = "out" },
}
outputs = { { tag = "out", uri = "file://out.json<" } }
"#,
    );
    env.filter("filter.lua", FILTER_TO_DEFAULT);
    env.analyzer("a.lua", ANALYZER_PASS);
    let out = env.run(&["check"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        out.stderr.contains("inputs[1].tag"),
        "stderr does not name inputs[1].tag: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains("analyzers[2].script"),
        "stderr does not name analyzers[2].script: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains("missing.lua"),
        "stderr does not name the missing file: {}",
        out.stderr
    );
}

#[test]
fn missing_script_is_named_by_its_key_when_running() {
    let env = Env::new();
    env.config(&simple_config("file://in.json", "", "").replace("script = \"a.lua\"", "script = \"nope.lua\""));
    env.filter("filter.lua", FILTER_TO_DEFAULT);
    env.write_log("in.json", b"{\"a\":1}\n");
    let out = env.run(&[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        out.stderr.contains("analyzers[1].script") && out.stderr.contains("nope.lua"),
        "stderr: {}",
        out.stderr
    );
}

#[test]
fn check_fails_on_a_script_that_does_not_load() {
    let env = Env::simple(
        "file://in.json",
        "function setup() end\nfunction loop(msg)\n  if then\nend\n",
        "",
        "",
    );
    let out = env.run(&["check"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        out.stderr.contains("a.lua"),
        "stderr does not name the script: {}",
        out.stderr
    );
}

#[test]
fn setup_error_stops_the_engine_with_a_clear_message() {
    let analyzer = "function setup()\n  error(\"cannot reach the model\")\nend\nfunction loop(msg) end\n";
    let env = Env::simple("file://in.json", analyzer, "", "");
    env.write_log("in.json", b"{\"a\":1}\n");
    let out = env.run(&["--shards", "2"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        out.stderr.contains("cannot reach the model"),
        "stderr lacks the error: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains("setup"),
        "stderr does not say setup() failed: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains("analyzers[1]") || out.stderr.contains("a.lua"),
        "stderr does not name the script: {}",
        out.stderr
    );
}

#[test]
fn io_is_available_in_setup_only() {
    let analyzer = r#"
local had_io = false
function setup() had_io = (io ~= nil and io.open ~= nil) end
function loop(msg)
   dragonfly.output_event(default_output, { had_io, io ~= nil })
end
"#;
    let env = Env::simple("file://in.json", analyzer, "", "");
    env.write_log("in.json", b"{\"a\":1}\n");
    env.run(&["--shards", "1"]).assert_success();
    assert_eq!(env.lines("out.json"), vec![b"[true,false]".to_vec()]);
}

// ---------------------------------------------------------------------------------------------
// 9. Signals
// ---------------------------------------------------------------------------------------------

#[test]
fn sigint_on_follow_drains_and_exits_zero() {
    let env = Env::simple("file://in.json", ANALYZER_PASS, "", "tail_poll_ms = 50");
    let first = phase_lines("first", 1000);
    env.write_log("in.json", &join_lines(&first));
    let engine = env.spawn(&["--follow", "--shards", "2"]);
    wait_lines(&env, "out.json", first.len(), "the first lines");
    let second = phase_lines("second", 500);
    env.append_log("in.json", &join_lines(&second));
    let all: Vec<String> = first.into_iter().chain(second).collect();
    wait_lines(&env, "out.json", all.len(), "the appended lines");
    stop_and_expect_all(&env, engine, libc::SIGINT, &all);
}

#[test]
fn sigint_mid_stream_writes_every_event_read() {
    let lines = phase_lines("bulk", 300_000);
    let env = Env::simple("file://in.json", ANALYZER_PASS, "", "");
    env.write_log("in.json", &join_lines(&lines));
    let mut engine = env.spawn(&["--shards", "2"]);
    wait_lines(&env, "out.json", 1, "the first output");
    engine.signal(libc::SIGINT);
    let out = engine.wait(WAIT);
    out.assert_success();
    let got = env.lines("out.json");
    let s = out.summary();
    assert_eq!(s.read, got.len() as u64, "events read vs lines written: {}", out.stdout);
    assert_eq!(
        s.written,
        got.len() as u64,
        "summary written vs lines written: {}",
        out.stdout
    );
    let d = diff_lines(&strings(&lines[..got.len().min(lines.len())]), &got);
    assert!(d.is_empty(), "out.json is not a prefix of the input:\n{d}");
    eprintln!(
        "note: SIGINT stopped the run after {} of {} events",
        got.len(),
        lines.len()
    );
}

#[test]
fn sigusr1_rotates_the_output_file() {
    let env = Env::simple("file://in.json", ANALYZER_PASS, "", "tail_poll_ms = 50");
    let before = phase_lines("before", 100);
    env.write_log("in.json", &join_lines(&before));
    let mut engine = env.spawn(&["--follow", "--shards", "2"]);
    wait_lines(&env, "out.json", before.len(), "the lines before rotation");
    engine.signal(libc::SIGUSR1);
    wait_until(
        WAIT,
        "a rotated out.json.*",
        || !files_with_prefix(&env.logs, "out.json.").is_empty(),
        || {
            format!(
                "{:?}",
                fs::read_dir(&env.logs).map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect::<Vec<_>>())
            )
        },
    );
    let after = phase_lines("after", 100);
    env.append_log("in.json", &join_lines(&after));
    wait_lines(&env, "out.json", after.len(), "the lines after rotation");
    engine.signal(libc::SIGTERM);
    engine.wait(WAIT).assert_success();

    let rotated = files_with_prefix(&env.logs, "out.json.");
    assert_eq!(rotated.len(), 1, "rotated files: {rotated:?}");
    let name = rotated[0]
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let suffix = name.strip_prefix("out.json.").unwrap_or_default();
    let ok = suffix.len() == 15
        && suffix.as_bytes()[8] == b'.'
        && suffix.bytes().enumerate().all(|(i, c)| i == 8 || c.is_ascii_digit());
    assert!(ok, "rotated name {name} is not out.json.YYYYMMDD.HHMMSS");
    let old = split_lines(&fs::read(&rotated[0]).expect("read rotated"));
    let d = diff_lines(&strings(&before), &old);
    assert!(d.is_empty(), "rotated file:\n{d}");
    let d = diff_lines(&strings(&after), &env.lines("out.json"));
    assert!(d.is_empty(), "new out.json:\n{d}");
}

// ---------------------------------------------------------------------------------------------
// More: determinism, tail from the end, line limit, stats interval, the Lua API
// ---------------------------------------------------------------------------------------------

#[test]
fn added_members_come_out_the_same_on_every_run() {
    // Several new members per event: the bytes written must not depend on the run or on
    // --shards (whatever order the engine chooses for them).
    let analyzer = "function setup() end\nfunction loop(msg)\n  msg.alpha = 1\n  msg.beta = \"b\"\n  msg.gamma = true\n  msg.delta = { 1 }\n  dragonfly.output_event(default_output, msg)\nend\n";
    let events = gen_events(300, 30, 7);
    let input = join_lines(&events.iter().map(|e| e.line.as_str()).collect::<Vec<_>>());
    let mut runs = Vec::new();
    for shards in ["1", "1", "2", "3"] {
        let env = Env::simple("file://in.json", analyzer, "", "");
        env.write_log("in.json", &input);
        env.run(&["--shards", shards]).assert_success();
        runs.push((shards, env.lines("out.json")));
    }
    assert_eq!(runs[0].1.len(), events.len(), "every event is written");
    for (shards, lines) in &runs[1..] {
        let d = diff_lines(&runs[0].1, lines);
        assert!(
            d.is_empty(),
            "a run with --shards {shards} differs from the first run (--shards 1):\n{d}"
        );
    }
}

/// Appends `lines` to the tail input `x`, waits until the last one is written, and stops the
/// engine (SIGTERM, exit 0).
fn append_until_written_then_stop(env: &Env, engine: &mut Running, lines: &[String]) {
    env.append_log("x", &join_lines(lines));
    wait_until(
        WAIT,
        "the lines appended after start",
        || env.lines("out.json").last().map(|l| l.as_slice()) == lines.last().map(|l| l.as_bytes()),
        || format!("out.json: {} lines", env.lines("out.json").len()),
    );
    engine.signal(libc::SIGTERM);
    engine.wait(WAIT).assert_success();
}

#[test]
fn tail_without_lt_starts_at_the_end() {
    let env = Env::simple("tail://x", ANALYZER_PASS, "", "tail_poll_ms = 50");
    let old = phase_lines("old", 50);
    env.write_log("x", &join_lines(&old));
    let mut engine = env.spawn(&["--shards", "1"]);
    // When the engine has reached the end of x cannot be seen from outside: append probe
    // lines until one comes out.
    let mut probes: Vec<String> = Vec::new();
    wait_until(
        WAIT,
        "a probe line appended after start",
        || {
            let p = format!(r#"{{"phase":"probe","i":{}}}"#, probes.len());
            env.append_log("x", format!("{p}\n").as_bytes());
            probes.push(p);
            std::thread::sleep(Duration::from_millis(100));
            !env.lines("out.json").is_empty()
        },
        String::new,
    );
    let new = phase_lines("new", 10);
    append_until_written_then_stop(&env, &mut engine, &new);
    let got = env.lines("out.json");
    assert!(got.len() > new.len(), "out.json has {} lines", got.len());
    let k = (probes.len() + new.len())
        .checked_sub(got.len())
        .unwrap_or_else(|| panic!("too many lines: {got:?}"));
    let expected: Vec<String> = probes[k..].iter().cloned().chain(new).collect();
    let d = diff_lines(&strings(&expected), &got);
    assert!(
        d.is_empty(),
        "tail://x (from the end) wrote lines that were there before it started, or lost some:\n{d}"
    );
}

/// Whether the engine `pid` has a file named `name` open.
fn has_open(pid: u32, name: &str) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
        fds.flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|p| p.file_name().is_some_and(|f| f == name)))
    })
}

/// `tail://x` without `<` follows a file present at the start from its end, but a file that
/// appears later was written after the engine started: it is read from its start (its first
/// events, written at once, were skipped without a word).
#[test]
fn tail_reads_a_file_that_appears_later_from_its_start() {
    let env = Env::simple("tail://x", ANALYZER_PASS, "", "tail_poll_ms = 50");
    let mut engine = env.spawn(&["--shards", "1"]);
    wait_until(
        WAIT,
        "the input_missing record",
        || !env.log_records_of("input_missing").is_empty(),
        String::new,
    );
    let lines = phase_lines("burst", 100);
    env.write_log("x", &join_lines(&lines));
    wait_until(
        WAIT,
        "the 100 lines",
        || env.lines("out.json").len() >= lines.len(),
        || format!("out.json: {} lines", env.lines("out.json").len()),
    );
    engine.signal(libc::SIGTERM);
    engine.wait(WAIT).assert_success();
    let d = diff_lines(&strings(&lines), &env.lines("out.json"));
    assert!(d.is_empty(), "out.json:\n{d}");
}

/// `tail://x` without `<` starting while a line is half written at the end of x starts at
/// that line, not inside it (its rest was an invalid line and the event lost).
#[test]
fn tail_from_the_end_starts_at_a_line_being_written() {
    let env = Env::simple("tail://x", ANALYZER_PASS, "", "tail_poll_ms = 50");
    let mut old = join_lines(&phase_lines("old", 50));
    old.extend_from_slice(br#"{"phase":"cut","i":0"#);
    env.write_log("x", &old);
    let mut engine = env.spawn(&["--shards", "1"]);
    let pid = engine.child.id();
    wait_until(WAIT, "the engine to open x", || has_open(pid, "x"), String::new);
    std::thread::sleep(Duration::from_millis(300));
    env.append_log("x", b",\"rest\":1}\n");
    let new = phase_lines("new", 10);
    append_until_written_then_stop(&env, &mut engine, &new);
    let expected: Vec<String> = std::iter::once(r#"{"phase":"cut","i":0,"rest":1}"#.to_string())
        .chain(new)
        .collect();
    let d = diff_lines(&strings(&expected), &env.lines("out.json"));
    assert!(d.is_empty(), "out.json:\n{d}");
    assert!(env.log_records_of("invalid_line").is_empty(), "{:?}", env.log_records());
}

#[test]
fn max_line_bytes_is_the_longest_accepted_line() {
    let env = Env::simple("file://in.json", ANALYZER_PASS, "", "max_line_bytes = 64");
    let line_of = |n: usize| format!("{{\"p\":\"{}\"}}", "x".repeat(n - 8));
    let (l63, l64, l65) = (line_of(63), line_of(64), line_of(65));
    assert_eq!((l63.len(), l64.len(), l65.len()), (63, 64, 65));
    let after = r#"{"after":1}"#.to_string();
    env.write_log("in.json", &join_lines(&[&l63, &l64, &l65, &after]));
    let out = env.run(&["--shards", "1"]);
    out.assert_success();
    let d = diff_lines(&strings(&[l63, l64, after]), &env.lines("out.json"));
    assert!(d.is_empty(), "out.json:\n{d}");
    let too_long = env.log_records_of("line_too_long");
    assert_eq!(too_long.len(), 1, "{too_long:?}");
    assert_eq!(too_long[0]["line"].as_u64(), Some(3), "{}", too_long[0]);
    assert_eq!(too_long[0]["length"].as_u64(), Some(65), "{}", too_long[0]);
    assert_eq!(too_long[0]["offset"].as_u64(), Some(63 + 1 + 64 + 1), "{}", too_long[0]);
    assert_eq!(out.summary().invalid, 1, "{}", out.stdout);
}

/// A script's `print` goes to stdout line by line while the engine runs (it was block
/// buffered: with stdout a file or a pipe, a service's prints came at exit).
#[test]
fn print_reaches_stdout_while_the_engine_runs() {
    let env = Env::simple(
        "file://in.json",
        "function setup() print(\"ready\") end\nfunction loop(msg)\n  print(\"saw\", msg.n)\n  dragonfly.output_event(default_output, msg)\nend\n",
        "",
        "",
    );
    env.write_log("in.json", b"{\"n\":1}\n{\"n\":2}\n");
    let mut engine = env.spawn(&["--follow", "--shards", "1"]);
    wait_until(
        Duration::from_secs(30),
        "both prints on stdout",
        || engine.stdout_now().contains("saw\t2\n"),
        || engine.stdout_now(),
    );
    assert!(
        engine.stdout_now().starts_with("ready\nsaw\t1\n"),
        "{}",
        engine.stdout_now()
    );
    engine.signal(libc::SIGTERM);
    engine.wait(RUN_TIMEOUT).assert_success();
}

/// The lines of stdout scripts printed (the engine's own start with `dragonfly-mle:`).
fn script_prints(stdout: &str) -> Vec<&str> {
    stdout.lines().filter(|l| !l.starts_with("dragonfly-mle:")).collect()
}

/// `print` keeps Lua's behaviour: pieces through the global `tostring` (as a script set it),
/// joined with tabs; an empty line for no argument; a `tostring` that returns no string is an
/// error of the call.
#[test]
fn print_formats_as_lua_does() {
    let env = Env::simple(
        "file://in.json",
        "function setup()\n  print()\n  print(nil, true, 1.5, 10, \"x\")\n  local ok, err = pcall(print, setmetatable({}, {__tostring = function() return {} end}))\n  print(ok, err)\n  local raw = tostring\n  tostring = function(v) return \"<\" .. raw(v) .. \">\" end\n  print(\"a\", 2)\n  tostring = raw\nend\nfunction loop(msg) end\n",
        "",
        "",
    );
    env.write_log("in.json", b"{\"n\":1}\n");
    let out = env.run(&["--shards", "1"]);
    out.assert_success();
    let printed = script_prints(&out.stdout);
    assert_eq!(
        printed,
        [
            "",
            "nil\ttrue\t1.5\t10\tx",
            "false\t'tostring' must return a string to 'print'",
            "<a>\t<2>"
        ],
        "{}",
        out.stdout
    );
}

/// Two workers printing at once give whole lines: LuaJIT's `print` wrote each piece, tab and
/// newline with a call of its own, so the lines of two workers were cut into each other.
#[test]
fn prints_of_two_workers_keep_their_lines_whole() {
    let pieces = 40;
    let analyzer = format!(
        "function setup() end\nfunction loop(msg)\n  local t = {{}}\n  for i = 1, {pieces} do t[i] = msg.n end\n  print(unpack(t))\n  dragonfly.output_event(default_output, msg)\nend\n"
    );
    let env = Env::simple("file://in.json", &analyzer, "", "");
    let n = 20_000;
    let lines: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "{{\"n\":{i},\"src_ip\":\"10.0.{}.{}\",\"src_port\":{},\"dest_ip\":\"10.1.0.1\",\"dest_port\":80,\"proto\":\"TCP\"}}",
                i / 250 % 250,
                i % 250,
                1024 + i % 50_000
            )
        })
        .collect();
    env.write_log("in.json", &join_lines(&lines));
    let out = env.run(&["--shards", "2"]);
    out.assert_success();
    let printed = script_prints(&out.stdout);
    let whole = |l: &&str| {
        let f: Vec<&str> = l.split('\t').collect();
        f.len() == pieces && f.iter().all(|p| *p == f[0] && p.parse::<u64>().is_ok())
    };
    let cut: Vec<&&str> = printed.iter().filter(|l| !whole(l)).collect();
    assert!(
        cut.is_empty(),
        "{} of {} lines cut, the first: {:?}",
        cut.len(),
        printed.len(),
        cut.first()
    );
    let mut seen: Vec<u64> = printed
        .iter()
        .map(|l| l.split('\t').next().unwrap().parse().unwrap())
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..n as u64).collect::<Vec<_>>(), "every event's line, once");
}

#[test]
fn stats_lines_are_written_every_interval_and_at_exit() {
    let env = Env::simple(
        "file://in.json",
        ANALYZER_PASS,
        "",
        "stats_interval = 1\ntail_poll_ms = 50",
    );
    env.write_log("in.json", &join_lines(&phase_lines("s", 10)));
    let mut engine = env.spawn(&["--follow", "--shards", "2"]);
    wait_until(
        WAIT,
        "three periodic stats lines",
        || env.stats_records().len() >= 3,
        || format!("{:?}", env.stats_records()),
    );
    let before = env.stats_records().len();
    engine.signal(libc::SIGTERM);
    engine.wait(WAIT).assert_success();
    let stats = env.stats_records();
    assert!(
        stats.len() > before,
        "no stats line at exit ({} before, {} after)",
        before,
        stats.len()
    );
    for r in &stats {
        assert!(r["time"].is_string(), "stats line without time: {r}");
        for k in ["input", "analyzer", "output"] {
            assert!(r["operations"][k].is_u64(), "stats line without operations.{k}: {r}");
        }
    }
    let last = stats.last().expect("a stats line");
    assert_eq!(last["inputs"]["eve"]["events"].as_u64(), Some(10), "{last}");
    assert_eq!(last["outputs"]["out"]["written"].as_u64(), Some(10), "{last}");
    assert_eq!(last["analyzers"]["a"]["calls"].as_u64(), Some(10), "{last}");
}

#[test]
fn lua_api_log_stats_and_echo() {
    let analyzer = r#"
function setup()
   dragonfly.log_event({ ready = true })
end
function loop(msg)
   dragonfly.log_event({ i = msg.i })
   dragonfly.stats_event({ s = msg.i })
   dragonfly.echo("echo " .. msg.i)
   dragonfly.output_event(default_output, msg)
end
"#;
    let env = Env::simple("file://in.json", analyzer, "", "");
    let lines: Vec<String> = (1..=3).map(|i| format!(r#"{{"i":{i}}}"#)).collect();
    env.write_log("in.json", &join_lines(&lines));
    let out = env.run(&["--shards", "1"]);
    out.assert_success();
    let d = diff_lines(&strings(&lines), &env.lines("out.json"));
    assert!(d.is_empty(), "out.json:\n{d}");
    let log = env.lines("dragonfly-mle.log");
    let d = diff_lines(&[r#"{"ready":true}"#, r#"{"i":1}"#, r#"{"i":2}"#, r#"{"i":3}"#], &log);
    assert!(d.is_empty(), "dragonfly-mle.log:\n{d}");
    let custom: Vec<Vec<u8>> = env
        .lines("dragonfly-mle-stats.log")
        .into_iter()
        .filter(|l| l.starts_with(b"{\"s\":"))
        .collect();
    let d = diff_lines(&[r#"{"s":1}"#, r#"{"s":2}"#, r#"{"s":3}"#], &custom);
    assert!(d.is_empty(), "stats_event lines in dragonfly-mle-stats.log:\n{d}");
    for i in 1..=3 {
        assert!(
            out.stderr.contains(&format!("echo {i}\n")),
            "echo {i} not on stderr: {}",
            out.stderr
        );
    }
}

/// Regression: calls that `setup()` queues with `analyze_event` run once, before the first
/// event, on the plain and on the pipelining path alike.
#[test]
fn analyze_event_from_setup_runs_before_the_first_event() {
    for analyzer_extra in ["", ", pipeline = 4"] {
        let env = Env::new();
        env.config(&format!(
            "inputs = {{ {{ tag = \"eve\", uri = \"file://in.json\", script = \"filter.lua\", default_analyzer = \"a\" }} }}\n\
             analyzers = {{ {{ tag = \"a\", script = \"a.lua\", default_analyzer = \"\", default_output = \"out\"{analyzer_extra} }} }}\n\
             outputs = {{ {{ tag = \"out\", uri = \"file://out.json<\" }} }}\n"
        ));
        env.filter(
            "filter.lua",
            "function setup() dragonfly.analyze_event(default_analyzer, { hello = 1 }) end\n\
             function loop(msg) dragonfly.analyze_event(default_analyzer, msg) end\n",
        );
        env.analyzer("a.lua", ANALYZER_PASS);
        env.write_log("in.json", b"{\"i\":1}\n{\"i\":2}\n");
        env.run(&[]).assert_success();
        let got: Vec<String> = env
            .lines("out.json")
            .iter()
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect();
        assert_eq!(
            got,
            vec!["{\"hello\":1}", "{\"i\":1}", "{\"i\":2}"],
            "with {analyzer_extra:?}"
        );
    }
}

/// Configurations and scripts written for the original that this engine ran badly: a
/// `default_analyzer` naming no analyzer (the original ran it: the tag is only a string for the
/// script) was refused; a user output tagged `log` gave the stats line two `"log"` members (the
/// internal sink's count lost to JSON readers); a legacy filter decoding its event with
/// `cjson.decode(msg)` dropped every event without a word.
#[test]
fn configurations_and_scripts_of_the_original_run_and_say_what_is_off() {
    let env = Env::new();
    env.config(
        "inputs = {\n\
           { tag = \"eve\", uri = \"file://in.json\", script = \"legacy.lua\", default_analyzer = \"sink\" },\n\
           { tag = \"eve2\", uri = \"file://in2.json\", script = \"to-a.lua\", default_analyzer = \"a\" },\n\
         }\n\
         analyzers = { { tag = \"a\", script = \"a.lua\", default_analyzer = \"\", default_output = \"log\" } }\n\
         outputs = { { tag = \"log\", uri = \"file://user-log.json\" } }\n",
    );
    env.filter(
        "legacy.lua",
        "function setup() end\n\
         function loop(msg)\n\
           local ev = cjson.decode(msg)\n\
           if ev then dragonfly.analyze_event(default_analyzer, ev) end\n\
         end\n",
    );
    env.filter("to-a.lua", FILTER_TO_DEFAULT);
    env.analyzer("a.lua", ANALYZER_PASS);
    let events: String = (0..5).map(|i| format!("{{\"i\":{i}}}\n")).collect();
    env.write_log("in.json", events.as_bytes());
    env.write_log("in2.json", events.as_bytes());

    let out = env.run(&["check"]);
    assert!(
        out.status.success(),
        "check refused the original's configuration: {out:?}"
    );
    assert!(
        out.stdout
            .contains("warning: inputs[1].default_analyzer: no analyzer has tag \"sink\""),
        "{out:?}"
    );

    let out = env.run(&[]);
    assert!(out.status.success(), "{out:?}");
    assert!(out.stderr.contains("config_warning"), "{}", out.stderr);
    let warnings = env.log_records_of("config_warning");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0]["message"].as_str().unwrap_or_default().contains("\"sink\""));
    let decode = env.log_records_of("script_warning");
    assert_eq!(decode.len(), 1, "once per script: {decode:?}");
    assert_eq!(decode[0]["script"], "eve", "{decode:?}");
    assert!(
        decode[0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("event table"),
        "{decode:?}"
    );
    assert_eq!(env.lines("user-log.json").len(), 5, "the user output tagged log");

    let text = fs::read_to_string(env.log("dragonfly-mle-stats.log")).unwrap();
    let last = text.lines().last().expect("a stats line");
    assert_eq!(last.matches("\"log\":").count(), 1, "{last}");
    let last: Value = serde_json::from_str(last).unwrap();
    assert_eq!(last["outputs"]["log"]["written"].as_u64(), Some(5), "{last}");
    let internal = last["outputs"]["{log}"]["written"].as_u64().unwrap_or(0);
    assert!(
        internal >= 2,
        "the warnings were written to {{log}} and counted there: {last}"
    );
}
