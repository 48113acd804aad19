//! `cluster-hb`: a cluster's steady state at scale. N simulated members heartbeat at 1 Hz each (paced, spread
//! evenly over every second, as a real cluster's beats are) into one daemon, while `daemon
//! status` is asked every 100 ms over the local socket. Reports the status latency
//! percentiles and how many heartbeats were delivered. Bounded by `secs`.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use crate::daemon::{Daemon, DaemonSpec};
use crate::frames::{heartbeat_payload, node_names, senders};
use osvc_agent::internals::clock::now_ms;
use osvc_agent::internals::wire::Kind;

#[derive(Clone, Debug, Default)]
pub struct ClusterHb {
    pub nodes: usize,
    pub secs: f64,
    pub sent: u64,
    pub delivered: u64,
    pub peers_seen: usize,
    pub status_calls: usize,
    pub status_p50_ms: f64,
    pub status_p99_ms: f64,
    pub status_max_ms: f64,
    /// The daemon's CPU over the run, in % of one core.
    pub daemon_cpu_pct: f64,
    /// The node shard's CPU per status answer (it builds them), ms.
    pub status_shard_ms: f64,
    /// The daemon's VmRSS at the end and its peak (VmHWM), MiB.
    pub rss_end_mib: f64,
    pub rss_peak_mib: f64,
    /// CPU seconds other processes used during the run (the machine's busy time minus the
    /// daemon's and this process's).
    pub foreign_cpu_s: f64,
    /// Per thread name: % of one core and context switches per second over the run.
    pub threads: std::collections::BTreeMap<String, (f64, f64)>,
}

pub fn run(
    opts: &crate::options::Options,
    backend: &'static str,
    secs: u64,
    frame_size: usize,
) -> anyhow::Result<ClusterHb> {
    let nodes = opts.nodes;
    let names = node_names(nodes);
    let spec = DaemonSpec {
        nodemgr: opts.nodemgr.clone(),
        backend,
        ip: "127.0.0.1".parse()?,
        threads: 0,
        members: names.clone(),
        secret: "cluster-hb-secret".into(),
        extra: opts.listener_conf.clone(),
        pin: true,
    };
    let daemon = Daemon::start(&spec)?;
    let identity = daemon.identity(&names[0]);
    let mut senders = senders(&identity.secret, &identity.cluster, &names, now_ms());
    let payload = heartbeat_payload(frame_size, names[0].len());
    let before = daemon.counters()?;
    let (cpu0, t0) = (crate::sys::process_cpu_s(daemon.pid), Instant::now());
    let (busy0, own0) = (
        crate::sys::machine_busy_s(),
        crate::sys::process_cpu_s(std::process::id()),
    );
    let threads0 = (
        crate::sys::thread_cpu(daemon.pid),
        crate::sys::thread_switches(daemon.pid),
    );
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    let stop_at = Instant::now() + Duration::from_secs(secs);
    // The sender paces itself on its own thread; this one asks for the status.
    let addr = daemon.addr;
    let sender = std::thread::spawn(move || -> u64 {
        let per_beat = Duration::from_secs(1) / nodes.max(1) as u32;
        let start = Instant::now();
        let mut sent = 0u64;
        let mut frame = Vec::with_capacity(payload.len() + 128);
        while Instant::now() < stop_at {
            let i = (sent as usize) % senders.len();
            let due = start + per_beat * sent as u32;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            frame.clear();
            if senders[i]
                .seal(Kind::Heartbeat, &payload, now_ms(), &mut frame)
                .is_ok()
            {
                let _ = sock.send_to(&frame, addr);
            }
            sent += 1;
        }
        sent
    });
    let mut latencies = Vec::new();
    while Instant::now() < stop_at {
        let t = Instant::now();
        let s = daemon.status()?;
        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
        std::hint::black_box(s);
        std::thread::sleep(Duration::from_millis(100));
    }
    let sent = sender
        .join()
        .map_err(|_| anyhow::anyhow!("the sender thread panicked"))?;
    let elapsed = t0.elapsed().as_secs_f64().max(1e-3);
    let daemon_cpu_s = crate::sys::process_cpu_s(daemon.pid) - cpu0;
    let cpu_pct = daemon_cpu_s * 100.0 / elapsed;
    let foreign_cpu_s = (crate::sys::machine_busy_s()
        - busy0
        - daemon_cpu_s
        - (crate::sys::process_cpu_s(std::process::id()) - own0))
        .max(0.0);
    let thread_cpu = crate::sys::cpu_delta(&threads0.0, &crate::sys::thread_cpu(daemon.pid));
    let switches = crate::sys::cpu_delta(&threads0.1, &crate::sys::thread_switches(daemon.pid));
    let threads = thread_cpu
        .iter()
        .map(|(name, cpu)| {
            let cs = switches.get(name).copied().unwrap_or(0.0);
            (name.clone(), (cpu * 100.0 / elapsed, cs / elapsed))
        })
        .collect();
    let status_shard_ms = thread_cpu.get("shard.0").copied().unwrap_or(0.0) * 1000.0
        / (latencies.len().max(1) as f64);
    let after = daemon.counters()?;
    let rss = daemon.rss();
    let status = daemon.status()?;
    latencies.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    Ok(ClusterHb {
        nodes,
        secs: secs as f64,
        sent,
        delivered: before.delta(&after, "delivered"),
        peers_seen: status["peers"].as_object().map_or(0, |p| p.len()),
        status_calls: latencies.len(),
        status_p50_ms: pct(0.5),
        status_p99_ms: pct(0.99),
        status_max_ms: latencies.last().copied().unwrap_or(0.0),
        daemon_cpu_pct: cpu_pct,
        status_shard_ms,
        rss_end_mib: rss.rss_kib as f64 / 1024.0,
        rss_peak_mib: rss.hwm_kib as f64 / 1024.0,
        foreign_cpu_s,
        threads,
    })
}
