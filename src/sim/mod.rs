//! A deterministic simulation of a whole cluster in one process: N nodes on a simulated clock
//! and network (delay, loss, duplication, reordering, partitions that heal, host crashes and
//! restarts, daemon stops, clock offsets), running the real heartbeat code (`hb`: the sender's
//! payloads, serialized, parsed by the codec, rebuilt by the view) and the real orchestration
//! (`service::orchestrate::{decide, step}`, `ServiceMonitor`'s restart plan, quorum), with one
//! failover service whose instances start and stop in simulated time and sometimes fail.
//!
//! After every event it checks the invariants:
//! - a failover service never has two instances running (starting and stopping count);
//! - no instance is started on a node without quorum;
//! - while a partition with quorum has held a node that can run the service, with no fault,
//!   for [`Sim::liveness_bound_ms`], the service runs.
//!
//! The model's assumptions are the ones the guarantee rests on: instances stop within their
//! stop timeout, clocks may be offset but tick at the same rate, a daemon stopped for
//! maintenance comes back (or its host goes down) within the maintenance grace period.
//! Everything is drawn from one seed: a failing run is replayed exactly from its seed.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use serde_json::{Map, Value, json};

use crate::config::{IniDocument, NodeConfig};
use crate::hb::{HbSender, Heartbeat};
use crate::service::arbitrator::ArbitratorLease;
use crate::service::monitor::{Plan, ResourceView, ServiceMonitor};
use crate::service::orchestrate::{self, NodeView, Policy, Presence, Step};
use crate::state::{ArbitratorGrant, ArbitratorGrants, PeerMap, SeenVia};
use crate::wire::payload::{GlobalExpect, ServiceLocalExpect, ServiceMonitorStatus};

const SERVICE: &str = "ha1";
/// Peers' address: the simulated network has no sockets.
const SIM_ADDR: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);
/// Events kept for a failure's trace.
const TRACE: usize = 80;
/// The simulated arbitrator's section name.
const ARBITRATOR: &str = "arbitrator#1";

/// The simulated cluster's settings (ms).
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub nodes: usize,
    pub hb_interval: u64,
    pub hb_timeout: u64,
    pub tick: u64,
    pub maintenance_grace: u64,
    pub rejoin_grace: u64,
    pub takeover_delay: u64,
    /// Longest start and stop of an instance (each takes a random time up to this).
    pub start_max: u64,
    pub stop_max: u64,
    /// Chance that a start fails.
    pub start_fail: f64,
    /// Network: one-way delay range, chance of loss and of duplication.
    pub delay_min: u64,
    pub delay_max: u64,
    pub loss: f64,
    pub duplicate: f64,
    /// Mean time between faults.
    pub fault_every: u64,
    /// Largest clock offset between nodes.
    pub clock_offset_max: u64,
    /// One arbitrator, asked by every node at each heartbeat, granting leases this long
    /// (0: none).
    pub arbitrator_lease: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            nodes: 3,
            hb_interval: 1_000,
            hb_timeout: 4_000,
            tick: 1_000,
            maintenance_grace: 30_000,
            rejoin_grace: 4_000,
            takeover_delay: 4_000,
            start_max: 2_000,
            stop_max: 2_000,
            start_fail: 0.05,
            delay_min: 1,
            delay_max: 200,
            loss: 0.05,
            duplicate: 0.02,
            fault_every: 40_000,
            clock_offset_max: 5_000,
            arbitrator_lease: 0,
        }
    }
}

/// A small deterministic generator (SplitMix64): the simulation must replay from a seed on
/// every platform, whatever version of a random crate is around.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Daemon {
    Running,
    /// Stopped for maintenance: its last heartbeat said so; its instance is untouched.
    Stopped,
    /// The host is down: no daemon, no instance.
    Down,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OpKind {
    Start,
    Restart,
    Stop,
}

#[derive(Clone, Copy, Debug)]
struct Op {
    kind: OpKind,
    fails: bool,
}

struct Node {
    name: String,
    /// The node's own `node.conf`, parsed as the daemon parses it.
    config: NodeConfig,
    daemon: Daemon,
    offset: u64,
    started: u64,
    ready_latched: bool,
    /// Since when it has held quorum without a break (None: it does not).
    quorum_since: Option<u64>,
    hb: HbSender,
    /// What the node knows of its peers, kept as the daemon keeps it.
    peers: PeerMap,
    seen_via: SeenVia,
    /// Persisted, as monitor.json is: kept across daemon restarts and host crashes.
    monitor: ServiceMonitor,
    running: bool,
    op: Option<Op>,
    /// Bumped when the daemon or the host goes: events of an earlier life are ignored.
    life: u64,
    /// The arbitrator's vote as this node holds it.
    grants: ArbitratorGrants,
    /// Whether it reaches the arbitrator.
    reaches_arbitrator: bool,
}

#[derive(Clone, Debug)]
enum Event {
    Beat(usize, u64),
    Tick(usize, u64),
    Deliver {
        to: usize,
        from: usize,
        payload: String,
    },
    OpDone(usize, u64),
    Fault,
    Heal,
    HostUp(usize),
    DaemonStart(usize),
}

/// A broken invariant, with what led to it.
#[derive(Debug)]
pub struct Violation {
    pub seed: u64,
    pub at_ms: u64,
    pub what: String,
    pub trace: Vec<String>,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "seed {}: at {} ms: {}\nlast events:",
            self.seed, self.at_ms, self.what
        )?;
        for line in &self.trace {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

/// What a run covered.
#[derive(Clone, Copy, Debug, Default)]
pub struct Summary {
    pub events: u64,
    pub starts: u64,
    pub faults: u64,
    /// Simulated time the service ran somewhere.
    pub running_ms: u64,
    /// Ticks where a node held quorum only through the arbitrator's vote.
    pub arbitrated_ticks: u64,
}

pub struct Sim {
    cfg: SimConfig,
    seed: u64,
    rng: Rng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64, usize)>>,
    events: Vec<Option<Event>>,
    free: Vec<usize>,
    nodes: Vec<Node>,
    /// Partition group of each node: messages cross only within a group.
    group: Vec<u8>,
    last_fault: u64,
    trace: VecDeque<String>,
    summary: Summary,
    last_running_check: u64,
    /// The arbitrator's leases, on the simulation's own clock.
    arbitrator: ArbitratorLease,
}

impl Sim {
    pub fn new(cfg: SimConfig, seed: u64) -> Sim {
        let mut rng = Rng::new(seed);
        let n = cfg.nodes;
        let names: Vec<String> = (1..=n).map(|i| format!("n{i}")).collect();
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            let text = format!(
                "[node]\nnodename = {}\nmaintenance_grace_period = {}ms\nrejoin_grace_period = {}ms\n\
                 takeover_delay = {}ms\nsplit_action = stop\n[cluster]\nsecret = sim\nnodes = {}\n\
                 quorum = true\n[hb]\ninterval = {}ms\ntimeout = {}ms\n[monitor]\ninterval = {}ms\n",
                names[i],
                cfg.maintenance_grace,
                cfg.rejoin_grace,
                cfg.takeover_delay,
                names.join(" "),
                cfg.hb_interval,
                cfg.hb_timeout,
                cfg.tick
            );
            let text = if cfg.arbitrator_lease > 0 {
                format!("{text}[{ARBITRATOR}]\naddr = arbitrator:1214\n")
            } else {
                text
            };
            let path = std::path::Path::new("sim/node.conf");
            let config = IniDocument::parse(&text, path)
                .and_then(|doc| NodeConfig::from_document(&doc, path))
                .unwrap_or_else(|e| panic!("the simulation's own node.conf: {e}"));
            let offset = rng.range(0, cfg.clock_offset_max);
            let monitor = ServiceMonitor {
                global_expect: GlobalExpect::Started,
                global_expect_updated_ms: 1,
                ..Default::default()
            };
            nodes.push(Node {
                name: names[i].clone(),
                config,
                daemon: Daemon::Running,
                offset,
                started: offset,
                ready_latched: false,
                quorum_since: None,
                hb: HbSender::default().with_boot(offset.max(1)),
                peers: PeerMap::default(),
                seen_via: SeenVia::new(),
                monitor,
                running: false,
                op: None,
                life: 0,
                grants: ArbitratorGrants::new(),
                reaches_arbitrator: true,
            });
        }
        let mut sim = Sim {
            seed,
            rng,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            events: Vec::new(),
            free: Vec::new(),
            nodes,
            group: vec![0; n],
            last_fault: 0,
            trace: VecDeque::with_capacity(TRACE),
            summary: Summary::default(),
            last_running_check: 0,
            arbitrator: ArbitratorLease::default(),
            cfg,
        };
        for i in 0..n {
            let beat = sim.rng.range(0, sim.cfg.hb_interval);
            let tick = sim.rng.range(0, sim.cfg.tick);
            sim.at(beat, Event::Beat(i, 0));
            sim.at(tick, Event::Tick(i, 0));
        }
        let first = sim
            .rng
            .range(sim.cfg.fault_every / 2, sim.cfg.fault_every * 3 / 2);
        sim.at(first, Event::Fault);
        sim
    }

    /// How long after the last fault the service must run again, when some partition with
    /// quorum holds a node that can run it: a holder's loss is noticed (hb.timeout), waited
    /// for (takeover delay, its stop, a tick), a restarted daemon waits its rejoin grace, the
    /// election's `ready` handshake takes a heartbeat round or two, a start may fail once per
    /// node and the election moves on.
    pub fn liveness_bound_ms(&self) -> u64 {
        let c = &self.cfg;
        let handshake = 3 * c.hb_interval + 3 * c.tick + c.delay_max;
        let election = handshake + c.start_max;
        2 * c.hb_timeout
            + c.rejoin_grace
            + 2 * self.takeover_wait()
            + c.stop_max
            + (c.nodes as u64 + 1) * election
    }

    fn takeover_wait(&self) -> u64 {
        self.nodes[0].config.takeover_wait_ms(self.cfg.stop_max)
    }

    fn at(&mut self, delay: u64, ev: Event) {
        let slot = match self.free.pop() {
            Some(i) => {
                self.events[i] = Some(ev);
                i
            }
            None => {
                self.events.push(Some(ev));
                self.events.len() - 1
            }
        };
        self.seq += 1;
        self.queue.push(Reverse((self.now + delay, self.seq, slot)));
    }

    fn note(&mut self, line: String) {
        if self.trace.len() == TRACE {
            self.trace.pop_front();
        }
        self.trace.push_back(format!("{:>9} {line}", self.now));
    }

    fn violation(&self, what: String) -> Violation {
        Violation {
            seed: self.seed,
            at_ms: self.now,
            what,
            trace: self.trace.iter().cloned().collect(),
        }
    }

    /// Runs until `until_ms` of simulated time, or the first broken invariant.
    pub fn run(&mut self, until_ms: u64) -> Result<Summary, Violation> {
        while let Some(Reverse((t, _, slot))) = self.queue.pop() {
            if t > until_ms {
                break;
            }
            let running_before = self.instances() > 0;
            if running_before {
                self.summary.running_ms += t - self.now;
            }
            self.now = t;
            let Some(ev) = self.events[slot].take() else {
                continue;
            };
            self.free.push(slot);
            self.summary.events += 1;
            self.handle(ev)?;
            let n = self.instances();
            if n > 1 {
                return Err(self.violation(format!("{SERVICE} runs on {n} nodes")));
            }
        }
        Ok(self.summary)
    }

    /// Nodes where an instance runs, starts or stops.
    fn instances(&self) -> usize {
        self.nodes
            .iter()
            .filter(|n| n.daemon != Daemon::Down && (n.running || n.op.is_some()))
            .count()
    }

    fn local(&self, i: usize) -> u64 {
        self.now + self.nodes[i].offset
    }

    fn connected(&self, a: usize, b: usize) -> bool {
        self.group[a] == self.group[b]
    }

    fn handle(&mut self, ev: Event) -> Result<(), Violation> {
        match ev {
            Event::Beat(i, life) => {
                if self.nodes[i].life == life && self.nodes[i].daemon == Daemon::Running {
                    self.beat(i, false);
                    self.ask_arbitrator(i, 0);
                    let next = self.cfg.hb_interval;
                    self.at(next, Event::Beat(i, life));
                }
            }
            Event::Tick(i, life) => {
                if self.nodes[i].life == life && self.nodes[i].daemon == Daemon::Running {
                    self.tick(i)?;
                    let next = self.cfg.tick;
                    self.at(next, Event::Tick(i, life));
                }
                self.check_liveness()?;
            }
            Event::Deliver { to, from, payload } => {
                if self.nodes[to].daemon == Daemon::Running && self.connected(from, to) {
                    let now = self.local(to);
                    let from_name = self.nodes[from].name.clone();
                    if let Ok(hb) = Heartbeat::parse(payload.as_bytes()) {
                        let node = &mut self.nodes[to];
                        let _ = crate::state::apply_heartbeat(
                            &mut node.peers,
                            &mut node.seen_via,
                            &from_name,
                            hb,
                            SIM_ADDR,
                            now,
                        );
                    }
                }
            }
            Event::OpDone(i, life) => self.op_done(i, life),
            Event::Fault => {
                self.fault();
                let next = self
                    .rng
                    .range(self.cfg.fault_every / 2, self.cfg.fault_every * 3 / 2);
                self.at(next, Event::Fault);
            }
            Event::Heal => {
                self.note("partition healed".into());
                self.group.iter_mut().for_each(|g| *g = 0);
                self.nodes
                    .iter_mut()
                    .for_each(|n| n.reaches_arbitrator = true);
                self.last_fault = self.now;
            }
            Event::HostUp(i) => {
                self.note(format!("{} host up", self.nodes[i].name));
                self.start_daemon(i);
            }
            Event::DaemonStart(i) => {
                if self.nodes[i].daemon == Daemon::Stopped {
                    self.note(format!("{} daemon started", self.nodes[i].name));
                    self.start_daemon(i);
                }
            }
        }
        Ok(())
    }

    /// Node `i` asks the arbitrator for its vote, as the `arbitrators` thread does (the round
    /// trip taken as instant: the grant is dated from the node's clock before it).
    fn ask_arbitrator(&mut self, i: usize, hold: u64) {
        if self.cfg.arbitrator_lease == 0 || !self.nodes[i].reaches_arbitrator {
            return;
        }
        let lease = self.cfg.arbitrator_lease.max(hold);
        let now = self.local(i);
        let node = &self.nodes[i];
        let partition = crate::state::partition(&node.config, &node.peers, now);
        let answer = self
            .arbitrator
            .request(&node.name, &partition, self.now, lease);
        let node = &mut self.nodes[i];
        if answer.granted {
            node.grants.insert(
                ARBITRATOR.to_string(),
                ArbitratorGrant {
                    partition,
                    until_ms: now + lease,
                },
            );
        } else if node.grants.remove(ARBITRATOR).is_some() {
            let line = format!(
                "{} lost the arbitrator's vote to {:?}",
                node.name, answer.holders
            );
            self.note(line);
        }
    }

    fn start_daemon(&mut self, i: usize) {
        self.last_fault = self.now;
        let now = self.local(i);
        let n = &mut self.nodes[i];
        n.daemon = Daemon::Running;
        n.life += 1;
        n.started = now;
        n.ready_latched = false;
        n.quorum_since = None;
        n.hb = HbSender::default().with_boot(now);
        n.peers.clear();
        n.seen_via.clear();
        n.grants.clear();
        // The census: an action the previous life was carrying out is over or lost.
        n.monitor.settle();
        let life = n.life;
        self.at(0, Event::Beat(i, life));
        let tick = self.rng.range(0, self.cfg.tick);
        self.at(tick, Event::Tick(i, life));
    }

    fn fault(&mut self) {
        self.summary.faults += 1;
        self.last_fault = self.now;
        let n = self.cfg.nodes;
        let i = self.rng.range(0, n as u64 - 1) as usize;
        match self.rng.range(0, 9) {
            // A partition, healed later.
            0..=3 => {
                for g in self.group.iter_mut() {
                    *g = 0;
                }
                let cut = self.rng.range(1, (n as u64).saturating_sub(1).max(1));
                let mut picked = 0;
                while picked < cut {
                    let j = self.rng.range(0, n as u64 - 1) as usize;
                    if self.group[j] == 0 {
                        self.group[j] = 1;
                        picked += 1;
                    }
                }
                let cut_arbitrator = self.rng.chance(0.3);
                for (node, g) in self.nodes.iter_mut().zip(&self.group) {
                    node.reaches_arbitrator = !(cut_arbitrator && *g == 1);
                }
                self.note(format!(
                    "partition {:?}{}",
                    self.group,
                    if cut_arbitrator {
                        ", group 1 cut from the arbitrator"
                    } else {
                        ""
                    }
                ));
                let heal = self.rng.range(2_000, 4 * self.liveness_bound_ms());
                self.at(heal, Event::Heal);
            }
            // A host crash: daemon and instance gone; back later.
            4..=5 => {
                if self.nodes[i].daemon != Daemon::Down {
                    self.note(format!("{} host crash", self.nodes[i].name));
                    let node = &mut self.nodes[i];
                    node.daemon = Daemon::Down;
                    node.running = false;
                    node.op = None;
                    node.life += 1;
                    let back = self.rng.range(1_000, 2 * self.liveness_bound_ms());
                    self.at(back, Event::HostUp(i));
                }
            }
            // A daemon stop for maintenance, shorter than the grace period.
            6..=7 => {
                if self.nodes[i].daemon == Daemon::Running {
                    self.note(format!("{} daemon stop", self.nodes[i].name));
                    // The notice's copies, as the daemon sends them (spread over 700 ms here
                    // all at once: each is lost or delayed on its own).
                    for _ in crate::hb::MAINTENANCE_COPIES_MS {
                        self.beat(i, true);
                    }
                    self.ask_arbitrator(i, self.cfg.maintenance_grace);
                    let node = &mut self.nodes[i];
                    node.daemon = Daemon::Stopped;
                    node.life += 1;
                    let back = self.rng.range(500, self.cfg.maintenance_grace / 2);
                    self.at(back, Event::DaemonStart(i));
                }
            }
            // The operator clears failed states; and the instance of a node crashes on its own.
            _ => {
                for node in self.nodes.iter_mut() {
                    node.monitor.clear();
                }
                if self.nodes[i].running && self.nodes[i].op.is_none() {
                    self.note(format!("{} instance died", self.nodes[i].name));
                    self.nodes[i].running = false;
                } else {
                    self.note("failures cleared".into());
                }
            }
        }
    }

    /// What node `i` publishes of the service: as `daemon status` and heartbeats carry it.
    fn service_json(&self, i: usize) -> Value {
        let n = &self.nodes[i];
        json!({
            "avail": if n.running { "up" } else { "down" },
            "monitor": serde_json::to_value(&n.monitor).unwrap_or_default(),
            "orchestrate": "ha",
        })
    }

    fn beat(&mut self, i: usize, maintenance: bool) {
        let now = self.local(i);
        let node = &self.nodes[i];
        let mut sees: Vec<&str> = node
            .peers
            .iter()
            .filter(|(_, p)| p.presence(now, &node.config) != Presence::Gone)
            .map(|(name, _)| name.as_str())
            .collect();
        sees.sort_unstable();
        let monitor = json!({
            "status": if maintenance { "maintenance" } else { "idle" },
            "local_expect": "thawed",
            "sees": sees,
        });
        let mut services = Map::new();
        services.insert(SERVICE.into(), self.service_json(i));
        let node = &mut self.nodes[i];
        node.hb.update(monitor, services);
        let payloads: Vec<String> = node
            .hb
            .next_payloads()
            .iter()
            .map(|p| p.to_string())
            .collect();
        for j in 0..self.nodes.len() {
            if j == i || !self.connected(i, j) {
                continue;
            }
            for payload in &payloads {
                if self.rng.chance(self.cfg.loss) {
                    continue;
                }
                let copies = if self.rng.chance(self.cfg.duplicate) {
                    2
                } else {
                    1
                };
                for _ in 0..copies {
                    let delay = self.rng.range(self.cfg.delay_min, self.cfg.delay_max);
                    self.at(
                        delay,
                        Event::Deliver {
                            to: j,
                            from: i,
                            payload: payload.clone(),
                        },
                    );
                }
            }
        }
    }

    fn tick(&mut self, i: usize) -> Result<(), Violation> {
        let now = self.local(i);
        let n = self.nodes.len();
        let node = &self.nodes[i];
        if !node.ready_latched {
            let heard = node
                .config
                .cluster
                .nodes
                .iter()
                .filter(|x| **x != node.name)
                .all(|x| node.peers.get(x).is_some_and(|p| p.view.base_gen() > 0));
            if heard || now.saturating_sub(node.started) >= self.cfg.rejoin_grace {
                self.nodes[i].ready_latched = true;
            }
        }
        let node = &self.nodes[i];
        let ready = node.ready_latched;
        let votes = crate::state::votes(&node.config, &node.peers, &node.grants, now);
        let quorum = votes.has_quorum();
        if quorum
            && !orchestrate::has_quorum(
                votes.votes - votes.arbitrator_votes,
                votes.members,
                votes.arbitrators,
            )
        {
            self.summary.arbitrated_ticks += 1;
        }
        let node = &self.nodes[i];
        let quorum_since = match (quorum, node.quorum_since) {
            (false, _) => None,
            (true, Some(t)) => Some(t),
            (true, None) => Some(now),
        };
        let quorum_held_ms = quorum_since.map_or(0, |t| now - t);
        let ready_since = node.monitor.ready_since_ms;
        let mut confirmed = true;
        let mut views = Vec::with_capacity(n);
        for name in &node.config.cluster.nodes {
            if *name == node.name {
                let avail = if node.running { "up" } else { "down" };
                views.push(NodeView::local(name, false, avail, &node.monitor));
                continue;
            }
            let gone_for =
                crate::state::gone_for_ms(name, &node.peers, &node.seen_via, &node.config, now);
            let Some(p) = node.peers.get(name) else {
                views.push(NodeView::unheard(name, gone_for));
                continue;
            };
            let presence = p.presence(now, &node.config);
            if presence == Presence::Up && p.last_seen_ms < ready_since + self.cfg.hb_interval {
                confirmed = false;
            }
            let svc = p.service(SERVICE);
            views.push(NodeView::peer(
                name,
                presence,
                false,
                svc.as_ref(),
                gone_for,
            ));
        }
        self.nodes[i].quorum_since = quorum_since;
        let policy = Policy {
            quorum: Some(quorum),
            quorum_held_ms,
            takeover_wait_ms: self.takeover_wait(),
        };
        let name = self.nodes[i].name.clone();
        let d = orchestrate::decide(&name, &views, GlobalExpect::Started, ready, policy);
        let running = self.nodes[i].running;
        let busy = self.nodes[i].op.is_some();
        let s = orchestrate::step(&d, &self.nodes[i].monitor, running, confirmed);
        match s {
            Step::GoReady => {
                let m = &mut self.nodes[i].monitor;
                m.status = ServiceMonitorStatus::Ready;
                m.ready_since_ms = now;
                self.note(format!("{name} ready ({})", d.reason));
            }
            Step::Start if !busy => {
                if !quorum {
                    return Err(self.violation(format!("{name} starts {SERVICE} without quorum")));
                }
                self.nodes[i].monitor.status = ServiceMonitorStatus::Starting;
                self.begin(i, OpKind::Start);
            }
            Step::Stop | Step::Split if !busy => {
                self.nodes[i].monitor.status = ServiceMonitorStatus::Stopping;
                self.note(format!("{name} stops it ({})", d.reason));
                self.begin(i, OpKind::Stop);
            }
            Step::DropClaim => {
                let m = &mut self.nodes[i].monitor;
                m.status = ServiceMonitorStatus::Idle;
                m.local_expect = ServiceLocalExpect::Unset;
            }
            Step::AbortReady => {
                self.nodes[i].monitor.status = ServiceMonitorStatus::Idle;
                self.note(format!("{name} stands down ({})", d.reason));
            }
            Step::Idle { may_restart: true } if !busy => {
                let view = [ResourceView {
                    rid: "app#1".into(),
                    up: Some(running),
                    restart_limit: 1,
                }];
                let plan = self.nodes[i].monitor.plan(false, &view);
                self.nodes[i].monitor.begin(&plan);
                if let Plan::Restart(_) = plan {
                    if !quorum {
                        return Err(
                            self.violation(format!("{name} restarts {SERVICE} without quorum"))
                        );
                    }
                    self.begin(i, OpKind::Restart);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn begin(&mut self, i: usize, kind: OpKind) {
        let (max, fails) = match kind {
            OpKind::Stop => (self.cfg.stop_max, false),
            _ => (self.cfg.start_max, self.rng.chance(self.cfg.start_fail)),
        };
        self.summary.starts += u64::from(kind != OpKind::Stop);
        self.note(format!("{} {kind:?} begins", self.nodes[i].name));
        self.nodes[i].op = Some(Op { kind, fails });
        let life = self.nodes[i].life;
        let took = self.rng.range(1, max);
        self.at(took, Event::OpDone(i, life));
    }

    fn op_done(&mut self, i: usize, life: u64) {
        let node = &mut self.nodes[i];
        // A host crash ended it (and every later life's op is its own); a daemon stop or
        // restart does not: the action runs on to its end.
        let _ = life;
        if node.daemon == Daemon::Down {
            return;
        }
        let Some(op) = node.op.take() else { return };
        let name = node.name.clone();
        match op.kind {
            OpKind::Stop => {
                node.running = false;
                node.monitor.status = ServiceMonitorStatus::Idle;
                node.monitor.local_expect = ServiceLocalExpect::Unset;
            }
            OpKind::Start | OpKind::Restart if op.fails => {
                node.monitor.status = ServiceMonitorStatus::StartFailed;
            }
            OpKind::Start => {
                node.running = true;
                node.monitor.status = ServiceMonitorStatus::Idle;
                node.monitor.local_expect = ServiceLocalExpect::Started;
            }
            OpKind::Restart => {
                node.running = true;
                node.monitor.end_restart();
            }
        }
        self.note(format!(
            "{name} {:?} done{}",
            op.kind,
            if op.fails { " (failed)" } else { "" }
        ));
    }

    /// The liveness invariant: quiet for the bound, a majority of nodes running their daemons
    /// and connected, one of them able to run it: then it runs.
    fn check_liveness(&mut self) -> Result<(), Violation> {
        let quiet = self.now.saturating_sub(self.last_fault);
        if quiet < self.liveness_bound_ms() || self.now - self.last_running_check < self.cfg.tick {
            return Ok(());
        }
        self.last_running_check = self.now;
        let n = self.nodes.len();
        for g in 0..2u8 {
            let members: Vec<usize> = (0..n)
                .filter(|&j| self.group[j] == g && self.nodes[j].daemon == Daemon::Running)
                .collect();
            if !orchestrate::has_quorum(members.len(), n, 0) {
                continue;
            }
            let candidate = members.iter().any(|&j| !self.nodes[j].monitor.failed());
            // A node in maintenance, within its grace, may legitimately hold it elsewhere.
            let maintenance = self.nodes.iter().any(|x| x.daemon == Daemon::Stopped);
            if candidate && !maintenance && self.instances() == 0 {
                return Err(self.violation(format!(
                    "{SERVICE} runs nowhere {quiet} ms after the last fault, though nodes {:?} hold quorum",
                    members.iter().map(|&j| self.nodes[j].name.clone()).collect::<Vec<_>>()
                )));
            }
        }
        Ok(())
    }
}

/// Runs `seeds` seeds from `first`, each for `sim_ms` of simulated time.
pub fn run_seeds(
    cfg: &SimConfig,
    first: u64,
    seeds: u64,
    sim_ms: u64,
) -> Result<Summary, Violation> {
    let mut total = Summary::default();
    for seed in first..first + seeds {
        let s = Sim::new(cfg.clone(), seed).run(sim_ms)?;
        total.events += s.events;
        total.starts += s.starts;
        total.faults += s.faults;
        total.running_ms += s.running_ms;
        total.arbitrated_ticks += s.arbitrated_ticks;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invariants_hold_over_seeds() {
        let cfg = SimConfig::default();
        let s = run_seeds(&cfg, 1, 12, 600_000).unwrap_or_else(|v| panic!("{v}"));
        assert!(s.starts > 12 && s.faults > 12 * 5, "{s:?}");
        // The service mostly ran: faults are rare against its recovery.
        assert!(s.running_ms > 12 * 600_000 / 2, "{s:?}");
    }

    #[test]
    fn replays_from_its_seed() {
        let cfg = SimConfig::default();
        let a = Sim::new(cfg.clone(), 7).run(120_000).unwrap().events;
        let b = Sim::new(cfg, 7).run(120_000).unwrap().events;
        assert_eq!(a, b);
    }

    #[test]
    fn two_nodes_and_an_arbitrator_never_overlap() {
        let cfg = SimConfig {
            nodes: 2,
            arbitrator_lease: 3_000,
            ..SimConfig::default()
        };
        let s = run_seeds(&cfg, 200, 6, 600_000).unwrap_or_else(|v| panic!("{v}"));
        assert!(s.starts > 6, "{s:?}");
        assert!(
            s.arbitrated_ticks > 0,
            "a lone node held quorum through the vote: {s:?}"
        );
    }

    #[test]
    fn two_nodes_without_an_arbitrator_never_overlap() {
        let cfg = SimConfig {
            nodes: 2,
            ..SimConfig::default()
        };
        run_seeds(&cfg, 100, 6, 600_000).unwrap_or_else(|v| panic!("{v}"));
    }
}
