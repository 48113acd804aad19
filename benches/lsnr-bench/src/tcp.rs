//! `tcp-req`: encrypted, length-prefixed `daemon_status` requests over many connections at a
//! fixed rate, open loop: request k is due at `start + k / rate` whatever happened to the
//! earlier ones, and its latency runs from that due time (not from when it was written) to
//! its response, so a stall shows up in every request it delays (no coordinated omission).
//! Requests are pipelined on their connection when responses lag.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use osvc_agent::internals::client::{Identity, open_response};
use osvc_agent::internals::clock::now_ms;
use osvc_agent::internals::wire::{Kind, Request, Sealer};

#[derive(Clone, Debug, Default)]
pub struct TcpOutcome {
    pub connections: usize,
    pub target_rate: f64,
    /// Requests written in the measured window, and their rate.
    pub sent: u64,
    pub achieved_rate: f64,
    pub answered: u64,
    /// Requests without a response (connection closed, or none before the end).
    pub lost: u64,
    /// Responses that did not open or had a non-zero status (one checked per connection).
    pub bad_responses: u64,
    pub request_bytes: usize,
    pub response_bytes: usize,
    /// Latencies of the measured window, in microseconds, sorted.
    pub latencies_us: Vec<f64>,
    /// How late the load generator itself wrote each measured request, µs, sorted: the
    /// part of a latency spent before the daemon could see the request.
    pub send_lags_us: Vec<f64>,
    /// Each measured request's time from its write to its answer, µs, sorted: the latency
    /// but for the load generator's lateness in writing it.
    pub from_write_us: Vec<f64>,
    /// Each measured request's timeline when asked for: µs from the window's start to its
    /// due time, its write, its answer, and its connection.
    pub trace: Vec<TraceRow>,
}

#[derive(Clone, Copy, Debug)]
pub struct TraceRow {
    pub due_us: f64,
    pub written_us: f64,
    pub answered_us: f64,
    pub connection: usize,
}

/// The `p`th percentile of sorted `values` (0 when empty).
pub fn percentile_of(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * values.len() as f64).ceil() as usize;
    values[i.clamp(1, values.len()) - 1]
}

impl TcpOutcome {
    pub fn percentile(&self, p: f64) -> f64 {
        percentile_of(&self.latencies_us, p)
    }

    pub fn mean(&self) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        self.latencies_us.iter().sum::<f64>() / self.latencies_us.len() as f64
    }
}

struct Pending {
    due: Instant,
    /// When the writer got to it.
    written: Instant,
    measured: bool,
}

struct Conn {
    stream: TcpStream,
    /// Each request written and not answered yet, in order.
    due: Mutex<VecDeque<Pending>>,
    dead: AtomicBool,
}

/// Sets this thread's timer slack to 1 µs so short sleeps end close to when asked.
fn tight_timer_slack() {
    // SAFETY: plain prctl on the calling thread.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong, 0, 0, 0) };
}

fn write_all_nb(c: &Conn, mut buf: &[u8], deadline: Instant) -> bool {
    while !buf.is_empty() {
        match (&c.stream).write(buf) {
            Ok(0) => return false,
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    return false;
                }
                let mut p = libc::pollfd {
                    fd: c.stream.as_raw_fd(),
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut p, 1, 10) };
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}

/// Runs the scenario against `addr`: `connections` connections, each under its own session
/// of one of `names`, `rate` requests per second for `warmup + duration`; with `trace`, keeps
/// each measured request's timeline.
#[allow(clippy::too_many_arguments)]
pub fn run(
    addr: SocketAddr,
    identity: &Identity,
    names: &[String],
    connections: usize,
    rate: f64,
    warmup: Duration,
    duration: Duration,
    trace: bool,
) -> anyhow::Result<TcpOutcome> {
    anyhow::ensure!(rate > 0.0 && connections > 0 && !names.is_empty());
    let total = (rate * (warmup + duration).as_secs_f64()).ceil() as usize;
    let per_conn = total.div_ceil(connections);
    // Seal every request up front: the writer only paces and writes.
    let payload = Request::DaemonStatus.to_vec();
    let now = now_ms();
    let mut frames: Vec<Vec<Vec<u8>>> = Vec::with_capacity(connections);
    let mut conns = Vec::with_capacity(connections);
    for i in 0..connections {
        let name = &names[i % names.len()];
        let mut s = Sealer::new(identity.secret.as_bytes(), &identity.cluster, name, now);
        let mut list = Vec::with_capacity(per_conn);
        for _ in 0..per_conn {
            let mut f = vec![0u8; 4];
            s.seal(Kind::Request, &payload, now, &mut f)?;
            let len = (f.len() - 4) as u32;
            f[..4].copy_from_slice(&len.to_be_bytes());
            list.push(f);
        }
        frames.push(list);
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        conns.push(Arc::new(Conn {
            stream,
            due: Mutex::new(VecDeque::new()),
            dead: AtomicBool::new(false),
        }));
    }
    let request_bytes = frames[0][0].len();
    let writer_done = Arc::new(AtomicBool::new(false));
    let start = Instant::now() + Duration::from_millis(20);
    let measure_from = start + warmup;
    let end = start + warmup + duration;
    let hard_deadline = end + Duration::from_secs(3);

    let reader = {
        let conns = conns.clone();
        let writer_done = writer_done.clone();
        let identity = identity.clone();
        std::thread::Builder::new()
            .name("tcp-reader".into())
            .spawn(move || {
                read_loop(
                    &conns,
                    &identity,
                    &writer_done,
                    (measure_from, hard_deadline),
                    trace,
                )
            })?
    };

    tight_timer_slack();
    let interval = 1.0 / rate;
    let mut sent_measured = 0u64;
    let mut next = vec![0usize; connections];
    for k in 0..total {
        let due = start + Duration::from_secs_f64(k as f64 * interval);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        if Instant::now() > hard_deadline {
            break;
        }
        let i = k % connections;
        let c = &conns[i];
        if c.dead.load(Ordering::Relaxed) || next[i] >= frames[i].len() {
            continue;
        }
        let measured = due >= measure_from;
        c.due
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(Pending {
                due,
                written: Instant::now(),
                measured,
            });
        if !write_all_nb(c, &frames[i][next[i]], hard_deadline) {
            c.dead.store(true, Ordering::Relaxed);
        }
        next[i] += 1;
        if measured {
            sent_measured += 1;
        }
    }
    let written_until = Instant::now();
    writer_done.store(true, Ordering::Relaxed);
    let mut out = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the reader thread panicked"))??;
    out.connections = connections;
    out.target_rate = rate;
    out.sent = sent_measured;
    let window = written_until
        .saturating_duration_since(measure_from)
        .as_secs_f64();
    out.achieved_rate = if window > 0.0 {
        sent_measured as f64 / window
    } else {
        0.0
    };
    out.request_bytes = request_bytes;
    Ok(out)
}

fn read_loop(
    conns: &[Arc<Conn>],
    identity: &Identity,
    writer_done: &AtomicBool,
    (measure_from, hard_deadline): (Instant, Instant),
    trace: bool,
) -> anyhow::Result<TcpOutcome> {
    let since_start = |t: Instant| t.saturating_duration_since(measure_from).as_secs_f64() * 1e6;
    let mut out = TcpOutcome::default();
    // SAFETY: plain syscalls on fds we own for the duration of this function.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    anyhow::ensure!(
        ep >= 0,
        "epoll_create1: {}",
        std::io::Error::last_os_error()
    );
    for (i, c) in conns.iter().enumerate() {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: i as u64,
        };
        // SAFETY: a valid epoll fd, a valid socket fd, a live event.
        unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, c.stream.as_raw_fd(), &mut ev) };
    }
    let mut bufs: Vec<Vec<u8>> = conns.iter().map(|_| Vec::with_capacity(64 << 10)).collect();
    let mut checked = vec![false; conns.len()];
    // SAFETY: epoll_event is plain data.
    let mut events: [libc::epoll_event; 64] = unsafe { std::mem::zeroed() };
    let mut chunk = vec![0u8; 256 << 10];
    loop {
        let outstanding: usize = conns
            .iter()
            .filter(|c| !c.dead.load(Ordering::Relaxed))
            .map(|c| c.due.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum();
        if (writer_done.load(Ordering::Relaxed) && outstanding == 0)
            || Instant::now() > hard_deadline
        {
            break;
        }
        // SAFETY: valid epoll fd and event buffer.
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, 20) };
        if n <= 0 {
            continue;
        }
        for ev in &events[..n as usize] {
            let i = ev.u64 as usize;
            let c = &conns[i];
            loop {
                match (&c.stream).read(&mut chunk) {
                    Ok(0) => {
                        c.dead.store(true, Ordering::Relaxed);
                        break;
                    }
                    Ok(k) => bufs[i].extend_from_slice(&chunk[..k]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => {
                        c.dead.store(true, Ordering::Relaxed);
                        break;
                    }
                }
            }
            let now = Instant::now();
            let mut off = 0;
            let buf = &mut bufs[i];
            while buf.len() - off >= 4 {
                let len = u32::from_be_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]])
                    as usize;
                if buf.len() - off - 4 < len {
                    break;
                }
                let frame = &mut buf[off + 4..off + 4 + len];
                let pending = c.due.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
                if let Some(p) = pending {
                    out.answered += u64::from(p.measured);
                    if p.measured && p.due >= measure_from {
                        out.latencies_us
                            .push(now.saturating_duration_since(p.due).as_secs_f64() * 1e6);
                        out.send_lags_us
                            .push(p.written.saturating_duration_since(p.due).as_secs_f64() * 1e6);
                        out.from_write_us
                            .push(now.saturating_duration_since(p.written).as_secs_f64() * 1e6);
                        if trace {
                            out.trace.push(TraceRow {
                                due_us: since_start(p.due),
                                written_us: since_start(p.written),
                                answered_us: since_start(now),
                                connection: i,
                            });
                        }
                    }
                }
                if !checked[i] {
                    checked[i] = true;
                    out.response_bytes = len;
                    match open_response(identity, frame) {
                        Ok(r) if r.status == 0 => {}
                        _ => out.bad_responses += 1,
                    }
                }
                off += 4 + len;
            }
            buf.drain(..off);
        }
    }
    // SAFETY: the epoll fd made above.
    unsafe { libc::close(ep) };
    out.lost = conns
        .iter()
        .map(|c| {
            c.due
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .filter(|p| p.measured)
                .count() as u64
        })
        .sum();
    out.latencies_us.sort_by(f64::total_cmp);
    out.send_lags_us.sort_by(f64::total_cmp);
    out.from_write_us.sort_by(f64::total_cmp);
    Ok(out)
}
