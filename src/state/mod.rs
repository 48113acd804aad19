//! What the daemon's threads share: configuration, guard state, thread table, peers. Handlers
//! read it and its owners write it; it knows nothing of the daemon that runs them.

mod dequeue;
pub(crate) mod members;
pub(crate) mod metrics;
mod threads;
pub(crate) use threads::{ThreadCmdError, ThreadError, ThreadReply};

pub(crate) use dequeue::Dequeue;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use serde::Serialize;

use crate::config::{NodeConfig, Paths};
use crate::guard::SharedGuard;
use crate::hb::HbSender;
use crate::listener::ListenerShared;
use crate::locks::lock;
use crate::service::orchestrate::Presence;
use crate::wire::Sealer;

/// A command for the supervisor, with where to send its outcome.
pub(crate) enum SupervisorCmd {
    StopThread(String, ThreadReply),
    StartThread(String, ThreadReply),
    /// Stop the daemon (`daemon stop`, SIGTERM, SIGINT): instances untouched, maintenance
    /// advertised to peers, then exit.
    Stop,
    /// Stop every local instance, answer what stopped and what failed, then stop as above.
    Shutdown(mpsc::Sender<serde_json::Value>),
    /// Re-read node.conf now (SIGHUP), as on a change of its modification time.
    Reload,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub(crate) struct ThreadStatus {
    /// `running`, `idle` (running with nothing configured to do), `restarting` or `stopped`.
    pub state: &'static str,
    pub restarts: u32,
    /// Why the thread last failed, until it has run healthy again for a while.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When `last_error` happened (ms since the epoch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error_ms: Option<u64>,
}

pub(crate) type PeerMap = std::collections::HashMap<String, PeerStatus, crate::wire::FastState>;

/// What this node knows of a peer: its heartbeat content, rebuilt from its datagrams.
#[derive(Clone, Debug)]
pub(crate) struct PeerStatus {
    pub addr: SocketAddr,
    pub last_seen_ms: u64,
    pub view: crate::hb::HbView,
    /// The members its last heartbeat said it sees up or in maintenance (None: it does not
    /// say).
    pub sees: Option<Vec<String>>,
    /// Heartbeats taken from it since this daemon started.
    pub beats: u64,
}

impl PeerStatus {
    /// One of the peer's services, as a document.
    pub(crate) fn service(&self, name: &str) -> Option<serde_json::Value> {
        self.view.services().get(name).map(|v| v.to_value())
    }

    pub(crate) fn in_maintenance(&self) -> bool {
        self.view.monitor().get_str("status").as_deref() == Some("maintenance")
    }

    /// Up while its heartbeats are fresh; in maintenance after its notice, until
    /// `maintenance_grace_ms` without a heartbeat (a host powered off after its daemon was
    /// stopped must not hold its services forever); otherwise stale.
    pub(crate) fn presence(&self, now_ms: u64, config: &NodeConfig) -> Presence {
        crate::service::orchestrate::presence(
            now_ms.saturating_sub(self.last_seen_ms),
            self.in_maintenance(),
            config.hb.timeout_ms,
            config.maintenance_grace_ms,
        )
    }

    /// Whether its last heartbeat said it sees `name` up; None when it does not say.
    pub(crate) fn sees(&self, name: &str) -> Option<bool> {
        self.sees.as_ref().map(|l| l.iter().any(|n| n == name))
    }

    /// Reads the `sees` list of the monitor just received, if the monitor changed; the names
    /// it no longer lists were last seen through it when its previous heartbeat came.
    pub(crate) fn take_sees(&mut self, previous_seen_ms: u64, seen_via: &mut SeenVia) {
        // Read from the raw monitor: a document of it would cost more than the heartbeat's
        // whole apply.
        let now = self.view.monitor().get_strings("sees");
        for gone in self.sees.iter().flatten() {
            if now.as_ref().is_none_or(|l| !l.contains(gone)) {
                let at = seen_via.entry(gone.clone()).or_insert(0);
                *at = (*at).max(previous_seen_ms);
            }
        }
        self.sees = now;
    }
}

/// Takes one authenticated heartbeat from `nodename` into its view.
pub(crate) fn apply_heartbeat(
    peers: &mut PeerMap,
    seen_via: &mut SeenVia,
    nodename: &str,
    heartbeat: crate::hb::Heartbeat,
    addr: SocketAddr,
    at_ms: u64,
) -> Result<crate::hb::Applied, crate::hb::HbError> {
    // A known peer, the steady state, is found by the borrowed name: its key is not copied.
    let peer = match peers.get_mut(nodename) {
        Some(p) => p,
        None => peers
            .entry(nodename.to_owned())
            .or_insert_with(|| PeerStatus {
                addr,
                last_seen_ms: at_ms,
                view: Default::default(),
                sees: None,
                beats: 0,
            }),
    };
    let monitor_before = peer.view.monitor().clone();
    let applied = peer.view.apply(heartbeat)?;
    // Read only when it changed: a repeated monitor lists the same names.
    if *peer.view.monitor() != monitor_before {
        peer.take_sees(peer.last_seen_ms, seen_via);
    }
    peer.addr = addr;
    peer.last_seen_ms = at_ms;
    peer.beats += 1;
    Ok(applied)
}

/// When each member was last seen up by a peer that still heard it (by that peer's
/// heartbeats), as far as those heartbeats told.
pub(crate) type SeenVia = std::collections::HashMap<String, u64>;

/// The last time `name` was seen up by this node or by a peer it hears: a member that some peer
/// still sees is not gone, even if this node cannot reach it (its state here may be stale).
pub(crate) fn last_seen_by_anyone(
    name: &str,
    peers: &PeerMap,
    seen_via: &SeenVia,
    config: &NodeConfig,
    now_ms: u64,
) -> u64 {
    let mut at = peers.get(name).map_or(0, |p| p.last_seen_ms);
    at = at.max(seen_via.get(name).copied().unwrap_or(0));
    for p in peers.values() {
        if p.presence(now_ms, config) == Presence::Up && p.sees(name) == Some(true) {
            at = at.max(p.last_seen_ms);
        }
    }
    at
}

/// How long `name` has been gone: since this node or a peer it hears last saw it up, past
/// the limit that makes it stale (`hb.timeout`, or the maintenance grace after a maintenance
/// notice). 0 while it is not gone; `u64::MAX` when nobody ever saw it.
pub(crate) fn gone_for_ms(
    name: &str,
    peers: &PeerMap,
    seen_via: &SeenVia,
    config: &NodeConfig,
    now_ms: u64,
) -> u64 {
    // A member heard within its limit is not gone, whatever others say of it: that answer
    // needs no walk over every peer (the monitor asks for every node of every service, on
    // every tick).
    if let Some(p) = peers.get(name)
        && p.presence(now_ms, config) != Presence::Gone
    {
        return 0;
    }
    let last = last_seen_by_anyone(name, peers, seen_via, config, now_ms);
    if last == 0 {
        return u64::MAX;
    }
    let limit = match peers.get(name) {
        Some(p) if p.in_maintenance() => config.maintenance_grace_ms,
        _ => config.hb.timeout_ms,
    };
    now_ms.saturating_sub(last).saturating_sub(limit)
}

/// This node's votes for quorum: itself, every member it sees up that sees it too (by that
/// member's last heartbeat; one that does not say is taken at its word), every member in
/// maintenance, and every arbitrator whose grant it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Votes {
    pub votes: usize,
    /// Members and arbitrators.
    pub total: usize,
    pub members: usize,
    pub arbitrators: usize,
    /// Of `votes`, the arbitrators'.
    pub arbitrator_votes: usize,
}

impl Votes {
    pub(crate) fn has_quorum(&self) -> bool {
        crate::service::orchestrate::has_quorum(self.votes, self.members, self.arbitrators)
    }
}

/// An arbitrator's vote as this node holds it: granted for `partition`, until `until_ms` on
/// this node's clock (counted from before the request went out, so it ends no later than the
/// arbitrator's own record of it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ArbitratorGrant {
    pub partition: BTreeSet<String>,
    pub until_ms: u64,
}

/// The arbitrators' grants this node holds, by `[arbitrator#N]` section name.
pub(crate) type ArbitratorGrants = BTreeMap<String, ArbitratorGrant>;

/// The members whose votes this node counts (itself, members up that see it, members in
/// maintenance): the partition it asks arbitrators' votes for.
pub(crate) fn partition(config: &NodeConfig, peers: &PeerMap, now_ms: u64) -> BTreeSet<String> {
    let mut seen = BTreeSet::from([config.nodename.clone()]);
    for name in config
        .cluster
        .nodes
        .iter()
        .filter(|n| **n != config.nodename)
    {
        let Some(p) = peers.get(name) else { continue };
        if in_partition(p, p.presence(now_ms, config), &config.nodename) {
            seen.insert(name.clone());
        }
    }
    seen
}

/// Whether a member heard from, at `presence`, is in this node's partition: up and not saying
/// it cannot see this node, or in maintenance.
pub(crate) fn in_partition(peer: &PeerStatus, presence: Presence, nodename: &str) -> bool {
    match presence {
        Presence::Up => peer.sees(nodename) != Some(false),
        Presence::Maintenance => true,
        Presence::Gone => false,
    }
}

/// Whether a grant counts now: unexpired, and every member of the partition it was granted
/// for still seen. A grant for a partition this node no longer fully sees may be shared with
/// a member now cut off from it: it stops counting at once rather than when it expires.
pub(crate) fn grant_counts(grant: &ArbitratorGrant, seen: &BTreeSet<String>, now_ms: u64) -> bool {
    grant.until_ms > now_ms && grant.partition.is_subset(seen)
}

pub(crate) fn votes(
    config: &NodeConfig,
    peers: &PeerMap,
    grants: &ArbitratorGrants,
    now_ms: u64,
) -> Votes {
    let seen = partition(config, peers, now_ms);
    votes_of(config, seen.len(), grants, |g| {
        grant_counts(g, &seen, now_ms)
    })
}

/// The votes of a partition of `seen` members, `counts` telling whether an arbitrator's
/// grant counts for it.
pub(crate) fn votes_of(
    config: &NodeConfig,
    seen: usize,
    grants: &ArbitratorGrants,
    counts: impl Fn(&ArbitratorGrant) -> bool,
) -> Votes {
    let arbitrator_votes = config
        .arbitrators
        .keys()
        .filter(|name| grants.get(*name).is_some_and(&counts))
        .count();
    let members = config.cluster.nodes.len().max(1);
    let arbitrators = config.arbitrators.len();
    Votes {
        votes: seen + arbitrator_votes,
        total: members + arbitrators,
        members,
        arbitrators,
        arbitrator_votes,
    }
}

/// How `daemon status` names a peer's presence.
pub(crate) fn presence_label(p: Presence) -> &'static str {
    match p {
        Presence::Up => "up",
        Presence::Maintenance => "maintenance",
        Presence::Gone => "stale",
    }
}

pub(crate) struct DaemonState {
    pub paths: Paths,
    pub root: Option<PathBuf>,
    pub config: RwLock<Arc<NodeConfig>>,
    pub guard: Arc<SharedGuard>,
    pub dequeue: Arc<Dequeue>,
    pub listener: OnceLock<Arc<ListenerShared>>,
    pub threads: Mutex<BTreeMap<&'static str, ThreadStatus>>,
    /// Why the local socket's thread stopped serving, once it has.
    pub control_error: Mutex<Option<String>>,
    pub commands: Mutex<mpsc::Sender<SupervisorCmd>>,
    /// Written by the heartbeat shard (and by join/leave); read by status and orchestration.
    /// Hashed, not sorted: the heartbeat shard looks a peer up per heartbeat (readers that
    /// list peers sort them). Its keys are members' names, from authenticated heartbeats.
    /// Read-locked by readers: status answers on different listener workers read it at once.
    pub peers: RwLock<PeerMap>,
    /// Written with `peers`, by the heartbeat shard: see [`last_seen_by_anyone`].
    pub seen_via: Mutex<SeenVia>,
    /// The arbitrators' votes this node holds, renewed by the `arbitrators` thread.
    pub arbitrator_grants: Mutex<ArbitratorGrants>,
    /// What the `arbitrators` thread last heard from each arbitrator, for `daemon status`.
    pub arbitrator_status: Mutex<BTreeMap<String, serde_json::Value>>,
    /// On an arbitrator (`[arbitrator] serve`): the grants of its vote in force.
    pub arbitrator_lease: Mutex<crate::service::arbitrator::ArbitratorLease>,
    /// Since when this node has held quorum without a break, as the monitor last found.
    pub quorum_since: Mutex<Option<u64>>,
    pub started_ms: u64,
    pub shards: OnceLock<usize>,
    pub dispatcher: OnceLock<crate::dispatch::Dispatcher>,
    /// Where nodemgr and svcmgr are, to run service actions and queued actions.
    pub bin_dir: PathBuf,
    /// The node monitor; written by the node shard, `frozen` read by every shard.
    pub node_monitor: Mutex<NodeMonitor>,
    pub node_frozen: AtomicBool,
    /// Each service's latest status and monitor, published by its shard for `daemon status`
    /// and heartbeats.
    pub services: Mutex<BTreeMap<String, serde_json::Value>>,
    /// Async service actions running, by id, until they end.
    pub actions: Mutex<BTreeMap<String, serde_json::Value>>,
    /// Services whose monitor tick is queued or running: the monitor thread skips them.
    pub ticks_in_flight: Mutex<HashSet<String>>,
    /// Heartbeats taken into peers' views by the heartbeat shard (the listener's `delivered`
    /// counts them before the shard's queue, which may drop some under a flood).
    pub heartbeats: HeartbeatCounters,
    /// Set once the daemon is stopping: the monitor takes no more action.
    pub stopping: AtomicBool,
    /// Set when the maintenance notice goes out: every heartbeat from then on announces it.
    pub maintenance: AtomicBool,
    /// Latched once the daemon has heard every peer since its start, or its rejoin grace
    /// period passed: until then it orchestrates nothing.
    pub orchestration_ready: AtomicBool,
    /// What this node sends in its heartbeats, and the session that seals them: shared by
    /// the `hb.tx` thread and the maintenance notice, so the notice continues the same
    /// generations and counters.
    pub hb_out: Mutex<HbOut>,
    /// The other members' addresses, resolved by the `resolver` thread for `hb.tx`.
    pub addr_book: members::AddrBook,
}

#[derive(Default, Debug)]
pub(crate) struct HeartbeatCounters {
    /// Applied to a peer's view (news or not).
    pub applied: std::sync::atomic::AtomicU64,
    /// Of those, the ones that changed the view (not older than what it held).
    pub news: std::sync::atomic::AtomicU64,
    /// Refused by the view (a part count that changed within a generation).
    pub refused: std::sync::atomic::AtomicU64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub(crate) struct NodeMonitor {
    pub status: crate::wire::payload::NodeMonitorStatus,
    pub local_expect: crate::wire::payload::NodeLocalExpect,
}

impl Default for NodeMonitor {
    fn default() -> Self {
        NodeMonitor {
            status: crate::wire::payload::NodeMonitorStatus::Idle,
            local_expect: crate::wire::payload::NodeLocalExpect::Thawed,
        }
    }
}

impl DaemonState {
    /// Records whether this node has quorum now; returns how long it has held it without a
    /// break (0 without it).
    pub(crate) fn quorum_held_ms(&self, has_quorum: bool, now_ms: u64) -> u64 {
        let mut since = lock(&self.quorum_since);
        match (has_quorum, *since) {
            (false, _) => {
                *since = None;
                0
            }
            (true, Some(t)) => now_ms.saturating_sub(t),
            (true, None) => {
                *since = Some(now_ms);
                0
            }
        }
    }

    pub(crate) fn config(&self) -> Arc<NodeConfig> {
        crate::locks::shared(&self.config).clone()
    }

    pub(crate) fn send(&self, cmd: SupervisorCmd) -> bool {
        crate::locks::lock(&self.commands).send(cmd).is_ok()
    }

    /// A daemon's state, its threads not started yet: `commands` reach its supervisor. The
    /// members given as IPs have their addresses at once; names wait for the resolver.
    pub(crate) fn new(
        config: NodeConfig,
        started_ms: u64,
        place: Place,
        commands: mpsc::Sender<SupervisorCmd>,
        node_monitor: NodeMonitor,
    ) -> DaemonState {
        let guard = Arc::new(SharedGuard::new(
            config.listener.blacklist_ttl_ms,
            config.listener.join_rate,
        ));
        let dequeue = Dequeue::default();
        dequeue.set_timeout_ms(config.dequeue_timeout_ms);
        let state = DaemonState {
            paths: place.paths,
            root: place.root,
            config: RwLock::new(Arc::new(config)),
            guard,
            dequeue: Arc::new(dequeue),
            listener: OnceLock::new(),
            threads: Mutex::default(),
            control_error: Mutex::new(None),
            commands: Mutex::new(commands),
            peers: RwLock::default(),
            seen_via: Mutex::default(),
            arbitrator_grants: Mutex::default(),
            arbitrator_status: Mutex::default(),
            arbitrator_lease: Mutex::default(),
            quorum_since: Mutex::new(None),
            started_ms,
            shards: OnceLock::new(),
            dispatcher: OnceLock::new(),
            bin_dir: place.bin_dir,
            node_frozen: AtomicBool::new(
                node_monitor.local_expect == crate::wire::payload::NodeLocalExpect::Frozen,
            ),
            node_monitor: Mutex::new(node_monitor),
            services: Mutex::default(),
            actions: Mutex::default(),
            ticks_in_flight: Mutex::default(),
            heartbeats: HeartbeatCounters::default(),
            stopping: AtomicBool::new(false),
            maintenance: AtomicBool::new(false),
            orchestration_ready: AtomicBool::new(false),
            hb_out: Mutex::new(HbOut::new(started_ms)),
            addr_book: members::AddrBook::default(),
        };
        state.addr_book.sync(&state.config());
        state
    }

    /// A state that no daemon runs, with no threads behind it: what the benches and the
    /// handlers' tests write a status from.
    pub(crate) fn unattached(config: NodeConfig, started_ms: u64) -> DaemonState {
        let place = Place {
            paths: Paths::new(None),
            root: None,
            bin_dir: PathBuf::new(),
        };
        DaemonState::new(
            config,
            started_ms,
            place,
            mpsc::channel().0,
            NodeMonitor::default(),
        )
    }
}

/// Where a daemon runs: its files, the root it was given, and where its programs are.
pub(crate) struct Place {
    pub paths: Paths,
    pub root: Option<PathBuf>,
    pub bin_dir: PathBuf,
}

/// This node's heartbeat content and the session sealing it.
pub(crate) struct HbOut {
    pub(crate) content: HbSender,
    /// The identity (secret, cluster, nodename) the session was made for.
    pub(crate) session: Option<((String, String, String), Sealer)>,
    pub(crate) oversize_logged: bool,
}

impl HbOut {
    pub(crate) fn new(boot: u64) -> Self {
        // The boot stamp tells peers a restarted node's generations start over.
        HbOut {
            content: HbSender::default().with_boot(boot),
            session: None,
            oversize_logged: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> NodeConfig {
        let text = "[node]\nnodename = n1\n[cluster]\nsecret = x\nnodes = n1 n2\nquorum = true\n\
                    [hb]\ninterval = 500ms\ntimeout = 2s\n[arbitrator#1]\naddr = 127.0.0.3:1214\n";
        let path = std::path::Path::new("node.conf");
        crate::config::IniDocument::parse(text, path)
            .and_then(|doc| NodeConfig::from_document(&doc, path))
            .unwrap()
    }

    fn peer_seen_at(at_ms: u64) -> PeerStatus {
        PeerStatus {
            addr: "127.0.0.2:1214".parse().unwrap(),
            last_seen_ms: at_ms,
            view: Default::default(),
            sees: Some(vec!["n1".into(), "n2".into()]),
            beats: 1,
        }
    }

    fn grant(names: &[&str], until_ms: u64) -> ArbitratorGrants {
        let partition = names.iter().map(|n| n.to_string()).collect();
        BTreeMap::from([(
            "arbitrator#1".to_string(),
            ArbitratorGrant {
                partition,
                until_ms,
            },
        )])
    }

    #[test]
    fn an_arbitrator_vote_counts_while_unexpired_and_its_partition_is_seen() {
        let c = config();
        let mut peers = PeerMap::default();
        peers.insert("n2".into(), peer_seen_at(10_000));
        let both = grant(&["n1", "n2"], 15_000);
        let v = votes(&c, &peers, &both, 11_000);
        assert_eq!((v.votes, v.total, v.arbitrator_votes), (3, 3, 1));
        assert!(v.has_quorum());
        assert_eq!(
            votes(&c, &peers, &both, 15_000).arbitrator_votes,
            0,
            "expired"
        );
        // n2 stale: a grant for {n1, n2} no longer counts, one for {n1} does.
        let v = votes(&c, &peers, &both, 12_500);
        assert_eq!((v.votes, v.arbitrator_votes), (1, 0));
        assert!(!v.has_quorum());
        let v = votes(&c, &peers, &grant(&["n1"], 15_000), 12_500);
        assert_eq!((v.votes, v.arbitrator_votes), (2, 1));
        assert!(v.has_quorum(), "two of three votes");
        // A grant from an arbitrator no longer configured does not count.
        let mut other = grant(&["n1"], 15_000);
        let g = other.remove("arbitrator#1").unwrap();
        other.insert("arbitrator#9".into(), g);
        assert_eq!(votes(&c, &peers, &other, 12_500).arbitrator_votes, 0);
    }
}
