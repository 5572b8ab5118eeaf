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
            .map_err(|e| {
                // simd-json places every UTF-8 error at character 0: say where it is.
                match std::str::from_utf8(line) {
                    Err(u) if matches!(e.error(), simd_json::ErrorType::InvalidUtf8) => {
                        LineError::Json(format!("invalid UTF-8 at byte {}", u.valid_up_to()))
                    }
                    _ => LineError::Json(e.to_string()),
                }
            })
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
    let mut flow_id = None;
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
            (fields::FLOW_ID, Some(Node::Static(n))) => flow_id = Some(static_u64(n)),
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
        _ => flow_id.map(mix),
    };
    Ok(RouteInfo {
        hash,
        flow_id: flow_id.unwrap_or(0),
        keys,
        dup_keys,
    })
}

/// Where the reader sends a line: the routing hash and Suricata's flow_id.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Route {
    /// Hash used to pick the shard; `None` when the event has neither tuple nor flow_id.
    pub hash: Option<u64>,
    /// Suricata's flow_id, 0 when absent.
    pub flow_id: u64,
}

/// The reader's routing without validation: a walk over the top-level members with the
/// structural scanner (`event::scan`) that stops once the six routing fields are found (in
/// Suricata's EVE they come first, before the nested objects), so it costs a fraction of a
/// full parse; the workers validate each line (`event::validate`) before any script sees it.
/// On a valid line without a repeated routing field it gives [`RouteParser::parse`]'s hash and
/// flow_id (of a repeated one it takes the first occurrence, the tape the last: a route
/// either way); on an invalid line some route (its worker rejects the line).
#[derive(Default)]
pub(crate) struct RouteScanner {
    /// Unescaped text of an escaped key.
    key: Vec<u8>,
    /// Unescaped texts of escaped routing fields (unescaped ones are read in the line).
    src_ip: Vec<u8>,
    dest_ip: Vec<u8>,
    proto: Vec<u8>,
}

/// The routing fields, one bit each in the scan's mask of fields found.
const SRC_IP: u8 = 1;
const DEST_IP: u8 = 2;
const PROTO: u8 = 4;
const SRC_PORT: u8 = 8;
const DEST_PORT: u8 = 16;
const FLOW_ID: u8 = 32;
const ALL: u8 = 63;

/// Which routing field `key` names (0: none); byte patterns, compiled to a length switch and
/// a few compares.
#[inline]
fn field_bit(key: &[u8]) -> u8 {
    match *key {
        [b's', b'r', b'c', b'_', b'i', b'p'] => SRC_IP,
        [b'd', b'e', b's', b't', b'_', b'i', b'p'] => DEST_IP,
        [b'p', b'r', b'o', b't', b'o'] => PROTO,
        [b's', b'r', b'c', b'_', b'p', b'o', b'r', b't'] => SRC_PORT,
        [b'd', b'e', b's', b't', b'_', b'p', b'o', b'r', b't'] => DEST_PORT,
        [b'f', b'l', b'o', b'w', b'_', b'i', b'd'] => FLOW_ID,
        _ => 0,
    }
}

impl RouteScanner {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The route of `line` (see the type's description).
    pub(crate) fn route(&mut self, line: &[u8]) -> Route {
        use super::scan::{skip_ws, string_end, value_end};
        let mut found = 0u8;
        let (mut src_port, mut dest_port, mut flow_id) = (0u64, 0u64, 0u64);
        // Where src_ip, dest_ip and proto are in the line, and whether escaped (their text
        // is then in `self`).
        let mut texts = [(0usize, 0usize, false); 3];
        let root = skip_ws(line, 0);
        let mut i = if line.get(root) == Some(&b'{') {
            skip_ws(line, root + 1)
        } else {
            line.len()
        };
        // One member per turn: `i` is at its key's opening quote.
        while found != ALL && line.get(i) == Some(&b'"') {
            let (key_end, key_escaped) = string_end(line, i);
            let raw = &line[i + 1..key_end.saturating_sub(1).max(i + 1)];
            // Compact EVE has the colon right after the key.
            let colon = if line.get(key_end) == Some(&b':') {
                key_end
            } else {
                skip_ws(line, key_end)
            };
            if line.get(colon) != Some(&b':') {
                break;
            }
            let v = skip_ws(line, colon + 1);
            let bit = if key_escaped {
                super::scan::unescape(raw, &mut self.key);
                field_bit(&self.key)
            } else {
                field_bit(raw)
            };
            let v_end = match line.get(v) {
                Some(b'"') => {
                    let (end, escaped) = string_end(line, v);
                    if bit & (SRC_IP | DEST_IP | PROTO) != 0 && found & bit == 0 {
                        let (k, slot) = match bit {
                            SRC_IP => (0, &mut self.src_ip),
                            DEST_IP => (1, &mut self.dest_ip),
                            _ => (2, &mut self.proto),
                        };
                        let (from, to) = (v + 1, end.saturating_sub(1).max(v + 1));
                        // The text stays in the line unless it needs unescaping.
                        if escaped {
                            super::scan::unescape(&line[from..to], slot);
                        }
                        texts[k] = (from, to, escaped);
                        found |= bit;
                    }
                    end
                }
                Some(b'-' | b'0'..=b'9' | b't' | b'f' | b'n') => {
                    let end = value_end(line, v);
                    if bit & (SRC_PORT | DEST_PORT | FLOW_ID) != 0 && found & bit == 0 {
                        let n = number_u64(&line[v..end]);
                        match bit {
                            SRC_PORT => src_port = n,
                            DEST_PORT => dest_port = n,
                            _ => flow_id = n,
                        }
                        found |= bit;
                    }
                    end
                }
                // Another type: as if the field were absent (the tape's rule).
                Some(_) => value_end(line, v),
                None => break,
            };
            if v_end <= v {
                break;
            }
            i = match line.get(v_end) {
                Some(b',') => v_end + 1,
                _ => {
                    let j = skip_ws(line, v_end);
                    if line.get(j) != Some(&b',') {
                        break;
                    }
                    j + 1
                }
            };
            if line.get(i) != Some(&b'"') {
                i = skip_ws(line, i);
            }
        }
        let hash = if found & (SRC_IP | DEST_IP) == SRC_IP | DEST_IP {
            let proto = if found & PROTO != 0 {
                field_text(line, texts[2], &self.proto)
            } else {
                b""
            };
            Some(tuple_hash(
                field_text(line, texts[0], &self.src_ip),
                src_port,
                field_text(line, texts[1], &self.dest_ip),
                dest_port,
                proto,
            ))
        } else if found & FLOW_ID != 0 {
            // Present, whatever its value (a flow_id of 0 is a flow too).
            Some(mix(flow_id))
        } else {
            None
        };
        Route { hash, flow_id }
    }
}

/// A routing field's text: its range of the line, or, when it was escaped, its unescaped
/// copy.
#[inline]
fn field_text<'a>(line: &'a [u8], (from, to, escaped): (usize, usize, bool), unescaped: &'a [u8]) -> &'a [u8] {
    if escaped { unescaped } else { &line[from..to] }
}

/// A number as the tape's `static_u64` has it: an integer as `u64` (a negative one as its
/// `i64` bits), a float converted with saturation; `true`, `false` and `null` give 0.
fn number_u64(raw: &[u8]) -> u64 {
    let (negative, digits) = match raw.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, raw),
    };
    if !digits.is_empty() && digits.iter().all(u8::is_ascii_digit) {
        // An integer beyond 64 bits (-2^63 for a negative one) is a double, as in the tape.
        let v = digits
            .iter()
            .try_fold(0u64, |v, &c| v.checked_mul(10)?.checked_add((c - b'0') as u64))
            .filter(|&v| !negative || v <= 1 << 63);
        if let Some(v) = v {
            return if negative { v.wrapping_neg() } else { v };
        }
    }
    match raw.first() {
        Some(b'-' | b'0'..=b'9') => super::scan::number(raw) as u64,
        _ => 0,
    }
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

/// A 64-bit finaliser (from splitmix64) so that nearby inputs spread over shards.
pub(crate) fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Symmetric 5-tuple hash: swapping source and destination gives the same value. An IPv6
/// address is hashed as its 16 bytes, so that the texts of one address (`2001:db8::f`,
/// `2001:0DB8:0:0:0:0:0:000F`) route a flow alike.
#[inline]
pub fn tuple_hash(src_ip: &[u8], src_port: u64, dst_ip: &[u8], dst_port: u64, proto: &[u8]) -> u64 {
    if is_ipv6(src_ip) || is_ipv6(dst_ip) {
        return ipv6_tuple_hash(src_ip, src_port, dst_ip, dst_port, proto);
    }
    text_tuple_hash(src_ip, src_port, dst_ip, dst_port, proto)
}

/// [`tuple_hash`] when an address is IPv6 (out of the IPv4 path's way): each IPv6 address
/// hashed as its 16 bytes, whatever its text.
#[inline(never)]
fn ipv6_tuple_hash(src_ip: &[u8], src_port: u64, dst_ip: &[u8], dst_port: u64, proto: &[u8]) -> u64 {
    let (s, d) = (ipv6_octets(src_ip), ipv6_octets(dst_ip));
    let src_ip = s.as_ref().map_or(src_ip, |o| &o[..]);
    let dst_ip = d.as_ref().map_or(dst_ip, |o| &o[..]);
    text_tuple_hash(src_ip, src_port, dst_ip, dst_port, proto)
}

/// [`tuple_hash`] of the addresses' texts as they are.
#[inline]
fn text_tuple_hash(src_ip: &[u8], src_port: u64, dst_ip: &[u8], dst_port: u64, proto: &[u8]) -> u64 {
    const SEED: u64 = 0xcbf2_9ce4_8422_2325;
    let a = super::hash_words(SEED ^ src_port.wrapping_mul(0xff51_afd7_ed55_8ccd), src_ip);
    let b = super::hash_words(SEED ^ dst_port.wrapping_mul(0xff51_afd7_ed55_8ccd), dst_ip);
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    mix(super::hash_words(lo ^ hi.rotate_left(17), proto) ^ hi)
}

/// Whether `ip` may be an IPv6 address: its text has a `:` within its first five bytes (a
/// group has at most four digits).
#[inline]
fn is_ipv6(ip: &[u8]) -> bool {
    // An IPv4 text has its first `.` at 1, 2 or 3: one load and compare in the common case
    // (`::0.0.0.2`, IPv6 with a dotted quad, has one at 3 too, after a `:`).
    match ip {
        [c, b'.', ..] | [c, _, b'.', ..] | [c, _, _, b'.', ..] if *c != b':' => false,
        _ => ip.iter().take(5).any(|&c| c == b':'),
    }
}

/// The 16 bytes of an IPv6 address in any of its texts (hex digits of either case, leading
/// zeros or not, `::` or not, the last 32 bits as a dotted quad or not); `None` for anything
/// else (such a text is hashed as it is).
fn ipv6_octets(t: &[u8]) -> Option<[u8; 16]> {
    if t.contains(&b'.') {
        // An embedded IPv4 address (`::ffff:10.1.0.2`, `64:ff9b::198.51.100.7`): rare, read
        // by std's parser.
        return std::str::from_utf8(t)
            .ok()?
            .parse::<std::net::Ipv6Addr>()
            .ok()
            .map(|a| a.octets());
    }
    let mut g = [0u16; 8];
    let mut n = 0;
    // Groups before the `::`, when there is one.
    let mut before: Option<usize> = None;
    let mut i = 0;
    if t.first() == Some(&b':') {
        if t.get(1) != Some(&b':') {
            return None;
        }
        before = Some(0);
        i = 2;
    }
    while i < t.len() {
        let start = i;
        let mut v: u32 = 0;
        while let Some(d) = t.get(i).and_then(|&c| (c as char).to_digit(16)) {
            v = v << 4 | d;
            i += 1;
        }
        if i == start || i - start > 4 || n == 8 {
            return None;
        }
        g[n] = v as u16;
        n += 1;
        match t.get(i) {
            None => break,
            Some(b':') => i += 1,
            Some(_) => return None,
        }
        if t.get(i) == Some(&b':') {
            if before.is_some() {
                return None;
            }
            before = Some(n);
            i += 1;
        } else if i == t.len() {
            return None;
        }
    }
    match before {
        Some(k) if n <= 7 => {
            // The groups after the `::` move to the end; the gap is zeros.
            let tail = n - k;
            g.copy_within(k..n, 8 - tail);
            g[k..8 - tail].fill(0);
        }
        None if n == 8 => {}
        _ => return None,
    }
    let mut o = [0u8; 16];
    for (k, x) in g.iter().enumerate() {
        o[2 * k..2 * k + 2].copy_from_slice(&x.to_be_bytes());
    }
    Some(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random addresses (zero groups often, in runs) in several texts: each parses to the
    /// address std's parser finds, and every text hashes alike.
    #[test]
    fn ipv6_texts_hash_alike() {
        let mut r = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            let mut g = [0u16; 8];
            for x in &mut g {
                *x = if crate::test_rng::below(&mut r, 5) < 2 {
                    0
                } else {
                    crate::test_rng::below(&mut r, 1 << 16) as u16
                };
            }
            let addr = std::net::Ipv6Addr::from(g);
            let canonical = addr.to_string();
            let short: Vec<String> = g.iter().map(|x| format!("{x:x}")).collect();
            let full: Vec<String> = g.iter().map(|x| format!("{x:04X}")).collect();
            let want = tuple_hash(canonical.as_bytes(), 1, b"10.0.0.1", 2, b"TCP");
            for text in [
                canonical.clone(),
                short.join(":"),
                full.join(":"),
                canonical.to_uppercase(),
            ] {
                assert_eq!(ipv6_octets(text.as_bytes()), Some(addr.octets()), "{text}");
                assert_eq!(tuple_hash(b"10.0.0.1", 2, text.as_bytes(), 1, b"TCP"), want, "{text}");
            }
        }
    }

    #[test]
    fn forms_of_one_ipv6_address_hash_alike() {
        let h = |a: &str, b: &str| tuple_hash(a.as_bytes(), 1234, b.as_bytes(), 80, b"TCP");
        let canonical = h("2001:db8::f", "fe80::6a");
        assert_eq!(h("2001:0DB8:0000:0000:0000:0000:0000:000F", "FE80::6A"), canonical);
        assert_eq!(h("2001:db8:0:0:0:0:0:f", "fe80:0::6a"), canonical);
        // Both directions, in different forms.
        assert_eq!(tuple_hash(b"FE80::6A", 80, b"2001:db8::0:f", 1234, b"TCP"), canonical);
        assert_ne!(h("2001:db8::e", "fe80::6a"), canonical);
        // Texts that are no IPv6 address are hashed as they are.
        for bad in [
            ":1::",
            "1:::2",
            "1::2::3",
            "2001:db8:",
            "12345::",
            "1:2:3:4:5:6:7:8:9",
            "1:2:3:4:5:6:7",
            "1::2:3:4:5:6:7:8",
            "::ffff:1.2.3",
            "::ffff:1.2.3.4.5",
            "1.2.3.4::",
            "fe80::1%eth0",
            "g::1",
        ] {
            assert_eq!(ipv6_octets(bad.as_bytes()), None, "{bad}");
            assert_eq!(
                tuple_hash(bad.as_bytes(), 1, b"10.0.0.1", 2, b"TCP"),
                text_tuple_hash(bad.as_bytes(), 1, b"10.0.0.1", 2, b"TCP"),
                "{bad}"
            );
        }
        for (good, want) in [
            ("::", "::"),
            ("::1", "::1"),
            ("1::", "1::"),
            ("1:2:3:4:5:6::8", "1:2:3:4:5:6:0:8"),
            // The last 32 bits as a dotted quad.
            ("::ffff:10.1.0.2", "::ffff:a01:2"),
            ("64:ff9b::198.51.100.7", "64:ff9b::c633:6407"),
            ("::0.0.0.2", "::2"),
            ("0:0:0:0:0:FFFF:192.0.2.1", "::ffff:c000:201"),
        ] {
            let a: std::net::Ipv6Addr = want.parse().unwrap();
            assert_eq!(ipv6_octets(good.as_bytes()), Some(a.octets()), "{good}");
            assert_eq!(h(good, "10.0.0.1"), h(want, "10.0.0.1"), "{good}");
        }
        // IPv4 texts are hashed as before.
        assert_eq!(
            h("10.0.0.1", "192.168.1.10"),
            text_tuple_hash(b"10.0.0.1", 1234, b"192.168.1.10", 80, b"TCP")
        );
    }

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

    /// The scanner reads routing fields in the line, or unescaped when escaped: the same
    /// route as the parse, and as the same fields unescaped.
    #[test]
    fn the_scanner_routes_escaped_fields_as_the_parse_does() {
        let plain = r#"{"src_ip":"10.0.0.1","src_port":1234,"dest_ip":"2001:db8::1","dest_port":53,"proto":"UDP"}"#;
        let mut scanner = RouteScanner::new();
        let want = scanner.route(plain.as_bytes()).hash;
        assert_eq!(want, route(plain).unwrap().hash);
        for line in [
            r#"{"src_ip":"10.0.0.\u0031","src_port":1234,"dest_ip":"2001:db8::1","dest_port":53,"proto":"UDP"}"#,
            r#"{"src_ip":"10.0.0.1","src_port":1234,"dest_ip":"2001:db8::\u0031","dest_port":53,"proto":"U\u0044P"}"#,
            r#"{"src_\u0069p":"10.0.0.1","src_port":1234,"dest_ip":"2001:DB8::1","dest_port":53,"proto":"UDP"}"#,
        ] {
            assert_eq!(scanner.route(line.as_bytes()).hash, want, "{line}");
            assert_eq!(route(line).unwrap().hash, want, "{line}");
        }
        // Texts left from an escaped line do not leak into the next one.
        let other = r#"{"src_ip":"10.0.0.2","src_port":1234,"dest_ip":"2001:db8::1","dest_port":53,"proto":"UDP"}"#;
        assert_eq!(scanner.route(other.as_bytes()).hash, route(other).unwrap().hash);
        assert_ne!(scanner.route(other.as_bytes()).hash, want);
    }

    #[test]
    fn tuples_spread_evenly_over_shards() {
        for shards in [2u64, 3, 4, 7, 16] {
            let mut counts = vec![0u32; shards as usize];
            let n = 20_000u32;
            for i in 0..n {
                let src = format!("10.{}.{}.{}", i % 7, (i / 7) % 256, i % 251);
                let h = tuple_hash(src.as_bytes(), 32768 + (i as u64 % 28000), b"192.168.1.10", 443, b"TCP");
                counts[(h % shards) as usize] += 1;
            }
            // Within four standard deviations of a fair split (binomial, p = 1/shards).
            let fair = n as f64 / shards as f64;
            let sigma = (fair * (1.0 - 1.0 / shards as f64)).sqrt();
            for &c in &counts {
                assert!((c as f64 - fair).abs() < 4.0 * sigma, "{shards} shards: {counts:?}");
            }
        }
    }

    #[test]
    fn flow_id_only_and_nothing() {
        let a = route(r#"{"flow_id":9007199254740991,"x":{"src_ip":"1.1.1.1"}}"#).unwrap();
        assert_eq!(a.flow_id, 9_007_199_254_740_991);
        assert_eq!(a.hash, Some(mix(9_007_199_254_740_991)));
        assert_eq!(route(r#"{"event_type":"stats"}"#).unwrap().hash, None);
        // A flow_id of 0 is a flow: its events stay on one shard (not spread round-robin).
        let zero = r#"{"flow_id":0,"event_type":"stats"}"#;
        assert_eq!(route(zero).unwrap().hash, Some(mix(0)));
        assert_eq!(RouteScanner::default().route(zero.as_bytes()).hash, Some(mix(0)));
    }

    #[test]
    fn rejects_bad_lines() {
        assert!(matches!(route("{\"a\":1"), Err(LineError::Json(_))));
        assert_eq!(route("[1,2]"), Err(LineError::NotObject));
        // An invalid UTF-8 byte is placed where it is (simd-json says character 0).
        let mut p = RouteParser::new();
        assert_eq!(
            p.parse(b"{\"aaaaaaaaaa\":\"x\xff\"}").unwrap_err().to_string(),
            "invalid JSON: invalid UTF-8 at byte 16"
        );
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
