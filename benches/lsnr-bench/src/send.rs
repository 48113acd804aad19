//! The UDP senders: a blaster that pushes pre-sealed frames as fast as `sendmmsg` goes, and
//! a paced sender for legitimate traffic at a fixed rate, sealing as it goes.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::frames::Pool;
use osvc_agent::internals::wire::{Kind, Sealer};

/// Datagrams per `sendmmsg` call.
pub const BATCH: usize = 64;

/// A UDP socket on `local` connected to `target` (no address per datagram, a cached route).
pub fn connected_socket(local: IpAddr, target: SocketAddr) -> std::io::Result<UdpSocket> {
    let s = UdpSocket::bind((local, 0))?;
    s.connect(target)?;
    // Best effort: the kernel caps it at net.core.wmem_max.
    let _ = socket2::SockRef::from(&s).set_send_buffer_size(4 << 20);
    Ok(s)
}

/// Sends `frames` (offsets into one buffer, `len` bytes each or their own lengths) on a
/// connected socket with `sendmmsg`, `BATCH` at a time. Returns how many went out.
fn send_batch(sock: &UdpSocket, frames: &[&[u8]]) -> usize {
    static EMPTY: [u8; 1] = [0];
    let n = frames.len().min(BATCH);
    // SAFETY: iovec and mmsghdr are plain data; zeroed is valid.
    let mut iov: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
    let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for j in 0..n {
        let f = frames[j];
        iov[j] = libc::iovec {
            iov_base: if f.is_empty() {
                EMPTY.as_ptr()
            } else {
                f.as_ptr()
            } as *mut libc::c_void,
            iov_len: f.len(),
        };
        hdrs[j].msg_hdr.msg_iov = &mut iov[j];
        hdrs[j].msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: `hdrs[..n]` point at `iov[..n]`, which point into `frames`, all live for the
    // call; the socket is connected so no address is needed.
    let r = unsafe { libc::sendmmsg(sock.as_raw_fd(), hdrs.as_mut_ptr(), n as libc::c_uint, 0) };
    if r < 0 {
        // ECONNREFUSED (an ICMP error from an earlier datagram), ENOBUFS...: the next call
        // goes on; yield so a persistent error does not spin.
        std::thread::yield_now();
        0
    } else {
        r as usize
    }
}

/// One socket and the frames it sends, in order; a cyclic lane starts over at the end.
pub struct Lane {
    pub sock: UdpSocket,
    pub pool: Arc<Pool>,
    pub cyclic: bool,
    pos: usize,
}

impl Lane {
    pub fn new(sock: UdpSocket, pool: Arc<Pool>, cyclic: bool) -> Self {
        Lane {
            sock,
            pool,
            cyclic,
            pos: 0,
        }
    }

    fn done(&self) -> bool {
        self.pool.count == 0 || (!self.cyclic && self.pos >= self.pool.count)
    }

    /// Sends the next batch; returns how many went out.
    fn step(&mut self) -> usize {
        if self.done() {
            return 0;
        }
        let mut frames: [&[u8]; BATCH] = [&[]; BATCH];
        let mut n = 0;
        while n < BATCH {
            let i = if self.cyclic {
                (self.pos + n) % self.pool.count
            } else if self.pos + n < self.pool.count {
                self.pos + n
            } else {
                break;
            };
            frames[n] = self.pool.frame(i);
            n += 1;
        }
        let sent = send_batch(&self.sock, &frames[..n]);
        self.pos += sent;
        if self.cyclic {
            self.pos %= self.pool.count;
        }
        sent
    }
}

/// Blaster threads at work.
pub struct Blast {
    stop: Arc<AtomicBool>,
    pub sent: Arc<AtomicU64>,
    pub exhausted_at: Arc<Mutex<Option<Instant>>>,
    joins: Vec<JoinHandle<()>>,
}

impl Blast {
    /// Sends on `lanes` (spread over `threads` threads) as fast as possible until `stop`,
    /// `deadline`, or every non-cyclic lane is exhausted.
    pub fn start(lanes: Vec<Lane>, threads: usize, deadline: Instant) -> Blast {
        let threads = threads.clamp(1, lanes.len().max(1));
        let mut per: Vec<Vec<Lane>> = (0..threads).map(|_| Vec::new()).collect();
        for (i, l) in lanes.into_iter().enumerate() {
            per[i % threads].push(l);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let exhausted_at = Arc::new(Mutex::new(None));
        let joins = per
            .into_iter()
            .enumerate()
            .map(|(i, mut lanes)| {
                let (stop, sent, exhausted_at) = (stop.clone(), sent.clone(), exhausted_at.clone());
                std::thread::Builder::new()
                    .name(format!("blast.{i}"))
                    .spawn(move || {
                        let mut local = 0u64;
                        let mut k = 0usize;
                        loop {
                            if stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
                                break;
                            }
                            if lanes.iter().all(Lane::done) {
                                let mut e = exhausted_at.lock().unwrap_or_else(|p| p.into_inner());
                                e.get_or_insert_with(Instant::now);
                                break;
                            }
                            // A few batches per lane, then the next lane.
                            for _ in 0..16 {
                                local += lanes[k].step() as u64;
                            }
                            k = (k + 1) % lanes.len();
                            if k == 0 {
                                sent.fetch_add(local, Ordering::Relaxed);
                                local = 0;
                            }
                        }
                        sent.fetch_add(local, Ordering::Relaxed);
                    })
                    .expect("spawn a sender thread")
            })
            .collect();
        Blast {
            stop,
            sent,
            exhausted_at,
            joins,
        }
    }

    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Stops and joins; returns the total sent.
    pub fn finish(mut self) -> u64 {
        self.join_all();
        self.sent.load(Ordering::Relaxed)
    }

    fn join_all(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for j in std::mem::take(&mut self.joins) {
            let _ = j.join();
        }
    }
}

impl Drop for Blast {
    fn drop(&mut self) {
        self.join_all();
    }
}

/// Legitimate heartbeats at a fixed rate from every node in turn, sealed as they go (fresh
/// timestamps and counters however long it runs).
pub struct Paced {
    stop: Arc<AtomicBool>,
    pub sent: Arc<AtomicU64>,
    join: Option<JoinHandle<()>>,
}

impl Paced {
    pub fn start(
        rate: u64,
        mut senders: Vec<Sealer>,
        payload: Vec<u8>,
        socks: Vec<UdpSocket>,
        deadline: Instant,
    ) -> Paced {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (stop2, sent2) = (stop.clone(), sent.clone());
        let join = std::thread::Builder::new()
            .name("paced".into())
            .spawn(move || {
                let start = Instant::now();
                let mut done = 0u64;
                let mut node = 0usize;
                let k = socks.len().max(1);
                // Per socket: the frames of this tick, back to back, and their ends.
                let mut bufs: Vec<(Vec<u8>, Vec<usize>)> =
                    (0..k).map(|_| Default::default()).collect();
                while !stop2.load(Ordering::Relaxed)
                    && Instant::now() < deadline
                    && !senders.is_empty()
                {
                    std::thread::sleep(Duration::from_millis(1));
                    let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
                    // After a stall, catch up over several ticks rather than in one burst.
                    let n = due.saturating_sub(done).min((rate / 100).max(1));
                    if n == 0 {
                        continue;
                    }
                    let now = osvc_agent::internals::clock::now_ms();
                    for _ in 0..n {
                        let (buf, ends) = &mut bufs[node % k];
                        if senders[node]
                            .seal(Kind::Heartbeat, &payload, now, buf)
                            .is_ok()
                        {
                            ends.push(buf.len());
                        }
                        node = (node + 1) % senders.len();
                    }
                    for (s, (buf, ends)) in socks.iter().zip(bufs.iter_mut()) {
                        let mut frames: Vec<&[u8]> = Vec::with_capacity(ends.len());
                        let mut begin = 0;
                        for &e in ends.iter() {
                            frames.push(&buf[begin..e]);
                            begin = e;
                        }
                        for chunk in frames.chunks(BATCH) {
                            // Paced traffic is not retried: a refused batch is simply lost,
                            // as heartbeats are.
                            send_batch(s, chunk);
                        }
                        buf.clear();
                        ends.clear();
                    }
                    done += n;
                    sent2.store(done, Ordering::Relaxed);
                }
            })
            .expect("spawn the paced sender");
        Paced {
            stop,
            sent,
            join: Some(join),
        }
    }

    pub fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
        self.sent.load(Ordering::Relaxed)
    }
}

impl Drop for Paced {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}
