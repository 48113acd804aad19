//! The sending side: this node's content, its generation, and what to send each beat.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value};

use super::{FULL_EVERY, MAX_PARTS, MAX_PAYLOAD, json_len};

/// What the sender remembers of a service besides its value.
#[derive(Clone, Debug)]
struct Meta {
    /// Bytes of `"name":value` in a `services` object, cached so sizing a beat is a sum.
    len: usize,
    /// Generation at which the value last changed (or appeared).
    changed: u64,
}

/// This node's heartbeat content and the schedule that fits it into datagrams.
#[derive(Clone, Debug)]
pub struct HbSender {
    max_payload: usize,
    full_every: u32,
    boot: u64,
    r#gen: u64,
    monitor: Value,
    /// What peers converge to: the caller's services minus the oversize ones.
    services: Map<String, Value>,
    meta: HashMap<String, Meta>,
    /// Removed service → generation of its removal; cleared when a full snapshot is sent,
    /// since deltas only reach back to the last full snapshot.
    tombstones: BTreeMap<String, u64>,
    /// Generation of the last full snapshot sent, what deltas are computed against.
    last_full: Option<u64>,
    /// Beats since the last full snapshot.
    since_full: u32,
    /// Services left out because they fit no datagram, sorted.
    oversize: Vec<String>,
    /// Newly oversize services the caller has not taken yet.
    oversize_news: Vec<String>,
}

impl Default for HbSender {
    fn default() -> Self {
        Self::new(MAX_PAYLOAD, FULL_EVERY)
    }
}

impl HbSender {
    /// A sender at generation 1 with no monitor (`null`) and no services. `full_every` below 1
    /// counts as 1 (a full snapshot every beat).
    pub fn new(max_payload: usize, full_every: u32) -> Self {
        Self {
            max_payload,
            full_every: full_every.max(1),
            boot: 0,
            r#gen: 1,
            monitor: Value::Null,
            services: Map::new(),
            meta: HashMap::new(),
            tombstones: BTreeMap::new(),
            last_full: None,
            since_full: 0,
            oversize: Vec::new(),
            oversize_news: Vec::new(),
        }
    }

    /// Sets the incarnation sent as `boot`, so peers tell a restart (gen back to 1) from
    /// stale datagrams. It must grow across restarts, e.g. the start time in milliseconds;
    /// 0 leaves the field out.
    pub fn with_boot(mut self, boot: u64) -> Self {
        self.boot = boot;
        self
    }

    /// Replaces the content. The generation moves once if anything sent differs; services
    /// too big for a datagram are left out (see [`HbSender::oversize`]).
    pub fn update(&mut self, monitor: Value, services: Map<String, Value>) {
        let entries: Vec<(String, Value, usize)> = services
            .into_iter()
            .map(|(name, value)| {
                // Unchanged values keep their cached size; only news get serialized.
                let len = match (self.services.get(&name), self.meta.get(&name)) {
                    (Some(old), Some(meta)) if *old == value => meta.len,
                    _ => entry_len(&name, &value),
                };
                (name, value, len)
            })
            .collect();
        let lens: Vec<usize> = entries.iter().map(|e| e.2).collect();
        let (_, left_out) = pack(&lens, self.part_capacity(&monitor));

        let next = self.r#gen.saturating_add(1);
        let mut changed = monitor != self.monitor;
        let mut kept = Map::new();
        let mut meta = HashMap::with_capacity(entries.len());
        let mut oversize = Vec::with_capacity(left_out.len());
        let mut left = left_out.into_iter().peekable();
        for (i, (name, value, len)) in entries.into_iter().enumerate() {
            if left.next_if_eq(&i).is_some() {
                oversize.push(name);
                continue;
            }
            let at = match (self.services.get(&name), self.meta.get(&name)) {
                (Some(old), Some(m)) if *old == value => m.changed,
                _ => {
                    changed = true;
                    // A service back after a removal is sent as changed, not as removed.
                    self.tombstones.remove(&name);
                    next
                }
            };
            meta.insert(name.clone(), Meta { len, changed: at });
            kept.insert(name, value);
        }
        for name in self.services.keys() {
            if !kept.contains_key(name) {
                changed = true;
                self.tombstones.insert(name.clone(), next);
            }
        }
        if changed {
            self.r#gen = next;
        }
        self.monitor = monitor;
        self.services = kept;
        self.meta = meta;

        oversize.sort();
        for name in &oversize {
            if self.oversize.binary_search(name).is_err() && !self.oversize_news.contains(name) {
                self.oversize_news.push(name.clone());
            }
        }
        self.oversize = oversize;
    }

    /// The payloads of this beat, one per datagram, each serializing to at most
    /// `max_payload` bytes. Empty only when the monitor alone does not fit a datagram.
    pub fn next_payloads(&mut self) -> Vec<Value> {
        self.since_full = self.since_full.saturating_add(1);

        let mut single = self.envelope(0, None, None);
        let envelope_len = json_len(&single);
        if envelope_len > self.max_payload {
            return Vec::new();
        }
        let total = filled_len(
            envelope_len,
            self.services.iter().map(|(k, v)| self.len(k, v)),
        );
        if total <= self.max_payload {
            single.insert("services".into(), Value::Object(self.services.clone()));
            self.sent_full();
            return vec![Value::Object(single)];
        }

        if let Some(base) = self.last_full
            && self.since_full < self.full_every
            && let Some(delta) = self.delta(base)
        {
            return vec![delta];
        }
        let parts = self.parts();
        self.sent_full();
        parts
    }

    /// Generation of the current content.
    pub fn r#gen(&self) -> u64 {
        self.r#gen
    }

    /// The monitor of the last update.
    pub fn monitor(&self) -> &Value {
        &self.monitor
    }

    /// The services peers converge to: the last update's, minus [`HbSender::oversize`].
    pub fn services(&self) -> &Map<String, Value> {
        &self.services
    }

    /// Services of the last update left out of every payload because even alone they do not
    /// fit a datagram (or, beyond any real size, because [`MAX_PARTS`] parts are full). Sorted.
    pub fn oversize(&self) -> Vec<String> {
        self.oversize.clone()
    }

    /// Services that became oversize since the previous call, so the caller logs each once.
    pub fn take_new_oversize(&mut self) -> Vec<String> {
        self.oversize_news
            .retain(|n| self.oversize.binary_search(n).is_ok());
        std::mem::take(&mut self.oversize_news)
    }

    /// True when the monitor alone makes the smallest payload too big: nothing can be sent.
    pub fn monitor_oversize(&self) -> bool {
        json_len(&self.envelope(0, None, None)) > self.max_payload
    }

    fn sent_full(&mut self) {
        self.last_full = Some(self.r#gen);
        self.since_full = 0;
        self.tombstones.clear();
    }

    /// Size of a service entry, from the cache when it is there.
    fn len(&self, name: &str, value: &Value) -> usize {
        self.meta
            .get(name)
            .map_or_else(|| entry_len(name, value), |m| m.len)
    }

    /// A payload with every field but the services, which are `{}`.
    fn envelope(
        &self,
        since: u64,
        part: Option<(usize, usize)>,
        removed: Option<Vec<String>>,
    ) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("gen".into(), self.r#gen.into());
        m.insert("since".into(), since.into());
        if self.boot != 0 {
            m.insert("boot".into(), self.boot.into());
        }
        if let Some((i, n)) = part {
            m.insert("part".into(), Value::Array(vec![i.into(), n.into()]));
        }
        m.insert("monitor".into(), self.monitor.clone());
        m.insert("services".into(), Value::Object(Map::new()));
        if let Some(removed) = removed {
            m.insert(
                "removed".into(),
                Value::Array(removed.into_iter().map(Value::String).collect()),
            );
        }
        m
    }

    /// Room for services in one part, measured with the widest `gen` and `part` numbers so
    /// the packing computed at update time holds at any later beat.
    fn part_capacity(&self, monitor: &Value) -> usize {
        let mut m = Map::new();
        m.insert("gen".into(), u64::MAX.into());
        m.insert("since".into(), 0.into());
        if self.boot != 0 {
            m.insert("boot".into(), self.boot.into());
        }
        m.insert(
            "part".into(),
            Value::Array(vec![MAX_PARTS.into(), MAX_PARTS.into()]),
        );
        m.insert("monitor".into(), monitor.clone());
        m.insert("services".into(), Value::Object(Map::new()));
        self.max_payload.saturating_sub(json_len(&m))
    }

    /// The cumulative delta against the full snapshot of `base`, if it fits one datagram.
    fn delta(&self, base: u64) -> Option<Value> {
        let removed: Vec<String> = self
            .tombstones
            .iter()
            .filter(|&(_, &at)| at > base)
            .map(|(name, _)| name.clone())
            .collect();
        let mut payload = self.envelope(base, None, Some(removed));
        let changed: Vec<(&String, &Value)> = self
            .services
            .iter()
            // Without a record of when it changed, sending it is the safe side.
            .filter(|&(k, _)| self.meta.get(k).is_none_or(|m| m.changed > base))
            .collect();
        let total = filled_len(
            json_len(&payload),
            changed.iter().map(|(k, v)| self.len(k, v)),
        );
        if total > self.max_payload {
            return None;
        }
        let services = changed
            .into_iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        payload.insert("services".into(), Value::Object(services));
        Some(Value::Object(payload))
    }

    /// The full snapshot split into parts, each service whole in one part.
    fn parts(&self) -> Vec<Value> {
        let entries: Vec<(&String, &Value)> = self.services.iter().collect();
        let lens: Vec<usize> = entries.iter().map(|(k, v)| self.len(k, v)).collect();
        let (bins, left_out) = pack(&lens, self.part_capacity(&self.monitor));
        // update() already left these out with the same packing.
        debug_assert!(left_out.is_empty());
        let n = bins.len();
        bins.into_iter()
            .enumerate()
            .map(|(i, bin)| {
                let mut payload = self.envelope(0, Some((i + 1, n)), None);
                let services = bin
                    .into_iter()
                    .filter_map(|j| entries.get(j))
                    .map(|&(k, v)| (k.clone(), v.clone()))
                    .collect();
                payload.insert("services".into(), Value::Object(services));
                Value::Object(payload)
            })
            .collect()
    }
}

/// Bytes of `"name":value` inside a JSON object.
fn entry_len(name: &str, value: &Value) -> usize {
    json_len(name)
        .saturating_add(1)
        .saturating_add(json_len(value))
}

/// Size of a payload whose empty `services` object (counted in `envelope_len`) gets these
/// entries: their bytes plus the commas between them.
fn filled_len(envelope_len: usize, entries: impl Iterator<Item = usize>) -> usize {
    let (sum, count) = entries.fold((0usize, 0usize), |(s, c), len| {
        (s.saturating_add(len), c + 1)
    });
    envelope_len
        .saturating_add(sum)
        .saturating_add(count.saturating_sub(1))
}

/// Next-fit packing of entry sizes into at most [`MAX_PARTS`] bins of `capacity` bytes, in
/// order: the bins (entry indices) and the entries left out, in increasing order. Leaving an
/// entry out does not change where the others go, so packing the kept entries again gives
/// the same bins.
fn pack(lens: &[usize], capacity: usize) -> (Vec<Vec<usize>>, Vec<usize>) {
    let mut bins: Vec<Vec<usize>> = Vec::new();
    let mut left_out = Vec::new();
    let mut used = 0usize;
    for (i, &len) in lens.iter().enumerate() {
        if len > capacity {
            left_out.push(i);
            continue;
        }
        let with_comma = used.saturating_add(1).saturating_add(len);
        let room = bins.len() < MAX_PARTS;
        match bins.last_mut() {
            Some(bin) if with_comma <= capacity => {
                bin.push(i);
                used = with_comma;
            }
            _ if room => {
                bins.push(vec![i]);
                used = len;
            }
            _ => left_out.push(i),
        }
    }
    (bins, left_out)
}
