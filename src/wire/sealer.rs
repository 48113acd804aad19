//! A sealing session: the salt, counter and key a node seals its frames with, rotated as
//! PROTOCOL.md asks (a fresh salt before the counter reaches 2^32 or after one hour).

use ring::rand::{SecureRandom, SystemRandom};

use super::crypto::SessionKey;
use super::frame::{EncodeError, Header, Kind, SALT_LEN};

pub const SALT_MAX_AGE_MS: u64 = 3_600_000;
pub const COUNTER_LIMIT: u64 = 1 << 32;

/// Where a sender's salts come from: the OS generator, or a test's stand-in.
pub type SaltSource = fn(&mut [u8; SALT_LEN]) -> Result<(), EncodeError>;

fn os_salt(salt: &mut [u8; SALT_LEN]) -> Result<(), EncodeError> {
    SystemRandom::new()
        .fill(salt)
        .map_err(|_| EncodeError::NoRandomness)
}

/// 16 random bytes from the OS generator, or an error: a salt from anything predictable (the
/// clock) could repeat, and a repeated salt repeats the key and its nonces.
pub fn random_salt() -> Result<[u8; SALT_LEN], EncodeError> {
    let mut salt = [0u8; SALT_LEN];
    os_salt(&mut salt)?;
    Ok(salt)
}

/// Seals frames under one session (nodename, salt, counter); rotates to a new session when
/// the protocol asks.
pub struct Sealer {
    secret: Box<[u8]>,
    cluster: Box<str>,
    nodename: Box<str>,
    salt: [u8; SALT_LEN],
    key: SessionKey,
    counter: u64,
    started_ms: u64,
    /// False until a salt came from `salts`: nothing is sealed before.
    has_salt: bool,
    salts: SaltSource,
}

impl Sealer {
    /// A session under a fresh salt from the OS. If the OS generator fails, the sender holds
    /// no session and every `seal` fails until one succeeds.
    pub fn new(secret: &[u8], cluster: &str, nodename: &str, now_ms: u64) -> Self {
        Self::with_salt_source(secret, cluster, nodename, now_ms, os_salt)
    }

    /// `new`, with salts from `salts`.
    pub fn with_salt_source(
        secret: &[u8],
        cluster: &str,
        nodename: &str,
        now_ms: u64,
        salts: SaltSource,
    ) -> Self {
        let mut salt = [0u8; SALT_LEN];
        let has_salt = salts(&mut salt).is_ok();
        let mut s = Self::with_salt(secret, cluster, nodename, salt, now_ms);
        s.has_salt = has_salt;
        s.salts = salts;
        s
    }

    pub fn with_salt(
        secret: &[u8],
        cluster: &str,
        nodename: &str,
        salt: [u8; SALT_LEN],
        now_ms: u64,
    ) -> Self {
        Sealer {
            key: SessionKey::derive(secret, cluster, nodename, &salt),
            secret: secret.into(),
            cluster: cluster.into(),
            nodename: nodename.into(),
            salt,
            counter: 0,
            started_ms: now_ms,
            has_salt: true,
            salts: os_salt,
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
        if !self.has_salt
            || self.counter >= COUNTER_LIMIT
            || now_ms.saturating_sub(self.started_ms) >= SALT_MAX_AGE_MS
        {
            // A session that is due for a new salt and cannot get one seals nothing more.
            let mut salt = [0u8; SALT_LEN];
            (self.salts)(&mut salt)?;
            self.rotate(salt, now_ms);
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
        self.has_salt = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::FrameView;

    #[test]
    fn counter_increases_and_session_rotates_after_an_hour() {
        let mut s = Sealer::with_salt(b"k", "c", "n", [1; 16], 0);
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
        let mut s = Sealer::with_salt(b"k", "c", "n", [1; 16], 0);
        s.counter = COUNTER_LIMIT;
        let mut a = Vec::new();
        s.seal(Kind::Request, b"{}", 1, &mut a).unwrap();
        assert_eq!(FrameView::parse(&a).unwrap().counter(), 0);
    }

    fn no_randomness(_: &mut [u8; SALT_LEN]) -> Result<(), EncodeError> {
        Err(EncodeError::NoRandomness)
    }

    /// Without OS randomness nothing is sealed, neither at the start nor at a rotation.
    #[test]
    fn fails_closed_without_randomness() {
        let mut s = Sealer::with_salt_source(b"k", "c", "n", 0, no_randomness);
        let mut out = Vec::new();
        assert_eq!(
            s.seal(Kind::Request, b"{}", 1, &mut out),
            Err(EncodeError::NoRandomness)
        );
        assert!(out.is_empty());
        let mut s = Sealer::with_salt(b"k", "c", "n", [1; 16], 0);
        s.salts = no_randomness;
        s.seal(Kind::Request, b"{}", 1, &mut out).unwrap();
        out.clear();
        assert_eq!(
            s.seal(Kind::Request, b"{}", SALT_MAX_AGE_MS, &mut out),
            Err(EncodeError::NoRandomness)
        );
        assert!(out.is_empty());
    }
}
