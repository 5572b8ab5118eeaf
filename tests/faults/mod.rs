//! Outputs that cannot deliver: a socket reader that is absent or stops reading, a full disk
//! (a file size limit the test lifts while the engine waits). Nothing may be dropped unless
//! the configuration says so, no record may be torn, and the counts must add up: written +
//! errors + dropped = what reached the output.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixListener;
use std::time::Duration;

use crate::util::*;

fn event(i: usize) -> String {
    format!(
        "{{\"timestamp\":\"2024-03-01T12:00:00.{:06}+0000\",\"event_type\":\"flow\",\"src_ip\":\"10.0.0.{}\",\"src_port\":{},\"dest_ip\":\"10.1.0.1\",\"dest_port\":443,\"proto\":\"TCP\",\"n\":{i},\"pad\":\"{}\"}}",
        i % 1_000_000,
        i % 250,
        1024 + i % 5000,
        "x".repeat(120)
    )
}

/// Every line parses and the `n` members are 0..n in order.
fn check_in_order(lines: &[Vec<u8>], n: usize) {
    for (k, l) in lines.iter().enumerate() {
        let v: serde_json::Value =
            serde_json::from_slice(l).unwrap_or_else(|e| panic!("line {k} is not JSON ({e}): {}", show(l)));
        assert_eq!(v["n"], k as u64, "line {k} out of order: {}", show(l));
    }
    assert_eq!(lines.len(), n, "lines delivered");
}

/// One output `out` with `uri` and `extra` keys in its entry; `global` appended.
fn env_with_output(uri: &str, entry_extra: &str, global: &str, n: usize) -> Env {
    let env = Env::simple("file://in.json", ANALYZER_PASS, "", "");
    env.config(&format!(
        "inputs = {{ {{ tag = \"eve\", uri = \"file://in.json\", script = \"filter.lua\", default_analyzer = \"a\" }} }}\n\
         analyzers = {{ {{ tag = \"a\", script = \"a.lua\", default_analyzer = \"\", default_output = \"out\" }} }}\n\
         outputs = {{ {{ tag = \"out\", uri = \"{uri}\"{entry_extra} }} }}\n\
         stats_interval = 0.2\n{global}\n"
    ));
    let lines: Vec<String> = (0..n).map(event).collect();
    env.write_log("in.json", &join_lines(&lines));
    env
}

/// The last stats line's counts of output `out`: (written, errors, dropped).
fn out_counts(env: &Env) -> (u64, u64, u64) {
    let stats = env.stats_records();
    let last = stats.last().expect("a stats line");
    let o = &last["outputs"]["out"];
    (
        o["written"].as_u64().unwrap(),
        o["errors"].as_u64().unwrap(),
        o["dropped"].as_u64().unwrap(),
    )
}

/// No reader for 1.5 s, then one that reads 2,000 lines, stops for 2 s and reads the rest:
/// with a 1 MiB bound the engine waits (it cannot finish early), then delivers every record
/// whole and in order, and exits 0.
#[test]
fn a_stream_output_waits_for_its_reader_and_delivers_everything() {
    let n = 30_000;
    let sock_dir = tempfile::tempdir().unwrap();
    let sock = sock_dir.path().join("out.sock");
    let env = env_with_output(&format!("ipc+stream://{}", sock.display()), ", buffer_mb = 1", "", n);
    let mut engine = env.spawn(&["--shards", "2"]);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        engine.child.try_wait().unwrap().is_none(),
        "the engine ended although its output never had a reader"
    );
    let listener = UnixListener::bind(&sock).unwrap();
    let reader = std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        let mut r = BufReader::new(s);
        let mut lines = Vec::new();
        let mut line = Vec::new();
        loop {
            line.clear();
            if r.read_until(b'\n', &mut line).unwrap() == 0 {
                break;
            }
            assert!(line.ends_with(b"\n"), "a torn record at the end: {}", show(&line));
            lines.push(line[..line.len() - 1].to_vec());
            if lines.len() == 2000 {
                std::thread::sleep(Duration::from_secs(2));
            }
        }
        lines
    });
    let out = engine.wait(RUN_TIMEOUT);
    out.assert_success();
    let got = reader.join().unwrap();
    check_in_order(&got, n);
    let s = out.summary();
    assert_eq!(
        (s.written, s.output_errors, s.dropped),
        (n as u64, 0, 0),
        "{}",
        out.stdout
    );
    assert_eq!(out_counts(&env), (n as u64, 0, 0));
    let waiting = env.log_records_of("output_waiting");
    assert!(!waiting.is_empty(), "no output_waiting record");
    assert_eq!(env.log_records_of("output_resumed").len(), waiting.len(), "{waiting:?}");
}

/// While an output holds the pipeline up (no reader, its buffer_mb full), the stats line goes
/// on at its interval and shows what the output holds, and the engine's records reach the log:
/// the operator sees the wait as it lasts.
#[test]
fn the_stats_line_goes_on_while_an_output_holds_the_pipeline_up() {
    let n = 30_000;
    let sock_dir = tempfile::tempdir().unwrap();
    let sock = sock_dir.path().join("nobody.sock");
    let env = env_with_output(
        &format!("ipc+stream://{}", sock.display()),
        ", buffer_mb = 1",
        "shutdown_grace = 1",
        n,
    );
    let mut engine = env.spawn(&[]);
    // The output full: the wait says so after 10 s.
    env.wait_for_record("output_waiting", "buffer_mb", Duration::from_secs(60));
    let held = |v: &serde_json::Value| v["outputs"]["out"]["held"].as_u64().unwrap_or(0);
    let before = env.stats_records().len();
    std::thread::sleep(Duration::from_secs(2));
    let stats = env.stats_records();
    // 0.2 s apart: about 10 lines in 2 s; a loaded machine gets fewer.
    assert!(
        stats.len() >= before + 3,
        "{} stats lines before the 2 s, {} after",
        before,
        stats.len()
    );
    let last = stats.last().unwrap();
    assert!(held(last) > 0, "{last}");
    assert_eq!(last["outputs"]["out"]["written"], 0, "{last}");
    // The engine's records reach the log meanwhile (a reload's request waited for the end of
    // the wait).
    engine.signal(libc::SIGHUP);
    wait_log_message(&env, "reload 1 requested");
    engine.signal(libc::SIGTERM);
    let out = engine.wait(RUN_TIMEOUT);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
}

/// A reader that never comes: once the input has ended the engine waits `shutdown_grace`,
/// then counts what the output holds as lost and exits 3.
#[test]
fn an_output_that_never_delivers_is_given_up_after_the_grace() {
    let n = 500;
    let sock_dir = tempfile::tempdir().unwrap();
    let sock = sock_dir.path().join("nobody.sock");
    let env = env_with_output(&format!("ipc+stream://{}", sock.display()), "", "shutdown_grace = 1", n);
    let out = env.run(&[]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let s = out.summary();
    assert_eq!(
        (s.read, s.written, s.output_errors, s.dropped),
        (n as u64, 0, n as u64, 0)
    );
    assert!(out.stderr.contains("events were lost"), "{}", out.stderr);
    assert_eq!(out_counts(&env), (0, n as u64, 0));
    let gave_up = env.log_records_of("output_gave_up");
    assert_eq!(gave_up.len(), 1, "{gave_up:?}");
    assert_eq!(gave_up[0]["lost"], n as u64);
}

/// Records given up at the stop are not passed by the tail checkpoint: the next run reads
/// them again (the checkpoint moved past them, so they were lost for good).
#[test]
fn records_given_up_at_the_stop_are_read_again_by_the_next_run() {
    let n = 300;
    let sock_dir = tempfile::tempdir().unwrap();
    let sock = sock_dir.path().join("nobody.sock");
    let config = |uri: &str| {
        format!(
            "inputs = {{ {{ tag = \"eve\", uri = \"tail://in.json<\", script = \"filter.lua\", default_analyzer = \"a\" }} }}\n\
             analyzers = {{ {{ tag = \"a\", script = \"a.lua\", default_analyzer = \"\", default_output = \"out\" }} }}\n\
             outputs = {{ {{ tag = \"out\", uri = \"{uri}\" }} }}\n\
             shutdown_grace = 1\ntail_poll_ms = 20\n"
        )
    };
    let env = Env::simple("tail://in.json<", ANALYZER_PASS, "", "");
    env.config(&config(&format!("ipc+stream://{}", sock.display())));
    let lines: Vec<String> = (0..n).map(event).collect();
    env.write_log("in.json", &join_lines(&lines));
    let run = env.dir.path().join("run");
    let run = run.to_str().unwrap();
    let mut engine = env.spawn(&["--run-dir", run]);
    wait_until(
        Duration::from_secs(30),
        "output_waiting",
        || !env.log_records_of("output_waiting").is_empty(),
        String::new,
    );
    engine.signal(libc::SIGTERM);
    let out = engine.wait(Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(env.log_records_of("output_gave_up").len(), 1);
    // Given up is not delivering again (an `output_resumed` followed it).
    assert!(
        env.log_records_of("output_resumed").is_empty(),
        "{:?}",
        env.log_records_of("output_resumed")
    );
    // The next run, with an output that works, writes every event the first one lost.
    env.config(&config("file://out.json"));
    let mut engine = env.spawn(&["--run-dir", run]);
    wait_until(
        Duration::from_secs(30),
        "the lost events written",
        || env.lines("out.json").len() >= n,
        || format!("{} lines", env.lines("out.json").len()),
    );
    engine.signal(libc::SIGTERM);
    engine.wait(Duration::from_secs(30)).assert_success();
    check_in_order(&env.lines("out.json"), n);
}

/// An output file deleted while the engine writes it (`rm`, its directory removed) is opened
/// again at its path before more is written, and reported (everything written after the
/// deletion went into the deleted file, counted as written).
#[test]
fn a_deleted_output_file_is_opened_again() {
    deleted_output("file", "o/out.json");
}

/// The same for a gzip output.
#[test]
fn a_deleted_gzip_output_file_is_opened_again() {
    deleted_output("zfile", "o/out.json.gz");
}

fn deleted_output(scheme: &str, out: &str) {
    let env = Env::simple("tail://in.json<", ANALYZER_PASS, "", "");
    env.config(&format!(
        "inputs = {{ {{ tag = \"eve\", uri = \"tail://in.json<\", script = \"filter.lua\", default_analyzer = \"a\" }} }}\n\
         analyzers = {{ {{ tag = \"a\", script = \"a.lua\", default_analyzer = \"\", default_output = \"out\" }} }}\n\
         outputs = {{ {{ tag = \"out\", uri = \"{scheme}://{out}\" }} }}\ntail_poll_ms = 20\n"
    ));
    let lines = |from: usize, to: usize| join_lines(&(from..to).map(event).collect::<Vec<_>>());
    // Lines of the output file (gunzipped for a gzip output).
    let read = || -> Vec<Vec<u8>> {
        let raw = std::fs::read(env.log(out)).unwrap_or_default();
        let text = if scheme == "zfile" {
            let mut t = Vec::new();
            let _ = std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(&raw[..]), &mut t);
            t
        } else {
            raw
        };
        split_lines(&text)
    };
    env.write_log("in.json", &lines(0, 100));
    let mut engine = env.spawn(&[]);
    let wait = |what: &str, n: usize| {
        wait_until(
            Duration::from_secs(30),
            what,
            || read().len() >= n,
            || format!("{} lines; {:?}", read().len(), env.log_records()),
        )
    };
    wait("100 lines", 100);
    std::fs::remove_file(env.log(out)).unwrap();
    env.append_log("in.json", &lines(100, 200));
    wait("the next 100 lines in a new file", 100);
    std::fs::remove_dir_all(env.log("o")).unwrap();
    env.append_log("in.json", &lines(200, 300));
    wait("the next 100 lines in a new directory", 100);
    engine.signal(libc::SIGTERM);
    engine.wait(Duration::from_secs(30)).assert_success();
    let got: Vec<u64> = read().iter().filter_map(|l| u64_member(l, "n")).collect();
    assert_eq!(got, (200..300).collect::<Vec<u64>>());
    let reopened = env.log_records_of("output_reopened");
    assert_eq!(reopened.len(), 2, "{reopened:?}");
    assert!(
        reopened[0]["message"].as_str().unwrap().contains("deleted while open"),
        "{reopened:?}"
    );
}

/// A `file://` input cut while it is read ends with a report that the file shrank (it ended
/// quietly, with at most one broken line reported at the cut).
#[test]
fn a_file_input_cut_while_read_is_reported() {
    let env = Env::simple("file://in.json?pace=1", ANALYZER_PASS, "", "");
    // 20,000 events a millisecond apart, about 3 MB: paced at the recorded speed, 20 s.
    let lines: Vec<String> = (0..20_000)
        .map(|i| {
            format!(
                "{{\"timestamp\":\"2024-03-01T12:{:02}:{:02}.{:03}000+0000\",\"event_type\":\"flow\",\"n\":{i},\"pad\":\"{}\"}}",
                i / 60_000,
                (i / 1000) % 60,
                i % 1000,
                "x".repeat(100)
            )
        })
        .collect();
    env.write_log("in.json", &join_lines(&lines));
    let mut engine = env.spawn(&[]);
    wait_until(
        Duration::from_secs(30),
        "the first lines",
        || env.lines("out.json").len() >= 100,
        String::new,
    );
    std::fs::File::create(env.log("in.json")).unwrap();
    let out = engine.wait(Duration::from_secs(60));
    assert!(out.status.code().is_some(), "{out:?}");
    let errors = env.log_records_of("read_error");
    assert!(
        errors.iter().any(|r| r["message"]
            .as_str()
            .unwrap_or("")
            .contains("the file shrank to 0 bytes while it was read")),
        "{:?}",
        env.log_records()
    );
}

/// An installation whose analyzer's `setup()` never returns, with one event to read.
fn setup_never_returns() -> Env {
    let env = Env::simple(
        "file://in.json",
        "function setup() while true do end end\nfunction loop(msg) end\n",
        "",
        "",
    );
    env.write_log("in.json", &join_lines(&[event(0)]));
    env
}

/// A `setup()` that never returns: the start says what it waits for every 10 s, and a stop
/// ends the engine (it hung, SIGTERM ignored, nothing said).
#[test]
fn a_setup_that_never_returns_is_said_and_does_not_block_the_stop() {
    let env = setup_never_returns();
    // Outputs in a directory of their own, which the stopped start removes with their files
    // (it ends with exit: they were left, a 0-byte .gz among them).
    env.config(
        "inputs = { { tag = \"eve\", uri = \"file://in.json\", script = \"filter.lua\", default_analyzer = \"a\" } }\n\
         analyzers = { { tag = \"a\", script = \"a.lua\", default_analyzer = \"\", default_output = \"out\" } }\n\
         outputs = { { tag = \"out\", uri = \"file://newdir/sub/x.json\" }, { tag = \"z\", uri = \"zfile://newdir/y.json.gz\" } }\n",
    );
    let mut engine = env.spawn(&["--shards", "1"]);
    std::thread::sleep(Duration::from_secs(11));
    engine.signal(libc::SIGTERM);
    let out = engine.wait(Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        out.stderr
            .contains("1 of 1 workers still loading their scripts after 10 s"),
        "{}",
        out.stderr
    );
    // The script is named.
    assert!(
        out.stderr.contains("the last one started: setup() of ") && out.stderr.contains("a.lua (a)"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("stopped while scripts' setup() had not returned"),
        "{}",
        out.stderr
    );
    assert!(!env.log("newdir").exists(), "the stopped start left its outputs");
}

/// A start that fails (here a `setup()` that raises) is recorded in `dragonfly-mle.log` too
/// (`fatal_error`), not only on stderr: the log file was left empty.
#[test]
fn a_failed_start_is_in_the_log_file() {
    let env = Env::simple(
        "file://in.json",
        "function setup() error(\"no model file\") end\nfunction loop(msg) end\n",
        "",
        "",
    );
    env.write_log("in.json", &join_lines(&[event(0)]));
    let out = env.run(&[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let fatal = env.log_records_of("fatal_error");
    assert_eq!(fatal.len(), 1, "{:?}", env.log_records());
    assert!(
        fatal[0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("no model file"),
        "{fatal:?}"
    );
}

/// A start that fails leaves a truncating output (`file://out.json<`, `zfile`) as the last
/// run left it: it was emptied when opened, before a script's `setup()` failed, another
/// output could not be opened or the HTTP port was taken (the last run's results gone).
#[test]
fn a_failed_start_leaves_truncating_outputs_as_they_were() {
    let failing_setup = "function setup() error(\"no model file\") end\nfunction loop(msg) end\n";
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    for case in ["setup", "output", "http"] {
        let analyzer = if case == "setup" { failing_setup } else { ANALYZER_PASS };
        let more = if case == "output" {
            // A second output whose path is a directory.
            ", { tag = \"dir\", uri = \"file://adir\" }"
        } else {
            ""
        };
        let env = Env::simple("file://in.json", analyzer, "", "");
        env.config(&format!(
            "inputs = {{ {{ tag = \"eve\", uri = \"file://in.json\", script = \"filter.lua\", default_analyzer = \"a\" }} }}\n\
             analyzers = {{ {{ tag = \"a\", script = \"a.lua\", default_analyzer = \"\", default_output = \"out\" }} }}\n\
             outputs = {{ {{ tag = \"out\", uri = \"file://out.json<\" }}, {{ tag = \"z\", uri = \"zfile://out.json.gz<\" }}{more} }}\n"
        ));
        std::fs::create_dir_all(env.log("adir")).unwrap();
        env.write_log("in.json", &join_lines(&[event(0)]));
        env.write_log("out.json", b"{\"last\":\"run\"}\n");
        env.write_log("out.json.gz", b"last run's bytes");
        let args: Vec<String> = match case {
            "http" => vec!["--http".into(), format!("127.0.0.1:{port}")],
            _ => vec![],
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = env.run(&args);
        assert_eq!(out.status.code(), Some(1), "{case}: {out:?}");
        assert_eq!(
            std::fs::read(env.log("out.json")).unwrap(),
            b"{\"last\":\"run\"}\n",
            "{case}: {out:?}"
        );
        assert_eq!(
            std::fs::read(env.log("out.json.gz")).unwrap(),
            b"last run's bytes",
            "{case}"
        );
    }
    // Outputs whose files did not exist: a start that fails leaves none (it left empty files,
    // a `zfile` one of 0 bytes, which no gzip reader takes).
    let env = Env::simple("file://in.json", failing_setup, "", "");
    env.config(
        "inputs = { { tag = \"eve\", uri = \"file://in.json\", script = \"filter.lua\", default_analyzer = \"a\" } }\n\
         analyzers = { { tag = \"a\", script = \"a.lua\", default_analyzer = \"\", default_output = \"out\" } }\n\
         outputs = { { tag = \"out\", uri = \"file://new.json<\" }, { tag = \"z\", uri = \"zfile://new.json.gz<\" }, \
         { tag = \"a1\", uri = \"file://new-append.json\" }, { tag = \"a2\", uri = \"zfile://new-append.json.gz\" }, \
         { tag = \"d1\", uri = \"file://newdir/sub/x.json\" }, { tag = \"d2\", uri = \"zfile://newdir/y.json.gz\" }, \
         { tag = \"d3\", uri = \"file://newdir/sub/z.json<\" } }\n",
    );
    env.write_log("in.json", &join_lines(&[event(0)]));
    let out = env.run(&[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    // Nor the directories it made for them (several outputs in one).
    for name in [
        "new.json",
        "new.json.gz",
        "new-append.json",
        "new-append.json.gz",
        "newdir",
    ] {
        assert!(!env.log(name).exists(), "{name} was left by a start that failed");
    }
    // A start that works keeps them, also when nothing is written.
    let started = Env::simple("file://in.json", ANALYZER_PASS, "", "");
    started.config(
        "inputs = { { tag = \"eve\", uri = \"file://in.json\", script = \"filter.lua\", default_analyzer = \"a\" } }\n\
         analyzers = { { tag = \"a\", script = \"a.lua\", default_analyzer = \"\", default_output = \"out\" } }\n\
         outputs = { { tag = \"out\", uri = \"file://newdir/sub/x.json\" }, { tag = \"z\", uri = \"zfile://newdir/y.json.gz\" } }\n",
    );
    started.write_log("in.json", b"");
    started.run(&[]).assert_success();
    assert!(started.log("newdir/sub/x.json").exists() && started.log("newdir/y.json.gz").exists());
    // Appending outputs that exist: not repaired or given their empty member by a start that
    // fails (an empty gzip file got a member, a torn one was cut, a partial line ended).
    let torn = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut e, b"{\"a\":1}\n").unwrap();
        let whole = e.finish().unwrap();
        [whole.clone(), whole[..whole.len() / 2].to_vec()].concat()
    };
    let before = [
        ("new-append.json.gz", Vec::new()),
        ("new-append.json", b"{\"a\":1}\n{\"partial".to_vec()),
        ("new.json.gz", torn),
    ];
    for (name, bytes) in &before {
        env.write_log(name, bytes);
    }
    env.config(
        "inputs = { { tag = \"eve\", uri = \"file://in.json\", script = \"filter.lua\", default_analyzer = \"a\" } }\n\
         analyzers = { { tag = \"a\", script = \"a.lua\", default_analyzer = \"\", default_output = \"out\" } }\n\
         outputs = { { tag = \"out\", uri = \"zfile://new.json.gz\" }, \
         { tag = \"a1\", uri = \"file://new-append.json\" }, { tag = \"a2\", uri = \"zfile://new-append.json.gz\" } }\n",
    );
    let out = env.run(&[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    for (name, bytes) in &before {
        assert_eq!(
            &std::fs::read(env.log(name)).unwrap(),
            bytes,
            "{name} changed by a start that failed"
        );
    }
    // A start that works empties them, also when nothing is written.
    let env = Env::simple("file://in.json", ANALYZER_PASS, "", "");
    env.write_log("in.json", b"");
    env.write_log("out.json", b"{\"last\":\"run\"}\n");
    env.run(&[]).assert_success();
    assert_eq!(std::fs::read(env.log("out.json")).unwrap(), b"");
    drop(taken);
}

/// `check --setup` on a `setup()` that never returns fails after 30 s instead of hanging.
#[test]
fn check_gives_up_on_a_setup_that_never_returns() {
    let env = setup_never_returns();
    let out = env.spawn(&["check", "--setup"]).wait(Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stderr.contains("did not finish in 30 s"), "{}", out.stderr);
}

/// Starts the engine with an HTTP endpoint and a run directory of its own (`<dir>/run`): the
/// engine, the endpoint's address and the run directory.
fn spawn_watched(env: &Env) -> (Running, String, std::path::PathBuf) {
    spawn_watched_with(env, &[])
}

/// `GET /health` of the endpoint at `addr`: its status and body.
fn health(addr: &str) -> (u16, String) {
    let (code, body) = crate::ops::request(addr, "GET", "/health");
    (code, String::from_utf8_lossy(&body).into_owned())
}

/// A Redis that `hiredis.connect()` never reaches makes `/health` fail (it said ok while every
/// connect failed), and each failed connect counts as a call (failures outnumbered calls).
#[test]
fn a_redis_never_reached_fails_health_and_counts_its_calls() {
    let env = Env::simple(
        "file://in.json",
        "function setup() end\nfunction loop(msg)\n  local c, err = hiredis.connect()\n  msg.err = err ~= nil\n  dragonfly.output_event(default_output, msg)\nend\n",
        "",
        "redis_host = \"127.0.0.1\"\nredis_port = 1\nstats_interval = 0.2",
    );
    let lines: Vec<String> = (0..5).map(event).collect();
    env.write_log("in.json", &join_lines(&lines));
    let (mut engine, addr, _) = spawn_watched_with(&env, &["--follow"]);
    wait_until(
        Duration::from_secs(30),
        "five events written",
        || env.lines("out.json").len() == 5,
        String::new,
    );
    let (code, body) = health(&addr);
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("redis: 1 connections down"), "{body}");
    engine.signal(libc::SIGTERM);
    engine.wait(RUN_TIMEOUT).assert_success();
    let last = env.stats_records().pop().expect("a stats line");
    let redis = &last["redis"];
    assert_eq!(
        (redis["calls"].as_u64(), redis["failures"].as_u64()),
        (Some(5), Some(5)),
        "{last}"
    );
}

/// A script whose `loop()` never returns (a compiled Lua loop cannot be interrupted): after
/// 10 s it is reported (`worker_stuck`) and `/health` says so; a stop then ends the engine
/// with status 3 once the worker has been stuck 30 s, instead of hanging (it ignored SIGTERM,
/// with nothing reported).
#[test]
fn a_script_that_never_returns_is_reported_and_does_not_block_the_stop() {
    let (env, out) = stop_a_stuck_script("while true do end", Duration::from_secs(40));
    // The forced exit leaves what a normal end leaves: its report in {log}, a last stats line
    // and the summary (they went to stderr only).
    let stuck = env.log_records_of("worker_stuck");
    assert!(
        stuck
            .iter()
            .any(|r| r["message"].as_str().unwrap_or("").contains("exiting without it") && r["script"] == "analyzer a"),
        "{stuck:?}"
    );
    // Counted per batch, and the stuck batch held every event.
    assert_eq!(out.summary().read, 0, "{out:?}");
    let stats = env.stats_records();
    assert_eq!(stats.len(), 2, "the first stats line and the last one: {stats:?}");
    assert!(stats[1]["inputs"]["eve"].is_object(), "{stats:?}");
}

/// A `loop()` that never returns while it makes Redis commands (each call told the stuck
/// watch the worker was slow, not stuck: the engine then said nothing and ignored SIGTERM for
/// good) is reported once it has been on one batch for 60 s, and a stop then ends the engine
/// with status 3.
#[test]
fn a_script_looping_on_redis_commands_is_reported_and_does_not_block_the_stop() {
    stop_a_stuck_script("while true do c:command(\"PING\") end", Duration::from_secs(120));
}

/// Runs a script whose `loop()` runs `stuck` on its sixth event (`c` a Redis connection):
/// waits up to `reported_within` for `worker_stuck`, checks `/health` answers 503 naming the
/// worker, stops the engine with SIGTERM and checks it exits with status 3 saying why.
fn stop_a_stuck_script(stuck: &str, reported_within: Duration) -> (Env, RunOutput) {
    let (env, out, _) = stop_a_stuck_script_among(stuck, reported_within, 20);
    (env, out)
}

/// `stop_a_stuck_script` with `events` events in the input; also returns the `/health` body.
fn stop_a_stuck_script_among(stuck: &str, reported_within: Duration, events: usize) -> (Env, RunOutput, String) {
    let env = Env::simple(
        "file://in.json",
        &format!(
            "local c\nfunction setup() c = assert(hiredis.connect()) end\nfunction loop(msg)\n  if msg.n == 5 then {stuck} end\n  dragonfly.output_event(default_output, msg)\nend\n"
        ),
        "",
        "",
    );
    let lines: Vec<String> = (0..events).map(event).collect();
    env.write_log("in.json", &join_lines(&lines));
    let (mut engine, addr, _run) = spawn_watched(&env);
    env.wait_for_record("worker_stuck", "", reported_within);
    let (code, body) = health(&addr);
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("worker 0: one batch has run for"), "{body}");
    // Both name the script the worker is in.
    assert!(body.contains(", in analyzer a "), "{body}");
    let stuck = env.log_records_of("worker_stuck");
    assert_eq!(stuck[0]["script"], "analyzer a", "{stuck:?}");
    assert!(
        stuck[0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("last in a call of analyzer a"),
        "{stuck:?}"
    );
    engine.signal(libc::SIGTERM);
    let out = engine.wait(Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(out.stderr.contains("stuck in a script"), "{}", out.stderr);
    (env, out, body)
}

/// The same with more events than the rings hold: the reader waits for room in the stuck
/// worker's ring, and the stop waited for the reader for ever (SIGTERM and SIGINT were
/// ignored, only SIGKILL ended the engine). `/health` names the stalled rings too (the stuck
/// worker never published its full rings: 0 batches waiting), and the last `worker_stuck`
/// record names the worker.
#[test]
fn a_stuck_script_with_its_reader_waiting_for_room_does_not_block_the_stop() {
    let (env, _out, body) = stop_a_stuck_script_among("while true do end", Duration::from_secs(40), 20_000);
    assert!(body.contains("worker 0: rings stalled"), "{body}");
    let stuck = env.log_records_of("worker_stuck");
    assert!(
        stuck
            .iter()
            .any(|r| r["worker"] == "0" && r["message"].as_str().unwrap_or("").contains("exiting without it")),
        "{stuck:?}"
    );
}

/// A worker thread that fails (a panic, an engine defect; injected in debug builds) dropped its
/// shard's events without a word (its rings abandoned) while the engine went on. The engine
/// now exits at once with status 3, saying why (`worker_failed`), with a last stats line and
/// the summary.
#[test]
fn a_failed_worker_ends_the_engine_with_status_3() {
    let env = Env::simple("file://in.json", ANALYZER_PASS, "", "");
    let lines: Vec<String> = (0..3000).map(event).collect();
    env.write_log("in.json", &join_lines(&lines));
    let mut cmd = env.command(&["--shards", "1"]);
    cmd.env("DFM_FAULT_WORKER_PANIC", "1000");
    let out = run_in(cmd, env.dir.path(), "run");
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let failed = env.log_records_of("worker_failed");
    assert!(
        failed
            .iter()
            .any(|r| r["worker"] == "0" && r["message"].as_str().unwrap_or("").contains("injected fault")),
        "{:?}",
        env.log_records()
    );
    assert!(out.summary().written < 3000, "{out:?}");
    assert_eq!(env.stats_records().len(), 2, "the first stats line and the last one");
}

/// A reload (SIGHUP) whose new script's `setup()` never returns is a stuck worker: reported
/// (`worker_stuck`), `/health` 503, and a stop ends the engine with status 3. It hung the
/// engine silently: `/health` said ok and SIGTERM was ignored.
#[test]
fn a_reloaded_setup_that_never_returns_is_reported_and_does_not_block_the_stop() {
    let (env, out) = stop_a_stuck_reload(|env| {
        env.analyzer("a.lua", SETUP_FOR_EVER);
    });
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(env.lines("out.json").len() >= 2, "{out:?}");
}

/// The same with a reload that rebuilds the pipeline (config.lua changed: a new analyzer
/// whose `setup()` never returns): `/health` said 200, `{log}` nothing, and a stop ended the
/// engine with status 1 and no summary. Now the new pipeline's worker is reported stuck, and a
/// stop ends the engine with status 3, its report in `{log}` and the summary on stdout; the
/// events of the first pipeline were all written.
#[test]
fn a_rebuilt_pipelines_setup_that_never_returns_is_reported_and_does_not_block_the_stop() {
    let (env, out) = stop_a_stuck_reload(|env| {
        env.analyzer("b.lua", SETUP_FOR_EVER);
        env.config(&simple_config("tail://in.json<", "", "").replace(
            "analyzers = {",
            "analyzers = { { tag = \"b\", script = \"b.lua\", default_analyzer = \"\", default_output = \"out\" },",
        ));
    });
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(
        out.stderr.contains("reloaded configuration's scripts"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("b.lua (b)"), "{}", out.stderr);
    // The exit is recorded as a stuck worker's is, with the summary of what was done.
    let stuck = env.log_records_of("worker_stuck");
    assert!(
        stuck
            .iter()
            .any(|r| r["message"].as_str().unwrap_or("").contains("exiting without them")),
        "{stuck:?}"
    );
    // What was read (the third event too, when the old pipeline saw it before the rebuild)
    // was written.
    let summary = out.summary();
    let lines = env.lines("out.json").len() as u64;
    assert!(lines >= 2, "{out:?}");
    assert_eq!((summary.read, summary.written), (lines, lines), "{out:?}");
}

const SETUP_FOR_EVER: &str = "function setup() while true do end end\nfunction loop(msg) end\n";

/// Runs a pass-through analyzer on two events, then `change` (new scripts or configuration)
/// and SIGHUP, with a third event appended: waits for `worker_stuck`, checks `/health`
/// answers 503 naming the worker, and stops the engine with SIGTERM.
fn stop_a_stuck_reload(change: impl FnOnce(&Env)) -> (Env, RunOutput) {
    let env = Env::simple("tail://in.json<", ANALYZER_PASS, "", "");
    env.write_log("in.json", &join_lines(&[event(0), event(1)]));
    let (mut engine, addr, _run) = spawn_watched(&env);
    wait_until(
        Duration::from_secs(30),
        "the first events",
        || env.lines("out.json").len() == 2,
        String::new,
    );
    change(&env);
    engine.signal(libc::SIGHUP);
    env.append_log("in.json", &join_lines(&[event(2)]));
    env.wait_for_record(
        "worker_stuck",
        "setup() of a script being reloaded",
        Duration::from_secs(40),
    );
    let (code, body) = health(&addr);
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("worker 0: one batch has run for"), "{body}");
    engine.signal(libc::SIGTERM);
    let out = engine.wait(Duration::from_secs(60));
    (env, out)
}

/// A `loop()` that writes records without end is stopped by an error in the script once its
/// event's records reach 256 MiB (they were held without bound: the process grew by the size
/// of everything written and aborted at its memory limit); the records written before stay,
/// and the events after it, in the same batch, go on.
#[test]
fn a_loop_writing_without_end_gets_an_error_not_unbounded_memory() {
    let env = Env::simple(
        "file://in.json",
        "function setup() end\nfunction loop(msg)\n  if msg.n == 1 then\n    local s = string.rep(\"z\", 1000)\n    for i = 1, 1e7 do dragonfly.output_event(default_output, {i = i, s = s}) end\n  end\n  dragonfly.output_event(default_output, msg)\nend\n",
        "",
        "",
    );
    env.write_log("in.json", b"{\"n\":0}\n{\"n\":1}\n{\"n\":2}\n");
    let out = env.run(&[]);
    let s = out.summary();
    assert_eq!((s.read, s.script_errors), (3, 1), "{out:?}");
    let errors = env.log_records_of("script_error");
    assert!(
        errors[0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("this event's records reach 256 MiB"),
        "{errors:?}"
    );
    let text = std::fs::read(env.logs.join("out.json")).unwrap();
    let lines = text.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count();
    // 256 MiB of records of about 1,020 bytes, and the events 0 and 2.
    assert!((250_000..280_000).contains(&lines), "{lines} lines");
    assert!(text.ends_with(b"{\"n\":2}\n"), "the event after the error is written");
    assert!(text.starts_with(b"{\"n\":0}\n"));
}

/// One record alone past the 256 MiB an event may write is refused too (the limit was checked
/// before the record was encoded: a 300 MiB record went through, and only the next call
/// failed).
#[test]
fn one_record_past_the_events_limit_is_an_error() {
    let env = Env::simple(
        "file://in.json",
        "function setup() end\nfunction loop(msg)\n  if msg.n == 1 then\n    local ok, err = pcall(dragonfly.output_event, default_output, {s = string.rep(\"x\", 300 * 2^20)})\n    dragonfly.output_event(default_output, {ok = ok, err = tostring(err)})\n  end\n  dragonfly.output_event(default_output, msg)\nend\n",
        "",
        "",
    );
    env.write_log("in.json", b"{\"n\":0}\n{\"n\":1}\n{\"n\":2}\n");
    let out = env.run(&[]);
    assert_eq!(out.summary().script_errors, 0, "caught by pcall: {out:?}");
    let lines = env.lines("out.json");
    assert_eq!(
        lines.len(),
        4,
        "no 300 MiB record: {:?}",
        lines.iter().map(|l| l.len()).collect::<Vec<_>>()
    );
    let report: serde_json::Value = serde_json::from_slice(&lines[1]).unwrap();
    assert_eq!(report["ok"], false, "{report}");
    assert!(
        report["err"]
            .as_str()
            .unwrap_or("")
            .contains("this event's records reach 256 MiB"),
        "{report}"
    );
}

/// The engine's own log cannot be written (a full disk, made by a file size limit the small
/// output stays under): the run's reports it gave up are counted as lost, said on stderr (past
/// its limit of copied reports, the only place left) and the exit status is 3. It was 0, with
/// the reports gone without a word, or 101 (a panic) when stderr was a file on that disk.
#[test]
fn a_log_that_cannot_be_written_is_a_loss_said_on_stderr() {
    let env = Env::simple("file://in.json", ANALYZER_PASS, "", "shutdown_grace = 1");
    let mut input: Vec<String> = (0..3).map(event).collect();
    input.extend((0..300).map(|i| format!("not json {i}")));
    env.write_log("in.json", &join_lines(&input));
    let mut cmd = env.command(&[]);
    with_file_size_limit(&mut cmd, 4096);
    // Pipes, not files: the limit holds for every file the engine writes (a stderr file too,
    // which made `eprintln!` panic: exit 101).
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let out = cmd.output().expect("run dragonfly-mle");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert_eq!(env.lines("out.json").len(), 3, "the events are written");
    assert!(stderr.contains("output_gave_up"), "{stderr}");
    assert!(
        stderr.contains("records of dragonfly-mle.log or the stats file could not be written"),
        "{stderr}"
    );
    // With stderr a file under the same limit, the lines that do not fit are lost, not the
    // process.
    let mut cmd = env.command(&[]);
    with_file_size_limit(&mut cmd, 4096);
    let out = spawn_in(cmd, env.dir.path(), "fsize").wait(Duration::from_secs(120));
    assert_eq!(out.status.code(), Some(3), "{:?}", out.status);
}

/// A checkpoint that cannot be saved is reported once (it was reported about five times a
/// second), `/health` says so, and its recovery is reported.
#[test]
fn a_checkpoint_that_cannot_be_saved_is_reported_once() {
    let env = Env::simple("tail://in.json<", ANALYZER_PASS, "", "tail_poll_ms = 20");
    let lines = |from: usize, to: usize| join_lines(&(from..to).map(event).collect::<Vec<_>>());
    env.write_log("in.json", &lines(0, 10));
    let (mut engine, addr, run) = spawn_watched(&env);
    let health = || health(&addr);
    let ckpt = || tail_checkpoints(&run).into_iter().next();
    wait_until(
        Duration::from_secs(30),
        "a checkpoint",
        || ckpt().is_some(),
        String::new,
    );
    // A directory where the checkpoint goes: every save fails ("Is a directory").
    let path = ckpt().unwrap();
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    for k in 0..10 {
        env.append_log("in.json", &lines(10 + k * 10, 20 + k * 10));
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_until(
        Duration::from_secs(10),
        "/health 503",
        || health().0 == 503,
        || health().1,
    );
    assert!(health().1.contains("its checkpoint cannot be saved"), "{}", health().1);
    assert_eq!(
        env.log_records_of("checkpoint_error").len(),
        1,
        "{:?}",
        env.log_records_of("checkpoint_error")
    );
    std::fs::remove_dir(&path).unwrap();
    env.append_log("in.json", &lines(110, 120));
    wait_until(
        Duration::from_secs(10),
        "/health 200",
        || health().0 == 200,
        || health().1,
    );
    env.wait_for_record(
        "input_resumed",
        "the checkpoint is saved again",
        Duration::from_secs(10),
    );
    engine.signal(libc::SIGTERM);
    engine.wait(Duration::from_secs(30)).assert_success();
}

/// `drop_when_full = true`: a full output drops instead of waiting, and says how many.
#[test]
fn drop_when_full_drops_and_counts() {
    let n = 30_000;
    let sock_dir = tempfile::tempdir().unwrap();
    let sock = sock_dir.path().join("nobody.sock");
    let env = env_with_output(
        &format!("ipc+stream://{}", sock.display()),
        ", buffer_mb = 1, drop_when_full = true",
        "shutdown_grace = 0.5",
        n,
    );
    let out = env.run(&["--shards", "2"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let s = out.summary();
    assert!(s.dropped > 0 && s.dropped < n as u64, "{}", out.stdout);
    assert_eq!(s.written + s.output_errors + s.dropped, n as u64, "{}", out.stdout);
    let (w, e, d) = out_counts(&env);
    assert_eq!((w, e, d), (s.written, s.output_errors, s.dropped));
}

/// The lines of an output file, decompressed for `zfile://` (which must be a valid gzip
/// file, every member complete, at any time).
fn read_output(path: &std::path::Path, gz: bool) -> Vec<u8> {
    let raw = std::fs::read(path).unwrap_or_default();
    if !gz {
        return raw;
    }
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(&raw[..]), &mut out)
        .unwrap_or_else(|e| panic!("{} is not a whole gzip file: {e}", path.display()));
    out
}

/// A full disk, made by a file size limit: the output file stops at the end of a whole
/// record (a whole gzip member for `zfile://`), the engine waits, and once the limit is lifted
/// it writes the rest: every record once, in order, exit 0.
fn full_disk(uri: &str, name: &str, gz: bool) {
    let n = 6000;
    let env = env_with_output(uri, "", "", n);
    let limit = if gz { 24 * 1024 } else { 300 * 1024 };
    let mut cmd = env.command(&[]);
    with_file_size_limit(&mut cmd, limit);
    let mut engine = spawn_in(cmd, env.dir.path(), "fsize");
    let out_path = env.log(name);
    wait_until(
        Duration::from_secs(60),
        "the output to fill up to the limit",
        || !env.log_records_of("output_waiting").is_empty(),
        || format!("size {:?}", std::fs::metadata(&out_path).map(|m| m.len())),
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        engine.child.try_wait().unwrap().is_none(),
        "the engine ended at the limit"
    );
    // Stopped at a record boundary, every line whole. The engine retries meanwhile: a retry
    // writes up to the limit and cuts the file back at once, so a read can fall in between;
    // what the file settles at is what counts.
    let settled = || -> Option<Vec<u8>> {
        let raw = std::fs::read(&out_path).unwrap_or_default();
        if !gz {
            return (raw.is_empty() || raw.ends_with(b"\n")).then_some(raw);
        }
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(&raw[..]), &mut out).ok()?;
        Some(out)
    };
    let bytes = (0..40)
        .find_map(|_| {
            settled().or_else(|| {
                std::thread::sleep(Duration::from_millis(25));
                None
            })
        })
        .unwrap_or_else(|| read_output(&out_path, gz));
    assert!(
        bytes.is_empty() || bytes.ends_with(b"\n"),
        "the file ends with a torn record"
    );
    let partial = split_lines(&bytes);
    assert!(partial.len() < n);
    check_in_order(&partial, partial.len());
    lift_file_size_limit(engine.child.id() as libc::pid_t);
    let out = engine.wait(RUN_TIMEOUT);
    out.assert_success();
    check_in_order(&split_lines(&read_output(&out_path, gz)), n);
    let s = out.summary();
    assert_eq!(
        (s.written, s.output_errors, s.dropped),
        (n as u64, 0, 0),
        "{}",
        out.stdout
    );
    assert_eq!(env.log_records_of("output_resumed").len(), 1);
}

#[test]
fn a_full_disk_never_tears_a_record_and_resumes() {
    full_disk("file://out.json<", "out.json", false);
}

#[test]
fn a_full_disk_never_tears_a_gzip_member_and_resumes() {
    full_disk("zfile://out.json.gz<", "out.json.gz", true);
}

/// `--log-format text`: the engine's records in `dragonfly-mle.log` and on stderr are text
/// lines (`<time> <LEVEL> <kind> key=value ...: message`); a script's own `log_event` records
/// stay JSON.
#[test]
fn log_format_text_writes_text_lines() {
    let env = env_with_output("file://out.json<", "", "", 3);
    env.analyzer(
        "a.lua",
        "function setup() end\nfunction loop(msg)\n  if msg.n == 1 then error('boom') end\n  dragonfly.log_event({ note = 'mine' })\n  dragonfly.output_event(default_output, msg)\nend\n",
    );
    let out = env.run(&["--log-format", "text"]);
    out.assert_success();
    let log = std::fs::read_to_string(env.log("dragonfly-mle.log")).unwrap();
    let err = log
        .lines()
        .find(|l| l.contains(" ERROR script_error "))
        .unwrap_or_else(|| panic!("no text script_error line:\n{log}"));
    assert!(err.contains("script=a") && err.ends_with("boom"), "{err}");
    assert!(err.starts_with("20") && !err.starts_with('{'), "{err}");
    assert_eq!(
        log.lines().filter(|l| l.contains("\"note\":\"mine\"")).count(),
        2,
        "{log}"
    );
    assert!(out.stderr.contains(" ERROR script_error "), "{}", out.stderr);
    // The default stays JSON.
    std::fs::remove_file(env.log("dragonfly-mle.log")).unwrap();
    let out = env.run(&[]);
    out.assert_success();
    assert!(!env.log_records_of("script_error").is_empty());
    assert!(out.stderr.contains("\"kind\":\"script_error\""), "{}", out.stderr);
}

/// An input full of invalid lines: the first 50 are reported in full, the rest counted in one
/// `suppressed` record; the counter stays exact and the log small.
#[test]
fn an_invalid_line_storm_keeps_the_log_small() {
    let n = 20_000;
    let env = env_with_output("file://out.json<", "", "", 0);
    let mut input: Vec<String> = (0..n).map(|i| format!("not json {i}")).collect();
    input.extend((0..10).map(event));
    env.write_log("in.json", &join_lines(&input));
    let out = env.run(&[]);
    out.assert_success();
    assert_eq!(out.summary().invalid, n as u64, "{}", out.stdout);
    assert_eq!(env.lines("out.json").len(), 10);
    assert_eq!(env.log_records_of("invalid_line").len(), 50);
    let sup = env.log_records_of("suppressed");
    assert_eq!(sup.len(), 1, "{sup:?}");
    assert_eq!(
        (sup[0]["of"].as_str(), sup[0]["count"].as_u64()),
        (Some("invalid_line"), Some(n as u64 - 50))
    );
    let size = std::fs::metadata(env.log("dragonfly-mle.log")).unwrap().len();
    assert!(size < 64 * 1024, "log of {size} bytes");
    let stats = env.stats_records();
    let last = stats.last().unwrap();
    assert_eq!(last["inputs"]["eve"]["invalid"], n as u64);
    // Every record is counted by kind, those left out included.
    assert_eq!(last["diagnostics"]["invalid_line"], n as u64, "{last}");
    assert_eq!(last["diagnostics"]["suppressed"], 1, "{last}");
}

/// `/health` answers 503 naming the output while it cannot deliver, and 200 once it does.
#[test]
fn health_reports_an_output_that_cannot_deliver() {
    let sock_dir = tempfile::tempdir().unwrap();
    let sock = sock_dir.path().join("late.sock");
    let env = Env::simple("tail://in.json<", ANALYZER_PASS, "", "");
    env.config(&format!(
        "inputs = {{ {{ tag = \"eve\", uri = \"tail://in.json<\", script = \"filter.lua\", default_analyzer = \"a\" }} }}\n\
         analyzers = {{ {{ tag = \"a\", script = \"a.lua\", default_analyzer = \"\", default_output = \"out\" }} }}\n\
         outputs = {{ {{ tag = \"out\", uri = \"ipc+stream://{}\" }} }}\n",
        sock.display()
    ));
    let lines: Vec<String> = (0..100).map(event).collect();
    env.write_log("in.json", &join_lines(&lines));
    let (mut engine, addr, _run) = spawn_watched(&env);
    env.wait_for_record("output_waiting", "", Duration::from_secs(30));
    let health = || health(&addr);
    let (code, body) = health();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("output out: failing ("), "{body}");
    // The held count is refreshed at each flush (100 ms).
    wait_until(
        Duration::from_secs(5),
        "100 records held",
        || health().1.contains("output out: failing (100 records held"),
        || health().1,
    );
    let listener = UnixListener::bind(&sock).unwrap();
    let reader = std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        BufReader::new(s).lines().take(100).count()
    });
    assert_eq!(reader.join().unwrap(), 100);
    wait_until(
        Duration::from_secs(10),
        "/health 200",
        || health().0 == 200,
        || health().1,
    );
    engine.signal(libc::SIGTERM);
    engine.wait(Duration::from_secs(30)).assert_success();
}

/// A datagram output whose socket is bound 1 s late, and whose reader is slower than the
/// engine: every event arrives, one datagram each, in order.
#[test]
fn a_datagram_output_waits_for_its_socket() {
    use std::os::unix::net::UnixDatagram;
    let n = 5000;
    let sock_dir = tempfile::tempdir().unwrap();
    let sock = sock_dir.path().join("out.dgram");
    let env = env_with_output(&format!("ipc://{}", sock.display()), "", "", n);
    let mut engine = env.spawn(&[]);
    std::thread::sleep(Duration::from_millis(1000));
    let rx = UnixDatagram::bind(&sock).unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    while got.len() < n {
        let k = rx.recv(&mut buf).unwrap();
        got.push(buf[..k].to_vec());
        if got.len() % 1000 == 0 {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let out = engine.wait(RUN_TIMEOUT);
    out.assert_success();
    check_in_order(&got, n);
    assert_eq!(out.summary().written, n as u64);
}

/// Validation runs on the workers, yet line reports keep the input's order: with two shards,
/// invalid and too-long lines among valid events are each reported once, in line order, with
/// their line number, byte offset and length, and only the valid events are written.
#[test]
fn line_reports_keep_the_input_order_on_two_shards() {
    let env = env_with_output("file://out.json", "", "max_line_bytes = 4096\n", 0);
    let mut text = Vec::new();
    // (line number, offset, length, kind) of every line that is no event.
    let mut bad: Vec<(u64, u64, u64, &str)> = Vec::new();
    let mut valid = 0;
    for i in 0..600usize {
        let line = match i % 7 {
            3 => format!("{{\"n\":{i},\"broken\":"),
            5 if i % 3 == 0 => format!("{{\"n\":{i},\"pad\":\"{}\"}}", "y".repeat(5000)),
            6 => format!("[{i}]\r"),
            _ => {
                valid += 1;
                event(i)
            }
        };
        match i % 7 {
            3 | 6 => bad.push((i as u64 + 1, text.len() as u64, line.len() as u64, "invalid_line")),
            5 if i % 3 == 0 => bad.push((i as u64 + 1, text.len() as u64, line.len() as u64, "line_too_long")),
            _ => {}
        }
        text.extend_from_slice(line.as_bytes());
        text.push(b'\n');
    }
    std::fs::write(env.log("in.json"), &text).unwrap();
    let out = env.run(&["--shards", "2"]);
    out.assert_success();
    // The summary's invalid count holds both kinds.
    let s = out.summary();
    assert_eq!((s.read, s.invalid), (valid, bad.len() as u64), "{}", out.stdout);
    assert_eq!(env.lines("out.json").len() as u64, valid);
    let reports: Vec<(u64, u64, u64, String)> = env
        .log_records()
        .iter()
        .filter(|r| r["kind"] == "invalid_line" || r["kind"] == "line_too_long")
        .map(|r| {
            (
                r["line"].as_u64().unwrap(),
                r["offset"].as_u64().unwrap(),
                r["length"].as_u64().unwrap(),
                r["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    // The first 50 of each kind in full (the limit), in the order of the lines.
    let mut want: Vec<(u64, u64, u64, String)> = Vec::new();
    let (mut inv, mut long) = (0, 0);
    for b in &bad {
        let n = if b.3 == "invalid_line" { &mut inv } else { &mut long };
        *n += 1;
        if *n <= 50 {
            want.push((b.0, b.1, b.2, b.3.to_string()));
        }
    }
    assert_eq!(reports, want);
}

/// A script's error text is whatever it built: a record keeps its first 4 KiB and says how
/// long it was (a 200 KB `error()` text made a 200 KB log line per event).
#[test]
fn a_huge_script_error_text_is_cut_in_its_record() {
    let env = Env::simple(
        "file://in.json",
        "function setup() end\nfunction loop(msg) error(string.rep('x', 200000)) end\n",
        "",
        "",
    );
    env.write_log("in.json", b"{\"a\":1}\n");
    let out = env.run(&[]);
    assert_eq!(out.summary().script_errors, 1, "{}", out.stderr);
    let errs = env.log_records_of("script_error");
    assert_eq!(errs.len(), 1, "{errs:?}");
    let m = errs[0]["message"].as_str().unwrap_or_default();
    assert!(m.len() < 4200, "a {}-byte message", m.len());
    assert!(
        m.contains("xxxx") && m.ends_with("bytes in all)"),
        "{}",
        &m[m.len().saturating_sub(80)..]
    );
}
