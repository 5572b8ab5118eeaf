//! The Parquet output's cost per event: `ParquetSink::write` of typical EVE events (flow, dns,
//! http, alert, tls, about 650 bytes each), column extraction and encoding included; the
//! files go to a temporary directory. Run: `cargo bench --bench parquet`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use dragonfly_mle::bench::{ParquetOptions, ParquetSink};

/// Events written per measured batch.
const BATCH: usize = 20_000;

/// A typical event `i` of a sensor: its type cycles through five, its tuple and timestamp vary.
fn event(i: usize) -> Vec<u8> {
    let ty = ["flow", "dns", "http", "alert", "tls"][i % 5];
    let mut s = format!(
        r#"{{"timestamp":"2024-03-01T12:{:02}:{:02}.{:06}+0000","flow_id":{},"in_iface":"eth0","event_type":"{ty}","src_ip":"10.0.{}.{}","src_port":{},"dest_ip":"192.168.{}.{}","dest_port":{},"proto":"{}","community_id":"1:{:08x}Zm9vYmFyYmF6cXV4PQ==""#,
        i / 60_000 % 60,
        i / 1000 % 60,
        i % 1000 * 1000,
        1_000_000_000_000u64 + i as u64 * 7919,
        i % 7,
        i % 250,
        1024 + i * 7 % 60_000,
        i % 3,
        i % 200,
        [53, 80, 443][i % 3],
        if ty == "dns" { "UDP" } else { "TCP" },
        i.wrapping_mul(2_654_435_761) % 0xffff_ffff
    );
    match ty {
        "dns" => s.push_str(&format!(
            r#","dns":{{"type":"query","id":{},"rrname":"host{i}.example.com","rrtype":"A"}}"#,
            i % 65536
        )),
        "http" => s.push_str(&format!(
            r#","app_proto":"http","http":{{"hostname":"www.example.com","url":"/index.html?q={i}","http_method":"GET","status":200}}"#
        )),
        "alert" => s.push_str(&format!(
            r#","alert":{{"action":"allowed","gid":1,"signature_id":{},"rev":3,"severity":2}}"#,
            2_000_000 + i % 1000
        )),
        "tls" => s.push_str(r#","app_proto":"tls","tls":{"subject":"CN=example.org","sni":"example.org","version":"TLS 1.3"}"#),
        _ => {}
    }
    s.push_str(r#","payload_printable":""#);
    while s.len() < 640 {
        s.push_str("GET / HTTP/1.1 ");
    }
    s.push_str(r#"","stream":0}"#);
    s.into_bytes()
}

fn bench_parquet(c: &mut Criterion) {
    let lines: Vec<Vec<u8>> = (0..BATCH).map(event).collect();
    let bytes: usize = lines.iter().map(Vec::len).sum();
    let dir = std::env::temp_dir().join(format!("dfm-bench-parquet-{}", std::process::id()));
    let mut sink = ParquetSink::open(dir.clone(), "bench".into(), ParquetOptions::default()).expect("open the sink");
    let mut g = c.benchmark_group("parquet");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function(format!("write {BATCH} events of {} bytes", bytes / BATCH), |b| {
        b.iter(|| {
            for l in &lines {
                sink.write(black_box(l)).expect("write");
            }
        })
    });
    // Writing and closing a file (the footer, the index entry, the rename).
    g.bench_function(format!("write {BATCH} events and close the file"), |b| {
        b.iter_batched(
            || (),
            |()| {
                for l in &lines {
                    sink.write(black_box(l)).expect("write");
                }
                sink.close().expect("close");
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
    sink.close().expect("close");
    drop(sink);
    let _ = std::fs::remove_dir_all(&dir);
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_parquet
}
criterion_main!(benches);
