//! A service instance on this node: its resources' actions and checks, its logged outcomes,
//! its runtime files under `<var>/services/NAME/`. Used by `svcmgr` (which carries actions
//! out) and by the shard owning the service (checks, monitor restarts).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use super::config::{Resource, ServiceConfig};
use super::exec::run_shell;
use super::log::{self, Record};
use super::monitor::{ResourceView, instance_status};
use crate::clock::now_ms;

pub(crate) const CHECK_TIMEOUT_CAP: Duration = Duration::from_secs(30);

/// What a resource is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResourceAction {
    Start,
    Stop,
}

impl ResourceAction {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ResourceAction::Start => "start",
            ResourceAction::Stop => "stop",
        }
    }
}

/// A resource action that did not succeed: which resource, which action, why.
#[derive(Debug, thiserror::Error)]
#[error("{rid}: {action} {reason}", action = action.as_str())]
pub(crate) struct ActionError {
    pub rid: String,
    pub action: ResourceAction,
    pub reason: ActionFailure,
}

/// Why a resource action failed. The spawn error is said in the message, not returned as a
/// source: the service log and the CLI show these as one line.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ActionFailure {
    #[error("could not run {command:?}: {cause}")]
    Spawn {
        command: String,
        cause: std::io::Error,
    },
    #[error("timed out after {:.0}s", after.as_secs_f64())]
    TimedOut { after: Duration },
    #[error("failed with exit code {code}")]
    Exit { code: i32 },
}

pub(crate) struct Instance<'a> {
    pub config: &'a ServiceConfig,
    pub node: &'a str,
    /// `<var>/services/NAME`
    pub dir: PathBuf,
}

impl<'a> Instance<'a> {
    pub(crate) fn new(config: &'a ServiceConfig, node: &'a str, services_dir: &Path) -> Self {
        Instance {
            config,
            node,
            dir: services_dir.join(&config.name),
        }
    }

    pub(crate) fn log_path(&self) -> PathBuf {
        self.dir.join("log")
    }

    pub(crate) fn log(&self, level: &str, resource: Option<&str>, message: impl Into<String>) {
        let record = Record {
            time: now_ms(),
            level: level.into(),
            node: self.node.into(),
            service: self.config.name.clone(),
            resource: resource.map(str::to_string),
            message: message.into(),
        };
        if let Err(e) = log::append(&self.log_path(), &record) {
            tracing::error!(service = %self.config.name, "cannot write the service log: {e}");
        }
    }

    fn env(&self) -> [(&'static str, &str); 2] {
        [
            ("OSVC_SVCNAME", &self.config.name),
            ("OSVC_NODENAME", self.node),
        ]
    }

    /// One resource's action, logged.
    pub(crate) fn resource_action(
        &self,
        r: &Resource,
        action: ResourceAction,
    ) -> Result<(), ActionError> {
        let name = action.as_str();
        let cmd = match action {
            ResourceAction::Start => r.start.as_deref(),
            ResourceAction::Stop => r.stop.as_deref(),
        };
        let Some(cmd) = cmd else {
            self.log(
                "info",
                Some(&r.rid),
                format!("{name}: no {name} command, skipped"),
            );
            return Ok(());
        };
        self.log("info", Some(&r.rid), format!("{name}: {cmd}"));
        let failed = |reason| ActionError {
            rid: r.rid.clone(),
            action,
            reason,
        };
        let out = run_shell(cmd, r.timeout, &self.env()).map_err(|cause| {
            let e = failed(ActionFailure::Spawn {
                command: cmd.to_string(),
                cause,
            });
            self.log("error", Some(&r.rid), format!("{name}: {}", e.reason));
            e
        })?;
        let output = out.output();
        if !output.is_empty() {
            self.log("info", Some(&r.rid), output);
        }
        if out.success() {
            self.log(
                "info",
                Some(&r.rid),
                format!("{name} done in {:.2}s", out.duration.as_secs_f64()),
            );
            return Ok(());
        }
        let e = failed(if out.timed_out {
            ActionFailure::TimedOut { after: r.timeout }
        } else {
            ActionFailure::Exit {
                code: out.code.unwrap_or(-1),
            }
        });
        self.log("error", Some(&r.rid), format!("{name} {}", e.reason));
        Err(e)
    }

    /// Starts every resource in order, stopping at the first failure.
    pub(crate) fn start(&self) -> Result<(), ActionError> {
        self.log("info", None, "start");
        for r in &self.config.resources {
            if let Err(e) = self.resource_action(r, ResourceAction::Start) {
                self.log("error", None, format!("start failed: {e}"));
                return Err(e);
            }
        }
        self.log("info", None, "start done");
        Ok(())
    }

    /// Stops every resource in reverse order; goes on past failures, reports the first.
    pub(crate) fn stop(&self) -> Result<(), ActionError> {
        self.log("info", None, "stop");
        let mut first_err = None;
        for r in self.config.resources.iter().rev() {
            if let Err(e) = self.resource_action(r, ResourceAction::Stop) {
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            None => {
                self.log("info", None, "stop done");
                Ok(())
            }
            Some(e) => {
                self.log("error", None, format!("stop failed: {e}"));
                Err(e)
            }
        }
    }

    /// Runs every resource's check (not logged: checks run on every monitor tick).
    pub(crate) fn check(&self) -> Vec<ResourceView> {
        self.config
            .resources
            .iter()
            .map(|r| ResourceView {
                rid: r.rid.clone(),
                up: r.check.as_deref().map(|cmd| {
                    run_shell(cmd, r.timeout.min(CHECK_TIMEOUT_CAP), &self.env())
                        .is_ok_and(|o| o.success())
                }),
                restart_limit: r.restart,
            })
            .collect()
    }

    /// The instance status from fresh checks, written to `status.json`.
    pub(crate) fn refresh_status(&self) -> (Vec<ResourceView>, Value) {
        let views = self.check();
        let status = status_json(&views);
        let _ = std::fs::create_dir_all(&self.dir);
        write_json_atomic(&self.dir.join("status.json"), &status);
        (views, status)
    }
}

pub(crate) fn status_json(views: &[ResourceView]) -> Value {
    let resources: serde_json::Map<String, Value> = views
        .iter()
        .map(|v| {
            let s = match v.up {
                Some(true) => "up",
                Some(false) => "down",
                None => "n/a",
            };
            (v.rid.clone(), json!({ "status": s }))
        })
        .collect();
    json!({
        "avail": instance_status(views),
        "resources": resources,
        "updated_ms": now_ms(),
    })
}

/// Temp file + rename: a reader never sees half a file, a crash never leaves one.
pub(crate) fn write_json_atomic(path: &Path, value: &Value) {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let ok = std::fs::write(&tmp, value.to_string()).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = ok {
        tracing::error!(path = %path.display(), "cannot write: {e}");
        let _ = std::fs::remove_file(&tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_stop_check_and_logs() {
        let dir = std::env::temp_dir().join(format!("osvc-inst-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let flag = dir.join("flag");
        let text = format!(
            "[app#1]\nstart = touch {f}\nstop = rm -f {f}\ncheck = test -f {f}\n",
            f = flag.display()
        );
        std::fs::create_dir_all(&dir).unwrap();
        let c = ServiceConfig::parse("s1", &text, Path::new("s1.conf"), "n1").unwrap();
        let i = Instance::new(&c, "n1", &dir);
        assert_eq!(i.refresh_status().1["avail"], "down");
        i.start().unwrap();
        assert_eq!(i.refresh_status().1["avail"], "up");
        i.stop().unwrap();
        assert_eq!(i.check()[0].up, Some(false));
        let (records, _) = log::backlog(&i.log_path(), 100);
        assert!(records.iter().any(|r| r.message == "start done"));
        assert!(
            records
                .iter()
                .any(|r| r.resource.as_deref() == Some("app#1"))
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
