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

use crate::wire::payload::GlobalExpect;

/// How this node sees another node of the service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presence {
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
pub struct NodeView {
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
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HaAction {
    Nothing,
    Start,
    Stop,
}

/// What this node does, and why (shown in `daemon status` and logged when it acts).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub action: HaAction,
    /// The node that runs the service or should: the holder kept, else the candidate elected.
    pub leader: Option<String>,
    pub reason: String,
    /// Held by more than one node: the nodes that hold it.
    pub duplicate: Option<Vec<String>>,
}

impl Decision {
    fn new(action: HaAction, leader: Option<&str>, reason: impl Into<String>) -> Self {
        Decision {
            action,
            leader: leader.map(str::to_string),
            reason: reason.into(),
            duplicate: None,
        }
    }
}

fn alive(n: &NodeView) -> bool {
    n.presence != Presence::Gone
}

/// The node to elect when nobody holds the service: the first of its `nodes` that is up,
/// thawed, has the service and has not failed to start it.
pub fn placement(nodes: &[NodeView]) -> Option<&NodeView> {
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
pub fn decide(this: &str, nodes: &[NodeView], global: GlobalExpect, ready: bool) -> Decision {
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
    if holders.len() > 1
        && let Some(k) = kept
    {
        let names: Vec<String> = holders.iter().map(|n| n.name.clone()).collect();
        let mut d = if me.holds && k.name != me.name {
            Decision::new(
                HaAction::Stop,
                Some(&k.name),
                format!("held by {}: {} keeps it", names.join(", "), k.name),
            )
        } else {
            Decision::new(
                HaAction::Nothing,
                Some(&k.name),
                format!("held by {}: {} keeps it", names.join(", "), k.name),
            )
        };
        d.duplicate = Some(names);
        return d;
    }
    match global {
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
            None => match placement(nodes) {
                Some(l) if l.name == me.name => {
                    Decision::new(HaAction::Start, Some(&l.name), "elected: nobody runs it")
                }
                Some(l) => Decision::new(
                    HaAction::Nothing,
                    Some(&l.name),
                    format!("{} is elected to start it", l.name),
                ),
                None => Decision::new(HaAction::Nothing, None, no_candidate_reason(nodes)),
            },
        },
        _ => Decision::new(HaAction::Nothing, leader, "no global_expect"),
    }
}

/// Across nodes, the most recently set `global_expect` wins.
pub fn newest_global(
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
        }
    }

    use Presence::{Gone, Maintenance, Up};

    fn act(this: &str, nodes: &[NodeView]) -> HaAction {
        decide(this, nodes, GlobalExpect::Started, true).action
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
            decide("n1", &nodes, GlobalExpect::Started, true)
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
        let d = decide("n1", &nodes, GlobalExpect::Started, false);
        assert_eq!(d.action, HaAction::Nothing);
        assert!(d.reason.contains("waiting"), "{}", d.reason);
    }

    #[test]
    fn held_twice_is_stopped_on_all_but_one() {
        let nodes = vec![nv("n1", Up, true), nv("n2", Up, true), nv("n3", Up, false)];
        assert_eq!(act("n1", &nodes), HaAction::Nothing);
        assert_eq!(act("n2", &nodes), HaAction::Stop);
        assert_eq!(act("n3", &nodes), HaAction::Nothing);
        let d = decide("n2", &nodes, GlobalExpect::Started, true);
        assert_eq!(d.duplicate, Some(vec!["n1".to_string(), "n2".to_string()]));
        // Whatever global_expect says.
        assert_eq!(
            decide("n2", &nodes, GlobalExpect::Unset, true).action,
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
        let d = decide("n1", &nodes, GlobalExpect::Started, true);
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
            decide("n1", &nodes, GlobalExpect::Stopped, true).action,
            HaAction::Stop
        );
        assert_eq!(
            decide("n2", &nodes, GlobalExpect::Stopped, true).action,
            HaAction::Nothing
        );
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
                })
                .collect();
            // Only nodes that are up decide (a daemon in maintenance or dead does not).
            let deciding: Vec<&NodeView> = nodes.iter().filter(|n| n.presence == Up).collect();
            let decisions: Vec<(&NodeView, Decision)> = deciding
                .iter()
                .map(|n| (*n, decide(&n.name, &nodes, GlobalExpect::Started, true)))
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
