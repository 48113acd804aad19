//! Typed, validated view of `node.conf`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use super::{ConfigError, IniDocument};

pub const DEFAULT_CLUSTER_NAME: &str = "default";
pub const DEFAULT_PORT: u16 = 1214;
pub const DEFAULT_MAX_FRAME: u32 = 16 * 1024 * 1024;
pub const MIN_MAX_FRAME: u32 = 64;
pub const DEFAULT_MAX_UNAUTH_FRAME: u32 = 64 * 1024;
pub const DEFAULT_DEQUEUE_TIMEOUT_MS: u64 = 60_000;

/// The listener I/O backend `listener.backend` asks for (`auto` picks io_uring where the
/// kernel allows it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum BackendChoice {
    #[default]
    Auto,
    IoUring,
    Epoll,
}

impl BackendChoice {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendChoice::Auto => "auto",
            BackendChoice::IoUring => "io_uring",
            BackendChoice::Epoll => "epoll",
        }
    }

    fn parse(s: &str) -> Option<BackendChoice> {
        [
            BackendChoice::Auto,
            BackendChoice::IoUring,
            BackendChoice::Epoll,
        ]
        .into_iter()
        .find(|b| b.as_str().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    pub name: String,
    pub secret: String,
    /// The keyring's second secret, under which frames are also opened (never sealed): what
    /// lets a cluster move to another secret without two members failing each other.
    pub alt_secret: Option<String>,
    /// Deduplicated, in configuration order.
    pub nodes: Vec<String>,
}

/// Secrets are not shown (config sits below `wire`, where fingerprints are computed).
impl fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hidden = |_: &String| "..";
        f.debug_struct("ClusterConfig")
            .field("name", &self.name)
            .field("secret", &hidden(&self.secret))
            .field("alt_secret", &self.alt_secret.as_ref().map(hidden))
            .field("nodes", &self.nodes)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    pub addr: IpAddr,
    /// 0 asks the OS for an ephemeral port (tests).
    pub port: u16,
    pub max_frame: u32,
    pub max_clock_skew_ms: u64,
    /// 0 = blacklisted forever.
    pub blacklist_ttl_ms: u64,
    /// Joins accepted per second; 0 refuses all joins.
    pub join_rate: u32,
    pub accept_joins: bool,
    /// 0 = number of cores.
    pub threads: usize,
    /// 0 = automatic.
    pub shards: usize,
    pub backend: BackendChoice,
    pub max_connections: u32,
    /// Largest frame accepted on a TCP connection before one of its frames authenticated.
    pub max_unauth_frame: u32,
    /// Connections from one IP address that may be open before authenticating a frame.
    pub max_unauth_per_addr: u32,
    pub idle_timeout_ms: u64,
    pub read_timeout_ms: u64,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: DEFAULT_PORT,
            max_frame: DEFAULT_MAX_FRAME,
            max_clock_skew_ms: 60_000,
            blacklist_ttl_ms: 600_000,
            join_rate: 20,
            accept_joins: true,
            threads: 0,
            shards: 0,
            backend: BackendChoice::Auto,
            max_connections: 4096,
            max_unauth_frame: DEFAULT_MAX_UNAUTH_FRAME,
            max_unauth_per_addr: 32,
            idle_timeout_ms: 60_000,
            read_timeout_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HbConfig {
    pub interval_ms: u64,
    pub timeout_ms: u64,
}

impl Default for HbConfig {
    fn default() -> Self {
        HbConfig {
            interval_ms: 5_000,
            timeout_ms: 15_000,
        }
    }
}

/// `[node.NAME]` section.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerConfig {
    pub addr: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    pub nodename: String,
    pub cluster: ClusterConfig,
    pub listener: ListenerConfig,
    pub hb: HbConfig,
    /// `[monitor] interval`: how often the monitor looks at every service (default 2 s).
    pub monitor_interval_ms: u64,
    /// `[node] maintenance_grace_period`: how long a peer in maintenance is trusted to still
    /// run what it last reported; past it without a heartbeat it is stale (default 60 s).
    pub maintenance_grace_ms: u64,
    /// `[node] rejoin_grace_period`: how long a starting daemon waits to hear its peers before
    /// it orchestrates alone (default `hb.timeout`).
    pub rejoin_grace_ms: u64,
    /// `[cluster] quorum`: a node starts ha services only while it sees more than half of the
    /// votes (default false).
    pub quorum: bool,
    /// `[node] split_action`: what a node that lost quorum does to the ha instances it runs.
    pub split_action: SplitAction,
    /// `[node] takeover_delay`: how long a node that held a service must have been gone before
    /// the side with quorum starts it (default `hb.timeout`; the stop timeout and a monitor
    /// interval are added when `split_action = stop`).
    pub takeover_delay_ms: u64,
    /// `[dequeue] timeout`: how long one queued action may run before its process group is
    /// killed (default 60 s).
    pub dequeue_timeout_ms: u64,
    /// Keyed by peer node name.
    pub peers: BTreeMap<String, PeerConfig>,
    /// `[arbitrator#N] addr = host:port`: the arbitrators whose vote this node asks for,
    /// keyed by section name.
    pub arbitrators: BTreeMap<String, String>,
    /// `[arbitrator] serve`: this daemon is an arbitrator, granting its vote to the members
    /// of `[cluster] nodes` (default false).
    pub arbitrator_serve: bool,
    /// `[arbitrator] lease`: how long a vote granted by this arbitrator lasts (default 10 s).
    pub arbitrator_lease_ms: u64,
    /// `[metrics] addr`: where `GET /metrics` is served in the Prometheus text format
    /// (default: not served).
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// `[log] format`: `text` (default) or `json`.
    pub log_format: LogFormat,
}

impl NodeConfig {
    /// How long the side with quorum waits, after a node went stale, before it starts what
    /// that node may have run: the takeover delay, and with `split_action = stop` the time the
    /// lost node may take to stop it (`stop_timeout_ms`) and to notice (a monitor interval).
    /// 0 with quorum off.
    pub fn takeover_wait_ms(&self, stop_timeout_ms: u64) -> u64 {
        if !self.quorum {
            return 0;
        }
        match self.split_action {
            SplitAction::Stop => {
                self.takeover_delay_ms + stop_timeout_ms + self.monitor_interval_ms
            }
            _ => self.takeover_delay_ms,
        }
    }

    /// The host a peer is reached at, unresolved: `[node.NAME] addr`, else its name.
    pub fn peer_host(&self, name: &str) -> String {
        self.peers
            .get(name)
            .and_then(|p| p.addr.clone())
            .unwrap_or_else(|| name.to_string())
    }

    /// Where a peer listens: `[node.NAME] addr`, else its name resolved, on this node's
    /// listener port (a cluster shares one).
    /// Resolves on each call: the daemon's heartbeats read the resolver's cache instead
    /// (`state::members::AddrBook`).
    pub fn peer_addr(&self, name: &str) -> Option<std::net::SocketAddr> {
        use std::net::ToSocketAddrs;
        (self.peer_host(name).as_str(), self.listener.port)
            .to_socket_addrs()
            .ok()?
            .next()
    }
}

pub(super) const DEFAULT_MONITOR_INTERVAL_MS: u64 = 2_000;
pub(super) const DEFAULT_MAINTENANCE_GRACE_MS: u64 = 60_000;

/// What a node that lost quorum does to the ha instances it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SplitAction {
    /// Stop them: the side with quorum takes them over once they are stopped.
    #[default]
    Stop,
    /// Keep them as they are and take no action on them.
    Freeze,
    /// Reboot the node at once (sysrq), for sites that need fencing.
    Crash,
}

impl SplitAction {
    pub fn as_str(self) -> &'static str {
        match self {
            SplitAction::Stop => "stop",
            SplitAction::Freeze => "freeze",
            SplitAction::Crash => "crash",
        }
    }

    fn parse(s: &str) -> Option<SplitAction> {
        [SplitAction::Stop, SplitAction::Freeze, SplitAction::Crash]
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(s.trim()))
    }
}

/// `[log] format`: how the daemon writes its log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines (colour only on a terminal).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }

    fn parse(s: &str) -> Option<LogFormat> {
        [LogFormat::Text, LogFormat::Json]
            .into_iter()
            .find(|f| f.as_str().eq_ignore_ascii_case(s.trim()))
    }
}

/// `true/false/yes/no/on/off/1/0`, case-insensitive.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Some(true),
        "false" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

/// Milliseconds from a plain integer (seconds) or an integer with a
/// `ms`, `s`, `m` or `h` suffix. `None` on garbage or overflow.
pub fn parse_duration_ms(s: &str) -> Option<u64> {
    let s = s.trim().to_ascii_lowercase();
    // "ms" must be tried before "m" and "s".
    let (num, unit_ms) = [("ms", 1u64), ("s", 1_000), ("m", 60_000), ("h", 3_600_000)]
        .into_iter()
        .find_map(|(suffix, ms)| s.strip_suffix(suffix).map(|n| (n, ms)))
        .unwrap_or((s.as_str(), 1_000));
    let num = num.trim_end();
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    num.parse::<u64>().ok()?.checked_mul(unit_ms)
}

fn valid_nodename(s: &str) -> bool {
    (1..=255).contains(&s.len()) && !s.chars().any(char::is_whitespace)
}

/// Short host name (up to the first '.'), read without libc; falls back to
/// "localhost" so a default node name is always valid.
pub fn short_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .and_then(|h| {
            let short = h.trim().split('.').next().unwrap_or("").to_string();
            valid_nodename(&short).then_some(short)
        })
        .unwrap_or_else(|| "localhost".to_string())
}

const NODENAME_MSG: &str = "expected a node name of 1 to 255 bytes without whitespace";
const BOOL_MSG: &str = "expected a boolean: true, false, yes, no, on, off, 1 or 0";
const DURATION_MSG: &str =
    "expected a duration: an integer number of seconds, or an integer with a ms, s, m or h suffix";
const POSITIVE_DURATION_MSG: &str = "expected a positive duration: an integer number of seconds, \
     or an integer with a ms, s, m or h suffix";

/// Integer parser accepting `min..=max`, with a message stating the range.
fn int_in<T: TryFrom<u64>>(min: u64, max: u64) -> impl Fn(&str) -> Result<T, String> {
    move |s| {
        let msg = || format!("expected an integer from {min} to {max}");
        let n: u64 = s.parse().map_err(|_| msg())?;
        if !(min..=max).contains(&n) {
            return Err(msg());
        }
        T::try_from(n).map_err(|_| msg())
    }
}

fn duration(s: &str) -> Result<u64, String> {
    parse_duration_ms(s).ok_or_else(|| DURATION_MSG.to_string())
}

fn positive_duration(s: &str) -> Result<u64, String> {
    match parse_duration_ms(s) {
        Some(ms) if ms > 0 => Ok(ms),
        _ => Err(POSITIVE_DURATION_MSG.to_string()),
    }
}

fn boolean(s: &str) -> Result<bool, String> {
    parse_bool(s).ok_or_else(|| BOOL_MSG.to_string())
}

/// Reads typed values from a document, turning failures into located errors.
struct Reader<'a> {
    doc: &'a IniDocument,
    path: &'a Path,
}

impl Reader<'_> {
    fn invalid(&self, line: usize, key: String, value: &str, message: String) -> ConfigError {
        ConfigError::Value {
            path: self.path.to_path_buf(),
            line,
            key,
            value: value.to_string(),
            message,
        }
    }

    fn value<T>(
        &self,
        section: &str,
        key: &str,
        default: T,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        match self.doc.lookup(section, key) {
            None => Ok(default),
            Some((line, raw)) => parse(raw)
                .map_err(|message| self.invalid(line, format!("{section}.{key}"), raw, message)),
        }
    }
}

impl NodeConfig {
    /// Builds and validates the typed configuration. `path` is only used in
    /// error messages.
    pub fn from_document(doc: &IniDocument, path: &Path) -> Result<NodeConfig, ConfigError> {
        let r = Reader { doc, path };

        let nodename = match doc.get("node", "nodename") {
            Some(_) => r.value("node", "nodename", String::new(), |s| {
                valid_nodename(s)
                    .then(|| s.to_string())
                    .ok_or_else(|| NODENAME_MSG.to_string())
            })?,
            None => short_hostname(),
        };

        let name = r.value("cluster", "name", DEFAULT_CLUSTER_NAME.to_string(), |s| {
            if s.is_empty() || s.chars().any(char::is_whitespace) {
                Err("expected a non-empty cluster name without whitespace".to_string())
            } else {
                Ok(s.to_string())
            }
        })?;
        if doc.get("cluster", "secret").is_none() {
            return Err(ConfigError::Missing {
                path: path.to_path_buf(),
                key: "cluster.secret".to_string(),
            });
        }
        let secret = r.value("cluster", "secret", String::new(), |s| {
            if s.is_empty() {
                Err("expected a non-empty secret".to_string())
            } else {
                Ok(s.to_string())
            }
        })?;
        // The value is not echoed back on error: only an empty one is refused, and "" says
        // nothing of a secret.
        let alt_secret = r.value("cluster", "alt_secret", None, |s| {
            if s.is_empty() {
                Err("expected a non-empty secret, or no alt_secret at all".to_string())
            } else {
                Ok(Some(s.to_string()))
            }
        })?;
        let mut nodes = r.value("cluster", "nodes", Vec::new(), |s| {
            let mut out: Vec<String> = Vec::new();
            for n in s.split_whitespace() {
                if !valid_nodename(n) {
                    return Err(format!("{NODENAME_MSG}: {n:?}"));
                }
                if !out.iter().any(|x| x == n) {
                    out.push(n.to_string());
                }
            }
            Ok(out)
        })?;
        if nodes.is_empty() {
            nodes.push(nodename.clone());
        }

        let d = ListenerConfig::default();
        let l = "listener";
        let listener = ListenerConfig {
            addr: r.value(l, "addr", d.addr, |s| {
                s.parse::<IpAddr>()
                    .map_err(|_| "expected an IP address".to_string())
            })?,
            port: r.value(l, "port", d.port, int_in(0, u16::MAX.into()))?,
            max_frame: r.value(
                l,
                "max_frame",
                d.max_frame,
                int_in(MIN_MAX_FRAME.into(), u32::MAX.into()),
            )?,
            max_clock_skew_ms: r.value(l, "max_clock_skew", d.max_clock_skew_ms, duration)?,
            blacklist_ttl_ms: r.value(l, "blacklist_ttl", d.blacklist_ttl_ms, duration)?,
            join_rate: r.value(l, "join_rate", d.join_rate, int_in(0, u32::MAX.into()))?,
            accept_joins: r.value(l, "accept_joins", d.accept_joins, boolean)?,
            threads: r.value(l, "threads", d.threads, int_in(0, usize_max()))?,
            shards: r.value(l, "shards", d.shards, int_in(0, usize_max()))?,
            backend: r.value(l, "backend", d.backend, |s| {
                BackendChoice::parse(s)
                    .ok_or_else(|| "expected one of auto, io_uring, epoll".to_string())
            })?,
            // Zero would make the listener refuse every connection.
            max_connections: r.value(
                l,
                "max_connections",
                d.max_connections,
                int_in(1, u32::MAX.into()),
            )?,
            max_unauth_frame: r.value(
                l,
                "max_unauth_frame",
                d.max_unauth_frame,
                int_in(MIN_MAX_FRAME.into(), u32::MAX.into()),
            )?,
            // Zero would refuse every new connection from everyone.
            max_unauth_per_addr: r.value(
                l,
                "max_unauth_per_addr",
                d.max_unauth_per_addr,
                int_in(1, u32::MAX.into()),
            )?,
            idle_timeout_ms: r.value(l, "idle_timeout", d.idle_timeout_ms, positive_duration)?,
            read_timeout_ms: r.value(l, "read_timeout", d.read_timeout_ms, positive_duration)?,
        };

        let d = HbConfig::default();
        let hb = HbConfig {
            interval_ms: r.value("hb", "interval", d.interval_ms, positive_duration)?,
            timeout_ms: r.value("hb", "timeout", d.timeout_ms, positive_duration)?,
        };
        // A timeout not above the interval would declare peers dead between
        // two healthy beats. Blame the key the operator actually wrote
        // (defaults satisfy the rule, so at least one of them is present).
        if hb.timeout_ms <= hb.interval_ms {
            let key = if doc.get("hb", "timeout").is_some() {
                "timeout"
            } else {
                "interval"
            };
            if let Some((line, raw)) = doc.lookup("hb", key) {
                return Err(r.invalid(
                    line,
                    format!("hb.{key}"),
                    raw,
                    format!(
                        "hb.timeout ({} ms) must be greater than hb.interval ({} ms)",
                        hb.timeout_ms, hb.interval_ms
                    ),
                ));
            }
        }

        let monitor_interval_ms = r.value(
            "monitor",
            "interval",
            DEFAULT_MONITOR_INTERVAL_MS,
            positive_duration,
        )?;
        let maintenance_grace_ms = r.value(
            "node",
            "maintenance_grace_period",
            DEFAULT_MAINTENANCE_GRACE_MS,
            duration,
        )?;
        let rejoin_grace_ms = r.value("node", "rejoin_grace_period", hb.timeout_ms, duration)?;
        let quorum = r.value("cluster", "quorum", false, boolean)?;
        let split_action = r.value("node", "split_action", SplitAction::Stop, |s| {
            SplitAction::parse(s).ok_or_else(|| "expected one of stop, freeze, crash".to_string())
        })?;
        let takeover_delay_ms = r.value("node", "takeover_delay", hb.timeout_ms, duration)?;

        let dequeue_timeout_ms = r.value(
            "dequeue",
            "timeout",
            DEFAULT_DEQUEUE_TIMEOUT_MS,
            positive_duration,
        )?;

        let mut peers = BTreeMap::new();
        for section in doc.sections() {
            let Some(peer) = section.strip_prefix("node.") else {
                continue;
            };
            if !valid_nodename(peer) {
                return Err(r.invalid(
                    doc.section_line(section).unwrap_or(0),
                    section.to_string(),
                    peer,
                    format!("section [node.NAME]: {NODENAME_MSG}"),
                ));
            }
            let addr = doc
                .get(section, "addr")
                .filter(|a| !a.is_empty())
                .map(str::to_string);
            peers.insert(peer.to_string(), PeerConfig { addr });
        }

        let arbitrator_serve = r.value("arbitrator", "serve", false, boolean)?;
        let arbitrator_lease_ms = r.value(
            "arbitrator",
            "lease",
            DEFAULT_ARBITRATOR_LEASE_MS,
            positive_duration,
        )?;
        let mut arbitrators = BTreeMap::new();
        for section in doc.sections() {
            if !section.starts_with("arbitrator#") {
                continue;
            }
            let addr = r.value(section, "addr", String::new(), |s| {
                valid_host_port(s)
                    .then(|| s.to_string())
                    .ok_or_else(|| "expected host:port".to_string())
            })?;
            if addr.is_empty() {
                return Err(ConfigError::Missing {
                    path: path.to_path_buf(),
                    key: format!("{section}.addr"),
                });
            }
            arbitrators.insert(section.to_string(), addr);
        }

        let metrics_addr = r.value("metrics", "addr", None, |s| {
            if s.trim().is_empty() {
                return Ok(None);
            }
            s.trim()
                .parse::<std::net::SocketAddr>()
                .map(Some)
                .map_err(|_| "expected ip:port, e.g. 127.0.0.1:9216".to_string())
        })?;
        let log_format = r.value("log", "format", LogFormat::Text, |s| {
            LogFormat::parse(s).ok_or_else(|| "expected one of text, json".to_string())
        })?;

        Ok(NodeConfig {
            nodename,
            cluster: ClusterConfig {
                name,
                secret,
                alt_secret,
                nodes,
            },
            listener,
            hb,
            monitor_interval_ms,
            maintenance_grace_ms,
            rejoin_grace_ms,
            quorum,
            split_action,
            takeover_delay_ms,
            dequeue_timeout_ms,
            peers,
            arbitrators,
            arbitrator_serve,
            arbitrator_lease_ms,
            metrics_addr,
            log_format,
        })
    }
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

const DEFAULT_ARBITRATOR_LEASE_MS: u64 = 10_000;

fn usize_max() -> u64 {
    u64::try_from(usize::MAX).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = "/etc/opensvc/node.conf";

    fn doc(text: &str) -> IniDocument {
        IniDocument::parse(text, Path::new(PATH)).unwrap()
    }

    fn build(text: &str) -> Result<NodeConfig, ConfigError> {
        NodeConfig::from_document(&doc(text), Path::new(PATH))
    }

    #[test]
    fn defaults_when_sections_are_missing() {
        let cfg = build("[cluster]\nsecret = s3cr3t\n").unwrap();
        let host = short_hostname();
        assert_eq!(cfg.nodename, host);
        assert_eq!(cfg.cluster.name, "default");
        assert_eq!(cfg.cluster.secret, "s3cr3t");
        assert_eq!(cfg.cluster.nodes, vec![host]);
        assert_eq!(cfg.listener, ListenerConfig::default());
        assert_eq!(cfg.listener.addr, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert_eq!(cfg.listener.port, 1214);
        assert_eq!(cfg.listener.max_frame, 16_777_216);
        assert_eq!(cfg.listener.max_clock_skew_ms, 60_000);
        assert_eq!(cfg.listener.blacklist_ttl_ms, 600_000);
        assert_eq!(cfg.listener.join_rate, 20);
        assert!(cfg.listener.accept_joins);
        assert_eq!((cfg.listener.threads, cfg.listener.shards), (0, 0));
        assert_eq!(cfg.listener.backend, BackendChoice::Auto);
        assert_eq!(cfg.listener.max_connections, 4096);
        assert_eq!(cfg.listener.idle_timeout_ms, 60_000);
        assert_eq!(cfg.listener.read_timeout_ms, 10_000);
        assert_eq!(cfg.listener.max_unauth_frame, 65_536);
        assert_eq!(cfg.listener.max_unauth_per_addr, 32);
        assert_eq!(cfg.dequeue_timeout_ms, 60_000);
        assert_eq!(
            cfg.hb,
            HbConfig {
                interval_ms: 5_000,
                timeout_ms: 15_000
            }
        );
        assert_eq!(cfg.maintenance_grace_ms, 60_000);
        assert_eq!(cfg.rejoin_grace_ms, 15_000, "hb.timeout by default");
        assert!(!cfg.quorum);
        assert_eq!(cfg.split_action, SplitAction::Stop);
        assert_eq!(cfg.takeover_delay_ms, 15_000, "hb.timeout by default");
        assert!(cfg.peers.is_empty());
    }

    #[test]
    fn full_document() {
        let cfg = build(
            "# c\n[node]\nnodename = node1\n\n[cluster]\nname = prod1\nsecret = 3f9c\n\
             nodes = node1 node2 node1 node3 node2\n\n[listener]\naddr = ::1\nport = 0\n\
             max_frame = 64\nmax_clock_skew = 500ms\nblacklist_ttl = 0\njoin_rate = 0\n\
             accept_joins = Off\nthreads = 4\nshards = 2\nbackend = io_uring\n\
             max_connections = 10\nidle_timeout = 2m\nread_timeout = 1h\n\
             max_unauth_frame = 1024\nmax_unauth_per_addr = 4\n\
             [hb]\ninterval = 1\ntimeout = 3s\n[dequeue]\ntimeout = 90s\n\
             [node.node2]\naddr = 127.0.0.2\n[node.node3]\n",
        )
        .unwrap();
        assert_eq!(cfg.nodename, "node1");
        assert_eq!(cfg.cluster.name, "prod1");
        assert_eq!(cfg.cluster.nodes, ["node1", "node2", "node3"]);
        let l = &cfg.listener;
        assert_eq!(l.addr, "::1".parse::<IpAddr>().unwrap());
        assert_eq!(l.port, 0);
        assert_eq!(l.max_frame, 64);
        assert_eq!(l.max_clock_skew_ms, 500);
        assert_eq!(l.blacklist_ttl_ms, 0);
        assert_eq!(l.join_rate, 0);
        assert!(!l.accept_joins);
        assert_eq!((l.threads, l.shards), (4, 2));
        assert_eq!(l.backend, BackendChoice::IoUring);
        assert_eq!(l.max_connections, 10);
        assert_eq!(l.idle_timeout_ms, 120_000);
        assert_eq!(l.read_timeout_ms, 3_600_000);
        assert_eq!((l.max_unauth_frame, l.max_unauth_per_addr), (1024, 4));
        assert_eq!(cfg.dequeue_timeout_ms, 90_000);
        assert_eq!(
            cfg.hb,
            HbConfig {
                interval_ms: 1_000,
                timeout_ms: 3_000
            }
        );
        assert_eq!(cfg.peers.len(), 2);
        assert_eq!(cfg.peers["node2"].addr.as_deref(), Some("127.0.0.2"));
        assert_eq!(cfg.peers["node3"].addr, None);
    }

    #[test]
    fn invalid_values_name_file_line_and_key() {
        let head = "[cluster]\nsecret = x\n";
        let cases: &[(&str, &str, &str, &str)] = &[
            ("node", "nodename", "", NODENAME_MSG),
            ("node", "nodename", "a b", NODENAME_MSG),
            (
                "cluster",
                "name",
                "a b",
                "expected a non-empty cluster name",
            ),
            ("cluster", "nodes", &"x".repeat(256), NODENAME_MSG),
            ("listener", "addr", "1.2.3", "expected an IP address"),
            (
                "listener",
                "port",
                "abc",
                "expected an integer from 0 to 65535",
            ),
            (
                "listener",
                "port",
                "65536",
                "expected an integer from 0 to 65535",
            ),
            (
                "listener",
                "port",
                "-1",
                "expected an integer from 0 to 65535",
            ),
            (
                "listener",
                "max_frame",
                "63",
                "expected an integer from 64 to 4294967295",
            ),
            ("listener", "max_clock_skew", "1d", "expected a duration"),
            ("listener", "blacklist_ttl", "-5", "expected a duration"),
            (
                "listener",
                "join_rate",
                "4294967296",
                "expected an integer from 0 to 4294967295",
            ),
            ("listener", "accept_joins", "maybe", "expected a boolean"),
            ("listener", "threads", "x", "expected an integer from 0 to"),
            ("listener", "shards", "1.5", "expected an integer from 0 to"),
            (
                "listener",
                "backend",
                "kqueue",
                "expected one of auto, io_uring, epoll",
            ),
            (
                "listener",
                "max_connections",
                "0",
                "expected an integer from 1 to 4294967295",
            ),
            (
                "listener",
                "idle_timeout",
                "0",
                "expected a positive duration",
            ),
            (
                "listener",
                "read_timeout",
                "soon",
                "expected a positive duration",
            ),
            ("hb", "interval", "0s", "expected a positive duration"),
            (
                "hb",
                "timeout",
                "99999999999999999999",
                "expected a positive duration",
            ),
        ];
        for (section, key, value, msg) in cases {
            // Line 5: the two head lines, a comment, the header, then the key.
            let text = format!("{head}# filler\n[{section}]\n{key} = {value}\n");
            let err = build(&text).unwrap_err();
            let shown = err.to_string();
            let expected = format!(
                "{PATH}:5: {section}.{key}: invalid value {:?}: {msg}",
                value.trim()
            );
            assert!(shown.starts_with(&expected), "got {shown}\nwant {expected}");
            match err {
                ConfigError::Value { line, key: k, .. } => {
                    assert_eq!(line, 5);
                    assert_eq!(k, format!("{section}.{key}"));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn port_error_display_matches_documented_format() {
        let err = build("[cluster]\nsecret = x\n[listener]\nport = abc\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "/etc/opensvc/node.conf:4: listener.port: invalid value \"abc\": \
             expected an integer from 0 to 65535"
        );
    }

    #[test]
    fn hb_timeout_must_exceed_interval() {
        let err = build("[cluster]\nsecret = x\n[hb]\ntimeout = 5\n").unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("{PATH}:4: hb.timeout: ")),
            "{err}"
        );
        let err = build("[cluster]\nsecret = x\n[hb]\ninterval = 20\n").unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("{PATH}:4: hb.interval: ")),
            "{err}"
        );
    }

    #[test]
    fn bad_peer_section_name() {
        let err = build("[cluster]\nsecret = x\n[node.a b]\naddr = x\n").unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("{PATH}:3: node.a b: ")),
            "{err}"
        );
    }

    #[test]
    fn arbitrators_and_the_arbitrator_role() {
        let cfg = build(
            "[cluster]\nsecret = x\nnodes = n1 n2\n[arbitrator#1]\naddr = 10.0.0.9:1215\n\
             [arbitrator#2]\naddr = [::1]:7\n",
        )
        .unwrap();
        assert_eq!(cfg.arbitrators["arbitrator#1"], "10.0.0.9:1215");
        assert_eq!(cfg.arbitrators["arbitrator#2"], "[::1]:7");
        assert!(!cfg.arbitrator_serve);
        assert_eq!(cfg.arbitrator_lease_ms, 10_000);
        let cfg = build("[cluster]\nsecret = x\n[arbitrator]\nserve = yes\nlease = 3s\n").unwrap();
        assert!(cfg.arbitrator_serve && cfg.arbitrators.is_empty());
        assert_eq!(cfg.arbitrator_lease_ms, 3_000);
        for (text, at) in [
            ("[arbitrator#1]\naddr = host\n", "4: arbitrator#1.addr: "),
            (
                "[arbitrator#1]\naddr = host:99999\n",
                "4: arbitrator#1.addr: ",
            ),
            ("[arbitrator#1]\naddr = a b:1\n", "4: arbitrator#1.addr: "),
            ("[arbitrator]\nlease = 0\n", "4: arbitrator.lease: "),
            ("[arbitrator]\nserve = maybe\n", "4: arbitrator.serve: "),
        ] {
            let err = build(&format!("[cluster]\nsecret = x\n{text}")).unwrap_err();
            assert!(
                err.to_string().starts_with(&format!("{PATH}:{at}")),
                "{err}"
            );
        }
        let err = build("[cluster]\nsecret = x\n[arbitrator#1]\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{PATH}: arbitrator#1.addr: required value is missing")
        );
    }

    #[test]
    fn missing_secret() {
        for text in ["", "[cluster]\nname = x\n", "[node]\nnodename = n1\n"] {
            let err = build(text).unwrap_err();
            assert!(
                matches!(&err, ConfigError::Missing { key, .. } if key == "cluster.secret"),
                "{err:?}"
            );
            assert_eq!(
                err.to_string(),
                format!("{PATH}: cluster.secret: required value is missing")
            );
        }
        let err = build("[cluster]\nsecret =\n").unwrap_err();
        assert!(matches!(err, ConfigError::Value { line: 2, .. }), "{err:?}");
    }

    #[test]
    fn durations_and_booleans() {
        assert_eq!(parse_duration_ms("60"), Some(60_000));
        assert_eq!(parse_duration_ms("60s"), Some(60_000));
        assert_eq!(parse_duration_ms("2m"), Some(120_000));
        assert_eq!(parse_duration_ms("500ms"), Some(500));
        assert_eq!(parse_duration_ms("1H"), Some(3_600_000));
        assert_eq!(parse_duration_ms(" 3 s "), Some(3_000));
        for bad in [
            "",
            "s",
            "ms",
            "-1",
            "+1",
            "1.5s",
            "1d",
            "1 0",
            "18446744073709551615s",
        ] {
            assert_eq!(parse_duration_ms(bad), None, "{bad:?}");
        }
        for t in ["true", "YES", "on", "1"] {
            assert_eq!(parse_bool(t), Some(true));
        }
        for f in ["false", "No", "OFF", "0"] {
            assert_eq!(parse_bool(f), Some(false));
        }
        assert_eq!(parse_bool("2"), None);
        assert_eq!(BackendChoice::parse("EPOLL"), Some(BackendChoice::Epoll));
        assert_eq!(BackendChoice::IoUring.to_string(), "io_uring");
    }

    #[test]
    fn short_hostname_is_a_valid_nodename() {
        let h = short_hostname();
        assert!(valid_nodename(&h), "{h:?}");
        assert!(!h.contains('.'));
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let text = include_str!("../../deploy/node.conf.example");
        let path = Path::new("deploy/node.conf.example");
        let doc = IniDocument::parse(text, path).unwrap();
        let cfg = NodeConfig::from_document(&doc, path).unwrap();
        assert_eq!(cfg.cluster.nodes, vec!["node1", "node2", "node3"]);
        assert_eq!(cfg.peers["node2"].addr.as_deref(), Some("10.0.0.2"));
    }
}
