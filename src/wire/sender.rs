//! The sending side of a session: salt, counter and key, rotated as PROTOCOL.md asks
//! (fresh salt before the counter reaches 2^32 or after one hour).

use ring::rand::{SecureRandom, SystemRandom};

use super::crypto::SessionKey;
use super::frame::{EncodeError, Header, Kind, SALT_LEN};

pub const SALT_MAX_AGE_MS: u64 = 3_600_000;
pub const COUNTER_LIMIT: u64 = 1 << 32;

/// 16 random bytes from the OS generator.
pub fn random_salt() -> [u8; SALT_LEN] {
    let mut salt = [0u8; SALT_LEN];
    // The OS generator does not fail on Linux once booted; a zero salt would still be unique
    // per key only by chance, so fall back to the clock mixed in rather than give up.
    if SystemRandom::new().fill(&mut salt).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        salt.copy_from_slice(&t.to_le_bytes());
    }
    salt
}

pub struct Sender {
    secret: Box<[u8]>,
    cluster: Box<str>,
    nodename: Box<str>,
    salt: [u8; SALT_LEN],
    key: SessionKey,
    counter: u64,
    started_ms: u64,
}

impl Sender {
    pub fn new(secret: &[u8], cluster: &str, nodename: &str, now_ms: u64) -> Self {
        Self::with_salt(secret, cluster, nodename, random_salt(), now_ms)
    }

    pub fn with_salt(
        secret: &[u8],
        cluster: &str,
        nodename: &str,
        salt: [u8; SALT_LEN],
        now_ms: u64,
    ) -> Self {
        Sender {
            key: SessionKey::derive(secret, cluster, nodename, &salt),
            secret: secret.into(),
            cluster: cluster.into(),
            nodename: nodename.into(),
            salt,
            counter: 0,
            started_ms: now_ms,
        }
    }

    pub fn nodename(&self) -> &str {
        &self.nodename
    }

    pub fn salt(&self) -> &[u8; SALT_LEN] {
        &self.salt
    }

    pub fn counter(&self) -> u64 {
        self.counter
    }

    /// Appends one sealed frame to `out`, rotating the session first if it is due.
    pub fn seal(
        &mut self,
        kind: Kind,
        payload: &[u8],
        now_ms: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        if self.counter >= COUNTER_LIMIT
            || now_ms.saturating_sub(self.started_ms) >= SALT_MAX_AGE_MS
        {
            self.rotate(random_salt(), now_ms);
        }
        let header = Header {
            kind,
            nodename: &self.nodename,
            salt: &self.salt,
            ts_ms: now_ms,
            counter: self.counter,
        };
        self.key.seal_frame(&header, payload, out)?;
        self.counter += 1;
        Ok(())
    }

    /// Starts a new session under `salt`.
    pub fn rotate(&mut self, salt: [u8; SALT_LEN], now_ms: u64) {
        self.salt = salt;
        self.key = SessionKey::derive(&self.secret, &self.cluster, &self.nodename, &salt);
        self.counter = 0;
        self.started_ms = now_ms;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::FrameView;

    #[test]
    fn counter_increases_and_session_rotates_after_an_hour() {
        let mut s = Sender::with_salt(b"k", "c", "n", [1; 16], 0);
        let mut a = Vec::new();
        s.seal(Kind::Heartbeat, b"{}", 10, &mut a).unwrap();
        let mut b = Vec::new();
        s.seal(Kind::Heartbeat, b"{}", 20, &mut b).unwrap();
        assert_eq!(FrameView::parse(&a).unwrap().counter(), 0);
        assert_eq!(FrameView::parse(&b).unwrap().counter(), 1);
        let mut c = Vec::new();
        s.seal(Kind::Heartbeat, b"{}", SALT_MAX_AGE_MS, &mut c)
            .unwrap();
        let v = FrameView::parse(&c).unwrap();
        assert_eq!(v.counter(), 0);
        assert_ne!(v.salt(), &[1; 16]);
    }

    #[test]
    fn rotates_before_counter_wraps() {
        let mut s = Sender::with_salt(b"k", "c", "n", [1; 16], 0);
        s.counter = COUNTER_LIMIT;
        let mut a = Vec::new();
        s.seal(Kind::Request, b"{}", 1, &mut a).unwrap();
        assert_eq!(FrameView::parse(&a).unwrap().counter(), 0);
    }
}
