//! The only part the two backends do not share: how a worker's sockets are driven.
//! Both present the owned-buffer style of tokio-uring (the buffer goes in, comes back with
//! the result), so the pipeline in `worker` is written once. UDP receives are the exception:
//! they run on a thread of their own that blocks in the kernel (`UdpRx`), take datagrams in
//! batches and hand them over in place: a multishot receive over provided buffers
//! (`uring_udp`) for io_uring, `recvmmsg` for epoll.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::uring_udp::{Mapping, PAYLOAD_MAX, RecvRing};

/// The sending side of a worker's UDP socket (replies to requests that came over UDP).
pub(crate) trait Datagram: 'static {
    fn send_to(
        &self,
        buf: Vec<u8>,
        to: SocketAddr,
    ) -> impl Future<Output = (io::Result<usize>, Vec<u8>)>;
}

/// The receiving side of a worker's UDP socket, used by the one thread that opened it: it
/// blocks in the kernel rather than in a runtime, so that the kernel, not each datagram's
/// readiness, decides when the thread wakes.
pub(crate) trait UdpRx: Sized + 'static {
    fn open(sock: std::net::UdpSocket) -> io::Result<Self>;
    /// Hands at most `max` datagrams already received to `f`, in place, in arrival order,
    /// without waiting. Returns how many.
    fn take<F: FnMut(&mut [u8], SocketAddr)>(&mut self, max: usize, f: F) -> io::Result<usize>;
    /// Blocks until a datagram is there or `timeout` passes.
    fn wait_any(&mut self, timeout: Duration) -> io::Result<()>;
    /// Blocks for `window` while datagrams gather, without a wakeup for each; returns
    /// earlier once `batch` of them are there where the backend can tell.
    fn gather(&mut self, window: Duration, batch: usize) -> io::Result<()>;
}

pub(crate) trait Stream: 'static {
    /// Appends what arrives to `buf`, at most `max` bytes (the rest stays in the socket);
    /// Ok(0) is end of stream.
    fn read(&self, buf: Vec<u8>, max: usize) -> impl Future<Output = (io::Result<usize>, Vec<u8>)>;
    fn write_all(&self, buf: Vec<u8>) -> impl Future<Output = (io::Result<()>, Vec<u8>)>;
    /// Shuts both directions down (also completes any read still in flight).
    fn shutdown(&self);
    /// Sends each write at once: an answer is one write, and Nagle's algorithm would hold
    /// it until the peer's delayed ACK of the previous one (or its next request) arrives.
    fn set_nodelay(&self) -> io::Result<()>;
    /// The socket, for the connection table to shut it down from another worker.
    fn fd(&self) -> RawFd;
}

pub(crate) trait Acceptor: 'static {
    type Conn: Stream;
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Conn, SocketAddr)>>;
}

/// A backend: its socket types and how it runs a worker thread.
pub(crate) trait Backend: 'static {
    const NAME: &'static str;
    type Udp: Datagram;
    type UdpRx: UdpRx;
    type Listener: Acceptor;
    /// The worker's UDP socket for sending (replies), on the worker's runtime; the receive
    /// thread opens its `UdpRx` on a clone of the same socket.
    fn udp_send(sock: std::net::UdpSocket) -> io::Result<Self::Udp>;
    fn tcp(sock: std::net::TcpListener) -> io::Result<Self::Listener>;
    fn spawn_local<F: Future<Output = ()> + 'static>(f: F);
    /// Runs `f` to completion on a fresh single-threaded runtime of this backend.
    fn run<R, F: Future<Output = R>>(f: F) -> io::Result<R>;
}

pub(crate) struct Uring;

impl Datagram for tokio_uring::net::UdpSocket {
    async fn send_to(&self, buf: Vec<u8>, to: SocketAddr) -> (io::Result<usize>, Vec<u8>) {
        tokio_uring::net::UdpSocket::send_to(self, buf, to).await
    }
}

impl Stream for tokio_uring::net::TcpStream {
    fn shutdown(&self) {
        let _ = tokio_uring::net::TcpStream::shutdown(self, std::net::Shutdown::Both);
    }
    fn set_nodelay(&self) -> io::Result<()> {
        tokio_uring::net::TcpStream::set_nodelay(self, true)
    }
    fn fd(&self) -> RawFd {
        self.as_raw_fd()
    }
    async fn read(&self, mut buf: Vec<u8>, max: usize) -> (io::Result<usize>, Vec<u8>) {
        buf.reserve(max);
        let len = buf.len();
        // Within a frame its rest has most likely arrived with its start: taken at once
        // (`uring_inline`), the ring waits only for what has not.
        if len > 0 {
            match uring_inline::recv(self.as_raw_fd(), &mut buf, max) {
                Some(Ok(n)) => return (Ok(n), buf),
                Some(Err(e)) => return (Err(e), buf),
                None => {}
            }
        }
        // tokio-uring reads into the slice's range of the capacity: exactly `max` past len.
        let slice = tokio_uring::buf::BoundedBuf::slice(buf, len..len + max);
        let (res, slice) = tokio_uring::net::TcpStream::read(self, slice).await;
        (res, slice.into_inner())
    }
    async fn write_all(&self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        // An answer fits the socket's buffer but for a slow reader: sent at once, and the
        // ring sends what did not fit.
        let sent = match uring_inline::send(self.as_raw_fd(), &buf) {
            Ok(n) => n,
            Err(e) => return (Err(e), buf),
        };
        if sent == buf.len() {
            return (Ok(()), buf);
        }
        let rest = tokio_uring::buf::BoundedBuf::slice(buf, sent..);
        let (res, rest) = tokio_uring::net::TcpStream::write_all(self, rest).await;
        (res, rest.into_inner())
    }
}

/// The io_uring backend's TCP transfers that need no waiting, made as plain non-blocking
/// calls. tokio-uring hands each completion over through a turn of its event loop (an epoll
/// wakeup, an `io_uring_enter`, a task wakeup): for a transfer that completes at once, that
/// is several system calls more than the transfer. Counted at 2,000 requests/s, a request
/// took 11 system calls with every transfer on the ring, 7 with this.
mod uring_inline {
    use std::io;
    use std::os::fd::{BorrowedFd, RawFd};

    /// Appends to `buf` up to `max` bytes already received on `fd` (its capacity holds them);
    /// None when none are there yet.
    pub(super) fn recv(fd: RawFd, buf: &mut Vec<u8>, max: usize) -> Option<io::Result<usize>> {
        // SAFETY: the stream that owns `fd` outlives this call (the caller borrows it).
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let sock = socket2::SockRef::from(&fd);
        let len = buf.len();
        let room = &mut buf.spare_capacity_mut()[..max];
        match sock.recv_with_flags(room, libc::MSG_DONTWAIT) {
            Ok(n) => {
                // SAFETY: recv initialized the first `n` bytes of the spare capacity.
                unsafe { buf.set_len(len + n) };
                Some(Ok(n))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => None,
            Err(e) => Some(Err(e)),
        }
    }

    /// Sends what `fd`'s buffer takes of `buf` now: how many bytes.
    pub(super) fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: as in `recv`.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let sock = socket2::SockRef::from(&fd);
        let mut sent = 0;
        while sent < buf.len() {
            match sock.send_with_flags(&buf[sent..], libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) {
                // Nothing taken: the ring's send will wait, or say why.
                Ok(0) => break,
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(sent)
    }
}

impl Acceptor for tokio_uring::net::TcpListener {
    type Conn = tokio_uring::net::TcpStream;
    async fn accept(&self) -> io::Result<(Self::Conn, SocketAddr)> {
        tokio_uring::net::TcpListener::accept(self).await
    }
}

/// io_uring receive side: one multishot recvmsg over provided buffers (`uring_udp`), waited
/// on in the ring itself.
pub(crate) struct UringUdpRx {
    ring: RecvRing,
}

impl UdpRx for UringUdpRx {
    fn open(sock: std::net::UdpSocket) -> io::Result<Self> {
        Ok(UringUdpRx {
            ring: RecvRing::new(sock)?,
        })
    }

    fn take<F: FnMut(&mut [u8], SocketAddr)>(&mut self, max: usize, mut f: F) -> io::Result<usize> {
        let mut n = 0;
        // Whether the last thing done was running the queued work: the kernel may still
        // flag work queued after a run that posted nothing, so once is enough.
        let mut ran_work = false;
        while n < max {
            // Re-arms the receive if it ended (all buffers were in use, or an error).
            self.ring.arm()?;
            let d = self.ring.drain(max - n, &mut f);
            n += d.datagrams;
            if d.completions > 0 {
                ran_work = false;
                continue;
            }
            if ran_work || !self.ring.work_pending() {
                break;
            }
            // Datagrams are there but their receive work waits for us: run it (one
            // syscall for the whole burst) and drain again.
            self.ring.run_work()?;
            ran_work = true;
        }
        Ok(n)
    }

    fn wait_any(&mut self, timeout: Duration) -> io::Result<()> {
        self.ring.wait(timeout)
    }

    fn gather(&mut self, window: Duration, batch: usize) -> io::Result<()> {
        self.ring.wait_for(batch, window)
    }
}

impl Backend for Uring {
    const NAME: &'static str = "io_uring";
    type Udp = tokio_uring::net::UdpSocket;
    type UdpRx = UringUdpRx;
    type Listener = tokio_uring::net::TcpListener;
    // io_uring waits on blocking fds itself; with O_NONBLOCK it may hand EAGAIN back instead
    // (the receive side, a clone of the same open socket, wants the same).
    fn udp_send(sock: std::net::UdpSocket) -> io::Result<Self::Udp> {
        sock.set_nonblocking(false)?;
        Ok(tokio_uring::net::UdpSocket::from_std(sock))
    }
    fn tcp(sock: std::net::TcpListener) -> io::Result<Self::Listener> {
        sock.set_nonblocking(false)?;
        Ok(tokio_uring::net::TcpListener::from_std(sock))
    }
    fn spawn_local<F: Future<Output = ()> + 'static>(f: F) {
        tokio_uring::spawn(f);
    }
    fn run<R, F: Future<Output = R>>(f: F) -> io::Result<R> {
        uring_available()?;
        Ok(tokio_uring::builder().entries(1024).start(f))
    }
}

/// Whether this kernel and sandbox let us set up a ring, and run the UDP receive the io_uring
/// backend uses (`uring_udp::probe`); the error says why not.
pub fn uring_available() -> io::Result<()> {
    io_uring::IoUring::new(2).map(|_| ())?;
    super::uring_udp::probe()
}

pub(crate) struct Epoll;

/// Most bytes one epoll-backend read takes.
const READ_CHUNK: usize = 64 * 1024;

/// The epoll backend's sending side: the worker's UDP socket registered with the runtime for
/// writability only. Its clone receives on the receive thread; registered for reading too,
/// every datagram would also wake the runtime.
pub(crate) struct EpollUdpSend {
    sock: AsyncFd<std::net::UdpSocket>,
}

impl Datagram for EpollUdpSend {
    async fn send_to(&self, buf: Vec<u8>, to: SocketAddr) -> (io::Result<usize>, Vec<u8>) {
        loop {
            let mut guard = match self.sock.writable().await {
                Ok(g) => g,
                Err(e) => return (Err(e), buf),
            };
            match guard.try_io(|sock| sock.get_ref().send_to(&buf, to)) {
                Ok(r) => return (r, buf),
                Err(_would_block) => continue,
            }
        }
    }
}

impl Stream for tokio::net::TcpStream {
    fn shutdown(&self) {
        use std::os::fd::AsRawFd;
        // SAFETY: shutdown(2) on a socket this value owns; no memory is involved.
        unsafe { libc::shutdown(self.as_raw_fd(), libc::SHUT_RDWR) };
    }
    fn set_nodelay(&self) -> io::Result<()> {
        tokio::net::TcpStream::set_nodelay(self, true)
    }
    fn fd(&self) -> RawFd {
        self.as_raw_fd()
    }
    async fn read(&self, mut buf: Vec<u8>, max: usize) -> (io::Result<usize>, Vec<u8>) {
        use std::io::Read as _;
        let len = buf.len();
        // Into at most `max` bytes past len, so that no more is taken from the socket, and a
        // bounded chunk at a time (the room is zeroed first).
        let room = max.min(READ_CHUNK);
        loop {
            if let Err(e) = self.readable().await {
                return (Err(e), buf);
            }
            buf.resize(len + room, 0);
            // A read that fills less than its room emptied the socket: its readiness is
            // cleared with it (as tokio's `poll_read` does, by answering `try_io`
            // WouldBlock), so the next read waits for data rather than first making a
            // `recv` that can only say EAGAIN. Data arriving meanwhile raises a new event.
            let mut short = None;
            let r = self.try_io(tokio::io::Interest::READABLE, || {
                let n = (&*socket2::SockRef::from(self)).read(&mut buf[len..])?;
                if n > 0 && n < room {
                    short = Some(n);
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(n)
            });
            let r = short.map_or(r, Ok);
            buf.truncate(len + *r.as_ref().unwrap_or(&0));
            match r {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return (r, buf),
            }
        }
    }
    async fn write_all(&self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        let mut off = 0;
        while off < buf.len() {
            if let Err(e) = self.writable().await {
                return (Err(e), buf);
            }
            match self.try_write(&buf[off..]) {
                Ok(0) => return (Err(io::ErrorKind::WriteZero.into()), buf),
                Ok(n) => off += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return (Err(e), buf),
            }
        }
        (Ok(()), buf)
    }
}

impl Acceptor for tokio::net::TcpListener {
    type Conn = tokio::net::TcpStream;
    async fn accept(&self) -> io::Result<(Self::Conn, SocketAddr)> {
        tokio::net::TcpListener::accept(self).await
    }
}

/// Datagrams one `recvmmsg` takes at most.
const MMSG_BATCH: usize = 64;
/// Room per datagram: a whole number of pages, so a small datagram makes one page resident.
const MMSG_STRIDE: usize = PAYLOAD_MAX.next_multiple_of(4096);
/// Consecutive failed receives (ICMP errors and the like aside) after which `take` gives up
/// with the kernel's error rather than spin.
const MAX_RECV_FAILURES: u32 = 64;

/// epoll receive side: `recvmmsg` of up to 64 datagrams a call on the non-blocking socket
/// (its clone on the worker's runtime sends with tokio, which wants it non-blocking), `poll`
/// to wait.
pub(crate) struct EpollUdpRx {
    sock: std::net::UdpSocket,
    bufs: Mapping,
    iov: Box<[libc::iovec; MMSG_BATCH]>,
    names: Box<[libc::sockaddr_storage; MMSG_BATCH]>,
    hdrs: Box<[libc::mmsghdr; MMSG_BATCH]>,
    failures: u32,
}

impl UdpRx for EpollUdpRx {
    fn open(sock: std::net::UdpSocket) -> io::Result<Self> {
        sock.set_nonblocking(true)?;
        let bufs = Mapping::new(MMSG_BATCH * MMSG_STRIDE)?;
        // SAFETY: iovec, sockaddr_storage and mmsghdr are plain data; zeroed is valid.
        let (iov, names, hdrs) = unsafe {
            (
                Box::new(std::mem::zeroed::<[libc::iovec; MMSG_BATCH]>()),
                Box::new(std::mem::zeroed::<[libc::sockaddr_storage; MMSG_BATCH]>()),
                Box::new(std::mem::zeroed::<[libc::mmsghdr; MMSG_BATCH]>()),
            )
        };
        let mut rx = EpollUdpRx {
            sock,
            bufs,
            iov,
            names,
            hdrs,
            failures: 0,
        };
        for j in 0..MMSG_BATCH {
            rx.iov[j] = libc::iovec {
                // SAFETY: within the mapping of MMSG_BATCH strides.
                iov_base: unsafe { rx.bufs.ptr.add(j * MMSG_STRIDE) }.cast(),
                iov_len: PAYLOAD_MAX,
            };
            let h = &mut rx.hdrs[j].msg_hdr;
            h.msg_iov = &mut rx.iov[j];
            h.msg_iovlen = 1;
            h.msg_name = (&mut rx.names[j] as *mut libc::sockaddr_storage).cast();
        }
        Ok(rx)
    }

    fn take<F: FnMut(&mut [u8], SocketAddr)>(&mut self, max: usize, mut f: F) -> io::Result<usize> {
        let max = max.min(MMSG_BATCH);
        for h in self.hdrs[..max].iter_mut() {
            // The kernel writes back how long each name was.
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
        }
        // SAFETY: `max` headers, each pointing at its own name and iovec, the iovec at its
        // own PAYLOAD_MAX bytes of the mapping; all owned by `self` and not moved meanwhile.
        let r = unsafe {
            libc::recvmmsg(
                self.sock.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                max as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(0),
                // ICMP errors and the like surface here; they say nothing about the next
                // datagram.
                _ if self.failures < MAX_RECV_FAILURES => {
                    self.failures += 1;
                    Ok(0)
                }
                _ => Err(e),
            };
        }
        self.failures = 0;
        let n = r as usize;
        for j in 0..n {
            let h = &self.hdrs[j];
            let len = (h.msg_len as usize).min(PAYLOAD_MAX);
            let namelen =
                (h.msg_hdr.msg_namelen as usize).min(std::mem::size_of::<libc::sockaddr_storage>());
            // SAFETY: the kernel wrote `namelen` bytes of the name; plain bytes are read.
            let name = unsafe {
                std::slice::from_raw_parts(
                    (&self.names[j] as *const libc::sockaddr_storage).cast::<u8>(),
                    namelen,
                )
            };
            let Some(from) = super::uring_udp::sockaddr(name) else {
                continue;
            };
            // SAFETY: the kernel wrote `len` bytes (at most PAYLOAD_MAX) at the start of
            // this datagram's stride; nothing else refers to it until the next `take`.
            let payload =
                unsafe { std::slice::from_raw_parts_mut(self.bufs.ptr.add(j * MMSG_STRIDE), len) };
            f(payload, from);
        }
        Ok(n)
    }

    fn wait_any(&mut self, timeout: Duration) -> io::Result<()> {
        let mut pfd = libc::pollfd {
            fd: self.sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
        // SAFETY: one pollfd that lives across the call.
        if unsafe { libc::poll(&mut pfd, 1, ms) } < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                return Err(e);
            }
        }
        Ok(())
    }

    fn gather(&mut self, window: Duration, _batch: usize) -> io::Result<()> {
        // Nothing in the socket API wakes for "n datagrams": sleep the window through; the
        // socket's 4 MiB buffer holds what a burst brings meanwhile.
        std::thread::sleep(window);
        Ok(())
    }
}

impl Backend for Epoll {
    const NAME: &'static str = "epoll";
    type Udp = EpollUdpSend;
    type UdpRx = EpollUdpRx;
    type Listener = tokio::net::TcpListener;
    fn udp_send(sock: std::net::UdpSocket) -> io::Result<Self::Udp> {
        sock.set_nonblocking(true)?;
        // SAFETY: the `UdpSocket` owns its fd: open, and the same, for as long as the
        // `AsyncFd` holds it.
        let sock = unsafe { AsyncFd::register_with_interest(sock, Interest::WRITABLE) }
            .map_err(io::Error::from)?;
        Ok(EpollUdpSend { sock })
    }
    fn tcp(sock: std::net::TcpListener) -> io::Result<Self::Listener> {
        sock.set_nonblocking(true)?;
        tokio::net::TcpListener::from_std(sock)
    }
    fn spawn_local<F: Future<Output = ()> + 'static>(f: F) {
        tokio::task::spawn_local(f);
    }
    fn run<R, F: Future<Output = R>>(f: F) -> io::Result<R> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let local = tokio::task::LocalSet::new();
        Ok(local.block_on(&rt, f))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frame::MAX_UDP_FRAME;

    /// Sends datagrams of every length from 0 to 299 (and the largest) and takes them back
    /// through `R`, in batches, checking each one's bytes and source.
    fn receives_in_batches<R: UdpRx>() {
        let sock = super::super::sockets::udp_reuseport(&"127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = sock.local_addr().unwrap();
        let mut rx = R::open(sock).unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut lens: Vec<usize> = (0..300).collect();
        lens.push(MAX_UDP_FRAME);
        for (k, len) in lens.iter().enumerate() {
            tx.send_to(&vec![(k % 251) as u8; *len], addr).unwrap();
        }
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while got.len() < lens.len() && std::time::Instant::now() < deadline {
            rx.wait_any(Duration::from_millis(100)).unwrap();
            let n = rx
                .take(64, |p, from| {
                    assert_eq!(from, tx.local_addr().unwrap());
                    got.push(p.to_vec());
                })
                .unwrap();
            assert!(n <= 64);
            if n > 0 && n < 64 {
                rx.gather(Duration::from_millis(1), 64).unwrap();
            }
        }
        assert_eq!(got.len(), lens.len());
        for (k, p) in got.iter().enumerate() {
            assert_eq!(p.len(), lens[k]);
            assert!(p.iter().all(|b| *b == (k % 251) as u8));
        }
        // Nothing left: a take does not wait.
        assert_eq!(rx.take(64, |_, _| panic!("nothing was sent")).unwrap(), 0);
    }

    #[test]
    fn recvmmsg_receiver_takes_datagrams_in_place_with_their_source() {
        receives_in_batches::<EpollUdpRx>();
    }

    #[test]
    fn ring_receiver_takes_datagrams_in_place_with_their_source() {
        if uring_available().is_err() {
            eprintln!("io_uring unavailable: skipped");
            return;
        }
        receives_in_batches::<UringUdpRx>();
    }
}
