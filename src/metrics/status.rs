//! The live status line on a terminal: once a second, events/s, totals and errors, and for
//! `file://` inputs a progress bar with bytes read and the time left. Nothing is drawn when
//! stderr is not a terminal.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::Stats;

/// Whether stderr is a terminal.
pub(crate) fn stderr_is_tty() -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(2) == 1 }
}

/// A `file://` input whose size is known: (input index, bytes in the file).
pub(crate) type Sized = (usize, u64);

/// The running status line; clears it when stopped.
pub(crate) struct StatusLine {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl StatusLine {
    /// Starts drawing when stderr is a terminal (else does nothing).
    pub(crate) fn start(stats: Arc<Stats>, files: Vec<Sized>) -> Option<StatusLine> {
        if !stderr_is_tty() {
            return None;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("dfm-status".into())
            .spawn(move || {
                let mut last = (Instant::now(), 0u64);
                let mut next = Instant::now() + Duration::from_secs(1);
                while !flag.load(Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                    if Instant::now() < next {
                        continue;
                    }
                    next += Duration::from_secs(1);
                    let line = render(&stats, &files, &mut last);
                    let mut e = std::io::stderr().lock();
                    let _ = write!(e, "\r\x1b[K{line}");
                    let _ = e.flush();
                }
                let mut e = std::io::stderr().lock();
                let _ = write!(e, "\r\x1b[K");
                let _ = e.flush();
            })
            .ok()?;
        Some(StatusLine {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for StatusLine {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `1234567` -> `1,234,567`.
pub(crate) fn grouped(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

/// One status line; `last` is the (time, events) of the previous one, for the rate.
pub(crate) fn render(stats: &Stats, files: &[Sized], last: &mut (Instant, u64)) -> String {
    let processed = stats.processed();
    let dt = last.0.elapsed().as_secs_f64().max(1e-3);
    let rate = (processed.saturating_sub(last.1)) as f64 / dt;
    *last = (Instant::now(), processed);
    let mut s = format!(
        "{} events/s | {} read, {} written, {} invalid, {} script errors",
        grouped(rate as u64),
        grouped(stats.events_read()),
        grouped(stats.written()),
        grouped(stats.invalid()),
        grouped(stats.script_errors())
    );
    // Paced replays (`?pace=N`): the furthest behind schedule.
    if let Some(lag) = stats
        .inputs
        .iter()
        .filter(|i| i.paced.load(Relaxed))
        .map(|i| i.pace_lag_us.load(Relaxed))
        .max()
    {
        s.push_str(&format!(" | lag {:.1} s", lag as f64 / 1e6));
    }
    let (done, total) = files.iter().fold((0u64, 0u64), |(d, t), &(i, size)| {
        (d + stats.inputs[i].bytes.load(Relaxed).min(size), t + size)
    });
    if total > 0 {
        let frac = done as f64 / total as f64;
        const WIDTH: usize = 24;
        let filled = ((frac * WIDTH as f64) as usize).min(WIDTH);
        // The bytes are this pipeline's: so is the time.
        let elapsed = stats.pipeline_started.elapsed().as_secs_f64();
        let left = if frac > 0.0 { elapsed * (1.0 - frac) / frac } else { 0.0 };
        s.push_str(&format!(
            " | [{}{}] {:>3.0}% {} of {}, {:.0} s left",
            "#".repeat(filled),
            "-".repeat(WIDTH - filled),
            frac * 100.0,
            mib(done),
            mib(total),
            left.ceil()
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_thousands() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(1234567), "1,234,567");
    }

    #[test]
    fn renders_progress_of_file_inputs() {
        let stats = Stats::new(
            vec!["eve".into()],
            vec!["a".into()],
            vec!["log".into(), "stats".into()],
            1,
        );
        stats.inputs[0].bytes.store(512, Relaxed);
        let mut last = (Instant::now(), 0);
        let line = render(&stats, &[(0, 1024)], &mut last);
        assert!(line.contains(" 50% "), "{line}");
        assert!(line.contains("[############------------]"), "{line}");
        let line = render(&stats, &[], &mut last);
        assert!(!line.contains('%'), "{line}");
    }
}
