//! Services and their monitors: configuration, instances (actions, checks, logs), and the
//! service monitor's state machine (pure). The `monitor` thread only emits ticks; each tick
//! runs on the shard owning the service, so actions on one service are serialized.

pub mod config;
pub mod exec;
pub mod instance;
pub mod log;
pub mod monitor;
pub mod orchestrate;

pub use config::{ServiceConfig, list_services};
pub use instance::Instance;
pub use monitor::{Plan, ResourceView, ServiceMonitor};
