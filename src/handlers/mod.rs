//! Request handlers, one module per action family. A `Handlers` value is one shard's: it runs
//! on that shard's thread and owns that shard's slice of the state.

mod arbitrator;
mod blacklist;
mod cluster;
pub(crate) mod daemon;
mod keyring;
pub(crate) mod node;
pub(crate) mod service;

use std::sync::Arc;

use crate::dispatch::{Origin, ReceivedHeartbeat, Reply, ShardHandler};
use crate::locks::{exclusive, lock};
use crate::state::DaemonState;
use crate::wire::Request;

pub(crate) struct Handlers {
    pub state: Arc<DaemonState>,
    services: service::ServiceShard,
    /// `daemon_status`, shared with the dispatcher's quick path.
    status: Arc<daemon::StatusWriter>,
}

impl Handlers {
    pub(crate) fn new(state: Arc<DaemonState>, status: Arc<daemon::StatusWriter>) -> Self {
        Handlers {
            state,
            services: Default::default(),
            status,
        }
    }
}

impl ShardHandler for Handlers {
    fn handle(&mut self, origin: &Origin, request: Request) -> Reply {
        let action = request.action();
        let st = &self.state;
        let svc = &mut self.services;
        let response = match request {
            Request::DaemonStatus => self.status.answer(),
            Request::DaemonStop { thread_id } => daemon::stop(st, thread_id),
            Request::DaemonStart { thread_id } => daemon::start(st, thread_id),
            Request::DaemonShutdown => daemon::shutdown(st),
            Request::BlacklistStatus => blacklist::status(st),
            Request::BlacklistClear => blacklist::clear(st, origin),
            Request::GetServiceConfig { svcname } => service::get_config(st, &svcname),
            Request::Clear { svcname } => service::clear(svc, st, &svcname),
            Request::SetNodeMonitor {
                status,
                local_expect,
            } => node::set(st, status, local_expect),
            Request::SetServiceMonitor {
                svcname,
                status,
                local_expect,
                global_expect,
                reset_retries,
            } => service::set_monitor(
                svc,
                st,
                &svcname,
                status,
                local_expect,
                global_expect,
                reset_retries,
            ),
            Request::GetServiceMonitor { svcname } => service::get_monitor(svc, st, &svcname),
            Request::ServiceAction {
                svcname,
                command,
                sync,
            } => return service::action(svc, st, &svcname, &command, sync),
            Request::ServiceLogs {
                svcname,
                backlog,
                follow,
            } => return service::logs(st, origin, &svcname, backlog, follow),
            Request::Join => cluster::join(st, origin, None),
            Request::JoinRelay { nodename, addr } => {
                cluster::join_relay(st, origin, &nodename, addr.as_deref())
            }
            Request::Leave => cluster::leave(st, origin),
            Request::KeyringInstall { secret } => keyring::install(st, &secret),
            Request::KeyringUse { fingerprint } => keyring::use_secret(st, &fingerprint),
            Request::KeyringRemove { fingerprint } => keyring::remove(st, &fingerprint),
            Request::KeyringList => keyring::list(st),
            Request::ArbitratorVote { partition, hold_ms } => {
                arbitrator::vote(st, origin, &partition, hold_ms)
            }
        };
        if response.status != 0 {
            tracing::debug!(action, ?origin, error = ?response.error, "request failed");
        }
        response.into()
    }

    fn heartbeats(&mut self, batch: Vec<ReceivedHeartbeat>) {
        use std::sync::atomic::Ordering::Relaxed;
        let (mut applied, mut news, mut refused) = (0, 0, 0);
        {
            // One lock for the batch: `daemon status` waits for one batch at most.
            let mut peers = exclusive(&self.state.peers);
            let mut seen_via = lock(&self.state.seen_via);
            for ReceivedHeartbeat {
                nodename,
                heartbeat,
                addr,
                at_ms,
            } in batch
            {
                match crate::state::apply_heartbeat(
                    &mut peers,
                    &mut seen_via,
                    &nodename,
                    heartbeat,
                    addr,
                    at_ms,
                ) {
                    Ok(a) => {
                        applied += 1;
                        news += u64::from(a != crate::hb::Applied::Stale);
                    }
                    // Authenticated but inconsistent: the sender has a bug; its last good
                    // view stays.
                    Err(e) => {
                        refused += 1;
                        tracing::debug!(%addr, "heartbeat refused: {e}");
                    }
                }
            }
        }
        let counters = &self.state.heartbeats;
        counters.applied.fetch_add(applied, Relaxed);
        counters.news.fetch_add(news, Relaxed);
        counters.refused.fetch_add(refused, Relaxed);
    }

    fn tick(&mut self, svcname: &str) {
        service::tick(&mut self.services, &self.state, svcname);
        lock(&self.state.ticks_in_flight).remove(svcname);
    }

    fn after_reply(&mut self) {
        if !self.services.deferred.is_empty() {
            service::run_deferred(&mut self.services, &self.state);
        }
    }
}
