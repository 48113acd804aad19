//! The `arbitrators` thread: asks every `[arbitrator#N]` for its vote with this node's
//! partition, about three times per lease, and keeps the grants in `DaemonState` for
//! `state::votes`. Off the shard threads: an arbitrator that does not answer delays nothing
//! but this loop.

use std::collections::BTreeSet;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::watch;

use crate::clock::now_ms;
use crate::locks::{lock, shared};
use crate::state::{ArbitratorGrant, DaemonState};
use crate::wire::Request;

/// The renewal period before an arbitrator has said how long its lease lasts.
const FIRST_PERIOD_MS: u64 = 1_000;
/// Bounds on the renewal period (a third of the lease).
const MIN_PERIOD_MS: u64 = 100;
const MAX_PERIOD_MS: u64 = 5_000;

/// What one arbitrator answered, as far as this node needs it.
struct Answer {
    granted: bool,
    lease_ms: u64,
    /// Granted: how long the grant lasts.
    expires_in_ms: u64,
    holders: serde_json::Value,
}

/// Why an arbitrator's vote was not renewed this round.
#[derive(Debug, thiserror::Error)]
enum VoteError {
    // Said in the message, not returned as a source: the status shows it as one line.
    #[error("cannot resolve {addr}: {cause}")]
    Resolve { addr: String, cause: std::io::Error },
    #[error("{0} resolves to no address")]
    NoAddress(String),
    #[error(transparent)]
    Call(#[from] crate::client::ClientError),
    #[error("refused: {0}")]
    Refused(String),
    #[error("answer without {0:?}")]
    Malformed(&'static str),
}

fn ask(
    addr: SocketAddr,
    state: &DaemonState,
    partition: &BTreeSet<String>,
    hold_ms: Option<u64>,
    timeout: Duration,
) -> Result<Answer, VoteError> {
    let c = state.config();
    let identity = crate::client::Identity::of(&c);
    let request = Request::ArbitratorVote {
        partition: partition.iter().cloned().collect(),
        hold_ms,
    };
    let r = crate::client::call_peer(addr, &identity, &request, timeout)?;
    if r.status != 0 {
        return Err(VoteError::Refused(
            r.error.unwrap_or_else(|| format!("status {}", r.status)),
        ));
    }
    let data = r.data.unwrap_or_default();
    let granted = data["granted"]
        .as_bool()
        .ok_or(VoteError::Malformed("granted"))?;
    let lease_ms = data["lease_ms"]
        .as_u64()
        .ok_or(VoteError::Malformed("lease_ms"))?;
    let expires_in_ms = data["expires_in_ms"]
        .as_u64()
        .ok_or(VoteError::Malformed("expires_in_ms"))?;
    Ok(Answer {
        granted,
        lease_ms,
        expires_in_ms,
        holders: data["holders"].clone(),
    })
}

/// One round: every arbitrator asked once. Returns the next period.
fn round(state: &DaemonState, period_ms: u64, hold_ms: Option<u64>) -> u64 {
    let c = state.config();
    let mut next = period_ms;
    let timeout = Duration::from_millis(period_ms.clamp(MIN_PERIOD_MS, 2_000));
    for (name, addr_text) in &c.arbitrators {
        let partition = crate::state::partition(&c, &shared(&state.peers), now_ms());
        // The grant is dated from before the request: it ends here no later than there.
        let asked_at = now_ms();
        let addr = addr_text
            .to_socket_addrs()
            .map_err(|cause| VoteError::Resolve {
                addr: addr_text.clone(),
                cause,
            })
            .and_then(|mut a| {
                a.next()
                    .ok_or_else(|| VoteError::NoAddress(addr_text.clone()))
            });
        let result = addr.and_then(|a| ask(a, state, &partition, hold_ms, timeout));
        let status = match result {
            Ok(a) => {
                let mut grants = lock(&state.arbitrator_grants);
                if a.granted {
                    grants.insert(
                        name.clone(),
                        ArbitratorGrant {
                            partition: partition.clone(),
                            until_ms: asked_at.saturating_add(a.expires_in_ms),
                        },
                    );
                } else if grants.remove(name).is_some() {
                    tracing::warn!(arbitrator = %name, holders = %a.holders, "arbitrator vote lost to another partition");
                }
                next = (a.lease_ms / 3).clamp(MIN_PERIOD_MS, MAX_PERIOD_MS);
                json!({"granted": a.granted, "holders": a.holders, "lease_ms": a.lease_ms, "at_ms": asked_at})
            }
            // Unreachable: the grant held, if any, counts until it expires.
            Err(e) => {
                tracing::debug!(arbitrator = %name, addr = %addr_text, "arbitrator vote not renewed: {e}");
                json!({"error": e.to_string(), "at_ms": asked_at})
            }
        };
        lock(&state.arbitrator_status).insert(name.clone(), status);
    }
    lock(&state.arbitrator_grants).retain(|name, _| c.arbitrators.contains_key(name));
    next
}

/// The daemon stops, its instances run on: every arbitrator is asked to hold this node's
/// grant for the maintenance grace period, as peers trust a node in maintenance that long
/// (a peer cut from this node never saw the notice; without this it could get the vote and
/// start what still runs here).
pub(crate) fn advertise_maintenance(state: &DaemonState) {
    let c = state.config();
    if c.arbitrators.is_empty() || !c.quorum {
        return;
    }
    let hold_ms = c
        .maintenance_grace_ms
        .min(crate::wire::payload::MAX_HOLD_MS);
    round(state, FIRST_PERIOD_MS, Some(hold_ms));
}

pub(crate) fn run(state: &DaemonState, stop: &watch::Receiver<bool>) {
    let mut period_ms = FIRST_PERIOD_MS;
    while !*stop.borrow() {
        let started = Instant::now();
        if !state.config().arbitrators.is_empty() {
            period_ms = round(state, period_ms, None);
        }
        let period = Duration::from_millis(period_ms);
        while started.elapsed() < period && !*stop.borrow() {
            std::thread::sleep(Duration::from_millis(50).min(period));
        }
    }
}
