//! An OpenSVC-style cluster agent: the daemon's listener and what it serves.
//!
//! Pure cores (`wire`, `guard`, `config` parsing) carry no I/O so they can be unit-tested,
//! fuzzed and benched; the I/O lives at the edges.

pub mod config;
pub mod guard;
pub mod wire;
