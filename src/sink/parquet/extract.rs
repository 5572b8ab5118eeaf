//! The typed fields of an event line: a fast structural scan, the full parser when needed.

use super::*;

/// The typed fields of one event, borrowed from the parsed line.
#[derive(Default)]
pub(super) struct Fields<'a> {
    pub(super) ts: Option<i64>,
    pub(super) ports: [Option<i32>; 2],
    pub(super) flow_id: Option<i64>,
    pub(super) strs: [Option<&'a str>; STR_COLUMNS],
}

/// The fields of a JSON object line read with the structural scanner, or `None` when the
/// line needs the full parser: not UTF-8, not one object, or an escape in a key or in a
/// string value that is kept. Same results as [`extract`] otherwise (last duplicate wins,
/// integers only as `I64`/`U64` would be).
pub(super) fn extract_fast(line: &[u8]) -> Option<Fields<'_>> {
    use crate::event::scan;
    let text = simdutf8::basic::from_utf8(line).ok()?;
    let root = scan::skip_ws(line, 0);
    let first = scan::first_member(line, root)?;
    let mut at = Some(first);
    // Where the closing brace must be: after the last value (or at once, for `{}`).
    let mut close = first;
    if line.get(first) == Some(&b'}') {
        at = None;
    }
    let mut f = Fields::default();
    while let Some(i) = at {
        let (m, next) = scan::next_member(line, i)?;
        if m.key_escaped {
            return None;
        }
        let key = &text[m.key_start as usize..m.key_end as usize];
        let (vs, ve) = (m.val_start as usize, m.val_end as usize);
        let s = || -> Option<Option<&str>> {
            if line[vs] != b'"' {
                return Some(None);
            }
            let inner = &text[vs + 1..ve - 1];
            if inner.contains('\\') { None } else { Some(Some(inner)) }
        };
        let int = || -> Option<i64> {
            let raw = &text[vs..ve];
            let digits = raw.strip_prefix('-').unwrap_or(raw);
            if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            raw.parse::<i64>().ok()
        };
        match key {
            TIMESTAMP => f.ts = s()?.and_then(|s| parse_timestamp_micros(s.as_bytes())),
            fields::EVENT_TYPE => f.strs[STR_EVENT_TYPE] = s()?,
            fields::SRC_IP => f.strs[1] = s()?,
            fields::DEST_IP => f.strs[2] = s()?,
            fields::PROTO => f.strs[3] = s()?,
            APP_PROTO => f.strs[4] = s()?,
            IN_IFACE => f.strs[5] = s()?,
            COMMUNITY_ID => f.strs[6] = s()?,
            HOST => f.strs[7] = s()?,
            fields::SRC_PORT => f.ports[0] = int().and_then(|v| i32::try_from(v).ok()),
            fields::DEST_PORT => f.ports[1] = int().and_then(|v| i32::try_from(v).ok()),
            fields::FLOW_ID => f.flow_id = int(),
            _ => {}
        }
        close = scan::skip_ws(line, ve);
        at = next;
    }
    // One object and nothing after it.
    if line.get(close) != Some(&b'}') || scan::skip_ws(line, close + 1) != line.len() {
        return None;
    }
    Some(f)
}

/// Fills `f` from the top-level members of the parsed event; false when it is not an object.
/// A key seen twice takes its last value.
pub(super) fn extract<'a>(tape: &[Node<'a>], f: &mut Fields<'a>) -> bool {
    let Some(Node::Object { len, .. }) = tape.first() else {
        return false;
    };
    let mut i = 1;
    for _ in 0..*len {
        let Some(Node::String(key)) = tape.get(i) else {
            break;
        };
        let val = tape.get(i + 1);
        let s = || match val {
            Some(Node::String(s)) => Some(*s),
            _ => None,
        };
        match *key {
            TIMESTAMP => f.ts = s().and_then(|s| parse_timestamp_micros(s.as_bytes())),
            fields::EVENT_TYPE => f.strs[STR_EVENT_TYPE] = s(),
            fields::SRC_IP => f.strs[1] = s(),
            fields::DEST_IP => f.strs[2] = s(),
            fields::PROTO => f.strs[3] = s(),
            APP_PROTO => f.strs[4] = s(),
            IN_IFACE => f.strs[5] = s(),
            COMMUNITY_ID => f.strs[6] = s(),
            HOST => f.strs[7] = s(),
            fields::SRC_PORT => f.ports[0] = int_of(val).and_then(|v| i32::try_from(v).ok()),
            fields::DEST_PORT => f.ports[1] = int_of(val).and_then(|v| i32::try_from(v).ok()),
            fields::FLOW_ID => f.flow_id = int_of(val),
            _ => {}
        }
        i += 1 + match val {
            Some(Node::Object { count, .. } | Node::Array { count, .. }) => count + 1,
            Some(_) => 1,
            None => 0,
        };
    }
    true
}

pub(super) fn int_of(n: Option<&Node<'_>>) -> Option<i64> {
    match n {
        Some(Node::Static(StaticNode::I64(v))) => Some(*v),
        Some(Node::Static(StaticNode::U64(v))) => i64::try_from(*v).ok(),
        _ => None,
    }
}

/// Parses an ISO 8601 / RFC 3339 timestamp with a UTC offset into microseconds since the Unix
/// epoch: `2024-03-01T12:00:00.124448+0000` (Suricata), `...Z`, `...+00:00`, `...-05`; the
/// `T` may be a space, the fraction may have any number of digits (truncated to
/// microseconds) or be absent. A timestamp without an offset is rejected: its zone is unknown.
pub(super) fn parse_timestamp_micros(s: &[u8]) -> Option<i64> {
    let t = crate::event::timestamp::parse(s)?;
    Some(t.epoch_secs(t.offset?) * 1_000_000 + i64::from(t.nanos / 1000))
}
