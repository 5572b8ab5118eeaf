//! The script boundary (issue 14) on the real binary: hostile scripts without `pcall` are
//! script errors for their events while the engine goes on, a runaway script meets its
//! memory limit instead of ending the process, and finalizers that call the engine from
//! inside its own calls do no harm.

use serde_json::json;

use crate::util::*;

fn event(i: usize) -> String {
    format!(
        "{{\"i\":{i},\"src_ip\":\"10.0.0.{}\",\"src_port\":{},\"dest_ip\":\"10.1.0.1\",\"dest_port\":80,\"proto\":\"TCP\",\"flow\":{{\"pkts\":{i},\"age\":3}}}}",
        i % 9,
        2000 + i % 9
    )
}

/// Unprotected attacks on event tables: every one is a script error for its event (counted
/// and reported), the others are written unchanged, and the process exits 0.
#[test]
fn hostile_scripts_without_pcall_are_script_errors_not_crashes() {
    let env = Env::new();
    env.config(&simple_config("file://in.json", "", ""));
    env.filter(
        "filter.lua",
        r#"
local prev
local attacks = {
  function(msg) msg[-1] = nil return msg.src_ip end,
  function(msg) msg[-1] = "short" return msg.src_ip end,
  function(msg) msg[-1] = newproxy(false) return msg.proto end,
  function(msg) rawset(msg, -3, 1) return msg.proto end,
  function(msg) local f = msg.flow rawset(f, -2, 0.5) return f.pkts end,
  -- Another event's id (or, on a shard's first event, a number): both forge the field.
  function(msg) msg[-1] = prev and prev[-1] or 7 return msg.src_ip end,
  function(msg) msg[-1] = nil dragonfly.analyze_event(default_analyzer, msg) end,
  function(msg) msg[-1] = nil dragonfly.output_event("out", msg) end,
  function(msg) msg[-4] = 1 end,
  function(msg) setmetatable(msg, {}) end,
}
function setup() end
function loop(msg)
  local k = msg.i % 20
  if msg.i > 0 and k < #attacks then
    attacks[k + 1](msg)
  end
  prev = msg
  dragonfly.analyze_event(default_analyzer, msg)
end
"#,
    );
    env.analyzer("a.lua", ANALYZER_PASS);
    let lines: Vec<String> = (0..400).map(event).collect();
    env.write_log("in.json", &join_lines(&lines));
    let out = env.run(&["--shards", "2"]);
    out.assert_success();
    let attacked: Vec<usize> = (0..400).filter(|i| *i > 0 && i % 20 < 10).collect();
    let s = out.summary();
    assert_eq!(s.script_errors, attacked.len() as u64, "{}", out.stdout);
    // Written in full up to the per-kind limit, the rest counted in `suppressed` records.
    let errors = env.log_records_of("script_error");
    let suppressed: u64 = env.suppressed_count("script_error");
    assert_eq!(errors.len() as u64 + suppressed, attacked.len() as u64);
    assert!(errors.len() <= 2 * 50, "rate-limited per worker: {}", errors.len());
    let tampered = errors
        .iter()
        .filter(|r| {
            r["message"]
                .as_str()
                .unwrap_or("")
                .contains("event table: a reserved field")
        })
        .count();
    let protected = errors
        .iter()
        .filter(|r| {
            r["message"]
                .as_str()
                .unwrap_or("")
                .contains("cannot change a protected metatable")
        })
        .count();
    assert_eq!(tampered + protected, errors.len(), "{errors:?}");
    assert!(tampered > 0 && protected > 0, "{errors:?}");
    let mut want: Vec<Vec<u8>> = (0..400)
        .filter(|i| !attacked.contains(i))
        .map(|i| event(i).into_bytes())
        .collect();
    let mut got = env.lines("out.json");
    want.sort();
    got.sort();
    assert!(got == want, "the events not attacked are written unchanged");
}

/// A script that allocates past `script_memory_mb` gets a script error for that event (the
/// state's garbage is collected), the next events run, and the engine exits 0.
#[test]
fn a_runaway_script_meets_its_memory_limit() {
    let env = Env::new();
    env.config(&simple_config("file://in.json", "", "script_memory_mb = 32"));
    env.filter("filter.lua", FILTER_TO_DEFAULT);
    env.analyzer(
        "a.lua",
        r#"
local hoard = {}
function setup() end
function loop(msg)
  if msg.i % 10 == 3 then
    -- 64 MiB at once: past the limit.
    local s = string.rep("x", 64 * 1024 * 1024)
    msg.len = #s
  elseif msg.i % 10 == 7 then
    -- 40 strings of 1 MiB (distinct, so not interned as one), kept only for this event.
    local t = {}
    for j = 1, 40 do t[j] = string.rep("x", 1024 * 1024 + j) end
    msg.len = #t
  end
  dragonfly.output_event(default_output, msg)
end
"#,
    );
    let lines: Vec<String> = (0..50).map(event).collect();
    env.write_log("in.json", &join_lines(&lines));
    let out = env.run(&[]);
    out.assert_success();
    assert_eq!(out.summary().script_errors, 10, "{}", out.stdout);
    let errors = env.log_records_of("script_error");
    assert!(
        errors
            .iter()
            .all(|r| r["message"].as_str().unwrap_or("").contains("not enough memory")
                && r["message"].as_str().unwrap_or("").contains("script_memory_mb")),
        "{errors:?}"
    );
    assert_eq!(env.lines("out.json").len(), 40);
}

/// Runs `analyzer` behind the pass-through filter on `n` numbered events, on one shard, with
/// `script_memory_mb = mb`; fails unless the run ends with status 0 within 60 s.
fn run_with_memory_limit(mb: u32, analyzer: &str, n: usize) -> (Env, RunOutput) {
    let env = Env::new();
    env.config(&simple_config(
        "file://in.json",
        "",
        &format!("script_memory_mb = {mb}"),
    ));
    env.filter("filter.lua", FILTER_TO_DEFAULT);
    env.analyzer("a.lua", analyzer);
    let lines: Vec<String> = (0..n).map(event).collect();
    env.write_log("in.json", &join_lines(&lines));
    let out = env.spawn(&["--shards", "1"]).wait(std::time::Duration::from_secs(60));
    out.assert_success();
    (env, out)
}

/// A leaking script stops leaking at its limit: its events fail from then on, the process
/// does not grow past it, and it still exits 0.
#[test]
fn a_leaking_script_is_stopped_at_its_limit() {
    let (_env, out) = run_with_memory_limit(
        24,
        r#"
hoard = {}
function setup() end
function loop(msg)
  hoard[#hoard + 1] = string.rep(tostring(msg.i), 262144)
  dragonfly.output_event(default_output, msg)
end
"#,
        200,
    );
    let s = out.summary();
    assert!(s.script_errors > 100, "the leak was stopped: {}", out.stdout);
    assert_eq!(s.written + s.script_errors, 200, "{}", out.stdout);
}

/// A state whose live data fills over half its limit and that makes garbage with each event
/// loses no event: a collection cycle starts before the limit (at Lua's pause of 200 % it
/// started at twice the live heap, past the limit: events failed while there was garbage
/// enough to free, one per cycle).
#[test]
fn a_state_over_half_full_collects_before_its_limit() {
    let (env, out) = run_with_memory_limit(
        16,
        r#"
kept = {}
function setup()
  -- About 10 MiB kept for good.
  for j = 1, 10 do kept[j] = string.rep(string.char(64 + j), 1024 * 1024) end
end
function loop(msg)
  -- About 200 KiB of garbage per event.
  msg.len = #string.rep(tostring(msg.i), 200 * 1024 / #tostring(msg.i))
  dragonfly.output_event(default_output, msg)
end
"#,
        600,
    );
    assert_eq!(out.summary().script_errors, 0, "{}", out.stdout);
    assert_eq!(env.lines("out.json").len(), 600);
}

/// A state full of live data (a flow table grown to the limit) fails each event at once: it
/// was collected whole after every failed event, each taking as long as a full collection
/// (75 events/s with a 16 MiB limit, and a 1 GiB state would take about a second each: an
/// engine that looks hung, deaf to SIGINT). The failures are counted and the run ends.
#[test]
fn a_state_full_of_live_data_fails_its_events_without_collecting_each_time() {
    let (_env, out) = run_with_memory_limit(
        16,
        r#"
hog = {}
local n = 0
function setup() end
function loop(msg)
  -- Every event adds flows that are kept (many small strings, as a flow table holds): the
  -- table reaches the limit and stays there.
  for k = 1, 50 do
    n = n + 1
    hog[n] = "10.0." .. msg.i .. "." .. k .. "|443"
  end
  dragonfly.output_event(default_output, msg)
end
"#,
        10_000,
    );
    let s = out.summary();
    assert!(s.script_errors > 3000, "the state filled up: {}", out.stdout);
    assert_eq!(s.written + s.script_errors, 10_000, "{}", out.stdout);
}

/// Finalizers run during allocations, also inside the engine's own calls (a nested field
/// read, a copy for analyze_event); ones that call the engine must not crash it or disturb
/// the event being processed.
#[test]
fn finalizers_that_call_the_engine_do_no_harm() {
    let env = Env::new();
    env.config(&simple_config("file://in.json", "", ""));
    env.filter(
        "filter.lua",
        r#"
local function arm()
  local p = newproxy(true)
  getmetatable(p).__gc = function()
    dragonfly.log_event({ gc = true })
    dragonfly.output_event("out", { from_gc = true })
  end
end
function setup() end
function loop(msg)
  for _ = 1, 30 do arm() end
  local copy = {}
  for j = 1, 20 do copy[j] = { a = msg.flow.pkts, b = tostring(j) } end
  msg.copy = copy
  dragonfly.analyze_event(default_analyzer, msg)
end
"#,
    );
    env.analyzer(
        "a.lua",
        r#"
function setup() end
function loop(msg)
  local n = 0
  for k, v in pairs(msg) do n = n + 1 end
  dragonfly.output_event(default_output, { i = msg.i, members = n, pkts = msg.flow.pkts })
end
"#,
    );
    let lines: Vec<String> = (0..2000).map(event).collect();
    env.write_log("in.json", &join_lines(&lines));
    let out = env.run(&[]);
    out.assert_success();
    let recs: Vec<serde_json::Value> = env
        .lines("out.json")
        .iter()
        .map(|l| serde_json::from_slice(l).unwrap())
        .filter(|v: &serde_json::Value| v.get("from_gc").is_none())
        .collect();
    assert_eq!(recs.len(), 2000, "{}", out.stdout);
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r["i"], i);
        assert_eq!(r["pkts"], i);
        assert_eq!(r["members"], 8, "{r}");
    }
}

/// An analyzer that passes values to itself (a changed event, an event inside a table, a nested
/// table of it, an event kept from an earlier call, its own timer) gets copies: these crashed
/// the engine (SIGSEGV: the copy's pushes landed among the source's on the one stack).
#[test]
fn an_analyzer_passing_values_to_itself_gets_copies() {
    let env = Env::simple(
        "file://in.json",
        r#"
local kept
function setup() end
function loop(msg)
  if msg.back or msg.pkts then
    local ev = msg.ev or msg
    dragonfly.output_event(default_output, { back = msg.back, i = ev.i, x = ev.x, pkts = msg.pkts })
    return
  end
  if msg.i == 0 then
    kept = msg
    msg.x = 1
    msg.back = 1
    dragonfly.analyze_event("a", msg)
    msg.x = 2
    msg.back = nil
    dragonfly.analyze_event("a", { ev = msg, back = "inside" })
    dragonfly.analyze_event("a", msg.flow)
    dragonfly.timer_event("a", 0, { ev = msg, back = "timer" })
  elseif msg.i == 1 then
    kept.back = "kept"
    dragonfly.analyze_event("a", kept)
  end
end
"#,
        "",
        "",
    );
    let lines: Vec<String> = (0..2).map(event).collect();
    env.write_log("in.json", &join_lines(&lines));
    let out = env.run(&["--shards", "1"]);
    out.assert_success();
    let recs: Vec<serde_json::Value> = env
        .lines("out.json")
        .iter()
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    let has = |f: &dyn Fn(&serde_json::Value) -> bool| recs.iter().any(f);
    // The changed event as it was when passed (x = 1), the table holding it (x = 2 by then),
    // the nested object (its pkts), the timer's copy and the event kept from the first call.
    assert!(has(&|r| r["back"] == 1 && r["x"] == 1 && r["i"] == 0), "{recs:?}");
    for back in ["inside", "timer", "kept"] {
        assert!(
            has(&|r| r["back"] == back && r["x"] == 2 && r["i"] == 0),
            "{back}: {recs:?}"
        );
    }
    assert!(has(&|r| r["pkts"] == 0 && r["i"].is_null()), "{recs:?}");
    assert_eq!(recs.len(), 5, "{recs:?} {}", out.stdout);
}

/// Event tables read their lines in place in the worker's input batches, which stay pinned
/// while a table over them lives (`pins`). An analyzer that keeps every seventh event (the
/// whole event and one of its nested objects) and writes each out, unchanged, 2,000 events
/// later and again at the end, gets the very bytes of the input: its batches stayed until
/// then, or their lines were copied out when the pinned batches passed their bound (1 MiB in
/// test builds, so this run copies them out many times). A batch released too early is
/// overwritten in test builds, which this would show.
#[test]
fn kept_events_read_their_own_bytes_after_their_batches() {
    let env = Env::simple(
        "file://in.json",
        r#"
local kept, flows = {}, {}
function setup() end
function loop(msg)
  local n = msg.n
  if n % 7 == 0 then
    kept[n] = msg
    flows[n] = msg.flow
  end
  local old = kept[n - 2000]
  if old then
    dragonfly.output_event(default_output, old)
    dragonfly.output_event(default_output, { back = n - 2000, ip = old.src_ip, pkts = flows[n - 2000].pkts })
  end
  if n == 29999 then
    for i = 0, 29999, 7 do dragonfly.output_event(default_output, kept[i]) end
  end
end
"#,
        "",
        "",
    );
    let lines: Vec<String> = (0..30000)
        .map(|i| {
            format!(
                r#"{{"event_type":"flow","n":{i},"src_ip":"10.{}.{}.{}","src_port":{},"pad":"{}","flow":{{"pkts":{}}}}}"#,
                i / 65536,
                (i / 256) % 256,
                i % 256,
                1024 + i % 60000,
                "x".repeat(i % 300),
                i * 3
            )
        })
        .collect();
    env.write_log("in.json", &join_lines(&lines));
    let out = env.run(&["--shards", "1"]);
    out.assert_success();
    let got = env.lines("out.json");
    let mut want: Vec<Vec<u8>> = Vec::new();
    for n in 2000..30000usize {
        if (n - 2000) % 7 == 0 {
            let k = n - 2000;
            want.push(lines[k].clone().into_bytes());
            want.push(
                format!(
                    r#"{{"back":{k},"ip":"10.{}.{}.{}","pkts":{}}}"#,
                    k / 65536,
                    (k / 256) % 256,
                    k % 256,
                    k * 3
                )
                .into_bytes(),
            );
        }
    }
    want.extend((0..30000).step_by(7).map(|k| lines[k].clone().into_bytes()));
    let got_sorted: Vec<Vec<u8>> = got
        .iter()
        .map(|l| {
            // The table's members come out in any order: compare them as JSON.
            let v: serde_json::Value = serde_json::from_slice(l).unwrap_or_else(|e| panic!("{e}: {}", show(l)));
            if v.get("back").is_some() {
                format!(r#"{{"back":{},"ip":{},"pkts":{}}}"#, v["back"], v["ip"], v["pkts"]).into_bytes()
            } else {
                l.clone()
            }
        })
        .collect();
    assert!(got_sorted == want, "{}", diff_lines(&want, &got_sorted));
}

/// A timer whose `loop()` passes its value to itself: the calls that follow from one timer are
/// bounded as an input event's are (`hop_limit`), and the engine goes on (the chain ran for
/// ever, the worker reported stuck, none of its records written).
#[test]
fn a_timer_passing_its_value_to_itself_meets_the_hop_limit() {
    let env = Env::simple(
        "file://in.json",
        r#"
function setup() end
function loop(msg)
  if msg.loop then
    msg.n = msg.n + 1
    if msg.n % 1000 == 0 then dragonfly.output_event(default_output, { n = msg.n }) end
    dragonfly.analyze_event("a", msg)
    return
  end
  dragonfly.output_event(default_output, msg)
  if msg.i == 0 then dragonfly.timer_event("a", 0, { loop = true, n = 0 }) end
end
"#,
        "",
        "",
    );
    env.write_log("in.json", &join_lines(&[event(0), event(1), event(2)]));
    let out = env.run(&["--shards", "1"]);
    // The dropped call counts as a loss, as for an input event: exit status 3.
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(out.stdout.contains("1 dropped"), "{}", out.stdout);
    assert_eq!(env.log_records_of("hop_limit").len(), 1, "{:?}", env.log_records());
    // The three events, and the chain's records up to the limit.
    let recs = env.lines("out.json");
    assert_eq!(recs.len(), 3 + 10, "{}", recs.len());
}

/// Finalizers still pending when the states close at the end that call `analyze_event` or
/// `timer_event` do nothing (they panicked: the analyzers were gone, one backtrace per call).
#[test]
fn finalizers_run_at_the_end_that_pass_values_do_nothing() {
    let env = Env::simple(
        "file://in.json",
        r#"
local keep = {}
function setup()
  for i = 1, 50 do
    local p = newproxy(true)
    getmetatable(p).__gc = function()
      dragonfly.analyze_event("a", { from = "gc" })
      dragonfly.timer_event("a", 0, { from = "gc" })
    end
    keep[i] = p
  end
end
function loop(msg) dragonfly.output_event(default_output, msg) end
"#,
        "",
        "",
    );
    env.write_log("in.json", &join_lines(&[event(0), event(1)]));
    let out = env.run(&["--shards", "1"]);
    out.assert_success();
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    assert_eq!(env.lines("out.json").len(), 2);
}

/// A script that stops its collector (`collectgarbage("stop")`) and makes garbage per event
/// does not run into its memory limit: "stop" is ignored.
#[test]
fn collectgarbage_stop_cannot_defeat_the_memory_limit() {
    let env = Env::new();
    env.config(&simple_config("file://in.json", "", "script_memory_mb = 16"));
    env.filter("filter.lua", FILTER_TO_DEFAULT);
    env.analyzer(
        "a.lua",
        r#"
function setup() end
function loop(msg)
  collectgarbage("stop")
  -- 256 KiB of garbage per event: 4,000 events make 1 GiB.
  local s = string.rep(tostring(msg.i), 65536)
  msg.running = collectgarbage("count") > 0
  dragonfly.output_event(default_output, msg)
end
"#,
    );
    let lines: Vec<String> = (0..4000).map(event).collect();
    env.write_log("in.json", &join_lines(&lines));
    let out = env.run(&[]);
    out.assert_success();
    assert_eq!(
        out.summary().script_errors,
        0,
        "{}\n{:?}",
        out.stdout,
        env.log_records_of("script_error")
    );
    assert_eq!(env.lines("out.json").len(), 4000);
}

/// Issue 15 (numbers like the original): non-integers a script computes are written with 14
/// significant digits, as lua-cjson by default, on both output paths and by
/// `cjson_safe.encode`; `encode_number_precision(17)` (or `number_precision = 17` in
/// config.lua) gives the shortest round-trip form; integers stay exact and untouched input
/// bytes are written as they came.
#[test]
fn numbers_are_written_as_the_original_wrote_them() {
    let script = r#"
function setup() end
function loop(msg)
  if msg.i == 2 then cjson_safe.encode_number_precision(17) end
  msg.ratio = 2 / 3
  dragonfly.output_event(default_output, msg)
  local two = { ratio = 2 / 3, big = 2^53 - 1, small = 1e-5 }
  dragonfly.output_event(default_output, two)
  dragonfly.output_event(default_output, { enc = cjson_safe.encode({ 2 / 3 }), prec = cjson_safe.encode_number_precision() })
end
"#;
    let run = |extra: &str| {
        let env = Env::new();
        env.config(&simple_config("file://in.json", "", extra));
        env.filter("filter.lua", FILTER_TO_DEFAULT);
        env.analyzer("a.lua", script);
        env.write_log(
            "in.json",
            b"{\"i\":1,\"kept\":0.6666666666666666}\n{\"i\":2,\"kept\":0.1}\n",
        );
        let out = env.run(&["--shards", "1"]);
        out.assert_success();
        assert_eq!(out.summary().script_errors, 0, "{}", out.stdout);
        env.lines("out.json")
            .into_iter()
            .map(|l| String::from_utf8(l).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        run(""),
        vec![
            r#"{"i":1,"kept":0.6666666666666666,"ratio":0.66666666666667}"#,
            r#"{"big":9007199254740991,"ratio":0.66666666666667,"small":1e-05}"#,
            r#"{"enc":"[0.66666666666667]","prec":14}"#,
            r#"{"i":2,"kept":0.1,"ratio":0.6666666666666666}"#,
            r#"{"big":9007199254740991,"ratio":0.6666666666666666,"small":0.00001}"#,
            r#"{"enc":"[0.6666666666666666]","prec":17}"#,
        ]
    );
    assert_eq!(
        run("number_precision = 17")[0],
        r#"{"i":1,"kept":0.6666666666666666,"ratio":0.6666666666666666}"#
    );
}

/// Issue 15: an error a built-in raises names the script file and line that called it.
#[test]
fn errors_of_built_ins_name_the_calling_line() {
    let env = Env::new();
    env.config(&simple_config("file://in.json", "", ""));
    env.filter("filter.lua", FILTER_TO_DEFAULT);
    env.analyzer(
        "a.lua",
        "function setup() end\nfunction loop(msg)\n  dragonfly.analyze_event({}, msg)\n  return 1\nend\n",
    );
    env.write_log("in.json", b"{\"a\":1}\n");
    let out = env.run(&[]);
    out.assert_success();
    let errors = env.log_records_of("script_error");
    assert_eq!(errors.len(), 1, "{errors:?}");
    let msg = errors[0]["message"].as_str().unwrap();
    assert!(
        msg.ends_with("analyzer/a.lua:3: analyze_event: bad argument #1 (string expected, got table)"),
        "{msg}"
    );
}

/// Issue 15: an analyzer failing on every event writes a bounded log (the first records of
/// the kind in full, then one `suppressed` record with the number left out), while the
/// script error counter stays exact.
#[test]
fn an_error_storm_keeps_the_log_small() {
    let env = Env::new();
    env.config(&simple_config("file://in.json", "", ""));
    env.filter("filter.lua", FILTER_TO_DEFAULT);
    env.analyzer(
        "a.lua",
        "function setup() end\nfunction loop(msg) error(\"boom \" .. msg.i) end\n",
    );
    let lines: Vec<String> = (0..20_000).map(event).collect();
    env.write_log("in.json", &join_lines(&lines));
    let out = env.run(&["--shards", "1"]);
    out.assert_success();
    assert_eq!(out.summary().script_errors, 20_000, "{}", out.stdout);
    let full = env.log_records_of("script_error");
    let suppressed = env.log_records_of("suppressed");
    assert_eq!(full.len(), 50, "the first 50 in full");
    let left_out: u64 = suppressed.iter().map(|r| r["count"].as_u64().unwrap()).sum();
    assert_eq!(full.len() as u64 + left_out, 20_000, "{suppressed:?}");
    assert!(suppressed.iter().all(|r| r["of"] == "script_error"));
    let size = std::fs::metadata(env.log("dragonfly-mle.log")).unwrap().len();
    assert!(size < 64 * 1024, "log of {size} bytes for 20,000 errors");
}

/// Issue 15 (failed events): `on_error` sends an event whose `loop()` raised to a dead-letter
/// output with a `dragonfly_error` member (script, file:line, message), or passes it on as if
/// the call had not failed; the default drops it. Pipelined analyzers too.
#[test]
fn on_error_routes_failed_events() {
    let run = |filter_on_error: &str, analyzer_entry: &str| {
        let env = Env::new();
        env.config(&format!(
            "inputs = {{ {{ tag = \"eve\", uri = \"file://in.json\", script = \"filter.lua\", default_analyzer = \"a\"{filter_on_error} }} }}\n\
             analyzers = {{ {analyzer_entry} }}\n\
             outputs = {{ {{ tag = \"out\", uri = \"file://out.json<\" }}, {{ tag = \"dead\", uri = \"file://dead.json<\" }} }}\n"
        ));
        env.filter(
            "filter.lua",
            "function setup() end\nfunction loop(msg)\n  if msg.i % 5 == 0 then msg.touched = true error(\"filter boom \" .. msg.i) end\n  dragonfly.analyze_event(default_analyzer, msg)\nend\n",
        );
        env.analyzer(
            "a.lua",
            "function setup() end\nfunction loop(msg)\n  if msg.i % 3 == 0 then\n    error(\"boom \" .. msg.i)\n  end\n  dragonfly.output_event(\"out\", msg)\nend\n",
        );
        let lines: Vec<String> = (1..=30).map(event).collect();
        env.write_log("in.json", &join_lines(&lines));
        let out = env.run(&["--shards", "1"]);
        out.assert_success();
        let read = |name: &str| -> Vec<serde_json::Value> {
            env.lines(name)
                .iter()
                .map(|l| serde_json::from_slice(l).unwrap())
                .collect()
        };
        (out.summary(), read("out.json"), read("dead.json"))
    };
    let ids = |v: &[serde_json::Value]| v.iter().map(|r| r["i"].as_u64().unwrap()).collect::<Vec<_>>();
    // Dead letters from the analyzer, the filter's failures dropped (its default).
    for pipeline in ["", ", pipeline = 4"] {
        let (s, out, dead) = run(
            "",
            &format!(
                "{{ tag = \"a\", script = \"a.lua\", default_analyzer = \"\", default_output = \"out\", on_error = \"dead\"{pipeline} }}"
            ),
        );
        assert_eq!(s.script_errors, 6 + 8, "{s:?}");
        assert_eq!(
            ids(&out),
            vec![1, 2, 4, 7, 8, 11, 13, 14, 16, 17, 19, 22, 23, 26, 28, 29]
        );
        assert_eq!(ids(&dead), vec![3, 6, 9, 12, 18, 21, 24, 27], "{pipeline}");
        let e = &dead[0]["dragonfly_error"];
        assert_eq!(e["script"], "a");
        assert_eq!(e["message"], "boom 3");
        assert!(e["where"].as_str().unwrap().ends_with("analyzer/a.lua:4"), "{e}");
        assert_eq!(dead[0]["src_ip"], "10.0.0.3", "the event as loop() got it");
    }
    // The filter passes failed events on (as they were when it raised), the analyzer writes
    // its failed ones to its default output.
    let (s, out, dead) = run(
        ", on_error = \"pass\"",
        "{ tag = \"a\", script = \"a.lua\", default_analyzer = \"\", default_output = \"out\", on_error = \"pass\" }",
    );
    assert_eq!(s.script_errors, 6 + 10, "{s:?}");
    assert_eq!(ids(&out), (1..=30).collect::<Vec<_>>());
    assert!(dead.is_empty());
    assert_eq!(out[4]["touched"], true, "passed on with the filter's changes");
}

/// `on_error = "pass"` does not pass an event a second time when `loop()` had passed it
/// there before it failed (a filter's `analyze_event` to its default analyzer, an analyzer's
/// `output_event` to its default output; pipelined too): every event was written twice. An
/// event passed elsewhere before the failure is still passed on.
#[test]
fn on_error_pass_does_not_pass_an_event_twice() {
    for pipeline in ["", ", pipeline = 4"] {
        let env = Env::new();
        env.config(&format!(
            "inputs = {{ {{ tag = \"eve\", uri = \"file://in.json\", script = \"filter.lua\", default_analyzer = \"a\", on_error = \"pass\" }} }}\n\
             analyzers = {{ {{ tag = \"a\", script = \"a.lua\", default_analyzer = \"\", default_output = \"out\", on_error = \"pass\"{pipeline} }} }}\n\
             outputs = {{ {{ tag = \"out\", uri = \"file://out.json<\" }}, {{ tag = \"other\", uri = \"file://other.json<\" }} }}\n"
        ));
        env.filter(
            "filter.lua",
            "function setup() end\nfunction loop(msg)\n  dragonfly.analyze_event(default_analyzer, msg)\n  if msg.i % 2 == 0 then error(\"after the pass\") end\nend\n",
        );
        env.analyzer(
            "a.lua",
            "function setup() end\nfunction loop(msg)\n  if msg.i % 3 == 0 then dragonfly.output_event(\"other\", msg) error(\"elsewhere\") end\n  dragonfly.output_event(default_output, msg)\n  if msg.i % 5 == 0 then error(\"after the write\") end\nend\n",
        );
        let lines: Vec<String> = (1..=30).map(event).collect();
        env.write_log("in.json", &join_lines(&lines));
        let out = env.run(&["--shards", "1"]);
        out.assert_success();
        let ids: Vec<u64> = env
            .lines("out.json")
            .iter()
            .map(|l| u64_member(l, "i").unwrap())
            .collect();
        assert_eq!(ids, (1..=30).collect::<Vec<_>>(), "{pipeline}: each once, in order");
        assert_eq!(env.lines("other.json").len(), 10, "{pipeline}");
        assert_eq!(
            out.summary().script_errors,
            15 + 10 + 4,
            "{pipeline}: {:?}",
            out.summary()
        );
    }
}

/// A pass that failed (the event could not be written) does not count as passed: `on_error`
/// still tries, and says why it could not either (it was skipped without a word).
#[test]
fn on_error_pass_after_a_failed_pass_still_tries() {
    let env = env_on_error("");
    let cfg = std::fs::read_to_string(env.root.join("config/config.lua")).unwrap();
    env.config(&cfg.replace("on_error = \"\"", "on_error = \"pass\""));
    env.analyzer(
        "a.lua",
        "function setup() end\nfunction loop(msg)\n  msg.f = print\n  dragonfly.output_event(default_output, msg)\nend\n",
    );
    env.write_log("in.json", b"{\"n\":1}\n");
    let out = env.run(&[]);
    out.assert_success();
    assert_eq!(out.summary().script_errors, 1, "{out:?}");
    let recs = env.log_records_of("on_error");
    assert_eq!(recs.len(), 1, "{:?}", env.log_records());
    assert!(
        recs[0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("could not pass the event on"),
        "{recs:?}"
    );
}

/// A failed event that has a `dragonfly_error` member of its own is wrapped in its dead
/// letter (`{"event": ..., "dragonfly_error": ...}`), as a value that is not an object is: the
/// record had the key twice.
#[test]
fn a_dead_letter_keeps_an_events_own_dragonfly_error() {
    let env = env_on_error("out");
    env.analyzer(
        "a.lua",
        "function setup() end\nfunction loop(msg) error(\"boom\") end\n",
    );
    env.write_log("in.json", b"{\"n\":1,\"dragonfly_error\":\"mine\"}\n{\"n\":2}\n");
    let out = env.run(&[]);
    out.assert_success();
    let recs: Vec<serde_json::Value> = env
        .lines("out.json")
        .iter()
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert_eq!(recs.len(), 2);
    assert_eq!(
        recs[0]["event"],
        serde_json::json!({"n": 1, "dragonfly_error": "mine"}),
        "{}",
        recs[0]
    );
    assert_eq!(recs[0]["dragonfly_error"]["message"], "boom", "{}", recs[0]);
    assert_eq!(
        (&recs[1]["n"], &recs[1]["dragonfly_error"]["message"]),
        (&serde_json::json!(2), &serde_json::json!("boom"))
    );
}

/// An error value with a `__tostring` metamethod is reported with its text (as `lua.c` does);
/// one whose `__tostring` fails, or that has none, by its type.
#[test]
fn error_objects_are_reported_through_their_tostring() {
    let env = Env::simple(
        "file://in.json",
        r#"
local described = setmetatable({}, {__tostring = function() return "custom failure" end})
local broken = setmetatable({}, {__tostring = function() error("no text") end})
function setup() end
function loop(msg)
  if msg.n == 0 then error(described) end
  if msg.n == 1 then error(broken) end
  error({})
end
"#,
        "",
        "",
    );
    env.write_log("in.json", b"{\"n\":0}\n{\"n\":1}\n{\"n\":2}\n");
    let out = env.run(&[]);
    out.assert_success();
    assert_eq!(out.summary().script_errors, 3);
    let mut msgs: Vec<String> = env
        .log_records_of("script_error")
        .iter()
        .map(|r| r["message"].as_str().unwrap_or("").to_string())
        .collect();
    msgs.sort();
    assert_eq!(
        msgs,
        [
            "(error object is a table value)",
            "(error object is a table value)",
            "custom failure"
        ],
        "{msgs:?}"
    );
}

/// The simple configuration with `on_error = on_error` on its analyzer `a` (its script not
/// written yet) and a filter handing every event to it.
fn env_on_error(on_error: &str) -> Env {
    let env = Env::new();
    env.config(&simple_config("file://in.json", "", "").replace(
        "default_output = \"out\"",
        &format!("default_output = \"out\", on_error = \"{on_error}\""),
    ));
    env.filter("filter.lua", FILTER_TO_DEFAULT);
    env
}

/// `on_error` names an output that exists.
#[test]
fn on_error_must_name_an_output() {
    let env = env_on_error("nowhere");
    env.analyzer("a.lua", ANALYZER_PASS);
    env.write_log("in.json", b"{\"a\":1}\n");
    let out = env.run(&["check"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        out.stderr
            .contains("analyzers[1].on_error: no output has tag \"nowhere\""),
        "{}",
        out.stderr
    );
}

/// Issue 15: a run that lost events exits with status 3 and a line naming the losses (a
/// missing `file://` input here); a clean run exits 0.
#[test]
fn a_run_that_lost_events_exits_3() {
    let env = Env::new();
    env.config(&simple_config("file://nowhere.json", "", ""));
    env.filter("filter.lua", FILTER_TO_DEFAULT);
    env.analyzer("a.lua", ANALYZER_PASS);
    let out = env.run(&[]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(
        out.stderr.contains("inputs missing or unreadable: eve"),
        "{}",
        out.stderr
    );
    assert_eq!(out.summary().read, 0);
    env.write_log("nowhere.json", b"{\"a\":1}\n");
    env.run(&[]).assert_success();
}

/// A `tail://` path that is a directory opens but cannot be read: it was a `read_error` five
/// times a second with `/health` fine and exit 0. It is an input that cannot be read (reported
/// once, exit 3), and once a file takes its place the file is read.
#[test]
fn a_tail_input_that_is_a_directory_is_unreadable_not_quiet() {
    let env = Env::new();
    env.config(&simple_config("tail://in.json<", "", ""));
    env.filter("filter.lua", FILTER_TO_DEFAULT);
    env.analyzer("a.lua", ANALYZER_PASS);
    std::fs::create_dir(env.log("in.json")).unwrap();
    let mut running = env.spawn(&[]);
    wait_log_message(&env, "is a directory");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    running.signal(libc::SIGTERM);
    let out = running.wait(std::time::Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(
        out.stderr.contains("inputs missing or unreadable: eve"),
        "{}",
        out.stderr
    );
    let reports: Vec<_> = env
        .log_records()
        .into_iter()
        .filter(|r| r["message"].as_str().unwrap_or("").contains("in.json"))
        .collect();
    assert_eq!(reports.len(), 1, "reported once: {reports:?}");
    assert_eq!(reports[0]["kind"], "input_missing", "{reports:?}");

    std::fs::remove_dir(env.log("in.json")).unwrap();
    env.write_log("in.json", b"{\"a\":1}\n");
    let mut running = env.spawn(&[]);
    wait_until(
        std::time::Duration::from_secs(20),
        "the file is read",
        || env.lines("out.json").len() == 1,
        || format!("{:?}", env.log_records()),
    );
    running.signal(libc::SIGTERM);
    let out = running.wait(std::time::Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

/// Runs `env` on events 0..n; the records of `out.json`, all n of them.
fn run_events(env: &Env, n: usize) -> Vec<serde_json::Value> {
    let lines: Vec<String> = (0..n).map(event).collect();
    env.write_log("in.json", &join_lines(&lines));
    let out = env.run(&[]);
    out.assert_success();
    let recs = json_lines(&env.log("out.json"));
    assert_eq!(recs.len(), n, "{}", out.stderr);
    recs
}

/// Values reach an analyzer as the original's `marshal` passed them: a cycle, a table reached
/// twice (one copy, reached twice), a Lua function with its upvalues (a recursive one too),
/// an event table that holds itself; a C function is an error in the sender.
#[test]
fn values_pass_to_analyzers_as_marshal_passed_them() {
    let env = Env::simple(
        "file://in.json",
        "function setup() end\n\
         function loop(msg)\n\
           dragonfly.output_event(default_output, {\n\
             cyc = rawequal(msg.t.self, msg.t), name = msg.t.self.self.name,\n\
             shared = rawequal(msg.v.a, msg.v.b), second = msg.v.b[2],\n\
             add = msg.f(5), fact = msg.fact(5), me = msg.ev.me.i, same_ev = rawequal(msg.ev.me, msg.ev),\n\
             c_err = msg.c_err })\n\
         end\n",
        "",
        "",
    );
    env.filter(
        "filter.lua",
        "function setup() end\n\
         function loop(msg)\n\
           local t = { name = 'x' }; t.self = t\n\
           local s = { 1, 2 }\n\
           local k = 10\n\
           local function fact(n) if n <= 1 then return 1 end return n * fact(n - 1) end\n\
           local _, err = pcall(dragonfly.analyze_event, default_analyzer, { p = print })\n\
           msg.me = msg\n\
           dragonfly.analyze_event(default_analyzer, { t = t, v = { a = s, b = s },\n\
             f = function(x) return x + k end, fact = fact, ev = msg, c_err = tostring(err) })\n\
         end\n",
    );
    let n = 40;
    let recs = run_events(&env, n);
    let mut seen: Vec<u64> = Vec::new();
    for r in &recs {
        assert_eq!(r["cyc"], true, "{r}");
        assert_eq!(r["name"], "x", "{r}");
        assert_eq!(r["shared"], true, "{r}");
        assert_eq!(r["second"], 2, "{r}");
        assert_eq!(r["add"], 15, "{r}");
        assert_eq!(r["fact"], 120, "{r}");
        assert_eq!(r["same_ev"], true, "{r}");
        assert!(
            r["c_err"].as_str().unwrap().contains("cannot pass a function value"),
            "{r}"
        );
        seen.push(r["me"].as_u64().unwrap());
    }
    seen.sort();
    assert_eq!(seen, (0..n as u64).collect::<Vec<_>>());
}

/// The original's `marshal` module: `encode`/`decode`/`clone` keep shared tables and cycles,
/// closures with their upvalues, `cjson_safe.null`, strings with NUL bytes and event tables
/// (as their fields); constants travel as references; C functions and data that is not its
/// own (a foreign string, a function's bytecode altered) are errors, never code.
#[test]
fn marshal_encodes_decodes_and_clones() {
    let env = Env::simple(
        "file://in.json",
        r#"function setup() end
function loop(msg)
  local t = { name = "x", list = { 1, 2, 3 } }; t.self = t
  local k = 10
  local f = function(x) return x + k end
  local c = marshal.clone({ t = t, f = f, n = cjson_safe.null, s = "a\0b" })
  local s = marshal.encode({ v = t, e = msg })
  local d = marshal.decode(s)
  local const = { print }
  local withk = marshal.decode(marshal.encode({ p = print }, const), const)
  local _, err1 = pcall(marshal.encode, print)
  local _, err2 = pcall(marshal.decode, "garbage")
  local fs = marshal.encode(function() return 1 end)
  local altered = fs:sub(1, #fs - 5) .. string.char((fs:byte(#fs - 4) + 1) % 256) .. fs:sub(#fs - 3)
  local _, err3 = pcall(marshal.decode, altered)
  -- Random bytes after the header, and cut or altered encodings: errors, never a crash.
  local seed, failed = msg.i * 7 + 1, 0
  local function rnd(n) seed = (seed * 1103515245 + 12345) % 2147483648 return seed % n end
  for _ = 1, 300 do
    local b = {}
    for j = 1, rnd(40) do b[j] = string.char(("ntfzdsTerFk"):byte(1 + rnd(11)) or 0, rnd(256)) end
    local ok = pcall(marshal.decode, "DFM\1" .. table.concat(b))
    local cut = s:sub(1, rnd(#s))
    local ok2 = pcall(marshal.decode, cut)
    local p = 5 + rnd(#s - 5)
    local ok3 = pcall(marshal.decode, s:sub(1, p - 1) .. string.char(rnd(256)) .. s:sub(p + 1))
    if not (ok and ok2 and ok3) then failed = failed + 1 end
  end
  -- An event table holding itself, a table twice, a function and a number key.
  local shared = { 1 }
  msg.me = msg; msg.p1 = shared; msg.p2 = shared; msg.fn = f; msg[5] = "five"
  local ce = marshal.clone({ msg, msg.flow })
  msg.me = nil
  dragonfly.output_event(default_output, {
    ev_self = rawequal(ce[1].me, ce[1]), ev_shared = rawequal(ce[1].p1, ce[1].p2),
    ev_fn = ce[1].fn(1), ev_five = ce[1][5], ev_flow = rawequal(ce[1].flow, ce[2]),
    fuzz_failed = failed,
    cyc = rawequal(c.t.self, c.t), name = c.t.self.name, third = c.t.list[3],
    add = c.f(5), null = c.n == cjson_safe.null, s_len = #c.s,
    dname = d.v.self.name, ev_i = d.e.i, ev_pkts = d.e.flow.pkts,
    const_ok = withk.p == print, own = marshal.decode(fs)(),
    err1 = err1, err2 = err2, err3 = err3, typ = type(s) })
end
"#,
        "",
        "",
    );
    let n = 20;
    let recs = run_events(&env, n);
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r["cyc"], true, "{r}");
        assert_eq!(r["name"], "x", "{r}");
        assert_eq!(r["third"], 3, "{r}");
        assert_eq!(r["add"], 15, "{r}");
        assert_eq!(r["null"], true, "{r}");
        assert_eq!(r["s_len"], 3, "{r}");
        assert_eq!(r["dname"], "x", "{r}");
        assert_eq!(r["ev_i"], i, "{r}");
        assert_eq!(r["ev_pkts"], i, "{r}");
        assert_eq!(r["const_ok"], true, "{r}");
        assert_eq!(r["own"], 1, "{r}");
        assert_eq!(r["typ"], "string", "{r}");
        assert!(r["fuzz_failed"].as_u64().unwrap() > 0, "{r}");
        assert_eq!(
            (
                &r["ev_self"],
                &r["ev_shared"],
                &r["ev_fn"],
                &r["ev_five"],
                &r["ev_flow"]
            ),
            (&json!(true), &json!(true), &json!(11), &json!("five"), &json!(true)),
            "{r}"
        );
        assert!(r["err1"].as_str().unwrap().contains("invalid value type"), "{r}");
        assert!(
            r["err2"]
                .as_str()
                .unwrap()
                .contains("not data of this engine's marshal.encode"),
            "{r}"
        );
        assert!(r["err3"].as_str().unwrap().contains("is not loaded"), "{r}");
    }
}

/// An event table as `loop()` gets it is the same whichever way the engine made it: by the
/// prelude's `dispatch` (the usual call) or through the C API (kept for `on_error` other
/// than drop, which holds the event under the call). The script looks at the hidden slots,
/// `#`, `next`/`pairs`, writes (new members, a change, a deletion) and nested reads; both
/// runs must write the same bytes, and the hidden slots must read as the engine sets them.
#[test]
fn event_tables_are_alike_from_dispatch_and_from_the_c_api() {
    let script = r#"
function setup() end
function loop(msg)
  local slots = {}
  for k = -6, -1 do slots[#slots + 1] = type(rawget(msg, k)) end
  local n = 0
  for _ in pairs(msg) do n = n + 1 end
  local first = next(msg)
  msg.slots = table.concat(slots, ",")
  msg.len = #msg
  msg.members = n
  msg.first = first
  msg.pkts = msg.flow.pkts
  msg.flow.age = nil
  msg.dest_port = 8080
  local after = {}
  for k in pairs(msg) do after[#after + 1] = k end
  msg.keys = table.concat(after, ",")
  dragonfly.output_event(default_output, msg)
end
"#;
    let run = |on_error: &str| {
        let env = Env::new();
        env.config(&format!(
            "inputs = {{ {{ tag = \"eve\", uri = \"file://in.json\", script = \"filter.lua\", default_analyzer = \"a\" }} }}\n\
             analyzers = {{ {{ tag = \"a\", script = \"a.lua\", default_analyzer = \"\", default_output = \"out\"{on_error} }} }}\n\
             outputs = {{ {{ tag = \"out\", uri = \"file://out.json<\" }} }}\n"
        ));
        env.filter("filter.lua", FILTER_TO_DEFAULT);
        env.analyzer("a.lua", script);
        let lines: Vec<String> = (0..20).map(event).collect();
        env.write_log("in.json", &join_lines(&lines));
        let out = env.run(&["--shards", "1"]);
        out.assert_success();
        assert_eq!(out.summary().script_errors, 0, "{}", out.stdout);
        env.lines("out.json")
    };
    let dispatched = run("");
    let through_c = run(", on_error = \"pass\"");
    assert_eq!(dispatched.len(), 20);
    assert!(dispatched == through_c, "{:?}\n{:?}", dispatched[0], through_c[0]);
    let first: serde_json::Value = serde_json::from_slice(&dispatched[0]).unwrap();
    // -6 ORDER, -5 CACHE, -4 SET, -3 SEAL, -2 SPAN, -1 LINE: a fresh top-level table holds
    // its line and seal only.
    assert_eq!(first["slots"], "nil,nil,nil,number,nil,userdata", "{first}");
    assert_eq!(first["len"], 0);
    assert_eq!(first["members"], 7);
    assert_eq!(first["first"], "i");
    assert_eq!(first["pkts"], 0);
    assert_eq!(first["dest_port"], 8080);
    assert_eq!(first["flow"], json!({ "pkts": 0 }));
    assert_eq!(
        first["keys"],
        "i,src_ip,src_port,dest_ip,dest_port,proto,flow,slots,len,members,first,pkts"
    );
}

/// Nested tables a script read (made by the prelude) leave an unchanged event its bytes, and
/// every change made through them, or to the hidden table that keeps them, is written: a
/// write into one, one swapped for another's (a raw store to a reserved slot), one replaced by
/// a plain table. The filter reads a nested field before passing the event on.
#[test]
fn nested_reads_keep_events_whole_and_changes_through_them_are_written() {
    let env = Env::new();
    env.config(&simple_config("file://in.json", "", ""));
    env.filter(
        "filter.lua",
        "function setup() end\nfunction loop(msg)\n  local p = msg.flow.pkts\n  dragonfly.analyze_event(default_analyzer, msg)\nend\n",
    );
    env.analyzer(
        "a.lua",
        r#"
function setup() end
function loop(msg)
  local mode = msg.i % 4
  local f, t = msg.flow, msg.tcp
  if mode == 1 then
    local c = rawget(msg, -5); c.flow, c.tcp = c.tcp, c.flow
  elseif mode == 2 then
    f.pkts = 99
  elseif mode == 3 then
    local c = rawget(msg, -5); c.flow = { x = 1 }
  end
  dragonfly.output_event(default_output, msg)
end
"#,
    );
    let lines: Vec<String> = (0..8)
        .map(|i| format!("{{\"i\":{i},\"flow\":{{\"pkts\":{i},\"age\":3}},\"tcp\":{{\"syn\":true}}}}"))
        .collect();
    env.write_log("in.json", &join_lines(&lines));
    let out = env.run(&["--shards", "1"]);
    out.assert_success();
    assert_eq!(out.summary().script_errors, 0, "{}", out.stdout);
    let got: Vec<String> = env
        .lines("out.json")
        .iter()
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect();
    let want: Vec<String> = (0..8)
        .map(|i| match i % 4 {
            0 => lines[i].clone(),
            1 => format!("{{\"i\":{i},\"flow\":{{\"syn\":true}},\"tcp\":{{\"pkts\":{i},\"age\":3}}}}"),
            2 => format!("{{\"i\":{i},\"flow\":{{\"pkts\":99,\"age\":3}},\"tcp\":{{\"syn\":true}}}}"),
            _ => format!("{{\"i\":{i},\"flow\":{{\"x\":1}},\"tcp\":{{\"syn\":true}}}}"),
        })
        .collect();
    assert_eq!(got, want);
}

/// Runs `filter` over `lines` into the default analyzer (which does nothing), one shard;
/// the run must succeed with no panic message.
fn filtered(filter: &str, lines: &[String]) -> (Env, RunOutput) {
    let env = Env::new();
    env.config(&simple_config("file://in.json", "", ""));
    env.filter("filter.lua", filter);
    env.analyzer("a.lua", "function setup() end\nfunction loop(msg) end\n");
    env.write_log("in.json", &join_lines(lines));
    let out = env.run(&["--shards", "1"]);
    out.assert_success();
    assert_no_panic(&out);
    (env, out)
}

/// That the engine printed no panic message (a panic caught at the boundary prints one).
fn assert_no_panic(out: &RunOutput) {
    assert!(
        !out.stderr.contains("panicked"),
        "{}",
        &out.stderr[..out.stderr.len().min(2000)]
    );
}

/// Runs `lines` through a filter that hands every event on and the analyzer `analyzer` (one
/// shard, no script error allowed); the lines written.
fn written_through(analyzer: &str, lines: &[String]) -> Vec<String> {
    let env = Env::new();
    env.config(&simple_config("file://in.json", "", ""));
    env.filter("filter.lua", FILTER_TO_DEFAULT);
    env.analyzer("a.lua", analyzer);
    env.write_log("in.json", &join_lines(lines));
    let out = env.run(&["--shards", "1"]);
    out.assert_success();
    assert_eq!(out.summary().script_errors, 0, "{}", out.stdout);
    env.lines("out.json")
        .iter()
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect()
}

/// Changes 600 levels down are written whole, and an event walked down that deep but left
/// unchanged is written as its bytes: each level's nested table (and, in the third event, each
/// level's sibling object read on the way) is looked at once per encoding. Before, the encoder
/// looked for a change below each level again from every level above it, and checked spans the
/// member cache had lost by walking down from the root again: a write 250 levels deep took
/// seconds and one 1,000 levels deep minutes, its worker stuck meanwhile.
#[test]
fn changes_deep_down_an_event_are_written_whole() {
    const DEPTH: usize = 600;
    let analyzer = r#"
function setup() end
function loop(msg)
  local t, d = msg, 0
  while t.a ~= nil do
    t = t.a
    d = d + 1
    if msg.i == 2 then local k = t.s.k end
    if msg.i == 2 and d == 300 then t.z = 1 end
  end
  if msg.i >= 1 then t.y = 2 end
  dragonfly.output_event(default_output, msg)
end
"#;
    // Level k: {"s":{"k":k},"a":<level k+1>}; the last: {"s":{"k":DEPTH},"x":1}.
    let event = |i: usize, z_at: Option<usize>, leaf_y: bool| {
        let mut s = format!("{{\"i\":{i},\"a\":");
        for k in 1..DEPTH {
            s.push_str(&format!("{{\"s\":{{\"k\":{k}}},\"a\":"));
        }
        s.push_str(&format!("{{\"s\":{{\"k\":{DEPTH}}},\"x\":1"));
        if leaf_y {
            s.push_str(",\"y\":2");
        }
        s.push('}');
        for k in (1..DEPTH).rev() {
            if z_at == Some(k) {
                s.push_str(",\"z\":1");
            }
            s.push('}');
        }
        s.push('}');
        s
    };
    let lines = [event(0, None, false), event(1, None, false), event(2, None, false)];
    let got = written_through(analyzer, &lines);
    let want = vec![lines[0].clone(), event(1, None, true), event(2, Some(300), true)];
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert!(g == w, "written:\n{g}\nwanted:\n{w}");
    }
}

/// An array of 2,000 objects read whole (`pairs`) is written as its bytes when unchanged, and
/// with exactly the change when one element was written to or two were swapped: each element
/// is compared with the object it was made from by its hidden fields (before, each element's
/// span was checked by a walk from the line's start, and 20,000 elements took a second).
#[test]
fn arrays_of_objects_read_whole_are_written_as_they_are() {
    const N: usize = 2_000;
    let analyzer = r#"
function setup() end
function loop(msg)
  local a, n = msg.a, 0
  for _, v in pairs(a) do n = n + v.k end
  if msg.i == 1 then a[1000].x = 1 end
  if msg.i == 2 then a[1], a[2] = a[2], a[1] end
  msg.n = n
  dragonfly.output_event(default_output, msg)
end
"#;
    let array = |f: &dyn Fn(usize) -> String| (0..N).map(f).collect::<Vec<_>>().join(",");
    let plain = |k: usize| format!("{{\"k\":{k}}}");
    let sum: usize = (0..N).sum();
    let lines: Vec<String> = (0..3)
        .map(|i| format!("{{\"i\":{i},\"a\":[{}]}}", array(&plain)))
        .collect();
    let got = written_through(analyzer, &lines);
    let changed = array(&|k| {
        if k == 999 {
            format!("{{\"k\":{k},\"x\":1}}")
        } else {
            plain(k)
        }
    });
    let swapped = array(&|k| plain(if k < 2 { 1 - k } else { k }));
    let want = vec![
        format!("{{\"i\":0,\"a\":[{}],\"n\":{sum}}}", array(&plain)),
        format!("{{\"i\":1,\"a\":[{changed}],\"n\":{sum}}}"),
        format!("{{\"i\":2,\"a\":[{swapped}],\"n\":{sum}}}"),
    ];
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert!(g == w, "written:\n{g}\nwanted:\n{w}");
    }
}

/// A script whose state is full to its `script_memory_mb` (setup() allocated until refused)
/// still gets every event and writes it: event tables and nested tables are the engine's
/// allocations, and the JIT compiler, which allocates from the same heap, is off near the
/// limit (a trace recorded at the limit crashed the process). Hot loops, nested reads, in the
/// filter and in the analyzer.
#[test]
fn a_script_full_to_its_memory_limit_still_gets_and_writes_every_event() {
    const FILL: &str = r#"
local tnew = require("table.new")
hog = tnew(200000, 0)
local n = 0
local function add(s) n = n + 1; hog[n] = tnew(s, 0) end
function setup()
  for _, s in ipairs({131072, 16384, 2048, 256, 32, 4, 0}) do
    while pcall(add, s) do end
  end
end
"#;
    for full in ["filter", "analyzer"] {
        let env = Env::new();
        env.config(&simple_config("file://in.json", "", "script_memory_mb = 16"));
        let work = r#"
function loop(msg)
  local s = 0
  for i = 1, 1000 do s = s + i end
  local age = msg.flow.age
  if s > 0 and age == 3 then
    dragonfly.PASS(msg)
  end
end
"#;
        let (filter, analyzer) = if full == "filter" {
            (
                format!(
                    "{FILL}{}",
                    work.replace("dragonfly.PASS(msg)", "dragonfly.analyze_event(default_analyzer, msg)")
                ),
                "function setup() end\nfunction loop(msg) dragonfly.output_event(default_output, msg) end\n"
                    .to_string(),
            )
        } else {
            (
                FILTER_TO_DEFAULT.to_string(),
                format!(
                    "{FILL}{}",
                    work.replace("dragonfly.PASS(msg)", "dragonfly.output_event(default_output, msg)")
                ),
            )
        };
        env.filter("filter.lua", &filter);
        env.analyzer("a.lua", &analyzer);
        let lines: Vec<String> = (0..600).map(event).collect();
        env.write_log("in.json", &join_lines(&lines));
        let out = env.run(&["--shards", "1"]);
        out.assert_success();
        assert_eq!(out.summary().script_errors, 0, "{full}: {}", out.stdout);
        assert_eq!(env.lines("out.json").len(), 600, "{full}: {}", out.stdout);
    }
}

/// A finalizer that reads an event while the engine is inside one of its own calls (here the
/// allocations of `output_event`'s C side run it) gets the field: before,
/// the read found the worker's context in use and panicked (caught at the boundary, the read
/// declined), and stderr got a panic message, with a backtrace under `RUST_BACKTRACE=1`, for
/// each of hundreds of such reads.
#[test]
fn finalizers_read_events_while_the_engine_is_in_a_call() {
    finalizers_check_the_event(
        r#""flow":{"age":2}"#,
        "return cur.flow_id == 7",
        "local ts = msg.timestamp",
    );
}

/// Runs 3,000 events `{"i":N,"flow_id":7,<extra>}` through a filter that reads them with
/// `reads`, writes each and then makes 200 objects whose finalizers run `check(cur)` on the
/// current event (the allocations of the engine's calls run the collector); the last event
/// carries the counts. Asserts no script error, no panic, no failed check and more than 1,000
/// checks made.
fn finalizers_check_the_event(extra: &str, check: &str, reads: &str) {
    let lines: Vec<String> = (0..3000)
        .map(|i| format!("{{\"i\":{i},\"flow_id\":7,{extra}}}"))
        .collect();
    let filter = format!(
        r#"
local cur
local ok, bad = 0, 0
local function check(cur)
  {check}
end
local function mk()
  local p = newproxy(true)
  getmetatable(p).__gc = function()
    if cur then
      if check(cur) then ok = ok + 1 else bad = bad + 1 end
    end
  end
end
function setup() end
function loop(msg)
  cur = msg
  {reads}
  if msg.i == 2999 then msg.ok, msg.bad = ok, bad end
  dragonfly.output_event("out", msg)
  for i = 1, 200 do mk() end
end
"#
    );
    let (env, out) = filtered(&filter, &lines);
    assert_eq!(out.summary().script_errors, 0, "{}", out.stdout);
    assert_no_panic(&out);
    let got = env.lines("out.json");
    assert_eq!(got.len(), 3000);
    let last: serde_json::Value = serde_json::from_slice(&got[2999]).expect("json");
    assert_eq!(last["bad"], 0, "{last}");
    assert!(last["ok"].as_u64().unwrap_or(0) > 1000, "{last}");
}

/// What a script reads is what the event holds while finalizers read other fields of it. The
/// Lua side of every read shares one answer buffer with the FFI lookup, and the collector
/// runs finalizers at the head of compiled traces too: a read of a key whose kind (string,
/// number, object) the read's trace had not seen before left the trace there, and a finalizer
/// that read `flow_id` in between overwrote the answer. (Escaped strings, `e`, are handed
/// out of a buffer a finalizer's read may refill: the stamp covers them too.) Before, 9-21 events of 20,000 per run
/// read 7 (the finalizers' `flow_id`) for another field, or failed with "reserved field
/// forged" at a nested read. The reading function is loaded again every 250 events, so that
/// its traces are made again and again.
#[test]
fn finalizers_reading_an_event_do_not_change_what_the_script_reads() {
    let lines: Vec<String> = (0..20_000)
        .map(|i| {
            let e = "a\\n".repeat(i % 40);
            format!("{{\"i\":{i},\"flow_id\":7,\"s\":\"abc\",\"age\":2,\"flow\":{{\"age\":2}},\"e\":\"{e}\"}}")
        })
        .collect();
    let (env, out) = filtered(
        r#"
local cur
local function mk(i)
  local p = newproxy(true)
  getmetatable(p).__gc = function()
    if cur then local _ = cur.flow_id end
    if cur and i % 8 == 0 then local _ = cur.e end
  end
end
local reader
local code = [=[
local keys = { "s", "age", "flow", "e", "s", "age", "flow", "e" }
return function(m)
  local n = 0
  local e = string.rep("a\n", m.i % 40)
  for j = 1, #keys do
    local v = m[keys[j]]
    if v == "abc" or v == 2 or v == e or (type(v) == "table" and v.age == 2) then n = n + 1 end
  end
  return n == #keys
end
]=]
local wrong = 0
function setup() end
function loop(msg)
  cur = msg
  if msg.i % 250 == 0 then reader = load(code)() end
  if not reader(msg) then wrong = wrong + 1 end
  if msg.i == 19999 then msg.wrong = wrong end
  dragonfly.output_event("out", msg)
  for i = 1, 200 do mk(i) end
end
"#,
        &lines,
    );
    assert_eq!(
        out.summary().script_errors,
        0,
        "{}",
        &out.stderr[..out.stderr.len().min(2000)]
    );
    let got = env.lines("out.json");
    assert_eq!(got.len(), 20_000);
    let last: serde_json::Value = serde_json::from_slice(&got[19_999]).expect("json");
    assert_eq!(last["wrong"], 0, "events that read a wrong value");
}

/// Finalizers that read arrays of an event and walk it with `pairs` while the engine is inside
/// one of its own calls (an allocation of that call ran the collector) get the right values.
/// Before, each such read found the worker's context in use, panicked (caught at the
/// boundary, a panic message on stderr for each) and was declined.
#[test]
fn finalizers_read_arrays_and_walk_events_during_the_engines_calls() {
    finalizers_check_the_event(
        r#""arr":[4,5,{"x":1}],"flow":{"age":2}"#,
        "local n = 0\n  for k, v in pairs(cur) do n = n + 1 end\n  return cur.arr[2] == 5 and cur.arr[3].x == 1 and n == 4",
        "local a = msg.arr\n  local s = 0\n  for k, v in pairs(msg) do s = s + 1 end",
    );
}

/// An error a finalizer raises is counted and reported as a script error of its script
/// (LuaJIT drops it otherwise), and so is a call of `output_event` a finalizer makes while
/// the engine is inside another call, which is not made: each finalizer's record is either
/// written or accounted for by a script error, and no panic message is printed. Before,
/// both were dropped without a count, and each declined call printed a panic message.
#[test]
fn finalizer_errors_and_declined_calls_are_counted_and_reported() {
    let lines: Vec<String> = (0..2000)
        .map(|i| format!("{{\"i\":{i},\"flow\":{{\"age\":2}}}}"))
        .collect();
    let (env, out) = filtered(
        r#"
local made, fins = 0, 0
local function mk()
  made = made + 1
  local id = made
  local p = newproxy(true)
  getmetatable(p).__gc = function()
    fins = fins + 1
    if id % 7 == 0 then error("boom " .. id) end
    dragonfly.output_event("out", { fin = id })
  end
end
function setup() end
function loop(msg)
  for i = 1, 50 do mk() end
  if msg.i == 1999 then
    collectgarbage("collect")
    collectgarbage("collect")
    msg.made, msg.fins = made, fins
  end
  dragonfly.output_event("out", msg)
end
"#,
        &lines,
    );
    let (got, _, made) = finalizer_tally(&env);
    let written = got.iter().filter(|v| v.get("fin").is_some()).count() as u64;
    // Each finalizer either raised (every seventh), wrote its record, or had its call
    // declined: the errors are exactly the raised and the declined ones.
    assert!(
        written < made - made / 7,
        "some calls were made inside the engine's calls"
    );
    assert_eq!(out.summary().script_errors, made - written, "{}", out.stdout);
    // The records (the first ones of each window; the rest are counted in `suppressed`; past
    // 1,024 at once, one record tells how many more there were).
    let errors = env.log_records_of("script_error");
    let msg = |r: &serde_json::Value| r["message"].as_str().unwrap_or("").to_string();
    assert!(!errors.is_empty());
    for r in &errors {
        let m = msg(r);
        assert!(
            m.contains("in a finalizer (__gc): ") || m.contains("more errors in finalizers (__gc) at once"),
            "{r}"
        );
        assert!(
            m.contains(": boom ")
                || m.contains("output_event: not available to a finalizer")
                || m.contains("more errors in finalizers"),
            "{r}"
        );
        assert!(r.get("line").is_none(), "a finalizer's error names no event: {r}");
    }
    let left_out: u64 = env.suppressed_count("script_error");
    assert!(
        errors.len() as u64 + left_out <= made - written,
        "no error reported twice"
    );
}

/// The records of `out.json` of a finalizer test, its last event (`i` 1999, which carries the
/// script's tallies) and the number of finalizers the script made, once every one ran.
fn finalizer_tally(env: &Env) -> (Vec<serde_json::Value>, serde_json::Value, u64) {
    let got = json_lines(&env.log("out.json"));
    let last = got.iter().find(|v| v["i"] == 1999).expect("the last event").clone();
    let made = last["made"].as_u64().expect("made");
    assert_eq!(last["fins"].as_u64(), Some(made), "every finalizer ran: {last}");
    (got, last, made)
}

/// A string read copies only its own bytes while a finalizer reads a long string of the same
/// event in the middle of it. Outside compiled code, reading the answer's pointer allocates,
/// which can run a finalizer: before, the copy then took the pointer of the script's answer
/// and the length of the finalizer's (900 KiB read from a 256-byte buffer, the result thrown
/// away by the stamp check only after the copy), seen as the heap growing by the long
/// string's size during the read. The script turns the compiler off, where that happened on
/// every such read.
#[test]
fn a_string_read_interrupted_by_a_finalizer_copies_only_its_own_bytes() {
    let big = "x".repeat(900 << 10);
    let lines = vec![format!("{{\"e\":\"a\\nb\",\"big\":\"{big}\"}}")];
    let (env, out) = filtered(
        r#"
jit.off()
local cur
local armed, fin_mem = false, 0
local function mk()
  local p = newproxy(true)
  getmetatable(p).__gc = function()
    if cur and armed then
      armed = false
      local b = cur.big
      fin_mem = collectgarbage("count")
    end
  end
end
function setup() end
function loop(msg)
  cur = msg
  local during, over, wrong = 0, 0, 0
  for round = 1, 10 do
    for i = 1, 300 do mk() end
    local junk = string.rep("x", 6e6) .. round
    junk = nil
    for j = 1, 2000 do
      fin_mem = 0
      armed = true
      local v = msg.e
      local after = collectgarbage("count")
      armed = false
      if v ~= "a\nb" then wrong = wrong + 1 end
      if fin_mem ~= 0 then
        during = during + 1
        if after - fin_mem > 512 then over = over + 1 end
      end
    end
  end
  cur = nil
  dragonfly.output_event("out", { during = during, over = over, wrong = wrong })
end
"#,
        &lines,
    );
    assert_eq!(out.summary().script_errors, 0, "{}", out.stdout);
    let got = env.lines("out.json");
    let r: serde_json::Value = serde_json::from_slice(&got[0]).expect("json");
    assert!(
        r["during"].as_u64().unwrap_or(0) > 0,
        "no finalizer read during a read: {r}"
    );
    assert_eq!(
        (&r["over"], &r["wrong"]),
        (&serde_json::json!(0), &serde_json::json!(0)),
        "{r}"
    );
}

/// A finalizer that allocates past `script_memory_mb` gets the same explanation as loop()
/// does; before, the record said only "not enough memory".
#[test]
fn a_finalizer_past_the_memory_limit_is_reported_as_such() {
    let env = Env::new();
    env.config(&simple_config("file://in.json", "", "script_memory_mb = 32"));
    env.filter(
        "filter.lua",
        r#"
function setup() end
function loop(msg)
  if msg.i == 1 then
    local p = newproxy(true)
    getmetatable(p).__gc = function() local s = string.rep("x", 64 * 1024 * 1024) end
    p = nil
    collectgarbage("collect")
  end
  dragonfly.output_event("out", msg)
end
"#,
    );
    env.analyzer("a.lua", "function setup() end\nfunction loop(msg) end\n");
    let lines: Vec<String> = (0..3).map(|i| format!("{{\"i\":{i}}}")).collect();
    env.write_log("in.json", &join_lines(&lines));
    let out = env.run(&["--shards", "1"]);
    out.assert_success();
    assert_eq!(out.summary().script_errors, 1, "{}", out.stdout);
    let r = &env.log_records_of("script_error")[0];
    let m = r["message"].as_str().unwrap_or("");
    assert!(
        m.contains("in a finalizer (__gc): not enough memory") && m.contains("script_memory_mb"),
        "{r}"
    );
    assert_eq!(env.lines("out.json").len(), 3, "the events go on");
}

/// Finalizer errors beyond the ones whose messages are kept until the worker reports them
/// (1,024 at once) are counted all the same: 5,000 raised within one event.
#[test]
fn a_burst_of_finalizer_errors_is_counted_whole() {
    let lines: Vec<String> = (0..3).map(|i| format!("{{\"i\":{i}}}")).collect();
    let (_env, out) = filtered(
        r#"
function setup() end
function loop(msg)
  if msg.i == 1 then
    for i = 1, 5000 do
      local p = newproxy(true)
      getmetatable(p).__gc = function() error("boom " .. i) end
    end
    collectgarbage("collect")
    collectgarbage("collect")
  end
  dragonfly.output_event("out", msg)
end
"#,
        &lines,
    );
    assert_eq!(out.summary().script_errors, 5000, "{}", out.stdout);
}

/// A finalizer that reads the event being read (`__gc` of garbage made per event, run by the
/// allocations of a nested read) neither mixes up the nested tables nor loses what it did.
#[test]
fn finalizers_reading_the_event_during_a_nested_read_do_not_mix_it_up() {
    let line = "{\"flow_id\":1,\"flow\":{\"age\":2},\"dns\":{\"rrname\":\"a.com\"}}";
    let lines: Vec<String> = (0..3000).map(|_| line.to_string()).collect();
    let (env, out) = filtered(
        r#"
local cur
local function mk()
  local p = newproxy(true)
  getmetatable(p).__gc = function() if cur then local _ = cur.dns end end
end
function setup() end
function loop(msg)
  cur = msg
  local f = msg.flow
  cur = nil
  dragonfly.output_event("out", msg)
  for i = 1, 200 do mk() end
end
"#,
        &lines,
    );
    assert_eq!(out.summary().script_errors, 0, "{}", out.stdout);
    let got = env.lines("out.json");
    let wrong = got.iter().filter(|l| l.as_slice() != line.as_bytes()).count();
    assert_eq!((got.len(), wrong), (3000, 0), "every event written as it came");
}

/// A plain table dressed up as a nested event table (its metatable's `__metatable` copied,
/// the hidden fields too) put in the place of one (a raw store to a reserved slot) is not
/// taken for the unchanged original: output_event fails for that event as the C encoder
/// does, and what the script read is not silently replaced by the original bytes. Tampering
/// with the write order or the span before a nested read is refused.
#[test]
fn forged_nested_tables_and_tampered_slots_are_not_taken_for_the_original() {
    let env = Env::new();
    env.config(&simple_config("file://in.json", "", ""));
    env.filter("filter.lua", FILTER_TO_DEFAULT);
    env.analyzer(
        "a.lua",
        r#"
function setup() end
function loop(msg)
  if msg.i == 0 then
    local f = msg.flow
    local fake = setmetatable({ age = "FORGED" }, { __metatable = getmetatable(msg) })
    for _, k in ipairs({ -1, -2, -3 }) do rawset(fake, k, rawget(f, k)) end
    rawset(rawget(msg, -5), "flow", fake)
  elseif msg.i == 1 then
    rawset(msg, -6, 5)
    local _ = msg.flow
  elseif msg.i == 2 then
    rawset(msg, -2, 0)
    local _ = msg.flow
  end
  dragonfly.output_event(default_output, msg)
end
"#,
    );
    let lines: Vec<String> = (0..4).map(event).collect();
    env.write_log("in.json", &join_lines(&lines));
    let out = env.run(&["--shards", "1"]);
    out.assert_success();
    assert_eq!(out.summary().script_errors, 3, "{}", out.stdout);
    let got = env.lines("out.json");
    assert_eq!(got, vec![lines[3].clone().into_bytes()]);
    let errors = env.log_records_of("script_error");
    assert!(
        errors[1..]
            .iter()
            .all(|r| r["message"].as_str().unwrap_or("").contains("reserved field")),
        "{errors:?}"
    );
}

/// Numbers read from events keep their Lua text and arithmetic whatever path the read takes:
/// integers are handed to compiled code as integers (`F_INT`), which must not change what
/// `tostring`, `..` or arithmetic give, at the edges of the 32-bit range, for -0, for integral
/// values written as decimals or exponents, and for numbers that are no 32-bit integer. Each
/// value comes 150 times in a row (read first by the interpreter, then by a compiled trace),
/// then all of them interleaved (the trace's side exits).
#[test]
fn numbers_read_from_events_keep_their_text() {
    // (JSON text, tostring(n), tostring(n * 2), tostring(n / 2)), as LuaJIT formats doubles.
    let cases: &[(&str, &str, &str, &str)] = &[
        ("0", "0", "0", "0"),
        ("-0", "-0", "-0", "-0"),
        ("-0.0", "-0", "-0", "-0"),
        ("1.0", "1", "2", "0.5"),
        ("1e2", "100", "200", "50"),
        ("53", "53", "106", "26.5"),
        ("2147483647", "2147483647", "4294967294", "1073741823.5"),
        ("-2147483648", "-2147483648", "-4294967296", "-1073741824"),
        ("2147483648", "2147483648", "4294967296", "1073741824"),
        ("-2147483649", "-2147483649", "-4294967298", "-1073741824.5"),
        ("1.5", "1.5", "3", "0.75"),
        (
            "12345678901234567",
            "1.2345678901235e+16",
            "2.4691357802469e+16",
            "6.1728394506173e+15",
        ),
        ("1e300", "1e+300", "2e+300", "5e+299"),
    ];
    let analyzer = r#"
function setup() end
function loop(msg)
   local n = msg.n
   msg.s = tostring(n) .. "|" .. tostring(n * 2) .. "|" .. tostring(n / 2) .. "|" .. msg.k .. n
   dragonfly.output_event(default_output, msg)
end
"#;
    let mut lines = Vec::new();
    let mut want = Vec::new();
    let mut add = |i: usize, c: &(&str, &str, &str, &str)| {
        lines.push(format!(r#"{{"event_type":"x","k":"v{i}","n":{}}}"#, c.0));
        want.push(format!("{}|{}|{}|v{i}{}", c.1, c.2, c.3, c.1));
    };
    for (i, c) in cases.iter().enumerate() {
        for _ in 0..150 {
            add(i, c);
        }
    }
    for _ in 0..40 {
        for (i, c) in cases.iter().enumerate() {
            add(i, c);
        }
    }
    let out = written_through(analyzer, &lines);
    assert_eq!(out.len(), want.len());
    let wrong: Vec<String> = out
        .iter()
        .zip(&want)
        .enumerate()
        .filter_map(|(j, (line, want))| {
            let v: serde_json::Value = serde_json::from_str(line).expect("json");
            let got = v["s"].as_str().unwrap_or_default();
            (got != want).then(|| format!("event {j}: {got:?}, want {want:?}"))
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{} wrong, first: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
}

/// Arrays keep their text where a script did not change their elements (audit, 2026-12-06):
/// an array read by the filter of an event it then changed and passed on arrives in the
/// analyzer as read (its object elements over the same line copy as the event, so it is
/// written as it came), and an array changed in place (`table.insert`, an element set, emptied)
/// writes its unchanged elements as their original bytes: numbers keep their text and `[]`
/// stays `[]`. Both failed before (`1.844674407371e+19`, `{}`). An array emptied, or no
/// longer a sequence, is any table.
#[test]
fn arrays_keep_the_text_of_elements_a_script_did_not_change() {
    let filter = r#"
function setup() end
function loop(msg)
   local t, r = msg.t, msg.r
   if t == 2 then table.insert(r, 5)
   elseif t == 3 then r[2] = "x"
   elseif t == 4 then for i = #r, 1, -1 do r[i] = nil end
   elseif t == 5 then r[1].k = 7; table.insert(r[2], 1)
   elseif t == 6 then r.x = 1
   elseif t == 7 then table.remove(r, 1)
   elseif t == 8 then table.insert(r, 1, "new")
   elseif t == 9 then r[3], r[4] = r[4], r[3]
   end
   msg.tag = 1
   dragonfly.output_event("filtered", msg)
   dragonfly.analyze_event(default_analyzer, msg)
end
"#;
    let env = Env::new();
    env.config(
        "inputs = { { tag = \"eve\", uri = \"file://in.json\", script = \"filter.lua\", default_analyzer = \"a\" } }\n\
         analyzers = { { tag = \"a\", script = \"a.lua\", default_analyzer = \"\", default_output = \"out\" } }\n\
         outputs = { { tag = \"out\", uri = \"file://out.json<\" }, { tag = \"filtered\", uri = \"file://filtered.json<\" } }\n",
    );
    env.filter("filter.lua", filter);
    env.analyzer("a.lua", ANALYZER_PASS);
    let arr = r#"[{"k":-2},[],18446744073709551615,1.0000000000000002,[1.50,[]],"a\/b"]"#;
    let input: Vec<String> = (1..=9).map(|t| format!(r#"{{"t":{t},"r":{arr}}}"#)).collect();
    env.write_log("in.json", &join_lines(&input));
    env.run(&["--shards", "1"]).assert_success();
    let want = [
        format!(r#"{{"t":1,"r":{arr},"tag":1}}"#),
        r#"{"t":2,"r":[{"k":-2},[],18446744073709551615,1.0000000000000002,[1.50,[]],"a\/b",5],"tag":1}"#.to_string(),
        r#"{"t":3,"r":[{"k":-2},"x",18446744073709551615,1.0000000000000002,[1.50,[]],"a\/b"],"tag":1}"#.to_string(),
        // Emptied: an empty table, as lua-cjson writes one.
        r#"{"t":4,"r":{},"tag":1}"#.to_string(),
        r#"{"t":5,"r":[{"k":7},[1],18446744073709551615,1.0000000000000002,[1.50,[]],"a\/b"],"tag":1}"#.to_string(),
        // No longer a sequence: written as any table (an object, string keys before number
        // keys).
        r#"{"t":6,"r":{"x":1,"1":{"k":-2},"2":{},"3":1.844674407371e+19,"4":1,"5":[1.5,{}],"6":"a/b"},"tag":1}"#
            .to_string(),
        // Elements moved by a removal, an insertion or a swap keep their text too.
        r#"{"t":7,"r":[[],18446744073709551615,1.0000000000000002,[1.50,[]],"a\/b"],"tag":1}"#.to_string(),
        r#"{"t":8,"r":["new",{"k":-2},[],18446744073709551615,1.0000000000000002,[1.50,[]],"a\/b"],"tag":1}"#
            .to_string(),
        r#"{"t":9,"r":[{"k":-2},[],1.0000000000000002,18446744073709551615,[1.50,[]],"a\/b"],"tag":1}"#.to_string(),
    ];
    for file in ["filtered.json", "out.json"] {
        let got: Vec<String> = env
            .lines(file)
            .iter()
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect();
        assert_eq!(got, want, "{file}");
    }
}

/// `cjson_safe.encode` works in a finalizer that the collector runs in the middle of the
/// script's own `encode` (its result pushed: an allocation, which can run a collection step).
/// The encoder's scratch buffer was then in use, and the finalizer's call raised `encode:
/// called from inside itself` (an audit saw 620 of them); now a nested call encodes with a
/// buffer of its own.
#[test]
fn cjson_encode_works_in_a_finalizer_run_during_an_encode() {
    let lines: Vec<String> = (0..2000).map(|i| format!("{{\"i\":{i}}}")).collect();
    let (env, out) = filtered(
        r#"
local made, fins, ok, bad = 0, 0, 0, 0
local function mk()
  made = made + 1
  local id = made
  local p = newproxy(true)
  getmetatable(p).__gc = function()
    fins = fins + 1
    local s = cjson_safe.encode({ fin = id, pad = "finalizer" })
    if s == '{"fin":' .. id .. ',"pad":"finalizer"}' or s == '{"pad":"finalizer","fin":' .. id .. '}' then
      ok = ok + 1
    else
      bad = bad + 1
    end
  end
end
local big = {}
for i = 1, 64 do big[i] = string.rep("x", 40) .. i end
function setup() end
function loop(msg)
  for i = 1, 40 do
    mk()
    local s = cjson_safe.encode(big)
    if type(s) ~= "string" then error("the script's own encode failed: " .. tostring(s)) end
  end
  if msg.i == 1999 then
    collectgarbage("collect")
    collectgarbage("collect")
    msg.made, msg.fins, msg.ok, msg.bad = made, fins, ok, bad
    dragonfly.output_event("out", msg)
  end
end
"#,
        &lines,
    );
    let (_, last, made) = finalizer_tally(&env);
    assert_eq!(last["bad"].as_u64(), Some(0), "{last}");
    assert_eq!(last["ok"].as_u64(), Some(made), "{last}");
    let errors = env.log_records_of("script_error");
    assert!(errors.is_empty(), "{:?}", &errors[..errors.len().min(3)]);
    assert_eq!(out.summary().script_errors, 0, "{}", out.stdout);
}
