//! Line pins: an event table reads its line in place, in the worker's input batch, instead of
//! from a copy in the script's heap. The batch is *pinned* until LuaJIT has freed every line
//! block pointing into it, which the state allocator sees (`ffi_util::lua_alloc` calls
//! [`on_free`]); then it goes back to its reader.
//!
//! Why: a copy of the line was two thirds of what a script state allocated per event, so it
//! set the pace of the collector, and a state keeping a large table (a per-tuple counter's
//! hundreds of thousands of keys) paid a cycle over that table for every few thousand events'
//! copies. Without the copy the state allocates a third as much and collects a third as
//! often.
//!
//! How a block knows its batch: an *external* line block ([`ExtLine`]) holds the line header,
//! a pointer to the bytes, the batch's [`PinCell`] and its slot there, and a tag (a secret of
//! the process mixed with the block's address) by which the allocator recognises it among the
//! blocks of its size it frees. Blocks made outside a pinned batch (a copy into another state,
//! a line from a test, a timer) stay *inline* blocks, the bytes after the header, as before.
//!
//! Bounds: a script may keep an event table past its call, and its batch then stays pinned.
//! When the pinned batches of a worker pass [`PIN_FLOOR`] bytes and the heap of its states
//! (so pins at most double a large state's memory), the worker collects every state fully and copies the lines of the blocks still
//! alive (events a script keeps) out of their batches ([`LinePins::move_out`]): those blocks
//! then own their bytes, counted in their state's memory, and every batch is released.
//!
//! Invariants: a block's bytes stay valid while the block lives (a batch is released only
//! when its count of live blocks is zero, and a batch still pinned when the worker ends is
//! leaked, never freed); only the worker's thread touches its cells (states never leave their
//! worker).

use std::cell::Cell;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use mlua::ffi::{self, lua_State};

use super::ffi_util::StateMemory;
use crate::event::batch::InBatch;

/// Pinned bytes per worker below which no state is collected for the pins' sake (above it,
/// also its states' heap). Test builds use 1 MiB, so that the suite runs the collections
/// and copies out of [`LinePins::move_out`] often.
pub(crate) const PIN_FLOOR: usize = if cfg!(debug_assertions) { 1 << 20 } else { 64 << 20 };

/// Slots (line blocks) per batch; blocks past them are inline copies.
const SLOTS: usize = 4 * crate::event::batch::BATCH_EVENTS;

/// The top bit of a line header's length marks an external block.
pub(super) const EXT_FLAG: u64 = 1 << 63;

/// The payload of an external line block: the line header, then where the bytes are and what
/// pins them.
#[repr(C)]
pub(super) struct ExtLine {
    /// The line header of `proxy` (its length has [`EXT_FLAG`] set).
    pub header: super::proxy::LineHeader,
    /// The line's bytes: in a pinned batch, or (owned) a `mi_malloc` copy.
    pub bytes: *const u8,
    /// The batch's cell; null once the block owns its bytes.
    pin: *const PinCell,
    /// The state's memory, charged with an owned copy.
    mem: *const StateMemory,
    slot: u32,
    _pad: u32,
    /// `secret() ^ address of this payload`.
    tag: u64,
}

/// Size of an external block's payload.
pub(super) const EXT_SIZE: usize = std::mem::size_of::<ExtLine>();

/// Where a cell is: lent to the batch being run, pinned, or in the pool.
#[derive(Clone, Copy, PartialEq, Eq)]
enum CellState {
    Current,
    Pinned,
    Free,
}

/// What pins one batch: its live blocks and their slots.
pub(crate) struct PinCell {
    live: Cell<u32>,
    next: Cell<u32>,
    slots: Box<[Cell<*mut ExtLine>]>,
    /// The batch's bytes, `[start, end)`.
    start: Cell<usize>,
    end: Cell<usize>,
    state: Cell<CellState>,
    /// The next cell on its owner's list of emptied cells.
    next_empty: Cell<*const PinCell>,
    /// The head of that list (owned by its `LinePins`, which leaks it if it ends while cells
    /// are still pinned).
    emptied: Cell<*const Cell<*const PinCell>>,
    /// Its index in `LinePins::pinned` while pinned.
    index: Cell<usize>,
    batch: Cell<Option<(usize, InBatch)>>,
}

impl PinCell {
    fn new() -> Box<PinCell> {
        Box::new(PinCell {
            live: Cell::new(0),
            next: Cell::new(0),
            slots: (0..SLOTS).map(|_| Cell::new(std::ptr::null_mut())).collect(),
            start: Cell::new(0),
            end: Cell::new(0),
            state: Cell::new(CellState::Free),
            next_empty: Cell::new(std::ptr::null()),
            emptied: Cell::new(std::ptr::null()),
            index: Cell::new(0),
            batch: Cell::new(None),
        })
    }
}

thread_local! {
    /// The cell of the batch the worker is running (null outside `begin`..`end`).
    static CURRENT: Cell<*const PinCell> = const { Cell::new(std::ptr::null()) };
}

/// Allocation size of an external block (LuaJIT's userdata header plus [`EXT_SIZE`]); 0
/// until measured, when no block is external.
static BLOCK: AtomicUsize = AtomicUsize::new(0);
static SECRET: AtomicU64 = AtomicU64::new(0);

/// Measures [`BLOCK`] once, in a scratch state with its collector stopped.
pub(super) fn calibrate() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let mut b = [0u8; 8];
        // SAFETY: `b` is a writable buffer of its length.
        let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
        let s = u64::from_ne_bytes(b) ^ (n as u64) ^ crate::counters::latency::mono_ns() ^ 0x6A09_E667_F3BC_C908;
        SECRET.store(s | 1, Relaxed);
        let Some((l, mem)) = super::ffi_util::raw_state(usize::MAX) else {
            return;
        };
        // SAFETY: a fresh state of this thread; the userdata is zeroed before the state
        // closes (so its tag is no tag), and `mem` outlives the state.
        let size = unsafe {
            ffi::lua_gc(l, ffi::LUA_GCSTOP, 0);
            let before = mem.used();
            let p = ffi::lua_newuserdata(l, EXT_SIZE);
            std::ptr::write_bytes(p.cast::<u8>(), 0, EXT_SIZE);
            let size = mem.used() - before;
            ffi::lua_close(l);
            size
        };
        drop(mem);
        if size >= EXT_SIZE {
            BLOCK.store(size, Relaxed);
        }
    });
}

fn tag_of(p: *const ExtLine) -> u64 {
    SECRET.load(Relaxed) ^ p as u64
}

/// Pushes an external line block for `line` with header `h` (its length without the flag)
/// when `line` lies in the batch being run; `None` (nothing pushed) otherwise.
///
/// # Safety
///
/// `l` is a state of this thread, its allocator `lua_alloc`.
pub(super) unsafe fn push_external(l: *mut lua_State, line: &[u8], mut h: super::proxy::LineHeader) -> Option<*mut u8> {
    let cur = CURRENT.with(Cell::get);
    if cur.is_null() || BLOCK.load(Relaxed) == 0 {
        return None;
    }
    // SAFETY: CURRENT is a cell of this thread's `LinePins`, lent while the batch runs.
    let cell = unsafe { &*cur };
    let p = line.as_ptr() as usize;
    if p < cell.start.get() || p + line.len() > cell.end.get() || cell.next.get() as usize >= SLOTS {
        return None;
    }
    h.len |= EXT_FLAG;
    // SAFETY: `l` is the caller's state; the payload is written in full before anything can
    // read it. The allocation may run a collection step and with it finalizers, which may
    // push blocks too: the slot is taken after it.
    unsafe {
        let ud = ffi::lua_newuserdata(l, EXT_SIZE).cast::<ExtLine>();
        let mut mem: *mut c_void = std::ptr::null_mut();
        ffi::lua_getallocf(l, &mut mem);
        let slot = cell.next.get();
        let pinned = (slot as usize) < SLOTS && cell.state.get() == CellState::Current;
        let (bytes, pin) = if pinned {
            cell.slots[slot as usize].set(ud);
            cell.next.set(slot + 1);
            cell.live.set(cell.live.get() + 1);
            (line.as_ptr(), cur)
        } else {
            (own_copy(line, mem.cast()), std::ptr::null())
        };
        ud.write(ExtLine {
            header: h,
            bytes,
            pin,
            mem: mem.cast(),
            slot,
            _pad: 0,
            tag: tag_of(ud),
        });
        Some(ud.cast())
    }
}

/// A `mi_malloc` copy of `line`, charged to `mem`.
///
/// # Safety
///
/// `mem` is the memory of a live state of this thread.
unsafe fn own_copy(line: &[u8], mem: *const StateMemory) -> *const u8 {
    // SAFETY: a fresh block of `line.len()` bytes (at least one); `mem` per the contract.
    unsafe {
        let p = libmimalloc_sys::mi_malloc(line.len().max(1)).cast::<u8>();
        if p.is_null() {
            std::alloc::handle_alloc_error(std::alloc::Layout::array::<u8>(line.len().max(1)).unwrap());
        }
        std::ptr::copy_nonoverlapping(line.as_ptr(), p, line.len());
        (*mem).charge(line.len() as isize);
        p
    }
}

/// Called by the state allocator for each block it frees: an external line block unpins its
/// batch (or frees its own copy).
///
/// # Safety
///
/// `ptr` is a block of `osize` bytes the allocator is about to free.
#[inline]
pub(super) unsafe fn on_free(ptr: *mut c_void, osize: usize) {
    if osize != BLOCK.load(Relaxed) || ptr.is_null() {
        return;
    }
    // SAFETY: a userdata's payload ends its block; the tag is read before anything else is
    // trusted, and only the engine writes a payload whose tag matches.
    unsafe {
        let ext = ptr.cast::<u8>().add(osize - EXT_SIZE).cast::<ExtLine>();
        if (*ext).tag != tag_of(ext) {
            return;
        }
        (*ext).tag = 0;
        if (*ext).pin.is_null() {
            let len = (*ext).header.len & !EXT_FLAG;
            (*(*ext).mem).charge(-(len as isize));
            libmimalloc_sys::mi_free((*ext).bytes.cast_mut().cast());
            return;
        }
        let cell = &*(*ext).pin;
        cell.slots[(*ext).slot as usize].set(std::ptr::null_mut());
        let live = cell.live.get() - 1;
        cell.live.set(live);
        if live == 0 && cell.state.get() == CellState::Pinned {
            let head = &*cell.emptied.get();
            cell.next_empty.set(head.get());
            head.set(cell);
        }
    }
}

/// A worker's pinned batches.
#[derive(Default)]
pub(crate) struct LinePins {
    /// Pinned cells whose last block was freed, for `release` (a list through `next_empty`).
    emptied: Box<Cell<*const PinCell>>,
    /// Cells of pinned batches (each owned here as a raw `Box`).
    pinned: Vec<*mut PinCell>,
    /// Boxed: a cell keeps its address from pool to current to pinned (blocks and
    /// `CURRENT` point to it).
    #[allow(clippy::vec_box)]
    pool: Vec<Box<PinCell>>,
    current: Option<Box<PinCell>>,
    /// Data capacity of the pinned batches.
    bytes: usize,
    /// Full collections made for the pins, and lines copied out of their batches.
    pub collections: u64,
    pub moved: u64,
}

impl LinePins {
    /// Lends a cell for a batch whose lines are `data`, until [`end`](Self::end).
    pub(crate) fn begin(&mut self, data: &[u8]) {
        let cell = self.pool.pop().unwrap_or_else(PinCell::new);
        cell.live.set(0);
        cell.next.set(0);
        cell.start.set(data.as_ptr() as usize);
        cell.end.set(data.as_ptr() as usize + data.len());
        cell.state.set(CellState::Current);
        cell.emptied.set(&*self.emptied);
        CURRENT.with(|c| c.set(&*cell));
        self.current = Some(cell);
    }

    /// Ends the batch begun last: `Some(batch)` when no block reads its lines (it can go back
    /// to its reader), else `None` (kept until its blocks are freed).
    pub(crate) fn end(&mut self, input: usize, batch: InBatch) -> Option<InBatch> {
        CURRENT.with(|c| c.set(std::ptr::null()));
        let cell = self.current.take()?;
        if cell.live.get() == 0 {
            cell.state.set(CellState::Free);
            self.pool.push(cell);
            return Some(batch);
        }
        cell.state.set(CellState::Pinned);
        cell.index.set(self.pinned.len());
        self.bytes += batch.data.capacity();
        cell.batch.set(Some((input, batch)));
        self.pinned.push(Box::into_raw(cell));
        None
    }

    /// Whether the pinned batches are past their bound, given the heap of the worker's states.
    pub(crate) fn over(&self, heap: usize) -> bool {
        self.bytes > PIN_FLOOR && self.bytes > heap
    }

    /// Bytes of the pinned batches.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Releases the batches whose blocks were all freed, handing each to `give` (input, batch).
    pub(crate) fn release(&mut self, mut give: impl FnMut(usize, InBatch)) {
        let mut e = self.emptied.replace(std::ptr::null());
        while !e.is_null() {
            // SAFETY: only this owner's pinned cells go on its list, once each (a pinned
            // cell's count only falls), and `pinned` owns them until `unpin`.
            let next = unsafe { (*e).next_empty.get() };
            if let Some((input, batch)) = self.unpin(e.cast_mut()) {
                give(input, batch);
            }
            e = next;
        }
    }

    /// Takes a pinned cell out of `pinned` into the pool; returns its batch.
    fn unpin(&mut self, cell: *mut PinCell) -> Option<(usize, InBatch)> {
        // SAFETY: `cell` is in `pinned`, which owns it (made by `Box::into_raw`).
        let cell = unsafe { Box::from_raw(cell) };
        let i = cell.index.get();
        debug_assert!(std::ptr::eq(self.pinned[i], &*cell));
        self.pinned.swap_remove(i);
        if let Some(&moved) = self.pinned.get(i) {
            // SAFETY: an owned cell of `pinned`.
            unsafe { (*moved).index.set(i) };
        }
        let got = cell.batch.take();
        cell.state.set(CellState::Free);
        if let Some((_, b)) = &got {
            self.bytes -= b.data.capacity();
        }
        self.pool.push(cell);
        #[cfg(debug_assertions)]
        let got = got.map(|(i, mut b)| {
            // Released lines are overwritten in test builds: a block still reading them would
            // show it.
            b.data.fill(b'#');
            (i, b)
        });
        got
    }

    /// Copies the lines of every block still alive out of the pinned batches (after a full
    /// collection of each state, those are events a script keeps) and releases them all.
    pub(crate) fn move_out(&mut self, mut give: impl FnMut(usize, InBatch)) {
        self.release(&mut give);
        while let Some(&cell) = self.pinned.last() {
            // SAFETY: an owned cell of `pinned`; its slots hold the live blocks of this
            // thread's states, which are not running.
            unsafe {
                for s in (*cell).slots.iter().take((*cell).next.get() as usize) {
                    let ext = s.replace(std::ptr::null_mut());
                    if ext.is_null() {
                        continue;
                    }
                    let len = ((*ext).header.len & !EXT_FLAG) as usize;
                    let line = std::slice::from_raw_parts((*ext).bytes, len);
                    (*ext).bytes = own_copy(line, (*ext).mem);
                    (*ext).pin = std::ptr::null();
                    self.moved += 1;
                }
                (*cell).live.set(0);
            }
            if let Some((input, batch)) = self.unpin(cell) {
                give(input, batch);
            }
        }
    }
}

impl Drop for LinePins {
    /// Batches still pinned (a state left open past its worker) are leaked with their cells:
    /// their blocks may still be read.
    fn drop(&mut self) {
        self.release(|_, _| {});
        CURRENT.with(|c| {
            if self.current.as_deref().is_some_and(|cur| std::ptr::eq(c.get(), cur)) {
                c.set(std::ptr::null());
            }
        });
        let mut leaked = !self.pinned.is_empty();
        if let Some(cur) = self.current.take()
            && cur.live.get() > 0
        {
            leaked = true;
            std::mem::forget(cur);
        }
        self.pinned.clear();
        if leaked {
            // Their frees still reach the list's head.
            std::mem::forget(std::mem::take(&mut self.emptied));
        }
    }
}
