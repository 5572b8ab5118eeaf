//! Events as they travel the pipeline: Suricata field names, routing keys and JSON scanning.
//!
//! An event is the raw bytes of one EVE line. The reader extracts only what routing needs
//! ([`flow_key::RouteScanner`], a walk over the top-level members); each worker validates the
//! line in full ([`validate`]) before a script sees it, and looks fields up lazily with the
//! structural scanner in [`scan`], so no field that no script reads is ever decoded.

pub(crate) mod batch;
pub(crate) mod flow_key;
pub(crate) mod scan;
#[cfg(test)]
mod scan_props;
pub(crate) mod timestamp;
pub(crate) mod validate;

/// Suricata EVE field names, spelled as in Suricata's schema.
pub(crate) mod fields {
    pub(crate) const SRC_IP: &str = "src_ip";
    pub(crate) const SRC_PORT: &str = "src_port";
    pub(crate) const DEST_IP: &str = "dest_ip";
    pub(crate) const DEST_PORT: &str = "dest_port";
    pub(crate) const PROTO: &str = "proto";
    pub(crate) const FLOW_ID: &str = "flow_id";
    pub(crate) const EVENT_TYPE: &str = "event_type";
}

/// Where one event sits in its input, carried with it to the outputs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventMeta {
    /// Position among the lines of its input that are not blank, from 0; outputs merge by it
    /// (a line its worker finds invalid ends with no record but its report).
    pub seq: u64,
    /// 1-based line number in the input (blank and invalid lines count).
    pub line_no: u64,
    /// Suricata's flow_id, 0 when absent.
    pub flow_id: u64,
    /// Byte offset of the line in its input (for reports), and its length there (a `\r`
    /// before the newline included; for a line too long, the length skipped).
    pub offset: u64,
    pub raw_len: u64,
    /// Byte range of the line inside its batch buffer (of a line too long: the text of its
    /// report).
    pub start: u32,
    pub end: u32,
    /// The top-level keys' bloom bits: a lookup of a key not in it skips the scan.
    pub keys: KeyBloom,
    /// Whether a top-level key occurs twice (see `scan::has_duplicate_keys`).
    pub dup_keys: bool,
    /// Where the worker's validator kept the line's top-level members (`LineCheck::members_mut`;
    /// 0: none, lookups scan the line). Set by the worker, for its current batch only.
    pub members: u32,
    /// The line was longer than the maximum and skipped: not an event, only its report
    /// travels (through its worker, so that reports keep the input's order).
    pub too_long: bool,
}

/// Two 64-bit bloom filters of an object's keys: each key sets one bit of each (its
/// [`key_bits`]), so a key whose two bits are not both set is not there. With one filter, a
/// lookup of a key an event lacks (a field a script adds, say) would scan the whole line for
/// about one event in five of Suricata's (15 keys of 64 bits); with two, one in twenty.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyBloom(pub u64, pub u64);

impl KeyBloom {
    /// The filter of an object whose keys are not known: every key may be there.
    pub const UNKNOWN: KeyBloom = KeyBloom(!0, !0);

    /// Adds a key given by its bits.
    #[inline]
    pub fn add(&mut self, (a, b): (u64, u64)) {
        self.0 |= a;
        self.1 |= b;
    }

    /// Whether the key with these bits may be in the object.
    #[inline]
    pub fn may_contain(&self, (a, b): (u64, u64)) -> bool {
        self.0 & a != 0 && self.1 & b != 0
    }
}

/// Two independent bits of a key, one for each filter of a [`KeyBloom`] (from the top and
/// the middle of a word-wise hash: a few cycles for a key of Suricata's, where a byte-wise
/// hash took one multiply per byte on every top-level key of every event).
#[inline]
pub(crate) fn key_bits(key: &[u8]) -> (u64, u64) {
    let h = hash_words(0x811c_9dc5, key);
    (1u64 << (h >> 58), 1u64 << ((h >> 20) & 63))
}

/// A hash of bytes eight at a time (a multiply and a shift per word), seeded; the last
/// 1-7 bytes are read as two overlapping 4-byte words (or three single bytes), never copied.
#[inline]
pub(crate) fn hash_words(mut h: u64, bytes: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().unwrap_or_default());
        h = (h ^ w).wrapping_mul(K);
        h ^= h >> 29;
    }
    let r = chunks.remainder();
    let n = r.len();
    let last = if n >= 4 {
        let lo = u32::from_le_bytes(r[..4].try_into().unwrap_or_default());
        let hi = u32::from_le_bytes(r[n - 4..].try_into().unwrap_or_default());
        lo as u64 | (hi as u64) << 32
    } else if n > 0 {
        r[0] as u64 | (r[n / 2] as u64) << 8 | (r[n - 1] as u64) << 16
    } else {
        0
    };
    h = (h ^ last ^ (bytes.len() as u64) << 56).wrapping_mul(K);
    h ^ (h >> 29)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key added is reported as maybe there; of keys not added, with 15 in the filter (a
    /// Suricata event's top level), few pass: one filter alone would let about 21% through.
    #[test]
    fn key_bloom_keeps_its_keys_and_rejects_most_others() {
        let mut state = 7u64;
        let mut below = |n: u64| crate::test_rng::below(&mut state, n);
        let pool: Vec<String> = (0..400).map(|i| format!("field_{i}_{}", below(1000))).collect();
        let (mut absent, mut passed) = (0u32, 0u32);
        for _ in 0..200 {
            let mut bloom = KeyBloom::default();
            let chosen: Vec<usize> = (0..15).map(|_| below(pool.len() as u64) as usize).collect();
            for &c in &chosen {
                bloom.add(key_bits(pool[c].as_bytes()));
            }
            for &c in &chosen {
                assert!(bloom.may_contain(key_bits(pool[c].as_bytes())), "{}", pool[c]);
            }
            for (i, k) in pool.iter().enumerate().take(100) {
                if !chosen.contains(&i) {
                    absent += 1;
                    passed += bloom.may_contain(key_bits(k.as_bytes())) as u32;
                }
            }
        }
        let rate = passed as f64 / absent as f64;
        assert!(rate < 0.10, "{passed} of {absent} absent keys pass ({rate:.3})");
        assert!(KeyBloom::UNKNOWN.may_contain(key_bits(b"anything")));
    }
}
