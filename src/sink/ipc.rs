//! `ipc://` output: one datagram per event to a unix datagram socket another program has
//! bound (as the original), or `ipc+stream://`: newline-framed events over a unix stream
//! socket another program listens on. The socket is reconnected (with backoff) when the
//! peer goes away; events that cannot be sent meanwhile are held (see `held`) and sent once
//! the peer is back or reads again. An event larger than a datagram can never be sent: it is
//! an error, counted and reported.

use crate::config::types::IpcKind;
use std::io::{self, Write};

use super::held::Held;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

enum Conn {
    None,
    Datagram(UnixDatagram),
    Stream(UnixStream),
}

/// How long one send may block on a peer that does not read: the writer then goes on with
/// its other work and retries, the records stay held.
const SEND_TIMEOUT: Duration = Duration::from_millis(100);
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Held bytes that make the sink send without waiting for the next flush.
const SEND_AT: usize = 256 * 1024;

/// A unix socket sink.
pub(crate) struct IpcSink {
    pub path: PathBuf,
    kind: IpcKind,
    /// Sends never wait (`drop_when_full`): a peer that does not keep up fills what is held,
    /// and new records are then dropped, where a blocking send would hold the whole pipeline
    /// up for its timeout at every attempt.
    never_wait: bool,
    conn: Conn,
    next_try: Instant,
    backoff: Duration,
    pub held: Held,
    /// The last delivery failed.
    failing: bool,
    /// Records that can never be sent (a datagram too large), since the last call of
    /// [`IpcSink::take_rejected`], with the last message.
    rejected: u64,
    pub last_rejection: Option<String>,
}

impl IpcSink {
    /// Prepares the sink; the first connection is tried now, and again later if the peer is
    /// not there yet (an absent peer is not a startup error: it may start after us).
    pub(crate) fn open(path: PathBuf, kind: IpcKind, never_wait: bool) -> IpcSink {
        let mut s = IpcSink {
            path,
            kind,
            never_wait,
            conn: Conn::None,
            next_try: Instant::now(),
            backoff: BACKOFF_MIN,
            held: Held::default(),
            failing: false,
            rejected: 0,
            last_rejection: None,
        };
        let _ = s.connect();
        s
    }

    fn connect(&mut self) -> io::Result<()> {
        if !matches!(self.conn, Conn::None) {
            return Ok(());
        }
        let now = Instant::now();
        if now < self.next_try {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                format!("{}: not connected (retrying after backoff)", self.path.display()),
            ));
        }
        let never_wait = self.never_wait;
        let r = match self.kind {
            IpcKind::Datagram => UnixDatagram::unbound().and_then(|s| {
                s.connect(crate::privilege::host_path(&self.path))?;
                if never_wait {
                    s.set_nonblocking(true)?;
                } else {
                    s.set_write_timeout(Some(SEND_TIMEOUT))?;
                }
                Ok(Conn::Datagram(s))
            }),
            IpcKind::Stream => UnixStream::connect(crate::privilege::host_path(&self.path)).and_then(|s| {
                if never_wait {
                    s.set_nonblocking(true)?;
                } else {
                    s.set_write_timeout(Some(SEND_TIMEOUT))?;
                }
                Ok(Conn::Stream(s))
            }),
        };
        match r {
            Ok(c) => {
                self.conn = c;
                self.backoff = BACKOFF_MIN;
                Ok(())
            }
            Err(e) => {
                self.disconnect();
                Err(io::Error::new(e.kind(), format!("{}: {e}", self.path.display())))
            }
        }
    }

    /// The connection is gone: what was sent of a record is sent again, whole, on the next.
    fn disconnect(&mut self) {
        self.conn = Conn::None;
        self.held.settle();
        self.next_try = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    /// Takes one event (`bytes` ends with its newline); it is sent once enough is held (or at
    /// the next flush). An error is a failed send of what is held, which stays held.
    pub(crate) fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.held.push(bytes);
        // After a failed delivery, the next attempt waits for the writer's flush or retry.
        if self.held.len() >= SEND_AT && !self.failing {
            return self.flush();
        }
        Ok(())
    }

    pub(crate) fn flush(&mut self) -> io::Result<()> {
        let r = self.deliver();
        self.failing = r.is_err();
        r
    }

    pub(crate) fn has_rejected(&self) -> bool {
        self.rejected > 0
    }

    /// Records rejected since the last call (never sendable, counted as errors).
    pub(crate) fn take_rejected(&mut self) -> u64 {
        std::mem::take(&mut self.rejected)
    }

    /// Sends what is held, as far as the peer takes it.
    fn deliver(&mut self) -> io::Result<()> {
        if self.held.is_empty() {
            return Ok(());
        }
        self.connect()?;
        let r = match &mut self.conn {
            Conn::Datagram(s) => send_datagrams(s, &mut self.held, &mut self.rejected, &mut self.last_rejection),
            Conn::Stream(s) => send_stream(s, &mut self.held),
            Conn::None => unreachable!("connected above"),
        };
        match r {
            Ok(()) => {
                self.held.settle();
                Ok(())
            }
            // A peer that does not read (yet): keep the connection, try again later. The
            // records it took whole are delivered (counted as written now: were the output
            // given up later, they would not be lost); a record it took in part stays, its
            // rest to follow on this connection.
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                let whole = self.held.sent_boundary();
                self.held.delivered_upto(whole);
                Err(io::Error::new(
                    e.kind(),
                    format!("{}: the reader does not keep up ({e})", self.path.display()),
                ))
            }
            Err(e) => {
                self.disconnect();
                Err(io::Error::new(e.kind(), format!("{}: {e}", self.path.display())))
            }
        }
    }
}

/// One datagram per held record, without its newline.
fn send_datagrams(s: &UnixDatagram, held: &mut Held, rejected: &mut u64, why: &mut Option<String>) -> io::Result<()> {
    while let Some(end) = memchr::memchr(b'\n', held.unsent()) {
        let body = &held.unsent()[..end];
        match s.send(body) {
            Ok(_) => held.sent += end + 1,
            Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => {
                *rejected += 1;
                *why = Some(format!(
                    "event of {} bytes is larger than a datagram (use ipc+stream://)",
                    body.len()
                ));
                // Not delivered: taken out without being counted as written.
                held.reject_next(end + 1);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The held bytes down the stream, as far as the peer reads.
fn send_stream(s: &mut UnixStream, held: &mut Held) -> io::Result<()> {
    while !held.unsent().is_empty() {
        match s.write(held.unsent()) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => held.sent += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
