//! The dequeue trigger and its counters, shared by the listener (which triggers it on an
//! empty packet), the `dequeue` thread (which runs the queue) and `daemon status`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::Thread;

use crate::listener::DequeueTrigger;

pub(crate) struct Dequeue {
    pub(crate) pending: AtomicBool,
    pub(crate) thread: Mutex<Option<Thread>>,
    /// `[dequeue] timeout`, in ms, applied from the next action on.
    pub(crate) timeout_ms: AtomicU64,
    pub triggers: AtomicU64,
    pub runs: AtomicU64,
    pub actions_run: AtomicU64,
    pub actions_failed: AtomicU64,
    pub actions_timed_out: AtomicU64,
}

impl Default for Dequeue {
    fn default() -> Self {
        Dequeue {
            pending: AtomicBool::new(false),
            thread: Mutex::new(None),
            timeout_ms: AtomicU64::new(crate::config::DEFAULT_DEQUEUE_TIMEOUT_MS),
            triggers: AtomicU64::new(0),
            runs: AtomicU64::new(0),
            actions_run: AtomicU64::new(0),
            actions_failed: AtomicU64::new(0),
            actions_timed_out: AtomicU64::new(0),
        }
    }
}

impl DequeueTrigger for Dequeue {
    fn trigger(&self) {
        self.triggers.fetch_add(1, Ordering::Relaxed);
        if !self.pending.swap(true, Ordering::AcqRel)
            && let Some(t) = crate::locks::lock(&self.thread).as_ref()
        {
            t.unpark();
        }
    }
}

impl Dequeue {
    pub(crate) fn set_timeout_ms(&self, ms: u64) {
        self.timeout_ms.store(ms, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triggers_coalesce_while_nobody_runs() {
        let d = Dequeue::default();
        for _ in 0..1000 {
            d.trigger();
        }
        assert_eq!(d.triggers.load(Ordering::Relaxed), 1000);
        // One pending run, whatever the number of triggers.
        assert!(d.pending.swap(false, Ordering::AcqRel));
        assert!(!d.pending.load(Ordering::Acquire));
    }
}
