//! The process's signals, installed once per run: SIGINT/SIGTERM stop, SIGUSR1 reopens the
//! outputs, SIGHUP reloads, SIGXFSZ is ignored.

use super::*;

/// The process's signal flags.
pub(super) struct Signals {
    pub stop: Arc<AtomicBool>,
    pub rotate: Arc<AtomicBool>,
    pub hup: Arc<AtomicBool>,
}

impl Signals {
    /// Installs the handlers.
    pub(super) fn install() -> anyhow::Result<Signals> {
        let sig = Signals {
            stop: Arc::new(AtomicBool::new(false)),
            rotate: Arc::new(AtomicBool::new(false)),
            hup: Arc::new(AtomicBool::new(false)),
        };
        for (s, flag) in [
            (signal_hook::consts::SIGINT, &sig.stop),
            (signal_hook::consts::SIGTERM, &sig.stop),
            (signal_hook::consts::SIGUSR1, &sig.rotate),
            (signal_hook::consts::SIGHUP, &sig.hup),
        ] {
            signal_hook::flag::register(s, Arc::clone(flag)).context("cannot install signal handlers")?;
        }
        // A config.lua that never ends is ended by a stop too.
        crate::config::interrupt_with(Arc::clone(&sig.stop));
        // A write past the file size limit (RLIMIT_FSIZE) fails with EFBIG, which is counted
        // and reported like any output error, instead of killing the engine with SIGXFSZ.
        // SAFETY: setting a signal to be ignored has no handler to run and no other effect.
        unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
        Ok(sig)
    }
}
