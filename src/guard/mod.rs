//! Admission control, pure: the blacklist, the join rate limit, and the receive path that
//! applies PROTOCOL.md's validation order (`Gate::admit` → `Outcome`).

pub mod blacklist;
pub mod conn;
pub mod gate;
pub mod ratelimit;
pub mod stats;

pub use blacklist::{BAN_THRESHOLD, Blacklist, Strike, Verdict};
pub use conn::{CloseReason, FrameLimits, Framer, Step};
pub use gate::{
    DropReason, Gate, GateConfig, GateStats, HeaderCheck, Invalid, InvalidClass, Message, Notice,
    Opened, Outcome, SharedGuard,
};
pub use ratelimit::RateLimit;
pub use stats::AtomicGateStats;
