//! Native Redis-ML through the engine: `ML.*` commands sent with `hiredis` (plain, pipelined,
//! append/get_reply) answered in-process next to a real `redis-server`, the direct
//! `dragonfly.ml` API, the scikit-learn fixtures, and the shipped DGA detector.

use std::fs;

use serde_json::Value;

use crate::hiredis::RedisServer;
use crate::util::*;

/// Predictions are compared exactly, so numbers are written to read back exactly (14
/// significant digits is the default).
fn redis_config(port: u16, extra: &str) -> String {
    format!(
        "number_precision = 17\nredis_host = \"127.0.0.1\"\nredis_port = {port}\n{}",
        simple_config("file://in.json", "", extra)
    )
}

/// Runs `args` lists through `conn:command` (one event each) and returns the replies as JSON.
const COMMANDS: &str = r#"
local conn
function setup() conn = assert(hiredis.connect()) end
function loop(msg)
  local r, err = conn:command(unpack(msg.args))
  dragonfly.output_event(default_output, { reply = r, err = err })
end
"#;

fn run_commands(extra: &str, cmds: &[&[&str]]) -> Vec<Value> {
    let redis = RedisServer::start();
    let env = Env::new();
    env.config(&redis_config(redis.port, extra));
    env.filter("filter.lua", FILTER_TO_DEFAULT);
    env.analyzer("a.lua", COMMANDS);
    let lines: Vec<String> = cmds
        .iter()
        .map(|c| serde_json::json!({ "args": c }).to_string())
        .collect();
    env.write_log("in.json", &join_lines(&lines));
    env.run(&["--shards", "1"]).assert_success();
    let out = json_lines(&env.log("out.json"));
    assert_eq!(out.len(), cmds.len());
    out.into_iter().map(|v| v["reply"].clone()).collect()
}

#[test]
fn ml_commands_are_answered_in_process_through_hiredis() {
    let ok = || serde_json::json!({"name": "OK", "type": 5});
    let replies = run_commands(
        "",
        &[
            &["ML.LINREG.SET", "l", "2", "3", "4", "5"],
            &["ml.linreg.predict", "l", "1", "1", "1"],
            &["ML.LOGREG.SET", "g", "0", "2", "2"],
            &["ML.LOGREG.PREDICT", "g", "-3", "1"],
            &["ML.MATRIX.SET", "a", "2", "3", "1", "2", "5", "3", "4", "6"],
            &["ML.MATRIX.SET", "b", "3", "2", "1", "2", "3", "4", "7", "1"],
            &["ML.MATRIX.MULTIPLY", "a", "b", "ab"],
            &["ML.MATRIX.GET", "ab"],
            &["ML.KMEANS.SET", "k", "2", "3", "1", "1", "2", "2", "5", "4"],
            &["ML.KMEANS.PREDICT", "k", "1", "3", "5"],
            &[
                "ML.FOREST.ADD",
                "f",
                "0",
                ".",
                "NUMERIC",
                "1",
                "0.1",
                ".l",
                "LEAF",
                "1",
                ".r",
                "LEAF",
                "0",
            ],
            &["ML.FOREST.RUN", "f", "1:0.01", "CLASSIFICATION"],
            &["ML.FOREST.RUN", "f", "1:0.2"],
            &["ML.FOREST.RUN", "nokey", "1:0.2"],
            // A new tree with a split lacking a child: the error, and the key is gone.
            &["ML.FOREST.ADD", "f", "1", ".", "NUMERIC", "1", "0.1", ".l", "LEAF", "1"],
            &["ML.FOREST.RUN", "f", "1:0.2"],
            // Not an ML command: Redis itself answers.
            &["SET", "x", "1"],
            &["EXISTS", "l"],
        ],
    );
    let want = serde_json::json!([
        ok(), "14", ok(), "0.017986209962091559", ok(), ok(), ok(),
        [2, 2, "42", "15", "57", "28"], ok(), 1, ok(), "1", "0",
        {"name": "WRONGTYPE Operation against a key holding the wrong kind of value", "type": 6},
        {"name": "ERR Tree contains null nodes", "type": 6},
        {"name": "WRONGTYPE Operation against a key holding the wrong kind of value", "type": 6},
        ok(),
        // Models live in the engine, not in Redis.
        0
    ]);
    assert_eq!(Value::Array(replies), want);
}

/// Models are Redis-ML keys to the commands that remove keys: `DEL`/`UNLINK` of a model's key
/// and `FLUSHDB` take the model too (a forest loaded again after a `DEL` is new, not the old
/// one's leftovers); LINREG and LOGREG are one type, as in Redis-ML.
#[test]
fn commands_that_remove_keys_remove_models_and_regressions_are_one_type() {
    let ok = || serde_json::json!({"name": "OK", "type": 5});
    let wrong =
        || serde_json::json!({"name": "WRONGTYPE Operation against a key holding the wrong kind of value", "type": 6});
    let replies = run_commands(
        "",
        &[
            &["ML.FOREST.ADD", "d", "0", ".", "LEAF", "1"],
            &["ML.FOREST.ADD", "d", "1", ".", "LEAF", "0"],
            &["ML.FOREST.RUN", "d", "1:0", "REGRESSION"],
            &["DEL", "d"],
            &["ML.FOREST.RUN", "d", "1:0", "REGRESSION"],
            &["ML.FOREST.ADD", "d", "0", ".", "LEAF", "1"],
            &["ML.FOREST.RUN", "d", "1:0", "REGRESSION"],
            &["unlink", "x", "d"],
            &["ML.FOREST.RUN", "d", "1:0"],
            // Either SET makes a model both PREDICTs read.
            &["ML.LOGREG.SET", "g", "0", "2", "2"],
            &["ML.LINREG.PREDICT", "g", "-3", "1"],
            &["ML.LINREG.SET", "h", "0", "2", "2"],
            &["ML.LOGREG.PREDICT", "h", "-3", "1"],
            &["ML.LOGREG.SET", "h", "1", "1"],
            &["ML.LINREG.PREDICT", "h", "2"],
            &["ML.MATRIX.SET", "m", "1", "1", "5"],
            &["ML.LINREG.SET", "m", "0", "1"],
            &["FLUSHDB"],
            &["ML.LINREG.PREDICT", "g", "1"],
            &["ML.MATRIX.GET", "m"],
        ],
    );
    let want = serde_json::json!([
        ok(),
        ok(),
        "0.5",
        0,
        wrong(),
        ok(),
        "1",
        0,
        wrong(),
        ok(),
        "-4",
        ok(),
        "0.017986209962091559",
        ok(),
        "3",
        ok(),
        wrong(),
        ok(),
        wrong(),
        wrong()
    ]);
    assert_eq!(Value::Array(replies), want);
}

#[test]
fn redis_ml_redis_sends_ml_commands_to_redis() {
    let replies = run_commands("redis_ml = \"redis\"", &[&["ML.LINREG.SET", "l", "2", "3"]]);
    let name = replies[0]["name"].as_str().unwrap_or_default().to_string();
    assert!(name.starts_with("ERR unknown command 'ML.LINREG.SET'"), "{replies:?}");
}

#[test]
fn ml_replies_keep_their_place_among_redis_replies() {
    let redis = RedisServer::start();
    let analyzer = r#"
local conn
function setup()
  conn = assert(hiredis.connect())
  assert(conn:command("ML.LINREG.SET", "lin", 1, 2) == hiredis.OK)
end
function loop(msg)
  -- append_command / get_reply: the in-process reply comes back between the two INCRs.
  conn:append_command("INCR", "n")
  conn:append_command("ML.LINREG.PREDICT", "lin", msg.x)
  conn:append_command("INCR", "n")
  local a, b, c = conn:get_reply(), conn:get_reply(), conn:get_reply()
  -- Through a pipelined coroutine too (pipeline = 8): Redis and ML commands interleaved.
  local d = conn:command("INCR", "m")
  local e = conn:command("ML.LINREG.PREDICT", "lin", msg.x)
  local f = conn:command_line("ML.LINREG.PREDICT lin " .. msg.x)
  dragonfly.output_event(default_output, { x = msg.x, r = { a, b, c, d, e, f } })
end
"#;
    let env = Env::new();
    env.config(
        &redis_config(redis.port, "").replace("default_output = \"out\"", "default_output = \"out\", pipeline = 8"),
    );
    env.filter("filter.lua", FILTER_TO_DEFAULT);
    env.analyzer("a.lua", analyzer);
    let lines: Vec<String> = (0..50).map(|i| format!("{{\"x\":{i}}}")).collect();
    env.write_log("in.json", &join_lines(&lines));
    env.run(&["--shards", "1"]).assert_success();
    let out = json_lines(&env.log("out.json"));
    assert_eq!(out.len(), 50);
    for (i, v) in out.iter().enumerate() {
        let y = format!("{}", 1 + 2 * i);
        let want = serde_json::json!([2 * i + 1, y, 2 * i + 2, i + 1, y, y]);
        assert_eq!(v["r"], want, "event {i}: {v}");
    }
    assert_eq!(redis.cli(&["GET", "n"]), "100");
    let stats = env.stats_records();
    let last = stats.last().expect("a stats line");
    // 1 SET + 3 per event.
    assert_eq!(last["ml"]["calls"], 151, "{last}");
    assert_eq!(last["ml"]["errors"], 0, "{last}");
}

#[test]
fn direct_api() {
    let env = Env::simple(
        "file://in.json",
        r#"
local ml = dragonfly.ml
local r = {}
function setup()
  r.lin = { ml.linreg_set("l", 2, {3, 4, 5}), ml.linreg_predict("l", {1, 1, 1}) }
  r.log = { ml.logreg_set("g", 0, {2, 2}), ml.logreg_predict("g", {-3, 1}) }
  r.km = { ml.kmeans_set("k", 2, 3, {1, 1, 2, 2, 5, 4}), ml.kmeans_predict("k", {1, 3, 5}) }
  r.mx = { ml.matrix_set("a", 2, 3, {1, 2, 5, 3, 4, 6}), ml.matrix_set("b", 3, 2, {1, 2, 3, 4, 7, 1}),
           ml.matrix_multiply("a", "b", "ab"), ml.matrix_add("ab", "ab", "s"), ml.matrix_scale("s", 0.5) }
  local n, m, e = ml.matrix_get("s")
  r.get = { n, m, e }
  r.fa = { ml.forest_add("f", 0, ". NUMERIC x 0.5 .l LEAF 10", ".r NUMERIC 2 3 .rl LEAF 20 .rr LEAF 30") }
  r.runs = { ml.forest_run("f", { x = 0.1 }, "REGRESSION"), ml.forest_run("f", { x = 1, [2] = 3 }, "REGRESSION"),
             ml.forest_run("f", { x = "1", [2] = 4 }, "REGRESSION"), ml.forest_run("f", {}, "CLASSIFICATION") }
  -- Changing the forest changes its layout: the cached layout is refreshed.
  ml.forest_add("f", 1, ". NUMERIC y 0 .l LEAF 0 .r LEAF 100")
  r.after = ml.forest_run("f", { x = 0.1, y = 1 }, "REGRESSION")
  r.wrong = { ml.forest_run("l", {}, "REGRESSION") }
  r.missing = { ml.logreg_predict("nokey", {1}) }
  r.mode = { ml.forest_run("f", {}, "regression") }
  r.bad = { pcall(ml.logreg_predict, "g", {1, "x"}) }
  r.cmd = ml.command("ML.LINREG.PREDICT", "l", 1, 1, 1)
  r.deleted = { ml.delete("l"), ml.delete("l") }
  dragonfly.log_event(r)
end
function loop(msg) end
"#,
        "",
        // Predictions are compared exactly: numbers written to read back.
        "number_precision = 17",
    );
    env.write_log("in.json", b"");
    env.run(&[]).assert_success();
    let r = env
        .log_records()
        .into_iter()
        .find(|r| r.get("lin").is_some())
        .expect("the setup record");
    let want = serde_json::json!({
        "lin": [true, 14], "log": [true, 0.01798620996209156], "km": [true, 1],
        "mx": [true, true, true, true, true], "get": [2, 2, [42, 15, 57, 28]],
        "fa": [true], "runs": [10, 20, 30, 10], "after": 55,
        "wrong": [null, "WRONGTYPE Operation against a key holding the wrong kind of value"],
        "missing": [null, "WRONGTYPE Operation against a key holding the wrong kind of value"],
        "mode": [null, "ERR unknown mode 'regression' (CLASSIFICATION or REGRESSION)"],
        "bad": [false, "logreg_predict: bad argument #2 (element 2 is not a number)"],
        "cmd": "14", "deleted": [true, false],
    });
    for (k, v) in want.as_object().unwrap() {
        assert_eq!(&r[k], v, "field {k} of {r}");
    }
}

/// Scores the scikit-learn regression fixture through both paths in one analyzer.
#[test]
fn sklearn_forest_through_hiredis_and_direct_api() {
    let redis = RedisServer::start();
    let env = Env::new();
    env.config(&redis_config(redis.port, ""));
    env.filter("filter.lua", FILTER_TO_DEFAULT);
    let model = manifest_dir().join("tests/fixtures/ml/reg.model");
    env.analyzer(
        "a.lua",
        &format!(
            r#"
local conn
function setup()
  conn = assert(hiredis.connect())
  for line in io.lines("{}") do
    local r = conn:command_line("ML.FOREST.ADD " .. line)
    assert(r == hiredis.OK, r.name)
  end
end
function loop(msg)
  local f = {{}}
  for k, v in string.gmatch(msg.sample, "(%d+):([^,]+)") do f[tonumber(k)] = tonumber(v) end
  msg.direct = dragonfly.ml.forest_run("reg", f, "REGRESSION")
  msg.command = conn:command("ML.FOREST.RUN", "reg", msg.sample, "REGRESSION")
  dragonfly.output_event(default_output, msg)
end
"#,
            model.display()
        ),
    );
    let text = fs::read_to_string(manifest_dir().join("tests/fixtures/ml/reg.samples")).unwrap();
    let lines: Vec<String> = text
        .lines()
        .map(|l| {
            let (s, e) = l.split_once('\t').unwrap();
            serde_json::json!({ "sample": s, "expected": e }).to_string()
        })
        .collect();
    env.write_log("in.json", &join_lines(&lines));
    env.run(&["--shards", "2"]).assert_success();
    let out = json_lines(&env.log("out.json"));
    assert_eq!(out.len(), 1000);
    for v in &out {
        let want: f64 = v["expected"].as_str().unwrap().parse().unwrap();
        let direct = v["direct"].as_f64().expect("a direct score");
        let command: f64 = v["command"].as_str().expect("a bulk string").parse().unwrap();
        assert!((direct - want).abs() < 1e-9, "{v}");
        assert_eq!(direct, command, "{v}");
    }
}

/// The shipped DGA detector: features computed in Lua equal the training script's, and the
/// native and hiredis analyzers give the same scores, equal to the exported forest's.
#[test]
fn shipped_dga_detector() {
    let scripts = manifest_dir().join("scripts");
    let tsv = fs::read_to_string(scripts.join("analyzer/dga/features.tsv")).unwrap();
    let mut rows = tsv.lines();
    let header: Vec<&str> = rows.next().unwrap().split('\t').collect();
    let rows: Vec<Vec<&str>> = rows.map(|r| r.split('\t').collect()).collect();
    assert!(rows.len() >= 100);
    let events: Vec<String> = rows
        .iter()
        .map(|r| serde_json::json!({"event_type": "dns", "dns": {"rrname": r[0]}}).to_string())
        .collect();

    let redis = RedisServer::start();
    let mut scores = Vec::new();
    for script in ["dga-score.lua", "dga-score-redis.lua"] {
        let env = Env::new();
        env.config(&redis_config(redis.port, ""));
        env.filter("filter.lua", FILTER_TO_DEFAULT);
        fs::create_dir_all(env.root.join("analyzer/dga")).unwrap();
        for f in ["dga-rf.model", "features.lua"] {
            fs::copy(
                scripts.join("analyzer/dga").join(f),
                env.root.join("analyzer/dga").join(f),
            )
            .unwrap();
        }
        fs::copy(scripts.join("analyzer").join(script), env.root.join("analyzer/a.lua")).unwrap();
        env.write_log("in.json", &join_lines(&events));
        env.run(&["--shards", "2"]).assert_success();
        let out = json_lines(&env.log("out.json"));
        assert_eq!(out.len(), rows.len(), "{script}");
        let s: Vec<f64> = out
            .iter()
            .map(|v| {
                v["dga_score"]
                    .as_f64()
                    .unwrap_or_else(|| panic!("{script}: no score in {v}"))
            })
            .collect();
        scores.push(s);
    }
    assert_eq!(scores[0], scores[1], "native and hiredis scores differ");
    let score_col = header.iter().position(|h| *h == "score").expect("a score column");
    for (r, s) in rows.iter().zip(&scores[0]) {
        let want: f64 = r[score_col].parse().unwrap();
        assert!((s - want).abs() < 1e-12, "{}: engine {s}, training script {want}", r[0]);
    }

    // The Lua features against the Python ones, bit for bit (numbers written to read back).
    let env = Env::new();
    env.config(&simple_config("file://in.json", "", "number_precision = 17"));
    env.filter("filter.lua", FILTER_TO_DEFAULT);
    fs::create_dir_all(env.root.join("analyzer/dga")).unwrap();
    fs::copy(
        scripts.join("analyzer/dga/features.lua"),
        env.root.join("analyzer/dga/features.lua"),
    )
    .unwrap();
    env.analyzer(
        "a.lua",
        r#"
local features = require 'analyzer/dga/features'
function setup() end
function loop(msg)
  local f = features.extract(msg.dns.rrname)
  local out = {}
  for i, name in ipairs(features.NAMES) do out[i] = string.format("%.17g", f[name]) end
  dragonfly.output_event(default_output, { f = out })
end
"#,
    );
    env.write_log("in.json", &join_lines(&events));
    env.run(&[]).assert_success();
    let out = json_lines(&env.log("out.json"));
    for (r, v) in rows.iter().zip(&out) {
        let got = v["f"].as_array().unwrap();
        for (i, name) in header[1..score_col].iter().enumerate() {
            let want: f64 = r[i + 1].parse().unwrap();
            let g: f64 = got[i].as_str().unwrap().parse().unwrap();
            assert_eq!(g, want, "{} feature {name}", r[0]);
        }
    }
}

/// Two workers re-add a forest while predicting with it: every score comes from one whole
/// version (all leaves of version v are v), none is missing.
#[test]
fn concurrent_add_while_workers_run() {
    let env = Env::simple(
        "file://in.json",
        r#"
local ml = dragonfly.ml
local function add(v)
  assert(ml.forest_add("cc", 0, ". NUMERIC a 0.5 .l NUMERIC b 0.5 .ll LEAF " .. v .. " .lr LEAF " .. v,
                       ".r NUMERIC c 0.5 .rl LEAF " .. v .. " .rr LEAF " .. v))
end
function setup() add(1) end
function loop(msg)
  if msg.i % 7 == 0 then add(msg.i % 2 + 1) end
  msg.score = ml.forest_run("cc", { a = msg.i % 3 / 2, b = 0.2, c = 0.9 }, "REGRESSION")
  dragonfly.output_event(default_output, msg)
end
"#,
        "",
        "",
    );
    let n = 20_000;
    let lines: Vec<String> = (0..n).map(|i| format!("{{\"i\":{i},\"src_ip\":\"10.0.0.{}\",\"dest_ip\":\"10.0.1.1\",\"src_port\":{},\"dest_port\":80,\"proto\":\"TCP\"}}", i % 250, 1000 + i % 97)).collect();
    env.write_log("in.json", &join_lines(&lines));
    env.run(&["--shards", "2"]).assert_success();
    let out = json_lines(&env.log("out.json"));
    assert_eq!(out.len(), n);
    for v in &out {
        let s = v["score"].as_f64().unwrap_or_else(|| panic!("no score: {v}"));
        assert!(s == 1.0 || s == 2.0, "{v}");
    }
}
