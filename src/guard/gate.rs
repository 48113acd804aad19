//! The receive path as a pure function of (frame, clock): PROTOCOL.md's validation order,
//! returning what the listener must do. No I/O; the listener owns sockets and logging.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::blacklist::{BanCache, Blacklist, Strike, Verdict};
use super::ratelimit::RateLimit;
pub use super::stats::GateStats;
use crate::hb::{HbError, Heartbeat};
use crate::wire::FastState;
use crate::wire::crypto::{Fingerprint, OpenError, SessionKey};
use crate::wire::frame::{FrameView, Header, HeaderError, Kind};
use crate::wire::payload::{PayloadError, Request, RequestParser};
use crate::wire::replay::{Stale, within_skew};
use crate::wire::session::{KeyCache, ReplayError, ReplayTable};

/// What the receiver needs of the configuration, swapped as a whole on reload.
#[derive(Clone, PartialEq, Eq)]
pub struct GateConfig {
    pub cluster_name: String,
    /// The keyring (PROTOCOL.md, "Keys"): frames open under the primary or the alternate.
    pub secret: String,
    pub alt_secret: Option<String>,
    pub members: HashSet<String>,
    pub max_clock_skew_ms: u64,
    pub accept_joins: bool,
    /// When the receiving process started (ms since the epoch): a frame stamped earlier was
    /// recorded before this process's replay windows existed (PROTOCOL.md step 5).
    pub started_ms: u64,
}

/// Secrets are shown by fingerprint only.
impl std::fmt::Debug for GateConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let fp = |s: &str| Fingerprint::of(s.as_bytes(), &self.cluster_name);
        f.debug_struct("GateConfig")
            .field("cluster_name", &self.cluster_name)
            .field("secret", &fp(&self.secret))
            .field("alt_secret", &self.alt_secret.as_deref().map(fp))
            .field("members", &self.members)
            .field("max_clock_skew_ms", &self.max_clock_skew_ms)
            .field("accept_joins", &self.accept_joins)
            .field("started_ms", &self.started_ms)
            .finish()
    }
}

/// State shared by every worker of one listener.
pub struct SharedGuard {
    pub blacklist: Blacklist,
    pub join_limit: RateLimit,
    pub replay: ReplayTable,
}

impl SharedGuard {
    pub fn new(blacklist_ttl_ms: u64, join_rate: u32) -> Self {
        SharedGuard {
            blacklist: Blacklist::new(blacklist_ttl_ms),
            join_limit: RateLimit::per_second(join_rate),
            replay: ReplayTable::new(1 << 16),
        }
    }
}

/// Why a frame was not delivered. `Invalid` ones count toward the blacklist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Step 3: the nodename is banned. Not decrypted, not counted.
    Blacklisted,
    /// A non-member's frame beyond `listener.join_rate`. Not decrypted, not counted.
    JoinRateLimited,
    /// Too many live sessions to track a new one. Not counted.
    SessionTableFull,
    /// A member's heartbeat that authenticated but does not have the heartbeat's shape
    /// (step 7): dropped and counted, not invalid.
    HeartbeatRefused,
    Invalid(Invalid),
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("{0}")]
    Header(HeaderError),
    #[error("unexpected frame kind {}", .0.as_str())]
    UnexpectedKind(Kind),
    #[error("not a cluster member")]
    NotMember,
    #[error("timestamp outside the allowed clock skew")]
    ClockSkew,
    #[error("timestamp earlier than the receiver's start")]
    BeforeStart,
    #[error("{0}")]
    Stale(Stale),
    #[error("decryption failed")]
    Decrypt,
    #[error("{0}")]
    Payload(PayloadError),
}

/// Classes of invalid frames, for counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InvalidClass {
    Header,
    Kind,
    NotMember,
    ClockSkew,
    BeforeStart,
    Replayed,
    TooOld,
    Decrypt,
    Json,
}

impl InvalidClass {
    pub const ALL: [InvalidClass; 9] = [
        InvalidClass::Header,
        InvalidClass::Kind,
        InvalidClass::NotMember,
        InvalidClass::ClockSkew,
        InvalidClass::BeforeStart,
        InvalidClass::Replayed,
        InvalidClass::TooOld,
        InvalidClass::Decrypt,
        InvalidClass::Json,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            InvalidClass::Header => "header",
            InvalidClass::Kind => "kind",
            InvalidClass::NotMember => "not_member",
            InvalidClass::ClockSkew => "clock_skew",
            InvalidClass::BeforeStart => "before_start",
            InvalidClass::Replayed => "replayed",
            InvalidClass::TooOld => "too_old",
            InvalidClass::Decrypt => "decrypt",
            InvalidClass::Json => "json",
        }
    }
}

impl Invalid {
    pub fn class(&self) -> InvalidClass {
        match self {
            Invalid::Header(_) => InvalidClass::Header,
            Invalid::UnexpectedKind(_) => InvalidClass::Kind,
            Invalid::NotMember => InvalidClass::NotMember,
            Invalid::ClockSkew => InvalidClass::ClockSkew,
            Invalid::BeforeStart => InvalidClass::BeforeStart,
            Invalid::Stale(Stale::Replayed) => InvalidClass::Replayed,
            Invalid::Stale(Stale::TooOld) => InvalidClass::TooOld,
            Invalid::Decrypt => InvalidClass::Decrypt,
            Invalid::Payload(_) => InvalidClass::Json,
        }
    }
}

#[derive(Debug, PartialEq)]
pub enum Message {
    Request(Request),
    /// A member's heartbeat, with the member's name as the gate keeps it: shared, so that
    /// the heartbeat shard keys its peers by it with no copy per heartbeat.
    Heartbeat {
        sender: Arc<str>,
        heartbeat: Heartbeat,
    },
}

/// What the listener does with a received frame.
#[derive(Debug, PartialEq)]
pub enum Outcome<'b> {
    /// An empty packet: run the queued actions.
    Dequeue,
    Drop(DropReason),
    Deliver {
        nodename: &'b str,
        message: Message,
    },
    /// An authenticated request that cannot be served as it is (malformed, unknown action,
    /// wrong options, or a non-member's other than a join): answered with a non-zero status
    /// and `error` over TCP, not an invalid message (step 7).
    Refuse {
        nodename: &'b str,
        error: String,
    },
}

/// The header of a TCP frame read before its body (`Gate::check_header`).
#[derive(Debug, PartialEq)]
pub enum HeaderCheck {
    /// Steps 2 to 5 passed: read the body, then `Gate::admit_after_header`.
    Pass,
    /// The frame is dropped: its body is not to be read.
    Drop(DropReason),
}

/// A frame after steps 1 to 6 (`Gate::open`).
#[derive(Debug, PartialEq)]
pub enum Opened<'b> {
    Dequeue,
    Drop(DropReason),
    /// Authenticated and decrypted; `member` false for a non-member's request (which only a
    /// join may be).
    Plain {
        nodename: &'b str,
        kind: Kind,
        member: bool,
        payload: &'b [u8],
    },
}

/// Rare events the listener logs once each, with the sender's address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    Banned(String),
    BanExpired(String),
}

fn member_set(config: &GateConfig) -> HashSet<Box<str>, FastState> {
    let mut set = HashSet::with_capacity_and_hasher(config.members.len(), FastState::default());
    set.extend(config.members.iter().map(|m| Box::from(m.as_str())));
    set
}

/// A member heard from, as a worker's gate knows it.
struct Sender {
    name: Arc<str>,
    last: Option<Heartbeat>,
}

/// A heartbeat larger than this is not kept to recognise its repeats: the memory kept is at
/// most this much per member and worker, and a node whose content needs split snapshots
/// rarely repeats a datagram.
const MAX_REMEMBERED_HEARTBEAT: usize = 8 * 1024;

/// The secrets a frame may open under, the primary first, each with its fingerprint (which
/// the key cache records as the source of a key).
fn keyring(config: &GateConfig) -> Vec<(Fingerprint, Box<[u8]>)> {
    std::iter::once(&config.secret)
        .chain(config.alt_secret.as_ref())
        .map(|s| {
            (
                Fingerprint::of(s.as_bytes(), &config.cluster_name),
                s.as_bytes().into(),
            )
        })
        .collect()
}

/// Sessions whose keys a gate keeps: every member's (each sends under one session per
/// process) with room for one-shot clients, and at least `MIN_CACHED_SESSIONS`. Below the
/// member count, a cluster's steady heartbeats would miss the cache in proportion (random
/// eviction) and pay an HKDF each.
const MIN_CACHED_SESSIONS: usize = 8192;

fn key_cache_capacity(config: &GateConfig) -> usize {
    MIN_CACHED_SESSIONS.max(config.members.len() + config.members.len() / 4)
}

/// A copy of a frame's body larger than this is not kept between frames (see `open_uncached`).
const MAX_KEPT_RETRY: usize = 64 * 1024;

/// One worker's receiver: shared guard state plus its own key cache and parser buffers.
pub struct Gate {
    config: Arc<GateConfig>,
    /// `config.members` under a cheaper hasher than SipHash (the set comes from the
    /// configuration, not from the wire), rebuilt with the configuration.
    members: HashSet<Box<str>, FastState>,
    shared: Arc<SharedGuard>,
    keys: KeyCache,
    /// This worker's copy of the banned names (step 3 without a lock).
    bans: BanCache,
    keyring: Vec<(Fingerprint, Box<[u8]>)>,
    /// The sealed body of a frame tried under more than one secret: a failed open leaves the
    /// buffer unspecified, so the next secret is tried on this copy's bytes.
    retry: Vec<u8>,
    parser: RequestParser,
    /// Each member heard from by this worker: its name to hand out, its last heartbeat.
    senders: HashMap<Box<str>, Sender, FastState>,
    stats: GateStats,
    notices: Vec<Notice>,
}

impl Gate {
    pub fn new(config: Arc<GateConfig>, shared: Arc<SharedGuard>) -> Self {
        Gate {
            members: member_set(&config),
            keyring: keyring(&config),
            retry: Vec::new(),
            bans: BanCache::new(&shared.blacklist),
            keys: KeyCache::new(key_cache_capacity(&config)),
            config,
            shared,
            parser: RequestParser::new(),
            senders: HashMap::with_hasher(FastState::default()),
            stats: GateStats::default(),
            notices: Vec::new(),
        }
    }

    pub fn config(&self) -> &Arc<GateConfig> {
        &self.config
    }

    /// Takes effect for the next frame. Cached keys are dropped if they may no longer be valid.
    pub fn set_config(&mut self, config: Arc<GateConfig>) {
        if config.cluster_name != self.config.cluster_name {
            self.keys.clear();
        }
        if config.secret != self.config.secret
            || config.alt_secret != self.config.alt_secret
            || config.cluster_name != self.config.cluster_name
        {
            self.keyring = keyring(&config);
            // A key derived from a secret still held stays valid, whichever slot it is in now.
            let held: Vec<Fingerprint> = self.keyring.iter().map(|(fp, _)| *fp).collect();
            self.keys.retain_sources(&held);
        }
        if config.members != self.config.members {
            self.members = member_set(&config);
            self.senders.clear();
            // A cached key stands for membership (see `open`).
            self.keys.clear();
            self.keys.set_capacity(key_cache_capacity(&config));
        }
        self.config = config;
    }

    pub fn stats(&self) -> &GateStats {
        &self.stats
    }

    /// Bans and expiries since the last call, for the listener to log.
    pub fn take_notices(&mut self) -> Vec<Notice> {
        std::mem::take(&mut self.notices)
    }

    pub fn has_notices(&self) -> bool {
        !self.notices.is_empty()
    }

    /// Runs one received frame through PROTOCOL.md's validation order. The buffer is
    /// decrypted in place, then its payload parsed.
    pub fn admit<'b>(&mut self, buf: &'b mut [u8], now_ms: u64) -> Outcome<'b> {
        // A dropped frame (a banned name's flood) returns without entering step 7's frame.
        match self.open(buf, now_ms) {
            Opened::Drop(reason) => Outcome::Drop(reason),
            opened => self.read_payload(opened),
        }
    }

    /// `admit` for a TCP frame whose header passed `check_header`: the join rate token that
    /// check took stands for this frame.
    pub fn admit_after_header<'b>(&mut self, buf: &'b mut [u8], now_ms: u64) -> Outcome<'b> {
        let opened = self.open_frame(buf, now_ms, true);
        self.read_payload(opened)
    }

    /// Step 7: the payload of a frame that authenticated. Whatever it says, its sender held
    /// the secret: its consecutive invalid count goes back to 0.
    #[inline(never)]
    fn read_payload<'b>(&mut self, opened: Opened<'b>) -> Outcome<'b> {
        let (nodename, kind, member, payload) = match opened {
            Opened::Dequeue => return Outcome::Dequeue,
            Opened::Drop(reason) => return Outcome::Drop(reason),
            Opened::Plain {
                nodename,
                kind,
                member,
                payload,
            } => (nodename, kind, member, payload),
        };
        self.shared.blacklist.record_valid(nodename);
        // A heartbeat that opened is a member's (`open` refuses a non-member's).
        let message = match kind {
            Kind::Request => match self.parser.parse(payload) {
                Ok(r) => Message::Request(r),
                Err(e) => return self.refuse(nodename, e.to_string()),
            },
            _ => match self.heartbeat(nodename, payload) {
                Ok((sender, heartbeat)) => Message::Heartbeat { sender, heartbeat },
                Err(_) => {
                    self.stats.heartbeats_refused += 1;
                    return Outcome::Drop(DropReason::HeartbeatRefused);
                }
            },
        };
        if !member && message != Message::Request(Request::Join) {
            return self.refuse(
                nodename,
                "not a cluster member: only a join is accepted".into(),
            );
        }
        self.stats.delivered += 1;
        Outcome::Deliver { nodename, message }
    }

    fn refuse<'b>(&mut self, nodename: &'b str, error: String) -> Outcome<'b> {
        self.stats.requests_refused += 1;
        Outcome::Refuse { nodename, error }
    }

    /// Steps 2 to 5 on the first bytes of a TCP frame of `total` bytes, before its body is
    /// read: `head` holds `frame::head_len(head, total)` bytes (the whole header, or as much
    /// of it as the frame has). A frame dropped here is counted as
    /// received, with its fate; one that passes is counted by `admit_after_header`.
    pub fn check_header(&mut self, head: &[u8], total: usize, now_ms: u64) -> HeaderCheck {
        let fields = match FrameView::header(head, total) {
            Ok(f) => f,
            Err(failure) => {
                self.stats.received += 1;
                let reason = Invalid::Header(failure.error);
                return HeaderCheck::Drop(self.invalid(failure.nodename, reason, now_ms));
            }
        };
        if let Err(reason) = self.blacklisted(fields.nodename, now_ms) {
            self.stats.received += 1;
            return HeaderCheck::Drop(reason);
        }
        let cached = self.keys.get(fields.nodename, fields.salt).is_some();
        match self.screen(&fields, cached, false, now_ms) {
            Ok(_) => HeaderCheck::Pass,
            Err(reason) => {
                self.stats.received += 1;
                HeaderCheck::Drop(reason)
            }
        }
    }

    /// Step 3, before anything else is spent (not even the key cache's lookup): the name
    /// from the clear header against this worker's copy of the banned names.
    #[inline(always)]
    fn blacklisted(&mut self, nodename: &str, now_ms: u64) -> Result<(), DropReason> {
        match self.bans.check(&self.shared.blacklist, nodename, now_ms) {
            Verdict::Allowed => Ok(()),
            Verdict::Banned => {
                self.stats.dropped_blacklisted += 1;
                Err(DropReason::Blacklisted)
            }
            Verdict::BanExpired => {
                self.notices.push(Notice::BanExpired(nodename.to_owned()));
                Ok(())
            }
        }
    }

    /// Steps 4 and 5 on a parsed header that passed step 3: Ok(member) if the frame may be
    /// decrypted. The join rate token is taken unless `join_token_taken` (a TCP header
    /// checked before).
    fn screen(
        &mut self,
        h: &Header<'_>,
        cached: bool,
        join_token_taken: bool,
        now_ms: u64,
    ) -> Result<bool, DropReason> {
        let nodename = h.nodename;
        if !matches!(h.kind, Kind::Request | Kind::Heartbeat) {
            return Err(self.invalid(Some(nodename), Invalid::UnexpectedKind(h.kind), now_ms));
        }
        // 4. Membership. A session whose key is cached is a member's: only members' keys are
        //    cached, and the cache is emptied when the members change. A non-member may only
        //    send a join request, decrypted under the global rate limit; beyond it the frame
        //    is dropped uncounted.
        let member = cached || self.members.contains(nodename);
        if !member {
            if !join_token_taken
                && !self
                    .shared
                    .join_limit
                    .try_acquire(now_ms.saturating_mul(1000))
            {
                self.stats.dropped_join_rate += 1;
                return Err(DropReason::JoinRateLimited);
            }
            if h.kind != Kind::Request || !self.config.accept_joins {
                return Err(self.invalid(Some(nodename), Invalid::NotMember, now_ms));
            }
        }
        // 5. Freshness and replay (read-only until the frame authenticates). The replay
        //    windows live in memory: a frame stamped before this process started may have
        //    been accepted by the process before it.
        if h.ts_ms < self.config.started_ms {
            return Err(self.invalid(Some(nodename), Invalid::BeforeStart, now_ms));
        }
        let skew = self.config.max_clock_skew_ms;
        if !within_skew(now_ms, h.ts_ms, skew) {
            return Err(self.invalid(Some(nodename), Invalid::ClockSkew, now_ms));
        }
        if let Err(stale) = self.shared.replay.check(nodename, h.salt, h.counter) {
            return Err(self.invalid(Some(nodename), Invalid::Stale(stale), now_ms));
        }
        Ok(member)
    }

    /// Steps 1 to 6 of the validation order: the frame authenticated and decrypted in place,
    /// or what to do instead. Its payload is not parsed yet (`admit` does that).
    pub fn open<'b>(&mut self, buf: &'b mut [u8], now_ms: u64) -> Opened<'b> {
        self.open_frame(buf, now_ms, false)
    }

    fn open_frame<'b>(
        &mut self,
        buf: &'b mut [u8],
        now_ms: u64,
        join_token_taken: bool,
    ) -> Opened<'b> {
        self.stats.received += 1;
        // 1. Empty packet.
        if buf.is_empty() {
            self.stats.dequeues += 1;
            return Opened::Dequeue;
        }
        // 2. Header.
        let frame = match FrameView::split_mut(buf) {
            Ok(f) => f,
            Err(failure) => {
                let reason = Invalid::Header(failure.error);
                return Opened::Drop(self.invalid(failure.nodename, reason, now_ms));
            }
        };
        let fields = frame.fields;
        let Header {
            nodename,
            kind,
            salt,
            ts_ms,
            counter,
        } = fields;
        let salt = *salt;
        let (header, body) = (frame.header, frame.body);
        // 3.
        if let Err(reason) = self.blacklisted(nodename, now_ms) {
            return Opened::Drop(reason);
        }
        let cached = self.keys.get(nodename, &salt).is_some();
        // 4 and 5.
        let member = match self.screen(&fields, cached, join_token_taken, now_ms) {
            Ok(m) => m,
            Err(reason) => return Opened::Drop(reason),
        };
        let skew = self.config.max_clock_skew_ms;
        // 6. Decrypt in place, with the cached session key if this session authenticated
        //    before, else under each secret of the keyring in turn.
        let opened = match self.keys.peek(nodename, &salt) {
            Some(key) => key
                .open_with_header(header, body, counter)
                .map(|n| (n, None)),
            None => open_uncached(
                &self.keyring,
                &mut self.retry,
                &self.config.cluster_name,
                &fields,
                header,
                body,
            )
            .map(|(n, key)| (n, Some(key))),
        };
        // However many secrets were tried, a frame that opened under none is one invalid
        // message.
        let Ok((plain_len, new_key)) = opened else {
            return Opened::Drop(self.invalid(Some(nodename), Invalid::Decrypt, now_ms));
        };
        self.stats.decrypted += 1;
        match self
            .shared
            .replay
            .commit(nodename, &salt, counter, ts_ms, now_ms, skew)
        {
            Ok(()) => {}
            Err(ReplayError::Stale(stale)) => {
                return Opened::Drop(self.invalid(Some(nodename), Invalid::Stale(stale), now_ms));
            }
            Err(ReplayError::Full) => {
                self.stats.dropped_session_full += 1;
                return Opened::Drop(DropReason::SessionTableFull);
            }
        }
        if let Some((key, source)) = new_key {
            if Some(&source) != self.keyring.first().map(|(fp, _)| fp) {
                self.stats.opened_alternate += 1;
            }
            if member {
                self.keys.insert_authenticated(nodename, &salt, key, source);
            }
        }
        let payload: &'b [u8] = &body[..plain_len];
        Opened::Plain {
            nodename,
            kind,
            member,
            payload,
        }
    }

    /// A member's heartbeat. Between changes a node sends the same content beat after beat:
    /// a payload equal, byte for byte, to the last one read from that member is that
    /// heartbeat again (read and checked already), handed out as a clone (no allocation).
    /// Other payloads are read knowing the last one (`Heartbeat::parse_after`). With the
    /// member's shared name.
    fn heartbeat(
        &mut self,
        nodename: &str,
        payload: &[u8],
    ) -> Result<(Arc<str>, Heartbeat), HbError> {
        let sender = match self.senders.get_mut(nodename) {
            Some(s) => s,
            None => self.senders.entry(nodename.into()).or_insert(Sender {
                name: Arc::from(nodename),
                last: None,
            }),
        };
        if let Some(last) = &sender.last
            && last.text().as_bytes() == payload
        {
            self.stats.heartbeat_repeats += 1;
            return Ok((sender.name.clone(), last.clone()));
        }
        let hb = Heartbeat::parse_after(payload, sender.last.as_ref())?;
        sender.last = (payload.len() <= MAX_REMEMBERED_HEARTBEAT).then(|| hb.clone());
        Ok((sender.name.clone(), hb))
    }

    /// Counts an invalid message, and charges it to `nodename` only if that is a member's
    /// name: made-up names never enter the blacklist (PROTOCOL.md, "Validation order").
    #[cold]
    fn invalid(&mut self, nodename: Option<&str>, reason: Invalid, now_ms: u64) -> DropReason {
        self.stats.invalid[reason.class() as usize] += 1;
        if let Some(name) = nodename
            && self.members.contains(name)
            && self.shared.blacklist.record_invalid(name, now_ms) == Strike::Banned
        {
            self.notices.push(Notice::Banned(name.to_owned()));
        }
        DropReason::Invalid(reason)
    }
}

/// Step 6 on a key-cache miss: the frame opened under the primary, else under the alternate.
/// Returns the plaintext length, the session key and the fingerprint of its secret.
fn open_uncached(
    keyring: &[(Fingerprint, Box<[u8]>)],
    retry: &mut Vec<u8>,
    cluster: &str,
    h: &Header<'_>,
    header: &[u8],
    body: &mut [u8],
) -> Result<(usize, (SessionKey, Fingerprint)), OpenError> {
    let several = keyring.len() > 1;
    if several {
        retry.clear();
        retry.extend_from_slice(body);
    }
    let mut result = Err(OpenError);
    for (i, (fp, secret)) in keyring.iter().enumerate() {
        if i > 0 {
            body.copy_from_slice(retry);
        }
        let key = SessionKey::derive(secret, cluster, h.nodename, h.salt);
        if let Ok(n) = key.open_with_header(header, body, h.counter) {
            result = Ok((n, (key, *fp)));
            break;
        }
    }
    if several && retry.capacity() > MAX_KEPT_RETRY {
        *retry = Vec::new();
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Sealer;

    const NOW: u64 = 1_764_000_000_000;

    fn config(members: &[&str]) -> Arc<GateConfig> {
        Arc::new(GateConfig {
            cluster_name: "c".into(),
            secret: "s".into(),
            alt_secret: None,
            members: members.iter().map(|m| m.to_string()).collect(),
            max_clock_skew_ms: 60_000,
            accept_joins: false,
            started_ms: NOW - 1_000,
        })
    }

    fn frame(s: &mut Sealer) -> Vec<u8> {
        let mut f = Vec::new();
        s.seal(Kind::Request, &Request::DaemonStatus.to_vec(), NOW, &mut f)
            .unwrap();
        f
    }

    fn heartbeat_frame(s: &mut Sealer, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        s.seal(Kind::Heartbeat, payload, NOW, &mut f).unwrap();
        f
    }

    /// A member's heartbeat equal to its previous one is recognised, not parsed again; it is
    /// delivered as the same heartbeat. Anything else is read as usual.
    #[test]
    fn repeated_heartbeats_are_recognised() {
        let mut gate = Gate::new(config(&["node1"]), Arc::new(SharedGuard::new(0, 20)));
        let mut s = Sealer::with_salt(b"s", "c", "node1", [1; 16], NOW);
        let a = br#"{"gen":3,"monitor":{"m":1},"services":{"x":{"avail":"up"}}}"#;
        let b = br#"{"gen":4,"monitor":{"m":1},"services":{"x":{"avail":"up"}}}"#;
        let bad = br#"{"gen":0,"monitor":{},"services":{}}"#;
        let expect = |p: &[u8]| Outcome::Deliver {
            nodename: "node1",
            message: Message::Heartbeat {
                sender: Arc::from("node1"),
                heartbeat: Heartbeat::parse(p).unwrap(),
            },
        };
        assert_eq!(gate.admit(&mut heartbeat_frame(&mut s, a), NOW), expect(a));
        assert_eq!(gate.stats().heartbeat_repeats, 0);
        assert_eq!(gate.admit(&mut heartbeat_frame(&mut s, a), NOW), expect(a));
        assert_eq!(gate.stats().heartbeat_repeats, 1);
        assert_eq!(gate.admit(&mut heartbeat_frame(&mut s, b), NOW), expect(b));
        assert_eq!(gate.admit(&mut heartbeat_frame(&mut s, a), NOW), expect(a));
        assert_eq!(
            gate.stats().heartbeat_repeats,
            1,
            "a is no longer the last one"
        );
        // A heartbeat of the wrong shape is not remembered: its repeat is refused again. It
        // is not invalid: it authenticated.
        for _ in 0..2 {
            assert_eq!(
                gate.admit(&mut heartbeat_frame(&mut s, bad), NOW),
                Outcome::Drop(DropReason::HeartbeatRefused)
            );
        }
        assert_eq!(gate.stats().heartbeats_refused, 2);
        assert_eq!(gate.stats().invalid_total(), 0);
        assert_eq!(gate.stats().heartbeat_repeats, 1);
        assert_eq!(gate.stats().delivered, 4);
    }

    /// The gate's own member set is rebuilt with the configuration.
    #[test]
    fn membership_follows_set_config() {
        // A join rate of 0 drops every non-member's frame before decryption.
        let mut gate = Gate::new(config(&["node1"]), Arc::new(SharedGuard::new(0, 0)));
        let mut s = Sealer::with_salt(b"s", "c", "node2", [1; 16], NOW);
        let not_member = Outcome::Drop(DropReason::JoinRateLimited);
        assert_eq!(gate.admit(&mut frame(&mut s), NOW), not_member);
        gate.set_config(config(&["node1", "node2"]));
        assert!(matches!(
            gate.admit(&mut frame(&mut s), NOW),
            Outcome::Deliver {
                nodename: "node2",
                ..
            }
        ));
        gate.set_config(config(&["node1"]));
        assert_eq!(gate.admit(&mut frame(&mut s), NOW), not_member);
    }
}
