//! JSON payloads (PROTOCOL.md, "Payloads"): requests read by the JSON scanner straight from
//! the decrypted buffer into typed values, and responses. Heartbeats: `super::heartbeat`.

use serde::{Deserialize, Serialize};

use super::json::{Fail, Peek, Scalar, Scanner, Str};

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
        command: Args,
        sync: bool,
    },
    ServiceLogs {
        svcname: String,
        backlog: Option<u64>,
        follow: bool,
    },
    /// Sets the keyring's alternate secret.
    KeyringInstall {
        secret: Secret,
    },
    /// Swaps primary and alternate if the alternate has this fingerprint.
    KeyringUse {
        fingerprint: String,
    },
    /// Drops the alternate if it has this fingerprint.
    KeyringRemove {
        fingerprint: String,
    },
    KeyringList,
    /// A member asks an arbitrator for its vote, for the members it sees (its partition).
    ArbitratorVote {
        /// Sorted, without repeats.
        partition: Vec<String>,
        /// A grant longer than the arbitrator's lease, up to `MAX_HOLD_MS`: asked by a member
        /// whose daemon stops while its instances run on (its maintenance grace period).
        hold_ms: Option<u64>,
    },
}

/// A cluster secret carried by a request: its `Debug` shows nothing of it, so that no log of
/// a request can reveal one.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Longer than any secret an operator writes, short enough for one line of node.conf.
    pub const MAX_LEN: usize = 1024;

    /// A secret that `node.conf` stores as it is: 1 to `MAX_LEN` bytes, no control
    /// character, no surrounding whitespace (an INI value is trimmed). The error says what
    /// is wrong, never what the secret is.
    pub fn new(secret: String) -> Result<Secret, &'static str> {
        if secret.is_empty() || secret.len() > Self::MAX_LEN {
            return Err("a secret is 1 to 1024 bytes");
        }
        if secret.chars().any(char::is_control) {
            return Err("a secret has no control characters");
        }
        if secret.trim() != secret {
            return Err("a secret neither starts nor ends with whitespace");
        }
        Ok(Secret(secret))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// A fingerprint option: 16 hex digits, returned in lowercase (PROTOCOL.md, "Secret
/// rotation").
pub fn valid_fingerprint(fp: &str) -> Result<String, &'static str> {
    if fp.len() == 16 && fp.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(fp.to_ascii_lowercase())
    } else {
        Err("expected 16 hexadecimal digits")
    }
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
    "keyring_install",
    "keyring_use",
    "keyring_remove",
    "keyring_list",
    "arbitrator_vote",
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
            Request::KeyringInstall { .. } => "keyring_install",
            Request::KeyringUse { .. } => "keyring_use",
            Request::KeyringRemove { .. } => "keyring_remove",
            Request::KeyringList => "keyring_list",
            Request::ArbitratorVote { .. } => "arbitrator_vote",
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
            | Request::Leave
            | Request::KeyringList => {}
            Request::KeyringInstall { secret } => put("secret", json!(secret.expose())),
            Request::KeyringUse { fingerprint } | Request::KeyringRemove { fingerprint } => {
                put("fingerprint", json!(fingerprint))
            }
            Request::ArbitratorVote { partition, hold_ms } => {
                put("partition", json!(partition));
                if let Some(h) = hold_ms {
                    put("hold_ms", json!(h));
                }
            }
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

/// Reusable parser state: the lists one request's objects are read into, kept between frames
/// so that a worker does not allocate them per request. One pass of the JSON scanner
/// validates the whole document and collects the top-level and option fields; the typed
/// `Request` is then built from them, so every malformed document is "malformed JSON" and a
/// request's other errors do not depend on where in the document the scan stopped.
#[derive(Default)]
pub struct RequestParser {
    /// Empty between calls; only their allocations are kept.
    top: Vec<Field<'static>>,
    options: Vec<Field<'static>>,
    strings: Vec<Str<'static>>,
}

/// A value as far as a request needs it: scalars, and arrays of strings (the command line).
#[derive(Clone, Copy, Debug)]
enum Val<'b> {
    Null,
    Bool(bool),
    Number(Option<u64>),
    Str(Str<'b>),
    /// An array whose elements are all strings: `strings[start..start + len]`.
    Strings {
        start: usize,
        len: usize,
    },
    /// Another array, or an object: validated, not interpreted.
    Other,
    /// The `options` object, read into the option list.
    Options,
}

type Field<'b> = (Str<'b>, Val<'b>);

/// An empty vector of another type of the same layout (here: the same type with another
/// lifetime), keeping the allocation: the in-place `collect` of an empty iterator.
fn recycle<T, U>(mut v: Vec<T>) -> Vec<U> {
    v.clear();
    v.into_iter()
        .map(|_| -> U { unreachable!("the vector is empty") })
        .collect()
}

/// A larger list than this, grown by an unusually large request, is not kept.
const MAX_KEPT: usize = 1 << 12;

impl RequestParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses a request from a decrypted payload.
    pub fn parse(&mut self, payload: &[u8]) -> Result<Request, PayloadError> {
        let mut doc = Doc {
            top: recycle(std::mem::take(&mut self.top)),
            options: recycle(std::mem::take(&mut self.options)),
            strings: recycle(std::mem::take(&mut self.strings)),
        };
        let mut s = Scanner::new(payload);
        let request = match doc.scan(&mut s) {
            Ok(true) => doc.request(),
            Ok(false) => Err(PayloadError::NotAnObject),
            Err(Fail) => Err(PayloadError::Json(s.error().to_string())),
        };
        let Doc {
            top,
            options,
            strings,
        } = doc;
        if top.capacity() <= MAX_KEPT && options.capacity() <= MAX_KEPT {
            self.top = recycle(top);
            self.options = recycle(options);
        }
        if strings.capacity() <= MAX_KEPT {
            self.strings = recycle(strings);
        }
        request
    }
}

/// One-shot parse, for callers without a parser at hand.
pub fn parse_request(payload: &[u8]) -> Result<Request, PayloadError> {
    RequestParser::new().parse(payload)
}

/// One request document as read by the scanner.
struct Doc<'b> {
    top: Vec<Field<'b>>,
    options: Vec<Field<'b>>,
    strings: Vec<Str<'b>>,
}

impl<'b> Doc<'b> {
    /// Validates the whole document and collects its fields; false if it is not an object.
    fn scan(&mut self, s: &mut Scanner<'b>) -> Result<bool, Fail> {
        if s.peek()? != Peek::Object {
            s.skip()?;
            s.end()?;
            return Ok(false);
        }
        let mut options_read = false;
        let mut seq = s.begin_object()?;
        while let Some(key) = s.next_key(&mut seq)? {
            let val = if !options_read && key.eq_str("options") && s.peek()? == Peek::Object {
                // Only the first `options` is read: a second one is refused as a repeated key.
                options_read = true;
                let mut inner = s.begin_object()?;
                while let Some(k) = s.next_key(&mut inner)? {
                    let v = read_val(s, &mut self.strings)?;
                    self.options.push((k, v));
                }
                Val::Options
            } else {
                read_val(s, &mut self.strings)?
            };
            self.top.push((key, val));
        }
        s.end()?;
        Ok(true)
    }

    fn request(&self) -> Result<Request, PayloadError> {
        reject_duplicate_keys(&self.top, "request")?;
        if let Some((key, _)) = self
            .top
            .iter()
            .find(|(k, _)| !k.eq_str("action") && !k.eq_str("options"))
        {
            return Err(PayloadError::UnknownField {
                action: "request",
                field: key.value().into_owned(),
            });
        }
        let action_text = match get(&self.top, "action") {
            Some(Val::Str(s)) => s.value(),
            _ => return Err(PayloadError::MissingAction),
        };
        let action: &'static str = ACTIONS
            .iter()
            .find(|a| **a == action_text)
            .ok_or_else(|| PayloadError::UnknownAction(action_text.to_string()))?;
        let options = match get(&self.top, "options") {
            None => None,
            Some(Val::Options) => Some(&self.options[..]),
            Some(_) => return Err(PayloadError::OptionsNotObject { action }),
        };
        if let Some(fields) = options {
            reject_duplicate_keys(fields, action)?;
        }
        let opts = Options {
            action,
            fields: options.unwrap_or(&[]),
            strings: &self.strings,
        };
        request_from_options(action, &opts)
    }
}

/// The first field named `name` (null counts as absent).
fn get<'f, 'b>(fields: &'f [Field<'b>], name: &str) -> Option<&'f Val<'b>> {
    fields
        .iter()
        .find(|(k, _)| k.eq_str(name))
        .map(|(_, v)| v)
        .filter(|v| !matches!(v, Val::Null))
}

fn read_val<'b>(s: &mut Scanner<'b>, strings: &mut Vec<Str<'b>>) -> Result<Val<'b>, Fail> {
    if s.peek()? != Peek::Array {
        return Ok(match s.scalar()? {
            Scalar::Null => Val::Null,
            Scalar::Bool(b) => Val::Bool(b),
            Scalar::Number(n) => Val::Number(n),
            Scalar::Str(x) => Val::Str(x),
            Scalar::Container(_) => Val::Other,
        });
    }
    let start = strings.len();
    if s.strings_into(strings)? {
        Ok(Val::Strings {
            start,
            len: strings.len() - start,
        })
    } else {
        strings.truncate(start);
        Ok(Val::Other)
    }
}

fn request_from_options(
    action: &'static str,
    opts: &Options<'_, '_>,
) -> Result<Request, PayloadError> {
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
        "keyring_list" => opts.done(Request::KeyringList, &[])?,
        "keyring_install" => {
            let secret = opts
                .opt_string("secret")?
                .ok_or(PayloadError::MissingField {
                    action,
                    field: "secret",
                })?;
            let secret = Secret::new(secret).map_err(|m| opts.bad("secret", m))?;
            opts.done(Request::KeyringInstall { secret }, &["secret"])?
        }
        "keyring_use" => {
            let fingerprint = opts.fingerprint()?;
            opts.done(Request::KeyringUse { fingerprint }, &["fingerprint"])?
        }
        "keyring_remove" => {
            let fingerprint = opts.fingerprint()?;
            opts.done(Request::KeyringRemove { fingerprint }, &["fingerprint"])?
        }
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
        "arbitrator_vote" => {
            let list = opts.string_list("partition")?;
            if list.len() > MAX_PARTITION {
                return Err(opts.bad("partition", "too many names"));
            }
            let mut partition = list.to_vec();
            if partition
                .iter()
                .any(|n| n.is_empty() || n.len() > 255 || n.chars().any(char::is_whitespace))
            {
                return Err(opts.bad("partition", "node names are 1 to 255 bytes, no whitespace"));
            }
            partition.sort_unstable();
            partition.dedup();
            let hold_ms = opts.opt_u64("hold_ms")?;
            if hold_ms.is_some_and(|h| h > MAX_HOLD_MS) {
                return Err(opts.bad("hold_ms", "at most 3600000 (one hour)"));
            }
            opts.done(
                Request::ArbitratorVote { partition, hold_ms },
                &["partition", "hold_ms"],
            )?
        }
        // ACTIONS and this match list the same names.
        other => return Err(PayloadError::UnknownAction(other.to_string())),
    };
    Ok(request)
}

/// The longest grant a member may ask an arbitrator for.
pub const MAX_HOLD_MS: u64 = 3_600_000;

/// More members than any cluster has.
const MAX_PARTITION: usize = 1024;

/// JSON leaves repeated names undefined (RFC 8259, section 4) and parsers disagree on them:
/// most keep the last, some the first. A request that repeats a name is refused rather than
/// read differently by different peers.
const MAX_KEYS: usize = 32;

fn reject_duplicate_keys(fields: &[Field<'_>], action: &'static str) -> Result<(), PayloadError> {
    if fields.len() > MAX_KEYS {
        // No request object has more than five legal names.
        return Err(PayloadError::TooManyKeys { action });
    }
    // At most 32 names: compare pairs rather than allocate to sort. Report the smallest
    // repeated name, so the error does not depend on key order.
    let mut repeated: Option<std::borrow::Cow<'_, str>> = None;
    for (i, (a, _)) in fields.iter().enumerate() {
        if fields[i + 1..].iter().any(|(b, _)| a.same(b)) {
            let name = a.value();
            if repeated.as_ref().is_none_or(|r| name < *r) {
                repeated = Some(name);
            }
        }
    }
    match repeated {
        Some(field) => Err(PayloadError::DuplicateKey {
            action,
            field: field.into_owned(),
        }),
        None => Ok(()),
    }
}

/// Why a name cannot be a service's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSvcname {
    #[error("must be 1 to 64 characters")]
    Length,
    #[error("\"node\" names the node's own configuration, not a service")]
    Reserved,
    #[error(
        "invalid service name {0:?}: letters, digits, '-', '_' and '.' only, starting with a letter or digit"
    )]
    Characters(String),
}

/// A service name is used as a file name: letters, digits, '-', '_', '.', starting with a
/// letter or digit, at most 64 bytes.
pub fn valid_svcname(name: &str) -> Result<(), InvalidSvcname> {
    if name.is_empty() || name.len() > 64 {
        return Err(InvalidSvcname::Length);
    }
    if name == "node" {
        return Err(InvalidSvcname::Reserved);
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
        Err(InvalidSvcname::Characters(name.to_string()))
    }
}

struct Options<'f, 'b> {
    action: &'static str,
    fields: &'f [Field<'b>],
    strings: &'f [Str<'b>],
}

impl Options<'_, '_> {
    fn bad(&self, field: &'static str, message: impl Into<String>) -> PayloadError {
        PayloadError::BadField {
            action: self.action,
            field,
            message: message.into(),
        }
    }

    fn opt_string(&self, field: &'static str) -> Result<Option<String>, PayloadError> {
        match get(self.fields, field) {
            None => Ok(None),
            Some(Val::Str(s)) => Ok(Some(s.value().into_owned())),
            Some(_) => Err(self.bad(field, "expected a string")),
        }
    }

    fn svcname(&self) -> Result<String, PayloadError> {
        let name = self
            .opt_string("svcname")?
            .ok_or(PayloadError::MissingField {
                action: self.action,
                field: "svcname",
            })?;
        valid_svcname(&name).map_err(|m| self.bad("svcname", m.to_string()))?;
        Ok(name)
    }

    fn fingerprint(&self) -> Result<String, PayloadError> {
        let fp = self
            .opt_string("fingerprint")?
            .ok_or(PayloadError::MissingField {
                action: self.action,
                field: "fingerprint",
            })?;
        valid_fingerprint(&fp).map_err(|m| self.bad("fingerprint", m))
    }

    fn opt_bool(&self, field: &'static str) -> Result<Option<bool>, PayloadError> {
        match get(self.fields, field) {
            None => Ok(None),
            Some(Val::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(self.bad(field, "expected true or false")),
        }
    }

    fn opt_u64(&self, field: &'static str) -> Result<Option<u64>, PayloadError> {
        match get(self.fields, field) {
            None => Ok(None),
            Some(Val::Number(Some(n))) => Ok(Some(*n)),
            Some(_) => Err(self.bad(field, "expected a non-negative integer")),
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

    fn string_list(&self, field: &'static str) -> Result<Args, PayloadError> {
        let list = match get(self.fields, field) {
            None => {
                return Err(PayloadError::MissingField {
                    action: self.action,
                    field,
                });
            }
            Some(Val::Strings { start, len }) => &self.strings[*start..*start + *len],
            Some(_) => return Err(self.bad(field, "expected an array of strings")),
        };
        if list.is_empty() {
            return Err(self.bad(field, "must not be empty"));
        }
        let mut args = Args::with_capacity(list.len(), list.iter().map(|s| s.raw_len()).sum());
        for s in list {
            args.push_str_value(s);
        }
        Ok(args)
    }

    /// Refuses any option not in `known`, then returns the request.
    fn done(&self, request: Request, known: &[&str]) -> Result<Request, PayloadError> {
        if let Some((field, _)) = self
            .fields
            .iter()
            .find(|(k, _)| !known.iter().any(|n| k.eq_str(n)))
        {
            return Err(PayloadError::UnknownField {
                action: self.action,
                field: field.value().into_owned(),
            });
        }
        Ok(request)
    }
}

/// A list of strings (a command line) in one buffer: one allocation for the text and one for
/// the boundaries, however many arguments.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Args {
    text: String,
    ends: Vec<u32>,
}

impl Args {
    fn with_capacity(count: usize, bytes: usize) -> Self {
        Args {
            text: String::with_capacity(bytes),
            ends: Vec::with_capacity(count),
        }
    }

    fn push_str_value(&mut self, s: &Str<'_>) {
        s.push_to(&mut self.text);
        self.ends.push(self.text.len() as u32);
    }

    pub fn push(&mut self, s: &str) {
        self.text.push_str(s);
        self.ends.push(self.text.len() as u32);
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn get(&self, i: usize) -> Option<&str> {
        let end = *self.ends.get(i)? as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        self.text.get(start..end)
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        (0..self.len()).map(|i| self.get(i).unwrap_or(""))
    }

    pub fn to_vec(&self) -> Vec<String> {
        self.iter().map(str::to_owned).collect()
    }
}

impl std::fmt::Debug for Args {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<S: AsRef<str>> FromIterator<S> for Args {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        let mut args = Args::default();
        for s in iter {
            args.push(s.as_ref());
        }
        args
    }
}

impl From<Vec<String>> for Args {
    fn from(v: Vec<String>) -> Self {
        v.iter().collect()
    }
}

impl<const N: usize> From<[&str; N]> for Args {
    fn from(v: [&str; N]) -> Self {
        v.iter().collect()
    }
}

impl Serialize for Args {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
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
    /// `data` already encoded as JSON text, sent as it is (`Response::ok_encoded`): a large
    /// answer written straight from the raw JSON it is made of, with no document tree.
    #[serde(skip)]
    pub encoded_data: Option<String>,
}

impl Response {
    pub fn ok(data: serde_json::Value) -> Self {
        Response {
            status: 0,
            data: Some(data),
            error: None,
            eos: false,
            encoded_data: None,
        }
    }

    /// A success whose `data` is `json`, a JSON document the caller wrote (and vouches for).
    pub fn ok_encoded(json: String) -> Self {
        Response {
            status: 0,
            data: None,
            error: None,
            eos: false,
            encoded_data: Some(json),
        }
    }

    pub fn error(message: impl Into<String>) -> Self {
        Response {
            status: 1,
            data: None,
            error: Some(message.into()),
            eos: false,
            encoded_data: None,
        }
    }

    pub fn to_vec(&self) -> Vec<u8> {
        let data_len = self.encoded_data.as_ref().map_or(0, String::len);
        let mut out = Vec::with_capacity(64 + data_len);
        // Serializing plain data into a Vec cannot fail.
        if serde_json::to_writer(&mut out, self).is_err() {
            out.clear();
            out.extend_from_slice(br#"{"status":1}"#);
        }
        if let Some(data) = &self.encoded_data {
            // `{"status":0...}` ends with its `}`: the data goes just before it.
            out.pop();
            out.extend_from_slice(b",\"data\":");
            out.extend_from_slice(data.as_bytes());
            out.push(b'}');
        }
        out
    }

    pub fn parse(payload: &mut [u8]) -> Result<Self, PayloadError> {
        simd_json::serde::from_slice(payload).map_err(|e| PayloadError::Json(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(s: &str) -> Result<Request, PayloadError> {
        parse_request(s.as_bytes())
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

    /// A secret travels in `keyring_install` but shows in no `Debug` of the request, and
    /// the parser's errors about it say what is wrong, not what it is.
    #[test]
    fn keyring_requests_hide_the_secret() {
        let r =
            parse(r#"{"action":"keyring_install","options":{"secret":"s3cr3t-value"}}"#).unwrap();
        assert_eq!(r.action(), "keyring_install");
        assert!(!format!("{r:?}").contains("s3cr3t"));
        let e = parse(r#"{"action":"keyring_install","options":{"secret":" s3cr3t-value"}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("secret") && !e.contains("s3cr3t"), "{e}");
        assert_eq!(
            parse(r#"{"action":"keyring_use","options":{"fingerprint":"8213A94A1A4DA7C3"}}"#),
            Ok(Request::KeyringUse {
                fingerprint: "8213a94a1a4da7c3".into()
            })
        );
        assert!(parse(r#"{"action":"keyring_remove","options":{"fingerprint":"xyz"}}"#).is_err());
        assert_eq!(
            parse(r#"{"action":"keyring_list"}"#),
            Ok(Request::KeyringList)
        );
    }

    #[test]
    fn arbitrator_vote_takes_a_partition_of_node_names() {
        assert_eq!(
            parse(r#"{"action":"arbitrator_vote","options":{"partition":["n2","n1","n2"]}}"#),
            Ok(Request::ArbitratorVote {
                partition: vec!["n1".into(), "n2".into()],
                hold_ms: None,
            })
        );
        for (bad, msg) in [
            (
                r#"{"action":"arbitrator_vote"}"#,
                "missing option \"partition\"",
            ),
            (
                r#"{"action":"arbitrator_vote","options":{"partition":[]}}"#,
                "must not be empty",
            ),
            (
                r#"{"action":"arbitrator_vote","options":{"partition":"n1"}}"#,
                "expected an array of strings",
            ),
            (
                r#"{"action":"arbitrator_vote","options":{"partition":["n 1"]}}"#,
                "no whitespace",
            ),
            (
                r#"{"action":"arbitrator_vote","options":{"partition":[""]}}"#,
                "no whitespace",
            ),
            (
                r#"{"action":"arbitrator_vote","options":{"partition":["n1"],"hold_ms":3600001}}"#,
                "at most 3600000",
            ),
            (
                r#"{"action":"arbitrator_vote","options":{"partition":["n1"],"hold_ms":-1}}"#,
                "non-negative integer",
            ),
            (
                r#"{"action":"arbitrator_vote","options":{"partition":["n1"],"x":1}}"#,
                "unknown option \"x\"",
            ),
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(
                e.starts_with("arbitrator_vote: ") && e.contains(msg),
                "{bad}: {e}"
            );
        }
        let many: Vec<String> = (0..=MAX_PARTITION).map(|i| format!("n{i}")).collect();
        let text = serde_json::json!({"action": "arbitrator_vote", "options": {"partition": many}})
            .to_string();
        assert!(
            parse(&text)
                .unwrap_err()
                .to_string()
                .contains("too many names")
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
            Just(Request::KeyringList),
            (
                prop::collection::btree_set(arb_name(), 1..5),
                proptest::option::of(0..=MAX_HOLD_MS)
            )
                .prop_map(|(p, hold_ms)| Request::ArbitratorVote {
                    partition: p.into_iter().collect(),
                    hold_ms
                }),
            "[!-~]([ -~]{0,30}[!-~])?".prop_map(|s| Request::KeyringInstall {
                secret: Secret::new(s).unwrap()
            }),
            "[0-9a-f]{16}".prop_map(|fingerprint| Request::KeyringUse { fingerprint }),
            "[0-9a-f]{16}".prop_map(|fingerprint| Request::KeyringRemove { fingerprint }),
            arb_name().prop_map(|svcname| Request::Clear { svcname }),
            (
                arb_name(),
                prop::collection::vec(".{0,8}", 1..4),
                any::<bool>()
            )
                .prop_map(|(svcname, command, sync)| Request::ServiceAction {
                    svcname,
                    command: command.into(),
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
            let bytes = r.to_vec();
            prop_assert_eq!(parse_request(&bytes).unwrap(), r);
        }

        /// One parser reused across requests, garbage and oversized documents (its lists are
        /// kept between calls) reads each exactly as a fresh parser does.
        #[test]
        fn reused_parser_matches_fresh(docs in prop::collection::vec(prop_oneof![
            arb_request().prop_map(|r| r.to_vec()),
            prop::collection::vec(any::<u8>(), 0..64),
            (1usize..3000).prop_map(|n| {
                let command: Args = (0..n).map(|i| i.to_string()).collect();
                Request::ServiceAction { svcname: "s".into(), command, sync: false }.to_vec()
            }),
        ], 1..8)) {
            let mut parser = RequestParser::new();
            for doc in docs {
                let reused = parser.parse(&doc.clone());
                prop_assert_eq!(reused, parse_request(&doc.clone()));
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_request(&bytes);
        }
    }

    #[test]
    fn encoded_data_is_sent_as_it_is() {
        let r = Response::ok_encoded(r#"{"a":[1,{"b":"é"}]}"#.into());
        let mut bytes = r.to_vec();
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            r#"{"status":0,"data":{"a":[1,{"b":"é"}]}}"#
        );
        let back = Response::parse(&mut bytes).unwrap();
        assert_eq!(back.data, Some(serde_json::json!({"a": [1, {"b": "é"}]})));
    }

    #[test]
    fn response_round_trip() {
        let mut r = Response::error("unknown service svc1").to_vec();
        assert_eq!(
            String::from_utf8(r.clone()).unwrap(),
            r#"{"status":1,"error":"unknown service svc1"}"#
        );
        assert_eq!(
            Response::parse(&mut r).unwrap().error.as_deref(),
            Some("unknown service svc1")
        );
    }

    /// Key order, whitespace and escapes are the sender's choice: the request is the same.
    #[test]
    fn any_key_order_whitespace_and_escapes() {
        let expected = Request::ServiceAction {
            svcname: "svc1".into(),
            command: ["start", "é\\n\"x"].into(),
            sync: false,
        };
        for doc in [
            r#"{"action":"service_action","options":{"svcname":"svc1","command":["start","é\\n\"x"],"sync":false}}"#,
            r#"{"options":{"sync":false,"command":["start","é\\n\"x"],"svcname":"svc1"},"action":"service_action"}"#,
            "{ \"options\" :\n { \"sync\" : false , \"command\" : [ \"start\" , \"\\u00e9\\\\n\\\"x\" ] ,\"svc\\u006eame\":\"svc\\u0031\" } ,\t\"\\u0061ction\" : \"service_action\" } ",
        ] {
            assert_eq!(parse(doc), Ok(expected.clone()), "{doc}");
        }
    }

    #[test]
    fn malformed_json_comes_before_any_other_error() {
        // An unknown option and a repeated key, but the document is cut short.
        for doc in [
            r#"{"action":"clear","options":{"x":1,"x":2,"svcname":"a"}"#,
            r#"{"action":"nope","options":{"svcname":[1,]}}"#,
        ] {
            assert!(
                parse(doc)
                    .unwrap_err()
                    .to_string()
                    .starts_with("malformed JSON"),
                "{doc}"
            );
        }
    }

    #[test]
    fn repeated_keys_are_refused_even_when_escaped_differently() {
        assert_eq!(
            parse(r#"{"action":"clear","options":{"svcname":"a","svc\u006eame":"b"}}"#),
            Err(PayloadError::DuplicateKey {
                action: "clear",
                field: "svcname".into()
            })
        );
        assert_eq!(
            parse(r#"{"action":"leave","\u0061ction":"leave"}"#),
            Err(PayloadError::DuplicateKey {
                action: "request",
                field: "action".into()
            })
        );
        // The smallest repeated name, whatever the order.
        assert_eq!(
            parse(r#"{"action":"clear","options":{"z":1,"b":1,"z":2,"b":2}}"#),
            Err(PayloadError::DuplicateKey {
                action: "clear",
                field: "b".into()
            })
        );
    }

    #[test]
    fn args_keep_every_argument() {
        let a: Args = ["", "x", "", "é"].into();
        assert_eq!(a.len(), 4);
        assert_eq!(a.to_vec(), ["", "x", "", "é"]);
        assert_eq!(a.get(4), None);
        assert_eq!(serde_json::to_string(&a).unwrap(), r#"["","x","","é"]"#);
    }
}
