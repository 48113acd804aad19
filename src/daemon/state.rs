//! What the daemon's threads share: configuration, guard state, thread table, peers.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use serde::Serialize;

use super::dequeue::Dequeue;
use crate::config::{NodeConfig, Paths};
use crate::guard::SharedGuard;
use crate::listener::ListenerShared;
use crate::monitor::orchestrate::Presence;

/// A command for the supervisor, with where to send its outcome.
pub enum SupervisorCmd {
    StopThread(String, mpsc::Sender<Result<String, String>>),
    StartThread(String, mpsc::Sender<Result<String, String>>),
    /// Stop the daemon (`daemon stop`, SIGTERM, SIGINT): instances untouched, maintenance
    /// advertised to peers, then exit.
    Stop,
    /// Stop every local instance, answer what stopped and what failed, then stop as above.
    Shutdown(mpsc::Sender<serde_json::Value>),
    /// Re-read node.conf now (SIGHUP), as on a change of its modification time.
    Reload,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ThreadStatus {
    pub state: &'static str,
    pub restarts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

pub type PeerMap = std::collections::HashMap<String, PeerStatus, crate::wire::FastState>;

/// What this node knows of a peer: its heartbeat content, rebuilt from its datagrams.
#[derive(Clone, Debug)]
pub struct PeerStatus {
    pub addr: SocketAddr,
    pub last_seen_ms: u64,
    pub view: crate::hb::HbView,
}

impl PeerStatus {
    /// One of the peer's services, as a document.
    pub fn service(&self, name: &str) -> Option<serde_json::Value> {
        self.view.services().get(name).map(|v| v.to_value())
    }

    pub fn in_maintenance(&self) -> bool {
        self.view.monitor().get_str("status").as_deref() == Some("maintenance")
    }

    /// Up while its heartbeats are fresh; in maintenance after its notice, until
    /// `maintenance_grace_ms` without a heartbeat (a host powered off after its daemon was
    /// stopped must not hold its services forever); otherwise stale.
    pub fn presence(&self, now_ms: u64, config: &NodeConfig) -> Presence {
        let age = now_ms.saturating_sub(self.last_seen_ms);
        if self.in_maintenance() {
            if age <= config.maintenance_grace_ms {
                Presence::Maintenance
            } else {
                Presence::Gone
            }
        } else if age <= config.hb.timeout_ms {
            Presence::Up
        } else {
            Presence::Gone
        }
    }
}

/// How `daemon status` names a peer's presence.
pub fn presence_label(p: Presence) -> &'static str {
    match p {
        Presence::Up => "up",
        Presence::Maintenance => "maintenance",
        Presence::Gone => "stale",
    }
}

pub struct DaemonState {
    pub paths: Paths,
    pub root: Option<PathBuf>,
    pub config: RwLock<Arc<NodeConfig>>,
    pub guard: Arc<SharedGuard>,
    pub dequeue: Arc<Dequeue>,
    pub listener: OnceLock<Arc<ListenerShared>>,
    pub threads: Mutex<BTreeMap<&'static str, ThreadStatus>>,
    pub commands: Mutex<mpsc::Sender<SupervisorCmd>>,
    /// Written by the heartbeat shard (and by join/leave); read by status and orchestration.
    /// Hashed, not sorted: the heartbeat shard looks a peer up per heartbeat (readers that
    /// list peers sort them). Its keys are members' names, from authenticated heartbeats.
    pub peers: Mutex<PeerMap>,
    pub started_ms: u64,
    pub shards: OnceLock<usize>,
    pub dispatcher: OnceLock<crate::dispatch::Dispatcher>,
    /// Where nodemgr and svcmgr are, to run service actions and queued actions.
    pub bin_dir: PathBuf,
    /// The node monitor; written by the node shard, `frozen` read by every shard.
    pub node_monitor: Mutex<NodeMonitor>,
    pub node_frozen: AtomicBool,
    /// Each service's latest status and monitor, published by its shard for `daemon status`
    /// and heartbeats.
    pub services: Mutex<BTreeMap<String, serde_json::Value>>,
    /// Async service actions running, by id, until they end.
    pub actions: Mutex<BTreeMap<String, serde_json::Value>>,
    /// Services whose monitor tick is queued or running: the monitor thread skips them.
    pub ticks_in_flight: Mutex<HashSet<String>>,
    /// Heartbeats taken into peers' views by the heartbeat shard (the listener's `delivered`
    /// counts them before the shard's queue, which may drop some under a flood).
    pub heartbeats: HeartbeatCounters,
    /// Set once the daemon is stopping: the monitor takes no more action.
    pub stopping: AtomicBool,
    /// Set when the maintenance notice goes out: every heartbeat from then on announces it.
    pub maintenance: AtomicBool,
    /// Latched once the daemon has heard every peer since its start, or its rejoin grace
    /// period passed: until then it orchestrates nothing.
    pub orchestration_ready: AtomicBool,
    /// What this node sends in its heartbeats, and the session that seals them: shared by
    /// the `hb.tx` thread and the maintenance notice, so the notice continues the same
    /// generations and counters.
    pub hb_out: Mutex<crate::daemon::hb::HbOut>,
}

#[derive(Default, Debug)]
pub struct HeartbeatCounters {
    /// Applied to a peer's view (news or not).
    pub applied: std::sync::atomic::AtomicU64,
    /// Of those, the ones that changed the view (not older than what it held).
    pub news: std::sync::atomic::AtomicU64,
    /// Refused by the view (a part count that changed within a generation).
    pub refused: std::sync::atomic::AtomicU64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct NodeMonitor {
    pub status: crate::wire::payload::NodeMonitorStatus,
    pub local_expect: crate::wire::payload::NodeLocalExpect,
}

impl Default for NodeMonitor {
    fn default() -> Self {
        NodeMonitor {
            status: crate::wire::payload::NodeMonitorStatus::Idle,
            local_expect: crate::wire::payload::NodeLocalExpect::Thawed,
        }
    }
}

/// `lock()` that carries on past a poisoned mutex: the data are plain values.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl DaemonState {
    pub fn config(&self) -> Arc<NodeConfig> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn send(&self, cmd: SupervisorCmd) -> bool {
        self.commands
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(cmd)
            .is_ok()
    }

    pub fn threads(&self) -> BTreeMap<&'static str, ThreadStatus> {
        self.threads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
