//! `dragonfly-mle check`: the configuration, every script, and what the configuration names
//! outside itself (inputs readable, Redis and Kafka inputs answering, output directories
//! writable, a named Redis answering).

use super::*;

/// `check`: loads the configuration and every script (chunk run; `setup()` too when `setup`),
/// and checks what the configuration names outside itself: `file://` inputs exist and can be
/// read, Redis and Kafka inputs answer, file and Parquet outputs can be written where they go,
/// a named Redis (or a cluster's seeds) answers.
/// Every problem is reported at once.
pub fn check(opts: &Options, setup: bool) -> anyhow::Result<String> {
    let cfg = load(opts)?;
    // With `-p`/`--user`, what the engine will do as that user is checked as that user.
    if let Some(u) = &opts.user {
        crate::privilege::set_target(crate::privilege::lookup(u).context("--user")?);
    }
    let mut problems = check_surroundings(&cfg);
    crate::ml::set_native(cfg.ml_native);
    crate::lua::builtins::configure(cfg.http_timeout, cfg.http_insecure, cfg.dns_timeout);
    if cfg.redis == RedisTarget::Managed {
        crate::lua::managed::configure(&run_dir(opts, &cfg), cfg.redis_persist);
    }
    std::env::set_current_dir(crate::privilege::host_path(&cfg.root))
        .with_context(|| format!("cannot enter {}", cfg.root.display()))?;
    // A chunk or `setup()` that never returns cannot be interrupted: after CHECK_SCRIPTS_WAIT
    // the check gives up on it and fails, instead of hanging.
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let done = Arc::clone(&done);
        let _ = std::thread::Builder::new().name("dfm-check-watch".into()).spawn(move || {
            let start = std::time::Instant::now();
            while start.elapsed() < CHECK_SCRIPTS_WAIT {
                std::thread::sleep(std::time::Duration::from_millis(100));
                if done.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
            }
            crate::eprintln_safe!(
                "dragonfly-mle: check: loading the scripts{} did not finish in {} s (a chunk or setup() that does not return? the last one started: {})",
                if setup { " and running their setup()" } else { "" },
                CHECK_SCRIPTS_WAIT.as_secs(),
                crate::lua::script::loading()
            );
            crate::lua::managed::stop();
            std::process::exit(1);
        });
    }
    let r = load_each_script(&cfg, setup);
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    crate::lua::managed::stop();
    problems.extend(r);
    // Warnings are shown with the problems too (a misspelled default_output beside a missing
    // input file was not said until the input was there).
    let warnings: String = cfg.warnings.iter().map(|w| format!("\n  warning: {w}")).collect();
    if !problems.is_empty() {
        anyhow::bail!("{}:\n  {}{warnings}", cfg.config_file.display(), problems.join("\n  "));
    }
    Ok(format!(
        "{}: OK ({} inputs, {} analyzers, {} outputs{}){warnings}",
        cfg.config_file.display(),
        cfg.inputs.len(),
        cfg.analyzers.len(),
        cfg.outputs.len(),
        if setup { "; every setup() ran" } else { "" }
    ))
}

/// How long `check` waits for the scripts to load (and their `setup()` to run).
const CHECK_SCRIPTS_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Loads every script of `cfg` in a scratch worker (and runs their `setup()` with `setup`).
pub(super) fn load_scripts(cfg: &Config, setup: bool) -> Result<(), crate::lua::ScriptError> {
    let (filters, analyzers) = script_specs(cfg);
    load_some(cfg, &filters, &analyzers, setup)
}

/// As [`load_scripts`], with every script's problem: when loading them together fails, each
/// is loaded (and set up) alone, so that `check` reports every script that fails, not only
/// the first (a `setup()` that needs another script's is reported as loading them together
/// did when no script fails alone).
fn load_each_script(cfg: &Config, setup: bool) -> Vec<String> {
    let Err(first) = load_scripts(cfg, setup) else {
        return Vec::new();
    };
    let (filters, analyzers) = script_specs(cfg);
    let mut out = Vec::new();
    for (k, spec) in filters.iter().chain(&analyzers).enumerate() {
        let one = std::slice::from_ref(spec);
        let (f, a, i) = if k < filters.len() {
            (one, &[][..], k)
        } else {
            (&[][..], one, k - filters.len())
        };
        if let Err(mut e) = load_some(cfg, f, a, setup) {
            e.key = crate::lua::script::script_key(spec.role, i);
            out.push(e.to_string());
        }
    }
    if out.is_empty() {
        out.push(first.to_string());
    }
    out
}

/// Loads the scripts given in a scratch worker with every tag of `cfg`.
fn load_some(
    cfg: &Config,
    filters: &[ScriptSpec],
    analyzers: &[ScriptSpec],
    setup: bool,
) -> Result<(), crate::lua::ScriptError> {
    let mut c = WorkerCtx::new(
        cfg.inputs.iter().map(|i| i.tag.clone()).collect(),
        cfg.analyzers.iter().map(|a| a.tag.clone()).collect(),
        cfg.outputs.iter().map(|o| o.tag.clone()).collect(),
        false,
    );
    c.redis.target = cfg.redis.clone();
    c.set_state_settings(state_settings(cfg));
    let r = c.open_all(filters, analyzers, setup);
    if setup && r.is_ok() {
        c.run_setup_calls();
    }
    c.close();
    r
}

/// What `check` verifies beyond config.lua itself, as "key: problem" lines. Paths are looked
/// up where they are now (inside the root after a chroot: a reload's check).
pub(super) fn check_surroundings(cfg: &Config) -> Vec<String> {
    use crate::config::{InputUri, OutputUri};
    use crate::privilege::host_path;
    let mut out = Vec::new();
    for (i, inp) in cfg.inputs.iter().enumerate() {
        match &inp.uri {
            InputUri::File { path, .. } | InputUri::Zfile { path, .. } => {
                let gz = matches!(inp.uri, InputUri::Zfile { .. });
                if let Err(e) = readable_input(&host_path(path), gz) {
                    out.push(format!("inputs[{}].uri: cannot read {}: {e}", i + 1, path.display()));
                }
            }
            // A directory is never a file to follow (the input would wait for ever).
            InputUri::Tail { path, .. } if host_path(path).is_dir() => {
                out.push(format!(
                    "inputs[{}].uri: {} is a directory, not a file",
                    i + 1,
                    path.display()
                ));
            }
            InputUri::Ipc { path, .. } => {
                use std::os::unix::fs::FileTypeExt;
                if let Ok(m) = std::fs::symlink_metadata(host_path(path))
                    && !m.file_type().is_socket()
                {
                    out.push(format!(
                        "inputs[{}].uri: {} exists and is not a socket (the input binds a socket there)",
                        i + 1,
                        path.display()
                    ));
                } else if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
                    && !host_path(dir).is_dir()
                {
                    out.push(format!(
                        "inputs[{}].uri: {} is not a directory (the input binds its socket in it)",
                        i + 1,
                        dir.display()
                    ));
                }
            }
            InputUri::Redis(spec) => {
                let target = RedisTarget::Tcp(spec.host.clone(), spec.port);
                if let Err(e) = ping(&target, cfg) {
                    out.push(format!("inputs[{}].uri: no answer from {}: {e}", i + 1, spec.name()));
                }
            }
            InputUri::Kafka(spec) => {
                if let Err(e) = crate::source::kafka::probe(spec, std::time::Duration::from_secs(5)) {
                    out.push(format!("inputs[{}].uri: {e}", i + 1));
                }
            }
            _ => {}
        }
    }
    for (i, o) in cfg.outputs.iter().enumerate() {
        let dir = match &o.uri {
            OutputUri::File { path, .. } | OutputUri::Zfile { path, .. } if host_path(path).is_dir() => {
                out.push(format!("outputs[{}].uri: {} is a directory", i + 1, path.display()));
                continue;
            }
            OutputUri::File { path, .. } | OutputUri::Zfile { path, .. }
                if let Some(what) = crate::sink::file::not_a_file(&host_path(path)) =>
            {
                out.push(format!("outputs[{}].uri: {} is {what}", i + 1, path.display()));
                continue;
            }
            // A file that exists must open for writing (a file of another user's, read-only);
            // one to be made needs its directory.
            OutputUri::File { path, .. } | OutputUri::Zfile { path, .. } if host_path(path).exists() => {
                if let Err(e) = std::fs::OpenOptions::new().append(true).open(host_path(path)) {
                    out.push(format!("outputs[{}].uri: cannot write {}: {e}", i + 1, path.display()));
                }
                continue;
            }
            OutputUri::File { path, .. } | OutputUri::Zfile { path, .. } => {
                path.parent().map(std::path::Path::to_path_buf).unwrap_or_default()
            }
            OutputUri::Parquet { dir, .. } => dir.clone(),
            _ => continue,
        };
        let parquet = matches!(o.uri, OutputUri::Parquet { .. });
        let as_user = |d: &std::path::Path| match crate::privilege::helper_user() {
            Some(u) if parquet => writable_by(d, u),
            _ => Ok(()),
        };
        if let Err(e) = writable_dir(&host_path(&dir)).and_then(|()| as_user(&host_path(&dir))) {
            out.push(format!(
                "outputs[{}].uri: cannot write in {}: {e}",
                i + 1,
                dir.display()
            ));
        }
    }
    // The engine's own files, `{log}` and `{stats}`, in the log directory.
    for (name, what) in [("dragonfly-mle.log", "{log}"), ("dragonfly-mle-stats.log", "{stats}")] {
        let path = cfg.log_dir.join(name);
        let r = if host_path(&path).exists() {
            std::fs::OpenOptions::new()
                .append(true)
                .open(host_path(&path))
                .map(drop)
                .map_err(anyhow::Error::from)
        } else {
            writable_dir(&host_path(&cfg.log_dir))
        };
        if let Err(e) = r {
            out.push(format!("log directory: cannot write {what} ({}): {e}", path.display()));
        }
    }
    if let RedisTarget::Cluster(seeds) = &cfg.redis {
        if let Err(e) = crate::lua::hiredis::open_link(&cfg.redis, cfg.redis_timeouts()) {
            let names: Vec<String> = seeds.iter().map(|(h, p)| format!("{h}:{p}")).collect();
            out.push(format!(
                "redis_cluster: no seed node ({}) gave the cluster's slots: {e}",
                names.join(", ")
            ));
        }
    } else if cfg.redis != RedisTarget::Managed
        && let Err(e) = ping(&cfg.redis, cfg)
    {
        out.push(format!(
            "redis_host/redis_port: no answer from {}:{}: {e}",
            cfg.redis_host, cfg.redis_port
        ));
    }
    out
}

/// Whether the user `u` (the one a privilege drop will run as) may create files in the
/// existing directory `dir`, by its permission bits (the process, root until the drop, may
/// create them anywhere). Root's own drop target is not checked.
pub(super) fn writable_by(dir: &std::path::Path, u: crate::privilege::UserIds) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let Ok(m) = std::fs::metadata(dir) else {
        return Ok(());
    };
    let mode = m.mode();
    let ok = u.uid == 0
        || (m.uid() == u.uid && mode & 0o300 == 0o300)
        || (m.uid() != u.uid && m.gid() == u.gid && mode & 0o030 == 0o030)
        || (m.uid() != u.uid && m.gid() != u.gid && mode & 0o003 == 0o003);
    if !ok {
        anyhow::bail!(
            "the user the engine drops to (uid {}, gid {}) cannot create files there (owner {}, group {}, mode {:o})",
            u.uid,
            u.gid,
            m.uid(),
            m.gid(),
            mode & 0o7777
        );
    }
    Ok(())
}

/// Whether a `file://` (`zfile://` when `gz`) input can be read: a file (not a directory)
/// that opens, and for `zfile://`, empty or starting as gzip does.
fn readable_input(path: &std::path::Path, gz: bool) -> anyhow::Result<()> {
    let f = std::fs::File::open(path)?;
    let m = f.metadata()?;
    if m.is_dir() {
        anyhow::bail!("it is a directory");
    }
    if gz && m.len() > 0 && !crate::source::file::is_gzip(path)? {
        anyhow::bail!("it is not gzip-compressed (zfile:// reads gzip files; file:// reads plain ones)");
    }
    Ok(())
}

/// Whether the Redis at `target` answers a `PING` (within the configured timeouts).
fn ping(target: &RedisTarget, cfg: &Config) -> anyhow::Result<()> {
    let mut c = crate::lua::hiredis::open(target, cfg.redis_timeouts())?;
    redis::cmd("PING").query::<String>(&mut c)?;
    Ok(())
}

/// Whether files can be created in `dir` (the log directory is created at startup, so a
/// directory that does not exist yet counts when one can be made in its nearest existing
/// parent).
pub(super) fn writable_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    let mut d = dir;
    while !d.exists() {
        d = d.parent().context("no existing parent directory")?;
    }
    if !d.is_dir() {
        anyhow::bail!("{} is not a directory", d.display());
    }
    let c = std::ffi::CString::new(d.as_os_str().as_encoded_bytes())?;
    // SAFETY: `c` is a NUL-terminated path; access(2) only reads it.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // Directories to be made: made and removed once here; a directory that exists gets a file
    // made and removed (access(2) says yes to root where nothing can be made, as in /proc).
    let probe = d.join(format!(".dragonfly-mle-check-{}", std::process::id()));
    if d != dir {
        std::fs::create_dir(&probe).with_context(|| format!("cannot create a directory in {}", d.display()))?;
        let _ = std::fs::remove_dir(&probe);
    } else {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&probe)
            .with_context(|| format!("cannot create a file in {}", d.display()))?;
        let _ = std::fs::remove_file(&probe);
    }
    Ok(())
}
