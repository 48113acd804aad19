//! Signals, turned into the supervisor's commands so that every way of stopping takes the
//! same path: SIGTERM and SIGINT stop the daemon as `daemon stop` does (maintenance, instances
//! untouched), SIGHUP re-reads node.conf.

use std::sync::Arc;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::state::{DaemonState, SupervisorCmd};

pub(super) fn listen(state: &Arc<DaemonState>) -> std::io::Result<()> {
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    let state = state.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                let (name, cmd) = match signal {
                    SIGHUP => ("SIGHUP", SupervisorCmd::Reload),
                    SIGINT => ("SIGINT", SupervisorCmd::Stop),
                    _ => ("SIGTERM", SupervisorCmd::Stop),
                };
                tracing::info!(signal = name, "signal received");
                if !state.send(cmd) {
                    return;
                }
            }
        })?;
    Ok(())
}
