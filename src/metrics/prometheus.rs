//! The engine's counters and latency histograms in the Prometheus text exposition format
//! (version 0.0.4), served at `/metrics`.

use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

use hdrhistogram::Histogram;

use super::Stats;
use super::latency::{self, BUCKETS, QUANTILES};

/// Escapes a label value (backslash, double quote, newline).
fn label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

struct Out(String);

impl Out {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], v: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", label(val));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {v}");
    }

    /// One family of counters (or gauges), one sample per labelled value.
    fn family(&mut self, name: &str, kind: &str, help: &str, key: &str, rows: &[(&str, u64)]) {
        self.head(name, kind, help);
        for (l, v) in rows {
            self.sample(name, &[(key, l)], *v as f64);
        }
    }

    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &Histogram<u64>) {
        let counts = latency::bucket_counts(h);
        for (ub, n) in BUCKETS.iter().zip(counts) {
            let le = format!("{ub}");
            let mut l = labels.to_vec();
            l.push(("le", &le));
            self.sample(&format!("{name}_bucket"), &l, n as f64);
        }
        let mut l = labels.to_vec();
        l.push(("le", "+Inf"));
        self.sample(&format!("{name}_bucket"), &l, h.len() as f64);
        self.sample(&format!("{name}_sum"), labels, latency::sum_ns(h) / 1e9);
        self.sample(&format!("{name}_count"), labels, h.len() as f64);
    }

    fn quantiles(&mut self, name: &str, labels: &[(&str, &str)], h: &Histogram<u64>) {
        for (q, _) in QUANTILES {
            let qs = format!("{q}");
            let mut l = labels.to_vec();
            l.push(("quantile", &qs));
            self.sample(name, &l, h.value_at_quantile(q) as f64 / 1e9);
        }
    }
}

fn total(stats: &Stats, f: impl Fn(&super::WorkerStats) -> u64) -> u64 {
    stats.workers.iter().map(f).sum()
}

/// Renders every metric.
pub(crate) fn render(stats: &Stats) -> String {
    let mut o = Out(String::with_capacity(8192));
    o.head("dragonfly_build_info", "gauge", "Version of the engine.");
    o.sample("dragonfly_build_info", &[("version", env!("CARGO_PKG_VERSION"))], 1.0);
    o.head("dragonfly_uptime_seconds", "gauge", "Seconds since the engine started.");
    o.sample("dragonfly_uptime_seconds", &[], stats.started.elapsed().as_secs_f64());
    inputs(&mut o, stats);
    paced(&mut o, stats);
    analyzers(&mut o, stats);
    outputs(&mut o, stats);
    totals(&mut o, stats);
    shards(&mut o, stats);
    if stats.histograms {
        histograms(&mut o, stats);
    }
    o.0
}

/// Per input: what its reader read, and its filter's calls, errors and records.
fn inputs(o: &mut Out, stats: &Stats) {
    let per_input = |f: &dyn Fn(usize) -> u64| -> Vec<(&str, u64)> {
        stats
            .input_tags
            .iter()
            .enumerate()
            .map(|(i, t)| (t.as_str(), f(i)))
            .collect()
    };
    let i = &stats.inputs;
    o.family(
        "dragonfly_input_events_total",
        "counter",
        "Valid events read (counted by the workers, which validate each line).",
        "input",
        &per_input(&|k| i[k].events.load(Relaxed)),
    );
    o.family(
        "dragonfly_input_invalid_total",
        "counter",
        "Lines that were not one JSON object.",
        "input",
        &per_input(&|k| i[k].invalid.load(Relaxed)),
    );
    o.family(
        "dragonfly_input_too_long_total",
        "counter",
        "Lines longer than max_line_bytes, skipped.",
        "input",
        &per_input(&|k| i[k].too_long.load(Relaxed)),
    );
    o.family(
        "dragonfly_input_bytes_total",
        "counter",
        "Bytes read.",
        "input",
        &per_input(&|k| i[k].bytes.load(Relaxed)),
    );
    o.family(
        "dragonfly_input_ring_full_total",
        "counter",
        "Times the reader waited on a full worker ring.",
        "input",
        &per_input(&|k| i[k].ring_full.load(Relaxed)),
    );
    o.family(
        "dragonfly_filter_calls_total",
        "counter",
        "Filter loop() calls per input.",
        "input",
        &per_input(&|k| total(stats, |w| w.filter_calls[k].load(Relaxed))),
    );
    o.family(
        "dragonfly_filter_errors_total",
        "counter",
        "Filter loop() runtime errors per input.",
        "input",
        &per_input(&|k| total(stats, |w| w.filter_errors[k].load(Relaxed))),
    );
    o.family(
        "dragonfly_filter_out_total",
        "counter",
        "Records each input's filter wrote to user outputs.",
        "input",
        &per_input(&|k| total(stats, |w| w.filter_out[k].load(Relaxed))),
    );
}

/// Paced replays (`file://...?pace=N`): how far each is behind its schedule.
fn paced(o: &mut Out, stats: &Stats) {
    let name = "dragonfly_input_pace_lag_seconds";
    o.head(
        name,
        "gauge",
        "How far a paced replay (file://...?pace=N) is behind its schedule.",
    );
    for (tag, s) in stats.input_tags.iter().zip(&stats.inputs) {
        if s.paced.load(Relaxed) {
            o.sample(name, &[("input", tag)], s.pace_lag_us.load(Relaxed) as f64 / 1e6);
        }
    }
    let name = "dragonfly_input_pace_lag_max_seconds";
    o.head(
        name,
        "gauge",
        "The largest lag behind its schedule a paced replay has had.",
    );
    for (tag, s) in stats.input_tags.iter().zip(&stats.inputs) {
        if s.paced.load(Relaxed) {
            o.sample(name, &[("input", tag)], s.pace_lag_max_us.load(Relaxed) as f64 / 1e6);
        }
    }
}

/// Per analyzer: calls, records written, errors.
fn analyzers(o: &mut Out, stats: &Stats) {
    let analyzers: Vec<(&str, usize)> = stats
        .analyzer_tags
        .iter()
        .enumerate()
        .map(|(k, t)| (t.as_str(), k))
        .collect();
    let per_analyzer =
        |f: &dyn Fn(usize) -> u64| -> Vec<(&str, u64)> { analyzers.iter().map(|(t, k)| (*t, f(*k))).collect() };
    o.family(
        "dragonfly_analyzer_calls_total",
        "counter",
        "Analyzer loop() calls.",
        "analyzer",
        &per_analyzer(&|k| total(stats, |w| w.analyzer_calls[k].load(Relaxed))),
    );
    o.family(
        "dragonfly_analyzer_out_total",
        "counter",
        "Records each analyzer wrote to user outputs.",
        "analyzer",
        &per_analyzer(&|k| total(stats, |w| w.analyzer_out[k].load(Relaxed))),
    );
    o.family(
        "dragonfly_analyzer_errors_total",
        "counter",
        "Analyzer loop() runtime errors.",
        "analyzer",
        &per_analyzer(&|k| total(stats, |w| w.analyzer_errors[k].load(Relaxed))),
    );
}

/// Per output: written, lost, dropped, held.
fn outputs(o: &mut Out, stats: &Stats) {
    let outputs: Vec<(&str, u64, u64)> = stats
        .output_tags
        .iter()
        .zip(&stats.outputs)
        .map(|(t, s)| (t.as_str(), s.written.load(Relaxed), s.errors.load(Relaxed)))
        .collect();
    o.family(
        "dragonfly_output_written_total",
        "counter",
        "Records written per output (log and stats included).",
        "output",
        &outputs.iter().map(|(t, w, _)| (*t, *w)).collect::<Vec<_>>(),
    );
    o.family(
        "dragonfly_output_errors_total",
        "counter",
        "Records lost per output: rejected, or given up at exit after the grace.",
        "output",
        &outputs.iter().map(|(t, _, e)| (*t, *e)).collect::<Vec<_>>(),
    );
    let per_output = |get: fn(&crate::metrics::OutputStats) -> u64| -> Vec<(&str, u64)> {
        stats
            .output_tags
            .iter()
            .zip(&stats.outputs)
            .map(|(t, s)| (t.as_str(), get(s)))
            .collect()
    };
    o.family(
        "dragonfly_output_dropped_total",
        "counter",
        "Records dropped because the output was full (drop_when_full = true).",
        "output",
        &per_output(|s| s.dropped.load(Relaxed)),
    );
    o.family(
        "dragonfly_output_held",
        "gauge",
        "Records an output holds, waiting to be delivered.",
        "output",
        &per_output(|s| s.held.load(Relaxed)),
    );
}

/// Engine-wide totals: diagnostics by kind, events, script errors, drops, worker totals.
fn totals(o: &mut Out, stats: &Stats) {
    let scalar = |o: &mut Out, name: &str, help: &str, v: u64| {
        o.head(name, "counter", help);
        o.sample(name, &[], v as f64);
    };
    let kinds: Vec<(&str, u64)> = crate::diag::counts().map(|(k, n)| (k.name(), n)).collect();
    o.family(
        "dragonfly_diagnostics_total",
        "counter",
        "Diagnostic records by kind (dragonfly-mle.log), written or left out by the rate limit.",
        "kind",
        &kinds,
    );
    scalar(
        o,
        "dragonfly_events_processed_total",
        "Events taken by the workers.",
        stats.processed(),
    );
    scalar(
        o,
        "dragonfly_script_errors_total",
        "Runtime errors in loop(), all scripts.",
        stats.script_errors(),
    );
    o.family(
        "dragonfly_drops_total",
        "counter",
        "Values dropped: calls naming an unknown tag, values that could not be encoded, analyzer calls past one event's limit.",
        "reason",
        &[
            ("unknown_tag", total(stats, |w| w.unknown_tags.load(Relaxed))),
            ("encode_error", total(stats, |w| w.encode_errors.load(Relaxed))),
            ("hop_limit", total(stats, |w| w.hop_drops.load(Relaxed))),
        ],
    );
    for t in super::WORKER_TOTALS.iter().filter(|t| !t.metric.is_empty()) {
        o.head(t.metric, t.kind, t.help);
        o.sample(t.metric, &[], stats.worker_total(t) as f64);
    }
}

/// Per shard: ring fill.
fn shards(o: &mut Out, stats: &Stats) {
    o.head(
        "dragonfly_shard_ring_batches",
        "gauge",
        "Batches of events waiting in each shard's input rings.",
    );
    for (k, w) in stats.workers.iter().enumerate() {
        o.sample(
            "dragonfly_shard_ring_batches",
            &[("shard", &k.to_string())],
            w.ring_batches.load(Relaxed) as f64,
        );
    }
    o.head(
        "dragonfly_shard_ring_capacity",
        "gauge",
        "Capacity of one input ring, in batches.",
    );
    o.sample("dragonfly_shard_ring_capacity", &[], stats.ring_capacity as f64);
    let name = "dragonfly_shard_events_total";
    o.head(name, "counter", "Events each shard (worker) has taken.");
    for (k, w) in stats.workers.iter().enumerate() {
        o.sample(name, &[("shard", &k.to_string())], w.events.load(Relaxed) as f64);
    }
}

/// Latency histograms and quantiles: scripts' loop(), end to end per output and per script,
/// Redis round trips.
fn histograms(o: &mut Out, stats: &Stats) {
    let n_in = stats.input_tags.len();
    let scripts: Vec<(&str, &str, Histogram<u64>)> = stats
        .input_tags
        .iter()
        .enumerate()
        .map(|(k, t)| ("filter", t.as_str(), stats.script_latency[k].snapshot()))
        .chain(
            stats
                .analyzer_tags
                .iter()
                .enumerate()
                .map(|(k, t)| ("analyzer", t.as_str(), stats.script_latency[n_in + k].snapshot())),
        )
        .collect();
    let e2e: Vec<(&str, Histogram<u64>)> = stats
        .output_tags
        .iter()
        .enumerate()
        .skip(crate::config::types::OutputId::INTERNAL)
        .map(|(k, t)| (t.as_str(), stats.output_latency[k].snapshot()))
        .collect();
    let redis = stats.redis_latency.snapshot();

    let name = "dragonfly_loop_duration_seconds";
    o.head(
        name,
        "histogram",
        "Time in a script's loop() per call (filters and analyzers).",
    );
    for (role, tag, h) in &scripts {
        o.histogram(name, &[("role", role), ("script", tag)], h);
    }
    let name = "dragonfly_end_to_end_seconds";
    o.head(
        name,
        "histogram",
        "Time from reading an event to handing its record to the output.",
    );
    for (tag, h) in &e2e {
        o.histogram(name, &[("output", tag)], h);
    }
    let name = "dragonfly_script_end_to_end_seconds";
    o.head(
        name,
        "histogram",
        "Time from reading an event to handing a record the script wrote to a user output.",
    );
    for (k, (role, tag, _)) in scripts.iter().enumerate() {
        o.histogram(
            name,
            &[("role", role), ("script", tag)],
            &stats.script_e2e[k].snapshot(),
        );
    }
    let name = "dragonfly_redis_duration_seconds";
    o.head(name, "histogram", "Redis round trips of hiredis calls.");
    o.histogram(name, &[], &redis);

    let name = "dragonfly_loop_duration_quantile_seconds";
    o.head(name, "gauge", "Quantiles of loop() time since start.");
    for (role, tag, h) in &scripts {
        o.quantiles(name, &[("role", role), ("script", tag)], h);
    }
    let name = "dragonfly_end_to_end_quantile_seconds";
    o.head(name, "gauge", "Quantiles of end-to-end time since start.");
    for (tag, h) in &e2e {
        o.quantiles(name, &[("output", tag)], h);
    }
}
