//! Helpers for the integration tests: a throw-away engine root and log directory, running the
//! `dragonfly-mle` binary with a timeout, signals, polling, JSON-line readers and a
//! deterministic generator of Suricata-like EVE events.

#![allow(dead_code)]

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long one engine run may take before the test kills it and fails.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_dragonfly-mle")
}

/// The repository root (where Cargo.toml lives).
pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A filter that hands every event to the input's default analyzer.
pub const FILTER_TO_DEFAULT: &str =
    "function setup() end\nfunction loop(msg)\n  dragonfly.analyze_event(default_analyzer, msg)\nend\n";

/// An analyzer that writes every event unchanged to its default output.
pub const ANALYZER_PASS: &str =
    "function setup() end\nfunction loop(msg)\n  dragonfly.output_event(default_output, msg)\nend\n";

/// The usual one-input, one-analyzer, one-output configuration (`in.json` -> `out.json`),
/// with `extra` appended (global knobs such as `stats_interval = 1`).
pub fn simple_config(input_uri: &str, output_extra: &str, extra: &str) -> String {
    format!(
        "inputs = {{ {{ tag = \"eve\", uri = \"{input_uri}\", script = \"filter.lua\", default_analyzer = \"a\" }} }}\n\
         analyzers = {{ {{ tag = \"a\", script = \"a.lua\", default_analyzer = \"\", default_output = \"out\" }} }}\n\
         outputs = {{ {{ tag = \"out\", uri = \"file://out.json<\"{output_extra} }} }}\n\
         {extra}\n"
    )
}

/// What a finished engine run left behind.
#[derive(Debug)]
pub struct RunOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl RunOutput {
    /// Panics with the run's output when it did not exit 0.
    pub fn assert_success(&self) -> &Self {
        assert!(
            self.status.success(),
            "engine failed: {:?}\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    /// The parsed exit summary line.
    pub fn summary(&self) -> Summary {
        parse_summary(&self.stdout)
            .unwrap_or_else(|| panic!("no summary line on stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr))
    }
}

/// A running engine whose stdout and stderr go to files.
pub struct Running {
    pub child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Running {
    /// What the engine has written to its stdout so far.
    pub fn stdout_now(&self) -> String {
        fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// Sends `sig` to the engine (by its pid).
    pub fn signal(&self, sig: libc::c_int) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on the pid of a child this test started and has not reaped yet.
        let r = unsafe { libc::kill(pid, sig) };
        assert_eq!(r, 0, "kill({pid}, {sig}) failed");
    }

    /// Waits for the engine to exit (killing it and panicking after `timeout`).
    pub fn wait(&mut self, timeout: Duration) -> RunOutput {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "engine did not exit within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                    fs::read_to_string(&self.stdout).unwrap_or_default(),
                    fs::read_to_string(&self.stderr).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        RunOutput {
            status,
            stdout: String::from_utf8_lossy(&fs::read(&self.stdout).unwrap_or_default()).into_owned(),
            stderr: String::from_utf8_lossy(&fs::read(&self.stderr).unwrap_or_default()).into_owned(),
        }
    }
}

impl Drop for Running {
    /// Kills the engine (by its own pid) if a test bails out while it still runs.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts `cmd` with stdout and stderr sent to files in `dir` (so no pipe can fill up).
pub fn spawn_in(mut cmd: Command, dir: &Path, name: &str) -> Running {
    let stdout = dir.join(format!("{name}.stdout"));
    let stderr = dir.join(format!("{name}.stderr"));
    cmd.stdin(Stdio::null())
        .stdout(File::create(&stdout).expect("stdout file"))
        .stderr(File::create(&stderr).expect("stderr file"));
    let child = cmd.spawn().expect("cannot start dragonfly-mle");
    Running { child, stdout, stderr }
}

/// Runs `cmd` to its end with a timeout.
pub fn run_in(cmd: Command, dir: &Path, name: &str) -> RunOutput {
    spawn_in(cmd, dir, name).wait(RUN_TIMEOUT)
}

/// Polls `cond` every 20 ms until it holds; panics with `what` (and `detail()`) after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool, detail: impl Fn() -> String) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}\n{}", detail());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A temporary engine installation: `root/{config,filter,analyzer}` and a log directory.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub logs: PathBuf,
}

impl Default for Env {
    fn default() -> Self {
        Self::new()
    }
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        for d in ["config", "filter", "analyzer"] {
            fs::create_dir_all(root.join(d)).expect("mkdir");
        }
        let logs = dir.path().join("logs");
        fs::create_dir_all(&logs).expect("mkdir logs");
        Env { dir, root, logs }
    }

    /// An installation with `simple_config`, the default filter and the analyzer `a.lua`.
    pub fn simple(input_uri: &str, analyzer: &str, output_extra: &str, extra: &str) -> Env {
        let env = Env::new();
        env.config(&simple_config(input_uri, output_extra, extra));
        env.filter("filter.lua", FILTER_TO_DEFAULT);
        env.analyzer("a.lua", analyzer);
        env
    }

    pub fn config(&self, src: &str) {
        fs::write(self.root.join("config").join("config.lua"), src).expect("write config");
    }

    pub fn filter(&self, name: &str, src: &str) {
        fs::write(self.root.join("filter").join(name), src).expect("write filter");
    }

    pub fn analyzer(&self, name: &str, src: &str) {
        fs::write(self.root.join("analyzer").join(name), src).expect("write analyzer");
    }

    /// A path under the log directory.
    pub fn log(&self, name: &str) -> PathBuf {
        self.logs.join(name)
    }

    /// Writes a file under the log directory (inputs live there).
    pub fn write_log(&self, name: &str, bytes: &[u8]) {
        fs::write(self.log(name), bytes).expect("write input");
    }

    /// Appends to a file under the log directory and flushes it.
    pub fn append_log(&self, name: &str, bytes: &[u8]) {
        let mut f = OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.log(name))
            .expect("open for append");
        f.write_all(bytes).expect("append");
        f.flush().expect("flush");
    }

    /// The engine command for this installation: `-r root -l logs --no-pin` then `args`
    /// (with `--http off` unless `args` name an address: tests run many engines at once).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.arg("-r").arg(&self.root).arg("-l").arg(&self.logs).arg("--no-pin");
        if !args.contains(&"--http") {
            c.args(["--http", "off"]);
        }
        c.args(args);
        c
    }

    /// Runs the engine to its end.
    pub fn run(&self, args: &[&str]) -> RunOutput {
        run_in(self.command(args), self.dir.path(), "run")
    }

    /// Starts the engine in the background.
    pub fn spawn(&self, args: &[&str]) -> Running {
        spawn_in(self.command(args), self.dir.path(), "bg")
    }

    /// The lines of a file under the log directory (empty when it does not exist).
    pub fn lines(&self, name: &str) -> Vec<Vec<u8>> {
        split_lines(&fs::read(self.log(name)).unwrap_or_default())
    }

    /// The JSON records of `dragonfly-mle.log`.
    pub fn log_records(&self) -> Vec<Value> {
        json_lines(&self.log("dragonfly-mle.log"))
    }

    /// The records of `dragonfly-mle.log` of one `kind`.
    pub fn log_records_of(&self, kind: &str) -> Vec<Value> {
        self.log_records().into_iter().filter(|r| r["kind"] == kind).collect()
    }

    /// The records of kind `of` that `suppressed` records of the log say were left out.
    pub fn suppressed_count(&self, of: &str) -> u64 {
        self.log_records_of("suppressed")
            .iter()
            .filter(|r| r["of"] == of)
            .map(|r| r["count"].as_u64().expect("a suppressed record has a count"))
            .sum()
    }

    /// The JSON records of `dragonfly-mle-stats.log`.
    pub fn stats_records(&self) -> Vec<Value> {
        json_lines(&self.log("dragonfly-mle-stats.log"))
    }
}

/// Starts the engine on `env` with `args`, its HTTP endpoint on a free port and its run
/// directory `<dir>/run`: the engine, the endpoint's address and the run directory.
pub fn spawn_watched_with(env: &Env, args: &[&str]) -> (Running, String, PathBuf) {
    let run = env.dir.path().join("run");
    let mut all = vec!["--http", "127.0.0.1:0", "--run-dir", run.to_str().unwrap()];
    all.extend_from_slice(args);
    let engine = env.spawn(&all);
    (engine, crate::ops::http_address(env), run)
}

/// The tail checkpoint files in the run directory `run` (`tail-*.json`; not a save's
/// temporary `.json.tmp`, which the engine renames over its checkpoint).
pub fn tail_checkpoints(run: &Path) -> Vec<PathBuf> {
    let Ok(rd) = fs::read_dir(run) else { return Vec::new() };
    rd.filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            name.starts_with("tail-") && name.ends_with(".json")
        })
        .collect()
}

/// Splits bytes into lines on `\n`; a last line without newline counts, a trailing newline
/// does not start an empty line.
pub fn split_lines(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = bytes.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
    if v.last().is_some_and(Vec::is_empty) {
        v.pop();
    }
    v
}

/// Parses every line of a JSON-lines file, panicking on a line that is not JSON.
pub fn json_lines(path: &Path) -> Vec<Value> {
    split_lines(&fs::read(path).unwrap_or_default())
        .iter()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_slice(l).unwrap_or_else(|e| {
                panic!(
                    "{}:{}: not JSON ({e}): {}",
                    path.display(),
                    i + 1,
                    String::from_utf8_lossy(l)
                )
            })
        })
        .collect()
}

/// Joins lines with `\n` (and a final `\n`).
pub fn join_lines<S: AsRef<[u8]>>(lines: &[S]) -> Vec<u8> {
    let mut out = Vec::new();
    for l in lines {
        out.extend_from_slice(l.as_ref());
        out.push(b'\n');
    }
    out
}

/// Shows a line for assertion messages (lossy, shortened).
pub fn show(line: &[u8]) -> String {
    let s = String::from_utf8_lossy(line);
    if s.chars().count() > 200 {
        format!("{}... ({} bytes)", s.chars().take(200).collect::<String>(), line.len())
    } else {
        s.into_owned()
    }
}

/// Compares two line lists and describes the first differences (empty when equal).
pub fn diff_lines<A: AsRef<[u8]>, B: AsRef<[u8]>>(expected: &[A], actual: &[B]) -> String {
    let mut out = String::new();
    if expected.len() != actual.len() {
        out += &format!("expected {} lines, got {}\n", expected.len(), actual.len());
    }
    let mut shown = 0;
    for i in 0..expected.len().max(actual.len()) {
        let e = expected.get(i).map(AsRef::as_ref);
        let a = actual.get(i).map(AsRef::as_ref);
        if e != a {
            out += &match (e, a) {
                (Some(e), Some(a)) if e.len().max(a.len()) > 200 => {
                    let at = e.iter().zip(a).take_while(|(x, y)| x == y).count();
                    let from = at.saturating_sub(60);
                    let part = |l: &[u8]| show(&l[from.min(l.len())..(at + 140).min(l.len())]);
                    format!(
                        "line {} (first difference at byte {at}; showing from byte {from}):\n  expected: ...{}\n  actual:   ...{}\n",
                        i + 1,
                        part(e),
                        part(a)
                    )
                }
                _ => format!(
                    "line {}:\n  expected: {}\n  actual:   {}\n",
                    i + 1,
                    e.map(show).unwrap_or_else(|| "(none)".into()),
                    a.map(show).unwrap_or_else(|| "(none)".into())
                ),
            };
            shown += 1;
            if shown == 5 {
                out += "  ...\n";
                break;
            }
        }
    }
    out
}

/// The numbers of the exit summary line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    pub read: u64,
    pub written: u64,
    pub invalid: u64,
    pub script_errors: u64,
    pub output_errors: u64,
    pub dropped: u64,
}

/// Parses `dragonfly-mle: N events read, W written, I invalid, E script errors, O output
/// errors, D dropped in S s (R events/s)`.
pub fn parse_summary(stdout: &str) -> Option<Summary> {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("dragonfly-mle: ") && l.contains(" events read, "))?;
    let rest = line.strip_prefix("dragonfly-mle: ")?;
    let num = |s: &str, suffix: &str| -> Option<(u64, String)> {
        let (n, tail) = s.split_once(suffix)?;
        Some((n.trim().parse().ok()?, tail.to_string()))
    };
    let (read, rest) = num(rest, " events read, ")?;
    let (written, rest) = num(&rest, " written, ")?;
    let (invalid, rest) = num(&rest, " invalid, ")?;
    let (script_errors, rest) = num(&rest, " script errors, ")?;
    let (output_errors, rest) = num(&rest, " output errors, ")?;
    let (dropped, rest) = num(&rest, " dropped in ")?;
    let (secs, rest) = rest.split_once(" s (")?;
    secs.parse::<f64>().ok()?;
    rest.strip_suffix(" events/s)")?.parse::<f64>().ok()?;
    Some(Summary {
        read,
        written,
        invalid,
        script_errors,
        output_errors,
        dropped,
    })
}

/// A small deterministic PRNG (xorshift64*), so generated inputs are the same on every run.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One generated flow: its id and 5-tuple.
#[derive(Clone, Debug)]
pub struct Flow {
    pub id: u64,
    pub src: String,
    pub sport: u16,
    pub dst: String,
    pub dport: u16,
    pub proto: &'static str,
}

/// A generated event line and the flow it belongs to (`None` for flowless events).
#[derive(Clone, Debug)]
pub struct GenEvent {
    pub line: String,
    pub flow: Option<u64>,
}

/// Generates `n` Suricata-like events spread over `flows` flows (ids below 2^53, both
/// directions of a flow, several event types), with about 1 in 50 events flowless
/// (`stats`), deterministically from `seed`.
pub fn gen_events(n: usize, flows: usize, seed: u64) -> Vec<GenEvent> {
    let mut rng = Rng::new(seed);
    let flow_list: Vec<Flow> = (0..flows)
        .map(|i| Flow {
            id: (rng.next() & ((1u64 << 53) - 1)) | 1,
            src: format!("10.{}.{}.{}", i % 200, rng.below(256), rng.below(254) + 1),
            sport: 1024 + rng.below(60000) as u16,
            dst: format!("192.168.{}.{}", rng.below(256), rng.below(254) + 1),
            dport: [53u16, 80, 443, 22, 8080][rng.below(5) as usize],
            proto: if rng.below(3) == 0 { "UDP" } else { "TCP" },
        })
        .collect();
    let types = ["flow", "dns", "http", "tls", "alert", "fileinfo"];
    (0..n)
        .map(|i| {
            let ts = format!("2024-01-01T00:{:02}:{:02}.{:06}+0000", (i / 60_000) % 60, (i / 1000) % 60, i % 1_000_000);
            if rng.below(50) == 0 {
                return GenEvent {
                    line: format!(r#"{{"timestamp":"{ts}","event_type":"stats","stats":{{"uptime":{i},"capture":{{"kernel_packets":{}}}}}}}"#, rng.below(1 << 40)),
                    flow: None,
                };
            }
            let f = &flow_list[rng.below(flows as u64) as usize];
            let t = types[rng.below(types.len() as u64) as usize];
            let (src, sport, dst, dport) =
                if rng.below(2) == 0 { (&f.src, f.sport, &f.dst, f.dport) } else { (&f.dst, f.dport, &f.src, f.sport) };
            let body = match t {
                "dns" => format!(r#""dns":{{"type":"query","id":{},"rrname":"host{}.example.com","rrtype":"A"}}"#, rng.below(65536), rng.below(1000)),
                "http" => format!(r#""http":{{"hostname":"www.example.org","url":"/p/{}?q=a%20b","http_method":"GET","status":200,"length":{}}}"#, rng.below(1 << 20), rng.below(100_000)),
                "tls" => format!(r#""tls":{{"subject":"CN=example \"quoted\" \u00e9","version":"TLS 1.3","ja3":{{"hash":"{:016x}"}}}}"#, rng.next()),
                "alert" => format!(r#""alert":{{"action":"allowed","gid":1,"signature_id":{},"rev":2,"signature":"ET TEST \/path","severity":{}}}"#, 2_000_000 + rng.below(10_000), 1 + rng.below(3)),
                "fileinfo" => format!(r#""fileinfo":{{"filename":"\/tmp\/x{}.bin","size":{},"tx_id":0,"stored":false,"sha256":null}}"#, rng.below(100), rng.below(1 << 30)),
                _ => format!(r#""flow":{{"pkts_toserver":{},"bytes_toserver":{},"age":{},"state":"closed","reason":"timeout","alerted":false,"ratio":{}.{}}}"#, rng.below(1000), rng.below(1 << 32), rng.below(600), rng.below(10), rng.below(1000)),
            };
            GenEvent {
                line: format!(
                    r#"{{"timestamp":"{ts}","flow_id":{},"in_iface":"eth0","event_type":"{t}","src_ip":"{src}","src_port":{sport},"dest_ip":"{dst}","dest_port":{dport},"proto":"{}",{body}}}"#,
                    f.id, f.proto
                ),
                flow: Some(f.id),
            }
        })
        .collect()
}

/// `line` (a JSON object) with `,"<key>":<value>` appended before its closing brace.
pub fn with_member(line: &str, key: &str, value: &str) -> String {
    let body = line.strip_suffix('}').expect("a JSON object line");
    format!("{body},\"{key}\":{value}}}")
}

/// The unsigned integer member `key` of a JSON object line.
pub fn u64_member(line: &[u8], key: &str) -> Option<u64> {
    let v: Value = serde_json::from_slice(line).ok()?;
    v.get(key)?.as_u64()
}

/// Finds files whose name starts with `prefix` in `dir`, sorted.
pub fn files_with_prefix(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(prefix))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A flow event numbered `i` (member `n`), one flow per source address and port.
pub fn numbered_event(i: usize) -> String {
    format!(
        "{{\"timestamp\":\"2024-03-01T12:00:{:02}.{:06}+0000\",\"event_type\":\"flow\",\"src_ip\":\"10.0.0.{}\",\"src_port\":{},\"dest_ip\":\"10.1.0.1\",\"dest_port\":443,\"proto\":\"TCP\",\"n\":{i}}}",
        (i / 1_000_000) % 60,
        i % 1_000_000,
        i % 250,
        1024 + i % 5000
    )
}

/// The events numbered `from..to`, one per line.
pub fn numbered_lines(from: usize, to: usize) -> Vec<u8> {
    let l: Vec<String> = (from..to).map(numbered_event).collect();
    join_lines(&l)
}

/// How many reloads that built the pipeline again were applied so far (their `reload`
/// records: "pipeline N runs the new configuration").
pub fn reloads_applied(env: &Env) -> usize {
    env.log_records_of("reload")
        .iter()
        .filter(|r| {
            r["message"]
                .as_str()
                .unwrap_or("")
                .contains("runs the new configuration")
        })
        .count()
}

/// Runs `cmd` with a file size limit (RLIMIT_FSIZE) of `bytes`: a full disk, in effect (the
/// engine ignores SIGXFSZ, so writes past it fail with EFBIG); `lift_file_size_limit` ends it.
pub fn with_file_size_limit(cmd: &mut Command, bytes: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: only setrlimit(2) runs between fork and exec, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: libc::RLIM_INFINITY,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Lifts the file size limit of a running process.
pub fn lift_file_size_limit(pid: libc::pid_t) {
    let lim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: prlimit(2) with a valid rlimit and no old-limit pointer.
    let r = unsafe { libc::prlimit(pid, libc::RLIMIT_FSIZE, &lim, std::ptr::null_mut()) };
    assert_eq!(r, 0, "prlimit: {}", std::io::Error::last_os_error());
}

/// Waits until a `{log}` record's message contains `text`.
pub fn wait_log_message(env: &Env, text: &str) {
    wait_until(
        Duration::from_secs(20),
        text,
        || {
            env.log_records()
                .iter()
                .any(|r| r["message"].as_str().unwrap_or("").contains(text))
        },
        || format!("{:?}", env.log_records()),
    )
}

/// Feeds an engine in steps: appends numbered events `{"i":N}` to `in.json` under the log
/// directory and waits until `out.json` has a line for each event sent so far.
#[derive(Default)]
pub struct Feed {
    /// Events sent so far.
    pub sent: usize,
}

impl Feed {
    /// Sends `n` more events and waits (20 s at most) until every event sent is written.
    pub fn step(&mut self, env: &Env, n: usize) {
        let lines: Vec<String> = (self.sent..self.sent + n).map(|i| format!("{{\"i\":{i}}}")).collect();
        env.append_log("in.json", &join_lines(&lines));
        self.sent += n;
        let want = self.sent;
        wait_until(
            Duration::from_secs(20),
            "outputs",
            || env.lines("out.json").len() >= want,
            || format!("{} lines", env.lines("out.json").len()),
        );
    }

    /// Sends one event at a time until the last line written contains `text` (a Redis call
    /// succeeding again after the reconnection's backoff); panics after 20 s.
    pub fn until_written(&mut self, env: &Env, text: &str) {
        let t = Instant::now();
        loop {
            self.step(env, 1);
            let last = env.lines("out.json").last().cloned().unwrap_or_default();
            if String::from_utf8_lossy(&last).contains(text) {
                return;
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "no line with {text} written in 20 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Env {
    /// Waits (up to `timeout`) until `dragonfly-mle.log` has a record of `kind` whose message
    /// contains `text`; panics with every record otherwise.
    pub fn wait_for_record(&self, kind: &str, text: &str, timeout: Duration) {
        wait_until(
            timeout,
            &format!("a {kind} record with {text:?}"),
            || {
                self.log_records_of(kind)
                    .iter()
                    .any(|r| r["message"].as_str().unwrap_or("").contains(text))
            },
            || format!("{:?}", self.log_records()),
        );
    }
}
