//! The local administration socket `<var>/lsnr.sock` (mode 0600): length-prefixed frames of
//! clear JSON, for `sudo nodemgr` on this node. Not part of the `listener` unit, so stopping
//! the listener thread does not lock the administrator out.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

use crate::dispatch::stream::send_stream;
use crate::dispatch::{Dispatcher, Origin, Reply};
use crate::wire::{RequestParser, Response, local};

const IDLE: Duration = Duration::from_secs(300);

/// Binds the socket (replacing a stale one) and restricts it to the owner.
pub(crate) fn bind(path: &Path) -> std::io::Result<std::os::unix::net::UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let l = std::os::unix::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Serves until the process exits.
pub(crate) fn serve(
    listener: std::os::unix::net::UnixListener,
    dispatcher: Dispatcher,
) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let listener = UnixListener::from_std(listener)?;
        loop {
            let (conn, _) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("control socket accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if !peer_allowed(&conn) {
                continue;
            }
            let d = dispatcher.clone();
            tokio::task::spawn_local(async move {
                let _ = connection(conn, d).await;
            });
        }
    })
}

/// Root, or the daemon's own user.
fn peer_allowed(conn: &UnixStream) -> bool {
    match conn.peer_cred() {
        // SAFETY: geteuid has no failure mode.
        Ok(c) => c.uid() == 0 || c.uid() == unsafe { libc::geteuid() },
        Err(_) => false,
    }
}

async fn connection(mut conn: UnixStream, d: Dispatcher) -> std::io::Result<()> {
    let mut parser = RequestParser::new();
    loop {
        let mut len = [0u8; 4];
        match tokio::time::timeout(IDLE, conn.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            _ => return Ok(()),
        }
        let end = match local::next(&len) {
            local::LocalStep::Need(end) => end,
            _ => return Ok(()),
        };
        let mut payload = vec![0u8; end - local::LEN_PREFIX];
        conn.read_exact(&mut payload).await?;
        let reply = match local::read_request(&mut parser, &payload) {
            Ok(request) => d.call(Origin::Local, request).await,
            Err(response) => response.into(),
        };
        match reply {
            Reply::Response(response) => write_json(&mut conn, &response).await?,
            // `Dispatcher::call` waits for later answers: none reaches here.
            Reply::Later(_) => write_json(&mut conn, &Response::error("no answer")).await?,
            Reply::Stream(stream) => {
                let conn = &conn;
                send_stream(stream, |chunk| async move {
                    write_json_shared(conn, &chunk).await
                })
                .await?;
            }
        }
    }
}

async fn write_json(conn: &mut UnixStream, response: &Response) -> std::io::Result<()> {
    conn.write_all(&local::encode_response(response)).await
}

/// The same through a shared reference (the stream sender's closure cannot lend `&mut`).
async fn write_json_shared(conn: &UnixStream, response: &Response) -> std::io::Result<()> {
    let out = local::encode_response(response);
    let mut off = 0;
    while off < out.len() {
        conn.writable().await?;
        match conn.try_write(&out[off..]) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => off += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
