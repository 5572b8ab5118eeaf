//! The member cache: per worker, the member lists of the objects scripts read, keyed by
//! (event id, object offset), scanned incrementally; and the record of which nested-object
//! spans the engine handed out, so that a span a script forged is refused. Also the buffer
//! unescaped string values are handed out of (`ValueBuf`).

use crate::event::scan::{self, Member};

/// One cached object: the members scanned so far and where the scan stopped.
struct CacheSlot {
    id: f64,
    start: usize,
    members: Vec<Member>,
    /// Position of the next member to scan; `None` once the whole object is scanned.
    resume: Option<usize>,
    /// Bloom bits of the object's keys (all set when unknown).
    keys: crate::event::KeyBloom,
    /// Whether a key occurs twice in the object (`None` until known).
    dup_keys: Option<bool>,
    /// Index in `members` after the last member found. Scripts tend to read fields in the
    /// order they appear (the 5-tuple, say), so when the object is known to have no duplicate
    /// key (any match is then the only one) the search starts there.
    hint: usize,
    /// End of the object when its span is known to be one the engine handed out (or was
    /// checked against the line's structure); `usize::MAX` until then.
    checked_end: usize,
}

/// Members from which an object read whole is checked for duplicate keys, for the hint.
const WIDE_OBJECT: usize = 32;

/// Slots of the member cache (a power of two): enough for a full pipelining window of events.
const CACHE_SLOTS: usize = 1 << CACHE_BITS;
const CACHE_BITS: u32 = 8;

/// A small direct-mapped cache of object member lists, keyed by (event id, object offset).
/// Scans are incremental: a lookup reads members only up to the one it wants, so reading
/// `src_ip` never walks the nested objects that Suricata puts after it.
pub struct MemberCache {
    slots: Vec<CacheSlot>,
    /// The member `next` handed out last: (event id, object offset, index), so that the next
    /// step of a `pairs` loop resumes there instead of searching its key from the start.
    pub(crate) walk: (f64, usize, usize),
    /// Lookups of an event's top level that had to search its members (the key filter let
    /// them through), for the worker's choice of recording members at validation.
    pub(crate) finds: u64,
}

impl Default for MemberCache {
    fn default() -> Self {
        MemberCache {
            slots: (0..CACHE_SLOTS)
                .map(|_| CacheSlot {
                    id: -1.0,
                    start: 0,
                    members: Vec::with_capacity(32),
                    resume: None,
                    keys: crate::event::KeyBloom::UNKNOWN,
                    dup_keys: None,
                    hint: 0,
                    checked_end: usize::MAX,
                })
                .collect(),
            walk: (-1.0, 0, 0),
            finds: 0,
        }
    }
}

/// Compares a raw JSON key with `k`, unescaping into `scratch` when needed.
pub(crate) fn key_matches(line: &[u8], m: &Member, k: &[u8], scratch: &mut Vec<u8>) -> bool {
    let raw = &line[m.key_start as usize..m.key_end as usize];
    if !m.key_escaped {
        raw == k
    } else {
        scan::unescape(raw, scratch);
        scratch.as_slice() == k
    }
}

impl MemberCache {
    fn slot(&mut self, id: f64, start: usize, line: &[u8]) -> &mut CacheSlot {
        Self::slot_in(&mut self.slots, id, start, line)
    }

    fn slot_in<'a>(slots: &'a mut [CacheSlot], id: f64, start: usize, line: &[u8]) -> &'a mut CacheSlot {
        // Fibonacci hashing of the id's bits and the offset: the top bits of the product.
        let h = ((id.to_bits() ^ start as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - CACHE_BITS)) as usize;
        let slot = &mut slots[h];
        if slot.id != id || slot.start != start {
            slot.id = id;
            slot.start = start;
            slot.members.clear();
            slot.resume = scan::first_member(line, start);
            slot.keys = crate::event::KeyBloom::UNKNOWN;
            slot.dup_keys = None;
            slot.hint = 0;
            slot.checked_end = usize::MAX;
        }
        slot
    }

    /// Records that the engine handed out a nested table for the object at `start..end`.
    pub fn mark_span(&mut self, id: f64, start: usize, end: usize, line: &[u8]) {
        self.slot(id, start, line).checked_end = end;
    }

    /// Whether `start..end` is exactly an object value of the JSON value at `root` of `line`:
    /// known when the engine handed it out recently, else checked by walking the structure
    /// from the root (a span forged by a script fails here instead of reading the middle of
    /// a string).
    pub fn span_is_valid(&mut self, id: f64, root: usize, start: usize, end: usize, line: &[u8]) -> bool {
        if start >= end || end > line.len() {
            return false;
        }
        if self.slot(id, start, line).checked_end == end {
            return true;
        }
        let ok = scan::is_object_at(line, root, start, end);
        if ok {
            self.slot(id, start, line).checked_end = end;
        }
        ok
    }

    /// Records what validation learned of an event's top level: its keys' bloom bits,
    /// whether a key repeats, and its members when recorded (taken by swapping vectors, the
    /// given one left empty; without them, members are scanned as lookups need them).
    pub fn prime(
        &mut self,
        id: f64,
        start: usize,
        line: &[u8],
        keys: crate::event::KeyBloom,
        dup_keys: bool,
        members: Option<&mut Vec<Member>>,
    ) {
        let slot = self.slot(id, start, line);
        slot.keys = keys;
        slot.dup_keys = Some(dup_keys);
        if let Some(m) = members.filter(|m| !m.is_empty())
            && slot.members.is_empty()
        {
            std::mem::swap(&mut slot.members, m);
            m.clear();
            slot.resume = None;
        }
    }

    /// Whether a key occurs twice in the object at `start` (known from the reader for an
    /// event's top level; found by a full scan otherwise).
    pub fn has_dup_keys(&mut self, id: f64, start: usize, line: &[u8]) -> bool {
        self.slot(id, start, line).dup_keys(line)
    }

    /// Every member of the object at `start`.
    pub fn members(&mut self, id: f64, start: usize, line: &[u8]) -> &[Member] {
        let slot = self.slot(id, start, line);
        while slot.scan_next(line).is_some() {}
        &slot.members
    }

    /// The member named `k` of the object at `start`, scanning no further than needed.
    pub fn find(&mut self, id: f64, start: usize, line: &[u8], k: &[u8], scratch: &mut Vec<u8>) -> Option<Member> {
        let slot = Self::slot_in(&mut self.slots, id, start, line);
        if !slot.keys.may_contain(crate::event::key_bits(k)) {
            return None;
        }
        // Counted for an event's top level (the only slots `prime` gives a key filter).
        self.finds += u64::from(slot.keys != crate::event::KeyBloom::UNKNOWN);
        // A wide object whose duplicates nobody checked yet (a nested one): scanned whole and
        // checked once, so that its lookups go by the hint too instead of from its start
        // (reading every member of a wide object was quadratic).
        if slot.members.len() > WIDE_OBJECT {
            slot.dup_keys(line);
        }
        let n = slot.members.len();
        if slot.dup_keys == Some(false) {
            // No duplicates: from the member found last (read again, as `pairs` then `msg[k]`
            // do) on, the next unscanned one, the rest.
            let after = slot.hint.min(n);
            let h = after.saturating_sub(1);
            if let Some(j) = (h..n).find(|&j| key_matches(line, &slot.members[j], k, scratch)) {
                slot.hint = j + 1;
                return Some(slot.members[j]);
            }
            if after == n
                && after > 0
                && let Some(m) = slot.scan_next(line)
                && key_matches(line, &m, k, scratch)
            {
                slot.hint = n + 1;
                return Some(m);
            }
            if let Some(j) = (0..h).find(|&j| key_matches(line, &slot.members[j], k, scratch)) {
                slot.hint = j + 1;
                return Some(slot.members[j]);
            }
        } else if let Some(m) = slot.members.iter().find(|m| key_matches(line, m, k, scratch)) {
            return Some(*m);
        }
        while let Some(m) = slot.scan_next(line) {
            if key_matches(line, &m, k, scratch) {
                slot.hint = slot.members.len();
                return Some(m);
            }
        }
        None
    }
}

impl CacheSlot {
    /// Whether a key occurs twice in the object (known from the reader for an event's top
    /// level; found once by a full scan otherwise).
    fn dup_keys(&mut self, line: &[u8]) -> bool {
        if let Some(d) = self.dup_keys {
            return d;
        }
        while self.scan_next(line).is_some() {}
        let d = scan::has_duplicate_keys(line, &self.members);
        self.dup_keys = Some(d);
        d
    }

    /// Reads the next member not read yet and adds it to `members` (`None` at the end).
    fn scan_next(&mut self, line: &[u8]) -> Option<Member> {
        let i = self.resume?;
        match scan::next_member(line, i) {
            Some((m, next)) => {
                self.members.push(m);
                self.resume = next;
                Some(m)
            }
            None => {
                self.resume = None;
                None
            }
        }
    }
}

/// Where the unescaped string values `access::df_find` hands to the Lua side live (`FieldOut::ptr`).
/// The Lua side copies the bytes after the call, and a finalizer's read can come in between
/// (see `access::stamped`). That read may overwrite the bytes (the stamp tells the Lua side), but it
/// never frees the buffer the pointer is into: a buffer too small for a value is kept, not
/// freed, and a new one made at least twice as large, so that the kept ones add up to less
/// than the one in use.
#[derive(Default)]
pub(crate) struct ValueBuf {
    cur: Vec<u8>,
    kept: Vec<Vec<u8>>,
}

impl ValueBuf {
    /// The JSON string body `raw` unescaped, in this buffer.
    pub(crate) fn unescape(&mut self, raw: &[u8]) -> &[u8] {
        // An unescaped string is never longer than its escaped form: `unescape` does not
        // grow the buffer past this.
        let need = raw.len() + 8;
        if self.cur.capacity() < need {
            let bigger = Vec::with_capacity(need.max(2 * self.cur.capacity()).max(256));
            let old = std::mem::replace(&mut self.cur, bigger);
            if old.capacity() > 0 {
                self.kept.push(old);
            }
        }
        scan::unescape(raw, &mut self.cur);
        &self.cur
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whatever the order of lookups, the cache finds what a search from the first member
    /// finds: with the hint (an object primed as having no duplicate key) and without it.
    #[test]
    fn member_cache_finds_what_a_linear_search_finds() {
        let mut r = 0x853c_49e6_748f_ea9bu64;
        let mut next = |n: u64| crate::test_rng::below(&mut r, n);
        let mut cache = MemberCache::default();
        let mut scratch = Vec::new();
        for round in 0..2000 {
            // Small objects, and wide ones (checked for duplicates once read past WIDE_OBJECT).
            let n_keys = 1 + next(if round % 4 < 2 { 12 } else { 3 * WIDE_OBJECT as u64 }) as usize;
            // Objects that are not primed may repeat keys: the first occurrence must win.
            let keys: Vec<String> = (0..n_keys)
                .map(|i| {
                    if round % 2 == 1 {
                        format!("k{}", next(n_keys as u64))
                    } else {
                        format!("k{i}")
                    }
                })
                .collect();
            let mut line = String::from("{");
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    line.push(',');
                }
                line.push_str(&format!("\"{k}\":{{\"v\":{i}}}"));
            }
            line.push('}');
            let b = line.as_bytes();
            let id = round as f64;
            let mut all = Vec::new();
            scan::object_members(b, 0, &mut all);
            let mut bits = crate::event::KeyBloom::default();
            for k in &keys {
                bits.add(crate::event::key_bits(k.as_bytes()));
            }
            // Half the objects primed by "the reader" (no duplicate keys), half unknown.
            if round % 2 == 0 {
                cache.prime(id, 0, b, bits, false, None);
            }
            let mut last = String::new();
            for _ in 0..40 {
                // Now and then the key just read again (as `pairs` then `msg[k]` do).
                let want = if next(4) == 0 && !last.is_empty() {
                    last.clone()
                } else {
                    format!("k{}", next(n_keys as u64 + 2))
                };
                last = want.clone();
                let expect = all
                    .iter()
                    .find(|m| key_matches(b, m, want.as_bytes(), &mut scratch))
                    .copied();
                let got = cache.find(id, 0, b, want.as_bytes(), &mut scratch);
                assert_eq!(got, expect, "{line} {want}");
            }
        }
    }

    /// A value handed out stays in a live buffer while later values need larger ones: the
    /// Lua side may copy it after a finalizer's read made another answer.
    #[test]
    fn unescaped_values_outlive_the_reads_after_them() {
        let mut v = ValueBuf::default();
        let mut handed = Vec::new();
        for n in [1usize, 3, 200, 1000, 5000, 5000, 70_000] {
            let got = v.unescape("a\\nb".repeat(n).as_bytes());
            assert_eq!(got, "a\nb".repeat(n).as_bytes());
            handed.push(got.as_ptr_range());
            let held: Vec<(usize, usize)> = v
                .kept
                .iter()
                .chain([&v.cur])
                .map(|b| (b.as_ptr() as usize, b.as_ptr() as usize + b.capacity()))
                .collect();
            for r in &handed {
                let (start, end) = (r.start as usize, r.end as usize);
                assert!(
                    held.iter().any(|&(a, b)| a <= start && end <= b),
                    "an answer's bytes are in a buffer still held"
                );
            }
        }
        let kept: usize = v.kept.iter().map(|b| b.capacity()).sum();
        assert!(kept <= v.cur.capacity(), "{kept} kept beside {}", v.cur.capacity());
    }
}
