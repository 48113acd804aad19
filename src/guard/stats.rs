//! The gate's counters, listed once: the per-worker integers (`GateStats`), the atomics a
//! worker publishes them through (`AtomicGateStats`), and the names, Prometheus names and
//! help texts that `daemon status` and the metrics show are all produced from the one table
//! below (the daemon's whole metric table, `state::metrics`, takes its rows from here).

use std::sync::atomic::{AtomicU64, Ordering};

use super::gate::InvalidClass;

/// One counter of the gate's table.
#[derive(Clone, Copy, Debug)]
pub struct GateCounter {
    /// Its name in `daemon status` (`listener.counters`).
    pub name: &'static str,
    /// Its Prometheus name.
    pub metric: &'static str,
    /// What it counts.
    pub help: &'static str,
    /// Shown in the header of `daemon status` for people.
    pub headline: bool,
    pub read: fn(&GateStats) -> u64,
}

macro_rules! counter_table {
    ($( $(#[doc = $doc:literal])+ $name:ident, fate: $fate:literal $(, headline: $headline:literal)?; )+) => {
        /// Per-worker counters: plain integers, no sharing; the listener sums them when asked.
        #[derive(Clone, Debug, Default, PartialEq, Eq)]
        pub struct GateStats {
            $( $(#[doc = $doc])+ pub $name: u64, )+
            /// Invalid messages (steps 2 to 6), by class.
            pub invalid: [u64; InvalidClass::ALL.len()],
        }

        /// The same counters as atomics: one worker stores, readers load.
        #[derive(Default)]
        pub struct AtomicGateStats {
            $( $name: AtomicU64, )+
            invalid: [AtomicU64; InvalidClass::ALL.len()],
        }

        impl GateStats {
            /// Every counter but the invalid classes.
            pub const COUNTERS: &'static [GateCounter] = &[$(
                GateCounter {
                    name: stringify!($name),
                    metric: concat!("osvc_listener_", stringify!($name), "_total"),
                    help: concat!($($doc),+),
                    headline: false $(|| $headline)?,
                    read: |s| s.$name,
                }
            ),+];

            /// Each counter but the invalid classes, with its name, in the table's order.
            pub fn for_each(&self, mut f: impl FnMut(&'static str, u64)) {
                $( f(stringify!($name), self.$name); )+
            }

            /// Frames with a known fate; every received frame has exactly one, so this
            /// equals `received`.
            pub fn fates(&self) -> u64 {
                let mut n = self.invalid_total();
                $( if $fate { n += self.$name; } )+
                n
            }

            pub fn add(&mut self, o: &GateStats) {
                $( self.$name += o.$name; )+
                for (a, b) in self.invalid.iter_mut().zip(o.invalid.iter()) {
                    *a += *b;
                }
            }
        }

        impl AtomicGateStats {
            pub fn load(&self) -> GateStats {
                let mut s = GateStats {
                    $( $name: self.$name.load(Ordering::Relaxed), )+
                    ..Default::default()
                };
                for (d, a) in s.invalid.iter_mut().zip(self.invalid.iter()) {
                    *d = a.load(Ordering::Relaxed);
                }
                s
            }

            /// Stores `base + stats` (base: what was published before the worker started, so
            /// totals survive listener restarts).
            pub fn store(&self, base: &GateStats, stats: &GateStats) {
                $( self.$name.store(base.$name + stats.$name, Ordering::Relaxed); )+
                for (i, a) in self.invalid.iter().enumerate() {
                    a.store(base.invalid[i] + stats.invalid[i], Ordering::Relaxed);
                }
            }
        }
    };
}

counter_table! {
    /// Datagrams, frames and empty packets received.
    received, fate: false, headline: true;
    /// Empty packets: dequeue triggers.
    dequeues, fate: true;
    /// Frames of a blacklisted sender, dropped before decryption.
    dropped_blacklisted, fate: true, headline: true;
    /// Non-members' frames beyond `listener.join_rate`, dropped uncounted as invalid.
    dropped_join_rate, fate: true;
    /// Frames dropped because the replay table was full.
    dropped_session_full, fate: true;
    /// Members' authenticated heartbeats of the wrong shape (step 7).
    heartbeats_refused, fate: true;
    /// Authenticated requests answered with an error instead of being served (step 7).
    requests_refused, fate: true;
    /// Frames that opened under the cluster secret (primary or alternate).
    decrypted, fate: false;
    /// New sessions opened under the keyring's alternate secret (the primary failed first).
    opened_alternate, fate: false;
    /// Requests and heartbeats handed to the handlers.
    delivered, fate: true, headline: true;
    /// Delivered heartbeats that repeated their sender's previous one (not parsed again).
    heartbeat_repeats, fate: false;
}

impl GateStats {
    pub fn invalid_total(&self) -> u64 {
        self.invalid.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomics_round_trip_and_names_follow_the_table() {
        let mut s = GateStats {
            received: 7,
            delivered: 3,
            dequeues: 2,
            ..Default::default()
        };
        s.invalid[0] = 2;
        let a = AtomicGateStats::default();
        a.store(&s, &s);
        let mut twice = s.clone();
        twice.add(&s);
        assert_eq!(a.load(), twice);
        assert_eq!(s.fates(), 7, "dequeues, delivered and invalid");
        let mut names = Vec::new();
        s.for_each(|n, _| names.push(n));
        let listed: Vec<&str> = GateStats::COUNTERS.iter().map(|c| c.name).collect();
        assert_eq!(names, listed);
        assert!(GateStats::COUNTERS.iter().all(|c| !c.help.is_empty()));
        let read: Vec<u64> = GateStats::COUNTERS.iter().map(|c| (c.read)(&s)).collect();
        let mut values = Vec::new();
        s.for_each(|_, v| values.push(v));
        assert_eq!(read, values);
        let received = &GateStats::COUNTERS[0];
        assert_eq!(received.metric, "osvc_listener_received_total");
        assert!(received.headline);
    }
}
