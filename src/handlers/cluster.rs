//! `join` and `leave`: cluster membership, persisted in node.conf. Runs on the node shard.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::client::{self, Identity};
use crate::config;
use crate::dispatch::Origin;
use crate::locks::{exclusive, shared};
use crate::state::DaemonState;
use crate::wire::{Request, Response};

const RELAY_TIMEOUT: Duration = Duration::from_secs(5);

/// Adds `name` (reachable at `addr`) to cluster.nodes, persisted.
fn add_member(
    state: &DaemonState,
    name: &str,
    addr: Option<&str>,
) -> Result<bool, config::ConfigError> {
    let path = state.paths.node_conf();
    let mut added = false;
    let new = config::update(&path, |doc, old| {
        if !old.cluster.nodes.iter().any(|n| n == name) {
            let mut nodes = old.cluster.nodes.clone();
            nodes.push(name.to_string());
            doc.set("cluster", "nodes", &nodes.join(" "))?;
            added = true;
        }
        if let Some(a) = addr {
            doc.set(&format!("node.{name}"), "addr", a)?;
        }
        Ok(())
    })?;
    apply_now(state, new);
    Ok(added)
}

/// Takes the new config at once (the supervisor's reload would also see it, a moment later).
pub(super) fn apply_now(state: &DaemonState, new: config::NodeConfig) {
    if let Some(l) = state.listener.get() {
        l.config
            .set(crate::listener::ListenerSettings::from_node(&new));
    }
    state.addr_book.sync(&new);
    *crate::locks::exclusive(&state.config) = std::sync::Arc::new(new);
}

fn peers_map(state: &DaemonState, joiner: &str, joiner_addr: &str) -> Map<String, Value> {
    let c = state.config();
    let seen = shared(&state.peers);
    let mut out = Map::new();
    for n in &c.cluster.nodes {
        let addr = if *n == c.nodename {
            // How the joiner reached us is how it will reach us again.
            None
        } else if *n == joiner {
            Some(joiner_addr.to_string())
        } else {
            c.peers
                .get(n)
                .and_then(|p| p.addr.clone())
                .or_else(|| seen.get(n).map(|p| p.addr.ip().to_string()))
        };
        out.insert(n.clone(), json!(addr));
    }
    out
}

pub(super) fn join(state: &DaemonState, origin: &Origin, addr_option: Option<String>) -> Response {
    let Origin::Peer { nodename, addr } = origin else {
        return Response::error(
            "join: comes from the joining node over the network (nodemgr daemon join --node PEER)",
        );
    };
    let joiner_addr = addr_option.unwrap_or_else(|| addr.ip().to_string());
    let c = state.config();
    let others: Vec<String> = c
        .cluster
        .nodes
        .iter()
        .filter(|n| **n != c.nodename && *n != nodename)
        .cloned()
        .collect();
    match add_member(state, nodename, Some(&joiner_addr)) {
        Ok(added) => {
            tracing::info!(node = %nodename, addr = %joiner_addr, added, "join accepted");
        }
        Err(e) => {
            return Response::error(format!(
                "join: cannot update node.conf: {}",
                config::ErrorChain(&e)
            ));
        }
    }
    // Tell the other members, off the node shard: a slow peer must not stall it.
    let identity = Identity::of(&c);
    let relay = Request::JoinRelay {
        nodename: nodename.clone(),
        addr: Some(joiner_addr.clone()),
    };
    for member in others {
        let Some(to) = c.peer_addr(&member) else {
            tracing::warn!(member, "cannot resolve member to relay a join");
            continue;
        };
        let identity = identity.clone();
        let relay = relay.clone();
        std::thread::spawn(move || relay_to(to, &member, &identity, &relay));
    }
    let c = state.config();
    // Everything the joiner needs to beat and listen like the members: a joiner left on its
    // own heartbeat settings would flap stale on every peer.
    Response::ok(json!({
        "nodename": c.nodename,
        "cluster": {
            "name": c.cluster.name,
            "secret": c.cluster.secret,
            // A joiner in the middle of a rotation must open what every member seals.
            "alt_secret": c.cluster.alt_secret,
            "nodes": c.cluster.nodes,
        },
        "hb": { "interval_ms": c.hb.interval_ms, "timeout_ms": c.hb.timeout_ms },
        "peers": peers_map(state, nodename, &joiner_addr),
        "listener": { "port": c.listener.port },
    }))
}

fn relay_to(to: SocketAddr, member: &str, identity: &Identity, relay: &Request) {
    match client::call_peer(to, identity, relay, RELAY_TIMEOUT) {
        Ok(r) if r.status == 0 => tracing::info!(member, "join relayed"),
        Ok(r) => tracing::warn!(member, error = ?r.error, "join relay refused"),
        Err(e) => tracing::warn!(member, "join relay failed: {e}"),
    }
}

pub(super) fn join_relay(
    state: &DaemonState,
    origin: &Origin,
    nodename: &str,
    addr: Option<&str>,
) -> Response {
    if !matches!(origin, Origin::Peer { .. }) {
        return Response::error("join: a relay comes from a member");
    }
    match add_member(state, nodename, addr) {
        Ok(added) => {
            tracing::info!(node = nodename, added, "join relayed by a member");
            Response::ok(json!({ "added": added }))
        }
        Err(e) => Response::error(format!(
            "join: cannot update node.conf: {}",
            config::ErrorChain(&e)
        )),
    }
}

pub(super) fn leave(state: &DaemonState, origin: &Origin) -> Response {
    let Origin::Peer { nodename, .. } = origin else {
        return Response::error("leave: use `nodemgr daemon leave`, which tells every member");
    };
    let path = state.paths.node_conf();
    let r = config::update(&path, |doc, old| {
        let nodes: Vec<&str> = old
            .cluster
            .nodes
            .iter()
            .map(String::as_str)
            .filter(|n| n != nodename)
            .collect();
        doc.set("cluster", "nodes", &nodes.join(" "))
    });
    match r {
        Ok(new) => {
            apply_now(state, new);
            exclusive(&state.peers).remove(nodename);
            tracing::info!(node = %nodename, "left the cluster");
            Response::ok(json!(format!("{nodename} removed from cluster.nodes")))
        }
        Err(e) => Response::error(format!(
            "leave: cannot update node.conf: {}",
            config::ErrorChain(&e)
        )),
    }
}
