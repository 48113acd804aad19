//! A service's configuration: `<etc>/<svcname>.conf`, INI in OpenSVC style.
//!
//! ```ini
//! [DEFAULT]
//! nodes = node1 node2
//! orchestrate = ha
//!
//! [app#1]
//! start = /srv/app/start
//! stop = /srv/app/stop
//! check = /srv/app/check
//! restart = 2
//! timeout = 30
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{ConfigError, IniDocument, parse_duration_ms};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Orchestrate {
    No,
    Ha,
}

impl Orchestrate {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Orchestrate::No => "no",
            Orchestrate::Ha => "ha",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Resource {
    /// `app#1`
    pub rid: String,
    pub start: Option<String>,
    pub stop: Option<String>,
    pub check: Option<String>,
    /// How many times the monitor may restart it when found down while expected started.
    pub restart: u32,
    pub timeout: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ServiceConfig {
    pub name: String,
    pub nodes: Vec<String>,
    pub orchestrate: Orchestrate,
    pub resources: Vec<Resource>,
}

pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

pub(crate) fn config_path(etc: &Path, svcname: &str) -> PathBuf {
    etc.join(format!("{svcname}.conf"))
}

impl ServiceConfig {
    pub(crate) fn parse(
        name: &str,
        text: &str,
        path: &Path,
        this_node: &str,
    ) -> Result<ServiceConfig, ConfigError> {
        let doc = IniDocument::parse(text, path)?;
        let value_err = |section: &str, key: &str, value: &str, message: &str| ConfigError::Value {
            path: path.to_path_buf(),
            line: doc.line_of(section, key).unwrap_or(0),
            key: format!("{section}.{key}"),
            value: value.to_string(),
            message: message.to_string(),
        };
        let nodes: Vec<String> = match doc.get("DEFAULT", "nodes") {
            Some(v) if !v.trim().is_empty() => {
                let mut out: Vec<String> = Vec::new();
                for n in v.split_whitespace() {
                    if !out.iter().any(|o| o == n) {
                        out.push(n.to_string());
                    }
                }
                out
            }
            _ => vec![this_node.to_string()],
        };
        let orchestrate = match doc.get("DEFAULT", "orchestrate").map(str::trim) {
            None | Some("no") | Some("") => Orchestrate::No,
            Some("ha") => Orchestrate::Ha,
            Some(v) => return Err(value_err("DEFAULT", "orchestrate", v, "expected no or ha")),
        };
        let mut resources = Vec::new();
        for section in doc.sections() {
            if section == "DEFAULT" {
                continue;
            }
            let Some((kind, index)) = section.split_once('#') else {
                return Err(ConfigError::Syntax {
                    path: path.to_path_buf(),
                    line: doc.section_line(section).unwrap_or(0),
                    message: format!(
                        "unknown section [{section}]: resources are named like [app#1]"
                    ),
                });
            };
            if kind != "app"
                || index.is_empty()
                || !index.chars().all(|c| c.is_ascii_alphanumeric())
            {
                return Err(ConfigError::Syntax {
                    path: path.to_path_buf(),
                    line: doc.section_line(section).unwrap_or(0),
                    message: format!(
                        "unsupported resource [{section}]: only app#N resources are supported"
                    ),
                });
            }
            for key in doc.keys(section) {
                if !matches!(key, "start" | "stop" | "check" | "restart" | "timeout") {
                    return Err(value_err(
                        section,
                        key,
                        doc.get(section, key).unwrap_or(""),
                        "unknown keyword (known: start, stop, check, restart, timeout)",
                    ));
                }
            }
            let cmd = |key: &str| {
                doc.get(section, key)
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
            };
            let restart = match doc.get(section, "restart") {
                None => 0,
                Some(v) => v.trim().parse::<u32>().map_err(|_| {
                    value_err(section, "restart", v, "expected a non-negative integer")
                })?,
            };
            let timeout = match doc.get(section, "timeout") {
                None => DEFAULT_TIMEOUT,
                Some(v) => parse_duration_ms(v)
                    .filter(|ms| *ms > 0)
                    .map(Duration::from_millis)
                    .ok_or_else(|| {
                        value_err(
                            section,
                            "timeout",
                            v,
                            "expected a duration such as 30 or 30s",
                        )
                    })?,
            };
            resources.push(Resource {
                rid: section.to_string(),
                start: cmd("start"),
                stop: cmd("stop"),
                check: cmd("check"),
                restart,
                timeout,
            });
        }
        Ok(ServiceConfig {
            name: name.to_string(),
            nodes,
            orchestrate,
            resources,
        })
    }

    pub(crate) fn load(
        etc: &Path,
        name: &str,
        this_node: &str,
    ) -> Result<ServiceConfig, ConfigError> {
        let path = config_path(etc, name);
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Io {
            path: path.clone(),
            source,
        })?;
        Self::parse(name, &text, &path, this_node)
    }

    pub(crate) fn resource(&self, rid: &str) -> Option<&Resource> {
        self.resources.iter().find(|r| r.rid == rid)
    }
}

/// Every service configured on this node: `<etc>/*.conf` but node.conf, sorted.
pub(crate) fn list_services(etc: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(etc)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().to_str()?.strip_suffix(".conf")?.to_string();
                    (name != "node"
                        && crate::wire::payload::valid_svcname(&name).is_ok()
                        && e.path().is_file())
                    .then_some(name)
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "[DEFAULT]\nnodes = n1 n2 n1\norchestrate = ha\n\n[app#1]\nstart = /bin/true\ncheck = test -f /tmp/x\nrestart = 2\ntimeout = 5s\n\n[app#2]\nstop = echo bye\n";

    #[test]
    fn parses_resources_and_defaults() {
        let c = ServiceConfig::parse("svc1", SAMPLE, Path::new("svc1.conf"), "n1").unwrap();
        assert_eq!(c.nodes, vec!["n1", "n2"]);
        assert_eq!(c.orchestrate, Orchestrate::Ha);
        assert_eq!(c.resources.len(), 2);
        let r = c.resource("app#1").unwrap();
        assert_eq!(r.check.as_deref(), Some("test -f /tmp/x"));
        assert_eq!(r.restart, 2);
        assert_eq!(r.timeout, Duration::from_secs(5));
        assert_eq!(c.resource("app#2").unwrap().restart, 0);
        let d = ServiceConfig::parse("s", "", Path::new("s.conf"), "me").unwrap();
        assert_eq!(d.nodes, vec!["me"]);
        assert_eq!(d.orchestrate, Orchestrate::No);
    }

    #[test]
    fn errors_name_the_key() {
        let e = |t: &str| {
            ServiceConfig::parse("s", t, Path::new("s.conf"), "me")
                .unwrap_err()
                .to_string()
        };
        assert!(e("[DEFAULT]\norchestrate = maybe\n").contains("DEFAULT.orchestrate"));
        assert!(e("[app#1]\nrestart = -1\n").contains("app#1.restart"));
        assert!(e("[app#1]\nstrat = x\n").contains("unknown keyword"));
        assert!(e("[disk#1]\n").contains("only app#N"));
    }
}
