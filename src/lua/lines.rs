//! The worker's first step on a batch: each line is validated in full here, on the worker's
//! core, before any script sees it (the reader only routed it). A line that is not a JSON
//! object, and a line too long (which the reader skipped), ends as one `{log}` report filed at
//! its own place in the input's order, so reports keep the order of the lines as ordered
//! outputs keep that of events.

use crate::config::types::OutputId;
use crate::diag::Kind;
use crate::event::EventMeta;
use crate::shard::{END_OF_EVENT, OutRec};

use super::context::WorkerCtx;

/// What a batch held, for the input's counters.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchCounts {
    /// Valid events run through the scripts.
    pub events: u64,
    /// Lines that were not a JSON object.
    pub invalid: u64,
}

impl WorkerCtx {
    /// Runs a batch of one input: every valid event through the scripts (in windows of
    /// `window` events), every other line as its report.
    /// Each valid event's top-level keys are filled in on the way (`EventMeta::keys`).
    pub fn process_batch(&mut self, input: u32, data: &[u8], events: &mut [EventMeta], window: usize) -> BatchCounts {
        let mut counts = BatchCounts::default();
        let mut run = 0;
        let at = input as usize;
        if self.record_members.len() <= at {
            self.record_members.resize(at + 1, false);
        }
        self.lines.start_batch(self.record_members[at]);
        let finds = self.cache.finds;
        for i in 0..events.len() {
            let meta = &mut events[i];
            let line = &data[meta.start as usize..meta.end as usize];
            let problem = if meta.too_long {
                Some((Kind::LineTooLong, String::from_utf8_lossy(line).into_owned()))
            } else {
                match self.lines.verdict(line) {
                    Ok(top) => {
                        meta.keys = top.keys;
                        meta.dup_keys = top.dup_keys;
                        meta.members = top.members;
                        None
                    }
                    Err(e) => Some((Kind::InvalidLine, e.to_string())),
                }
            };
            let Some((kind, message)) = problem else {
                counts.events += 1;
                continue;
            };
            let meta = *meta;
            self.counters.line_reports += 1;
            self.run_events(input, data, &events[run..i], window);
            run = i + 1;
            counts.invalid += u64::from(kind == Kind::InvalidLine);
            self.line_report(input, &meta, kind, &message);
        }
        self.run_events(input, data, &events[run..], window);
        // Members are recorded for the input's next batch when this one's scripts looked up
        // at least two top-level fields per event (see `LineCheck::start_batch`).
        if counts.events > 0 {
            self.record_members[at] = self.cache.finds - finds >= 2 * counts.events;
        }
        counts
    }

    fn run_events(&mut self, input: u32, data: &[u8], events: &[EventMeta], window: usize) {
        for evs in events.chunks(window.max(1)) {
            self.process_window(input, data, evs);
        }
    }

    /// Files the report of a line that is no event at the line's place, and its end mark;
    /// the writer applies the rate limit in the input's order (see `OutputId::INVALID_LINE`).
    fn line_report(&mut self, input: u32, meta: &EventMeta, kind: Kind, message: &str) {
        use crate::primitives::json::write_str;
        let b = &mut self.outs[input as usize];
        let start = b.data.len() as u32;
        let o = &mut b.data;
        crate::diag::head_uncounted(kind, o);
        o.extend_from_slice(b",\"input\":");
        let tag = self.input_tags.get(input as usize).map_or("", String::as_str);
        write_str(o, tag.as_bytes());
        o.extend_from_slice(
            format!(
                ",\"line\":{},\"offset\":{},\"length\":{},\"message\":",
                meta.line_no, meta.offset, meta.raw_len
            )
            .as_bytes(),
        );
        write_str(o, message.as_bytes());
        o.extend_from_slice(b"}\n");
        let end = o.len() as u32;
        let output = if kind == Kind::LineTooLong {
            OutputId::LINE_TOO_LONG
        } else {
            OutputId::INVALID_LINE
        };
        b.recs.push(OutRec {
            seq: meta.seq,
            output,
            start,
            end,
            // The writer's rate limit is per input (inputs past 65,535 share the last one).
            script: u16::try_from(input).unwrap_or(u16::MAX),
        });
        if self.ordered {
            b.recs.push(OutRec {
                seq: meta.seq,
                output: END_OF_EVENT,
                start: end,
                end,
                script: 0,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::script_spec;
    use crate::lua::state::Role;

    /// Members are recorded per input, from that input's own last batch: an input whose
    /// filter reads three top-level fields records, one whose filter reads nothing does not,
    /// nor one that reads one top-level field and one nested in it, even with their batches
    /// interleaved; a batch of invalid lines changes nothing.
    #[test]
    fn members_are_recorded_per_input_as_its_scripts_read() {
        let dir = std::env::temp_dir().join(format!("dfm-record-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (reads, quiet, a) = (dir.join("reads.lua"), dir.join("quiet.lua"), dir.join("a.lua"));
        std::fs::write(
            &reads,
            "function setup() end\nfunction loop(msg) local x = msg.src_ip, msg.dest_ip, msg.proto end\n",
        )
        .unwrap();
        std::fs::write(&quiet, "function setup() end\nfunction loop(msg) end\n").unwrap();
        let nested = dir.join("nested.lua");
        std::fs::write(
            &nested,
            "function setup() end\nfunction loop(msg) local x = msg.dns.rrname end\n",
        )
        .unwrap();
        std::fs::write(&a, "function setup() end\nfunction loop(msg) end\n").unwrap();
        let mut c = WorkerCtx::new(
            vec!["r".into(), "q".into(), "n".into()],
            vec!["a".into()],
            vec!["out".into()],
            true,
        );
        c.open_all(
            &[
                script_spec(Role::Filter, "r", &reads),
                script_spec(Role::Filter, "q", &quiet),
                script_spec(Role::Filter, "n", &nested),
            ],
            &[script_spec(Role::Analyzer, "a", &a)],
            true,
        )
        .unwrap();
        let line = br#"{"timestamp":"t","src_ip":"10.0.0.1","dest_ip":"10.0.0.2","proto":"TCP","dns":{"rrname":"x"}}"#;
        let batch = |lines: &[&[u8]]| {
            let (mut data, mut metas) = (Vec::new(), Vec::new());
            for (i, l) in lines.iter().enumerate() {
                let start = data.len() as u32;
                data.extend_from_slice(l);
                metas.push(EventMeta {
                    seq: i as u64,
                    start,
                    end: data.len() as u32,
                    ..EventMeta::default()
                });
            }
            (data, metas)
        };
        for _ in 0..3 {
            for input in [0u32, 1, 2] {
                let (data, mut metas) = batch(&[&line[..]; 8]);
                let counts = c.process_batch(input, &data, &mut metas, 1);
                assert_eq!(counts.events, 8);
            }
        }
        assert_eq!(c.record_members, [true, false, false]);
        let (data, mut metas) = batch(&[&b"not json"[..]; 4]);
        assert_eq!(c.process_batch(1, &data, &mut metas, 1).invalid, 4);
        assert_eq!(c.record_members, [true, false, false]);
        c.close();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
