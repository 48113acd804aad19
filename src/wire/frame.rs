//! Frame layout (PROTOCOL.md, "Frame"): a borrowed view that parses the header without copying,
//! and an encoder that writes the header into a caller's buffer.

use std::fmt;

/// Protocol version carried in byte 0.
pub const VERSION: u8 = 1;
pub const SALT_LEN: usize = 16;
pub const TAG_LEN: usize = 16;
/// version + kind + name_len.
const FIXED_PREFIX: usize = 3;
/// salt + ts + counter, after the nodename.
const FIXED_SUFFIX: usize = SALT_LEN + 8 + 8;
/// Largest UDP payload over IPv4.
pub const MAX_UDP_FRAME: usize = 65_507;

/// Header length for a nodename of `name_len` bytes: everything authenticated as AAD.
pub const fn header_len(name_len: usize) -> usize {
    FIXED_PREFIX + name_len + FIXED_SUFFIX
}

/// A frame's first bytes that are header whatever its nodename's length: no frame's
/// ciphertext starts before them, so a reader may take them before it knows that length.
pub const HEADER_WITHOUT_NAME: usize = header_len(0);

/// Smallest frame that can carry a one-byte payload.
pub const fn min_frame_len(name_len: usize) -> usize {
    header_len(name_len) + 1 + TAG_LEN
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    Request = 1,
    Response = 2,
    Heartbeat = 3,
    StreamChunk = 4,
}

impl Kind {
    pub fn from_u8(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Request),
            2 => Some(Kind::Response),
            3 => Some(Kind::Heartbeat),
            4 => Some(Kind::StreamChunk),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Request => "request",
            Kind::Response => "response",
            Kind::Heartbeat => "heartbeat",
            Kind::StreamChunk => "stream_chunk",
        }
    }
}

/// Why a header could not be read. `nodename_readable` tells the caller whether the failure
/// can be charged to a nodename (PROTOCOL.md step 2: only where a nodename could be read).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("frame too short")]
    TooShort,
    #[error("unknown protocol version {0}")]
    BadVersion(u8),
    #[error("unknown frame kind {0}")]
    BadKind(u8),
    #[error("name_len is 0")]
    EmptyName,
    #[error("name_len runs past the end of the frame")]
    NameLenPastEnd,
    #[error("nodename is not UTF-8")]
    NameNotUtf8,
    #[error("empty payload")]
    EmptyPayload,
}

/// A parsed header over a borrowed frame. All accessors are O(1) slices of the input.
#[derive(Clone, Copy)]
pub struct FrameView<'a> {
    buf: &'a [u8],
    nodename: &'a str,
    salt: &'a [u8; SALT_LEN],
    kind: Kind,
}

/// A frame split after its header (`FrameView::split_mut`).
#[derive(Debug)]
pub struct SplitFrame<'a> {
    /// The header's fields.
    pub fields: Header<'a>,
    /// The whole header: the additional authenticated data.
    pub header: &'a [u8],
    /// Ciphertext and tag.
    pub body: &'a mut [u8],
}

/// The header checks of `FrameView::parse`. `head` holds at least the header when the
/// frame is `total` bytes long and its header is whole.
#[inline]
fn check(head: &[u8], total: usize) -> Result<(Kind, &str, &[u8; SALT_LEN]), HeaderFailure<'_>> {
    let fail = |error, nodename| Err(HeaderFailure { error, nodename });
    if total < FIXED_PREFIX || head.len() < FIXED_PREFIX {
        return fail(HeaderError::TooShort, None);
    }
    if head[0] != VERSION {
        return fail(HeaderError::BadVersion(head[0]), None);
    }
    let Some(kind) = Kind::from_u8(head[1]) else {
        return fail(HeaderError::BadKind(head[1]), None);
    };
    let name_len = head[2] as usize;
    if name_len == 0 {
        return fail(HeaderError::EmptyName, None);
    }
    let Some(name_bytes) = head.get(FIXED_PREFIX..FIXED_PREFIX + name_len) else {
        return fail(HeaderError::NameLenPastEnd, None);
    };
    let Ok(nodename) = nodename_str(name_bytes) else {
        return fail(HeaderError::NameNotUtf8, None);
    };
    let header = header_len(name_len);
    if total < header + TAG_LEN {
        return fail(HeaderError::TooShort, Some(nodename));
    }
    if total == header + TAG_LEN {
        return fail(HeaderError::EmptyPayload, Some(nodename));
    }
    let salt_at = FIXED_PREFIX + name_len;
    let Some(Ok(salt)) = head
        .get(salt_at..salt_at + SALT_LEN)
        .map(<&[u8; SALT_LEN]>::try_from)
    else {
        return fail(HeaderError::TooShort, Some(nodename));
    };
    Ok((kind, nodename, salt))
}

/// The nodename as text: ASCII (nearly every name) is checked inline, the rest by the full
/// UTF-8 check. Every frame pays this, a banned name's drop included.
#[inline]
fn nodename_str(bytes: &[u8]) -> Result<&str, std::str::Utf8Error> {
    if bytes.is_ascii() {
        // SAFETY: ASCII bytes are valid UTF-8.
        Ok(unsafe { std::str::from_utf8_unchecked(bytes) })
    } else {
        std::str::from_utf8(bytes)
    }
}

/// How many of a frame's first bytes `FrameView::header` needs, given what `head` holds so
/// far (at least the 3-byte prefix, else 3) and the frame's length `total`: the prefix, then
/// the whole header, never more than the frame.
pub fn head_len(head: &[u8], total: usize) -> usize {
    match head.get(2) {
        Some(&n) => header_len(n as usize).min(total),
        None => FIXED_PREFIX.min(total),
    }
}

/// Outcome of a header parse that failed: the error and, when it could be read, the nodename.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderFailure<'a> {
    pub error: HeaderError,
    pub nodename: Option<&'a str>,
}

impl<'a> FrameView<'a> {
    /// Parses the header of `buf`. Checks, in order: length of the fixed prefix, version, kind,
    /// name_len, the nodename's encoding, the full header and tag length, a non-empty payload.
    pub fn parse(buf: &'a [u8]) -> Result<FrameView<'a>, HeaderFailure<'a>> {
        let (kind, nodename, salt) = check(buf, buf.len())?;
        Ok(FrameView {
            buf,
            nodename,
            salt,
            kind,
        })
    }

    /// `parse`, the frame split after its header: the header's fields, and the ciphertext
    /// with its tag, mutable, to be decrypted in place while the fields are in use.
    #[inline]
    pub fn split_mut(buf: &'a mut [u8]) -> Result<SplitFrame<'a>, HeaderFailure<'a>> {
        let total = buf.len();
        let at = head_len(buf, total);
        let (header, body) = buf.split_at_mut(at);
        let header: &'a [u8] = header;
        let fields = Self::header(header, total)?;
        Ok(SplitFrame {
            fields,
            header,
            body,
        })
    }

    /// The header checks of `parse` on the first bytes of a frame of `total` bytes, before
    /// the rest has arrived: `head` holds at least `head_len(head, total)` bytes (a stream
    /// reads the first 3, then up to the whole header, and decides before the body).
    #[inline]
    pub fn header(head: &'a [u8], total: usize) -> Result<Header<'a>, HeaderFailure<'a>> {
        let (kind, nodename, salt) = check(head, total)?;
        let ts_at = FIXED_PREFIX + nodename.len() + SALT_LEN;
        // `check` found the salt, so the ts and the counter that end the header are there.
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            if let Some(s) = head.get(at..at + 8) {
                b.copy_from_slice(s);
            }
            u64::from_be_bytes(b)
        };
        Ok(Header {
            kind,
            nodename,
            salt,
            ts_ms: u64_at(ts_at),
            counter: u64_at(ts_at + 8),
        })
    }

    /// The nodename of a header already checked by `parse`, read again from its bytes (the
    /// caller split the frame to decrypt it).
    pub fn nodename_of(header: &'a [u8]) -> Option<&'a str> {
        let len = *header.get(2)? as usize;
        std::str::from_utf8(header.get(FIXED_PREFIX..FIXED_PREFIX + len)?).ok()
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn nodename(&self) -> &'a str {
        self.nodename
    }

    pub fn salt(&self) -> &'a [u8; SALT_LEN] {
        self.salt
    }

    pub fn ts_ms(&self) -> u64 {
        self.u64_at(FIXED_PREFIX + self.nodename.len() + SALT_LEN)
    }

    pub fn counter(&self) -> u64 {
        self.u64_at(FIXED_PREFIX + self.nodename.len() + SALT_LEN + 8)
    }

    /// Bytes authenticated as additional data: the whole header.
    pub fn header_len(&self) -> usize {
        header_len(self.nodename.len())
    }

    pub fn aad(&self) -> &'a [u8] {
        &self.buf[..self.header_len()]
    }

    /// Ciphertext followed by the tag.
    pub fn sealed(&self) -> &'a [u8] {
        &self.buf[self.header_len()..]
    }

    pub fn payload_len(&self) -> usize {
        self.buf.len() - self.header_len() - TAG_LEN
    }

    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }

    fn u64_at(&self, at: usize) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.buf[at..at + 8]);
        u64::from_be_bytes(b)
    }
}

impl fmt::Debug for FrameView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameView")
            .field("kind", &self.kind)
            .field("nodename", &self.nodename())
            .field("ts_ms", &self.ts_ms())
            .field("counter", &self.counter())
            .field("payload_len", &self.payload_len())
            .finish()
    }
}

/// The clear fields of a header, for encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header<'a> {
    pub kind: Kind,
    pub nodename: &'a str,
    pub salt: &'a [u8; SALT_LEN],
    pub ts_ms: u64,
    pub counter: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("nodename must be 1 to 255 bytes, got {0}")]
    NameLength(usize),
    #[error("empty payload")]
    EmptyPayload,
    #[error("payload too large to seal")]
    TooLarge,
    #[error("the OS random generator failed: no salt for a new session")]
    NoRandomness,
}

impl Header<'_> {
    /// Appends the header to `out` and returns its length.
    pub fn write(&self, out: &mut Vec<u8>) -> Result<usize, EncodeError> {
        let name = self.nodename.as_bytes();
        if name.is_empty() || name.len() > 255 {
            return Err(EncodeError::NameLength(name.len()));
        }
        out.reserve(header_len(name.len()));
        out.push(VERSION);
        out.push(self.kind as u8);
        out.push(name.len() as u8);
        out.extend_from_slice(name);
        out.extend_from_slice(self.salt);
        out.extend_from_slice(&self.ts_ms.to_be_bytes());
        out.extend_from_slice(&self.counter.to_be_bytes());
        Ok(header_len(name.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(payload_len: usize) -> Vec<u8> {
        let mut out = Vec::new();
        Header {
            kind: Kind::Heartbeat,
            nodename: "n1",
            salt: &[7; 16],
            ts_ms: 42,
            counter: 9,
        }
        .write(&mut out)
        .unwrap();
        out.extend(std::iter::repeat_n(0xaa, payload_len + TAG_LEN));
        out
    }

    #[test]
    fn view_reads_every_field() {
        let buf = sample(5);
        let v = FrameView::parse(&buf).unwrap();
        assert_eq!(v.kind(), Kind::Heartbeat);
        assert_eq!(v.nodename(), "n1");
        assert_eq!(v.salt(), &[7; 16]);
        assert_eq!(v.ts_ms(), 42);
        assert_eq!(v.counter(), 9);
        assert_eq!(v.payload_len(), 5);
        assert_eq!(v.aad().len(), 3 + 2 + 32);
        assert_eq!(v.sealed().len(), 5 + TAG_LEN);
    }

    #[test]
    fn invalid_headers_by_class() {
        fn err(b: &[u8]) -> HeaderFailure<'_> {
            FrameView::parse(b).unwrap_err()
        }
        assert_eq!(err(&[1, 1]).error, HeaderError::TooShort);
        let mut b = sample(4);
        b[0] = 2;
        assert_eq!(err(&b).error, HeaderError::BadVersion(2));
        let mut b = sample(4);
        b[1] = 9;
        assert_eq!(err(&b).error, HeaderError::BadKind(9));
        let mut b = sample(4);
        b[2] = 0;
        assert_eq!(err(&b).error, HeaderError::EmptyName);
        let mut b = sample(4);
        b[2] = 200;
        assert_eq!(err(&b).error, HeaderError::NameLenPastEnd);
        let b = sample(0);
        let f = err(&b);
        assert_eq!(f.error, HeaderError::EmptyPayload);
        assert_eq!(f.nodename, Some("n1"));
        let b = sample(1);
        let f = err(&b[..b.len() - 2]);
        assert_eq!(f.error, HeaderError::TooShort);
        assert_eq!(f.nodename, Some("n1"));
        let mut b = sample(4);
        b[3] = 0xff;
        assert_eq!(err(&b).error, HeaderError::NameNotUtf8);
    }

    proptest::proptest! {
        /// `split_mut` reads what `parse` reads, and fails where it fails, with the same error.
        #[test]
        fn split_agrees_with_parse(
            mut bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..120),
            valid_prefix in proptest::prelude::any::<bool>(),
        ) {
            if valid_prefix && bytes.len() >= 3 {
                bytes[0] = VERSION;
                bytes[1] = 1;
                bytes[2] %= 12;
            }
            let copy = bytes.clone();
            let parsed = FrameView::parse(&copy);
            match (parsed, FrameView::split_mut(&mut bytes)) {
                (Ok(v), Ok(s)) => {
                    let f = s.fields;
                    proptest::prop_assert_eq!(
                        (v.kind(), v.nodename(), v.salt(), v.ts_ms(), v.counter()),
                        (f.kind, f.nodename, f.salt, f.ts_ms, f.counter)
                    );
                    proptest::prop_assert_eq!(v.aad(), s.header);
                    proptest::prop_assert_eq!(v.sealed(), &*s.body);
                }
                (Err(a), Err(b)) => proptest::prop_assert_eq!(a, b),
                (a, b) => proptest::prop_assert!(false, "parse {:?}, split {:?}", a.is_ok(), b.is_ok()),
            }
        }
    }

    #[test]
    fn encoder_refuses_bad_names() {
        let salt = [0; 16];
        let h = |n| Header {
            kind: Kind::Request,
            nodename: n,
            salt: &salt,
            ts_ms: 0,
            counter: 0,
        };
        assert_eq!(
            h("").write(&mut Vec::new()),
            Err(EncodeError::NameLength(0))
        );
        let long = "x".repeat(256);
        assert_eq!(
            h(&long).write(&mut Vec::new()),
            Err(EncodeError::NameLength(256))
        );
        assert!(h(&long[..255]).write(&mut Vec::new()).is_ok());
    }
}
