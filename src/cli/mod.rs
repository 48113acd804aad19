//! Command-line front ends. `nodemgr` and `svcmgr` live here so the binaries stay thin.

mod common;
mod generate;
mod keyring;
mod logging;
pub mod nodemgr;
mod output;
pub mod svcmgr;
