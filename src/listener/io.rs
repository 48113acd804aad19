//! The only part the two backends do not share: how a worker's sockets are driven.
//! Both present the owned-buffer style of tokio-uring (the buffer goes in, comes back with
//! the result), so the pipeline in `worker` is written once.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

pub trait Datagram: 'static {
    /// Receives into the spare capacity of `buf` (cleared first).
    fn recv_from(
        &self,
        buf: Vec<u8>,
    ) -> impl Future<Output = (io::Result<(usize, SocketAddr)>, Vec<u8>)>;
    fn send_to(
        &self,
        buf: Vec<u8>,
        to: SocketAddr,
    ) -> impl Future<Output = (io::Result<usize>, Vec<u8>)>;
}

pub trait Stream: 'static {
    /// Appends what arrives to `buf`; Ok(0) is end of stream.
    fn read(&self, buf: Vec<u8>) -> impl Future<Output = (io::Result<usize>, Vec<u8>)>;
    fn write_all(&self, buf: Vec<u8>) -> impl Future<Output = (io::Result<()>, Vec<u8>)>;
}

pub trait Acceptor: 'static {
    type Conn: Stream;
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Conn, SocketAddr)>>;
}

/// A backend: its socket types and how it runs a worker thread.
pub trait Backend: 'static {
    const NAME: &'static str;
    type Udp: Datagram;
    type Listener: Acceptor;
    fn udp(sock: std::net::UdpSocket) -> io::Result<Self::Udp>;
    fn tcp(sock: std::net::TcpListener) -> io::Result<Self::Listener>;
    fn spawn_local<F: Future<Output = ()> + 'static>(f: F);
    /// Runs `f` to completion on a fresh single-threaded runtime of this backend.
    fn run<R, F: Future<Output = R>>(f: F) -> io::Result<R>;
}

pub struct Uring;

impl Datagram for tokio_uring::net::UdpSocket {
    async fn recv_from(&self, mut buf: Vec<u8>) -> (io::Result<(usize, SocketAddr)>, Vec<u8>) {
        buf.clear();
        tokio_uring::net::UdpSocket::recv_from(self, buf).await
    }
    async fn send_to(&self, buf: Vec<u8>, to: SocketAddr) -> (io::Result<usize>, Vec<u8>) {
        tokio_uring::net::UdpSocket::send_to(self, buf, to).await
    }
}

impl Stream for tokio_uring::net::TcpStream {
    async fn read(&self, mut buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        // tokio-uring reads into [len, capacity): make sure there is room past len.
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(16 * 1024);
        }
        let len = buf.len();
        let slice = tokio_uring::buf::BoundedBuf::slice(buf, len..);
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

impl Backend for Uring {
    const NAME: &'static str = "io_uring";
    type Udp = tokio_uring::net::UdpSocket;
    type Listener = tokio_uring::net::TcpListener;
    // io_uring waits on blocking fds itself; with O_NONBLOCK it may hand EAGAIN back instead.
    fn udp(sock: std::net::UdpSocket) -> io::Result<Self::Udp> {
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

/// Whether this kernel and sandbox let us set up a ring; the error says why not.
pub fn uring_available() -> io::Result<()> {
    io_uring::IoUring::new(2).map(|_| ())
}

pub struct Epoll;

impl Datagram for tokio::net::UdpSocket {
    async fn recv_from(&self, mut buf: Vec<u8>) -> (io::Result<(usize, SocketAddr)>, Vec<u8>) {
        buf.clear();
        let r = self.recv_buf_from(&mut buf).await;
        (r, buf)
    }
    async fn send_to(&self, buf: Vec<u8>, to: SocketAddr) -> (io::Result<usize>, Vec<u8>) {
        let r = tokio::net::UdpSocket::send_to(self, &buf, to).await;
        (r, buf)
    }
}

impl Stream for tokio::net::TcpStream {
    async fn read(&self, mut buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(16 * 1024);
        }
        loop {
            if let Err(e) = self.readable().await {
                return (Err(e), buf);
            }
            match self.try_read_buf(&mut buf) {
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

impl Backend for Epoll {
    const NAME: &'static str = "epoll";
    type Udp = tokio::net::UdpSocket;
    type Listener = tokio::net::TcpListener;
    fn udp(sock: std::net::UdpSocket) -> io::Result<Self::Udp> {
        sock.set_nonblocking(true)?;
        tokio::net::UdpSocket::from_std(sock)
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
