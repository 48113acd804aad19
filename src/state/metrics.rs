//! The daemon's metrics, listed once: each row says where the value sits in the
//! `daemon_status` answer, how it is read from the daemon, its Prometheus name, type and help.
//! The status JSON's counters are written from this table (by `handlers::daemon`, each row's
//! value by its type, [`Read`]), the Prometheus text is
//! read back from a status answer by it ([`prometheus_text`], used by `nodemgr daemon
//! metrics` and by the daemon's `/metrics`), and the people's view takes its headline
//! counters from it: a metric added here shows everywhere.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Map, Value};

use super::DaemonState;
use crate::guard::{GateStats, InvalidClass};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// How a metric's series are read from its place in the status.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Shape {
    /// One number (a boolean counts 0 or 1).
    Single,
    /// An object of numbers: one series per key, the key being this label's value.
    ByKey(&'static str),
    /// An object of objects: one series per key (this label's value), from `field` of each
    /// times `scale`; an entry whose field is null has no series.
    Field {
        label: &'static str,
        field: &'static str,
        scale: f64,
    },
}

/// Where a metric's value comes from when the status is written.
#[derive(Clone, Copy)]
pub(crate) enum Read {
    /// One of the listener's gate counters.
    Gate(fn(&GateStats) -> u64),
    /// A number read from the daemon's state (None: the status has no such key yet, e.g.
    /// before the listener is set up).
    Number(fn(&Sample<'_>) -> Option<u64>),
    /// An object of numbers read from the daemon's state (None: no such key).
    Counts(fn(&Sample<'_>) -> Option<Counts>),
    /// Written by another part of the status (members, threads, quorum): the table names it
    /// for the metrics only.
    Elsewhere,
}

#[derive(Clone, Copy)]
pub(crate) struct Metric {
    /// Its Prometheus name; None for a status field that Prometheus does not need (a sum of
    /// a labelled family is the query's business).
    pub name: Option<&'static str>,
    pub help: &'static str,
    pub kind: Kind,
    /// Its place in the status: the objects it is in, then its key.
    pub group: &'static [&'static str],
    pub key: &'static str,
    pub shape: Shape,
    pub read: Read,
    /// Shown in the header of `daemon status` for people.
    pub headline: bool,
}

const LISTENER: &[&str] = &["listener", "counters"];
const TOP: &[&str] = &[];

/// The keys and numbers of an object of numbers, as many as a metric has labels (the
/// status writes them with no allocation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Counts {
    pairs: [(&'static str, u64); Counts::MAX],
    len: usize,
}

impl Counts {
    /// The most keys an object of numbers has: the invalid messages' classes.
    const MAX: usize = InvalidClass::ALL.len();

    pub(crate) fn new() -> Counts {
        Counts {
            pairs: [("", 0); Counts::MAX],
            len: 0,
        }
    }

    /// Adds `key` (past [`Counts::MAX`] keys: left out, which the check below rules out for
    /// the table's rows).
    pub(crate) fn push(&mut self, key: &'static str, n: u64) {
        if let Some(slot) = self.pairs.get_mut(self.len) {
            *slot = (key, n);
            self.len += 1;
        }
    }

    pub(crate) fn pairs(&self) -> &[(&'static str, u64)] {
        &self.pairs[..self.len]
    }
}

// Every object of numbers the table has fits.
const _: () = assert!(super::members::MemberState::ALL.len() <= Counts::MAX);

const fn counter(
    name: &'static str,
    help: &'static str,
    group: &'static [&'static str],
    key: &'static str,
    read: fn(&Sample<'_>) -> Option<u64>,
) -> Metric {
    Metric {
        name: Some(name),
        help,
        kind: Kind::Counter,
        group,
        key,
        shape: Shape::Single,
        read: Read::Number(read),
        headline: false,
    }
}

const fn counts(m: Metric, label: &'static str, read: fn(&Sample<'_>) -> Option<Counts>) -> Metric {
    Metric {
        shape: Shape::ByKey(label),
        read: Read::Counts(read),
        ..m
    }
}

const fn gauge(
    name: &'static str,
    help: &'static str,
    group: &'static [&'static str],
    key: &'static str,
    read: fn(&Sample<'_>) -> Option<u64>,
) -> Metric {
    Metric {
        kind: Kind::Gauge,
        ..counter(name, help, group, key, read)
    }
}

const fn headline(m: Metric) -> Metric {
    Metric {
        headline: true,
        ..m
    }
}

const fn elsewhere(m: Metric, shape: Shape) -> Metric {
    Metric {
        read: Read::Elsewhere,
        shape,
        ..m
    }
}

fn none(_: &Sample<'_>) -> Option<u64> {
    None
}

fn listener_value(s: &Sample<'_>, f: fn(&crate::listener::ListenerShared) -> u64) -> Option<u64> {
    s.state.listener.get().map(|l| f(l))
}

fn invalid_by_class(s: &Sample<'_>) -> Option<Counts> {
    let g = s.gate.as_ref()?;
    let mut by_class = Counts::new();
    for c in InvalidClass::ALL {
        by_class.push(c.as_str(), g.invalid[c as usize]);
    }
    Some(by_class)
}

fn member_states(s: &Sample<'_>) -> Option<Counts> {
    let mut by_state = Counts::new();
    for (state, n) in s.member_states {
        by_state.push(state, n);
    }
    Some(by_state)
}

use std::sync::atomic::Ordering::Relaxed;

/// Every row but the gate's own counters (which [`table`] puts first).
const ROWS: &[Metric] = &[
    counts(
        counter(
            "osvc_listener_invalid_total",
            "Invalid messages (PROTOCOL.md validation steps 2 to 6), by class.",
            LISTENER,
            "invalid",
            none,
        ),
        "class",
        invalid_by_class,
    ),
    Metric {
        name: None,
        ..headline(counter(
            "",
            "Invalid messages, every class.",
            LISTENER,
            "invalid_total",
            |s| s.gate.as_ref().map(|g| g.invalid_total()),
        ))
    },
    counter(
        "osvc_listener_tcp_accepted_total",
        "TCP connections accepted.",
        LISTENER,
        "tcp_accepted",
        |s| listener_value(s, |l| l.tcp_counts().0),
    ),
    counter(
        "osvc_listener_tcp_refused_total",
        "TCP connections refused: the table was full of authenticated connections.",
        LISTENER,
        "tcp_refused",
        |s| listener_value(s, |l| l.tcp_counts().1),
    ),
    headline(gauge(
        "osvc_listener_tcp_connections",
        "TCP connections open.",
        LISTENER,
        "tcp_open",
        |s| listener_value(s, |l| l.conns.open() as u64),
    )),
    counter(
        "osvc_listener_tcp_evicted_total",
        "Unauthenticated TCP connections evicted to admit another.",
        LISTENER,
        "tcp_evicted",
        |s| listener_value(s, |l| l.conns.evicted.load(Relaxed)),
    ),
    counter(
        "osvc_listener_tcp_closed_length_total",
        "TCP connections closed for a frame length out of bounds.",
        LISTENER,
        "tcp_closed_length",
        |s| listener_value(s, |l| l.tcp_closed_length()),
    ),
    headline(counter(
        "osvc_dispatch_dropped_total",
        "Heartbeats dropped and requests refused busy because a handler queue was full.",
        TOP,
        "dispatch_dropped",
        |s| s.state.dispatcher.get().map(|d| d.dropped()),
    )),
    headline(counter(
        "osvc_heartbeats_applied_total",
        "Heartbeats taken into a peer's view.",
        &["heartbeats"],
        "applied",
        |s| Some(s.state.heartbeats.applied.load(Relaxed)),
    )),
    counter(
        "osvc_heartbeats_news_total",
        "Applied heartbeats that changed the peer's view.",
        &["heartbeats"],
        "news",
        |s| Some(s.state.heartbeats.news.load(Relaxed)),
    ),
    counter(
        "osvc_heartbeats_refused_total",
        "Authenticated heartbeats refused, for their shape or by the peer's view.",
        &["heartbeats"],
        "refused",
        |s| {
            Some(
                s.state.heartbeats.refused.load(Relaxed)
                    + s.gate.as_ref().map_or(0, |g| g.heartbeats_refused),
            )
        },
    ),
    counter(
        "osvc_dequeue_triggers_total",
        "Empty packets that asked for a dequeue.",
        &["dequeue"],
        "triggers",
        |s| Some(s.state.dequeue.triggers.load(Relaxed)),
    ),
    counter(
        "osvc_dequeue_runs_total",
        "Dequeue runs (triggers are coalesced).",
        &["dequeue"],
        "runs",
        |s| Some(s.state.dequeue.runs.load(Relaxed)),
    ),
    counter(
        "osvc_dequeue_actions_run_total",
        "Queued actions run.",
        &["dequeue"],
        "actions_run",
        |s| Some(s.state.dequeue.actions_run.load(Relaxed)),
    ),
    counter(
        "osvc_dequeue_actions_failed_total",
        "Queued actions that failed.",
        &["dequeue"],
        "actions_failed",
        |s| Some(s.state.dequeue.actions_failed.load(Relaxed)),
    ),
    counter(
        "osvc_dequeue_actions_timed_out_total",
        "Queued actions killed at dequeue.timeout.",
        &["dequeue"],
        "actions_timed_out",
        |s| Some(s.state.dequeue.actions_timed_out.load(Relaxed)),
    ),
    gauge(
        "osvc_blacklist_entries",
        "Members with a count of consecutive invalid messages or a ban.",
        &["blacklist_summary"],
        "entries",
        |s| Some(s.blacklist.len() as u64),
    ),
    headline(gauge(
        "osvc_blacklist_banned",
        "Members banned by the blacklist.",
        &["blacklist_summary"],
        "banned",
        |s| {
            let threshold = crate::guard::BAN_THRESHOLD;
            Some(s.blacklist.values().filter(|n| **n >= threshold).count() as u64)
        },
    )),
    counts(
        gauge(
            "osvc_members",
            "Other members of cluster.nodes, by state.",
            TOP,
            "member_states",
            none,
        ),
        "state",
        member_states,
    ),
    elsewhere(
        gauge(
            "osvc_peer_heartbeat_age_seconds",
            "Seconds since a member's last heartbeat (members never heard have none).",
            TOP,
            "members",
            none,
        ),
        Shape::Field {
            label: "peer",
            field: "age_ms",
            scale: 0.001,
        },
    ),
    elsewhere(
        counter(
            "osvc_peer_heartbeats_total",
            "Heartbeats taken from a member since this daemon started.",
            TOP,
            "members",
            none,
        ),
        Shape::Field {
            label: "peer",
            field: "beats",
            scale: 1.0,
        },
    ),
    elsewhere(
        counter(
            "osvc_thread_restarts_total",
            "Restarts of a daemon thread after it exited uncleanly.",
            TOP,
            "threads",
            none,
        ),
        Shape::Field {
            label: "thread",
            field: "restarts",
            scale: 1.0,
        },
    ),
    elsewhere(
        gauge(
            "osvc_quorum_votes",
            "Votes this node counts: itself, members it sees, arbitrators' grants it holds.",
            &["quorum"],
            "votes",
            none,
        ),
        Shape::Single,
    ),
    elsewhere(
        gauge(
            "osvc_quorum_held",
            "1 while this node sees more than half of the votes (acted on with cluster.quorum on).",
            &["quorum"],
            "has_quorum",
            none,
        ),
        Shape::Single,
    ),
    gauge(
        "osvc_uptime_seconds",
        "Seconds since the daemon started.",
        TOP,
        "uptime_s",
        |s| Some(s.now_ms.saturating_sub(s.state.started_ms) / 1000),
    ),
];

/// Every metric, the gate's counters first.
pub(crate) fn table() -> impl Iterator<Item = Metric> {
    GateStats::COUNTERS
        .iter()
        .map(|c| Metric {
            name: Some(c.metric),
            // Doc comments start with a space.
            help: c.help.trim(),
            kind: Kind::Counter,
            group: LISTENER,
            key: c.name,
            shape: Shape::Single,
            read: Read::Gate(c.read),
            headline: c.headline,
        })
        .chain(ROWS.iter().copied())
}

/// What the status is written from, taken once per answer so that its parts agree.
pub(crate) struct Sample<'a> {
    pub state: &'a DaemonState,
    pub now_ms: u64,
    /// The listener's counters, summed over its workers (None before it is set up).
    pub gate: Option<GateStats>,
    /// The other members by state, counted from the members the status lists.
    pub member_states: super::members::StateCounts,
    pub blacklist: BTreeMap<String, u32>,
}

impl<'a> Sample<'a> {
    /// `member_states`: `members::count_by_state` of the members the same answer lists.
    pub(crate) fn take(
        state: &'a DaemonState,
        now_ms: u64,
        member_states: super::members::StateCounts,
    ) -> Sample<'a> {
        Sample {
            state,
            now_ms,
            gate: state.listener.get().map(|l| l.stats()),
            member_states,
            blacklist: state.guard.blacklist.status(now_ms),
        }
    }
}

/// A metric's value in a status answer, if it is there.
pub(crate) fn value_in<'v>(status: &'v Value, m: &Metric) -> Option<&'v Value> {
    let mut place = status;
    for g in m.group {
        place = place.get(g)?;
    }
    place.get(m.key)
}

fn number(v: &Value, scale: f64) -> Option<String> {
    match v {
        Value::Bool(b) => Some(u8::from(*b).to_string()),
        Value::Number(n) if scale == 1.0 && (n.is_u64() || n.is_i64()) => Some(n.to_string()),
        Value::Number(n) => n.as_f64().map(|f| (f * scale).to_string()),
        _ => None,
    }
}

/// A label value as the text format writes it.
fn escape_label(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', r#"\""#)
        .replace('\n', r"\n")
}

/// One metric family with its series: `(label, value)` per series, values as the text format
/// writes them.
struct Family {
    name: &'static str,
    metric: Metric,
    series: Vec<(Option<(&'static str, String)>, String)>,
}

/// The families of a `daemon_status` answer's `data` that have a series, in table order.
fn families(status: &Value) -> Vec<Family> {
    let mut out = Vec::new();
    for m in table() {
        let Some(name) = m.name else { continue };
        let Some(place) = value_in(status, &m) else {
            continue;
        };
        let mut series = Vec::new();
        match m.shape {
            Shape::Single => series.extend(number(place, 1.0).map(|v| (None, v))),
            Shape::ByKey(label) => {
                for (k, v) in place.as_object().into_iter().flatten() {
                    if let Some(v) = number(v, 1.0) {
                        series.push((Some((label, k.clone())), v));
                    }
                }
            }
            Shape::Field {
                label,
                field,
                scale,
            } => {
                for (k, v) in place.as_object().into_iter().flatten() {
                    if let Some(v) = v.get(field).and_then(|f| number(f, scale)) {
                        series.push((Some((label, k.clone())), v));
                    }
                }
            }
        }
        // A family without series is left out whole: some parsers refuse a bare TYPE line.
        if !series.is_empty() {
            out.push(Family {
                name,
                metric: m,
                series,
            });
        }
    }
    out
}

/// The Prometheus text format (version 0.0.4) of a `daemon_status` answer's `data`.
pub(crate) fn prometheus_text(status: &Value) -> String {
    let mut out = String::new();
    for f in families(status) {
        let name = f.name;
        let help = f.metric.help.replace('\\', r"\\").replace('\n', r"\n");
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {}", f.metric.kind.as_str());
        for (label, value) in f.series {
            match label {
                Some((l, v)) => {
                    let _ = writeln!(out, "{name}{{{l}=\"{}\"}} {value}", escape_label(&v));
                }
                None => {
                    let _ = writeln!(out, "{name} {value}");
                }
            }
        }
    }
    out
}

/// The same families as JSON, for `nodemgr daemon metrics --format json`:
/// `{"NAME": {"type": ..., "help": ..., "samples": [{"labels": {...}, "value": N}]}}`.
pub(crate) fn prometheus_json(status: &Value) -> Value {
    let mut out = Map::new();
    for f in families(status) {
        let samples: Vec<Value> = f
            .series
            .into_iter()
            .map(|(label, value)| {
                let labels: Map<String, Value> = label
                    .map(|(l, v)| (l.to_string(), Value::String(v)))
                    .into_iter()
                    .collect();
                // A value the text format writes but JSON cannot hold (NaN) is null.
                let value = serde_json::from_str::<Value>(&value).unwrap_or(Value::Null);
                serde_json::json!({"labels": labels, "value": value})
            })
            .collect();
        out.insert(
            f.name.to_string(),
            serde_json::json!({
                "type": f.metric.kind.as_str(),
                "help": f.metric.help,
                "samples": samples,
            }),
        );
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_are_unique_and_follow_the_conventions() {
        let mut seen = std::collections::HashSet::new();
        for m in table() {
            let place = (m.group, m.key);
            if let Some(name) = m.name {
                assert!(seen.insert(name), "{name} twice");
                assert!(name.starts_with("osvc_"), "{name}");
                assert!(
                    name.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                    "{name}"
                );
                assert_eq!(
                    name.ends_with("_total"),
                    m.kind == Kind::Counter,
                    "{name}: counters, and only they, end in _total"
                );
            }
            assert!(!m.help.is_empty() && !m.help.contains('\n'), "{place:?}");
            assert_eq!(m.help, m.help.trim(), "{place:?}");
        }
        // Every gate counter is in the table.
        for c in GateStats::COUNTERS {
            assert!(seen.contains(c.metric));
        }
    }

    fn status() -> Value {
        json!({
            "listener": {"counters": {
                "received": 12, "delivered": 10, "decrypted": 10,
                "invalid": {"decrypt": 2, "header": 0, "say \"hi\"\\": 1},
                "invalid_total": 3, "tcp_open": 1,
            }},
            "heartbeats": {"applied": 9},
            "members": {
                "n2": {"state": "up", "age_ms": 1500, "beats": 9},
                "n3": {"state": "never seen", "age_ms": null, "beats": 0},
            },
            "member_states": {"up": 1, "never seen": 1},
            "threads": {"hb.tx": {"state": "running", "restarts": 0}},
            "quorum": {"votes": 2, "has_quorum": true},
            "uptime_s": 30,
        })
    }

    /// A strict parser of the text format must read back every series with its value.
    #[test]
    fn the_text_parses_and_reads_back() {
        // The parser is strict: an unquoted label value is refused, not skipped.
        assert!(prom_text_format_parser::Scrape::parse("osvc_x{a=b} 1\n").is_err());
        let text = prometheus_text(&status());
        let scrape = prom_text_format_parser::Scrape::parse(&text)
            .unwrap_or_else(|e| panic!("{e:?} in:\n{text}"));
        let value = |name: &str, label: Option<(&str, &str)>| -> f64 {
            let m = scrape
                .metrics
                .iter()
                .find(|m| m.name == name)
                .unwrap_or_else(|| panic!("{name} missing in:\n{text}"));
            let s = m
                .samples
                .iter()
                .find(|s| {
                    label.is_none_or(|(k, v)| s.labels.iter().any(|l| l.key == k && l.value == v))
                })
                .unwrap_or_else(|| panic!("{name} {label:?} missing in:\n{text}"));
            s.value.value.as_f64()
        };
        assert_eq!(value("osvc_listener_received_total", None), 12.0);
        assert_eq!(
            value("osvc_listener_invalid_total", Some(("class", "decrypt"))),
            2.0
        );
        assert_eq!(
            value("osvc_peer_heartbeat_age_seconds", Some(("peer", "n2"))),
            1.5
        );
        assert_eq!(
            value("osvc_peer_heartbeats_total", Some(("peer", "n3"))),
            0.0
        );
        assert_eq!(value("osvc_members", Some(("state", "never seen"))), 1.0);
        assert_eq!(value("osvc_quorum_held", None), 1.0);
        let kind = |name: &str| scrape.metrics.iter().find(|m| m.name == name).unwrap().kind;
        assert_eq!(
            kind("osvc_listener_received_total"),
            prom_text_format_parser::Type::Counter
        );
        assert_eq!(
            kind("osvc_uptime_seconds"),
            prom_text_format_parser::Type::Gauge
        );
        // The member never heard has no age; a metric absent from the status no family.
        let ages = scrape
            .metrics
            .iter()
            .find(|m| m.name == "osvc_peer_heartbeat_age_seconds")
            .unwrap();
        assert_eq!(ages.samples.len(), 1);
        assert!(!text.contains("osvc_dequeue_runs_total"));
        assert!(text.contains(r#"{class="say \"hi\"\\"} 1"#), "{text}");
    }
}
