//! The supervisor's threads: why one could not start or ended, and the answer to a request
//! to stop or start one.

use std::sync::mpsc;

/// Why a daemon thread could not start, or ended on its own. A thread that is told to stop
/// ends with `Ok`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ThreadError {
    #[error(transparent)]
    Listener(#[from] crate::listener::ListenerError),
    #[error("the listener is not set up")]
    ListenerNotSetUp,
    // The I/O errors are said in the message and not returned as sources: `daemon status`
    // shows a thread's last error as one line.
    #[error("cannot bind a UDP socket on {addr}: {cause}")]
    HeartbeatSocket {
        addr: std::net::IpAddr,
        cause: std::io::Error,
    },
    #[error("cannot serve metrics on {addr}: {cause}")]
    MetricsBind {
        addr: std::net::SocketAddr,
        cause: std::io::Error,
    },
    #[error("the handler layer is not set up")]
    HandlersNotSetUp,
    #[error("the handler layer stopped")]
    HandlersStopped,
    #[error("no thread is named {0:?}")]
    Unknown(&'static str),
    #[error("cannot start thread {id}: {cause}")]
    Spawn {
        id: &'static str,
        cause: std::io::Error,
    },
}

/// Why a request to stop or start one thread was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ThreadCmdError {
    #[error("unknown thread id {id:?} (known: {known})")]
    Unknown { id: String, known: String },
    #[error(transparent)]
    Start(#[from] ThreadError),
}

/// Where the supervisor sends what it did with a thread request.
pub(crate) type ThreadReply = mpsc::Sender<Result<String, ThreadCmdError>>;
