//! Test harness shared by the integration test binaries: real daemons on 127.0.0.x with a
//! temporary root, driven by the real CLIs and by hand-made frames.
// Each test binary uses part of it; its items are pub for them, not for another crate.
#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use osvc_agent::internals::wire::{Kind, Sealer};
use serde_json::Value;

pub const SECRET: &str = "integration-secret";
pub const CLUSTER: &str = "itest";
pub const BIN: &str = env!("CARGO_BIN_EXE_nodemgr");
pub const SVCMGR: &str = env!("CARGO_BIN_EXE_svcmgr");

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

pub fn free_port(ip: IpAddr) -> u16 {
    // TCP and UDP must both be free on it: try until one is.
    for _ in 0..50 {
        let t = TcpListener::bind((ip, 0)).unwrap();
        let port = t.local_addr().unwrap().port();
        if UdpSocket::bind((ip, port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on {ip}");
}

/// One port free for TCP and UDP on every address given.
pub fn free_port_on(ips: &[&str]) -> u16 {
    for _ in 0..100 {
        let first: IpAddr = ips[0].parse().unwrap();
        let port = free_port(first);
        let ok = ips.iter().all(|ip| {
            let ip: IpAddr = ip.parse().unwrap();
            TcpListener::bind((ip, port)).is_ok() && UdpSocket::bind((ip, port)).is_ok()
        });
        if ok {
            return port;
        }
    }
    panic!("no port free on all of {ips:?}");
}

/// Where the nodes of a cluster test listen: one address each, one port for all.
pub const CLUSTER_IPS: [&str; 3] = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];
/// Fast heartbeats and monitor for cluster tests.
pub const FAST: &str = "[hb]\ninterval = 500ms\ntimeout = 2s\n[monitor]\ninterval = 300ms\n";

/// Node n{i+1} of a cluster test, on `CLUSTER_IPS[i]` and the cluster's `port`.
pub fn cluster_node(i: usize, port: u16, nodes: &str, secret: &str, extra: &str) -> Node {
    Node::start(Opts {
        name: ["n1", "n2", "n3"][i],
        ip: CLUSTER_IPS[i],
        nodes,
        extra,
        port: Some(port),
        secret,
        ..Default::default()
    })
}

/// The first `count` nodes of a cluster listing `nodes`, with `extra` in their node.conf.
pub fn cluster_of(nodes: &str, count: usize, extra: &str) -> Vec<Node> {
    let port = free_port_on(&CLUSTER_IPS[..count]);
    (0..count)
        .map(|i| cluster_node(i, port, nodes, SECRET, extra))
        .collect()
}

pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > limit {
            panic!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

pub struct Node {
    pub name: String,
    pub root: PathBuf,
    pub ip: IpAddr,
    pub port: u16,
    pub child: Option<Child>,
}

pub struct Opts<'a> {
    pub name: &'a str,
    pub ip: &'a str,
    pub backend: &'a str,
    pub nodes: &'a str,
    pub extra: &'a str,
    pub env: Vec<(&'a str, String)>,
    /// A fixed port (cluster tests: every node on its own 127.0.0.x, one port).
    pub port: Option<u16>,
    pub secret: &'a str,
}

impl Default for Opts<'_> {
    fn default() -> Self {
        Opts {
            name: "n1",
            ip: "127.0.0.1",
            backend: "auto",
            nodes: "n1 peer1 peer2",
            extra: "",
            env: vec![],
            port: None,
            secret: SECRET,
        }
    }
}

impl Node {
    pub fn start(o: Opts<'_>) -> Node {
        let ip: IpAddr = o.ip.parse().unwrap();
        let port = o.port.unwrap_or_else(|| free_port(ip));
        let root = std::env::temp_dir().join(format!(
            "osvc-itest-{}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed),
            o.name
        ));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("etc")).unwrap();
        // Every name gets an address, so nothing is ever looked up in the DNS; the peers that
        // are only frames made by the tests point at an address where nothing listens.
        let mut peers: String = ["n1", "n2", "n3"]
            .iter()
            .enumerate()
            .map(|(i, n)| format!("[node.{n}]\naddr = 127.0.0.{}\n", i + 1))
            .collect();
        peers.push_str("[node.peer1]\naddr = 127.0.0.254\n[node.peer2]\naddr = 127.0.0.254\n");
        std::fs::write(
            root.join("etc/node.conf"),
            format!(
                "[node]\nnodename = {}\n\n[cluster]\nname = {CLUSTER}\nsecret = {}\nnodes = {}\n\n\
                 [listener]\naddr = {ip}\nport = {port}\nbackend = {}\nthreads = 2\nshards = 2\n{}\n{peers}",
                o.name, o.secret, o.nodes, o.backend, o.extra
            ),
        )
        .unwrap();
        let mut node = Node {
            name: o.name.to_string(),
            root,
            ip,
            port,
            child: None,
        };
        node.spawn(&o.env);
        node
    }

    pub fn spawn(&mut self, env: &[(&str, String)]) {
        // Appended: a restarted daemon's log follows its previous life's.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join("daemon.log"))
            .unwrap();
        let mut cmd = Command::new(BIN);
        cmd.arg("--root")
            .arg(&self.root)
            .args(["daemon", "run"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().unwrap());
        // Answering on its local socket, and listening: the local socket comes up first,
        // the listener once the daemon has checked its instances.
        wait_for(
            "the daemon to answer and listen",
            Duration::from_secs(20),
            || {
                let out = self.try_nodemgr(&["daemon", "status", "--format", "json"]);
                let status: Value = serde_json::from_slice(&out.stdout).ok()?;
                (out.status.success() && status["data"]["listener"]["addr"].is_string())
                    .then_some(())
            },
        );
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("daemon running").id() as i32
    }

    /// Sends `signal` to the daemon.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.pid(), signal) }, 0);
    }

    /// Waits up to `limit` for the daemon to exit; true when it did.
    pub fn wait_exit(&mut self, limit: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(c) = self.child.as_mut()
                && c.try_wait().unwrap().is_some()
            {
                self.child = None;
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Kills the daemon (no maintenance notice: peers must find it stale).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn try_nodemgr(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .output()
            .unwrap()
    }

    pub fn try_svcmgr(&self, svc: &str, args: &[&str]) -> Output {
        Command::new(SVCMGR)
            .arg("--root")
            .arg(&self.root)
            .args(["-s", svc])
            .args(args)
            .output()
            .unwrap()
    }

    /// Creates service `name` with one resource, up while `<root>/NAME.flag` exists:
    /// `defaults` is the [DEFAULT] section's body, `start_prefix` runs before the start's
    /// `touch`, `extra` adds lines to [app#1]. Returns the flag's path.
    pub fn flag_service(
        &self,
        name: &str,
        defaults: &str,
        start_prefix: &str,
        extra: &str,
    ) -> PathBuf {
        let flag = self.root.join(format!("{name}.flag"));
        let conf = self.root.join(format!("{name}.src.conf"));
        std::fs::write(
            &conf,
            format!(
                "[DEFAULT]\n{defaults}\n[app#1]\nstart = {start_prefix}touch {f}\nstop = rm -f {f}\ncheck = test -f {f}\n{extra}",
                f = flag.display()
            ),
        )
        .unwrap();
        self.svcmgr(name, &["create", "--config", conf.to_str().unwrap()]);
        flag
    }

    /// Moves the listener to a free port with `nodemgr set`; returns the port.
    pub fn set_free_port(&self) -> u16 {
        let port = free_port(self.ip);
        self.nodemgr(&[
            "set",
            "--param",
            "listener.port",
            "--value",
            &port.to_string(),
        ]);
        port
    }

    pub fn svcmgr(&self, svc: &str, args: &[&str]) -> String {
        let out = self.try_svcmgr(svc, args);
        assert!(
            out.status.success(),
            "svcmgr -s {svc} {args:?} failed: {}{}\n--- daemon log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// A raw JSON request over the local socket, answered as JSON.
    pub fn raw(&self, request: &str) -> Value {
        let mut c =
            std::os::unix::net::UnixStream::connect(self.root.join("var/lsnr.sock")).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        c.write_all(&(request.len() as u32).to_be_bytes()).unwrap();
        c.write_all(request.as_bytes()).unwrap();
        let mut len = [0u8; 4];
        c.read_exact(&mut len).unwrap();
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        c.read_exact(&mut body).unwrap();
        serde_json::from_slice(&body).unwrap()
    }

    pub fn nodemgr(&self, args: &[&str]) -> String {
        let out = self.try_nodemgr(args);
        assert!(
            out.status.success(),
            "nodemgr {args:?} failed: {}\n--- daemon log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["--format", "json"]);
        serde_json::from_str(&self.nodemgr(&a)).unwrap()
    }

    pub fn status(&self) -> Value {
        self.json(&["daemon", "status"])["data"].clone()
    }

    pub fn counter(&self, name: &str) -> u64 {
        self.status()["listener"]["counters"][name]
            .as_u64()
            .unwrap()
    }

    pub fn invalid(&self, class: &str) -> u64 {
        self.status()["listener"]["counters"]["invalid"][class]
            .as_u64()
            .unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("daemon.log")).unwrap_or_default()
    }

    pub fn queue_action(&self, name: &str, args: &[&str]) {
        let dir = self.root.join("var/actions");
        std::fs::create_dir_all(&dir).unwrap();
        let tmp = dir.join(format!(".{name}"));
        std::fs::write(&tmp, serde_json::to_string(args).unwrap()).unwrap();
        std::fs::rename(tmp, dir.join(name)).unwrap();
    }

    pub fn udp(&self, frame: &[u8]) {
        let s = UdpSocket::bind((self.ip, 0)).unwrap();
        s.send_to(frame, self.addr()).unwrap();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.root);
        } else {
            eprintln!("daemon {} log:\n{}", self.name, self.log());
        }
    }
}

pub fn peer(name: &str) -> Sealer {
    Sealer::new(SECRET.as_bytes(), CLUSTER, name, now_ms())
}

pub fn frame(s: &mut Sealer, kind: Kind, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    s.seal(kind, payload, now_ms(), &mut out).unwrap();
    out
}

pub fn heartbeat(s: &mut Sealer) -> Vec<u8> {
    frame(
        s,
        Kind::Heartbeat,
        br#"{"gen": 1, "monitor": {"status": "idle"}, "services": {}}"#,
    )
}

/// A length-prefixed request over TCP; None when the daemon closes without answering.
pub fn tcp_request(addr: SocketAddr, frame: &[u8]) -> Option<Vec<u8>> {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(&(frame.len() as u32).to_be_bytes()).unwrap();
    c.write_all(frame).unwrap();
    let mut len = [0u8; 4];
    c.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    c.read_exact(&mut body).ok()?;
    Some(body)
}
