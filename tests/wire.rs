//! The full receive path (PROTOCOL.md, "Validation order on receipt"): frames built by `Sealer`
//! and `SessionKey` (or by hand when malformed) through `Gate::admit`, asserting the exact
//! outcome, the blacklist and the gate's counters. Also the fuzz targets' regression cases
//! (`fuzz_regressions`) and their seed corpus.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use osvc_agent::internals::guard::{
    DropReason, Gate, GateConfig, Invalid, InvalidClass, Message, Notice, Outcome, SharedGuard,
};
use osvc_agent::internals::hb::Heartbeat;
use osvc_agent::internals::wire::frame::{EncodeError, TAG_LEN, header_len};
use osvc_agent::internals::wire::payload::PayloadError;
use osvc_agent::internals::wire::replay::WINDOW;
use osvc_agent::internals::wire::{
    FrameView, Header, HeaderError, Kind, Request, Sealer, SessionKey, Stale,
};
use proptest::prelude::*;

/// The fuzz targets' bodies: `fuzz_regressions` replays crashers through exactly this code.
#[path = "../fuzz/src/lib.rs"]
#[allow(unreachable_pub)] // pub for the fuzz crate, private here
mod fuzz_harness;

const SECRET: &[u8] = b"s3cret s3cret";
const CLUSTER: &str = "prod";
const NOW: u64 = 1_764_000_000_000;
const SKEW: u64 = 60_000;
const TTL: u64 = 600_000;
const JOIN_RATE: u32 = 20;

struct Rig {
    gate: Gate,
    shared: Arc<SharedGuard>,
}

fn config(members: &[&str]) -> GateConfig {
    GateConfig {
        cluster_name: CLUSTER.to_owned(),
        secret: String::from_utf8(SECRET.to_vec()).unwrap(),
        alt_secret: None,
        members: members
            .iter()
            .map(|m| m.to_string())
            .collect::<HashSet<_>>(),
        max_clock_skew_ms: SKEW,
        accept_joins: true,
        started_ms: 0,
    }
}

fn rig_with(config: GateConfig, ttl_ms: u64, join_rate: u32) -> Rig {
    let shared = Arc::new(SharedGuard::new(ttl_ms, join_rate));
    Rig {
        gate: Gate::new(Arc::new(config), shared.clone()),
        shared,
    }
}

fn rig(members: &[&str]) -> Rig {
    rig_with(config(members), TTL, JOIN_RATE)
}

impl Rig {
    fn admit(&mut self, mut frame: Vec<u8>) -> Outcome<'static> {
        self.admit_at(&mut frame, NOW)
    }

    /// Admits at `now_ms`; the outcome is detached from the buffer so callers can keep it.
    fn admit_at(&mut self, frame: &mut [u8], now_ms: u64) -> Outcome<'static> {
        let outcome = match self.gate.admit(frame, now_ms) {
            Outcome::Dequeue => Outcome::Dequeue,
            Outcome::Drop(r) => Outcome::Drop(r),
            Outcome::Deliver { nodename, message } => Outcome::Deliver {
                nodename: Box::leak(nodename.to_owned().into_boxed_str()),
                message,
            },
            Outcome::Refuse { nodename, error } => Outcome::Refuse {
                nodename: Box::leak(nodename.to_owned().into_boxed_str()),
                error,
            },
        };
        self.check_stats();
        outcome
    }

    /// Every received frame has exactly one fate.
    fn check_stats(&self) {
        let s = self.gate.stats();
        assert_eq!(s.received, s.fates(), "{s:?}");
        assert!(s.delivered <= s.decrypted, "{s:?}");
    }

    fn status(&self) -> BTreeMap<String, u32> {
        self.shared.blacklist.status(NOW)
    }

    fn invalid_count(&self, class: InvalidClass) -> u64 {
        self.gate.stats().invalid[class as usize]
    }
}

fn counts(entries: &[(&str, u32)]) -> BTreeMap<String, u32> {
    entries.iter().map(|(n, c)| (n.to_string(), *c)).collect()
}

fn salt_for(nodename: &str) -> [u8; 16] {
    let mut salt = [0x5a; 16];
    for (i, b) in nodename.bytes().enumerate() {
        salt[i % 16] ^= b;
    }
    salt
}

fn sender(nodename: &str) -> Sealer {
    Sealer::with_salt(SECRET, CLUSTER, nodename, salt_for(nodename), NOW)
}

fn seal(s: &mut Sealer, kind: Kind, payload: &[u8]) -> Vec<u8> {
    seal_at(s, kind, payload, NOW)
}

fn seal_at(s: &mut Sealer, kind: Kind, payload: &[u8], now_ms: u64) -> Vec<u8> {
    let mut out = Vec::new();
    s.seal(kind, payload, now_ms, &mut out).unwrap();
    out
}

fn request(s: &mut Sealer, r: &Request) -> Vec<u8> {
    seal(s, Kind::Request, &r.to_vec())
}

/// A frame with any header fields, sealed under `secret`.
fn frame_with(secret: &[u8], cluster: &str, header: Header<'_>, payload: &[u8]) -> Vec<u8> {
    let key = SessionKey::derive(secret, cluster, header.nodename, header.salt);
    let mut out = Vec::new();
    key.seal_frame(&header, payload, &mut out).unwrap();
    out
}

/// A request frame of node `nodename`'s usual session (the one `sender()` uses), at `counter`.
fn request_at(nodename: &str, counter: u64, ts_ms: u64) -> Vec<u8> {
    let salt = salt_for(nodename);
    let header = Header {
        kind: Kind::Request,
        nodename,
        salt: &salt,
        ts_ms,
        counter,
    };
    frame_with(SECRET, CLUSTER, header, &Request::DaemonStatus.to_vec())
}

fn delivered(nodename: &'static str, message: Message) -> Outcome<'static> {
    Outcome::Deliver { nodename, message }
}

fn delivered_request(nodename: &'static str, r: Request) -> Outcome<'static> {
    delivered(nodename, Message::Request(r))
}

fn invalid(reason: Invalid) -> Outcome<'static> {
    Outcome::Drop(DropReason::Invalid(reason))
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// One invalid frame through a fresh receiver with members node1 and node2: the exact
/// outcome, which nodename it was charged to, its counter, and whether it was decrypted.
fn assert_invalid(
    frame: Vec<u8>,
    expected: Invalid,
    charged_to: Option<&str>,
    class: InvalidClass,
    decrypted: u64,
) {
    let mut r = rig(&["node1", "node2"]);
    assert_eq!(r.admit(frame), invalid(expected));
    match charged_to {
        Some(n) => assert_eq!(r.status(), counts(&[(n, 1)])),
        None => assert!(r.status().is_empty(), "{:?}", r.status()),
    }
    assert_eq!(r.invalid_count(class), 1);
    assert_eq!(r.gate.stats().invalid_total(), 1);
    assert_eq!(r.gate.stats().decrypted, decrypted);
    assert_eq!(r.gate.stats().delivered, 0);
}

fn valid_frame() -> Vec<u8> {
    request(&mut sender("node1"), &Request::DaemonStatus)
}

// ---------------------------------------------------------------------------------------
// Step 1: empty packet.

#[test]
fn empty_packet_dequeues() {
    let mut r = rig(&["node1"]);
    assert_eq!(r.admit(Vec::new()), Outcome::Dequeue);
    assert_eq!(r.admit(Vec::new()), Outcome::Dequeue);
    let s = r.gate.stats();
    assert_eq!((s.received, s.dequeues, s.invalid_total()), (2, 2, 0));
    assert!(r.status().is_empty());
}

// ---------------------------------------------------------------------------------------
// Step 2: header. Charged to a nodename only where one could be read.

#[test]
fn too_short() {
    for short in [vec![1], vec![1, 1]] {
        assert_invalid(
            short,
            Invalid::Header(HeaderError::TooShort),
            None,
            InvalidClass::Header,
            0,
        );
    }
    // The nodename is readable but the salt, ts, counter and tag are not all there.
    let f = valid_frame();
    let cut = header_len(5) + TAG_LEN - 1;
    assert_invalid(
        f[..cut].to_vec(),
        Invalid::Header(HeaderError::TooShort),
        Some("node1"),
        InvalidClass::Header,
        0,
    );
}

#[test]
fn bad_version() {
    let mut f = valid_frame();
    f[0] = 2;
    assert_invalid(
        f,
        Invalid::Header(HeaderError::BadVersion(2)),
        None,
        InvalidClass::Header,
        0,
    );
}

#[test]
fn bad_kind() {
    for k in [0u8, 5, 0xff] {
        let mut f = valid_frame();
        f[1] = k;
        assert_invalid(
            f,
            Invalid::Header(HeaderError::BadKind(k)),
            None,
            InvalidClass::Header,
            0,
        );
    }
}

#[test]
fn name_len_past_the_end() {
    let mut f = valid_frame();
    assert!(f.len() < 3 + 255);
    f[2] = 255;
    assert_invalid(
        f,
        Invalid::Header(HeaderError::NameLenPastEnd),
        None,
        InvalidClass::Header,
        0,
    );
    // Exactly one byte short of the name.
    let f = valid_frame();
    assert_invalid(
        f[..3 + 4].to_vec(),
        Invalid::Header(HeaderError::NameLenPastEnd),
        None,
        InvalidClass::Header,
        0,
    );
}

#[test]
fn empty_or_non_utf8_nodename() {
    let mut f = valid_frame();
    f[2] = 0;
    assert_invalid(
        f,
        Invalid::Header(HeaderError::EmptyName),
        None,
        InvalidClass::Header,
        0,
    );
    let mut f = valid_frame();
    f[3] = 0xff;
    assert_invalid(
        f,
        Invalid::Header(HeaderError::NameNotUtf8),
        None,
        InvalidClass::Header,
        0,
    );
}

#[test]
fn empty_payload() {
    // A header and a tag, nothing between: the encoder refuses to build it, so by hand.
    let salt = salt_for("node1");
    let mut f = Vec::new();
    Header {
        kind: Kind::Request,
        nodename: "node1",
        salt: &salt,
        ts_ms: NOW,
        counter: 0,
    }
    .write(&mut f)
    .unwrap();
    f.extend_from_slice(&[0u8; TAG_LEN]);
    assert_invalid(
        f,
        Invalid::Header(HeaderError::EmptyPayload),
        Some("node1"),
        InvalidClass::Header,
        0,
    );
    let mut out = Vec::new();
    assert!(
        sender("node1")
            .seal(Kind::Request, b"", NOW, &mut out)
            .is_err()
    );
}

#[test]
fn responses_and_stream_chunks_are_not_received() {
    for kind in [Kind::Response, Kind::StreamChunk] {
        let f = seal(&mut sender("node1"), kind, br#"{"status":0}"#);
        assert_invalid(
            f,
            Invalid::UnexpectedKind(kind),
            Some("node1"),
            InvalidClass::Kind,
            0,
        );
    }
}

// ---------------------------------------------------------------------------------------
// Steps 5 and 6: freshness, authentication.

#[test]
fn wrong_secret() {
    let mut s = Sealer::with_salt(b"not the secret", CLUSTER, "node1", [1; 16], NOW);
    let f = request(&mut s, &Request::DaemonStatus);
    assert_invalid(f, Invalid::Decrypt, Some("node1"), InvalidClass::Decrypt, 0);
}

#[test]
fn wrong_cluster_name() {
    let mut s = Sealer::with_salt(SECRET, "staging", "node1", [1; 16], NOW);
    let f = request(&mut s, &Request::DaemonStatus);
    assert_invalid(f, Invalid::Decrypt, Some("node1"), InvalidClass::Decrypt, 0);
}

#[test]
fn tampered_tag_or_ciphertext() {
    let mut f = valid_frame();
    let last = f.len() - 1;
    f[last] ^= 0x01;
    assert_invalid(f, Invalid::Decrypt, Some("node1"), InvalidClass::Decrypt, 0);
    let mut f = valid_frame();
    f[header_len(5)] ^= 0x80;
    assert_invalid(f, Invalid::Decrypt, Some("node1"), InvalidClass::Decrypt, 0);
}

#[test]
fn replayed_counter() {
    let mut r = rig(&["node1"]);
    let f = valid_frame();
    assert_eq!(
        r.admit(f.clone()),
        delivered_request("node1", Request::DaemonStatus)
    );
    assert_eq!(r.admit(f), invalid(Invalid::Stale(Stale::Replayed)));
    assert_eq!(r.status(), counts(&[("node1", 1)]));
    assert_eq!(r.invalid_count(InvalidClass::Replayed), 1);
    // Refused before decryption.
    assert_eq!(r.gate.stats().decrypted, 1);
}

#[test]
fn counter_too_old_for_the_window() {
    let mut r = rig(&["node1"]);
    let ok = delivered_request("node1", Request::DaemonStatus);
    assert_eq!(r.admit(request_at("node1", 0, NOW)), ok);
    assert_eq!(r.admit(request_at("node1", WINDOW + 5, NOW)), ok);
    // Never seen, but WINDOW + 2 below the highest counter.
    assert_eq!(
        r.admit(request_at("node1", 3, NOW)),
        invalid(Invalid::Stale(Stale::TooOld))
    );
    // Inside the window and unseen: still accepted, out of order.
    assert_eq!(r.admit(request_at("node1", 6, NOW)), ok);
    assert_eq!(r.invalid_count(InvalidClass::TooOld), 1);
    assert_eq!(
        r.status(),
        BTreeMap::new(),
        "the valid frame reset the count"
    );
    assert_eq!(r.gate.stats().decrypted, 3);
}

#[test]
fn timestamp_outside_the_skew() {
    for ts in [NOW - SKEW - 1, NOW + SKEW + 1, 0, u64::MAX] {
        assert_invalid(
            request_at("node1", 0, ts),
            Invalid::ClockSkew,
            Some("node1"),
            InvalidClass::ClockSkew,
            0,
        );
    }
    // The bounds themselves are inside.
    let mut r = rig(&["node1"]);
    for (counter, ts) in [(0, NOW - SKEW), (1, NOW + SKEW)] {
        assert_eq!(
            r.admit(request_at("node1", counter, ts)),
            delivered_request("node1", Request::DaemonStatus)
        );
    }
}

// ---------------------------------------------------------------------------------------
// Step 7: payload. The frame authenticated: its counter is spent.

/// One authenticated request through a fresh receiver with members node1 and node2: refused
/// with an error that names the problem, not an invalid message, its counter spent.
fn assert_refused(frame: Vec<u8>, nodename: &'static str, error: &str) {
    let mut r = rig(&["node1", "node2"]);
    assert_eq!(
        r.admit(frame.clone()),
        Outcome::Refuse {
            nodename,
            error: error.into()
        }
    );
    assert!(r.status().is_empty(), "{:?}", r.status());
    let s = r.gate.stats();
    assert_eq!(
        (s.invalid_total(), s.decrypted, s.requests_refused),
        (0, 1, 1)
    );
    assert_eq!(r.admit(frame), invalid(Invalid::Stale(Stale::Replayed)));
}

#[test]
fn malformed_json() {
    let f = seal(
        &mut sender("node1"),
        Kind::Request,
        br#"{"action": "daemon_sta"#,
    );
    assert_refused(f, "node1", "malformed JSON: unexpected end at byte 22");
    // Not UTF-8 at all.
    let f = seal(&mut sender("node2"), Kind::Request, &[0xff, 0xfe, b'{']);
    let mut r = rig(&["node2"]);
    assert!(
        matches!(r.admit(f), Outcome::Refuse { nodename: "node2", error } if error.contains("JSON"))
    );
}

#[test]
fn unknown_action() {
    let f = seal(
        &mut sender("node1"),
        Kind::Request,
        br#"{"action":"rm_rf","options":{}}"#,
    );
    assert_refused(f, "node1", r#"unknown action "rm_rf""#);
}

#[test]
fn invalid_options_and_heartbeats() {
    let f = seal(
        &mut sender("node1"),
        Kind::Request,
        br#"{"action":"clear","options":{"svcname":"a","x":1}}"#,
    );
    assert_refused(f, "node1", r#"clear: unknown option "x""#);
    // A heartbeat of the wrong shape is dropped and counted, not invalid.
    let mut r = rig(&["node1"]);
    let f = seal(&mut sender("node1"), Kind::Heartbeat, br#"{"monitor":{}}"#);
    assert_eq!(r.admit(f), Outcome::Drop(DropReason::HeartbeatRefused));
    assert!(r.status().is_empty());
    let s = r.gate.stats();
    assert_eq!((s.heartbeats_refused, s.invalid_total()), (1, 0));
}

/// Five authenticated requests a receiver cannot read (a member running a newer version)
/// ban nobody, and each resets the count that forged frames built up.
#[test]
fn refused_requests_reset_the_count_and_never_ban() {
    let mut r = rig(&["node1"]);
    let mut s = sender("node1");
    let mut forger = Sealer::with_salt(b"wrong", CLUSTER, "node1", [7; 16], NOW);
    for _ in 0..4 {
        assert_eq!(
            r.admit(request(&mut forger, &Request::DaemonStatus)),
            invalid(Invalid::Decrypt)
        );
    }
    assert_eq!(r.status(), counts(&[("node1", 4)]));
    for _ in 0..5 {
        let f = seal(&mut s, Kind::Request, br#"{"action":"from_the_future"}"#);
        assert!(matches!(r.admit(f), Outcome::Refuse { .. }));
    }
    assert!(r.status().is_empty());
    assert_eq!(
        r.admit(request(&mut s, &Request::DaemonStatus)),
        delivered_request("node1", Request::DaemonStatus)
    );
}

// ---------------------------------------------------------------------------------------
// Valid frames.

fn heartbeat_gen1() -> Heartbeat {
    Heartbeat::parse(br#"{"gen":1,"since":0,"monitor":{},"services":{}}"#).unwrap()
}

fn heartbeat_from(sender: &str, heartbeat: Heartbeat) -> Message {
    Message::Heartbeat {
        sender: sender.into(),
        heartbeat,
    }
}

#[test]
fn heartbeat_delivered_then_replay_refused() {
    let mut r = rig(&["node1", "node2"]);
    let f = seal(
        &mut sender("node2"),
        Kind::Heartbeat,
        br#"{"gen":1,"monitor":{},"services":{}}"#,
    );
    assert_eq!(f[1], 3);
    assert_eq!(
        r.admit(f.clone()),
        delivered("node2", heartbeat_from("node2", heartbeat_gen1()))
    );
    assert_eq!(r.admit(f), invalid(Invalid::Stale(Stale::Replayed)));
    assert_eq!(r.status(), counts(&[("node2", 1)]));
    let s = r.gate.stats();
    assert_eq!((s.delivered, s.decrypted), (1, 1));
}

#[test]
fn second_frame_of_a_session_uses_the_cached_key() {
    let mut r = rig(&["node1"]);
    let mut s = sender("node1");
    let hb = br#"{"gen":1,"monitor":{},"services":{}}"#;
    for i in 0..3 {
        assert_eq!(
            r.admit(seal(&mut s, Kind::Heartbeat, hb)),
            delivered("node1", heartbeat_from("node1", heartbeat_gen1())),
            "frame {i}"
        );
    }
    // A forgery under the cached session (same nodename and salt) is not helped by the cache.
    let forged = frame_with(
        b"guess",
        CLUSTER,
        Header {
            kind: Kind::Heartbeat,
            nodename: "node1",
            salt: s.salt(),
            ts_ms: NOW,
            counter: 100,
        },
        hb,
    );
    assert_eq!(r.admit(forged), invalid(Invalid::Decrypt));
    // Nor does the forgery spend counter 100, or break the session.
    assert_eq!(
        r.admit(request_at("node1", 100, NOW)),
        delivered_request("node1", Request::DaemonStatus)
    );
    assert_eq!(r.gate.stats().decrypted, 4);
}

#[test]
fn a_frame_that_fails_does_not_cache_its_key() {
    let mut r = rig(&["node1"]);
    let salt = salt_for("node1");
    // First seen: a forgery under node1's real session salt.
    let forged = frame_with(
        b"guess",
        CLUSTER,
        Header {
            kind: Kind::Request,
            nodename: "node1",
            salt: &salt,
            ts_ms: NOW,
            counter: 0,
        },
        &Request::DaemonStatus.to_vec(),
    );
    assert_eq!(r.admit(forged), invalid(Invalid::Decrypt));
    assert_eq!(
        r.admit(valid_frame()),
        delivered_request("node1", Request::DaemonStatus)
    );
}

#[test]
fn new_secret_drops_cached_keys() {
    let mut r = rig(&["node1"]);
    let mut s = sender("node1");
    assert_eq!(
        r.admit(request(&mut s, &Request::DaemonStatus)),
        delivered_request("node1", Request::DaemonStatus)
    );
    let mut c = config(&["node1"]);
    c.secret = "rotated".into();
    r.gate.set_config(Arc::new(c));
    assert_eq!(
        r.admit(request(&mut s, &Request::DaemonStatus)),
        invalid(Invalid::Decrypt)
    );
    let mut s2 = Sealer::with_salt(b"rotated", CLUSTER, "node1", [9; 16], NOW);
    assert_eq!(
        r.admit(request(&mut s2, &Request::Leave)),
        delivered_request("node1", Request::Leave)
    );
}

/// PROTOCOL.md, "Keys": a frame opens under the primary or the alternate; the key cache
/// keeps the keys of secrets still held across a swap and forgets those of a dropped one.
#[test]
fn keyring_opens_under_either_secret() {
    let mut r = rig(&["node1", "node2"]);
    let mut c = config(&["node1", "node2"]);
    c.alt_secret = Some("next".into());
    r.gate.set_config(Arc::new(c.clone()));
    let mut old = sender("node1");
    let mut new = Sealer::with_salt(b"next", CLUSTER, "node2", [9; 16], NOW);
    for _ in 0..3 {
        assert_eq!(
            r.admit(request(&mut old, &Request::DaemonStatus)),
            delivered_request("node1", Request::DaemonStatus)
        );
        assert_eq!(
            r.admit(request(&mut new, &Request::DaemonStatus)),
            delivered_request("node2", Request::DaemonStatus)
        );
    }
    // One alternate open for node2's session, then its cached key.
    assert_eq!(r.gate.stats().opened_alternate, 1);
    // Under neither secret: one invalid message, not two.
    let mut forged = Sealer::with_salt(b"neither", CLUSTER, "node1", [7; 16], NOW);
    assert_eq!(
        r.admit(request(&mut forged, &Request::DaemonStatus)),
        invalid(Invalid::Decrypt)
    );
    assert_eq!(r.gate.stats().invalid_total(), 1);
    // use: the secrets swap; both sessions keep opening.
    let (primary, alternate) = (c.secret.clone(), c.alt_secret.clone());
    c.secret = alternate.unwrap();
    c.alt_secret = Some(primary);
    r.gate.set_config(Arc::new(c.clone()));
    assert_eq!(
        r.admit(request(&mut old, &Request::DaemonStatus)),
        delivered_request("node1", Request::DaemonStatus)
    );
    assert_eq!(
        r.admit(request(&mut new, &Request::DaemonStatus)),
        delivered_request("node2", Request::DaemonStatus)
    );
    // remove: the old secret's session no longer opens, even with its key cached before.
    c.alt_secret = None;
    r.gate.set_config(Arc::new(c));
    assert_eq!(
        r.admit(request(&mut old, &Request::DaemonStatus)),
        invalid(Invalid::Decrypt)
    );
    assert_eq!(
        r.admit(request(&mut new, &Request::DaemonStatus)),
        delivered_request("node2", Request::DaemonStatus)
    );
}

#[test]
fn large_request_after_a_small_one() {
    // The parser keeps its buffers between frames: they must grow for a larger payload.
    let mut r = rig(&["node1"]);
    let mut s = sender("node1");
    assert_eq!(
        r.admit(request(&mut s, &Request::DaemonStatus)),
        delivered_request("node1", Request::DaemonStatus)
    );
    let big = Request::ServiceAction {
        svcname: "svc1".into(),
        command: (0..5000).map(|i| format!("arg-{i}")).collect(),
        sync: true,
    };
    assert!(big.to_vec().len() > 50_000);
    assert_eq!(
        r.admit(request(&mut s, &big)),
        delivered_request("node1", big)
    );
    assert_eq!(
        r.admit(request(&mut s, &Request::BlacklistStatus)),
        delivered_request("node1", Request::BlacklistStatus)
    );
}

#[test]
fn protocol_test_vector() {
    let frame = hex(
        "0101056e6f646532000102030405060708090a0b0c0d0e0f0000019ab697e800
                     0000000000000007ca0006dfde1c1d0b73e812962460740fe5f2c8e487d56b10
                     0e41040c6ef92a906b41d22e9703658bf09a",
    );
    let c = GateConfig {
        cluster_name: "prod1".into(),
        secret: "correct horse battery staple".into(),
        alt_secret: None,
        members: ["node2".to_string()].into_iter().collect(),
        max_clock_skew_ms: SKEW,
        accept_joins: false,
        started_ms: 0,
    };
    let mut r = rig_with(c, TTL, JOIN_RATE);
    let v = FrameView::parse(&frame).unwrap();
    assert_eq!(
        (v.kind(), v.nodename(), v.ts_ms(), v.counter()),
        (Kind::Request, "node2", 1_764_000_000_000, 7)
    );
    let mut buf = frame.clone();
    assert_eq!(
        r.admit_at(&mut buf, 1_764_000_000_000),
        delivered_request("node2", Request::DaemonStatus)
    );
    let mut buf = frame;
    assert_eq!(
        r.admit_at(&mut buf, 1_764_000_000_000),
        invalid(Invalid::Stale(Stale::Replayed))
    );
}

// ---------------------------------------------------------------------------------------
// Blacklist.

/// An invalid frame under node1's name (wrong secret: anyone can send it).
fn forged(nodename: &str, counter: u64) -> Vec<u8> {
    let salt = [0xee; 16];
    frame_with(
        b"attacker",
        CLUSTER,
        Header {
            kind: Kind::Request,
            nodename,
            salt: &salt,
            ts_ms: NOW,
            counter,
        },
        &Request::DaemonStatus.to_vec(),
    )
}

#[test]
fn five_consecutive_invalid_ban_and_a_valid_message_resets() {
    let mut r = rig(&["node1", "node2"]);
    let mut s1 = sender("node1");
    for i in 0..4 {
        assert_eq!(r.admit(forged("node1", i)), invalid(Invalid::Decrypt));
    }
    assert_eq!(r.status(), counts(&[("node1", 4)]));
    let first = request(&mut s1, &Request::DaemonStatus);
    assert_eq!(
        r.admit(first.clone()),
        delivered_request("node1", Request::DaemonStatus)
    );
    assert!(r.status().is_empty());
    // Four more of different classes, then a fifth: banned.
    let mut stale = request(&mut s1, &Request::DaemonStatus);
    assert_eq!(
        r.admit_at(&mut stale, NOW + SKEW + 1),
        invalid(Invalid::ClockSkew)
    );
    assert_eq!(r.admit(first), invalid(Invalid::Stale(Stale::Replayed)));
    let mut short = valid_frame();
    short.truncate(header_len(5) + TAG_LEN);
    assert_eq!(
        r.admit(short),
        invalid(Invalid::Header(HeaderError::EmptyPayload))
    );
    assert_eq!(r.admit(forged("node1", 10)), invalid(Invalid::Decrypt));
    assert_eq!(r.status(), counts(&[("node1", 4)]));
    assert!(r.gate.take_notices().is_empty());
    assert_eq!(r.admit(forged("node1", 11)), invalid(Invalid::Decrypt));
    assert_eq!(r.status(), counts(&[("node1", 5)]));
    assert!(r.shared.blacklist.is_banned("node1", NOW));
    assert_eq!(r.gate.take_notices(), vec![Notice::Banned("node1".into())]);

    // node1's valid frame: dropped before decryption, uncounted.
    let decrypted = r.gate.stats().decrypted;
    let invalid_total = r.gate.stats().invalid_total();
    assert_eq!(
        r.admit(request(&mut s1, &Request::DaemonStatus)),
        Outcome::Drop(DropReason::Blacklisted)
    );
    assert_eq!(r.gate.stats().decrypted, decrypted);
    assert_eq!(r.gate.stats().invalid_total(), invalid_total);
    assert_eq!(r.gate.stats().dropped_blacklisted, 1);
    assert_eq!(r.status(), counts(&[("node1", 5)]));
    // Another member is still served.
    assert_eq!(
        r.admit(request(&mut sender("node2"), &Request::DaemonStatus)),
        delivered_request("node2", Request::DaemonStatus)
    );
    assert_eq!(r.gate.stats().decrypted, decrypted + 1);
    assert!(r.gate.take_notices().is_empty());

    // `blacklist clear` restores node1.
    r.shared.blacklist.clear();
    assert!(r.status().is_empty());
    assert_eq!(
        r.admit(request(&mut s1, &Request::DaemonStatus)),
        delivered_request("node1", Request::DaemonStatus)
    );
}

#[test]
fn ban_expires_after_the_ttl() {
    let mut r = rig_with(config(&["node1"]), 1_000, JOIN_RATE);
    for i in 0..5 {
        r.admit(forged("node1", i));
    }
    assert!(r.shared.blacklist.is_banned("node1", NOW));
    let mut s = sender("node1");
    let mut f = seal_at(&mut s, Kind::Request, &Request::Leave.to_vec(), NOW + 999);
    assert_eq!(
        r.admit_at(&mut f, NOW + 999),
        Outcome::Drop(DropReason::Blacklisted)
    );
    let mut f = seal_at(&mut s, Kind::Request, &Request::Leave.to_vec(), NOW + 1_000);
    assert_eq!(
        r.admit_at(&mut f, NOW + 1_000),
        delivered_request("node1", Request::Leave)
    );
    assert_eq!(
        r.gate.take_notices(),
        vec![
            Notice::Banned("node1".into()),
            Notice::BanExpired("node1".into())
        ]
    );
    assert!(r.shared.blacklist.status(NOW + 1_000).is_empty());
}

// ---------------------------------------------------------------------------------------
// Step 4: membership and joins.

#[test]
fn non_member_request_other_than_join_is_not_member() {
    let mut r = rig(&["node1"]);
    let f = request(&mut sender("node9"), &Request::DaemonStatus);
    // Decrypted (its action is not known before), then refused with an error; a non-member
    // never enters the blacklist.
    assert_eq!(
        r.admit(f),
        Outcome::Refuse {
            nodename: "node9",
            error: "not a cluster member: only a join is accepted".into()
        }
    );
    assert!(r.status().is_empty());
    assert_eq!(r.gate.stats().decrypted, 1);

    // A heartbeat, or any request when joins are refused, is not even decrypted.
    let hb = seal(
        &mut sender("node8"),
        Kind::Heartbeat,
        br#"{"gen":1,"monitor":{},"services":{}}"#,
    );
    assert_eq!(r.admit(hb), invalid(Invalid::NotMember));
    let mut c = config(&["node1"]);
    c.accept_joins = false;
    let mut r = rig_with(c, TTL, JOIN_RATE);
    let join = request(&mut sender("node9"), &Request::Join);
    assert_eq!(r.admit(join), invalid(Invalid::NotMember));
    assert_eq!(r.gate.stats().decrypted, 0);
    assert_eq!(r.invalid_count(InvalidClass::NotMember), 1);
    assert!(r.status().is_empty());
}

#[test]
fn non_member_join_is_delivered() {
    let mut r = rig(&["node1"]);
    let mut s = sender("node9");
    assert_eq!(
        r.admit(request(&mut s, &Request::Join)),
        delivered_request("node9", Request::Join)
    );
    assert!(r.status().is_empty());
    // Still subject to authentication.
    let mut wrong = Sealer::with_salt(b"guess", CLUSTER, "node7", [3; 16], NOW);
    assert_eq!(
        r.admit(request(&mut wrong, &Request::Join)),
        invalid(Invalid::Decrypt)
    );
    assert!(r.status().is_empty(), "a non-member is never entered");
}

#[test]
fn non_member_frames_beyond_the_join_rate_are_dropped_uncounted() {
    let rate = 3;
    let mut r = rig_with(config(&["node1"]), TTL, rate);
    for i in 0..rate {
        let name: &'static str = Box::leak(format!("new{i}").into_boxed_str());
        assert_eq!(
            r.admit(request(&mut sender(name), &Request::Join)),
            delivered_request(name, Request::Join)
        );
    }
    // A flood under random nodenames: neither decrypted nor counted.
    for i in 0..50 {
        let name = format!("flood{i}");
        assert_eq!(
            r.admit(forged(&name, 0)),
            Outcome::Drop(DropReason::JoinRateLimited)
        );
    }
    assert_eq!(
        r.admit(request(&mut sender("late"), &Request::Join)),
        Outcome::Drop(DropReason::JoinRateLimited)
    );
    assert!(r.status().is_empty());
    assert!(r.shared.blacklist.is_empty());
    let s = r.gate.stats();
    assert_eq!(
        (s.decrypted, s.dropped_join_rate, s.invalid_total()),
        (3, 51, 0)
    );
    // Members are not rate limited.
    assert_eq!(
        r.admit(request(&mut sender("node1"), &Request::DaemonStatus)),
        delivered_request("node1", Request::DaemonStatus)
    );
    // A second later the bucket has refilled.
    let mut s = sender("late");
    let mut f = seal_at(&mut s, Kind::Request, &Request::Join.to_vec(), NOW + 1_000);
    assert_eq!(
        r.admit_at(&mut f, NOW + 1_000),
        delivered_request("late", Request::Join)
    );
}

// ---------------------------------------------------------------------------------------
// Properties.

/// 1..=255 bytes of UTF-8 (the limit is in bytes, not chars).
fn arb_nodename() -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 1..=255).prop_map(|chars| {
        let mut s = String::new();
        for c in chars {
            if s.len() + c.len_utf8() > 255 {
                break;
            }
            s.push(c);
        }
        s
    })
}

fn arb_kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::Request),
        Just(Kind::Response),
        Just(Kind::Heartbeat),
        Just(Kind::StreamChunk),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn seal_parse_open_round_trip(
        nodename in arb_nodename(),
        salt in any::<[u8; 16]>(),
        counter in 0u64..(1 << 63),
        ts in (NOW - 3_600_000)..(NOW + 3_600_000),
        kind in arb_kind(),
        payload in prop::collection::vec(any::<u8>(), 1..2048),
    ) {
        prop_assert!((1..=255).contains(&nodename.len()));
        let header = Header { kind, nodename: &nodename, salt: &salt, ts_ms: ts, counter };
        let mut frame = frame_with(SECRET, CLUSTER, header, &payload);
        prop_assert_eq!(frame.len(), header_len(nodename.len()) + payload.len() + TAG_LEN);
        {
            let v = FrameView::parse(&frame).unwrap();
            prop_assert_eq!(v.kind(), kind);
            prop_assert_eq!(v.nodename(), nodename.as_str());
            prop_assert_eq!(v.salt(), &salt);
            prop_assert_eq!(v.ts_ms(), ts);
            prop_assert_eq!(v.counter(), counter);
            prop_assert_eq!(v.payload_len(), payload.len());
            prop_assert_eq!(v.aad().len(), header_len(nodename.len()));
        }
        // A Sealer's first frame is the same frame at counter 0.
        if counter == 0 {
            let mut s = Sealer::with_salt(SECRET, CLUSTER, &nodename, salt, ts);
            prop_assert_eq!(&seal_at(&mut s, kind, &payload, ts), &frame);
        }
        let key = SessionKey::derive(SECRET, CLUSTER, &nodename, &salt);
        let range = key.open_in_place(&mut frame).unwrap();
        prop_assert_eq!(&frame[range], &payload[..]);
    }

    /// Any nodename the format allows goes through the receive path, as a member or a joiner.
    #[test]
    fn any_nodename_is_delivered(nodename in arb_nodename(), member in any::<bool>()) {
        let members: Vec<&str> = if member { vec![nodename.as_str()] } else { vec!["other"] };
        let mut r = rig(&members);
        let mut s = Sealer::new(SECRET, CLUSTER, &nodename, NOW);
        let req = if member { Request::Leave } else { Request::Join };
        let mut f = request(&mut s, &req);
        match r.gate.admit(&mut f, NOW) {
            Outcome::Deliver { nodename: n, message } => {
                prop_assert_eq!(n, nodename.as_str());
                prop_assert_eq!(message, Message::Request(req));
            }
            other => prop_assert!(false, "{:?}", other),
        }
    }

    /// Flipping any one byte of a valid frame, header included, prevents its delivery.
    #[test]
    fn single_byte_flip_is_never_delivered(
        which in 0usize..3,
        counter in 0u64..5000,
        pos in any::<prop::sample::Index>(),
        mask in 1u8..=255,
    ) {
        let (nodename, kind, payload): (&str, Kind, Vec<u8>) = match which {
            0 => ("node1", Kind::Request, Request::DaemonStatus.to_vec()),
            1 => ("node2", Kind::Heartbeat, br#"{"gen":1,"monitor":{},"services":{}}"#.to_vec()),
            _ => ("node9", Kind::Request, Request::Join.to_vec()),
        };
        let salt = salt_for(nodename);
        let header = Header { kind, nodename, salt: &salt, ts_ms: NOW, counter };
        let frame = frame_with(SECRET, CLUSTER, header, &payload);
        // Unaltered, it is delivered.
        let mut r = rig(&["node1", "node2"]);
        let mut ok = frame.clone();
        let outcome = r.gate.admit(&mut ok, NOW);
        prop_assert!(matches!(outcome, Outcome::Deliver { .. }), "{:?}", outcome);
        drop(outcome);
        let i = pos.index(frame.len());
        let mut flipped = frame;
        flipped[i] ^= mask;
        let mut again = flipped.clone();
        let mut r = rig(&["node1", "node2"]);
        let outcome = r.gate.admit(&mut flipped, NOW);
        prop_assert!(!matches!(outcome, Outcome::Deliver { .. }), "byte {} ^ {:#x}: {:?}", i, mask, outcome);
        prop_assert_eq!(r.gate.stats().delivered, 0);
        drop(outcome);
        // Nor a second time, with the state the first attempt left.
        let outcome = r.gate.admit(&mut again, NOW);
        prop_assert!(!matches!(outcome, Outcome::Deliver { .. }), "byte {} ^ {:#x}: {:?}", i, mask, outcome);
    }

    /// The fuzz targets' checks hold on random bytes and on mutated valid frames (so they run
    /// on every `cargo test`, not only under the fuzzer).
    #[test]
    fn fuzz_harness_on_random_inputs(
        bytes in prop::collection::vec(any::<u8>(), 0..300),
        seed in 0usize..3,
        cut in any::<prop::sample::Index>(),
        pos in any::<prop::sample::Index>(),
        mask in any::<u8>(),
    ) {
        run_fuzz_entry_points(&bytes);
        let mut frame = fuzz_harness::seeds()
            .into_iter()
            .filter(|(t, _, _)| *t == "receive_path")
            .nth(seed)
            .unwrap()
            .2;
        let i = pos.index(frame.len());
        frame[i] ^= mask;
        frame.truncate(cut.index(frame.len() + 1));
        run_fuzz_entry_points(&frame);
    }
}

/// Every position, every mask, of one frame from a member: never delivered.
#[test]
fn every_single_byte_flip_of_a_frame_is_refused() {
    let mut r = rig_with(config(&["node1"]), TTL, 1_000_000);
    let frame = request_at("node1", 0, NOW);
    for i in 0..frame.len() {
        for mask in 1..=255u8 {
            let mut f = frame.clone();
            f[i] ^= mask;
            let outcome = r.admit(f);
            assert!(
                matches!(outcome, Outcome::Drop(DropReason::Invalid(_))),
                "byte {i} ^ {mask:#x}: {outcome:?}"
            );
            r.shared.blacklist.clear();
        }
    }
    assert_eq!(r.gate.stats().delivered, 0);
    assert_eq!(r.gate.stats().decrypted, 0);
    assert_eq!(
        r.admit(frame),
        delivered_request("node1", Request::DaemonStatus)
    );
}

// ---------------------------------------------------------------------------------------
// Fuzzing: regressions and seeds (see fuzz/README.md).

fn run_fuzz_entry_points(data: &[u8]) {
    fuzz_harness::frame_view(data);
    fuzz_harness::receive_path(data);
    fuzz_harness::request_parser(data);
    fuzz_harness::json_scanner(data);
    fuzz_harness::tcp_conn(data);
    fuzz_harness::unix_request(data);
}

const FUZZ_TARGETS: [&str; 6] = [
    "frame_view",
    "receive_path",
    "request_parser",
    "json_scanner",
    "tcp_conn",
    "unix_request",
];

/// Every fuzz target is a binary of fuzz/Cargo.toml, which fuzz/run.sh (CI) runs all of.
#[test]
fn every_fuzz_target_is_built_and_run() {
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    let mut bins: Vec<&str> = manifest
        .split("[[bin]]")
        .skip(1)
        .filter_map(|b| b.lines().find_map(|l| l.strip_prefix("name = ")))
        .map(|n| n.trim_matches('"'))
        .collect();
    bins.sort_unstable();
    let mut targets = FUZZ_TARGETS.to_vec();
    targets.sort_unstable();
    assert_eq!(bins, targets);
    let run = std::fs::read_to_string(fuzz_dir().join("run.sh")).unwrap();
    assert!(
        run.contains("mapfile -t targets < <(awk"),
        "run.sh takes its targets from Cargo.toml"
    );
}

fn fuzz_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// Files in `dir` other than READMEs, sorted.
fn case_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .filter(|p| {
            !p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("README")
        })
        .collect();
    files.sort();
    files
}

/// Every crasher the fuzzers ever found (fuzz/regressions/), through every target.
#[test]
fn fuzz_regressions() {
    for path in case_files(&fuzz_dir().join("regressions")) {
        let data = std::fs::read(&path).unwrap();
        eprintln!("{}", path.display());
        run_fuzz_entry_points(&data);
    }
}

/// The committed seeds are what `fuzz_harness::seeds()` generates, and pass every target.
#[test]
fn fuzz_seeds_are_current() {
    let seeds = fuzz_harness::seeds();
    for (target, name, bytes) in &seeds {
        let path = fuzz_dir().join("seeds").join(target).join(name);
        let committed = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (run: cargo test --test wire -- --ignored write_fuzz_seeds)",
                path.display()
            )
        });
        assert!(
            committed == *bytes,
            "{} is stale (run: cargo test --test wire -- --ignored write_fuzz_seeds)",
            path.display()
        );
        run_fuzz_entry_points(bytes);
    }
    for target in FUZZ_TARGETS {
        let dir = fuzz_dir().join("seeds").join(target);
        let expected = seeds.iter().filter(|(t, _, _)| *t == target).count();
        assert_eq!(case_files(&dir).len(), expected, "{}", dir.display());
    }
    // The sealed seeds are delivered by the fuzzed receiver.
    let (mut gate, _) = fuzz_harness::new_gate();
    let sealed = seeds
        .iter()
        .filter(|(t, n, _)| *t == "receive_path" && n.starts_with("frame_"));
    for (_, name, bytes) in sealed {
        let mut f = bytes.clone();
        let outcome = gate.admit(&mut f, fuzz_harness::NOW_MS);
        assert!(
            matches!(outcome, Outcome::Deliver { .. }),
            "{name}: {outcome:?}"
        );
    }
}

/// The TCP seeds reach what they are named after: a member's typo answered and its next
/// request delivered on the same connection, a join read byte by byte, a stranger's heartbeat
/// refused at its header.
#[test]
fn tcp_seeds_reach_the_gate() {
    let seed = |name: &str| std::fs::read(fuzz_dir().join("seeds/tcp_conn").join(name)).unwrap();
    let s = fuzz_harness::tcp_conn_stats(&seed("member_two_requests.bin"));
    assert_eq!((s.requests_refused, s.delivered), (1, 1), "{s:?}");
    let s = fuzz_harness::tcp_conn_stats(&seed("join_byte_by_byte.bin"));
    assert_eq!(s.delivered, 1, "{s:?}");
    let s = fuzz_harness::tcp_conn_stats(&seed("stranger_heartbeat.bin"));
    assert_eq!(
        (s.received, s.decrypted, s.invalid_total()),
        (1, 0, 1),
        "{s:?}"
    );
}

/// Regenerates fuzz/seeds/ from `fuzz_harness::seeds()`.
#[test]
#[ignore = "writes fuzz/seeds/"]
fn write_fuzz_seeds() {
    for target in FUZZ_TARGETS {
        let dir = fuzz_dir().join("seeds").join(target);
        if dir.exists() {
            for f in case_files(&dir) {
                std::fs::remove_file(f).unwrap();
            }
        }
        std::fs::create_dir_all(&dir).unwrap();
    }
    for (target, name, bytes) in fuzz_harness::seeds() {
        std::fs::write(fuzz_dir().join("seeds").join(target).join(name), bytes).unwrap();
    }
}

/// Found by the `request_parser` fuzzer (fuzz/regressions/request_parser-duplicate-keys): a
/// repeated name was read as its first occurrence in an object of up to 32 names and as its
/// last in a larger one (where the unknown name reported was also random), while most JSON
/// parsers keep the last: peers could read one request differently. Refused now.
#[test]
fn duplicate_keys_are_refused() {
    use osvc_agent::internals::wire::payload::parse_request;
    let parse = |s: &str| parse_request(s.as_bytes());
    let dup = |action: &'static str, field: &str| {
        Err::<Request, _>(PayloadError::DuplicateKey {
            action,
            field: field.into(),
        })
    };
    assert_eq!(
        parse(r#"{"action":"leave","action":"join"}"#),
        dup("request", "action")
    );
    assert_eq!(
        parse(r#"{"action":"clear","options":{"svcname":"a","svcname":"b"}}"#),
        dup("clear", "svcname")
    );
    let options = |n: usize| {
        let names: Vec<String> = (0..n)
            .map(|j| format!(r#""svcname":"s{}""#, j % 3))
            .collect();
        format!(r#"{{"action":"clear","options":{{{}}}}}"#, names.join(","))
    };
    assert_eq!(parse(&options(32)), dup("clear", "svcname"));
    // Past 32 names the parser has already merged repeats: refused as such, every time.
    for n in 33..40 {
        assert_eq!(
            parse(&options(n)),
            Err(PayloadError::TooManyKeys { action: "clear" })
        );
    }
    let mut unknown = String::from(r#"{"action":"daemon_status""#);
    for j in 0..40 {
        unknown.push_str(&format!(r#","k{j:02}":1"#));
    }
    unknown.push('}');
    for _ in 0..10 {
        assert_eq!(
            parse(&unknown),
            Err(PayloadError::TooManyKeys { action: "request" })
        );
    }
    // Distinct names are still fine, nested objects are not concerned.
    assert_eq!(
        parse(r#"{"action":"clear","options":{"svcname":"a"}}"#),
        Ok(Request::Clear {
            svcname: "a".into()
        })
    );
    // Through the receive path: refused with an error, not charged, counter spent.
    let f = seal(
        &mut sender("node1"),
        Kind::Request,
        br#"{"action":"daemon_status","action":"daemon_shutdown"}"#,
    );
    assert_refused(f, "node1", r#"request: duplicate key "action""#);
}

// ---------------------------------------------------------------------------------------
// Hostile network: replays across a restart, made-up names, forgotten counts.

/// Step 5: a frame stamped before the receiver's process started is refused, however fresh
/// its session looks: recorded before a restart, it cannot be replayed after it.
#[test]
fn frames_stamped_before_the_start_are_refused() {
    let mut c = config(&["node1"]);
    c.started_ms = NOW - 1_000;
    let mut r = rig_with(c, TTL, JOIN_RATE);
    let recorded = request_at("node1", 0, NOW - 1_001);
    assert_eq!(r.admit(recorded), invalid(Invalid::BeforeStart));
    assert_eq!(r.invalid_count(InvalidClass::BeforeStart), 1);
    assert_eq!(r.gate.stats().decrypted, 0);
    assert_eq!(r.status(), counts(&[("node1", 1)]));
    assert_eq!(
        r.admit(request_at("node1", 1, NOW - 1_000)),
        delivered_request("node1", Request::DaemonStatus)
    );
}

/// Truncated and kind-4 frames under made-up names are counted as invalid but never enter
/// the blacklist, however many: a member's five bad frames still ban it afterwards.
#[test]
fn made_up_names_never_enter_the_blacklist() {
    let mut r = rig(&["node1"]);
    let mut kind4 = valid_frame();
    kind4[1] = 4;
    for i in 0..20_000u32 {
        let name = format!("x{i:08}");
        let mut f = request_at(&name, 0, NOW);
        if i % 2 == 0 {
            f.truncate(header_len(name.len()) + TAG_LEN);
        } else {
            f[1] = 4;
        }
        assert!(matches!(r.admit(f), Outcome::Drop(DropReason::Invalid(_))));
    }
    assert_eq!(r.shared.blacklist.len(), 0);
    assert_eq!(r.gate.stats().invalid_total(), 20_000);
    for _ in 0..4 {
        assert!(matches!(
            r.admit(kind4.clone()),
            Outcome::Drop(DropReason::Invalid(_))
        ));
    }
    assert_eq!(
        r.admit(kind4),
        invalid(Invalid::UnexpectedKind(Kind::StreamChunk))
    );
    assert!(r.shared.blacklist.is_banned("node1", NOW));
    assert_eq!(r.shared.blacklist.len(), 1);
}

/// A member's count below the ban is forgotten a TTL after its last strike.
#[test]
fn counts_are_forgotten_after_the_ttl() {
    let mut r = rig_with(config(&["node1"]), 10_000, JOIN_RATE);
    for i in 0..4 {
        assert_eq!(r.admit(forged("node1", i)), invalid(Invalid::Decrypt));
    }
    assert_eq!(
        r.shared.blacklist.status(NOW + 9_999),
        counts(&[("node1", 4)])
    );
    assert!(r.shared.blacklist.status(NOW + 10_000).is_empty());
    // The next strike starts over: four old plus one new do not ban.
    let mut f = forged("node1", 10);
    assert_eq!(r.admit_at(&mut f, NOW + 10_000), invalid(Invalid::Decrypt));
    assert!(!r.shared.blacklist.is_banned("node1", NOW + 10_000));
    r.shared.blacklist.compact(NOW + 20_000);
    assert_eq!(r.shared.blacklist.len(), 0);
}

/// The session salt comes from the OS generator or nothing is sealed: no clock fallback that
/// could repeat a key and its nonces.
#[test]
fn no_frame_is_sealed_without_os_randomness() {
    fn broken(_: &mut [u8; 16]) -> Result<(), EncodeError> {
        Err(EncodeError::NoRandomness)
    }
    let mut s = Sealer::with_salt_source(SECRET, CLUSTER, "node1", NOW, broken);
    let mut out = Vec::new();
    assert_eq!(
        s.seal(Kind::Request, b"{}", NOW, &mut out),
        Err(EncodeError::NoRandomness)
    );
    assert!(out.is_empty());
    // With the OS generator, two senders never share a salt.
    let a = Sealer::new(SECRET, CLUSTER, "node1", NOW);
    let b = Sealer::new(SECRET, CLUSTER, "node1", NOW);
    assert_ne!(a.salt(), b.salt());
}
