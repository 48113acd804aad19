//! Freshness (PROTOCOL.md step 5): the clock-skew check and a per-session sliding replay window.

/// Width of the replay window, in counters.
pub const WINDOW: u64 = 2048;
const WORDS: usize = (WINDOW / 64) as usize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Stale {
    #[error("counter already seen")]
    Replayed,
    #[error("counter too old for the replay window")]
    TooOld,
}

/// Sliding bitmap over the last `WINDOW` counters of one session. `check` is read-only, so a
/// frame is checked before decryption and `commit`ted only once it has authenticated: a forged
/// frame cannot mark a counter as seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayWindow {
    /// Highest counter accepted so far; None before the first.
    top: Option<u64>,
    /// Bit `c % WINDOW` is set when counter `c` (within the window below `top`) was seen.
    bits: [u64; WORDS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl ReplayWindow {
    pub const fn new() -> Self {
        ReplayWindow {
            top: None,
            bits: [0; WORDS],
        }
    }

    pub fn check(&self, counter: u64) -> Result<(), Stale> {
        let Some(top) = self.top else { return Ok(()) };
        if counter > top {
            return Ok(());
        }
        if top - counter >= WINDOW {
            return Err(Stale::TooOld);
        }
        if self.bit(counter) {
            Err(Stale::Replayed)
        } else {
            Ok(())
        }
    }

    /// Marks `counter` as seen. Call only after `check` passed and the frame authenticated.
    pub fn commit(&mut self, counter: u64) {
        match self.top {
            Some(top) if counter <= top => {
                if top - counter < WINDOW {
                    self.set_bit(counter);
                }
            }
            Some(top) => {
                let advance = counter - top;
                if advance >= WINDOW {
                    self.bits = [0; WORDS];
                } else {
                    // Clear the slots of the counters the window slides over.
                    for c in top + 1..counter {
                        self.clear_bit(c);
                    }
                }
                self.top = Some(counter);
                self.set_bit(counter);
            }
            None => {
                self.top = Some(counter);
                self.set_bit(counter);
            }
        }
    }

    pub fn top(&self) -> Option<u64> {
        self.top
    }

    fn slot(counter: u64) -> (usize, u64) {
        let i = counter % WINDOW;
        ((i / 64) as usize, 1u64 << (i % 64))
    }
    fn bit(&self, c: u64) -> bool {
        let (w, m) = Self::slot(c);
        self.bits[w] & m != 0
    }
    fn set_bit(&mut self, c: u64) {
        let (w, m) = Self::slot(c);
        self.bits[w] |= m;
    }
    fn clear_bit(&mut self, c: u64) {
        let (w, m) = Self::slot(c);
        self.bits[w] &= !m;
    }
}

/// `|now - ts| <= max_skew`, all in milliseconds.
pub fn within_skew(now_ms: u64, ts_ms: u64, max_skew_ms: u64) -> bool {
    now_ms.abs_diff(ts_ms) <= max_skew_ms
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn replay_and_too_old() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.check(5), Ok(()));
        w.commit(5);
        assert_eq!(w.check(5), Err(Stale::Replayed));
        assert_eq!(w.check(4), Ok(()));
        w.commit(5 + WINDOW);
        assert_eq!(w.check(5), Err(Stale::TooOld));
        assert_eq!(w.check(6), Ok(()));
        assert_eq!(w.check(5 + WINDOW), Err(Stale::Replayed));
    }

    #[test]
    fn skew() {
        assert!(within_skew(1000, 1000, 0));
        assert!(within_skew(1000, 61_000, 60_000));
        assert!(!within_skew(1000, 61_001, 60_000));
        assert!(!within_skew(70_000, 9_999, 60_000));
    }

    proptest! {
        /// Against a model that remembers every counter: accepted iff never seen and not more
        /// than WINDOW-1 below the highest accepted.
        #[test]
        fn window_matches_model(counters in prop::collection::vec(0u64..5000, 1..400)) {
            let mut w = ReplayWindow::new();
            let mut seen = BTreeSet::new();
            for c in counters {
                let top = seen.iter().next_back().copied();
                let expected = match top {
                    Some(t) if c <= t && t - c >= WINDOW => Err(Stale::TooOld),
                    _ if seen.contains(&c) => Err(Stale::Replayed),
                    _ => Ok(()),
                };
                prop_assert_eq!(w.check(c), expected);
                if expected.is_ok() {
                    w.commit(c);
                    seen.insert(c);
                }
            }
        }
    }
}
