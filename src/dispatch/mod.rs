//! The sharded handler layer. Decoded requests go to one of N service shard threads, chosen
//! by the hash of the request's service; node-level requests (status, blacklist, node
//! monitor, heartbeats) go to a node shard of their own, so a long service action never
//! delays them. Each shard
//! owns its slice of the state, so requests for one service are serialized and no lock is
//! shared by all requests. Replies travel back on a oneshot to the worker owning the
//! connection.

use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use crate::wire::{Heartbeat, Request, Response};

/// Who sent a request: the local administration socket, or a peer (by nodename).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    Local,
    Peer { nodename: String, addr: SocketAddr },
}

/// A handler's answer: one response, or a stream of chunks (kind 4 on the wire) that may
/// go on following a log until the client goes away.
pub enum Reply {
    Response(Response),
    Stream(StreamReply),
}

pub struct StreamReply {
    pub chunks: Vec<Response>,
    pub follow: Option<crate::monitor::log::MergedFollower>,
}

impl From<Response> for Reply {
    fn from(r: Response) -> Self {
        Reply::Response(r)
    }
}

pub enum Job {
    Request {
        origin: Origin,
        request: Request,
        reply: Option<oneshot::Sender<Reply>>,
    },
    /// The monitor's periodic look at one service, run on the service's shard.
    Tick { svcname: String },
    Heartbeat {
        nodename: String,
        heartbeat: Heartbeat,
        addr: SocketAddr,
        at_ms: u64,
    },
}

/// A shard's handler: owns its state, called on its own thread, one job at a time.
pub trait ShardHandler: Send + 'static {
    fn handle(&mut self, origin: &Origin, request: Request) -> Reply;
    fn heartbeat(&mut self, nodename: String, heartbeat: Heartbeat, addr: SocketAddr, at_ms: u64);
    fn tick(&mut self, _svcname: &str) {}
    /// Work the last `handle` deferred until its reply was sent (async service actions).
    fn after_reply(&mut self) {}
}

/// Cloneable handle used by listener workers and the local socket to submit jobs.
#[derive(Clone)]
pub struct Dispatcher {
    shards: Vec<mpsc::Sender<Job>>,
    hasher: std::hash::BuildHasherDefault<std::collections::hash_map::DefaultHasher>,
}

pub const NODE_SHARD: usize = 0;

pub mod stream;

#[derive(Debug, thiserror::Error)]
#[error("the handler layer is not running")]
pub struct Closed;

impl Dispatcher {
    /// Starts the node shard (0) and `service_shards` service shards (1..), each with the
    /// handler `make(i)` builds.
    pub fn start<H: ShardHandler>(
        service_shards: usize,
        mut make: impl FnMut(usize) -> H,
    ) -> std::io::Result<(Dispatcher, Vec<JoinHandle<()>>)> {
        let n = service_shards.max(1) + 1;
        let mut shards = Vec::with_capacity(n);
        let mut joins = Vec::with_capacity(n);
        for i in 0..n {
            let (tx, rx) = mpsc::channel::<Job>();
            let mut handler = make(i);
            let join = std::thread::Builder::new()
                .name(format!("shard.{i}"))
                .spawn(move || {
                    while let Ok(job) = rx.recv() {
                        run_job(&mut handler, job);
                    }
                })?;
            shards.push(tx);
            joins.push(join);
        }
        Ok((
            Dispatcher {
                shards,
                hasher: Default::default(),
            },
            joins,
        ))
    }

    /// Service shards, the node shard not included.
    pub fn service_shards(&self) -> usize {
        self.shards.len() - 1
    }

    /// The shard a request runs on.
    pub fn shard_for(&self, request: &Request) -> usize {
        match request.svcname() {
            Some(svc) => self.shard_of_service(svc),
            None => NODE_SHARD,
        }
    }

    pub fn shard_of_service(&self, svcname: &str) -> usize {
        let mut h = self.hasher.build_hasher();
        h.write(svcname.as_bytes());
        1 + (h.finish() % self.service_shards() as u64) as usize
    }

    pub fn submit(&self, job: Job) -> Result<(), Closed> {
        let shard = match &job {
            Job::Request { request, .. } => self.shard_for(request),
            Job::Tick { svcname } => self.shard_of_service(svcname),
            Job::Heartbeat { .. } => NODE_SHARD,
        };
        self.shards[shard].send(job).map_err(|_| Closed)
    }

    /// Submits a request and waits for its reply.
    pub async fn call(&self, origin: Origin, request: Request) -> Reply {
        let (tx, rx) = oneshot::channel();
        let job = Job::Request {
            origin,
            request,
            reply: Some(tx),
        };
        if self.submit(job).is_err() {
            return Response::error("the handler layer is not running").into();
        }
        rx.await
            .unwrap_or_else(|_| Response::error("the handler dropped the request").into())
    }

    /// For paths that carry one response only (UDP): a stream is refused with an error.
    pub async fn call_single(&self, origin: Origin, request: Request) -> Response {
        let action = request.action();
        match self.call(origin, request).await {
            Reply::Response(r) => r,
            Reply::Stream(_) => Response::error(format!(
                "{action}: streams need TCP or the local socket, not UDP"
            )),
        }
    }
}

fn run_job<H: ShardHandler>(handler: &mut H, job: Job) {
    match job {
        Job::Request {
            origin,
            request,
            reply,
        } => {
            let action = request.action();
            // A panicking handler must not take the shard down with it.
            let response = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                handler.handle(&origin, request)
            }))
            .unwrap_or_else(|_| {
                tracing::error!(action, "handler panicked");
                Response::error(format!("{action}: internal error")).into()
            });
            if let Some(reply) = reply {
                let _ = reply.send(response);
            }
            let deferred =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler.after_reply()));
            if deferred.is_err() {
                tracing::error!(action, "deferred work panicked");
            }
        }
        Job::Tick { svcname } => {
            let r =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler.tick(&svcname)));
            if r.is_err() {
                tracing::error!(svcname, "monitor tick panicked");
            }
        }
        Job::Heartbeat {
            nodename,
            heartbeat,
            addr,
            at_ms,
        } => handler.heartbeat(nodename, heartbeat, addr, at_ms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo(usize);
    impl ShardHandler for Echo {
        fn handle(&mut self, _: &Origin, request: Request) -> Reply {
            Response::ok(serde_json::json!({"shard": self.0, "action": request.action()})).into()
        }
        fn heartbeat(&mut self, _: String, _: Heartbeat, _: SocketAddr, _: u64) {}
    }

    #[test]
    fn same_service_same_shard_and_node_shard() {
        let (d, _) = Dispatcher::start(4, Echo).unwrap();
        let r = |s: &str| Request::Clear { svcname: s.into() };
        assert_eq!(d.shard_for(&r("svc1")), d.shard_for(&r("svc1")));
        assert_eq!(d.shard_for(&Request::DaemonStatus), NODE_SHARD);
        let shards: std::collections::BTreeSet<_> =
            (0..64).map(|i| d.shard_for(&r(&format!("s{i}")))).collect();
        assert!(shards.len() > 1, "services spread over shards");
        assert!(
            !shards.contains(&NODE_SHARD),
            "the node shard serves no service"
        );
        let resp = futures_lite_block_on(d.call_single(Origin::Local, Request::DaemonStatus));
        assert_eq!(resp.data.unwrap()["shard"], 0);
    }

    fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }
}
