//! The keyword registry: every `section.keyword` of node.conf the agent reads, with its type,
//! its default and one line of help. [`NodeConfig::from_document`](super::NodeConfig) reads
//! each value through this list (a key missing from it fails the build), takes its default
//! from here, and `nodemgr set/get/print/validate` and the README's keyword reference are all
//! produced from it.

use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use super::{ConfigError, IniDocument, parse_bool, parse_duration_ms};

/// What a keyword's value must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    /// An integer in `min..=max`.
    Int {
        min: u64,
        max: u64,
    },
    /// A duration (seconds, or with a ms, s, m or h suffix); `positive` refuses 0.
    Duration {
        positive: bool,
    },
    /// A duration from 0 to `max_ms`.
    ShortDuration {
        max_ms: u64,
    },
    Bool,
    /// One of these words, case-insensitive.
    Choice(&'static [&'static str]),
    Ip,
    /// `ip:port`, or empty for none.
    IpPort,
    /// `host:port`.
    HostPort,
    /// An IP address or a host name, or empty for none.
    Host,
    NodeName,
    /// Node names separated by spaces.
    NodeNames,
    ClusterName,
    /// Shown by its fingerprint only.
    Secret,
}

/// Why a value does not fit its keyword's type: what the operator reads after
/// `invalid value "...": `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("expected an integer from {min} to {max}")]
    Int { min: u64, max: u64 },
    #[error(
        "expected a duration: an integer number of seconds, or an integer with a ms, s, m or h suffix"
    )]
    Duration,
    #[error(
        "expected a positive duration: an integer number of seconds, or an integer with a ms, s, m or h suffix"
    )]
    PositiveDuration,
    #[error(
        "expected a duration from 0 to {max_ms}ms: an integer number of milliseconds with a ms suffix, or 0"
    )]
    ShortDuration { max_ms: u64 },
    #[error("expected a boolean: true, false, yes, no, on, off, 1 or 0")]
    Bool,
    #[error("expected one of {}", .0.join(", "))]
    Choice(&'static [&'static str]),
    #[error("expected an IP address")]
    Ip,
    #[error("expected ip:port, e.g. 127.0.0.1:9216")]
    IpPort,
    #[error("expected host:port")]
    HostPort,
    #[error("expected an IP address or a host name")]
    Host,
    #[error("expected a node name of 1 to 255 bytes without whitespace")]
    NodeName,
    /// One name of a list; the name is shown (a list can be long).
    #[error("expected node names of 1 to 255 bytes without whitespace: {0:?}")]
    NodeNameInList(String),
    #[error("expected a non-empty cluster name without whitespace")]
    ClusterName,
    #[error("expected a non-empty secret")]
    Secret,
}

pub(crate) fn valid_nodename(s: &str) -> bool {
    (1..=255).contains(&s.len()) && !s.chars().any(char::is_whitespace)
}

/// `host:port`, with a port number and a host without whitespace (`[v6]:port` included).
fn valid_host_port(s: &str) -> bool {
    match s.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty() && !host.contains(char::is_whitespace) && port.parse::<u16>().is_ok()
        }
        None => false,
    }
}

/// An IP address, or a DNS name: labels of letters, digits, `-` and `_`.
fn valid_host(s: &str) -> bool {
    s.parse::<IpAddr>().is_ok()
        || (s.len() <= 253
            && s.split('.').all(|label| {
                (1..=63).contains(&label.len())
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            }))
}

impl Type {
    /// Checks `value` (trimmed, as the INI layer gives it).
    pub fn check(self, value: &str) -> Result<(), ValueError> {
        let valid = match self {
            Type::Int { min, max } => value.parse::<u64>().is_ok_and(|n| (min..=max).contains(&n)),
            Type::Duration { positive } => {
                parse_duration_ms(value).is_some_and(|ms| ms > 0 || !positive)
            }
            Type::ShortDuration { max_ms } => {
                parse_duration_ms(value).is_some_and(|ms| ms <= max_ms)
            }
            Type::Bool => parse_bool(value).is_some(),
            Type::Choice(choices) => choices.iter().any(|c| c.eq_ignore_ascii_case(value)),
            Type::Ip => value.parse::<IpAddr>().is_ok(),
            Type::IpPort => value.is_empty() || value.parse::<SocketAddr>().is_ok(),
            Type::HostPort => valid_host_port(value),
            Type::Host => value.is_empty() || valid_host(value),
            Type::NodeName => valid_nodename(value),
            Type::NodeNames => {
                return match value.split_whitespace().find(|n| !valid_nodename(n)) {
                    Some(bad) => Err(ValueError::NodeNameInList(bad.to_string())),
                    None => Ok(()),
                };
            }
            Type::ClusterName => !value.is_empty() && !value.contains(char::is_whitespace),
            Type::Secret => !value.is_empty(),
        };
        if valid { Ok(()) } else { Err(self.expected()) }
    }

    /// What a value of this type must be, as the error that refuses one.
    pub fn expected(self) -> ValueError {
        match self {
            Type::Int { min, max } => ValueError::Int { min, max },
            Type::Duration { positive: false } => ValueError::Duration,
            Type::Duration { positive: true } => ValueError::PositiveDuration,
            Type::ShortDuration { max_ms } => ValueError::ShortDuration { max_ms },
            Type::Bool => ValueError::Bool,
            Type::Choice(choices) => ValueError::Choice(choices),
            Type::Ip => ValueError::Ip,
            Type::IpPort => ValueError::IpPort,
            Type::HostPort => ValueError::HostPort,
            Type::Host => ValueError::Host,
            Type::NodeName => ValueError::NodeName,
            Type::NodeNames => ValueError::NodeNameInList(String::new()),
            Type::ClusterName => ValueError::ClusterName,
            Type::Secret => ValueError::Secret,
        }
    }

    /// How the reference names the type.
    pub fn describe(self) -> String {
        match self {
            Type::Int { min, max: USIZE } => format!("integer ≥ {min}"),
            Type::Int { min, max } => format!("integer {min} to {max}"),
            Type::Duration { positive: false } => "duration".into(),
            Type::Duration { positive: true } => "duration > 0".into(),
            Type::ShortDuration { max_ms } => format!("duration 0 to {max_ms}ms"),
            Type::Bool => "bool".into(),
            Type::Choice(choices) => choices.join(" | "),
            Type::Ip => "ip".into(),
            Type::IpPort => "ip:port".into(),
            Type::HostPort => "host:port".into(),
            Type::Host => "ip or host name".into(),
            Type::NodeName => "node name".into(),
            Type::NodeNames => "node names".into(),
            Type::ClusterName => "name".into(),
            Type::Secret => "secret".into(),
        }
    }
}

/// A keyword's value when node.conf does not set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultValue {
    /// No value: the feature is off, or the agent works it out (e.g. a peer's address from
    /// its name).
    None,
    /// This text, read as if it were written.
    Value(&'static str),
    /// The effective value of another keyword (`section`, `key`).
    SameAs(&'static str, &'static str),
    /// The host name up to its first dot.
    ShortHostname,
    /// No default: the value must be written (the first `daemon run` writes the secret).
    Required,
}

impl fmt::Display for DefaultValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DefaultValue::None => f.write_str("none"),
            DefaultValue::Value(v) => f.write_str(v),
            DefaultValue::SameAs(section, key) => write!(f, "= {section}.{key}"),
            DefaultValue::ShortHostname => f.write_str("= short hostname"),
            DefaultValue::Required => f.write_str("required"),
        }
    }
}

/// One keyword of node.conf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keyword {
    /// The section; for a section that appears once per peer or arbitrator, the prefix of its
    /// name (`node.`, `arbitrator#`) and `placeholder` says what follows.
    pub section: &'static str,
    pub placeholder: Option<&'static str>,
    pub key: &'static str,
    pub ty: Type,
    pub default: DefaultValue,
    pub help: &'static str,
}

impl Keyword {
    /// Whether `section` is this keyword's section (or one of its pattern's).
    pub fn in_section(&self, section: &str) -> bool {
        match self.placeholder {
            None => section == self.section,
            Some(_) => section
                .strip_prefix(self.section)
                .is_some_and(|rest| !rest.is_empty()),
        }
    }

    /// `listener`, `node.NAME`.
    pub fn section_name(&self) -> String {
        format!("{}{}", self.section, self.placeholder.unwrap_or(""))
    }

    /// `listener.port`, `node.NAME.addr`.
    pub fn name(&self) -> String {
        format!("{}.{}", self.section_name(), self.key)
    }

    pub fn is_secret(&self) -> bool {
        self.ty == Type::Secret
    }
}

const fn kw(
    section: &'static str,
    key: &'static str,
    ty: Type,
    default: DefaultValue,
    help: &'static str,
) -> Keyword {
    Keyword {
        section,
        placeholder: None,
        key,
        ty,
        default,
        help,
    }
}

const fn duration(positive: bool) -> Type {
    Type::Duration { positive }
}

const fn int(min: u64, max: u64) -> Type {
    Type::Int { min, max }
}

const U32: u64 = u32::MAX as u64;
const USIZE: u64 = usize::MAX as u64;

/// The longest `listener.udp_gather`: the delay it adds to a heartbeat must stay far below
/// the heartbeat timeouts.
pub const MAX_UDP_GATHER_MS: u64 = 10;

/// The smallest `max_frame` / `max_unauth_frame`: a frame header and a little more.
pub const MIN_MAX_FRAME: u64 = 64;

pub(crate) const BACKEND_CHOICES: &[&str] = &["auto", "io_uring", "epoll"];
pub(crate) const SPLIT_ACTION_CHOICES: &[&str] = &["stop", "freeze", "crash"];
pub(crate) const LOG_FORMAT_CHOICES: &[&str] = &["text", "json"];

use DefaultValue::{None as NoValue, Required, SameAs, ShortHostname, Value};

/// Every keyword, in the order the reference and `print config --eval` show them.
pub const KEYWORDS: &[Keyword] = &[
    kw(
        "node",
        "nodename",
        Type::NodeName,
        ShortHostname,
        "This node's name in the cluster.",
    ),
    kw(
        "node",
        "maintenance_grace_period",
        duration(false),
        Value("60s"),
        "How long a peer in maintenance is trusted to still run what it last reported.",
    ),
    kw(
        "node",
        "rejoin_grace_period",
        duration(false),
        SameAs("hb", "timeout"),
        "How long a starting daemon waits to hear its peers before it orchestrates alone.",
    ),
    kw(
        "node",
        "split_action",
        Type::Choice(SPLIT_ACTION_CHOICES),
        Value("stop"),
        "What a node that lost quorum does to the ha instances it runs.",
    ),
    kw(
        "node",
        "takeover_delay",
        duration(false),
        SameAs("hb", "timeout"),
        "How long a node that held a service must have been gone before the side with quorum starts it.",
    ),
    kw(
        "cluster",
        "name",
        Type::ClusterName,
        Value("default"),
        "The cluster's name: part of every key, identical on all members.",
    ),
    kw(
        "cluster",
        "secret",
        Type::Secret,
        Required,
        "The cluster's secret, identical on all members (generated by the first `daemon run`).",
    ),
    kw(
        "cluster",
        "alt_secret",
        Type::Secret,
        NoValue,
        "A second secret frames are also opened with, during a secret rotation.",
    ),
    kw(
        "cluster",
        "nodes",
        Type::NodeNames,
        SameAs("node", "nodename"),
        "The cluster's members.",
    ),
    kw(
        "cluster",
        "quorum",
        Type::Bool,
        Value("false"),
        "Start ha services only while more than half of the votes are seen.",
    ),
    kw(
        "listener",
        "addr",
        Type::Ip,
        Value("0.0.0.0"),
        "The listener's address (UDP and TCP).",
    ),
    kw(
        "listener",
        "port",
        int(0, u16::MAX as u64),
        Value("1214"),
        "The listener's port, shared by the whole cluster (0: any free port).",
    ),
    kw(
        "listener",
        "max_frame",
        int(MIN_MAX_FRAME, U32),
        Value("16777216"),
        "The largest frame accepted, in bytes.",
    ),
    kw(
        "listener",
        "max_clock_skew",
        duration(false),
        Value("60s"),
        "How far a frame's timestamp may be from this node's clock.",
    ),
    kw(
        "listener",
        "blacklist_ttl",
        duration(false),
        Value("10m"),
        "How long a banned sender stays banned (0: forever).",
    ),
    kw(
        "listener",
        "join_rate",
        int(0, U32),
        Value("20"),
        "Joins accepted per second (0: none).",
    ),
    kw(
        "listener",
        "accept_joins",
        Type::Bool,
        Value("true"),
        "Whether joins are accepted at all.",
    ),
    kw(
        "listener",
        "threads",
        int(0, USIZE),
        Value("0"),
        "Listener workers (0: one per core).",
    ),
    kw(
        "listener",
        "shards",
        int(0, USIZE),
        Value("0"),
        "Request handler shards (0: automatic).",
    ),
    kw(
        "listener",
        "backend",
        Type::Choice(BACKEND_CHOICES),
        Value("auto"),
        "The listener's I/O backend (auto: epoll, measured the cheaper for UDP).",
    ),
    kw(
        "listener",
        "max_connections",
        int(1, U32),
        Value("4096"),
        "TCP connections open at once.",
    ),
    kw(
        "listener",
        "max_unauth_frame",
        int(MIN_MAX_FRAME, U32),
        Value("65536"),
        "The largest frame accepted on a TCP connection before one of its frames authenticated.",
    ),
    kw(
        "listener",
        "max_unauth_per_addr",
        int(1, U32),
        Value("32"),
        "Connections from one IP address open before authenticating a frame.",
    ),
    kw(
        "listener",
        "idle_timeout",
        duration(true),
        Value("60s"),
        "How long an idle TCP connection is kept.",
    ),
    kw(
        "listener",
        "read_timeout",
        duration(true),
        Value("10s"),
        "How long a frame may take to arrive once it started.",
    ),
    kw(
        "listener",
        "udp_gather",
        Type::ShortDuration {
            max_ms: MAX_UDP_GATHER_MS,
        },
        Value("2ms"),
        "How long UDP datagrams gather after a receive that found fewer than a batch: one wakeup for several heartbeats, at most this much later (0: a wakeup per datagram). Bounded so that a heartbeat's delay stays far below the heartbeat timeouts.",
    ),
    kw(
        "hb",
        "interval",
        duration(true),
        Value("5s"),
        "How often heartbeats are sent.",
    ),
    kw(
        "hb",
        "timeout",
        duration(true),
        Value("15s"),
        "How long a silent peer is trusted before it is stale (more than hb.interval).",
    ),
    kw(
        "monitor",
        "interval",
        duration(true),
        Value("2s"),
        "How often the monitor looks at every service.",
    ),
    kw(
        "dequeue",
        "timeout",
        duration(true),
        Value("60s"),
        "How long one queued action may run before its process group is killed.",
    ),
    kw(
        "arbitrator",
        "serve",
        Type::Bool,
        Value("false"),
        "This daemon is an arbitrator: it grants its vote to the members of cluster.nodes.",
    ),
    kw(
        "arbitrator",
        "lease",
        duration(true),
        Value("10s"),
        "How long a vote granted by this arbitrator lasts.",
    ),
    Keyword {
        placeholder: Some("N"),
        ..kw(
            "arbitrator#",
            "addr",
            Type::HostPort,
            Required,
            "An arbitrator whose vote this node asks for.",
        )
    },
    Keyword {
        placeholder: Some("NAME"),
        ..kw(
            "node.",
            "addr",
            Type::Host,
            NoValue,
            "Where peer NAME listens (default: its name resolved), on listener.port.",
        )
    },
    kw(
        "metrics",
        "addr",
        Type::IpPort,
        NoValue,
        "Where `GET /metrics` is served in the Prometheus text format (none: not served).",
    ),
    kw(
        "log",
        "format",
        Type::Choice(LOG_FORMAT_CHOICES),
        Value("text"),
        "How the daemon writes its log lines: text or one JSON object a line (read at start: a change needs a restart).",
    ),
];

const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The registry's entry of `section` (a pattern's prefix, e.g. `node.`) and `key`. Called in
/// const context by the readers: a key missing from the registry fails the build
/// (`cargo build`; `cargo check` does not evaluate these constants).
pub(crate) const fn keyword(section: &str, key: &str) -> &'static Keyword {
    let mut i = 0;
    while i < KEYWORDS.len() {
        let k = &KEYWORDS[i];
        if str_eq(k.section, section) && str_eq(k.key, key) {
            return k;
        }
        i += 1;
    }
    panic!("not in the keyword registry")
}

/// The keyword `key` of the section `section` of a file (`node.n2` finds `node.NAME.addr`).
/// Keys are case-insensitive, as in the INI layer.
pub fn lookup(section: &str, key: &str) -> Option<&'static Keyword> {
    KEYWORDS
        .iter()
        .find(|k| k.in_section(section) && k.key.eq_ignore_ascii_case(key))
}

fn known_section(section: &str) -> bool {
    KEYWORDS.iter().any(|k| k.in_section(section))
}

/// A keyword or a section that is not in the registry, with the nearest known one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unknown {
    pub section: String,
    /// `None`: the section has no keys (then it is the section that is unknown).
    pub key: Option<String>,
    /// Whether the section itself is unknown.
    pub section_unknown: bool,
    /// `section.key`, or a section name when `key` is `None`.
    pub nearest: Option<String>,
}

impl fmt::Display for Unknown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let section = &self.section;
        match &self.key {
            Some(key) if self.section_unknown => {
                write!(f, "{section}.{key}: unknown section [{section}]")?
            }
            Some(key) => write!(f, "{section}.{key}: unknown keyword")?,
            None => write!(f, "[{section}]: unknown section")?,
        }
        match (&self.nearest, &self.key) {
            (Some(n), Some(_)) => write!(f, "; did you mean {n}?"),
            (Some(n), None) => write!(f, "; did you mean [{n}]?"),
            (None, _) => f.write_str("; `nodemgr print keywords` lists the known ones"),
        }
    }
}

/// The most similar of `candidates` to `word`, if any is similar enough to be what was meant.
fn nearest<'c>(word: &str, candidates: impl Iterator<Item = &'c str>) -> Option<&'c str> {
    candidates
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// The registry's section names, patterns as `node.NAME`.
fn section_names() -> Vec<String> {
    let mut sections: Vec<String> = KEYWORDS.iter().map(Keyword::section_name).collect();
    sections.dedup();
    sections
}

/// `None` when `section.key` is a registry keyword, else what is wrong with the nearest known
/// one (`listener.prot`: `listener.port`; `listner.port`: `listener.port`).
pub fn check_known(section: &str, key: &str) -> Option<Unknown> {
    if lookup(section, key).is_some() {
        return None;
    }
    let key_lower = key.to_ascii_lowercase();
    let unknown = |section_unknown, nearest| Unknown {
        section: section.to_string(),
        key: Some(key.to_string()),
        section_unknown,
        nearest,
    };
    if known_section(section) {
        let keys = KEYWORDS
            .iter()
            .filter(|k| k.in_section(section))
            .map(|k| k.key);
        let nearest = nearest(&key_lower, keys).map(|k| format!("{section}.{k}"));
        return Some(unknown(false, nearest));
    }
    // Another section: the nearest section name, then in it the key as written or the
    // nearest one.
    let sections = section_names();
    let nearest = nearest(section, sections.iter().map(String::as_str)).map(|s| {
        let keys = KEYWORDS
            .iter()
            .filter(|k| k.section_name() == s)
            .map(|k| k.key);
        let k = nearest(&key_lower, keys).unwrap_or(key);
        format!("{s}.{k}")
    });
    Some(unknown(true, nearest))
}

/// Every entry of `doc` that is not a registry keyword, and every empty section that is not
/// a registry section, with its 1-based line, in file order.
pub fn unknown_keywords(doc: &IniDocument) -> Vec<(usize, Unknown)> {
    let mut out = Vec::new();
    for section in doc.sections() {
        let mut keys = doc.keys(section).peekable();
        if keys.peek().is_none() && !known_section(section) {
            let sections = section_names();
            out.push((
                doc.section_line(section).unwrap_or(0),
                Unknown {
                    section: section.to_string(),
                    key: None,
                    section_unknown: true,
                    nearest: nearest(section, sections.iter().map(String::as_str))
                        .map(str::to_string),
                },
            ));
        }
        for key in keys {
            if let Some(u) = check_known(section, key) {
                out.push((doc.line_of(section, key).unwrap_or(0), u));
            }
        }
    }
    out.sort_by_key(|(line, _)| *line);
    out
}

/// What the reader of a keyword finds: a written value, a default, or nothing.
pub(crate) enum Effective<'d> {
    Written { line: usize, value: &'d str },
    Default(Cow<'static, str>),
    Absent,
    Missing,
}

/// The effective value of `kw` in `section` of `doc` (defaults that name another keyword
/// followed), unchecked.
pub(crate) fn effective<'d>(doc: &'d IniDocument, section: &str, kw: &Keyword) -> Effective<'d> {
    if let Some((line, value)) = doc.lookup(section, kw.key) {
        return Effective::Written { line, value };
    }
    match kw.default {
        DefaultValue::None => Effective::Absent,
        DefaultValue::Required => Effective::Missing,
        DefaultValue::Value(v) => Effective::Default(Cow::Borrowed(v)),
        DefaultValue::ShortHostname => Effective::Default(Cow::Owned(super::short_hostname())),
        DefaultValue::SameAs(s, k) => match lookup(s, k) {
            Some(other) => match effective(doc, s, other) {
                Effective::Written { value, .. } => {
                    Effective::Default(Cow::Owned(value.to_string()))
                }
                e => e,
            },
            Option::None => Effective::Absent,
        },
    }
}

/// The effective value of `section.key` as text: written, else its default (`None`: no value).
/// Unknown keywords have none.
pub fn effective_value(doc: &IniDocument, section: &str, key: &str) -> Option<String> {
    let kw = lookup(section, key)?;
    match effective(doc, section, kw) {
        Effective::Written { value, .. } => Some(value.to_string()),
        Effective::Default(v) => Some(v.into_owned()),
        Effective::Absent | Effective::Missing => Option::None,
    }
}

/// Every problem of a node.conf text, each as `path:line: section.key: message`, in file
/// order: syntax errors, unknown keywords (with the nearest known one), values their type
/// refuses, missing required values, and the rules between keys that the model checks.
pub fn validate(text: &str, path: &Path) -> Vec<ConfigError> {
    let (doc, syntax_errors) = IniDocument::parse_lenient(text, path);
    let syntax_ok = syntax_errors.is_empty();
    let mut found: Vec<(usize, ConfigError)> = syntax_errors
        .into_iter()
        .map(|e| match e {
            ConfigError::Syntax { line, .. } => (line, e),
            _ => (0, e),
        })
        .collect();
    for (line, unknown) in unknown_keywords(&doc) {
        found.push((
            line,
            ConfigError::Unknown {
                path: path.to_path_buf(),
                line,
                unknown,
            },
        ));
    }
    let mut value_problems = 0;
    for section in doc.sections() {
        for kw in KEYWORDS.iter().filter(|k| k.in_section(section)) {
            match effective(&doc, section, kw) {
                Effective::Written { line, value } => {
                    if let Err(e) = kw.ty.check(value) {
                        value_problems += 1;
                        found.push((
                            line,
                            ConfigError::Value {
                                path: path.to_path_buf(),
                                line,
                                key: format!("{section}.{}", kw.key),
                                value: value.to_string(),
                                message: e.to_string(),
                            },
                        ));
                    }
                }
                Effective::Missing => {
                    value_problems += 1;
                    found.push((
                        doc.section_line(section).unwrap_or(0),
                        ConfigError::Missing {
                            path: path.to_path_buf(),
                            key: format!("{section}.{}", kw.key),
                        },
                    ));
                }
                _ => {}
            }
        }
    }
    // Keywords of sections the file does not have: only a required one can be a problem.
    for kw in KEYWORDS.iter().filter(|k| k.placeholder.is_none()) {
        if !doc.has_section(kw.section) && kw.default == DefaultValue::Required {
            value_problems += 1;
            found.push((
                0,
                ConfigError::Missing {
                    path: path.to_path_buf(),
                    key: kw.name(),
                },
            ));
        }
    }
    // What is left is what the model checks across keys (hb.timeout > hb.interval, the names
    // of [node.NAME] sections): one at a time, once each value is right.
    if value_problems == 0
        && syntax_ok
        && let Err(e) = super::NodeConfig::from_document(&doc, path)
    {
        let line = match &e {
            ConfigError::Value { line, .. } => *line,
            _ => 0,
        };
        found.push((line, e));
    }
    found.sort_by_key(|(line, _)| *line);
    found.into_iter().map(|(_, e)| e).collect()
}

/// The keyword reference in Markdown, as README.md shows it between its
/// `<!-- keywords:begin -->` and `<!-- keywords:end -->` markers.
pub fn reference_markdown() -> String {
    let mut out = String::from("| keyword | type | default | description |\n|---|---|---|---|\n");
    for k in KEYWORDS {
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            k.name(),
            // A '|' would end the cell.
            k.ty.describe().replace('|', "\\|"),
            match k.default {
                DefaultValue::Value(v) => format!("`{v}`"),
                d => d.to_string(),
            },
            k.help
        ));
    }
    out.push_str(
        "\nDurations are seconds, or an integer with a `ms`, `s`, `m` or `h` suffix; booleans are \
         `true`/`false`, `yes`/`no`, `on`/`off`, `1`/`0`. `= section.key` defaults to that \
         keyword's effective value.\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_fits_its_type() {
        for k in KEYWORDS {
            if let DefaultValue::Value(v) = k.default {
                assert_eq!(k.ty.check(v), Ok(()), "{}", k.name());
            }
            if let DefaultValue::SameAs(s, key) = k.default {
                let other =
                    lookup(s, key).unwrap_or_else(|| panic!("{} names {s}.{key}", k.name()));
                assert_eq!(
                    other.ty.check("1s").is_ok(),
                    k.ty.check("1s").is_ok(),
                    "{}",
                    k.name()
                );
            }
        }
    }

    #[test]
    fn names_are_unique_and_found() {
        for (i, k) in KEYWORDS.iter().enumerate() {
            assert!(
                KEYWORDS[..i].iter().all(|o| o.name() != k.name()),
                "{} twice",
                k.name()
            );
        }
        assert_eq!(
            lookup("listener", "PORT").map(|k| k.name()).as_deref(),
            Some("listener.port")
        );
        assert_eq!(
            lookup("node.n2", "addr").map(|k| k.name()).as_deref(),
            Some("node.NAME.addr")
        );
        assert_eq!(
            lookup("arbitrator#1", "addr").map(|k| k.name()).as_deref(),
            Some("arbitrator#N.addr")
        );
        assert!(lookup("node.", "addr").is_none());
        assert!(lookup("node", "addr").is_none());
        assert_eq!(keyword("node.", "addr").placeholder, Some("NAME"));
    }

    #[test]
    fn nearest_keyword() {
        let near = |s: &str, k: &str| check_known(s, k).and_then(|u| u.nearest);
        assert_eq!(near("listener", "prot").as_deref(), Some("listener.port"));
        assert_eq!(
            near("listener", "join_rat").as_deref(),
            Some("listener.join_rate")
        );
        assert_eq!(near("hb", "timout").as_deref(), Some("hb.timeout"));
        assert_eq!(near("cluster", "secert").as_deref(), Some("cluster.secret"));
        assert_eq!(near("listner", "port").as_deref(), Some("listener.port"));
        assert_eq!(near("listner", "prot").as_deref(), Some("listener.port"));
        assert_eq!(
            near("arbitrator#1", "adr").as_deref(),
            Some("arbitrator#1.addr")
        );
        assert_eq!(near("itest", "mark"), None);
        assert_eq!(near("listener", "zzzzzz"), None);
        assert!(check_known("listener", "port").is_none());
        let u = check_known("listener", "prot").unwrap();
        assert!(!u.section_unknown);
        assert_eq!(
            u.to_string(),
            "listener.prot: unknown keyword; did you mean listener.port?"
        );
        let u = check_known("itest", "mark").unwrap();
        assert_eq!(
            u.to_string(),
            "itest.mark: unknown section [itest]; `nodemgr print keywords` lists the known ones"
        );
    }

    #[test]
    fn unknown_keywords_of_a_document() {
        let doc = IniDocument::parse(
            "[cluster]\nsecret = x\nsecert = y\n[listner]\n[node.n2]\naddr = a\nadr = b\n[hb]\n",
            Path::new("n.conf"),
        )
        .unwrap();
        let found: Vec<(usize, String)> = unknown_keywords(&doc)
            .into_iter()
            .map(|(l, u)| (l, u.to_string()))
            .collect();
        assert_eq!(
            found,
            [
                (
                    3,
                    "cluster.secert: unknown keyword; did you mean cluster.secret?".to_string()
                ),
                (
                    4,
                    "[listner]: unknown section; did you mean [listener]?".to_string()
                ),
                (
                    7,
                    "node.n2.adr: unknown keyword; did you mean node.n2.addr?".to_string()
                ),
            ]
        );
    }

    #[test]
    fn validate_reports_every_problem_in_file_order() {
        let text = "[cluster]\nsecert = x\n[listener]\nport = 99999\nprot = 1\njunk\n\
                    [hb]\ninterval = soon\n[arbitrator#1]\n";
        let shown: Vec<String> = validate(text, Path::new("n.conf"))
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            shown,
            [
                "n.conf: cluster.secret: required value is missing",
                "n.conf:2: cluster.secert: unknown keyword; did you mean cluster.secret?",
                "n.conf:4: listener.port: invalid value \"99999\": expected an integer from 0 to 65535",
                "n.conf:5: listener.prot: unknown keyword; did you mean listener.port?",
                "n.conf:6: syntax error: expected \"key = value\", a [section] header or a comment",
                "n.conf:8: hb.interval: invalid value \"soon\": expected a positive duration: an \
                 integer number of seconds, or an integer with a ms, s, m or h suffix",
                "n.conf: arbitrator#1.addr: required value is missing",
            ]
            .map(String::from)
        );
        assert!(validate("[cluster]\nsecret = x\n", Path::new("n.conf")).is_empty());
        // The rules between keys, once the values are right.
        let shown: Vec<String> =
            validate("[cluster]\nsecret = x\n[hb]\ntimeout = 5\n", Path::new("n"))
                .iter()
                .map(ToString::to_string)
                .collect();
        assert_eq!(shown.len(), 1);
        assert!(shown[0].starts_with("n:4: hb.timeout: "), "{shown:?}");
    }

    #[test]
    fn reference_has_a_row_per_keyword() {
        let md = reference_markdown();
        assert_eq!(
            md.lines().filter(|l| l.starts_with("| `")).count(),
            KEYWORDS.len()
        );
        assert!(
            md.contains("| `listener.join_rate` | integer 0 to 4294967295 | `20` |"),
            "{md}"
        );
        assert!(
            md.contains("| `node.rejoin_grace_period` | duration | = hb.timeout |"),
            "{md}"
        );
    }
}
