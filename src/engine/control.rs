//! The pipeline's surroundings: reload requests (SIGHUP, `--watch`), the HTTP endpoint,
//! Redis modules.

use super::*;
use anyhow::Context;

/// What the control thread (`start::start_control`) does on a reload request (SIGHUP,
/// `--watch`): reads every script once and publishes the texts for the workers to reload (see
/// `lua::worker::Reload`), or hands a changed configuration to the next pipeline.
pub(super) fn reload_request(
    why: &str,
    opts: &Options,
    running: &Config,
    paths: &[PathBuf],
    reload: &crate::lua::worker::Reload,
    next: &std::sync::Mutex<Option<Config>>,
    (diag, stats): (&crate::source::Diag, &Stats),
) -> bool {
    use crate::reconfig::Decision;
    let check = |c: &Config| -> anyhow::Result<()> {
        let mut problems = check_surroundings(c);
        if let Err(e) = load_scripts(c, false) {
            problems.push(e.to_string());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            anyhow::bail!(problems.join("; "))
        }
    };
    let workers = opts.shards.is_none().then_some(stats.workers.len());
    match crate::reconfig::decide(running, workers, || load(opts), check) {
        Decision::Scripts => {
            let sources: crate::lua::worker::Sources = paths
                .iter()
                .map(|p| {
                    std::fs::read(crate::privilege::host_path(p))
                        .map_err(|e| crate::lua::ScriptCause::Read(e.to_string()))
                })
                .collect();
            // Reported before it is published, so that the request comes before the outcome
            // in `{log}` (this thread is the only publisher: the generation is the next one).
            let g = reload.generation.load(std::sync::atomic::Ordering::Acquire) + 1;
            let _ = diag.send(crate::diag::line(
                crate::diag::Kind::Reload,
                &[],
                &format!("{why}: reload {g} requested ({} scripts)", paths.len()),
            ));
            let published = reload.publish(sources);
            debug_assert_eq!(published, g);
            false
        }
        Decision::Rebuild(cfg) => {
            let _ = diag.send(crate::diag::line(
                crate::diag::Kind::Reload,
                &[],
                &format!(
                    "{why}: the configuration changed ({} inputs, {} analyzers, {} outputs); draining the pipeline and building it again",
                    cfg.inputs.len(),
                    cfg.analyzers.len(),
                    cfg.outputs.len()
                ),
            ));
            *next.lock().unwrap_or_else(|e| e.into_inner()) = Some(*cfg);
            true
        }
        Decision::Refused(e) => {
            if let Some(w) = stats.workers.first() {
                w.reload_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            let line = crate::diag::line(
                crate::diag::Kind::ReloadError,
                &[],
                &format!("{why}: the new configuration is not applied, the running one stays: {e}"),
            );
            crate::diag::stderr_report(&line);
            let _ = diag.send(line);
            false
        }
    }
}

/// Starts the HTTP endpoint. An address given on the command line or in config.lua that
/// cannot be bound is a startup error; the default one is reported and skipped.
/// The endpoint of the previous pipeline (`kept`) serves on when the address asked for is the
/// same.
pub(super) fn start_http(
    opts: &Options,
    cfg: &Config,
    stats: &Arc<Stats>,
    diag: &crate::source::Diag,
    kept: Option<(String, crate::metrics::http::HttpServer)>,
) -> anyhow::Result<Option<(String, crate::metrics::http::HttpServer)>> {
    let (addr, explicit) = match &opts.http {
        Some(a) => (crate::config::parse_http_address(a).context("--http")?, true),
        None => (cfg.http_address.clone(), cfg.http_explicit),
    };
    let Some(addr) = addr else { return Ok(None) };
    if let Some((was, server)) = kept {
        if was == addr {
            server.serve_stats(Arc::clone(stats));
            return Ok(Some((addr, server)));
        }
        // Another address: the old endpoint closes before the new one binds.
        drop(server);
    }
    let www = crate::privilege::host_path(&cfg.root.join("www")).into_owned();
    match crate::metrics::http::start(&addr, Arc::clone(stats), &www) {
        Ok(s) => {
            let bound = s.addr.to_string();
            let _ = diag.send(crate::diag::line(
                crate::diag::Kind::HttpListening,
                &[("address", &bound)],
                &format!("HTTP endpoint on http://{bound}/ (/metrics, /stats, /health, /www/)"),
            ));
            Ok(Some((addr, s)))
        }
        Err(e) if explicit => bail!("http_address: cannot listen on {addr}: {e}"),
        Err(e) => {
            let line = crate::diag::line(
                crate::diag::Kind::HttpUnavailable,
                &[("address", &addr)],
                &format!("cannot listen on {addr}: {e}; running without the HTTP endpoint"),
            );
            crate::diag::stderr_report(&line);
            let _ = diag.send(line);
            Ok(None)
        }
    }
}

/// Runs the Redis commands of a file (one JSON array of strings per line) against the
/// configured Redis: a test's contents, loaded before anything starts.
pub(super) fn preload_redis(cfg: &Config, path: &std::path::Path) -> anyhow::Result<()> {
    let mut con = crate::lua::hiredis::open(&cfg.redis, cfg.redis_timeouts())?;
    for (i, args) in read_commands(path)?.iter().enumerate() {
        if let redis::Value::ServerError(e) = redis::ConnectionLike::req_command(&mut con, &command(args))? {
            anyhow::bail!(
                "command {} ({}): {} {}",
                i + 1,
                args.join(" "),
                e.code(),
                e.details().unwrap_or("")
            );
        }
    }
    Ok(())
}

/// The commands of a test's file: one JSON array of strings per line.
fn read_commands(path: &std::path::Path) -> anyhow::Result<Vec<Vec<String>>> {
    use simd_json::prelude::*;
    let text = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut cmds = Vec::new();
    for (i, line) in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()).enumerate() {
        let mut b = line.to_vec();
        let v = simd_json::to_owned_value(&mut b).with_context(|| format!("command {}", i + 1))?;
        let args: Vec<String> = v
            .as_array()
            .and_then(|a| a.iter().map(|x| x.as_str().map(str::to_string)).collect())
            .filter(|a: &Vec<String>| !a.is_empty())
            .with_context(|| format!("command {}: expected a list of strings", i + 1))?;
        cmds.push(args);
    }
    Ok(cmds)
}

fn command(args: &[String]) -> redis::Cmd {
    let mut c = redis::cmd(&args[0]);
    for a in &args[1..] {
        c.arg(a);
    }
    c
}

/// Runs a test's Redis checks (`expect.redis`, the commands in file `cmds`) and writes each
/// reply to `out` as one JSON
/// value per line: a bulk or status string as a string, an integer as a number, nil as
/// `null`, an array as an array, an error as `{"error": "CODE detail"}`.
pub(super) fn redis_replies(
    target: &crate::config::types::RedisTarget,
    timeouts: crate::config::types::RedisTimeouts,
    cmds: &std::path::Path,
    out: &std::path::Path,
) -> anyhow::Result<()> {
    let cmds = read_commands(cmds)?;
    let mut con = crate::lua::hiredis::open(target, timeouts)?;
    let mut text = Vec::new();
    for args in &cmds {
        let v = redis::ConnectionLike::req_command(&mut con, &command(args))?;
        text.extend_from_slice(simd_json::prelude::Writable::encode(&reply_json(&v)).as_bytes());
        text.push(b'\n');
    }
    std::fs::write(out, text).with_context(|| format!("cannot write {}", out.display()))
}

fn reply_json(v: &redis::Value) -> simd_json::OwnedValue {
    use redis::Value as R;
    use simd_json::OwnedValue as J;
    match v {
        R::Nil => J::Static(simd_json::StaticNode::Null),
        R::Int(n) => J::from(*n),
        R::BulkString(b) => J::from(String::from_utf8_lossy(b).into_owned()),
        R::SimpleString(s) => J::from(s.clone()),
        R::Okay => J::from("OK"),
        R::Double(d) => J::from(*d),
        R::Boolean(b) => J::from(*b),
        R::Array(a) | R::Set(a) => J::from(a.iter().map(reply_json).collect::<Vec<_>>()),
        R::Map(m) => J::from(
            m.iter()
                .flat_map(|(k, v)| [reply_json(k), reply_json(v)])
                .collect::<Vec<_>>(),
        ),
        R::ServerError(e) => {
            let mut o = simd_json::value::owned::Object::default();
            o.insert(
                "error".into(),
                J::from(
                    format!("{} {}", e.code(), e.details().unwrap_or(""))
                        .trim_end()
                        .to_string(),
                ),
            );
            J::from(o)
        }
        other => J::from(format!("{other:?}")),
    }
}

/// Sends `MODULE LOAD` for every module of config.lua; failures are reported, not fatal.
pub(super) fn load_modules(cfg: &Config, diag: &crate::source::Diag) {
    for (tag, module) in &cfg.modules {
        let r = (|| -> anyhow::Result<()> {
            let mut con = crate::lua::hiredis::open(&cfg.redis, cfg.redis_timeouts())?;
            match redis::ConnectionLike::req_command(&mut con, redis::cmd("MODULE").arg("LOAD").arg(module))? {
                redis::Value::ServerError(e) => anyhow::bail!("{} {}", e.code(), e.details().unwrap_or("")),
                _ => Ok(()),
            }
        })();
        if let Err(e) = r {
            let line = crate::diag::line(
                crate::diag::Kind::RedisModule,
                &[("module", tag)],
                &format!("MODULE LOAD {module}: {e}"),
            );
            crate::diag::stderr_report(&line);
            let _ = diag.send(line);
        }
    }
}
