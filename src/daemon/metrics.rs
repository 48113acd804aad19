//! The `metrics` thread: with `[metrics] addr` set, serves `GET /metrics` in the Prometheus
//! text format, written by the metric table from the same document as `daemon status`.
//!
//! The HTTP is written by hand: one route, one connection at a time, `Connection: close`,
//! a bounded request head and read time. A scraper asks every few seconds; an HTTP crate
//! (tiny_http and the like) would bring its own thread pool and a handful of dependencies
//! for what these fifty lines do.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::watch;

use crate::clock::now_ms;
use crate::state::metrics::prometheus_text;
use crate::state::{DaemonState, ThreadError};

/// The whole request, head and all, must come within this time.
const READ_TIMEOUT: Duration = Duration::from_secs(2);
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// A request head longer than this is refused (a scraper's is a few hundred bytes).
const MAX_HEAD: usize = 8 * 1024;
/// After an answer, how long and how much of the rest of a request is read and dropped.
const DRAIN_TIME: Duration = Duration::from_millis(500);
const MAX_DRAIN: usize = 64 * 1024;
/// How often the idle thread looks at its stop signal.
const POLL: Duration = Duration::from_millis(100);

pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Binds `[metrics] addr` (None: metrics are not served): done by the supervisor before it
/// starts the thread, so that a bind failure is one clear error, not a thread that dies.
pub(crate) fn bind(addr: Option<SocketAddr>) -> Result<Option<TcpListener>, ThreadError> {
    let Some(addr) = addr else { return Ok(None) };
    let listener = TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|cause| ThreadError::MetricsBind { addr, cause })?;
    tracing::info!(%addr, "serving metrics at /metrics");
    Ok(Some(listener))
}

pub(crate) fn run(
    state: &DaemonState,
    listener: Option<&TcpListener>,
    stop: &watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        let Some(l) = listener else {
            std::thread::sleep(POLL);
            continue;
        };
        match l.accept() {
            Ok((stream, peer)) => {
                if let Err(e) = serve(state, stream) {
                    tracing::debug!(%peer, "metrics request failed: {e}");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(POLL),
            Err(e) => {
                tracing::debug!("metrics accept failed: {e}");
                std::thread::sleep(POLL);
            }
        }
    }
}

fn serve(state: &DaemonState, mut stream: TcpStream) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let deadline = Instant::now() + READ_TIMEOUT;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_HEAD {
            return respond(&mut stream, "431 Request Header Fields Too Large", "");
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return respond(&mut stream, "408 Request Timeout", "");
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buf)? {
            0 => break,
            n => head.extend_from_slice(&buf[..n]),
        }
    }
    let line = head
        .split(|b| *b == b'\n')
        .next()
        .and_then(|l| std::str::from_utf8(l).ok())
        .unwrap_or("");
    let mut parts = line.trim_end().split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if !parts.next().is_some_and(|v| v.starts_with("HTTP/")) {
        return respond(&mut stream, "400 Bad Request", "");
    }
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => {
            let status = crate::handlers::daemon::status_document(state, now_ms());
            let body = prometheus_text(&Value::Object(status));
            respond(&mut stream, "200 OK", &body)
        }
        (_, "/metrics") => respond(&mut stream, "405 Method Not Allowed", ""),
        _ => respond(&mut stream, "404 Not Found", ""),
    }
}

fn respond(stream: &mut TcpStream, status: &str, body: &str) -> io::Result<()> {
    let allow = if status.starts_with("405") {
        "Allow: GET\r\n"
    } else {
        ""
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    stream.flush()?;
    // Closing with unread request bytes would reset the connection, and the client could
    // lose the answer: say we are done, then read what is left, briefly.
    stream.shutdown(std::net::Shutdown::Write)?;
    stream.set_read_timeout(Some(DRAIN_TIME))?;
    let mut left = [0u8; 4096];
    let start = Instant::now();
    let mut drained = 0;
    while start.elapsed() < DRAIN_TIME && drained < MAX_DRAIN {
        match stream.read(&mut left) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
    Ok(())
}
