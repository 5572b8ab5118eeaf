//! `dragonfly-mle test`: the shipped analyzers' tests pass; a wrong expectation fails with the
//! difference and exit status 1; `--update` writes expected files that then catch a change; the
//! test clock makes `os.time`, `os.date`, `date2epoch` and timers deterministic.

use std::fs;
use std::process::Command;

use crate::util::*;

/// Runs `dragonfly-mle [args]`; (exit code, stdout).
fn kit(args: &[&str]) -> (i32, String) {
    let out = Command::new(bin()).args(args).output().expect("run dragonfly-mle test");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), format!("{stdout}{stderr}"))
}

#[test]
fn the_shipped_analyzers_tests_pass() {
    let scripts = manifest_dir().join("scripts");
    let (code, out) = kit(&["-r", scripts.to_str().unwrap(), "test"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("test result: ok. 5 passed; 0 failed"), "{out}");
    // Each shipped analyzer has a test that ran.
    for f in ["hello-counter.test.lua", "flow-counter.test.lua", "dga-score.test.lua"] {
        assert!(out.contains(&format!("test {f}: ")), "{f} did not run:\n{out}");
    }
}

#[test]
fn a_wrong_expectation_fails_with_the_difference() {
    let dir = tempfile::tempdir().unwrap();
    let scripts = manifest_dir().join("scripts");
    let file = dir.path().join("wrong.test.lua");
    fs::write(
        &file,
        format!(
            "tests = {{ {{ name = \"wrong\", root = {root:?}, shards = 1,\n\
               redis = {{ {{ \"SET\", \"count:dns\", \"41\" }} }},\n\
               events = {{ {{ event_type = \"dns\", src_ip = \"10.0.0.1\", dest_ip = \"10.0.0.2\", src_port = 1, dest_port = 53, proto = \"UDP\", dns = {{ rrname = \"a.example\" }} }} }},\n\
               expect = {{ fields = {{ annotated = {{ [1] = {{ type_total = 41, nope = {{ exists = true }} }} }} }} }} }} }}\n",
            root = scripts.to_str().unwrap()
        ),
    )
    .unwrap();
    let (code, out) = kit(&["test", file.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("output annotated, record 1, type_total: expected 41, got 42"),
        "{out}"
    );
    assert!(
        out.contains("output annotated, record 1, nope: expected to exist, absent"),
        "{out}"
    );
    assert!(out.contains("test result: FAILED. 0 passed; 1 failed"), "{out}");
}

/// A root of its own: one analyzer that stamps the clock on each event and arms a timer.
fn clock_root(dir: &std::path::Path, analyzer: &str) -> std::path::PathBuf {
    let root = dir.join("root");
    for d in ["config", "filter", "analyzer", "tests"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::write(root.join("config/config.lua"), simple_config("file://in.json", "", "")).unwrap();
    fs::write(root.join("filter/filter.lua"), FILTER_TO_DEFAULT).unwrap();
    fs::write(root.join("analyzer/a.lua"), analyzer).unwrap();
    root
}

const STAMPER: &str = r#"
function setup() end
function loop(msg)
   msg.now = os.time()
   msg.day = os.date("!%Y-%m-%d %H:%M:%S")
   if msg.timestamp then msg.epoch = dragonfly.date2epoch(msg.timestamp) end
   if msg.n == 1 then dragonfly.timer_event("a", 10, { timer = true }) end
   dragonfly.output_event(default_output, msg)
end
"#;

#[test]
fn the_clock_is_virtual_and_timers_fire_on_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = clock_root(dir.path(), STAMPER);
    fs::write(
        root.join("tests/clock.test.lua"),
        r#"
tests = { {
   name = "clock",
   clock = "2024-03-01T00:00:00Z", clock_step = 1, clock_after = 60,
   -- On one shard a timer's record follows the events' records; on several its place
   -- among them depends on which worker ends first.
   shards = 1,
   events = {
      { n = 1, timestamp = "2024-03-01T12:00:00" },
      { n = 2 },
      { n = 3 },
   },
   expect = {
      counts = { out = 4 },
      fields = { out = {
         [1] = { now = 1709251200, day = "2024-03-01 00:00:00", epoch = 1709294400 },
         [2] = { now = 1709251201 },
         [3] = { now = 1709251202, day = "2024-03-01 00:00:02" },
         -- The timer armed at the first event fires 10 s later on the test's clock.
         [4] = { timer = true, now = 1709251210, n = { absent = true } },
      } },
   },
} }
"#,
    )
    .unwrap();
    let (code, out) = kit(&["-r", root.to_str().unwrap(), "test"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("1 passed; 0 failed"), "{out}");
}

#[test]
fn update_writes_expected_records_that_catch_a_change() {
    let dir = tempfile::tempdir().unwrap();
    let root = clock_root(dir.path(), ANALYZER_PASS);
    let file = root.join("tests/pass.test.lua");
    fs::write(
        &file,
        "tests = { { name = \"pass through\", events = { { a = 1 }, '{\"b\":[1,2]}' } } }\n",
    )
    .unwrap();
    let r = root.to_str().unwrap();
    let (code, out) = kit(&["-r", r, "test", "--update"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("expected files written for 1 tests"), "{out}");
    let expected = root.join("tests/pass.test.expected/pass_through/out.jsonl");
    assert_eq!(fs::read_to_string(&expected).unwrap(), "{\"a\":1}\n{\"b\":[1,2]}\n");
    let (code, out) = kit(&["-r", r, "test"]);
    assert_eq!(code, 0, "{out}");
    // The analyzer changes: the expected records catch it.
    fs::write(
        root.join("analyzer/a.lua"),
        "function setup() end\nfunction loop(msg)\n  msg.extra = true\n  dragonfly.output_event(default_output, msg)\nend\n",
    )
    .unwrap();
    let (code, out) = kit(&["-r", r, "test"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("extra: not expected, got true"), "{out}");
    assert!(out.contains("output out, record 2"), "{out}");
    // Renamed, the test no longer has expected records: the old folder is pointed out.
    fs::write(
        &file,
        "tests = { { name = \"renamed\", events = { { a = 1 }, '{\"b\":[1,2]}' } } }\n",
    )
    .unwrap();
    let (code, out) = kit(&["-r", r, "test"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("pass.test.expected/pass_through belongs to no test (a test renamed?"),
        "{out}"
    );
}

#[test]
fn inline_exact_records_are_compared_as_values() {
    let dir = tempfile::tempdir().unwrap();
    let root = clock_root(
        dir.path(),
        "function setup() end\nfunction loop(msg)\n  msg.seen = true\n  dragonfly.output_event(default_output, msg)\nend\n",
    );
    fs::write(
        root.join("tests/inline.test.lua"),
        r#"
tests = {
   { name = "right", events = { { a = 1 }, '{"b":[1,2]}' },
     expect = { outputs = { out = { { a = 1, seen = true }, '{"seen":true,"b":[1,2.0]}' } } } },
   { name = "wrong", shards = 1, events = { { a = 1 } },
     expect = { outputs = { out = { { a = 2, seen = true }, { a = 3 } } } } },
}
"#,
    )
    .unwrap();
    let (code, out) = kit(&["-r", root.to_str().unwrap(), "test"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("test inline.test.lua: \"right\" (1 shard) ... ok"),
        "{out}"
    );
    assert!(
        out.contains("test inline.test.lua: \"right\" (2 shards) ... ok"),
        "{out}"
    );
    assert!(out.contains("a: expected 2, got 1"), "{out}");
    assert!(out.contains("output out: expected 2 records, got 1"), "{out}");
    assert!(out.contains("2 passed; 1 failed"), "{out}");
}

#[test]
fn a_typo_in_a_test_file_is_an_error_not_a_vanished_check() {
    let dir = tempfile::tempdir().unwrap();
    let root = clock_root(dir.path(), ANALYZER_PASS);
    fs::write(
        root.join("tests/typo.test.lua"),
        "tests = { { name = \"t\", events = { { a = 1 } }, expect = { feilds = { out = { [1] = { a = 2 } } } } } }\n",
    )
    .unwrap();
    let (code, out) = kit(&["-r", root.to_str().unwrap(), "test"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("tests[1].expect.feilds: unknown key"), "{out}");
}

/// More shapes of a mistaken test file, each an error that says what is wrong: no test at all
/// (the list's braces forgotten), an empty list of shard counts, a timeout that is no duration.
#[test]
fn a_test_file_that_would_run_nothing_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let root = clock_root(dir.path(), ANALYZER_PASS);
    for (text, says) in [
        ("tests = {}\n", "no test in"),
        (
            "tests = { { name = \"t\", events = { { a = 1 } }, shards = {} } }\n",
            "tests[1].shards: an empty list runs the test nowhere",
        ),
        (
            "tests = { { name = \"t\", events = { { a = 1 } }, timeout = -1 } }\n",
            "tests[1].timeout: must be seconds above 0",
        ),
    ] {
        fs::write(root.join("tests/bad.test.lua"), text).unwrap();
        let (code, out) = kit(&[
            "-r",
            root.to_str().unwrap(),
            "test",
            root.join("tests/bad.test.lua").to_str().unwrap(),
        ]);
        assert_ne!(code, 0, "{text}: {out}");
        assert!(out.contains(says), "{text}: {out}");
    }
}

/// Run from inside a root, `test tests/x.test.lua` finds the root above `tests/` (the relative
/// parent was the empty path: "root:  is not a directory"); two tests of one name are refused
/// (they shared one expected folder).
#[test]
fn relative_test_paths_and_duplicate_names() {
    let dir = tempfile::tempdir().unwrap();
    let root = clock_root(dir.path(), ANALYZER_PASS);
    fs::write(
        root.join("tests/one.test.lua"),
        "tests = { { name = \"one\", shards = 1, events = { { a = 1 } }, expect = { counts = { out = 1 } } } }\n",
    )
    .unwrap();
    let out = Command::new(bin())
        .current_dir(&root)
        .args(["-r", ".", "test", "tests/one.test.lua"])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("test result: ok. 1 passed"), "{text}");
    fs::write(
        root.join("tests/one.test.lua"),
        "tests = { { name = \"same\", events = { { a = 1 } } }, { name = \"same\", events = { { a = 2 } } } }\n",
    )
    .unwrap();
    let (code, out) = kit(&["-r", root.to_str().unwrap(), "test"]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("two tests are named \"same\""), "{out}");
}

/// A value sent to an unknown tag, or an event line that is not JSON, fails the test with the
/// records that say so (the test passed, or failed only on counts); a test that expects them
/// says so with `log`.
#[test]
fn lost_values_and_invalid_lines_fail_a_test_unless_expected() {
    let dir = tempfile::tempdir().unwrap();
    let root = clock_root(
        dir.path(),
        "function setup() end\nfunction loop(msg)\n  dragonfly.analyze_event(\"nosuch\", msg)\n  dragonfly.output_event(default_output, msg)\nend\n",
    );
    fs::write(
        root.join("tests/lost.test.lua"),
        "tests = {\n\
           { name = \"tag\", shards = 1, events = { { a = 1 } } },\n\
           { name = \"tag expected\", shards = 1, events = { { a = 1 } }, expect = { log = { { kind = \"unknown_tag\" } } } },\n\
           { name = \"invalid\", shards = 1, events = { '{\"a\":' }, expect = { log = { { kind = \"unknown_tag\" } } } },\n\
         }\n",
    )
    .unwrap();
    let (code, out) = kit(&["-r", root.to_str().unwrap(), "test"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("test result: FAILED. 1 passed; 2 failed"), "{out}");
    assert!(out.contains("unknown_tag: 1 record(s) in dragonfly-mle.log"), "{out}");
    assert!(out.contains("no analyzer has tag"), "{out}");
    assert!(out.contains("invalid_line: 1 record(s) in dragonfly-mle.log"), "{out}");
}

/// With more events than a batch, a timer due mid-input fires after the batch that passed its
/// time (it fired only once the whole input had been read), and sees its due time (it saw the
/// clock of the last event read).
#[test]
fn a_timer_due_mid_input_fires_at_its_time() {
    let dir = tempfile::tempdir().unwrap();
    let root = clock_root(
        dir.path(),
        r#"
local seen = 0
function setup() end
function loop(msg)
   if msg.timer then
      dragonfly.log_event({ timer_now = os.time(), in_time = (seen >= 10 and seen <= 200), seen = seen })
      return
   end
   seen = seen + 1
   if seen == 1 then dragonfly.timer_event("a", 10, { timer = true }) end
   dragonfly.output_event(default_output, msg)
end
"#,
    );
    fs::write(
        root.join("tests/mid.test.lua"),
        r#"
local ev = {}
for i = 1, 600 do ev[i] = { n = i } end
tests = { {
   name = "mid", shards = 1, clock = 1000, clock_step = 1, events = ev,
   expect = { counts = { out = 600 }, log = { { timer_now = "^1010$", in_time = "^true$" } } },
} }
"#,
    )
    .unwrap();
    let (code, out) = kit(&["-r", root.to_str().unwrap(), "test"]);
    assert_eq!(code, 0, "{out}");
}

/// `expect.redis` checks what the analyzers left in Redis once the run ended (a number
/// against Redis's text of it, a nil reply as absent, a pattern, an integer reply), and
/// `--name` runs only the tests whose name contains the text.
#[test]
fn redis_contents_are_checked_and_tests_run_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let scripts = manifest_dir().join("scripts");
    let file = dir.path().join("redis.test.lua");
    let event = "{ event_type = \"dns\", src_ip = \"10.0.0.1\", dest_ip = \"10.0.0.2\", src_port = 1, dest_port = 53, proto = \"UDP\", dns = { rrname = \"a.example\" } }";
    fs::write(
        &file,
        format!(
            "tests = {{\n\
             {{ name = \"redis right\", root = {root:?}, shards = 1,\n\
               redis = {{ {{ \"SET\", \"count:dns\", \"41\" }}, {{ \"RPUSH\", \"l\", \"a\", \"3\" }} }},\n\
               events = {{ {event} }},\n\
               expect = {{ redis = {{ {{ \"GET\", \"count:dns\", equals = 42 }}, {{ \"GET\", \"count:x\", absent = true }},\n\
                 {{ \"LRANGE\", \"l\", 0, -1, equals = {{ \"a\", 3 }} }}, {{ \"HGETALL\", \"h\", equals = {{}} }},\n\
                 {{ \"EXISTS\", \"count:dns\", equals = 1 }}, {{ \"GET\", \"count:dns\", matches = \"^4%d$\" }} }} }} }},\n\
             {{ name = \"redis wrong\", root = {root:?}, shards = 1, redis = {{ {{ \"SET\", \"z\", \"007\" }} }},\n\
               events = {{ {event} }},\n\
               expect = {{ redis = {{ {{ \"GET\", \"count:dns\", equals = 7 }}, {{ \"GET\", \"count:dns\", absent = true }},\n\
                 {{ \"GET\", \"z\", equals = 7 }} }} }} }},\n\
             }}\n",
            root = scripts.to_str().unwrap()
        ),
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let (code, out) = kit(&["test", path, "--name", "right"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("running 1 test from 1 file") && out.contains("(1 test left out by --name)"),
        "{out}"
    );
    assert!(out.contains("test result: ok. 1 passed; 0 failed"), "{out}");
    let (code, out) = kit(&["test", path]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("redis GET count:dns: expected 7, got 1"), "{out}");
    assert!(out.contains("redis GET count:dns: expected absent, got 1"), "{out}");
    assert!(out.contains("redis GET z: expected 7, got \"007\""), "{out}");
    assert!(out.contains("test result: FAILED. 1 passed; 1 failed"), "{out}");
    let (code, out) = kit(&["test", path, "--name", "nothing like it"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("no test name contains \"nothing like it\" (of 2 tests"),
        "{out}"
    );
    // A check that says nothing is refused, not passed.
    fs::write(&file, format!("tests = {{ {{ name = \"t\", root = {root:?}, events = {{ {event} }}, expect = {{ redis = {{ {{ \"GET\", \"k\" }} }} }} }} }}\n", root = scripts.to_str().unwrap())).unwrap();
    let (code, out) = kit(&["test", path]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("expect.redis[1]") || out.contains("redis[1]"), "{out}");
    assert!(out.contains("say what the reply must be"), "{out}");
}

/// A test name that would make its expected folder `.` or `..` (so `--update` would write into,
/// and clear, the tests folder itself), or that two tests would share once sanitized, is
/// refused before anything runs; so is an `expect.redis` check that is not one clear check.
#[test]
fn names_and_checks_that_would_mislead_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let scripts = manifest_dir().join("scripts");
    let file = dir.path().join("n.test.lua");
    let path = file.to_str().unwrap();
    let event = "{ event_type = \"flow\" }";
    let write = |tests: &str| fs::write(&file, format!("tests = {{ {tests} }}\n")).unwrap();
    let case = |name: &str, extra: &str| {
        format!(
            "{{ name = {name:?}, root = {:?}, shards = 1, events = {{ {event} }}{extra} }},",
            scripts.to_str().unwrap()
        )
    };
    for name in ["..", ".", "..."] {
        write(&case(name, ""));
        let (code, out) = kit(&["test", path, "--update"]);
        assert_eq!(code, 1, "{name}: {out}");
        assert!(out.contains("must hold a letter or a digit"), "{name}: {out}");
    }
    write(&(case("x y", "") + &case("x_y", "")));
    let (code, out) = kit(&["test", path]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("would share the folder of expected files \"x_y\""),
        "{out}"
    );
    for check in [
        "absent = false",
        "exists = 1",
        "matches = 1",
        "equals = 1, matches = \"^nope$\"",
    ] {
        write(&case(
            "r",
            &format!(", expect = {{ redis = {{ {{ \"GET\", \"count:flow\", {check} }} }} }}"),
        ));
        let (code, out) = kit(&["test", path]);
        assert_eq!(code, 1, "{check}: {out}");
        assert!(out.contains("say what the reply must be, once"), "{check}: {out}");
    }
    // Nothing was written next to the test file.
    let left: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["n.test.lua"], "{left:?}");
}

/// Checks that would pass without checking are refused or fail (audit, 2026-12-07): a field
/// check with two checks in it (`{ absent = true, equals = 1 }` passed on `{"i":1}`), a
/// malformed Lua pattern (said as a failed match), an event text with a newline (two events),
/// negative counts, an `each` on an output with no records; a key with dots is found by its
/// name; a repeated key is compared at its last occurrence, as scripts read it; a record
/// dropped from the middle is named, not shown as every later record shifted.
#[test]
fn checks_that_would_pass_without_checking_are_refused_or_fail() {
    let dir = tempfile::tempdir().unwrap();
    let root = clock_root(dir.path(), ANALYZER_PASS);
    let file = dir.path().join("c.test.lua");
    let path = file.to_str().unwrap();
    let run = |events: &str, expect: &str| {
        fs::write(
            &file,
            format!(
                "tests = {{ {{ name = \"c\", root = {root:?}, shards = 1, events = {{ {events} }}, expect = {{ {expect} }} }} }}\n",
                root = root.to_str().unwrap()
            ),
        )
        .unwrap();
        kit(&["test", path])
    };
    let one = r#"'{"i":1,"source.ip":"1.2.3.4","k":1,"k":2}'"#;
    for (expect, says) in [
        (
            "fields = { out = { [1] = { i = { absent = true, equals = 1 } } } }",
            "say what the value must be, once",
        ),
        (
            "fields = { out = { [1] = { i = { exists = true, matches = \"^9$\" } } } }",
            "say what the value must be, once",
        ),
        (
            "fields = { out = { [1] = { i = { equals = 1, nope = 2 } } } }",
            "got nope beside equals",
        ),
        (
            "fields = { out = { [1] = { i = { exists = false } } } }",
            "exists = true (for the opposite: absent = true)",
        ),
        ("counts = { out = -1 }", "a number of records from 0, got -1"),
        ("script_errors = 0.5", "a whole number from 0, got 0.5"),
    ] {
        let (code, out) = run(one, expect);
        assert_eq!(code, 1, "{expect}: {out}");
        assert!(out.contains(says), "{expect}: {out}");
    }
    let (code, out) = run(r#"'{"i":1}\n{"i":2}'"#, "counts = { out = 2 }");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("one event per entry"), "{out}");
    // One trailing newline (a `[[...]]` block's) is no second event.
    let (code, out) = run("[[{\"i\":1}\n]]", "counts = { out = 1 }");
    assert_eq!(code, 0, "{out}");
    let (code, out) = run(one, "fields = { out = { [1] = { i = { matches = \"[\" } } } }");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("the pattern \"[\" is not a Lua pattern"), "{out}");
    // Dots in a name, and the last occurrence of a repeated key.
    let (code, out) = run(
        one,
        "fields = { out = { [1] = { [\"source.ip\"] = \"1.2.3.4\", k = 2 } } }",
    );
    assert_eq!(code, 0, "{out}");
    let (code, out) = run(one, "fields = { out = { [1] = { k = 1 } } }");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("k: expected 1, got 2"), "{out}");
    // `each` over no records.
    let (code, out) = run("", "fields = { out = { each = { i = { exists = true } } } }");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("no records, so its \"each\" checks check nothing"),
        "{out}"
    );
    // A record missing from the middle, and one extra.
    let events = "{ i = 1 }, { i = 2 }, { i = 4 }, { i = 5 }";
    let (code, out) = run(
        events,
        "outputs = { out = { { i = 1 }, { i = 2 }, { i = 3 }, { i = 4 }, { i = 5 } } }",
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("output out: expected record 3 is missing: {\"i\":3}"),
        "{out}"
    );
    assert!(!out.contains("record 4:"), "no shifted comparisons: {out}");
    let (code, out) = run(
        "{ i = 1 }, { i = 9 }, { i = 2 }",
        "outputs = { out = { { i = 1 }, { i = 2 } } }",
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("output out: record 2 was not expected: {\"i\":9}"),
        "{out}"
    );
}

/// A record `dragonfly.log_event("text")` writes as a string (how the original's analyzers
/// log) is matched by a `text` pattern; a positional pattern, which matched nothing and said
/// `no record with 1 ~ ...`, is refused naming the form; a redis check with a misspelt key
/// names that key.
#[test]
fn text_log_records_are_matched_and_misleading_entries_named() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    for d in ["config", "filter", "analyzer"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::write(
        root.join("config/config.lua"),
        "inputs = { { tag = \"eve\", uri = \"file://in.json\", script = \"f.lua\", default_analyzer = \"a\" } }\n\
         analyzers = { { tag = \"a\", script = \"a.lua\", default_analyzer = \"\", default_output = \"out\" } }\n\
         outputs = { { tag = \"out\", uri = \"file://out.json\" } }\n",
    )
    .unwrap();
    fs::write(
        root.join("filter/f.lua"),
        "function setup() end\nfunction loop(msg) dragonfly.analyze_event(default_analyzer, msg) end\n",
    )
    .unwrap();
    fs::write(
        root.join("analyzer/a.lua"),
        "function setup() dragonfly.log_event(\"Loaded 3 lists in 0.1 seconds\") end\nfunction loop(msg) dragonfly.output_event(default_output, msg) end\n",
    )
    .unwrap();
    let file = dir.path().join("t.test.lua");
    let path = file.to_str().unwrap();
    let write = |expect: &str| {
        fs::write(
            &file,
            format!(
                "tests = {{ {{ name = \"t\", root = {:?}, shards = 1, events = {{ {{ event_type = \"flow\" }} }}, expect = {{ {expect} }} }} }}\n",
                root.to_str().unwrap()
            ),
        )
        .unwrap()
    };
    write("log = { { text = \"^Loaded %d lists\" } }");
    let (code, out) = kit(&["test", path]);
    assert_eq!(code, 0, "{out}");
    write("log = { { text = \"^Not logged\" } }");
    let (code, out) = kit(&["test", path]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("log: no record with text ~ \"^Not logged\""), "{out}");
    write("log = { { \"^Loaded\" } }");
    let (code, out) = kit(&["test", path]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("{ text = \"pattern\" }"), "{out}");
    write("redis = { { \"GET\", \"x\", equal = 1 } }");
    let (code, out) = kit(&["test", path]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("unknown setting \"equal\""), "{out}");
}

/// A test whose analyzer never returns fails at its timeout with a message that says what
/// usually causes it and what the engine said last (it said only "did not finish within 3 s").
#[test]
fn a_test_that_hangs_says_why_it_may_have() {
    let dir = tempfile::tempdir().unwrap();
    let root = clock_root(
        dir.path(),
        "function setup() end\nfunction loop(msg) while true do end end\n",
    );
    let file = dir.path().join("hang.test.lua");
    fs::write(
        &file,
        format!(
            "tests = {{ {{ name = \"hang\", root = {root:?}, shards = 1, timeout = 3, events = {{ {{ a = 1 }} }} }} }}\n",
            root = root.to_str().unwrap()
        ),
    )
    .unwrap();
    let (code, out) = kit(&["test", file.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("did not finish within 3 s"), "{out}");
    assert!(out.contains("loop() that never returns"), "{out}");
    assert!(out.contains("test result: FAILED. 0 passed; 1 failed"), "{out}");
}

/// An analyzer whose result depends on other flows' events (a count kept across flows in a Lua
/// table) passes on one shard and fails on two with a hint naming the cause; `shards = 1` in
/// config.lua makes both the engine and its tests run on one worker.
#[test]
fn state_across_flows_fails_on_two_shards_with_a_hint_and_config_shards_pins_one() {
    let env = Env::simple(
        "file://in.json",
        "local seen = 0\nfunction setup() end\nfunction loop(msg)\n   seen = seen + 1\n   msg.seen = seen\n   dragonfly.output_event(default_output, msg)\nend\n",
        "",
        "",
    );
    // Sixteen flows, one event each: on two shards they are split between the workers.
    let events: Vec<String> = (1..=16)
        .map(|i| {
            format!(
                "{{ event_type = \"flow\", src_ip = \"10.0.0.{i}\", src_port = {}, dest_ip = \"10.9.9.9\", dest_port = 443, proto = \"TCP\" }}",
                40000 + i
            )
        })
        .collect();
    let tests = env.root.join("tests");
    fs::create_dir_all(&tests).unwrap();
    fs::write(
        tests.join("seen.test.lua"),
        format!(
            "tests = {{ {{ name = \"counts every flow\", events = {{ {} }},\n\
               expect = {{ fields = {{ out = {{ [16] = {{ seen = 16 }} }} }} }} }} }}\n",
            events.join(", ")
        ),
    )
    .unwrap();
    let root = env.root.to_str().unwrap();
    let (code, out) = kit(&["-r", root, "test"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("\"counts every flow\" (1 shard) ... ok"), "{out}");
    assert!(out.contains("\"counts every flow\" (2 shards) ... FAILED"), "{out}");
    assert!(
        out.contains("(it passed on 1 shard: on 2, flows are split over 2 workers"),
        "{out}"
    );
    assert!(out.contains("`shards = 1` in config.lua"), "{out}");

    // With shards = 1 in config.lua the tests run on one shard only, and pass.
    env.config(&simple_config("file://in.json", "", "shards = 1"));
    let (code, out) = kit(&["-r", root, "test"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("test result: ok. 1 passed; 0 failed"), "{out}");
    assert!(!out.contains("(2 shards)"), "{out}");

    // The engine itself runs config.lua's number (2, not this machine's default); --shards
    // still overrides config.lua.
    env.config(&simple_config("file://in.json", "", "shards = 2"));
    env.write_log("in.json", b"{\"event_type\":\"flow\"}\n");
    let r = env.run(&["-v"]);
    assert!(r.status.success(), "{r:?}");
    assert!(r.stderr.contains(", 2 shard(s),"), "{}", r.stderr);
    let r = env.run(&["-v", "--shards", "3"]);
    assert!(r.status.success(), "{r:?}");
    assert!(r.stderr.contains(", 3 shard(s),"), "{}", r.stderr);
}
