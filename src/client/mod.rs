//! The client used by the CLIs (and by peers): requests over the local unix socket in clear,
//! or to a peer over TCP, encrypted under the cluster secret.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::clock::now_ms;
use crate::wire::{FrameView, Kind, Request, Response, Sealer, SessionKey};

/// A TCP connection from `local` (a specific address of this node, port chosen by the
/// kernel) to `to`, within `timeout`, returned blocking: a multi-homed node speaks to its
/// peers from its cluster address, which is the address they record for it.
pub fn connect_from(local: IpAddr, to: &SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    use socket2::{Domain, SockAddr, Socket, Type};
    let socket = Socket::new(Domain::for_address(*to), Type::STREAM.cloexec(), None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&SockAddr::from(SocketAddr::new(local, 0)))?;
    // socket2 connects non-blocking with a deadline, then leaves the socket blocking.
    socket.connect_timeout(&SockAddr::from(*to), timeout)?;
    Ok(socket.into())
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the daemon is not running (no socket at {0}): `nodemgr daemon start` starts it")]
    NotRunning(PathBuf),
    #[error("permission denied on {0} (run as root or as the daemon's user)")]
    PermissionDenied(PathBuf),
    // The I/O error is the detail of this one cause, not a cause of its own: it is said in the
    // message, and not returned as a source (which would print it twice in a chain).
    #[error("cannot connect to {addr}: {cause}")]
    Connect { addr: String, cause: io::Error },
    #[error("no answer from {0} in time")]
    Timeout(String),
    #[error(
        "{0} closed the connection without answering (request refused: wrong secret, not a member, or blacklisted?)"
    )]
    Refused(String),
    #[error("invalid response from {peer}: {problem}")]
    Protocol {
        peer: String,
        problem: ProtocolError,
    },
    #[error("{peer}: {cause}")]
    Io { peer: String, cause: io::Error },
}

/// What is wrong with an exchange with a daemon, at the protocol level. Said in
/// [`ClientError::Protocol`]'s message, not returned as its source (one line, one cause).
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("cannot seal the request: {0}")]
    Seal(crate::wire::frame::EncodeError),
    #[error("bad frame header: {0}")]
    Header(crate::wire::frame::HeaderError),
    #[error("unexpected frame kind {0}")]
    UnexpectedKind(&'static str),
    #[error("response does not authenticate under our secrets")]
    NotAuthentic,
    #[error("{0}")]
    Payload(crate::wire::payload::PayloadError),
}

/// Who we are when talking to a peer: the cluster's secret and name, and our nodename; and
/// the address we speak from (this node's `listener.addr` when it is a specific one).
/// Requests are sealed under `secret`; responses open under it or `alt_secret`, since during
/// a rotation a member may seal under either.
#[derive(Clone)]
pub struct Identity {
    pub secret: String,
    pub alt_secret: Option<String>,
    pub cluster: String,
    pub nodename: String,
    pub source: Option<std::net::IpAddr>,
}

impl Identity {
    pub fn of(c: &crate::config::NodeConfig) -> Identity {
        Identity {
            secret: c.cluster.secret.clone(),
            alt_secret: c.cluster.alt_secret.clone(),
            cluster: c.cluster.name.clone(),
            nodename: c.nodename.clone(),
            source: Some(c.listener.addr).filter(|a| !a.is_unspecified()),
        }
    }
}

/// Secrets are shown by fingerprint only.
impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let fp = |s: &str| crate::wire::Fingerprint::of(s.as_bytes(), &self.cluster);
        f.debug_struct("Identity")
            .field("secret", &fp(&self.secret))
            .field("alt_secret", &self.alt_secret.as_deref().map(fp))
            .field("cluster", &self.cluster)
            .field("nodename", &self.nodename)
            .field("source", &self.source)
            .finish()
    }
}

fn io_class(peer: &str, e: io::Error) -> ClientError {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ClientError::Timeout(peer.into()),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => {
            ClientError::Refused(peer.into())
        }
        _ => ClientError::Io {
            peer: peer.into(),
            cause: e,
        },
    }
}

fn write_frame(w: &mut impl Write, body: &[u8]) -> io::Result<()> {
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    w.write_all(&out)
}

fn read_frame(r: &mut impl Read, max: usize) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes"),
        ));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok(body)
}

const MAX_RESPONSE: usize = 64 << 20;

/// Where a request goes.
#[derive(Clone, Debug)]
pub enum Target {
    /// The local daemon's socket: clear JSON.
    Local(PathBuf),
    /// A peer's listener over TCP, encrypted under `identity`.
    Peer {
        addr: SocketAddr,
        identity: Identity,
    },
}

enum Wire {
    Unix(UnixStream),
    Tcp(TcpStream, Identity),
}

/// An open connection that carries requests in turn.
pub struct Connection {
    wire: Wire,
    peer: String,
}

impl Connection {
    pub fn open(target: &Target, timeout: Duration) -> Result<Connection, ClientError> {
        let (wire, peer) = match target {
            Target::Local(sock) => {
                let conn = UnixStream::connect(sock).map_err(|e| match e.kind() {
                    io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                        ClientError::NotRunning(sock.to_path_buf())
                    }
                    io::ErrorKind::PermissionDenied => {
                        ClientError::PermissionDenied(sock.to_path_buf())
                    }
                    _ => ClientError::Connect {
                        addr: sock.display().to_string(),
                        cause: e,
                    },
                })?;
                (Wire::Unix(conn), sock.display().to_string())
            }
            Target::Peer { addr, identity } => {
                let conn = match identity.source {
                    Some(ip) if ip.is_ipv4() == addr.is_ipv4() => connect_from(ip, addr, timeout),
                    _ => TcpStream::connect_timeout(addr, timeout),
                }
                .map_err(|e| ClientError::Connect {
                    addr: addr.to_string(),
                    cause: e,
                })?;
                let _ = conn.set_nodelay(true);
                (Wire::Tcp(conn, identity.clone()), addr.to_string())
            }
        };
        let c = Connection { wire, peer };
        c.set_timeout(timeout)?;
        Ok(c)
    }

    pub fn set_timeout(&self, timeout: Duration) -> Result<(), ClientError> {
        let r = match &self.wire {
            Wire::Unix(s) => s
                .set_read_timeout(Some(timeout))
                .and_then(|()| s.set_write_timeout(Some(timeout))),
            Wire::Tcp(s, _) => s
                .set_read_timeout(Some(timeout))
                .and_then(|()| s.set_write_timeout(Some(timeout))),
        };
        r.map_err(|e| io_class(&self.peer, e))
    }

    pub fn send(&mut self, request: &Request) -> Result<(), ClientError> {
        let body = request.to_vec();
        let r = match &mut self.wire {
            Wire::Unix(s) => write_frame(s, &body),
            Wire::Tcp(s, identity) => {
                let mut sender = Sealer::new(
                    identity.secret.as_bytes(),
                    &identity.cluster,
                    &identity.nodename,
                    now_ms(),
                );
                let mut frame = Vec::new();
                sender
                    .seal(Kind::Request, &body, now_ms(), &mut frame)
                    .map_err(|e| ClientError::Protocol {
                        peer: self.peer.clone(),
                        problem: ProtocolError::Seal(e),
                    })?;
                write_frame(s, &frame)
            }
        };
        r.map_err(|e| io_class(&self.peer, e))
    }

    /// The next response or stream chunk.
    pub fn recv(&mut self) -> Result<Response, ClientError> {
        let peer = self.peer.clone();
        match &mut self.wire {
            Wire::Unix(s) => {
                let mut body = read_frame(s, MAX_RESPONSE).map_err(|e| io_class(&peer, e))?;
                Response::parse(&mut body).map_err(|e| ClientError::Protocol {
                    peer,
                    problem: ProtocolError::Payload(e),
                })
            }
            Wire::Tcp(s, identity) => {
                let mut body = read_frame(s, MAX_RESPONSE).map_err(|e| io_class(&peer, e))?;
                open_response(identity, &mut body)
                    .map_err(|problem| ClientError::Protocol { peer, problem })
            }
        }
    }
}

/// One request, one response.
pub fn call(
    target: &Target,
    request: &Request,
    timeout: Duration,
) -> Result<Response, ClientError> {
    let mut c = Connection::open(target, timeout)?;
    c.send(request)?;
    c.recv()
}

/// A streaming request (service logs): `on_chunk` sees every chunk until the end of the
/// stream, an error answer, or `on_chunk` returning false.
pub fn stream(
    target: &Target,
    request: &Request,
    timeout: Duration,
    mut on_chunk: impl FnMut(Response) -> bool,
) -> Result<(), ClientError> {
    let mut c = Connection::open(target, timeout)?;
    c.send(request)?;
    loop {
        let chunk = c.recv()?;
        let last = chunk.eos || chunk.status != 0;
        if !on_chunk(chunk) || last {
            return Ok(());
        }
    }
}

/// One request over the local socket.
pub fn call_local(
    sock: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<Response, ClientError> {
    call(&Target::Local(sock.to_path_buf()), request, timeout)
}

/// Opens a response frame sealed by a cluster member.
pub fn open_response(identity: &Identity, frame: &mut [u8]) -> Result<Response, ProtocolError> {
    let view = FrameView::parse(frame).map_err(|f| ProtocolError::Header(f.error))?;
    if !matches!(view.kind(), Kind::Response | Kind::StreamChunk) {
        return Err(ProtocolError::UnexpectedKind(view.kind().as_str()));
    }
    let (nodename, salt) = (view.nodename().to_owned(), *view.salt());
    // A failed open leaves the buffer unspecified: the alternate is tried on a copy.
    let copy = identity.alt_secret.as_ref().map(|_| frame.to_vec());
    let key =
        |secret: &str| SessionKey::derive(secret.as_bytes(), &identity.cluster, &nodename, &salt);
    let opened = match key(&identity.secret).open_in_place(frame) {
        Ok(range) => Some((range, None)),
        Err(_) => match (&identity.alt_secret, copy) {
            (Some(alt), Some(mut copy)) => key(alt)
                .open_in_place(&mut copy)
                .ok()
                .map(|range| (range, Some(copy))),
            _ => None,
        },
    };
    match opened {
        Some((range, None)) => Response::parse(&mut frame[range]).map_err(ProtocolError::Payload),
        Some((range, Some(mut copy))) => {
            Response::parse(&mut copy[range]).map_err(ProtocolError::Payload)
        }
        None => Err(ProtocolError::NotAuthentic),
    }
}

/// One request to a peer over TCP, encrypted; waits for its response.
pub fn call_peer(
    addr: SocketAddr,
    identity: &Identity,
    request: &Request,
    timeout: Duration,
) -> Result<Response, ClientError> {
    call(
        &Target::Peer {
            addr,
            identity: identity.clone(),
        },
        request,
        timeout,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_from_a_given_address_and_refused_when_closed() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let to = listener.local_addr().unwrap();
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        let c = connect_from(local, &to, Duration::from_secs(2)).unwrap();
        assert_eq!(c.local_addr().unwrap().ip(), local);
        // Returned blocking: a read with a timeout waits instead of failing at once.
        c.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let started = std::time::Instant::now();
        assert!((&c).read(&mut [0u8; 1]).is_err());
        assert!(started.elapsed() >= Duration::from_millis(15));
        drop(listener);
        let e = connect_from(local, &to, Duration::from_secs(2)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
    }
}
