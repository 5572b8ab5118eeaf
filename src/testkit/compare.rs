//! Comparing a run's records with what a test expects: JSON values compared as values (member
//! order and `1` vs `1.0` do not matter), fields found by dotted paths, and differences
//! described path by path.

use simd_json::OwnedValue;
use simd_json::StaticNode;
use simd_json::prelude::*;

/// Parses one record.
pub(crate) fn parse(line: &[u8]) -> Result<OwnedValue, String> {
    let mut b = line.to_vec();
    simd_json::to_owned_value(&mut b).map_err(|e| format!("not JSON ({e}): {}", String::from_utf8_lossy(line)))
}

fn number(v: &OwnedValue) -> Option<f64> {
    match v {
        OwnedValue::Static(StaticNode::I64(n)) => Some(*n as f64),
        OwnedValue::Static(StaticNode::U64(n)) => Some(*n as f64),
        OwnedValue::Static(StaticNode::F64(n)) => Some(*n),
        _ => None,
    }
}

/// An integer exactly (beyond 2^53 a double would make two different ids equal).
fn integer(v: &OwnedValue) -> Option<i128> {
    match v {
        OwnedValue::Static(StaticNode::I64(n)) => Some(*n as i128),
        OwnedValue::Static(StaticNode::U64(n)) => Some(*n as i128),
        _ => None,
    }
}

/// Whether two values are the same JSON value.
pub(crate) fn same(a: &OwnedValue, b: &OwnedValue) -> bool {
    if let (Some(x), Some(y)) = (integer(a), integer(b)) {
        return x == y;
    }
    if let (Some(x), Some(y)) = (number(a), number(b)) {
        return x == y;
    }
    match (a, b) {
        (OwnedValue::Array(x), OwnedValue::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y.iter()).all(|(p, q)| same(p, q))
        }
        (OwnedValue::Object(x), OwnedValue::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// Where `got` differs from `want`, one line per path (at most `max`).
pub(crate) fn differences(path: &str, want: &OwnedValue, got: &OwnedValue, out: &mut Vec<String>, max: usize) {
    if out.len() >= max || same(want, got) {
        return;
    }
    match (want, got) {
        (OwnedValue::Object(w), OwnedValue::Object(g)) => {
            let at = |k: &str| {
                if path.is_empty() {
                    k.to_string()
                } else {
                    format!("{path}.{k}")
                }
            };
            for (k, v) in w.iter() {
                let p = at(k);
                match g.get(k) {
                    Some(x) => differences(&p, v, x, out, max),
                    None if out.len() < max => out.push(format!("{p}: expected {}, absent", v.encode())),
                    None => {}
                }
            }
            for (k, v) in g.iter() {
                if !w.contains_key(k) && out.len() < max {
                    out.push(format!("{}: not expected, got {}", at(k), v.encode()));
                }
            }
        }
        (OwnedValue::Array(w), OwnedValue::Array(g)) if w.len() == g.len() => {
            for (i, (v, x)) in w.iter().zip(g.iter()).enumerate() {
                differences(&format!("{path}[{}]", i + 1), v, x, out, max);
            }
        }
        _ => out.push(format!(
            "{}: expected {}, got {}",
            if path.is_empty() { "the record" } else { path },
            want.encode(),
            got.encode()
        )),
    }
}

/// The value at a dotted path (`dns.rrname`; a number indexes an array from 1).
pub(crate) fn lookup<'a>(v: &'a OwnedValue, path: &str) -> Option<&'a OwnedValue> {
    let mut cur = v;
    for part in path.split('.') {
        cur = match cur {
            OwnedValue::Object(o) => o.get(part)?,
            OwnedValue::Array(a) => a.get(part.parse::<usize>().ok()?.checked_sub(1)?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// A value as the text a pattern is matched against: strings as they are, others as JSON.
pub(crate) fn text(v: &OwnedValue) -> String {
    match v.as_str() {
        Some(s) => s.to_string(),
        None => v.encode(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_compare_as_values() {
        let a = parse(br#"{"a":1,"b":[1,2.0,{"c":null}]}"#).unwrap();
        let b = parse(br#"{"b":[1.0,2,{"c":null}],"a":1.0}"#).unwrap();
        assert!(same(&a, &b));
        let c = parse(br#"{"a":1,"b":[1,2,{"c":false}]}"#).unwrap();
        assert!(!same(&a, &c));
        // Integers are compared exactly: these two are one double apart from nothing.
        let (x, y) = (parse(b"9007199254740993").unwrap(), parse(b"9007199254740992").unwrap());
        assert!(!same(&x, &y));
        let mut d = Vec::new();
        differences("", &a, &c, &mut d, 10);
        assert_eq!(d, ["b[3].c: expected null, got false"]);
        let e = parse(br#"{"a":2,"x":"y"}"#).unwrap();
        let mut d = Vec::new();
        differences("", &a, &e, &mut d, 10);
        assert_eq!(
            d,
            [
                "a: expected 1, got 2",
                "b: expected [1,2.0,{\"c\":null}], absent",
                "x: not expected, got \"y\""
            ]
        );
    }

    #[test]
    fn paths_reach_nested_members_and_array_elements() {
        let v = parse(br#"{"dns":{"rrname":"x.org","answers":[{"rdata":"1.2.3.4"}]}}"#).unwrap();
        assert_eq!(lookup(&v, "dns.rrname").and_then(|v| v.as_str()), Some("x.org"));
        assert_eq!(
            lookup(&v, "dns.answers.1.rdata").and_then(|v| v.as_str()),
            Some("1.2.3.4")
        );
        assert!(lookup(&v, "dns.answers.2").is_none());
        assert!(lookup(&v, "dns.rrname.x").is_none());
        assert_eq!(text(lookup(&v, "dns.answers").unwrap()), r#"[{"rdata":"1.2.3.4"}]"#);
    }
}
