//! Services and their monitors: configuration, instances (actions, checks, logs), and the
//! service monitor's state machine (pure). The `monitor` thread only emits ticks; each tick
//! runs on the shard owning the service, so actions on one service are serialized.

pub(crate) mod arbitrator;
pub(crate) mod config;
pub(crate) mod exec;
pub(crate) mod instance;
pub(crate) mod log;
pub(crate) mod monitor;
pub(crate) mod orchestrate;

pub(crate) use config::{ServiceConfig, list_services};
pub(crate) use instance::Instance;
pub(crate) use monitor::{Plan, ResourceView, ServiceMonitor};
