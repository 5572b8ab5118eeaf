//! `ipc://` input: a unix datagram socket the engine binds (Suricata `filetype: unix_dgram`:
//! one event per datagram), and `ipc+stream://`: a unix stream socket it listens on (Suricata
//! `unix_stream`: any number of producers, one event per line). Each runs in the input's own
//! reader thread with a large socket buffer; when the rings to the workers are full the reader
//! waits, and the stats line counts those waits (`inputs.<tag>.ring_full`), since a producer
//! like Suricata drops events while nobody reads.

use std::io::{self, ErrorKind};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use super::Router;
use super::framer::Framer;

/// Receive buffer asked of the kernel (capped by `net.core.rmem_max`).
const RCVBUF: libc::c_int = 8 * 1024 * 1024;
/// How often an idle reader looks at the stop flag and hands out partial batches.
const IDLE: Duration = Duration::from_millis(50);

fn set_rcvbuf(fd: libc::c_int) {
    let v = RCVBUF;
    // SAFETY: `fd` is an open socket; the option value is a live c_int of the given size.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Removes a stale socket file (only a socket: never a regular file someone named by mistake).
fn unlink_socket(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path),
        Ok(_) => Err(io::Error::new(
            ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket", path.display()),
        )),
        Err(_) => Ok(()),
    }
}

/// Queue length under which producers stall (or, like Suricata, drop) as soon as the engine
/// is a few datagrams behind.
const MIN_DGRAM_QLEN: u64 = 512;

/// Reports a kernel datagram queue too short for a high-rate producer: a unix datagram
/// socket queues at most `net.unix.max_dgram_qlen` datagrams (10 by default), whatever its
/// buffer size.
fn warn_small_queue(router: &Router) {
    let Some(q) = std::fs::read_to_string("/proc/sys/net/unix/max_dgram_qlen")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
    else {
        return;
    };
    if q < MIN_DGRAM_QLEN {
        router.report(
            crate::diag::Kind::DgramQueueShort,
            0,
            0,
            0,
            &format!(
                "net.unix.max_dgram_qlen is {q}: a producer blocks or drops as soon as {q} datagrams wait; \
                 raise it (sysctl -w net.unix.max_dgram_qlen=1024) for high event rates"
            ),
        );
    }
}

/// Datagrams taken per `recvmmsg` call, at most.
const BATCH: usize = 32;
/// Room for the datagrams of one call: fewer per call when `max_line_bytes` is above 2 MiB.
/// Only the pages datagrams are written into become resident (32 slots of 1 MiB by default).
const BATCH_BYTES: usize = 64 << 20;

/// A socket input's socket, kept open from one pipeline to the next when a reload rebuilds
/// it: producers are never refused, datagrams sent meanwhile wait in the socket, and a stream
/// producer stays connected with the partial line it had sent.
pub(crate) enum Kept {
    Datagram(UnixDatagram),
    Stream(UnixListener, Vec<Producer>),
}

/// Binds `path` as a datagram socket (or takes the one a previous pipeline kept) and routes
/// every datagram as one event until the engine stops. Datagrams are taken up to 32 at a time
/// (`recvmmsg`). When the stop is for a rebuild (`rebuilding`), the socket is returned, still
/// bound.
pub(crate) fn read_datagrams(
    path: &Path,
    max_line: usize,
    router: &mut Router,
    kept: Option<UnixDatagram>,
    rebuilding: &AtomicBool,
) -> io::Result<Option<Kept>> {
    let sock = match kept {
        Some(s) => s,
        None => {
            let path = crate::privilege::host_path(path);
            unlink_socket(&path)?;
            let s = UnixDatagram::bind(&path)?;
            warn_small_queue(router);
            set_rcvbuf(s.as_raw_fd());
            s
        }
    };
    router.opened();
    sock.set_read_timeout(Some(IDLE))?;
    let fd = sock.as_raw_fd();
    // Each datagram gets room for a line of `max_line_bytes` and its newline; a longer one is
    // cut by the kernel, which still tells its length (MSG_TRUNC), and reported as too long.
    let slot = max_line.saturating_add(2).max(4096);
    let batch = (BATCH_BYTES / slot).clamp(1, BATCH);
    let mut buf = vec![0u8; batch * slot];
    let mut iovs: Vec<libc::iovec> = (0..batch)
        .map(|i| libc::iovec {
            // SAFETY: slot i lies within `buf`, which outlives every use of the iovecs.
            iov_base: unsafe { buf.as_mut_ptr().add(i * slot) }.cast(),
            iov_len: slot,
        })
        .collect();
    // SAFETY: mmsghdr is plain data; all-zero is a valid value that is filled in below.
    let mut msgs: Vec<libc::mmsghdr> = (0..batch).map(|_| unsafe { std::mem::zeroed() }).collect();
    for (m, iov) in msgs.iter_mut().zip(iovs.iter_mut()) {
        m.msg_hdr.msg_iov = iov;
        m.msg_hdr.msg_iovlen = 1;
    }
    let mut n_msgs = 0u64;
    let mut offset = 0u64;
    let mut idle = false;
    while !router.stopping() {
        // Blocks up to the read timeout for the first datagram, then takes what is queued.
        // SAFETY: `msgs` holds `batch` headers whose iovecs point into `buf`, all alive.
        let got = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                batch as libc::c_uint,
                libc::MSG_WAITFORONE | libc::MSG_TRUNC,
                std::ptr::null_mut(),
            )
        };
        if got < 0 {
            let e = io::Error::last_os_error();
            match e.kind() {
                ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted => {
                    if !idle {
                        router.flush();
                        idle = true;
                    }
                }
                _ => {
                    router.report(
                        crate::diag::Kind::ReadError,
                        n_msgs,
                        offset,
                        0,
                        &format!("{}: {e}", path.display()),
                    );
                    std::thread::sleep(IDLE);
                }
            }
            continue;
        }
        idle = false;
        let mut bytes = 0;
        for (i, m) in msgs.iter_mut().enumerate().take(got as usize) {
            // With MSG_TRUNC, the datagram's whole length, also when it was cut.
            let n = m.msg_len as usize;
            n_msgs += 1;
            bytes += n;
            // One datagram is one event; a trailing newline is tolerated.
            let mut line = &buf[i * slot..i * slot + n.min(slot)];
            while let Some(l) = line.strip_suffix(b"\n") {
                line = l;
            }
            if m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 || line.len() > max_line {
                router.too_long(n_msgs, offset, n, max_line);
            } else {
                router.line(line, n_msgs, offset);
            }
            offset += n as u64;
            m.msg_hdr.msg_flags = 0;
        }
        // One counter update per call, not per datagram.
        router.add_bytes(bytes);
    }
    router.flush();
    if rebuilding.load(Relaxed) {
        return Ok(Some(Kept::Datagram(sock)));
    }
    let _ = std::fs::remove_file(crate::privilege::host_path(path));
    Ok(None)
}

/// One producer connected to a stream socket.
pub(crate) struct Producer {
    stream: UnixStream,
    framer: Framer,
}

/// Listens on `path` (or takes the listener and producers a previous pipeline kept) and routes
/// the lines of every connected producer until the engine stops. When the stop is for a
/// rebuild (`rebuilding`), the listener and the producers, with their partial lines, are
/// returned.
pub(crate) fn read_streams(
    path: &Path,
    max_line: usize,
    router: &mut Router,
    kept: Option<(UnixListener, Vec<Producer>)>,
    rebuilding: &AtomicBool,
) -> io::Result<Option<Kept>> {
    let (listener, mut conns) = match kept {
        Some(k) => k,
        None => {
            let path = crate::privilege::host_path(path);
            unlink_socket(&path)?;
            let l = UnixListener::bind(&path)?;
            l.set_nonblocking(true)?;
            (l, Vec::new())
        }
    };
    router.opened();
    let mut fds: Vec<libc::pollfd> = Vec::new();
    while !router.stopping() {
        fds.clear();
        fds.push(libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        for c in &conns {
            fds.push(libc::pollfd {
                fd: c.stream.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        // SAFETY: `fds` is a live array of `fds.len()` pollfd structures.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, IDLE.as_millis() as i32) };
        if ready <= 0 {
            // Idle (or EINTR): hand out partial batches.
            router.flush();
            continue;
        }
        if fds[0].revents != 0 {
            loop {
                match listener.accept() {
                    Ok((s, _)) => {
                        set_rcvbuf(s.as_raw_fd());
                        if s.set_nonblocking(true).is_ok() {
                            conns.push(Producer {
                                stream: s,
                                framer: Framer::new(max_line),
                            });
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => {
                        router.report(
                            crate::diag::Kind::AcceptError,
                            0,
                            0,
                            0,
                            &format!("{}: {e}", path.display()),
                        );
                        break;
                    }
                }
            }
        }
        let mut closed = Vec::new();
        for (i, c) in conns.iter_mut().enumerate() {
            if fds.get(i + 1).is_none_or(|f| f.revents == 0) {
                continue;
            }
            // Read what is there (bounded, so one busy producer cannot starve the others).
            for _ in 0..16 {
                match c.framer.fill(&mut c.stream, router) {
                    Ok(0) => {
                        c.framer.finish(router);
                        closed.push(i);
                        break;
                    }
                    Ok(n) => router.add_bytes(n),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => {
                        router.report(
                            crate::diag::Kind::ReadError,
                            c.framer.line_no,
                            c.framer.position(),
                            0,
                            &format!("{}: {e}", path.display()),
                        );
                        c.framer.finish(router);
                        closed.push(i);
                        break;
                    }
                }
            }
        }
        for i in closed.into_iter().rev() {
            conns.swap_remove(i);
        }
    }
    if rebuilding.load(Relaxed) {
        router.flush();
        return Ok(Some(Kept::Stream(listener, conns)));
    }
    for c in &mut conns {
        c.framer.finish(router);
    }
    router.flush();
    let _ = std::fs::remove_file(crate::privilege::host_path(path));
    Ok(None)
}
