//! The memory accounting of one script state, shared by its allocator (`ffi_util::lua_alloc`)
//! and the line pins (`pins`), which charge it with the lines they copy out.

use std::cell::Cell;

/// Memory accounting of one script state: the bytes its allocator handed out and the limit
/// that applies while the script's own code runs (see `boundary::TimeMark`).
pub(crate) struct StateMemory {
    pub(super) used: Cell<usize>,
    pub(super) limit: usize,
    /// Whether the state's JIT compiler is off because the state is near its limit.
    pub(super) jit_off: Cell<bool>,
}

impl StateMemory {
    /// Bytes in use.
    pub(crate) fn used(&self) -> usize {
        self.used.get()
    }

    /// Adds `bytes` held for the state outside its blocks (a line copied out of a pinned
    /// batch, see `pins`), or takes them back (negative).
    pub(crate) fn charge(&self, bytes: isize) {
        self.used.set(self.used.get().wrapping_add_signed(bytes));
    }
}
