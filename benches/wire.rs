//! The receive path against its parts: `cargo bench --bench wire` (results: benches/README.md).
//!
//! Every frame bench copies a pre-sealed frame into one reused buffer per iteration (decryption
//! works in place), so each includes the same copy; `copy_only` measures that copy alone, to
//! subtract. Frames come from a batch of `FRAMES` sealed by a `Sealer` with increasing
//! counters, and every frame bench cycles through the same batch, so all see the same cache
//! state. The payload of every request frame is a valid `service_action` request of exactly
//! the benched size, so the whole path parses a real request into the typed `Request`; the
//! `hb_*` benches do the same with heartbeats in the load generator's shape.

use std::collections::HashSet;
use std::sync::Arc;

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{AeadInOut, KeyInit};
use divan::counter::BytesCount;
use divan::{Bencher, black_box};
use osvc_agent::internals::guard::{
    DropReason, Gate, GateConfig, Message, Opened, Outcome, SharedGuard,
};
use osvc_agent::internals::hb::{HbView, Heartbeat};
use osvc_agent::internals::wire::frame::{TAG_LEN, header_len};
use osvc_agent::internals::wire::{
    Kind, Request, RequestParser, Sealer, SessionKey, derive_key_bytes, json,
};

fn main() {
    divan::main();
}

/// Payload sizes, in bytes of plaintext JSON.
const SIZES: [usize; 3] = [256, 1024, 4096];
/// Frames sealed per size; the benches cycle through them.
const FRAMES: usize = 4096;
const SECRET: &str = "correct horse battery staple";
const CLUSTER: &str = "prod1";
const NODE: &str = "node2";
const SALT: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
/// The frames' timestamp and the gate's clock: always within the skew.
const T0: u64 = 1_764_000_000_000;

/// A `service_action` whose command arguments pad its JSON to exactly `size` bytes.
fn request_of_size(size: usize) -> Request {
    let mut command: Vec<String> = ["start", "--rid", "app#1", "--local"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let make = |command: &Vec<String>| Request::ServiceAction {
        svcname: "svc1".into(),
        command: command.clone().into(),
        sync: true,
    };
    // Arguments of 40 characters, as an `--env KEY=value` list would have, then one more
    // shortened to land on the size.
    let arg = |n: usize, len: usize| {
        let mut s = format!("--env=VAR_{n:03}=");
        while s.len() < len {
            s.push('x');
        }
        s
    };
    // A new argument costs its length plus 3 bytes (`,"` and `"`): fill with 40-character
    // ones while at least two fit, then one of the exact remaining length (37 to 79).
    let room = |command: &Vec<String>| size.checked_sub(make(command).to_vec().len());
    while room(&command).is_some_and(|r| r >= 2 * (40 + 3)) {
        command.push(arg(command.len(), 40));
    }
    let last = room(&command).and_then(|r| r.checked_sub(3)).unwrap_or(0);
    assert!(last >= 20, "size {size} too small for the padding scheme");
    command.push(arg(command.len(), last));
    let request = make(&command);
    assert_eq!(request.to_vec().len(), size);
    request
}

struct Fixture {
    request: Request,
    plain: Vec<u8>,
    /// Frame `i` carries counter `i`.
    frames: Vec<Vec<u8>>,
    header_len: usize,
}

impl Fixture {
    fn new(size: usize) -> Self {
        let request = request_of_size(size);
        let plain = request.to_vec();
        let mut sender = Sealer::with_salt(SECRET.as_bytes(), CLUSTER, NODE, SALT, T0);
        let frames = (0..FRAMES)
            .map(|_| {
                let mut f = Vec::new();
                sender.seal(Kind::Request, &plain, T0, &mut f).unwrap();
                f
            })
            .collect();
        Fixture {
            request,
            plain,
            frames,
            header_len: header_len(NODE.len()),
        }
    }

    fn frame_len(&self) -> usize {
        self.frames[0].len()
    }
}

/// Cycles through the batch: the index of the next frame.
fn next(i: &mut usize) -> usize {
    let cur = *i;
    *i = if cur + 1 == FRAMES { 0 } else { cur + 1 };
    cur
}

fn gate_config() -> Arc<GateConfig> {
    Arc::new(GateConfig {
        cluster_name: CLUSTER.into(),
        secret: SECRET.into(),
        alt_secret: None,
        members: ["node1", "node2", "node3"]
            .iter()
            .map(|s| s.to_string())
            .collect::<HashSet<_>>(),
        max_clock_skew_ms: 60_000,
        accept_joins: false,
        started_ms: 0,
    })
}

/// The copy every frame bench does: one frame into the reused buffer.
#[divan::bench(args = SIZES)]
fn copy_only(bencher: Bencher, size: usize) {
    let fx = Fixture::new(size);
    let mut buf = vec![0u8; fx.frame_len()];
    let mut i = 0;
    bencher.counter(BytesCount::new(size)).bench_local(|| {
        buf.copy_from_slice(&fx.frames[next(&mut i)]);
        black_box(&mut buf);
    });
}

/// `ring` AES-256-GCM open in place, as the gate calls it (`SessionKey::open_with_header`).
#[divan::bench(args = SIZES)]
fn raw_open_ring(bencher: Bencher, size: usize) {
    let fx = Fixture::new(size);
    let key = SessionKey::derive(SECRET.as_bytes(), CLUSTER, NODE, &SALT);
    let mut buf = vec![0u8; fx.frame_len()];
    let hl = fx.header_len;
    // Outside the timed loop: a sample decrypts to the payload.
    buf.copy_from_slice(&fx.frames[0]);
    let (h, body) = buf.split_at_mut(hl);
    let n = key.open_with_header(h, body, 0).unwrap();
    assert_eq!(&body[..n], &fx.plain[..]);

    let mut i = 0;
    let mut failures = 0usize;
    bencher.counter(BytesCount::new(size)).bench_local(|| {
        let c = next(&mut i);
        buf.copy_from_slice(&fx.frames[c]);
        let (h, body) = buf.split_at_mut(hl);
        let r = key.open_with_header(h, body, c as u64);
        failures += usize::from(r.is_err());
        black_box(r)
    });
    assert_eq!(failures, 0);
}

/// The same with the `aes-gcm` crate, in place and detached.
#[divan::bench(args = SIZES)]
fn raw_open_aes_gcm(bencher: Bencher, size: usize) {
    let fx = Fixture::new(size);
    let key = derive_key_bytes(SECRET.as_bytes(), CLUSTER, NODE, &SALT);
    let cipher = Aes256Gcm::new_from_slice(&key).unwrap();
    let mut buf = vec![0u8; fx.frame_len()];
    let hl = fx.header_len;
    let open = |buf: &mut [u8], counter: u64| {
        let (h, body) = buf.split_at_mut(hl);
        let (ct, tag) = body.split_at_mut(body.len() - TAG_LEN);
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&counter.to_be_bytes());
        let tag = aes_gcm::Tag::try_from(&*tag).unwrap();
        // `decrypt_in_place_detached` is deprecated in aead 0.6 and forwards to this.
        cipher.decrypt_inout_detached(&n.into(), h, ct.into(), &tag)
    };
    buf.copy_from_slice(&fx.frames[0]);
    open(&mut buf, 0).unwrap();
    assert_eq!(&buf[hl..buf.len() - TAG_LEN], &fx.plain[..]);

    let mut i = 0;
    let mut failures = 0usize;
    bencher.counter(BytesCount::new(size)).bench_local(|| {
        let c = next(&mut i);
        buf.copy_from_slice(&fx.frames[c]);
        let r = open(&mut buf, c as u64);
        failures += usize::from(r.is_err());
        black_box(r)
    });
    assert_eq!(failures, 0);
}

/// The parse of the plaintext into the typed `Request`, alone (with the gate's reused
/// `RequestParser`): one pass of the JSON scanner, then the typed values. The parser does
/// not write to its input, so there is no copy. The `Request` is dropped inside the timed
/// loop, as in `whole_path`.
#[divan::bench(args = SIZES)]
fn json_parse_only(bencher: Bencher, size: usize) {
    let fx = Fixture::new(size);
    let mut parser = RequestParser::new();
    assert_eq!(parser.parse(&fx.plain).unwrap(), fx.request);
    let mut failures = 0usize;
    bencher.counter(BytesCount::new(size)).bench_local(|| {
        let r = parser.parse(black_box(&fx.plain));
        failures += usize::from(r.is_err());
        divan::black_box_drop(r);
    });
    assert_eq!(failures, 0);
}

/// The JSON scanner alone: validation of the whole plaintext, no value kept.
#[divan::bench(args = SIZES)]
fn json_scan_only(bencher: Bencher, size: usize) {
    let fx = Fixture::new(size);
    assert_eq!(json::validate(&fx.plain), Ok(()));
    let mut failures = 0usize;
    bencher.counter(BytesCount::new(size)).bench_local(|| {
        let r = json::validate(black_box(&fx.plain));
        failures += usize::from(r.is_err());
    });
    assert_eq!(failures, 0);
}

/// simd-json's tape of the same plaintext (what the parser used before the scanner), for
/// comparison. It parses in place, so each iteration copies the plaintext first.
#[divan::bench(args = SIZES)]
fn json_tape_simd_json(bencher: Bencher, size: usize) {
    let fx = Fixture::new(size);
    let mut buffers = simd_json::Buffers::new(size);
    let mut kept = Some(simd_json::Tape::null());
    let mut buf = fx.plain.clone();
    let mut failures = 0usize;
    bencher.counter(BytesCount::new(size)).bench_local(|| {
        buf.copy_from_slice(&fx.plain);
        let mut tape = kept
            .take()
            .map_or_else(simd_json::Tape::null, simd_json::Tape::reset);
        let r = simd_json::fill_tape(&mut buf, &mut buffers, &mut tape);
        failures += usize::from(r.is_err());
        black_box(&tape);
        kept = Some(tape.reset());
    });
    assert_eq!(failures, 0);
}

/// `Gate::admit` of valid frames, every iteration a delivery. Each frame carries a fresh
/// counter; when the cycle wraps to counter 0 the replay table is cleared (inside the timed
/// loop, once per `FRAMES` iterations) so the batch is valid again. The key cache hits.
fn bench_admit(bencher: Bencher, size: usize, shared: Arc<SharedGuard>) {
    let fx = Fixture::new(size);
    let mut gate = Gate::new(gate_config(), shared.clone());
    let mut buf = vec![0u8; fx.frame_len()];
    // Outside the timed loop: a sample is delivered, typed, and fills the key cache.
    buf.copy_from_slice(&fx.frames[0]);
    match gate.admit(&mut buf, T0) {
        Outcome::Deliver { nodename, message } => {
            assert_eq!(nodename, NODE);
            assert_eq!(message, Message::Request(fx.request.clone()));
        }
        other => panic!("not delivered: {other:?}"),
    }
    let mut i = 0;
    let mut undelivered = 0usize;
    let before = gate.stats().delivered;
    bencher.counter(BytesCount::new(size)).bench_local(|| {
        let c = next(&mut i);
        if c == 0 {
            shared.replay.clear();
        }
        buf.copy_from_slice(&fx.frames[c]);
        let out = gate.admit(&mut buf, T0);
        undelivered += usize::from(!matches!(out, Outcome::Deliver { .. }));
        // Dropped here, inside the timed loop: the `Request`'s strings are part of the cost.
        divan::black_box_drop(out);
    });
    assert_eq!(undelivered, 0);
    assert_eq!(gate.stats().invalid_total(), 0);
    assert!(gate.stats().delivered > before);
}

/// The decrypt path, `Gate::open`: steps 1 to 6 of the validation order (view, blacklist,
/// membership, skew, replay check, key cache hit, open, replay commit), no JSON. What the
/// guard adds to the raw open.
#[divan::bench(args = SIZES)]
fn decrypt_path(bencher: Bencher, size: usize) {
    let fx = Fixture::new(size);
    let shared = Arc::new(SharedGuard::new(600_000, 20));
    let mut gate = Gate::new(gate_config(), shared.clone());
    let mut buf = vec![0u8; fx.frame_len()];
    buf.copy_from_slice(&fx.frames[0]);
    match gate.open(&mut buf, T0) {
        Opened::Plain { payload, .. } => assert_eq!(payload, &fx.plain[..]),
        other => panic!("not opened: {other:?}"),
    }
    let mut i = 0;
    let mut unopened = 0usize;
    bencher.counter(BytesCount::new(size)).bench_local(|| {
        let c = next(&mut i);
        if c == 0 {
            shared.replay.clear();
        }
        buf.copy_from_slice(&fx.frames[c]);
        let out = gate.open(&mut buf, T0);
        unopened += usize::from(!matches!(out, Opened::Plain { .. }));
        black_box(out);
    });
    assert_eq!(unopened, 0);
    assert_eq!(gate.stats().invalid_total(), 0);
}

/// The whole receive path: view, blacklist, membership, skew, replay check, key cache hit,
/// open, replay commit, parse into `Request`.
#[divan::bench(args = SIZES)]
fn whole_path(bencher: Bencher, size: usize) {
    bench_admit(bencher, size, Arc::new(SharedGuard::new(600_000, 20)));
}

/// The whole path while another nodename is banned: the blacklist is not empty, so its
/// lookup cannot take the empty-table shortcut.
#[divan::bench(args = SIZES)]
fn unbanned_nonempty_blacklist(bencher: Bencher, size: usize) {
    let shared = Arc::new(SharedGuard::new(600_000, 20));
    for _ in 0..5 {
        shared.blacklist.record_invalid("node3", T0);
    }
    assert!(shared.blacklist.is_banned("node3", T0));
    bench_admit(bencher, size, shared);
}

/// A banned member's valid frame: dropped at step 3, before any crypto.
#[divan::bench(args = SIZES)]
fn blacklisted_drop(bencher: Bencher, size: usize) {
    let fx = Fixture::new(size);
    let shared = Arc::new(SharedGuard::new(0, 20));
    for _ in 0..5 {
        shared.blacklist.record_invalid(NODE, T0);
    }
    let mut gate = Gate::new(gate_config(), shared);
    let mut buf = vec![0u8; fx.frame_len()];
    buf.copy_from_slice(&fx.frames[0]);
    assert_eq!(
        gate.admit(&mut buf, T0),
        Outcome::Drop(DropReason::Blacklisted)
    );
    let mut i = 0;
    let mut other = 0usize;
    bencher.counter(BytesCount::new(size)).bench_local(|| {
        buf.copy_from_slice(&fx.frames[next(&mut i)]);
        let out = gate.admit(&mut buf, T0);
        other += usize::from(out != Outcome::Drop(DropReason::Blacklisted));
        black_box(out);
    });
    assert_eq!(other, 0);
    assert_eq!(gate.stats().decrypted, 0);
}

/// HKDF-SHA256 and the AES key schedule: the cost of a key cache miss.
#[divan::bench]
fn hkdf_derive() -> SessionKey {
    SessionKey::derive(
        black_box(SECRET.as_bytes()),
        black_box(CLUSTER),
        black_box(NODE),
        black_box(&SALT),
    )
}

// ---- heartbeats -------------------------------------------------------------------------

/// Heartbeat frame sizes, as `lsnr-bench hb-udp` sends them.
const HB_SIZES: [usize; 2] = [256, 1024];

/// Heartbeats in the shape `lsnr-bench` sends (`bench_support::heartbeat_payload`: a node
/// monitor padded to the size and as many services as fit), frame `i` at generation `i + 1`,
/// so that each one applied to a view is news (a full snapshot replacing the last).
struct HbFixture {
    payloads: Vec<Vec<u8>>,
    frames: Vec<Vec<u8>>,
}

impl HbFixture {
    fn new(frame_size: usize) -> Self {
        let base = osvc_agent::internals::bench_support::heartbeat_payload(frame_size, NODE.len());
        let base = String::from_utf8(base).unwrap();
        assert!(base.starts_with(r#"{"gen":1,"#));
        let payloads: Vec<Vec<u8>> = (0..FRAMES)
            .map(|i| {
                base.replacen(r#""gen":1,"#, &format!(r#""gen":{},"#, i + 1), 1)
                    .into_bytes()
            })
            .collect();
        let mut sender = Sealer::with_salt(SECRET.as_bytes(), CLUSTER, NODE, SALT, T0);
        let frames = payloads
            .iter()
            .map(|p| {
                let mut f = Vec::new();
                sender.seal(Kind::Heartbeat, p, T0, &mut f).unwrap();
                f
            })
            .collect();
        HbFixture { payloads, frames }
    }

    /// The payloads parsed (outside the timed loops).
    fn parsed(&self) -> Vec<Heartbeat> {
        self.payloads
            .iter()
            .map(|p| Heartbeat::parse(p).unwrap())
            .collect()
    }
}

/// `Heartbeat::parse`: the scanner's pass and the copy of the payload the heartbeat keeps.
#[divan::bench(args = HB_SIZES)]
fn hb_parse_only(bencher: Bencher, size: usize) {
    let fx = HbFixture::new(size);
    let mut i = 0;
    let mut failures = 0usize;
    bencher
        .counter(BytesCount::new(fx.payloads[0].len()))
        .bench_local(|| {
            let r = Heartbeat::parse(&fx.payloads[next(&mut i)]);
            failures += usize::from(r.is_err());
            divan::black_box_drop(r);
        });
    assert_eq!(failures, 0);
}

/// `Heartbeat::parse_after` of a heartbeat payload knowing the sender's previous one, whose
/// services and monitor it repeats (the fixture's heartbeats differ in their generation): a
/// news heartbeat of a node whose content changed little, as the gate reads it.
#[divan::bench(args = HB_SIZES)]
fn hb_parse_after_last(bencher: Bencher, size: usize) {
    let fx = HbFixture::new(size);
    let parsed = fx.parsed();
    let mut i = 0;
    let mut failures = 0usize;
    bencher
        .counter(BytesCount::new(fx.payloads[0].len()))
        .bench_local(|| {
            let c = next(&mut i);
            let last = &parsed[c.checked_sub(1).unwrap_or(parsed.len() - 1)];
            let r = Heartbeat::parse_after(&fx.payloads[c], Some(last));
            failures += usize::from(r.is_err());
            divan::black_box_drop(r);
        });
    assert_eq!(failures, 0);
}

/// `Gate::admit` of heartbeat frames: what a listener worker does with each one before it
/// hands it to the heartbeat shard.
#[divan::bench(args = HB_SIZES)]
fn hb_whole_path(bencher: Bencher, size: usize) {
    let fx = HbFixture::new(size);
    let shared = Arc::new(SharedGuard::new(600_000, 20));
    let mut gate = Gate::new(gate_config(), shared.clone());
    let mut buf = Vec::new();
    let mut i = 0;
    let mut undelivered = 0usize;
    bencher
        .counter(BytesCount::new(fx.payloads[0].len()))
        .bench_local(|| {
            let c = next(&mut i);
            if c == 0 {
                shared.replay.clear();
            }
            buf.clear();
            buf.extend_from_slice(&fx.frames[c]);
            let out = gate.admit(&mut buf, T0);
            undelivered += usize::from(!matches!(
                out,
                Outcome::Deliver {
                    message: Message::Heartbeat { .. },
                    ..
                }
            ));
            divan::black_box_drop(out);
        });
    assert_eq!(undelivered, 0);
}

/// `HbView::apply` of a parsed heartbeat that is news (a newer full snapshot): what the
/// heartbeat shard does with each one. The heartbeats are made outside the timed loop.
#[divan::bench(args = HB_SIZES)]
fn hb_apply(bencher: Bencher, size: usize) {
    let fx = HbFixture::new(size);
    let parsed = fx.parsed();
    let mut view = HbView::new();
    let mut i = 0;
    bencher
        .counter(BytesCount::new(fx.payloads[0].len()))
        .with_inputs(|| {
            let c = next(&mut i);
            // At the wrap, generations go back to 1: start a new view (a rare reset).
            (c == 0, parsed[c].clone())
        })
        .bench_local_values(|(restart, hb)| {
            if restart {
                view = HbView::new();
            }
            black_box(view.apply(hb))
        });
}

// ---- paired ratios ------------------------------------------------------------------------

/// The ratios the targets are about, measured so that the machine's drift cancels: the raw
/// open, the decrypt path and the whole path at 1 KiB take turns in short rounds (256 frames
/// each), and the ratio is taken per round, then its median over the rounds. (The benches
/// above run one after the other, seconds apart: on a shared machine their medians can drift
/// by 2x between them, and so do ratios of their medians.) Prints one line; its own timing
/// is meaningless.
#[divan::bench(sample_count = 1, sample_size = 1)]
fn paired_ratios_1k() {
    const ROUNDS: usize = 400;
    const PER_ROUND: usize = 256;
    let fx = Fixture::new(1024);
    let key = SessionKey::derive(SECRET.as_bytes(), CLUSTER, NODE, &SALT);
    let hl = fx.header_len;
    let shared = Arc::new(SharedGuard::new(600_000, 20));
    let mut gate = Gate::new(gate_config(), shared.clone());
    let mut buf = vec![0u8; fx.frame_len()];
    let mut i = 0;
    let mut per_round: Vec<[f64; 3]> = Vec::with_capacity(ROUNDS);
    let mut failures = 0usize;
    for _ in 0..ROUNDS {
        let mut t = [0f64; 3];
        for (which, slot) in t.iter_mut().enumerate() {
            let start = std::time::Instant::now();
            for _ in 0..PER_ROUND {
                let c = next(&mut i);
                if c == 0 {
                    shared.replay.clear();
                }
                buf.copy_from_slice(&fx.frames[c]);
                match which {
                    0 => {
                        let (h, body) = buf.split_at_mut(hl);
                        failures += usize::from(key.open_with_header(h, body, c as u64).is_err());
                    }
                    1 => {
                        failures +=
                            usize::from(!matches!(gate.open(&mut buf, T0), Opened::Plain { .. }))
                    }
                    _ => {
                        let out = gate.admit(&mut buf, T0);
                        failures += usize::from(!matches!(out, Outcome::Deliver { .. }));
                        divan::black_box_drop(out);
                    }
                }
            }
            *slot = start.elapsed().as_nanos() as f64 / PER_ROUND as f64;
        }
        per_round.push(t);
    }
    assert_eq!(failures, 0);
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let col = |k: usize| median(per_round.iter().map(|r| r[k]).collect());
    let ratio = |k: usize| median(per_round.iter().map(|r| r[k] / r[0]).collect());
    eprintln!(
        "paired, 1 KiB, {ROUNDS} rounds of {PER_ROUND} frames: raw open {:.0} ns, decrypt path {:.0} ns, whole path {:.0} ns; median per-round ratio: decrypt path / raw open {:.2}, whole path / raw open {:.2}",
        col(0),
        col(1),
        col(2),
        ratio(1),
        ratio(2)
    );
}

/// The keyring's price (PROTOCOL.md, "Keys"): `Gate::open` of 1 KiB frames by a gate that
/// holds a primary and an alternate secret, for frames sealed under each, on a key-cache hit
/// (one session, its key cached) and on a miss (each frame a new session: HKDF, then the open;
/// under the alternate, the failed open under the primary first). The four paths take turns
/// in rounds, as in `paired_ratios_1k`; prints the per-round ratios alternate / primary.
#[divan::bench(sample_count = 1, sample_size = 1)]
fn paired_keyring_1k() {
    const ROUNDS: usize = 100;
    const PER_ROUND: usize = 256;
    const ALT: &str = "the next cluster secret";
    let plain = request_of_size(1024).to_vec();
    // Frame k: counter k of one session, or counter 0 of session k.
    let sealed = |secret: &str, new_sessions: bool| -> Vec<Vec<u8>> {
        let mut one = Sealer::with_salt(secret.as_bytes(), CLUSTER, NODE, SALT, T0);
        (0..FRAMES)
            .map(|k| {
                let mut f = Vec::new();
                if new_sessions {
                    // Spread over the replay table's shards (by the salt's first byte), as random
                    // salts are.
                    let salt = (k as u128 + 1).to_le_bytes();
                    Sealer::with_salt(secret.as_bytes(), CLUSTER, NODE, salt, T0)
                        .seal(Kind::Request, &plain, T0, &mut f)
                        .unwrap();
                } else {
                    one.seal(Kind::Request, &plain, T0, &mut f).unwrap();
                }
                f
            })
            .collect()
    };
    let config = |extra_member: bool| {
        let mut c = (*gate_config()).clone();
        c.alt_secret = Some(ALT.into());
        if extra_member {
            // Another member set: `set_config` empties the key cache.
            c.members.insert("node9".into());
        }
        Arc::new(c)
    };
    struct Path {
        frames: Vec<Vec<u8>>,
        gate: Gate,
        shared: Arc<SharedGuard>,
        i: usize,
        misses: bool,
        wraps: usize,
    }
    let mut paths: Vec<Path> = [(SECRET, false), (ALT, false), (SECRET, true), (ALT, true)]
        .into_iter()
        .map(|(secret, misses)| {
            let shared = Arc::new(SharedGuard::new(600_000, 20));
            Path {
                frames: sealed(secret, misses),
                gate: Gate::new(config(false), shared.clone()),
                shared,
                i: 0,
                misses,
                wraps: 0,
            }
        })
        .collect();
    let mut buf = vec![0u8; paths[0].frames[0].len()];
    let mut per_round: Vec<[f64; 4]> = Vec::with_capacity(ROUNDS);
    let mut failures = 0usize;
    for _ in 0..ROUNDS {
        let mut t = [0f64; 4];
        for (slot, p) in t.iter_mut().zip(paths.iter_mut()) {
            let start = std::time::Instant::now();
            for _ in 0..PER_ROUND {
                let c = next(&mut p.i);
                if c == 0 {
                    p.shared.replay.clear();
                    if p.misses {
                        // Each session is seen once per cycle: empty the cache between.
                        p.wraps += 1;
                        p.gate.set_config(config(p.wraps % 2 == 1));
                    }
                }
                buf.copy_from_slice(&p.frames[c]);
                failures += usize::from(!matches!(p.gate.open(&mut buf, T0), Opened::Plain { .. }));
            }
            *slot = start.elapsed().as_nanos() as f64 / PER_ROUND as f64;
        }
        per_round.push(t);
    }
    assert_eq!(failures, 0);
    for p in &paths {
        assert_eq!(p.gate.stats().invalid_total(), 0);
    }
    // Alternate hits are the one session that opened under it once, then its cached key.
    assert_eq!(paths[1].gate.stats().opened_alternate, 1);
    assert_eq!(paths[0].gate.stats().opened_alternate, 0);
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let col = |k: usize| median(per_round.iter().map(|r| r[k]).collect());
    let ratio = |a: usize, b: usize| median(per_round.iter().map(|r| r[a] / r[b]).collect());
    eprintln!(
        "paired keyring, 1 KiB, {ROUNDS} rounds of {PER_ROUND} frames: hit primary {:.0} ns, hit alternate {:.0} ns, miss primary {:.0} ns, miss alternate {:.0} ns; median per-round ratio alternate / primary: hit {:.2}, miss {:.2}",
        col(0),
        col(1),
        col(2),
        col(3),
        ratio(1, 0),
        ratio(3, 2)
    );
}

/// The same for heartbeats at 1 KiB, from the frame to the peer's view: the raw open, then
/// `Gate::admit` + `HbView::apply` (the listener worker's work and the heartbeat shard's) of
/// heartbeats that are all news (each a new generation: read in full, installed), then of a
/// node repeating one heartbeat (recognised as a repeat, stale for the view). Prints one line.
#[divan::bench(sample_count = 1, sample_size = 1)]
fn paired_heartbeats_1k() {
    const ROUNDS: usize = 200;
    const PER_ROUND: usize = 256;
    let news = HbFixture::new(1024);
    let repeat = {
        let mut sender = Sealer::with_salt(SECRET.as_bytes(), CLUSTER, "node3", SALT, T0);
        (0..FRAMES)
            .map(|_| {
                let mut f = Vec::new();
                sender
                    .seal(Kind::Heartbeat, &news.payloads[0], T0, &mut f)
                    .unwrap();
                f
            })
            .collect::<Vec<_>>()
    };
    let key = SessionKey::derive(SECRET.as_bytes(), CLUSTER, NODE, &SALT);
    let hl = header_len(NODE.len());
    let shared = Arc::new(SharedGuard::new(600_000, 20));
    let mut gate = Gate::new(gate_config(), shared.clone());
    let mut views = [HbView::new(), HbView::new()];
    let mut buf = Vec::new();
    let mut i = 0;
    let mut per_round: Vec<[f64; 3]> = Vec::with_capacity(ROUNDS);
    let mut failures = 0usize;
    for _ in 0..ROUNDS {
        let mut t = [0f64; 3];
        for (which, slot) in t.iter_mut().enumerate() {
            let start = std::time::Instant::now();
            for _ in 0..PER_ROUND {
                let c = next(&mut i);
                if c == 0 {
                    shared.replay.clear();
                    views = [HbView::new(), HbView::new()];
                }
                buf.clear();
                buf.extend_from_slice(if which == 2 {
                    &repeat[c]
                } else {
                    &news.frames[c]
                });
                if which == 0 {
                    let (h, body) = buf.split_at_mut(hl);
                    failures += usize::from(key.open_with_header(h, body, c as u64).is_err());
                    continue;
                }
                match gate.admit(&mut buf, T0) {
                    Outcome::Deliver {
                        message: Message::Heartbeat { heartbeat, .. },
                        ..
                    } => failures += usize::from(views[which - 1].apply(heartbeat).is_err()),
                    _ => failures += 1,
                }
            }
            *slot = start.elapsed().as_nanos() as f64 / PER_ROUND as f64;
        }
        per_round.push(t);
    }
    assert_eq!(failures, 0);
    assert!(gate.stats().heartbeat_repeats > 0);
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let col = |k: usize| median(per_round.iter().map(|r| r[k]).collect());
    let ratio = |k: usize| median(per_round.iter().map(|r| r[k] / r[0]).collect());
    eprintln!(
        "paired heartbeats, 1 KiB, {ROUNDS} rounds of {PER_ROUND} frames: raw open {:.0} ns, admit + apply of news {:.0} ns, of repeats {:.0} ns; median per-round ratio to the raw open: news {:.2}, repeats {:.2}",
        col(0),
        col(1),
        col(2),
        ratio(1),
        ratio(2)
    );
}

/// A banned member's frame against the raw open, at each size, in turns as in
/// `paired_ratios_1k`: the copy alone, the copy + raw open (the open decrypts in place, so
/// every frame needs a fresh copy of the sealed one), and `Gate::admit` of the banned name's
/// frame where it lies (a drop writes nothing, so no copy). All three read frames from a
/// pool of `HOT` that stays in cache, as a datagram the kernel has just written is: the
/// other benches cycle through megabytes of frames, whose cache misses would be most of
/// a drop's time. Prints the per-round ratios drop / (copy + open), and drop / open with the
/// copy taken off.
#[divan::bench(args = SIZES, sample_count = 1, sample_size = 1)]
fn paired_blacklisted_drop(size: usize) {
    const ROUNDS: usize = 200;
    const PER_ROUND: usize = 256;
    const HOT: usize = 8;
    let fx = Fixture::new(size);
    let key = SessionKey::derive(SECRET.as_bytes(), CLUSTER, NODE, &SALT);
    let hl = fx.header_len;
    let shared = Arc::new(SharedGuard::new(0, 20));
    for _ in 0..5 {
        shared.blacklist.record_invalid(NODE, T0);
    }
    let mut gate = Gate::new(gate_config(), shared);
    let sealed: Vec<Vec<u8>> = fx.frames[..HOT].to_vec();
    let mut banned = sealed.clone();
    let mut buf = vec![0u8; fx.frame_len()];
    let mut per_round: Vec<[f64; 3]> = Vec::with_capacity(ROUNDS);
    let mut failures = 0usize;
    for _ in 0..ROUNDS {
        let mut t = [0f64; 3];
        for (which, slot) in t.iter_mut().enumerate() {
            let start = std::time::Instant::now();
            for k in 0..PER_ROUND {
                let c = k % HOT;
                match which {
                    0 => {
                        buf.copy_from_slice(&sealed[c]);
                        black_box(&mut buf);
                    }
                    1 => {
                        buf.copy_from_slice(&sealed[c]);
                        let (h, body) = buf.split_at_mut(hl);
                        failures += usize::from(key.open_with_header(h, body, c as u64).is_err());
                    }
                    _ => {
                        let out = gate.admit(&mut banned[c], T0);
                        failures += usize::from(out != Outcome::Drop(DropReason::Blacklisted));
                    }
                }
            }
            *slot = start.elapsed().as_nanos() as f64 / PER_ROUND as f64;
        }
        per_round.push(t);
    }
    assert_eq!(failures, 0);
    assert_eq!(gate.stats().decrypted, 0);
    assert_eq!(banned, sealed, "a drop writes nothing");
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let col = |k: usize| median(per_round.iter().map(|r| r[k]).collect());
    let ratio = |f: &dyn Fn(&[f64; 3]) -> f64| median(per_round.iter().map(f).collect());
    eprintln!(
        "paired blacklisted drop, {size} B, {ROUNDS} rounds of {PER_ROUND} frames: copy {:.0} ns, copy + raw open {:.0} ns, drop {:.1} ns; median per-round ratio drop / (copy + open) {:.3}, drop / open without the copy {:.3}",
        col(0),
        col(1),
        col(2),
        ratio(&|r| r[2] / r[1]),
        ratio(&|r| r[2] / (r[1] - r[0]).max(1.0)),
    );
}
