//! Not API: the pure cores and helpers that the tests, the fuzz targets, the benches, the load
//! generator and the simulation drive directly. Their files live where the layout puts them;
//! they are declared here so that one hidden module holds everything that is public but not
//! API.

#[path = "bench_support.rs"]
pub mod bench_support;
#[path = "client/mod.rs"]
pub mod client;
#[path = "clock.rs"]
pub mod clock;
#[path = "config/mod.rs"]
pub mod config;
#[path = "guard/mod.rs"]
pub mod guard;
#[path = "hb/mod.rs"]
pub mod hb;
#[path = "sim/mod.rs"]
pub mod sim;
#[path = "wire/mod.rs"]
pub mod wire;
