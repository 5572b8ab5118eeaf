//! Redis Cluster behind the `hiredis` module (`redis_cluster = { "host:port", ... }`): each
//! command goes to the master that owns its key's slot (CRC16 of the key, or of its `{hash
//! tag}`); `MOVED` updates the slot map and retries, `ASK` retries once on the named node after
//! `ASKING`; a command whose keys are in different slots is an error that says so. Pipelined
//! commands (the window's and `append_command`'s) are split by node, sent to each node as one
//! write, and their replies put back in the order they were queued.

use std::collections::{HashMap, VecDeque};

use redis::{Connection, RedisResult, Value};

use crate::config::types::RedisTimeouts;

/// A node's address.
type Addr = (String, u16);

/// Slots of a cluster.
const SLOTS: usize = 16384;

/// Redirections followed for one command.
const MAX_REDIRECTS: usize = 5;

/// CRC16 (XMODEM: polynomial 0x1021, initial 0), as Redis Cluster hashes keys.
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The slot of a key: of its hash tag (`{...}`, non-empty) when it has one.
pub(crate) fn slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let close = key[open + 1..].iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &key[open + 1..open + 1 + close])
    });
    crc16(tagged.unwrap_or(key)) % SLOTS as u16
}

/// The key arguments of a command (by the commands' key positions; most have one, at 1).
fn keys(args: &[Vec<u8>]) -> Vec<&[u8]> {
    let name = args.first().map(|a| a.to_ascii_uppercase()).unwrap_or_default();
    let rest = &args[1.min(args.len())..];
    match name.as_slice() {
        b"PING" | b"ECHO" | b"INFO" | b"TIME" | b"DBSIZE" | b"CLUSTER" | b"COMMAND" | b"SCRIPT" | b"FLUSHALL"
        | b"FLUSHDB" | b"CONFIG" | b"CLIENT" | b"MODULE" | b"SELECT" | b"AUTH" | b"HELLO" => Vec::new(),
        b"MGET" | b"DEL" | b"UNLINK" | b"EXISTS" | b"TOUCH" | b"WATCH" | b"SINTER" | b"SUNION" | b"SDIFF"
        | b"PFCOUNT" => rest.iter().map(Vec::as_slice).collect(),
        b"MSET" | b"MSETNX" => rest.iter().step_by(2).map(Vec::as_slice).collect(),
        b"EVAL" | b"EVALSHA" | b"FCALL" => {
            let n = args
                .get(2)
                .and_then(|n| std::str::from_utf8(n).ok()?.parse::<usize>().ok())
                .unwrap_or(0);
            args.iter().skip(3).take(n).map(Vec::as_slice).collect()
        }
        _ => rest.first().map(|k| vec![k.as_slice()]).unwrap_or_default(),
    }
}

/// The slot a command goes to: `None` for commands without keys; an error when its keys are
/// in different slots.
fn command_slot(args: &[Vec<u8>]) -> Result<Option<u16>, String> {
    let mut s = None;
    for k in keys(args) {
        let ks = slot(k);
        match s {
            None => s = Some(ks),
            Some(prev) if prev != ks => {
                return Err(format!(
                    "CROSSSLOT the keys of {} are in different slots of the cluster ({prev} and {ks}); use a {{hash tag}} to keep them together",
                    String::from_utf8_lossy(&args[0])
                ));
            }
            _ => {}
        }
    }
    Ok(s)
}

/// An error reply with `text` (its first word the code), as Redis sends one.
fn error_reply(text: &str) -> Value {
    let line = format!("-{}\r\n", text.replace(['\r', '\n'], " "));
    redis::parse_redis_value(line.as_bytes()).unwrap_or(Value::Nil)
}

/// A redirection in a reply: (ASK?, slot, node).
fn redirect(v: &RedisResult<Value>) -> Option<(bool, u16, Addr)> {
    let (code, detail) = match v {
        Ok(Value::ServerError(e)) => (e.code().to_string(), e.details().unwrap_or("").to_string()),
        Err(e) => (e.code()?.to_string(), e.detail().unwrap_or("").to_string()),
        _ => return None,
    };
    let ask = match code.as_str() {
        "MOVED" => false,
        "ASK" => true,
        _ => return None,
    };
    let mut parts = detail.split_whitespace();
    let slot = parts.next()?.parse().ok()?;
    let (host, port) = parts.next()?.rsplit_once(':')?;
    Some((ask, slot, (host.to_string(), port.parse().ok()?)))
}

/// Splits packed RESP commands (arrays of bulk strings, as the module packs them).
fn unpack(mut b: &[u8]) -> Option<Vec<Vec<Vec<u8>>>> {
    let mut out = Vec::new();
    let line = |b: &[u8]| -> Option<(usize, usize)> {
        let end = b.windows(2).position(|w| w == b"\r\n")?;
        let n = std::str::from_utf8(&b[1..end]).ok()?.parse().ok()?;
        Some((n, end + 2))
    };
    while !b.is_empty() {
        if b[0] != b'*' {
            return None;
        }
        let (n, used) = line(b)?;
        b = &b[used..];
        let mut args = Vec::with_capacity(n);
        for _ in 0..n {
            if b.first() != Some(&b'$') {
                return None;
            }
            let (len, used) = line(b)?;
            let arg = b.get(used..used + len)?.to_vec();
            b = b.get(used + len + 2..)?;
            args.push(arg);
        }
        out.push(args);
    }
    Some(out)
}

/// A script's connection to a cluster: one connection per master it has talked to.
pub(crate) struct Cluster {
    seeds: Vec<Addr>,
    timeouts: RedisTimeouts,
    nodes: HashMap<Addr, Connection>,
    /// The master of each slot, as last learned.
    slots: Vec<Option<Addr>>,
    /// Replies of pipelined commands, in the order they were sent, for `recv_response`.
    replies: VecDeque<RedisResult<Value>>,
}

fn connect(addr: &Addr, t: RedisTimeouts) -> RedisResult<Connection> {
    let client = redis::Client::open((addr.0.as_str(), addr.1))?;
    let con = client.get_connection_with_timeout(t.connect)?;
    con.set_read_timeout(Some(t.io))?;
    con.set_write_timeout(Some(t.io))?;
    Ok(con)
}

impl Cluster {
    /// Connects to the first seed that answers and learns the slot map from it.
    pub(crate) fn connect(seeds: &[Addr], timeouts: RedisTimeouts) -> RedisResult<Cluster> {
        let mut c = Cluster {
            seeds: seeds.to_vec(),
            timeouts,
            nodes: HashMap::new(),
            slots: vec![None; SLOTS],
            replies: VecDeque::new(),
        };
        c.refresh()?;
        Ok(c)
    }

    /// Reads `CLUSTER SLOTS` from a known node (or a seed).
    fn refresh(&mut self) -> RedisResult<()> {
        let mut last = None;
        let candidates: Vec<Addr> = self.nodes.keys().cloned().chain(self.seeds.iter().cloned()).collect();
        for addr in candidates {
            let v = match self
                .node(&addr)
                .and_then(|con| redis::cmd("CLUSTER").arg("SLOTS").query::<Value>(con))
            {
                Ok(v) => v,
                Err(e) => {
                    self.nodes.remove(&addr);
                    last = Some(e);
                    continue;
                }
            };
            if let Value::Array(ranges) = v {
                for r in ranges {
                    let Value::Array(r) = r else { continue };
                    let (Some(Value::Int(from)), Some(Value::Int(to)), Some(Value::Array(master))) =
                        (r.first(), r.get(1), r.get(2))
                    else {
                        continue;
                    };
                    let host = match master.first() {
                        Some(Value::BulkString(h)) => String::from_utf8_lossy(h).into_owned(),
                        Some(Value::SimpleString(h)) => h.clone(),
                        _ => continue,
                    };
                    let host = if host.is_empty() { addr.0.clone() } else { host };
                    let Some(Value::Int(port)) = master.get(1) else {
                        continue;
                    };
                    for s in (*from as usize)..=(*to as usize).min(SLOTS - 1) {
                        self.slots[s] = Some((host.clone(), *port as u16));
                    }
                }
            }
            return Ok(());
        }
        Err(last.unwrap_or_else(|| redis::RedisError::from((redis::ErrorKind::Io, "no cluster node answered"))))
    }

    fn node(&mut self, addr: &Addr) -> RedisResult<&mut Connection> {
        if !self.nodes.contains_key(addr) {
            let con = connect(addr, self.timeouts)?;
            self.nodes.insert(addr.clone(), con);
        }
        Ok(self.nodes.get_mut(addr).expect("inserted above"))
    }

    /// Where a command goes.
    fn addr_of(&self, slot: Option<u16>) -> Addr {
        slot.and_then(|s| self.slots[s as usize].clone())
            .or_else(|| self.slots.iter().flatten().next().cloned())
            .unwrap_or_else(|| self.seeds[0].clone())
    }

    /// Runs one command, following redirections. A command's own failure (an error reply, a
    /// cross-slot command, too many redirections) is an error *reply* (`Ok`), as a single
    /// server gives it: only a transport failure is `Err` (which drops the link).
    fn exec(&mut self, args: &[Vec<u8>]) -> RedisResult<Value> {
        let slot = match command_slot(args) {
            Ok(s) => s,
            Err(msg) => return Ok(error_reply(&msg)),
        };
        let mut addr = self.addr_of(slot);
        let mut asking = false;
        for _ in 0..MAX_REDIRECTS {
            let mut cmd = redis::Cmd::new();
            for a in args {
                cmd.arg(a.as_slice());
            }
            let mut packed = if asking {
                redis::cmd("ASKING").get_packed_command()
            } else {
                Vec::new()
            };
            packed.extend_from_slice(&cmd.get_packed_command());
            let con = match self.node(&addr) {
                Ok(c) => c,
                Err(e) => {
                    self.nodes.remove(&addr);
                    let _ = self.refresh();
                    return Err(e);
                }
            };
            // Raw send and receive: an error reply stays a value (`req_command` would make it
            // an `Err`, which the caller takes for a broken connection).
            let r = con.send_packed_command(&packed).and_then(|()| {
                if asking {
                    con.recv_response()?;
                }
                con.recv_response()
            });
            if let Err(e) = &r
                && (e.is_io_error() || e.is_connection_dropped())
            {
                self.nodes.remove(&addr);
                let _ = self.refresh();
                return r;
            }
            match redirect(&r) {
                Some((ask, s, to)) => {
                    if !ask {
                        self.slots[s as usize] = Some(to.clone());
                    }
                    asking = ask;
                    addr = to;
                }
                None => return r,
            }
        }
        Ok(error_reply("TRYAGAIN too many cluster redirections"))
    }

    /// One command.
    pub(crate) fn req_command(&mut self, cmd: &redis::Cmd) -> RedisResult<Value> {
        let packed = cmd.get_packed_command();
        let mut cmds = unpack(&packed).unwrap_or_default();
        match cmds.pop() {
            Some(args) => self.exec(&args),
            None => Err(redis::RedisError::from((redis::ErrorKind::Client, "an empty command"))),
        }
    }

    /// Pipelined commands (packed): sent to each node as one write, replies kept in order for
    /// `recv_response`.
    pub(crate) fn send_packed_command(&mut self, packed: &[u8]) -> RedisResult<()> {
        let cmds = unpack(packed)
            .ok_or_else(|| redis::RedisError::from((redis::ErrorKind::Client, "a malformed pipeline")))?;
        let mut results: Vec<Option<RedisResult<Value>>> = (0..cmds.len()).map(|_| None).collect();
        // By node, in order.
        let mut by_node: Vec<(Addr, Vec<usize>)> = Vec::new();
        for (i, args) in cmds.iter().enumerate() {
            match command_slot(args) {
                Err(_) => results[i] = Some(self.exec(args)),
                Ok(s) => {
                    let addr = self.addr_of(s);
                    match by_node.iter_mut().find(|(a, _)| *a == addr) {
                        Some((_, v)) => v.push(i),
                        None => by_node.push((addr, vec![i])),
                    }
                }
            }
        }
        for (addr, idx) in by_node {
            let mut pipe = redis::pipe();
            for &i in &idx {
                let mut cmd = redis::Cmd::new();
                for a in &cmds[i] {
                    cmd.arg(a.as_slice());
                }
                pipe.add_command(cmd);
            }
            let sent = self.node(&addr).and_then(|con| {
                let packed = pipe.get_packed_pipeline();
                con.send_packed_command(&packed)?;
                let mut replies = Vec::with_capacity(idx.len());
                for _ in &idx {
                    replies.push(con.recv_response());
                }
                Ok(replies)
            });
            match sent {
                Ok(replies) => {
                    for (&i, r) in idx.iter().zip(replies) {
                        // A redirected command is run again on its own.
                        results[i] = Some(if redirect(&r).is_some() { self.exec(&cmds[i]) } else { r });
                    }
                }
                Err(e) => {
                    self.nodes.remove(&addr);
                    let _ = self.refresh();
                    return Err(e);
                }
            }
        }
        self.replies
            .extend(results.into_iter().map(|r| r.unwrap_or(Ok(Value::Nil))));
        Ok(())
    }

    /// The next reply of the pipelined commands, in the order they were sent.
    pub(crate) fn recv_response(&mut self) -> RedisResult<Value> {
        self.replies.pop_front().unwrap_or_else(|| {
            Err(redis::RedisError::from((
                redis::ErrorKind::Client,
                "no reply is waiting",
            )))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_as_redis_computes_them() {
        // Values from the Redis Cluster specification and CLUSTER KEYSLOT.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"{user1000}.following"), slot(b"{user1000}.followers"));
        assert_eq!(slot(b"foo{}{bar}"), slot(b"foo{}{bar}"));
        assert_eq!(slot(b"{}x"), crc16(b"{}x") % 16384);
    }

    #[test]
    fn keys_and_cross_slot_commands() {
        let a = |v: &[&str]| v.iter().map(|s| s.as_bytes().to_vec()).collect::<Vec<_>>();
        assert_eq!(command_slot(&a(&["PING"])), Ok(None));
        assert_eq!(command_slot(&a(&["SET", "foo", "1"])), Ok(Some(12182)));
        assert!(command_slot(&a(&["MGET", "{t}a", "{t}b"])).is_ok());
        assert!(
            command_slot(&a(&["MGET", "a", "b"]))
                .unwrap_err()
                .starts_with("CROSSSLOT")
        );
        assert_eq!(
            keys(&a(&["MSET", "k1", "v1", "k2", "v2"])),
            vec![&b"k1"[..], &b"k2"[..]]
        );
        assert_eq!(keys(&a(&["EVAL", "return 1", "1", "k", "arg"])), vec![&b"k"[..]]);
    }

    #[test]
    fn packed_commands_split_back() {
        let mut p = redis::pipe();
        p.cmd("SET").arg("a").arg("x\r\ny").cmd("GET").arg("a");
        let cmds = unpack(&p.get_packed_pipeline()).unwrap();
        assert_eq!(
            cmds,
            vec![
                vec![b"SET".to_vec(), b"a".to_vec(), b"x\r\ny".to_vec()],
                vec![b"GET".to_vec(), b"a".to_vec()]
            ]
        );
    }
}
