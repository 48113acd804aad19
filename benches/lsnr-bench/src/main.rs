//! `lsnr-bench`: the listener's load generator. Named scenarios against a real daemon, each
//! bounded in count and time, on both backends in one invocation, with the kernel's limit for
//! the same sender (`null-sink`) as the reference. See `--help` and benches/LOADGEN.md.

mod cluster_hb;
mod daemon;
mod frames;
mod options;
mod report;
mod scenarios;
mod send;
mod sink;
mod sys;
mod tcp;

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use options::{BACKENDS, Options, Scenario};

const ABOUT: &str = "Load generator for the daemon's listener: named scenarios against a real \
daemon (`nodemgr daemon run` started as a child process with a temporary root), each run on the \
io_uring and the epoll backend in the same invocation, with the kernel's limit for the same \
sender (null-sink) as the reference.";

const LONG_ABOUT: &str = "Load generator for the daemon's listener: named scenarios against a \
real daemon (`nodemgr daemon run` started as a child process with a temporary root and a \
generated node.conf listing the simulated nodes), each run on the io_uring and the epoll \
backend in the same invocation, with the kernel's limit for the same sender (null-sink) as the \
reference. Traffic goes to 127.0.0.0/8 only. Every scenario is bounded: a warm-up, then a \
measured window (--duration), and the senders stop at a deadline.

Scenarios:

  null-sink           A receiver that only counts datagrams: as many threads and sockets as the
                      listener (SO_REUSEPORT, the same receive buffer, the same CPU pinning),
                      each taking up to 64 datagrams per blocking recvmmsg. Its CPU per
                      datagram is the floor of the CPU ratios (the primary figures), its rate
                      the reference of the throughput ratios. Measured at each size the other
                      scenarios use (and 0 B for empty-packets).

  hb-udp              N simulated member nodes (--nodes, 1000) sending heartbeats (kind 3) as
                      fast as sendmmsg goes from --sockets source sockets, frames sealed before
                      the clock starts (fresh counters, nothing replayed), at each --size
                      (256 and 1024 B). Each node repeats its content (its generation stays
                      at 1): a node's steady state. Reports the CPU per frame of the
                      listener's workers and the handler shards against the null sink's per
                      datagram, then the heartbeats applied to the peers' views per second
                      (and the listener's delivered/s, repeats/s) and pipeline / null-sink.

  hb-udp-news         The same, but every heartbeat is a new generation of its node's content:
                      nothing repeats, every payload is read in full. The worst case.

  blacklisted-flood   Legitimate nodes at --legit-rate heartbeats/s alone, then the same with one
                      banned member name (banned first with 5 frames that fail authentication)
                      flooding from every socket. Reports the drop rate (dropped_blacklisted/s)
                      / null-sink and legit throughput under flood / alone.

  random-names-flood  The same with a flood of frames under 4096 random non-member names (the
                      join path, rate-limited before any decryption).

  tcp-req             --connections TCP connections sending encrypted, length-prefixed
                      daemon_status requests at --tcp-rate requests/s in total, open loop:
                      latency from each request's due time to its response (p50, p99, p999).
                      Also how late the load generator itself wrote them (send lag p99) and
                      the p99 from each write to its response: on a machine the load
                      generator shares, its own lateness is part of the latency.

  empty-packets       A flood of empty datagrams: listener triggers (dequeues/s) against the
                      dequeue runs they coalesce into.

  rss-flood           A long flood (banned name + random names + empty datagrams, with
                      legitimate nodes) with the daemon's RSS sampled every second: the
                      deviation from its warmed-up baseline. 300 s by default (--long-duration),
                      4 s with --quick.

Every daemon run reports its RSS when ready, at the end, and its peak (VmHWM), and the CPU time
of each of its threads over the window (schedstat). The summary prints the ratios (CPU per
frame of the workers and shards / the null sink's per datagram, io_uring / epoll CPU per
frame, pipeline / null-sink, legit under flood / alone) and the targets; --check exits with
status 3 when a primary target is missed; --json writes every figure.";

#[derive(Parser, Debug)]
#[command(name = "lsnr-bench", about = ABOUT, long_about = LONG_ABOUT)]
struct Cli {
    /// Short runs (1 s windows, 4 s rss-flood): the whole suite in under a minute
    #[arg(long)]
    quick: bool,
    /// Instead of the suite: --nodes members heartbeating at 1 Hz each into one daemon for
    /// --duration seconds (default 20), `daemon status` timed every 100 ms; both backends
    #[arg(long)]
    cluster_hb: bool,
    /// Run only these scenarios (repeat or comma-separate); default: all
    #[arg(long, value_delimiter = ',', value_parser = parse_scenario)]
    scenario: Vec<Scenario>,
    /// Run only this backend: io_uring or epoll; default: both
    #[arg(long, value_parser = ["io_uring", "epoll"])]
    backend: Option<String>,
    /// Measured window of each scenario, seconds (default 5, --quick 1)
    #[arg(long)]
    duration: Option<f64>,
    /// Warm-up before each window, seconds (default 1, --quick 0.3)
    #[arg(long)]
    warmup: Option<f64>,
    /// Window of rss-flood, seconds (default 300, --quick 4)
    #[arg(long)]
    long_duration: Option<f64>,
    /// Simulated member nodes
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Frame size in bytes (UDP payload); repeat or comma-separate; default 256,1024. The
    /// floods use the first
    #[arg(long, value_delimiter = ',')]
    size: Vec<usize>,
    /// Sender threads pushing the floods and heartbeats
    #[arg(long, default_value_t = 1)]
    senders: usize,
    /// Source sockets of the blaster (SO_REUSEPORT spreads them over the listener's sockets)
    #[arg(long, default_value_t = 16)]
    sockets: usize,
    /// listener.threads of the daemon, and null-sink threads (0: one per CPU)
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Legitimate heartbeats per second alongside the floods
    #[arg(long, default_value_t = 20_000)]
    legit_rate: u64,
    /// tcp-req: requests per second, in total
    #[arg(long, default_value_t = 10_000.0)]
    tcp_rate: f64,
    /// tcp-req: connections
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// tcp-req: write each measured request's timeline to this file, one line each: µs from
    /// the window's start to when it was due, then written, then answered, and its
    /// connection (with both backends, the backend's name is added before the extension)
    #[arg(long, value_name = "FILE")]
    tcp_trace: Option<PathBuf>,
    /// Address of the daemon and the senders (127.0.0.0/8 only)
    #[arg(long, default_value = "127.0.0.1")]
    ip: IpAddr,
    /// Memory for pre-sealed frames, MiB (default 2048, --quick 1024)
    #[arg(long)]
    max_pool_mib: Option<usize>,
    /// Also measure the null sink with its threads left unpinned (for information; the
    /// ratios use the pinned one). On by default without --quick
    #[arg(long)]
    unpinned_sink: bool,
    /// Run the daemons with OSVC_LISTENER_PIN=0 (workers left to the scheduler) and the null
    /// sink unpinned too
    #[arg(long)]
    no_pin: bool,
    /// The nodemgr binary (default: next to this one)
    #[arg(long)]
    nodemgr: Option<PathBuf>,
    /// A `[listener]` line for every daemon's node.conf, e.g. `udp_gather = 2ms` (repeat for
    /// more)
    #[arg(long)]
    listener_conf: Vec<String>,
    /// Write the summary, every figure, as JSON to this file
    #[arg(long)]
    json: Option<PathBuf>,
    /// Exit non-zero when a target measured in this run is missed, printing one line per
    /// missed target with its goal and the figure (with --cluster-hb: the daemon under 25 %
    /// of one core, under 200 MiB RSS, `daemon status` p99 under 250 ms)
    #[arg(long)]
    check: bool,
}

fn parse_scenario(s: &str) -> Result<Scenario, String> {
    Scenario::parse(s).ok_or_else(|| {
        let names: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
        format!("unknown scenario {s:?} (one of: {})", names.join(", "))
    })
}

fn secs(v: f64, what: &str) -> Result<Duration, String> {
    if v.is_finite() && (0.0..=3600.0).contains(&v) {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(format!("{what} must be between 0 and 3600 s"))
    }
}

fn options(cli: Cli) -> Result<(Options, Option<PathBuf>), String> {
    let nodemgr = match cli.nodemgr {
        Some(p) => p,
        None => std::env::current_exe()
            .map_err(|e| format!("cannot locate this binary: {e}"))?
            .with_file_name("nodemgr"),
    };
    if !nodemgr.exists() {
        return Err(format!(
            "{} not found (build it: cargo build --release --bin nodemgr, or pass --nodemgr)",
            nodemgr.display()
        ));
    }
    let mut o = if cli.quick {
        Options::quick(nodemgr)
    } else {
        Options::full(nodemgr)
    };
    if !cli.scenario.is_empty() {
        o.scenarios = cli.scenario;
        o.scenarios.sort();
        o.scenarios.dedup();
    }
    o.listener_conf = cli.listener_conf.join("\n");
    if let Some(b) = cli.backend {
        o.backends = BACKENDS.into_iter().filter(|x| *x == b).collect();
    }
    if let Some(v) = cli.duration {
        o.duration = secs(v, "--duration")?;
        if o.duration.is_zero() {
            return Err("--duration must be above 0".into());
        }
    }
    if let Some(v) = cli.warmup {
        o.warmup = secs(v, "--warmup")?;
    }
    if let Some(v) = cli.long_duration {
        o.long_duration = secs(v, "--long-duration")?;
    }
    if cli.nodes == 0 || cli.nodes > 100_000 {
        return Err("--nodes must be between 1 and 100000".into());
    }
    o.nodes = cli.nodes;
    if !cli.size.is_empty() {
        // The random names of random-names-flood are the longest (16 bytes).
        let min = frames::min_size(16);
        if let Some(bad) = cli.size.iter().find(|s| **s < min || **s > 65_507) {
            return Err(format!("--size {bad}: must be between {min} and 65507"));
        }
        o.sizes = cli.size;
    }
    o.senders = cli.senders.clamp(1, 64);
    o.sockets = cli.sockets.clamp(1, 1024);
    o.threads = cli.threads;
    o.legit_rate = cli.legit_rate.clamp(1, 10_000_000);
    if !(cli.tcp_rate > 0.0 && cli.tcp_rate <= 1e6) {
        return Err("--tcp-rate must be above 0 and at most 1e6".into());
    }
    o.tcp_rate = cli.tcp_rate;
    o.connections = cli.connections.clamp(1, 4096);
    o.tcp_trace = cli.tcp_trace;
    let loopback = match cli.ip {
        IpAddr::V4(a) => a.is_loopback(),
        IpAddr::V6(_) => false,
    };
    if !loopback {
        return Err("--ip must be in 127.0.0.0/8".into());
    }
    o.ip = cli.ip;
    o.unpinned_sink |= cli.unpinned_sink;
    o.pin = !cli.no_pin;
    if let Some(m) = cli.max_pool_mib {
        o.max_pool_mib = m.clamp(16, 16 * 1024);
    }
    Ok((o, cli.json))
}

/// The goals of `--cluster-hb --check` (issue 14, at 10,000 nodes): (what, limit).
const CLUSTER_GOALS: [(&str, f64); 3] = [
    ("daemon cpu % of one core", 25.0),
    ("daemon rss peak MiB", 200.0),
    ("daemon status p99 ms", 250.0),
];

/// `--cluster-hb`: a table and (with --json) the figures.
fn cluster_hb(opts: &Options, secs: u64, json: Option<PathBuf>, check: bool) -> ExitCode {
    let mut rows = Vec::new();
    for backend in opts.backends.iter().copied() {
        eprintln!(
            "cluster-hb: {backend}, {} nodes at 1 Hz for {secs} s",
            opts.nodes
        );
        match cluster_hb::run(opts, backend, secs, 512) {
            Ok(r) => rows.push((backend, r)),
            Err(e) => {
                eprintln!("lsnr-bench: cluster-hb on {backend}: {e:#}");
                return ExitCode::FAILURE;
            }
        }
    }
    println!(
        "backend    nodes  sent/s  delivered/s  peers  status calls  p50 ms  p99 ms  max ms  cpu %  rss end/peak MiB  shard ms/status  others' cpu s"
    );
    let mut missed = Vec::new();
    for (b, r) in &rows {
        println!(
            "{b:<10} {:>5} {:>7.0} {:>12.0} {:>6} {:>13} {:>7.2} {:>7.2} {:>7.2} {:>6.1}  {:>16} {:>16.2} {:>14.1}",
            r.nodes,
            r.sent as f64 / r.secs,
            r.delivered as f64 / r.secs,
            r.peers_seen,
            r.status_calls,
            r.status_p50_ms,
            r.status_p99_ms,
            r.status_max_ms,
            r.daemon_cpu_pct,
            format!("{:.1}/{:.1}", r.rss_end_mib, r.rss_peak_mib),
            r.status_shard_ms,
            r.foreign_cpu_s,
        );
        let busy: Vec<String> = r
            .threads
            .iter()
            .filter(|(_, (cpu, _))| *cpu >= 0.5)
            .map(|(name, (cpu, cs))| format!("{name} {cpu:.1} % {cs:.0} cs/s"))
            .collect();
        println!(
            "  threads (% of a core, context switches/s): {}",
            busy.join(", ")
        );
        let figures = [r.daemon_cpu_pct, r.rss_peak_mib, r.status_p99_ms];
        for ((what, limit), v) in CLUSTER_GOALS.iter().zip(figures) {
            if v >= *limit {
                missed.push(format!(
                    "missed: cluster-hb {} nodes {b}: {what}: {v:.1} (goal < {limit})",
                    r.nodes
                ));
            }
        }
    }
    if let Some(path) = json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|(b, r)| {
                serde_json::json!({
                    "backend": b, "nodes": r.nodes, "secs": r.secs, "sent": r.sent,
                    "delivered": r.delivered, "peers_seen": r.peers_seen,
                    "status_calls": r.status_calls, "status_p50_ms": r.status_p50_ms,
                    "status_p99_ms": r.status_p99_ms, "status_max_ms": r.status_max_ms,
                    "daemon_cpu_pct": r.daemon_cpu_pct, "rss_end_mib": r.rss_end_mib,
                    "rss_peak_mib": r.rss_peak_mib, "status_shard_ms": r.status_shard_ms,
                    "foreign_cpu_s": r.foreign_cpu_s,
                    "threads": r.threads.iter().map(|(name, (cpu, cs))| {
                        (name.clone(), serde_json::json!({"cpu_pct": cpu, "switches_per_s": cs}))
                    }).collect::<serde_json::Map<_, _>>(),
                })
            })
            .collect();
        let _ = std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap_or_default());
    }
    finish_check(check, &missed)
}

/// `--check`: one line per missed target, and the exit status.
fn finish_check(check: bool, missed: &[String]) -> ExitCode {
    if !check {
        return ExitCode::SUCCESS;
    }
    for m in missed {
        println!("{m}");
    }
    if missed.is_empty() {
        println!("check: every target measured was met");
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cluster = cli.cluster_hb;
    let check = cli.check;
    let secs = cli.duration;
    let (opts, json) = match options(cli) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("lsnr-bench: {e}");
            return ExitCode::from(2);
        }
    };
    if cluster {
        return cluster_hb(&opts, secs.map_or(20, |d| d.max(1.0) as u64), json, check);
    }
    let mut log = |s: &str| eprintln!("{s}");
    let summary = match scenarios::run_all(&opts, &mut log) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("lsnr-bench: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", summary.render());
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&summary.to_json()).unwrap_or_default();
        if let Err(e) = std::fs::write(&path, text + "\n") {
            eprintln!("lsnr-bench: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    finish_check(check, &summary.missed())
}
