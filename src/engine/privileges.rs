//! Dropping root (`-p`, `--user`, `-c`) once every input reports itself open, with the
//! workers parked between batches.

use super::*;
use anyhow::Context;

/// Once every input has opened its file, socket or consumer (or 30 s have passed), chroots
/// (`-c`) and drops to the user (`-p`, `--user`).
pub(super) fn drop_privileges(
    opts: &Options,
    cfg: &Config,
    shared: &Shared,
    workers: usize,
    diag: &crate::source::Diag,
) -> anyhow::Result<()> {
    let (state_dir, inputs, opened) = (&shared.state_dir, cfg.inputs.len(), &shared.opened);
    if opts.user.is_none() && !opts.chroot {
        return Ok(());
    }
    let t = Instant::now();
    while opened.load(std::sync::atomic::Ordering::Acquire) < inputs && t.elapsed() < std::time::Duration::from_secs(30)
    {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let user = opts
        .user
        .as_deref()
        .map(crate::privilege::lookup)
        .transpose()
        .context("--user")?;
    let root = opts.chroot.then_some(cfg.root.as_path());
    if let Some(u) = user
        && std::fs::create_dir_all(state_dir).is_ok()
    {
        crate::privilege::hand_over(state_dir, u).context("run directory")?;
    }
    // With the workers between batches: none is in the middle of a Redis call that the
    // credential change's signals would interrupt.
    crate::lua::worker::GATE
        .with_workers_parked(workers, std::time::Duration::from_secs(5), || {
            crate::privilege::drop_privileges(user, root)
        })
        .context("dropping privileges")?;
    let mut what = Vec::new();
    if let Some(r) = root {
        what.push(format!("chrooted to {}", r.display()));
    }
    if let (Some(name), Some(u)) = (&opts.user, user) {
        what.push(format!("running as {name} (uid {}, gid {})", u.uid, u.gid));
    }
    // A run over within milliseconds (a short `file://` input) may have ended its writer, or
    // have it taken its last record: the record then goes to the file directly. (Sent after
    // that last take, it was dropped with the channel: 1 run in 8 of a test had no record.)
    let line = crate::diag::line(crate::diag::Kind::Privileges, &[], &what.join(", "));
    let closed = shared
        .diag_closed
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if *closed {
        super::append_record(&cfg.log_dir, &line);
    } else if let Err(std::sync::mpsc::SendError(line)) = diag.send(line) {
        super::append_record(&cfg.log_dir, &line);
    }
    Ok(())
}
