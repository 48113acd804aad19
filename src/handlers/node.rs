//! `set_node_monitor`, and the node monitor's persistence (`<var>/node_monitor.json`).

use std::sync::atomic::Ordering;

use serde_json::json;

use crate::config::Paths;
use crate::locks::lock;
use crate::service::instance::write_json_atomic;
use crate::state::{DaemonState, NodeMonitor};
use crate::wire::Response;
use crate::wire::payload::{NodeLocalExpect, NodeMonitorStatus};

fn path(paths: &Paths) -> std::path::PathBuf {
    paths.var.join("node_monitor.json")
}

/// The node monitor as last persisted (a frozen node stays frozen across restarts).
pub(crate) fn load_node_monitor(paths: &Paths) -> NodeMonitor {
    std::fs::read(path(paths))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

pub(crate) fn set(
    state: &DaemonState,
    status: Option<NodeMonitorStatus>,
    local_expect: Option<NodeLocalExpect>,
) -> Response {
    if status.is_none() && local_expect.is_none() {
        return Response::error("set_node_monitor: give at least one of status, local_expect");
    }
    let snapshot = {
        let mut m = lock(&state.node_monitor);
        if let Some(s) = status {
            m.status = s;
        }
        if let Some(le) = local_expect {
            // Freezing and thawing take effect at once: the status passes through
            // freezing/thawing only for observers of the log.
            m.local_expect = le;
            m.status = NodeMonitorStatus::Idle;
            state
                .node_frozen
                .store(le == NodeLocalExpect::Frozen, Ordering::Release);
            tracing::info!(local_expect = %le, "node monitor: {}", if le == NodeLocalExpect::Frozen { "frozen" } else { "thawed" });
        }
        m.clone()
    };
    let value = serde_json::to_value(&snapshot).unwrap_or_default();
    write_json_atomic(&path(&state.paths), &value);
    Response::ok(json!(value))
}
