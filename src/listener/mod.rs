//! The listener: one worker per core, each with its own UDP socket and TCP listener on
//! `listener.addr:listener.port` (SO_REUSEPORT) and its own single-threaded runtime —
//! io_uring (tokio-uring) or tokio's epoll (`listener.backend`) — for TCP, and
//! a thread of its own that receives its UDP datagrams (`lsnr.N.udp`), blocking in the
//! kernel so that a trickle of heartbeats does not wake it once per datagram. Workers run
//! every frame through `guard::Gate` and act on its `Outcome`.

// Private to the crate; what the load generator and the benches borrow from them is
// re-exported by the hidden `bench_support` module, not part of the listener's API.
mod admission;
pub(crate) mod io;
pub(crate) mod pin;
pub(crate) mod sockets;
pub(crate) mod uring_udp;
mod worker;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;

use crate::config::BackendChoice;
use crate::dispatch::Dispatcher;
use crate::guard::{AtomicGateStats, GateConfig, GateStats, SharedGuard};
use io::Backend as _;

/// What the listener needs of the configuration (swapped whole on reload).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ListenerSettings {
    pub gate: Arc<GateConfig>,
    pub nodename: String,
    pub addr: SocketAddr,
    pub threads: usize,
    pub backend: BackendChoice,
    pub max_frame: u32,
    pub max_unauth_frame: u32,
    pub max_connections: u32,
    pub max_unauth_per_addr: u32,
    pub idle_timeout: Duration,
    pub read_timeout: Duration,
    /// How long UDP datagrams gather after a short receive batch (`listener.udp_gather`).
    pub udp_gather: Duration,
}

impl ListenerSettings {
    /// The listener's view of a node configuration.
    pub(crate) fn from_node(c: &crate::config::NodeConfig) -> ListenerSettings {
        ListenerSettings {
            gate: Arc::new(GateConfig {
                cluster_name: c.cluster.name.clone(),
                secret: c.cluster.secret.clone(),
                alt_secret: c.cluster.alt_secret.clone(),
                members: c.cluster.nodes.iter().cloned().collect(),
                max_clock_skew_ms: c.listener.max_clock_skew_ms,
                accept_joins: c.listener.accept_joins,
                started_ms: crate::clock::process_started_ms(),
            }),
            nodename: c.nodename.clone(),
            addr: SocketAddr::new(c.listener.addr, c.listener.port),
            threads: c.listener.threads,
            backend: c.listener.backend,
            max_frame: c.listener.max_frame,
            max_connections: c.listener.max_connections,
            max_unauth_frame: c.listener.max_unauth_frame,
            max_unauth_per_addr: c.listener.max_unauth_per_addr,
            idle_timeout: Duration::from_millis(c.listener.idle_timeout_ms),
            read_timeout: Duration::from_millis(c.listener.read_timeout_ms),
            udp_gather: Duration::from_millis(c.listener.udp_gather_ms),
        }
    }
}

/// The current config and a generation number workers compare against on each wakeup.
pub(crate) struct ConfigCell {
    current: RwLock<Arc<ListenerSettings>>,
    generation: AtomicU64,
}

impl ConfigCell {
    pub(crate) fn new(c: ListenerSettings) -> Self {
        ConfigCell {
            current: RwLock::new(Arc::new(c)),
            generation: AtomicU64::new(1),
        }
    }
    pub(crate) fn get(&self) -> Arc<ListenerSettings> {
        crate::locks::shared(&self.current).clone()
    }
    pub(crate) fn set(&self, c: ListenerSettings) {
        *crate::locks::exclusive(&self.current) = Arc::new(c);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

/// Counters one worker publishes; only that worker writes them (no contention).
#[derive(Default)]
pub(crate) struct WorkerSlot {
    /// The gate's counters of the worker's runtime (TCP).
    pub gate: AtomicGateStats,
    /// The gate's counters of the worker's UDP receive thread.
    pub udp_gate: AtomicGateStats,
    pub tcp_accepted: AtomicU64,
    pub tcp_refused: AtomicU64,
    /// Connections closed for a frame length out of bounds (0, above `max_frame`, or above
    /// `max_unauth_frame` before a frame authenticated).
    pub tcp_closed_length: AtomicU64,
}

impl WorkerSlot {
    fn snapshot(&self) -> GateStats {
        let mut s = self.gate.load();
        s.add(&self.udp_gate.load());
        s
    }

    /// Where one of the worker's threads publishes `base + stats` (base: what that half held
    /// when the thread started, so totals survive listener restarts).
    fn gate_stats(&self, part: worker::Part) -> &AtomicGateStats {
        match part {
            worker::Part::Runtime => &self.gate,
            worker::Part::UdpReceiver => &self.udp_gate,
        }
    }
}

/// Where a worker reports an empty packet; the daemon coalesces them.
pub(crate) trait DequeueTrigger: Send + Sync + 'static {
    fn trigger(&self);
}

/// Everything the workers share, owned by the daemon and kept across listener restarts.
pub(crate) struct ListenerShared {
    pub config: ConfigCell,
    pub guard: Arc<SharedGuard>,
    pub dispatcher: Dispatcher,
    pub dequeue: Arc<dyn DequeueTrigger>,
    pub slots: RwLock<Vec<Arc<WorkerSlot>>>,
    pub conns: Arc<admission::ConnTable>,
    /// "io_uring" or "epoll" once running; the bound address.
    pub running: RwLock<Option<(&'static str, SocketAddr)>>,
    /// Why that backend runs (`daemon status`: `listener.backend_reason`).
    pub backend_reason: RwLock<Option<String>>,
    /// Test hook: the listener panics once after this many frames (0 = never).
    pub panic_after_frames: AtomicU64,
}

impl ListenerShared {
    pub(crate) fn new(
        config: ListenerSettings,
        guard: Arc<SharedGuard>,
        dispatcher: Dispatcher,
        dequeue: Arc<dyn DequeueTrigger>,
    ) -> Self {
        ListenerShared {
            config: ConfigCell::new(config),
            guard,
            dispatcher,
            dequeue,
            slots: RwLock::new(Vec::new()),
            conns: Arc::default(),
            running: RwLock::new(None),
            backend_reason: RwLock::new(None),
            panic_after_frames: AtomicU64::new(0),
        }
    }

    /// Sum of every worker's counters.
    pub(crate) fn stats(&self) -> GateStats {
        let mut total = GateStats::default();
        for s in crate::locks::shared(&self.slots).iter() {
            total.add(&s.snapshot());
        }
        total
    }

    pub(crate) fn tcp_counts(&self) -> (u64, u64) {
        let slots = crate::locks::shared(&self.slots);
        slots.iter().fold((0, 0), |(a, r), s| {
            (
                a + s.tcp_accepted.load(Ordering::Relaxed),
                r + s.tcp_refused.load(Ordering::Relaxed),
            )
        })
    }

    pub(crate) fn tcp_closed_length(&self) -> u64 {
        let slots = crate::locks::shared(&self.slots);
        slots
            .iter()
            .map(|s| s.tcp_closed_length.load(Ordering::Relaxed))
            .sum()
    }

    pub(crate) fn slots_len(&self) -> usize {
        crate::locks::shared(&self.slots).len()
    }

    pub(crate) fn running(&self) -> Option<(&'static str, SocketAddr)> {
        *crate::locks::shared(&self.running)
    }

    pub(crate) fn backend_reason(&self) -> Option<String> {
        crate::locks::shared(&self.backend_reason).clone()
    }

    fn slot(&self, i: usize) -> Arc<WorkerSlot> {
        let mut slots = crate::locks::exclusive(&self.slots);
        while slots.len() <= i {
            slots.push(Arc::new(WorkerSlot::default()));
        }
        slots[i].clone()
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ListenerError {
    // The I/O error is said in the message and not returned as a source: the supervisor shows
    // this error as one line.
    #[error("cannot bind {addr}: {cause}")]
    Bind {
        addr: SocketAddr,
        cause: std::io::Error,
    },
    #[error("io_uring backend forced by listener.backend but unavailable: {0}")]
    UringUnavailable(std::io::Error),
    #[error("listener worker {0} failed: {1}")]
    Worker(usize, String),
    #[error("cannot start a worker thread: {0}")]
    Spawn(std::io::Error),
}

/// The backend to run and why (for `daemon status`).
pub(crate) struct BackendChosen {
    pub name: &'static str,
    pub reason: String,
}

/// Which backend to run. `auto` takes epoll: with each worker's UDP received on a thread of
/// its own, `recvmmsg` of up to 64 datagrams costs no more CPU per heartbeat than io_uring's
/// multishot receive (the kernel's copy, socket lock and skb free are the same; io_uring adds
/// a completion and a provided buffer per datagram), and less per empty or dropped datagram
/// (benches/LOADGEN.md).
pub(crate) fn choose_backend(choice: BackendChoice) -> Result<BackendChosen, ListenerError> {
    let chosen = |name, reason: &str| BackendChosen {
        name,
        reason: reason.to_string(),
    };
    match choice {
        BackendChoice::Epoll => Ok(chosen(io::Epoll::NAME, "listener.backend = epoll")),
        BackendChoice::IoUring => match io::uring_available() {
            Ok(()) => Ok(chosen(io::Uring::NAME, "listener.backend = io_uring")),
            Err(e) => Err(ListenerError::UringUnavailable(e)),
        },
        BackendChoice::Auto => Ok(chosen(
            io::Epoll::NAME,
            "auto: epoll (recvmmsg measured as cheap per heartbeat as io_uring, cheaper per dropped datagram)",
        )),
    }
}

/// Runs the listener until `stop` turns true. Returns an error when a worker fails (a panic
/// included) so the supervisor restarts the whole unit.
pub(crate) fn run(
    shared: Arc<ListenerShared>,
    stop: watch::Receiver<bool>,
) -> Result<(), ListenerError> {
    let config = shared.config.get();
    let BackendChosen {
        name: backend,
        reason,
    } = choose_backend(config.backend)?;
    *crate::locks::exclusive(&shared.backend_reason) = Some(reason);
    let threads = if config.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        config.threads
    };
    let socks = sockets::bind_all(config.addr, threads).map_err(|cause| ListenerError::Bind {
        addr: config.addr,
        cause,
    })?;
    let bound = socks
        .first()
        .and_then(|(_, t)| t.local_addr().ok())
        .unwrap_or(config.addr);
    *crate::locks::exclusive(&shared.running) = Some((backend, bound));
    tracing::info!(%bound, backend, threads, "listener running");

    // Workers tell each other to stop when one fails.
    let (fail_tx, fail_rx) = watch::channel(false);
    let mut joins = Vec::with_capacity(2 * threads);
    for (i, (udp, tcp)) in socks.into_iter().enumerate() {
        let spawned = if backend == io::Uring::NAME {
            spawn_worker::<io::Uring>(i, threads, &shared, udp, tcp, &stop, &fail_rx)
        } else {
            spawn_worker::<io::Epoll>(i, threads, &shared, udp, tcp, &stop, &fail_rx)
        };
        match spawned {
            Ok(js) => joins.extend(js.into_iter().map(|j| (i, j))),
            Err(e) => {
                let _ = fail_tx.send(true);
                for (_, j) in joins {
                    let _ = j.join();
                }
                return Err(ListenerError::Spawn(e));
            }
        }
    }
    let mut first_error = None;
    // Join in order; a failing thread flags the others so no join waits forever.
    let mut pending = joins;
    while !pending.is_empty() {
        let mut still = Vec::new();
        for (i, j) in pending {
            if j.is_finished() {
                let outcome = match j.join() {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(panic) => Some(panic_message(&panic)),
                };
                if let Some(msg) = outcome {
                    let _ = fail_tx.send(true);
                    first_error.get_or_insert(ListenerError::Worker(i, msg));
                }
            } else {
                still.push((i, j));
            }
        }
        pending = still;
        if !pending.is_empty() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    *crate::locks::exclusive(&shared.running) = None;
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

type WorkerThread = std::thread::JoinHandle<std::io::Result<()>>;

/// Starts worker `i`'s two threads, its runtime (`lsnr.i`) and its UDP receive thread
/// (`lsnr.i.udp`). Only the receive thread is pinned: it keeps its socket's datagrams and
/// its ring on one core. The runtime answers TCP requests, and a request waiting on a core
/// that another thread holds (a kernel thread runs for milliseconds at a time) is answered
/// sooner by a runtime the scheduler may move: `tcp-req` p99 at 10k/s measured 0.52-2.3 ms
/// (median 0.74) unpinned against 0.52-3.0 ms (median 1.7) pinned, eight pairs alternating.
fn spawn_worker<B: io::Backend>(
    i: usize,
    threads: usize,
    shared: &Arc<ListenerShared>,
    udp: std::net::UdpSocket,
    tcp: std::net::TcpListener,
    stop: &watch::Receiver<bool>,
    failed: &watch::Receiver<bool>,
) -> std::io::Result<Vec<WorkerThread>> {
    let slot = shared.slot(i);
    let udp_rx = udp.try_clone()?;
    let (requests_tx, requests_rx) = tokio::sync::mpsc::channel(worker::UDP_REQUESTS_QUEUED);
    let runtime = {
        let (shared, slot, stop, failed) =
            (shared.clone(), slot.clone(), stop.clone(), failed.clone());
        std::thread::Builder::new()
            .name(format!("lsnr.{i}"))
            .spawn(move || {
                let ctx = worker::Worker::new(i, shared, slot, worker::Part::Runtime);
                worker::run_worker::<B>(ctx, udp, requests_rx, tcp, stop, failed)
            })?
    };
    let (shared, stop, failed) = (shared.clone(), stop.clone(), failed.clone());
    let receiver = std::thread::Builder::new()
        .name(format!("lsnr.{i}.udp"))
        .spawn(move || {
            pin::pin_worker(i, threads);
            let ctx = worker::Worker::new(i, shared, slot, worker::Part::UdpReceiver);
            worker::udp_receiver::<B>(ctx, udp_rx, requests_tx, stop, failed)
        });
    match receiver {
        Ok(r) => Ok(vec![runtime, r]),
        Err(e) => Err(e),
    }
}

pub(crate) fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        format!("panicked: {s}")
    } else if let Some(s) = panic.downcast_ref::<String>() {
        format!("panicked: {s}")
    } else {
        "panicked".to_string()
    }
}
