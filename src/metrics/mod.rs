//! The counters (see `counters`) rendered: the periodic stats line and the exit summary's
//! totals, the Prometheus text ([`prometheus`]), the HTTP endpoint ([`http`]) and the status
//! line on a terminal ([`status`]).

pub(crate) mod http;
pub(crate) mod page;
pub(crate) mod prometheus;
pub(crate) mod status;

use std::sync::atomic::Ordering::Relaxed;

pub(crate) use crate::counters::*;
use crate::diag as events;
use crate::primitives::clock::utc_now;

impl Stats {
    /// The stats line: the original's `time` + `operations`, extended per input, analyzer and
    /// output.
    pub fn line(&self) -> Vec<u8> {
        use crate::primitives::json::write_str;
        let mut o = Vec::with_capacity(512);
        let num = |o: &mut Vec<u8>, n: u64| o.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        let filter_calls = sum(self
            .workers
            .iter()
            .map(|w| sum(w.filter_calls.iter().map(|c| c.load(Relaxed)))));
        let analyzer_calls = sum(self
            .workers
            .iter()
            .map(|w| sum(w.analyzer_calls.iter().map(|c| c.load(Relaxed)))));
        let out_total = sum(self.outputs.iter().map(|c| c.written.load(Relaxed)));
        o.extend_from_slice(b"{\"time\":");
        write_str(&mut o, utc_now().as_bytes());
        o.extend_from_slice(b",\"operations\":{\"input\":");
        num(&mut o, filter_calls);
        o.extend_from_slice(b",\"analyzer\":");
        num(&mut o, analyzer_calls);
        o.extend_from_slice(b",\"output\":");
        num(&mut o, out_total);
        o.extend_from_slice(b"},\"inputs\":{");
        for (i, tag) in self.input_tags.iter().enumerate() {
            if i > 0 {
                o.push(b',');
            }
            let s = &self.inputs[i];
            write_str(&mut o, tag.as_bytes());
            o.extend_from_slice(b":{\"events\":");
            num(&mut o, s.events.load(Relaxed));
            o.extend_from_slice(b",\"invalid\":");
            num(&mut o, s.invalid.load(Relaxed));
            o.extend_from_slice(b",\"too_long\":");
            num(&mut o, s.too_long.load(Relaxed));
            o.extend_from_slice(b",\"bytes\":");
            num(&mut o, s.bytes.load(Relaxed));
            o.extend_from_slice(b",\"ring_full\":");
            num(&mut o, s.ring_full.load(Relaxed));
            o.extend_from_slice(b",\"filter_calls\":");
            num(
                &mut o,
                sum(self.workers.iter().map(|w| w.filter_calls[i].load(Relaxed))),
            );
            o.extend_from_slice(b",\"filter_errors\":");
            num(
                &mut o,
                sum(self.workers.iter().map(|w| w.filter_errors[i].load(Relaxed))),
            );
            if s.paced.load(Relaxed) {
                o.extend_from_slice(b",\"pace_lag_ms\":");
                num(&mut o, s.pace_lag_us.load(Relaxed) / 1000);
                o.extend_from_slice(b",\"pace_lag_max_ms\":");
                num(&mut o, s.pace_lag_max_us.load(Relaxed) / 1000);
            }
            o.push(b'}');
        }
        o.extend_from_slice(b"},\"analyzers\":{");
        for (i, tag) in self.analyzer_tags.iter().enumerate() {
            if i > 0 {
                o.push(b',');
            }
            write_str(&mut o, tag.as_bytes());
            o.extend_from_slice(b":{\"calls\":");
            num(
                &mut o,
                sum(self.workers.iter().map(|w| w.analyzer_calls[i].load(Relaxed))),
            );
            o.extend_from_slice(b",\"errors\":");
            num(
                &mut o,
                sum(self.workers.iter().map(|w| w.analyzer_errors[i].load(Relaxed))),
            );
            o.extend_from_slice(b",\"out\":");
            num(
                &mut o,
                sum(self.workers.iter().map(|w| w.analyzer_out[i].load(Relaxed))),
            );
            o.push(b'}');
        }
        o.extend_from_slice(b"},\"outputs\":{");
        for (i, tag) in self.output_tags.iter().enumerate() {
            if i > 0 {
                o.push(b',');
            }
            write_str(&mut o, tag.as_bytes());
            o.extend_from_slice(b":{\"written\":");
            num(&mut o, self.outputs[i].written.load(Relaxed));
            o.extend_from_slice(b",\"errors\":");
            num(&mut o, self.outputs[i].errors.load(Relaxed));
            o.extend_from_slice(b",\"dropped\":");
            num(&mut o, self.outputs[i].dropped.load(Relaxed));
            o.extend_from_slice(b",\"held\":");
            num(&mut o, self.outputs[i].held.load(Relaxed));
            o.push(b'}');
        }
        o.push(b'}');
        let mut section = "";
        for t in WORKER_TOTALS {
            if t.section != section {
                if !section.is_empty() {
                    o.push(b'}');
                }
                o.extend_from_slice(b",\"");
                o.extend_from_slice(t.section.as_bytes());
                o.extend_from_slice(b"\":{");
                section = t.section;
            } else {
                o.push(b',');
            }
            o.push(b'"');
            o.extend_from_slice(t.key.as_bytes());
            o.extend_from_slice(b"\":");
            num(&mut o, self.worker_total(t));
        }
        o.push(b'}');
        // Diagnostic records by kind (written or left out by the rate limit), those seen.
        o.extend_from_slice(b",\"diagnostics\":{");
        let mut first = true;
        for (k, n) in events::counts().filter(|(_, n)| *n > 0) {
            if !first {
                o.push(b',');
            }
            first = false;
            o.push(b'"');
            o.extend_from_slice(k.name().as_bytes());
            o.extend_from_slice(b"\":");
            num(&mut o, n);
        }
        o.push(b'}');
        if self.histograms {
            o.extend_from_slice(b",\"latency_us\":{");
            let mut first = true;
            for (name, h) in self.latency_series() {
                if !first {
                    o.push(b',');
                }
                first = false;
                write_str(&mut o, name.as_bytes());
                o.extend_from_slice(b":{\"count\":");
                num(&mut o, h.len());
                for (q, label) in latency::QUANTILES {
                    o.extend_from_slice(b",\"");
                    o.extend_from_slice(label.as_bytes());
                    o.extend_from_slice(b"\":");
                    let us = h.value_at_quantile(q) as f64 / 1000.0;
                    o.extend_from_slice(ryu::Buffer::new().format((us * 10.0).round() / 10.0).as_bytes());
                }
                o.push(b'}');
            }
            o.push(b'}');
        }
        o.push(b'}');
        o
    }

    /// Every latency histogram with its name in the stats line: `filter:<input>`,
    /// `analyzer:<tag>`, `output:<tag>` (end to end), `redis`.
    pub fn latency_series(&self) -> Vec<(String, hdrhistogram::Histogram<u64>)> {
        let mut v = Vec::new();
        for (i, t) in self.input_tags.iter().enumerate() {
            v.push((format!("filter:{t}"), self.script_latency[i].snapshot()));
        }
        for (i, t) in self.analyzer_tags.iter().enumerate() {
            v.push((
                format!("analyzer:{t}"),
                self.script_latency[self.input_tags.len() + i].snapshot(),
            ));
        }
        for (i, t) in self.analyzer_tags.iter().enumerate() {
            v.push((
                format!("end_to_end:analyzer:{t}"),
                self.script_e2e[self.input_tags.len() + i].snapshot(),
            ));
        }
        for (i, t) in self
            .output_tags
            .iter()
            .enumerate()
            .skip(crate::config::types::OutputId::INTERNAL)
        {
            v.push((format!("output:{t}"), self.output_latency[i].snapshot()));
        }
        v.push(("redis".to_string(), self.redis_latency.snapshot()));
        v
    }
}
