//! Criterion benchmarks of the per-event hot path (line framing, the simd-json parse
//! (reference), the reader's routing walk and the workers' validation, the structural scanner, the shard hash, the worker's Lua runtime) on a deterministic in-memory corpus of
//! realistic Suricata EVE lines generated here.
//!
//! `cargo bench --bench pipeline -- lua` runs only the Lua group. Every group reports
//! throughput in events per second (one iteration = the whole corpus).

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dragonfly_mle::bench::{
    EventMeta, Framer, KeyBloom, LOG_OUTPUT, LineSink, Role, RouteParser, ScriptSpec, WorkerCtx, tuple_hash,
};

// The engine binary runs on mimalloc; measure with the same allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Number of events in the corpus.
const EVENTS: usize = 2000;
/// Distinct flow tuples the events are drawn from.
const FLOWS: usize = 300;
/// Shard count used by the `route` bench.
const SHARDS: u64 = 8;
/// Output records are dropped after this many events, so memory stays flat.
const CLEAR_EVERY: usize = 256;
/// The first user output (`out`).
fn out_id() -> dragonfly_mle::bench::OutputId {
    dragonfly_mle::bench::OutputId::user(0)
}

// ---------------------------------------------------------------------------------------------
// Corpus
// ---------------------------------------------------------------------------------------------

/// A deterministic PRNG (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True with probability `pct` percent.
    fn pct(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }

    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }

    /// Skewed towards the front: a few busy entries and a long tail.
    fn skewed(&mut self, n: usize) -> usize {
        let a = self.below(1 << 20) as f64 / (1 << 20) as f64;
        let b = self.below(1 << 20) as f64 / (1 << 20) as f64;
        ((n as f64) * a * b) as usize
    }
}

const SUBS: &[&str] = &[
    "www", "api", "cdn", "mail", "static", "login", "update", "img", "edge", "assets",
];
const BASES: &[&str] = &[
    "example",
    "contoso",
    "acme-corp",
    "github",
    "googleapis",
    "microsoft",
    "akamaihd",
    "cloudfront",
    "office365",
    "mozilla",
    "ubuntu",
    "wikipedia",
];
const TLDS: &[&str] = &["com", "net", "org", "io", "de", "co.uk"];
const USER_AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.0.0 Safari/537.36",
    "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:123.0) Gecko/20100101 Firefox/123.0",
    "Microsoft-CryptoAPI/10.0",
    "curl/8.5.0",
    "python-requests/2.31.0",
    "Debian APT-HTTP/1.3 (2.6.1)",
];
const CONTENT_TYPES: &[&str] = &[
    "text/html; charset=UTF-8",
    "application/json",
    "application/javascript",
    "image/png",
    "application/octet-stream",
];
const ISSUERS: &[&str] = &[
    "C=US, O=Let's Encrypt, CN=R3",
    "C=US, O=DigiCert Inc, CN=DigiCert Global G2 TLS RSA SHA256 2020 CA1",
    "C=US, O=Google Trust Services LLC, CN=GTS CA 1C3",
    "C=US, O=Amazon, CN=Amazon RSA 2048 M02",
];
const SIGNATURES: &[(u32, u32, &str, &str, u32)] = &[
    (
        2013028,
        7,
        "ET POLICY curl User-Agent Outbound",
        "Attempted Information Leak",
        2,
    ),
    (
        2210054,
        1,
        "SURICATA STREAM excessive retransmissions",
        "Generic Protocol Command Decode",
        3,
    ),
    (
        2027865,
        4,
        "ET INFO Observed DNS Query to .cloud TLD",
        "Potentially Bad Traffic",
        2,
    ),
    (
        2001219,
        20,
        "ET SCAN Potential SSH Scan",
        "Attempted Information Leak",
        2,
    ),
    (
        2035595,
        2,
        "ET MALWARE Possible Cobalt Strike Beacon Activity",
        "A Network Trojan was detected",
        1,
    ),
];
const PATH_WORDS: &[&str] = &[
    "api", "v1", "static", "js", "img", "download", "update", "users", "search", "pkg",
];
const IFACES: &[&str] = &["eth0", "eth0", "eth1", "ens3f0"];
const FLOW_STATES: &[(&str, &str)] = &[
    ("closed", "timeout"),
    ("established", "timeout"),
    ("new", "timeout"),
    ("closed", "shutdown"),
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dns,
    Http,
    Tls,
    Other,
}

struct Flow {
    kind: Kind,
    sip: String,
    dip: String,
    sport: u64,
    dport: u64,
    proto: &'static str,
    app: &'static str,
    host: String,
    ua: &'static str,
    fid: u64,
    iface: &'static str,
    cid: String,
    tls: String,
}

/// One event's 5-tuple as written (either direction); ports are 0 when absent (ICMP).
struct Tuple {
    src_ip: String,
    src_port: u64,
    dst_ip: String,
    dst_port: u64,
    proto: &'static str,
}

struct Corpus {
    /// One EVE line each, without the newline.
    lines: Vec<Vec<u8>>,
    /// All lines, each followed by `\n`.
    joined: Vec<u8>,
    tuples: Vec<Tuple>,
    flow_ids: Vec<u64>,
    /// Top-level key bits of each line, as the reader computes them.
    keys: Vec<KeyBloom>,
    dup_keys: Vec<bool>,
}

fn hex(rng: &mut Rng, nibbles: usize) -> String {
    let mut s = String::with_capacity(nibbles);
    for _ in 0..nibbles {
        s.push(char::from_digit(rng.below(16) as u32, 16).unwrap_or('0'));
    }
    s
}

fn b64(rng: &mut Rng, n: usize) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    (0..n).map(|_| A[rng.below(64) as usize] as char).collect()
}

/// Suricata's timestamp format for microseconds since 2024-03-01T00:00:00Z.
fn ts(us: u64) -> String {
    let (s, frac) = (us / 1_000_000, us % 1_000_000);
    format!(
        "2024-03-01T{:02}:{:02}:{:02}.{frac:06}+0000",
        (s / 3600) % 24,
        (s / 60) % 60,
        s % 60
    )
}

fn build_flows(rng: &mut Rng) -> Vec<Flow> {
    let mut flows = Vec::with_capacity(FLOWS);
    for i in 0..FLOWS {
        let kind = match rng.below(100) {
            0..35 => Kind::Dns,
            35..55 => Kind::Http,
            55..80 => Kind::Tls,
            _ => Kind::Other,
        };
        let v6 = rng.pct(6);
        let sip = if v6 {
            format!(
                "2001:db8:0:a:{:x}:{:x}::{:x}",
                rng.below(65536),
                rng.below(65536),
                rng.below(65536)
            )
        } else {
            format!("10.{}.{}.{}", rng.below(4), rng.below(256), 1 + rng.below(254))
        };
        let server = |rng: &mut Rng| {
            if v6 {
                format!(
                    "2a00:{:x}:{:x}::{:x}",
                    rng.below(65536),
                    rng.below(65536),
                    rng.below(65536)
                )
            } else {
                let a = rng.pick(&[13u64, 20, 34, 52, 93, 104, 142, 151, 185]);
                format!("{a}.{}.{}.{}", rng.below(256), rng.below(256), 1 + rng.below(254))
            }
        };
        let host = format!("{}.{}.{}", rng.pick(SUBS), rng.pick(BASES), rng.pick(TLDS));
        let mut f = Flow {
            kind,
            sip,
            dip: String::new(),
            sport: 1024 + rng.below(64512),
            dport: 0,
            proto: "TCP",
            app: "",
            host: String::new(),
            ua: "",
            fid: 1 + rng.below(1 << 51),
            iface: IFACES[i % IFACES.len()],
            cid: format!("1:{}=", b64(rng, 27)),
            tls: String::new(),
        };
        match kind {
            Kind::Dns => {
                f.dip = if v6 {
                    "2001:db8::53".into()
                } else {
                    (rng.pick(&["10.0.0.53", "8.8.8.8", "1.1.1.1"])).into()
                };
                f.dport = 53;
                f.proto = "UDP";
                f.app = "dns";
            }
            Kind::Http => {
                f.dip = server(rng);
                f.dport = rng.pick(&[80, 80, 8080]);
                f.app = "http";
                f.host = host;
                f.ua = rng.pick(USER_AGENTS);
            }
            Kind::Tls => {
                f.dip = server(rng);
                f.dport = 443;
                f.app = "tls";
                let serial: Vec<String> = (0..16).map(|_| hex(rng, 2).to_uppercase()).collect();
                let fp: Vec<String> = (0..20).map(|_| hex(rng, 2)).collect();
                f.tls = format!(
                    concat!(
                        r#"{{"subject":"CN={h}","issuerdn":"{iss}","serial":"{ser}","fingerprint":"{fp}","#,
                        r#""sni":"{h}","version":"TLS 1.3","notbefore":"2024-01-15T08:00:00","#,
                        r#""notafter":"2024-04-14T08:00:00","ja3":{{"hash":"{j}"}},"ja3s":{{"hash":"{js}"}}}}"#
                    ),
                    h = host,
                    iss = rng.pick(ISSUERS),
                    ser = serial.join(":"),
                    fp = fp.join(":"),
                    j = hex(rng, 32),
                    js = hex(rng, 32),
                );
                f.host = host;
            }
            Kind::Other => {
                f.dip = server(rng);
                if !v6 && rng.pct(10) {
                    f.proto = "ICMP";
                } else {
                    f.dport = rng.pick(&[22, 25, 445, 993, 3389]);
                    f.app = rng.pick(&["ssh", "smtp", "smb", "tls", "rdp"]);
                }
            }
        }
        flows.push(f);
    }
    flows
}

/// The tuple fields of `f` in one direction, as JSON members (no braces), and the tuple.
fn tuple_json(f: &Flow, reverse: bool) -> (String, Tuple) {
    let (sip, sport, dip, dport) = if reverse {
        (&f.dip, f.dport, &f.sip, f.sport)
    } else {
        (&f.sip, f.sport, &f.dip, f.dport)
    };
    let t = Tuple {
        src_ip: sip.clone(),
        src_port: 0,
        dst_ip: dip.clone(),
        dst_port: 0,
        proto: f.proto,
    };
    if f.proto == "ICMP" {
        let s = format!(r#""src_ip":"{sip}","dest_ip":"{dip}","proto":"ICMP","icmp_type":8,"icmp_code":0"#);
        (s, t)
    } else {
        let s = format!(
            r#""src_ip":"{sip}","src_port":{sport},"dest_ip":"{dip}","dest_port":{dport},"proto":"{}""#,
            f.proto
        );
        (
            s,
            Tuple {
                src_port: sport,
                dst_port: dport,
                ..t
            },
        )
    }
}

fn corpus() -> &'static Corpus {
    static C: OnceLock<Corpus> = OnceLock::new();
    C.get_or_init(build_corpus)
}

fn build_corpus() -> Corpus {
    let mut rng = Rng(0x0d2a_90f1_7e5e_ed01);
    let flows = build_flows(&mut rng);
    let of_kind = |k: Kind| -> Vec<usize> { (0..flows.len()).filter(|&i| flows[i].kind == k).collect() };
    let (dns, http, tls) = (of_kind(Kind::Dns), of_kind(Kind::Http), of_kind(Kind::Tls));
    let mut us: u64 = 12 * 3600 * 1_000_000 + 123_456;
    let mut lines = Vec::with_capacity(EVENTS);
    let mut tuples = Vec::with_capacity(EVENTS);
    for _ in 0..EVENTS {
        us += 1 + rng.below(400);
        let now = ts(us);
        let mut line = String::with_capacity(1024);
        let r = rng.below(100);
        let tup = if r < 40 {
            // flow: always the client-to-server direction
            let f = &flows[rng.skewed(flows.len())];
            let (tj, tup) = tuple_json(f, false);
            let age = rng.below(600);
            let start = ts(us - age * 1_000_000 - rng.below(1_000_000));
            let end = ts(us - rng.below(100_000));
            let pts = 1 + rng.below(200);
            let ptc = pts / 2 + rng.below(pts);
            let (state, reason) = rng.pick(FLOW_STATES);
            let app = if f.app.is_empty() {
                String::new()
            } else {
                format!(r#","app_proto":"{}""#, f.app)
            };
            let tcp = if f.proto == "TCP" {
                format!(
                    r#","tcp":{{"tcp_flags":"1b","tcp_flags_ts":"1b","tcp_flags_tc":"1b","syn":true,"fin":true,"psh":true,"ack":true,"state":"{state}"}}"#
                )
            } else {
                String::new()
            };
            let _ = write!(
                line,
                concat!(
                    r#"{{"timestamp":"{now}","flow_id":{fid},"in_iface":"{iface}","event_type":"flow",{tj}{app},"#,
                    r#""flow":{{"pkts_toserver":{pts},"pkts_toclient":{ptc},"bytes_toserver":{bts},"#,
                    r#""bytes_toclient":{btc},"start":"{start}","end":"{end}","age":{age},"state":"{state}","#,
                    r#""reason":"{reason}","alerted":false}},"community_id":"{cid}"{tcp},"host":"sensor-01"}}"#
                ),
                now = now,
                fid = f.fid,
                iface = f.iface,
                tj = tj,
                app = app,
                pts = pts,
                ptc = ptc,
                bts = pts * (60 + rng.below(600)),
                btc = ptc * (60 + rng.below(1400)),
                start = start,
                end = end,
                age = age,
                state = state,
                reason = reason,
                cid = f.cid,
                tcp = tcp,
            );
            tup
        } else if r < 65 {
            let f = &flows[dns[rng.skewed(dns.len())]];
            let name = format!("{}.{}.{}", rng.pick(SUBS), rng.pick(BASES), rng.pick(TLDS));
            let qid = rng.below(65536);
            let reverse = rng.pct(50);
            let (tj, tup) = tuple_json(f, reverse);
            let dns = if !reverse {
                format!(r#"{{"type":"query","id":{qid},"rrname":"{name}","rrtype":"A","tx_id":0,"opcode":0}}"#)
            } else {
                let ans: Vec<String> = (0..1 + rng.below(3))
                    .map(|_| {
                        format!(
                            "{}.{}.{}.{}",
                            104 + rng.below(80),
                            rng.below(256),
                            rng.below(256),
                            1 + rng.below(254)
                        )
                    })
                    .collect();
                let answers: Vec<String> = ans
                    .iter()
                    .map(|a| {
                        format!(
                            r#"{{"rrname":"{name}","rrtype":"A","ttl":{},"rdata":"{a}"}}"#,
                            30 + rng.below(3600)
                        )
                    })
                    .collect();
                let grouped: Vec<String> = ans.iter().map(|a| format!(r#""{a}""#)).collect();
                format!(
                    concat!(
                        r#"{{"version":2,"type":"answer","id":{qid},"flags":"8180","qr":true,"rd":true,"ra":true,"#,
                        r#""opcode":0,"rrname":"{name}","rrtype":"A","rcode":"NOERROR","answers":[{answers}],"#,
                        r#""grouped":{{"A":[{grouped}]}},"tx_id":0}}"#
                    ),
                    qid = qid,
                    name = name,
                    answers = answers.join(","),
                    grouped = grouped.join(","),
                )
            };
            let _ = write!(
                line,
                r#"{{"timestamp":"{now}","flow_id":{},"in_iface":"{}","event_type":"dns",{tj},"pkt_src":"wire/pcap","community_id":"{}","dns":{dns},"host":"sensor-01"}}"#,
                f.fid, f.iface, f.cid
            );
            tup
        } else if r < 80 {
            let f = &flows[http[rng.skewed(http.len())]];
            let depth = 1 + rng.below(4);
            let mut url = String::new();
            for _ in 0..depth {
                url.push('/');
                url.push_str(rng.pick(PATH_WORDS));
            }
            let _ = write!(url, "-{}.js", hex(&mut rng, 6));
            if rng.pct(30) {
                let _ = write!(url, "?id={}&session={}", rng.below(100_000), hex(&mut rng, 16));
            }
            let status = rng.pick(&[200, 200, 200, 204, 301, 304, 404, 500]);
            let refer = if rng.pct(40) {
                format!(r#","http_refer":"http://{}/""#, f.host)
            } else {
                String::new()
            };
            let (tj, tup) = tuple_json(f, rng.pct(50));
            let _ = write!(
                line,
                concat!(
                    r#"{{"timestamp":"{now}","flow_id":{fid},"in_iface":"{iface}","event_type":"http",{tj},"#,
                    r#""pkt_src":"wire/pcap","community_id":"{cid}","tx_id":{tx},"http":{{"hostname":"{host}","#,
                    r#""url":"{url}","http_user_agent":"{ua}","http_content_type":"{ct}"{refer},"#,
                    r#""http_method":"GET","protocol":"HTTP/1.1","status":{status},"length":{len}}},"#,
                    r#""host":"sensor-01"}}"#
                ),
                now = now,
                fid = f.fid,
                iface = f.iface,
                tj = tj,
                cid = f.cid,
                tx = rng.below(8),
                host = f.host,
                url = url,
                ua = f.ua,
                ct = rng.pick(CONTENT_TYPES),
                refer = refer,
                status = status,
                len = rng.below(500_000),
            );
            tup
        } else if r < 90 {
            let f = &flows[tls[rng.skewed(tls.len())]];
            let (tj, tup) = tuple_json(f, rng.pct(50));
            let _ = write!(
                line,
                r#"{{"timestamp":"{now}","flow_id":{},"in_iface":"{}","event_type":"tls",{tj},"pkt_src":"wire/pcap","community_id":"{}","tls":{},"host":"sensor-01"}}"#,
                f.fid, f.iface, f.cid, f.tls
            );
            tup
        } else {
            let f = &flows[rng.skewed(flows.len())];
            let reverse = rng.pct(50);
            let (tj, tup) = tuple_json(f, reverse);
            let (sid, rev, sig, cat, sev) = rng.pick(SIGNATURES);
            let app = if f.app.is_empty() {
                String::new()
            } else {
                format!(r#","app_proto":"{}""#, f.app)
            };
            let _ = write!(
                line,
                concat!(
                    r#"{{"timestamp":"{now}","flow_id":{fid},"in_iface":"{iface}","event_type":"alert",{tj},"#,
                    r#""pkt_src":"wire/pcap","community_id":"{cid}","alert":{{"action":"allowed","gid":1,"#,
                    r#""signature_id":{sid},"rev":{rev},"signature":"{sig}","category":"{cat}","severity":{sev},"#,
                    r#""metadata":{{"affected_product":["Any"],"attack_target":["Client_Endpoint"],"#,
                    r#""deployment":["Perimeter"],"signature_severity":["Informational"]}}}}{app},"#,
                    r#""direction":"{dir}","flow":{{"pkts_toserver":{pts},"pkts_toclient":{ptc},"#,
                    r#""bytes_toserver":{bts},"bytes_toclient":{btc},"start":"{start}"}},"host":"sensor-01"}}"#
                ),
                now = now,
                fid = f.fid,
                iface = f.iface,
                tj = tj,
                cid = f.cid,
                sid = sid,
                rev = rev,
                sig = sig,
                cat = cat,
                sev = sev,
                app = app,
                dir = if reverse { "to_client" } else { "to_server" },
                pts = 1 + rng.below(40),
                ptc = rng.below(40),
                bts = 60 + rng.below(40_000),
                btc = rng.below(400_000),
                start = ts(us - rng.below(120_000_000)),
            );
            tup
        };
        lines.push(line.into_bytes());
        tuples.push(tup);
    }
    let mut joined = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    let mut parser = RouteParser::new();
    let mut flow_ids = Vec::with_capacity(EVENTS);
    let mut keys = Vec::with_capacity(EVENTS);
    let mut dup_keys = Vec::with_capacity(EVENTS);
    for l in &lines {
        joined.extend_from_slice(l);
        joined.push(b'\n');
        let info = parser
            .parse(l)
            .unwrap_or_else(|e| panic!("generated line is not valid: {e}: {}", String::from_utf8_lossy(l)));
        assert!(info.hash.is_some(), "generated line has no tuple");
        flow_ids.push(info.flow_id);
        keys.push(info.keys);
        dup_keys.push(info.dup_keys);
    }
    eprintln!(
        "corpus: {} events, {} bytes, {} bytes/line on average",
        lines.len(),
        joined.len(),
        joined.len() / lines.len()
    );
    Corpus {
        lines,
        joined,
        tuples,
        flow_ids,
        keys,
        dup_keys,
    }
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

// ---------------------------------------------------------------------------------------------
// line_split, parse, route
// ---------------------------------------------------------------------------------------------

/// Counts lines and bytes, so the framer's output is used.
#[derive(Default)]
struct CountSink {
    lines: u64,
    bytes: u64,
    last: (u64, u64),
    too_long: u64,
}

impl LineSink for CountSink {
    fn line(&mut self, line: &[u8], line_no: u64, offset: u64) {
        self.lines += 1;
        self.bytes += line.len() as u64;
        self.last = (line_no, offset);
    }

    fn too_long(&mut self, _line_no: u64, _offset: u64, _len: usize, _max: usize) {
        self.too_long += 1;
    }
}

fn split_all(framer: &mut Framer, mut src: &[u8]) -> CountSink {
    framer.reset(0, 0);
    framer.line_no = 0;
    let mut sink = CountSink::default();
    while framer.fill(&mut src, &mut sink).expect("reading a slice cannot fail") > 0 {}
    framer.finish(&mut sink);
    sink
}

fn bench_line_split(c: &mut Criterion) {
    let corpus = corpus();
    let mut framer = Framer::new(1 << 20);
    let s = split_all(&mut framer, &corpus.joined);
    assert_eq!((s.lines, s.too_long), (corpus.lines.len() as u64, 0));
    let mut g = c.benchmark_group("line_split");
    g.throughput(Throughput::Elements(corpus.lines.len() as u64));
    g.bench_function("framer_fill", |b| {
        b.iter(|| black_box(split_all(&mut framer, black_box(&corpus.joined))).lines)
    });
    g.finish();
}

fn bench_parse(c: &mut Criterion) {
    let corpus = corpus();
    let mut parser = RouteParser::new();
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(corpus.lines.len() as u64));
    g.bench_function("route_parser", |b| {
        b.iter(|| {
            let mut acc = 0u64;
            for l in &corpus.lines {
                let info = parser.parse(black_box(l)).expect("corpus lines are valid");
                acc = acc.wrapping_add(info.hash.unwrap_or(0) ^ info.flow_id);
            }
            black_box(acc)
        })
    });
    // What the engine does with a line now: the reader's routing walk (stops once it has the
    // routing fields), and the workers' full validation; together they replace route_parser.
    let mut route = dragonfly_mle::bench::ReaderRoute::default();
    g.bench_function("reader_route_scan", |b| {
        b.iter(|| {
            let mut acc = 0u64;
            for l in &corpus.lines {
                let (hash, flow_id) = route.route(black_box(l));
                acc = acc.wrapping_add(hash.unwrap_or(0) ^ flow_id);
            }
            black_box(acc)
        })
    });
    let mut validator = dragonfly_mle::bench::LineValidator::default();
    g.bench_function("worker_validate", |b| {
        b.iter(|| {
            let mut acc = 0u64;
            for l in &corpus.lines {
                let keys = validator.check(black_box(l)).expect("corpus lines are valid");
                acc = acc.wrapping_add(keys.0 ^ keys.1);
            }
            black_box(acc)
        })
    });
    g.finish();
}

/// The structural scanner's walk over every top-level member of each line (what a lookup of
/// a late field, the Parquet sink's field extraction and `pairs` pay): strings searched 16
/// bytes at a time, nested values skipped 64 bytes at a time.
fn bench_scan(c: &mut Criterion) {
    use dragonfly_mle::bench::scan;
    let corpus = corpus();
    let mut g = c.benchmark_group("scan");
    g.throughput(Throughput::Elements(corpus.lines.len() as u64));
    g.bench_function("all_top_level_members", |b| {
        b.iter(|| {
            let mut acc = 0usize;
            for l in &corpus.lines {
                let l = black_box(l.as_slice());
                let mut next = scan::first_member(l, scan::skip_ws(l, 0));
                while let Some(at) = next {
                    let Some((m, after)) = scan::next_member(l, at) else {
                        break;
                    };
                    acc = acc.wrapping_add(m.val_end as usize);
                    next = after;
                }
            }
            black_box(acc)
        })
    });
    g.finish();
}

fn bench_route(c: &mut Criterion) {
    let corpus = corpus();
    let shards = black_box(SHARDS);
    let mut g = c.benchmark_group("route");
    g.throughput(Throughput::Elements(corpus.tuples.len() as u64));
    g.bench_function(format!("tuple_hash_mod_{SHARDS}"), |b| {
        b.iter(|| {
            let mut per_shard = [0u32; SHARDS as usize];
            for t in &corpus.tuples {
                let h = tuple_hash(
                    black_box(t.src_ip.as_bytes()),
                    t.src_port,
                    t.dst_ip.as_bytes(),
                    t.dst_port,
                    t.proto.as_bytes(),
                );
                per_shard[(h % shards) as usize] += 1;
            }
            black_box(per_shard)
        })
    });
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// lua
// ---------------------------------------------------------------------------------------------

const NOOP_ANALYZER: &str = "function setup() end\nfunction loop(msg) end\n";

const FORWARD_FILTER: &str = "\
function setup() end
function loop(msg)
  dragonfly.analyze_event(default_analyzer, msg)
end
";

/// What a Lua case must produce, checked once before measuring.
#[derive(Clone, Copy)]
enum Expect {
    /// No output records.
    Nothing,
    /// Every event's original bytes, unchanged.
    Original,
    /// The original members plus `tuple_count`.
    Annotated,
    /// A new object with exactly these keys.
    Keys(&'static [&'static str]),
}

struct LuaCase {
    name: &'static str,
    filter: &'static str,
    analyzer: &'static str,
    expect: Expect,
}

const LUA_CASES: &[LuaCase] = &[
    LuaCase {
        name: "event_to_lua_filter_only",
        filter: "\
local alerts = 0
function setup() end
function loop(msg)
  if msg.event_type == \"alert\" then alerts = alerts + 1 end
end
",
        analyzer: NOOP_ANALYZER,
        expect: Expect::Nothing,
    },
    LuaCase {
        name: "pass_through",
        filter: FORWARD_FILTER,
        analyzer: "\
function setup() end
function loop(msg)
  dragonfly.output_event(default_output, msg)
end
",
        expect: Expect::Original,
    },
    LuaCase {
        name: "read5_count_annotate",
        filter: FORWARD_FILTER,
        analyzer: "\
local counts = {}
function setup() end
function loop(msg)
  local k = msg.src_ip .. '|' .. (msg.src_port or 0) .. '|' .. msg.dest_ip .. '|' ..
    (msg.dest_port or 0) .. '|' .. msg.proto
  local n = (counts[k] or 0) + 1
  counts[k] = n
  msg.tuple_count = n
  dragonfly.output_event(default_output, msg)
end
",
        expect: Expect::Annotated,
    },
    LuaCase {
        name: "encode_new_table",
        filter: FORWARD_FILTER,
        analyzer: "\
function setup() end
function loop(msg)
  dragonfly.output_event(default_output, {
    timestamp = msg.timestamp,
    event_type = msg.event_type,
    src_ip = msg.src_ip,
    dest_ip = msg.dest_ip,
    proto = msg.proto,
    flow_id = msg.flow_id,
  })
end
",
        expect: Expect::Keys(&["timestamp", "event_type", "src_ip", "dest_ip", "proto", "flow_id"]),
    },
    // A filter that annotates the event before handing it on: the event is copied into the
    // analyzer's state (its line shared, its changes copied).
    LuaCase {
        name: "annotate_then_analyze",
        filter: "\
function setup() end
function loop(msg)
  msg.seen_by = 'filter'
  dragonfly.analyze_event(default_analyzer, msg)
end
",
        analyzer: "\
function setup() end
function loop(msg)
  dragonfly.output_event(default_output, msg)
end
",
        expect: Expect::Keys(&["seen_by", "timestamp"]),
    },
    // A threat-intel record as an analyzer reads it from Redis: `cjson_safe.decode` per event.
    LuaCase {
        name: "cjson_decode_record",
        filter: FORWARD_FILTER,
        analyzer: r#"
local record = '{"indicator":"203.0.113.7","type":"ipv4","score":87.5,"first_seen":"2024-03-01T12:00:00Z","tags":["c2","botnet","tor-exit"],"sources":[{"name":"feed-a","confidence":90},{"name":"feed-b","confidence":70}],"asn":64500,"country":"ZZ","active":true,"notes":null}'
local seen = 0
function setup() end
function loop(msg)
  local r = cjson_safe.decode(record)
  seen = seen + r.sources[2].confidence
  dragonfly.output_event(default_output, msg)
end
"#,
        expect: Expect::Original,
    },
];

fn clear_outputs(c: &mut WorkerCtx) {
    for o in c.outs.iter_mut() {
        o.clear();
    }
}

/// Runs every corpus event through the installed scripts; `seq` keeps increasing.
fn process_all(c: &mut WorkerCtx, corpus: &Corpus, seq: &mut u64, clear: bool) {
    for (i, (line, &flow_id)) in corpus.lines.iter().zip(&corpus.flow_ids).enumerate() {
        let meta = EventMeta {
            seq: *seq,
            line_no: *seq + 1,
            flow_id,
            start: 0,
            end: line.len() as u32,
            keys: corpus.keys[i],
            dup_keys: corpus.dup_keys[i],
            ..EventMeta::default()
        };
        *seq += 1;
        c.process(0, &meta, line);
        if clear && (i + 1) % CLEAR_EVERY == 0 {
            clear_outputs(c);
        }
    }
    if clear {
        clear_outputs(c);
    }
}

/// Checks one pass of a case's output (nothing is cleared during it).
fn check_outputs(c: &WorkerCtx, case: &LuaCase, corpus: &Corpus) {
    let mut parser = RouteParser::new();
    for o in &c.outs {
        if let Some(r) = o.recs.iter().find(|r| r.output == LOG_OUTPUT) {
            panic!(
                "{}: script reported: {}",
                case.name,
                String::from_utf8_lossy(&o.data[r.start as usize..r.end as usize])
            );
        }
    }
    let recs: Vec<&[u8]> = c.outs[0]
        .recs
        .iter()
        .filter(|r| r.output == out_id())
        .map(|r| &c.outs[0].data[r.start as usize..r.end as usize - 1])
        .collect();
    let want = if matches!(case.expect, Expect::Nothing) {
        0
    } else {
        corpus.lines.len()
    };
    assert_eq!(recs.len(), want, "{}: output record count", case.name);
    for (rec, line) in recs.iter().zip(&corpus.lines) {
        parser
            .parse(rec)
            .unwrap_or_else(|e| panic!("{}: output is not a JSON object: {e}", case.name));
        let has = |key: &str| {
            let pat = format!("\"{key}\":");
            rec.windows(pat.len()).any(|w| w == pat.as_bytes())
        };
        match case.expect {
            Expect::Nothing => {}
            Expect::Original => assert_eq!(rec, &line.as_slice(), "{}: bytes changed", case.name),
            Expect::Annotated => {
                assert!(has("tuple_count"), "{}: no tuple_count", case.name);
                assert!(rec.len() > line.len(), "{}: members lost", case.name);
            }
            Expect::Keys(keys) => {
                assert!(keys.iter().all(|k| has(k)), "{}: missing keys", case.name);
                let members = rec.iter().filter(|&&b| b == b':').count();
                assert!(members >= keys.len(), "{}: too few members", case.name);
            }
        }
    }
}

fn spec(role: Role, tag: &str, path: &Path) -> ScriptSpec {
    dragonfly_mle::bench::script_spec(role, tag, path)
}

fn bench_lua(c: &mut Criterion) {
    let corpus = corpus();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut g = c.benchmark_group("lua");
    // An iteration takes milliseconds here: give 20 samples room.
    g.measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Elements(corpus.lines.len() as u64));
    for case in LUA_CASES {
        let fpath = dir.path().join(format!("{}_filter.lua", case.name));
        let apath = dir.path().join(format!("{}_analyzer.lua", case.name));
        std::fs::write(&fpath, case.filter).expect("write filter");
        std::fs::write(&apath, case.analyzer).expect("write analyzer");
        let mut c = WorkerCtx::new(vec!["in".into()], vec!["a".into()], vec!["out".into()], false);
        c.open_all(
            &[spec(Role::Filter, "in", &fpath)],
            &[spec(Role::Analyzer, "a", &apath)],
            true,
        )
        .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let mut seq = 0u64;
        process_all(&mut c, corpus, &mut seq, false);
        check_outputs(&c, case, corpus);
        clear_outputs(&mut c);
        g.bench_function(case.name, |b| b.iter(|| process_all(&mut c, corpus, &mut seq, true)));
        let counters = &c.counters;
        assert_eq!(
            (counters.encode_errors, counters.unknown_tags, counters.hop_limit),
            (0, 0, 0),
            "{}: worker counters",
            case.name
        );
        c.close();
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_line_split, bench_parse, bench_scan, bench_route, bench_lua
}
criterion_main!(benches);
