//! Unit tests of the Parquet sink; files are read back by the parquet crate (pyarrow reads the engine's files in tests/io).

use super::extract::parse_timestamp_micros;
use super::*;
use serde_json::{Map, Value, json};
use std::time::Duration;

/// 2024-03-01T12:00:00Z.
const BASE: i64 = 1_709_294_400_000_000;
const MS: i64 = 1000;
const TYPES: [&str; 6] = ["dns", "flow", "alert", "http", "tls", "fileinfo"];
/// Index of the event whose timestamp is an hour before all others.
const LATE: usize = 300;
const LATE_TS: i64 = BASE - 3_600_000_000;

/// One input line (as given to `write`) and the timestamp its row must hold.
struct Input {
    line: Vec<u8>,
    ts: Option<i64>,
}

fn iso_with_offset(utc: i64, style: usize) -> String {
    let (off, suffix) = match style {
        1 => (0, "Z"),
        2 => (0, "+00:00"),
        3 => (3600, "+0100"),
        4 => (-5 * 3600, "-05"),
        _ => (0, "+0000"),
    };
    let local = utc + off * 1_000_000;
    format!(
        "{}.{:06}{suffix}",
        crate::primitives::clock::format_utc(local.div_euclid(1_000_000), "-", ":", "T", ""),
        local.rem_euclid(1_000_000)
    )
}

/// Synthetic EVE events of about 650 bytes, several types, 1 ms apart, with the odd cases
/// the sink must survive.
fn events(n: usize) -> Vec<Input> {
    (0..n).map(event).collect()
}

fn event(i: usize) -> Input {
    let mut ts = BASE + i as i64 * MS + (i as i64 * 37) % 1000;
    if i == LATE {
        ts = LATE_TS;
    }
    let ty = if i == LATE { "alert" } else { TYPES[i % TYPES.len()] };
    let style = match i % 97 {
        1 => 1,
        2 => 2,
        3 => 3,
        4 => 4,
        _ => 0,
    };
    let stamp = iso_with_offset(ts, style);
    let line: Vec<u8> = match i {
        100 => format!(r#"{{"timestamp":"{stamp}","event_type":"dns","src_ip":"10.0.0.1""#).into_bytes(),
        101 => b"[1,2,3]".to_vec(),
        108 => {
            let mut l = format!(r#"{{"timestamp":"{stamp}","event_type":"dns","host":"bad "#).into_bytes();
            l.extend_from_slice(b"\xff\xfe\"}");
            l
        }
        _ if i % 13 == 5 => format!(
            r#"{{"timestamp":"{stamp}","event_type":"stats","stats":{{"uptime":{i},"capture":{{"kernel_packets":{},"kernel_drops":0}},"decoder":{{"pkts":{},"bytes":{}}}}}}}"#,
            i * 1000,
            i * 990,
            i * 650_000
        )
        .into_bytes(),
        _ => {
            let flow_id: u64 = match i {
                7 => (1 << 53) - 1,
                105 => u64::MAX,
                _ => 1_000_000_000_000 + i as u64 * 7919,
            };
            let (src_port, dest_port) = match i {
                102 => (r#""80""#.to_string(), "70000".to_string()),
                _ => ((1024 + i * 7 % 60000).to_string(), [53, 80, 443][i % 3].to_string()),
            };
            let stamp = if i == 104 { "not a time".to_string() } else { stamp };
            let proto = if ty == "dns" { "UDP" } else { "TCP" };
            let mut s = format!(
                r#"{{"timestamp":"{stamp}","flow_id":{flow_id},"in_iface":"eth{}","event_type":"{ty}","src_ip":"10.0.{}.{}","src_port":{src_port},"dest_ip":"192.168.{}.{}","dest_port":{dest_port},"proto":"{proto}","community_id":"1:{:08x}Zm9vYmFyYmF6cXV4PQ==""#,
                i % 2,
                i % 7,
                i % 250,
                i % 3,
                i % 200,
                i * 2_654_435_761 % 0xffff_ffff
            );
            match ty {
                "dns" => s.push_str(&format!(
                    r#","dns":{{"type":"query","id":{},"rrname":"host{i}.example.com","rrtype":"A","tx_id":0,"opcode":0}}"#,
                    i % 65536
                )),
                "http" => s.push_str(&format!(
                    r#","app_proto":"http","http":{{"hostname":"www.ex\"ample.com","url":"/index.html?q={i}","http_user_agent":"Mozilla/5.0 (X11; Linux x86_64)","http_method":"GET","protocol":"HTTP/1.1","status":200,"length":{}}}"#,
                    i * 3
                )),
                "alert" => s.push_str(&format!(
                    r#","alert":{{"action":"allowed","gid":1,"signature_id":{},"rev":3,"signature":"ET POLICY caf\u00e9 test é","category":"Potential Corporate Privacy Violation","severity":2}}"#,
                    2_000_000 + i
                )),
                "tls" => s.push_str(r#","app_proto":"tls","tls":{"subject":"CN=example.org","issuerdn":"CN=R3, O=Let's Encrypt, C=US","serial":"04:AB","fingerprint":"aa:bb:cc","sni":"example.org","version":"TLS 1.3"}"#),
                _ => {}
            }
            match i {
                103 => s.push_str(r#","host":"sensor-\"quoted\"\\\n\u0001""#),
                107 => s.push_str(r#","event_type":"flow""#),
                _ if i.is_multiple_of(5) => s.push_str(r#","host":"sensor-1""#),
                _ => {}
            }
            s.push_str(r#","payload_printable":""#);
            while s.len() < 640 {
                s.push_str("GET / HTTP/1.1 ");
            }
            s.push_str(r#"","stream":0}"#);
            s.into_bytes()
        }
    };
    let mut line = line;
    if i == 106 || i % 50 == 9 {
        line.push(b'\n');
    }
    let ts = match i {
        100 | 101 | 104 => None,
        _ => Some(ts),
    };
    Input { line, ts }
}

/// The row the sink must write for `input`, worked out with serde_json.
fn expected_row(input: &Input) -> Map<String, Value> {
    let line = input.line.strip_suffix(b"\n").unwrap_or(&input.line);
    let parsed: Option<Map<String, Value>> = serde_json::from_slice::<Value>(line)
        .ok()
        .and_then(|v| v.as_object().cloned());
    let obj = parsed.as_ref();
    let mut row = Map::new();
    let ts = if obj.is_some() { input.ts } else { None };
    row.insert("timestamp".into(), ts.map_or(Value::Null, Value::from));
    for (name, slot) in COLUMNS {
        let v = obj.and_then(|o| o.get(name));
        let val = match slot {
            Slot::Timestamp => continue,
            Slot::Str(_) => v.and_then(Value::as_str).map_or(Value::Null, Value::from),
            Slot::Port(_) => v
                .and_then(Value::as_i64)
                .filter(|p| i32::try_from(*p).is_ok())
                .map_or(Value::Null, Value::from),
            Slot::FlowId => v.and_then(Value::as_i64).map_or(Value::Null, Value::from),
            Slot::Event => Value::from(String::from_utf8_lossy(line).into_owned()),
        };
        row.insert(name.into(), val);
    }
    row
}

/// Reads `files` back with the `parquet` crate's own reader: per file its row count, row
/// groups, the codec of each column chunk of row group 0, each column's type, and its rows
/// (timestamps as microseconds, nulls as null). That pyarrow, an independent reader, reads
/// the engine's files the same way is tests/parquet's business.
fn read_back(files: &[PathBuf]) -> Value {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;
    let field = |f: &Field| match f {
        Field::Null => Value::Null,
        Field::Int(v) => json!(v),
        Field::Long(v) => json!(v),
        Field::TimestampMicros(v) => json!(v),
        Field::Str(s) => json!(s),
        other => panic!("unexpected value {other:?}"),
    };
    let files: Vec<Value> = files
        .iter()
        .map(|p| {
            let r = SerializedFileReader::new(fs::File::open(p).unwrap()).unwrap();
            let md = r.metadata();
            let codecs: Vec<Value> = match md.num_row_groups() {
                0 => Vec::new(),
                _ => md
                    .row_group(0)
                    .columns()
                    .iter()
                    .map(|c| json!(c.compression().to_string()))
                    .collect(),
            };
            let schema: Map<String, Value> = md
                .file_metadata()
                .schema_descr()
                .columns()
                .iter()
                .map(|c| {
                    let logical = c.logical_type_ref().map(|l| format!(" {l:?}")).unwrap_or_default();
                    (c.name().to_string(), json!(format!("{}{logical}", c.physical_type())))
                })
                .collect();
            let rows: Vec<Value> = r
                .get_row_iter(None)
                .unwrap()
                .map(|row| {
                    Value::Object(
                        row.unwrap()
                            .get_column_iter()
                            .map(|(n, f)| (n.clone(), field(f)))
                            .collect(),
                    )
                })
                .collect();
            json!({
                "num_rows": md.file_metadata().num_rows(),
                "num_row_groups": md.num_row_groups(),
                "codecs": codecs,
                "schema": schema,
                "rows": rows,
            })
        })
        .collect();
    json!({ "files": files })
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

fn data_files(dir: &Path) -> Vec<PathBuf> {
    names(dir)
        .into_iter()
        .filter(|n| n.ends_with(".parquet") && !n.starts_with('.'))
        .map(|n| dir.join(n))
        .collect()
}

fn hidden(dir: &Path) -> Vec<String> {
    names(dir).into_iter().filter(|n| n.starts_with('.')).collect()
}

fn opts(max_rows: usize, max_bytes: u64, max_age: Duration) -> ParquetOptions {
    ParquetOptions {
        max_rows,
        max_bytes,
        max_age,
    }
}

const HOUR: Duration = Duration::from_secs(3600);

/// Every row of `files` (in order) against `inputs`, field by field.
fn check_rows(files: &Value, inputs: &[Input]) {
    let rows: Vec<&Value> = files["files"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|f| f["rows"].as_array().unwrap())
        .collect();
    assert_eq!(rows.len(), inputs.len(), "row count");
    for (i, (row, input)) in rows.iter().zip(inputs).enumerate() {
        let want = expected_row(input);
        let got = row.as_object().unwrap();
        assert_eq!(got.len(), COLUMNS.len(), "row {i}: columns {:?}", got.keys());
        for (k, v) in &want {
            assert_eq!(got.get(k), Some(v), "row {i}, column {k}");
        }
    }
}

#[test]
fn rolls_by_rows_and_every_field_reads_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("out");
    let inputs = events(3500);
    let mut sink = ParquetSink::open(dir.clone(), "eve".into(), opts(1000, u64::MAX, HOUR)).unwrap();
    sink.row_group_rows = 300;
    for e in &inputs {
        sink.write(&e.line).unwrap();
    }
    // Three files are complete; the fourth is still hidden.
    assert_eq!(data_files(&dir).len(), 3);
    assert_eq!(hidden(&dir).len(), 1);
    sink.close().unwrap();
    let files = data_files(&dir);
    assert_eq!(files.len(), 4);
    for (k, f) in files.iter().enumerate() {
        let name = f.file_name().unwrap().to_str().unwrap();
        assert_eq!(file_seq("eve", name), Some(k as u64 + 1), "{name}");
    }
    assert!(hidden(&dir).is_empty(), "{:?}", hidden(&dir));

    let back = read_back(&files);
    let per_file: Vec<(u64, u64)> = back["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["num_rows"].as_u64().unwrap(), f["num_row_groups"].as_u64().unwrap()))
        .collect();
    assert_eq!(per_file, [(1000, 4), (1000, 4), (1000, 4), (500, 2)]);
    let f0 = &back["files"][0];
    assert_eq!(
        f0["schema"],
        json!({
            "timestamp": "INT64 Timestamp(TimestampType { is_adjusted_to_u_t_c: true, unit: MICROS })",
            "event_type": "BYTE_ARRAY String", "src_ip": "BYTE_ARRAY String",
            "src_port": "INT32", "dest_ip": "BYTE_ARRAY String", "dest_port": "INT32",
            "proto": "BYTE_ARRAY String", "flow_id": "INT64", "app_proto": "BYTE_ARRAY String",
            "in_iface": "BYTE_ARRAY String", "community_id": "BYTE_ARRAY String",
            "host": "BYTE_ARRAY String", "event": "BYTE_ARRAY String"
        })
    );
    assert!(
        f0["codecs"].as_array().unwrap().iter().all(|c| c == "SNAPPY"),
        "{}",
        f0["codecs"]
    );
    check_rows(&back, &inputs);
    let row7 = &back["files"][0]["rows"][7];
    assert_eq!(row7["flow_id"].as_i64(), Some((1 << 53) - 1));
    let row103 = &back["files"][0]["rows"][103];
    assert_eq!(row103["host"], "sensor-\"quoted\"\\\n\u{1}");
    assert!(back["files"][0]["rows"][100]["event_type"].is_null());
    assert!(
        back["files"][0]["rows"][108]["event"]
            .as_str()
            .unwrap()
            .contains('\u{fffd}')
    );

    // The index agrees with what was read back.
    let jsonl = fs::read_to_string(dir.join("eve.index.jsonl")).unwrap();
    let lines: Vec<Value> = jsonl.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 4);
    for (k, (entry, (file, f))) in lines
        .iter()
        .zip(files.iter().zip(back["files"].as_array().unwrap()))
        .enumerate()
    {
        let name = file.file_name().unwrap().to_str().unwrap();
        assert_eq!(entry["file"], name);
        let sidecar: Value =
            serde_json::from_slice(&fs::read(dir.join(format!("{name}.index.json"))).unwrap()).unwrap();
        assert_eq!(&sidecar, entry);
        let rows = f["rows"].as_array().unwrap();
        assert_eq!(entry["rows"].as_u64(), Some(rows.len() as u64));
        let ts: Vec<i64> = rows.iter().filter_map(|r| r["timestamp"].as_i64()).collect();
        assert_eq!(entry["min_timestamp_micros"].as_i64(), ts.iter().min().copied());
        assert_eq!(entry["max_timestamp_micros"].as_i64(), ts.iter().max().copied());
        assert_eq!(
            entry["min_timestamp"].as_str().unwrap(),
            iso_micros(*ts.iter().min().unwrap())
        );
        let mut counts = Map::new();
        for r in rows {
            if let Some(t) = r["event_type"].as_str() {
                let n = counts.get(t).and_then(Value::as_u64).unwrap_or(0);
                counts.insert(t.into(), Value::from(n + 1));
            }
        }
        assert_eq!(entry["event_types"], Value::Object(counts));
        let no_ts = rows.iter().filter(|r| r["timestamp"].is_null()).count();
        assert_eq!(entry["rows_without_timestamp"].as_u64(), Some(no_ts as u64));
        let input_bytes: usize = rows.iter().map(|r| r["event"].as_str().unwrap().len()).sum();
        // Only the non-UTF-8 line (row 108) changed length: two bytes became two U+FFFD.
        let fixup = if k == 0 { 4 } else { 0 };
        assert_eq!(entry["input_bytes"].as_u64(), Some((input_bytes - fixup) as u64));
    }
}

#[test]
fn rolls_by_input_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let inputs: Vec<Input> = (200..400).map(event).collect();
    let max = 10_000u64;
    let mut sink = ParquetSink::open(dir.clone(), "b".into(), opts(usize::MAX, max, HOUR)).unwrap();
    for e in &inputs {
        sink.write(&e.line).unwrap();
    }
    sink.close().unwrap();
    let files = data_files(&dir);
    let back = read_back(&files);
    check_rows(&back, &inputs);
    let all = back["files"].as_array().unwrap();
    assert!(all.len() > 5, "{} files", all.len());
    for (k, f) in all.iter().enumerate() {
        let lens: Vec<u64> = f["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["event"].as_str().unwrap().len() as u64)
            .collect();
        let total: u64 = lens.iter().sum();
        // Each file closed on the row that reached the limit, the last one at close.
        assert!(total - lens.last().unwrap() < max, "file {k}: {total}");
        if k + 1 < all.len() {
            assert!(total >= max, "file {k}: {total}");
        }
    }
}

#[test]
fn rolls_by_age_with_no_new_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let inputs = events(15);
    let age = Duration::from_millis(300);
    let mut sink = ParquetSink::open(dir.clone(), "t".into(), opts(usize::MAX, u64::MAX, age)).unwrap();
    let t0 = Instant::now();
    for e in &inputs[..10] {
        sink.write(&e.line).unwrap();
    }
    sink.flush().unwrap();
    if t0.elapsed() < age {
        assert!(data_files(&dir).is_empty(), "closed before max_age");
    }
    std::thread::sleep(age + Duration::from_millis(50));
    sink.flush().unwrap();
    assert_eq!(data_files(&dir).len(), 1, "flush closes an old file without new rows");
    assert!(hidden(&dir).is_empty());
    sink.flush().unwrap();
    assert_eq!(data_files(&dir).len(), 1, "an idle sink starts no empty file");
    for e in &inputs[10..] {
        sink.write(&e.line).unwrap();
    }
    sink.close().unwrap();
    let files = data_files(&dir);
    assert_eq!(files.len(), 2);
    check_rows(&read_back(&files), &inputs);
}

#[test]
fn close_is_atomic_and_idempotent() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let inputs = events(50);
    let mut sink = ParquetSink::open(dir.clone(), "a".into(), ParquetOptions::default()).unwrap();
    assert!(names(&dir).is_empty(), "open creates no file");
    sink.close().unwrap();
    assert!(names(&dir).is_empty(), "closing an unused sink creates no file");
    for e in &inputs {
        sink.write(&e.line).unwrap();
    }
    assert!(
        data_files(&dir).is_empty(),
        "no .parquet before close: {:?}",
        names(&dir)
    );
    let h = hidden(&dir);
    assert_eq!(h.len(), 1);
    assert!(
        h[0].starts_with(".a-") && h[0].ends_with(".parquet.inprogress"),
        "{h:?}"
    );
    sink.close().unwrap();
    let after = names(&dir);
    sink.close().unwrap();
    drop(sink);
    assert_eq!(names(&dir), after, "a second close and drop change nothing");
    let files = data_files(&dir);
    assert_eq!(files.len(), 1);
    let name = files[0].file_name().unwrap().to_str().unwrap().to_string();
    assert_eq!(
        after,
        [name.clone(), format!("{name}.index.json"), "a.index.jsonl".to_string()]
    );
    check_rows(&read_back(&files), &inputs);
}

#[test]
fn stale_files_are_reported_and_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let stale = dir.join(".eve-20240101T000000Z-000041.parquet.inprogress");
    let stale_idx = dir.join(".eve-20240101T000000Z-000040.parquet.index.json.inprogress");
    fs::write(&stale, b"PAR1 half").unwrap();
    fs::write(&stale_idx, b"{").unwrap();
    fs::write(dir.join(".eve-x-20240101T000000Z-000099.parquet.inprogress"), b"").unwrap();
    fs::write(dir.join("eve-20240101T000000Z-000042.parquet"), b"").unwrap();
    let mut sink = ParquetSink::open(dir.clone(), "eve".into(), ParquetOptions::default()).unwrap();
    assert_eq!(sink.stale_files(), [stale_idx.clone(), stale.clone()]);
    let report = sink.stale_report().unwrap();
    assert!(report.contains(&stale.display().to_string()), "{report}");
    sink.write(&event(0).line).unwrap();
    sink.close().unwrap();
    assert!(stale.exists() && stale_idx.exists());
    let new: Vec<String> = data_files(&dir)
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
        .filter(|n| n.ends_with("-000043.parquet"))
        .collect();
    assert_eq!(
        new.len(),
        1,
        "numbering continues after the highest seq: {:?}",
        names(&dir)
    );
    let clean = ParquetSink::open(tmp.path().join("new"), "eve".into(), ParquetOptions::default()).unwrap();
    assert!(clean.stale_files().is_empty() && clean.stale_report().is_none());
    assert!(ParquetSink::open(dir.clone(), "a/b".into(), ParquetOptions::default()).is_err());
    assert!(ParquetSink::open(dir, String::new(), ParquetOptions::default()).is_err());
}

#[test]
fn find_files_returns_the_files_with_matching_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let inputs = events(3000);
    let mut sink = ParquetSink::open(dir.clone(), "eve".into(), opts(500, u64::MAX, HOUR)).unwrap();
    for e in &inputs {
        sink.write(&e.line).unwrap();
    }
    sink.close().unwrap();
    // A sink of another prefix in the same directory must not leak into the answers.
    let mut other = ParquetSink::open(dir.clone(), "eve-x".into(), ParquetOptions::default()).unwrap();
    for e in &inputs[..100] {
        other.write(&e.line).unwrap();
    }
    other.close().unwrap();

    let files = data_files(&dir)
        .into_iter()
        .filter(|p| file_seq("eve", p.file_name().unwrap().to_str().unwrap()).is_some())
        .collect::<Vec<_>>();
    assert_eq!(files.len(), 6);
    let back = read_back(&files);
    // Ground truth read back: per file, (timestamp, event_type) of each row.
    let truth: Vec<Vec<(Option<i64>, Option<String>)>> = back["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            f["rows"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| (r["timestamp"].as_i64(), r["event_type"].as_str().map(String::from)))
                .collect()
        })
        .collect();
    let expect = |from: i64, to: i64, ty: Option<&str>| -> Vec<PathBuf> {
        files
            .iter()
            .zip(&truth)
            .filter(|(_, rows)| {
                rows.iter().any(|(ts, t)| {
                    ts.is_some_and(|ts| from <= ts && ts < to) && ty.is_none_or(|ty| t.as_deref() == Some(ty))
                })
            })
            .map(|(f, _)| f.clone())
            .collect()
    };
    let at = |i: usize| BASE + i as i64 * MS;
    let queries: Vec<(i64, i64, Option<&str>)> = vec![
        (i64::MIN, i64::MAX, None),
        (i64::MIN, i64::MAX, Some("stats")),
        (i64::MIN, i64::MAX, Some("nonexistent")),
        (at(0), at(3000), Some("dns")),
        (at(600), at(620), Some("dns")),
        (at(600), at(620), None),
        (at(990), at(1010), Some("flow")),
        (at(990), at(1010), None),
        (at(1499), at(2600), Some("tls")),
        (at(2990), at(4000), None),
        (at(3000), at(4000), None),
        (LATE_TS, LATE_TS + 1, Some("alert")),
        (LATE_TS, LATE_TS + 1, None),
        (LATE_TS - MS, LATE_TS + MS, Some("dns")),
        (LATE_TS + 1, LATE_TS, None),
        (at(0), at(0) + 1, None),
    ];
    let check = |label: &str| {
        for &(from, to, ty) in &queries {
            let got = find_files(&dir, "eve", from, to, ty).unwrap();
            assert_eq!(got, expect(from, to, ty), "{label}: [{from}, {to}) {ty:?}");
        }
    };
    check("jsonl and sidecars");
    assert_eq!(find_files(&dir, "eve", i64::MIN, i64::MAX, None).unwrap(), files);
    assert_eq!(
        find_files(&dir, "eve", at(1010), at(1011), None).unwrap(),
        [files[2].clone()]
    );

    // The documented over-approximation: the first file spans from the late event to its
    // last row, so a range between them names it although no row falls there.
    let gap = (LATE_TS + 60_000_000, LATE_TS + 120_000_000);
    assert!(expect(gap.0, gap.1, None).is_empty());
    assert_eq!(find_files(&dir, "eve", gap.0, gap.1, None).unwrap(), [files[0].clone()]);

    // Sidecars alone answer the same; so does the .jsonl alone, even with a torn last line.
    let jsonl = dir.join("eve.index.jsonl");
    let saved = fs::read(&jsonl).unwrap();
    fs::remove_file(&jsonl).unwrap();
    check("sidecars only");
    let mut torn = saved.clone();
    torn.extend_from_slice(b"{\"file\":\"eve-2024");
    fs::write(&jsonl, &torn).unwrap();
    let sidecars: Vec<PathBuf> = names(&dir)
        .into_iter()
        .filter(|n| n.starts_with("eve-2") && n.ends_with(".index.json"))
        .map(|n| dir.join(n))
        .collect();
    let kept: Vec<(PathBuf, Vec<u8>)> = sidecars.iter().map(|p| (p.clone(), fs::read(p).unwrap())).collect();
    sidecars.iter().for_each(|p| fs::remove_file(p).unwrap());
    check("jsonl only");
    kept.iter().for_each(|(p, b)| fs::write(p, b).unwrap());
    // An entry whose data file is gone is not returned.
    fs::remove_file(&files[1]).unwrap();
    let got = find_files(&dir, "eve", i64::MIN, i64::MAX, None).unwrap();
    assert_eq!(got.len(), 5);
    assert!(!got.contains(&files[1]));
}

#[test]
fn sink_can_move_to_the_writer_thread() {
    fn send<T: Send>() {}
    send::<ParquetSink>();
}

#[test]
fn timestamps() {
    let p = |s: &str| parse_timestamp_micros(s.as_bytes());
    assert_eq!(p("2024-03-01T12:00:00.124448+0000"), Some(BASE + 124_448));
    assert_eq!(p("2024-03-01T12:00:00Z"), Some(BASE));
    assert_eq!(p("2024-03-01 12:00:00.1+00:00"), Some(BASE + 100_000));
    assert_eq!(p("2024-03-01T13:00:00.000000+0100"), Some(BASE));
    assert_eq!(p("2024-03-01T13:30:00+01:30"), Some(BASE));
    assert_eq!(p("2024-03-01T07:00:00-05"), Some(BASE));
    assert_eq!(p("2024-03-01T12:00:00.1234567891Z"), Some(BASE + 123_456));
    assert_eq!(p("1969-12-31T23:59:59.5Z"), Some(-500_000));
    assert_eq!(p("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(p("2000-02-29T00:00:00Z"), Some(951_782_400_000_000));
    // Fields of one digit are read, as strptime reads them.
    assert_eq!(p("2024-3-1T12:0:00Z"), Some(BASE));
    for bad in [
        "",
        "2023-02-29T00:00:00Z",
        "2024-03-01T12:00:00",
        "2024-03-01T12:00:00+",
        "2024-03-01T12:00:00+05:",
        "2024-03-01T12:00:00+0",
        "2024-03-01T24:00:00Z",
        "2024-13-01T12:00:00Z",
        "2024-03-01T12:00:00.Z",
        "2024-03-01T12:00:00Zjunk",
        "2024-03-01T12:00:00+24:00",
        "not a time",
        "2024-03-01T12:000:00Z",
    ] {
        assert_eq!(p(bad), None, "{bad:?}");
    }
    assert_eq!(iso_micros(BASE + 5), "2024-03-01T12:00:00.000005Z");
    assert_eq!(iso_micros(-1), "1969-12-31T23:59:59.999999Z");
    for i in 0..500 {
        let t = BASE + i * 7_777_777_777;
        for style in 0..5 {
            assert_eq!(p(&iso_with_offset(t, style)), Some(t), "{}", iso_with_offset(t, style));
        }
    }
}

#[test]
fn names_and_index_json() {
    assert_eq!(file_seq("eve", "eve-20240301T120000Z-000007.parquet"), Some(7));
    assert_eq!(file_seq("eve", "eve-x-20240301T120000Z-000007.parquet"), None);
    assert_eq!(file_seq("eve-x", "eve-20240301T120000Z-000007.parquet"), None);
    assert_eq!(file_seq("eve", "eve-20240301T120000Z-.parquet"), None);
    assert_eq!(file_seq("eve", "eve-20240301T120000Z-7.parquet.tmp"), None);
    assert_eq!(file_seq("eve", "../eve-20240301T120000Z-7.parquet"), None);
    let mut st = FileStats {
        rows: 3,
        input_bytes: 30,
        span: Some((BASE, BASE + 1)),
        rows_without_timestamp: 1,
        rows_without_event_type: 0,
        types: FxHashMap::default(),
    };
    st.types.insert(
        "we\"ird\\\n".into(),
        TypeStats {
            rows: 2,
            span: Some((BASE, BASE + 1)),
        },
    );
    st.types.insert("dns".into(), TypeStats { rows: 1, span: None });
    let line = index_entry("f.parquet", &st, BASE / 1_000_000, BASE / 1_000_000 + 60);
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        v,
        json!({
            "file": "f.parquet", "rows": 3, "input_bytes": 30,
            "created": "2024-03-01T12:00:00Z", "closed": "2024-03-01T12:01:00Z",
            "min_timestamp": "2024-03-01T12:00:00.000000Z",
            "max_timestamp": "2024-03-01T12:00:00.000001Z",
            "min_timestamp_micros": BASE, "max_timestamp_micros": BASE + 1,
            "rows_without_timestamp": 1, "rows_without_event_type": 0,
            "event_types": {"dns": 1, "we\"ird\\\n": 2},
            "event_type_ranges": {"dns": null, "we\"ird\\\n": [BASE, BASE + 1]}
        })
    );
    let (file, e) = parse_entry(line.as_bytes()).unwrap();
    assert_eq!(file, "f.parquet");
    assert_eq!(e.span, Some((BASE, BASE + 1)));
    let mut types = e.types;
    types.sort();
    assert_eq!(
        types,
        [
            ("dns".to_string(), 1, None),
            ("we\"ird\\\n".to_string(), 2, Some((BASE, BASE + 1)))
        ]
    );
}

/// The structural scanner's fields equal simd-json's for every line it takes, and it
/// hands the others to simd-json.
#[test]
fn fast_extraction_matches_the_parser() {
    let cases: &[(&str, bool)] = &[
        (
            r#"{"timestamp":"2024-03-01T12:00:00.123456+0000","flow_id":1151153973373643,"event_type":"flow","src_ip":"10.0.0.1","src_port":443,"dest_ip":"10.0.0.2","dest_port":-1,"proto":"TCP","app_proto":"tls","in_iface":"eth0","community_id":"1:x=","host":"s1","flow":{"src_ip":"nested"}}"#,
            true,
        ),
        (
            r#"  { "event_type" : "dns" , "src_port" : 70000, "dest_port": 5.0, "flow_id": 18446744073709551615 }  "#,
            true,
        ),
        (
            r#"{"event_type":"a","event_type":"b","src_ip":null,"dest_ip":7,"proto":["TCP"]}"#,
            true,
        ),
        (r#"{}"#, true),
        (
            r#"{"flow_id":-9223372036854775808,"src_port":1e3,"dest_port":"80"}"#,
            true,
        ),
        (r#"{"src_ip":"10.0.0.\u0031"}"#, false),
        (r#"{"ev\u0065nt_type":"x"}"#, false),
        (r#"{"other":"esc\"aped","event_type":"kept"}"#, true),
        (r#""just a string""#, false),
        (r#"[1,2]"#, false),
        (r#"{"a":1} trailing"#, false),
    ];
    for (line, fast) in cases {
        let mut buf = line.as_bytes().to_vec();
        let mut buffers = simd_json::Buffers::new(64);
        let mut tape = Tape(Vec::new());
        let mut slow = Fields::default();
        let valid = simd_json::fill_tape(&mut buf, &mut buffers, &mut tape).is_ok() && extract(&tape.0, &mut slow);
        match extract_fast(line.as_bytes()) {
            Some(f) => {
                assert!(*fast && valid, "{line}: taken by the scanner");
                assert_eq!(
                    (f.ts, f.ports, f.flow_id, f.strs),
                    (slow.ts, slow.ports, slow.flow_id, slow.strs),
                    "{line}"
                );
            }
            None => assert!(!fast, "{line}: left to simd-json"),
        }
    }
}

/// Makes the publication of the file in progress fail: a directory where its sidecar index's
/// temporary file goes. Returns that directory.
fn block_publication(sink: &ParquetSink) -> PathBuf {
    let name = &sink.cur.as_ref().expect("a file in progress").name;
    let blocker = sink.dir.join(format!(".{name}.index.json.inprogress"));
    fs::create_dir(&blocker).unwrap();
    blocker
}

/// A complete file whose sidecar index cannot be written (a full disk) is not readable, so its
/// rows are not delivered: it waits, later files are written meanwhile and wait behind it, and
/// once the index can be written the next flush publishes them all, in order.
#[test]
fn a_file_that_cannot_be_published_waits_and_is_retried() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let inputs = events(300);
    let mut sink = ParquetSink::open(dir.clone(), "eve".into(), opts(100, u64::MAX, HOUR)).unwrap();
    for e in &inputs[..99] {
        sink.write(&e.line).unwrap();
    }
    let blocker = block_publication(&sink);
    sink.write(&inputs[99].line).unwrap();
    assert_eq!((sink.sent, sink.delivered), (100, 0));
    let why = sink.waiting().expect("the file waits");
    assert!(why.contains("1 complete file(s) (100 rows)"), "{why}");
    assert!(data_files(&dir).is_empty(), "{:?}", names(&dir));
    for e in &inputs[100..300] {
        sink.write(&e.line).unwrap();
    }
    sink.flush().unwrap();
    assert_eq!(
        (sink.sent, sink.delivered),
        (300, 0),
        "a later file passed the waiting one"
    );
    assert!(sink.waiting().unwrap().contains("3 complete file(s) (300 rows)"));
    assert!(sink.new_failures().is_none(), "nothing is lost yet");
    fs::remove_dir(&blocker).unwrap();
    sink.flush().unwrap();
    assert_eq!((sink.sent, sink.delivered), (300, 300));
    assert!(sink.waiting().is_none());
    let files = data_files(&dir);
    assert_eq!(files.len(), 3);
    check_rows(&read_back(&files), &inputs);
    let index = fs::read_to_string(dir.join("eve.index.jsonl")).unwrap();
    assert_eq!(index.lines().count(), 3, "{index}");
    assert!(hidden(&dir).is_empty(), "{:?}", hidden(&dir));
}

/// At exit a file that still cannot be published is given up: its rows count as lost (and are
/// reported), it stays complete under its hidden name and reads back once renamed; the files
/// before it are delivered.
#[test]
fn a_file_still_unpublished_at_exit_counts_as_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let inputs = events(150);
    let mut sink = ParquetSink::open(dir.clone(), "eve".into(), opts(100, u64::MAX, HOUR)).unwrap();
    for e in &inputs[..120] {
        sink.write(&e.line).unwrap();
    }
    let _blocker = block_publication(&sink);
    for e in &inputs[120..] {
        sink.write(&e.line).unwrap();
    }
    sink.finish().unwrap();
    assert_eq!((sink.sent, sink.delivered), (150, 100));
    let (lost, msg) = sink.new_failures().expect("the loss is reported");
    assert_eq!(lost, 50, "{msg}");
    assert!(
        msg.contains("could not be published") && msg.contains("50 row(s)"),
        "{msg}"
    );
    assert!(sink.waiting().is_none());
    let left = sink.stale_files();
    assert_eq!(left.len(), 1, "{left:?}");
    let files = data_files(&dir);
    assert_eq!(files.len(), 1);
    check_rows(&read_back(&files), &inputs[..100]);
    // Complete: renamed, it reads back.
    let name = left[0].file_name().unwrap().to_str().unwrap();
    let renamed = dir.join(name.trim_start_matches('.').trim_end_matches(".inprogress"));
    fs::rename(&left[0], &renamed).unwrap();
    check_rows(&read_back(&[renamed]), &inputs[100..]);
}
