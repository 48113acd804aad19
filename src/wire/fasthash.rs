//! A keyed multiply-fold hasher for the receive path's small maps (cluster members by
//! nodename, session keys and replay windows by salt, members' last heartbeats, the peers'
//! views by nodename), where SipHash cost more than the lookups it served
//! (benches/README.md).
//!
//! Not a defence against hash flooding by itself: use it only for maps whose entries an
//! outsider cannot choose. Members come from the configuration; keys, replay windows,
//! heartbeats and peers are inserted only for frames that authenticated, from members.
//! Lookups under attacker-chosen keys still cost one probe sequence among those entries. The per-map random seed keeps bucket positions from
//! being predictable across processes.

use std::hash::{BuildHasher, Hasher, RandomState};

const K0: u64 = 0x9e37_79b9_7f4a_7c15;
const K1: u64 = 0xd1b5_4a32_d192_ed03;

/// The high and low halves of the 128-bit product, folded.
#[inline]
fn fold(a: u64, b: u64) -> u64 {
    let p = u128::from(a).wrapping_mul(u128::from(b));
    (p as u64) ^ ((p >> 64) as u64)
}

/// Builds `FastHasher`s under one random seed.
#[derive(Clone, Copy, Debug)]
pub struct FastState {
    seed: u64,
}

impl FastState {
    /// A fresh random seed (from the standard library's per-process keys).
    pub fn new() -> Self {
        FastState {
            seed: RandomState::new().hash_one(K0),
        }
    }
}

impl Default for FastState {
    fn default() -> Self {
        Self::new()
    }
}

impl BuildHasher for FastState {
    type Hasher = FastHasher;

    #[inline]
    fn build_hasher(&self) -> FastHasher {
        FastHasher { h: self.seed }
    }
}

#[derive(Clone, Debug)]
pub struct FastHasher {
    h: u64,
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(16);
        for c in &mut chunks {
            let (a, b) = c.split_at(8);
            self.h = fold(self.h ^ le64(a), le64(b) ^ K1);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut tail = [0u8; 16];
            tail[..rest.len()].copy_from_slice(rest);
            let (a, b) = tail.split_at(8);
            // The length keeps "ab" and "ab\0" apart.
            self.h = fold(self.h ^ le64(a), le64(b) ^ K1 ^ rest.len() as u64);
        }
    }

    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.h = fold(self.h ^ n, K0);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // One more round so every input bit reaches both the low bits (bucket) and the top
        // seven (hashbrown's tag).
        fold(self.h, K1)
    }
}

fn le64(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(b);
    u64::from_le_bytes(w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn distinct_inputs_distinct_hashes() {
        let s = FastState::new();
        let mut seen = HashSet::new();
        for i in 0..10_000u32 {
            assert!(seen.insert(s.hash_one(format!("node{i}"))));
        }
        let mut salt = [0u8; 16];
        for i in 0..=255u8 {
            salt[15] = i;
            assert!(seen.insert(s.hash_one(salt)));
        }
        assert_ne!(s.hash_one("ab"), s.hash_one("ab\0"));
        assert_ne!(s.hash_one(""), s.hash_one("\0"));
    }

    #[test]
    fn seeded_per_state() {
        let (a, b) = (FastState::new(), FastState::new());
        assert_eq!(a.hash_one("node1"), a.hash_one("node1"));
        assert_ne!(a.hash_one("node1"), b.hash_one("node1"));
    }
}
