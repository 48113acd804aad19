//! Session keys (HKDF-SHA256) and AES-256-GCM seal/open in place, with `ring`
//! (measured faster than `aes-gcm` on this path: see benches/README.md).

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf;

use super::frame::{FrameView, Header, SALT_LEN, TAG_LEN};

pub const KEY_LEN: usize = 32;
const INFO_PREFIX: &[u8] = b"osvc-lsnr v1|";

/// The 32 bytes of HKDF output, as raw bytes (for test vectors and other AEAD backends).
pub fn derive_key_bytes(
    secret: &[u8],
    cluster: &str,
    nodename: &str,
    salt: &[u8; SALT_LEN],
) -> [u8; KEY_LEN] {
    struct Len32;
    impl hkdf::KeyType for Len32 {
        fn len(&self) -> usize {
            KEY_LEN
        }
    }
    let info = [INFO_PREFIX, cluster.as_bytes(), b"|", nodename.as_bytes()];
    let mut out = [0u8; KEY_LEN];
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(secret);
    // expand() fails only if the output is longer than 255 hash lengths; 32 bytes never is.
    if let Ok(okm) = prk.expand(&info, Len32) {
        let _ = okm.fill(&mut out);
    }
    out
}

pub const FINGERPRINT_LEN: usize = 8;
const FINGERPRINT_INFO_PREFIX: &[u8] = b"osvc-lsnr v1 fingerprint|";

/// What names a secret in commands, logs and status without revealing it (PROTOCOL.md,
/// "Secret rotation"): 8 bytes of HKDF-SHA256 under an empty salt, shown in lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; FINGERPRINT_LEN]);

impl Fingerprint {
    pub fn of(secret: &[u8], cluster: &str) -> Self {
        struct Len8;
        impl hkdf::KeyType for Len8 {
            fn len(&self) -> usize {
                FINGERPRINT_LEN
            }
        }
        let info = [FINGERPRINT_INFO_PREFIX, cluster.as_bytes()];
        let mut out = [0u8; FINGERPRINT_LEN];
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &[]).extract(secret);
        // expand() fails only if the output is longer than 255 hash lengths; 8 bytes never is.
        if let Ok(okm) = prk.expand(&info, Len8) {
            let _ = okm.fill(&mut out);
        }
        Fingerprint(out)
    }

    pub fn as_bytes(&self) -> &[u8; FINGERPRINT_LEN] {
        &self.0
    }
}

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl std::fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// An AES-256-GCM key for one (cluster, nodename, salt) session.
pub struct SessionKey {
    key: LessSafeKey,
}

impl SessionKey {
    pub fn derive(secret: &[u8], cluster: &str, nodename: &str, salt: &[u8; SALT_LEN]) -> Self {
        Self::from_bytes(&derive_key_bytes(secret, cluster, nodename, salt))
    }

    pub fn from_bytes(bytes: &[u8; KEY_LEN]) -> Self {
        // A 32-byte slice is always a valid AES-256 key.
        let unbound = UnboundKey::new(&AES_256_GCM, bytes).unwrap_or_else(|_| unreachable!());
        SessionKey {
            key: LessSafeKey::new(unbound),
        }
    }

    /// Decrypts the frame's ciphertext in place. On success the plaintext occupies
    /// `frame[header_len..frame.len() - TAG_LEN]`; its range is returned.
    pub fn open_in_place(&self, frame: &mut [u8]) -> Result<std::ops::Range<usize>, OpenError> {
        let (header_len, counter) = {
            let view = FrameView::parse(frame).map_err(|_| OpenError)?;
            (view.header_len(), view.counter())
        };
        let (header, sealed) = frame.split_at_mut(header_len);
        let plain_len = self.open_with_header(header, sealed, counter)?;
        Ok(header_len..header_len + plain_len)
    }

    /// Decrypts `sealed` (ciphertext then tag) in place, authenticating `header` as AAD.
    /// Returns the plaintext length: the plaintext is `sealed[..len]`.
    pub fn open_with_header(
        &self,
        header: &[u8],
        sealed: &mut [u8],
        counter: u64,
    ) -> Result<usize, OpenError> {
        self.key
            .open_in_place(nonce(counter), Aad::from(header), sealed)
            .map(|plain| plain.len())
            .map_err(|_| OpenError)
    }

    /// Appends a whole frame (header, ciphertext, tag) for `payload` to `out`.
    pub fn seal_frame(
        &self,
        header: &Header<'_>,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), super::frame::EncodeError> {
        if payload.is_empty() {
            return Err(super::frame::EncodeError::EmptyPayload);
        }
        let start = out.len();
        let hlen = header.write(out)?;
        out.reserve(payload.len() + TAG_LEN);
        out.extend_from_slice(payload);
        let (aad, body) = out[start..].split_at_mut(hlen);
        // Sealing fails only past AES-GCM's per-message size limit (64 GiB).
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce(header.counter), Aad::from(&*aad), body)
            .map_err(|_| super::frame::EncodeError::TooLarge)?;
        out.extend_from_slice(tag.as_ref());
        Ok(())
    }
}

/// 4 zero bytes then the big-endian counter.
fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

/// Authentication failed (wrong key, or any byte of header, ciphertext or tag altered).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("decryption failed")]
pub struct OpenError;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frame::Kind;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    const SALT: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

    /// PROTOCOL.md's test vector, byte for byte.
    #[test]
    fn protocol_test_vector() {
        let key = derive_key_bytes(b"correct horse battery staple", "prod1", "node2", &SALT);
        assert_eq!(
            key.to_vec(),
            hex("6221ec39651e8d55b629461f908ad5ab5d21a9115f822a06e3f8605b2af67d3f")
        );
        let expected = hex(
            "0101056e6f646532000102030405060708090a0b0c0d0e0f0000019ab697e800
             0000000000000007ca0006dfde1c1d0b73e812962460740fe5f2c8e487d56b10
             0e41040c6ef92a906b41d22e9703658bf09a",
        );
        let sk = SessionKey::from_bytes(&key);
        let mut frame = Vec::new();
        let header = Header {
            kind: Kind::Request,
            nodename: "node2",
            salt: &SALT,
            ts_ms: 1_764_000_000_000,
            counter: 7,
        };
        sk.seal_frame(&header, br#"{"action":"daemon_status"}"#, &mut frame)
            .unwrap();
        assert_eq!(frame, expected);

        let range = sk.open_in_place(&mut frame).unwrap();
        assert_eq!(&frame[range], br#"{"action":"daemon_status"}"#);
    }

    /// PROTOCOL.md's fingerprint vector, computed with Python `cryptography`'s HKDF.
    #[test]
    fn fingerprint_test_vector() {
        let fp = Fingerprint::of(b"correct horse battery staple", "prod1");
        assert_eq!(fp.to_string(), "8213a94a1a4da7c3");
        // The cluster name is part of it: one secret has another name in another cluster.
        assert_ne!(
            Fingerprint::of(b"correct horse battery staple", "prod2"),
            fp
        );
    }

    #[test]
    fn wrong_key_fails() {
        let good = SessionKey::derive(b"s", "c", "n", &SALT);
        let bad = SessionKey::derive(b"t", "c", "n", &SALT);
        let other_cluster = SessionKey::derive(b"s", "d", "n", &SALT);
        let mut frame = Vec::new();
        let header = Header {
            kind: Kind::Heartbeat,
            nodename: "n",
            salt: &SALT,
            ts_ms: 1,
            counter: 0,
        };
        good.seal_frame(&header, b"{}", &mut frame).unwrap();
        assert_eq!(bad.open_in_place(&mut frame.clone()), Err(OpenError));
        assert_eq!(
            other_cluster.open_in_place(&mut frame.clone()),
            Err(OpenError)
        );
        assert!(good.open_in_place(&mut frame).is_ok());
    }
}
