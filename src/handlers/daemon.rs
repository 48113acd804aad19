//! `daemon_status`, `daemon_stop`, `daemon_start`, `daemon_shutdown`.

use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::clock::now_ms;
use crate::config::NodeConfig;
use crate::state::metrics::{self, Sample};
use crate::state::{DaemonState, PeerStatus, SupervisorCmd, ThreadReply, lock, presence_label};
use crate::wire::Response;

pub(super) fn status(state: &DaemonState) -> Response {
    let config = state.config();
    let now = now_ms();
    let (data, sample) = status_parts(state, now);
    let peers = {
        let peers = lock(&state.peers);
        let mut sorted: Vec<(&String, &PeerStatus)> = peers.iter().collect();
        sorted.sort_unstable_by_key(|(name, _)| *name);
        peers_json(&sorted, now, &config)
    };
    // Every peer's content is raw JSON already: it is written into the answer as it is, not
    // turned into documents and back (a large cluster's status is mostly this).
    // The members (one entry per configured member) are written from their structs, not
    // through a document: at hundreds of members they are most of the answer's cost.
    let mut text = Value::Object(data).to_string();
    text.pop();
    text.push_str(",\"members\":");
    if let Ok(members) = serde_json::to_string(&sample.members) {
        text.push_str(&members);
    } else {
        text.push_str("{}");
    }
    text.push_str(",\"peers\":");
    text.push_str(&peers);
    text.push('}');
    Response::ok_encoded(text)
}

/// The status but the peers' content: what `/metrics` is written from too. Its counters come
/// from the metric table (`state::metrics`).
pub(crate) fn status_document(state: &DaemonState, now: u64) -> Map<String, Value> {
    let (mut data, sample) = status_parts(state, now);
    data.insert("members".into(), json!(sample.members));
    data
}

/// The status but the peers' content and the members (the sample they are read from comes
/// with it).
fn status_parts(state: &DaemonState, now: u64) -> (Map<String, Value>, Sample<'_>) {
    let config = state.config();
    let sample = Sample::take(state, now);
    let mut listener = Map::new();
    if let Some(l) = state.listener.get() {
        let running = l.running();
        listener.insert("backend".into(), json!(running.map(|r| r.0)));
        listener.insert("backend_reason".into(), json!(l.backend_reason()));
        listener.insert("addr".into(), json!(running.map(|r| r.1.to_string())));
        listener.insert("threads".into(), json!(l.slots_len()));
    }
    use std::sync::atomic::Ordering::Relaxed;
    let data = json!({
        "nodename": config.nodename,
        "cluster": { "name": config.cluster.name, "nodes": config.cluster.nodes },
        "keyring": super::keyring::fingerprints(&config),
        "started_ms": state.started_ms,
        "stopping": state.stopping.load(Relaxed),
        "orchestration_ready": state.orchestration_ready.load(Relaxed),
        "quorum": quorum_json(state, &config, now),
        "pid": std::process::id(),
        "threads": state.threads(),
        "listener": listener,
        "shards": state.shards.get(),
        "blacklist": sample.blacklist,
        "monitor": *crate::state::lock(&state.node_monitor),
        "services": *crate::state::lock(&state.services),
        "actions": *crate::state::lock(&state.actions),
    });
    let Value::Object(mut data) = data else {
        unreachable!("an object literal")
    };
    metrics::fill(&mut data, &sample);
    (data, sample)
}

/// Whether quorum is on, this node's votes, and whether it holds quorum (and so may start ha
/// services).
fn quorum_json(state: &DaemonState, config: &NodeConfig, now: u64) -> serde_json::Value {
    let (votes, seen) = {
        let peers = lock(&state.peers);
        let grants = lock(&state.arbitrator_grants);
        (
            crate::state::votes(config, &peers, &grants, now),
            crate::state::partition(config, &peers, now),
        )
    };
    let grants = lock(&state.arbitrator_grants).clone();
    let heard = lock(&state.arbitrator_status).clone();
    let arbitrators: serde_json::Map<String, serde_json::Value> = config
        .arbitrators
        .iter()
        .map(|(name, addr)| {
            let grant = grants.get(name);
            let holds = grant.is_some_and(|g| crate::state::grant_counts(g, &seen, now));
            (
                name.clone(),
                json!({
                    "addr": addr,
                    "vote_held": holds,
                    "expires_in_ms": grant.map(|g| g.until_ms.saturating_sub(now)),
                    "last_answer": heard.get(name),
                }),
            )
        })
        .collect();
    json!({
        "enabled": config.quorum,
        "votes": votes.votes,
        "total": votes.total,
        "arbitrator_votes": votes.arbitrator_votes,
        "has_quorum": votes.has_quorum(),
        "split_action": config.split_action.as_str(),
        "partition": seen,
        "arbitrators": arbitrators,
        "serves_as_arbitrator": config.arbitrator_serve,
        // On an arbitrator: the members holding its vote, with the ms their grant still runs.
        "vote_holders": config
            .arbitrator_serve
            .then(|| lock(&state.arbitrator_lease).holders(now)),
    })
}

/// The `peers` object of the status, written from the peers' raw JSON: a copy of text,
/// nothing parsed (so it is done under the peers' lock, which the heartbeat shard waits for).
fn peers_json(peers: &[(&String, &PeerStatus)], now: u64, config: &NodeConfig) -> String {
    let raw = |p: &PeerStatus| {
        p.view.monitor().as_str().len()
            + p.view
                .services()
                .iter()
                .map(|(n, v)| n.len() + v.as_str().len() + 4)
                .sum::<usize>()
    };
    let mut out = String::with_capacity(peers.iter().map(|(_, p)| 128 + raw(p)).sum());
    let quoted = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
    out.push('{');
    for (i, (name, p)) in peers.iter().enumerate() {
        let age = now.saturating_sub(p.last_seen_ms);
        let status = presence_label(p.presence(now, config));
        if i > 0 {
            out.push(',');
        }
        out.push_str(&quoted(name));
        out.push_str(&format!(
            r#":{{"status":"{status}","age_ms":{age},"addr":{},"gen":{},"synced":{},"monitor":"#,
            quoted(&p.addr.to_string()),
            p.view.r#gen(),
            p.view.is_synced(),
        ));
        out.push_str(p.view.monitor().as_str());
        out.push_str(r#","services":{"#);
        for (j, (svc, value)) in p.view.services().iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            out.push_str(&quoted(svc));
            out.push(':');
            out.push_str(value.as_str());
        }
        out.push_str("}}");
    }
    out.push('}');
    out
}

/// Asks the supervisor and waits for its answer.
fn thread_cmd(
    state: &DaemonState,
    make: fn(String, ThreadReply) -> SupervisorCmd,
    thread_id: String,
) -> Response {
    let (tx, rx) = mpsc::channel();
    if !state.send(make(thread_id, tx)) {
        return Response::error("the supervisor is not running");
    }
    match rx.recv_timeout(Duration::from_secs(15)) {
        Ok(Ok(msg)) => Response::ok(json!(msg)),
        Ok(Err(e)) => Response::error(e.to_string()),
        Err(_) => Response::error("the supervisor did not answer in time"),
    }
}

pub(super) fn stop(state: &DaemonState, thread_id: Option<String>) -> Response {
    match thread_id {
        Some(t) => thread_cmd(state, SupervisorCmd::StopThread, t),
        None if state.send(SupervisorCmd::Stop) => Response::ok(json!("daemon stopping")),
        None => Response::error("the supervisor is not running"),
    }
}

pub(super) fn start(state: &DaemonState, thread_id: Option<String>) -> Response {
    match thread_id {
        Some(t) => thread_cmd(state, SupervisorCmd::StartThread, t),
        None => Response::ok(json!("daemon already running")),
    }
}

/// Answers once every local instance was stopped (or failed to), with what happened to each;
/// the daemon then announces maintenance and exits.
pub(super) fn shutdown(state: &DaemonState) -> Response {
    let (tx, rx) = mpsc::channel();
    if !state.send(SupervisorCmd::Shutdown(tx)) {
        return Response::error("the supervisor is not running");
    }
    // Each stop is bounded by its service's timeouts: the supervisor always answers or goes.
    match rx.recv() {
        Ok(report) => Response::ok(report),
        Err(_) => Response::error("the supervisor stopped without a report"),
    }
}
