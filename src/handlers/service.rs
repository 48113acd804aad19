//! Service requests, on the shard owning the service: get_service_config, clear,
//! set/get_service_monitor, service_action, service_logs; and the monitor's tick.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::daemon::state::{DaemonState, lock};
use crate::dispatch::{Origin, Reply, StreamReply};
use crate::monitor::exec::run_shell;
use crate::monitor::instance::write_json_atomic;
use crate::monitor::log::{self as svclog, Follower};
use crate::monitor::svcconf::{Orchestrate, config_path};
use crate::monitor::{Instance, Plan, ServiceConfig, ServiceMonitor};
use crate::wire::Response;
use crate::wire::payload::{GlobalExpect, ServiceLocalExpect, ServiceMonitorStatus};

/// The verbs `service_action` may run: svcmgr actions on that service, nothing else.
pub const ACTION_VERBS: &[&str] = &["start", "stop", "restart", "status"];
const DEFAULT_BACKLOG: u64 = 50;
const MAX_BACKLOG: u64 = 100_000;
const RECORDS_PER_CHUNK: usize = 500;

static ACTION_SEQ: AtomicU64 = AtomicU64::new(0);

/// An async action accepted and answered, to run once the reply is sent.
pub struct Deferred {
    pub id: String,
    pub svcname: String,
    pub verb: String,
}

/// The slice of service state one shard owns.
#[derive(Default)]
pub struct ServiceShard {
    monitors: HashMap<String, ServiceMonitor>,
    pub deferred: Vec<Deferred>,
}

fn monitor_path(state: &DaemonState, svcname: &str) -> std::path::PathBuf {
    state.paths.services().join(svcname).join("monitor.json")
}

impl ServiceShard {
    fn monitor<'a>(&'a mut self, state: &DaemonState, svcname: &str) -> &'a mut ServiceMonitor {
        self.monitors.entry(svcname.to_string()).or_insert_with(|| {
            std::fs::read(monitor_path(state, svcname))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default()
        })
    }

    fn persist(&mut self, state: &DaemonState, svcname: &str) {
        let m = self.monitor(state, svcname).clone();
        let path = monitor_path(state, svcname);
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        write_json_atomic(&path, &serde_json::to_value(&m).unwrap_or_default());
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
pub fn load(state: &DaemonState, svcname: &str) -> Result<ServiceConfig, Response> {
    let path = config_path(&state.paths.etc, svcname);
    if !path.is_file() {
        return Err(Response::error(format!("unknown service {svcname}")));
    }
    ServiceConfig::load(&state.paths.etc, svcname, &state.config().nodename)
        .map_err(|e| Response::error(format!("service {svcname}: {e}")))
}

pub fn get_config(state: &DaemonState, svcname: &str) -> Response {
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

pub fn clear(shard: &mut ServiceShard, state: &DaemonState, svcname: &str) -> Response {
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
pub fn set_monitor(
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
        m.global_expect_updated_ms = crate::listener::now_ms();
    }
    if reset_retries {
        m.restarts.clear();
    }
    let now = m.clone();
    shard.persist(state, svcname);
    Response::ok(serde_json::to_value(now).unwrap_or_default())
}

pub fn get_monitor(shard: &mut ServiceShard, state: &DaemonState, svcname: &str) -> Response {
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

/// Runs `svcmgr -s NAME VERB` as the daemon's action executor.
fn run_svcmgr(
    state: &DaemonState,
    cfg: &ServiceConfig,
    verb: &str,
) -> crate::monitor::exec::Outcome {
    let exe = state.bin_dir.join("svcmgr");
    let timeout = cfg
        .resources
        .iter()
        .map(|r| r.timeout)
        .sum::<Duration>()
        .saturating_mul(2)
        + Duration::from_secs(30);
    let root = state
        .root
        .as_ref()
        .map(|r| r.display().to_string())
        .unwrap_or_default();
    let cmd = format!("exec \"$OSVC_SVCMGR\" -s {} {verb}", cfg.name);
    let env = [
        ("OSVC_SVCMGR", exe.to_str().unwrap_or("svcmgr")),
        ("OSVC_ROOT", root.as_str()),
        ("OSVC_DAEMON_ACTION", "1"),
    ];
    let env: Vec<(&str, &str)> = env
        .into_iter()
        .filter(|(k, v)| *k != "OSVC_ROOT" || !v.is_empty())
        .collect();
    run_shell(&cmd, timeout, &env).unwrap_or_else(|e| crate::monitor::exec::Outcome {
        code: Some(127),
        timed_out: false,
        output: format!("cannot run svcmgr: {e}"),
        duration: Duration::ZERO,
    })
}

/// Carries out a service action and moves the monitor as it goes.
pub fn execute(
    shard: &mut ServiceShard,
    state: &DaemonState,
    cfg: &ServiceConfig,
    verb: &str,
) -> Value {
    let name = cfg.name.as_str();
    let (during, ok_expect) = match verb {
        "start" | "restart" => (
            Some(ServiceMonitorStatus::Starting),
            Some(ServiceLocalExpect::Started),
        ),
        "stop" => (
            Some(ServiceMonitorStatus::Stopping),
            Some(ServiceLocalExpect::Unset),
        ),
        _ => (None, None),
    };
    if let Some(s) = during {
        shard.monitor(state, name).status = s;
        shard.persist(state, name);
    }
    let out = run_svcmgr(state, cfg, verb);
    if let Some(expect) = ok_expect {
        let m = shard.monitor(state, name);
        if out.success() {
            m.status = ServiceMonitorStatus::Idle;
            m.local_expect = expect;
        } else {
            m.status = if verb == "stop" {
                ServiceMonitorStatus::StopFailed
            } else {
                ServiceMonitorStatus::StartFailed
            };
        }
        shard.persist(state, name);
    }
    refresh(shard, state, cfg);
    json!({ "code": out.code, "output": out.output, "timed_out": out.timed_out })
}

pub fn action(
    shard: &mut ServiceShard,
    state: &DaemonState,
    svcname: &str,
    command: &crate::wire::Args,
    sync: bool,
) -> Response {
    let cfg = match load(state, svcname) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let mut args = command.iter();
    let verb = match (args.next(), args.next()) {
        (None, _) => return Response::error("service_action: empty command"),
        (Some(v), _) if !ACTION_VERBS.contains(&v) => {
            return Response::error(format!(
                "service_action: unknown action {v:?} (allowed: {})",
                ACTION_VERBS.join(", ")
            ));
        }
        (Some(v), None) => v.to_string(),
        (Some(_), Some(extra)) => {
            return Response::error(format!(
                "service_action: unexpected argument {extra:?}: actions take no options"
            ));
        }
    };
    if sync {
        return Response::ok(execute(shard, state, &cfg, &verb));
    }
    let id = format!(
        "{svcname}.{verb}.{}",
        ACTION_SEQ.fetch_add(1, Ordering::Relaxed) + 1
    );
    lock(&state.actions).insert(
        id.clone(),
        json!({"service": svcname, "action": verb, "started_ms": crate::listener::now_ms()}),
    );
    shard.deferred.push(Deferred {
        id: id.clone(),
        svcname: svcname.to_string(),
        verb,
    });
    Response::ok(json!({ "id": id }))
}

/// Runs the async actions accepted by the last request, now that it was answered.
pub fn run_deferred(shard: &mut ServiceShard, state: &Arc<DaemonState>) {
    for d in std::mem::take(&mut shard.deferred) {
        let outcome = match load(state, &d.svcname) {
            Ok(cfg) => execute(shard, state, &cfg, &d.verb),
            Err(e) => json!({ "error": e.error }),
        };
        tracing::info!(id = %d.id, service = %d.svcname, action = %d.verb, outcome = %outcome, "async service action ended");
        lock(&state.actions).remove(&d.id);
    }
}

/// `service_logs`: this node's records; asked locally, every node of the service's too,
/// merged by time (a node that does not answer is named in a warning record).
pub fn logs(
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
        let Some(addr) = crate::daemon::peer_addr(&c, node) else {
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
        time: crate::listener::now_ms(),
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

/// Checks the resources, publishes the status, and lets the monitor act.
fn refresh(
    shard: &mut ServiceShard,
    state: &DaemonState,
    cfg: &ServiceConfig,
) -> Vec<crate::monitor::ResourceView> {
    let node = state.config().nodename.clone();
    let inst = Instance::new(cfg, &node, &state.paths.services());
    let (views, status) = inst.refresh_status();
    let monitor = serde_json::to_value(shard.monitor(state, &cfg.name).clone()).unwrap_or_default();
    let mut snapshot = status;
    snapshot["monitor"] = monitor;
    snapshot["orchestrate"] = json!(cfg.orchestrate.as_str());
    snapshot["nodes"] = json!(cfg.nodes);
    lock(&state.services).insert(cfg.name.clone(), snapshot);
    views
}

/// The monitor's periodic look at one service.
pub fn tick(shard: &mut ServiceShard, state: &DaemonState, svcname: &str) {
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
    let node_frozen = state.node_frozen.load(Ordering::Acquire);
    let node = state.config().nodename.clone();
    let inst = Instance::new(&cfg, &node, &state.paths.services());
    let avail = crate::monitor::state::instance_status(&views);
    let verb = if cfg.orchestrate == Orchestrate::Ha {
        ha_verb(shard, state, &cfg, avail, node_frozen)
    } else {
        local_verb(shard, state, svcname, avail, node_frozen)
    };
    if let Some(verb) = verb {
        let ge = shard.monitor(state, svcname).global_expect;
        inst.log("info", None, format!("global_expect {ge}: {verb}"));
        execute(shard, state, &cfg, verb);
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
                        "found down while expected started: restart {n}/{}",
                        r.restart
                    ),
                );
                let _ = inst.resource_action(r, "start");
            }
            shard.monitor(state, svcname).end_restart();
            shard.persist(state, svcname);
            refresh(shard, state, &cfg);
        }
        Plan::GiveUp(rid) => {
            shard.monitor(state, svcname).begin(&plan);
            shard.persist(state, svcname);
            let limit = cfg.resource(rid).map_or(0, |r| r.restart);
            inst.log(
                "error",
                Some(rid),
                format!("found down while expected started, {limit} restarts used: start failed, the monitor stops trying"),
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

/// `global_expect` for an `ha` service, from the cluster data: adopt the newest goal set on
/// any node, then start or stop here as the placement rule says.
fn ha_verb(
    shard: &mut ServiceShard,
    state: &DaemonState,
    cfg: &ServiceConfig,
    avail: &str,
    node_frozen: bool,
) -> Option<&'static str> {
    use crate::monitor::orchestrate::{HaAction, NodeView, decide, newest_global};
    let c = state.config();
    let now = crate::listener::now_ms();
    let mut views = Vec::with_capacity(cfg.nodes.len());
    let mut goals = Vec::new();
    {
        let peers = lock(&state.peers);
        for n in &cfg.nodes {
            if *n == c.nodename {
                views.push(NodeView {
                    name: n.clone(),
                    alive: true,
                    frozen: node_frozen,
                    avail: Some(avail.to_string()),
                });
                continue;
            }
            let Some(p) = peers.get(n) else {
                views.push(NodeView {
                    name: n.clone(),
                    alive: false,
                    frozen: false,
                    avail: None,
                });
                continue;
            };
            let maintenance = p.in_maintenance();
            let fresh = now.saturating_sub(p.last_seen_ms) <= c.hb.timeout_ms;
            let svc = p.service(&cfg.name).unwrap_or_default();
            if let Some(ge) = svc["monitor"]["global_expect"]
                .as_str()
                .and_then(GlobalExpect::parse)
            {
                goals.push((
                    ge,
                    svc["monitor"]["global_expect_updated_ms"]
                        .as_u64()
                        .unwrap_or(0),
                ));
            }
            views.push(NodeView {
                name: n.clone(),
                alive: fresh && !maintenance,
                frozen: p.view.monitor().get_str("local_expect").as_deref() == Some("frozen"),
                avail: svc["avail"].as_str().map(str::to_string),
            });
        }
    }
    let m = shard.monitor(state, &cfg.name);
    goals.push((m.global_expect, m.global_expect_updated_ms));
    if let Some((ge, at)) = newest_global(goals)
        && at > m.global_expect_updated_ms
    {
        m.global_expect = ge;
        m.global_expect_updated_ms = at;
        shard.persist(state, &cfg.name);
    }
    let m = shard.monitor(state, &cfg.name);
    if m.failed() {
        return None;
    }
    match decide(&c.nodename, &views, m.global_expect) {
        HaAction::Start => Some("start"),
        HaAction::Stop => Some("stop"),
        HaAction::Nothing => None,
    }
}
