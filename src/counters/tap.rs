//! Taps (`dragonfly-mle tap`, `GET /tap`): copies of the events passing one point of the
//! pipeline (what an input reads, what an analyzer's `loop()` gets, what an output writes),
//! sampled, for a live look at a running engine. While nobody taps, each point costs one
//! relaxed load of a flag per event; one tap runs at a time.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Where a tap looks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Point {
    /// Lines an input routes, before the workers validate them (by input index).
    Input,
    /// Values an analyzer's `loop()` is called with (by analyzer index).
    Analyzer,
    /// Records an output writes (by output index: `{log}`, `{stats}`, then config.lua's).
    Output,
}

struct Tap {
    point: Point,
    index: usize,
    /// Take one event in `every`.
    every: u64,
    seen: u64,
    want: usize,
    got: Vec<Vec<u8>>,
}

static ACTIVE: AtomicBool = AtomicBool::new(false);
static TAP: Mutex<Option<Tap>> = Mutex::new(None);

/// Whether anyone taps (the hot path's only cost while nobody does).
#[inline]
pub(crate) fn active() -> bool {
    ACTIVE.load(Relaxed)
}

/// Offers the event passing `point` `index` to the tap; `copy` writes its JSON text and is
/// called only when the event is taken.
pub(crate) fn offer(point: Point, index: usize, copy: impl FnOnce(&mut Vec<u8>)) {
    let mut g = TAP.lock().unwrap_or_else(|e| e.into_inner());
    let Some(t) = g.as_mut() else { return };
    if t.point != point || t.index != index || t.got.len() >= t.want {
        return;
    }
    t.seen += 1;
    if (t.seen - 1) % t.every != 0 {
        return;
    }
    let mut v = Vec::new();
    copy(&mut v);
    while v.last() == Some(&b'\n') {
        v.pop();
    }
    t.got.push(v);
}

/// Why a tap could not run.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TapError {
    #[error("another tap is running; try again when it ends")]
    Busy,
}

/// Taps `point` `index` until `want` events were taken (one in `every`) or `timeout` passed;
/// the events, oldest first.
pub(crate) fn tap(
    point: Point,
    index: usize,
    want: usize,
    every: u64,
    timeout: Duration,
) -> Result<Vec<Vec<u8>>, TapError> {
    {
        let mut g = TAP.lock().unwrap_or_else(|e| e.into_inner());
        if g.is_some() {
            return Err(TapError::Busy);
        }
        *g = Some(Tap {
            point,
            index,
            every: every.max(1),
            seen: 0,
            want: want.max(1),
            got: Vec::new(),
        });
    }
    ACTIVE.store(true, Relaxed);
    let deadline = Instant::now() + timeout;
    loop {
        std::thread::sleep(Duration::from_millis(10));
        let g = TAP.lock().unwrap_or_else(|e| e.into_inner());
        if g.as_ref().is_none_or(|t| t.got.len() >= t.want) || Instant::now() >= deadline {
            break;
        }
    }
    ACTIVE.store(false, Relaxed);
    let t = TAP.lock().unwrap_or_else(|e| e.into_inner()).take();
    Ok(t.map(|t| t.got).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_one_in_every_of_its_point_until_it_has_enough() {
        let feeder = std::thread::spawn(|| {
            for i in 0..100_000u64 {
                if active() {
                    offer(Point::Output, 2, |v| {
                        v.extend_from_slice(format!("{{\"o\":{i}}}\n").as_bytes())
                    });
                    offer(Point::Output, 3, |v| v.extend_from_slice(b"{\"other\":1}"));
                    offer(Point::Input, 2, |v| v.extend_from_slice(b"{\"input\":1}"));
                }
                std::thread::sleep(Duration::from_micros(20));
            }
        });
        let got = tap(Point::Output, 2, 4, 3, Duration::from_secs(20)).unwrap();
        assert_eq!(got.len(), 4);
        let n: Vec<u64> = got
            .iter()
            .map(|l| {
                let s = String::from_utf8_lossy(l);
                assert!(s.starts_with("{\"o\":") && !s.ends_with('\n'), "{s}");
                s[5..s.len() - 1].parse().unwrap()
            })
            .collect();
        // One in three of what passed the point, in order.
        assert!(n.windows(2).all(|w| w[1] == w[0] + 3), "{n:?}");
        assert!(!active());
        feeder.join().unwrap();
    }
}
