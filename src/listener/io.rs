//! The only part the two backends do not share: how a worker's sockets are driven.
//! Both present the owned-buffer style of tokio-uring (the buffer goes in, comes back with
//! the result), so the pipeline in `worker` is written once. UDP receives are the exception:
//! they come in batches, handed over in place (`UdpRx`), so the io_uring backend can take
//! them from a multishot receive over provided buffers (`uring_udp`).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::uring_udp::RecvRing;

/// The sending side of a worker's UDP socket (replies to requests that came over UDP).
pub(crate) trait Datagram: 'static {
    fn send_to(
        &self,
        buf: Vec<u8>,
        to: SocketAddr,
    ) -> impl Future<Output = (io::Result<usize>, Vec<u8>)>;
}

/// The receiving side of a worker's UDP socket.
pub(crate) trait UdpRx: 'static {
    /// Waits for datagrams, then hands at most `max` of them to `f`, in place, in arrival
    /// order, without waiting again. Returns how many (0 only after socket errors).
    fn recv_batch<F: FnMut(&mut [u8], SocketAddr)>(
        &mut self,
        max: usize,
        f: F,
    ) -> impl Future<Output = io::Result<usize>>;
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
    /// The receiving side of the worker's UDP socket and a handle on it for sending.
    fn udp(sock: std::net::UdpSocket) -> io::Result<(Self::UdpRx, Self::Udp)>;
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
        // tokio-uring reads into the slice's range of the capacity: exactly `max` past len.
        buf.reserve(max);
        let len = buf.len();
        let slice = tokio_uring::buf::BoundedBuf::slice(buf, len..len + max);
        let (res, slice) = tokio_uring::net::TcpStream::read(self, slice).await;
        (res, slice.into_inner())
    }
    async fn write_all(&self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        tokio_uring::net::TcpStream::write_all(self, buf).await
    }
}

impl Acceptor for tokio_uring::net::TcpListener {
    type Conn = tokio_uring::net::TcpStream;
    async fn accept(&self) -> io::Result<(Self::Conn, SocketAddr)> {
        tokio_uring::net::TcpListener::accept(self).await
    }
}

/// The ring's fd, registered with the runtime's reactor: readable when completions wait.
struct RingFd(RawFd);

impl AsRawFd for RingFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// io_uring receive side: one multishot recvmsg over provided buffers (`uring_udp`), its
/// ring waited on through the reactor of the worker's runtime (tokio-uring runs on tokio's,
/// so this works beside tokio-uring's own ring).
pub(crate) struct UringUdpRx {
    // Dropped before the ring: deregisters the fd while it is still open.
    ready: AsyncFd<RingFd>,
    ring: RecvRing,
}

impl UdpRx for UringUdpRx {
    async fn recv_batch<F: FnMut(&mut [u8], SocketAddr)>(
        &mut self,
        max: usize,
        mut f: F,
    ) -> io::Result<usize> {
        loop {
            // Re-arms the receive if it ended (all buffers were in use, or an error).
            self.ring.arm()?;
            let d = self.ring.drain(max, &mut f);
            if d.datagrams > 0 {
                return Ok(d.datagrams);
            }
            if d.completions > 0 {
                continue;
            }
            if self.ring.work_pending() {
                // Datagrams are there but their receive work waits for us: run it (one
                // syscall for the whole burst) and drain again.
                self.ring.run_work()?;
                continue;
            }
            let mut guard = self.ready.readable().await?;
            // Edge-triggered: clear only once nothing is left, or a wakeup could be lost.
            if !self.ring.has_completions() && !self.ring.work_pending() {
                guard.clear_ready();
            }
        }
    }
}

impl Backend for Uring {
    const NAME: &'static str = "io_uring";
    type Udp = tokio_uring::net::UdpSocket;
    type UdpRx = UringUdpRx;
    type Listener = tokio_uring::net::TcpListener;
    // io_uring waits on blocking fds itself; with O_NONBLOCK it may hand EAGAIN back instead.
    fn udp(sock: std::net::UdpSocket) -> io::Result<(Self::UdpRx, Self::Udp)> {
        sock.set_nonblocking(false)?;
        let send = tokio_uring::net::UdpSocket::from_std(sock.try_clone()?);
        let ring = RecvRing::new(sock)?;
        // SAFETY: the ring's fd stays open and the same as long as `ready` lives: the ring is
        // dropped after it (field order of `UringUdpRx`).
        let ready =
            unsafe { AsyncFd::register_with_interest(RingFd(ring.ring_fd()), Interest::READABLE) }
                .map_err(io::Error::from)?;
        Ok((UringUdpRx { ready, ring }, send))
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

impl Datagram for tokio::net::UdpSocket {
    async fn send_to(&self, buf: Vec<u8>, to: SocketAddr) -> (io::Result<usize>, Vec<u8>) {
        let r = tokio::net::UdpSocket::send_to(self, &buf, to).await;
        (r, buf)
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
        let len = buf.len();
        loop {
            if let Err(e) = self.readable().await {
                return (Err(e), buf);
            }
            // Into at most `max` bytes past len, so that no more is taken from the socket,
            // and a bounded chunk at a time (the room is zeroed first).
            buf.resize(len + max.min(READ_CHUNK), 0);
            let r = self.try_read(&mut buf[len..]);
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

/// epoll receive side: readiness, then one `recvfrom` per datagram until the socket is
/// empty or the batch full, into one reused buffer.
pub(crate) struct EpollUdpRx {
    sock: tokio::net::UdpSocket,
    buf: Vec<u8>,
}

impl UdpRx for EpollUdpRx {
    async fn recv_batch<F: FnMut(&mut [u8], SocketAddr)>(
        &mut self,
        max: usize,
        mut f: F,
    ) -> io::Result<usize> {
        let mut n = 0;
        let mut errors = 0;
        while n < max && errors < max {
            self.buf.clear();
            match self.sock.try_recv_buf_from(&mut self.buf) {
                Ok((len, from)) => {
                    n += 1;
                    f(&mut self.buf[..len], from);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if n > 0 {
                        break;
                    }
                    self.sock.readable().await?;
                }
                // ICMP errors and the like surface here; they say nothing about the next
                // datagram.
                Err(_) => errors += 1,
            }
        }
        Ok(n)
    }
}

impl Backend for Epoll {
    const NAME: &'static str = "epoll";
    type Udp = tokio::net::UdpSocket;
    type UdpRx = EpollUdpRx;
    type Listener = tokio::net::TcpListener;
    fn udp(sock: std::net::UdpSocket) -> io::Result<(Self::UdpRx, Self::Udp)> {
        sock.set_nonblocking(true)?;
        let send = tokio::net::UdpSocket::from_std(sock.try_clone()?)?;
        let rx = EpollUdpRx {
            sock: tokio::net::UdpSocket::from_std(sock)?,
            buf: Vec::with_capacity(super::uring_udp::PAYLOAD_MAX),
        };
        Ok((rx, send))
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
