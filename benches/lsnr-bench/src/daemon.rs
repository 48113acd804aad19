//! A real daemon under test: `nodemgr --root <tmp> daemon run` as a child process, with a
//! generated node.conf listing the simulated nodes, driven over its local socket.
//!
//! A child process rather than `daemon::run` on a thread: its RSS and CPU time are its own
//! (read from /proc), the load generator's pools and sender threads do not pollute them, and
//! it is the binary users run.

use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::sys::{self, Rss};
use osvc_agent::internals::client::{self, Identity};
use osvc_agent::internals::wire::Request;

pub const CLUSTER: &str = "bench";
pub const NODENAME: &str = "target";
/// Where the daemon's own heartbeats to the simulated nodes go: a loopback address nothing
/// listens on.
const BLACKHOLE: &str = "127.255.255.254";

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// How to configure the daemon under test.
#[derive(Clone, Debug)]
pub struct DaemonSpec {
    pub nodemgr: PathBuf,
    pub backend: &'static str,
    pub ip: IpAddr,
    /// `listener.threads` (0: one per CPU).
    pub threads: usize,
    /// Members besides the daemon itself.
    pub members: Vec<String>,
    pub secret: String,
    /// Extra `[listener]` lines.
    pub extra: String,
    /// `OSVC_LISTENER_PIN=0` in the daemon's environment when false.
    pub pin: bool,
}

pub struct Daemon {
    pub root: PathBuf,
    pub addr: SocketAddr,
    pub pid: u32,
    pub secret: String,
    child: Option<Child>,
    keep: bool,
}

/// A port free for both TCP and UDP on `ip`.
pub fn free_port(ip: IpAddr) -> std::io::Result<u16> {
    for _ in 0..50 {
        let t = TcpListener::bind((ip, 0))?;
        let port = t.local_addr()?.port();
        if UdpSocket::bind((ip, port)).is_ok() {
            return Ok(port);
        }
    }
    Err(std::io::Error::other(format!("no free port on {ip}")))
}

impl Daemon {
    pub fn start(spec: &DaemonSpec) -> anyhow::Result<Daemon> {
        let root = std::env::temp_dir().join(format!(
            "lsnr-bench-{}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed),
            spec.backend
        ));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("etc"))?;
        let port = free_port(spec.ip)?;
        let mut nodes = String::from(NODENAME);
        for m in &spec.members {
            nodes.push(' ');
            nodes.push_str(m);
        }
        // The simulated nodes exist only as senders: the daemon's own heartbeats (hb.tx) go
        // once an hour, to an address where nothing listens, and no name is resolved.
        let mut peers = String::new();
        for m in &spec.members {
            peers.push_str(&format!("[node.{m}]\naddr = {BLACKHOLE}\n"));
        }
        std::fs::write(
            root.join("etc/node.conf"),
            format!(
                "[node]\nnodename = {NODENAME}\n\n[cluster]\nname = {CLUSTER}\nsecret = {}\nnodes = {nodes}\n\n\
                 [listener]\naddr = {}\nport = {port}\nbackend = {}\nthreads = {}\n{}\n\n\
                 [hb]\ninterval = 1h\ntimeout = 2h\n\n{peers}",
                spec.secret, spec.ip, spec.backend, spec.threads, spec.extra
            ),
        )?;
        let log = std::fs::File::create(root.join("daemon.log"))?;
        let mut cmd = Command::new(&spec.nodemgr);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec. The
        // daemon goes when the load generator does, however it ends.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                );
                Ok(())
            });
        }
        let child = cmd
            .arg("--root")
            .arg(&root)
            .args(["daemon", "run"])
            .env("RUST_LOG", "warn")
            .env("OSVC_LISTENER_PIN", if spec.pin { "1" } else { "0" })
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot run {}: {e}", spec.nodemgr.display()))?;
        let mut d = Daemon {
            root,
            addr: SocketAddr::new(spec.ip, port),
            pid: child.id(),
            secret: spec.secret.clone(),
            child: Some(child),
            keep: std::env::var_os("LSNR_BENCH_KEEP").is_some(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(c) = d.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                anyhow::bail!("the daemon exited ({status}):\n{}", d.log_tail());
            }
            if let Ok(s) = d.status()
                && s["listener"]["backend"] == spec.backend
            {
                break;
            }
            if Instant::now() > deadline {
                anyhow::bail!("the daemon did not come up in 20 s:\n{}", d.log_tail());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(d)
    }

    fn sock(&self) -> PathBuf {
        self.root.join("var/lsnr.sock")
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.root.join("daemon.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Counts of warning and error lines the daemon logged.
    pub fn log_problems(&self) -> (usize, usize) {
        let text = std::fs::read_to_string(self.root.join("daemon.log")).unwrap_or_default();
        let warn = text.lines().filter(|l| l.contains(" WARN ")).count();
        let error = text.lines().filter(|l| l.contains(" ERROR ")).count();
        (warn, error)
    }

    pub fn request(&self, request: &Request) -> anyhow::Result<Value> {
        let r = client::call_local(&self.sock(), request, Duration::from_secs(10))?;
        if r.status != 0 {
            anyhow::bail!("{}: {:?}", request.action(), r.error);
        }
        Ok(r.data.unwrap_or(Value::Null))
    }

    /// `daemon status` data.
    pub fn status(&self) -> anyhow::Result<Value> {
        self.request(&Request::DaemonStatus)
    }

    /// The listener's counters, flattened (`invalid.decrypt`...).
    pub fn counters(&self) -> anyhow::Result<Counters> {
        let t0 = Instant::now();
        let s = self.status()?;
        let mut c = Counters::from_status(&s);
        // The handler reads the counters once the request's turn comes on its shard, which
        // may be behind a queue of heartbeats: the end of the call is the closer time.
        c.at = Instant::now();
        c.call = c.at - t0;
        Ok(c)
    }

    pub fn rss(&self) -> Rss {
        sys::rss(self.pid).unwrap_or_default()
    }

    pub fn identity(&self, nodename: &str) -> Identity {
        Identity {
            secret: self.secret.clone(),
            alt_secret: None,
            cluster: CLUSTER.into(),
            nodename: nodename.into(),
            source: None,
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

/// A snapshot of the daemon's counters, with when it was taken.
#[derive(Clone, Debug)]
pub struct Counters {
    pub at: Instant,
    /// How long the status call took (queueing on the node shard included).
    pub call: Duration,
    pub values: std::collections::BTreeMap<String, u64>,
}

impl Counters {
    pub fn from_status(s: &Value) -> Counters {
        let mut values = std::collections::BTreeMap::new();
        if let Some(c) = s["listener"]["counters"].as_object() {
            for (k, v) in c {
                if let Some(n) = v.as_u64() {
                    values.insert(k.clone(), n);
                } else if let Some(o) = v.as_object() {
                    for (k2, v2) in o {
                        values.insert(format!("{k}.{k2}"), v2.as_u64().unwrap_or(0));
                    }
                }
            }
        }
        if let Some(h) = s["heartbeats"].as_object() {
            for (k, v) in h {
                values.insert(format!("heartbeats.{k}"), v.as_u64().unwrap_or(0));
            }
        }
        values.insert(
            "dispatch_dropped".into(),
            s["dispatch_dropped"].as_u64().unwrap_or(0),
        );
        if let Some(d) = s["dequeue"].as_object() {
            for (k, v) in d {
                values.insert(format!("dequeue.{k}"), v.as_u64().unwrap_or(0));
            }
        }
        values.insert(
            "blacklist_entries".into(),
            s["blacklist"].as_object().map_or(0, |o| o.len() as u64),
        );
        Counters {
            at: Instant::now(),
            call: Duration::ZERO,
            values,
        }
    }

    pub fn get(&self, name: &str) -> u64 {
        self.values.get(name).copied().unwrap_or(0)
    }

    /// Per-second rate of `name` between `self` (earlier) and `later`.
    pub fn rate(&self, later: &Counters, name: &str) -> f64 {
        let dt = later.at.duration_since(self.at).as_secs_f64();
        if dt <= 0.0 {
            return 0.0;
        }
        later.get(name).saturating_sub(self.get(name)) as f64 / dt
    }

    pub fn delta(&self, later: &Counters, name: &str) -> u64 {
        later.get(name).saturating_sub(self.get(name))
    }
}
