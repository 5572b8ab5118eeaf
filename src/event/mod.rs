//! Events as they travel the pipeline: Suricata field names, routing keys and JSON scanning.
//!
//! An event is the raw bytes of one EVE line. The reader validates it with simd-json and
//! extracts only what routing needs ([`flow_key`]); the workers look fields up lazily with the
//! structural scanner in [`scan`], so no field that no script reads is ever decoded.

pub mod flow_key;
pub mod scan;
pub mod timestamp;

/// Suricata EVE field names, spelled as in Suricata's schema.
pub mod fields {
    pub const SRC_IP: &str = "src_ip";
    pub const SRC_PORT: &str = "src_port";
    pub const DEST_IP: &str = "dest_ip";
    pub const DEST_PORT: &str = "dest_port";
    pub const PROTO: &str = "proto";
    pub const FLOW_ID: &str = "flow_id";
    pub const EVENT_TYPE: &str = "event_type";
}

/// Where one event sits in its input, carried with it to the outputs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventMeta {
    /// Position among the valid events of its input, from 0; outputs merge by it.
    pub seq: u64,
    /// 1-based line number in the input (blank and invalid lines count).
    pub line_no: u64,
    /// Suricata's flow_id, 0 when absent.
    pub flow_id: u64,
    /// Byte range of the line inside its batch buffer.
    pub start: u32,
    pub end: u32,
    /// One bit per top-level key ([`key_bit`]): a lookup whose bit is clear skips the scan.
    pub keys: u64,
    /// Whether a top-level key occurs twice (see `scan::has_duplicate_keys`).
    pub dup_keys: bool,
}

/// The bit of a top-level key in [`EventMeta::keys`].
#[inline]
pub fn key_bit(key: &[u8]) -> u64 {
    key_bits(key).0
}

/// Two independent bits of a key: the first is [`key_bit`]; the reader keeps a second bloom
/// of the other to tell likely duplicate keys from mere collisions cheaply.
#[inline]
pub fn key_bits(key: &[u8]) -> (u64, u64) {
    let mut h: u32 = 0x811c_9dc5;
    for &b in key {
        h = (h ^ b as u32).wrapping_mul(0x0100_0193);
    }
    (1u64 << ((h ^ (h >> 15)) & 63), 1u64 << ((h >> 21) & 63))
}
