//! The receiving side: one peer's content as rebuilt from its heartbeat datagrams.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::MAX_PARTS;

/// Why a payload is not a heartbeat. Nothing in the view changes on an error.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HbError {
    #[error("heartbeat payload is not a JSON object")]
    NotAnObject,
    #[error("heartbeat: missing {0:?}")]
    Missing(&'static str),
    #[error("heartbeat: {0:?} has the wrong type")]
    BadType(&'static str),
    #[error("heartbeat: \"gen\" must be at least 1")]
    ZeroGen,
    #[error("heartbeat: \"since\" {since} is after \"gen\" {generation}")]
    SinceAfterGen { since: u64, generation: u64 },
    #[error("heartbeat: part {index} of {count} is out of range (1 ..= count ..= {MAX_PARTS})")]
    PartOutOfRange { index: u64, count: u64 },
    #[error("heartbeat: gen {generation} was in {was} parts, now {now}")]
    PartCountChanged {
        generation: u64,
        was: usize,
        now: usize,
    },
    #[error("heartbeat: a delta (\"since\" > 0) has a \"part\"")]
    PartInDelta,
    #[error("heartbeat: a full snapshot (\"since\" 0) has \"removed\"")]
    RemovedInFull,
}

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

/// A split snapshot being put together.
#[derive(Clone, Debug, PartialEq)]
struct Assembly {
    r#gen: u64,
    count: usize,
    parts: BTreeMap<usize, Map<String, Value>>,
}

/// A delta, parsed.
#[derive(Clone, Debug, PartialEq)]
struct Delta {
    r#gen: u64,
    since: u64,
    services: Map<String, Value>,
    removed: Vec<String>,
}

enum Body {
    Full {
        part: Option<(usize, usize)>,
        services: Map<String, Value>,
    },
    Delta(Delta),
}

struct Parsed {
    boot: u64,
    r#gen: u64,
    monitor: Value,
    body: Body,
}

/// One peer's heartbeat content, as far as its datagrams have told.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HbView {
    boot: u64,
    /// Newest generation heard of, the one `monitor` comes from.
    r#gen: u64,
    monitor: Value,
    services: Map<String, Value>,
    /// Generation `services` is exactly the sender's content of.
    services_gen: u64,
    /// Generation of the full snapshot `services` was built from (0: none yet).
    base_gen: u64,
    assembly: Option<Assembly>,
    /// The newest delta that came before its snapshot did, applied if that snapshot
    /// completes (a part late behind the next beat's delta).
    pending: Option<Delta>,
}

impl HbView {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one received payload into the view.
    pub fn apply(&mut self, payload: &Value) -> Result<Applied, HbError> {
        let p = parse(payload)?;
        // The only error found against the state: checked before anything changes.
        if let Body::Full {
            part: Some((_, now)),
            ..
        } = p.body
            && p.boot == self.boot
            && let Some(a) = &self.assembly
            && a.r#gen == p.r#gen
            && a.count != now
        {
            return Err(HbError::PartCountChanged {
                generation: p.r#gen,
                was: a.count,
                now,
            });
        }
        if p.boot < self.boot {
            return Ok(Applied::Stale);
        }
        if p.boot > self.boot {
            // The peer restarted: nothing known of its previous life still holds.
            *self = Self {
                boot: p.boot,
                ..Self::default()
            };
        }
        let applied = match p.body {
            Body::Full { part, services } => self.apply_full(p.r#gen, part, services),
            Body::Delta(d) => self.apply_delta(d),
        };
        if applied != Applied::Stale && p.r#gen >= self.r#gen {
            self.r#gen = p.r#gen;
            self.monitor = p.monitor;
        }
        Ok(applied)
    }

    /// The peer's services as last rebuilt (see [`HbView::is_synced`] for how current).
    pub fn services(&self) -> &Map<String, Value> {
        &self.services
    }

    /// The peer's monitor from its newest payload (`null` before any).
    pub fn monitor(&self) -> &Value {
        &self.monitor
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

    fn apply_full(
        &mut self,
        r#gen: u64,
        part: Option<(usize, usize)>,
        services: Map<String, Value>,
    ) -> Applied {
        if r#gen < self.services_gen || r#gen == self.base_gen {
            return Applied::Stale;
        }
        let (index, count) = match part {
            Some((i, n)) if n > 1 => (i, n),
            _ => {
                self.install(r#gen, services);
                return Applied::Full;
            }
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
        assembly.parts.entry(index).or_insert(services);
        let received = assembly.parts.len();
        if received < count {
            return Applied::Partial { received, count };
        }
        let mut all = Map::new();
        if let Some(a) = self.assembly.take() {
            for (_, share) in a.parts {
                all.extend(share);
            }
        }
        self.install(r#gen, all);
        Applied::Full
    }

    /// Makes the full snapshot of `gen` the base, then catches up with a delta that came
    /// ahead of it.
    fn install(&mut self, r#gen: u64, services: Map<String, Value>) {
        self.services = services;
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

fn parse(payload: &Value) -> Result<Parsed, HbError> {
    let obj = payload.as_object().ok_or(HbError::NotAnObject)?;
    let r#gen = required_u64(obj, "gen")?;
    if r#gen == 0 {
        return Err(HbError::ZeroGen);
    }
    let since = required_u64(obj, "since")?;
    let boot = match obj.get("boot") {
        None => 0,
        Some(v) => v.as_u64().ok_or(HbError::BadType("boot"))?,
    };
    let monitor = obj.get("monitor").ok_or(HbError::Missing("monitor"))?;
    let services = match obj.get("services") {
        None => return Err(HbError::Missing("services")),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(HbError::BadType("services")),
    };
    let part = obj.get("part").map(parse_part).transpose()?;
    let removed = match obj.get("removed") {
        None => None,
        Some(Value::Array(names)) => Some(
            names
                .iter()
                .map(|n| n.as_str().map(str::to_owned))
                .collect::<Option<Vec<String>>>()
                .ok_or(HbError::BadType("removed"))?,
        ),
        Some(_) => return Err(HbError::BadType("removed")),
    };
    let body = if since == 0 {
        if removed.is_some() {
            return Err(HbError::RemovedInFull);
        }
        Body::Full {
            part,
            services: services.clone(),
        }
    } else {
        if part.is_some() {
            return Err(HbError::PartInDelta);
        }
        if since > r#gen {
            return Err(HbError::SinceAfterGen {
                since,
                generation: r#gen,
            });
        }
        Body::Delta(Delta {
            r#gen,
            since,
            services: services.clone(),
            removed: removed.unwrap_or_default(),
        })
    };
    Ok(Parsed {
        boot,
        r#gen,
        monitor: monitor.clone(),
        body,
    })
}

fn required_u64(obj: &Map<String, Value>, field: &'static str) -> Result<u64, HbError> {
    obj.get(field)
        .ok_or(HbError::Missing(field))?
        .as_u64()
        .ok_or(HbError::BadType(field))
}

/// `[i, n]` with 1 ≤ i ≤ n ≤ MAX_PARTS.
fn parse_part(v: &Value) -> Result<(usize, usize), HbError> {
    let (index, count) = match v.as_array().map(Vec::as_slice) {
        Some([i, n]) => match (i.as_u64(), n.as_u64()) {
            (Some(i), Some(n)) => (i, n),
            _ => return Err(HbError::BadType("part")),
        },
        _ => return Err(HbError::BadType("part")),
    };
    let out_of_range = HbError::PartOutOfRange { index, count };
    let i = usize::try_from(index).map_err(|_| out_of_range.clone())?;
    let n = usize::try_from(count).map_err(|_| out_of_range.clone())?;
    if i == 0 || i > n || n > MAX_PARTS {
        return Err(out_of_range);
    }
    Ok((i, n))
}
