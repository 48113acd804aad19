//! An OpenSVC-style cluster agent: the daemon's listener and what it serves.
//!
//! The binaries' entry points are [`cli`]. Everything else is private to the crate, but for
//! the pure cores and helpers that the tests, the fuzz targets, the benches and the load
//! generator drive directly: those sit in [`internals`], hidden and not API.
//!
//! Pure cores (`wire`, `guard`, `hb`, `config` parsing, the orchestration rules) carry no I/O
//! and read no clock of their own, so they can be unit-tested, fuzzed, benched and simulated;
//! the I/O lives at the edges.

pub mod cli;
mod daemon;
mod dispatch;
mod handlers;
mod listener;
mod locks;
mod service;
mod state;

/// Not API: the pieces the tests, fuzz targets, benches, load generator and simulation use.
#[doc(hidden)]
pub mod internals;

pub(crate) use internals::{client, clock, config, guard, hb, wire};
