//! Not API: what the load generator (`benches/lsnr-bench`) and the benches need from the
//! listener's internals and the frame format, kept in one place so that the listener's
//! modules stay private. Hidden from the docs and free to change with them.

use crate::wire::frame::{MAX_UDP_FRAME, TAG_LEN, header_len};

pub use crate::listener::io::uring_available;
pub use crate::listener::pin::pin_worker;
pub use crate::listener::sockets::udp_reuseport;
pub use crate::listener::uring_udp::{PAYLOAD_MAX, RecvRing};

/// Bytes of frame around a payload for a nodename of `name_len` bytes.
pub const fn overhead(name_len: usize) -> usize {
    header_len(name_len) + TAG_LEN
}

/// Smallest frame size `heartbeat_payload` can fill.
pub fn min_size(name_len: usize) -> usize {
    overhead(name_len) + 96
}

/// A heartbeat payload that makes a frame of exactly `frame_size` bytes: a full snapshot in
/// the shape of `crate::hb` (`gen`, `since` 0, the node monitor, a few services with their
/// status), padded with a string in the monitor. The generation stays at 1, as a node's does
/// while nothing changes.
pub fn heartbeat_payload(frame_size: usize, name_len: usize) -> Vec<u8> {
    heartbeat_payload_at(frame_size, name_len, 1)
}

/// The same content at generation `generation`: what a node sends after its content changed
/// (the padding absorbs the generation's digits, so the frame size stays exact).
pub fn heartbeat_payload_at(frame_size: usize, name_len: usize, generation: u64) -> Vec<u8> {
    assert!(
        frame_size >= min_size(name_len) && frame_size <= MAX_UDP_FRAME,
        "frame size {frame_size} out of range"
    );
    let target = frame_size - overhead(name_len);
    let build = |services: &str, pad: usize| {
        format!(
            r#"{{"gen":{generation},"since":0,"monitor":{{"status":"idle","pad":"{}"}},"services":{{{services}}}}}"#,
            "x".repeat(pad)
        )
    };
    let mut services = String::new();
    let mut i = 0;
    loop {
        let entry = format!(
            r#"{}"svc{i}":{{"avail":"up","overall":"up","frozen":false,"monitor":{{"status":"idle"}}}}"#,
            if i == 0 { "" } else { "," }
        );
        // Room for a generation of up to 20 digits whatever this one's.
        if build(&services, 0).len() + entry.len() + 36 > target {
            break;
        }
        services.push_str(&entry);
        i += 1;
    }
    let pad = target - build(&services, 0).len();
    let p = build(&services, pad).into_bytes();
    debug_assert_eq!(p.len(), target);
    p
}

/// A `daemon_status` writer over a made-up cluster of `members` other members (each with an
/// IPv4 address, none heard), set up as a daemon runs it: a listener with two workers, the
/// supervisor's threads, an empty blacklist.
pub struct StatusFixture {
    writer: crate::handlers::daemon::StatusWriter,
}

impl StatusFixture {
    pub fn new(members: usize) -> StatusFixture {
        StatusFixture {
            writer: crate::handlers::daemon::StatusWriter::new(status_fixture_state(members)),
        }
    }

    /// Writes one answer, as the quick path does; returns its length.
    pub fn answer_len(&self) -> usize {
        self.writer.answer().encoded_data.map_or(0, |d| d.len())
    }
}

struct Unserved;

impl crate::dispatch::ShardHandler for Unserved {
    fn handle(
        &mut self,
        _: &crate::dispatch::Origin,
        _: crate::wire::Request,
    ) -> crate::dispatch::Reply {
        crate::wire::Response::error("not served").into()
    }
    fn heartbeats(&mut self, _: Vec<crate::dispatch::ReceivedHeartbeat>) {}
}

/// The state behind [`StatusFixture`].
pub(crate) fn status_fixture_state(members: usize) -> std::sync::Arc<crate::state::DaemonState> {
    use std::sync::Arc;
    let mut nodes = String::from("n00000");
    let mut sections = String::new();
    for i in 1..=members {
        nodes.push_str(&format!(" n{i:05}"));
        sections.push_str(&format!(
            "[node.n{i:05}]\naddr = 10.{}.{}.{}\n",
            i >> 16,
            (i >> 8) & 0xff,
            i & 0xff
        ));
    }
    let text = format!(
        "[node]\nnodename = n00000\n[cluster]\nname = bench\nsecret = x\nnodes = {nodes}\n\
         [listener]\naddr = 127.0.0.1\nport = 1215\n{sections}"
    );
    let path = std::path::Path::new("node.conf");
    let config = crate::config::IniDocument::parse(&text, path)
        .and_then(|doc| crate::config::NodeConfig::from_document(&doc, path))
        .unwrap_or_else(|e| panic!("the fixture's configuration: {e}"));
    let started_ms = crate::clock::now_ms().saturating_sub(3_600_000);
    let state = Arc::new(crate::state::DaemonState::unattached(config, started_ms));
    let (dispatcher, _) = crate::dispatch::Dispatcher::start(1, |_| Unserved)
        .unwrap_or_else(|e| panic!("the fixture's shards: {e}"));
    let _ = state.dispatcher.set(dispatcher.clone());
    let _ = state.shards.set(1);
    let listener = Arc::new(crate::listener::ListenerShared::new(
        crate::listener::ListenerSettings::from_node(&state.config()),
        state.guard.clone(),
        dispatcher,
        state.dequeue.clone(),
    ));
    crate::locks::exclusive(&listener.slots).extend([Arc::default(), Arc::default()]);
    *crate::locks::exclusive(&listener.running) =
        Some(("epoll", std::net::SocketAddr::from(([127, 0, 0, 1], 1215))));
    *crate::locks::exclusive(&listener.backend_reason) = Some("io_uring unavailable".into());
    let _ = state.listener.set(listener);
    {
        let mut threads = crate::locks::lock(&state.threads);
        for (i, name) in crate::daemon::supervisor::THREADS.into_iter().enumerate() {
            threads.insert(
                name,
                crate::state::ThreadStatus {
                    state: "running",
                    restarts: u32::try_from(i % 2).unwrap_or(0),
                    last_error: (i == 3).then(|| "exited: \"boom\"".into()),
                    last_error_ms: (i == 3).then_some(started_ms + 5),
                },
            );
        }
    }
    state
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hb::Heartbeat;

    #[test]
    fn heartbeats_have_the_exact_size_and_parse() {
        for size in [min_size(8), 256, 1024, 4096] {
            let p = heartbeat_payload(size, 8);
            assert_eq!(p.len() + overhead(8), size);
            let hb = Heartbeat::parse(&p).unwrap();
            assert_eq!(hb.r#gen, 1);
            let p = heartbeat_payload_at(size, 8, u64::MAX);
            assert_eq!(p.len() + overhead(8), size);
            assert_eq!(Heartbeat::parse(&p).unwrap().r#gen, u64::MAX);
        }
    }
}
