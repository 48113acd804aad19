//! `blacklist_status`, `blacklist_clear`.

use crate::clock::now_ms;
use crate::dispatch::Origin;
use crate::state::DaemonState;
use crate::wire::Response;

pub(super) fn status(state: &DaemonState) -> Response {
    let s = state.guard.blacklist.status(now_ms());
    Response::ok(serde_json::to_value(s).unwrap_or_default())
}

pub(super) fn clear(state: &DaemonState, origin: &Origin) -> Response {
    let before = state.guard.blacklist.status(now_ms()).len();
    state.guard.blacklist.clear();
    tracing::info!(?origin, entries = before, "blacklist cleared");
    Response::ok(serde_json::json!({ "cleared": before }))
}
