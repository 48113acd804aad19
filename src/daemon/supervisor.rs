//! The supervisor: starts the named threads, restarts one that exits uncleanly (a panic
//! included) with back-off, stops and starts one on request, and reloads `node.conf` when
//! its modification time changes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use sd_notify::NotifyState;
use tokio::sync::watch;

use super::dequeue::Runner;
use super::hb_tx::advertise_maintenance;
use crate::config;
use crate::listener;
use crate::locks::lock;
use crate::state::{DaemonState, SupervisorCmd, ThreadCmdError, ThreadError, ThreadStatus};

pub(crate) const THREADS: [&str; 7] = [
    "listener",
    "resolver",
    "hb.tx",
    "monitor",
    "dequeue",
    "arbitrators",
    "metrics",
];
const TICK: Duration = Duration::from_millis(100);
const CONFIG_POLL: Duration = Duration::from_millis(500);
/// How often forgotten sessions and forgiven blacklist entries are swept.
const SWEEP: Duration = Duration::from_secs(10);
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A thread that ran this long since its last start gets its back-off reset, and its last
/// error dropped from the status (the log keeps it).
const HEALTHY_AFTER: Duration = Duration::from_secs(30);

type ThreadHandle = JoinHandle<Result<(), ThreadError>>;

struct Managed {
    want_running: bool,
    handle: Option<ThreadHandle>,
    stop: Option<watch::Sender<bool>>,
    restarts: u32,
    backoff: Duration,
    restart_at: Option<Instant>,
    started_at: Instant,
    /// Why it last failed, and when (ms since the epoch).
    last_error: Option<(String, u64)>,
}

pub(crate) enum Exit {
    Stop,
    Shutdown,
}

pub(crate) struct Supervisor {
    state: Arc<DaemonState>,
    runner: Arc<Runner>,
    threads: BTreeMap<&'static str, Managed>,
    conf_stamp: Option<(SystemTime, u64)>,
    last_conf_poll: Instant,
    last_sweep: Instant,
    /// Told systemd the daemon is ready (the listener is bound).
    ready_notified: bool,
    watchdog: bool,
}

/// How long a stop waits for monitor ticks in flight to end before it goes on.
const TICKS_DRAIN: Duration = Duration::from_secs(3);

fn conf_stamp(path: &std::path::Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl Supervisor {
    pub(crate) fn new(state: Arc<DaemonState>, runner: Runner) -> Self {
        let conf_stamp = conf_stamp(&state.paths.node_conf());
        Supervisor {
            state,
            runner: Arc::new(runner),
            threads: BTreeMap::new(),
            conf_stamp,
            last_conf_poll: Instant::now(),
            last_sweep: Instant::now(),
            ready_notified: false,
            watchdog: sd_notify::watchdog_enabled(false, &mut 0),
        }
    }

    fn spawn(&self, id: &'static str) -> Result<(ThreadHandle, watch::Sender<bool>), ThreadError> {
        let (tx, rx) = watch::channel(false);
        let builder = std::thread::Builder::new().name(id.to_string());
        let handle = match id {
            "listener" => {
                let shared = self
                    .state
                    .listener
                    .get()
                    .cloned()
                    .ok_or(ThreadError::ListenerNotSetUp)?;
                builder.spawn(move || listener::run(shared, rx).map_err(ThreadError::from))
            }
            "resolver" => {
                let state = self.state.clone();
                builder.spawn(move || {
                    super::resolver::run(&state, &rx);
                    Ok(())
                })
            }
            "hb.tx" => {
                let state = self.state.clone();
                builder.spawn(move || super::hb_tx::run(state, rx))
            }
            "metrics" => {
                let listener = super::metrics::bind(self.state.config().metrics_addr)?;
                let state = self.state.clone();
                builder.spawn(move || {
                    super::metrics::run(&state, listener.as_ref(), &rx);
                    Ok(())
                })
            }
            "monitor" => {
                let state = self.state.clone();
                builder.spawn(move || super::monitor_thread::run(state, rx))
            }
            "arbitrators" => {
                let state = self.state.clone();
                builder.spawn(move || {
                    super::arbitrators::run(&state, &rx);
                    Ok(())
                })
            }
            "dequeue" => {
                let dq = self.state.dequeue.clone();
                let runner = self.runner.clone();
                builder.spawn(move || {
                    super::dequeue::run(&dq, &runner, &rx);
                    Ok(())
                })
            }
            other => return Err(ThreadError::Unknown(other)),
        }
        .map_err(|cause| ThreadError::Spawn { id, cause })?;
        Ok((handle, tx))
    }

    fn start(&mut self, id: &'static str) -> Result<(), ThreadError> {
        let spawned = self.spawn(id);
        let m = self.threads.entry(id).or_insert_with(|| Managed {
            want_running: true,
            handle: None,
            stop: None,
            restarts: 0,
            backoff: BACKOFF_MIN,
            restart_at: None,
            started_at: Instant::now(),
            last_error: None,
        });
        // Wanted even if it cannot start: a reload that fixes its configuration starts it.
        m.want_running = true;
        // A thread that cannot start (metrics on an address in use) shows why in the status.
        let (handle, stop) = spawned
            .inspect_err(|e| m.last_error = Some((e.to_string(), crate::clock::now_ms())))?;
        m.handle = Some(handle);
        m.stop = Some(stop);
        m.restart_at = None;
        m.started_at = Instant::now();
        Ok(())
    }

    /// Signals the thread and waits for it to finish (its sockets are closed by then).
    fn stop(&mut self, id: &str) {
        if let Some(m) = self.threads.get_mut(id) {
            m.want_running = false;
            m.restart_at = None;
            if let Some(s) = m.stop.take() {
                let _ = s.send(true);
            }
            if let Some(h) = m.handle.take() {
                let _ = h.join();
            }
        }
    }

    fn publish(&self) {
        let mut t = crate::locks::lock(&self.state.threads);
        t.clear();
        let conf = self.state.config();
        for (id, m) in &self.threads {
            let state = if m.handle.is_some() && idles(id, &conf) {
                "idle"
            } else if m.handle.is_some() {
                "running"
            } else if m.restart_at.is_some() {
                "restarting"
            } else {
                "stopped"
            };
            t.insert(
                id,
                ThreadStatus {
                    state,
                    restarts: m.restarts,
                    last_error: m.last_error.as_ref().map(|(e, _)| e.clone()),
                    last_error_ms: m.last_error.as_ref().map(|(_, ms)| *ms),
                },
            );
        }
        // The local socket is not restarted: it serves until the process exits, or fails.
        let control_error = lock(&self.state.control_error).clone();
        t.insert(
            "control",
            ThreadStatus {
                state: if control_error.is_some() {
                    "stopped"
                } else {
                    "running"
                },
                restarts: 0,
                last_error: control_error,
                last_error_ms: None,
            },
        );
    }

    /// Runs until asked to stop or shut down.
    pub(crate) fn run(mut self, commands: Receiver<SupervisorCmd>) -> Exit {
        for id in THREADS {
            if let Err(e) = self.start(id) {
                tracing::error!(thread = id, "{e}");
            }
        }
        self.publish();
        loop {
            match commands.recv_timeout(TICK) {
                Ok(cmd) => {
                    if let Some(exit) = self.command(cmd) {
                        return exit;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return self.stop_daemon(None),
            }
            self.notify_systemd();
            self.reap();
            if self.last_conf_poll.elapsed() >= CONFIG_POLL {
                self.last_conf_poll = Instant::now();
                self.watch_config();
            }
            if self.last_sweep.elapsed() >= SWEEP {
                self.last_sweep = Instant::now();
                self.sweep();
            }
            self.publish();
        }
    }

    fn known(id: &str) -> Option<&'static str> {
        THREADS.iter().copied().find(|t| *t == id)
    }

    fn command(&mut self, cmd: SupervisorCmd) -> Option<Exit> {
        match cmd {
            SupervisorCmd::StopThread(id, reply) => {
                let r = match Self::known(&id) {
                    None => Err(unknown_thread(id)),
                    Some(id) if self.threads.get(id).is_some_and(|m| m.handle.is_some()) => {
                        self.stop(id);
                        tracing::info!(thread = id, "thread stopped on request");
                        Ok(format!("thread {id} stopped"))
                    }
                    Some(id) => {
                        self.stop(id);
                        Ok(format!("thread {id} already stopped"))
                    }
                };
                self.publish();
                let _ = reply.send(r);
                None
            }
            SupervisorCmd::StartThread(id, reply) => {
                let r = match Self::known(&id) {
                    None => Err(unknown_thread(id)),
                    Some(id) if self.threads.get(id).is_some_and(|m| m.handle.is_some()) => {
                        Ok(format!("thread {id} already running"))
                    }
                    Some(id) => self
                        .start(id)
                        .map(|()| {
                            tracing::info!(thread = id, "thread started on request");
                            format!("thread {id} started")
                        })
                        .map_err(ThreadCmdError::from),
                };
                self.publish();
                let _ = reply.send(r);
                None
            }
            SupervisorCmd::Stop => Some(self.stop_daemon(None)),
            SupervisorCmd::Shutdown(reply) => Some(self.stop_daemon(Some(reply))),
            SupervisorCmd::Reload => {
                tracing::info!("re-reading node.conf; members' names looked up again");
                self.state.addr_book.refresh();
                self.conf_stamp = None;
                self.watch_config();
                None
            }
        }
    }

    /// The one way the daemon stops, whatever asked: the monitor first (no action from now
    /// on), then with `shutdown` every local instance, then the heartbeats, replaced by the
    /// maintenance notice, then the rest.
    fn stop_daemon(
        &mut self,
        shutdown: Option<std::sync::mpsc::Sender<serde_json::Value>>,
    ) -> Exit {
        let _ = sd_notify::notify(false, &[NotifyState::Stopping]);
        let state = self.state.clone();
        state
            .stopping
            .store(true, std::sync::atomic::Ordering::Release);
        self.stop("monitor");
        let drain = Instant::now();
        while !lock(&state.ticks_in_flight).is_empty() && drain.elapsed() < TICKS_DRAIN {
            std::thread::sleep(Duration::from_millis(20));
        }
        let exit = match shutdown {
            Some(reply) => {
                let report = crate::handlers::service::shutdown_instances(&state);
                tracing::info!(report = %report, "local instances stopped");
                let _ = reply.send(report);
                Exit::Shutdown
            }
            None => Exit::Stop,
        };
        self.stop("hb.tx");
        advertise_maintenance(&state);
        super::arbitrators::advertise_maintenance(&state);
        for id in THREADS {
            self.stop(id);
        }
        self.publish();
        exit
    }

    /// READY once the listener is bound, then the watchdog's keep-alive on every loop.
    fn notify_systemd(&mut self) {
        if !self.ready_notified
            && let Some((backend, addr)) = self.state.listener.get().and_then(|l| l.running())
        {
            self.ready_notified = true;
            let status = format!("listening on {addr} ({backend})");
            let _ = sd_notify::notify(false, &[NotifyState::Ready, NotifyState::Status(&status)]);
        }
        if self.watchdog {
            let _ = sd_notify::notify(false, &[NotifyState::Watchdog]);
        }
    }

    /// Restarts what exited uncleanly, after its back-off.
    fn reap(&mut self) {
        let mut due = Vec::new();
        for (id, m) in self.threads.iter_mut() {
            if m.handle.as_ref().is_some_and(|h| h.is_finished()) {
                let outcome = match m.handle.take().map(JoinHandle::join) {
                    Some(Ok(Ok(()))) if !m.want_running => None,
                    Some(Ok(Ok(()))) => Some("exited unexpectedly".to_string()),
                    Some(Ok(Err(e))) => Some(e.to_string()),
                    Some(Err(panic)) => Some(listener::panic_message(&panic)),
                    None => None,
                };
                m.stop = None;
                if let Some(err) = outcome
                    && m.want_running
                {
                    if m.started_at.elapsed() >= HEALTHY_AFTER {
                        m.backoff = BACKOFF_MIN;
                    }
                    tracing::error!(thread = id, error = %err, backoff_ms = m.backoff.as_millis() as u64, "thread exited uncleanly; restarting");
                    m.last_error = Some((err, crate::clock::now_ms()));
                    m.restart_at = Some(Instant::now() + m.backoff);
                    m.backoff = (m.backoff * 2).min(BACKOFF_MAX);
                }
            }
            if m.handle.is_some() && m.started_at.elapsed() >= HEALTHY_AFTER {
                m.last_error = None;
            }
            if m.handle.is_none()
                && m.want_running
                && m.restart_at.is_some_and(|t| Instant::now() >= t)
            {
                due.push(*id);
            }
        }
        for id in due {
            match self.start(id) {
                Ok(()) => {
                    if let Some(m) = self.threads.get_mut(id) {
                        m.restarts += 1;
                    }
                }
                Err(e) => {
                    tracing::error!(thread = id, "restart failed: {e}");
                    if let Some(m) = self.threads.get_mut(id) {
                        m.restart_at = Some(Instant::now() + m.backoff);
                        m.backoff = (m.backoff * 2).min(BACKOFF_MAX);
                    }
                }
            }
        }
    }

    /// Keeps the guard's tables to what still matters: sessions whose frames could still pass
    /// the freshness check, blacklist entries with a count or a ban.
    fn sweep(&self) {
        let now = crate::clock::now_ms();
        let skew = self.state.config().listener.max_clock_skew_ms;
        let sessions = self.state.guard.replay.expire(now, skew);
        self.state.guard.blacklist.compact(now);
        if sessions > 0 {
            tracing::debug!(sessions, "expired sessions forgotten");
        }
    }

    /// Reloads node.conf when it changed; an invalid file is refused and the running
    /// configuration kept.
    fn watch_config(&mut self) {
        let path = self.state.paths.node_conf();
        let stamp = conf_stamp(&path);
        if stamp == self.conf_stamp {
            return;
        }
        self.conf_stamp = stamp;
        let new = match config::load(&path) {
            Ok((doc, c)) => {
                super::warn_unknown_keywords(&doc, &path);
                c
            }
            Err(e) => {
                tracing::error!(
                    "refusing the new node.conf, keeping the running configuration: {}",
                    config::ErrorChain(&e)
                );
                return;
            }
        };
        let old = self.state.config();
        if *old == new {
            return;
        }
        tracing::info!(path = %path.display(), "node.conf changed; reconfiguring");
        let Some(shared) = self.state.listener.get().cloned() else {
            return;
        };
        *crate::locks::exclusive(&self.state.config) = Arc::new(new.clone());
        // Members' addresses given as IPs apply at once; names go to the resolver.
        self.state.addr_book.sync(&new);
        if old.metrics_addr != new.metrics_addr
            && self.threads.get("metrics").is_some_and(|m| m.want_running)
        {
            self.stop("metrics");
            match self.start("metrics") {
                Ok(()) => tracing::info!(addr = ?new.metrics_addr, "metrics address changed"),
                Err(e) => tracing::error!("{e}"),
            }
        }
        let guard = &self.state.guard;
        guard.blacklist.set_ttl_ms(new.listener.blacklist_ttl_ms);
        guard.join_limit.set_rate(new.listener.join_rate);
        self.state.dequeue.set_timeout_ms(new.dequeue_timeout_ms);
        // Replay windows are forgotten only when no frame of the old keyring can open any
        // more: during a rotation the old secret stays held, and so must its sessions' windows.
        let held = |c: &crate::config::NodeConfig, s: &String| {
            c.cluster.secret == *s || c.cluster.alt_secret.as_ref() == Some(s)
        };
        let keeps_a_secret = held(&new, &old.cluster.secret)
            || old
                .cluster
                .alt_secret
                .as_ref()
                .is_some_and(|s| held(&new, s));
        if !keeps_a_secret || old.cluster.name != new.cluster.name {
            guard.replay.clear();
        }
        let old_l = shared.config.get();
        let new_l = crate::listener::ListenerSettings::from_node(&new);
        let rebind = old_l.addr != new_l.addr
            || old_l.threads != new_l.threads
            || old_l.backend != new_l.backend;
        shared.config.set(new_l);
        let listener_wanted = self.threads.get("listener").is_some_and(|m| m.want_running);
        if rebind && listener_wanted {
            tracing::info!(addr = %shared.config.get().addr, "listener address changed; rebinding");
            self.stop("listener");
            if let Err(e) = self.start("listener") {
                tracing::error!("listener restart failed: {e}");
            }
        }
    }
}

/// A running thread with nothing to do under `conf`: `metrics` without `[metrics] addr`,
/// `arbitrators` without `[arbitrator#N]` (each until a reload gives it work).
fn idles(id: &str, conf: &config::NodeConfig) -> bool {
    match id {
        "metrics" => conf.metrics_addr.is_none(),
        "arbitrators" => conf.arbitrators.is_empty(),
        _ => false,
    }
}

fn unknown_thread(id: String) -> ThreadCmdError {
    ThreadCmdError::Unknown {
        id,
        known: THREADS.join(", "),
    }
}
