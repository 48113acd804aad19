//! Every configured member as `daemon status` lists it, and the address book the heartbeat
//! sender reads: members' names are resolved off the `hb.tx` thread (by the `resolver`
//! thread), once per configuration and again only after a failure, so a slow or broken DNS
//! never delays a beat.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{PeerMap, presence_label};
use crate::config::NodeConfig;
use crate::locks::{exclusive, lock, shared};

/// How long a name waits before it is looked up again: one that did not resolve, or whose
/// address a send failed to. Doubled after each failed lookup in a row, up to `RETRY_MAX`: a
/// cluster.nodes full of names the DNS does not know must not keep the DNS busy.
pub(crate) const RETRY: Duration = Duration::from_secs(10);
pub(crate) const RETRY_MAX: Duration = Duration::from_secs(320);

/// Where a member's heartbeats go, as far as the resolver knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Resolution {
    /// Not looked up yet.
    Pending,
    Resolved(SocketAddr),
    /// The lookup failed (or found no address), with why.
    Unresolved(String),
}

#[derive(Clone, Debug)]
struct Entry {
    /// What is looked up: `[node.NAME] addr`, else the name, on the cluster's port.
    host: String,
    port: u16,
    resolution: Resolution,
    /// Look it up again (sending to its address failed) at the resolver's next turn.
    stale: bool,
    last_try: Option<Instant>,
    /// Failed lookups in a row.
    failures: u32,
}

impl Entry {
    fn due(&self, now: Instant) -> bool {
        // At most one lookup per name and `RETRY` (a peer whose sends keep failing must
        // not cost a lookup per beat), longer after failed lookups.
        let wait = RETRY
            .saturating_mul(1 << self.failures.saturating_sub(1).min(16))
            .min(RETRY_MAX);
        let waited = self.last_try.is_none_or(|t| now >= t + wait);
        match self.resolution {
            Resolution::Pending => true,
            Resolution::Resolved(_) => self.stale && waited,
            Resolution::Unresolved(_) => waited,
        }
    }
}

/// A lookup the resolver owes: the member, and what to resolve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Lookup {
    pub name: String,
    pub host: String,
    pub port: u16,
}

/// The members' addresses, by name: written by the resolver, read by `hb.tx` and
/// `daemon status`.
#[derive(Default)]
pub(crate) struct AddrBook {
    /// Read-locked by readers: status answers on different listener workers read it at once.
    entries: RwLock<BTreeMap<Arc<str>, Entry>>,
    /// Rung when a lookup may have become due: its count of rings, and the resolver waiting.
    doorbell: Mutex<u64>,
    rung: Condvar,
}

impl AddrBook {
    /// Follows the configuration: an entry per other member; one whose host or port changed
    /// is looked up again. An address given as an IP needs no lookup and is taken at once.
    pub(crate) fn sync(&self, config: &NodeConfig) {
        let mut entries = exclusive(&self.entries);
        let port = config.listener.port;
        let wanted: BTreeSet<&str> = config
            .cluster
            .nodes
            .iter()
            .map(String::as_str)
            .filter(|n| *n != config.nodename)
            .collect();
        entries.retain(|name, _| wanted.contains(&**name));
        let mut due = false;
        for name in wanted {
            let host = config.peer_host(name);
            if entries
                .get(name)
                .is_some_and(|e| e.host == host && e.port == port)
            {
                continue;
            }
            let resolution = match host.parse::<IpAddr>() {
                Ok(ip) => Resolution::Resolved(SocketAddr::new(ip, port)),
                Err(_) => {
                    due = true;
                    Resolution::Pending
                }
            };
            entries.insert(
                Arc::from(name),
                Entry {
                    host,
                    port,
                    resolution,
                    stale: false,
                    last_try: None,
                    failures: 0,
                },
            );
        }
        drop(entries);
        if due {
            self.ring();
        }
    }

    /// Wakes the resolver: a lookup may be due.
    fn ring(&self) {
        *lock(&self.doorbell) += 1;
        self.rung.notify_all();
    }

    /// Sending to `name` failed: its address is looked up again.
    pub(crate) fn send_failed(&self, name: &str) {
        let marked = match exclusive(&self.entries).get_mut(name) {
            Some(e) if !e.stale => {
                e.stale = true;
                true
            }
            _ => false,
        };
        if marked {
            self.ring();
        }
    }

    /// Looks every name up again soon (SIGHUP), sending to the addresses known meanwhile.
    pub(crate) fn refresh(&self) {
        for e in exclusive(&self.entries).values_mut() {
            if e.host.parse::<IpAddr>().is_err() {
                e.stale = true;
                e.last_try = None;
            }
        }
        self.ring();
    }

    /// The lookups due now; waits up to `wait` for one to become due.
    pub(crate) fn due(&self, wait: Duration) -> Vec<Lookup> {
        let collect = |entries: &BTreeMap<Arc<str>, Entry>| -> Vec<Lookup> {
            let now = Instant::now();
            entries
                .iter()
                .filter(|(_, e)| e.due(now))
                .map(|(name, e)| Lookup {
                    name: name.to_string(),
                    host: e.host.clone(),
                    port: e.port,
                })
                .collect()
        };
        // The count is read before the entries: a ring after it is not missed.
        let rings = *lock(&self.doorbell);
        let found = collect(&shared(&self.entries));
        if !found.is_empty() {
            return found;
        }
        let doorbell = lock(&self.doorbell);
        let _ = self
            .rung
            .wait_timeout_while(doorbell, wait, |now| *now == rings)
            .unwrap_or_else(|p| p.into_inner());
        collect(&shared(&self.entries))
    }

    /// Records the outcome of `lookup`, unless the configuration moved on meanwhile. Returns
    /// the resolution it replaced, when it changed, so the caller logs transitions only.
    pub(crate) fn record(&self, lookup: &Lookup, outcome: Resolution) -> Option<Resolution> {
        let mut entries = exclusive(&self.entries);
        let e = entries.get_mut(lookup.name.as_str())?;
        if e.host != lookup.host || e.port != lookup.port {
            return None;
        }
        e.stale = false;
        e.last_try = Some(Instant::now());
        e.failures = match outcome {
            Resolution::Unresolved(_) => e.failures.saturating_add(1),
            _ => 0,
        };
        let before = std::mem::replace(&mut e.resolution, outcome);
        (before != e.resolution).then_some(before)
    }

    /// The members heartbeats can be sent to now, with their addresses (names shared, not
    /// copied: `hb.tx` asks on every beat).
    pub(crate) fn resolved(&self) -> Vec<(Arc<str>, SocketAddr)> {
        shared(&self.entries)
            .iter()
            .filter_map(|(name, e)| match e.resolution {
                Resolution::Resolved(a) => Some((name.clone(), a)),
                _ => None,
            })
            .collect()
    }
}

/// Resolves `host:port` (blocking: the resolver thread's business).
pub(crate) fn resolve(host: &str, port: u16) -> Resolution {
    use std::net::ToSocketAddrs;
    match (host, port).to_socket_addrs() {
        Ok(mut addrs) => match addrs.next() {
            Some(a) => Resolution::Resolved(a),
            None => Resolution::Unresolved(format!("{host} has no address")),
        },
        Err(e) => Resolution::Unresolved(format!("cannot resolve {host}: {e}")),
    }
}

/// A member's state as `daemon status` names it. The order is the one the views list
/// states in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub(crate) enum MemberState {
    #[serde(rename = "up")]
    Up,
    #[serde(rename = "maintenance")]
    Maintenance,
    #[serde(rename = "stale")]
    Stale,
    #[serde(rename = "never seen")]
    NeverSeen,
    #[serde(rename = "unresolved")]
    Unresolved,
}

impl MemberState {
    pub(crate) const ALL: [MemberState; 5] = [
        MemberState::Up,
        MemberState::Maintenance,
        MemberState::Stale,
        MemberState::NeverSeen,
        MemberState::Unresolved,
    ];

    /// The state of a member heard from.
    pub(crate) fn of(presence: crate::service::orchestrate::Presence) -> MemberState {
        match presence {
            crate::service::orchestrate::Presence::Up => MemberState::Up,
            crate::service::orchestrate::Presence::Maintenance => MemberState::Maintenance,
            crate::service::orchestrate::Presence::Gone => MemberState::Stale,
        }
    }

    /// The presence it was read from; None for a member never heard from.
    pub(crate) fn presence(self) -> Option<crate::service::orchestrate::Presence> {
        match self {
            MemberState::Up => Some(crate::service::orchestrate::Presence::Up),
            MemberState::Maintenance => Some(crate::service::orchestrate::Presence::Maintenance),
            MemberState::Stale => Some(crate::service::orchestrate::Presence::Gone),
            MemberState::NeverSeen | MemberState::Unresolved => None,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            MemberState::Up => presence_label(crate::service::orchestrate::Presence::Up),
            MemberState::Maintenance => {
                presence_label(crate::service::orchestrate::Presence::Maintenance)
            }
            MemberState::Stale => presence_label(crate::service::orchestrate::Presence::Gone),
            MemberState::NeverSeen => "never seen",
            MemberState::Unresolved => "unresolved",
        }
    }
}

/// One other member of `cluster.nodes`, seen or not.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct Member {
    pub state: MemberState,
    /// Where its heartbeats go (None: not resolved).
    pub addr: Option<std::net::SocketAddr>,
    /// Since its last heartbeat (None: never heard).
    pub age_ms: Option<u64>,
    /// Heartbeats taken from it since this daemon started.
    pub beats: u64,
    /// Why its name does not resolve.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolve_error: Option<String>,
}

/// The other members of `cluster.nodes` (this node left out), sorted and without repeats:
/// the order `daemon status` lists them in.
pub(crate) fn other_members(config: &NodeConfig) -> Vec<String> {
    let mut names: Vec<String> = config
        .cluster
        .nodes
        .iter()
        .filter(|n| **n != config.nodename)
        .cloned()
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// Visits each of `names` (as [`other_members`] lists them, with its index there) with its
/// state: from its heartbeats when it was heard (the peer comes with it), else from the
/// address book. A visitor rather than a list: the status writes each member's peer while
/// its data are in the cache.
pub(crate) fn for_each_member<'p>(
    config: &NodeConfig,
    names: &[String],
    peers: &'p PeerMap,
    book: &AddrBook,
    now_ms: u64,
    mut visit: impl FnMut(usize, Member, Option<&'p super::PeerStatus>),
) {
    let book = shared(&book.entries);
    // Both are sorted by name: one walk along the book, no lookup per member.
    let mut entries = book.iter().peekable();
    for (i, name) in names.iter().enumerate() {
        // One comparison of names per step: the status walks this for every member.
        let mut resolution = None;
        while let Some(&(k, e)) = entries.peek() {
            match k.as_ref().cmp(name.as_str()) {
                std::cmp::Ordering::Less => {
                    entries.next();
                }
                std::cmp::Ordering::Equal => {
                    resolution = Some(&e.resolution);
                    break;
                }
                std::cmp::Ordering::Greater => break,
            }
        }
        let (addr, resolve_error) = match resolution {
            Some(Resolution::Resolved(a)) => (Some(*a), None),
            Some(Resolution::Unresolved(e)) => (None, Some(e.clone())),
            Some(Resolution::Pending) | None => (None, None),
        };
        let heard = peers.get(name);
        let member = match heard {
            Some(p) => Member {
                state: MemberState::of(p.presence(now_ms, config)),
                addr,
                age_ms: Some(now_ms.saturating_sub(p.last_seen_ms)),
                beats: p.beats,
                resolve_error,
            },
            None => Member {
                state: if resolve_error.is_some() {
                    MemberState::Unresolved
                } else {
                    MemberState::NeverSeen
                },
                addr,
                age_ms: None,
                beats: 0,
                resolve_error,
            },
        };
        visit(i, member, heard);
    }
}

/// Each state's name with its count of members, in [`MemberState::ALL`] order.
pub(crate) type StateCounts = [(&'static str, u64); MemberState::ALL.len()];

/// How many members are in each state, every state listed.
pub(crate) fn count_by_state(states: impl IntoIterator<Item = MemberState>) -> StateCounts {
    let mut counts = MemberState::ALL.map(|s| (s.as_str(), 0));
    for s in states {
        if let Some(i) = MemberState::ALL.iter().position(|a| *a == s) {
            counts[i].1 += 1;
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> NodeConfig {
        let path = std::path::Path::new("node.conf");
        crate::config::IniDocument::parse(text, path)
            .and_then(|doc| NodeConfig::from_document(&doc, path))
            .unwrap()
    }

    const CONF: &str = "[node]\nnodename = n1\n[cluster]\nsecret = x\nnodes = n1 n2 n3 n4\n\
                        [listener]\nport = 1300\n[node.n2]\naddr = 127.0.0.2\n\
                        [node.n3]\naddr = 127.0.0.3\n[node.n4]\naddr = ghost.invalid\n";

    #[test]
    fn addresses_given_as_ips_need_no_lookup_names_wait_for_the_resolver() {
        let book = AddrBook::default();
        book.sync(&config(CONF));
        let resolved = book.resolved();
        assert_eq!(
            resolved,
            vec![
                (Arc::from("n2"), "127.0.0.2:1300".parse().unwrap()),
                (Arc::from("n3"), "127.0.0.3:1300".parse().unwrap()),
            ]
        );
        let due = book.due(Duration::ZERO);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].host, "ghost.invalid");
        let failed = Resolution::Unresolved("cannot resolve ghost.invalid".into());
        assert_eq!(
            book.record(&due[0], failed.clone()),
            Some(Resolution::Pending)
        );
        assert!(book.due(Duration::ZERO).is_empty(), "retried later");
        assert_eq!(book.record(&due[0], failed), None, "no change, no log");
        // A send failure brings a resolved name back to the resolver.
        book.send_failed("n2");
        let again = book.due(Duration::ZERO);
        assert_eq!(again[0].name, "n2");
        book.record(
            &again[0],
            Resolution::Resolved("127.0.0.2:1300".parse().unwrap()),
        );
        book.send_failed("n2");
        assert!(book.due(Duration::ZERO).is_empty(), "not before RETRY");
        // A changed configuration drops the stale lookup's outcome.
        book.sync(&config(&CONF.replace("ghost.invalid", "127.0.0.4")));
        assert_eq!(
            book.record(&due[0], Resolution::Pending),
            None,
            "the host changed meanwhile"
        );
        assert_eq!(book.resolved().len(), 3);
        // A reload looks names up again, not addresses.
        book.sync(&config(CONF));
        let due = book.due(Duration::ZERO);
        book.record(
            &due[0],
            Resolution::Resolved("127.0.0.4:1300".parse().unwrap()),
        );
        assert!(book.due(Duration::ZERO).is_empty());
        book.refresh();
        let again = book.due(Duration::ZERO);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].host, "ghost.invalid");
        assert_eq!(book.resolved().len(), 3, "still sent to meanwhile");
    }

    fn members<'p>(
        config: &NodeConfig,
        names: &[String],
        peers: &'p PeerMap,
        book: &AddrBook,
        now_ms: u64,
    ) -> Vec<(Member, Option<&'p super::super::PeerStatus>)> {
        let mut out = Vec::new();
        for_each_member(config, names, peers, book, now_ms, |i, m, p| {
            assert_eq!(i, out.len());
            out.push((m, p));
        });
        out
    }

    #[test]
    fn every_member_is_listed_with_a_state() {
        let c = config(CONF);
        let book = AddrBook::default();
        book.sync(&c);
        let due = book.due(Duration::ZERO);
        book.record(&due[0], Resolution::Unresolved("no".into()));
        let mut peers = PeerMap::default();
        peers.insert(
            "n2".into(),
            super::super::PeerStatus {
                addr: "127.0.0.2:1300".parse().unwrap(),
                last_seen_ms: 10_000,
                view: Default::default(),
                sees: None,
                beats: 7,
            },
        );
        let names = other_members(&c);
        let m: Vec<Member> = members(&c, &names, &peers, &book, 10_500)
            .into_iter()
            .map(|(m, _)| m)
            .collect();
        let states: Vec<(&str, &str)> = names
            .iter()
            .zip(&m)
            .map(|(n, m)| (n.as_str(), m.state.as_str()))
            .collect();
        assert_eq!(
            states,
            [("n2", "up"), ("n3", "never seen"), ("n4", "unresolved")]
        );
        assert_eq!((m[0].age_ms, m[0].beats), (Some(500), 7));
        assert_eq!(m[1].addr, Some("127.0.0.3:1300".parse().unwrap()));
        assert_eq!(m[2].addr, None);
        assert_eq!(m[2].resolve_error.as_deref(), Some("no"));
        let stale = members(&c, &names, &peers, &book, 10_000 + c.hb.timeout_ms + 1);
        assert_eq!(stale[0].0.state, MemberState::Stale);
        assert_eq!(stale[0].1.map(|p| p.beats), Some(7));
        // Names the address book does not hold (yet): neither resolved nor failed.
        let names: Vec<String> = ["a0", "n2", "n25", "n4", "z9"].map(String::from).into();
        let m: Vec<Member> = members(&c, &names, &peers, &book, 10_500)
            .into_iter()
            .map(|(m, _)| m)
            .collect();
        let states: Vec<&str> = m.iter().map(|m| m.state.as_str()).collect();
        assert_eq!(
            states,
            ["never seen", "up", "never seen", "unresolved", "never seen"]
        );
        assert_eq!(m[1].addr, Some("127.0.0.2:1300".parse().unwrap()));
        assert_eq!((m[0].addr, m[2].addr, m[4].addr), (None, None, None));
        let counts: BTreeMap<&str, u64> = count_by_state(m.iter().map(|m| m.state))
            .into_iter()
            .collect();
        assert_eq!(counts.len(), MemberState::ALL.len());
        assert_eq!(
            (counts["up"], counts["never seen"], counts["stale"]),
            (1, 3, 0)
        );
    }
}
