//! A small deterministic random source for the crate's property tests (xorshift64).

/// Advances `state` and returns a value below `n`.
pub(crate) fn below(state: &mut u64, n: u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state % n
}
