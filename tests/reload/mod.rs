//! Whole-configuration reload (SIGHUP and `--watch`): a changed output or analyzer entry is
//! applied while events keep coming, without losing or repeating one; an invalid new
//! configuration leaves the running one in place and says why.

use std::time::Duration;

use crate::util::*;

/// A tail input, one pass-through analyzer writing to `default_output`, the outputs given.
fn config(default_output: &str, outputs: &str, extra: &str) -> String {
    format!(
        "inputs = {{ {{ tag = \"eve\", uri = \"tail://in.json<\", script = \"filter.lua\", default_analyzer = \"a\" }} }}\n\
         analyzers = {{ {{ tag = \"a\", script = \"a.lua\", default_analyzer = \"\", default_output = \"{default_output}\" }} }}\n\
         outputs = {{ {outputs} }}\n\
         tail_poll_ms = 20\n{extra}\n"
    )
}

/// Appends numbered lines to `in.json` from a thread: `steps` runs of 500 from `from`, a
/// `pause` after each (events keep coming while a reload happens).
fn append_in_steps(env: &Env, from: usize, steps: usize, pause: Duration) -> std::thread::JoinHandle<()> {
    let path = env.log("in.json");
    std::thread::spawn(move || {
        for k in 0..steps {
            let at = from + k * 500;
            let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
            std::io::Write::write_all(&mut f, &numbered_lines(at, at + 500)).unwrap();
            std::thread::sleep(pause);
        }
    })
}

/// Waits (up to a minute) until `name` has `n` lines.
fn wait_lines(env: &Env, name: &str, n: usize) {
    wait_until(
        Duration::from_secs(60),
        &format!("{n} lines in {name}"),
        || env.lines(name).len() >= n,
        || env.lines(name).len().to_string(),
    );
}

/// Waits until `name` has `n` lines, then stops the engine with SIGTERM (a clean exit).
fn stop_when(env: &Env, engine: &mut Running, name: &str, n: usize) {
    wait_lines(env, name, n);
    engine.signal(libc::SIGTERM);
    engine.wait(Duration::from_secs(30)).assert_success();
}

fn ns(env: &Env, name: &str) -> Vec<u64> {
    env.lines(name)
        .iter()
        .map(|l| u64_member(l, "n").unwrap_or_else(|| panic!("not an event: {}", show(l))))
        .collect()
}

/// Events keep being appended while SIGHUP applies a configuration whose analyzer writes to a
/// new output: each event is in exactly one of the two files, in order, and the first file,
/// a truncating output kept by the new configuration, is not truncated again.
#[test]
fn a_reload_applies_a_new_output_without_losing_or_repeating_events() {
    let env = Env::simple("tail://in.json<", ANALYZER_PASS, "", "");
    let run = env.dir.path().join("run").to_string_lossy().into_owned();
    let out = "{ tag = \"out\", uri = \"file://out.json<\" }";
    env.config(&config("out", out, ""));
    env.write_log("in.json", &numbered_lines(0, 2000));
    let mut engine = env.spawn(&["--run-dir", &run, "--shards", "2"]);
    wait_lines(&env, "out.json", 2000);
    let total = 12_000;
    let appender = append_in_steps(&env, 2000, 20, Duration::from_millis(50));
    std::thread::sleep(Duration::from_millis(300));
    env.config(&config(
        "all",
        &format!("{out}, {{ tag = \"all\", uri = \"file://all.json<\" }}"),
        "",
    ));
    engine.signal(libc::SIGHUP);
    appender.join().unwrap();
    wait_until(
        Duration::from_secs(60),
        "every event written",
        || env.lines("out.json").len() + env.lines("all.json").len() >= total,
        || format!("{} + {}", env.lines("out.json").len(), env.lines("all.json").len()),
    );
    std::thread::sleep(Duration::from_millis(300));
    engine.signal(libc::SIGTERM);
    let res = engine.wait(Duration::from_secs(30));
    res.assert_success();
    let (a, b) = (ns(&env, "out.json"), ns(&env, "all.json"));
    assert!(a.len() >= 2000 && !b.is_empty(), "{} and {} lines", a.len(), b.len());
    let both: Vec<u64> = a.iter().chain(&b).copied().collect();
    assert_eq!(both, (0..total as u64).collect::<Vec<_>>(), "each event once, in order");
    let s = res.summary();
    assert_eq!((s.read, s.written), (total as u64, total as u64), "{}", res.stdout);
    let reloads = env.log_records_of("reload");
    assert!(
        reloads
            .iter()
            .any(|r| r["message"].as_str().unwrap_or("").contains("building it again")),
        "{reloads:?}"
    );
}

/// A new configuration with an error: reported with the reason, and the running one goes on.
#[test]
fn an_invalid_new_configuration_keeps_the_running_one() {
    let env = Env::simple("tail://in.json<", ANALYZER_PASS, "", "");
    let out = "{ tag = \"out\", uri = \"file://out.json<\" }";
    env.config(&config("out", out, ""));
    env.write_log("in.json", &numbered_lines(0, 1000));
    let mut engine = env.spawn(&["--run-dir", &env.dir.path().join("run").to_string_lossy()]);
    wait_lines(&env, "out.json", 1000);
    env.config(&config("nowhere", out, "stats_intervall = 5"));
    engine.signal(libc::SIGHUP);
    wait_until(
        Duration::from_secs(20),
        "a reload_error record",
        || !env.log_records_of("reload_error").is_empty(),
        || format!("{:?}", env.log_records()),
    );
    let e = env.log_records_of("reload_error");
    let msg = e[0]["message"].as_str().unwrap();
    assert!(msg.contains("stats_intervall") && msg.contains("did you mean"), "{msg}");
    assert!(msg.contains("the running one stays"), "{msg}");
    env.append_log("in.json", &numbered_lines(1000, 2000));
    wait_lines(&env, "out.json", 2000);
    engine.signal(libc::SIGTERM);
    engine.wait(Duration::from_secs(30)).assert_success();
    assert_eq!(ns(&env, "out.json"), (0..2000u64).collect::<Vec<_>>());
    // Counted with the reload errors (it was not: an alert on them never saw it).
    let last = env.stats_records().pop().expect("a stats line");
    assert_eq!(last["reload"]["errors"], 1, "{last}");
}

/// A new configuration that passes the checks but cannot start (an analyzer whose setup()
/// fails; an output that cannot be opened): the previous configuration runs again, the
/// reason is reported, and no event is lost or repeated. (The engine exited with status 1.)
#[test]
fn a_new_configuration_that_cannot_start_leaves_the_previous_one_running() {
    for case in ["setup", "output"] {
        let env = Env::simple("tail://in.json<", ANALYZER_PASS, "", "");
        let out = "{ tag = \"out\", uri = \"file://out.json<\" }";
        env.config(&config("out", out, ""));
        env.write_log("in.json", &numbered_lines(0, 1000));
        let mut engine = env.spawn(&[
            "--run-dir",
            &env.dir.path().join("run").to_string_lossy(),
            "--shards",
            "2",
        ]);
        wait_lines(&env, "out.json", 1000);
        let extra = match case {
            "setup" => {
                env.analyzer(
                    "b.lua",
                    "function setup() error('the model is missing') end\nfunction loop(msg) end\n",
                );
                "analyzers[#analyzers + 1] = { tag = \"b\", script = \"b.lua\", default_analyzer = \"\", default_output = \"out\" }"
            }
            // A dangling symbolic link where the output file goes, into a directory that does
            // not exist: its directory passes the check, and opening it fails (ENOENT).
            _ => {
                let link = env.logs.join("more.json");
                std::os::unix::fs::symlink(env.dir.path().join("no-such-dir/more.json"), &link).unwrap();
                "outputs[#outputs + 1] = { tag = \"more\", uri = \"file://more.json\" }"
            }
        };
        env.config(&config("out", out, extra));
        engine.signal(libc::SIGHUP);
        wait_until(
            Duration::from_secs(30),
            "a reload_error record",
            || !env.log_records_of("reload_error").is_empty(),
            || format!("{:?}", env.log_records()),
        );
        let e = env.log_records_of("reload_error");
        let msg = e[0]["message"].as_str().unwrap();
        assert!(
            msg.contains("could not start, the previous one runs again"),
            "{case}: {msg}"
        );
        let cause = if case == "setup" {
            "the model is missing"
        } else {
            "more.json"
        };
        assert!(msg.contains(cause), "{case}: {msg}");
        env.append_log("in.json", &numbered_lines(1000, 2000));
        stop_when(&env, &mut engine, "out.json", 2000);
        assert_eq!(ns(&env, "out.json"), (0..2000u64).collect::<Vec<_>>(), "{case}");
        // Counted with the reload errors of the pipeline that runs again.
        let last = env.stats_records().pop().expect("a stats line");
        assert_eq!(last["reload"]["errors"], 1, "{case}: {last}");
        // The new configuration never ran: no record says it did (one did, before the
        // setup() that failed).
        let applied = env.log_records_of("reload");
        assert!(
            !applied.iter().any(|r| r["message"]
                .as_str()
                .unwrap_or("")
                .contains("runs the new configuration")),
            "{case}: {applied:?}"
        );
    }
}

/// A configuration that cannot start because a script it keeps was edited into one whose
/// setup() fails: the fallback runs the scripts as they ran (here the text a script reload
/// gave it), not as their files are now. It read the broken file again, failed too, and the
/// engine exited with status 1 (also when the broken edit had been refused by a script
/// reload before, and the rebuild came from an unrelated change).
#[test]
fn a_fallback_runs_the_scripts_as_they_ran_not_as_their_files_are_now() {
    let env = Env::simple("tail://in.json<", ANALYZER_PASS, "", "");
    let out = "{ tag = \"out\", uri = \"file://out.json<\" }";
    env.config(&config("out", out, ""));
    env.write_log("in.json", &numbered_lines(0, 500));
    let mut engine = env.spawn(&[
        "--run-dir",
        &env.dir.path().join("run").to_string_lossy(),
        "--shards",
        "2",
    ]);
    wait_lines(&env, "out.json", 500);
    // A script reload that works: version 2 runs.
    let v2 =
        "function setup() end\nfunction loop(msg)\n  msg.ver = 2\n  dragonfly.output_event(default_output, msg)\nend\n";
    env.analyzer("a.lua", v2);
    engine.signal(libc::SIGHUP);
    wait_log_message(&env, "reload 1: 2 of 2 scripts reloaded");
    env.append_log("in.json", &numbered_lines(500, 1000));
    wait_lines(&env, "out.json", 1000);
    // The file broken: a script reload refuses it, version 2 keeps running.
    env.analyzer(
        "a.lua",
        "function setup() error('no model') end\nfunction loop(msg) end\n",
    );
    engine.signal(libc::SIGHUP);
    wait_log_message(&env, "the previous version keeps running");
    // An unrelated change rebuilds the pipeline: a.lua (changed since it ran) fails, and the
    // previous configuration runs again with version 2.
    env.config(&config("out", out, "stats_interval = 30"));
    engine.signal(libc::SIGHUP);
    wait_log_message(&env, "could not start, the previous one runs again");
    env.append_log("in.json", &numbered_lines(1000, 1500));
    stop_when(&env, &mut engine, "out.json", 1500);
    assert_eq!(ns(&env, "out.json"), (0..1500u64).collect::<Vec<_>>());
    let lines = env.lines("out.json");
    let ver = |l: &Vec<u8>| u64_member(l, "ver");
    assert!(
        lines[1000..].iter().all(|l| ver(l) == Some(2)),
        "{}",
        show(&lines[1000])
    );
}

/// `--watch`: a changed script is reloaded without a signal; a changed config.lua rebuilds.
#[test]
fn watch_reloads_changed_files_without_a_signal() {
    let env = Env::simple("tail://in.json<", ANALYZER_PASS, "", "");
    let out = "{ tag = \"out\", uri = \"file://out.json<\" }";
    env.config(&config("out", out, ""));
    env.write_log("in.json", &numbered_lines(0, 100));
    let mut engine = env.spawn(&["--watch", "--run-dir", &env.dir.path().join("run").to_string_lossy()]);
    wait_lines(&env, "out.json", 100);
    env.analyzer(
        "a.lua",
        "function setup() end\nfunction loop(msg)\n  msg.ver = 2\n  dragonfly.output_event(default_output, msg)\nend\n",
    );
    wait_log_message(&env, "scripts reloaded");
    // The request comes before its outcome in {log} (it was written after it).
    let reload: Vec<String> = env
        .log_records_of("reload")
        .iter()
        .filter_map(|r| r["message"].as_str().map(str::to_string))
        .collect();
    let asked = reload.iter().position(|m| m.contains(" requested ("));
    let done = reload.iter().position(|m| m.contains("scripts reloaded"));
    assert!(asked.is_some() && asked < done, "{reload:?}");
    env.append_log("in.json", &numbered_lines(100, 200));
    wait_lines(&env, "out.json", 200);
    let l = env.lines("out.json");
    assert_eq!(u64_member(&l[150], "ver"), Some(2), "{}", show(&l[150]));
    // A touch (new time, same content) is no change: no reload (it threw the scripts' states
    // away).
    let a = env.root.join("analyzer/a.lua");
    let later = std::time::SystemTime::now() + Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(&a)
        .unwrap()
        .set_modified(later)
        .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    let requested = |env: &Env| {
        env.log_records_of("reload")
            .iter()
            .filter(|r| r["message"].as_str().unwrap_or("").contains(" requested ("))
            .count()
    };
    assert_eq!(requested(&env), 1, "{:?}", env.log_records_of("reload"));
    env.config(&config(
        "two",
        &format!("{out}, {{ tag = \"two\", uri = \"file://two.json<\" }}"),
        "",
    ));
    wait_log_message(&env, "building it again");
    // Lines read before the switch go by the old configuration: append once the new one runs.
    wait_log_message(&env, "runs the new configuration");
    env.append_log("in.json", &numbered_lines(200, 300));
    wait_until(
        Duration::from_secs(60),
        "100 lines in two.json",
        || env.lines("two.json").len() >= 100,
        String::new,
    );
    engine.signal(libc::SIGTERM);
    engine.wait(Duration::from_secs(30)).assert_success();
    assert_eq!(ns(&env, "out.json"), (0..200u64).collect::<Vec<_>>());
    assert_eq!(ns(&env, "two.json"), (200..300u64).collect::<Vec<_>>());
}

/// An input renamed by a reload (a new tag, the same `tail://` path) goes on where it
/// stopped: events appended during the rebuild were lost (without `<`: followed from the end)
/// or everything was read again (with `<`).
#[test]
fn a_renamed_input_goes_on_where_it_stopped() {
    for uri in ["tail://in.json", "tail://in.json<"] {
        let env = Env::simple("tail://in.json<", ANALYZER_PASS, "", "");
        let out = "{ tag = \"out\", uri = \"file://out.json<\" }";
        let cfg = config("out", out, "").replace("tail://in.json<", uri);
        env.config(&cfg);
        env.write_log("in.json", b"");
        let mut engine = env.spawn(&["--run-dir", &env.dir.path().join("run").to_string_lossy()]);
        // Followed from its end (without `<`): lines appended once the engine is up.
        std::thread::sleep(Duration::from_millis(1000));
        env.append_log("in.json", &numbered_lines(0, 2000));
        wait_lines(&env, "out.json", 2000);
        let total = 8000;
        let appender = append_in_steps(&env, 2000, 12, Duration::from_millis(40));
        std::thread::sleep(Duration::from_millis(150));
        env.config(&cfg.replace("tag = \"eve\"", "tag = \"sensor1\""));
        engine.signal(libc::SIGHUP);
        appender.join().unwrap();
        wait_log_message(&env, "runs the new configuration");
        stop_when(&env, &mut engine, "out.json", total);
        assert_eq!(
            ns(&env, "out.json"),
            (0..total as u64).collect::<Vec<_>>(),
            "{uri}: each event once, in order"
        );
    }
}

/// `--watch` sees an edit that keeps the file's size and modification time (`cp -p`,
/// `rsync -a`): it compares the content too (such an edit was never loaded).
#[test]
fn watch_sees_an_edit_that_keeps_size_and_time() {
    let version = |v: u32| {
        format!(
            "function setup() end\nfunction loop(msg)\n  msg.ver = {v}\n  dragonfly.output_event(default_output, msg)\nend\n"
        )
    };
    let env = Env::simple("tail://in.json<", &version(1), "", "");
    env.config(&config("out", "{ tag = \"out\", uri = \"file://out.json<\" }", ""));
    env.write_log("in.json", &numbered_lines(0, 100));
    let mut engine = env.spawn(&["--watch", "--run-dir", &env.dir.path().join("run").to_string_lossy()]);
    wait_lines(&env, "out.json", 100);
    let path = env.root.join("analyzer/a.lua");
    let time = std::fs::metadata(&path).unwrap().modified().unwrap();
    env.analyzer("a.lua", &version(2));
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(time)
        .unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), time);
    wait_log_message(&env, "scripts reloaded");
    env.append_log("in.json", &numbered_lines(100, 200));
    stop_when(&env, &mut engine, "out.json", 200);
    let l = env.lines("out.json");
    assert_eq!(u64_member(&l[150], "ver"), Some(2), "{}", show(&l[150]));
}

/// A rebuild keeps the Lua state of a script whose entry and text did not change: an
/// analyzer's in-memory counter goes on across a reload that adds an output and changes the
/// GC pause.
#[test]
fn a_rebuild_keeps_the_state_of_unchanged_scripts() {
    let counter = "local count = 0\nfunction setup() end\nfunction loop(msg)\n  count = count + 1\n  msg.count = count\n  dragonfly.output_event(default_output, msg)\nend\n";
    let env = Env::simple("tail://in.json<", counter, "", "");
    let out = "{ tag = \"out\", uri = \"file://out.json<\" }";
    env.config(&config("out", out, ""));
    env.write_log("in.json", &numbered_lines(0, 500));
    let run = env.dir.path().join("run").to_string_lossy().into_owned();
    let mut engine = env.spawn(&["--run-dir", &run, "--shards", "1"]);
    wait_lines(&env, "out.json", 500);
    // A new output, and a new GC pause (which needs no new Lua state).
    env.config(&config(
        "out",
        &format!("{out}, {{ tag = \"extra\", uri = \"file://extra.json\" }}"),
        "gc_pause = 400",
    ));
    engine.signal(libc::SIGHUP);
    // Appended once the new pipeline runs (lines read before the switch go by the old one).
    wait_log_message(&env, "runs the new configuration");
    env.append_log("in.json", &numbered_lines(500, 1000));
    wait_lines(&env, "out.json", 1000);
    engine.signal(libc::SIGTERM);
    engine.wait(Duration::from_secs(30)).assert_success();
    let counts: Vec<u64> = env
        .lines("out.json")
        .iter()
        .map(|l| u64_member(l, "count").unwrap())
        .collect();
    assert_eq!(counts, (1..=1000u64).collect::<Vec<_>>(), "the counter started again");
    assert_eq!(ns(&env, "out.json"), (0..1000u64).collect::<Vec<_>>());
}

/// Socket inputs keep their socket across a rebuild: a datagram producer and a stream
/// producer sending all along are never refused, and every event arrives once, in order.
#[test]
fn socket_inputs_stay_open_across_a_rebuild() {
    use std::io::Write as _;
    use std::os::unix::net::{UnixDatagram, UnixStream};
    let sock_dir = tempfile::tempdir().unwrap();
    let (dpath, spath) = (sock_dir.path().join("in.dgram"), sock_dir.path().join("in.stream"));
    let env = Env::simple("file://unused.json", ANALYZER_PASS, "", "");
    let cfg = |outputs: &str| {
        format!(
            "inputs = {{ {{ tag = \"d\", uri = \"ipc://{}\", script = \"filter.lua\", default_analyzer = \"a\" }},\n\
             {{ tag = \"s\", uri = \"ipc+stream://{}\", script = \"filter.lua\", default_analyzer = \"a\" }} }}\n\
             analyzers = {{ {{ tag = \"a\", script = \"a.lua\", default_analyzer = \"\", default_output = \"out\" }} }}\n\
             outputs = {{ {outputs} }}\n",
            dpath.display(),
            spath.display()
        )
    };
    let out = "{ tag = \"out\", uri = \"file://out.json<\" }";
    env.config(&cfg(out));
    let run = env.dir.path().join("run").to_string_lossy().into_owned();
    let mut engine = env.spawn(&["--run-dir", &run]);
    wait_until(
        Duration::from_secs(30),
        "the sockets",
        || dpath.exists() && spath.exists(),
        String::new,
    );
    let n = 3000;
    let producers = {
        let (dpath, spath) = (dpath.clone(), spath.clone());
        std::thread::spawn(move || {
            let d = UnixDatagram::unbound().unwrap();
            let mut s = UnixStream::connect(&spath).unwrap();
            let mut refused = 0;
            for i in 0..n {
                // Even numbers by datagram, odd ones on the stream.
                if i % 2 == 0 {
                    if d.send_to(numbered_event(i).as_bytes(), &dpath).is_err() {
                        refused += 1;
                    }
                } else if s.write_all(format!("{}\n", numbered_event(i)).as_bytes()).is_err() {
                    refused += 1;
                }
                if i % 100 == 0 {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            refused
        })
    };
    std::thread::sleep(Duration::from_millis(150));
    env.config(&cfg(&format!(
        "{out}, {{ tag = \"extra\", uri = \"file://extra.json\" }}"
    )));
    engine.signal(libc::SIGHUP);
    wait_log_message(&env, "building it again");
    assert_eq!(producers.join().unwrap(), 0, "sends were refused");
    wait_lines(&env, "out.json", n);
    engine.signal(libc::SIGTERM);
    engine.wait(Duration::from_secs(30)).assert_success();
    let mut got = ns(&env, "out.json");
    got.sort_unstable();
    assert_eq!(got, (0..n as u64).collect::<Vec<_>>(), "each event once");
    assert!(!dpath.exists() && !spath.exists(), "socket files left behind");
}

/// A `file://` replay rebuilt mid-file by a reload goes on where it was and keeps the file's
/// line numbers: an invalid line after the reload is reported with its number in the file.
#[test]
fn a_reload_mid_replay_keeps_the_files_line_numbers() {
    let env = Env::simple("file://in.json?pace=1", ANALYZER_PASS, "", "");
    let cfg = |outputs: &str| {
        format!(
            "inputs = {{ {{ tag = \"eve\", uri = \"file://in.json?pace=1\", script = \"filter.lua\", default_analyzer = \"a\" }} }}\n\
             analyzers = {{ {{ tag = \"a\", script = \"a.lua\", default_analyzer = \"\", default_output = \"out\" }} }}\n\
             outputs = {{ {outputs} }}\nmax_line_bytes = 4096\n"
        )
    };
    let out = "{ tag = \"out\", uri = \"file://out.json<\" }";
    env.config(&cfg(out));
    // 600 lines of 2 KB, 10 ms apart (6 s at pace 1, over three of the reader's 512 KiB reads
    // with max_line_bytes = 4096: a rebuild resumes after the read under way); line 451 is not
    // JSON.
    let pad = "x".repeat(2000);
    let lines: Vec<String> = (0..600)
        .map(|i| {
            let ts = format!("2024-03-01T12:00:{:02}.{:06}+0000", i / 100, (i % 100) * 10_000);
            if i == 450 {
                format!("{{\"timestamp\":\"{ts}\",\"broken\":")
            } else {
                format!("{{\"timestamp\":\"{ts}\",\"event_type\":\"flow\",\"n\":{i},\"pad\":\"{pad}\"}}")
            }
        })
        .collect();
    env.write_log("in.json", &join_lines(&lines));
    let mut engine = env.spawn(&[]);
    wait_until(
        Duration::from_secs(30),
        "50 events",
        || env.lines("out.json").len() >= 50,
        String::new,
    );
    env.config(&cfg(&format!(
        "{out}, {{ tag = \"extra\", uri = \"file://extra.json\" }}"
    )));
    engine.signal(libc::SIGHUP);
    wait_log_message(&env, "runs the new configuration");
    assert!(
        env.lines("out.json").len() < 450,
        "the reload came after the invalid line"
    );
    engine.wait(Duration::from_secs(60)).assert_success();
    assert_eq!(
        ns(&env, "out.json"),
        (0..600u64).filter(|&i| i != 450).collect::<Vec<_>>()
    );
    let reported: Vec<u64> = env
        .log_records_of("invalid_line")
        .iter()
        .map(|r| r["line"].as_u64().unwrap())
        .collect();
    assert_eq!(reported, [451], "the invalid line's number in the file");
}

/// With relative `-r`, `-l` and `--config` (the engine enters the root directory), a reload
/// still finds its configuration: the new output is used (it failed with "root is not a
/// directory" before).
#[test]
fn a_reload_works_with_relative_paths() {
    let env = Env::simple("tail://in.json<", ANALYZER_PASS, "", "");
    let out = "{ tag = \"out\", uri = \"file://out.json<\" }";
    env.config(&config("out", out, ""));
    env.write_log("in.json", &numbered_lines(0, 100));
    let mut cmd = std::process::Command::new(bin());
    cmd.current_dir(env.dir.path())
        .args(["-r", "root", "-l", "logs", "--config", "root/config/config.lua"])
        .args(["--no-pin", "--http", "off", "--shards", "1"]);
    let mut engine = spawn_in(cmd, env.dir.path(), "bg");
    wait_lines(&env, "out.json", 100);
    env.config(&config(
        "all",
        &format!("{out}, {{ tag = \"all\", uri = \"file://all.json<\" }}"),
        "",
    ));
    engine.signal(libc::SIGHUP);
    wait_until(
        Duration::from_secs(30),
        "the reload",
        || !env.log_records_of("reload").is_empty() || !env.log_records_of("reload_error").is_empty(),
        String::new,
    );
    env.append_log("in.json", &numbered_lines(100, 200));
    wait_until(
        Duration::from_secs(30),
        "every event written",
        || env.lines("out.json").len() + env.lines("all.json").len() >= 200,
        || format!("{:?}", env.log_records_of("reload_error")),
    );
    engine.signal(libc::SIGTERM);
    engine.wait(Duration::from_secs(30)).assert_success();
    assert_eq!(
        ns(&env, "all.json"),
        (100..200).collect::<Vec<u64>>(),
        "the new output's events"
    );
    assert!(env.log_records_of("reload_error").is_empty());
}

/// A reload while an output cannot deliver waits for it (without a grace: nothing may be lost),
/// and says so after 10 s (it waited in silence); once the output delivers, the reload applies.
#[test]
fn a_reload_waiting_for_a_failing_output_says_so() {
    let sock_dir = tempfile::tempdir().unwrap();
    let sock = sock_dir.path().join("late.sock");
    let env = Env::simple("tail://in.json<", ANALYZER_PASS, "", "");
    let stream = format!("{{ tag = \"out\", uri = \"ipc+stream://{}\" }}", sock.display());
    env.config(&config("out", &stream, ""));
    env.write_log("in.json", &numbered_lines(0, 100));
    let run = env.dir.path().join("run").to_string_lossy().into_owned();
    let mut engine = env.spawn(&["--run-dir", &run]);
    wait_until(
        Duration::from_secs(30),
        "output_waiting",
        || !env.log_records_of("output_waiting").is_empty(),
        String::new,
    );
    env.config(&config(
        "all",
        &format!("{stream}, {{ tag = \"all\", uri = \"file://all.json<\" }}"),
        "",
    ));
    engine.signal(libc::SIGHUP);
    env.wait_for_record(
        "output_waiting",
        "the pipeline is ending (a reload or a stop)",
        Duration::from_secs(40),
    );
    // Both records count what is held in records (the second gave bytes).
    let waiting = env.log_records_of("output_waiting");
    let held: Vec<u64> = waiting.iter().map(|r| r["held"].as_u64().unwrap()).collect();
    assert_eq!(held, vec![100, 100], "{waiting:?}");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let reader = std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        std::io::BufRead::lines(std::io::BufReader::new(s)).take(100).count()
    });
    assert_eq!(reader.join().unwrap(), 100);
    env.append_log("in.json", &numbered_lines(100, 150));
    wait_until(
        Duration::from_secs(30),
        "the new output used",
        || env.lines("all.json").len() >= 50,
        || format!("{:?}", env.log_records()),
    );
    engine.signal(libc::SIGTERM);
    engine.wait(Duration::from_secs(30));
}

/// `/health`'s uptime counts from the run's start, not from the last rebuild (it restarted at
/// every rebuild).
#[test]
fn uptime_survives_a_rebuild() {
    let env = Env::simple("tail://in.json<", ANALYZER_PASS, "", "");
    let out = "{ tag = \"out\", uri = \"file://out.json<\" }";
    env.config(&config("out", out, ""));
    env.write_log("in.json", &numbered_lines(0, 10));
    let run = env.dir.path().join("run").to_string_lossy().into_owned();
    let mut engine = env.spawn(&["--run-dir", &run, "--http", "127.0.0.1:0"]);
    crate::ops::http_address(&env);
    std::thread::sleep(Duration::from_millis(2000));
    env.config(&config(
        "all",
        &format!("{out}, {{ tag = \"all\", uri = \"file://all.json<\" }}"),
        "",
    ));
    engine.signal(libc::SIGHUP);
    env.wait_for_record("reload", "runs the new configuration", Duration::from_secs(30));
    // The endpoint stays on its socket for the new pipeline (the same ephemeral port).
    let last = env.log_records_of("http_listening").last().unwrap()["address"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, body) = crate::ops::request(&last, "GET", "/health");
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let up = v["uptime_s"].as_f64().unwrap();
    assert!(up >= 2.0, "uptime {up} after a rebuild");
    engine.signal(libc::SIGTERM);
    engine.wait(Duration::from_secs(30)).assert_success();
}

/// CPU time used so far by process `pid`, in clock ticks (utime + stime of /proc/PID/stat).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name is in parentheses and may hold spaces: fields count from after it.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    field(11) + field(12)
}

/// Starts the engine and waits until it has used a tenth of a second of CPU (inside a
/// config.lua that keeps it busy).
fn spawn_reading_config(env: &Env) -> Running {
    let engine = env.spawn(&[]);
    let pid = engine.child.id();
    wait_until(
        Duration::from_secs(30),
        "the engine reading its configuration",
        || cpu_ticks(pid) >= 10,
        || cpu_ticks(pid).to_string(),
    );
    engine
}

/// An installation reading `tail://in.json<` whose config.lua keeps the engine busy while it
/// is read (a long loop, well over a tenth of a second of CPU), with `lines` numbered lines in
/// in.json; the engine started and, once it has used a tenth of a second of CPU, inside that
/// loop (so that a test can send signals while the configuration is read).
fn engine_reading_a_slow_config(extra: &str, lines: usize) -> (Env, Running) {
    let env = Env::simple("tail://in.json<", ANALYZER_PASS, "", "");
    env.config(&format!(
        "local x = 0\nfor i = 1, 400000000 do x = x + i % 7 end\n{}",
        simple_config("tail://in.json<", "", extra)
    ));
    env.write_log("in.json", &numbered_lines(0, lines));
    let engine = spawn_reading_config(&env);
    assert!(
        env.lines("out.json").is_empty(),
        "the configuration was read already: the test proves nothing"
    );
    (env, engine)
}

/// SIGHUP and SIGUSR1 sent while the configuration is read (a logrotate `postrotate` right
/// after a restart): the engine goes on and writes every event (they ended it, status 129 and
/// 138, before its handlers were installed).
#[test]
fn reload_and_reopen_signals_while_the_configuration_is_read_do_not_end_the_engine() {
    let (env, mut engine) = engine_reading_a_slow_config("tail_poll_ms = 20", 300);
    engine.signal(libc::SIGHUP);
    engine.signal(libc::SIGUSR1);
    wait_lines(&env, "out.json", 300);
    env.append_log("in.json", &numbered_lines(300, 600));
    stop_when(&env, &mut engine, "out.json", 600);
    assert_eq!(ns(&env, "out.json"), (0..600u64).collect::<Vec<_>>());
}

/// A config.lua that never ends (a loop by mistake) is ended by SIGTERM, with status 0 and an
/// empty summary: nothing started (only SIGKILL ended it).
#[test]
fn a_stop_signal_ends_a_config_lua_that_never_ends() {
    let env = Env::simple("tail://in.json<", ANALYZER_PASS, "", "");
    env.config(&format!(
        "while true do end\n{}",
        simple_config("tail://in.json<", "", "")
    ));
    env.write_log("in.json", &numbered_lines(0, 10));
    let mut engine = spawn_reading_config(&env);
    engine.signal(libc::SIGTERM);
    let out = engine.wait(Duration::from_secs(20));
    out.assert_success();
    assert!(
        out.stderr.contains("stopped while config.lua was being evaluated"),
        "{}",
        out.stderr
    );
    assert_eq!(out.summary().read, 0, "{}", out.stdout);
    assert!(env.lines("out.json").is_empty());
}

/// SIGTERM while the configuration is read ends the run cleanly, with its summary and status 0
/// (it killed the process without either).
#[test]
fn a_stop_signal_while_the_configuration_is_read_ends_the_run_cleanly() {
    let (_env, mut engine) = engine_reading_a_slow_config("", 100);
    engine.signal(libc::SIGTERM);
    let out = engine.wait(Duration::from_secs(60));
    out.assert_success();
    let s = out.summary();
    assert_eq!(s.read, s.written, "{}", out.stdout);
}

/// Errors of finalizers that run as a reload closes a script's state are never charged to
/// another script. Before, they were matched to scripts by the address of their state, and the
/// next state made could be at that address: each of the filter's "closed" errors was reported
/// as the analyzer's (5 of 5 reloads in the review's run).
#[test]
fn finalizer_errors_of_a_closed_state_are_not_charged_to_another_script() {
    let scripts = |v: usize| {
        (
            format!(
                "keep = newproxy(true)\ngetmetatable(keep).__gc = function() error(\"filter v{v} closed\") end\n\
                 function setup() end\nfunction loop(msg) dragonfly.analyze_event(\"a\", msg) end\n"
            ),
            format!(
                "keep = newproxy(true)\ngetmetatable(keep).__gc = function() error(\"analyzer v{v} closed\") end\n\
                 function setup() end\nfunction loop(msg) dragonfly.output_event(\"out\", msg) end\n"
            ),
        )
    };
    let env = Env::new();
    env.config(&config("out", "{ tag = \"out\", uri = \"file://out.json<\" }", ""));
    let (f, a) = scripts(0);
    env.filter("filter.lua", &f);
    env.analyzer("a.lua", &a);
    env.write_log("in.json", &numbered_lines(0, 100));
    let run = env.dir.path().join("run").to_string_lossy().into_owned();
    let mut engine = env.spawn(&["--run-dir", &run, "--shards", "1"]);
    wait_lines(&env, "out.json", 100);
    for v in 1..=4 {
        let (f, a) = scripts(v);
        env.filter("filter.lua", &f);
        env.analyzer("a.lua", &a);
        engine.signal(libc::SIGHUP);
        wait_until(
            Duration::from_secs(60),
            &format!("reload {v}"),
            || {
                env.log_records()
                    .iter()
                    .filter(|r| r["message"].as_str().is_some_and(|m| m.contains("scripts reloaded")))
                    .count()
                    >= v
            },
            || format!("{:?}", env.log_records()),
        );
        env.append_log("in.json", &numbered_lines(100 * v, 100 * (v + 1)));
        wait_lines(&env, "out.json", 100 * (v + 1));
    }
    engine.signal(libc::SIGTERM);
    engine.wait(Duration::from_secs(30)).assert_success();
    for r in env.log_records_of("script_error") {
        let (script, m) = (r["script"].as_str().unwrap_or(""), r["message"].as_str().unwrap_or(""));
        let wrong = (script == "a" && m.contains("filter v")) || (script == "eve" && m.contains("analyzer v"));
        assert!(!wrong, "charged to another script: {r}");
    }
}

/// A reload whose config.lua never ends is given up after 60 s with a `reload_error`: it held
/// every later reload, without a word, until the engine stopped. The running configuration
/// goes on meanwhile, and a later reload applies.
#[test]
fn a_reload_whose_config_lua_never_ends_is_given_up() {
    let good = |extra: &str| simple_config("tail://in.json<", "", &format!("tail_poll_ms = 20\n{extra}"));
    let env = Env::simple("tail://in.json<", ANALYZER_PASS, "", "");
    env.config(&good(""));
    env.write_log("in.json", &numbered_lines(0, 10));
    let mut engine = env.spawn(&[]);
    wait_lines(&env, "out.json", 10);
    env.config(&format!("while true do end\n{}", good("")));
    engine.signal(libc::SIGHUP);
    env.append_log("in.json", &numbered_lines(10, 20));
    wait_lines(&env, "out.json", 20);
    wait_until(
        Duration::from_secs(120),
        "a reload_error record",
        || !env.log_records_of("reload_error").is_empty(),
        || format!("{:?}", env.log_records()),
    );
    let e = env.log_records_of("reload_error");
    assert!(
        e[0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("did not finish in 60 s"),
        "{e:?}"
    );
    env.config(&good("stats_interval = 5"));
    engine.signal(libc::SIGHUP);
    wait_log_message(&env, "runs the new configuration");
    env.append_log("in.json", &numbered_lines(20, 30));
    stop_when(&env, &mut engine, "out.json", 30);
    assert_eq!(ns(&env, "out.json"), (0..30u64).collect::<Vec<_>>());
}
