//! Command-line front ends. `nodemgr` and `svcmgr` live here so the binaries stay thin.

pub mod common;
pub mod keyring;
pub mod nodemgr;
pub mod output;
pub mod svcmgr;
