//! Command-line front ends. `nodemgr` lives here so the binaries stay thin.

pub mod nodemgr;
pub mod output;
