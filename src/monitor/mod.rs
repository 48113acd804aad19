//! Services and their monitors: configuration, instances (actions, checks, logs), and the
//! service monitor's state machine (pure). The `monitor` thread only emits ticks; each tick
//! runs on the shard owning the service, so actions on one service are serialized.

pub mod exec;
pub mod instance;
pub mod log;
pub mod orchestrate;
pub mod state;
pub mod svcconf;

pub use instance::Instance;
pub use state::{Plan, ResourceView, ServiceMonitor};
pub use svcconf::{ServiceConfig, list_services};
