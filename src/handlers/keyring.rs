//! `keyring_install`, `keyring_use`, `keyring_remove`, `keyring_list` (PROTOCOL.md, "Secret
//! rotation"). Runs on the node shard. Each change is written to node.conf under its lock and
//! applied at once; secrets are named by fingerprint only, in answers and in logs.

use serde_json::{Value, json};

use crate::config::{self, NodeConfig};
use crate::state::DaemonState;
use crate::wire::payload::Secret;
use crate::wire::{Fingerprint, Response};

fn fingerprint(c: &NodeConfig, secret: &str) -> Fingerprint {
    Fingerprint::of(secret.as_bytes(), &c.cluster.name)
}

/// The keyring's fingerprints, as `keyring_list` and `daemon_status` show them.
pub(super) fn fingerprints(c: &NodeConfig) -> Value {
    json!({
        "primary": fingerprint(c, &c.cluster.secret).to_string(),
        "alternate": c.cluster.alt_secret.as_ref().map(|s| fingerprint(c, s).to_string()),
    })
}

fn answer(c: &NodeConfig, changed: bool) -> Response {
    let mut data = fingerprints(c);
    data["changed"] = json!(changed);
    Response::ok(data)
}

/// What a step does to a keyring, decided on the version of node.conf read under its lock.
enum Step {
    Unchanged,
    Edit,
    Refused(String),
}

/// Runs one step: `decide` looks at the keyring and edits the document if needed. Nothing is
/// written unless something changes.
fn step(
    state: &DaemonState,
    action: &'static str,
    decide: impl Fn(&NodeConfig, Option<&mut config::IniDocument>) -> Result<Step, config::ConfigError>,
) -> Response {
    // The common case of a step run again: nothing to write, no lock to take.
    let current = state.config();
    match decide(&current, None) {
        Ok(Step::Unchanged) => return answer(&current, false),
        Ok(Step::Refused(e)) => return Response::error(format!("{action}: {e}")),
        Ok(Step::Edit) => {}
        Err(e) => return Response::error(format!("{action}: {}", config::ErrorChain(&e))),
    }
    let mut outcome = Step::Unchanged;
    let path = state.paths.node_conf();
    let r = config::update(&path, |doc, old| {
        outcome = decide(old, Some(doc))?;
        Ok(())
    });
    match (r, outcome) {
        (Err(e), _) => Response::error(format!(
            "{action}: cannot update node.conf: {}",
            config::ErrorChain(&e)
        )),
        (Ok(_), Step::Refused(e)) => Response::error(format!("{action}: {e}")),
        (Ok(new), outcome) => {
            let changed = matches!(outcome, Step::Edit);
            super::cluster::apply_now(state, new.clone());
            let keyring = fingerprints(&new);
            tracing::info!(
                action,
                changed,
                primary = keyring["primary"].as_str().unwrap_or("-"),
                alternate = keyring["alternate"].as_str().unwrap_or("-"),
                "keyring"
            );
            answer(&new, changed)
        }
    }
}

pub(super) fn install(state: &DaemonState, secret: &Secret) -> Response {
    let secret = secret.expose();
    step(state, "keyring_install", |c, doc| {
        if c.cluster.secret == secret || c.cluster.alt_secret.as_deref() == Some(secret) {
            return Ok(Step::Unchanged);
        }
        if let Some(alt) = &c.cluster.alt_secret {
            // Replacing it could strand the members that still seal under it.
            return Ok(Step::Refused(format!(
                "another alternate secret ({}) is installed: remove it first",
                fingerprint(c, alt)
            )));
        }
        if let Some(doc) = doc {
            doc.set("cluster", "alt_secret", secret)?;
        }
        Ok(Step::Edit)
    })
}

pub(super) fn use_secret(state: &DaemonState, fp: &str) -> Response {
    step(state, "keyring_use", |c, doc| {
        if fingerprint(c, &c.cluster.secret).to_string() == fp {
            return Ok(Step::Unchanged);
        }
        let Some(alt) = c
            .cluster
            .alt_secret
            .as_ref()
            .filter(|alt| fingerprint(c, alt).to_string() == fp)
        else {
            return Ok(Step::Refused(format!("no secret of fingerprint {fp} here")));
        };
        if let Some(doc) = doc {
            doc.set("cluster", "secret", alt)?;
            doc.set("cluster", "alt_secret", &c.cluster.secret)?;
        }
        Ok(Step::Edit)
    })
}

pub(super) fn remove(state: &DaemonState, fp: &str) -> Response {
    step(state, "keyring_remove", |c, doc| {
        if fingerprint(c, &c.cluster.secret).to_string() == fp {
            return Ok(Step::Refused(format!(
                "{fp} is this node's primary secret: use another one first"
            )));
        }
        match &c.cluster.alt_secret {
            Some(alt) if fingerprint(c, alt).to_string() == fp => {
                if let Some(doc) = doc {
                    doc.unset("cluster", "alt_secret");
                }
                Ok(Step::Edit)
            }
            _ => Ok(Step::Unchanged),
        }
    })
}

pub(super) fn list(state: &DaemonState) -> Response {
    Response::ok(fingerprints(&state.config()))
}
