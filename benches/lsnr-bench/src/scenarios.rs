//! The scenarios. Each one is bounded in time (warm-up + window, or its pool of frames) and
//! starts a fresh daemon per backend.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::daemon::{CLUSTER, Counters, Daemon, DaemonSpec};
use crate::frames::{self, Pool};
use crate::options::{Options, SINK, Scenario, UNPINNED};
use crate::report::{Run, Summary};
use crate::send::{Blast, Lane, Paced, connected_socket};
use crate::sink::NullSink;
use crate::sys;
use osvc_agent::internals::clock::now_ms;
use osvc_agent::internals::wire::Request;

const BANNED: &str = "banned01";

/// Progress lines go here (stderr in the binary).
pub type Log<'a> = &'a mut dyn FnMut(&str);

fn secret() -> String {
    osvc_agent::internals::config::generate_secret()
}

struct Ctx<'a> {
    opts: &'a Options,
    names: Vec<String>,
    /// Null-sink rate by frame size, for sizing pools and for the ratios.
    sink_rate: BTreeMap<usize, f64>,
    /// Null-sink CPU per datagram (µs) by frame size: the floor of the CPU ratios.
    sink_cpu_us: BTreeMap<usize, f64>,
}

impl Ctx<'_> {
    fn spec(&self, backend: &'static str, extra_members: &[&str]) -> DaemonSpec {
        let mut members = self.names.clone();
        members.extend(extra_members.iter().map(|s| s.to_string()));
        DaemonSpec {
            nodemgr: self.opts.nodemgr.clone(),
            backend,
            ip: self.opts.ip,
            threads: self.opts.threads,
            members,
            secret: secret(),
            extra: self.opts.listener_conf.clone(),
            pin: self.opts.pin,
        }
    }

    fn sockets(&self, n: usize, target: SocketAddr) -> anyhow::Result<Vec<UdpSocket>> {
        (0..n.max(1))
            .map(|_| Ok(connected_socket(self.opts.ip, target)?))
            .collect()
    }

    /// Lanes cycling over one pool, one per socket.
    fn cyclic_lanes(&self, n: usize, target: SocketAddr, pool: Pool) -> anyhow::Result<Vec<Lane>> {
        let pool = Arc::new(pool);
        Ok(self
            .sockets(n, target)?
            .into_iter()
            .map(|s| Lane::new(s, pool.clone(), true))
            .collect())
    }

    fn paced(&self, d: &Daemon, deadline: Instant) -> anyhow::Result<Paced> {
        let size = self.opts.sizes[0];
        let payload = frames::heartbeat_payload(size, self.names[0].len());
        let senders = frames::senders(&d.secret, CLUSTER, &self.names, now_ms());
        let socks = self.sockets(4, d.addr)?;
        Ok(Paced::start(
            self.opts.legit_rate,
            senders,
            payload,
            socks,
            deadline,
        ))
    }
}

/// The measured window: waits `warmup`, reads the counters and CPU times, waits `duration`
/// (less if `stop_early` says so), reads them again.
struct Window {
    c0: Counters,
    c1: Counters,
    /// CPU seconds of each daemon thread over the window.
    cpu: BTreeMap<String, f64>,
    sys: SysDelta,
}

/// What the machine did during a window besides the daemon's counters.
#[derive(Clone, Copy, Debug, Default)]
struct SysDelta {
    /// Busy CPU seconds of the whole machine, of the daemon, of this process.
    machine_s: f64,
    daemon_s: f64,
    bench_s: f64,
    ipis: u64,
}

impl SysDelta {
    /// CPU seconds other tenants of the machine used during the window.
    fn foreign_s(&self) -> f64 {
        (self.machine_s - self.daemon_s - self.bench_s).max(0.0)
    }
}

#[derive(Clone, Copy)]
struct SysSnap {
    machine_s: f64,
    daemon_s: f64,
    bench_s: f64,
    ipis: u64,
}

impl SysSnap {
    fn take(daemon: Option<u32>) -> SysSnap {
        SysSnap {
            machine_s: sys::machine_busy_s(),
            daemon_s: daemon.map_or(0.0, sys::process_cpu_s),
            bench_s: sys::process_cpu_s(std::process::id()),
            ipis: sys::ipis(),
        }
    }
    fn since(&self, earlier: &SysSnap) -> SysDelta {
        SysDelta {
            machine_s: self.machine_s - earlier.machine_s,
            daemon_s: self.daemon_s - earlier.daemon_s,
            bench_s: self.bench_s - earlier.bench_s,
            ipis: self.ipis.saturating_sub(earlier.ipis),
        }
    }
}

fn window(
    d: &Daemon,
    warmup: Duration,
    duration: Duration,
    stop_early: impl Fn() -> bool,
) -> anyhow::Result<Window> {
    std::thread::sleep(warmup);
    let s0 = SysSnap::take(Some(d.pid));
    let cpu0 = sys::thread_cpu(d.pid);
    let c0 = d.counters()?;
    let end = Instant::now() + duration;
    while Instant::now() < end && !stop_early() {
        std::thread::sleep(Duration::from_millis(10).min(end - Instant::now().min(end)));
    }
    let c1 = d.counters()?;
    let cpu1 = sys::thread_cpu(d.pid);
    let s1 = SysSnap::take(Some(d.pid));
    Ok(Window {
        c0,
        c1,
        cpu: sys::cpu_delta(&cpu0, &cpu1),
        sys: s1.since(&s0),
    })
}

/// The window of a scenario whose senders outrun the daemon: it starts when the first
/// counters are read, ends `duration` later (or when the senders run out of frames) by
/// stopping the senders, and closes once the daemon has drained its sockets' queues, so
/// every frame it counted arrived inside the window. The counters are read through the
/// node shard, which may lag far behind a flood of heartbeats: each reading is dated when
/// its call returns (when the handler read them), not when it was made.
fn window_until_drained(
    d: &Daemon,
    warmup: Duration,
    duration: Duration,
    exhausted: impl Fn() -> Option<Instant>,
    stop: impl FnOnce(),
) -> anyhow::Result<(Window, Duration)> {
    std::thread::sleep(warmup);
    let c0 = d.counters()?;
    let s0 = SysSnap::take(Some(d.pid));
    let cpu0 = sys::thread_cpu(d.pid);
    let end = c0.at + duration;
    while Instant::now() < end && exhausted().is_none() {
        std::thread::sleep(Duration::from_millis(5));
    }
    stop();
    let stopped = Instant::now();
    let deadline = stopped + Duration::from_secs(5);
    while sys::udp_rx_queue(d.addr.port()) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let drained = Instant::now();
    let cpu1 = sys::thread_cpu(d.pid);
    let s1 = SysSnap::take(Some(d.pid));
    let mut c1 = d.counters()?;
    c1.at = drained;
    Ok((
        Window {
            c0,
            c1,
            cpu: sys::cpu_delta(&cpu0, &cpu1),
            sys: s1.since(&s0),
        },
        drained - stopped,
    ))
}

impl Window {
    fn rate(&self, name: &str) -> f64 {
        self.c0.rate(&self.c1, name)
    }
    fn delta(&self, name: &str) -> f64 {
        self.c0.delta(&self.c1, name) as f64
    }
    fn secs(&self) -> f64 {
        self.c1.at.duration_since(self.c0.at).as_secs_f64()
    }
}

/// Fills in what every daemon run reports: RSS, CPU, the listener's counters.
/// The machine's figures of a window: other tenants' CPU, IPIs per frame.
fn set_sys(run: &mut Run, d: &SysDelta, frames: f64) {
    run.set("machine_busy_cpu_s", d.machine_s);
    run.set("foreign_cpu_s", d.foreign_s());
    run.set("bench_cpu_s", d.bench_s);
    run.set("ipis", d.ipis as f64);
    if frames > 0.0 {
        run.set("ipis_per_frame", d.ipis as f64 / frames);
    }
}

fn finish_run(run: &mut Run, d: &Daemon, rss_start: sys::Rss, w: &Window) {
    let end = d.rss();
    run.rss_start_kib = rss_start.rss_kib;
    run.rss_end_kib = end.rss_kib;
    run.rss_peak_kib = end.hwm_kib;
    run.cpu_s = w.cpu.clone();
    run.set("window_s", w.secs());
    for k in [
        "received",
        "delivered",
        "decrypted",
        "dropped_blacklisted",
        "dropped_join_rate",
        "dropped_session_full",
        "invalid_total",
        "dequeues",
        "heartbeat_repeats",
        "dispatch_dropped",
    ] {
        run.set(&format!("{k}_per_s"), w.rate(k));
    }
    run.set("applied_per_s", w.rate("heartbeats.applied"));
    run.set("news_per_s", w.rate("heartbeats.news"));
    run.set("invalid_in_window", w.delta("invalid_total"));
    run.set("status_call_ms", w.c1.call.as_secs_f64() * 1e3);
    set_sys(run, &w.sys, w.delta("received"));
    let cpu_total: f64 = w.cpu.values().sum();
    let lsnr: f64 = w
        .cpu
        .iter()
        .filter(|(k, _)| k.starts_with("lsnr."))
        .map(|(_, v)| v)
        .sum();
    let shards: f64 = w
        .cpu
        .iter()
        .filter(|(k, _)| k.starts_with("shard."))
        .map(|(_, v)| v)
        .sum();
    run.set("daemon_cpu_s", cpu_total);
    run.set("listener_cpu_s", lsnr);
    run.set("shards_cpu_s", shards);
    let received = w.delta("received");
    if received > 0.0 {
        run.set("listener_cpu_us_per_frame", lsnr * 1e6 / received);
        run.set("shards_cpu_us_per_frame", shards * 1e6 / received);
        // The receive path: the workers' and the handler shards' CPU, per frame received.
        run.set("cpu_us_per_frame", (lsnr + shards) * 1e6 / received);
    }
    let (warn, error) = d.log_problems();
    if error > 0 {
        run.notes
            .push(format!("daemon logged {error} error line(s)"));
    }
    run.set("log_warnings", warn as f64);
}

pub fn run_all(opts: &Options, log: Log<'_>) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let mut opts = opts.clone();
    if let Err(e) = osvc_agent::internals::bench_support::uring_available() {
        log(&format!("io_uring unavailable ({e}): epoll backend only"));
        opts.backends.retain(|b| *b != "io_uring");
    }
    let opts = &opts;
    let mut ctx = Ctx {
        opts,
        names: frames::node_names(opts.nodes),
        sink_rate: BTreeMap::new(),
        sink_cpu_us: BTreeMap::new(),
    };
    let mut summary = Summary {
        date: sys::utc_now(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        machine: sys::machine(),
        options: options_json(opts),
        ..Default::default()
    };
    let wants = |s: Scenario| opts.scenarios.contains(&s);
    let flood_size = opts.sizes[0];
    // The null sink is the reference of every ratio: measure what the selected scenarios need.
    let mut sink_sizes: Vec<usize> = Vec::new();
    if wants(Scenario::NullSink) || wants(Scenario::HbUdp) || wants(Scenario::HbUdpNews) {
        sink_sizes.extend(&opts.sizes);
    }
    if wants(Scenario::BlacklistedFlood) || wants(Scenario::RandomNamesFlood) {
        sink_sizes.push(flood_size);
    }
    if wants(Scenario::NullSink) || wants(Scenario::EmptyPackets) {
        sink_sizes.push(0);
    }
    sink_sizes.sort_unstable();
    sink_sizes.dedup();
    for size in sink_sizes {
        for pinned in [true, false] {
            if !pinned && (!opts.unpinned_sink || !opts.pin) {
                continue;
            }
            log(&format!(
                "null-sink {size} B{} ...",
                if pinned { "" } else { " (unpinned)" }
            ));
            let r = null_sink(&ctx, size, pinned)?;
            if pinned {
                ctx.sink_rate
                    .insert(size, r.get("received_per_s").unwrap_or(0.0));
                if let Some(cpu) = r.get("sink_cpu_us_per_frame") {
                    ctx.sink_cpu_us.insert(size, cpu);
                }
            }
            log(&format!(
                "  {:.0} datagrams/s received ({:.0} sent/s)",
                r.get("received_per_s").unwrap_or(0.0),
                r.get("sent_per_s").unwrap_or(0.0)
            ));
            summary.runs.push(r);
        }
    }
    for sc in Scenario::ALL
        .into_iter()
        .filter(|s| s.per_backend() && wants(*s))
    {
        for &backend in &opts.backends {
            let sizes: Vec<usize> = match sc {
                Scenario::HbUdp | Scenario::HbUdpNews => opts.sizes.clone(),
                _ => vec![flood_size],
            };
            for size in sizes {
                let shown_size = match sc {
                    Scenario::TcpReq | Scenario::EmptyPackets => String::new(),
                    _ => format!(" {size} B"),
                };
                log(&format!("{} {backend}{shown_size} ...", sc.name()));
                let run = match sc {
                    Scenario::HbUdp => hb_udp(&ctx, backend, size, false, log)?,
                    Scenario::HbUdpNews => hb_udp(&ctx, backend, size, true, log)?,
                    Scenario::BlacklistedFlood => flood(&ctx, backend, size, Flood::Banned)?,
                    Scenario::RandomNamesFlood => flood(&ctx, backend, size, Flood::RandomNames)?,
                    Scenario::TcpReq => tcp_req(&ctx, backend)?,
                    Scenario::EmptyPackets => empty_packets(&ctx, backend)?,
                    Scenario::RssFlood => rss_flood(&ctx, backend, size, log)?,
                    Scenario::NullSink => unreachable!("not per backend"),
                };
                let shown: Vec<String> = run
                    .columns
                    .iter()
                    .filter_map(|(t, k)| run.get(k).map(|v| format!("{t} {v:.1}")))
                    .collect();
                log(&format!("  {}", shown.join(", ")));
                summary.runs.push(run);
            }
        }
    }
    summary.compute(&opts.sizes, flood_size);
    summary.elapsed_s = started.elapsed().as_secs_f64();
    Ok(summary)
}

fn options_json(o: &Options) -> serde_json::Value {
    serde_json::json!({
        "scenarios": o.scenarios.iter().map(|s| s.name()).collect::<Vec<_>>(),
        "backends": o.backends,
        "duration_s": o.duration.as_secs_f64(),
        "warmup_s": o.warmup.as_secs_f64(),
        "long_duration_s": o.long_duration.as_secs_f64(),
        "nodes": o.nodes,
        "sizes": o.sizes,
        "senders": o.senders,
        "sockets": o.sockets,
        "threads": o.threads,
        "threads_resolved": o.resolved_threads(),
        "legit_rate": o.legit_rate,
        "tcp_rate": o.tcp_rate,
        "connections": o.connections,
        "ip": o.ip.to_string(),
        "max_pool_mib": o.max_pool_mib,
        "unpinned_sink": o.unpinned_sink,
        "pin": o.pin,
    })
}

/// The null sink at `size`; `pinned` as the listener's workers are (the reference of the
/// ratios), or left to the scheduler (for information: on 2 CPUs it can leave the sender's
/// CPU alone, and the sender goes faster).
fn null_sink(ctx: &Ctx<'_>, size: usize, pinned: bool) -> anyhow::Result<Run> {
    let o = ctx.opts;
    let sink = NullSink::start(o.ip, o.resolved_threads(), pinned && o.pin)?;
    let lanes = ctx.cyclic_lanes(o.sockets, sink.addr, frames::filler_pool(size, 64))?;
    let snmp0 = sys::udp_snmp();
    let blast = Blast::start(
        lanes,
        o.senders,
        Instant::now() + o.warmup + o.duration + Duration::from_secs(5),
    );
    std::thread::sleep(o.warmup);
    let me = std::process::id();
    let (snap0, cpu0) = (SysSnap::take(None), sys::thread_cpu(me));
    let (r0, s0, t0) = (sink.received(), blast.sent(), Instant::now());
    std::thread::sleep(o.duration);
    let (r1, s1, t1) = (sink.received(), blast.sent(), Instant::now());
    let (snap1, cpu1) = (SysSnap::take(None), sys::thread_cpu(me));
    blast.finish();
    sink.finish()?;
    let snmp1 = sys::udp_snmp();
    let dt = (t1 - t0).as_secs_f64();
    let mut run = Run::new("null-sink", if pinned { SINK } else { UNPINNED }, size);
    run.set("received_per_s", (r1 - r0) as f64 / dt);
    run.set("sent_per_s", (s1 - s0) as f64 / dt);
    run.set(
        "kernel_drop_pct",
        100.0 * (1.0 - (r1 - r0) as f64 / (s1 - s0).max(1) as f64),
    );
    run.set(
        "rcvbuf_errors",
        sys::snmp_delta(&snmp0, &snmp1, "RcvbufErrors") as f64,
    );
    run.set("window_s", dt);
    let cpu = sys::cpu_delta(&cpu0, &cpu1);
    let sum = |prefix: &str| -> f64 {
        cpu.iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v)
            .sum()
    };
    let (recv, sent) = ((r1 - r0) as f64, (s1 - s0) as f64);
    if recv > 0.0 {
        run.set("sink_cpu_us_per_frame", sum("sink.") * 1e6 / recv);
    }
    if sent > 0.0 {
        run.set("sender_cpu_us_per_frame", sum("blast.") * 1e6 / sent);
    }
    set_sys(&mut run, &snap1.since(&snap0), recv);
    run.cpu_s = cpu;
    run.columns = vec![
        ("recv/s", "received_per_s"),
        ("sent/s", "sent_per_s"),
        ("kernel drop %", "kernel_drop_pct"),
        ("sink µs/dgram", "sink_cpu_us_per_frame"),
        ("sender µs/dgram", "sender_cpu_us_per_frame"),
        ("IPIs/dgram", "ipis_per_frame"),
        ("others' cpu s", "foreign_cpu_s"),
    ];
    Ok(run)
}

/// `news` false: every node repeats its heartbeat (a node's steady state: its content does
/// not change, nor its generation). True: every heartbeat is a new generation, which the
/// daemon must read in full (the worst case: every node's content changes every beat).
fn hb_udp(
    ctx: &Ctx<'_>,
    backend: &'static str,
    size: usize,
    news: bool,
    log: Log<'_>,
) -> anyhow::Result<Run> {
    let o = ctx.opts;
    let d = Daemon::start(&ctx.spec(backend, &[]))?;
    let rss_start = d.rss();
    let scenario = if news { "hb-udp-news" } else { "hb-udp" };
    let mut run = Run::new(scenario, backend, size);
    // Pool: enough frames for the sender's full rate (null sink, same size) over the warm-up
    // and the window, with margin, within the memory cap. Every frame carries a fresh
    // counter: nothing is replayed.
    let planned = o.warmup + o.duration + Duration::from_millis(500);
    let rate_hint = ctx.sink_rate.get(&size).copied().unwrap_or(1.5e6).max(1e5);
    let cap = o.max_pool_mib * (1 << 20) / size.max(1);
    let want = ((rate_hint * 1.5 * planned.as_secs_f64()) as usize).min(cap);
    let k = o.sockets.max(1).min(ctx.names.len());
    let rounds = want.div_ceil(ctx.names.len()).max(2);
    let name_len = ctx.names[0].len();
    let payload = frames::heartbeat_payload(size, name_len);
    let now = now_ms();
    let t_seal = Instant::now();
    // Node i goes out on socket i % k, so its frames stay in order on one listener socket.
    let mut groups: Vec<Vec<osvc_agent::internals::wire::Sealer>> =
        (0..k).map(|_| Vec::new()).collect();
    for (i, s) in frames::senders(&d.secret, CLUSTER, &ctx.names, now)
        .into_iter()
        .enumerate()
    {
        groups[i % k].push(s);
    }
    let pools: Vec<Pool> = std::thread::scope(|scope| {
        let hs: Vec<_> = groups
            .iter_mut()
            .map(|g| {
                let payload = &payload;
                scope.spawn(move || {
                    frames::heartbeat_pool_with(g, rounds, now, |round| {
                        if news {
                            frames::heartbeat_payload_at(size, name_len, round as u64 + 1)
                        } else {
                            payload.clone()
                        }
                    })
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("sealing thread"))
            .collect()
    });
    let pool_frames: usize = pools.iter().map(|p| p.count).sum();
    let pool_bytes: usize = pools.iter().map(Pool::bytes).sum();
    log(&format!(
        "  sealed {pool_frames} frames ({} MiB) in {:.2} s",
        pool_bytes >> 20,
        t_seal.elapsed().as_secs_f64()
    ));
    let socks = ctx.sockets(k, d.addr)?;
    let lanes: Vec<Lane> = socks
        .into_iter()
        .zip(pools)
        .map(|(s, p)| Lane::new(s, Arc::new(p), false))
        .collect();
    let snmp0 = sys::udp_snmp();
    let blast = Blast::start(
        lanes,
        o.senders,
        Instant::now() + planned + Duration::from_secs(30),
    );
    let exhausted_at = blast.exhausted_at.clone();
    let exhausted = move || *exhausted_at.lock().unwrap_or_else(|p| p.into_inner());
    let sent = blast.sent.clone();
    let (w, drain) = window_until_drained(&d, o.warmup, o.duration, &exhausted, move || {
        blast.finish();
    })?;
    let snmp1 = sys::udp_snmp();
    if exhausted().is_some() {
        run.notes.push(format!(
            "the pool of {pool_frames} frames ran out: window cut to {:.2} s",
            w.secs()
        ));
    }
    finish_run(&mut run, &d, rss_start, &w);
    run.set(
        "sent_total",
        sent.load(std::sync::atomic::Ordering::Relaxed) as f64,
    );
    run.set("drain_ms", drain.as_secs_f64() * 1e3);
    run.set("status_call_start_ms", w.c0.call.as_secs_f64() * 1e3);
    run.set("pool_frames", pool_frames as f64);
    run.set(
        "rcvbuf_errors",
        sys::snmp_delta(&snmp0, &snmp1, "RcvbufErrors") as f64,
    );
    // The pipeline's rate is what reached the peers' views: the gate's `delivered` counts
    // heartbeats before the heartbeat shard's queue, which drops what it cannot take.
    let applied = w.rate("heartbeats.applied");
    if let Some(&sink) = ctx.sink_rate.get(&size) {
        run.set("pipeline_over_null_sink", applied / sink.max(1.0));
    }
    run.set(
        "peers_seen",
        d.status()?["peers"].as_object().map_or(0, |p| p.len()) as f64,
    );
    if let (Some(cpu), Some(&sink)) = (run.get("cpu_us_per_frame"), ctx.sink_cpu_us.get(&size)) {
        run.set("cpu_over_null_sink", cpu / sink);
    }
    run.columns = vec![
        ("cpu µs/frame", "cpu_us_per_frame"),
        ("/ null-sink cpu", "cpu_over_null_sink"),
        ("workers µs", "listener_cpu_us_per_frame"),
        ("shards µs", "shards_cpu_us_per_frame"),
        ("applied/s", "applied_per_s"),
        ("delivered/s", "delivered_per_s"),
        ("repeats/s", "heartbeat_repeats_per_s"),
        ("received/s", "received_per_s"),
        ("/ null-sink", "pipeline_over_null_sink"),
        ("invalid", "invalid_in_window"),
        ("daemon cpu s", "daemon_cpu_s"),
        ("IPIs/frame", "ipis_per_frame"),
        ("others' cpu s", "foreign_cpu_s"),
        ("shard lag ms", "status_call_ms"),
    ];
    Ok(run)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Flood {
    Banned,
    RandomNames,
}

/// Sends 5 frames that fail authentication under `name` and waits for the ban.
fn ban(d: &Daemon, name: &str) -> anyhow::Result<()> {
    let pool = frames::forged_pool(CLUSTER, name, 256, 5, now_ms());
    let s = connected_socket(d.addr.ip(), d.addr)?;
    for i in 0..pool.count {
        s.send(pool.frame(i))?;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let b = d.request(&Request::BlacklistStatus)?;
        if b[name] == 5 {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{name} not banned after 5 bad frames: {b}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Legitimate nodes at `legit_rate` alone, then alongside a flood (a banned name, or random
/// non-member names) from every socket as fast as the sender goes.
fn flood(ctx: &Ctx<'_>, backend: &'static str, size: usize, kind: Flood) -> anyhow::Result<Run> {
    let o = ctx.opts;
    let d = Daemon::start(&ctx.spec(backend, &[BANNED]))?;
    let rss_start = d.rss();
    let name = match kind {
        Flood::Banned => "blacklisted-flood",
        Flood::RandomNames => "random-names-flood",
    };
    let mut run = Run::new(name, backend, size);
    let total = (o.warmup + o.duration) * 2 + Duration::from_secs(15);
    let paced = ctx.paced(&d, Instant::now() + total)?;
    let alone = window(&d, o.warmup, o.duration, || false)?;
    let pool = match kind {
        Flood::Banned => {
            ban(&d, BANNED)?;
            frames::forged_pool(CLUSTER, BANNED, size, 256, now_ms())
        }
        Flood::RandomNames => frames::random_names_pool(&d.secret, CLUSTER, size, 4096, now_ms()),
    };
    let lanes = ctx.cyclic_lanes(o.sockets, d.addr, pool)?;
    let blast = Blast::start(
        lanes,
        o.senders,
        Instant::now() + o.warmup + o.duration + Duration::from_secs(5),
    );
    let under = window(&d, o.warmup, o.duration, || false)?;
    let flood_sent = blast.finish();
    let legit_sent = paced.finish();
    finish_run(&mut run, &d, rss_start, &under);
    run.set("legit_offered_per_s", o.legit_rate as f64);
    run.set("legit_alone_per_s", alone.rate("delivered"));
    run.set("legit_flood_per_s", under.rate("delivered"));
    run.set("legit_sent", legit_sent as f64);
    run.set("flood_sent", flood_sent as f64);
    run.set("decrypted_per_s", under.rate("decrypted"));
    run.set("invalid_not_member_per_s", under.rate("invalid.not_member"));
    run.set(
        "blacklist_entries",
        under.c1.get("blacklist_entries") as f64,
    );
    let drop_key = match kind {
        Flood::Banned => "dropped_blacklisted_per_s",
        Flood::RandomNames => "dropped_join_rate_per_s",
    };
    if let (Some(sink), Some(drop)) = (ctx.sink_rate.get(&size), run.get(drop_key)) {
        run.set("drop_over_null_sink", drop / sink.max(1.0));
    }
    let alone_v = alone.rate("delivered");
    if alone_v > 0.0 {
        run.set("legit_ratio", under.rate("delivered") / alone_v);
    }
    run.columns = match kind {
        Flood::Banned => vec![
            ("legit alone/s", "legit_alone_per_s"),
            ("legit flood/s", "legit_flood_per_s"),
            ("ratio", "legit_ratio"),
            ("dropped/s", "dropped_blacklisted_per_s"),
            ("/ null-sink", "drop_over_null_sink"),
            ("lsnr µs/frame", "listener_cpu_us_per_frame"),
        ],
        Flood::RandomNames => vec![
            ("legit alone/s", "legit_alone_per_s"),
            ("legit flood/s", "legit_flood_per_s"),
            ("ratio", "legit_ratio"),
            ("dropped join/s", "dropped_join_rate_per_s"),
            ("/ null-sink", "drop_over_null_sink"),
            ("not_member/s", "invalid_not_member_per_s"),
            ("bl entries", "blacklist_entries"),
        ],
    };
    Ok(run)
}

fn empty_packets(ctx: &Ctx<'_>, backend: &'static str) -> anyhow::Result<Run> {
    let o = ctx.opts;
    let d = Daemon::start(&ctx.spec(backend, &[]))?;
    let rss_start = d.rss();
    let mut run = Run::new("empty-packets", backend, 0);
    let lanes = ctx.cyclic_lanes(o.sockets, d.addr, frames::filler_pool(0, 64))?;
    let blast = Blast::start(
        lanes,
        o.senders,
        Instant::now() + o.warmup + o.duration + Duration::from_secs(5),
    );
    let w = window(&d, o.warmup, o.duration, || false)?;
    blast.finish();
    // Let the last run finish, then read the totals.
    std::thread::sleep(Duration::from_millis(200));
    let end = d.counters()?;
    finish_run(&mut run, &d, rss_start, &w);
    run.set("triggers_per_s", w.rate("dequeue.triggers"));
    run.set("runs_per_s", w.rate("dequeue.runs"));
    run.set("triggers_total", end.get("dequeue.triggers") as f64);
    run.set("runs_total", end.get("dequeue.runs") as f64);
    if let Some(&sink) = ctx.sink_rate.get(&0) {
        run.set(
            "dequeues_over_null_sink",
            w.rate("dequeues") / sink.max(1.0),
        );
    }
    run.columns = vec![
        ("empty recv/s", "dequeues_per_s"),
        ("/ null-sink", "dequeues_over_null_sink"),
        ("triggers/s", "triggers_per_s"),
        ("runs/s", "runs_per_s"),
        ("triggers", "triggers_total"),
        ("runs", "runs_total"),
        ("lsnr µs/frame", "listener_cpu_us_per_frame"),
        ("IPIs/frame", "ipis_per_frame"),
    ];
    Ok(run)
}

fn tcp_req(ctx: &Ctx<'_>, backend: &'static str) -> anyhow::Result<Run> {
    let o = ctx.opts;
    // One member per connection: `daemon status` lists the cluster's nodes, and with the
    // thousand of hb-udp its response is ~12 KB, a handler's cost rather than the listener's.
    let names: Vec<String> = ctx
        .names
        .iter()
        .take(o.connections.max(1))
        .cloned()
        .collect();
    let mut spec = ctx.spec(backend, &[]);
    spec.members = names.clone();
    // Every connection is opened before the first request: all of them are unauthenticated
    // at once, from one address, beyond the listener's default allowance.
    spec.extra
        .push_str(&format!("max_unauth_per_addr = {}\n", o.connections.max(1)));
    let d = Daemon::start(&spec)?;
    let rss_start = d.rss();
    let mut run = Run::new("tcp-req", backend, 0);
    let snap0 = SysSnap::take(Some(d.pid));
    let cpu0 = sys::thread_cpu(d.pid);
    let c0 = d.counters()?;
    let out = crate::tcp::run(
        d.addr,
        &d.identity(&names[0]),
        &names,
        o.connections,
        o.tcp_rate,
        o.warmup,
        o.duration,
        o.tcp_trace.is_some(),
    )?;
    if let Some(path) = &o.tcp_trace {
        write_tcp_trace(path, backend, o.backends.len() > 1, &out.trace)?;
    }
    let c1 = d.counters()?;
    let w = Window {
        c0,
        c1,
        cpu: sys::cpu_delta(&cpu0, &sys::thread_cpu(d.pid)),
        sys: SysSnap::take(Some(d.pid)).since(&snap0),
    };
    finish_run(&mut run, &d, rss_start, &w);
    run.set("request_bytes", out.request_bytes as f64);
    run.set("connections", out.connections as f64);
    run.set("target_rate", out.target_rate);
    run.set("achieved_rate", out.achieved_rate);
    run.set("sent", out.sent as f64);
    run.set("answered", out.answered as f64);
    run.set("lost", out.lost as f64);
    run.set("bad_responses", out.bad_responses as f64);
    run.set("response_bytes", out.response_bytes as f64);
    run.set("members", names.len() as f64);
    for (k, p) in [
        ("p50_us", 50.0),
        ("p90_us", 90.0),
        ("p99_us", 99.0),
        ("p999_us", 99.9),
        ("max_us", 100.0),
    ] {
        run.set(k, out.percentile(p));
    }
    run.set("mean_us", out.mean());
    run.set(
        "send_lag_p99_us",
        crate::tcp::percentile_of(&out.send_lags_us, 99.0),
    );
    run.set(
        "p99_from_write_us",
        crate::tcp::percentile_of(&out.from_write_us, 99.0),
    );
    run.columns = vec![
        ("req/s", "achieved_rate"),
        ("p50 µs", "p50_us"),
        ("p99 µs", "p99_us"),
        ("p999 µs", "p999_us"),
        ("max µs", "max_us"),
        ("send lag p99 µs", "send_lag_p99_us"),
        ("p99 from write µs", "p99_from_write_us"),
        ("lost", "lost"),
        ("bad", "bad_responses"),
    ];
    Ok(run)
}

/// Writes `tcp-req`'s per-request timeline to `path` (with the backend's name before the
/// extension when several backends run): a header line, then one request per line.
fn write_tcp_trace(
    path: &std::path::Path,
    backend: &str,
    per_backend: bool,
    rows: &[crate::tcp::TraceRow],
) -> anyhow::Result<()> {
    use std::fmt::Write as _;
    let path = if per_backend {
        let stem = path.file_stem().unwrap_or_default().to_string_lossy();
        let name = match path.extension() {
            Some(ext) => format!("{stem}.{backend}.{}", ext.to_string_lossy()),
            None => format!("{stem}.{backend}"),
        };
        path.with_file_name(name)
    } else {
        path.to_path_buf()
    };
    let mut text = String::from("# due_us written_us answered_us connection\n");
    for r in rows {
        let _ = writeln!(
            text,
            "{:.1} {:.1} {:.1} {}",
            r.due_us, r.written_us, r.answered_us, r.connection
        );
    }
    use anyhow::Context as _;
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// A long flood (banned name, random names, empty datagrams, legitimate nodes) with the
/// daemon's RSS sampled every second: it must stay flat once warmed up.
fn rss_flood(
    ctx: &Ctx<'_>,
    backend: &'static str,
    size: usize,
    log: Log<'_>,
) -> anyhow::Result<Run> {
    let o = ctx.opts;
    let d = Daemon::start(&ctx.spec(backend, &[BANNED]))?;
    let rss_start = d.rss();
    let mut run = Run::new("rss-flood", backend, size);
    let total = o.long_duration;
    let deadline = Instant::now() + total + Duration::from_secs(30);
    let paced = ctx.paced(&d, deadline)?;
    ban(&d, BANNED)?;
    let k = o.sockets.max(3);
    let mut lanes = ctx.cyclic_lanes(
        k / 3,
        d.addr,
        frames::forged_pool(CLUSTER, BANNED, size, 256, now_ms()),
    )?;
    lanes.extend(ctx.cyclic_lanes(
        k / 3,
        d.addr,
        frames::random_names_pool(&d.secret, CLUSTER, size, 4096, now_ms()),
    )?);
    lanes.extend(ctx.cyclic_lanes(k - 2 * (k / 3), d.addr, frames::filler_pool(0, 64))?);
    let blast = Blast::start(lanes, o.senders, deadline);
    let snap0 = SysSnap::take(Some(d.pid));
    let cpu0 = sys::thread_cpu(d.pid);
    let c0 = d.counters()?;
    let t0 = Instant::now();
    let mut samples: Vec<(f64, u64)> = Vec::new();
    let mut next_log = t0 + Duration::from_secs(30);
    while t0.elapsed() < total {
        std::thread::sleep(Duration::from_secs(1).min(total.saturating_sub(t0.elapsed())));
        samples.push((t0.elapsed().as_secs_f64(), d.rss().rss_kib));
        if Instant::now() >= next_log {
            next_log += Duration::from_secs(30);
            log(&format!(
                "  {:.0} s: RSS {:.1} MiB",
                t0.elapsed().as_secs_f64(),
                d.rss().rss_kib as f64 / 1024.0
            ));
        }
    }
    let c1 = d.counters()?;
    let w = Window {
        c0,
        c1,
        cpu: sys::cpu_delta(&cpu0, &sys::thread_cpu(d.pid)),
        sys: SysSnap::take(Some(d.pid)).since(&snap0),
    };
    blast.finish();
    paced.finish();
    finish_run(&mut run, &d, rss_start, &w);
    // Baseline: the RSS once warmed up (10 % into the run, at least 2 s).
    let base_at = (total.as_secs_f64() * 0.1)
        .max(2.0)
        .min(total.as_secs_f64());
    let base = samples
        .iter()
        .find(|(t, _)| *t >= base_at)
        .or(samples.last())
        .map_or(0, |s| s.1);
    let after: Vec<u64> = samples
        .iter()
        .filter(|(t, _)| *t >= base_at)
        .map(|s| s.1)
        .collect();
    let max = after.iter().copied().max().unwrap_or(base);
    let min = after.iter().copied().min().unwrap_or(base);
    let end = samples.last().map_or(base, |s| s.1);
    let dev = |v: u64| 100.0 * (v as f64 - base as f64) / (base.max(1) as f64);
    run.set("rss_baseline_kib", base as f64);
    run.set("rss_min_kib", min as f64);
    run.set("rss_max_kib", max as f64);
    run.set("rss_final_kib", end as f64);
    run.set("rss_end_vs_baseline_pct", dev(end));
    run.set("rss_deviation_pct", dev(max).abs().max(dev(min).abs()));
    run.set("long_duration_s", total.as_secs_f64());
    run.set("legit_per_s", w.rate("delivered"));
    run.series.insert(
        "rss_kib_every_s".into(),
        samples.iter().map(|s| s.1 as f64).collect(),
    );
    run.columns = vec![
        ("window s", "long_duration_s"),
        ("base KiB", "rss_baseline_kib"),
        ("max KiB", "rss_max_kib"),
        ("end KiB", "rss_final_kib"),
        ("dev %", "rss_deviation_pct"),
        ("legit/s", "legit_per_s"),
        ("bl drops/s", "dropped_blacklisted_per_s"),
        ("join drops/s", "dropped_join_rate_per_s"),
    ];
    Ok(run)
}
