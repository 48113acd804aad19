//! The daemon end to end: real `nodemgr daemon run` processes on 127.0.0.x ports with a
//! temporary root, driven by the real `nodemgr` client and by hand-made frames.

mod common;

use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use osvc_agent::internals::wire::{FrameView, Kind, Request, Sealer, SessionKey};

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
    tcp_limits_slowloris_max_connections_and_max_frame,
    typos_are_answered_and_never_ban_a_member,
    idle_connection_flood_does_not_lock_members_out,
    unauthenticated_frames_are_not_buffered,
    requests_in_pieces_and_pipelined_are_all_answered,
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
    let mut forger = Sealer::new(b"wrong secret", CLUSTER, "peer1", now_ms());
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
    // It authenticated: refused with an error, neither invalid nor entered in the blacklist.
    let r = open_as(
        "stranger",
        tcp_request(n.addr(), &f).expect("an authenticated request is answered"),
    );
    assert_ne!(r.status, 0);
    assert!(r.error.unwrap().contains("not a cluster member"));
    assert_eq!(n.status()["listener"]["counters"]["invalid_total"], 0);
    assert_eq!(
        n.json(&["daemon", "blacklist", "status"])["data"],
        serde_json::json!({})
    );
    // A member gets its answer on the same path.
    let mut p1 = peer("peer1");
    let f = frame(&mut p1, Kind::Request, &Request::DaemonStatus.to_vec());
    let r = open_as(
        "peer1",
        tcp_request(n.addr(), &f).expect("a member is answered"),
    );
    assert_eq!(r.status, 0);
    assert_eq!(r.data.unwrap()["nodename"], "n1");
}

/// A response frame to a request sent as `nodename`, opened.
fn open_as(nodename: &str, mut resp: Vec<u8>) -> osvc_agent::internals::wire::Response {
    let identity = osvc_agent::internals::client::Identity {
        secret: SECRET.into(),
        alt_secret: None,
        cluster: CLUSTER.into(),
        nodename: nodename.into(),
        source: None,
    };
    osvc_agent::internals::client::open_response(&identity, &mut resp).unwrap()
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
        &[
            "nodemgr",
            "set",
            "--param",
            "node.itest.addr",
            "--value",
            "udp",
        ],
    );
    n.udp(&[]);
    // The action's effect shows before the runner removes its file and counts it: wait for
    // the run to be over, not only for the effect.
    let node = &n;
    let run_over = |count: u64| {
        move || (node.status()["dequeue"]["actions_run"].as_u64() == Some(count)).then_some(())
    };
    wait_for(
        "the queued action ran",
        Duration::from_secs(15),
        run_over(1),
    );
    let out = n.try_nodemgr(&["get", "--param", "node.itest.addr"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "udp");
    assert!(!n.root.join("var/actions/01-udp").exists());
    n.queue_action(
        "02-tcp",
        &[
            "nodemgr",
            "set",
            "--param",
            "node.itest.addr",
            "--value",
            "tcp",
        ],
    );
    drop(TcpStream::connect(n.addr()).unwrap());
    wait_for(
        "the queued action ran",
        Duration::from_secs(15),
        run_over(2),
    );
    let out = n.try_nodemgr(&["get", "--param", "node.itest.addr"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "tcp");
    assert!(!n.root.join("var/actions/02-tcp").exists());
    let s = n.status();
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
        (1..=50).contains(&runs),
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
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid value 'nope'") && err.contains("hb.tx"),
        "{err}"
    );
    let r = n.raw(r#"{"action": "daemon_stop", "options": {"thread_id": "nope"}}"#);
    assert!(
        r["error"]
            .as_str()
            .is_some_and(|e| e.contains("unknown thread id")),
        "{r}"
    );
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
    let new_port = n.set_free_port();
    let new_addr = SocketAddr::new(n.ip, new_port);
    wait_for("rebound on the new port", Duration::from_secs(10), || {
        (!connect_refused(new_addr)).then_some(())
    });
    assert!(connect_refused(n.addr()), "old port closed");
    assert_eq!(n.status()["listener"]["addr"], new_addr.to_string());
}

#[test]
fn invalid_config_edit_is_refused_and_old_config_kept() {
    // An unknown keyword (a typo) is ignored with a warning: the daemon starts.
    let n = Node::start(Opts {
        extra: "join_rat = 5\n",
        ..Default::default()
    });
    assert_eq!(n.status()["nodename"], "n1");
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

/// `nodemgr` on a root of its own, no daemon.
fn nodemgr_at(root: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn config_root(tag: &str, conf: Option<&str>) -> std::path::PathBuf {
    let root = std::env::temp_dir().join(format!("osvc-itest-{}-cfg-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("etc")).unwrap();
    if let Some(text) = conf {
        std::fs::write(root.join("etc/node.conf"), text).unwrap();
    }
    root
}

const SMALL_CONF: &str = "# mine\n[node]\nnodename = n1\n[cluster]\nname = prod1\n\
                          secret = correct horse battery staple\n[listener]\nport = 1300\n";

#[test]
fn set_refuses_unknown_keywords_and_bad_values_leaving_the_file_untouched() {
    let root = config_root("set", Some(SMALL_CONF));
    let conf = root.join("etc/node.conf");
    let (ok, _, err) = nodemgr_at(
        &root,
        &["set", "--param", "listener.prot", "--value", "1216"],
    );
    assert!(!ok);
    assert_eq!(
        err.trim(),
        "nodemgr: listener.prot: unknown keyword; did you mean listener.port?"
    );
    let (ok, _, err) = nodemgr_at(
        &root,
        &["set", "--param", "listner.port", "--value", "1216"],
    );
    assert!(!ok);
    assert!(
        err.contains("unknown section [listner]; did you mean listener.port?"),
        "{err}"
    );
    let (ok, _, err) = nodemgr_at(&root, &["set", "--param", "hb.interval", "--value", "soon"]);
    assert!(!ok);
    assert!(err.contains("hb.interval: invalid value \"soon\""), "{err}");
    let (ok, _, err) = nodemgr_at(
        &root,
        &["set", "--param", "listener.udp_gather", "--value", "50ms"],
    );
    assert!(!ok);
    assert!(
        err.contains(
            "listener.udp_gather: invalid value \"50ms\": expected a duration from 0 to 10ms"
        ),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), SMALL_CONF);
    assert!(!root.join("etc/node.conf.bak").exists(), "nothing written");
    let (ok, _, err) = nodemgr_at(
        &root,
        &["set", "--param", "listener.join_rate", "--value", "7"],
    );
    assert!(ok, "{err}");
    assert!(
        std::fs::read_to_string(&conf)
            .unwrap()
            .starts_with(SMALL_CONF)
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn get_eval_prints_the_value_in_force() {
    let root = config_root("get", Some(SMALL_CONF));
    let get = |args: &[&str]| nodemgr_at(&root, &[&["get", "--param"], args].concat());
    // Not written: no value as written, the default in force.
    let (ok, _, err) = get(&["listener.join_rate"]);
    assert!(!ok);
    assert!(
        err.contains("not set") && err.contains("in force: 20"),
        "{err}"
    );
    assert_eq!(get(&["listener.join_rate", "--eval"]).1, "20\n");
    assert_eq!(get(&["listener.port", "--eval"]).1, "1300\n");
    assert_eq!(get(&["listener.port"]).1, "1300\n");
    // Derived defaults: what they follow.
    assert_eq!(get(&["node.takeover_delay", "--eval"]).1, "15s\n");
    assert_eq!(get(&["cluster.nodes", "--eval"]).1, "n1\n");
    // No value at all: nothing, and success.
    assert_eq!(
        get(&["metrics.addr", "--eval"]),
        (true, String::new(), String::new())
    );
    // --format json: one JSON document, a string or null, as every answer is.
    let json = |args: &[&str]| -> serde_json::Value {
        serde_json::from_str(&get(&[args, &["--format", "json"][..]].concat()).1).unwrap()
    };
    assert_eq!(
        json(&["node.takeover_delay", "--eval"]),
        serde_json::json!({"data": "15s", "status": 0})
    );
    assert_eq!(
        json(&["metrics.addr", "--eval"])["data"],
        serde_json::Value::Null
    );
    let (ok, out, _) = nodemgr_at(
        &root,
        &["cluster", "keyring", "generate", "--format", "json"],
    );
    let secret: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        ok && secret["data"].as_str().is_some_and(|s| s.len() == 64),
        "{out}"
    );
    let (ok, _, err) = nodemgr_at(&root, &["--node", "zz", "daemon", "status"]);
    assert!(
        !ok && err.contains("\"zz\" is not a member") && err.contains("cluster.nodes: n1"),
        "{err}"
    );
    let (ok, _, err) = get(&["listener.join_rat", "--eval"]);
    assert!(
        !ok && err.contains("did you mean listener.join_rate?"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn print_config_shows_secrets_by_their_fingerprint() {
    let root = config_root("print", Some(SMALL_CONF));
    // PROTOCOL.md's test vector: this secret in cluster prod1.
    let fp = "8213a94a1a4da7c3";
    let (ok, out, _) = nodemgr_at(&root, &["print", "config"]);
    assert!(ok);
    assert_eq!(
        out,
        SMALL_CONF.replace(
            "correct horse battery staple",
            &format!("<hidden, fingerprint {fp}>")
        )
    );
    let (_, out, _) = nodemgr_at(&root, &["print", "config", "--show-secrets"]);
    assert_eq!(out, SMALL_CONF);
    let (ok, out, _) = nodemgr_at(&root, &["print", "config", "--eval"]);
    assert!(ok);
    assert!(!out.contains("horse"), "{out}");
    assert!(
        out.contains(&format!("secret = <hidden, fingerprint {fp}>")),
        "{out}"
    );
    assert!(
        out.contains("[listener]\naddr = 0.0.0.0\nport = 1300\n"),
        "{out}"
    );
    assert!(out.contains("join_rate = 20\n"), "{out}");
    assert!(out.contains("# alt_secret = (none)\n"), "{out}");
    let (ok, out, _) = nodemgr_at(&root, &["print", "config", "--eval", "--format", "json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["listener"]["join_rate"], "20");
    assert_eq!(v["cluster"]["alt_secret"], serde_json::Value::Null);
    assert_eq!(
        v["cluster"]["secret"],
        format!("<hidden, fingerprint {fp}>")
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn validate_config_reports_every_problem_with_its_line() {
    let root = config_root("validate", Some(SMALL_CONF));
    let (ok, out, _) = nodemgr_at(&root, &["validate", "config"]);
    assert!(ok);
    let conf = root.join("etc/node.conf");
    assert_eq!(out, format!("{}: ok\n", conf.display()));
    std::fs::write(
        &conf,
        format!("{SMALL_CONF}prot = 1216\nmax_connections = 0\n[hb]\ntimout = 1\n"),
    )
    .unwrap();
    let (ok, out, _) = nodemgr_at(&root, &["validate", "config"]);
    assert!(!ok);
    let c = conf.display();
    assert_eq!(
        out,
        format!(
            "{c}:9: listener.prot: unknown keyword; did you mean listener.port?\n\
             {c}:10: listener.max_connections: invalid value \"0\": expected an integer from 1 to 4294967295\n\
             {c}:12: hb.timout: unknown keyword; did you mean hb.timeout?\n"
        )
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn set_without_node_conf_creates_it_and_errors_say_their_cause_once() {
    let root = config_root("fresh", None);
    let (ok, _, err) = nodemgr_at(&root, &["get", "--param", "listener.port"]);
    assert!(!ok);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    let (ok, _, err) = nodemgr_at(
        &root,
        &["set", "--param", "listener.port", "--value", "1299"],
    );
    assert!(ok, "{err}");
    assert!(err.contains("created"), "{err}");
    let (_, out, _) = nodemgr_at(&root, &["get", "--param", "listener.port"]);
    assert_eq!(out, "1299\n");
    let (_, out, _) = nodemgr_at(&root, &["get", "--param", "cluster.secret"]);
    assert_eq!(out.trim().len(), 64, "a generated secret: {out}");
    assert!(nodemgr_at(&root, &["validate", "config"]).0);
    let _ = std::fs::remove_dir_all(&root);
}

/// README.md's keyword reference is `nodemgr print keywords`, verbatim.
#[test]
fn readme_keyword_reference_is_up_to_date() {
    let (ok, generated, _) = nodemgr_at(Path::new("/nonexistent"), &["print", "keywords"]);
    assert!(ok);
    let readme_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let readme = std::fs::read_to_string(&readme_path).unwrap();
    let (begin, end) = ("<!-- keywords:begin -->\n", "<!-- keywords:end -->");
    let start = readme
        .find(begin)
        .expect("README.md: no keywords:begin marker")
        + begin.len();
    let stop = readme.find(end).expect("README.md: no keywords:end marker");
    if readme[start..stop] != generated {
        if std::env::var_os("UPDATE_README").is_some() {
            let updated = format!("{}{generated}{}", &readme[..start], &readme[stop..]);
            std::fs::write(&readme_path, updated).unwrap();
        } else {
            panic!(
                "README.md's keyword reference differs from `nodemgr print keywords`; regenerate it \
                 with `UPDATE_README=1 cargo test --test daemon readme_keyword_reference`"
            );
        }
    }
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
    assert!(err.contains("`nodemgr daemon start`"), "what to do: {err}");
    let _ = Path::new(&root);
}

#[test]
fn edit_config_keeps_the_file_unless_the_edit_is_valid() {
    let n = Node::start(Opts::default());
    let conf = n.root.join("etc/node.conf");
    let before = std::fs::read_to_string(&conf).unwrap();
    let edit = |script: &str| {
        Command::new(BIN)
            .arg("--root")
            .arg(&n.root)
            .args(["edit", "config"])
            .env("EDITOR", format!("sed -i '{script}'"))
            .env_remove("VISUAL")
            .output()
            .unwrap()
    };
    let out = edit("s/^max_connections.*//; s/^threads = 2/threads = many/");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("listener.threads") && err.contains("left unchanged"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), before);
    // A typo is refused too, with the keyword meant.
    let out = edit("s/^threads = 2/thread = 1/");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("did you mean listener.threads?"), "{err}");
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), before);
    let out = edit("s/^threads = 2/threads = 1/");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        std::fs::read_to_string(&conf)
            .unwrap()
            .contains("threads = 1")
    );
    assert!(
        n.root.join("etc/node.conf.bak").exists(),
        "the previous version is kept"
    );
}

#[test]
fn daemon_start_runs_in_the_background_and_stop_ends_it() {
    let root = std::env::temp_dir().join(format!("osvc-itest-{}-bg", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("etc")).unwrap();
    let port = free_port("127.0.0.1".parse().unwrap());
    std::fs::write(
        root.join("etc/node.conf"),
        format!("[node]\nnodename = bg\n[cluster]\nsecret = s\n[listener]\naddr = 127.0.0.1\nport = {port}\nthreads = 1\n[log]\nformat = json\n"),
    )
    .unwrap();
    let nodemgr = |args: &[&str]| {
        Command::new(BIN)
            .arg("--root")
            .arg(&root)
            .args(args)
            .output()
            .unwrap()
    };
    let out = nodemgr(&["daemon", "start"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("daemon started"));
    assert!(
        String::from_utf8_lossy(&nodemgr(&["daemon", "start"]).stdout).contains("already running")
    );
    assert!(nodemgr(&["daemon", "status"]).status.success());
    let out = nodemgr(&["daemon", "stop"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!root.join("var/lsnr.sock").exists());
    let out = nodemgr(&["daemon", "status"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not running"));
    // `[log] format = json`: every line of its log is one JSON object.
    let log = std::fs::read_to_string(root.join("var/osvcd.log")).unwrap();
    let records: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    for r in &records {
        assert!(r["level"].is_string() && r["message"].is_string(), "{r}");
        assert!(r["timestamp"].is_string(), "{r}");
    }
    let messages: Vec<&str> = records
        .iter()
        .filter_map(|r| r["message"].as_str())
        .collect();
    assert!(messages.contains(&"daemon starting"), "{log}");
    assert!(
        records
            .iter()
            .any(|r| r["level"] == "INFO" && r["nodename"] == "bg"),
        "{log}"
    );
    let _ = std::fs::remove_dir_all(&root);
}

/// Under systemd stderr is the journal stream that `JOURNAL_STREAM` names (device:inode):
/// lines carry their syslog priority and no timestamp. A daemon that inherited the variable
/// but writes elsewhere keeps its own timestamps.
#[test]
fn journal_lines_carry_priorities_and_no_timestamp() {
    use std::os::unix::fs::MetadataExt;
    let mut n = Node::start(Opts::default());
    n.kill();
    let log_path = n.root.join("daemon.log");
    let meta = std::fs::metadata(&log_path).unwrap();
    let stream = format!("{}:{}", meta.dev(), meta.ino());
    let from = meta.len() as usize;
    n.spawn(&[
        ("JOURNAL_STREAM", stream),
        ("RUST_LOG", "debug".to_string()),
    ]);
    // A request that fails (a debug line), a service the monitor cannot load (a warning).
    assert!(!n.try_svcmgr("nope", &["print", "monitor"]).status.success());
    std::fs::write(
        n.root.join("etc/broken.conf"),
        "[app#1]
start
",
    )
    .unwrap();
    let journal = wait_for(
        "a warning and a debug line",
        Duration::from_secs(20),
        || {
            let log = n.log();
            let new = log.get(from..)?.to_string();
            (new.lines()
                .any(|l| l.starts_with("<4>") && l.contains("cannot load"))
                && new
                    .lines()
                    .any(|l| l.starts_with("<7>") && l.contains("request failed")))
            .then_some(new)
        },
    );
    for line in journal.lines() {
        let (priority, rest) = line.split_at(3.min(line.len()));
        let level = rest.split_whitespace().next().unwrap_or_default();
        let expected = match level {
            "ERROR" => "<3>",
            "WARN" => "<4>",
            "INFO" => "<6>",
            "DEBUG" | "TRACE" => "<7>",
            _ => panic!("no level first, so no timestamp: {line:?}"),
        };
        assert_eq!(priority, expected, "{line:?}");
    }
    assert!(journal.lines().any(|l| l.starts_with("<6>")), "{journal}");
    // Not the journal's stream: no priorities, and our own timestamps, local with their
    // offset (TZ 3 h east of UTC).
    n.kill();
    let from = n.log().len();
    n.spawn(&[
        ("JOURNAL_STREAM", "1:1".to_string()),
        ("TZ", "XYZ-3".to_string()),
    ]);
    let plain = n.log()[from..].to_string();
    assert!(!plain.is_empty());
    for line in plain.lines() {
        let stamp = line.split_whitespace().next().unwrap_or_default();
        assert!(
            stamp.starts_with("20") && stamp.ends_with("+03:00"),
            "{line:?}"
        );
    }
}

/// `generate`: completions each shell can load and roff man pages, for both CLIs.
#[test]
fn generate_completions_and_man_pages() {
    let dir = std::env::temp_dir().join(format!("osvc-itest-{}-generate", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (bin, name, subcommand) in [(BIN, "nodemgr", "cluster"), (SVCMGR, "svcmgr", "logs")] {
        let generate = |what: &[&str]| {
            let out = Command::new(bin)
                .arg("generate")
                .args(what)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{name} generate {what:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        };
        let bash = generate(&["complete-bash"]);
        assert!(bash.contains(subcommand), "{name}: {subcommand} in bash");
        assert!(
            name != "nodemgr" || bash.contains("keyring"),
            "nested subcommands too"
        );
        let script = dir.join(format!("{name}.bash"));
        std::fs::write(&script, &bash).unwrap();
        let check = Command::new("bash")
            .arg("-n")
            .arg(&script)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "bash -n {name}: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        assert!(generate(&["complete-zsh"]).starts_with(&format!("#compdef {name}")));
        assert!(generate(&["complete-fish"]).contains(&format!("complete -c {name} ")));
        let man = generate(&["man"]);
        assert!(man.contains(&format!(".TH {name} 1")), "{man}");
        assert!(
            man.contains(".SH SYNOPSIS") && man.contains(subcommand),
            "{man}"
        );
        let pages = dir.join("man1");
        generate(&["man", "--dir", pages.to_str().unwrap()]);
        let top = std::fs::read_to_string(pages.join(format!("{name}.1"))).unwrap();
        assert_eq!(top, man);
    }
    let page = std::fs::read_to_string(dir.join("man1/nodemgr-daemon-run.1")).unwrap();
    assert!(page.contains(".TH nodemgr-daemon-run 1"), "{page}");
    assert!(dir.join("man1/svcmgr-print-monitor.1").is_file());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The listener reads a frame in parts (its length and header, then its body, then the next
/// one's start): a request that arrives in pieces is answered, and so is each of a stream of
/// requests written back to back, whose answers outgrow the socket buffers while the client
/// is not reading yet.
fn requests_in_pieces_and_pipelined_are_all_answered(backend: &str) {
    use std::io::{Read, Write};
    let n = Node::start(Opts {
        backend,
        ..Default::default()
    });
    let mut p1 = peer("peer1");
    let read_answer = |c: &mut TcpStream| -> Vec<u8> {
        let mut len = [0u8; 4];
        c.read_exact(&mut len).unwrap();
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        c.read_exact(&mut body).unwrap();
        body
    };
    let mut c = TcpStream::connect(n.addr()).unwrap();
    c.set_nodelay(true).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let f = frame(&mut p1, Kind::Request, &Request::DaemonStatus.to_vec());
    let mut stream = (f.len() as u32).to_be_bytes().to_vec();
    stream.extend_from_slice(&f);
    // Cut inside the length, inside the fixed header, inside the name, inside the body.
    for piece in [
        &stream[..2],
        &stream[2..20],
        &stream[20..45],
        &stream[45..60],
        &stream[60..],
    ] {
        c.write_all(piece).unwrap();
        std::thread::sleep(Duration::from_millis(30));
    }
    assert_eq!(open_as("peer1", read_answer(&mut c)).status, 0);

    let count = 3000;
    let mut requests = Vec::new();
    for _ in 0..count {
        let f = frame(&mut p1, Kind::Request, &Request::DaemonStatus.to_vec());
        requests.extend_from_slice(&(f.len() as u32).to_be_bytes());
        requests.extend_from_slice(&f);
    }
    let mut writer = c.try_clone().unwrap();
    let sending = std::thread::spawn(move || writer.write_all(&requests));
    // Not reading for a while: the answers fill both sockets' buffers.
    std::thread::sleep(Duration::from_millis(300));
    let mut answered = 0;
    let mut bytes = 0;
    for _ in 0..count {
        let answer = read_answer(&mut c);
        bytes += answer.len();
        answered += usize::from(open_as("peer1", answer).status == 0);
    }
    sending.join().unwrap().unwrap();
    assert_eq!(answered, count);
    assert!(
        bytes > 4 << 20,
        "answers of {bytes} bytes in all outgrow the buffers"
    );
}

fn tcp_limits_slowloris_max_connections_and_max_frame(backend: &str) {
    use std::io::{Read, Write};
    let n = Node::start(Opts {
        backend,
        extra: "read_timeout = 500ms\nmax_connections = 2\nmax_frame = 1000\n",
        ..Default::default()
    });
    let closed_within = |c: &mut TcpStream, limit: Duration| {
        c.set_read_timeout(Some(limit)).unwrap();
        let mut b = [0u8; 1];
        matches!(c.read(&mut b), Ok(0) | Err(_)) && {
            // Err from the timeout would mean "still open": tell the two apart.
            c.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
            !matches!(c.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        }
    };
    // A frame that trickles in is cut at the read deadline.
    let mut slow = TcpStream::connect(n.addr()).unwrap();
    slow.write_all(&[0, 0]).unwrap();
    let t = std::time::Instant::now();
    assert!(
        closed_within(&mut slow, Duration::from_secs(3)),
        "slowloris closed"
    );
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "within the 500 ms deadline"
    );
    // A length above max_frame closes the connection at once.
    let mut big = TcpStream::connect(n.addr()).unwrap();
    big.write_all(&5000u32.to_be_bytes()).unwrap();
    assert!(
        closed_within(&mut big, Duration::from_secs(2)),
        "oversize frame closed"
    );
    // At max_connections, a new connection takes the place of the longest-idle one that has
    // not authenticated a frame. The two first must be accepted (by whichever worker) before
    // the third comes: wait for the daemon to say so, and for the two closed above to be gone.
    let counters = |n: &Node| n.status()["listener"]["counters"].clone();
    let open = |n: &Node| counters(n)["tcp_open"].as_u64();
    wait_for(
        "the closed connections gone",
        Duration::from_secs(10),
        || (open(&n) == Some(0)).then_some(()),
    );
    let mut a = TcpStream::connect(n.addr()).unwrap();
    wait_for("one connection accepted", Duration::from_secs(10), || {
        (open(&n) == Some(1)).then_some(())
    });
    let mut b = TcpStream::connect(n.addr()).unwrap();
    wait_for("two connections accepted", Duration::from_secs(10), || {
        (open(&n) == Some(2)).then_some(())
    });
    let c = TcpStream::connect(n.addr()).unwrap();
    assert!(
        closed_within(&mut a, Duration::from_secs(2)),
        "the idlest unauthenticated connection evicted"
    );
    assert_eq!(counters(&n)["tcp_evicted"], 1);
    // Two members' connections that authenticated a frame fill the table: they are never
    // evicted, and a new connection is refused.
    drop((b, c));
    wait_for("the idle ones gone", Duration::from_secs(10), || {
        (open(&n) == Some(0)).then_some(())
    });
    let mut p1 = peer("peer1");
    let mut members: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut m = TcpStream::connect(n.addr()).unwrap();
            let f = frame(&mut p1, Kind::Request, &Request::DaemonStatus.to_vec());
            assert!(request_on(&mut m, &f).is_some(), "member answered");
            m
        })
        .collect();
    b = TcpStream::connect(n.addr()).unwrap();
    assert!(
        closed_within(&mut b, Duration::from_secs(2)),
        "refused when every connection has authenticated"
    );
    assert!(counters(&n)["tcp_refused"].as_u64().unwrap() >= 1);
    for m in &mut members {
        let f = frame(&mut p1, Kind::Request, &Request::DaemonStatus.to_vec());
        assert!(request_on(m, &f).is_some(), "members still served");
    }
}

/// One length-prefixed request on an open connection, and its response frame.
fn request_on(c: &mut TcpStream, frame: &[u8]) -> Option<Vec<u8>> {
    use std::io::{Read, Write};
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(&(frame.len() as u32).to_be_bytes()).ok()?;
    c.write_all(frame).ok()?;
    let mut len = [0u8; 4];
    c.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    c.read_exact(&mut body).ok()?;
    Some(body)
}

/// Twelve `nodemgr set` processes of distinct keys at once, beside a running daemon: every
/// one survives (one lock file serialises every read-modify-write of node.conf).
#[test]
fn parallel_nodemgr_sets_all_survive() {
    let n = Node::start(Opts::default());
    let children: Vec<_> = (0..12)
        .map(|i| {
            Command::new(BIN)
                .arg("--root")
                .arg(&n.root)
                .args(["set", "--param", &format!("node.itest{i}.addr"), "--value"])
                .arg(format!("v{i}"))
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    for i in 0..12 {
        let out = n.try_nodemgr(&["get", "--param", &format!("node.itest{i}.addr")]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("v{i}"),
            "node.itest{i}.addr lost"
        );
    }
    // The daemon still answers: nothing it reloaded in between was a torn file.
    assert_eq!(n.status()["nodename"], "n1");
}

/// A queued action that hangs is killed at `[dequeue] timeout`, kept in `failed/` with the
/// reason, and the actions after it run; a file that does not parse is kept there too.
#[test]
fn hung_and_bad_queued_actions_are_set_aside() {
    let n = Node::start(Opts {
        extra: "[dequeue]\ntimeout = 1s\n",
        ..Default::default()
    });
    // A daemon in the foreground under another root: an action that never ends by itself.
    let other = n.root.join("other");
    std::fs::create_dir_all(other.join("etc")).unwrap();
    std::fs::write(
        other.join("etc/node.conf"),
        format!(
            "[node]\nnodename = o1\n[cluster]\nname = o\nsecret = x\n\
             [listener]\naddr = 127.0.0.1\nport = {}\nthreads = 1\n",
            free_port("127.0.0.1".parse().unwrap())
        ),
    )
    .unwrap();
    let other = other.to_str().unwrap();
    n.queue_action("01-hang", &["nodemgr", "--root", other, "daemon", "run"]);
    let dir = n.root.join("var/actions");
    std::fs::write(dir.join("02-bad"), "not json").unwrap();
    n.queue_action(
        "03-set",
        &[
            "nodemgr",
            "set",
            "--param",
            "node.itest.addr",
            "--value",
            "ran",
        ],
    );
    let t = std::time::Instant::now();
    n.udp(&[]);
    wait_for("the queue to go on", Duration::from_secs(20), || {
        let dq = &n.status()["dequeue"];
        (dq["actions_run"] == 1 && dq["actions_failed"] == 2).then_some(())
    });
    let elapsed = t.elapsed();
    eprintln!("hung action killed and the queue done in {elapsed:?}");
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
    assert_eq!(n.status()["dequeue"]["actions_timed_out"], 1);
    let out = n.try_nodemgr(&["get", "--param", "node.itest.addr"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ran");
    let failed = dir.join("failed");
    let err = std::fs::read_to_string(failed.join("01-hang.err")).unwrap();
    assert!(err.contains("timed out"), "{err}");
    assert!(
        std::fs::read_to_string(failed.join("01-hang"))
            .unwrap()
            .contains("daemon")
    );
    assert_eq!(
        std::fs::read_to_string(failed.join("02-bad")).unwrap(),
        "not json"
    );
    assert!(
        std::fs::read_to_string(failed.join("02-bad.err"))
            .unwrap()
            .contains("not a JSON array")
    );
    assert!(
        n.log()
            .contains("queued action timed out; its process group was killed")
    );
    // The hung daemon is gone: its socket no longer answers.
    let sock = std::path::Path::new(other).join("var/lsnr.sock");
    assert!(std::os::unix::net::UnixStream::connect(sock).is_err());
}

// ---------------------------------------------------------------------------------------
// Hostile network and local faults: one test per hole, each load bounded in count and time.

/// A member's `daemon_stop` recorded on the wire, replayed right after the daemon restarted,
/// is refused: its timestamp is earlier than the new process's start.
#[test]
fn replayed_daemon_stop_after_a_restart_is_refused() {
    let mut n = Node::start(Opts::default());
    let mut p1 = peer("peer1");
    let stop = frame(
        &mut p1,
        Kind::Request,
        &Request::DaemonStop { thread_id: None }.to_vec(),
    );
    let status = frame(&mut p1, Kind::Request, &Request::DaemonStatus.to_vec());
    assert_eq!(
        open_as("peer1", tcp_request(n.addr(), &stop).unwrap()).status,
        0
    );
    let mut old = n.child.take().unwrap();
    let t = std::time::Instant::now();
    while old.try_wait().unwrap().is_none() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the daemon did not stop"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    n.spawn(&[]);
    let restarted = std::time::Instant::now();
    // Both recorded frames, replayed over TCP and UDP within a second of the restart.
    assert_eq!(tcp_request(n.addr(), &stop), None, "closed, not executed");
    assert_eq!(tcp_request(n.addr(), &status), None);
    n.udp(&stop);
    wait_for("the replays refused", Duration::from_secs(10), || {
        (n.invalid("before_start") == 3).then_some(())
    });
    assert!(restarted.elapsed() < Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(n.status()["nodename"], "n1", "the new daemon still runs");
    assert_eq!(
        n.counter("decrypted"),
        0,
        "nothing recorded was even decrypted"
    );
    // The member's fresh frames are served.
    let f = frame(
        &mut peer("peer1"),
        Kind::Request,
        &Request::DaemonStatus.to_vec(),
    );
    assert_eq!(
        open_as("peer1", tcp_request(n.addr(), &f).unwrap()).status,
        0
    );
}

/// Truncated and kind-4 datagrams under 50,000 made-up names leave the blacklist empty; a
/// member's five bad frames still ban it afterwards; a member's count below the ban is
/// forgotten after `blacklist_ttl`, and so is the ban.
#[test]
fn random_name_flood_fills_no_blacklist() {
    let n = Node::start(Opts {
        extra: "blacklist_ttl = 2s\n",
        ..Default::default()
    });
    let s = UdpSocket::bind((n.ip, 0)).unwrap();
    let template = frame(&mut peer("peer1"), Kind::Heartbeat, b"{}");
    let t = std::time::Instant::now();
    let mut sent = 0u64;
    for i in 0..50_000u32 {
        let name = format!("{i:08x}");
        let mut f = vec![1, if i % 2 == 0 { 4 } else { 3 }, 8];
        f.extend_from_slice(name.as_bytes());
        // Kind 4 whole; kind 3 truncated within its header.
        f.extend_from_slice(&template[3 + 5..if i % 2 == 0 { template.len() } else { 20 }]);
        if s.send_to(&f, n.addr()).is_ok() {
            sent += 1;
        }
        // Paced a little, so that the receive buffer holds them (bounded: under 10 s).
        if i % 2_000 == 1_999 {
            std::thread::sleep(Duration::from_millis(5));
        }
        if t.elapsed() > Duration::from_secs(10) {
            break;
        }
    }
    let received = wait_for("the flood read", Duration::from_secs(20), || {
        let r = n.counter("received");
        std::thread::sleep(Duration::from_millis(200));
        (r == n.counter("received")).then_some(r)
    });
    let bl = n.nodemgr(&["daemon", "blacklist", "status", "--format", "json"]);
    eprintln!(
        "{sent} flood datagrams sent, {received} received; blacklist_status {} bytes",
        bl.trim().len()
    );
    // The kernel drops what a loaded machine's receiver does not read in time: thousands of
    // distinct names read are enough to show that none of them enters the blacklist.
    assert!(received >= 5_000.min(sent), "{received} of {sent}");
    assert_eq!(bl.trim(), r#"{"data": {}, "status": 0}"#);
    // A member's five bad frames: banned, the flood notwithstanding.
    let mut forger = Sealer::new(b"wrong secret", CLUSTER, "peer1", now_ms());
    for _ in 0..5 {
        n.udp(&heartbeat(&mut forger));
    }
    let mut forger2 = Sealer::new(b"wrong secret", CLUSTER, "peer2", now_ms());
    n.udp(&heartbeat(&mut forger2));
    wait_for(
        "peer1 banned, peer2 counted",
        Duration::from_secs(10),
        || {
            let b = n.json(&["daemon", "blacklist", "status"]);
            (b["data"]["peer1"] == 5 && b["data"]["peer2"] == 1).then_some(())
        },
    );
    let banned_at = std::time::Instant::now();
    // Both forgotten after the TTL, without a new strike.
    wait_for("the TTL", Duration::from_secs(10), || {
        let b = n.json(&["daemon", "blacklist", "status"]);
        (b["data"] == serde_json::json!({})).then_some(())
    });
    assert!(banned_at.elapsed() < Duration::from_secs(5));
    let mut p1 = peer("peer1");
    n.udp(&heartbeat(&mut p1));
    wait_for("peer1 served again", Duration::from_secs(10), || {
        (n.status()["peers"]["peer1"]["status"] == "up").then_some(())
    });
}

/// Authenticated requests with an unknown action or a wrong option are answered with an
/// error that names the problem, on the same connection, and never count as invalid: ten in a
/// row ban nobody.
fn typos_are_answered_and_never_ban_a_member(backend: &str) {
    let n = Node::start(Opts {
        backend,
        ..Default::default()
    });
    let mut p1 = peer("peer1");
    let mut c = TcpStream::connect(n.addr()).unwrap();
    for i in 0..10 {
        let payload: &[u8] = if i % 2 == 0 {
            br#"{"action":"daemon_stauts"}"#
        } else {
            br#"{"action":"clear","options":{"svcname":"a","svc":"b"}}"#
        };
        let f = frame(&mut p1, Kind::Request, payload);
        let r = open_as("peer1", request_on(&mut c, &f).expect("answered"));
        assert_ne!(r.status, 0);
        let error = r.error.unwrap();
        let named = if i % 2 == 0 { "daemon_stauts" } else { "svc" };
        assert!(error.contains(named), "{error}");
    }
    let f = frame(&mut p1, Kind::Request, &Request::DaemonStatus.to_vec());
    assert_eq!(open_as("peer1", request_on(&mut c, &f).unwrap()).status, 0);
    // A heartbeat of the wrong shape is dropped and counted, not invalid either.
    n.udp(&frame(&mut p1, Kind::Heartbeat, br#"{"gen":"one"}"#));
    wait_for("the heartbeat refused", Duration::from_secs(10), || {
        (n.status()["heartbeats"]["refused"] == 1).then_some(())
    });
    let counters = &n.status()["listener"]["counters"];
    assert_eq!(counters["invalid_total"], 0);
    assert_eq!(counters["requests_refused"], 10);
    assert_eq!(
        n.json(&["daemon", "blacklist", "status"])["data"],
        serde_json::json!({})
    );
}

/// 4,096 idle connections held open from one address, and more from the member's own
/// address, under the default limits: a member's request is answered within 100 ms.
fn idle_connection_flood_does_not_lock_members_out(backend: &str) {
    use osvc_agent::internals::client::connect_from;
    let n = Node::start(Opts {
        backend,
        ..Default::default()
    });
    let t = std::time::Instant::now();
    let mut idle = Vec::with_capacity(4_200);
    for i in 0..4_096 + 100 {
        // The last hundred from the member's own address.
        let from = if i < 4_096 { "127.0.0.9" } else { "127.0.0.1" };
        if let Ok(c) = connect_from(from.parse().unwrap(), &n.addr(), Duration::from_secs(2)) {
            idle.push(c);
        }
        assert!(t.elapsed() < Duration::from_secs(30), "connects too slow");
    }
    assert!(idle.len() >= 4_096, "{} connected", idle.len());
    // connect() returns once the kernel has the connection, before the daemon accepts it:
    // the flood is in place when every connection went through admission.
    wait_for("the flood admitted", Duration::from_secs(20), || {
        let c = &n.status()["listener"]["counters"];
        let seen = c["tcp_accepted"].as_u64()? + c["tcp_refused"].as_u64()?;
        (seen >= idle.len() as u64).then_some(())
    });
    let counters = n.status()["listener"]["counters"].clone();
    eprintln!(
        "{backend}: {} idle connections made in {:?}; open {}, evicted {}",
        idle.len(),
        t.elapsed(),
        counters["tcp_open"],
        counters["tcp_evicted"]
    );
    let mut p1 = peer("peer1");
    let mut worst = Duration::ZERO;
    for _ in 0..10 {
        let f = frame(&mut p1, Kind::Request, &Request::DaemonStatus.to_vec());
        let t = std::time::Instant::now();
        let r = tcp_request(n.addr(), &f).expect("the member is answered");
        worst = worst.max(t.elapsed());
        assert_eq!(open_as("peer1", r).status, 0);
    }
    eprintln!("{backend}: member's worst latency with the flood held open: {worst:?}");
    // The 100 ms target is a measure (printed above), not a timed assertion on a shared
    // machine: what must hold is that every request is answered, never refused or queued
    // behind the flood for a read timeout.
    assert!(worst < Duration::from_secs(2), "{worst:?}");
    let open = n.status()["listener"]["counters"]["tcp_open"]
        .as_u64()
        .unwrap();
    assert!(
        open <= 2 * 32 + 1,
        "{open} open: the per-address limit holds"
    );
    // The cap itself: 4,096 idle connections from 128 addresses, 32 each, fill the table;
    // a member's connection takes the place of the idlest.
    drop(idle);
    let t = std::time::Instant::now();
    let mut idle = Vec::with_capacity(4_096);
    for i in 0..4_096 {
        let from = format!("127.0.2.{}", i / 32);
        if let Ok(c) = connect_from(from.parse().unwrap(), &n.addr(), Duration::from_secs(2)) {
            idle.push(c);
        }
        assert!(t.elapsed() < Duration::from_secs(30), "connects too slow");
    }
    wait_for("the table full", Duration::from_secs(20), || {
        let open = n.status()["listener"]["counters"]["tcp_open"].as_u64();
        (open >= Some(4_000)).then_some(())
    });
    let mut worst = Duration::ZERO;
    for _ in 0..10 {
        let f = frame(&mut p1, Kind::Request, &Request::DaemonStatus.to_vec());
        let t = std::time::Instant::now();
        let r = tcp_request(n.addr(), &f).expect("the member is answered at the cap");
        worst = worst.max(t.elapsed());
        assert_eq!(open_as("peer1", r).status, 0);
    }
    let counters = n.status()["listener"]["counters"].clone();
    eprintln!(
        "{backend}: at the cap ({} open), member's worst latency {worst:?}",
        counters["tcp_open"]
    );
    // The 100 ms target is a measure (printed above), not a timed assertion on a shared
    // machine: what must hold is that every request is answered, never refused or queued
    // behind the flood for a read timeout.
    assert!(worst < Duration::from_secs(2), "{worst:?}");
    assert!(counters["tcp_open"].as_u64().unwrap() <= 4_096);
}

/// Frames from unknown or stale senders are closed after their header, a frame announcing
/// more than max_unauth_frame at its length, and many connections holding partial frames
/// cost the daemon little memory.
fn unauthenticated_frames_are_not_buffered(backend: &str) {
    use osvc_agent::internals::client::connect_from;
    use std::io::{Read, Write};
    let n = Node::start(Opts {
        backend,
        ..Default::default()
    });
    let pid = n.child.as_ref().unwrap().id();
    let rss_kib = || {
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap()
    };
    let closed_soon = |c: &mut TcpStream| {
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut b = [0u8; 1];
        matches!(c.read(&mut b), Ok(0))
            || matches!(c.read(&mut b), Err(e) if e.kind() != std::io::ErrorKind::WouldBlock)
    };
    // 1 MiB announced: closed at the length, before any of it.
    let mut c = TcpStream::connect(n.addr()).unwrap();
    c.write_all(&(1u32 << 20).to_be_bytes()).unwrap();
    let t = std::time::Instant::now();
    assert!(closed_soon(&mut c));
    // Well before the 10 s read timeout it would otherwise wait for.
    assert!(t.elapsed() < Duration::from_secs(5));
    // A stranger's 60 KiB frame (not a join: a heartbeat), and a stale member's: closed after
    // the header, long before the read timeout, the body unread.
    let body = vec![b' '; 60 * 1024];
    let stranger = frame(&mut peer("stranger"), Kind::Heartbeat, &body);
    let mut old = Sealer::new(SECRET.as_bytes(), CLUSTER, "peer1", now_ms() - 3_600_000);
    let mut stale = Vec::new();
    old.seal(Kind::Heartbeat, &body, now_ms() - 3_600_000, &mut stale)
        .unwrap();
    for f in [&stranger, &stale] {
        let mut c = TcpStream::connect(n.addr()).unwrap();
        c.write_all(&(f.len() as u32).to_be_bytes()).unwrap();
        c.write_all(&f[..100]).unwrap();
        let t = std::time::Instant::now();
        assert!(closed_soon(&mut c), "closed after the header");
        assert!(t.elapsed() < Duration::from_secs(5));
    }
    // 512 connections from 16 addresses, each holding all but the last byte of a 64 KiB
    // frame under a member's name (its header passes: names travel in clear): the daemon
    // holds at most max_unauth_frame for each.
    let before = rss_kib();
    let mut forger = Sealer::new(b"forged", CLUSTER, "peer2", now_ms());
    let mut held = Vec::new();
    let f = frame(&mut forger, Kind::Heartbeat, &vec![b' '; 64 * 1024 - 200]);
    for i in 0..512 {
        let from = format!("127.0.1.{}", 1 + i / 32);
        let mut c = connect_from(from.parse().unwrap(), &n.addr(), Duration::from_secs(2)).unwrap();
        c.write_all(&(f.len() as u32).to_be_bytes()).unwrap();
        c.write_all(&f[..f.len() - 1]).unwrap();
        held.push(c);
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_kib();
    eprintln!(
        "{backend}: RSS {before} KiB -> {after} KiB with 512 connections holding a 64 KiB frame \
         each ({} KiB more)",
        after.saturating_sub(before)
    );
    assert!(after < before + 96 * 1024, "{before} -> {after} KiB");
    let open = n.status()["listener"]["counters"]["tcp_open"]
        .as_u64()
        .unwrap();
    assert!(open <= 512, "{open}");
    drop(held);
    assert_eq!(n.status()["listener"]["counters"]["tcp_closed_length"], 1);
}

/// `arbitrator_vote`, sealed as `nodename`, to `n`: the response.
fn ask_vote(n: &Node, nodename: &str, partition: &[&str]) -> osvc_agent::internals::wire::Response {
    ask_vote_for(n, nodename, partition, None)
}

fn ask_vote_for(
    n: &Node,
    nodename: &str,
    partition: &[&str],
    hold_ms: Option<u64>,
) -> osvc_agent::internals::wire::Response {
    let mut s = peer(nodename);
    let request = Request::ArbitratorVote {
        partition: partition.iter().map(|p| p.to_string()).collect(),
        hold_ms,
    };
    let f = frame(&mut s, Kind::Request, &request.to_vec());
    open_as(nodename, tcp_request(n.addr(), &f).expect("answered"))
}

/// An arbitrator grants its vote to one partition of its members at a time; it refuses
/// strangers, names outside the cluster, and local callers; a plain member is no arbitrator.
#[test]
fn an_arbitrator_grants_its_vote_to_one_partition() {
    let arb = Node::start(Opts {
        name: "arb",
        nodes: "peer1 peer2",
        extra: "[arbitrator]\nserve = true\nlease = 5s\n",
        ..Default::default()
    });
    let r = ask_vote(&arb, "peer1", &["peer1", "peer2"]);
    assert_eq!(r.status, 0, "{:?}", r.error);
    let d = r.data.unwrap();
    assert_eq!(d["granted"], true, "{d}");
    assert_eq!(d["holders"], serde_json::json!(["peer1"]));
    assert_eq!(
        (d["lease_ms"].as_u64(), d["expires_in_ms"].as_u64()),
        (Some(5000), Some(5000))
    );
    // Cut off from peer1, which holds the vote: refused until peer1's grant expires.
    let d = ask_vote(&arb, "peer2", &["peer2"]).data.unwrap();
    assert_eq!(d["granted"], false, "{d}");
    assert_eq!(d["holders"], serde_json::json!(["peer1"]));
    assert!(d["expires_in_ms"].as_u64().unwrap() <= 5000, "{d}");
    // Same partition: granted too.
    let d = ask_vote(&arb, "peer2", &["peer1", "peer2"]).data.unwrap();
    assert_eq!(d["granted"], true, "{d}");
    assert_eq!(d["holders"], serde_json::json!(["peer1", "peer2"]));
    let holders = arb.status()["quorum"]["vote_holders"].clone();
    assert!(
        holders["peer1"].as_u64().is_some() && holders["peer2"].as_u64().is_some(),
        "{holders}"
    );

    // A member whose daemon stops asks for its maintenance grace period.
    let d = ask_vote_for(&arb, "peer1", &["peer1", "peer2"], Some(60_000))
        .data
        .unwrap();
    assert_eq!(
        (d["granted"].as_bool(), d["expires_in_ms"].as_u64()),
        (Some(true), Some(60_000))
    );

    let r = ask_vote(&arb, "peer1", &["peer1", "n9"]);
    assert!(r.error.unwrap().contains("\"n9\" is not a member"));
    let r = ask_vote(&arb, "stranger", &["stranger"]);
    assert!(r.error.unwrap().contains("not a cluster member"));
    let r = arb.raw(r#"{"action":"arbitrator_vote","options":{"partition":["peer1"]}}"#);
    assert_ne!(r["status"], 0);
    assert!(
        r["error"].as_str().unwrap().contains("asked by a member"),
        "{r}"
    );

    let member = Node::start(Opts::default());
    let r = ask_vote(&member, "peer1", &["peer1"]);
    assert!(r.error.unwrap().contains("not an arbitrator"));
}

/// The value of one series of a Prometheus text, read by a strict parser of the format (a
/// text it cannot parse fails the test).
fn metric(text: &str, name: &str, label: Option<(&str, &str)>) -> Option<f64> {
    let scrape = prom_text_format_parser::Scrape::parse(text)
        .unwrap_or_else(|e| panic!("not the Prometheus text format: {e:?}\n{text}"));
    let family = scrape.metrics.iter().find(|m| m.name == name)?;
    let sample = family
        .samples
        .iter()
        .find(|s| label.is_none_or(|(k, v)| s.labels.iter().any(|l| l.key == k && l.value == v)))?;
    Some(sample.value.value.as_f64())
}

/// One HTTP/1.1 request; the status line, the headers and the body.
fn http(addr: SocketAddr, request: &str) -> (String, String, String) {
    use std::io::{Read, Write};
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    c.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_string(), headers.to_string(), body.to_string())
}

fn scrape(addr: SocketAddr) -> String {
    let (status, headers, body) = http(
        addr,
        "GET /metrics HTTP/1.1\r\nHost: osvc\r\nAccept: text/plain\r\n\r\n",
    );
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        headers.contains("Content-Type: text/plain; version=0.0.4"),
        "{headers}"
    );
    body
}

#[test]
fn metrics_from_the_cli_and_over_http_move_with_the_traffic() {
    // First on an address already taken: the daemon says why and runs on.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap();
    let n = Node::start(Opts {
        extra: &format!("[metrics]\naddr = {taken_addr}\n"),
        ..Default::default()
    });
    let metrics_thread = &n.status()["threads"]["metrics"];
    assert!(
        metrics_thread["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot serve metrics")),
        "{metrics_thread}"
    );
    assert!(
        metrics_thread["last_error_ms"].as_u64() > Some(0),
        "when it happened: {metrics_thread}"
    );
    assert!(
        n.log()
            .contains(&format!("cannot serve metrics on {taken_addr}"))
    );

    let mut forger = Sealer::new(b"wrong secret", CLUSTER, "peer1", now_ms());
    for _ in 0..2 {
        n.udp(&heartbeat(&mut forger));
    }
    let mut p2 = peer("peer2");
    for _ in 0..3 {
        n.udp(&heartbeat(&mut p2));
    }
    // Each listener worker counts the frames it took: the forgeries and the heartbeats may
    // be counted by two of them, so both counts are waited for.
    let text = wait_for("the frames counted", Duration::from_secs(10), || {
        let text = n.nodemgr(&["daemon", "metrics"]);
        let invalid = metric(
            &text,
            "osvc_listener_invalid_total",
            Some(("class", "decrypt")),
        );
        (metric(&text, "osvc_peer_heartbeats_total", Some(("peer", "peer2"))) == Some(3.0)
            && invalid >= Some(2.0))
        .then_some(text)
    });
    assert_eq!(
        metric(
            &text,
            "osvc_listener_invalid_total",
            Some(("class", "decrypt"))
        ),
        Some(2.0)
    );
    assert!(metric(&text, "osvc_listener_received_total", None) >= Some(5.0));
    assert_eq!(
        metric(&text, "osvc_members", Some(("state", "up"))),
        Some(1.0)
    );
    assert_eq!(
        metric(&text, "osvc_members", Some(("state", "never seen"))),
        Some(1.0),
        "peer1 sent nothing that authenticated"
    );
    assert!(
        metric(
            &text,
            "osvc_peer_heartbeat_age_seconds",
            Some(("peer", "peer2"))
        ) < Some(60.0)
    );
    assert!(text.contains("# TYPE osvc_listener_received_total counter"));
    assert!(text.contains("# HELP osvc_listener_received_total "));
    // The same families as one JSON document.
    let json: serde_json::Value =
        serde_json::from_str(&n.nodemgr(&["daemon", "metrics", "--format", "json"]))
            .expect("one JSON document");
    let family = &json["data"]["osvc_listener_invalid_total"];
    assert_eq!(family["type"], "counter", "{json}");
    assert!(
        family["samples"].as_array().is_some_and(|s| s
            .iter()
            .any(|s| s["labels"]["class"] == "decrypt" && s["value"] == 2)),
        "{family}"
    );

    // Moved to a free address by a reload: served there.
    let port = free_port(n.ip);
    let addr = SocketAddr::new(n.ip, port);
    n.nodemgr(&[
        "set",
        "--param",
        "metrics.addr",
        "--value",
        &addr.to_string(),
    ]);
    wait_for("metrics served", Duration::from_secs(10), || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(200))
            .ok()
            .map(drop)
    });
    let metrics_thread = &n.status()["threads"]["metrics"];
    assert_eq!(metrics_thread["state"], "running", "{metrics_thread}");
    let before = scrape(addr);
    let decrypt = |t: &str| metric(t, "osvc_listener_invalid_total", Some(("class", "decrypt")));
    assert_eq!(decrypt(&before), Some(2.0));
    n.udp(&heartbeat(&mut forger));
    n.udp(&heartbeat(&mut p2));
    // The two datagrams may reach two listener workers, whose counters move independently:
    // both are waited for.
    let after = wait_for("the scrape moves", Duration::from_secs(10), || {
        let t = scrape(addr);
        (metric(&t, "osvc_peer_heartbeats_total", Some(("peer", "peer2"))) == Some(4.0)
            && decrypt(&t) >= Some(3.0))
        .then_some(t)
    });
    assert_eq!(decrypt(&after), Some(3.0));

    let (status, _, _) = http(addr, "GET /other HTTP/1.1\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let (status, headers, _) = http(addr, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
    assert!(headers.contains("Allow: GET"));
    let (status, _, _) = http(
        addr,
        &format!("GET /{} HTTP/1.1\r\n\r\n", "x".repeat(20_000)),
    );
    assert_eq!(status, "HTTP/1.1 431 Request Header Fields Too Large");
    // A client that sends half a request and waits is cut off; the next one is served.
    let mut slow = TcpStream::connect(addr).unwrap();
    std::io::Write::write_all(&mut slow, b"GET /metr").unwrap();
    assert!(scrape(addr).contains("osvc_uptime_seconds"));
    drop(slow);
    drop(taken);
    // The bind failure is history once the thread has served a while (the log keeps it).
    wait_for("the old error dropped", Duration::from_secs(90), || {
        n.status()["threads"]["metrics"]
            .get("last_error")
            .is_none()
            .then_some(())
    });
}

#[test]
fn threads_with_nothing_to_do_show_idle() {
    let n = Node::start(Opts::default());
    let threads = &n.status()["threads"];
    assert_eq!(threads["metrics"]["state"], "idle", "{threads}");
    assert_eq!(threads["arbitrators"]["state"], "idle", "{threads}");
    assert_eq!(threads["listener"]["state"], "running", "{threads}");
    let table = n.nodemgr(&["daemon", "status"]);
    assert!(table.contains("metrics idle"), "{table}");
    // Given an address by a reload, it serves.
    let addr = SocketAddr::new(n.ip, free_port(n.ip));
    n.nodemgr(&[
        "set",
        "--param",
        "metrics.addr",
        "--value",
        &addr.to_string(),
    ]);
    wait_for("metrics running", Duration::from_secs(10), || {
        (n.status()["threads"]["metrics"]["state"] == "running").then_some(())
    });
}

/// A node hearing thousands of members still heartbeats: the list of members it sees is left
/// out of its heartbeats once it would crowd the payload (every part repeats the monitor),
/// instead of the heartbeat growing past a datagram and never going out.
#[test]
fn heartbeats_go_out_when_too_many_members_to_list() {
    const MEMBERS: usize = 2_400;
    let names: Vec<String> = (0..MEMBERS).map(|i| format!("member-{i:05}")).collect();
    // The watcher is a member at 127.0.0.9 on the daemon's port: the daemon's heartbeats to
    // it arrive on this socket.
    let ip = "127.0.0.1";
    let port = free_port_on(&["127.0.0.1", "127.0.0.9"]);
    let watcher = UdpSocket::bind(("127.0.0.9", port)).unwrap();
    watcher
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut extra =
        String::from("\n[hb]\ninterval = 200ms\ntimeout = 10s\n[node.watcher]\naddr = 127.0.0.9\n");
    for n in &names {
        extra.push_str(&format!("[node.{n}]\naddr = 127.0.0.254\n"));
    }
    let nodes = format!("n1 watcher {}", names.join(" "));
    let n = Node::start(Opts {
        ip,
        port: Some(port),
        nodes: &nodes,
        extra: &extra,
        ..Default::default()
    });
    // The monitor of the next heartbeat the watcher gets (within 5 s).
    let next_monitor = || -> serde_json::Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut buf = vec![0u8; 65_536];
        while std::time::Instant::now() < deadline {
            let Ok(len) = watcher.recv(&mut buf) else {
                continue;
            };
            let mut f = buf[..len].to_vec();
            let (nodename, salt) = {
                let v = FrameView::parse(&f).unwrap();
                (v.nodename().to_string(), *v.salt())
            };
            let key = SessionKey::derive(SECRET.as_bytes(), CLUSTER, &nodename, &salt);
            let range = key.open_in_place(&mut f).unwrap();
            let hb: serde_json::Value = serde_json::from_slice(&f[range]).unwrap();
            return hb["monitor"].clone();
        }
        panic!("no heartbeat from the daemon in 5 s");
    };
    assert!(next_monitor()["sees"].is_array(), "a short list is sent");
    // Every member heard once.
    let s = UdpSocket::bind((ip, 0)).unwrap();
    for (i, name) in names.iter().enumerate() {
        let _ = s.send_to(&heartbeat(&mut peer(name)), n.addr());
        if i % 200 == 199 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    wait_for("the members heard", Duration::from_secs(20), || {
        (n.json(&["daemon", "status"])["data"]["member_states"]["up"]
            .as_u64()
            .unwrap_or(0)
            > 2_000)
            .then_some(())
    });
    // Heartbeats keep going out, without the list.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut without = 0;
    while without < 3 && std::time::Instant::now() < deadline {
        let m = next_monitor();
        if m.get("sees").is_none() {
            without += 1;
        }
    }
    assert_eq!(without, 3, "heartbeats without the list still go out");
}
