//! The blacklist (PROTOCOL.md, "Validation order"): consecutive invalid messages per nodename,
//! a ban at `BAN_THRESHOLD`, reset by a valid message, expiring after a TTL. A count below the
//! threshold is forgotten after the same TTL without a new strike. The gate enters members'
//! names only, so the table holds at most one entry per member.
//!
//! Read-mostly and shared by every worker. The ban test of the hot path is the gate's own
//! copy of the banned names (`BanCache`), refreshed only when `bans_generation` moves: one
//! atomic load and, while some name is banned, one lookup in a worker-local map, with no lock
//! and no write to a shared cache line, so a flood of a banned name costs its header and that
//! lookup. `record_valid` takes no lock while no nodename has a count (the usual case) and
//! otherwise tests an atomic bitset first, so only names that may be listed reach their
//! shard's read lock.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::locks::{exclusive, shared};
use crate::wire::FastState;

pub const BAN_THRESHOLD: u32 = 5;
const SHARDS: usize = 16;
const FILTER_BITS: usize = 4096;
/// Bounds the table so frames under random nodenames cannot grow it without limit.
const DEFAULT_MAX_ENTRIES: usize = 100_000;
const NOT_BANNED: u64 = 0;
const BANNED_FOREVER: u64 = u64::MAX;

struct Entry {
    count: AtomicU32,
    /// When the last strike was counted (ms): the count is forgotten a TTL later.
    last_strike: AtomicU64,
    /// 0: not banned; otherwise the ban's expiry in ms (u64::MAX: until cleared).
    banned_until: AtomicU64,
}

/// What the hot path learns about a nodename.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Banned,
    /// The ban just expired: the frame goes on, and the caller logs the expiry once.
    BanExpired,
}

/// What recording an invalid message did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strike {
    Counted(u32),
    /// This message made the count reach the threshold: the caller logs the ban once.
    Banned,
    /// The table is full and the name was not in it: not recorded.
    Untracked,
}

// Only members' names enter the table (the gate's rule), so a flood of made-up names cannot
// aim at its buckets: the fast hasher is enough.
type Shard = RwLock<HashMap<Box<str>, Entry, FastState>>;

/// Bumped after every change to which names are banned; on its own cache line, which only a
/// ban, an expiry or a clear writes, so the readers' loads stay local.
#[repr(align(64))]
struct Generation(AtomicU64);

pub struct Blacklist {
    bans_generation: Generation,
    shards: Box<[Shard]>,
    /// Bit set for every name that has, or had since the last clear, an entry.
    filter: Box<[AtomicU64]>,
    entries: AtomicUsize,
    max_entries: usize,
    ttl_ms: AtomicU64,
    hasher: FastState,
}

impl Blacklist {
    /// `ttl_ms` = 0 keeps bans until cleared.
    pub fn new(ttl_ms: u64) -> Self {
        Self::with_capacity(ttl_ms, DEFAULT_MAX_ENTRIES)
    }

    pub fn with_capacity(ttl_ms: u64, max_entries: usize) -> Self {
        Blacklist {
            bans_generation: Generation(AtomicU64::new(0)),
            shards: (0..SHARDS)
                .map(|_| RwLock::new(HashMap::with_hasher(FastState::default())))
                .collect(),
            filter: (0..FILTER_BITS / 64).map(|_| AtomicU64::new(0)).collect(),
            entries: AtomicUsize::new(0),
            max_entries,
            ttl_ms: AtomicU64::new(ttl_ms),
            hasher: Default::default(),
        }
    }

    pub fn set_ttl_ms(&self, ttl_ms: u64) {
        self.ttl_ms.store(ttl_ms, Ordering::Relaxed);
    }

    fn hash(&self, name: &str) -> u64 {
        self.hasher.hash_one(name)
    }

    fn filter_slot(hash: u64) -> (usize, u64) {
        let bit = (hash >> 32) as usize % FILTER_BITS;
        (bit / 64, 1 << (bit % 64))
    }

    /// The filter test; callers first skip the hash altogether when the table is empty.
    fn may_contain(&self, hash: u64) -> bool {
        let (w, m) = Self::filter_slot(hash);
        self.filter[w].load(Ordering::Acquire) & m != 0
    }

    fn shard(&self, hash: u64) -> &Shard {
        &self.shards[hash as usize % SHARDS]
    }

    /// Step 3 of the receive path: is this nodename banned right now?
    pub fn check(&self, name: &str, now_ms: u64) -> Verdict {
        // An empty table (the usual case) answers before the name is even hashed.
        if self.entries.load(Ordering::Acquire) == 0 {
            return Verdict::Allowed;
        }
        let h = self.hash(name);
        if !self.may_contain(h) {
            return Verdict::Allowed;
        }
        let shard = shared(self.shard(h));
        let Some(e) = shard.get(name) else {
            return Verdict::Allowed;
        };
        let until = e.banned_until.load(Ordering::Acquire);
        if until == NOT_BANNED {
            return Verdict::Allowed;
        }
        if now_ms < until {
            return Verdict::Banned;
        }
        // Expired: only the worker whose CAS wins reports it, so it is logged once.
        if e.banned_until
            .compare_exchange(until, NOT_BANNED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            e.count.store(0, Ordering::Release);
            self.bans_changed();
            Verdict::BanExpired
        } else {
            Verdict::Allowed
        }
    }

    /// One more invalid message from `name`.
    pub fn record_invalid(&self, name: &str, now_ms: u64) -> Strike {
        let h = self.hash(name);
        {
            let shard = shared(self.shard(h));
            if let Some(e) = shard.get(name) {
                return self.strike(e, now_ms);
            }
        }
        let mut shard = exclusive(self.shard(h));
        if !shard.contains_key(name) {
            if self.entries.load(Ordering::Acquire) >= self.max_entries {
                return Strike::Untracked;
            }
            let (w, m) = Self::filter_slot(h);
            self.filter[w].fetch_or(m, Ordering::AcqRel);
            self.entries.fetch_add(1, Ordering::AcqRel);
            shard.insert(
                name.into(),
                Entry {
                    count: AtomicU32::new(0),
                    last_strike: AtomicU64::new(now_ms),
                    banned_until: AtomicU64::new(NOT_BANNED),
                },
            );
        }
        match shard.get(name) {
            Some(e) => self.strike(e, now_ms),
            None => Strike::Untracked,
        }
    }

    fn strike(&self, e: &Entry, now_ms: u64) -> Strike {
        if e.banned_until.load(Ordering::Acquire) != NOT_BANNED {
            // Already banned (frames of a banned name are dropped before they can count; this
            // is a race with the ban): nothing more to record.
            return Strike::Counted(BAN_THRESHOLD);
        }
        let ttl = self.ttl_ms.load(Ordering::Relaxed);
        let last = e.last_strike.swap(now_ms, Ordering::AcqRel);
        if count_expired(ttl, last, now_ms) {
            // Strikes further apart than the TTL are not consecutive any more.
            e.count.store(0, Ordering::Release);
        }
        let n = e.count.fetch_add(1, Ordering::AcqRel) + 1;
        if n == BAN_THRESHOLD {
            let until = if ttl == 0 {
                BANNED_FOREVER
            } else {
                now_ms.saturating_add(ttl).max(1)
            };
            e.banned_until.store(until, Ordering::Release);
            self.bans_changed();
            Strike::Banned
        } else {
            Strike::Counted(n.min(BAN_THRESHOLD))
        }
    }

    /// A valid message from `name`: its consecutive count goes back to 0. Lock-free unless the
    /// name may have an entry.
    pub fn record_valid(&self, name: &str) {
        if self.entries.load(Ordering::Acquire) == 0 {
            return;
        }
        let h = self.hash(name);
        if !self.may_contain(h) {
            return;
        }
        let shard = shared(self.shard(h));
        if let Some(e) = shard.get(name)
            && e.banned_until.load(Ordering::Acquire) == NOT_BANNED
            && e.count.load(Ordering::Relaxed) != 0
        {
            e.count.store(0, Ordering::Release);
        }
    }

    /// `{"node1": 1, "node2": 5}`: every name with a non-zero count or a ban.
    pub fn status(&self, now_ms: u64) -> BTreeMap<String, u32> {
        let mut out = BTreeMap::new();
        // An empty table (the usual case) answers without taking a lock: every status does.
        if self.entries.load(Ordering::Acquire) == 0 {
            return out;
        }
        for s in self.shards.iter() {
            for (name, e) in shared(s).iter() {
                let until = e.banned_until.load(Ordering::Acquire);
                let banned = until != NOT_BANNED && now_ms < until;
                let ttl = self.ttl_ms.load(Ordering::Relaxed);
                let count = if banned {
                    BAN_THRESHOLD
                } else if until != NOT_BANNED
                    || count_expired(ttl, e.last_strike.load(Ordering::Acquire), now_ms)
                {
                    0 // a ban expired but not yet seen by check(), or a forgotten count
                } else {
                    e.count.load(Ordering::Acquire)
                };
                if count > 0 {
                    out.insert(name.to_string(), count);
                }
            }
        }
        out
    }

    pub fn is_banned(&self, name: &str, now_ms: u64) -> bool {
        let h = self.hash(name);
        let shard = shared(self.shard(h));
        shard.get(name).is_some_and(|e| {
            let until = e.banned_until.load(Ordering::Acquire);
            until != NOT_BANNED && now_ms < until
        })
    }

    /// Empties the blacklist.
    pub fn clear(&self) {
        for s in self.shards.iter() {
            exclusive(s).clear();
        }
        self.entries.store(0, Ordering::Release);
        for w in self.filter.iter() {
            w.store(0, Ordering::Release);
        }
        self.bans_changed();
    }

    fn bans_changed(&self) {
        self.bans_generation.0.fetch_add(1, Ordering::AcqRel);
    }

    /// Changes whenever a name is banned or unbanned (`BanCache` compares it on every frame).
    pub fn bans_generation(&self) -> u64 {
        self.bans_generation.0.load(Ordering::Acquire)
    }

    /// The names banned now or until `check` sees their expiry, with the ban's end (ms).
    fn banned(&self) -> Vec<(Box<str>, u64)> {
        let mut out = Vec::new();
        for s in self.shards.iter() {
            for (name, e) in shared(s).iter() {
                let until = e.banned_until.load(Ordering::Acquire);
                if until != NOT_BANNED {
                    out.push((name.clone(), until));
                }
            }
        }
        out
    }

    /// Drops entries that carry no information any more (count 0 or forgotten, not banned),
    /// so the filter and the table do not keep growing with names that were forgiven.
    /// A ban, even expired, stays until `check` sees the name again: that is where its expiry
    /// is reported, once.
    pub fn compact(&self, now_ms: u64) {
        let ttl = self.ttl_ms.load(Ordering::Relaxed);
        let mut remaining = 0;
        for s in self.shards.iter() {
            let mut g = exclusive(s);
            g.retain(|_, e| {
                e.banned_until.load(Ordering::Acquire) != NOT_BANNED
                    || (e.count.load(Ordering::Acquire) > 0
                        && !count_expired(ttl, e.last_strike.load(Ordering::Acquire), now_ms))
            });
            remaining += g.len();
        }
        self.entries.store(remaining, Ordering::Release);
    }

    pub fn len(&self) -> usize {
        self.entries.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One worker's copy of the banned names: the hot path's ban test (PROTOCOL.md step 3) from
/// the nodename of the clear header, without a lock or a shared write.
pub struct BanCache {
    generation: u64,
    /// Each banned name with its ban's end (ms). A flood comes from one name or a few: up to
    /// `FEW_BANS` names are compared in a list (lengths first, no hashing); more go to `many`.
    few: Vec<FewBan>,
    many: HashMap<Box<str>, u64, FastState>,
}

const FEW_BANS: usize = 8;

/// A banned name of the short list: its first 8 bytes as a word, so another name differs
/// in one comparison and a name of up to 8 bytes matches without a memcmp.
struct FewBan {
    head: u64,
    name: Box<str>,
    until: u64,
}

/// The first 8 bytes of `name` as a little-endian word, zero-padded: one load for a long
/// name, a few shifts for a short one (a copy into a buffer would call memcpy and stall
/// the load that follows it).
#[inline]
fn head(name: &str) -> u64 {
    let bytes = name.as_bytes();
    if let Some(word) = bytes.first_chunk::<8>() {
        return u64::from_le_bytes(*word);
    }
    bytes
        .iter()
        .enumerate()
        .fold(0, |h, (i, &b)| h | u64::from(b) << (8 * i))
}

impl BanCache {
    pub fn new(blacklist: &Blacklist) -> Self {
        let mut cache = BanCache {
            generation: 0,
            few: Vec::new(),
            many: HashMap::with_hasher(FastState::default()),
        };
        cache.refresh(blacklist);
        cache
    }

    #[cold]
    fn refresh(&mut self, blacklist: &Blacklist) {
        // The generation first: a ban set while the copy is taken moves it again, and the
        // next frame takes another copy.
        self.generation = blacklist.bans_generation();
        let banned = blacklist.banned();
        self.few.clear();
        self.many.clear();
        if banned.len() <= FEW_BANS {
            self.few = banned
                .into_iter()
                .map(|(name, until)| FewBan {
                    head: head(&name),
                    name,
                    until,
                })
                .collect();
        } else {
            self.many.extend(banned);
        }
    }

    #[inline]
    fn until(&self, name: &str) -> Option<u64> {
        if self.many.is_empty() {
            let h = head(name);
            self.few
                .iter()
                .find(|b| {
                    b.head == h
                        && b.name.len() == name.len()
                        && (name.len() <= 8 || b.name.as_bytes()[8..] == name.as_bytes()[8..])
                })
                .map(|b| b.until)
        } else {
            self.many.get(name).copied()
        }
    }

    /// `Blacklist::check`, answered from the copy; an expired ban goes to the shared table,
    /// which reports the expiry once among the workers.
    #[inline(always)]
    pub fn check(&mut self, blacklist: &Blacklist, name: &str, now_ms: u64) -> Verdict {
        if blacklist.bans_generation() != self.generation {
            self.refresh(blacklist);
        }
        if self.few.is_empty() && self.many.is_empty() {
            return Verdict::Allowed;
        }
        match self.until(name) {
            None => Verdict::Allowed,
            Some(until) if now_ms < until => Verdict::Banned,
            Some(_) => blacklist.check(name, now_ms),
        }
    }
}

/// A count whose last strike is a TTL old is forgotten (ttl 0: kept, like bans).
fn count_expired(ttl_ms: u64, last_strike_ms: u64, now_ms: u64) -> bool {
    ttl_ms != 0 && now_ms.saturating_sub(last_strike_ms) >= ttl_ms
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn five_strikes_ban_and_a_valid_message_resets() {
        let b = Blacklist::new(0);
        for i in 1..5 {
            assert_eq!(b.record_invalid("n1", 0), Strike::Counted(i));
        }
        b.record_valid("n1");
        assert_eq!(b.status(0).get("n1"), None);
        for _ in 1..5 {
            b.record_invalid("n1", 0);
        }
        assert_eq!(b.check("n1", 0), Verdict::Allowed);
        assert_eq!(b.record_invalid("n1", 0), Strike::Banned);
        assert_eq!(b.check("n1", 10), Verdict::Banned);
        b.record_invalid("n2", 0);
        let status = b.status(0);
        assert_eq!(status.get("n1"), Some(&5));
        assert_eq!(status.get("n2"), Some(&1));
        // A valid message does not lift a ban.
        b.record_valid("n1");
        assert_eq!(b.check("n1", 10), Verdict::Banned);
        b.clear();
        assert_eq!(b.check("n1", 10), Verdict::Allowed);
        assert!(b.status(0).is_empty());
    }

    #[test]
    fn ban_expires_once() {
        let b = Blacklist::new(1000);
        for _ in 0..5 {
            b.record_invalid("n", 100);
        }
        assert_eq!(b.check("n", 1099), Verdict::Banned);
        assert_eq!(b.check("n", 1100), Verdict::BanExpired);
        assert_eq!(b.check("n", 1100), Verdict::Allowed);
        assert_eq!(b.record_invalid("n", 1200), Strike::Counted(1));
    }

    #[test]
    fn bounded() {
        let b = Blacklist::with_capacity(0, 2);
        b.record_invalid("a", 0);
        b.record_invalid("b", 0);
        assert_eq!(b.record_invalid("c", 0), Strike::Untracked);
        assert_eq!(b.record_invalid("a", 0), Strike::Counted(2));
        b.record_valid("a");
        b.compact(0);
        assert_eq!(b.len(), 1);
        assert_eq!(b.record_invalid("c", 0), Strike::Counted(1));
    }

    /// A count not followed by another strike within the TTL is forgotten: shown as nothing,
    /// started over by the next strike, dropped by `compact`.
    #[test]
    fn counts_are_forgotten_after_the_ttl() {
        let b = Blacklist::new(1000);
        for t in [0, 100, 200, 300] {
            b.record_invalid("n", t);
        }
        assert_eq!(b.status(1299).get("n"), Some(&4));
        assert_eq!(b.status(1300).get("n"), None);
        assert_eq!(b.record_invalid("n", 1300), Strike::Counted(1));
        b.compact(2299);
        assert_eq!(b.len(), 1);
        b.compact(2300);
        assert_eq!(b.len(), 0);
        assert_eq!(b.check("n", 2300), Verdict::Allowed);
    }

    /// A worker's copy answers like the shared table: bans, expiries (reported once, by
    /// whichever worker sees them first), a clear.
    #[test]
    fn ban_cache_follows_the_table() {
        let b = Blacklist::new(1000);
        let mut w1 = BanCache::new(&b);
        let mut w2 = BanCache::new(&b);
        assert_eq!(w1.check(&b, "n", 0), Verdict::Allowed);
        for _ in 0..4 {
            b.record_invalid("n", 100);
        }
        assert_eq!(w1.check(&b, "n", 100), Verdict::Allowed);
        assert_eq!(b.record_invalid("n", 100), Strike::Banned);
        assert_eq!(w1.check(&b, "n", 1099), Verdict::Banned);
        assert_eq!(w2.check(&b, "n", 1099), Verdict::Banned);
        assert_eq!(w2.check(&b, "other", 1099), Verdict::Allowed);
        assert_eq!(w2.check(&b, "n", 1100), Verdict::BanExpired);
        assert_eq!(w1.check(&b, "n", 1100), Verdict::Allowed);
        for _ in 0..5 {
            b.record_invalid("n", 1200);
        }
        assert_eq!(w1.check(&b, "n", 1300), Verdict::Banned);
        // Names that share their first 8 bytes, or a prefix, are told apart.
        for _ in 0..5 {
            b.record_invalid("node-prod-1", 1300);
        }
        for other in ["node-prod-2", "node-prod-10", "node-pro", "node-prod-"] {
            assert_eq!(w1.check(&b, other, 1300), Verdict::Allowed, "{other}");
        }
        assert_eq!(w1.check(&b, "node-prod-1", 1300), Verdict::Banned);
        // More bans than the short list holds: the map answers the same.
        let names: Vec<String> = (0..FEW_BANS * 2).map(|i| format!("m{i}")).collect();
        for name in &names {
            for _ in 0..5 {
                b.record_invalid(name, 1300);
            }
        }
        assert_eq!(w1.check(&b, "n", 1300), Verdict::Banned);
        assert!(
            names
                .iter()
                .all(|n| w1.check(&b, n, 1300) == Verdict::Banned)
        );
        assert_eq!(w1.check(&b, "m", 1300), Verdict::Allowed);
        b.clear();
        assert_eq!(w1.check(&b, "n", 1300), Verdict::Allowed);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Valid(u8),
        Invalid(u8),
        Clear,
    }

    proptest! {
        /// The blacklist against a model: a map of consecutive counts, saturating at the ban.
        #[test]
        fn matches_model(ops in prop::collection::vec(prop_oneof![
            (0u8..4).prop_map(Op::Valid),
            (0u8..4).prop_map(Op::Invalid),
            Just(Op::Clear),
        ], 0..200)) {
            let b = Blacklist::new(0);
            let mut model: BTreeMap<String, u32> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Valid(n) => {
                        let name = format!("n{n}");
                        // The receive path drops a banned name's frames before they count.
                        if b.check(&name, 0) == Verdict::Allowed {
                            b.record_valid(&name);
                            model.remove(&name);
                        } else {
                            prop_assert_eq!(model.get(&name), Some(&BAN_THRESHOLD));
                        }
                    }
                    Op::Invalid(n) => {
                        let name = format!("n{n}");
                        if b.check(&name, 0) == Verdict::Allowed {
                            let strike = b.record_invalid(&name, 0);
                            let c = model.entry(name).or_insert(0);
                            *c += 1;
                            let expected = if *c == BAN_THRESHOLD { Strike::Banned } else { Strike::Counted(*c) };
                            prop_assert_eq!(strike, expected);
                        }
                    }
                    Op::Clear => {
                        b.clear();
                        model.clear();
                    }
                }
                prop_assert_eq!(b.status(0), model.clone());
            }
        }
    }
}
