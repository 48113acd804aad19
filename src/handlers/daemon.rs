//! `daemon_status`, `daemon_stop`, `daemon_start`, `daemon_shutdown`.

use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::daemon::state::{DaemonState, SupervisorCmd, lock};
use crate::guard::InvalidClass;
use crate::listener::now_ms;
use crate::wire::Response;

pub fn status(state: &DaemonState) -> Response {
    let config = state.config();
    let now = now_ms();
    let mut listener = Map::new();
    if let Some(l) = state.listener.get() {
        let stats = l.stats();
        let mut invalid = Map::new();
        for class in InvalidClass::ALL {
            invalid.insert(class.as_str().into(), json!(stats.invalid[class as usize]));
        }
        let (accepted, refused) = l.tcp_counts();
        let running = l.running();
        listener.insert("backend".into(), json!(running.map(|r| r.0)));
        listener.insert("addr".into(), json!(running.map(|r| r.1.to_string())));
        listener.insert("threads".into(), json!(l.slots_len()));
        listener.insert(
            "counters".into(),
            json!({
                "received": stats.received,
                "dequeues": stats.dequeues,
                "dropped_blacklisted": stats.dropped_blacklisted,
                "dropped_join_rate": stats.dropped_join_rate,
                "dropped_session_full": stats.dropped_session_full,
                "invalid": invalid,
                "invalid_total": stats.invalid_total(),
                "decrypted": stats.decrypted,
                "delivered": stats.delivered,
                "heartbeat_repeats": stats.heartbeat_repeats,
                "tcp_accepted": accepted,
                "tcp_refused": refused,
            }),
        );
    }
    let timeout = config.hb.timeout_ms;
    // Taken under the lock as shared references to the raw JSON (no copy, no parse), so the
    // heartbeat shard is not held back while the documents are built.
    let snapshot: Vec<_> = lock(&state.peers)
        .iter()
        .map(|(name, p)| {
            (
                name.clone(),
                p.addr,
                p.last_seen_ms,
                p.view.r#gen(),
                p.view.is_synced(),
                p.view.monitor().clone(),
                p.view.services().clone(),
            )
        })
        .collect();
    let peers: Map<String, Value> = snapshot
        .into_iter()
        .map(
            |(name, addr, last_seen_ms, r#gen, synced, monitor, services)| {
                let age = now.saturating_sub(last_seen_ms);
                let monitor = monitor.to_value();
                let status = if monitor["status"] == "maintenance" {
                    "maintenance"
                } else if age > timeout {
                    "stale"
                } else {
                    "up"
                };
                let services: Map<String, Value> = services
                    .into_iter()
                    .map(|(n, v)| (n, v.to_value()))
                    .collect();
                (
                    name,
                    json!({
                        "status": status,
                        "age_ms": age,
                        "addr": addr.to_string(),
                        "gen": r#gen,
                        "synced": synced,
                        "monitor": monitor,
                        "services": services,
                    }),
                )
            },
        )
        .collect();
    let dq = &state.dequeue;
    use std::sync::atomic::Ordering::Relaxed;
    Response::ok(json!({
        "nodename": config.nodename,
        "cluster": { "name": config.cluster.name, "nodes": config.cluster.nodes },
        "started_ms": state.started_ms,
        "uptime_s": now.saturating_sub(state.started_ms) / 1000,
        "pid": std::process::id(),
        "threads": state.threads(),
        "listener": listener,
        "shards": state.shards.get(),
        // Heartbeats dropped and requests refused "busy" because a handler queue was full.
        "dispatch_dropped": state.dispatcher.get().map(|d| d.dropped()),
        "heartbeats": {
            "applied": state.heartbeats.applied.load(Relaxed),
            "news": state.heartbeats.news.load(Relaxed),
            "refused": state.heartbeats.refused.load(Relaxed),
        },
        "dequeue": {
            "triggers": dq.triggers.load(Relaxed),
            "runs": dq.runs.load(Relaxed),
            "actions_run": dq.actions_run.load(Relaxed),
            "actions_failed": dq.actions_failed.load(Relaxed),
        },
        "blacklist": state.guard.blacklist.status(now),
        "monitor": *crate::daemon::state::lock(&state.node_monitor),
        "services": *crate::daemon::state::lock(&state.services),
        "actions": *crate::daemon::state::lock(&state.actions),
        "peers": peers,
    }))
}

/// Asks the supervisor and waits for its answer.
fn thread_cmd(
    state: &DaemonState,
    make: fn(String, mpsc::Sender<Result<String, String>>) -> SupervisorCmd,
    thread_id: String,
) -> Response {
    let (tx, rx) = mpsc::channel();
    if !state.send(make(thread_id, tx)) {
        return Response::error("the supervisor is not running");
    }
    match rx.recv_timeout(Duration::from_secs(15)) {
        Ok(Ok(msg)) => Response::ok(json!(msg)),
        Ok(Err(e)) => Response::error(e),
        Err(_) => Response::error("the supervisor did not answer in time"),
    }
}

pub fn stop(state: &DaemonState, thread_id: Option<String>) -> Response {
    match thread_id {
        Some(t) => thread_cmd(state, SupervisorCmd::StopThread, t),
        None if state.send(SupervisorCmd::Stop) => Response::ok(json!("daemon stopping")),
        None => Response::error("the supervisor is not running"),
    }
}

pub fn start(state: &DaemonState, thread_id: Option<String>) -> Response {
    match thread_id {
        Some(t) => thread_cmd(state, SupervisorCmd::StartThread, t),
        None => Response::ok(json!("daemon already running")),
    }
}

pub fn shutdown(state: &DaemonState) -> Response {
    if state.send(SupervisorCmd::Shutdown) {
        Response::ok(json!("daemon shutting down"))
    } else {
        Response::error("the supervisor is not running")
    }
}
