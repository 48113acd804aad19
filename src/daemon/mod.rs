//! The daemon: state, supervisor, threads, reload, local control socket.

mod arbitrators;
pub(crate) mod control;
pub(crate) mod dequeue;
pub(crate) mod hb_tx;
mod metrics;
pub(crate) mod monitor_thread;
mod resolver;
mod signals;
pub(crate) mod supervisor;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};

use crate::config::{self, ConfigError, Paths};
use crate::dispatch::Dispatcher;
use crate::handlers::{self, Handlers};
use crate::listener::{ListenerSettings, ListenerShared};
use crate::state::DaemonState;
use dequeue::Runner;
use supervisor::{Exit, Supervisor};

#[derive(Debug, thiserror::Error)]
pub(crate) enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("a daemon is already running on {0}")]
    AlreadyRunning(PathBuf),
    #[error("{what}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DaemonError {
    let what = what.into();
    move |source| DaemonError::Io { what, source }
}

/// One warning per keyword of node.conf that is not in the registry: ignored, so that a typo
/// does not take a node down, but said at every load.
pub(crate) fn warn_unknown_keywords(doc: &config::IniDocument, path: &std::path::Path) {
    for (line, unknown) in config::keywords::unknown_keywords(doc) {
        tracing::warn!(
            file = %path.display(),
            line,
            nearest = unknown.nearest.as_deref().unwrap_or("-"),
            "ignoring {unknown}"
        );
    }
}

pub(crate) struct RunOptions {
    pub root: Option<PathBuf>,
    /// Where the nodemgr/svcmgr binaries are, for queued actions.
    pub bin_dir: PathBuf,
}

/// Runs the daemon in the foreground until it is stopped or shut down.
pub(crate) fn run(opts: RunOptions) -> Result<(), DaemonError> {
    // Before anything can receive a frame: frames stamped earlier are refused.
    let started_ms = crate::clock::process_started_ms();
    let paths = Paths::new(opts.root.as_deref());
    let (doc, config) = config::load(&paths.node_conf())?;
    warn_unknown_keywords(&doc, &paths.node_conf());
    for dir in [&paths.var, &paths.actions()] {
        std::fs::create_dir_all(dir).map_err(io_err(format!("cannot create {}", dir.display())))?;
    }
    let sock = paths.lsnr_sock();
    if std::os::unix::net::UnixStream::connect(&sock).is_ok() {
        return Err(DaemonError::AlreadyRunning(sock));
    }

    let (cmd_tx, cmd_rx) = mpsc::channel();
    let node_monitor = handlers::node::load_node_monitor(&paths);
    let place = crate::state::Place {
        paths: paths.clone(),
        root: opts.root.clone(),
        bin_dir: opts.bin_dir.clone(),
    };
    let state = Arc::new(DaemonState::new(
        config.clone(),
        started_ms,
        place,
        cmd_tx,
        node_monitor,
    ));
    let shards = match config.listener.shards {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let _ = state.shards.set(shards);
    let status = Arc::new(crate::handlers::daemon::StatusWriter::new(state.clone()));
    let (dispatcher, _shard_threads) =
        Dispatcher::start(shards, |_| Handlers::new(state.clone(), status.clone()))
            .map_err(io_err("cannot start the shard threads"))?;
    let dispatcher = dispatcher.with_quick(status);
    let _ = state.dispatcher.set(dispatcher.clone());
    let shared = Arc::new(ListenerShared::new(
        ListenerSettings::from_node(&config),
        state.guard.clone(),
        dispatcher.clone(),
        state.dequeue.clone(),
    ));
    if let Some(n) = std::env::var("OSVC_TEST_LISTENER_PANIC_AFTER")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        shared.panic_after_frames.store(n, Ordering::Relaxed);
    }
    let _ = state.listener.set(shared);

    let control_state = state.clone();
    let control =
        control::bind(&sock).map_err(io_err(format!("cannot bind {}", sock.display())))?;
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            if let Err(e) = control::serve(control, dispatcher) {
                tracing::error!("control socket failed: {e}");
                *crate::locks::lock(&control_state.control_error) = Some(e.to_string());
            }
        })
        .map_err(io_err("cannot start the control thread"))?;
    let pid_file = paths.pid_file();
    let _ = std::fs::write(&pid_file, format!("{}\n", std::process::id()));
    tracing::info!(
        nodename = %config.nodename,
        cluster = %config.cluster.name,
        root = %paths.etc.parent().map(|p| p.display().to_string()).unwrap_or_default(),
        "daemon starting"
    );

    // Before any heartbeat: peers must learn what this node runs from its first beat, not
    // see an empty node and start its services elsewhere.
    signals::listen(&state).map_err(io_err("cannot install the signal handlers"))?;
    let census = handlers::service::census(&state);
    tracing::info!(services = census, "local instances checked");

    let runner = Runner {
        actions_dir: paths.actions(),
        bin_dir: opts.bin_dir,
        root: opts.root,
    };
    let exit = Supervisor::new(state, runner).run(cmd_rx);
    let _ = std::fs::remove_file(&sock);
    let _ = std::fs::remove_file(&pid_file);
    match exit {
        Exit::Stop => tracing::info!("daemon stopped"),
        Exit::Shutdown => tracing::info!("daemon shut down"),
    }
    Ok(())
}
