//! Typed, validated view of `node.conf`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::Path;

use super::keywords::{self, Effective, Keyword, keyword, valid_nodename};
use super::{ConfigError, IniDocument};

/// `[dequeue] timeout` before a configuration is read (the registry's default; a test holds
/// them equal).
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

    /// Same order as the registry's choices (a test holds them equal).
    const ALL: [BackendChoice; 3] = [
        BackendChoice::Auto,
        BackendChoice::IoUring,
        BackendChoice::Epoll,
    ];

    fn parse(s: &str) -> Option<BackendChoice> {
        Self::ALL
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
    /// How long UDP datagrams gather after a short receive batch.
    pub udp_gather_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HbConfig {
    pub interval_ms: u64,
    pub timeout_ms: u64,
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

    const ALL: [SplitAction; 3] = [SplitAction::Stop, SplitAction::Freeze, SplitAction::Crash];

    fn parse(s: &str) -> Option<SplitAction> {
        Self::ALL
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

    const ALL: [LogFormat; 2] = [LogFormat::Text, LogFormat::Json];

    fn parse(s: &str) -> Option<LogFormat> {
        Self::ALL
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

/// Reads typed values from a document through the keyword registry, turning failures into
/// located errors.
struct Reader<'a> {
    doc: &'a IniDocument,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    fn invalid(&self, line: usize, key: String, value: &str, message: String) -> ConfigError {
        ConfigError::Value {
            path: self.path.to_path_buf(),
            line,
            key,
            value: value.to_string(),
            message,
        }
    }

    /// The effective value of `kw` in `section`, checked against its type when written:
    /// `(line, text)`, line 0 for a default; `None` for no value.
    fn text(
        &self,
        section: &str,
        kw: &Keyword,
    ) -> Result<Option<(usize, Cow<'a, str>)>, ConfigError> {
        match keywords::effective(self.doc, section, kw) {
            Effective::Written { line, value } => match kw.ty.check(value) {
                Ok(()) => Ok(Some((line, Cow::Borrowed(value)))),
                Err(e) => {
                    Err(self.invalid(line, format!("{section}.{}", kw.key), value, e.to_string()))
                }
            },
            Effective::Default(v) => Ok(Some((0, v))),
            Effective::Absent => Ok(None),
            Effective::Missing => Err(ConfigError::Missing {
                path: self.path.to_path_buf(),
                key: format!("{section}.{}", kw.key),
            }),
        }
    }

    /// A value of a keyword with a default, converted by `convert` (which cannot fail on a
    /// value its type accepts: if it does, the value is refused with the type's message).
    fn typed<T>(
        &self,
        kw: &Keyword,
        convert: impl Fn(&str) -> Option<T>,
    ) -> Result<T, ConfigError> {
        let section = kw.section;
        let (line, text) = self.text(section, kw)?.unwrap_or((0, Cow::Borrowed("")));
        convert(&text).ok_or_else(|| {
            let message = kw.ty.expected().to_string();
            self.invalid(line, format!("{section}.{}", kw.key), &text, message)
        })
    }

    fn int<T: TryFrom<u64>>(&self, kw: &Keyword) -> Result<T, ConfigError> {
        self.typed(kw, |s| {
            s.parse::<u64>().ok().and_then(|n| T::try_from(n).ok())
        })
    }

    fn ms(&self, kw: &Keyword) -> Result<u64, ConfigError> {
        self.typed(kw, parse_duration_ms)
    }

    fn flag(&self, kw: &Keyword) -> Result<bool, ConfigError> {
        self.typed(kw, parse_bool)
    }

    fn string(&self, kw: &Keyword) -> Result<String, ConfigError> {
        self.typed(kw, |s| Some(s.to_string()))
    }

    fn optional(&self, section: &str, kw: &Keyword) -> Result<Option<String>, ConfigError> {
        Ok(self
            .text(section, kw)?
            .map(|(_, t)| t.into_owned())
            .filter(|t| !t.is_empty()))
    }
}

impl NodeConfig {
    /// Builds and validates the typed configuration. `path` is only used in error messages.
    /// Keys that are not in the registry are ignored here ([`keywords::unknown_keywords`]
    /// lists them).
    pub fn from_document(doc: &IniDocument, path: &Path) -> Result<NodeConfig, ConfigError> {
        let r = Reader { doc, path };
        macro_rules! kw {
            ($section:literal, $key:literal) => {
                const { keyword($section, $key) }
            };
        }

        let nodename = r.string(kw!("node", "nodename"))?;
        let name = r.string(kw!("cluster", "name"))?;
        let secret = r.string(kw!("cluster", "secret"))?;
        let alt_secret = r.optional("cluster", kw!("cluster", "alt_secret"))?;
        let mut nodes: Vec<String> = Vec::new();
        for n in r.string(kw!("cluster", "nodes"))?.split_whitespace() {
            if !nodes.iter().any(|x| x == n) {
                nodes.push(n.to_string());
            }
        }
        if nodes.is_empty() {
            nodes.push(nodename.clone());
        }

        let listener = ListenerConfig {
            addr: r.typed(kw!("listener", "addr"), |s| s.parse::<IpAddr>().ok())?,
            port: r.int(kw!("listener", "port"))?,
            max_frame: r.int(kw!("listener", "max_frame"))?,
            max_clock_skew_ms: r.ms(kw!("listener", "max_clock_skew"))?,
            blacklist_ttl_ms: r.ms(kw!("listener", "blacklist_ttl"))?,
            join_rate: r.int(kw!("listener", "join_rate"))?,
            accept_joins: r.flag(kw!("listener", "accept_joins"))?,
            threads: r.int(kw!("listener", "threads"))?,
            shards: r.int(kw!("listener", "shards"))?,
            backend: r.typed(kw!("listener", "backend"), BackendChoice::parse)?,
            max_connections: r.int(kw!("listener", "max_connections"))?,
            max_unauth_frame: r.int(kw!("listener", "max_unauth_frame"))?,
            max_unauth_per_addr: r.int(kw!("listener", "max_unauth_per_addr"))?,
            idle_timeout_ms: r.ms(kw!("listener", "idle_timeout"))?,
            read_timeout_ms: r.ms(kw!("listener", "read_timeout"))?,
            udp_gather_ms: r.ms(kw!("listener", "udp_gather"))?,
        };

        let hb = HbConfig {
            interval_ms: r.ms(kw!("hb", "interval"))?,
            timeout_ms: r.ms(kw!("hb", "timeout"))?,
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

        let monitor_interval_ms = r.ms(kw!("monitor", "interval"))?;
        let maintenance_grace_ms = r.ms(kw!("node", "maintenance_grace_period"))?;
        let rejoin_grace_ms = r.ms(kw!("node", "rejoin_grace_period"))?;
        let quorum = r.flag(kw!("cluster", "quorum"))?;
        let split_action = r.typed(kw!("node", "split_action"), SplitAction::parse)?;
        let takeover_delay_ms = r.ms(kw!("node", "takeover_delay"))?;
        let dequeue_timeout_ms = r.ms(kw!("dequeue", "timeout"))?;

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
                    format!("section [node.NAME]: {}", keywords::ValueError::NodeName),
                ));
            }
            let addr = r.optional(section, kw!("node.", "addr"))?;
            peers.insert(peer.to_string(), PeerConfig { addr });
        }

        let arbitrator_serve = r.flag(kw!("arbitrator", "serve"))?;
        let arbitrator_lease_ms = r.ms(kw!("arbitrator", "lease"))?;
        let mut arbitrators = BTreeMap::new();
        for section in doc.sections() {
            if !section.starts_with("arbitrator#") {
                continue;
            }
            if let Some(addr) = r.optional(section, kw!("arbitrator#", "addr"))? {
                arbitrators.insert(section.to_string(), addr);
            }
        }

        let metrics_addr = r
            .optional("metrics", kw!("metrics", "addr"))?
            .and_then(|s| s.parse::<std::net::SocketAddr>().ok());
        let log_format = r.typed(kw!("log", "format"), LogFormat::parse)?;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::keywords::{
        BACKEND_CHOICES, KEYWORDS, LOG_FORMAT_CHOICES, SPLIT_ACTION_CHOICES, Type,
    };
    use std::net::Ipv4Addr;

    const NODENAME_MSG: &str = "expected a node name of 1 to 255 bytes without whitespace";

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
        assert_eq!(cfg.listener.udp_gather_ms, 2);
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
            (
                "cluster",
                "nodes",
                &"x".repeat(256),
                "expected node names of 1 to 255 bytes",
            ),
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
                "listener",
                "udp_gather",
                "50ms",
                "expected a duration from 0 to 10ms",
            ),
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

    /// Valid values of a type, for the tests that set every keyword.
    fn samples(ty: Type) -> Vec<String> {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect();
        match ty {
            Type::Int { min, max } => vec![min.to_string(), max.to_string(), (min + 1).to_string()],
            Type::Duration { .. } => v(&["1s", "7s", "100s"]),
            Type::ShortDuration { max_ms } => vec!["0".into(), format!("{max_ms}ms"), "1ms".into()],
            Type::Bool => v(&["true", "false"]),
            Type::Choice(c) => v(c),
            Type::Ip => v(&["127.0.0.9", "::1"]),
            Type::IpPort => v(&["127.0.0.1:9216"]),
            Type::HostPort => v(&["h2:2", "h3:3"]),
            Type::Host => v(&["10.9.9.9"]),
            Type::NodeName => v(&["x1"]),
            Type::NodeNames => v(&["x1 x2"]),
            Type::ClusterName => v(&["c2"]),
            Type::Secret => v(&["s2", "s3"]),
        }
    }

    /// Every registry keyword is read: set alone to one of its type's values, it changes the
    /// configuration (a keyword the model forgot to read would not).
    #[test]
    fn every_keyword_has_an_effect() {
        let base_text = "[cluster]\nsecret = s\n[node.p1]\n[arbitrator#1]\naddr = h:1\n";
        let base = build(base_text).unwrap();
        for k in KEYWORDS {
            let section = match k.placeholder {
                Some(_) if k.section == "node." => "node.p1".to_string(),
                Some(_) => "arbitrator#1".to_string(),
                None => k.section.to_string(),
            };
            let changed = samples(k.ty).into_iter().find(|value| {
                let mut d = doc(base_text);
                d.set(&section, k.key, value).unwrap();
                NodeConfig::from_document(&d, Path::new(PATH)).is_ok_and(|c| c != base)
            });
            assert!(
                changed.is_some(),
                "{} has no effect on the configuration",
                k.name()
            );
        }
    }

    #[test]
    fn registry_agrees_with_the_model() {
        let d = doc("[cluster]\nsecret = s\n");
        assert_eq!(
            keywords::effective_value(&d, "dequeue", "timeout").and_then(|v| parse_duration_ms(&v)),
            Some(DEFAULT_DEQUEUE_TIMEOUT_MS)
        );
        let names = |all: &[&'static str]| all.to_vec();
        assert_eq!(
            names(BACKEND_CHOICES),
            BackendChoice::ALL.map(BackendChoice::as_str)
        );
        assert_eq!(
            names(SPLIT_ACTION_CHOICES),
            SplitAction::ALL.map(SplitAction::as_str)
        );
        assert_eq!(
            names(LOG_FORMAT_CHOICES),
            LogFormat::ALL.map(LogFormat::as_str)
        );
        assert_eq!(BackendChoice::default().as_str(), "auto");
        // Derived defaults follow what they name.
        let cfg = build("[cluster]\nsecret = s\n[hb]\ntimeout = 30s\n").unwrap();
        assert_eq!(
            (cfg.rejoin_grace_ms, cfg.takeover_delay_ms),
            (30_000, 30_000)
        );
        let cfg = build("[node]\nnodename = me\n[cluster]\nsecret = s\n").unwrap();
        assert_eq!(cfg.cluster.nodes, ["me"]);
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
        let problems = keywords::validate(text, path);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(cfg.cluster.nodes, vec!["node1", "node2", "node3"]);
        assert_eq!(cfg.peers["node2"].addr.as_deref(), Some("10.0.0.2"));
    }
}
