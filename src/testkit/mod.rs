//! `dragonfly-mle test`: analyzer tests without a deployment. Each test of a test file
//! (`*.test.lua`, see [`spec`]) runs the real engine (this binary, as a child process) on the
//! root and config.lua under test, with the test's events as the input, every output written to
//! a file of its own, the engine's managed Redis (loaded with the test's commands first), and a
//! virtual clock; once on one shard and once on several. The records are then checked: against
//! the expected files (`<file>.expected/<test>/<output>.jsonl`, written by `--update`), and
//! against the test's field assertions, counts, log records and script error count. Failures
//! print what differs, path by path.

mod compare;
mod spec;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use simd_json::OwnedValue;
use simd_json::prelude::ValueAsScalar;

use spec::{Matcher, TestCase, Which};

/// What `dragonfly-mle test` was asked.
#[derive(Clone, Debug)]
pub struct TestOptions {
    /// Test files, or folders searched for `*.test.lua`; none: `<root>/tests`.
    pub paths: Vec<PathBuf>,
    /// The root of tests that name none and do not sit in a root's `tests/` folder.
    pub root: PathBuf,
    /// Write the expected files from what the engine produced.
    pub update: bool,
    /// Run on this shard count only, instead of each test's.
    pub shards: Option<usize>,
    /// Keep every run's files (they are kept for failed runs anyway).
    pub keep: bool,
    /// The engine binary to run.
    pub engine: PathBuf,
    /// Run only the tests whose name contains one of these (none: every test).
    pub names: Vec<String>,
}

/// What a test session found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub passed: usize,
    pub failed: usize,
    /// Tests whose expected files `--update` wrote.
    pub updated: usize,
}

/// Runs every test named by `opts`, printing progress and failures to `out`.
pub fn run(opts: &TestOptions, out: &mut dyn Write) -> anyhow::Result<Report> {
    let files = test_files(opts)?;
    let mut cases = Vec::new();
    for f in &files {
        cases.extend(spec::load(f, &opts.root)?);
    }
    let all = cases.len();
    if !opts.names.is_empty() {
        cases.retain(|c| opts.names.iter().any(|n| c.name.contains(n.as_str())));
        if cases.is_empty() && all > 0 {
            anyhow::bail!(
                "no test name contains {} (of {all} tests in {} files)",
                opts.names
                    .iter()
                    .map(|n| format!("{n:?}"))
                    .collect::<Vec<_>>()
                    .join(" or "),
                files.len()
            );
        }
    }
    if cases.is_empty() {
        anyhow::bail!(
            "no test in {} (a file's tests are a list: tests = {{ {{ name = ..., ... }} }})",
            files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let lua = mlua::Lua::new();
    let mut report = Report::default();
    let mut failures = Vec::new();
    let plural = |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let _ = writeln!(
        out,
        "running {} from {}",
        plural(cases.len(), "test", "tests"),
        plural(files.len(), "file", "files")
    );
    if cases.len() < all {
        let _ = writeln!(
            out,
            "({} left out by --name)",
            plural(all - cases.len(), "test", "tests")
        );
    }
    // With --name, the tests left out still own their expected folders.
    for stale in stale_expected(&cases).into_iter().filter(|_| opts.names.is_empty()) {
        let _ = writeln!(
            out,
            "warning: {} belongs to no test (a test renamed? its records are no longer checked; --update writes the new name's)",
            stale.display()
        );
    }
    for case in &cases {
        let shards = match (opts.shards, &case.shards) {
            (Some(n), _) => vec![n],
            (None, Some(list)) => list.clone(),
            (None, None) => config_shards(case).map_or_else(|| vec![1, 2], |n| vec![n]),
        };
        let mut updated = false;
        // Whether the case passed on one shard, for the hint when it fails on more.
        let mut passed_on_one = false;
        for n in shards {
            let label = format!(
                "{}: {:?} ({n} shard{})",
                short(&case.file),
                case.name,
                if n == 1 { "" } else { "s" }
            );
            let _ = write!(out, "test {label} ... ");
            let _ = out.flush();
            let (problems, dir) = match run_case(case, n, opts, &lua, &mut updated) {
                Ok(r) => r,
                Err(e) => (vec![format!("{e:#}")], None),
            };
            if problems.is_empty() {
                passed_on_one |= n == 1;
                report.passed += 1;
                let _ = writeln!(out, "ok");
                match dir {
                    Some(d) if !opts.keep => {
                        let _ = std::fs::remove_dir_all(d);
                    }
                    Some(d) => {
                        let _ = writeln!(out, "  (kept: {})", d.display());
                    }
                    None => {}
                }
            } else {
                report.failed += 1;
                let _ = writeln!(out, "FAILED");
                let mut problems = problems;
                if passed_on_one && n > 1 {
                    let mut hint = SHARD_HINT.replace("{n}", &n.to_string());
                    if config_shards(case) == Some(1) {
                        // The root runs on one worker already: the test asked for more.
                        hint = hint.replace(
                            "`shards = 1` in \
config.lua runs such a root on one worker, as the original did.)",
                            "config.lua's `shards = 1` already runs this root on one worker; the test's own `shards` asked for more.)",
                        );
                    }
                    problems.push(hint);
                }
                failures.push((label, problems, dir));
            }
        }
        report.updated += usize::from(updated);
    }
    for (label, problems, dir) in &failures {
        let _ = writeln!(out, "\n---- {label} ----");
        for p in problems {
            let _ = writeln!(out, "  {}", p.replace('\n', "\n  "));
        }
        if let Some(d) = dir {
            let _ = writeln!(out, "  (the run's files: {})", d.display());
        }
    }
    let _ = writeln!(
        out,
        "\ntest result: {}. {} passed; {} failed{}",
        if report.failed == 0 { "ok" } else { "FAILED" },
        report.passed,
        report.failed,
        if opts.update {
            format!("; expected files written for {} tests", report.updated)
        } else {
            String::new()
        }
    );
    Ok(report)
}

/// Said under a failure on several shards of a case that passed on one.
const SHARD_HINT: &str = "(it passed on 1 shard: on {n}, flows are split over {n} workers, each with \
its own Lua state and its own pace. A script whose result depends on other flows' events (a Lua \
table kept across flows, or a Redis key one flow writes and another reads) sees them in another \
order or not at all; see docs/lua-api.md, \"State across flows and shards\". `shards = 1` in \
config.lua runs such a root on one worker, as the original did.)";

/// config.lua's `shards` for `case`, when it sets one and loads.
fn config_shards(case: &TestCase) -> Option<usize> {
    crate::config::Config::load(&case.root, &std::env::temp_dir(), Some(&case.config))
        .ok()?
        .shards
}

fn short(p: &Path) -> String {
    p.file_name()
        .map_or_else(|| p.display().to_string(), |f| f.to_string_lossy().into_owned())
}

/// The test files: those named, and every `*.test.lua` under the folders named.
fn test_files(opts: &TestOptions) -> anyhow::Result<Vec<PathBuf>> {
    let paths = if opts.paths.is_empty() {
        vec![opts.root.join("tests")]
    } else {
        opts.paths.clone()
    };
    let mut files = Vec::new();
    for p in &paths {
        if p.is_dir() {
            let before = files.len();
            find(p, &mut files).with_context(|| format!("cannot read {}", p.display()))?;
            files[before..].sort();
        } else if p.is_file() {
            files.push(p.clone());
        } else {
            anyhow::bail!("{}: no such test file or folder", p.display());
        }
    }
    if files.is_empty() {
        anyhow::bail!(
            "no test files (*.test.lua) in {}",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(files)
}

fn find(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            find(&p, out)?;
        } else if p.to_string_lossy().ends_with(".test.lua") {
            out.push(p);
        }
    }
    Ok(())
}

/// Folders of expected records next to the test files of `cases` that no test of theirs
/// uses.
fn stale_expected(cases: &[TestCase]) -> Vec<PathBuf> {
    let used: std::collections::HashSet<PathBuf> = cases.iter().map(expected_dir).collect();
    let parents: std::collections::BTreeSet<PathBuf> =
        used.iter().filter_map(|d| d.parent().map(Path::to_path_buf)).collect();
    let mut stale = Vec::new();
    for p in parents {
        let Ok(entries) = std::fs::read_dir(&p) else { continue };
        for e in entries.filter_map(Result::ok) {
            let path = e.path();
            if path.is_dir() && !used.contains(&path) {
                stale.push(path);
            }
        }
    }
    stale.sort();
    stale
}

/// Where the expected records of `case` live.
fn expected_dir(case: &TestCase) -> PathBuf {
    let stem = short(&case.file);
    let stem = stem.strip_suffix(".lua").unwrap_or(&stem);
    let name = spec::folder_name(&case.name);
    case.file.with_file_name(format!("{stem}.expected")).join(name)
}

/// What one run of the engine left.
struct RunOutput {
    /// Per output tag, its records.
    outputs: Vec<(String, Vec<Vec<u8>>)>,
    log: Vec<OwnedValue>,
    script_errors: u64,
    /// The replies to the test's `expect.redis` commands, in order.
    redis: Vec<OwnedValue>,
}

/// Runs `case` on `shards` shards and checks it; the problems found and the run's folder.
fn run_case(
    case: &TestCase,
    shards: usize,
    opts: &TestOptions,
    lua: &mlua::Lua,
    updated: &mut bool,
) -> anyhow::Result<(Vec<String>, Option<PathBuf>)> {
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("dfm-test-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let got = match engine_run(case, shards, opts, &dir) {
        Ok(g) => g,
        Err(e) => return Ok((vec![format!("{e:#}")], Some(dir))),
    };
    let exp_dir = expected_dir(case);
    let mut problems = Vec::new();
    if opts.update && !*updated {
        // A run with script errors the test does not expect writes no expected records: they
        // would bless a broken analyzer's output.
        if got.script_errors > case.script_errors {
            problems.push(format!(
                "--update: expected files not written: the run had {} script errors, the test expects {} (say script_errors = N when they are meant)",
                got.script_errors, case.script_errors
            ));
        } else {
            write_expected(&exp_dir, &got)?;
            *updated = true;
        }
    }
    check_expected(&exp_dir, &got, &mut problems)?;
    check_assertions(case, &got, lua, &mut problems);
    Ok((problems, Some(dir)))
}

/// A string as a Lua literal.
fn lua_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\{:03}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// Runs the engine for `case` in `dir`: config.lua as written, then this run's inputs,
/// outputs and Redis.
fn engine_run(case: &TestCase, shards: usize, opts: &TestOptions, dir: &Path) -> anyhow::Result<RunOutput> {
    let cfg = crate::config::Config::load(&case.root, dir, Some(&case.config))?;
    let tag = match &case.input {
        Some(t) => t.clone(),
        None => cfg
            .inputs
            .first()
            .map(|i| i.tag.clone())
            .context("the configuration has no input")?,
    };
    if !cfg.inputs.iter().any(|i| i.tag == tag) {
        anyhow::bail!("the configuration has no input with tag {tag:?}");
    }
    let input = dir.join("input.json");
    let mut events = case.events.join(&b'\n');
    events.push(b'\n');
    std::fs::write(&input, events)?;
    let mut text =
        std::fs::read_to_string(&case.config).with_context(|| format!("cannot read {}", case.config.display()))?;
    text.push_str(&format!(
        "\n\n-- dragonfly-mle test: this run's input, outputs and Redis.\ndo\n   local keep\n   for _, i in ipairs(inputs or {{}}) do\n      if i.tag == {tag} then keep = i end\n   end\n   keep.uri = {uri}\n   inputs = {{ keep }}\n   for k, o in ipairs(outputs or {{}}) do\n      o.uri = {out} .. k .. \".json<\"\n      o.ordered = true\n   end\n   redis_host = \"managed\"\n   redis_port = nil\n   redis_cluster = nil\n   redis_persist = false\n   http_address = \"off\"\nend\n",
        tag = lua_str(&tag),
        uri = lua_str(&format!("file://{}", input.display())),
        out = lua_str(&format!("file://{}/output-", dir.display())),
    ));
    let config = dir.join("config.lua");
    std::fs::write(&config, text)?;
    let mut cmd = std::process::Command::new(&opts.engine);
    cmd.arg("-r")
        .arg(&case.root)
        .arg("-l")
        .arg(dir)
        .arg("--config")
        .arg(&config)
        .args(["--shards", &shards.to_string(), "--http", "off", "--no-pin"])
        .arg("--run-dir")
        .arg(dir.join("run"))
        .env(
            crate::primitives::clock::VIRTUAL_CLOCK_ENV,
            format!("{},{},{}", case.clock.start_ns, case.clock.step_ns, case.clock.after_ns),
        )
        .env("TZ", "UTC")
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(dir.join("stdout.txt"))?)
        .stderr(std::fs::File::create(dir.join("stderr.txt"))?);
    let write_commands = |name: &str, list: &mut dyn Iterator<Item = &Vec<String>>| -> std::io::Result<PathBuf> {
        let mut cmds = String::new();
        for c in list {
            let args: Vec<OwnedValue> = c.iter().map(|a| OwnedValue::from(a.as_str())).collect();
            cmds.push_str(&simd_json::prelude::Writable::encode(&OwnedValue::from(args)));
            cmds.push('\n');
        }
        std::fs::write(dir.join(name), cmds)?;
        Ok(dir.join(name))
    };
    if !case.redis.is_empty() {
        let path = write_commands("redis.json", &mut case.redis.iter())?;
        cmd.env(crate::engine::TEST_REDIS_ENV, path);
    }
    if !case.redis_checks.is_empty() {
        let path = write_commands("redis-checks.json", &mut case.redis_checks.iter().map(|(c, _)| c))?;
        cmd.env(crate::engine::TEST_REDIS_CHECKS_ENV, path);
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot run {}", opts.engine.display()))?;
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if start.elapsed() > Duration::from_secs_f64(case.timeout) {
            let _ = child.kill();
            let _ = child.wait();
            // What the engine said last (a worker_stuck report names the script that hangs).
            let stderr = std::fs::read_to_string(dir.join("stderr.txt")).unwrap_or_default();
            let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
            let said = if tail.is_empty() {
                String::new()
            } else {
                let lines: Vec<&str> = tail.into_iter().rev().collect();
                format!("; its last words:\n{}", lines.join("\n"))
            };
            anyhow::bail!(
                "the engine did not finish within {} s ({}): a setup() or loop() that never returns, a Redis that never answers, or an input too large for the time (raise `timeout = N` in the test; a worker is named as stuck once it has been so for 10 s){said}",
                case.timeout,
                if case.timeout_set {
                    "the test's timeout"
                } else {
                    "the default timeout"
                }
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stdout = std::fs::read_to_string(dir.join("stdout.txt")).unwrap_or_default();
    let stderr = std::fs::read_to_string(dir.join("stderr.txt")).unwrap_or_default();
    // 3: events were lost, which the checks below show; anything else is a failed run.
    if !(status.success() || status.code() == Some(3)) {
        anyhow::bail!("the engine failed ({status}):\n{}", stderr.trim());
    }
    let script_errors = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("dragonfly-mle: "))
        .flat_map(|l| l.split(", "))
        .find_map(|p| p.strip_suffix(" script errors")?.trim().parse().ok())
        .unwrap_or(0);
    let mut outputs = Vec::new();
    for (k, o) in cfg.outputs.iter().enumerate() {
        let text = std::fs::read(dir.join(format!("output-{}.json", k + 1))).unwrap_or_default();
        let lines = text
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
        outputs.push((o.tag.clone(), lines));
    }
    let log = std::fs::read(dir.join("dragonfly-mle.log"))
        .unwrap_or_default()
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(|l| compare::parse(l).ok())
        .collect();
    let redis = if case.redis_checks.is_empty() {
        Vec::new()
    } else {
        let path = dir.join("redis-checks.json.replies");
        std::fs::read(&path)
            .with_context(|| format!("the engine wrote no replies to the Redis checks ({})", path.display()))?
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| compare::parse(l).map_err(|e| anyhow::anyhow!("{}: {e}", path.display())))
            .collect::<anyhow::Result<_>>()?
    };
    Ok(RunOutput {
        outputs,
        log,
        script_errors,
        redis,
    })
}

/// A Redis reply read as `want` reads it: a bulk string whose text is exactly the way a number
/// is written (`"42"`, `"-1.5"`; not `"007"` or `"1e2"`) as that number where a number is
/// expected, at any depth of a list; the empty list as `{}` (Lua's empty table) where `{}` is
/// expected.
fn as_expected(want: &OwnedValue, reply: &OwnedValue) -> OwnedValue {
    use simd_json::prelude::{TypedScalarValue, ValueAsArray, ValueAsObject, ValueAsScalar};
    if want.is_number()
        && let Some(t) = reply.as_str()
    {
        if let Ok(n) = t.parse::<i64>()
            && n.to_string() == t
        {
            return OwnedValue::from(n);
        }
        if let Ok(x) = t.parse::<f64>()
            && x.is_finite()
            && x.to_string() == t
        {
            return OwnedValue::from(x);
        }
    }
    if want.as_object().is_some_and(|o| o.is_empty()) && reply.as_array().is_some_and(|a| a.is_empty()) {
        return want.clone();
    }
    if let (Some(w), Some(r)) = (want.as_array(), reply.as_array())
        && w.len() == r.len()
    {
        return OwnedValue::from(w.iter().zip(r).map(|(w, r)| as_expected(w, r)).collect::<Vec<_>>());
    }
    reply.clone()
}

/// What is wrong with value `v` (`None`: absent) under check `m`, if anything.
fn mismatch(
    m: &Matcher,
    v: Option<&OwnedValue>,
    matches: &dyn Fn(&str, &str) -> Result<bool, String>,
) -> Option<String> {
    let enc = simd_json::prelude::Writable::encode;
    match (m, v) {
        (Matcher::Exists, None) => Some("expected to exist, absent".to_string()),
        (Matcher::Absent, Some(v)) => Some(format!("expected absent, got {}", compare::text(v))),
        (Matcher::Equals(w), None) => Some(format!("expected {}, absent", enc(w))),
        (Matcher::Equals(w), Some(v)) if !compare::same(w, v) => Some(format!("expected {}, got {}", enc(w), enc(v))),
        (Matcher::Matches(p), None) => Some(format!("expected to match {p:?}, absent")),
        (Matcher::Matches(p), Some(v)) => match matches(&compare::text(v), p) {
            Ok(true) => None,
            Ok(false) => Some(format!("expected to match {p:?}, got {}", compare::text(v))),
            Err(e) => Some(e),
        },
        _ => None,
    }
}

/// `--update`: the expected files are what this run wrote.
fn write_expected(dir: &Path, got: &RunOutput) -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (tag, lines) in &got.outputs {
        let mut text = lines.join(&b'\n');
        text.push(b'\n');
        let path = dir.join(format!("{tag}.jsonl"));
        std::fs::write(&path, if lines.is_empty() { Vec::new() } else { text })
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// The records of every output against its expected file, when the test has them.
fn check_expected(dir: &Path, got: &RunOutput, problems: &mut Vec<String>) -> anyhow::Result<()> {
    if !dir.is_dir() {
        return Ok(());
    }
    for (tag, lines) in &got.outputs {
        let path = dir.join(format!("{tag}.jsonl"));
        let want: Vec<Vec<u8>> = match std::fs::read(&path) {
            Ok(t) => t
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .map(<[u8]>::to_vec)
                .collect(),
            Err(_) => Vec::new(),
        };
        if want.len() != lines.len() {
            let parsed = |ls: &[Vec<u8>]| ls.iter().map(|l| compare::parse(l)).collect::<Result<Vec<_>, _>>();
            if let (Ok(wv), Ok(gv)) = (parsed(&want), parsed(lines))
                && let Some((missing, extra)) = compare::unmatched(&wv, &gv)
            {
                problems.push(format!(
                    "output {tag} ({}): expected {} records, got {}",
                    path.display(),
                    want.len(),
                    lines.len()
                ));
                name_unmatched(tag, (&wv, &missing), (&gv, &extra), problems);
                continue;
            }
        }
        let mut shown = 0;
        for i in 0..want.len().max(lines.len()) {
            let (w, g) = (want.get(i), lines.get(i));
            let differ = match (w, g) {
                (Some(w), Some(g)) => match (compare::parse(w), compare::parse(g)) {
                    (Ok(wv), Ok(gv)) => {
                        let mut d = Vec::new();
                        compare::differences("", &wv, &gv, &mut d, 8);
                        (!d.is_empty()).then_some(d)
                    }
                    (Err(e), _) => Some(vec![format!("{}: {e}", path.display())]),
                    (_, Err(e)) => Some(vec![e]),
                },
                _ => Some(Vec::new()),
            };
            let Some(d) = differ else { continue };
            shown += 1;
            if shown > 5 {
                problems.push(format!("output {tag}: more records differ"));
                break;
            }
            let show = |l: Option<&Vec<u8>>| {
                l.map_or_else(|| "(none)".to_string(), |l| String::from_utf8_lossy(l).into_owned())
            };
            let mut p = format!(
                "output {tag}, record {} ({}):\n  expected {}\n  got      {}",
                i + 1,
                path.display(),
                show(w),
                show(g)
            );
            for line in d {
                p.push_str(&format!("\n    {line}"));
            }
            problems.push(p);
        }
        if want.len() != lines.len() {
            problems.push(format!(
                "output {tag}: expected {} records, got {}",
                want.len(),
                lines.len()
            ));
        }
    }
    Ok(())
}

/// Names the expected records the run did not write and the records it wrote beyond them (at
/// most 5 of each), by their numbers in the expected list and in the output.
fn name_unmatched(
    tag: &str,
    (want, missing): (&[OwnedValue], &[usize]),
    (got, extra): (&[OwnedValue], &[usize]),
    problems: &mut Vec<String>,
) {
    let enc = simd_json::prelude::Writable::encode;
    // A missing and an extra record in the same order are most likely one record written
    // differently: shown with their differences.
    let pairs = missing.len().min(extra.len());
    for (&i, &j) in missing.iter().zip(extra).take(5) {
        let mut d = Vec::new();
        crate::testkit::compare::differences("", &want[i], &got[j], &mut d, 8);
        problems.push(format!(
            "output {tag}, record {}:\n  expected {}\n  got      {}\n    {}",
            j + 1,
            enc(&want[i]),
            enc(&got[j]),
            d.join("\n    ")
        ));
    }
    for (list, recs, one, more) in [
        (
            &missing[pairs..],
            want,
            "expected record {n} is missing",
            "more expected records are missing",
        ),
        (
            &extra[pairs..],
            got,
            "record {n} was not expected",
            "more records were not expected",
        ),
    ] {
        for &i in list.iter().take(5) {
            let what = one.replace("{n}", &(i + 1).to_string());
            problems.push(format!("output {tag}: {what}: {}", enc(&recs[i])));
        }
        if list.len() > 5 {
            problems.push(format!("output {tag}: {} {more}", list.len() - 5));
        }
    }
}

/// The test's own assertions: counts, fields, log records, script errors.
fn check_assertions(case: &TestCase, got: &RunOutput, lua: &mlua::Lua, problems: &mut Vec<String>) {
    let records = |tag: &str| -> Option<Vec<OwnedValue>> {
        got.outputs
            .iter()
            .find(|(t, _)| t == tag)
            .map(|(_, lines)| lines.iter().filter_map(|l| compare::parse(l).ok()).collect())
    };
    // A malformed pattern (`"["`) is an error of the test, said as such, not a failed match.
    let matches = |text: &str, pattern: &str| -> Result<bool, String> {
        let find = lua
            .globals()
            .get::<mlua::Table>("string")
            .and_then(|s| s.get::<mlua::Function>("find"));
        find.and_then(|f| f.call::<mlua::Value>((text, pattern)))
            .map(|v| !v.is_nil())
            .map_err(|e| {
                format!(
                    "the pattern {pattern:?} is not a Lua pattern: {}",
                    e.to_string().lines().next().unwrap_or("")
                )
            })
    };
    let mut bad_patterns: Vec<String> = Vec::new();
    let mut matches_or_note = |text: &str, pattern: &str| -> bool {
        match matches(text, pattern) {
            Ok(m) => m,
            Err(e) => {
                if !bad_patterns.contains(&e) {
                    bad_patterns.push(e);
                }
                false
            }
        }
    };
    for (tag, want) in &case.outputs {
        let Some(got) = records(tag) else {
            problems.push(format!("outputs: no output has tag {tag:?}"));
            continue;
        };
        if want.len() != got.len()
            && let Some((missing, extra)) = compare::unmatched(want, &got)
        {
            problems.push(format!(
                "output {tag}: expected {} records, got {}",
                want.len(),
                got.len()
            ));
            name_unmatched(tag, (want, &missing), (&got, &extra), problems);
            continue;
        }
        for (i, w) in want.iter().enumerate() {
            let Some(g) = got.get(i) else { break };
            let mut d = Vec::new();
            compare::differences("", w, g, &mut d, 8);
            if !d.is_empty() {
                problems.push(format!(
                    "output {tag}, record {}:\n  expected {}\n  got      {}\n    {}",
                    i + 1,
                    simd_json::prelude::Writable::encode(w),
                    simd_json::prelude::Writable::encode(g),
                    d.join("\n    ")
                ));
            }
        }
        if want.len() != got.len() {
            problems.push(format!(
                "output {tag}: expected {} records, got {}",
                want.len(),
                got.len()
            ));
        }
    }
    for (tag, n) in &case.counts {
        match records(tag) {
            None => problems.push(format!("counts: no output has tag {tag:?}")),
            Some(r) if r.len() != *n => problems.push(format!("output {tag}: expected {n} records, got {}", r.len())),
            Some(_) => {}
        }
    }
    for f in &case.fields {
        let Some(recs) = records(&f.output) else {
            problems.push(format!("fields: no output has tag {:?}", f.output));
            continue;
        };
        let picked: Vec<(usize, &OwnedValue)> = match f.which {
            Which::Nth(n) => match recs.get(n - 1) {
                Some(r) => vec![(n, r)],
                None => {
                    // Said once, however many checks name the record.
                    let p = format!("output {}: no record {n} (it has {})", f.output, recs.len());
                    if !problems.contains(&p) {
                        problems.push(p);
                    }
                    continue;
                }
            },
            Which::Each if recs.is_empty() => {
                // A check of every record of an output that has none checks nothing.
                let p = format!("output {}: no records, so its \"each\" checks check nothing", f.output);
                if !problems.contains(&p) {
                    problems.push(p);
                }
                continue;
            }
            Which::Each => recs.iter().enumerate().map(|(i, r)| (i + 1, r)).collect(),
        };
        for (n, r) in picked {
            let at = format!("output {}, record {n}, {}", f.output, f.path);
            if let Some(p) = mismatch(&f.matcher, compare::lookup(r, &f.path), &matches) {
                problems.push(format!("{at}: {p}"));
            }
        }
    }
    if got.redis.len() != case.redis_checks.len() {
        problems.push(format!(
            "redis: {} checks, {} replies",
            case.redis_checks.len(),
            got.redis.len()
        ));
    }
    for ((args, m), reply) in case.redis_checks.iter().zip(&got.redis) {
        let reply = Some(reply).filter(|r| !simd_json::prelude::TypedScalarValue::is_null(*r));
        let read = match (m, reply) {
            (Matcher::Equals(w), Some(r)) => Some(as_expected(w, r)),
            _ => None,
        };
        if let Some(p) = mismatch(m, read.as_ref().or(reply), &matches) {
            problems.push(format!("redis {}: {p}", args.join(" ")));
        }
    }
    for want in &case.logs {
        let found = got.log.iter().any(|rec| {
            want.iter().all(|(k, pattern)| {
                // `text` also matches a record `log_event` wrote as a string.
                let v = if k == "text" && rec.as_str().is_some() {
                    Some(rec)
                } else {
                    compare::lookup(rec, k)
                };
                v.is_some_and(|v| matches_or_note(&compare::text(v), pattern))
            })
        });
        if !found {
            let shown: Vec<String> = want.iter().map(|(k, p)| format!("{k} ~ {p:?}")).collect();
            problems.push(format!(
                "log: no record with {} among the {} records of dragonfly-mle.log",
                shown.join(", "),
                got.log.len()
            ));
        }
    }
    // Values sent to no analyzer or output, and lines refused, are losses a test does not
    // pass silently, unless it expects them (a `log` entry of that kind).
    for kind in ["unknown_tag", "invalid_line", "line_too_long"] {
        let expected = case
            .logs
            .iter()
            .any(|want| want.iter().any(|(k, p)| k == "kind" && matches_or_note(kind, p)));
        let recs: Vec<&OwnedValue> = got
            .log
            .iter()
            .filter(|r| compare::lookup(r, "kind").is_some_and(|k| k.as_str() == Some(kind)))
            .collect();
        if expected || recs.is_empty() {
            continue;
        }
        let mut p = format!(
            "{kind}: {} record(s) in dragonfly-mle.log (a test that means it says so: log = {{ {{ kind = \"{kind}\" }} }})",
            recs.len()
        );
        for rec in recs.iter().take(3) {
            p.push_str(&format!("\n  {}", simd_json::prelude::Writable::encode(*rec)));
        }
        problems.push(p);
    }
    problems.extend(bad_patterns);
    if got.script_errors != case.script_errors {
        let mut p = format!(
            "script errors: expected {}, the run had {}",
            case.script_errors, got.script_errors
        );
        for rec in got
            .log
            .iter()
            .filter(|r| compare::lookup(r, "kind").is_some_and(|k| k.as_str() == Some("script_error")))
            .take(3)
        {
            p.push_str(&format!("\n  {}", simd_json::prelude::Writable::encode(rec)));
        }
        problems.push(p);
    }
}
