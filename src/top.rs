//! `dragonfly-mle top`, part of the binary: a terminal view of a running engine, redrawn each
//! second from its `/metrics` (per input, analyzer and output: events/s, totals, errors;
//! `loop()` p50/p99; ring fill and load per shard). `q` or Ctrl-C leaves; `--once` prints one
//! frame (after a second, for the rates) and exits.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// One scrape of `/metrics`: (name, labels) -> value.
type Scrape = BTreeMap<(String, Vec<(String, String)>), f64>;

fn fetch(addr: &str) -> anyhow::Result<Scrape> {
    let mut s = TcpStream::connect(addr)
        .with_context(|| format!("cannot reach the engine's HTTP endpoint at {addr} (is it running? --http ADDR)"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: dragonfly-mle\r\nConnection: close\r\n\r\n"
    )?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let (head, body) = resp.split_once("\r\n\r\n").context("an incomplete answer")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("{addr}/metrics: {}", head.lines().next().unwrap_or(""));
    }
    Ok(parse(body))
}

/// The samples of Prometheus text (labels as written; values as numbers).
fn parse(body: &str) -> Scrape {
    let mut out = Scrape::new();
    for line in body.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(v) = value.parse::<f64>() else { continue };
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let mut ls = Vec::new();
        for pair in labels.split("\",").filter(|p| !p.is_empty()) {
            if let Some((k, v)) = pair.split_once("=\"") {
                ls.push((
                    k.to_string(),
                    v.trim_end_matches('"').replace("\\\"", "\"").replace("\\\\", "\\"),
                ));
            }
        }
        out.insert((name.to_string(), ls), v);
    }
    out
}

/// Values of `name` by the value of label `key` (the other labels must match `with`).
fn by(s: &Scrape, name: &str, key: &str, with: &[(&str, &str)]) -> BTreeMap<String, f64> {
    s.iter()
        .filter(|((n, ls), _)| n == name && with.iter().all(|(k, v)| ls.iter().any(|(lk, lv)| lk == k && lv == v)))
        .filter_map(|((_, ls), v)| ls.iter().find(|(k, _)| k == key).map(|(_, l)| (l.clone(), *v)))
        .collect()
}

fn rate(now: &BTreeMap<String, f64>, then: &BTreeMap<String, f64>, k: &str, secs: f64) -> f64 {
    (now.get(k).copied().unwrap_or(0.0) - then.get(k).copied().unwrap_or(0.0)).max(0.0) / secs
}

fn num(v: f64) -> String {
    let n = v.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn micros(v: Option<&f64>) -> String {
    v.map_or_else(|| "-".to_string(), |s| format!("{:.1}", s * 1e6))
}

/// One frame: the text of the screen.
fn frame(addr: &str, now: &Scrape, then: &Scrape, secs: f64) -> String {
    let mut o = String::new();
    let total = |name: &str| now.get(&(name.to_string(), Vec::new())).copied().unwrap_or(0.0);
    let processed = total("dragonfly_events_processed_total");
    let before = then
        .get(&("dragonfly_events_processed_total".to_string(), Vec::new()))
        .copied()
        .unwrap_or(0.0);
    o.push_str(&format!(
        "dragonfly-mle top  {addr}  up {:.0} s   {} events/s   {} processed   {} script errors   (q quits)\n\n",
        total("dragonfly_uptime_seconds"),
        num((processed - before).max(0.0) / secs),
        num(processed),
        num(total("dragonfly_script_errors_total")),
    ));
    let (ev, ev0) = (
        by(now, "dragonfly_input_events_total", "input", &[]),
        by(then, "dragonfly_input_events_total", "input", &[]),
    );
    let invalid = by(now, "dragonfly_input_invalid_total", "input", &[]);
    let ferr = by(now, "dragonfly_filter_errors_total", "input", &[]);
    let lag = by(now, "dragonfly_input_pace_lag_seconds", "input", &[]);
    o.push_str(&format!(
        "{:<20} {:>12} {:>14} {:>10} {:>10} {:>10} {:>10}\n",
        "INPUT", "events/s", "events", "invalid", "errors", "p50 µs", "p99 µs"
    ));
    let q = |role: &str, tag: &str, p: &str| {
        now.get(&(
            "dragonfly_loop_duration_quantile_seconds".to_string(),
            vec![
                ("role".into(), role.into()),
                ("script".into(), tag.into()),
                ("quantile".into(), p.into()),
            ],
        ))
        .copied()
    };
    for (tag, v) in &ev {
        o.push_str(&format!(
            "{:<20} {:>12} {:>14} {:>10} {:>10} {:>10} {:>10}{}\n",
            tag,
            num(rate(&ev, &ev0, tag, secs)),
            num(*v),
            num(invalid.get(tag).copied().unwrap_or(0.0)),
            num(ferr.get(tag).copied().unwrap_or(0.0)),
            micros(q("filter", tag, "0.5").as_ref()),
            micros(q("filter", tag, "0.99").as_ref()),
            lag.get(tag).map_or(String::new(), |l| format!("  lag {l:.1} s")),
        ));
    }
    let (calls, calls0) = (
        by(now, "dragonfly_analyzer_calls_total", "analyzer", &[]),
        by(then, "dragonfly_analyzer_calls_total", "analyzer", &[]),
    );
    let aerr = by(now, "dragonfly_analyzer_errors_total", "analyzer", &[]);
    o.push_str(&format!(
        "\n{:<20} {:>12} {:>14} {:>10} {:>10} {:>10} {:>10}\n",
        "ANALYZER", "calls/s", "calls", "", "errors", "p50 µs", "p99 µs"
    ));
    for (tag, v) in &calls {
        o.push_str(&format!(
            "{:<20} {:>12} {:>14} {:>10} {:>10} {:>10} {:>10}\n",
            tag,
            num(rate(&calls, &calls0, tag, secs)),
            num(*v),
            "",
            num(aerr.get(tag).copied().unwrap_or(0.0)),
            micros(q("analyzer", tag, "0.5").as_ref()),
            micros(q("analyzer", tag, "0.99").as_ref()),
        ));
    }
    let (w, w0) = (
        by(now, "dragonfly_output_written_total", "output", &[]),
        by(then, "dragonfly_output_written_total", "output", &[]),
    );
    let oerr = by(now, "dragonfly_output_errors_total", "output", &[]);
    let held = by(now, "dragonfly_output_held", "output", &[]);
    o.push_str(&format!(
        "\n{:<20} {:>12} {:>14} {:>10} {:>10}\n",
        "OUTPUT", "records/s", "written", "held", "errors"
    ));
    for (tag, v) in &w {
        o.push_str(&format!(
            "{:<20} {:>12} {:>14} {:>10} {:>10}\n",
            tag,
            num(rate(&w, &w0, tag, secs)),
            num(*v),
            num(held.get(tag).copied().unwrap_or(0.0)),
            num(oerr.get(tag).copied().unwrap_or(0.0)),
        ));
    }
    let (se, se0) = (
        by(now, "dragonfly_shard_events_total", "shard", &[]),
        by(then, "dragonfly_shard_events_total", "shard", &[]),
    );
    let ring = by(now, "dragonfly_shard_ring_batches", "shard", &[]);
    let cap = total("dragonfly_shard_ring_capacity").max(1.0);
    let inputs = ev.len().max(1) as f64;
    o.push_str(&format!(
        "\n{:<20} {:>12} {:>14} {:>10}  {}\n",
        "SHARD", "events/s", "events", "ring", "fill"
    ));
    let mut shards: Vec<(&String, &f64)> = se.iter().collect();
    shards.sort_by_key(|(k, _)| k.parse::<u64>().unwrap_or(0));
    for (k, v) in shards {
        let fill = ring.get(k).copied().unwrap_or(0.0) / (cap * inputs);
        let bar = (fill.clamp(0.0, 1.0) * 20.0).round() as usize;
        o.push_str(&format!(
            "{:<20} {:>12} {:>14} {:>9.0}%  [{}{}]\n",
            format!("shard {k}"),
            num(rate(&se, &se0, k, secs)),
            num(*v),
            fill * 100.0,
            "#".repeat(bar),
            "-".repeat(20 - bar)
        ));
    }
    o
}

/// The terminal in raw mode (no echo, keys at once) until dropped.
struct Raw(Option<libc::termios>);

impl Raw {
    fn new() -> Raw {
        // SAFETY: a zeroed termios is a valid buffer for tcgetattr to fill.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: fd 0 and a valid termios pointer.
        if unsafe { libc::tcgetattr(0, &mut t) } != 0 {
            return Raw(None);
        }
        let saved = t;
        t.c_lflag &= !(libc::ICANON | libc::ECHO);
        t.c_cc[libc::VMIN] = 0;
        t.c_cc[libc::VTIME] = 0;
        // SAFETY: fd 0 and a valid termios.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &t) };
        Raw(Some(saved))
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        if let Some(t) = self.0 {
            // SAFETY: fd 0 and the termios saved at the start.
            unsafe { libc::tcsetattr(0, libc::TCSANOW, &t) };
        }
    }
}

/// Whether `q` was pressed (reads what is waiting on stdin, without blocking). Only in raw
/// mode: on a pipe or a file a read would block (and Ctrl-C could not end it).
fn quit_pressed(raw: &Raw) -> bool {
    if raw.0.is_none() {
        return false;
    }
    let mut buf = [0u8; 64];
    // SAFETY: reading into a stack buffer of its length; VMIN=0 makes it return at once.
    let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
    n > 0 && buf[..n as usize].iter().any(|&b| b == b'q' || b == b'Q')
}

/// Not on a terminal (`top | head`, a log file): a frame per second as plain text, no screen
/// control, until the reader goes away (a broken pipe ends it quietly) or the engine does.
fn plain(
    addr: &str,
    mut then: Scrape,
    mut at: Instant,
    stop: &std::sync::atomic::AtomicBool,
    out: &mut std::io::Stdout,
) -> anyhow::Result<()> {
    loop {
        for _ in 0..20 {
            std::thread::sleep(Duration::from_millis(50));
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                return Ok(());
            }
        }
        let now = fetch(addr)?;
        let secs = at.elapsed().as_secs_f64();
        at = Instant::now();
        match writeln!(out, "{}", frame(addr, &now, &then, secs)).and_then(|()| out.flush()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        then = now;
    }
}

/// Runs the view until `q`, Ctrl-C or the engine goes away (`once`: one frame).
pub fn run(addr: &str, once: bool) -> anyhow::Result<()> {
    let mut then = fetch(addr)?;
    let mut at = Instant::now();
    if once {
        std::thread::sleep(Duration::from_secs(1));
        let now = fetch(addr)?;
        print!("{}", frame(addr, &now, &then, at.elapsed().as_secs_f64()));
        return Ok(());
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, std::sync::Arc::clone(&stop))?;
    }
    let mut out = std::io::stdout();
    // SAFETY: isatty only looks at the descriptor.
    if unsafe { libc::isatty(1) } == 0 {
        return plain(addr, then, at, &stop, &mut out);
    }
    let raw = Raw::new();
    // The alternate screen, cursor hidden.
    write!(out, "\x1b[?1049h\x1b[?25l")?;
    let mut result = Ok(());
    'run: loop {
        for _ in 0..20 {
            std::thread::sleep(Duration::from_millis(50));
            if stop.load(std::sync::atomic::Ordering::Relaxed) || quit_pressed(&raw) {
                break 'run;
            }
        }
        let now = match fetch(addr) {
            Ok(n) => n,
            Err(e) => {
                result = Err(e);
                break;
            }
        };
        let secs = at.elapsed().as_secs_f64();
        at = Instant::now();
        // A write error (the terminal gone) ends the view, still leaving the screen as it was.
        let drawn = write!(
            out,
            "\x1b[H\x1b[2J{}",
            frame(addr, &now, &then, secs).replace('\n', "\r\n")
        )
        .and_then(|()| out.flush());
        if let Err(e) = drawn {
            result = Err(e.into());
            break;
        }
        then = now;
    }
    write!(out, "\x1b[?25h\x1b[?1049l")?;
    out.flush()?;
    drop(raw);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_show_rates_totals_and_quantiles() {
        let then = parse("dragonfly_events_processed_total 100\ndragonfly_input_events_total{input=\"eve\"} 100\n");
        let now = parse(
            "# HELP x y\ndragonfly_uptime_seconds 12\ndragonfly_events_processed_total 2100\n\
             dragonfly_input_events_total{input=\"eve\"} 2100\n\
             dragonfly_loop_duration_quantile_seconds{role=\"filter\",script=\"eve\",quantile=\"0.5\"} 0.0000025\n\
             dragonfly_analyzer_calls_total{analyzer=\"dga\"} 50\ndragonfly_analyzer_errors_total{analyzer=\"dga\"} 3\n\
             dragonfly_output_written_total{output=\"out\"} 40\n\
             dragonfly_shard_events_total{shard=\"0\"} 1000\ndragonfly_shard_ring_batches{shard=\"0\"} 8\ndragonfly_shard_ring_capacity 16\n",
        );
        let f = frame("x:1", &now, &then, 2.0);
        assert!(f.contains("1,000 events/s"), "{f}");
        let eve = f.lines().find(|l| l.starts_with("eve ")).unwrap();
        assert!(
            eve.contains("1,000") && eve.contains("2,100") && eve.contains("2.5"),
            "{eve}"
        );
        let dga = f.lines().find(|l| l.starts_with("dga ")).unwrap();
        assert!(dga.contains("25") && dga.contains(" 3 "), "{dga}");
        let shard = f.lines().find(|l| l.starts_with("shard 0")).unwrap();
        assert!(shard.contains("50%"), "{shard}");
    }
}
