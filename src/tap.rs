//! `dragonfly-mle tap`, part of the binary: asks a running engine's HTTP endpoint for a sample
//! of the events passing one point (`GET /tap`) and prints them, one JSON object per line.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Context, bail};

/// Where to tap and how much.
pub struct Tap<'a> {
    /// `input`, `analyzer` or `output`, and the tag.
    pub point: (&'static str, &'a str),
    pub n: usize,
    pub every: u64,
    pub timeout: f64,
}

/// Query-string escaping of a tag.
fn escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

/// Runs the tap against the endpoint at `addr`, writing the events to `out`; how many came.
pub fn run(addr: &str, tap: &Tap<'_>, out: &mut impl Write) -> anyhow::Result<usize> {
    let mut s = TcpStream::connect(addr)
        .with_context(|| format!("cannot reach the engine's HTTP endpoint at {addr} (is it running? --http ADDR)"))?;
    s.set_read_timeout(Some(Duration::from_secs_f64(tap.timeout + 10.0)))?;
    let (point, tag) = tap.point;
    write!(
        s,
        "GET /tap?{point}={}&n={}&every={}&timeout={} HTTP/1.1\r\nHost: dragonfly-mle\r\nConnection: close\r\n\r\n",
        escape(tag),
        tap.n,
        tap.every,
        tap.timeout
    )?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).context("reading the engine's answer")?;
    let head_end = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("an incomplete answer from the engine")?;
    let head = String::from_utf8_lossy(&resp[..head_end]);
    let body = &resp[head_end + 4..];
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        bail!("{} ({addr})", String::from_utf8_lossy(body).trim());
    }
    out.write_all(body)?;
    out.flush()?;
    Ok(body.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count())
}
