//! A token bucket on one atomic (GCRA form): how many frames from non-member nodenames may be
//! decrypted per second. Checked before any AES work, lock-free.

use std::sync::atomic::{AtomicU64, Ordering};

pub struct RateLimit {
    /// Theoretical arrival time of the next frame, in microseconds.
    tat_us: AtomicU64,
    /// Microseconds per token; 0 means "refuse everything".
    interval_us: AtomicU64,
    /// How far ahead of now the TAT may run: the bucket's depth.
    burst_us: AtomicU64,
}

impl RateLimit {
    /// `per_second` frames on average, with a burst of one second's worth. 0 refuses all.
    pub fn per_second(per_second: u32) -> Self {
        let r = RateLimit {
            tat_us: AtomicU64::new(0),
            interval_us: AtomicU64::new(0),
            burst_us: AtomicU64::new(0),
        };
        r.set_rate(per_second);
        r
    }

    pub fn set_rate(&self, per_second: u32) {
        // At least 1 µs: above a million per second the limit is a microsecond's worth, and 0
        // would read as "refuse everything".
        let interval = if per_second == 0 {
            0
        } else {
            (1_000_000 / u64::from(per_second)).max(1)
        };
        self.interval_us.store(interval, Ordering::Relaxed);
        self.burst_us
            .store(interval * u64::from(per_second), Ordering::Relaxed);
    }

    /// Takes a token if one is available at `now_us`.
    pub fn try_acquire(&self, now_us: u64) -> bool {
        let interval = self.interval_us.load(Ordering::Relaxed);
        if interval == 0 {
            return false;
        }
        let burst = self.burst_us.load(Ordering::Relaxed);
        let mut tat = self.tat_us.load(Ordering::Relaxed);
        loop {
            let base = tat.max(now_us);
            let next = base + interval;
            if next > now_us + burst {
                return false;
            }
            match self
                .tat_us
                .compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(actual) => tat = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_steady_rate() {
        let r = RateLimit::per_second(20);
        let t0 = 10_000_000;
        let burst = (0..100).filter(|_| r.try_acquire(t0)).count();
        assert_eq!(burst, 20);
        // One second later, another 20.
        let later = (0..100).filter(|_| r.try_acquire(t0 + 1_000_000)).count();
        assert_eq!(later, 20);
        // Over ten seconds at 1 kHz attempts: about 200 granted.
        let mut granted = 0;
        for i in 0..10_000u64 {
            if r.try_acquire(t0 + 2_000_000 + i * 1000) {
                granted += 1;
            }
        }
        assert!((200..=221).contains(&granted), "{granted}");
    }

    #[test]
    fn huge_rates_do_not_turn_into_refusal() {
        let r = RateLimit::per_second(2_000_000);
        assert!(r.try_acquire(5_000_000));
    }

    #[test]
    fn zero_refuses() {
        let r = RateLimit::per_second(0);
        assert!(!r.try_acquire(1));
    }
}
