//! `nodemgr cluster keyring ...`: one rotation step (PROTOCOL.md, "Secret rotation") driven
//! on every member in turn, with a line per member of what it now holds. A member that does
//! not answer is lagging: the command fails, and running the same step again finishes it.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use serde_json::{Value, json};

use super::nodemgr::Format;
use super::output::json_line;
use crate::client::{self, Identity, Target};
use crate::config::{self, NodeConfig, Paths};
use crate::wire::payload::{Secret, valid_fingerprint};
use crate::wire::{Request, Response};

#[derive(Subcommand, Debug)]
pub(crate) enum KeyringCmd {
    /// Step 1: every member gets the secret of --secret-file as its alternate (it opens
    /// frames under it, and still seals under its primary)
    Install {
        /// File holding the new secret (`-`: standard input); a secret is never taken on the
        /// command line, where other users and the shell history would see it
        #[arg(long, value_name = "FILE")]
        secret_file: String,
    },
    /// Step 2: every member seals under the secret of fingerprint FP, its old primary
    /// becoming its alternate
    Use {
        /// The new secret's fingerprint, as `list` shows it
        #[arg(long, value_name = "FP")]
        fingerprint: String,
    },
    /// Step 3: every member drops the secret of fingerprint FP. Refused while a member lags
    /// or still uses it as its primary, unless forced
    Remove {
        /// The old secret's fingerprint, as `list` shows it
        #[arg(long, value_name = "FP")]
        fingerprint: String,
        /// Remove it even where a member lags or still seals under it (that member is cut off)
        #[arg(long)]
        force: bool,
    },
    /// Every member's primary and alternate fingerprints
    List,
    /// Print a new random secret (32 bytes from the OS, hex) for `install`
    Generate,
}

/// One member's line of the report.
struct Row {
    member: String,
    primary: Option<String>,
    alternate: Option<String>,
    /// `ok`, `unchanged`, `lagging: ...` or `refused: ...`.
    result: String,
    ok: bool,
}

impl Row {
    fn of(member: &str, answer: Result<Response>) -> Row {
        let fp = |d: &Value, k: &str| d[k].as_str().map(str::to_string);
        match answer {
            Ok(r) if r.status == 0 => {
                let d = r.data.unwrap_or_default();
                let result = match d["changed"].as_bool() {
                    Some(false) => "unchanged",
                    _ => "ok",
                };
                Row {
                    member: member.into(),
                    primary: fp(&d, "primary"),
                    alternate: fp(&d, "alternate"),
                    result: result.into(),
                    ok: true,
                }
            }
            Ok(r) => Row {
                member: member.into(),
                primary: None,
                alternate: None,
                result: format!("refused: {}", r.error.unwrap_or_default()),
                ok: false,
            },
            Err(e) => Row {
                member: member.into(),
                primary: None,
                alternate: None,
                result: format!("lagging: {e:#}"),
                ok: false,
            },
        }
    }
}

/// Where each member is reached from this node: this node through its unix socket (it
/// answers even if its listener is down), the others over TCP under this node's keyring.
struct Members {
    conf: NodeConfig,
    identity: Identity,
    sock: std::path::PathBuf,
    timeout: Duration,
}

impl Members {
    fn load(paths: &Paths, timeout: Duration) -> Result<Members> {
        let (_, conf) = config::load(&paths.node_conf())?;
        Ok(Members {
            identity: Identity::of(&conf),
            conf,
            sock: paths.lsnr_sock(),
            timeout,
        })
    }

    fn names(&self) -> Vec<String> {
        self.conf.cluster.nodes.clone()
    }

    fn call(&self, member: &str, request: &Request) -> Result<Response> {
        let target = if member == self.conf.nodename {
            Target::Local(self.sock.clone())
        } else {
            let addr = self
                .conf
                .peer_addr(member)
                .with_context(|| format!("cannot resolve {member}'s address"))?;
            Target::Peer {
                addr,
                identity: self.identity.clone(),
            }
        };
        Ok(client::call(&target, request, self.timeout)?)
    }

    /// `request` on every member in turn.
    fn drive(&self, request: &Request) -> Vec<Row> {
        self.names()
            .iter()
            .map(|m| Row::of(m, self.call(m, request)))
            .collect()
    }
}

pub(super) fn read_secret(file: &str) -> Result<Secret> {
    let mut text = String::new();
    if file == "-" {
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the secret from standard input")?;
    } else {
        text = std::fs::read_to_string(Path::new(file))
            .with_context(|| format!("cannot read the secret file {file}"))?;
    }
    // A file's trailing newline is not part of the secret.
    let secret = text.trim_end_matches(['\n', '\r']).to_string();
    Secret::new(secret).map_err(|e| anyhow::anyhow!("{file}: {e}"))
}

fn fingerprint_arg(fp: &str) -> Result<String> {
    valid_fingerprint(fp).map_err(|e| anyhow::anyhow!("--fingerprint {fp:?}: {e}"))
}

pub(super) fn run(
    cmd: &KeyringCmd,
    paths: &Paths,
    format: Format,
    timeout: Duration,
) -> Result<ExitCode> {
    let request = match cmd {
        KeyringCmd::Generate => {
            super::output::say(format, &config::try_generate_secret()?);
            return Ok(ExitCode::SUCCESS);
        }
        KeyringCmd::Install { secret_file } => Request::KeyringInstall {
            secret: read_secret(secret_file)?,
        },
        KeyringCmd::Use { fingerprint } => Request::KeyringUse {
            fingerprint: fingerprint_arg(fingerprint)?,
        },
        KeyringCmd::Remove { fingerprint, .. } => Request::KeyringRemove {
            fingerprint: fingerprint_arg(fingerprint)?,
        },
        KeyringCmd::List => Request::KeyringList,
    };
    let members = Members::load(paths, timeout)?;
    if let KeyringCmd::Remove {
        fingerprint,
        force: false,
    } = cmd
    {
        let fp = fingerprint_arg(fingerprint)?;
        let rows = members.drive(&Request::KeyringList);
        let blocking: Vec<&Row> = rows
            .iter()
            .filter(|r| !r.ok || r.primary.as_deref() == Some(&fp))
            .collect();
        if !blocking.is_empty() {
            print_rows(&rows, format);
            let names: Vec<&str> = blocking.iter().map(|r| r.member.as_str()).collect();
            bail!(
                "not removing {fp}: {} still use it as their primary or did not answer \
                 (finish `keyring use` there, or --force)",
                names.join(" ")
            );
        }
    }
    let rows = members.drive(&request);
    print_rows(&rows, format);
    let lagging: Vec<&str> = rows
        .iter()
        .filter(|r| !r.ok)
        .map(|r| r.member.as_str())
        .collect();
    if lagging.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        bail!(
            "{}: not done on {} (run the same command again once they answer)",
            request.action(),
            lagging.join(" ")
        )
    }
}

fn print_rows(rows: &[Row], format: Format) {
    match format {
        Format::Json => {
            let list: Vec<Value> = rows
                .iter()
                .map(|r| {
                    json!({
                        "member": r.member,
                        "primary": r.primary,
                        "alternate": r.alternate,
                        "result": r.result,
                    })
                })
                .collect();
            println!("{}", json_line(&list));
        }
        Format::Table => {
            println!(
                "{:<20} {:<16} {:<16} result",
                "member", "primary", "alternate"
            );
            for r in rows {
                println!(
                    "{:<20} {:<16} {:<16} {}",
                    r.member,
                    r.primary.as_deref().unwrap_or("-"),
                    r.alternate.as_deref().unwrap_or("-"),
                    r.result
                );
            }
        }
    }
}
