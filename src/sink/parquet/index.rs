//! The index of the files: per-file statistics, the index line, and `find_files`.

use super::*;

/// A closed interval of timestamps, in microseconds.
pub(super) type Span = Option<(i64, i64)>;

pub(super) fn widen(span: &mut Span, t: i64) {
    *span = Some(match *span {
        Some((lo, hi)) => (lo.min(t), hi.max(t)),
        None => (t, t),
    });
}

#[derive(Default)]
pub(super) struct TypeStats {
    pub(super) rows: u64,
    pub(super) span: Span,
}

/// What the index says about one file.
#[derive(Default)]
pub(super) struct FileStats {
    pub(super) rows: u64,
    pub(super) input_bytes: u64,
    pub(super) span: Span,
    pub(super) rows_without_timestamp: u64,
    pub(super) rows_without_event_type: u64,
    pub(super) types: FxHashMap<String, TypeStats>,
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
pub(super) fn iso_micros(t: i64) -> String {
    let secs = t.div_euclid(1_000_000);
    format!(
        "{}.{:06}Z",
        crate::primitives::clock::format_utc(secs, "-", ":", "T", ""),
        t.rem_euclid(1_000_000)
    )
}

/// `s` as a JSON string, with the one escaper every output uses.
pub(super) fn push_json_str(out: &mut String, s: &str) {
    let mut b = Vec::with_capacity(s.len() + 2);
    crate::primitives::json::write_str(&mut b, s.as_bytes());
    // Escaping keeps UTF-8 text UTF-8 (every escape is ASCII).
    out.push_str(&String::from_utf8_lossy(&b));
}

/// The index object of one file, on one line (see the module docs).
pub(super) fn index_entry(name: &str, st: &FileStats, created: i64, closed: i64) -> String {
    use std::fmt::Write as _;
    let mut o = String::with_capacity(512);
    o.push_str("{\"file\":");
    push_json_str(&mut o, name);
    let _ = write!(o, ",\"rows\":{},\"input_bytes\":{}", st.rows, st.input_bytes);
    let _ = write!(
        o,
        ",\"created\":\"{}\",\"closed\":\"{}\"",
        crate::primitives::clock::format_utc(created, "-", ":", "T", "Z"),
        crate::primitives::clock::format_utc(closed, "-", ":", "T", "Z")
    );
    match st.span {
        Some((lo, hi)) => {
            let _ = write!(
                o,
                ",\"min_timestamp\":\"{}\",\"max_timestamp\":\"{}\",\"min_timestamp_micros\":{lo},\
                 \"max_timestamp_micros\":{hi}",
                iso_micros(lo),
                iso_micros(hi)
            );
        }
        None => o.push_str(
            ",\"min_timestamp\":null,\"max_timestamp\":null,\"min_timestamp_micros\":null,\
             \"max_timestamp_micros\":null",
        ),
    }
    let _ = write!(
        o,
        ",\"rows_without_timestamp\":{},\"rows_without_event_type\":{}",
        st.rows_without_timestamp, st.rows_without_event_type
    );
    let types: BTreeMap<&str, &TypeStats> = st.types.iter().map(|(k, v)| (k.as_str(), v)).collect();
    o.push_str(",\"event_types\":{");
    for (i, (ty, ts)) in types.iter().enumerate() {
        if i > 0 {
            o.push(',');
        }
        push_json_str(&mut o, ty);
        let _ = write!(o, ":{}", ts.rows);
    }
    o.push_str("},\"event_type_ranges\":{");
    for (i, (ty, ts)) in types.iter().enumerate() {
        if i > 0 {
            o.push(',');
        }
        push_json_str(&mut o, ty);
        match ts.span {
            Some((lo, hi)) => {
                let _ = write!(o, ":[{lo},{hi}]");
            }
            None => o.push_str(":null"),
        }
    }
    o.push_str("}}");
    o
}

/// One file as [`find_files`] reads it from the index.
pub(super) struct IndexEntry {
    pub(super) span: Span,
    /// Per event type: row count and timestamp range.
    pub(super) types: Vec<(String, u64, Span)>,
}

pub(super) fn parse_entry(text: &[u8]) -> Option<(String, IndexEntry)> {
    let mut buf = text.to_vec();
    let v = simd_json::to_borrowed_value(&mut buf).ok()?;
    let file = v.get("file")?.as_str()?.to_owned();
    let span_of = |lo: Option<i64>, hi: Option<i64>| lo.zip(hi);
    let span = span_of(
        v.get("min_timestamp_micros").and_then(|x| x.as_i64()),
        v.get("max_timestamp_micros").and_then(|x| x.as_i64()),
    );
    let ranges = v.get("event_type_ranges").and_then(|x| x.as_object());
    let mut types = Vec::new();
    if let Some(counts) = v.get("event_types").and_then(|x| x.as_object()) {
        for (ty, n) in counts.iter() {
            let range = match ranges {
                Some(r) => r
                    .get(ty.as_ref())
                    .and_then(|x| x.as_array())
                    .and_then(|a| span_of(a.first().and_then(|x| x.as_i64()), a.get(1).and_then(|x| x.as_i64()))),
                // Without per-type ranges the file's range is the best bound there is.
                None => span,
            };
            types.push((ty.to_string(), n.as_u64().unwrap_or(0), range));
        }
    }
    Some((file, IndexEntry { span, types }))
}

/// The data files of `prefix` in `dir` that hold a row with `from_micros <= timestamp <
/// to_micros` (and of `event_type`, when given), in name order, answered from the index only
/// (see the module docs; the answer may include a file whose rows of that type lie only
/// around the range, never miss one). Rows without a timestamp match no range.
pub fn find_files(
    dir: &Path,
    prefix: &str,
    from_micros: i64,
    to_micros: i64,
    event_type: Option<&str>,
) -> io::Result<Vec<PathBuf>> {
    let mut entries: BTreeMap<String, IndexEntry> = BTreeMap::new();
    match fs::read(dir.join(format!("{prefix}.index.jsonl"))) {
        Ok(text) => {
            // A line torn by a crash does not parse and is skipped; its sidecar stands in.
            for line in text.split(|&c| c == b'\n') {
                if let Some((file, e)) = parse_entry(line) {
                    entries.insert(file, e);
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(base) = name.to_str().and_then(|n| n.strip_suffix(".index.json")) else {
            continue;
        };
        if file_seq(prefix, base).is_none() || entries.contains_key(base) {
            continue;
        }
        if let Some((file, e)) = fs::read(entry.path()).ok().and_then(|t| parse_entry(&t)) {
            entries.insert(file, e);
        }
    }
    let meets = |span: Span| span.is_some_and(|(lo, hi)| lo < to_micros && hi >= from_micros);
    let mut out = Vec::new();
    for (file, e) in entries {
        // Only names of this prefix: an index line cannot point outside `dir`.
        if file_seq(prefix, &file).is_none() {
            continue;
        }
        let hit = match event_type {
            None => meets(e.span),
            Some(want) => e.types.iter().any(|(ty, n, span)| ty == want && *n > 0 && meets(*span)),
        };
        let path = dir.join(&file);
        if hit && path.exists() {
            out.push(path);
        }
    }
    Ok(out)
}
