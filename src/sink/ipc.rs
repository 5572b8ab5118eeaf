//! `ipc://` output: one datagram per event to a unix datagram socket another program has
//! bound (as the original), or `ipc+stream://`: newline-framed events over a unix stream
//! socket another program listens on. The socket is reconnected (with backoff) when the
//! peer goes away; events that cannot be sent meanwhile, or that are larger than a datagram,
//! are errors: counted in the stats line and reported, never dropped silently.

use std::io::{self, Write};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Datagram or stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpcKind {
    Datagram,
    Stream,
}

enum Conn {
    None,
    Datagram(UnixDatagram),
    Stream(io::BufWriter<UnixStream>),
}

/// How long a send may block on a peer that does not read before it counts as failed.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// A unix socket sink.
pub struct IpcSink {
    pub path: PathBuf,
    kind: IpcKind,
    conn: Conn,
    next_try: Instant,
    backoff: Duration,
    /// The last failure, for the writer to report once per change.
    pub last_error: Option<String>,
}

impl IpcSink {
    /// Prepares the sink; the first connection is tried now, and again later if the peer is
    /// not there yet (an absent peer is not a startup error: it may start after us).
    pub fn open(path: PathBuf, kind: IpcKind) -> IpcSink {
        let mut s = IpcSink {
            path,
            kind,
            conn: Conn::None,
            next_try: Instant::now(),
            backoff: BACKOFF_MIN,
            last_error: None,
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
        let r = match self.kind {
            IpcKind::Datagram => UnixDatagram::unbound().and_then(|s| {
                s.connect(&self.path)?;
                s.set_write_timeout(Some(SEND_TIMEOUT))?;
                Ok(Conn::Datagram(s))
            }),
            IpcKind::Stream => UnixStream::connect(&self.path).and_then(|s| {
                s.set_write_timeout(Some(SEND_TIMEOUT))?;
                Ok(Conn::Stream(io::BufWriter::with_capacity(256 * 1024, s)))
            }),
        };
        match r {
            Ok(c) => {
                self.conn = c;
                self.backoff = BACKOFF_MIN;
                Ok(())
            }
            Err(e) => {
                self.fail();
                Err(io::Error::new(e.kind(), format!("{}: {e}", self.path.display())))
            }
        }
    }

    fn fail(&mut self) {
        self.conn = Conn::None;
        self.next_try = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    fn note(&mut self, e: &io::Error) {
        self.last_error = Some(e.to_string());
    }

    /// Sends one event (`bytes` ends with its newline).
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        let r = self.send(bytes);
        if let Err(e) = &r {
            self.note(e);
        }
        r
    }

    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.connect()?;
        match &mut self.conn {
            Conn::Datagram(s) => {
                let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
                match s.send(body) {
                    Ok(_) => Ok(()),
                    Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "{}: event of {} bytes is larger than a datagram (use ipc+stream://)",
                            self.path.display(),
                            body.len()
                        ),
                    )),
                    Err(e) => {
                        self.fail();
                        Err(io::Error::new(e.kind(), format!("{}: {e}", self.path.display())))
                    }
                }
            }
            Conn::Stream(w) => match w.write_all(bytes) {
                Ok(()) => Ok(()),
                Err(e) => {
                    self.fail();
                    Err(io::Error::new(e.kind(), format!("{}: {e}", self.path.display())))
                }
            },
            Conn::None => unreachable!("connected above"),
        }
    }

    pub fn flush(&mut self) -> io::Result<()> {
        if let Conn::Stream(w) = &mut self.conn
            && let Err(e) = w.flush()
        {
            self.fail();
            let e = io::Error::new(e.kind(), format!("{}: {e}", self.path.display()));
            self.note(&e);
            return Err(e);
        }
        Ok(())
    }
}
