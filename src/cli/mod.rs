//! Command-line front ends. `nodemgr` and `svcmgr` live here so the binaries stay thin.

mod common;
mod keyring;
mod nodeconf;
pub mod nodemgr;
mod output;
pub mod svcmgr;
