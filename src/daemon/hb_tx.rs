//! The `hb.tx` thread: every `hb.interval`, one heartbeat datagram (kind 3) to every other
//! member: a generation number, this node's monitor, and each service instance's status and
//! monitor. The generation moves when the content changes, so a receiver can tell news from
//! repetition. Receipt is on the listener's UDP path (`Job::Heartbeats` on the heartbeat shard).

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use tokio::sync::watch;

use crate::clock::now_ms;
use crate::config::NodeConfig;
use crate::hb::MAINTENANCE_COPIES_MS;
use crate::locks::{lock, shared};
use crate::state::{DaemonState, ThreadError};
use crate::wire::frame::MAX_UDP_FRAME;
use crate::wire::{Kind, Sealer};

/// What a heartbeat says of a service: enough for peers to orchestrate, not the whole status.
fn services_summary(state: &DaemonState) -> Map<String, Value> {
    lock(&state.services)
        .iter()
        .map(|(name, s)| {
            (
                name.clone(),
                json!({
                    "avail": s["avail"],
                    "monitor": s["monitor"],
                    "orchestrate": s["orchestrate"],
                }),
            )
        })
        .collect()
}

/// A UDP socket on the cluster address when the listener has a specific one, so peers see
/// our datagrams come from the address they know us by.
fn heartbeat_socket(c: &NodeConfig) -> Result<UdpSocket, ThreadError> {
    let local = c.listener.addr;
    if local.is_unspecified() {
        UdpSocket::bind((local, 0))
    } else {
        crate::listener::sockets::udp_from(local)
    }
    .map_err(|cause| ThreadError::HeartbeatSocket { addr: local, cause })
}

/// Seals `payload` as a heartbeat for every other member the resolver found an address for
/// (`targets`), and sends it. Loss is the protocol's business: the next beat carries the same
/// news; a send that fails sends its member's name back to the resolver. Err(size) when the
/// sealed frame does not fit one datagram.
fn send_to_peers(
    state: &DaemonState,
    targets: &[(Arc<str>, SocketAddr)],
    sender: &mut Sealer,
    sock: &UdpSocket,
    payload: &[u8],
) -> Result<(), usize> {
    // One buffer for every peer's frame (each is sealed under its own nonce).
    let mut frame = Vec::with_capacity(payload.len() + 128);
    for (peer, addr) in targets {
        frame.clear();
        if sender
            .seal(Kind::Heartbeat, payload, now_ms(), &mut frame)
            .is_err()
        {
            continue;
        }
        if frame.len() > MAX_UDP_FRAME {
            return Err(frame.len());
        }
        if sock.send_to(&frame, addr).is_err() {
            state.addr_book.send_failed(peer);
        }
    }
    Ok(())
}

/// The node monitor as heartbeats carry it: `maintenance` once the daemon is stopping, so
/// peers keep this node's services where they run and take nothing over.
fn monitor_summary(state: &DaemonState) -> Value {
    let mut monitor = serde_json::to_value(&*lock(&state.node_monitor)).unwrap_or_default();
    if state.maintenance.load(Ordering::Acquire) {
        monitor["status"] = json!("maintenance");
    }
    // The members this node hears (or holds in maintenance): a peer counts this node's vote
    // only while this node hears it too, so a one-way loss cannot leave both sides with
    // quorum; and a peer that cannot reach a member learns from this list that it is not gone.
    let c = state.config();
    let now = now_ms();
    let mut sees: Vec<&str> = Vec::new();
    let peers = shared(&state.peers);
    for (name, p) in peers.iter() {
        if p.presence(now, &c) != crate::service::orchestrate::Presence::Gone {
            sees.push(name);
        }
    }
    // Every part of a heartbeat repeats the monitor: a list that took most of the payload
    // would leave no room for services, and past the payload's size no heartbeat would go out
    // at all (peers would see this node stale while it runs its services). Beyond the bound
    // the list is left out: peers then count this node's vote without it, as from a node that
    // does not say what it sees.
    let listed_bytes: usize = sees.iter().map(|n| n.len() + 3).sum();
    if listed_bytes <= MAX_SEES_BYTES {
        sees.sort_unstable();
        monitor["sees"] = json!(sees);
    } else if !SEES_LEFT_OUT.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            members = sees.len(),
            bytes = listed_bytes,
            limit = MAX_SEES_BYTES,
            "too many members to list those this node sees in its heartbeats; the list is left out (quorum then cannot tell a one-way loss)"
        );
    }
    monitor
}

/// The most bytes of member names a heartbeat's `sees` list may take: a third of the
/// heartbeat payload (about 2,000 members of 10-character names).
const MAX_SEES_BYTES: usize = crate::hb::MAX_PAYLOAD / 3;

/// Whether the warning about a `sees` list left out was logged (once a process).
static SEES_LEFT_OUT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// One beat: the current content, sealed for every other member and sent.
fn beat(state: &DaemonState, sock: &UdpSocket) {
    let c = state.config();
    let mut out = lock(&state.hb_out);
    let out = &mut *out;
    out.content
        .update(monitor_summary(state), services_summary(state));
    for svc in out.content.take_new_oversize() {
        tracing::error!(service = %svc, "service status too large for a heartbeat; peers do not see it");
    }
    // A new session when the identity changed (secret, cluster or nodename).
    let identity = (
        c.cluster.secret.clone(),
        c.cluster.name.clone(),
        c.nodename.clone(),
    );
    if out.session.as_ref().is_none_or(|(id, _)| *id != identity) {
        let s = Sealer::new(identity.0.as_bytes(), &identity.1, &identity.2, now_ms());
        out.session = Some((identity, s));
    }
    let Some((_, session)) = out.session.as_mut() else {
        return;
    };
    // An arbitrator is no member: the members it serves would refuse its heartbeats (and
    // count the refusals against its address).
    let targets = if c.arbitrator_serve {
        Vec::new()
    } else {
        state.addr_book.resolved()
    };
    for payload in out.content.next_payloads() {
        let bytes = payload.to_string();
        if let Err(too_big) = send_to_peers(state, &targets, session, sock, bytes.as_bytes())
            && !out.oversize_logged
        {
            tracing::error!(
                bytes = too_big,
                "heartbeat too large for one datagram; not sent"
            );
            out.oversize_logged = true;
        }
    }
}

/// Tells every peer this node is in maintenance: its daemon stops, its instances keep running
/// as the heartbeat lists them. Call it once the `hb.tx` thread is stopped, so no ordinary
/// beat follows it.
pub(crate) fn advertise_maintenance(state: &DaemonState) {
    state.maintenance.store(true, Ordering::Release);
    let c = state.config();
    match heartbeat_socket(&c) {
        Ok(sock) => {
            let start = Instant::now();
            for at in MAINTENANCE_COPIES_MS {
                let due = Duration::from_millis(at);
                std::thread::sleep(due.saturating_sub(start.elapsed()));
                beat(state, &sock);
            }
            let services = lock(&state.services).len();
            tracing::info!(
                peers = c.cluster.nodes.len().saturating_sub(1),
                services,
                "maintenance advertised; instances left running as reported"
            );
        }
        Err(e) => tracing::warn!("cannot advertise maintenance: {e}"),
    }
}

pub(crate) fn run(state: Arc<DaemonState>, stop: watch::Receiver<bool>) -> Result<(), ThreadError> {
    let sock = heartbeat_socket(&state.config())?;
    while !*stop.borrow() {
        let started = Instant::now();
        beat(&state, &sock);
        let interval = Duration::from_millis(state.config().hb.interval_ms);
        while started.elapsed() < interval && !*stop.borrow() {
            std::thread::sleep(Duration::from_millis(50).min(interval));
        }
    }
    Ok(())
}
