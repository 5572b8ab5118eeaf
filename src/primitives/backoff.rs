//! Waiting on a ring without burning a core or a syscall per try.

use std::time::Duration;

/// Waits politely: spin a little, then yield, then sleep, so an idle engine costs no CPU and
/// a busy one no syscalls.
#[derive(Default)]
pub(crate) struct Backoff {
    n: u32,
}

impl Backoff {
    pub(crate) fn reset(&mut self) {
        self.n = 0;
    }

    /// The sleep after the spins and yields: 50 µs, doubling up to 1 ms.
    fn sleep(&self) -> Duration {
        Duration::from_micros((50u64 << (self.n.saturating_sub(48)).min(5)).min(1000))
    }

    pub(crate) fn wait(&mut self) {
        if self.n < 16 {
            std::hint::spin_loop();
        } else if self.n < 48 {
            std::thread::yield_now();
        } else {
            std::thread::sleep(self.sleep());
        }
        self.n = self.n.saturating_add(1);
    }
}

/// A thread that may sleep waiting on a ring, and the way for the thread on the ring's other
/// side to wake it at once: a pushed batch or a freed slot no longer waits out the sleep
/// (which, with more busy threads than CPUs, left a CPU idle while both sides slept).
/// Missing a wake-up costs at most the sleep's timeout, never an event.
#[derive(Default)]
pub(crate) struct Parker {
    thread: std::sync::OnceLock<std::thread::Thread>,
    sleeping: std::sync::atomic::AtomicBool,
}

impl Parker {
    pub(crate) fn new() -> std::sync::Arc<Parker> {
        std::sync::Arc::new(Parker::default())
    }

    /// The calling thread is the one that sleeps on this parker (the first caller wins).
    pub(crate) fn register(&self) {
        let _ = self.thread.set(std::thread::current());
    }

    /// Wakes the thread if it sleeps. Called after a push or pop that may be what it waits
    /// for; the fence orders that ring operation before the look at the flag (the sleeper
    /// sets the flag, fences, then looks at the ring).
    #[inline]
    pub(crate) fn wake(&self) {
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        if self.sleeping.load(std::sync::atomic::Ordering::Relaxed)
            && let Some(t) = self.thread.get()
        {
            t.unpark();
        }
    }
}

impl Backoff {
    /// [`Backoff::wait`], whose sleeps end early when `me` is woken; `ready` is looked at once
    /// more after the flag is up, so that a wake-up between the caller's last look and the
    /// sleep is not lost.
    pub(crate) fn wait_on(&mut self, me: &Parker, ready: impl FnOnce() -> bool) {
        if self.n < 48 {
            return self.wait();
        }
        use std::sync::atomic::Ordering::{Relaxed, SeqCst};
        me.sleeping.store(true, Relaxed);
        std::sync::atomic::fence(SeqCst);
        if !ready() {
            std::thread::park_timeout(self.sleep());
        }
        me.sleeping.store(false, Relaxed);
        self.n = self.n.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::SeqCst;
    use std::time::Instant;

    /// A wake reaches a registered sleeper: its park returns at once, in the same thread or
    /// another.
    #[test]
    fn a_wake_unparks_a_sleeper() {
        let me = Parker::new();
        me.register();
        me.sleeping.store(true, SeqCst);
        me.wake();
        let t = Instant::now();
        std::thread::park_timeout(Duration::from_secs(20));
        assert!(t.elapsed() < Duration::from_secs(10), "the wake's token was not there");
        me.sleeping.store(false, SeqCst);
        // From another thread: a sleeper woken while it waits.
        let other = Parker::new();
        let (p, q) = (std::sync::Arc::clone(&other), std::sync::Arc::clone(&other));
        let sleeper = std::thread::spawn(move || {
            p.register();
            p.sleeping.store(true, SeqCst);
            let t = Instant::now();
            std::thread::park_timeout(Duration::from_secs(20));
            t.elapsed()
        });
        while !(q.sleeping.load(SeqCst) && q.thread.get().is_some()) {
            std::thread::yield_now();
        }
        std::thread::sleep(Duration::from_millis(20));
        q.wake();
        assert!(sleeper.join().unwrap() < Duration::from_secs(10), "not woken");
    }

    /// After raising its flag the waiter looks at the ring once more, and does not sleep when
    /// what it waits for has come.
    #[test]
    fn the_last_look_comes_after_the_flag() {
        let me = Parker::new();
        me.register();
        let mut b = Backoff { n: 53 };
        let mut looked = false;
        b.wait_on(&me, || {
            looked = me.sleeping.load(SeqCst);
            true
        });
        assert!(looked, "ready() ran before the flag was up");
        assert!(!me.sleeping.load(SeqCst));
    }
}
