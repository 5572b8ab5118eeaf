//! Records: what scripts and the engine write from a worker (output records, `{log}`
//! reports), filed with the current event so that they leave in event order.

use std::ffi::c_int;

use mlua::ffi::lua_State;

use super::context::WorkerCtx;
use super::json::EncodeError;
use super::state::Role;
use crate::diag::Kind;
use crate::shard::{LOG_OUTPUT, NO_INPUT, OutBatch, OutRec};

/// Most bytes of records a worker holds for one input (or for its timers) before it hands
/// them on, after each batch of events: far above what a batch writes (about 650 bytes per
/// record), below its 32-bit offsets.
pub(crate) const MAX_HELD_RECORD_BYTES: usize = 1 << 30;

/// Most bytes of records one input event may write (its filter's and its analyzers' records,
/// and its timers'): a `loop()` writing without end is stopped there, and the other events of
/// its batch still have room.
pub(crate) const MAX_EVENT_RECORD_BYTES: usize = 256 << 20;

impl WorkerCtx {
    fn out_batch(&mut self) -> &mut OutBatch {
        let i = self.out_index();
        &mut self.outs[i]
    }

    /// Files a record: in the output batch, or, inside a pipelining window, with its event
    /// (its bytes already are in the batch; records are put in event order when the window
    /// ends, and the writer reads bytes by range).
    fn file_rec(&mut self, rec: OutRec) {
        let n = (rec.end - rec.start) as usize;
        if rec.seq == self.held_seq {
            self.held_event_bytes += n;
        } else {
            (self.held_seq, self.held_event_bytes) = (rec.seq, n);
        }
        match self.cur_win {
            Some(w) => self.window[w].recs.push(rec),
            None => self.out_batch().recs.push(rec),
        }
    }

    /// Counts a record the running script wrote to a user output.
    fn count_out(&mut self, output: crate::shard::OutputId) {
        if !output.is_user() {
            return;
        }
        let s = match self.cur_script {
            (Role::Filter, i) => self.filters.get_mut(i as usize),
            (Role::Analyzer, i) => self.analyzers.get_mut(i as usize),
        };
        if let Some(s) = s {
            s.out += 1;
        }
    }

    /// Index of the running script among filters then analyzers.
    fn script_index(&self) -> u16 {
        match self.cur_script {
            (Role::Filter, i) => i as u16,
            (Role::Analyzer, i) => (self.filters.len() as u32 + i) as u16,
        }
    }

    /// Appends one output record (bytes + newline) for the current event.
    pub fn emit(&mut self, output: crate::shard::OutputId, bytes: &[u8]) {
        let seq = self.cur.seq;
        let script = self.script_index();
        let b = self.out_batch();
        let start = b.data.len() as u32;
        b.data.extend_from_slice(bytes);
        b.data.push(b'\n');
        let end = b.data.len() as u32;
        self.file_rec(OutRec {
            seq,
            output,
            start,
            end,
            script,
        });
    }

    /// Encodes the value at `idx` of `l` as one record for `output`.
    pub unsafe fn emit_value(
        &mut self,
        l: *mut lua_State,
        idx: c_int,
        output: crate::shard::OutputId,
    ) -> Result<(), EncodeError> {
        let i = self.out_index();
        // SAFETY: `l` belongs to this worker.
        self.enc.cfg = unsafe { super::json::state_config(l) }.for_records();
        let b = &mut self.outs[i];
        let start = b.data.len();
        // SAFETY: `l` belongs to this worker.
        let r = unsafe { self.enc.encode_cached(l, idx, &mut b.data, Some(&mut self.cache)) };
        match r {
            Ok(()) => {
                // One record may not take the event's records past the limit either (checked
                // before it was encoded, a single record of 300 MiB went through).
                let len = self.outs[i].data.len() - start;
                let before = if self.cur.seq == self.held_seq {
                    self.held_event_bytes
                } else {
                    0
                };
                if before + len > MAX_EVENT_RECORD_BYTES {
                    self.outs[i].data.truncate(start);
                    return Err(EncodeError(format!(
                        "this event's records reach {} MiB with this one ({} bytes), the most one \
                         event may write: a loop() writing without end?",
                        MAX_EVENT_RECORD_BYTES >> 20,
                        len
                    )));
                }
                self.end_record(output, start);
                Ok(())
            }
            Err(e) => {
                self.outs[i].data.truncate(start);
                self.counters.encode_errors += 1;
                Err(e)
            }
        }
    }

    /// Writes the value at `idx` of `l` to a dead-letter `output` with a `dragonfly_error`
    /// member: the script, the place (`file:line`, when the message starts with one) and the
    /// message. An object gets the member appended; any other value is wrapped as `event`.
    pub unsafe fn emit_dead_letter(
        &mut self,
        l: *mut lua_State,
        idx: c_int,
        output: crate::shard::OutputId,
        script: &str,
        msg: &str,
    ) -> Result<(), EncodeError> {
        // SAFETY: `l` belongs to this worker.
        self.enc.cfg = unsafe { super::json::state_config(l) }.for_records();
        let i = self.out_index();
        let start = self.outs[i].data.len();
        let b = &mut self.outs[i];
        // SAFETY: `l` belongs to this worker.
        let r = unsafe { self.enc.encode_cached(l, idx, &mut b.data, Some(&mut self.cache)) };
        if let Err(e) = r {
            self.outs[i].data.truncate(start);
            self.counters.encode_errors += 1;
            return Err(e);
        }
        let data = &mut self.outs[i].data;
        // An object gets the member, unless it has one of that name already (a record with a
        // repeated key): then it is wrapped as a value is.
        if data.get(start) == Some(&b'{')
            && data.last() == Some(&b'}')
            && !has_member(&data[start..], b"dragonfly_error")
        {
            data.pop();
            if data.len() > start + 1 {
                data.push(b',');
            }
        } else {
            let value = data.split_off(start);
            data.extend_from_slice(b"{\"event\":");
            data.extend_from_slice(&value);
            data.push(b',');
        }
        let (place, text) = split_place(msg);
        data.extend_from_slice(b"\"dragonfly_error\":{\"script\":");
        super::json::write_str(data, script.as_bytes());
        if let Some(p) = place {
            data.extend_from_slice(b",\"where\":");
            super::json::write_str(data, p.as_bytes());
        }
        data.extend_from_slice(b",\"message\":");
        super::json::write_str(data, text.as_bytes());
        data.extend_from_slice(b"}}");
        self.end_record(output, start);
        Ok(())
    }

    /// Writes one record for `output` with `write` (which cannot fail).
    pub fn emit_with(&mut self, output: crate::shard::OutputId, write: impl FnOnce(&mut Vec<u8>)) {
        let i = self.out_index();
        let start = self.outs[i].data.len();
        write(&mut self.outs[i].data);
        self.end_record(output, start);
    }

    /// Why a script's next record is refused, if it is: the current event's records reach
    /// [`MAX_EVENT_RECORD_BYTES`], or those waiting in the output batch records go to now reach
    /// [`MAX_HELD_RECORD_BYTES`]. A refused record is an error in the script, so that records
    /// are not held without bound (a `loop()` writing millions of records aborted the process
    /// at its memory limit) or past the batch's 32-bit offsets.
    pub fn records_full(&self) -> Option<String> {
        let event = if self.cur.seq == self.held_seq {
            self.held_event_bytes
        } else {
            0
        };
        if event >= MAX_EVENT_RECORD_BYTES {
            return Some(format!(
                "this event's records reach {} MiB, the most one event may write: a loop() writing \
                 without end?",
                event >> 20
            ));
        }
        let held = self.outs[self.out_index()].data.len();
        (held >= MAX_HELD_RECORD_BYTES).then(|| {
            format!(
                "{} MiB of records already wait on this worker (the records of a batch of events are \
                 handed on together; at most {} MiB)",
                held >> 20,
                MAX_HELD_RECORD_BYTES >> 20
            )
        })
    }

    /// Index of the output batch records go to now.
    fn out_index(&self) -> usize {
        if self.cur_input == NO_INPUT {
            self.outs.len() - 1
        } else {
            self.cur_input as usize
        }
    }

    /// Ends the record whose bytes start at `start` of the current output batch (a script's
    /// record: counted for the running script).
    fn end_record(&mut self, output: crate::shard::OutputId, start: usize) {
        let (seq, script) = (self.cur.seq, self.script_index());
        let i = self.out_index();
        let b = &mut self.outs[i];
        b.data.push(b'\n');
        let end = b.data.len() as u32;
        self.count_out(output);
        self.file_rec(OutRec {
            seq,
            output,
            start: start as u32,
            end,
            script,
        });
    }

    /// Reports a problem to `{log}` (in event order) and, for the first ones, to stderr.
    ///
    /// Rate-limited per kind: the first [`crate::diag::limit::BURST`] records of a kind in each
    /// [`crate::diag::limit::WINDOW`] are written in full, the rest only counted; when the window ends (or
    /// the worker stops) one `suppressed` record per kind says how many were left out. The
    /// counters of the problems themselves stay exact.
    pub fn report(&mut self, kind: Kind, fields: &[(&str, &str)], message: &str) {
        if !self.report_allowed(kind) {
            return;
        }
        let mut line = Vec::with_capacity(128);
        crate::diag::head(kind, &mut line);
        for (k, v) in fields {
            line.push(b',');
            super::json::write_str(&mut line, k.as_bytes());
            line.push(b':');
            super::json::write_str(&mut line, v.as_bytes());
        }
        if self.cur_input != NO_INPUT {
            line.extend_from_slice(b",\"input\":");
            let tag = self
                .input_tags
                .get(self.cur_input as usize)
                .cloned()
                .unwrap_or_default();
            super::json::write_str(&mut line, tag.as_bytes());
            line.extend_from_slice(b",\"line\":");
            line.extend_from_slice(itoa::Buffer::new().format(self.cur.line_no).as_bytes());
            // 0: the event has no flow_id (Suricata's are never 0); left out rather than
            // naming a flow that does not exist.
            if self.cur.flow_id != 0 {
                line.extend_from_slice(b",\"flow_id\":");
                line.extend_from_slice(itoa::Buffer::new().format(self.cur.flow_id).as_bytes());
            }
        }
        line.extend_from_slice(b",\"message\":");
        super::json::write_str(&mut line, message.as_bytes());
        line.push(b'}');
        crate::diag::stderr_report(&line);
        self.emit(LOG_OUTPUT, &line);
    }

    /// Whether a record of `kind` may be written now (see [`WorkerCtx::report`]).
    pub(super) fn report_allowed(&mut self, kind: Kind) -> bool {
        let mut ended = None;
        let ok = self.report_limits.allow(kind, &mut ended);
        if let Some(line) = ended {
            self.emit_outside_event(&line);
        }
        ok
    }

    /// Writes a record outside any event: it is not held back for input order.
    fn emit_outside_event(&mut self, line: &[u8]) {
        let (input, win) = (self.cur_input, self.cur_win);
        self.cur_input = NO_INPUT;
        self.cur_win = None;
        self.emit(LOG_OUTPUT, line);
        self.cur_input = input;
        self.cur_win = win;
    }

    /// Writes the `suppressed` records of every kind whose window has ended (`all`: of every
    /// kind, at the end).
    pub fn flush_reports(&mut self, all: bool) {
        for line in self.report_limits.due(all) {
            self.emit_outside_event(&line);
        }
    }
}

impl WorkerCtx {
    /// Counts and reports (once per tag) a call naming an unknown analyzer or output, made at
    /// `at()` (`file:line` of the script, when known; looked up only for the report).
    pub fn unknown_tag(&mut self, what: &str, tag: &[u8], at: impl FnOnce() -> Option<String>) {
        self.counters.unknown_tags += 1;
        let tag = String::from_utf8_lossy(tag).into_owned();
        let key = format!("{what}:{tag}");
        if !self.reported.contains(&key) && self.reported.len() < 1000 {
            self.reported.push(key);
            let script = self.script_tag();
            let at = at();
            let at = at.as_deref();
            let mut fields = vec![("script", script.as_str())];
            let at_text = at.map_or(String::new(), |w| format!(" ({w})"));
            if let Some(w) = at {
                fields.push(("where", w));
            }
            self.report(
                Kind::UnknownTag,
                &fields,
                &format!("{what}: no {what} has tag {tag:?}{at_text} (reported once per tag and worker)"),
            );
        }
    }

    /// Whether a call naming the unknown `tag` of `what` is reported yet (the fast paths leave
    /// the first one to the C functions, which know where in the script it was made).
    pub(super) fn unknown_tag_reported(&self, what: &str, tag: &[u8]) -> bool {
        let tag = String::from_utf8_lossy(tag);
        self.reported
            .iter()
            .any(|k| k.strip_prefix(what).and_then(|r| r.strip_prefix(':')) == Some(&*tag))
            || self.reported.len() >= 1000
    }

    /// Reports, once per script and `what`, something a script does that runs but is
    /// probably not what its author meant (`script_warning`).
    pub fn script_warning(&mut self, what: &str, message: &str) {
        let script = self.script_tag();
        let key = format!("warning:{script}:{what}");
        if !self.reported.contains(&key) && self.reported.len() < 1000 {
            self.reported.push(key);
            self.report(Kind::ScriptWarning, &[("script", &script)], message);
        }
    }

    pub fn script_tag(&self) -> String {
        match self.cur_script {
            (Role::Filter, i) => self.filters.get(i as usize).map(|s| s.tag.clone()).unwrap_or_default(),
            (Role::Analyzer, i) => self
                .analyzers
                .get(i as usize)
                .map(|s| s.tag.clone())
                .unwrap_or_default(),
        }
    }

    pub(super) fn push_call(&mut self, a: u32, r: c_int) {
        match self.cur_win {
            Some(w) => self.window[w].queue.push_back((a, r)),
            None => self.queue.push_back((a, r)),
        }
    }
}

/// Splits a Lua error message into its place (`file:line`) and the rest, when it starts with
/// one (`/root/analyzer/a.lua:12: attempt to ...`).
fn split_place(msg: &str) -> (Option<&str>, &str) {
    let mut from = 0;
    while let Some(off) = msg[from..].find(": ") {
        let head = &msg[..from + off];
        if let Some((file, line)) = head.rsplit_once(':')
            && !file.is_empty()
            && !line.is_empty()
            && line.bytes().all(|c| c.is_ascii_digit())
        {
            return (Some(head), &msg[from + off + 2..]);
        }
        from += off + 2;
        if from >= msg.len() {
            break;
        }
    }
    (None, msg)
}

/// Whether the JSON object `obj` has a top-level member named `name`.
fn has_member(obj: &[u8], name: &[u8]) -> bool {
    let mut members = Vec::new();
    crate::event::scan::object_members(obj, 0, &mut members);
    let mut key = Vec::new();
    members.iter().any(|m| {
        let raw = &obj[m.key_start as usize..m.key_end as usize];
        if m.key_escaped {
            crate::event::scan::unescape(raw, &mut key);
            key == name
        } else {
            raw == name
        }
    })
}

#[cfg(test)]
mod tests {
    use super::split_place;

    #[test]
    fn places_are_split_off_messages() {
        assert_eq!(
            split_place("/r/analyzer/a.lua:12: attempt to index a nil value"),
            (Some("/r/analyzer/a.lua:12"), "attempt to index a nil value")
        );
        assert_eq!(split_place("boom"), (None, "boom"));
        assert_eq!(split_place("x: y"), (None, "x: y"));
        assert_eq!(split_place("[string \"a\"]:3: bad"), (Some("[string \"a\"]:3"), "bad"));
    }
}
