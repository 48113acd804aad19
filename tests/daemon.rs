//! The daemon end to end: real `nodemgr daemon run` processes on 127.0.0.x ports with a
//! temporary root, driven by the real `nodemgr` client and by hand-made frames.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use osvc_agent::wire::{Kind, Request, Sender};
use serde_json::Value;

const SECRET: &str = "integration-secret";
const CLUSTER: &str = "itest";
const BIN: &str = env!("CARGO_BIN_EXE_nodemgr");

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn free_port(ip: IpAddr) -> u16 {
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

fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
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

struct Node {
    name: String,
    root: PathBuf,
    ip: IpAddr,
    port: u16,
    child: Option<Child>,
}

struct Opts<'a> {
    name: &'a str,
    ip: &'a str,
    backend: &'a str,
    nodes: &'a str,
    extra: &'a str,
    env: Vec<(&'a str, String)>,
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
        }
    }
}

impl Node {
    fn start(o: Opts<'_>) -> Node {
        let ip: IpAddr = o.ip.parse().unwrap();
        let port = free_port(ip);
        let root = std::env::temp_dir().join(format!(
            "osvc-itest-{}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed),
            o.name
        ));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("etc")).unwrap();
        let peers: String = ["n1", "n2", "n3"]
            .iter()
            .enumerate()
            .map(|(i, n)| format!("[node.{n}]\naddr = 127.0.0.{}\n", i + 1))
            .collect();
        std::fs::write(
            root.join("etc/node.conf"),
            format!(
                "[node]\nnodename = {}\n\n[cluster]\nname = {CLUSTER}\nsecret = {SECRET}\nnodes = {}\n\n\
                 [listener]\naddr = {ip}\nport = {port}\nbackend = {}\nthreads = 2\nshards = 2\n{}\n{peers}",
                o.name, o.nodes, o.backend, o.extra
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

    fn spawn(&mut self, env: &[(&str, String)]) {
        let log = std::fs::File::create(self.root.join("daemon.log")).unwrap();
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
        wait_for("the daemon to answer", Duration::from_secs(20), || {
            let out = self.try_nodemgr(&["daemon", "status", "--format", "json"]);
            out.status.success().then_some(())
        });
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }

    fn try_nodemgr(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .output()
            .unwrap()
    }

    fn nodemgr(&self, args: &[&str]) -> String {
        let out = self.try_nodemgr(args);
        assert!(
            out.status.success(),
            "nodemgr {args:?} failed: {}\n--- daemon log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["--format", "json"]);
        serde_json::from_str(&self.nodemgr(&a)).unwrap()
    }

    fn status(&self) -> Value {
        self.json(&["daemon", "status"])["data"].clone()
    }

    fn counter(&self, name: &str) -> u64 {
        self.status()["listener"]["counters"][name]
            .as_u64()
            .unwrap()
    }

    fn invalid(&self, class: &str) -> u64 {
        self.status()["listener"]["counters"]["invalid"][class]
            .as_u64()
            .unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("daemon.log")).unwrap_or_default()
    }

    fn queue_action(&self, name: &str, args: &[&str]) {
        let dir = self.root.join("var/actions");
        std::fs::create_dir_all(&dir).unwrap();
        let tmp = dir.join(format!(".{name}"));
        std::fs::write(&tmp, serde_json::to_string(args).unwrap()).unwrap();
        std::fs::rename(tmp, dir.join(name)).unwrap();
    }

    fn udp(&self, frame: &[u8]) {
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

fn peer(name: &str) -> Sender {
    Sender::new(SECRET.as_bytes(), CLUSTER, name, now_ms())
}

fn frame(s: &mut Sender, kind: Kind, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    s.seal(kind, payload, now_ms(), &mut out).unwrap();
    out
}

fn heartbeat(s: &mut Sender) -> Vec<u8> {
    frame(
        s,
        Kind::Heartbeat,
        br#"{"gen": 1, "monitor": {"status": "idle"}, "services": {}}"#,
    )
}

/// A length-prefixed request over TCP; None when the daemon closes without answering.
fn tcp_request(addr: SocketAddr, frame: &[u8]) -> Option<Vec<u8>> {
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

/// Runs a test body against both backends.
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod io_uring { $( #[test] fn $name() { super::$name("io_uring") } )* }
        mod epoll { $( #[test] fn $name() { super::$name("epoll") } )* }
    };
}

both_backends!(
    status_over_tcp_with_the_real_client,
    heartbeats_over_udp_are_counted,
    blacklist_bans_after_five_and_clear_restores,
    non_member_without_join_is_refused,
    replay_is_refused,
    empty_packets_run_the_queued_actions,
    thousand_empty_packets_coalesce,
    thread_stop_and_start,
    listener_panic_is_restarted,
    port_change_rebinds_live,
);

fn status_over_tcp_with_the_real_client(backend: &str) {
    let n = Node::start(Opts {
        backend,
        ..Default::default()
    });
    let s = n.status();
    assert_eq!(s["listener"]["backend"], backend);
    // --node n1 goes over encrypted TCP to [node.n1] addr = 127.0.0.1.
    let remote = n.json(&["--node", "n1", "daemon", "status"]);
    assert_eq!(remote["status"], 0);
    assert_eq!(remote["data"]["nodename"], "n1");
    assert!(n.counter("delivered") >= 1);
    assert!(
        n.status()["listener"]["counters"]["tcp_accepted"]
            .as_u64()
            .unwrap()
            >= 1
    );
    // Blacklist output exactly as documented.
    assert_eq!(
        n.nodemgr(&["daemon", "blacklist", "status", "--format", "json"])
            .trim(),
        r#"{"data": {}, "status": 0}"#
    );
}

fn heartbeats_over_udp_are_counted(backend: &str) {
    let n = Node::start(Opts {
        backend,
        ..Default::default()
    });
    let mut p = peer("peer1");
    for _ in 0..10 {
        n.udp(&heartbeat(&mut p));
    }
    wait_for("10 heartbeats delivered", Duration::from_secs(10), || {
        (n.counter("delivered") >= 10).then_some(())
    });
    let s = n.status();
    assert_eq!(s["peers"]["peer1"]["status"], "up");
    assert_eq!(s["listener"]["counters"]["invalid_total"], 0);
}

fn blacklist_bans_after_five_and_clear_restores(backend: &str) {
    let n = Node::start(Opts {
        backend,
        ..Default::default()
    });
    let mut forger = Sender::new(b"wrong secret", CLUSTER, "peer1", now_ms());
    for _ in 0..5 {
        n.udp(&heartbeat(&mut forger));
    }
    wait_for("peer1 banned", Duration::from_secs(10), || {
        let b = n.json(&["daemon", "blacklist", "status"]);
        (b["data"]["peer1"] == 5).then_some(())
    });
    assert_eq!(n.invalid("decrypt"), 5);
    let decrypted_before = n.counter("decrypted");
    // Valid frames from the banned name are dropped undecrypted ...
    let mut p1 = peer("peer1");
    for _ in 0..5 {
        n.udp(&heartbeat(&mut p1));
    }
    // ... while another member is still served.
    let mut p2 = peer("peer2");
    n.udp(&heartbeat(&mut p2));
    wait_for("drops counted", Duration::from_secs(10), || {
        (n.counter("dropped_blacklisted") >= 5 && n.status()["peers"]["peer2"]["status"] == "up")
            .then_some(())
    });
    assert_eq!(
        n.counter("decrypted"),
        decrypted_before + 1,
        "only peer2's frame decrypted"
    );
    assert!(n.status()["peers"].get("peer1").is_none());
    assert!(
        n.log()
            .contains("blacklisted after 5 consecutive invalid messages")
    );
    n.nodemgr(&["daemon", "blacklist", "clear"]);
    assert_eq!(
        n.json(&["daemon", "blacklist", "status"])["data"],
        serde_json::json!({})
    );
    n.udp(&heartbeat(&mut p1));
    wait_for("peer1 served again", Duration::from_secs(10), || {
        (n.status()["peers"]["peer1"]["status"] == "up").then_some(())
    });
}

fn non_member_without_join_is_refused(backend: &str) {
    let n = Node::start(Opts {
        backend,
        ..Default::default()
    });
    let mut stranger = peer("stranger");
    let f = frame(
        &mut stranger,
        Kind::Request,
        &Request::DaemonStatus.to_vec(),
    );
    assert_eq!(
        tcp_request(n.addr(), &f),
        None,
        "connection closed, no response"
    );
    assert_eq!(n.invalid("not_member"), 1);
    // A member gets its answer on the same path.
    let mut p1 = peer("peer1");
    let f = frame(&mut p1, Kind::Request, &Request::DaemonStatus.to_vec());
    let mut resp = tcp_request(n.addr(), &f).expect("a member is answered");
    let identity = osvc_agent::client::Identity {
        secret: SECRET.into(),
        cluster: CLUSTER.into(),
        nodename: "peer1".into(),
    };
    let r = osvc_agent::client::open_response(&identity, &mut resp).unwrap();
    assert_eq!(r.status, 0);
    assert_eq!(r.data.unwrap()["nodename"], "n1");
}

fn replay_is_refused(backend: &str) {
    let n = Node::start(Opts {
        backend,
        ..Default::default()
    });
    let mut p = peer("peer1");
    let hb = heartbeat(&mut p);
    n.udp(&hb);
    wait_for("first delivered", Duration::from_secs(10), || {
        (n.counter("delivered") >= 1).then_some(())
    });
    n.udp(&hb);
    wait_for("replay refused", Duration::from_secs(10), || {
        (n.invalid("replayed") == 1).then_some(())
    });
    // The replay over TCP is refused too (replay state is shared by all workers).
    let req = frame(&mut p, Kind::Request, &Request::DaemonStatus.to_vec());
    assert!(tcp_request(n.addr(), &req).is_some());
    assert_eq!(tcp_request(n.addr(), &req), None);
    assert_eq!(n.invalid("replayed"), 2);
}

fn empty_packets_run_the_queued_actions(backend: &str) {
    let n = Node::start(Opts {
        backend,
        ..Default::default()
    });
    n.queue_action(
        "01-udp",
        &["nodemgr", "set", "--param", "itest.mark", "--value", "udp"],
    );
    n.udp(&[]);
    wait_for("the queued action ran", Duration::from_secs(15), || {
        let out = n.try_nodemgr(&["get", "--param", "itest.mark"]);
        (String::from_utf8_lossy(&out.stdout).trim() == "udp").then_some(())
    });
    assert!(!n.root.join("var/actions/01-udp").exists());
    n.queue_action(
        "02-tcp",
        &["nodemgr", "set", "--param", "itest.mark", "--value", "tcp"],
    );
    drop(TcpStream::connect(n.addr()).unwrap());
    wait_for("the queued action ran", Duration::from_secs(15), || {
        let out = n.try_nodemgr(&["get", "--param", "itest.mark"]);
        (String::from_utf8_lossy(&out.stdout).trim() == "tcp").then_some(())
    });
    let s = n.status();
    assert_eq!(s["dequeue"]["actions_run"], 2);
    assert_eq!(s["listener"]["counters"]["dequeues"], 2);
}

fn thousand_empty_packets_coalesce(backend: &str) {
    let n = Node::start(Opts {
        backend,
        ..Default::default()
    });
    let s = UdpSocket::bind((n.ip, 0)).unwrap();
    for _ in 0..1000 {
        s.send_to(&[], n.addr()).unwrap();
    }
    wait_for("1000 triggers and a run", Duration::from_secs(15), || {
        let st = n.status();
        (st["dequeue"]["triggers"].as_u64().unwrap() >= 1000
            && st["dequeue"]["runs"].as_u64().unwrap() >= 1)
            .then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    let st = n.status();
    let runs = st["dequeue"]["runs"].as_u64().unwrap();
    assert!(
        runs >= 1 && runs <= 50,
        "{runs} runs for 1000 empty packets"
    );
}

fn connect_refused(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err()
}

fn thread_stop_and_start(backend: &str) {
    let n = Node::start(Opts {
        backend,
        ..Default::default()
    });
    n.nodemgr(&["daemon", "stop", "--thread-id", "listener"]);
    assert_eq!(n.status()["threads"]["listener"]["state"], "stopped");
    assert!(connect_refused(n.addr()), "sockets closed");
    n.nodemgr(&["daemon", "start", "--thread-id", "listener"]);
    wait_for("listener back", Duration::from_secs(10), || {
        (!connect_refused(n.addr())).then_some(())
    });
    let st = n.status();
    assert_eq!(st["threads"]["listener"]["state"], "running");
    assert_eq!(st["threads"]["listener"]["restarts"], 0);
    let out = n.try_nodemgr(&["daemon", "stop", "--thread-id", "nope"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown thread id"));
}

fn listener_panic_is_restarted(backend: &str) {
    let n = Node::start(Opts {
        backend,
        env: vec![("OSVC_TEST_LISTENER_PANIC_AFTER", "3".into())],
        ..Default::default()
    });
    let mut p = peer("peer1");
    // With two workers, frames may land on either: send until one of them passes 3.
    let st = wait_for("listener restarted", Duration::from_secs(20), || {
        n.udp(&heartbeat(&mut p));
        let st = n.status();
        (st["threads"]["listener"]["restarts"] == 1
            && st["threads"]["listener"]["state"] == "running")
            .then_some(st)
    });
    assert!(
        st["threads"]["listener"]["last_error"]
            .as_str()
            .unwrap()
            .contains("injected fault")
    );
    let before = n.counter("delivered");
    n.udp(&heartbeat(&mut p));
    wait_for("served after restart", Duration::from_secs(10), || {
        (n.counter("delivered") > before).then_some(())
    });
}

fn port_change_rebinds_live(backend: &str) {
    let n = Node::start(Opts {
        backend,
        ..Default::default()
    });
    let new_port = free_port(n.ip);
    n.nodemgr(&[
        "set",
        "--param",
        "listener.port",
        "--value",
        &new_port.to_string(),
    ]);
    let new_addr = SocketAddr::new(n.ip, new_port);
    wait_for("rebound on the new port", Duration::from_secs(10), || {
        (!connect_refused(new_addr)).then_some(())
    });
    assert!(connect_refused(n.addr()), "old port closed");
    assert_eq!(n.status()["listener"]["addr"], new_addr.to_string());
}

#[test]
fn invalid_config_edit_is_refused_and_old_config_kept() {
    let n = Node::start(Opts::default());
    let conf = n.root.join("etc/node.conf");
    let text = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(
        &conf,
        text.replace(&format!("port = {}", n.port), "port = abc"),
    )
    .unwrap();
    wait_for("refusal logged", Duration::from_secs(10), || {
        n.log().contains("refusing the new node.conf").then_some(())
    });
    assert!(n.log().contains("listener.port"));
    assert_eq!(n.status()["listener"]["addr"], n.addr().to_string());
    assert!(!connect_refused(n.addr()));
    // nodemgr set refuses an invalid value before writing anything.
    let out = n.try_nodemgr(&["set", "--param", "listener.port", "--value", "99999"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("listener.port"));
}

#[test]
fn stopped_daemon_is_shown_in_maintenance_by_its_peer() {
    let n1 = Node::start(Opts {
        nodes: "n1 n2",
        ..Default::default()
    });
    let mut n2 = Node::start(Opts {
        name: "n2",
        ip: "127.0.0.2",
        nodes: "n1 n2",
        ..Default::default()
    });
    // Peers find each other on [node.NAME] addr and their own listener port: give n2 the
    // same port as n1 for this (different addresses, so no clash).
    let _ = &mut n2;
    drop(n2);
    let n2 = {
        let root = std::env::temp_dir().join(format!("osvc-itest-{}-maint", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(
            root.join("etc/node.conf"),
            format!(
                "[node]\nnodename = n2\n[cluster]\nname = {CLUSTER}\nsecret = {SECRET}\nnodes = n1 n2\n\
                 [listener]\naddr = 127.0.0.2\nport = {}\nthreads = 1\n[node.n1]\naddr = 127.0.0.1\n",
                n1.port
            ),
        )
        .unwrap();
        let mut n = Node {
            name: "n2".into(),
            root,
            ip: "127.0.0.2".parse().unwrap(),
            port: n1.port,
            child: None,
        };
        n.spawn(&[]);
        n
    };
    n2.nodemgr(&["daemon", "stop"]);
    wait_for("n1 sees n2 in maintenance", Duration::from_secs(10), || {
        (n1.status()["peers"]["n2"]["status"] == "maintenance").then_some(())
    });
    assert!(!n2.root.join("var/lsnr.sock").exists());
}

#[test]
fn cli_errors_are_one_line_and_non_zero() {
    let root = std::env::temp_dir().join(format!("osvc-itest-{}-nodaemon", std::process::id()));
    let out = Command::new(BIN)
        .arg("--root")
        .arg(&root)
        .args(["daemon", "status"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("not running"), "{err}");
    let _ = Path::new(&root);
}
