//! The wire core (PROTOCOL.md): frames, session keys, AEAD, replay windows, payloads.
//! Pure: no I/O, no global state, the clock is passed in.

pub mod crypto;
pub mod frame;
pub mod json;
pub mod local;
pub mod payload;
pub mod replay;
pub mod sealer;
pub mod session;

pub use crypto::{Fingerprint, OpenError, SessionKey, derive_key_bytes};
pub use frame::{FrameView, Header, HeaderError, Kind};
pub use payload::{Args, PayloadError, Request, RequestParser, Response};
pub use replay::{ReplayWindow, Stale};
pub use sealer::Sealer;
pub use session::{KeyCache, ReplayTable};

/// The hasher of the receive path's small maps (cluster members by nodename, session keys and
/// replay windows by salt, members' last heartbeats, the peers' views by nodename), where
/// SipHash cost more than the lookups it served: foldhash, seeded at random per map.
///
/// Not a defence against hash flooding by itself: use it only for maps whose entries an
/// outsider cannot choose. Members come from the configuration; keys, replay windows,
/// heartbeats and peers are inserted only for frames that authenticated, from members.
/// Lookups under attacker-chosen keys still cost one probe sequence among those entries.
pub type FastState = foldhash::fast::RandomState;
