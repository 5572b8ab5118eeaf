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
//! When the pinned batches of a worker pass [`PIN_FLOOR`] bytes (or a quarter of its states'
//! memory limit, if smaller) and the heap of its states, the worker hurries each state's collector through three cycles, a step per
//! batch (a full collection would stop the worker, and the reader and other workers with it),
//! then copies the lines of the blocks still alive (events a script keeps) out of their
//! batches ([`LinePins::move_out`]): those blocks then own their bytes, counted in their
//! state's memory, and every batch is released.
//! Until then a kept line is not counted in its state's memory (the pinned bytes are
//! published: `pins.bytes`).
//!
//! Invariants: a block's bytes stay valid while the block lives (a batch is released only
//! when its count of live blocks is zero, and a batch still pinned when the worker ends is
//! leaked, never freed); only the worker's thread touches its cells (states never leave their
//! worker).

use std::cell::Cell;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use mlua::ffi::{self, lua_State};

use super::memory::StateMemory;
use crate::event::batch::InBatch;

/// Pinned bytes per worker below which no state is collected for the pins' sake (above it,
/// also its states' heap). Test builds use 1 MiB, so that the suite runs the reliefs
/// and copies out of [`LinePins::move_out`] often.
pub(crate) const PIN_FLOOR: usize = if cfg!(debug_assertions) { 1 << 20 } else { 64 << 20 };

/// Collection cycles each state finishes (each seen by a sentinel it clears), stepped by the
/// worker, before the lines still pinned are copied out: a table that became garbage while a
/// cycle was marking survives that cycle, not the next, which frees it in its sweep, done
/// before a third cycle begins. Fewer copied too many lines of garbage events, charged to
/// their states until freed.
pub(crate) const RELIEF_CYCLES: u8 = 3;
/// The registry slot of a state's relief sentinels (beside `ffi_util::reg`'s keys).
const PIN_SENTINEL: std::ffi::c_int = -17_014;

/// Pushes the weak-keyed table holding the state's relief sentinel as its key (the first
/// cycle to reach its atomic phase after the sentinel was made clears it).
///
/// # Safety
///
/// `l` is a state of this thread, not running.
unsafe fn push_sentinels(l: *mut lua_State) {
    // SAFETY: the caller's contract; the registry slot holds nil or the weak table.
    unsafe {
        ffi::lua_rawgeti_(l, ffi::LUA_REGISTRYINDEX, PIN_SENTINEL);
        if ffi::lua_type(l, -1) == ffi::LUA_TTABLE {
            return;
        }
        ffi::lua_pop(l, 1);
        ffi::lua_createtable(l, 0, 1);
        ffi::lua_createtable(l, 0, 1);
        ffi::lua_pushstring(l, c"k".as_ptr());
        ffi::lua_setfield(l, -2, c"__mode".as_ptr());
        ffi::lua_setmetatable(l, -2);
        ffi::lua_pushvalue(l, -1);
        ffi::lua_rawseti_(l, ffi::LUA_REGISTRYINDEX, PIN_SENTINEL);
    }
}

/// Makes a new relief sentinel for the state (see [`sentinel_cleared`]).
///
/// # Safety
///
/// `l` is a state of this thread, not running.
pub(super) unsafe fn new_sentinel(l: *mut lua_State) {
    // SAFETY: the caller's contract; the stack is restored.
    unsafe {
        push_sentinels(l);
        ffi::lua_createtable(l, 0, 0);
        ffi::lua_pushboolean(l, 1);
        ffi::lua_rawset(l, -3);
        ffi::lua_pop(l, 1);
    }
}

/// Whether a collection cycle has cleared the state's sentinel since it was made: every cycle
/// that reaches its atomic phase does, whatever allocation runs it.
///
/// # Safety
///
/// `l` is a state of this thread, not running.
pub(super) unsafe fn sentinel_cleared(l: *mut lua_State) -> bool {
    // SAFETY: the caller's contract; the stack is restored (`lua_next` pushes a key and a
    // value when the table is not empty).
    unsafe {
        let top = ffi::lua_gettop(l);
        push_sentinels(l);
        ffi::lua_pushnil(l);
        let cleared = ffi::lua_next(l, -2) == 0;
        ffi::lua_settop(l, top);
        cleared
    }
}

/// Forgets the state's sentinel (its relief ended or was abandoned).
///
/// # Safety
///
/// `l` is a state of this thread, not running.
pub(super) unsafe fn drop_sentinel(l: *mut lua_State) {
    // SAFETY: the caller's contract.
    unsafe {
        ffi::lua_pushnil(l);
        ffi::lua_rawseti_(l, ffi::LUA_REGISTRYINDEX, PIN_SENTINEL);
    }
}

/// Collector work per state per batch while relieving, as for this many KiB allocated.
pub(crate) const RELIEF_STEP_KB: std::ffi::c_int = 1024;

/// Slots (line blocks) per batch; blocks past them are inline copies.
const SLOTS: usize = 4 * crate::event::batch::BATCH_EVENTS;

/// The top bit of a line header's length marks an external block.
pub(super) const EXT_FLAG: u64 = 1 << 63;

/// The payload of an external line block: the line header, then where the bytes are and what
/// pins them.
#[repr(C)]
pub(super) struct ExtLine {
    /// The line header (its length has [`EXT_FLAG`] set).
    pub header: LineHeader,
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

/// What a line block holds before the line's bytes (or, external, before where they are):
/// all the FFI lookup gets besides the block's address, and what every proxy over the line
/// shares (the event id, for the member cache; the seal its tables carry; the top-level
/// object's range, which top-level proxies leave out of their table).
#[derive(Clone, Copy)]
#[repr(C)]
pub(super) struct LineHeader {
    /// The line's length; for an external block with [`EXT_FLAG`] set.
    pub(super) len: u64,
    pub(super) id: f64,
    pub(super) seal: f64,
    pub(super) root_start: u32,
    pub(super) root_end: u32,
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

/// Draws the secret of the tags; false when the system gives no random bytes (then no block
/// is external).
pub(super) fn init_secret() -> bool {
    let mut b = [0u8; 8];
    // SAFETY: `b` is a writable buffer of its length.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        return false;
    }
    SECRET.store(u64::from_ne_bytes(b) | 1, Relaxed);
    true
}

/// Sets the allocation size of an external block (measured by `ffi_util`), enabling them.
pub(super) fn set_block(size: usize) {
    if size >= EXT_SIZE {
        BLOCK.store(size, Relaxed);
    }
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
pub(super) unsafe fn push_external(l: *mut lua_State, line: &[u8], mut h: LineHeader) -> Option<*mut u8> {
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
        if (*ext).pin.is_null() {
            (*ext).tag = 0;
            let len = (*ext).header.len & !EXT_FLAG;
            (*(*ext).mem).charge(-(len as isize));
            libmimalloc_sys::mi_free((*ext).bytes.cast_mut().cast());
            return;
        }
        let cell = &*(*ext).pin;
        let slot = cell.slots.get((*ext).slot as usize);
        if slot.is_none_or(|s| s.get() != ext) {
            return;
        }
        (*ext).tag = 0;
        if let Some(s) = slot {
            s.set(std::ptr::null_mut());
        }
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
    /// While the pins are past their bound: per state (filters, then analyzers), the
    /// collection cycles it has still to finish before the lines still pinned are copied out
    /// (empty otherwise).
    pub relief: Vec<u8>,
    /// Reliefs finished (lines copied out after them), and lines copied out of their batches.
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
        let Some(cell) = self.current.take() else {
            return Some(batch);
        };
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

    /// Whether the pinned batches are past their bound, given the heap of the worker's states
    /// and their memory limit (a quarter of which lowers the floor).
    pub(crate) fn over(&self, heap: usize, min_limit: usize) -> bool {
        self.bytes > PIN_FLOOR.min(min_limit / 4) && self.bytes > heap
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::script_spec;
    use crate::event::EventMeta;
    use crate::lua::WorkerCtx;
    use crate::lua::state::Role;

    fn batch(lines: &[&str]) -> InBatch {
        let mut b = InBatch::default();
        for (i, l) in lines.iter().enumerate() {
            let start = b.data.len() as u32;
            b.data.extend_from_slice(l.as_bytes());
            b.events.push(EventMeta {
                seq: i as u64,
                start,
                end: b.data.len() as u32,
                ..EventMeta::default()
            });
        }
        b
    }

    /// Runs `lines` as one pinned batch; returns the batch when nothing pins it.
    fn run(c: &mut WorkerCtx, lines: &[&str]) -> Option<InBatch> {
        let mut b = batch(lines);
        c.pins.begin(&b.data);
        let InBatch { data, events, .. } = &mut b;
        assert_eq!(c.process_batch(0, data, events, 1).events, lines.len() as u64);
        c.pins.end(0, b)
    }

    fn collect_all(c: &mut WorkerCtx) {
        let states: Vec<_> = c.filters.iter().chain(&c.analyzers).map(|s| s.l).collect();
        for l in states {
            // SAFETY: a state of this thread, not running.
            c.lend(|| unsafe { ffi::lua_gc(l, ffi::LUA_GCCOLLECT, 0) });
        }
    }

    /// A batch stays while an event table over one of its lines lives (a script keeps it),
    /// comes back once the table is garbage and collected; copied out, a kept event reads
    /// its own line after its batch went back; a copy into another state is inline.
    #[test]
    fn a_batch_stays_while_a_table_over_its_lines_lives() {
        let dir = std::env::temp_dir().join(format!("dfm-pins-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (f, a) = (dir.join("f.lua"), dir.join("a.lua"));
        std::fs::write(
            &f,
            "function setup() end\nfunction loop(msg) dragonfly.analyze_event('a', msg) end\n",
        )
        .unwrap();
        std::fs::write(
            &a,
            "local kept\nfunction setup() end\nfunction loop(msg)\n\
             if msg.keep then kept = msg end\n\
             if msg.drop then kept = nil end\n\
             if msg.show then dragonfly.output_event('out', { shown = kept.n, ip = kept.ip }) end\n\
             end\n",
        )
        .unwrap();
        let mut c = WorkerCtx::new(vec!["in".into()], vec!["a".into()], vec!["out".into()], false);
        c.open_all(
            &[script_spec(Role::Filter, "in", &f)],
            &[script_spec(Role::Analyzer, "a", &a)],
            true,
        )
        .unwrap();
        let mut back = Vec::new();

        // Kept: still pinned after a full collection.
        assert!(run(&mut c, &[r#"{"n":1,"keep":true,"ip":"10.0.0.1"}"#]).is_none());
        collect_all(&mut c);
        c.pins.release(|i, b| back.push((i, b)));
        assert!(back.is_empty(), "a kept event's batch went back");
        assert!(c.pins.bytes() > 0);

        // Dropped: both batches come back once collected.
        let _ = run(&mut c, &[r#"{"n":2,"drop":true}"#]);
        collect_all(&mut c);
        c.pins.release(|i, b| back.push((i, b)));
        assert_eq!(back.len(), 2);
        assert_eq!(c.pins.bytes(), 0);

        // Kept and copied out: its batch goes back at once, the event still reads its line,
        // and the copy is charged to its state.
        back.clear();
        assert!(run(&mut c, &[r#"{"n":3,"keep":true,"ip":"10.0.0.3"}"#]).is_none());
        collect_all(&mut c);
        let used = c.analyzers[0].mem.used();
        c.pins.move_out(|i, b| back.push((i, b)));
        assert_eq!((back.len(), c.pins.moved, c.pins.bytes()), (1, 1, 0));
        assert!(c.analyzers[0].mem.used() > used, "the copy is charged to the state");
        let b = back.pop().unwrap().1;
        let _ = run(&mut c, &[r#"{"n":4,"show":true}"#]);
        drop(b);
        let out = String::from_utf8_lossy(&c.outs[0].data).into_owned();
        assert!(
            out.contains(r#""shown":3"#) && out.contains(r#""ip":"10.0.0.3""#),
            "{out}"
        );
        c.close();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
