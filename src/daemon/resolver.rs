//! The `resolver` thread: looks members' names up for the heartbeat sender, so that `hb.tx`
//! never waits on the DNS. A name is looked up when the configuration gives it (start,
//! reload, SIGHUP), again when sending to it failed, and while it does not resolve after
//! `RETRY`, doubling up to `RETRY_MAX`. A member that does not resolve is logged once, and
//! again once it does.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::state::DaemonState;
use crate::state::members::{Resolution, resolve};

/// How long the thread sleeps between looks at its stop signal and the configuration.
const TURN: Duration = Duration::from_millis(200);

pub(crate) fn run(state: &DaemonState, stop: &watch::Receiver<bool>) {
    let book = &state.addr_book;
    let mut config = state.config();
    book.sync(&config);
    while !*stop.borrow() {
        let now = state.config();
        if !Arc::ptr_eq(&now, &config) {
            config = now;
            book.sync(&config);
        }
        for lookup in book.due(TURN) {
            if *stop.borrow() {
                break;
            }
            let outcome = resolve(&lookup.host, lookup.port);
            match (book.record(&lookup, outcome.clone()), &outcome) {
                // Said once: a retry that fails again (however it words it) is not news.
                (Some(Resolution::Unresolved(_)), Resolution::Unresolved(_)) => {}
                (Some(_), Resolution::Unresolved(why)) => tracing::warn!(
                    member = %lookup.name,
                    host = %lookup.host,
                    "member unresolved: no heartbeat is sent to it until it resolves ({why})"
                ),
                (Some(Resolution::Unresolved(_)), Resolution::Resolved(addr)) => {
                    tracing::info!(member = %lookup.name, %addr, "member resolved")
                }
                (Some(Resolution::Resolved(before)), Resolution::Resolved(addr)) => {
                    tracing::info!(member = %lookup.name, %before, %addr, "member's address changed")
                }
                _ => {}
            }
        }
    }
}
