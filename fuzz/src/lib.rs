//! The fuzz targets' bodies, one function per target, shared with the main crate's
//! `tests/wire.rs` (it includes this file with `#[path]`, and its `fuzz_regressions` test runs
//! every file of `fuzz/regressions/` through all of them). Each function panics if and only if
//! it finds a bug: every `assert!` here is an invariant of the library, not of the input.
//!
//! Also the source of the committed seed corpus (`seeds()`, written by the ignored test
//! `write_fuzz_seeds` in tests/wire.rs).

use std::collections::HashSet;
use std::sync::Arc;

use osvc_agent::internals::guard::conn::LEN_PREFIX;
use osvc_agent::internals::guard::{
    CloseReason, DropReason, FrameLimits, Framer, Gate, GateConfig, Invalid, Message, Outcome,
    SharedGuard, Step,
};
use osvc_agent::internals::hb::Heartbeat;
use osvc_agent::internals::wire::frame::{EncodeError, HEADER_WITHOUT_NAME, TAG_LEN, header_len};
use osvc_agent::internals::wire::json;
use osvc_agent::internals::wire::local::{self, LocalStep};
use osvc_agent::internals::wire::payload::{ACTIONS, parse_request, valid_svcname};
use osvc_agent::internals::wire::{
    FrameView, Header, Kind, Request, RequestParser, Response, Sealer, SessionKey, Stale,
};

/// The receiver every target runs: fixed secret, cluster, members and clock, so that a crasher
/// replays the same way anywhere.
pub const SECRET: &str = "fuzz secret";
pub const CLUSTER: &str = "fuzzc";
pub const MEMBERS: [&str; 2] = ["node1", "node2"];
/// A nodename that is not a member: only its join requests may be delivered.
pub const STRANGER: &str = "node9";
pub const NOW_MS: u64 = 1_764_000_000_000;
pub const MAX_SKEW_MS: u64 = 60_000;
/// The receiver started within the skew before now: frames stamped in between are refused.
pub const STARTED_MS: u64 = NOW_MS - MAX_SKEW_MS / 2;
pub const SALT: [u8; 16] = *b"fuzz-salt-16byte";

pub fn gate_config() -> GateConfig {
    GateConfig {
        cluster_name: CLUSTER.to_owned(),
        secret: SECRET.to_owned(),
        alt_secret: None,
        members: MEMBERS
            .iter()
            .map(|m| m.to_string())
            .collect::<HashSet<_>>(),
        max_clock_skew_ms: MAX_SKEW_MS,
        accept_joins: true,
        started_ms: STARTED_MS,
    }
}

/// A fresh receiver. `join_rate` is 1 per second so that the second non-member frame of one
/// input reaches the rate limit.
pub fn new_gate() -> (Gate, Arc<SharedGuard>) {
    let shared = Arc::new(SharedGuard::new(600_000, 1));
    (Gate::new(Arc::new(gate_config()), shared.clone()), shared)
}

/// The first frame of a session, sealed as a peer of the fuzzed receiver would seal it.
pub fn seal(nodename: &str, kind: Kind, payload: &[u8]) -> Result<Vec<u8>, EncodeError> {
    let mut sender = Sealer::with_salt(SECRET.as_bytes(), CLUSTER, nodename, SALT, NOW_MS);
    let mut out = Vec::new();
    sender.seal(kind, payload, NOW_MS, &mut out)?;
    Ok(out)
}

/// A frame of the session `seal` starts, with any counter.
pub fn seal_at(
    nodename: &str,
    kind: Kind,
    payload: &[u8],
    counter: u64,
) -> Result<Vec<u8>, EncodeError> {
    let header = Header {
        kind,
        nodename,
        salt: &SALT,
        ts_ms: NOW_MS,
        counter,
    };
    let mut out = Vec::new();
    SessionKey::derive(SECRET.as_bytes(), CLUSTER, nodename, &SALT)
        .seal_frame(&header, payload, &mut out)?;
    Ok(out)
}

/// Target `frame_view`: the header parser on arbitrary bytes, and every accessor when it
/// parses.
pub fn frame_view(data: &[u8]) {
    match FrameView::parse(data) {
        Ok(v) => {
            let name = v.nodename();
            assert!((1..=255).contains(&name.len()));
            assert_eq!(data[2] as usize, name.len());
            assert_eq!(&data[3..3 + name.len()], name.as_bytes());
            assert_eq!(v.kind() as u8, data[1]);
            let hl = v.header_len();
            assert_eq!(hl, header_len(name.len()));
            assert!(v.payload_len() >= 1);
            assert_eq!(hl + v.payload_len() + TAG_LEN, data.len());
            assert_eq!(v.aad(), &data[..hl]);
            assert_eq!(v.sealed(), &data[hl..]);
            assert_eq!(v.as_bytes(), data);
            assert_eq!(FrameView::nodename_of(v.aad()), Some(name));
            // Encoding the fields read gives back the header byte for byte.
            let mut header = Vec::new();
            let written = Header {
                kind: v.kind(),
                nodename: name,
                salt: v.salt(),
                ts_ms: v.ts_ms(),
                counter: v.counter(),
            }
            .write(&mut header)
            .expect("a parsed header must encode");
            assert_eq!(written, hl);
            assert_eq!(header, v.aad());
            let _ = format!("{v:?}");
        }
        Err(failure) => {
            if let Some(name) = failure.nodename {
                assert_eq!(data[2] as usize, name.len());
                assert_eq!(&data[3..3 + name.len()], name.as_bytes());
            }
            let _ = failure.error.to_string();
        }
    }
}

/// Target `receive_path`: the input as a whole frame, then as the payload of frames sealed
/// correctly, so that the fuzzer reaches the JSON parsers through decryption.
pub fn receive_path(data: &[u8]) {
    receive_raw(data);
    receive_sealed(data);
}

/// The nodename a receiver can read from `data`, if any (PROTOCOL.md step 2).
fn readable_nodename(data: &[u8]) -> Option<&str> {
    match FrameView::parse(data) {
        Ok(v) => Some(v.nodename()),
        Err(f) => f.nodename,
    }
}

/// Arbitrary bytes through `Gate::admit`, twice (the second time is a replay: it reaches the
/// replay window, the key cache and the join rate limit with state left by the first).
pub fn receive_raw(data: &[u8]) {
    let (mut gate, shared) = new_gate();
    let mut buf = data.to_vec();
    let first = gate.admit(&mut buf, NOW_MS);
    check_outcome(data, &first);
    let first_invalid = matches!(first, Outcome::Drop(DropReason::Invalid(_)));
    let decrypted = gate.stats().decrypted;
    drop(first);

    // Invalid frames count for the nodename they carry, and only for it, and only if it is a
    // member's.
    let name = readable_nodename(data);
    let status = shared.blacklist.status(NOW_MS);
    match name {
        Some(n) if first_invalid && MEMBERS.contains(&n) => {
            assert_eq!(status.len(), 1);
            assert_eq!(status.get(n), Some(&1));
        }
        _ => assert!(status.is_empty(), "{status:?}"),
    }

    let mut again = data.to_vec();
    let second = gate.admit(&mut again, NOW_MS);
    check_outcome(data, &second);
    if decrypted == 1 {
        // The first copy authenticated: its counter is spent, and a non-member's second frame
        // within the second is beyond the join rate (1 per second here).
        let expected = if name.is_some_and(|n| MEMBERS.contains(&n)) {
            DropReason::Invalid(Invalid::Stale(Stale::Replayed))
        } else {
            DropReason::JoinRateLimited
        };
        assert_eq!(second, Outcome::Drop(expected));
    }
    assert!(!matches!(second, Outcome::Deliver { .. }));
    drop(second);

    let s = gate.stats();
    assert_eq!(s.received, 2);
    assert_eq!(s.received, s.fates());
    assert!(s.delivered <= s.decrypted);
    assert_eq!(s.dropped_blacklisted, 0, "two invalid frames cannot ban");
}

/// What any outcome of `admit(data)` must satisfy.
fn check_outcome(data: &[u8], outcome: &Outcome<'_>) {
    match outcome {
        Outcome::Dequeue => assert!(data.is_empty()),
        Outcome::Drop(_) => assert!(!data.is_empty()),
        Outcome::Deliver { nodename, message } => {
            // Delivered: the frame authenticates under the cluster's key for that nodename,
            // from a member or as a join, and its payload parses to the same message.
            let view = FrameView::parse(data).expect("a delivered frame has a header");
            assert_eq!(view.nodename(), *nodename);
            assert!(
                MEMBERS.contains(nodename) || *message == Message::Request(Request::Join),
                "{nodename} is not a member"
            );
            let key = SessionKey::derive(SECRET.as_bytes(), CLUSTER, nodename, view.salt());
            let mut copy = data.to_vec();
            let range = key
                .open_in_place(&mut copy)
                .expect("a delivered frame must authenticate");
            let payload = &mut copy[range];
            let reparsed = match view.kind() {
                Kind::Request => parse_request(payload)
                    .map(Message::Request)
                    .map_err(|e| e.to_string()),
                Kind::Heartbeat => Heartbeat::parse(payload)
                    .map(|heartbeat| Message::Heartbeat {
                        sender: (*nodename).into(),
                        heartbeat,
                    })
                    .map_err(|e| e.to_string()),
                other => panic!("delivered a frame of kind {other:?}"),
            };
            assert_eq!(reparsed.as_ref(), Ok(message));
            assert!(view.ts_ms().abs_diff(NOW_MS) <= MAX_SKEW_MS);
            assert!(view.ts_ms() >= STARTED_MS);
        }
        Outcome::Refuse { nodename, error } => {
            // Refused: an authenticated request that does not parse, or a non-member's that
            // is not a join.
            let view = FrameView::parse(data).expect("a refused frame has a header");
            assert_eq!(view.nodename(), *nodename);
            assert_eq!(view.kind(), Kind::Request);
            assert!(!error.is_empty());
            let key = SessionKey::derive(SECRET.as_bytes(), CLUSTER, nodename, view.salt());
            let mut copy = data.to_vec();
            let range = key
                .open_in_place(&mut copy)
                .expect("a refused frame must authenticate");
            if let Ok(r) = parse_request(&copy[range]) {
                assert!(!MEMBERS.contains(nodename) && r != Request::Join);
            }
        }
    }
}

/// The input as a payload, sealed as a request from a member, a heartbeat from a member and a
/// request from a non-member: the outcome must be exactly what the payload parsers say.
pub fn receive_sealed(data: &[u8]) {
    let (mut gate, shared) = new_gate();
    // A small request first, so that the parser's reused buffers must grow for a larger
    // payload.
    let mut warm = seal(MEMBERS[0], Kind::Request, br#"{"action":"daemon_status"}"#)
        .expect("seal a small request");
    assert_eq!(
        gate.admit(&mut warm, NOW_MS + 1),
        Outcome::Deliver {
            nodename: MEMBERS[0],
            message: Message::Request(Request::DaemonStatus)
        }
    );
    let cases = [
        (MEMBERS[1], Kind::Request, 0),
        (MEMBERS[1], Kind::Heartbeat, 1),
        (STRANGER, Kind::Request, 0),
    ];
    for (nodename, kind, counter) in cases {
        let mut frame = match seal_at(nodename, kind, data, counter) {
            Ok(f) => f,
            Err(e) => {
                assert!(data.is_empty(), "seal failed: {e}");
                assert_eq!(e, EncodeError::EmptyPayload);
                return;
            }
        };
        let copy = data.to_vec();
        let parsed = match kind {
            Kind::Request => parse_request(&copy)
                .map(Message::Request)
                .map_err(|e| e.to_string()),
            _ => Heartbeat::parse(&copy)
                .map(|heartbeat| Message::Heartbeat {
                    sender: nodename.into(),
                    heartbeat,
                })
                .map_err(|e| e.to_string()),
        };
        let member = MEMBERS.contains(&nodename);
        // Step 7: whatever an authenticated payload says, it is not an invalid message.
        let expected = match parsed {
            Ok(m) if member || m == Message::Request(Request::Join) => Outcome::Deliver {
                nodename,
                message: m,
            },
            Ok(_) => Outcome::Refuse {
                nodename,
                error: "not a cluster member: only a join is accepted".into(),
            },
            Err(e) if kind == Kind::Request => Outcome::Refuse {
                nodename,
                error: e.to_string(),
            },
            Err(_) => Outcome::Drop(DropReason::HeartbeatRefused),
        };
        assert_eq!(gate.admit(&mut frame, NOW_MS), expected);
        let status = shared.blacklist.status(NOW_MS);
        assert!(status.is_empty(), "{nodename}: {status:?}");
    }
}

/// Target `request_parser`: `parse_request` on arbitrary bytes. A request that parses must
/// encode and parse back to itself, and a reused parser must agree with a fresh one. The
/// response and heartbeat parsers get the same bytes (no panic is all they promise).
pub fn request_parser(data: &[u8]) {
    let parsed = parse_request(data);
    let mut parser = RequestParser::new();
    let _ = parser.parse(br#"{"action":"leave"}"#);
    assert_eq!(parser.parse(data), parsed);
    match parsed {
        Ok(request) => {
            assert!(ACTIONS.contains(&request.action()));
            if let Some(svc) = request.svcname() {
                assert_eq!(valid_svcname(svc), Ok(()));
            }
            let encoded = request.to_vec();
            assert_eq!(parse_request(&encoded), Ok(request));
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    let _ = Response::parse(&mut data.to_vec());
    let _ = Heartbeat::parse(data);
}

/// Target `json_scanner`: the strict JSON scanner against serde_json, the reference it
/// promises to match. A document is valid for one exactly when it is for the other, and a
/// valid one reads the same through the scanner as through serde_json. What the heartbeat
/// parser accepts is valid JSON, and its raw values are too.
pub fn json_scanner(data: &[u8]) {
    let reference = serde_json::from_slice::<serde_json::Value>(data);
    let mine = json::validate(data);
    assert_eq!(
        mine.is_ok(),
        reference.is_ok(),
        "scanner: {mine:?}, serde_json: {reference:?}"
    );
    if let Ok(expected) = reference {
        let mut s = json::Scanner::new(data);
        let read = reread(&mut s).and_then(|v| s.end().map(|()| v));
        assert_eq!(read.ok(), Some(expected));
    }
    if let Ok(hb) = Heartbeat::parse(data) {
        assert!(json::validate(data).is_ok());
        assert!(json::validate(hb.monitor().as_str().as_bytes()).is_ok());
        for (_, v) in hb.services() {
            assert!(json::validate(v.as_str().as_bytes()).is_ok());
        }
        // Written back and read again, it is what serde_json reads of the same text (not
        // always the first value: serde_json's float parsing does not round-trip exactly).
        let again = serde_json::to_vec(&hb.to_value()).expect("a value encodes");
        let reread = Heartbeat::parse(&again).expect("a heartbeat written back reads");
        assert_eq!(
            Ok(reread.to_value()),
            serde_json::from_slice::<serde_json::Value>(&again).map_err(|e| e.to_string())
        );
        assert_eq!(
            (reread.r#gen, reread.since, reread.boot, reread.part),
            (hb.r#gen, hb.since, hb.boot, hb.part)
        );
        // The same services (in name order: `to_value` writes them sorted).
        let names = |h: &Heartbeat| {
            let mut n: Vec<String> = h.services().map(|(n, _)| n.to_owned()).collect();
            n.sort();
            n
        };
        assert_eq!(names(&reread), names(&hb));
        // Any payload reads the same knowing this heartbeat as its sender's last as alone.
        let mut next = data.to_vec();
        if let Some(&first) = data.first() {
            next.rotate_left(usize::from(first) % data.len());
        }
        for next in [&next[..], &data[data.len() / 2..], data] {
            assert_eq!(
                Heartbeat::parse_after(next, Some(&hb)),
                Heartbeat::parse(next)
            );
        }
    }
}

/// The document as the scanner reads it, as a serde_json value.
fn reread(s: &mut json::Scanner<'_>) -> Result<serde_json::Value, json::Fail> {
    use serde_json::Value;
    Ok(match s.peek()? {
        json::Peek::Object => {
            let mut map = serde_json::Map::new();
            let mut seq = s.begin_object()?;
            while let Some(k) = s.next_key(&mut seq)? {
                let v = reread(s)?;
                map.insert(k.value().into_owned(), v);
            }
            Value::Object(map)
        }
        json::Peek::Array => {
            let mut list = Vec::new();
            let mut seq = s.begin_array()?;
            while s.next_element(&mut seq)? {
                list.push(reread(s)?);
            }
            Value::Array(list)
        }
        json::Peek::String => Value::String(s.string()?.value().into_owned()),
        _ => {
            let span = s.skip_span()?;
            serde_json::from_slice(&s.buffer()[span]).expect("a scanned scalar is JSON")
        }
    })
}

/// The TCP limits of the fuzzed connections: small, so that inputs reach them.
pub const TCP_LIMITS: FrameLimits = FrameLimits {
    max_frame: 4096,
    max_unauth_frame: 512,
};

/// Target `tcp_conn`: one TCP connection's byte stream through the framing state machine and
/// the receive gate, as a listener drives them. The first byte sets how many bytes one read
/// returns at most (1 to 256), the rest is the stream. Checks what the listener relies on:
/// reads never go past what the framer asks for, so the body of a frame whose header is
/// refused is never read; before a frame authenticated no frame above `max_unauth_frame` is
/// read; every frame handed out is whole; every received frame has one fate.
pub fn tcp_conn(data: &[u8]) {
    tcp_conn_stats(data);
}

/// `tcp_conn`, returning the receiver's counters.
pub fn tcp_conn_stats(data: &[u8]) -> osvc_agent::internals::guard::GateStats {
    let Some((&chunk, stream)) = data.split_first() else {
        return Default::default();
    };
    let chunk = usize::from(chunk) + 1;
    let (mut gate, _) = new_gate();
    let mut framer = Framer::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut at = 0;
    // Bounded: every step reads at least one byte or ends a frame or the connection.
    for _ in 0..=2 * stream.len() + 2 {
        let authenticated = framer.authenticated();
        match framer.next(&buf, TCP_LIMITS, &mut gate, NOW_MS) {
            Step::Need(want) => {
                assert!(want > buf.len(), "no progress: {want} <= {}", buf.len());
                let bound = if authenticated {
                    TCP_LIMITS.max_frame
                } else {
                    TCP_LIMITS.max_unauth_frame
                };
                // A frame within its bound, and the next one's first header bytes at most.
                assert!(want <= LEN_PREFIX + bound as usize + LEN_PREFIX + HEADER_WITHOUT_NAME);
                let take = (want - buf.len()).min(chunk).min(stream.len() - at);
                if take == 0 {
                    break;
                }
                buf.extend_from_slice(&stream[at..at + take]);
                at += take;
            }
            Step::Close(reason) => {
                if let CloseReason::Header(_) = reason {
                    // Only the prefix and at most a whole header of the frame were read.
                    assert!(buf.len() <= LEN_PREFIX + header_len(255), "{}", buf.len());
                    let len = u32::from_be_bytes(buf[..4].try_into().expect("prefix")) as usize;
                    assert!(buf.len() < LEN_PREFIX + len || len <= header_len(255));
                }
                break;
            }
            Step::Frame { len } => {
                // Past the frame: at most the next one's length and first header bytes.
                let end = LEN_PREFIX + len;
                assert!(
                    buf.len() <= end + LEN_PREFIX + HEADER_WITHOUT_NAME,
                    "read past the frame"
                );
                let frame = buf[LEN_PREFIX..end].to_vec();
                let outcome = gate.admit_after_header(&mut buf[LEN_PREFIX..end], NOW_MS);
                if let Outcome::Deliver { .. } | Outcome::Refuse { .. } = outcome {
                    check_outcome(&frame, &outcome);
                }
                let go_on = framer.done(&outcome);
                drop(outcome);
                buf.drain(..end);
                if !go_on {
                    break;
                }
            }
        }
    }
    let s = gate.stats().clone();
    assert_eq!(s.received, s.fates(), "{s:?}");
    assert!(s.delivered <= s.decrypted);
    s
}

/// Target `unix_request`: a local connection's byte stream through the unix socket's request
/// path. Every whole frame is answered: a request that parses encodes back to itself, any
/// other payload gets an error response that names the problem and encodes as JSON with a
/// non-zero status.
pub fn unix_request(data: &[u8]) {
    let mut parser = RequestParser::new();
    let mut rest = data;
    loop {
        match local::next(rest) {
            LocalStep::Need(want) => {
                assert!(want > rest.len());
                break;
            }
            LocalStep::Close => {
                let len = u32::from_be_bytes(rest[..4].try_into().expect("prefix")) as usize;
                assert!(len == 0 || len > local::MAX_LOCAL_FRAME);
                break;
            }
            LocalStep::Frame { end } => {
                let payload = &rest[local::LEN_PREFIX..end];
                match local::read_request(&mut parser, payload) {
                    Ok(request) => assert_eq!(parse_request(&request.to_vec()), Ok(request)),
                    Err(response) => {
                        assert_ne!(response.status, 0);
                        assert!(response.error.as_ref().is_some_and(|e| !e.is_empty()));
                        let encoded = local::encode_response(&response);
                        let body: serde_json::Value = serde_json::from_slice(&encoded[4..])
                            .expect("an error response is JSON");
                        assert_eq!(body["status"], response.status);
                        assert_eq!(
                            u32::from_be_bytes(encoded[..4].try_into().expect("prefix")) as usize,
                            encoded.len() - 4
                        );
                    }
                }
                rest = &rest[end..];
            }
        }
    }
}

/// A frame with its TCP length prefix.
fn prefixed(frame: &[u8]) -> Vec<u8> {
    let mut out = (frame.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(frame);
    out
}

/// The committed seed corpus: (target, file name, bytes). Frames are sealed for the fixed
/// receiver above, so they decrypt there.
pub fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let sealed = |name: &str, kind, payload: &[u8]| seal(name, kind, payload).expect("seal seed");
    let requests: [(&str, Request); 6] = [
        ("daemon_status.json", Request::DaemonStatus),
        ("join.json", Request::Join),
        (
            "set_service_monitor.json",
            Request::SetServiceMonitor {
                svcname: "svc1".into(),
                status: Some(osvc_agent::internals::wire::payload::ServiceMonitorStatus::Idle),
                local_expect: Some(
                    osvc_agent::internals::wire::payload::ServiceLocalExpect::Started,
                ),
                global_expect: Some(osvc_agent::internals::wire::payload::GlobalExpect::Frozen),
                reset_retries: true,
            },
        ),
        (
            "set_node_monitor.json",
            Request::SetNodeMonitor {
                status: Some(osvc_agent::internals::wire::payload::NodeMonitorStatus::Freezing),
                local_expect: None,
            },
        ),
        (
            "service_action.json",
            Request::ServiceAction {
                svcname: "svc1".into(),
                command: ["start", "--rid", "fs#1"].into(),
                sync: false,
            },
        ),
        (
            "service_logs.json",
            Request::ServiceLogs {
                svcname: "svc-2.db".into(),
                backlog: Some(1000),
                follow: true,
            },
        ),
    ];
    let heartbeat =
        br#"{"gen":12,"monitor":{"status":"idle"},"services":{"svc1":{"avail":"up","n":[1,2.5,null,true]}}}"#;
    let mut out = Vec::new();
    for (file, r) in &requests {
        out.push(("request_parser", *file, r.to_vec()));
    }
    out.push((
        "receive_path",
        "frame_request.bin",
        sealed(MEMBERS[0], Kind::Request, &requests[2].1.to_vec()),
    ));
    out.push((
        "receive_path",
        "frame_heartbeat.bin",
        sealed(MEMBERS[1], Kind::Heartbeat, heartbeat),
    ));
    out.push((
        "receive_path",
        "frame_join.bin",
        sealed(STRANGER, Kind::Request, &Request::Join.to_vec()),
    ));
    out.push((
        "receive_path",
        "payload_request.json",
        requests[4].1.to_vec(),
    ));
    out.push(("receive_path", "payload_heartbeat.json", heartbeat.to_vec()));
    out.push(("json_scanner", "heartbeat.json", heartbeat.to_vec()));
    out.push((
        "json_scanner",
        "escapes_numbers.json",
        br#" {"a\u00e9\ud83d\ude00": [-0.5e+3, 18446744073709551616, true, null, "\"\\\/\b\f\n\r\t"], "": {}} "#
            .to_vec(),
    ));
    out.push((
        "frame_view",
        "frame_request.bin",
        sealed(MEMBERS[0], Kind::Request, &Request::DaemonStatus.to_vec()),
    ));
    out.push((
        "frame_view",
        "frame_long_name.bin",
        sealed(&"é".repeat(127), Kind::Heartbeat, b"{}"),
    ));
    // TCP streams: the first byte is the read size less one.
    let mut member = vec![255];
    member.extend(prefixed(&sealed(
        MEMBERS[0],
        Kind::Request,
        br#"{"action":"no_such_action"}"#,
    )));
    member.extend(prefixed(
        &seal_at(MEMBERS[0], Kind::Request, &requests[4].1.to_vec(), 1).expect("seal seed"),
    ));
    out.push(("tcp_conn", "member_two_requests.bin", member));
    let mut stranger = vec![7];
    stranger.extend(prefixed(&sealed(STRANGER, Kind::Heartbeat, heartbeat)));
    out.push(("tcp_conn", "stranger_heartbeat.bin", stranger));
    let mut join = vec![0];
    join.extend(prefixed(&sealed(
        STRANGER,
        Kind::Request,
        &Request::Join.to_vec(),
    )));
    out.push(("tcp_conn", "join_byte_by_byte.bin", join));
    out.push(("tcp_conn", "too_long.bin", vec![255, 0, 0, 2, 1, 1, 1, 5]));
    let mut local = Vec::new();
    for (_, r) in &requests {
        local.extend(prefixed(&r.to_vec()));
    }
    local.extend(prefixed(
        br#"{"action":"daemon_stop","options":{"thread":"x"}}"#,
    ));
    out.push(("unix_request", "requests.bin", local));
    out.push((
        "unix_request",
        "too_long.bin",
        vec![0xff, 0xff, 0xff, 0xff, b'{'],
    ));
    out
}
