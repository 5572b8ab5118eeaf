//! Comparing a run's records with what a test expects: JSON values compared as values (member
//! order and `1` vs `1.0` do not matter), fields found by dotted paths, and differences
//! described path by path.

use simd_json::OwnedValue;
use simd_json::StaticNode;
use simd_json::prelude::*;

/// Parses one record. A key that occurs twice in an object has the value of its last
/// occurrence, as scripts read it (and lua-cjson did).
pub(crate) fn parse(line: &[u8]) -> Result<OwnedValue, String> {
    let mut b = line.to_vec();
    let v =
        simd_json::to_owned_value(&mut b).map_err(|e| format!("not JSON ({e}): {}", String::from_utf8_lossy(line)))?;
    Ok(last_wins(v))
}

/// `v` with every object rebuilt member by member, so that a later member replaces an earlier
/// one of the same name.
fn last_wins(v: OwnedValue) -> OwnedValue {
    match v {
        OwnedValue::Object(o) => {
            let mut out = simd_json::owned::Object::with_capacity(o.len());
            for (k, v) in o.into_iter() {
                out.insert(k, last_wins(v));
            }
            OwnedValue::from(out)
        }
        OwnedValue::Array(a) => OwnedValue::from(a.into_iter().map(last_wins).collect::<Vec<_>>()),
        other => other,
    }
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

/// Which records are missing from `got` and which are extra, when the counts differ: the
/// longest common subsequence of equal records (`same`) pairs the rest, so one record dropped
/// from the middle is named as such instead of shifting every later record. (indexes of
/// `want` not matched, indexes of `got` not matched); `None` when the lists are too long to
/// align (above 4,000,000 pairs).
pub(crate) fn unmatched(want: &[OwnedValue], got: &[OwnedValue]) -> Option<(Vec<usize>, Vec<usize>)> {
    let (n, m) = (want.len(), got.len());
    if n.saturating_mul(m) > 4_000_000 {
        return None;
    }
    // lcs[i][j]: the longest common subsequence of want[i..] and got[j..].
    let mut lcs = vec![0u32; (n + 1) * (m + 1)];
    let at = |i: usize, j: usize| i * (m + 1) + j;
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[at(i, j)] = if same(&want[i], &got[j]) {
                lcs[at(i + 1, j + 1)] + 1
            } else {
                lcs[at(i + 1, j)].max(lcs[at(i, j + 1)])
            };
        }
    }
    let (mut missing, mut extra) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < n && j < m {
        if same(&want[i], &got[j]) {
            i += 1;
            j += 1;
        } else if lcs[at(i + 1, j)] >= lcs[at(i, j + 1)] {
            missing.push(i);
            i += 1;
        } else {
            extra.push(j);
            j += 1;
        }
    }
    missing.extend(i..n);
    extra.extend(j..m);
    Some((missing, extra))
}

/// The value at a dotted path (`dns.rrname`; a number indexes an array from 1). A member whose
/// name has dots (`"source.ip"`) is found by its name, at any level: the whole rest of the
/// path first, then each way of cutting it at a dot, the shortest first part first.
pub(crate) fn lookup<'a>(v: &'a OwnedValue, path: &str) -> Option<&'a OwnedValue> {
    let step = |part: &str| match v {
        OwnedValue::Object(o) => o.get(part),
        OwnedValue::Array(a) => a.get(part.parse::<usize>().ok()?.checked_sub(1)?),
        _ => None,
    };
    if let Some(x) = step(path) {
        return Some(x);
    }
    path.match_indices('.')
        .find_map(|(i, _)| lookup(step(&path[..i])?, &path[i + 1..]))
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
    fn a_record_dropped_or_added_is_named_not_shifted() {
        let recs = |s: &[u64]| -> Vec<OwnedValue> {
            s.iter()
                .map(|&i| parse(format!("{{\"i\":{i}}}").as_bytes()).unwrap())
                .collect()
        };
        assert_eq!(
            unmatched(&recs(&[1, 2, 3, 4, 5]), &recs(&[1, 2, 4, 5])),
            Some((vec![2], vec![]))
        );
        assert_eq!(
            unmatched(&recs(&[1, 2, 3]), &recs(&[1, 9, 2, 3])),
            Some((vec![], vec![1]))
        );
        assert_eq!(unmatched(&recs(&[1, 2]), &recs(&[3])), Some((vec![0, 1], vec![0])));
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
        // Names with dots, whole first; a repeated key reads as its last occurrence.
        let d = parse(br#"{"source.ip":"1.2.3.4","a.b":1,"a":{"b":2,"c.d":{"e":3}},"k":1,"k":2}"#).unwrap();
        assert_eq!(lookup(&d, "source.ip").and_then(|v| v.as_str()), Some("1.2.3.4"));
        assert_eq!(lookup(&d, "a.b").and_then(|v| v.as_u64()), Some(1));
        assert_eq!(lookup(&d, "a.c.d.e").and_then(|v| v.as_u64()), Some(3));
        assert_eq!(lookup(&d, "k").and_then(|v| v.as_u64()), Some(2));
        assert!(lookup(&v, "dns.rrname.x").is_none());
        assert_eq!(text(lookup(&v, "dns.answers").unwrap()), r#"[{"rdata":"1.2.3.4"}]"#);
    }
}
