//! The HTTP endpoint (replaces the original's web service on 127.0.0.1:7070): `/metrics`
//! (Prometheus text), `/stats` (the stats line as JSON), `/health`, `/` (the status page),
//! `/tap` (a sample of live events), and `/www/<name>` (the
//! analyzer descriptions under `<root>/www`, no path can leave that directory). GET and HEAD
//! only, one request per connection, each on a short-lived thread (at most 8 at once, each
//! given 2 s to send its request).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::Duration;

use super::Stats;

/// Requests served at once; more are answered 503 at once.
const MAX_CONNECTIONS: usize = 8;

/// What the endpoint serves: a pipeline's counters and the history of its status page.
type Serving = (Arc<Stats>, Arc<super::page::History>);

/// The running endpoint; stops when dropped.
pub(crate) struct HttpServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    serving: Arc<std::sync::Mutex<Serving>>,
}

impl HttpServer {
    /// Serves `stats` from now on (a reload's new pipeline), on the same listening socket: a
    /// client connecting during the rebuild is answered, not reset.
    pub(crate) fn serve_stats(&self, stats: Arc<Stats>) {
        let mut s = self.serving.lock().unwrap_or_else(|p| p.into_inner());
        *s = (stats, Arc::new(super::page::History::default()));
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// Binds `addr` and serves until the returned server is dropped. `www` is the directory of
/// the `/www/` files (opened now, so it keeps working after a chroot).
pub(crate) fn start(addr: &str, stats: Arc<Stats>, www: &std::path::Path) -> std::io::Result<HttpServer> {
    let listener = TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    let www = Arc::new(
        std::fs::File::open(www)
            .ok()
            .filter(|f| f.metadata().is_ok_and(|m| m.is_dir())),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let busy = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let serving = Arc::new(std::sync::Mutex::new((
        stats,
        Arc::new(super::page::History::default()),
    )));
    let current = Arc::clone(&serving);
    let thread = std::thread::Builder::new().name("dfm-http".into()).spawn(move || {
        let started = std::time::Instant::now();
        let mut next_sample = started;
        while !flag.load(Relaxed) {
            let (stats, history) = current.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if std::time::Instant::now() >= next_sample {
                history.sample(&stats, started);
                next_sample += Duration::from_secs(1);
            }
            match listener.accept() {
                Ok((mut s, _)) => {
                    // Each request on a short-lived thread, so that a client that connects and
                    // says nothing delays no one; beyond MAX_CONNECTIONS the answer is 503.
                    if busy.load(Relaxed) >= MAX_CONNECTIONS {
                        // `/health` still answers (a liveness probe must not take a busy
                        // endpoint for a failing engine): its request is read here, within
                        // 200 ms; anything else is told the endpoint is busy.
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
                        let _ = s.set_write_timeout(Some(Duration::from_millis(200)));
                        let _ = match read_request(&mut s) {
                            Ok(Some((m, t)))
                                if (m == "GET" || m == "HEAD") && t.split('?').next() == Some("/health") =>
                            {
                                let (status, body) = health(&stats);
                                respond(&mut s, m == "HEAD", status, "application/json", &body)
                            }
                            _ => respond(&mut s, false, "503 Service Unavailable", "text/plain", b"busy\n"),
                        };
                        continue;
                    }
                    busy.fetch_add(1, Relaxed);
                    let (stats, www, mine) = (Arc::clone(&stats), Arc::clone(&www), Arc::clone(&busy));
                    let history = Arc::clone(&history);
                    let spawned = std::thread::Builder::new().name("dfm-http-req".into()).spawn(move || {
                        let _ = serve(s, &stats, (*www).as_ref(), &history);
                        mine.fetch_sub(1, Relaxed);
                    });
                    if spawned.is_err() {
                        busy.fetch_sub(1, Relaxed);
                    }
                }
                // No client: a nap the server's drop cuts short (it unparks this thread).
                Err(_) => std::thread::park_timeout(Duration::from_millis(20)),
            }
        }
    })?;
    Ok(HttpServer {
        addr: local,
        stop,
        thread: Some(thread),
        serving,
    })
}

/// Reads the request head (at most 8 KiB); returns the method and the path.
fn read_request(s: &mut TcpStream) -> std::io::Result<Option<(String, String)>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && !buf.windows(2).any(|w| w == b"\n\n") {
        if buf.len() > 8192 {
            return Ok(None);
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    let first = head.lines().next().unwrap_or("");
    let mut parts = first.split_ascii_whitespace();
    match (parts.next(), parts.next()) {
        (Some(m), Some(p)) => Ok(Some((m.to_string(), p.to_string()))),
        _ => Ok(None),
    }
}

/// A tap request: `input=TAG`, `analyzer=TAG` or `output=TAG`; `n` events (default 10),
/// one in `every` (default 1), for at most `timeout` seconds (default 10, at most 300).
struct TapRequest {
    point: crate::counters::tap::Point,
    index: usize,
    n: usize,
    every: u64,
    timeout: Duration,
}

fn tap_request(query: &str, stats: &Stats) -> Result<TapRequest, (&'static str, String)> {
    use crate::counters::tap::Point;
    let bad = |m: String| ("400 Bad Request", m + "\n");
    let (mut at, mut n, mut every, mut timeout) = (None, 10usize, 1u64, 10.0f64);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v);
        let num = |v: &str| v.parse::<f64>().ok().filter(|x| x.is_finite() && *x > 0.0);
        match k {
            "input" => at = Some((Point::Input, &stats.input_tags, v)),
            "analyzer" => at = Some((Point::Analyzer, &stats.analyzer_tags, v)),
            "output" => at = Some((Point::Output, &stats.output_tags, v)),
            "n" => {
                n = num(&v)
                    .map(|x| x.min(10_000.0) as usize)
                    .ok_or_else(|| bad(format!("n: a count, got {v:?}")))?
            }
            "every" => {
                every = num(&v)
                    .map(|x| x as u64)
                    .ok_or_else(|| bad(format!("every: a count, got {v:?}")))?
            }
            "timeout" => {
                timeout = num(&v)
                    .map(|x| x.min(300.0))
                    .ok_or_else(|| bad(format!("timeout: seconds, got {v:?}")))?
            }
            _ => {
                return Err(bad(format!(
                    "unknown parameter {k:?} (input, analyzer or output=TAG; n, every, timeout)"
                )));
            }
        }
    }
    let Some((point, tags, tag)) = at else {
        return Err(bad(
            "name the point to tap: input=TAG, analyzer=TAG or output=TAG".into()
        ));
    };
    let index = tags.iter().position(|t| t.eq_ignore_ascii_case(&tag)).ok_or_else(|| {
        let what = match point {
            Point::Input => "input",
            Point::Analyzer => "analyzer",
            Point::Output => "output",
        };
        (
            "404 Not Found",
            format!("no {what} has tag {tag:?} (tags: {})\n", tags.join(", ")),
        )
    })?;
    Ok(TapRequest {
        point,
        index,
        n,
        every,
        timeout: Duration::from_secs_f64(timeout),
    })
}

/// `%XX` and `+` of a query value.
fn percent_decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn respond(s: &mut TcpStream, head_only: bool, status: &str, ctype: &str, body: &[u8]) -> std::io::Result<()> {
    let h = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n",
        body.len()
    );
    s.write_all(h.as_bytes())?;
    if !head_only {
        s.write_all(body)?;
    }
    s.flush()
}

const NOT_FOUND: &[u8] = b"<html><head><title>File not found</title></head><body>File not found</body></html>";

fn serve(
    mut s: TcpStream,
    stats: &Stats,
    www: Option<&std::fs::File>,
    history: &super::page::History,
) -> std::io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    let Some((method, target)) = read_request(&mut s)? else {
        return respond(&mut s, false, "400 Bad Request", "text/plain", b"bad request\n");
    };
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return respond(&mut s, false, "405 Method Not Allowed", "text/plain", b"GET only\n");
    }
    let path = target.split('?').next().unwrap_or("");
    match path {
        "/" => respond(
            &mut s,
            head_only,
            "200 OK",
            "text/html; charset=utf-8",
            super::page::render(stats, history).as_bytes(),
        ),
        "/tap" => {
            let query = target.split_once('?').map_or("", |q| q.1);
            match tap_request(query, stats) {
                Err((status, msg)) => respond(&mut s, head_only, status, "text/plain", msg.as_bytes()),
                Ok(t) => match crate::counters::tap::tap(t.point, t.index, t.n, t.every, t.timeout) {
                    Ok(lines) => {
                        let mut body = Vec::new();
                        for l in lines {
                            body.extend_from_slice(&l);
                            body.push(b'\n');
                        }
                        respond(&mut s, head_only, "200 OK", "application/x-ndjson", &body)
                    }
                    Err(e) => respond(
                        &mut s,
                        head_only,
                        "409 Conflict",
                        "text/plain",
                        format!("{e}\n").as_bytes(),
                    ),
                },
            }
        }
        "/metrics" => respond(
            &mut s,
            head_only,
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            super::prometheus::render(stats).as_bytes(),
        ),
        "/stats" => respond(&mut s, head_only, "200 OK", "application/json", &stats.line()),
        "/health" => {
            let (status, body) = health(stats);
            respond(&mut s, head_only, status, "application/json", &body)
        }
        _ => match path.strip_prefix("/www/").and_then(|name| read_www(www?, name)) {
            Some(body) => respond(&mut s, head_only, "200 OK", "application/json", &body),
            None => respond(&mut s, head_only, "404 Not Found", "text/html", NOT_FOUND),
        },
    }
}

/// `/health`: 200 and `"ok"`, or 503 with the reasons while something is wrong.
fn health(stats: &Stats) -> (&'static str, Vec<u8>) {
    // 503 with the reasons while something is wrong: a failing output, a missing
    // input, a Redis connection down, stalled rings; 200 again once it recovers.
    let problems = stats.health_problems();
    let mut body = format!(
        "{{\"status\":\"{}\",\"uptime_s\":{:.3},\"events\":{}",
        if problems.is_empty() { "ok" } else { "failing" },
        stats.started.elapsed().as_secs_f64(),
        stats.processed()
    )
    .into_bytes();
    if !problems.is_empty() {
        body.extend_from_slice(b",\"reasons\":[");
        for (k, p) in problems.iter().enumerate() {
            if k > 0 {
                body.push(b',');
            }
            crate::primitives::json::write_str(&mut body, p.as_bytes());
        }
        body.push(b']');
    }
    body.push(b'}');
    let status = if problems.is_empty() {
        "200 OK"
    } else {
        "503 Service Unavailable"
    };
    (status, body)
}

/// A file directly inside the www directory: the name is one plain component (letters,
/// digits, `.`, `_`, `-`, not starting with a dot), and a symbolic link is not followed.
fn read_www(dir: &std::fs::File, name: &str) -> Option<Vec<u8>> {
    let plain = !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !plain {
        return None;
    }
    let cname = std::ffi::CString::new(name).ok()?;
    // SAFETY: `dir` is an open directory and `cname` a NUL-terminated name; the returned
    // descriptor is owned by the File made from it below.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            cname.as_ptr(),
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK,
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let mut body = Vec::new();
    f.read_to_end(&mut body).ok()?;
    Some(body)
}
