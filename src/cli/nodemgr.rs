//! `nodemgr`: run and steer the daemon, edit node.conf.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

use super::nodeconf;
use super::output::{json_line, say, status_table, value_table};
use crate::client::{self, ClientError};
use crate::config::{self, Paths};
use crate::daemon::{self, RunOptions};
use crate::wire::payload::NodeLocalExpect;
use crate::wire::{Request, Response};

#[derive(Parser, Debug)]
#[command(
    name = "nodemgr",
    version,
    about = "Run and steer the cluster agent daemon of this node",
    long_about = "Run and steer the cluster agent daemon of this node.\n\n\
        Requests go to the local daemon over its unix socket (<var>/lsnr.sock), or with --node \
        to a peer's listener over TCP, encrypted with the cluster secret of this node's node.conf.",
    after_help = "Examples:\n  \
        nodemgr daemon run                  # foreground; writes a default node.conf first\n  \
        nodemgr daemon status\n  \
        nodemgr --node n2 daemon status     # a peer's\n  \
        nodemgr set --param listener.port --value 1215\n  \
        nodemgr print keywords"
)]
pub(crate) struct Cli {
    /// Agent root: etc is DIR/etc, var is DIR/var (default: /etc/opensvc and /var/lib/opensvc)
    #[arg(long, global = true, env = "OSVC_ROOT", value_name = "DIR", help_heading = GLOBAL)]
    pub root: Option<PathBuf>,

    /// Send the request to this peer node (a member's name) instead of the local daemon
    #[arg(long, global = true, value_name = "NAME", help_heading = GLOBAL)]
    pub node: Option<String>,

    /// Output format
    #[arg(long, global = true, value_enum, default_value_t = Format::Table, help_heading = GLOBAL)]
    pub format: Format,

    /// Seconds to wait for an answer
    #[arg(long, global = true, default_value_t = 10.0, value_name = "SECS", help_heading = GLOBAL)]
    pub timeout: f64,

    #[command(subcommand)]
    pub command: Command,
}

/// The help heading of the options every command takes, after the command's own.
pub(crate) const GLOBAL: &str = "Global options";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    Json,
    Table,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// The daemon: run, start, stop, shutdown, status, metrics, blacklist; join or leave a cluster
    #[command(subcommand)]
    Daemon(DaemonCmd),
    /// Set a node.conf keyword, e.g. `nodemgr set --param listener.port --value 1215`
    /// (creates the default node.conf first if there is none)
    Set {
        /// section.key (`nodemgr print keywords` lists them)
        #[arg(long, value_name = "SECTION.KEY")]
        param: String,
        /// The value, checked against the keyword's type
        #[arg(long)]
        value: String,
    },
    /// Print a node.conf keyword's value as written, or with --eval the value in force
    Get {
        /// section.key (`nodemgr print keywords` lists them). Without --eval, exits 1 if it is
        /// not set in node.conf
        #[arg(long, value_name = "SECTION.KEY")]
        param: String,
        /// The value in force: as written, else its default
        #[arg(long)]
        eval: bool,
    },
    /// Print node.conf or the keyword reference
    #[command(subcommand)]
    Print(super::nodeconf::PrintCmd),
    /// Check a configuration and report every problem
    #[command(subcommand)]
    Validate(super::nodeconf::ValidateCmd),
    /// Edit a configuration with $EDITOR, validated before it replaces the file
    #[command(subcommand)]
    Edit(EditCmd),
    /// The cluster as a whole: every member in turn
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Freeze the node: the monitor runs no automatic service action
    Freeze,
    /// Thaw the node: automatic service actions resume
    Thaw,
    /// Man pages and shell completions
    #[command(subcommand)]
    Generate(super::generate::GenerateCmd),
}

#[derive(Subcommand, Debug)]
pub(crate) enum ClusterCmd {
    /// Change the cluster secret without downtime: install, use, remove (see PROTOCOL.md)
    #[command(subcommand)]
    Keyring(super::keyring::KeyringCmd),
}

#[derive(Subcommand, Debug)]
pub(crate) enum EditCmd {
    /// Edit node.conf with $EDITOR; the edit is refused on any problem `validate config` reports
    Config,
}

#[derive(Args, Debug)]
pub(crate) struct ThreadArg {
    /// One daemon thread instead of the whole daemon
    #[arg(long, value_name = "ID", value_parser = clap::builder::PossibleValuesParser::new(daemon::supervisor::THREADS))]
    pub thread_id: Option<String>,
}

#[derive(Subcommand, Debug)]
pub(crate) enum DaemonCmd {
    /// Run the daemon in the foreground (creates a default node.conf on first run)
    Run,
    /// Start the daemon in the background, or one of its threads
    Start(ThreadArg),
    /// Stop the daemon, or one of its threads. Service instances keep running; peers see the
    /// node in maintenance and take nothing over (SIGTERM and SIGINT do the same)
    Stop(ThreadArg),
    /// Stop every local service instance (in parallel, each bounded by its timeouts), report
    /// what stopped and what failed, then stop the daemon (peers see it in maintenance)
    Shutdown,
    /// The daemon's status: threads, counters, every member with its state, blacklist
    Status,
    /// The daemon's metrics in the Prometheus text format, what `[metrics] addr` serves; with
    /// --format json, each family as {"type", "help", "samples": [{"labels", "value"}]}
    Metrics,
    /// The listener's blacklist of nodenames
    #[command(subcommand)]
    Blacklist(BlacklistCmd),
    /// Join a cluster through one of its members: `nodemgr daemon join --secret-file FILE --node PEER`
    /// (PEER: a member's name or address). Writes the cluster's name, secret, members, their
    /// addresses, heartbeat settings and listener port into node.conf
    #[command(group = clap::ArgGroup::new("the_secret").required(true))]
    Join {
        /// File holding the cluster's secret (`-`: standard input): other users and the shell
        /// history do not see it there
        #[arg(long, value_name = "FILE", group = "the_secret")]
        secret_file: Option<String>,
        /// The cluster's secret on the command line (visible to other users in the process
        /// list: prefer --secret-file)
        #[arg(long, group = "the_secret", value_name = "SECRET")]
        secret: Option<String>,
        /// The cluster's name (default: this node's cluster.name)
        #[arg(long, value_name = "NAME")]
        cluster: Option<String>,
    },
    /// Leave the cluster: every member removes this node from cluster.nodes
    Leave,
}

#[derive(Subcommand, Debug)]
pub(crate) enum BlacklistCmd {
    /// Each node's count of consecutive invalid messages (5: banned for listener.blacklist_ttl)
    Status,
    /// Forget every count and ban
    Clear,
}

/// Entry point for the binary: errors become one line on stderr and a non-zero exit.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            super::common::report("nodemgr", &e);
            ExitCode::FAILURE
        }
    }
}

pub(crate) fn run(cli: Cli) -> Result<ExitCode> {
    let paths = Paths::new(cli.root.as_deref());
    match &cli.command {
        Command::Generate(what) => super::generate::run(what, Cli::command()),
        Command::Daemon(DaemonCmd::Run) => daemon_run(&cli, &paths),
        Command::Daemon(DaemonCmd::Start(t)) if t.thread_id.is_none() && cli.node.is_none() => {
            daemon_start(&cli, &paths)
        }
        Command::Daemon(DaemonCmd::Join {
            secret_file,
            secret,
            cluster,
        }) => {
            let secret = match (secret_file, secret) {
                (Some(file), _) => super::keyring::read_secret(file)?.expose().to_string(),
                (None, Some(s)) => s.clone(),
                (None, None) => bail!("give the cluster's secret with --secret-file FILE"),
            };
            daemon_join(&cli, &paths, &secret, cluster.as_deref())
        }
        Command::Daemon(DaemonCmd::Leave) => daemon_leave(&cli, &paths),
        Command::Daemon(DaemonCmd::Metrics) => {
            // From a status answer, by the same table the daemon's /metrics uses: no action of
            // its own on the wire.
            let response = call(&cli, &paths, &Request::DaemonStatus)?;
            match (response.status, &response.data, &response.error) {
                (0, Some(data), _) => {
                    use crate::state::metrics::{prometheus_json, prometheus_text};
                    match cli.format {
                        Format::Table => print!("{}", prometheus_text(data)),
                        Format::Json => println!(
                            "{}",
                            json_line(&serde_json::json!({
                                "data": prometheus_json(data),
                                "status": 0,
                            }))
                        ),
                    }
                    Ok(ExitCode::SUCCESS)
                }
                (_, _, error) => bail!(
                    "daemon_status: {}",
                    error.as_deref().unwrap_or("no data in the answer")
                ),
            }
        }
        Command::Daemon(cmd) => {
            let request = match cmd {
                DaemonCmd::Start(t) => Request::DaemonStart {
                    thread_id: t.thread_id.clone(),
                },
                DaemonCmd::Stop(t) => Request::DaemonStop {
                    thread_id: t.thread_id.clone(),
                },
                DaemonCmd::Shutdown => Request::DaemonShutdown,
                DaemonCmd::Status => Request::DaemonStatus,
                DaemonCmd::Blacklist(BlacklistCmd::Status) => Request::BlacklistStatus,
                DaemonCmd::Blacklist(BlacklistCmd::Clear) => Request::BlacklistClear,
                DaemonCmd::Run | DaemonCmd::Join { .. } | DaemonCmd::Leave | DaemonCmd::Metrics => {
                    unreachable!("handled above")
                }
            };
            let response = if matches!(cmd, DaemonCmd::Shutdown) {
                // The answer comes once every local instance is stopped.
                call_within(&cli, &paths, &request, SHUTDOWN_WAIT)?
            } else {
                call(&cli, &paths, &request)?
            };
            let code = print_response(&cli, &request, &response);
            let whole_daemon = matches!(
                cmd,
                DaemonCmd::Stop(ThreadArg { thread_id: None }) | DaemonCmd::Shutdown
            );
            if whole_daemon && response.status == 0 && cli.node.is_none() {
                wait_until(Duration::from_secs_f64(cli.timeout), || {
                    !paths.lsnr_sock().exists()
                })
                .context("the daemon did not exit in time")?;
            }
            Ok(code)
        }
        Command::Cluster(ClusterCmd::Keyring(cmd)) => {
            // Every member is driven from this node's node.conf.
            refuse_remote(&cli, "cluster keyring")?;
            super::keyring::run(
                cmd,
                &paths,
                cli.format,
                Duration::from_secs_f64(cli.timeout.max(0.1)),
            )
        }
        Command::Freeze | Command::Thaw => {
            let frozen = matches!(cli.command, Command::Freeze);
            let request = Request::SetNodeMonitor {
                status: None,
                local_expect: Some(if frozen {
                    NodeLocalExpect::Frozen
                } else {
                    NodeLocalExpect::Thawed
                }),
            };
            let response = call(&cli, &paths, &request)?;
            Ok(print_response(&cli, &request, &response))
        }
        Command::Set { param, value } => {
            refuse_remote(&cli, "set")?;
            nodeconf::set(&paths.node_conf(), param, value)
        }
        Command::Get { param, eval } => {
            refuse_remote(&cli, "get")?;
            nodeconf::get(&paths.node_conf(), param, *eval, cli.format)
        }
        Command::Print(nodeconf::PrintCmd::Config { eval, show_secrets }) => {
            refuse_remote(&cli, "print config")?;
            nodeconf::print_config(&paths.node_conf(), cli.format, *eval, *show_secrets)
        }
        Command::Print(nodeconf::PrintCmd::Keywords) => nodeconf::print_keywords(cli.format),
        Command::Validate(nodeconf::ValidateCmd::Config) => {
            refuse_remote(&cli, "validate config")?;
            nodeconf::validate(&paths.node_conf(), cli.format)
        }
        Command::Edit(EditCmd::Config) => {
            refuse_remote(&cli, "edit config")?;
            nodeconf::edit(&paths.node_conf())
        }
    }
}

fn refuse_remote(cli: &Cli, what: &str) -> Result<()> {
    match &cli.node {
        Some(n) => bail!("{what} works on this node's node.conf only (drop --node {n})"),
        None => Ok(()),
    }
}

fn call(cli: &Cli, paths: &Paths, request: &Request) -> Result<Response> {
    call_within(cli, paths, request, Duration::ZERO)
}

/// At least this long for `daemon shutdown` to answer, whatever `--timeout` says: services'
/// stops are bounded by their own timeouts, not by the client's.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(600);

/// `call` waiting at least `at_least`.
fn call_within(
    cli: &Cli,
    paths: &Paths,
    request: &Request,
    at_least: Duration,
) -> Result<Response> {
    let timeout = Duration::from_secs_f64(cli.timeout.max(0.1)).max(at_least);
    let target = super::common::target(paths, cli.node.as_deref())?;
    Ok(client::call(&target, request, timeout)?)
}

fn print_response(cli: &Cli, request: &Request, response: &Response) -> ExitCode {
    match cli.format {
        // Through a Value so keys come sorted: {"data": ..., "status": 0}.
        Format::Json => println!(
            "{}",
            json_line(&serde_json::to_value(response).unwrap_or_default())
        ),
        Format::Table => {
            if let Some(e) = &response.error {
                eprintln!("nodemgr: {}: {e}", request.action());
            } else if let Some(data) = &response.data {
                match (request, data) {
                    (Request::DaemonStatus, d) => print!("{}", status_table(d)),
                    (Request::DaemonShutdown, d) => {
                        let names = |k: &str| {
                            d[k].as_array()
                                .map(|a| {
                                    a.iter()
                                        .filter_map(|v| v.as_str())
                                        .collect::<Vec<_>>()
                                        .join(" ")
                                })
                                .unwrap_or_default()
                        };
                        println!("stopped:     {}", names("stopped"));
                        println!("not running: {}", names("not_running"));
                        if let Some(failed) = d["failed"].as_object() {
                            for (name, why) in failed {
                                eprintln!("failed:      {name}: {}", why.as_str().unwrap_or(""));
                            }
                        }
                    }
                    (Request::BlacklistStatus, serde_json::Value::Object(m)) if m.is_empty() => {
                        println!("blacklist empty")
                    }
                    (Request::BlacklistStatus, serde_json::Value::Object(m)) => {
                        for (name, n) in m {
                            println!("{name:<20} {n}");
                        }
                    }
                    (Request::BlacklistClear, d) => {
                        println!("blacklist cleared ({} entries)", d["cleared"])
                    }
                    (_, other) => print!("{}", value_table(other)),
                }
            }
        }
    }
    let failed_stops = matches!(request, Request::DaemonShutdown)
        && response
            .data
            .as_ref()
            .is_some_and(|d| d["failed"].as_object().is_some_and(|f| !f.is_empty()));
    if response.status == 0 && !failed_stops {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn daemon_run(cli: &Cli, paths: &Paths) -> Result<ExitCode> {
    refuse_remote(cli, "daemon run")?;
    let conf_path = paths.node_conf();
    let (_, conf, created) = config::load_or_create(&conf_path)?;
    // From node.conf; the daemon reads it again, and a reload does not change the format.
    super::logging::init(conf.log_format);
    if created {
        eprintln!(
            "nodemgr: created {} (cluster {:?}, generated secret, {} the only node, listening on {}:{})",
            conf_path.display(),
            conf.cluster.name,
            conf.nodename,
            conf.listener.addr,
            conf.listener.port
        );
    }
    daemon::run(RunOptions {
        root: cli.root.clone(),
        bin_dir: bin_dir()?,
    })?;
    Ok(ExitCode::SUCCESS)
}

fn bin_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot locate the nodemgr binary")?;
    Ok(exe
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".")))
}

fn wait_until(limit: Duration, mut ok: impl FnMut() -> bool) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("timed out after {:.1}s", limit.as_secs_f64())
}

/// Starts `nodemgr daemon run` in the background, its output in <var>/osvcd.log.
fn daemon_start(cli: &Cli, paths: &Paths) -> Result<ExitCode> {
    let timeout = Duration::from_secs_f64(cli.timeout.max(0.1));
    match client::call_local(&paths.lsnr_sock(), &Request::DaemonStatus, timeout) {
        Ok(_) => {
            say(cli.format, "daemon already running");
            return Ok(ExitCode::SUCCESS);
        }
        Err(ClientError::NotRunning(_)) => {}
        Err(e) => return Err(e.into()),
    }
    std::fs::create_dir_all(&paths.var)
        .with_context(|| format!("cannot create {}", paths.var.display()))?;
    let log_path = paths.var.join("osvcd.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let exe = std::env::current_exe().context("cannot locate the nodemgr binary")?;
    let mut cmd = std::process::Command::new(exe);
    if let Some(root) = &cli.root {
        cmd.arg("--root").arg(root);
    }
    use std::os::unix::process::CommandExt;
    let child = cmd
        .args(["daemon", "run"])
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("cannot start the daemon")?;
    let pid = child.id();
    wait_until(timeout, || {
        client::call_local(&paths.lsnr_sock(), &Request::DaemonStatus, timeout).is_ok()
    })
    .with_context(|| {
        format!(
            "the daemon did not answer in time; see {}",
            log_path.display()
        )
    })?;
    say(
        cli.format,
        &format!("daemon started (pid {pid}, log {})", log_path.display()),
    );
    Ok(ExitCode::SUCCESS)
}

/// Sends `join` to the peer under the given secret, then merges its answer into node.conf
/// (the local daemon reloads it).
fn daemon_join(cli: &Cli, paths: &Paths, secret: &str, cluster: Option<&str>) -> Result<ExitCode> {
    let Some(peer) = cli.node.as_deref() else {
        bail!("daemon join needs --node PEER: a member of the cluster to join through");
    };
    let conf_path = paths.node_conf();
    let (_, conf) = config::load(&conf_path)?;
    // A member's name (resolved as peers are), or its address, with or without a port.
    let addr = peer
        .parse::<std::net::SocketAddr>()
        .ok()
        .or_else(|| {
            peer.parse::<std::net::IpAddr>()
                .ok()
                .map(|ip| std::net::SocketAddr::new(ip, conf.listener.port))
        })
        .or_else(|| conf.peer_addr(peer))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "cannot resolve node {peer:?}: give its address, or set [node.{peer}] addr in node.conf"
            )
        })?;
    let cluster = cluster.unwrap_or(&conf.cluster.name).to_string();
    let identity = client::Identity {
        secret: secret.to_string(),
        alt_secret: None,
        cluster: cluster.clone(),
        ..client::Identity::of(&conf)
    };
    let timeout = Duration::from_secs_f64(cli.timeout.max(0.1));
    let r = client::call_peer(addr, &identity, &Request::Join, timeout).map_err(|e| match e {
        ClientError::Refused(_) => anyhow::anyhow!(
            "{peer} refused the join: wrong secret or cluster name ({cluster:?}), or joins not accepted"
        ),
        e => e.into(),
    })?;
    if r.status != 0 {
        bail!("{peer} refused the join: {}", r.error.unwrap_or_default());
    }
    let data = r.data.unwrap_or_default();
    let name = data["cluster"]["name"]
        .as_str()
        .unwrap_or(&cluster)
        .to_string();
    let nodes: Vec<String> = data["cluster"]["nodes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if !nodes.contains(&conf.nodename) {
        bail!("{peer} answered without this node in cluster.nodes: not joined");
    }
    let peers = data["peers"].as_object().cloned().unwrap_or_default();
    // The member that answered: named in the answer (older members do not: then --node).
    let answered_by = data["nodename"].as_str().unwrap_or(peer).to_string();
    let cluster_secret = data["cluster"]["secret"]
        .as_str()
        .unwrap_or(secret)
        .to_string();
    // Mid-rotation, the cluster's second secret: without it this node could not open what
    // the members already seal under the new one.
    let alt_secret = data["cluster"]["alt_secret"].as_str().map(str::to_string);
    let hb_interval = data["hb"]["interval_ms"].as_u64();
    let hb_timeout = data["hb"]["timeout_ms"].as_u64();
    let port = data["listener"]["port"].as_u64();
    let new = config::update(&conf_path, |doc, _| {
        doc.set("cluster", "name", &name)?;
        doc.set("cluster", "secret", &cluster_secret)?;
        match &alt_secret {
            Some(alt) => doc.set("cluster", "alt_secret", alt)?,
            None => {
                doc.unset("cluster", "alt_secret");
            }
        }
        doc.set("cluster", "nodes", &nodes.join(" "))?;
        if let Some(ms) = hb_interval {
            doc.set("hb", "interval", &format!("{ms}ms"))?;
        }
        if let Some(ms) = hb_timeout {
            doc.set("hb", "timeout", &format!("{ms}ms"))?;
        }
        // Peers reach each other on their own listener port: the cluster shares one.
        if let Some(p) = port {
            doc.set("listener", "port", &p.to_string())?;
        }
        for (n, a) in &peers {
            if *n == conf.nodename {
                continue;
            }
            let a = match a.as_str() {
                Some(a) => a.to_string(),
                None if *n == answered_by => addr.ip().to_string(),
                None => continue,
            };
            doc.set(&format!("node.{n}"), "addr", &a)?;
        }
        Ok(())
    })?;
    say(
        cli.format,
        &format!(
            "joined cluster {} through {peer}: nodes {}",
            new.cluster.name,
            new.cluster.nodes.join(" ")
        ),
    );
    Ok(ExitCode::SUCCESS)
}

/// Tells every other member this node leaves, then keeps only itself in cluster.nodes.
fn daemon_leave(cli: &Cli, paths: &Paths) -> Result<ExitCode> {
    let conf_path = paths.node_conf();
    let (_, conf) = config::load(&conf_path)?;
    let identity = client::Identity::of(&conf);
    let timeout = Duration::from_secs_f64(cli.timeout.max(0.1));
    let mut failed = Vec::new();
    for member in conf.cluster.nodes.iter().filter(|n| **n != conf.nodename) {
        let told = conf
            .peer_addr(member)
            .ok_or_else(|| "cannot resolve its address".to_string())
            .and_then(|addr| {
                client::call_peer(addr, &identity, &Request::Leave, timeout)
                    .map_err(|e| e.to_string())
                    .and_then(|r| {
                        if r.status == 0 {
                            Ok(())
                        } else {
                            Err(r.error.unwrap_or_default())
                        }
                    })
            });
        match told {
            Ok(()) if cli.format == Format::Table => println!("{member}: removed this node"),
            Ok(()) => {}
            Err(e) => {
                eprintln!("nodemgr: {member}: {e}");
                failed.push(member.clone());
            }
        }
    }
    config::update(&conf_path, |doc, _| {
        doc.set("cluster", "nodes", &conf.nodename)
    })?;
    if failed.is_empty() {
        say(cli.format, "left the cluster");
        Ok(ExitCode::SUCCESS)
    } else {
        bail!(
            "left the cluster, but these members were not told and still list this node: {}",
            failed.join(" ")
        )
    }
}
