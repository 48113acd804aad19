//! The one wall clock. Everything else is handed the time (`now_ms`) by its caller, so that
//! the pure cores can be driven by tests, fuzzers and simulations with a clock of their own.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 for a clock set before it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// When this process started, as the receive gate's step 5 needs it: read once, on the first
/// call (the daemon makes it first thing).
pub fn process_started_ms() -> u64 {
    static STARTED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *STARTED.get_or_init(now_ms)
}
