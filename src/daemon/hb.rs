//! The `hb.tx` thread: every `hb.interval`, one heartbeat datagram (kind 3) to every other
//! member: a generation number, this node's monitor, and each service instance's status and
//! monitor. The generation moves when the content changes, so a receiver can tell news from
//! repetition. Receipt is on the listener's UDP path (`Job::Heartbeats` on the heartbeat shard).

use std::net::UdpSocket;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use tokio::sync::watch;

use super::peer_addr;
use super::state::{DaemonState, lock};
use crate::config::NodeConfig;
use crate::hb::HbSender;
use crate::listener::now_ms;
use crate::wire::frame::MAX_UDP_FRAME;
use crate::wire::{Kind, Sender};

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
fn heartbeat_socket(c: &NodeConfig) -> Result<UdpSocket, String> {
    let local = c.listener.addr;
    if local.is_unspecified() {
        UdpSocket::bind((local, 0))
    } else {
        crate::listener::sockets::udp_from(local)
    }
    .map_err(|e| format!("cannot bind a UDP socket on {local}: {e}"))
}

/// Seals `payload` as a heartbeat for every other member and sends it. Loss is the
/// protocol's business: the next beat carries the same news. Err(size) when the sealed frame
/// does not fit one datagram.
fn send_to_peers(
    c: &NodeConfig,
    sender: &mut Sender,
    sock: &UdpSocket,
    payload: &[u8],
) -> Result<(), usize> {
    for peer in c.cluster.nodes.iter().filter(|n| **n != c.nodename) {
        let Some(addr) = peer_addr(c, peer) else {
            tracing::debug!(peer, "cannot resolve peer");
            continue;
        };
        let mut frame = Vec::with_capacity(payload.len() + 128);
        if sender
            .seal(Kind::Heartbeat, payload, now_ms(), &mut frame)
            .is_err()
        {
            continue;
        }
        if frame.len() > MAX_UDP_FRAME {
            return Err(frame.len());
        }
        let _ = sock.send_to(&frame, addr);
    }
    Ok(())
}

/// Tells every peer this node goes into maintenance: a heartbeat whose monitor says so.
pub fn advertise_maintenance(state: &DaemonState) {
    let c = state.config();
    // A new incarnation (boot) with nothing but the maintenance monitor: peers drop what they
    // knew of our services and show the node in maintenance until our next start.
    let payload = json!({
        "gen": 1,
        "since": 0,
        "boot": now_ms(),
        "monitor": {"status": "maintenance"},
        "services": {},
    })
    .to_string();
    let mut sender = Sender::new(
        c.cluster.secret.as_bytes(),
        &c.cluster.name,
        &c.nodename,
        now_ms(),
    );
    match heartbeat_socket(&c) {
        Ok(sock) => {
            let _ = send_to_peers(&c, &mut sender, &sock, payload.as_bytes());
            tracing::info!(
                peers = c.cluster.nodes.len().saturating_sub(1),
                "maintenance advertised"
            );
        }
        Err(e) => tracing::warn!("cannot advertise maintenance: {e}"),
    }
}

pub fn run(state: Arc<DaemonState>, stop: watch::Receiver<bool>) -> Result<(), String> {
    let sock = heartbeat_socket(&state.config())?;
    // The boot stamp tells peers a restarted node's generations start over.
    let mut content = HbSender::default().with_boot(state.started_ms);
    let mut sender: Option<((String, String, String), Sender)> = None;
    let mut oversize_logged = false;
    while !*stop.borrow() {
        let started = Instant::now();
        let c = state.config();
        content.update(
            serde_json::to_value(&*lock(&state.node_monitor)).unwrap_or_default(),
            services_summary(&state),
        );
        for svc in content.take_new_oversize() {
            tracing::error!(service = %svc, "service status too large for a heartbeat; peers do not see it");
        }
        // A new session when the identity changed (secret, cluster or nodename).
        let identity = (
            c.cluster.secret.clone(),
            c.cluster.name.clone(),
            c.nodename.clone(),
        );
        if sender.as_ref().is_none_or(|(id, _)| *id != identity) {
            let s = Sender::new(identity.0.as_bytes(), &identity.1, &identity.2, now_ms());
            sender = Some((identity, s));
        }
        if let Some((_, s)) = sender.as_mut() {
            for payload in content.next_payloads() {
                let bytes = payload.to_string();
                if let Err(too_big) = send_to_peers(&c, s, &sock, bytes.as_bytes())
                    && !oversize_logged
                {
                    tracing::error!(
                        bytes = too_big,
                        "heartbeat too large for one datagram; not sent"
                    );
                    oversize_logged = true;
                }
            }
        }
        let interval = Duration::from_millis(c.hb.interval_ms);
        while started.elapsed() < interval && !*stop.borrow() {
            std::thread::sleep(Duration::from_millis(50).min(interval));
        }
    }
    Ok(())
}
