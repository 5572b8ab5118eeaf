//! The network and time built-ins of the `dragonfly` table: `http_get(url, file)`,
//! `dnslookup(host)` and `date2epoch(ts)`, as raw C functions.
//!
//! Their settings (`http_timeout`, `http_insecure`, `dns_timeout` in config.lua) are process
//! wide: [`configure`] stores them at startup, before any script runs.
//!
//! Errors are returned to the boundary (`boundary::c_entry`), which raises them once the
//! function's Rust values are dropped.

use std::ffi::{CStr, CString, c_int};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use mlua::ffi::{self, lua_State};

use super::boundary::{Coerce, LuaFail, arg_bytes, arg_count, c_entry};
use super::ffi_util::push_bytes;

/// `http_timeout` in nanoseconds (default 10 s).
static HTTP_TIMEOUT_NS: AtomicU64 = AtomicU64::new(10_000_000_000);
/// `http_insecure` (default false).
static HTTP_INSECURE: AtomicBool = AtomicBool::new(false);
/// `dns_timeout` in nanoseconds (default 5 s).
static DNS_TIMEOUT_NS: AtomicU64 = AtomicU64::new(5_000_000_000);
/// The HTTP agent built from the settings on first use (shared: it pools connections).
static AGENT: Mutex<Option<ureq::Agent>> = Mutex::new(None);

/// Redirects `http_get` follows before failing.
pub(crate) const MAX_REDIRECTS: u32 = 5;
/// Lookup threads that may still be running past their timeout; `dnslookup` raises at once
/// while this many are stuck.
pub(crate) const MAX_STUCK_LOOKUPS: usize = 8;
/// Lookup threads abandoned at their timeout and not finished yet.
static STUCK_LOOKUPS: AtomicUsize = AtomicUsize::new(0);

/// Stores the settings of config.lua; called at startup, before any script runs.
pub(crate) fn configure(http_timeout: Duration, http_insecure: bool, dns_timeout: Duration) {
    HTTP_TIMEOUT_NS.store(http_timeout.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    HTTP_INSECURE.store(http_insecure, Ordering::Relaxed);
    DNS_TIMEOUT_NS.store(dns_timeout.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    *AGENT.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

/// Seconds as shown in messages (`5`, `0.5`).
fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

// ---------------------------------------------------------------------------------------------
// http_get
// ---------------------------------------------------------------------------------------------

/// `dragonfly.http_get(url, file)` -> HTTP status code.
pub(crate) unsafe extern "C-unwind" fn http_get(l: *mut lua_State) -> c_int {
    // SAFETY: a lua_CFunction: `l` is the running state; the argument strings stay on its stack
    // during the call; the body runs behind `c_entry`.
    unsafe {
        c_entry(l, "http_get", |l| {
            crate::counters::still_busy();
            arg_count(l, "http_get", 2)?;
            let url = arg_bytes(l, "http_get", 1, Coerce::StrOrNum)?;
            let file = arg_bytes(l, "http_get", 2, Coerce::StrOrNum)?;
            let code = fetch(url, file).map_err(|e| LuaFail(e.to_string()))?;
            ffi::lua_pushnumber(l, code as f64);
            Ok(1)
        })
    }
}

/// The agent for the current settings.
fn agent() -> ureq::Agent {
    let mut a = AGENT.lock().unwrap_or_else(|e| e.into_inner());
    a.get_or_insert_with(build_agent).clone()
}

fn build_agent() -> ureq::Agent {
    use ureq::tls::{Certificate, RootCerts, TlsConfig};
    let timeout = Duration::from_nanos(HTTP_TIMEOUT_NS.load(Ordering::Relaxed));
    let insecure = HTTP_INSECURE.load(Ordering::Relaxed);
    let roots = if insecure {
        RootCerts::WebPki
    } else {
        // The system store (/etc/ssl/certs, or SSL_CERT_FILE / SSL_CERT_DIR); the bundled
        // Mozilla roots only when the system has none at all.
        let found = rustls_native_certs::load_native_certs();
        let certs: Vec<Certificate<'static>> = found
            .certs
            .iter()
            .map(|c| Certificate::from_der(c.as_ref()).to_owned())
            .collect();
        if certs.is_empty() {
            RootCerts::WebPki
        } else {
            RootCerts::from(certs)
        }
    };
    let tls = TlsConfig::builder()
        .root_certs(roots)
        .disable_verification(insecure)
        .build();
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .timeout_connect(Some(timeout))
        .max_redirects(MAX_REDIRECTS)
        .http_status_as_error(false)
        .user_agent(concat!("dragonfly-mle/", env!("CARGO_PKG_VERSION")))
        .tls_config(tls)
        .build()
        .new_agent()
}

/// Removes a temporary file unless it was renamed into place.
struct TempFile(Option<PathBuf>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// A fresh name in `target`'s directory: `.<name>.<pid>.<n>.part`.
fn temp_path(target: &Path) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let mut name = std::ffi::OsString::from(".");
    name.push(target.file_name().unwrap_or_else(|| "download".as_ref()));
    name.push(format!(".{}.{n}.part", std::process::id()));
    target.with_file_name(name)
}

/// Why `dragonfly_http_get` failed; the text is what the script gets.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("dragonfly_http_get: cannot open {0}: not a file name")]
    NotAFile(String),
    #[error("dragonfly_http_get: {what} {file}: {source}")]
    File {
        what: &'static str,
        file: String,
        source: std::io::Error,
    },
    #[error("dragonfly_http_get: failed: the URL is not valid UTF-8")]
    BadUrl,
    #[error("dragonfly_http_get: failed: {0}")]
    Http(#[from] ureq::Error),
    #[error("dragonfly_http_get: failed: {0}")]
    Body(std::io::Error),
}

/// Downloads `url` to `file` through a temporary file renamed into place.
fn fetch(url: &[u8], file: &[u8]) -> Result<u16, FetchError> {
    use std::os::unix::ffi::OsStrExt;
    let shown = || String::from_utf8_lossy(file).into_owned();
    let target = Path::new(std::ffi::OsStr::from_bytes(file));
    let cannot = |what: &'static str| {
        move |source: std::io::Error| FetchError::File {
            what,
            file: shown(),
            source,
        }
    };
    if file.is_empty() || target.file_name().is_none() {
        return Err(FetchError::NotAFile(shown()));
    }
    let tmp_path = temp_path(target);
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp_path)
        .map_err(cannot("cannot open"))?;
    let mut tmp = TempFile(Some(tmp_path));
    let url = std::str::from_utf8(url).map_err(|_| FetchError::BadUrl)?;
    let mut resp = agent().get(url).call()?;
    let code = resp.status().as_u16();
    let mut body = resp.body_mut().as_reader();
    copy_body(&mut body, &mut out).map_err(|e| match e {
        CopyError::Read(e) => FetchError::Body(e),
        CopyError::Write(e) => cannot("cannot write")(e),
    })?;
    drop(out);
    let tmp_path = tmp.0.take().unwrap_or_default();
    if let Err(e) = std::fs::rename(&tmp_path, target) {
        tmp.0 = Some(tmp_path);
        return Err(cannot("cannot write")(e));
    }
    Ok(code)
}

enum CopyError {
    Read(std::io::Error),
    Write(std::io::Error),
}

/// Copies the body, telling transfer failures from local write failures.
fn copy_body(body: &mut impl Read, out: &mut File) -> Result<(), CopyError> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        out.write_all(&buf[..n]).map_err(CopyError::Write)?;
    }
}

// ---------------------------------------------------------------------------------------------
// dnslookup
// ---------------------------------------------------------------------------------------------

/// `dragonfly.dnslookup(host)` -> `{ "addr", ... }`.
pub(crate) unsafe extern "C-unwind" fn dnslookup(l: *mut lua_State) -> c_int {
    // SAFETY: a lua_CFunction: `l` is the running state; the host string stays on its stack during
    // the call; the body runs behind `c_entry`.
    unsafe {
        c_entry(l, "dnslookup", |l| {
            crate::counters::still_busy();
            arg_count(l, "dnslookup", 1)?;
            let host = arg_bytes(l, "dnslookup", 1, Coerce::StrOrNum)?;
            let addrs = lookup(host).map_err(|e| LuaFail(e.to_string()))?;
            ffi::lua_createtable(l, addrs.len() as c_int, 0);
            let mut text = [0u8; 64];
            for (i, a) in addrs.iter().enumerate() {
                let mut w = &mut text[..];
                // An IPv6 address is at most 45 characters: the write cannot fail.
                let _ = write!(w, "{a}");
                let len = 64 - w.len();
                push_bytes(l, &text[..len]);
                ffi::lua_rawseti_(l, -2, i as c_int + 1);
            }
            Ok(1)
        })
    }
}

/// Lookup states shared by the caller and its helper thread.
const RUNNING: u8 = 0;
const DONE: u8 = 1;
const ABANDONED: u8 = 2;

/// A resolver run on the helper thread.
type Resolver = fn(&CStr) -> Result<Vec<IpAddr>, LookupWhy>;

/// Why `dnslookup` failed, for the host it was given; the text is what the script gets.
#[derive(Debug, thiserror::Error)]
#[error("getaddrinfo: {host} - {why}")]
struct LookupError {
    host: String,
    why: LookupWhy,
}

/// What went wrong with a lookup.
#[derive(Debug, thiserror::Error)]
enum LookupWhy {
    #[error("the name contains a NUL byte")]
    Nul,
    #[error("{MAX_STUCK_LOOKUPS} earlier lookups are still stuck past their timeout")]
    TooManyStuck,
    #[error("cannot start the lookup thread: {0}")]
    Thread(std::io::Error),
    #[error("timed out after {} s", secs(*.0))]
    TimedOut(Duration),
    #[error("the lookup thread ended without a result")]
    NoResult,
    /// The resolver's own reason (`gai_strerror`).
    #[error("{0}")]
    Resolver(String),
    #[error(transparent)]
    System(std::io::Error),
}

/// Resolves `host` on a helper thread, waiting at most `dns_timeout`.
fn lookup(host: &[u8]) -> Result<Vec<IpAddr>, LookupError> {
    let timeout = Duration::from_nanos(DNS_TIMEOUT_NS.load(Ordering::Relaxed));
    lookup_with(host, timeout, resolve)
}

/// Runs `resolver` on a helper thread and waits at most `timeout` for it. A thread still
/// running at its timeout is counted in `STUCK_LOOKUPS` until it ends; while
/// `MAX_STUCK_LOOKUPS` are, lookups fail at once instead of starting more threads.
fn lookup_with(host: &[u8], timeout: Duration, resolver: Resolver) -> Result<Vec<IpAddr>, LookupError> {
    let fail = |why: LookupWhy| LookupError {
        host: String::from_utf8_lossy(host).into_owned(),
        why,
    };
    let Ok(name) = CString::new(host) else {
        return Err(fail(LookupWhy::Nul));
    };
    if STUCK_LOOKUPS.load(Ordering::Acquire) >= MAX_STUCK_LOOKUPS {
        return Err(fail(LookupWhy::TooManyStuck));
    }
    let state = Arc::new(AtomicU8::new(RUNNING));
    let (tx, rx) = mpsc::sync_channel(1);
    let st = Arc::clone(&state);
    let spawned = std::thread::Builder::new()
        .name("dfm-dnslookup".into())
        .stack_size(128 * 1024)
        .spawn(move || {
            let r = resolver(&name);
            let _ = tx.send(r);
            if st
                .compare_exchange(RUNNING, DONE, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                // The caller gave up on this lookup and counted it as stuck.
                STUCK_LOOKUPS.fetch_sub(1, Ordering::AcqRel);
            }
        });
    if let Err(e) = spawned {
        return Err(fail(LookupWhy::Thread(e)));
    }
    let r = match rx.recv_timeout(timeout) {
        Ok(r) => r,
        Err(_) => {
            if state
                .compare_exchange(RUNNING, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                STUCK_LOOKUPS.fetch_add(1, Ordering::AcqRel);
                return Err(fail(LookupWhy::TimedOut(timeout)));
            }
            // It finished just now: its result is in the channel.
            match rx.try_recv() {
                Ok(r) => r,
                Err(_) => Err(LookupWhy::NoResult),
            }
        }
    };
    r.map_err(fail)
}

/// `getaddrinfo(host, AF_UNSPEC, SOCK_DGRAM)`: the addresses, de-duplicated, in resolver
/// order, or the resolver's reason.
fn resolve(host: &CStr) -> Result<Vec<IpAddr>, LookupWhy> {
    // SAFETY: a zeroed addrinfo is a valid "no hints" value; the fields set are plain ints.
    let mut hints: libc::addrinfo = unsafe { std::mem::zeroed() };
    hints.ai_family = libc::AF_UNSPEC;
    hints.ai_socktype = libc::SOCK_DGRAM;
    let mut res: *mut libc::addrinfo = std::ptr::null_mut();
    // SAFETY: `host` is NUL-terminated, `hints` is initialised, `res` receives a list that is
    // freed below.
    let rc = unsafe { libc::getaddrinfo(host.as_ptr(), std::ptr::null(), &hints, &mut res) };
    if rc != 0 {
        if rc == libc::EAI_SYSTEM {
            return Err(LookupWhy::System(std::io::Error::last_os_error()));
        }
        // SAFETY: gai_strerror returns a static NUL-terminated string.
        let why = unsafe { CStr::from_ptr(libc::gai_strerror(rc)) };
        return Err(LookupWhy::Resolver(why.to_string_lossy().into_owned()));
    }
    let mut out: Vec<IpAddr> = Vec::new();
    let mut p = res;
    while !p.is_null() {
        // SAFETY: `p` walks the list getaddrinfo returned; each ai_addr points to a sockaddr of
        // the family it names (read unaligned to be safe).
        let (a, next) = unsafe {
            let ai = &*p;
            let a = match ai.ai_family {
                libc::AF_INET if !ai.ai_addr.is_null() => {
                    let sa = std::ptr::read_unaligned(ai.ai_addr.cast::<libc::sockaddr_in>());
                    Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr))))
                }
                libc::AF_INET6 if !ai.ai_addr.is_null() => {
                    let sa = std::ptr::read_unaligned(ai.ai_addr.cast::<libc::sockaddr_in6>());
                    Some(IpAddr::V6(Ipv6Addr::from(sa.sin6_addr.s6_addr)))
                }
                _ => None,
            };
            (a, ai.ai_next)
        };
        if let Some(a) = a
            && !out.contains(&a)
        {
            out.push(a);
        }
        p = next;
    }
    // SAFETY: `res` came from a successful getaddrinfo and is freed once.
    unsafe { libc::freeaddrinfo(res) };
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// date2epoch
// ---------------------------------------------------------------------------------------------

/// Whether `path` names the memory of a process or of the machine (`/proc/PID/mem`, a task's
/// `mem`, `/dev/mem`, `/dev/kmem`, `/dev/port`), through any symlink: the prelude refuses to
/// open it for scripts (writing it writes the engine's memory).
pub(crate) fn is_memory_file(path: &Path) -> bool {
    let Ok(c) = std::fs::canonicalize(path) else {
        return false;
    };
    matches!(c.to_str(), Some("/dev/mem" | "/dev/kmem" | "/dev/port"))
        || (c.starts_with("/proc") && c.file_name().is_some_and(|n| n == "mem"))
}

/// `E.memory_file(path)` for the prelude: [`is_memory_file`] of a string, false for anything
/// else.
pub(crate) unsafe extern "C-unwind" fn memory_file(l: *mut lua_State) -> c_int {
    // SAFETY: a lua_CFunction: `l` is the running state; the string stays on its stack during
    // the call; the body runs behind `c_entry`.
    unsafe {
        c_entry(l, "memory_file", |l| {
            let is = super::ffi_util::str_at(l, 1).is_some_and(|p| {
                use std::os::unix::ffi::OsStrExt;
                is_memory_file(Path::new(std::ffi::OsStr::from_bytes(p)))
            });
            ffi::lua_pushboolean(l, c_int::from(is));
            Ok(1)
        })
    }
}

/// `dragonfly.date2epoch(ts)` -> seconds since the epoch, fraction included.
pub(crate) unsafe extern "C-unwind" fn date2epoch(l: *mut lua_State) -> c_int {
    // SAFETY: a lua_CFunction: `l` is the running state; the string stays on its stack during the
    // call; the body runs behind `c_entry`.
    unsafe {
        c_entry(l, "date2epoch", |l| {
            arg_count(l, "date2epoch", 1)?;
            let ts = arg_bytes(l, "date2epoch", 1, Coerce::StrOrNum)?;
            match parse_timestamp(ts) {
                Some(t) => {
                    ffi::lua_pushnumber(l, t);
                    Ok(1)
                }
                None => {
                    const MAX_SHOWN: usize = 100;
                    let shown = String::from_utf8_lossy(&ts[..ts.len().min(MAX_SHOWN)]);
                    let more = if ts.len() > MAX_SHOWN { "..." } else { "" };
                    Err(LuaFail(format!("date2epoch: malformed timestamp '{shown}{more}'")))
                }
            }
        })
    }
}

/// `n` ASCII digits at `s[i..]` as a number.
/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction][Z|±HH|±HHMM|±HH:MM]` into seconds since the epoch,
/// fraction included. Without a zone the time is local (`mktime`, DST decided by the zone
/// rules). `None` when malformed or out of range.
pub(crate) fn parse_timestamp(s: &[u8]) -> Option<f64> {
    let t = crate::event::timestamp::parse(s)?;
    let whole = match t.offset {
        Some(o) => t.epoch_secs(o),
        None => local_epoch(t.year as u32, t.month, t.day, t.hour, t.min, t.sec)?,
    };
    Some(whole as f64 + f64::from(t.nanos) / 1e9)
}

/// `mktime` of a zeroed `tm` with `tm_isdst = -1` (the zone's rules decide DST).
fn local_epoch(year: u32, month: u32, day: u32, hour: u32, min: u32, sec: u32) -> Option<i64> {
    // SAFETY: an all-zero `tm` is valid (its zone pointer may be null).
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    tm.tm_year = year as c_int - 1900;
    tm.tm_mon = month as c_int - 1;
    tm.tm_mday = day as c_int;
    tm.tm_hour = hour as c_int;
    tm.tm_min = min as c_int;
    tm.tm_sec = sec as c_int;
    tm.tm_isdst = -1;
    // mktime sets tm_wday on success; -1 is the only failure result, and a valid time too.
    tm.tm_wday = -1;
    // SAFETY: `tm` is initialised; glibc's mktime is thread-safe.
    let t = unsafe { libc::mktime(&mut tm) };
    if t == -1 && tm.tm_wday == -1 {
        return None;
    }
    Some(t as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zoned_timestamps_parse_with_their_fraction() {
        let cases: &[(&str, f64)] = &[
            ("1970-01-01T00:00:00Z", 0.0),
            ("1970-01-01T00:00:00.5+0000", 0.5),
            ("1969-12-31T23:59:59.25Z", -0.75),
            ("2000-02-29T12:00:00Z", 951_825_600.0),
            ("2026-11-28T06:30:10.123456+0000", 1_795_847_410.123456),
            ("2026-11-28T06:30:10-0500", 1_795_847_410.0 + 5.0 * 3600.0),
            ("2026-11-28T06:30:10+05:30", 1_795_847_410.0 - 5.5 * 3600.0),
            ("2026-11-28T06:30:10+05", 1_795_847_410.0 - 5.0 * 3600.0),
        ];
        for &(s, want) in cases {
            let got = parse_timestamp(s.as_bytes());
            assert!(
                got.is_some_and(|g| (g - want).abs() < 1e-6),
                "{s}: got {got:?}, want {want}"
            );
        }
    }

    /// Blocks until `RELEASE` is set, then resolves to 192.0.2.1.
    fn stuck_resolver(_: &CStr) -> Result<Vec<IpAddr>, LookupWhy> {
        while !RELEASE.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))])
    }
    static RELEASE: AtomicBool = AtomicBool::new(false);

    #[test]
    fn stuck_lookups_time_out_and_are_bounded() {
        let t = Duration::from_millis(20);
        for _ in 0..MAX_STUCK_LOOKUPS {
            let e = lookup_with(b"stuck.example", t, stuck_resolver)
                .unwrap_err()
                .to_string();
            assert_eq!(e, "getaddrinfo: stuck.example - timed out after 0.02 s");
        }
        assert_eq!(STUCK_LOOKUPS.load(Ordering::Acquire), MAX_STUCK_LOOKUPS);
        // The bound is reached: fail at once, even with a resolver that would answer.
        let e = lookup_with(b"other.example", t, |_| Ok(Vec::new()))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("getaddrinfo: other.example - 8 earlier lookups"), "{e}");
        RELEASE.store(true, Ordering::Release);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while STUCK_LOOKUPS.load(Ordering::Acquire) != 0 {
            assert!(std::time::Instant::now() < deadline, "stuck lookups never ended");
            std::thread::sleep(Duration::from_millis(5));
        }
        let r = lookup_with(b"stuck.example", Duration::from_secs(5), stuck_resolver);
        assert_eq!(r.unwrap(), vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))]);
    }

    #[test]
    fn resolve_dedups_and_reports_the_reason() {
        let a = resolve(c"127.0.0.1").unwrap();
        assert_eq!(
            a,
            vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            "one address despite several socket types"
        );
        assert!(resolve(c"no-such-host.invalid").is_err());
    }

    #[test]
    fn malformed_timestamps_are_rejected() {
        for s in [
            "",
            "yesterday",
            "2026-13-45T99:00:00",
            "2026-02-29T00:00:00Z",
            "2026-11-28T24:00:00Z",
            "2026-11-28T06:30",
            "2026-11-28T06:30:10.",
            "2026-11-28T06:30:10.12x",
            "2026-11-28T06:30:10+5",
            "2026-11-28T06:30:10+0560",
            "2026-11-28T06:30:10Z ",
            "2026/11/28T06:30:10Z",
            "2026-11-28T06:30:10+05:3",
            "26-11-28T06:30:10Z",
            "12026-11-28T06:30:10Z",
            "2026-011-28T06:30:10Z",
            "2026-11-28T06:30:100Z",
            "2026--11-28T06:30:10Z",
            "2026-11-28T06:30:Z",
        ] {
            assert_eq!(parse_timestamp(s.as_bytes()), None, "{s:?}");
        }
    }

    /// As `strptime`'s `%m`, `%d`, `%H`, `%M` and `%S` (the original's date2epoch), fields of
    /// one digit are read; the date and time may be apart by `T`, `t` or a space.
    #[test]
    fn one_digit_fields_and_separators_are_read() {
        let want = parse_timestamp(b"2024-03-01T02:03:04Z").unwrap();
        for s in [
            "2024-3-1T2:3:4Z",
            "2024-03-1t02:3:04Z",
            "2024-3-01 02:03:4Z",
            "2024-03-01T02:03:04.0Z",
        ] {
            assert_eq!(parse_timestamp(s.as_bytes()), Some(want), "{s:?}");
        }
    }
}
