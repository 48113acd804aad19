//! One listener worker: its TCP accept loop and connections and the answers to requests that
//! came over UDP, on one runtime; and its UDP receive loop, on a thread of its own that
//! blocks in the kernel (`udp_receiver`). The pipeline is `Gate::admit` → `Outcome`; this
//! file only moves bytes and acts on it.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::clock::now_ms;

use tokio::sync::watch;
use tokio::time::Instant;

use super::admission::{AdmissionLimits, Registration};
use super::io::{Acceptor, Backend, Datagram, Stream, UdpRx};
use super::{ListenerSettings, ListenerShared, WorkerSlot};
use crate::dispatch::stream::send_stream;
use crate::dispatch::{Job, Origin, ReceivedHeartbeat, Reply};
use crate::guard::conn::LEN_PREFIX;
use crate::guard::{
    CloseReason, FrameLimits, Framer, Gate, GateStats, Message, Notice, Outcome, Step,
};
use crate::wire::frame::MAX_UDP_FRAME;
use crate::wire::{Kind, Response, Sealer};
use tokio::sync::mpsc;

/// Which of a worker's two threads a `Worker` runs on: each has its own gate and publishes
/// its counters in its own half of the worker's slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Part {
    /// The runtime: TCP, and the answers to requests received over UDP.
    Runtime,
    /// The UDP receive thread.
    UdpReceiver,
}

pub(super) struct Worker {
    id: usize,
    shared: Arc<ListenerShared>,
    slot: Arc<WorkerSlot>,
    part: Part,
    base: GateStats,
    config: RefCell<Arc<ListenerSettings>>,
    generation: Cell<u64>,
    gate: RefCell<Gate>,
    /// This worker's own session for the responses it seals.
    sender: RefCell<Sealer>,
    /// Heartbeats of the frames being processed, handed to the heartbeat shard as one job
    /// at the end of the batch (`flush_heartbeats`).
    heartbeats: RefCell<Vec<ReceivedHeartbeat>>,
    /// Open TCP connections of this worker, and the drain that ends idle ones at stop.
    connections: Cell<usize>,
    draining: Cell<bool>,
    drain: tokio::sync::Notify,
}

impl Worker {
    pub(super) fn new(
        id: usize,
        shared: Arc<ListenerShared>,
        slot: Arc<WorkerSlot>,
        part: Part,
    ) -> Self {
        let generation = shared.config.generation();
        let config = shared.config.get();
        let gate = Gate::new(config.gate.clone(), shared.guard.clone());
        let sender = new_sender(&config);
        let base = slot.gate_stats(part).load();
        Worker {
            id,
            shared,
            slot,
            part,
            base,
            config: RefCell::new(config),
            generation: Cell::new(generation),
            gate: RefCell::new(gate),
            sender: RefCell::new(sender),
            heartbeats: RefCell::new(Vec::with_capacity(UDP_BATCH)),
            connections: Cell::new(0),
            draining: Cell::new(false),
            drain: tokio::sync::Notify::new(),
        }
    }

    /// Picks up a new configuration: cheap when nothing changed (one atomic load).
    fn refresh(&self) {
        let generation = self.shared.config.generation();
        if generation == self.generation.get() {
            return;
        }
        self.generation.set(generation);
        let config = self.shared.config.get();
        let old = self.config.replace(config.clone());
        self.gate.borrow_mut().set_config(config.gate.clone());
        if old.nodename != config.nodename
            || old.gate.secret != config.gate.secret
            || old.gate.cluster_name != config.gate.cluster_name
        {
            *self.sender.borrow_mut() = new_sender(&config);
        }
    }

    fn publish(&self) {
        self.slot
            .gate_stats(self.part)
            .store(&self.base, self.gate.borrow().stats());
    }

    /// Seals a response under this worker's session, length-prefixed for TCP when asked.
    fn seal_response(&self, response: &Response, kind: Kind, length_prefix: bool) -> Vec<u8> {
        let payload = response.to_vec();
        let mut out = Vec::with_capacity(payload.len() + 128);
        if length_prefix {
            out.extend_from_slice(&[0; 4]);
        }
        if let Err(e) = self
            .sender
            .borrow_mut()
            .seal(kind, &payload, now_ms(), &mut out)
        {
            tracing::error!(worker = self.id, "cannot seal a response: {e}");
            return Vec::new();
        }
        if length_prefix {
            let len = (out.len() - 4) as u32;
            out[..4].copy_from_slice(&len.to_be_bytes());
        }
        out
    }

    /// Hands the heartbeats taken since the last call to the heartbeat shard, as one job.
    /// Dropped (and counted) if its queue is full: the next beat carries the same news.
    fn flush_heartbeats(&self) {
        let mut pending = self.heartbeats.borrow_mut();
        if pending.is_empty() {
            return;
        }
        let batch = std::mem::replace(&mut *pending, Vec::with_capacity(UDP_BATCH));
        let _ = self.shared.dispatcher.submit(Job::Heartbeats(batch));
    }

    fn log_notices(&self, from: SocketAddr) {
        if !self.gate.borrow().has_notices() {
            return;
        }
        for n in self.gate.borrow_mut().take_notices() {
            match n {
                Notice::Banned(name) => {
                    tracing::warn!(nodename = %name, %from, "blacklisted after 5 consecutive invalid messages")
                }
                Notice::BanExpired(name) => {
                    tracing::info!(nodename = %name, %from, "blacklist ban expired")
                }
            }
        }
    }

    /// The test hook behind `ListenerShared::panic_after_frames`.
    fn maybe_panic(&self) {
        let after = self.shared.panic_after_frames.load(Ordering::Relaxed);
        if after > 0
            && self.gate.borrow().stats().received >= after
            && self
                .shared
                .panic_after_frames
                .compare_exchange(after, 0, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            panic!("listener worker {}: injected fault", self.id);
        }
    }
}

fn new_sender(config: &ListenerSettings) -> Sealer {
    Sealer::new(
        config.gate.secret.as_bytes(),
        &config.gate.cluster_name,
        &config.nodename,
        now_ms(),
    )
}

/// What a worker does with one frame once the gate has looked at it.
enum Action {
    Nothing,
    Close,
    Request(String, crate::wire::Request),
    /// An authenticated request refused with this error (answered over TCP only).
    Refuse(String),
}

fn act(w: &Worker, outcome: Outcome<'_>, from: SocketAddr, now: u64) -> Action {
    match outcome {
        Outcome::Dequeue => {
            w.shared.dequeue.trigger();
            Action::Nothing
        }
        // A heartbeat of the wrong shape authenticated: nothing to close over.
        Outcome::Drop(crate::guard::DropReason::HeartbeatRefused) => Action::Nothing,
        Outcome::Drop(_) => Action::Close,
        Outcome::Refuse { error, .. } => Action::Refuse(error),
        Outcome::Deliver {
            nodename,
            message: Message::Request(request),
        } => Action::Request(nodename.to_owned(), request),
        Outcome::Deliver {
            message: Message::Heartbeat { sender, heartbeat },
            ..
        } => {
            w.heartbeats.borrow_mut().push(ReceivedHeartbeat {
                nodename: sender,
                heartbeat,
                addr: from,
                at_ms: now,
            });
            Action::Nothing
        }
    }
}

/// A request received over UDP, handed by the receive thread to the worker's runtime, which
/// answers it over UDP.
pub(super) struct UdpRequest {
    nodename: String,
    request: crate::wire::Request,
    from: SocketAddr,
}

/// Requests over UDP waiting for the runtime; more are dropped (the peer asks again).
pub(super) const UDP_REQUESTS_QUEUED: usize = 256;

pub(super) fn run_worker<B: Backend>(
    worker: Worker,
    udp: std::net::UdpSocket,
    udp_requests: mpsc::Receiver<UdpRequest>,
    tcp: std::net::TcpListener,
    mut stop: watch::Receiver<bool>,
    mut failed: watch::Receiver<bool>,
) -> io::Result<()> {
    B::run(async move {
        let w = Rc::new(worker);
        let udp = Rc::new(B::udp_send(udp)?);
        let tcp = B::tcp(tcp)?;
        let stopped = async {
            loop {
                if *stop.borrow() || *failed.borrow() {
                    return;
                }
                tokio::select! {
                    r = stop.changed() => if r.is_err() { return },
                    r = failed.changed() => if r.is_err() { return },
                }
            }
        };
        let r = tokio::select! {
            r = answer_udp_requests::<B>(w.clone(), udp_requests, udp) => r,
            r = accept_loop::<B>(w.clone(), tcp) => r,
            _ = stopped => Ok(()),
        };
        // The loops are gone and their sockets with them: no new frame or connection comes
        // in. Requests in flight on open connections finish (within the read deadline);
        // idle connections are closed now.
        w.draining.set(true);
        w.drain.notify_waiters();
        let until = Instant::now() + w.config.borrow().read_timeout;
        while w.connections.get() > 0 && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        r
    })?
}

/// Datagrams taken per batch: bounds how long the heartbeats of a flood wait before they are
/// handed to their shard, and the receive buffers a batch holds.
const UDP_BATCH: usize = 64;

/// Longest wait of an idle receive thread: how soon it sees a stop.
const UDP_IDLE_WAIT: Duration = Duration::from_millis(50);

/// The UDP receive thread of a worker: waits in the kernel, takes the datagrams in batches
/// through the gate, hands heartbeats to their shard once per batch and requests to the
/// worker's runtime. Idle, it wakes on the first datagram; after a short batch it lets the
/// next ones gather for `listener.udp_gather` (user-space interrupt moderation: a trickle
/// costs one wakeup per window, not one per datagram, and the latency it adds is bounded
/// by the window). A full batch is followed at once by the next: bursts do not wait.
pub(super) fn udp_receiver<B: Backend>(
    w: Worker,
    sock: std::net::UdpSocket,
    requests: mpsc::Sender<UdpRequest>,
    stop: watch::Receiver<bool>,
    failed: watch::Receiver<bool>,
) -> io::Result<()> {
    let mut rx = B::UdpRx::open(sock)?;
    let mut idle = true;
    loop {
        if *stop.borrow() || *failed.borrow() {
            return Ok(());
        }
        if idle {
            rx.wait_any(UDP_IDLE_WAIT)?;
        }
        // The clock and the configuration are read once per batch, when its first frame is
        // there.
        let mut now = None;
        let n = rx.take(UDP_BATCH, |frame, from| {
            let now = *now.get_or_insert_with(|| {
                w.refresh();
                now_ms()
            });
            let outcome = w.gate.borrow_mut().admit(frame, now);
            let action = act(&w, outcome, from, now);
            w.log_notices(from);
            w.maybe_panic();
            if let Action::Request(nodename, request) = action {
                // Answered by the runtime, over UDP; a full queue drops it like a lost
                // datagram.
                let _ = requests.try_send(UdpRequest {
                    nodename,
                    request,
                    from,
                });
            }
        })?;
        w.flush_heartbeats();
        if n > 0 {
            w.publish();
        }
        idle = n == 0;
        let window = w.config.borrow().udp_gather;
        if n > 0 && n < UDP_BATCH && !window.is_zero() {
            rx.gather(window, UDP_BATCH)?;
        }
    }
}

/// Answers the requests the receive thread took over UDP, each on a task of its own (a slow
/// handler must not hold the others).
async fn answer_udp_requests<B: Backend>(
    w: Rc<Worker>,
    mut requests: mpsc::Receiver<UdpRequest>,
    sock: Rc<B::Udp>,
) -> io::Result<()> {
    while let Some(UdpRequest {
        nodename,
        request,
        from,
    }) = requests.recv().await
    {
        let w = w.clone();
        let sock = sock.clone();
        B::spawn_local(async move {
            let response = w
                .shared
                .dispatcher
                .call_single(
                    Origin::Peer {
                        nodename,
                        addr: from,
                    },
                    request,
                )
                .await;
            let out = w.seal_response(&response, Kind::Response, false);
            if !out.is_empty() && out.len() <= MAX_UDP_FRAME {
                let _ = sock.send_to(out, from).await;
            }
        });
    }
    // The receive thread is gone: it ends only when the worker stops or fails, which the
    // worker sees on its own.
    std::future::pending().await
}

async fn accept_loop<B: Backend>(w: Rc<Worker>, listener: B::Listener) -> io::Result<()> {
    loop {
        let (conn, from) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(worker = w.id, "accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let limits = {
            let c = w.config.borrow();
            AdmissionLimits {
                max_connections: c.max_connections as usize,
                max_unauth_per_addr: c.max_unauth_per_addr as usize,
            }
        };
        let Some(registration) = w.shared.conns.admit(from.ip(), conn.fd(), now_ms(), limits)
        else {
            w.slot.tcp_refused.fetch_add(1, Ordering::Relaxed);
            drop(conn);
            continue;
        };
        w.slot.tcp_accepted.fetch_add(1, Ordering::Relaxed);
        // Without it, the connection still works, only slower.
        let _ = conn.set_nodelay();
        let w = w.clone();
        w.connections.set(w.connections.get() + 1);
        let admitted = Admitted { registration, conn };
        B::spawn_local(async move {
            let _ = serve_connection::<B>(&w, &admitted.conn, &admitted.registration, from).await;
            // A read abandoned at a deadline may still be in flight (io_uring does not
            // cancel it on drop) and would keep the socket open: shut it down so the peer
            // sees the close now.
            admitted.conn.shutdown();
            drop(admitted);
            w.connections.set(w.connections.get() - 1);
        });
    }
}

/// A connection and its place in the connection table, dropped in this order however the
/// task ends (a worker that stops drops its tasks where they stand): the socket leaves the
/// table before it is closed, since until then the table may shut it down from another worker.
struct Admitted<C> {
    registration: Registration,
    conn: C,
}

/// One read into `buf` of at most `want - buf.len()` bytes, by `deadline`. Ok(0): the peer
/// closed.
async fn read_upto<S: Stream>(
    conn: &S,
    buf: &mut Vec<u8>,
    want: usize,
    deadline: Instant,
) -> io::Result<usize> {
    let max = want.saturating_sub(buf.len());
    let taken = std::mem::take(buf);
    let (res, back) = match tokio::time::timeout_at(deadline, conn.read(taken, max)).await {
        Ok(r) => r,
        Err(_) => return Err(io::ErrorKind::TimedOut.into()),
    };
    *buf = back;
    res
}

async fn serve_connection<B: Backend>(
    w: &Rc<Worker>,
    conn: &<B::Listener as Acceptor>::Conn,
    registration: &Registration,
    from: SocketAddr,
) -> io::Result<()> {
    let mut buf: Vec<u8> = Vec::new();
    let mut framer = Framer::new();
    let mut any_byte = false;
    // Set when a frame's first byte arrives: the whole frame must be in by then.
    let mut frame_deadline: Option<Instant> = None;
    loop {
        w.refresh();
        let (idle, read_timeout, limits) = {
            let c = w.config.borrow();
            let limits = FrameLimits {
                max_frame: c.max_frame,
                max_unauth_frame: c.max_unauth_frame,
            };
            (c.idle_timeout, c.read_timeout, limits)
        };
        let step = framer.next(&buf, limits, &mut w.gate.borrow_mut(), now_ms());
        match step {
            Step::Need(want) => {
                let n = match frame_deadline {
                    Some(deadline) => read_upto(conn, &mut buf, want, deadline).await?,
                    None => {
                        // Between requests: a stopping worker closes the connection here.
                        if w.draining.get() {
                            return Ok(());
                        }
                        let deadline = Instant::now() + idle;
                        tokio::select! {
                            r = read_upto(conn, &mut buf, want, deadline) => r?,
                            _ = w.drain.notified() => return Ok(()),
                        }
                    }
                };
                if n == 0 {
                    if !any_byte && !registration.evicted() {
                        // Closed by the peer before its first byte: an empty packet.
                        let now = now_ms();
                        let outcome = w.gate.borrow_mut().admit(&mut [], now);
                        act(w, outcome, from, now);
                        w.publish();
                    }
                    return Ok(());
                }
                any_byte = true;
                registration.touch(now_ms());
                frame_deadline.get_or_insert_with(|| Instant::now() + read_timeout);
            }
            Step::Close(reason) => {
                // Header refusals are counted by the gate; lengths out of bounds here.
                if !matches!(reason, CloseReason::Header(_)) {
                    w.slot.tcp_closed_length.fetch_add(1, Ordering::Relaxed);
                }
                w.publish();
                w.log_notices(from);
                return Ok(());
            }
            Step::Frame { len } => {
                let now = now_ms();
                let frame = &mut buf[LEN_PREFIX..LEN_PREFIX + len];
                let outcome = w.gate.borrow_mut().admit_after_header(frame, now);
                let go_on = framer.done(&outcome);
                if framer.authenticated() {
                    registration.authenticated();
                }
                let action = act(w, outcome, from, now);
                w.flush_heartbeats();
                w.publish();
                w.log_notices(from);
                buf.drain(..LEN_PREFIX + len);
                frame_deadline = (!buf.is_empty()).then(|| Instant::now() + read_timeout);
                if !go_on {
                    return Ok(());
                }
                match action {
                    Action::Nothing => {}
                    // PROTOCOL.md: a frame invalid at steps 2 to 6 over TCP closes the connection.
                    Action::Close => return Ok(()),
                    Action::Refuse(error) => {
                        let out = w.seal_response(&Response::error(error), Kind::Response, true);
                        if out.is_empty() {
                            return Ok(());
                        }
                        let (res, _) = conn.write_all(out).await;
                        res?;
                    }
                    Action::Request(nodename, request) => {
                        match w
                            .shared
                            .dispatcher
                            .call(
                                Origin::Peer {
                                    nodename,
                                    addr: from,
                                },
                                request,
                            )
                            .await
                        {
                            // `Dispatcher::call` waits for later answers: none reaches here.
                            Reply::Later(_) => return Ok(()),
                            Reply::Response(response) => {
                                let out = w.seal_response(&response, Kind::Response, true);
                                if out.is_empty() {
                                    return Ok(());
                                }
                                let (res, _) = conn.write_all(out).await;
                                res?;
                            }
                            Reply::Stream(stream) => {
                                send_stream(stream, |chunk| {
                                    let out = w.seal_response(&chunk, Kind::StreamChunk, true);
                                    async move { conn.write_all(out).await.0 }
                                })
                                .await?;
                            }
                        }
                    }
                }
            }
        }
    }
}
