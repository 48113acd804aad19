//! The null sink: the floor of a receiver's CPU per datagram for this sender. Same sockets
//! as the listener (`bench_support::udp_reuseport`: SO_REUSEPORT, the same receive buffer),
//! the same number of them and the same pinning; each thread takes up to 64 datagrams per
//! blocking `recvmmsg` and does nothing with them but count. What the kernel's receive costs
//! with the fewest syscalls and no work per datagram: the reference of every ratio.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use osvc_agent::internals::bench_support::udp_reuseport;

pub struct NullSink {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    counts: Vec<Arc<AtomicU64>>,
    joins: Vec<JoinHandle<std::io::Result<()>>>,
}

impl NullSink {
    /// `pin`: pin thread i as the listener pins worker i (`bench_support::pin_worker`).
    pub fn start(ip: IpAddr, threads: usize, pin: bool) -> std::io::Result<NullSink> {
        let threads = threads.max(1);
        let first = udp_reuseport(&SocketAddr::new(ip, 0))?;
        let addr = first.local_addr()?;
        let mut socks = vec![first];
        for _ in 1..threads {
            socks.push(udp_reuseport(&addr)?);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut counts = Vec::new();
        let mut joins = Vec::new();
        for (i, sock) in socks.into_iter().enumerate() {
            let count = Arc::new(AtomicU64::new(0));
            counts.push(count.clone());
            let stop = stop.clone();
            joins.push(
                std::thread::Builder::new()
                    .name(format!("sink.{i}"))
                    .spawn(move || {
                        if pin {
                            osvc_agent::internals::bench_support::pin_worker(i, threads);
                        }
                        recvmmsg_loop(&sock, &stop, &count)
                    })?,
            );
        }
        Ok(NullSink {
            addr,
            stop,
            counts,
            joins,
        })
    }

    /// Datagrams received so far.
    pub fn received(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    pub fn finish(mut self) -> std::io::Result<u64> {
        let n = self.received();
        self.stop.store(true, Ordering::Relaxed);
        for j in std::mem::take(&mut self.joins) {
            j.join()
                .map_err(|_| std::io::Error::other("null sink thread panicked"))??;
        }
        Ok(n)
    }
}

impl Drop for NullSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for j in std::mem::take(&mut self.joins) {
            let _ = j.join();
        }
    }
}

/// The receiver: blocking `recvmmsg` (at most 50 ms per call), counting only.
fn recvmmsg_loop(
    sock: &std::net::UdpSocket,
    stop: &AtomicBool,
    count: &AtomicU64,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    const BATCH: usize = 64;
    const LEN: usize = osvc_agent::internals::bench_support::PAYLOAD_MAX;
    sock.set_nonblocking(false)?;
    sock.set_read_timeout(Some(Duration::from_millis(50)))?;
    let mut bufs = vec![0u8; BATCH * LEN];
    // SAFETY: iovec and mmsghdr are plain data; zeroed is valid.
    let mut iov: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
    let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        for (j, chunk) in bufs.chunks_mut(LEN).enumerate() {
            iov[j] = libc::iovec {
                iov_base: chunk.as_mut_ptr().cast(),
                iov_len: LEN,
            };
            hdrs[j].msg_hdr.msg_iov = &mut iov[j];
            hdrs[j].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: BATCH headers pointing at BATCH live buffers of LEN bytes.
        let r = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if r > 0 {
            n += r as u64;
            count.store(n, Ordering::Relaxed);
        }
    }
    Ok(())
}
