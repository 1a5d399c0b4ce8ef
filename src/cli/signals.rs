//! SIGINT, SIGTERM and SIGHUP as a cancel flag: a run stops walking and reading, writes
//! its last checkpoint, cleans up (ZFS snapshots) and exits with an error, where the
//! default action would kill it on the spot.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

static CANCEL: OnceLock<Arc<AtomicBool>> = OnceLock::new();

extern "C" fn on_signal(_: libc::c_int) {
    if let Some(c) = CANCEL.get() {
        c.store(true, Ordering::SeqCst);
    }
}

/// Installs the handlers; the flag turns true on the first of these signals.
pub fn install() -> Arc<AtomicBool> {
    let flag = CANCEL
        .get_or_init(|| Arc::new(AtomicBool::new(false)))
        .clone();
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let sa = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only stores to an atomic flag (async-signal-safe).
        unsafe {
            let _ = sigaction(s, &sa);
        }
    }
    flag
}
