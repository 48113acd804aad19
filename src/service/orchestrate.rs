//! Orchestration of `orchestrate = ha` services across nodes, as pure decisions from the
//! shared cluster data (heartbeats). Every node decides for itself with the same rule, so
//! nodes that see the same data agree on who runs the service.
//!
//! The rules, in the order they protect the cluster:
//! - A failover service never runs on two nodes: a node starts it only when no node that may
//!   be running it (up, or in maintenance) holds it; one found held twice is stopped on all
//!   but one.
//! - It does not run nowhere while a node could run it: when no node holds it, the first
//!   candidate of its `nodes` (up, thawed, configured, not failed) starts it.
//! - No automatic failback: a node holding it keeps it, whatever the placement order says.
//! - With quorum on, a node without quorum starts nothing and applies its split action to what
//!   it holds; the side with quorum starts what a lost node held only once that node has been
//!   gone long enough to have applied its own (`Policy::takeover_wait_ms`).
//!
//! [`decide`] says what the cluster rule wants of this node; [`step`] turns that into what this
//! node's monitor does now, given its own state (the `ready` handshake before a start). Both
//! are pure: the daemon's shard and the cluster simulation run the same code.

use crate::service::monitor::ServiceMonitor;
use crate::wire::payload::ServiceMonitorStatus;

use crate::wire::payload::GlobalExpect;

/// How this node sees another node of the service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Presence {
    /// This node, or a peer whose heartbeats are fresh.
    Up,
    /// A peer whose daemon is stopped while its instances keep running as it last reported,
    /// within the maintenance grace period.
    Maintenance,
    /// Stale, never heard, or not resolvable: presumed dead, what it ran may run elsewhere.
    Gone,
}

/// One node of the service, as this node sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NodeView {
    pub name: String,
    pub presence: Presence,
    /// The node is frozen: it takes no automatic action.
    pub frozen: bool,
    /// The service is configured there (a node cannot start what it does not have).
    pub configured: bool,
    /// Its instance runs there (`up` or `warn`).
    pub running: bool,
    /// Its monitor holds it: running, being started or restarted, or expected started and not
    /// given up on.
    pub holds: bool,
    /// Its start failed there: not elected again until `clear`.
    pub failed: bool,
    /// How long it has been `Gone`, since this node or a peer it hears last saw it (0 while
    /// not gone): a node gone for less than the takeover wait may still be stopping what it
    /// ran.
    pub gone_for_ms: u64,
}

impl NodeView {
    /// This node, from its own monitor and the instance's availability. Its own `ready` is not
    /// a hold in its eyes: it is the election it is carrying out, decided again on every tick
    /// until it starts.
    pub(crate) fn local(name: &str, frozen: bool, avail: &str, m: &ServiceMonitor) -> NodeView {
        let status = Some(m.status.as_str()).filter(|_| m.status != ServiceMonitorStatus::Ready);
        NodeView {
            name: name.to_string(),
            presence: Presence::Up,
            frozen,
            configured: true,
            running: running(Some(avail)),
            holds: holds(Some(avail), status, Some(m.local_expect.as_str())),
            failed: m.failed(),
            gone_for_ms: 0,
        }
    }

    /// A peer, from what its last heartbeat published of the service (`None`: the service is
    /// not configured there) and how this node sees it.
    pub(crate) fn peer(
        name: &str,
        presence: Presence,
        frozen: bool,
        service: Option<&serde_json::Value>,
        gone_for_ms: u64,
    ) -> NodeView {
        let field = |path: &[&str]| {
            let mut cur = service?;
            for k in path {
                cur = cur.get(k)?;
            }
            cur.as_str()
        };
        let avail = field(&["avail"]);
        let status = field(&["monitor", "status"]);
        NodeView {
            name: name.to_string(),
            presence,
            frozen,
            configured: service.is_some(),
            running: running(avail),
            holds: holds(avail, status, field(&["monitor", "local_expect"])),
            failed: failed(status),
            gone_for_ms: if presence == Presence::Gone {
                gone_for_ms
            } else {
                0
            },
        }
    }

    /// A member never heard from.
    pub(crate) fn unheard(name: &str, gone_for_ms: u64) -> NodeView {
        NodeView::peer(name, Presence::Gone, false, None, gone_for_ms)
    }
}

/// Whether a node's instance holds the service, from what its monitor publishes: it runs, or
/// its monitor is about to start it (`ready`), starting, restarting or stopping it (or failed
/// to stop it). A node holding it keeps it; nobody else starts it. Being expected started is
/// not a hold: an instance that went down entirely is started again through an election, the
/// same on every node, not by its own node's restart alone (two nodes expecting it started
/// would both restart it).
pub(crate) fn holds(
    avail: Option<&str>,
    status: Option<&str>,
    _local_expect: Option<&str>,
) -> bool {
    let busy = matches!(
        status,
        Some("ready" | "starting" | "restarting" | "stopping" | "stop failed")
    );
    running(avail) || busy
}

/// The instance runs (`up`, or `warn`: some of it).
pub(crate) fn running(avail: Option<&str>) -> bool {
    matches!(avail, Some("up" | "warn"))
}

/// Its start or its stop failed there.
pub(crate) fn failed(status: Option<&str>) -> bool {
    matches!(status, Some("start failed" | "stop failed"))
}

/// How a peer is seen from its last heartbeat: up while fresh; after a maintenance notice,
/// in maintenance until `maintenance_grace_ms` without a heartbeat; otherwise gone.
pub(crate) fn presence(
    age_ms: u64,
    in_maintenance: bool,
    hb_timeout_ms: u64,
    maintenance_grace_ms: u64,
) -> Presence {
    if in_maintenance {
        if age_ms <= maintenance_grace_ms {
            Presence::Maintenance
        } else {
            Presence::Gone
        }
    } else if age_ms <= hb_timeout_ms {
        Presence::Up
    } else {
        Presence::Gone
    }
}

/// What the cluster's settings add to the rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Policy {
    /// None: quorum off. Some(q): quorum on, and whether this node has it.
    pub quorum: Option<bool>,
    /// How long this node has held quorum without a break. A node that just gained it (it
    /// was cut off, or it just started) may know nothing of what the nodes it could not hear
    /// ran: before it starts anything, those must have had the takeover wait to notice their
    /// own loss of quorum and apply their split action.
    pub quorum_held_ms: u64,
    /// How long a node that held the service must have been gone before another starts it.
    pub takeover_wait_ms: u64,
}

#[cfg(test)]
impl Policy {
    /// Quorum off, immediate takeover.
    pub(crate) const PLAIN: Policy = Policy {
        quorum: None,
        quorum_held_ms: 0,
        takeover_wait_ms: 0,
    };
}

/// A node's votes: itself, each member it sees up that (by its last heartbeat) sees it too, or
/// in maintenance, and the arbitrators' votes it holds. It has quorum with more than half of
/// all votes (members and arbitrators).
pub(crate) fn has_quorum(votes: usize, members: usize, arbitrators: usize) -> bool {
    2 * votes > members + arbitrators
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HaAction {
    Nothing,
    Start,
    Stop,
    /// Quorum lost while holding the service: apply the split action.
    Split,
}

/// What this node does, and why (shown in `daemon status` and logged when it acts).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Decision {
    pub action: HaAction,
    /// The node that runs the service or should: the holder kept, else the candidate elected.
    pub leader: Option<String>,
    pub reason: String,
    /// Held by more than one node: the nodes that hold it.
    pub duplicate: Option<Vec<String>>,
    /// The monitor may restart a resource found down here: the peers were heard, quorum (if
    /// on) is held, and no other live node holds the service.
    pub may_restart: bool,
}

impl Decision {
    fn new(action: HaAction, leader: Option<&str>, reason: impl Into<String>) -> Self {
        Decision {
            action,
            leader: leader.map(str::to_string),
            reason: reason.into(),
            duplicate: None,
            may_restart: false,
        }
    }
}

fn alive(n: &NodeView) -> bool {
    n.presence != Presence::Gone
}

/// The node to elect when nobody holds the service: the first of its `nodes` that is up,
/// thawed, has the service and has not failed to start it.
pub(crate) fn placement(nodes: &[NodeView]) -> Option<&NodeView> {
    nodes.iter().find(|n| candidate(n))
}

fn candidate(n: &NodeView) -> bool {
    n.presence == Presence::Up && !n.frozen && n.configured && !n.failed
}

/// Among nodes holding the service, the one that keeps it: a node in maintenance first (its
/// daemon cannot stop anything), then one where it actually runs, then the placement order.
fn keeper<'a>(holders: &[&'a NodeView]) -> Option<&'a NodeView> {
    holders
        .iter()
        .enumerate()
        .min_by_key(|(i, n)| (n.presence != Presence::Maintenance, !n.running, *i))
        .map(|(_, n)| *n)
}

/// Why no node can be elected, naming each node's reason.
fn no_candidate_reason(nodes: &[NodeView]) -> String {
    let why: Vec<String> = nodes
        .iter()
        .map(|n| {
            let r = if n.presence == Presence::Gone {
                "down"
            } else if n.presence == Presence::Maintenance {
                "in maintenance"
            } else if !n.configured {
                "not configured"
            } else if n.frozen {
                "frozen"
            } else if n.failed {
                "start failed"
            } else {
                "candidate"
            };
            format!("{} {r}", n.name)
        })
        .collect();
    format!("no candidate node: {}", why.join(", "))
}

/// What `this` node does for the service. `ready` is false while the daemon has not yet
/// heard its peers after its start: it then does nothing, not knowing what runs where.
pub(crate) fn decide(
    this: &str,
    nodes: &[NodeView],
    global: GlobalExpect,
    ready: bool,
    policy: Policy,
) -> Decision {
    let Some(me) = nodes.iter().find(|n| n.name == this) else {
        return Decision::new(
            HaAction::Nothing,
            None,
            "this node is not in the service's nodes",
        );
    };
    let holders: Vec<&NodeView> = nodes.iter().filter(|n| alive(n) && n.holds).collect();
    let kept = keeper(&holders);
    // The same on every node sharing the view, whatever each then does.
    let leader = kept.or_else(|| placement(nodes)).map(|n| n.name.as_str());
    if !ready {
        return Decision::new(
            HaAction::Nothing,
            leader,
            "waiting to hear the peers after the daemon's start",
        );
    }
    if me.frozen {
        return Decision::new(HaAction::Nothing, leader, "this node is frozen");
    }
    if policy.quorum == Some(false) {
        return if me.holds {
            Decision::new(HaAction::Split, leader, "no quorum: split action")
        } else {
            Decision::new(HaAction::Nothing, leader, "no quorum: starts nothing")
        };
    }
    if holders.len() > 1
        && let Some(k) = kept
    {
        let names: Vec<String> = holders.iter().map(|n| n.name.clone()).collect();
        let action = if me.holds && k.name != me.name {
            HaAction::Stop
        } else {
            HaAction::Nothing
        };
        let mut d = Decision::new(
            action,
            Some(&k.name),
            format!("held by {}: {} keeps it", names.join(", "), k.name),
        );
        d.duplicate = Some(names);
        return d;
    }
    // What holds back a start (an election's, or a restart of what does not run): a node
    // gone for less than the takeover wait may still be stopping it, and what this node knows
    // of it may be older than its loss (it may have been out of reach here while others still
    // saw it), so whatever it last said it held; and a node that just gained quorum may know
    // nothing of what the nodes it could not hear ran.
    let lost = nodes
        .iter()
        .find(|n| n.presence == Presence::Gone && n.gone_for_ms < policy.takeover_wait_ms);
    let held_back = match lost {
        Some(g) => Some(format!(
            "{} is gone for {} ms: waiting {} ms more before a start",
            g.name,
            g.gone_for_ms,
            policy.takeover_wait_ms - g.gone_for_ms
        )),
        None if policy.quorum == Some(true) && policy.quorum_held_ms < policy.takeover_wait_ms => {
            Some(format!(
                "quorum held for {} ms: waiting {} ms more before a start",
                policy.quorum_held_ms,
                policy.takeover_wait_ms - policy.quorum_held_ms
            ))
        }
        None => None,
    };
    let mut d = match global {
        GlobalExpect::Stopped if me.holds => {
            Decision::new(HaAction::Stop, None, "global_expect stopped")
        }
        GlobalExpect::Stopped => Decision::new(HaAction::Nothing, None, "stopped"),
        GlobalExpect::Started => match kept {
            Some(k) if k.name == me.name => {
                Decision::new(HaAction::Nothing, Some(&k.name), "runs here")
            }
            Some(k) => Decision::new(
                HaAction::Nothing,
                Some(&k.name),
                format!("runs on {}", k.name),
            ),
            None => match (placement(nodes), held_back.clone()) {
                (Some(l), Some(why)) => Decision::new(HaAction::Nothing, Some(&l.name), why),
                (Some(l), None) if l.name == me.name => {
                    Decision::new(HaAction::Start, Some(&l.name), "elected: nobody runs it")
                }
                (Some(l), None) => Decision::new(
                    HaAction::Nothing,
                    Some(&l.name),
                    format!("{} is elected to start it", l.name),
                ),
                (None, _) => Decision::new(HaAction::Nothing, None, no_candidate_reason(nodes)),
            },
        },
        _ => Decision::new(HaAction::Nothing, leader, "no global_expect"),
    };
    // A restart of what does not run here is a start: held back alike.
    // The monitor repairs an instance that runs (a resource down in it); one that does not run
    // at all is elected and started like any start.
    d.may_restart = d.action == HaAction::Nothing
        && me.running
        && !nodes
            .iter()
            .any(|n| n.name != me.name && alive(n) && n.holds);
    d
}

/// What this node's monitor does on this tick.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Nothing for the orchestration; the monitor may restart a resource found down.
    Idle { may_restart: bool },
    /// Elected: announce `ready` (published), start on a later tick once confirmed.
    GoReady,
    /// Start it now.
    Start,
    /// Stop it (a duplicate, or the goal is stopped).
    Stop,
    /// Nothing runs here: forget the claim (local_expect unset), no stop to run.
    DropClaim,
    /// Was `ready`, no longer elected: back to idle.
    AbortReady,
    /// Quorum lost while holding it: the split action.
    Split,
}

/// Turns the cluster's decision into this node's step. `confirmed`: every peer that is up has
/// been heard since this node went `ready`, plus a heartbeat interval (what it decided before
/// it saw our `ready` is known).
pub(crate) fn step(d: &Decision, m: &ServiceMonitor, running_here: bool, confirmed: bool) -> Step {
    let is_ready = m.status == ServiceMonitorStatus::Ready;
    // Held here only because it is expected started (nothing runs, nothing in progress).
    let expected_only = !running_here
        && matches!(
            m.status,
            ServiceMonitorStatus::Idle | ServiceMonitorStatus::Ready
        );
    match d.action {
        HaAction::Start if !is_ready => Step::GoReady,
        HaAction::Start if confirmed => Step::Start,
        HaAction::Start => Step::Idle { may_restart: false },
        HaAction::Stop | HaAction::Split if expected_only => Step::DropClaim,
        HaAction::Nothing if is_ready => Step::AbortReady,
        HaAction::Stop => Step::Stop,
        HaAction::Split => Step::Split,
        HaAction::Nothing => Step::Idle {
            may_restart: d.may_restart,
        },
    }
}

/// Across nodes, the most recently set `global_expect` wins.
pub(crate) fn newest_global(
    candidates: impl IntoIterator<Item = (GlobalExpect, u64)>,
) -> Option<(GlobalExpect, u64)> {
    candidates.into_iter().max_by_key(|(_, t)| *t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn nv(name: &str, presence: Presence, running: bool) -> NodeView {
        NodeView {
            name: name.into(),
            presence,
            frozen: false,
            configured: true,
            running,
            holds: running,
            failed: false,
            gone_for_ms: 0,
        }
    }

    use Presence::{Gone, Maintenance, Up};

    fn act(this: &str, nodes: &[NodeView]) -> HaAction {
        decide(this, nodes, GlobalExpect::Started, true, Policy::PLAIN).action
    }

    #[test]
    fn first_candidate_starts_it_and_it_moves_when_that_node_dies() {
        let nodes = vec![nv("n1", Up, false), nv("n2", Up, false)];
        assert_eq!(act("n1", &nodes), HaAction::Start);
        assert_eq!(act("n2", &nodes), HaAction::Nothing);
        let nodes = vec![nv("n1", Gone, true), nv("n2", Up, false)];
        assert_eq!(act("n2", &nodes), HaAction::Start);
    }

    #[test]
    fn no_failback_when_the_first_node_comes_back() {
        let nodes = vec![nv("n1", Up, false), nv("n2", Up, true)];
        assert_eq!(act("n1", &nodes), HaAction::Nothing);
        assert_eq!(act("n2", &nodes), HaAction::Nothing);
        assert_eq!(
            decide("n1", &nodes, GlobalExpect::Started, true, Policy::PLAIN)
                .leader
                .as_deref(),
            Some("n2")
        );
    }

    #[test]
    fn nothing_is_taken_over_from_a_node_in_maintenance() {
        let nodes = vec![nv("n1", Maintenance, true), nv("n2", Up, false)];
        assert_eq!(act("n2", &nodes), HaAction::Nothing);
        // Its instance stopped before maintenance: it may be started elsewhere.
        let nodes = vec![nv("n1", Maintenance, false), nv("n2", Up, false)];
        assert_eq!(act("n2", &nodes), HaAction::Start);
    }

    #[test]
    fn nothing_before_the_peers_are_heard() {
        let nodes = vec![nv("n1", Up, false), nv("n2", Gone, false)];
        let d = decide("n1", &nodes, GlobalExpect::Started, false, Policy::PLAIN);
        assert_eq!(d.action, HaAction::Nothing);
        assert!(d.reason.contains("waiting"), "{}", d.reason);
    }

    #[test]
    fn held_twice_is_stopped_on_all_but_one() {
        let nodes = vec![nv("n1", Up, true), nv("n2", Up, true), nv("n3", Up, false)];
        assert_eq!(act("n1", &nodes), HaAction::Nothing);
        assert_eq!(act("n2", &nodes), HaAction::Stop);
        assert_eq!(act("n3", &nodes), HaAction::Nothing);
        let d = decide("n2", &nodes, GlobalExpect::Started, true, Policy::PLAIN);
        assert_eq!(d.duplicate, Some(vec!["n1".to_string(), "n2".to_string()]));
        // Whatever global_expect says.
        assert_eq!(
            decide("n2", &nodes, GlobalExpect::Unset, true, Policy::PLAIN).action,
            HaAction::Stop
        );
        // A node in maintenance keeps it: its daemon cannot stop anything.
        let nodes = vec![nv("n1", Up, true), nv("n2", Maintenance, true)];
        assert_eq!(act("n1", &nodes), HaAction::Stop);
        // A node where it runs is kept over one only restarting it.
        let mut restarting = nv("n1", Up, false);
        restarting.holds = true;
        let nodes = vec![restarting, nv("n2", Up, true)];
        assert_eq!(act("n1", &nodes), HaAction::Stop);
    }

    #[test]
    fn failed_frozen_and_unconfigured_nodes_are_not_elected() {
        let mut n1 = nv("n1", Up, false);
        n1.failed = true;
        let mut n2 = nv("n2", Up, false);
        n2.frozen = true;
        let mut n3 = nv("n3", Up, false);
        n3.configured = false;
        let nodes = vec![n1.clone(), n2.clone(), n3.clone(), nv("n4", Up, false)];
        assert_eq!(act("n4", &nodes), HaAction::Start);
        assert_eq!(act("n1", &nodes), HaAction::Nothing);
        let nodes = vec![n1, n2, n3];
        let d = decide("n1", &nodes, GlobalExpect::Started, true, Policy::PLAIN);
        assert_eq!(d.action, HaAction::Nothing);
        assert_eq!(
            d.reason,
            "no candidate node: n1 start failed, n2 frozen, n3 not configured"
        );
    }

    #[test]
    fn stopped_goal_stops_every_holder() {
        let nodes = vec![nv("n1", Up, true), nv("n2", Up, false)];
        assert_eq!(
            decide("n1", &nodes, GlobalExpect::Stopped, true, Policy::PLAIN).action,
            HaAction::Stop
        );
        assert_eq!(
            decide("n2", &nodes, GlobalExpect::Stopped, true, Policy::PLAIN).action,
            HaAction::Nothing
        );
    }

    #[test]
    fn without_quorum_nothing_starts_and_holders_split() {
        let lost = Policy {
            quorum: Some(false),
            quorum_held_ms: 0,
            takeover_wait_ms: 0,
        };
        let nodes = vec![nv("n1", Up, true), nv("n2", Up, false)];
        assert_eq!(
            decide("n1", &nodes, GlobalExpect::Started, true, lost).action,
            HaAction::Split
        );
        let nodes = vec![nv("n1", Up, false), nv("n2", Gone, false)];
        let d = decide("n1", &nodes, GlobalExpect::Started, true, lost);
        assert_eq!(d.action, HaAction::Nothing);
        assert!(d.reason.contains("no quorum"), "{}", d.reason);
        assert!(!d.may_restart);
        assert!(has_quorum(2, 3, 0) && !has_quorum(1, 3, 0) && !has_quorum(1, 2, 0));
        assert!(has_quorum(2, 2, 1), "two nodes and an arbitrator's vote");
    }

    #[test]
    fn a_lost_holder_is_taken_over_only_after_the_takeover_wait() {
        let policy = Policy {
            quorum: Some(true),
            quorum_held_ms: 60_000,
            takeover_wait_ms: 5_000,
        };
        let mut gone = nv("n1", Gone, false);
        gone.gone_for_ms = 4_000;
        let nodes = vec![gone.clone(), nv("n2", Up, false)];
        let d = decide("n2", &nodes, GlobalExpect::Started, true, policy);
        assert_eq!(d.action, HaAction::Nothing);
        assert!(
            d.reason
                .contains("n1 is gone for 4000 ms: waiting 1000 ms more"),
            "{}",
            d.reason
        );
        gone.gone_for_ms = 5_000;
        let nodes = vec![gone, nv("n2", Up, false)];
        assert_eq!(
            decide("n2", &nodes, GlobalExpect::Started, true, policy).action,
            HaAction::Start
        );
    }

    #[test]
    fn steps_of_the_ready_handshake() {
        let nodes = vec![nv("n1", Up, false), nv("n2", Up, false)];
        let d = decide("n1", &nodes, GlobalExpect::Started, true, Policy::PLAIN);
        let mut m = ServiceMonitor::default();
        assert_eq!(step(&d, &m, false, false), Step::GoReady);
        m.status = ServiceMonitorStatus::Ready;
        assert_eq!(
            step(&d, &m, false, false),
            Step::Idle { may_restart: false }
        );
        assert_eq!(step(&d, &m, false, true), Step::Start);
        // Someone else holds it meanwhile: stand down.
        let nodes = vec![nv("n1", Up, false), nv("n2", Up, true)];
        let d = decide("n1", &nodes, GlobalExpect::Started, true, Policy::PLAIN);
        assert_eq!(step(&d, &m, false, true), Step::AbortReady);
    }

    #[test]
    fn presence_from_age_and_maintenance() {
        assert_eq!(super::presence(100, false, 1_000, 5_000), Up);
        assert_eq!(super::presence(1_001, false, 1_000, 5_000), Gone);
        assert_eq!(super::presence(4_000, true, 1_000, 5_000), Maintenance);
        assert_eq!(super::presence(5_001, true, 1_000, 5_000), Gone);
    }

    fn presence() -> impl Strategy<Value = Presence> {
        prop::sample::select(vec![Up, Maintenance, Gone])
    }

    proptest! {
        /// With a shared view: at most one node starts; none starts while a live node holds
        /// it; when several hold it, exactly one keeps it; a live holder alone is never
        /// stopped while the goal is started (no failback); and when nobody holds it and a
        /// candidate exists, one starts it (never nowhere).
        #[test]
        fn safety_and_liveness(
            views in prop::collection::vec(
                (presence(), any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()),
                1..6,
            ),
        ) {
            let nodes: Vec<NodeView> = views.iter().enumerate()
                .map(|(i, (presence, frozen, configured, running, restarting, failed))| NodeView {
                    name: format!("n{i}"),
                    presence: *presence,
                    frozen: *frozen,
                    configured: *configured,
                    running: *running,
                    holds: *running || (*restarting && !*failed),
                    failed: *failed,
                    gone_for_ms: 0,
                })
                .collect();
            // Only nodes that are up decide (a daemon in maintenance or dead does not).
            let deciding: Vec<&NodeView> = nodes.iter().filter(|n| n.presence == Up).collect();
            let decisions: Vec<(&NodeView, Decision)> = deciding
                .iter()
                .map(|n| (*n, decide(&n.name, &nodes, GlobalExpect::Started, true, Policy::PLAIN)))
                .collect();
            let starts = decisions.iter().filter(|(_, d)| d.action == HaAction::Start).count();
            let holders: Vec<&NodeView> = nodes.iter().filter(|n| alive(n) && n.holds).collect();
            prop_assert!(starts <= 1);
            if !holders.is_empty() {
                prop_assert_eq!(starts, 0, "never a start while a live node holds it");
            }
            let leaders: std::collections::BTreeSet<_> =
                decisions.iter().map(|(_, d)| d.leader.clone()).collect();
            prop_assert!(leaders.len() <= 1, "every node names the same leader: {:?}", leaders);
            let stops = decisions.iter().filter(|(n, d)| n.holds && d.action == HaAction::Stop).count();
            if holders.len() == 1 {
                prop_assert_eq!(stops, 0, "no failback");
            }
            if holders.len() > 1 {
                let unfrozen_up_holders = holders.iter().filter(|n| n.presence == Up && !n.frozen).count();
                let keeper_stoppable = keeper(&holders).is_some_and(|k| k.presence == Up && !k.frozen);
                // Every holder but the keeper that can act stops.
                prop_assert_eq!(stops, unfrozen_up_holders - usize::from(keeper_stoppable));
            }
            if holders.is_empty() && nodes.iter().any(candidate) {
                prop_assert_eq!(starts, 1, "never nowhere while a candidate exists");
            }
        }
    }
}
