//! The sharded handler layer. Decoded requests go to one of N shard threads, chosen by the
//! hash of the request's service (node-level requests go to the node shard, 0). Each shard
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
    Peer(String),
}

pub enum Job {
    Request {
        origin: Origin,
        request: Request,
        reply: Option<oneshot::Sender<Response>>,
    },
    Heartbeat {
        nodename: String,
        heartbeat: Heartbeat,
        addr: SocketAddr,
        at_ms: u64,
    },
}

/// A shard's handler: owns its state, called on its own thread, one job at a time.
pub trait ShardHandler: Send + 'static {
    fn handle(&mut self, origin: &Origin, request: Request) -> Response;
    fn heartbeat(&mut self, nodename: String, heartbeat: Heartbeat, addr: SocketAddr, at_ms: u64);
}

/// Cloneable handle used by listener workers and the local socket to submit jobs.
#[derive(Clone)]
pub struct Dispatcher {
    shards: Vec<mpsc::Sender<Job>>,
    hasher: std::hash::BuildHasherDefault<std::collections::hash_map::DefaultHasher>,
}

pub const NODE_SHARD: usize = 0;

#[derive(Debug, thiserror::Error)]
#[error("the handler layer is not running")]
pub struct Closed;

impl Dispatcher {
    /// Starts `n` shard threads, each with the handler `make(i)` builds.
    pub fn start<H: ShardHandler>(
        n: usize,
        mut make: impl FnMut(usize) -> H,
    ) -> std::io::Result<(Dispatcher, Vec<JoinHandle<()>>)> {
        let n = n.max(1);
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

    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// The shard a request runs on.
    pub fn shard_for(&self, request: &Request) -> usize {
        match request.svcname() {
            Some(svc) => {
                let mut h = self.hasher.build_hasher();
                h.write(svc.as_bytes());
                (h.finish() % self.shards.len() as u64) as usize
            }
            None => NODE_SHARD,
        }
    }

    pub fn submit(&self, job: Job) -> Result<(), Closed> {
        let shard = match &job {
            Job::Request { request, .. } => self.shard_for(request),
            Job::Heartbeat { .. } => NODE_SHARD,
        };
        self.shards[shard].send(job).map_err(|_| Closed)
    }

    /// Submits a request and waits for its response.
    pub async fn call(&self, origin: Origin, request: Request) -> Response {
        let (tx, rx) = oneshot::channel();
        let job = Job::Request {
            origin,
            request,
            reply: Some(tx),
        };
        if self.submit(job).is_err() {
            return Response::error("the handler layer is not running");
        }
        rx.await
            .unwrap_or_else(|_| Response::error("the handler dropped the request"))
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
                Response::error(format!("{action}: internal error"))
            });
            if let Some(reply) = reply {
                let _ = reply.send(response);
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
        fn handle(&mut self, _: &Origin, request: Request) -> Response {
            Response::ok(serde_json::json!({"shard": self.0, "action": request.action()}))
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
        let resp = futures_lite_block_on(d.call(Origin::Local, Request::DaemonStatus));
        assert_eq!(resp.data.unwrap()["shard"], 0);
    }

    fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }
}
