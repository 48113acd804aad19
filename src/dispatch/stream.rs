//! Sending a `Reply::Stream` over a connection: the backlog chunks, then (when following)
//! new log records as they are written, until the client goes away.

use std::future::Future;
use std::io;
use std::time::{Duration, Instant};

use super::StreamReply;
use crate::wire::Response;

const POLL: Duration = Duration::from_millis(200);
/// An empty chunk this often while following: how a gone client is noticed.
const KEEPALIVE: Duration = Duration::from_secs(2);

/// `send` writes one chunk; its error ends the stream.
pub(crate) async fn send_stream<F, Fut>(reply: StreamReply, mut send: F) -> io::Result<()>
where
    F: FnMut(Response) -> Fut,
    Fut: Future<Output = io::Result<()>>,
{
    let StreamReply { chunks, follow } = reply;
    let n = chunks.len();
    for (i, mut chunk) in chunks.into_iter().enumerate() {
        chunk.eos = follow.is_none() && i + 1 == n;
        send(chunk).await?;
    }
    let Some(mut follower) = follow else {
        return Ok(());
    };
    let mut last_sent = Instant::now();
    loop {
        tokio::time::sleep(POLL).await;
        let records = follower.poll();
        if !records.is_empty() || last_sent.elapsed() >= KEEPALIVE {
            send(Response::ok(
                serde_json::to_value(records).unwrap_or_default(),
            ))
            .await?;
            last_sent = Instant::now();
        }
    }
}
