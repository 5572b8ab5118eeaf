//! The `hiredis` Lua module (lua-hiredis compatible, spec §7) on the `redis` crate: one
//! connection per `hiredis.connect()` per script per worker, binary-safe commands, replies
//! mapped exactly as the original (`hiredis.NIL`, status constants compared by identity, error
//! replies returned as tables), and a connection that comes back by itself after Redis went
//! away: a failed call returns `nil, message, hiredis.ERR_IO` (`ERR_EOF` for the one that
//! finds the connection closed by the server) and later calls reconnect with backoff (none
//! after `ERR_EOF`).

use std::ffi::c_int;
use std::time::Instant;

use mlua::ffi::{self, lua_State};
use redis::Value;

use super::boundary::{Coerce, LuaFail, LuaResult, YIELD, arg_bytes, c_entry};
use super::context::{WorkerCtx, with_ctx};
use super::ffi_util::{push_bytes, reg, to_bytes};

use super::redis_conn::{Appended, BACKOFF_MIN, RedisConn, TxState, describe, describe_target, error_code};
pub(crate) use super::redis_conn::{
    ERR_EOF, ERR_IO, ERR_OTHER, ERR_PROTOCOL, REPLY_ARRAY, REPLY_ERROR, REPLY_INTEGER, REPLY_NIL, REPLY_STATUS,
    REPLY_STRING, RedisState, RedisTarget, RedisTimeouts, open, open_link,
};

/// Most arguments one command may have (as lua-hiredis).
const MAX_ARGS: c_int = 256;

unsafe fn push_const(l: *mut lua_State, name: &[u8], ty: i32) {
    // SAFETY: the caller owns `l`; the constant metatable was registered by `install`.
    unsafe {
        ffi::lua_createtable(l, 0, 2);
        push_bytes(l, name);
        ffi::lua_setfield(l, -2, c"name".as_ptr());
        ffi::lua_pushnumber(l, ty as f64);
        ffi::lua_setfield(l, -2, c"type".as_ptr());
        ffi::lua_rawgeti_(l, ffi::LUA_REGISTRYINDEX, reg::HIREDIS_CONST_MT);
        ffi::lua_setmetatable(l, -2);
    }
}

/// Pushes the status constant `hiredis.status[name]`, creating it on first use.
unsafe fn push_status(l: *mut lua_State, name: &[u8]) {
    // SAFETY: the status table is in the registry.
    unsafe {
        ffi::lua_rawgeti_(l, ffi::LUA_REGISTRYINDEX, reg::HIREDIS_STATUS);
        push_bytes(l, name);
        ffi::lua_rawget_(l, -2);
        if ffi::lua_type(l, -1) == ffi::LUA_TNIL {
            ffi::lua_pop(l, 1);
            push_const(l, name, REPLY_STATUS);
            push_bytes(l, name);
            ffi::lua_pushvalue(l, -2);
            ffi::lua_rawset(l, -4);
        }
        ffi::lua_remove(l, -2);
    }
}

/// `__index` of `hiredis.status`: a string key names a status constant, made on first use.
unsafe extern "C-unwind" fn status_index(l: *mut lua_State) -> c_int {
    // SAFETY: a lua_CFunction called by Lua as the metamethod (t, k): `l` is the running state
    // with those arguments; the key stays at index 2 (and its bytes in place: LuaJIT does not
    // move strings) while `push_status` reads them.
    unsafe {
        if ffi::lua_type(l, 2) != ffi::LUA_TSTRING {
            return 0;
        }
        let Some(name) = to_bytes(l, 2) else { return 0 };
        push_status(l, name);
        1
    }
}

/// How deep replies nest in the tables made of them: deeper elements are nil (a RESP3 map or
/// attribute nested thousands deep recursed without end, past the Lua stack).
const MAX_REPLY_DEPTH: usize = 64;

/// Pushes a reply as lua-hiredis did.
unsafe fn push_reply(l: *mut lua_State, v: &Value, depth: usize, errors: &mut u64) {
    // SAFETY: the caller owns `l` and left room for one value. Each level below takes two
    // slots (its table and the element being set) of the four checked here, and there are at
    // most MAX_REPLY_DEPTH levels, far below LuaJIT's 8,000 slots per C call: the check fails
    // only past those, and then the reply is cut here as it is at the depth limit.
    unsafe {
        let room = ffi::lua_checkstack(l, 4) != 0;
        let nested = matches!(
            v,
            Value::Array(_) | Value::Set(_) | Value::Push { .. } | Value::Map(_) | Value::Attribute { .. }
        );
        if nested && (depth >= MAX_REPLY_DEPTH || !room) {
            ffi::lua_pushnil(l);
            return;
        }
        match v {
            Value::Nil => {
                ffi::lua_rawgeti_(l, ffi::LUA_REGISTRYINDEX, reg::HIREDIS_NIL);
            }
            Value::Int(n) => ffi::lua_pushnumber(l, *n as f64),
            Value::BulkString(b) => push_bytes(l, b),
            Value::Okay => push_status(l, b"OK"),
            Value::SimpleString(s) => push_status(l, s.as_bytes()),
            Value::ServerError(e) => {
                *errors += 1;
                let text = match e.details() {
                    Some(d) => format!("{} {d}", e.code()),
                    None => e.code().to_string(),
                };
                push_const(l, text.as_bytes(), REPLY_ERROR);
            }
            Value::Array(items) | Value::Set(items) | Value::Push { data: items, .. } => {
                ffi::lua_createtable(l, items.len() as c_int, 0);
                for (i, it) in items.iter().enumerate() {
                    push_reply(l, it, depth + 1, errors);
                    ffi::lua_rawseti_(l, -2, (i + 1) as c_int);
                }
            }
            Value::Map(pairs) => {
                ffi::lua_createtable(l, (pairs.len() * 2) as c_int, 0);
                for (i, (k, val)) in pairs.iter().enumerate() {
                    push_reply(l, k, depth + 1, errors);
                    ffi::lua_rawseti_(l, -2, (2 * i + 1) as c_int);
                    push_reply(l, val, depth + 1, errors);
                    ffi::lua_rawseti_(l, -2, (2 * i + 2) as c_int);
                }
            }
            Value::Double(d) => ffi::lua_pushnumber(l, *d),
            Value::Boolean(b) => ffi::lua_pushboolean(l, *b as c_int),
            Value::VerbatimString { text, .. } => push_bytes(l, text.as_bytes()),
            Value::Attribute { data, .. } => push_reply(l, data, depth + 1, errors),
            other => push_bytes(l, format!("{other:?}").as_bytes()),
        }
    }
}

/// The connection slot of the userdata at index 1, or the error for a closed connection or
/// something else.
unsafe fn conn_slot(l: *mut lua_State, st: &RedisState) -> Result<usize, LuaFail> {
    // SAFETY: called at the start of a connection method; the stack is restored.
    unsafe {
        let p = ffi::lua_touserdata(l, 1) as *const [u32; 2];
        let ok = !p.is_null() && ffi::lua_getmetatable(l, 1) != 0 && {
            ffi::lua_rawgeti_(l, ffi::LUA_REGISTRYINDEX, reg::HIREDIS_CONN_MT);
            let same = ffi::lua_rawequal(l, -1, -2) != 0;
            ffi::lua_pop(l, 2);
            same
        };
        if !ok {
            return Err("lua-hiredis error: expected a connection (use conn:method(...))".into());
        }
        let [slot, generation] = *p;
        let slot = slot as usize;
        if st
            .conns
            .get(slot)
            .is_none_or(|c| c.closed || c.generation != generation)
        {
            return Err("lua-hiredis error: attempted to use closed connection".into());
        }
        Ok(slot)
    }
}

/// Checks the Lua arguments `first..=top` of a command: a name, at most 256 arguments, each a
/// string or a number. Returns `top`.
unsafe fn check_cmd_args(l: *mut lua_State, first: c_int, what: &str) -> Result<c_int, LuaFail> {
    // SAFETY: indices are valid arguments.
    unsafe {
        let top = ffi::lua_gettop(l);
        if top < first {
            return Err("missing command name".into());
        }
        if top - first + 1 > MAX_ARGS {
            return Err("too many arguments".into());
        }
        for i in first..=top {
            if !matches!(ffi::lua_type(l, i), ffi::LUA_TSTRING | ffi::LUA_TNUMBER) {
                return Err(LuaFail(format!(
                    "bad argument #{} to '{what}' (expected a string or number value)",
                    i - first + 1
                )));
            }
        }
        Ok(top)
    }
}

/// Builds a command from Lua arguments `first..=top` (strings or numbers; numbers become text
/// exactly as LuaJIT's tostring writes them).
unsafe fn build_cmd(l: *mut lua_State, first: c_int, what: &str) -> Result<redis::Cmd, LuaFail> {
    // SAFETY: indices are valid arguments.
    unsafe {
        let top = check_cmd_args(l, first, what)?;
        let mut cmd = redis::Cmd::new();
        for i in first..=top {
            cmd.arg(to_bytes(l, i).unwrap_or(&[]));
        }
        Ok(cmd)
    }
}

/// The window event whose pipelined coroutine is running on `l`, if a command on `l` is to be
/// queued rather than waited for: only the coroutine the engine resumed for that event, and
/// only where it can yield (`yieldable`, from the Lua side's `coroutine.isyieldable()`). A
/// command from any other coroutine (one the script made itself) runs at once.
fn pipelined_window(c: &WorkerCtx, l: *mut lua_State, yieldable: bool) -> Option<usize> {
    if !yieldable || c.cur_co.is_null() || c.cur_co != l {
        return None;
    }
    c.cur_win
}

/// Whether a command named `name` may be queued in a pipelined window: not a transaction
/// command, and no transaction open on any connection of the worker.
fn may_queue(c: &WorkerCtx, name: &[u8]) -> bool {
    !TxState::concerns(name)
        && super::redis_conn::session_slot(name).is_none()
        && !c.redis.conns.iter().any(|k| k.tx.open())
}

/// Runs `cmd` (named `name`) on connection `slot` and waits for its reply, noting what it
/// opens or closes of a transaction there (a connection lost meanwhile loses it: see
/// `TxState`); a command of a lost transaction is refused.
unsafe fn run_noting_tx(c: &mut WorkerCtx, l: *mut lua_State, slot: usize, cmd: &redis::Cmd, name: &[u8]) -> c_int {
    let lost = c.redis.tx_lost(slot);
    let conn = &mut c.redis.conns[slot];
    conn.tx = conn.tx.after(name);
    if lost {
        let msg = super::redis_conn::lost_tx_message(&conn.target);
        c.redis.calls += 1;
        // SAFETY: as `run`'s: `l` is the running state.
        return unsafe { push_failure(&mut c.redis, l, &msg, ERR_IO) };
    }
    // SAFETY: as `run`'s: `l` is the running state.
    let n = unsafe { run(c, l, slot, cmd) };
    c.report_redis_outages();
    n
}

/// Queues a command (already packed into the connection's buffer by `pack`) for window event
/// `w` and asks the boundary to yield: the coroutine resumes with the reply.
fn queue_piped(c: &mut WorkerCtx, slot: usize, w: usize, pack: impl FnOnce(&mut Vec<u8>)) -> LuaResult {
    c.next_ticket += 1;
    let ticket = c.next_ticket;
    let conn = &mut c.redis.conns[slot];
    pack(&mut conn.piped);
    conn.waiters.push((w, ticket));
    c.yield_ticket = ticket;
    Ok(YIELD)
}

/// Writes the Lua arguments `first..=top` as one RESP command into `out` (what `Cmd` would
/// pack, without building one). Every argument is checked before any is written, so an
/// error leaves `out` whole.
unsafe fn pack_args(l: *mut lua_State, first: c_int, top: c_int, out: &mut Vec<u8>) {
    // SAFETY: indices are valid, checked arguments.
    unsafe {
        let mut n = itoa::Buffer::new();
        out.push(b'*');
        out.extend_from_slice(n.format(top - first + 1).as_bytes());
        out.extend_from_slice(b"\r\n");
        for i in first..=top {
            let bytes = to_bytes(l, i).unwrap_or(&[]);
            out.push(b'$');
            out.extend_from_slice(n.format(bytes.len()).as_bytes());
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(bytes);
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// What a pipelined command got back: a reply, or a failure (message, error code).
pub(crate) type PipedResult = Result<Value, (String, i32)>;

impl WorkerCtx {
    /// Writes the outages of Redis connections that began or ended since the last call: one
    /// `redis_lost` record (error) and one `redis_restored` record (info, with the outage's
    /// length and the calls that failed) per outage of a connection.
    pub fn report_redis_outages(&mut self) {
        for c in &mut self.redis.conns {
            if let Some(link) = c.con.as_mut() {
                self.redis.notices.extend(link.take_notices());
            }
        }
        if self.redis.notices.is_empty() {
            return;
        }
        for (kind, msg) in std::mem::take(&mut self.redis.notices) {
            let script = self.script_tag();
            self.report(kind, &[("script", &script)], &msg);
        }
    }

    /// While the worker is idle: tries again, after their backoff, the connections that are
    /// down, so that a Redis back while no event calls it is seen (`redis_restored`, `/health`
    /// 200 again) without waiting for the next call.
    pub fn retry_down_redis(&mut self) {
        let now = Instant::now();
        let due: Vec<usize> = (self.redis.conns.iter().enumerate())
            .filter(|(_, c)| !c.closed && c.con.is_none() && c.down.is_some() && now >= c.next_try)
            .map(|(i, _)| i)
            .collect();
        if due.is_empty() {
            return;
        }
        for i in due {
            let _ = self.redis.ensure(i);
        }
        self.report_redis_outages();
    }

    /// Sends the commands queued by suspended coroutines (one write per connection) and reads
    /// their replies: (window event, ticket, result) in queue order.
    pub(super) fn take_pipelined(&mut self) -> Vec<(usize, u64, PipedResult)> {
        let mut out = Vec::new();
        for slot in 0..self.redis.conns.len() {
            if self.redis.conns[slot].waiters.is_empty() {
                continue;
            }
            let st = &mut self.redis;
            crate::counters::still_busy();
            read_appended(st, slot);
            let piped = std::mem::take(&mut st.conns[slot].piped);
            let waiters = std::mem::take(&mut st.conns[slot].waiters);
            st.calls += waiters.len() as u64;
            let fail_all = |out: &mut Vec<(usize, u64, PipedResult)>, from: usize, msg: String, code: i32| {
                for &(w, t) in &waiters[from..] {
                    out.push((w, t, Err((msg.clone(), code))));
                }
            };
            if let Err(e) = st.ensure(slot) {
                fail_all(&mut out, 0, e.to_string(), ERR_IO);
                continue;
            }
            let t0 = if self.lat.is_some() {
                crate::counters::latency::mono_ns()
            } else {
                0
            };
            let st = &mut self.redis;
            let target = describe_target(&st.conns[slot].target);
            let con = st.conns[slot].con.as_mut().expect("ensured above");
            let survives = con.survives_failures();
            if let Err(e) = con.send_packed_command(&piped) {
                let (code, msg) = (error_code(&e), format!("{target}: {}", describe(&e)));
                if !survives {
                    st.fail_with(slot, code);
                }
                fail_all(&mut out, 0, msg, code);
                continue;
            }
            for (k, &(w, t)) in waiters.iter().enumerate() {
                match con.recv_response() {
                    Ok(v) => out.push((w, t, Ok(v))),
                    // A cluster node that failed fails its own commands only.
                    Err(e) if survives => {
                        out.push((w, t, Err((format!("{target}: {}", describe(&e)), error_code(&e)))))
                    }
                    Err(e) => {
                        let (code, msg) = (error_code(&e), format!("{target}: {}", describe(&e)));
                        st.fail_with(slot, code);
                        fail_all(&mut out, k, msg, code);
                        break;
                    }
                }
            }
            // The batch's round trip, once per command in it.
            self.record_redis(t0, waiters.len() as u64);
        }
        self.report_redis_outages();
        out
    }
}

/// Pushes a pipelined command's result on `l` as `command` would return it; returns how many
/// values.
pub(crate) unsafe fn push_result(c: &mut WorkerCtx, l: *mut lua_State, r: PipedResult) -> c_int {
    // SAFETY: the caller owns `l`.
    unsafe {
        match r {
            Ok(v) => {
                push_reply(l, &v, 0, &mut c.redis.error_replies);
                1
            }
            Err((msg, code)) => push_failure(&mut c.redis, l, &msg, code),
        }
    }
}

/// Reads the replies of appended commands already sent on connection `slot` (a `get_reply`
/// read fewer than were sent), so that the next command on it reads its own reply; they wait
/// in the connection's order for their `get_reply`.
fn read_appended(st: &mut RedisState, slot: usize) {
    let conn = &mut st.conns[slot];
    if conn.sent == 0 {
        return;
    }
    let Some(con) = conn.con.as_mut() else {
        return;
    };
    let survives = con.survives_failures();
    let mut waiting = conn.order.iter_mut().filter(|a| matches!(a, Appended::Redis));
    let mut broken = false;
    while conn.sent > 0 {
        let Some(a) = waiting.next() else {
            break;
        };
        match con.recv_response() {
            Ok(v) => *a = Appended::Read(Ok(v)),
            // A cluster node that failed fails its own commands only.
            Err(e) if survives => {
                *a = Appended::Read(Err((
                    format!("{}: {}", describe_target(&conn.target), describe(&e)),
                    error_code(&e),
                )))
            }
            Err(_) => {
                broken = true;
                break;
            }
        }
        conn.sent -= 1;
    }
    if broken {
        st.fail(slot);
    }
}

/// Runs one command on connection `slot` at once and pushes its result(s).
unsafe fn run(c: &mut WorkerCtx, l: *mut lua_State, slot: usize, cmd: &redis::Cmd) -> c_int {
    // SAFETY: the caller owns `l`.
    unsafe {
        c.redis.calls += 1;
        crate::counters::still_busy();
        read_appended(&mut c.redis, slot);
        if let Err(e) = c.redis.ensure(slot) {
            return push_failure(&mut c.redis, l, &e.to_string(), ERR_IO);
        }
        let t0 = c.lat_start();
        let con = c.redis.conns[slot].con.as_mut().expect("ensured above");
        let r = con.req_command(cmd);
        let survives = con.survives_failures();
        c.record_redis(t0, 1);
        let st = &mut c.redis;
        match r {
            Ok(v) => {
                // An AUTH or SELECT that worked is the session a new connection gets again.
                if !matches!(v, Value::ServerError(_))
                    && let Some(redis::Arg::Simple(name)) = cmd.args_iter().next()
                    && let Some(k) = super::redis_conn::session_slot(name)
                {
                    let conn = &mut st.conns[slot];
                    conn.session[k] = Some(cmd.clone());
                    // An AUTH accepted now (after a password change, the replayed one was
                    // refused, and the SELECT after it with NOAUTH): the SELECT again.
                    if k == 0
                        && let (Some(select), Some(con)) = (conn.session[1].clone(), conn.con.as_mut())
                    {
                        let _ = con.req_command(&select);
                    }
                }
                push_reply(l, &v, 0, &mut st.error_replies);
                1
            }
            Err(e) => {
                let code = error_code(&e);
                let msg = format!("{}: {}", describe_target(&st.conns[slot].target), describe(&e));
                if matches!(code, ERR_IO | ERR_EOF | ERR_PROTOCOL) && !survives {
                    st.fail_with(slot, code);
                }
                push_failure(st, l, &msg, code)
            }
        }
    }
}

/// Pushes `nil, msg, code` and counts the failed call.
unsafe fn push_failure(st: &mut RedisState, l: *mut lua_State, msg: &str, code: i32) -> c_int {
    st.failures += 1;
    // SAFETY: the caller owns `l`.
    unsafe {
        ffi::lua_pushnil(l);
        push_bytes(l, msg.as_bytes());
        ffi::lua_pushnumber(l, code as f64);
        3
    }
}

/// Pushes the reply of an in-process `ML.*` command as `command` returns a Redis reply.
pub(crate) unsafe fn push_ml_reply(l: *mut lua_State, r: &crate::ml::Reply) {
    use crate::ml::Reply;
    // SAFETY: the caller owns `l`.
    unsafe {
        ffi::lua_checkstack(l, 4);
        match r {
            Reply::Ok => push_status(l, b"OK"),
            Reply::Num(v) => {
                let mut b = Vec::with_capacity(24);
                crate::ml::fmt_g17(*v, &mut b);
                push_bytes(l, &b);
            }
            Reply::Int(n) => ffi::lua_pushnumber(l, *n as f64),
            Reply::Array(items) => {
                ffi::lua_createtable(l, items.len() as c_int, 0);
                for (i, it) in items.iter().enumerate() {
                    push_ml_reply(l, it);
                    ffi::lua_rawseti_(l, -2, (i + 1) as c_int);
                }
            }
            Reply::Error(e) => push_const(l, e.to_string().as_bytes(), REPLY_ERROR),
        }
    }
}

/// When `ML.*` commands are served in-process and the arguments `first..=top` of `l` are
/// one, runs it and returns its reply.
unsafe fn ml_command(l: *mut lua_State, first: c_int, what: &str) -> Result<Option<crate::ml::Reply>, LuaFail> {
    // SAFETY: indices are valid arguments.
    unsafe {
        if !crate::ml::native() {
            return Ok(None);
        }
        if !to_bytes(l, first).is_some_and(crate::ml::is_ml_command) {
            // DEL, UNLINK, FLUSHDB and FLUSHALL also reach the models of their keys.
            if to_bytes(l, first).is_some_and(crate::ml::forgets_models) {
                let top = check_cmd_args(l, first, what)?;
                crate::ml::on_redis_command((first..=top).map(|i| to_bytes(l, i).unwrap_or(&[])));
            }
            return Ok(None);
        }
        let top = check_cmd_args(l, first, what)?;
        let args: Vec<&[u8]> = (first..=top).map(|i| to_bytes(l, i).unwrap_or(&[])).collect();
        Ok(Some(crate::ml::execute(&args)))
    }
}

/// `conn:command(name, ...)`, reached through the prelude's Lua wrapper, which passes
/// `coroutine.isyieldable()` as argument 2 (the command's arguments start at 3).
unsafe extern "C-unwind" fn conn_command(l: *mut lua_State) -> c_int {
    // SAFETY: a lua_CFunction called as conn:command(yieldable, name, ...): `l` is the running
    // state
    // with those arguments; the body runs behind `c_entry`.
    unsafe {
        c_entry(l, "command", |l| {
            with_ctx(|c| {
                let slot = conn_slot(l, &c.redis)?;
                let yieldable = ffi::lua_toboolean(l, 2) != 0;
                // Answered at once, even in a pipelined coroutine: there is no round trip to
                // save.
                if let Some(r) = ml_command(l, 3, "command")? {
                    push_ml_reply(l, &r);
                    return Ok(1);
                }
                let name = to_bytes(l, 3).unwrap_or_default();
                if may_queue(c, name)
                    && let Some(w) = pipelined_window(c, l, yieldable)
                {
                    let top = check_cmd_args(l, 3, "command")?;
                    return queue_piped(c, slot, w, |out| pack_args(l, 3, top, out));
                }
                let cmd = build_cmd(l, 3, "command")?;
                Ok(run_noting_tx(c, l, slot, &cmd, name))
            })
        })
    }
}

/// `conn:command_line(s)`, reached through the prelude's Lua wrapper (see `conn_command`).
unsafe extern "C-unwind" fn conn_command_line(l: *mut lua_State) -> c_int {
    // SAFETY: a lua_CFunction called as conn:command_line(yieldable, s): `l` is the running state
    // with those arguments; the body runs behind `c_entry`.
    unsafe {
        c_entry(l, "command_line", |l| {
            with_ctx(|c| {
                let slot = conn_slot(l, &c.redis)?;
                if ffi::lua_gettop(l) != 3 {
                    return Err("expecting exactly 1 arguments".into());
                }
                let yieldable = ffi::lua_toboolean(l, 2) != 0;
                let line = arg_bytes(l, "command_line", 3, Coerce::StrOrNum)
                    .map_err(|_| LuaFail::from("bad argument #1 to 'command_line' (string expected)"))?;
                if line.iter().all(|&c| c == b' ') {
                    return Err("missing command name".into());
                }
                // Split on ASCII spaces only, runs collapsing; '%' is an ordinary character.
                let args: Vec<&[u8]> = line.split(|&c| c == b' ').filter(|p| !p.is_empty()).collect();
                if crate::ml::native() && crate::ml::is_ml_command(args[0]) {
                    let r = crate::ml::execute(&args);
                    push_ml_reply(l, &r);
                    return Ok(1);
                }
                if crate::ml::native() {
                    crate::ml::on_redis_command(args.iter().copied());
                }
                let mut cmd = redis::Cmd::new();
                for a in &args {
                    cmd.arg(*a);
                }
                if may_queue(c, args[0])
                    && let Some(w) = pipelined_window(c, l, yieldable)
                {
                    return queue_piped(c, slot, w, |out| cmd.write_packed_command(out));
                }
                Ok(run_noting_tx(c, l, slot, &cmd, args[0]))
            })
        })
    }
}

unsafe extern "C-unwind" fn conn_append_command(l: *mut lua_State) -> c_int {
    // SAFETY: a lua_CFunction called as conn:append_command(name, ...): `l` is the running state
    // with those arguments; the body runs behind `c_entry`.
    unsafe {
        c_entry(l, "append_command", |l| {
            with_ctx(|c| {
                let slot = conn_slot(l, &c.redis)?;
                if let Some(r) = ml_command(l, 2, "append_command")? {
                    c.redis.conns[slot].order.push_back(Appended::Ml(r));
                    ffi::lua_pushboolean(l, 1);
                    return Ok(1);
                }
                let cmd = build_cmd(l, 2, "append_command")?;
                let name = arg_bytes(l, "append_command", 2, Coerce::StrOrNum).unwrap_or_default();
                // Appended commands open and end transactions too; one lost with its
                // connection refuses them (their get_reply fails).
                let lost = c.redis.tx_lost(slot);
                let conn = &mut c.redis.conns[slot];
                conn.tx = conn.tx.after(name);
                if lost {
                    let msg = super::redis_conn::lost_tx_message(&conn.target);
                    conn.order.push_back(Appended::Read(Err((msg, ERR_IO))));
                    ffi::lua_pushboolean(l, 1);
                    return Ok(1);
                }
                cmd.write_packed_command(&mut conn.pending);
                conn.queued += 1;
                conn.order.push_back(Appended::Redis);
                ffi::lua_pushboolean(l, 1);
                Ok(1)
            })
        })
    }
}

unsafe extern "C-unwind" fn conn_get_reply(l: *mut lua_State) -> c_int {
    // SAFETY: a lua_CFunction called as conn:get_reply(): `l` is the running state
    // with those arguments; the body runs behind `c_entry`.
    unsafe {
        c_entry(l, "get_reply", |l| {
            with_ctx(|c| {
                c.report_redis_outages();
                let slot = conn_slot(l, &c.redis)?;
                let st = &mut c.redis;
                match st.conns[slot].order.pop_front() {
                    Some(Appended::Ml(r)) => {
                        push_ml_reply(l, &r);
                        return Ok(1);
                    }
                    // Each get_reply of a Redis command counts one call, however its reply came
                    // (read early, failed, lost): failures never outnumber calls.
                    Some(Appended::Read(Ok(v))) => {
                        st.calls += 1;
                        push_reply(l, &v, 0, &mut st.error_replies);
                        return Ok(1);
                    }
                    Some(Appended::Read(Err((msg, code)))) => {
                        st.calls += 1;
                        return Ok(push_failure(st, l, &msg, code));
                    }
                    Some(Appended::Lost) => {
                        st.calls += 1;
                        let msg = format!(
                            "{}: the connection failed before this command's reply was read (it may or may not have run)",
                            describe_target(&st.conns[slot].target)
                        );
                        return Ok(push_failure(st, l, &msg, ERR_IO));
                    }
                    Some(Appended::Redis) => {}
                    None => {
                        return Ok(push_failure(
                            st,
                            l,
                            "get_reply: no command pending (use append_command first)",
                            ERR_OTHER,
                        ));
                    }
                }
                st.calls += 1;
                crate::counters::still_busy();
                if let Err(e) = st.ensure(slot) {
                    // Down: this command and the others appended with it are lost (sent once
                    // the connection is back, their replies would answer later commands).
                    st.lose_appended(slot);
                    return Ok(push_failure(st, l, &e.to_string(), ERR_IO));
                }
                let conn = &mut st.conns[slot];
                let con = conn.con.as_mut().expect("ensured above");
                let survives = con.survives_failures();
                if conn.queued > 0 {
                    if let Err(e) = con.send_packed_command(&conn.pending) {
                        let (code, msg) = (
                            error_code(&e),
                            format!("{}: {}", describe_target(&conn.target), describe(&e)),
                        );
                        st.fail_with(slot, code);
                        return Ok(push_failure(st, l, &msg, code));
                    }
                    conn.pending.clear();
                    conn.sent += conn.queued;
                    conn.queued = 0;
                }
                match con.recv_response() {
                    Ok(v) => {
                        conn.sent -= 1;
                        push_reply(l, &v, 0, &mut st.error_replies);
                        Ok(1)
                    }
                    Err(e) => {
                        let (code, msg) = (
                            error_code(&e),
                            format!("{}: {}", describe_target(&st.conns[slot].target), describe(&e)),
                        );
                        // A cluster node that failed fails its own commands only.
                        if survives {
                            st.conns[slot].sent -= 1;
                        } else {
                            st.fail_with(slot, code);
                        }
                        Ok(push_failure(st, l, &msg, code))
                    }
                }
            })
        })
    }
}

unsafe extern "C-unwind" fn conn_close(l: *mut lua_State) -> c_int {
    // SAFETY: called by Lua as conn:close() or by the GC (then possibly while the worker
    // context is not lent or in use: see below).
    unsafe {
        c_entry(l, "close", |l| {
            let p = ffi::lua_touserdata(l, 1) as *const [u32; 2];
            if p.is_null() || !has_conn_mt(l) {
                return Ok(0);
            }
            let [slot, generation] = *p;
            // Collected while the worker's context is in use (a finalizer run by an
            // allocation inside one of the engine's calls): closed by the worker soon after.
            if super::context::try_with_ctx(|c| c.redis.close(slot, generation)).is_none() {
                super::redis_conn::defer_close(slot, generation);
            }
            Ok(0)
        })
    }
}

/// Whether the value at 1 has the connection metatable.
unsafe fn has_conn_mt(l: *mut lua_State) -> bool {
    // SAFETY: the stack is restored.
    unsafe {
        if ffi::lua_getmetatable(l, 1) == 0 {
            return false;
        }
        ffi::lua_rawgeti_(l, ffi::LUA_REGISTRYINDEX, reg::HIREDIS_CONN_MT);
        let same = ffi::lua_rawequal(l, -1, -2) != 0;
        ffi::lua_pop(l, 2);
        same
    }
}

unsafe extern "C-unwind" fn conn_tostring(l: *mut lua_State) -> c_int {
    // SAFETY: a lua_CFunction: `l` is this thread's running state, its arguments at 1..=top;
    // the body runs behind `c_entry` (panics caught, errors raised after it returns).
    unsafe {
        push_bytes(l, b"lua-hiredis.connection");
        1
    }
}

/// `bad argument #n to 'connect' (T expected, got U)`, as Lua's own checks word it.
unsafe fn bad_argument(l: *mut lua_State, n: c_int, expected: &str) -> LuaFail {
    // SAFETY: `l` is the running state and `n` one of its stack slots (or past its top, where
    // `lua_type` gives LUA_TNONE, named "no value").
    let got = unsafe { std::ffi::CStr::from_ptr(ffi::lua_typename(l, ffi::lua_type(l, n))) };
    LuaFail(format!(
        "bad argument #{n} to 'connect' ({expected} expected, got {})",
        got.to_string_lossy()
    ))
}

unsafe extern "C-unwind" fn connect(l: *mut lua_State) -> c_int {
    // SAFETY: a lua_CFunction called as hiredis.connect([host, port]): `l` is the running state
    // with those arguments; the body runs behind `c_entry`.
    unsafe {
        c_entry(l, "connect", |l| {
            with_ctx(|c| {
                let st = &mut c.redis;
                // With arguments, they name the server (the original ignored them); without, the
                // configured one. The port is a number or a string that reads as one (as
                // lua-hiredis's `luaL_checkint` took it); left out, it is the configured one.
                let target = match (ffi::lua_type(l, 1), ffi::lua_type(l, 2)) {
                    (ffi::LUA_TNONE | ffi::LUA_TNIL, ffi::LUA_TNONE | ffi::LUA_TNIL) => st.target.clone(),
                    (ffi::LUA_TSTRING, t2) => {
                        let host = String::from_utf8_lossy(to_bytes(l, 1).unwrap_or(&[])).into_owned();
                        let port = match t2 {
                            ffi::LUA_TNONE | ffi::LUA_TNIL => match &st.target {
                                RedisTarget::Tcp(_, p) => i64::from(*p),
                                _ => 6379,
                            },
                            _ if ffi::lua_isnumber(l, 2) != 0 => ffi::lua_tonumber(l, 2) as i64,
                            _ => return Err(bad_argument(l, 2, "number")),
                        };
                        // A port past 65535 (`99999`) names no server: refused, not clamped
                        // (0 or below: `host` is a unix socket's path).
                        if port > 65535 && host != "managed" {
                            let msg = format!("invalid port {port} (1 to 65535)");
                            return Ok(push_failure(st, l, &msg, ERR_OTHER));
                        }
                        RedisTarget::from_config(&host, port)
                    }
                    _ => return Err(bad_argument(l, 1, "string")),
                };
                let open = st.open_count();
                if open >= MAX_OPEN_CONNECTIONS {
                    let msg = format!(
                        "exceeded the number of allowable redis connections ({open} open on this worker; close() the ones no longer needed)"
                    );
                    return Ok(push_failure(st, l, &msg, ERR_EOF));
                }
                let con = match super::redis_conn::open_link(&target, st.timeouts) {
                    Ok(c) => {
                        st.connect_succeeded(&target);
                        c
                    }
                    Err(e) => {
                        st.connect_failed(&target, &e.to_string());
                        // A failed connect counts as a call, as a failed command does.
                        st.calls += 1;
                        let n = push_failure(st, l, &format!("{}: {e}", describe_target(&target)), ERR_IO);
                        c.report_redis_outages();
                        return Ok(n);
                    }
                };
                // A closed slot no coroutine waits on is used again, under a new generation.
                let reuse = st.conns.iter().position(|c| c.closed && c.waiters.is_empty());
                let (slot, generation) = match reuse {
                    Some(i) => (i, st.conns[i].generation.wrapping_add(1)),
                    None => (st.conns.len(), 0),
                };
                let conn = RedisConn {
                    target,
                    piped: Vec::new(),
                    waiters: Vec::new(),
                    con: Some(con),
                    pending: Vec::new(),
                    order: Default::default(),
                    sent: 0,
                    queued: 0,
                    next_try: Instant::now(),
                    backoff: BACKOFF_MIN,
                    closed: false,
                    down: None,
                    generation,
                    tx: TxState::default(),
                    lost_in: 0,
                    session: Default::default(),
                };
                if slot == st.conns.len() {
                    st.conns.push(conn);
                } else {
                    st.conns[slot] = conn;
                }
                let ud = ffi::lua_newuserdata(l, std::mem::size_of::<[u32; 2]>()) as *mut [u32; 2];
                *ud = [slot as u32, generation];
                ffi::lua_rawgeti_(l, ffi::LUA_REGISTRYINDEX, reg::HIREDIS_CONN_MT);
                ffi::lua_setmetatable(l, -2);
                Ok(1)
            })
        })
    }
}

/// Open connections a worker's scripts may hold at once; `connect` fails beyond (file
/// descriptors are the engine's too: its outputs and inputs need them).
pub(crate) const MAX_OPEN_CONNECTIONS: usize = 256;

/// `E.hiredis_open()` of the prelude: the connections open on this worker. Beyond
/// `GC_BEFORE_CONNECT` (prelude.lua), `hiredis.connect` first runs a full collection, which
/// closes the connections no script holds any more.
pub(crate) unsafe extern "C-unwind" fn open_count(l: *mut lua_State) -> c_int {
    // SAFETY: a lua_CFunction called by the prelude with no arguments; it pushes one number.
    unsafe {
        let n = super::context::try_with_ctx(|c| c.redis.open_count()).unwrap_or(0);
        ffi::lua_pushnumber(l, n as f64);
        1
    }
}

unsafe extern "C-unwind" fn unwrap_reply(l: *mut lua_State) -> c_int {
    // SAFETY: a lua_CFunction called as hiredis.unwrap_reply(r): `l` is the running state
    // with those arguments; the body runs behind `c_entry`.
    unsafe {
        ffi::lua_settop(l, 1);
        if ffi::lua_type(l, 1) == ffi::LUA_TTABLE && ffi::lua_getmetatable(l, 1) != 0 {
            ffi::lua_rawgeti_(l, ffi::LUA_REGISTRYINDEX, reg::HIREDIS_CONST_MT);
            let is_const = ffi::lua_rawequal(l, -1, -2) != 0;
            ffi::lua_settop(l, 1);
            if is_const {
                ffi::lua_getfield(l, 1, c"type".as_ptr());
                let ty = ffi::lua_tonumber(l, -1) as i32;
                ffi::lua_getfield(l, 1, c"name".as_ptr());
                if ty == REPLY_STATUS {
                    ffi::lua_pushnumber(l, REPLY_STATUS as f64);
                    return 2;
                }
                if ty == REPLY_ERROR {
                    ffi::lua_pushnil(l);
                    ffi::lua_insert(l, -2);
                    return 2;
                }
                ffi::lua_settop(l, 1);
            }
        }
        1
    }
}

unsafe extern "C-unwind" fn const_tostring(l: *mut lua_State) -> c_int {
    // SAFETY: the `__tostring` of constants: 1 is a table with the constant metatable, which has no
    // `__index` (a raw-equivalent get).
    unsafe {
        ffi::lua_getfield(l, 1, c"name".as_ptr());
        1
    }
}

/// Installs `hiredis` as a global and in `package.loaded`.
pub(crate) unsafe fn install(l: *mut lua_State) {
    // SAFETY: a fresh state of this thread with the standard libraries open.
    unsafe {
        // The constants' protected metatable.
        ffi::lua_createtable(l, 0, 2);
        ffi::lua_pushcclosure(l, const_tostring, 0);
        ffi::lua_setfield(l, -2, c"__tostring".as_ptr());
        push_bytes(l, b"lua-hiredis.const");
        ffi::lua_setfield(l, -2, c"__metatable".as_ptr());
        ffi::lua_rawseti_(l, ffi::LUA_REGISTRYINDEX, reg::HIREDIS_CONST_MT);
        // The connection metatable.
        ffi::lua_createtable(l, 0, 4);
        ffi::lua_createtable(l, 0, 6);
        for (name, f) in [
            (c"command", conn_command as ffi::lua_CFunction),
            (c"command_line", conn_command_line),
            (c"append_command", conn_append_command),
            (c"get_reply", conn_get_reply),
            (c"close", conn_close),
        ] {
            ffi::lua_pushcclosure(l, f, 0);
            ffi::lua_setfield(l, -2, name.as_ptr());
        }
        ffi::lua_setfield(l, -2, c"__index".as_ptr());
        ffi::lua_pushcclosure(l, conn_close, 0);
        ffi::lua_setfield(l, -2, c"__gc".as_ptr());
        ffi::lua_pushcclosure(l, conn_tostring, 0);
        ffi::lua_setfield(l, -2, c"__tostring".as_ptr());
        push_bytes(l, b"lua-hiredis.connection");
        ffi::lua_setfield(l, -2, c"__metatable".as_ptr());
        ffi::lua_rawseti_(l, ffi::LUA_REGISTRYINDEX, reg::HIREDIS_CONN_MT);
        // The module.
        ffi::lua_createtable(l, 0, 24);
        let m = ffi::lua_gettop(l);
        ffi::lua_pushcclosure(l, connect, 0);
        ffi::lua_setfield(l, m, c"connect".as_ptr());
        ffi::lua_pushcclosure(l, unwrap_reply, 0);
        ffi::lua_setfield(l, m, c"unwrap_reply".as_ptr());
        for (name, v) in [
            (c"ERR_IO", ERR_IO),
            (c"ERR_OTHER", ERR_OTHER),
            (c"ERR_EOF", ERR_EOF),
            (c"ERR_PROTOCOL", ERR_PROTOCOL),
            (c"REPLY_STRING", REPLY_STRING),
            (c"REPLY_ARRAY", REPLY_ARRAY),
            (c"REPLY_INTEGER", REPLY_INTEGER),
            (c"REPLY_NIL", REPLY_NIL),
            (c"REPLY_STATUS", REPLY_STATUS),
            (c"REPLY_ERROR", REPLY_ERROR),
        ] {
            ffi::lua_pushnumber(l, v as f64);
            ffi::lua_setfield(l, m, name.as_ptr());
        }
        push_const(l, b"NIL", REPLY_NIL);
        ffi::lua_pushvalue(l, -1);
        ffi::lua_rawseti_(l, ffi::LUA_REGISTRYINDEX, reg::HIREDIS_NIL);
        ffi::lua_setfield(l, m, c"NIL".as_ptr());
        ffi::lua_createtable(l, 0, 8);
        let status = ffi::lua_gettop(l);
        for name in [c"OK", c"QUEUED", c"PONG"] {
            push_const(l, name.to_bytes(), REPLY_STATUS);
            ffi::lua_pushvalue(l, -1);
            ffi::lua_setfield(l, status, name.as_ptr());
            ffi::lua_setfield(l, m, name.as_ptr());
        }
        // Names not met yet are made when first read (as lua-hiredis's status table does), so
        // `local H = hiredis.status.hash` before any reply is the table a TYPE reply returns.
        ffi::lua_createtable(l, 0, 1);
        ffi::lua_pushcfunction(l, status_index);
        ffi::lua_setfield(l, -2, c"__index".as_ptr());
        ffi::lua_setmetatable(l, status);
        ffi::lua_pushvalue(l, status);
        ffi::lua_rawseti_(l, ffi::LUA_REGISTRYINDEX, reg::HIREDIS_STATUS);
        ffi::lua_setfield(l, m, c"status".as_ptr());
        super::ffi_util::register(l, m, c"hiredis");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply nested far deeper than the limit, through RESP3 maps and attributes as well as
    /// arrays, is cut at the limit: one value pushed, tables `MAX_REPLY_DEPTH` deep. (Maps and
    /// attributes recursed without a limit, past the Lua stack.)
    #[test]
    fn deeply_nested_replies_are_cut_at_the_limit() {
        for kind in 0..3 {
            let mut v = Value::Int(7);
            for i in 0..5_000 {
                v = match (kind + i) % 3 {
                    0 => Value::Array(vec![v]),
                    1 => Value::Map(vec![(v, Value::Int(1))]),
                    _ => Value::Attribute {
                        data: Box::new(Value::Array(vec![v])),
                        attributes: Vec::new(),
                    },
                };
            }
            // SAFETY: a fresh state of this thread, closed at the end; the stack is read with
            // LuaJIT's own functions.
            let depth = unsafe {
                let l = ffi::luaL_newstate();
                assert!(!l.is_null());
                let mut errors = 0;
                push_reply(l, &v, 0, &mut errors);
                assert_eq!(ffi::lua_gettop(l), 1);
                let mut depth = 0;
                while ffi::lua_type(l, -1) == ffi::LUA_TTABLE {
                    depth += 1;
                    ffi::lua_rawgeti(l, -1, 1);
                }
                ffi::lua_close(l);
                depth
            };
            assert!(
                (MAX_REPLY_DEPTH / 2..=MAX_REPLY_DEPTH).contains(&depth),
                "{depth} tables deep"
            );
            // The value is dropped level by level (a recursive drop of 5,000 levels is fine).
            drop(v);
        }
    }
}
