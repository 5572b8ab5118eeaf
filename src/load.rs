//! Load generators for the end-to-end benchmarks in `perf/`, part of the binary only (its
//! hidden subcommands): replay an EVE file into a unix socket from several producers, or into
//! a Kafka topic keyed by flow.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

fn lines(file: &Path) -> std::io::Result<Vec<Vec<u8>>> {
    BufReader::new(std::fs::File::open(file)?)
        .split(b'\n')
        .filter(|l| l.as_ref().map_or(true, |l| !l.is_empty()))
        .collect()
}

/// Sends every line of `file` to the socket of `uri` (`ipc://` datagrams or `ipc+stream://`
/// lines), split between `producers` threads. Returns (events, seconds).
pub fn send(uri: &str, file: &Path, producers: usize) -> std::io::Result<(usize, f64)> {
    let all = std::sync::Arc::new(lines(file)?);
    let (path, stream) = if let Some(p) = uri.strip_prefix("ipc+stream://") {
        (p.to_string(), true)
    } else if let Some(p) = uri.strip_prefix("ipc://") {
        (p.to_string(), false)
    } else {
        return Err(std::io::Error::other("expected ipc://PATH or ipc+stream://PATH"));
    };
    let start = Instant::now();
    let threads: Vec<_> = (0..producers.max(1))
        .map(|p| {
            let all = std::sync::Arc::clone(&all);
            let path = path.clone();
            let n = producers.max(1);
            std::thread::spawn(move || -> std::io::Result<()> {
                if stream {
                    let mut s = std::io::BufWriter::with_capacity(1 << 20, UnixStream::connect(&path)?);
                    for l in all.iter().skip(p).step_by(n) {
                        s.write_all(l)?;
                        s.write_all(b"\n")?;
                    }
                    s.flush()
                } else {
                    let s = UnixDatagram::unbound()?;
                    s.connect(&path)?;
                    let mine: Vec<&Vec<u8>> = all.iter().skip(p).step_by(n).collect();
                    for chunk in mine.chunks(SEND_BATCH) {
                        send_batch(&s, chunk)?;
                    }
                    Ok(())
                }
            })
        })
        .collect();
    for t in threads {
        t.join().map_err(|_| std::io::Error::other("producer panicked"))??;
    }
    Ok((all.len(), start.elapsed().as_secs_f64()))
}

/// Datagrams per `sendmmsg` call of the load generator.
const SEND_BATCH: usize = 64;

/// Sends each line as one datagram, `SEND_BATCH` per system call (a full socket buffer blocks).
fn send_batch(s: &UnixDatagram, lines: &[&Vec<u8>]) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut iovs: Vec<libc::iovec> = lines
        .iter()
        .map(|l| libc::iovec {
            iov_base: l.as_ptr() as *mut libc::c_void,
            iov_len: l.len(),
        })
        .collect();
    // SAFETY: `mmsghdr` is a plain C struct for which all-zero bytes are valid.
    let mut msgs: Vec<libc::mmsghdr> = (0..iovs.len()).map(|_| unsafe { std::mem::zeroed() }).collect();
    for (m, iov) in msgs.iter_mut().zip(iovs.iter_mut()) {
        m.msg_hdr.msg_iov = iov;
        m.msg_hdr.msg_iovlen = 1;
    }
    let mut sent = 0;
    while sent < msgs.len() {
        // SAFETY: `msgs[sent..]` are valid headers pointing at live iovecs over live lines.
        let n = unsafe {
            libc::sendmmsg(
                s.as_raw_fd(),
                msgs[sent..].as_mut_ptr(),
                (msgs.len() - sent) as libc::c_uint,
                0,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        sent += n as usize;
    }
    Ok(())
}

/// Produces every line of `file` to `topic`, keyed by flow tuple. Returns (events, seconds).
pub fn kafka_produce(brokers: &str, topic: &str, file: &Path) -> anyhow::Result<(usize, f64)> {
    let all = lines(file).with_context(|| file.display().to_string())?;
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "500000")
        .set("compression.type", "lz4")
        .create()?;
    let mut parser = dragonfly_mle::bench::RouteParser::new();
    let start = Instant::now();
    for l in &all {
        let key = parser.parse(l).ok().and_then(|r| r.hash).unwrap_or(0).to_le_bytes();
        while p.send(BaseRecord::to(topic).key(&key[..]).payload(&l[..])).is_err() {
            p.poll(Duration::from_millis(5));
        }
        p.poll(Duration::ZERO);
    }
    p.flush(Duration::from_secs(120))?;
    Ok((all.len(), start.elapsed().as_secs_f64()))
}

/// Consumes `topic` from the start with a fresh group until `n` messages arrived. Returns the
/// seconds from the call to the last message.
pub fn kafka_count(brokers: &str, topic: &str, n: usize) -> anyhow::Result<f64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let start = Instant::now();
    let group = format!("bench-count-{}", std::process::id());
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", &group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    c.subscribe(&[topic])?;
    let mut got = 0;
    while got < n {
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(_)) => got += 1,
            Some(Err(e)) => return Err(e.into()),
            None if start.elapsed() > Duration::from_secs(600) => bail!("only {got} of {n} messages"),
            None => {}
        }
    }
    Ok(start.elapsed().as_secs_f64())
}
