//! The receiving side: one peer's content as rebuilt from its heartbeat datagrams.
//!
//! The view keeps the peer's monitor and services as raw JSON text ([`RawJson`]), shared with
//! the payload they came in: applying a heartbeat moves references, it parses nothing (the
//! listener worker read and checked the payload, `codec.rs`).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::codec::{HbError, Heartbeat, RawJson, ServiceList};

/// What [`HbView::apply`] did with a well-formed payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// A full snapshot (single, or the last missing part) replaced the services.
    Full,
    /// A part was kept; the snapshot is not complete yet.
    Partial { received: usize, count: usize },
    /// A delta was applied onto the snapshot it was computed against.
    Delta,
    /// A delta against a snapshot this view does not have: the services wait for the next
    /// full snapshot (the monitor is still taken).
    Gap,
    /// Older than what the view holds (reordered or duplicated): ignored.
    Stale,
}

/// Services as received: name and value.
type Services = Vec<(String, RawJson)>;

/// A split snapshot being put together.
#[derive(Clone, Debug, PartialEq)]
struct Assembly {
    r#gen: u64,
    count: usize,
    parts: BTreeMap<usize, Services>,
}

/// A delta, as received.
#[derive(Clone, Debug, PartialEq)]
struct Delta {
    r#gen: u64,
    since: u64,
    services: Services,
    removed: Vec<String>,
}

fn owned_services(hb: &Heartbeat) -> Services {
    hb.services().map(|(n, v)| (n.to_owned(), v)).collect()
}

/// One peer's heartbeat content, as far as its datagrams have told.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HbView {
    boot: u64,
    /// Newest generation heard of, the one `monitor` comes from.
    r#gen: u64,
    monitor: RawJson,
    services: BTreeMap<String, RawJson>,
    /// Generation `services` is exactly the sender's content of.
    services_gen: u64,
    /// Generation of the full snapshot `services` was built from (0: none yet).
    base_gen: u64,
    assembly: Option<Assembly>,
    /// The newest delta that came before its snapshot did, applied if that snapshot
    /// completes (a part late behind the next beat's delta).
    pending: Option<Delta>,
    /// The list of the single snapshot `services` was installed from, while they are
    /// still exactly its names (cleared by any other change of the names).
    installed_list: ServiceList,
}

impl HbView {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one received heartbeat into the view. The one error is found against the
    /// view's state (a part count that changed within a generation); nothing changes then.
    pub fn apply(&mut self, mut hb: Heartbeat) -> Result<Applied, HbError> {
        if let Some((_, now)) = hb.part
            && hb.since == 0
            && hb.boot == self.boot
            && let Some(a) = &self.assembly
            && a.r#gen == hb.r#gen
            && a.count != now
        {
            return Err(HbError::PartCountChanged {
                generation: hb.r#gen,
                was: a.count,
                now,
            });
        }
        if hb.boot < self.boot {
            return Ok(Applied::Stale);
        }
        if hb.boot > self.boot {
            // The peer restarted: nothing known of its previous life still holds.
            *self = Self {
                boot: hb.boot,
                ..Self::default()
            };
        }
        let applied = if hb.since == 0 {
            self.apply_full(&hb)
        } else {
            self.apply_delta(Delta {
                r#gen: hb.r#gen,
                since: hb.since,
                services: owned_services(&hb),
                removed: std::mem::take(&mut hb.removed),
            })
        };
        if applied != Applied::Stale && hb.r#gen >= self.r#gen {
            self.r#gen = hb.r#gen;
            self.monitor = hb.monitor();
        }
        Ok(applied)
    }

    /// [`HbView::apply`] of a payload given as a document (tests, tools): encoded, read and
    /// checked as the listener reads a datagram's.
    pub fn apply_value(&mut self, payload: &Value) -> Result<Applied, HbError> {
        let text = serde_json::to_vec(payload).unwrap_or_default();
        self.apply(Heartbeat::parse(&text)?)
    }

    /// The peer's services as last rebuilt (see [`HbView::is_synced`] for how current).
    pub fn services(&self) -> &BTreeMap<String, RawJson> {
        &self.services
    }

    /// The peer's monitor from its newest payload (`null` before any).
    pub fn monitor(&self) -> &RawJson {
        &self.monitor
    }

    /// The services as documents.
    pub fn services_json(&self) -> Map<String, Value> {
        self.services
            .iter()
            .map(|(name, v)| (name.clone(), v.to_value()))
            .collect()
    }

    /// The monitor as a document.
    pub fn monitor_json(&self) -> Value {
        self.monitor.to_value()
    }

    /// Newest generation heard of (0 before any payload).
    pub fn r#gen(&self) -> u64 {
        self.r#gen
    }

    /// Generation of the full snapshot the services were built from (0: none yet).
    pub fn base_gen(&self) -> u64 {
        self.base_gen
    }

    /// The peer's incarnation as last heard (0 when it sends none).
    pub fn boot(&self) -> u64 {
        self.boot
    }

    /// True when the services are exactly the peer's content at [`HbView::gen`], the newest
    /// generation heard of.
    pub fn is_synced(&self) -> bool {
        self.base_gen > 0 && self.services_gen == self.r#gen
    }

    fn apply_full(&mut self, hb: &Heartbeat) -> Applied {
        let r#gen = hb.r#gen;
        if r#gen < self.services_gen || r#gen == self.base_gen {
            return Applied::Stale;
        }
        let Some((index, count)) = hb.part else {
            self.install_single(hb);
            return Applied::Full;
        };
        let assembly = match self.assembly.take() {
            Some(a) if a.r#gen > r#gen => {
                self.assembly = Some(a);
                return Applied::Stale;
            }
            Some(a) if a.r#gen == r#gen => self.assembly.insert(a),
            // A newer snapshot started: the older one will never be needed.
            _ => self.assembly.insert(Assembly {
                r#gen,
                count,
                parts: BTreeMap::new(),
            }),
        };
        // A duplicate part carries the same share: keeping the first is enough.
        assembly
            .parts
            .entry(index)
            .or_insert_with(|| owned_services(hb));
        let received = assembly.parts.len();
        if received < count {
            return Applied::Partial { received, count };
        }
        let mut all = BTreeMap::new();
        if let Some(a) = self.assembly.take() {
            for (_, share) in a.parts {
                all.extend(share);
            }
        }
        self.services = all;
        self.installed_list = ServiceList::default();
        self.installed(r#gen);
        Applied::Full
    }

    /// A single-datagram snapshot, the common case: when it names the services the view
    /// has, in the same order (senders write them sorted, as the view keeps them), their
    /// values are swapped in place, with no lookup and no allocation; otherwise the map is
    /// rebuilt.
    fn install_single(&mut self, hb: &Heartbeat) {
        let same_names = self.installed_list.is_of(hb)
            || (hb.service_count() == self.services.len()
                && self
                    .services
                    .keys()
                    .map(String::as_str)
                    .eq(hb.service_names()));
        if same_names {
            for (slot, (_, value)) in self.services.values_mut().zip(hb.services()) {
                *slot = value;
            }
        } else {
            self.services = hb.services().map(|(n, v)| (n.to_owned(), v)).collect();
        }
        // Before `installed`, which may merge a pending delta (and clear it again).
        self.installed_list = ServiceList::of(hb);
        self.installed(hb.r#gen);
    }

    /// Makes the services just installed the full snapshot of `gen`, then catches up with a
    /// delta that came ahead of it.
    fn installed(&mut self, r#gen: u64) {
        self.base_gen = r#gen;
        self.services_gen = r#gen;
        if self.assembly.as_ref().is_some_and(|a| a.r#gen <= r#gen) {
            self.assembly = None;
        }
        match self.pending.take() {
            Some(d) if d.since == r#gen => self.merge(d),
            Some(d) if d.since > r#gen => self.pending = Some(d),
            _ => {}
        }
    }

    fn apply_delta(&mut self, d: Delta) -> Applied {
        if d.r#gen < self.services_gen {
            return Applied::Stale;
        }
        if d.since == self.base_gen {
            self.merge(d);
            return Applied::Delta;
        }
        if d.since < self.base_gen {
            return Applied::Stale;
        }
        // Cumulative deltas: the newest one supersedes any other kept.
        if self.pending.as_ref().is_none_or(|p| p.r#gen < d.r#gen) {
            self.pending = Some(d);
        }
        Applied::Gap
    }

    fn merge(&mut self, d: Delta) {
        self.installed_list = ServiceList::default();
        self.services.extend(d.services);
        for name in &d.removed {
            self.services.remove(name);
        }
        self.services_gen = d.r#gen;
    }

    /// Internal consistency, for tests.
    #[cfg(test)]
    pub(super) fn check_invariants(&self) -> Result<(), String> {
        if self.services_gen > self.r#gen {
            return Err(format!(
                "services_gen {} > gen {}",
                self.services_gen, self.r#gen
            ));
        }
        if self.base_gen > self.services_gen {
            return Err(format!(
                "base_gen {} > services_gen {}",
                self.base_gen, self.services_gen
            ));
        }
        if let Some(a) = &self.assembly
            && (a.parts.len() >= a.count || a.r#gen <= self.base_gen)
        {
            return Err(format!("stale or complete assembly {a:?}"));
        }
        Ok(())
    }
}
