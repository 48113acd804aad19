//! Socket setup: one UDP socket and one TCP listener per worker on the same port, with
//! SO_REUSEPORT so the kernel spreads datagrams and connections over the workers.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{FromRawFd, OwnedFd};

/// Receive buffer asked of the kernel for each UDP socket: bursts of heartbeats from large
/// clusters arrive faster than one wakeup.
const UDP_RCVBUF: libc::c_int = 4 << 20;

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn set_int(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid fd, a pointer to a live c_int and its size.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(|_| ())
}

pub(crate) fn sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; zeroed is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

pub(crate) fn bound_socket(addr: &SocketAddr, ty: libc::c_int) -> io::Result<OwnedFd> {
    let family = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain syscall; the fd is owned right away.
    let fd =
        cvt(unsafe { libc::socket(family, ty | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK, 0) })?;
    // SAFETY: fd was just returned by socket() and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    set_int(&fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    set_int(&fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
    let (storage, len) = sockaddr(addr);
    use std::os::fd::AsRawFd;
    // SAFETY: storage holds a sockaddr of `len` bytes.
    cvt(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&storage as *const libc::sockaddr_storage).cast(),
            len,
        )
    })?;
    Ok(fd)
}

pub fn udp_reuseport(addr: &SocketAddr) -> io::Result<UdpSocket> {
    let fd = bound_socket(addr, libc::SOCK_DGRAM)?;
    // Best effort: the kernel caps it at net.core.rmem_max.
    let _ = set_int(&fd, libc::SOL_SOCKET, libc::SO_RCVBUF, UDP_RCVBUF);
    Ok(UdpSocket::from(fd))
}

pub fn tcp_reuseport(addr: &SocketAddr, backlog: i32) -> io::Result<TcpListener> {
    let fd = bound_socket(addr, libc::SOCK_STREAM)?;
    use std::os::fd::AsRawFd;
    // SAFETY: a bound stream socket.
    cvt(unsafe { libc::listen(fd.as_raw_fd(), backlog) })?;
    Ok(TcpListener::from(fd))
}

/// A TCP connection from `local` (a specific address of this node, port chosen by the
/// kernel) to `to`, within `timeout`: a multi-homed node speaks to its peers from its cluster
/// address, which is the address they record for it.
pub fn connect_from(
    local: IpAddr,
    to: &SocketAddr,
    timeout: std::time::Duration,
) -> io::Result<TcpStream> {
    use std::os::fd::AsRawFd;
    let fd = bound_socket(&SocketAddr::new(local, 0), libc::SOCK_STREAM)?;
    let (storage, len) = sockaddr(to);
    // SAFETY: storage holds a sockaddr of `len` bytes; the socket is non-blocking.
    let r = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&storage as *const libc::sockaddr_storage).cast(),
            len,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
        // SAFETY: one valid pollfd.
        let n = cvt(unsafe { libc::poll(&mut pfd, 1, ms) })?;
        if n == 0 {
            return Err(io::ErrorKind::TimedOut.into());
        }
        let mut err: libc::c_int = 0;
        let mut elen = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: reading SO_ERROR into a c_int of the given size.
        cvt(unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                (&mut err as *mut libc::c_int).cast(),
                &mut elen,
            )
        })?;
        if err != 0 {
            return Err(io::Error::from_raw_os_error(err));
        }
    }
    let stream = TcpStream::from(fd);
    stream.set_nonblocking(false)?;
    Ok(stream)
}

/// A UDP socket bound to `local` (port chosen by the kernel), for heartbeats.
pub fn udp_from(local: IpAddr) -> io::Result<UdpSocket> {
    let fd = bound_socket(&SocketAddr::new(local, 0), libc::SOCK_DGRAM)?;
    let s = UdpSocket::from(fd);
    s.set_nonblocking(false)?;
    Ok(s)
}

/// Binds the first worker's pair, then the others on the port it got (the configured port
/// may be 0 in tests).
pub fn bind_all(addr: SocketAddr, workers: usize) -> io::Result<Vec<(UdpSocket, TcpListener)>> {
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
    }
}
