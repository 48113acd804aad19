//! JSON payloads (PROTOCOL.md, "Payloads"): requests parsed with simd-json straight from the
//! decrypted buffer into typed values, responses and heartbeats.

use serde::{Deserialize, Serialize};
use simd_json::prelude::*;
use simd_json::tape::{Object, Value};
use simd_json::{Buffers, Tape};

/// Why a payload is not a valid request. Every message names the action or field at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("malformed JSON: {0}")]
    Json(String),
    #[error("payload is not a JSON object")]
    NotAnObject,
    #[error("missing \"action\"")]
    MissingAction,
    #[error("unknown action {0:?}")]
    UnknownAction(String),
    #[error("{action}: \"options\" must be an object")]
    OptionsNotObject { action: &'static str },
    #[error("{action}: missing option {field:?}")]
    MissingField {
        action: &'static str,
        field: &'static str,
    },
    #[error("{action}: unknown option {field:?}")]
    UnknownField { action: &'static str, field: String },
    #[error("{action}: duplicate key {field:?}")]
    DuplicateKey { action: &'static str, field: String },
    #[error("{action}: too many keys")]
    TooManyKeys { action: &'static str },
    #[error("{action}: option {field:?}: {message}")]
    BadField {
        action: &'static str,
        field: &'static str,
        message: String,
    },
    #[error("heartbeat: {0}")]
    Heartbeat(String),
}

macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name { $(#[serde(rename = $text)] $variant),+ }
        impl $name {
            pub const ALL: &'static [&'static str] = &[$($text),+];
            pub fn as_str(self) -> &'static str { match self { $($name::$variant => $text),+ } }
            pub fn parse(s: &str) -> Option<Self> { match s { $($text => Some($name::$variant),)+ _ => None } }
        }
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str(self.as_str()) }
        }
    };
}

string_enum!(NodeMonitorStatus { Idle = "idle", Freezing = "freezing", Thawing = "thawing" });
string_enum!(NodeLocalExpect { Thawed = "thawed", Frozen = "frozen" });
string_enum!(ServiceMonitorStatus {
    Idle = "idle",
    Starting = "starting",
    Stopping = "stopping",
    StartFailed = "start failed",
    StopFailed = "stop failed",
    Restarting = "restarting",
    Ready = "ready",
});
string_enum!(ServiceLocalExpect { Started = "started", Unset = "unset" });
string_enum!(GlobalExpect {
    Started = "started",
    Stopped = "stopped",
    Frozen = "frozen",
    Thawed = "thawed",
    Unset = "unset",
});

/// A decoded request (kind 1). Action names are the `action` strings on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    DaemonStatus,
    DaemonStop {
        thread_id: Option<String>,
    },
    DaemonStart {
        thread_id: Option<String>,
    },
    DaemonShutdown,
    BlacklistStatus,
    BlacklistClear,
    GetServiceConfig {
        svcname: String,
    },
    Clear {
        svcname: String,
    },
    SetNodeMonitor {
        status: Option<NodeMonitorStatus>,
        local_expect: Option<NodeLocalExpect>,
    },
    SetServiceMonitor {
        svcname: String,
        status: Option<ServiceMonitorStatus>,
        local_expect: Option<ServiceLocalExpect>,
        global_expect: Option<GlobalExpect>,
        reset_retries: bool,
    },
    GetServiceMonitor {
        svcname: String,
    },
    /// The sender asks to join the cluster (the one request a non-member may send).
    Join,
    /// A member tells another member that `nodename`, reachable at `addr`, has joined.
    JoinRelay {
        nodename: String,
        addr: Option<String>,
    },
    /// The sender leaves the cluster.
    Leave,
    ServiceAction {
        svcname: String,
        command: Vec<String>,
        sync: bool,
    },
    ServiceLogs {
        svcname: String,
        backlog: Option<u64>,
        follow: bool,
    },
}

/// Every action name a request may carry.
pub const ACTIONS: &[&str] = &[
    "daemon_status",
    "daemon_stop",
    "daemon_start",
    "daemon_shutdown",
    "blacklist_status",
    "blacklist_clear",
    "get_service_config",
    "clear",
    "set_node_monitor",
    "set_service_monitor",
    "get_service_monitor",
    "join",
    "leave",
    "service_action",
    "service_logs",
];

impl Request {
    pub fn action(&self) -> &'static str {
        match self {
            Request::DaemonStatus => "daemon_status",
            Request::DaemonStop { .. } => "daemon_stop",
            Request::DaemonStart { .. } => "daemon_start",
            Request::DaemonShutdown => "daemon_shutdown",
            Request::BlacklistStatus => "blacklist_status",
            Request::BlacklistClear => "blacklist_clear",
            Request::GetServiceConfig { .. } => "get_service_config",
            Request::Clear { .. } => "clear",
            Request::SetNodeMonitor { .. } => "set_node_monitor",
            Request::SetServiceMonitor { .. } => "set_service_monitor",
            Request::GetServiceMonitor { .. } => "get_service_monitor",
            Request::Join | Request::JoinRelay { .. } => "join",
            Request::Leave => "leave",
            Request::ServiceAction { .. } => "service_action",
            Request::ServiceLogs { .. } => "service_logs",
        }
    }

    /// The service a request concerns, which picks its shard; None for node-level actions.
    pub fn svcname(&self) -> Option<&str> {
        match self {
            Request::GetServiceConfig { svcname }
            | Request::Clear { svcname }
            | Request::SetServiceMonitor { svcname, .. }
            | Request::GetServiceMonitor { svcname }
            | Request::ServiceAction { svcname, .. }
            | Request::ServiceLogs { svcname, .. } => Some(svcname),
            _ => None,
        }
    }

    /// The wire form: `{"action": ..., "options": {...}}`.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::{Map, Value, json};
        let mut o = Map::new();
        let mut put = |k: &str, v: Value| {
            o.insert(k.to_string(), v);
        };
        match self {
            Request::DaemonStop { thread_id } | Request::DaemonStart { thread_id } => {
                if let Some(t) = thread_id {
                    put("thread_id", json!(t));
                }
            }
            Request::GetServiceConfig { svcname }
            | Request::Clear { svcname }
            | Request::GetServiceMonitor { svcname } => put("svcname", json!(svcname)),
            Request::SetNodeMonitor {
                status,
                local_expect,
            } => {
                if let Some(s) = status {
                    put("status", json!(s.as_str()));
                }
                if let Some(s) = local_expect {
                    put("local_expect", json!(s.as_str()));
                }
            }
            Request::SetServiceMonitor {
                svcname,
                status,
                local_expect,
                global_expect,
                reset_retries,
            } => {
                put("svcname", json!(svcname));
                if let Some(s) = status {
                    put("status", json!(s.as_str()));
                }
                if let Some(s) = local_expect {
                    put("local_expect", json!(s.as_str()));
                }
                if let Some(s) = global_expect {
                    put("global_expect", json!(s.as_str()));
                }
                if *reset_retries {
                    put("reset_retries", json!(true));
                }
            }
            Request::ServiceAction {
                svcname,
                command,
                sync,
            } => {
                put("svcname", json!(svcname));
                put("command", json!(command));
                put("sync", json!(sync));
            }
            Request::ServiceLogs {
                svcname,
                backlog,
                follow,
            } => {
                put("svcname", json!(svcname));
                if let Some(b) = backlog {
                    put("backlog", json!(b));
                }
                put("follow", json!(follow));
            }
            Request::DaemonStatus
            | Request::DaemonShutdown
            | Request::BlacklistStatus
            | Request::BlacklistClear
            | Request::Join
            | Request::Leave => {}
            Request::JoinRelay { nodename, addr } => {
                put("nodename", json!(nodename));
                if let Some(a) = addr {
                    put("addr", json!(a));
                }
            }
        }
        if o.is_empty() {
            json!({ "action": self.action() })
        } else {
            json!({ "action": self.action(), "options": o })
        }
    }

    pub fn to_vec(&self) -> Vec<u8> {
        self.to_json().to_string().into_bytes()
    }
}

/// Reusable parser state: keeps simd-json's scratch buffers and its tape between frames so a
/// worker does not allocate them per request. The request is read straight off the tape: no
/// document tree is built (and dropped) per request.
#[derive(Default)]
pub struct RequestParser {
    buffers: Option<Buffers>,
    /// Empty between calls; only its allocation is kept.
    tape: Option<Tape<'static>>,
}

/// A tape grown past this many nodes by an unusually large request is not kept.
const MAX_KEPT_TAPE: usize = 1 << 14;

impl RequestParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses a request in place (simd-json rewrites `payload` while it parses).
    pub fn parse(&mut self, payload: &mut [u8]) -> Result<Request, PayloadError> {
        let buffers = self
            .buffers
            .get_or_insert_with(|| Buffers::new(payload.len().max(512)));
        // `reset` empties the kept tape and gives it this payload's lifetime.
        let mut tape = self.tape.take().map_or_else(Tape::null, Tape::reset);
        let request = match simd_json::fill_tape(payload, buffers, &mut tape) {
            Ok(()) => request_from_value(tape.as_value()),
            Err(e) => Err(PayloadError::Json(e.to_string())),
        };
        if tape.0.capacity() <= MAX_KEPT_TAPE {
            self.tape = Some(tape.reset());
        }
        request
    }
}

/// One-shot parse, for callers without a parser at hand.
pub fn parse_request(payload: &mut [u8]) -> Result<Request, PayloadError> {
    RequestParser::new().parse(payload)
}

fn request_from_value(doc: Value<'_, '_>) -> Result<Request, PayloadError> {
    let obj = doc.as_object().ok_or(PayloadError::NotAnObject)?;
    reject_duplicate_keys(&obj, "request")?;
    for key in obj.keys() {
        if key != "action" && key != "options" {
            return Err(PayloadError::UnknownField {
                action: "request",
                field: key.to_string(),
            });
        }
    }
    let action_value = obj.get("action").ok_or(PayloadError::MissingAction)?;
    let action_text = action_value.as_str().ok_or(PayloadError::MissingAction)?;
    let action: &'static str = ACTIONS
        .iter()
        .find(|a| **a == action_text)
        .ok_or_else(|| PayloadError::UnknownAction(action_text.to_string()))?;
    let opts = Options::new(action, obj.get("options"))?;
    let request = match action {
        "daemon_status" => opts.done(Request::DaemonStatus, &[])?,
        "daemon_shutdown" => opts.done(Request::DaemonShutdown, &[])?,
        "blacklist_status" => opts.done(Request::BlacklistStatus, &[])?,
        "blacklist_clear" => opts.done(Request::BlacklistClear, &[])?,
        "join" => match opts.opt_string("nodename")? {
            None => opts.done(Request::Join, &[])?,
            Some(nodename) => {
                if nodename.is_empty()
                    || nodename.len() > 255
                    || nodename.chars().any(char::is_whitespace)
                {
                    return Err(opts.bad("nodename", "must be 1 to 255 bytes, no whitespace"));
                }
                let addr = opts.opt_string("addr")?;
                opts.done(Request::JoinRelay { nodename, addr }, &["nodename", "addr"])?
            }
        },
        "leave" => opts.done(Request::Leave, &[])?,
        "daemon_stop" => {
            let thread_id = opts.opt_string("thread_id")?;
            opts.done(Request::DaemonStop { thread_id }, &["thread_id"])?
        }
        "daemon_start" => {
            let thread_id = opts.opt_string("thread_id")?;
            opts.done(Request::DaemonStart { thread_id }, &["thread_id"])?
        }
        "get_service_config" => {
            let svcname = opts.svcname()?;
            opts.done(Request::GetServiceConfig { svcname }, &["svcname"])?
        }
        "clear" => {
            let svcname = opts.svcname()?;
            opts.done(Request::Clear { svcname }, &["svcname"])?
        }
        "get_service_monitor" => {
            let svcname = opts.svcname()?;
            opts.done(Request::GetServiceMonitor { svcname }, &["svcname"])?
        }
        "set_node_monitor" => {
            let status =
                opts.opt_enum("status", NodeMonitorStatus::parse, NodeMonitorStatus::ALL)?;
            let local_expect =
                opts.opt_enum("local_expect", NodeLocalExpect::parse, NodeLocalExpect::ALL)?;
            opts.done(
                Request::SetNodeMonitor {
                    status,
                    local_expect,
                },
                &["status", "local_expect"],
            )?
        }
        "set_service_monitor" => {
            let svcname = opts.svcname()?;
            let status = opts.opt_enum(
                "status",
                ServiceMonitorStatus::parse,
                ServiceMonitorStatus::ALL,
            )?;
            let local_expect = opts.opt_enum(
                "local_expect",
                ServiceLocalExpect::parse,
                ServiceLocalExpect::ALL,
            )?;
            let global_expect =
                opts.opt_enum("global_expect", GlobalExpect::parse, GlobalExpect::ALL)?;
            let reset_retries = opts.opt_bool("reset_retries")?.unwrap_or(false);
            opts.done(
                Request::SetServiceMonitor {
                    svcname,
                    status,
                    local_expect,
                    global_expect,
                    reset_retries,
                },
                &[
                    "svcname",
                    "status",
                    "local_expect",
                    "global_expect",
                    "reset_retries",
                ],
            )?
        }
        "service_action" => {
            let svcname = opts.svcname()?;
            let command = opts.string_list("command")?;
            let sync = opts.opt_bool("sync")?.unwrap_or(true);
            opts.done(
                Request::ServiceAction {
                    svcname,
                    command,
                    sync,
                },
                &["svcname", "command", "sync"],
            )?
        }
        "service_logs" => {
            let svcname = opts.svcname()?;
            let backlog = opts.opt_u64("backlog")?;
            let follow = opts.opt_bool("follow")?.unwrap_or(false);
            opts.done(
                Request::ServiceLogs {
                    svcname,
                    backlog,
                    follow,
                },
                &["svcname", "backlog", "follow"],
            )?
        }
        // ACTIONS and this match list the same names.
        other => return Err(PayloadError::UnknownAction(other.to_string())),
    };
    Ok(request)
}

/// JSON leaves repeated names undefined (RFC 8259, section 4) and parsers disagree on them:
/// most keep the last, simd-json's document tree keeps the first in an object of up to 32
/// names and the last in a larger one. A request that repeats a name is refused rather than
/// read differently by different peers.
const MAX_KEYS: usize = 32;

fn reject_duplicate_keys(obj: &Object<'_, '_>, action: &'static str) -> Result<(), PayloadError> {
    if obj.len() > MAX_KEYS {
        // No request object has more than five legal names (and past 32 simd-json's document
        // tree would have merged repeated ones already).
        return Err(PayloadError::TooManyKeys { action });
    }
    // At most 32 names: gather them on the stack and compare pairs rather than allocate to
    // sort. Report the smallest repeated name, so the error does not depend on key order.
    let mut names = [""; MAX_KEYS];
    let mut n = 0;
    for (slot, key) in names.iter_mut().zip(obj.keys()) {
        *slot = key;
        n += 1;
    }
    let names = &names[..n];
    let mut repeated: Option<&str> = None;
    for (i, a) in names.iter().enumerate() {
        if repeated.is_none_or(|r| *a < r) && names[i + 1..].contains(a) {
            repeated = Some(a);
        }
    }
    match repeated {
        Some(field) => Err(PayloadError::DuplicateKey {
            action,
            field: field.to_string(),
        }),
        None => Ok(()),
    }
}

/// A service name is used as a file name: letters, digits, '-', '_', '.', starting with a
/// letter or digit, at most 64 bytes.
pub fn valid_svcname(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err("must be 1 to 64 characters".into());
    }
    let first_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if first_ok && rest_ok {
        Ok(())
    } else {
        Err(format!(
            "invalid service name {name:?}: letters, digits, '-', '_' and '.' only, starting with a letter or digit"
        ))
    }
}

struct Options<'v, 'a> {
    action: &'static str,
    map: Option<Object<'v, 'a>>,
}

impl<'v, 'a> Options<'v, 'a> {
    fn new(action: &'static str, value: Option<Value<'v, 'a>>) -> Result<Self, PayloadError> {
        let map = match value {
            None => None,
            Some(v) if v.is_null() => None,
            Some(v) => Some(
                v.as_object()
                    .ok_or(PayloadError::OptionsNotObject { action })?,
            ),
        };
        if let Some(map) = &map {
            reject_duplicate_keys(map, action)?;
        }
        Ok(Options { action, map })
    }

    fn get(&self, field: &str) -> Option<Value<'v, 'a>> {
        self.map
            .as_ref()
            .and_then(|m| m.get(field))
            .filter(|v| !v.is_null())
    }

    fn bad(&self, field: &'static str, message: impl Into<String>) -> PayloadError {
        PayloadError::BadField {
            action: self.action,
            field,
            message: message.into(),
        }
    }

    fn opt_string(&self, field: &'static str) -> Result<Option<String>, PayloadError> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(|s| Some(s.to_string()))
                .ok_or_else(|| self.bad(field, "expected a string")),
        }
    }

    fn svcname(&self) -> Result<String, PayloadError> {
        let name = self
            .opt_string("svcname")?
            .ok_or(PayloadError::MissingField {
                action: self.action,
                field: "svcname",
            })?;
        valid_svcname(&name).map_err(|m| self.bad("svcname", m))?;
        Ok(name)
    }

    fn opt_bool(&self, field: &'static str) -> Result<Option<bool>, PayloadError> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.bad(field, "expected true or false")),
        }
    }

    fn opt_u64(&self, field: &'static str) -> Result<Option<u64>, PayloadError> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| self.bad(field, "expected a non-negative integer")),
        }
    }

    fn opt_enum<T>(
        &self,
        field: &'static str,
        parse: fn(&str) -> Option<T>,
        all: &[&str],
    ) -> Result<Option<T>, PayloadError> {
        match self.opt_string(field)? {
            None => Ok(None),
            Some(s) => parse(&s).map(Some).ok_or_else(|| {
                self.bad(
                    field,
                    format!("invalid value {s:?}, expected one of: {}", all.join(", ")),
                )
            }),
        }
    }

    fn string_list(&self, field: &'static str) -> Result<Vec<String>, PayloadError> {
        let v = self.get(field).ok_or(PayloadError::MissingField {
            action: self.action,
            field,
        })?;
        let arr = v
            .as_array()
            .ok_or_else(|| self.bad(field, "expected an array of strings"))?;
        if arr.is_empty() {
            return Err(self.bad(field, "must not be empty"));
        }
        let mut list = Vec::with_capacity(arr.len());
        for x in arr.iter() {
            let s = x
                .as_str()
                .ok_or_else(|| self.bad(field, "expected an array of strings"))?;
            list.push(s.to_string());
        }
        Ok(list)
    }

    /// Refuses any option not in `known`, then returns the request.
    fn done(&self, request: Request, known: &[&str]) -> Result<Request, PayloadError> {
        if let Some(map) = &self.map
            && let Some(field) = map.keys().find(|k| !known.contains(k))
        {
            return Err(PayloadError::UnknownField {
                action: self.action,
                field: field.to_string(),
            });
        }
        Ok(request)
    }
}

/// A response (kind 2), or a stream chunk (kind 4) when `eos` is set or more chunks follow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub status: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub eos: bool,
}

impl Response {
    pub fn ok(data: serde_json::Value) -> Self {
        Response {
            status: 0,
            data: Some(data),
            error: None,
            eos: false,
        }
    }

    pub fn error(message: impl Into<String>) -> Self {
        Response {
            status: 1,
            data: None,
            error: Some(message.into()),
            eos: false,
        }
    }

    pub fn to_vec(&self) -> Vec<u8> {
        // Serializing plain data into a Vec cannot fail.
        serde_json::to_vec(self).unwrap_or_else(|_| br#"{"status":1}"#.to_vec())
    }

    pub fn parse(payload: &mut [u8]) -> Result<Self, PayloadError> {
        simd_json::serde::from_slice(payload).map_err(|e| PayloadError::Json(e.to_string()))
    }
}

/// A heartbeat (kind 3): the sender's generation, node monitor and service instances, whole
/// or as the changed part (see `crate::hb` for the delta fields).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub r#gen: u64,
    #[serde(default)]
    pub monitor: serde_json::Value,
    #[serde(default)]
    pub services: serde_json::Map<String, serde_json::Value>,
    /// 0: the whole content (or one part of it); F: the changes since the full content of F.
    #[serde(default)]
    pub since: u64,
    /// `[i, n]`: part i of a full content split over n datagrams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<[u64; 2]>,
    /// Services removed since `since` (deltas only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<Vec<String>>,
    /// The sender's start time: a restarted sender's generations start again.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub boot: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl Heartbeat {
    pub fn parse(payload: &mut [u8]) -> Result<Self, PayloadError> {
        simd_json::serde::from_slice(payload).map_err(|e| PayloadError::Heartbeat(e.to_string()))
    }

    /// Back to the JSON document, for `hb::HbView::apply`.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(s: &str) -> Result<Request, PayloadError> {
        parse_request(&mut s.as_bytes().to_vec())
    }

    #[test]
    fn parses_the_documented_example() {
        let r = parse(r#"{"action": "set_service_monitor", "options": {"svcname": "svc1", "local_expect": "started"}}"#)
            .unwrap();
        assert_eq!(
            r,
            Request::SetServiceMonitor {
                svcname: "svc1".into(),
                status: None,
                local_expect: Some(ServiceLocalExpect::Started),
                global_expect: None,
                reset_retries: false,
            }
        );
        assert_eq!(r.svcname(), Some("svc1"));
    }

    #[test]
    fn errors_name_the_culprit() {
        let e = |s| parse(s).unwrap_err().to_string();
        assert!(e("{").starts_with("malformed JSON"));
        assert_eq!(e("[1]"), "payload is not a JSON object");
        assert_eq!(e(r#"{"options":{}}"#), "missing \"action\"");
        assert_eq!(e(r#"{"action":"rm_rf"}"#), "unknown action \"rm_rf\"");
        assert_eq!(
            e(r#"{"action":"clear"}"#),
            "clear: missing option \"svcname\""
        );
        assert_eq!(
            e(r#"{"action":"clear","options":{"svcname":"a","x":1}}"#),
            "clear: unknown option \"x\""
        );
        assert!(e(r#"{"action":"clear","options":{"svcname":"../etc"}}"#).contains("svcname"));
        assert!(
            e(r#"{"action":"set_node_monitor","options":{"status":"sleepy"}}"#)
                .contains("set_node_monitor: option \"status\": invalid value \"sleepy\"")
        );
        assert_eq!(
            e(r#"{"action":"daemon_status","options":3}"#),
            "daemon_status: \"options\" must be an object"
        );
        assert!(
            e(r#"{"action":"service_action","options":{"svcname":"s","command":"ls"}}"#)
                .contains("command")
        );
    }

    fn arb_name() -> impl Strategy<Value = String> {
        "[a-z0-9][a-z0-9_.-]{0,20}"
    }

    fn arb_request() -> impl Strategy<Value = Request> {
        let opt_str = proptest::option::of("[a-z0-9.]{1,10}");
        prop_oneof![
            Just(Request::DaemonStatus),
            opt_str
                .clone()
                .prop_map(|thread_id| Request::DaemonStop { thread_id }),
            opt_str.prop_map(|thread_id| Request::DaemonStart { thread_id }),
            Just(Request::BlacklistClear),
            Just(Request::Join),
            arb_name().prop_map(|svcname| Request::Clear { svcname }),
            (
                arb_name(),
                prop::collection::vec(".{0,8}", 1..4),
                any::<bool>()
            )
                .prop_map(|(svcname, command, sync)| Request::ServiceAction {
                    svcname,
                    command,
                    sync
                }),
            (
                arb_name(),
                proptest::option::of(0u64..100_000),
                any::<bool>()
            )
                .prop_map(|(svcname, backlog, follow)| Request::ServiceLogs {
                    svcname,
                    backlog,
                    follow
                }),
            (arb_name(), any::<bool>()).prop_map(|(svcname, reset_retries)| {
                Request::SetServiceMonitor {
                    svcname,
                    status: Some(ServiceMonitorStatus::StartFailed),
                    local_expect: None,
                    global_expect: Some(GlobalExpect::Frozen),
                    reset_retries,
                }
            }),
        ]
    }

    proptest! {
        #[test]
        fn request_round_trip(r in arb_request()) {
            let mut bytes = r.to_vec();
            prop_assert_eq!(parse_request(&mut bytes).unwrap(), r);
        }

        /// One parser reused across requests, garbage and oversized documents (its tape is
        /// kept between calls) reads each exactly as a fresh parser does.
        #[test]
        fn reused_parser_matches_fresh(docs in prop::collection::vec(prop_oneof![
            arb_request().prop_map(|r| r.to_vec()),
            prop::collection::vec(any::<u8>(), 0..64),
            (1usize..3000).prop_map(|n| {
                let command: Vec<String> = (0..n).map(|i| i.to_string()).collect();
                Request::ServiceAction { svcname: "s".into(), command, sync: false }.to_vec()
            }),
        ], 1..8)) {
            let mut parser = RequestParser::new();
            for doc in docs {
                let reused = parser.parse(&mut doc.clone());
                prop_assert_eq!(reused, parse_request(&mut doc.clone()));
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(mut bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_request(&mut bytes);
        }
    }

    #[test]
    fn response_and_heartbeat() {
        let mut r = Response::error("unknown service svc1").to_vec();
        assert_eq!(
            String::from_utf8(r.clone()).unwrap(),
            r#"{"status":1,"error":"unknown service svc1"}"#
        );
        assert_eq!(
            Response::parse(&mut r).unwrap().error.as_deref(),
            Some("unknown service svc1")
        );
        let mut hb =
            br#"{"gen": 12, "monitor": {"status":"idle"}, "services": {"svc1": {}}}"#.to_vec();
        let hb = Heartbeat::parse(&mut hb).unwrap();
        assert_eq!(hb.r#gen, 12);
        assert!(hb.services.contains_key("svc1"));
    }

    /// What the listener parses is handed to `hb::HbView` whole: nothing may be lost.
    #[test]
    fn heartbeat_fields_survive_for_the_view() {
        for text in [
            r#"{"gen":3,"since":0,"monitor":{"status":"idle"},"services":{"a":{"avail":"up"}}}"#,
            r#"{"gen":4,"since":0,"part":[1,2],"boot":17,"monitor":{},"services":{}}"#,
            r#"{"gen":5,"since":4,"monitor":{},"services":{"b":1},"removed":["a"]}"#,
        ] {
            let mut bytes = text.as_bytes().to_vec();
            let hb = Heartbeat::parse(&mut bytes).unwrap();
            let expected: serde_json::Value = serde_json::from_str(text).unwrap();
            assert_eq!(hb.to_value(), expected);
            assert!(
                crate::hb::HbView::new().apply(&hb.to_value()).is_ok(),
                "{text}"
            );
        }
    }
}
