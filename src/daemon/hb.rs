//! The `hb.tx` thread: every `hb.interval`, one heartbeat datagram (kind 3) to every other
//! member: a generation number, this node's monitor, and each service instance's status and
//! monitor. The generation moves when the content changes, so a receiver can tell news from
//! repetition. Receipt is on the listener's UDP path (`Job::Heartbeat` on the node shard).

use std::net::UdpSocket;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use tokio::sync::watch;

use super::peer_addr;
use super::state::{DaemonState, lock};
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

pub fn run(state: Arc<DaemonState>, stop: watch::Receiver<bool>) -> Result<(), String> {
    // From the cluster address when the listener has a specific one: peers see it as ours.
    let local = state.config().listener.addr;
    let sock = if local.is_unspecified() {
        UdpSocket::bind((local, 0))
    } else {
        crate::listener::sockets::udp_from(local)
    }
    .map_err(|e| format!("cannot bind a UDP socket on {local}: {e}"))?;
    let mut sender: Option<(String, String, String, Sender)> = None;
    let mut generation: u64 = 0;
    let mut last_content = Value::Null;
    let mut oversize_logged = false;
    while !*stop.borrow() {
        let started = Instant::now();
        let c = state.config();
        let content = json!({
            "monitor": *lock(&state.node_monitor),
            "services": services_summary(&state),
        });
        if content != last_content {
            generation += 1;
            last_content = content.clone();
        }
        let payload = json!({
            "gen": generation,
            "monitor": content["monitor"],
            "services": content["services"],
        })
        .to_string();
        // A new session when the identity changed (secret, cluster or nodename).
        let identity = (
            c.cluster.secret.clone(),
            c.cluster.name.clone(),
            c.nodename.clone(),
        );
        if sender
            .as_ref()
            .is_none_or(|(s, cl, n, _)| (s, cl, n) != (&identity.0, &identity.1, &identity.2))
        {
            let s = Sender::new(identity.0.as_bytes(), &identity.1, &identity.2, now_ms());
            sender = Some((identity.0, identity.1, identity.2, s));
        }
        if let Some((_, _, _, s)) = sender.as_mut() {
            for peer in c.cluster.nodes.iter().filter(|n| **n != c.nodename) {
                let Some(addr) = peer_addr(&c, peer) else {
                    continue;
                };
                let mut frame = Vec::with_capacity(payload.len() + 128);
                if s.seal(Kind::Heartbeat, payload.as_bytes(), now_ms(), &mut frame)
                    .is_err()
                {
                    continue;
                }
                if frame.len() > MAX_UDP_FRAME {
                    if !oversize_logged {
                        tracing::error!(
                            bytes = frame.len(),
                            "heartbeat too large for one datagram; not sent"
                        );
                        oversize_logged = true;
                    }
                    break;
                }
                // Loss is the protocol's business: the next beat carries the same news.
                let _ = sock.send_to(&frame, addr);
            }
        }
        let interval = Duration::from_millis(c.hb.interval_ms);
        while started.elapsed() < interval && !*stop.borrow() {
            std::thread::sleep(Duration::from_millis(50).min(interval));
        }
    }
    Ok(())
}
