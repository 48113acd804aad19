//! Orchestration of `orchestrate = ha` services across nodes, as pure decisions from the
//! shared cluster data (heartbeats). Every node decides for itself with the same rule, so two
//! nodes that see each other never both run the service.

use crate::wire::payload::GlobalExpect;

/// One node of the service, as this node sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    pub name: String,
    /// This node, or a peer whose last heartbeat is fresh and not a maintenance notice.
    pub alive: bool,
    pub frozen: bool,
    /// The service's instance status there ("up", "down", "warn", "n/a"), if known.
    pub avail: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HaAction {
    Nothing,
    Start,
    Stop,
}

fn running(avail: Option<&str>) -> bool {
    matches!(avail, Some("up") | Some("warn"))
}

/// The node that should run the service: the first of its `nodes` that is alive and not
/// frozen.
pub fn placement(nodes: &[NodeView]) -> Option<&str> {
    nodes
        .iter()
        .find(|n| n.alive && !n.frozen)
        .map(|n| n.name.as_str())
}

/// What `this` node does for the service.
pub fn decide(this: &str, nodes: &[NodeView], global: GlobalExpect) -> HaAction {
    let Some(me) = nodes.iter().find(|n| n.name == this) else {
        return HaAction::Nothing;
    };
    if me.frozen {
        return HaAction::Nothing;
    }
    let here = running(me.avail.as_deref());
    match global {
        GlobalExpect::Stopped if here => HaAction::Stop,
        GlobalExpect::Started => {
            let leader = placement(nodes);
            if leader == Some(this) {
                // Start only once nobody else alive runs it: they stop first when they see
                // that we lead.
                let elsewhere = nodes
                    .iter()
                    .any(|n| n.name != this && n.alive && running(n.avail.as_deref()));
                if !here && !elsewhere {
                    HaAction::Start
                } else {
                    HaAction::Nothing
                }
            } else if here {
                HaAction::Stop
            } else {
                HaAction::Nothing
            }
        }
        _ => HaAction::Nothing,
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

    fn nv(name: &str, alive: bool, frozen: bool, avail: &str) -> NodeView {
        NodeView {
            name: name.into(),
            alive,
            frozen,
            avail: Some(avail.into()),
        }
    }

    #[test]
    fn first_alive_node_runs_it_and_it_moves_when_that_node_dies() {
        let nodes = vec![nv("n1", true, false, "down"), nv("n2", true, false, "down")];
        assert_eq!(decide("n1", &nodes, GlobalExpect::Started), HaAction::Start);
        assert_eq!(
            decide("n2", &nodes, GlobalExpect::Started),
            HaAction::Nothing
        );
        let nodes = vec![nv("n1", false, false, "up"), nv("n2", true, false, "down")];
        assert_eq!(decide("n2", &nodes, GlobalExpect::Started), HaAction::Start);
        // n1 back: n2 stops first, then n1 starts.
        let nodes = vec![nv("n1", true, false, "down"), nv("n2", true, false, "up")];
        assert_eq!(decide("n2", &nodes, GlobalExpect::Started), HaAction::Stop);
        assert_eq!(
            decide("n1", &nodes, GlobalExpect::Started),
            HaAction::Nothing
        );
        let nodes = vec![nv("n1", true, true, "down"), nv("n2", true, false, "down")];
        assert_eq!(
            decide("n2", &nodes, GlobalExpect::Started),
            HaAction::Start,
            "n1 frozen"
        );
        let nodes = vec![nv("n1", true, false, "up"), nv("n2", true, false, "up")];
        assert_eq!(decide("n1", &nodes, GlobalExpect::Stopped), HaAction::Stop);
        assert_eq!(decide("n2", &nodes, GlobalExpect::Stopped), HaAction::Stop);
    }

    proptest! {
        /// With a shared view, at most one node starts, and none starts while another runs.
        #[test]
        fn never_two_starts(views in prop::collection::vec((any::<bool>(), any::<bool>(), prop::sample::select(vec!["up", "down", "warn", "n/a"])), 1..5)) {
            let mut nodes: Vec<NodeView> = views.iter().enumerate()
                .map(|(i, (alive, frozen, avail))| nv(&format!("n{i}"), *alive, *frozen, avail))
                .collect();
            // Each node sees itself alive.
            let starts: Vec<String> = nodes.clone().iter().filter(|n| n.alive).filter(|me| {
                decide(&me.name, &nodes, GlobalExpect::Started) == HaAction::Start
            }).map(|n| n.name.clone()).collect();
            prop_assert!(starts.len() <= 1);
            if !starts.is_empty() {
                prop_assert!(!nodes.iter().any(|n| n.alive && running(n.avail.as_deref())));
            }
            nodes.retain(|n| n.alive);
        }
    }
}
