//! One TCP connection's framing as a pure state machine: the bytes received so far in, what to
//! do next out (read exactly N bytes more, close with a reason, or admit a whole frame). Both
//! listener backends drive it, and so does a fuzz target.
//!
//! PROTOCOL.md, "Transports": each frame is its length as a u32, then the frame. The header
//! is read and checked (steps 2 to 5, `Gate::check_header`) before the body: the body of a
//! frame from a banned, unknown or stale sender is never read. Until one frame of the
//! connection has authenticated, a frame longer than `max_unauth_frame` closes it.
//!
//! Reads are as few as that allows: the length prefix comes with the header's first
//! `HEADER_WITHOUT_NAME` bytes (no frame's body starts before them), and a body with the
//! next frame's prefix and first header bytes. A request then takes three reads, not five.

use super::gate::{DropReason, Gate, HeaderCheck, Outcome};
use crate::wire::frame::{HEADER_WITHOUT_NAME, head_len, header_len};

/// Length of the prefix that carries a frame's length.
pub const LEN_PREFIX: usize = 4;

/// The limits a connection is read under (from the listener's configuration).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameLimits {
    /// `listener.max_frame`.
    pub max_frame: u32,
    /// `listener.max_unauth_frame`: the bound before a frame of the connection authenticated.
    pub max_unauth_frame: u32,
}

/// Why a connection is closed without a response.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CloseReason {
    #[error("frame length 0")]
    EmptyFrame,
    #[error("frame of {len} bytes above listener.max_frame ({max})")]
    TooLong { len: u32, max: u32 },
    #[error(
        "frame of {len} bytes above listener.max_unauth_frame ({max}) before any frame authenticated"
    )]
    TooLongUnauthenticated { len: u32, max: u32 },
    #[error("header refused: {0:?}")]
    Header(DropReason),
}

/// What the driver does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Read, into a buffer of at most this many bytes in all (past them may be a body that
    /// must not be read yet), then ask again.
    Need(usize),
    /// Close the connection, without a response.
    Close(CloseReason),
    /// `buf[LEN_PREFIX..LEN_PREFIX + len]` is a whole frame whose header passed: admit it with
    /// `Gate::admit_after_header`, then call `Framer::done`.
    Frame { len: usize },
}

/// The framing state of one connection. The buffer it looks at starts at the current frame's
/// length prefix (the driver removes each frame once done).
#[derive(Clone, Debug, Default)]
pub struct Framer {
    /// A frame of this connection authenticated: the larger `max_frame` bound applies.
    authenticated: bool,
    /// The current frame's header passed `check_header`.
    header_passed: bool,
}

impl Framer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn authenticated(&self) -> bool {
        self.authenticated
    }

    /// What to do with `buf`, the bytes of the current frame received so far (from its length
    /// prefix on). Checks the header once, when it is whole.
    pub fn next(&mut self, buf: &[u8], limits: FrameLimits, gate: &mut Gate, now_ms: u64) -> Step {
        let Some(prefix) = buf.first_chunk::<LEN_PREFIX>() else {
            return Step::Need(LEN_PREFIX + HEADER_WITHOUT_NAME);
        };
        let len = u32::from_be_bytes(*prefix);
        if len == 0 {
            return Step::Close(CloseReason::EmptyFrame);
        }
        if len > limits.max_frame {
            return Step::Close(CloseReason::TooLong {
                len,
                max: limits.max_frame,
            });
        }
        if !self.authenticated && len > limits.max_unauth_frame {
            return Step::Close(CloseReason::TooLongUnauthenticated {
                len,
                max: limits.max_unauth_frame,
            });
        }
        let total = len as usize;
        let frame = &buf[LEN_PREFIX..];
        if !self.header_passed {
            // The header up to its name's length, then the whole header.
            let head = head_len(frame, total);
            if frame.len() < head {
                let header_so_far = match frame.get(2) {
                    Some(&name_len) => header_len(name_len.into()),
                    None => HEADER_WITHOUT_NAME,
                };
                return Step::Need(LEN_PREFIX + header_so_far.min(total));
            }
            match gate.check_header(&frame[..head], total, now_ms) {
                HeaderCheck::Pass => self.header_passed = true,
                HeaderCheck::Drop(reason) => return Step::Close(CloseReason::Header(reason)),
            }
        }
        if frame.len() < total {
            // With the next frame's length and the start of its header.
            return Step::Need(LEN_PREFIX + total + LEN_PREFIX + HEADER_WITHOUT_NAME);
        }
        Step::Frame { len: total }
    }

    /// The frame `next` handed out was admitted with this outcome. Returns whether the
    /// connection goes on (a frame invalid at steps 2 to 6 closes it).
    pub fn done(&mut self, outcome: &Outcome<'_>) -> bool {
        self.header_passed = false;
        match outcome {
            Outcome::Deliver { .. }
            | Outcome::Refuse { .. }
            | Outcome::Drop(DropReason::HeartbeatRefused) => {
                self.authenticated = true;
                true
            }
            Outcome::Dequeue => true,
            Outcome::Drop(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::{GateConfig, SharedGuard};
    use crate::wire::{Kind, Request, Sealer};
    use std::sync::Arc;

    const NOW: u64 = 1_764_000_000_000;
    const LIMITS: FrameLimits = FrameLimits {
        max_frame: 1 << 20,
        max_unauth_frame: 1024,
    };

    fn gate() -> Gate {
        let config = Arc::new(GateConfig {
            cluster_name: "c".into(),
            secret: "s".into(),
            alt_secret: None,
            members: ["node1".to_string()].into_iter().collect(),
            max_clock_skew_ms: 60_000,
            accept_joins: false,
            started_ms: 0,
        });
        Gate::new(config, Arc::new(SharedGuard::new(0, 20)))
    }

    fn prefixed(frame: &[u8]) -> Vec<u8> {
        let mut out = (frame.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(frame);
        out
    }

    fn request(name: &str, payload: &[u8]) -> Vec<u8> {
        let mut s = Sealer::with_salt(b"s", "c", name, [9; 16], NOW);
        let mut f = Vec::new();
        s.seal(Kind::Request, payload, NOW, &mut f).unwrap();
        f
    }

    /// Drives a framer over `stream` the way a listener does, each read taking all it is
    /// allowed to; returns the outcomes in order, the reason it closed, if it did, and how
    /// many bytes of the stream it read.
    fn drive(stream: &[u8]) -> (Vec<String>, Option<CloseReason>, usize) {
        drive_in_chunks(stream, &[])
    }

    /// As `drive`, with the stream arriving in chunks of these sizes (cycled): a read takes
    /// at most what has arrived of the current chunk.
    fn drive_in_chunks(
        stream: &[u8],
        chunks: &[usize],
    ) -> (Vec<String>, Option<CloseReason>, usize) {
        let mut g = gate();
        let mut f = Framer::new();
        let (mut buf, mut at, mut seen) = (Vec::new(), 0, Vec::new());
        let mut chunk = chunks.iter().cycle();
        loop {
            match f.next(&buf, LIMITS, &mut g, NOW) {
                Step::Need(n) => {
                    assert!(n > buf.len());
                    let arrived = chunk.next().copied().unwrap_or(usize::MAX);
                    let take = (n - buf.len()).min(stream.len() - at).min(arrived);
                    if take == 0 {
                        return (seen, None, at);
                    }
                    buf.extend_from_slice(&stream[at..at + take]);
                    at += take;
                }
                Step::Close(r) => return (seen, Some(r), at),
                Step::Frame { len } => {
                    let outcome = g.admit_after_header(&mut buf[4..4 + len], NOW);
                    seen.push(format!("{outcome:?}"));
                    let go_on = f.done(&outcome);
                    drop(outcome);
                    buf.drain(..4 + len);
                    if !go_on {
                        return (
                            seen,
                            Some(CloseReason::Header(DropReason::SessionTableFull)),
                            at,
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_stranger_s_body_is_never_read() {
        let frame = request("stranger", &[b'x'; 900]);
        let stream = prefixed(&frame);
        let (seen, close, read) = drive(&stream);
        assert!(seen.is_empty());
        assert!(matches!(close, Some(CloseReason::Header(_))), "{close:?}");
        // The prefix and the header, not one byte of the body.
        assert_eq!(read, 4 + crate::wire::frame::header_len("stranger".len()));
    }

    #[test]
    fn unauthenticated_frames_are_bounded_until_one_authenticates() {
        let big = request("node1", &vec![b' '; 2000]);
        let (seen, close, read) = drive(&prefixed(&big));
        assert!(seen.is_empty());
        assert!(matches!(
            close,
            Some(CloseReason::TooLongUnauthenticated { .. })
        ));
        // Its length, and header bytes only.
        assert_eq!(read, 4 + HEADER_WITHOUT_NAME);
        // After a small frame authenticated, the large one is read.
        let mut s = Sealer::with_salt(b"s", "c", "node1", [9; 16], NOW);
        let mut stream = Vec::new();
        for payload in [Request::DaemonStatus.to_vec(), {
            let mut p = Request::DaemonStatus.to_vec();
            p.truncate(p.len() - 1);
            p.extend(std::iter::repeat_n(b' ', 2000));
            p.push(b'}');
            p
        }] {
            let mut f = Vec::new();
            s.seal(Kind::Request, &payload, NOW, &mut f).unwrap();
            stream.extend(prefixed(&f));
        }
        let (seen, close, read) = drive(&stream);
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(seen.iter().all(|o| o.starts_with("Deliver")), "{seen:?}");
        assert_eq!((close, read), (None, stream.len()));
    }

    #[test]
    fn lengths_out_of_bounds_close() {
        assert_eq!(drive(&[0, 0, 0, 0]).1, Some(CloseReason::EmptyFrame));
        assert!(matches!(
            drive(&[0xff, 0, 0, 0]).1,
            Some(CloseReason::TooLong { .. })
        ));
        // A short stream only asks for more.
        assert_eq!(drive(&[0, 0]), (vec![], None, 2));
    }

    #[test]
    fn a_typo_is_answered_and_the_connection_goes_on() {
        let mut s = Sealer::with_salt(b"s", "c", "node1", [9; 16], NOW);
        let mut stream = Vec::new();
        for payload in [
            &br#"{"action":"no_such"}"#[..],
            &Request::DaemonStatus.to_vec(),
        ] {
            let mut f = Vec::new();
            s.seal(Kind::Request, payload, NOW, &mut f).unwrap();
            stream.extend(prefixed(&f));
        }
        let (seen, close, _) = drive(&stream);
        assert_eq!(close, None);
        assert!(seen[0].starts_with("Refuse"), "{seen:?}");
        assert!(seen[1].starts_with("Deliver"), "{seen:?}");
    }

    fn member_frames(count: usize) -> Vec<u8> {
        let mut s = Sealer::with_salt(b"s", "c", "node1", [9; 16], NOW);
        let mut stream = Vec::new();
        for _ in 0..count {
            let mut f = Vec::new();
            s.seal(Kind::Request, &Request::DaemonStatus.to_vec(), NOW, &mut f)
                .unwrap();
            stream.extend(prefixed(&f));
        }
        stream
    }

    proptest::proptest! {
        /// However the bytes arrive, frames before a stranger's are delivered, and not one
        /// byte of the stranger's body is read.
        #[test]
        fn no_byte_of_a_stranger_s_body_is_read_however_the_stream_arrives(
            before in 0usize..4,
            name_len in 1usize..48,
            body in 1usize..300,
            chunks in proptest::collection::vec(1usize..80, 0..64),
        ) {
            let mut stream = member_frames(before);
            let stranger_at = stream.len();
            let name = "x".repeat(name_len);
            stream.extend(prefixed(&request(&name, &vec![b'y'; body])));
            stream.extend(member_frames(1));
            let (seen, close, read) = drive_in_chunks(&stream, &chunks);
            proptest::prop_assert_eq!(seen.len(), before);
            proptest::prop_assert!(seen.iter().all(|o| o.starts_with("Deliver")), "{:?}", seen);
            proptest::prop_assert!(matches!(close, Some(CloseReason::Header(_))), "{:?}", close);
            proptest::prop_assert!(read <= stranger_at + 4 + header_len(name_len));
        }

        /// However the bytes arrive, every frame of a member is delivered, and the stream
        /// read to its end.
        #[test]
        fn every_frame_is_delivered_however_the_stream_arrives(
            count in 1usize..6,
            chunks in proptest::collection::vec(1usize..80, 0..64),
        ) {
            let stream = member_frames(count);
            let (seen, close, read) = drive_in_chunks(&stream, &chunks);
            proptest::prop_assert_eq!(seen.len(), count);
            proptest::prop_assert!(seen.iter().all(|o| o.starts_with("Deliver")), "{:?}", seen);
            proptest::prop_assert_eq!((close, read), (None, stream.len()));
        }
    }
}
