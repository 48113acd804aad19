//! `svcmgr -s NAME ...`: create, inspect and act on a service. Actions go through the daemon
//! (which serializes them on the service's shard and runs `svcmgr` back as its executor);
//! without a daemon they run here.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{CommandFactory, Parser, Subcommand};
use serde_json::Value;

use super::common::{format_ms, stdout_is_terminal, target};
use super::nodemgr::{Format, GLOBAL};
use super::output::{aligned, json_line, say, value_table};
use crate::client::{self, ClientError, Target};
use crate::config::{self, Paths};
use crate::service::config::config_path;
use crate::service::log::{self, Record};
use crate::service::{Instance, ServiceConfig};
use crate::wire::Request;
use crate::wire::payload::{GlobalExpect, ServiceLocalExpect, ServiceMonitorStatus, valid_svcname};

#[derive(Parser, Debug)]
#[command(
    name = "svcmgr",
    version,
    about = "Create, inspect and act on a service of the cluster agent",
    long_about = "Create, inspect and act on a service of the cluster agent.\n\n\
        A service is <etc>/NAME.conf: [DEFAULT] nodes, orchestrate (no|ha), and [app#N] resources \
        with start, stop, check (shell command lines), restart (how many times the monitor may \
        restart it) and timeout. Actions and monitor requests go through the daemon; with --node, \
        to a peer's daemon.",
    after_help = "Examples:\n  \
        svcmgr -s web create --config web.conf\n  \
        svcmgr -s web start                 # through the daemon, which then keeps it up\n  \
        svcmgr -s web print monitor\n  \
        svcmgr -s web logs --follow\n  \
        svcmgr -s web set monitor --global-expect stopped"
)]
pub(crate) struct Cli {
    /// The service (needed by every command but generate), before or after the command
    #[arg(short = 's', long = "service", global = true, value_name = "NAME")]
    pub service: Option<String>,

    /// Agent root: etc is DIR/etc, var is DIR/var (default: /etc/opensvc and /var/lib/opensvc)
    #[arg(long, global = true, env = "OSVC_ROOT", value_name = "DIR", help_heading = GLOBAL)]
    pub root: Option<std::path::PathBuf>,

    /// Send the request to this peer node (a member's name) instead of the local daemon
    #[arg(long, global = true, value_name = "NAME", help_heading = GLOBAL)]
    pub node: Option<String>,

    /// Output format
    #[arg(long, global = true, value_enum, default_value_t = Format::Table, help_heading = GLOBAL)]
    pub format: Format,

    /// Seconds to wait for an answer (actions: for the action to end)
    #[arg(long, global = true, default_value_t = 300.0, value_name = "SECS", help_heading = GLOBAL)]
    pub timeout: f64,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Create the service: from --config FILE, or an empty configuration to edit
    Create {
        /// The configuration to install as <etc>/NAME.conf (checked first)
        #[arg(long, value_name = "FILE")]
        config: Option<std::path::PathBuf>,
    },
    /// Delete the service's configuration and runtime files (its instance is not stopped:
    /// stop it first)
    Delete,
    /// Print the configuration or the monitor
    #[command(subcommand)]
    Print(PrintCmd),
    /// Edit the configuration with $EDITOR, validated before it replaces the file
    #[command(subcommand)]
    Edit(EditCmd),
    /// Start the resources in order
    Start(ActionArgs),
    /// Stop the resources in reverse order
    Stop(ActionArgs),
    /// Stop then start
    Restart(ActionArgs),
    /// Run the checks and show the instance status
    Status,
    /// Clear the start failed / stop failed state and the restart counts
    Clear,
    /// The service's log records, of every node of the service (with --node: that node's
    /// only), in local time. With --format json: one JSON object per record and per line
    Logs {
        /// Keep printing new records as they are written
        #[arg(long, short = 'f')]
        follow: bool,
        /// How many past records to show first
        #[arg(long, default_value_t = 50, value_name = "N")]
        backlog: u64,
    },
    /// Set the service's monitor attributes
    #[command(subcommand)]
    Set(SetCmd),
    /// Man pages and shell completions
    #[command(subcommand)]
    Generate(super::generate::GenerateCmd),
}

#[derive(clap::Args, Debug)]
pub(crate) struct ActionArgs {
    /// Answer at once with an action id (shown in `nodemgr daemon status` until it ends)
    #[arg(long = "async")]
    pub r#async: bool,
}

#[derive(Subcommand, Debug)]
pub(crate) enum PrintCmd {
    /// The configuration file, as it is
    Config,
    /// The monitor: availability, status, expectations, restart counts
    Monitor,
}

#[derive(Subcommand, Debug)]
pub(crate) enum EditCmd {
    /// The configuration file
    Config,
}

#[derive(Subcommand, Debug)]
pub(crate) enum SetCmd {
    /// Set what the monitor does and keeps the service at, e.g. `svcmgr -s web set monitor
    /// --global-expect stopped`
    Monitor {
        /// What the monitor is doing
        #[arg(long, value_parser = ServiceMonitorStatus::ALL.to_vec())]
        status: Option<String>,
        /// What this node's monitor keeps the instance at
        #[arg(long, value_parser = ServiceLocalExpect::ALL.to_vec())]
        local_expect: Option<String>,
        /// What the cluster keeps the service at (the latest setting on any node wins)
        #[arg(long, value_parser = GlobalExpect::ALL.to_vec())]
        global_expect: Option<String>,
        /// Forget the restart counts
        #[arg(long)]
        reset_retries: bool,
    },
}

/// Entry point for the binary: errors become one line on stderr and a non-zero exit.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            super::common::report("svcmgr", &e);
            ExitCode::FAILURE
        }
    }
}

const EMPTY_CONFIG: &str = "[DEFAULT]\n# nodes = node1 node2\n# orchestrate = no\n\n# [app#1]\n# start = /path/to/start\n# stop = /path/to/stop\n# check = /path/to/check\n# restart = 0\n# timeout = 60\n";

pub(crate) fn run(cli: Cli) -> Result<ExitCode> {
    let name = match (&cli.command, cli.service.as_deref()) {
        (Command::Generate(what), _) => return super::generate::run(what, Cli::command()),
        (_, Some(name)) => name,
        (_, None) => bail!("which service? give -s NAME"),
    };
    let paths = Paths::new(cli.root.as_deref());
    if let Err(e) = valid_svcname(name) {
        bail!("{e}");
    }
    let timeout = Duration::from_secs_f64(cli.timeout.max(0.1));
    let target = target(&paths, cli.node.as_deref())?;
    // The daemon runs us back to carry its actions out: then act here, never call it.
    let executor = std::env::var_os("OSVC_DAEMON_ACTION").is_some();
    match &cli.command {
        Command::Create { config } => {
            local_only(&cli, "create")?;
            create(&paths, name, config.as_deref(), cli.format)
        }
        Command::Delete => {
            local_only(&cli, "delete")?;
            let path = config_path(&paths.etc, name);
            std::fs::remove_file(&path)
                .with_context(|| format!("cannot remove {}", path.display()))?;
            let _ = std::fs::remove_dir_all(paths.services().join(name));
            say(cli.format, &format!("{name} deleted"));
            Ok(ExitCode::SUCCESS)
        }
        Command::Edit(EditCmd::Config) => {
            local_only(&cli, "edit config")?;
            edit(&paths, name)
        }
        Command::Print(PrintCmd::Config) => {
            let r = client::call(
                &target,
                &Request::GetServiceConfig {
                    svcname: name.into(),
                },
                timeout,
            )?;
            if let (Format::Table, Some(Value::String(text))) = (cli.format, &r.data) {
                print!("{text}");
                return Ok(ExitCode::SUCCESS);
            }
            Ok(print(&cli, &r))
        }
        Command::Print(PrintCmd::Monitor) => {
            let r = client::call(
                &target,
                &Request::GetServiceMonitor {
                    svcname: name.into(),
                },
                timeout,
            )?;
            Ok(print_with(&cli, &r, monitor_table))
        }
        Command::Start(a) | Command::Stop(a) | Command::Restart(a) => {
            let verb = match &cli.command {
                Command::Start(_) => "start",
                Command::Stop(_) => "stop",
                _ => "restart",
            };
            if executor {
                return execute_here(&paths, name, verb);
            }
            let request = Request::ServiceAction {
                svcname: name.into(),
                command: std::iter::once(verb).collect(),
                sync: !a.r#async,
            };
            match client::call(&target, &request, timeout) {
                Ok(r) => {
                    let code = r.data.as_ref().and_then(|d| d["code"].as_i64());
                    if let (Format::Table, Some(d)) = (cli.format, &r.data) {
                        // The executor's report: the action's log records, then the state.
                        if let Some(out) = d["stdout"].as_str().filter(|o| !o.is_empty()) {
                            print!("{}", with_newline(out));
                        }
                        if let Some(err) = d["stderr"].as_str().filter(|o| !o.is_empty()) {
                            eprint!("{}", with_newline(err));
                        }
                        if d["timed_out"] == true {
                            eprintln!("svcmgr: {verb} timed out: the daemon killed it");
                        }
                        if let Some(id) = d["id"].as_str() {
                            println!("{verb} queued as {id}");
                        }
                    } else if cli.format == Format::Json {
                        print(&cli, &r);
                    }
                    if r.status != 0 {
                        if cli.format == Format::Table {
                            eprintln!("svcmgr: {}", r.error.unwrap_or_default());
                        }
                        return Ok(ExitCode::FAILURE);
                    }
                    Ok(if code.unwrap_or(0) == 0 {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    })
                }
                Err(ClientError::NotRunning(_)) if cli.node.is_none() => {
                    eprintln!("svcmgr: the daemon is not running: running {verb} here");
                    execute_here(&paths, name, verb)
                }
                Err(e) => Err(e.into()),
            }
        }
        Command::Status => {
            local_only(&cli, "status")?;
            status_here(&cli, &paths, name)
        }
        Command::Clear => {
            let r = client::call(
                &target,
                &Request::Clear {
                    svcname: name.into(),
                },
                timeout,
            )?;
            Ok(print_with(&cli, &r, monitor_table))
        }
        Command::Set(SetCmd::Monitor {
            status,
            local_expect,
            global_expect,
            reset_retries,
        }) => {
            let request = Request::SetServiceMonitor {
                svcname: name.into(),
                status: status.as_deref().and_then(ServiceMonitorStatus::parse),
                local_expect: local_expect.as_deref().and_then(ServiceLocalExpect::parse),
                global_expect: global_expect.as_deref().and_then(GlobalExpect::parse),
                reset_retries: *reset_retries,
            };
            let r = client::call(&target, &request, timeout)?;
            Ok(print_with(&cli, &r, monitor_table))
        }
        Command::Generate(_) => unreachable!("answered before any service is looked at"),
        Command::Logs { follow, backlog } => logs(&cli, &target, name, *backlog, *follow),
    }
}

fn local_only(cli: &Cli, what: &str) -> Result<()> {
    match &cli.node {
        Some(n) => bail!("{what} works on this node only (drop --node {n})"),
        None => Ok(()),
    }
}

fn print(cli: &Cli, r: &crate::wire::Response) -> ExitCode {
    print_with(cli, r, value_table)
}

fn with_newline(text: &str) -> String {
    if text.ends_with('\n') {
        text.to_string()
    } else {
        format!("{text}\n")
    }
}

/// The answer: as JSON, or its data through `table`.
fn print_with(cli: &Cli, r: &crate::wire::Response, table: fn(&Value) -> String) -> ExitCode {
    match cli.format {
        Format::Json => println!(
            "{}",
            json_line(&serde_json::to_value(r).unwrap_or_default())
        ),
        Format::Table => match (&r.error, &r.data) {
            (Some(e), _) => eprintln!("svcmgr: {e}"),
            (None, Some(v)) => print!("{}", table(v)),
            (None, None) => {}
        },
    }
    if r.status == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// A service monitor (`print monitor`, and what `clear` and `set monitor` leave).
fn monitor_table(m: &Value) -> String {
    let text = |v: &Value| v.as_str().unwrap_or("-").to_string();
    let mut rows = Vec::new();
    if !m["avail"].is_null() {
        rows.push(("avail", text(&m["avail"])));
    }
    rows.push(("status", text(&m["status"])));
    rows.push(("local expect", text(&m["local_expect"])));
    let mut global = text(&m["global_expect"]);
    if let Some(ms) = m["global_expect_updated_ms"].as_u64().filter(|&ms| ms > 0) {
        global += &format!(" (set {})", format_ms(ms));
    }
    rows.push(("global expect", global));
    let restarts = m["restarts"]
        .as_object()
        .filter(|r| !r.is_empty())
        .map(|r| {
            r.iter()
                .map(|(rid, n)| format!("{rid} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_else(|| "none".into());
    rows.push(("restarts", restarts));
    if let Some(ms) = m["ready_since_ms"].as_u64().filter(|&ms| ms > 0) {
        rows.push(("ready since", format_ms(ms)));
    }
    aligned(&rows)
}

fn node_name(paths: &Paths) -> String {
    config::load(&paths.node_conf())
        .map(|(_, c)| c.nodename)
        .unwrap_or_else(|_| config::short_hostname())
}

fn load(paths: &Paths, name: &str) -> Result<ServiceConfig> {
    let path = config_path(&paths.etc, name);
    if !path.exists() {
        bail!("unknown service {name} (no {})", path.display());
    }
    Ok(ServiceConfig::load(&paths.etc, name, &node_name(paths))?)
}

fn execute_here(paths: &Paths, name: &str, verb: &str) -> Result<ExitCode> {
    let cfg = load(paths, name)?;
    let node = node_name(paths);
    let inst = Instance::new(&cfg, &node, &paths.services());
    let log_path = inst.log_path();
    let before = log::end(&log_path);
    let r = match verb {
        "start" => inst.start(),
        "stop" => inst.stop(),
        _ => inst.stop().and_then(|()| inst.start()),
    };
    let (_, status) = inst.refresh_status();
    // What the action did, then where it left the instance: the daemon hands this back to
    // the svcmgr that asked.
    for record in log::Follower::from(log_path, before).poll() {
        print_record(&record, Format::Table, false);
    }
    print!("{}", status_lines(name, &node, &status));
    match r {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => bail!("{verb} failed: {e}"),
    }
}

/// An instance status: `NAME  AVAIL  (node NODE)`, then a row per resource.
fn status_lines(name: &str, node: &str, status: &Value) -> String {
    let mut out = format!(
        "{name}  {}  (node {node})\n",
        status["avail"].as_str().unwrap_or("n/a")
    );
    if let Some(res) = status["resources"].as_object() {
        for (rid, v) in res {
            out += &format!("  {rid:<10} {}\n", v["status"].as_str().unwrap_or("n/a"));
        }
    }
    out
}

fn status_here(cli: &Cli, paths: &Paths, name: &str) -> Result<ExitCode> {
    let cfg = load(paths, name)?;
    let node = node_name(paths);
    let (_, status) = Instance::new(&cfg, &node, &paths.services()).refresh_status();
    match cli.format {
        // Wrapped as the daemon's answers are, though computed here.
        Format::Json => println!(
            "{}",
            json_line(&serde_json::json!({"data": status, "status": 0}))
        ),
        Format::Table => print!("{}", status_lines(name, &node, &status)),
    }
    Ok(ExitCode::SUCCESS)
}

fn create(paths: &Paths, name: &str, from: Option<&Path>, format: Format) -> Result<ExitCode> {
    let path = config_path(&paths.etc, name);
    if path.exists() {
        bail!("service {name} already exists ({})", path.display());
    }
    let text = match from {
        Some(f) => {
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?
        }
        None => EMPTY_CONFIG.to_string(),
    };
    ServiceConfig::parse(name, &text, &path, &node_name(paths))?;
    std::fs::create_dir_all(&paths.etc)?;
    write_replacing(&path, &text)?;
    say(format, &format!("{name} created ({})", path.display()));
    Ok(ExitCode::SUCCESS)
}

/// Temp file in the same folder, then rename: a reader never sees half a file.
fn write_replacing(path: &Path, text: &str) -> Result<()> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("service");
    let tmp = path.with_file_name(format!(".{name}.tmp.{}", std::process::id()));
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
}

fn edit(paths: &Paths, name: &str) -> Result<ExitCode> {
    let path = config_path(&paths.etc, name);
    if !path.exists() {
        bail!("unknown service {name} (no {})", path.display());
    }
    let node = node_name(paths);
    super::common::edit_file(&path, |text| {
        ServiceConfig::parse(name, text, &path, &node)?;
        write_replacing(&path, text)
    })?;
    Ok(ExitCode::SUCCESS)
}

fn print_record(r: &Record, format: Format, colour: bool) {
    if format == Format::Json {
        println!("{}", serde_json::to_string(r).unwrap_or_default());
        return;
    }
    let level_colour = match r.level.as_str() {
        "error" => "\x1b[31m",
        "warn" => "\x1b[33m",
        "debug" => "\x1b[2m",
        _ => "\x1b[32m",
    };
    let (on, off, dim) = if colour {
        (level_colour, "\x1b[0m", "\x1b[2m")
    } else {
        ("", "", "")
    };
    println!(
        "{dim}{}{off} {on}{:<5}{off} {} {}{}",
        format_ms(r.time),
        r.level,
        r.node,
        r.resource
            .as_deref()
            .map(|x| format!("{x}: "))
            .unwrap_or_default(),
        r.message
    );
}

fn logs(cli: &Cli, target: &Target, name: &str, backlog: u64, follow: bool) -> Result<ExitCode> {
    let request = Request::ServiceLogs {
        svcname: name.into(),
        backlog: Some(backlog),
        follow,
    };
    let colour = cli.format == Format::Table && stdout_is_terminal();
    let mut error = None;
    // Following: keepalives arrive every 2 s, so a long read timeout only trips on a dead peer.
    let timeout = Duration::from_secs_f64(cli.timeout.max(10.0));
    client::stream(target, &request, timeout, |chunk| {
        if chunk.status != 0 {
            error = chunk.error.clone();
            return false;
        }
        if let Some(records) = chunk.data.as_ref().and_then(Value::as_array) {
            for v in records {
                if let Ok(r) = serde_json::from_value::<Record>(v.clone()) {
                    print_record(&r, cli.format, colour);
                }
            }
        }
        use std::io::Write;
        let _ = std::io::stdout().flush();
        true
    })?;
    match error {
        Some(e) => bail!("{e}"),
        None => Ok(ExitCode::SUCCESS),
    }
}
