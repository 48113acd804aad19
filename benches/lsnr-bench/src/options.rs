//! What a run is asked to do: the scenarios, the backends, the sizes and bounds.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A scenario: its name on the command line and what it measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scenario {
    NullSink,
    HbUdp,
    HbUdpNews,
    BlacklistedFlood,
    RandomNamesFlood,
    TcpReq,
    EmptyPackets,
    RssFlood,
}

impl Scenario {
    pub const ALL: [Scenario; 8] = [
        Scenario::NullSink,
        Scenario::HbUdp,
        Scenario::HbUdpNews,
        Scenario::BlacklistedFlood,
        Scenario::RandomNamesFlood,
        Scenario::TcpReq,
        Scenario::EmptyPackets,
        Scenario::RssFlood,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::NullSink => "null-sink",
            Scenario::HbUdp => "hb-udp",
            Scenario::HbUdpNews => "hb-udp-news",
            Scenario::BlacklistedFlood => "blacklisted-flood",
            Scenario::RandomNamesFlood => "random-names-flood",
            Scenario::TcpReq => "tcp-req",
            Scenario::EmptyPackets => "empty-packets",
            Scenario::RssFlood => "rss-flood",
        }
    }

    pub fn parse(s: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|x| x.name() == s)
    }

    /// Whether it runs against a daemon (and so once per backend).
    pub fn per_backend(self) -> bool {
        self != Scenario::NullSink
    }
}

pub const BACKENDS: [&str; 2] = ["io_uring", "epoll"];

/// The backend label of the null sink: blocking `recvmmsg` on each of its sockets, nothing
/// done with the data, the floor of any receiver's CPU per datagram.
pub const SINK: &str = "recvmmsg";
/// The backend label of the null sink left unpinned (a run of its own in the report).
pub const UNPINNED: &str = "recvmmsg unpinned";

/// What a run is asked to do. `Options::quick()` and `Options::full()` are the presets.
#[derive(Clone, Debug)]
pub struct Options {
    pub scenarios: Vec<Scenario>,
    pub backends: Vec<&'static str>,
    /// Measured window of each scenario (after its warm-up).
    pub duration: Duration,
    pub warmup: Duration,
    /// Window of `rss-flood`.
    pub long_duration: Duration,
    /// Simulated member nodes.
    pub nodes: usize,
    /// Frame sizes of `hb-udp` (UDP payload bytes); the floods use the first.
    pub sizes: Vec<usize>,
    /// Sender threads of the blaster, and its source sockets (SO_REUSEPORT spreads sources
    /// over the listener's sockets by address and port).
    pub senders: usize,
    pub sockets: usize,
    /// `listener.threads` of the daemon and null-sink threads (0: one per CPU).
    pub threads: usize,
    /// Legitimate heartbeats per second alongside the floods.
    pub legit_rate: u64,
    pub tcp_rate: f64,
    pub connections: usize,
    /// `tcp-req`: where to write each measured request's timeline (`--tcp-trace`).
    pub tcp_trace: Option<PathBuf>,
    pub nodemgr: PathBuf,
    pub ip: IpAddr,
    /// Upper bound of the memory held by pre-sealed frames, MiB.
    pub max_pool_mib: usize,
    /// Also measure the null sink unpinned (for information; the ratios use the pinned one).
    pub unpinned_sink: bool,
    /// Pin the listener's workers and the null sink's threads one per CPU (the listener's
    /// default); false runs the daemons with `OSVC_LISTENER_PIN=0` and the sink unpinned.
    pub pin: bool,
    /// `[listener]` lines added to every daemon's node.conf (`--listener-conf`).
    pub listener_conf: String,
}

impl Options {
    pub fn full(nodemgr: PathBuf) -> Options {
        Options {
            scenarios: Scenario::ALL.to_vec(),
            backends: BACKENDS.to_vec(),
            duration: Duration::from_secs(5),
            warmup: Duration::from_millis(1000),
            long_duration: Duration::from_secs(300),
            nodes: 1000,
            sizes: vec![256, 1024],
            senders: 1,
            sockets: 16,
            threads: 0,
            legit_rate: 20_000,
            tcp_rate: 10_000.0,
            connections: 64,
            tcp_trace: None,
            nodemgr,
            ip: IpAddr::from([127, 0, 0, 1]),
            max_pool_mib: 2048,
            unpinned_sink: true,
            pin: true,
            listener_conf: String::new(),
        }
    }

    pub fn quick(nodemgr: PathBuf) -> Options {
        Options {
            duration: Duration::from_millis(1000),
            warmup: Duration::from_millis(300),
            long_duration: Duration::from_secs(4),
            max_pool_mib: 1024,
            unpinned_sink: false,
            ..Options::full(nodemgr)
        }
    }

    /// Listener (and null-sink) threads once 0 is resolved.
    pub fn resolved_threads(&self) -> usize {
        match self.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}
