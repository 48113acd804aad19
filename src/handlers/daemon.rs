//! `daemon_status`, `daemon_stop`, `daemon_start`, `daemon_shutdown`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, mpsc};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::clock::now_ms;
use crate::config::NodeConfig;
use crate::dispatch::{Origin, QuickHandler};
use crate::locks::{exclusive, lock, shared};
use crate::state::members::{self, Member, MemberState};
use crate::state::metrics::{self, Sample};
use crate::state::{DaemonState, PeerStatus, SupervisorCmd, ThreadReply, ThreadStatus};
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
    /// The parts of the configuration in force, written when it changes (read-locked:
    /// listener workers answer at once).
    parts: RwLock<Option<Arc<ConfigParts>>>,
    /// The CPU the last measured answer cost, ns, or a bound of it (`u64::MAX` until the
    /// node shard wrote one).
    last_cost_ns: AtomicU64,
    /// Whether the next answer is measured in the thread's CPU time (see [`judge`]).
    measure_cpu: AtomicBool,
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
            parts: RwLock::new(None),
            last_cost_ns: AtomicU64::new(u64::MAX),
            measure_cpu: AtomicBool::new(false),
            last_len: AtomicUsize::new(0),
        }
    }

    pub(crate) fn answer(&self) -> Response {
        let measure_cpu = self.measure_cpu.load(Ordering::Relaxed);
        let cpu_at_start = if measure_cpu { thread_cpu_ns() } else { None };
        let started = std::time::Instant::now();
        let config = self.state.config();
        let cached = shared(&self.parts)
            .as_ref()
            .filter(|p| Arc::ptr_eq(&p.config, &config))
            .cloned();
        let parts = cached.unwrap_or_else(|| {
            let parts = Arc::new(ConfigParts::new(config));
            *exclusive(&self.parts) = Some(parts.clone());
            parts
        });
        let capacity = self.last_len.load(Ordering::Relaxed) + 4096;
        let text = status_text(&self.state, &parts, now_ms(), true, capacity);
        self.last_len.store(text.len(), Ordering::Relaxed);
        let wall_ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let measured = match cpu_at_start {
            Some(start) => match thread_cpu_ns() {
                Some(end) => Measure::Cpu(end.saturating_sub(start)),
                None => Measure::Cpu(wall_ns),
            },
            // Asked for but unavailable: the wall clock, as a CPU time, is all there is.
            None if measure_cpu => Measure::Cpu(wall_ns),
            None => Measure::Wall(wall_ns),
        };
        let verdict = judge(measured);
        if let Some(cost) = verdict.cost_ns {
            self.last_cost_ns.store(cost, Ordering::Relaxed);
        }
        self.measure_cpu
            .store(verdict.measure_cpu_next, Ordering::Relaxed);
        Response::ok_encoded(text)
    }
}

/// How an answer's cost was measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Measure {
    /// Wall time, ns: a cheap clock (vDSO), and a bound of the CPU time (it also counts the
    /// thread's preemptions).
    Wall(u64),
    /// The thread's CPU time, ns: a system call at each end.
    Cpu(u64),
}

#[derive(Debug, PartialEq, Eq)]
struct Verdict {
    /// The cost the next answer is judged by (None: keep the last one).
    cost_ns: Option<u64>,
    measure_cpu_next: bool,
}

/// What an answer's measure says. Under [`QUICK_STATUS_NS`] by the wall clock, it is under
/// in CPU too; over it, the thread may only have been preempted, so the verdict stands and
/// the next answer is measured in CPU time, which tells the two apart. An answer that costs
/// more CPU is measured in CPU while it does (it runs on the node shard: milliseconds, so
/// the two system calls do not count).
fn judge(measured: Measure) -> Verdict {
    match measured {
        Measure::Wall(ns) if ns <= QUICK_STATUS_NS => Verdict {
            cost_ns: Some(ns),
            measure_cpu_next: false,
        },
        Measure::Wall(_) => Verdict {
            cost_ns: None,
            measure_cpu_next: true,
        },
        Measure::Cpu(ns) => Verdict {
            cost_ns: Some(ns),
            measure_cpu_next: ns > QUICK_STATUS_NS,
        },
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
    out.push_str(",\"services\":");
    push_json(&mut out, &*lock(&state.services));
    out.push_str(",\"actions\":");
    push_json(&mut out, &*lock(&state.actions));
    small_parts_json(&mut out, state, &sample);
    out.push('}');
    out
}

/// A value of the status's small parts that the daemon writes itself (the others are the
/// metric table's rows).
#[derive(Clone, Copy, Debug)]
enum Own {
    Backend,
    BackendReason,
    ListenerAddr,
    ListenerThreads,
    StartedMs,
    Stopping,
    OrchestrationReady,
    Pid,
    Threads,
    Shards,
    Blacklist,
    Monitor,
}

const LISTENER: &[&str] = &["listener"];
const TOP: &[&str] = &[];

impl Own {
    const ALL: [Own; 12] = [
        Own::Backend,
        Own::BackendReason,
        Own::ListenerAddr,
        Own::ListenerThreads,
        Own::StartedMs,
        Own::Stopping,
        Own::OrchestrationReady,
        Own::Pid,
        Own::Threads,
        Own::Shards,
        Own::Blacklist,
        Own::Monitor,
    ];

    /// The objects it is in, and its key.
    fn place(self) -> (&'static [&'static str], &'static str) {
        match self {
            Own::Backend => (LISTENER, "backend"),
            Own::BackendReason => (LISTENER, "backend_reason"),
            Own::ListenerAddr => (LISTENER, "addr"),
            Own::ListenerThreads => (LISTENER, "threads"),
            Own::StartedMs => (TOP, "started_ms"),
            Own::Stopping => (TOP, "stopping"),
            Own::OrchestrationReady => (TOP, "orchestration_ready"),
            Own::Pid => (TOP, "pid"),
            Own::Threads => (TOP, "threads"),
            Own::Shards => (TOP, "shards"),
            Own::Blacklist => (TOP, "blacklist"),
            Own::Monitor => (TOP, "monitor"),
        }
    }
}

/// One key of the status's small parts.
#[derive(Clone, Copy)]
enum SmallPart {
    Own(Own),
    Row(metrics::Metric),
}

impl SmallPart {
    fn place(&self) -> (&'static [&'static str], &'static str) {
        match self {
            SmallPart::Own(o) => o.place(),
            SmallPart::Row(m) => (m.group, m.key),
        }
    }
}

/// The small parts (the daemon's own values, then the metric table's rows) in the order
/// they are written: sorted by the objects they are in (stable), so that each object is
/// written in one piece and each nested object within its parent.
fn small_parts() -> &'static [SmallPart] {
    static LAYOUT: std::sync::OnceLock<Vec<SmallPart>> = std::sync::OnceLock::new();
    LAYOUT.get_or_init(|| {
        let mut parts: Vec<SmallPart> = Own::ALL.into_iter().map(SmallPart::Own).collect();
        parts.extend(
            metrics::table()
                .filter(|m| !matches!(m.read, metrics::Read::Elsewhere))
                .map(SmallPart::Row),
        );
        parts.sort_by_key(|p| p.place().0);
        parts
    })
}

/// The process id, read once: `std::process::id()` is a system call.
fn pid() -> u32 {
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *PID.get_or_init(std::process::id)
}

/// Writes the status's small parts into the object `out` is in (after its other keys):
/// straight as text, each value by its type, the metric table's rows at their places.
fn small_parts_json(out: &mut String, state: &DaemonState, sample: &Sample<'_>) {
    let listener = state.listener.get().map(|l| &**l);
    let mut w = NestedWriter::new(out);
    for part in small_parts() {
        let (group, key) = part.place();
        match *part {
            // Before the listener is set up its object is there, empty.
            SmallPart::Own(_) if group == LISTENER && listener.is_none() => w.enter(group),
            SmallPart::Own(own) => own_json(w.key(group, key), own, state, sample, listener),
            SmallPart::Row(m) => match m.read {
                metrics::Read::Gate(read) => {
                    if let Some(g) = &sample.gate {
                        push_u64(w.key(group, key), read(g));
                    }
                }
                metrics::Read::Number(read) => {
                    if let Some(n) = read(sample) {
                        push_u64(w.key(group, key), n);
                    }
                }
                metrics::Read::Counts(read) => {
                    if let Some(counts) = read(sample) {
                        let out = w.key(group, key);
                        out.push('{');
                        for (i, (k, n)) in counts.pairs().iter().enumerate() {
                            if i > 0 {
                                out.push(',');
                            }
                            push_quoted(out, k);
                            out.push(':');
                            push_u64(out, *n);
                        }
                        out.push('}');
                    }
                }
                metrics::Read::Elsewhere => {}
            },
        }
    }
    w.finish();
}

/// One of the daemon's own values.
fn own_json(
    out: &mut String,
    own: Own,
    state: &DaemonState,
    sample: &Sample<'_>,
    listener: Option<&crate::listener::ListenerShared>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let running = || listener.and_then(|l| l.running());
    match own {
        Own::Backend => match running() {
            Some((backend, _)) => push_quoted(out, backend),
            None => out.push_str("null"),
        },
        Own::BackendReason => match listener.and_then(|l| l.backend_reason()) {
            Some(reason) => push_quoted(out, &reason),
            None => out.push_str("null"),
        },
        Own::ListenerAddr => match running() {
            Some((_, addr)) => push_addr(out, &addr),
            None => out.push_str("null"),
        },
        Own::ListenerThreads => match listener {
            Some(l) => push_u64(out, l.slots_len() as u64),
            None => out.push_str("null"),
        },
        Own::StartedMs => push_u64(out, state.started_ms),
        Own::Stopping => push_bool(out, state.stopping.load(Relaxed)),
        Own::OrchestrationReady => push_bool(out, state.orchestration_ready.load(Relaxed)),
        Own::Pid => push_u64(out, u64::from(pid())),
        Own::Threads => threads_json(out, &lock(&state.threads)),
        Own::Shards => match state.shards.get() {
            Some(n) => push_u64(out, *n as u64),
            None => out.push_str("null"),
        },
        Own::Blacklist => {
            out.push('{');
            for (i, (name, count)) in sample.blacklist.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_quoted(out, name);
                out.push(':');
                push_u64(out, u64::from(*count));
            }
            out.push('}');
        }
        Own::Monitor => push_json(out, &*lock(&state.node_monitor)),
    }
}

/// The supervisor's threads, as serde writes [`ThreadStatus`] (its optional fields left
/// out when empty).
fn threads_json(out: &mut String, threads: &std::collections::BTreeMap<&str, ThreadStatus>) {
    out.push('{');
    for (i, (name, t)) in threads.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_quoted(out, name);
        out.push_str(":{\"state\":");
        push_quoted(out, t.state);
        out.push_str(",\"restarts\":");
        push_u64(out, u64::from(t.restarts));
        if let Some(e) = &t.last_error {
            out.push_str(",\"last_error\":");
            push_quoted(out, e);
        }
        if let Some(ms) = t.last_error_ms {
            out.push_str(",\"last_error_ms\":");
            push_u64(out, ms);
        }
        out.push('}');
    }
    out.push('}');
}

/// Writes keys into nested objects, inside an object that already has keys: each object
/// is opened at its first key and closed when a key outside it comes, so the keys must come
/// grouped by their objects (as [`small_parts`] lists them), and an object with no key is
/// not written (unless [`NestedWriter::enter`]ed).
struct NestedWriter<'o> {
    out: &'o mut String,
    /// The objects open, outermost first.
    open: &'static [&'static str],
    /// Whether the innermost open object has a key already.
    has_keys: bool,
}

impl<'o> NestedWriter<'o> {
    fn new(out: &'o mut String) -> Self {
        NestedWriter {
            out,
            open: &[],
            has_keys: true,
        }
    }

    /// Closes the objects not in `group` and opens those of `group` not open.
    fn enter(&mut self, group: &'static [&'static str]) {
        let common = self
            .open
            .iter()
            .zip(group)
            .take_while(|(a, b)| a == b)
            .count();
        for _ in common..self.open.len() {
            self.out.push('}');
            self.has_keys = true;
        }
        for g in &group[common..] {
            if self.has_keys {
                self.out.push(',');
            }
            push_quoted(self.out, g);
            self.out.push_str(":{");
            self.has_keys = false;
        }
        self.open = group;
    }

    /// Writes `key` in `group`: where its value goes next.
    fn key(&mut self, group: &'static [&'static str], key: &str) -> &mut String {
        self.enter(group);
        if self.has_keys {
            self.out.push(',');
        }
        push_quoted(self.out, key);
        self.out.push(':');
        self.has_keys = true;
        self.out
    }

    fn finish(mut self) {
        self.enter(&[]);
    }
}

/// Keys of the status written outside [`small_parts_json`]: no metric may land on them.
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

fn push_bool(out: &mut String, b: bool) {
    out.push_str(if b { "true" } else { "false" });
}

/// Appends `addr` as a JSON string, as serde writes a socket address (its `Display`, which
/// never needs an escape). An IPv4 address is written by hand: `Display` goes through the
/// formatting machinery (padding support per part), which cost most of each member's entry
/// in a 64-member status (measured by `cargo bench --bench status`); IPv6 is rare and keeps
/// `Display`.
fn push_addr(out: &mut String, addr: &std::net::SocketAddr) {
    match addr {
        std::net::SocketAddr::V4(a) => {
            // `"255.255.255.255:65535"`.
            let mut text = [0u8; 23];
            let mut len = 0;
            let mut put = |bytes: &[u8]| {
                text[len..len + bytes.len()].copy_from_slice(bytes);
                len += bytes.len();
            };
            let mut digits = itoa::Buffer::new();
            put(b"\"");
            for (i, octet) in a.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    put(b".");
                }
                put(digits.format(octet).as_bytes());
            }
            put(b":");
            put(digits.format(a.port()).as_bytes());
            put(b"\"");
            match std::str::from_utf8(&text[..len]) {
                Ok(t) => out.push_str(t),
                Err(_) => out.push_str("null"),
            }
        }
        std::net::SocketAddr::V6(_) => {
            let _ = write!(out, "\"{addr}\"");
        }
    }
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

    /// The small parts as a document tree, as serde writes them: what the text must read
    /// back as.
    fn tree_of_small_parts(state: &DaemonState, sample: &Sample<'_>) -> Map<String, Value> {
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
        data.insert("threads".into(), json!(*lock(&state.threads)));
        data.insert("shards".into(), json!(state.shards.get()));
        data.insert("blacklist".into(), json!(sample.blacklist));
        data.insert("monitor".into(), json!(*lock(&state.node_monitor)));
        'metrics: for m in metrics::table() {
            let value = match m.read {
                metrics::Read::Gate(read) => sample.gate.as_ref().map(|g| json!(read(g))),
                metrics::Read::Number(read) => read(sample).map(|n| json!(n)),
                metrics::Read::Counts(read) => read(sample).map(|c| {
                    let pairs = c.pairs().iter().map(|(k, n)| (k.to_string(), json!(n)));
                    Value::Object(pairs.collect())
                }),
                metrics::Read::Elsewhere => None,
            };
            let Some(value) = value else { continue };
            let mut place = &mut data;
            for g in m.group {
                let entry = place
                    .entry(g.to_string())
                    .or_insert_with(|| Value::Object(Map::new()));
                let Some(inner) = entry.as_object_mut() else {
                    continue 'metrics;
                };
                place = inner;
            }
            place.insert(m.key.to_string(), value);
        }
        data
    }

    /// The small parts written as text, read back.
    fn text_of_small_parts(state: &DaemonState, sample: &Sample<'_>) -> Map<String, Value> {
        let mut out = String::from("{\"other\":0");
        small_parts_json(&mut out, state, sample);
        out.push('}');
        let mut data: Map<String, Value> =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        data.remove("other");
        data
    }

    fn sample_of(state: &DaemonState) -> Sample<'_> {
        let now = crate::clock::now_ms();
        let states = [
            MemberState::Up,
            MemberState::NeverSeen,
            MemberState::NeverSeen,
        ];
        Sample::take(state, now, members::count_by_state(states))
    }

    #[test]
    fn the_small_parts_read_back_as_their_document_tree() {
        let state = crate::internals::bench_support::status_fixture_state(3);
        for _ in 0..crate::guard::BAN_THRESHOLD {
            state
                .guard
                .blacklist
                .record_invalid("bann\"ed", crate::clock::now_ms());
        }
        state.heartbeats.applied.store(7, Ordering::Relaxed);
        state.orchestration_ready.store(true, Ordering::Relaxed);
        let sample = sample_of(&state);
        let text = text_of_small_parts(&state, &sample);
        assert_eq!(text, tree_of_small_parts(&state, &sample));
        assert_eq!(text["blacklist"]["bann\"ed"], crate::guard::BAN_THRESHOLD);
        assert_eq!(text["threads"]["monitor"]["last_error"], "exited: \"boom\"");
        assert_eq!(text["member_states"]["never seen"], 2);
        assert_eq!(text["listener"]["addr"], "127.0.0.1:1215");
        // Every row the table reads is found at its place.
        let text = Value::Object(text);
        for m in metrics::table() {
            if !matches!(m.read, metrics::Read::Elsewhere) {
                assert!(metrics::value_in(&text, &m).is_some(), "{:?}", m.key);
            }
        }
        // Before the listener, the shards and the dispatcher are set up.
        let config = state.config();
        let bare = DaemonState::unattached((*config).clone(), state.started_ms);
        let sample = sample_of(&bare);
        let text = text_of_small_parts(&bare, &sample);
        assert_eq!(text, tree_of_small_parts(&bare, &sample));
        assert_eq!(text["listener"], json!({}));
        assert_eq!(text["shards"], Value::Null);
    }

    /// Each key of the small parts has one place, and no object is where a value is.
    #[test]
    fn the_small_parts_have_a_place_each() {
        let places: Vec<_> = small_parts().iter().map(|p| p.place()).collect();
        for (i, (group, key)) in places.iter().enumerate() {
            for (other_group, other_key) in &places[i + 1..] {
                assert!((group, key) != (other_group, other_key), "{group:?} {key}");
                let mut path = group.to_vec();
                path.push(key);
                assert!(!other_group.starts_with(&path), "{path:?} is a value");
                let mut other_path = other_group.to_vec();
                other_path.push(other_key);
                assert!(!group.starts_with(&other_path), "{other_path:?} is a value");
            }
        }
    }

    #[test]
    fn nested_objects_open_at_their_first_key_and_close_after_their_last() {
        let mut out = String::from("{\"a\":1");
        let mut w = NestedWriter::new(&mut out);
        w.key(&[], "b").push('2');
        w.enter(&["empty"]);
        w.key(&["l"], "c").push('3');
        w.key(&["l", "m"], "d").push('4');
        w.key(&["l", "m"], "e").push('5');
        w.key(&["n", "o"], "f").push('6');
        w.finish();
        out.push('}');
        assert_eq!(
            out,
            r#"{"a":1,"b":2,"empty":{},"l":{"c":3,"m":{"d":4,"e":5}},"n":{"o":{"f":6}}}"#
        );
    }

    #[test]
    fn the_wall_clock_decides_under_the_bound_the_thread_cpu_over_it() {
        let under = QUICK_STATUS_NS;
        let over = QUICK_STATUS_NS + 1;
        for (measured, cost_ns, measure_cpu_next) in [
            // Under by the wall clock: under in CPU, no system call next time.
            (Measure::Wall(under), Some(under), false),
            // Over by the wall clock: preempted or costly, the next answer's CPU tells.
            (Measure::Wall(over), None, true),
            (Measure::Cpu(under), Some(under), false),
            (Measure::Cpu(over), Some(over), true),
        ] {
            let verdict = Verdict {
                cost_ns,
                measure_cpu_next,
            };
            assert_eq!(judge(measured), verdict, "{measured:?}");
        }
    }

    #[test]
    fn an_answer_goes_quick_once_measured_cheap_and_the_pid_is_this_process() {
        let writer = StatusWriter::new(crate::internals::bench_support::status_fixture_state(3));
        let origin = Origin::Local;
        assert!(writer.try_handle(&origin, &Request::DaemonStatus).is_none());
        let answer = writer.answer();
        let text = answer.encoded_data.unwrap_or_default();
        let data: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(data["pid"], std::process::id());
        // Cheap on any machine: 3 members.
        let answered = (0..10).any(|_| {
            let _ = writer.answer();
            writer.try_handle(&origin, &Request::DaemonStatus).is_some()
        });
        assert!(answered);
    }

    proptest::proptest! {
        #[test]
        fn addresses_are_written_as_display_writes_them(
            v4 in proptest::prelude::any::<std::net::SocketAddrV4>(),
            v6 in proptest::prelude::any::<std::net::SocketAddrV6>(),
        ) {
            for addr in [std::net::SocketAddr::V4(v4), std::net::SocketAddr::V6(v6)] {
                let mut out = String::new();
                push_addr(&mut out, &addr);
                proptest::prop_assert_eq!(out, format!("\"{addr}\""));
            }
        }
    }

    /// The metric table's rows are written with the small parts: a row (or one of the
    /// daemon's own small values) placed in a part written on its own would give the answer
    /// a key twice.
    #[test]
    fn no_metric_is_written_into_a_part_written_as_text() {
        let rows: Vec<_> = metrics::table()
            .filter(|m| !matches!(m.read, metrics::Read::Elsewhere))
            .collect();
        assert!(!rows.is_empty());
        for m in rows {
            let top = m.group.first().copied().unwrap_or(m.key);
            assert!(!WRITTEN_AS_TEXT.contains(&top), "{:?} {}", m.group, m.key);
        }
        for part in small_parts() {
            let (group, key) = part.place();
            let top = group.first().copied().unwrap_or(key);
            assert!(!WRITTEN_AS_TEXT.contains(&top), "{group:?} {key}");
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
