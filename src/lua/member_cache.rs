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
        // A key that occurs twice is read at its last occurrence, as lua-cjson (the original's
        // decoder) and most JSON readers give it. An object not known to have none (a nested
        // one) is scanned whole and searched from its end; a wide one is checked for
        // duplicates once, so that its lookups go by the hint (reading every member of a wide
        // object was quadratic).
        // A wide object is checked for duplicates once, so that its lookups go by the hint
        // (searching every member of a wide object from its start was quadratic).
        if slot.dup_keys.is_none() && slot.members.len() > WIDE_OBJECT {
            slot.dup_keys(line);
        }
        if slot.dup_keys == Some(false) {
            return slot.find_unique(line, k, scratch);
        }
        if slot.dup_keys.is_none() && slot.resume.is_some() {
            // Not scanned whole yet: the first occurrence, which is the last when the text
            // after it cannot hold the key again.
            let first = match slot.members.iter().find(|m| key_matches(line, m, k, scratch)) {
                Some(m) => Some(*m),
                None => std::iter::from_fn(|| slot.scan_next(line)).find(|m| key_matches(line, m, k, scratch)),
            };
            let m = first?;
            let end = slot.checked_end.min(line.len());
            if cannot_hold_key(line.get(m.val_end as usize..end).unwrap_or_default(), k) {
                return Some(m);
            }
        }
        while slot.scan_next(line).is_some() {}
        if slot.members.len() > WIDE_OBJECT && !slot.dup_keys(line) {
            return slot.find_unique(line, k, scratch);
        }
        slot.members
            .iter()
            .rev()
            .find(|m| key_matches(line, m, k, scratch))
            .copied()
    }
}

/// Whether JSON text `rest` surely holds no key `k`: a key is written either as its bytes
/// between quotes or with an escape, so `k` with no byte that must be escaped, no backslash in
/// `rest` and no `"k"` in it say so. Cheaper than scanning the members of `rest` when it
/// holds values to skip, and sound wherever `rest` ends (a false alarm only costs the scan).
fn cannot_hold_key(rest: &[u8], k: &[u8]) -> bool {
    let Some(&first) = k.first() else { return false };
    if k.iter().any(|&c| c == b'"' || c == b'\\' || c < 0x20) {
        return false;
    }
    let key_at = |q: usize| rest.get(q + 1..q + 1 + k.len()) == Some(k) && rest.get(q + 1 + k.len()) == Some(&b'"');
    let mut i = 0;
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{__m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8};
        // Sixteen bytes per step: the backslashes, and the quotes followed by k's first byte.
        while i + 17 <= rest.len() {
            // SAFETY: SSE2 is part of the x86_64 baseline; the 16 bytes at `i` and those at
            // `i + 1` lie inside `rest` (checked by the loop condition).
            let (quote_first, backslash) = unsafe {
                let a = _mm_loadu_si128(rest.as_ptr().add(i).cast::<__m128i>());
                let b = _mm_loadu_si128(rest.as_ptr().add(i + 1).cast::<__m128i>());
                let q = _mm_movemask_epi8(_mm_cmpeq_epi8(a, _mm_set1_epi8(b'"' as i8)));
                let f = _mm_movemask_epi8(_mm_cmpeq_epi8(b, _mm_set1_epi8(first as i8)));
                (q & f, _mm_movemask_epi8(_mm_cmpeq_epi8(a, _mm_set1_epi8(b'\\' as i8))))
            };
            if backslash != 0 {
                return false;
            }
            let mut c = quote_first as u32;
            while c != 0 {
                if key_at(i + c.trailing_zeros() as usize) {
                    return false;
                }
                c &= c - 1;
            }
            i += 16;
        }
    }
    while i < rest.len() {
        match rest[i] {
            b'\\' => return false,
            b'"' if key_at(i) => return false,
            _ => {}
        }
        i += 1;
    }
    true
}

/// The member named `k` of the object starting at `start`, scanned from the line without a
/// cache: the last occurrence of a key that occurs twice, as [`MemberCache::find`] gives it.
pub(crate) fn find_uncached(line: &[u8], start: usize, k: &[u8], scratch: &mut Vec<u8>) -> Option<Member> {
    let mut at = scan::first_member(line, start);
    let mut found = None;
    while let Some(i) = at {
        let Some((m, next)) = scan::next_member(line, i) else {
            break;
        };
        if key_matches(line, &m, k, scratch) {
            found = Some(m);
        }
        at = next;
    }
    found
}

impl CacheSlot {
    /// The member named `k` of an object known to have no duplicate key (any match is then
    /// the only one), scanning no further than needed.
    #[inline(always)]
    fn find_unique(&mut self, line: &[u8], k: &[u8], scratch: &mut Vec<u8>) -> Option<Member> {
        // From the member found last (read again, as `pairs` then `msg[k]` do) on, the next
        // unscanned one, the rest.
        let n = self.members.len();
        let after = self.hint.min(n);
        let h = after.saturating_sub(1);
        if let Some(j) = (h..n).find(|&j| key_matches(line, &self.members[j], k, scratch)) {
            self.hint = j + 1;
            return Some(self.members[j]);
        }
        if after == n
            && after > 0
            && let Some(m) = self.scan_next(line)
            && key_matches(line, &m, k, scratch)
        {
            self.hint = n + 1;
            return Some(m);
        }
        if let Some(j) = (0..h).find(|&j| key_matches(line, &self.members[j], k, scratch)) {
            self.hint = j + 1;
            return Some(self.members[j]);
        }
        while let Some(m) = self.scan_next(line) {
            if key_matches(line, &m, k, scratch) {
                self.hint = self.members.len();
                return Some(m);
            }
        }
        None
    }

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

    /// Whatever the order of lookups, the cache finds what a search of every member finds
    /// (the last occurrence of a repeated key): with the hint (an object primed as having no
    /// duplicate key), primed as having one, and not primed; and so does `find_uncached`.
    #[test]
    fn member_cache_finds_what_a_linear_search_finds() {
        let mut r = 0x853c_49e6_748f_ea9bu64;
        let mut next = |n: u64| crate::test_rng::below(&mut r, n);
        let mut cache = MemberCache::default();
        let mut scratch = Vec::new();
        for round in 0..2000 {
            // Small objects and wide ones.
            let n_keys = 1 + next(if round % 4 < 2 { 12 } else { 3 * WIDE_OBJECT as u64 }) as usize;
            // Odd rounds may repeat keys: the last occurrence must win.
            let keys: Vec<String> = (0..n_keys)
                .map(|i| {
                    if round % 2 == 1 {
                        format!("k{}", next(n_keys as u64))
                    } else {
                        format!("k{i}")
                    }
                })
                .collect();
            // Now and then a key spelled with an escape, or a value holding another key's
            // text (which a look for the key's text after its first occurrence must not
            // take for a key, nor miss one for).
            let mut line = String::from("{");
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    line.push(',');
                }
                let spelled = if next(8) == 0 {
                    k.replacen('k', "\\u006b", 1)
                } else {
                    k.clone()
                };
                match next(4) {
                    0 => line.push_str(&format!("\"{spelled}\":\"k{}\"", next(n_keys as u64))),
                    1 => line.push_str(&format!("\"{spelled}\":[\"k{}\",{{\"k{}\":1}}]", next(4), next(4))),
                    _ => line.push_str(&format!("\"{spelled}\":{{\"v\":{i}}}")),
                }
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
            // Half the objects primed by "the reader" (no duplicate keys), a quarter primed
            // with what a check of their keys says, a quarter unknown (as nested ones are).
            if round % 2 == 0 {
                cache.prime(id, 0, b, bits, false, None);
            } else if round % 4 == 3 {
                cache.prime(id, 0, b, bits, scan::has_duplicate_keys(b, &all), None);
            } else if next(2) == 0 {
                // Unknown, its span known (a nested table handed out).
                cache.mark_span(id, 0, b.len(), b);
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
                    .rev()
                    .find(|m| key_matches(b, m, want.as_bytes(), &mut scratch))
                    .copied();
                let got = cache.find(id, 0, b, want.as_bytes(), &mut scratch);
                assert_eq!(got, expect, "{line} {want}");
                assert_eq!(find_uncached(b, 0, want.as_bytes(), &mut scratch), expect);
            }
        }
    }

    /// The look for a key after its first occurrence agrees with a byte-by-byte search at every
    /// offset (the quote and the key's first byte on either side of a 16-byte step, the
    /// backslash anywhere, the tail).
    #[test]
    fn a_key_is_found_in_the_text_after_it_wherever_it_lies() {
        let mut r = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| crate::test_rng::below(&mut r, n);
        let pieces: [&[u8]; 8] = [b"\"", b"ab", b"a", b"b", b"x", b":", b"\\", b","];
        for _ in 0..20_000 {
            let k: &[u8] = [&b"ab"[..], b"a", b"b\"", b""][next(4) as usize];
            let mut rest = Vec::new();
            for _ in 0..next(30) {
                let p = if next(6) == 0 { b"\\" } else { pieces[next(8) as usize] };
                rest.extend_from_slice(if p == b"\\" && next(4) != 0 { b"y" } else { p });
            }
            let quoted = [&b"\""[..], k, b"\""].concat();
            let naive = !k.is_empty()
                && !k.iter().any(|&c| c == b'"' || c == b'\\' || c < 0x20)
                && !rest.contains(&b'\\')
                && !rest.windows(quoted.len()).any(|w| w == quoted);
            assert_eq!(
                cannot_hold_key(&rest, k),
                naive,
                "{:?} in {:?}",
                String::from_utf8_lossy(k),
                String::from_utf8_lossy(&rest)
            );
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
