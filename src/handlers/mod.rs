//! Request handlers, one module per action family. A `Handlers` value is one shard's: it runs
//! on that shard's thread and owns that shard's slice of the state.

mod blacklist;
mod daemon;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::daemon::state::{DaemonState, PeerStatus};
use crate::dispatch::{Origin, ShardHandler};
use crate::wire::{Heartbeat, Request, Response};

pub struct Handlers {
    pub shard: usize,
    pub state: Arc<DaemonState>,
}

impl ShardHandler for Handlers {
    fn handle(&mut self, origin: &Origin, request: Request) -> Response {
        let action = request.action();
        let response = match request {
            Request::DaemonStatus => daemon::status(&self.state),
            Request::DaemonStop { thread_id } => daemon::stop(&self.state, thread_id),
            Request::DaemonStart { thread_id } => daemon::start(&self.state, thread_id),
            Request::DaemonShutdown => daemon::shutdown(&self.state),
            Request::BlacklistStatus => blacklist::status(&self.state),
            Request::BlacklistClear => blacklist::clear(&self.state, origin),
            Request::GetServiceConfig { .. }
            | Request::Clear { .. }
            | Request::SetNodeMonitor { .. }
            | Request::SetServiceMonitor { .. }
            | Request::GetServiceMonitor { .. }
            | Request::Join
            | Request::Leave
            | Request::ServiceAction { .. }
            | Request::ServiceLogs { .. } => Response::error(format!("{action}: not implemented")),
        };
        if response.status != 0 {
            tracing::debug!(action, ?origin, error = ?response.error, "request failed");
        }
        response
    }

    fn heartbeat(&mut self, nodename: String, hb: Heartbeat, addr: SocketAddr, at_ms: u64) {
        let mut peers = self.state.peers.lock().unwrap_or_else(|p| p.into_inner());
        peers.insert(
            nodename,
            PeerStatus {
                addr,
                last_seen_ms: at_ms,
                r#gen: hb.r#gen,
                monitor: hb.monitor,
                services: hb.services,
            },
        );
    }
}
