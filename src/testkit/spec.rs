//! Test files: Lua chunks that set (or return) `tests`, a list of tables, read in a state with
//! the base, string, table and math libraries. Events and expected values written as Lua
//! tables become JSON (`null` is JSON null); events may also be given as JSON text.

use std::path::{Path, PathBuf};

use mlua::{Lua, LuaOptions, StdLib, Table, Value};
use simd_json::OwnedValue;
use simd_json::prelude::*;

use crate::primitives::clock::Virtual;

/// Why a test file could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SpecError {
    #[error("{}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}: {message}", path.display())]
    Lua { path: PathBuf, message: String },
    #[error("{}: {where_}: {message}", path.display())]
    Field {
        path: PathBuf,
        where_: String,
        message: String,
    },
}

/// One test of a test file.
#[derive(Debug, Clone)]
pub(crate) struct TestCase {
    pub file: PathBuf,
    pub name: String,
    /// The root and config.lua under test.
    pub root: PathBuf,
    pub config: PathBuf,
    /// The input that gets the events (default: the first).
    pub input: Option<String>,
    /// The events, one JSON line each.
    pub events: Vec<Vec<u8>>,
    /// Redis commands run before the engine starts.
    pub redis: Vec<Vec<String>>,
    /// Redis commands run once the engine has processed everything, and what each reply
    /// must be (`expect.redis`).
    pub redis_checks: Vec<(Vec<String>, Matcher)>,
    pub clock: Virtual,
    /// Shard counts to run on; `None`: config.lua's `shards` when it sets one, else 1 and 2.
    pub shards: Option<Vec<usize>>,
    pub fields: Vec<FieldCheck>,
    pub counts: Vec<(String, usize)>,
    /// Exact records per output, written in the test (`expect.outputs`).
    pub outputs: Vec<(String, Vec<OwnedValue>)>,
    pub logs: Vec<Vec<(String, String)>>,
    /// Script errors the run may have (default 0).
    pub script_errors: u64,
    /// Seconds a run may take.
    pub timeout: f64,
    /// Whether the test set `timeout` (else the default).
    pub timeout_set: bool,
}

/// Which events of an output a field check applies to.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Which {
    /// The n-th (from 1).
    Nth(usize),
    Each,
}

/// A check of one field of an output's events.
#[derive(Debug, Clone)]
pub(crate) struct FieldCheck {
    pub output: String,
    pub which: Which,
    /// Dotted path (`dns.rrname`; numbers index arrays from 1).
    pub path: String,
    pub matcher: Matcher,
}

/// What a field must be.
#[derive(Debug, Clone)]
pub(crate) enum Matcher {
    Equals(OwnedValue),
    Exists,
    Absent,
    /// A Lua pattern its text (a string, or a number as text) must contain.
    Matches(String),
}

/// The clock a test runs on unless it says otherwise: 2024-01-01T00:00:00Z, standing still.
pub(crate) const DEFAULT_CLOCK_SECS: u64 = 1_704_067_200;

/// Reads every test of `file`; `default_root` is used when the test names none and the file
/// does not sit in a root's `tests/` folder.
pub(crate) fn load(file: &Path, default_root: &Path) -> Result<Vec<TestCase>, SpecError> {
    let text = std::fs::read(file).map_err(|source| SpecError::Read {
        path: file.to_path_buf(),
        source,
    })?;
    let lua_err = |e: mlua::Error| SpecError::Lua {
        path: file.to_path_buf(),
        message: e.to_string(),
    };
    let lua = Lua::new_with(StdLib::STRING | StdLib::TABLE | StdLib::MATH, LuaOptions::default()).map_err(lua_err)?;
    for name in ["dofile", "loadfile", "load", "loadstring", "require"] {
        let _ = lua.globals().raw_set(name, Value::Nil);
    }
    lua.globals().raw_set("null", Value::NULL).map_err(lua_err)?;
    let returned: Value = lua
        .load(&text[..])
        .set_name(format!("@{}", file.display()))
        .eval()
        .map_err(lua_err)?;
    let tests = match returned {
        Value::Table(t) => t,
        _ => match lua.globals().get::<Value>("tests").map_err(lua_err)? {
            Value::Table(t) => t,
            _ => {
                return Err(SpecError::Lua {
                    path: file.to_path_buf(),
                    message: "the file neither returns nor sets `tests` (a list of tests)".into(),
                });
            }
        },
    };
    // Absolute, so that `tests/x.test.lua` given inside a root has that root above it (its
    // relative parent would be the empty path).
    let abs = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
    let dir = abs.parent().unwrap_or(Path::new("."));
    let mut out: Vec<TestCase> = Vec::new();
    for (k, t) in tests.sequence_values::<Table>().enumerate() {
        let t = t.map_err(lua_err)?;
        let case = test_case(file, dir, default_root, k + 1, &t)?;
        let folder = folder_name(&case.name);
        if folder.bytes().all(|b| b == b'.') {
            return Err(SpecError::Lua {
                path: file.to_path_buf(),
                message: format!(
                    "test {:?}: a test's name must hold a letter or a digit (it also names its folder of expected files)",
                    case.name
                ),
            });
        }
        if let Some(other) = out.iter().find(|c| folder_name(&c.name) == folder) {
            let message = if other.name == case.name {
                format!(
                    "two tests are named {:?} (a test's name also names its expected files)",
                    case.name
                )
            } else {
                format!(
                    "tests {:?} and {:?} would share the folder of expected files {folder:?} (characters other than A-Za-z0-9._- become _): rename one",
                    other.name, case.name
                )
            };
            return Err(SpecError::Lua {
                path: file.to_path_buf(),
                message,
            });
        }
        out.push(case);
    }
    Ok(out)
}

/// The keys a test may have, and those of its `expect`.
const TEST_KEYS: &[&str] = &[
    "name",
    "root",
    "config",
    "input",
    "events",
    "events_file",
    "redis",
    "clock",
    "clock_step",
    "clock_after",
    "shards",
    "timeout",
    "expect",
];
const EXPECT_KEYS: &[&str] = &["outputs", "fields", "counts", "log", "script_errors", "redis"];

/// A key of `t` that is not one of `known` (a typo would otherwise make a check vanish).
fn unknown_key(t: &Table, known: &[&str]) -> Option<String> {
    unknown_setting(t, known, false)
}

/// [`unknown_key`], but for a table whose array part is data (a Redis command and its check).
fn unknown_setting(t: &Table, known: &[&str], array: bool) -> Option<String> {
    let len = if array { t.raw_len() as i64 } else { 0 };
    t.pairs::<Value, Value>()
        .filter_map(|kv| kv.ok())
        .filter(|(k, _)| !matches!(k, Value::Integer(i) if (1..=len).contains(i)))
        .map(|(k, _)| match k {
            Value::String(s) => s.to_string_lossy(),
            other => format!("{other:?}"),
        })
        .find(|k| !known.contains(&k.as_str()))
}

fn test_case(file: &Path, dir: &Path, default_root: &Path, k: usize, t: &Table) -> Result<TestCase, SpecError> {
    let at = |key: &str, message: String| SpecError::Field {
        path: file.to_path_buf(),
        where_: format!("tests[{k}].{key}"),
        message,
    };
    if let Some(key) = unknown_key(t, TEST_KEYS) {
        return Err(at(&key, format!("unknown key (a test has {})", TEST_KEYS.join(", "))));
    }
    if let Ok(Value::Table(e)) = t.get::<Value>("expect")
        && let Some(key) = unknown_key(&e, EXPECT_KEYS)
    {
        return Err(at(
            &format!("expect.{key}"),
            format!("unknown key (expect has {})", EXPECT_KEYS.join(", ")),
        ));
    }
    let string = |key: &str| -> Result<Option<String>, SpecError> {
        match t.get::<Value>(key).unwrap_or(Value::Nil) {
            Value::Nil => Ok(None),
            Value::String(s) => Ok(Some(s.to_string_lossy())),
            other => Err(at(key, format!("expected a string, got {}", other.type_name()))),
        }
    };
    let number = |key: &str| -> Result<Option<f64>, SpecError> {
        match t.get::<Value>(key).unwrap_or(Value::Nil) {
            Value::Nil => Ok(None),
            Value::Integer(n) => Ok(Some(n as f64)),
            Value::Number(n) => Ok(Some(n)),
            other => Err(at(key, format!("expected a number, got {}", other.type_name()))),
        }
    };
    let name = string("name")?.ok_or_else(|| at("name", "every test needs a name".into()))?;
    // The root: given, else the folder above a root's tests/ folder, else the -r root.
    let root = match string("root")? {
        Some(r) => dir.join(r),
        None if dir
            .parent()
            .is_some_and(|p| p.join("config").join("config.lua").is_file()) =>
        {
            dir.parent().map(Path::to_path_buf).unwrap_or_default()
        }
        None => default_root.to_path_buf(),
    };
    let config = match string("config")? {
        Some(c) => dir.join(c),
        None => root.join("config").join("config.lua"),
    };
    let mut events = Vec::new();
    if let Some(f) = string("events_file")? {
        let path = dir.join(&f);
        let text = std::fs::read(&path).map_err(|e| at("events_file", format!("{}: {e}", path.display())))?;
        events.extend(
            text.split(|&b| b == b'\n')
                .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
                .map(<[u8]>::to_vec),
        );
    }
    if let Value::Table(list) = t.get::<Value>("events").unwrap_or(Value::Nil) {
        for (i, v) in list.sequence_values::<Value>().enumerate() {
            let v = v.map_err(|e| at("events", e.to_string()))?;
            let where_ = format!("events[{}]", i + 1);
            // A text's one trailing newline (a `[[...]]` block's) is no second event.
            let text = |s: &mlua::LuaString| {
                let b = s.as_bytes().to_vec();
                let n = b.strip_suffix(b"\n").map_or(b.len(), <[u8]>::len);
                let n = b[..n].strip_suffix(b"\r").map_or(n, <[u8]>::len);
                b[..n].to_vec()
            };
            events.push(match &v {
                Value::String(s) if text(s).contains(&b'\n') => {
                    return Err(at(
                        &where_,
                        "one event per entry: this text holds a newline (two entries, or events_file for lines)".into(),
                    ));
                }
                Value::String(s) => text(s),
                Value::Table(_) => to_json(&v).map_err(|m| at(&where_, m))?.encode().into_bytes(),
                other => {
                    return Err(at(
                        &where_,
                        format!("expected a table or JSON text, got {}", other.type_name()),
                    ));
                }
            });
        }
    }
    let mut redis = Vec::new();
    if let Value::Table(list) = t.get::<Value>("redis").unwrap_or(Value::Nil) {
        for (i, c) in list.sequence_values::<Table>().enumerate() {
            let c = c.map_err(|e| at(&format!("redis[{}]", i + 1), e.to_string()))?;
            redis.push(command_args(&c).map_err(|m| at(&format!("redis[{}]", i + 1), m))?);
        }
    }
    let start = match t.get::<Value>("clock").unwrap_or(Value::Nil) {
        Value::Nil => DEFAULT_CLOCK_SECS as f64,
        Value::Integer(n) => n as f64,
        Value::Number(n) => n,
        // Without a zone, a test's clock is UTC.
        Value::String(s) => crate::event::timestamp::parse(&s.as_bytes())
            .map(|ts| ts.epoch_secs(ts.offset.unwrap_or(0)) as f64 + f64::from(ts.nanos) / 1e9)
            .ok_or_else(|| at("clock", format!("not a timestamp: {:?}", s.to_string_lossy())))?,
        other => {
            return Err(at(
                "clock",
                format!("expected a timestamp or a number, got {}", other.type_name()),
            ));
        }
    };
    let secs_ns = |key: &str| -> Result<u64, SpecError> {
        match number(key)? {
            None => Ok(0),
            Some(s) if s >= 0.0 && s.is_finite() => Ok((s * 1e9) as u64),
            Some(s) => Err(at(key, format!("must be a number of seconds >= 0, got {s}"))),
        }
    };
    if start < 0.0 || !start.is_finite() {
        return Err(at("clock", format!("must be after 1970, got {start}")));
    }
    let clock = Virtual {
        start_ns: (start * 1e9) as u64,
        step_ns: secs_ns("clock_step")?,
        after_ns: secs_ns("clock_after")?,
    };
    let shards = match t.get::<Value>("shards").unwrap_or(Value::Nil) {
        Value::Nil => None,
        Value::Integer(n) if (1..=64).contains(&n) => Some(vec![n as usize]),
        Value::Table(list) => list
            .sequence_values::<i64>()
            .map(|n| match n {
                Ok(n) if (1..=64).contains(&n) => Ok(n as usize),
                _ => Err(at("shards", "a list of shard counts from 1 to 64".into())),
            })
            .collect::<Result<Vec<_>, _>>()
            .and_then(|v| match v.is_empty() {
                true => Err(at("shards", "an empty list runs the test nowhere".into())),
                false => Ok(Some(v)),
            })?,
        _ => return Err(at("shards", "a shard count or a list of them (1 to 64)".into())),
    };
    let timeout_set = number("timeout")?.is_some();
    let timeout = number("timeout")?.unwrap_or(60.0);
    if !(timeout > 0.0 && timeout <= 86_400.0) {
        return Err(at(
            "timeout",
            format!("must be seconds above 0 and at most 86400, got {timeout}"),
        ));
    }
    let mut case = TestCase {
        file: file.to_path_buf(),
        name,
        root,
        config,
        input: string("input")?,
        events,
        redis,
        redis_checks: Vec::new(),
        clock,
        shards,
        fields: Vec::new(),
        counts: Vec::new(),
        outputs: Vec::new(),
        logs: Vec::new(),
        script_errors: 0,
        timeout,
        timeout_set,
    };
    if let Value::Table(expect) = t.get::<Value>("expect").unwrap_or(Value::Nil) {
        read_expect(&expect, &mut case).map_err(|(w, m)| at(&format!("expect.{w}"), m))?;
    }
    Ok(case)
}

/// `expect`: `outputs`, `fields`, `counts`, `log`, `script_errors`.
fn read_expect(e: &Table, case: &mut TestCase) -> Result<(), (String, String)> {
    if let Some(outputs) = e
        .get::<Option<Table>>("outputs")
        .map_err(|err| ("outputs".to_string(), err.to_string()))?
    {
        for pair in outputs.pairs::<String, Table>() {
            let (tag, list) = pair.map_err(|err| ("outputs".to_string(), err.to_string()))?;
            let w = format!("outputs.{tag}");
            let mut records = Vec::new();
            for (i, v) in list.sequence_values::<Value>().enumerate() {
                let v = v.map_err(|err| (w.clone(), err.to_string()))?;
                records.push(match &v {
                    Value::String(s) => {
                        super::compare::parse(&s.as_bytes()).map_err(|m| (format!("{w}[{}]", i + 1), m))?
                    }
                    _ => to_json(&v).map_err(|m| (format!("{w}[{}]", i + 1), m))?,
                });
            }
            case.outputs.push((tag, records));
        }
        case.outputs.sort_by(|a, b| a.0.cmp(&b.0));
    }
    let lua_err = |w: &str| {
        let w = w.to_string();
        move |err: mlua::Error| (w, err.to_string())
    };
    if let Some(n) = e
        .get::<Option<f64>>("script_errors")
        .map_err(lua_err("script_errors"))?
    {
        if !(n >= 0.0 && n.fract() == 0.0 && n < 1e15) {
            return Err(("script_errors".into(), format!("a whole number from 0, got {n}")));
        }
        case.script_errors = n as u64;
    }
    if let Some(counts) = e.get::<Option<Table>>("counts").map_err(lua_err("counts"))? {
        for pair in counts.pairs::<String, i64>() {
            let (tag, n) = pair.map_err(lua_err("counts"))?;
            if n < 0 {
                return Err((format!("counts.{tag}"), format!("a number of records from 0, got {n}")));
            }
            case.counts.push((tag, n as usize));
        }
        case.counts.sort();
    }
    if let Some(logs) = e.get::<Option<Table>>("log").map_err(lua_err("log"))? {
        for (i, rec) in logs.sequence_values::<Table>().enumerate() {
            let w = format!("log[{}]", i + 1);
            let rec = rec.map_err(|err| (w.clone(), err.to_string()))?;
            let mut fields = Vec::new();
            for pair in rec.pairs::<Value, Value>() {
                let (k, v) = pair.map_err(|err| (w.clone(), err.to_string()))?;
                let (Value::String(k), Value::String(v)) = (&k, &v) else {
                    return Err((
                        w,
                        "an entry names each field it matches with a pattern: { kind = \"script_error\", message = \"pattern\" } (a record log_event wrote as text: { text = \"pattern\" })".into(),
                    ));
                };
                fields.push((k.to_string_lossy(), v.to_string_lossy()));
            }
            if fields.is_empty() {
                return Err((
                    w,
                    "an empty entry matches any record: name the fields it must match, { kind = \"script_error\", message = \"pattern\" }".into(),
                ));
            }
            fields.sort();
            case.logs.push(fields);
        }
    }
    if let Some(checks) = e.get::<Option<Table>>("redis").map_err(lua_err("redis"))? {
        for (i, c) in checks.sequence_values::<Table>().enumerate() {
            let w = format!("redis[{}]", i + 1);
            let c = c.map_err(|err| (w.clone(), err.to_string()))?;
            let args = command_args(&c).map_err(|m| (w.clone(), m))?;
            let named = ["equals", "exists", "absent", "matches"];
            let given: Vec<(&str, Value)> = named
                .iter()
                .filter_map(|k| c.get::<Value>(*k).ok().filter(|v| !v.is_nil()).map(|v| (*k, v)))
                .collect();
            if let Some(k) = unknown_setting(&c, &named, true) {
                return Err((
                    w,
                    format!("unknown setting {k:?} (a check is one of {})", named.join(", ")),
                ));
            }
            let ok = match given.as_slice() {
                [("exists" | "absent", v)] => *v == Value::Boolean(true),
                [("matches", v)] => v.is_string(),
                [("equals", _)] => true,
                _ => false,
            };
            if !ok {
                return Err((
                    w,
                    "say what the reply must be, once: equals = v, matches = \"pattern\", exists = true or absent = true"
                        .into(),
                ));
            }
            let m = matcher(&Value::Table(c)).map_err(|m| (w, m))?;
            case.redis_checks.push((args, m));
        }
    }
    if let Some(fields) = e.get::<Option<Table>>("fields").map_err(lua_err("fields"))? {
        for pair in fields.pairs::<String, Table>() {
            let (output, per) = pair.map_err(lua_err("fields"))?;
            for pair in per.pairs::<Value, Table>() {
                let (which, checks) = pair.map_err(lua_err("fields"))?;
                let w = format!("fields.{output}");
                let which = match which {
                    Value::Integer(n) if n >= 1 => Which::Nth(n as usize),
                    Value::String(s) if s == "each" => Which::Each,
                    _ => return Err((w, "keys are event numbers (from 1) or \"each\"".into())),
                };
                for pair in checks.pairs::<String, Value>() {
                    let (path, m) = pair.map_err(lua_err(&w))?;
                    let matcher = matcher(&m).map_err(|msg| (format!("{w}.{path}"), msg))?;
                    case.fields.push(FieldCheck {
                        output: output.clone(),
                        which: which.clone(),
                        path,
                        matcher,
                    });
                }
            }
        }
        case.fields
            .sort_by(|a, b| (&a.output, &a.path).cmp(&(&b.output, &b.path)));
    }
    Ok(())
}

/// The folder a test's expected records go to, from its name: characters other than
/// `A-Za-z0-9._-` become `_`.
pub(crate) fn folder_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The array part of `c`: a Redis command and its arguments (strings or numbers).
fn command_args(c: &Table) -> Result<Vec<String>, String> {
    let args: Vec<String> = c
        .sequence_values::<Value>()
        .map(|a| match a {
            Ok(Value::String(s)) => Ok(s.to_string_lossy()),
            Ok(Value::Integer(n)) => Ok(n.to_string()),
            Ok(Value::Number(n)) => Ok(n.to_string()),
            Ok(other) => Err(format!("arguments are strings or numbers, got {}", other.type_name())),
            Err(e) => Err(e.to_string()),
        })
        .collect::<Result<_, _>>()?;
    if args.is_empty() {
        return Err("an empty command".into());
    }
    Ok(args)
}

/// `{ equals = v }`, `{ exists = true }`, `{ absent = true }`, `{ matches = "pattern" }`; a
/// plain value means `equals`.
/// A check names one of those keys and nothing else: two checks in one (`{ absent = true,
/// equals = 1 }`) or a key beside one are refused, not half applied.
fn matcher(v: &Value) -> Result<Matcher, String> {
    let Value::Table(t) = v else {
        return Ok(Matcher::Equals(to_json(v)?));
    };
    const CHECKS: [&str; 4] = ["equals", "exists", "absent", "matches"];
    let named: Vec<(&str, Value)> = CHECKS
        .iter()
        .filter_map(|&k| Some((k, t.get::<Value>(k).ok().filter(|v| !v.is_nil())?)))
        .collect();
    if named.is_empty() {
        // A table with none of those keys is an expected object or array value.
        return Ok(Matcher::Equals(to_json(v)?));
    }
    let once = "say what the value must be, once: equals = v, matches = \"pattern\", exists = true or absent = true";
    if named.len() > 1 {
        let keys: Vec<&str> = named.iter().map(|(k, _)| *k).collect();
        return Err(format!("{once} (got {})", keys.join(" and ")));
    }
    // (Integer keys: a Redis check's command.)
    if let Some(other) = t
        .pairs::<Value, Value>()
        .filter_map(Result::ok)
        .find_map(|(k, _)| match k {
            Value::String(s) if CHECKS.contains(&s.to_string_lossy().as_str()) => None,
            Value::String(s) => Some(s.to_string_lossy()),
            Value::Integer(_) => None,
            k => Some(format!("a {} key", k.type_name())),
        })
    {
        return Err(format!(
            "{once} (got {other} beside {}; an expected object with a member of that name: equals = {{ ... }})",
            named[0].0
        ));
    }
    match &named[0] {
        ("equals", w) => Ok(Matcher::Equals(to_json(w)?)),
        ("exists", Value::Boolean(true)) => Ok(Matcher::Exists),
        ("absent", Value::Boolean(true)) => Ok(Matcher::Absent),
        ("matches", Value::String(p)) => Ok(Matcher::Matches(p.to_string_lossy())),
        ("matches", _) => Err("matches = \"a Lua pattern\"".into()),
        (k, _) => Err(format!(
            "{k} = true (for the opposite: {})",
            if *k == "exists" {
                "absent = true"
            } else {
                "exists = true"
            }
        )),
    }
}

/// A Lua value as JSON: sequences are arrays, other tables objects, `null` is null.
pub(crate) fn to_json(v: &Value) -> Result<OwnedValue, String> {
    Ok(match v {
        Value::Nil => OwnedValue::null(),
        Value::LightUserData(p) if p.0.is_null() => OwnedValue::null(),
        Value::Boolean(b) => OwnedValue::from(*b),
        Value::Integer(n) => OwnedValue::from(*n),
        Value::Number(n) if n.fract() == 0.0 && n.abs() < 9.007_199_254_740_992e15 => OwnedValue::from(*n as i64),
        Value::Number(n) => OwnedValue::from(*n),
        Value::String(s) => OwnedValue::from(s.to_string_lossy()),
        Value::Table(t) => {
            let n = t.raw_len();
            let pairs = t.pairs::<Value, Value>().count();
            if n > 0 && pairs == n {
                let mut a = Vec::with_capacity(n);
                for i in 1..=n {
                    a.push(to_json(&t.raw_get::<Value>(i).map_err(|e| e.to_string())?)?);
                }
                OwnedValue::from(a)
            } else {
                // Members in key order: the same table gives the same text in every run.
                let mut members = Vec::new();
                for pair in t.pairs::<Value, Value>() {
                    let (k, v) = pair.map_err(|e| e.to_string())?;
                    let k = match k {
                        Value::String(s) => s.to_string_lossy(),
                        Value::Integer(i) => i.to_string(),
                        Value::Number(f) => f.to_string(),
                        other => return Err(format!("object keys are strings, got {}", other.type_name())),
                    };
                    members.push((k, to_json(&v)?));
                }
                members.sort_by(|a, b| a.0.cmp(&b.0));
                let mut o = simd_json::owned::Object::with_capacity(members.len());
                for (k, v) in members {
                    o.insert(k, v);
                }
                OwnedValue::from(o)
            }
        }
        other => return Err(format!("a {} cannot be JSON", other.type_name())),
    })
}
