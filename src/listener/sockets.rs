//! Socket setup: one UDP socket and one TCP listener per worker on the same port, with
//! SO_REUSEPORT so the kernel spreads datagrams and connections over the workers.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};

use socket2::{Domain, SockAddr, Socket, Type};

/// Receive buffer asked of the kernel for each UDP socket: bursts of heartbeats from large
/// clusters arrive faster than one wakeup.
const UDP_RCVBUF: usize = 4 << 20;

/// A non-blocking, close-on-exec socket of `ty` bound to `addr`, with SO_REUSEADDR and
/// SO_REUSEPORT so that every worker binds the same port and the kernel spreads the traffic.
fn bound_socket(addr: &SocketAddr, ty: Type) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(*addr), ty.nonblocking().cloexec(), None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&SockAddr::from(*addr))?;
    Ok(socket)
}

/// A non-blocking UDP socket on `addr` with SO_REUSEPORT, one per worker, and a large
/// receive buffer.
pub fn udp_reuseport(addr: &SocketAddr) -> io::Result<UdpSocket> {
    let socket = bound_socket(addr, Type::DGRAM)?;
    // Best effort: the kernel caps it at net.core.rmem_max.
    let _ = socket.set_recv_buffer_size(UDP_RCVBUF);
    Ok(socket.into())
}

pub(crate) fn tcp_reuseport(addr: &SocketAddr, backlog: i32) -> io::Result<TcpListener> {
    let socket = bound_socket(addr, Type::STREAM)?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

/// A UDP socket bound to `local` (port chosen by the kernel), blocking, for heartbeats.
pub(crate) fn udp_from(local: IpAddr) -> io::Result<UdpSocket> {
    let socket = bound_socket(&SocketAddr::new(local, 0), Type::DGRAM)?;
    socket.set_nonblocking(false)?;
    Ok(socket.into())
}

/// Binds the first worker's pair, then the others on the port it got (the configured port
/// may be 0 in tests).
pub(crate) fn bind_all(
    addr: SocketAddr,
    workers: usize,
) -> io::Result<Vec<(UdpSocket, TcpListener)>> {
    let mut out = Vec::with_capacity(workers);
    let first_tcp = tcp_reuseport(&addr, 1024)?;
    let port = first_tcp.local_addr()?.port();
    let addr = SocketAddr::new(addr.ip(), port);
    out.push((udp_reuseport(&addr)?, first_tcp));
    for _ in 1..workers {
        out.push((udp_reuseport(&addr)?, tcp_reuseport(&addr, 1024)?));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_port_for_every_worker() {
        let socks = bind_all("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        let port = socks[0].1.local_addr().unwrap().port();
        for (u, t) in &socks {
            assert_eq!(u.local_addr().unwrap().port(), port);
            assert_eq!(t.local_addr().unwrap().port(), port);
        }
        // The workers' sockets are non-blocking: their loops must never park on one.
        let mut buf = [0u8; 16];
        let e = socks[0].0.recv(&mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    }
}
