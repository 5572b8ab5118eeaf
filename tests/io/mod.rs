//! Sources and sinks on real sockets and files: `ipc://` (datagram) and `ipc+stream://`
//! inputs fed by several concurrent producers, the same as outputs read by a test peer, gzip
//! input through `file://` and `zfile://`, and the `zfile://` output.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::util::*;

/// Events numbered `p * per + i` (producer p, event i), each with a flow tuple.
fn event(p: usize, i: usize, per: usize) -> String {
    let n = p * per + i;
    format!(
        "{{\"timestamp\":\"2024-03-01T12:00:00.{:06}+0000\",\"event_type\":\"flow\",\"src_ip\":\"10.0.{}.{}\",\"src_port\":{},\"dest_ip\":\"10.1.0.1\",\"dest_port\":443,\"proto\":\"TCP\",\"n\":{n},\"p\":{p}}}",
        n % 1_000_000,
        p,
        i % 250,
        1024 + i % 5000
    )
}

/// Checks that `lines` hold every event of `producers x per` exactly once, and each producer's
/// events in the order it sent them (per-flow order, one flow per producer and source port).
fn check_all_once(lines: &[Vec<u8>], producers: usize, per: usize) {
    let mut seen = BTreeSet::new();
    let mut last = vec![None; producers];
    for l in lines {
        let n = u64_member(l, "n").unwrap_or_else(|| panic!("no n in {}", show(l)));
        assert!(seen.insert(n), "event {n} twice");
        let p = u64_member(l, "p").unwrap() as usize;
        assert!(last[p].is_none_or(|m| m < n), "producer {p}: {n} after {:?}", last[p]);
        last[p] = Some(n);
    }
    assert_eq!(seen.len(), producers * per, "events missing");
}

fn wait_lines(env: &Env, name: &str, n: usize) {
    wait_until(
        Duration::from_secs(120),
        &format!("{n} lines in {name}"),
        || env.lines(name).len() >= n,
        || format!("{} lines; log: {:?}", env.lines(name).len(), env.log_records()),
    );
}

fn short_dir() -> tempfile::TempDir {
    // Socket paths must stay under 108 bytes: keep them in /tmp.
    tempfile::Builder::new().prefix("dfm").tempdir_in("/tmp").unwrap()
}

/// An engine reading the datagram socket `in.sock` (in a short directory, kept alive by the
/// returned guard) into the pass-through analyzer, with `extra` in config.lua and `--shards
/// shards`, started and bound.
fn datagram_engine(extra: &str, shards: &str) -> (tempfile::TempDir, PathBuf, Env, Running) {
    let sockdir = short_dir();
    let sock = sockdir.path().join("in.sock");
    let env = Env::simple(&format!("ipc://{}", sock.display()), ANALYZER_PASS, "", extra);
    let engine = env.spawn(&["--shards", shards]);
    wait_until(Duration::from_secs(10), "the socket", || sock.exists(), String::new);
    (sockdir, sock, env, engine)
}

#[test]
fn datagram_input_with_concurrent_producers() {
    let (_sockdir, sock, env, mut engine) = datagram_engine("stats_interval = 1", "2");
    let (producers, per) = (4, 25_000);
    let threads: Vec<_> = (0..producers)
        .map(|p| {
            let sock = sock.clone();
            std::thread::spawn(move || {
                let s = UnixDatagram::unbound().unwrap();
                for i in 0..per {
                    // Blocking sends: the kernel makes the producer wait rather than drop.
                    s.send_to(event(p, i, per).as_bytes(), &sock).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    wait_lines(&env, "out.json", producers * per);
    engine.signal(libc::SIGINT);
    engine.wait(Duration::from_secs(30)).assert_success();
    check_all_once(&env.lines("out.json"), producers, per);
    let stats = env.stats_records();
    let last = stats.last().unwrap();
    assert_eq!(last["inputs"]["eve"]["events"], (producers * per) as u64, "{last}");
    assert!(last["inputs"]["eve"]["ring_full"].is_u64(), "{last}");
}

/// A datagram is one line: one longer than `max_line_bytes` is reported with its own length
/// and skipped, as a line of a file is (datagrams up to 256 KiB passed whatever the limit, and
/// a longer one was reported as 262,144 bytes long).
#[test]
fn datagrams_longer_than_max_line_bytes_are_reported_with_their_length() {
    let (_sockdir, sock, env, mut engine) = datagram_engine("max_line_bytes = 1000", "1");
    let sized = |n: usize, tag: &str| {
        let head = format!("{{\"tag\":\"{tag}\",\"pad\":\"");
        format!("{head}{}\"}}", "x".repeat(n - head.len() - 2))
    };
    let (ok, long, huge, last) = (
        sized(990, "ok"),
        sized(1500, "long"),
        sized(100_000, "huge"),
        sized(200, "last"),
    );
    let s = UnixDatagram::unbound().unwrap();
    for d in [&ok, &long, &huge, &last] {
        s.send_to(d.as_bytes(), &sock).unwrap();
    }
    wait_lines(&env, "out.json", 2);
    engine.signal(libc::SIGTERM);
    engine.wait(Duration::from_secs(30)).assert_success();
    let d = diff_lines(&[&ok, &last], &env.lines("out.json"));
    assert!(d.is_empty(), "out.json:\n{d}");
    let too_long = env.log_records_of("line_too_long");
    let lengths: Vec<_> = too_long.iter().map(|r| r["length"].as_u64()).collect();
    assert_eq!(lengths, [Some(1500), Some(100_000)], "{too_long:?}");
}

#[test]
fn stream_input_with_concurrent_producers() {
    let sockdir = short_dir();
    let sock = sockdir.path().join("in.sock");
    let env = Env::simple(&format!("ipc+stream://{}", sock.display()), ANALYZER_PASS, "", "");
    let mut engine = env.spawn(&["--shards", "2"]);
    wait_until(Duration::from_secs(10), "the socket", || sock.exists(), String::new);
    let (producers, per) = (4, 25_000);
    let threads: Vec<_> = (0..producers)
        .map(|p| {
            let sock = sock.clone();
            std::thread::spawn(move || {
                let mut s = std::io::BufWriter::new(UnixStream::connect(&sock).unwrap());
                for i in 0..per {
                    s.write_all(event(p, i, per).as_bytes()).unwrap();
                    // Some producers end lines with CRLF, the last line of one has none.
                    if !(p == 3 && i + 1 == per) {
                        s.write_all(if p == 1 { b"\r\n" } else { b"\n" }).unwrap();
                    }
                }
                s.flush().unwrap();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    wait_lines(&env, "out.json", producers * per);
    engine.signal(libc::SIGINT);
    engine.wait(Duration::from_secs(30)).assert_success();
    check_all_once(&env.lines("out.json"), producers, per);
}

/// A datagram peer that counts what it receives.
fn datagram_peer(path: PathBuf, expect: usize) -> std::thread::JoinHandle<Vec<Vec<u8>>> {
    let s = UnixDatagram::bind(&path).unwrap();
    std::thread::spawn(move || {
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut got = Vec::new();
        while got.len() < expect {
            match s.recv(&mut buf) {
                Ok(3) if &buf[..3] == b"END" => break,
                Ok(n) => got.push(buf[..n].to_vec()),
                Err(_) => break,
            }
        }
        got
    })
}

#[test]
fn datagram_and_stream_outputs() {
    let sockdir = short_dir();
    let dsock = sockdir.path().join("d.sock");
    let ssock = sockdir.path().join("s.sock");
    let n = 20_000;
    let dgram = datagram_peer(dsock.clone(), n + 1);
    let listener = UnixListener::bind(&ssock).unwrap();
    let stream = std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        BufReader::new(s)
            .lines()
            .map(|l| l.unwrap().into_bytes())
            .collect::<Vec<_>>()
    });
    let env = Env::new();
    env.config(&format!(
        "inputs = {{ {{ tag = \"eve\", uri = \"file://in.json\", script = \"filter.lua\", default_analyzer = \"a\" }} }}\n\
         analyzers = {{ {{ tag = \"a\", script = \"a.lua\", default_analyzer = \"\", default_output = \"d\" }} }}\n\
         outputs = {{ {{ tag = \"d\", uri = \"ipc://{}\" }}, {{ tag = \"s\", uri = \"ipc+stream://{}\" }} }}\n",
        dsock.display(),
        ssock.display()
    ));
    env.filter("filter.lua", FILTER_TO_DEFAULT);
    // Every event to both outputs; one event too large for a datagram.
    env.analyzer(
        "a.lua",
        r#"
function setup() end
function loop(msg)
  if msg.n == 7 then msg.big = string.rep("x", 8 * 1024 * 1024) end
  dragonfly.output_event("d", msg)
  dragonfly.output_event("s", msg)
end
"#,
    );
    let lines: Vec<String> = (0..n).map(|i| event(0, i, n)).collect();
    env.write_log("in.json", &join_lines(&lines));
    // The event too large for a datagram is lost: exit status 3, and a line saying so.
    let out = env.run(&["--shards", "2"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(
        out.stderr.contains("events were lost: 1 output errors"),
        "{}",
        out.stderr
    );
    let got_s = stream.join().unwrap();
    assert_eq!(got_s.len(), n, "stream output");
    check_all_once(&got_s, 1, n);
    UnixDatagram::unbound().unwrap().send_to(b"END", &dsock).unwrap();
    let got_d = dgram.join().unwrap();
    // The 8 MiB event is counted and reported, the others arrive (no newline in a datagram).
    assert_eq!(got_d.len(), n - 1, "datagram output");
    assert!(got_d.iter().all(|d| !d.ends_with(b"\n")));
    let stats = env.stats_records();
    let last = stats.last().unwrap();
    assert_eq!(last["outputs"]["d"]["errors"], 1, "{last}");
    assert_eq!(last["outputs"]["d"]["written"], (n - 1) as u64, "{last}");
    let errs = env.log_records_of("output_error");
    assert!(
        errs.iter()
            .any(|r| r["message"].as_str().unwrap_or("").contains("larger than a datagram")),
        "{errs:?}"
    );
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn gunzip(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[test]
fn gzip_inputs_and_zfile_output() {
    let n = 5000;
    let lines: Vec<String> = (0..n).map(|i| event(0, i, n)).collect();
    let plain = join_lines(&lines);
    for (uri, name) in [("file://in.json.gz", "in.json.gz"), ("zfile://in.z", "in.z")] {
        let env = Env::simple(uri, ANALYZER_PASS, "", "");
        env.config(&simple_config(uri, "", "").replace("file://out.json<", "zfile://out.json.gz<"));
        // Two gzip members, as appended gzip output has.
        let half = plain.len() / 2;
        let cut = half + plain[half..].iter().position(|&c| c == b'\n').unwrap() + 1;
        let mut gz = gzip(&plain[..cut]);
        gz.extend(gzip(&plain[cut..]));
        env.write_log(name, &gz);
        let out = env.run(&[]);
        out.assert_success();
        assert_eq!(out.summary().read, n as u64, "{uri}");
        let back = gunzip(&env.log("out.json.gz"));
        assert_eq!(split_lines(&back), split_lines(&plain), "{uri}");
    }
}

/// A damaged gzip input ends in a read error (its last bytes missing, or garbage after a
/// complete member): every line decompressed before the error is still processed and written,
/// with one shard or two, and the error is reported (exit status 3). The ordered output once
/// dropped the events of both shards' batches waiting behind a batch never sent (383 of 5,000
/// with two shards, uncounted), and the reader never sent its last partial batch.
#[test]
fn a_damaged_gzip_input_keeps_every_line_read_before_the_error() {
    let n = 5000;
    let lines: Vec<String> = (0..n).map(|i| event(0, i, n)).collect();
    let plain = join_lines(&lines);
    let gz = gzip(&plain);
    let cut = gz[..gz.len() - 4].to_vec();
    let mut garbage = gz.clone();
    garbage.extend_from_slice(b"garbage\n");
    for (what, bytes) in [("its last 4 bytes missing", cut), ("garbage after the member", garbage)] {
        for shards in ["1", "2"] {
            let env = Env::simple("file://in.json.gz", ANALYZER_PASS, "", "");
            env.write_log("in.json.gz", &bytes);
            let out = env.run(&["--shards", shards]);
            let s = out.summary();
            assert_eq!(
                (s.read, s.written),
                (n as u64, n as u64),
                "{what}, --shards {shards}: {}\n{}",
                out.stdout,
                out.stderr
            );
            let d = diff_lines(&lines, &env.lines("out.json"));
            assert!(d.is_empty(), "{what}, --shards {shards}: out.json:\n{d}");
            assert_eq!(
                out.status.code(),
                Some(3),
                "{what}, --shards {shards}: a read error is a loss"
            );
            assert!(
                !env.log_records_of("input_error").is_empty(),
                "{what}, --shards {shards}: {:?}",
                env.log_records()
            );
        }
    }
}

fn ns_of(lines: &[Vec<u8>]) -> (Vec<u64>, usize) {
    let mut bad = 0;
    let ns = lines
        .iter()
        .filter_map(|l| {
            let n = u64_member(l, "n");
            if n.is_none() {
                bad += 1;
            }
            n
        })
        .collect();
    (ns, bad)
}

/// `kill -9` in the middle of a tail run, then a restart: every line arrives at least once,
/// and what arrives twice is bounded by what was in flight.
#[test]
fn tail_checkpoint_survives_kill_9() {
    // About 10 µs of work per event, so that the kill lands in the middle of the run however
    // fast the engine gets.
    let slow = "function setup() end\n\
                function loop(msg)\n\
                  local t = os.clock() + 0.00001\n\
                  while os.clock() < t do end\n\
                  dragonfly.output_event(default_output, msg)\n\
                end\n";
    let env = Env::simple("tail://in.json<", slow, "", "tail_poll_ms = 20");
    // Appending output: the restarted engine adds to what the first run wrote.
    env.config(&simple_config("tail://in.json<", "", "tail_poll_ms = 20").replace("out.json<", "out.json"));
    let run = env.dir.path().join("run");
    let run_s = run.to_str().unwrap();
    let n1 = 300_000;
    let lines: Vec<String> = (0..n1).map(|i| event(0, i, n1)).collect();
    env.write_log("in.json", &join_lines(&lines));
    let mut engine = env.spawn(&["--shards", "2", "--run-dir", run_s]);
    // The saved offset, once a checkpoint file exists.
    let saved_offset = || -> Option<u64> {
        let state: Vec<_> = std::fs::read_dir(&run).ok()?.filter_map(Result::ok).collect();
        let f = state
            .iter()
            .find(|e| e.path().extension().is_some_and(|x| x == "json"))?;
        u64_member(&std::fs::read(f.path()).ok()?, "offset")
    };
    wait_until(
        Duration::from_secs(60),
        "a third of the events and a checkpoint",
        || env.lines("out.json").len() >= n1 / 3 && saved_offset().is_some_and(|o| o > 0),
        String::new,
    );
    engine.signal(libc::SIGKILL);
    let _ = engine.wait(Duration::from_secs(10));
    let before = env.lines("out.json").len();
    assert!(
        before < n1,
        "the engine finished before the kill; make the input larger"
    );
    // One checkpoint file. A kill between writing the next one's temporary file and renaming
    // it into place leaves that `.tmp` beside it (the rename is what makes a checkpoint, so the
    // old one stands); the restart below must not mind it.
    let state: Vec<_> = std::fs::read_dir(&run)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_none_or(|x| x != "tmp"))
        .collect();
    assert_eq!(state.len(), 1, "one checkpoint file: {state:?}");
    // Lines of the input below the saved offset: the restart reads again what follows.
    let offset = saved_offset().unwrap() as usize;
    let input = std::fs::read(env.logs.join("in.json")).unwrap();
    assert_eq!(input[offset - 1], b'\n', "the checkpoint is at a line boundary");
    let at_checkpoint = input[..offset].iter().filter(|&&b| b == b'\n').count();
    // At-least-once: the checkpoint never passes what the output holds.
    assert!(
        at_checkpoint <= before,
        "checkpoint at line {at_checkpoint}, only {before} lines written"
    );
    // Restart; more lines arrive while it runs.
    let mut engine = env.spawn(&["--shards", "2", "--run-dir", run_s]);
    let n2 = 20_000;
    let more: Vec<String> = (n1..n1 + n2).map(|i| event(0, i, n1 + n2)).collect();
    env.append_log("in.json", &join_lines(&more));
    wait_until(
        Duration::from_secs(120),
        "every event",
        || {
            let (ns, _) = ns_of(&env.lines("out.json"));
            ns.iter().collect::<BTreeSet<_>>().len() >= n1 + n2
        },
        || format!("{} lines", env.lines("out.json").len()),
    );
    engine.signal(libc::SIGINT);
    engine.wait(Duration::from_secs(30)).assert_success();
    let (ns, bad) = ns_of(&env.lines("out.json"));
    let distinct: BTreeSet<_> = ns.iter().copied().collect();
    assert_eq!(distinct.len(), n1 + n2, "events lost");
    assert!(bad <= 1, "{bad} broken lines (at most the one cut by the kill)");
    let dups = ns.len() - distinct.len();
    eprintln!(
        "tail kill -9: {before} lines before the kill, checkpoint at line {at_checkpoint}, {dups} events written twice"
    );
    // What arrives twice is what was written after the checkpoint (the events in flight when
    // it was saved, plus up to 200 ms between saves); reading again from the start would
    // repeat all `before` (at least n1 / 3) events.
    assert!(before >= n1 / 3);
    assert!(
        dups <= before - at_checkpoint,
        "{dups} duplicates, but only {} lines were written after the checkpoint",
        before - at_checkpoint
    );
}

/// A rotation while the engine is stopped: the rest of the rotated file, then the new file,
/// each line once, in order.
#[test]
fn tail_checkpoint_follows_a_rotation_while_stopped() {
    let env = Env::simple("tail://in.json<", ANALYZER_PASS, "", "tail_poll_ms = 20");
    // Appending output: the restarted engine adds to what the first run wrote.
    env.config(&simple_config("tail://in.json<", "", "tail_poll_ms = 20").replace("out.json<", "out.json"));
    let run = env.dir.path().join("run");
    let run_s = run.to_str().unwrap();
    let total = 30_000;
    let all: Vec<String> = (0..total).map(|i| event(0, i, total)).collect();
    env.write_log("in.json", &join_lines(&all[..10_000]));
    let mut engine = env.spawn(&["--run-dir", run_s]);
    wait_until(
        Duration::from_secs(60),
        "10000 lines",
        || env.lines("out.json").len() >= 10_000,
        String::new,
    );
    engine.signal(libc::SIGTERM);
    engine.wait(Duration::from_secs(30)).assert_success();
    // While stopped: the file grows, is renamed away, and a new one starts.
    env.append_log("in.json", &join_lines(&all[10_000..20_000]));
    std::fs::rename(env.log("in.json"), env.log("in.json.1")).unwrap();
    env.write_log("in.json", &join_lines(&all[20_000..]));
    let mut engine = env.spawn(&["--run-dir", run_s]);
    wait_until(
        Duration::from_secs(60),
        "all lines",
        || env.lines("out.json").len() >= total,
        String::new,
    );
    engine.signal(libc::SIGINT);
    engine.wait(Duration::from_secs(30)).assert_success();
    let (ns, bad) = ns_of(&env.lines("out.json"));
    assert_eq!(bad, 0);
    assert_eq!(ns, (0..total as u64).collect::<Vec<_>>(), "each line once, in order");
}

fn python() -> String {
    if let Ok(p) = std::env::var("DFM_PYTHON") {
        return p;
    }
    for p in ["/tmp/dfm-venv/bin/python", "python3"] {
        if std::process::Command::new(p)
            .args(["-c", "import pyarrow"])
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return p.into();
        }
    }
    panic!(
        "pyarrow is needed: python3 -m venv /tmp/dfm-venv && /tmp/dfm-venv/bin/pip install pyarrow (.ci/test does it)"
    );
}

/// A Parquet file that cannot be written (here: past the engine's file size limit, so that
/// writes fail with EFBIG; the engine ignores SIGXFSZ, which would otherwise kill it) is left
/// unfinished and reported, its rows are counted as output errors, and the engine goes on to
/// the end: every event is either in a complete file or counted.
#[test]
fn parquet_files_that_cannot_be_written_are_counted_not_hidden() {
    use std::os::unix::process::CommandExt;
    let n = 60_000;
    let events = gen_events(n, 2_000, 11);
    let lines: Vec<&str> = events.iter().map(|e| e.line.as_str()).collect();
    let env = Env::simple("file://in.json", ANALYZER_PASS, "", "");
    env.config(&simple_config("file://in.json", "", "").replace("file://out.json<", "parquet://pq/eve"));
    env.write_log("in.json", &join_lines(&lines));
    let mut cmd = env.command(&[]);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 1 << 20,
                rlim_max: 1 << 20,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = run_in(cmd, env.dir.path(), "fsize");
    // Rows were lost: exit status 3 (issue 15).
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let s = parse_summary(&out.stdout).expect("a summary line");
    assert_eq!(s.read, n as u64);
    // The losses, as reported.
    let errors: Vec<serde_json::Value> = env
        .log_records()
        .into_iter()
        .filter(|r| r["kind"] == "output_error")
        .collect();
    assert!(!errors.is_empty(), "no output_error in the log");
    assert!(
        errors
            .iter()
            .all(|r| r["message"].as_str().unwrap().contains("row(s) are lost")),
        "{errors:?}"
    );
    let stats = env.stats_records();
    let last = stats.last().expect("a stats line");
    let lost = last["outputs"]["out"]["errors"].as_u64().expect("errors of out");
    assert_eq!(errors.last().unwrap()["errors"].as_u64(), Some(lost));
    // Complete files, by the index; the unfinished file of each failed attempt is removed
    // (its rows were kept for the next one): they do not pile up, one per retry (audit,
    // 2026-12-06: 16 left after a 13 s outage).
    assert!(
        env.log_records_of("output_resumed").is_empty(),
        "rows given up at exit are no delivery: {:?}",
        env.log_records_of("output_resumed")
    );
    let in_files = index_rows(&env.log("pq"));
    let unfinished = std::fs::read_dir(env.log("pq"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".parquet.inprogress"))
        .count();
    assert!(
        unfinished <= 1 && lost > 0,
        "{unfinished} unfinished files, {lost} lost"
    );
    assert_eq!(
        in_files + lost,
        n as u64,
        "{in_files} rows in complete files, {lost} lost"
    );
    // The accounting identity: a record is written or lost, never both.
    assert_eq!(
        last["outputs"]["out"]["written"].as_u64(),
        Some(n as u64 - lost),
        "{last}"
    );
    assert_eq!((s.written, s.output_errors), (n as u64 - lost, lost), "{}", out.stdout);
}

/// Unfinished Parquet files a crash left are named in `{log}` (`output_stale_files`), not only
/// on stderr, and left in place.
#[test]
fn a_crashs_unfinished_parquet_files_are_reported_in_the_log() {
    let env = Env::simple("file://in.json", ANALYZER_PASS, "", "");
    env.config(&simple_config("file://in.json", "", "").replace("file://out.json<", "parquet://pq/eve"));
    env.write_log("in.json", &numbered_lines(0, 10));
    std::fs::create_dir_all(env.log("pq")).unwrap();
    let left = env.log("pq").join(".eve-20240101T000000Z-000007.parquet.inprogress");
    std::fs::write(&left, b"PAR1 unfinished").unwrap();
    let out = env.run(&[]);
    out.assert_success();
    let r = env.log_records_of("output_stale_files");
    assert_eq!(r.len(), 1, "{:?}", env.log_records());
    assert_eq!(r[0]["output"], "out");
    let msg = r[0]["message"].as_str().unwrap();
    assert!(msg.contains(&left.display().to_string()), "{msg}");
    assert!(left.exists(), "left in place");
}

/// The engine's `parquet://` output, read back with pyarrow: every event, field by field, in
/// files rolled by rows; the index finds the files of a time range and event type.
#[test]
fn parquet_output_read_back_with_pyarrow() {
    let n = 10_000;
    let types = ["flow", "dns", "alert", "http"];
    let lines: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "{{\"timestamp\":\"2024-03-01T12:{:02}:{:02}.000000+0000\",\"flow_id\":{},\"event_type\":\"{}\",\"src_ip\":\"10.0.0.{}\",\"src_port\":{},\"dest_ip\":\"10.1.0.1\",\"dest_port\":53,\"proto\":\"UDP\",\"n\":{i}}}",
                i / 600,
                (i / 10) % 60,
                9007199254740991u64 - i as u64,
                types[i % 4],
                i % 250,
                1024 + i % 5000
            )
        })
        .collect();
    // Values a reader must decode exactly: escapes and a control character in a string, and
    // a column absent from the event (null).
    let mut lines = lines;
    lines[7] = lines[7].replace(",\"n\":", r#","host":"sensor-\"quoted\"\\\n\u0001","n":"#);
    lines[11] = lines[11].replace("\"event_type\":\"http\",", "");
    assert!(!lines[11].contains("event_type"));
    let env = Env::simple("file://in.json", ANALYZER_PASS, "", "");
    env.config(&simple_config("file://in.json", "", "").replace("file://out.json<", "parquet://pq/eve?rows=3000"));
    env.write_log("in.json", &join_lines(&lines));
    env.run(&["--shards", "2"]).assert_success();
    let dir = env.log("pq");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 4, "10,000 rows in files of 3,000: {files:?}");
    let script = manifest_dir().join("tests/fixtures/parquet_check.py");
    let out = std::process::Command::new(python())
        .arg(&script)
        .args(&files)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The columns' types as pyarrow sees them, and the codec of every column chunk.
    let f0 = &doc["files"][0];
    assert_eq!(
        f0["schema"],
        serde_json::json!({
            "timestamp": "timestamp[us, tz=UTC]", "event_type": "string", "src_ip": "string",
            "src_port": "int32", "dest_ip": "string", "dest_port": "int32", "proto": "string",
            "flow_id": "int64", "app_proto": "string", "in_iface": "string",
            "community_id": "string", "host": "string", "event": "string"
        })
    );
    assert!(
        f0["codecs"].as_array().unwrap().iter().all(|c| c == "SNAPPY"),
        "{}",
        f0["codecs"]
    );
    let rows: Vec<&serde_json::Value> = doc["files"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|f| f["rows"].as_array().unwrap())
        .collect();
    assert_eq!(rows.len(), n);
    assert_eq!(rows[7]["host"], "sensor-\"quoted\"\\\n\u{1}");
    assert!(rows[11]["event_type"].is_null());
    // Ordered output: rows in input order.
    for (i, (row, line)) in rows.iter().zip(&lines).enumerate() {
        let want: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(row["event"].as_str().unwrap(), line, "row {i}");
        assert_eq!(row["flow_id"], want["flow_id"], "row {i}");
        for k in [
            "event_type",
            "src_ip",
            "src_port",
            "dest_ip",
            "dest_port",
            "proto",
            "host",
        ] {
            assert_eq!(row[k], want[k], "row {i} {k}");
        }
        let ts = row["timestamp"].as_i64().unwrap();
        assert_eq!(
            ts,
            1_709_294_400_000_000 + ((i / 600) * 60 + (i / 10) % 60) as i64 * 1_000_000,
            "row {i}"
        );
    }
    // The index: minute 12:05 holds rows 3000..3599, in files 2 (3000..5999).
    let from = 1_709_294_400_000_000 + 5 * 60 * 1_000_000;
    let found = dragonfly_mle::find_files(&dir, "eve", from, from + 60 * 1_000_000, Some("dns")).unwrap();
    assert_eq!(found, vec![files[1].clone()], "{found:?}");
    let none = dragonfly_mle::find_files(&dir, "eve", from, from + 1, Some("tls")).unwrap();
    assert!(none.is_empty());
}

/// The offset of the one tail checkpoint in `run` (None before the first save).
fn checkpoint_offset(run: &Path) -> Option<u64> {
    let f = tail_checkpoints(run).into_iter().next()?;
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(f).ok()?).ok()?;
    v["offset"].as_u64()
}

/// An installation reading `tail://in.json<` into `parquet://<pq>/eve?<params>`, with
/// `stats_interval = 1` and `extra` in config.lua.
fn tail_to_parquet(pq: &Path, params: &str, extra: &str) -> Env {
    let env = Env::simple("tail://in.json<", ANALYZER_PASS, "", "");
    env.config(
        &simple_config("tail://in.json<", "", &format!("stats_interval = 1\n{extra}")).replace(
            "file://out.json<\"",
            &format!("parquet://{}/eve?{params}\"", pq.display()),
        ),
    );
    env
}

/// Waits until the stats line counts `n` records handed to output `out`.
fn wait_handed_over(env: &Env, n: u64) {
    wait_until(
        Duration::from_secs(30),
        &format!("{n} events handed to the output"),
        || {
            env.stats_records()
                .last()
                .is_some_and(|s| s["outputs"]["out"]["written"] == n)
        },
        || format!("{:?}", env.stats_records().last()),
    );
}

/// The rows the index (`<pq>/eve.index.jsonl`) counts in complete files.
fn index_rows(pq: &Path) -> u64 {
    std::fs::read_to_string(pq.join("eve.index.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["rows"]
                .as_u64()
                .unwrap()
        })
        .sum()
}

/// Rows of a Parquet file in progress are not readable yet, so a tail checkpoint must not pass
/// them: it waits until the file is complete (here: SIGUSR1 closes it), else a crash would lose
/// them while the checkpoint says they were written.
#[test]
fn tail_checkpoint_waits_for_parquet_files_to_complete() {
    let dir = short_dir();
    let run = dir.path().join("run");
    let env = tail_to_parquet(&dir.path().join("pq"), "seconds=3600", "");
    let lines: Vec<String> = (0..1000).map(|i| event(0, i, 1000)).collect();
    let body = join_lines(&lines);
    env.write_log("in.json", &body);
    let mut engine = env.spawn(&["--run-dir", run.to_str().unwrap()]);
    // Every event reaches the sink (the stats line counts it) well before we look.
    wait_handed_over(&env, 1000);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        checkpoint_offset(&run).unwrap_or(0) == 0,
        "checkpoint passed rows of a Parquet file in progress: {:?}",
        checkpoint_offset(&run)
    );
    engine.signal(libc::SIGUSR1);
    wait_until(
        Duration::from_secs(30),
        "the checkpoint after the file completed",
        || checkpoint_offset(&run) == Some(body.len() as u64),
        || format!("{:?}", checkpoint_offset(&run)),
    );
    engine.signal(libc::SIGTERM);
    engine.wait(Duration::from_secs(30)).assert_success();
    let done = files_with_prefix(&dir.path().join("pq"), "eve-");
    assert!(
        done.iter().any(|p| p.extension().is_some_and(|e| e == "parquet")),
        "{done:?}"
    );
}

/// A complete Parquet file whose sidecar index cannot be written (here: a directory where
/// its temporary file goes; a full disk does the same) is not readable: the tail checkpoint
/// does not pass it, the wait is reported once, and the publication is retried until it works
/// (`output_resumed`, the checkpoint moves on). At the stop, a file still unpublished after the
/// grace counts as lost (exit status 3), and is named in the report.
#[test]
fn parquet_files_that_cannot_be_published_wait_and_count() {
    let dir = short_dir();
    let run = dir.path().join("run");
    let pq = dir.path().join("pq");
    let env = tail_to_parquet(&pq, "seconds=3600", "shutdown_grace = 1");
    let lines: Vec<String> = (0..1000).map(|i| event(0, i, 1000)).collect();
    let body = join_lines(&lines);
    env.write_log("in.json", &body);
    let mut engine = env.spawn(&["--run-dir", run.to_str().unwrap()]);
    let in_progress = || {
        files_with_prefix(&pq, ".eve-")
            .into_iter()
            .find(|p| p.to_string_lossy().ends_with(".parquet.inprogress"))
    };
    wait_handed_over(&env, 1000);
    let block = |file: &Path| {
        let name = file.file_name().unwrap().to_str().unwrap();
        let name = name.trim_start_matches('.').trim_end_matches(".inprogress");
        let blocker = pq.join(format!(".{name}.index.json.inprogress"));
        std::fs::create_dir(&blocker).unwrap();
        blocker
    };
    let blocker = block(&in_progress().expect("a file in progress"));
    engine.signal(libc::SIGUSR1);
    env.wait_for_record("output_waiting", "cannot be published", Duration::from_secs(30));
    let waiting = env.log_records_of("output_waiting");
    let msg = waiting[0]["message"].as_str().unwrap();
    assert!(msg.contains("1000 rows"), "{msg}");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        checkpoint_offset(&run).unwrap_or(0),
        0,
        "the checkpoint passed rows of a file that is not readable"
    );
    assert!(in_progress().is_some(), "the complete file is kept");
    std::fs::remove_dir(&blocker).unwrap();
    wait_until(
        Duration::from_secs(30),
        "the checkpoint after the file was published",
        || checkpoint_offset(&run) == Some(body.len() as u64),
        || format!("{:?} {:?}", checkpoint_offset(&run), env.log_records()),
    );
    env.wait_for_record("output_resumed", "", Duration::from_secs(10));
    assert_eq!(env.log_records_of("output_waiting").len(), 1);
    // More events, a file that is still unpublished at the stop.
    let more: Vec<String> = (1000..1300).map(|i| event(0, i, 1000)).collect();
    env.append_log("in.json", &join_lines(&more));
    wait_handed_over(&env, 1300);
    let left = in_progress().expect("the second file in progress");
    block(&left);
    engine.signal(libc::SIGTERM);
    let out = engine.wait(Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let s = out.summary();
    assert_eq!((s.written, s.output_errors), (1000, 300), "{}", out.stdout);
    let lost = env.log_records_of("output_error");
    assert!(
        lost.iter().any(|r| {
            let m = r["message"].as_str().unwrap_or("");
            m.contains("could not be published") && m.contains(&left.display().to_string())
        }),
        "{lost:?}"
    );
    assert!(left.exists(), "the unpublished file is kept");
    assert_eq!(
        checkpoint_offset(&run),
        Some(body.len() as u64),
        "the checkpoint stays before the lost rows"
    );
}

/// A Parquet file that cannot be written (a full disk: here the engine's file size limit)
/// loses nothing: its rows are kept and written again once the disk takes them; meanwhile the
/// wait is reported and the tail checkpoint stays before them; afterwards every event is in a
/// complete file, none counted lost, and the checkpoint reaches the end.
#[test]
fn parquet_rows_of_files_that_cannot_be_written_are_written_again() {
    let dir = short_dir();
    let run = dir.path().join("run");
    let pq = dir.path().join("pq");
    let n = 6000;
    let events = gen_events(n, 500, 7);
    let lines: Vec<&str> = events.iter().map(|e| e.line.as_str()).collect();
    let body = join_lines(&lines);
    let env = tail_to_parquet(&pq, "rows=2000", "");
    env.write_log("in.json", &body);
    let mut cmd = env.command(&["--run-dir", run.to_str().unwrap()]);
    with_file_size_limit(&mut cmd, 64 * 1024);
    let mut engine = spawn_in(cmd, env.dir.path(), "fsize");
    env.wait_for_record(
        "output_waiting",
        "could not be written are kept",
        Duration::from_secs(30),
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        checkpoint_offset(&run).unwrap_or(0) < body.len() as u64,
        "the checkpoint passed rows not written"
    );
    lift_file_size_limit(engine.child.id() as libc::pid_t);
    wait_until(
        Duration::from_secs(30),
        "the checkpoint at the end",
        || checkpoint_offset(&run) == Some(body.len() as u64),
        || format!("{:?} {:?}", checkpoint_offset(&run), env.log_records()),
    );
    env.wait_for_record("output_resumed", "", Duration::from_secs(10));
    engine.signal(libc::SIGTERM);
    let out = engine.wait(Duration::from_secs(60));
    out.assert_success();
    let s = out.summary();
    assert_eq!((s.written, s.output_errors), (n as u64, 0), "{}", out.stdout);
    assert_eq!(index_rows(&pq), n as u64);
    assert!(env.log_records_of("output_error").is_empty(), "{:?}", env.log_records());
}

/// `file://...?pace=N` replays events on the schedule of their timestamps, N times faster:
/// 2 s of recorded events at pace=2 take at least 1 s; the lag gauge is in /metrics; a bad pace
/// is a configuration error.
#[test]
fn a_paced_replay_keeps_the_recorded_schedule() {
    let lines: Vec<String> = (0..5)
        .map(|i| {
            format!(
                "{{\"timestamp\":\"2024-03-01T12:00:0{}.{}00000+0000\",\"event_type\":\"flow\",\"n\":{i}}}",
                i / 2,
                (i % 2) * 5
            )
        })
        .collect();
    let env = Env::simple("file://in.json?pace=2", ANALYZER_PASS, "", "");
    env.write_log("in.json", &join_lines(&lines));
    let t = std::time::Instant::now();
    let mut engine = env.spawn(&["--http", "127.0.0.1:0"]);
    let addr = crate::ops::http_address(&env);
    let (status, body) = crate::ops::request(&addr, "GET", "/metrics");
    assert_eq!(status, 200);
    let body = String::from_utf8_lossy(&body);
    assert!(
        body.lines()
            .any(|l| l.starts_with("dragonfly_input_pace_lag_seconds{input=\"eve\"} ")),
        "no lag gauge in /metrics:\n{body}"
    );
    engine.wait(RUN_TIMEOUT).assert_success();
    let secs = t.elapsed().as_secs_f64();
    assert!(secs >= 0.95, "2 s of events at pace=2 took {secs:.3} s");
    assert_eq!(
        env.lines("out.json"),
        join_lines(&lines)
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect::<Vec<_>>()
    );

    // As fast as the schedule allows at pace=1000; a pace of 0 is refused.
    let fast = Env::simple("file://in.json?pace=1000", ANALYZER_PASS, "", "");
    fast.write_log("in.json", &join_lines(&lines));
    fast.run(&[]).assert_success();
    assert_eq!(fast.lines("out.json").len(), 5);
    let bad = Env::simple("file://in.json?pace=0", ANALYZER_PASS, "", "");
    bad.write_log("in.json", &join_lines(&lines));
    let out = bad.run(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("pace=N"), "{}", out.stderr);
}

/// Invalid lines have their place in the input's order (the workers validate): a tail
/// checkpoint passes them once the lines before them are written, so the checkpoint reaches
/// the end of a file whose last lines are invalid, and a restart reads neither them nor the
/// valid ones again: every valid event is written once and every invalid line reported once,
/// with its line number in the file (the checkpoint keeps the line count).
#[test]
fn tail_checkpoint_passes_invalid_lines() {
    let env = Env::simple("tail://in.json<", ANALYZER_PASS, "", "tail_poll_ms = 20");
    env.config(&simple_config("tail://in.json<", "", "tail_poll_ms = 20").replace("out.json<", "out.json"));
    let run = env.dir.path().join("run");
    let run_s = run.to_str().unwrap();
    let line = |i: usize| {
        if i % 40 == 7 || (997..1000).contains(&i) {
            format!("{{\"n\":{i},\"broken\":")
        } else {
            event(0, i, 2000)
        }
    };
    let first: Vec<String> = (0..1000).map(line).collect();
    env.write_log("in.json", &join_lines(&first));
    let size = std::fs::metadata(env.logs.join("in.json")).unwrap().len();
    let saved_offset = || -> Option<u64> {
        let f = std::fs::read_dir(&run)
            .ok()?
            .filter_map(Result::ok)
            .find(|e| e.path().extension().is_some_and(|x| x == "json"))?;
        u64_member(&std::fs::read(f.path()).ok()?, "offset")
    };
    let valid_first = (0..1000)
        .filter(|&i| !(i % 40 == 7 || (997..1000).contains(&i)))
        .count();
    let mut engine = env.spawn(&["--shards", "2", "--run-dir", run_s]);
    wait_until(
        Duration::from_secs(60),
        "the first file written and checkpointed to its end",
        || env.lines("out.json").len() == valid_first && saved_offset() == Some(size),
        || {
            format!(
                "{} lines, checkpoint {:?} of {size}",
                env.lines("out.json").len(),
                saved_offset()
            )
        },
    );
    engine.signal(libc::SIGINT);
    engine.wait(Duration::from_secs(30)).assert_success();
    // Restart: only what is appended now is read.
    let mut engine = env.spawn(&["--shards", "2", "--run-dir", run_s]);
    let more: Vec<String> = (1000..1100).map(line).collect();
    env.append_log("in.json", &join_lines(&more));
    let valid = valid_first + (1000..1100).filter(|i| i % 40 != 7).count();
    wait_until(
        Duration::from_secs(60),
        "the appended lines",
        || env.lines("out.json").len() >= valid,
        || format!("{} lines", env.lines("out.json").len()),
    );
    engine.signal(libc::SIGINT);
    engine.wait(Duration::from_secs(30)).assert_success();
    let (ns, bad) = ns_of(&env.lines("out.json"));
    assert_eq!(bad, 0);
    let distinct: BTreeSet<_> = ns.iter().copied().collect();
    assert_eq!((ns.len(), distinct.len()), (valid, valid), "each valid event once");
    let mut reported: Vec<u64> = env
        .log_records_of("invalid_line")
        .iter()
        .map(|r| r["line"].as_u64().unwrap())
        .collect();
    reported.sort_unstable();
    let want: Vec<u64> = (0..1100u64)
        .filter(|&i| i % 40 == 7 || (997..1000).contains(&i))
        .map(|i| i + 1)
        .collect();
    assert_eq!(reported, want, "each invalid line reported once");
}

/// A truncating output (`file://out.json<`, as the shipped configuration has) emptied behind the
/// engine's back (logrotate's `copytruncate`) goes on at the file's new end: it was written at
/// the old offset, after a hole of NUL bytes (6 MB of them in the review, one record glued to
/// them).
#[test]
fn a_truncating_output_emptied_by_copytruncate_has_no_hole() {
    let env = Env::simple("tail://in.json<", ANALYZER_PASS, "", "tail_poll_ms = 20");
    env.write_log("in.json", &numbered_lines(0, 2000));
    let mut engine = env.spawn(&[]);
    wait_until(
        Duration::from_secs(60),
        "2000 lines",
        || env.lines("out.json").len() >= 2000,
        || env.lines("out.json").len().to_string(),
    );
    // copytruncate: the content copied elsewhere, then the file cut to nothing.
    std::fs::OpenOptions::new()
        .write(true)
        .open(env.log("out.json"))
        .unwrap()
        .set_len(0)
        .unwrap();
    env.append_log("in.json", &numbered_lines(2000, 3000));
    wait_until(
        Duration::from_secs(60),
        "the 1000 later lines",
        || env.lines("out.json").len() >= 1000,
        || env.lines("out.json").len().to_string(),
    );
    engine.signal(libc::SIGTERM);
    engine.wait(Duration::from_secs(30)).assert_success();
    let bytes = std::fs::read(env.log("out.json")).unwrap();
    assert!(
        !bytes.contains(&0),
        "{} NUL bytes",
        bytes.iter().filter(|&&b| b == 0).count()
    );
    let ns: Vec<u64> = json_lines(&env.log("out.json"))
        .iter()
        .map(|v| v["n"].as_u64().unwrap())
        .collect();
    assert_eq!(ns, (2000..3000).collect::<Vec<u64>>());
}

/// A socket output with `drop_when_full` whose peer does not read: new records are dropped at
/// once and counted, the other output and the input go on, the run ends. (Each record waited
/// out a 100 ms send timeout before it was dropped: the pipeline crawled at ten events a
/// second and a stop did not end.)
#[test]
fn a_socket_output_that_drops_when_full_never_holds_the_pipeline_up() {
    let sockdir = short_dir();
    let dsock = sockdir.path().join("d.sock");
    // Bound, never read: its queue fills after a few datagrams.
    let _peer = UnixDatagram::bind(&dsock).unwrap();
    let n = 20_000;
    let env = Env::new();
    env.config(&format!(
        "inputs = {{ {{ tag = \"eve\", uri = \"file://in.json\", script = \"filter.lua\", default_analyzer = \"a\" }} }}\n\
         analyzers = {{ {{ tag = \"a\", script = \"a.lua\", default_analyzer = \"\", default_output = \"d\" }} }}\n\
         outputs = {{ {{ tag = \"d\", uri = \"ipc://{}\", buffer_mb = 1, drop_when_full = true }}, {{ tag = \"f\", uri = \"file://out.json<\" }} }}\n",
        dsock.display()
    ));
    env.filter("filter.lua", FILTER_TO_DEFAULT);
    env.analyzer(
        "a.lua",
        "function setup() end\nfunction loop(msg)\n  dragonfly.output_event(\"d\", msg)\n  dragonfly.output_event(\"f\", msg)\nend\n",
    );
    let lines: Vec<String> = (0..n).map(|i| event(0, i, n)).collect();
    env.write_log("in.json", &join_lines(&lines));
    let out = env.run(&["--shards", "2"]);
    assert_eq!(out.status.code(), Some(3), "records were dropped: {}", out.stderr);
    assert_eq!(env.lines("out.json").len(), n, "the other output got every event");
    let last = env.stats_records().pop().unwrap();
    let d = &last["outputs"]["d"];
    let (written, dropped, errors) = (
        d["written"].as_u64().unwrap(),
        d["dropped"].as_u64().unwrap(),
        d["errors"].as_u64().unwrap(),
    );
    assert!(dropped > 0, "{d}");
    assert_eq!(written + dropped + errors, n as u64, "every record counted once: {d}");
    assert_eq!(out.summary().dropped, dropped, "{}", out.stdout);
}

/// A hole of NUL bytes at the start of a line (a file cut by logrotate's `copytruncate` while
/// Suricata went on writing at its old offset: the real EVE sample of this kind holds an
/// alert behind 575 NULs) costs no event: the NULs are skipped and reported (`input_hole`,
/// with their count), and the event behind them is read; a line of nothing but NULs is
/// reported and skipped. Nothing is counted invalid and every event is written as it came.
#[test]
fn events_behind_a_hole_of_nul_bytes_are_read() {
    let env = Env::simple("file://in.json", ANALYZER_PASS, "", "");
    let events: Vec<String> = (0..20).map(numbered_event).collect();
    let mut input = join_lines(&events[..10]);
    input.extend(std::iter::repeat_n(0u8, 575));
    input.extend_from_slice(format!("{}\n", events[10]).as_bytes());
    input.extend(std::iter::repeat_n(0u8, 300));
    input.push(b'\n');
    input.extend_from_slice(format!("{}\n\0\0{}\r\n", events[11], events[12]).as_bytes());
    input.extend(join_lines(&events[13..15]));
    // A hole longer than max_line_bytes (1 MiB): the event after it is read all the same.
    input.extend(std::iter::repeat_n(0u8, 2 << 20));
    input.extend(join_lines(&events[15..]));
    env.write_log("in.json", &input);
    let out = env.run(&[]);
    out.assert_success();
    let s = out.summary();
    assert_eq!((s.read, s.invalid), (20, 0), "{}", out.stdout);
    let written = env.lines("out.json");
    let want: Vec<Vec<u8>> = events.iter().map(|e| e.as_bytes().to_vec()).collect();
    assert_eq!(written, want, "every event written as it came, in order");
    let holes: Vec<(u64, u64, bool)> = env
        .log_records_of("input_hole")
        .iter()
        .map(|r| {
            let m = r["message"].as_str().unwrap();
            (
                r["line"].as_u64().unwrap(),
                r["length"].as_u64().unwrap(),
                m.contains("nothing after"),
            )
        })
        .collect();
    assert_eq!(
        holes,
        [(11, 575, false), (12, 300, true), (14, 2, false), (17, 2 << 20, false)]
    );
}

/// Integers beyond 64 bits are valid JSON numbers (serde_json and cjson read them as doubles):
/// such an event is read, a script sees the number as a double, and the event is written with
/// its text as it came; only a number beyond a double's range (1e400) makes an invalid line.
#[test]
fn integers_beyond_64_bits_are_numbers() {
    let analyzer = r#"
function setup() end
function loop(msg)
  msg.checked = msg.big > 1.8e19 and msg.big < 1.9e19 and msg.neg < -9.2e18
    and msg.huge > 1.2e29 and msg.huge < 1.3e29
  dragonfly.output_event(default_output, msg)
end
"#;
    let env = Env::simple("file://in.json", analyzer, "", "");
    let lines = [
        r#"{"n":0,"big":18446744073709551616,"neg":-9223372036854775809,"huge":123456789012345678901234567890}"#,
        r#"{"n":1,"flow_id":71706966405481393675,"big":18446744073709551617,"neg":-99999999999999999999,"huge":123456789012345678901234567891}"#,
        r#"{"n":2,"big":1e400}"#,
    ];
    env.write_log("in.json", &join_lines(&lines));
    let out = env.run(&[]);
    out.assert_success();
    let s = out.summary();
    assert_eq!(
        (s.read, s.written, s.invalid, s.script_errors),
        (2, 2, 1, 0),
        "{}",
        out.stdout
    );
    let written = env.lines("out.json");
    for (w, l) in written.iter().zip(&lines) {
        let text = String::from_utf8_lossy(w);
        assert_eq!(
            text,
            format!("{},\"checked\":true}}", &l[..l.len() - 1]),
            "the event as it came, checked"
        );
    }
    let bad = env.log_records_of("invalid_line");
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert_eq!(bad[0]["line"], 3);
}

/// A string a script cuts inside a character (or any bytes that are not UTF-8) is written as
/// valid UTF-8, each byte of the broken sequence as U+FFFD: every output line stays JSON a
/// reader (or this engine) accepts. `cjson_safe.encode` keeps the bytes, as lua-cjson did.
#[test]
fn strings_that_are_not_utf8_are_written_as_valid_json() {
    let analyzer = r#"
function setup() end
function loop(msg)
  local cut = string.sub(msg.ua, 1, 4)
  msg.ua_short = cut
  msg.bin = "\255\254"
  msg["k\255"] = 1
  msg.encode_keeps_bytes = cjson_safe.encode(cut) == '"Caf\195"'
  dragonfly.log_event({ua_short = cut})
  dragonfly.output_event(default_output, {cut = cut})
  dragonfly.output_event(default_output, msg)
end
"#;
    let env = Env::simple("file://in.json", analyzer, "", "");
    env.write_log("in.json", "{\"ua\":\"Caf\u{e9}-Agent/1.0\"}\n".as_bytes());
    let out = env.run(&[]);
    out.assert_success();
    assert_eq!(out.summary().script_errors, 0, "{out:?}");
    let written = env.lines("out.json");
    assert_eq!(written.len(), 2);
    let parsed: Vec<serde_json::Value> = written
        .iter()
        .map(|l| {
            let text = std::str::from_utf8(l).unwrap_or_else(|e| panic!("not UTF-8 ({e}): {}", show(l)));
            serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
        })
        .collect();
    assert_eq!(parsed[0]["cut"], "Caf\u{FFFD}");
    assert_eq!(parsed[1]["ua"], "Caf\u{e9}-Agent/1.0");
    assert_eq!(parsed[1]["ua_short"], "Caf\u{FFFD}");
    assert_eq!(parsed[1]["bin"], "\u{FFFD}\u{FFFD}");
    assert_eq!(parsed[1]["k\u{FFFD}"], 1);
    assert_eq!(parsed[1]["encode_keeps_bytes"], true);
    let logged = env.log_records();
    assert!(logged.iter().any(|r| r["ua_short"] == "Caf\u{FFFD}"), "{logged:?}");
}

/// A stream output whose reader stops reading, given up at the stop: the records its reader
/// got whole are the ones counted as written, the others as errors (audit, 2026-12-06: the
/// records the kernel had taken before the reader stopped were counted as lost, 752 of them
/// in one run). A record the kernel took in part is cut at the reader (documented).
#[test]
fn a_stream_output_given_up_counts_what_its_reader_got_as_written() {
    use std::io::Read;
    let sockdir = tempfile::Builder::new().prefix("dfm").tempdir_in("/tmp").unwrap();
    let sock = sockdir.path().join("out.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let reader = std::thread::spawn(move || {
        let (mut c, _) = listener.accept().unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        // Reads 1 MB, then stops until the engine has exited, then reads to the end.
        while got.len() < 1 << 20 {
            match c.read(&mut buf).unwrap() {
                0 => break,
                n => got.extend_from_slice(&buf[..n]),
            }
        }
        done_rx.recv().unwrap();
        c.read_to_end(&mut got).unwrap();
        got
    });
    let env = Env::new();
    env.config(&format!(
        "shutdown_grace = 1\n\
         inputs = {{ {{ tag = \"eve\", uri = \"file://in.json\", script = \"filter.lua\", default_analyzer = \"a\" }} }}\n\
         analyzers = {{ {{ tag = \"a\", script = \"a.lua\", default_analyzer = \"\", default_output = \"s\" }} }}\n\
         outputs = {{ {{ tag = \"s\", uri = \"ipc+stream://{}\" }} }}\n",
        sock.display()
    ));
    env.filter("filter.lua", FILTER_TO_DEFAULT);
    env.analyzer("a.lua", ANALYZER_PASS);
    let n = 50_000;
    env.write_log("in.json", &numbered_lines(0, n));
    let out = env.run(&[]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    done_tx.send(()).unwrap();
    let got = reader.join().unwrap();
    let whole = memchr::memchr_iter(b'\n', &got).count() as u64;
    let s = parse_summary(&out.stdout).expect("summary");
    assert!(whole > 0 && whole < n as u64, "the reader got {whole} records");
    assert_eq!(
        s.written, whole,
        "written must be what the reader got whole: {}",
        out.stdout
    );
    assert_eq!(s.written + s.output_errors, n as u64, "{}", out.stdout);
}

/// A `file://` output that is a FIFO is refused with the reason, by `check` and at the start
/// (audit, 2026-12-06: the start waited forever in open(2) for a reader, deaf to SIGTERM, and
/// with a reader every write failed on a seek).
#[test]
fn a_file_output_that_is_a_fifo_is_refused_at_once() {
    let env = Env::simple("file://in.json", ANALYZER_PASS, "", "");
    env.write_log("in.json", b"{\"event_type\":\"x\"}\n");
    let fifo = std::ffi::CString::new(env.log("out.json").to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let check = env.run(&["check"]);
    assert_eq!(check.status.code(), Some(1), "{check:?}");
    assert!(check.stderr.contains("out.json is a FIFO"), "{}", check.stderr);
    let started = std::time::Instant::now();
    let run = env.run(&[]);
    assert_eq!(run.status.code(), Some(1), "{run:?}");
    assert!(run.stderr.contains("out.json is a FIFO"), "{}", run.stderr);
    assert!(started.elapsed() < Duration::from_secs(20), "the start waited");
}

/// `check` refuses inputs the start can never read, which it passed (operator audit): a
/// `file://` input that is a directory, a `zfile://` one that is not gzip, a `tail://` one that
/// is a directory (the start waited for ever), an `ipc://` socket in a directory that does
/// not exist; and a log directory where `{log}` cannot be written (a file in its place).
#[test]
fn check_refuses_inputs_that_can_never_be_read() {
    for (uri, says) in [
        ("file://adir", "inputs[1].uri: cannot read"),
        ("zfile://plain.json", "it is not gzip-compressed"),
        ("tail://adir", "is a directory, not a file"),
        ("ipc://no-such-dir/in.sock", "no-such-dir is not a directory"),
    ] {
        let env = Env::simple(uri, ANALYZER_PASS, "", "");
        std::fs::create_dir_all(env.log("adir")).unwrap();
        env.write_log("plain.json", b"{\"event_type\":\"x\"}\n");
        let check = env.run(&["check"]);
        assert_eq!(check.status.code(), Some(1), "{uri}: {check:?}");
        assert!(check.stderr.contains(says), "{uri}: {}", check.stderr);
    }
    let env = Env::simple("file://in.json", ANALYZER_PASS, "", "");
    env.write_log("in.json", b"{\"event_type\":\"x\"}\n");
    env.run(&["check"]).assert_success();
    std::fs::create_dir_all(env.log("dragonfly-mle-stats.log")).unwrap();
    let check = env.run(&["check"]);
    assert_eq!(check.status.code(), Some(1), "{check:?}");
    assert!(
        check.stderr.contains("log directory: cannot write {stats}"),
        "{}",
        check.stderr
    );
}

/// A `file://` output replaced by a FIFO while the engine runs: opening it again does not
/// wait for a reader (the writer would be deaf to a stop), the record waits as for any output
/// that cannot take it, and SIGTERM ends the run after the grace, the record counted as lost
/// (review, 2026-12-06: the writer hung in open(2) until something read the FIFO).
#[test]
fn a_file_output_replaced_by_a_fifo_does_not_hold_the_stop() {
    let env = Env::simple("tail://in.json<", ANALYZER_PASS, "", "shutdown_grace = 1");
    env.write_log("in.json", &numbered_lines(0, 10));
    let mut engine = env.spawn(&[]);
    wait_until(
        Duration::from_secs(30),
        "10 events out",
        || env.lines("out.json").len() == 10,
        String::new,
    );
    std::fs::remove_file(env.log("out.json")).unwrap();
    let fifo = std::ffi::CString::new(env.log("out.json").to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    env.append_log("in.json", &numbered_lines(10, 11));
    std::thread::sleep(Duration::from_millis(500));
    let asked = std::time::Instant::now();
    engine.signal(libc::SIGTERM);
    let out = engine.wait(Duration::from_secs(60));
    assert!(
        asked.elapsed() < Duration::from_secs(20),
        "the stop took {:?}",
        asked.elapsed()
    );
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let s = out.summary();
    assert_eq!((s.read, s.written, s.output_errors), (11, 10, 1), "{}", out.stdout);
}
