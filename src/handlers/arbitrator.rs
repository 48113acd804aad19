//! `arbitrator_vote`, on a daemon with `[arbitrator] serve`: grants its vote to one partition
//! of the cluster at a time (see `service::arbitrator`). Runs on the node shard. The sender is
//! a member: the gate opened its frame under the cluster secret and `[cluster] nodes`.

use std::collections::BTreeSet;

use serde_json::json;

use crate::dispatch::Origin;
use crate::locks::lock;
use crate::state::DaemonState;
use crate::wire::Response;

pub(super) fn vote(
    state: &DaemonState,
    origin: &Origin,
    partition: &[String],
    hold_ms: Option<u64>,
) -> Response {
    let c = state.config();
    if !c.arbitrator_serve {
        return Response::error("arbitrator_vote: this node is not an arbitrator");
    }
    let Origin::Peer { nodename, .. } = origin else {
        return Response::error("arbitrator_vote: asked by a member, over the network");
    };
    if let Some(stranger) = partition.iter().find(|n| !c.cluster.nodes.contains(n)) {
        return Response::error(format!(
            "arbitrator_vote: {stranger:?} is not a member of cluster {}",
            c.cluster.name
        ));
    }
    let partition: BTreeSet<String> = partition.iter().cloned().collect();
    let now = crate::clock::now_ms();
    // A member whose daemon stops keeps its instances running for its maintenance grace
    // period without applying any split action: its grant covers that time.
    let lease_ms = c.arbitrator_lease_ms.max(hold_ms.unwrap_or(0));
    let answer = lock(&state.arbitrator_lease).request(nodename, &partition, now, lease_ms);
    if answer.granted {
        tracing::debug!(requester = %nodename, ?partition, "arbitrator vote granted");
    } else {
        tracing::info!(
            requester = %nodename,
            ?partition,
            holders = ?answer.holders,
            expires_in_ms = answer.expires_in_ms,
            "arbitrator vote refused: held by another partition"
        );
    }
    Response::ok(json!({
        "granted": answer.granted,
        "holders": answer.holders,
        "lease_ms": c.arbitrator_lease_ms,
        "expires_in_ms": answer.expires_in_ms,
    }))
}
