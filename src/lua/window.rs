//! The window driver: how a worker runs events through its scripts. Events are processed in
//! windows of one event, or of N when some analyzer has `pipeline = N`: every event's filter
//! first, in order, then the analyzer calls each event queued, pipelined analyzers as
//! coroutines whose Redis commands are sent together. Also timers and the calls `setup()`
//! queued, which run outside any event.
//!
//! Order: calls of an event before its first pipelined call run at once (in window order).
//! Once an event has started a pipelined call, each of its further calls waits until every
//! earlier event of the window is done, so every analyzer after a pipelined one sees the
//! window's events in input order, as without pipelining. Records leave in event order.

use std::ffi::c_int;

use mlua::ffi::{self, lua_State};

use super::context::{MAX_HOPS, UNCHANGED_EVENT, WinEvent, WorkerCtx};
use super::copy::CopyError;
use super::json::EncodeError;
use super::proxy;
use super::state::{OnErrorAction, Role, pcall_msg, push_loop};
use crate::event::EventMeta;
use crate::event::scan;
use crate::shard::{END_OF_EVENT, NO_INPUT, OutRec};

/// The longest script error text a `script_error` record holds, in bytes.
const MAX_ERROR_TEXT: usize = 4096;

/// Why `on_error` could not pass a failed event on.
#[derive(Debug, thiserror::Error)]
enum PassError {
    #[error(transparent)]
    Copy(#[from] CopyError),
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

impl WorkerCtx {
    /// Whether some analyzer asks for pipelining (then batches go through `process_window`).
    pub fn max_pipeline(&self) -> usize {
        self.analyzers.iter().map(|a| a.pipeline).max().unwrap_or(1)
    }

    /// Runs one event through the input's filter and every analyzer it reaches (a window
    /// of one event).
    pub fn process(&mut self, input: u32, meta: &EventMeta, line: &[u8]) {
        let one = EventMeta {
            start: 0,
            end: line.len() as u32,
            // Recorded members belong to a batch's lines; this line is looked up by scanning.
            members: 0,
            ..*meta
        };
        self.process_window(input, line, std::slice::from_ref(&one));
    }

    /// Runs a window of events of one input: every filter first, then the analyzers as
    /// coroutines; the Redis commands of pipelined analyzers are sent together and each
    /// coroutine resumes with its own reply. Records leave in event order.
    pub fn process_window(&mut self, input: u32, batch: &[u8], events: &[EventMeta]) {
        if self.window.len() < events.len() {
            self.window.resize_with(events.len(), WinEvent::default);
        }
        for (i, meta) in events.iter().enumerate() {
            let id = self.next_id;
            self.next_id += 1.0;
            let line = &batch[meta.start as usize..meta.end as usize];
            let root = scan::skip_ws(line, 0);
            let w = &mut self.window[i];
            w.meta = *meta;
            w.id = id;
            if let Some(v) = self.vclock {
                self.vnow_ns = self.vnow_ns.max(v.start_ns + v.step_ns.saturating_mul(meta.seq));
            }
            w.line = (meta.start as usize, meta.end as usize);
            w.root = root;
            w.queue.clear();
            w.recs.clear();
            w.co = None;
            w.ticket = 0;
            w.hops = 0;
            w.piped = false;
            self.enter(input, i);
            self.counters.events += 1;
            let members = self.lines.members_mut(meta.members);
            self.cache.prime(id, root, line, meta.keys, meta.dup_keys, members);
            self.call_loop_event(Role::Filter, input, line, id);
        }
        self.first_open = 0;
        self.drive(input, batch, events.len());
        self.cur_win = None;
        self.cur_co = std::ptr::null_mut();
        // Records in event order, each event closed by its end marker.
        for i in 0..events.len() {
            let (seq, ordered) = (self.window[i].meta.seq, self.ordered);
            let b = &mut self.outs[input as usize];
            b.recs.extend_from_slice(&self.window[i].recs);
            if ordered {
                let at = b.data.len() as u32;
                b.recs.push(OutRec {
                    seq,
                    output: END_OF_EVENT,
                    start: at,
                    end: at,
                    script: 0,
                });
            }
        }
        self.cur_input = NO_INPUT;
    }

    /// Drives every event's analyzer calls until all are done: runs what may run, in window
    /// order, then sends the queued Redis commands (one write per connection) and resumes
    /// each coroutine with the reply to its own command.
    fn drive(&mut self, input: u32, batch: &[u8], n: usize) {
        loop {
            for i in self.open(n)..n {
                if self.window[i].co.is_none() && !self.window[i].queue.is_empty() {
                    self.run_calls(input, i, batch);
                }
            }
            let first = self.open(n);
            if first >= n {
                return;
            }
            let replies = self.take_pipelined();
            if replies.is_empty() {
                // Suspended without a command (a script's own coroutine.yield): go on.
                for i in first..n {
                    if self.window[i].co.is_some() && self.window[i].ticket == 0 {
                        self.resume(input, i, 0, batch);
                    }
                }
            }
            for (i, ticket, reply) in replies {
                if self.window[i].co.is_none() || self.window[i].ticket != ticket {
                    // Its coroutine is no longer waiting for this command (the yield failed).
                    continue;
                }
                let Some(co) = self.coroutine_of(i) else { continue };
                // SAFETY: `co` is the suspended coroutine of window event `i`.
                let nres = unsafe { super::hiredis::push_result(self, co, reply) };
                self.resume(input, i, nres, batch);
            }
        }
    }

    /// The first window event not done (of `n`).
    fn open(&mut self, n: usize) -> usize {
        while self.first_open < n && self.window[self.first_open].done() {
            self.first_open += 1;
        }
        self.first_open
    }

    /// The suspended coroutine of window event `i`.
    fn coroutine_of(&self, i: usize) -> Option<*mut lua_State> {
        let (a, co_ref) = self.window[i].co?;
        let l = self.analyzers[a as usize].l;
        // SAFETY: the coroutine is anchored in the analyzer's registry under `co_ref`.
        unsafe {
            ffi::lua_rawgeti_(l, ffi::LUA_REGISTRYINDEX, co_ref);
            let co = ffi::lua_tothread(l, -1);
            ffi::lua_pop(l, 1);
            Some(co)
        }
    }

    /// Makes window event `i` the current event.
    fn enter(&mut self, input: u32, i: usize) {
        self.cur_input = input;
        self.cur_win = Some(i);
        self.cur = self.window[i].meta;
        self.cur_root = (self.window[i].id, self.window[i].root);
        self.cur_co = std::ptr::null_mut();
    }

    /// Runs window event `i`'s queued analyzer calls, pipelined ones as coroutines, until one
    /// suspends on a pipelined Redis command, none is left, or the next must wait for the
    /// earlier events (see the module's "Order").
    fn run_calls(&mut self, input: u32, i: usize, batch: &[u8]) {
        loop {
            if self.window[i].piped && self.open(i + 1) < i {
                return;
            }
            let Some((a, r)) = self.window[i].queue.pop_front() else {
                return;
            };
            self.enter(input, i);
            let w = &mut self.window[i];
            w.hops += 1;
            let (id, (s, e), hops) = (w.id, w.line, w.hops);
            let over = self.over_hop_limit(hops, "one input event");
            let l = self.analyzers[a as usize].l;
            let pipelined = self.analyzers[a as usize].pipeline > 1;
            // SAFETY: the analyzer's state belongs to this thread; the coroutine is anchored
            // in its registry while it is suspended.
            unsafe {
                if over || !pipelined {
                    // Not pipelined: an ordinary call, no coroutine needed.
                    if r == UNCHANGED_EVENT {
                        if !over {
                            self.call_loop_event(Role::Analyzer, a, &batch[s..e], id);
                        }
                        continue;
                    }
                    ffi::lua_rawgeti_(l, ffi::LUA_REGISTRYINDEX, r);
                    ffi::luaL_unref(l, ffi::LUA_REGISTRYINDEX, r);
                    if over {
                        ffi::lua_pop(l, 1);
                        continue;
                    }
                    self.call_loop(Role::Analyzer, a);
                    continue;
                }
                let (co, co_ref) = match self.analyzers[a as usize].spare_threads.pop() {
                    Some(r) => {
                        ffi::lua_rawgeti_(l, ffi::LUA_REGISTRYINDEX, r);
                        let co = ffi::lua_tothread(l, -1);
                        ffi::lua_pop(l, 1);
                        (co, r)
                    }
                    None => {
                        let co = ffi::lua_newthread(l);
                        // Known to the prelude's coroutine.resume, which refuses it.
                        ffi::lua_rawgeti_(l, ffi::LUA_REGISTRYINDEX, super::ffi_util::reg::ENGINE_THREADS);
                        ffi::lua_pushvalue(l, -2);
                        ffi::lua_pushboolean(l, 1);
                        ffi::lua_rawset(l, -3);
                        ffi::lua_pop(l, 1);
                        (co, ffi::luaL_ref(l, ffi::LUA_REGISTRYINDEX))
                    }
                };
                if r == UNCHANGED_EVENT {
                    proxy::push_event(co, &batch[s..e], id);
                } else {
                    ffi::lua_rawgeti_(co, ffi::LUA_REGISTRYINDEX, r);
                    ffi::luaL_unref(l, ffi::LUA_REGISTRYINDEX, r);
                }
                // With an `on_error` other than drop, a reference to the value is kept until
                // the call ends.
                // Only a pass can pass a value twice (see `WorkerCtx::call_value`).
                self.window[i].value_ptr = match self.analyzers[a as usize].on_error {
                    OnErrorAction::ToAnalyzer(_) | OnErrorAction::ToOutput(_) => ffi::lua_topointer(co, -1) as usize,
                    _ => 0,
                };
                self.window[i].passed_on = false;
                if self.analyzers[a as usize].on_error != OnErrorAction::Drop {
                    ffi::lua_pushvalue(co, -1);
                    ffi::lua_xmove(co, l, 1);
                    self.window[i].err_ref = Some(ffi::luaL_ref(l, ffi::LUA_REGISTRYINDEX));
                }
                push_loop(co);
                ffi::lua_insert(co, -2);
                self.window[i].piped = true;
                let script = &mut self.analyzers[a as usize];
                script.calls += 1;
                let calls = script.calls;
                self.set_cur_script(Role::Analyzer, a);
                let t0 = self.lat_start_call(calls);
                self.window[i].co_t0 = t0;
                self.cur_co = co;
                super::ffi_util::guard_jit(l, &self.analyzers[a as usize].mem);
                self.call_value = self.window[i].value_ptr;
                self.call_passed_on = self.window[i].passed_on;
                let status = self.run_script(|| ffi::lua_resume_(co, 1));
                self.window[i].passed_on = self.call_passed_on;
                self.call_value = 0;
                self.cur_co = std::ptr::null_mut();
                if !self.finish_resume(a, co, co_ref, status, i) {
                    return;
                }
                self.lat_end(Role::Analyzer, a, t0);
            }
        }
    }

    /// Resumes window event `i`'s coroutine with `nres` values already pushed on its stack.
    fn resume(&mut self, input: u32, i: usize, nres: c_int, batch: &[u8]) {
        let Some((a, co_ref)) = self.window[i].co.take() else {
            return;
        };
        self.enter(input, i);
        let l = self.analyzers[a as usize].l;
        self.set_cur_script(Role::Analyzer, a);
        // SAFETY: the coroutine is anchored in the registry under `co_ref`.
        unsafe {
            ffi::lua_rawgeti_(l, ffi::LUA_REGISTRYINDEX, co_ref);
            let co = ffi::lua_tothread(l, -1);
            ffi::lua_pop(l, 1);
            self.cur_co = co;
            super::ffi_util::guard_jit(l, &self.analyzers[a as usize].mem);
            self.call_value = self.window[i].value_ptr;
            self.call_passed_on = self.window[i].passed_on;
            let status = self.run_script(|| ffi::lua_resume_(co, nres));
            self.window[i].passed_on = self.call_passed_on;
            self.call_value = 0;
            self.cur_co = std::ptr::null_mut();
            if self.finish_resume(a, co, co_ref, status, i) {
                let t0 = self.window[i].co_t0;
                self.lat_end(Role::Analyzer, a, t0);
                self.run_calls(input, i, batch);
            }
        }
    }

    /// After a resume: records a suspension (returns false) or finishes the call, reporting an
    /// error (returns true).
    unsafe fn finish_resume(&mut self, a: u32, co: *mut lua_State, co_ref: c_int, status: c_int, i: usize) -> bool {
        let l = self.analyzers[a as usize].l;
        // SAFETY: `co` is a live coroutine of `l`.
        unsafe {
            if status == ffi::LUA_YIELD {
                self.window[i].co = Some((a, co_ref));
                // A command queued by this resume set the ticket; a yield of the script's own
                // leaves it at 0.
                self.window[i].ticket = std::mem::take(&mut self.yield_ticket);
                return false;
            }
            self.yield_ticket = 0;
            self.window[i].ticket = 0;
            let kept = self.window[i].err_ref.take();
            if status != 0 {
                let msg = pcall_msg(co);
                self.script_failed(Role::Analyzer, a, status, &msg);
                // A coroutine that died with an error cannot run again.
                ffi::luaL_unref(l, ffi::LUA_REGISTRYINDEX, co_ref);
                if let Some(r) = kept {
                    ffi::lua_rawgeti_(l, ffi::LUA_REGISTRYINDEX, r);
                    ffi::luaL_unref(l, ffi::LUA_REGISTRYINDEX, r);
                    let on_error = self.analyzers[a as usize].on_error;
                    let passed_on = self.window[i].passed_on;
                    self.apply_on_error(on_error, l, ffi::lua_gettop(l), &msg, passed_on);
                    ffi::lua_pop(l, 1);
                }
            } else {
                // Finished normally: keep it for the next call (creating a coroutine costs an
                // allocation and a stack).
                ffi::lua_settop(co, 0);
                self.analyzers[a as usize].spare_threads.push(co_ref);
            }
            if let Some(r) = kept.filter(|_| status == 0) {
                ffi::luaL_unref(l, ffi::LUA_REGISTRYINDEX, r);
            }
        }
        true
    }

    /// Counts and reports a failed script call (its message cut at [`MAX_ERROR_TEXT`]); after a
    /// memory error, collects the state's garbage at once (the limit stopped the script before
    /// the collector could run), unless the last such collection, less than a second ago,
    /// freed little.
    pub(super) fn script_failed(&mut self, role: Role, i: u32, status: c_int, msg: &str) {
        if status == ffi::LUA_ERRMEM {
            self.collect_unless_full(role, i);
        }
        let Some(s) = self.script_mut(role, i) else { return };
        s.errors += 1;
        let tag = s.tag.clone();
        // A script's error text can be anything it built (`error(string.rep("x", 1e6))`):
        // a record keeps its first 4 KiB.
        let cut = if msg.len() > MAX_ERROR_TEXT {
            let mut end = MAX_ERROR_TEXT;
            while !msg.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}... ({} bytes in all)", &msg[..end], msg.len())
        } else {
            msg.to_string()
        };
        let msg = if status == ffi::LUA_ERRMEM {
            format!("{cut} (the script's state reached its memory limit, script_memory_mb)")
        } else {
            cut
        };
        self.report(crate::diag::Kind::ScriptError, &[("script", &tag)], &msg);
    }

    /// Counts and reports the errors finalizers (`__gc`) of this worker's states raised since
    /// the last call, each as a script error of the script whose state it was.
    /// The records name no event: a finalizer runs when the collector gets to its garbage.
    /// Errors of states closed since (a reload replaced their script) match no script and are
    /// not reported: their script is gone.
    pub(super) fn report_finalizer_errors(&mut self) {
        let errors = super::boundary::take_finalizer_errors();
        if errors.kept.is_empty() {
            return;
        }
        let (input, win) = (self.cur_input, self.cur_win.take());
        self.cur_input = crate::shard::NO_INPUT;
        let script_of = |c: &Self, state: usize| {
            // SAFETY: the scripts' states belong to this thread and none is running.
            let of = |s: &super::state::Script| unsafe { super::boundary::state_id(s.l) } == state;
            match c.filters.iter().position(of) {
                Some(i) => Some((Role::Filter, i as u32)),
                None => c.analyzers.iter().position(of).map(|i| (Role::Analyzer, i as u32)),
            }
        };
        for (state, msg) in errors.kept {
            if let Some((role, i)) = script_of(self, state) {
                self.script_failed(role, i, ffi::LUA_ERRRUN, &msg);
            }
        }
        for (state, n) in errors.more {
            if let Some((role, i)) = script_of(self, state)
                && let Some(s) = self.script_mut(role, i)
            {
                s.errors += n;
                let tag = s.tag.clone();
                let msg = format!("{n} more errors in finalizers (__gc) at once; their messages were not kept");
                self.report(crate::diag::Kind::ScriptError, &[("script", &tag)], &msg);
            }
        }
        self.cur_input = input;
        self.cur_win = win;
    }

    /// Calls `loop(value)` of a script with the value on top of its stack; counts and reports
    /// an error.
    pub(super) fn call_loop(&mut self, role: Role, i: u32) {
        self.set_cur_script(role, i);
        let Some(s) = self.script_mut(role, i) else { return };
        s.calls += 1;
        // SAFETY: the worker's own state, between calls.
        unsafe { super::ffi_util::guard_jit(s.l, &s.mem) };
        let (l, calls, on_error) = (s.l, s.calls, s.on_error);
        if role == Role::Analyzer && crate::counters::tap::active() {
            self.tap_value(l, i);
        }
        // SAFETY: the state belongs to this thread; the context is lent for the call.
        unsafe {
            // With an `on_error` other than drop, a copy of the value stays under the call.
            let keep = on_error != OnErrorAction::Drop;
            if keep {
                ffi::lua_pushvalue(l, -1);
            }
            // Only a pass can pass a value twice (see `WorkerCtx::call_value`).
            self.call_passed_on = false;
            if matches!(on_error, OnErrorAction::ToAnalyzer(_) | OnErrorAction::ToOutput(_)) {
                self.call_value = ffi::lua_topointer(l, -1) as usize;
            }
            push_loop(l);
            ffi::lua_insert(l, -2);
            let t0 = self.lat_start_call(calls);
            let status = self.run_script(|| ffi::lua_pcall(l, 1, 0, 0));
            self.lat_end(role, i, t0);
            self.call_value = 0;
            if status != 0 {
                let msg = pcall_msg(l);
                self.script_failed(role, i, status, &msg);
                if keep {
                    self.apply_on_error(on_error, l, ffi::lua_gettop(l), &msg, self.call_passed_on);
                }
            }
            ffi::lua_settop(l, 0);
        }
    }

    /// Calls `loop()` of a script with a new event table over `line` (event `id`), made by
    /// the prelude's `dispatch` (see `reg::DISPATCH`); as [`call_loop`](Self::call_loop) with
    /// the event pushed. Where the event must stay on the stack after the call (`on_error`
    /// other than drop, an analyzer's tap) or `loop` is not a function (its error message is
    /// the engine's), through `call_loop`.
    pub(super) fn call_loop_event(&mut self, role: Role, i: u32, line: &[u8], id: f64) {
        let Some(s) = self.script_mut(role, i) else { return };
        let l = s.l;
        // SAFETY: the state belongs to this thread; `push_loop` leaves the global on top.
        let plain = s.on_error == OnErrorAction::Drop
            && !(role == Role::Analyzer && crate::counters::tap::active())
            && unsafe {
                ffi::lua_rawgeti_(l, ffi::LUA_REGISTRYINDEX, super::ffi_util::reg::DISPATCH);
                push_loop(l);
                ffi::lua_type(l, -1) == ffi::LUA_TFUNCTION
            };
        if !plain {
            // SAFETY: as above.
            unsafe {
                ffi::lua_settop(l, 0);
                proxy::push_event(l, line, id);
            }
            return self.call_loop(role, i);
        }
        s.calls += 1;
        // SAFETY: the worker's own state, between calls.
        unsafe { super::ffi_util::guard_jit(l, &s.mem) };
        let calls = s.calls;
        self.set_cur_script(role, i);
        // SAFETY: the state belongs to this thread, `dispatch` and `loop` are on its stack;
        // the context is lent for the call.
        unsafe {
            let seal = proxy::push_line(l, line, id).1;
            ffi::lua_pushnumber(l, seal);
            let t0 = self.lat_start_call(calls);
            // In engine time: `dispatch` makes the table, then turns to script time for
            // `loop()`; the mark is engine time again after the call.
            let status = self.lend(|| {
                let _engine = super::ffi_util::TimeMark::engine();
                ffi::lua_pcall(l, 3, 0, 0)
            });
            self.lat_end(role, i, t0);
            if status != 0 {
                let msg = pcall_msg(l);
                self.script_failed(role, i, status, &msg);
            }
            ffi::lua_settop(l, 0);
        }
    }

    /// Offers the value on top of `l` (what analyzer `a`'s `loop()` is about to get) to the tap.
    fn tap_value(&mut self, l: *mut lua_State, a: u32) {
        // SAFETY: `l` belongs to this thread. Encoded as its outputs would be.
        self.enc.cfg = unsafe { super::json::state_config(l) }.for_records();
        let (enc, cache) = (&mut self.enc, &mut self.cache);
        crate::counters::tap::offer(crate::counters::tap::Point::Analyzer, a as usize, |v| {
            // SAFETY: `l` belongs to this thread; the value is on top of its stack.
            let top = unsafe { ffi::lua_gettop(l) };
            // SAFETY: as above; encoding reads the value and leaves the stack as it was.
            if let Err(e) = unsafe { enc.encode_cached(l, top, v, Some(cache)) } {
                v.clear();
                v.extend_from_slice(b"{\"tap_error\":");
                crate::primitives::json::write_str(v, e.to_string().as_bytes());
                v.push(b'}');
            }
        });
    }

    /// Does what `on_error` says with the value at absolute index `v` of `l` (what `loop()`
    /// got before it raised `msg`). `passed_on`: the script had passed that value where a
    /// pass would (it is not passed twice).
    unsafe fn apply_on_error(
        &mut self,
        action: OnErrorAction,
        l: *mut lua_State,
        v: c_int,
        msg: &str,
        passed_on: bool,
    ) {
        // SAFETY: `l` is a state of this thread, not running; `v` holds the value.
        let r = unsafe {
            match action {
                OnErrorAction::Drop => Ok(()),
                OnErrorAction::ToAnalyzer(_) | OnErrorAction::ToOutput(_) if passed_on => Ok(()),
                OnErrorAction::ToAnalyzer(a) => self.queue_analyzer(l, v, a).map_err(PassError::from),
                OnErrorAction::ToOutput(o) => self.emit_value(l, v, o).map_err(PassError::from),
                OnErrorAction::DeadLetter(o) => {
                    let script = self.script_tag();
                    self.emit_dead_letter(l, v, o, &script, msg).map_err(PassError::from)
                }
            }
        };
        if let Err(e) = r {
            let script = self.script_tag();
            self.report(
                crate::diag::Kind::OnError,
                &[("script", &script)],
                &format!("on_error could not pass the event on: {e}"),
            );
        }
    }

    /// Queues the value at `idx` of `from` for analyzer `a` (a deep copy, made now). The
    /// current event's own table, unchanged, is not copied: the analyzer gets a fresh table
    /// over the same line when its turn comes, which is the same snapshot.
    pub unsafe fn queue_analyzer(&mut self, from: *mut lua_State, idx: c_int, a: u32) -> Result<(), CopyError> {
        // SAFETY: `from` belongs to this worker thread.
        unsafe {
            let idx = super::ffi_util::abs_index(from, idx);
            if proxy::is_proxy(from, idx) {
                let p = proxy::parts(from, idx, Some(&mut self.cache))?;
                if (p.id, p.start) == self.cur_root
                    && self.cur_input != NO_INPUT
                    && !proxy::is_dirty(from, idx, Some(&mut self.cache), None)
                {
                    self.push_call(a, UNCHANGED_EVENT);
                    return Ok(());
                }
            }
            // The states are closing (a finalizer run at the end): nothing runs any more.
            let Some(to) = self.analyzers.get(a as usize).map(|s| s.l) else {
                return Ok(());
            };
            let top = ffi::lua_gettop(to);
            if let Err(e) = super::copy::copy_value(from, idx, to, 0, &mut self.cache) {
                ffi::lua_settop(to, top);
                return Err(e);
            }
            let r = ffi::luaL_ref(to, ffi::LUA_REGISTRYINDEX);
            self.push_call(a, r);
        }
        Ok(())
    }

    /// Arms analyzer `a`'s one-shot timer with a deep copy of the value at `idx` of `from`,
    /// due `secs` from now; a pending one is replaced.
    pub unsafe fn set_timer(&mut self, from: *mut lua_State, idx: c_int, a: u32, secs: f64) -> Result<(), CopyError> {
        // The states are closing (a finalizer run at the end): no timer fires any more.
        let Some(to) = self.analyzers.get(a as usize).map(|s| s.l) else {
            return Ok(());
        };
        // SAFETY: both states belong to this worker thread.
        let r = unsafe {
            let top = ffi::lua_gettop(to);
            let idx = super::ffi_util::abs_index(from, idx);
            if let Err(e) = super::copy::copy_value(from, idx, to, 0, &mut self.cache) {
                ffi::lua_settop(to, top);
                return Err(e);
            }
            ffi::luaL_ref(to, ffi::LUA_REGISTRYINDEX)
        };
        // Up to 10^9 s (31 years: `math.huge`, a delay divided by zero, is never); below 0
        // or NaN: at once.
        let secs = if secs.is_nan() { 0.0 } else { secs.clamp(0.0, 1e9) };
        let due = self.now_ns() + (secs * 1e9) as u64;
        if self.timers.len() < self.analyzers.len() {
            self.timers.resize(self.analyzers.len(), None);
        }
        match self.timers[a as usize].replace((due, r)) {
            // SAFETY: the old value's reference was made in the same state.
            Some((_, old)) => unsafe { ffi::luaL_unref(to, ffi::LUA_REGISTRYINDEX, old) },
            None => self.timers_pending += 1,
        }
        Ok(())
    }

    /// Delivers every due timer to its analyzer's `loop()`, outside any event (its records
    /// are not held back for input order).
    pub fn run_timers(&mut self) {
        let now = self.now_ns();
        if !self.timers.iter().flatten().any(|t| t.0 <= now) {
            return;
        }
        // In due order (then analyzer order); a timer armed by one that fires waits for the
        // next call.
        let mut due: Vec<(u64, usize)> = (0..self.timers.len())
            .filter_map(|a| self.timers[a].filter(|t| t.0 <= now).map(|t| (t.0, a)))
            .collect();
        due.sort_unstable();
        for (when, a) in due {
            let Some((d, r)) = self.timers[a] else { continue };
            if d != when {
                continue;
            }
            self.timers[a] = None;
            self.timers_pending -= 1;
            self.timers_fired += 1;
            self.cur_input = NO_INPUT;
            self.cur_win = None;
            let l = self.analyzers[a].l;
            // SAFETY: the state belongs to this thread; `r` was made by `set_timer` in it.
            unsafe {
                ffi::lua_rawgeti_(l, ffi::LUA_REGISTRYINDEX, r);
                ffi::luaL_unref(l, ffi::LUA_REGISTRYINDEX, r);
            }
            // On a test's clock a timer sees its due time (the batch that passed it may have
            // moved the clock further).
            let passed = self.vnow_ns;
            if self.vclock.is_some() {
                self.vnow_ns = when;
            }
            self.call_loop(Role::Analyzer, a as u32);
            self.run_setup_calls();
            if self.vclock.is_some() {
                self.vnow_ns = self.vnow_ns.max(passed);
            }
        }
    }

    /// Whether the `hops`-th analyzer call that follows from one input event, `setup()` or
    /// timer (`what`) is past [`MAX_HOPS`]: then it is dropped, counted, and the first such is
    /// reported.
    fn over_hop_limit(&mut self, hops: u32, what: &str) -> bool {
        let over = hops > MAX_HOPS;
        if over {
            self.counters.hop_limit += 1;
        }
        if hops == MAX_HOPS + 1 {
            self.report(
                crate::diag::Kind::HopLimit,
                &[],
                &format!(
                    "{what} led to more than {MAX_HOPS} analyzer calls (analyze_event, also from \
                     analyzers: values passed around in a loop?); the calls beyond were dropped, \
                     counted in drops.hop_limit"
                ),
            );
        }
        over
    }

    /// Runs the analyzer calls that `setup()` functions (or timers) queued with
    /// `analyze_event`, outside any event. As for an input event, at most [`MAX_HOPS`] calls
    /// follow from one `setup()` or timer: a value passed around in a loop (a timer's
    /// `loop()` passing it to itself) ran for ever, the worker taken for stuck.
    pub fn run_setup_calls(&mut self) {
        let mut hops = 0u32;
        while let Some((a, r)) = self.queue.pop_front() {
            self.cur_input = NO_INPUT;
            self.cur_win = None;
            hops += 1;
            let over = self.over_hop_limit(hops, "a setup() or a timer");
            let l = self.analyzers[a as usize].l;
            // SAFETY: the state belongs to this thread; `r` is a registry reference made by
            // `queue_analyzer` (outside an event there is no current event to stand for).
            unsafe {
                ffi::lua_rawgeti_(l, ffi::LUA_REGISTRYINDEX, r);
                ffi::luaL_unref(l, ffi::LUA_REGISTRYINDEX, r);
                if over {
                    ffi::lua_pop(l, 1);
                    continue;
                }
            }
            self.call_loop(Role::Analyzer, a);
        }
    }
}
