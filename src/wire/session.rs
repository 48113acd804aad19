//! Per-session receiver state: the key cache (one per worker, no lock) and the replay table
//! (shared by the workers, sharded by salt so no lock is shared by all of them).

use std::collections::HashMap;
use std::sync::Mutex;

use super::FastState;
use super::crypto::{Fingerprint, SessionKey};
use super::frame::SALT_LEN;
use super::replay::{ReplayWindow, Stale};

type Salt = [u8; SALT_LEN];

/// Bounded cache of session keys by (nodename, salt). Only keys of frames that authenticated
/// are inserted (PROTOCOL.md, "Keys"); a salt seen under another nodename is a miss. Each key
/// remembers the fingerprint of the secret it was derived from, so that a keyring change
/// forgets the keys of a secret no longer held and keeps the others (no re-derivation, no
/// second AES try, for sessions that stay valid).
pub struct KeyCache {
    /// Inserted only once a frame authenticated, so a fast hasher is safe here.
    map: HashMap<Salt, CachedKey, FastState>,
    capacity: usize,
    hits: u64,
    misses: u64,
}

impl KeyCache {
    pub fn new(capacity: usize) -> Self {
        KeyCache {
            // Grown as sessions come: most workers see far fewer than the bound.
            map: HashMap::with_capacity_and_hasher(capacity.min(64), FastState::default()),
            capacity: capacity.max(1),
            hits: 0,
            misses: 0,
        }
    }

    pub fn get(&mut self, nodename: &str, salt: &Salt) -> Option<&SessionKey> {
        match self.map.get(salt) {
            Some(CachedKey { name, key, .. }) if &**name == nodename => {
                self.hits += 1;
                Some(key)
            }
            _ => {
                self.misses += 1;
                None
            }
        }
    }

    /// `get` without counting a hit or a miss (a second look at the same frame).
    pub fn peek(&self, nodename: &str, salt: &Salt) -> Option<&SessionKey> {
        match self.map.get(salt) {
            Some(CachedKey { name, key, .. }) if &**name == nodename => Some(key),
            _ => None,
        }
    }

    /// Inserts the key of a session whose frame just authenticated, derived from the secret
    /// of fingerprint `source`.
    pub fn insert_authenticated(
        &mut self,
        nodename: &str,
        salt: &Salt,
        key: SessionKey,
        source: Fingerprint,
    ) {
        if self.map.len() >= self.capacity && !self.map.contains_key(salt) {
            // Evict an arbitrary entry: HashMap iteration order is randomized, so this is a
            // random eviction, which costs nothing to track.
            if let Some(victim) = self.map.keys().next().copied() {
                self.map.remove(&victim);
            }
        }
        self.map.insert(
            *salt,
            CachedKey {
                name: nodename.into(),
                key,
                source,
            },
        );
    }

    /// Bounds the cache to `capacity` sessions from the next insertion on.
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity.max(1);
    }

    /// Forgets every key: the cluster name or the members changed.
    pub fn clear(&mut self) {
        self.map.clear();
    }

    /// Forgets the keys derived from a secret whose fingerprint is not in `held`.
    pub fn retain_sources(&mut self, held: &[Fingerprint]) {
        self.map.retain(|_, k| held.contains(&k.source));
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn hits_misses(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }
}

struct CachedKey {
    name: Box<str>,
    key: SessionKey,
    source: Fingerprint,
}

struct SessionState {
    nodename: Box<str>,
    window: ReplayWindow,
    /// Highest `ts` accepted in this session: the session may be forgotten only once this is
    /// older than the skew, or a replay of its frames would pass the freshness check again.
    max_ts_ms: u64,
}

#[derive(Default)]
struct Shard {
    /// Sessions by salt; more than one entry only if two nodenames used the same salt.
    /// Inserted only once a frame authenticated, so a fast hasher is safe here.
    sessions: HashMap<Salt, Vec<SessionState>, FastState>,
    len: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Stale(#[from] Stale),
    #[error("replay table full")]
    Full,
}

const SHARDS: usize = 32;

/// Replay windows of every live session, shared by all workers: a frame replayed to another
/// worker (another source port, or TCP instead of UDP) is still caught.
pub struct ReplayTable {
    shards: Box<[Mutex<Shard>]>,
    capacity_per_shard: usize,
}

impl ReplayTable {
    pub fn new(capacity: usize) -> Self {
        ReplayTable {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            capacity_per_shard: capacity.div_ceil(SHARDS).max(1),
        }
    }

    fn shard(&self, salt: &Salt) -> std::sync::MutexGuard<'_, Shard> {
        let i = salt[0] as usize % SHARDS;
        // A poisoned shard only means a panic elsewhere mid-update of plain data; keep going.
        self.shards[i]
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Read-only check, before decryption.
    pub fn check(&self, nodename: &str, salt: &Salt, counter: u64) -> Result<(), Stale> {
        let shard = self.shard(salt);
        match shard
            .sessions
            .get(salt)
            .and_then(|v| v.iter().find(|s| &*s.nodename == nodename))
        {
            Some(s) => s.window.check(counter),
            None => Ok(()),
        }
    }

    /// Marks the counter as seen once the frame authenticated. Checks again under the lock,
    /// so two workers racing with copies of one frame accept it once.
    pub fn commit(
        &self,
        nodename: &str,
        salt: &Salt,
        counter: u64,
        ts_ms: u64,
        now_ms: u64,
        max_skew_ms: u64,
    ) -> Result<(), ReplayError> {
        let mut guard = self.shard(salt);
        let shard = &mut *guard;
        if let Some(s) = shard
            .sessions
            .get_mut(salt)
            .and_then(|v| v.iter_mut().find(|s| &*s.nodename == nodename))
        {
            s.window.check(counter)?;
            s.window.commit(counter);
            s.max_ts_ms = s.max_ts_ms.max(ts_ms);
            return Ok(());
        }
        if shard.len >= self.capacity_per_shard {
            Self::expire_shard(shard, now_ms, max_skew_ms);
            if shard.len >= self.capacity_per_shard {
                return Err(ReplayError::Full);
            }
        }
        let mut window = ReplayWindow::new();
        window.commit(counter);
        shard.sessions.entry(*salt).or_default().push(SessionState {
            nodename: nodename.into(),
            window,
            max_ts_ms: ts_ms,
        });
        shard.len += 1;
        Ok(())
    }

    /// Forgets sessions whose newest frame is older than the skew: any replay of them now
    /// fails the freshness check.
    pub fn expire(&self, now_ms: u64, max_skew_ms: u64) -> usize {
        let mut removed = 0;
        for s in self.shards.iter() {
            let mut g = crate::locks::lock(s);
            removed += Self::expire_shard(&mut g, now_ms, max_skew_ms);
        }
        removed
    }

    fn expire_shard(shard: &mut Shard, now_ms: u64, max_skew_ms: u64) -> usize {
        let before = shard.len;
        shard.sessions.retain(|_, v| {
            v.retain(|s| now_ms.saturating_sub(s.max_ts_ms) <= max_skew_ms);
            !v.is_empty()
        });
        shard.len = shard.sessions.values().map(Vec::len).sum();
        before - shard.len
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| crate::locks::lock(s).len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets everything (the secret changed: old sessions cannot authenticate any more).
    pub fn clear(&self) {
        for s in self.shards.iter() {
            let mut g = crate::locks::lock(s);
            g.sessions.clear();
            g.len = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_cache_is_bounded_and_keyed_by_name() {
        let mut c = KeyCache::new(2);
        let k = || SessionKey::from_bytes(&[1; 32]);
        let fp = Fingerprint::of(b"s", "c");
        c.insert_authenticated("a", &[1; 16], k(), fp);
        assert!(c.get("a", &[1; 16]).is_some());
        assert!(c.get("b", &[1; 16]).is_none());
        c.insert_authenticated("b", &[2; 16], k(), fp);
        c.insert_authenticated("c", &[3; 16], k(), fp);
        assert_eq!(c.len(), 2);
        assert!(c.get("c", &[3; 16]).is_some());
    }

    #[test]
    fn key_cache_forgets_the_keys_of_a_dropped_secret_only() {
        let mut c = KeyCache::new(8);
        let k = || SessionKey::from_bytes(&[1; 32]);
        let (a, b) = (Fingerprint::of(b"a", "c"), Fingerprint::of(b"b", "c"));
        c.insert_authenticated("n1", &[1; 16], k(), a);
        c.insert_authenticated("n2", &[2; 16], k(), b);
        c.retain_sources(&[a, b]);
        assert_eq!(c.len(), 2);
        c.retain_sources(&[b]);
        assert!(c.peek("n1", &[1; 16]).is_none());
        assert!(c.peek("n2", &[2; 16]).is_some());
    }

    #[test]
    fn replay_table_commit_rechecks_and_expires() {
        let t = ReplayTable::new(64);
        let salt = [9; 16];
        assert_eq!(t.check("n", &salt, 3), Ok(()));
        t.commit("n", &salt, 3, 1000, 1000, 60_000).unwrap();
        assert_eq!(t.check("n", &salt, 3), Err(Stale::Replayed));
        assert_eq!(
            t.commit("n", &salt, 3, 1000, 1000, 60_000),
            Err(ReplayError::Stale(Stale::Replayed))
        );
        // Another nodename under the same salt is another session.
        assert_eq!(t.check("m", &salt, 3), Ok(()));
        assert_eq!(t.expire(60_000, 60_000), 0);
        assert_eq!(t.expire(61_001, 60_000), 1);
        assert!(t.is_empty());
    }

    #[test]
    fn replay_table_full() {
        let t = ReplayTable::new(1);
        t.commit("n", &[0; 16], 0, 0, 0, 10).unwrap();
        assert_eq!(
            t.commit("n", &[32; 16], 0, 0, 0, 10),
            Err(ReplayError::Full)
        );
        // Once the first session is old enough, its slot is reused.
        assert_eq!(t.commit("n", &[32; 16], 0, 100, 100, 10), Ok(()));
    }
}
