//! Routing key of an event: a symmetric hash of its 5-tuple, so both directions of a flow
//! land on the same shard; events without a tuple go by flow_id, else round-robin.

use simd_json::{Node, StaticNode, Tape};

use super::fields;

/// What the reader learned about one valid line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouteInfo {
    /// Hash used to pick the shard; `None` when the event has neither tuple nor flow_id.
    pub hash: Option<u64>,
    /// Suricata's flow_id, 0 when absent.
    pub flow_id: u64,
    /// Bloom bits of the top-level keys (see `EventMeta::keys`).
    pub keys: super::KeyBloom,
    /// Whether a top-level key occurs twice.
    pub dup_keys: bool,
}

/// Reusable simd-json parser state: parsing a line allocates nothing once warm.
pub struct RouteParser {
    scratch: Vec<u8>,
    buffers: simd_json::Buffers,
    tape: Option<Tape<'static>>,
}

impl Default for RouteParser {
    fn default() -> Self {
        Self::new()
    }
}

/// Why a line is not a valid event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineError {
    /// Not JSON at all; the message comes from simd-json.
    Json(String),
    /// Valid JSON, but not an object.
    NotObject,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LineError::Json(e) => write!(f, "invalid JSON: {e}"),
            LineError::NotObject => write!(f, "JSON value is not an object"),
        }
    }
}

impl RouteParser {
    pub fn new() -> Self {
        RouteParser {
            scratch: Vec::with_capacity(4096),
            buffers: simd_json::Buffers::new(4096),
            tape: Some(Tape(Vec::with_capacity(512))),
        }
    }

    /// Validates `line` and extracts its routing key.
    pub fn parse(&mut self, line: &[u8]) -> Result<RouteInfo, LineError> {
        self.scratch.clear();
        self.scratch.extend_from_slice(line);
        // The tape is kept between lines for its allocation only; `reset` empties it.
        let mut tape: Tape<'_> = self.tape.take().unwrap_or(Tape(Vec::new())).reset();
        let res = simd_json::fill_tape(&mut self.scratch, &mut self.buffers, &mut tape)
            .map_err(|e| LineError::Json(e.to_string()))
            .and_then(|()| route_from_tape(&tape.0));
        self.tape = Some(tape.reset());
        res
    }
}

fn route_from_tape(tape: &[Node<'_>]) -> Result<RouteInfo, LineError> {
    let Some(Node::Object { len, .. }) = tape.first() else {
        return Err(LineError::NotObject);
    };
    let mut src_ip: Option<&str> = None;
    let mut dest_ip: Option<&str> = None;
    let mut proto: Option<&str> = None;
    let mut src_port = 0u64;
    let mut dest_port = 0u64;
    let mut flow_id = 0u64;
    let mut keys = super::KeyBloom::default();
    let mut dup_keys = false;
    let mut i = 1;
    for _ in 0..*len {
        let key = match tape.get(i) {
            Some(Node::String(k)) => *k,
            _ => break,
        };
        let val = tape.get(i + 1);
        let bits = super::key_bits(key.as_bytes());
        // Only a key whose bits are both set already can repeat an earlier one: compare it
        // with them (rare for distinct keys: both blooms must collide).
        if keys.may_contain(bits) && !dup_keys {
            dup_keys = earlier_keys(tape, i).any(|k| k == key);
        }
        keys.add(bits);
        match (key, val) {
            (fields::SRC_IP, Some(Node::String(s))) => src_ip = Some(s),
            (fields::DEST_IP, Some(Node::String(s))) => dest_ip = Some(s),
            (fields::PROTO, Some(Node::String(s))) => proto = Some(s),
            (fields::SRC_PORT, Some(Node::Static(n))) => src_port = static_u64(n),
            (fields::DEST_PORT, Some(Node::Static(n))) => dest_port = static_u64(n),
            (fields::FLOW_ID, Some(Node::Static(n))) => flow_id = static_u64(n),
            _ => {}
        }
        i += 1 + node_width(val);
    }
    let hash = match (src_ip, dest_ip) {
        (Some(s), Some(d)) => Some(tuple_hash(
            s.as_bytes(),
            src_port,
            d.as_bytes(),
            dest_port,
            proto.unwrap_or("").as_bytes(),
        )),
        _ if flow_id != 0 => Some(mix(flow_id)),
        _ => None,
    };
    Ok(RouteInfo {
        hash,
        flow_id,
        keys,
        dup_keys,
    })
}

/// The keys of the top-level members before tape position `end`.
fn earlier_keys<'t>(tape: &'t [Node<'t>], end: usize) -> impl Iterator<Item = &'t str> + 't {
    let mut i = 1;
    std::iter::from_fn(move || {
        if i >= end {
            return None;
        }
        let Some(Node::String(k)) = tape.get(i) else {
            return None;
        };
        i += 1 + node_width(tape.get(i + 1));
        Some(*k)
    })
}

/// Number of tape nodes a value occupies.
fn node_width(n: Option<&Node<'_>>) -> usize {
    match n {
        Some(Node::Object { count, .. }) | Some(Node::Array { count, .. }) => count + 1,
        Some(_) => 1,
        None => 0,
    }
}

fn static_u64(n: &StaticNode) -> u64 {
    match n {
        StaticNode::U64(v) => *v,
        StaticNode::I64(v) => *v as u64,
        StaticNode::F64(v) => *v as u64,
        _ => 0,
    }
}

/// FNV-1a over bytes, then a final avalanche.
fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// A 64-bit finaliser (from splitmix64) so that nearby inputs spread over shards.
pub(crate) fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Symmetric 5-tuple hash: swapping source and destination gives the same value.
pub fn tuple_hash(src_ip: &[u8], src_port: u64, dst_ip: &[u8], dst_port: u64, proto: &[u8]) -> u64 {
    const SEED: u64 = 0xcbf2_9ce4_8422_2325;
    let a = fnv(fnv(SEED, src_ip), &src_port.to_le_bytes());
    let b = fnv(fnv(SEED, dst_ip), &dst_port.to_le_bytes());
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    mix(fnv(lo ^ hi.rotate_left(17), proto) ^ hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(line: &str) -> Result<RouteInfo, LineError> {
        RouteParser::new().parse(line.as_bytes())
    }

    #[test]
    fn both_directions_hash_alike() {
        let a =
            route(r#"{"src_ip":"10.0.0.1","src_port":1234,"dest_ip":"8.8.8.8","dest_port":53,"proto":"UDP"}"#).unwrap();
        let b =
            route(r#"{"dest_ip":"10.0.0.1","dest_port":1234,"src_ip":"8.8.8.8","src_port":53,"proto":"UDP"}"#).unwrap();
        let c =
            route(r#"{"src_ip":"10.0.0.1","src_port":1235,"dest_ip":"8.8.8.8","dest_port":53,"proto":"UDP"}"#).unwrap();
        assert_eq!(a.hash, b.hash);
        assert_ne!(a.hash, c.hash);
    }

    #[test]
    fn flow_id_only_and_nothing() {
        let a = route(r#"{"flow_id":9007199254740991,"x":{"src_ip":"1.1.1.1"}}"#).unwrap();
        assert_eq!(a.flow_id, 9_007_199_254_740_991);
        assert_eq!(a.hash, Some(mix(9_007_199_254_740_991)));
        assert_eq!(route(r#"{"event_type":"stats"}"#).unwrap().hash, None);
    }

    #[test]
    fn rejects_bad_lines() {
        assert!(matches!(route("{\"a\":1"), Err(LineError::Json(_))));
        assert_eq!(route("[1,2]"), Err(LineError::NotObject));
        assert!(route("{\"a\":\"\0\"}").is_err());
        assert!(RouteParser::new().parse(b"{\"a\":\"\xff\"}").is_err());
    }

    #[test]
    fn parser_is_reusable() {
        let mut p = RouteParser::new();
        for i in 0..100 {
            let line = format!(
                r#"{{"flow_id":{i},"src_ip":"1.2.3.4","dest_ip":"5.6.7.8","nested":{{"a":[1,2,{{"b":3}}]}},"src_port":{i}}}"#
            );
            assert_eq!(p.parse(line.as_bytes()).unwrap().flow_id, i);
            assert!(p.parse(b"nope").is_err());
        }
    }
}
