//! Tests of the `dragonfly.http_get`, `dnslookup` and `date2epoch` built-ins through the real
//! engine: local HTTP and HTTPS servers started by the test, the system resolver, and
//! timestamps checked against values computed with `date -d`.

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::*;

/// Calls `dragonfly[msg.fn]` with `msg.n` arguments (`msg.a1`, `msg.a2`), protected unless
/// `msg.raw`, and writes `{ id, ok, r }` (result or error message).
const CALLER: &str = r#"
function setup() end
function loop(msg)
   local f = dragonfly[msg.fn]
   local function call()
      if msg.n == 0 then return f()
      elseif msg.n == 1 then return f(msg.a1)
      else return f(msg.a1, msg.a2) end
   end
   local ok, r
   if msg.raw then
      r = call()
      ok = true
   else
      ok, r = pcall(call)
   end
   dragonfly.output_event(default_output, { id = msg.id, ok = ok, r = r })
end
"#;

/// One call: id, function, arguments, whether it runs unprotected.
fn call(id: &str, f: &str, args: &[&str], raw: bool) -> String {
    let mut e = json!({ "id": id, "fn": f, "n": args.len(), "raw": raw });
    for (i, a) in args.iter().enumerate() {
        e[format!("a{}", i + 1)] = json!(a);
    }
    e.to_string()
}

/// What a run left: the `{id -> record}` outputs, the script errors, the summary and how long
/// it took.
struct Outcome {
    by_id: HashMap<String, Value>,
    errors: Vec<Value>,
    summary: Summary,
    took: Duration,
    stderr: String,
}

impl Outcome {
    fn get(&self, id: &str) -> &Value {
        self.by_id
            .get(id)
            .unwrap_or_else(|| panic!("no output for {id}; outputs: {:?}\nstderr: {}", self.by_id, self.stderr))
    }

    /// The error message of a protected call that must have failed.
    fn err(&self, id: &str) -> String {
        let r = self.get(id);
        assert_eq!(r["ok"], false, "{id} should have failed: {r}");
        r["r"].as_str().unwrap_or_default().to_string()
    }

    /// The result of a protected call that must have succeeded.
    fn ok(&self, id: &str) -> &Value {
        let r = self.get(id);
        assert_eq!(r["ok"], true, "{id} should have succeeded: {r}");
        &r["r"]
    }
}

/// Runs the engine once over `events` with the caller analyzer, `extra` config lines and
/// `envs` in its environment (proxy variables removed so local servers are reached directly).
fn run_calls(env: &Env, events: &[String], extra: &str, envs: &[(&str, &str)]) -> Outcome {
    env.config(&simple_config("file://in.json", "", extra));
    env.filter("filter.lua", FILTER_TO_DEFAULT);
    env.analyzer("a.lua", CALLER);
    env.write_log("in.json", &join_lines(events));
    let mut cmd = env.command(&["--shards", "1"]);
    for v in [
        "http_proxy",
        "https_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "all_proxy",
    ] {
        cmd.env_remove(v);
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let started = Instant::now();
    let out = run_in(cmd, env.dir.path(), "run");
    let took = started.elapsed();
    out.assert_success();
    let by_id = env
        .lines("out.json")
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_slice(l).expect("out.json line is JSON");
            (v["id"].as_str().unwrap_or_default().to_string(), v)
        })
        .collect();
    Outcome {
        by_id,
        errors: env.log_records_of("script_error"),
        summary: out.summary(),
        took,
        stderr: out.stderr,
    }
}

// ---------------------------------------------------------------------------------------------
// Local HTTP and HTTPS servers
// ---------------------------------------------------------------------------------------------

/// The body served at `/hello` (binary bytes included, so it must be copied exactly).
fn hello_body() -> Vec<u8> {
    let mut b = b"hello from the test server\n".to_vec();
    b.extend((0..=255u8).cycle().take(100_000));
    b
}

/// Reads a request head; returns its path.
fn read_request(s: &mut impl Read) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    let line = String::from_utf8_lossy(&head).lines().next()?.to_string();
    line.split(' ').nth(1).map(str::to_string)
}

fn respond(s: &mut impl Write, status: &str, headers: &str, body: &[u8]) {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{headers}\r\n",
        body.len()
    );
    let _ = s.write_all(head.as_bytes());
    let _ = s.write_all(body);
    let _ = s.flush();
}

/// Answers one plain-HTTP request.
fn serve(mut s: TcpStream) {
    let Some(path) = read_request(&mut s) else { return };
    match path.as_str() {
        "/hello" => respond(&mut s, "200 OK", "", &hello_body()),
        "/missing" => respond(&mut s, "404 Not Found", "", b"not here\n"),
        "/r3" => respond(&mut s, "302 Found", "Location: /r2\r\n", b""),
        "/r2" => respond(&mut s, "301 Moved Permanently", "Location: /r1\r\n", b""),
        "/r1" => respond(&mut s, "307 Temporary Redirect", "Location: /hello\r\n", b""),
        "/loop" => respond(&mut s, "302 Found", "Location: /loop\r\n", b""),
        "/stall" => {
            // Headers and part of the body, then silence.
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial...");
            let _ = s.flush();
            std::thread::sleep(Duration::from_secs(30));
        }
        _ => respond(&mut s, "404 Not Found", "", b"?\n"),
    }
}

/// Starts the plain-HTTP server; returns its port.
fn http_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || serve(s));
        }
    });
    port
}

/// A server that accepts connections and never answers; returns its port.
fn silent_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming().flatten() {
            held.push(s);
        }
    });
    port
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Starts an HTTPS server with a fresh self-signed certificate for localhost; returns its port.
fn https_server() -> u16 {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("self-signed certificate");
    let cert: CertificateDer<'static> = ck.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let cfg = Arc::new(
        rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .expect("server TLS config"),
    );
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let cfg = Arc::clone(&cfg);
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let Ok(conn) = rustls::ServerConnection::new(cfg) else {
                    return;
                };
                let mut tls = rustls::StreamOwned::new(conn, s);
                if read_request(&mut tls).is_some() {
                    respond(&mut tls, "200 OK", "", b"secret over TLS\n");
                    tls.conn.send_close_notify();
                    let _ = tls.flush();
                }
            });
        }
    });
    port
}

// ---------------------------------------------------------------------------------------------
// http_get
// ---------------------------------------------------------------------------------------------

#[test]
fn http_get_downloads_follows_redirects_and_reports_failures() {
    let port = http_server();
    let dead = closed_port();
    let base = format!("http://127.0.0.1:{port}");
    let env = Env::new();
    fs::create_dir_all(env.root.join("dl")).expect("mkdir dl");
    let u = |p: &str| format!("{base}{p}");
    let dead_url = format!("http://127.0.0.1:{dead}/x");
    let events = vec![
        call("hello", "http_get", &[&u("/hello"), "dl/hello.bin"], false),
        call("missing", "http_get", &[&u("/missing"), "dl/missing.txt"], false),
        call("redirects", "http_get", &[&u("/r3"), "dl/redirected.bin"], false),
        call("loop", "http_get", &[&u("/loop"), "dl/loop.bin"], false),
        call("refused", "http_get", &[&dead_url, "dl/refused.bin"], false),
        call("nodir", "http_get", &[&u("/hello"), "no/such/dir/x.bin"], false),
        call("arity", "http_get", &[&u("/hello")], false),
        call("raw", "http_get", &[&dead_url, "dl/raw.bin"], true),
        call("after", "http_get", &[&u("/hello"), "dl/after.bin"], false),
    ];
    let o = run_calls(&env, &events, "", &[]);

    let dl = env.root.join("dl");
    assert_eq!(o.ok("hello"), 200);
    assert!(
        fs::read(dl.join("hello.bin")).expect("hello.bin") == hello_body(),
        "hello.bin differs from the served body"
    );
    assert_eq!(o.ok("missing"), 404, "an HTTP error status is returned, not raised");
    assert_eq!(fs::read(dl.join("missing.txt")).expect("missing.txt"), b"not here\n");
    assert_eq!(o.ok("redirects"), 200);
    assert!(
        fs::read(dl.join("redirected.bin")).expect("redirected.bin") == hello_body(),
        "the redirect chain did not end at /hello"
    );
    let e = o.err("loop");
    assert!(
        e.starts_with("dragonfly_http_get: failed: ") && e.contains("redirect"),
        "loop: {e}"
    );
    let e = o.err("refused");
    assert!(e.starts_with("dragonfly_http_get: failed: "), "refused: {e}");
    let e = o.err("nodir");
    assert!(
        e.starts_with("dragonfly_http_get: cannot open no/such/dir/x.bin: "),
        "nodir: {e}"
    );
    assert_eq!(o.err("arity"), "http_get: expecting exactly 2 arguments");
    for f in ["loop.bin", "refused.bin", "raw.bin"] {
        assert!(!dl.join(f).exists(), "{f} exists after a failed transfer");
    }
    let mut names: Vec<String> = fs::read_dir(&dl)
        .expect("read dl")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["after.bin", "hello.bin", "missing.txt", "redirected.bin"],
        "only the completed downloads are left (no temporary files)"
    );

    // The unprotected failure is a script error; the engine carries on.
    assert!(!o.by_id.contains_key("raw"));
    assert_eq!(o.ok("after"), 200);
    assert_eq!(o.errors.len(), 1, "script errors: {:?}", o.errors);
    let msg = o.errors[0]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("dragonfly_http_get: failed: "),
        "script error: {}",
        o.errors[0]
    );
    assert_eq!((o.summary.read, o.summary.written, o.summary.script_errors), (9, 8, 1));
}

#[test]
fn http_get_times_out_on_a_silent_server() {
    let silent = silent_server();
    let port = http_server();
    let env = Env::new();
    let events = vec![
        call(
            "connect",
            "http_get",
            &[&format!("http://127.0.0.1:{silent}/"), "a.bin"],
            false,
        ),
        call(
            "stall",
            "http_get",
            &[&format!("http://127.0.0.1:{port}/stall"), "b.bin"],
            false,
        ),
    ];
    let o = run_calls(&env, &events, "http_timeout = 1", &[]);
    for id in ["connect", "stall"] {
        let e = o.err(id);
        assert!(
            e.starts_with("dragonfly_http_get: failed: ") && e.contains("timeout"),
            "{id}: {e}"
        );
    }
    assert!(!env.root.join("b.bin").exists(), "a stalled body left a half file");
    // Two 1 s timeouts; far less than the 30 s the server would hold the body.
    assert!(o.took < Duration::from_secs(10), "the run took {:?}", o.took);
}

#[test]
fn http_get_verifies_certificates_unless_http_insecure() {
    let port = https_server();
    let url = format!("https://127.0.0.1:{port}/");
    let events = vec![call("tls", "http_get", &[&url, "tls.txt"], false)];

    let env = Env::new();
    let o = run_calls(&env, &events, "", &[]);
    let e = o.err("tls");
    assert!(
        e.starts_with("dragonfly_http_get: failed: ") && e.to_lowercase().contains("certificate"),
        "a self-signed certificate must fail verification: {e}"
    );
    assert!(!env.root.join("tls.txt").exists());

    let env = Env::new();
    let o = run_calls(&env, &events, "http_insecure = true", &[]);
    assert_eq!(o.ok("tls"), 200);
    assert_eq!(
        fs::read(env.root.join("tls.txt")).expect("tls.txt"),
        b"secret over TLS\n"
    );
}

// ---------------------------------------------------------------------------------------------
// dnslookup
// ---------------------------------------------------------------------------------------------

#[test]
fn dnslookup_resolves_localhost_and_raises_on_unknown_names() {
    let env = Env::new();
    let events = vec![
        call("localhost", "dnslookup", &["localhost"], false),
        call("literal", "dnslookup", &["192.0.2.7"], false),
        call("invalid", "dnslookup", &["no-such-host.invalid"], false),
        call("arity", "dnslookup", &[], false),
        json!({ "id": "badtype", "fn": "dnslookup", "n": 1, "a1": { "x": 1 } }).to_string(),
        call("raw", "dnslookup", &["another.invalid"], true),
        call("after", "dnslookup", &["127.0.0.1"], false),
    ];
    let o = run_calls(&env, &events, "", &[]);
    let addrs: Vec<&str> = o
        .ok("localhost")
        .as_array()
        .unwrap_or_else(|| panic!("an array: {}", o.get("localhost")))
        .iter()
        .map(|a| a.as_str().expect("address string"))
        .collect();
    assert!(
        addrs.iter().any(|a| *a == "127.0.0.1" || *a == "::1"),
        "localhost: {addrs:?}"
    );
    let mut unique = addrs.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), addrs.len(), "duplicates in {addrs:?}");
    assert_eq!(o.ok("literal"), &json!(["192.0.2.7"]));
    let e = o.err("invalid");
    assert!(e.starts_with("getaddrinfo: no-such-host.invalid - "), "invalid: {e}");
    assert!(!e.ends_with('\n'), "{e:?}");
    assert_eq!(o.err("arity"), "dnslookup: expecting exactly 1 argument");
    assert_eq!(
        o.err("badtype"),
        "dnslookup: bad argument #1 (string expected, got table)"
    );
    assert_eq!(o.ok("after"), &json!(["127.0.0.1"]));
    assert_eq!(o.errors.len(), 1, "script errors: {:?}", o.errors);
    let msg = o.errors[0]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("getaddrinfo: another.invalid - "), "{}", o.errors[0]);
    assert_eq!((o.summary.read, o.summary.script_errors), (7, 1));
}

// ---------------------------------------------------------------------------------------------
// date2epoch
// ---------------------------------------------------------------------------------------------

#[test]
fn date2epoch_parses_zones_fractions_and_local_time() {
    // Expected values from `date -u -d <ts> +%s` (and TZ=EST5EDT,M3.2.0,M11.1.0 for the
    // zoneless ones), fractions added by hand.
    let good: &[(&str, f64)] = &[
        ("2026-11-28T06:30:10.123456+0000", 1_795_847_410.123456),
        ("2026-11-28T06:30:10Z", 1_795_847_410.0),
        ("2026-11-28T06:30:10.5-0500", 1_795_865_410.5),
        ("2026-11-28T06:30:10+05:30", 1_795_827_610.0),
        ("2024-02-29T23:59:59.999999Z", 1_709_251_199.999999),
        ("1970-01-01T00:00:00+0000", 0.0),
        ("2038-01-19T03:14:08Z", 2_147_483_648.0),
        // Local time: winter is UTC-5, summer (DST, decided by the zone rules) UTC-4.
        ("2026-01-15T12:00:00", 1_768_496_400.0),
        ("2026-07-01T12:00:00.25", 1_782_921_600.25),
    ];
    let bad = [
        "yesterday",
        "2026-13-45T99:00:00",
        "",
        "2026-11-28",
        "2026-11-28T06:30:10+0000 trailing",
        "2026-02-30T00:00:00Z",
    ];
    let mut events: Vec<String> = Vec::new();
    for (i, (ts, _)) in good.iter().enumerate() {
        events.push(call(&format!("good{i}"), "date2epoch", &[ts], false));
    }
    for (i, ts) in bad.iter().enumerate() {
        events.push(call(&format!("bad{i}"), "date2epoch", &[ts], false));
    }
    events.push(call("arity", "date2epoch", &["a", "b"], false));
    events.push(call("raw", "date2epoch", &["not a date"], true));
    events.push(call("after", "date2epoch", &["2026-11-28T06:30:10Z"], false));
    let env = Env::new();
    // The fractions are compared exactly: numbers written to read back (14 digits is the default).
    let o = run_calls(
        &env,
        &events,
        "number_precision = 17",
        &[("TZ", "EST5EDT,M3.2.0,M11.1.0")],
    );
    for (i, (ts, want)) in good.iter().enumerate() {
        let got = o.ok(&format!("good{i}")).as_f64();
        assert!(
            got.is_some_and(|g| (g - want).abs() < 1e-6),
            "{ts}: got {got:?}, want {want}"
        );
    }
    for (i, ts) in bad.iter().enumerate() {
        assert_eq!(
            o.err(&format!("bad{i}")),
            format!("date2epoch: malformed timestamp '{ts}'")
        );
    }
    assert_eq!(o.err("arity"), "date2epoch: expecting exactly 1 argument");
    assert_eq!(o.ok("after"), 1_795_847_410.0);
    assert_eq!(o.errors.len(), 1, "script errors: {:?}", o.errors);
    let msg = o.errors[0]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("date2epoch: malformed timestamp 'not a date'"),
        "{}",
        o.errors[0]
    );
}
