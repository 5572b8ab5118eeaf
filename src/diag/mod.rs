//! The engine's diagnostics (a leaf: it uses only `primitives`), one [`Kind`] per kind of
//! record: its name in `{log}` and its
//! level live here and nowhere else, and every record is counted per kind
//! (`diagnostics.<kind>` in the stats line, `dragonfly_diagnostics_total{kind}` in `/metrics`)
//! whether it was written in full or left out by the rate limit (`limit`): the log stays
//! small in a storm, the counts stay exact. docs/metrics.md lists the same kinds with their
//! members.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

pub(crate) mod limit;

macro_rules! kinds {
    ($($v:ident => $name:literal, $level:literal;)*) => {
        /// A kind of diagnostic record.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Kind { $($v),* }

        impl Kind {
            /// Every kind, in the order of [`Kind::index`].
            pub const ALL: &[Kind] = &[$(Kind::$v),*];

            /// The `kind` member of its records.
            pub fn name(self) -> &'static str {
                match self { $(Kind::$v => $name),* }
            }

            /// The `level` member of its records (`error` or `info`).
            pub fn level(self) -> &'static str {
                match self { $(Kind::$v => $level),* }
            }
        }
    };
}

kinds! {
    InvalidLine => "invalid_line", "error";
    LineTooLong => "line_too_long", "error";
    ReadError => "read_error", "error";
    InputMissing => "input_missing", "error";
    InputError => "input_error", "error";
    AcceptError => "accept_error", "error";
    DgramQueueShort => "dgram_queue_short", "error";
    InputHole => "input_hole", "error";
    CheckpointError => "checkpoint_error", "error";
    CheckpointFileGone => "checkpoint_file_gone", "error";
    CheckpointHandedOver => "checkpoint_handed_over", "info";
    KafkaError => "kafka_error", "error";
    KafkaCommitError => "kafka_commit_error", "error";
    KafkaGap => "kafka_gap", "error";
    KafkaRevoked => "kafka_revoked", "info";
    KafkaAssigned => "kafka_assigned", "info";
    InputResumed => "input_resumed", "info";
    ScriptError => "script_error", "error";
    ScriptWarning => "script_warning", "error";
    OnError => "on_error", "error";
    UnknownTag => "unknown_tag", "error";
    HopLimit => "hop_limit", "error";
    RedisLost => "redis_lost", "error";
    RedisRestored => "redis_restored", "info";
    RedisModule => "redis_module", "error";
    OutputError => "output_error", "error";
    OutputWaiting => "output_waiting", "error";
    OutputResumed => "output_resumed", "info";
    OutputReopened => "output_reopened", "error";
    WorkerStuck => "worker_stuck", "error";
    WorkerFailed => "worker_failed", "error";
    OutputGaveUp => "output_gave_up", "error";
    OutputStaleFiles => "output_stale_files", "error";
    OutputRepaired => "output_repaired", "error";
    Reload => "reload", "info";
    ReloadError => "reload_error", "error";
    HttpListening => "http_listening", "info";
    HttpUnavailable => "http_unavailable", "info";
    Privileges => "privileges", "info";
    ConfigWarning => "config_warning", "warning";
    Suppressed => "suppressed", "error";
    FatalError => "fatal_error", "error";
}

impl Kind {
    /// Its position in [`Kind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

static COUNTS: [AtomicU64; Kind::ALL.len()] = [const { AtomicU64::new(0) }; Kind::ALL.len()];

/// Counts one record of `kind` (written or left out).
pub(crate) fn count(kind: Kind) {
    COUNTS[kind.index()].fetch_add(1, Relaxed);
}

/// Records of each kind so far (since the process started).
pub(crate) fn counts() -> impl Iterator<Item = (Kind, u64)> {
    Kind::ALL.iter().map(|&k| (k, COUNTS[k.index()].load(Relaxed)))
}

/// Starts a record of `kind` (`{"time":...,"level":...,"kind":...`) in `line`, and counts it.
pub(crate) fn head(kind: Kind, line: &mut Vec<u8>) {
    count(kind);
    head_uncounted(kind, line);
}

/// [`head`] for a record counted later, by whoever decides whether it is written (the
/// writer's rate limit of line reports).
pub(crate) fn head_uncounted(kind: Kind, line: &mut Vec<u8>) {
    use crate::primitives::json::write_str;
    line.extend_from_slice(b"{\"time\":");
    write_str(line, crate::primitives::clock::utc_now().as_bytes());
    line.extend_from_slice(b",\"level\":\"");
    line.extend_from_slice(kind.level().as_bytes());
    line.extend_from_slice(b"\",\"kind\":\"");
    line.extend_from_slice(kind.name().as_bytes());
    line.push(b'"');
}

/// A whole record of `kind`: string members `fields`, then `message`.
pub(crate) fn line(kind: Kind, fields: &[(&str, &str)], message: &str) -> Vec<u8> {
    use crate::primitives::json::write_str;
    let mut line = Vec::with_capacity(128);
    head(kind, &mut line);
    for (k, v) in fields {
        line.push(b',');
        write_str(&mut line, k.as_bytes());
        line.push(b':');
        write_str(&mut line, v.as_bytes());
    }
    line.extend_from_slice(b",\"message\":");
    write_str(&mut line, message.as_bytes());
    line.push(b'}');
    line
}

static STDERR_REPORTS: AtomicU64 = AtomicU64::new(0);
/// Problems copied to stderr before it goes quiet (all of them always go to `{log}`).
pub(crate) const STDERR_REPORT_LIMIT: u64 = 20;

/// `--log-format text`: engine records in `{log}` and on stderr as text lines.
static LOG_TEXT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Sets `--log-format` (`text` or `json`, the default).
pub fn set_log_format_text(text: bool) {
    LOG_TEXT.store(text, Relaxed);
}

/// An engine record (a JSON object with `time`, `level`, `kind` and `message`; `line` without
/// its newline) as `--log-format` wants it: unchanged for `json`, and for `text`
/// `<time> <LEVEL> <kind> <key>=<value> ...: <message>` (other members sorted by key). Records
/// of other shapes (a script's `log_event`) stay as they are.
pub(crate) fn log_line(line: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    use std::borrow::Cow;
    if !LOG_TEXT.load(Relaxed) {
        return Cow::Borrowed(line);
    }
    match text_line(line) {
        Some(t) => Cow::Owned(t.into_bytes()),
        None => Cow::Borrowed(line),
    }
}

/// The text form of an engine record (see [`log_line`]); `None` for other shapes.
fn text_line(line: &[u8]) -> Option<String> {
    use simd_json::prelude::*;
    let Ok(simd_json::OwnedValue::Object(m)) = simd_json::to_owned_value(&mut line.to_vec()) else {
        return None;
    };
    let text = |k: &str| m.get(k).and_then(|v| v.as_str());
    let (Some(time), Some(level), Some(kind), Some(message)) =
        (text("time"), text("level"), text("kind"), text("message"))
    else {
        return None;
    };
    let mut out = format!("{time} {} {kind}", level.to_ascii_uppercase());
    let mut keys: Vec<&String> = m
        .keys()
        .filter(|k| !matches!(k.as_str(), "time" | "level" | "kind" | "message"))
        .collect();
    keys.sort();
    for k in keys {
        let v = match m.get(k.as_str()) {
            Some(v) => match v.as_str() {
                Some(s) if !s.is_empty() && !s.contains([' ', '"', '=']) && !s.contains(char::is_control) => {
                    s.to_string()
                }
                _ => v.encode(),
            },
            None => continue,
        };
        out.push_str(&format!(" {k}={v}"));
    }
    out.push_str(": ");
    // One record, one line: a message's control characters (a newline from an event's text
    // in a script error, say) are written escaped, so nothing in it can pass for a record.
    for c in message.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    Some(out)
}

/// Copies a report to stderr whatever the limit of [`stderr_report`]: a report about the log
/// itself (it cannot be written), which stderr is the only place left for.
pub(crate) fn stderr_report_always(line: &[u8]) {
    let mut e = std::io::stderr().lock();
    let _ = e.write_all(b"dragonfly-mle: ");
    let _ = e.write_all(&log_line(line));
    let _ = e.write_all(b"\n");
}

/// Copies a problem report to stderr, for the first few only.
pub(crate) fn stderr_report(line: &[u8]) {
    let n = STDERR_REPORTS.fetch_add(1, Relaxed);
    if n < STDERR_REPORT_LIMIT {
        stderr_report_always(line);
    } else if n == STDERR_REPORT_LIMIT {
        let _ =
            std::io::stderr().write_all(b"dragonfly-mle: further problems are reported only in dragonfly-mle.log\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--log-format text` keeps a record on one line whatever its message or members hold.
    #[test]
    fn text_records_stay_on_one_line() {
        let l = line(
            Kind::HopLimit,
            &[("script", "a\nb")],
            "bad x\n2026-12-06T00:00:00Z INFO reload: forged\r\u{1}",
        );
        let t = text_line(&l).unwrap();
        assert!(!t.contains(['\n', '\r', '\u{1}']), "{t:?}");
        assert!(
            t.ends_with(": bad x\\n2026-12-06T00:00:00Z INFO reload: forged\\r\\u0001"),
            "{t:?}"
        );
        assert!(t.contains(" script=\"a\\nb\""), "{t:?}");
    }

    #[test]
    fn kinds_are_named_once_and_records_counted() {
        let mut names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Kind::ALL.len(), "a name used twice");
        assert!(Kind::ALL.iter().enumerate().all(|(i, k)| k.index() == i));
        let before = counts().find(|(k, _)| *k == Kind::HopLimit).unwrap().1;
        let l = line(Kind::HopLimit, &[("script", "a")], "m");
        let v: serde_json::Value = serde_json::from_slice(&l).unwrap();
        assert_eq!(
            (v["level"].as_str(), v["kind"].as_str(), v["script"].as_str()),
            (Some("error"), Some("hop_limit"), Some("a"))
        );
        assert!(counts().find(|(k, _)| *k == Kind::HopLimit).unwrap().1 > before);
    }
}
