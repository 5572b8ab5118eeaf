//! The `hiredis` module against a real `redis-server` started by the test (Debian package
//! `redis-server`; `.ci/test` installs it): reply types and constants, error replies, NIL,
//! `command_line`, numbers as arguments, use after close, and Redis dying mid-run.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

/// A `redis-server` on a free loopback port, persistence off, stopped on drop.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let mut s = RedisServer {
            port: 0,
            child: None,
            dir: tempfile::tempdir().unwrap(),
        };
        // A port picked free can be taken before the server binds it (by another test's
        // connection): a server that exits at once is started again on another port.
        for _ in 0..10 {
            s.port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            if s.try_spawn() {
                return s;
            }
        }
        panic!("redis-server exited at start 10 times");
    }

    fn spawn(&mut self) {
        assert!(self.try_spawn(), "redis-server exited at start (port {})", self.port);
    }

    /// Starts the server on its port; false when it exited before listening.
    fn try_spawn(&mut self) -> bool {
        let mut child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (Debian package redis-server; .ci/test installs it)");
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if child.try_wait().ok().flatten().is_some() {
                return false;
            }
            assert!(t.elapsed() < Duration::from_secs(10), "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
        true
    }

    /// Kills the server (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends `sig` to the server (`SIGSTOP`: it hangs, connections stay open).
    pub fn signal(&self, sig: libc::c_int) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
            unsafe { libc::kill(c.id() as libc::pid_t, sig) };
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Runs one `redis-cli` command and returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .arg("-p")
            .arg(self.port.to_string())
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn redis_config(port: u16, input_uri: &str) -> String {
    format!(
        "redis_host = \"127.0.0.1\"\nredis_port = {port}\n{}",
        simple_config(input_uri, "", "tail_poll_ms = 20")
    )
}

const REPLIES: &str = r#"
local conn
function setup()
  conn = assert(hiredis.connect())
  local r = {}
  r.ping = conn:command("PING") == hiredis.status.PONG and hiredis.PONG == hiredis.status.PONG
  r.set = conn:command("SET", "k", 1.5) == hiredis.OK
  r.get = conn:command("GET", "k")
  r.big = conn:command("SET", "b", 2^53) == hiredis.OK and conn:command("GET", "b")
  r.bin = conn:command("SET", "z", "a\0b") == hiredis.OK and #conn:command("GET", "z")
  r.missing = conn:command("GET", "nokey") == hiredis.NIL
  r.nil_name, r.nil_type = hiredis.NIL.name, hiredis.NIL.type
  local e = conn:command("BOGUS", "x")
  r.err_type, r.err_name = e.type, e.name
  r.wrongtype = conn:command("LPUSH", "z", "x").name
  r.line = conn:command_line("SET  k2   100%d") == hiredis.OK and conn:command("GET", "k2")
  r.one_arg = conn:command("INCR c").name
  conn:append_command("INCR", "c")
  conn:append_command("INCR", "c")
  r.pipelined = { conn:get_reply(), conn:get_reply() }
  r.empty = #conn:command("LRANGE", "nolist", 0, -1)
  r.array = conn:command("MGET", "k", "nokey")
  r.array_nil = r.array[2] == hiredis.NIL
  r.array[2] = nil
  -- A status constant named before any reply has it is made on demand (lua-hiredis's
  -- status table creates missing names), and a reply with that status is the same table.
  local early = hiredis.status.hash
  r.status_early = early ~= nil and early.name == "hash" and early.type == hiredis.REPLY_STATUS
    and hiredis.status.hash == early
  conn:command("HSET", "h", "f", "v")
  r.status_early_same = conn:command("TYPE", "h") == early
  r.status_not_string = hiredis.status[1] == nil and rawget(hiredis.status, 1) == nil
  r.status_new = tostring(conn:command("TYPE", "k"))
  r.status_same = conn:command("TYPE", "k") == conn:command("TYPE", "k2")
  local v, t = hiredis.unwrap_reply(hiredis.OK)
  r.unwrap_status = { v, t }
  local n, msg = hiredis.unwrap_reply(e)
  r.unwrap_error = { n == nil, msg == e.name }
  r.unwrap_other = hiredis.unwrap_reply(5)
  r.consts = { hiredis.ERR_IO, hiredis.ERR_OTHER, hiredis.ERR_EOF, hiredis.ERR_PROTOCOL,
               hiredis.REPLY_STRING, hiredis.REPLY_ARRAY, hiredis.REPLY_INTEGER, hiredis.REPLY_NIL,
               hiredis.REPLY_STATUS, hiredis.REPLY_ERROR }
  r.tostring = tostring(conn)
  r.bad_arg = select(2, pcall(conn.command, conn, "SET", "k", {}))
  r.no_name = select(2, pcall(conn.command, conn))
  conn:close()
  r.after_close = select(2, pcall(conn.command, conn, "PING"))
  dragonfly.log_event(r)
end
function loop(msg) end
"#;

#[test]
fn every_reply_type_and_constant() {
    let redis = RedisServer::start();
    let env = Env::new();
    env.config(&redis_config(redis.port, "file://in.json"));
    env.filter("filter.lua", FILTER_TO_DEFAULT);
    env.analyzer("a.lua", REPLIES);
    env.write_log("in.json", b"");
    env.run(&[]).assert_success();
    let recs = env.log_records();
    let r = recs.iter().find(|r| r.get("ping").is_some()).expect("the setup record");
    let want = serde_json::json!({
        "ping": true, "set": true, "get": "1.5", "big": "9.007199254741e+15", "bin": 3,
        "missing": true, "nil_name": "NIL", "nil_type": 4,
        "err_type": 6, "err_name": "ERR unknown command 'BOGUS', with args beginning with: 'x' ",
        "wrongtype": "WRONGTYPE Operation against a key holding the wrong kind of value",
        "line": "100%d", "one_arg": "ERR unknown command 'INCR c', with args beginning with: ",
        "pipelined": [1, 2], "empty": 0, "array": ["1.5"], "array_nil": true,
        "status_new": "string", "status_same": true,
        "status_early": true, "status_early_same": true, "status_not_string": true,
        "unwrap_status": ["OK", 5], "unwrap_error": [true, true], "unwrap_other": 5,
        "consts": [1, 2, 3, 4, 1, 2, 3, 4, 5, 6],
        "tostring": "lua-hiredis.connection",
        "after_close": "lua-hiredis error: attempted to use closed connection",
    });
    for (k, v) in want.as_object().unwrap() {
        assert_eq!(&r[k], v, "field {k} of {r}");
    }
    assert!(
        r["bad_arg"]
            .as_str()
            .unwrap()
            .contains("expected a string or number value"),
        "{r}"
    );
    assert!(r["no_name"].as_str().unwrap().contains("missing command name"), "{r}");
    assert_eq!(redis.cli(&["GET", "c"]), "2");
}

/// A connection lost inside a transaction: the commands after it, once the connection is
/// back, are refused until the script ends the transaction (they ran at once on the new
/// connection, outside the transaction the server had forgot: half of it applied, its EXEC
/// "without MULTI"). The same with appended commands; after EXEC the connection works again.
#[test]
fn a_transaction_whose_connection_is_lost_is_not_continued_on_the_next_one() {
    let redis = RedisServer::start();
    let env = input_env(
        &redis,
        "file://in.json",
        r#"
local function pause(s) local t = os.clock() + s while os.clock() < t do end end
local function fails(v, msg, code) return { v == nil, code, msg ~= nil and msg:find("inside a transaction") ~= nil } end
function setup()
  local c = assert(hiredis.connect())
  local k = assert(hiredis.connect())
  local r = {}
  local id = c:command("CLIENT", "ID")
  r.multi = tostring(c:command("MULTI"))
  r.a = tostring(c:command("INCR", "a"))
  k:command("CLIENT", "KILL", "ID", id)
  r.b = fails(c:command("INCR", "b"))
  pause(0.3)
  r.c = fails(c:command("INCR", "c"))
  r.exec = fails(c:command("EXEC"))
  r.after = tostring(c:command("SET", "d", 1))
  -- Appended: MULTI and INCR a2 sent, the connection killed, the rest appended after.
  id = c:command("CLIENT", "ID")
  c:append_command("MULTI")
  c:append_command("INCR", "a2")
  r.amulti, r.aa = tostring(c:get_reply()), tostring(c:get_reply())
  k:command("CLIENT", "KILL", "ID", id)
  r.ab = fails(c:command("INCR", "b2"))
  pause(0.3)
  c:append_command("INCR", "c2")
  c:append_command("EXEC")
  r.ac, r.aexec = fails(c:get_reply()), fails(c:get_reply())
  r.aafter = tostring(c:command("SET", "d2", 1))
  -- A WATCH without MULTI lost: UNWATCH ends it (refused too).
  c:command("WATCH", "w")
  k:command("CLIENT", "KILL", "ID", c:command("CLIENT", "ID"))
  r.wget = fails(c:command("GET", "w"))
  pause(0.3)
  r.unwatch = fails(c:command("UNWATCH"))
  r.wafter = tostring(c:command("SET", "d3", 1))
  -- Lost and left open by setup(): the next call (loop) is not cut off.
  id = c:command("CLIENT", "ID")
  c:command("MULTI")
  k:command("CLIENT", "KILL", "ID", id)
  r.left = fails(c:command("INCR", "b4"))
  pause(0.3)
  conn = c
  dragonfly.log_event(r)
end
function loop(msg)
  dragonfly.log_event({ next_call = tostring(conn:command("SET", "d4", 1)) })
end
"#,
    );
    env.write_log("in.json", b"{\"i\":1}\n");
    env.run(&["--shards", "1"]).assert_success();
    let recs = env.log_records();
    let r = recs
        .iter()
        .find(|r| r.get("multi").is_some())
        .expect("the setup record");
    let want = serde_json::json!({
        "multi": "OK", "a": "QUEUED", "b": [true, 3, false], "c": [true, 1, true],
        "exec": [true, 1, true], "after": "OK",
        "amulti": "OK", "aa": "QUEUED", "ab": [true, 3, false], "ac": [true, 1, true],
        "aexec": [true, 1, true], "aafter": "OK",
        "wget": [true, 3, false], "unwatch": [true, 1, true], "wafter": "OK", "left": [true, 3, false],
    });
    for (k, v) in want.as_object().unwrap() {
        assert_eq!(&r[k], v, "field {k} of {r}");
    }
    for key in ["a", "b", "c", "a2", "b2", "c2", "b4"] {
        assert_eq!(
            redis.cli(&["EXISTS", key]),
            "0",
            "{key} was set: half a transaction ran"
        );
    }
    for key in ["d", "d2", "d3", "d4"] {
        assert_eq!(redis.cli(&["GET", key]), "1", "{key}");
    }
    assert!(recs.iter().any(|r| r["next_call"] == "OK"), "{recs:?}");
}

/// A connection re-established after a failure gets the script's session again: its `AUTH`
/// (a password-protected Redis answered every later command, the script's own AUTH
/// included, with NOAUTH for good) and its `SELECT` (commands went to database 0).
#[test]
fn a_connection_back_after_a_failure_keeps_its_auth_and_database() {
    let redis = RedisServer::start();
    redis.cli(&["CONFIG", "SET", "requirepass", "secret"]);
    let env = input_env(
        &redis,
        "file://in.json",
        r#"
local function pause(s) local t = os.clock() + s while os.clock() < t do end end
function setup()
  local c = assert(hiredis.connect())
  local k = assert(hiredis.connect())
  local r = {}
  r.auth = tostring(c:command("AUTH", "secret"))
  k:command("AUTH", "secret")
  r.select = tostring(c:command("SELECT", 3))
  c:command("SET", "k", "v3")
  k:command("CLIENT", "KILL", "ID", c:command("CLIENT", "ID"))
  local v, _, code = c:command("GET", "k")
  r.lost = { v == nil, code }
  pause(0.3)
  r.get = c:command("GET", "k")
  local info = c:command("CLIENT", "INFO")
  r.db = type(info) == "string" and info:match("db=(%d+)") or tostring(info)
  -- The password changed meanwhile: the replayed AUTH and SELECT are refused, the script's
  -- commands get NOAUTH; its own AUTH with the new one works, and the database is 3 again.
  k:command("CONFIG", "SET", "requirepass", "secret2")
  k:command("CLIENT", "KILL", "ID", c:command("CLIENT", "ID"))
  c:command("GET", "k")
  pause(0.3)
  local e = c:command("GET", "k")
  r.noauth = type(e) == "table" and e.name:match("^NOAUTH") ~= nil
  r.auth2 = tostring(c:command("AUTH", "secret2"))
  r.get2 = c:command("GET", "k")
  k:command("CONFIG", "SET", "requirepass", "secret")
  dragonfly.log_event(r)
end
function loop(msg) end
"#,
    );
    env.write_log("in.json", b"");
    let out = env.run(&["--shards", "1"]);
    redis.cli(&["-a", "secret", "--no-auth-warning", "CONFIG", "SET", "requirepass", ""]);
    out.assert_success();
    let recs = env.log_records();
    let r = recs.iter().find(|r| r.get("auth").is_some()).expect("the setup record");
    let want = serde_json::json!({
        "auth": "OK", "select": "OK", "lost": [true, 3], "get": "v3", "db": "3",
        "noauth": true, "auth2": "OK", "get2": "v3",
    });
    for (k, v) in want.as_object().unwrap() {
        assert_eq!(&r[k], v, "field {k} of {r}");
    }
}

/// A `tail://in.json<` input into the analyzer `a.lua` (given), on `redis`.
fn tail_env(redis: &RedisServer, analyzer: &str) -> Env {
    input_env(redis, "tail://in.json<", analyzer)
}

/// The input `uri` into the analyzer `a.lua` (given), on `redis`.
fn input_env(redis: &RedisServer, uri: &str, analyzer: &str) -> Env {
    let env = Env::new();
    env.config(&redis_config(redis.port, uri));
    env.filter("filter.lua", FILTER_TO_DEFAULT);
    env.analyzer("a.lua", analyzer);
    env
}

/// Starts the engine on `env` (its analyzer outputs `n` once `INCR` works), feeds it `each`
/// events, kills Redis, feeds `each` more, restarts Redis and feeds until a call succeeds.
fn through_an_outage(redis: &mut RedisServer, env: &Env, each: usize) -> (Running, Feed) {
    env.write_log("in.json", b"");
    let engine = env.spawn(&["--shards", "1"]);
    let mut feed = Feed::default();
    feed.step(env, each);
    redis.kill();
    feed.step(env, each);
    redis.restart();
    // Reconnection waits out its backoff (at most 2 s): keep sending until a call succeeds.
    feed.until_written(env, "\"n\":");
    (engine, feed)
}

/// An analyzer that counts events in Redis (`INCR n`) and writes the count, or the error
/// and its code when the call fails.
const INCR_OR_ERROR: &str = r#"
local conn
function setup() conn = assert(hiredis.connect()) end
function loop(msg)
  local r, err, code = conn:command("INCR", "n")
  if r then msg.n = r else msg.err = err; msg.code = code end
  dragonfly.output_event(default_output, msg)
end
"#;

/// A Redis back while no event calls it is seen without a call: `redis_restored` and `/health`
/// 200 again (it said "connections down" until the next event made a call).
#[test]
fn a_redis_back_while_idle_is_seen_without_a_call() {
    let mut redis = RedisServer::start();
    let env = tail_env(&redis, INCR_OR_ERROR);
    env.write_log("in.json", b"");
    let (mut engine, addr, _) = spawn_watched_with(&env, &["--shards", "1"]);
    let health = || crate::ops::request(&addr, "GET", "/health");
    let mut feed = Feed::default();
    feed.step(&env, 2);
    redis.kill();
    feed.step(&env, 1);
    wait_until(
        Duration::from_secs(10),
        "/health 503",
        || health().0 == 503,
        String::new,
    );
    redis.restart();
    wait_until(
        Duration::from_secs(15),
        "/health 200 with no event sent",
        || health().0 == 200,
        || String::from_utf8_lossy(&health().1).into_owned(),
    );
    wait_until(
        Duration::from_secs(5),
        "redis_restored",
        || env.log_records_of("redis_restored").len() == 1,
        || format!("{:?}", env.log_records()),
    );
    assert_eq!(env.lines("out.json").len(), 3);
    engine.signal(libc::SIGTERM);
    engine.wait(Duration::from_secs(20)).assert_success();
}

/// A reload that rebuilds the pipeline starts the Redis counts again with the others (they
/// went on from the previous pipeline while the event counts started from 0).
#[test]
fn redis_counts_start_again_with_a_rebuilt_pipeline() {
    let redis = RedisServer::start();
    let env = tail_env(&redis, INCR_OR_ERROR);
    env.write_log("in.json", b"");
    let mut engine = env.spawn(&["--shards", "1"]);
    let mut feed = Feed::default();
    feed.step(&env, 3);
    env.config(&format!(
        "{}stats_interval = 30\n",
        redis_config(redis.port, "tail://in.json<")
    ));
    engine.signal(libc::SIGHUP);
    wait_log_message(&env, "runs the new configuration");
    feed.step(&env, 2);
    engine.signal(libc::SIGTERM);
    engine.wait(Duration::from_secs(20)).assert_success();
    let last = env.stats_records().pop().expect("a stats line");
    assert_eq!(last["inputs"]["eve"]["events"], 2, "{last}");
    assert_eq!(last["redis"]["calls"], 2, "{last}");
}

#[test]
fn a_dead_redis_is_an_error_and_comes_back() {
    let mut redis = RedisServer::start();
    let env = tail_env(&redis, INCR_OR_ERROR);
    let (mut engine, feed) = through_an_outage(&mut redis, &env, 5);
    engine.signal(libc::SIGTERM);
    let out = engine.wait(Duration::from_secs(20));
    out.assert_success();
    let lines = json_lines(&env.log("out.json"));
    assert_eq!(lines.len(), feed.sent, "every event was processed");
    let ok_before: Vec<_> = lines[..5].iter().map(|l| l["n"].as_i64()).collect();
    assert_eq!(ok_before, vec![Some(1), Some(2), Some(3), Some(4), Some(5)]);
    // The first call finds the connection closed by the dying server (hiredis's ERR_EOF);
    // the next ones cannot connect (ERR_IO).
    assert_eq!(lines[5]["code"], 3, "ERR_EOF: {}", lines[5]);
    for l in &lines[6..10] {
        assert_eq!(l["code"], 1, "ERR_IO while Redis is down: {l}");
        assert!(l["err"].as_str().unwrap().contains("redis 127.0.0.1"), "{l}");
    }
    assert_eq!(lines.last().unwrap()["n"], 1, "a fresh Redis counts from 1");
    // Issue 15: the outage is logged once when it begins and once when it ends.
    let lost = env.log_records_of("redis_lost");
    let restored = env.log_records_of("redis_restored");
    assert_eq!((lost.len(), restored.len()), (1, 1), "{lost:?} {restored:?}");
    assert_eq!(restored[0]["level"], "info");
    let m = restored[0]["message"].as_str().unwrap();
    assert!(
        m.contains("s after it was found down") && m.contains("Redis calls of this worker failed meanwhile"),
        "{m}"
    );
    let failed: u64 = m
        .split("; ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(failed >= 5, "{m}");
    let stats = env.stats_records();
    let last = stats.last().unwrap();
    assert!(last["redis"]["failures"].as_u64().unwrap() >= 5, "{last}");
}

/// Commands appended while Redis is down fail and are forgotten: once it is back, no later
/// command gets one of their replies; and a command run while appended ones are sent but not
/// yet read gets its own reply (both answered later commands before).
#[test]
fn appended_commands_never_answer_later_ones() {
    let mut redis = RedisServer::start();
    let env = tail_env(
        &redis,
        r#"
local conn
function setup() conn = assert(hiredis.connect()) end
function loop(msg)
  local n, _, code = conn:command("INCR", "n")
  conn:append_command("ECHO", "a" .. msg.i)
  conn:append_command("ECHO", "b" .. msg.i)
  local a = conn:get_reply()
  local c = conn:command("ECHO", "c" .. msg.i)
  local b = conn:get_reply()
  msg.n, msg.code, msg.a, msg.b, msg.c = n, code, a, b, c
  dragonfly.output_event(default_output, msg)
end
"#,
    );
    let (mut engine, mut feed) = through_an_outage(&mut redis, &env, 3);
    // A few more once it is back.
    feed.step(&env, 3);
    engine.signal(libc::SIGTERM);
    engine.wait(Duration::from_secs(20)).assert_success();
    let lines = json_lines(&env.log("out.json"));
    assert_eq!(lines.len(), feed.sent, "every event was processed");
    let mut failed = 0;
    for l in &lines {
        let i = l["i"].as_u64().unwrap();
        for k in ["a", "b", "c"] {
            match l.get(k) {
                Some(v) => assert_eq!(v, &format!("{k}{i}"), "{k} of event {i}: {l}"),
                None => failed += 1,
            }
        }
    }
    assert!(failed >= 9, "calls failed while Redis was down: {failed}");
    for l in &lines[lines.len() - 4..] {
        assert!(
            l["n"].is_u64() && l["a"].is_string() && l["b"].is_string() && l["c"].is_string(),
            "{l}"
        );
    }
}

/// A script that connects for every event and never closes: its connections are closed by
/// the collection `connect` runs beyond 32 open ones (the engine ran out of file descriptors
/// before); one that keeps every connection gets a clear error beyond 256.
#[test]
fn connections_are_bounded() {
    let redis = RedisServer::start();
    let env = input_env(
        &redis,
        "file://in.json",
        r#"
local kept = {}
function setup() end
function loop(msg)
  local c, err, code = hiredis.connect()
  if msg.keep then
    if c then kept[#kept + 1] = c else msg.err, msg.code = err, code end
  elseif c then
    msg.r = c:command("INCR", "n")
  else
    msg.err = err
  end
  dragonfly.output_event(default_output, msg)
end
"#,
    );
    let lines: Vec<String> = (0..3000)
        .map(|i| format!("{{\"i\":{i}}}"))
        .chain((0..300).map(|i| format!("{{\"i\":{},\"keep\":true}}", 3000 + i)))
        .collect();
    env.write_log("in.json", &join_lines(&lines));
    let out = env.run(&["--shards", "1"]);
    out.assert_success();
    let lines = json_lines(&env.log("out.json"));
    assert_eq!(lines.len(), 3300);
    for (i, l) in lines[..3000].iter().enumerate() {
        assert_eq!(l["r"], i + 1, "{l}");
    }
    assert_eq!(redis.cli(&["GET", "n"]), "3000");
    // The 3,000 unreferenced ones were collected, so all 256 allowed were free for kept ones.
    let refused: Vec<&serde_json::Value> = lines[3000..].iter().filter(|l| l.get("err").is_some()).collect();
    assert_eq!(refused.len(), 300 - 256, "{:?}", lines.last());
    let err = refused[0]["err"].as_str().unwrap();
    assert!(
        err.starts_with("exceeded the number of allowable redis connections (256 open"),
        "{err}"
    );
    assert_eq!(refused[0]["code"], 3);
}

/// `hiredis.connect(host, port)` takes the port as a number or as a string that reads as one
/// (as lua-hiredis's `luaL_checkint`), and without one the configured port; other arguments
/// are an error that names them. A port given as text went to 6379, and `connect({}, {})`
/// used the configuration. A connect to another server after a failed one is no
/// `redis_restored` of the failed one.
#[test]
fn connect_takes_its_port_as_a_number_or_as_text() {
    let redis = RedisServer::start();
    let env = input_env(
        &redis,
        "file://in.json",
        &format!(
            r#"
local port = {port}
function setup() end
function loop(msg)
  local ok, c, err
  if msg.how == "nowhere" then ok, c, err = pcall(hiredis.connect, "127.0.0.1", 1)
  elseif msg.how == "text" then ok, c, err = pcall(hiredis.connect, "127.0.0.1", tostring(port))
  elseif msg.how == "number" then ok, c, err = pcall(hiredis.connect, "127.0.0.1", port)
  elseif msg.how == "host" then ok, c, err = pcall(hiredis.connect, "127.0.0.1")
  elseif msg.how == "tables" then ok, c, err = pcall(hiredis.connect, {{}}, {{}})
  else ok, c, err = pcall(hiredis.connect, "127.0.0.1", "sixty") end
  if not ok then msg.raised = c
  elseif c then msg.r = c:command("INCR", "n"); c:close()
  else msg.err = err end
  dragonfly.output_event(default_output, msg)
end
"#,
            port = redis.port
        ),
    );
    env.write_log(
        "in.json",
        b"{\"how\":\"nowhere\"}\n{\"how\":\"text\"}\n{\"how\":\"number\"}\n{\"how\":\"host\"}\n{\"how\":\"tables\"}\n{\"how\":\"word\"}\n",
    );
    env.run(&["--shards", "1"]).assert_success();
    let got = json_lines(&env.log("out.json"));
    assert_eq!(got.len(), 6);
    assert!(got[0]["err"].as_str().unwrap_or_default().contains(":1"), "{}", got[0]);
    let got = &got[1..];
    for (i, how) in ["text", "number", "host"].iter().enumerate() {
        assert_eq!(got[i]["r"], i + 1, "{how}: {}", got[i]);
    }
    // The failed connect elsewhere is not "restored" by connects to this server.
    assert_eq!(env.log_records_of("redis_lost").len(), 1, "{:?}", env.log_records());
    assert!(
        env.log_records_of("redis_restored").is_empty(),
        "{:?}",
        env.log_records()
    );
    assert_eq!(redis.cli(&["GET", "n"]), "3");
    let raised = |i: usize| got[i]["raised"].as_str().unwrap_or_default().to_string();
    assert!(
        raised(3).contains("bad argument #1 to 'connect' (string expected, got table)"),
        "{}",
        got[3]
    );
    assert!(
        raised(4).contains("bad argument #2 to 'connect' (number expected, got string)"),
        "{}",
        got[4]
    );
}

/// Connections the collector frees while the engine is inside one of its own calls (here: the
/// copy of a large table `analyze_event` passes to the analyzer's state) are closed too.
/// Before, their finalizer found the worker's context in use and left them open for the rest
/// of the run: 31 of 3,000 dropped connections were still open at the end, each counted
/// against the 256 allowed, and every `connect` beyond 32 open ran a full collection.
#[test]
fn connections_collected_during_the_engines_calls_are_closed() {
    let redis = RedisServer::start();
    let env = Env::new();
    env.config(&redis_config(redis.port, "file://in.json"));
    env.filter(
        "filter.lua",
        r#"
function setup() end
function loop(msg)
  local t = { i = msg.i }
  for i = 1, 200 do t[i] = { k = "v" .. i, n = i } end
  dragonfly.analyze_event(default_analyzer, t)
end
"#,
    );
    env.analyzer(
        "a.lua",
        r#"
function setup() end
function loop(msg)
  local c = assert(hiredis.connect())
  c:command("INCR", "n")
  if msg.i == 2999 then
    c = nil
    collectgarbage("collect")
    collectgarbage("collect")
    local c2 = assert(hiredis.connect())
    local n = 0
    for _ in string.gmatch(c2:command("CLIENT", "LIST"), "\n") do n = n + 1 end
    c2:close()
    dragonfly.output_event(default_output, { clients = n })
  end
end
"#,
    );
    let lines: Vec<String> = (0..3000).map(|i| format!("{{\"i\":{i}}}")).collect();
    env.write_log("in.json", &join_lines(&lines));
    let out = env.run(&["--shards", "1"]);
    out.assert_success();
    assert_eq!(out.summary().script_errors, 0, "{}", out.stdout);
    assert_eq!(redis.cli(&["GET", "n"]), "3000");
    let got = env.lines("out.json");
    let last: serde_json::Value = serde_json::from_slice(got.last().expect("a record")).expect("json");
    // The one listing the clients is the only one of the engine's left.
    assert_eq!(last["clients"], 1, "{last}");
}

/// Pids of the `redis-server` processes whose command line mentions `needle`, with their
/// state letter from /proc (Z = dead, not yet reaped).
fn redis_servers_mentioning(needle: &str) -> Vec<(u32, char)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains("redis-server") && cmdline.contains(needle) {
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|s| s.trim().chars().next())
                .unwrap_or('?');
            out.push((pid, state));
        }
    }
    out
}

const COUNTER: &str = r#"
local conn
function setup() conn = assert(hiredis.connect()) end
function loop(msg)
  msg.n = conn:command("INCR", "count:" .. msg.event_type)
  dragonfly.output_event(default_output, msg)
end
"#;

#[test]
fn managed_redis_is_started_used_and_stopped() {
    let env = Env::simple("file://in.json", COUNTER, "", "");
    let run = env.dir.path().join("run");
    let lines: Vec<String> = (0..10).map(|i| format!("{{\"event_type\":\"t{}\"}}", i % 2)).collect();
    env.write_log("in.json", &join_lines(&lines));
    env.run(&["--run-dir", run.to_str().unwrap()]).assert_success();
    let ns: Vec<i64> = env
        .lines("out.json")
        .iter()
        .map(|l| {
            serde_json::from_slice::<serde_json::Value>(l).unwrap()["n"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(ns, vec![1, 1, 2, 2, 3, 3, 4, 4, 5, 5]);
    // Only the persistent data stays (redis_persist, on by default).
    let left: Vec<_> = std::fs::read_dir(&run)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        left,
        vec![std::ffi::OsString::from("managed-redis-data")],
        "run dir not cleaned"
    );
    let live: Vec<_> = redis_servers_mentioning(run.to_str().unwrap())
        .into_iter()
        .filter(|(_, s)| *s != 'Z')
        .collect();
    assert!(live.is_empty(), "managed redis-server still running: {live:?}");
}

/// A managed Redis with a large persisted data set accepts connections while it loads it
/// and answers -LOADING; the engine waits until it answers PING, so the scripts see the data.
#[test]
fn managed_redis_is_used_only_once_it_has_loaded_its_data() {
    let env = Env::simple("file://in.json", COUNTER, "", "");
    let run = env.dir.path().join("run");
    let data = run.join("managed-redis-data");
    std::fs::create_dir_all(&data).unwrap();
    // An append-only file of 400,000 SETs (about 20 MB) then the counters' start values.
    let mut aof = Vec::new();
    let mut cmd = |args: &[&str]| {
        aof.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for a in args {
            aof.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
        }
    };
    for i in 0..400_000 {
        cmd(&["SET", &format!("filler:{i}"), "some value to load"]);
    }
    cmd(&["SET", "count:t0", "1000"]);
    cmd(&["SET", "count:t1", "2000"]);
    std::fs::write(data.join("appendonly.aof"), aof).unwrap();
    let lines: Vec<String> = (0..4).map(|i| format!("{{\"event_type\":\"t{}\"}}", i % 2)).collect();
    env.write_log("in.json", &join_lines(&lines));
    let out = env.run(&["--run-dir", run.to_str().unwrap()]);
    out.assert_success();
    let ns: Vec<i64> = env
        .lines("out.json")
        .iter()
        .map(|l| {
            serde_json::from_slice::<serde_json::Value>(l).unwrap()["n"]
                .as_i64()
                .unwrap_or(-1)
        })
        .collect();
    assert_eq!(ns, vec![1001, 2001, 1002, 2002], "{}", out.stderr);
}

/// The managed redis-server killed while the engine runs (the OOM killer: it has no memory
/// limit) is started again with its data: later calls work again, and the `redis_restored`
/// record says what happened. It was left a zombie, and every later call failed for the rest
/// of the run with "not connected (retrying after backoff)".
#[test]
fn a_managed_redis_that_dies_is_started_again() {
    let env = Env::new();
    env.config(&simple_config("tail://in.json<", "", "tail_poll_ms = 20"));
    env.filter("filter.lua", FILTER_TO_DEFAULT);
    env.analyzer("a.lua", INCR_OR_ERROR);
    let run = env.dir.path().join("run");
    env.write_log("in.json", b"");
    let mut engine = env.spawn(&["--shards", "1", "--run-dir", run.to_str().unwrap()]);
    let mut feed = Feed::default();
    feed.step(&env, 5);
    let needle = run.to_str().unwrap().to_string();
    let first = redis_servers_mentioning(&needle);
    assert_eq!(first.len(), 1, "{first:?}");
    // SAFETY: kill(2) on the managed redis-server this test's engine started.
    assert_eq!(unsafe { libc::kill(first[0].0 as libc::pid_t, libc::SIGKILL) }, 0);
    feed.step(&env, 5);
    feed.until_written(&env, "\"n\":");
    let now = redis_servers_mentioning(&needle);
    assert!(
        now.len() == 1 && now[0].0 != first[0].0 && now[0].1 != 'Z',
        "one new managed redis-server: {first:?} then {now:?}"
    );
    env.wait_for_record(
        "redis_restored",
        "was started again with its data",
        Duration::from_secs(10),
    );
    engine.signal(libc::SIGTERM);
    engine.wait(Duration::from_secs(30)).assert_success();
}

/// The engine's threads named `name`.
fn threads_named(pid: u32, name: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.flatten()
                .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name))
                .count()
        })
        .unwrap_or(0)
}

/// Restarts of the managed redis-server (resources audit): each left a thread and two
/// descriptors of `redis.log` for good; and once two starts in a row had failed (the server
/// killed while it loaded its data), it was never started again (every call failed for the
/// rest of the run, a reload too). Here the server is killed three times, then a
/// `redis-server` that fails (a wrapper first in PATH, told to fail by a flag file) is
/// tried at several connection attempts before it works again.
#[test]
fn managed_redis_restarts_leak_nothing_and_never_give_up() {
    let env = Env::new();
    env.config(&simple_config("tail://in.json<", "", "tail_poll_ms = 20"));
    env.filter("filter.lua", FILTER_TO_DEFAULT);
    env.analyzer("a.lua", INCR_OR_ERROR);
    let run = env.dir.path().join("run");
    let bin = env.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let flag = env.dir.path().join("fail");
    let real = std::process::Command::new("sh")
        .args(["-c", "command -v redis-server"])
        .output()
        .unwrap();
    let real = String::from_utf8(real.stdout).unwrap().trim().to_string();
    let wrapper = bin.join("redis-server");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\n[ -e {} ] && exit 1\nexec {real} \"$@\"\n", flag.display()),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    env.write_log("in.json", b"");
    let mut cmd = env.command(&["--shards", "1", "--run-dir", run.to_str().unwrap()]);
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    cmd.env("PATH", path);
    let mut engine = spawn_in(cmd, env.dir.path(), "bg");
    let pid = engine.child.id();
    let mut feed = Feed::default();
    feed.step(&env, 2);
    let needle = run.to_str().unwrap().to_string();
    let kill_server = || {
        let now = redis_servers_mentioning(&needle);
        let live: Vec<_> = now.iter().filter(|(_, s)| *s != 'Z').collect();
        assert_eq!(live.len(), 1, "{now:?}");
        // SAFETY: kill(2) on the managed redis-server this test's engine started.
        assert_eq!(unsafe { libc::kill(live[0].0 as libc::pid_t, libc::SIGKILL) }, 0);
    };
    for _ in 0..3 {
        kill_server();
        feed.until_written(&env, "\"n\":");
    }
    assert_eq!(threads_named(pid, "dfm-redis"), 1, "one thread per live server");
    // Now starts fail, at several connection attempts, then work again.
    kill_server();
    std::fs::write(&flag, b"").unwrap();
    let t = std::time::Instant::now();
    while t.elapsed() < Duration::from_secs(4) {
        feed.step(&env, 1);
        std::thread::sleep(Duration::from_millis(200));
    }
    std::fs::remove_file(&flag).unwrap();
    feed.until_written(&env, "\"n\":");
    assert_eq!(threads_named(pid, "dfm-redis"), 1, "one thread per live server");
    engine.signal(libc::SIGTERM);
    let out = engine.wait(Duration::from_secs(30));
    out.assert_success();
    assert!(
        out.stderr.matches("exited at startup").count() >= 2,
        "the failing starts were tried more than once: {}",
        out.stderr
    );
}

#[test]
fn managed_redis_dies_with_a_killed_engine() {
    let env = Env::simple("tail://in.json<", COUNTER, "", "tail_poll_ms = 20");
    let run = env.dir.path().join("run");
    env.write_log("in.json", b"{\"event_type\":\"x\"}\n");
    let mut engine = env.spawn(&["--run-dir", run.to_str().unwrap()]);
    wait_until(
        Duration::from_secs(20),
        "first output",
        || !env.lines("out.json").is_empty(),
        String::new,
    );
    let needle = run.to_str().unwrap().to_string();
    assert_eq!(
        redis_servers_mentioning(&needle).len(),
        1,
        "one managed redis-server while running"
    );
    engine.signal(libc::SIGKILL);
    let _ = engine.wait(Duration::from_secs(10));
    wait_until(
        Duration::from_secs(10),
        "the managed redis-server to die",
        || redis_servers_mentioning(&needle).iter().all(|(_, s)| *s == 'Z'),
        || format!("{:?}", redis_servers_mentioning(&needle)),
    );
}

#[test]
fn managed_redis_without_redis_server_is_a_clear_error() {
    let env = Env::simple("file://in.json", COUNTER, "", "");
    let run = env.dir.path().join("run");
    env.write_log("in.json", b"{\"event_type\":\"x\"}\n");
    let mut cmd = env.command(&["--run-dir", run.to_str().unwrap()]);
    cmd.env("PATH", "/nonexistent");
    let out = run_in(cmd, env.dir.path(), "no-redis");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        out.stderr.contains("install the Debian package redis-server"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_port_of_zero_means_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("r.sock");
    let mut server = Command::new("redis-server")
        .args(["--port", "0", "--save", "", "--appendonly", "no", "--unixsocket"])
        .arg(&sock)
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server");
    wait_until(
        Duration::from_secs(10),
        "redis socket",
        || std::os::unix::net::UnixStream::connect(&sock).is_ok(),
        String::new,
    );
    let env = Env::new();
    env.config(&format!(
        "redis_host = \"{}\"\nredis_port = 0\n{}",
        sock.display(),
        simple_config("file://in.json", "", "")
    ));
    env.filter("filter.lua", FILTER_TO_DEFAULT);
    env.analyzer("a.lua", COUNTER);
    env.write_log("in.json", b"{\"event_type\":\"u\"}\n{\"event_type\":\"u\"}\n");
    env.run(&[]).assert_success();
    let out = env.lines("out.json");
    assert_eq!(out.len(), 2);
    assert!(
        String::from_utf8_lossy(&out[1]).contains("\"n\":2"),
        "{:?}",
        String::from_utf8_lossy(&out[1])
    );
    let _ = server.kill();
    let _ = server.wait();
}

/// A configuration on the Redis at `port` with the given `analyzers` entries.
fn pipelined_config(port: u16, analyzers: &str) -> String {
    format!(
        "redis_host = \"127.0.0.1\"\nredis_port = {port}\n\
         inputs = {{ {{ tag = \"eve\", uri = \"file://in.json\", script = \"filter.lua\", default_analyzer = \"a\" }} }}\n\
         analyzers = {{ {analyzers} }}\n\
         outputs = {{ {{ tag = \"out\", uri = \"file://out.json<\" }} }}\n"
    )
}

/// An environment on the Redis at `port` whose filter sends every event to `a.lua` (run with
/// `pipeline`), which passes it on to `out`, or with `b`, to `b.lua` (unpipelined), which does.
fn pipelined_env(port: u16, pipeline: usize, a: &str, b: Option<&str>) -> Env {
    let next = match b {
        Some(_) => "default_analyzer = \"b\", default_output = \"\"",
        None => "default_analyzer = \"\", default_output = \"out\"",
    };
    let mut analyzers = format!("{{ tag = \"a\", script = \"a.lua\", {next}, pipeline = {pipeline} }}");
    if b.is_some() {
        analyzers.push_str(",\n{ tag = \"b\", script = \"b.lua\", default_analyzer = \"\", default_output = \"out\" }");
    }
    let env = Env::new();
    env.config(&pipelined_config(port, &analyzers));
    env.filter("filter.lua", FILTER_TO_DEFAULT);
    env.analyzer("a.lua", a);
    if let Some(b) = b {
        env.analyzer("b.lua", b);
    }
    env
}

/// Runs the INCR-per-event-type workload with `pipeline` on a fresh Redis; returns the output
/// lines and the final counters.
fn incr_run(pipeline: usize, shards: &str, lines: &[String]) -> (Vec<Vec<u8>>, Vec<String>) {
    let redis = RedisServer::start();
    const A: &str = r#"
local conn
function setup() conn = assert(hiredis.connect()) end
function loop(msg)
  msg.n = conn:command("INCR", "count:" .. msg.event_type)
  if msg.i % 97 == 0 then error("boom " .. msg.i) end
  dragonfly.analyze_event(default_analyzer, msg)
end
"#;
    let env = pipelined_env(redis.port, pipeline, A, Some(ANALYZER_PASS));
    env.write_log("in.json", &join_lines(lines));
    let out = env.run(&["--shards", shards]);
    out.assert_success();
    assert_eq!(
        out.summary().script_errors,
        (lines.len() as u64).div_ceil(97),
        "{}",
        out.stdout
    );
    let counters = ["t0", "t1", "t2"]
        .iter()
        .map(|t| redis.cli(&["GET", &format!("count:{t}")]))
        .collect();
    (env.lines("out.json"), counters)
}

#[test]
fn pipelining_gives_the_same_results() {
    let lines: Vec<String> = (0..3000)
        .map(|i| {
            format!(
                "{{\"i\":{i},\"event_type\":\"t{}\",\"src_ip\":\"10.0.0.{}\",\"dest_ip\":\"10.0.1.1\"}}",
                i % 3,
                i % 50
            )
        })
        .collect();
    let (plain, plain_counts) = incr_run(1, "1", &lines);
    let (piped, piped_counts) = incr_run(64, "1", &lines);
    assert_eq!(plain_counts, vec!["1000", "1000", "1000"]);
    assert_eq!(piped_counts, plain_counts);
    assert_eq!(plain.len(), 3000 - 31);
    assert!(piped == plain, "pipelined output differs from plain output");
    // Two shards: the counters interleave differently, but the final state is the same.
    let (two, two_counts) = incr_run(64, "2", &lines);
    assert_eq!(two_counts, plain_counts);
    assert_eq!(two.len(), plain.len());
}

#[test]
fn a_failing_module_load_is_reported_not_fatal() {
    let redis = RedisServer::start();
    let env = Env::new();
    env.config(&format!(
        "redis_host = \"127.0.0.1\"\nredis_port = {}\nmodules = {{ {{ tag = \"ml\", module = \"/nonexistent/redisml.so\" }} }}\n{}",
        redis.port,
        simple_config("file://in.json", "", "")
    ));
    env.filter("filter.lua", FILTER_TO_DEFAULT);
    env.analyzer("a.lua", ANALYZER_PASS);
    env.write_log("in.json", b"{\"a\":1}\n");
    env.run(&[]).assert_success();
    assert_eq!(env.lines("out.json").len(), 1);
    let recs = env.log_records_of("redis_module");
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0]["module"], "ml");
    assert!(
        recs[0]["message"]
            .as_str()
            .unwrap()
            .contains("MODULE LOAD /nonexistent/redisml.so"),
        "{:?}",
        recs[0]
    );
}

/// The managed Redis lets config.lua's `modules` be loaded: Redis 7 refuses `MODULE LOAD`
/// unless it is allowed at start ("MODULE command not allowed"), which a user cannot do for the
/// server the engine starts. A module file that does not exist then fails for that reason.
#[test]
fn modules_load_on_the_managed_redis() {
    let env = Env::new();
    env.config(&format!(
        "modules = {{ {{ tag = \"ml\", module = \"/nonexistent/redisml.so\" }} }}\n{}",
        simple_config("file://in.json", "", "")
    ));
    env.filter("filter.lua", FILTER_TO_DEFAULT);
    env.analyzer("a.lua", ANALYZER_PASS);
    env.write_log("in.json", b"{\"a\":1}\n");
    env.run(&[]).assert_success();
    let recs = env.log_records_of("redis_module");
    assert_eq!(recs.len(), 1, "{recs:?}");
    let msg = recs[0]["message"].as_str().unwrap();
    assert!(!msg.contains("not allowed"), "{msg}");
    assert!(msg.contains("MODULE LOAD /nonexistent/redisml.so: ERR"), "{msg}");
}

#[test]
fn a_bad_argument_in_a_pipelined_analyzer_fails_only_its_event() {
    let redis = RedisServer::start();
    let env = pipelined_env(
        redis.port,
        8,
        r#"
local conn
function setup() conn = assert(hiredis.connect()) end
function loop(msg)
  local arg = msg.i % 5 == 0 and {} or "k"
  msg.n = conn:command("INCR", arg)
  dragonfly.output_event(default_output, msg)
end
"#,
        None,
    );
    let lines: Vec<String> = (1..=40).map(|i| format!("{{\"i\":{i}}}")).collect();
    env.write_log("in.json", &join_lines(&lines));
    let out = env.run(&[]);
    out.assert_success();
    assert_eq!(out.summary().script_errors, 8, "{}", out.stdout);
    let ns: Vec<i64> = env
        .lines("out.json")
        .iter()
        .map(|l| {
            serde_json::from_slice::<serde_json::Value>(l).unwrap()["n"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(
        ns,
        (1..=32).collect::<Vec<i64>>(),
        "the other events' commands were not disturbed"
    );
}

/// Transactions in a pipelined analyzer: each event's `MULTI` ... `EXEC` (and a `WATCH`
/// before it) reaches Redis whole, not mixed with the other events of the window on the shared
/// connection (they were: "MULTI calls can not be nested", "EXEC without MULTI", and an
/// `EXEC` that answered another event's commands).
#[test]
fn transactions_in_a_pipelined_analyzer_stay_whole() {
    let redis = RedisServer::start();
    let env = pipelined_env(
        redis.port,
        64,
        r#"
local conn
function setup() conn = assert(hiredis.connect()) end
function loop(msg)
  local k = "f" .. (msg.i % 50)
  msg.before = conn:command("GET", "plain:" .. k)
  conn:command("INCR", "plain:" .. k)
  if msg.i % 2 == 0 then
    msg.watch = conn:command("WATCH", "w:" .. k).name
  end
  msg.multi = conn:command("MULTI").name
  msg.q1 = conn:command("INCR", "a:" .. k).name
  msg.q2 = conn:command("INCR", "b:" .. k).name
  local r = conn:command("EXEC")
  msg.exec_n = type(r) == "table" and #r or -1
  msg.after = conn:command("INCR", "plain:" .. k)
  dragonfly.output_event(default_output, msg)
end
"#,
        None,
    );
    let lines: Vec<String> = (0..2000).map(|i| format!("{{\"i\":{i}}}")).collect();
    env.write_log("in.json", &join_lines(&lines));
    let out = env.run(&["--shards", "2"]);
    out.assert_success();
    assert_eq!(out.summary().script_errors, 0, "{}", out.stdout);
    let recs = json_lines(&env.log("out.json"));
    assert_eq!(recs.len(), 2000);
    let bad: Vec<&serde_json::Value> = recs
        .iter()
        .filter(|r| r["multi"] != "OK" || r["q1"] != "QUEUED" || r["q2"] != "QUEUED" || r["exec_n"] != 2)
        .collect();
    assert!(
        bad.is_empty(),
        "{} events' transactions were mixed up, e.g. {}",
        bad.len(),
        bad[0]
    );
    for k in 0..50 {
        for key in [format!("a:f{k}"), format!("b:f{k}")] {
            assert_eq!(redis.cli(&["GET", &key]), "40", "{key}");
        }
        assert_eq!(redis.cli(&["GET", &format!("plain:f{k}")]), "80", "plain:f{k}");
    }
}

/// `hiredis.connect(host, port)` with a port past 65535 is refused with a clear message (it
/// connected to port 65535).
#[test]
fn a_port_out_of_range_is_refused() {
    let env = Env::simple(
        "file://in.json",
        r#"
local c, err, code
function setup() c, err, code = hiredis.connect("127.0.0.1", 99999) end
function loop(msg)
  msg.err = err
  msg.code = code
  msg.conn = c ~= nil
  dragonfly.output_event(default_output, msg)
end
"#,
        "",
        "",
    );
    env.write_log("in.json", b"{\"a\":1}\n");
    env.run(&[]).assert_success();
    let out: serde_json::Value = serde_json::from_slice(&env.lines("out.json")[0]).unwrap();
    assert_eq!(out["err"], "invalid port 99999 (1 to 65535)", "{out}");
    assert_eq!(out["conn"], false, "{out}");
    assert_eq!(out["code"], 2, "ERR_OTHER: {out}");
}

/// An engine root whose Redis is a server that accepts connections and never answers, with
/// `redis_timeout_ms = timeout_ms`, reading `in.json` into `analyzer`.
fn silent_redis_env(timeout_ms: u64, analyzer: &str) -> Env {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    let env = Env::new();
    env.config(&format!(
        "redis_host = \"127.0.0.1\"\nredis_port = {port}\nredis_timeout_ms = {timeout_ms}\n{}",
        simple_config("file://in.json", "", "")
    ));
    env.filter("filter.lua", FILTER_TO_DEFAULT);
    env.analyzer("a.lua", analyzer);
    env
}

#[test]
fn a_silent_redis_times_out_with_err_io() {
    let env = silent_redis_env(
        300,
        r#"
local conn
function setup() conn = assert(hiredis.connect()) end
function loop(msg)
  local r, err, code = conn:command("PING")
  msg.code = code
  msg.err = err
  dragonfly.output_event(default_output, msg)
end
"#,
    );
    env.write_log("in.json", b"{\"a\":1}\n");
    let t = Instant::now();
    env.run(&[]).assert_success();
    assert!(t.elapsed() < Duration::from_secs(5), "took {:?}", t.elapsed());
    let out: serde_json::Value = serde_json::from_slice(&env.lines("out.json")[0]).unwrap();
    assert_eq!(out["code"], 1, "{out}");
    // The socket's timeout reads as EAGAIN: the message says what happened.
    let err = out["err"].as_str().unwrap_or_default();
    assert!(
        err.contains("timed out (Redis unreachable, hanging or overloaded)"),
        "{out}"
    );
}

/// A Redis that hangs (its kernel accepts connections, it never answers: stopped with SIGSTOP,
/// swapping, a frozen VM) stays down: a new connection must answer a `PING` within a short
/// wait before it counts as restored. A connect alone counted: each backoff ended in a
/// `redis_restored` record, the backoff went back to 50 ms and the next call waited the whole
/// reply timeout, so a chain of analyzers crawled at a timeout per call, `/health` said ok.
#[test]
fn a_hung_redis_is_not_taken_for_restored_by_a_connect() {
    // Each event takes 100 ms of the analyzer's time: the run lasts past several backoffs.
    let env = silent_redis_env(
        1000,
        r#"
local conn
function setup() conn = assert(hiredis.connect()) end
function loop(msg)
  local t = os.clock()
  while os.clock() - t < 0.1 do end
  local r, err, code = conn:command("INCR", "n")
  msg.code = code
  dragonfly.output_event(default_output, msg)
end
"#,
    );
    let n = 20;
    let lines: Vec<String> = (0..n).map(|i| format!("{{\"i\":{i}}}")).collect();
    env.write_log("in.json", &join_lines(&lines));
    let t = Instant::now();
    env.run(&["--shards", "1"]).assert_success();
    let took = t.elapsed();
    let out = env.lines("out.json");
    assert_eq!(out.len(), n, "every event written");
    assert!(
        out.iter().all(|l| u64_member(l, "code") == Some(1)),
        "every call failed with ERR_IO"
    );
    let restored = env.log_records_of("redis_restored");
    assert!(restored.is_empty(), "a hung Redis counted as restored: {restored:?}");
    assert_eq!(env.log_records_of("redis_lost").len(), 1, "{:?}", env.log_records());
    // The first call waits the 1 s reply timeout, later ones at most a probe's 0.5 s each
    // backoff (the old code: 1 s per backoff).
    assert!(took < Duration::from_secs(12), "took {took:?}");
}

/// Bursts of SIGUSR1 rotations while every event makes a Redis round trip: the rotated pieces
/// of the output hold every event once, and no Redis call fails (a worker's socket read, which
/// has a timeout, would fail with EINTR if a signal handler ran on its thread; the kernel
/// gives process signals to the main thread, which waits in `join`).
#[test]
fn signals_do_not_interrupt_redis_calls() {
    let redis = RedisServer::start();
    let env = Env::new();
    env.config(&redis_config(redis.port, "file://in.json"));
    env.filter("filter.lua", FILTER_TO_DEFAULT);
    env.analyzer(
        "a.lua",
        "local conn\nfunction setup() conn = assert(hiredis.connect()) end\nfunction loop(msg)\n  local n, e = conn:command('INCR', 'signals')\n  msg.n = n\n  msg.err = e\n  dragonfly.output_event(default_output, msg)\nend\n",
    );
    let n = 40_000;
    let lines: Vec<String> = gen_events(n, 500, 11).into_iter().map(|e| e.line).collect();
    env.write_log("in.json", &join_lines(&lines));
    let mut engine = env.spawn(&["--shards", "2"]);
    // Signals before the handlers are installed would end the process: wait for output.
    wait_until(
        Duration::from_secs(30),
        "the first events written",
        || std::fs::metadata(env.log("out.json")).is_ok_and(|m| m.len() > 0),
        String::new,
    );
    // Bursts: while the main thread still has one pending, the kernel hands the next to
    // another thread.
    for _ in 0..100 {
        for _ in 0..4 {
            if engine.child.try_wait().unwrap().is_some() {
                break;
            }
            engine.signal(libc::SIGUSR1);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    engine.wait(Duration::from_secs(120)).assert_success();
    // Rotation renamed out.json a number of times: read every piece.
    let mut got = Vec::new();
    for e in std::fs::read_dir(&env.logs).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with("out.json") {
            got.extend(split_lines(&std::fs::read(e.path()).unwrap()));
        }
    }
    assert_eq!(got.len(), n, "events written");
    let failed: Vec<String> = got
        .iter()
        .filter(|l| u64_member(l, "n").is_none())
        .take(3)
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect();
    assert!(failed.is_empty(), "Redis calls failed: {failed:?}");
}

/// Issue 14: with `pipeline = 4`, a command issued from a coroutine the script made itself
/// runs at once and returns its own reply (it was queued as if from the window's coroutine:
/// the inner call returned nil and the next command got its reply), and a script cannot
/// resume the engine's coroutine while it waits for its reply.
#[test]
fn a_command_from_a_scripts_own_coroutine_gets_its_own_reply() {
    let redis = RedisServer::start();
    let env = pipelined_env(
        redis.port,
        4,
        r#"
local conn, saved
function setup() conn = assert(hiredis.connect()) end
function loop(msg)
  local co = coroutine.create(function() return conn:command("INCR", "inner") end)
  local ok, inner = coroutine.resume(co)
  msg.inner_ok = ok
  msg.inner = inner
  msg.wrapped = coroutine.wrap(function() return conn:command("INCR", "wrapped") end)()
  if saved ~= nil then
    local rok, rerr = coroutine.resume(saved)
    msg.resume = tostring(rok) .. " " .. tostring(rerr)
  end
  saved = coroutine.running()
  msg.outer = conn:command("INCR", "outer")
  dragonfly.output_event(default_output, msg)
end
"#,
        None,
    );
    let n = 40;
    let lines: Vec<String> = (1..=n).map(|i| format!("{{\"i\":{i}}}")).collect();
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
    let recs = json_lines(&env.log("out.json"));
    assert_eq!(recs.len(), n);
    for key in ["inner", "wrapped", "outer"] {
        let mut got: Vec<i64> = recs
            .iter()
            .map(|r| {
                r[key]
                    .as_i64()
                    .unwrap_or_else(|| panic!("{key} is not a number in {r}"))
            })
            .collect();
        got.sort_unstable();
        assert_eq!(
            got,
            (1..=n as i64).collect::<Vec<_>>(),
            "{key}: every call got its own reply"
        );
        assert_eq!(redis.cli(&["GET", key]), n.to_string());
    }
    assert!(recs.iter().all(|r| r["inner_ok"] == true));
    for r in &recs[1..] {
        assert_eq!(
            r["resume"],
            "false cannot resume the engine's coroutine (it runs a pipelined analyzer's loop(); only the engine resumes it)",
            "{r}"
        );
    }
}

/// Issue 14: with `pipeline = 64` on a Redis analyzer, the pure-Lua per-flow computation
/// after it sees each flow's events in input order, so its output is the same as with
/// `pipeline = 1` (it differed: events whose Redis work took more round trips came later).
#[test]
fn pipelining_keeps_per_flow_order_downstream() {
    let lines: Vec<String> = (0..3000)
        .map(|i| {
            format!(
                "{{\"i\":{i},\"src_ip\":\"10.0.0.{}\",\"src_port\":{},\"dest_ip\":\"10.0.1.1\",\"dest_port\":53,\"proto\":\"UDP\"}}",
                i % 7,
                1000 + i % 7
            )
        })
        .collect();
    let run = |pipeline: usize, shards: &str| {
        let redis = RedisServer::start();
        // Between one and three round trips per event, so that pipelined events finish their
        // Redis work out of input order.
        let a = r#"
local conn
function setup() conn = assert(hiredis.connect()) end
function loop(msg)
  for j = 1, 1 + (msg.i * 7919) % 3 do conn:command("INCR", "k" .. j) end
  dragonfly.analyze_event(default_analyzer, msg)
end
"#;
        // Per flow: how many events so far, and the input index of the previous one.
        let b = r#"
local count, last = {}, {}
function setup() end
function loop(msg)
  local f = msg.src_ip
  count[f] = (count[f] or 0) + 1
  msg.nth = count[f]
  msg.after = last[f] or -1
  last[f] = msg.i
  dragonfly.output_event(default_output, msg)
end
"#;
        let env = pipelined_env(redis.port, pipeline, a, Some(b));
        env.write_log("in.json", &join_lines(&lines));
        let out = env.run(&["--shards", shards]);
        out.assert_success();
        assert_eq!(out.summary().script_errors, 0, "{}", out.stdout);
        env.lines("out.json")
    };
    let plain = run(1, "1");
    assert_eq!(plain.len(), lines.len());
    let piped = run(64, "1");
    let differ = plain.iter().zip(&piped).filter(|(a, b)| a != b).count();
    assert_eq!(
        differ,
        0,
        "{differ} of {} records differ from the run without pipelining",
        plain.len()
    );
    assert_eq!(piped.len(), plain.len());
    // Two shards: each flow is on one shard, so per-flow values are the same.
    let mut two = run(64, "2");
    let mut one = plain.clone();
    two.sort();
    one.sort();
    assert!(two == one, "per-flow values differ with two shards");
}

/// Issue 15: managed Redis keeps its data across restarts (append-only file in the run
/// directory), unless `redis_persist = false`; a second engine on the same run directory is
/// refused with a clear error instead of sharing the file.
#[test]
fn managed_redis_keeps_state_across_restarts() {
    let lines: Vec<String> = (0..10).map(|i| format!("{{\"event_type\":\"t{}\"}}", i % 2)).collect();
    let counts = |extra: &str, run: &std::path::Path| {
        let env = Env::simple("file://in.json", COUNTER, "", extra);
        env.write_log("in.json", &join_lines(&lines));
        env.run(&["--run-dir", run.to_str().unwrap()]).assert_success();
        env.lines("out.json")
            .iter()
            .map(|l| {
                serde_json::from_slice::<serde_json::Value>(l).unwrap()["n"]
                    .as_i64()
                    .unwrap()
            })
            .collect::<Vec<i64>>()
    };
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    assert_eq!(counts("", &run), vec![1, 1, 2, 2, 3, 3, 4, 4, 5, 5]);
    assert_eq!(counts("", &run), vec![6, 6, 7, 7, 8, 8, 9, 9, 10, 10], "state kept");
    let fresh = dir.path().join("fresh");
    assert_eq!(
        counts("redis_persist = false", &fresh),
        vec![1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    );
    assert_eq!(
        counts("redis_persist = false", &fresh),
        vec![1, 1, 2, 2, 3, 3, 4, 4, 5, 5],
        "nothing kept"
    );
    // A second engine on the same run directory while one runs.
    let lock = std::fs::File::open(run.join("managed-redis-data/lock")).unwrap();
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor this test owns.
    assert_eq!(
        unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
        0
    );
    let env = Env::simple("file://in.json", COUNTER, "", "");
    env.write_log("in.json", &join_lines(&lines));
    let out = env.run(&["--run-dir", run.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stderr.contains("is in use by another engine"), "{}", out.stderr);
}

/// A Redis that is never reached is reported once per worker (`redis_lost`, naming it and the
/// error), not only counted in the stats: each `hiredis.connect()` still returns nil, the error
/// and ERR_IO, and every event goes on.
#[test]
fn a_redis_never_reached_is_reported_once() {
    let env = Env::new();
    let sock = env.dir.path().join("no-redis.sock");
    env.config(&format!(
        "redis_host = {:?}\nredis_port = 0\n{}",
        sock.to_str().unwrap(),
        simple_config("file://in.json", "", "")
    ));
    env.filter("filter.lua", FILTER_TO_DEFAULT);
    env.analyzer(
        "a.lua",
        "function setup() end\nfunction loop(msg)\n  local c, err, code = hiredis.connect()\n  msg.redis_ok = c ~= nil\n  msg.code = code\n  dragonfly.output_event(default_output, msg)\nend\n",
    );
    env.write_log("in.json", &numbered_lines(0, 5));
    let out = env.run(&[]);
    out.assert_success();
    let written = env.lines("out.json");
    assert_eq!(written.len(), 5);
    for l in &written {
        let v: serde_json::Value = serde_json::from_slice(l).unwrap();
        assert_eq!(
            (&v["redis_ok"], &v["code"]),
            (&serde_json::json!(false), &serde_json::json!(1)),
            "{v}"
        );
    }
    let lost = env.log_records_of("redis_lost");
    assert_eq!(lost.len(), 1, "{lost:?}");
    let msg = lost[0]["message"].as_str().unwrap();
    assert!(msg.contains("cannot connect") && msg.contains("no-redis.sock"), "{msg}");
    assert!(out.stderr.contains("cannot connect"), "{}", out.stderr);
}

/// A connection the server closed (its idle `timeout` here; `CLIENT KILL` and a restart alike)
/// fails the call that finds it closed with hiredis's `ERR_EOF` and "Server closed the
/// connection", and the next call opens a new one at once: the backoff, meant for a server
/// that does not answer, failed every call made within it (it was `ERR_IO` then, and the
/// call right after failed "retrying after backoff").
#[test]
fn a_connection_the_server_closed_is_err_eof_and_the_next_call_opens_a_new_one() {
    let redis = RedisServer::start();
    let env = tail_env(
        &redis,
        r#"
local conn
function setup() conn = assert(hiredis.connect()) end
function loop(msg)
  local r, err, code = conn:command("INCR", "n")
  if r then msg.n = r else
    msg.err = err; msg.code = code
    msg.next = conn:command("INCR", "n")
  end
  dragonfly.output_event(default_output, msg)
end
"#,
    );
    env.write_log("in.json", b"");
    let mut engine = env.spawn(&["--shards", "1"]);
    let mut feed = Feed::default();
    feed.step(&env, 1);
    // Redis closes connections idle for a second; wait until it closed the engine's (the
    // list then holds only redis-cli's own).
    redis.cli(&["CONFIG", "SET", "timeout", "1"]);
    wait_until(
        Duration::from_secs(20),
        "Redis closing the idle connection",
        || redis.cli(&["CLIENT", "LIST"]).lines().count() == 1,
        || redis.cli(&["CLIENT", "LIST"]),
    );
    redis.cli(&["CONFIG", "SET", "timeout", "0"]);
    feed.step(&env, 1);
    engine.signal(libc::SIGTERM);
    engine.wait(Duration::from_secs(20)).assert_success();
    let lines = json_lines(&env.log("out.json"));
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["n"], 1, "{}", lines[0]);
    let l = &lines[1];
    assert_eq!(l["code"], 3, "ERR_EOF: {l}");
    assert!(
        l["err"].as_str().unwrap().ends_with("Server closed the connection"),
        "{l}"
    );
    assert_eq!(l["next"], 2, "the next call, on a new connection: {l}");
    // The record says what happened (not "connection lost ... retrying with backoff"), and
    // that the connection is back.
    let lost = env.log_records_of("redis_lost");
    assert_eq!(lost.len(), 1, "{lost:?}");
    let m = lost[0]["message"].as_str().unwrap();
    assert!(m.contains("connection closed by the server"), "{m}");
    assert_eq!(env.log_records_of("redis_restored").len(), 1);
}
