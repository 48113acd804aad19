//! The `monitor` thread: every `[monitor] interval` it asks the shard owning each service to
//! look at it (a tick). It never acts itself, so actions on a service stay serialized by its
//! shard; a service whose previous tick has not finished is skipped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::dispatch::{Job, SubmitError};
use crate::locks::lock;
use crate::service::list_services;
use crate::state::{DaemonState, ThreadError};

pub(crate) fn run(state: Arc<DaemonState>, stop: watch::Receiver<bool>) -> Result<(), ThreadError> {
    let dispatcher = state
        .dispatcher
        .get()
        .cloned()
        .ok_or(ThreadError::HandlersNotSetUp)?;
    while !*stop.borrow() {
        let started = Instant::now();
        let mut names = list_services(&state.paths.etc);
        // Services deleted since the last tick: their shard forgets them on this one.
        names.extend(lock(&state.services).keys().cloned());
        names.sort();
        names.dedup();
        for svcname in names {
            if !lock(&state.ticks_in_flight).insert(svcname.clone()) {
                continue;
            }
            match dispatcher.submit(Job::Tick {
                svcname: svcname.clone(),
            }) {
                Ok(()) => {}
                // Its shard is busy: this service is looked at on the next round.
                Err(SubmitError::Full) => {
                    lock(&state.ticks_in_flight).remove(&svcname);
                }
                Err(SubmitError::Closed) => {
                    lock(&state.ticks_in_flight).remove(&svcname);
                    return Err(ThreadError::HandlersStopped);
                }
            }
        }
        let interval = Duration::from_millis(state.config().monitor_interval_ms);
        while started.elapsed() < interval && !*stop.borrow() {
            std::thread::sleep(Duration::from_millis(50).min(interval));
        }
    }
    Ok(())
}
