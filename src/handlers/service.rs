//! Service requests, on the shard owning the service: get_service_config, clear,
//! set/get_service_monitor, service_action, service_logs; and the monitor's tick.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::dispatch::{Origin, Reply, StreamReply};
use crate::locks::lock;
use crate::service::config::{Orchestrate, config_path};
use crate::service::exec::{Outcome, run_program};
use crate::service::instance::{ResourceAction, write_json_atomic};
use crate::service::log::{self as svclog, Follower};
use crate::service::orchestrate::{Decision, NodeView, Presence};
use crate::service::{Instance, Plan, ServiceConfig, ServiceMonitor, list_services};
use crate::state::DaemonState;
use crate::wire::Response;
use crate::wire::payload::{GlobalExpect, ServiceLocalExpect, ServiceMonitorStatus};

/// `service_action` commands that move the service's monitor: run on its shard, so actions
/// on one service stay serialized. Any other command runs beside the shard (it may call the
/// daemon back about this very service).
const LIFECYCLE_VERBS: &[&str] = &["start", "stop", "restart"];
/// Instances stopped at once by a shutdown.
const SHUTDOWN_PARALLEL: usize = 64;
const DEFAULT_BACKLOG: u64 = 50;
const MAX_BACKLOG: u64 = 100_000;
const RECORDS_PER_CHUNK: usize = 500;

static ACTION_SEQ: AtomicU64 = AtomicU64::new(0);

/// An async action accepted and answered, to run once the reply is sent.
pub(crate) struct Deferred {
    pub id: String,
    pub svcname: String,
    pub args: Vec<String>,
}

/// The slice of service state one shard owns.
#[derive(Default)]
pub(crate) struct ServiceShard {
    monitors: HashMap<String, ServiceMonitor>,
    pub deferred: Vec<Deferred>,
}

fn monitor_path(state: &DaemonState, svcname: &str) -> std::path::PathBuf {
    state.paths.services().join(svcname).join("monitor.json")
}

/// The service monitor as last persisted.
fn read_monitor(state: &DaemonState, svcname: &str) -> ServiceMonitor {
    std::fs::read(monitor_path(state, svcname))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn write_monitor(state: &DaemonState, svcname: &str, m: &ServiceMonitor) {
    let path = monitor_path(state, svcname);
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    write_json_atomic(&path, &serde_json::to_value(m).unwrap_or_default());
}

impl ServiceShard {
    fn monitor<'a>(&'a mut self, state: &DaemonState, svcname: &str) -> &'a mut ServiceMonitor {
        self.monitors
            .entry(svcname.to_string())
            .or_insert_with(|| read_monitor(state, svcname))
    }

    fn persist(&mut self, state: &DaemonState, svcname: &str) {
        let m = self.monitor(state, svcname).clone();
        write_monitor(state, svcname, &m);
        let mut services = lock(&state.services);
        let entry = services
            .entry(svcname.to_string())
            .or_insert_with(|| json!({}));
        entry["monitor"] = serde_json::to_value(&m).unwrap_or_default();
    }

    fn forget(&mut self, state: &DaemonState, svcname: &str) {
        self.monitors.remove(svcname);
        lock(&state.services).remove(svcname);
    }
}

/// The service's configuration, or the error answer naming what is wrong.
pub(crate) fn load(state: &DaemonState, svcname: &str) -> Result<ServiceConfig, Response> {
    let path = config_path(&state.paths.etc, svcname);
    if !path.is_file() {
        return Err(Response::error(format!(
            "unknown service {svcname} (no {})",
            path.display()
        )));
    }
    ServiceConfig::load(&state.paths.etc, svcname, &state.config().nodename).map_err(|e| {
        Response::error(format!(
            "service {svcname}: {}",
            crate::config::ErrorChain(&e)
        ))
    })
}

pub(crate) fn get_config(state: &DaemonState, svcname: &str) -> Response {
    if let Err(e) = load(state, svcname) {
        // An invalid file can still be shown: only a missing one is an error here.
        if e.error
            .as_deref()
            .is_some_and(|m| m.starts_with("unknown service"))
        {
            return e;
        }
    }
    match std::fs::read_to_string(config_path(&state.paths.etc, svcname)) {
        Ok(text) => Response::ok(json!(text)),
        Err(e) => Response::error(format!(
            "service {svcname}: cannot read its configuration: {e}"
        )),
    }
}

pub(crate) fn clear(shard: &mut ServiceShard, state: &DaemonState, svcname: &str) -> Response {
    let cfg = match load(state, svcname) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let m = shard.monitor(state, svcname);
    let was = m.status;
    m.clear();
    let now = m.clone();
    shard.persist(state, svcname);
    Instance::new(&cfg, &state.config().nodename, &state.paths.services()).log(
        "info",
        None,
        format!(
            "clear: monitor {was} -> {}, restart counts reset",
            now.status
        ),
    );
    Response::ok(serde_json::to_value(now).unwrap_or_default())
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn set_monitor(
    shard: &mut ServiceShard,
    state: &DaemonState,
    svcname: &str,
    status: Option<ServiceMonitorStatus>,
    local_expect: Option<ServiceLocalExpect>,
    global_expect: Option<GlobalExpect>,
    reset_retries: bool,
) -> Response {
    if let Err(e) = load(state, svcname) {
        return e;
    }
    if status.is_none() && local_expect.is_none() && global_expect.is_none() && !reset_retries {
        return Response::error(
            "set_service_monitor: give at least one of status, local_expect, global_expect, reset_retries",
        );
    }
    let m = shard.monitor(state, svcname);
    if let Some(s) = status {
        m.status = s;
    }
    if let Some(le) = local_expect {
        m.local_expect = le;
    }
    if let Some(ge) = global_expect {
        m.global_expect = ge;
        m.global_expect_updated_ms = crate::clock::now_ms();
    }
    if reset_retries {
        m.restarts.clear();
    }
    let now = m.clone();
    shard.persist(state, svcname);
    Response::ok(serde_json::to_value(now).unwrap_or_default())
}

pub(crate) fn get_monitor(
    shard: &mut ServiceShard,
    state: &DaemonState,
    svcname: &str,
) -> Response {
    if let Err(e) = load(state, svcname) {
        return e;
    }
    let m = shard.monitor(state, svcname).clone();
    let mut v = serde_json::to_value(m).unwrap_or_default();
    if let Some(s) = lock(&state.services).get(svcname) {
        v["avail"] = s["avail"].clone();
    }
    Response::ok(v)
}

/// How long a service action may take: every resource's timeout, twice, and a margin.
fn action_timeout(cfg: &ServiceConfig) -> Duration {
    cfg.resources
        .iter()
        .map(|r| r.timeout)
        .sum::<Duration>()
        .saturating_mul(2)
        + Duration::from_secs(30)
}

/// Runs `svcmgr -s NAME ARGS...` (no shell) as the daemon's action executor.
fn run_svcmgr(state: &DaemonState, svcname: &str, timeout: Duration, args: &[String]) -> Outcome {
    let exe = state.bin_dir.join("svcmgr");
    let root = state
        .root
        .as_ref()
        .map(|r| r.display().to_string())
        .unwrap_or_default();
    let mut env = vec![("OSVC_DAEMON_ACTION", "1")];
    if !root.is_empty() {
        env.push(("OSVC_ROOT", root.as_str()));
    }
    let argv = ["-s", svcname]
        .into_iter()
        .map(str::to_string)
        .chain(args.iter().cloned());
    run_program(&exe, argv, timeout, &env).unwrap_or_else(|e| Outcome {
        code: Some(127),
        timed_out: false,
        stdout: String::new(),
        stderr: format!("cannot run {}: {e}", exe.display()),
        duration: Duration::ZERO,
    })
}

/// What a service action answers: its exit code (null when killed) and its output.
fn outcome_json(out: &Outcome) -> Value {
    json!({
        "code": out.code,
        "stdout": out.stdout,
        "stderr": out.stderr,
        "timed_out": out.timed_out,
    })
}

/// Carries out a lifecycle action (`start`, `stop`, `restart` and their options) and moves
/// the monitor as it goes.
pub(crate) fn execute(
    shard: &mut ServiceShard,
    state: &DaemonState,
    cfg: &ServiceConfig,
    args: &[String],
) -> Value {
    let name = cfg.name.as_str();
    let (during, ok_expect) = match args.first().map(String::as_str) {
        Some("start" | "restart") => (
            Some(ServiceMonitorStatus::Starting),
            Some(ServiceLocalExpect::Started),
        ),
        Some("stop") => (
            Some(ServiceMonitorStatus::Stopping),
            Some(ServiceLocalExpect::Unset),
        ),
        _ => (None, None),
    };
    if let Some(s) = during {
        shard.monitor(state, name).status = s;
        shard.persist(state, name);
    }
    let out = run_svcmgr(state, name, action_timeout(cfg), args);
    if let Some(expect) = ok_expect {
        let m = shard.monitor(state, name);
        if out.success() {
            m.status = ServiceMonitorStatus::Idle;
            m.local_expect = expect;
        } else {
            m.status = if expect == ServiceLocalExpect::Unset {
                ServiceMonitorStatus::StopFailed
            } else {
                ServiceMonitorStatus::StartFailed
            };
        }
        shard.persist(state, name);
    }
    refresh(shard, state, cfg);
    outcome_json(&out)
}

fn one_verb(verb: &str) -> Vec<String> {
    vec![verb.to_string()]
}

/// `service_action`: runs `svcmgr -s NAME` with the command's arguments. Sync: answers when it
/// ends, with its exit code and output; async: answers an id at once (listed in `daemon
/// status` until the command ends).
pub(crate) fn action(
    shard: &mut ServiceShard,
    state: &Arc<DaemonState>,
    svcname: &str,
    command: &crate::wire::Args,
    sync: bool,
) -> Reply {
    let cfg = match load(state, svcname) {
        Ok(c) => c,
        Err(e) => return e.into(),
    };
    let args: Vec<String> = command.iter().map(str::to_string).collect();
    let Some(verb) = args.first().cloned() else {
        return Response::error(
            "service_action: empty command: give svcmgr's arguments, e.g. [\"start\"]",
        )
        .into();
    };
    let lifecycle = LIFECYCLE_VERBS.contains(&verb.as_str());
    if sync && lifecycle {
        return Response::ok(execute(shard, state, &cfg, &args)).into();
    }
    let timeout = action_timeout(&cfg);
    if sync {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (state, svcname) = (state.clone(), svcname.to_string());
        let spawned = std::thread::Builder::new()
            .name("service_action".into())
            .spawn(move || {
                let out = run_svcmgr(&state, &svcname, timeout, &args);
                let _ = tx.send(Response::ok(outcome_json(&out)).into());
            });
        return match spawned {
            Ok(_) => Reply::Later(rx),
            Err(e) => Response::error(format!("service_action: cannot start it: {e}")).into(),
        };
    }
    let id = format!(
        "{svcname}.{verb}.{}",
        ACTION_SEQ.fetch_add(1, Ordering::Relaxed) + 1
    );
    lock(&state.actions).insert(
        id.clone(),
        json!({"service": svcname, "action": verb, "command": args, "started_ms": crate::clock::now_ms()}),
    );
    if lifecycle {
        shard.deferred.push(Deferred {
            id: id.clone(),
            svcname: svcname.to_string(),
            args,
        });
    } else {
        let (runner, svc, run_id) = (state.clone(), svcname.to_string(), id.clone());
        let spawned = std::thread::Builder::new()
            .name("service_action".into())
            .spawn(move || {
                let out = run_svcmgr(&runner, &svc, timeout, &args);
                tracing::info!(id = %run_id, service = %svc, code = ?out.code, "async service action ended");
                lock(&runner.actions).remove(&run_id);
            });
        if let Err(e) = spawned {
            lock(&state.actions).remove(&id);
            return Response::error(format!("service_action: cannot start it: {e}")).into();
        }
    }
    Response::ok(json!({ "id": id })).into()
}

/// Runs the async lifecycle actions accepted by the last request, now that it was answered.
pub(crate) fn run_deferred(shard: &mut ServiceShard, state: &Arc<DaemonState>) {
    for d in std::mem::take(&mut shard.deferred) {
        let outcome = match load(state, &d.svcname) {
            Ok(cfg) => execute(shard, state, &cfg, &d.args),
            Err(e) => json!({ "error": e.error }),
        };
        tracing::info!(id = %d.id, service = %d.svcname, outcome = %outcome, "async service action ended");
        lock(&state.actions).remove(&d.id);
    }
}

/// `service_logs`: this node's records; asked locally, every node of the service's too,
/// merged by time (a node that does not answer is named in a warning record).
pub(crate) fn logs(
    state: &DaemonState,
    origin: &Origin,
    svcname: &str,
    backlog: Option<u64>,
    follow: bool,
) -> Reply {
    let cfg = match load(state, svcname) {
        Ok(c) => c,
        Err(e) => return e.into(),
    };
    let n = backlog.unwrap_or(DEFAULT_BACKLOG);
    if n > MAX_BACKLOG {
        return Response::error(format!(
            "service_logs: backlog {n} is above the maximum {MAX_BACKLOG}"
        ))
        .into();
    }
    let path = svclog::log_path(&state.paths.services(), svcname);
    let (mut records, position) = svclog::backlog(&path, n as usize);
    let mut remote = None;
    if *origin == Origin::Local {
        let (peer_records, warnings, rx) = aggregate(state, &cfg, n, follow);
        records.extend(peer_records);
        records.sort_by_key(|r| r.time);
        let skip = records.len().saturating_sub(n as usize);
        records.drain(..skip);
        let mut with_warnings = warnings;
        with_warnings.extend(records);
        records = with_warnings;
        remote = rx;
    }
    let mut chunks: Vec<Response> = records
        .chunks(RECORDS_PER_CHUNK)
        .map(|c| Response::ok(serde_json::to_value(c).unwrap_or_default()))
        .collect();
    if chunks.is_empty() {
        chunks.push(Response::ok(json!([])));
    }
    Reply::Stream(StreamReply {
        chunks,
        follow: follow.then(|| svclog::MergedFollower {
            local: Follower::from(path, position),
            remote,
        }),
    })
}

const PEER_LOGS_TIMEOUT: Duration = Duration::from_secs(3);

/// Asks every other node of the service for its records, in parallel. Returns their backlog,
/// a warning record per node that did not answer, and (following) a channel their new
/// records keep arriving on.
#[allow(clippy::type_complexity)]
fn aggregate(
    state: &DaemonState,
    cfg: &ServiceConfig,
    n: u64,
    follow: bool,
) -> (
    Vec<svclog::Record>,
    Vec<svclog::Record>,
    Option<std::sync::mpsc::Receiver<Vec<svclog::Record>>>,
) {
    let c = state.config();
    let others: Vec<String> = cfg
        .nodes
        .iter()
        .filter(|x| **x != c.nodename)
        .cloned()
        .collect();
    if others.is_empty() {
        return (Vec::new(), Vec::new(), None);
    }
    let identity = crate::client::Identity::of(&c);
    let request = crate::wire::Request::ServiceLogs {
        svcname: cfg.name.clone(),
        backlog: Some(n),
        follow,
    };
    let (backlog_tx, backlog_rx) = std::sync::mpsc::channel();
    let (follow_tx, follow_rx) = std::sync::mpsc::channel::<Vec<svclog::Record>>();
    for node in &others {
        let Some(addr) = c.peer_addr(node) else {
            let _ = backlog_tx.send((node.clone(), Err("cannot resolve its address".to_string())));
            continue;
        };
        let target = crate::client::Target::Peer {
            addr,
            identity: identity.clone(),
        };
        let (node, request, backlog_tx, follow_tx) = (
            node.clone(),
            request.clone(),
            backlog_tx.clone(),
            follow_tx.clone(),
        );
        std::thread::spawn(move || {
            let mut first: Option<Vec<svclog::Record>> = Some(Vec::new());
            let r = crate::client::stream(
                &target,
                &request,
                PEER_LOGS_TIMEOUT.max(Duration::from_secs(10)),
                |chunk| {
                    if chunk.status != 0 {
                        return false;
                    }
                    let recs: Vec<svclog::Record> = chunk
                        .data
                        .and_then(|d| serde_json::from_value(d).ok())
                        .unwrap_or_default();
                    match first.as_mut() {
                        // The backlog comes first; with follow, the first chunk ends it.
                        Some(acc) => {
                            acc.extend(recs);
                            if follow || chunk.eos {
                                let _ = backlog_tx
                                    .send((node.clone(), Ok(first.take().unwrap_or_default())));
                            }
                            true
                        }
                        None => follow_tx.send(recs).is_ok(),
                    }
                },
            );
            if let (Some(_), Err(e)) = (first.as_ref(), r) {
                let _ = backlog_tx.send((node.clone(), Err(e.to_string())));
            }
        });
    }
    drop(backlog_tx);
    let deadline = std::time::Instant::now() + PEER_LOGS_TIMEOUT;
    let mut records = Vec::new();
    let mut answered = std::collections::BTreeSet::new();
    let mut warnings = Vec::new();
    let warn = |node: &str, why: &str| svclog::Record {
        time: crate::clock::now_ms(),
        level: "warn".into(),
        node: c.nodename.clone(),
        service: cfg.name.clone(),
        resource: None,
        message: format!("node {node} did not answer: {why}"),
    };
    while answered.len() < others.len() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match backlog_rx.recv_timeout(left) {
            Ok((node, Ok(recs))) => {
                answered.insert(node);
                records.extend(recs);
            }
            Ok((node, Err(e))) => {
                warnings.push(warn(&node, &e));
                answered.insert(node);
            }
            Err(_) => break,
        }
    }
    for node in others.iter().filter(|n| !answered.contains(*n)) {
        warnings.push(warn(node, "timed out"));
    }
    (records, warnings, follow.then_some(follow_rx))
}

/// The status a service publishes (for `daemon status` and heartbeats): its instance status,
/// its monitor, how it is orchestrated and on which nodes.
fn snapshot(cfg: &ServiceConfig, status: Value, monitor: &ServiceMonitor) -> Value {
    let mut snapshot = status;
    snapshot["monitor"] = serde_json::to_value(monitor).unwrap_or_default();
    snapshot["orchestrate"] = json!(cfg.orchestrate.as_str());
    snapshot["nodes"] = json!(cfg.nodes);
    snapshot
}

/// Checks the resources and publishes the status.
fn refresh(
    shard: &mut ServiceShard,
    state: &DaemonState,
    cfg: &ServiceConfig,
) -> Vec<crate::service::ResourceView> {
    let node = state.config().nodename.clone();
    let inst = Instance::new(cfg, &node, &state.paths.services());
    let (views, status) = inst.refresh_status();
    let monitor = shard.monitor(state, &cfg.name).clone();
    lock(&state.services).insert(cfg.name.clone(), snapshot(cfg, status, &monitor));
    views
}

/// Runs `work` on every item with at most `parallel` threads, results in the items' order.
fn in_parallel<T: Sync, R: Send>(
    items: &[T],
    parallel: usize,
    work: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::with_capacity(items.len()));
    std::thread::scope(|s| {
        for _ in 0..parallel.min(items.len()) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    let r = work(item);
                    lock(&results).push((i, r));
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// At the daemon's start, before its first heartbeat: checks every configured service and
/// publishes what runs here, so peers never see this node without the instances it runs.
/// Returns how many services were checked.
pub(crate) fn census(state: &DaemonState) -> usize {
    let names = list_services(&state.paths.etc);
    let node = state.config().nodename.clone();
    in_parallel(&names, SHUTDOWN_PARALLEL, |name| {
        let Ok(cfg) = load(state, name) else { return };
        let inst = Instance::new(&cfg, &node, &state.paths.services());
        let (_, status) = inst.refresh_status();
        let mut monitor = read_monitor(state, name);
        let before = monitor.status;
        monitor.settle();
        if monitor.status != before {
            write_monitor(state, name, &monitor);
        }
        lock(&state.services).insert(name.clone(), snapshot(&cfg, status, &monitor));
    });
    names.len()
}

/// `daemon shutdown`: stops every local instance not found down, in parallel, each bounded by
/// its service's timeouts; leaves each monitor not expecting it started; publishes the new
/// status. Returns what stopped and what failed.
pub(crate) fn shutdown_instances(state: &DaemonState) -> Value {
    let names = list_services(&state.paths.etc);
    let node = state.config().nodename.clone();
    let outcomes = in_parallel(&names, SHUTDOWN_PARALLEL, |name| {
        let cfg = load(state, name).map_err(|e| e.error.unwrap_or_default())?;
        let avail = lock(&state.services)
            .get(name)
            .and_then(|s| s["avail"].as_str().map(str::to_string));
        if avail.as_deref() == Some("down") {
            return Ok(false);
        }
        let out = run_svcmgr(state, name, action_timeout(&cfg), &one_verb("stop"));
        let mut m = read_monitor(state, name);
        m.local_expect = ServiceLocalExpect::Unset;
        m.status = if out.success() {
            ServiceMonitorStatus::Idle
        } else {
            ServiceMonitorStatus::StopFailed
        };
        write_monitor(state, name, &m);
        let inst = Instance::new(&cfg, &node, &state.paths.services());
        let (_, status) = inst.refresh_status();
        lock(&state.services).insert(name.clone(), snapshot(&cfg, status, &m));
        if out.success() {
            Ok(true)
        } else if out.timed_out {
            Err("stop timed out".to_string())
        } else {
            let detail = out.output();
            Err(format!(
                "stop exited with code {}{}{}",
                out.code.unwrap_or(-1),
                if detail.is_empty() { "" } else { ": " },
                detail
            ))
        }
    });
    let (mut stopped, mut not_running, mut failed) = (Vec::new(), Vec::new(), Map::new());
    for (name, outcome) in names.iter().zip(outcomes) {
        match outcome {
            Ok(true) => stopped.push(name.clone()),
            Ok(false) => not_running.push(name.clone()),
            Err(e) => {
                tracing::error!(service = %name, error = %e, "shutdown: the instance did not stop");
                failed.insert(name.clone(), json!(e));
            }
        }
    }
    json!({ "stopped": stopped, "not_running": not_running, "failed": failed })
}

/// The monitor's periodic look at one service: check and publish it, then (unless the
/// daemon is stopping) let the orchestration and the monitor act.
pub(crate) fn tick(shard: &mut ServiceShard, state: &DaemonState, svcname: &str) {
    let cfg = match load(state, svcname) {
        Ok(c) => c,
        Err(_) if !config_path(&state.paths.etc, svcname).exists() => {
            shard.forget(state, svcname);
            return;
        }
        Err(e) => {
            tracing::warn!(service = svcname, error = ?e.error, "monitor skips a service it cannot load");
            return;
        }
    };
    let views = refresh(shard, state, &cfg);
    if state.stopping.load(Ordering::Acquire) {
        return;
    }
    let node_frozen = state.node_frozen.load(Ordering::Acquire);
    let node = state.config().nodename.clone();
    let inst = Instance::new(&cfg, &node, &state.paths.services());
    let avail = crate::service::monitor::instance_status(&views);
    let (verb, may_restart) = if cfg.orchestrate == Orchestrate::Ha {
        ha_verb(shard, state, &cfg, &inst, avail, node_frozen)
    } else {
        (local_verb(shard, state, svcname, avail, node_frozen), true)
    };
    if let Some(verb) = verb {
        let ge = shard.monitor(state, svcname).global_expect;
        inst.log("info", None, format!("global_expect {ge}: {verb}"));
        execute(shard, state, &cfg, &one_verb(verb));
        return;
    }
    if !may_restart {
        return;
    }
    let plan = shard.monitor(state, svcname).plan(node_frozen, &views);
    match &plan {
        Plan::Nothing => {}
        Plan::Restart(rid) => {
            let m = shard.monitor(state, svcname);
            m.begin(&plan);
            let n = m.restarts.get(rid).copied().unwrap_or(0);
            shard.persist(state, svcname);
            if let Some(r) = cfg.resource(rid) {
                inst.log(
                    "warn",
                    Some(rid),
                    format!(
                        "found down while expected started: start attempt {n}/{}",
                        r.restart + 1
                    ),
                );
                let _ = inst.resource_action(r, ResourceAction::Start);
            }
            shard.monitor(state, svcname).end_restart();
            shard.persist(state, svcname);
            refresh(shard, state, &cfg);
        }
        Plan::GiveUp(rid) => {
            shard.monitor(state, svcname).begin(&plan);
            shard.persist(state, svcname);
            let attempts = cfg.resource(rid).map_or(1, |r| r.restart + 1);
            inst.log(
                "error",
                Some(rid),
                format!("found down while expected started, {attempts} start attempts used: start failed, the monitor stops trying"),
            );
            refresh(shard, state, &cfg);
        }
    }
}

/// `global_expect` for a service run on this node only: act, then forget the goal.
fn local_verb(
    shard: &mut ServiceShard,
    state: &DaemonState,
    svcname: &str,
    avail: &str,
    node_frozen: bool,
) -> Option<&'static str> {
    let m = shard.monitor(state, svcname).clone();
    if node_frozen || m.failed() {
        return None;
    }
    let verb = match m.global_expect {
        GlobalExpect::Started if avail != "up" => Some("start"),
        GlobalExpect::Stopped if avail == "up" || avail == "warn" => Some("stop"),
        _ => None,
    };
    if verb.is_none()
        && matches!(
            m.global_expect,
            GlobalExpect::Started | GlobalExpect::Stopped
        )
    {
        shard.monitor(state, svcname).global_expect = GlobalExpect::Unset;
        shard.persist(state, svcname);
    }
    verb
}

/// True once the daemon has heard every other member since it started (a full snapshot from
/// each), or its rejoin grace period has passed: before that it does not know what runs where.
fn orchestration_ready(
    state: &DaemonState,
    c: &crate::config::NodeConfig,
    peers: &crate::state::PeerMap,
    now: u64,
) -> bool {
    if state.orchestration_ready.load(Ordering::Acquire) {
        return true;
    }
    let missing: Vec<&str> = c
        .cluster
        .nodes
        .iter()
        .filter(|n| **n != c.nodename)
        .filter(|n| peers.get(*n).is_none_or(|p| p.view.base_gen() == 0))
        .map(String::as_str)
        .collect();
    let waited = now.saturating_sub(state.started_ms);
    if !missing.is_empty() && waited < c.rejoin_grace_ms {
        return false;
    }
    if !state.orchestration_ready.swap(true, Ordering::AcqRel) {
        if missing.is_empty() {
            tracing::info!(waited_ms = waited, "every peer heard: orchestration starts");
        } else {
            tracing::warn!(
                waited_ms = waited,
                not_heard = ?missing,
                "rejoin grace period passed without hearing every peer: orchestration starts"
            );
        }
    }
    true
}

/// `global_expect` for an `ha` service, from the cluster data: adopt the newest goal set on
/// any node, then decide and step as `orchestrate` says. Returns the action to run here, and
/// whether the monitor may restart a resource found down.
fn ha_verb(
    shard: &mut ServiceShard,
    state: &DaemonState,
    cfg: &ServiceConfig,
    inst: &Instance<'_>,
    avail: &str,
    node_frozen: bool,
) -> (Option<&'static str>, bool) {
    use crate::service::orchestrate::{self, Policy, Step};
    let c = state.config();
    let now = crate::clock::now_ms();
    let mut views = Vec::with_capacity(cfg.nodes.len());
    let mut goals = Vec::new();
    let ready;
    let votes;
    // Every peer of the service that is up has been heard from since this node went `ready`
    // plus one heartbeat interval: what it decided before it saw our `ready` is known.
    let mut confirmed = true;
    let ready_since = shard.monitor(state, &cfg.name).ready_since_ms;
    {
        let peers = crate::locks::shared(&state.peers);
        let seen_via = lock(&state.seen_via);
        let gone_for = |name: &str| crate::state::gone_for_ms(name, &peers, &seen_via, &c, now);
        ready = orchestration_ready(state, &c, &peers, now);
        votes = crate::state::votes(&c, &peers, &lock(&state.arbitrator_grants), now);
        for n in &cfg.nodes {
            if *n == c.nodename {
                let m = shard.monitor(state, &cfg.name);
                views.push(NodeView::local(n, node_frozen, avail, m));
                continue;
            }
            let Some(p) = peers.get(n) else {
                views.push(NodeView::unheard(n, gone_for(n)));
                continue;
            };
            let svc = p.service(&cfg.name);
            if let Some(ge) = svc
                .as_ref()
                .and_then(|s| s["monitor"]["global_expect"].as_str())
                .and_then(GlobalExpect::parse)
            {
                let at = svc
                    .as_ref()
                    .and_then(|s| s["monitor"]["global_expect_updated_ms"].as_u64())
                    .unwrap_or(0);
                goals.push((ge, at));
            }
            let presence = p.presence(now, &c);
            if presence == Presence::Up
                && p.last_seen_ms < ready_since.saturating_add(c.hb.interval_ms)
            {
                confirmed = false;
            }
            let frozen = p.view.monitor().get_str("local_expect").as_deref() == Some("frozen");
            views.push(NodeView::peer(
                n,
                presence,
                frozen,
                svc.as_ref(),
                gone_for(n),
            ));
        }
    }
    let m = shard.monitor(state, &cfg.name);
    goals.push((m.global_expect, m.global_expect_updated_ms));
    if let Some((ge, at)) = orchestrate::newest_global(goals)
        && at > m.global_expect_updated_ms
    {
        m.global_expect = ge;
        m.global_expect_updated_ms = at;
        shard.persist(state, &cfg.name);
    }
    let global = shard.monitor(state, &cfg.name).global_expect;
    let policy = Policy {
        quorum: c.quorum.then_some(votes.has_quorum()),
        quorum_held_ms: state.quorum_held_ms(votes.has_quorum(), now),
        takeover_wait_ms: c.takeover_wait_ms(
            cfg.resources
                .iter()
                .map(|r| r.timeout)
                .sum::<Duration>()
                .as_millis() as u64,
        ),
    };
    let d = orchestrate::decide(&c.nodename, &views, global, ready, policy);
    publish_decision(state, &cfg.name, &d);
    let m = shard.monitor(state, &cfg.name);
    match orchestrate::step(&d, m, orchestrate::running(Some(avail)), confirmed) {
        Step::GoReady => {
            m.status = ServiceMonitorStatus::Ready;
            m.ready_since_ms = now;
            shard.persist(state, &cfg.name);
            inst.log(
                "info",
                None,
                "elected to start: ready, waiting for every peer to confirm",
            );
            (None, false)
        }
        Step::Start => (Some("start"), false),
        Step::DropClaim => {
            m.status = ServiceMonitorStatus::Idle;
            m.local_expect = ServiceLocalExpect::Unset;
            shard.persist(state, &cfg.name);
            inst.log(
                "info",
                None,
                format!("no longer expected here: {}", d.reason),
            );
            (None, false)
        }
        Step::AbortReady => {
            m.status = ServiceMonitorStatus::Idle;
            shard.persist(state, &cfg.name);
            inst.log("info", None, format!("no longer starting it: {}", d.reason));
            (None, false)
        }
        Step::Stop => {
            if let Some(holders) = &d.duplicate {
                tracing::error!(
                    service = %cfg.name,
                    holders = ?holders,
                    keeper = ?d.leader,
                    "failover service found running on several nodes: stopping it here"
                );
                inst.log(
                    "error",
                    None,
                    format!(
                        "found running on several nodes ({}): stopping it here, {} keeps it",
                        holders.join(", "),
                        d.leader.as_deref().unwrap_or("?")
                    ),
                );
            }
            (Some("stop"), false)
        }
        Step::Split => split_action(state, &c, inst, &votes),
        Step::Idle { may_restart } => (None, may_restart),
    }
}

/// Quorum lost while this node holds the service: `stop` it, keep it `freeze`d (no action at
/// all), or `crash` the node so that the side with quorum can take over at once.
fn split_action(
    state: &DaemonState,
    c: &crate::config::NodeConfig,
    inst: &Instance<'_>,
    votes: &crate::state::Votes,
) -> (Option<&'static str>, bool) {
    use crate::config::SplitAction;
    let why = format!(
        "quorum lost ({} of {} votes): split action {}",
        votes.votes,
        votes.total,
        c.split_action.as_str()
    );
    match c.split_action {
        SplitAction::Stop => {
            tracing::error!(service = %inst.config.name, "{why}");
            inst.log("error", None, why);
            (Some("stop"), false)
        }
        SplitAction::Freeze => (None, false),
        SplitAction::Crash => {
            tracing::error!(service = %inst.config.name, "{why}");
            inst.log("error", None, why);
            crash_node(&state.paths);
            (None, false)
        }
    }
}

/// The `crash` split action: an immediate reboot through sysrq, so that the side with quorum
/// takes over from a node that is certainly down. With `OSVC_SPLIT_CRASH_DRY_RUN` set (tests),
/// only `<var>/split_crash` is written.
fn crash_node(paths: &crate::config::Paths) {
    let marker = paths.var.join("split_crash");
    if std::env::var_os("OSVC_SPLIT_CRASH_DRY_RUN").is_some() {
        let _ = std::fs::write(&marker, crate::clock::now_ms().to_string());
        tracing::error!(marker = %marker.display(), "split action crash (dry run): the node would reboot now");
        return;
    }
    tracing::error!("split action crash: rebooting through sysrq");
    // 'b': reboot at once, without syncing or unmounting: the point is to be down now.
    if let Err(e) = std::fs::write("/proc/sysrq-trigger", b"b") {
        tracing::error!("split action crash failed: cannot write /proc/sysrq-trigger: {e}");
    }
}

/// Shows in `daemon status` who runs an `ha` service and why this node does what it does.
fn publish_decision(state: &DaemonState, svcname: &str, d: &Decision) {
    if let Some(s) = lock(&state.services).get_mut(svcname) {
        s["ha"] = json!({ "leader": d.leader, "reason": d.reason });
    }
}
