//! `daemon_status`, `daemon_stop`, `daemon_start`, `daemon_shutdown`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::clock::now_ms;
use crate::config::NodeConfig;
use crate::dispatch::{Origin, QuickHandler};
use crate::state::members::{self, Member, MemberState};
use crate::state::metrics::{self, Sample};
use crate::state::{DaemonState, PeerStatus, SupervisorCmd, ThreadReply, lock, shared};
use crate::wire::{Request, Response};

/// What the status says that changes only with the configuration, written once per
/// configuration rather than once per answer.
pub(crate) struct ConfigParts {
    config: Arc<NodeConfig>,
    /// The other members, sorted (`members::other_members`), and each as a JSON string.
    names: Vec<String>,
    quoted: Vec<String>,
    /// Where this node's name falls among `names` (the partition lists it with them).
    self_at: usize,
    /// `,"cluster":…,"keyring":…,"nodename":…`.
    fixed: String,
}

impl ConfigParts {
    fn new(config: Arc<NodeConfig>) -> ConfigParts {
        let names = members::other_members(&config);
        let quoted = names.iter().map(|n| quoted(n)).collect();
        let self_at = names.partition_point(|n| *n < config.nodename);
        let mut fixed = String::from(",\"cluster\":");
        push_json(
            &mut fixed,
            &json!({ "name": config.cluster.name, "nodes": config.cluster.nodes }),
        );
        fixed.push_str(",\"keyring\":");
        push_json(&mut fixed, &super::keyring::fingerprints(&config));
        fixed.push_str(",\"nodename\":");
        push_quoted(&mut fixed, &config.nodename);
        ConfigParts {
            config,
            names,
            quoted,
            self_at,
            fixed,
        }
    }
}

/// Writes the `daemon_status` answers, on the node shard or, while they are cheap, on the
/// caller's thread (`dispatch::QuickHandler`).
pub(crate) struct StatusWriter {
    state: Arc<DaemonState>,
    /// The parts of the configuration in force, written when it changes.
    parts: Mutex<Option<Arc<ConfigParts>>>,
    /// The CPU the last answer cost, ns (`u64::MAX` until the node shard wrote one).
    last_cost_ns: AtomicU64,
    /// The last answer's length, what the next one is given room for.
    last_len: AtomicUsize,
}

/// An answer that cost no more than this is written on the caller's thread: less than the
/// two wakeups of the hop to the node shard (tens of µs each in a VM), and short enough not
/// to hold up the listener worker's datagrams. A large cluster's answer (milliseconds) goes
/// to the node shard.
const QUICK_STATUS_NS: u64 = 100_000;

impl StatusWriter {
    pub(crate) fn new(state: Arc<DaemonState>) -> Self {
        StatusWriter {
            state,
            parts: Mutex::new(None),
            last_cost_ns: AtomicU64::new(u64::MAX),
            last_len: AtomicUsize::new(0),
        }
    }

    pub(crate) fn answer(&self) -> Response {
        let (cpu_at_start, started) = (thread_cpu_ns(), std::time::Instant::now());
        let config = self.state.config();
        let parts = {
            let mut cached = lock(&self.parts);
            match &*cached {
                Some(p) if Arc::ptr_eq(&p.config, &config) => p.clone(),
                _ => cached.insert(Arc::new(ConfigParts::new(config))).clone(),
            }
        };
        let capacity = self.last_len.load(Ordering::Relaxed) + 4096;
        let text = status_text(&self.state, &parts, now_ms(), true, capacity);
        self.last_len.store(text.len(), Ordering::Relaxed);
        let cost = match (cpu_at_start, thread_cpu_ns()) {
            (Some(start), Some(end)) => end.saturating_sub(start),
            _ => u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX),
        };
        self.last_cost_ns.store(cost, Ordering::Relaxed);
        Response::ok_encoded(text)
    }
}

/// CPU time of the calling thread, ns: what an answer costs whatever the scheduler did
/// meanwhile (on a busy machine a wall clock counts the thread's preemptions too).
fn thread_cpu_ns() -> Option<u64> {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which lives on this stack frame.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    let secs = u64::try_from(now.tv_sec).ok()?;
    let nanos = u64::try_from(now.tv_nsec).ok()?;
    (rc == 0).then(|| secs.saturating_mul(1_000_000_000).saturating_add(nanos))
}

impl QuickHandler for StatusWriter {
    fn try_handle(&self, _: &Origin, request: &Request) -> Option<Response> {
        let cheap = self.last_cost_ns.load(Ordering::Relaxed) <= QUICK_STATUS_NS;
        (cheap && matches!(request, Request::DaemonStatus)).then(|| self.answer())
    }
}

/// The status but the peers' content: what `/metrics` is written from too. It is the answer
/// itself read back, so the two cannot differ; its counters come from the metric table
/// (`state::metrics`).
pub(crate) fn status_document(state: &DaemonState, now: u64) -> Map<String, Value> {
    let parts = ConfigParts::new(state.config());
    match serde_json::from_str(&status_text(state, &parts, now, false, 0)) {
        Ok(Value::Object(data)) => data,
        _ => Map::new(),
    }
}

/// The `daemon_status` answer's `data`, written straight as text: at thousands of members a
/// document tree of it would cost several times the writing. Key order is free in JSON: the
/// parts that grow with the cluster come first, written in one pass over the members.
fn status_text(
    state: &DaemonState,
    parts: &ConfigParts,
    now: u64,
    with_peers: bool,
    capacity: usize,
) -> String {
    let config = &*parts.config;
    // Sized from the last answer: measuring the peers' content first would be one more pass
    // over memory, which a large cluster's answer mostly spends on cache misses.
    let mut out = String::with_capacity(capacity);
    let mut members_out = String::with_capacity(parts.names.len() * 96);
    let mut states = Vec::with_capacity(parts.names.len());
    // The members, in `parts.names` order, that count in this node's partition.
    let mut in_partition: Vec<bool> = Vec::with_capacity(parts.names.len());
    out.push('{');
    {
        let peers = shared(&state.peers);
        // One pass: each member's peer is written while its data are in the cache. Peers
        // are members (each found by name in the sorted list) unless the configuration
        // dropped one since: then they are written again, sorted on their own.
        if with_peers {
            out.push_str("\"peers\":{");
        }
        let peers_at = out.len();
        let mut heard_count = 0;
        members::for_each_member(
            config,
            &parts.names,
            &peers,
            &state.addr_book,
            now,
            |i, member, heard| {
                if i > 0 {
                    members_out.push(',');
                }
                member_json(&mut members_out, &parts.quoted[i], &member);
                in_partition.push(heard.is_some_and(|p| {
                    member
                        .state
                        .presence()
                        .is_some_and(|at| crate::state::in_partition(p, at, &config.nodename))
                }));
                if let Some(p) = heard
                    && with_peers
                {
                    if heard_count > 0 {
                        out.push(',');
                    }
                    peer_json(&mut out, &parts.quoted[i], p, member.state, now);
                }
                heard_count += usize::from(heard.is_some());
                states.push(member.state);
            },
        );
        if with_peers {
            if heard_count != peers.len() {
                out.truncate(peers_at);
                let mut sorted: Vec<(&String, &PeerStatus)> = peers.iter().collect();
                sorted.sort_unstable_by_key(|(name, _)| *name);
                for (i, (name, p)) in sorted.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let state = MemberState::of(p.presence(now, config));
                    peer_json(&mut out, &quoted(name), p, state, now);
                }
            }
            out.push_str("},");
        }
    }
    out.push_str("\"members\":{");
    out.push_str(&members_out);
    out.push('}');
    let member_states = members::count_by_state(states);
    let seen = in_partition.iter().filter(|c| **c).count() + 1;
    let partition = || {
        let mut names: Vec<&str> = Vec::with_capacity(seen);
        for (i, (name, counts)) in parts.names.iter().zip(&in_partition).enumerate() {
            if i == parts.self_at {
                names.push(&config.nodename);
            }
            if *counts {
                names.push(name);
            }
        }
        if parts.self_at == parts.names.len() {
            names.push(&config.nodename);
        }
        names
    };
    out.push_str(",\"quorum\":");
    quorum_json(&mut out, state, parts, now, seen, partition);
    out.push_str(&parts.fixed);
    let sample = Sample::take(state, now, member_states);
    let mut data = status_scalars(state, &sample);
    metrics::fill(&mut data, &sample);
    out.push_str(",\"services\":");
    push_json(&mut out, &*lock(&state.services));
    out.push_str(",\"actions\":");
    push_json(&mut out, &*lock(&state.actions));
    let rest = Value::Object(data).to_string();
    if rest.len() > 2 {
        out.push(',');
        out.push_str(&rest[1..]);
    } else {
        out.push('}');
    }
    out
}

/// The status's small parts, and the metric table's values (`metrics::fill`) are written
/// into the same document.
fn status_scalars(state: &DaemonState, sample: &Sample<'_>) -> Map<String, Value> {
    use std::sync::atomic::Ordering::Relaxed;
    let mut data = Map::new();
    if let Some(l) = state.listener.get() {
        let running = l.running();
        let mut listener = Map::new();
        listener.insert("backend".into(), json!(running.map(|r| r.0)));
        listener.insert("backend_reason".into(), json!(l.backend_reason()));
        listener.insert("addr".into(), json!(running.map(|r| r.1.to_string())));
        listener.insert("threads".into(), json!(l.slots_len()));
        data.insert("listener".into(), Value::Object(listener));
    } else {
        data.insert("listener".into(), Value::Object(Map::new()));
    }
    data.insert("started_ms".into(), json!(state.started_ms));
    data.insert("stopping".into(), json!(state.stopping.load(Relaxed)));
    data.insert(
        "orchestration_ready".into(),
        json!(state.orchestration_ready.load(Relaxed)),
    );
    data.insert("pid".into(), json!(std::process::id()));
    data.insert("threads".into(), json!(state.threads()));
    data.insert("shards".into(), json!(state.shards.get()));
    data.insert("blacklist".into(), json!(sample.blacklist));
    data.insert("monitor".into(), json!(*lock(&state.node_monitor)));
    data
}

/// Keys of the status written outside [`status_scalars`]: no metric may land on them.
#[cfg(test)]
const WRITTEN_AS_TEXT: &[&str] = &[
    "members", "peers", "quorum", "cluster", "keyring", "nodename", "services", "actions",
];

/// Whether quorum is on, this node's votes, and whether it holds quorum (and so may start ha
/// services). `partition` lists the `seen` members of this node's partition, sorted.
fn quorum_json<'p>(
    out: &mut String,
    state: &DaemonState,
    parts: &'p ConfigParts,
    now: u64,
    seen: usize,
    partition: impl Fn() -> Vec<&'p str>,
) {
    let config = &*parts.config;
    let grants = lock(&state.arbitrator_grants).clone();
    // A grant counts while every member it was granted for is seen: only arbitrators need
    // the partition as a set.
    let seen_set: std::collections::BTreeSet<String> = if config.arbitrators.is_empty() {
        Default::default()
    } else {
        partition().into_iter().map(String::from).collect()
    };
    let votes = crate::state::votes_of(config, seen, &grants, |g| {
        crate::state::grant_counts(g, &seen_set, now)
    });
    let heard = lock(&state.arbitrator_status).clone();
    let arbitrators: Map<String, Value> = config
        .arbitrators
        .iter()
        .map(|(name, addr)| {
            let grant = grants.get(name);
            let holds = grant.is_some_and(|g| crate::state::grant_counts(g, &seen_set, now));
            (
                name.clone(),
                json!({
                    "addr": addr,
                    "vote_held": holds,
                    "expires_in_ms": grant.map(|g| g.until_ms.saturating_sub(now)),
                    "last_answer": heard.get(name),
                }),
            )
        })
        .collect();
    let _ = write!(
        out,
        "{{\"enabled\":{},\"votes\":{},\"total\":{},\"arbitrator_votes\":{},\"has_quorum\":{},\
         \"split_action\":",
        config.quorum,
        votes.votes,
        votes.total,
        votes.arbitrator_votes,
        votes.has_quorum(),
    );
    push_quoted(out, config.split_action.as_str());
    out.push_str(",\"partition\":[");
    for (i, name) in partition().into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_quoted(out, name);
    }
    out.push_str("],\"arbitrators\":");
    push_json(out, &arbitrators);
    let _ = write!(
        out,
        ",\"serves_as_arbitrator\":{},\"vote_holders\":",
        config.arbitrator_serve
    );
    // On an arbitrator: the members holding its vote, with the ms their grant still runs.
    match config.arbitrator_serve {
        true => push_json(out, &lock(&state.arbitrator_lease).holders(now)),
        false => out.push_str("null"),
    }
    out.push('}');
}

/// One entry of the `members` object.
fn member_json(out: &mut String, quoted_name: &str, m: &Member) {
    out.push_str(quoted_name);
    out.push_str(":{\"state\":\"");
    out.push_str(m.state.as_str());
    out.push_str("\",\"addr\":");
    match &m.addr {
        Some(a) => push_addr(out, a),
        None => out.push_str("null"),
    }
    out.push_str(",\"age_ms\":");
    match m.age_ms {
        Some(age) => push_u64(out, age),
        None => out.push_str("null"),
    }
    out.push_str(",\"beats\":");
    push_u64(out, m.beats);
    if let Some(e) = &m.resolve_error {
        out.push_str(",\"resolve_error\":");
        push_quoted(out, e);
    }
    out.push('}');
}

/// One entry of the `peers` object, written from the peer's raw JSON: a copy of text,
/// nothing parsed (so it is done under the peers' lock, which the heartbeat shard waits for).
fn peer_json(out: &mut String, quoted_name: &str, p: &PeerStatus, state: MemberState, now: u64) {
    out.push_str(quoted_name);
    out.push_str(":{\"status\":\"");
    out.push_str(state.as_str());
    out.push_str("\",\"age_ms\":");
    push_u64(out, now.saturating_sub(p.last_seen_ms));
    out.push_str(",\"addr\":");
    push_addr(out, &p.addr);
    out.push_str(",\"gen\":");
    push_u64(out, p.view.r#gen());
    out.push_str(if p.view.is_synced() {
        ",\"synced\":true,\"monitor\":"
    } else {
        ",\"synced\":false,\"monitor\":"
    });
    out.push_str(p.view.monitor().as_str());
    out.push_str(",\"services\":{");
    for (j, (svc, value)) in p.view.services().iter().enumerate() {
        if j > 0 {
            out.push(',');
        }
        push_quoted(out, svc);
        out.push(':');
        out.push_str(value.as_str());
    }
    out.push_str("}}");
}

/// Appends `n` in decimal (`fmt` costs several times this, and a large status writes a few
/// numbers per member).
fn push_u64(out: &mut String, n: u64) {
    out.push_str(itoa::Buffer::new().format(n));
}

/// Appends `addr` as a JSON string, as serde writes a socket address (its `Display`, which
/// never needs an escape).
fn push_addr(out: &mut String, addr: &std::net::SocketAddr) {
    let _ = write!(out, "\"{addr}\"");
}

/// `s` as a JSON string.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    push_quoted(&mut out, s);
    out
}

/// Appends `s` as a JSON string: as it is between quotes when nothing in it needs an escape
/// (a member's or a service's name), else as serde_json escapes it.
fn push_quoted(out: &mut String, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        push_json(out, s);
    }
}

/// Appends `value` as serde_json writes it.
fn push_json<T: Serialize + ?Sized>(out: &mut String, value: &T) {
    match serde_json::to_string(value) {
        Ok(text) => out.push_str(&text),
        Err(_) => out.push_str("null"),
    }
}

/// Asks the supervisor and waits for its answer.
fn thread_cmd(
    state: &DaemonState,
    make: fn(String, ThreadReply) -> SupervisorCmd,
    thread_id: String,
) -> Response {
    let (tx, rx) = mpsc::channel();
    if !state.send(make(thread_id, tx)) {
        return Response::error("the supervisor is not running");
    }
    match rx.recv_timeout(Duration::from_secs(15)) {
        Ok(Ok(msg)) => Response::ok(json!(msg)),
        Ok(Err(e)) => Response::error(e.to_string()),
        Err(_) => Response::error("the supervisor did not answer in time"),
    }
}

pub(super) fn stop(state: &DaemonState, thread_id: Option<String>) -> Response {
    match thread_id {
        Some(t) => thread_cmd(state, SupervisorCmd::StopThread, t),
        None if state.send(SupervisorCmd::Stop) => Response::ok(json!("daemon stopping")),
        None => Response::error("the supervisor is not running"),
    }
}

pub(super) fn start(state: &DaemonState, thread_id: Option<String>) -> Response {
    match thread_id {
        Some(t) => thread_cmd(state, SupervisorCmd::StartThread, t),
        None => Response::ok(json!("daemon already running")),
    }
}

/// Answers once every local instance was stopped (or failed to), with what happened to each;
/// the daemon then announces maintenance and exits.
pub(super) fn shutdown(state: &DaemonState) -> Response {
    let (tx, rx) = mpsc::channel();
    if !state.send(SupervisorCmd::Shutdown(tx)) {
        return Response::error("the supervisor is not running");
    }
    // Each stop is bounded by its service's timeouts: the supervisor always answers or goes.
    match rx.recv() {
        Ok(report) => Response::ok(report),
        Err(_) => Response::error("the supervisor stopped without a report"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The metric table writes into the document of the small parts: a row placed in a part
    /// written as text would give the answer a key twice.
    #[test]
    fn no_metric_is_written_into_a_part_written_as_text() {
        for m in metrics::table() {
            if matches!(m.read, metrics::Read::Elsewhere) {
                continue;
            }
            let top = m.group.first().copied().unwrap_or(m.key);
            assert!(!WRITTEN_AS_TEXT.contains(&top), "{:?} {}", m.group, m.key);
        }
    }

    #[test]
    fn numbers_and_addresses_are_written_as_serde_json_writes_them() {
        for n in [0, 7, 10, 99, 1_000, u64::from(u32::MAX), u64::MAX] {
            let mut out = String::new();
            push_u64(&mut out, n);
            assert_eq!(out, n.to_string());
        }
        for a in [
            "127.0.0.1:1215",
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "[::1]:80",
        ] {
            let addr: std::net::SocketAddr = a.parse().unwrap();
            let mut out = String::new();
            push_addr(&mut out, &addr);
            assert_eq!(out, serde_json::to_string(&addr).unwrap());
        }
    }

    #[test]
    fn names_are_quoted_as_serde_json_quotes_them() {
        for s in [
            "n1",
            "é-ü",
            "a\"b",
            "back\\slash",
            "tab\there",
            "\u{7f}",
            "",
        ] {
            assert_eq!(quoted(s), serde_json::to_string(s).unwrap(), "{s:?}");
        }
    }
}
