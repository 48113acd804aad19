//! The sharded handler layer. Decoded requests go to one of N service shard threads, chosen
//! by the hash of the request's service; node-level requests (status, blacklist, node
//! monitor) go to a node shard of their own, so a long service action never delays them;
//! heartbeats go to a heartbeat shard, so a flood of them never delays a request. A request
//! whose answer costs less than the hop to a shard and back (`QuickHandler`: a small
//! cluster's status) is answered on the caller's thread.
//!
//! Every queue is bounded and never blocks a listener worker: when one is full, a heartbeat
//! is dropped (the next beat carries the same news) and a request is answered "busy". A peer
//! holding the secret can therefore not grow the daemon's memory by sending faster than the
//! handlers keep up. Each shard
//! owns its slice of the state, so requests for one service are serialized and no lock is
//! shared by all requests. Replies travel back on a oneshot to the worker owning the
//! connection.

use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use crate::hb::Heartbeat;
use crate::wire::{Request, Response};

/// Who sent a request: the local administration socket, or a peer (by nodename).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    Local,
    Peer { nodename: String, addr: SocketAddr },
}

/// A handler's answer: one response, or a stream of chunks (kind 4 on the wire) that may
/// go on following a log until the client goes away.
pub(crate) enum Reply {
    Response(Response),
    Stream(StreamReply),
    /// The answer comes later, from work the handler handed to another thread so that its
    /// shard goes on serving (a command that may call the daemon back). `Dispatcher::call`
    /// waits for it: callers never see this variant.
    Later(oneshot::Receiver<Reply>),
}

pub(crate) struct StreamReply {
    pub chunks: Vec<Response>,
    pub follow: Option<crate::service::log::MergedFollower>,
}

impl From<Response> for Reply {
    fn from(r: Response) -> Self {
        Reply::Response(r)
    }
}

pub(crate) enum Job {
    Request {
        origin: Origin,
        request: Request,
        reply: Option<oneshot::Sender<Reply>>,
    },
    /// The monitor's periodic look at one service, run on the service's shard.
    Tick { svcname: String },
    /// Heartbeats of one receive batch: one job, one wakeup of the heartbeat shard and one
    /// pass over the peers for up to a batch of datagrams.
    Heartbeats(Vec<ReceivedHeartbeat>),
}

impl Job {
    /// Heartbeat payload bytes the job holds (what the heartbeat shard's queue is bounded by).
    fn heartbeat_bytes(&self) -> usize {
        match self {
            Job::Heartbeats(batch) => batch.iter().map(|h| h.heartbeat.text().len().max(1)).sum(),
            _ => 0,
        }
    }
}

/// A heartbeat as the listener received it.
#[derive(Debug)]
pub(crate) struct ReceivedHeartbeat {
    /// Shared with the receiving worker's gate.
    pub nodename: std::sync::Arc<str>,
    pub heartbeat: Heartbeat,
    pub addr: SocketAddr,
    pub at_ms: u64,
}

/// A shard's handler: owns its state, called on its own thread, one job at a time.
pub(crate) trait ShardHandler: Send + 'static {
    fn handle(&mut self, origin: &Origin, request: Request) -> Reply;
    /// Heartbeats, in the order received.
    fn heartbeats(&mut self, batch: Vec<ReceivedHeartbeat>);
    fn tick(&mut self, _svcname: &str) {}
    /// Work the last `handle` deferred until its reply was sent (async service actions).
    fn after_reply(&mut self) {}
}

/// Answers the requests that are cheaper to answer on the caller's thread than to hand to a
/// shard: the hop costs two thread wakeups (the shard's, then the caller's for the reply).
pub(crate) trait QuickHandler: Send + Sync + 'static {
    /// The answer, or None to send the request to its shard.
    fn try_handle(&self, origin: &Origin, request: &Request) -> Option<Response>;
}

/// Cloneable handle used by listener workers and the local socket to submit jobs.
#[derive(Clone)]
pub(crate) struct Dispatcher {
    /// Node shard, service shards, heartbeat shard last.
    shards: Vec<mpsc::SyncSender<Job>>,
    quick: Option<std::sync::Arc<dyn QuickHandler>>,
    dropped: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Heartbeat payload bytes queued for the heartbeat shard.
    heartbeat_bytes: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    hasher: std::hash::BuildHasherDefault<std::collections::hash_map::DefaultHasher>,
}

pub(crate) const NODE_SHARD: usize = 0;

pub(crate) mod stream;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SubmitError {
    #[error("the handler layer is busy")]
    Full,
    #[error("the handler layer is not running")]
    Closed,
}

/// Jobs one shard may have waiting.
pub(crate) const QUEUE_DEPTH: usize = 1024;

/// Bytes of heartbeat payload the heartbeat shard may have waiting (its jobs are batches of
/// any size, so they are bounded by what they hold): at 1 KiB a heartbeat, some 80 ms of a
/// 200k/s flood, which absorbs the shard thread losing its CPU for a scheduler slice.
pub(crate) const HEARTBEAT_QUEUE_BYTES: usize = 16 << 20;

impl Dispatcher {
    /// Starts the node shard (0), `service_shards` service shards (1..=N) and the heartbeat
    /// shard (N+1), each with the handler `make(i)` builds.
    pub(crate) fn start<H: ShardHandler>(
        service_shards: usize,
        mut make: impl FnMut(usize) -> H,
    ) -> std::io::Result<(Dispatcher, Vec<JoinHandle<()>>)> {
        let n = service_shards.max(1) + 2;
        let mut shards = Vec::with_capacity(n);
        let mut joins = Vec::with_capacity(n);
        let heartbeat_bytes = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for i in 0..n {
            let (tx, rx) = mpsc::sync_channel::<Job>(QUEUE_DEPTH);
            let mut handler = make(i);
            let queued = heartbeat_bytes.clone();
            let join = std::thread::Builder::new()
                .name(format!("shard.{i}"))
                .spawn(move || {
                    while let Ok(job) = rx.recv() {
                        let bytes = job.heartbeat_bytes();
                        run_job(&mut handler, job);
                        if bytes > 0 {
                            queued.fetch_sub(bytes, std::sync::atomic::Ordering::AcqRel);
                        }
                    }
                })?;
            shards.push(tx);
            joins.push(join);
        }
        Ok((
            Dispatcher {
                shards,
                quick: None,
                dropped: Default::default(),
                heartbeat_bytes,
                hasher: Default::default(),
            },
            joins,
        ))
    }

    /// Lets `quick` answer the requests it takes on the caller's thread.
    pub(crate) fn with_quick(mut self, quick: std::sync::Arc<dyn QuickHandler>) -> Self {
        self.quick = Some(quick);
        self
    }

    /// Service shards, the node and heartbeat shards not included.
    pub(crate) fn service_shards(&self) -> usize {
        self.shards.len() - 2
    }

    fn heartbeat_shard(&self) -> usize {
        self.shards.len() - 1
    }

    /// Jobs dropped or refused because their shard's queue was full.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The shard a request runs on.
    pub(crate) fn shard_for(&self, request: &Request) -> usize {
        match request.svcname() {
            Some(svc) => self.shard_of_service(svc),
            None => NODE_SHARD,
        }
    }

    pub(crate) fn shard_of_service(&self, svcname: &str) -> usize {
        let mut h = self.hasher.build_hasher();
        h.write(svcname.as_bytes());
        1 + (h.finish() % self.service_shards() as u64) as usize
    }

    /// Queues a job without ever blocking the caller.
    pub(crate) fn submit(&self, job: Job) -> Result<(), SubmitError> {
        use std::sync::atomic::Ordering;
        let shard = match &job {
            Job::Request { request, .. } => self.shard_for(request),
            Job::Tick { svcname } => self.shard_of_service(svcname),
            Job::Heartbeats(_) => self.heartbeat_shard(),
        };
        let bytes = job.heartbeat_bytes();
        let lost = match &job {
            Job::Heartbeats(batch) => batch.len() as u64,
            _ => 1,
        };
        // Heartbeats reserve their bytes first; a refused job gives them back.
        let over = bytes > 0
            && self.heartbeat_bytes.fetch_add(bytes, Ordering::AcqRel) + bytes
                > HEARTBEAT_QUEUE_BYTES;
        let sent = if over {
            Err(SubmitError::Full)
        } else {
            self.shards[shard].try_send(job).map_err(|e| match e {
                mpsc::TrySendError::Full(_) => SubmitError::Full,
                mpsc::TrySendError::Disconnected(_) => SubmitError::Closed,
            })
        };
        if let Err(e) = &sent {
            if bytes > 0 {
                self.heartbeat_bytes.fetch_sub(bytes, Ordering::AcqRel);
            }
            if *e == SubmitError::Full {
                self.dropped.fetch_add(lost, Ordering::Relaxed);
            }
        }
        sent
    }

    /// Submits a request and waits for its reply.
    pub(crate) async fn call(&self, origin: Origin, request: Request) -> Reply {
        if let Some(quick) = &self.quick {
            // A panic leaves the request to its shard, whose handler answers it.
            let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                quick.try_handle(&origin, &request)
            }));
            if let Ok(Some(response)) = answer {
                return response.into();
            }
        }
        let (tx, rx) = oneshot::channel();
        let job = Job::Request {
            origin,
            request,
            reply: Some(tx),
        };
        if let Err(e) = self.submit(job) {
            return Response::error(match e {
                SubmitError::Full => "busy: too many requests queued, retry".to_string(),
                SubmitError::Closed => e.to_string(),
            })
            .into();
        }
        let mut reply = rx.await;
        while let Ok(Reply::Later(later)) = reply {
            reply = later.await;
        }
        reply.unwrap_or_else(|_| Response::error("the handler dropped the request").into())
    }

    /// For paths that carry one response only (UDP): a stream is refused with an error.
    pub(crate) async fn call_single(&self, origin: Origin, request: Request) -> Response {
        let action = request.action();
        match self.call(origin, request).await {
            Reply::Response(r) => r,
            Reply::Stream(_) | Reply::Later(_) => Response::error(format!(
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
        Job::Heartbeats(batch) => {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                handler.heartbeats(batch)
            }));
            if r.is_err() {
                tracing::error!("heartbeat handling panicked");
            }
        }
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
        fn heartbeats(&mut self, _: Vec<ReceivedHeartbeat>) {}
    }

    #[test]
    fn same_service_same_shard_and_node_shard() {
        let (d, _) = Dispatcher::start(4, Echo).unwrap();
        assert_eq!(d.service_shards(), 4);
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

    struct QuickStatus;
    impl QuickHandler for QuickStatus {
        fn try_handle(&self, _: &Origin, request: &Request) -> Option<Response> {
            matches!(request, Request::DaemonStatus)
                .then(|| Response::ok(serde_json::json!({"quick": true})))
        }
    }

    #[test]
    fn a_quick_handler_answers_what_it_takes_the_rest_goes_to_the_shards() {
        let (d, _) = Dispatcher::start(2, Echo).unwrap();
        let d = d.with_quick(std::sync::Arc::new(QuickStatus));
        let resp = futures_lite_block_on(d.call_single(Origin::Local, Request::DaemonStatus));
        assert_eq!(resp.data.unwrap()["quick"], true);
        let clear = Request::Clear {
            svcname: "svc1".into(),
        };
        let shard = d.shard_for(&clear);
        let resp = futures_lite_block_on(d.call_single(Origin::Local, clear));
        assert_eq!(resp.data.unwrap()["shard"], shard);
    }

    struct Slow;
    impl ShardHandler for Slow {
        fn handle(&mut self, _: &Origin, _: Request) -> Reply {
            Response::ok(serde_json::json!(null)).into()
        }
        fn heartbeats(&mut self, _: Vec<ReceivedHeartbeat>) {
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    #[test]
    fn a_full_queue_drops_heartbeats_without_blocking_and_requests_still_pass() {
        let (d, _) = Dispatcher::start(1, |_| Slow).unwrap();
        // Batches of 3 heartbeats: what is dropped is counted in heartbeats.
        let hb = || {
            Job::Heartbeats(
                (0..3)
                    .map(|_| ReceivedHeartbeat {
                        nodename: "n".into(),
                        heartbeat: Heartbeat::default(),
                        addr: "127.0.0.1:1".parse().unwrap(),
                        at_ms: 0,
                    })
                    .collect(),
            )
        };
        let t = std::time::Instant::now();
        let refused = (0..QUEUE_DEPTH + 10)
            .filter(|_| d.submit(hb()) == Err(SubmitError::Full))
            .count();
        assert!(
            t.elapsed() < std::time::Duration::from_millis(150),
            "never blocks"
        );
        assert!(refused >= 9, "{refused}");
        assert_eq!(d.dropped(), 3 * refused as u64);
        // Heartbeats have their own shard: a request is not queued behind them.
        let r = futures_lite_block_on(d.call_single(Origin::Local, Request::DaemonStatus));
        assert_eq!(r.status, 0);
        assert!(t.elapsed() < std::time::Duration::from_millis(190));
    }

    /// The heartbeat queue is bounded by the payload bytes it holds, whatever the batches.
    #[test]
    fn heartbeat_queue_is_bounded_in_bytes() {
        let (d, _) = Dispatcher::start(1, |_| Slow).unwrap();
        let big = format!(
            r#"{{"gen":1,"monitor":"{}","services":{{}}}}"#,
            "x".repeat(1 << 20)
        );
        let hb = Heartbeat::parse(big.as_bytes()).unwrap();
        let job = || {
            Job::Heartbeats(vec![ReceivedHeartbeat {
                nodename: "n".into(),
                heartbeat: hb.clone(),
                addr: "127.0.0.1:1".parse().unwrap(),
                at_ms: 0,
            }])
        };
        let accepted = (0..40).filter(|_| d.submit(job()).is_ok()).count();
        // As many as fit 16 MiB (the one the shard is busy with counts until it is done).
        assert_eq!(accepted, HEARTBEAT_QUEUE_BYTES / big.len(), "{accepted}");
        assert_eq!(d.dropped(), 40 - accepted as u64);
    }
}
