//! The io_uring backend's UDP receive side, on the `io-uring` crate directly: tokio-uring 0.5
//! has neither multishot receives nor provided buffer rings.
//!
//! One multishot `recvmsg` stays armed on the socket and takes its buffers from a ring of
//! provided buffers shared with the kernel, so a burst of datagrams costs one wakeup and no
//! syscall per datagram: the kernel posts one completion per datagram and the worker hands
//! each buffer back (a store into shared memory) once the frame has been through the gate.
//! Frames are processed in place in those buffers: no copy, no allocation per frame.
//!
//! The ring belongs to the one thread that made it (SINGLE_ISSUER | DEFER_TASKRUN): a
//! datagram's receive work is queued for that thread and runs only when it waits in the ring,
//! and the kernel wakes it only once `min_complete` items of work are queued or the wait's
//! timeout passes (`wait_for`). An armed multishot receive queues one item however many
//! datagrams wait, so a wait for several ends at its timeout: what lets the listener's
//! receive thread take a trickle of heartbeats in batches, one wakeup for several.

use std::io;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

use io_uring::types::{BufRingEntry, Fd, SubmitArgs, Timespec};
use io_uring::{IoUring, cqueue, opcode};

use crate::wire::frame::MAX_UDP_FRAME;

/// Provided buffers per socket (a power of two). Each one holds a whole datagram, so this
/// bounds the completions a burst can post before buffers are handed back.
pub(crate) const BUFFERS: u16 = 256;
/// Room for the kernel's `io_uring_recvmsg_out` header.
const OUT_HEADER: usize = 16;
/// Room for the source address.
const NAME_LEN: usize = std::mem::size_of::<libc::sockaddr_in6>();
/// Room for the payload: the largest frame a datagram may carry, and one byte more, so that a
/// larger datagram is seen truncated (and refused) rather than taken for a whole one.
pub const PAYLOAD_MAX: usize = MAX_UDP_FRAME + 1;
/// A whole number of pages, so a small datagram touches (and makes resident) one page only.
pub(crate) const BUFFER_LEN: usize = (OUT_HEADER + NAME_LEN + PAYLOAD_MAX).next_multiple_of(4096);
const BGID: u16 = 0x4f53;
const RECV: u64 = 1;
const CANCEL: u64 = 2;
const ENTER_GETEVENTS: u32 = 1;

/// Anonymous private mapping: page-aligned, zero-filled, pages resident only once touched
/// (a heartbeat touches the first page of its buffer only).
pub(crate) struct Mapping {
    pub(crate) ptr: *mut u8,
    len: usize,
}

impl Mapping {
    pub(crate) fn new(len: usize) -> io::Result<Self> {
        // SAFETY: anonymous private mapping, no fd; checked for MAP_FAILED.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }
}

// SAFETY: the mapping is owned memory, like a Box<[u8]>.
unsafe impl Send for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// What one drained completion was.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Drained {
    /// Datagrams handed to the callback.
    pub datagrams: usize,
    /// Completions seen (datagrams, errors, the end of a multishot).
    pub completions: usize,
}

/// One UDP socket's receive ring.
pub struct RecvRing {
    // Field order is drop order: the ring (and with it the kernel's use of the buffers) goes
    // before the memory it points into. `Drop` cancels the receive first.
    ring: IoUring,
    bufs: Mapping,
    br: Mapping,
    /// Our copy of the buffer ring's tail (the kernel reads the shared one).
    tail: u16,
    msghdr: Box<libc::msghdr>,
    armed: bool,
    /// Receives that ended in an error (ENOBUFS aside) since the last datagram, and the last
    /// error: re-arming a receive the kernel keeps refusing would spin.
    failures: u32,
    last_error: i32,
    sock: UdpSocket,
}

/// Consecutive failed receives after which `arm` gives up with the kernel's error.
const MAX_FAILURES: u32 = 8;

// SAFETY: the raw pointers (mappings, the boxed msghdr) are owned by the value and go with
// it; nothing else refers to them but the kernel, through the ring the value also owns.
unsafe impl Send for RecvRing {}

impl RecvRing {
    /// Takes over `sock` (switched to blocking: io_uring then waits for data itself instead
    /// of handing EAGAIN back). Only the calling thread may use the ring afterwards.
    pub fn new(sock: UdpSocket) -> io::Result<Self> {
        sock.set_nonblocking(false)?;
        // DEFER_TASKRUN: the kernel neither interrupts this thread (an IPI, a VM exit here)
        // nor wakes it for each datagram's receive work; the work waits for this thread's
        // next wait in the ring, which wakes only for `min_complete` of them (`wait_for`).
        // TASKRUN_FLAG says when work is queued (`work_pending`).
        let ring = IoUring::builder()
            .setup_cqsize(4 * BUFFERS as u32)
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_taskrun_flag()
            .build(8)?;
        let bufs = Mapping::new(BUFFERS as usize * BUFFER_LEN)?;
        let br_len =
            (BUFFERS as usize * std::mem::size_of::<BufRingEntry>()).next_multiple_of(page_size());
        let br = Mapping::new(br_len)?;
        // SAFETY: `br` is page-aligned, BUFFERS entries long, and lives as long as the ring
        // (dropped after it).
        unsafe {
            ring.submitter()
                .register_buf_ring(br.ptr as u64, BUFFERS, BGID)?;
        }
        // SAFETY: msghdr is plain data; zeroed is valid. Only msg_namelen and
        // msg_controllen matter for a multishot recvmsg.
        let mut msghdr: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        msghdr.msg_namelen = NAME_LEN as libc::socklen_t;
        let mut r = RecvRing {
            ring,
            bufs,
            br,
            tail: 0,
            msghdr,
            armed: false,
            failures: 0,
            last_error: 0,
            sock,
        };
        for bid in 0..BUFFERS {
            r.push_buffer(bid);
        }
        r.publish_tail();
        r.arm()?;
        Ok(r)
    }

    /// Whether the kernel has receive work queued for this thread (DEFER_TASKRUN keeps it
    /// for our next wait; TASKRUN_FLAG tells us).
    pub fn work_pending(&mut self) -> bool {
        self.ring.submission().taskrun()
    }

    /// Runs queued completion work now, so its completions can be drained.
    pub fn run_work(&mut self) -> io::Result<()> {
        // SAFETY: no submission entries are pending (arm submits its own), no argument.
        unsafe {
            self.ring
                .submitter()
                .enter::<libc::sigset_t>(0, 0, ENTER_GETEVENTS, None)
        }
        .map(|_| ())
        .or_else(|e| match e.raw_os_error() {
            Some(libc::EINTR) | Some(libc::EAGAIN) | Some(libc::EBUSY) => Ok(()),
            _ => Err(e),
        })
    }

    fn entries(&self) -> *mut BufRingEntry {
        self.br.ptr.cast()
    }

    fn push_buffer(&mut self, bid: u16) {
        let mask = BUFFERS - 1;
        // SAFETY: index within the ring's BUFFERS entries; the kernel only reads entries
        // between its head and our published tail, and this one is past the tail.
        unsafe {
            let e = &mut *self.entries().add((self.tail & mask) as usize);
            e.set_addr(self.bufs.ptr.add(bid as usize * BUFFER_LEN) as u64);
            e.set_len(BUFFER_LEN as u32);
            e.set_bid(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish_tail(&self) {
        // SAFETY: the tail field overlays the first entry's reserved field, as the kernel
        // ABI defines; a release store so the entries written before are visible first.
        unsafe {
            let tail = BufRingEntry::tail(self.entries()) as *const std::sync::atomic::AtomicU16;
            (*tail).store(self.tail, std::sync::atomic::Ordering::Release);
        }
    }

    /// (Re-)arms the multishot receive if it ended (no buffer left, or an error).
    pub fn arm(&mut self) -> io::Result<()> {
        if self.armed {
            return Ok(());
        }
        if self.failures >= MAX_FAILURES {
            return Err(io::Error::from_raw_os_error(self.last_error));
        }
        let sqe = opcode::RecvMsgMulti::new(
            Fd(self.sock.as_raw_fd()),
            &*self.msghdr as *const libc::msghdr,
            BGID,
        )
        .build()
        .user_data(RECV);
        // SAFETY: the msghdr is boxed and lives as long as the ring; the buffers belong to
        // the registered buffer ring.
        unsafe {
            self.ring
                .submission()
                .push(&sqe)
                .map_err(|_| io::Error::other("submission queue full"))?;
        }
        self.ring.submit()?;
        self.armed = true;
        Ok(())
    }

    /// Whether completions are waiting.
    pub fn has_completions(&mut self) -> bool {
        !self.ring.completion().is_empty()
    }

    /// Hands at most `max` received datagrams to `f`, in place, in arrival order; their
    /// buffers go back to the kernel as soon as `f` returns. Never blocks.
    pub fn drain(&mut self, max: usize, mut f: impl FnMut(&mut [u8], SocketAddr)) -> Drained {
        let mut d = Drained::default();
        while d.completions < max {
            let Some(cqe) = self.ring.completion().next() else {
                break;
            };
            d.completions += 1;
            if cqe.user_data() != RECV {
                continue;
            }
            if !cqueue::more(cqe.flags()) {
                self.armed = false;
            }
            let res = cqe.result();
            let Some(bid) = cqueue::buffer_select(cqe.flags()) else {
                // An error or the end of the multishot: nothing to hand over. ENOBUFS (every
                // buffer in use) is flow control: the socket keeps its queue until we
                // re-arm with the buffers back.
                if res < 0 && res != -libc::ENOBUFS {
                    self.failures += 1;
                    self.last_error = -res;
                }
                continue;
            };
            self.failures = 0;
            if res >= 0 && (bid as usize) < BUFFERS as usize {
                // SAFETY: the kernel is done with buffer `bid` (its completion is posted)
                // and will not touch it again before we push it back below.
                let buf = unsafe {
                    std::slice::from_raw_parts_mut(
                        self.bufs.ptr.add(bid as usize * BUFFER_LEN),
                        (res as usize).min(BUFFER_LEN),
                    )
                };
                if let Some((payload, from)) = parse_out(buf) {
                    d.datagrams += 1;
                    f(payload, from);
                }
            }
            self.push_buffer(bid);
            self.publish_tail();
        }
        d
    }

    /// Blocks until at least one completion is waiting or `timeout` passes (re-arming first).
    pub fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        self.wait_for(1, timeout)
    }

    /// Blocks until `min_complete` completions are waiting or `timeout` passes (re-arming
    /// first); the receive work queued meanwhile runs before it returns, so what arrived
    /// can be drained.
    pub fn wait_for(&mut self, min_complete: usize, timeout: Duration) -> io::Result<()> {
        self.arm()?;
        if self.has_completions() && min_complete <= 1 {
            return Ok(());
        }
        let ts = Timespec::new()
            .sec(timeout.as_secs())
            .nsec(timeout.subsec_nanos());
        let args = SubmitArgs::new().timespec(&ts);
        match self.ring.submitter().submit_with_args(min_complete, &args) {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME) | Some(libc::EINTR)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl Drop for RecvRing {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // Cancel the receive and wait (bounded) for its last completion, so the kernel is
        // done with the buffers before they are unmapped.
        let sqe = opcode::AsyncCancel::new(RECV).build().user_data(CANCEL);
        // SAFETY: a cancel entry carries no pointer.
        if unsafe { self.ring.submission().push(&sqe) }.is_err() {
            return;
        }
        let deadline = std::time::Instant::now() + Duration::from_millis(500);
        while self.armed && std::time::Instant::now() < deadline {
            let _ = self.wait_raw(Duration::from_millis(50));
            for cqe in self.ring.completion() {
                if cqe.user_data() == RECV && !cqueue::more(cqe.flags()) {
                    self.armed = false;
                }
            }
        }
        let _ = self.ring.submitter().unregister_buf_ring(BGID);
    }
}

impl RecvRing {
    fn wait_raw(&mut self, timeout: Duration) -> io::Result<usize> {
        let ts = Timespec::new()
            .sec(timeout.as_secs())
            .nsec(timeout.subsec_nanos());
        let args = SubmitArgs::new().timespec(&ts);
        self.ring.submitter().submit_with_args(1, &args)
    }
}

/// Whether this kernel runs what `RecvRing` needs (multishot recvmsg: Linux 6.0; provided
/// buffer rings: 5.19): one datagram sent to ourselves over loopback must come back through
/// a ring. Checked once per process; the error says what failed.
pub(crate) fn probe() -> io::Result<()> {
    static RESULT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    RESULT
        .get_or_init(|| probe_once().map_err(|e| e.to_string()))
        .clone()
        .map_err(io::Error::other)
}

fn probe_once() -> io::Result<()> {
    let sock = UdpSocket::bind((std::net::Ipv4Addr::LOCALHOST, 0))?;
    let addr = sock.local_addr()?;
    let tx = sock.try_clone()?;
    let mut ring = RecvRing::new(sock)
        .map_err(|e| io::Error::other(format!("provided buffer ring refused: {e}")))?;
    tx.send_to(b"probe", addr)?;
    let mut got = false;
    for _ in 0..20 {
        ring.wait(Duration::from_millis(50))?;
        ring.drain(usize::MAX, |p, _| got |= p == b"probe");
        if got {
            return Ok(());
        }
        if ring.failures > 0 {
            return Err(io::Error::other(format!(
                "multishot recvmsg refused: {}",
                io::Error::from_raw_os_error(ring.last_error)
            )));
        }
    }
    Err(io::Error::other(
        "multishot recvmsg: no datagram within 1 s",
    ))
}

/// Splits a multishot recvmsg buffer: `io_uring_recvmsg_out`, then the name field
/// (`NAME_LEN` bytes), then the payload.
fn parse_out(buf: &mut [u8]) -> Option<(&mut [u8], SocketAddr)> {
    if buf.len() < OUT_HEADER + NAME_LEN {
        return None;
    }
    let word = |i: usize| u32::from_ne_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
    let namelen = word(0) as usize;
    let payloadlen = word(8) as usize;
    let from = sockaddr(&buf[OUT_HEADER..OUT_HEADER + namelen.min(NAME_LEN)])?;
    let start = OUT_HEADER + NAME_LEN;
    let end = start + payloadlen.min(PAYLOAD_MAX).min(buf.len() - start);
    Some((&mut buf[start..end], from))
}

pub(crate) fn sockaddr(b: &[u8]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes([*b.first()?, *b.get(1)?]) as libc::c_int;
    match family {
        libc::AF_INET if b.len() >= 8 => {
            let port = u16::from_be_bytes([b[2], b[3]]);
            let ip = std::net::Ipv4Addr::new(b[4], b[5], b[6], b[7]);
            Some(SocketAddr::V4(SocketAddrV4::new(ip, port)))
        }
        libc::AF_INET6 if b.len() >= NAME_LEN => {
            let port = u16::from_be_bytes([b[2], b[3]]);
            let flow = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&b[8..24]);
            let scope = u32::from_ne_bytes([b[24], b[25], b[26], b[27]]);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip.into(),
                port,
                flow,
                scope,
            )))
        }
        _ => None,
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as usize,
        _ => 4096,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receives_datagrams_in_place_with_their_source() {
        if crate::listener::io::uring_available().is_err() {
            eprintln!("io_uring unavailable: skipped");
            return;
        }
        let sock =
            crate::listener::sockets::udp_reuseport(&"127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = sock.local_addr().unwrap();
        let mut ring = RecvRing::new(sock).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        // Bursts larger than BUFFERS: the multishot runs out of buffers and is re-armed.
        let burst = BUFFERS as usize + 100;
        let mut got = Vec::new();
        for round in 0..3 {
            for i in 0..burst {
                let k = round * burst + i;
                tx.send_to(&vec![(k % 251) as u8; k % 300], addr).unwrap();
            }
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while got.len() < (round + 1) * burst && std::time::Instant::now() < deadline {
                ring.wait(Duration::from_millis(100)).unwrap();
                ring.drain(usize::MAX, |p, from| {
                    assert_eq!(from, tx.local_addr().unwrap());
                    got.push(p.to_vec());
                });
            }
        }
        assert_eq!(got.len(), 3 * burst);
        for (k, p) in got.iter().enumerate() {
            assert_eq!(p.len(), k % 300);
            assert!(p.iter().all(|b| *b == (k % 251) as u8));
        }
    }

    #[test]
    fn this_kernel_passes_the_probe() {
        if io_uring::IoUring::new(2).is_err() {
            return;
        }
        probe().unwrap();
    }

    #[test]
    fn largest_datagram_fits() {
        if crate::listener::io::uring_available().is_err() {
            return;
        }
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = sock.local_addr().unwrap();
        let mut ring = RecvRing::new(sock).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.send_to(&vec![7u8; MAX_UDP_FRAME], addr).unwrap();
        let mut len = None;
        for _ in 0..50 {
            ring.wait(Duration::from_millis(100)).unwrap();
            ring.drain(usize::MAX, |p, _| len = Some(p.len()));
            if len.is_some() {
                break;
            }
        }
        assert_eq!(len, Some(MAX_UDP_FRAME));
    }
}
