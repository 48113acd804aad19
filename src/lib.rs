//! An OpenSVC-style cluster agent: the daemon's listener and what it serves.
//!
//! Pure cores (`wire`, `guard`, `config` parsing) carry no I/O so they can be unit-tested,
//! fuzzed and benched; the I/O lives at the edges.

// Not API: the listener internals and frame helpers the load generator and the benches use.
#[doc(hidden)]
pub mod bench_support;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod dispatch;
pub mod guard;
pub mod handlers;
pub mod hb;
pub mod listener;
pub mod service;
#[doc(hidden)]
pub mod sim;
pub mod state;
pub mod wire;
