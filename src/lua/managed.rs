//! Managed Redis: with `redis_host = "managed"` (or no Redis named in config.lua at all) the
//! engine runs its own `redis-server` on a private unix socket under the run directory. Its
//! data persists across restarts (an append-only file, fsync once a second, in
//! `<run dir>/managed-redis-data/`, locked by one engine at a time) unless `redis_persist =
//! false`; it runs with no memory limit and the `noeviction` policy, as Redis's defaults. It
//! is started on the first `hiredis.connect()`, so configurations that never use Redis need
//! none, and stopped when the engine exits (gracefully: the file is complete); the child also
//! gets `PR_SET_PDEATHSIG`, so a killed engine leaves no orphan (then up to the last second of
//! writes may be lost). A server that dies while the engine runs is started again by the next
//! connection attempt.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The Debian package that provides `redis-server`.
pub(crate) const PACKAGE: &str = "redis-server";

/// Why the managed server cannot be reached. Cloneable: a failed start is kept and given to
/// every later connection attempt.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum ManagedError {
    #[error("managed Redis is not configured")]
    NotConfigured,
    #[error("managed Redis was stopped")]
    Stopped,
    #[error(
        "managed Redis: redis-server not found in PATH; install the Debian package {PACKAGE} \
         (apt-get install {PACKAGE}), or set redis_host/redis_port in config.lua"
    )]
    NoServer,
    #[error("managed Redis: {what}: {source}")]
    Io {
        what: String,
        source: std::sync::Arc<std::io::Error>,
    },
    #[error(
        "managed Redis: {} is in use by another engine (give each engine its own --run-dir, \
         or set redis_persist = false)",
        .0.display()
    )]
    InUse(PathBuf),
    #[error("managed Redis did not answer within 10 s")]
    NoAnswer,
    #[error("managed Redis exited at startup ({status}): {log}")]
    Exited { status: String, log: String },
}

/// A failed file or process operation of the managed server, described by `what`.
fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ManagedError {
    let what = what.into();
    move |e| ManagedError::Io {
        what,
        source: std::sync::Arc::new(e),
    }
}

struct Running {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
    /// The data directory's lock (held while the server runs).
    _lock: Option<std::fs::File>,
    /// How it was started, to start it again.
    setup: Setup,
    /// Dropped with this: the thread that started the server (and holds its death signal)
    /// then ends. It parked for ever, one thread and its two descriptors of `redis.log` left
    /// per restart (resources audit).
    _forker: std::sync::mpsc::Sender<()>,
}

/// The last time the server exited while the engine ran, and how (see [`exited_since`]).
static LAST_EXIT: Mutex<Option<(Instant, String)>> = Mutex::new(None);

/// How the managed server exited, if it did after `since` (it was started again: a
/// connection's `redis_restored` record says so).
pub(crate) fn exited_since(since: Instant) -> Option<String> {
    let g = LAST_EXIT.lock().unwrap_or_else(|e| e.into_inner());
    g.as_ref().filter(|(at, _)| *at >= since).map(|(_, how)| how.clone())
}

/// Where the managed server keeps its files, and whether its data persists.
#[derive(Clone)]
struct Setup {
    run_dir: PathBuf,
    persist: bool,
}

enum State {
    /// Not started yet; where to put the socket when it is.
    Idle(Setup),
    Up(Running),
    /// It ran and died, and starting it again failed (killed while it loaded its data, say):
    /// started again at the next connection attempt, whatever the last one gave.
    Lost(Setup),
    Failed(ManagedError),
    Stopped,
}

static MANAGED: Mutex<Option<State>> = Mutex::new(None);

/// Enables managed Redis for this process, with its files under `run_dir`; its data persists
/// across restarts when `persist`.
pub(crate) fn configure(run_dir: &Path, persist: bool) {
    *MANAGED.lock().unwrap_or_else(|e| e.into_inner()) = Some(State::Idle(Setup {
        run_dir: run_dir.to_path_buf(),
        persist,
    }));
}

/// The directory of the managed server's persistent data under `run_dir`.
pub(crate) fn data_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("managed-redis-data")
}

/// The socket of the managed server, starting it on first use.
pub(crate) fn socket() -> Result<PathBuf, ManagedError> {
    let mut g = MANAGED.lock().unwrap_or_else(|e| e.into_inner());
    match g.take() {
        None => Err(ManagedError::NotConfigured),
        Some(State::Up(mut r)) => {
            let Ok(Some(status)) = r.child.try_wait() else {
                let s = r.socket.clone();
                *g = Some(State::Up(r));
                return Ok(s);
            };
            // The server died while the engine ran (the OOM killer, a kill): start it again
            // with its data (the append-only file), releasing its lock and files first. A
            // failed start is tried again at the next connection attempt.
            let how = format!("redis-server exited ({status})");
            crate::eprintln_safe!("dragonfly-mle: managed Redis: {how}; starting it again");
            *LAST_EXIT.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), how));
            let setup = r.setup.clone();
            let _ = std::fs::remove_dir_all(&r.dir);
            drop(r);
            start_again(&mut g, setup)
        }
        Some(State::Lost(setup)) => start_again(&mut g, setup),
        Some(State::Failed(e)) => {
            *g = Some(State::Failed(e.clone()));
            Err(e)
        }
        Some(State::Stopped) => {
            *g = Some(State::Stopped);
            Err(ManagedError::Stopped)
        }
        Some(State::Idle(setup)) => match start(&setup) {
            Ok(r) => {
                let s = r.socket.clone();
                *g = Some(State::Up(r));
                Ok(s)
            }
            Err(e) => {
                *g = Some(State::Failed(e.clone()));
                Err(e)
            }
        },
    }
}

/// Starts the server again after it died while the engine ran; a failure leaves it to the
/// next connection attempt.
fn start_again(g: &mut Option<State>, setup: Setup) -> Result<PathBuf, ManagedError> {
    match start(&setup) {
        Ok(r) => {
            let s = r.socket.clone();
            *g = Some(State::Up(r));
            Ok(s)
        }
        Err(e) => {
            crate::eprintln_safe!("dragonfly-mle: {e}");
            *g = Some(State::Lost(setup));
            Err(e)
        }
    }
}

fn find_server() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("redis-server"))
        .find(|p| p.is_file())
}

fn start(setup: &Setup) -> Result<Running, ManagedError> {
    let run_dir = setup.run_dir.as_path();
    let server = find_server().ok_or(ManagedError::NoServer)?;
    remove_stale(run_dir);
    let dir = run_dir.join(format!("managed-redis-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(io(format!("cannot create {}", dir.display())))?;
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
    let socket = dir.join("redis.sock");
    let log = std::fs::File::create(dir.join("redis.log")).map_err(io("redis.log"))?;
    // With a privilege drop ahead (`--user`), the server runs as that user from the start
    // and owns its directory.
    let user = crate::privilege::helper_user();
    // Persistent data: one directory that outlives the engine, locked so that two engines
    // sharing a run directory cannot write one append-only file.
    let (data, lock) = if setup.persist {
        let data = data_dir(run_dir);
        std::fs::create_dir_all(&data).map_err(io(format!("cannot create {}", data.display())))?;
        let _ = std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700));
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(data.join("lock"))
            .map_err(io(data.display().to_string()))?;
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(ManagedError::InUse(data));
        }
        (data, Some(lock))
    } else {
        (dir.clone(), None)
    };
    if let Some(u) = user {
        for p in [dir.clone(), dir.join("redis.log"), data.clone()] {
            std::os::unix::fs::chown(&p, Some(u.uid), Some(u.gid)).map_err(io(format!("chown {}", p.display())))?;
        }
    }
    let mut cmd = Command::new(&server);
    cmd.args([
        "--port",
        "0",
        "--daemonize",
        "no",
        "--maxmemory",
        "0",
        "--maxmemory-policy",
        "noeviction",
    ]);
    if setup.persist {
        cmd.args(["--save", "", "--appendonly", "yes", "--appendfsync", "everysec"]);
    } else {
        cmd.args(["--save", "", "--appendonly", "no"]);
    }
    // Redis 7 refuses `MODULE LOAD` unless allowed: config.lua's `modules` are loaded through
    // the private socket (earlier versions have no such setting, and allow it).
    if server_major_version(&server).is_some_and(|v| v >= 7) {
        cmd.args(["--enable-module-command", "local"]);
    }
    cmd.arg("--unixsocket")
        .arg(&socket)
        .args(["--unixsocketperm", "700"])
        .arg("--dir")
        .arg(&data)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(io("redis.log"))?)
        .stderr(log);
    if let Some(u) = user {
        // std clears the supplementary groups before setuid when it runs as root.
        cmd.uid(u.uid).gid(u.gid);
    }
    // SAFETY: prctl and getppid are async-signal-safe; nothing else runs in the child before
    // exec.
    unsafe {
        let parent = libc::getpid();
        cmd.pre_exec(move || {
            // Die with the engine, even when it is killed with SIGKILL.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    // The death signal follows the thread that forks: fork from a thread that lives as long
    // as the process (it waits for the server to exit).
    let (tx, rx) = std::sync::mpsc::channel();
    let (forker, until) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("dfm-redis".into())
        .spawn(move || {
            let r = cmd.spawn();
            // The parent's copies of the log's descriptors.
            drop(cmd);
            let _ = tx.send(r);
            // Keep this thread (and so the death-signal tie) alive as long as the server's
            // `Running` (until it is stopped or found dead).
            let _ = until.recv();
        })
        .map_err(io("starting its thread"))?;
    let mut child = rx
        .recv()
        .map_err(|e| io("starting its thread")(std::io::Error::other(e)))?
        .map_err(io(format!("cannot start {}", server.display())))?;
    // Ready when it answers PING with PONG: a server loading its persisted data accepts
    // connections but answers every command with -LOADING until it is done, which it may
    // take longer than 10 s to be on a large data set; that wait lasts as long as the server.
    let t = Instant::now();
    let mut told = false;
    loop {
        match ping(&socket) {
            Ping::Pong => break,
            Ping::Loading => {
                if !told {
                    crate::eprintln_safe!(
                        "dragonfly-mle: managed Redis is loading its data from {}",
                        data.display()
                    );
                    told = true;
                }
            }
            Ping::NoAnswer if t.elapsed() > Duration::from_secs(10) => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = std::fs::remove_dir_all(&dir);
                return Err(ManagedError::NoAnswer);
            }
            Ping::NoAnswer => {}
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(dir.join("redis.log")).unwrap_or_default();
            let _ = std::fs::remove_dir_all(&dir);
            return Err(ManagedError::Exited {
                status: status.to_string(),
                log: log.trim().to_string(),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(Running {
        child,
        dir,
        socket,
        _lock: lock,
        setup: setup.clone(),
        _forker: forker,
    })
}

/// What a starting server answered to PING.
enum Ping {
    Pong,
    Loading,
    NoAnswer,
}

/// Sends one PING on a new connection to `socket` and reads the reply's first line.
fn ping(socket: &Path) -> Ping {
    use std::io::{Read, Write};
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(socket) else {
        return Ping::NoAnswer;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"*1\r\n$4\r\nPING\r\n").is_err() {
        return Ping::NoAnswer;
    }
    let mut buf = [0u8; 64];
    let mut n = 0;
    while n < buf.len() && !buf[..n].ends_with(b"\r\n") {
        match s.read(&mut buf[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    if buf[..n].starts_with(b"+PONG") {
        Ping::Pong
    } else if buf[..n].starts_with(b"-LOADING") {
        Ping::Loading
    } else {
        Ping::NoAnswer
    }
}

/// Removes the directories of managed servers whose engine no longer runs (killed engines
/// cannot clean up after themselves).
fn remove_stale(run_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(run_dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("managed-redis-")) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Stops the managed server (if it was started) and removes its files.
pub(crate) fn stop() {
    let mut g = MANAGED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(State::Up(mut r)) = g.take() {
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(r.child.id() as libc::pid_t, libc::SIGTERM) };
        let t = Instant::now();
        while !matches!(r.child.try_wait(), Ok(Some(_))) {
            if t.elapsed() > Duration::from_secs(5) {
                let _ = r.child.kill();
                let _ = r.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = std::fs::remove_dir_all(&r.dir);
    }
    *g = Some(State::Stopped);
}

/// The major version `server --version` reports (`Redis server v=7.0.15 ...`).
fn server_major_version(server: &std::path::Path) -> Option<u32> {
    let out = Command::new(server).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v = text.split("v=").nth(1)?;
    v.split('.').next()?.trim().parse().ok()
}
