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

    pub(crate) fn wait(&mut self) {
        if self.n < 16 {
            std::hint::spin_loop();
        } else if self.n < 48 {
            std::thread::yield_now();
        } else {
            let us = (50u64 << ((self.n - 48).min(5))).min(1000);
            std::thread::sleep(Duration::from_micros(us));
        }
        self.n = self.n.saturating_add(1);
    }
}
