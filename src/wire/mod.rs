//! The wire core (PROTOCOL.md): frames, session keys, AEAD, replay windows, payloads.
//! Pure: no I/O, no global state, the clock is passed in.

pub mod crypto;
pub mod fasthash;
pub mod frame;
pub mod json;
pub mod local;
pub mod payload;
pub mod replay;
pub mod sender;
pub mod session;

pub use crypto::{Fingerprint, OpenError, SessionKey, derive_key_bytes};
pub use frame::{FrameView, Header, HeaderError, Kind};
pub use payload::{Args, PayloadError, Request, RequestParser, Response};
pub use replay::{ReplayWindow, Stale};
pub use sender::Sender;
pub use session::{KeyCache, ReplayTable};
