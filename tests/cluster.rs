//! Several daemons forming one cluster: three nodes on 127.0.0.1, .2 and .3, one port.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

fn cluster(nodes: &str, count: usize) -> Vec<Node> {
    cluster_with(nodes, count, "")
}

/// A cluster whose node.conf adds `node_section` to `[node]`.
fn cluster_with(nodes: &str, count: usize, node_section: &str) -> Vec<Node> {
    cluster_of(nodes, count, &format!("{FAST}[node]\n{node_section}\n"))
}

/// Service `ha1` (`orchestrate = ha` on `svc_nodes`) on every node; its flag files.
fn ha_flags(nodes: &[Node], svc_nodes: &str, extra: &str) -> Vec<std::path::PathBuf> {
    nodes
        .iter()
        .map(|n| {
            n.flag_service(
                "ha1",
                &format!("nodes = {svc_nodes}\norchestrate = ha"),
                "",
                extra,
            )
        })
        .collect()
}

fn peer_status(n: &Node, peer: &str) -> Value {
    n.status()["peers"][peer].clone()
}

fn members(n: &Node) -> Vec<String> {
    serde_json::from_value(n.status()["cluster"]["nodes"].clone()).unwrap()
}

#[test]
fn heartbeats_converge() {
    let nodes = cluster("n1 n2 n3", 3);
    for n in &nodes {
        wait_for("both peers up", Duration::from_secs(10), || {
            let s = n.status();
            let others: Vec<&str> = ["n1", "n2", "n3"]
                .into_iter()
                .filter(|x| *x != n.name)
                .collect();
            others
                .iter()
                .all(|o| {
                    s["peers"][o]["status"] == "up" && s["peers"][o]["age_ms"].as_u64() < Some(1000)
                })
                .then_some(())
        });
    }
}

#[test]
fn join_through_a_member_then_leave() {
    let port = free_port_on(&CLUSTER_IPS);
    let start = |i, nodes, secret, extra| cluster_node(i, port, nodes, secret, extra);
    let n1 = start(0, "n1 n2", SECRET, FAST);
    let n2 = start(1, "n1 n2", SECRET, FAST);
    // The joiner has none of the cluster's settings: it takes them from the answer.
    let n3 = start(2, "n3", "not-yet-the-cluster-secret", "");
    // A wrong secret is refused like any invalid message, but a non-member's name is never
    // entered in the blacklist.
    let out = n3.try_nodemgr(&[
        "daemon",
        "join",
        "--secret",
        "wrong",
        "--node",
        "n1",
        "--cluster",
        CLUSTER,
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refused the join"));
    assert_eq!(n1.invalid("decrypt"), 1);
    assert_eq!(
        n1.json(&["daemon", "blacklist", "status"])["data"],
        serde_json::json!({})
    );
    assert!(!members(&n1).contains(&"n3".to_string()));
    // The right one, from a file, through the member's address.
    let secret_file = n3.root.join("cluster.secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let joined = n3.nodemgr(&[
        "daemon",
        "join",
        "--secret-file",
        secret_file.to_str().unwrap(),
        "--node",
        "127.0.0.1",
        "--cluster",
        CLUSTER,
    ]);
    assert!(joined.contains("joined cluster"), "{joined}");
    let conf = std::fs::read_to_string(n3.root.join("etc/node.conf")).unwrap();
    for line in [
        "interval = 500ms",
        "timeout = 2000ms",
        "[node.n1]\naddr = 127.0.0.1",
    ] {
        assert!(conf.contains(line), "{line:?} in {conf}");
    }
    for n in [&n1, &n2, &n3] {
        wait_for("n3 listed", Duration::from_secs(10), || {
            (members(n) == ["n1", "n2", "n3"]).then_some(())
        });
    }
    wait_for("n3 sees its peers", Duration::from_secs(10), || {
        (peer_status(&n3, "n1")["status"] == "up" && peer_status(&n3, "n2")["status"] == "up")
            .then_some(())
    });
    wait_for("n2 hears n3", Duration::from_secs(10), || {
        (peer_status(&n2, "n3")["status"] == "up").then_some(())
    });
    // At the cluster's pace: never stale between two beats.
    for _ in 0..6 {
        std::thread::sleep(Duration::from_millis(500));
        let p = peer_status(&n1, "n3");
        assert_eq!(p["status"], "up", "{p}");
        assert!(p["age_ms"].as_u64().unwrap() < 1500, "{p}");
    }
    // Leave.
    n3.nodemgr(&["daemon", "leave"]);
    for n in [&n1, &n2] {
        wait_for("n3 gone", Duration::from_secs(10), || {
            (members(n) == ["n1", "n2"]).then_some(())
        });
    }
    wait_for("n3 alone", Duration::from_secs(10), || {
        (members(&n3) == ["n3"]).then_some(())
    });
}

fn ha_service(n: &Node, name: &str) -> std::path::PathBuf {
    n.flag_service(name, "nodes = n2 n1 n3\norchestrate = ha", "", "")
}

#[test]
fn killed_node_goes_stale_and_its_ha_service_moves() {
    let mut nodes = cluster("n1 n2 n3", 3);
    let flags: Vec<_> = nodes.iter().map(|n| ha_service(n, "ha1")).collect();
    for n in &nodes {
        wait_for("peers up", Duration::from_secs(10), || {
            (n.status()["peers"].as_object().map(|p| p.len()) == Some(2)).then_some(())
        });
    }
    nodes[0].svcmgr("ha1", &["set", "monitor", "--global-expect", "started"]);
    wait_for(
        "ha1 runs on n2, its first node",
        Duration::from_secs(15),
        || flags[1].exists().then_some(()),
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !flags[0].exists() && !flags[2].exists(),
        "one instance only"
    );
    nodes[1].kill();
    let n1 = &nodes[0];
    wait_for("n2 stale on n1", Duration::from_secs(5), || {
        (peer_status(n1, "n2")["status"] == "stale").then_some(())
    });
    wait_for("ha1 moved to n1", Duration::from_secs(10), || {
        flags[0].exists().then_some(())
    });
    assert!(!flags[2].exists(), "n3 leaves it to n1");
    let logs = n1.svcmgr("ha1", &["logs", "--backlog", "100"]);
    assert!(logs.contains("global_expect started: start"), "{logs}");
    assert!(
        logs.contains("node n2 did not answer"),
        "aggregated logs name the dead node: {logs}"
    );
}

#[test]
fn stopped_node_shows_maintenance_not_stale() {
    let nodes = cluster("n1 n2 n3", 3);
    wait_for("n2 up on n1", Duration::from_secs(10), || {
        (peer_status(&nodes[0], "n2")["status"] == "up").then_some(())
    });
    nodes[1].nodemgr(&["daemon", "stop"]);
    wait_for("maintenance", Duration::from_secs(10), || {
        (peer_status(&nodes[0], "n2")["status"] == "maintenance").then_some(())
    });
    // Past hb.timeout it is still maintenance, not stale.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(peer_status(&nodes[0], "n2")["status"], "maintenance");
    assert_eq!(peer_status(&nodes[2], "n2")["status"], "maintenance");
}

#[test]
fn aggregated_logs_merge_every_node_in_time_order() {
    let nodes = cluster("n1 n2", 2);
    for n in &nodes {
        n.flag_service("agg", "nodes = n1 n2", "", "");
    }
    nodes[0].svcmgr("agg", &["start"]);
    nodes[1].svcmgr("agg", &["start"]);
    nodes[0].svcmgr("agg", &["clear"]);
    let out = nodes[0].svcmgr("agg", &["logs", "--backlog", "100", "--format", "json"]);
    let records: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let from = |node: &str| records.iter().filter(|r| r["node"] == node).count();
    assert!(from("n1") >= 3 && from("n2") >= 3, "{out}");
    let times: Vec<u64> = records
        .iter()
        .map(|r| r["time"].as_u64().unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "time order: {times:?}"
    );
    // Asked over the network, a node answers with its own records only.
    let remote = nodes[0].svcmgr(
        "agg",
        &[
            "--node",
            "n2",
            "logs",
            "--backlog",
            "100",
            "--format",
            "json",
        ],
    );
    assert!(
        remote.lines().all(|l| l.contains("\"node\":\"n2\"")),
        "{remote}"
    );
}

/// Which of `flags` exist, as node names.
fn running_on(nodes: &[Node], flags: &[std::path::PathBuf]) -> Vec<String> {
    nodes
        .iter()
        .zip(flags)
        .filter(|(_, f)| f.exists())
        .map(|(n, _)| n.name.clone())
        .collect()
}

/// Every node sees every other one up.
fn wait_converged(nodes: &[Node]) {
    for n in nodes {
        wait_for("every peer up", Duration::from_secs(15), || {
            nodes
                .iter()
                .filter(|o| o.name != n.name)
                .all(|o| peer_status(n, &o.name)["status"] == "up")
                .then_some(())
        });
    }
}

/// Watches `flags` for `span`, every 20 ms: returns the longest time ha1 ran on two nodes
/// and the longest it ran nowhere.
fn watch(
    nodes: &[Node],
    flags: &[std::path::PathBuf],
    span: Duration,
) -> (Duration, Duration, Vec<String>) {
    let start = std::time::Instant::now();
    let (mut twice, mut nowhere) = (Duration::ZERO, Duration::ZERO);
    let (mut twice_since, mut nowhere_since) = (None, None);
    let mut seen = Vec::new();
    while start.elapsed() < span {
        let on = running_on(nodes, flags);
        let now = std::time::Instant::now();
        match on.len() {
            0 => {
                let s = *nowhere_since.get_or_insert(now);
                nowhere = nowhere.max(now - s);
            }
            _ => nowhere_since = None,
        }
        if on.len() > 1 {
            let s = *twice_since.get_or_insert(now);
            twice = twice.max(now - s);
        } else {
            twice_since = None;
        }
        for n in on {
            if !seen.contains(&n) {
                seen.push(n);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (twice, nowhere, seen)
}

/// `daemon stop` announces maintenance with the instances as they run: no peer takes over
/// while the grace period lasts; past it without a heartbeat, the node is stale and its
/// service moves (the host was powered off after its agent was stopped).
#[test]
fn stopped_node_keeps_its_ha_service_until_the_maintenance_grace_expires() {
    let mut nodes = cluster_with("n1 n2 n3", 3, "maintenance_grace_period = 5s");
    let flags = ha_flags(&nodes, "n1 n2 n3", "");
    wait_converged(&nodes);
    nodes[0].svcmgr("ha1", &["set", "monitor", "--global-expect", "started"]);
    wait_for("ha1 on n1", Duration::from_secs(15), || {
        flags[0].exists().then_some(())
    });
    let stopped = std::time::Instant::now();
    nodes[0].nodemgr(&["daemon", "stop"]);
    wait_for("maintenance on n2", Duration::from_secs(5), || {
        (peer_status(&nodes[1], "n1")["status"] == "maintenance").then_some(())
    });
    eprintln!("stop -> maintenance seen by n2: {:?}", stopped.elapsed());
    let n1 = peer_status(&nodes[1], "n1");
    assert_eq!(
        n1["services"]["ha1"]["avail"], "up",
        "instances as they run: {n1}"
    );
    assert!(nodes[0].wait_exit(Duration::from_secs(5)), "daemon exited");
    assert!(!nodes[0].root.join("var/lsnr.sock").exists());
    assert!(!nodes[0].root.join("var/osvcd.pid").exists());
    // Past hb.timeout and several monitor ticks: still only on n1.
    let (twice, _, seen) = watch(&nodes, &flags, Duration::from_millis(3500));
    assert_eq!(twice, Duration::ZERO, "never on two nodes");
    assert_eq!(
        seen,
        ["n1"],
        "nothing taken over from a node in maintenance"
    );
    // The host goes away with its instance: past the grace period it is stale.
    std::fs::remove_file(&flags[0]).unwrap();
    wait_for("n1 stale on n2", Duration::from_secs(5), || {
        (peer_status(&nodes[1], "n1")["status"] == "stale").then_some(())
    });
    wait_for("ha1 taken over by n2", Duration::from_secs(5), || {
        flags[1].exists().then_some(())
    });
    eprintln!("stop -> takeover after the grace: {:?}", stopped.elapsed());
    assert!(stopped.elapsed() >= Duration::from_secs(5));
    assert!(!flags[2].exists());
}

/// SIGTERM is `daemon stop`: maintenance, socket and pid file removed, exit within 5 s,
/// instances untouched. SIGHUP re-reads node.conf.
#[test]
fn sigterm_stops_like_daemon_stop_and_sighup_reloads() {
    let mut nodes = cluster("n1 n2", 2);
    let flags = ha_flags(&nodes, "n1 n2", "");
    let plain = nodes[0].flag_service("web", "nodes = n1", "", "");
    wait_converged(&nodes);
    nodes[0].svcmgr("web", &["start"]);
    nodes[0].svcmgr("ha1", &["set", "monitor", "--global-expect", "started"]);
    wait_for("ha1 on n1", Duration::from_secs(15), || {
        flags[0].exists().then_some(())
    });
    // SIGHUP: a changed node.conf is applied at once (its mtime kept, so only the signal
    // can tell the daemon).
    let conf = nodes[0].root.join("etc/node.conf");
    let mtime = std::fs::metadata(&conf).unwrap().modified().unwrap();
    let text = std::fs::read_to_string(&conf).unwrap();
    // The members in another order: the same length, and what daemon status shows.
    std::fs::write(&conf, text.replace("nodes = n1 n2", "nodes = n2 n1")).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&conf)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    // Unchanged stamp: the poller does not see it.
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(members(&nodes[0]), ["n1", "n2"]);
    nodes[0].signal(libc::SIGHUP);
    wait_for("node.conf re-read", Duration::from_secs(5), || {
        (members(&nodes[0]) == ["n2", "n1"]).then_some(())
    });
    assert!(
        nodes[0].try_nodemgr(&["daemon", "status"]).status.success(),
        "alive"
    );

    let t = std::time::Instant::now();
    nodes[0].signal(libc::SIGTERM);
    assert!(
        nodes[0].wait_exit(Duration::from_secs(5)),
        "exit within 5 s"
    );
    eprintln!("SIGTERM -> exit: {:?}", t.elapsed());
    assert!(!nodes[0].root.join("var/lsnr.sock").exists());
    assert!(!nodes[0].root.join("var/osvcd.pid").exists());
    assert!(flags[0].exists() && plain.exists(), "instances untouched");
    let log = nodes[0].log();
    assert!(log.contains("signal received"), "{log}");
    assert!(!log.contains('\x1b'), "no colour codes in a log file");
    assert_eq!(peer_status(&nodes[1], "n1")["status"], "maintenance");
    let (_, _, seen) = watch(&nodes, &flags, Duration::from_millis(3000));
    assert_eq!(seen, ["n1"], "no takeover");
}

/// `daemon shutdown` stops every local instance, reports it, then announces maintenance:
/// with its instance stopped, the ha service moves.
#[test]
fn shutdown_stops_the_instances_then_the_service_moves() {
    let mut nodes = cluster("n1 n2", 2);
    let flags = ha_flags(&nodes, "n1 n2", "");
    let web = nodes[0].flag_service("web", "nodes = n1", "", "");
    let idle = nodes[0].flag_service("idle", "nodes = n1", "", "");
    let stuck = nodes[0].flag_service("stuck", "nodes = n1", "", "");
    // A stop that fails: its resource's stop command exits 1.
    std::fs::write(
        nodes[0].root.join("etc/stuck.conf"),
        format!(
            "[DEFAULT]\nnodes = n1\n[app#1]\nstart = touch {f}\nstop = exit 1\ncheck = test -f {f}\n",
            f = stuck.display()
        ),
    )
    .unwrap();
    wait_converged(&nodes);
    nodes[0].svcmgr("web", &["start"]);
    nodes[0].svcmgr("stuck", &["start"]);
    nodes[0].svcmgr("ha1", &["set", "monitor", "--global-expect", "started"]);
    wait_for("ha1 on n1", Duration::from_secs(15), || {
        flags[0].exists().then_some(())
    });
    let out = nodes[0].try_nodemgr(&["daemon", "shutdown", "--format", "json"]);
    assert!(!out.status.success(), "a failed stop makes it fail");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let data = &report["data"];
    let mut stopped: Vec<String> = serde_json::from_value(data["stopped"].clone()).unwrap();
    stopped.sort();
    assert_eq!(stopped, ["ha1", "web"], "{report}");
    assert_eq!(data["not_running"], serde_json::json!(["idle"]), "{report}");
    assert!(
        data["failed"]["stuck"].as_str().unwrap().contains("code 1"),
        "{report}"
    );
    assert!(!web.exists() && !flags[0].exists() && !idle.exists());
    assert!(nodes[0].wait_exit(Duration::from_secs(5)));
    assert_eq!(peer_status(&nodes[1], "n1")["status"], "maintenance");
    wait_for("ha1 moved to n2", Duration::from_secs(10), || {
        flags[1].exists().then_some(())
    });
}

/// A node killed and restarted while its ha service runs elsewhere starts nothing before it
/// has heard its peers: the service never runs on two nodes, never stops where it runs. A
/// node that comes back does not take it back (no failback). An instance left running by a
/// killed daemon is found twice and stopped on all nodes but one.
#[test]
fn restart_after_kill_never_runs_a_failover_service_twice() {
    let mut nodes = cluster("n1 n2 n3", 3);
    let flags = ha_flags(&nodes, "n1 n2 n3", "");
    wait_converged(&nodes);
    // n1, first of the service's nodes, frozen: ha1 starts on n2.
    nodes[0].nodemgr(&["freeze"]);
    nodes[1].svcmgr("ha1", &["set", "monitor", "--global-expect", "started"]);
    wait_for("ha1 on n2", Duration::from_secs(15), || {
        flags[1].exists().then_some(())
    });
    nodes[0].nodemgr(&["thaw"]);
    let (twice, nowhere, seen) = watch(&nodes, &flags, Duration::from_millis(1500));
    assert_eq!(seen, ["n2"], "no failback to n1 when it thaws");
    assert_eq!((twice, nowhere), (Duration::ZERO, Duration::ZERO));

    // kill -9 of n1 (which does not run it), restarted at once.
    nodes[0].kill();
    let restarted = std::time::Instant::now();
    nodes[0].spawn(&[]);
    let (twice, nowhere, seen) = watch(&nodes, &flags, Duration::from_millis(4000));
    eprintln!(
        "restart of n1 (answering after {:?}): on {seen:?}",
        restarted.elapsed()
    );
    assert_eq!(seen, ["n2"], "never started on the restarted node");
    assert_eq!((twice, nowhere), (Duration::ZERO, Duration::ZERO));
    assert_eq!(nodes[0].status()["orchestration_ready"], true);

    // kill -9 of n2, which runs it: its instance survives (the flag stays). n1 takes over
    // once n2 is stale.
    nodes[1].kill();
    let killed = std::time::Instant::now();
    wait_for("ha1 taken over by n1", Duration::from_secs(10), || {
        flags[0].exists().then_some(())
    });
    eprintln!("kill -9 -> takeover: {:?}", killed.elapsed());
    assert!(!flags[2].exists());
    // n2 comes back with its instance still running: found twice, stopped on one.
    nodes[1].spawn(&[]);
    wait_for("one instance left", Duration::from_secs(10), || {
        (running_on(&nodes, &flags).len() == 1).then_some(())
    });
    let (twice, nowhere, seen) = watch(&nodes, &flags, Duration::from_millis(2000));
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!((twice, nowhere), (Duration::ZERO, Duration::ZERO));
    let logs: String = nodes.iter().map(|n| n.log()).collect();
    assert!(
        logs.contains("failover service found running on several nodes"),
        "loud log line"
    );

    // The holder dies with its instance (kill -9, flag gone): taken over, and the node,
    // restarted, still expecting it started, leaves it where it now runs.
    let holder = running_on(&nodes, &flags)[0].clone();
    let h = nodes.iter().position(|n| n.name == holder).unwrap();
    nodes[h].kill();
    std::fs::remove_file(&flags[h]).unwrap();
    wait_for("ha1 taken over", Duration::from_secs(10), || {
        (running_on(&nodes, &flags).len() == 1).then_some(())
    });
    let new_holder = running_on(&nodes, &flags);
    nodes[h].spawn(&[]);
    let (twice, nowhere, seen) = watch(&nodes, &flags, Duration::from_millis(4000));
    assert_eq!(seen, new_holder, "left where it runs");
    assert_eq!((twice, nowhere), (Duration::ZERO, Duration::ZERO));
    // Still expecting it started, it defers to the node where it runs.
    let reason = nodes[h].status()["services"]["ha1"]["ha"]["reason"].clone();
    assert_eq!(reason, format!("runs on {}", new_holder[0]), "{reason}");
}

/// A node whose start failed is not elected again until `clear`; with no candidate left
/// the service stays down and `daemon status` says why.
#[test]
fn failed_start_is_not_elected_again_until_clear() {
    let nodes = cluster("n1 n2", 2);
    let broken: Vec<_> = nodes.iter().map(|n| n.root.join("broken")).collect();
    let flags: Vec<_> = nodes
        .iter()
        .zip(&broken)
        .map(|(n, b)| {
            std::fs::write(b, "").unwrap();
            n.flag_service(
                "ha1",
                "nodes = n1 n2\norchestrate = ha",
                &format!("test ! -e {} && ", b.display()),
                "",
            )
        })
        .collect();
    wait_converged(&nodes);
    nodes[0].svcmgr("ha1", &["set", "monitor", "--global-expect", "started"]);
    for n in &nodes {
        wait_for(
            "start failed on every node",
            Duration::from_secs(15),
            || (n.status()["services"]["ha1"]["monitor"]["status"] == "start failed").then_some(()),
        );
    }
    wait_for("the reason shown", Duration::from_secs(5), || {
        let reason = nodes[0].status()["services"]["ha1"]["ha"]["reason"].clone();
        (reason == "no candidate node: n1 start failed, n2 start failed").then_some(())
    });
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(running_on(&nodes, &flags), Vec::<String>::new());
    let n1_log = nodes[0].root.join("var/services/ha1/log");
    let starts_on_n1 = || {
        std::fs::read_to_string(&n1_log)
            .unwrap_or_default()
            .matches("global_expect started: start")
            .count()
    };
    let attempts = starts_on_n1();
    assert_eq!(attempts, 1, "one attempt on n1");
    // n2 repaired and cleared: n2 elected, n1 (still failed) not.
    std::fs::remove_file(&broken[1]).unwrap();
    nodes[1].svcmgr("ha1", &["clear"]);
    wait_for("ha1 on n2", Duration::from_secs(10), || {
        flags[1].exists().then_some(())
    });
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(running_on(&nodes, &flags), ["n2"]);
    assert_eq!(starts_on_n1(), attempts, "n1 not tried again");
}

/// Under systemd (`Type=notify`): READY once the listener is bound, STOPPING when it stops.
/// (The watchdog's keep-alives need WATCHDOG_PID, the daemon's pid, which a test cannot set
/// in the environment of a process it has not started yet.)
#[test]
fn systemd_is_told_ready_watchdog_and_stopping() {
    let dir = std::env::temp_dir().join(format!("osvc-notify-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let n = Node::start(Opts {
        env: vec![("NOTIFY_SOCKET", path.display().to_string())],
        ..Default::default()
    });
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    let mut read_until = |what: &str, seen: &mut String| {
        wait_for(what, Duration::from_secs(10), || {
            if let Ok(len) = sock.recv(&mut buf) {
                seen.push_str(&String::from_utf8_lossy(&buf[..len]));
                seen.push('\n');
            }
            seen.contains(what).then_some(())
        })
    };
    read_until("READY=1", &mut seen);
    n.nodemgr(&["daemon", "stop"]);
    read_until("STOPPING=1", &mut seen);
    assert!(seen.contains("STATUS=listening on"), "{seen}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Cuts `a` and `b` apart: each one's address for the other points where nothing listens.
fn cut(a: &Node, b: &Node) {
    point_at(a, b, |_| "127.0.0.254".to_string());
}

/// Undoes `cut`: each one's address for the other is that node's own again.
fn heal(a: &Node, b: &Node) {
    point_at(a, b, |to| to.ip.to_string());
}

/// Sets, on each of `a` and `b`, the other's `[node.NAME] addr` to `addr_of(other)`.
fn point_at(a: &Node, b: &Node, addr_of: impl Fn(&Node) -> String) {
    for (from, to) in [(a, b), (b, a)] {
        from.nodemgr(&[
            "set",
            "--param",
            &format!("node.{}.addr", to.name),
            "--value",
            &addr_of(to),
        ]);
    }
}

/// With quorum, a node cut off from the others stops its ha instance; the two others, which
/// hold quorum, start it once the takeover delay (and the lost node's stop timeout) has
/// passed: never on two nodes. Healed, the service stays where it runs.
#[test]
fn quorum_cut_off_node_stops_and_the_majority_takes_over_without_overlap() {
    let nodes = cluster_with("n1 n2 n3", 3, "");
    for n in &nodes {
        n.nodemgr(&["set", "--param", "cluster.quorum", "--value", "true"]);
    }
    let flags = ha_flags(&nodes, "n1 n2 n3", "timeout = 1\n");
    wait_converged(&nodes);
    wait_for("quorum on", Duration::from_secs(10), || {
        nodes
            .iter()
            .all(|n| n.status()["quorum"]["enabled"] == true)
            .then_some(())
    });
    assert_eq!(nodes[0].status()["quorum"]["votes"], 3);
    nodes[0].svcmgr("ha1", &["set", "monitor", "--global-expect", "started"]);
    wait_for("ha1 on n1", Duration::from_secs(15), || {
        flags[0].exists().then_some(())
    });
    let t = std::time::Instant::now();
    cut(&nodes[0], &nodes[1]);
    cut(&nodes[0], &nodes[2]);
    // Watch until the majority runs it: never two instances.
    let mut stopped_at = None;
    let mut started_at = None;
    while t.elapsed() < Duration::from_secs(20) && started_at.is_none() {
        let on = running_on(&nodes, &flags);
        assert!(on.len() <= 1, "two instances: {on:?} at {:?}", t.elapsed());
        if stopped_at.is_none() && !flags[0].exists() {
            stopped_at = Some(t.elapsed());
        }
        if flags[1].exists() || flags[2].exists() {
            started_at = Some(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (stopped_at, started_at) = (
        stopped_at.expect("n1 stopped it"),
        started_at.expect("taken over"),
    );
    eprintln!(
        "cut at 0: n1 stopped ha1 at {stopped_at:?}, the majority started it at {started_at:?}"
    );
    assert!(stopped_at < started_at);
    let s1 = nodes[0].status();
    assert_eq!(s1["quorum"]["has_quorum"], false, "{}", s1["quorum"]);
    assert!(
        s1["services"]["ha1"]["ha"]["reason"]
            .as_str()
            .unwrap()
            .contains("no quorum"),
        "{}",
        s1["services"]["ha1"]
    );
    let (twice, _, _) = watch(&nodes, &flags, Duration::from_millis(1500));
    assert_eq!(twice, Duration::ZERO);
    // Healed: n1 back with quorum, the service stays where it runs.
    heal(&nodes[0], &nodes[1]);
    heal(&nodes[0], &nodes[2]);
    wait_for("n1 has quorum again", Duration::from_secs(10), || {
        (nodes[0].status()["quorum"]["has_quorum"] == true).then_some(())
    });
    let (twice, nowhere, seen) = watch(&nodes, &flags, Duration::from_millis(2000));
    assert_eq!((twice, nowhere), (Duration::ZERO, Duration::ZERO));
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(!flags[0].exists());
}

fn holds_arbitrator_vote(n: &Node) -> bool {
    n.status()["quorum"]["arbitrators"]["arbitrator#1"]["vote_held"] == true
}

/// Two nodes with quorum and an arbitrator both reach: cut apart, the side that gets the
/// arbitrator's lease keeps (or takes over) the service, the other stops it; never two
/// instances. Healed, one instance.
#[test]
fn two_nodes_and_an_arbitrator_one_side_keeps_the_service() {
    let port = free_port_on(&CLUSTER_IPS);
    let extra = format!(
        "{FAST}[node]\n[arbitrator#1]\naddr = {}:{port}\n",
        CLUSTER_IPS[2]
    );
    let nodes: Vec<Node> = (0..2)
        .map(|i| cluster_node(i, port, "n1 n2", SECRET, &extra))
        .collect();
    let arbitrator = Node::start(Opts {
        name: "arb",
        ip: CLUSTER_IPS[2],
        nodes: "n1 n2",
        extra: &format!("{FAST}[arbitrator]\nserve = true\nlease = 3s\n"),
        port: Some(port),
        ..Default::default()
    });
    for n in &nodes {
        n.nodemgr(&["set", "--param", "cluster.quorum", "--value", "true"]);
    }
    let flags = ha_flags(&nodes, "n1 n2", "timeout = 1\n");
    wait_converged(&nodes);
    wait_for(
        "both hold the arbitrator's vote",
        Duration::from_secs(15),
        || {
            nodes
                .iter()
                .all(|n| n.status()["quorum"]["enabled"] == true && holds_arbitrator_vote(n))
                .then_some(())
        },
    );
    let q = nodes[0].status()["quorum"].clone();
    assert_eq!(
        (q["votes"].as_u64(), q["total"].as_u64()),
        (Some(3), Some(3)),
        "{q}"
    );
    assert_eq!(arbitrator.status()["quorum"]["serves_as_arbitrator"], true);
    nodes[0].svcmgr("ha1", &["set", "monitor", "--global-expect", "started"]);
    wait_for("ha1 on n1", Duration::from_secs(15), || {
        flags[0].exists().then_some(())
    });

    let t = std::time::Instant::now();
    cut(&nodes[0], &nodes[1]);
    // Sampled every 50 ms until one side holds the vote and runs the service, the other
    // side without quorum.
    let mut settled = None;
    while t.elapsed() < Duration::from_secs(40) && settled.is_none() {
        let on = running_on(&nodes, &flags);
        assert!(on.len() <= 1, "two instances: {on:?} at {:?}", t.elapsed());
        if let [winner] = on.as_slice() {
            let (w, l) = if winner == "n1" {
                (&nodes[0], &nodes[1])
            } else {
                (&nodes[1], &nodes[0])
            };
            if peer_status(w, &l.name)["status"] == "stale"
                && holds_arbitrator_vote(w)
                && !holds_arbitrator_vote(l)
                && l.status()["quorum"]["has_quorum"] == false
            {
                settled = Some((winner.clone(), t.elapsed()));
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (winner, at) = settled.expect("one side holds the vote and the service");
    eprintln!("cut at 0: {winner} holds the arbitrator's vote and runs ha1 at {at:?}");
    let (twice, _, seen) = watch(&nodes, &flags, Duration::from_millis(2000));
    assert_eq!(twice, Duration::ZERO);
    assert_eq!(seen, vec![winner.clone()]);

    heal(&nodes[0], &nodes[1]);
    wait_converged(&nodes);
    wait_for("both hold the vote again", Duration::from_secs(15), || {
        nodes.iter().all(holds_arbitrator_vote).then_some(())
    });
    let (twice, nowhere, seen) = watch(&nodes, &flags, Duration::from_millis(2000));
    assert_eq!((twice, nowhere), (Duration::ZERO, Duration::ZERO));
    assert_eq!(seen, vec![winner]);
}

/// Each other member's state in `daemon status`, by name.
fn member_states(n: &Node) -> std::collections::BTreeMap<String, String> {
    let s = n.status();
    s["members"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, m)| (name.clone(), m["state"].as_str().unwrap_or("?").to_string()))
        .collect()
}

#[test]
fn status_lists_every_member_seen_or_not() {
    // peer1 is configured (at an address where nothing runs) but never started; the last name
    // resolves nowhere and has no [node.NAME] addr.
    let mut nodes = cluster("n1 n2 n3 peer1 ghost.invalid", 3);
    let want = |n2: &str, n3: &str| {
        [
            ("ghost.invalid", "unresolved"),
            ("n2", n2),
            ("n3", n3),
            ("peer1", "never seen"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect::<std::collections::BTreeMap<_, _>>()
    };
    wait_for("n2 and n3 up", Duration::from_secs(10), || {
        (member_states(&nodes[0]) == want("up", "up")).then_some(())
    });
    let s = nodes[0].status();
    assert_eq!(
        s["members"]["n2"]["addr"],
        format!("127.0.0.2:{}", nodes[0].port)
    );
    assert!(s["members"]["n2"]["beats"].as_u64() >= Some(1));
    assert!(s["members"]["n2"]["age_ms"].as_u64() < Some(2000));
    assert_eq!(s["members"]["peer1"]["age_ms"], Value::Null);
    assert_eq!(s["members"]["ghost.invalid"]["addr"], Value::Null);
    assert_eq!(s["member_states"]["unresolved"], 1);
    // The heartbeat count grows.
    let beats = |n: &Node| n.status()["members"]["n2"]["beats"].as_u64().unwrap();
    let before = beats(&nodes[0]);
    wait_for("more beats from n2", Duration::from_secs(10), || {
        (beats(&nodes[0]) > before).then_some(())
    });
    // The people's view: one line per member.
    let table = nodes[0].nodemgr(&["daemon", "status"]);
    for (name, state) in want("up", "up") {
        let line = table
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no line for {name} in:\n{table}"));
        assert!(line.contains(&format!(" {state} ")), "{line}");
    }
    // Unresolved is said once in the log, however many beats went by.
    assert_eq!(
        nodes[0].log().matches("member unresolved").count(),
        1,
        "{}",
        nodes[0].log()
    );

    nodes[1].nodemgr(&["daemon", "stop"]);
    nodes[2].kill();
    wait_for(
        "n2 in maintenance, n3 stale",
        Duration::from_secs(10),
        || (member_states(&nodes[0]) == want("maintenance", "stale")).then_some(()),
    );
}
