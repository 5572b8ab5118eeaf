//! The status page at `/`: totals, throughput over the last ten minutes, and per script its
//! `loop()` latency histogram and errors, drawn as inline SVG by the engine itself (no script,
//! no CDN; the page reloads itself every 2 s). Each plot carries its figures as `data-`
//! attributes, so that a test (or a curious operator) can check them against `/stats`.

use std::collections::VecDeque;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use super::Stats;
use super::status::grouped;
use crate::counters::latency::{BUCKETS, bucket_counts};

/// Seconds of throughput the page shows.
const HISTORY: usize = 600;

/// Per second: events taken by the workers, and script errors, since start.
#[derive(Default)]
pub(crate) struct History {
    samples: Mutex<VecDeque<(f64, u64, u64)>>,
}

impl History {
    /// Takes a sample (about once a second).
    pub(crate) fn sample(&self, stats: &Stats, started: Instant) {
        let mut s = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        if s.len() == HISTORY {
            s.pop_front();
        }
        s.push_back((
            started.elapsed().as_secs_f64(),
            stats.processed(),
            stats.script_errors(),
        ));
    }

    /// Events/s between consecutive samples: (seconds since start, rate).
    fn rates(&self) -> Vec<(f64, f64)> {
        let s = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        s.iter()
            .zip(s.iter().skip(1))
            .map(|(a, b)| (b.0, (b.1.saturating_sub(a.1)) as f64 / (b.0 - a.0).max(1e-3)))
            .collect()
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const W: f64 = 560.0;
const H: f64 = 160.0;

/// The throughput plot: a line of events/s per second over the samples kept.
fn throughput(o: &mut String, history: &History) {
    let rates = history.rates();
    let max = rates.iter().map(|r| r.1).fold(0.0f64, f64::max).max(1.0);
    let last = rates.last().map_or(0.0, |r| r.1);
    let (t0, t1) = match (rates.first(), rates.last()) {
        (Some(a), Some(b)) => (a.0, b.0.max(a.0 + 1.0)),
        _ => (0.0, 1.0),
    };
    let _ = write!(
        o,
        r#"<svg id="throughput" class="plot" width="{W}" height="{}" viewBox="0 0 {W} {}" data-points="{}" data-max="{max:.0}" data-last="{last:.0}"><title>events/s</title>"#,
        H + 20.0,
        H + 20.0,
        rates.len()
    );
    let _ = write!(
        o,
        r##"<rect x="0" y="0" width="{W}" height="{H}" fill="#f7f7f7"/><text x="4" y="14" class="axis">{} events/s</text><text x="4" y="{}" class="axis">0</text><text x="{}" y="{}" class="axis" text-anchor="end">last {:.0} s</text>"##,
        grouped(max as u64),
        H - 4.0,
        W - 4.0,
        H + 16.0,
        t1 - t0
    );
    if !rates.is_empty() {
        o.push_str(r##"<polyline fill="none" stroke="#1f77b4" stroke-width="2" points=""##);
        for (t, r) in &rates {
            let x = (t - t0) / (t1 - t0) * W;
            let y = H - r / max * (H - 20.0);
            let _ = write!(o, "{x:.1},{y:.1} ");
        }
        o.push_str(r#""/>"#);
    }
    o.push_str("</svg>");
}

/// A script's `loop()` latency as bars over the histogram's buckets.
fn latency(o: &mut String, role: &str, tag: &str, h: &hdrhistogram::Histogram<u64>, errors: u64) {
    let cum = bucket_counts(h);
    let counts: Vec<u64> = cum
        .iter()
        .scan(0u64, |prev, &c| {
            let n = c.saturating_sub(*prev);
            *prev = c;
            Some(n)
        })
        .collect();
    let max = counts.iter().copied().max().unwrap_or(0).max(1);
    let bw = W / counts.len() as f64;
    let p = |q: f64| {
        if h.is_empty() {
            0.0
        } else {
            h.value_at_quantile(q) as f64 / 1e3
        }
    };
    let _ = write!(
        o,
        r#"<div class="script"><h3>{role} {}</h3><svg class="plot latency" width="{W}" height="{}" viewBox="0 0 {W} {}" data-script="{}" data-role="{role}" data-count="{}" data-errors="{errors}"><title>loop() latency of {}</title>"#,
        esc(tag),
        H + 20.0,
        H + 20.0,
        esc(tag),
        h.len(),
        esc(tag)
    );
    let _ = write!(o, r##"<rect x="0" y="0" width="{W}" height="{H}" fill="#f7f7f7"/>"##);
    for (i, n) in counts.iter().enumerate() {
        let bh = *n as f64 / max as f64 * (H - 20.0);
        let _ = write!(
            o,
            r##"<rect class="bar" x="{:.1}" y="{:.1}" width="{:.1}" height="{bh:.1}" fill="#2ca02c" data-le="{}" data-n="{n}"/>"##,
            i as f64 * bw + 1.0,
            H - bh,
            bw - 2.0,
            BUCKETS[i]
        );
    }
    for (i, label) in [
        (0, "1µs"),
        (6, "100µs"),
        (9, "1ms"),
        (12, "10ms"),
        (15, "100ms"),
        (18, "1s"),
    ] {
        let _ = write!(
            o,
            r#"<text x="{:.1}" y="{}" class="axis">{label}</text>"#,
            i as f64 * bw,
            H + 14.0
        );
    }
    let _ = write!(
        o,
        r#"</svg><p class="figures">{} calls, p50 {:.1} µs, p99 {:.1} µs, <span class="{}">{} errors</span></p></div>"#,
        grouped(h.len()),
        p(0.5),
        p(0.99),
        if errors > 0 { "bad" } else { "ok" },
        grouped(errors)
    );
}

/// The whole page.
pub(crate) fn render(stats: &Stats, history: &History) -> String {
    let mut o = String::with_capacity(32 * 1024);
    let _ = write!(
        o,
        r#"<!doctype html><html><head><meta charset="utf-8"><meta http-equiv="refresh" content="2"><title>dragonfly-mle</title><style>
body {{ font-family: sans-serif; margin: 1.5em; color: #222; }}
h1 {{ font-size: 1.4em; }} h2 {{ font-size: 1.1em; margin-top: 1.5em; }} h3 {{ font-size: 1em; margin: .8em 0 .2em; }}
.totals td {{ padding: 0 1.2em 0 0; }} .totals td.n {{ text-align: right; font-weight: bold; }}
.axis {{ font-size: 11px; fill: #555; }} .bad {{ color: #c00; font-weight: bold; }} .ok {{ color: #555; }}
.scripts {{ display: flex; flex-wrap: wrap; gap: 1.5em; }} nav a {{ margin-right: 1em; }}
</style></head><body><h1>dragonfly-mle {}</h1><nav><a href="/metrics">/metrics</a><a href="/stats">/stats</a><a href="/health">/health</a><a href="/www/">/www/</a></nav>"#,
        env!("CARGO_PKG_VERSION")
    );
    let _ = write!(
        o,
        r#"<h2>Totals</h2><table class="totals" id="totals" data-read="{}" data-processed="{}" data-written="{}" data-invalid="{}" data-script-errors="{}" data-output-errors="{}">"#,
        stats.events_read(),
        stats.processed(),
        stats.written(),
        stats.invalid(),
        stats.script_errors(),
        stats.output_errors()
    );
    for (label, n) in [
        ("events read", stats.events_read()),
        ("events processed", stats.processed()),
        ("records written", stats.written()),
        ("invalid lines", stats.invalid()),
        ("script errors", stats.script_errors()),
        ("output errors", stats.output_errors()),
    ] {
        let _ = write!(o, r#"<tr><td>{label}</td><td class="n">{}</td></tr>"#, grouped(n));
    }
    let _ = write!(
        o,
        "<tr><td>uptime</td><td class=\"n\">{:.0} s</td></tr></table>",
        stats.started.elapsed().as_secs_f64()
    );
    o.push_str("<h2>Throughput (events/s, last 10 minutes)</h2>");
    throughput(&mut o, history);
    o.push_str("<h2>Scripts: loop() time and errors</h2>");
    if !stats.histograms {
        o.push_str("<p>latency_histograms = false in config.lua: no histograms.</p>");
    }
    o.push_str(r#"<div class="scripts">"#);
    let n_in = stats.input_tags.len();
    let sum = |f: &dyn Fn(&super::WorkerStats) -> u64| stats.workers.iter().map(f).sum::<u64>();
    if stats.histograms {
        for (k, tag) in stats.input_tags.iter().enumerate() {
            let errors = sum(&|w| w.filter_errors[k].load(Relaxed));
            latency(&mut o, "filter", tag, &stats.script_latency[k].snapshot(), errors);
        }
        for (k, tag) in stats.analyzer_tags.iter().enumerate() {
            let errors = sum(&|w| w.analyzer_errors[k].load(Relaxed));
            latency(
                &mut o,
                "analyzer",
                tag,
                &stats.script_latency[n_in + k].snapshot(),
                errors,
            );
        }
    }
    o.push_str("</div></body></html>\n");
    o
}
